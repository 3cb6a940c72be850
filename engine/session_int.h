/* SPDX-License-Identifier: MIT */
/*
 * Session internals shared by the files that implement rdmae_engine.h's
 * session. Not installed.
 *
 *   session.c    create/destroy, shutdown (cancel, failures), messages,
 *                live settings, cancel, stats
 *   preflight.c  pre-flight, both sides
 *   rounds.c     source: plan, rounds, device state
 *   commit.c     source: complete and verification
 *   dest.c       destination: rounds, state, verification and commit
 *   external.c   the external data path: WRITEs and page sums from the
 *                caller's threads, block lookup, the switchover cost
 *
 * The helpers carry the sess_ prefix so that they are not taken for API.
 * Locking is as in struct rdmae_session's comments; doc/protocol-engine.md
 * has the ordering argument the files point at.
 */
#ifndef RDMAE_SESSION_INT_H
#define RDMAE_SESSION_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"
#include "rdmae_runs.h"
#include "rdmae_time.h"
#include "rdmae_write.h"
#include "commit_rules.h"
#include "pagesums.h"
#include "proto.h"
#include "rdmae_engine.h"

#define NSEC_PER_MSEC		1000000ull
#define MIB			(1ull << 20)

#define RUN_BATCH		256		/* runs per rdmae_write */
#define ZERO_BATCH		RDMAE_PROTO_MAX_RUNS	/* zero runs per ZERO_RUNS message: the most allowed */
_Static_assert(RUN_BATCH <= RDMAE_PROTO_MAX_RUNS, "a DATA_RUNS message describes one write batch");
#define RECENT_ROUNDS		3		/* rounds the expected downtime is measured over */
#define RECENT_RTTS		8		/* the caller's round trips the model takes the least of */

/*
 * Registration in pieces (issue 18): a block is registered as consecutive
 * pieces, the first PIECE_FIRST bytes, each next one twice as long up to
 * PIECE_MAX, so that the first piece is ready in a time that does not grow
 * with the guest, and no piece holds up the messages the destination
 * handles between two of them (dest.c) for long. Both sides cut blocks
 * the same way, but nothing relies on it: the source splits its runs at
 * its own pieces' and at the destination's advertised pieces' boundaries.
 */
#define PIECE_FIRST		(8 * MIB)
#define PIECE_MAX		(256 * MIB)
/*
 * A "whole" piece (ON_DEMAND, ODP) is the block up to what one DESCS can
 * advertise: a destination's ODP block past 64 GiB takes several.
 */
#define PIECE_WHOLE_MAX		((uint64_t)RDMAE_PROTO_MAX_DESCS * RDMAE_DESC_SPAN)

enum sess_state { ST_NEW, ST_READY, ST_DONE, ST_FAILED };

/* A piece of a block: [off, off + len), block-relative. */
struct piece {
	uint64_t off;
	uint64_t len;
	struct rdmae_region *region;	/* ours (destination: remotely writable) */
	struct rdmae_bufdesc *descs;	/* source's remote pieces: the destination's */
	struct rdmae_remote remote;	/* source's remote pieces: descs as rdmae_write takes them */
};

struct sblock {
	struct rdmae_block b;		/* the caller's; name borrowed */
	uint64_t npages;
	/*
	 * Our registrations, in order; pieces [0, nready) exist. The source in
	 * ON_DEMAND mode has one piece, the whole block (it pins as it writes).
	 * Destination: under reg_lock (a cancel destroys them).
	 */
	struct piece *loc;
	size_t nloc;
	size_t nready;
	/*
	 * Source: the destination's pieces as advertised, covering [0,
	 * s->advertised[i]). Changed under rem_lock (written), read under it
	 * by the external path's threads; the engine's own rounds run in the
	 * one thread that takes DESCS in and read it without.
	 */
	struct piece *rem;
	size_t nrem;
	size_t rem_cap;
	struct rdmae_pagesums ps;	/* page sums, when verifying (see pagesums.h) */
};

struct zrun {
	uint64_t first;
	uint64_t n;
};

struct rdmae_session {
	enum rdmae_role role;
	struct rdmae_conn *conn;
	struct rdmae_session_opts o;
	size_t nblocks;
	struct sblock *blk;		/* in the source's order on both sides */
	uint64_t *ctx_len;
	uint64_t *ctx_pages;
	struct rdmae_proto_ctx ctx;
	bool have_ctx;			/* destination: only once the blocks are matched */
	uint32_t max_msg;
	int slow_timeout_ms;		/* for waits that scale with memory size */
	uint64_t progress_ns;
	uint64_t total_bytes;

