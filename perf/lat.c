/* SPDX-License-Identifier: MIT */
/*
 * rdmae-perf lat: latency through the library, one lane, one operation at
 * a time, with percentiles.
 *
 *   SEND   ping-pong: rdmae_send of the message, the server sends it back,
 *          rdmae_recv; the figure is half the round trip, as ib_send_lat
 *          reports it.
 *   WRITE  rdmae_write of one message and rdmae_write_flush: from posting to
 *          the completion, which on RC means the peer's NIC acknowledged the
 *          data (placed in its memory). A whole round trip: not halved.
 *   READ   rdmae_read and rdmae_write_flush: posting to the data in our
 *          memory, also a round trip.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "rdmae_region.h"
#include "rdmae_json.h"
#include "rdmae_peer.h"
#include "rdmae_meter.h"
#include "rdmae_size.h"

#define MAX_LIST 16
#define WARMUP 16

enum { T_SEND, T_WRITE, T_READ, NTESTS };

static const char *const test_name[NTESTS] = { "SEND", "WRITE", "READ" };
static const char *const metric[NTESTS] = { "half round trip (ping-pong / 2)",
					    "post to completion (acknowledged)",
					    "post to completion (data arrived)" };

struct cfg {
	struct rdmae_perf_net net;
	bool tests[NTESTS];
	uint64_t sizes[MAX_LIST];
	unsigned int nsizes;
	uint64_t iters;
};

struct point {
	int test;
	uint64_t size, iters;
	double min, avg, p50, p99, p999, max;	/* microseconds */
	double cpu_s;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least q of all at or below it. */
static double pct(const double *s, uint64_t n, double q)
{
	uint64_t k = (uint64_t)(q * (double)n + 0.999999);

	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return s[k - 1];
}

static void summarize(struct point *p, double *s, uint64_t n)
{
	double sum = 0;
	uint64_t i;

	qsort(s, n, sizeof(*s), cmp_double);
	for (i = 0; i < n; i++)
		sum += s[i];
	p->iters = n;
	p->min = s[0];
	p->max = s[n - 1];
	p->avg = sum / (double)n;
	p->p50 = pct(s, n, 0.50);
	p->p99 = pct(s, n, 0.99);
	p->p999 = pct(s, n, 0.999);
}

/* One sample in microseconds; the warm-up ones are measured and dropped. */
static int once(struct rdmae_perf_peer *pe, struct rdmae_region *reg, int test, uint8_t *buf,
		uint64_t size, double *us, struct rdmae_err *err)
{
	struct rdmae_run run = { .local = 0, .remote = 0, .len = size };
	double t0 = rdmae_perf_now();
	void *echo;
	size_t len;
	int ret;

	if (test == T_SEND) {
		ret = rdmae_send(pe->conn, buf, size, err);
		if (!ret)
			ret = rdmae_recv(pe->conn, &echo, &len, 30000, err);
		if (ret)
			return ret;
		free(echo);
		*us = (rdmae_perf_now() - t0) * 1e6 / 2;
		if (len != size)
			return rdmae_err_set(err, -EPROTO, "ping of %" PRIu64 " bytes came back "
					     "with %zu", size, len);
		return 0;
	}
	if (test == T_WRITE)
		ret = rdmae_write(pe->conn, reg, &pe->remote, &run, 1, err);
	else
		ret = rdmae_read(pe->conn, reg, &pe->remote, &run, 1, err);
	if (!ret)
		ret = rdmae_write_flush(pe->conn, err);
	*us = (rdmae_perf_now() - t0) * 1e6;
	return ret;
}

static int measure(const struct cfg *cf, struct rdmae_meter *prog, struct rdmae_perf_peer *pe,
		   struct rdmae_region *reg, uint8_t *buf, struct point *p, double *s,
		   struct rdmae_err *err)
{
	static const enum rdmae_ctl_test id[NTESTS] = { RDMAE_TEST_PING, RDMAE_TEST_WRITE,
							RDMAE_TEST_READ };
	struct rdmae_perf_srv srv;
	double c0, us = 0;
	uint64_t i;
	int ret;

