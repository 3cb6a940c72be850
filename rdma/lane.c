/* SPDX-License-Identifier: MIT */
/*
 * One lane: an RC QP with its receive ring, send ring and send-queue
 * accounting. Every SEND is signalled (sends are rare and their slots must
 * come back in order); WRITEs are signalled selectively. Every WR, signalled
 * or not, carries a completion object in wr_id, because a QP in error
 * flushes all of them.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define DRAIN_MS 2000	/* bound on waiting for a failed lane's flushed WRs */

static int post_recv(struct rdmae_lane *l, struct rdmae_rxbuf *rb)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)rb->data,
		.length = l->rx_size,
		.lkey = l->rx_mr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = (uintptr_t)&rb->cqe, .sg_list = &sge, .num_sge = 1 };
	struct ibv_recv_wr *bad;

	return -ibv_post_recv(l->qp, &wr, &bad);
}

static void repost_locked(struct rdmae_lane *l, struct rdmae_rxbuf *rb)
	RDMAE_REQUIRES(l->conn->lock)
{
	int ret = post_recv(l, rb);

	if (ret) {
		rdmae_conn_fail_locked(l->conn, ret, "ibv_post_recv on lane %u: %s", l->idx,
				       strerror(-ret));
		return;
	}
	rdmae_credits_on_repost(&l->cr, 1);
}

static void enqueue_msg_locked(struct rdmae_conn *c, void *data, size_t len)
	RDMAE_REQUIRES(c->lock)
{
	struct rdmae_rxmsg *m = malloc(sizeof(*m));

	if (!m) {
		free(data);
		rdmae_conn_fail_locked(c, -ENOMEM, "receive queue on %s: out of memory", c->peer);
		return;
	}
	m->next = NULL;
	m->len = len;
	m->data = data;
	if (c->q_tail)
		c->q_tail->next = m;
	else
		c->q_head = m;
	c->q_tail = m;
	c->q_bytes += len;
}

/* Returns 0, or non-zero once the message has put the connection in error. */
static int handle_data_locked(struct rdmae_lane *l, const uint8_t *buf, uint32_t len)
	RDMAE_REQUIRES(l->conn->lock)
{
	struct rdmae_conn *c = l->conn;
	struct rdmae_data_hdr h;
	enum rdmae_wire_field f;
	void *msg;
	size_t mlen;
	int ret;

	ret = rdmae_data_hdr_decode(buf, len, c->neg.max_fragmented_size, &h, &f);
	if (ret) {
		rdmae_conn_fail_locked(c, ret, "message from %s on lane %u rejected: bad %s", c->peer,
				       l->idx, rdmae_wire_field_name(f));
		return ret;
	}
	/* After a failure credits no longer matter; the message itself still does. */
	ret = c->state == RDMAE_ST_ERROR ? 0 :
	      rdmae_credits_on_recv(&l->cr, h.credits_granted, h.credits_requested);
	if (ret) {
		rdmae_conn_fail_locked(c, ret,
				       "message from %s on lane %u broke the credit rules "
				       "(granted %u)", c->peer, l->idx, h.credits_granted);
		return ret;
	}
	rdmae_trace(c, "lane %u: message len %u granted %u flags 0x%x data %u remaining %u",
		    l->idx, len, h.credits_granted, h.flags, h.data_length, h.remaining_data_length);
	if ((h.flags & RDMAE_FLAG_FENCE) && h.fence_seq > l->fence_seen)
		l->fence_seen = h.fence_seq;
	if (h.flags & RDMAE_FLAG_RESPONSE_REQUESTED)
		l->reply_owed = true;
	if (!h.data_length)
		return 0;
	if (l->idx != 0) {
		rdmae_conn_fail_locked(c, -EPROTO, "message from %s: payload on bulk lane %u",
				       c->peer, l->idx);
		return -EPROTO;
	}
	ret = rdmae_reasm_push(&c->reasm, buf + h.data_offset, h.data_length,
			       h.remaining_data_length, &msg, &mlen);
	if (ret) {
		rdmae_conn_fail_locked(c, ret, "reassembly of a message from %s: %s", c->peer,
				       strerror(-ret));
		return ret;
	}
	if (msg)
		enqueue_msg_locked(c, msg, mlen);
	return c->state == RDMAE_ST_ERROR;
}

