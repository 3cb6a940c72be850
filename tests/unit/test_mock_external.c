/* SPDX-License-Identifier: MIT */
/*
 * The external data path (issue 19, E2-E5) end to end: a source and a
 * destination session over two connections on the mock verbs layer, wired
 * to each other by a send hook that places every WRITE in the peer's memory
 * and delivers every SEND to the peer's QP of the same lane. Nothing of
 * the engine is stubbed.
 *
 * The caller plays QEMU's multifd: one sender thread per lane 1..n-1
 * WRITEs pages with rdmae_session_write_lane and page-sums them, then sends
 * a packet naming them on the same lane; one receiver thread per lane on
 * the destination reads the packets and page-sums the pages they name (or
 * zero-fills and records zero pages). A sync packet is acked by the
 * receiver, as QEMU's per-lane SYNC ACK. The source then marks the VM
 * stopped, resends what changed, sends device state and completes; the
 * destination commits, verified.
 *
 * What is pinned: the migration commits with the destination's RAM equal
 * to the source's on every page sent; a page never sent on either side is
 * not compared; a page corrupted on the destination before its sum, or
 * named only on the destination, fails the commit naming the block and the
 * page on both sides; a peer in the other data path is refused in
 * pre-flight on both sides with both paths named; a cancel reaches the
 * destination and the caller's writers; the calls refuse what they must;
 * and the switchover cost is positive and grows with the final pass and
 * the device state.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "internal.h"
#include "session_int.h"
#include "mock_fixture.h"
#include "mock_verbs.h"

#define LANES		3		/* lane 0 the engine's, 1..2 the caller's */
#define PS		((size_t)4096)
#define BLK0_PAGES	48u
#define BLK1_PAGES	16u
#define SKIPPED_PAGE	7u		/* block 0: never sent (free-page hinting) */
#define CORRUPT_PAGE	13u		/* block 0: corrupted on the destination */
#define EXTRA_PAGE	SKIPPED_PAGE	/* block 0: summed on the destination only */
#define LOST_PAGE	5u		/* block 0: changed at the source after its last send */
#define LATE_PAGE	10u		/* block 0: overwritten at the destination after placement */

static uint8_t src0[BLK0_PAGES * PS] __attribute__((aligned(4096)));
static uint8_t src1[BLK1_PAGES * PS] __attribute__((aligned(4096)));
static uint8_t dst0[BLK0_PAGES * PS] __attribute__((aligned(4096)));
static uint8_t dst1[BLK1_PAGES * PS] __attribute__((aligned(4096)));

static const struct rdmae_block src_blocks[2] = {
	{ .name = "pc.ram", .host = src0, .len = sizeof(src0), .page_size = PS },
	{ .name = "vga.vram", .host = src1, .len = sizeof(src1), .page_size = PS },
};
/* The destination lists them in another order: pre-flight matches by name. */
static const struct rdmae_block dst_blocks[2] = {
	{ .name = "vga.vram", .host = dst1, .len = sizeof(dst1), .page_size = PS },
	{ .name = "pc.ram", .host = dst0, .len = sizeof(dst0), .page_size = PS },
};

/* ---- the wire: two mock connections, each one's sends land at the other ---- */

struct wire {
	struct rdmae_conn *a, *b;
};

static void wire_hook(const struct mock_send *ms, void *arg)
{
	struct wire *w = arg;
	struct rdmae_conn *to;
	struct ibv_qp *qp = (struct ibv_qp *)(uintptr_t)ms->qp;

	if (ms->lane >= LANES)
		return;
	if (qp == mock_lane_qp(w->a, ms->lane))
		to = w->b;
	else if (qp == mock_lane_qp(w->b, ms->lane))
		to = w->a;
	else
		return;
	/* A QP in error flushed it already: nothing goes out. */
	if (mock_qp_state(qp) == IBV_QPS_ERR)
		return;
	if (ms->opcode == IBV_WR_RDMA_WRITE) {
		/* Registered addresses are the mappings' own (mock ibv_reg_mr). */
		memcpy((void *)(uintptr_t)ms->remote_addr, (const void *)(uintptr_t)ms->addr,
		       ms->length);
	} else if (ms->opcode == IBV_WR_SEND) {
		struct ibv_qp *peer = mock_lane_qp(to, ms->lane);

		if (ms->ncopy != ms->length) {
			fprintf(stderr, "wire: a SEND of %u bytes, more than the mock copies\n",
				ms->length);
			abort();
		}
		if (mock_deliver(peer, ms->data, ms->ncopy) && mock_qp_state(peer) != IBV_QPS_ERR) {
			fprintf(stderr, "wire: lane %u: no receive posted at the peer\n", ms->lane);
			abort();
		}
	}
	mock_complete_sends(qp, 1);
}

struct pair {
	struct wire w;
	struct fixture_progress pa, pb;
	struct rdmae_session *src, *dst;
};

/* The source's registration mode for the next pair_up (AUTO: pin-all). */
static enum rdmae_reg_mode src_reg_mode = RDMAE_REG_AUTO;

