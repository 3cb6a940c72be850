/* SPDX-License-Identifier: MIT */
/*
 * Lanes and completions over the mock verbs layer (mock_verbs.h), driven one
 * step at a time with no progress thread: setup failures roll back in
 * reverse order, a QP in error flushes everything without a flushed
 * completion being taken for data or touching freed memory, post failures
 * reach the caller, and the progress thread's steps (CM events, keepalive)
 * fail the connection with the first cause.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"
#include "rdmae_write.h"
#include "mock_fixture.h"
#include "mock_verbs.h"

#define KiB ((uint64_t)1024)

/* Every lane's send queue and send ring empty, and no WRITE bytes counted in flight. */
static void assert_sq_settled(struct rdmae_conn *c)
{
	for (unsigned int i = 0; i < c->nlanes; i++) {
		const struct rdmae_qp *l = &c->lanes[i].qp;

		assert_true(l->sq_done == l->sq_posted);
		assert_true(l->tx_tail == l->tx_head);
		assert_int_equal(l->writes_out, 0);
	}
	assert_int_equal(mock_pace_inflight(c), 0);
	assert_false(mock_conn_any_busy(c));
}

static struct rdmae_data_hdr send_hdr(const struct mock_send *s)
{
	struct rdmae_data_hdr h;
	enum rdmae_wire_field f;

	assert_int_equal(s->opcode, IBV_WR_SEND);
	assert_int_equal(rdmae_data_hdr_decode(s->data, s->ncopy, 0, &h, &f), 0);
	return h;
}

/* ---- 1. setup failures release what came before them, last first ---- */

