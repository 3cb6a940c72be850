/* SPDX-License-Identifier: MIT */
/*
 * L1: one RC queue pair with its rings (qp.c). Not installed.
 *
 * A qp knows nothing of the connection above it: no error state, no
 * credits, no pacing, no keepalive, no registration cache. It posts what it
 * is given and accounts for its send queue by position; a completion calls
 * cqe->done, which touches only its own request (the kernel's ib_cqe), and
 * whatever the owner must hear of goes through the ops table with the owner
 * pointer, never through a call into a file above.
 *
 * Locking: every field after `cond` is guarded by *lock, a mutex the owner
 * gives (a lane's l->lock). Functions ending in _locked need it, and say so
 * with RDMAE_REQUIRES(*qp->lock). A completion's cqe->done takes *lock
 * itself, so a reaper holds no lock and completions of different qps run
 * apart; the ops are called with it held, and after each completion *cond
 * (the owner's, if any) is broadcast with it held, so whoever waits on it
 * for room, credits or a drain sees the change. An owner whose lock is
 * *qp->lock under another name tells the analysis once (internal.h's
 * rdmae_lane_qp_held).
 */
#ifndef RDMAE_QP_H
#define RDMAE_QP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "rdmae_conn.h"
#include "rdmae_err.h"
#include "rdmae_pace.h"
#include "rdmae_tsa.h"

/*
 * Every work request points at one of these through wr_id, and the
 * progress thread calls done() (the kernel's ib_cqe pattern): no casting of
 * wr_id to guess what completed.
 */
struct rdmae_cqe {
	void (*done)(struct rdmae_cqe *cqe, const struct ibv_wc *wc);
};

struct rdmae_qp;
struct rdmae_chunk;

/* One posted receive buffer. */
struct rdmae_rxbuf {
	struct rdmae_cqe cqe;
	struct rdmae_qp *qp;
	uint8_t *data;
	struct rdmae_rxbuf *next_parked;	/* the owner's, while it holds the buffer back */
};

/*
 * What a send-queue position holds, so a signalled completion can retire
 * everything before it. WRITE and READ are the one-sided kinds: both are
 * bounded by writes_in_flight, and both may hold a chunk of a region.
 */
enum rdmae_wr_kind { RDMAE_WR_SEND = 1, RDMAE_WR_WRITE, RDMAE_WR_READ, RDMAE_WR_PROBE };

static inline bool rdmae_wr_one_sided(enum rdmae_wr_kind k)
{
	return k == RDMAE_WR_WRITE || k == RDMAE_WR_READ;
}

struct rdmae_wrslot {
	struct rdmae_cqe cqe;
	struct rdmae_qp *qp;
	uint64_t pos;			/* send-queue position of this WR */
	enum rdmae_wr_kind kind;
	struct rdmae_chunk *chunk;	/* the owner's: a pinned chunk the WR reads or writes */
	struct rdmae_pace_mark mark;	/* WRITE/READ: length, doorbell time, delivered then */
};

/* WRs gathered for one doorbell. */
#define RDMAE_CHAIN_MAX 32
/* A WRITE is signalled at least this often, so completions stay rare but SQ room comes back. */
#define RDMAE_SIGNAL_EVERY 16

/*
 * What a qp tells its owner, with *qp->lock held. Every op is required.
 *   on_recv     a receive completed: len bytes in rb->data. The buffer is
 *               the owner's until it reposts it (rdmae_qp_post_recv).
 *   on_retired  send-queue positions are known complete at now_ns (a
 *               signalled completion retires every position before it):
 *               once per completion, with the bytes of the one-sided WRs
 *               among them (mark.len), so a page-sized WRITE costs no call.
 *   on_sent     the signalled WR s of kind completed successfully, after
 *               everything up to it was retired.
 *   on_forget   positions that will never complete (their post failed, or
 *               the QP was destroyed with them in flight): once per batch,
 *               with the bytes of the one-sided WRs among them.
 *   on_release  a retired or forgotten position held s->chunk (the owner's):
 *               called for that position only, before it is cleared.
 *   on_error    a completion or a post failed. flushed: a flush completion,
 *               which follows any failure of the QP, expected once the owner
 *               has failed. what names the operation and the lane.
 *   wait        block until something completes or deadline_ns; non-zero
 *               to stop waiting (timeout, or nobody reaps completions now).
 */
