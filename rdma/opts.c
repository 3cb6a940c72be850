/* SPDX-License-Identifier: MIT */
/*
 * Connection options: the defaults, filling the fields a caller left zero,
 * the checks every connection and listener runs before it touches a device,
 * and the wire limits the options stand for.
 */
#include <errno.h>
#include <string.h>

#include "opts.h"

void rdmae_conn_opts_default(struct rdmae_conn_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->timeout_ms = 5000;
	o->credits = 255;
	/*
	 * Four lanes: measured with make perf (one VM), four moved 131 MB/s of
	 * 1 MiB runs against 99 MB/s for one, and the same at 4-64 KiB runs; on
	 * hardware several QPs are what spreads the work over the NIC's engines.
	 * See doc/architecture.md.
	 */
	o->lanes = 4;
	/* 2.0 peers too: only the depth of lanes after lane 0 differs (rdmae_lane_credits). */
	o->min_version = RDMAE_VERSION_2;
	o->max_version = RDMAE_VERSION;
	o->send_size = 8192;
	o->recv_size = 8192;
	o->frag_size = 32u << 20;
	o->rw_size = 1u << 20;
	o->keepalive_ms = 10000;
	o->keepalive_timeout_ms = 5000;
	o->recv_queue_bytes = 4u << 20;
	o->writes_in_flight = 128;
	o->send_timeout_ms = 30000;
}

/* A zero field means "default", so callers can set only what they care about. */
void rdmae_opts_fill(struct rdmae_conn_opts *dst, const struct rdmae_conn_opts *src)
{
	struct rdmae_conn_opts d;

	rdmae_conn_opts_default(&d);
	if (!src) {
		*dst = d;
		return;
	}
	*dst = *src;
#define FILL(f) do { if (!dst->f) dst->f = d.f; } while (0)
	FILL(timeout_ms);
	FILL(credits);
	FILL(lanes);
	FILL(min_version);
	FILL(max_version);
	FILL(send_size);
	FILL(recv_size);
	FILL(frag_size);
	FILL(rw_size);
	FILL(keepalive_timeout_ms);
	FILL(recv_queue_bytes);
	FILL(writes_in_flight);
	FILL(send_timeout_ms);
#undef FILL
	if (src->keepalive_ms < 0)
		dst->keepalive_ms = 0;
	else if (!src->keepalive_ms)
		dst->keepalive_ms = d.keepalive_ms;
}

int rdmae_opts_check(const struct rdmae_conn_opts *o, struct rdmae_err *err)
{
	if (o->lanes > RDMAE_MAX_LANES)
		return rdmae_err_set(err, -EINVAL, "lanes %u: at most %d", o->lanes,
				     RDMAE_MAX_LANES);
	/* The client grants one fewer than it posts (one waits for the negotiate response). */
	if (o->credits < RDMAE_MIN_INITIAL_GRANT + 1 || o->credits > RDMAE_MAX_CREDITS)
		return rdmae_err_set(err, -EINVAL, "credits %u: must be %d..%d", o->credits,
				     RDMAE_MIN_INITIAL_GRANT + 1, RDMAE_MAX_CREDITS);
	if (o->recv_size < RDMAE_MIN_RECV_SIZE || o->recv_size > RDMAE_MAX_RECV_SIZE ||
	    o->send_size < RDMAE_MIN_RECV_SIZE || o->send_size > RDMAE_MAX_RECV_SIZE)
		return rdmae_err_set(err, -EINVAL, "send/receive size %u/%u: must be %u..%u",
				     o->send_size, o->recv_size, RDMAE_MIN_RECV_SIZE,
				     RDMAE_MAX_RECV_SIZE);
	return 0;
}

void rdmae_opts_limits(struct rdmae_wire_limits *l, const struct rdmae_conn_opts *o)
{
	l->min_version = o->min_version;
	l->max_version = o->max_version;
	l->credits = o->credits;
	l->lanes = o->lanes;
	l->preferred_send_size = o->send_size;
	l->max_receive_size = o->recv_size;
	l->max_fragmented_size = o->frag_size;
	l->max_rw_size = o->rw_size;
}