static void test_device_setup_rollback(void **state)
{
	/* Each step of the device setup failing in turn, and what is created and destroyed. */
	static const struct {
		enum mock_op op;
		int err;
		int code;
		const char *log;
		const char *msg;
	} steps[] = {
		{ MOCK_QUERY_DEVICE, EIO, -EIO, "", "ibv_query_device" },
		{ MOCK_ALLOC_PD, ENOMEM, -ENOMEM, "", "ibv_alloc_pd" },
		{ MOCK_CREATE_COMP_CHANNEL, EMFILE, -EMFILE, "+P -P", "ibv_create_comp_channel" },
		{ MOCK_CREATE_CQ, ENOMEM, -ENOMEM, "+P +H -H -P", "ibv_create_cq" },
		{ MOCK_REQ_NOTIFY_CQ, EINVAL, -EIO, "+P +H +C -C -H -P", "ibv_req_notify_cq" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct rdmae_err err = { 0 };
		struct rdmae_conn *c;
		size_t from;

		mock_reset();
		c = mock_conn_bare(NULL);
		assert_non_null(c);
		from = mock_log_len();
		mock_fail(steps[i].op, 1, steps[i].err);
		assert_int_equal(mock_conn_setup_device(c, &err), steps[i].code);
		assert_int_equal(err.code, steps[i].code);
		assert_non_null(strstr(err.msg, steps[i].msg));
		fixture_assert_log(from, steps[i].log);
		fixture_assert_unwound(from);
		/* Nothing left for the connection's own teardown to free a second time. */
		assert_null(c->pd);
		assert_null(c->comp_ch);
		assert_null(c->cq);
		rdmae_conn_destroy(c);
		fixture_assert_clean();
	}
}

static void test_device_setup_limits(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;

	(void)state;
	/* More completions than the device's CQ holds: refused before anything is made. */
	mock_set_device_limits(16384, 64);
	c = mock_conn_bare(NULL);
	assert_non_null(c);
	assert_int_equal(mock_conn_setup_device(c, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "max_cqe"));
	assert_int_equal(mock_live(MOCK_OBJ_PD), 0);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* A connection's whole life, with no lane: created and destroyed in mirror order. */
static void test_device_setup_and_teardown(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn_bare(NULL);
	assert_non_null(c);
	assert_int_equal(mock_conn_setup_device(c, &err), 0);
	fixture_assert_log(0, "+E +P +H +C");
	rdmae_conn_destroy(c);
	fixture_assert_log(0, "+E +P +H +C -C -H -P -E");
	fixture_assert_unwound(0);
	fixture_assert_clean();
}

static const struct lane_step {
	const char *what;
	enum mock_op op;
	unsigned int nth;
	int err;
	int code;
	const char *log;
	const char *msg;
	unsigned int recvs;		/* receives the QP took before the failure */
} lane_steps[] = {
	{ "receive ring memory", MOCK_MEM_ALLOC, 1, ENOMEM, -ENOMEM, "", "out of memory", 0 },
	{ "receive ring MR", MOCK_REG_MR, 1, EFAULT, -EFAULT, "+R -R", "receive ring", 0 },
	{ "send ring memory", MOCK_MEM_ALLOC, 2, ENOMEM, -ENOMEM, "+R +M -M -R", "out of memory",
	  0 },
	{ "send ring MR", MOCK_REG_MR, 2, EFAULT, -EFAULT, "+R +M +R -R -M -R", "send ring", 0 },
	{ "QP", MOCK_CREATE_QP, 1, EINVAL, -EINVAL, "+R +M +R +M -M -R -M -R", "rdma_create_qp",
	  0 },
	{ "first receive", MOCK_POST_RECV, 1, EINVAL, -EINVAL,
	  "+R +M +R +M +Q -Q -M -R -M -R", "ibv_post_recv", 0 },
	{ "eighth receive", MOCK_POST_RECV, 8, EINVAL, -EINVAL,
	  "+R +M +R +M +Q -Q -M -R -M -R", "ibv_post_recv", 7 },
	{ "last receive", MOCK_POST_RECV, 16, EINVAL, -EINVAL,
	  "+R +M +R +M +Q -Q -M -R -M -R", "ibv_post_recv", 15 },
};

static void test_lane_create_rollback(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(lane_steps) / sizeof(lane_steps[0]); i++) {
		const struct lane_step *st = &lane_steps[i];
		struct rdmae_err err = { 0 };
		struct rdma_cm_id *id;
		struct rdmae_conn *c;
		size_t from;
		int ret;

		mock_reset();
		c = mock_conn_bare(NULL);
		assert_non_null(c);
		assert_int_equal(mock_conn_setup_device(c, &err), 0);
		id = mock_cm_id();
		from = mock_log_len();
		mock_fail(st->op, st->nth, st->err);
		ret = rdmae_lane_create(c, id, 0, &err);
		if (ret != st->code || !strstr(err.msg, st->msg))
			fail_msg("%s failing: %d (%s), want %d and '%s'", st->what, ret, err.msg,
				 st->code, st->msg);
		fixture_assert_log(from, st->log);
		fixture_assert_unwound(from);
		assert_int_equal(mock_recvs_posted(), st->recvs);
		/* The lane is as if never begun: the id may be used again or destroyed. */
		assert_null(c->lanes[0].conn);
		assert_null(c->lanes[0].qp.ibqp);
		assert_null(id->context);
		assert_null(id->qp);
		assert_int_equal(c->nlanes, 0);

		/* And it can be: a second attempt with nothing failing makes the whole lane. */
		ret = rdmae_lane_create(c, id, 0, &err);
		assert_int_equal(ret, 0);
		assert_int_equal(c->nlanes, 1);
		assert_int_equal(mock_qp_recvs_out(c->lanes[0].qp.ibqp), c->lanes[0].qp.nrx);
		rdmae_conn_destroy(c);
		fixture_assert_clean();
	}
}

/*
 * An ibv_reg_mr of a ring refused for the memlock limit (ENOMEM) must name
 * the verb, not read as malloc failing (err_rx used to overwrite any
 * -ENOMEM message).
 */
static void test_lane_reg_enomem_names_verb(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdma_cm_id *id;
	struct rdmae_conn *c;
	bool ok;

	(void)state;
	c = mock_conn_bare(NULL);
	assert_non_null(c);
	assert_int_equal(mock_conn_setup_device(c, &err), 0);
	id = mock_cm_id();
	mock_fail(MOCK_REG_MR, 1, ENOMEM);
	assert_int_equal(rdmae_lane_create(c, id, 0, &err), -ENOMEM);
	ok = strstr(err.msg, "ibv_reg_mr") != NULL;
	rdma_destroy_id(id);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
	assert_true(ok);
}

static void test_lane_create_limits(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdma_cm_id *id;
	struct rdmae_conn *c;
	size_t from;

	(void)state;
	/* 16 sends + 64 WRITEs + 1 > 80: refused before anything is allocated. */
	mock_set_device_limits(80, 1 << 20);
	c = mock_conn_bare(NULL);
	assert_non_null(c);
	assert_int_equal(mock_conn_setup_device(c, &err), 0);
	id = mock_cm_id();
	from = mock_log_len();
	assert_int_equal(rdmae_lane_create(c, id, 0, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "max_qp_wr"));
	fixture_assert_log(from, "");
	rdma_destroy_id(id);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * Teardown order (doc/architecture.md): QPs, user regions' MRs, each lane's
 * rings' MRs and memory and its cm_id (the lane owns it), CQ, PD.
 */
static void test_conn_teardown_order(void **state)
{
	struct rdmae_conn *c;
	size_t from;

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	fixture_pinned(c);	/* left for the connection to deregister */
	from = mock_log_len();
	rdmae_conn_destroy(c);
	fixture_assert_log(from, "-Q -Q -M -M -M -R -R -I -M -M -R -R -I -C -H -P -E");
	fixture_assert_clean();
}

/*
 * A lane that fails while the progress thread runs (a second lane's connect
 * failing, connect.c's err_lane) is destroyed under the lock: its QP goes to
 * error and the drain waits for a marker behind everything it had posted, so
 * the flushed receives are reaped before the rings they point into are freed,
 * and, expected, they fail nothing.
 */
static void test_lane_drain_before_rings_freed(void **state)
{
	struct fixture_progress t = { 0 };
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct ibv_qp *qp;
	size_t from, mods;
	unsigned int drain_left;
	bool to_error = false, draining;

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	qp = mock_lane_qp(c, 1);
	assert_true(mock_qp_recvs_out(qp) > 0);
	fixture_progress_start(&t, c);

	from = mock_log_len();
	mods = mock_modifies();
	pthread_mutex_lock(&c->lanes[1].lock);
	rdmae_qp_drain_locked(&c->lanes[1].qp);
	draining = c->lanes[1].qp.draining;
	drain_left = c->lanes[1].qp.drain_left;
	pthread_mutex_unlock(&c->lanes[1].lock);
	/* The lane's destruction (its drain already done) takes its cm_id with it. */
	rdmae_lane_destroy(&c->lanes[1]);

	/* Both markers came back (no timeout), and nothing of the lane is left to reap. */
	assert_true(draining);
	assert_int_equal(drain_left, 0);
	assert_int_equal(mock_cq_pending(), 0);
	for (size_t i = mods; i < mock_modifies(); i++)
		to_error |= mock_modify_at(i)->qp == qp &&
			    (mock_modify_at(i)->mask & IBV_QP_STATE) &&
			    mock_modify_at(i)->state == IBV_QPS_ERR;
	assert_true(to_error);
	/* The QP goes before its rings' MRs and memory. */
	fixture_assert_log(from, "-Q -M -M -R -R -I");
	/* Flushes while draining are expected: the connection is still up. */
	assert_int_equal(rdmae_conn_error(c, &err), 0);
	assert_int_equal(c->state, RDMAE_ST_CONNECTED);

	fixture_progress_stop(&t);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- 2. a QP in error: flushed completions are consumed, not taken for data ---- */

static void test_flush_after_write_error(void **state)
{
	struct rdmae_run runs[4] = {
		{ 0, 0, 4 * KiB }, { 8 * KiB, 8 * KiB, 4 * KiB },
		{ 16 * KiB, 16 * KiB, 4 * KiB }, { 24 * KiB, 24 * KiB, 4 * KiB },
	};
	struct rdmae_err err = { 0 };
	struct rdmae_lane *l0, *l1;
	struct rdmae_region *r;
	struct rdmae_conn *c;
	unsigned int recvs;
	void *buf;
	size_t len;

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	l0 = &c->lanes[0];
	l1 = &c->lanes[1];
	r = fixture_pinned(c);

	/* A message from the peer arrives before anything goes wrong. */
	assert_int_equal(mock_deliver_msg(c, 0, "before", 6, 0, 0, 0), 0);
	mock_progress(c);
	assert_int_equal(l0->qp.st.recvs, 1);
	assert_int_equal(c->lanes[0].q_bytes, 6);

	/* Our own traffic in flight: a message on lane 0, two WRITEs on each lane. */
	assert_int_equal(rdmae_send(c, "ours", 4, &err), 0);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, runs, 4, &err), 0);
	assert_int_equal(l0->qp.sq_posted, 3);
	assert_int_equal(l1->qp.sq_posted, 2);
	assert_int_equal(mock_pace_inflight(c), 16 * KiB);
	recvs = mock_recvs_posted();

	/* Lane 1's first WRITE fails: its QP flushes, and the transport disconnects lane 0. */
	assert_int_equal(mock_fail_send(mock_lane_qp(c, 1), IBV_WC_RETRY_EXC_ERR), 0);
	mock_progress(c);
	assert_int_equal(mock_qp_state(mock_lane_qp(c, 0)), IBV_QPS_ERR);
	assert_int_equal(mock_cq_pending(), 0);

	/* The cause is the WRITE's error, not one of the flushes that followed it. */
	assert_int_equal(rdmae_conn_error(c, &err), -EIO);
	assert_non_null(strstr(err.msg, "RDMA WRITE on lane 1"));
	assert_non_null(strstr(err.msg, ibv_wc_status_str(IBV_WC_RETRY_EXC_ERR)));

	/* Every WR came back once: lane 0's receive, 3 sends and 16 receives flushed; lane 1's error, 1 + 16. */
	assert_int_equal(l0->qp.st.completions, 1 + 3 + 16);
	assert_int_equal(l1->qp.st.completions, 1 + 1 + 16);
	/* No flushed receive was taken for a message, nor reposted, nor counted against credits. */
	assert_int_equal(l0->qp.st.recvs, 1);
	assert_int_equal(l1->qp.st.recvs, 0);
	assert_int_equal(c->lanes[0].q_bytes, 6);
	assert_int_equal(mock_recvs_posted(), recvs);
	assert_int_equal(l0->cr.recv_posted, l0->qp.nrx);
	assert_int_equal(l1->cr.recv_posted, l1->qp.nrx);
	assert_sq_settled(c);

	/* The message that came first is still delivered; then every call has the WRITE's error. */
	assert_int_equal(rdmae_recv(c, &buf, &len, 0, &err), 0);
	assert_int_equal(len, 6);
	assert_memory_equal(buf, "before", 6);
	free(buf);
	assert_int_equal(rdmae_recv(c, &buf, &len, 0, &err), -EIO);
	assert_int_equal(rdmae_write_flush(c, &err), -EIO);
	assert_int_equal(rdmae_send(c, "after", 5, &err), -EIO);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, runs, 1, &err), -EIO);

	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* The QP errs (the peer is gone) before any CM event says so: the first flush is the cause. */
