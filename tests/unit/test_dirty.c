/* SPDX-License-Identifier: MIT */
/* Dirty bitmaps to runs, zero-page detection, and the dirty walk. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rdmae_dirty.h"

#define PS 4096ul

struct run {
	size_t start, len;
};

/* All runs of bm, up to cap; returns how many. */
static size_t runs_of(const uint64_t *bm, size_t npages, struct run *out, size_t cap)
{
	size_t pos = 0, n = 0, s, l;

	while (rdmae_bitmap_next_run(bm, npages, &pos, &s, &l)) {
		assert_true(n < cap);
		assert_true(l > 0);
		assert_true(s + l <= npages);
		out[n].start = s;
		out[n].len = l;
		n++;
	}
	assert_int_equal(pos, npages);
	return n;
}

/* The slow reference: one bit at a time. */
static size_t runs_ref(const uint64_t *bm, size_t npages, struct run *out, size_t cap)
{
	size_t i, n = 0;

	for (i = 0; i < npages; i++) {
		if (!(bm[i / 64] >> (i % 64) & 1))
			continue;
		if (n && out[n - 1].start + out[n - 1].len == i) {
			out[n - 1].len++;
		} else {
			assert_true(n < cap);
			out[n].start = i;
			out[n].len = 1;
			n++;
		}
	}
	return n;
}

static void set_bit(uint64_t *bm, size_t i)
{
	bm[i / 64] |= 1ull << (i % 64);
}

static void test_empty(void **state)
{
	uint64_t bm[4] = { 0 };
	struct run r[4] = { { 0, 0 } };

	(void)state;
	assert_int_equal(rdmae_bitmap_count(bm, 256), 0);
	assert_int_equal(runs_of(bm, 256, r, 4), 0);
	assert_int_equal(runs_of(bm, 0, r, 4), 0);
}

static void test_full(void **state)
{
	uint64_t bm[4];
	struct run r[4] = { { 0, 0 } };

	(void)state;
	memset(bm, 0xff, sizeof(bm));
	assert_int_equal(rdmae_bitmap_count(bm, 256), 256);
	assert_int_equal(runs_of(bm, 256, r, 4), 1);
	assert_int_equal(r[0].start, 0);
	assert_int_equal(r[0].len, 256);
}

static void test_first_and_last_page(void **state)
{
	uint64_t bm[3] = { 0 };
	struct run r[4] = { { 0, 0 } };

	(void)state;
	set_bit(bm, 0);
	set_bit(bm, 191);
	assert_int_equal(rdmae_bitmap_count(bm, 192), 2);
	assert_int_equal(runs_of(bm, 192, r, 4), 2);
	assert_int_equal(r[0].start, 0);
	assert_int_equal(r[0].len, 1);
	assert_int_equal(r[1].start, 191);
	assert_int_equal(r[1].len, 1);
}

static void test_alternating(void **state)
{
	uint64_t bm[2] = { 0x5555555555555555ull, 0xaaaaaaaaaaaaaaaaull };
	struct run r[128] = { { 0, 0 } };
	size_t n, i;

	(void)state;
	assert_int_equal(rdmae_bitmap_count(bm, 128), 64);
	n = runs_of(bm, 128, r, 128);
	/* Page 63 is clear, 64 clear, 65 set: 32 runs in each word. */
	assert_int_equal(n, 64);
	for (i = 0; i < 32; i++) {
		assert_int_equal(r[i].start, 2 * i);
		assert_int_equal(r[i].len, 1);
		assert_int_equal(r[32 + i].start, 65 + 2 * i);
	}
}

static void test_run_across_words(void **state)
{
	uint64_t bm[4] = { 0 };
	struct run r[4] = { { 0, 0 } };
	size_t i;

	(void)state;
	/* 60..200: crosses two word boundaries, includes the whole word 1 and 2 partially. */
	for (i = 60; i < 200; i++)
		set_bit(bm, i);
	assert_int_equal(rdmae_bitmap_count(bm, 256), 140);
	assert_int_equal(runs_of(bm, 256, r, 4), 1);
	assert_int_equal(r[0].start, 60);
	assert_int_equal(r[0].len, 140);

	/* Ends exactly on a word boundary. */
	memset(bm, 0, sizeof(bm));
	for (i = 64; i < 128; i++)
		set_bit(bm, i);
	assert_int_equal(runs_of(bm, 256, r, 4), 1);
	assert_int_equal(r[0].start, 64);
	assert_int_equal(r[0].len, 64);
}

