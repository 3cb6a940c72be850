/* SPDX-License-Identifier: MIT */
/*
 * The synthetic guest (rdmae_guest.h): memory, dirtiers, dirty log, device
 * state and the destination's byte-for-byte check.
 *
 * Several dirtiers never write the same page: dirtier t of T owns the pages
 * whose index is t modulo T, so a page's version and its content always
 * agree without a lock, whatever the pattern.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <hugetlbfs.h>
#include <numa.h>
#include <xxhash.h>

#include "rdmae_dirty.h"
#include "rdmae_guest.h"

#define PAGE RDMAE_GUEST_PAGE

static const char *const block_names[RDMAE_GUEST_BLOCKS] = { "pc.ram", "vga.vram" };

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* Page content as a function of (block, page, version); version 0 is all zero. */
static void page_fill(uint8_t *p, unsigned int blk, size_t page, uint32_t ver)
{
	uint64_t seed = ((uint64_t)blk << 56) ^ ((uint64_t)page << 20) ^ ver, o;

	if (!ver) {
		memset(p, 0, PAGE);
		return;
	}
	for (o = 0; o < PAGE; o += 8) {
		uint64_t w = (seed + o) * 0x9E3779B97F4A7C15ull;

		memcpy(p + o, &w, 8);
	}
}

/*
 * Huge pages when asked for, or when asked for if reserved: a private
 * MAP_HUGETLB mapping reserves its pages at mmap time, so a pool too small
 * fails here rather than with SIGBUS at the first touch.
 */
static int block_map(struct rdmae_guest_block *b, enum rdmae_guest_mem mem, int node,
		     struct rdmae_err *err)
{
	long hps = gethugepagesize();

	b->mem = MAP_FAILED;
	if (mem != RDMAE_GUEST_SMALL && hps > 0) {
		b->map_len = (b->len + (size_t)hps - 1) / (size_t)hps * (size_t)hps;
		b->mem = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		b->huge = b->mem != MAP_FAILED;
	}
	if (b->mem == MAP_FAILED && mem == RDMAE_GUEST_HUGE)
		return rdmae_err_set(err, -ENOMEM, "guest block %s: cannot map %zu MiB on huge "
				     "pages (%s): reserve more in /proc/sys/vm/nr_hugepages",
				     b->name, b->len >> 20,
				     hps > 0 ? "too few free" : "none configured");
	if (b->mem == MAP_FAILED) {
		b->map_len = b->len;
		b->mem = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (b->mem == MAP_FAILED)
			return rdmae_err_set(err, -ENOMEM, "guest block %s: cannot map %zu MiB",
					     b->name, b->len >> 20);
	}
	/* Bind before the first touch: the first fault decides where a page lives. */
	if (node >= 0 && numa_available() >= 0)
		numa_tonode_memory(b->mem, b->map_len, node);
	return 0;
}

int rdmae_guest_init(struct rdmae_guest *g, const struct rdmae_guest_opts *o,
		     struct rdmae_err *err)
{
	unsigned int i;
	size_t p;

	memset(g, 0, sizeof(*g));
	g->o = *o;
	g->huge = o->mem == RDMAE_GUEST_HUGE;
	for (i = 0; i < RDMAE_GUEST_BLOCKS; i++)
		g->b[i].mem = MAP_FAILED;
	if (o->size < 16 * (uint64_t)PAGE)
		return rdmae_err_set(err, -EINVAL, "guest of %" PRIu64 " bytes: at least %u",
				     o->size, 16 * PAGE);
	for (i = 0; i < RDMAE_GUEST_BLOCKS; i++) {
		struct rdmae_guest_block *b = &g->b[i];
		size_t words;
		int ret;

		b->name = i == 0 && o->name0 ? o->name0 : block_names[i];
		b->len = i == 0 ? o->size - o->size / 16 : o->size / 16;
		b->len -= b->len % PAGE;
		b->npages = b->len / PAGE;
		words = rdmae_bitmap_words(b->npages);
		ret = block_map(b, o->mem, o->numa_node, err);
		if (ret)
			return ret;
		b->dirty = calloc(words, sizeof(*b->dirty));
		b->round = calloc(words, sizeof(*b->round));
		b->ver = calloc(b->npages, sizeof(*b->ver));
		if (!b->dirty || !b->round || !b->ver)
			return rdmae_err_set(err, -ENOMEM, "guest block %s: tables for %zu pages",
					     b->name, b->npages);
		if (!o->fill)
			continue;
		/* Three pages in four hold data, one stays zero: zero pages from the start. */
		for (p = 0; p < b->npages; p++) {
			b->ver[p] = p % 4 == 3 ? 0 : 1;
			page_fill(b->mem + p * PAGE, i, p, b->ver[p]);
		}
	}
	return 0;
}

