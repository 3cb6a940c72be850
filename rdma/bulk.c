/* SPDX-License-Identifier: MIT */
/*
 * L3, bulk transfer: RDMA WRITE straight from the source's registered
 * memory into the peer's advertised region, and its mirror, RDMA READ from
 * the peer's advertised region into local memory. The CPU's part per byte
 * is only building one WR per run (up to max_rw_size bytes); pieces go
 * round-robin over the lanes (or all on the lane the caller named), are
 * chained per lane behind one doorbell, and only one in RDMAE_SIGNAL_EVERY
 * asks for a completion.
 *
 * What is in flight is bounded twice: per lane by opts.writes_in_flight WRs,
 * which keeps the rest of the send queue for SENDs (a credit grant or a
 * keepalive answer must never wait for a WRITE to leave before it can even
 * be queued), and per connection by the pacing budget in bytes
 * (rdmae_pace.h), which bounds how long a SEND waits behind the WRITEs
 * already queued on its lane. READs count against both like WRITEs: a
 * READ's response occupies the same wire and the same send-queue position.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "internal.h"
#include "rdmae_write.h"

static int remote_addr(const struct rdmae_remote *dst, uint64_t off, uint64_t len,
		       uint64_t *raddr, uint32_t *rkey)
{
	size_t i = off / RDMAE_DESC_SPAN;
	uint64_t o = off % RDMAE_DESC_SPAN;

	if (i >= dst->ndescs || o + len > dst->descs[i].length)
		return -ERANGE;
	*raddr = dst->descs[i].offset + o;
	*rkey = dst->descs[i].token;
	return 0;
}

/* "write to PEER" or "read from PEER", for messages. */
static const char *op_name(enum rdmae_wr_kind kind)
{
	return kind == RDMAE_WR_READ ? "read from" : "write to";
}

static int check_runs(struct rdmae_conn *c, struct rdmae_region *local,
		      const struct rdmae_remote *remote, const struct rdmae_run *runs, size_t n,
		      enum rdmae_wr_kind kind, struct rdmae_err *err)
{
	size_t len = rdmae_region_len(local), i;

	for (i = 0; i < n; i++) {
		const struct rdmae_run *r = &runs[i];

		if (r->local > len || r->len > len - r->local || r->remote > remote->len ||
		    r->len > remote->len - r->remote)
			return rdmae_err_set(err, -ERANGE,
					     "%s %s: run %zu (local %" PRIu64 ", remote %"
					     PRIu64 ", %" PRIu64 " bytes) outside the regions "
					     "(%zu local, %" PRIu64 " remote bytes)", op_name(kind),
					     c->peer, i, r->local, r->remote, r->len, len,
					     remote->len);
	}
	return 0;
}

/*
 * lkey of an on-demand region's chunk, pinning it. Registering runs without
 * the lock (rdmae_mr_lkey may register); -EAGAIN means no pin room until a
 * WR in flight completes or another thread's pin ends: the wait rings the
 * lanes' doorbells, a put that frees room broadcasts c->cond, and the
 * events count catches a wakeup missed while the lock was dropped.
 */
static int lkey_locked(struct rdmae_conn *c, struct rdmae_region *local, uint64_t off,
		       uint32_t *lkey, struct rdmae_chunk **chunk) RDMAE_REQUIRES(c->lock)
{
	for (;;) {
		uint64_t seen = rdmae_mr_events(local);
		int ret;

		if (rdmae_mr_may_register(local)) {
			/* Already pinned (the common case): a reference, the lock kept. */
			if (!rdmae_mr_lkey_pinned(local, off, lkey, chunk))
				return 0;
			rdmae_conn_unlock(c);
			ret = rdmae_mr_lkey(local, off, lkey, chunk);
			rdmae_conn_lock(c);
			/* A pin that ended (or failed) may be what another writer waits for. */
			pthread_cond_broadcast(&c->cond);
			if (local->conn != c) {
				/* Detached meanwhile (see rdmae_region.h): bulk() names it. */
				if (!ret && *chunk)
					rdmae_conn_chunk_put_locked(c, *chunk);
				*chunk = NULL;
				return -ENOLINK;
			}
		} else {
			ret = rdmae_mr_lkey(local, off, lkey, chunk);
		}
		if (ret != -EAGAIN)
			return ret;
		if (rdmae_mr_events(local) != seen)
			continue;
		ret = rdmae_conn_check_locked(c, NULL);
		if (!ret)
			ret = rdmae_conn_wait_locked(c, 0);
		if (ret)
			return ret;
		if (local->conn != c)
			return -ENOLINK;
	}
}

