/* SPDX-License-Identifier: MIT */
/*
 * The source's cancel/COMPLETE boundary at the session level, over a
 * transport running on the mock verbs layer (mock_verbs.h): the engine's
 * own session and commit code sends real messages, and the test reads what
 * left and plays the destination.
 *
 * What is pinned: a cancel that takes effect before COMPLETE is posted keeps
 * COMPLETE off the wire and returns true, even when it comes from another
 * thread between the final fence and COMPLETE; once COMPLETE is posted a
 * cancel returns false and the migration completes; and a failure after
 * COMPLETE is "outcome unknown" unless the destination explained it.
 *
 * The session is put in the state the rounds leave it (ready, a final round
 * with the VM stopped) by hand: pre-flight and rounds are not under test.
 *
 * Then the source's side of protocol 5 (registration in pieces): through
 * its real pre-flight and a round, WRITEs go only into pieces the
 * destination advertised (DESCS), and a destination that stops advertising
 * fails the round with the block named, within the session's timeout; and
 * the destination's: it registers and advertises piece by piece, and not
 * once it has stopped.
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

#include "session_int.h"
#include "mock_fixture.h"
#include "mock_verbs.h"

static uint8_t ram[64 * 1024] __attribute__((aligned(4096)));
static const struct rdmae_block blocks[1] = {
	{ .name = "pc.ram", .host = ram, .len = sizeof(ram), .page_size = 4096 },
};

/* A source session as its rounds leave it: ready to complete after a final round. */
static struct rdmae_session *source(struct rdmae_conn *c, bool verify)
{
	struct rdmae_session_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;

	rdmae_session_opts_default(&o);
	o.no_verify = !verify;
	if (rdmae_session_create(&s, RDMAE_SOURCE, c, blocks, 1, &o, &err))
		fail_msg("session: %s", err.msg);
	atomic_store(&s->state, ST_READY);
	s->final_round = true;
	return s;
}

/* The destination's message, arrived and reaped before the source looks for it. */
static void from_dest(struct rdmae_conn *c, const void *msg, size_t len)
{
	assert_int_equal(mock_deliver_msg(c, 0, msg, (uint32_t)len, 0, 0, 0), 0);
	mock_progress(c);
}

static void dest_commit_ok(struct rdmae_conn *c)
{
	uint8_t m[RDMAE_MSG_SMALL_MAX];

	from_dest(c, m, rdmae_msg_commit_ok_encode(m, 0));
}

#define FENCE (-2)	/* sent_type: an empty message with the fence flag */

/* What a recorded WR carried: FENCE, an engine message type (decoded in full), or -1. */
static int sent_type(const struct mock_send *ms, const struct rdmae_session *s,
		     struct rdmae_msg *m)
{
	struct rdmae_data_hdr h;
	enum rdmae_wire_field f;

	if (ms->opcode != IBV_WR_SEND || rdmae_data_hdr_decode(ms->data, ms->ncopy, 0, &h, &f))
		return -1;
	if (!h.data_length)
		return (h.flags & RDMAE_FLAG_FENCE) ? FENCE : -1;
	if (h.remaining_data_length ||
	    rdmae_msg_decode(ms->data + h.data_offset, h.data_length, &s->ctx, m, NULL))
		return -1;
	return (int)m->type;
}

/* How many of the WRs recorded carried type. */
static size_t count_sent(const struct rdmae_session *s, int type)
{
	struct rdmae_msg m;
	size_t n = 0;

	for (size_t i = 0; i < mock_sends(); i++)
		n += sent_type(mock_send_at(i), s, &m) == type;
	return n;
}

/* The types of the WRs recorded, in order, as a string ("F F 9": two fences and COMPLETE). */
static void sent_seq(const struct rdmae_session *s, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < mock_sends(); i++) {
		struct rdmae_msg m;
		int t = sent_type(mock_send_at(i), s, &m);
		int k = snprintf(buf + o, len - o, "%s%s", o ? " " : "",
				 t == FENCE ? "F" : t < 0 ? "?" : rdmae_msg_type_name((unsigned)t));

		if (k < 0 || (size_t)k >= len - o)
			break;
		o += (size_t)k;
	}
}

static void assert_sent(const struct rdmae_session *s, const char *want)
{
	char got[256];

	sent_seq(s, got, sizeof(got));
	assert_string_equal(got, want);
}

/* ---- no cancel: the baseline ---- */

