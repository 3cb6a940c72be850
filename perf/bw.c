/* SPDX-License-Identifier: MIT */
/*
 * rdmae-perf bw: bandwidth of RDMA WRITE, RDMA READ and messages (SEND)
 * through the library, over a sweep of message sizes, lanes and queue
 * depths, printed as perftest prints it.
 *
 * WRITE and READ post one WR per message (rdmae_write/rdmae_read, runs laid
 * out so that none coalesce: the even slots of a window, then the odd ones)
 * and stop the clock when every WR has completed (rdmae_write_flush): the
 * data is placed in the peer's memory, or in ours for READ. SEND sends
 * messages of the size with rdmae_send (credit-based, fragmented above the
 * send size) and stops the clock when the server has counted them all.
 * Queue depth is WRs in flight per lane (opts.writes_in_flight) for WRITE
 * and READ, and the client's send credits for SEND (the server grants at
 * most 255). Messages use lane 0 only, so SEND runs once per queue depth,
 * with the first lane count.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rdmae_region.h"
#include "rdmae_json.h"
#include "rdmae_peer.h"
#include "rdmae_meter.h"
#include "rdmae_size.h"

#define MAX_LIST 16
#define MAX_POINTS 512
/* Slots of the window the runs cycle through (fewer when the buffer is small). */
#define PASS_WRS 1024
/* Bytes handed to one rdmae_write/read call: the clock is checked between calls. */
#define CALL_BYTES (4u << 20)
#define GIB 1073741824.0

enum { T_WRITE, T_READ, T_SEND, NTESTS };

static const char *const test_name[NTESTS] = { "WRITE", "READ", "SEND" };
static const enum rdmae_ctl_test test_id[NTESTS] = { RDMAE_TEST_WRITE, RDMAE_TEST_READ,
						     RDMAE_TEST_SEND };

struct cfg {
	struct rdmae_perf_net net;
	bool tests[NTESTS];
	uint64_t sizes[MAX_LIST];
	unsigned int nsizes;
	uint64_t lanes[MAX_LIST];
	unsigned int nlanes;
	uint64_t qds[MAX_LIST];
	unsigned int nqds;
	double seconds;
	uint64_t iters;			/* 0: run for seconds */
	uint64_t buf;
};

struct point {
	int test;
	unsigned int lanes, qd;
	uint64_t size, iters, bytes;
	double secs;
	double cpu_s, srv_cpu_s;
};

struct run {
	const struct cfg *cf;
	struct rdmae_meter prog;
	struct point pts[MAX_POINTS];
	unsigned int npts;
	uint8_t *buf;			/* the client's buffer */
	struct rdmae_run *runs, *work;
};

static double mbs(const struct point *p)
{
	return p->secs > 0 ? (double)p->bytes / p->secs / 1e6 : 0;
}

static double mpps(const struct point *p)
{
	return p->secs > 0 ? (double)p->iters / p->secs / 1e6 : 0;
}

static double per_gib(double cpu, const struct point *p)
{
	return p->bytes ? cpu / ((double)p->bytes / GIB) : 0;
}

static void header(struct run *r)
{
	rdmae_meter_printf(&r->prog, " %-5s %5s %4s %10s %12s %8s %14s %14s %12s %12s",
			   "#test", "lanes", "qd", "#bytes", "#iterations", "seconds",
			   "BW avg[MB/s]", "MsgRate[Mpps]", "CPU[s/GiB]", "srvCPU[s/GiB]");
}

static void row(struct run *r, const struct point *p)
{
	rdmae_meter_printf(&r->prog, " %-5s %5u %4u %10" PRIu64 " %12" PRIu64 " %8.2f %14.2f "
			   "%14.6f %12.3f %12.3f", test_name[p->test], p->lanes, p->qd, p->size,
			   p->iters, p->secs, mbs(p), mpps(p), per_gib(p->cpu_s, p),
			   per_gib(p->srv_cpu_s, p));
}

/*
 * The runs of one pass: msgs slots of size bytes, even slots first, then
 * odd ones, so that no two neighbours in the list are contiguous and
 * rdmae_write cannot merge them into longer WRITEs.
 */