/* Give back a chunk a piece pinned but never posted. */
static void piece_unpin_locked(struct rdmae_conn *c, struct rdmae_chunk *chunk)
	RDMAE_REQUIRES(c->lock)
{
	if (chunk)
		rdmae_conn_chunk_put_locked(c, chunk);
}

/* lane: the caller's, or -1 for the next one round-robin. */
static int post_piece_locked(struct rdmae_conn *c, int lane, struct rdmae_region *local,
			     const struct rdmae_remote *remote, const struct rdmae_run *p,
			     enum rdmae_wr_kind kind) RDMAE_REQUIRES(c->lock)
{
	struct rdmae_lane *ln = &c->lanes[lane >= 0 ? (unsigned int)lane :
					  c->next_lane++ % c->nlanes];
	struct rdmae_qp *l = &ln->qp;
	struct rdmae_chunk *chunk;
	struct rdmae_wrslot *slot;
	struct ibv_send_wr *wr;
	struct ibv_sge *sge;
	uint64_t raddr;
	uint32_t rkey, lkey;
	bool stalled = false;
	int ret;

	ret = remote_addr(remote, p->remote, p->len, &raddr, &rkey);
	if (ret)
		return ret;
	/*
	 * The lkey first: pinning an on-demand chunk may wait and drop the lock,
	 * and whoever runs meanwhile may take send-queue positions. The room
	 * check must be the last thing before taking one.
	 */
	chunk = NULL;
	if (!rdmae_mr_lkey_fixed(local, p->local, &lkey)) {
		ret = lkey_locked(c, local, p->local, &lkey, &chunk);
		if (ret)
			return ret;
	}
	rdmae_conn_qp_held(c, l);
	for (;;) {
		bool room = l->writes_out < c->opts.writes_in_flight && rdmae_qp_sq_free_locked(l) > 0;
		bool budget = rdmae_pace_may_post(&c->pace, p->len);

		if (room && budget)
			break;
		if (!stalled) {
			if (budget)
				l->st.sq_stalls++;
			else
				c->pace.stalls++;
			stalled = true;
		}
		ret = rdmae_conn_check_locked(c, NULL);
		if (!ret)
			ret = rdmae_conn_wait_locked(c, 0);
		if (!ret && local->conn != c)
			ret = -ENOLINK; /* detached while the lock was dropped */
		if (ret) {
			piece_unpin_locked(c, chunk);
			return ret;
		}
	}
	slot = rdmae_qp_sq_take_locked(l, kind, &wr, &sge);
	slot->chunk = chunk;
	slot->mark.len = p->len;
	rdmae_pace_on_post(&c->pace, p->len, c->pace.inflight ? 0 : rdmae_now_ns());
	l->writes_out++;
	sge->addr = (uintptr_t)rdmae_region_addr(local) + p->local;
	sge->length = (uint32_t)p->len;
	sge->lkey = lkey;
	wr->opcode = kind == RDMAE_WR_READ ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
	wr->wr.rdma.remote_addr = raddr;
	wr->wr.rdma.rkey = rkey;
	/*
	 * Signal often enough that the budget comes back in pieces: a lane
	 * asks for a completion once it has half its share of the budget
	 * unsignalled, not only every RDMAE_SIGNAL_EVERY WRs.
	 */
	l->unsig_bytes += p->len;
	if (slot->pos + 1 - l->last_signal >= RDMAE_SIGNAL_EVERY ||
	    l->unsig_bytes * 2 * c->nlanes >= c->pace.budget) {
		wr->send_flags = IBV_SEND_SIGNALED;
		l->last_signal = slot->pos + 1;
		l->unsig_bytes = 0;
	}
	if (kind == RDMAE_WR_READ) {
		l->st.reads++;
		l->st.read_bytes += p->len;
	} else {
		l->st.writes++;
		l->st.write_bytes += p->len;
	}
	if (l->nchain == RDMAE_CHAIN_MAX)
		return rdmae_qp_post_chain_locked(l);
	return 0;
}