static void test_flush_before_disconnect_event(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdmae_lane *l;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	l = &c->lanes[0];
	assert_int_equal(rdmae_send(c, "ours", 4, &err), 0);
	mock_qp_error(mock_lane_qp(c, 0));
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, &err), -EIO);
	assert_non_null(strstr(err.msg, "SEND on lane 0"));
	assert_non_null(strstr(err.msg, ibv_wc_status_str(IBV_WC_WR_FLUSH_ERR)));
	assert_int_equal(l->qp.st.completions, 1 + 16);
	assert_int_equal(l->qp.st.recvs, 0);
	assert_null(c->lanes[0].q_head);
	assert_sq_settled(c);

	/* The disconnect event that follows does not replace the first cause. */
	mock_cm_event(l->qp.id, RDMA_CM_EVENT_DISCONNECTED, 0);
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, &err), -EIO);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* Receives parked while the reader lags are not posted, so not flushed; nor reposted after. */
static void test_flush_with_parked_receives(void **state)
{
	struct rdmae_conn_opts o;
	struct rdmae_err err = { 0 };
	uint8_t msg[80] = { 1 };
	struct rdmae_conn *c;
	struct rdmae_lane *l;
	unsigned int recvs;
	void *buf;
	size_t len;

	(void)state;
	mock_conn_opts(&o);
	o.recv_queue_bytes = 100;
	c = mock_conn(1, &o);
	assert_non_null(c);
	l = &c->lanes[0];
	assert_int_equal(mock_deliver_msg(c, 0, msg, sizeof(msg), 0, 0, 0), 0);
	assert_int_equal(mock_deliver_msg(c, 0, msg, sizeof(msg), 0, 0, 0), 0);
	mock_progress(c);
	/* The second message put the queue past its bound: its buffer is held back. */
	assert_non_null(l->parked);
	assert_int_equal(mock_qp_recvs_out(mock_lane_qp(c, 0)), l->qp.nrx - 1);
	recvs = mock_recvs_posted();

	mock_qp_error(mock_lane_qp(c, 0));
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, NULL), -EIO);
	assert_int_equal(l->qp.st.completions, 2 + (l->qp.nrx - 1));
	assert_int_equal(l->qp.st.recvs, 2);
	/* Reading now would repost the parked buffer on a healthy connection; not on this one. */
	assert_int_equal(rdmae_recv(c, &buf, &len, 0, &err), 0);
	free(buf);
	assert_int_equal(rdmae_recv(c, &buf, &len, 0, &err), 0);
	free(buf);
	assert_int_equal(mock_recvs_posted(), recvs);
	assert_int_equal(mock_qp_recvs_out(mock_lane_qp(c, 0)), 0);
	assert_int_equal(mock_cq_pending(), 0);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * A region destroyed while one of its WRITEs is still counted in flight on
 * a failed connection: the flushed completion that comes later must not
 * reach the region's chunk, which is gone (AddressSanitizer would say so).
 */