static size_t lay_runs(struct rdmae_run *runs, uint64_t size, size_t msgs)
{
	size_t n = 0, i;
	int pass;

	for (pass = 0; pass < 2; pass++)
		for (i = (size_t)pass; i < msgs; i += 2) {
			runs[n].local = i * size;
			runs[n].remote = i * size;
			runs[n].len = size;
			n++;
		}
	return n;
}

static bool done(const struct cfg *cf, double t0, uint64_t iters)
{
	if (cf->iters)
		return iters >= cf->iters;
	return rdmae_perf_now() - t0 >= cf->seconds;
}

static double fraction(const struct cfg *cf, double t0, uint64_t iters)
{
	if (cf->iters)
		return (double)iters / (double)cf->iters;
	return cf->seconds > 0 ? (rdmae_perf_now() - t0) / cf->seconds : 1;
}

static int one_sided(struct run *r, struct rdmae_perf_peer *pe, struct rdmae_region *reg,
		     struct point *p, struct rdmae_err *err)
{
	const struct cfg *cf = r->cf;
	size_t slots = (size_t)(cf->buf / p->size), n, per_call, next = 0;
	double t0;
	int flushed;

	if (slots > PASS_WRS)
		slots = PASS_WRS;
	n = lay_runs(r->runs, p->size, slots);
	per_call = (size_t)(CALL_BYTES / p->size);
	if (per_call < 1)
		per_call = 1;
	t0 = rdmae_perf_now();
	do {
		/* The next piece of the layout: no two runs in it, nor across calls, touch. */
		size_t k = n - next < per_call ? n - next : per_call;
		int ret;

		if (cf->iters && cf->iters - p->iters < k)
			k = (size_t)(cf->iters - p->iters);
		/* The runs are coalesced in place: each call gets a fresh copy. */
		memcpy(r->work, r->runs + next, k * sizeof(*r->runs));
		next = next + k == n ? 0 : next + k;
		if (p->test == T_READ)
			ret = rdmae_read(pe->conn, reg, &pe->remote, r->work, k, err);
		else
			ret = rdmae_write(pe->conn, reg, &pe->remote, r->work, k, err);
		if (ret)
			return ret;
		p->iters += k;
		p->bytes += k * p->size;
		rdmae_meter_update(&r->prog, fraction(cf, t0, p->iters), "%s %" PRIu64 " B, "
				   "%u lanes, qd %u", test_name[p->test], p->size, p->lanes,
				   p->qd);
	} while (!done(cf, t0, p->iters));
	/* The clock stops when the last WR has completed: its data is placed. */
	flushed = rdmae_write_flush(pe->conn, err);
	p->secs = rdmae_perf_now() - t0;
	return flushed;
}

static int sends(struct run *r, struct rdmae_perf_peer *pe, struct point *p, struct rdmae_err *err)
{
	const struct cfg *cf = r->cf;
	double t0 = rdmae_perf_now();

	rdmae_ctl_encode(r->buf, RDMAE_CTL_DATA, NULL, 0, NULL);
	do {
		int ret = rdmae_send(pe->conn, r->buf, p->size, err);

		if (ret)
			return ret;
		p->iters++;
		p->bytes += p->size;
		if ((p->iters & 63) == 0)
			rdmae_meter_update(&r->prog, fraction(cf, t0, p->iters), "SEND %" PRIu64
					   " B, qd %u", p->size, p->qd);
	} while (!done(cf, t0, p->iters));
	return 0;
}

/* One point: BEGIN, the traffic, END; the server's RESULT closes the clock for SEND. */
static int measure(struct run *r, struct rdmae_perf_peer *pe, struct rdmae_region *reg,
		   struct point *p, struct rdmae_err *err)
{
	struct rdmae_perf_srv srv;
	double c0, t0 = rdmae_perf_now();
	int ret;

