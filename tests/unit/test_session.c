/* SPDX-License-Identifier: MIT */
/*
 * The engine's session calls that need no connection: the block-list check
 * (names as long as QEMU's RAMBlock idstr), the live setters' argument
 * checks, and the rate limiter as a live bandwidth change drives it.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "rdmae_converge.h"
#include "rdmae_engine.h"

static char mem[4][8192];

static void name_of(char *buf, size_t len, char c)
{
	memset(buf, c, len);
	buf[len] = '\0';
}

static void test_block_names(void **state)
{
	char longest[RDMAE_BLOCK_NAME_MAX], too_long[RDMAE_BLOCK_NAME_MAX + 1];
	struct rdmae_block b[2] = {
		{ .name = longest, .host = mem[0], .len = 8192, .page_size = 4096 },
		{ .name = "pc.ram", .host = mem[1], .len = 4096, .page_size = 4096 },
	};
	struct rdmae_err e = { 0 };

	(void)state;
	/* QEMU's idstr is char[256]: 255 bytes and a NUL must pass. */
	assert_int_equal(RDMAE_BLOCK_NAME_MAX, 256);
	name_of(longest, RDMAE_BLOCK_NAME_MAX - 1, 'a');
	assert_int_equal(rdmae_session_check_blocks(b, 2, &e), 0);
	assert_int_equal(e.code, 0);

	name_of(too_long, RDMAE_BLOCK_NAME_MAX, 'b');
	b[0].name = too_long;
	assert_int_equal(rdmae_session_check_blocks(b, 2, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "256 bytes"));

	b[0].name = "";
	assert_int_equal(rdmae_session_check_blocks(b, 2, &e), -EINVAL);
	b[0].name = NULL;
	assert_int_equal(rdmae_session_check_blocks(b, 2, &e), -EINVAL);

	/* A real QEMU name: a PCI path and a ROM. */
	b[0].name = "0000:00:03.0/virtio-net-pci.rom";
	assert_int_equal(rdmae_session_check_blocks(b, 2, NULL), 0);
	b[1].name = "0000:00:03.0/virtio-net-pci.rom";
	assert_int_equal(rdmae_session_check_blocks(b, 2, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "used twice"));
}

static void test_block_shapes(void **state)
{
	struct rdmae_block b = { .name = "pc.rom", .host = mem[2], .len = 8192,
				 .page_size = 4096 };
	struct rdmae_err e = { 0 };

	(void)state;
	assert_int_equal(rdmae_session_check_blocks(&b, 1, &e), 0);
	b.page_size = 3000;
	assert_int_equal(rdmae_session_check_blocks(&b, 1, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "'pc.rom'"));
	b.page_size = 4096;
	b.len = 4097;
	assert_int_equal(rdmae_session_check_blocks(&b, 1, &e), -EINVAL);
	b.len = 0;
	assert_int_equal(rdmae_session_check_blocks(&b, 1, &e), -EINVAL);
	b.len = 4096;
	b.host = NULL;
	assert_int_equal(rdmae_session_check_blocks(&b, 1, &e), -EINVAL);
	assert_int_equal(rdmae_session_check_blocks(NULL, 0, &e), -EINVAL);
	assert_int_equal(rdmae_session_check_blocks(&b, 0, &e), -EINVAL);
}

static void test_setters_need_a_session(void **state)
{
	(void)state;
	assert_int_equal(rdmae_session_set_max_bandwidth(NULL, 1 << 20), -EINVAL);
	assert_int_equal(rdmae_session_set_downtime_limit(NULL, 1000000), -EINVAL);
}

static void test_unlimited_rounds(void **state)
{
	struct rdmae_session_opts o;

	(void)state;
	rdmae_session_opts_default(&o);
	assert_int_equal(o.max_rounds, 30);
	o.max_rounds = RDMAE_ROUNDS_UNLIMITED;
	assert_true(o.max_rounds == UINT_MAX);
}

/*
 * A live bandwidth change restarts the limiter at the new rate: what was
 * charged at the old rate is forgotten, the new one counts from the change.
 */
static void test_rate_change(void **state)
{
	struct rdmae_ratelimit rl;
	const uint64_t s = 1000000000ull;

	(void)state;
	rdmae_ratelimit_init(&rl, 1000, 0);
	/* 10 s of data at 1000 B/s, charged at t = 0. */
	assert_int_equal(rdmae_ratelimit_charge(&rl, 10000, 0), 10 * s);
	/* At t = 1 s the cap goes up 10x: 10000 bytes more take 1 s from now. */
	rdmae_ratelimit_init(&rl, 10000, 1 * s);
	assert_int_equal(rdmae_ratelimit_charge(&rl, 10000, 1 * s), 1 * s);
	/* Unlimited: never wait. */
	rdmae_ratelimit_init(&rl, 0, 2 * s);
	assert_int_equal(rdmae_ratelimit_charge(&rl, UINT64_MAX / 2, 2 * s), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_block_names),
		cmocka_unit_test(test_block_shapes),
		cmocka_unit_test(test_setters_need_a_session),
		cmocka_unit_test(test_unlimited_rounds),
		cmocka_unit_test(test_rate_change),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
