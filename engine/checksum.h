/* SPDX-License-Identifier: MIT */
/*
 * Memory checksums for commit verification, internal to the engine.
 *
 * A page's sum is XXH3-64 of its bytes; a block's sum is XXH3-64 over the
 * vector of its page sums, each as 8 little-endian bytes, so that both hosts
 * agree whatever their byte order, and so that a mismatching block can be
 * narrowed to its first differing page by comparing page sums alone.
 */
#ifndef RDMAE_CHECKSUM_H
#define RDMAE_CHECKSUM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"

uint64_t rdmae_page_sum(const void *page, size_t page_size);

/*
 * Block sum in one pass over npages pages at base. Polls *stop now and then
 * (NULL = never) and returns -ECANCELED once it is set. -ENOMEM when the
 * hash state cannot be allocated.
 */
int rdmae_block_sum(const void *base, size_t npages, size_t page_size, const atomic_bool *stop,
		    uint64_t *sum, struct rdmae_err *err);

/* Page sums of pages first .. first + n - 1 into out[0 .. n - 1]. */
void rdmae_page_sums(const void *base, size_t page_size, uint64_t first, uint64_t n,
		     uint64_t *out);

#endif
