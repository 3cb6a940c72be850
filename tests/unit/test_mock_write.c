/* SPDX-License-Identifier: MIT */
/*
 * Bulk transfer and registration over the mock verbs layer (mock_verbs.h):
 * the WRs rdmae_write hands the QPs (split at max_rw_size and at local and
 * remote boundaries, dealt round-robin, chained per lane, signalled
 * selectively, bounded per lane), and registration in its three modes:
 * PIN_ALL and ODP failures roll back, ON_DEMAND pins chunks as WRITEs reach
 * them and unpins the least recently used idle one past the bound.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "internal.h"
#include "rdmae_write.h"
#include "mock_fixture.h"
#include "mock_verbs.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)

static struct rdmae_conn *conn_rw(unsigned int lanes, uint32_t rw_size)
{
	struct rdmae_conn_opts o;
	struct rdmae_conn *c;

	mock_conn_opts(&o);
	o.rw_size = rw_size;
	c = mock_conn(lanes, &o);
	assert_non_null(c);
	return c;
}

static struct rdmae_region *on_demand(struct rdmae_conn *c, size_t len, size_t chunk)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .page_size = 4096,
				       .chunk_size = chunk };

	return fixture_region(c, fixture_mem, len, &o);
}

static void write_ok(struct rdmae_conn *c, struct rdmae_region *r, const struct rdmae_remote *rm,
		     struct rdmae_run *runs, size_t n)
{
	struct rdmae_err err = { 0 };

	if (rdmae_write(c, r, rm, runs, n, &err))
		fail_msg("write: %s", err.msg);
}

/* One recorded WRITE: from local offset, to remote address and key, length, signalled. */
static void assert_wr(size_t i, unsigned int lane, uint64_t local, uint64_t raddr, uint32_t rkey,
		      uint64_t len, bool signaled)
{
	const struct mock_send *s = mock_send_at(i);

	assert_non_null(s);
	assert_int_equal(s->opcode, IBV_WR_RDMA_WRITE);
	assert_int_equal(s->lane, lane);
	assert_int_equal(s->addr, (uintptr_t)fixture_mem + local);
	assert_int_equal(s->remote_addr, raddr);
	assert_int_equal(s->rkey, rkey);
	assert_int_equal(s->length, len);
	if (signaled != !!(s->send_flags & IBV_SEND_SIGNALED))
		fail_msg("WR %zu: signalled %d, want %d", i, !signaled, signaled);
}

/* Complete everything in flight on every lane and reap it. */
static void complete_all(struct rdmae_conn *c)
{
	for (unsigned int i = 0; i < c->nlanes; i++) {
		struct ibv_qp *qp = mock_lane_qp(c, i);

		assert_int_equal(mock_complete_sends(qp, mock_qp_sends_out(qp)), 0);
	}
	mock_progress(c);
	for (unsigned int i = 0; i < c->nlanes; i++) {
		assert_true(c->lanes[i].qp.sq_done == c->lanes[i].qp.sq_posted);
		assert_int_equal(c->lanes[i].qp.writes_out, 0);
	}
	assert_int_equal(mock_pace_inflight(c), 0);
}

/* ---- 5. the write path ---- */

