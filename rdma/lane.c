/* SPDX-License-Identifier: MIT */
/*
 * L2: a lane of a connection. It owns its qp (L1) and implements the qp's
 * ops, which is where a completion gets its meaning for the connection:
 * the keepalive stamp, pacing, unpinning a chunk, and routing a receive to
 * negotiation or to messages (msg.c). A lane is made without any lock held
 * (its rings are registered meanwhile) and published under its lock and
 * c->lock once whole; it is destroyed the other way round.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/*
 * The qp ops of a lane: what a completion means to the connection. Each
 * runs with the lane's lock held (taken by the completion's done, or by a
 * poster); what needs the connection takes c->lock inside (lane then conn).
 */

/* The one place a retired WR gives its chunk back (mr.c: rdmae_mr_chunk_put). */
static void lane_chunk_put_locked(struct rdmae_lane *l, struct rdmae_wrslot *s)
	RDMAE_REQUIRES(l->lock)
{
	if (s->chunk)
		rdmae_conn_chunk_put(l->conn, s->chunk);
	s->chunk = NULL;
}

static void lane_on_recv(void *owner, struct rdmae_qp *qp, struct rdmae_rxbuf *rb, uint32_t len)
{
	struct rdmae_lane *l = owner;
	struct rdmae_conn *c = l->conn;

	rdmae_lane_assert_held(l);
	rdmae_conn_heard(c, rdmae_now_ns(), "a message");
	if (l->idx == 0 && c->state == RDMAE_ST_NEGOTIATING) {
		/*
		 * Negotiate messages sit outside the credit scheme. The buffer goes
		 * back before the answer, which grants credits for every posted
		 * receive, this one included.
		 */
		uint8_t neg[RDMAE_NEG_MAX_SIZE];
		uint32_t n = len < sizeof(neg) ? len : sizeof(neg);

		memcpy(neg, rb->data, n);
		/* Negotiation is the connection's: lane 0's lock, then c->lock. */
		rdmae_conn_lock(c);
		l->conn_held = true;
		/*
		 * The state again, under c->lock: the check above held only
		 * lane 0's lock, and a failure (a pending connection's setup
		 * deadline, a client's timeout) may have come in between. A
		 * failed connection stays failed: the message is dropped.
		 */
		if (rdmae_qp_post_recv(qp, rb))
			rdmae_conn_fail_locked(c, -EIO, "ibv_post_recv on lane 0 after negotiate");
		else if (c->state == RDMAE_ST_NEGOTIATING)
			rdmae_negotiate_on_msg_locked(c, neg, n);
		l->conn_held = false;
		rdmae_conn_unlock(c);
		return;
	}
	rdmae_msg_on_recv_locked(l, rb, len);
}

static void lane_on_retired(void *owner, struct rdmae_qp *qp, uint64_t one_sided_bytes,
			    uint64_t now_ns)
{
	struct rdmae_lane *l = owner;
	struct rdmae_conn *c = l->conn;

	(void)qp;
	(void)c;
	rdmae_lane_assert_held(l);
	if (one_sided_bytes)
		rdmae_pace_on_done(&l->pace, one_sided_bytes, now_ns);
}

static void lane_on_sent(void *owner, struct rdmae_qp *qp, const struct rdmae_wrslot *s,
			 enum rdmae_wr_kind kind, uint64_t now_ns)
{
	struct rdmae_lane *l = owner;
	struct rdmae_conn *c = l->conn;

	(void)qp;
	rdmae_lane_assert_held(l);
	if (kind == RDMAE_WR_PROBE) {
		/*
		 * The peer's NIC acknowledged: the host and the path are there.
		 * Its process may still be stalled, but then it withholds
		 * credits, and every credit wait has its own deadline.
		 */
		uint64_t probe = rdmae_conn_probe_ns(c);

		if (probe) {
			rdmae_trace(c, "keepalive: zero-length WRITE acknowledged after %.1f ms",
				    (double)(now_ns - probe) / 1e6);
			rdmae_conn_heard(c, now_ns, NULL);
		}
		return;
	}
	if (!rdmae_wr_one_sided(kind))
		return;
	rdmae_pace_sample(&l->pace, &s->mark, now_ns);
	/*
	 * The peer's QP acknowledged data we wrote (or answered a READ with
	 * its data): the connection is making progress even if no message
	 * comes back (ours may be queued behind this very transfer). A SEND's
	 * completion does not count: a probe is acknowledged by a peer whose
	 * process has stopped.
	 */
	rdmae_conn_heard(c, now_ns, "WRITE/READ completions");
}