static void rx_done(struct rdmae_cqe *cqe, const struct ibv_wc *wc)
{
	struct rdmae_rxbuf *rb = container_of(cqe, struct rdmae_rxbuf, cqe);
	struct rdmae_lane *l = rb->lane;
	struct rdmae_conn *c = l->conn;

	rdmae_conn_assert_held(c);
	l->st.completions++;
	if (wc->status != IBV_WC_SUCCESS) {
		if (wc->status != IBV_WC_WR_FLUSH_ERR ||
		    (c->state != RDMAE_ST_ERROR && !l->draining))
			rdmae_conn_fail_locked(c, -EIO, "receive on lane %u from %s failed: %s",
					       l->idx, c->peer, ibv_wc_status_str(wc->status));
		return;
	}
	l->st.recvs++;
	l->st.recv_bytes += wc->byte_len;
	c->last_heard_ns = rdmae_now_ns();
	if (c->probe_ns)
		rdmae_trace(c, "keepalive: answered after %.1f ms (lane %u)",
			    (double)(c->last_heard_ns - c->probe_ns) / 1e6, l->idx);
	c->probe_ns = 0;

	if (l->idx == 0 && c->state == RDMAE_ST_NEGOTIATING) {
		/*
		 * Negotiate messages sit outside the credit scheme. The buffer goes
		 * back before the answer, which grants credits for every posted
		 * receive, this one included.
		 */
		uint8_t neg[RDMAE_NEG_MAX_SIZE];
		uint32_t n = wc->byte_len < sizeof(neg) ? wc->byte_len : sizeof(neg);

		memcpy(neg, rb->data, n);
		if (post_recv(l, rb))
			rdmae_conn_fail_locked(c, -EIO, "ibv_post_recv on lane 0 after negotiate");
		else
			rdmae_negotiate_on_msg_locked(c, neg, n);
		return;
	}
	/*
	 * A message that made it in before a failure is still delivered (it may
	 * be the peer's reason for hanging up); its buffer is not reposted.
	 */
	if (handle_data_locked(l, rb->data, wc->byte_len) || c->state == RDMAE_ST_ERROR)
		return;
	/*
	 * Hold the buffer back while the reader lags: the peer then runs out of
	 * credits, which is the back-pressure that bounds our queue.
	 */
	if (l->idx == 0 && c->q_bytes > c->opts.recv_queue_bytes) {
		rb->next_parked = l->parked;
		l->parked = rb;
		return;
	}
	repost_locked(l, rb);
}

void rdmae_lane_repost_parked_locked(struct rdmae_lane *l)
{
	struct rdmae_conn *c = l->conn;

	while (l->parked && c->q_bytes <= c->opts.recv_queue_bytes && c->state != RDMAE_ST_ERROR) {
		struct rdmae_rxbuf *rb = l->parked;

		l->parked = rb->next_parked;
		repost_locked(l, rb);
	}
}

/* Retire every send-queue position up to and including pos, completed at now_ns. */
static void sq_retire_locked(struct rdmae_lane *l, uint64_t pos, uint64_t now_ns)
	RDMAE_REQUIRES(l->conn->lock)
{
	struct rdmae_conn *c = l->conn;

	while (l->sq_done <= pos && l->sq_done < l->sq_posted) {
		struct rdmae_wrslot *s = &l->wr[l->sq_done % l->sq_depth];

		if (s->kind == RDMAE_WR_SEND)
			l->tx_tail++;
		if (rdmae_wr_one_sided(s->kind)) {
			l->writes_out--;
			rdmae_pace_on_done(&c->pace, s->mark.len, now_ns);
		}
		if (s->chunk) {
			rdmae_conn_chunk_put_locked(c, s->chunk);
			s->chunk = NULL;
		}
		s->kind = 0;
		l->sq_done++;
	}
}