void rdmae_guest_free(struct rdmae_guest *g)
{
	unsigned int i;

	rdmae_guest_pause(g);
	for (i = 0; i < RDMAE_GUEST_BLOCKS; i++) {
		struct rdmae_guest_block *b = &g->b[i];

		if (b->mem && b->mem != MAP_FAILED)
			munmap(b->mem, b->map_len);
		b->mem = MAP_FAILED;
		free(b->dirty);
		free(b->round);
		free(b->ver);
		b->dirty = NULL;
		b->round = NULL;
		b->ver = NULL;
	}
}

/* Move page p (an index in [0, n)) to the nearest page dirtier t of T owns. */
static size_t own(size_t p, size_t n, unsigned int t, unsigned int nt)
{
	p = p - p % nt + t;
	return p < n ? p : p - nt;
}

/* The next page to write: its block in *bi. */
static size_t next_page(struct rdmae_dirtier *d, uint64_t r, unsigned int *bi)
{
	struct rdmae_guest *g = d->g;
	unsigned int nt = g->d.threads;
	size_t n0 = g->b[0].npages, hot;
	uint64_t total = n0 + g->b[1].npages, i;

	switch (g->d.pattern) {
	case RDMAE_DIRTY_HOTSET:
		hot = (size_t)(g->d.hot_bytes / PAGE);
		if (hot < nt)
			hot = nt;
		if (hot > n0)
			hot = n0;
		*bi = 0;
		return own((size_t)((r >> 8) % hot), hot, d->idx, nt);
	case RDMAE_DIRTY_SEQUENTIAL:
		i = d->cursor;
		d->cursor += nt;
		if (d->cursor >= total)
			d->cursor = d->idx;
		*bi = i < n0 ? 0 : 1;
		return (size_t)(i < n0 ? i : i - n0);
	case RDMAE_DIRTY_UNIFORM:
	default:
		/* Mostly pc.ram, as a guest's working set would be. */
		*bi = (r & 15) == 0 ? 1 : 0;
		return own((size_t)((r >> 8) % g->b[*bi].npages), g->b[*bi].npages, d->idx, nt);
	}
}

static void *dirtier_main(void *arg)
{
	struct rdmae_dirtier *d = arg;
	struct rdmae_guest *g = d->g;
	double rate = g->d.rate / g->d.threads;
	uint64_t t0 = now_ns(), bytes = 0;

	if (g->o.numa_node >= 0 && numa_available() >= 0)
		numa_run_on_node(g->o.numa_node);
	while (!atomic_load(&g->stop)) {
		uint64_t r = xorshift(&d->rng);
		unsigned int bi;
		size_t p = next_page(d, r, &bi);
		struct rdmae_guest_block *b = &g->b[bi];
		/* One write in 16 zeroes its page, so zero pages come and go. */
		uint32_t v = (r >> 4 & 15) == 0 ? 0 : b->ver[p] + 1;

		page_fill(b->mem + p * PAGE, bi, p, v);
		b->ver[p] = v;
		/* Log after the write: a harvest in between is caught by the next one. */
		atomic_fetch_or(&b->dirty[p / 64], 1ull << (p % 64));
		atomic_fetch_add(&g->writes, 1);
		bytes += PAGE;
		if ((bytes & ((64 * PAGE) - 1)) == 0) {
			double due = (double)bytes / rate * 1e9;
			uint64_t el = now_ns() - t0;

			if ((double)el < due) {
				struct timespec ts = { 0, (long)(due - (double)el) };

				if (ts.tv_nsec > 100000000)
					ts.tv_nsec = 100000000;
				nanosleep(&ts, NULL);
			}
		}
	}
	return NULL;
}

