/* SPDX-License-Identifier: MIT */
/*
 * L2 internals: the connection and its lanes, shared by the files of rdma/
 * from L2 up. Not installed.
 *
 * The files of rdma/, one job each, by layer (doc/architecture.md keeps the
 * same list). No file includes a header of a layer above its own, nor calls
 * a function of a file above it; `tests/lint.sh graph` checks both.
 *
 *   L0, pure: no verbs call, no lock (each its own public or opts.h header):
 *   wire.c       the wire encoding, and the negotiation rules over it
 *   credits.c    credit accounting of one lane
 *   frag.c       fragmentation and reassembly of messages
 *   pace.c       the pacing budget of one-sided transfers
 *   runs.c       merging and splitting runs
 *   auth.c       keys, the transcript, HMAC-SHA256 proofs, lane tokens
 *   err.c        struct rdmae_err
 *   time.c       the clock and deadlines
 *   opts.c       option defaults and checks, and the wire limits they stand for
 *   faults.c     RDMAE_TEST_FAULTS, test-only fault injection (faults.h)
 *
 *   L1, verbs objects that know no connection (own headers: qp.h, mem.h,
 *   dev.h, mr.h):
 *   qp.c         one RC QP: its rings, send-queue slots, chain and doorbell,
 *                retire, drain; reports upward only through its ops table
 *   mem.c        ring memory on the device's NUMA node, on huge pages if any
 *   populate.c   populating memory before it is registered (guest RAM, rings)
 *   dev.c        a device and its PD, by local address or for a connection
 *   mr.c         MRs, the on-demand chunk cache and its refcounts; never
 *                waits (-EAGAIN), its cache lock is a leaf
 *
 *   L2, the connection (this header):
 *   attach.c     regions on a connection: create, attach, detach (waiting for
 *                WRs in flight), what a chunk put wakes
 *   conn.c       the connection core: allocation, device resources, the
 *                state and sticky error and waits on them, accessors,
 *                teardown
 *   lane.c       a lane: its qp made and published, and the qp ops it
 *                implements (keepalive stamps, pacing, unpinning, routing a
 *                receive to negotiation or to messages)
 *   msg.c        messages on a lane: the credit header, grants, the
 *                receive path and queue, rdmae_send/_recv and their _lane forms
 *   negotiate.c  the negotiate exchange (server and client) and the auth policy
 *   connect.c    client setup: resolution, lanes, rdma_cm connection parameters
 *   listen.c     the listener: pending connections, lanes by token, accept
 *   progress.c   the progress thread: completions (cqe->done), CM events and
 *                the keepalive timer handed to conn.c and msg.c
 *
 *   L3, over the connection:
 *   bulk.c       WRITE and READ (rdmae_write.h), fences, flush, pacing
 *
 * msg.c sits in L2 and not above it: the qp ops of lane.c route a receive
 * into it, and the keepalive timer sends its probe through it, so placing it
 * higher would make those calls point upward.
 *
 * Internal functions carry the prefix of the file they live in (rdmae_qp_*
 * in qp.c, rdmae_opts_* in opts.c); public names keep theirs, even where
 * they read like another file's (wire.c's rdmae_negotiate_server/_client).
 *
 * Locking: a mutex per lane (l->lock) and one per connection (c->lock),
 * each with its condition variable, so that threads driving different lanes
 * (QEMU's multifd channels, one per lane) never wait for each other.
 *
 *   l->lock guards   the lane's qp (*qp->lock is &l->lock: rings, send-queue
 *                    slots, chain), its credits, parked buffers, fences seen,
 *                    grants owed, reassembly, message queue, `sending`, and
 *                    its pacing budget (l->pace). l->cond is broadcast on any
 *                    change a caller of that lane may wait for: a completion
 *                    (qp.c broadcasts it after each), a message, a credit, a
 *                    finished send, and the connection's failure.
 *   c->lock guards   the connection's state transitions and sticky error,
 *                    negotiation (neg, key, nonces, tokens), cm_to_thread,
 *                    stop, notify_fd, linger_until_ns, fence_seq, c->regions
 *                    and the attachment fields of its regions. c->cond is
 *                    broadcast on state changes (negotiation, failure) and
 *                    when a chunk put frees pin room.
 *   both             a lane's `live` and `established` are written with
 *                    l->lock and c->lock held, so either lock suffices to
 *                    read them. c->nlanes is written under both too, but
 *                    only during setup: the API's callers read it without a
 *                    lock once they have the connection, and what runs
 *                    during setup (the progress thread's housekeeping, the
 *                    failure wakeups, detach) walks every lane slot instead.
 *   atomics          c->state (written under c->lock, err first, read
 *                    anywhere: the hot path checks for a failure without
 *                    c->lock, and c->err is sticky once the state says
 *                    failed), the keepalive stamps, c->next_lane.
 *   cache->lock      a pin cache's state (mr.h); a leaf: taken under any of
 *                    the above or none, and takes nothing.
 *   not guarded      what is set before the progress thread starts and read
 *                    only after (opts, limits, verbs, pd, cq, comp_ch,
 *                    wake_fd); a lane's qp while it is made, before it is
 *                    published (rdmae_lane_create); cq_events (the progress
 *                    thread's); teardown once the thread is joined.
 *
 * Order: a lane's lock, then c->lock, then a cache lock. Never two lane
 * locks at once: whatever walks the lanes (quiesce, flush, fence, the
 * failure wakeup, housekeeping) takes each in turn. Nothing holding c->lock
 * takes a lane lock, so the conn-level paths (negotiation replies, CM
 * events, the keepalive timer's failure) run with c->lock alone and leave
 * lane work to be done with the lane lock.
 *
 * Waits. A lane's caller waits on l->cond holding l->lock (credits, send
 * and send-queue room, pacing budget, messages, WRs in flight); a
 * conn-level waiter on c->cond holding c->lock (negotiation, pin room).
 * Pin room (ON_DEMAND chunks freed by completions on any lane) is a
 * conn-level condition: a writer drops its lane lock, rings its chain and
 * waits on c->cond under c->lock, checking the cache's event count; the
 * put that frees room takes c->lock to broadcast (lane then conn order),
 * so the wakeup cannot fall between the check and the wait.
 *
 * Failure wakeups. A failure sets the state under c->lock and broadcasts
 * every lane's cond, but a waiter that checked the state just before would
 * miss a broadcast made without its lane lock. So the failure is also
 * broadcast under each lane's lock in turn, with no other lock held
 * (rdmae_conn_wake_lanes): by the progress thread when it sees the failure,
 * by rdmae_conn_abort and teardown, and by a caller returning the error.
 * A waiter checks the state after taking its lane lock, before it waits.
 *
 * Completions: the progress thread reaps with no lock held; each
 * completion's cqe->done takes its own qp's lock (its lane's), so lanes
 * complete independently; callbacks needing the connection take c->lock
 * inside (lane then conn). The keepalive probe takes lane 0's lock.
 *
 * A function whose name ends in _locked needs the lock its prototype names
 * with RDMAE_REQUIRES (a lane's or its qp's: l->lock; the connection's:
 * c->lock); locks are taken and released only through rdmae_lane_lock/
 * _unlock, rdmae_conn_lock/_unlock and rdmae_qp_lock/_unlock. `make lint`
 * runs clang's -Wthread-safety over rdma/, which then proves each caller
 * holds it (rdmae_tsa.h). Limits of that proof: the analysis cannot tell
 * that l->conn is the c whose lock is held (-Wno-thread-safety-precise); a
 * qp's lock is a pointer the analysis cannot equate with &l->lock, so L2
 * states it with rdmae_lane_qp_held; completion callbacks assert the lock
 * qp.c took (rdmae_lane_assert_held, rdmae_qp_assert_held); and the
 * functions not analysed have their reason beside them. mr.c's functions
 * are held to their cache lock the same way (mr.h).
 */