static void test_flush_after_region_destroyed(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .page_size = 4096,
				       .chunk_size = 16 * KiB };
	struct rdmae_run run = { 0, 0, 4 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	assert_int_equal(rdmae_region_create(&r, c, fixture_mem, 64 * KiB, &o, &err), 0);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, &run, 1, &err), 0);
	assert_int_equal(mock_chunk_refs(r, 0), 1);
	assert_int_equal(rdmae_conn_pinned(c), 16 * KiB);

	rdmae_conn_abort(c, -ECANCELED, "test abort");
	assert_int_equal(mock_cq_pending(), 1 + 16);
	rdmae_region_destroy(r);
	assert_int_equal(rdmae_conn_pinned(c), 0);
	assert_true(mock_lru_empty(c));

	mock_progress(c);
	assert_int_equal(mock_cq_pending(), 0);
	assert_sq_settled(c);
	assert_int_equal(rdmae_conn_error(c, &err), -ECANCELED);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * A drain after the peer read the last message and hung up: the SEND has
 * completed, so the drain succeeds although the connection has failed
 * since (a destination that posted COMMIT_OK must not take the hang-up for
 * a lost commit). With a SEND still pending, the connection's error.
 */
static void test_drain_after_peer_hung_up(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	assert_int_equal(rdmae_send(c, "commit", 6, &err), 0);
	assert_int_equal(mock_complete_sends(mock_lane_qp(c, 0), 1), 0);
	mock_progress(c);
	rdmae_conn_abort(c, -ECONNRESET, "test: the peer read it and hung up");
	assert_int_equal(rdmae_send_drain_lane(c, 0, 0, &err), 0);
	rdmae_conn_destroy(c);
	fixture_assert_clean();

	c = mock_conn(1, NULL);
	assert_non_null(c);
	assert_int_equal(rdmae_send(c, "commit", 6, &err), 0);
	rdmae_conn_abort(c, -ECONNRESET, "test: gone before the SEND completed");
	assert_int_equal(rdmae_send_drain_lane(c, 0, 0, &err), -ECONNRESET);
	assert_non_null(strstr(err.msg, "before the SEND completed"));
	assert_int_equal(mock_complete_sends(mock_lane_qp(c, 0), 1), 0);
	mock_progress(c);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * An abort with a message still queued: DISCONNECTING, the error already
 * sticky but the QP still up, until the message has left; then the
 * progress thread's step disconnects (ERROR, the QP flushed).
 */
static void test_abort_lets_sends_leave(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	void *buf;
	size_t len;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	assert_int_equal(rdmae_send(c, "cancel", 6, &err), 0);
	rdmae_conn_abort(c, -ECANCELED, "test abort after a CANCEL");
	assert_int_equal(c->state, RDMAE_ST_DISCONNECTING);
	assert_true(rdmae_progress_disconnecting(c) > 0);
	assert_int_equal(c->state, RDMAE_ST_DISCONNECTING);
	assert_int_equal(mock_qp_state(mock_lane_qp(c, 0)), IBV_QPS_RTS);
	assert_int_equal(rdmae_recv(c, &buf, &len, 0, &err), -ECANCELED);
	assert_non_null(strstr(err.msg, "after a CANCEL"));

	assert_int_equal(mock_complete_sends(mock_lane_qp(c, 0), 1), 0);
	mock_progress(c);
	assert_int_equal(rdmae_progress_disconnecting(c), -1);
	assert_int_equal(c->state, RDMAE_ST_ERROR);
	assert_int_equal(mock_qp_state(mock_lane_qp(c, 0)), IBV_QPS_ERR);
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, &err), -ECANCELED);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