static void sq_done(struct rdmae_cqe *cqe, const struct ibv_wc *wc)
{
	struct rdmae_wrslot *s = container_of(cqe, struct rdmae_wrslot, cqe);
	struct rdmae_lane *l = s->lane;
	struct rdmae_conn *c = l->conn;
	uint64_t now = rdmae_now_ns();
	enum rdmae_wr_kind kind = s->kind;
	bool bulk = rdmae_wr_one_sided(kind);

	rdmae_conn_assert_held(c);
	l->st.completions++;
	if (wc->status != IBV_WC_SUCCESS &&
	    (wc->status != IBV_WC_WR_FLUSH_ERR || (c->state != RDMAE_ST_ERROR && !l->draining)))
		rdmae_conn_fail_locked(c, -EIO, "%s on lane %u to %s failed: %s",
				       kind == RDMAE_WR_WRITE ? "RDMA WRITE" :
				       kind == RDMAE_WR_READ ? "RDMA READ" :
				       kind == RDMAE_WR_PROBE ? "keepalive probe (zero-length RDMA WRITE)" :
				       "SEND", l->idx, c->peer, ibv_wc_status_str(wc->status));
	sq_retire_locked(l, s->pos, now);
	if (kind == RDMAE_WR_PROBE) {
		/*
		 * The peer's NIC acknowledged: the host and the path are there.
		 * Its process may still be stalled, but then it withholds
		 * credits, and every credit wait has its own deadline.
		 */
		if (wc->status == IBV_WC_SUCCESS && c->probe_ns) {
			rdmae_trace(c, "keepalive: zero-length WRITE acknowledged after %.1f ms",
				    (double)(now - c->probe_ns) / 1e6);
			c->last_heard_ns = now;
			c->probe_ns = 0;
		}
		return;
	}
	if (wc->status != IBV_WC_SUCCESS || !bulk)
		return;
	rdmae_pace_sample(&c->pace, &s->mark, now);
	/*
	 * The peer's QP acknowledged data we wrote (or answered a READ with
	 * its data): the connection is making progress even if no message
	 * comes back (ours may be queued behind this very transfer). A SEND's
	 * completion does not count: a probe is acknowledged by a peer whose
	 * process has stopped.
	 */
	if (c->probe_ns)
		rdmae_trace(c, "keepalive: WRITE/READ completions count as the answer (%.1f ms)",
			    (double)(now - c->probe_ns) / 1e6);
	c->last_heard_ns = now;
	c->probe_ns = 0;
}

bool rdmae_lane_any_busy_locked(const struct rdmae_conn *c)
{
	for (unsigned int i = 0; i < c->nlanes; i++)
		if (c->lanes[i].qp && c->lanes[i].sq_done != c->lanes[i].sq_posted)
			return true;
	return false;
}

uint32_t rdmae_lane_sq_free_locked(const struct rdmae_lane *l)
{
	return l->sq_depth - (uint32_t)(l->sq_posted - l->sq_done);
}

struct rdmae_wrslot *rdmae_lane_sq_take_locked(struct rdmae_lane *l, enum rdmae_wr_kind kind,
					struct ibv_send_wr **wr, struct ibv_sge **sge)
{
	uint64_t pos = l->sq_posted++;
	struct rdmae_wrslot *s = &l->wr[pos % l->sq_depth];
	struct ibv_send_wr *w = &l->chain[l->nchain];
	struct ibv_sge *g = &l->sge[l->nchain];

