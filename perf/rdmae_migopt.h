/* SPDX-License-Identifier: MIT */
/*
 * The command line of the two migration drivers, rdmae-perf migrate
 * (perf/migrate.c) and the test driver rdmae_mig (tests/verbs/rdmae_mig.c).
 * The options both take are parsed here, once, so that a name takes the same
 * argument and means the same in both; each driver adds its own (rdmae-perf:
 * --pattern, --json, --plot...; rdmae_mig: --expect, --hold-at, connection
 * timeouts...) with the value parsers below.
 *
 * Every parser returns 0, or -EINVAL with a message in err that names the
 * option and the text it was given ("--lanes '0': not a whole number from 1
 * to 16"): the driver prints it after its own name and exits with status 2.
 *
 * Header-only, as rdmae_size.h: each program in tests/verbs is one source file.
 */
#ifndef RDMAE_MIGOPT_H
#define RDMAE_MIGOPT_H

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rdmae_conn.h"
#include "rdmae_err.h"
#include "rdmae_guest.h"
#include "rdmae_region.h"
#include "rdmae_size.h"

/* ---- values ---- */

/* A decimal whole number from min to max. */
static inline int rdmae_opt_u64(const char *opt, const char *arg, uint64_t min, uint64_t max,
				uint64_t *out, struct rdmae_err *err)
{
	unsigned long long v;
	char *end;

	/* strtoull takes a sign and leading blanks, and reads "-1" as 2^64 - 1. */
	if (!isdigit((unsigned char)arg[0]))
		goto bad;
	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || *end || v < min || v > max)
		goto bad;
	*out = v;
	return 0;
bad:
	return rdmae_err_set(err, -EINVAL, "%s '%s': not a whole number from %llu to %llu", opt,
			     arg, (unsigned long long)min, (unsigned long long)max);
}

static inline int rdmae_opt_uint(const char *opt, const char *arg, unsigned int min,
				 unsigned int max, unsigned int *out, struct rdmae_err *err)
{
	uint64_t v = 0;
	int ret = rdmae_opt_u64(opt, arg, min, max, &v, err);

	if (!ret)
		*out = (unsigned int)v;
	return ret;
}

/* Milliseconds, 0 included where the option says what 0 means. */
static inline int rdmae_opt_ms(const char *opt, const char *arg, int *out, struct rdmae_err *err)
{
	unsigned int v = 0;
	int ret = rdmae_opt_uint(opt, arg, 0, INT_MAX, &v, err);

	if (!ret)
		*out = (int)v;
	return ret;
}

/* MB/s (10^6 bytes), fractions allowed, >= 0; *out in bytes/s. */
static inline int rdmae_opt_mb_s(const char *opt, const char *arg, double *out,
				 struct rdmae_err *err)
{
	char *end;
	double v;

	if (!isdigit((unsigned char)arg[0]) && arg[0] != '.')
		goto bad;
	errno = 0;
	v = strtod(arg, &end);
	if (errno || *end || !isfinite(v) || v < 0)
		goto bad;
	*out = v * 1e6;
	return 0;
bad:
	return rdmae_err_set(err, -EINVAL, "%s '%s': not a rate in MB/s (a number >= 0)", opt, arg);
}

/* A size (K/M/G suffixes, rdmae_size.h) of at least min bytes. */
static inline int rdmae_opt_size(const char *opt, const char *arg, uint64_t min, uint64_t *out,
				 struct rdmae_err *err)
{
	uint64_t v;

	if (!rdmae_size_arg(arg, &v))
		return rdmae_err_set(err, -EINVAL, "%s '%s': not a size (a number with an "
				     "optional K, M or G)", opt, arg);
	if (v < min)
		return rdmae_err_set(err, -EINVAL, "%s '%s': less than %llu bytes", opt,
				     arg, (unsigned long long)min);
	*out = v;
	return 0;
}