#ifndef RDMAE_INTERNAL_H
#define RDMAE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "faults.h"
#include "mem.h"
#include "opts.h"
#include "qp.h"
#include "rdmae_auth.h"
#include "rdmae_conn.h"
#include "rdmae_credits.h"
#include "mr.h"
#include "rdmae_frag.h"
#include "rdmae_pace.h"
#include "rdmae_region.h"
#include "rdmae_time.h"
#include "rdmae_tsa.h"
#include "rdmae_wire.h"

struct rdmae_chunk;

/* A received message waiting for rdmae_recv_lane. */
struct rdmae_rxmsg {
	struct rdmae_rxmsg *next;
	size_t len;
	void *data;
};

/*
 * One lane of a connection: its qp (L1), whose owner it is, and what the
 * connection keeps per lane on top of it: credits, fences, and its own
 * message stream (reassembly, receive queue, one sender at a time).
 */
struct rdmae_lane {
	/*
	 * The lane's lock and cond (Locking, above): made once, by
	 * rdmae_conn_alloc for every lane or by rdmae_lane_create for a lane
	 * of a connection assembled by hand, and kept across the lane's
	 * destruction and re-creation; everything from qp on is reset then.
	 */
	rdmae_mutex_t lock;
	pthread_cond_t cond;
	bool sync_init;
	struct rdmae_qp qp;
	struct rdmae_conn *conn;	/* set from the lane's claim to its destruction */
	unsigned int idx;
	bool live;			/* qp made and published: others may touch it */
	bool established;
	struct rdmae_credits cr;
	struct rdmae_rxbuf *parked;	/* consumed, held back while the reader lags */

