/* SPDX-License-Identifier: MIT */
/*
 * rdmae-perf transport: measures the transport the way ib_write_bw measures
 * verbs, so that the two can be set side by side in one run (make perf).
 *
 *   rdmae-perf transport server --addr A [--port P] [--size N]
 *   rdmae-perf transport client --addr A [--port P] [--size N]
 *                               [--runs 4K,64K,1M] [--lanes 1,4] [--seconds S]
 *
 * For every lane count the client opens one connection; for every run size
 * it WRITEs the whole buffer as scattered runs of that size (even runs, then
 * odd ones, so that nothing coalesces and the run size is what the NIC sees)
 * for S seconds, and prints bytes per second and the process's CPU time per
 * GiB moved (user + system, every thread). The server only registers and
 * advertises its buffer, as the destination of a migration does.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "rdmae_conn.h"
#include "rdmae_region.h"
#include "rdmae_write.h"
#include "rdmae_perf.h"
#include "rdmae_size.h"

#define MAX_DESCS 64
#define MAX_LIST 16

struct hello {
	uint64_t size;
	uint32_t ndescs;
	uint32_t pad;
	struct rdmae_bufdesc descs[MAX_DESCS];
};

struct cfg {
	bool server;
	const char *addr;
	const char *port;
	uint64_t size;
	uint64_t runs[MAX_LIST];
	unsigned int nruns;
	unsigned int lanes[MAX_LIST];
	unsigned int nlanes;
	double seconds;
	const char *key_file;
	bool auth_none;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static unsigned int parse_list(const char *s, uint64_t *out, bool sizes)
{
	unsigned int n = 0;
	char *end;

	while (*s && n < MAX_LIST) {
		out[n++] = sizes ? rdmae_parse_size(s, &end) : strtoull(s, &end, 10);
		s = *end == ',' ? end + 1 : end;
		if (end == s && *s)
			break;
	}
	return n;
}

static int serve_one(const struct cfg *cf, struct rdmae_listener *l, bool *more)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .remote_write = 1 };
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdmae_region *r;
	struct hello h;
	size_t n, len;
	void *msg;
	uint8_t *buf;
	int ret;

	ret = rdmae_accept(l, &c, 120000, &err);
	if (ret) {
		fprintf(stderr, "rdmae-perf server: %s\n", err.msg);
		return ret;
	}
	buf = mmap(NULL, cf->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		ret = -errno;
		goto out_conn;
	}
	ret = rdmae_region_create(&r, c, buf, cf->size, &ro, &err);
	if (ret)
		goto out_unmap;
	memset(&h, 0, sizeof(h));
	h.size = cf->size;
	ret = rdmae_region_bufdescs(r, h.descs, MAX_DESCS, &n, &err);
	h.ndescs = (uint32_t)n;
	if (!ret)
		ret = rdmae_send(c, &h, sizeof(h), &err);
	/* The client says "next" or "quit" when it is done with this connection. */
	if (!ret)
		ret = rdmae_recv(c, &msg, &len, -1, &err);
	if (!ret) {
		*more = len == 4 && !memcmp(msg, "next", 4);
		free(msg);
	}
	rdmae_region_destroy(r);
out_unmap:
	munmap(buf, cf->size);
out_conn:
	if (ret)
		fprintf(stderr, "rdmae-perf server: %s\n", err.msg);
	rdmae_conn_destroy(c);
	return ret;
}

static int run_server(const struct cfg *cf)
{
	struct rdmae_conn_opts o;
	struct rdmae_listener *l;
	struct rdmae_err err = { 0 };
	bool more = true;
	int ret;

	rdmae_conn_opts_default(&o);
	o.lanes = RDMAE_MAX_LANES;
	o.key_file = cf->key_file;
	o.auth_none = cf->auth_none;
	ret = rdmae_listen(&l, cf->addr, cf->port, &o, &err);
	if (ret) {
		fprintf(stderr, "rdmae-perf server: %s\n", err.msg);
		return 1;
	}
	printf("rdmae-perf server: listening on %s:%d\n", cf->addr, rdmae_listener_port(l));
	fflush(stdout);
	while (more && !ret)
		ret = serve_one(cf, l, &more);
	rdmae_listener_destroy(l);
	return ret ? 1 : 0;
}

static size_t scatter_runs(struct rdmae_run *runs, uint64_t size, uint64_t run)
{
	size_t n = 0;
	uint64_t off;
	int pass;

	for (pass = 0; pass < 2; pass++)
		for (off = (uint64_t)pass * run; off < size; off += 2 * run) {
			runs[n].local = off;
			runs[n].remote = off;
			runs[n].len = size - off < run ? size - off : run;
			n++;
		}
	return n;
}

