/* SPDX-License-Identifier: MIT */
#include "pagesums.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "checksum.h"
#include "rdmae_dirty.h"

/* Page sums per digest update: amortizes the streaming overhead. */
#define SUMS_PER_UPDATE 512
/* Stale-bitmap words between polls of the stop flag (at most 64 pages each). */
#define WORDS_PER_POLL 16

int rdmae_pagesums_init(struct rdmae_pagesums *ps, uint64_t npages, size_t page_size,
			struct rdmae_err *err)
{
	size_t words = rdmae_bitmap_words(npages);
	void *zeros;

	memset(ps, 0, sizeof(*ps));
	ps->npages = npages;
	ps->page_size = page_size;
	ps->sums = calloc(npages, sizeof(*ps->sums));
	ps->stale = malloc(words * sizeof(*ps->stale));
	/* Page-sized and zero: calloc maps large ones lazily, so this costs one read pass. */
	zeros = calloc(1, page_size);
	if (!ps->sums || !ps->stale || !zeros) {
		free(zeros);
		rdmae_pagesums_free(ps);
		return rdmae_err_set(err, -ENOMEM, "page sums: out of memory for %llu pages",
				     (unsigned long long)npages);
	}
	ps->zero_sum = rdmae_page_sum(zeros, page_size);
	free(zeros);
	memset(ps->stale, 0xff, words * sizeof(*ps->stale));
	if (npages % RDMAE_BITS_PER_WORD)
		ps->stale[words - 1] = (1ull << (npages % RDMAE_BITS_PER_WORD)) - 1;
	return 0;
}

void rdmae_pagesums_free(struct rdmae_pagesums *ps)
{
	free(ps->sums);
	free(ps->stale);
	ps->sums = NULL;
	ps->stale = NULL;
}

void rdmae_pagesums_mark(struct rdmae_pagesums *ps, uint64_t first, uint64_t n)
{
	uint64_t p;

	for (p = first; p < first + n; p++)
		ps->stale[p / RDMAE_BITS_PER_WORD] |= 1ull << (p % RDMAE_BITS_PER_WORD);
}

void rdmae_pagesums_set_zero(struct rdmae_pagesums *ps, uint64_t first, uint64_t n)
{
	uint64_t p;

	for (p = first; p < first + n; p++) {
		ps->sums[p] = ps->zero_sum;
		ps->stale[p / RDMAE_BITS_PER_WORD] &= ~(1ull << (p % RDMAE_BITS_PER_WORD));
	}
}

void rdmae_pagesums_zero_filled(struct rdmae_pagesums *ps, uint64_t first, uint64_t n)
{
	uint64_t p;

	for (p = first; p < first + n; p++)
		if (!(ps->stale[p / RDMAE_BITS_PER_WORD] & (1ull << (p % RDMAE_BITS_PER_WORD))))
			ps->sums[p] = ps->zero_sum;
}

void rdmae_pagesums_hash(struct rdmae_pagesums *ps, const void *base, uint64_t first,
			 uint64_t n)
{
	uint64_t p;

	rdmae_page_sums(base, ps->page_size, first, n, ps->sums + first);
	for (p = first; p < first + n; p++)
		ps->stale[p / RDMAE_BITS_PER_WORD] &= ~(1ull << (p % RDMAE_BITS_PER_WORD));
}

int rdmae_pagesums_hash_stale(struct rdmae_pagesums *ps, const void *base,
			      const atomic_bool *stop, uint64_t *hashed, struct rdmae_err *err)
{
	size_t w, words = rdmae_bitmap_words(ps->npages);
	uint64_t count = 0;

	for (w = 0; w < words; w++) {
		uint64_t bits = ps->stale[w];

		if (stop && w % WORDS_PER_POLL == 0 && atomic_load(stop)) {
			if (hashed)
				*hashed = count;
			return rdmae_err_set(err, -ECANCELED, "page sums: cancelled at page %llu",
					     (unsigned long long)w * RDMAE_BITS_PER_WORD);
		}
		while (bits) {
			uint64_t p = w * RDMAE_BITS_PER_WORD + (uint64_t)__builtin_ctzll(bits);

			bits &= bits - 1;
			ps->sums[p] = rdmae_page_sum((const uint8_t *)base + p * ps->page_size,
						     ps->page_size);
			count++;
		}
		ps->stale[w] = 0;
	}
	if (hashed)
		*hashed = count;
	return 0;
}

uint64_t rdmae_pagesums_stale(const struct rdmae_pagesums *ps)
{
	size_t w, words = rdmae_bitmap_words(ps->npages);
	uint64_t n = 0;

	for (w = 0; w < words; w++)
		n += (uint64_t)__builtin_popcountll(ps->stale[w]);
	return n;
}

void rdmae_pagesums_store(struct rdmae_pagesums *ps, uint64_t page, uint64_t sum)
{
	if (sum == RDMAE_PAGESUM_UNSENT)
		sum = 1;
	__atomic_store_n(&ps->sums[page], sum, __ATOMIC_RELAXED);
}

int rdmae_pagesums_digest(const struct rdmae_pagesums *ps, uint64_t *sum, struct rdmae_err *err)
{
	uint64_t vec[SUMS_PER_UPDATE];
	XXH3_state_t *st;
	uint64_t i;
	size_t n = 0;

	/* Same definition as rdmae_block_sum: XXH3 over the little-endian page sums. */
	st = XXH3_createState();
	if (!st)
		return rdmae_err_set(err, -ENOMEM, "page sums: cannot allocate XXH3 state");
	XXH3_64bits_reset(st);
	for (i = 0; i < ps->npages; i++) {
		/* Relaxed: the external path's threads store with atomics (rdmae_pagesums_store). */
		vec[n++] = htole64(__atomic_load_n(&ps->sums[i], __ATOMIC_RELAXED));
		if (n == SUMS_PER_UPDATE) {
			XXH3_64bits_update(st, vec, n * sizeof(vec[0]));
			n = 0;
		}
	}
	if (n)
		XXH3_64bits_update(st, vec, n * sizeof(vec[0]));
	*sum = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return 0;
}
