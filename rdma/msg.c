/* SPDX-License-Identifier: MIT */
/*
 * The message channel on lane 0: whole messages up to the negotiated
 * max_fragmented_size, fragmented into sends of at most max_send_size and
 * reassembled on arrival. All fragments of one message go out behind as few
 * doorbells as the send ring allows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int rdmae_send(struct rdmae_conn *c, const void *buf, size_t len, struct rdmae_err *err)
{
	return rdmae_send_timeout(c, buf, len, c->opts.send_timeout_ms, err);
}

int rdmae_send_timeout(struct rdmae_conn *c, const void *buf, size_t len, int timeout_ms,
		       struct rdmae_err *err)
{
	uint64_t deadline = rdmae_deadline_after(timeout_ms);
	struct rdmae_lane *l0 = &c->lanes[0];
	const uint8_t *p = buf;
	uint32_t max_payload;
	size_t sent = 0;
	int ret, pret;

	if (!len || len > c->neg.max_fragmented_size)
		return rdmae_err_set(err, -EMSGSIZE, "send to %s: %zu bytes (1..%u allowed)", c->peer,
				     len, c->neg.max_fragmented_size);
	rdmae_conn_lock(c);
	/* One message at a time, or two senders' fragments would interleave. */
	while (c->sending && !rdmae_conn_check_locked(c, NULL)) {
		if (rdmae_conn_wait_locked(c, deadline) == -ETIMEDOUT && c->sending) {
			ret = rdmae_err_set(err, -ETIMEDOUT, "send to %s: another message still "
					    "going out after %d ms", c->peer, timeout_ms);
			goto out;
		}
	}
	ret = rdmae_conn_check_locked(c, err);
	if (ret)
		goto out;
	c->sending = true;
	max_payload = c->neg.max_send_size - RDMAE_DATA_HDR_SIZE;
	if (max_payload > l0->tx_size - RDMAE_DATA_HDR_SIZE)
		max_payload = l0->tx_size - RDMAE_DATA_HDR_SIZE;
	while (sent < len) {
		uint32_t flen, remaining;

		rdmae_frag_next(len, sent, max_payload, &flen, &remaining);
		ret = rdmae_lane_send_locked(l0, p + sent, flen, remaining, 0, 0, false, deadline);
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
			rdmae_conn_fail_locked(c, -ETIMEDOUT, "send to %s: no send credit within "
					       "%d ms, %zu of %zu bytes sent", c->peer, timeout_ms,
					       sent, len);
		else
			rdmae_err_set(err, -ETIMEDOUT, "send to %s: no send credit within %d ms "
				      "(the peer is not reading)", c->peer, timeout_ms);
	}
	/* A doorbell that failed means fragments never left: not a success. */
	pret = rdmae_lane_post_chain_locked(l0);
	if (!ret)
		ret = pret;
	c->sending = false;
	pthread_cond_broadcast(&c->cond);
	/* A timeout before the first fragment keeps its own message; anything else is the connection's. */
	if (ret && (ret != -ETIMEDOUT || sent))
		ret = rdmae_conn_check_locked(c, err) ? c->err.code : ret;
out:
	rdmae_conn_unlock(c);
	return ret;
}

int rdmae_recv(struct rdmae_conn *c, void **buf, size_t *len, int timeout_ms,
	       struct rdmae_err *err)
{
	uint64_t deadline = rdmae_deadline_after(timeout_ms);
	struct rdmae_lane *l0 = &c->lanes[0];
	struct rdmae_rxmsg *m;
	int ret = 0;

	*buf = NULL;
	*len = 0;
	rdmae_conn_lock(c);
	/* Messages that arrived before a failure are still delivered: the last one may be the answer. */
	for (;;) {
		m = c->q_head;
		if (m)
			break;
		ret = rdmae_conn_check_locked(c, err);
		if (ret)
			goto out;
		if (rdmae_conn_wait_locked(c, deadline) == -ETIMEDOUT && !c->q_head) {
			ret = rdmae_err_set(err, -ETIMEDOUT, "receive from %s: nothing within %d ms",
					    c->peer, timeout_ms);
			goto out;
		}
	}
	c->q_head = m->next;
	if (!c->q_head)
		c->q_tail = NULL;
	c->q_bytes -= m->len;
	if (c->state != RDMAE_ST_ERROR) {
		rdmae_lane_repost_parked_locked(l0);
		rdmae_lane_grant_locked(l0);
	}
	*buf = m->data;
	*len = m->len;
	free(m);
out:
	rdmae_conn_unlock(c);
	return ret;
}
