/* SPDX-License-Identifier: MIT */
/*
 * The migration engine: a session moves a VM's RAM blocks and its device
 * state over one rdmae connection.
 *
 * Source:      create -> preflight -> plan/round ... -> (stop the VM) ->
 *              final round -> send_state ... -> complete
 * Destination: create -> preflight -> dest_step ... until COMMITTED
 * Either side may cancel at any point; the source's memory is never
 * written by the engine, the destination's registrations are undone.
 *
 * The external data path (RDMAE_DATA_PATH_EXTERNAL, QEMU multifd): the
 * engine runs no rounds; the caller's threads move the pages themselves.
 * Source:      create -> preflight -> [threads: write_lane + page_sum/
 *              page_zero on lanes >= 1, their own messages after them]
 *              ... send_state ... -> (stop the VM, final pass) ->
 *              mark_stopped -> complete
 * Destination: create -> preflight -> dest_step ... until COMMITTED, while
 *              its threads read lanes >= 1 and call page_sum/page_zero.
 */
#ifndef RDMAE_ENGINE_H
#define RDMAE_ENGINE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_conn.h"
#include "rdmae_region.h"
#include "rdmae_runs.h"

struct rdmae_session;

enum rdmae_role { RDMAE_SOURCE, RDMAE_DEST };

/* Block names up to 255 bytes: QEMU's RAMBlock idstr (char[256]) fits. */
#define RDMAE_BLOCK_NAME_MAX 256

/* max_rounds: never give up on convergence (the caller decides when to stop). */
#define RDMAE_ROUNDS_UNLIMITED UINT_MAX

struct rdmae_block {
	const char *name;		/* unique, < RDMAE_BLOCK_NAME_MAX bytes */
	void *host;			/* the mapping (guest RAM as it is) */
	size_t len;			/* multiple of page_size */
	size_t page_size;		/* dirty-tracking granularity, e.g. 4096 */
	bool hugepages;			/* destination: the mapping must be on huge pages */
};

/*
 * Who moves guest RAM. ENGINE (the default): rdmae_session_round, on every
 * lane. EXTERNAL: the caller, on lanes 1..n-1 (rdmae_session_write_lane
 * and its own rdmae_send_lane/rdmae_recv_lane); the engine keeps lane 0
 * (pre-flight, DESCS, device state, COMPLETE / COMMIT_OK, CANCEL) and
 * never sends, receives, fences or WRITEs on the other lanes. Both sides
 * must agree: pre-flight refuses a peer in the other mode, naming both.
 */
enum rdmae_data_path { RDMAE_DATA_PATH_ENGINE = 0, RDMAE_DATA_PATH_EXTERNAL };

struct rdmae_session_opts {
	/*
	 * How this side registers guest RAM. AUTO (the default): the source
	 * pins all, ahead of its cursor; the destination registers with ODP
	 * where the device serves RC WRITE from it, and pins otherwise.
	 * PIN_ALL pins on either side. ON_DEMAND: the source pins chunks as it
	 * writes them; on the destination it means AUTO. ODP: explicit ODP on
	 * either side, refused in pre-flight where the device lacks it.
	 */
	enum rdmae_reg_mode reg_mode;
	uint64_t max_bandwidth;		/* bytes/s, 0 = unlimited; see set_max_bandwidth */
	uint64_t downtime_limit_ns;	/* default 300 ms; see set_downtime_limit */
	unsigned int max_rounds;	/* pre-copy rounds before giving up; default 30,
					 * RDMAE_ROUNDS_UNLIMITED for never */
	bool no_zero_detect;		/* send zero pages as data */
	bool no_verify;			/* source: skip the checksums at commit */
	bool require_verify;		/* destination: refuse a source that skips them */
	int timeout_ms;			/* per message wait; default 30000 */
	uint64_t expected_state_bytes;	/* source: device state at the stop, for the
					 * expected downtime (0: none expected) */
	enum rdmae_data_path data_path;	/* ENGINE (default) or EXTERNAL (see above) */
};

