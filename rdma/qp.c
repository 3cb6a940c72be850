/* SPDX-License-Identifier: MIT */
/*
 * L1: one RC QP with its receive ring, send ring and send-queue accounting
 * (qp.h). Every SEND is signalled (sends are rare and their slots must come
 * back in order); WRITEs are signalled selectively. Every WR, signalled or
 * not, carries a completion object in wr_id, because a QP in error flushes
 * all of them. What a completion means to the connection (credits, pacing,
 * keepalive, pins, failure) is the owner's: it hears of it through the ops.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "qp.h"
#include "rdmae_time.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define DRAIN_MS 2000	/* bound on waiting for a failed QP's flushed WRs */

static void report_error(struct rdmae_qp *qp, int code, bool flushed, const char *fmt, ...)
	__attribute__((format(printf, 4, 5))) RDMAE_REQUIRES(*qp->lock);

static void report_error(struct rdmae_qp *qp, int code, bool flushed, const char *fmt, ...)
{
	char what[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	qp->ops->on_error(qp->owner, qp, code, flushed, what);
}

int rdmae_qp_post_recv(struct rdmae_qp *qp, struct rdmae_rxbuf *rb)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)rb->data,
		.length = qp->rx_size,
		.lkey = qp->rx_mr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = (uintptr_t)&rb->cqe, .sg_list = &sge, .num_sge = 1 };
	struct ibv_recv_wr *bad;

	return -ibv_post_recv(qp->ibqp, &wr, &bad);
}

/* After a completion, with the lock still held: whoever waits for this qp looks again. */
static void completed_unlock(struct rdmae_qp *qp) RDMAE_RELEASE(*qp->lock)
{
	if (qp->cond)
		pthread_cond_broadcast(qp->cond);
	rdmae_qp_unlock(qp);
}

static void rx_done_locked(struct rdmae_qp *qp, struct rdmae_rxbuf *rb, const struct ibv_wc *wc)
	RDMAE_REQUIRES(*qp->lock)
{
	qp->st.completions++;
	if (wc->status != IBV_WC_SUCCESS) {
		bool flushed = wc->status == IBV_WC_WR_FLUSH_ERR;

		if (!flushed || !qp->draining)
			report_error(qp, -EIO, flushed, "receive on lane %u failed: %s", qp->idx,
				     ibv_wc_status_str(wc->status));
		return;
	}
	qp->st.recvs++;
	qp->st.recv_bytes += wc->byte_len;
	qp->ops->on_recv(qp->owner, qp, rb, wc->byte_len);
}

static void rx_done(struct rdmae_cqe *cqe, const struct ibv_wc *wc)
{
	struct rdmae_rxbuf *rb = container_of(cqe, struct rdmae_rxbuf, cqe);
	struct rdmae_qp *qp = rb->qp;

	rdmae_qp_lock(qp);
	rx_done_locked(qp, rb, wc);
	completed_unlock(qp);
}

/* Retire every send-queue position up to and including pos, completed at now_ns. */
static void sq_retire_locked(struct rdmae_qp *qp, uint64_t pos, uint64_t now_ns)
	RDMAE_REQUIRES(*qp->lock)
{
	uint64_t bytes = 0;

	while (qp->sq_done <= pos && qp->sq_done < qp->sq_posted) {
		struct rdmae_wrslot *s = &qp->wr[qp->sq_done % qp->sq_depth];

		if (s->kind == RDMAE_WR_SEND)
			qp->tx_tail++;
		if (rdmae_wr_one_sided(s->kind)) {
			qp->writes_out--;
			bytes += s->mark.len;
		}
		if (s->chunk) {
			qp->ops->on_release(qp->owner, qp, s);
			s->chunk = NULL;
		}
		s->kind = 0;
		qp->sq_done++;
	}
	qp->ops->on_retired(qp->owner, qp, bytes, now_ns);
}

static const char *kind_name(enum rdmae_wr_kind kind)
{
	return kind == RDMAE_WR_WRITE ? "RDMA WRITE" :
	       kind == RDMAE_WR_READ ? "RDMA READ" :
	       kind == RDMAE_WR_PROBE ? "keepalive probe (zero-length RDMA WRITE)" : "SEND";
}

