/* SPDX-License-Identifier: MIT */
/*
 * rdmae_tt: transport tests run on the soft-RoCE bench, one process per
 * side. Each test exits 0 only when the behaviour it checks was seen.
 *
 *   rdmae_tt TEST server|client [options]
 *
 * TEST is one of:
 *   write      client WRITEs --size bytes of a pattern into the server's
 *              registered buffer, in runs; the server verifies every byte
 *   lanes      client: one thread per lane, --count rounds each of
 *              rdmae_write_lane of its slice then rdmae_send_lane "placed";
 *              server: one thread per lane on rdmae_recv_lane checks the
 *              slice as each message arrives, then the whole buffer
 *   msgs       client sends --count small messages; the server reads them
 *              late (credit window exhausted) and checks order and content
 *   frag       one --size message each way, fragmented and reassembled
 *   negotiate  connect with the given knobs; --expect-fail FIELD expects
 *              the named negotiation failure on this side
 *   hold       connect and wait for the connection to fail (keepalive,
 *              peer killed, link cut); --expect-error TEXT, --within MS
 *   stream     client WRITEs --size bytes over and over until an error;
 *              --expect-error TEXT, --within MS (from the first failure)
 *   prepare    as write, --count connections (default 2) one after the
 *              other; the server opens the device of --addr and prepares
 *              (populates, registers) its buffer before it listens, then
 *              attaches that one region to each connection once it is up
 *
 * Every test needs --key FILE (the pre-shared key) or --auth-none.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "rdmae_size.h"

#include "rdmae_conn.h"
#include "rdmae_dev.h"
#include "rdmae_region.h"
#include "rdmae_write.h"

struct args {
	const char *test;
	bool server;
	const char *addr;
	const char *port;
	const char *bind;
	uint64_t size;
	uint64_t run;			/* run length for write */
	bool scatter;			/* write even pages, then odd pages */
	uint64_t count;
	int lanes;
	int min_version, max_version;
	uint32_t frag_size, rw_size, send_size, recv_size;
	const char *expect_fail;
	const char *expect_error;
	int within_ms;
	int keepalive_ms, keepalive_timeout_ms;
	size_t recv_queue;
	int64_t flip;			/* client: corrupt this byte of the pattern (bench self-check) */
	bool on_demand;
	size_t pin_limit;
	bool hugepages;
	int timeout_ms;
	uint32_t writes_in_flight;
	const char *key_file;
	bool auth_none;
};

#define MAX_DESCS 64

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t pattern_word(uint64_t off, uint64_t seed)
{
	return (off * 0x9E3779B97F4A7C15ull) ^ seed;
}

static void fill_pattern(uint8_t *p, uint64_t len, uint64_t seed)
{
	uint64_t o;

	for (o = 0; o + 8 <= len; o += 8) {
		uint64_t w = pattern_word(o, seed);

		memcpy(p + o, &w, 8);
	}
}

/* Every byte, so that one flipped byte anywhere is caught. */
static int64_t check_pattern(const uint8_t *p, uint64_t len, uint64_t seed)
{
	uint64_t o;

	for (o = 0; o + 8 <= len; o += 8) {
		uint64_t w = pattern_word(o, seed);

		if (memcmp(p + o, &w, 8) != 0) {
			unsigned int k;

			for (k = 0; k < 8; k++)
				if (p[o + k] != ((const uint8_t *)&w)[k])
					return (int64_t)(o + k);
		}
	}
	return -1;
}

static void *map_buf(uint64_t len, bool huge)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB : 0), -1, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "mmap %" PRIu64 " bytes%s: %s\n", len, huge ? " (huge)" : "",
			strerror(errno));
		return NULL;
	}
	return p;
}

static void opts_from_args(struct rdmae_conn_opts *o, const struct args *a)
{
	rdmae_conn_opts_default(o);
	o->bind_addr = a->bind;
	if (a->lanes)
		o->lanes = (uint16_t)a->lanes;
	if (a->min_version)
		o->min_version = (uint16_t)a->min_version;
	if (a->max_version)
		o->max_version = (uint16_t)a->max_version;
	if (a->frag_size)
		o->frag_size = a->frag_size;
	if (a->rw_size)
		o->rw_size = a->rw_size;
	if (a->send_size)
		o->send_size = a->send_size;
	if (a->recv_size)
		o->recv_size = a->recv_size;
	if (a->keepalive_ms)
		o->keepalive_ms = a->keepalive_ms;
	if (a->keepalive_timeout_ms)
		o->keepalive_timeout_ms = a->keepalive_timeout_ms;
	if (a->recv_queue)
		o->recv_queue_bytes = a->recv_queue;
	if (a->timeout_ms)
		o->timeout_ms = a->timeout_ms;
	if (a->writes_in_flight)
		o->writes_in_flight = a->writes_in_flight;
	o->key_file = a->key_file;
	o->auth_none = a->auth_none;
}

/* A test that expects the negotiation to fail wants accept to return that failure. */
static int stop_on_drop(void *arg, const struct rdmae_err *e)
{
	(void)arg;
	return e->code ? e->code : -EPROTO;
}

static double us_to_ms(uint64_t us)
{
	return (double)us / 1e3;
}

/* Where the connection's setup went (rdmae_conn_setup_times), for doc/performance.md. */
static void print_setup(const struct args *a, struct rdmae_conn *c)
{
	struct rdmae_setup_times t;

	rdmae_conn_setup_times(c, &t);
	printf("%s setup: %u lanes, total %.1f ms: init %.1f, resolve %.1f, lanes %.1f (device "
	       "%.1f, ring alloc %.1f, ring reg %.1f, qp %.1f, post recv %.1f; receives %u on "
	       "lane 0, %u on the others), handshake %.1f, negotiate %.1f (HMAC and handling "
	       "%.1f), lanes after 0 %.1f\n", a->server ? "server" : "client", t.lanes,
	       us_to_ms(t.total_us), us_to_ms(t.init_us), us_to_ms(t.resolve_us),
	       us_to_ms(t.lanes_us), us_to_ms(t.device_us), us_to_ms(t.ring_alloc_us),
	       us_to_ms(t.ring_reg_us), us_to_ms(t.qp_create_us), us_to_ms(t.post_recv_us),
	       t.lane0_recvs, t.lane_recvs, us_to_ms(t.handshake_us), us_to_ms(t.negotiate_us),
	       us_to_ms(t.auth_us), us_to_ms(t.more_lanes_us));
}