static int measure(const struct cfg *cf, unsigned int lanes, bool last)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL };
	struct rdmae_conn_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdmae_region *r;
	struct rdmae_remote dst;
	struct rdmae_run *runs, *work;
	struct hello *h;
	size_t len, nr;
	uint8_t *buf;
	unsigned int i;
	int ret;

	rdmae_conn_opts_default(&o);
	o.lanes = (uint16_t)lanes;
	o.key_file = cf->key_file;
	o.auth_none = cf->auth_none;
	/* Runs are sized by the sweep, so allow the largest as one WRITE. */
	for (i = 0; i < cf->nruns; i++)
		if (cf->runs[i] > o.rw_size && cf->runs[i] <= RDMAE_MAX_RW_SIZE)
			o.rw_size = (uint32_t)cf->runs[i];
	ret = rdmae_connect(&c, cf->addr, cf->port, &o, &err);
	if (ret) {
		fprintf(stderr, "rdmae-perf client: %s\n", err.msg);
		return ret;
	}
	ret = rdmae_recv(c, (void **)&h, &len, 30000, &err);
	if (ret)
		goto out_conn;
	if (len != sizeof(*h) || h->ndescs > MAX_DESCS || h->size < cf->size) {
		free(h);
		ret = rdmae_err_set(&err, -EPROTO, "bad hello from the server");
		goto out_conn;
	}
	dst.descs = h->descs;
	dst.ndescs = h->ndescs;
	dst.len = h->size;
	buf = mmap(NULL, cf->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	runs = calloc(cf->size / 512 + 2, sizeof(*runs));
	work = calloc(cf->size / 512 + 2, sizeof(*work));
	if (buf == MAP_FAILED || !runs || !work) {
		ret = rdmae_err_set(&err, -ENOMEM, "buffers of %" PRIu64 " bytes", cf->size);
		goto out_mem;
	}
	memset(buf, 0xa5, cf->size);
	ret = rdmae_region_create(&r, c, buf, cf->size, &ro, &err);
	if (ret)
		goto out_mem;
	for (i = 0; i < cf->nruns && !ret; i++) {
		uint64_t run = cf->runs[i], bytes = 0;
		double t0, t1, c0, c1;

		if (run < 512)
			continue;
		nr = scatter_runs(runs, cf->size, run);
		t0 = now_s();
		c0 = cpu_s();
		do {
			/* rdmae_write coalesces in place; hand it a fresh copy each pass. */
			memcpy(work, runs, nr * sizeof(*runs));
			ret = rdmae_write(c, r, &dst, work, nr, &err);
			if (!ret)
				ret = rdmae_write_flush(c, &err);
			bytes += cf->size;
			t1 = now_s();
		} while (!ret && t1 - t0 < cf->seconds);
		c1 = cpu_s();
		if (!ret)
			printf("rdmae-perf: lanes %2u  run %8" PRIu64 "  %8.1f MB/s  %8.1f CPU ms/GiB"
			       "  (%" PRIu64 " MiB in %.2f s)\n", lanes, run,
			       (double)bytes / (t1 - t0) / 1e6,
			       (c1 - c0) * 1e3 / ((double)bytes / (double)(1u << 30)), bytes >> 20,
			       t1 - t0);
		fflush(stdout);
	}
	rdmae_region_destroy(r);
	if (!ret)
		ret = rdmae_send(c, last ? "quit" : "next", 4, &err);
out_mem:
	free(work);
	free(runs);
	if (buf != MAP_FAILED)
		munmap(buf, cf->size);
	free(h);
out_conn:
	if (ret)
		fprintf(stderr, "rdmae-perf client: %s\n", err.msg);
	rdmae_conn_destroy(c);
	return ret;
}

static void usage(void)
{
	fprintf(stderr, "usage: rdmae-perf transport server|client --addr A [--port P] "
		"[--size N] [--runs 4K,64K,1M] [--lanes 1,4] [--seconds S]\n"
		"  --key FILE | --auth-none\n");
	exit(2);
}

/* argv[0] is "transport", argv[1] "server" or "client". */
int rdmae_perf_transport(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },
		{ "size", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "lanes", required_argument, NULL, 'l' },
		{ "seconds", required_argument, NULL, 't' },
		{ "key", required_argument, NULL, 'K' },
		{ "auth-none", no_argument, NULL, 'A' },
		{ NULL, 0, NULL, 0 }
	};
	struct cfg cf = { .port = "7600", .size = 64u << 20, .seconds = 3 };
	uint64_t tmp[MAX_LIST];
	unsigned int i;
	int opt, ret = 0;

	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "server"))
		cf.server = true;
	else if (strcmp(argv[1], "client") != 0)
		usage();
	cf.runs[0] = 4096;
	cf.runs[1] = 65536;
	cf.runs[2] = 1u << 20;
	cf.nruns = 3;
	cf.lanes[0] = 1;
	cf.lanes[1] = 4;
	cf.nlanes = 2;
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 'a': cf.addr = optarg; break;
		case 'p': cf.port = optarg; break;
		case 's': cf.size = rdmae_size_opt("rdmae-perf transport", optarg); break;
		case 'r': cf.nruns = parse_list(optarg, cf.runs, true); break;
		case 'l':
			cf.nlanes = parse_list(optarg, tmp, false);
			for (i = 0; i < cf.nlanes; i++)
				cf.lanes[i] = (unsigned int)tmp[i];
			break;
		case 't': cf.seconds = strtod(optarg, NULL); break;
		case 'K': cf.key_file = optarg; break;
		case 'A': cf.auth_none = true; break;
		default: usage();
		}
	}
	if (!cf.addr || !cf.size || !cf.nruns || !cf.nlanes)
		usage();
	for (i = 0; i < cf.nlanes; i++)
		if (!cf.lanes[i] || cf.lanes[i] > RDMAE_MAX_LANES) {
			fprintf(stderr, "rdmae-perf: lanes %u: must be 1..%d\n", cf.lanes[i],
				RDMAE_MAX_LANES);
			return 2;
		}
	if (cf.server)
		return run_server(&cf);
	for (i = 0; i < cf.nlanes && !ret; i++)
		ret = measure(&cf, cf.lanes[i], i + 1 == cf.nlanes);
	return ret ? 1 : 0;
}