static void sq_done(struct rdmae_cqe *cqe, const struct ibv_wc *wc)
{
	struct rdmae_wrslot *s = container_of(cqe, struct rdmae_wrslot, cqe);
	struct rdmae_qp *qp = s->qp;
	uint64_t now = rdmae_now_ns();
	enum rdmae_wr_kind kind;

	rdmae_qp_lock(qp);
	kind = s->kind;
	qp->st.completions++;
	if (wc->status != IBV_WC_SUCCESS) {
		bool flushed = wc->status == IBV_WC_WR_FLUSH_ERR;

		if (!flushed || !qp->draining)
			report_error(qp, -EIO, flushed, "%s on lane %u failed: %s", kind_name(kind),
				     qp->idx, ibv_wc_status_str(wc->status));
	}
	sq_retire_locked(qp, s->pos, now);
	if (wc->status == IBV_WC_SUCCESS)
		qp->ops->on_sent(qp->owner, qp, s, kind, now);
	completed_unlock(qp);
}

bool rdmae_qp_busy_locked(const struct rdmae_qp *qp)
{
	return qp->ibqp && qp->sq_done != qp->sq_posted;
}

bool rdmae_qp_sends_pending_locked(const struct rdmae_qp *qp)
{
	return qp->ibqp && qp->tx_tail != qp->tx_head;
}

uint32_t rdmae_qp_sq_free_locked(const struct rdmae_qp *qp)
{
	return qp->sq_depth - (uint32_t)(qp->sq_posted - qp->sq_done);
}

struct rdmae_wrslot *rdmae_qp_sq_take_locked(struct rdmae_qp *qp, enum rdmae_wr_kind kind,
					     struct ibv_send_wr **wr, struct ibv_sge **sge)
{
	uint64_t pos = qp->sq_posted++;
	struct rdmae_wrslot *s = &qp->wr[pos % qp->sq_depth];
	struct ibv_send_wr *w = &qp->chain[qp->nchain];
	struct ibv_sge *g = &qp->sge[qp->nchain];

	qp->nchain++;
	s->pos = pos;
	s->kind = kind;
	s->chunk = NULL;
	s->mark.len = 0;
	memset(w, 0, sizeof(*w));
	w->wr_id = (uintptr_t)&s->cqe;
	w->sg_list = g;
	w->num_sge = 1;
	*wr = w;
	*sge = g;
	return s;
}

int rdmae_qp_post_chain_locked(struct rdmae_qp *qp)
{
	struct ibv_send_wr *bad = NULL;
	uint64_t first = qp->sq_posted - qp->nchain;
	uint64_t delivered = qp->delivered ? *qp->delivered : 0;
	unsigned int i, n = qp->nchain;
	uint64_t now;
	int ret;

	if (!qp->nchain)
		return 0;
	/* The last WR of a doorbell is signalled so that a waiter always has a completion coming. */
	qp->chain[qp->nchain - 1].send_flags |= IBV_SEND_SIGNALED;
	qp->unsig_bytes = 0;
	now = rdmae_now_ns();
	for (i = 0; i < qp->nchain; i++) {
		struct rdmae_wrslot *s = &qp->wr[(first + i) % qp->sq_depth];

		qp->chain[i].next = i + 1 < qp->nchain ? &qp->chain[i + 1] : NULL;
		if (qp->chain[i].send_flags & IBV_SEND_SIGNALED)
			qp->last_signal = first + i + 1;
		s->mark.post_ns = now;
		s->mark.delivered = delivered;
	}
	qp->nchain = 0;
	qp->st.doorbells++;
	ret = ibv_post_send(qp->ibqp, &qp->chain[0], &bad);
	if (ret) {
		/*
		 * WRs from bad on never reached the QP and will never complete:
		 * take their positions and send slots back, and let the owner
		 * release what it attached, or waiters for an empty send queue
		 * would wait for them for ever.
		 */
		unsigned int k = bad ? (unsigned int)(bad - qp->chain) : 0;

		uint64_t bytes = 0;

		for (i = n; i-- > k;) {
			struct rdmae_wrslot *s = &qp->wr[(first + i) % qp->sq_depth];

			if (s->kind == RDMAE_WR_SEND)
				qp->tx_head--;
			if (rdmae_wr_one_sided(s->kind)) {
				qp->writes_out--;
				bytes += s->mark.len;
			}
			if (s->chunk)
				qp->ops->on_release(qp->owner, qp, s);
			s->chunk = NULL;
			s->kind = 0;
		}
		qp->ops->on_forget(qp->owner, qp, bytes);
		qp->sq_posted = first + k;
		report_error(qp, -ret, false, "ibv_post_send on lane %u: %s", qp->idx, strerror(ret));
		return -ret;
	}
	return 0;
}