static int open_conn(const struct args *a, struct rdmae_conn **c, struct rdmae_err *err)
{
	struct rdmae_conn_opts o;
	struct rdmae_listener *l;
	int ret;

	opts_from_args(&o, a);
	if (!a->server) {
		ret = rdmae_connect(c, a->addr, a->port, &o, err);
		if (!ret)
			print_setup(a, *c);
		return ret;
	}
	ret = rdmae_listen(&l, a->addr, a->port, &o, err);
	if (ret)
		return ret;
	if (a->expect_fail)
		rdmae_listener_on_drop(l, stop_on_drop, NULL);
	printf("server: listening on %s:%d\n", a->addr, rdmae_listener_port(l));
	fflush(stdout);
	ret = rdmae_accept(l, c, 60000, err);
	rdmae_listener_destroy(l);
	if (!ret)
		print_setup(a, *c);
	return ret;
}

static void print_negotiated(struct rdmae_conn *c)
{
	const struct rdmae_negotiated *n = rdmae_conn_negotiated(c);

	printf("negotiated with %s: version 0x%04x, %u lanes, send credits %u, send %u, "
	       "receive %u, fragmented %u, rw %u\n", rdmae_conn_peer(c), n->version, n->lanes,
	       n->send_credits, n->max_send_size, n->max_receive_size, n->max_fragmented_size,
	       n->max_rw_size);
}

static void print_lanes(struct rdmae_conn *c)
{
	const struct rdmae_negotiated *n = rdmae_conn_negotiated(c);
	struct rdmae_pace_stats ps;
	unsigned int i;

	for (i = 0; i < n->lanes; i++) {
		struct rdmae_lane_stats s;

		if (rdmae_conn_lane_stats(c, i, &s))
			continue;
		printf("lane %u: writes %" PRIu64 " (%" PRIu64 " MiB), sends %" PRIu64 ", recvs %"
		       PRIu64 ", doorbells %" PRIu64 ", completions %" PRIu64 ", credit stalls %"
		       PRIu64 ", sq stalls %" PRIu64 ", fences %" PRIu64 "\n", i, s.writes,
		       s.write_bytes >> 20, s.sends, s.recvs, s.doorbells, s.completions,
		       s.credit_stalls, s.sq_stalls, s.fences);
	}
	if (!rdmae_conn_pace_stats(c, &ps))
		printf("pacing: budget %.1f MiB, most in flight %.1f MiB, measured %.1f MB/s, "
		       "base latency %.3f ms, budget stalls %" PRIu64 "\n",
		       (double)ps.budget_bytes / 1048576.0, (double)ps.max_inflight_bytes / 1048576.0,
		       ps.bandwidth / 1e6, (double)ps.base_latency_ns / 1e6, ps.stalls);
}

/* ---- write ---- */

struct write_hello {
	uint64_t size;
	uint32_t ndescs;
	uint32_t pad;
	struct rdmae_bufdesc descs[MAX_DESCS];
};

struct write_done {
	uint32_t fence;
	uint32_t pad;
	uint64_t xxh;
};

struct write_result {
	int64_t first_bad;
	uint64_t xxh;
};

/* Advertise r (buf) to the client, wait for its WRITEs, verify every byte and tell it. */
static int serve_write(const struct args *a, struct rdmae_conn *c, struct rdmae_region *r,
		       const uint8_t *buf, struct rdmae_err *err)
{
	struct write_hello hello;
	struct write_done *done;
	struct write_result res;
	size_t n, len;
	int ret;

	memset(&hello, 0, sizeof(hello));
	hello.size = a->size;
	ret = rdmae_region_bufdescs(r, hello.descs, MAX_DESCS, &n, err);
	if (ret)
		return ret;
	hello.ndescs = (uint32_t)n;
	ret = rdmae_send(c, &hello, sizeof(hello), err);
	if (ret)
		return ret;
	ret = rdmae_recv(c, (void **)&done, &len, -1, err);
	if (ret)
		return ret;
	if (len != sizeof(*done)) {
		free(done);
		return rdmae_err_set(err, -EPROTO, "done message of %zu bytes", len);
	}
	/* The message came after the fence on lane 0; every lane's fence proves its WRITEs placed. */
	ret = rdmae_fence_wait(c, done->fence, 30000, err);
	if (ret) {
		free(done);
		return ret;
	}
	res.first_bad = check_pattern(buf, a->size, a->size);
	res.xxh = XXH3_64bits(buf, a->size);
	printf("server: verified %" PRIu64 " bytes: %s (xxh3 %016" PRIx64 ", client %016"
	       PRIx64 ")\n", a->size, res.first_bad < 0 ? "every byte matches" : "MISMATCH",
	       res.xxh, done->xxh);
	if (res.first_bad >= 0)
		printf("server: first differing byte at offset %" PRId64 "\n", res.first_bad);
	if (res.first_bad < 0 && res.xxh != done->xxh)
		res.first_bad = INT64_MAX;
	free(done);
	ret = rdmae_send(c, &res, sizeof(res), err);
	if (!ret && res.first_bad >= 0)
		ret = rdmae_err_set(err, -EILSEQ, "destination memory differs from the pattern");
	return ret;
}

