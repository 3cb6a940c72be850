/* SPDX-License-Identifier: MIT */
/*
 * rdmae_mig: live migration of a synthetic guest with the engine, one
 * process per side, on the soft-RoCE bench.
 *
 * The guest is a set of RAM blocks and a "vCPU" thread that dirties pages
 * at a set rate, logging each write in a dirty bitmap (as KVM's dirty log
 * would) and bumping the page's version. Page content is a pure function of
 * (block, page, version), version 0 being a zero page. At stop the source
 * sends the version table as its device state, and the destination rebuilds
 * every page it should hold and compares them byte for byte: a check that
 * does not rely on the engine's own checksums.
 *
 *   rdmae_mig src|dst --addr A --port P [options]
 *     --size N         RAM per session, split into "pc.ram" and "vga.vram" (1/16)
 *     --rate MB/s      dirtying rate of the vCPU thread (0: idle guest)
 *     --downtime MS    downtime limit; --max-rounds N; --bw-cap MB/s
 *     --sessions N     N migrations at once in this process
 *     --expect converge|noconverge|cancel|mismatch
 *     --cancel-at preflight|round|state  --cancel-side src|dst
 *     --dst-size N / --dst-name NAME     (dst) make pre-flight fail
 *     --on-demand      source registers on demand; --hugepages: guest RAM on
 *                      2 MiB pages, required of the destination; --lanes N; --quiet
 *     --no-verify      (src) skip the checksums; --require-verify (dst) refuse that
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "../../perf/rdmae_size.h"

#include "../../engine/rdmae_dirty.h"
#include "../../engine/rdmae_engine.h"

#define MAX_SESSIONS 8
#define NBLOCKS 2
#define PAGE 4096u
#define STATE_CHUNK (64u << 10)
#define STATE_MAGIC 0x53474d52u

enum expect { EX_CONVERGE, EX_NOCONVERGE, EX_CANCEL, EX_MISMATCH, EX_UNKNOWN };
enum phase { PH_NONE, PH_PREFLIGHT, PH_ROUND, PH_STATE };

struct cfg {
	bool src;
	const char *addr;
	const char *port;
	uint64_t size;
	double rate;			/* bytes/s */
	uint64_t downtime_ms;
	unsigned int max_rounds;
	double bw_cap;			/* bytes/s */
	unsigned int sessions;
	enum expect expect;
	enum phase cancel_at;
	bool cancel_src;
	uint64_t dst_size;
	const char *dst_name;
	bool on_demand;
	bool no_verify;			/* src: skip the checksums (NO_VERIFY) */
	bool require_verify;		/* dst: refuse a source that skips them */
	bool hugepages;			/* guest RAM on 2 MiB pages, announced as required */
	int timeout_ms;			/* session message timeout (0: the engine's default) */
	int stall_ms;			/* dst: pause before committing (an unresponsive destination) */
	unsigned int lanes;
	bool quiet;
	const char *key_file;
	bool auth_none;
};

struct gblock {
	const char *name;
	uint8_t *mem;
	size_t len;
	size_t npages;
	_Atomic uint64_t *dirty;	/* written by the vCPU, harvested by the migration loop */
	uint32_t *ver;			/* written by the vCPU only */
	uint64_t *round;		/* the harvested bitmap of the current round */
};

struct guest {
	unsigned int id;
	bool huge;
	struct gblock b[NBLOCKS];
	double rate;
	pthread_t vcpu;
	bool running;
	atomic_bool stop;
	atomic_uint_fast64_t writes;
	uint64_t rng;
};

struct sess {
	const struct cfg *cf;
	unsigned int id;
	struct rdmae_conn *conn;
	struct guest g;
	int result;			/* 0 = behaved as expected */
	char msg[512];
};

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