static void pair_up(struct pair *p, enum rdmae_data_path src_path, enum rdmae_data_path dst_path,
		    bool verify)
{
	struct rdmae_session_opts o;
	struct rdmae_err err = { 0 };

	memset(p, 0, sizeof(*p));
	/* ODP at the destination: nothing pinned there, so no memlock limit applies. */
	mock_set_odp_write(true);
	p->w.a = mock_conn(LANES, NULL);
	p->w.b = mock_conn(LANES, NULL);
	assert_non_null(p->w.a);
	assert_non_null(p->w.b);
	mock_set_send_hook(wire_hook, &p->w);
	fixture_progress_start(&p->pa, p->w.a);
	fixture_progress_start(&p->pb, p->w.b);
	rdmae_session_opts_default(&o);
	o.timeout_ms = 5000;
	o.data_path = src_path;
	o.no_verify = !verify;
	o.expected_state_bytes = 4096;
	o.reg_mode = src_reg_mode;
	if (rdmae_session_create(&p->src, RDMAE_SOURCE, p->w.a, src_blocks, 2, &o, &err))
		fail_msg("source session: %s", err.msg);
	rdmae_session_opts_default(&o);
	o.timeout_ms = 5000;
	o.data_path = dst_path;
	if (rdmae_session_create(&p->dst, RDMAE_DEST, p->w.b, dst_blocks, 2, &o, &err))
		fail_msg("destination session: %s", err.msg);
}

static void pair_down(struct pair *p)
{
	rdmae_session_cancel(p->src, "test over");
	rdmae_session_cancel(p->dst, "test over");
	rdmae_session_destroy(p->src);
	rdmae_session_destroy(p->dst);
	fixture_progress_stop(&p->pa);
	fixture_progress_stop(&p->pb);
	mock_set_send_hook(NULL, NULL);
	rdmae_conn_destroy(p->w.a);
	rdmae_conn_destroy(p->w.b);
	fixture_assert_clean();
}

/* ---- the destination's engine thread: pre-flight, then steps until the end ---- */

struct dest_run {
	struct rdmae_session *s;
	pthread_t th;
	int preflight_rc;
	int rc;
	bool committed, verified;
	char state[64];
	size_t state_len;
	struct rdmae_err err;
	atomic_bool preflighted;
	atomic_bool hold;		/* after pre-flight, take no step (advertise nothing) until cleared */
};

static void *dest_main(void *arg)
{
	struct dest_run *d = arg;

	d->preflight_rc = rdmae_session_preflight(d->s, &d->err);
	atomic_store(&d->preflighted, true);
	if (d->preflight_rc)
		return NULL;
	while (atomic_load(&d->hold))
		sched_yield();
	for (;;) {
		struct rdmae_dest_event ev;

		d->rc = rdmae_session_dest_step(d->s, &ev, &d->err);
		if (d->rc == -ETIMEDOUT)
			continue;
		if (d->rc)
			return NULL;
		if (ev.kind == RDMAE_EV_STATE && d->state_len + ev.len <= sizeof(d->state)) {
			memcpy(d->state + d->state_len, ev.data, ev.len);
			d->state_len += ev.len;
		}
		if (ev.kind == RDMAE_EV_COMMITTED) {
			d->committed = true;
			d->verified = ev.verified;
			return NULL;
		}
	}
}

static void dest_start(struct dest_run *d, struct rdmae_session *s)
{
	memset(d, 0, sizeof(*d));
	d->s = s;
	atomic_init(&d->preflighted, false);
	atomic_init(&d->hold, false);
	assert_int_equal(pthread_create(&d->th, NULL, dest_main, d), 0);
}

/* ---- the caller's lanes: packets as QEMU's multifd sends them ---- */

enum { PKT_PAGES = 0, PKT_SYNC = 1 };
#define PKT_MAX 8

struct packet {
	uint32_t kind;
	uint32_t n;
	char block[16];
	uint64_t page[PKT_MAX];
	uint8_t zero[PKT_MAX];
};

/*
 * F_SRC_LOST: the source's page changes after its last send and is not
 * sent again (a dirty log that missed the write); F_DST_LATE: a placed and
 * summed destination page is overwritten before the commit.
 */
enum fault { F_NONE, F_CORRUPT, F_DEST_EXTRA, F_SRC_LOST, F_DST_LATE };

struct lane_rx {
	struct pair *p;
	unsigned int lane;
	enum fault fault;
	pthread_t th;
	int rc;
	uint64_t pages;
};

/* Destination: every packet's pages are placed (RC order) when it arrives. */
static void *lane_rx_main(void *arg)
{
	struct lane_rx *r = arg;
	struct rdmae_session *s = r->p->dst;

	for (;;) {
		struct packet pk;
		void *buf;
		size_t len;
		int blk;

		r->rc = rdmae_recv_lane(r->p->w.b, r->lane, &buf, &len, 5000, NULL);
		if (r->rc)
			return NULL;
		assert_int_equal(len, sizeof(pk));
		memcpy(&pk, buf, sizeof(pk));
		free(buf);
		if (pk.kind == PKT_SYNC) {
			/* The per-lane SYNC ACK: everything before it is placed and summed. */
			r->rc = rdmae_send_lane(r->p->w.b, r->lane, &pk, sizeof(pk), 5000, NULL);
			if (r->rc || pk.n)
				return NULL;	/* n != 0: the last sync */
			continue;
		}
		blk = rdmae_session_block_index(s, pk.block);
		assert_true(blk >= 0);
		for (uint32_t i = 0; i < pk.n; i++) {
			const struct sblock *b = &s->blk[blk];
			uint8_t *page = (uint8_t *)b->b.host + pk.page[i] * PS;

			if (pk.zero[i]) {
				memset(page, 0, PS);
				assert_int_equal(rdmae_session_page_zero(s, (size_t)blk, pk.page[i]), 0);
				continue;
			}
			if (r->fault == F_CORRUPT && !strcmp(pk.block, "pc.ram") &&
			    pk.page[i] == CORRUPT_PAGE)
				page[100] ^= 0x5a;
			assert_int_equal(rdmae_session_page_sum(s, (size_t)blk, pk.page[i], NULL), 0);
			r->pages++;
		}
		if (r->fault == F_DEST_EXTRA && !strcmp(pk.block, "pc.ram") && r->lane == 1) {
			r->fault = F_NONE;
			assert_int_equal(rdmae_session_page_sum(s, (size_t)blk, EXTRA_PAGE, NULL),
					 0);
		}
	}
}