static int test_write_server(const struct args *a, struct rdmae_conn *c, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .remote_write = 1 };
	struct rdmae_region *r;
	uint8_t *buf;
	uint64_t t0;
	int ret;

	buf = map_buf(a->size, a->hugepages);
	if (!buf)
		return -ENOMEM;
	t0 = now_ns();
	ret = rdmae_region_create(&r, c, buf, a->size, &ro, err);
	if (ret)
		goto out_unmap;
	printf("server: registered %" PRIu64 " MiB (page size %zu) in %.1f ms\n", a->size >> 20,
	       rdmae_region_page_size(r), (double)(now_ns() - t0) / 1e6);
	ret = serve_write(a, c, r, buf, err);
	rdmae_region_destroy(r);
out_unmap:
	munmap(buf, a->size);
	return ret;
}

/*
 * The destination's registration off the connection's path: the device of
 * the listening address is opened and the buffer prepared (populated and
 * registered) before anyone can connect; each connection, once negotiated
 * and authenticated, gets the same region attached and advertised. The
 * region outlives each connection; the buffer is zeroed between them so
 * the next verification proves the next connection's WRITEs.
 */
static int test_prepare_server(const struct args *a, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .remote_write = 1 };
	uint64_t count = a->count ? a->count : 2, i, t0;
	struct rdmae_conn_opts o;
	struct rdmae_listener *l;
	struct rdmae_region *r;
	struct rdmae_dev *d;
	uint8_t *buf;
	int ret;

	ret = rdmae_dev_open(&d, a->bind ? a->bind : a->addr, err);
	if (ret)
		return ret;
	buf = map_buf(a->size, a->hugepages);
	if (!buf) {
		ret = rdmae_err_set(err, -ENOMEM, "map %" PRIu64 " bytes", a->size);
		goto out_dev;
	}
	t0 = now_ns();
	ret = rdmae_region_prepare(&r, d, buf, a->size, &ro, err);
	if (ret)
		goto out_unmap;
	printf("server: prepared %" PRIu64 " MiB on %s (populated, registered) in %.1f ms, "
	       "before listening\n", a->size >> 20, rdmae_dev_name(d),
	       (double)(now_ns() - t0) / 1e6);
	opts_from_args(&o, a);
	o.dev = d;
	ret = rdmae_listen(&l, a->addr, a->port, &o, err);
	if (ret)
		goto out_region;
	printf("server: listening on %s:%d\n", a->addr, rdmae_listener_port(l));
	fflush(stdout);
	for (i = 0; i < count && !ret; i++) {
		struct rdmae_conn *c;

		if (i)
			memset(buf, 0, a->size);
		ret = rdmae_accept(l, &c, 60000, err);
		if (ret)
			break;
		t0 = now_ns();
		ret = rdmae_region_attach(r, c, err);
		if (!ret) {
			printf("server: connection %" PRIu64 " from %s: region attached in %.3f ms\n",
			       i + 1, rdmae_conn_peer(c), (double)(now_ns() - t0) / 1e6);
			ret = serve_write(a, c, r, buf, err);
		}
		rdmae_conn_destroy(c);
		if (!ret)
			printf("server: connection %" PRIu64 " closed, the region stays registered\n",
			       i + 1);
	}
	rdmae_listener_destroy(l);
out_region:
	rdmae_region_destroy(r);
out_unmap:
	munmap(buf, a->size);
out_dev:
	rdmae_dev_close(d);
	return ret;
}

static size_t build_runs(const struct args *a, struct rdmae_run *runs, uint64_t size)
{
	uint64_t run = a->run ? a->run : 1u << 20;
	size_t n = 0;
	uint64_t off;
	int pass;

	if (!a->scatter) {
		for (off = 0; off < size; off += run) {
			runs[n].local = off;
			runs[n].remote = off;
			runs[n].len = size - off < run ? size - off : run;
			n++;
		}
		return n;
	}
	/* Even runs first, then odd ones: nothing adjacent in a batch, so nothing coalesces. */
	for (pass = 0; pass < 2; pass++)
		for (off = (uint64_t)pass * run; off < size; off += 2 * run) {
			runs[n].local = off;
			runs[n].remote = off;
			runs[n].len = size - off < run ? size - off : run;
			n++;
		}
	return n;
}

/*
 * The server answers once it has registered its whole target: 19.5 s for
 * 1 GiB on the bench when the machine is quiet, 31.5 s with a build beside
 * it, which a 30 s wait turned into a failed test. A dead or stalled
 * server is the keepalive's to find (t_keepalive_busy), so this only
 * bounds a live server that never answers.
 */
#define HELLO_WAIT_MS 600000

static int get_hello(struct rdmae_conn *c, struct write_hello *hello, struct rdmae_err *err)
{
	struct write_hello *h;
	size_t len;
	int ret = rdmae_recv(c, (void **)&h, &len, HELLO_WAIT_MS, err);

	if (ret)
		return ret;
	if (len != sizeof(*h) || h->ndescs > MAX_DESCS) {
		free(h);
		return rdmae_err_set(err, -EPROTO, "bad hello from the server (%zu bytes)", len);
	}
	*hello = *h;
	free(h);
	return 0;
}