struct rdmae_round_stats {
	unsigned int round;		/* 1, 2, ... */
	uint64_t pages;			/* dirty pages this round */
	uint64_t bytes;			/* bytes written by RDMA */
	uint64_t zero_pages;
	uint64_t runs;			/* WRITE runs after coalescing */
	uint64_t duration_ns;
	uint64_t ack_ns;		/* ROUND_END sent to ROUND_ACK: fence round trip and drain */
	double bandwidth;		/* bytes/s of this round */
	double dirty_rate;		/* bytes/s dirtied during the previous round */
	uint64_t remaining_bytes;	/* dirty bytes found for the next round (after plan) */
	uint64_t expected_downtime_ns;
};

struct rdmae_session_stats {
	uint64_t total_bytes;		/* sum of block lengths */
	uint64_t transferred_bytes;	/* by RDMA WRITE, all rounds */
	uint64_t remaining_bytes;	/* dirty bytes at the last plan */
	uint64_t normal_pages;
	uint64_t zero_pages;
	uint64_t state_bytes;		/* device state sent or received */
	unsigned int rounds;
	double throughput;		/* bytes/s over all rounds */
	double dirty_rate;		/* last measured, bytes/s */
	uint64_t expected_downtime_ns;
	uint64_t actual_downtime_ns;	/* from rdmae_session_mark_stopped to commit */
	uint64_t verify_ns;		/* this side's hashing after the stop (final round, commit) */
	uint64_t hash_ns;		/* this side's hashing in all, mostly during pre-copy */
	uint64_t commit_ns;		/* source: COMPLETE sent to COMMIT_OK */
	uint64_t setup_ns;		/* preflight: up to the first piece registered (v5) */
	/*
	 * Registration in pieces: this side's time in ibv_reg_mr in all, how
	 * much of it came before the first piece was usable (destination:
	 * advertised, so before any WRITE could come; source: before its first
	 * WRITE), and the pieces registered.
	 */
	uint64_t reg_ns;
	uint64_t reg_first_ns;
	unsigned int reg_pieces;
	uint64_t first_write_ns;	/* source: preflight start to its first WRITE posted */
	uint64_t total_ns;		/* preflight start to commit */
	/*
	 * Deregistration of this side's guest RAM (rdmae_session_release): time
	 * in ibv_dereg_mr, and from COMMIT_OK to the last ibv_dereg_mr (0 when
	 * there was no commit). Never inside the downtime: the caller releases
	 * once the guest runs on the destination.
	 */
	uint64_t dereg_ns;
	uint64_t dereg_after_commit_ns;
	/* How each side registers, as pre-flight told both (PIN_ALL, ON_DEMAND, ODP). */
	enum rdmae_reg_mode src_reg_mode;
	enum rdmae_reg_mode dst_reg_mode;
	unsigned int lanes;
};

void rdmae_session_opts_default(struct rdmae_session_opts *o);
/* "pin-all", "on-demand", "odp", "auto": the names operators use. */
const char *rdmae_reg_mode_name(enum rdmae_reg_mode m);

/*
 * Check a block list as rdmae_session_create does (names non-empty, unique,
 * < RDMAE_BLOCK_NAME_MAX bytes; power-of-two page sizes; lengths non-zero
 * multiples of them), so that a caller can refuse it before connecting.
 */
int rdmae_session_check_blocks(const struct rdmae_block *blocks, size_t nblocks,
			       struct rdmae_err *err);

/* The session borrows conn and blocks; both must outlive it. */
int rdmae_session_create(struct rdmae_session **out, enum rdmae_role role, struct rdmae_conn *conn,
			 const struct rdmae_block *blocks, size_t nblocks,
			 const struct rdmae_session_opts *o, struct rdmae_err *err);
