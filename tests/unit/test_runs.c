/* SPDX-License-Identifier: MIT */
/* Run coalescing and splitting. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "rdmae_runs.h"

#define KIB 1024ull
#define MIB (1024ull * 1024ull)

static void assert_run(const struct rdmae_run *r, uint64_t local, uint64_t remote, uint64_t len)
{
	if (r->local != local || r->remote != remote || r->len != len)
		fail_msg("run {%#llx, %#llx, %llu}, want {%#llx, %#llx, %llu}",
			 (unsigned long long)r->local, (unsigned long long)r->remote,
			 (unsigned long long)r->len, (unsigned long long)local,
			 (unsigned long long)remote, (unsigned long long)len);
}

static void test_coalesce_both_sides(void **state)
{
	struct rdmae_run runs[] = {
		{ 0, 1000, 4096 }, { 4096, 5096, 4096 }, { 8192, 9192, 100 },
	};

	(void)state;
	assert_int_equal(rdmae_runs_coalesce(runs, 3, MIB), 1);
	assert_run(&runs[0], 0, 1000, 8292);
}

static void test_coalesce_one_side(void **state)
{
	struct rdmae_run local_only[] = { { 0, 0, 4096 }, { 4096, 8192, 4096 } };
	struct rdmae_run remote_only[] = { { 0, 0, 4096 }, { 8192, 4096, 4096 } };
	/* Backwards on both sides is not contiguous either. */
	struct rdmae_run backwards[] = { { 4096, 4096, 4096 }, { 0, 0, 4096 } };

	(void)state;
	assert_int_equal(rdmae_runs_coalesce(local_only, 2, MIB), 2);
	assert_run(&local_only[0], 0, 0, 4096);
	assert_run(&local_only[1], 4096, 8192, 4096);
	assert_int_equal(rdmae_runs_coalesce(remote_only, 2, MIB), 2);
	assert_run(&remote_only[1], 8192, 4096, 4096);
	assert_int_equal(rdmae_runs_coalesce(backwards, 2, MIB), 2);
	assert_run(&backwards[0], 4096, 4096, 4096);
}

static void test_coalesce_max_len(void **state)
{
	struct rdmae_run at[] = { { 0, 0, 3 * KIB }, { 3 * KIB, 3 * KIB, KIB } };
	struct rdmae_run over[] = { { 0, 0, 3 * KIB }, { 3 * KIB, 3 * KIB, KIB + 1 } };
	/* Merging stops at the limit and starts again from the run that did not fit. */
	struct rdmae_run chain[] = {
		{ 0, 0, 2 * KIB }, { 2 * KIB, 2 * KIB, 2 * KIB }, { 4 * KIB, 4 * KIB, 2 * KIB },
		{ 6 * KIB, 6 * KIB, 2 * KIB }, { 8 * KIB, 8 * KIB, 1 },
	};

	(void)state;
	assert_int_equal(rdmae_runs_coalesce(at, 2, 4 * KIB), 1);
	assert_run(&at[0], 0, 0, 4 * KIB);
	assert_int_equal(rdmae_runs_coalesce(over, 2, 4 * KIB), 2);
	assert_run(&over[0], 0, 0, 3 * KIB);
	assert_run(&over[1], 3 * KIB, 3 * KIB, KIB + 1);
	assert_int_equal(rdmae_runs_coalesce(chain, 5, 4 * KIB), 3);
	assert_run(&chain[0], 0, 0, 4 * KIB);
	assert_run(&chain[1], 4 * KIB, 4 * KIB, 4 * KIB);
	assert_run(&chain[2], 8 * KIB, 8 * KIB, 1);
}

static void test_coalesce_long_runs_kept(void **state)
{
	/* Longer than max_len already: left for the poster to split, and not merged. */
	struct rdmae_run runs[] = { { 0, 0, 10 * KIB }, { 10 * KIB, 10 * KIB, KIB } };

	(void)state;
	assert_int_equal(rdmae_runs_coalesce(runs, 2, 4 * KIB), 2);
	assert_run(&runs[0], 0, 0, 10 * KIB);
	assert_run(&runs[1], 10 * KIB, 10 * KIB, KIB);
}