struct lane_tx {
	struct pair *p;
	unsigned int lane;
	const uint64_t *pages;		/* (block << 32) | page, this lane's share */
	size_t npages;
	bool last;			/* the final pass: the receiver stops after its ack */
	pthread_t th;
	int rc;
	struct rdmae_err err;
};

static bool page_is_zero(const uint8_t *p)
{
	for (size_t i = 0; i < PS; i++)
		if (p[i])
			return false;
	return true;
}

static int tx_flush(struct lane_tx *t, struct packet *pk, size_t blk, struct rdmae_run *runs,
		    size_t nruns)
{
	int rc = 0;

	if (!pk->n)
		return 0;
	if (nruns)
		rc = rdmae_session_write_lane(t->p->src, t->lane, blk, runs, nruns, &t->err);
	/* The packet after its pages' WRITEs, on the same lane: placed before it arrives. */
	if (!rc)
		rc = rdmae_send_lane(t->p->w.a, t->lane, pk, sizeof(*pk), 5000, &t->err);
	pk->n = 0;
	return rc;
}

/* Source: as multifd_send_prepare, a packet at a time, then a sync and its ack. */
static void *lane_tx_main(void *arg)
{
	struct lane_tx *t = arg;
	struct rdmae_session *s = t->p->src;
	struct rdmae_run runs[PKT_MAX];
	struct packet pk;
	size_t i, nruns = 0, blk = 0;
	void *buf;
	size_t len;

	memset(&pk, 0, sizeof(pk));
	for (i = 0; i < t->npages && !t->rc; i++) {
		size_t b = (size_t)(t->pages[i] >> 32);
		uint64_t page = t->pages[i] & 0xffffffffu;
		const uint8_t *host = (const uint8_t *)src_blocks[b].host + page * PS;

		if (pk.n && (b != blk || pk.n == PKT_MAX)) {
			t->rc = tx_flush(t, &pk, blk, runs, nruns);
			nruns = 0;
		}
		blk = b;
		snprintf(pk.block, sizeof(pk.block), "%s", src_blocks[b].name);
		pk.kind = PKT_PAGES;
		pk.page[pk.n] = page;
		pk.zero[pk.n] = page_is_zero(host);
		if (pk.zero[pk.n]) {
			assert_int_equal(rdmae_session_page_zero(s, b, page), 0);
		} else {
			runs[nruns++] = (struct rdmae_run){ .local = page * PS, .remote = page * PS,
							    .len = PS };
			assert_int_equal(rdmae_session_page_sum(s, b, page, host), 0);
		}
		pk.n++;
	}
	if (!t->rc)
		t->rc = tx_flush(t, &pk, blk, runs, nruns);
	if (t->rc)
		return NULL;
	memset(&pk, 0, sizeof(pk));
	pk.kind = PKT_SYNC;
	pk.n = t->last;
	t->rc = rdmae_send_lane(t->p->w.a, t->lane, &pk, sizeof(pk), 5000, &t->err);
	if (!t->rc)
		t->rc = rdmae_recv_lane(t->p->w.a, t->lane, &buf, &len, 5000, &t->err);
	if (!t->rc)
		free(buf);
	return NULL;
}

/* One pass: the pages listed, spread over the caller's lanes, each lane's sync acked. */
static void pass(struct pair *p, const uint64_t *pages, size_t n, bool last)
{
	struct lane_tx tx[LANES];
	uint64_t share[LANES][BLK0_PAGES + BLK1_PAGES];
	size_t cnt[LANES] = { 0 };
	unsigned int l;

	for (size_t i = 0; i < n; i++) {
		l = 1 + (unsigned int)(i % (LANES - 1));
		share[l][cnt[l]++] = pages[i];
	}
	for (l = 1; l < LANES; l++) {
		tx[l] = (struct lane_tx){ .p = p, .lane = l, .pages = share[l], .npages = cnt[l],
					  .last = last };
		assert_int_equal(pthread_create(&tx[l].th, NULL, lane_tx_main, &tx[l]), 0);
	}
	for (l = 1; l < LANES; l++) {
		assert_int_equal(pthread_join(tx[l].th, NULL), 0);
		if (tx[l].rc)
			fail_msg("lane %u: %s", l, tx[l].err.msg);
	}
}

static void fill_source(void)
{
	memset(src0, 0, sizeof(src0));
	memset(src1, 0, sizeof(src1));
	memset(dst0, 0, sizeof(dst0));
	memset(dst1, 0, sizeof(dst1));
	/* Every third page stays zero; the others carry their block and number. */
	for (uint32_t i = 0; i < BLK0_PAGES; i++)
		if (i % 3)
			memset(src0 + i * PS, (int)(i + 1), PS);
	for (uint32_t i = 0; i < BLK1_PAGES; i++)
		if (i % 3)
			memset(src1 + i * PS, (int)(0x80 + i), PS);
}

/* All pages of both blocks but SKIPPED_PAGE of block 0. */
static size_t all_pages(uint64_t *out)
{
	size_t n = 0;

	for (uint64_t i = 0; i < BLK0_PAGES; i++)
		if (i != SKIPPED_PAGE)
			out[n++] = i;
	for (uint64_t i = 0; i < BLK1_PAGES; i++)
		out[n++] = (1ull << 32) | i;
	return n;
}

struct outcome {
	int src_rc;
	struct rdmae_err src_err;
	struct dest_run d;
};