	uint32_t fence_seen;		/* highest fence received on this lane */
	bool grant_pending;		/* an empty credit grant could not be sent yet */
	bool reply_owed;		/* the peer asked for a response on this lane */

	/* messages of this lane */
	struct rdmae_reasm reasm;
	struct rdmae_rxmsg *q_head, *q_tail;
	size_t q_bytes;
	bool sending;			/* one message at a time keeps fragments in order */
	/*
	 * c->lock is held by whoever holds this lane's lock and posts on it:
	 * negotiation sends on lane 0 under both. A post that fails then
	 * reports through on_error, which must not take c->lock again.
	 */
	bool conn_held;

	/* bulk */
	struct rdmae_pace pace;		/* bytes of WRITE/READ in flight on this lane */
};

/*
 * A connection's life, forward only:
 *   SETUP -> NEGOTIATING -> LANES -> CONNECTED           setup (client or server)
 *   any -> DISCONNECTING -> ERROR                        a failure whose queued sends
 *                                                        leave first (a CANCEL, a refusal)
 *   any -> ERROR                                         a failure: disconnected at once
 *   any -> CLOSED                                        rdmae_conn_destroy
 * From DISCONNECTING on the connection has failed: err is set and sticky,
 * and every call returns it (CLOSED without a failure: -ESHUTDOWN).
 */
enum rdmae_conn_state {
	RDMAE_ST_SETUP = 0,		/* lane 0 connecting */
	RDMAE_ST_NEGOTIATING,		/* lane 0 up, negotiate message in flight */
	RDMAE_ST_LANES,			/* negotiated, extra lanes connecting */
	RDMAE_ST_CONNECTED,
	RDMAE_ST_DISCONNECTING,		/* failed; queued sends leave, then ERROR */
	RDMAE_ST_ERROR,			/* failed and disconnected */
	RDMAE_ST_CLOSED,		/* being destroyed */
};

struct rdmae_conn {
	rdmae_mutex_t lock;
	pthread_cond_t cond;
	bool server;
	_Atomic enum rdmae_conn_state state;	/* written under lock, err first */
	struct rdmae_err err;		/* sticky from DISCONNECTING on */
	uint64_t linger_until_ns;	/* DISCONNECTING: disconnect by then even if sends remain */
	uint64_t setup_deadline_ns;	/* server: a pending connection gives up then */
	uint64_t setup_t0_ns;		/* setup began (client: connect; server: lane 0's request) */
	/*
	 * Written by the setup thread before connected, except auth_us: by
	 * whoever handles a negotiate message (the server's progress thread), under
	 * c->lock.
	 */
	struct rdmae_setup_times setup;
	bool debug;			/* RDMAE_DEBUG=1 in the environment: trace to stderr */
	struct rdmae_faults faults;	/* RDMAE_TEST_FAULTS (faults.h): tests only */
	char peer[80];
	struct rdmae_conn_opts opts;
	struct rdmae_wire_limits limits;
	struct rdmae_negotiated neg;