	ret = rdmae_perf_begin(pe, id[p->test], p->size, err);
	if (ret)
		return ret;
	if (p->test == T_SEND)
		rdmae_ctl_encode(buf, RDMAE_CTL_DATA, NULL, 0, NULL);
	c0 = rdmae_perf_cpu();
	for (i = 0; i < WARMUP + cf->iters && !ret; i++) {
		ret = once(pe, reg, p->test, buf, p->size, &us, err);
		if (i >= WARMUP)
			s[i - WARMUP] = us;
		if ((i & 63) == 0)
			rdmae_meter_update(prog, (double)i / (double)(WARMUP + cf->iters),
					   "%s %" PRIu64 " B", test_name[p->test], p->size);
	}
	p->cpu_s = rdmae_perf_cpu() - c0;
	if (!ret)
		ret = rdmae_perf_end(pe, &srv, err);
	if (!ret)
		summarize(p, s, cf->iters);
	return ret;
}

static int write_json(const struct cfg *cf, const struct point *pts, unsigned int n,
		      struct rdmae_err *err)
{
	struct rdmae_json j;
	int ret = rdmae_json_open(&j, cf->net.json, err);

	if (ret)
		return ret;
	rdmae_json_str(&j, "tool", "rdmae-perf");
	rdmae_json_str(&j, "mode", "lat");
	rdmae_json_str(&j, "units", "microseconds");
	rdmae_json_obj(&j, "config");
	rdmae_json_str(&j, "server", cf->net.addr);
	rdmae_json_u64(&j, "iterations", cf->iters);
	rdmae_json_u64(&j, "warmup", WARMUP);
	rdmae_json_u64(&j, "lanes", 1);
	rdmae_json_end(&j);
	rdmae_json_arr(&j, "points");
	for (unsigned int i = 0; i < n; i++) {
		const struct point *p = &pts[i];

		rdmae_json_obj(&j, NULL);
		rdmae_json_str(&j, "test", test_name[p->test]);
		rdmae_json_str(&j, "metric", metric[p->test]);
		rdmae_json_u64(&j, "bytes", p->size);
		rdmae_json_u64(&j, "iterations", p->iters);
		rdmae_json_num(&j, "min_us", p->min);
		rdmae_json_num(&j, "avg_us", p->avg);
		rdmae_json_num(&j, "p50_us", p->p50);
		rdmae_json_num(&j, "p99_us", p->p99);
		rdmae_json_num(&j, "p99_9_us", p->p999);
		rdmae_json_num(&j, "max_us", p->max);
		rdmae_json_num(&j, "cpu_s", p->cpu_s);
		rdmae_json_end(&j);
	}
	rdmae_json_end(&j);
	return rdmae_json_close(&j, err);
}

static uint64_t max_size(const struct cfg *cf)
{
	uint64_t m = 0;

	for (unsigned int i = 0; i < cf->nsizes; i++)
		if (cf->sizes[i] > m)
			m = cf->sizes[i];
	return m;
}

