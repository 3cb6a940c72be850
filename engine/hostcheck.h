/* SPDX-License-Identifier: MIT */
/*
 * Checks of the destination host before it pins guest RAM, internal to the
 * engine. Each returns 0, or a negative errno with a message in why that
 * says what is wrong and what was found.
 */
#ifndef RDMAE_HOSTCHECK_H
#define RDMAE_HOSTCHECK_H

#include <stddef.h>
#include <stdint.h>

/*
 * Can this process pin `bytes`? Passes with RLIMIT_MEMLOCK infinite or at
 * least bytes, or with CAP_IPC_LOCK (the kernel then ignores the limit).
 */
int rdmae_check_memlock(uint64_t bytes, char *why, size_t whylen);

/* Is every page of [addr, addr + len) mapped on huge pages (hugetlbfs)? */
int rdmae_check_hugepages(const void *addr, size_t len, char *why, size_t whylen);

#endif
