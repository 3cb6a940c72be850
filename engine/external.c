/* SPDX-License-Identifier: MIT */
/*
 * The external data path (rdmae_engine.h, RDMAE_DATA_PATH_EXTERNAL): the
 * caller's threads (QEMU's multifd send and receive threads) WRITE pages on
 * lanes >= 1 and keep page sums, concurrently with each other and with the
 * engine's own calls on lane 0. Nothing here takes s->busy, which would
 * serialise them: what the threads share is atomic, or under rem_lock and
 * rx_lock (session_int.h). The block lookup and the switchover cost are
 * here too, since only such a caller needs them.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rdmae_write.h"
#include "checksum.h"
#include "pagesums.h"
#include "proto.h"
#include "session_int.h"

#define NSEC_PER_SEC		1000000000ull
#define X_RUNS			64		/* runs per rdmae_write_lane from here */
#define DEF_RATE		(1ull << 30)	/* bytes/s assumed before anything is measured */
#define DEF_RTT_NS		NSEC_PER_MSEC	/* a round trip assumed before one is measured */
/* The final per-lane sync ack, the revoke and COMPLETE -> COMMIT_OK. */
#define SWITCHOVER_RTTS		3

uint32_t sess_wire_flags(const struct rdmae_session *s)
{
	return s->external ? RDMAE_SESS_EXTERNAL : 0;
}

const char *sess_data_path_name(uint32_t wire_flags)
{
	return (wire_flags & RDMAE_SESS_EXTERNAL) ? "external (its caller moves the pages)"
						  : "the engine's rounds";
}

void sess_external_stats(struct rdmae_session *s, struct rdmae_session_stats *st)
{
	if (!s->external)
		return;
	st->hash_ns += atomic_load_explicit(&s->x_hash_ns, memory_order_relaxed);
	st->verify_ns += atomic_load_explicit(&s->x_verify_ns, memory_order_relaxed);
	st->transferred_bytes += atomic_load_explicit(&s->x_bytes, memory_order_relaxed);
	st->normal_pages += atomic_load_explicit(&s->x_pages, memory_order_relaxed);
	st->zero_pages += atomic_load_explicit(&s->x_zero_pages, memory_order_relaxed);
}

/* ---- blocks ---- */

size_t rdmae_session_block_count(const struct rdmae_session *s)
{
	return s ? s->nblocks : 0;
}

int rdmae_session_block_index(const struct rdmae_session *s, const char *name)
{
	size_t i;

	if (!s || !name)
		return -EINVAL;
	/* The destination learns the source's order (the indices) at pre-flight. */
	if (s->role == RDMAE_DEST && !s->have_ctx)
		return -EAGAIN;
	for (i = 0; i < s->nblocks; i++)
		if (!strcmp(s->blk[i].b.name, name))
			return (int)i;
	return -ENOENT;
}

/* ---- source: WRITEs from the caller's threads ---- */

/* Entry of the external calls: the right mode and a live, ready session. */
static int x_check(struct rdmae_session *s, enum rdmae_role role, const char *op,
		   struct rdmae_err *err)
{
	int st;

	if (!s->external)
		return rdmae_err_set(err, -EINVAL, "%s: the session's data path is the engine's "
				     "rounds, not external", op);
	if (s->role != role)
		return rdmae_err_set(err, -EINVAL, "%s: not a %s call", op,
				     s->role == RDMAE_SOURCE ? "source" : "destination");
	if (atomic_load(&s->stop))
		return sess_stopped_err(s, err);
	st = atomic_load(&s->state);
	if (st == ST_FAILED) {
		int rc;

		pthread_mutex_lock(&s->lock);
		rc = rdmae_err_set(err, s->fail_code, "%s", s->fail_msg);
		pthread_mutex_unlock(&s->lock);
		return rc;
	}
	if (st != ST_READY)
		return rdmae_err_set(err, -EINVAL, "%s: the session is %s", op,
				     st == ST_NEW ? "not pre-flighted yet" : "complete");
	return 0;
}

/*
 * The connection failed under a writer. In this data path nobody else
 * reads lane 0 during pre-copy, so a CANCEL the destination sent before it
 * hung up would go unread and the caller would see only "disconnected":
 * sess_fail looks for it (under rx_lock, as the one reader of lane 0) and
 * makes it, or the connection's error, the session's sticky reason.
 */