static void test_cm_events_fail(void **state)
{
	static const struct {
		enum rdma_cm_event_type type;
		int code;
	} evs[] = {
		{ RDMA_CM_EVENT_DISCONNECTED, -ECONNRESET },
		{ RDMA_CM_EVENT_DEVICE_REMOVAL, -ENODEV },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
		struct rdmae_conn *c;

		mock_reset();
		c = mock_conn(2, NULL);
		assert_non_null(c);
		/* An unrelated event changes nothing. */
		mock_cm_event(c->lanes[1].qp.id, RDMA_CM_EVENT_TIMEWAIT_EXIT, 0);
		mock_progress(c);
		assert_int_equal(rdmae_conn_error(c, NULL), 0);
		mock_cm_event(c->lanes[1].qp.id, evs[i].type, 0);
		mock_progress(c);
		assert_int_equal(rdmae_conn_error(c, NULL), evs[i].code);
		/* Failing disconnected every lane: their receives came back flushed and were reaped. */
		assert_int_equal(mock_qp_state(mock_lane_qp(c, 0)), IBV_QPS_ERR);
		mock_progress(c);
		assert_int_equal(mock_cq_pending(), 0);
		assert_int_equal(c->lanes[0].qp.st.recvs + c->lanes[1].qp.st.recvs, 0);
		rdmae_conn_destroy(c);
		fixture_assert_clean();
	}
}

static void test_poll_failure(void **state)
{
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	mock_fail(MOCK_POLL_CQ, 1, EIO);
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, NULL), -EIO);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- 3. a failed post reaches the caller, with what it took given back ---- */

