/* SPDX-License-Identifier: MIT */
/* Pacing of bulk WRITEs: the budget follows the measured bandwidth-delay product. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "rdmae_pace.h"

#define MiB (1ull << 20)
#define MS 1000000ull

static void test_starts_at_floor(void **state)
{
	struct rdmae_pace p;

	(void)state;
	rdmae_pace_init(&p, 8 * MiB, 512 * MiB);
	assert_int_equal(p.budget, 8 * MiB);
	assert_true(rdmae_pace_may_post(&p, MiB));
	/* A cap below the floor is raised to it. */
	rdmae_pace_init(&p, 8 * MiB, MiB);
	assert_int_equal(p.cap, 8 * MiB);
}

static void test_budget_bounds_inflight(void **state)
{
	struct rdmae_pace p;
	int i;

	(void)state;
	rdmae_pace_init(&p, 4 * MiB, 64 * MiB);
	for (i = 0; i < 4; i++) {
		assert_true(rdmae_pace_may_post(&p, MiB));
		assert_int_equal(rdmae_pace_on_post(&p, MiB, 1), (uint64_t)i * MiB);
	}
	assert_false(rdmae_pace_may_post(&p, MiB));
	assert_int_equal(p.max_inflight, 4 * MiB);
	/* Found full: no refill until half the budget has drained. */
	rdmae_pace_on_done(&p, MiB, 2);
	assert_false(rdmae_pace_may_post(&p, MiB));
	rdmae_pace_on_done(&p, MiB, 3);
	assert_true(rdmae_pace_may_post(&p, MiB));
	rdmae_pace_on_post(&p, MiB, 0);
	assert_true(rdmae_pace_may_post(&p, MiB));
	assert_false(rdmae_pace_may_post(&p, 2 * MiB));
}

static void test_oversized_write_alone(void **state)
{
	struct rdmae_pace p;

	(void)state;
	/* One WRITE larger than the whole budget still goes when nothing else is in flight. */
	rdmae_pace_init(&p, MiB, MiB);
	assert_true(rdmae_pace_may_post(&p, 8 * MiB));
	rdmae_pace_on_post(&p, 8 * MiB, 1);
	assert_false(rdmae_pace_may_post(&p, 1));
	rdmae_pace_on_done(&p, 8 * MiB, 5);
	assert_int_equal(p.inflight, 0);
	assert_int_equal(p.delivered, 8 * MiB);
}

/*
 * A discrete-event link: WRITEs leave one after the other at bw bytes/s and
 * are acknowledged base_ns after their last byte left. The writer posts
 * whenever the pacer lets it, so the queue is always as full as allowed;
 * every WRITE is signalled.
 */
#define SIM_RING 4096

struct sim_wr {
	struct rdmae_pace_mark m;
	uint64_t done;
};

static void simulate(struct rdmae_pace *p, double bw, uint64_t base_ns, uint64_t wr,
		     unsigned int n)
{
	static struct sim_wr ring[SIM_RING];
	unsigned int head = 0, tail = 0, completed = 0;
	uint64_t t = 1000, wire_free = 0;

	while (completed < n) {
		if (rdmae_pace_may_post(p, wr) && head - tail < SIM_RING) {
			struct sim_wr *w = &ring[head++ % SIM_RING];

			w->m.post_ns = t;
			w->m.delivered = p->delivered;
			w->m.len = wr;
			rdmae_pace_on_post(p, wr, t);
			wire_free = (wire_free > t ? wire_free : t) + (uint64_t)((double)wr * 1e9 / bw);
			w->done = wire_free + base_ns;
		} else {
			struct sim_wr *w = &ring[tail++ % SIM_RING];

			t = w->done;
			rdmae_pace_on_done(p, wr, t);
			rdmae_pace_sample(p, &w->m, t);
			completed++;
		}
	}
}