static int test_write_client(const struct args *a, struct rdmae_conn *c, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = a->on_demand ? RDMAE_REG_ON_DEMAND
							    : RDMAE_REG_PIN_ALL };
	struct write_hello hello;
	struct write_done done;
	struct write_result *res;
	struct rdmae_remote dst;
	struct rdmae_region *r;
	struct rdmae_run *runs;
	size_t nruns, len;
	uint64_t t0, t1;
	uint8_t *buf;
	int ret;

	memset(&hello, 0, sizeof(hello));
	ret = get_hello(c, &hello, err);
	if (ret)
		return ret;
	if (hello.size != a->size)
		return rdmae_err_set(err, -EINVAL, "server buffer is %" PRIu64 " bytes, ours %"
				     PRIu64, hello.size, a->size);
	buf = map_buf(a->size, a->hugepages);
	if (!buf)
		return -ENOMEM;
	fill_pattern(buf, a->size, a->size);
	if (a->flip >= 0 && (uint64_t)a->flip < a->size) {
		buf[a->flip] ^= 0x01;
		printf("client: flipped byte %" PRId64 " on purpose\n", a->flip);
	}
	done.xxh = XXH3_64bits(buf, a->size);
	runs = calloc(a->size / 4096 + 2, sizeof(*runs));
	if (!runs) {
		ret = -ENOMEM;
		goto out_unmap;
	}
	if (a->on_demand && a->pin_limit)
		rdmae_conn_set_pin_limit(c, a->pin_limit);
	t0 = now_ns();
	ret = rdmae_region_create(&r, c, buf, a->size, &ro, err);
	if (ret)
		goto out_runs;
	t1 = now_ns();
	printf("client: registered %" PRIu64 " MiB %s in %.1f ms\n", a->size >> 20,
	       a->on_demand ? "on demand" : "pin-all", (double)(t1 - t0) / 1e6);
	dst.descs = hello.descs;
	dst.ndescs = hello.ndescs;
	dst.len = hello.size;
	nruns = build_runs(a, runs, a->size);
	t0 = now_ns();
	ret = rdmae_write(c, r, &dst, runs, nruns, err);
	if (!ret)
		ret = rdmae_fence(c, &done.fence, err);
	if (!ret)
		ret = rdmae_write_flush(c, err);
	t1 = now_ns();
	if (ret)
		goto out_region;
	printf("client: wrote %" PRIu64 " MiB in %zu runs over %u lanes in %.3f s: %.1f MB/s\n",
	       a->size >> 20, nruns, rdmae_conn_negotiated(c)->lanes, (double)(t1 - t0) / 1e9,
	       (double)a->size / ((double)(t1 - t0) / 1e9) / 1e6);
	if (a->on_demand)
		printf("client: pinned now %zu MiB (limit %zu MiB)\n", rdmae_conn_pinned(c) >> 20,
		       a->pin_limit >> 20);
	ret = rdmae_send(c, &done, sizeof(done), err);
	if (ret)
		goto out_region;
	ret = rdmae_recv(c, (void **)&res, &len, 120000, err);
	if (ret)
		goto out_region;
	if (len != sizeof(*res))
		ret = rdmae_err_set(err, -EPROTO, "bad result message");
	else if (res->first_bad >= 0)
		ret = rdmae_err_set(err, -EILSEQ, "server found a mismatch at offset %" PRId64,
				    res->first_bad);
	else
		printf("client: server verified every byte\n");
	free(res);
	print_lanes(c);
out_region:
	rdmae_region_destroy(r);
out_runs:
	free(runs);
out_unmap:
	munmap(buf, a->size);
	return ret;
}

/* ---- lanes: one thread per lane, WRITEs then a "placed" message on that lane ---- */

/* What a lane's writer says once its WRITEs of one round are posted, on the same lane. */
struct lane_placed {
	uint32_t lane;
	uint32_t round;
	uint64_t off;
	uint64_t len;
};

struct lane_job {
	const struct args *a;
	struct rdmae_conn *c;
	struct rdmae_region *r;
	const struct rdmae_remote *dst;
	uint8_t *buf;
	unsigned int lane, nlanes;
	int ret;
	uint64_t checked;
	struct rdmae_err err;
};

/* Round r of lane k owns slice r * nlanes + k of the buffer: nothing shared between lanes. */
static void lane_slice(const struct lane_job *j, unsigned int round, uint64_t *off, uint64_t *len)
{
	uint64_t n = (uint64_t)j->nlanes * j->a->count;
	uint64_t slice = (j->a->size / n) & ~4095ull;

	*off = ((uint64_t)round * j->nlanes + j->lane) * slice;
	*len = slice;
}

/* Bytes [off, off+len) of the buffer hold the pattern of the whole: -1, or the first bad offset. */
static int64_t check_slice(const uint8_t *buf, uint64_t off, uint64_t len, uint64_t seed)
{
	uint64_t o;

	for (o = off; o + 8 <= off + len; o += 8) {
		uint64_t w = pattern_word(o, seed);

		if (memcmp(buf + o, &w, 8) != 0)
			return (int64_t)o;
	}
	return -1;
}

static void *lanes_writer(void *arg)
{
	struct lane_job *j = arg;
	struct rdmae_run *runs;
	unsigned int round;

	for (round = 0; round < j->a->count && !j->ret; round++) {
		struct lane_placed p = { .lane = j->lane, .round = round };
		uint64_t pages, i;
		size_t n = 0;

		lane_slice(j, round, &p.off, &p.len);
		pages = p.len / 4096;
		runs = calloc(pages, sizeof(*runs));
		if (!runs) {
			j->ret = rdmae_err_set(&j->err, -ENOMEM, "runs of lane %u", j->lane);
			break;
		}
		/* Even pages, then odd ones: one WR each, nothing coalesced. */
		for (i = 0; i < pages; i += 2)
			runs[n++] = (struct rdmae_run){ p.off + i * 4096, p.off + i * 4096, 4096 };
		for (i = 1; i < pages; i += 2)
			runs[n++] = (struct rdmae_run){ p.off + i * 4096, p.off + i * 4096, 4096 };
		j->ret = rdmae_write_lane(j->c, j->lane, j->r, j->dst, runs, n, &j->err);
		free(runs);
		if (!j->ret)
			j->ret = rdmae_send_lane(j->c, j->lane, &p, sizeof(p), 30000, &j->err);
	}
	return NULL;
}