	/* authentication (auth.c): the key (len 0 with auth=none), both nonces, lane tokens */
	struct rdmae_key key;
	uint8_t nonce_c[RDMAE_NONCE_SIZE];
	uint8_t nonce_s[RDMAE_NONCE_SIZE];
	uint16_t peer_auth;		/* client: the server's mode, from its accept */
	uint64_t lane_token[RDMAE_MAX_LANES];	/* set once authenticated; [0] stays 0 */

	struct rdma_event_channel *cm_ch;
	/*
	 * Who reads cm_ch: setup (connect.c, the listener) until the one
	 * transition to CONNECTED (rdmae_conn_connected_locked), the progress
	 * thread from then on, whatever state follows. Not a state: ERROR
	 * follows a failed setup, whose events setup still reads, as well as a
	 * failed connection, whose events the thread must go on reading (and
	 * acking, or destroying the ids would wait for ever).
	 */
	bool cm_to_thread;
	struct ibv_context *verbs;
	struct rdmae_dev *dev;		/* opts.dev, or the connection's own (a reference) */
	struct ibv_device_attr dev_attr;
	struct ibv_pd *pd;		/* dev's */
	struct ibv_comp_channel *comp_ch;
	struct ibv_cq *cq;
	unsigned int cq_events;		/* to ack before destroying the CQ */
	int numa_node;

	unsigned int nlanes;		/* lanes created */
	struct rdmae_lane lanes[RDMAE_MAX_LANES];

	/* negotiation */
	struct rdmae_neg_req neg_sent;

	/* bulk */
	_Atomic unsigned int next_lane;	/* round-robin of the lane-agnostic calls */
	uint32_t fence_seq;

	/*
	 * keepalive, in CLOCK_MONOTONIC ns. The peer is heard from when a
	 * message arrives or one of our WRITEs completes: the WRITE target
	 * sees no traffic during a transfer, but the writer's completions
	 * prove the peer's QP is placing data. Atomics, read and stamped
	 * without c->lock (relaxed: a stamp publishes nothing else, and the
	 * timer only compares times), so completions need no connection lock
	 * to stamp them.
	 */
	_Atomic uint64_t last_heard_ns;
	_Atomic uint64_t probe_ns;	/* 0 = no probe outstanding */

	/*
	 * progress thread. Whether it runs and whether it is told to exit are
	 * the thread's, not the connection's: both change while the state
	 * stands still (the unit tests stop it on a CONNECTED connection and
	 * reap by hand; teardown stops it after CLOSED), so they are fields of
	 * their own, not states.
	 */
	pthread_t thread;
	bool thread_started;		/* written by whoever starts and joins the thread */
	_Atomic bool stop;		/* written under c->lock; read by lane paths without it */
	int wake_fd;			/* eventfd: wakes the progress thread */
	int notify_fd;			/* listener's eventfd while pending, else -1 */

	/* regions (attach.c) */
	struct rdmae_mr_cache *mrc;	/* pin cache of the regions made on it (create) */
	struct rdmae_region *regions;	/* regions attached to it */
};

/*
 * Take and release c->lock. Every lock and unlock of it goes through these,
 * so the analysis knows where it is held; their bodies call pthread, which
 * the analysis cannot see into.
 */
static inline void rdmae_conn_lock(struct rdmae_conn *c) RDMAE_ACQUIRE(c->lock) RDMAE_NO_TSA
{
	pthread_mutex_lock(&c->lock);
}

static inline void rdmae_conn_unlock(struct rdmae_conn *c) RDMAE_RELEASE(c->lock) RDMAE_NO_TSA
{
	pthread_mutex_unlock(&c->lock);
}

/* Take and release a lane's lock; the same reason as above. */
static inline void rdmae_lane_lock(struct rdmae_lane *l) RDMAE_ACQUIRE(l->lock) RDMAE_NO_TSA
{
	pthread_mutex_lock(&l->lock);
}

static inline void rdmae_lane_unlock(struct rdmae_lane *l) RDMAE_RELEASE(l->lock) RDMAE_NO_TSA
{
	pthread_mutex_unlock(&l->lock);
}

