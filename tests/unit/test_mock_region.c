/* SPDX-License-Identifier: MIT */
/*
 * Registration without a connection, over the mock verbs layer
 * (mock_verbs.h): a device opened by address, memory prepared on its PD
 * before any connection exists, attached to a connection once it is up,
 * and kept across that connection's end for the next one. Refusals: no
 * rkey before attach, another device or PD, a connection not negotiated.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"
#include "rdmae_dev.h"
#include "rdmae_write.h"
#include "mock_fixture.h"
#include "mock_verbs.h"

#define KiB 1024ull

static struct rdmae_dev *dev_open(void)
{
	struct rdmae_err err = { 0 };
	struct rdmae_dev *d;

	if (rdmae_dev_open(&d, "127.0.0.1", &err))
		fail_msg("dev_open: %s", err.msg);
	return d;
}

static struct rdmae_region *prepare(struct rdmae_dev *d)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL, .page_size = 4096,
				       .remote_write = 1 };
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;

	if (rdmae_region_prepare(&r, d, fixture_mem, sizeof(fixture_mem), &o, &err))
		fail_msg("prepare: %s", err.msg);
	return r;
}

/* A connected connection (mock_conn) on d's PD. */
static struct rdmae_conn *conn_on(struct rdmae_dev *d)
{
	struct rdmae_conn_opts o;
	struct rdmae_conn *c;

	mock_conn_opts(&o);
	o.dev = d;
	c = mock_conn(2, &o);
	assert_non_null(c);
	assert_ptr_equal(c->pd, d->pd);
	return c;
}

static void complete_all(struct rdmae_conn *c)
{
	for (unsigned int i = 0; i < c->nlanes; i++) {
		struct ibv_qp *qp = mock_lane_qp(c, i);

		assert_int_equal(mock_complete_sends(qp, mock_qp_sends_out(qp)), 0);
	}
	mock_progress(c);
}

/* The device's PD, and memory registered on it, with no connection at all. */
static void test_prepare_without_connection(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_bufdesc d[1];
	struct rdmae_region *r;
	struct rdmae_dev *dev;
	size_t n = 0;

	(void)state;
	dev = dev_open();
	fixture_assert_log(0, "+I +P");
	assert_string_equal(rdmae_dev_name(dev), "mock0");
	r = prepare(dev);
	fixture_assert_log(0, "+I +P +M");
	assert_ptr_equal(mock_region_mr(r, 0)->pd, dev->pd);
	assert_true(mock_mr_access(mock_region_mr(r, 0)) & IBV_ACCESS_REMOTE_WRITE);

	/* No rkey leaves the host before a connection has authenticated. */
	assert_int_equal(rdmae_region_bufdescs(r, d, 1, &n, &err), -EPERM);
	assert_non_null(strstr(err.msg, "not attached"));
	assert_non_null(strstr(err.msg, "mock0"));

	/* The region holds the device: closing it first is safe, the PD goes last. */
	rdmae_dev_close(dev);
	assert_int_equal(mock_live(MOCK_OBJ_PD), 1);
	rdmae_region_destroy(r);
	fixture_assert_unwound(0);
	fixture_assert_clean();
}

/* A wildcard address names no device: refused, nothing left behind. */
static void test_dev_open_no_device(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_dev *d;

	(void)state;
	mock_bind_device(-1);
	assert_int_equal(rdmae_dev_open(&d, "0.0.0.0", &err), -ENODEV);
	assert_null(d);
	assert_non_null(strstr(err.msg, "0.0.0.0"));
	mock_fail(MOCK_ALLOC_PD, 1, ENOMEM);
	mock_bind_device(0);
	assert_int_equal(rdmae_dev_open(&d, "127.0.0.1", &err), -ENOMEM);
	assert_non_null(strstr(err.msg, "ibv_alloc_pd on mock0"));
	fixture_assert_unwound(0);
	fixture_assert_clean();
}