static int x_failed(struct rdmae_session *s, int rc, struct rdmae_err *err)
{
	if (!rdmae_conn_error(s->conn, NULL) || atomic_load(&s->state) == ST_FAILED)
		return rc;
	pthread_mutex_lock(&s->rx_lock);
	rc = sess_fail(s, rdmae_conn_error(s->conn, err), err);
	pthread_mutex_unlock(&s->rx_lock);
	return rc;
}

static uint64_t x_advertised(struct rdmae_session *s, size_t block)
{
	uint64_t v;

	pthread_rwlock_rdlock(&s->rem_lock);
	v = s->advertised[block];
	pthread_rwlock_unlock(&s->rem_lock);
	return v;
}

/*
 * Until block is advertised up to end: one thread at a time reads lane 0
 * (rx_lock) and takes DESCS in for everyone; the others wait for the lock
 * and then find their range advertised, or read on themselves. During
 * pre-copy the destination sends nothing else but a CANCEL.
 */
static int x_wait(struct rdmae_session *s, size_t block, uint64_t end, struct rdmae_err *err)
{
	const struct sblock *b = &s->blk[block];
	int rc = 0;

	if (x_advertised(s, block) >= end)
		return 0;
	pthread_mutex_lock(&s->rx_lock);
	while (!rc && x_advertised(s, block) < end) {
		struct rdmae_msg m;
		void *buf;

		if (atomic_load(&s->stop)) {
			rc = sess_stopped_err(s, err);
			break;
		}
		rc = sess_recv_any(s, s->slow_timeout_ms, &buf, &m, err);
		if (rc == -ETIMEDOUT && !rdmae_conn_error(s->conn, NULL)) {
			rc = rdmae_err_set(err, -ETIMEDOUT,
					   "write: block '%s': the destination made %" PRIu64
					   " of its %zu bytes writable and no more in %d ms",
					   b->b.name, x_advertised(s, block), b->b.len,
					   s->slow_timeout_ms);
			break;
		}
		if (rc)
			break;
		if (m.type == RDMAE_MSG_CANCEL)
			rc = sess_peer_cancelled(s, &m, err);
		else if (m.type != RDMAE_MSG_DESCS)
			rc = sess_unexpected(s, &m, "DESCS (external data path)", err);
		free(buf);
	}
	pthread_mutex_unlock(&s->rx_lock);
	return rc;
}

int rdmae_session_wait_advertised(struct rdmae_session *s, size_t block, uint64_t offset,
				  uint64_t len, struct rdmae_err *err)
{
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "wait advertised: no session");
	rc = x_check(s, RDMAE_SOURCE, "wait advertised", err);
	if (rc)
		return rc;
	if (block >= s->nblocks || offset > s->blk[block].b.len ||
	    len > s->blk[block].b.len - offset)
		return rdmae_err_set(err, -EINVAL, "wait advertised: block %zu: range %" PRIu64
				     "+%" PRIu64 " not in the session's blocks", block, offset, len);
	rc = x_wait(s, block, offset + len, err);
	return rc ? x_failed(s, rc, err) : 0;
}

/* One rdmae_write_lane: a batch of runs, all in one local and one remote piece. */
struct x_batch {
	struct rdmae_run runs[X_RUNS];
	size_t n;
	size_t li;			/* the local piece */
	struct piece rp;		/* a copy of the remote piece (its descs never move) */
};

static int x_flush(struct rdmae_session *s, unsigned int lane, const struct sblock *b,
		   struct x_batch *xb, struct rdmae_err *err)
{
	int rc;

	if (!xb->n)
		return 0;
	rc = rdmae_write_lane(s->conn, lane, b->loc[xb->li].region, &xb->rp.remote, xb->runs,
			      xb->n, err);
	xb->n = 0;
	return rc;
}

/* The caller's writers take the session lock for it once, not per batch. */
static void x_note_first_write(struct rdmae_session *s)
{
	if (!atomic_exchange(&s->x_first_write, true))
		sess_note_first_write(s);
}

/* Post [off, off + len) of b, cut at both sides' pieces, batched per piece pair. */
static int x_post_run(struct rdmae_session *s, unsigned int lane, struct sblock *b,
		      struct x_batch *xb, uint64_t off, uint64_t len, struct rdmae_err *err)
{
	int rc = 0;

