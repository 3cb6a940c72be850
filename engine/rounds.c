/* SPDX-License-Identifier: MIT */
/*
 * The source's data path: the plan (downtime model), the rounds (dirty
 * bitmap to RDMA WRITEs and ZERO_RUNS, fence, ROUND_END, ack) and the
 * device state.
 *
 * perf/callgrind/pagecost.c includes this file to measure the walk as it
 * runs here; it links the other engine files from the library.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rdmae_runs.h"
#include "rdmae_write.h"
#include "pagesums.h"
#include "proto.h"
#include "rdmae_converge.h"
#include "rdmae_dirty.h"
#include "session_int.h"

#define NSEC_PER_SEC		1000000000ull

#define BATCH_BYTES_MAX		(64 * MIB)	/* per rdmae_write: bounds a rate-limit step */
#define BATCH_TIME_NS		(50 * NSEC_PER_MSEC)	/* capped: a batch is ~50 ms of data */
#define WALK_SEGMENT_BYTES	(1ull << 30)	/* scanned between progress checks */
#define SLEEP_SLICE_NS		(50 * NSEC_PER_MSEC)
#define STATE_CHUNK_MAX		(16 * MIB)

/* ---- plan ---- */

static uint64_t dirty_bytes(const struct rdmae_session *s, const uint64_t *const *bitmaps,
			    uint64_t *pages)
{
	uint64_t bytes = 0, p = 0;
	size_t i;

	for (i = 0; i < s->nblocks; i++) {
		uint64_t n = rdmae_bitmap_count(bitmaps[i], s->blk[i].npages);

		p += n;
		bytes += n * s->blk[i].b.page_size;
	}
	*pages = p;
	return bytes;
}

static int check_bitmaps(const struct rdmae_session *s, const uint64_t *const *bitmaps)
{
	size_t i;

	if (!bitmaps)
		return -EINVAL;
	for (i = 0; i < s->nblocks; i++)
		if (!bitmaps[i])
			return -EINVAL;
	return 0;
}

/*
 * The downtime model's figures (rdmae_converge.h), from the last rounds
 * only: the final round resembles the rounds just before it far more than
 * the first, full one. Under s->lock.
 */
static void downtime_model(const struct rdmae_session *s, struct rdmae_downtime_model *m)
{
	uint64_t bytes = 0, ns = 0, pages = 0, zeros = 0, rtt = UINT64_MAX, total = 0;
	size_t i;

	memset(m, 0, sizeof(*m));
	for (i = 0; i < RECENT_ROUNDS; i++)
		if (s->recent[i].round && s->recent[i].ack_ns < rtt)
			rtt = s->recent[i].ack_ns;
	if (rtt == UINT64_MAX)
		return;
	for (i = 0; i < RECENT_ROUNDS; i++) {
		const struct rdmae_round_stats *r = &s->recent[i];

		if (!r->round)
			continue;
		pages += r->pages;
		zeros += r->zero_pages;
		/* A round with no data says nothing about the data rate. */
		if (r->bytes) {
			bytes += r->bytes;
			ns += r->duration_ns > rtt ? r->duration_ns - rtt : 1;
		}
	}
	m->data_bw = rdmae_bandwidth(bytes, ns);
	/* Only zero pages lately: move data at the first round's rate. */
	if (!(m->data_bw > 0.0))
		m->data_bw = s->st.throughput;
	m->zero_ratio = pages ? (double)zeros / (double)pages : 0.0;
	m->rtt_ns = rtt;
	m->mem_rate = rdmae_bandwidth(s->hashed_bytes, s->st.hash_ns);
	/*
	 * What the destination still hashes of the rounds before (it hashes
	 * after acking): its answer to the final round waits for it. Its rate
	 * is taken to be ours (the same hash over the same pages).
	 */
	if (s->sums && s->peer_backlog_bytes && m->mem_rate > 0.0) {
		double done = (double)(rdmae_now_ns() - s->peer_backlog_ns) / (double)NSEC_PER_SEC *
			      m->mem_rate;

		if (done < (double)s->peer_backlog_bytes)
			m->peer_hash_bytes = (uint64_t)((double)s->peer_backlog_bytes - done);
	}
	m->state_bytes = s->o.expected_state_bytes;
	m->verify = s->sums;
	for (i = 0; i < s->nblocks; i++)
		total += s->blk[i].npages;
	m->sum_pages = s->sums ? total : 0;
}