int rdmae_guest_start(struct rdmae_guest *g, const struct rdmae_dirtier_opts *d,
		      struct rdmae_err *err)
{
	size_t n0 = g->b[0].npages;
	unsigned int i;

	if (g->running)
		return 0;
	g->d = *d;
	if (!g->d.threads)
		g->d.threads = 1;
	if (!g->d.hot_bytes)
		g->d.hot_bytes = (uint64_t)n0 * PAGE / 8;
	if (g->d.threads > RDMAE_GUEST_MAX_DIRTIERS || g->d.threads > g->b[1].npages)
		return rdmae_err_set(err, -EINVAL, "dirtiers: %u threads, at most %d (and no "
				     "more than vga.vram's %zu pages)", g->d.threads,
				     RDMAE_GUEST_MAX_DIRTIERS, g->b[1].npages);
	atomic_store(&g->stop, false);
	if (d->rate <= 0)
		return 0;
	for (i = 0; i < g->d.threads; i++) {
		struct rdmae_dirtier *t = &g->th[i];

		/* A guest resumed after a failed migration picks up where it left. */
		if (!t->rng) {
			t->rng = 0x1234567ull + g->o.id + 0x9E3779B97F4A7C15ull * i;
			t->cursor = i;
		}
		t->g = g;
		t->idx = i;
		if (pthread_create(&t->th, NULL, dirtier_main, t)) {
			rdmae_guest_pause(g);
			return rdmae_err_set(err, -EAGAIN, "dirtier thread %u: cannot start", i);
		}
		g->running = i + 1;
	}
	return 0;
}

void rdmae_guest_pause(struct rdmae_guest *g)
{
	unsigned int i;

	if (!g->running)
		return;
	atomic_store(&g->stop, true);
	for (i = 0; i < g->running; i++)
		pthread_join(g->th[i].th, NULL);
	g->running = 0;
}

bool rdmae_guest_running(const struct rdmae_guest *g)
{
	return g->running > 0;
}