	ret = rdmae_perf_begin(pe, test_id[p->test], p->size, err);
	if (ret)
		return ret;
	c0 = rdmae_perf_cpu();
	if (p->test == T_SEND) {
		t0 = rdmae_perf_now();
		ret = sends(r, pe, p, err);
	} else {
		ret = one_sided(r, pe, reg, p, err);
	}
	if (ret)
		return ret;
	ret = rdmae_perf_end(pe, &srv, err);
	if (p->test == T_SEND) {
		/* Counted by the server: every message arrived, and the clock includes that. */
		p->secs = rdmae_perf_now() - t0;
		if (!ret && (srv.msgs != p->iters || srv.bytes != p->bytes))
			ret = rdmae_err_set(err, -EPROTO, "SEND %" PRIu64 " B: the server counted "
					    "%" PRIu64 " messages (%" PRIu64 " bytes) of %" PRIu64,
					    p->size, srv.msgs, srv.bytes, p->iters);
	}
	p->cpu_s = rdmae_perf_cpu() - c0;
	p->srv_cpu_s = srv.cpu_s;
	return ret;
}

static uint64_t max_size(const struct cfg *cf)
{
	uint64_t m = 0;

	for (unsigned int i = 0; i < cf->nsizes; i++)
		if (cf->sizes[i] > m)
			m = cf->sizes[i];
	return m;
}

/* One connection: every size of every test asked for, at this lane count and depth. */
static int sweep(struct run *r, unsigned int lanes, unsigned int qd, bool with_send, bool last,
		 struct rdmae_err *err)
{
	const struct cfg *cf = r->cf;
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .local_write = 1 };
	struct rdmae_region *reg = NULL;
	struct rdmae_perf_peer pe;
	struct rdmae_conn_opts o;
	uint64_t big = max_size(cf);
	uint32_t flags = 0;
	int t, ret;

	rdmae_perf_conn_opts(&cf->net, &o);
	o.lanes = (uint16_t)lanes;
	o.writes_in_flight = qd;
	/* The send ring is as deep as the credits: the queue depth of SEND. */
	o.credits = (uint16_t)(qd < 3 ? 3 : qd > 4096 ? 4096 : qd);
	/* One WR per message at every size of the sweep. */
	if (big > o.rw_size)
		o.rw_size = (uint32_t)(big < RDMAE_MAX_RW_SIZE ? big : RDMAE_MAX_RW_SIZE);
	if (cf->tests[T_WRITE])
		flags |= RDMAE_SETUP_REMOTE_WRITE;
	if (cf->tests[T_READ])
		flags |= RDMAE_SETUP_REMOTE_READ;
	ret = rdmae_perf_peer_open(&pe, &cf->net, &o, cf->buf, flags, err);
	if (ret)
		return ret;
	/* Our own buffer: READs land in it (local_write); the peer gets no access to it. */
	ret = rdmae_region_create(&reg, pe.conn, r->buf, cf->buf, &ro, err);
	for (t = 0; t < NTESTS && !ret; t++) {
		if (!cf->tests[t] || (t == T_SEND && !with_send))
			continue;
		for (unsigned int i = 0; i < cf->nsizes && !ret; i++) {
			struct point *p;

			if (r->npts == MAX_POINTS)
				break;
			p = &r->pts[r->npts];
			memset(p, 0, sizeof(*p));
			p->test = t;
			p->lanes = lanes;
			p->qd = qd;
			p->size = cf->sizes[i];
			ret = measure(r, &pe, reg, p, err);
			if (!ret) {
				row(r, p);
				r->npts++;
			}
		}
	}
	rdmae_region_destroy(reg);
	if (ret) {
		rdmae_conn_destroy(pe.conn);
		return ret;
	}
	return rdmae_perf_peer_close(&pe, last, err);
}