/* A run longer than max_rw_size: pieces of at most 64 KiB, dealt to the lanes in turn, one doorbell each. */
static void test_split_and_deal(void **state)
{
	struct rdmae_run run = { 0, 0, 200 * KiB };
	struct rdmae_conn *c = conn_rw(2, 64 * KiB);
	struct rdmae_region *r = fixture_pinned(c);
	uint32_t lkey = mock_region_mr(r, 0)->lkey;

	(void)state;
	write_ok(c, r, &fixture_peer, &run, 1);
	assert_int_equal(mock_sends(), 4);
	/*
	 * Lane 0 has pieces 0 and 2, lane 1 pieces 1 and 3. The budget is 4 x 2
	 * lanes x 64 KiB: a lane signals once it has half its share (128 KiB)
	 * unsignalled, and the last WR of a doorbell always.
	 */
	assert_wr(0, 0, 0, FIXTURE_PEER_ADDR, FIXTURE_PEER_RKEY, 64 * KiB, false);
	assert_wr(1, 0, 128 * KiB, FIXTURE_PEER_ADDR + 128 * KiB, FIXTURE_PEER_RKEY, 64 * KiB, true);
	assert_wr(2, 1, 64 * KiB, FIXTURE_PEER_ADDR + 64 * KiB, FIXTURE_PEER_RKEY, 64 * KiB, false);
	assert_wr(3, 1, 192 * KiB, FIXTURE_PEER_ADDR + 192 * KiB, FIXTURE_PEER_RKEY, 8 * KiB, true);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(mock_send_at(i)->lkey, lkey);
		assert_int_equal(mock_send_at(i)->doorbell, i < 2 ? 1 : 2);
	}
	assert_int_equal(c->lanes[0].qp.st.doorbells, 1);
	assert_int_equal(c->lanes[1].qp.st.doorbells, 1);
	assert_int_equal(c->lanes[0].qp.st.write_bytes, 128 * KiB);
	assert_int_equal(c->lanes[1].qp.st.write_bytes, 72 * KiB);
	assert_int_equal(mock_pace_inflight(c), 200 * KiB);
	complete_all(c);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* Remote descriptors cover 1 GiB each: a run across their boundary is cut there, each piece with its key. */