/*
 * A completion callback runs with its lane's lock held by qp.c, which calls
 * it through a function pointer the analysis cannot follow; this states it.
 * It checks nothing at run time.
 */
static inline void rdmae_lane_assert_held(const struct rdmae_lane *l) RDMAE_ASSERT_HELD(l->lock)
{
	(void)l;
}

/*
 * A lane's qp is guarded by the lane's lock under another name
 * (*qp->lock == &l->lock): this tells the analysis, for a caller holding
 * l->lock, before it calls the qp's _locked functions.
 */
static inline void rdmae_lane_qp_held(const struct rdmae_lane *l, const struct rdmae_qp *qp)
	RDMAE_REQUIRES(l->lock) RDMAE_ASSERT_HELD(*qp->lock)
{
	(void)l;
	(void)qp;
}

/* conn.c: the connection core */
/* Trace a connection event to stderr when RDMAE_DEBUG is set; off, it costs one branch. */
#define rdmae_trace(c, ...) do { if ((c)->debug) rdmae_trace_print((c), __VA_ARGS__); } while (0)
void rdmae_trace_print(const struct rdmae_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A connection with its options checked, an eventfd and a CM channel; no device yet. */
struct rdmae_conn *rdmae_conn_alloc(const struct rdmae_conn_opts *o, bool server,
				    struct rdmae_err *err);
/* The PD, CQ and completion channel of the device lane 0 is on, and the progress thread. */
int rdmae_conn_setup_device(struct rdmae_conn *c, struct ibv_context *verbs,
			    struct rdmae_err *err);
void rdmae_conn_eventfd_kick(int fd);
/*
 * Disconnect every live lane (QPs to error, posted work flushed). Reads
 * only what either lock guards (live, established, the qp's id).
 */
void rdmae_conn_disconnect_locked(struct rdmae_conn *c) RDMAE_REQUIRES(c->lock);
/* Is any SEND still queued or in flight on any lane? Takes each lane's lock in turn. */
bool rdmae_conn_sends_pending(struct rdmae_conn *c) RDMAE_EXCLUDES(c->lock);
/*
 * Has c failed (or been closed)? Its error is then sticky. No lock: the
 * state is atomic, and c->err is written before it (see Locking).
 */
static inline bool rdmae_conn_failed(const struct rdmae_conn *c)
{
	return atomic_load_explicit(&c->state, memory_order_acquire) >= RDMAE_ST_DISCONNECTING;
}
/* Broadcast every lane's cond under its lock, one at a time (failure wakeups). */
void rdmae_conn_wake_lanes(struct rdmae_conn *c) RDMAE_EXCLUDES(c->lock);

/* Fail c with code and a message: ERROR, and every lane disconnected; the first failure stays. */
void rdmae_conn_fail_locked(struct rdmae_conn *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)))
	RDMAE_REQUIRES(c->lock);
/* The same, taking c->lock: for a caller holding a lane's lock (lane then conn) or none. */
void rdmae_conn_fail(struct rdmae_conn *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)))
	RDMAE_EXCLUDES(c->lock);
/*
 * The same, but DISCONNECTING: what is already queued still leaves (a
 * CANCEL with its reason, a negotiate refusal with its status), and the
 * progress thread disconnects once it has, or after a bound.
 */
void rdmae_conn_fail_after_sends_locked(struct rdmae_conn *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)))
	RDMAE_REQUIRES(c->lock);
/*
 * Setup is done: CONNECTED, CM events to the thread, keepalive and pacing
 * start. Only from LANES (negotiated, and authenticated with a key); from
 * any other state the connection fails instead: the caller checks after.
 */