/* Deregisters everything; safe at any point, idempotent on NULL. */
void rdmae_session_destroy(struct rdmae_session *s);

/*
 * Deregister this side's guest RAM now, once the migration is over
 * (committed, failed or cancelled), and record dereg_ns and
 * dereg_after_commit_ns for rdmae_session_stats. For a large guest this
 * takes seconds, so the destination calls it after its guest runs, never
 * in the downtime. -EBUSY while another call runs on the session, -EINVAL
 * before pre-flight or while the migration is still in progress.
 * Idempotent.
 */
int rdmae_session_release(struct rdmae_session *s, struct rdmae_err *err);

/*
 * Pre-flight. Source: announce the blocks and wait for the destination's
 * descriptors. Destination: check the announcement against its blocks
 * (names, sizes, page sizes, memlock limit, huge pages), register, and
 * answer with descriptors or an error naming the block and the mismatch.
 */
int rdmae_session_preflight(struct rdmae_session *s, struct rdmae_err *err);

/* What the next round would cost. bitmaps[i] is block i's dirty bitmap. */
struct rdmae_plan {
	uint64_t dirty_pages;
	uint64_t dirty_bytes;
	uint64_t expected_downtime_ns;
	bool converged;			/* fits the downtime limit: stop the VM and go final */
};
int rdmae_session_plan(struct rdmae_session *s, const uint64_t *const *bitmaps,
		       struct rdmae_plan *plan);

/*
 * Source: send the pages whose bits are set (one pre-copy round, or the
 * final one with the VM stopped). The bitmaps are read, not cleared; the
 * caller harvests a fresh dirty log for each round. Returns -ETIME once
 * max_rounds pre-copy rounds have passed without converging (the caller
 * then cancels or keeps the VM running); rs may be NULL.
 */
int rdmae_session_round(struct rdmae_session *s, const uint64_t *const *bitmaps,
			struct rdmae_round_stats *rs, struct rdmae_err *err);

/*
 * The last round's stats, with remaining_bytes and expected_downtime_ns
 * filled in by the rdmae_session_plan() that followed it; -ENOENT before the
 * first round.
 */
int rdmae_session_last_round(struct rdmae_session *s, struct rdmae_round_stats *rs);

/*
 * Source, at any time and from any thread: change the bandwidth cap
 * (bytes/s, 0 = unlimited). A round in progress adopts it at its next
 * batch, counting from the moment of the change.
 */
int rdmae_session_set_max_bandwidth(struct rdmae_session *s, uint64_t bytes_per_sec);

/*
 * Source, at any time and from any thread: change the downtime limit that
 * rdmae_session_plan() judges convergence by (0 = the default, 300 ms).
 */
int rdmae_session_set_downtime_limit(struct rdmae_session *s, uint64_t ns);

/* Source: the VM is stopped now; downtime is measured from here. */
void rdmae_session_mark_stopped(struct rdmae_session *s);

/* Source: device-state bytes, ordered after every round already sent. */
int rdmae_session_send_state(struct rdmae_session *s, const void *buf, size_t len,
			     struct rdmae_err *err);

/*
 * Source: finish. Fences every lane, waits for the destination to confirm
 * placement and matching checksums. Returns 0 only then; a mismatch fails
 * with a message naming the block and the first differing page. Refused
 * (-EINVAL) unless a round was sent after rdmae_session_mark_stopped; in
 * the external data path, unless rdmae_session_mark_stopped was called
 * (no round is needed; nothing is fenced: lane 0 carries no WRITE, and the
 * caller has proven its own lanes placed before it calls this, e.g. by
 * QEMU's per-lane SYNC acks). Every page_sum/page_zero and write_lane call
 * must have returned first.
 * Once COMPLETE has left, the destination may commit at any moment: a
 * failure that the destination did not explain (CANCEL, COMMIT_FAIL)
 * returns -ENOTRECOVERABLE, meaning the outcome is unknown and the source
 * must not be resumed before the destination is asked.
 */