/* WRITE (local -> remote) or READ (remote -> local) of runs on lane (-1: all); see rdmae_write.h. */
static int bulk(struct rdmae_conn *c, int lane, struct rdmae_region *local,
		const struct rdmae_remote *remote, struct rdmae_run *runs, size_t n,
		enum rdmae_wr_kind kind, struct rdmae_err *err)
{
	uint64_t max = c->neg.max_rw_size;
	uint64_t boundary = rdmae_mr_boundary(local);
	size_t i;
	int ret, pret;

	if (lane >= 0 && (unsigned int)lane >= rdmae_conn_lanes(c))
		return rdmae_err_set(err, -EINVAL, "%s %s: no lane %d (%u lanes)", op_name(kind),
				     c->peer, lane, rdmae_conn_lanes(c));
	ret = check_runs(c, local, remote, runs, n, kind, err);
	if (ret)
		return ret;
	n = rdmae_runs_coalesce(runs, n, max);
	rdmae_conn_lock(c);
	if (local->conn != c) {
		rdmae_conn_unlock(c);
		return rdmae_err_set(err, -EINVAL, "%s %s: region %p+%zu is not attached to this "
				     "connection (rdmae_region_attach)", op_name(kind), c->peer,
				     (void *)local->addr, local->len);
	}
	ret = rdmae_conn_check_locked(c, err);
	for (i = 0; i < n && !ret; i++) {
		struct rdmae_run r = runs[i];

		while (r.len && !ret) {
			struct rdmae_run p = rdmae_run_take(&r, max, boundary, RDMAE_DESC_SPAN);

			ret = post_piece_locked(c, lane, local, remote, &p, kind);
		}
	}
	pret = rdmae_conn_post_all_locked(c);
	if (!ret)
		ret = pret;
	if (ret) {
		int code = rdmae_conn_check_locked(c, err);

		if (code)
			ret = code;
		else if (ret == -ENOLINK)
			rdmae_err_set(err, ret, "%s %s: region %p+%zu was detached from this "
				      "connection while its runs were being posted", op_name(kind),
				      c->peer, (void *)local->addr, local->len);
		else if (ret == -ERANGE)
			rdmae_err_set(err, ret, "%s %s: a run crosses the end of a remote "
				      "descriptor", op_name(kind), c->peer);
		else
			rdmae_err_set(err, ret, "%s %s: %s", op_name(kind), c->peer,
				      strerror(-ret));
	}
	rdmae_conn_unlock(c);
	return ret;
}

int rdmae_write(struct rdmae_conn *c, struct rdmae_region *src, const struct rdmae_remote *dst,
		struct rdmae_run *runs, size_t n, struct rdmae_err *err)
{
	return bulk(c, -1, src, dst, runs, n, RDMAE_WR_WRITE, err);
}

int rdmae_write_lane(struct rdmae_conn *c, unsigned int lane, struct rdmae_region *src,
		     const struct rdmae_remote *dst, struct rdmae_run *runs, size_t n,
		     struct rdmae_err *err)
{
	/* Reported as given: a cast to int first could make it look like -1 (any lane). */
	if (lane >= RDMAE_MAX_LANES)
		return rdmae_err_set(err, -EINVAL, "write to %s: no lane %u (%u lanes)", c->peer,
				     lane, rdmae_conn_lanes(c));
	return bulk(c, (int)lane, src, dst, runs, n, RDMAE_WR_WRITE, err);
}