uint64_t rdmae_guest_cpu_ns(const struct rdmae_guest *g)
{
	uint64_t ns = 0;
	unsigned int i;

	for (i = 0; i < g->running; i++) {
		clockid_t cid;
		struct timespec ts;

		if (pthread_getcpuclockid(g->th[i].th, &cid) || clock_gettime(cid, &ts))
			continue;
		ns += (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	}
	return ns;
}

void rdmae_guest_harvest(struct rdmae_guest *g, enum rdmae_harvest how)
{
	unsigned int i;
	size_t w;

	for (i = 0; i < RDMAE_GUEST_BLOCKS; i++) {
		struct rdmae_guest_block *b = &g->b[i];
		size_t words = rdmae_bitmap_words(b->npages);

		for (w = 0; w < words; w++) {
			uint64_t v = atomic_exchange(&b->dirty[w], 0);

			b->round[w] = how == RDMAE_HARVEST_ALL ? ~0ull :
				      how == RDMAE_HARVEST_OR ? b->round[w] | v : v;
		}
		if (how == RDMAE_HARVEST_ALL && b->npages % 64)
			b->round[words - 1] = (1ull << (b->npages % 64)) - 1;
	}
}

void rdmae_guest_blocks(const struct rdmae_guest *g, struct rdmae_block *out)
{
	unsigned int i;

	for (i = 0; i < RDMAE_GUEST_BLOCKS; i++) {
		out[i].name = g->b[i].name;
		out[i].host = g->b[i].mem;
		out[i].len = g->b[i].len;
		out[i].page_size = PAGE;
		out[i].hugepages = g->huge;
	}
}

void rdmae_guest_bitmaps(const struct rdmae_guest *g, const uint64_t **out)
{
	unsigned int i;

	for (i = 0; i < RDMAE_GUEST_BLOCKS; i++)
		out[i] = g->b[i].round;
}

uint64_t rdmae_guest_sum(const struct rdmae_guest *g)
{
	uint64_t h = 0;
	unsigned int i;

	for (i = 0; i < RDMAE_GUEST_BLOCKS; i++)
		h ^= XXH3_64bits(g->b[i].mem, g->b[i].len) + i;
	return h;
}

size_t rdmae_guest_state_len(const struct rdmae_guest *g)
{
	size_t n = (2 + RDMAE_GUEST_BLOCKS) * sizeof(uint32_t);

	for (unsigned int i = 0; i < RDMAE_GUEST_BLOCKS; i++)
		n += g->b[i].npages * sizeof(uint32_t);
	return n;
}

void rdmae_guest_state_header(const struct rdmae_guest *g, uint32_t hdr[2 + RDMAE_GUEST_BLOCKS])
{
	hdr[0] = RDMAE_GUEST_STATE_MAGIC;
	hdr[1] = RDMAE_GUEST_BLOCKS;
	for (unsigned int i = 0; i < RDMAE_GUEST_BLOCKS; i++)
		hdr[2 + i] = (uint32_t)g->b[i].npages;
}

int rdmae_guest_verify(const struct rdmae_guest *g, const void *state, size_t len,
		       struct rdmae_guest_check *out, struct rdmae_err *err)
{
	const uint8_t *st = state;
	uint32_t hdr[2 + RDMAE_GUEST_BLOCKS];
	uint8_t expect[PAGE];
	size_t off = sizeof(hdr), p;
	unsigned int i;

	memset(out, 0, sizeof(*out));
	if (len < sizeof(hdr))
		return rdmae_err_set(err, -EILSEQ, "verify: device state of %zu bytes", len);
	memcpy(hdr, st, sizeof(hdr));
	if (hdr[0] != RDMAE_GUEST_STATE_MAGIC || hdr[1] != RDMAE_GUEST_BLOCKS)
		return rdmae_err_set(err, -EILSEQ, "verify: device state header wrong");
	for (i = 0; i < RDMAE_GUEST_BLOCKS; i++) {
		const struct rdmae_guest_block *b = &g->b[i];

		if (hdr[2 + i] != b->npages || off + b->npages * 4 > len)
			return rdmae_err_set(err, -EILSEQ, "verify: device state does not match "
					     "block %s (%u pages announced, %zu here)", b->name,
					     hdr[2 + i], b->npages);
		for (p = 0; p < b->npages; p++) {
			const uint8_t *have = b->mem + p * PAGE;
			uint32_t v;

			memcpy(&v, st + off + p * 4, 4);
			page_fill(expect, i, p, v);
			if (memcmp(expect, have, PAGE) != 0) {
				size_t k = 0;

				while (expect[k] == have[k])
					k++;
				return rdmae_err_set(err, -EILSEQ, "block %s page %zu (version %u) "
						     "differs at byte %zu", b->name, p, v, k);
			}
			out->pages++;
			out->zero_pages += v == 0;
			out->bytes += PAGE;
		}
		off += b->npages * 4;
	}
	return 0;
}

const char *rdmae_dirty_pattern_name(enum rdmae_dirty_pattern p)
{
	switch (p) {
	case RDMAE_DIRTY_HOTSET: return "hotset";
	case RDMAE_DIRTY_SEQUENTIAL: return "sequential";
	case RDMAE_DIRTY_UNIFORM:
	default: return "uniform";
	}
}

int rdmae_dirty_pattern_parse(const char *s, enum rdmae_dirty_pattern *out)
{
	if (!strcmp(s, "uniform"))
		*out = RDMAE_DIRTY_UNIFORM;
	else if (!strcmp(s, "hotset"))
		*out = RDMAE_DIRTY_HOTSET;
	else if (!strcmp(s, "sequential"))
		*out = RDMAE_DIRTY_SEQUENTIAL;
	else
		return -EINVAL;
	return 0;
}
