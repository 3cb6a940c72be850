/* SPDX-License-Identifier: MIT */
/*
 * Transport internals shared by the files of rdma/. Not installed.
 *
 * The files of rdma/, one job each (doc/architecture.md keeps the same list):
 *
 *   pure: no verbs call, no lock:
 *   wire.c       the wire encoding, and the negotiation rules over it
 *   credits.c    credit accounting of one lane
 *   frag.c       fragmentation and reassembly of messages
 *   pace.c       the pacing budget of one-sided transfers
 *   runs.c       merging and splitting runs
 *   auth.c       keys, the transcript, HMAC-SHA256 proofs, lane tokens
 *   err.c        struct rdmae_err
 *   time.c       the clock and deadlines
 *   opts.c       option defaults and checks, and the wire limits they stand for
 *
 *   L1, over verbs, knowing no connection (own headers, dev.h and mr.h):
 *   dev.c        a device and its PD, by local address or for a connection
 *   mr.c         MRs, the on-demand chunk cache and its refcounts; never
 *                waits (-EAGAIN), its cache lock is a leaf
 *
 *   over verbs, sharing struct rdmae_conn and its lock:
 *   mem.c        ring memory on the device's NUMA node, on huge pages if any
 *   lane.c       one lane: its QP, rings, send-queue accounting and completions
 *   attach.c     regions on a connection: create, attach, detach (waiting for
 *                WRs in flight), what a chunk put wakes
 *   conn.c       the connection core: allocation, device resources, the
 *                sticky error and waits on it, accessors, teardown
 *   negotiate.c  the negotiate exchange (server and client) and the auth policy
 *   connect.c    client setup: resolution, lanes, rdma_cm connection parameters
 *   listen.c     the listener: pending connections, lanes by token, accept
 *   msg.c        the message channel on lane 0 (rdmae_send, rdmae_recv)
 *   write.c      bulk WRITE and READ, fences, flush, the pacing budget's start
 *   progress.c   the progress thread: completions, CM events, keepalive timer
 *
 * Internal functions carry the prefix of the file they live in (rdmae_lane_*
 * in lane.c, rdmae_opts_* in opts.c); public names keep theirs, even where
 * they read like another file's (wire.c's rdmae_negotiate_server/_client).
 *
 * Locking: one mutex per connection (c->lock) guards all of its state,
 * including every lane; c->cond is broadcast on any change a caller may
 * wait for (credits, send-queue room, messages, fences, errors, state).
 * The progress thread runs completion callbacks with the lock held.
 *
 *   c->lock guards   every field of struct rdmae_conn but lock and cond, and
 *                    of every struct rdmae_lane in c->lanes[] (a lane's lock
 *                    is l->conn->lock); c->regions and the attachment
 *                    fields of its regions
 *   cache->lock      a pin cache's state (mr.h); a leaf: taken under c->lock
 *                    or with no lock, and takes nothing
 *   not guarded      what is set before the progress thread starts and read
 *                    only after (opts, limits, verbs, pd, cq, comp_ch,
 *                    wake_fd); teardown once the thread is joined
 *
 * A function whose name ends in _locked needs c->lock (for a lane or region,
 * its connection's), and its prototype says so with RDMAE_REQUIRES; the lock
 * is taken and released only through rdmae_conn_lock/rdmae_conn_unlock.
 * `make lint` runs clang's -Wthread-safety over rdma/, which then proves
 * each caller holds it (rdmae_tsa.h). Limits of that proof: the analysis
 * cannot tell that l->conn is the c whose lock is held, so it accepts any
 * connection's lock there (-Wno-thread-safety-precise); completion callbacks
 * assert the lock the progress thread took (rdmae_conn_assert_held); and one
 * function is not analysed, with its reason beside it, a known item of
 * issue 17: rdmae_lane_destroy_qp runs both with and without it. mr.c's
 * functions are held to their cache lock the same way (mr.h). The rings are
 * still registered with the lock held (rdmae_lane_create_locked).
 */
#ifndef RDMAE_INTERNAL_H
#define RDMAE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

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

struct rdmae_lane;
struct rdmae_chunk;

/*
 * Every signalled work request points at one of these through wr_id, and
 * the progress thread calls done() (the kernel's ib_cqe pattern): no
 * casting of wr_id to guess what completed.
 */
struct rdmae_cqe {
	void (*done)(struct rdmae_cqe *cqe, const struct ibv_wc *wc);
};