void rdmae_conn_connected_locked(struct rdmae_conn *c) RDMAE_REQUIRES(c->lock);
/* 0, or c's sticky error (copied to err). No lock (see rdmae_conn_failed). */
int rdmae_conn_check(const struct rdmae_conn *c, struct rdmae_err *err);
/* Wait on c->cond until deadline (0 = for ever). -ETIMEDOUT on timeout. */
/* A condition variable whose timed waits run on CLOCK_MONOTONIC, as rdmae_now_ns does. */
void rdmae_conn_cond_init(pthread_cond_t *cv);
/* Wait on cv (made with CLOCK_MONOTONIC) holding m, until deadline_ns (rdmae_now_ns; 0: none): 0 or -ETIMEDOUT. */
int rdmae_conn_cond_wait(pthread_cond_t *cv, pthread_mutex_t *m, uint64_t deadline_ns);
int rdmae_conn_wait_locked(struct rdmae_conn *c, uint64_t deadline_ns) RDMAE_REQUIRES(c->lock);
void rdmae_conn_wake(struct rdmae_conn *c);
/* Keepalive: the peer was heard from at now (what: for the trace, or NULL). No lock. */
void rdmae_conn_heard(struct rdmae_conn *c, uint64_t now, const char *what);
/*
 * Does the progress thread reap c's completions now? thread_started changes
 * only in the thread that starts and joins it; stop is atomic.
 */
static inline bool rdmae_conn_reaped(const struct rdmae_conn *c)
{
	return c->thread_started && !c->stop;
}
/* The keepalive stamps, relaxed (see struct rdmae_conn). */
static inline uint64_t rdmae_conn_probe_ns(const struct rdmae_conn *c)
{
	return atomic_load_explicit(&c->probe_ns, memory_order_relaxed);
}

static inline uint64_t rdmae_conn_last_heard_ns(const struct rdmae_conn *c)
{
	return atomic_load_explicit(&c->last_heard_ns, memory_order_relaxed);
}
/*
 * The pacing budget starts once the lanes and max_rw_size are known: each
 * lane gets its share of the connection's (four full-size WRITEs at least).
 * Called during setup, before any lane carries WRITEs.
 */
void rdmae_conn_pace_start_locked(struct rdmae_conn *c) RDMAE_REQUIRES(c->lock);

/* lane.c: a lane of a connection, owner of its qp */
/*
 * Lane idx of c on id: its qp (QP, rings, receives posted), published to
 * the progress thread once whole. Takes c->lock to claim the lane and to
 * publish it, and registers the rings between the two without it, so
 * completions and keepalive go on meanwhile. On success id is the lane's
 * (destroyed with it); on failure it is still the caller's.
 */
int rdmae_lane_create(struct rdmae_conn *c, struct rdma_cm_id *id, unsigned int idx,
		      struct rdmae_err *err) RDMAE_EXCLUDES(c->lock);
/*
 * Destroy a lane with its qp and cm_id: marked dead under its lock and
 * c->lock, drained (with the progress thread running) under its lock, then
 * its rings deregistered and its cm_id destroyed with no lock held.
 */
void rdmae_lane_destroy(struct rdmae_lane *l) RDMAE_EXCLUDES(l->lock);
/* Make a lane's lock and cond (once per lane slot); reset everything from its qp on. */
void rdmae_lane_sync_init(struct rdmae_lane *l);
void rdmae_lane_reset(struct rdmae_lane *l);
/*
 * Wait on l->cond until deadline (0 = for ever), ringing the lane's chain
 * first so a waiter always has a completion coming. -ETIMEDOUT on timeout.
 */
int rdmae_lane_wait_locked(struct rdmae_lane *l, uint64_t deadline_ns) RDMAE_REQUIRES(l->lock);
/* Ring the lane's doorbell if it is live; the post error (the connection has failed with it). */
int rdmae_lane_post_locked(struct rdmae_lane *l) RDMAE_REQUIRES(l->lock);
/* The lane whose qp an rdma_cm event's id belongs to, or NULL. */
struct rdmae_lane *rdmae_lane_of(struct rdma_cm_id *id);

/* negotiate.c */
int rdmae_negotiate_auth_setup(const struct rdmae_conn_opts *o, struct rdmae_key *k,
			       const char *what, struct rdmae_err *err);
uint16_t rdmae_negotiate_auth_mode(const struct rdmae_conn *c);
/* A lane after lane 0: its credits and its reassembly, from what was negotiated. */
void rdmae_negotiate_lane_credits_locked(struct rdmae_conn *c, struct rdmae_lane *l)
	RDMAE_REQUIRES(l->lock) RDMAE_REQUIRES(c->lock);
/*
 * The first message on lane 0 is the peer's negotiate message; handled in
 * the progress thread, with lane 0's lock and c->lock held.
 */