static int write_json(const struct run *r, struct rdmae_err *err)
{
	const struct cfg *cf = r->cf;
	struct rdmae_json j;
	int ret;

	ret = rdmae_json_open(&j, cf->net.json, err);
	if (ret)
		return ret;
	rdmae_json_str(&j, "tool", "rdmae-perf");
	rdmae_json_str(&j, "mode", "bw");
	rdmae_json_str(&j, "units", "MB = 10^6 bytes; cpu_s_per_gib per 2^30 bytes moved");
	rdmae_json_obj(&j, "config");
	rdmae_json_str(&j, "server", cf->net.addr);
	rdmae_json_u64(&j, "buffer_bytes", cf->buf);
	rdmae_json_num(&j, "seconds", cf->iters ? 0 : cf->seconds);
	rdmae_json_u64(&j, "iterations", cf->iters);
	rdmae_json_end(&j);
	rdmae_json_arr(&j, "points");
	for (unsigned int i = 0; i < r->npts; i++) {
		const struct point *p = &r->pts[i];

		rdmae_json_obj(&j, NULL);
		rdmae_json_str(&j, "test", test_name[p->test]);
		rdmae_json_u64(&j, "lanes", p->lanes);
		rdmae_json_u64(&j, "qd", p->qd);
		rdmae_json_u64(&j, "bytes_per_msg", p->size);
		rdmae_json_u64(&j, "iterations", p->iters);
		rdmae_json_u64(&j, "bytes", p->bytes);
		rdmae_json_num(&j, "seconds", p->secs);
		rdmae_json_num(&j, "bw_mb_s", mbs(p));
		rdmae_json_num(&j, "bw_mib_s", p->secs > 0 ? (double)p->bytes / p->secs / 1048576 :
			       0);
		rdmae_json_num(&j, "msg_rate_mpps", mpps(p));
		rdmae_json_num(&j, "cpu_s", p->cpu_s);
		rdmae_json_num(&j, "cpu_s_per_gib", per_gib(p->cpu_s, p));
		rdmae_json_num(&j, "server_cpu_s", p->srv_cpu_s);
		rdmae_json_num(&j, "server_cpu_s_per_gib", per_gib(p->srv_cpu_s, p));
		rdmae_json_end(&j);
	}
	rdmae_json_end(&j);
	return rdmae_json_close(&j, err);
}