/* One posted receive buffer. */
struct rdmae_rxbuf {
	struct rdmae_cqe cqe;
	struct rdmae_lane *lane;
	uint8_t *data;
	struct rdmae_rxbuf *next_parked;
};

/*
 * What a send-queue position holds, so a signalled completion can retire
 * everything before it. WRITE and READ are the one-sided kinds: both are
 * paced and bounded by opts.writes_in_flight, and both may pin a chunk.
 */
enum rdmae_wr_kind { RDMAE_WR_SEND = 1, RDMAE_WR_WRITE, RDMAE_WR_READ, RDMAE_WR_PROBE };

static inline bool rdmae_wr_one_sided(enum rdmae_wr_kind k)
{
	return k == RDMAE_WR_WRITE || k == RDMAE_WR_READ;
}

struct rdmae_wrslot {
	struct rdmae_cqe cqe;
	struct rdmae_lane *lane;
	uint64_t pos;			/* send-queue position of this WR */
	enum rdmae_wr_kind kind;
	struct rdmae_chunk *chunk;	/* on-demand chunk pinned for a WRITE or READ, or NULL */
	struct rdmae_pace_mark mark;	/* WRITE/READ: length, doorbell time, delivered then */
};

/* WRs gathered for one doorbell. */
#define RDMAE_CHAIN_MAX 32
/* A WRITE is signalled at least this often, so completions stay rare but SQ room comes back. */
#define RDMAE_SIGNAL_EVERY 16

struct rdmae_lane {
	struct rdmae_conn *conn;
	unsigned int idx;
	struct rdma_cm_id *id;
	struct ibv_qp *qp;
	bool established;
	struct rdmae_credits cr;

	/* receive ring: nrx buffers of rx_size bytes */
	uint32_t nrx;
	uint32_t rx_size;
	void *rx_mem;
	bool rx_huge;
	struct ibv_mr *rx_mr;
	struct rdmae_rxbuf *rx;
	struct rdmae_rxbuf *parked;	/* consumed, held back while the reader lags */

	/* send ring: ntx slots of tx_size bytes, used and freed in order */
	uint32_t ntx;
	uint32_t tx_size;
	void *tx_mem;
	bool tx_huge;
	struct ibv_mr *tx_mr;
	uint64_t tx_head;		/* slots taken */
	uint64_t tx_tail;		/* slots whose SEND completed */

	/* send queue accounting by position */
	uint32_t sq_depth;
	struct rdmae_wrslot *wr;	/* sq_depth entries, indexed by pos % sq_depth */
	uint64_t sq_posted;		/* WRs handed to the chain (posted or pending) */
	uint64_t sq_done;		/* WRs known complete */
	uint64_t last_signal;		/* position after the last signalled WR */
	uint32_t writes_out;		/* WRITE and READ WRs in flight (at most
					 * opts.writes_in_flight) */
	uint64_t unsig_bytes;		/* WRITE/READ bytes posted since the last signalled WR */

	/* the chain waiting for its doorbell */
	struct ibv_send_wr chain[RDMAE_CHAIN_MAX];
	struct ibv_sge sge[RDMAE_CHAIN_MAX];
	unsigned int nchain;

	uint32_t fence_seen;		/* highest fence received on this lane */
	bool grant_pending;		/* an empty credit grant could not be sent yet */
	bool reply_owed;		/* the peer asked for a response on this lane */

	/* drain before the rings are freed: markers behind every posted WR */
	struct rdmae_cqe drain_cqe;
	unsigned int drain_left;	/* markers not yet flushed back */
	bool draining;			/* flush errors are expected, not failures */
	struct rdmae_lane_stats st;
};

enum rdmae_conn_state {
	RDMAE_ST_SETUP = 0,		/* lane 0 connecting */
	RDMAE_ST_NEGOTIATING,		/* lane 0 up, negotiate message in flight */
	RDMAE_ST_LANES,			/* negotiated, extra lanes connecting */
	RDMAE_ST_CONNECTED,
	RDMAE_ST_ERROR,
};

/* A received message waiting for rdmae_recv. */
struct rdmae_rxmsg {
	struct rdmae_rxmsg *next;
	size_t len;
	void *data;
};