struct rdmae_qp_ops {
	void (*on_recv)(void *owner, struct rdmae_qp *qp, struct rdmae_rxbuf *rb, uint32_t len);
	void (*on_retired)(void *owner, struct rdmae_qp *qp, uint64_t one_sided_bytes,
			   uint64_t now_ns);
	void (*on_sent)(void *owner, struct rdmae_qp *qp, const struct rdmae_wrslot *s,
			enum rdmae_wr_kind kind, uint64_t now_ns);
	void (*on_forget)(void *owner, struct rdmae_qp *qp, uint64_t one_sided_bytes);
	void (*on_release)(void *owner, struct rdmae_qp *qp, struct rdmae_wrslot *s);
	void (*on_error)(void *owner, struct rdmae_qp *qp, int code, bool flushed,
			 const char *what);
	int (*wait)(void *owner, struct rdmae_qp *qp, uint64_t deadline_ns);
};

struct rdmae_qp {
	rdmae_mutex_t *lock;		/* the owner's; guards all below */
	pthread_cond_t *cond;		/* the owner's, or NULL: broadcast after each completion */
	const struct rdmae_qp_ops *ops;
	void *owner;
	unsigned int idx;		/* the lane it serves, for messages */
	/* Owned from a successful rdmae_qp_create on: rdmae_qp_destroy destroys it. */
	struct rdma_cm_id *id;
	struct ibv_qp *ibqp;
	/* Snapshot into each one-sided WR's mark at its doorbell: the owner's pacing counter. */
	const uint64_t *delivered;

	/* receive ring: nrx buffers of rx_size bytes */
	uint32_t nrx;
	uint32_t rx_size;
	void *rx_mem;
	bool rx_huge;
	struct ibv_mr *rx_mr;
	struct rdmae_rxbuf *rx;

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
	uint32_t writes_out;		/* WRITE and READ WRs in flight */
	uint64_t unsig_bytes;		/* WRITE/READ bytes posted since the last signalled WR */

	/* the chain waiting for its doorbell */
	struct ibv_send_wr chain[RDMAE_CHAIN_MAX];
	struct ibv_sge sge[RDMAE_CHAIN_MAX];
	unsigned int nchain;

	/* drain before the rings are freed: markers behind every posted WR */
	struct rdmae_cqe drain_cqe;
	unsigned int drain_left;	/* markers not yet flushed back */
	bool draining;			/* flush errors are expected, not failures */
	struct rdmae_lane_stats st;
	/* How long rdmae_qp_create took for each part, in ns (the connection's setup figures). */
	struct {
		uint64_t alloc_ns, reg_ns, create_ns, post_ns;
	} made;
};

/* What a qp is made of; the depths follow from the owner's options. */
struct rdmae_qp_attr {
	struct ibv_pd *pd;
	struct ibv_cq *cq;		/* send and receive completions */
	const struct ibv_device_attr *dev;
	const char *dev_name;
	int numa_node;			/* of the rings (-1: any) */
	uint32_t nrx, rx_size;		/* receive ring */
	uint32_t ntx, tx_size;		/* send ring */
	uint32_t writes_in_flight;	/* one-sided WRs the send queue makes room for */
	unsigned int idx;
	rdmae_mutex_t *lock;
	pthread_cond_t *cond;		/* may be NULL */
	const struct rdmae_qp_ops *ops;
	void *owner;
	const uint64_t *delivered;
};

/* Take and release *qp->lock (a completion's done does); bodies the analysis cannot see into. */
static inline void rdmae_qp_lock(struct rdmae_qp *qp) RDMAE_ACQUIRE(*qp->lock) RDMAE_NO_TSA
{
	pthread_mutex_lock(qp->lock);
}

static inline void rdmae_qp_unlock(struct rdmae_qp *qp) RDMAE_RELEASE(*qp->lock) RDMAE_NO_TSA
{
	pthread_mutex_unlock(qp->lock);
}

