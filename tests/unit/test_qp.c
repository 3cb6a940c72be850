/* SPDX-License-Identifier: MIT */
/*
 * qp.c alone (SPDK style: one file under test, its neighbours stubbed):
 * linked with the mock verbs, rdma/time.c and rdma/err.c and nothing else
 * of the transport, and owned by a stub that records what the ops table
 * tells it. No connection exists here, which is the point: what a qp
 * reports upward goes through its ops, or not at all.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "qp.h"
#include "mock_verbs.h"

/* The stub owner: what each op was told. */
struct owner {
	rdmae_mutex_t lock;
	struct ibv_pd *pd;
	struct ibv_comp_channel *ch;
	struct ibv_cq *cq;
	struct ibv_device_attr dev;
	struct rdmae_qp qp;
	unsigned int recvs, retired, sent, forgot, released, errors, flushed_errors, waits;
	uint64_t retired_bytes, forgot_bytes;
	uint32_t last_len;
	uint8_t last_data[64];
	enum rdmae_wr_kind last_sent;
	char last_error[200];
	uint64_t delivered;
};

static void on_recv(void *owner, struct rdmae_qp *qp, struct rdmae_rxbuf *rb, uint32_t len)
{
	struct owner *o = owner;

	o->recvs++;
	o->last_len = len;
	memcpy(o->last_data, rb->data, len < sizeof(o->last_data) ? len : sizeof(o->last_data));
	rdmae_qp_post_recv(qp, rb);
}

static void on_retired(void *owner, struct rdmae_qp *qp, uint64_t bytes, uint64_t now_ns)
{
	struct owner *o = owner;

	(void)qp;
	(void)now_ns;
	o->retired++;
	o->retired_bytes += bytes;
}

static void on_sent(void *owner, struct rdmae_qp *qp, const struct rdmae_wrslot *s,
		    enum rdmae_wr_kind kind, uint64_t now_ns)
{
	struct owner *o = owner;

	(void)qp;
	(void)s;
	(void)now_ns;
	o->sent++;
	o->last_sent = kind;
}

static void on_forget(void *owner, struct rdmae_qp *qp, uint64_t bytes)
{
	struct owner *o = owner;

	(void)qp;
	o->forgot++;
	o->forgot_bytes += bytes;
}

static void on_release(void *owner, struct rdmae_qp *qp, struct rdmae_wrslot *s)
{
	struct owner *o = owner;

	(void)qp;
	assert_non_null(s->chunk);
	o->released++;
}

static void on_error(void *owner, struct rdmae_qp *qp, int code, bool flushed, const char *what)
{
	struct owner *o = owner;

	(void)qp;
	(void)code;
	if (flushed) {
		o->flushed_errors++;
		return;
	}
	o->errors++;
	snprintf(o->last_error, sizeof(o->last_error), "%s", what);
}

/* Reap the CQ, calling every completion's done, which takes the owner's lock itself. */
static void reap(struct owner *o) RDMAE_EXCLUDES(o->lock)
{
	struct ibv_wc wc[16];
	int n;

	while ((n = ibv_poll_cq(o->cq, 16, wc)) > 0)
		for (int i = 0; i < n; i++) {
			struct rdmae_cqe *cqe = (struct rdmae_cqe *)(uintptr_t)wc[i].wr_id;

			cqe->done(cqe, &wc[i]);
		}
}

/* The drain's wait: this owner is its own reaper. */
static int wait_reaping(void *owner, struct rdmae_qp *qp, uint64_t deadline_ns)
{
	struct owner *o = owner;

	(void)qp;
	(void)deadline_ns;
	o->waits++;
	/* Called with the lock held (the drain's); released while reaping, as a cond wait would. */
	pthread_mutex_unlock(&o->lock);
	reap(o);
	pthread_mutex_lock(&o->lock);
	return o->waits > 100 ? -ETIMEDOUT : 0;
}

static const struct rdmae_qp_ops ops = {
	.on_recv = on_recv,
	.on_retired = on_retired,
	.on_sent = on_sent,
	.on_forget = on_forget,
	.on_release = on_release,
	.on_error = on_error,
	.wait = wait_reaping,
};