void rdmae_negotiate_on_msg_locked(struct rdmae_conn *c, const void *buf, size_t len)
	RDMAE_REQUIRES(c->lanes[0].lock) RDMAE_REQUIRES(c->lock);
/* Client: send the request on lane 0 and wait for the response; takes lane 0's lock and c->lock. */
int rdmae_negotiate_request(struct rdmae_conn *c, uint64_t deadline, struct rdmae_err *err)
	RDMAE_EXCLUDES(c->lock);

/* connect.c: the rdma_cm parameters of a lane, on connect and on accept alike */
void rdmae_connect_param_init(struct rdma_conn_param *p, const uint8_t *pd, uint8_t pd_len);

/* msg.c: messages on a lane */
/*
 * Queue one data-transfer message on a lane (added to the chain). Waits for
 * a credit, a send slot and send-queue room unless nowait, in which case it
 * returns -EAGAIN instead; -ETIMEDOUT at deadline_ns (0: none). A failed
 * connection ends the wait.
 */
int rdmae_msg_lane_send_locked(struct rdmae_lane *l, const void *payload, uint32_t len,
			       uint32_t remaining, uint16_t flags, uint32_t fence_seq, bool nowait,
			       uint64_t deadline_ns) RDMAE_REQUIRES(l->lock);
/* A receive on a lane past negotiation: its header, credits, fence, payload. */
void rdmae_msg_on_recv_locked(struct rdmae_lane *l, struct rdmae_rxbuf *rb, uint32_t len)
	RDMAE_REQUIRES(l->lock);
void rdmae_msg_repost_parked_locked(struct rdmae_lane *l) RDMAE_REQUIRES(l->lock);
/* Send an empty message if credits or a reply are owed and due; never blocks. */
void rdmae_msg_grant_locked(struct rdmae_lane *l) RDMAE_REQUIRES(l->lock);
/* Free the lane's queued messages and reassembly. */
void rdmae_msg_lane_clear(struct rdmae_lane *l);

/* progress.c */
int rdmae_progress_start(struct rdmae_conn *c, struct rdmae_err *err);
/*
 * One turn of the thread's loop, step by step (the mock tests drive them
 * one at a time). None is called with a lock held: each takes what it needs.
 */
/* Reap the CQ: every completion's cqe->done, which takes its lane's lock. */
void rdmae_progress_reap(struct rdmae_conn *c) RDMAE_EXCLUDES(c->lock);
/* CM events once the thread owns them: a disconnect or a device removal fails c. */
void rdmae_progress_cm_events(struct rdmae_conn *c) RDMAE_EXCLUDES(c->lock);
/*
 * After completions: answers, grants and reposts that could not go earlier,
 * each lane under its lock; and once c has failed, its lanes' waiters woken.
 */
void rdmae_progress_housekeeping(struct rdmae_conn *c) RDMAE_EXCLUDES(c->lock);
/*
 * DISCONNECTING: disconnect (on to ERROR) once the queued sends are out or
 * at linger_until_ns; the poll timeout in ms until then (-1: nothing to wait for).
 */
int rdmae_progress_disconnecting(struct rdmae_conn *c) RDMAE_EXCLUDES(c->lock);
/* The keepalive timer: probes, or fails c; the poll timeout in ms until it is due (-1: none). */
int rdmae_progress_keepalive(struct rdmae_conn *c) RDMAE_EXCLUDES(c->lock);
/* Takes c->lock to tell the thread to stop, then joins it. */
void rdmae_progress_stop(struct rdmae_conn *c) RDMAE_EXCLUDES(c->lock);

/* attach.c: regions on a connection (mr.c does the registering) */
/*
 * Drop a WR's pin; when that frees pin room, takes c->lock to wake writers
 * waiting for it (so the caller must not hold c->lock: it holds a lane's
 * lock, or none).
 */
void rdmae_conn_chunk_put(struct rdmae_conn *c, struct rdmae_chunk *ch) RDMAE_EXCLUDES(c->lock);
/* Teardown, thread joined: free the regions made on c, detach the prepared ones. */
void rdmae_regions_detach_all(struct rdmae_conn *c);

#endif