	l->nchain++;
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

int rdmae_lane_post_chain_locked(struct rdmae_lane *l)
{
	struct rdmae_conn *c = l->conn;
	struct ibv_send_wr *bad = NULL;
	uint64_t first = l->sq_posted - l->nchain;
	unsigned int i, n = l->nchain;
	uint64_t now;
	int ret;

	if (!l->nchain)
		return 0;
	/* The last WR of a doorbell is signalled so that a waiter always has a completion coming. */
	l->chain[l->nchain - 1].send_flags |= IBV_SEND_SIGNALED;
	l->unsig_bytes = 0;
	now = rdmae_now_ns();
	for (i = 0; i < l->nchain; i++) {
		struct rdmae_wrslot *s = &l->wr[(first + i) % l->sq_depth];

		l->chain[i].next = i + 1 < l->nchain ? &l->chain[i + 1] : NULL;
		if (l->chain[i].send_flags & IBV_SEND_SIGNALED)
			l->last_signal = first + i + 1;
		s->mark.post_ns = now;
		s->mark.delivered = c->pace.delivered;
	}
	l->nchain = 0;
	l->st.doorbells++;
	ret = ibv_post_send(l->qp, &l->chain[0], &bad);
	if (ret) {
		/*
		 * WRs from bad on never reached the QP and will never complete:
		 * take their positions, send slots and pins back, or waiters for
		 * an empty send queue would wait for them for ever.
		 */
		unsigned int k = bad ? (unsigned int)(bad - l->chain) : 0;

		for (i = n; i-- > k;) {
			struct rdmae_wrslot *s = &l->wr[(first + i) % l->sq_depth];

			if (s->kind == RDMAE_WR_SEND)
				l->tx_head--;
			if (rdmae_wr_one_sided(s->kind)) {
				l->writes_out--;
				rdmae_pace_forget(&c->pace, s->mark.len);
			}
			if (s->chunk)
				rdmae_conn_chunk_put_locked(c, s->chunk);
			s->chunk = NULL;
			s->kind = 0;
		}
		l->sq_posted = first + k;
		rdmae_conn_fail_locked(c, -ret, "ibv_post_send on lane %u to %s: %s", l->idx,
				       c->peer, strerror(ret));
		return -ret;
	}
	return 0;
}

/*
 * Zero length names no memory, so it needs no rkey (IBA C9-88: the
 * responder validates neither R_Key nor address), and the peer's software
 * takes no part: its NIC acknowledges, or our retries run out and the
 * completion fails the connection with the transport's reason.
 */
int rdmae_lane_probe_write_locked(struct rdmae_lane *l)
{
	struct rdmae_wrslot *slot;
	struct ibv_send_wr *wr;
	struct ibv_sge *sge;

	if (!l->qp || !l->established || rdmae_lane_sq_free_locked(l) == 0 ||
	    l->nchain >= RDMAE_CHAIN_MAX)
		return -EAGAIN;
	slot = rdmae_lane_sq_take_locked(l, RDMAE_WR_PROBE, &wr, &sge);
	(void)slot;
	(void)sge;
	wr->opcode = IBV_WR_RDMA_WRITE;
	wr->sg_list = NULL;
	wr->num_sge = 0;
	wr->send_flags = IBV_SEND_SIGNALED;
	return rdmae_lane_post_chain_locked(l);
}

int rdmae_lane_post_all_locked(struct rdmae_conn *c)
{
	unsigned int i;
	int ret = 0;

	/* Every lane's chain goes, even after one failed: the failure is the connection's now. */
	for (i = 0; i < c->nlanes; i++) {
		int r = rdmae_lane_post_chain_locked(&c->lanes[i]);

		if (r && !ret)
			ret = r;
	}
	return ret;
}

static uint8_t *tx_slot(struct rdmae_lane *l)
{
	return (uint8_t *)l->tx_mem + (size_t)(l->tx_head % l->ntx) * l->tx_size;
}

static bool tx_room_locked(const struct rdmae_lane *l) RDMAE_REQUIRES(l->conn->lock)
{
	return l->tx_head - l->tx_tail < l->ntx && rdmae_lane_sq_free_locked(l) > 0;
}

/* Returns the doorbell's error when the chain filled up and its post failed. */
static int queue_send_locked(struct rdmae_lane *l, uint8_t *slot, uint32_t len)
	RDMAE_REQUIRES(l->conn->lock)
{
	struct ibv_send_wr *wr;
	struct ibv_sge *sge;

	rdmae_lane_sq_take_locked(l, RDMAE_WR_SEND, &wr, &sge);
	sge->addr = (uintptr_t)slot;
	sge->length = len;
	sge->lkey = l->tx_mr->lkey;
	wr->opcode = IBV_WR_SEND;
	wr->send_flags = IBV_SEND_SIGNALED;
	l->tx_head++;
	l->st.sends++;
	l->st.send_bytes += len;
	if (l->nchain == RDMAE_CHAIN_MAX)
		return rdmae_lane_post_chain_locked(l);
	return 0;
}

int rdmae_lane_send_raw_locked(struct rdmae_lane *l, const void *buf, uint32_t len)
{
	uint8_t *slot;
	int ret;

	if (!tx_room_locked(l) || len > l->tx_size)
		return -ENOSPC;
	slot = tx_slot(l);
	memcpy(slot, buf, len);
	ret = queue_send_locked(l, slot, len);
	return ret ? ret : rdmae_lane_post_chain_locked(l);
}

int rdmae_lane_send_locked(struct rdmae_lane *l, const void *payload, uint32_t len,
			   uint32_t remaining, uint16_t flags, uint32_t fence_seq, bool nowait,
			   uint64_t deadline_ns)
{
	struct rdmae_conn *c = l->conn;
	struct rdmae_data_hdr h;
	bool stalled = false;
	uint8_t *slot;

	for (;;) {
		int ret = rdmae_conn_check_locked(c, NULL);

		if (ret)
			return ret;
		if (rdmae_credits_can_send(&l->cr, l->cr.to_grant) && tx_room_locked(l))
			break;
		if (nowait)
			return -EAGAIN;
		if (!stalled && !rdmae_credits_can_send(&l->cr, l->cr.to_grant)) {
			stalled = true;
			l->st.credit_stalls++;
		}
		if (rdmae_conn_wait_locked(c, deadline_ns) == -ETIMEDOUT &&
		    !(rdmae_credits_can_send(&l->cr, l->cr.to_grant) && tx_room_locked(l)))
			return -ETIMEDOUT;
	}
	h.credits_requested = (uint16_t)l->cr.recv_target;
	h.credits_granted = (uint16_t)rdmae_credits_take_grant(&l->cr);
	h.flags = flags;
	h.remaining_data_length = remaining;
	h.data_offset = len ? RDMAE_DATA_HDR_SIZE : 0;
	h.data_length = len;
	h.fence_seq = fence_seq;
	slot = tx_slot(l);
	rdmae_data_hdr_encode(slot, &h);
	if (len)
		memcpy(slot + RDMAE_DATA_HDR_SIZE, payload, len);
	rdmae_credits_on_send(&l->cr);
	return queue_send_locked(l, slot, RDMAE_DATA_HDR_SIZE + len);
}

void rdmae_lane_grant_locked(struct rdmae_lane *l)
{
	if (!l->reply_owed && !l->grant_pending && !rdmae_credits_need_grant_msg(&l->cr))
		return;
	if (rdmae_lane_send_locked(l, NULL, 0, 0, 0, 0, true, 0) == 0) {
		l->reply_owed = false;
		l->grant_pending = false;
		rdmae_lane_post_chain_locked(l);
	} else {
		l->grant_pending = true;
	}
}

int rdmae_lane_create_locked(struct rdmae_conn *c, struct rdma_cm_id *id, unsigned int idx,
			     struct rdmae_err *err)
{
	struct rdmae_lane *l = &c->lanes[idx];
	struct ibv_qp_init_attr qa;
	uint32_t i;
	int ret;