static void test_send_post_refused(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdmae_lane *l;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	l = &c->lanes[0];
	mock_fail_post_send(1, ENOMEM, MOCK_BAD_NONE);
	assert_int_equal(rdmae_send(c, "hello", 5, &err), -ENOMEM);
	assert_int_equal(err.code, -ENOMEM);
	assert_non_null(strstr(err.msg, "ibv_post_send on lane 0"));
	/* The send slot and queue position came back: nothing waits for a completion. */
	assert_int_equal(mock_sends(), 0);
	assert_true(l->qp.tx_head == l->qp.tx_tail);
	assert_true(l->qp.sq_posted == l->qp.sq_done);
	assert_false(rdmae_conn_sends_pending(c));
	/* The connection failed with it. */
	assert_int_equal(rdmae_conn_error(c, NULL), -ENOMEM);
	mock_progress(c);
	assert_sq_settled(c);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* A message in five fragments whose doorbell fails at the third WR: two left, three came back. */
static void test_send_post_fails_mid_chain(void **state)
{
	static uint8_t msg[5000];
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdmae_lane *l;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	l = &c->lanes[0];
	mock_fail_post_send(1, EINVAL, 2);
	assert_int_equal(rdmae_send(c, msg, sizeof(msg), &err), -EINVAL);
	assert_int_equal(mock_sends(), 2);
	assert_int_equal(l->qp.sq_posted - l->qp.sq_done, 2);
	assert_int_equal(l->qp.tx_head - l->qp.tx_tail, 2);
	/* The two that left are flushed by the disconnect, and retire their slots. */
	mock_progress(c);
	assert_sq_settled(c);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* A message long enough to fill a chain: the doorbell rung in the middle fails. */
static void test_send_post_fails_at_full_chain(void **state)
{
	static uint8_t msg[40 * 1000];
	struct rdmae_conn_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;

	(void)state;
	mock_conn_opts(&o);
	o.credits = 64;
	c = mock_conn(1, &o);
	assert_non_null(c);
	mock_fail_post_send(1, ENOMEM, MOCK_BAD_NONE);
	assert_int_equal(rdmae_send(c, msg, sizeof(msg), &err), -ENOMEM);
	assert_non_null(strstr(err.msg, "ibv_post_send"));
	/* No fragment after the failed doorbell was queued or posted. */
	assert_int_equal(mock_calls(MOCK_POST_SEND), 1);
	assert_int_equal(c->lanes[0].qp.sq_posted, 0);
	mock_progress(c);
	assert_sq_settled(c);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

static void test_write_post_fails(void **state)
{
	struct rdmae_run runs[4] = {
		{ 0, 0, 4 * KiB }, { 8 * KiB, 8 * KiB, 4 * KiB },
		{ 16 * KiB, 16 * KiB, 4 * KiB }, { 24 * KiB, 24 * KiB, 4 * KiB },
	};
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	r = fixture_pinned(c);
	/* Lane 0's doorbell goes, lane 1's is refused. */
	mock_fail_post_send(2, ENOMEM, MOCK_BAD_NONE);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, runs, 4, &err), -ENOMEM);
	assert_int_equal(err.code, -ENOMEM);
	assert_non_null(strstr(err.msg, "ibv_post_send on lane 1"));
	assert_int_equal(c->lanes[1].qp.writes_out, 0);
	assert_true(c->lanes[1].qp.sq_posted == c->lanes[1].qp.sq_done);
	/* Lane 0's two WRITEs left and stay counted until their flushed completions come. */
	assert_int_equal(c->lanes[0].qp.writes_out, 2);
	assert_int_equal(mock_pace_inflight(c), 8 * KiB);
	mock_progress(c);
	assert_sq_settled(c);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* On-demand pins taken for WRITEs that never reached the QP are given back. */
static void test_write_post_fails_releases_pins(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .page_size = 4096,
				       .chunk_size = 16 * KiB };
	struct rdmae_run runs[2] = { { 0, 0, 4 * KiB }, { 16 * KiB, 16 * KiB, 4 * KiB } };
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	assert_int_equal(rdmae_region_create(&r, c, fixture_mem, 64 * KiB, &o, &err), 0);
	mock_fail_post_send(1, ENOMEM, MOCK_BAD_NONE);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, runs, 2, &err), -ENOMEM);
	assert_int_equal(mock_chunk_refs(r, 0), 0);
	assert_int_equal(mock_chunk_refs(r, 1), 0);
	/* Still pinned, but idle: the cache may unpin them. */
	assert_int_equal(rdmae_conn_pinned(c), 32 * KiB);
	{
		size_t lru[4];

		assert_int_equal(mock_lru(c, lru, 4), 2);
	}
	assert_sq_settled(c);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

static void test_fence_post_fails(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdmae_data_hdr h;
	uint32_t seq = 0;

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	mock_fail_post_send(2, ENOMEM, MOCK_BAD_NONE);
	assert_int_equal(rdmae_fence(c, &seq, &err), -ENOMEM);
	assert_int_equal(err.code, -ENOMEM);
	assert_non_null(strstr(err.msg, "lane 1"));
	assert_int_equal(seq, 1);
	/* Lane 0's fence left; lane 1's did not, and its slot came back. */
	assert_int_equal(mock_sends(), 1);
	h = send_hdr(mock_send_at(0));
	assert_int_equal(mock_send_at(0)->lane, 0);
	assert_true(h.flags & RDMAE_FLAG_FENCE);
	assert_int_equal(h.fence_seq, 1);
	assert_true(c->lanes[1].qp.tx_head == c->lanes[1].qp.tx_tail);
	mock_progress(c);
	assert_sq_settled(c);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* A receive that cannot be reposted fails the connection; its message is still delivered. */
static void test_repost_fails(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	void *buf;
	size_t len;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	assert_int_equal(mock_deliver_msg(c, 0, "last words", 10, 0, 0, 0), 0);
	mock_fail(MOCK_POST_RECV, 1, ENOMEM);
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, &err), -ENOMEM);
	assert_non_null(strstr(err.msg, "ibv_post_recv on lane 0"));
	assert_int_equal(rdmae_recv(c, &buf, &len, 0, &err), 0);
	assert_int_equal(len, 10);
	free(buf);
	assert_int_equal(rdmae_recv(c, &buf, &len, 0, &err), -ENOMEM);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- the progress thread's other steps ---- */

