/* SPDX-License-Identifier: MIT */
/*
 * Zero-copy registration of an existing mapping (guest RAM as it is).
 *
 * PIN_ALL registers the whole mapping at once (as several MRs when it is
 * larger than one descriptor can describe). ON_DEMAND registers fixed-size
 * chunks when a transfer first touches them, in a per-connection cache that
 * unpins the least recently used idle chunks once the pinned total passes a
 * bound. Chunks are aligned to the mapping's page size, so huge-page memory
 * is pinned as whole huge pages. ODP (implicit on-demand paging) is used for
 * ON_DEMAND when the device reports it.
 */
#ifndef RDMAE_REGION_H
#define RDMAE_REGION_H

#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"
#include "rdmae_wire.h"

struct rdmae_conn;
struct rdmae_region;

enum rdmae_reg_mode {
	RDMAE_REG_PIN_ALL = 0,
	RDMAE_REG_ON_DEMAND,
};

/* Largest span one buffer descriptor covers; regions are split at this. */
#define RDMAE_DESC_SPAN (1ull << 30)

struct rdmae_region_opts {
	enum rdmae_reg_mode mode;
	int remote_write;		/* the peer may RDMA WRITE into it (destination) */
	size_t chunk_size;		/* ON_DEMAND chunk; default 16 MiB */
	size_t page_size;		/* mapping's page size; 0 = detect */
	/*
	 * The peer may RDMA READ from it. Only for buffers made to be read
	 * (rdmae-perf's READ test): never for guest RAM, which stays out of
	 * the peer's reach on the source. PIN_ALL only, like remote_write.
	 */
	int remote_read;
	int local_write;		/* RDMA READs land in it (rdmae_read's local side) */
};

int rdmae_region_create(struct rdmae_region **out, struct rdmae_conn *c, void *addr, size_t len,
			const struct rdmae_region_opts *o, struct rdmae_err *err);
void rdmae_region_destroy(struct rdmae_region *r);

/*
 * The descriptors that let the peer write (or read) the whole region, one
 * per RDMAE_DESC_SPAN, in order. PIN_ALL with remote_write or remote_read
 * only. *n receives the count; -ENOSPC when cap is too small.
 */
int rdmae_region_bufdescs(const struct rdmae_region *r, struct rdmae_bufdesc *out, size_t cap,
			  size_t *n, struct rdmae_err *err);

size_t rdmae_region_len(const struct rdmae_region *r);
void *rdmae_region_addr(const struct rdmae_region *r);
size_t rdmae_region_page_size(const struct rdmae_region *r);

/*
 * Page size backing the mapping at addr (4096, or the huge page size for
 * hugetlbfs mappings), read from /proc/self/smaps; 0 if addr is not mapped.
 * When end is not NULL it receives the first address past that mapping.
 */
size_t rdmae_mapping_page_size(const void *addr, uintptr_t *end);

/* Per-connection pin bound for ON_DEMAND chunks (default 256 MiB). */
void rdmae_conn_set_pin_limit(struct rdmae_conn *c, size_t bytes);
/* Bytes pinned now by ON_DEMAND chunks of this connection. */
size_t rdmae_conn_pinned(struct rdmae_conn *c);

#endif
