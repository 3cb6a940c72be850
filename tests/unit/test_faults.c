/* SPDX-License-Identifier: MIT */
/* RDMAE_TEST_FAULTS: what the parser takes, and what it refuses by name. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "faults.h"

static void test_none(void **state)
{
	struct rdmae_faults f = { .recv_hold_ms = 7 };
	struct rdmae_err e = { 0 };

	(void)state;
	assert_int_equal(rdmae_faults_parse(NULL, &f, &e), 0);
	assert_int_equal(f.recv_hold_ms, 0);
	assert_false(f.no_sync_ack);
	assert_false(f.recheck);
	assert_int_equal(rdmae_faults_parse("", &f, &e), 0);
	assert_int_equal(f.recv_hold_ms, 0);
}

static void test_both(void **state)
{
	struct rdmae_faults f;
	struct rdmae_err e = { 0 };

	(void)state;
	assert_int_equal(rdmae_faults_parse("recv_hold=2:30,no_sync_ack", &f, &e), 0);
	assert_int_equal(f.recv_hold_lane, 2);
	assert_int_equal(f.recv_hold_ms, 30);
	assert_true(f.no_sync_ack);
	assert_int_equal(rdmae_faults_parse("no_sync_ack", &f, &e), 0);
	assert_int_equal(f.recv_hold_ms, 0);
	assert_true(f.no_sync_ack);
	assert_false(f.recheck);
	assert_int_equal(rdmae_faults_parse("recheck,no_sync_ack", &f, &e), 0);
	assert_true(f.recheck);
	assert_true(f.no_sync_ack);
}

static void refused(const char *spec, const char *named)
{
	struct rdmae_faults f = { .recv_hold_lane = 3, .recv_hold_ms = 9 };
	struct rdmae_err e = { 0 };

	assert_int_equal(rdmae_faults_parse(spec, &f, &e), -EINVAL);
	if (!strstr(e.msg, named) || !strstr(e.msg, "RDMAE_TEST_FAULTS"))
		fail_msg("'%s': the error '%s' does not name '%s'", spec, e.msg, named);
	/* Nothing half-applied. */
	assert_int_equal(f.recv_hold_lane, 3);
	assert_int_equal(f.recv_hold_ms, 9);
}

static void test_refused(void **state)
{
	(void)state;
	refused("bogus", "'bogus'");
	refused("recv_hold=0:30", "'recv_hold=0:30'");
	refused("recv_hold=16:30", "'recv_hold=16:30'");
	refused("recv_hold=2:0", "'recv_hold=2:0'");
	refused("recv_hold=2:10001", "'recv_hold=2:10001'");
	refused("recv_hold=2", "'recv_hold=2'");
	refused("recv_hold=2:30x", "'recv_hold=2:30x'");
	refused("recv_hold=-1:30", "'recv_hold=-1:30'");
	refused("no_sync_ack,,", "''");
	refused("no_sync_acks", "'no_sync_acks'");
	refused("recheck=1", "'recheck=1'");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_none),
		cmocka_unit_test(test_both),
		cmocka_unit_test(test_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
