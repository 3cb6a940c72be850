/* SPDX-License-Identifier: MIT */
/*
 * mr.c alone, its neighbours stubbed (the way SPDK tests one file of its
 * RDMA transport): the verbs it calls are defined here, so every
 * registration is counted and can be made to fail or to block, and no
 * connection or lane exists. What is checked is mr.c's contract: the pin
 * cache never waits (-EAGAIN when a chunk cannot be pinned now), a put says
 * when it freed room, populate and registration of a prepared region.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "mr.h"

#define KiB 1024ull

/* ---- stubs: the verbs mr.c calls ---- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int regs, deregs;
	int fail_next;			/* errno for the next ibv_reg_mr, 0: none */
	bool block;			/* ibv_reg_mr waits until block is cleared */
	bool blocked;			/* a registration is waiting now */
	uint32_t next_key;
} S = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static struct ibv_mr *stub_reg(struct ibv_pd *pd, void *addr, size_t len, int access)
{
	struct ibv_mr *mr = NULL;
	int err;

	(void)access;
	pthread_mutex_lock(&S.lock);
	while (S.block) {
		S.blocked = true;
		pthread_cond_broadcast(&S.cond);
		pthread_cond_wait(&S.cond, &S.lock);
	}
	S.blocked = false;
	err = S.fail_next;
	S.fail_next = 0;
	if (!err) {
		mr = calloc(1, sizeof(*mr));
		if (!mr)
			abort();
		mr->pd = pd;
		mr->addr = addr;
		mr->length = len;
		mr->lkey = ++S.next_key;
		mr->rkey = S.next_key + 0x1000;
		S.regs++;
	}
	pthread_mutex_unlock(&S.lock);
	errno = err;
	return mr;
}

/* ibv_reg_mr is a macro choosing between these two by whether access is a constant. */
struct ibv_mr *(ibv_reg_mr)(struct ibv_pd *pd, void *addr, size_t length, int access)
{
	return stub_reg(pd, addr, length, access);
}

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
				unsigned int access)
{
	(void)iova;
	return stub_reg(pd, addr, length, (int)access);
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
	pthread_mutex_lock(&S.lock);
	S.deregs++;
	pthread_mutex_unlock(&S.lock);
	free(mr);
	return 0;
}

/* ---- the fixture: a device with a PD of its own, no connection ---- */

static struct ibv_pd stub_pd;
static struct rdmae_dev dev = { .pd = &stub_pd, .name = "stub0", .numa_node = -1 };
static uint8_t mem[256 * KiB] __attribute__((aligned(4096)));

static int setup(void **state)
{
	(void)state;
	pthread_mutex_lock(&S.lock);
	S.regs = S.deregs = 0;
	S.fail_next = 0;
	S.block = false;
	pthread_mutex_unlock(&S.lock);
	atomic_init(&dev.refs, 1);
	return 0;
}

static void teardown_check(void)
{
	/* Every registration was given back, and the device's references with it. */
	assert_int_equal(S.regs, S.deregs);
	assert_int_equal(atomic_load(&dev.refs), 1);
}

/* ON_DEMAND chunks of 16 KiB under cache m. */
static struct rdmae_region *chunked(struct rdmae_mr_cache *m, size_t len)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .page_size = 4096,
				       .chunk_size = 16 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;

	if (rdmae_mr_create(&r, &dev, mem, len, &o, m, &err))
		fail_msg("region: %s", err.msg);
	return r;
}

/*
 * The pin limit reached with every pinned chunk in use: -EAGAIN at once,
 * nothing registered or evicted; the put that makes a chunk idle says it
 * freed room, and the retry evicts that chunk and pins.
 */