static void test_coalesce_zero_length(void **state)
{
	struct rdmae_run runs[] = {
		{ 0, 0, 0 }, { 0, 0, 100 }, { 100, 100, 0 }, { 555, 555, 0 }, { 100, 100, 50 },
		{ 999, 999, 0 },
	};
	struct rdmae_run all_empty[] = { { 1, 2, 0 }, { 3, 4, 0 } };

	(void)state;
	/* Dropped, and the runs on either side of them still merge. */
	assert_int_equal(rdmae_runs_coalesce(runs, 6, MIB), 1);
	assert_run(&runs[0], 0, 0, 150);
	assert_int_equal(rdmae_runs_coalesce(all_empty, 2, MIB), 0);
}

static void test_coalesce_single_and_none(void **state)
{
	struct rdmae_run one = { 7, 9, 11 };

	(void)state;
	assert_int_equal(rdmae_runs_coalesce(&one, 1, MIB), 1);
	assert_run(&one, 7, 9, 11);
	assert_int_equal(rdmae_runs_coalesce(&one, 1, 1), 1);
	assert_run(&one, 7, 9, 11);
	assert_int_equal(rdmae_runs_coalesce(NULL, 0, MIB), 0);
}

static void test_coalesce_edges(void **state)
{
	/* A run ending at the top of the address space must not "continue" at 0. */
	struct rdmae_run wrap[] = { { UINT64_MAX - 99, UINT64_MAX - 99, 100 }, { 0, 0, 100 } };
	struct rdmae_run wrap_local[] = { { UINT64_MAX - 99, 0, 100 }, { 0, 100, 100 } };
	struct rdmae_run wrap_remote[] = { { 0, UINT64_MAX - 99, 100 }, { 100, 0, 100 } };
	struct rdmae_run unbounded[] = { { 0, 0, 3 * MIB }, { 3 * MIB, 3 * MIB, 5 * MIB } };
	struct rdmae_run mixed[] = {
		{ 0, 0, 10 }, { 10, 10, 10 }, { 100, 50, 10 }, { 110, 60, 10 }, { 120, 70, 0 },
		{ 120, 80, 10 },
	};

	(void)state;
	assert_int_equal(rdmae_runs_coalesce(wrap, 2, 0), 2);
	assert_int_equal(rdmae_runs_coalesce(wrap_local, 2, 0), 2);
	assert_int_equal(rdmae_runs_coalesce(wrap_remote, 2, 0), 2);
	/* max_len 0: no limit. */
	assert_int_equal(rdmae_runs_coalesce(unbounded, 2, 0), 1);
	assert_run(&unbounded[0], 0, 0, 8 * MIB);
	assert_int_equal(rdmae_runs_coalesce(mixed, 6, MIB), 3);
	assert_run(&mixed[0], 0, 0, 20);
	assert_run(&mixed[1], 100, 50, 20);
	assert_run(&mixed[2], 120, 80, 10);
}

static void test_take_max_len(void **state)
{
	struct rdmae_run r = { 100, 200, 10 * KIB };
	struct rdmae_run p;

	(void)state;
	p = rdmae_run_take(&r, 4 * KIB, 0, 0);
	assert_run(&p, 100, 200, 4 * KIB);
	assert_run(&r, 100 + 4 * KIB, 200 + 4 * KIB, 6 * KIB);
	p = rdmae_run_take(&r, 4 * KIB, 0, 0);
	assert_run(&p, 100 + 4 * KIB, 200 + 4 * KIB, 4 * KIB);
	p = rdmae_run_take(&r, 4 * KIB, 0, 0);
	assert_run(&p, 100 + 8 * KIB, 200 + 8 * KIB, 2 * KIB);
	assert_int_equal(r.len, 0);

	/* Exactly max_len: one piece. */
	r = (struct rdmae_run){ 0, 0, 4 * KIB };
	p = rdmae_run_take(&r, 4 * KIB, 0, 0);
	assert_run(&p, 0, 0, 4 * KIB);
	assert_int_equal(r.len, 0);
	/* max_len 0: no limit. */
	r = (struct rdmae_run){ 0, 0, 4 * KIB };
	p = rdmae_run_take(&r, 0, 0, 0);
	assert_int_equal(p.len, 4 * KIB);
}