static void *lanes_checker(void *arg)
{
	struct lane_job *j = arg;
	unsigned int round;

	for (round = 0; round < j->a->count && !j->ret; round++) {
		struct lane_placed *p;
		uint64_t off, len;
		int64_t bad;
		size_t n;

		j->ret = rdmae_recv_lane(j->c, j->lane, (void **)&p, &n, 60000, &j->err);
		if (j->ret)
			break;
		lane_slice(j, round, &off, &len);
		if (n != sizeof(*p) || p->lane != j->lane || p->round != round || p->off != off ||
		    p->len != len) {
			j->ret = rdmae_err_set(&j->err, -EPROTO, "lane %u round %u: unexpected "
					       "message of %zu bytes", j->lane, round, n);
			free(p);
			break;
		}
		free(p);
		/* RC order on this lane's QP: the WRITEs before the message are placed now. */
		bad = check_slice(j->buf, off, len, j->a->size);
		if (bad >= 0) {
			j->ret = rdmae_err_set(&j->err, -EILSEQ, "lane %u round %u: byte %" PRId64
					       " not placed when its message arrived", j->lane,
					       round, bad);
			break;
		}
		j->checked += len;
	}
	return NULL;
}

/* Start one thread per lane running fn, join them all; the first error wins. */
static int lanes_run(struct lane_job *jobs, unsigned int n, void *(*fn)(void *),
		     struct rdmae_err *err)
{
	pthread_t th[RDMAE_MAX_LANES];
	unsigned int k, started = 0;
	int ret = 0;

	for (k = 0; k < n; k++) {
		if (pthread_create(&th[k], NULL, fn, &jobs[k])) {
			ret = rdmae_err_set(err, -EAGAIN, "thread for lane %u", k);
			break;
		}
		started++;
	}
	for (k = 0; k < started; k++)
		pthread_join(th[k], NULL);
	for (k = 0; k < started && !ret; k++)
		if (jobs[k].ret) {
			ret = jobs[k].ret;
			*err = jobs[k].err;
		}
	return ret;
}

static int test_lanes_server(const struct args *a, struct rdmae_conn *c, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .remote_write = 1 };
	struct lane_job jobs[RDMAE_MAX_LANES];
	unsigned int k, nl = rdmae_conn_lanes(c);
	struct write_hello hello;
	struct write_result res;
	struct rdmae_region *r;
	uint64_t checked = 0;
	size_t n;
	uint8_t *buf;
	int ret;

	if (!nl || !a->count || a->size / ((uint64_t)nl * a->count) < 8192)
		return rdmae_err_set(err, -EINVAL, "--size %" PRIu64 " over %u lanes x --count %"
				     PRIu64 " rounds leaves slices under 8 KiB", a->size, nl,
				     a->count);
	buf = map_buf(a->size, a->hugepages);
	if (!buf)
		return -ENOMEM;
	ret = rdmae_region_create(&r, c, buf, a->size, &ro, err);
	if (ret)
		goto out_unmap;
	memset(&hello, 0, sizeof(hello));
	hello.size = a->size;
	ret = rdmae_region_bufdescs(r, hello.descs, MAX_DESCS, &n, err);
	if (ret)
		goto out_region;
	hello.ndescs = (uint32_t)n;
	ret = rdmae_send(c, &hello, sizeof(hello), err);
	if (ret)
		goto out_region;
	for (k = 0; k < nl; k++)
		jobs[k] = (struct lane_job){ .a = a, .c = c, .buf = buf, .lane = k, .nlanes = nl };
	ret = lanes_run(jobs, nl, lanes_checker, err);
	for (k = 0; k < nl; k++)
		checked += jobs[k].checked;
	if (!ret) {
		/* Every slice checked as its message came; now the whole buffer, slack included. */
		uint64_t slices = (a->size / ((uint64_t)nl * a->count)) & ~4095ull;
		uint64_t used = slices * nl * a->count;

		res.first_bad = check_slice(buf, 0, used, a->size);
		res.xxh = XXH3_64bits(buf, used);
		printf("server: %u lanes, %" PRIu64 " rounds each: %" PRIu64 " bytes checked as "
		       "their messages came, %" PRIu64 " at the end: %s\n", nl, a->count, checked,
		       used, res.first_bad < 0 ? "every byte matches" : "MISMATCH");
		ret = rdmae_send(c, &res, sizeof(res), err);
		if (!ret && res.first_bad >= 0)
			ret = rdmae_err_set(err, -EILSEQ, "destination memory differs at %" PRId64,
					    res.first_bad);
	}
out_region:
	rdmae_region_destroy(r);
out_unmap:
	munmap(buf, a->size);
	return ret;
}

static int test_lanes_client(const struct args *a, struct rdmae_conn *c, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL };
	struct lane_job jobs[RDMAE_MAX_LANES];
	unsigned int k, nl = rdmae_conn_lanes(c);
	struct write_hello hello;
	struct write_result *res;
	struct rdmae_remote dst;
	struct rdmae_region *r;
	uint64_t t0, t1;
	size_t len;
	uint8_t *buf;
	int ret;

	if (!nl || !a->count || a->size / ((uint64_t)nl * a->count) < 8192)
		return rdmae_err_set(err, -EINVAL, "--size %" PRIu64 " over %u lanes x --count %"
				     PRIu64 " rounds leaves slices under 8 KiB", a->size, nl,
				     a->count);
	memset(&hello, 0, sizeof(hello));
	ret = get_hello(c, &hello, err);
	if (ret)
		return ret;
	if (hello.size != a->size)
		return rdmae_err_set(err, -EINVAL, "server buffer is %" PRIu64 " bytes, ours %"
				     PRIu64, hello.size, a->size);
	buf = map_buf(a->size, a->hugepages);
	if (!buf)
		return -ENOMEM;
	fill_pattern(buf, a->size, a->size);
	ret = rdmae_region_create(&r, c, buf, a->size, &ro, err);
	if (ret)
		goto out_unmap;
	dst.descs = hello.descs;
	dst.ndescs = hello.ndescs;
	dst.len = hello.size;
	for (k = 0; k < nl; k++)
		jobs[k] = (struct lane_job){ .a = a, .c = c, .r = r, .dst = &dst, .buf = buf,
					     .lane = k, .nlanes = nl };
	t0 = now_ns();
	ret = lanes_run(jobs, nl, lanes_writer, err);
	if (!ret)
		ret = rdmae_write_flush(c, err);
	t1 = now_ns();
	if (ret)
		goto out_region;
	printf("client: %u threads, one per lane, %" PRIu64 " rounds each, in %.3f s\n", nl,
	       a->count, (double)(t1 - t0) / 1e9);
	ret = rdmae_recv(c, (void **)&res, &len, 120000, err);
	if (ret)
		goto out_region;
	if (len != sizeof(*res))
		ret = rdmae_err_set(err, -EPROTO, "bad result message");
	else if (res->first_bad >= 0)
		ret = rdmae_err_set(err, -EILSEQ, "server found a mismatch at offset %" PRId64,
				    res->first_bad);
	else
		printf("client: server verified every byte\n");
	free(res);
	print_lanes(c);
