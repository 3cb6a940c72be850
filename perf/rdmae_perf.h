/* SPDX-License-Identifier: MIT */
/*
 * rdmae-perf's subcommands and what they share: the options every server
 * and client takes, clocks and CPU time, list arguments.
 */
#ifndef RDMAE_PERF_H
#define RDMAE_PERF_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "rdmae_conn.h"

/* Entry points: argv[0] is the subcommand, argv[1] "server" or "client". */
int rdmae_perf_transport(int argc, char **argv);
int rdmae_perf_bw(int argc, char **argv);
int rdmae_perf_lat(int argc, char **argv);
int rdmae_perf_migrate(int argc, char **argv);

/* Options of every bw/lat/migrate server and client. */
struct rdmae_perf_net {
	bool server;
	const char *addr;
	const char *port;
	const char *key_file;
	bool auth_none;
	const char *json;		/* --json FILE ("-": stdout) */
	bool quiet;			/* no progress display */
};

/* Their getopt_long entries (codes 'a' 'p' 'K' 'A' 'J' 'q'), to put first in a table. */
#define RDMAE_PERF_NET_OPTIONS \
	{ "addr", required_argument, NULL, 'a' }, \
	{ "port", required_argument, NULL, 'p' }, \
	{ "key", required_argument, NULL, 'K' }, \
	{ "auth-none", no_argument, NULL, 'A' }, \
	{ "json", required_argument, NULL, 'J' }, \
	{ "quiet", no_argument, NULL, 'q' }

#define RDMAE_PERF_NET_USAGE \
	"  --addr A [--port P]   server: address to listen on; client: the server's\n" \
	"  --key FILE | --auth-none   pre-shared key (doc/security.md), or none\n" \
	"  [--json FILE]         every figure of the run, machine readable (- = stdout)\n" \
	"  [--quiet]             no progress bar / progress lines\n"

/* Parse argv[1] (server|client) and set defaults; -EINVAL when it is neither. */
int rdmae_perf_net_init(struct rdmae_perf_net *n, int argc, char **argv, const char *port);
/* Handle one of the common options; false when opt is not one of them. */
bool rdmae_perf_net_opt(struct rdmae_perf_net *n, int opt, const char *arg);
void rdmae_perf_conn_opts(const struct rdmae_perf_net *n, struct rdmae_conn_opts *o);

/* CLOCK_MONOTONIC, seconds. */
double rdmae_perf_now(void);
/* CPU time of the whole process (user + system, every thread), seconds. */
double rdmae_perf_cpu(void);

/*
 * "4K,64K,1M" or "1,4": at most max values; sizes take K/M/G suffixes.
 * Returns the count, or 0 when the list is empty or malformed.
 */
unsigned int rdmae_perf_parse_list(const char *s, uint64_t *out, unsigned int max, bool sizes);

/*
 * "write,read": set out[i] for each names[i] listed (case does not matter),
 * clear the others. -EINVAL for an empty list or an unknown name.
 */
int rdmae_perf_parse_names(const char *s, const char *const *names, int n, bool *out);

#endif
