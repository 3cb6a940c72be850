/* SPDX-License-Identifier: MIT */
/*
 * Memory for the transport's own rings. It sits on the NIC's NUMA node so
 * that the device's DMA and the CPU that copies messages in and out do not
 * cross the interconnect, and on huge pages when the system has reserved
 * some, so that the NIC needs one translation entry per 2 MiB.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <hugetlbfs.h>
#include <numa.h>

#include "mem.h"
#include "rdmae_region.h"

void *rdmae_mem_alloc(size_t len, int numa_node, bool *huge)
{
	void *p = NULL;
	long hps = gethugepagesize();

	*huge = false;
	/*
	 * Only ask libhugetlbfs when huge pages are configured at all; GHR_STRICT
	 * makes it fail instead of silently handing back small pages, so the
	 * caller knows which free to use.
	 */
	if (hps > 0 && len >= (size_t)hps) {
		p = get_hugepage_region(len, GHR_STRICT);
		if (p)
			*huge = true;
	}
	if (!p) {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
	}
	/* Bind before first touch: the placement is decided by the first fault. */
	if (numa_node >= 0 && numa_available() >= 0)
		numa_tonode_memory(p, len, numa_node);
	/*
	 * Fault every page in now, writable (a ring registered without local
	 * write must not be pinned on the shared zero page), in one call: the
	 * kernel zeroes them without a trap per page, which on the bench's
	 * emulated CPUs was most of a lane's setup (memset: 20 ms per MiB).
	 * The memory is zero either way; memset only if populating fails.
	 */
	if (rdmae_populate(p, len, *huge ? (size_t)hps : 4096))
		memset(p, 0, len);
	return p;
}

void rdmae_mem_free(void *p, size_t len, bool huge)
{
	if (!p)
		return;
	if (huge)
		free_hugepage_region(p);
	else
		munmap(p, len);
}

int rdmae_device_numa_node(struct ibv_context *verbs)
{
	char path[PATH_MAX];
	FILE *f;
	int node = -1;

	/* Soft devices (rxe) have no PCI parent and so no numa_node file: -1. */
	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/device/numa_node",
		 ibv_get_device_name(verbs->device));
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &node) != 1)
		node = -1;
	fclose(f);
	return node;
}