int rdmae_session_plan(struct rdmae_session *s, const uint64_t *const *bitmaps,
		       struct rdmae_plan *plan)
{
	struct rdmae_downtime_model dm;
	uint64_t pages, bytes;

	if (!s || !plan || s->role != RDMAE_SOURCE || s->external || check_bitmaps(s, bitmaps))
		return -EINVAL;
	bytes = dirty_bytes(s, bitmaps, &pages);

	pthread_mutex_lock(&s->lock);
	downtime_model(s, &dm);
	plan->dirty_pages = pages;
	plan->dirty_bytes = bytes;
	plan->expected_downtime_ns = rdmae_downtime_estimate_ns(&dm, pages, bytes);
	plan->converged = plan->expected_downtime_ns != UINT64_MAX &&
			  plan->expected_downtime_ns <= atomic_load(&s->downtime_ns);
	s->st.remaining_bytes = bytes;
	s->st.expected_downtime_ns = plan->expected_downtime_ns;
	if (s->last_rs.round) {
		s->last_rs.remaining_bytes = bytes;
		s->last_rs.expected_downtime_ns = plan->expected_downtime_ns;
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int rdmae_session_last_round(struct rdmae_session *s, struct rdmae_round_stats *rs)
{
	if (!s || !rs)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	*rs = s->last_rs;
	pthread_mutex_unlock(&s->lock);
	return rs->round ? 0 : -ENOENT;
}

/* ---- rounds (source) ---- */

/* Per-round state of the source's walk. */
struct round_ctx {
	struct rdmae_session *s;
	struct rdmae_err *err;
	unsigned int round;
	bool final;			/* the VM is stopped: hashing here is in the downtime */
	size_t block;
	uint64_t seg_first;		/* first page of the segment being walked */
	size_t nruns;
	uint64_t batch_bytes;
	uint64_t batch_cap;
	size_t nzero;
	struct rdmae_ratelimit rl;
	uint64_t data_pages;
	uint64_t bytes;
	uint64_t zero_pages;
	uint64_t runs;
	size_t li, ri;			/* the batch's local and remote piece: one of each */
	/*
	 * Where li and ri overlap, in block win_block: an offset inside needs
	 * no lookup, wait or pin (pieces are only ever added, and li's pin
	 * was taken when the window was set), which keeps the per-run cost
	 * of cutting at pieces off the hot path.
	 */
	size_t win_block;
	uint64_t win_lo, win_hi;
	/* The batch's pages, kept across rdmae_write (which coalesces the runs in place). */
	struct zrun posted[RUN_BATCH];
};

/* Tell a waiting destination that the round goes on; bail out once stopped. */
static int progress_tick(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	uint8_t msg[RDMAE_MSG_SMALL_MAX];

	if (atomic_load(&s->stop))
		return sess_stopped_err(s, rctx->err);
	if (rdmae_now_ns() - s->last_send_ns < s->progress_ns)
		return 0;
	return sess_send_msg(s, msg, rdmae_msg_progress_encode(msg, rctx->round, rctx->bytes),
			     rctx->err);
}

static int sleep_ns(struct round_ctx *rctx, uint64_t ns)
{
	uint64_t deadline = rdmae_now_ns() + ns, t;

	while ((t = rdmae_now_ns()) < deadline) {
		uint64_t d = deadline - t < SLEEP_SLICE_NS ? deadline - t : SLEEP_SLICE_NS;
		struct timespec ts = {
			.tv_sec = (time_t)(d / NSEC_PER_SEC),
			.tv_nsec = (long)(d % NSEC_PER_SEC),
		};
		int ret;

		nanosleep(&ts, NULL);
		ret = progress_tick(rctx);
		if (ret)
			return ret;
		/* A new cap (set_max_bandwidth) counts from now: stop paying the old one. */
		if (atomic_load(&rctx->s->max_bw) != rctx->rl.rate)
			return 0;
	}
	return 0;
}

/*
 * Tell the destination which pages the batch about to be posted writes, so
 * that it hashes them after the round's fence, and keep them to be hashed
 * here once posted.
 */
static int announce_batch(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	uint64_t ps = s->blk[rctx->block].b.page_size;
	size_t i, len;

	for (i = 0; i < rctx->nruns; i++) {
		rctx->posted[i].first = s->runs[i].local / ps;
		rctx->posted[i].n = s->runs[i].len / ps;
		rdmae_msg_zero_runs_put(s->zmsg, (uint32_t)i, rctx->posted[i].first,
					rctx->posted[i].n);
	}
	len = rdmae_msg_data_runs_finish(s->zmsg, (uint32_t)rctx->block, (uint32_t)rctx->nruns);
	return sess_send_msg(s, s->zmsg, len, rctx->err);
}

/*
 * Hash the batch just posted, while the NIC reads it: on hardware that
 * offloads the transfer the hashing then costs CPU but no time. A page the
 * guest changes after this round's dirty log was taken, before or after the
 * hash or the NIC's read, is dirty in the next log and is sent and hashed
 * again; in the final round the guest is stopped, so hash and WRITE read
 * the same bytes.
 */
static void hash_batch(struct round_ctx *rctx, size_t n)
{
	struct rdmae_session *s = rctx->s;
	struct sblock *b = &s->blk[rctx->block];
	uint64_t t0 = rdmae_now_ns();
	size_t i;

	for (i = 0; i < n; i++)
		rdmae_pagesums_hash(&b->ps, b->b.host, rctx->posted[i].first, rctx->posted[i].n);
	sess_account_hash(s, t0, rctx->final, rctx->batch_bytes);
}

static int flush_data(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	struct sblock *b = &s->blk[rctx->block];
	const struct piece *lp, *rp;
	uint64_t wait;
	size_t n, i;
	int ret;

	if (!rctx->nruns)
		return 0;
	lp = &b->loc[rctx->li];
	/* Charge before posting: the cap holds at the moment the bytes leave. */
	wait = rdmae_ratelimit_charge(&rctx->rl, rctx->batch_bytes, rdmae_now_ns());
	if (wait) {
		ret = sleep_ns(rctx, wait);
		if (ret)
			return ret;
	}
	/* on_data already merged neighbours; rdmae_write sizes the WRs. */
	n = rctx->nruns;
	ret = s->sums ? announce_batch(rctx) : 0;
	if (ret)
		return ret;
	/* Block offsets (announced as such) to the batch's pieces' own. */
	rp = &b->rem[rctx->ri];
	for (i = 0; i < n; i++) {
		s->runs[i].local -= lp->off;
		s->runs[i].remote -= rp->off;
	}
	sess_note_first_write(s);
	ret = rdmae_write(s->conn, lp->region, &rp->remote, s->runs, n, rctx->err);
	if (ret)
		return ret;
	if (s->sums)
		hash_batch(rctx, n);
	rctx->runs += n;
	rctx->bytes += rctx->batch_bytes;
	rctx->nruns = 0;
	rctx->batch_bytes = 0;
	return progress_tick(rctx);
}

static int flush_zero(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	size_t i, len;

	if (!rctx->nzero)
		return 0;
	for (i = 0; i < rctx->nzero; i++)
		rdmae_msg_zero_runs_put(s->zmsg, (uint32_t)i, s->zruns[i].first, s->zruns[i].n);
	len = rdmae_msg_zero_runs_finish(s->zmsg, (uint32_t)rctx->block, (uint32_t)rctx->nzero);
	rctx->nzero = 0;
	return sess_send_msg(s, s->zmsg, len, rctx->err);
}

static uint64_t batch_cap(uint64_t rate, size_t ps)
{
	uint64_t cap = BATCH_BYTES_MAX;

	if (rate) {
		uint64_t c = rate / (NSEC_PER_SEC / BATCH_TIME_NS);

		if (c < cap)
			cap = c;
	}
	cap -= cap % ps;
	return cap ? cap : ps;
}

/*
 * A bandwidth cap set while the round runs: the batch built so far goes at
 * the old cap, everything after it at the new one, counted from now.
 */
static int adopt_rate(struct round_ctx *rctx)
{
	uint64_t rate = atomic_load(&rctx->s->max_bw);
	int ret;

	if (rate == rctx->rl.rate)
		return 0;
	ret = flush_data(rctx);
	if (ret)
		return ret;
	rdmae_ratelimit_init(&rctx->rl, rate, rdmae_now_ns());
	rctx->batch_cap = batch_cap(rate, rctx->s->blk[rctx->block].b.page_size);
	return 0;
}

/*
 * The destination has not made off writable yet: post what is batched, then
 * take its DESCS until it has. A destination that stops advertising fails
 * the round with the session's timeout, naming the block and how far it got.
 */
static int wait_advertised(struct round_ctx *rctx, uint64_t off)
{
	struct rdmae_session *s = rctx->s;
	const struct sblock *b = &s->blk[rctx->block];
	int ret = flush_data(rctx);

	while (!ret && s->advertised[rctx->block] <= off) {
		struct rdmae_msg m;
		void *buf;

		ret = sess_recv_any(s, s->slow_timeout_ms, &buf, &m, rctx->err);
		if (ret == -ETIMEDOUT && !rdmae_conn_error(s->conn, NULL))
			return rdmae_err_set(rctx->err, -ETIMEDOUT,
					     "round %u: block '%s': the destination made %" PRIu64
					     " of its %zu bytes writable and no more in %d ms",
					     rctx->round, b->b.name, s->advertised[rctx->block],
					     b->b.len, s->slow_timeout_ms);
		if (ret)
			return ret;
		if (m.type == RDMAE_MSG_CANCEL)
			ret = sess_peer_cancelled(s, &m, rctx->err);
		else if (m.type != RDMAE_MSG_DESCS)
			ret = rdmae_err_set(rctx->err, -EPROTO,
					    "round %u: block '%s': unexpected %s while waiting for"
					    " DESCS", rctx->round, b->b.name,
					    rdmae_msg_type_name(m.type));
		free(buf);
	}
	return ret;
}

/*
 * The pieces bytes [off, off + *len) go to: cut *len at the end of our
 * piece and of the destination's, wait for the destination's, pin ours
 * and the one after it (PIN_ALL), and post the batch first when it is for
 * other pieces (one rdmae_write covers one region each side).
 */
static int pieces_for(struct round_ctx *rctx, uint64_t off, uint64_t *len)
{
	struct rdmae_session *s = rctx->s;
	struct sblock *b = &s->blk[rctx->block];
	size_t li, ri;
	uint64_t end;
	int ret;

	if (rctx->win_block == rctx->block && off >= rctx->win_lo && off < rctx->win_hi) {
		if (*len > rctx->win_hi - off)
			*len = rctx->win_hi - off;
		return 0;
	}
	if (s->advertised[rctx->block] <= off) {
		ret = wait_advertised(rctx, off);
		if (ret)
			return ret;
	}
	li = sess_piece_at(b->loc, b->nloc, off);
	ri = sess_piece_at(b->rem, b->nrem, off);
	if (b->nready < li + 2 && b->nready < b->nloc) {
		ret = sess_src_pin(s, rctx->block, li + 1, rctx->err);
		/* Pinning a piece can take a while: the destination waits with its plain timeout. */
		if (!ret)
			ret = progress_tick(rctx);
		if (ret)
			return ret;
	}
	if (rctx->nruns && (li != rctx->li || ri != rctx->ri)) {
		ret = flush_data(rctx);
		if (ret)
			return ret;
	}
	rctx->li = li;
	rctx->ri = ri;
	end = b->loc[li].off + b->loc[li].len;
	if (b->rem[ri].off + b->rem[ri].len < end)
		end = b->rem[ri].off + b->rem[ri].len;
	rctx->win_block = rctx->block;
	rctx->win_lo = b->loc[li].off > b->rem[ri].off ? b->loc[li].off : b->rem[ri].off;
	rctx->win_hi = end;
	if (*len > end - off)
		*len = end - off;
	return 0;
}

static int on_data(void *arg, size_t first_page, size_t npages)
{
	struct round_ctx *rctx = arg;
	struct rdmae_session *s = rctx->s;
	uint64_t ps = rctx->s->blk[rctx->block].b.page_size;
	uint64_t off = (rctx->seg_first + first_page) * ps, len = (uint64_t)npages * ps;
	int ret;

	ret = adopt_rate(rctx);
	if (ret)
		return ret;
	rctx->data_pages += npages;
	/* Split at the batch cap (a multiple of the page size) so that pieces stay whole pages. */
	while (len) {
		uint64_t piece = rctx->batch_cap - rctx->batch_bytes;
		struct rdmae_run *r;

		if (piece > len)
			piece = len;
		ret = pieces_for(rctx, off, &piece);
		if (ret)
			return ret;
		r = s->runs + rctx->nruns;
		if (rctx->nruns && r[-1].local + r[-1].len == off) {
			r[-1].len += piece;
		} else {
			r->local = off;
			r->remote = off;
			r->len = piece;
			rctx->nruns++;
		}
		rctx->batch_bytes += piece;
		off += piece;
		len -= piece;
		if (rctx->nruns == RUN_BATCH || rctx->batch_bytes >= rctx->batch_cap) {
			ret = flush_data(rctx);
			if (ret)
				return ret;
		}
	}
	return 0;
}

static int on_zero(void *arg, size_t first_page, size_t npages)
{
	struct round_ctx *rctx = arg;
	struct zrun *z = rctx->s->zruns;
	uint64_t first = rctx->seg_first + first_page;

	rctx->zero_pages += npages;
	if (rctx->s->sums)
		rdmae_pagesums_set_zero(&rctx->s->blk[rctx->block].ps, first, npages);
	/* Walk segments cut runs; glue them back. */
	if (rctx->nzero && z[rctx->nzero - 1].first + z[rctx->nzero - 1].n == first) {
		z[rctx->nzero - 1].n += npages;
		return 0;
	}
	z[rctx->nzero].first = first;
	z[rctx->nzero].n = npages;
	if (++rctx->nzero == ZERO_BATCH)
		return flush_zero(rctx);
	return 0;
}

static int walk_block(struct round_ctx *rctx, const uint64_t *bitmap)
{
	struct rdmae_session *s = rctx->s;
	struct sblock *b = &s->blk[rctx->block];
	size_t ps = b->b.page_size;
	uint64_t seg = WALK_SEGMENT_BYTES / ps, first;
	int ret;

	/* Segments start on bitmap words. */
	seg -= seg % RDMAE_BITS_PER_WORD;
	if (!seg)
		seg = RDMAE_BITS_PER_WORD;
	for (first = 0; first < b->npages; first += seg) {
		struct rdmae_dirty_walk w = {
			.bitmap = bitmap + first / RDMAE_BITS_PER_WORD,
			.npages = b->npages - first < seg ? b->npages - first : seg,
			.page_size = ps,
			.base = (const uint8_t *)b->b.host + first * ps,
			.detect_zero = !s->o.no_zero_detect,
			.data = on_data,
			.zero = on_zero,
			.arg = rctx,
		};

		rctx->seg_first = first;
		ret = rdmae_dirty_walk(&w);
		if (!ret)
			ret = progress_tick(rctx);
		if (ret) {
			if (!rctx->err->code)
				rdmae_err_set(rctx->err, ret,
					      "round %u: block '%s': dirty walk failed",
					      rctx->round, b->b.name);
			return ret;
		}
	}
	/* ZERO_RUNS name one block: flush both batches before the next. */
	ret = flush_data(rctx);
	if (!ret)
		ret = flush_zero(rctx);
	return ret;
}

static int wait_ack(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	struct rdmae_msg m;
	void *buf;
	int ret;

	ret = sess_recv_msg(s, s->slow_timeout_ms, &buf, &m, rctx->err);
	if (ret)
		return ret;
	if (m.type == RDMAE_MSG_ROUND_ACK && m.u.round_ack.round == rctx->round) {
		s->peer_backlog_bytes = (uint64_t)m.u.round_ack.hash_backlog_mib << 20;
		s->peer_backlog_ns = rdmae_now_ns();
		ret = 0;
	}
	else if (m.type == RDMAE_MSG_CANCEL)
		ret = sess_peer_cancelled(s, &m, rctx->err);
	else if (m.type == RDMAE_MSG_ROUND_ACK)
		ret = rdmae_err_set(rctx->err, -EPROTO, "round %u: ROUND_ACK for round %" PRIu32,
				    rctx->round, m.u.round_ack.round);
	else
		ret = rdmae_err_set(rctx->err, -EPROTO,
				    "round %u: unexpected %s while waiting for ROUND_ACK",
				    rctx->round, rdmae_msg_type_name(m.type));
	free(buf);
	return ret;
}


static int do_round(struct rdmae_session *s, const uint64_t *const *bitmaps, bool final,
		    struct rdmae_round_stats *r, struct rdmae_err *err)
{
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	struct round_ctx rctx = { .s = s, .err = err };
	struct rdmae_msg_round_end re;
	uint64_t t0 = rdmae_now_ns(), t_end, pages, dbytes, dur;
	uint32_t seq = 0;
	int ret;

	rctx.round = s->st.rounds + 1;
	rctx.final = final;
	dbytes = dirty_bytes(s, bitmaps, &pages);
	rdmae_ratelimit_init(&rctx.rl, atomic_load(&s->max_bw), t0);

	for (rctx.block = 0; rctx.block < s->nblocks; rctx.block++) {
		rctx.batch_cap = batch_cap(rctx.rl.rate, s->blk[rctx.block].b.page_size);
		ret = walk_block(&rctx, bitmaps[rctx.block]);
		if (ret)
			return ret;
	}
	/*
	 * Pin-all's promise: by the end of round 1 everything is pinned (a
	 * no-op after). Piece by piece with PROGRESS between: pinning what a
	 * partial first bitmap left can take seconds, and a destination told
	 * nothing meanwhile would time out its wait.
	 */
	for (size_t i = 0; i < s->nblocks && s->mode == RDMAE_REG_PIN_ALL; i++) {
		for (size_t k = s->blk[i].nready; k < s->blk[i].nloc; k++) {
			ret = sess_src_pin(s, i, k, err);
			if (!ret)
				ret = progress_tick(&rctx);
			if (ret)
				return ret;
		}
	}
	/*
	 * And the destination's, taken here: every block is writable by the
	 * end of round 1. Round 1 waits only for pieces it writes into, so a
	 * guest of mostly zero pages would otherwise reach its final round,
	 * with the VM stopped, while the destination still registers, and a
	 * page dirtied high up would wait for that inside the downtime.
	 */
	for (rctx.block = 0; rctx.block < s->nblocks; rctx.block++) {
		size_t len = s->blk[rctx.block].b.len;

		if (len && s->advertised[rctx.block] < len) {
			ret = wait_advertised(&rctx, len - 1);
			if (ret)
				return ret;
		}
	}

	/*
	 * Ordering: the fence follows every WRITE of this round on every lane,
	 * ROUND_END follows every ZERO_RUNS on the ordered message channel, and
	 * the destination acks only after the fence has arrived and every
	 * ZERO_RUNS is applied. Nothing of the next round leaves before the ack,
	 * so a page's zero-fill and its WRITEs of different rounds cannot pass
	 * each other.
	 */
	ret = rdmae_fence(s->conn, &seq, err);
	if (ret)
		return ret;
	memset(&re, 0, sizeof(re));
	re.round = rctx.round;
	re.fence_seq = seq;
	re.flags = final ? RDMAE_ROUND_FINAL : 0;
	re.pages = pages;
	re.bytes = rctx.bytes;
	re.zero_pages = rctx.zero_pages;
	re.runs = rctx.runs;
	re.duration_ns = rdmae_now_ns() - t0;
	ret = sess_send_msg(s, msg, rdmae_msg_round_end_encode(msg, &re), err);
	t_end = rdmae_now_ns();
	if (!ret)
		ret = wait_ack(&rctx);
	if (ret)
		return ret;
	dur = rdmae_now_ns() - t0;
	if (!dur)
		dur = 1;

	memset(r, 0, sizeof(*r));
	r->round = rctx.round;
	r->pages = pages;
	r->bytes = rctx.bytes;
	r->zero_pages = rctx.zero_pages;
	r->runs = rctx.runs;
	r->duration_ns = dur;
	r->ack_ns = t0 + dur - t_end;
	r->bandwidth = rdmae_bandwidth(rctx.bytes, dur);

	pthread_mutex_lock(&s->lock);
	/* Bytes dirtied between the starts of the previous round and this one. */
	if (s->prev_round_start_ns && t0 > s->prev_round_start_ns)
		r->dirty_rate = rdmae_bandwidth(dbytes, t0 - s->prev_round_start_ns);
	s->prev_round_start_ns = t0;
	s->sum_round_ns += dur;
	s->recent[(rctx.round - 1) % RECENT_ROUNDS] = *r;
	s->st.rounds = rctx.round;
	s->st.transferred_bytes += rctx.bytes;
	s->st.normal_pages += rctx.data_pages;
	s->st.zero_pages += rctx.zero_pages;
	s->st.throughput = rdmae_bandwidth(s->st.transferred_bytes, s->sum_round_ns);
	s->st.dirty_rate = r->dirty_rate;
	if (!final)
		s->precopy_rounds++;
	s->last_rs = *r;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int rdmae_session_round(struct rdmae_session *s, const uint64_t *const *bitmaps,
			struct rdmae_round_stats *rs, struct rdmae_err *err)
{
	struct rdmae_err le = { 0 };
	struct rdmae_err *e = err ? err : &le;
	struct rdmae_round_stats r;
	bool stopped;
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "round: no session");
	rdmae_err_clear(e);
	rc = sess_enter(s, RDMAE_SOURCE, ST_READY, "round", e);
	if (rc)
		return rc;
	if (s->external) {
		rc = rdmae_err_set(e, -EINVAL, "round: the session's data path is external (the "
				   "caller moves the pages: rdmae_session_write_lane)");
		goto out;
	}
	if (check_bitmaps(s, bitmaps)) {
		rc = rdmae_err_set(e, -EINVAL, "round: a block has no dirty bitmap");
		goto out;
	}
	pthread_mutex_lock(&s->lock);
	stopped = s->stopped;
	pthread_mutex_unlock(&s->lock);

	/* The final round, with the VM stopped, is always allowed. */
	if (!stopped && s->precopy_rounds >= s->o.max_rounds) {
		struct rdmae_plan p = { 0 };

		if (rdmae_session_plan(s, bitmaps, &p) || !p.converged) {
			char dt[32];

			if (p.expected_downtime_ns == UINT64_MAX)
				snprintf(dt, sizeof(dt), "unknown");
			else
				snprintf(dt, sizeof(dt), "%" PRIu64 " ms",
					 (uint64_t)(p.expected_downtime_ns / NSEC_PER_MSEC));
			/*
			 * Not fatal: the caller cancels or goes on with the VM
			 * running. With nothing dirty, no further round can help:
			 * the fixed costs alone are over the limit, so say which.
			 */
			rc = rdmae_err_set(e, -ETIME,
					   "did not converge after %u rounds: %.1f MiB dirty,"
					   " expected downtime %s > limit %" PRIu64 " ms%s",
					   s->precopy_rounds, (double)p.dirty_bytes / (double)MIB,
					   dt, (uint64_t)(atomic_load(&s->downtime_ns) / NSEC_PER_MSEC),
					   p.dirty_bytes ? "" : " with nothing dirty: the device state,"
					   " the hashing and the round trips alone exceed it; raise"
					   " the limit");
			goto out;
		}
	}
	rc = do_round(s, bitmaps, stopped, &r, e);
	if (rc) {
		if (atomic_load(&s->state) != ST_FAILED)
			rc = sess_fail(s, rc, e);
		goto out;
	}
	if (stopped)
		s->final_round = true;
	if (rs)
		*rs = r;
out:
	sess_leave(s);
	return rc;
}

void rdmae_session_mark_stopped(struct rdmae_session *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	if (!s->stopped) {
		s->stopped = true;
		s->stopped_ns = rdmae_now_ns();
	}
	pthread_mutex_unlock(&s->lock);
	atomic_store(&s->x_stopped, true);
}

/* ---- device state ---- */

int rdmae_session_send_state(struct rdmae_session *s, const void *buf, size_t len,
			     struct rdmae_err *err)
{
	struct rdmae_err le = { 0 };
	struct rdmae_err *e = err ? err : &le;
	size_t chunk, off = 0;
	uint8_t *msg;
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "send state: no session");
	rdmae_err_clear(e);
	rc = sess_enter(s, RDMAE_SOURCE, ST_READY, "send state", e);
	if (rc)
		return rc;
	if (!len)
		goto out;
	if (!buf) {
		rc = rdmae_err_set(e, -EINVAL, "send state: no buffer for %zu bytes", len);
		goto out;
	}
	chunk = s->max_msg - RDMAE_MSG_STATE_DATA_OFF;
	if (chunk > STATE_CHUNK_MAX)
		chunk = STATE_CHUNK_MAX;
	if (chunk > len)
		chunk = len;
	msg = malloc(RDMAE_MSG_STATE_DATA_OFF + chunk);
	if (!msg) {
		rc = rdmae_err_set(e, -ENOMEM, "send state: out of memory for a %zu-byte chunk",
				   chunk);
		goto out;
	}
	/* The message channel is ordered: the state lands after every round sent before it. */
	while (off < len) {
		size_t n = len - off < chunk ? len - off : chunk;

		rdmae_msg_state_encode(msg, s->state_off, (uint32_t)n);
		memcpy(msg + RDMAE_MSG_STATE_DATA_OFF, (const uint8_t *)buf + off, n);
		rc = sess_send_msg(s, msg, RDMAE_MSG_STATE_DATA_OFF + n, e);
		if (rc)
			break;
		off += n;
		s->state_off += n;
		pthread_mutex_lock(&s->lock);
		s->st.state_bytes += n;
		pthread_mutex_unlock(&s->lock);
	}
	free(msg);
	if (rc)
		rc = sess_fail(s, rc, e);
out:
	sess_leave(s);
	return rc;
}
