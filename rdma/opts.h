/* SPDX-License-Identifier: MIT */
/* L0: option defaults and checks, and the wire limits they stand for (opts.c). Not installed. */
#ifndef RDMAE_OPTS_H
#define RDMAE_OPTS_H

#include "rdmae_conn.h"
#include "rdmae_err.h"
#include "rdmae_wire.h"

void rdmae_opts_fill(struct rdmae_conn_opts *dst, const struct rdmae_conn_opts *src);
int rdmae_opts_check(const struct rdmae_conn_opts *o, struct rdmae_err *err);
void rdmae_opts_limits(struct rdmae_wire_limits *l, const struct rdmae_conn_opts *o);

#endif