	_Atomic int state;
	atomic_flag busy;		/* one engine call at a time */
	atomic_bool stop;		/* cancelled or failed: loops bail out */
	struct rdmae_commit_gate gate;	/* under cancel_lock: cancel against COMPLETE / COMMIT_OK */
	bool sums;			/* page sums kept (source: verifying; destination: always) */
	bool peer_verdict;		/* the peer's CANCEL / COMMIT_FAIL explained a failure */
	bool final_round;		/* source: a round went with the VM stopped */
	_Atomic uint64_t max_bw;	/* bytes/s, 0 = unlimited; settable while running */
	_Atomic uint64_t downtime_ns;	/* the convergence limit; settable while running */

	pthread_mutex_t lock;		/* stats, failure record, stop reason, timing */
	pthread_mutex_t reg_lock;	/* blk[].loc[].region on the destination */
	pthread_mutex_t cancel_lock;	/* one shutdown at a time */
	int stop_code;
	char stop_why[RDMAE_PROTO_REASON_LEN];
	int fail_code;
	char fail_msg[RDMAE_ERR_LEN];

	/* registration, both sides (stats under lock) */
	size_t reg_block;		/* the next block to register a piece of */
	bool reg_stopped;		/* destination: no more pieces (final round, COMPLETE) */

	/* source */
	uint64_t *advertised;		/* per block: bytes the destination made writable */
	struct rdmae_run *runs;
	struct zrun *zruns;
	uint8_t *zmsg;
	unsigned int precopy_rounds;
	bool stopped;
	uint64_t stopped_ns;
	uint64_t prev_round_start_ns;
	uint64_t sum_round_ns;
	struct rdmae_round_stats recent[RECENT_ROUNDS];	/* last rounds: the downtime model */
	uint64_t hashed_bytes;		/* with st.hash_ns: the rate hashing runs at here */
	uint64_t peer_backlog_bytes;	/* source: the destination's hashing at the last ROUND_ACK */
	uint64_t peer_backlog_ns;	/* when that ROUND_ACK arrived */
	uint64_t last_send_ns;
	uint64_t state_off;
	struct rdmae_round_stats last_rs;
	struct rdmae_sums_guard sums_guard;	/* what the destination may ask of our page sums */

	/*
	 * The external data path (external.c): the caller's threads call in
	 * concurrently with each other and with the engine's lane-0 calls, so
	 * what they share is atomic or under its own lock, never s->busy.
	 */
	bool external;
	pthread_rwlock_t rem_lock;	/* source: blk[].rem, advertised (see struct sblock) */
	pthread_mutex_t rx_lock;	/* source, external: one reader of lane 0 at a time */
	atomic_bool x_stopped;		/* source: mark_stopped was called */
	atomic_bool x_first_write;	/* source: first_write_ns taken */
	_Atomic uint64_t x_hash_ns;	/* page_sum: time hashing, all threads */
	_Atomic uint64_t x_hash_bytes;
	_Atomic uint64_t x_verify_ns;	/* the part after mark_stopped (in the downtime) */
	_Atomic uint64_t x_bytes;	/* write_lane: bytes posted */
	uint64_t x_rtt[RECENT_RTTS];	/* note_round_trip: the last ones, ns (under lock) */
	unsigned int x_rtt_next;
	_Atomic uint64_t x_pages;	/* page_sum calls */
	_Atomic uint64_t x_zero_pages;	/* page_zero calls */

	/* destination */
	void *ev_msg;			/* holds the last STATE event's bytes */
	unsigned int rx_rounds;
	bool rx_last_final;		/* the last round placed had the FINAL flag */
	bool rx_sums;			/* DATA_RUNS came: the source verifies, keep sums */
	uint64_t rx_state;
	uint64_t rx_round_ns;

	uint64_t start_ns;
	uint64_t commit_at_ns;		/* COMMIT_OK sent (destination) or received (source) */
	enum rdmae_reg_mode mode;	/* this side's, resolved: PIN_ALL, ON_DEMAND or ODP */
	struct rdmae_session_stats st;
};

/* ---- session.c ---- */

/* Cut b into pieces (geometry above; one piece when whole); -ENOMEM. */
int sess_pieces_init(struct sblock *b, bool whole);
/* The piece of pieces[0..n) holding offset off (it must be held by one). */
size_t sess_piece_at(const struct piece *p, size_t n, uint64_t off);

/* Context the decoder checks indices and ranges against, in blk[] order. */
void sess_set_ctx(struct rdmae_session *s);

/*
 * Entry of every public call that needs the session in a state: one call
 * at a time, the right role, state want; a failed or stopped session
 * answers with its reason. On success, sess_leave ends the call.
 */
int sess_enter(struct rdmae_session *s, enum rdmae_role role, int want, const char *op,
	       struct rdmae_err *err);
void sess_leave(struct rdmae_session *s);

