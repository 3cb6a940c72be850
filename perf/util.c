/* SPDX-License-Identifier: MIT */
/* rdmae-perf: options, clocks and lists shared by the subcommands. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#include "rdmae_perf.h"
#include "rdmae_size.h"

int rdmae_perf_net_init(struct rdmae_perf_net *n, int argc, char **argv, const char *port)
{
	memset(n, 0, sizeof(*n));
	n->port = port;
	if (argc < 2)
		return -EINVAL;
	if (!strcmp(argv[1], "server"))
		n->server = true;
	else if (strcmp(argv[1], "client") != 0)
		return -EINVAL;
	return 0;
}

bool rdmae_perf_net_opt(struct rdmae_perf_net *n, int opt, const char *arg)
{
	switch (opt) {
	case 'a': n->addr = arg; return true;
	case 'p': n->port = arg; return true;
	case 'K': n->key_file = arg; return true;
	case 'A': n->auth_none = true; return true;
	case 'J': n->json = arg; return true;
	case 'q': n->quiet = true; return true;
	default: return false;
	}
}

void rdmae_perf_conn_opts(const struct rdmae_perf_net *n, struct rdmae_conn_opts *o)
{
	rdmae_conn_opts_default(o);
	o->key_file = n->key_file;
	o->auth_none = n->auth_none;
}

double rdmae_perf_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double rdmae_perf_cpu(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

unsigned int rdmae_perf_parse_list(const char *s, uint64_t *out, unsigned int max, bool sizes)
{
	unsigned int n = 0;

	while (*s) {
		char *end;

		if (n == max || *s < '0' || *s > '9')
			return 0;
		out[n++] = sizes ? rdmae_parse_size(s, &end) : strtoull(s, &end, 10);
		if (*end == ',' && end[1])
			s = end + 1;
		else if (!*end)
			s = end;
		else
			return 0;
	}
	return n;
}

int rdmae_perf_parse_names(const char *s, const char *const *names, int n, bool *out)
{
	bool any = false;
	int i;

	memset(out, 0, (size_t)n * sizeof(*out));
	while (*s) {
		size_t len = strcspn(s, ",");

		for (i = 0; i < n; i++)
			if (strlen(names[i]) == len && !strncasecmp(s, names[i], len))
				break;
		if (i == n)
			return -EINVAL;
		out[i] = true;
		any = true;
		s += len;
		if (*s == ',')
			s++;
	}
	return any ? 0 : -EINVAL;
}