static struct owner *owner_new(void)
{
	struct owner *o = calloc(1, sizeof(*o));
	struct rdmae_err err = { 0 };
	struct rdmae_qp_attr a;

	assert_non_null(o);
	pthread_mutex_init(&o->lock, NULL);
	o->pd = ibv_alloc_pd(mock_context());
	o->ch = ibv_create_comp_channel(mock_context());
	o->cq = ibv_create_cq(mock_context(), 256, NULL, o->ch, 0);
	assert_non_null(o->cq);
	assert_int_equal(ibv_query_device(mock_context(), &o->dev), 0);
	a = (struct rdmae_qp_attr){ .pd = o->pd, .cq = o->cq, .dev = &o->dev, .dev_name = "mock",
				    .numa_node = -1, .nrx = 8, .rx_size = 256, .ntx = 8,
				    .tx_size = 256, .writes_in_flight = 16, .idx = 0,
				    .lock = &o->lock, .ops = &ops, .owner = o,
				    .delivered = &o->delivered };
	assert_int_equal(rdmae_qp_create(&o->qp, mock_cm_id(), &a, &err), 0);
	/* The peer side is there: the QP may send. */
	mock_qp_set_state(o->qp.ibqp, IBV_QPS_RTS);
	return o;
}

static void owner_free(struct owner *o)
{
	rdmae_qp_destroy(&o->qp);
	ibv_destroy_cq(o->cq);
	ibv_destroy_comp_channel(o->ch);
	ibv_dealloc_pd(o->pd);
	pthread_mutex_destroy(&o->lock);
	free(o);
}

static int setup(void **state)
{
	(void)state;
	mock_reset();
	return 0;
}

static void assert_clean(void)
{
	char why[256];

	if (!mock_clean(why, sizeof(why)))
		fail_msg("%s", why);
}

/* Creation posts the whole receive ring; a receive goes to on_recv, and nowhere else. */
static void test_recv_goes_to_owner(void **state)
{
	struct owner *o;

	(void)state;
	o = owner_new();
	assert_int_equal(mock_qp_recvs_out(o->qp.ibqp), 8);
	assert_int_equal(mock_deliver(o->qp.ibqp, "hello", 5), 0);
	reap(o);
	assert_int_equal(o->recvs, 1);
	assert_int_equal(o->last_len, 5);
	assert_memory_equal(o->last_data, "hello", 5);
	assert_int_equal(o->qp.st.recvs, 1);
	assert_int_equal(mock_qp_recvs_out(o->qp.ibqp), 8);
	owner_free(o);
	assert_clean();
}

/* A SEND: one slot and one position, back once it completes, told as retired and sent. */
static void test_send_retires(void **state)
{
	struct owner *o;

	(void)state;
	o = owner_new();
	pthread_mutex_lock(&o->lock);
	assert_int_equal(rdmae_qp_send_raw_locked(&o->qp, "abc", 3), 0);
	assert_true(rdmae_qp_busy_locked(&o->qp));
	assert_true(rdmae_qp_sends_pending_locked(&o->qp));
	pthread_mutex_unlock(&o->lock);
	assert_int_equal(mock_sends(), 1);
	assert_int_equal(mock_send_at(0)->opcode, IBV_WR_SEND);
	assert_memory_equal(mock_send_at(0)->data, "abc", 3);
	assert_int_equal(mock_complete_sends(o->qp.ibqp, 1), 0);
	reap(o);
	pthread_mutex_lock(&o->lock);
	assert_false(rdmae_qp_busy_locked(&o->qp));
	assert_false(rdmae_qp_sends_pending_locked(&o->qp));
	pthread_mutex_unlock(&o->lock);
	assert_int_equal(o->retired, 1);
	assert_int_equal(o->retired_bytes, 0);
	assert_int_equal(o->sent, 1);
	assert_int_equal(o->last_sent, RDMAE_WR_SEND);
	assert_int_equal(o->errors, 0);
	owner_free(o);
	assert_clean();
}

/*
 * A refused doorbell: every WR of it forgotten at once (their bytes
 * summed), a WR holding a chunk released, positions and slots back, and
 * the owner told why.
 */
