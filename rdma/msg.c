/* SPDX-License-Identifier: MIT */
/*
 * Messages on a lane: the credit header every SEND carries, grants, the
 * receive path (credits, fences, reassembly, the lane's receive queue and
 * its back-pressure), and whole messages up to the negotiated
 * max_fragmented_size, fragmented into sends of at most max_send_size.
 * All fragments of one message go out on one lane behind as few doorbells
 * as the send ring allows. rdmae_send and rdmae_recv are lane 0's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* Give a consumed receive buffer back; it grants a credit once posted. */
static void repost_locked(struct rdmae_lane *l, struct rdmae_rxbuf *rb)
	RDMAE_REQUIRES(l->lock)
{
	int ret = rdmae_qp_post_recv(&l->qp, rb);

	if (ret) {
		rdmae_conn_fail(l->conn, ret, "ibv_post_recv on lane %u: %s", l->idx,
				strerror(-ret));
		return;
	}
	rdmae_credits_on_repost(&l->cr, 1);
}

static void enqueue_msg_locked(struct rdmae_lane *l, void *data, size_t len)
	RDMAE_REQUIRES(l->lock)
{
	struct rdmae_conn *c = l->conn;
	struct rdmae_rxmsg *m = malloc(sizeof(*m));

	if (!m) {
		free(data);
		rdmae_conn_fail(c, -ENOMEM, "receive queue of lane %u on %s: out of memory",
				l->idx, c->peer);
		return;
	}
	m->next = NULL;
	m->len = len;
	m->data = data;
	if (l->q_tail)
		l->q_tail->next = m;
	else
		l->q_head = m;
	l->q_tail = m;
	l->q_bytes += len;
}