int rdmae_session_complete(struct rdmae_session *s, struct rdmae_err *err);

enum rdmae_dest_event_kind {
	RDMAE_EV_ROUND,			/* a round was placed */
	RDMAE_EV_STATE,			/* device-state bytes in data/len (valid until the next step) */
	RDMAE_EV_COMMITTED,		/* verified (unless the source said no_verify and the
					 * destination allowed it): may run */
};

struct rdmae_dest_event {
	enum rdmae_dest_event_kind kind;
	unsigned int round;
	bool final;			/* ROUND: the source's VM was stopped (the last round) */
	bool verified;			/* COMMITTED: every page's checksum matched the source's */
	const void *data;
	size_t len;
};

/*
 * Destination: process the next message. Returns 0 with an event, or a
 * negative errno: -ECANCELED when the source cancelled (the registrations
 * are already undone), or a transport error.
 */
int rdmae_session_dest_step(struct rdmae_session *s, struct rdmae_dest_event *ev,
			    struct rdmae_err *err);

/*
 * Destination, after pre-flight: register and advertise every piece of
 * guest RAM now, reading no message meanwhile (rdmae_session_dest_step
 * does the same interleaved with the messages, a piece at a time). For a
 * destination that has nothing else to do yet, or wants all of guest RAM
 * writable before it reads the first round. Returns 0 once everything is
 * advertised (or registration has stopped), or a negative errno; a failure
 * fails the session, as in dest_step.
 */
int rdmae_session_dest_advertise_all(struct rdmae_session *s, struct rdmae_err *err);

/*
 * Cancel from either side: tell the peer (best effort), stop, deregister.
 * Any call blocked in another thread returns -ECANCELED. The source's
 * memory is untouched. Returns true when the migration is off (by this
 * call or an earlier stop): the source's guest may resume. Returns false,
 * doing nothing, after commit, on the source once rdmae_session_complete
 * has decided to send COMPLETE, and on the destination once it has decided
 * to send COMMIT_OK: the decision and the cancel are ordered under one lock.
 */
bool rdmae_session_cancel(struct rdmae_session *s, const char *why);

int rdmae_session_stats(struct rdmae_session *s, struct rdmae_session_stats *st);

/* ---- the external data path (RDMAE_DATA_PATH_EXTERNAL) ---- */

/*
 * The session's blocks: how many, and the index of one by name. Indices
 * are the source's order, on the destination too once pre-flight matched
 * the blocks (before it, -EAGAIN there). -ENOENT for a name not in the
 * session.
 */
size_t rdmae_session_block_count(const struct rdmae_session *s);
int rdmae_session_block_index(const struct rdmae_session *s, const char *name);

/*
 * Source, external data path, after pre-flight: post RDMA WRITEs of runs
 * of block on lane (1..lanes-1), from this side's guest RAM into the
 * destination's at the same offsets. runs[i].local is the offset into the
 * block, runs[i].remote must equal it, and every run lies inside the
 * block; runs are cut at both sides' registration pieces here (the array
 * is not changed) and coalesced by rdmae_write_lane.
 * Waits, like wait_advertised, while the destination has not made a run's
 * range writable yet. Returns once everything is posted (not placed): a
 * message the caller then sends on the same lane (rdmae_send_lane) arrives
 * after the WRITEs are placed (RC ordering within one QP).
 *
 * Thread safety: any number of threads may call this at once, each on its
 * own lane, concurrently with the engine's calls on lane 0. -EINVAL for
 * lane 0, a lane the connection lacks, a bad block or run, or a session
 * not in the external data path; the session's stop reason once it is
 * cancelled or failed. Once the connection has failed, the session fails
 * too, with the destination's reason when it sent CANCEL before hanging up
 * (nothing else reads lane 0 during pre-copy), else the connection's error.
 */
