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
#include <stdatomic.h>
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

/* Is local still attached to c? Under c->lock (attach.c keeps r->conn under it). */
static bool attached(struct rdmae_conn *c, const struct rdmae_region *local)
	RDMAE_EXCLUDES(c->lock)
{
	bool on;

	rdmae_conn_lock(c);
	on = local->conn == c;
	rdmae_conn_unlock(c);
	return on;
}

/*
 * Still attached to c, for a writer under a lane's lock: detach clears the
 * claim under c->lock before it quiesces any lane (attach.c), and takes
 * each lane's lock to do so, so a writer that holds or retakes that lock
 * after the lane was quiesced sees the claim gone. One atomic load: the
 * hot path takes no c->lock for it.
 */
static bool still_attached(const struct rdmae_region *local, const struct rdmae_conn *c)
{
	return atomic_load_explicit(&((struct rdmae_region *)local)->claim,
				    memory_order_acquire) == c;
}

/*
 * lkey of an on-demand region's chunk, pinning it. Registering runs without
 * any lock (rdmae_mr_lkey may register); -EAGAIN means no pin room until a
 * WR in flight on any lane completes or another thread's pin ends. That is
 * a conn-level condition, so the wait is too: the lane's chain is rung (its
 * WRs may hold the pins that would free room), its lock dropped, and the
 * writer waits on c->cond under c->lock while the cache's event count
 * stands still; a put that frees room takes c->lock to broadcast it
 * (rdmae_conn_chunk_put), so the wakeup cannot fall between the check and
 * the wait.
 */
