// SPDX-License-Identifier: MIT
/*
 * Test-only fault injection (faults.h): the parser of RDMAE_TEST_FAULTS.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

#define FAULTS_LANE_MAX 15u
#define FAULTS_HOLD_MAX_MS 10000u

static int faults_bad(const char *item, size_t len, struct rdmae_err *err)
{
	return rdmae_err_set(err, -EINVAL,
			     "RDMAE_TEST_FAULTS: '%.*s' is not a fault (recv_hold=LANE:MS with "
			     "LANE 1..%u and MS 1..%u, no_sync_ack, recheck)",
			     (int)len, item, FAULTS_LANE_MAX, FAULTS_HOLD_MAX_MS);
}

/* "N" in [lo, hi] from s (len bytes), whole. */
static bool faults_num(const char *s, size_t len, unsigned int lo, unsigned int hi,
		       unsigned int *out)
{
	char buf[16];
	char *end;
	unsigned long v;

	if (!len || len >= sizeof(buf) || s[0] < '0' || s[0] > '9')
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	v = strtoul(buf, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return false;
	*out = (unsigned int)v;
	return true;
}

static int faults_item(const char *s, size_t len, struct rdmae_faults *f, struct rdmae_err *err)
{
	static const char hold[] = "recv_hold=";

	if (len == strlen("no_sync_ack") && !memcmp(s, "no_sync_ack", len)) {
		f->no_sync_ack = true;
		return 0;
	}
	if (len == strlen("recheck") && !memcmp(s, "recheck", len)) {
		f->recheck = true;
		return 0;
	}
	if (len > strlen(hold) && !memcmp(s, hold, strlen(hold))) {
		const char *v = s + strlen(hold);
		size_t vlen = len - strlen(hold);
		const char *colon = memchr(v, ':', vlen);

		if (colon &&
		    faults_num(v, (size_t)(colon - v), 1, FAULTS_LANE_MAX, &f->recv_hold_lane) &&
		    faults_num(colon + 1, vlen - (size_t)(colon - v) - 1, 1, FAULTS_HOLD_MAX_MS,
			       &f->recv_hold_ms))
			return 0;
	}
	return faults_bad(s, len, err);
}

int rdmae_faults_parse(const char *spec, struct rdmae_faults *f, struct rdmae_err *err)
{
	struct rdmae_faults parsed = { 0 };
	const char *s = spec;

	while (s && *s) {
		const char *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);
		int ret = faults_item(s, len, &parsed, err);

		if (ret)
			return ret;
		s = comma ? comma + 1 : NULL;
	}
	*f = parsed;
	return 0;
}
