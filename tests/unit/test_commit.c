/* SPDX-License-Identifier: MIT */
/*
 * The commit's rules without a connection (engine/commit_rules.h): cancel
 * against the point of no return, what the destination requires of
 * COMPLETE, the bound on page-sum requests, and the order of the
 * destination's commit steps; and the page sums kept through the rounds
 * (engine/pagesums.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "checksum.h"
#include "commit_rules.h"
#include "pagesums.h"

/* ---- cancel against COMPLETE / COMMIT_OK ---- */

static void test_cancel_before_decision(void **state)
{
	struct rdmae_commit_gate g = { 0 };

	(void)state;
	assert_true(rdmae_gate_cancel(&g));
	/* COMPLETE may not leave after a cancel that took effect. */
	assert_int_equal(rdmae_gate_decide(&g), -ECANCELED);
	assert_false(g.decided);
	/* A second cancel: the migration is still off. */
	assert_true(rdmae_gate_cancel(&g));
}

static void test_cancel_after_decision(void **state)
{
	struct rdmae_commit_gate g = { 0 };

	(void)state;
	assert_int_equal(rdmae_gate_decide(&g), 0);
	/* COMPLETE left: the destination decides, the cancel does not take effect. */
	assert_false(rdmae_gate_cancel(&g));
	assert_false(g.stopped);
}

/* Two threads race, as a canceller and rdmae_session_complete do, under one lock. */
struct race {
	pthread_mutex_t lock;
	struct rdmae_commit_gate g;
	pthread_barrier_t go;
	bool cancelled;
	int decided;
};

