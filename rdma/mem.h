/* SPDX-License-Identifier: MIT */
/*
 * L1: ring memory on the device's NUMA node, on huge pages when there are
 * any (mem.c). Not installed.
 */
#ifndef RDMAE_MEM_H
#define RDMAE_MEM_H

#include <stdbool.h>
#include <stddef.h>

#include <infiniband/verbs.h>

void *rdmae_mem_alloc(size_t len, int numa_node, bool *huge);
void rdmae_mem_free(void *p, size_t len, bool huge);
/* The device's NUMA node from sysfs, -1 when it has none (soft devices). */
int rdmae_device_numa_node(struct ibv_context *verbs);

#endif