/* Returns 0, or non-zero once the message has put the connection in error. */
static int handle_data_locked(struct rdmae_lane *l, const uint8_t *buf, uint32_t len)
	RDMAE_REQUIRES(l->lock)
{
	struct rdmae_conn *c = l->conn;
	struct rdmae_data_hdr h;
	enum rdmae_wire_field f;
	void *msg;
	size_t mlen;
	int ret;

	ret = rdmae_data_hdr_decode(buf, len, c->neg.max_fragmented_size, &h, &f);
	if (ret) {
		rdmae_conn_fail(c, ret, "message from %s on lane %u rejected: bad %s", c->peer,
				l->idx, rdmae_wire_field_name(f));
		return ret;
	}
	/* After a failure credits no longer matter; the message itself still does. */
	ret = rdmae_conn_failed(c) ? 0 :
	      rdmae_credits_on_recv(&l->cr, h.credits_granted, h.credits_requested);
	if (ret) {
		rdmae_conn_fail(c, ret,
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
	/* Each lane is its own message stream, reassembled and queued apart. */
	ret = rdmae_reasm_push(&l->reasm, buf + h.data_offset, h.data_length,
			       h.remaining_data_length, &msg, &mlen);
	if (ret) {
		rdmae_conn_fail(c, ret, "reassembly of a message from %s on lane %u: %s",
				c->peer, l->idx, strerror(-ret));
		return ret;
	}
	if (msg)
		enqueue_msg_locked(l, msg, mlen);
	return rdmae_conn_failed(c);
}

void rdmae_msg_on_recv_locked(struct rdmae_lane *l, struct rdmae_rxbuf *rb, uint32_t len)
{
	struct rdmae_conn *c = l->conn;

	/*
	 * A message that made it in before a failure is still delivered (it may
	 * be the peer's reason for hanging up); its buffer is not reposted.
	 */
	if (handle_data_locked(l, rb->data, len) || rdmae_conn_failed(c))
		return;
	/*
	 * Hold the buffer back while the reader lags: the peer then runs out of
	 * credits on this lane, which is the back-pressure that bounds its queue.
	 */
	if (l->q_bytes > c->opts.recv_queue_bytes) {
		rb->next_parked = l->parked;
		l->parked = rb;
		return;
	}
	repost_locked(l, rb);
}

void rdmae_msg_repost_parked_locked(struct rdmae_lane *l)
{
	struct rdmae_conn *c = l->conn;

	while (l->parked && l->q_bytes <= c->opts.recv_queue_bytes && !rdmae_conn_failed(c)) {
		struct rdmae_rxbuf *rb = l->parked;

		l->parked = rb->next_parked;
		repost_locked(l, rb);
	}
}

int rdmae_msg_lane_send_locked(struct rdmae_lane *l, const void *payload, uint32_t len,
			       uint32_t remaining, uint16_t flags, uint32_t fence_seq, bool nowait,
			       uint64_t deadline_ns)
{
	struct rdmae_conn *c = l->conn;
	struct rdmae_qp *qp = &l->qp;
	struct rdmae_data_hdr h;
	bool stalled = false;
	uint8_t *slot;

	rdmae_lane_qp_held(l, qp);
	for (;;) {
		int ret = rdmae_conn_check(c, NULL);

		if (ret)
			return ret;
		if (rdmae_credits_can_send(&l->cr, l->cr.to_grant) && rdmae_qp_tx_room_locked(qp))
			break;
		if (nowait)
			return -EAGAIN;
		if (!stalled && !rdmae_credits_can_send(&l->cr, l->cr.to_grant)) {
			stalled = true;
			qp->st.credit_stalls++;
		}
		if (rdmae_lane_wait_locked(l, deadline_ns) == -ETIMEDOUT &&
		    !(rdmae_credits_can_send(&l->cr, l->cr.to_grant) && rdmae_qp_tx_room_locked(qp)))
			return -ETIMEDOUT;
	}
	h.credits_requested = (uint16_t)l->cr.recv_target;
	h.credits_granted = (uint16_t)rdmae_credits_take_grant(&l->cr);
	h.flags = flags;
	h.remaining_data_length = remaining;
	h.data_offset = len ? RDMAE_DATA_HDR_SIZE : 0;
	h.data_length = len;
	h.fence_seq = fence_seq;
	slot = rdmae_qp_tx_slot_locked(qp);
	rdmae_data_hdr_encode(slot, &h);
	if (len)
		memcpy(slot + RDMAE_DATA_HDR_SIZE, payload, len);
	rdmae_credits_on_send(&l->cr);
	return rdmae_qp_queue_send_locked(qp, slot, RDMAE_DATA_HDR_SIZE + len);
}

void rdmae_msg_grant_locked(struct rdmae_lane *l)
{
	if (!l->reply_owed && !l->grant_pending && !rdmae_credits_need_grant_msg(&l->cr))
		return;
	if (rdmae_msg_lane_send_locked(l, NULL, 0, 0, 0, 0, true, 0) == 0) {
		l->reply_owed = false;
		l->grant_pending = false;
		rdmae_lane_post_locked(l);
	} else {
		l->grant_pending = true;
	}
}

void rdmae_msg_lane_clear(struct rdmae_lane *l)
{
	struct rdmae_rxmsg *m;

	while ((m = l->q_head)) {
		l->q_head = m->next;
		free(m->data);
		free(m);
	}
	l->q_tail = NULL;
	l->q_bytes = 0;
	rdmae_reasm_reset(&l->reasm);
}

/* The lane a caller named, once the connection has it; NULL and err set otherwise. */
static struct rdmae_lane *lane_get(struct rdmae_conn *c, unsigned int lane, const char *op,
				   struct rdmae_err *err)
{
	if (lane >= rdmae_conn_lanes(c)) {
		rdmae_err_set(err, -EINVAL, "%s %s: no lane %u (%u lanes)", op, c->peer, lane,
			      rdmae_conn_lanes(c));
		return NULL;
	}
	return &c->lanes[lane];
}

int rdmae_send(struct rdmae_conn *c, const void *buf, size_t len, struct rdmae_err *err)
{
	return rdmae_send_lane(c, 0, buf, len, c->opts.send_timeout_ms, err);
}

int rdmae_send_timeout(struct rdmae_conn *c, const void *buf, size_t len, int timeout_ms,
		       struct rdmae_err *err)
{
	return rdmae_send_lane(c, 0, buf, len, timeout_ms, err);
}

int rdmae_send_lane(struct rdmae_conn *c, unsigned int lane, const void *buf, size_t len,
		    int timeout_ms, struct rdmae_err *err)
{
	uint64_t deadline = rdmae_deadline_after(timeout_ms);
	struct rdmae_lane *l = lane_get(c, lane, "send to", err);
	const uint8_t *p = buf;
	uint32_t max_payload;
	size_t sent = 0;
	int ret, pret;

	if (!l)
		return -EINVAL;
	if (!len || len > c->neg.max_fragmented_size)
		return rdmae_err_set(err, -EMSGSIZE, "send to %s: %zu bytes (1..%u allowed)", c->peer,
				     len, c->neg.max_fragmented_size);
	rdmae_lane_lock(l);
	/* One message at a time per lane, or two senders' fragments would interleave. */
	while (l->sending && !rdmae_conn_check(c, NULL)) {
		if (rdmae_lane_wait_locked(l, deadline) == -ETIMEDOUT && l->sending) {
			ret = rdmae_err_set(err, -ETIMEDOUT, "send to %s: another message still "
					    "going out on lane %u after %d ms", c->peer, lane,
					    timeout_ms);
			goto out;
		}
	}
	ret = rdmae_conn_check(c, err);
	if (ret)
		goto out;
	l->sending = true;
	max_payload = c->neg.max_send_size - RDMAE_DATA_HDR_SIZE;
	if (max_payload > l->qp.tx_size - RDMAE_DATA_HDR_SIZE)
		max_payload = l->qp.tx_size - RDMAE_DATA_HDR_SIZE;
	while (sent < len) {
		uint32_t flen, remaining;

		rdmae_frag_next(len, sent, max_payload, &flen, &remaining);
		ret = rdmae_msg_lane_send_locked(l, p + sent, flen, remaining, 0, 0, false, deadline);
		if (ret)
			break;
		sent += flen;
	}
	/*
	 * No credit in time: a peer that stopped reading, or one that never
	 * grants. Before the first fragment nothing happened and the caller
	 * may try again; after it the stream holds half a message, so the
	 * connection cannot go on.
	 */
	if (ret == -ETIMEDOUT) {
		if (sent)
			rdmae_conn_fail(c, -ETIMEDOUT, "send to %s: no send credit within "
					"%d ms, %zu of %zu bytes sent", c->peer, timeout_ms,
					sent, len);
		else
			rdmae_err_set(err, -ETIMEDOUT, "send to %s: no send credit within %d ms "
				      "(the peer is not reading)", c->peer, timeout_ms);
	}
	/* A doorbell that failed means fragments never left: not a success. */
	pret = rdmae_lane_post_locked(l);
	if (!ret)
		ret = pret;
	l->sending = false;
	pthread_cond_broadcast(&l->cond);
	/* A timeout before the first fragment keeps its own message; anything else is the connection's. */
	if (ret && (ret != -ETIMEDOUT || sent))
		ret = rdmae_conn_check(c, err) ? c->err.code : ret;
out:
	rdmae_lane_unlock(l);
	if (ret && rdmae_conn_failed(c))
		rdmae_conn_wake_lanes(c);
	return ret;
}

int rdmae_send_drain_lane(struct rdmae_conn *c, unsigned int lane, int timeout_ms,
			  struct rdmae_err *err)
{
	uint64_t deadline = rdmae_deadline_after(timeout_ms);
	struct rdmae_lane *l = lane_get(c, lane, "drain sends to", err);
	int ret;

	if (!l)
		return -EINVAL;
	rdmae_lane_lock(l);
	rdmae_lane_qp_held(l, &l->qp);
	/*
	 * Every SEND is signalled (qp.c): tx_tail reaches tx_head once the last
	 * one completed. Sends that completed count as drained even if the
	 * connection failed afterwards (the peer read them and hung up).
	 */
	ret = 0;
	while (l->live && (l->sending || rdmae_qp_sends_pending_locked(&l->qp))) {
		ret = rdmae_conn_check(c, err);
		if (ret)
			break;
		if (rdmae_lane_wait_locked(l, deadline) == -ETIMEDOUT &&
		    (l->sending || rdmae_qp_sends_pending_locked(&l->qp))) {
			ret = rdmae_err_set(err, -ETIMEDOUT, "drain sends to %s: lane %u still "
					    "sending after %d ms", c->peer, lane, timeout_ms);
			break;
		}
	}
	rdmae_lane_unlock(l);
	return ret;
}

int rdmae_recv(struct rdmae_conn *c, void **buf, size_t *len, int timeout_ms,
	       struct rdmae_err *err)
{
	return rdmae_recv_lane(c, 0, buf, len, timeout_ms, err);
}

static void msg_hold(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

int rdmae_recv_lane(struct rdmae_conn *c, unsigned int lane, void **buf, size_t *len,
		    int timeout_ms, struct rdmae_err *err)
{
	uint64_t deadline = rdmae_deadline_after(timeout_ms);
	struct rdmae_lane *l;
	struct rdmae_rxmsg *m;
	int ret = 0;

	*buf = NULL;
	*len = 0;
	l = lane_get(c, lane, "receive from", err);
	if (!l)
		return -EINVAL;
	rdmae_lane_lock(l);
	/* Messages that arrived before a failure are still delivered: the last one may be the answer. */
	for (;;) {
		m = l->q_head;
		if (m)
			break;
		ret = rdmae_conn_check(c, err);
		if (ret)
			goto out;
		if (rdmae_lane_wait_locked(l, deadline) == -ETIMEDOUT && !l->q_head) {
			ret = rdmae_err_set(err, -ETIMEDOUT, "receive from %s: nothing within %d ms",
					    c->peer, timeout_ms);
			goto out;
		}
	}
	l->q_head = m->next;
	if (!l->q_head)
		l->q_tail = NULL;
	l->q_bytes -= m->len;
	if (!rdmae_conn_failed(c)) {
		rdmae_msg_repost_parked_locked(l);
		rdmae_msg_grant_locked(l);
	}
	*buf = m->data;
	*len = m->len;
	free(m);
out:
	rdmae_lane_unlock(l);
	if (ret && rdmae_conn_failed(c))
		rdmae_conn_wake_lanes(c);
	/* Test-only (faults.h): a receiver that lags on this lane. */
	if (!ret && c->faults.recv_hold_ms && lane == c->faults.recv_hold_lane)
		msg_hold(c->faults.recv_hold_ms);
	return ret;
}

bool rdmae_conn_test_fault(const struct rdmae_conn *c, const char *name)
{
	if (!c || !name)
		return false;
	if (!strcmp(name, "no_sync_ack"))
		return c->faults.no_sync_ack;
	if (!strcmp(name, "recheck"))
		return c->faults.recheck;
	return false;
}