/* The peer's grant, carried by a message, is what lets us send again; credits add up. */
static void test_credits_round_trip(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdmae_lane *l;
	void *buf;
	size_t len;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	l = &c->lanes[0];
	assert_int_equal(l->cr.send, 16);
	assert_int_equal(rdmae_send(c, "a", 1, &err), 0);
	assert_int_equal(l->cr.send, 15);
	/* Our SEND completes: its slot comes back, the credit does not (the peer holds the buffer). */
	assert_int_equal(mock_complete_sends(mock_lane_qp(c, 0), 1), 0);
	mock_progress(c);
	assert_true(l->qp.tx_tail == l->qp.tx_head);
	assert_int_equal(l->cr.send, 15);
	/* The peer's message grants one back and consumes one of our receives, which is reposted. */
	assert_int_equal(mock_deliver_msg(c, 0, "b", 1, 1, 0, 0), 0);
	mock_progress(c);
	assert_int_equal(l->cr.send, 16);
	assert_int_equal(l->cr.recv_posted, l->qp.nrx);
	assert_int_equal(l->cr.to_grant, 1);
	assert_int_equal(mock_qp_recvs_out(mock_lane_qp(c, 0)), l->qp.nrx);
	assert_int_equal(rdmae_recv(c, &buf, &len, 0, &err), 0);
	free(buf);
	/* Our next message carries the grant we owe. */
	assert_int_equal(rdmae_send(c, "c", 1, &err), 0);
	assert_int_equal(send_hdr(mock_send_at(mock_sends() - 1)).credits_granted, 1);
	assert_int_equal(l->cr.to_grant, 0);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * Keepalive by state, not by time: an idle connection sends a probe asking
 * for a reply; a WRITE completing answers it; a probe left unanswered past
 * its deadline fails the connection.
 */
static void test_keepalive(void **state)
{
	struct rdmae_run run = { 0, 0, 4 * KiB };
	struct rdmae_conn_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;
	struct rdmae_conn *c;
	struct rdmae_data_hdr h;

	(void)state;
	mock_conn_opts(&o);
	o.keepalive_ms = 1000;
	o.keepalive_timeout_ms = 500;
	c = mock_conn(1, &o);
	assert_non_null(c);
	r = fixture_pinned(c);

	/*
	 * Heard from just now: no probe, and the next look is due within the
	 * idle period. Stamped here, not left to mock_conn's stamp: on a loaded
	 * machine a second may pass between the two.
	 */
	atomic_store_explicit(&c->last_heard_ns, rdmae_now_ns(), memory_order_relaxed);
	assert_in_range(mock_keepalive(c), 1, 1001);
	assert_int_equal(mock_sends(), 0);

	/* Idle for long: a probe goes. */
	c->last_heard_ns -= 2000 * 1000000ull;
	mock_keepalive(c);
	assert_int_equal(mock_sends(), 1);
	h = send_hdr(mock_send_at(0));
	assert_true(h.flags & RDMAE_FLAG_RESPONSE_REQUESTED);
	assert_int_not_equal(c->probe_ns, 0);

	/* A WRITE of ours completes: the peer's QP is alive, which answers the probe. */
	assert_int_equal(rdmae_write(c, r, &fixture_peer, &run, 1, &err), 0);
	assert_int_equal(mock_complete_sends(mock_lane_qp(c, 0), 2), 0);
	mock_progress(c);
	assert_int_equal(c->probe_ns, 0);

	/* A probe unanswered past its deadline fails the connection. */
	c->last_heard_ns -= 2000 * 1000000ull;
	mock_keepalive(c);
	assert_int_not_equal(c->probe_ns, 0);
	c->probe_ns -= 600 * 1000000ull;
	mock_keepalive(c);
	assert_int_equal(rdmae_conn_error(c, &err), -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "keepalive"));
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * Keepalive without a credit: a peer that withholds credits (its reader is
 * behind) gets a zero-length RDMA WRITE instead of a message. Its NIC's
 * acknowledgement answers it; retry exhaustion fails the connection with
 * the probe named.
 */
static void test_keepalive_no_credit(void **state)
{
	struct rdmae_conn_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	const struct mock_send *ms;

	(void)state;
	mock_conn_opts(&o);
	o.keepalive_ms = 1000;
	o.keepalive_timeout_ms = 500;
	c = mock_conn(1, &o);
	assert_non_null(c);
	c->lanes[0].cr.send = 0;

	c->last_heard_ns -= 2000 * 1000000ull;
	mock_keepalive(c);
	assert_int_equal(mock_sends(), 1);
	ms = mock_send_at(0);
	assert_int_equal(ms->opcode, IBV_WR_RDMA_WRITE);
	assert_int_equal(ms->length, 0);
	assert_true(ms->send_flags & IBV_SEND_SIGNALED);
	assert_int_not_equal(c->probe_ns, 0);

	/* Acknowledged by the peer's NIC: heard from, and no message went. */
	assert_int_equal(mock_complete_sends(mock_lane_qp(c, 0), 1), 0);
	mock_progress(c);
	assert_int_equal(c->probe_ns, 0);
	assert_int_equal(rdmae_conn_error(c, NULL), 0);

	/* The peer's host is gone: retries run out and the error names the probe. */
	c->last_heard_ns -= 2000 * 1000000ull;
	mock_keepalive(c);
	assert_int_equal(mock_sends(), 2);
	assert_int_equal(mock_fail_send(mock_lane_qp(c, 0), IBV_WC_RETRY_EXC_ERR), 0);
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, &err), -EIO);
	assert_non_null(strstr(err.msg, "keepalive probe"));
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* The peer's probe is answered by housekeeping with an empty message, at once. */
static void test_probe_answered(void **state)
{
	struct rdmae_conn *c;
	struct rdmae_data_hdr h;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	assert_int_equal(mock_deliver_msg(c, 0, NULL, 0, 0, RDMAE_FLAG_RESPONSE_REQUESTED, 0), 0);
	mock_progress(c);
	assert_int_equal(mock_sends(), 1);
	h = send_hdr(mock_send_at(0));
	assert_int_equal(h.data_length, 0);
	assert_int_equal(h.credits_granted, 1);
	assert_false(c->lanes[0].reply_owed);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* Fences arrive per lane; the wait returns once every lane has seen the sequence number. */
static void test_fence_received(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	assert_int_equal(mock_deliver_msg(c, 1, NULL, 0, 0, RDMAE_FLAG_FENCE, 1), 0);
	mock_progress(c);
	assert_int_equal(c->lanes[1].fence_seen, 1);
	assert_int_equal(c->lanes[0].fence_seen, 0);
	assert_int_equal(mock_deliver_msg(c, 0, NULL, 0, 0, RDMAE_FLAG_FENCE, 1), 0);
	mock_progress(c);
	assert_int_equal(rdmae_fence_wait(c, 1, 0, &err), 0);
	/*
	 * A payload on lane 1 is lane 1's message (it used to be a protocol
	 * violation, when only lane 0 carried messages): it never reaches
	 * lane 0's queue.
	 */
	assert_int_equal(mock_deliver_msg(c, 1, "x", 1, 0, 0, 0), 0);
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, &err), 0);
	assert_null(c->lanes[0].q_head);
	assert_non_null(c->lanes[1].q_head);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* A peer that grants more than our send side can ever hold breaks the credit rules. */
