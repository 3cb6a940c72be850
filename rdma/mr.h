/* SPDX-License-Identifier: MIT */
/*
 * mr.c's internals (L1): memory regions, the on-demand chunk cache and its
 * refcounts. Not installed. mr.c knows no lane and no connection, and never
 * waits: where a chunk cannot be pinned now it says -EAGAIN, and the caller
 * (the connection, L2/L3) decides how to wait.
 *
 * Locking: a cache's lock (m->lock) is a leaf. It is taken with a
 * connection lock held, or with none, and nothing else is taken while
 * it is held; nothing registers or deregisters while it is held.
 *
 *   m->lock guards   the cache's pin limit, pinned total and LRU, and of
 *                    every chunk of its regions: mr, refs, pinning, the
 *                    LRU links
 *   not guarded      a region's shape (addr, len, MRs of PIN_ALL and ODP),
 *                    set before the region is shared and fixed after
 *   attachment       r->conn, r->next and r->conn_owned are L2's
 *                    (attach.c), guarded by the attached connection's lock;
 *                    r->claim (atomic) is the connection the region is
 *                    attached or being attached to, taken by compare-
 *                    exchange before any connection lock, so two attaches
 *                    cannot both link it; mr.c never reads them
 */
#ifndef RDMAE_MR_H
#define RDMAE_MR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <infiniband/verbs.h>

#include "dev.h"
#include "rdmae_region.h"
#include "rdmae_tsa.h"

struct rdmae_chunk;
struct rdmae_mr_cache;
struct rdmae_conn;

struct rdmae_region {
	struct rdmae_dev *dev;		/* the PD everything is registered on (a reference) */
	uint8_t *addr;
	size_t len;
	size_t page_size;
	struct rdmae_region_opts o;
	int access;
	struct ibv_mr **mrs;		/* PIN_ALL: one per RDMAE_DESC_SPAN */
	size_t nmrs;
	struct ibv_mr *odp_mr;		/* ON_DEMAND on an ODP-capable device */
	struct rdmae_chunk *chunks;	/* ON_DEMAND otherwise */
	size_t nchunks;
	size_t chunk_size;
	struct rdmae_mr_cache *cache;	/* chunks are pinned under its limit */
	bool own_cache;			/* prepared: the cache is the region's own */

	/* attachment (L2, attach.c): the connection it is usable on */
	struct rdmae_conn *conn;
	_Atomic(struct rdmae_conn *) claim; /* set before conn, cleared after (NULL: free) */
	struct rdmae_region *next;	/* in conn->regions */
	bool conn_owned;		/* made by rdmae_region_create: freed with conn */
};

/* A pin cache: limit (bytes), pinned total, LRU of idle chunks. NULL if out of memory. */
struct rdmae_mr_cache *rdmae_mr_cache_create(size_t pin_limit);
/* Every region using it is gone (nothing is pinned under it any more). */
void rdmae_mr_cache_destroy(struct rdmae_mr_cache *m);
void rdmae_mr_cache_set_limit(struct rdmae_mr_cache *m, size_t bytes);
size_t rdmae_mr_cache_pinned(struct rdmae_mr_cache *m);

/*
 * A region of [addr, addr+len) on dev's PD: PIN_ALL registered now (no
 * lock taken: nobody sees the region yet), ON_DEMAND chunks pinned later
 * under cache (NULL: a cache of the region's own, limit o->pin_limit).
 * Takes a reference on dev.
 */
int rdmae_mr_create(struct rdmae_region **out, struct rdmae_dev *dev, void *addr, size_t len,
		    const struct rdmae_region_opts *o, struct rdmae_mr_cache *cache,
		    struct rdmae_err *err);
/*
 * Deregister and free r. Nothing may read it any more: no WR in flight
 * (the caller quiesced them) and no chunk reference held.
 */
void rdmae_mr_destroy(struct rdmae_region *r);

/*
 * lkey for [off, off+len) of r, which must not cross rdmae_mr_boundary(r).
 * ON_DEMAND pins the chunk (registering it, and evicting idle chunks least
 * recently used first, with no lock held) and returns it in *chunk with a
 * reference: release it with rdmae_mr_chunk_put once the WR is done. Never
 * waits: -EAGAIN when the chunk cannot be pinned now (the pin limit is
 * reached with every pinned chunk in use, or another thread is pinning
 * it); the caller waits for a put that returns true, or for the other
 * pinner, and calls again. -ENOBUFS: the chunk is larger than the limit.
 * Since it may register, the caller holds no lock it would stall for as
 * long as the kernel pins a chunk (rdmae_mr_may_register says when).
 */
int rdmae_mr_lkey(struct rdmae_region *r, uint64_t off, uint32_t *lkey,
		  struct rdmae_chunk **chunk);
/*
 * rdmae_mr_lkey without registering: 0 with a reference in *chunk when the
 * chunk is pinned already (or r needs no pinning), -EAGAIN when it would
 * have to be registered (call rdmae_mr_lkey then, with no lock held). Takes
 * only the cache's leaf lock, so a caller may hold its own.
 */
int rdmae_mr_lkey_pinned(struct rdmae_region *r, uint64_t off, uint32_t *lkey,
			 struct rdmae_chunk **chunk);
/*
 * A count of what may end an -EAGAIN of r's cache: a chunk going idle, a
 * pin ending, pinned bytes given back. A caller that saw -EAGAIN and then
 * sees this changed retries rather than waits (the wakeup may be gone).
 */
uint64_t rdmae_mr_events(struct rdmae_region *r);
/* PIN_ALL's lkey, inline for the write path; false for any other region. */
static inline bool rdmae_mr_lkey_fixed(const struct rdmae_region *r, uint64_t off, uint32_t *lkey)
{
	if (!r->mrs)
		return false;
	*lkey = r->mrs[off / RDMAE_DESC_SPAN]->lkey;
	return true;
}
/* May rdmae_mr_lkey register (an ON_DEMAND region pinned in chunks)? */
bool rdmae_mr_may_register(const struct rdmae_region *r);
/*
 * Drop a WR's reference on a chunk. True when that freed pin room: the
 * chunk went idle and can be evicted, so a caller that got -EAGAIN may
 * retry (the connection broadcasts its condition on true).
 */
bool rdmae_mr_chunk_put(struct rdmae_chunk *ch);
/* The region a chunk belongs to. */
struct rdmae_region *rdmae_mr_chunk_region(const struct rdmae_chunk *ch);
/* Runs split at this: a chunk (ON_DEMAND) or RDMAE_DESC_SPAN. */
uint64_t rdmae_mr_boundary(const struct rdmae_region *r);
/* May the NIC write into r (the landing side of an RDMA READ)? */
bool rdmae_mr_local_writable(const struct rdmae_region *r);
/* Descriptors of a PIN_ALL region with remote access; see rdmae_region_bufdescs. */
int rdmae_mr_bufdescs(const struct rdmae_region *r, struct rdmae_bufdesc *out, size_t cap,
		      size_t *n, struct rdmae_err *err);

#endif