struct rdmae_conn {
	rdmae_mutex_t lock;
	pthread_cond_t cond;
	bool server;
	enum rdmae_conn_state state;
	struct rdmae_err err;		/* sticky once state is ERROR */
	bool linger;			/* failed, but let queued sends finish before disconnecting */
	uint64_t linger_until_ns;	/* disconnect by then even if sends are still queued */
	uint64_t setup_deadline_ns;	/* server: a pending connection gives up then */
	bool debug;			/* RDMAE_DEBUG=1 in the environment: trace to stderr */
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
	bool cm_to_thread;		/* the progress thread owns CM events now */
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

	/* message channel (lane 0) */
	struct rdmae_reasm reasm;
	struct rdmae_rxmsg *q_head, *q_tail;
	size_t q_bytes;
	bool sending;			/* one rdmae_send at a time keeps fragments in order */

	/* bulk */
	unsigned int next_lane;
	uint32_t fence_seq;
	struct rdmae_pace pace;		/* bytes of WRITE in flight, all lanes */

	/*
	 * keepalive, in CLOCK_MONOTONIC ns. The peer is heard from when a
	 * message arrives or one of our WRITEs completes: the WRITE target
	 * sees no traffic during a transfer, but the writer's completions
	 * prove the peer's QP is placing data.
	 */
	uint64_t last_heard_ns;
	uint64_t probe_ns;		/* 0 = no probe outstanding */

	/* progress thread */
	pthread_t thread;
	bool thread_started;
	bool stop;
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

/*
 * A completion callback runs with c->lock held by the progress thread, which
 * calls it through a function pointer the analysis cannot follow; this states
 * it. It checks nothing at run time.
 */
static inline void rdmae_conn_assert_held(const struct rdmae_conn *c) RDMAE_ASSERT_HELD(c->lock)
{
	(void)c;
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
/* Disconnect every lane (QPs to error, posted work flushed). */
void rdmae_conn_disconnect_locked(struct rdmae_conn *c) RDMAE_REQUIRES(c->lock);
bool rdmae_conn_sends_pending_locked(const struct rdmae_conn *c) RDMAE_REQUIRES(c->lock);
void rdmae_conn_fail_locked(struct rdmae_conn *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)))
	RDMAE_REQUIRES(c->lock);
int rdmae_conn_check_locked(struct rdmae_conn *c, struct rdmae_err *err)
	RDMAE_REQUIRES(c->lock);
/* Wait on c->cond until deadline (0 = for ever); posts pending chains first. -ETIMEDOUT on timeout. */
int rdmae_conn_wait_locked(struct rdmae_conn *c, uint64_t deadline_ns) RDMAE_REQUIRES(c->lock);
void rdmae_conn_wake(struct rdmae_conn *c);

/* opts.c */
void rdmae_opts_fill(struct rdmae_conn_opts *dst, const struct rdmae_conn_opts *src);
int rdmae_opts_check(const struct rdmae_conn_opts *o, struct rdmae_err *err);
void rdmae_opts_limits(struct rdmae_wire_limits *l, const struct rdmae_conn_opts *o);

/* negotiate.c */
int rdmae_negotiate_auth_setup(const struct rdmae_conn_opts *o, struct rdmae_key *k,
			       const char *what, struct rdmae_err *err);
uint16_t rdmae_negotiate_auth_mode(const struct rdmae_conn *c);
void rdmae_negotiate_lane_credits_locked(struct rdmae_conn *c, struct rdmae_lane *l)
	RDMAE_REQUIRES(c->lock);
/* The first message on lane 0 is the peer's negotiate message; handled in the progress thread. */
void rdmae_negotiate_on_msg_locked(struct rdmae_conn *c, const void *buf, size_t len)
	RDMAE_REQUIRES(c->lock);
/* Client: send the request on lane 0 and wait for the response; takes c->lock. */
int rdmae_negotiate_request(struct rdmae_conn *c, uint64_t deadline, struct rdmae_err *err)
	RDMAE_EXCLUDES(c->lock);

/* connect.c: the rdma_cm parameters of a lane, on connect and on accept alike */
void rdmae_connect_param_init(struct rdma_conn_param *p, const uint8_t *pd, uint8_t pd_len);

/* write.c: the pacing budget starts once the lanes and max_rw_size are known. */
void rdmae_write_pace_start_locked(struct rdmae_conn *c) RDMAE_REQUIRES(c->lock);

