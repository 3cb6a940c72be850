/* SPDX-License-Identifier: MIT */
/*
 * rdmae-perf: measurement of rdmae, perftest style. Each subcommand runs as
 * a server on one host and a client on the other, over rdma_cm with the
 * library's own connections (and its authentication):
 *
 *   bw         WRITE, READ and SEND bandwidth over sizes, lanes, queue depths
 *   lat        SEND ping-pong, WRITE and READ latency percentiles
 *   migrate    a synthetic guest migrated by the engine (server = destination)
 *   transport  the transport against ib_write_bw, as make perf runs it
 *
 * doc/performance.md says how to run each and what every figure means.
 */
#include <stdio.h>
#include <string.h>

#include "rdmae_perf.h"

static void usage(void)
{
	fprintf(stderr,
		"usage: rdmae-perf bw|lat|migrate|transport server|client --addr A [options]\n"
		"  bw         WRITE, READ and SEND bandwidth: rdmae-perf bw --help\n"
		"  lat        SEND ping-pong, WRITE and READ latency: rdmae-perf lat --help\n"
		"  migrate    a synthetic guest migrated by the engine (server = destination):\n"
		"             rdmae-perf migrate --help\n"
		"  transport  scattered WRITE runs, as make perf compares with ib_write_bw\n"
		"See doc/performance.md.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage();
		return 2;
	}
	if (!strcmp(argv[1], "transport"))
		return rdmae_perf_transport(argc - 1, argv + 1);
	if (!strcmp(argv[1], "bw"))
		return rdmae_perf_bw(argc - 1, argv + 1);
	if (!strcmp(argv[1], "lat"))
		return rdmae_perf_lat(argc - 1, argv + 1);
	if (!strcmp(argv[1], "migrate"))
		return rdmae_perf_migrate(argc - 1, argv + 1);
	usage();
	return !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ? 0 : 2;
}