static void lane_on_forget(void *owner, struct rdmae_qp *qp, uint64_t one_sided_bytes)
{
	struct rdmae_lane *l = owner;

	(void)qp;
	rdmae_lane_assert_held(l);
	if (one_sided_bytes)
		rdmae_pace_forget(&l->pace, one_sided_bytes);
}

static void lane_on_release(void *owner, struct rdmae_qp *qp, struct rdmae_wrslot *s)
{
	struct rdmae_lane *l = owner;

	(void)qp;
	rdmae_lane_assert_held(l);
	lane_chunk_put_locked(l, s);
}

/*
 * The failure of a post made with c->lock already held by this thread
 * (l->conn_held: negotiation on lane 0). The analysis cannot see that the
 * flag stands for the lock, so it is not analysed here.
 */
static void fail_held(struct rdmae_conn *c, int code, const char *what) RDMAE_NO_TSA
{
	rdmae_conn_fail_locked(c, code, "%s (peer %s)", what, c->peer);
}

static void lane_on_error(void *owner, struct rdmae_qp *qp, int code, bool flushed,
			  const char *what)
{
	struct rdmae_lane *l = owner;
	struct rdmae_conn *c = l->conn;

	(void)qp;
	rdmae_lane_assert_held(l);
	/* A failed connection's QPs flush whatever they held: expected, not a new cause. */
	if (flushed && rdmae_conn_failed(c))
		return;
	if (l->conn_held) {
		fail_held(c, code, what);
		return;
	}
	rdmae_conn_lock(c);
	rdmae_conn_fail_locked(c, code, "%s (peer %s)", what, c->peer);
	rdmae_conn_unlock(c);
}

static int lane_wait(void *owner, struct rdmae_qp *qp, uint64_t deadline_ns)
{
	struct rdmae_lane *l = owner;
	struct rdmae_conn *c = l->conn;

	rdmae_lane_assert_held(l);
	if (!rdmae_conn_reaped(c))
		return -ESHUTDOWN;
	if (rdmae_lane_wait_locked(l, deadline_ns)) {
		rdmae_trace(c, "lane %u: %u drain marker(s) not back in time", l->idx,
			    qp->drain_left);
		return -ETIMEDOUT;
	}
	return 0;
}

static const struct rdmae_qp_ops lane_qp_ops = {
	.on_recv = lane_on_recv,
	.on_retired = lane_on_retired,
	.on_sent = lane_on_sent,
	.on_forget = lane_on_forget,
	.on_release = lane_on_release,
	.on_error = lane_on_error,
	.wait = lane_wait,
};

int rdmae_lane_create(struct rdmae_conn *c, struct rdma_cm_id *id, unsigned int idx,
		      struct rdmae_err *err)
{
	struct rdmae_lane *l = &c->lanes[idx];
	struct rdmae_qp_attr a = {
		.pd = c->pd,
		.cq = c->cq,
		.dev = &c->dev_attr,
		.dev_name = c->verbs->device ? ibv_get_device_name(c->verbs->device) : "?",
		.numa_node = c->numa_node,
		.rx_size = c->opts.recv_size,
		.tx_size = c->opts.send_size,
		.writes_in_flight = c->opts.writes_in_flight,
		.idx = idx,
		.lock = &l->lock,
		.cond = &l->cond,
		.ops = &lane_qp_ops,
		.owner = l,
		.delivered = &l->pace.delivered,
	};
	int ret;