static void test_post_failure_forgets(void **state)
{
	struct ibv_send_wr *wr;
	struct ibv_sge *sge;
	struct owner *o;

	(void)state;
	o = owner_new();
	mock_fail_post_send(1, ENOMEM, MOCK_BAD_NONE);
	pthread_mutex_lock(&o->lock);
	for (int i = 0; i < 3; i++) {
		struct rdmae_wrslot *s = rdmae_qp_sq_take_locked(&o->qp, RDMAE_WR_WRITE, &wr, &sge);

		wr->opcode = IBV_WR_RDMA_WRITE;
		s->mark.len = 100;
		/* Any non-NULL pointer: the qp only hands it back. */
		s->chunk = i == 1 ? (struct rdmae_chunk *)(void *)o : NULL;
		o->qp.writes_out++;
	}
	assert_int_equal(rdmae_qp_post_chain_locked(&o->qp), -ENOMEM);
	assert_false(rdmae_qp_busy_locked(&o->qp));
	pthread_mutex_unlock(&o->lock);
	assert_int_equal(o->forgot, 1);
	assert_int_equal(o->forgot_bytes, 300);
	assert_int_equal(o->released, 1);
	assert_int_equal(o->qp.writes_out, 0);
	assert_int_equal(o->errors, 1);
	assert_non_null(strstr(o->last_error, "ibv_post_send on lane 0"));
	owner_free(o);
	assert_clean();
}

/*
 * A failed SEND is reported once as itself; the flushes that follow are
 * reported as flushes, for the owner to weigh. Destroying the QP with WRs
 * still in flight forgets them, and takes the cm_id with it.
 */
static void test_error_flush_and_destroy(void **state)
{
	struct owner *o;

	(void)state;
	o = owner_new();
	pthread_mutex_lock(&o->lock);
	assert_int_equal(rdmae_qp_send_raw_locked(&o->qp, "a", 1), 0);
	assert_int_equal(rdmae_qp_send_raw_locked(&o->qp, "b", 1), 0);
	pthread_mutex_unlock(&o->lock);
	assert_int_equal(mock_fail_send(o->qp.ibqp, IBV_WC_RETRY_EXC_ERR), 0);
	reap(o);
	assert_int_equal(o->errors, 1);
	assert_non_null(strstr(o->last_error, "SEND on lane 0 failed"));
	/* The second SEND and the 8 receives were flushed. */
	assert_int_equal(o->flushed_errors, 1 + 8);
	assert_int_equal(o->retired, 2);
	assert_int_equal(o->sent, 0);

	pthread_mutex_lock(&o->lock);
	assert_int_equal(rdmae_qp_probe_write_locked(&o->qp), 0);
	pthread_mutex_unlock(&o->lock);
	assert_int_equal(mock_live(MOCK_OBJ_CM_ID), 1);
	rdmae_qp_destroy_qp(&o->qp);
	assert_int_equal(o->forgot, 1);
	rdmae_qp_destroy(&o->qp);
	assert_int_equal(mock_live(MOCK_OBJ_CM_ID), 0);
	o->qp.id = NULL;
	owner_free(o);
	assert_clean();
}

/* The drain: markers behind everything, reaped through the owner's wait; flushes are not errors. */
static void test_drain(void **state)
{
	struct owner *o;

	(void)state;
	o = owner_new();
	pthread_mutex_lock(&o->lock);
	assert_int_equal(rdmae_qp_send_raw_locked(&o->qp, "x", 1), 0);
	rdmae_qp_drain_locked(&o->qp);
	assert_true(o->qp.draining);
	assert_int_equal(o->qp.drain_left, 0);
	pthread_mutex_unlock(&o->lock);
	assert_true(o->waits >= 1);
	assert_int_equal(o->errors + o->flushed_errors, 0);
	assert_int_equal(o->retired, 1);
	assert_int_equal(mock_cq_pending(), 0);
	owner_free(o);
	assert_clean();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_recv_goes_to_owner, setup),
		cmocka_unit_test_setup(test_send_retires, setup),
		cmocka_unit_test_setup(test_post_failure_forgets, setup),
		cmocka_unit_test_setup(test_error_flush_and_destroy, setup),
		cmocka_unit_test_setup(test_drain, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