/* One of n names: *out is its index. */
static inline int rdmae_opt_choice(const char *opt, const char *arg, const char *const *names,
				   int n, int *out, struct rdmae_err *err)
{
	char list[160];
	size_t off = 0;
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(arg, names[i])) {
			*out = i;
			return 0;
		}
	list[0] = 0;
	for (i = 0; i < n && off < sizeof(list); i++)
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
					i ? (i == n - 1 ? " or " : ", ") : "", names[i]);
	return rdmae_err_set(err, -EINVAL, "%s '%s': not %s", opt, arg, list);
}

/* ---- the options both drivers take ---- */

struct rdmae_migopt {
	uint64_t size;			/* guest RAM, split into pc.ram and vga.vram */
	bool size_given;
	double rate;			/* dirtying, bytes/s */
	uint64_t downtime_ms;
	unsigned int max_rounds;
	double bw_cap;			/* bytes/s; 0: none */
	unsigned int lanes;		/* 0: the transport's default */
	enum rdmae_guest_mem mem;	/* --hugepages */
	bool no_verify;
	int timeout_ms;			/* engine message timeout; 0: the engine's default */
	enum rdmae_reg_mode reg;	/* --reg; AUTO: the engine's default */
};

/* getopt_long codes, above any character a driver uses for its own options. */
enum {
	RDMAE_MIGOPT_SIZE = 0x100,
	RDMAE_MIGOPT_RATE,
	RDMAE_MIGOPT_DOWNTIME,
	RDMAE_MIGOPT_MAX_ROUNDS,
	RDMAE_MIGOPT_BW_CAP,
	RDMAE_MIGOPT_LANES,
	RDMAE_MIGOPT_HUGEPAGES,
	RDMAE_MIGOPT_NO_VERIFY,
	RDMAE_MIGOPT_TIMEOUT,
	RDMAE_MIGOPT_REG,
};

#define RDMAE_MIGOPT_OPTIONS \
	{ "size", required_argument, NULL, RDMAE_MIGOPT_SIZE }, \
	{ "rate", required_argument, NULL, RDMAE_MIGOPT_RATE }, \
	{ "downtime", required_argument, NULL, RDMAE_MIGOPT_DOWNTIME }, \
	{ "max-rounds", required_argument, NULL, RDMAE_MIGOPT_MAX_ROUNDS }, \
	{ "bw-cap", required_argument, NULL, RDMAE_MIGOPT_BW_CAP }, \
	{ "lanes", required_argument, NULL, RDMAE_MIGOPT_LANES }, \
	{ "hugepages", required_argument, NULL, RDMAE_MIGOPT_HUGEPAGES }, \
	{ "no-verify", no_argument, NULL, RDMAE_MIGOPT_NO_VERIFY }, \
	{ "timeout", required_argument, NULL, RDMAE_MIGOPT_TIMEOUT }, \
	{ "reg", required_argument, NULL, RDMAE_MIGOPT_REG }

/*
 * Their usage lines. The drivers differ in two defaults, which they pass as
 * string literals: the dirtying rate (rdmae-perf measures a busy guest,
 * rdmae_mig's tests mostly want an idle one) and --hugepages (rdmae-perf
 * takes the best the host gives; the tests place memory the same way on
 * every run, so that a memlock or huge page fault is the one they inject).
 */
#define RDMAE_MIGOPT_USAGE(rate_default, huge_default) \
	"  --size N              guest RAM (K/M/G, at least 1M; default 256M)\n" \
	"  --rate MB/s           dirtying rate (default " rate_default "; 0: idle)\n" \
	"  --downtime MS         downtime limit (default 300)\n" \
	"  --max-rounds N        pre-copy rounds before giving up (default 30)\n" \
	"  --bw-cap MB/s         bandwidth cap (default none)\n" \
	"  --lanes N             lanes (QPs), 1 to 16 (default 4)\n" \
	"  --hugepages auto|on|off   guest RAM on huge pages: where enough are reserved,\n" \
	"                        required (of the destination too), never (default " \
	huge_default ")\n" \
	"  --no-verify           skip the engine's checksums (the guest's own check stays)\n" \
	"  --timeout MS          engine message timeout (default: the engine's, 30000)\n" \
	"  --reg auto|pin-all|on-demand|odp   registration of guest RAM on this side\n" \
	"                        (default auto: the source pins all, the destination uses\n" \
	"                        ODP where the device has it, pins otherwise; odp fails\n" \
	"                        where the device lacks it)\n"