static void test_split_at_descriptor(void **state)
{
	static const struct rdmae_bufdesc descs[2] = {
		{ .offset = 0x10000000, .token = 0x11, .length = 1u << 30 },
		{ .offset = 0x90000000, .token = 0x22, .length = 1u << 20 },
	};
	const struct rdmae_remote rm = { .descs = descs, .ndescs = 2, .len = GiB + MiB };
	struct rdmae_run run = { 16 * KiB, GiB - 8 * KiB, 100 * KiB };
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *r = fixture_pinned(c);

	(void)state;
	write_ok(c, r, &rm, &run, 1);
	assert_int_equal(mock_sends(), 3);
	assert_wr(0, 0, 16 * KiB, 0x10000000 + GiB - 8 * KiB, 0x11, 8 * KiB, false);
	assert_wr(1, 0, 24 * KiB, 0x90000000, 0x22, 64 * KiB, false);
	assert_wr(2, 0, 88 * KiB, 0x90000000 + 64 * KiB, 0x22, 28 * KiB, true);

	/* A run past the end of the last descriptor is refused before anything is posted. */
	{
		struct rdmae_run past = { 0, GiB + MiB - 4 * KiB, 8 * KiB };
		struct rdmae_err err = { 0 };

		assert_int_equal(rdmae_write(c, r, &rm, &past, 1, &err), -ERANGE);
		assert_int_equal(mock_sends(), 3);
		assert_int_equal(rdmae_conn_error(c, NULL), 0);
	}
	complete_all(c);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* On-demand chunks of 16 KiB: a run is cut at each chunk, each piece with its chunk's key. */
static void test_split_at_chunk(void **state)
{
	struct rdmae_run run = { 8 * KiB, 0, 32 * KiB };
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *r = on_demand(c, 64 * KiB, 16 * KiB);
	size_t lru[4];

	(void)state;
	write_ok(c, r, &fixture_peer, &run, 1);
	assert_int_equal(mock_sends(), 3);
	assert_wr(0, 0, 8 * KiB, FIXTURE_PEER_ADDR, FIXTURE_PEER_RKEY, 8 * KiB, false);
	assert_wr(1, 0, 16 * KiB, FIXTURE_PEER_ADDR + 8 * KiB, FIXTURE_PEER_RKEY, 16 * KiB, false);
	assert_wr(2, 0, 32 * KiB, FIXTURE_PEER_ADDR + 24 * KiB, FIXTURE_PEER_RKEY, 8 * KiB, true);
	for (size_t i = 0; i < 3; i++) {
		assert_non_null(mock_chunk_mr(r, i));
		assert_int_equal(mock_send_at(i)->lkey, mock_chunk_mr(r, i)->lkey);
		assert_int_equal(mock_chunk_refs(r, i), 1);
	}
	assert_null(mock_chunk_mr(r, 3));
	assert_int_equal(rdmae_conn_pinned(c), 48 * KiB);
	/* Busy chunks are not in the idle list; once complete they are, most recent first. */
	assert_int_equal(mock_lru(c, lru, 4), 0);
	complete_all(c);
	assert_int_equal(mock_lru(c, lru, 4), 3);
	assert_int_equal(lru[0], 2);
	assert_int_equal(lru[2], 0);
	rdmae_region_destroy(r);
	assert_int_equal(rdmae_conn_pinned(c), 0);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* Runs contiguous on both sides are merged up to max_rw_size; others stay apart. */
static void test_coalesce(void **state)
{
	struct rdmae_run merged[3] = { { 0, 0, 4 * KiB }, { 4 * KiB, 4 * KiB, 4 * KiB },
				       { 8 * KiB, 8 * KiB, 4 * KiB } };
	struct rdmae_run apart[2] = { { 0, 0, 4 * KiB }, { 4 * KiB, 8 * KiB, 4 * KiB } };
	struct rdmae_run many[20];
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *r = fixture_pinned(c);

	(void)state;
	write_ok(c, r, &fixture_peer, merged, 3);
	assert_int_equal(mock_sends(), 1);
	assert_wr(0, 0, 0, FIXTURE_PEER_ADDR, FIXTURE_PEER_RKEY, 12 * KiB, true);
	write_ok(c, r, &fixture_peer, apart, 2);
	assert_int_equal(mock_sends(), 3);
	assert_wr(1, 0, 0, FIXTURE_PEER_ADDR, FIXTURE_PEER_RKEY, 4 * KiB, false);
	assert_wr(2, 0, 4 * KiB, FIXTURE_PEER_ADDR + 8 * KiB, FIXTURE_PEER_RKEY, 4 * KiB, true);
	/* 80 KiB of contiguous 4 KiB runs: one WRITE of 64 KiB and one of 16 KiB. */
	for (size_t i = 0; i < 20; i++)
		many[i] = (struct rdmae_run){ i * 4 * KiB, i * 4 * KiB, 4 * KiB };
	write_ok(c, r, &fixture_peer, many, 20);
	assert_int_equal(mock_sends(), 5);
	assert_wr(3, 0, 0, FIXTURE_PEER_ADDR, FIXTURE_PEER_RKEY, 64 * KiB, false);
	assert_wr(4, 0, 64 * KiB, FIXTURE_PEER_ADDR + 64 * KiB, FIXTURE_PEER_RKEY, 16 * KiB, true);
	complete_all(c);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * 40 small WRITEs on one lane, with a budget too large for the byte rule to
 * matter: one in 16 is signalled, and the last of each doorbell; a doorbell
 * carries at most 32.
 */
static void test_signal_every_16(void **state)
{
	struct rdmae_run runs[40];
	struct rdmae_conn *c = conn_rw(1, 1 * MiB);
	struct rdmae_region *r = fixture_pinned(c);
	size_t nsig = 0;

	(void)state;
	for (size_t i = 0; i < 40; i++)
		runs[i] = (struct rdmae_run){ i * 2 * KiB, i * 2 * KiB, 1 * KiB };
	write_ok(c, r, &fixture_peer, runs, 40);
	assert_int_equal(mock_sends(), 40);
	for (size_t i = 0; i < 40; i++) {
		const struct mock_send *s = mock_send_at(i);
		bool sig = i == 15 || i == 31 || i == 39;

		assert_wr(i, 0, i * 2 * KiB, FIXTURE_PEER_ADDR + i * 2 * KiB, FIXTURE_PEER_RKEY, 1 * KiB, sig);
		assert_int_equal(s->doorbell, i < 32 ? 1 : 2);
		nsig += sig;
	}
	assert_int_equal(c->lanes[0].qp.st.doorbells, 2);
	/* Three completions retire all 40. */
	assert_int_equal(mock_complete_sends(mock_lane_qp(c, 0), 40), 0);
	assert_int_equal(mock_cq_pending(), nsig);
	mock_progress(c);
	assert_int_equal(c->lanes[0].qp.st.completions, nsig);
	assert_true(c->lanes[0].qp.sq_done == 40);
	assert_int_equal(c->lanes[0].qp.writes_out, 0);
	assert_int_equal(mock_pace_inflight(c), 0);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* Full-size WRITEs: a lane signals whenever half its share of the budget is unsignalled. */
static void test_signal_by_bytes(void **state)
{
	struct rdmae_run runs[4];
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *r = fixture_pinned(c);

	(void)state;
	assert_int_equal(mock_pace_budget(c), 256 * KiB);
	for (size_t i = 0; i < 4; i++)
		runs[i] = (struct rdmae_run){ i * 64 * KiB, i * 128 * KiB, 64 * KiB };
	write_ok(c, r, &fixture_peer, runs, 4);
	assert_int_equal(mock_sends(), 4);
	for (size_t i = 0; i < 4; i++)
		assert_wr(i, 0, i * 64 * KiB, FIXTURE_PEER_ADDR + i * 128 * KiB, FIXTURE_PEER_RKEY, 64 * KiB,
			  i % 2 == 1);
	complete_all(c);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

struct writer {
	struct rdmae_conn *c;
	struct rdmae_region *r;
	struct rdmae_run runs[6];
	int ret;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct rdmae_err err = { 0 };

	w->ret = rdmae_write(w->c, w->r, &fixture_peer, w->runs, 6, &err);
	return NULL;
}

/*
 * At most writes_in_flight WRITEs per lane: the fifth waits, with the first
 * four rung, until a completion retires them. The writer is a thread; the
 * test plays the progress thread. Whether it reaps before or after the
 * writer starts waiting, the outcome is the same.
 */
static void test_writes_in_flight_bound(void **state)
{
	struct rdmae_conn_opts o;
	struct writer w = { 0 };
	pthread_t th;

	(void)state;
	mock_conn_opts(&o);
	o.writes_in_flight = 4;
	w.c = mock_conn(1, &o);
	assert_non_null(w.c);
	w.r = fixture_pinned(w.c);
	for (size_t i = 0; i < 6; i++)
		w.runs[i] = (struct rdmae_run){ i * 8 * KiB, i * 8 * KiB, 4 * KiB };
	assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
	/* The four that fit are rung as the writer starts to wait. */
	while (mock_sends() < 4)
		sched_yield();
	assert_int_equal(mock_qp_sends_out(mock_lane_qp(w.c, 0)), 4);
	assert_true(mock_send_at(3)->send_flags & IBV_SEND_SIGNALED);
	assert_int_equal(mock_complete_sends(mock_lane_qp(w.c, 0), 4), 0);
	mock_progress(w.c);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(w.ret, 0);
	assert_int_equal(mock_sends(), 6);
	assert_int_equal(mock_send_at(4)->doorbell, 2);
	assert_int_equal(w.c->lanes[0].qp.st.sq_stalls, 1);
	complete_all(w.c);
	rdmae_region_destroy(w.r);
	rdmae_conn_destroy(w.c);
	fixture_assert_clean();
}

/* READ: the mirror WR, into a region the NIC may write; refused into one it may not. */
static void test_read(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL, .page_size = 4096,
				       .local_write = 1 };
	struct rdmae_run run = { 4 * KiB, 8 * KiB, 4 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *dst = fixture_region(c, fixture_mem, sizeof(fixture_mem), &o);
	struct rdmae_region *ro = fixture_pinned(c);
	const struct mock_send *s;

	(void)state;
	assert_true(mock_mr_access(mock_region_mr(dst, 0)) & IBV_ACCESS_LOCAL_WRITE);
	assert_int_equal(rdmae_read(c, dst, &fixture_peer, &run, 1, &err), 0);
	s = mock_send_at(0);
	assert_int_equal(s->opcode, IBV_WR_RDMA_READ);
	assert_int_equal(s->addr, (uintptr_t)fixture_mem + 4 * KiB);
	assert_int_equal(s->lkey, mock_region_mr(dst, 0)->lkey);
	assert_int_equal(s->remote_addr, FIXTURE_PEER_ADDR + 8 * KiB);
	assert_int_equal(c->lanes[0].qp.st.reads, 1);
	assert_int_equal(c->lanes[0].qp.writes_out, 1);

	assert_int_equal(rdmae_read(c, ro, &fixture_peer, &run, 1, &err), -EACCES);
	assert_int_equal(mock_sends(), 1);
	complete_all(c);
	rdmae_region_destroy(ro);
	rdmae_region_destroy(dst);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- 4. registration ---- */

/* 2.5 GiB of address space that is never touched: any access would fault. */
static void *reserve(size_t len)
{
	void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

static void test_pin_all_spans(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL, .page_size = 4096,
				       .remote_write = 1 };
	const size_t len = 2 * GiB + 512 * MiB;
	struct rdmae_bufdesc d[4];
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	uint8_t *base = reserve(len);
	struct rdmae_region *r = fixture_region(c, base, len, &o);
	size_t n;

	(void)state;
	assert_int_equal(mock_live(MOCK_OBJ_MR), 2 + 3);
	assert_int_equal(rdmae_region_bufdescs(r, d, 4, &n, &err), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < 3; i++) {
		const struct ibv_mr *mr = mock_region_mr(r, i);

		assert_ptr_equal(mr->addr, base + i * GiB);
		assert_int_equal(mr->length, i < 2 ? GiB : 512 * MiB);
		assert_int_equal(mock_mr_access(mr),
				 IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
		assert_int_equal(d[i].offset, (uintptr_t)mr->addr);
		assert_int_equal(d[i].token, mr->rkey);
		assert_int_equal(d[i].length, mr->length);
	}
	assert_int_equal(rdmae_region_bufdescs(r, d, 2, &n, &err), -ENOSPC);
	rdmae_region_destroy(r);
	assert_int_equal(mock_live(MOCK_OBJ_MR), 2);
	munmap(base, len);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* The third span's registration fails: the first two are deregistered, nothing is listed. */
static void test_pin_all_rollback(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL, .page_size = 4096 };
	const size_t len = 2 * GiB + 512 * MiB;
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	uint8_t *base = reserve(len);
	struct rdmae_region *r;
	size_t from = mock_log_len();
	char log[64];

	(void)state;
	mock_fail(MOCK_REG_MR, 3, EFAULT);
	assert_int_equal(rdmae_region_create(&r, c, base, len, &o, &err), -EFAULT);
	assert_null(r);
	assert_non_null(strstr(err.msg, "ibv_reg_mr of 536870912 bytes"));
	mock_log_string(from, log, sizeof(log));
	assert_string_equal(log, "+M +M -M -M");
	assert_null(c->regions);
	munmap(base, len);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * ENOMEM from ibv_reg_mr is what a memlock limit too low gives, and the
 * PIN_ALL loop's message says so ("is the memlock limit, ulimit -l, too
 * low?"); err_release used to overwrite it with "out of memory".
 */
static void test_pin_all_enomem_names_memlock(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_PIN_ALL, .page_size = 4096 };
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *r;
	bool ok;

	(void)state;
	mock_fail(MOCK_REG_MR, 1, ENOMEM);
	assert_int_equal(rdmae_region_create(&r, c, fixture_mem, sizeof(fixture_mem), &o, &err), -ENOMEM);
	assert_int_equal(mock_live(MOCK_OBJ_MR), 2);
	ok = strstr(err.msg, "memlock") && strstr(err.msg, "ibv_reg_mr");
	rdmae_conn_destroy(c);
	fixture_assert_clean();
	assert_true(ok);
}

/* On a device with ODP, ON_DEMAND is one implicit registration; if it fails, nothing is left. */
static void test_odp(void **state)
{
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .page_size = 4096 };
	struct rdmae_run run = { 100 * KiB, 0, 4 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *r;

	(void)state;
	c->dev->odp_write = true;
	mock_fail(MOCK_REG_MR, 1, EOPNOTSUPP);
	assert_int_equal(rdmae_region_create(&r, c, fixture_mem, sizeof(fixture_mem), &o, &err),
			 -EOPNOTSUPP);
	assert_non_null(strstr(err.msg, "ODP"));
	assert_int_equal(mock_live(MOCK_OBJ_MR), 2);

	r = fixture_region(c, fixture_mem, sizeof(fixture_mem), &o);
	assert_int_equal(mock_live(MOCK_OBJ_MR), 3);
	write_ok(c, r, &fixture_peer, &run, 1);
	assert_int_equal(mock_send_at(0)->addr, (uintptr_t)fixture_mem + 100 * KiB);
	/* The WRITE pins nothing: the kernel and NIC page on demand. */
	assert_int_equal(mock_live(MOCK_OBJ_MR), 3);
	assert_int_equal(rdmae_conn_pinned(c), 0);
	{
		const struct mock_event *e = mock_log_at(mock_log_len() - 1);
		const struct ibv_mr *mr = e->obj;

		assert_int_equal(e->kind, MOCK_OBJ_MR);
		assert_true(mock_mr_access(mr) & IBV_ACCESS_ON_DEMAND);
		assert_int_equal(mr->length, sizeof(fixture_mem));
		assert_int_equal(mock_send_at(0)->lkey, mr->lkey);
	}
	complete_all(c);
	rdmae_region_destroy(r);

	/* READs landing in ODP memory need more than odp_write: such a region is chunked. */
	o.local_write = 1;
	r = fixture_region(c, fixture_mem, sizeof(fixture_mem), &o);
	assert_int_equal(mock_live(MOCK_OBJ_MR), 2);
	assert_int_not_equal(mock_region_chunk_size(r), 0);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

static void test_on_demand_shape(void **state)
{
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region_opts o = { .mode = RDMAE_REG_ON_DEMAND, .page_size = 4096 };
	struct rdmae_err err = { 0 };
	struct rdmae_region *r;

	(void)state;
	/* Nothing is pinned at creation. */
	r = on_demand(c, sizeof(fixture_mem), 10000);
	assert_int_equal(mock_live(MOCK_OBJ_MR), 2);
	/* Chunks are whole pages: 10000 bytes round down to two. */
	assert_int_equal(mock_region_chunk_size(r), 8192);
	rdmae_region_destroy(r);
	r = on_demand(c, sizeof(fixture_mem), 100);
	assert_int_equal(mock_region_chunk_size(r), 4096);
	rdmae_region_destroy(r);
	r = on_demand(c, sizeof(fixture_mem), 0);
	assert_int_equal(mock_region_chunk_size(r), 16 * MiB);
	rdmae_region_destroy(r);
	/* Never advertised to the peer: its keys would come and go. */
	o.remote_write = 1;
	assert_int_equal(rdmae_region_create(&r, c, fixture_mem, sizeof(fixture_mem), &o, &err), -EINVAL);
	assert_int_equal(mock_live(MOCK_OBJ_MR), 2);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* A chunk that cannot be pinned fails the call, not the connection, and pins nothing. */
static void test_on_demand_pin_fails(void **state)
{
	struct rdmae_run run = { 0, 0, 4 * KiB };
	struct rdmae_run two[2] = { { 0, 0, 4 * KiB }, { 16 * KiB, 64 * KiB, 4 * KiB } };
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *r = on_demand(c, 64 * KiB, 16 * KiB);

	(void)state;
	mock_fail(MOCK_REG_MR, 1, ENOMEM);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, &run, 1, &err), -ENOMEM);
	assert_non_null(strstr(err.msg, "write to mock"));
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	assert_int_equal(mock_sends(), 0);
	assert_int_equal(rdmae_conn_pinned(c), 0);
	assert_null(mock_chunk_mr(r, 0));
	assert_int_equal(mock_chunk_refs(r, 0), 0);

	/* The second piece's chunk fails: the first piece was queued, and still goes. */
	mock_fail(MOCK_REG_MR, 2, ENOMEM);
	assert_int_equal(rdmae_write(c, r, &fixture_peer, two, 2, &err), -ENOMEM);
	assert_int_equal(mock_sends(), 1);
	assert_int_equal(mock_chunk_refs(r, 0), 1);
	assert_int_equal(mock_chunk_refs(r, 1), 0);
	assert_null(mock_chunk_mr(r, 1));
	assert_int_equal(rdmae_conn_pinned(c), 16 * KiB);
	complete_all(c);
	assert_int_equal(mock_chunk_refs(r, 0), 0);

	/* Nothing failing: the same WRITE goes. */
	write_ok(c, r, &fixture_peer, &run, 1);
	complete_all(c);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

static void write_chunk(struct rdmae_conn *c, struct rdmae_region *r, size_t idx)
{
	struct rdmae_run run = { idx * 16 * KiB, 0, 4 * KiB };

	write_ok(c, r, &fixture_peer, &run, 1);
}

/* The pinned total stays under the bound by unpinning the least recently used idle chunk. */
static void test_on_demand_lru(void **state)
{
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *r = on_demand(c, 64 * KiB, 16 * KiB);
	const struct ibv_mr *mr1;
	size_t lru[4];
	unsigned int regs;

	(void)state;
	rdmae_conn_set_pin_limit(c, 32 * KiB);
	write_chunk(c, r, 0);
	complete_all(c);
	write_chunk(c, r, 1);
	complete_all(c);
	assert_int_equal(rdmae_conn_pinned(c), 32 * KiB);
	assert_int_equal(mock_lru(c, lru, 4), 2);
	assert_int_equal(lru[0], 1);
	assert_int_equal(lru[1], 0);
	mr1 = mock_chunk_mr(r, 1);

	/* Chunk 2 needs room: chunk 0, idle longest, is unpinned. */
	write_chunk(c, r, 2);
	assert_null(mock_chunk_mr(r, 0));
	assert_non_null(mock_chunk_mr(r, 2));
	assert_int_equal(rdmae_conn_pinned(c), 32 * KiB);
	assert_int_equal(mock_lru(c, lru, 4), 1);
	assert_int_equal(lru[0], 1);

	/* Chunk 1 again: still pinned, no registration, and busy now. */
	regs = mock_calls(MOCK_REG_MR);
	write_chunk(c, r, 1);
	assert_int_equal(mock_calls(MOCK_REG_MR), regs);
	assert_ptr_equal(mock_chunk_mr(r, 1), mr1);
	assert_int_equal(mock_lru(c, lru, 4), 0);
	assert_int_equal(mock_chunk_refs(r, 1), 1);
	assert_int_equal(mock_chunk_refs(r, 2), 1);

	/* Both complete, chunk 2 first: chunk 1 is the most recent, chunk 3 evicts chunk 2. */
	complete_all(c);
	assert_int_equal(mock_lru(c, lru, 4), 2);
	assert_int_equal(lru[0], 1);
	assert_int_equal(lru[1], 2);
	write_chunk(c, r, 3);
	assert_null(mock_chunk_mr(r, 2));
	assert_non_null(mock_chunk_mr(r, 3));
	assert_int_equal(rdmae_conn_pinned(c), 32 * KiB);
	complete_all(c);
	rdmae_region_destroy(r);
	assert_int_equal(rdmae_conn_pinned(c), 0);
	assert_true(mock_lru_empty(c));
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * The bound reached with every pinned chunk in flight: the writer does not
 * register past it. It rings its lane and waits on the connection (the
 * cache itself never waits, it says -EAGAIN); the completion that leaves a
 * chunk idle wakes it, and it pins the next chunk by evicting that one.
 * Six runs, each in another chunk than the one before, one chunk of room.
 */
static void test_on_demand_waits_for_room(void **state)
{
	struct writer w = { 0 };
	pthread_t th;

	(void)state;
	w.c = conn_rw(1, 64 * KiB);
	w.r = on_demand(w.c, 64 * KiB, 16 * KiB);
	rdmae_conn_set_pin_limit(w.c, 16 * KiB);
	for (size_t i = 0; i < 6; i++)
		w.runs[i] = (struct rdmae_run){ (i % 4) * 16 * KiB, i * 8 * KiB, 4 * KiB };
	assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
	for (size_t i = 1; i <= 6; i++) {
		struct ibv_qp *qp = mock_lane_qp(w.c, 0);

		/* The i-th WRITE is rung (by the wait, or at the end) and nothing past it. */
		while (mock_sends() < i)
			sched_yield();
		assert_int_equal(mock_sends(), i);
		assert_true(rdmae_conn_pinned(w.c) <= 16 * KiB);
		assert_int_equal(mock_complete_sends(qp, mock_qp_sends_out(qp)), 0);
		mock_progress(w.c);
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(w.ret, 0);
	assert_int_equal(mock_sends(), 6);
	for (size_t i = 1; i < 6; i++)
		assert_int_not_equal(mock_send_at(i)->lkey, mock_send_at(i - 1)->lkey);
	assert_int_equal(rdmae_conn_pinned(w.c), 16 * KiB);
	rdmae_region_destroy(w.r);
	assert_int_equal(rdmae_conn_pinned(w.c), 0);
	rdmae_conn_destroy(w.c);
	fixture_assert_clean();
}

/* The last chunk of a region may be short: it counts for what it pins. A chunk over the bound never fits. */
static void test_on_demand_short_chunk(void **state)
{
	struct rdmae_run run = { 32 * KiB, 0, 4 * KiB };
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c = conn_rw(1, 64 * KiB);
	struct rdmae_region *r = on_demand(c, 40 * KiB, 16 * KiB);

	(void)state;
	write_ok(c, r, &fixture_peer, &run, 1);
	assert_int_equal(mock_chunk_mr(r, 2)->length, 8 * KiB);
	assert_int_equal(rdmae_conn_pinned(c), 8 * KiB);
	complete_all(c);

	rdmae_conn_set_pin_limit(c, 8 * KiB);
	run.local = 0;
	assert_int_equal(rdmae_write(c, r, &fixture_peer, &run, 1, &err), -ENOBUFS);
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	rdmae_region_destroy(r);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_split_and_deal, fixture_setup),
		cmocka_unit_test_setup(test_split_at_descriptor, fixture_setup),
		cmocka_unit_test_setup(test_split_at_chunk, fixture_setup),
		cmocka_unit_test_setup(test_coalesce, fixture_setup),
		cmocka_unit_test_setup(test_signal_every_16, fixture_setup),
		cmocka_unit_test_setup(test_signal_by_bytes, fixture_setup),
		cmocka_unit_test_setup(test_writes_in_flight_bound, fixture_setup),
		cmocka_unit_test_setup(test_read, fixture_setup),
		cmocka_unit_test_setup(test_pin_all_spans, fixture_setup),
		cmocka_unit_test_setup(test_on_demand_waits_for_room, fixture_setup),
		cmocka_unit_test_setup(test_pin_all_rollback, fixture_setup),
		cmocka_unit_test_setup(test_pin_all_enomem_names_memlock, fixture_setup),
		cmocka_unit_test_setup(test_odp, fixture_setup),
		cmocka_unit_test_setup(test_on_demand_shape, fixture_setup),
		cmocka_unit_test_setup(test_on_demand_pin_fails, fixture_setup),
		cmocka_unit_test_setup(test_on_demand_lru, fixture_setup),
		cmocka_unit_test_setup(test_on_demand_short_chunk, fixture_setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