	while (len && !rc) {
		size_t li = sess_piece_at(b->loc, b->nloc, off);
		const struct piece *lp = &b->loc[li];
		uint64_t seg = len;
		struct piece rp;

		/* Pinned as the writers reach it, one piece ahead (pre-flight pins the first). */
		rc = sess_src_pin_at(s, (size_t)(b - s->blk), li, err);
		if (rc)
			break;
		pthread_rwlock_rdlock(&s->rem_lock);
		rp = b->rem[sess_piece_at(b->rem, b->nrem, off)];
		pthread_rwlock_unlock(&s->rem_lock);
		if (seg > lp->off + lp->len - off)
			seg = lp->off + lp->len - off;
		if (seg > rp.off + rp.len - off)
			seg = rp.off + rp.len - off;
		if (xb->n && (xb->li != li || xb->rp.off != rp.off || xb->n == X_RUNS))
			rc = x_flush(s, lane, b, xb, err);
		if (rc)
			break;
		xb->li = li;
		xb->rp = rp;
		xb->runs[xb->n].local = off - lp->off;
		xb->runs[xb->n].remote = off - rp.off;
		xb->runs[xb->n].len = seg;
		xb->n++;
		off += seg;
		len -= seg;
	}
	return rc;
}

int rdmae_session_write_lane(struct rdmae_session *s, unsigned int lane, size_t block,
			     const struct rdmae_run *runs, size_t n, struct rdmae_err *err)
{
	struct x_batch xb;
	struct sblock *b;
	uint64_t bytes = 0;
	size_t i;
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "write: no session");
	rc = x_check(s, RDMAE_SOURCE, "write", err);
	if (!rc && rdmae_conn_error(s->conn, NULL))
		rc = x_failed(s, -ENOTCONN, err);
	if (rc)
		return rc;
	/* Lane 0 is the engine's: a WRITE there would not be ordered with anything of the caller's. */
	if (!lane || lane >= rdmae_conn_lanes(s->conn))
		return rdmae_err_set(err, -EINVAL, "write: lane %u is not the caller's (1..%u)",
				     lane, rdmae_conn_lanes(s->conn) - 1);
	if (block >= s->nblocks || (n && !runs))
		return rdmae_err_set(err, -EINVAL, "write: block %zu of %zu, %zu runs%s", block,
				     s->nblocks, n, n && !runs ? " and none given" : "");
	b = &s->blk[block];
	for (i = 0; i < n; i++) {
		const struct rdmae_run *r = &runs[i];

		if (r->remote != r->local || !r->len || r->local > b->b.len ||
		    r->len > b->b.len - r->local)
			return rdmae_err_set(err, -EINVAL, "write: block '%s': run %zu (%" PRIu64
					     " -> %" PRIu64 ", %" PRIu64 " bytes) is not inside the"
					     " block (%zu bytes) at the same offset on both sides",
					     b->b.name, i, r->local, r->remote, r->len, b->b.len);
	}
	xb.n = 0;
	for (i = 0; i < n && !rc; i++) {
		/* Not past what the destination has made writable: its DESCS first. */
		rc = x_wait(s, block, runs[i].local + runs[i].len, err);
		if (!rc)
			rc = x_post_run(s, lane, b, &xb, runs[i].local, runs[i].len, err);
		bytes += runs[i].len;
	}
	if (!rc) {
		x_note_first_write(s);
		rc = x_flush(s, lane, b, &xb, err);
	}
	if (!rc)
		atomic_fetch_add_explicit(&s->x_bytes, bytes, memory_order_relaxed);
	return rc ? x_failed(s, rc, err) : 0;
}

/* ---- page sums, both sides ---- */

static struct sblock *x_page(struct rdmae_session *s, size_t block, uint64_t page)
{
	if (!s || !s->external || block >= s->nblocks || page >= s->blk[block].npages)
		return NULL;
	return &s->blk[block];
}

int rdmae_session_page_sum(struct rdmae_session *s, size_t block, uint64_t page,
			   const void *ptr)
{
	struct sblock *b = x_page(s, block, page);
	uint64_t t0, dt;

	if (!b)
		return -EINVAL;
	if (!s->sums)
		return 0;
	if (!ptr)
		ptr = (const uint8_t *)b->b.host + page * b->b.page_size;
	t0 = rdmae_now_ns();
	rdmae_pagesums_store(&b->ps, page, rdmae_page_sum(ptr, b->b.page_size));
	dt = rdmae_now_ns() - t0;
	/* Relaxed counters, not s->lock: many threads hash at once, a page at a time. */
	atomic_fetch_add_explicit(&s->x_hash_ns, dt, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->x_hash_bytes, b->b.page_size, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->x_pages, 1, memory_order_relaxed);
	if (atomic_load_explicit(&s->x_stopped, memory_order_relaxed))
		atomic_fetch_add_explicit(&s->x_verify_ns, dt, memory_order_relaxed);
	return 0;
}