static void test_converges_to_bdp(void **state)
{
	struct rdmae_pace_mark m;
	struct rdmae_pace p;

	(void)state;
	/*
	 * 10 GB/s, 200 us: BDP 2 MB. One WRITE alone (as at the start of a
	 * round) gives the base latency; the budget then settles near twice the
	 * BDP and the queue the writer builds stays near it, far below the cap.
	 */
	rdmae_pace_init(&p, 256ull * 1024, 1024 * MiB);
	m = (struct rdmae_pace_mark){ .post_ns = 1000, .len = 64ull * 1024 };
	rdmae_pace_on_post(&p, m.len, m.post_ns);
	rdmae_pace_on_done(&p, m.len, m.post_ns + 206554);
	rdmae_pace_sample(&p, &m, m.post_ns + 206554);
	/* Alone: 200 us plus 6.6 us on the wire. */
	assert_true(p.base_ns >= 200000 && p.base_ns < 220000);
	simulate(&p, 10e9, 200000, 64ull * 1024, 100000);
	assert_true(p.bw > 9e9 && p.bw < 11e9);
	assert_true(p.base_ns >= 200000 && p.base_ns < 220000);
	assert_true(p.budget > 3900000 && p.budget < 5500000);
	assert_true(p.max_inflight < 6 * MiB);
}

static void test_no_alone_sample_keeps_floor(void **state)
{
	struct rdmae_pace_mark m[4];
	struct rdmae_pace p;
	int i;

	(void)state;
	/*
	 * Four WRITEs on four lanes, served in turn: they finish together, so
	 * the first to complete still has the others in flight and the last
	 * had them complete during its flight. No base latency, and the budget
	 * stays at the floor, however fast the rate reads.
	 */
	rdmae_pace_init(&p, MiB, 1024 * MiB);
	for (i = 0; i < 4; i++) {
		m[i] = (struct rdmae_pace_mark){ .post_ns = MS, .delivered = p.delivered, .len = MiB };
		rdmae_pace_on_post(&p, MiB, MS);
	}
	for (i = 0; i < 4; i++) {
		rdmae_pace_on_done(&p, MiB, 50 * MS + (uint64_t)i);
		rdmae_pace_sample(&p, &m[i], 50 * MS + (uint64_t)i);
	}
	assert_true(p.bw > 0);
	assert_int_equal(p.base_ns, 0);
	assert_int_equal(p.budget, MiB);
}

static void test_slow_link_stays_at_floor(void **state)
{
	struct rdmae_pace p;

	(void)state;
	/* 50 MB/s, 1 ms, 1 MiB WRITEs: BDP 50 kB, far below two WRITEs per lane. */
	rdmae_pace_init(&p, 8 * MiB, 512 * MiB);
	simulate(&p, 50e6, MS, MiB, 2000);
	assert_true(p.bw > 45e6 && p.bw < 55e6);
	assert_int_equal(p.budget, 8 * MiB);
	assert_true(p.max_inflight <= 8 * MiB);
}

static void test_sample_rules(void **state)
{
	struct rdmae_pace p;
	struct rdmae_pace_mark m = { .post_ns = 10 * MS, .delivered = 0, .len = MiB };

	(void)state;
	rdmae_pace_init(&p, MiB, 64 * MiB);
	rdmae_pace_sample(&p, &m, 20 * MS);
	assert_int_equal(p.base_ns, 10 * MS);
	/* 4 MiB completed during its flight: it shared the link, no latency sample. */
	p.delivered = 4 * MiB;
	rdmae_pace_sample(&p, &m, 15 * MS);
	assert_int_equal(p.base_ns, 10 * MS);
	/* 4 MiB still in flight as it completes (lanes served in turn): no sample either. */
	m.delivered = p.delivered;
	p.inflight = 4 * MiB;
	rdmae_pace_sample(&p, &m, 15 * MS);
	assert_int_equal(p.base_ns, 10 * MS);
	p.inflight = 0;
	/* Lower: taken at once; higher: drifts up slowly. */
	m.delivered = p.delivered;
	rdmae_pace_sample(&p, &m, 18 * MS);
	assert_int_equal(p.base_ns, 8 * MS);
	rdmae_pace_sample(&p, &m, 26 * MS);
	assert_int_equal(p.base_ns, 8 * MS + MS / 2);
	/* A completion not after its post is no sample. */
	rdmae_pace_sample(&p, &m, m.post_ns);
	assert_int_equal(p.base_ns, 8 * MS + MS / 2);
}