/*
 * Zero length names no memory, so it needs no rkey (IBA C9-88: the
 * responder validates neither R_Key nor address), and the peer's software
 * takes no part: its NIC acknowledges, or our retries run out and the
 * completion fails with the transport's reason.
 */
int rdmae_qp_probe_write_locked(struct rdmae_qp *qp)
{
	struct ibv_send_wr *wr;
	struct ibv_sge *sge;

	if (!qp->ibqp || rdmae_qp_sq_free_locked(qp) == 0 || qp->nchain >= RDMAE_CHAIN_MAX)
		return -EAGAIN;
	rdmae_qp_sq_take_locked(qp, RDMAE_WR_PROBE, &wr, &sge);
	(void)sge;
	wr->opcode = IBV_WR_RDMA_WRITE;
	wr->sg_list = NULL;
	wr->num_sge = 0;
	wr->send_flags = IBV_SEND_SIGNALED;
	return rdmae_qp_post_chain_locked(qp);
}

uint8_t *rdmae_qp_tx_slot_locked(const struct rdmae_qp *qp)
{
	return (uint8_t *)qp->tx_mem + (size_t)(qp->tx_head % qp->ntx) * qp->tx_size;
}

bool rdmae_qp_tx_room_locked(const struct rdmae_qp *qp)
{
	return qp->tx_head - qp->tx_tail < qp->ntx && rdmae_qp_sq_free_locked(qp) > 0;
}

int rdmae_qp_queue_send_locked(struct rdmae_qp *qp, uint8_t *slot, uint32_t len)
{
	struct ibv_send_wr *wr;
	struct ibv_sge *sge;

	rdmae_qp_sq_take_locked(qp, RDMAE_WR_SEND, &wr, &sge);
	sge->addr = (uintptr_t)slot;
	sge->length = len;
	sge->lkey = qp->tx_mr->lkey;
	wr->opcode = IBV_WR_SEND;
	wr->send_flags = IBV_SEND_SIGNALED;
	qp->tx_head++;
	qp->st.sends++;
	qp->st.send_bytes += len;
	if (qp->nchain == RDMAE_CHAIN_MAX)
		return rdmae_qp_post_chain_locked(qp);
	return 0;
}

int rdmae_qp_send_raw_locked(struct rdmae_qp *qp, const void *buf, uint32_t len)
{
	uint8_t *slot;
	int ret;

	if (!rdmae_qp_tx_room_locked(qp) || len > qp->tx_size)
		return -ENOSPC;
	slot = rdmae_qp_tx_slot_locked(qp);
	memcpy(slot, buf, len);
	ret = rdmae_qp_queue_send_locked(qp, slot, len);
	return ret ? ret : rdmae_qp_post_chain_locked(qp);
}

int rdmae_qp_create(struct rdmae_qp *qp, struct rdma_cm_id *id, const struct rdmae_qp_attr *a,
		    struct rdmae_err *err)
{
	struct ibv_qp_init_attr qa;
	unsigned int idx = a->idx;
	uint64_t t, t1;
	uint32_t i;
	int ret;

	memset(qp, 0, sizeof(*qp));
	qp->lock = a->lock;
	qp->cond = a->cond;
	qp->ops = a->ops;
	qp->owner = a->owner;
	qp->delivered = a->delivered;
	qp->idx = idx;
	qp->nrx = a->nrx;
	qp->rx_size = a->rx_size;
	qp->ntx = a->ntx;
	qp->tx_size = a->tx_size;
	qp->sq_depth = qp->ntx + a->writes_in_flight + 1;

	/* Depths follow from the options; check them against the device before allocating anything. */
	if (qp->sq_depth + 1 > (uint32_t)a->dev->max_qp_wr ||
	    qp->nrx + 1 > (uint32_t)a->dev->max_qp_wr) {
		ret = rdmae_err_set(err, -EINVAL,
				    "lane %u on %s: queue depth %u/%u exceeds max_qp_wr %d", idx,
				    a->dev_name, qp->sq_depth, qp->nrx, a->dev->max_qp_wr);
		memset(qp, 0, sizeof(*qp));
		return ret;
	}