static int guest_init(struct guest *g, unsigned int id, uint64_t size, const char *name0,
		      bool fill, bool huge)
{
	static const char *const names[NBLOCKS] = { "pc.ram", "vga.vram" };
	unsigned int i;
	size_t p;

	memset(g, 0, sizeof(*g));
	g->id = id;
	g->huge = huge;
	g->rng = 0x1234567ull + id;
	for (i = 0; i < NBLOCKS; i++) {
		struct gblock *b = &g->b[i];
		size_t words;

		b->name = i == 0 && name0 ? name0 : names[i];
		b->len = i == 0 ? size - size / 16 : size / 16;
		b->len -= b->len % PAGE;
		b->npages = b->len / PAGE;
		words = rdmae_bitmap_words(b->npages);
		b->mem = mmap(NULL, b->len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB : 0), -1, 0);
		b->dirty = calloc(words, sizeof(*b->dirty));
		b->round = calloc(words, sizeof(*b->round));
		b->ver = calloc(b->npages, sizeof(*b->ver));
		if (b->mem == MAP_FAILED || !b->dirty || !b->round || !b->ver)
			return -ENOMEM;
		if (!fill)
			continue;
		/* Three pages in four hold data, one stays zero: zero pages from the start. */
		for (p = 0; p < b->npages; p++) {
			b->ver[p] = p % 4 == 3 ? 0 : 1;
			page_fill(b->mem + p * PAGE, i, p, b->ver[p]);
		}
	}
	return 0;
}

static void guest_free(struct guest *g)
{
	unsigned int i;

	for (i = 0; i < NBLOCKS; i++) {
		if (g->b[i].mem && g->b[i].mem != MAP_FAILED)
			munmap(g->b[i].mem, g->b[i].len);
		free(g->b[i].dirty);
		free(g->b[i].round);
		free(g->b[i].ver);
	}
}