static void test_garbage_past_end(void **state)
{
	uint64_t bm[2];
	struct run r[4] = { { 0, 0 } };

	(void)state;
	/* 100 pages: bits 100..127 are garbage and must be ignored. */
	bm[0] = 0;
	bm[1] = ~0ull;
	assert_int_equal(rdmae_bitmap_count(bm, 100), 36);
	assert_int_equal(runs_of(bm, 100, r, 4), 1);
	assert_int_equal(r[0].start, 64);
	assert_int_equal(r[0].len, 36);

	/* Only garbage set. */
	bm[1] = ~0ull << 36;
	assert_int_equal(rdmae_bitmap_count(bm, 100), 0);
	assert_int_equal(runs_of(bm, 100, r, 4), 0);

	/* Fewer pages than one word. */
	bm[0] = ~0ull;
	assert_int_equal(rdmae_bitmap_count(bm, 5), 5);
	assert_int_equal(runs_of(bm, 5, r, 4), 1);
	assert_int_equal(r[0].len, 5);
}

static void test_next_run_resumes(void **state)
{
	uint64_t bm[2] = { 0xf0f0ull, 0 };
	size_t pos = 6, s, l;

	(void)state;
	/* Starting inside a run gives its tail. */
	assert_true(rdmae_bitmap_next_run(bm, 128, &pos, &s, &l));
	assert_int_equal(s, 6);
	assert_int_equal(l, 2);
	assert_int_equal(pos, 8);
	assert_true(rdmae_bitmap_next_run(bm, 128, &pos, &s, &l));
	assert_int_equal(s, 12);
	assert_false(rdmae_bitmap_next_run(bm, 128, &pos, &s, &l));
	pos = 500;
	assert_false(rdmae_bitmap_next_run(bm, 128, &pos, &s, &l));
	assert_int_equal(pos, 128);
}

static void test_random_vs_reference(void **state)
{
	enum { WORDS = 40 };
	uint64_t bm[WORDS];
	struct run a[WORDS * 64], b[WORDS * 64];
	unsigned int seed = 12345;
	int iter;

	(void)state;
	for (iter = 0; iter < 300; iter++) {
		size_t npages = 1 + (size_t)rand_r(&seed) % ((size_t)WORDS * 64), na, nb, i;
		uint64_t cnt = 0;

		for (i = 0; i < WORDS; i++) {
			uint64_t w = (uint64_t)rand_r(&seed) << 33 ^ (uint64_t)rand_r(&seed) << 11 ^
				     (uint64_t)rand_r(&seed);
			/* Some words empty or full, so that long runs happen. */
			switch (rand_r(&seed) % 4) {
			case 0: w = 0; break;
			case 1: w = ~0ull; break;
			default: break;
			}
			bm[i] = w;
		}
		na = runs_of(bm, npages, a, (size_t)WORDS * 64);
		nb = runs_ref(bm, npages, b, (size_t)WORDS * 64);
		assert_int_equal(na, nb);
		for (i = 0; i < na; i++) {
			assert_int_equal(a[i].start, b[i].start);
			assert_int_equal(a[i].len, b[i].len);
			cnt += b[i].len;
		}
		assert_int_equal(rdmae_bitmap_count(bm, npages), cnt);
	}
}

static void test_zero_page(void **state)
{
	uint8_t *p = calloc(1, PS + 8);

	(void)state;
	assert_non_null(p);
	assert_true(rdmae_page_is_zero(p, PS));
	p[0] = 1;
	assert_false(rdmae_page_is_zero(p, PS));
	p[0] = 0;
	p[PS - 1] = 0x80;
	assert_false(rdmae_page_is_zero(p, PS));
	/* Past the page does not count. */
	p[PS - 1] = 0;
	p[PS] = 1;
	assert_true(rdmae_page_is_zero(p, PS));
	/* Unaligned start and a size that is not a multiple of 8. */
	assert_true(rdmae_page_is_zero(p + 1, 13));
	p[13] = 1;
	assert_false(rdmae_page_is_zero(p + 1, 13));
	free(p);
}

struct rec {
	char kind;		/* 'd' or 'z' */
	size_t first, n;
};

struct recs {
	struct rec r[64];
	size_t n;
	int fail_at;		/* callback number that returns an error, -1 none */
};

