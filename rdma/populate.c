/* SPDX-License-Identifier: MIT */
/*
 * Populating memory before it is registered: the allocation and zeroing
 * that pinning fresh guest RAM would otherwise do under the migration's
 * clock, done while a destination waits (or by rdmae_region_prepare).
 * A file of its own: the mocked verbs replace mem.c, not this.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include "rdmae_region.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23	/* linux/mman.h, Linux 5.14 */
#endif

/* Write-populate: the kernel allocates every page now and leaves its contents as they are. */
int rdmae_populate(void *mem, size_t len, size_t page_size)
{
	uint8_t *addr = mem;

	uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(page_size - 1);

	if (!madvise((void *)a, len + ((uintptr_t)addr - a), MADV_POPULATE_WRITE))
		return 0;
	/* EINVAL: a kernel before 5.14; anything else is a real failure (ENOMEM, EFAULT). */
	if (errno != EINVAL)
		return -errno;
	/*
	 * Write-fault one byte per page without changing it: an atomic add of
	 * zero is a write the compiler cannot drop, and stays right if someone
	 * else writes the page meanwhile.
	 */
	for (size_t off = 0; off < len; off += page_size)
		__atomic_fetch_add(addr + off, (uint8_t)0, __ATOMIC_RELAXED);
	return 0;
}
