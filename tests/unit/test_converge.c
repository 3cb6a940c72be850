/* SPDX-License-Identifier: MIT */
/* Convergence math and the bandwidth cap, with a simulated clock. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rdmae_converge.h"

#define NS 1000000000ull
#define MS 1000000ull
#define MIB (1024ull * 1024ull)

static void test_bandwidth(void **state)
{
	(void)state;
	assert_true(rdmae_bandwidth(1000, NS) == 1000.0);
	assert_true(rdmae_bandwidth(500, NS / 2) == 1000.0);
	assert_true(rdmae_bandwidth(123, 0) == 0.0);
	assert_true(rdmae_bandwidth(0, NS) == 0.0);
}

static void test_downtime(void **state)
{
	(void)state;
	/* 100 MiB at 1 GiB/s: 97.65625 ms, rounded up to the nanosecond. */
	assert_int_equal(rdmae_expected_downtime_ns(100 * MIB, 1024.0 * MIB), 97656250);
	assert_int_equal(rdmae_expected_downtime_ns(1, 3.0), 333333334);
	assert_int_equal(rdmae_expected_downtime_ns(0, 0.0), 0);
	assert_int_equal(rdmae_expected_downtime_ns(0, 1e9), 0);
	assert_true(rdmae_expected_downtime_ns(1, 0.0) == UINT64_MAX);
	assert_true(rdmae_expected_downtime_ns(1, -5.0) == UINT64_MAX);
	/* Too long to count in ns. */
	assert_true(rdmae_expected_downtime_ns(UINT64_MAX, 1e-3) == UINT64_MAX);
}

/*
 * The downtime model: data at the data rate, zero pages as descriptors (not
 * bytes), device state, two round trips, and the hashing left for the stop.
 */
static void test_downtime_model(void **state)
{
	struct rdmae_downtime_model m = { .data_bw = 100.0 * MIB, .rtt_ns = 2 * MS };
	uint64_t d;

	(void)state;
	/* 10 MiB of data at 100 MiB/s and two round trips. */
	d = rdmae_downtime_estimate_ns(&m, 2560, 10 * MIB);
	assert_true(d >= 104 * MS && d <= 104 * MS + 1);
	/* Half of the dirty pages zero: half the time for data, zero pages cost descriptors. */
	m.zero_ratio = 0.5;
	d = rdmae_downtime_estimate_ns(&m, 2560, 10 * MIB);
	assert_true(d > 54 * MS && d < 55 * MS);
	/* Device state rides the same link. */
	m.zero_ratio = 0.0;
	m.state_bytes = 5 * MIB;
	d = rdmae_downtime_estimate_ns(&m, 2560, 10 * MIB);
	assert_true(d >= 154 * MS && d <= 154 * MS + 1);
	/* Verification: the final data hashed on both sides, one digest of every page sum. */
	m.state_bytes = 0;
	m.verify = true;
	m.mem_rate = 1000.0 * MIB;
	m.sum_pages = 65536;
	d = rdmae_downtime_estimate_ns(&m, 2560, 10 * MIB);
	assert_true(d >= 124 * MS + 500000ull && d <= 124 * MS + 500500ull);
	/*
	 * The destination still hashing 100 MiB of earlier rounds: its answer
	 * to the final round waits for that, 100 ms at 1000 MiB/s.
	 */
	m.peer_hash_bytes = 100 * MIB;
	d = rdmae_downtime_estimate_ns(&m, 2560, 10 * MIB);
	assert_true(d >= 224 * MS + 500000ull && d <= 224 * MS + 500500ull);
	m.peer_hash_bytes = 0;
	/* Unknown data rate: no promise. */
	m.data_bw = 0.0;
	assert_true(rdmae_downtime_estimate_ns(&m, 1, 4096) == UINT64_MAX);
	/* Nothing to move and nothing to check: free. */
	memset(&m, 0, sizeof(m));
	assert_int_equal(rdmae_downtime_estimate_ns(&m, 0, 0), 0);
}

