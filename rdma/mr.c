/* SPDX-License-Identifier: MIT */
/*
 * L1: memory regions, the on-demand chunk cache and its refcounts
 * (mr.h). Registration of existing mappings, with no bounce buffer.
 *
 * PIN_ALL pins the whole mapping up front: the cost is paid once, at
 * setup, and the NIC can then read or write any page. ON_DEMAND pins
 * chunks as transfers reach them and keeps the pinned total under a bound
 * by unpinning idle chunks, least recently used first; a chunk is "in use"
 * while a WRITE that reads it is in flight. When the device offers ODP the
 * kernel and NIC do the paging themselves and one implicit MR suffices.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/mman.h>

#include "mr.h"

#define DEFAULT_CHUNK (16u << 20)
#define DEFAULT_PIN_LIMIT (256u << 20)

/* Its fields but r and idx are guarded by r->cache->lock. */
struct rdmae_chunk {
	struct rdmae_region *r;
	size_t idx;
	struct ibv_mr *mr;		/* NULL while not pinned */
	unsigned int refs;		/* WRs in flight that read it */
	bool pinning;			/* a thread registers it, without the lock */
	struct rdmae_chunk *prev, *next;	/* idle list, while pinned with refs == 0 */
};

struct rdmae_mr_cache {
	rdmae_mutex_t lock;		/* a leaf: see mr.h */
	size_t limit;
	size_t pinned;			/* registered, being registered or being deregistered */
	struct rdmae_chunk *lru_head, *lru_tail;	/* idle chunks, most recent first */
	uint64_t events;		/* rdmae_mr_events */
};

size_t rdmae_mapping_page_size(const void *addr, uintptr_t *end)
{
	uintptr_t a = (uintptr_t)addr, lo, hi = 0;
	FILE *f = fopen("/proc/self/smaps", "re");
	char *line = NULL;
	size_t cap = 0, ps = 0;
	bool inside = false;

	if (!f)
		return 0;
	/* getline: a mapping's path can be longer than any fixed buffer. */
	while (getline(&line, &cap, f) > 0) {
		unsigned long kb;
		int n = 0;

		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %n", &lo, &hi, &n) == 2 && n > 0) {
			inside = a >= lo && a < hi;
			continue;
		}
		if (inside && sscanf(line, "KernelPageSize: %lu kB", &kb) == 1) {
			ps = (size_t)kb * 1024;
			if (end)
				*end = hi;
			break;
		}
	}
	free(line);
	fclose(f);
	return ps;
}

static void cache_lock(struct rdmae_mr_cache *m) RDMAE_ACQUIRE(m->lock) RDMAE_NO_TSA
{
	pthread_mutex_lock(&m->lock);
}

static void cache_unlock(struct rdmae_mr_cache *m) RDMAE_RELEASE(m->lock) RDMAE_NO_TSA
{
	pthread_mutex_unlock(&m->lock);
}

struct rdmae_mr_cache *rdmae_mr_cache_create(size_t pin_limit)
{
	struct rdmae_mr_cache *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	m->limit = pin_limit ? pin_limit : DEFAULT_PIN_LIMIT;
	return m;
}

