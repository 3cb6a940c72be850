/* SPDX-License-Identifier: MIT */
#include "rdmae_dirty.h"

#include <errno.h>
#include <string.h>

/* Bits at or above `from` within a word. */
static inline uint64_t mask_from(size_t from)
{
	return ~0ull << (from % RDMAE_BITS_PER_WORD);
}

uint64_t rdmae_bitmap_count(const uint64_t *bm, size_t npages)
{
	size_t full = npages / RDMAE_BITS_PER_WORD;
	size_t tail = npages % RDMAE_BITS_PER_WORD;
	uint64_t n = 0;
	size_t i;

	for (i = 0; i < full; i++)
		n += (uint64_t)__builtin_popcountll(bm[i]);
	/* Bits past npages may hold garbage (the log is rounded up to words). */
	if (tail)
		n += (uint64_t)__builtin_popcountll(bm[full] & ~mask_from(tail));
	return n;
}

bool rdmae_bitmap_next_run(const uint64_t *bm, size_t npages, size_t *pos, size_t *start,
			   size_t *len)
{
	size_t nwords = rdmae_bitmap_words(npages);
	size_t p = *pos;
	size_t wi, s, e;
	uint64_t w;

	if (p >= npages) {
		*pos = npages;
		return false;
	}

	wi = p / RDMAE_BITS_PER_WORD;
	w = bm[wi] & mask_from(p);
	while (!w) {
		if (++wi >= nwords) {
			*pos = npages;
			return false;
		}
		w = bm[wi];
	}
	s = wi * RDMAE_BITS_PER_WORD + (size_t)__builtin_ctzll(w);
	if (s >= npages) {
		*pos = npages;
		return false;
	}

	/* The run ends at the first clear bit after s: scan the complement. */
	w = ~bm[wi] & mask_from(s);
	while (!w) {
		if (++wi >= nwords)
			break;
		w = ~bm[wi];
	}
	e = wi < nwords ? wi * RDMAE_BITS_PER_WORD + (size_t)__builtin_ctzll(w) : npages;
	if (e > npages)
		e = npages;

	*start = s;
	*len = e - s;
	*pos = e;
	return true;
}

bool rdmae_page_is_zero(const void *page, size_t page_size)
{
	const unsigned char *p = page;
	size_t words = page_size / sizeof(uint64_t);
	size_t i;
	uint64_t w;

	/*
	 * Most dirty pages hold data that starts non-zero, so the first word
	 * decides; memcpy keeps unaligned callers defined and compiles to a load.
	 */
	for (i = 0; i < words; i++) {
		memcpy(&w, p + i * sizeof(w), sizeof(w));
		if (w)
			return false;
	}
	for (i = words * sizeof(uint64_t); i < page_size; i++)
		if (p[i])
			return false;
	return true;
}

static int emit(const struct rdmae_dirty_walk *w, bool zero, size_t first, size_t n)
{
	return zero ? w->zero(w->arg, first, n) : w->data(w->arg, first, n);
}

int rdmae_dirty_walk(const struct rdmae_dirty_walk *w)
{
	size_t pos = 0, start, len;
	int rc;

	if (!w || !w->data || (w->npages && !w->bitmap))
		return -EINVAL;
	if (w->detect_zero && (!w->zero || !w->base || !w->page_size))
		return -EINVAL;

	while (rdmae_bitmap_next_run(w->bitmap, w->npages, &pos, &start, &len)) {
		size_t first = start, p;
		bool zero;

		if (!w->detect_zero) {
			rc = w->data(w->arg, start, len);
			if (rc)
				return rc;
			continue;
		}
		zero = rdmae_page_is_zero(w->base + start * w->page_size, w->page_size);
		for (p = start + 1; p < start + len; p++) {
			bool z = rdmae_page_is_zero(w->base + p * w->page_size, w->page_size);

			if (z == zero)
				continue;
			rc = emit(w, zero, first, p - first);
			if (rc)
				return rc;
			first = p;
			zero = z;
		}
		rc = emit(w, zero, first, start + len - first);
		if (rc)
			return rc;
	}
	return 0;
}