/* rdma_cm placed the connection on another device than its options give: refused, naming both. */
static void test_conn_on_other_device(void **state)
{
	struct rdmae_conn_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdmae_dev *d;

	(void)state;
	mock_bind_device(1);
	d = dev_open();
	mock_conn_opts(&o);
	o.dev = d;
	c = mock_conn_bare(&o);
	assert_non_null(c);
	assert_int_equal(mock_conn_setup_device(c, &err), -EXDEV);
	assert_non_null(strstr(err.msg, "mock0"));
	assert_non_null(strstr(err.msg, "mock1"));
	assert_null(c->pd);
	rdmae_conn_destroy(c);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

/* A connection with its own PD cannot take memory registered on the device's. */
static void test_attach_other_pd(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_dev *d = dev_open();
	struct rdmae_region *r = prepare(d);
	struct rdmae_conn *c = mock_conn(1, NULL);

	(void)state;
	assert_non_null(c);
	assert_ptr_not_equal(c->pd, d->pd);
	assert_int_equal(rdmae_region_attach(r, c, &err), -EXDEV);
	assert_non_null(strstr(err.msg, "PD"));
	assert_non_null(strstr(err.msg, "mock"));
	assert_null(r->conn);
	rdmae_conn_destroy(c);
	rdmae_region_destroy(r);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

/* Before negotiation (and so authentication) ends, nothing is attached. */
static void test_attach_before_negotiated(void **state)
{
	struct rdmae_conn_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_dev *d = dev_open();
	struct rdmae_region *r = prepare(d);
	struct rdmae_conn *c;

	(void)state;
	mock_conn_opts(&o);
	o.dev = d;
	c = mock_conn_bare(&o);
	assert_non_null(c);
	assert_int_equal(mock_conn_setup_device(c, &err), 0);
	assert_ptr_equal(c->pd, d->pd);
	assert_int_equal(rdmae_region_attach(r, c, &err), -ENOTCONN);
	assert_non_null(strstr(err.msg, "not negotiated"));
	assert_null(r->conn);
	rdmae_conn_destroy(c);
	rdmae_region_destroy(r);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

/*
 * Attached, the prepared region is one of the connection's: WRITEs read it
 * with its MR's lkey and its descriptors are the MR's. Before, a WRITE
 * from it is refused.
 */
static void test_attach_write_bufdescs(void **state)
{
	struct rdmae_run run = { 8 * KiB, 0, 4 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_dev *d = dev_open();
	struct rdmae_region *r = prepare(d);
	struct rdmae_conn *c = conn_on(d);
	const struct ibv_mr *mr = mock_region_mr(r, 0);
	struct rdmae_bufdesc bd[1];
	size_t n = 0;

	(void)state;
	assert_int_equal(rdmae_write(c, r, &fixture_peer, &run, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not attached"));
	assert_int_equal(mock_sends(), 0);

	assert_int_equal(rdmae_region_attach(r, c, &err), 0);
	assert_int_equal(rdmae_region_attach(r, c, &err), 0);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, &run, 1, &err), 0);
	assert_int_equal(mock_sends(), 1);
	assert_int_equal(mock_send_at(0)->lkey, mr->lkey);
	assert_int_equal(mock_send_at(0)->addr, (uintptr_t)fixture_mem + 8 * KiB);
	assert_int_equal(rdmae_region_bufdescs(r, bd, 1, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(bd[0].offset, (uintptr_t)fixture_mem);
	assert_int_equal(bd[0].token, mr->rkey);
	assert_int_equal(bd[0].length, sizeof(fixture_mem));
	complete_all(c);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

/*
 * The connection ends (it failed, say): the prepared region stays
 * registered, is detached, and attaches to the next connection, where it
 * works as before. Nothing is registered a second time.
 */
static void test_region_survives_connection(void **state)
{
	struct rdmae_run run = { 0, 0, 4 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_dev *d = dev_open();
	struct rdmae_region *r = prepare(d);
	struct rdmae_conn *c1 = conn_on(d), *c2;
	const struct ibv_mr *mr = mock_region_mr(r, 0);
	unsigned int regs;

	(void)state;
	assert_int_equal(rdmae_region_attach(r, c1, &err), 0);
	assert_int_equal(rdmae_write(c1, r, &fixture_peer, &run, 1, &err), 0);
	/* Attached elsewhere: refused, naming the connection it is attached to. */
	c2 = conn_on(d);
	assert_int_equal(rdmae_region_attach(r, c2, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "mock"));

	rdmae_conn_abort(c1, -ECONNRESET, "test: the peer is gone");
	mock_progress(c1);
	rdmae_conn_destroy(c1);
	assert_null(r->conn);
	assert_ptr_equal(mock_region_mr(r, 0), mr);
	assert_int_equal(mock_live(MOCK_OBJ_PD), 1);

	regs = mock_calls(MOCK_REG_MR);
	assert_int_equal(rdmae_region_attach(r, c2, &err), 0);
	assert_int_equal(rdmae_write(c2, r, &fixture_peer, &run, 1, &err), 0);
	assert_int_equal(mock_send_at(mock_sends() - 1)->lkey, mr->lkey);
	assert_int_equal(mock_calls(MOCK_REG_MR), regs);
	complete_all(c2);

	/* Detached by hand: usable on no connection, still registered. */
	rdmae_region_detach(r);
	assert_null(r->conn);
	assert_int_equal(rdmae_write(c2, r, &fixture_peer, &run, 1, &err), -EINVAL);
	assert_int_equal(rdmae_region_attach(r, c2, &err), 0);

	/* The connection goes first, the region after: both orders end clean. */
	rdmae_conn_destroy(c2);
	rdmae_region_destroy(r);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

struct attacher {
	struct rdmae_region *r;
	struct rdmae_conn *c;
	int ret;
};

static void *attach_thread(void *arg)
{
	struct attacher *a = arg;
	struct rdmae_err err = { 0 };

	a->ret = rdmae_region_attach(a->r, a->c, &err);
	return NULL;
}

/*
 * Two attaches to two connections at once: the one that claims the region
 * first wins, the other is refused even while the first still waits for
 * its connection's lock (no timing: the test holds c1's lock and sees the
 * claim before it tries c2). The region ends on c1's list alone.
 */
static void test_attach_concurrent(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_dev *d = dev_open();
	struct rdmae_region *r = prepare(d);
	struct rdmae_conn *c1 = conn_on(d), *c2 = conn_on(d);
	struct attacher a = { r, c1, -1 };
	pthread_t t;

	(void)state;
	rdmae_conn_lock(c1);
	assert_int_equal(pthread_create(&t, NULL, attach_thread, &a), 0);
	while (atomic_load(&r->claim) != c1)
		sched_yield();
	/* The first attach has claimed r and waits for c1's lock. */
	assert_int_equal(rdmae_region_attach(r, c2, &err), -EBUSY);
	assert_null(c2->regions);
	rdmae_conn_unlock(c1);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(a.ret, 0);
	assert_ptr_equal(r->conn, c1);
	assert_ptr_equal(c1->regions, r);
	assert_null(r->next);
	assert_null(c2->regions);

	/* Refused attaches leave no claim behind: after a detach, c2 takes it. */
	rdmae_region_detach(r);
	assert_null(atomic_load(&r->claim));
	assert_int_equal(rdmae_region_attach(r, c2, &err), 0);
	assert_int_equal(rdmae_region_attach(r, c1, &err), -EBUSY);
	assert_ptr_equal(atomic_load(&r->claim), c2);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c1);
	rdmae_conn_destroy(c2);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

/*
 * A prepared ON_DEMAND region (64 KiB in 16 KiB chunks, its own 32 KiB
 * bound) attached to c, with one page's WRITE in flight pinning chunk 0.
 */
static struct rdmae_region *on_demand_one_write(struct rdmae_dev *d, struct rdmae_conn *c)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .page_size = 4096,
				       .chunk_size = 16 * KiB, .pin_limit = 32 * KiB };
	struct rdmae_run run = { 0, 0, 4 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;

	assert_int_equal(rdmae_region_prepare(&r, d, fixture_mem, 64 * KiB, &o, &err), 0);
	assert_int_equal(rdmae_region_attach(r, c, &err), 0);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, &run, 1, &err), 0);
	assert_int_equal(mock_chunk_refs(r, 0), 1);
	return r;
}

/*
 * A prepared ON_DEMAND region pins under its own bound, not the
 * connection's: rdmae_conn_pinned stays 0, and its chunks are released by
 * the connection's completions like any other.
 */
static void test_prepared_on_demand(void **state)
{
	struct rdmae_dev *d = dev_open();
	struct rdmae_conn *c = conn_on(d);
	struct rdmae_region *r = on_demand_one_write(d, c);

	(void)state;
	assert_int_equal(rdmae_conn_pinned(c), 0);
	complete_all(c);
	assert_int_equal(mock_chunk_refs(r, 0), 0);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

/*
 * Destroying an attached prepared ON_DEMAND region with a chunk's WRITE
 * still in flight: the forget path drops the WR's pin, and the completion
 * that comes later must not touch the freed region (ASan watches).
 */
static void test_destroy_on_demand_inflight(void **state)
{
	struct rdmae_dev *d = dev_open();
	struct rdmae_conn *c = conn_on(d);
	struct rdmae_region *r = on_demand_one_write(d, c);

	(void)state;
	rdmae_region_destroy(r);
	assert_null(c->regions);
	complete_all(c);
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	rdmae_conn_destroy(c);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

/*
 * The connection goes while a prepared ON_DEMAND region it carries still
 * holds a pin for a WR in flight: teardown gives the pin back and detaches
 * the region, which stays its owner's, still usable on the next one.
 */
static void test_conn_teardown_on_demand_pinned(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .page_size = 4096,
				       .chunk_size = 16 * KiB, .pin_limit = 32 * KiB };
	struct rdmae_run run = { 0, 0, 4 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_dev *d = dev_open();
	struct rdmae_conn *c = conn_on(d), *c2;
	struct rdmae_region *r;

	(void)state;
	assert_int_equal(rdmae_region_prepare(&r, d, fixture_mem, 64 * KiB, &o, &err), 0);
	assert_int_equal(rdmae_region_attach(r, c, &err), 0);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, &run, 1, &err), 0);
	assert_int_equal(mock_chunk_refs(r, 0), 1);
	rdmae_conn_destroy(c);
	assert_null(r->conn);
	assert_int_equal(mock_chunk_refs(r, 0), 0);

	c2 = conn_on(d);
	assert_int_equal(rdmae_region_attach(r, c2, &err), 0);
	assert_int_equal(rdmae_write(c2, r, &fixture_peer, &run, 1, &err), 0);
	complete_all(c2);
	assert_int_equal(mock_chunk_refs(r, 0), 0);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c2);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

/*
 * RDMAE_REG_ODP: refused, naming the device, where it has no ODP for RC
 * WRITE (rxe on Linux 6.1); where it has, one explicit ODP MR over the
 * region (never implicit: its length is the region's), remotely writable,
 * nothing populated first, and advertisable once attached. AUTO is not a
 * region's mode.
 */
static void test_odp_region(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ODP, .page_size = 4096,
				       .remote_write = 1 };
	struct rdmae_err err = { 0 };
	struct rdmae_bufdesc bd[1];
	struct rdmae_region *r = NULL;
	struct rdmae_dev *d;
	struct rdmae_conn *c;
	size_t n = 0;
	int acc;

	(void)state;
	d = dev_open();
	assert_false(rdmae_dev_odp_write(d));
	assert_int_equal(rdmae_region_prepare(&r, d, fixture_mem, sizeof(fixture_mem), &o, &err),
			 -EOPNOTSUPP);
	assert_null(r);
	assert_non_null(strstr(err.msg, "device mock0 has no on-demand paging"));
	o.mode = RDMAE_REG_AUTO;
	assert_int_equal(rdmae_region_prepare(&r, d, fixture_mem, sizeof(fixture_mem), &o, &err),
			 -EINVAL);
	rdmae_dev_close(d);

	mock_set_odp_write(true);
	d = dev_open();
	assert_true(rdmae_dev_odp_write(d));
	o.mode = RDMAE_REG_ODP;
	assert_int_equal(rdmae_region_prepare(&r, d, fixture_mem, sizeof(fixture_mem), &o, &err),
			 0);
	acc = mock_mr_access(mock_region_mr(r, 0));
	assert_true(acc & IBV_ACCESS_ON_DEMAND);
	assert_true(acc & IBV_ACCESS_REMOTE_WRITE);
	assert_int_equal(mock_region_mr(r, 0)->length, sizeof(fixture_mem));
	/* The invariant holds as for pinned memory: no rkey before attach. */
	assert_int_equal(rdmae_region_bufdescs(r, bd, 1, &n, &err), -EPERM);
	c = conn_on(d);
	assert_int_equal(rdmae_region_attach(r, c, &err), 0);
	assert_int_equal(rdmae_region_bufdescs(r, bd, 1, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(bd[0].token, mock_region_mr(r, 0)->rkey);
	assert_true(rdmae_dev_odp_write(rdmae_conn_dev(c)));
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	rdmae_dev_close(d);
	fixture_assert_clean();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_prepare_without_connection, fixture_setup),
		cmocka_unit_test_setup(test_dev_open_no_device, fixture_setup),
		cmocka_unit_test_setup(test_conn_on_other_device, fixture_setup),
		cmocka_unit_test_setup(test_attach_other_pd, fixture_setup),
		cmocka_unit_test_setup(test_attach_before_negotiated, fixture_setup),
		cmocka_unit_test_setup(test_attach_write_bufdescs, fixture_setup),
		cmocka_unit_test_setup(test_region_survives_connection, fixture_setup),
		cmocka_unit_test_setup(test_attach_concurrent, fixture_setup),
		cmocka_unit_test_setup(test_prepared_on_demand, fixture_setup),
		cmocka_unit_test_setup(test_destroy_on_demand_inflight, fixture_setup),
		cmocka_unit_test_setup(test_conn_teardown_on_demand_pinned, fixture_setup),
		cmocka_unit_test_setup(test_odp_region, fixture_setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