static int lkey_locked(struct rdmae_conn *c, struct rdmae_lane *l, struct rdmae_region *local,
		       uint64_t off, uint32_t *lkey, struct rdmae_chunk **chunk)
	RDMAE_REQUIRES(l->lock)
{
	for (;;) {
		uint64_t seen = rdmae_mr_events(local);
		bool on;
		int ret;

		if (rdmae_mr_may_register(local)) {
			/* Already pinned (the common case): a reference, the lock kept. */
			if (!rdmae_mr_lkey_pinned(local, off, lkey, chunk))
				return 0;
			rdmae_lane_unlock(l);
			ret = rdmae_mr_lkey(local, off, lkey, chunk);
			/* A pin that ended (or failed) may be what another writer waits for. */
			rdmae_conn_lock(c);
			pthread_cond_broadcast(&c->cond);
			on = local->conn == c;
			rdmae_conn_unlock(c);
			rdmae_lane_lock(l);
			if (!on) {
				/* Detached meanwhile (see rdmae_region.h): bulk() names it. */
				if (!ret && *chunk)
					rdmae_conn_chunk_put(c, *chunk);
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
		ret = rdmae_conn_check(c, NULL);
		if (ret)
			return ret;
		rdmae_lane_post_locked(l);
		rdmae_lane_unlock(l);
		rdmae_conn_lock(c);
		while (rdmae_mr_events(local) == seen && !rdmae_conn_failed(c) && local->conn == c)
			rdmae_conn_wait_locked(c, 0);
		on = local->conn == c;
		rdmae_conn_unlock(c);
		rdmae_lane_lock(l);
		ret = rdmae_conn_check(c, NULL);
		if (ret)
			return ret;
		if (!on)
			return -ENOLINK;
	}
}

/* A piece of a run, its remote address resolved (remote_addr) before any lock is taken. */
struct piece {
	uint64_t local;
	uint64_t len;
	uint64_t raddr;
	uint32_t rkey;
};

/*
 * The next piece of the runs; false at their end. -ERANGE in *bad for a
 * piece outside the remote descriptors (and false).
 */
struct piece_iter {
	const struct rdmae_run *runs;
	const struct rdmae_remote *remote;
	size_t n, i;
	struct rdmae_run r;		/* what is left of runs[i] */
	uint64_t max, boundary;
};

static inline bool piece_next(struct piece_iter *it, struct piece *p, int *bad)
{
	struct rdmae_run t;

	while (!it->r.len) {
		if (it->i >= it->n)
			return false;
		it->r = it->runs[it->i++];
	}
	t = rdmae_run_take(&it->r, it->max, it->boundary, RDMAE_DESC_SPAN);
	*bad = remote_addr(it->remote, t.remote, t.len, &p->raddr, &p->rkey);
	p->local = t.local;
	p->len = t.len;
	return !*bad;
}

/*
 * One piece on lane ln, under its lock. Waits on ln->cond for send-queue
 * room and pacing budget (both come back with ln's own completions).
 */
static int post_piece_locked(struct rdmae_conn *c, struct rdmae_lane *ln,
			     struct rdmae_region *local, const struct piece *p,
			     enum rdmae_wr_kind kind)
	RDMAE_REQUIRES(ln->lock)
{
	struct rdmae_qp *l = &ln->qp;
	struct rdmae_chunk *chunk;
	struct rdmae_wrslot *slot;
	struct ibv_send_wr *wr;
	struct ibv_sge *sge;
	uint32_t lkey;
	bool stalled = false;
	int ret;

	/*
	 * The lkey first: pinning an on-demand chunk may wait and drop the lock,
	 * and whoever runs meanwhile may take send-queue positions. The room
	 * check must be the last thing before taking one.
	 */
	chunk = NULL;
	if (!rdmae_mr_lkey_fixed(local, p->local, &lkey)) {
		ret = lkey_locked(c, ln, local, p->local, &lkey, &chunk);
		if (ret)
			return ret;
	}
	rdmae_lane_qp_held(ln, l);
	for (;;) {
		bool room = l->writes_out < c->opts.writes_in_flight && rdmae_qp_sq_free_locked(l) > 0;
		bool budget = rdmae_pace_may_post(&ln->pace, p->len);

		if (room && budget)
			break;
		if (!stalled) {
			if (budget)
				l->st.sq_stalls++;
			else
				ln->pace.stalls++;
			stalled = true;
		}
		ret = rdmae_conn_check(c, NULL);
		if (!ret)
			ret = rdmae_lane_wait_locked(ln, 0);
		if (!ret && !still_attached(local, c))
			ret = -ENOLINK; /* detached while the lock was dropped */
		if (ret) {
			if (chunk)
				rdmae_conn_chunk_put(c, chunk);
			return ret;
		}
	}
	slot = rdmae_qp_sq_take_locked(l, kind, &wr, &sge);
	slot->chunk = chunk;
	slot->mark.len = p->len;
	rdmae_pace_on_post(&ln->pace, p->len, ln->pace.inflight ? 0 : rdmae_now_ns());
	l->writes_out++;
	sge->addr = (uintptr_t)rdmae_region_addr(local) + p->local;
	sge->length = (uint32_t)p->len;
	sge->lkey = lkey;
	wr->opcode = kind == RDMAE_WR_READ ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
	wr->wr.rdma.remote_addr = p->raddr;
	wr->wr.rdma.rkey = p->rkey;
	/*
	 * Signal often enough that the budget comes back in pieces: a lane
	 * asks for a completion once it has half its budget unsignalled, not
	 * only every RDMAE_SIGNAL_EVERY WRs.
	 */
	l->unsig_bytes += p->len;
	if (slot->pos + 1 - l->last_signal >= RDMAE_SIGNAL_EVERY ||
	    l->unsig_bytes * 2 >= ln->pace.budget) {
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

/*
 * Pieces dealt round-robin, a window at a time: the lane-agnostic calls
 * collect up to a chain per lane of pieces, piece j of the window going to
 * lane (first + j) % nlanes as one WR at a time did before, then visit each
 * lane once, under its lock, posting its pieces and ringing its doorbell.
 * So a lane's lock is taken once per chain of WRs, not per WR, and each
 * lane gets exactly the pieces, in the order, that dealing one at a time
 * gave it.
 */
#define WINDOW_MAX (RDMAE_MAX_LANES * RDMAE_CHAIN_MAX)

/* Post the window's pieces of one lane (every step-th from first) under its lock; ring it. */
static int post_lane_turn(struct rdmae_conn *c, struct rdmae_lane *ln, struct rdmae_region *local,
			  const struct piece *win, size_t first, size_t nwin, unsigned int step,
			  enum rdmae_wr_kind kind) RDMAE_EXCLUDES(ln->lock)
{
	int ret = 0, pret;

	rdmae_lane_lock(ln);
	if (!still_attached(local, c))
		ret = -ENOLINK;
	for (size_t j = first; j < nwin && !ret; j += step)
		ret = post_piece_locked(c, ln, local, &win[j], kind);
	pret = rdmae_lane_post_locked(ln);
	rdmae_lane_unlock(ln);
	return ret ? ret : pret;
}

static int post_all_lanes(struct rdmae_conn *c, struct rdmae_region *local,
			  struct piece_iter *it, enum rdmae_wr_kind kind)
{
	struct piece win[WINDOW_MAX];
	unsigned int nl = c->nlanes;
	size_t cap = (size_t)nl * RDMAE_CHAIN_MAX;
	int ret = 0, bad = 0;

	while (!ret && !bad) {
		size_t nwin = 0;
		unsigned int first;

		/* A piece outside the remote descriptors ends the window: those before it go. */
		while (nwin < cap && piece_next(it, &win[nwin], &bad))
			nwin++;
		if (!nwin)
			break;
		first = atomic_fetch_add_explicit(&c->next_lane, (unsigned int)nwin,
						  memory_order_relaxed);
		for (unsigned int k = 0; k < nl && k < nwin && !ret; k++)
			ret = post_lane_turn(c, &c->lanes[(first + k) % nl], local, win, k, nwin, nl,
					     kind);
	}
	return ret ? ret : bad;
}

/* WRITE (local -> remote) or READ (remote -> local) of runs on lane (-1: all); see rdmae_write.h. */
static int bulk(struct rdmae_conn *c, int lane, struct rdmae_region *local,
		const struct rdmae_remote *remote, struct rdmae_run *runs, size_t n,
		enum rdmae_wr_kind kind, struct rdmae_err *err)
{
	struct piece_iter it = { .remote = remote, .max = c->neg.max_rw_size,
				 .boundary = rdmae_mr_boundary(local) };
	int ret;

	if (lane >= 0 && (unsigned int)lane >= rdmae_conn_lanes(c))
		return rdmae_err_set(err, -EINVAL, "%s %s: no lane %d (%u lanes)", op_name(kind),
				     c->peer, lane, rdmae_conn_lanes(c));
	ret = check_runs(c, local, remote, runs, n, kind, err);
	if (ret)
		return ret;
	it.runs = runs;
	it.n = rdmae_runs_coalesce(runs, n, it.max);
	if (!attached(c, local))
		return rdmae_err_set(err, -EINVAL, "%s %s: region %p+%zu is not attached to this "
				     "connection (rdmae_region_attach)", op_name(kind), c->peer,
				     (void *)local->addr, local->len);
	ret = rdmae_conn_check(c, err);
	if (ret)
		return ret;
	if (lane >= 0) {
		struct rdmae_lane *ln = &c->lanes[lane];
		struct piece p;
		int pret, bad = 0;

		rdmae_lane_lock(ln);
		if (!still_attached(local, c))
			ret = -ENOLINK;
		while (!ret && piece_next(&it, &p, &bad))
			ret = post_piece_locked(c, ln, local, &p, kind);
		pret = rdmae_lane_post_locked(ln);
		rdmae_lane_unlock(ln);
		if (!ret)
			ret = bad ? bad : pret;
	} else {
		ret = post_all_lanes(c, local, &it, kind);
	}
	if (ret) {
		int code = rdmae_conn_check(c, err);

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
		if (code)
			rdmae_conn_wake_lanes(c);
	}
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

/* Waits for each lane in turn, under its lock and on its cond. */
int rdmae_write_flush(struct rdmae_conn *c, struct rdmae_err *err)
{
	int ret = 0;

	for (unsigned int i = 0; i < c->nlanes && !ret; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		rdmae_lane_lock(l);
		rdmae_lane_qp_held(l, &l->qp);
		while (!(ret = rdmae_conn_check(c, err)) && l->live && rdmae_qp_busy_locked(&l->qp))
			rdmae_lane_wait_locked(l, 0);
		rdmae_lane_unlock(l);
	}
	if (!ret)
		ret = rdmae_conn_check(c, err);
	return ret;
}

/*
 * The fence's number under c->lock, then its empty message on each lane in
 * turn, under that lane's lock: lanes are never held two at a time.
 */
static int fence_lanes(struct rdmae_conn *c, unsigned int first, unsigned int end,
		       uint32_t *seq, struct rdmae_err *err)
{
	int tmo = c->opts.send_timeout_ms;
	uint64_t deadline = rdmae_deadline_after(tmo);
	unsigned int i;
	int ret;

	ret = rdmae_conn_check(c, err);
	if (ret)
		return ret;
	rdmae_conn_lock(c);
	*seq = ++c->fence_seq;
	rdmae_conn_unlock(c);
	for (i = first; i < end && !ret; i++) {
		struct rdmae_lane *l = &c->lanes[i];
		int pret;

		rdmae_lane_lock(l);
		ret = rdmae_msg_lane_send_locked(l, NULL, 0, 0, RDMAE_FLAG_FENCE, *seq, false,
						 deadline);
		if (!ret)
			l->qp.st.fences++;
		pret = rdmae_lane_post_locked(l);
		if (!ret)
			ret = pret;
		rdmae_lane_unlock(l);
	}
	/* Some lanes carry the fence and others do not: the connection cannot go on. */
	if (ret == -ETIMEDOUT)
		rdmae_conn_fail(c, -ETIMEDOUT, "fence %u to %s: no send credit on lane %u "
				"within %d ms", *seq, c->peer, i - 1, tmo);
	if (ret) {
		ret = rdmae_conn_check(c, err) ? c->err.code : ret;
		if (rdmae_conn_failed(c))
			rdmae_conn_wake_lanes(c);
	}
	return ret;
}

int rdmae_fence(struct rdmae_conn *c, uint32_t *seq, struct rdmae_err *err)
{
	return fence_lanes(c, 0, c->nlanes, seq, err);
}

int rdmae_fence_lane(struct rdmae_conn *c, unsigned int lane, uint32_t *seq,
		     struct rdmae_err *err)
{
	if (lane >= c->nlanes)
		return rdmae_err_set(err, -EINVAL, "fence to %s: no lane %u (%u lanes)", c->peer,
				     lane, c->nlanes);
	return fence_lanes(c, lane, lane + 1, seq, err);
}

static int fence_wait_lanes(struct rdmae_conn *c, unsigned int first, unsigned int end,
			    uint32_t seq, int timeout_ms, struct rdmae_err *err)
{
	uint64_t deadline = rdmae_deadline_after(timeout_ms);
	unsigned int i;
	int ret = 0;

	for (i = first; i < end && !ret; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		rdmae_lane_lock(l);
		while (l->fence_seen < seq) {
			ret = rdmae_conn_check(c, err);
			if (ret)
				break;
			if (rdmae_lane_wait_locked(l, deadline) == -ETIMEDOUT &&
			    l->fence_seen < seq) {
				ret = rdmae_err_set(err, -ETIMEDOUT,
						    "fence %u from %s: lane %u not placed within "
						    "%d ms", seq, c->peer, i, timeout_ms);
				break;
			}
		}
		rdmae_lane_unlock(l);
	}
	return ret;
}

int rdmae_fence_wait(struct rdmae_conn *c, uint32_t seq, int timeout_ms, struct rdmae_err *err)
{
	return fence_wait_lanes(c, 0, c->nlanes, seq, timeout_ms, err);
}

int rdmae_fence_wait_lane(struct rdmae_conn *c, unsigned int lane, uint32_t seq, int timeout_ms,
			  struct rdmae_err *err)
{
	if (lane >= c->nlanes)
		return rdmae_err_set(err, -EINVAL, "fence from %s: no lane %u (%u lanes)", c->peer,
				     lane, c->nlanes);
	return fence_wait_lanes(c, lane, lane + 1, seq, timeout_ms, err);
}