/* A whole migration in the external data path, with a fault at the destination or none. */
static void migrate(struct pair *p, enum fault fault, struct outcome *out)
{
	uint64_t pages[BLK0_PAGES + BLK1_PAGES], dirty[3];
	struct lane_rx rx[LANES];
	struct rdmae_err err = { 0 };
	static const char state[] = "device state";
	unsigned int l;
	size_t n;

	memset(out, 0, sizeof(*out));
	fill_source();
	dest_start(&out->d, p->dst);
	assert_int_equal(rdmae_session_preflight(p->src, &err), 0);
	while (!atomic_load(&out->d.preflighted))
		sched_yield();
	assert_int_equal(out->d.preflight_rc, 0);
	assert_int_not_equal(rdmae_session_switchover_cost_ns(p->src, 0), 0);
	for (l = 1; l < LANES; l++) {
		rx[l] = (struct lane_rx){ .p = p, .lane = l, .fault = fault };
		assert_int_equal(pthread_create(&rx[l].th, NULL, lane_rx_main, &rx[l]), 0);
	}

	/* Pre-copy: everything once. Then the guest writes three pages, and stops. */
	n = all_pages(pages);
	pass(p, pages, n, false);
	memset(src0 + 1 * PS, 0xee, PS);
	memset(src0 + 3 * PS, 0xdd, PS);	/* was zero */
	memset(src1 + 2 * PS, 0, PS);		/* now zero */
	dirty[0] = 1;
	dirty[1] = 3;
	dirty[2] = (1ull << 32) | 2;
	rdmae_session_mark_stopped(p->src);
	pass(p, dirty, 3, true);
	for (l = 1; l < LANES; l++) {
		assert_int_equal(pthread_join(rx[l].th, NULL), 0);
		assert_int_equal(rx[l].rc, 0);
	}
	if (fault == F_SRC_LOST)
		src0[LOST_PAGE * PS + 7] ^= 0x5a;
	if (fault == F_DST_LATE)
		dst0[LATE_PAGE * PS + 9] ^= 0x5a;
	assert_int_equal(rdmae_session_send_state(p->src, state, sizeof(state), &err), 0);
	out->src_rc = rdmae_session_complete(p->src, &out->src_err);
	assert_int_equal(pthread_join(out->d.th, NULL), 0);
	if (!out->src_rc) {
		assert_int_equal(out->d.state_len, sizeof(state));
		assert_memory_equal(out->d.state, state, sizeof(state));
	}
}

/* ---- tests ---- */

static void test_external_migration(void **state)
{
	struct rdmae_session_stats st;
	struct outcome o;
	struct pair p;
	uint64_t c0, c1, c2;

	(void)state;
	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	migrate(&p, F_NONE, &o);
	if (o.src_rc)
		fail_msg("complete: %s", o.src_err.msg);
	assert_int_equal(o.d.rc, 0);
	assert_true(o.d.committed);
	assert_true(o.d.verified);
	/* Every page sent is the source's; the skipped one was never written. */
	for (uint32_t i = 0; i < BLK0_PAGES; i++) {
		if (i == SKIPPED_PAGE)
			assert_false(memcmp(dst0 + i * PS, src0 + i * PS, PS) == 0);
		else
			assert_memory_equal(dst0 + i * PS, src0 + i * PS, PS);
	}
	assert_memory_equal(dst1, src1, sizeof(src1));

	assert_int_equal(rdmae_session_stats(p.src, &st), 0);
	assert_int_equal(st.rounds, 0);
	assert_true(st.transferred_bytes > 0 && st.transferred_bytes % PS == 0);
	assert_int_equal(st.normal_pages + st.zero_pages, BLK0_PAGES + BLK1_PAGES - 1 + 3);
	assert_true(st.hash_ns > 0);
	assert_true(st.commit_ns > 0);
	assert_true(st.first_write_ns > 0);
	assert_int_equal(st.state_bytes, sizeof("device state"));
	/* Lane 0 carried no WRITE: the caller's lanes did, and its fence went there alone. */
	{
		struct rdmae_lane_stats ls0, ls1;

		assert_int_equal(rdmae_session_lane_stats(p.src, 0, &ls0), 0);
		assert_int_equal(rdmae_session_lane_stats(p.src, 1, &ls1), 0);
		assert_int_equal(ls0.writes, 0);
		assert_int_equal(ls0.fences, 1);
		assert_true(ls1.writes > 0);
		assert_int_equal(ls1.fences, 0);
		/*
		 * After the commit every WRITE has completed, and the count
		 * QEMU reports progress from (one_sided_done) says so.
		 */
		assert_int_equal(ls1.one_sided_done, ls1.write_bytes);
		assert_int_equal(ls0.one_sided_done, 0);
	}
	/* The switchover cost: positive, and growing with the final pass. */
	c0 = rdmae_session_switchover_cost_ns(p.src, 0);
	c1 = rdmae_session_switchover_cost_ns(p.src, 1u << 20);
	c2 = rdmae_session_switchover_cost_ns(p.src, 64u << 20);
	assert_true(c0 > 0);
	assert_true(c1 > c0);
	assert_true(c2 > c1);
	assert_int_equal(rdmae_session_switchover_cost_ns(p.dst, 1u << 20), 0);
	pair_down(&p);
}

/*
 * The same with the source registering on demand: the caller's threads
 * share one on-demand region per block, whose chunks are pinned as they
 * WRITE, from several lanes at once.
 */
static void test_external_migration_on_demand(void **state)
{
	struct rdmae_session_stats st;
	struct outcome o;
	struct pair p;

	(void)state;
	src_reg_mode = RDMAE_REG_ON_DEMAND;
	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	src_reg_mode = RDMAE_REG_AUTO;
	migrate(&p, F_NONE, &o);
	if (o.src_rc)
		fail_msg("complete: %s", o.src_err.msg);
	assert_true(o.d.committed);
	assert_true(o.d.verified);
	assert_memory_equal(dst1, src1, sizeof(src1));
	assert_int_equal(rdmae_session_stats(p.src, &st), 0);
	assert_int_equal(st.src_reg_mode, RDMAE_REG_ON_DEMAND);
	pair_down(&p);
}

