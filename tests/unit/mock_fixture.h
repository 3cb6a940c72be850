/* SPDX-License-Identifier: MIT */
/*
 * The fixture the tests over the mock verbs layer share (test_mock_*.c):
 * a fresh mock before each test, the checks that teardown gave everything
 * back in order, local memory to register and the peer's memory to WRITE
 * into. One copy here, so a change to how the mock is reset or checked
 * reaches every such test at once.
 */
#ifndef RDMAE_MOCK_FIXTURE_H
#define RDMAE_MOCK_FIXTURE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_conn.h"
#include "rdmae_region.h"
#include "rdmae_write.h"

/* cmocka setup: the mock as new (mock_reset), no failures scripted. */
int fixture_setup(void **state);
/* Everything the mock handed out was given back, and every CQ event acked. */
void fixture_assert_clean(void);
/* The objects created and destroyed since log position from, as mock_log_string writes them. */
void fixture_assert_log(size_t from, const char *want);
/* What was created since log position from was destroyed, last first. */
void fixture_assert_unwound(size_t from);

/* Local memory for regions, page aligned. */
#define FIXTURE_MEM_SIZE (256u * 1024u)
extern uint8_t fixture_mem[FIXTURE_MEM_SIZE];

/* The peer's memory: one descriptor of 1 MiB at FIXTURE_PEER_ADDR, rkey FIXTURE_PEER_RKEY. */
#define FIXTURE_PEER_ADDR 0x10000000ull
#define FIXTURE_PEER_RKEY 0x77u
extern const struct rdmae_remote fixture_peer;

/* A region of c over [addr, addr + len); fails the test, with the reason, if it cannot. */
struct rdmae_region *fixture_region(struct rdmae_conn *c, void *addr, size_t len,
				    const struct rdmae_region_opts *o);
/* All of fixture_mem, PIN_ALL, 4 KiB pages. */
struct rdmae_region *fixture_pinned(struct rdmae_conn *c);

/*
 * A stand-in for c's progress thread, which mock_conn stops: turns of
 * mock_progress (reaping, completing nothing itself) until
 * fixture_progress_stop, with c marked as having a thread, which is when
 * drains and the failure paths run as they do in production.
 */
struct fixture_progress {
	struct rdmae_conn *c;
	atomic_bool stop;
	pthread_t th;
};
void fixture_progress_start(struct fixture_progress *p, struct rdmae_conn *c);
/* Joins it; c no longer counts as having a thread. */
void fixture_progress_stop(struct fixture_progress *p);

#endif