static int read_runs(struct rdmae_conn *c, int lane, struct rdmae_region *dst,
		     const struct rdmae_remote *src, struct rdmae_run *runs, size_t n,
		     struct rdmae_err *err)
{
	/*
	 * Checked here rather than left to the NIC: a READ into memory it may
	 * not write fails as a local protection error on the completion, which
	 * takes the whole connection down.
	 */
	if (!rdmae_mr_local_writable(dst))
		return rdmae_err_set(err, -EACCES, "read from %s: the local region %p is not "
				     "registered for the NIC to write into (local_write)",
				     c->peer, rdmae_region_addr(dst));
	return bulk(c, lane, dst, src, runs, n, RDMAE_WR_READ, err);
}

int rdmae_read(struct rdmae_conn *c, struct rdmae_region *dst, const struct rdmae_remote *src,
	       struct rdmae_run *runs, size_t n, struct rdmae_err *err)
{
	return read_runs(c, -1, dst, src, runs, n, err);
}

int rdmae_read_lane(struct rdmae_conn *c, unsigned int lane, struct rdmae_region *dst,
		    const struct rdmae_remote *src, struct rdmae_run *runs, size_t n,
		    struct rdmae_err *err)
{
	/* Reported as given: a cast to int first could make it look like -1 (any lane). */
	if (lane >= RDMAE_MAX_LANES)
		return rdmae_err_set(err, -EINVAL, "read from %s: no lane %u (%u lanes)", c->peer,
				     lane, rdmae_conn_lanes(c));
	return read_runs(c, (int)lane, dst, src, runs, n, err);
}

int rdmae_write_flush(struct rdmae_conn *c, struct rdmae_err *err)
{
	int ret;

	rdmae_conn_lock(c);
	while (!(ret = rdmae_conn_check_locked(c, err)) && rdmae_conn_any_busy_locked(c))
		rdmae_conn_wait_locked(c, 0);
	rdmae_conn_unlock(c);
	return ret;
}

int rdmae_fence(struct rdmae_conn *c, uint32_t *seq, struct rdmae_err *err)
{
	int tmo = c->opts.send_timeout_ms;
	uint64_t deadline = rdmae_deadline_after(tmo);
	unsigned int i;
	int ret, pret;

	rdmae_conn_lock(c);
	ret = rdmae_conn_check_locked(c, err);
	if (ret)
		goto out;
	*seq = ++c->fence_seq;
	for (i = 0; i < c->nlanes && !ret; i++) {
		ret = rdmae_msg_lane_send_locked(&c->lanes[i], NULL, 0, 0, RDMAE_FLAG_FENCE, *seq,
						 false, deadline);
		if (!ret)
			c->lanes[i].qp.st.fences++;
	}
	/* Some lanes carry the fence and others do not: the connection cannot go on. */
	if (ret == -ETIMEDOUT)
		rdmae_conn_fail_locked(c, -ETIMEDOUT, "fence %u to %s: no send credit on lane %u "
				       "within %d ms", *seq, c->peer, i - 1, tmo);
	pret = rdmae_conn_post_all_locked(c);
	if (!ret)
		ret = pret;
	if (ret)
		ret = rdmae_conn_check_locked(c, err) ? c->err.code : ret;
out:
	rdmae_conn_unlock(c);
	return ret;
}

int rdmae_fence_wait(struct rdmae_conn *c, uint32_t seq, int timeout_ms, struct rdmae_err *err)
{
	uint64_t deadline = rdmae_deadline_after(timeout_ms);
	unsigned int i;
	int ret = 0;

	rdmae_conn_lock(c);
	for (i = 0; i < c->nlanes && !ret; i++) {
		while (c->lanes[i].fence_seen < seq) {
			ret = rdmae_conn_check_locked(c, err);
			if (ret)
				break;
			if (rdmae_conn_wait_locked(c, deadline) == -ETIMEDOUT &&
			    c->lanes[i].fence_seen < seq) {
				ret = rdmae_err_set(err, -ETIMEDOUT,
						    "fence %u from %s: lane %u not placed within "
						    "%d ms", seq, c->peer, i, timeout_ms);
				break;
			}
		}
	}
	rdmae_conn_unlock(c);
	return ret;
}