/* A destination page corrupted before its sum: both sides name the block and page. */
static void test_external_verify_mismatch(void **state)
{
	char want[96];
	struct outcome o;
	struct pair p;

	(void)state;
	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	migrate(&p, F_CORRUPT, &o);
	snprintf(want, sizeof(want), "block 'pc.ram': page %u ", CORRUPT_PAGE);
	assert_int_equal(o.src_rc, -EIO);
	assert_non_null(strstr(o.src_err.msg, want));
	assert_int_equal(o.d.rc, -EIO);
	assert_false(o.d.committed);
	assert_non_null(strstr(o.d.err.msg, want));
	pair_down(&p);
}

/* A migration with RDMAE_TEST_FAULTS=recheck on both sides' connections. */
static void migrate_rechecked(struct pair *p, enum fault fault, struct outcome *o)
{
	pair_up(p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	p->w.a->faults.recheck = true;
	p->w.b->faults.recheck = true;
	migrate(p, fault, o);
}

/* err names the page "recheck: SIDE: block 'pc.ram': page N " and says what. */
static void recheck_named(const struct rdmae_err *err, const char *side, unsigned int page,
			  const char *what)
{
	char want[96];

	snprintf(want, sizeof(want), "recheck: %s: block 'pc.ram': page %u ", side, page);
	if (!strstr(err->msg, want) || !strstr(err->msg, what))
		fail_msg("'%s' does not name '%s' (%s)", err->msg, want, what);
}

/*
 * A source page changed after its last send, never sent again: the sums
 * agree (each side kept the sum of what travelled), so the verification
 * passes and the destination holds the older page. This is what the
 * commit cannot see, and why the recheck exists.
 */
static void test_external_lost_write_unseen(void **state)
{
	struct outcome o;
	struct pair p;

	(void)state;
	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	migrate(&p, F_SRC_LOST, &o);
	if (o.src_rc)
		fail_msg("complete: %s", o.src_err.msg);
	assert_true(o.d.committed);
	assert_false(memcmp(dst0 + LOST_PAGE * PS, src0 + LOST_PAGE * PS, PS) == 0);
	pair_down(&p);
}

/* With the recheck the source names the page and fails before COMPLETE: nothing commits. */
static void test_external_recheck_source(void **state)
{
	struct outcome o;
	struct pair p;

	(void)state;
	migrate_rechecked(&p, F_SRC_LOST, &o);
	assert_int_equal(o.src_rc, -EIO);
	recheck_named(&o.src_err, "source", LOST_PAGE, "without being sent again");
	assert_false(o.d.committed);
	assert_int_not_equal(o.d.rc, 0);
	pair_down(&p);
}

/* A destination page overwritten after placement: its commit fails, and the source hears why. */
static void test_external_recheck_destination(void **state)
{
	struct outcome o;
	struct pair p;

	(void)state;
	migrate_rechecked(&p, F_DST_LATE, &o);
	assert_int_equal(o.d.rc, -EIO);
	assert_false(o.d.committed);
	recheck_named(&o.d.err, "destination", LATE_PAGE, "changed after it was placed");
	assert_int_equal(o.src_rc, -EIO);
	recheck_named(&o.src_err, "destination", LATE_PAGE, "changed after it was placed");
	pair_down(&p);
}

/* And with nothing wrong the recheck passes on both sides. */
static void test_external_recheck_clean(void **state)
{
	struct outcome o;
	struct pair p;

	(void)state;
	migrate_rechecked(&p, F_NONE, &o);
	if (o.src_rc)
		fail_msg("complete: %s", o.src_err.msg);
	assert_true(o.d.committed);
	assert_true(o.d.verified);
	pair_down(&p);
}

/* A page named on the destination only (the source skipped it): a mismatch, named. */
static void test_external_dest_only_page(void **state)
{
	char want[96];
	struct outcome o;
	struct pair p;

	(void)state;
	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	migrate(&p, F_DEST_EXTRA, &o);
	snprintf(want, sizeof(want), "block 'pc.ram': page %u ", EXTRA_PAGE);
	assert_int_equal(o.src_rc, -EIO);
	assert_non_null(strstr(o.src_err.msg, want));
	assert_int_equal(o.d.rc, -EIO);
	pair_down(&p);
}

/* Without verification the source neither sums nor sends sums; the destination commits. */
static void test_external_no_verify(void **state)
{
	struct outcome o;
	struct pair p;

	(void)state;
	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, false);
	migrate(&p, F_CORRUPT, &o);
	assert_int_equal(o.src_rc, 0);
	assert_true(o.d.committed);
	assert_false(o.d.verified);
	pair_down(&p);
}

/* Either side in the other data path: refused in pre-flight, both paths named, both sides. */
static void test_external_mode_mismatch(void **state)
{
	static const enum rdmae_data_path paths[2][2] = {
		{ RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_ENGINE },
		{ RDMAE_DATA_PATH_ENGINE, RDMAE_DATA_PATH_EXTERNAL },
	};

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct rdmae_err err = { 0 };
		struct dest_run d;
		struct pair p;

		pair_up(&p, paths[i][0], paths[i][1], true);
		dest_start(&d, p.dst);
		assert_int_equal(rdmae_session_preflight(p.src, &err), -EPROTO);
		assert_int_equal(pthread_join(d.th, NULL), 0);
		assert_int_equal(d.preflight_rc, -EPROTO);
		assert_string_equal(err.msg, d.err.msg);
		assert_non_null(strstr(err.msg, "data path is"));
		assert_non_null(strstr(err.msg, "external (its caller moves the pages)"));
		assert_non_null(strstr(err.msg, "the engine's rounds"));
		pair_down(&p);
	}
}