/* Tells the analysis that *qp->lock is held: called where the callee's contract cannot name it. */
static inline void rdmae_qp_assert_held(const struct rdmae_qp *qp) RDMAE_ASSERT_HELD(*qp->lock)
{
	(void)qp;
}

/*
 * The QP on id, its rings registered and every receive posted. Called
 * without any lock: the qp is nobody else's until the caller publishes it,
 * so the registrations stall no one. On success id belongs to the qp; on
 * failure nothing was made, qp is zeroed and id is still the caller's.
 */
int rdmae_qp_create(struct rdmae_qp *qp, struct rdma_cm_id *id, const struct rdmae_qp_attr *a,
		    struct rdmae_err *err);
/*
 * While someone reaps the CQ: move the QP to error and wait (ops->wait)
 * until a marker behind everything posted comes back, so no completion of
 * it is still queued when its rings are freed.
 */
void rdmae_qp_drain_locked(struct rdmae_qp *qp) RDMAE_REQUIRES(*qp->lock);
/*
 * Destroy the QP, forgetting (ops->on_forget, on_release) what it will never complete.
 * Under *qp->lock, or once nobody else can touch the qp (the reaper stopped);
 * the analysis cannot state either-or, so it is not analysed.
 */
void rdmae_qp_destroy_qp(struct rdmae_qp *qp) RDMAE_NO_TSA;
/* The QP if still there, the rings, and the cm_id; then qp is zeroed. Idempotent. */
void rdmae_qp_destroy(struct rdmae_qp *qp) RDMAE_NO_TSA;

/* Post rb again; -errno of ibv_post_recv. It reads only what creation set: no lock. */
int rdmae_qp_post_recv(struct rdmae_qp *qp, struct rdmae_rxbuf *rb);
/* Ring the doorbell of the chain; on failure ops->on_error has heard it. */
int rdmae_qp_post_chain_locked(struct rdmae_qp *qp) RDMAE_REQUIRES(*qp->lock);
/* Reserve one send-queue position for a WR and return its slot; the caller fills the chain entry. */
struct rdmae_wrslot *rdmae_qp_sq_take_locked(struct rdmae_qp *qp, enum rdmae_wr_kind kind,
					     struct ibv_send_wr **wr, struct ibv_sge **sge)
	RDMAE_REQUIRES(*qp->lock);
uint32_t rdmae_qp_sq_free_locked(const struct rdmae_qp *qp) RDMAE_REQUIRES(*qp->lock);
/* Is any WR still in flight? */
bool rdmae_qp_busy_locked(const struct rdmae_qp *qp) RDMAE_REQUIRES(*qp->lock);
/* Is any SEND still queued or in flight? */
bool rdmae_qp_sends_pending_locked(const struct rdmae_qp *qp) RDMAE_REQUIRES(*qp->lock);
/* A free send slot and a send-queue position for it? */
bool rdmae_qp_tx_room_locked(const struct rdmae_qp *qp) RDMAE_REQUIRES(*qp->lock);
/* The next send slot's memory (check rdmae_qp_tx_room_locked first). */
uint8_t *rdmae_qp_tx_slot_locked(const struct rdmae_qp *qp) RDMAE_REQUIRES(*qp->lock);
/*
 * Queue a SEND of len bytes from slot (the next send slot) on the chain;
 * rings the doorbell when the chain is full, and returns its error then.
 */
int rdmae_qp_queue_send_locked(struct rdmae_qp *qp, uint8_t *slot, uint32_t len)
	RDMAE_REQUIRES(*qp->lock);
/* Copy buf into a send slot and post it at once; -ENOSPC without room. */
int rdmae_qp_send_raw_locked(struct rdmae_qp *qp, const void *buf, uint32_t len)
	RDMAE_REQUIRES(*qp->lock);
/*
 * A signalled zero-length RDMA WRITE, posted at once; -EAGAIN when the send
 * queue or the chain has no room.
 */
int rdmae_qp_probe_write_locked(struct rdmae_qp *qp) RDMAE_REQUIRES(*qp->lock);

#endif
