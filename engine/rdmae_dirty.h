/* SPDX-License-Identifier: MIT */
/*
 * From a dirty bitmap (one bit per page, bit i of word i/64, as KVM's dirty
 * log gives it) to runs of pages. Zero pages are split out so that they can
 * travel as descriptors while everything else stays zero-copy.
 */
#ifndef RDMAE_DIRTY_H
#define RDMAE_DIRTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RDMAE_BITS_PER_WORD 64

/* Words needed for npages bits. */
static inline size_t rdmae_bitmap_words(size_t npages)
{
	return (npages + RDMAE_BITS_PER_WORD - 1) / RDMAE_BITS_PER_WORD;
}

/* Count set bits among the first npages. */
uint64_t rdmae_bitmap_count(const uint64_t *bm, size_t npages);

/*
 * Find the next run of set bits at or after *pos. Returns false when there is
 * none; otherwise *start and *len describe the run and *pos moves past it.
 * Bits past npages are ignored.
 */
bool rdmae_bitmap_next_run(const uint64_t *bm, size_t npages, size_t *pos, size_t *start,
			   size_t *len);

/* Is the page all zero bytes? Reads only as far as the first non-zero word. */
bool rdmae_page_is_zero(const void *page, size_t page_size);

/*
 * Walk the dirty runs of a block and hand each maximal run of non-zero
 * pages to data() and each maximal run of zero pages to zero(), in page
 * order. With detect_zero false every dirty page goes to data(). Stops at
 * the first callback that returns non-zero and returns that value.
 */
struct rdmae_dirty_walk {
	const uint64_t *bitmap;
	size_t npages;
	size_t page_size;
	const uint8_t *base;		/* the block's memory, for zero detection */
	bool detect_zero;
	int (*data)(void *arg, size_t first_page, size_t npages);
	int (*zero)(void *arg, size_t first_page, size_t npages);
	void *arg;
};

int rdmae_dirty_walk(const struct rdmae_dirty_walk *w);

#endif
