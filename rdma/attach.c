/* SPDX-License-Identifier: MIT */
/*
 * L2: regions on a connection. A region is made (mr.c) on a device's PD
 * and attached to one connection on that device, which makes it usable
 * there: rdmae_write/rdmae_read take it, its descriptors may be advertised.
 * Detaching waits for the WRs in flight that read it, so the memory is
 * never deregistered under the NIC. The connection implements the qp's
 * chunk_put: a put that frees pin room wakes writers waiting for it.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>

#include "internal.h"

#define DETACH_WAIT_MS 5000

void rdmae_conn_chunk_put(struct rdmae_conn *c, struct rdmae_chunk *ch)
{
	/*
	 * Pin room is a conn-level condition (internal.h, Locking): the
	 * broadcast is made under c->lock, so a writer between its check of the
	 * cache's events and its wait cannot miss it.
	 */
	if (rdmae_mr_chunk_put(ch)) {
		rdmae_conn_lock(c);
		pthread_cond_broadcast(&c->cond);
		rdmae_conn_unlock(c);
	}
}

static void link_locked(struct rdmae_conn *c, struct rdmae_region *r) RDMAE_REQUIRES(c->lock)
{
	r->conn = c;
	r->next = c->regions;
	c->regions = r;
}

static void unlink_locked(struct rdmae_conn *c, struct rdmae_region *r) RDMAE_REQUIRES(c->lock)
{
	struct rdmae_region **pp;

	for (pp = &c->regions; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	r->conn = NULL;
	r->next = NULL;
	atomic_store(&r->claim, NULL);
}

int rdmae_region_create(struct rdmae_region **out, struct rdmae_conn *c, void *addr, size_t len,
			const struct rdmae_region_opts *o, struct rdmae_err *err)
{
	struct rdmae_region *r;
	int ret;

	*out = NULL;
	if (!c->dev && !c->pd)
		return rdmae_err_set(err, -ENOTCONN, "register region %p+%zu for %s: the "
				     "connection has no device yet", addr, len, c->peer);
	if (!c->dev) {
		/* A connection assembled by hand around a PD (see rdmae_dev_wrap_pd). */
		ret = rdmae_dev_wrap_pd(&c->dev, c->pd, err);
		if (ret)
			return ret;
	}
	ret = rdmae_mr_create(&r, c->dev, addr, len, o, c->mrc, err);
	if (ret)
		return ret;
	r->conn_owned = true;
	atomic_store(&r->claim, c);
	rdmae_conn_lock(c);
	link_locked(c, r);
	rdmae_conn_unlock(c);
	*out = r;
	return 0;
}

int rdmae_region_attach(struct rdmae_region *r, struct rdmae_conn *c, struct rdmae_err *err)
{
	struct rdmae_conn *owner = NULL;
	int ret = 0;

	/*
	 * Claim the region before any connection lock: r->conn is guarded by
	 * the lock of the connection it is on, so two threads attaching it to
	 * two connections would each see it free under their own lock.
	 */
	if (!atomic_compare_exchange_strong(&r->claim, &owner, c)) {
		if (owner == c) {
			rdmae_conn_lock(c);
			ret = r->conn == c ? 0 : -EBUSY;
			rdmae_conn_unlock(c);
			if (!ret)
				return 0;
			return rdmae_err_set(err, ret, "attach region %p+%zu to %s: another thread "
					     "is attaching it there", (void *)r->addr, r->len, c->peer);
		}
		return rdmae_err_set(err, -EBUSY, "attach region %p+%zu to %s: attached to (or "
				     "being attached to) the connection to %s; detach it first",
				     (void *)r->addr, r->len, c->peer, owner->peer);
	}
	rdmae_conn_lock(c);
	ret = rdmae_conn_check(c, NULL);
	if (ret) {
		rdmae_err_set(err, ret, "attach region %p+%zu to %s: the connection failed: %s",
			      (void *)r->addr, r->len, c->peer, c->err.msg);
		goto out;
	}
	/* Connected means negotiated and, with a key, authenticated: the peer may see rkeys. */
	if (c->state != RDMAE_ST_CONNECTED) {
		ret = rdmae_err_set(err, -ENOTCONN, "attach region %p+%zu to %s: the connection is "
				    "not negotiated and authenticated yet", (void *)r->addr, r->len,
				    c->peer);
		goto out;
	}
	if (r->dev != c->dev) {
		ret = rdmae_err_set(err, -EXDEV, "attach region %p+%zu to %s: the region is on "
				    "%s's PD, the connection on %s%s; give the connection the "
				    "region's device (rdmae_conn_opts.dev)", (void *)r->addr, r->len,
				    c->peer, r->dev->name, c->dev ? c->dev->name : "no device",
				    c->dev && r->dev->verbs == c->dev->verbs ? "'s own PD" : "");
		goto out;
	}
	link_locked(c, r);
	rdmae_trace(c, "region %p+%zu attached", (void *)r->addr, r->len);
out:
	if (ret)
		atomic_store(&r->claim, NULL);
	rdmae_conn_unlock(c);
	return ret;
}

/*
 * WRs still counted in flight on lane l that read this region's chunks (the
 * wait timed out, or a post failed) must not hold pointers into it.
 */
static void forget_inflight_locked(struct rdmae_conn *c, struct rdmae_lane *l,
				   const struct rdmae_region *r) RDMAE_REQUIRES(l->lock)
{
	struct rdmae_qp *qp = &l->qp;

	rdmae_lane_qp_held(l, qp);
	for (uint64_t p = qp->sq_done; qp->wr && p < qp->sq_posted; p++) {
		struct rdmae_wrslot *s = &qp->wr[p % qp->sq_depth];

		if (s->chunk && rdmae_mr_chunk_region(s->chunk) == r) {
			rdmae_conn_chunk_put(c, s->chunk);
			s->chunk = NULL;
		}
	}
}

/*
 * Lane l with WRs in flight that a bounded wait did not see complete: they
 * may still read a PIN_ALL region's memory, whose MRs hold no count of
 * them, so deregistering now would pull the memory from under the NIC. The
 * connection fails instead (it cannot go on with WRs of unknown fate), and
 * the QP is drained: moved to error, which stops the NIC's work on it, and,
 * with the progress thread reaping, waited for until its markers come back.
 * Deregistration is safe after that.
 */
static void fail_and_drain_locked(struct rdmae_conn *c, struct rdmae_lane *l,
				  const struct rdmae_region *r) RDMAE_REQUIRES(l->lock)
{
	rdmae_conn_fail(c, -ETIMEDOUT, "detach region %p+%zu from %s: WRs still in flight on "
			"lane %u after %d ms", (void *)r->addr, r->len, c->peer, l->idx,
			DETACH_WAIT_MS);
	rdmae_lane_qp_held(l, &l->qp);
	rdmae_qp_drain_locked(&l->qp);
}

/*
 * Wait (bounded, by deadline) until no WR is in flight on l, then drop the
 * pins of any still counted against r: nothing on l reads r afterwards.
 * Waits on l->cond under l->lock: one lane at a time, no other lock held.
 */
static void quiesce_lane(struct rdmae_conn *c, struct rdmae_lane *l, struct rdmae_region *r,
			 uint64_t deadline) RDMAE_EXCLUDES(l->lock)
{
	rdmae_lane_lock(l);
	rdmae_lane_qp_held(l, &l->qp);
	/* A WRITE in flight may read this memory: let the send queue empty first. */
	while (l->live && rdmae_qp_busy_locked(&l->qp) && rdmae_conn_reaped(c))
		if (rdmae_lane_wait_locked(l, deadline))
			break;
	/*
	 * The wait timed out. Without a reaper (the mock tests, perf/callgrind)
	 * there was no wait, and nothing completes before the QPs are
	 * destroyed anyway: their WRs are forgotten as before.
	 */
	if (l->live && rdmae_qp_busy_locked(&l->qp) && r->mrs && rdmae_conn_reaped(c))
		fail_and_drain_locked(c, l, r);
	forget_inflight_locked(c, l, r);
	rdmae_lane_unlock(l);
}

static void detach(struct rdmae_region *r)
{
	struct rdmae_conn *c = r->conn;
	uint64_t deadline = rdmae_deadline_after(DETACH_WAIT_MS);

	/*
	 * Unlinked first: a writer checks the claim under its lane's lock, so
	 * once a lane is quiesced below, nothing posts on it for r again.
	 */
	rdmae_conn_lock(c);
	unlink_locked(c, r);
	rdmae_conn_unlock(c);
	for (unsigned int i = 0; i < RDMAE_MAX_LANES; i++)
		if (c->lanes[i].sync_init)
			quiesce_lane(c, &c->lanes[i], r, deadline);
	/* Pins of WRs forgotten above may have freed room: writers waiting for it retry. */
	rdmae_conn_lock(c);
	pthread_cond_broadcast(&c->cond);
	rdmae_conn_unlock(c);
	if (rdmae_conn_failed(c))
		rdmae_conn_wake_lanes(c);
}

void rdmae_region_detach(struct rdmae_region *r)
{
	if (r && r->conn && !r->conn_owned)
		detach(r);
}

void rdmae_region_destroy(struct rdmae_region *r)
{
	struct rdmae_conn *c;

	if (!r)
		return;
	c = r->conn;
	if (c)
		detach(r);
	rdmae_mr_destroy(r);
	if (c) {
		rdmae_conn_lock(c);
		pthread_cond_broadcast(&c->cond);
		rdmae_conn_unlock(c);
	}
}

/*
 * The connection's teardown, its thread joined and its QPs gone: regions it
 * made go with it, prepared ones are detached and stay their owner's.
 */
void rdmae_regions_detach_all(struct rdmae_conn *c)
{
	while (c->regions) {
		struct rdmae_region *r = c->regions;

		c->regions = r->next;
		r->conn = NULL;
		r->next = NULL;
		atomic_store(&r->claim, NULL);
		if (r->conn_owned)
			rdmae_mr_destroy(r);
	}
}

int rdmae_region_bufdescs(const struct rdmae_region *r, struct rdmae_bufdesc *out, size_t cap,
			  size_t *n, struct rdmae_err *err)
{
	if (!r->conn)
		return rdmae_err_set(err, -EPERM, "descriptors of region %p+%zu on %s: not "
				     "attached to a connection yet; no rkey leaves the host before "
				     "the peer has authenticated (rdmae_region_attach)",
				     (void *)r->addr, r->len, r->dev->name);
	return rdmae_mr_bufdescs(r, out, cap, n, err);
}

void rdmae_conn_set_pin_limit(struct rdmae_conn *c, size_t bytes)
{
	rdmae_mr_cache_set_limit(c->mrc, bytes);
}

size_t rdmae_conn_pinned(struct rdmae_conn *c)
{
	return rdmae_mr_cache_pinned(c->mrc);
}