	t = rdmae_now_ns();
	qp->rx_mem = rdmae_mem_alloc((size_t)qp->nrx * qp->rx_size, a->numa_node, &qp->rx_huge);
	qp->rx = calloc(qp->nrx, sizeof(*qp->rx));
	t1 = rdmae_now_ns();
	qp->made.alloc_ns += t1 - t;
	if (!qp->rx_mem || !qp->rx) {
		ret = rdmae_err_set(err, -ENOMEM, "lane %u receive ring (%u x %u bytes): out of "
				    "memory", idx, qp->nrx, qp->rx_size);
		goto err_rx;
	}
	qp->rx_mr = ibv_reg_mr(a->pd, qp->rx_mem, (size_t)qp->nrx * qp->rx_size,
			       IBV_ACCESS_LOCAL_WRITE);
	t = rdmae_now_ns();
	qp->made.reg_ns += t - t1;
	if (!qp->rx_mr) {
		ret = -errno;
		rdmae_err_set(err, ret, "ibv_reg_mr of the receive ring of lane %u: %s", idx,
			      strerror(errno));
		goto err_rx;
	}
	qp->tx_mem = rdmae_mem_alloc((size_t)qp->ntx * qp->tx_size, a->numa_node, &qp->tx_huge);
	qp->wr = calloc(qp->sq_depth, sizeof(*qp->wr));
	t1 = rdmae_now_ns();
	qp->made.alloc_ns += t1 - t;
	if (!qp->tx_mem || !qp->wr) {
		ret = rdmae_err_set(err, -ENOMEM, "lane %u send ring (%u x %u bytes): out of "
				    "memory", idx, qp->ntx, qp->tx_size);
		goto err_tx;
	}
	qp->tx_mr = ibv_reg_mr(a->pd, qp->tx_mem, (size_t)qp->ntx * qp->tx_size, 0);
	t = rdmae_now_ns();
	qp->made.reg_ns += t - t1;
	if (!qp->tx_mr) {
		ret = -errno;
		rdmae_err_set(err, ret, "ibv_reg_mr of the send ring of lane %u: %s", idx,
			      strerror(errno));
		goto err_tx;
	}
	for (i = 0; i < qp->sq_depth; i++) {
		qp->wr[i].cqe.done = sq_done;
		qp->wr[i].qp = qp;
	}

	memset(&qa, 0, sizeof(qa));
	qa.send_cq = a->cq;
	qa.recv_cq = a->cq;
	qa.qp_type = IBV_QPT_RC;
	/* One more WR on each queue: room for the drain markers (rdmae_qp_drain_locked). */
	qa.cap.max_send_wr = qp->sq_depth + 1;
	qa.cap.max_recv_wr = qp->nrx + 1;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	/* Set before the QP is made, so that whatever looks the id up meanwhile finds its qp. */
	id->context = qp;
	if (rdma_create_qp(id, a->pd, &qa)) {
		ret = -errno;
		rdmae_err_set(err, ret, "rdma_create_qp for lane %u (sq %u, rq %u): %s", idx,
			      qp->sq_depth, qp->nrx, strerror(errno));
		goto err_tx;
	}
	qp->ibqp = id->qp;
	t1 = rdmae_now_ns();
	qp->made.create_ns = t1 - t;

	for (i = 0; i < qp->nrx; i++) {
		qp->rx[i].cqe.done = rx_done;
		qp->rx[i].qp = qp;
		qp->rx[i].data = (uint8_t *)qp->rx_mem + (size_t)i * qp->rx_size;
		ret = rdmae_qp_post_recv(qp, &qp->rx[i]);
		if (ret) {
			rdmae_err_set(err, ret, "ibv_post_recv on lane %u: %s", idx, strerror(-ret));
			goto err_qp;
		}
	}
	qp->made.post_ns = rdmae_now_ns() - t1;
	qp->id = id;
	return 0;

err_qp:
	/* Nothing completed yet and nobody reaps it: no drain, nothing to forget. */
	rdma_destroy_qp(id);
	qp->ibqp = NULL;
err_tx:
	if (qp->tx_mr)
		ibv_dereg_mr(qp->tx_mr);
	rdmae_mem_free(qp->tx_mem, (size_t)qp->ntx * qp->tx_size, qp->tx_huge);
	free(qp->wr);
	if (qp->rx_mr)
		ibv_dereg_mr(qp->rx_mr);
err_rx:
	rdmae_mem_free(qp->rx_mem, (size_t)qp->nrx * qp->rx_size, qp->rx_huge);
	free(qp->rx);
	memset(qp, 0, sizeof(*qp));
	id->context = NULL;
	return ret;
}