static int run_client(const struct cfg *cf)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .local_write = 1 };
	struct point pts[NTESTS * MAX_LIST];
	struct rdmae_err err = { 0 };
	struct rdmae_meter prog;
	struct rdmae_region *reg = NULL;
	struct rdmae_perf_peer pe = { 0 };
	struct rdmae_conn_opts o;
	uint64_t big = max_size(cf);
	uint8_t *buf;
	double *samples = calloc(cf->iters, sizeof(double));
	unsigned int n = 0, i;
	uint32_t flags = 0;
	int t, ret;

	rdmae_meter_init(&prog, cf->net.quiet);
	buf = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED || !samples) {
		ret = rdmae_err_set(&err, -ENOMEM, "buffers for %" PRIu64 " samples of up to %"
				    PRIu64 " bytes", cf->iters, big);
		goto out;
	}
	memset(buf, 0xa5, big);
	rdmae_perf_conn_opts(&cf->net, &o);
	/* One QP, one operation at a time: what is measured is the path, not the queueing. */
	o.lanes = 1;
	if (big > o.rw_size)
		o.rw_size = (uint32_t)(big < RDMAE_MAX_RW_SIZE ? big : RDMAE_MAX_RW_SIZE);
	if (cf->tests[T_WRITE])
		flags |= RDMAE_SETUP_REMOTE_WRITE;
	if (cf->tests[T_READ])
		flags |= RDMAE_SETUP_REMOTE_READ;
	ret = rdmae_perf_peer_open(&pe, &cf->net, &o, big, flags, &err);
	if (!ret)
		ret = rdmae_region_create(&reg, pe.conn, buf, big, &ro, &err);
	if (ret)
		goto out;
	rdmae_meter_printf(&prog, " %-5s %10s %11s %10s %10s %10s %10s %10s %10s  %s", "#test",
			   "#bytes", "#iterations", "t_min[us]", "t_avg[us]", "p50[us]",
			   "p99[us]", "p99.9[us]", "t_max[us]", "what");
	for (t = 0; t < NTESTS && !ret; t++) {
		if (!cf->tests[t])
			continue;
		for (i = 0; i < cf->nsizes && !ret; i++) {
			struct point *p = &pts[n];

			memset(p, 0, sizeof(*p));
			p->test = t;
			p->size = cf->sizes[i];
			ret = measure(cf, &prog, &pe, reg, buf, p, samples, &err);
			if (ret)
				break;
			rdmae_meter_printf(&prog, " %-5s %10" PRIu64 " %11" PRIu64 " %10.2f %10.2f "
					   "%10.2f %10.2f %10.2f %10.2f  %s", test_name[t], p->size,
					   p->iters, p->min, p->avg, p->p50, p->p99, p->p999,
					   p->max, metric[t]);
			n++;
		}
	}
	rdmae_region_destroy(reg);
	reg = NULL;
	if (!ret)
		ret = rdmae_perf_peer_close(&pe, true, &err);
	if (!ret && cf->net.json)
		ret = write_json(cf, pts, n, &err);
out:
	rdmae_region_destroy(reg);
	rdmae_meter_clear(&prog);
	if (ret) {
		fprintf(stderr, "rdmae-perf lat client: %s\n", err.msg);
		rdmae_conn_destroy(pe.conn);
	}
	if (buf != MAP_FAILED)
		munmap(buf, big);
	free(samples);
	rdmae_meter_destroy(&prog);
	return ret ? 1 : 0;
}

/* Exits: 0 when asked for (--help), 2 for a wrong command line. */
static __attribute__((noreturn)) void usage(int code)
{
	fprintf(stderr,
		"usage: rdmae-perf lat server --addr A [--port P] --key FILE | --auth-none\n"
		"       rdmae-perf lat client --addr A [--port P] --key FILE | --auth-none\n"
		"             [--tests send,write,read] [--sizes 64,4K,64K] [--iters N] [--json FILE]\n"
		RDMAE_PERF_NET_USAGE
		"  --tests LIST          send (ping-pong), write, read (default all three)\n"
		"  --sizes LIST          message sizes (K/M/G suffixes; SEND at least 16)\n"
		"  --iters N             samples per point after %d warm-up ones (default 1000)\n",
		WARMUP);
	exit(code);
}

int rdmae_perf_lat(int argc, char **argv)
{
	static const struct option lo[] = {
		RDMAE_PERF_NET_OPTIONS,
		{ "tests", required_argument, NULL, 'T' },
		{ "sizes", required_argument, NULL, 's' },
		{ "iters", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct cfg cf = { .iters = 1000, .sizes = { 64, 4096, 65536 }, .nsizes = 3,
			  .tests = { true, true, true } };
	unsigned int i;
	int opt;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		usage(0);
	if (rdmae_perf_net_init(&cf.net, argc, argv, "7630"))
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
		case 'n': cf.iters = strtoull(optarg, NULL, 0); break;
		case 'h': usage(0);
		default: usage(2);
		}
	}
	if (!cf.net.addr || optind != argc)
		usage(2);
	if (cf.net.server)
		return rdmae_perf_serve(&cf.net, "lat");
	if (!cf.nsizes || !cf.iters || cf.iters > 100000000)
		usage(2);
	for (i = 0; i < cf.nsizes; i++)
		if (!cf.sizes[i] || cf.sizes[i] > (32u << 20) ||
		    (cf.tests[T_SEND] && cf.sizes[i] < RDMAE_CTL_HDR)) {
			fprintf(stderr, "rdmae-perf lat: size %" PRIu64 ": must be 1..%u, and for "
				"SEND at least %u\n", cf.sizes[i], 32u << 20, RDMAE_CTL_HDR);
			return 2;
		}
	return run_client(&cf);
}
