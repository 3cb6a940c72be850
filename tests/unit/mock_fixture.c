/* SPDX-License-Identifier: MIT */
/* The shared fixture of the tests over the mock verbs layer (mock_fixture.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>

#include "internal.h"
#include "mock_fixture.h"
#include "mock_verbs.h"

uint8_t fixture_mem[FIXTURE_MEM_SIZE] __attribute__((aligned(4096)));

static const struct rdmae_bufdesc peer_desc = { .offset = FIXTURE_PEER_ADDR,
						.token = FIXTURE_PEER_RKEY,
						.length = 1u << 20 };
const struct rdmae_remote fixture_peer = { .descs = &peer_desc, .ndescs = 1, .len = 1u << 20 };

int fixture_setup(void **state)
{
	(void)state;
	mock_reset();
	return 0;
}

void fixture_assert_clean(void)
{
	char why[128];

	if (!mock_clean(why, sizeof(why)))
		fail_msg("after teardown: %s", why);
	assert_int_equal(mock_cq_unacked_at_destroy(), 0);
}

void fixture_assert_log(size_t from, const char *want)
{
	char got[512];

	mock_log_string(from, got, sizeof(got));
	assert_string_equal(got, want);
}

void fixture_assert_unwound(size_t from)
{
	char why[160];

	if (!mock_unwound(from, why, sizeof(why)))
		fail_msg("not unwound in reverse order: %s", why);
}

struct rdmae_region *fixture_region(struct rdmae_conn *c, void *addr, size_t len,
				    const struct rdmae_region_opts *o)
{
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;

	if (rdmae_region_create(&r, c, addr, len, o, &err))
		fail_msg("region of %zu bytes: %s", len, err.msg);
	return r;
}

struct rdmae_region *fixture_pinned(struct rdmae_conn *c)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL, .page_size = 4096 };

	return fixture_region(c, fixture_mem, sizeof(fixture_mem), &o);
}

static void *fixture_progress_main(void *arg)
{
	struct fixture_progress *p = arg;

	while (!atomic_load(&p->stop)) {
		mock_progress(p->c);
		sched_yield();
	}
	return NULL;
}

void fixture_progress_start(struct fixture_progress *p, struct rdmae_conn *c)
{
	p->c = c;
	atomic_store(&p->stop, false);
	pthread_mutex_lock(&c->lock);
	c->thread_started = true;	/* as if mock_conn had not stopped it */
	c->stop = false;
	pthread_mutex_unlock(&c->lock);
	assert_int_equal(pthread_create(&p->th, NULL, fixture_progress_main, p), 0);
}

void fixture_progress_stop(struct fixture_progress *p)
{
	atomic_store(&p->stop, true);
	assert_int_equal(pthread_join(p->th, NULL), 0);
	pthread_mutex_lock(&p->c->lock);
	p->c->thread_started = false;	/* joined here, not by rdmae_progress_stop */
	pthread_mutex_unlock(&p->c->lock);
}