static void test_take_local_boundary(void **state)
{
	struct rdmae_run r = { MIB - 100, 5, 1000 };
	struct rdmae_run p;

	(void)state;
	p = rdmae_run_take(&r, 4 * KIB, MIB, 0);
	assert_run(&p, MIB - 100, 5, 100);
	assert_run(&r, MIB, 105, 900);
	/* Starting on a boundary allows a whole span. */
	r = (struct rdmae_run){ 2 * MIB, 7, 3 * MIB };
	p = rdmae_run_take(&r, 0, MIB, 0);
	assert_run(&p, 2 * MIB, 7, MIB);
	/* Ending exactly at one is not crossing it. */
	r = (struct rdmae_run){ MIB - 100, 0, 100 };
	p = rdmae_run_take(&r, 0, MIB, 0);
	assert_int_equal(p.len, 100);
	assert_int_equal(r.len, 0);
}

static void test_take_remote_boundary(void **state)
{
	struct rdmae_run r = { 3, (1ull << 30) - 10, 1000 };
	struct rdmae_run p;

	(void)state;
	p = rdmae_run_take(&r, 0, 0, 1ull << 30);
	assert_run(&p, 3, (1ull << 30) - 10, 10);
	assert_run(&r, 13, 1ull << 30, 990);
	p = rdmae_run_take(&r, 0, 0, 1ull << 30);
	assert_run(&p, 13, 1ull << 30, 990);
}

static void test_take_nearest_limit_wins(void **state)
{
	struct rdmae_run r;
	struct rdmae_run p;

	(void)state;
	/* local boundary in 300, remote in 200, max_len 500: the remote one. */
	r = (struct rdmae_run){ 4096 - 300, 8192 - 200, 10000 };
	p = rdmae_run_take(&r, 500, 4096, 8192);
	assert_int_equal(p.len, 200);
	/* local 300 now nearer than remote 200 + 8192. */
	r = (struct rdmae_run){ 4096 - 300, 8192 - 500, 10000 };
	p = rdmae_run_take(&r, 500, 4096, 8192);
	assert_int_equal(p.len, 300);
	/* max_len nearest. */
	r = (struct rdmae_run){ 4096 - 300, 8192 - 500, 10000 };
	p = rdmae_run_take(&r, 100, 4096, 8192);
	assert_int_equal(p.len, 100);
	/* len nearest. */
	r = (struct rdmae_run){ 4096 - 300, 8192 - 500, 50 };
	p = rdmae_run_take(&r, 100, 4096, 8192);
	assert_int_equal(p.len, 50);
	assert_int_equal(r.len, 0);
}

static void test_take_all_pieces(void **state)
{
	const uint64_t lb = 64 * KIB, rb = 96 * KIB, max = 40 * KIB;
	struct rdmae_run r = { 12345, 777777, 5 * MIB + 3 };
	const struct rdmae_run orig = r;
	uint64_t covered = 0;

	(void)state;
	/* Taking until empty covers the run exactly, in order, crossing no boundary. */
	while (r.len) {
		struct rdmae_run p = rdmae_run_take(&r, max, lb, rb);

		assert_true(p.len > 0 && p.len <= max);
		assert_true(p.local == orig.local + covered);
		assert_true(p.remote == orig.remote + covered);
		assert_true(p.local / lb == (p.local + p.len - 1) / lb);
		assert_true(p.remote / rb == (p.remote + p.len - 1) / rb);
		covered += p.len;
	}
	assert_true(covered == orig.len);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_coalesce_both_sides),
		cmocka_unit_test(test_coalesce_one_side),
		cmocka_unit_test(test_coalesce_max_len),
		cmocka_unit_test(test_coalesce_long_runs_kept),
		cmocka_unit_test(test_coalesce_zero_length),
		cmocka_unit_test(test_coalesce_single_and_none),
		cmocka_unit_test(test_coalesce_edges),
		cmocka_unit_test(test_take_max_len),
		cmocka_unit_test(test_take_local_boundary),
		cmocka_unit_test(test_take_remote_boundary),
		cmocka_unit_test(test_take_nearest_limit_wins),
		cmocka_unit_test(test_take_all_pieces),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