static void test_converged_edges(void **state)
{
	double bw = 1000.0 * MIB;	/* 1 MiB per ms */

	(void)state;
	/* Exactly at the limit fits; one byte more does not. */
	assert_true(rdmae_converged(300 * MIB, bw, 300 * MS));
	assert_false(rdmae_converged(300 * MIB + 1, bw, 300 * MS));
	/* Nothing left always fits, even with no bandwidth measured or no limit. */
	assert_true(rdmae_converged(0, 0.0, 300 * MS));
	assert_true(rdmae_converged(0, 0.0, 0));
	/* Zero bandwidth never converges with bytes left, whatever the limit. */
	assert_false(rdmae_converged(1, 0.0, UINT64_MAX));
	assert_false(rdmae_converged(1, bw, 0));
}

static void test_ratelimit_unlimited(void **state)
{
	struct rdmae_ratelimit rl;

	(void)state;
	rdmae_ratelimit_init(&rl, 0, 5);
	assert_int_equal(rdmae_ratelimit_charge(&rl, 1ull << 40, 5), 0);
	assert_int_equal(rdmae_ratelimit_charge(&rl, 1ull << 40, 5), 0);
	assert_int_equal(rl.bytes, 2ull << 40);
}

static void test_ratelimit_exact(void **state)
{
	struct rdmae_ratelimit rl;
	uint64_t t = 1000;

	(void)state;
	rdmae_ratelimit_init(&rl, 1000000, t);	/* 1 MB/s */
	/* The first 1000 bytes may leave after 1 ms. */
	assert_int_equal(rdmae_ratelimit_charge(&rl, 1000, t), MS);
	/* Exactly on schedule: no wait. */
	t += MS;
	assert_int_equal(rdmae_ratelimit_charge(&rl, 0, t), 0);
	assert_int_equal(rdmae_ratelimit_charge(&rl, 1000, t + MS), 0);
	/* Ahead of schedule by 1 ns. */
	assert_int_equal(rdmae_ratelimit_charge(&rl, 1000, t + 2 * MS - 1), 1);
}

static void test_ratelimit_burst_then_wait(void **state)
{
	struct rdmae_ratelimit rl;

	(void)state;
	rdmae_ratelimit_init(&rl, 100 * MIB, 0);
	/* 50 MiB at once: half a second before the next post. */
	assert_int_equal(rdmae_ratelimit_charge(&rl, 50 * MIB, 0), NS / 2);
	/* Time passed but not enough. */
	assert_int_equal(rdmae_ratelimit_charge(&rl, 0, NS / 4), NS / 4);
	/* A late caller owes nothing, and may use the slack it has built up. */
	assert_int_equal(rdmae_ratelimit_charge(&rl, 50 * MIB, 2 * NS), 0);
	/* Rates and sizes whose product passes 2^64 (the 128-bit path). */
	rdmae_ratelimit_init(&rl, 50000000000ull, 0);
	assert_int_equal(rdmae_ratelimit_charge(&rl, 100000000000ull, 0), 2 * NS);
}

static void test_ratelimit_long_run(void **state)
{
	const uint64_t rate = 123456789;	/* not a round number, to catch truncation */
	struct rdmae_ratelimit rl;
	uint64_t t = 77, start = 77, sent = 0;
	unsigned int seed = 1;
	int i;

	(void)state;
	rdmae_ratelimit_init(&rl, rate, t);
	for (i = 0; i < 100000; i++) {
		uint64_t bytes = 1 + (uint64_t)rand_r(&seed) % (4 * MIB);
		uint64_t wait = rdmae_ratelimit_charge(&rl, bytes, t);

		/* Sleep as told, sometimes oversleep, then post. */
		t += wait + (rand_r(&seed) % 8 == 0 ? (uint64_t)rand_r(&seed) % MS : 0);
		sent += bytes;
		/* Posted by t: the average since start may never pass the rate. */
		assert_true((double)sent * 1e9 <= (double)rate * (double)(t - start) + 1e-3);
	}
	/* And does not fall far below it when the sender keeps up (within 1%). */
	assert_true((double)sent * 1e9 >=
		    0.99 * (double)rate * (double)(t - start) - 4.0 * MIB * 1e9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bandwidth),
		cmocka_unit_test(test_downtime),
		cmocka_unit_test(test_converged_edges),
		cmocka_unit_test(test_downtime_model),
		cmocka_unit_test(test_ratelimit_unlimited),
		cmocka_unit_test(test_ratelimit_exact),
		cmocka_unit_test(test_ratelimit_burst_then_wait),
		cmocka_unit_test(test_ratelimit_long_run),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