static int run_client(const struct cfg *cf)
{
	struct run *r = calloc(1, sizeof(*r));
	struct rdmae_err err = { 0 };
	size_t maxruns = PASS_WRS;
	unsigned int li, qi, lane_counts = cf->nlanes, total, k = 0;
	int ret = 0;

	if (!r)
		return 1;
	r->cf = cf;
	rdmae_meter_init(&r->prog, cf->net.quiet);
	r->buf = mmap(NULL, cf->buf, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r->runs = calloc(maxruns, sizeof(*r->runs));
	r->work = calloc(maxruns, sizeof(*r->work));
	if (r->buf == MAP_FAILED || !r->runs || !r->work) {
		ret = rdmae_err_set(&err, -ENOMEM, "client buffer of %" PRIu64 " bytes", cf->buf);
		goto out;
	}
	memset(r->buf, 0xa5, cf->buf);
	header(r);
	/* SEND alone runs on the first lane count only: the other connections would idle. */
	if (!cf->tests[T_WRITE] && !cf->tests[T_READ])
		lane_counts = 1;
	total = cf->nqds * lane_counts;
	for (qi = 0; qi < cf->nqds && !ret; qi++)
		for (li = 0; li < lane_counts && !ret; li++) {
			k++;
			ret = sweep(r, (unsigned int)cf->lanes[li], (unsigned int)cf->qds[qi], li == 0,
				    k == total, &err);
		}
	if (!ret && cf->net.json)
		ret = write_json(r, &err);
out:
	rdmae_meter_clear(&r->prog);
	if (ret)
		fprintf(stderr, "rdmae-perf bw client: %s\n", err.msg);
	if (r->buf != MAP_FAILED)
		munmap(r->buf, cf->buf);
	free(r->runs);
	free(r->work);
	rdmae_meter_destroy(&r->prog);
	free(r);
	return ret ? 1 : 0;
}

/* Exits: 0 when asked for (--help), 2 for a wrong command line. */
static __attribute__((noreturn)) void usage(int code)
{
	fprintf(stderr,
		"usage: rdmae-perf bw server --addr A [--port P] --key FILE | --auth-none\n"
		"       rdmae-perf bw client --addr A [--port P] --key FILE | --auth-none\n"
		"             [--tests write,read,send] [--sizes 4K,64K,1M] [--lanes 1,4]\n"
		"             [--qd 128] [--seconds S | --iters N] [--size BUF] [--json FILE]\n"
		RDMAE_PERF_NET_USAGE
		"  --tests LIST          which of write, read, send (default all three)\n"
		"  --sizes LIST          message sizes (K/M/G suffixes; SEND at least 16)\n"
		"  --lanes LIST          lane counts, one connection each (default 1,4)\n"
		"  --qd LIST             WRs in flight per lane (WRITE/READ), send credits (SEND)\n"
		"  --seconds S           per point (default 2), or --iters N messages per point\n"
		"  --size BUF            buffer on each side (default 64M)\n");
	exit(code);
}

int rdmae_perf_bw(int argc, char **argv)
{
	static const struct option lo[] = {
		RDMAE_PERF_NET_OPTIONS,
		{ "tests", required_argument, NULL, 'T' },
		{ "sizes", required_argument, NULL, 's' },
		{ "lanes", required_argument, NULL, 'l' },
		{ "qd", required_argument, NULL, 'd' },
		{ "seconds", required_argument, NULL, 't' },
		{ "iters", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct cfg cf = { .seconds = 2, .buf = 64u << 20,
			  .sizes = { 4096, 65536, 1u << 20 }, .nsizes = 3,
			  .lanes = { 1, 4 }, .nlanes = 2, .qds = { 128 }, .nqds = 1,
			  .tests = { true, true, true } };
	unsigned int i;
	int opt;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		usage(0);
	if (rdmae_perf_net_init(&cf.net, argc, argv, "7620"))
		usage(2);
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (rdmae_perf_net_opt(&cf.net, opt, optarg))
			continue;
		switch (opt) {
		case 'T':
			if (rdmae_perf_parse_names(optarg, test_name, NTESTS, cf.tests))
				usage(2);
			break;
		case 's': cf.nsizes = rdmae_perf_parse_list(optarg, cf.sizes, MAX_LIST, true); break;
		case 'l': cf.nlanes = rdmae_perf_parse_list(optarg, cf.lanes, MAX_LIST, false); break;
		case 'd': cf.nqds = rdmae_perf_parse_list(optarg, cf.qds, MAX_LIST, false); break;
		case 't': cf.seconds = strtod(optarg, NULL); break;
		case 'n': cf.iters = strtoull(optarg, NULL, 0); break;
		case 'b': cf.buf = rdmae_size_opt("rdmae-perf bw", optarg); break;
		case 'h': usage(0);
		default: usage(2);
		}
	}
	if (!cf.net.addr || optind != argc)
		usage(2);
	if (cf.net.server)
		return rdmae_perf_serve(&cf.net, "bw");
	if (!cf.nsizes || !cf.nlanes || !cf.nqds || !cf.buf || (!cf.iters && cf.seconds <= 0))
		usage(2);
	for (i = 0; i < cf.nsizes; i++)
		if (!cf.sizes[i] || cf.sizes[i] > cf.buf ||
		    (cf.tests[T_SEND] && (cf.sizes[i] < RDMAE_CTL_HDR || cf.sizes[i] > (32u << 20)))) {
			fprintf(stderr, "rdmae-perf bw: size %" PRIu64 ": must be 1..%" PRIu64
				" (the buffer), and for SEND %u..%u\n", cf.sizes[i], cf.buf,
				RDMAE_CTL_HDR, 32u << 20);
			return 2;
		}
	for (i = 0; i < cf.nlanes; i++)
		if (!cf.lanes[i] || cf.lanes[i] > RDMAE_MAX_LANES) {
			fprintf(stderr, "rdmae-perf bw: lanes %" PRIu64 ": must be 1..%d\n",
				cf.lanes[i], RDMAE_MAX_LANES);
			return 2;
		}
	for (i = 0; i < cf.nqds; i++)
		if (!cf.qds[i] || cf.qds[i] > 4096) {
			fprintf(stderr, "rdmae-perf bw: qd %" PRIu64 ": must be 1..4096\n", cf.qds[i]);
			return 2;
		}
	return run_client(&cf);
}