	memset(l, 0, sizeof(*l));
	l->conn = c;
	l->idx = idx;
	l->id = id;
	id->context = l;
	l->nrx = c->opts.credits;
	l->rx_size = c->opts.recv_size;
	l->ntx = c->opts.credits;
	l->tx_size = c->opts.send_size;
	l->sq_depth = l->ntx + c->opts.writes_in_flight + 1;

	/* Depths follow from the credits; check them against the device before allocating anything. */
	if (l->sq_depth + 1 > (uint32_t)c->dev_attr.max_qp_wr ||
	    l->nrx + 1 > (uint32_t)c->dev_attr.max_qp_wr)
		return rdmae_err_set(err, -EINVAL,
				     "lane %u on %s: queue depth %u/%u exceeds max_qp_wr %d", idx,
				     ibv_get_device_name(c->verbs->device), l->sq_depth, l->nrx,
				     c->dev_attr.max_qp_wr);

	l->rx_mem = rdmae_mem_alloc((size_t)l->nrx * l->rx_size, c->numa_node, &l->rx_huge);
	l->rx = calloc(l->nrx, sizeof(*l->rx));
	if (!l->rx_mem || !l->rx) {
		ret = rdmae_err_set(err, -ENOMEM, "lane %u receive ring (%u x %u bytes): out of "
				    "memory", idx, l->nrx, l->rx_size);
		goto err_rx;
	}
	l->rx_mr = ibv_reg_mr(c->pd, l->rx_mem, (size_t)l->nrx * l->rx_size, IBV_ACCESS_LOCAL_WRITE);
	if (!l->rx_mr) {
		ret = -errno;
		rdmae_err_set(err, ret, "ibv_reg_mr of the receive ring of lane %u: %s", idx,
			      strerror(errno));
		goto err_rx;
	}
	l->tx_mem = rdmae_mem_alloc((size_t)l->ntx * l->tx_size, c->numa_node, &l->tx_huge);
	l->wr = calloc(l->sq_depth, sizeof(*l->wr));
	if (!l->tx_mem || !l->wr) {
		ret = rdmae_err_set(err, -ENOMEM, "lane %u send ring (%u x %u bytes): out of "
				    "memory", idx, l->ntx, l->tx_size);
		goto err_tx;
	}
	l->tx_mr = ibv_reg_mr(c->pd, l->tx_mem, (size_t)l->ntx * l->tx_size, 0);
	if (!l->tx_mr) {
		ret = -errno;
		rdmae_err_set(err, ret, "ibv_reg_mr of the send ring of lane %u: %s", idx,
			      strerror(errno));
		goto err_tx;
	}
	for (i = 0; i < l->sq_depth; i++) {
		l->wr[i].cqe.done = sq_done;
		l->wr[i].lane = l;
	}