static void test_lkey_eagain_when_full(void **state)
{
	struct rdmae_mr_cache *m = rdmae_mr_cache_create(32 * KiB);
	struct rdmae_region *r = chunked(m, 64 * KiB);
	struct rdmae_chunk *c0, *c0b, *c1, *c2;
	uint32_t lkey;
	uint64_t ev;

	(void)state;
	assert_int_equal(rdmae_mr_lkey(r, 0, &lkey, &c0), 0);
	assert_int_equal(rdmae_mr_lkey(r, 4 * KiB, &lkey, &c0b), 0);
	assert_ptr_equal(c0, c0b);
	assert_int_equal(rdmae_mr_lkey(r, 16 * KiB, &lkey, &c1), 0);
	assert_int_equal(rdmae_mr_cache_pinned(m), 32 * KiB);
	assert_int_equal(S.regs, 2);

	ev = rdmae_mr_events(r);
	assert_int_equal(rdmae_mr_lkey(r, 32 * KiB, &lkey, &c2), -EAGAIN);
	assert_null(c2);
	assert_int_equal(S.regs, 2);
	assert_int_equal(S.deregs, 0);
	assert_int_equal(rdmae_mr_events(r), ev);

	/* Two WRs read chunk 0: the first put leaves it in use, the second frees room. */
	assert_false(rdmae_mr_chunk_put(c0));
	assert_int_equal(rdmae_mr_events(r), ev);
	assert_true(rdmae_mr_chunk_put(c0b));
	assert_int_not_equal(rdmae_mr_events(r), ev);

	assert_int_equal(rdmae_mr_lkey(r, 32 * KiB, &lkey, &c2), 0);
	assert_non_null(c2);
	assert_int_equal(S.deregs, 1);
	assert_int_equal(S.regs, 3);
	assert_int_equal(rdmae_mr_cache_pinned(m), 32 * KiB);
	assert_true(rdmae_mr_chunk_put(c1));
	assert_true(rdmae_mr_chunk_put(c2));
	rdmae_mr_destroy(r);
	assert_int_equal(rdmae_mr_cache_pinned(m), 0);
	rdmae_mr_cache_destroy(m);
	teardown_check();
}

/*
 * The fast path never registers: -EAGAIN for a chunk not pinned (nothing
 * registered, no reference), a reference and the chunk's lkey once it is.
 */
static void test_lkey_pinned(void **state)
{
	struct rdmae_mr_cache *m = rdmae_mr_cache_create(32 * KiB);
	struct rdmae_region *r = chunked(m, 64 * KiB);
	struct rdmae_chunk *a, *b;
	uint32_t lkey, lkey2;

	(void)state;
	assert_int_equal(rdmae_mr_lkey_pinned(r, 0, &lkey, &a), -EAGAIN);
	assert_null(a);
	assert_int_equal(S.regs, 0);
	assert_int_equal(rdmae_mr_lkey(r, 0, &lkey, &a), 0);
	assert_int_equal(rdmae_mr_lkey_pinned(r, 8 * KiB, &lkey2, &b), 0);
	assert_ptr_equal(a, b);
	assert_int_equal(lkey, lkey2);
	assert_int_equal(S.regs, 1);
	assert_false(rdmae_mr_chunk_put(a));
	assert_true(rdmae_mr_chunk_put(b));
	/* Idle but still pinned (in the LRU): the fast path takes it back. */
	assert_int_equal(rdmae_mr_lkey_pinned(r, 0, &lkey2, &b), 0);
	assert_int_equal(lkey, lkey2);
	assert_true(rdmae_mr_chunk_put(b));
	assert_int_equal(S.regs, 1);
	rdmae_mr_destroy(r);
	rdmae_mr_cache_destroy(m);
	teardown_check();
}

/* A chunk over the limit never fits: -ENOBUFS, not -EAGAIN (it would wait for ever). */
static void test_lkey_enobufs(void **state)
{
	struct rdmae_mr_cache *m = rdmae_mr_cache_create(8 * KiB);
	struct rdmae_region *r = chunked(m, 64 * KiB);
	struct rdmae_chunk *ch;
	uint32_t lkey;

	(void)state;
	assert_int_equal(rdmae_mr_lkey(r, 0, &lkey, &ch), -ENOBUFS);
	assert_int_equal(S.regs, 0);
	rdmae_mr_destroy(r);
	rdmae_mr_cache_destroy(m);
	teardown_check();
}

