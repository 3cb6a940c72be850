/* SPDX-License-Identifier: MIT */
/*
 * The two ends of rdmae-perf bw and lat. The server is the same for both:
 * it prepares a buffer as the client asks (remotely writable and/or
 * readable, nothing more), then serves measurements: it counts SENDs, echoes
 * pings, or stays out of the way of one-sided traffic, and reports its own
 * CPU time for each. One client connection after another (a client opens
 * one per lane count and queue depth) until the client says QUIT.
 */
#ifndef RDMAE_PEER_H
#define RDMAE_PEER_H

#include <stdint.h>

#include "rdmae_conn.h"
#include "rdmae_write.h"
#include "rdmae_ctl.h"
#include "rdmae_perf.h"

/* Serve until a client sends QUIT; what is "bw" or "lat", for messages. */
int rdmae_perf_serve(const struct rdmae_perf_net *n, const char *what);

/* The client's side of one connection. */
struct rdmae_perf_peer {
	struct rdmae_conn *conn;
	struct rdmae_remote remote;	/* the server's buffer */
	struct rdmae_bufdesc descs[RDMAE_CTL_MAX_DESCS];
};

/* Connect with o, ask for a buffer of size bytes with flags (RDMAE_SETUP_*). */
int rdmae_perf_peer_open(struct rdmae_perf_peer *p, const struct rdmae_perf_net *n,
			 const struct rdmae_conn_opts *o, uint64_t size, uint32_t flags,
			 struct rdmae_err *err);
/* Say NEXT (another connection follows) or QUIT, and disconnect. */
int rdmae_perf_peer_close(struct rdmae_perf_peer *p, bool last, struct rdmae_err *err);

/* What the server reports for a measurement. */
struct rdmae_perf_srv {
	double cpu_s;			/* its CPU time from BEGIN to END */
	uint64_t msgs;			/* DATA messages it received */
	uint64_t bytes;
};

int rdmae_perf_begin(struct rdmae_perf_peer *p, enum rdmae_ctl_test t, uint64_t size,
		     struct rdmae_err *err);
int rdmae_perf_end(struct rdmae_perf_peer *p, struct rdmae_perf_srv *out, struct rdmae_err *err);

#endif