	memset(&qa, 0, sizeof(qa));
	qa.send_cq = c->cq;
	qa.recv_cq = c->cq;
	qa.qp_type = IBV_QPT_RC;
	/* One more WR on each queue: room for the drain markers (lane_drain_locked). */
	qa.cap.max_send_wr = l->sq_depth + 1;
	qa.cap.max_recv_wr = l->nrx + 1;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(id, c->pd, &qa)) {
		ret = -errno;
		rdmae_err_set(err, ret, "rdma_create_qp for lane %u (sq %u, rq %u): %s", idx,
			      l->sq_depth, l->nrx, strerror(errno));
		goto err_tx;
	}
	l->qp = id->qp;

	for (i = 0; i < l->nrx; i++) {
		l->rx[i].cqe.done = rx_done;
		l->rx[i].lane = l;
		l->rx[i].data = (uint8_t *)l->rx_mem + (size_t)i * l->rx_size;
		ret = post_recv(l, &l->rx[i]);
		if (ret) {
			rdmae_err_set(err, ret, "ibv_post_recv on lane %u: %s", idx, strerror(-ret));
			goto err_qp;
		}
	}
	/* Credits proper start at negotiation; until then the ring is simply posted. */
	l->cr.recv_posted = l->nrx;
	l->cr.recv_target = l->nrx;
	if (idx >= c->nlanes)
		c->nlanes = idx + 1;
	return 0;

err_qp:
	rdmae_lane_destroy_qp(l);
err_tx:
	if (l->tx_mr)
		ibv_dereg_mr(l->tx_mr);
	rdmae_mem_free(l->tx_mem, (size_t)l->ntx * l->tx_size, l->tx_huge);
	free(l->wr);
	if (l->rx_mr)
		ibv_dereg_mr(l->rx_mr);
err_rx:
	rdmae_mem_free(l->rx_mem, (size_t)l->nrx * l->rx_size, l->rx_huge);
	free(l->rx);
	memset(l, 0, sizeof(*l));
	id->context = NULL;
	return ret;
}

static void drain_done(struct rdmae_cqe *cqe, const struct ibv_wc *wc)
{
	struct rdmae_lane *l = container_of(cqe, struct rdmae_lane, drain_cqe);

	(void)wc;
	if (l->drain_left)
		l->drain_left--;
}