/* A registration that fails gives its reservation back and leaves the chunk unpinned. */
static void test_lkey_reg_fails(void **state)
{
	struct rdmae_mr_cache *m = rdmae_mr_cache_create(32 * KiB);
	struct rdmae_region *r = chunked(m, 64 * KiB);
	struct rdmae_chunk *ch;
	uint32_t lkey;

	(void)state;
	S.fail_next = ENOMEM;
	assert_int_equal(rdmae_mr_lkey(r, 0, &lkey, &ch), -ENOMEM);
	assert_null(ch);
	assert_int_equal(rdmae_mr_cache_pinned(m), 0);
	assert_int_equal(rdmae_mr_lkey(r, 0, &lkey, &ch), 0);
	assert_true(rdmae_mr_chunk_put(ch));
	rdmae_mr_destroy(r);
	rdmae_mr_cache_destroy(m);
	teardown_check();
}

struct pinner {
	struct rdmae_region *r;
	struct rdmae_chunk *ch;
	int ret;
};

static void *pin_thread(void *arg)
{
	struct pinner *p = arg;
	uint32_t lkey;

	p->ret = rdmae_mr_lkey(p->r, 0, &lkey, &p->ch);
	return NULL;
}

/*
 * While one thread registers a chunk (no lock held), another asking for
 * the same chunk gets -EAGAIN at once, and a third can still use the cache
 * (its lock is not held across the registration).
 */
static void test_lkey_eagain_while_pinning(void **state)
{
	struct rdmae_mr_cache *m = rdmae_mr_cache_create(64 * KiB);
	struct rdmae_region *r = chunked(m, 64 * KiB);
	struct pinner p = { .r = r };
	struct rdmae_chunk *ch;
	pthread_t th;
	uint32_t lkey;

	(void)state;
	pthread_mutex_lock(&S.lock);
	S.block = true;
	pthread_mutex_unlock(&S.lock);
	assert_int_equal(pthread_create(&th, NULL, pin_thread, &p), 0);
	pthread_mutex_lock(&S.lock);
	while (!S.blocked)
		pthread_cond_wait(&S.cond, &S.lock);
	pthread_mutex_unlock(&S.lock);

	assert_int_equal(rdmae_mr_lkey(r, 0, &lkey, &ch), -EAGAIN);
	assert_int_equal(rdmae_mr_cache_pinned(m), 16 * KiB);

	pthread_mutex_lock(&S.lock);
	S.block = false;
	pthread_cond_broadcast(&S.cond);
	pthread_mutex_unlock(&S.lock);
	pthread_join(th, NULL);
	assert_int_equal(p.ret, 0);
	assert_int_equal(rdmae_mr_lkey(r, 0, &lkey, &ch), 0);
	assert_ptr_equal(ch, p.ch);
	assert_false(rdmae_mr_chunk_put(ch));
	assert_true(rdmae_mr_chunk_put(p.ch));
	rdmae_mr_destroy(r);
	rdmae_mr_cache_destroy(m);
	teardown_check();
}

/* PIN_ALL: registered at creation on the device's PD; lkey needs no cache and never pins. */
static void test_pin_all(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL, .page_size = 4096,
				       .remote_write = 1 };
	struct rdmae_err err = { 0 };
	struct rdmae_bufdesc d[2];
	struct rdmae_region *r;
	struct rdmae_chunk *ch;
	uint32_t lkey;
	size_t n;

	(void)state;
	assert_int_equal(rdmae_mr_create(&r, &dev, mem, sizeof(mem), &o, NULL, &err), 0);
	assert_int_equal(atomic_load(&dev.refs), 2);
	assert_int_equal(S.regs, 1);
	assert_ptr_equal(r->mrs[0]->pd, &stub_pd);
	assert_false(rdmae_mr_may_register(r));
	assert_int_equal(rdmae_mr_lkey(r, 100 * KiB, &lkey, &ch), 0);
	assert_null(ch);
	assert_int_equal(lkey, r->mrs[0]->lkey);
	assert_int_equal(rdmae_mr_bufdescs(r, d, 2, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].token, r->mrs[0]->rkey);
	rdmae_mr_destroy(r);
	teardown_check();
}