static int rec_add(struct recs *rs, char kind, size_t first, size_t n)
{
	assert_true(rs->n < 64);
	if ((int)rs->n == rs->fail_at)
		return -42;
	rs->r[rs->n].kind = kind;
	rs->r[rs->n].first = first;
	rs->r[rs->n].n = n;
	rs->n++;
	return 0;
}

static int on_data(void *arg, size_t first, size_t n)
{
	return rec_add(arg, 'd', first, n);
}

static int on_zero(void *arg, size_t first, size_t n)
{
	return rec_add(arg, 'z', first, n);
}

static void check_rec(const struct recs *rs, size_t i, char kind, size_t first, size_t n)
{
	assert_true(i < rs->n);
	assert_int_equal(rs->r[i].kind, kind);
	assert_int_equal(rs->r[i].first, first);
	assert_int_equal(rs->r[i].n, n);
}

static void test_walk_splits(void **state)
{
	enum { NP = 130 };
	uint8_t *mem = calloc(NP, PS);
	uint64_t bm[3] = { 0 };
	struct recs rs = { .fail_at = -1 };
	struct rdmae_dirty_walk w = {
		.bitmap = bm, .npages = NP, .page_size = PS, .base = mem, .detect_zero = true,
		.data = on_data, .zero = on_zero, .arg = &rs,
	};
	size_t i;

	(void)state;
	assert_non_null(mem);
	/* Dirty 0..9 (data 2..4 and 8), 60..70 (data 62..65, a run across a word), 129. */
	for (i = 0; i < 10; i++)
		set_bit(bm, i);
	for (i = 60; i <= 70; i++)
		set_bit(bm, i);
	set_bit(bm, 129);
	mem[2 * PS] = 1;
	mem[4 * PS + PS - 1] = 1;
	mem[3 * PS + 7] = 1;
	mem[8 * PS + 100] = 1;
	for (i = 62; i <= 65; i++)
		mem[i * PS + 5] = 9;
	mem[129 * PS] = 1;
	/* Clean page 20 is not zero and must not be looked at. */
	mem[20 * PS] = 1;

	assert_int_equal(rdmae_dirty_walk(&w), 0);
	assert_int_equal(rs.n, 9);
	check_rec(&rs, 0, 'z', 0, 2);
	check_rec(&rs, 1, 'd', 2, 3);
	check_rec(&rs, 2, 'z', 5, 3);
	check_rec(&rs, 3, 'd', 8, 1);
	check_rec(&rs, 4, 'z', 9, 1);
	check_rec(&rs, 5, 'z', 60, 2);
	check_rec(&rs, 6, 'd', 62, 4);
	check_rec(&rs, 7, 'z', 66, 5);
	check_rec(&rs, 8, 'd', 129, 1);

	/* Without zero detection every dirty run is data. */
	rs.n = 0;
	w.detect_zero = false;
	assert_int_equal(rdmae_dirty_walk(&w), 0);
	assert_int_equal(rs.n, 3);
	check_rec(&rs, 0, 'd', 0, 10);
	check_rec(&rs, 1, 'd', 60, 11);
	check_rec(&rs, 2, 'd', 129, 1);

	/* A callback's error stops the walk and comes back. */
	rs.n = 0;
	rs.fail_at = 2;
	w.detect_zero = true;
	assert_int_equal(rdmae_dirty_walk(&w), -42);
	assert_int_equal(rs.n, 2);
	free(mem);
}

static void test_walk_bad_args(void **state)
{
	uint64_t bm[1] = { 1 };
	struct recs rs = { .fail_at = -1 };
	struct rdmae_dirty_walk w = {
		.bitmap = bm, .npages = 1, .page_size = PS, .base = NULL, .detect_zero = true,
		.data = on_data, .zero = on_zero, .arg = &rs,
	};

	(void)state;
	assert_int_equal(rdmae_dirty_walk(NULL), -EINVAL);
	/* Zero detection needs memory to look at. */
	assert_int_equal(rdmae_dirty_walk(&w), -EINVAL);
	w.detect_zero = false;
	w.data = NULL;
	assert_int_equal(rdmae_dirty_walk(&w), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_first_and_last_page),
		cmocka_unit_test(test_alternating),
		cmocka_unit_test(test_run_across_words),
		cmocka_unit_test(test_garbage_past_end),
		cmocka_unit_test(test_next_run_resumes),
		cmocka_unit_test(test_random_vs_reference),
		cmocka_unit_test(test_zero_page),
		cmocka_unit_test(test_walk_splits),
		cmocka_unit_test(test_walk_bad_args),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