/* lane.c */
/*
 * Lane idx of c on id: QP, rings, receives posted. It registers the rings
 * with c->lock held, which stalls completions for as long as the kernel
 * pins them; the rings are small and made once per lane, so this stays for
 * now, a known item of issue 17 (rdmae_mr_lkey shows the unlocked way).
 */
int rdmae_lane_create_locked(struct rdmae_conn *c, struct rdma_cm_id *id, unsigned int idx,
			     struct rdmae_err *err) RDMAE_REQUIRES(c->lock);
/* Destroy the QP and release the pins of WRs it will never complete. */
void rdmae_lane_destroy_qp(struct rdmae_lane *l);
void rdmae_lane_destroy(struct rdmae_lane *l);
int rdmae_lane_post_chain_locked(struct rdmae_lane *l) RDMAE_REQUIRES(l->conn->lock);
/* Ring every lane's doorbell; the first post error (the connection has failed with it). */
int rdmae_lane_post_all_locked(struct rdmae_conn *c) RDMAE_REQUIRES(c->lock);
/* Reserve one send-queue position for a WR and return its slot; caller fills the chain entry. */
struct rdmae_wrslot *rdmae_lane_sq_take_locked(struct rdmae_lane *l, enum rdmae_wr_kind kind,
					struct ibv_send_wr **wr, struct ibv_sge **sge)
	RDMAE_REQUIRES(l->conn->lock);
uint32_t rdmae_lane_sq_free_locked(const struct rdmae_lane *l) RDMAE_REQUIRES(l->conn->lock);
/* Is any WR still in flight on any lane? */
bool rdmae_lane_any_busy_locked(const struct rdmae_conn *c) RDMAE_REQUIRES(c->lock);
/*
 * Queue one data-transfer message on a lane (added to the chain). Waits for
 * a credit, a send slot and send-queue room unless nowait, in which case it
 * returns -EAGAIN instead; -ETIMEDOUT at deadline_ns (0: none). A failed
 * connection ends the wait.
 */
int rdmae_lane_send_locked(struct rdmae_lane *l, const void *payload, uint32_t len,
			   uint32_t remaining, uint16_t flags, uint32_t fence_seq, bool nowait,
			   uint64_t deadline_ns) RDMAE_REQUIRES(l->conn->lock);
/*
 * Keepalive without a credit: a signalled zero-length RDMA WRITE, posted at
 * once. -EAGAIN when the send queue has no room (then WRITE completions
 * already tell that the peer is there).
 */
int rdmae_lane_probe_write_locked(struct rdmae_lane *l) RDMAE_REQUIRES(l->conn->lock);
/* Negotiate messages: no header, no credits, posted at once. */
int rdmae_lane_send_raw_locked(struct rdmae_lane *l, const void *buf, uint32_t len)
	RDMAE_REQUIRES(l->conn->lock);
void rdmae_lane_repost_parked_locked(struct rdmae_lane *l) RDMAE_REQUIRES(l->conn->lock);
/* Send an empty message if credits or a reply are owed and due; never blocks. */
void rdmae_lane_grant_locked(struct rdmae_lane *l) RDMAE_REQUIRES(l->conn->lock);

/* progress.c */
int rdmae_progress_start(struct rdmae_conn *c, struct rdmae_err *err);
/* Takes c->lock to tell the thread to stop, then joins it. */
void rdmae_progress_stop(struct rdmae_conn *c) RDMAE_EXCLUDES(c->lock);

/* attach.c: regions on a connection (mr.c does the registering) */
/* The qp's chunk_put: drop a WR's pin; wakes writers waiting for pin room when it frees some. */
void rdmae_conn_chunk_put_locked(struct rdmae_conn *c, struct rdmae_chunk *ch)
	RDMAE_REQUIRES(c->lock);
/*
 * Wait (bounded) until no WR is in flight on c, then drop the pins of any
 * still counted against r: nothing on c reads r afterwards. Waits on c->cond.
 */
void rdmae_conn_region_quiesce_locked(struct rdmae_conn *c, struct rdmae_region *r)
	RDMAE_REQUIRES(c->lock);
/* Teardown, thread joined: free the regions made on c, detach the prepared ones. */
void rdmae_regions_detach_all(struct rdmae_conn *c);

/* mem.c: ring memory on the device's NUMA node, on huge pages when there are any */
void *rdmae_mem_alloc(size_t len, int numa_node, bool *huge);
void rdmae_mem_free(void *p, size_t len, bool huge);

#endif