/*
 * Prepare: the pages are populated (resident before any registration),
 * PIN_ALL is registered on the device's PD, and the contents are kept.
 */
static void test_prepare_populates(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL, .remote_write = 1 };
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), len = 64 * ps;
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;
	unsigned char vec[64];
	uint8_t *p;

	(void)state;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	p[0] = 0x5a;
	assert_int_equal(mincore(p, len, vec), 0);
	assert_int_equal(vec[len / ps - 1] & 1, 0);
	assert_int_equal(rdmae_region_prepare(&r, &dev, p, len, &o, &err), 0);
	assert_int_equal(mincore(p, len, vec), 0);
	for (size_t i = 0; i < len / ps; i++)
		assert_int_equal(vec[i] & 1, 1);
	assert_int_equal(p[0], 0x5a);
	assert_int_equal(S.regs, 1);
	assert_ptr_equal(r->mrs[0]->pd, &stub_pd);
	assert_int_equal(r->page_size, ps);
	rdmae_mr_destroy(r);
	munmap(p, len);
	teardown_check();
}

/*
 * Prepared ON_DEMAND: nothing populated (a source must not commit all of a
 * guest's RAM) and nothing pinned yet.
 */
static void test_prepare_on_demand_not_populated(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .chunk_size = 16 * KiB };
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), len = 64 * ps;
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;
	unsigned char vec[64];
	uint8_t *p;

	(void)state;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	assert_int_equal(rdmae_region_prepare(&r, &dev, p, len, &o, &err), 0);
	assert_int_equal(mincore(p, len, vec), 0);
	for (size_t i = 0; i < len / ps; i++)
		assert_int_equal(vec[i] & 1, 0);
	assert_int_equal(S.regs, 0);
	rdmae_mr_destroy(r);
	munmap(p, len);
	teardown_check();
}

/* Prepared ON_DEMAND: nothing pinned yet, and a pin cache of its own with the limit asked. */
static void test_prepare_on_demand_own_cache(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .page_size = 4096,
				       .chunk_size = 16 * KiB, .pin_limit = 16 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;
	struct rdmae_chunk *a, *b;
	uint32_t lkey;

	(void)state;
	assert_int_equal(rdmae_region_prepare(&r, &dev, mem, 64 * KiB, &o, &err), 0);
	assert_int_equal(S.regs, 0);
	assert_true(r->own_cache);
	assert_int_equal(rdmae_mr_lkey(r, 0, &lkey, &a), 0);
	assert_int_equal(rdmae_mr_lkey(r, 16 * KiB, &lkey, &b), -EAGAIN);
	assert_true(rdmae_mr_chunk_put(a));
	rdmae_mr_destroy(r);
	teardown_check();
}

/* Refused before touching memory: no device, nothing mapped, an empty range. */
static void test_prepare_refuses(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL };
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;

	(void)state;
	assert_int_equal(rdmae_region_prepare(&r, NULL, mem, 4096, &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "no device"));
	assert_int_equal(rdmae_region_prepare(&r, &dev, mem, 0, &o, &err), -EINVAL);
	assert_int_equal(rdmae_region_prepare(&r, &dev, (void *)16, 4096, &o, &err), -EFAULT);
	assert_non_null(strstr(err.msg, "stub0"));
	assert_null(r);
	teardown_check();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_lkey_eagain_when_full, setup),
		cmocka_unit_test_setup(test_lkey_enobufs, setup),
		cmocka_unit_test_setup(test_lkey_pinned, setup),
		cmocka_unit_test_setup(test_lkey_reg_fails, setup),
		cmocka_unit_test_setup(test_lkey_eagain_while_pinning, setup),
		cmocka_unit_test_setup(test_pin_all, setup),
		cmocka_unit_test_setup(test_prepare_populates, setup),
		cmocka_unit_test_setup(test_prepare_on_demand_not_populated, setup),
		cmocka_unit_test_setup(test_prepare_on_demand_own_cache, setup),
		cmocka_unit_test_setup(test_prepare_refuses, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