static inline void rdmae_migopt_init(struct rdmae_migopt *o, double rate,
				     enum rdmae_guest_mem mem)
{
	memset(o, 0, sizeof(*o));
	o->size = 256u << 20;
	o->rate = rate;
	o->downtime_ms = 300;
	o->max_rounds = 30;
	o->mem = mem;
	o->reg = RDMAE_REG_AUTO;
}

/*
 * Take option opt (a getopt_long code) with its argument: 1 when it is one of
 * the shared options and its value is good, 0 when it is not one of them,
 * -EINVAL (err says why) for a bad value.
 */
static inline int rdmae_migopt_parse(struct rdmae_migopt *o, int opt, const char *arg,
				     struct rdmae_err *err)
{
	/* Indexed by the enum: what --hugepages auto|on|off selects. */
	static const char *const huge_names[] = { "auto", "on", "off" };
	static const enum rdmae_guest_mem huge_mem[] = {
		RDMAE_GUEST_HUGE_IF_RESERVED, RDMAE_GUEST_HUGE, RDMAE_GUEST_SMALL,
	};
	static const char *const reg_names[] = { "auto", "pin-all", "on-demand", "odp" };
	static const enum rdmae_reg_mode reg_mode[] = {
		RDMAE_REG_AUTO, RDMAE_REG_PIN_ALL, RDMAE_REG_ON_DEMAND, RDMAE_REG_ODP,
	};
	int ret, i = 0;

	switch (opt) {
	case RDMAE_MIGOPT_SIZE:
		ret = rdmae_opt_size("--size", arg, 1u << 20, &o->size, err);
		o->size_given = !ret;
		break;
	case RDMAE_MIGOPT_RATE:
		ret = rdmae_opt_mb_s("--rate", arg, &o->rate, err);
		break;
	case RDMAE_MIGOPT_DOWNTIME:
		/* A day: beyond it a limit means none, and * 10^6 stays in 64 bits. */
		ret = rdmae_opt_u64("--downtime", arg, 0, 86400000, &o->downtime_ms, err);
		break;
	case RDMAE_MIGOPT_MAX_ROUNDS:
		ret = rdmae_opt_uint("--max-rounds", arg, 1, UINT_MAX, &o->max_rounds, err);
		break;
	case RDMAE_MIGOPT_BW_CAP:
		ret = rdmae_opt_mb_s("--bw-cap", arg, &o->bw_cap, err);
		break;
	case RDMAE_MIGOPT_LANES:
		ret = rdmae_opt_uint("--lanes", arg, 1, RDMAE_MAX_LANES, &o->lanes, err);
		break;
	case RDMAE_MIGOPT_HUGEPAGES:
		ret = rdmae_opt_choice("--hugepages", arg, huge_names, 3, &i, err);
		if (!ret)
			o->mem = huge_mem[i];
		break;
	case RDMAE_MIGOPT_NO_VERIFY:
		o->no_verify = true;
		ret = 0;
		break;
	case RDMAE_MIGOPT_TIMEOUT:
		ret = rdmae_opt_ms("--timeout", arg, &o->timeout_ms, err);
		break;
	case RDMAE_MIGOPT_REG:
		ret = rdmae_opt_choice("--reg", arg, reg_names, 4, &i, err);
		if (!ret)
			o->reg = reg_mode[i];
		break;
	default:
		return 0;
	}
	return ret ? ret : 1;
}

/* What --hugepages was: auto, on or off. */
static inline const char *rdmae_migopt_huge_name(enum rdmae_guest_mem mem)
{
	return mem == RDMAE_GUEST_HUGE ? "on" : mem == RDMAE_GUEST_SMALL ? "off" : "auto";
}

#endif