out_region:
	rdmae_region_destroy(r);
out_unmap:
	munmap(buf, a->size);
	return ret;
}

/* ---- msgs ---- */

struct small_msg {
	uint64_t seq;
	uint8_t fill[56];
};

static int test_msgs(const struct args *a, struct rdmae_conn *c, struct rdmae_err *err)
{
	uint64_t i, count = a->count ? a->count : 100000;
	struct small_msg m;
	int ret;

	if (!a->server) {
		struct rdmae_lane_stats st;
		void *ack;
		size_t len;

		for (i = 0; i < count; i++) {
			m.seq = i;
			memset(m.fill, (int)(i & 0xff), sizeof(m.fill));
			ret = rdmae_send(c, &m, sizeof(m), err);
			if (ret)
				return ret;
		}
		ret = rdmae_recv(c, &ack, &len, 120000, err);
		if (ret)
			return ret;
		free(ack);
		rdmae_conn_lane_stats(c, 0, &st);
		printf("client: sent %" PRIu64 " messages; credit stalls %" PRIu64 "\n", count,
		       st.credit_stalls);
		print_lanes(c);
		/* The server read late on purpose: the window must have run dry and refilled. */
		if (st.credit_stalls == 0)
			return rdmae_err_set(err, -EPROTO, "the credit window was never exhausted");
		return 0;
	}
	/* Let the client run out of credits before reading anything. */
	sleep(2);
	for (i = 0; i < count; i++) {
		struct small_msg *r;
		size_t len;
		unsigned int k;

		ret = rdmae_recv(c, (void **)&r, &len, 60000, err);
		if (ret)
			return ret;
		if (len != sizeof(*r) || r->seq != i) {
			ret = rdmae_err_set(err, -EPROTO, "message %" PRIu64 ": got seq %" PRIu64
					    " of %zu bytes", i, len == sizeof(*r) ? r->seq : 0, len);
			free(r);
			return ret;
		}
		for (k = 0; k < sizeof(r->fill); k++)
			if (r->fill[k] != (uint8_t)(i & 0xff)) {
				free(r);
				return rdmae_err_set(err, -EPROTO, "message %" PRIu64 " corrupt", i);
			}
		free(r);
	}
	printf("server: received %" PRIu64 " messages in order and intact\n", count);
	print_lanes(c);
	return rdmae_send(c, "ok", 2, err);
}

/* ---- frag ---- */

static int test_frag(const struct args *a, struct rdmae_conn *c, struct rdmae_err *err)
{
	uint64_t size = a->size ? a->size : 16u << 20;
	uint8_t *out = malloc(size);
	uint8_t *in = NULL;
	size_t len;
	int64_t bad;
	int ret;

	if (!out)
		return -ENOMEM;
	fill_pattern(out, size, a->server ? 1 : 2);
	/* Client sends first, then the server answers with its own message. */
	if (!a->server) {
		ret = rdmae_send(c, out, size, err);
		if (!ret)
			ret = rdmae_recv(c, (void **)&in, &len, 120000, err);
	} else {
		ret = rdmae_recv(c, (void **)&in, &len, 120000, err);
		if (!ret)
			ret = rdmae_send(c, out, size, err);
	}
	if (ret)
		goto out;
	if (len != size) {
		ret = rdmae_err_set(err, -EPROTO, "message of %zu bytes, expected %" PRIu64, len,
				    size);
		goto out;
	}
	bad = check_pattern(in, size, a->server ? 2 : 1);
	if (bad >= 0) {
		ret = rdmae_err_set(err, -EILSEQ, "reassembled message differs at byte %" PRId64,
				    bad);
		goto out;
	}
	printf("%s: %" PRIu64 "-byte message reassembled intact (xxh3 %016" PRIx64 ")\n",
	       a->server ? "server" : "client", size, XXH3_64bits(in, size));
	/* Wait for the peer to be done too before closing. */
	if (a->server) {
		void *ack;

		ret = rdmae_recv(c, &ack, &len, 60000, err);
		free(ack);
	} else {
		ret = rdmae_send(c, "ok", 2, err);
	}
	print_lanes(c);
out:
	free(in);
	free(out);
	return ret;
}

/* ---- hold / stream: failure detection ---- */

static int expect_error(const struct args *a, int ret, const struct rdmae_err *e, uint64_t t_fail)
{
	double ms = (double)(now_ns() - t_fail) / 1e6;

	if (!ret) {
		printf("FAIL: the connection did not fail\n");
		return 1;
	}
	printf("connection failed after %.0f ms: %s (%d)\n", ms, e->msg, ret);
	if (a->expect_error && !strstr(e->msg, a->expect_error)) {
		printf("FAIL: expected an error containing '%s'\n", a->expect_error);
		return 1;
	}
	if (a->within_ms && ms > a->within_ms) {
		printf("FAIL: took longer than %d ms\n", a->within_ms);
		return 1;
	}
	printf("PASS: clean error within the bound\n");
	return 0;
}