static void *vcpu_main(void *arg)
{
	struct guest *g = arg;
	uint64_t t0 = now_ns(), bytes = 0;

	while (!atomic_load(&g->stop)) {
		uint64_t r = xorshift(&g->rng);
		/* Mostly pc.ram, as a guest's working set would be. */
		unsigned int bi = (r & 15) == 0 ? 1 : 0;
		struct gblock *b = &g->b[bi];
		size_t p = (size_t)((r >> 8) % b->npages);
		uint32_t v = (r >> 4 & 15) == 0 ? 0 : b->ver[p] + 1;

		page_fill(b->mem + p * PAGE, bi, p, v);
		b->ver[p] = v;
		/* Log after the write: a harvest in between is caught by the next one. */
		atomic_fetch_or(&b->dirty[p / 64], 1ull << (p % 64));
		atomic_fetch_add(&g->writes, 1);
		bytes += PAGE;
		if ((bytes & ((64 * PAGE) - 1)) == 0) {
			double due = (double)bytes / g->rate * 1e9;
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

static int guest_start(struct guest *g, double rate)
{
	g->rate = rate;
	atomic_store(&g->stop, false);
	if (rate <= 0)
		return 0;
	if (pthread_create(&g->vcpu, NULL, vcpu_main, g))
		return -EAGAIN;
	g->running = true;
	return 0;
}

static void guest_pause(struct guest *g)
{
	if (!g->running)
		return;
	atomic_store(&g->stop, true);
	pthread_join(g->vcpu, NULL);
	g->running = false;
}

enum harvest { H_ALL, H_REPLACE, H_OR };

/* Take the dirty log: each word is swapped for zero, as KVM's GET_DIRTY_LOG does. */
static void harvest(struct guest *g, enum harvest how)
{
	unsigned int i;
	size_t w;

	for (i = 0; i < NBLOCKS; i++) {
		struct gblock *b = &g->b[i];
		size_t words = rdmae_bitmap_words(b->npages);

		for (w = 0; w < words; w++) {
			uint64_t v = atomic_exchange(&b->dirty[w], 0);

			b->round[w] = how == H_ALL ? ~0ull : how == H_OR ? b->round[w] | v : v;
		}
		if (how == H_ALL && b->npages % 64)
			b->round[words - 1] = (1ull << (b->npages % 64)) - 1;
	}
}

static uint64_t guest_sum(const struct guest *g)
{
	uint64_t h = 0;
	unsigned int i;

	for (i = 0; i < NBLOCKS; i++)
		h ^= XXH3_64bits(g->b[i].mem, g->b[i].len) + i;
	return h;
}

static int threads_alive(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void blocks_of(const struct guest *g, struct rdmae_block *out)
{
	unsigned int i;

	for (i = 0; i < NBLOCKS; i++) {
		out[i].name = g->b[i].name;
		out[i].host = g->b[i].mem;
		out[i].len = g->b[i].len;
		out[i].page_size = PAGE;
		out[i].hugepages = g->huge;
	}
}

static void opts_of(const struct cfg *cf, struct rdmae_session_opts *o)
{
	rdmae_session_opts_default(o);
	o->reg_mode = cf->on_demand ? RDMAE_REG_ON_DEMAND : RDMAE_REG_PIN_ALL;
	o->max_bandwidth = (uint64_t)cf->bw_cap;
	o->downtime_limit_ns = cf->downtime_ms * 1000000ull;
	o->max_rounds = cf->max_rounds;
	o->timeout_ms = cf->timeout_ms;
	o->no_verify = cf->no_verify;
	o->require_verify = cf->require_verify;
}

static void conn_opts_of(const struct cfg *cf, struct rdmae_conn_opts *o)
{
	rdmae_conn_opts_default(o);
	if (cf->lanes)
		o->lanes = (uint16_t)cf->lanes;
	o->key_file = cf->key_file;
	o->auth_none = cf->auth_none;
}

static void say(const struct sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const struct sess *s, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (s->cf->sessions > 1)
		printf("[%s %u] %s\n", s->cf->src ? "src" : "dst", s->id, line);
	else
		printf("%s: %s\n", s->cf->src ? "src" : "dst", line);
	fflush(stdout);
}

static void print_round(const struct sess *s, const struct rdmae_round_stats *r)
{
	say(s, "| %5u | %8" PRIu64 " | %8.1f | %6" PRIu64 " | %6" PRIu64 " | %8.1f | %6.1f | %8.1f | "
	    "%9.1f | %8.1f | %8.1f |", r->round, r->pages, (double)r->bytes / 1048576.0,
	    r->zero_pages, r->runs, (double)r->duration_ns / 1e6, (double)r->ack_ns / 1e6,
	    r->bandwidth / 1e6,
	    r->dirty_rate / 1e6, (double)r->remaining_bytes / 1048576.0,
	    (double)r->expected_downtime_ns / 1e6);
}

/* Bytes of device state: a header, then the version table of every block. */
static size_t state_len(const struct guest *g)
{
	size_t n = (2 + NBLOCKS) * sizeof(uint32_t);

	for (unsigned int i = 0; i < NBLOCKS; i++)
		n += g->b[i].npages * sizeof(uint32_t);
	return n;
}

/* Device state: the version table of every block, as the stream QEMU's vmstate would be. */
static int send_state(struct sess *s, struct rdmae_session *ss, struct rdmae_err *err)
{
	uint32_t hdr[2 + NBLOCKS];
	unsigned int i;
	int ret;

	hdr[0] = STATE_MAGIC;
	hdr[1] = NBLOCKS;
	for (i = 0; i < NBLOCKS; i++)
		hdr[2 + i] = (uint32_t)s->g.b[i].npages;
	ret = rdmae_session_send_state(ss, hdr, sizeof(hdr), err);
	for (i = 0; i < NBLOCKS && !ret; i++) {
		const uint8_t *p = (const uint8_t *)s->g.b[i].ver;
		size_t len = s->g.b[i].npages * sizeof(uint32_t), off;

		for (off = 0; off < len && !ret; off += STATE_CHUNK) {
			size_t n = len - off < STATE_CHUNK ? len - off : STATE_CHUNK;

			/* Part of the state is out: the operator cancels now. */
			if (s->cf->cancel_at == PH_STATE && s->cf->cancel_src)
				return -ECANCELED;
			ret = rdmae_session_send_state(ss, p + off, n, err);
		}
	}
	return ret;
}

static void *cancel_later(void *arg)
{
	struct rdmae_session *ss = arg;
	struct timespec ts = { 0, 300000000 };

	nanosleep(&ts, NULL);
	if (!rdmae_session_cancel(ss, "cancelled by the operator during a round"))
		printf("src: the cancel did not take effect (COMPLETE already sent)\n");
	return NULL;
}

static int run_src(struct sess *s)
{
	const struct cfg *cf = s->cf;
	struct rdmae_block blocks[NBLOCKS];
	struct rdmae_session_opts so;
	struct rdmae_session_stats st;
	struct rdmae_session *ss = NULL;
	struct rdmae_round_stats rs;
	struct rdmae_plan plan;
	struct rdmae_err err = { 0 };
	const uint64_t *bm[NBLOCKS];
	pthread_t canceller;
	bool cancel_thread = false;
	uint64_t writes_before, sum_before = 0;
	unsigned int i;
	int ret;

	blocks_of(&s->g, blocks);
	for (i = 0; i < NBLOCKS; i++)
		bm[i] = s->g.b[i].round;
	opts_of(cf, &so);
	/* The device state is known in advance here; it is part of the expected downtime. */
	so.expected_state_bytes = state_len(&s->g);
	ret = guest_start(&s->g, cf->rate);
	if (ret)
		return ret;
	ret = rdmae_session_create(&ss, RDMAE_SOURCE, s->conn, blocks, NBLOCKS, &so, &err);
	if (ret)
		goto out;
	ret = rdmae_session_preflight(ss, &err);
	if (ret)
		goto out;
	say(s, "pre-flight passed: %u blocks, %" PRIu64 " MiB", NBLOCKS, cf->size >> 20);
	if (cf->cancel_at == PH_PREFLIGHT && cf->cancel_src) {
		rdmae_session_cancel(ss, "cancelled by the operator after pre-flight");
		ret = -ECANCELED;
		goto out;
	}
	if (cf->cancel_at == PH_ROUND && cf->cancel_src) {
		if (pthread_create(&canceller, NULL, cancel_later, ss) == 0)
			cancel_thread = true;
	}
	say(s, "| round |    pages |      MiB |  zeros |   runs |       ms | ack ms |     MB/s | "
	    "dirty MB/s | left MiB | expected downtime ms |");
	harvest(&s->g, H_ALL);
	for (;;) {
		ret = rdmae_session_round(ss, bm, &rs, &err);
		if (ret)
			goto out;
		harvest(&s->g, H_REPLACE);
		rdmae_session_plan(ss, bm, &plan);
		/* The plan fills in what is left after the round and its expected downtime. */
		rdmae_session_last_round(ss, &rs);
		print_round(s, &rs);
		if (plan.converged) {
			say(s, "converged: %.1f MiB left, expected downtime %.1f ms: stopping the guest",
			    (double)plan.dirty_bytes / 1048576.0,
			    (double)plan.expected_downtime_ns / 1e6);
			break;
		}
	}
	/* Converged: stop the vCPU, take the last dirty log, send it and the device state. */
	guest_pause(&s->g);
	rdmae_session_mark_stopped(ss);
	/* The planned pages were not sent yet: the final round is them plus the last log. */
	harvest(&s->g, H_OR);
	ret = rdmae_session_round(ss, bm, &rs, &err);
	if (ret)
		goto out;
	say(s, "final round, guest stopped:");
	print_round(s, &rs);
	/* Only the cancel-during-state case checks the memory afterwards; hashing is not free. */
	if (cf->cancel_at == PH_STATE)
		sum_before = guest_sum(&s->g);
	ret = send_state(s, ss, &err);
	if (ret == -ECANCELED) {
		rdmae_session_cancel(ss, "cancelled by the operator during device state");
		goto out;
	}
	if (ret)
		goto out;
	ret = rdmae_session_complete(ss, &err);
out:
	if (cancel_thread)
		pthread_join(canceller, NULL);
	/* Not converging is not fatal to the guest: the operator gives up on the migration. */
	if (ret == -ETIME)
		rdmae_session_cancel(ss, "migration did not converge");
	writes_before = atomic_load(&s->g.writes);
	if (ss && !rdmae_session_stats(ss, &st))
		say(s, "stats: %" PRIu64 " MiB RAM, %" PRIu64 " MiB sent, %" PRIu64 " zero pages, "
		    "%u rounds, %.1f MB/s, setup %.1f ms, downtime %.1f ms (expected %.1f; "
		    "%.1f ms of it hashing after the stop, %.1f ms from COMPLETE to COMMIT_OK), "
		    "hashing %.1f ms in all, total %.1f ms, %u lanes%s",
		    st.total_bytes >> 20, st.transferred_bytes >> 20, st.zero_pages, st.rounds,
		    st.throughput / 1e6, (double)st.setup_ns / 1e6,
		    (double)st.actual_downtime_ns / 1e6, (double)st.expected_downtime_ns / 1e6,
		    (double)st.verify_ns / 1e6, (double)st.commit_ns / 1e6,
		    (double)st.hash_ns / 1e6, (double)st.total_ns / 1e6, st.lanes,
		    cf->no_verify ? ", not verified" : "");
	if (ss) {
		for (i = 0; i < rdmae_conn_negotiated(s->conn)->lanes; i++) {
			struct rdmae_lane_stats ls;

			if (!rdmae_session_lane_stats(ss, i, &ls))
				say(s, "lane %u: %" PRIu64 " WRITEs, %" PRIu64 " MiB, %" PRIu64
				    " doorbells, %" PRIu64 " completions", i, ls.writes,
				    ls.write_bytes >> 20, ls.doorbells, ls.completions);
		}
	}
	rdmae_session_destroy(ss);
	if (ret)
		say(s, "migration ended: %s (%d)", err.msg[0] ? err.msg : strerror(-ret), ret);
	/*
	 * A failed or cancelled migration leaves the guest running and its memory
	 * untouched; an unknown outcome leaves it paused, as the engine asks.
	 */
	if (ret == -ENOTRECOVERABLE) {
		if (cf->expect != EX_UNKNOWN)
			snprintf(s->msg, sizeof(s->msg), "outcome unknown: %s", err.msg);
		else
			say(s, "outcome unknown, as it should be: the guest stays paused");
	} else if (ret) {
		if (!s->g.running && cf->rate > 0 && guest_sum(&s->g) != sum_before && sum_before)
			snprintf(s->msg, sizeof(s->msg), "source memory changed by the engine");
		if (!s->g.running)
			guest_start(&s->g, cf->rate);
		if (cf->rate > 0) {
			struct timespec ts = { 0, 200000000 };

			nanosleep(&ts, NULL);
			if (atomic_load(&s->g.writes) == writes_before)
				snprintf(s->msg, sizeof(s->msg), "the source guest is not running");
			else
				say(s, "source guest still running (%" PRIuFAST64 " page writes)",
				    atomic_load(&s->g.writes));
		}
	}
	guest_pause(&s->g);
	switch (cf->expect) {
	case EX_CONVERGE:
		s->result = ret || s->msg[0];
		if (!ret)
			say(s, "migration committed: %s",
			    cf->no_verify ? "not verified (--no-verify)" : "destination verified");
		break;
	case EX_NOCONVERGE:
		s->result = !(ret == -ETIME && strstr(err.msg, "converge")) || s->msg[0];
		break;
	case EX_CANCEL:
		s->result = ret != -ECANCELED || s->msg[0];
		break;
	case EX_MISMATCH:
		s->result = !ret || !strstr(err.msg, "block") || s->msg[0];
		break;
	case EX_UNKNOWN:
		s->result = ret != -ENOTRECOVERABLE || s->g.running || s->msg[0];
		break;
	}
	if (s->msg[0])
		say(s, "FAIL: %s", s->msg);
	return 0;
}

static int verify_dest(struct sess *s, const uint8_t *state, size_t len)
{
	uint32_t hdr[2 + NBLOCKS];
	uint8_t *expect = malloc(PAGE);
	size_t off = sizeof(hdr), p, pages = 0, zeros = 0;
	unsigned int i;

	if (!expect)
		return -ENOMEM;
	if (len < sizeof(hdr)) {
		snprintf(s->msg, sizeof(s->msg), "device state of %zu bytes", len);
		goto bad;
	}
	memcpy(hdr, state, sizeof(hdr));
	if (hdr[0] != STATE_MAGIC || hdr[1] != NBLOCKS) {
		snprintf(s->msg, sizeof(s->msg), "device state header wrong");
		goto bad;
	}
	for (i = 0; i < NBLOCKS; i++) {
		const struct gblock *b = &s->g.b[i];

		if (hdr[2 + i] != b->npages || off + b->npages * 4 > len) {
			snprintf(s->msg, sizeof(s->msg), "device state does not match block %s",
				 b->name);
			goto bad;
		}
		for (p = 0; p < b->npages; p++) {
			uint32_t v;

			memcpy(&v, state + off + p * 4, 4);
			page_fill(expect, i, p, v);
			if (memcmp(expect, b->mem + p * PAGE, PAGE) != 0) {
				size_t k = 0;

				while (expect[k] == b->mem[p * PAGE + k])
					k++;
				snprintf(s->msg, sizeof(s->msg), "block %s page %zu (version %u) "
					 "differs at byte %zu", b->name, p, v, k);
				goto bad;
			}
			pages++;
			zeros += v == 0;
		}
		off += b->npages * 4;
	}
	say(s, "verified byte for byte: %zu pages (%zu zero) equal the source's at stop", pages,
	    zeros);
	free(expect);
	return 0;
bad:
	free(expect);
	return -EILSEQ;
}

static int run_dst(struct sess *s)
{
	const struct cfg *cf = s->cf;
	struct rdmae_block blocks[NBLOCKS];
	struct rdmae_session_opts so;
	struct rdmae_session *ss = NULL;
	struct rdmae_dest_event ev;
	struct rdmae_session_stats st;
	struct rdmae_err err = { 0 };
	uint8_t *state = NULL;
	size_t slen = 0, scap = 0;
	unsigned int rounds = 0, states = 0;
	int ret;

	blocks_of(&s->g, blocks);
	opts_of(cf, &so);
	ret = rdmae_session_create(&ss, RDMAE_DEST, s->conn, blocks, NBLOCKS, &so, &err);
	if (ret)
		goto out;
	ret = rdmae_session_preflight(ss, &err);
	if (ret)
		goto out;
	say(s, "pre-flight passed");
	if (cf->cancel_at == PH_PREFLIGHT && !cf->cancel_src) {
		rdmae_session_cancel(ss, "destination cancelled after pre-flight");
		ret = -ECANCELED;
		goto out;
	}
	for (;;) {
		ret = rdmae_session_dest_step(ss, &ev, &err);
		if (ret)
			goto out;
		if (ev.kind == RDMAE_EV_ROUND) {
			rounds++;
			if (!cf->quiet)
				say(s, "round %u placed", ev.round);
			if (cf->cancel_at == PH_ROUND && !cf->cancel_src) {
				rdmae_session_cancel(ss, "destination cancelled during the rounds");
				ret = -ECANCELED;
				goto out;
			}
		} else if (ev.kind == RDMAE_EV_STATE && ev.len) {
			if (slen + ev.len > scap) {
				size_t ncap = (slen + ev.len) * 2;
				uint8_t *n = realloc(state, ncap);

				if (!n) {
					ret = -ENOMEM;
					goto out;
				}
				state = n;
				scap = ncap;
			}
			memcpy(state + slen, ev.data, ev.len);
			slen += ev.len;
			/* The whole state is here: a destination that stops answering now. */
			if (cf->stall_ms && slen >= state_len(&s->g)) {
				struct timespec ts = { cf->stall_ms / 1000,
						       (long)(cf->stall_ms % 1000) * 1000000L };

				say(s, "stalling %d ms before the commit", cf->stall_ms);
				nanosleep(&ts, NULL);
			}
			if (++states == 2 && cf->cancel_at == PH_STATE && !cf->cancel_src) {
				rdmae_session_cancel(ss, "destination cancelled during device state");
				ret = -ECANCELED;
				goto out;
			}
		} else if (ev.kind == RDMAE_EV_COMMITTED) {
			break;
		}
	}
	say(s, "committed after %u rounds, %zu bytes of device state%s", rounds, slen,
	    ev.verified ? ", verified" : ", NOT verified");
	if (!rdmae_session_stats(ss, &st))
		say(s, "stats: hashing %.1f ms in all, %.1f ms of it after the final round's "
		    "fence (in the downtime)", (double)st.hash_ns / 1e6, (double)st.verify_ns / 1e6);
	ret = verify_dest(s, state, slen);
out:
	rdmae_session_destroy(ss);
	free(state);
	if (ret && ret != -EILSEQ)
		say(s, "migration ended: %s (%d)", err.msg[0] ? err.msg : strerror(-ret), ret);
	switch (cf->expect) {
	case EX_CONVERGE:
		s->result = ret != 0;
		break;
	case EX_NOCONVERGE:
	case EX_CANCEL:
		s->result = ret != -ECANCELED;
		break;
	case EX_MISMATCH:
		s->result = !ret || !strstr(err.msg, "block");
		break;
	case EX_UNKNOWN:
		/* Committed or not, the destination's own account is all it can give. */
		s->result = 0;
		break;
	}
	if (s->msg[0])
		say(s, "FAIL: %s", s->msg);
	return 0;
}

static void *sess_main(void *arg)
{
	struct sess *s = arg;

	if (s->cf->src)
		run_src(s);
	else
		run_dst(s);
	return NULL;
}

static enum expect parse_expect(const char *v)
{
	if (!strcmp(v, "noconverge"))
		return EX_NOCONVERGE;
	if (!strcmp(v, "cancel"))
		return EX_CANCEL;
	if (!strcmp(v, "mismatch"))
		return EX_MISMATCH;
	if (!strcmp(v, "unknown"))
		return EX_UNKNOWN;
	return EX_CONVERGE;
}

static enum phase parse_phase(const char *v)
{
	if (!strcmp(v, "preflight"))
		return PH_PREFLIGHT;
	if (!strcmp(v, "round"))
		return PH_ROUND;
	if (!strcmp(v, "state"))
		return PH_STATE;
	return PH_NONE;
}

static void usage(void)
{
	fprintf(stderr, "usage: rdmae_mig src|dst --addr A [--port P] [--size N] [--rate MB/s]\n"
		"  [--downtime MS] [--max-rounds N] [--bw-cap MB/s] [--sessions N]\n"
		"  [--expect converge|noconverge|cancel|mismatch|unknown]\n"
		"  [--timeout MS] [--stall MS (dst: pause before the commit)]\n"
		"  [--cancel-at preflight|round|state] [--cancel-side src|dst]\n"
		"  [--dst-size N] [--dst-name NAME] [--on-demand] [--hugepages] [--lanes N]\n"
		"  [--no-verify (src)] [--require-verify (dst)]\n"
		"  [--quiet] --key FILE | --auth-none\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },
		{ "size", required_argument, NULL, 's' },
		{ "rate", required_argument, NULL, 'r' },
		{ "downtime", required_argument, NULL, 'd' },
		{ "max-rounds", required_argument, NULL, 'm' },
		{ "bw-cap", required_argument, NULL, 'b' },
		{ "sessions", required_argument, NULL, 'n' },
		{ "expect", required_argument, NULL, 'e' },
		{ "cancel-at", required_argument, NULL, 'c' },
		{ "cancel-side", required_argument, NULL, 'C' },
		{ "dst-size", required_argument, NULL, 'S' },
		{ "dst-name", required_argument, NULL, 'N' },
		{ "on-demand", no_argument, NULL, 'o' },
		{ "no-verify", no_argument, NULL, 'V' },
		{ "require-verify", no_argument, NULL, 'R' },
		{ "hugepages", no_argument, NULL, 'H' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "stall", required_argument, NULL, 'W' },
		{ "lanes", required_argument, NULL, 'l' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "key", required_argument, NULL, 'K' },
		{ "auth-none", no_argument, NULL, 'A' },
		{ NULL, 0, NULL, 0 }
	};
	struct cfg cf = { .port = "7800", .size = 256u << 20, .downtime_ms = 300,
			  .max_rounds = 30, .sessions = 1 };
	struct sess *ss;
	struct rdmae_listener *l = NULL;
	struct rdmae_conn_opts co;
	struct rdmae_err err = { 0 };
	pthread_t th[MAX_SESSIONS];
	unsigned int i, started = 0, failed = 0;
	int opt, ret = 0;

	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "src"))
		cf.src = true;
	else if (strcmp(argv[1], "dst") != 0)
		usage();
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 'a': cf.addr = optarg; break;
		case 'p': cf.port = optarg; break;
		case 's': cf.size = rdmae_parse_size(optarg, NULL); break;
		case 'r': cf.rate = strtod(optarg, NULL) * 1e6; break;
		case 'd': cf.downtime_ms = strtoull(optarg, NULL, 0); break;
		case 'm': cf.max_rounds = (unsigned int)atoi(optarg); break;
		case 'b': cf.bw_cap = strtod(optarg, NULL) * 1e6; break;
		case 'n': cf.sessions = (unsigned int)atoi(optarg); break;
		case 'e': cf.expect = parse_expect(optarg); break;
		case 'c': cf.cancel_at = parse_phase(optarg); break;
		case 'C': cf.cancel_src = !strcmp(optarg, "src"); break;
		case 'S': cf.dst_size = rdmae_parse_size(optarg, NULL); break;
		case 'N': cf.dst_name = optarg; break;
		case 'o': cf.on_demand = true; break;
		case 'V': cf.no_verify = true; break;
		case 'R': cf.require_verify = true; break;
		case 'H': cf.hugepages = true; break;
		case 'T': cf.timeout_ms = atoi(optarg); break;
		case 'W': cf.stall_ms = atoi(optarg); break;
		case 'l': cf.lanes = (unsigned int)atoi(optarg); break;
		case 'q': cf.quiet = true; break;
		case 'K': cf.key_file = optarg; break;
		case 'A': cf.auth_none = true; break;
		default: usage();
		}
	}
	if (!cf.addr || !cf.sessions || cf.sessions > MAX_SESSIONS || cf.size < (1u << 20))
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	ss = calloc(cf.sessions, sizeof(*ss));
	if (!ss)
		return 1;
	conn_opts_of(&cf, &co);
	if (!cf.src) {
		ret = rdmae_listen(&l, cf.addr, cf.port, &co, &err);
		if (ret) {
			fprintf(stderr, "dst: %s\n", err.msg);
			goto out;
		}
		printf("dst: listening on %s:%d for %u session(s)\n", cf.addr,
		       rdmae_listener_port(l), cf.sessions);
	}
	for (i = 0; i < cf.sessions; i++) {
		uint64_t size = !cf.src && cf.dst_size ? cf.dst_size : cf.size;

		ss[i].cf = &cf;
		ss[i].id = i;
		ret = guest_init(&ss[i].g, i, size, cf.src ? NULL : cf.dst_name, cf.src,
				 cf.hugepages);
		if (ret) {
			fprintf(stderr, "%s: guest %u: cannot map %" PRIu64 " MiB%s\n", argv[1], i,
				size >> 20, cf.hugepages ? " on huge pages" : "");
			goto out;
		}
		ret = cf.src ? rdmae_connect(&ss[i].conn, cf.addr, cf.port, &co, &err)
			     : rdmae_accept(l, &ss[i].conn, 120000, &err);
		if (ret) {
			fprintf(stderr, "%s: session %u: %s\n", argv[1], i, err.msg);
			goto out;
		}
	}
	rdmae_listener_destroy(l);
	l = NULL;
	for (started = 0; started < cf.sessions; started++)
		if (pthread_create(&th[started], NULL, sess_main, &ss[started])) {
			ret = -EAGAIN;
			break;
		}
	for (i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		failed += ss[i].result != 0;
	}
out:
	rdmae_listener_destroy(l);
	for (i = 0; i < cf.sessions; i++) {
		rdmae_conn_destroy(ss[i].conn);
		guest_free(&ss[i].g);
	}
	free(ss);
	if (ret)
		return 1;
	/*
	 * Nothing may be left behind: no progress thread, no vCPU, no canceller.
	 * A joined thread can stay listed in /proc for a moment while the kernel
	 * finishes its exit; a leaked one stays for good. Allow one second.
	 */
	for (i = 0; i < 100 && threads_alive() != 1; i++) {
		struct timespec ts = { 0, 10000000 };

		nanosleep(&ts, NULL);
	}
	if (threads_alive() != 1) {
		printf("%s: FAIL: %d threads still alive after teardown\n", argv[1],
		       threads_alive());
		failed++;
	}
	printf("%s: %s (%u of %u sessions behaved as expected)\n", argv[1],
	       failed ? "FAIL" : "PASS", cf.sessions - failed, cf.sessions);
	return failed ? 1 : 0;
}