static void test_complete(void **state)
{
	struct rdmae_conn *c = mock_conn(2, NULL);
	struct rdmae_session *s = source(c, false);
	struct rdmae_err err = { 0 };
	struct rdmae_msg m;

	(void)state;
	dest_commit_ok(c);
	assert_int_equal(rdmae_session_complete(s, &err), 0);
	/* The final fence on every lane, then COMPLETE naming it, on lane 0. */
	assert_sent(s, "F F COMPLETE");
	assert_int_equal(mock_send_at(0)->lane, 0);
	assert_int_equal(mock_send_at(1)->lane, 1);
	assert_int_equal(mock_send_at(2)->lane, 0);
	assert_int_equal(sent_type(mock_send_at(2), s, &m), RDMAE_MSG_COMPLETE);
	assert_int_equal(m.u.complete.fence_seq, 1);
	assert_int_equal(m.u.complete.flags, RDMAE_COMPLETE_NO_VERIFY);
	assert_int_equal(m.u.complete.nblocks, 1);
	/* Done: a cancel now does not take effect, and nothing more leaves. */
	assert_false(rdmae_session_cancel(s, "too late"));
	assert_int_equal(mock_sends(), 3);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* Verifying: the block sums follow COMPLETE (the destination revokes and hashes meanwhile). */
static void test_complete_verified(void **state)
{
	struct rdmae_conn *c = mock_conn(1, NULL);
	struct rdmae_session *s = source(c, true);
	struct rdmae_err err = { 0 };
	struct rdmae_msg m;

	(void)state;
	dest_commit_ok(c);
	assert_int_equal(rdmae_session_complete(s, &err), 0);
	assert_sent(s, "F COMPLETE BLOCK_SUMS");
	assert_int_equal(sent_type(mock_send_at(1), s, &m), RDMAE_MSG_COMPLETE);
	assert_int_equal(m.u.complete.flags, 0);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- cancel before COMPLETE ---- */

static void test_cancel_before_complete(void **state)
{
	struct rdmae_conn *c = mock_conn(2, NULL);
	struct rdmae_session *s = source(c, false);
	struct rdmae_err err = { 0 };
	struct rdmae_msg m;

	(void)state;
	dest_commit_ok(c);
	assert_true(rdmae_session_cancel(s, "operator"));
	/* The peer is told why, and the connection is stopped with the cancel's code. */
	assert_sent(s, "CANCEL");
	assert_int_equal(sent_type(mock_send_at(0), s, &m), RDMAE_MSG_CANCEL);
	assert_string_equal(m.u.cancel.reason, "operator");
	assert_int_equal(rdmae_conn_error(c, NULL), -ECANCELED);

	/* COMPLETE never leaves: not even the final fence does. */
	assert_int_equal(rdmae_session_complete(s, &err), -ECANCELED);
	assert_non_null(strstr(err.msg, "cancelled: operator"));
	assert_int_equal(count_sent(s, RDMAE_MSG_COMPLETE), 0);
	assert_int_equal(count_sent(s, FENCE), 0);
	/* A second cancel: still off, and nothing more is sent. */
	assert_true(rdmae_session_cancel(s, "again"));
	assert_int_equal(mock_sends(), 1);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * The race the cancel lock exists for: a cancel from another thread lands
 * after the final fence is posted and before COMPLETE. The fence's
 * doorbell is held (with the connection lock) until the cancel has stopped
 * the session, so the cancel is always first to the decision.
 */
struct race {
	struct rdmae_session *s;
	pthread_t th;
	bool started;
	bool took;
	atomic_bool done;		/* the cancel returned */
};

static void *cancel_main(void *arg)
{
	struct race *r = arg;

	r->took = rdmae_session_cancel(r->s, "raced");
	atomic_store(&r->done, true);
	return NULL;
}

static void hold_fence_for_cancel(const struct mock_send *ms, void *arg)
{
	struct race *r = arg;
	struct rdmae_msg m;

	if (r->started || sent_type(ms, r->s, &m) != FENCE)
		return;
	r->started = true;
	if (pthread_create(&r->th, NULL, cancel_main, r))
		abort();
	/* A cancel that did not stop the session would return: then let the test see it. */
	while (!atomic_load(&r->s->stop) && !atomic_load(&r->done))
		sched_yield();
}

static void test_cancel_between_fence_and_complete(void **state)
{
	struct rdmae_conn *c = mock_conn(2, NULL);
	struct race r = { .s = source(c, false) };
	struct rdmae_err err = { 0 };

	(void)state;
	atomic_init(&r.done, false);
	dest_commit_ok(c);
	mock_set_send_hook(hold_fence_for_cancel, &r);
	assert_int_equal(rdmae_session_complete(r.s, &err), -ECANCELED);
	assert_true(r.started);
	assert_int_equal(pthread_join(r.th, NULL), 0);
	assert_true(r.took);
	assert_non_null(strstr(err.msg, "cancelled: raced"));
	/*
	 * Lane 0's fence went; lane 1's goes only if it is posted before the
	 * cancel's abort (no lane lock orders the two since the lock per
	 * lane). Either way COMPLETE does not.
	 */
	assert_in_range(count_sent(r.s, FENCE), 1, 2);
	assert_int_equal(count_sent(r.s, RDMAE_MSG_COMPLETE), 0);
	mock_set_send_hook(NULL, NULL);
	rdmae_session_destroy(r.s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- cancel after COMPLETE ---- */

struct completer {
	struct rdmae_session *s;
	atomic_bool posted;		/* COMPLETE is on the QP */
	int rc;
	struct rdmae_err err;
};

static void *complete_main(void *arg)
{
	struct completer *w = arg;

	w->rc = rdmae_session_complete(w->s, &w->err);
	return NULL;
}

static void complete_posted(const struct mock_send *ms, void *arg)
{
	struct completer *w = arg;
	struct rdmae_msg m;

	if (sent_type(ms, w->s, &m) == RDMAE_MSG_COMPLETE)
		atomic_store(&w->posted, true);
}

/*
 * COMPLETE has left and the source waits for the verdict: the destination
 * may be committing, so a cancel does not take effect, and the migration
 * completes when COMMIT_OK comes.
 */
static void test_cancel_after_complete(void **state)
{
	struct rdmae_conn *c = mock_conn(2, NULL);
	struct completer w = { .s = source(c, false) };
	pthread_t th;

	(void)state;
	atomic_init(&w.posted, false);
	mock_set_send_hook(complete_posted, &w);
	assert_int_equal(pthread_create(&th, NULL, complete_main, &w), 0);
	while (!atomic_load(&w.posted))
		sched_yield();
	assert_false(rdmae_session_cancel(w.s, "late"));
	dest_commit_ok(c);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(w.rc, 0);
	assert_sent(w.s, "F F COMPLETE");
	assert_int_equal(rdmae_conn_error(c, NULL), 0);
	mock_set_send_hook(NULL, NULL);
	rdmae_session_destroy(w.s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* The connection fails as COMPLETE is posted (the hook runs with the connection lock held). */
struct late {
	struct rdmae_session *s;
	struct rdmae_conn *c;
	int fail;
};

static void fail_after_complete(const struct mock_send *ms, void *arg)
{
	struct late *l = arg;
	struct rdmae_msg m;

	if (sent_type(ms, l->s, &m) == RDMAE_MSG_COMPLETE)
		mock_conn_fail_locked(l->c, l->fail, "the destination's host went away");
}

/* After COMPLETE, a failure the destination did not explain: it may have committed. */
static void test_failure_after_complete_is_unknown(void **state)
{
	struct rdmae_conn *c = mock_conn(1, NULL);
	struct late l = { .s = source(c, false), .c = c, .fail = -ECONNRESET };
	struct rdmae_err err = { 0 };

	(void)state;
	mock_set_send_hook(fail_after_complete, &l);
	assert_int_equal(rdmae_session_complete(l.s, &err), -ENOTRECOVERABLE);
	assert_non_null(strstr(err.msg, "outcome unknown"));
	/* Nothing is sent to a destination that may be running the guest. */
	assert_sent(l.s, "F COMPLETE");
	assert_false(rdmae_session_cancel(l.s, "later"));
	mock_set_send_hook(NULL, NULL);
	rdmae_session_destroy(l.s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* The destination's verdict arrived before the failure: the outcome is known, not committed. */
static void test_failure_after_verdict_is_known(void **state)
{
	static const struct {
		int type;
		int code;
	} verdicts[] = {
		{ RDMAE_MSG_COMMIT_FAIL, -EBADMSG },
		{ RDMAE_MSG_CANCEL, -ECANCELED },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(verdicts) / sizeof(verdicts[0]); i++) {
		struct rdmae_conn *c;
		struct late l = { .fail = -ECONNRESET };
		struct rdmae_err err = { 0 };
		uint8_t m[RDMAE_MSG_SMALL_MAX];
		size_t n;

		mock_reset();
		c = mock_conn(1, NULL);
		l.c = c;
		l.s = source(c, false);
		n = verdicts[i].type == RDMAE_MSG_COMMIT_FAIL ?
		    rdmae_msg_commit_fail_encode(m, -EBADMSG, 0, 3, "page 3 differs") :
		    rdmae_msg_cancel_encode(m, -ECANCELED, "destination operator");
		from_dest(c, m, n);
		mock_set_send_hook(fail_after_complete, &l);
		assert_int_equal(rdmae_session_complete(l.s, &err), verdicts[i].code);
		assert_int_not_equal(err.code, -ENOTRECOVERABLE);
		mock_set_send_hook(NULL, NULL);
		rdmae_session_destroy(l.s);
		rdmae_conn_destroy(c);
		fixture_assert_clean();
	}
}

/* ---- the source writes only into what the destination advertised (protocol 5) ---- */

/* A source through its real pre-flight, the destination's answers queued before it looks. */
static struct rdmae_session *source_preflight(struct rdmae_conn *c, int timeout_ms)
{
	struct rdmae_session_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	uint8_t m[RDMAE_MSG_SMALL_MAX];

	rdmae_session_opts_default(&o);
	o.no_verify = true;
	o.timeout_ms = timeout_ms;
	if (rdmae_session_create(&s, RDMAE_SOURCE, c, blocks, 1, &o, &err))
		fail_msg("session: %s", err.msg);
	from_dest(c, m, rdmae_msg_preflight_ok_encode(m, 1, RDMAE_WIRE_REG_PIN, 0));
	assert_int_equal(rdmae_session_preflight(s, &err), 0);
	return s;
}

static void dest_descs(struct rdmae_conn *c, uint64_t offset, const struct rdmae_bufdesc *d)
{
	uint8_t m[RDMAE_MSG_SMALL_MAX];

	from_dest(c, m, rdmae_msg_descs_encode(m, 0, offset, d, 1));
}

/* Bytes WRITten, each WRITE checked to lie inside one of the n pieces advertised. */
static uint64_t writes_inside(const struct rdmae_bufdesc *d, size_t n)
{
	uint64_t bytes = 0;

	for (size_t i = 0; i < mock_sends(); i++) {
		const struct mock_send *ms = mock_send_at(i);
		bool inside = false;

		if (ms->opcode != IBV_WR_RDMA_WRITE)
			continue;
		for (size_t j = 0; j < n; j++)
			inside |= ms->rkey == d[j].token && ms->remote_addr >= d[j].offset &&
				  ms->remote_addr + ms->length <= d[j].offset + d[j].length;
		assert_true(inside);
		bytes += ms->length;
	}
	return bytes;
}

/*
 * Two pieces advertised, one after the other: a round reaches the second
 * through DESCS taken while it writes, and no WRITE crosses from one
 * piece into the other (they are far apart at the destination).
 */
static void test_round_writes_advertised_pieces(void **state)
{
	const struct rdmae_bufdesc d[2] = {
		{ 0x10000000ull, 0x11, 16384 },
		{ 0x20000000ull, 0x22, sizeof(ram) - 16384 },
	};
	struct rdmae_conn *c = mock_conn(1, NULL);
	uint64_t bm[1] = { (1ull << (sizeof(ram) / 4096)) - 1 };
	const uint64_t *bms[1] = { bm };
	struct rdmae_err err = { 0 };
	struct rdmae_round_stats rs;
	struct rdmae_session *s;
	uint8_t m[RDMAE_MSG_SMALL_MAX];

	(void)state;
	memset(ram, 0x5a, sizeof(ram));
	s = source_preflight(c, 5000);
	dest_descs(c, 0, &d[0]);
	dest_descs(c, 16384, &d[1]);
	from_dest(c, m, rdmae_msg_round_ack_encode(m, 1, 0));
	assert_int_equal(rdmae_session_round(s, bms, &rs, &err), 0);
	assert_int_equal(rs.bytes, sizeof(ram));
	assert_int_equal(writes_inside(d, 2), sizeof(ram));
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	memset(ram, 0, sizeof(ram));
	fixture_assert_clean();
}

/*
 * A destination that advertises part of a block and then nothing: the
 * round writes what it may and fails within the session's timeout with an
 * error naming the block and how far it got, instead of hanging.
 */
static void test_round_fails_when_never_advertised(void **state)
{
	const struct rdmae_bufdesc d = { 0x10000000ull, 0x11, 16384 };
	struct rdmae_conn *c = mock_conn(1, NULL);
	uint64_t bm[1] = { (1ull << (sizeof(ram) / 4096)) - 1 };
	const uint64_t *bms[1] = { bm };
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;

	(void)state;
	memset(ram, 0x5a, sizeof(ram));
	s = source_preflight(c, 50);
	dest_descs(c, 0, &d);
	assert_int_equal(rdmae_session_round(s, bms, NULL, &err), -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "block 'pc.ram'"));
	assert_non_null(strstr(err.msg, "16384 of its 65536 bytes"));
	assert_int_equal(writes_inside(&d, 1), 16384);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	memset(ram, 0, sizeof(ram));
	fixture_assert_clean();
}

/*
 * Round 1 ends only once the destination has made the whole block
 * writable, even where the round wrote nothing: otherwise a guest of
 * mostly zero pages reaches its final round, the VM stopped, with the
 * destination still registering, and a page dirtied high up waits for it
 * inside the downtime. Only page 0 is dirty here; with the rest never
 * advertised the round fails on the timeout, and with it advertised the
 * round completes having written that one page.
 */
static void test_round_one_waits_for_whole_block(void **state)
{
	const struct rdmae_bufdesc d[2] = {
		{ 0x10000000ull, 0x11, 16384 },
		{ 0x20000000ull, 0x22, sizeof(ram) - 16384 },
	};
	uint64_t bm[1] = { 1 };
	const uint64_t *bms[1] = { bm };
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	struct rdmae_conn *c;
	uint8_t m[RDMAE_MSG_SMALL_MAX];

	(void)state;
	memset(ram, 0x5a, sizeof(ram));
	c = mock_conn(1, NULL);
	s = source_preflight(c, 50);
	dest_descs(c, 0, &d[0]);
	assert_int_equal(rdmae_session_round(s, bms, NULL, &err), -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "16384 of its 65536 bytes"));
	assert_int_equal(writes_inside(d, 1), 4096);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();

	mock_reset();
	c = mock_conn(1, NULL);
	s = source_preflight(c, 5000);
	dest_descs(c, 0, &d[0]);
	dest_descs(c, 16384, &d[1]);
	from_dest(c, m, rdmae_msg_round_ack_encode(m, 1, 0));
	assert_int_equal(rdmae_session_round(s, bms, NULL, &err), 0);
	assert_int_equal(writes_inside(d, 2), 4096);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	memset(ram, 0, sizeof(ram));
	fixture_assert_clean();
}

/* A DESCS that leaves a gap is refused before any descriptor of it is used. */
static void test_descs_gap_refused(void **state)
{
	const struct rdmae_bufdesc d = { 0x10000000ull, 0x11, 16384 };
	struct rdmae_conn *c = mock_conn(1, NULL);
	uint64_t bm[1] = { 1 };
	const uint64_t *bms[1] = { bm };
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;

	(void)state;
	memset(ram, 0x5a, sizeof(ram));
	s = source_preflight(c, 5000);
	dest_descs(c, 16384, &d);
	assert_int_equal(rdmae_session_round(s, bms, NULL, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "gap"));
	assert_int_equal(writes_inside(&d, 1), 0);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	memset(ram, 0, sizeof(ram));
	fixture_assert_clean();
}


/* ---- the destination registers in pieces and advertises each (protocol 5) ---- */

static uint8_t big_ram[24u << 20] __attribute__((aligned(4096)));

/* The DESCS among the WRs recorded, decoded as the source would, frontier advancing. */
static size_t sent_descs(uint64_t *offs, uint64_t *lens, size_t cap)
{
	static const uint64_t blen[1] = { sizeof(big_ram) };
	static const uint64_t bpages[1] = { sizeof(big_ram) / 4096 };
	uint64_t adv[1] = { 0 };
	const struct rdmae_proto_ctx ctx = {
		.nblocks = 1, .block_len = blen, .block_pages = bpages, .max_msg = 1 << 20,
		.advertised = adv,
	};
	size_t n = 0;

	for (size_t i = 0; i < mock_sends() && n < cap; i++) {
		const struct mock_send *ms = mock_send_at(i);
		struct rdmae_data_hdr h;
		enum rdmae_wire_field f;
		struct rdmae_msg m;

		if (ms->opcode != IBV_WR_SEND || rdmae_data_hdr_decode(ms->data, ms->ncopy, 0, &h, &f) ||
		    !h.data_length ||
		    rdmae_msg_decode(ms->data + h.data_offset, h.data_length, &ctx, &m, NULL) ||
		    m.type != RDMAE_MSG_DESCS)
			continue;
		offs[n] = m.u.descs.offset;
		lens[n] = m.u.descs.len;
		adv[0] += m.u.descs.len;
		n++;
	}
	return n;
}

/*
 * Past pre-flight's checks (done by hand here: the memlock check is the
 * host's), the destination registers 8 MiB, then 16 MiB, advertising each
 * as it is registered, in order and without gaps; then there is nothing
 * left. A session that stopped registering (the final round, a cancel)
 * registers and advertises nothing more.
 */
static void test_dest_advertises_pieces(void **state)
{
	const struct rdmae_block b = {
		.name = "pc.ram", .host = big_ram, .len = sizeof(big_ram), .page_size = 4096,
	};
	struct rdmae_conn *c = mock_conn(1, NULL);
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	uint64_t offs[4] = { 0 }, lens[4] = { 0 };

	(void)state;
	if (rdmae_session_create(&s, RDMAE_DEST, c, &b, 1, NULL, &err))
		fail_msg("session: %s", err.msg);
	sess_set_ctx(s);
	assert_int_equal(sess_pieces_init(&s->blk[0], false), 0);
	assert_int_equal(s->blk[0].nloc, 2);
	assert_int_equal(sess_dst_advertise(s, &err), 1);
	assert_int_equal(sess_dst_advertise(s, &err), 1);
	assert_int_equal(sess_dst_advertise(s, &err), 0);
	assert_int_equal(sent_descs(offs, lens, 4), 2);
	assert_int_equal(offs[0], 0);
	assert_int_equal(lens[0], 8u << 20);
	assert_int_equal(offs[1], 8u << 20);
	assert_int_equal(lens[1], 16u << 20);
	assert_int_equal(s->st.reg_pieces, 2);

	/* Stopped (a cancel destroys the pieces and stops registration): nothing more. */
	sess_destroy_regions(s);
	assert_int_equal(s->blk[0].nready, 0);
	assert_int_equal(sess_dst_advertise(s, &err), 0);
	assert_int_equal(sent_descs(offs, lens, 4), 2);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * rdmae_session_dest_advertise_all: every piece registered and advertised
 * in one call, in order, reading nothing; refused before pre-flight.
 */
static void test_dest_advertise_all(void **state)
{
	const struct rdmae_block b = {
		.name = "pc.ram", .host = big_ram, .len = sizeof(big_ram), .page_size = 4096,
	};
	struct rdmae_conn *c = mock_conn(1, NULL);
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	uint64_t offs[4] = { 0 }, lens[4] = { 0 };

	(void)state;
	if (rdmae_session_create(&s, RDMAE_DEST, c, &b, 1, NULL, &err))
		fail_msg("session: %s", err.msg);
	assert_int_equal(rdmae_session_dest_advertise_all(s, &err), -EINVAL);
	assert_int_equal(sent_descs(offs, lens, 4), 0);
	sess_set_ctx(s);
	assert_int_equal(sess_pieces_init(&s->blk[0], false), 0);
	atomic_store(&s->state, ST_READY);	/* what a passed pre-flight leaves */
	assert_int_equal(rdmae_session_dest_advertise_all(s, &err), 0);
	assert_int_equal(sent_descs(offs, lens, 4), 2);
	assert_int_equal(offs[0], 0);
	assert_int_equal(lens[0], 8u << 20);
	assert_int_equal(offs[1], 8u << 20);
	assert_int_equal(lens[1], 16u << 20);
	assert_int_equal(s->st.reg_pieces, 2);
	/* Everything is in: a second call registers nothing more. */
	assert_int_equal(rdmae_session_dest_advertise_all(s, &err), 0);
	assert_int_equal(sent_descs(offs, lens, 4), 2);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/*
 * Whole pieces (ODP, ON_DEMAND) stop at what one DESCS can advertise
 * (64 descriptors of 1 GiB): a 65 GiB ODP block on a destination takes two,
 * where one would not fit its DESCS and fail pre-flight. Pinned pieces
 * keep their 8 MiB doubling to 256 MiB.
 */
static void test_whole_pieces_fit_one_descs(void **state)
{
	struct sblock b;

	(void)state;
	memset(&b, 0, sizeof(b));
	b.b.len = 65ull << 30;
	b.b.page_size = 4096;
	assert_int_equal(sess_pieces_init(&b, true), 0);
	assert_int_equal(b.nloc, 2);
	assert_int_equal(b.loc[0].len, (uint64_t)RDMAE_PROTO_MAX_DESCS * RDMAE_DESC_SPAN);
	assert_int_equal(b.loc[1].off, 64ull << 30);
	assert_int_equal(b.loc[1].len, 1ull << 30);
	free(b.loc);
	memset(&b, 0, sizeof(b));
	b.b.len = 3ull << 30;
	b.b.page_size = 4096;
	assert_int_equal(sess_pieces_init(&b, true), 0);
	assert_int_equal(b.nloc, 1);
	free(b.loc);
	memset(&b, 0, sizeof(b));
	b.b.len = 40ull << 20;
	b.b.page_size = 4096;
	assert_int_equal(sess_pieces_init(&b, false), 0);
	assert_int_equal(b.nloc, 3);	/* 8, 16, then the 16 MiB left of 32 */
	assert_int_equal(b.loc[2].len, 16u << 20);
	free(b.loc);
}

/*
 * rdmae_session_release deregisters this side's guest RAM once the
 * migration is over, and times it from COMMIT_OK; it refuses while pieces
 * may still take WRITEs. After it, destroy deregisters nothing more.
 */
static void test_release_after_commit(void **state)
{
	const struct rdmae_block b = {
		.name = "pc.ram", .host = big_ram, .len = sizeof(big_ram), .page_size = 4096,
	};
	struct rdmae_conn *c = mock_conn(1, NULL);
	struct rdmae_session_stats st;
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	char log[256];
	size_t mark;

	(void)state;
	if (rdmae_session_create(&s, RDMAE_DEST, c, &b, 1, NULL, &err))
		fail_msg("session: %s", err.msg);
	sess_set_ctx(s);
	assert_int_equal(sess_pieces_init(&s->blk[0], false), 0);
	atomic_store(&s->state, ST_READY);
	assert_int_equal(rdmae_session_dest_advertise_all(s, &err), 0);
	assert_int_equal(s->blk[0].nready, 2);
	/* Mid-migration: the source may still write into the pieces. */
	assert_int_equal(rdmae_session_release(s, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "still in progress"));
	assert_int_equal(s->blk[0].nready, 2);

	/* Committed (as dcs_commit_ok leaves it): release unpins both pieces. */
	s->commit_at_ns = rdmae_now_ns();
	atomic_store(&s->state, ST_DONE);
	mark = mock_log_len();
	assert_int_equal(rdmae_session_release(s, &err), 0);
	mock_log_string(mark, log, sizeof(log));
	assert_string_equal(log, "-M -M");
	assert_int_equal(s->blk[0].nready, 0);
	assert_int_equal(rdmae_session_stats(s, &st), 0);
	assert_true(st.dereg_after_commit_ns >= st.dereg_ns);
	/* Again: nothing left, and the figures stand. */
	assert_int_equal(rdmae_session_release(s, &err), 0);
	mark = mock_log_len();
	rdmae_session_destroy(s);
	mock_log_string(mark, log, sizeof(log));
	assert_null(strstr(log, "M"));
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* ---- registration modes: ODP where the device has it (protocol 6) ---- */

/* The source's BLOCKS for blocks[], in the given mode, arrived at a destination. */
static void from_source_blocks(struct rdmae_conn *c, uint32_t mode)
{
	struct rdmae_msg_block b = { .name = "pc.ram", .len = sizeof(ram), .page_size = 4096 };
	uint8_t m[512];

	assert_true(rdmae_msg_blocks_size(1) <= sizeof(m));
	assert_int_equal(mock_deliver_msg(c, 0, m, (uint32_t)rdmae_msg_blocks_encode(m, &b, 1, mode, 0),
					  0, 0, 0), 0);
	mock_progress(c);
}

static struct rdmae_session *dest_session(struct rdmae_conn *c, enum rdmae_reg_mode mode)
{
	struct rdmae_session_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;

	rdmae_session_opts_default(&o);
	o.reg_mode = mode;
	o.timeout_ms = 5000;
	if (rdmae_session_create(&s, RDMAE_DEST, c, blocks, 1, &o, &err))
		fail_msg("session: %s", err.msg);
	return s;
}

/*
 * A device with ODP for RC WRITE, the default mode: the destination
 * registers the block as one explicit ODP MR (remotely writable, no
 * pinning, so no memlock check), says ODP in PREFLIGHT_OK and advertises
 * the whole block at once; both sides' modes are in its stats.
 */
static void test_dest_odp_where_device_has_it(void **state)
{
	struct rdmae_session_stats st;
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	struct rdmae_conn *c;
	struct rdmae_msg m;
	size_t ok = SIZE_MAX;
	int acc;

	(void)state;
	mock_set_odp_write(true);
	c = mock_conn(1, NULL);
	s = dest_session(c, RDMAE_REG_AUTO);
	from_source_blocks(c, RDMAE_WIRE_REG_PIN);
	assert_int_equal(rdmae_session_preflight(s, &err), 0);
	for (size_t i = 0; i < mock_sends(); i++) {
		int t = sent_type(mock_send_at(i), s, &m);

		if (t == RDMAE_MSG_PREFLIGHT_OK) {
			ok = i;
			assert_int_equal(m.u.preflight_ok.reg_mode, RDMAE_WIRE_REG_ODP);
		}
	}
	assert_int_not_equal(ok, SIZE_MAX);
	/* One piece, the whole block, registered and advertised (DESCS after PREFLIGHT_OK). */
	assert_int_equal(s->blk[0].nloc, 1);
	assert_int_equal(s->blk[0].nready, 1);
	assert_int_equal(s->blk[0].loc[0].len, sizeof(ram));
	assert_int_equal(mock_sends(), ok + 2);
	acc = mock_mr_access(mock_region_mr(s->blk[0].loc[0].region, 0));
	assert_true(acc & IBV_ACCESS_ON_DEMAND);
	assert_true(acc & IBV_ACCESS_REMOTE_WRITE);
	assert_int_equal(rdmae_session_stats(s, &st), 0);
	assert_int_equal(st.dst_reg_mode, RDMAE_REG_ODP);
	assert_int_equal(st.src_reg_mode, RDMAE_REG_PIN_ALL);
	rdmae_session_cancel(s, "test over");
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* reg=pin-all on the same device pins: ODP is the default, not a must. */
static void test_dest_pin_all_forced(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	struct rdmae_conn *c;

	(void)state;
	mock_set_odp_write(true);
	c = mock_conn(1, NULL);
	s = dest_session(c, RDMAE_REG_PIN_ALL);
	assert_int_equal(s->mode, RDMAE_REG_PIN_ALL);
	rdmae_session_destroy(s);
	/* And without ODP the default pins, as on rxe. */
	rdmae_conn_destroy(c);
	mock_set_odp_write(false);
	c = mock_conn(1, NULL);
	s = dest_session(c, RDMAE_REG_AUTO);
	assert_int_equal(s->mode, RDMAE_REG_PIN_ALL);
	rdmae_session_destroy(s);
	s = dest_session(c, RDMAE_REG_ON_DEMAND);
	assert_int_equal(s->mode, RDMAE_REG_PIN_ALL);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	(void)err;
	fixture_assert_clean();
}

/*
 * reg=odp on a destination whose device lacks ODP: pre-flight refuses
 * before pinning anything, and the source is told why in PREFLIGHT_ERR,
 * naming the device.
 */
static void test_dest_odp_refused_without_device_support(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	struct rdmae_conn *c = mock_conn(1, NULL);
	struct rdmae_msg m;
	bool told = false;
	size_t mark = mock_log_len();
	char log[64];

	(void)state;
	s = dest_session(c, RDMAE_REG_ODP);
	from_source_blocks(c, RDMAE_WIRE_REG_PIN);
	assert_int_equal(rdmae_session_preflight(s, &err), -EOPNOTSUPP);
	assert_non_null(strstr(err.msg, "reg=odp"));
	assert_non_null(strstr(err.msg, "mock0"));
	for (size_t i = 0; i < mock_sends(); i++)
		if (sent_type(mock_send_at(i), s, &m) == RDMAE_MSG_PREFLIGHT_ERR) {
			told = true;
			assert_int_equal(m.u.preflight_err.error, -EOPNOTSUPP);
			assert_non_null(strstr(m.u.preflight_err.reason, "mock0"));
		}
	assert_true(told);
	mock_log_string(mark, log, sizeof(log));
	assert_null(strstr(log, "+M"));
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* reg=odp on a source without ODP: refused before BLOCKS leaves, naming the device. */
static void test_src_odp_refused_without_device_support(void **state)
{
	struct rdmae_session_opts o;
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	struct rdmae_conn *c = mock_conn(1, NULL);

	(void)state;
	rdmae_session_opts_default(&o);
	o.reg_mode = RDMAE_REG_ODP;
	if (rdmae_session_create(&s, RDMAE_SOURCE, c, blocks, 1, &o, &err))
		fail_msg("session: %s", err.msg);
	assert_int_equal(rdmae_session_preflight(s, &err), -EOPNOTSUPP);
	assert_non_null(strstr(err.msg, "on the source: device mock0"));
	assert_int_equal(count_sent(s, RDMAE_MSG_BLOCKS), 0);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

/* The source learns the destination's mode from PREFLIGHT_OK, and says its own in BLOCKS. */
static void test_src_learns_dest_mode(void **state)
{
	struct rdmae_session_opts o;
	struct rdmae_session_stats st;
	struct rdmae_err err = { 0 };
	struct rdmae_session *s;
	struct rdmae_conn *c;
	uint8_t m[RDMAE_MSG_SMALL_MAX];
	struct rdmae_msg dm;
	bool announced = false;

	(void)state;
	mock_set_odp_write(true);
	c = mock_conn(1, NULL);
	rdmae_session_opts_default(&o);
	o.reg_mode = RDMAE_REG_ODP;
	o.no_verify = true;
	if (rdmae_session_create(&s, RDMAE_SOURCE, c, blocks, 1, &o, &err))
		fail_msg("session: %s", err.msg);
	from_dest(c, m, rdmae_msg_preflight_ok_encode(m, 1, RDMAE_WIRE_REG_ODP, 0));
	assert_int_equal(rdmae_session_preflight(s, &err), 0);
	for (size_t i = 0; i < mock_sends(); i++)
		if (sent_type(mock_send_at(i), s, &dm) == RDMAE_MSG_BLOCKS) {
			announced = true;
			assert_int_equal(dm.u.blocks.reg_mode, RDMAE_WIRE_REG_ODP);
		}
	assert_true(announced);
	assert_true(mock_mr_access(mock_region_mr(s->blk[0].loc[0].region, 0)) &
		    IBV_ACCESS_ON_DEMAND);
	assert_int_equal(rdmae_session_stats(s, &st), 0);
	assert_int_equal(st.src_reg_mode, RDMAE_REG_ODP);
	assert_int_equal(st.dst_reg_mode, RDMAE_REG_ODP);
	rdmae_session_destroy(s);
	rdmae_conn_destroy(c);
	fixture_assert_clean();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_complete, fixture_setup),
		cmocka_unit_test_setup(test_complete_verified, fixture_setup),
		cmocka_unit_test_setup(test_cancel_before_complete, fixture_setup),
		cmocka_unit_test_setup(test_cancel_between_fence_and_complete, fixture_setup),
		cmocka_unit_test_setup(test_cancel_after_complete, fixture_setup),
		cmocka_unit_test_setup(test_failure_after_complete_is_unknown, fixture_setup),
		cmocka_unit_test_setup(test_failure_after_verdict_is_known, fixture_setup),
		cmocka_unit_test_setup(test_round_writes_advertised_pieces, fixture_setup),
		cmocka_unit_test_setup(test_round_fails_when_never_advertised, fixture_setup),
		cmocka_unit_test_setup(test_round_one_waits_for_whole_block, fixture_setup),
		cmocka_unit_test_setup(test_descs_gap_refused, fixture_setup),
		cmocka_unit_test_setup(test_dest_advertises_pieces, fixture_setup),
		cmocka_unit_test_setup(test_dest_advertise_all, fixture_setup),
		cmocka_unit_test_setup(test_release_after_commit, fixture_setup),
		cmocka_unit_test_setup(test_whole_pieces_fit_one_descs, fixture_setup),
		cmocka_unit_test_setup(test_dest_odp_where_device_has_it, fixture_setup),
		cmocka_unit_test_setup(test_dest_pin_all_forced, fixture_setup),
		cmocka_unit_test_setup(test_dest_odp_refused_without_device_support, fixture_setup),
		cmocka_unit_test_setup(test_src_odp_refused_without_device_support, fixture_setup),
		cmocka_unit_test_setup(test_src_learns_dest_mode, fixture_setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