static void test_peer_over_grant(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	assert_int_equal(mock_deliver_msg(c, 0, "ok", 2, 0, 0, 0), 0);
	assert_int_equal(mock_deliver_msg(c, 0, "bad", 3, RDMAE_MAX_CREDITS, 0, 0), 0);
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "credit rules"));
	/* The message before it is delivered; the offending one is not. */
	assert_int_equal(c->lanes[0].q_bytes, 2);
	assert_int_equal(c->lanes[0].cr.send, c->neg.send_credits);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* Revoking remote write: one modify per QP clearing its access; a QP in error counts as revoked. */
static void test_revoke_remote_write(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	assert_int_equal(rdmae_conn_revoke_remote_write(c, &err), 0);
	assert_int_equal(mock_modifies(), 2);
	for (size_t i = 0; i < 2; i++) {
		const struct mock_modify *m = mock_modify_at(i);

		assert_ptr_equal(m->qp, mock_lane_qp(c, (unsigned int)i));
		assert_int_equal(m->mask, IBV_QP_ACCESS_FLAGS);
		assert_int_equal(m->access, 0);
	}
	/* Refused on a live QP: an error naming the lane. */
	mock_fail(MOCK_MODIFY_QP, 2, EPERM);
	assert_int_equal(rdmae_conn_revoke_remote_write(c, &err), -EPERM);
	assert_non_null(strstr(err.msg, "lane 1"));
	/* Lane 1 in error takes no modify, and accepts no WRITE either. */
	mock_qp_error(mock_lane_qp(c, 1));
	assert_int_equal(rdmae_conn_revoke_remote_write(c, &err), 0);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_device_setup_rollback, fixture_setup),
		cmocka_unit_test_setup(test_device_setup_limits, fixture_setup),
		cmocka_unit_test_setup(test_device_setup_and_teardown, fixture_setup),
		cmocka_unit_test_setup(test_lane_create_rollback, fixture_setup),
		cmocka_unit_test_setup(test_lane_create_limits, fixture_setup),
		cmocka_unit_test_setup(test_lane_reg_enomem_names_verb, fixture_setup),
		cmocka_unit_test_setup(test_conn_teardown_order, fixture_setup),
		cmocka_unit_test_setup(test_lane_drain_before_rings_freed, fixture_setup),
		cmocka_unit_test_setup(test_flush_after_write_error, fixture_setup),
		cmocka_unit_test_setup(test_flush_before_disconnect_event, fixture_setup),
		cmocka_unit_test_setup(test_flush_with_parked_receives, fixture_setup),
		cmocka_unit_test_setup(test_flush_after_region_destroyed, fixture_setup),
		cmocka_unit_test_setup(test_abort_lets_sends_leave, fixture_setup),
		cmocka_unit_test_setup(test_cm_events_fail, fixture_setup),
		cmocka_unit_test_setup(test_poll_failure, fixture_setup),
		cmocka_unit_test_setup(test_send_post_refused, fixture_setup),
		cmocka_unit_test_setup(test_send_post_fails_mid_chain, fixture_setup),
		cmocka_unit_test_setup(test_send_post_fails_at_full_chain, fixture_setup),
		cmocka_unit_test_setup(test_write_post_fails, fixture_setup),
		cmocka_unit_test_setup(test_write_post_fails_releases_pins, fixture_setup),
		cmocka_unit_test_setup(test_fence_post_fails, fixture_setup),
		cmocka_unit_test_setup(test_repost_fails, fixture_setup),
		cmocka_unit_test_setup(test_credits_round_trip, fixture_setup),
		cmocka_unit_test_setup(test_keepalive, fixture_setup),
		cmocka_unit_test_setup(test_keepalive_no_credit, fixture_setup),
		cmocka_unit_test_setup(test_probe_answered, fixture_setup),
		cmocka_unit_test_setup(test_fence_received, fixture_setup),
		cmocka_unit_test_setup(test_peer_over_grant, fixture_setup),
		cmocka_unit_test_setup(test_revoke_remote_write, fixture_setup),
		cmocka_unit_test_setup(test_drain_after_peer_hung_up, fixture_setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