/*
 * The CQ is shared and the progress thread reaps it under the lock: a
 * completion of this QP still queued when the rings are freed would be
 * dispatched into freed memory (flushed receives do exactly that on rxe).
 * So, while the thread runs: error state, a marker behind everything posted
 * on each queue (a queue flushes in order), and wait until both markers are
 * back. Without the thread (teardown stops it first) nobody reaps the CQ
 * again before it is destroyed.
 */
static void lane_drain_locked(struct rdmae_lane *l) RDMAE_REQUIRES(l->conn->lock)
{
	struct rdmae_conn *c = l->conn;
	struct ibv_qp_attr attr = { .qp_state = IBV_QPS_ERR };
	struct ibv_recv_wr rwr = { .wr_id = (uintptr_t)&l->drain_cqe };
	struct ibv_send_wr swr = { .wr_id = (uintptr_t)&l->drain_cqe, .opcode = IBV_WR_SEND,
				   .send_flags = IBV_SEND_SIGNALED };
	struct ibv_recv_wr *rbad;
	struct ibv_send_wr *sbad;
	uint64_t deadline;

	if (!c->thread_started || c->stop)
		return;
	l->draining = true;
	l->drain_cqe.done = drain_done;
	l->drain_left = 0;
	if (ibv_modify_qp(l->qp, &attr, IBV_QP_STATE)) {
		rdmae_trace(c, "lane %u: could not move the QP to the error state: %s", l->idx,
			    strerror(errno));
		return;
	}
	/* The spare WR of each queue (see the QP's caps) guarantees room for the markers. */
	if (!ibv_post_recv(l->qp, &rwr, &rbad))
		l->drain_left++;
	if (!ibv_post_send(l->qp, &swr, &sbad))
		l->drain_left++;
	deadline = rdmae_deadline_after(DRAIN_MS);
	while (l->drain_left && !c->stop)
		if (rdmae_conn_wait_locked(c, deadline)) {
			rdmae_trace(c, "lane %u: %u drain marker(s) not back after %d ms", l->idx,
				    l->drain_left, DRAIN_MS);
			break;
		}
}

/*
 * Not analysed (RDMAE_NO_TSA): it runs with the lock held while the progress
 * thread runs (then it drains the QP) and without it in teardown once the
 * thread has stopped (then nobody else touches the lane), and the analysis
 * cannot state either-or. One owner per case is a known item of issue 17.
 */
void rdmae_lane_destroy_qp(struct rdmae_lane *l) RDMAE_NO_TSA
{
	uint64_t p;

	if (!l->conn || !l->qp)
		return;
	lane_drain_locked(l);
	rdma_destroy_qp(l->id);
	l->qp = NULL;
	/* The QP is gone, so no completion will retire what was in flight: release pins here. */
	for (p = l->sq_done; p < l->sq_posted; p++) {
		struct rdmae_wrslot *s = &l->wr[p % l->sq_depth];

		if (rdmae_wr_one_sided(s->kind))
			rdmae_pace_forget(&l->conn->pace, s->mark.len);
		if (s->chunk)
			rdmae_conn_chunk_put_locked(l->conn, s->chunk);
		s->chunk = NULL;
	}
	l->sq_done = l->sq_posted;
	l->writes_out = 0;
}

void rdmae_lane_destroy(struct rdmae_lane *l)
{
	if (!l->conn)
		return;
	rdmae_lane_destroy_qp(l);
	if (l->tx_mr)
		ibv_dereg_mr(l->tx_mr);
	if (l->rx_mr)
		ibv_dereg_mr(l->rx_mr);
	rdmae_mem_free(l->tx_mem, (size_t)l->ntx * l->tx_size, l->tx_huge);
	rdmae_mem_free(l->rx_mem, (size_t)l->nrx * l->rx_size, l->rx_huge);
	free(l->wr);
	free(l->rx);
	l->tx_mr = NULL;
	l->rx_mr = NULL;
	l->tx_mem = NULL;
	l->rx_mem = NULL;
	l->wr = NULL;
	l->rx = NULL;
	l->conn = NULL;
}
