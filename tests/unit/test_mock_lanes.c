/* SPDX-License-Identifier: MIT */
/*
 * Lane-addressed messages and transfers over the mock verbs layer
 * (mock_verbs.h): rdmae_send_lane/_recv_lane on a lane other than 0,
 * rdmae_write_lane landing every WR on its lane's QP with a following SEND
 * behind them, two threads each driving its own lane, and a failure waking
 * a caller blocked on a lane.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"
#include "rdmae_write.h"
#include "mock_fixture.h"
#include "mock_verbs.h"

#define KiB ((uint64_t)1024)

static struct rdmae_data_hdr send_hdr(const struct mock_send *s)
{
	struct rdmae_data_hdr h;
	enum rdmae_wire_field f;

	assert_int_equal(s->opcode, IBV_WR_SEND);
	assert_int_equal(rdmae_data_hdr_decode(s->data, s->ncopy, 0, &h, &f), 0);
	return h;
}

/* Complete every send WR the mock still holds, then reap: credits and slots come back. */
static void complete_all(struct rdmae_conn *c)
{
	for (unsigned int i = 0; i < rdmae_conn_lanes(c); i++) {
		struct ibv_qp *qp = mock_lane_qp(c, i);

		assert_int_equal(mock_complete_sends(qp, mock_qp_sends_out(qp)), 0);
	}
	mock_progress(c);
}