static void test_rate_needs_an_interval(void **state)
{
	struct rdmae_pace p;

	(void)state;
	rdmae_pace_init(&p, MiB, 64 * MiB);
	/* Shorter than the interval: no sample. */
	rdmae_pace_on_post(&p, MiB, MS);
	rdmae_pace_on_done(&p, MiB, MS + MS / 2);
	assert_true(p.bw == 0);
	/* After an idle gap the sample restarts: 1 MiB in 30 ms. */
	rdmae_pace_on_post(&p, MiB, 100 * MS);
	rdmae_pace_on_done(&p, MiB, 130 * MS);
	assert_true(p.bw > 34e6 && p.bw < 36e6);
}

static void test_rate_across_batches(void **state)
{
	struct rdmae_pace p;
	uint64_t t = 10 * MS;
	int b, i;

	(void)state;
	/*
	 * Eight WRITEs that finish together every 80 ms (lanes served in
	 * turn), refilled at once: 8 MiB / 80 ms, not the 1 MiB / 80 ms that
	 * sampling only the first completion of each batch would read.
	 */
	rdmae_pace_init(&p, 8 * MiB, 64 * MiB);
	for (b = 0; b < 20; b++) {
		for (i = 0; i < 8; i++)
			rdmae_pace_on_post(&p, MiB, t + 10000);
		t += 80 * MS;
		for (i = 0; i < 8; i++)
			rdmae_pace_on_done(&p, MiB, t + (uint64_t)i * 1000);
	}
	assert_true(p.bw > 95e6 && p.bw < 115e6);
}

static void test_bw_up_fast_down_slowly(void **state)
{
	struct rdmae_pace p;
	double before;

	(void)state;
	rdmae_pace_init(&p, MiB, 64 * MiB);
	rdmae_pace_on_post(&p, 100 * MiB, MS);
	rdmae_pace_on_done(&p, 100 * MiB, 101 * MS);	/* about 1 GB/s */
	before = p.bw;
	rdmae_pace_on_post(&p, MiB, 200 * MS);
	rdmae_pace_on_done(&p, MiB, 300 * MS);		/* about 10 MB/s */
	assert_true(p.bw < before && p.bw > before / 2);
	/* Faster is taken at once: a latency-bound start must not crawl. */
	rdmae_pace_on_post(&p, 500 * MiB, 400 * MS);
	rdmae_pace_on_done(&p, 500 * MiB, 450 * MS);
	assert_true(p.bw > 10e9);
}

static void test_forget(void **state)
{
	struct rdmae_pace p;

	(void)state;
	rdmae_pace_init(&p, MiB, 64 * MiB);
	rdmae_pace_on_post(&p, 3 * MiB, 1);
	rdmae_pace_forget(&p, 2 * MiB);
	assert_int_equal(p.inflight, MiB);
	rdmae_pace_forget(&p, 5 * MiB);
	assert_int_equal(p.inflight, 0);
	assert_int_equal(p.delivered, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_starts_at_floor),
		cmocka_unit_test(test_budget_bounds_inflight),
		cmocka_unit_test(test_oversized_write_alone),
		cmocka_unit_test(test_converges_to_bdp),
		cmocka_unit_test(test_no_alone_sample_keeps_floor),
		cmocka_unit_test(test_slow_link_stays_at_floor),
		cmocka_unit_test(test_sample_rules),
		cmocka_unit_test(test_rate_needs_an_interval),
		cmocka_unit_test(test_rate_across_batches),
		cmocka_unit_test(test_bw_up_fast_down_slowly),
		cmocka_unit_test(test_forget),
	};

	return cmocka_run_group_tests_name("pace", tests, NULL, NULL);
}