	if (idx >= RDMAE_MAX_LANES)
		return rdmae_err_set(err, -EINVAL, "lane %u: at most %d lanes", idx,
				     RDMAE_MAX_LANES);
	/* Claimed under c->lock, so that nobody else makes it meanwhile; published once whole. */
	rdmae_conn_lock(c);
	if (l->conn) {
		rdmae_conn_unlock(c);
		return rdmae_err_set(err, -EEXIST, "lane %u of %s: already there", idx, c->peer);
	}
	/* A connection assembled by hand (perf/callgrind) has no lane locks yet. */
	if (!l->sync_init)
		rdmae_lane_sync_init(l);
	rdmae_lane_reset(l);
	l->conn = c;
	l->idx = idx;
	/*
	 * Lanes after lane 0 are made once negotiated, so the version is known
	 * and says how deep their rings are; lane 0 is made before (version
	 * 0), and keeps the full ring. The send ring needs no more slots than
	 * the peer will ever grant: it posts as many receives as we do.
	 */
	a.nrx = rdmae_lane_credits(c->neg.version, idx, c->opts.credits);
	a.ntx = a.nrx;
	rdmae_conn_unlock(c);

	ret = rdmae_qp_create(&l->qp, id, &a, err);

	rdmae_lane_lock(l);
	rdmae_conn_lock(c);
	if (ret) {
		l->conn = NULL;
	} else {
		/* Credits proper start at negotiation; until then the ring is simply posted. */
		l->cr.recv_posted = l->qp.nrx;
		l->cr.recv_target = l->qp.nrx;
		l->live = true;
		c->setup.ring_alloc_us += l->qp.made.alloc_ns / 1000;
		c->setup.ring_reg_us += l->qp.made.reg_ns / 1000;
		c->setup.qp_create_us += l->qp.made.create_ns / 1000;
		c->setup.post_recv_us += l->qp.made.post_ns / 1000;
		if (idx == 0)
			c->setup.lane0_recvs = l->qp.nrx;
		else
			c->setup.lane_recvs = l->qp.nrx;
		if (idx >= c->nlanes)
			c->nlanes = idx + 1;
	}
	rdmae_conn_unlock(c);
	rdmae_lane_unlock(l);
	return ret;
}

void rdmae_lane_sync_init(struct rdmae_lane *l)
{
	pthread_mutex_init(&l->lock, NULL);
	rdmae_conn_cond_init(&l->cond);
	l->sync_init = true;
}

void rdmae_lane_reset(struct rdmae_lane *l)
{
	size_t from = offsetof(struct rdmae_lane, qp);

	memset((char *)l + from, 0, sizeof(*l) - from);
}

void rdmae_lane_destroy(struct rdmae_lane *l)
{
	struct rdmae_conn *c = l->conn;

	if (!c)
		return;
	/*
	 * Dead first, under both locks: housekeeping, disconnect and the
	 * lane-walking paths skip it from here on. The drain waits on l->cond
	 * for the progress thread to bring the markers back, which it does
	 * under this lock (released while waiting). The rings are deregistered
	 * and the cm_id destroyed after, with no lock held: nothing else
	 * touches a dead, drained lane.
	 */
	rdmae_lane_lock(l);
	rdmae_conn_lock(c);
	l->live = false;
	l->established = false;
	rdmae_conn_unlock(c);
	rdmae_lane_qp_held(l, &l->qp);
	if (rdmae_conn_reaped(c))
		rdmae_qp_drain_locked(&l->qp);
	rdmae_lane_unlock(l);
	rdmae_qp_destroy(&l->qp);
	rdmae_msg_lane_clear(l);
	rdmae_lane_lock(l);
	rdmae_conn_lock(c);
	rdmae_lane_reset(l);
	rdmae_conn_unlock(c);
	rdmae_lane_unlock(l);
}

int rdmae_lane_wait_locked(struct rdmae_lane *l, uint64_t deadline_ns)
{
	rdmae_lane_post_locked(l);
	return rdmae_conn_cond_wait(&l->cond, &l->lock, deadline_ns);
}

int rdmae_lane_post_locked(struct rdmae_lane *l)
{
	if (!l->live)
		return 0;
	rdmae_lane_qp_held(l, &l->qp);
	return rdmae_qp_post_chain_locked(&l->qp);
}

struct rdmae_lane *rdmae_lane_of(struct rdma_cm_id *id)
{
	struct rdmae_qp *qp = id ? id->context : NULL;

	return qp ? qp->owner : NULL;
}
