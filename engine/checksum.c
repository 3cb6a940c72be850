/* SPDX-License-Identifier: MIT */
#include "checksum.h"

#include <endian.h>
#include <errno.h>
#include <xxhash.h>

/* Page sums hashed per update call: amortizes the streaming overhead. */
#define SUMS_PER_UPDATE 512
/* Pages between polls of the stop flag (a few MiB of hashing). */
#define PAGES_PER_POLL 1024

uint64_t rdmae_page_sum(const void *page, size_t page_size)
{
	return XXH3_64bits(page, page_size);
}

int rdmae_block_sum(const void *base, size_t npages, size_t page_size, const atomic_bool *stop,
		    uint64_t *sum, struct rdmae_err *err)
{
	const unsigned char *p = base;
	uint64_t vec[SUMS_PER_UPDATE];
	XXH3_state_t *st;
	size_t i, n = 0;
	int rc = 0;

	st = XXH3_createState();
	if (!st)
		return rdmae_err_set(err, -ENOMEM, "block checksum: cannot allocate XXH3 state");
	if (XXH3_64bits_reset(st) != XXH_OK) {
		rc = rdmae_err_set(err, -EINVAL, "block checksum: XXH3 reset failed");
		goto out;
	}
	for (i = 0; i < npages; i++) {
		if (stop && i % PAGES_PER_POLL == 0 && atomic_load(stop)) {
			rc = rdmae_err_set(err, -ECANCELED, "block checksum: cancelled at page %zu",
					   i);
			goto out;
		}
		vec[n++] = htole64(XXH3_64bits(p + i * page_size, page_size));
		if (n == SUMS_PER_UPDATE) {
			XXH3_64bits_update(st, vec, n * sizeof(vec[0]));
			n = 0;
		}
	}
	if (n)
		XXH3_64bits_update(st, vec, n * sizeof(vec[0]));
	*sum = XXH3_64bits_digest(st);
out:
	XXH3_freeState(st);
	return rc;
}

void rdmae_page_sums(const void *base, size_t page_size, uint64_t first, uint64_t n,
		     uint64_t *out)
{
	const unsigned char *p = base;
	uint64_t i;

	for (i = 0; i < n; i++)
		out[i] = XXH3_64bits(p + (first + i) * page_size, page_size);
}
