/* SPDX-License-Identifier: MIT */
/* Stub verbs for the page-cost benchmark: see stub_verbs.c. */
#ifndef RDMAE_STUB_VERBS_H
#define RDMAE_STUB_VERBS_H

#include <stdint.h>

#include "rdmae_err.h"

struct rdmae_conn;

/* A connected-looking connection of `lanes` lanes; NULL with err set on failure. */
struct rdmae_conn *stub_conn_create(unsigned int lanes, struct rdmae_err *err);
/* WRs, doorbells and bytes posted so far. */
void stub_counts(uint64_t *wrs, uint64_t *doorbells, uint64_t *bytes);

#endif