static void *race_cancel(void *arg)
{
	struct race *r = arg;

	pthread_barrier_wait(&r->go);
	pthread_mutex_lock(&r->lock);
	r->cancelled = rdmae_gate_cancel(&r->g);
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

static void test_cancel_race(void **state)
{
	int i;

	(void)state;
	for (i = 0; i < 200; i++) {
		struct race r = { .g = { 0 } };
		pthread_t th;

		pthread_mutex_init(&r.lock, NULL);
		pthread_barrier_init(&r.go, NULL, 2);
		assert_int_equal(pthread_create(&th, NULL, race_cancel, &r), 0);
		pthread_barrier_wait(&r.go);
		pthread_mutex_lock(&r.lock);
		r.decided = rdmae_gate_decide(&r.g);
		pthread_mutex_unlock(&r.lock);
		pthread_join(th, NULL);
		/* Exactly one of them wins: never a cancel that returned true and a COMPLETE sent. */
		assert_true(r.cancelled != (r.decided == 0));
		pthread_barrier_destroy(&r.go);
		pthread_mutex_destroy(&r.lock);
	}
}

/* ---- what COMPLETE must find at the destination ---- */

static void test_complete_needs_a_final_round(void **state)
{
	struct rdmae_dst_progress p = { 0 };
	struct rdmae_msg_complete c = { 0 };
	char why[RDMAE_PROTO_REASON_LEN];

	(void)state;
	/* COMPLETE after no round at all. */
	assert_int_equal(rdmae_commit_check(&p, &c, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "no round"));
	/* After rounds, the last of which was not FINAL, even with matching counts. */
	p.rounds = 3;
	c.rounds = 3;
	assert_int_equal(rdmae_commit_check(&p, &c, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "not FINAL"));
	p.last_final = true;
	assert_int_equal(rdmae_commit_check(&p, &c, why, sizeof(why)), 0);
	/* Counts must match. */
	c.rounds = 4;
	assert_int_equal(rdmae_commit_check(&p, &c, why, sizeof(why)), -EPROTO);
	c.rounds = 3;
	c.state_bytes = 1;
	assert_int_equal(rdmae_commit_check(&p, &c, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "state bytes"));
}

static void test_destination_requires_verification(void **state)
{
	struct rdmae_dst_progress p = { .rounds = 1, .last_final = true };
	struct rdmae_msg_complete c = { .rounds = 1, .flags = RDMAE_COMPLETE_NO_VERIFY };
	char why[RDMAE_PROTO_REASON_LEN];

	(void)state;
	assert_int_equal(rdmae_commit_check(&p, &c, why, sizeof(why)), 0);
	p.require_verify = true;
	assert_int_equal(rdmae_commit_check(&p, &c, why, sizeof(why)), -EPERM);
	assert_non_null(strstr(why, "requires"));
	c.flags = 0;
	assert_int_equal(rdmae_commit_check(&p, &c, why, sizeof(why)), 0);
}

/* ---- page sum requests are bounded ---- */

static void test_sums_requests_bounded(void **state)
{
	struct rdmae_sums_guard g = { 0 };
	char why[RDMAE_PROTO_REASON_LEN];

	(void)state;
	/* Must start at page 0. */
	assert_int_equal(rdmae_sums_guard_take(&g, 2, 5, 10, why, sizeof(why)), -EPROTO);
	/* One block, in ascending contiguous chunks. */
	assert_int_equal(rdmae_sums_guard_take(&g, 2, 0, 100, why, sizeof(why)), 0);
	assert_int_equal(rdmae_sums_guard_take(&g, 2, 100, 50, why, sizeof(why)), 0);
	/* The same range again: a destination going round in circles. */
	assert_int_equal(rdmae_sums_guard_take(&g, 2, 100, 50, why, sizeof(why)), -EPROTO);
	assert_int_equal(rdmae_sums_guard_take(&g, 2, 0, 100, why, sizeof(why)), -EPROTO);
	/* A second block. */
	assert_int_equal(rdmae_sums_guard_take(&g, 3, 0, 10, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "block 3"));
	/* A gap. */
	assert_int_equal(rdmae_sums_guard_take(&g, 2, 151, 1, why, sizeof(why)), -EPROTO);
	assert_int_equal(rdmae_sums_guard_take(&g, 2, 150, 1, why, sizeof(why)), 0);
}

/* ---- the destination's commit: revoke before verify ---- */

struct trace {
	char steps[16];
	size_t n;
	int fail_at;			/* step letter that fails, or 0 */
	int refused;
	bool verified_arg;
};

static int step(void *arg, char c)
{
	struct trace *t = arg;

	t->steps[t->n++] = c;
	return t->fail_at == c ? -EIO : 0;
}

static int m_fence(void *arg, uint32_t seq, struct rdmae_err *err)
{
	(void)seq;
	(void)err;
	return step(arg, 'F');
}

static int m_refuse(void *arg, int code, const char *why, struct rdmae_err *err)
{
	struct trace *t = arg;

	(void)why;
	(void)err;
	t->refused = code;
	step(arg, 'X');
	return code;
}

static int m_revoke(void *arg, struct rdmae_err *err)
{
	(void)err;
	return step(arg, 'R');
}

static int m_verify(void *arg, struct rdmae_err *err)
{
	(void)err;
	return step(arg, 'V');
}

static int m_decide(void *arg, struct rdmae_err *err)
{
	(void)err;
	return step(arg, 'D');
}

static int m_ok(void *arg, bool verified, struct rdmae_err *err)
{
	struct trace *t = arg;

	(void)err;
	t->verified_arg = verified;
	return step(arg, 'K');
}

static const struct rdmae_dst_commit_ops mock_ops = {
	.fence_wait = m_fence, .refuse = m_refuse, .revoke = m_revoke,
	.verify = m_verify, .decide = m_decide, .commit_ok = m_ok,
};

static int run_commit(struct trace *t, const struct rdmae_dst_progress *p,
		      const struct rdmae_msg_complete *c, bool *verified)
{
	struct rdmae_err e = { 0 };

	return rdmae_dst_commit(&mock_ops, t, p, c, verified, &e);
}

static void test_commit_revokes_before_verifying(void **state)
{
	struct rdmae_dst_progress p = { .rounds = 2, .last_final = true };
	struct rdmae_msg_complete c = { .rounds = 2 };
	struct trace t = { .n = 0 };
	bool verified = false;

	(void)state;
	assert_int_equal(run_commit(&t, &p, &c, &verified), 0);
	assert_string_equal(t.steps, "FRVDK");
	assert_true(verified);
	assert_true(t.verified_arg);

	/* Unverified (allowed here): still revoked before COMMIT_OK. */
	memset(&t, 0, sizeof(t));
	c.flags = RDMAE_COMPLETE_NO_VERIFY;
	assert_int_equal(run_commit(&t, &p, &c, &verified), 0);
	assert_string_equal(t.steps, "FRDK");
	assert_false(verified);

	/* A revoke that fails: nothing is verified, nothing committed. */
	memset(&t, 0, sizeof(t));
	c.flags = 0;
	t.fail_at = 'R';
	assert_int_equal(run_commit(&t, &p, &c, &verified), -EIO);
	assert_string_equal(t.steps, "FR");

	/* A cancel that won the lock: no COMMIT_OK. */
	memset(&t, 0, sizeof(t));
	t.fail_at = 'D';
	assert_int_equal(run_commit(&t, &p, &c, &verified), -EIO);
	assert_string_equal(t.steps, "FRVD");
}

static void test_commit_refuses_before_anything(void **state)
{
	struct rdmae_dst_progress p = { .rounds = 2, .last_final = false };
	struct rdmae_msg_complete c = { .rounds = 2 };
	struct trace t = { .n = 0 };
	bool verified = true;

	(void)state;
	/* Not FINAL: COMMIT_FAIL, no verification, no COMMIT_OK. */
	assert_int_equal(run_commit(&t, &p, &c, &verified), -EPROTO);
	assert_string_equal(t.steps, "FX");
	assert_int_equal(t.refused, -EPROTO);
	assert_false(verified);

	/* NO_VERIFY at a destination that requires verification. */
	memset(&t, 0, sizeof(t));
	p.last_final = true;
	p.require_verify = true;
	c.flags = RDMAE_COMPLETE_NO_VERIFY;
	assert_int_equal(run_commit(&t, &p, &c, &verified), -EPERM);
	assert_string_equal(t.steps, "FX");
}

/* ---- page sums kept through the rounds ---- */

#define PS 4096ull
#define NP 130				/* more than two bitmap words, not a multiple of 64 */

static void test_pagesums_follow_the_rounds(void **state)
{
	uint8_t *src = calloc(NP, PS), *dst = calloc(NP, PS);
	struct rdmae_pagesums s, d;
	uint64_t sd, dd, full, hashed;
	struct rdmae_err e = { 0 };

	(void)state;
	assert_non_null(src);
	assert_non_null(dst);
	assert_int_equal(rdmae_pagesums_init(&s, NP, PS, &e), 0);
	assert_int_equal(rdmae_pagesums_init(&d, NP, PS, &e), 0);
	for (int i = 0; i < NP; i += 3)
		memset(src + (size_t)i * PS, i + 1, PS);

	/* Round 1: everything; data pages hashed as sent, zero pages known. */
	for (int i = 0; i < NP; i++) {
		if (i % 3 == 0) {
			rdmae_pagesums_hash(&s, src, (uint64_t)i, 1);
			rdmae_pagesums_mark(&d, (uint64_t)i, 1);
			memcpy(dst + (size_t)i * PS, src + (size_t)i * PS, PS);
		} else {
			rdmae_pagesums_set_zero(&s, (uint64_t)i, 1);
			rdmae_pagesums_zero_filled(&d, (uint64_t)i, 1);
		}
	}
	/* After the fence the destination hashes every stale page: all of them, once. */
	assert_int_equal(rdmae_pagesums_hash_stale(&d, dst, NULL, &hashed, &e), 0);
	assert_int_equal(hashed, NP);

	/* Round 2: page 7 changes and is resent; page 9 becomes zero. */
	memset(src + 7 * PS, 0xab, PS);
	rdmae_pagesums_hash(&s, src, 7, 1);
	rdmae_pagesums_mark(&d, 7, 1);
	memcpy(dst + 7 * PS, src + 7 * PS, PS);
	memset(src + 9 * PS, 0, PS);
	rdmae_pagesums_set_zero(&s, 9, 1);
	memset(dst + 9 * PS, 0, PS);
	rdmae_pagesums_zero_filled(&d, 9, 1);
	assert_int_equal(rdmae_pagesums_hash_stale(&d, dst, NULL, &hashed, &e), 0);
	/* Only what the round wrote is hashed again. */
	assert_int_equal(hashed, 1);

	assert_int_equal(rdmae_pagesums_hash_stale(&s, src, NULL, &hashed, &e), 0);
	assert_int_equal(hashed, 0);
	assert_int_equal(rdmae_pagesums_digest(&s, &sd, &e), 0);
	assert_int_equal(rdmae_pagesums_digest(&d, &dd, &e), 0);
	assert_int_equal(rdmae_block_sum(src, NP, PS, NULL, &full, &e), 0);
	/* Kept sums digest to what a full pass over memory gives, on both sides. */
	assert_true(sd == full);
	assert_true(dd == full);

	/* A WRITE the destination was told of but that landed differently: caught. */
	dst[7 * PS + 5] ^= 1;
	rdmae_pagesums_mark(&d, 7, 1);
	assert_int_equal(rdmae_pagesums_hash_stale(&d, dst, NULL, &hashed, &e), 0);
	assert_int_equal(rdmae_pagesums_digest(&d, &dd, &e), 0);
	assert_true(dd != full);
	assert_true(d.sums[7] != s.sums[7]);

	/* A zero fill of a page with a pending WRITE keeps it stale: hashed from memory. */
	rdmae_pagesums_mark(&d, 7, 1);
	rdmae_pagesums_zero_filled(&d, 7, 1);
	assert_int_equal(rdmae_pagesums_hash_stale(&d, dst, NULL, &hashed, &e), 0);
	assert_int_equal(hashed, 1);

	rdmae_pagesums_free(&s);
	rdmae_pagesums_free(&d);
	free(src);
	free(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cancel_before_decision),
		cmocka_unit_test(test_cancel_after_decision),
		cmocka_unit_test(test_cancel_race),
		cmocka_unit_test(test_complete_needs_a_final_round),
		cmocka_unit_test(test_destination_requires_verification),
		cmocka_unit_test(test_sums_requests_bounded),
		cmocka_unit_test(test_commit_revokes_before_verifying),
		cmocka_unit_test(test_commit_refuses_before_anything),
		cmocka_unit_test(test_pagesums_follow_the_rounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
