/* SPDX-License-Identifier: MIT */
/*
 * Per-page checksums kept through a migration, so that verification at stop
 * hashes only what the final round moved (doc/protocol-engine.md,
 * "Checksums", has the correctness argument).
 *
 * Each side keeps, per block, the XXH3 sum of every page as of the last time
 * it was hashed, and a "stale" bitmap of pages without a current sum (never
 * hashed, or written since). The source hashes the pages it sends, as it
 * sends them; the destination marks the pages a round wrote (DATA_RUNS) and
 * hashes every stale page once the round's fence has arrived. A block's sum
 * is then the digest of its page sums, exactly as rdmae_block_sum computes
 * it from memory.
 */
#ifndef RDMAE_PAGESUMS_H
#define RDMAE_PAGESUMS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"

struct rdmae_pagesums {
	uint64_t npages;
	size_t page_size;
	uint64_t *sums;			/* npages */
	uint64_t *stale;		/* bitmap, one bit per page */
	uint64_t zero_sum;		/* sum of a page of zeros */
};

/* Every page starts stale. -ENOMEM with the block named by the caller. */
int rdmae_pagesums_init(struct rdmae_pagesums *ps, uint64_t npages, size_t page_size,
			struct rdmae_err *err);
void rdmae_pagesums_free(struct rdmae_pagesums *ps);

/* Pages first .. first + n - 1 were (or are being) written: hash them again later. */
void rdmae_pagesums_mark(struct rdmae_pagesums *ps, uint64_t first, uint64_t n);
/* Source: the pages are zero (the walk just read them so): their sum is known. */
void rdmae_pagesums_set_zero(struct rdmae_pagesums *ps, uint64_t first, uint64_t n);
/*
 * Destination: the pages were zero-filled here. Pages that are stale keep
 * their mark (a WRITE of the same round may still land): they are hashed
 * from memory after the fence.
 */
void rdmae_pagesums_zero_filled(struct rdmae_pagesums *ps, uint64_t first, uint64_t n);
/* Hash pages first .. first + n - 1 of base now. */
void rdmae_pagesums_hash(struct rdmae_pagesums *ps, const void *base, uint64_t first,
			 uint64_t n);
/*
 * Hash every stale page of base; *hashed (may be NULL) receives how many.
 * Polls *stop (may be NULL) and returns -ECANCELED once it is set.
 */
int rdmae_pagesums_hash_stale(struct rdmae_pagesums *ps, const void *base,
			      const atomic_bool *stop, uint64_t *hashed, struct rdmae_err *err);
/* Pages without a current sum: what hash_stale would hash now. */
uint64_t rdmae_pagesums_stale(const struct rdmae_pagesums *ps);
/*
 * The external data path (rdmae_session_page_sum): the caller's threads
 * store sums themselves, and the stale bitmap is not used. A sum of 0 means
 * "never sent" on both sides (calloc's), so a stored sum of 0 is kept as 1:
 * the block digest then covers exactly the pages some side named, and a
 * page named on one side only differs. Lock-free: one relaxed atomic store,
 * from any thread; the digest reads with relaxed atomic loads, after the
 * caller's own synchronisation (every store returned before the commit).
 */
#define RDMAE_PAGESUM_UNSENT 0ull
void rdmae_pagesums_store(struct rdmae_pagesums *ps, uint64_t page, uint64_t sum);
/* Block sum over the page sums (all of them current: hash_stale first). */
int rdmae_pagesums_digest(const struct rdmae_pagesums *ps, uint64_t *sum, struct rdmae_err *err);

#endif