void rdmae_mr_cache_destroy(struct rdmae_mr_cache *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void rdmae_mr_cache_set_limit(struct rdmae_mr_cache *m, size_t bytes)
{
	cache_lock(m);
	m->limit = bytes;
	m->events++;
	cache_unlock(m);
}

size_t rdmae_mr_cache_pinned(struct rdmae_mr_cache *m)
{
	size_t n;

	cache_lock(m);
	n = m->pinned;
	cache_unlock(m);
	return n;
}

static void lru_unlink_locked(struct rdmae_mr_cache *m, struct rdmae_chunk *ch)
	RDMAE_REQUIRES(m->lock)
{
	if (ch->prev)
		ch->prev->next = ch->next;
	else if (m->lru_head == ch)
		m->lru_head = ch->next;
	if (ch->next)
		ch->next->prev = ch->prev;
	else if (m->lru_tail == ch)
		m->lru_tail = ch->prev;
	ch->prev = NULL;
	ch->next = NULL;
}

static void lru_push_locked(struct rdmae_mr_cache *m, struct rdmae_chunk *ch)
	RDMAE_REQUIRES(m->lock)
{
	ch->prev = NULL;
	ch->next = m->lru_head;
	if (m->lru_head)
		m->lru_head->prev = ch;
	m->lru_head = ch;
	if (!m->lru_tail)
		m->lru_tail = ch;
}

static size_t chunk_len(const struct rdmae_region *r, size_t idx)
{
	size_t off = idx * r->chunk_size;

	return r->len - off < r->chunk_size ? r->len - off : r->chunk_size;
}

/*
 * Take a pinned chunk out of the cache. The caller deregisters the MR
 * returned after dropping the lock, and only then takes its length off the
 * pinned total: the memlock limit counts it until the kernel has let go.
 */
static struct ibv_mr *chunk_detach_locked(struct rdmae_mr_cache *m, struct rdmae_chunk *ch)
	RDMAE_REQUIRES(m->lock)
{
	struct ibv_mr *mr = ch->mr;

	lru_unlink_locked(m, ch);
	ch->mr = NULL;
	return mr;
}

bool rdmae_mr_chunk_put(struct rdmae_chunk *ch)
{
	struct rdmae_mr_cache *m = ch->r->cache;
	bool idle;

	cache_lock(m);
	idle = --ch->refs == 0;
	if (idle) {
		lru_push_locked(m, ch);
		m->events++;
	}
	cache_unlock(m);
	return idle;
}

struct rdmae_region *rdmae_mr_chunk_region(const struct rdmae_chunk *ch)
{
	return ch->r;
}

uint64_t rdmae_mr_boundary(const struct rdmae_region *r)
{
	return r->chunks ? r->chunk_size : RDMAE_DESC_SPAN;
}

uint64_t rdmae_mr_events(struct rdmae_region *r)
{
	uint64_t n;

	if (!r->chunks)
		return 0;
	cache_lock(r->cache);
	n = r->cache->events;
	cache_unlock(r->cache);
	return n;
}

bool rdmae_mr_may_register(const struct rdmae_region *r)
{
	return r->chunks != NULL;
}

/* The chunk is pinned: take a reference for one WR. */
static void chunk_ref_locked(struct rdmae_mr_cache *m, struct rdmae_chunk *ch, uint32_t *lkey,
			     struct rdmae_chunk **chunk) RDMAE_REQUIRES(m->lock)
{
	if (ch->refs++ == 0)
		lru_unlink_locked(m, ch);
	*lkey = ch->mr->lkey;
	*chunk = ch;
}

int rdmae_mr_lkey_pinned(struct rdmae_region *r, uint64_t off, uint32_t *lkey,
			 struct rdmae_chunk **chunk)
{
	struct rdmae_mr_cache *m = r->cache;
	struct rdmae_chunk *ch;

	*chunk = NULL;
	if (r->mrs) {
		*lkey = r->mrs[off / RDMAE_DESC_SPAN]->lkey;
		return 0;
	}
	if (r->odp_mr) {
		*lkey = r->odp_mr->lkey;
		return 0;
	}
	ch = &r->chunks[off / r->chunk_size];
	cache_lock(m);
	if (!ch->mr) {
		cache_unlock(m);
		return -EAGAIN;
	}
	chunk_ref_locked(m, ch, lkey, chunk);
	cache_unlock(m);
	return 0;
}

/*
 * Pin a chunk, evicting idle chunks (least recently used first) to stay
 * under the limit. Registering and deregistering take time in proportion
 * to the chunk (the kernel walks and pins every page), so both run with no
 * lock: the pinned total is reserved first, so concurrent pinners cannot
 * overshoot the limit together, and ch->pinning keeps a second thread from
 * registering the same chunk (it gets -EAGAIN).
 */
int rdmae_mr_lkey(struct rdmae_region *r, uint64_t off, uint32_t *lkey,
		  struct rdmae_chunk **chunk)
{
	struct rdmae_mr_cache *m = r->cache;
	struct rdmae_chunk *ch;
	struct ibv_mr *mr;
	size_t len;
	int saved;

	*chunk = NULL;
	if (r->mrs) {
		*lkey = r->mrs[off / RDMAE_DESC_SPAN]->lkey;
		return 0;
	}
	if (r->odp_mr) {
		*lkey = r->odp_mr->lkey;
		return 0;
	}
	ch = &r->chunks[off / r->chunk_size];
	len = chunk_len(r, ch->idx);
	cache_lock(m);
	for (;;) {
		struct rdmae_chunk *old;
		size_t freed;

		if (ch->mr) {
			chunk_ref_locked(m, ch, lkey, chunk);
			cache_unlock(m);
			return 0;
		}
		if (len > m->limit) {
			cache_unlock(m);
			return -ENOBUFS;
		}
		if (ch->pinning) {
			cache_unlock(m);
			return -EAGAIN;
		}
		if (m->pinned + len <= m->limit)
			break;
		if (!m->lru_tail) {
			/* Everything pinned is in flight, or being pinned by others. */
			cache_unlock(m);
			return -EAGAIN;
		}
		old = m->lru_tail;
		freed = chunk_len(old->r, old->idx);
		mr = chunk_detach_locked(m, old);
		cache_unlock(m);
		ibv_dereg_mr(mr);
		cache_lock(m);
		m->pinned -= freed;
		m->events++;
	}
	m->pinned += len;
	ch->pinning = true;
	cache_unlock(m);
	mr = ibv_reg_mr(r->dev->pd, r->addr + ch->idx * r->chunk_size, len, r->access);
	saved = errno;
	cache_lock(m);
	ch->pinning = false;
	m->events++;
	if (!mr) {
		m->pinned -= len;
		cache_unlock(m);
		return -saved;
	}
	ch->mr = mr;
	chunk_ref_locked(m, ch, lkey, chunk);
	cache_unlock(m);
	return 0;
}

static void region_release(struct rdmae_region *r)
{
	size_t i;

	if (r->mrs)
		for (i = 0; i < r->nmrs; i++)
			if (r->mrs[i])
				ibv_dereg_mr(r->mrs[i]);
	/* Chunks still pinned were taken out of the cache by the caller. */
	if (r->chunks)
		for (i = 0; i < r->nchunks; i++)
			if (r->chunks[i].mr)
				ibv_dereg_mr(r->chunks[i].mr);
	if (r->odp_mr)
		ibv_dereg_mr(r->odp_mr);
	free(r->mrs);
	free(r->chunks);
	if (r->own_cache)
		rdmae_mr_cache_destroy(r->cache);
	if (r->dev)
		rdmae_dev_put(r->dev);
}

int rdmae_mr_create(struct rdmae_region **out, struct rdmae_dev *dev, void *addr, size_t len,
		    const struct rdmae_region_opts *o, struct rdmae_mr_cache *cache,
		    struct rdmae_err *err)
{
	struct rdmae_region *r;
	size_t i;
	int ret;

	*out = NULL;
	if (!addr || !len)
		return rdmae_err_set(err, -EINVAL, "register region %p+%zu: empty", addr, len);
	r = calloc(1, sizeof(*r));
	if (!r)
		return rdmae_err_set(err, -ENOMEM, "register region: out of memory");
	r->dev = rdmae_dev_get(dev);
	r->addr = addr;
	r->len = len;
	r->o = *o;
	r->page_size = o->page_size ? o->page_size : rdmae_mapping_page_size(addr, NULL);
	if (!r->page_size) {
		ret = rdmae_err_set(err, -EFAULT, "register region %p+%zu: not mapped", addr, len);
		goto err_release;
	}
	/*
	 * Remote access is granted only as asked: a source's guest RAM is
	 * registered with none, so the peer can neither write nor read it.
	 */
	r->access = 0;
	if (o->remote_write || o->local_write)
		r->access |= IBV_ACCESS_LOCAL_WRITE;
	if (o->remote_write)
		r->access |= IBV_ACCESS_REMOTE_WRITE;
	if (o->remote_read)
		r->access |= IBV_ACCESS_REMOTE_READ;

	if (o->mode > RDMAE_REG_ODP) {
		ret = rdmae_err_set(err, -EINVAL, "register region %p+%zu: mode %d is not a "
				    "region's (AUTO is resolved by the caller)", addr, len,
				    (int)o->mode);
		goto err_release;
	}
	if (o->mode == RDMAE_REG_ON_DEMAND && (o->remote_write || o->remote_read)) {
		ret = rdmae_err_set(err, -EINVAL, "register region %p+%zu: an on-demand region "
				    "cannot be advertised for remote %s", addr, len,
				    o->remote_write ? "writes" : "reads");
		goto err_release;
	}
	/*
	 * Pinning guest RAM takes time in proportion to its size (seconds for
	 * large VMs). The region is not visible to anyone yet, so no lock is
	 * held: the progress thread keeps answering keepalives and reaping
	 * completions meanwhile.
	 */
	/*
	 * Explicit ODP only: MRs over this range, never the implicit kind
	 * whose rkey would open the whole address space to the peer.
	 */
	if (o->mode == RDMAE_REG_ODP) {
		if (!dev->odp_write) {
			ret = rdmae_err_set(err, -EOPNOTSUPP, "register region %p+%zu with ODP: "
					    "device %s has no on-demand paging for RC WRITE "
					    "(ibv_query_device_ex odp_caps)", addr, len,
					    dev->name);
			goto err_release;
		}
		r->access |= IBV_ACCESS_ON_DEMAND;
	}
	if (o->mode == RDMAE_REG_PIN_ALL || o->mode == RDMAE_REG_ODP) {
		r->nmrs = (len + RDMAE_DESC_SPAN - 1) / RDMAE_DESC_SPAN;
		/* An array of MR pointers is what is meant here. */
		r->mrs = calloc(r->nmrs, sizeof(r->mrs[0])); /* NOLINT(bugprone-sizeof-expression) */
		if (!r->mrs) {
			ret = rdmae_err_set(err, -ENOMEM, "register region of %zu bytes: out of "
					    "memory", len);
			goto err_release;
		}
		for (i = 0; i < r->nmrs; i++) {
			size_t off = i * RDMAE_DESC_SPAN;
			size_t n = len - off < RDMAE_DESC_SPAN ? len - off : RDMAE_DESC_SPAN;

			r->mrs[i] = ibv_reg_mr(dev->pd, r->addr + off, n, r->access);
			if (!r->mrs[i]) {
				ret = rdmae_err_set(err, -errno,
						    "ibv_reg_mr%s of %zu bytes at %p (region of %zu "
						    "MiB) on %s: %s%s",
						    o->mode == RDMAE_REG_ODP ? " (ODP)" : "", n,
						    (void *)(r->addr + off), len >> 20, dev->name,
						    strerror(errno),
						    o->mode == RDMAE_REG_PIN_ALL &&
						    (errno == ENOMEM || errno == EPERM) ?
						    " (is the memlock limit, ulimit -l, too low?)" :
						    "");
				goto err_release;
			}
		}
	} else if (dev->odp_write && !o->local_write) {
		/*
		 * odp_write says the device serves RC WRITEs from ODP memory; READs
		 * landing in it need other capabilities, so such a region is pinned
		 * in chunks instead.
		 */
		r->odp_mr = ibv_reg_mr(dev->pd, addr, len, r->access | IBV_ACCESS_ON_DEMAND);
		if (!r->odp_mr) {
			ret = rdmae_err_set(err, -errno, "ibv_reg_mr (ODP) of %zu bytes at %p on %s: "
					    "%s", len, addr, dev->name, strerror(errno));
			goto err_release;
		}
	} else {
		size_t cs = o->chunk_size ? o->chunk_size : DEFAULT_CHUNK;

		/* Whole pages per chunk, so huge pages are pinned as whole huge pages. */
		if (cs < r->page_size)
			cs = r->page_size;
		cs -= cs % r->page_size;
		r->chunk_size = cs;
		r->nchunks = (len + cs - 1) / cs;
		r->chunks = calloc(r->nchunks, sizeof(*r->chunks));
		if (!r->chunks) {
			ret = rdmae_err_set(err, -ENOMEM, "register region of %zu bytes: out of "
					    "memory", len);
			goto err_release;
		}
		for (i = 0; i < r->nchunks; i++) {
			r->chunks[i].r = r;
			r->chunks[i].idx = i;
		}
		r->cache = cache;
		if (!cache) {
			r->cache = rdmae_mr_cache_create(o->pin_limit);
			if (!r->cache) {
				ret = rdmae_err_set(err, -ENOMEM, "register region of %zu bytes: out "
						    "of memory", len);
				goto err_release;
			}
			r->own_cache = true;
		}
	}
	*out = r;
	return 0;

err_release:
	/* Nothing of a region that failed here is pinned by the chunk cache: no lock needed. */
	region_release(r);
	free(r);
	return ret;
}

void rdmae_mr_destroy(struct rdmae_region *r)
{
	struct rdmae_mr_cache *m = r->cache;
	size_t freed = 0;

	if (r->chunks) {
		/* Chunks live in the cache's LRU: take them out, unpin without the lock. */
		cache_lock(m);
		for (size_t i = 0; i < r->nchunks; i++) {
			struct rdmae_chunk *ch = &r->chunks[i];

			if (ch->mr) {
				lru_unlink_locked(m, ch);
				freed += chunk_len(r, ch->idx);
			}
		}
		cache_unlock(m);
	}
	region_release(r);
	if (freed && !r->own_cache) {
		cache_lock(m);
		m->pinned -= freed;
		m->events++;
		cache_unlock(m);
	}
	free(r);
}

int rdmae_region_prepare(struct rdmae_region **out, struct rdmae_dev *d, void *addr, size_t len,
			 const struct rdmae_region_opts *o, struct rdmae_err *err)
{
	size_t ps;
	int ret;

	*out = NULL;
	if (!d || !addr || !len)
		return rdmae_err_set(err, -EINVAL, "prepare region %p+%zu: %s", addr, len,
				     d ? "empty" : "no device");
	ps = o->page_size ? o->page_size : rdmae_mapping_page_size(addr, NULL);
	if (!ps)
		return rdmae_err_set(err, -EFAULT, "prepare region %p+%zu on %s: not mapped", addr,
				     len, d->name);
	/* ON_DEMAND is not populated: that would commit the whole range it exists not to. */
	ret = o->mode == RDMAE_REG_PIN_ALL ? rdmae_populate(addr, len, ps) : 0;
	/* ODP neither: pages come in as the NIC faults them. */
	if (ret)
		return rdmae_err_set(err, ret, "prepare region %p+%zu on %s: populating: %s%s",
				     addr, len, d->name, strerror(-ret),
				     ret == -ENOMEM ? " (hugetlbfs pool short, or out of memory?)"
						    : "");
	return rdmae_mr_create(out, d, addr, len, o, NULL, err);
}

int rdmae_mr_bufdescs(const struct rdmae_region *r, struct rdmae_bufdesc *out, size_t cap,
		      size_t *n, struct rdmae_err *err)
{
	size_t i;

	if (!r->mrs || !(r->o.remote_write || r->o.remote_read))
		return rdmae_err_set(err, -EINVAL,
				     "descriptors of region %p: only a pinned or ODP, remotely "
				     "writable or readable region can be advertised",
				     (void *)r->addr);
	*n = r->nmrs;
	if (cap < r->nmrs)
		return rdmae_err_set(err, -ENOSPC, "descriptors of region %p: %zu needed, room "
				     "for %zu", (void *)r->addr, r->nmrs, cap);
	for (i = 0; i < r->nmrs; i++) {
		out[i].offset = (uintptr_t)r->mrs[i]->addr;
		out[i].token = r->mrs[i]->rkey;
		out[i].length = (uint32_t)r->mrs[i]->length;
	}
	return 0;
}

bool rdmae_mr_local_writable(const struct rdmae_region *r)
{
	return (r->access & IBV_ACCESS_LOCAL_WRITE) != 0;
}

size_t rdmae_region_len(const struct rdmae_region *r)
{
	return r->len;
}

void *rdmae_region_addr(const struct rdmae_region *r)
{
	return r->addr;
}

size_t rdmae_region_page_size(const struct rdmae_region *r)
{
	return r->page_size;
}