/* Cancel in the external data path: the destination learns why, the writers stop. */
static void test_external_cancel(void **state)
{
	struct rdmae_run run = { .local = 0, .remote = 0, .len = PS };
	struct rdmae_err err = { 0 };
	struct dest_run d;
	struct pair p;

	(void)state;
	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	fill_source();
	dest_start(&d, p.dst);
	assert_int_equal(rdmae_session_preflight(p.src, &err), 0);
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 0, &run, 1, &err), 0);
	assert_true(rdmae_session_cancel(p.src, "operator"));
	assert_int_equal(pthread_join(d.th, NULL), 0);
	assert_int_equal(d.rc, -ECANCELED);
	assert_non_null(strstr(d.err.msg, "cancelled by the source: operator"));
	assert_int_equal(rdmae_session_write_lane(p.src, 2, 0, &run, 1, &err), -ECANCELED);
	assert_int_equal(rdmae_session_complete(p.src, &err), -ECANCELED);
	pair_down(&p);
}

struct writer {
	struct rdmae_session *s;
	size_t block;
	pthread_t th;
	int rc;
	struct rdmae_err err;
	atomic_bool done;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct rdmae_run run = { .local = PS, .remote = PS, .len = PS };

	w->rc = rdmae_session_write_lane(w->s, 2, w->block, &run, 1, &w->err);
	atomic_store(&w->done, true);
	return NULL;
}

/*
 * A WRITE into a piece the destination has not advertised yet waits for
 * its DESCS (read from lane 0 by the writer itself), then goes.
 */
static void test_external_write_waits_for_descs(void **state)
{
	struct rdmae_err err = { 0 };
	struct writer w = { .block = 1 };
	struct timespec ms20 = { .tv_nsec = 20000000L };
	struct dest_run d;
	struct pair p;

	(void)state;
	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	fill_source();
	dest_start(&d, p.dst);
	atomic_store(&d.hold, true);
	assert_int_equal(rdmae_session_preflight(p.src, &err), 0);
	while (!atomic_load(&d.preflighted))
		sched_yield();
	/*
	 * The source pinned block 0's first pieces only: the rest is pinned as
	 * the writers reach it, so that setup does not grow with guest RAM.
	 */
	assert_int_equal(p.src->blk[0].nready, 1);
	assert_int_equal(p.src->blk[1].nready, 0);
	/* Pre-flight advertised block 0's piece only: block 1 ("vga.vram") waits. */
	w.s = p.src;
	atomic_init(&w.done, false);
	assert_int_equal(pthread_create(&w.th, NULL, writer_main, &w), 0);
	nanosleep(&ms20, NULL);
	assert_false(atomic_load(&w.done));
	assert_int_equal(p.src->advertised[1], 0);
	atomic_store(&d.hold, false);
	assert_int_equal(pthread_join(w.th, NULL), 0);
	if (w.rc)
		fail_msg("write: %s", w.err.msg);
	assert_int_equal(p.src->advertised[1], sizeof(src1));
	/* The writer pinned the piece it wrote from. */
	assert_int_equal(p.src->blk[1].nready, 1);
	/* Placed once a message after it on the same lane arrives; the mock places at once. */
	assert_memory_equal(dst1 + PS, src1 + PS, PS);
	assert_true(rdmae_session_cancel(p.src, "test over"));
	assert_int_equal(pthread_join(d.th, NULL), 0);
	pair_down(&p);
}

/*
 * The destination cancels during pre-copy and hangs up: the source's next
 * WRITE fails with the destination's reason, not a bare disconnect, and
 * the session keeps it.
 */
static void test_external_dest_cancel_reason(void **state)
{
	struct rdmae_run run = { .local = 0, .remote = 0, .len = PS };
	struct rdmae_err err = { 0 };
	struct dest_run d;
	struct pair p;

	(void)state;
	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	fill_source();
	dest_start(&d, p.dst);
	assert_int_equal(rdmae_session_preflight(p.src, &err), 0);
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 0, &run, 1, &err), 0);
	assert_true(rdmae_session_cancel(p.dst, "disk full"));
	assert_int_equal(pthread_join(d.th, NULL), 0);
	/*
	 * The hang-up as the source's transport would see it (the mock has no
	 * CM peer), once the CANCEL that came before it has been received.
	 */
	for (bool queued = false; !queued; sched_yield()) {
		pthread_mutex_lock(&p.w.a->lanes[0].lock);
		queued = p.w.a->lanes[0].q_head != NULL;
		pthread_mutex_unlock(&p.w.a->lanes[0].lock);
	}
	rdmae_conn_abort(p.w.a, -ECONNRESET, "disconnected by the peer");
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 0, &run, 1, &err), -ECANCELED);
	assert_non_null(strstr(err.msg, "cancelled by the destination: disk full"));
	assert_int_equal(rdmae_session_write_lane(p.src, 2, 0, &run, 1, &err), -ECANCELED);
	assert_non_null(strstr(err.msg, "disk full"));
	assert_int_equal(rdmae_session_complete(p.src, &err), -ECANCELED);
	pair_down(&p);
}