static void drain_done(struct rdmae_cqe *cqe, const struct ibv_wc *wc)
{
	struct rdmae_qp *qp = container_of(cqe, struct rdmae_qp, drain_cqe);

	(void)wc;
	rdmae_qp_lock(qp);
	if (qp->drain_left)
		qp->drain_left--;
	completed_unlock(qp);
}

/*
 * The CQ is shared and the progress thread reaps it: a completion of this
 * QP still queued when the rings are freed would be dispatched into freed
 * memory (flushed receives do exactly that on rxe). So: error state, a
 * marker behind everything posted on each queue (a queue flushes in order),
 * and wait until both markers are back. The owner calls this only while
 * someone reaps; otherwise nobody reaps the CQ again before it is destroyed.
 */
void rdmae_qp_drain_locked(struct rdmae_qp *qp)
{
	struct ibv_qp_attr attr = { .qp_state = IBV_QPS_ERR };
	struct ibv_recv_wr rwr = { .wr_id = (uintptr_t)&qp->drain_cqe };
	struct ibv_send_wr swr = { .wr_id = (uintptr_t)&qp->drain_cqe, .opcode = IBV_WR_SEND,
				   .send_flags = IBV_SEND_SIGNALED };
	struct ibv_recv_wr *rbad;
	struct ibv_send_wr *sbad;
	uint64_t deadline;

	/* Once is enough: a second drain (the owner's, after a test's) finds it done. */
	if (!qp->ibqp || qp->draining)
		return;
	qp->draining = true;
	qp->drain_cqe.done = drain_done;
	qp->drain_left = 0;
	if (ibv_modify_qp(qp->ibqp, &attr, IBV_QP_STATE))
		return;
	/* The spare WR of each queue (see the QP's caps) guarantees room for the markers. */
	if (!ibv_post_recv(qp->ibqp, &rwr, &rbad))
		qp->drain_left++;
	if (!ibv_post_send(qp->ibqp, &swr, &sbad))
		qp->drain_left++;
	deadline = rdmae_deadline_after(DRAIN_MS);
	while (qp->drain_left)
		if (qp->ops->wait(qp->owner, qp, deadline))
			break;
}

void rdmae_qp_destroy_qp(struct rdmae_qp *qp)
{
	uint64_t p, bytes = 0;

	if (!qp->ibqp)
		return;
	rdma_destroy_qp(qp->id);
	qp->ibqp = NULL;
	/* The QP is gone, so no completion will retire what was in flight: the owner forgets it. */
	for (p = qp->sq_done; p < qp->sq_posted; p++) {
		struct rdmae_wrslot *s = &qp->wr[p % qp->sq_depth];

		if (rdmae_wr_one_sided(s->kind))
			bytes += s->mark.len;
		if (s->chunk)
			qp->ops->on_release(qp->owner, qp, s);
		s->chunk = NULL;
	}
	qp->ops->on_forget(qp->owner, qp, bytes);
	qp->sq_done = qp->sq_posted;
	qp->writes_out = 0;
}

void rdmae_qp_destroy(struct rdmae_qp *qp)
{
	if (!qp->id)
		return;
	rdmae_qp_destroy_qp(qp);
	if (qp->tx_mr)
		ibv_dereg_mr(qp->tx_mr);
	if (qp->rx_mr)
		ibv_dereg_mr(qp->rx_mr);
	rdmae_mem_free(qp->tx_mem, (size_t)qp->ntx * qp->tx_size, qp->tx_huge);
	rdmae_mem_free(qp->rx_mem, (size_t)qp->nrx * qp->rx_size, qp->rx_huge);
	free(qp->wr);
	free(qp->rx);
	qp->id->context = NULL;
	rdma_destroy_id(qp->id);
	memset(qp, 0, sizeof(*qp));
}