int rdmae_session_write_lane(struct rdmae_session *s, unsigned int lane, size_t block,
			     const struct rdmae_run *runs, size_t n, struct rdmae_err *err);

/*
 * Source, external data path: wait until the destination has made bytes
 * [offset, offset + len) of block writable (its DESCS, which arrive on
 * lane 0 while it registers piece by piece). Thread safe as write_lane:
 * one waiting thread reads lane 0 for all of them. A destination that
 * advertises nothing more for the session's timeout fails the wait
 * (-ETIMEDOUT) naming the block and how far it got.
 */
int rdmae_session_wait_advertised(struct rdmae_session *s, size_t block, uint64_t offset,
				  uint64_t len, struct rdmae_err *err);

/*
 * Page sums for a caller that moves the pages (external data path; both
 * sides). page_sum hashes the page_size bytes at ptr (NULL: the page in the
 * block's own mapping) now and keeps the sum as page page of block;
 * page_zero records that the page is all zeros. The source calls them for
 * every page it posts (each time it posts it), the destination for every
 * page a packet names, once the page is placed (or zero-filled).
 *
 * The commit compares, per block, a digest over these sums. A page no side
 * ever named is not compared (QEMU skips pages, e.g. free-page hinting); a
 * page named on one side only is a mismatch, reported with the block and
 * the page. The last call for a page wins: with the VM stopped, the final
 * pass re-sums every page it resends on both sides, so the sums are
 * current. Nothing is rehashed at commit.
 *
 * Thread safety: lock-free (one relaxed atomic store per page), callable
 * from any number of threads at once, for different pages, concurrently
 * with every other call; two threads on the same page race and the last
 * store wins. On the source without verification (no_verify) both are
 * no-ops. Return 0, or -EINVAL for a bad block or page or a session not in
 * the external data path. Fast: no message, no lock, no allocation.
 */
int rdmae_session_page_sum(struct rdmae_session *s, size_t block, uint64_t page,
			   const void *ptr);
int rdmae_session_page_zero(struct rdmae_session *s, size_t block, uint64_t page);

/*
 * Source: what the switchover costs beyond moving the final pass's data
 * (which the caller estimates itself from its bandwidth), in ns, for a
 * final pass of final_bytes:
 *   hashing the final pass on both sides:  2 x final pages x ns per page
 *       (measured from this side's hashing so far, else 1 GiB/s assumed);
 *   digesting every page sum at commit:    total pages x 8 bytes, once
 *       (the sides digest at the same time);
 *   round trips: the final per-lane sync ack, COMPLETE -> COMMIT_OK and
 *       the revoke before it: 3 x RTT (RTT: the last COMPLETE -> COMMIT_OK
 *       measured, else the engine rounds' shortest fence-to-ack wait, else
 *       the shortest of the caller's last 8 round trips
 *       (rdmae_session_note_round_trip), else the connection's measured
 *       WRITE latency, else 1 ms);
 *   the device state: expected_state_bytes at the measured WRITE rate
 *       (else 1 GiB/s).
 * Without verification the hashing terms are 0. 0 before pre-flight, on
 * the destination and for NULL; never 0 after pre-flight. Thread safe.
 */
uint64_t rdmae_session_switchover_cost_ns(struct rdmae_session *s, uint64_t final_bytes);

/*
 * Source, external data path: a round trip the caller timed through both
 * processes, in ns: a message on a lane and the destination's answer to it
 * (QEMU: a multifd SYNC and its acknowledgement). The switchover's cost
 * counts its round trips at the shortest of the last 8, until the engine
 * has timed one of its own. Ignored for NULL, 0, a destination or the
 * engine's data path. Thread safe; takes the session's lock briefly.
 */
void rdmae_session_note_round_trip(struct rdmae_session *s, uint64_t ns);
int rdmae_session_lane_stats(struct rdmae_session *s, unsigned int lane,
			     struct rdmae_lane_stats *out);

#endif