/* A fatal error: recorded, the session shut down, the peer told when it can be. Returns rc. */
int sess_fail(struct rdmae_session *s, int rc, struct rdmae_err *err);
/*
 * Record a failure without shutting down: the peer gave its verdict, or we
 * send ours and keep the connection up so that it arrives.
 */
void sess_set_failed(struct rdmae_session *s, int rc, const struct rdmae_err *err);
/* The reason the session stopped, as an error. */
int sess_stopped_err(struct rdmae_session *s, struct rdmae_err *err);
/* The peer sent CANCEL: stop without answering. */
int sess_peer_cancelled(struct rdmae_session *s, const struct rdmae_msg *m,
			struct rdmae_err *err);
/* A message out of place: fatal (-EPROTO). */
int sess_unexpected(struct rdmae_session *s, const struct rdmae_msg *m, const char *waiting,
		    struct rdmae_err *err);
/* The destination's memory stops being remotely writable (regions destroyed). */
void sess_destroy_regions(struct rdmae_session *s);
/* The point of no return, ordered against cancel; 0 when it is passed. */
int sess_decide(struct rdmae_session *s, const char *op, struct rdmae_err *err);
/* Has the point of no return been passed? */
bool sess_decided(struct rdmae_session *s);

int sess_send_msg(struct rdmae_session *s, const void *buf, size_t len, struct rdmae_err *err);
/*
 * Next message, decoded and checked; *buf is the caller's to free on
 * success. A malformed message is fatal, a timeout is not. On the source,
 * DESCS is taken in (sess_src_take_descs) and not returned: a destination
 * advertises whenever a piece is ready, between any two other messages.
 */
int sess_recv_msg(struct rdmae_session *s, int timeout_ms, void **buf, struct rdmae_msg *m,
		  struct rdmae_err *err);
/* The same, but DESCS (taken in already) is returned too: for a source waiting for one. */
int sess_recv_any(struct rdmae_session *s, int timeout_ms, void **buf, struct rdmae_msg *m,
		  struct rdmae_err *err);
/* Hashing time and bytes since t0; at_stop: the VM is stopped, so it is downtime too. */
void sess_account_hash(struct rdmae_session *s, uint64_t t0, bool at_stop, uint64_t bytes);
/* The first WRITE of the session: setup as the issue measures it (connect to first WRITE). */
void sess_note_first_write(struct rdmae_session *s);

/* ---- preflight.c: registration modes ---- */

/* This side's mode on the wire (RDMAE_WIRE_REG_*), and back. */
uint32_t sess_wire_mode(enum rdmae_reg_mode m);
enum rdmae_reg_mode sess_mode_of_wire(uint32_t w);
/* Record this side's mode in the stats; -EOPNOTSUPP, naming the device, for ODP without it. */
int sess_check_odp(struct rdmae_session *s, struct rdmae_err *err);

/* ---- preflight.c: registration in pieces ---- */

/*
 * Source: one more piece of a block advertised by the destination (the
 * decoder checked it against s->advertised); kept for the WRITEs.
 */
int sess_src_take_descs(struct rdmae_session *s, const struct rdmae_msg *m,
			struct rdmae_err *err);
/* Source: register block's pieces up to and including piece upto (PIN_ALL). */
int sess_src_pin(struct rdmae_session *s, size_t block, size_t upto, struct rdmae_err *err);
/*
 * Source, the external path's writers (any thread): piece li of block
 * pinned, and the one after, unless already; 0 or the error.
 */
int sess_src_pin_at(struct rdmae_session *s, size_t block, size_t li, struct rdmae_err *err);
/*
 * Destination: register the next piece and advertise it (DESCS). Returns 1
 * when one went, 0 when none is left or registration has stopped, or a
 * negative errno (the session has failed).
 */
int sess_dst_advertise(struct rdmae_session *s, struct rdmae_err *err);

/* ---- commit.c ---- */

/* One sum per block from the page sums kept (both sides compare these). */
int sess_block_sums(struct rdmae_session *s, uint64_t *sums, struct rdmae_err *err);
/*
 * Tests only (RDMAE_TEST_FAULTS=recheck, external data path): every kept page
 * sum against memory now; -EIO with the first differing page in blk, page
 * and why, each one logged on stderr. 0 without the fault.
 */
int sess_recheck(struct rdmae_session *s, size_t *blk, uint64_t *page, char *why,
		 size_t whylen);

/* ---- external.c ---- */

/* The external path's counters folded into st (under s->lock). */
void sess_external_stats(struct rdmae_session *s, struct rdmae_session_stats *st);
/* Session flags on the wire (RDMAE_SESS_*) for this side, and a peer's named. */
uint32_t sess_wire_flags(const struct rdmae_session *s);
const char *sess_data_path_name(uint32_t wire_flags);

#endif
