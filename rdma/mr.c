/* SPDX-License-Identifier: MIT */
/*
 * Registration of existing mappings, with no bounce buffer.
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

#include "internal.h"

#define DEFAULT_CHUNK (16u << 20)
#define DESTROY_WAIT_MS 5000

struct rdmae_chunk {
	struct rdmae_region *r;
	size_t idx;
	struct ibv_mr *mr;		/* NULL while not pinned */
	unsigned int refs;		/* WRs in flight that read it */
	bool pinning;			/* a thread registers it, without the lock */
	struct rdmae_chunk *prev, *next;	/* idle list, while pinned with refs == 0 */
};

struct rdmae_region {
	struct rdmae_conn *c;
	struct rdmae_region *next;	/* in c->regions */
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

static void lru_unlink(struct rdmae_conn *c, struct rdmae_chunk *ch)
{
	if (ch->prev)
		ch->prev->next = ch->next;
	else if (c->lru_head == ch)
		c->lru_head = ch->next;
	if (ch->next)
		ch->next->prev = ch->prev;
	else if (c->lru_tail == ch)
		c->lru_tail = ch->prev;
	ch->prev = NULL;
	ch->next = NULL;
}

static void lru_push(struct rdmae_conn *c, struct rdmae_chunk *ch)
{
	ch->prev = NULL;
	ch->next = c->lru_head;
	if (c->lru_head)
		c->lru_head->prev = ch;
	c->lru_head = ch;
	if (!c->lru_tail)
		c->lru_tail = ch;
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
static struct ibv_mr *chunk_detach_locked(struct rdmae_conn *c, struct rdmae_chunk *ch)
	RDMAE_REQUIRES(c->lock)
{
	struct ibv_mr *mr = ch->mr;

	lru_unlink(c, ch);
	ch->mr = NULL;
	return mr;
}

void rdmae_chunk_put_locked(struct rdmae_conn *c, struct rdmae_chunk *ch)
{
	if (--ch->refs == 0) {
		lru_push(c, ch);
		pthread_cond_broadcast(&c->cond);
	}
}

uint64_t rdmae_region_boundary(const struct rdmae_region *r)
{
	return r->chunks ? r->chunk_size : RDMAE_DESC_SPAN;
}

/*
 * Pin ch, evicting idle chunks (least recently used first) to stay under
 * the limit. Registering and deregistering take time in proportion to the
 * chunk (the kernel walks and pins every page), so both run without the
 * connection lock: completions, credits and keepalive go on meanwhile.
 * Callers take the lkey before any send-queue position for this reason.
 * The pinned total is reserved before the lock is dropped, so concurrent
 * pinners cannot overshoot the limit together; ch->pinning keeps a second
 * thread from registering the same chunk.
 *
 * Not analysed (RDMAE_NO_TSA): it drops and retakes c->lock around the
 * registration above, and the analysis does not follow c = r->c; its
 * contract still holds its callers to the lock. A lock dropped inside a
 * _locked function is a known item of issue 17, left as it is for now.
 */
static int chunk_pin_locked(struct rdmae_region *r, struct rdmae_chunk *ch)
	RDMAE_REQUIRES(r->c->lock) RDMAE_NO_TSA
{
	struct rdmae_conn *c = r->c;
	size_t len = chunk_len(r, ch->idx);
	struct ibv_mr *mr;
	int ret, saved;

	if (len > c->pin_limit)
		return -ENOBUFS;
	for (;;) {
		if (ch->mr)
			return 0;
		if (!ch->pinning && c->pinned + len <= c->pin_limit)
			break;
		if (!ch->pinning && c->lru_tail) {
			size_t freed = chunk_len(c->lru_tail->r, c->lru_tail->idx);
			struct ibv_mr *old = chunk_detach_locked(c, c->lru_tail);

			rdmae_conn_unlock(c);
			ibv_dereg_mr(old);
			rdmae_conn_lock(c);
			c->pinned -= freed;
			pthread_cond_broadcast(&c->cond);
			continue;
		}
		/* Being pinned by another thread, or everything pinned is in flight. */
		ret = rdmae_conn_check_locked(c, NULL);
		if (!ret)
			ret = rdmae_conn_wait_locked(c, 0);
		if (ret)
			return ret;
	}
	c->pinned += len;
	ch->pinning = true;
	rdmae_conn_unlock(c);
	mr = ibv_reg_mr(c->pd, r->addr + ch->idx * r->chunk_size, len, r->access);
	saved = errno;
	rdmae_conn_lock(c);
	ch->pinning = false;
	pthread_cond_broadcast(&c->cond);
	if (!mr) {
		c->pinned -= len;
		return -saved;
	}
	ch->mr = mr;
	return 0;
}

int rdmae_region_lkey_locked(struct rdmae_region *r, uint64_t off, uint32_t *lkey,
			     struct rdmae_chunk **chunk) RDMAE_REQUIRES(r->c->lock)
{
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
	if (ch->mr) {
		if (ch->refs == 0)
			lru_unlink(r->c, ch);
	} else {
		int ret = chunk_pin_locked(r, ch);

		if (ret)
			return ret;
		if (ch->refs == 0)
			lru_unlink(r->c, ch);
	}
	ch->refs++;
	*lkey = ch->mr->lkey;
	*chunk = ch;
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
}

int rdmae_region_create(struct rdmae_region **out, struct rdmae_conn *c, void *addr, size_t len,
			const struct rdmae_region_opts *o, struct rdmae_err *err)
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
	r->c = c;
	r->addr = addr;
	r->len = len;
	r->o = *o;
	r->page_size = o->page_size ? o->page_size : rdmae_mapping_page_size(addr, NULL);
	if (!r->page_size) {
		ret = rdmae_err_set(err, -EFAULT, "register region %p+%zu: not mapped", addr, len);
		goto err_free;
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

	if (o->mode == RDMAE_REG_ON_DEMAND && (o->remote_write || o->remote_read)) {
		ret = rdmae_err_set(err, -EINVAL, "register region %p+%zu: an on-demand region "
				    "cannot be advertised for remote %s", addr, len,
				    o->remote_write ? "writes" : "reads");
		goto err_free;
	}
	/*
	 * Pinning guest RAM takes time in proportion to its size (seconds for
	 * large VMs). The region is not visible to anyone yet, so it is done
	 * without the connection lock: the progress thread must keep answering
	 * keepalives and reaping completions meanwhile.
	 */
	if (o->mode == RDMAE_REG_PIN_ALL) {
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

			r->mrs[i] = ibv_reg_mr(c->pd, r->addr + off, n, r->access);
			if (!r->mrs[i]) {
				ret = rdmae_err_set(err, -errno,
						    "ibv_reg_mr of %zu bytes at %p (region of %zu "
						    "MiB): %s%s", n, (void *)(r->addr + off),
						    len >> 20, strerror(errno),
						    errno == ENOMEM || errno == EPERM ?
						    " (is the memlock limit, ulimit -l, too low?)" :
						    "");
				goto err_release;
			}
		}
	} else if (c->odp_write && !o->local_write) {
		/*
		 * odp_write says the device serves RC WRITEs from ODP memory; READs
		 * landing in it need other capabilities, so such a region is pinned
		 * in chunks instead.
		 */
		r->odp_mr = ibv_reg_mr(c->pd, addr, len, r->access | IBV_ACCESS_ON_DEMAND);
		if (!r->odp_mr) {
			ret = rdmae_err_set(err, -errno, "ibv_reg_mr (ODP) of %zu bytes at %p: %s",
					    len, addr, strerror(errno));
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
	}
	rdmae_conn_lock(c);
	r->next = c->regions;
	c->regions = r;
	rdmae_conn_unlock(c);
	*out = r;
	return 0;

err_release:
	/* Nothing of a region that failed here is pinned by the chunk cache: no lock needed. */
	region_release(r);
err_free:
	free(r);
	return ret;
}

/*
 * WRs still counted in flight that read this region's chunks (the wait
 * below timed out, or a post failed) must not hold pointers into it.
 */
static void region_forget_inflight_locked(struct rdmae_conn *c, const struct rdmae_region *r)
	RDMAE_REQUIRES(c->lock)
{
	for (unsigned int i = 0; i < c->nlanes; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		for (uint64_t p = l->sq_done; l->wr && p < l->sq_posted; p++) {
			struct rdmae_wrslot *s = &l->wr[p % l->sq_depth];

			if (s->chunk && s->chunk->r == r) {
				rdmae_chunk_put_locked(c, s->chunk);
				s->chunk = NULL;
			}
		}
	}
}

void rdmae_region_destroy(struct rdmae_region *r)
{
	struct rdmae_conn *c;
	struct rdmae_region **pp;
	uint64_t deadline;
	size_t i, freed = 0;

	if (!r)
		return;
	c = r->c;
	rdmae_conn_lock(c);
	/* A WRITE in flight may read this memory: let the send queues empty first. */
	deadline = rdmae_now_ns() + DESTROY_WAIT_MS * 1000000ull;
	while (rdmae_lane_any_busy_locked(c) && c->thread_started && !c->stop)
		if (rdmae_conn_wait_locked(c, deadline))
			break;
	for (pp = &c->regions; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	region_forget_inflight_locked(c, r);
	/*
	 * Chunks live in the connection's LRU, which the lock guards: take them
	 * out here, and unpin (as long as pinning took) without the lock.
	 */
	for (i = 0; r->chunks && i < r->nchunks; i++) {
		struct rdmae_chunk *ch = &r->chunks[i];

		if (ch->mr) {
			lru_unlink(c, ch);
			freed += chunk_len(r, ch->idx);
		}
	}
	rdmae_conn_unlock(c);
	region_release(r);
	if (freed) {
		rdmae_conn_lock(c);
		c->pinned -= freed;
		pthread_cond_broadcast(&c->cond);
		rdmae_conn_unlock(c);
	}
	free(r);
}

void rdmae_regions_destroy_all(struct rdmae_conn *c)
{
	while (c->regions) {
		struct rdmae_region *r = c->regions;

		c->regions = r->next;
		region_release(r);
		free(r);
	}
}

int rdmae_region_bufdescs(const struct rdmae_region *r, struct rdmae_bufdesc *out, size_t cap,
			  size_t *n, struct rdmae_err *err)
{
	size_t i;

	if (!r->mrs || !(r->o.remote_write || r->o.remote_read))
		return rdmae_err_set(err, -EINVAL,
				     "descriptors of region %p: only a pinned, remotely writable "
				     "or readable region can be advertised", (void *)r->addr);
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

bool rdmae_region_local_writable(const struct rdmae_region *r)
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