/* A message on lane 2 goes out on lane 2's QP; one arriving there is lane 2's, not lane 0's. */
static void test_send_recv_lane(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdmae_data_hdr h;
	void *buf;
	size_t len;

	(void)state;
	c = mock_conn(3, NULL);
	assert_non_null(c);
	assert_int_equal(rdmae_conn_lanes(c), 3);

	assert_int_equal(rdmae_send_lane(c, 2, "on two", 6, 1000, &err), 0);
	assert_int_equal(mock_sends(), 1);
	assert_int_equal(mock_send_at(0)->lane, 2);
	h = send_hdr(mock_send_at(0));
	assert_int_equal(h.data_length, 6);
	assert_memory_equal(mock_send_at(0)->data + h.data_offset, "on two", 6);

	assert_int_equal(mock_deliver_msg(c, 2, "back", 4, 0, 0, 0), 0);
	mock_progress(c);
	assert_int_equal(rdmae_recv(c, &buf, &len, 0, &err), -ETIMEDOUT);
	assert_int_equal(rdmae_recv_lane(c, 1, &buf, &len, 0, &err), -ETIMEDOUT);
	assert_int_equal(rdmae_recv_lane(c, 2, &buf, &len, 0, &err), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "back", 4);
	free(buf);

	/* A lane the connection does not have is the caller's mistake, not the connection's. */
	assert_int_equal(rdmae_send_lane(c, 3, "x", 1, 0, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "no lane 3"));
	assert_int_equal(rdmae_recv_lane(c, 7, &buf, &len, 0, &err), -EINVAL);
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	complete_all(c);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* A message fragmented on lane 1 is reassembled on lane 1 alone, while lane 0 carries its own. */
static void test_lane_streams_apart(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	void *buf;
	size_t len;

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	/* Lane 1: the first fragment of "abcdef"; lane 0: a whole message in between. */
	{
		const uint8_t abc[3] = { 'a', 'b', 'c' };
		uint8_t m[RDMAE_DATA_HDR_SIZE + 3];
		struct rdmae_data_hdr h = { .credits_requested = 16, .data_offset = RDMAE_DATA_HDR_SIZE,
					    .data_length = 3, .remaining_data_length = 3 };

		rdmae_data_hdr_encode(m, &h);
		memcpy(m + RDMAE_DATA_HDR_SIZE, abc, sizeof(abc));
		assert_int_equal(mock_deliver(mock_lane_qp(c, 1), m, sizeof(m)), 0);
	}
	assert_int_equal(mock_deliver_msg(c, 0, "zero", 4, 0, 0, 0), 0);
	assert_int_equal(mock_deliver_msg(c, 1, "def", 3, 0, 0, 0), 0);
	mock_progress(c);
	assert_int_equal(rdmae_conn_error(c, &err), 0);
	assert_int_equal(rdmae_recv_lane(c, 0, &buf, &len, 0, &err), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "zero", 4);
	free(buf);
	assert_int_equal(rdmae_recv_lane(c, 1, &buf, &len, 0, &err), 0);
	assert_int_equal(len, 6);
	assert_memory_equal(buf, "abcdef", 6);
	free(buf);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * rdmae_write_lane puts every WR on the named lane's QP, and a SEND on the
 * same lane after it is posted behind them: what RC ordering needs for the
 * peer to find the data placed once the message arrives.
 */
static void test_write_lane_then_send(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL, .page_size = 4096,
				       .local_write = 1 };
	struct rdmae_run runs[3] = {
		{ 0, 0, 4 * KiB }, { 16 * KiB, 16 * KiB, 200 * KiB }, { 240 * KiB, 240 * KiB, 8 * KiB },
	};
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;
	struct rdmae_conn *c;
	size_t i, n;

	(void)state;
	c = mock_conn(3, NULL);
	assert_non_null(c);
	r = fixture_region(c, fixture_mem, sizeof(fixture_mem), &o);
	assert_non_null(r);
	assert_int_equal(rdmae_write_lane(c, 1, r, &fixture_peer, runs, 3, &err), 0);
	n = mock_sends();
	/* 4 + 200 (four pieces of at most 64 KiB) + 8: six WRITEs, all on lane 1. */
	assert_int_equal(n, 6);
	for (i = 0; i < n; i++) {
		assert_int_equal(mock_send_at(i)->opcode, IBV_WR_RDMA_WRITE);
		assert_int_equal(mock_send_at(i)->lane, 1);
	}
	assert_int_equal(c->lanes[1].qp.st.writes, 6);
	assert_int_equal(c->lanes[0].qp.st.writes + c->lanes[2].qp.st.writes, 0);
	assert_int_equal(rdmae_send_lane(c, 1, "placed", 6, 1000, &err), 0);
	assert_int_equal(mock_sends(), n + 1);
	assert_int_equal(mock_send_at(n)->lane, 1);
	assert_true(mock_send_at(n)->doorbell > mock_send_at(n - 1)->doorbell);
	assert_int_equal(send_hdr(mock_send_at(n)).data_length, 6);
	/* The same lane's READ goes there too; a lane it does not have is refused. */
	assert_int_equal(rdmae_read_lane(c, 2, r, &fixture_peer, runs, 1, &err), 0);
	assert_int_equal(mock_send_at(n + 1)->lane, 2);
	assert_int_equal(mock_send_at(n + 1)->opcode, IBV_WR_RDMA_READ);
	assert_int_equal(rdmae_write_lane(c, 3, r, &fixture_peer, runs, 1, &err), -EINVAL);
	/* Out of range is reported as the caller gave it, not clamped first. */
	assert_int_equal(rdmae_write_lane(c, 1000, r, &fixture_peer, runs, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "no lane 1000"));
	assert_int_equal(rdmae_read_lane(c, 4000000000u, r, &fixture_peer, runs, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "no lane 4000000000"));
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	complete_all(c);
	assert_int_equal(rdmae_write_flush(c, &err), 0);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- two threads, two lanes ---- */

#define ROUNDS 6
#define PER_ROUND 4

/* A stand-in progress thread: completes whatever was posted, reaps, wakes waiters. */
struct reaper {
	struct rdmae_conn *c;
	atomic_bool stop;
};

static void *reap_main(void *arg)
{
	struct reaper *t = arg;

	while (!atomic_load(&t->stop)) {
		for (unsigned int i = 0; i < rdmae_conn_lanes(t->c); i++) {
			struct ibv_qp *qp = mock_lane_qp(t->c, i);

			mock_complete_sends(qp, mock_qp_sends_out(qp));
		}
		mock_progress(t->c);
		sched_yield();
	}
	return NULL;
}

struct driver {
	struct rdmae_conn *c;
	struct rdmae_region *r;
	unsigned int lane;
	int ret;
	struct rdmae_err err;
};

/* Lane k writes its own quarter of the region, then says so on lane k, ROUNDS times. */
static void *drive_main(void *arg)
{
	struct driver *d = arg;

	for (unsigned int round = 0; round < ROUNDS && !d->ret; round++) {
		struct rdmae_run runs[PER_ROUND];
		char msg[16];

		for (unsigned int i = 0; i < PER_ROUND; i++) {
			uint64_t off = (uint64_t)d->lane * 64 * KiB +
				       (uint64_t)(round * PER_ROUND + i) * 2 * KiB;

			runs[i] = (struct rdmae_run){ off, off, 1 * KiB };
		}
		d->ret = rdmae_write_lane(d->c, d->lane, d->r, &fixture_peer, runs, PER_ROUND,
					  &d->err);
		snprintf(msg, sizeof(msg), "lane %u round %u", d->lane, round);
		if (!d->ret)
			d->ret = rdmae_send_lane(d->c, d->lane, msg, strlen(msg), 5000, &d->err);
	}
	if (!d->ret)
		d->ret = rdmae_write_flush(d->c, &d->err);
	return NULL;
}

static void test_two_threads_two_lanes(void **state)
{
	struct reaper t = { 0 };
	struct driver d[2];
	struct rdmae_region *r;
	struct rdmae_conn *c;
	pthread_t rt, th[2];
	unsigned int seen[2] = { 0, 0 }, writes[2] = { 0, 0 };

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	r = fixture_pinned(c);
	assert_non_null(r);
	t.c = c;
	assert_int_equal(pthread_create(&rt, NULL, reap_main, &t), 0);
	for (unsigned int k = 0; k < 2; k++)
		d[k] = (struct driver){ .c = c, .r = r, .lane = k };
	for (unsigned int k = 0; k < 2; k++)
		assert_int_equal(pthread_create(&th[k], NULL, drive_main, &d[k]), 0);
	for (unsigned int k = 0; k < 2; k++) {
		assert_int_equal(pthread_join(th[k], NULL), 0);
		if (d[k].ret)
			fail_msg("lane %u: %d %s", k, d[k].ret, d[k].err.msg);
	}
	atomic_store(&t.stop, true);
	assert_int_equal(pthread_join(rt, NULL), 0);

	/*
	 * In the order the QPs took them: each lane's WRITEs are its own
	 * quarter, and each round's SEND follows that round's WRITEs on the
	 * same lane, carrying its text.
	 */
	for (size_t i = 0; i < mock_sends(); i++) {
		const struct mock_send *s = mock_send_at(i);
		unsigned int k = s->lane;

		assert_true(k < 2);
		if (s->opcode == IBV_WR_RDMA_WRITE) {
			uint64_t off = s->remote_addr - FIXTURE_PEER_ADDR;

			assert_int_equal(off / (64 * KiB), k);
			assert_int_equal(off, (uint64_t)k * 64 * KiB + (uint64_t)writes[k] * 2 * KiB);
			assert_int_equal(s->addr, (uintptr_t)fixture_mem + off);
			writes[k]++;
		} else {
			struct rdmae_data_hdr h = send_hdr(s);
			char want[16];

			if (!h.data_length)
				continue;	/* a credit grant */
			snprintf(want, sizeof(want), "lane %u round %u", k, seen[k]);
			assert_int_equal(h.data_length, strlen(want));
			assert_memory_equal(s->data + h.data_offset, want, strlen(want));
			seen[k]++;
			assert_int_equal(writes[k], seen[k] * PER_ROUND);
		}
	}
	for (unsigned int k = 0; k < 2; k++) {
		assert_int_equal(seen[k], ROUNDS);
		assert_int_equal(writes[k], ROUNDS * PER_ROUND);
	}
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- a failure wakes a caller blocked on a lane ---- */

struct blocked {
	struct rdmae_conn *c;
	bool send;
	int ret;
	struct rdmae_err err;
};

static void *block_main(void *arg)
{
	struct blocked *b = arg;
	void *buf = NULL;
	size_t len;

	if (b->send)
		b->ret = rdmae_send_lane(b->c, 1, "stuck", 5, -1, &b->err);
	else
		b->ret = rdmae_recv_lane(b->c, 1, &buf, &len, -1, &b->err);
	free(buf);
	return NULL;
}

/*
 * A receiver waiting for ever on lane 1, and a sender on lane 1 with no
 * credit: an abort from another thread ends both waits with its code,
 * whenever it comes (before or during the wait: no timing is assumed).
 */
static void test_failure_wakes_lane_waiters(void **state)
{
	struct blocked b[2];
	struct rdmae_conn *c;
	pthread_t th[2];

	(void)state;
	c = mock_conn(2, NULL);
	assert_non_null(c);
	pthread_mutex_lock(&c->lanes[1].lock);
	c->lanes[1].cr.send = 0;	/* the peer has granted nothing on lane 1 */
	pthread_mutex_unlock(&c->lanes[1].lock);
	for (unsigned int k = 0; k < 2; k++) {
		b[k] = (struct blocked){ .c = c, .send = k == 1 };
		assert_int_equal(pthread_create(&th[k], NULL, block_main, &b[k]), 0);
	}
	rdmae_conn_abort(c, -ECANCELED, "test: cancelled while lane 1 waits");
	for (unsigned int k = 0; k < 2; k++) {
		assert_int_equal(pthread_join(th[k], NULL), 0);
		assert_int_equal(b[k].ret, -ECANCELED);
		assert_non_null(strstr(b[k].err.msg, "cancelled while lane 1 waits"));
	}
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- lanes are independent: a lane's lock held, another lane goes on ---- */

struct lane_sender {
	struct rdmae_conn *c;
	unsigned int lane;
	atomic_bool done;
	int ret;
	struct rdmae_err err;
};

static void *lane_send_main(void *arg)
{
	struct lane_sender *a = arg;

	a->ret = rdmae_send_lane(a->c, a->lane, "from A", 6, -1, &a->err);
	atomic_store(&a->done, true);
	return NULL;
}

/* What thread B does on lane 2 while lane 1 is taken: a WRITE, a SEND, their completions. */
struct lane_worker {
	struct rdmae_conn *c;
	struct rdmae_region *r;
	int ret;
	struct rdmae_err err;
	struct rdmae_lane_stats st;
};

static void *lane_two_main(void *arg)
{
	struct lane_worker *b = arg;
	struct rdmae_run run = { 0, 0, 8 * KiB };
	struct ibv_qp *qp = mock_lane_qp(b->c, 2);

	b->ret = rdmae_write_lane(b->c, 2, b->r, &fixture_peer, &run, 1, &b->err);
	if (!b->ret)
		b->ret = rdmae_send_lane(b->c, 2, "from B", 6, 1000, &b->err);
	/* Lane 2's completions are reaped with lane 2's lock alone. */
	if (!b->ret)
		b->ret = mock_complete_sends(qp, mock_qp_sends_out(qp));
	rdmae_progress_reap(b->c);
	if (!b->ret)
		b->ret = rdmae_conn_lane_stats(b->c, 2, &b->st);
	return NULL;
}

/*
 * Thread A waits on lane 1 for a credit the peer has not granted, and the
 * test itself then holds lane 1's lock, as a thread busy inside lane 1
 * would. Meanwhile thread B drives lane 2 to the end: a WRITE and a SEND
 * posted, completed and reaped, its statistics read. With one lock per
 * connection B could not take a step; with a lock per lane it finishes
 * (were it to block, the join below would never return). Then lane 1 is
 * let go and a grant arrives on it: A's message leaves, on lane 1, after
 * all of B's work.
 */
static void test_lanes_independent(void **state)
{
	struct lane_sender a = { 0 };
	struct lane_worker b = { 0 };
	struct rdmae_data_hdr h;
	struct rdmae_conn *c;
	pthread_t ta, tb;
	size_t n;

	(void)state;
	c = mock_conn(3, NULL);
	assert_non_null(c);
	b.c = c;
	b.r = fixture_pinned(c);
	pthread_mutex_lock(&c->lanes[1].lock);
	c->lanes[1].cr.send = 0;	/* the peer has granted nothing on lane 1 */
	pthread_mutex_unlock(&c->lanes[1].lock);
	a.c = c;
	a.lane = 1;
	assert_int_equal(pthread_create(&ta, NULL, lane_send_main, &a), 0);
	/* A stalls for a credit (counted under lane 1's lock just before it waits). */
	for (;;) {
		uint64_t stalls;

		pthread_mutex_lock(&c->lanes[1].lock);
		stalls = c->lanes[1].qp.st.credit_stalls;
		pthread_mutex_unlock(&c->lanes[1].lock);
		if (stalls)
			break;
		sched_yield();
	}

	pthread_mutex_lock(&c->lanes[1].lock);
	assert_int_equal(pthread_create(&tb, NULL, lane_two_main, &b), 0);
	assert_int_equal(pthread_join(tb, NULL), 0);
	assert_false(atomic_load(&a.done));
	pthread_mutex_unlock(&c->lanes[1].lock);
	if (b.ret)
		fail_msg("lane 2 while lane 1 was held: %d %s", b.ret, b.err.msg);
	assert_int_equal(b.st.writes, 1);
	assert_int_equal(b.st.sends, 1);
	assert_int_equal(b.st.completions, 2);
	n = mock_sends();
	assert_int_equal(n, 2);
	assert_int_equal(mock_send_at(0)->lane, 2);
	assert_int_equal(mock_send_at(0)->opcode, IBV_WR_RDMA_WRITE);
	assert_int_equal(mock_send_at(1)->lane, 2);
	assert_false(atomic_load(&a.done));

	/* The grant: A's wait ends, and its message goes out on lane 1, last. */
	assert_int_equal(mock_deliver_msg(c, 1, NULL, 0, 4, 0, 0), 0);
	mock_progress(c);
	assert_int_equal(pthread_join(ta, NULL), 0);
	if (a.ret)
		fail_msg("lane 1 after the grant: %d %s", a.ret, a.err.msg);
	assert_true(mock_sends() > n);
	assert_int_equal(mock_send_at(n)->lane, 1);
	h = send_hdr(mock_send_at(n));
	assert_int_equal(h.data_length, 6);
	assert_memory_equal(mock_send_at(n)->data + h.data_offset, "from A", 6);
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	complete_all(c);
	rdmae_region_destroy(b.r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- a failure wakes waiters blocked on several lanes ---- */

struct lane_waiter {
	struct rdmae_conn *c;
	struct rdmae_region *r;
	unsigned int lane;
	int ret;
	struct rdmae_err err;
};

/* Lane 0: a receive; lane 1: a send without credit; lane 2: a WRITE with no send-queue room. */
static void *lane_wait_main(void *arg)
{
	struct lane_waiter *w = arg;
	struct rdmae_run runs[2] = { { 0, 0, 4 * KiB }, { 8 * KiB, 8 * KiB, 4 * KiB } };
	void *buf = NULL;
	size_t len;

	if (w->lane == 0)
		w->ret = rdmae_recv_lane(w->c, 0, &buf, &len, -1, &w->err);
	else if (w->lane == 1)
		w->ret = rdmae_send_lane(w->c, 1, "stuck", 5, -1, &w->err);
	else
		w->ret = rdmae_write_lane(w->c, 2, w->r, &fixture_peer, runs, 2, &w->err);
	free(buf);
	return NULL;
}

/* A lane's statistic, read under its lock. */
static uint64_t lane_stat(struct rdmae_conn *c, unsigned int lane, bool sq)
{
	uint64_t v;

	pthread_mutex_lock(&c->lanes[lane].lock);
	v = sq ? c->lanes[lane].qp.st.sq_stalls : c->lanes[lane].qp.st.credit_stalls;
	pthread_mutex_unlock(&c->lanes[lane].lock);
	return v;
}

/*
 * Three callers, each asleep on its own lane's cond: a receive on lane 0,
 * a send with no credit on lane 1, a WRITE on lane 2 whose send queue has
 * room for one (writes_in_flight 1). The peer disconnects lane 0: the
 * progress step that hears it fails the connection, and every one of them
 * returns its error, whichever lane it waits on.
 */
static void test_failure_wakes_all_lanes(void **state)
{
	struct rdmae_conn_opts o;
	struct lane_waiter w[3];
	struct rdmae_region *r;
	struct rdmae_conn *c;
	pthread_t th[3];

	(void)state;
	mock_conn_opts(&o);
	o.writes_in_flight = 1;
	c = mock_conn(3, &o);
	assert_non_null(c);
	r = fixture_pinned(c);
	pthread_mutex_lock(&c->lanes[1].lock);
	c->lanes[1].cr.send = 0;
	pthread_mutex_unlock(&c->lanes[1].lock);
	for (unsigned int k = 0; k < 3; k++) {
		w[k] = (struct lane_waiter){ .c = c, .r = r, .lane = k };
		assert_int_equal(pthread_create(&th[k], NULL, lane_wait_main, &w[k]), 0);
	}
	/* Lanes 1 and 2 are asleep once their stall is counted; lane 0's receive may be any time. */
	while (!lane_stat(c, 1, false) || !lane_stat(c, 2, true))
		sched_yield();
	mock_cm_event(c->lanes[0].qp.id, RDMA_CM_EVENT_DISCONNECTED, 0);
	mock_progress(c);
	for (unsigned int k = 0; k < 3; k++) {
		assert_int_equal(pthread_join(th[k], NULL), 0);
		assert_int_equal(w[k].ret, -ECONNRESET);
		assert_non_null(strstr(w[k].err.msg, "closed by the peer"));
	}
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- detach whose wait for WRs in flight runs out ---- */

/*
 * A PIN_ALL region destroyed while a WRITE from it never completes (the
 * peer's NIC is silent): detach waits its 5 s for the WR, then must not
 * deregister the MRs under it. The connection fails, naming the lane, and
 * the QP is drained first: in error, the WRITE flushed and retired, the
 * drain's markers back, before the region's MRs go.
 */
static void test_detach_timeout_drains(void **state)
{
	struct fixture_progress t = { 0 };
	struct rdmae_run run = { 0, 0, 4 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;
	struct rdmae_conn *c;

	(void)state;
	c = mock_conn(1, NULL);
	assert_non_null(c);
	r = fixture_pinned(c);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, &run, 1, &err), 0);
	assert_int_equal(mock_qp_sends_out(mock_lane_qp(c, 0)), 1);
	/* A progress thread reaps, completing nothing. */
	fixture_progress_start(&t, c);

	rdmae_region_destroy(r);

	assert_int_equal(rdmae_conn_error(c, &err), -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "WRs still in flight on lane 0"));
	assert_int_equal(mock_qp_state(mock_lane_qp(c, 0)), IBV_QPS_ERR);
	pthread_mutex_lock(&c->lanes[0].lock);
	assert_true(c->lanes[0].qp.draining);
	assert_int_equal(c->lanes[0].qp.drain_left, 0);
	assert_true(c->lanes[0].qp.sq_done == c->lanes[0].qp.sq_posted);
	pthread_mutex_unlock(&c->lanes[0].lock);
	assert_int_equal(mock_qp_sends_out(mock_lane_qp(c, 0)), 0);

	fixture_progress_stop(&t);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- the rings of the lanes after lane 0 ---- */

/*
 * From 2.1 a lane after lane 0 posts only RDMAE_LANE_CREDITS receives and
 * has as many send slots; it starts with the peer's equal depth as send
 * credits, and sends stop there, before the peer's ring would overflow.
 */
static void test_lane_rings_small(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn_opts o;
	struct rdmae_setup_times st;
	struct rdmae_conn *c;
	struct rdmae_data_hdr h;
	unsigned int i, n = 0;
	void *buf;
	size_t len;

	(void)state;
	mock_conn_opts(&o);
	o.credits = 255;
	c = mock_conn(3, &o);
	assert_non_null(c);
	assert_int_equal(c->neg.version, RDMAE_VERSION_2_1);
	assert_int_equal(c->lanes[0].qp.nrx, 255);
	assert_int_equal(c->lanes[0].qp.ntx, 255);
	assert_int_equal(mock_qp_recvs_out(mock_lane_qp(c, 0)), 255);
	for (i = 1; i < 3; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		pthread_mutex_lock(&l->lock);
		assert_int_equal(l->qp.nrx, RDMAE_LANE_CREDITS);
		assert_int_equal(l->qp.ntx, RDMAE_LANE_CREDITS);
		assert_int_equal(mock_qp_recvs_out(l->qp.ibqp), RDMAE_LANE_CREDITS);
		assert_int_equal(l->cr.recv_posted, RDMAE_LANE_CREDITS);
		assert_int_equal(l->cr.recv_target, RDMAE_LANE_CREDITS);
		assert_int_equal(l->cr.send, RDMAE_LANE_CREDITS);
		assert_int_equal(l->cr.peer_target, RDMAE_LANE_CREDITS);
		pthread_mutex_unlock(&l->lock);
	}
	rdmae_conn_setup_times(c, &st);
	assert_int_equal(st.lane0_recvs, 255);
	assert_int_equal(st.lane_recvs, RDMAE_LANE_CREDITS);

	/* Without a grant back, lane 1 sends one fewer than the peer posted (the last is kept). */
	while (rdmae_send_lane(c, 1, "x", 1, 0, &err) == 0)
		n++;
	assert_int_equal(err.code, -ETIMEDOUT);
	assert_int_equal(n, RDMAE_LANE_CREDITS - 1);
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	/* Each message asks the peer to keep the lane's own depth posted. */
	h = send_hdr(mock_send_at(0));
	assert_int_equal(h.credits_requested, RDMAE_LANE_CREDITS);
	/* Lane 0 is not held back by lane 1's credits. */
	assert_int_equal(rdmae_send_lane(c, 0, "y", 1, 0, &err), 0);

	/* A message in, with a grant: its buffer goes back, never beyond the ring. */
	assert_int_equal(mock_deliver_msg(c, 1, "back", 4, 5, 0, 0), 0);
	mock_progress(c);
	assert_int_equal(rdmae_recv_lane(c, 1, &buf, &len, 0, &err), 0);
	free(buf);
	complete_all(c);
	pthread_mutex_lock(&c->lanes[1].lock);
	assert_true(c->lanes[1].cr.recv_posted <= c->lanes[1].qp.nrx);
	assert_true(mock_qp_recvs_out(c->lanes[1].qp.ibqp) <= RDMAE_LANE_CREDITS);
	assert_true(c->lanes[1].cr.send >= 1 + 5 - 1);
	pthread_mutex_unlock(&c->lanes[1].lock);
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* Negotiated at 2.0 (a peer of an earlier release): every lane keeps the full ring. */
static void test_lane_rings_v2_0(void **state)
{
	struct rdmae_conn_opts o;
	struct rdmae_conn *c;

	(void)state;
	mock_conn_opts(&o);
	o.credits = 255;
	o.max_version = RDMAE_VERSION_2;
	c = mock_conn(2, &o);
	assert_non_null(c);
	assert_int_equal(c->lanes[1].qp.nrx, 255);
	assert_int_equal(mock_qp_recvs_out(mock_lane_qp(c, 1)), 255);
	pthread_mutex_lock(&c->lanes[1].lock);
	assert_int_equal(c->lanes[1].cr.send, 255);
	pthread_mutex_unlock(&c->lanes[1].lock);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- a failed post under both locks ---- */

/*
 * The client's negotiate request is posted on lane 0 with lane 0's lock
 * and c->lock held. When that post fails, the qp reports it through
 * on_error, which must fail the connection under the lock already held,
 * not take it a second time (which would hang here for ever).
 */
static void test_negotiate_post_fails(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	struct rdma_cm_id *id;

	(void)state;
	c = mock_conn_bare(NULL);
	assert_non_null(c);
	assert_int_equal(mock_conn_setup_device(c, &err), 0);
	id = mock_cm_id();
	assert_int_equal(rdmae_lane_create(c, id, 0, &err), 0);
	mock_qp_set_state(c->lanes[0].qp.ibqp, IBV_QPS_RTS);
	mock_fail_post_send(1, ENOMEM, MOCK_BAD_NONE);
	assert_int_equal(rdmae_negotiate_request(c, rdmae_deadline_after(1000), &err), -ENOMEM);
	assert_non_null(strstr(err.msg, "ibv_post_send on lane 0"));
	assert_int_equal(rdmae_conn_error(c, NULL), -ENOMEM);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_send_recv_lane, fixture_setup),
		cmocka_unit_test_setup(test_lane_streams_apart, fixture_setup),
		cmocka_unit_test_setup(test_write_lane_then_send, fixture_setup),
		cmocka_unit_test_setup(test_two_threads_two_lanes, fixture_setup),
		cmocka_unit_test_setup(test_failure_wakes_lane_waiters, fixture_setup),
		cmocka_unit_test_setup(test_lanes_independent, fixture_setup),
		cmocka_unit_test_setup(test_failure_wakes_all_lanes, fixture_setup),
		cmocka_unit_test_setup(test_detach_timeout_drains, fixture_setup),
		cmocka_unit_test_setup(test_negotiate_post_fails, fixture_setup),
		cmocka_unit_test_setup(test_lane_rings_small, fixture_setup),
		cmocka_unit_test_setup(test_lane_rings_v2_0, fixture_setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
