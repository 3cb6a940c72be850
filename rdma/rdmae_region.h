/* SPDX-License-Identifier: MIT */
/*
 * Zero-copy registration of an existing mapping (guest RAM as it is).
 *
 * PIN_ALL registers the whole mapping at once (as several MRs when it is
 * larger than one descriptor can describe). ON_DEMAND registers fixed-size
 * chunks when a transfer first touches them, in a per-connection cache that
 * unpins the least recently used idle chunks once the pinned total passes a
 * bound. Chunks are aligned to the mapping's page size, so huge-page memory
 * is pinned as whole huge pages. ODP (explicit on-demand paging, one MR over
 * the region) is used for ON_DEMAND when the device reports it. ODP
 * registers the region as PIN_ALL does, with on-demand paging instead of
 * pinning.
 *
 * Two ways to make a region:
 *   - rdmae_region_create(c): on connection c's PD, usable on c at once,
 *     freed with c if not destroyed before (ON_DEMAND chunks count against
 *     c's pin limit, rdmae_conn_set_pin_limit);
 *   - rdmae_region_prepare(dev) with no connection: PIN_ALL memory is
 *     populated and registered on the device's PD (ON_DEMAND memory is
 *     left as it is: populating it would commit the whole range, which
 *     ON_DEMAND exists to avoid), but no rkey leaves
 *     the host until rdmae_region_attach makes it usable on one connected,
 *     authenticated connection on that device. A prepared region belongs to
 *     its caller: it outlives the connections it is attached to (their
 *     destroy detaches it), so a retried migration reuses what is pinned.
 *     An ON_DEMAND prepared region has a pin cache of its own, bounded by
 *     opts.pin_limit (it does not count in rdmae_conn_pinned).
 */
#ifndef RDMAE_REGION_H
#define RDMAE_REGION_H

#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"
#include "rdmae_wire.h"

struct rdmae_conn;
struct rdmae_dev;
struct rdmae_region;

enum rdmae_reg_mode {
	RDMAE_REG_PIN_ALL = 0,
	RDMAE_REG_ON_DEMAND,
	/*
	 * Explicit on-demand paging: MRs over the region (one per
	 * RDMAE_DESC_SPAN, like PIN_ALL, and advertisable with remote_write),
	 * registered with IBV_ACCESS_ON_DEMAND, so nothing is pinned and the
	 * memlock limit does not apply. Only where the device serves RC WRITE
	 * from ODP memory (rdmae_dev_odp_write); -EOPNOTSUPP elsewhere, rxe on
	 * Linux 6.1 included.
	 */
	RDMAE_REG_ODP,
	/*
	 * Not a region mode (regions refuse it): the engine's default policy,
	 * rdmae_session_opts.reg_mode. The source pins all; the destination
	 * uses ODP where the device has it and pins otherwise.
	 */
	RDMAE_REG_AUTO,
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
	size_t pin_limit;		/* prepared ON_DEMAND: its own pin bound; default 256 MiB */
};

/* Prepare on c's PD and attach to c: usable on c at once. */
int rdmae_region_create(struct rdmae_region **out, struct rdmae_conn *c, void *addr, size_t len,
			const struct rdmae_region_opts *o, struct rdmae_err *err);
/*
 * Without a connection: for PIN_ALL, populate [addr, addr+len) (every page
 * allocated now, contents kept) and register it on d's PD; ON_DEMAND is
 * neither populated nor registered now (its chunks fault in and pin as
 * they are used, so a source does not commit all of a guest's RAM). Nothing is
 * advertised yet: rdmae_region_bufdescs refuses (-EPERM) until attached.
 * The region holds a reference on d.
 */
int rdmae_region_prepare(struct rdmae_region **out, struct rdmae_dev *d, void *addr, size_t len,
			 const struct rdmae_region_opts *o, struct rdmae_err *err);
/*
 * Make a prepared region usable on c (rdmae_write, rdmae_read, bufdescs):
 * c must be connected (negotiated and authenticated) and use r's device
 * (rdmae_conn_opts.dev); -EBUSY if r is attached to another connection.
 */
int rdmae_region_attach(struct rdmae_region *r, struct rdmae_conn *c, struct rdmae_err *err);
/*
 * Undo attach: waits (bounded) for WRs in flight on the connection, then r
 * is no longer usable there. The pinned memory stays. Not for a region made
 * by rdmae_region_create.
 */
void rdmae_region_detach(struct rdmae_region *r);
/* Detach (waiting for WRs in flight that read it), deregister, free. */
void rdmae_region_destroy(struct rdmae_region *r);
/*
 * Contract: a region must not be detached or destroyed while an rdmae_write
 * or rdmae_read from (or into) it is in progress on another thread, like
 * freeing a buffer in use. A detach that still races with one is caught
 * where the call takes or retakes a lane's lock: it fails with -ENOLINK,
 * naming the region. A destroy cannot be caught: the region is gone.
 * A detach whose wait for WRs in flight runs out (5 s) with a PIN_ALL
 * region still possibly read by them fails the connection and drains its
 * QP before the region's MRs may go.
 */

/*
 * The descriptors that let the peer write (or read) the whole region, one
 * per RDMAE_DESC_SPAN, in order. PIN_ALL or ODP with remote_write or
 * remote_read only, and attached to a connection (-EPERM before: no rkey leaves the host
 * before the peer has authenticated). *n receives the count; -ENOSPC when
 * cap is too small.
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

/*
 * Commit every page of [addr, addr + len) now, contents kept
 * (MADV_POPULATE_WRITE, or a write fault per page on kernels before 5.14):
 * the allocation and zeroing that registering fresh memory would otherwise
 * do under the migration's clock. Nothing becomes remotely accessible: a
 * destination waiting for its source populates, and registers only after
 * authentication. page_size: the mapping's (4096, or its huge page size).
 * 0, or -ENOMEM / -EFAULT.
 */
int rdmae_populate(void *addr, size_t len, size_t page_size);

/* Per-connection pin bound for ON_DEMAND chunks (default 256 MiB). */
void rdmae_conn_set_pin_limit(struct rdmae_conn *c, size_t bytes);
/* Bytes pinned now by ON_DEMAND chunks of this connection. */
size_t rdmae_conn_pinned(struct rdmae_conn *c);

#endif