/* What the calls refuse: lane 0, other modes, bad blocks and runs, complete before the stop. */
static void test_external_refusals(void **state)
{
	struct rdmae_run run = { .local = 0, .remote = 0, .len = PS };
	struct rdmae_run moved = { .local = 0, .remote = PS, .len = PS };
	struct rdmae_run past = { .local = sizeof(src0) - PS, .remote = sizeof(src0) - PS,
				  .len = 2 * PS };
	struct rdmae_err err = { 0 };
	uint64_t bitmap[1] = { 1 };
	const uint64_t *bitmaps[2] = { bitmap, bitmap };
	struct rdmae_pagesums ps;
	struct rdmae_plan plan;
	struct dest_run d;
	struct pair p;

	(void)state;
	/* The engine's data path: none of the external calls. */
	pair_up(&p, RDMAE_DATA_PATH_ENGINE, RDMAE_DATA_PATH_ENGINE, true);
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 0, &run, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "write: the session's data path is the engine's rounds"));
	assert_int_equal(rdmae_session_page_sum(p.src, 0, 0, NULL), -EINVAL);
	assert_int_equal(rdmae_session_page_zero(p.dst, 0, 0), -EINVAL);
	pair_down(&p);

	pair_up(&p, RDMAE_DATA_PATH_EXTERNAL, RDMAE_DATA_PATH_EXTERNAL, true);
	/* Before pre-flight. */
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 0, &run, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not pre-flighted yet"));
	assert_int_equal(rdmae_session_switchover_cost_ns(p.src, 1u << 20), 0);
	assert_int_equal(rdmae_session_block_count(p.src), 2);
	assert_int_equal(rdmae_session_block_index(p.src, "vga.vram"), 1);
	assert_int_equal(rdmae_session_block_index(p.src, "rom"), -ENOENT);
	assert_int_equal(rdmae_session_block_index(p.dst, "pc.ram"), -EAGAIN);

	fill_source();
	dest_start(&d, p.dst);
	assert_int_equal(rdmae_session_preflight(p.src, &err), 0);
	while (!atomic_load(&d.preflighted))
		sched_yield();
	assert_int_equal(d.preflight_rc, 0);
	/* The destination's indices are the source's order. */
	assert_int_equal(rdmae_session_block_index(p.dst, "pc.ram"), 0);
	assert_int_equal(rdmae_session_block_index(p.dst, "vga.vram"), 1);

	/* Lane 0 is the engine's; lane 3 does not exist. */
	assert_int_equal(rdmae_session_write_lane(p.src, 0, 0, &run, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "lane 0 is not the caller's (1..2)"));
	assert_int_equal(rdmae_session_write_lane(p.src, LANES, 0, &run, 1, &err), -EINVAL);
	/* Runs: at the same offset both sides, inside the block; blocks that exist. */
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 0, &moved, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "block 'pc.ram': run 0 (0 -> 4096, 4096 bytes)"));
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 0, &past, 1, &err), -EINVAL);
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 2, &run, 1, &err), -EINVAL);
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 0, NULL, 1, &err), -EINVAL);
	assert_int_equal(rdmae_session_write_lane(p.dst, 1, 0, &run, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not a destination call"));
	assert_int_equal(rdmae_session_wait_advertised(p.src, 0, 0, sizeof(src0) + PS, &err),
			 -EINVAL);
	/* Nothing to write is fine, and a range the destination advertised needs no wait. */
	assert_int_equal(rdmae_session_write_lane(p.src, 1, 0, &run, 0, &err), 0);
	assert_int_equal(rdmae_session_wait_advertised(p.src, 0, 0, PS, &err), 0);
	/* Page sums: a block and page that exist. */
	assert_int_equal(rdmae_session_page_sum(p.src, 2, 0, NULL), -EINVAL);
	assert_int_equal(rdmae_session_page_sum(p.src, 0, BLK0_PAGES, NULL), -EINVAL);
	assert_int_equal(rdmae_session_page_zero(p.dst, 1, BLK1_PAGES), -EINVAL);
	assert_int_equal(rdmae_session_page_zero(NULL, 0, 0), -EINVAL);
	/* No engine rounds in the external data path. */
	assert_int_equal(rdmae_session_plan(p.src, bitmaps, &plan), -EINVAL);
	assert_int_equal(rdmae_session_round(p.src, bitmaps, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "data path is external"));
	/* Complete only once the VM is marked stopped. */
	assert_int_equal(rdmae_session_complete(p.src, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not marked stopped"));
	/* The device state grows the switchover cost. */
	{
		uint64_t c0 = rdmae_session_switchover_cost_ns(p.src, 1u << 20), c1, c2;

		p.src->o.expected_state_bytes = 256u << 20;
		assert_true(rdmae_session_switchover_cost_ns(p.src, 1u << 20) > c0);
		assert_true(c0 > 0);
		/*
		 * The caller's round trips: three of the shortest of the last
		 * eight; a destination's, a zero and a NULL session are ignored.
		 */
		p.src->o.expected_state_bytes = 0;
		c0 = rdmae_session_switchover_cost_ns(p.src, 0);
		rdmae_session_note_round_trip(p.src, 50 * NSEC_PER_MSEC);
		rdmae_session_note_round_trip(p.src, 0);
		rdmae_session_note_round_trip(p.dst, NSEC_PER_MSEC);
		rdmae_session_note_round_trip(NULL, NSEC_PER_MSEC);
		c1 = rdmae_session_switchover_cost_ns(p.src, 0);
		assert_true(c1 >= 150 * NSEC_PER_MSEC);
		assert_true(c1 - 150 * NSEC_PER_MSEC <= c0);
		rdmae_session_note_round_trip(p.src, 20 * NSEC_PER_MSEC);
		c2 = rdmae_session_switchover_cost_ns(p.src, 0);
		assert_true(c2 >= 60 * NSEC_PER_MSEC && c2 < c1);
		/* Eight longer ones push the 20 ms one out. */
		for (int i = 0; i < 8; i++)
			rdmae_session_note_round_trip(p.src, 40 * NSEC_PER_MSEC);
		assert_true(rdmae_session_switchover_cost_ns(p.src, 0) >= 120 * NSEC_PER_MSEC);
	}
	assert_true(rdmae_session_cancel(p.src, "test over"));
	assert_int_equal(pthread_join(d.th, NULL), 0);
	assert_int_equal(d.rc, -ECANCELED);
	pair_down(&p);

	/* The "never sent" sentinel: a sum of 0 is kept as 1. */
	assert_int_equal(rdmae_pagesums_init(&ps, 2, PS, NULL), 0);
	rdmae_pagesums_store(&ps, 0, 0);
	rdmae_pagesums_store(&ps, 1, 42);
	assert_int_equal(ps.sums[0], 1);
	assert_int_equal(ps.sums[1], 42);
	rdmae_pagesums_free(&ps);
}

/* ---- E1: the key as bytes, through a real negotiation ---- */

/* Lane 0 of a connection as setup leaves it before negotiating, its key from bytes. */
static struct rdmae_conn *neg_conn(bool server, const char *key)
{
	static const uint8_t nonce_s[RDMAE_NONCE_SIZE] = { 0x5e, 0x5f, [31] = 0x60 };
	struct rdmae_conn_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;

	mock_conn_opts(&o);
	o.auth_none = false;
	o.key = key;
	o.key_len = strlen(key);
	o.lanes = 1;
	c = rdmae_conn_alloc(&o, server, NULL);
	assert_non_null(c);
	snprintf(c->peer, sizeof(c->peer), "%s", server ? "client" : "server");
	/* As rdmae_listen / rdmae_connect do: copied, and the caller's pointer dropped. */
	assert_int_equal(rdmae_negotiate_auth_setup(&c->opts, &c->key, c->peer, &err), 0);
	c->opts.key = NULL;
	c->opts.key_len = 0;
	/* The server's nonce and mode, which the client reads from the accept private data. */
	memcpy(c->nonce_s, nonce_s, sizeof(c->nonce_s));
	c->peer_auth = RDMAE_WIRE_AUTH_HMAC_SHA256;
	assert_int_equal(mock_conn_setup_device(c, &err), 0);
	assert_int_equal(rdmae_lane_create(c, mock_cm_id(), 0, &err), 0);
	mock_qp_set_state(c->lanes[0].qp.ibqp, IBV_QPS_RTS);
	if (server) {
		pthread_mutex_lock(&c->lock);
		c->state = RDMAE_ST_NEGOTIATING;
		pthread_mutex_unlock(&c->lock);
	}
	return c;
}

/*
 * A client and a server that took their keys as bytes negotiate and
 * authenticate each other when the bytes are the same, and refuse each
 * other, both saying why, when they are not.
 */
static void test_negotiate_key_bytes(void **state)
{
	static const char *const server_keys[2] = { "0123456789abcdef-secret-object",
						    "0123456789abcdef-another-object" };

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct fixture_progress pc, ps;
		struct rdmae_err err = { 0 }, serr = { 0 };
		struct wire w;
		int rc;

		w.a = neg_conn(false, "0123456789abcdef-secret-object");
		w.b = neg_conn(true, server_keys[i]);
		mock_set_send_hook(wire_hook, &w);
		fixture_progress_start(&pc, w.a);
		fixture_progress_start(&ps, w.b);
		rc = rdmae_negotiate_request(w.a, rdmae_deadline_after(5000), &err);
		if (!i) {
			if (rc)
				fail_msg("negotiate: %s", err.msg);
			assert_int_equal(rdmae_negotiate_auth_mode(w.a), RDMAE_WIRE_AUTH_HMAC_SHA256);
			pthread_mutex_lock(&w.b->lock);
			assert_int_equal(w.b->state, RDMAE_ST_LANES);
			pthread_mutex_unlock(&w.b->lock);
		} else {
			assert_int_equal(rc, -EACCES);
			assert_non_null(strstr(err.msg, "authentication failed with server: the peer "
						"does not know the key (it rejected our proof)"));
			/* The server failed after its refusal went out, saying why. */
			while (!rdmae_conn_error(w.b, NULL))
				sched_yield();
			assert_int_equal(rdmae_conn_error(w.b, &serr), -EACCES);
			assert_non_null(strstr(serr.msg, "authentication failed with client: the peer "
						 "does not know the key (its proof does not match)"));
		}
		fixture_progress_stop(&pc);
		fixture_progress_stop(&ps);
		mock_set_send_hook(NULL, NULL);
		rdmae_conn_destroy(w.a);
		rdmae_conn_destroy(w.b);
		fixture_assert_clean();
		mock_reset();
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_external_migration, fixture_setup),
		cmocka_unit_test_setup(test_external_migration_on_demand, fixture_setup),
		cmocka_unit_test_setup(test_external_verify_mismatch, fixture_setup),
		cmocka_unit_test_setup(test_external_dest_only_page, fixture_setup),
		cmocka_unit_test_setup(test_external_lost_write_unseen, fixture_setup),
		cmocka_unit_test_setup(test_external_recheck_source, fixture_setup),
		cmocka_unit_test_setup(test_external_recheck_destination, fixture_setup),
		cmocka_unit_test_setup(test_external_recheck_clean, fixture_setup),
		cmocka_unit_test_setup(test_external_no_verify, fixture_setup),
		cmocka_unit_test_setup(test_external_mode_mismatch, fixture_setup),
		cmocka_unit_test_setup(test_external_cancel, fixture_setup),
		cmocka_unit_test_setup(test_external_refusals, fixture_setup),
		cmocka_unit_test_setup(test_external_dest_cancel_reason, fixture_setup),
		cmocka_unit_test_setup(test_external_write_waits_for_descs, fixture_setup),
		cmocka_unit_test_setup(test_negotiate_key_bytes, fixture_setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