static int test_hold(const struct args *a, struct rdmae_conn *c)
{
	struct rdmae_err e = { 0 };
	void *m;
	size_t len;
	uint64_t t0;
	int ret;

	printf("%s: connected, holding\n", a->server ? "server" : "client");
	fflush(stdout);
	t0 = now_ns();
	ret = rdmae_recv(c, &m, &len, -1, &e);
	if (!ret)
		free(m);
	/* --within is measured from the point the test script breaks things, approximated by hold start. */
	return expect_error(a, ret, &e, t0);
}

static int test_stream_client(const struct args *a, struct rdmae_conn *c)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL };
	struct write_hello hello;
	struct rdmae_remote dst;
	struct rdmae_region *r;
	struct rdmae_run run;
	struct rdmae_err e = { 0 };
	uint64_t rounds = 0, t_last_ok;
	uint8_t *buf;
	int ret;

	memset(&hello, 0, sizeof(hello));
	ret = get_hello(c, &hello, &e);
	if (ret)
		goto fail;
	buf = map_buf(hello.size, false);
	if (!buf)
		return 1;
	fill_pattern(buf, hello.size, 7);
	ret = rdmae_region_create(&r, c, buf, hello.size, &ro, &e);
	if (ret) {
		munmap(buf, hello.size);
		goto fail;
	}
	dst.descs = hello.descs;
	dst.ndescs = hello.ndescs;
	dst.len = hello.size;
	printf("client: streaming WRITEs of %" PRIu64 " MiB until the connection fails\n",
	       hello.size >> 20);
	fflush(stdout);
	t_last_ok = now_ns();
	for (;;) {
		run.local = 0;
		run.remote = 0;
		run.len = hello.size;
		ret = rdmae_write(c, r, &dst, &run, 1, &e);
		if (!ret)
			ret = rdmae_write_flush(c, &e);
		if (ret)
			break;
		rounds++;
		t_last_ok = now_ns();
		if (rounds == 1 || rounds % 16 == 0) {
			printf("client: %" PRIu64 " passes done\n", rounds);
			fflush(stdout);
		}
	}
	rdmae_region_destroy(r);
	munmap(buf, hello.size);
	return expect_error(a, ret, &e, t_last_ok);
fail:
	printf("FAIL: setup: %s\n", e.msg);
	return 1;
}