int rdmae_session_page_zero(struct rdmae_session *s, size_t block, uint64_t page)
{
	struct sblock *b = x_page(s, block, page);

	if (!b)
		return -EINVAL;
	if (!s->sums)
		return 0;
	rdmae_pagesums_store(&b->ps, page, b->ps.zero_sum);
	atomic_fetch_add_explicit(&s->x_zero_pages, 1, memory_order_relaxed);
	return 0;
}

/* ---- the switchover cost (source) ---- */

void rdmae_session_note_round_trip(struct rdmae_session *s, uint64_t ns)
{
	if (!s || !ns || !s->external || s->role != RDMAE_SOURCE)
		return;
	pthread_mutex_lock(&s->lock);
	s->x_rtt[s->x_rtt_next++ % RECENT_RTTS] = ns;
	pthread_mutex_unlock(&s->lock);
}

/* ns to move bytes at rate bytes/s, rounded up. */
static uint64_t ns_at(uint64_t bytes, double rate)
{
	double ns = (double)bytes / rate * (double)NSEC_PER_SEC;

	return ns >= (double)UINT64_MAX / 2 ? UINT64_MAX / 2 : (uint64_t)ns + (bytes ? 1 : 0);
}

uint64_t rdmae_session_switchover_cost_ns(struct rdmae_session *s, uint64_t final_bytes)
{
	uint64_t hash_ns, hash_bytes, rtt, x_rtt = 0, cost = 0;
	struct rdmae_pace_stats ps;
	double rate, bw = 0.0;
	size_t i;

	if (!s || s->role != RDMAE_SOURCE || atomic_load(&s->state) == ST_NEW)
		return 0;
	pthread_mutex_lock(&s->lock);
	hash_ns = s->st.hash_ns;
	hash_bytes = s->hashed_bytes;
	rtt = s->st.commit_ns;
	/* The engine's rounds: a fence-to-ack wait is a round trip plus the destination's work. */
	for (i = 0; !rtt && i < RECENT_ROUNDS; i++)
		if (s->recent[i].round && (!rtt || s->recent[i].ack_ns < rtt))
			rtt = s->recent[i].ack_ns;
	/*
	 * The caller's own exchanges (QEMU: each lane's SYNC acknowledgement).
	 * The least of the last few: the others also waited for WRITEs queued
	 * before them, which the caller counts as data. These are round trips
	 * through both processes, scheduling included: on a loaded host they
	 * are milliseconds where the NIC's WRITE latency is microseconds.
	 */
	for (i = 0; i < RECENT_RTTS; i++)
		if (s->x_rtt[i] && (!x_rtt || s->x_rtt[i] < x_rtt))
			x_rtt = s->x_rtt[i];
	pthread_mutex_unlock(&s->lock);
	if (!rtt)
		rtt = x_rtt;
	hash_ns += atomic_load_explicit(&s->x_hash_ns, memory_order_relaxed);
	hash_bytes += atomic_load_explicit(&s->x_hash_bytes, memory_order_relaxed);
	if (!rdmae_conn_pace_stats(s->conn, &ps)) {
		if (!rtt)
			rtt = ps.base_latency_ns;
		bw = ps.bandwidth;
	}
	if (!rtt)
		rtt = DEF_RTT_NS;
	if (!(bw > 0.0))
		bw = (double)DEF_RATE;
	rate = hash_ns && hash_bytes ? (double)hash_bytes * (double)NSEC_PER_SEC / (double)hash_ns
				     : (double)DEF_RATE;
	if (s->sums) {
		uint64_t pages = 0;

		for (i = 0; i < s->nblocks; i++)
			pages += s->blk[i].npages;
		/* The final pass hashed on both sides (the destination's rate taken to be ours). */
		cost += 2 * ns_at(final_bytes, rate);
		/* Every page sum digested, both sides at once. */
		cost += ns_at(pages * sizeof(uint64_t), rate);
	}
	cost += SWITCHOVER_RTTS * rtt;
	cost += ns_at(s->o.expected_state_bytes, bw);
	return cost ? cost : 1;
}