static int test_stream_server(const struct args *a, struct rdmae_conn *c)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .remote_write = 1 };
	struct write_hello hello;
	struct rdmae_region *r;
	struct rdmae_err e = { 0 };
	size_t n;
	uint8_t *buf = map_buf(a->size, false);
	int ret;

	if (!buf)
		return 1;
	ret = rdmae_region_create(&r, c, buf, a->size, &ro, &e);
	if (!ret) {
		memset(&hello, 0, sizeof(hello));
		hello.size = a->size;
		ret = rdmae_region_bufdescs(r, hello.descs, MAX_DESCS, &n, &e);
		hello.ndescs = (uint32_t)n;
		if (!ret)
			ret = rdmae_send(c, &hello, sizeof(hello), &e);
		if (!ret)
			ret = test_hold(a, c);
		else
			printf("FAIL: setup: %s\n", e.msg);
		rdmae_region_destroy(r);
	} else {
		printf("FAIL: setup: %s\n", e.msg);
		ret = 1;
	}
	munmap(buf, a->size);
	return ret;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: rdmae_tt write|lanes|msgs|frag|negotiate|hold|stream|prepare server|client\n"
		"  --addr A --port P [--bind A] [--size N[KMG]] [--run N] [--scatter]\n"
		"  [--count N] [--lanes N] [--min-version V] [--max-version V]\n"
		"  [--frag-size N] [--rw-size N] [--send-size N] [--recv-size N]\n"
		"  [--keepalive MS] [--keepalive-timeout MS] [--recv-queue N]\n"
		"  [--expect-fail FIELD] [--expect-error TEXT] [--within MS]\n"
		"  [--on-demand] [--pin-limit N] [--hugepages] [--flip OFFSET] [--timeout MS]\n"
		"  [--writes-in-flight N] --key FILE | --auth-none\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'b' },
		{ "size", required_argument, NULL, 's' },
		{ "run", required_argument, NULL, 'r' },
		{ "scatter", no_argument, NULL, 'S' },
		{ "count", required_argument, NULL, 'n' },
		{ "lanes", required_argument, NULL, 'l' },
		{ "min-version", required_argument, NULL, 1 },
		{ "max-version", required_argument, NULL, 2 },
		{ "frag-size", required_argument, NULL, 3 },
		{ "rw-size", required_argument, NULL, 4 },
		{ "send-size", required_argument, NULL, 5 },
		{ "recv-size", required_argument, NULL, 6 },
		{ "keepalive", required_argument, NULL, 7 },
		{ "keepalive-timeout", required_argument, NULL, 8 },
		{ "recv-queue", required_argument, NULL, 9 },
		{ "expect-fail", required_argument, NULL, 10 },
		{ "expect-error", required_argument, NULL, 11 },
		{ "within", required_argument, NULL, 12 },
		{ "flip", required_argument, NULL, 13 },
		{ "on-demand", no_argument, NULL, 14 },
		{ "pin-limit", required_argument, NULL, 15 },
		{ "hugepages", no_argument, NULL, 16 },
		{ "timeout", required_argument, NULL, 17 },
		{ "writes-in-flight", required_argument, NULL, 18 },
		{ "key", required_argument, NULL, 19 },
		{ "auth-none", no_argument, NULL, 20 },
		{ NULL, 0, NULL, 0 }
	};
	struct args a = { .addr = NULL, .port = "7471", .size = 64u << 20, .flip = -1 };
	struct rdmae_conn *c = NULL;
	struct rdmae_err err = { 0 };
	int opt, ret;

	if (argc < 3)
		usage();
	a.test = argv[1];
	if (!strcmp(argv[2], "server"))
		a.server = true;
	else if (strcmp(argv[2], "client") != 0)
		usage();
	optind = 3;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 'a': a.addr = optarg; break;
		case 'p': a.port = optarg; break;
		case 'b': a.bind = optarg; break;
		case 's': a.size = rdmae_size_opt("rdmae_tt", optarg); break;
		case 'r': a.run = rdmae_size_opt("rdmae_tt", optarg); break;
		case 'S': a.scatter = true; break;
		case 'n': a.count = strtoull(optarg, NULL, 0); break;
		case 'l': a.lanes = atoi(optarg); break;
		case 1: a.min_version = (int)strtol(optarg, NULL, 0); break;
		case 2: a.max_version = (int)strtol(optarg, NULL, 0); break;
		case 3: a.frag_size = (uint32_t)rdmae_size_opt("rdmae_tt", optarg); break;
		case 4: a.rw_size = (uint32_t)rdmae_size_opt("rdmae_tt", optarg); break;
		case 5: a.send_size = (uint32_t)rdmae_size_opt("rdmae_tt", optarg); break;
		case 6: a.recv_size = (uint32_t)rdmae_size_opt("rdmae_tt", optarg); break;
		case 7: a.keepalive_ms = atoi(optarg); break;
		case 8: a.keepalive_timeout_ms = atoi(optarg); break;
		case 9: a.recv_queue = rdmae_size_opt("rdmae_tt", optarg); break;
		case 10: a.expect_fail = optarg; break;
		case 11: a.expect_error = optarg; break;
		case 12: a.within_ms = atoi(optarg); break;
		case 13: a.flip = (int64_t)rdmae_size_opt("rdmae_tt", optarg); break;
		case 14: a.on_demand = true; break;
		case 15: a.pin_limit = rdmae_size_opt("rdmae_tt", optarg); break;
		case 16: a.hugepages = true; break;
		case 17: a.timeout_ms = atoi(optarg); break;
		case 18: a.writes_in_flight = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 19: a.key_file = optarg; break;
		case 20: a.auth_none = true; break;
		default: usage();
		}
	}
	if (!a.addr && !a.server)
		usage();
	/* A peer that vanishes must surface as an error return, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (!strcmp(a.test, "prepare")) {
		uint64_t count = a.count ? a.count : 2;

		if (a.server) {
			if (!a.addr)
				usage();
			ret = test_prepare_server(&a, &err);
		} else {
			/* One connection after the other, each writing the whole buffer. */
			ret = 0;
			for (uint64_t i = 0; i < count && !ret; i++) {
				ret = open_conn(&a, &c, &err);
				if (ret)
					break;
				ret = test_write_client(&a, c, &err);
				rdmae_conn_destroy(c);
			}
		}
		if (ret)
			fprintf(stderr, "FAIL: prepare %s: %s\n", argv[2], err.msg);
		else
			printf("PASS: prepare %s\n", argv[2]);
		return ret ? 1 : 0;
	}

	ret = open_conn(&a, &c, &err);
	if (!strcmp(a.test, "negotiate")) {
		if (a.expect_fail) {
			if (!ret) {
				printf("FAIL: negotiation succeeded, expected a failure on %s\n",
				       a.expect_fail);
				/* Hold the connection until the peer has seen its own verdict. */
				sleep(1);
				rdmae_conn_destroy(c);
				return 1;
			}
			printf("negotiation failed as expected: %s\n", err.msg);
			if (!strstr(err.msg, a.expect_fail)) {
				printf("FAIL: the error does not name '%s'\n", a.expect_fail);
				return 1;
			}
			printf("PASS\n");
			return 0;
		}
		if (ret) {
			printf("FAIL: %s\n", err.msg);
			return 1;
		}
		print_negotiated(c);
		if (a.lanes && !a.server && rdmae_conn_negotiated(c)->lanes > a.lanes) {
			printf("FAIL: more lanes than asked for\n");
			ret = 1;
		}
		/* Exchange one message so that both ends know the other is done. */
		if (!ret) {
			void *m;
			size_t len;

			if (a.server) {
				ret = rdmae_send(c, "bye", 3, &err);
				/* The client closes once it has read "bye"; its close ends this wait. */
				if (!ret && !rdmae_recv(c, &m, &len, 10000, NULL))
					free(m);
			} else {
				ret = rdmae_recv(c, &m, &len, 10000, &err);
				if (!ret)
					free(m);
			}
		}
		rdmae_conn_destroy(c);
		if (ret)
			printf("FAIL: %s\n", err.msg);
		else
			printf("PASS\n");
		return ret ? 1 : 0;
	}
	if (ret) {
		fprintf(stderr, "%s %s: %s\n", a.test, argv[2], err.msg);
		return 1;
	}
	print_negotiated(c);
	if (!strcmp(a.test, "write"))
		ret = a.server ? test_write_server(&a, c, &err) : test_write_client(&a, c, &err);
	else if (!strcmp(a.test, "lanes"))
		ret = a.server ? test_lanes_server(&a, c, &err) : test_lanes_client(&a, c, &err);
	else if (!strcmp(a.test, "msgs"))
		ret = test_msgs(&a, c, &err);
	else if (!strcmp(a.test, "frag"))
		ret = test_frag(&a, c, &err);
	else if (!strcmp(a.test, "hold")) {
		ret = test_hold(&a, c);
		rdmae_conn_destroy(c);
		return ret;
	} else if (!strcmp(a.test, "stream")) {
		ret = a.server ? test_stream_server(&a, c) : test_stream_client(&a, c);
		rdmae_conn_destroy(c);
		return ret;
	} else {
		usage();
	}
	if (ret)
		fprintf(stderr, "FAIL: %s %s: %s\n", a.test, argv[2], err.msg);
	else
		printf("PASS: %s %s\n", a.test, argv[2]);
	rdmae_conn_destroy(c);
	return ret ? 1 : 0;
}
