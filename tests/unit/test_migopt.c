/* SPDX-License-Identifier: MIT */
/*
 * The option parsers of the migration drivers (perf/rdmae_migopt.h): what
 * they take, what they refuse, and that a refusal names the option and the
 * text it was given.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "rdmae_migopt.h"

static void test_whole_numbers(void **state)
{
	struct rdmae_err err = { 0 };
	uint64_t v = 7;
	unsigned int u = 7;
	int ms = 7;

	(void)state;
	assert_int_equal(rdmae_opt_u64("--x", "42", 0, 100, &v, &err), 0);
	assert_int_equal(v, 42);
	assert_int_equal(rdmae_opt_uint("--lanes", "16", 1, 16, &u, &err), 0);
	assert_int_equal(u, 16);
	assert_int_equal(rdmae_opt_ms("--timeout", "0", &ms, &err), 0);
	assert_int_equal(ms, 0);
	/* strtoull would take each of these; none is a whole number in range. */
	static const char *const bad[] = { "-1", " 1", "+1", "1x", "0x10", "", "17", "0",
					   "99999999999999999999999" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		u = 7;
		assert_int_equal(rdmae_opt_uint("--lanes", bad[i], 1, 16, &u, &err), -EINVAL);
		assert_int_equal(u, 7);
	}
	assert_string_equal(err.msg, "--lanes '99999999999999999999999': not a whole number "
			    "from 1 to 16");
	assert_int_equal(rdmae_opt_ms("--stall", "2147483648", &ms, &err), -EINVAL);
}

static void test_rates(void **state)
{
	struct rdmae_err err = { 0 };
	double r = -1;

	(void)state;
	assert_int_equal(rdmae_opt_mb_s("--rate", "0", &r, &err), 0);
	assert_true(r == 0);
	assert_int_equal(rdmae_opt_mb_s("--rate", "0.5", &r, &err), 0);
	assert_true(r == 500000);
	assert_int_equal(rdmae_opt_mb_s("--bw-cap", ".25", &r, &err), 0);
	assert_true(r == 250000);
	static const char *const bad[] = { "-1", "inf", "nan", "1x", "", " 8", "1e999" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(rdmae_opt_mb_s("--rate", bad[i], &r, &err), -EINVAL);
	assert_string_equal(err.msg, "--rate '1e999': not a rate in MB/s (a number >= 0)");
}

static void test_sizes(void **state)
{
	struct rdmae_err err = { 0 };
	uint64_t v = 0;

	(void)state;
	assert_int_equal(rdmae_opt_size("--size", "64M", 1u << 20, &v, &err), 0);
	assert_int_equal(v, 64u << 20);
	assert_int_equal(rdmae_opt_size("--size", "512K", 1u << 20, &v, &err), -EINVAL);
	assert_string_equal(err.msg, "--size '512K': less than 1048576 bytes");
	assert_int_equal(rdmae_opt_size("--recv-queue", "1Q", 1, &v, &err), -EINVAL);
	assert_string_equal(err.msg, "--recv-queue '1Q': not a size (a number with an optional "
			    "K, M or G)");
	assert_int_equal(v, 64u << 20);
}

static void test_choice(void **state)
{
	static const char *const names[] = { "src", "dst" };
	struct rdmae_err err = { 0 };
	int i = -1;

	(void)state;
	assert_int_equal(rdmae_opt_choice("--cancel-side", "dst", names, 2, &i, &err), 0);
	assert_int_equal(i, 1);
	assert_int_equal(rdmae_opt_choice("--cancel-side", "Dst", names, 2, &i, &err), -EINVAL);
	assert_string_equal(err.msg, "--cancel-side 'Dst': not src or dst");
}

/* The shared options: taken (1), not one of them (0), or a bad value (-EINVAL). */
static void test_shared_options(void **state)
{
	struct rdmae_err err = { 0 };
	struct rdmae_migopt o;

	(void)state;
	rdmae_migopt_init(&o, 8e6, RDMAE_GUEST_HUGE_IF_RESERVED);
	assert_int_equal(o.size, 256u << 20);
	assert_false(o.size_given);
	assert_int_equal(o.max_rounds, 30);
	assert_int_equal(o.downtime_ms, 300);
	assert_int_equal(rdmae_migopt_parse(&o, 'x', "1", &err), 0);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_SIZE, "64M", &err), 1);
	assert_true(o.size_given);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_HUGEPAGES, "on", &err), 1);
	assert_int_equal(o.mem, RDMAE_GUEST_HUGE);
	assert_string_equal(rdmae_migopt_huge_name(o.mem), "on");
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_HUGEPAGES, "off", &err), 1);
	assert_int_equal(o.mem, RDMAE_GUEST_SMALL);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_HUGEPAGES, "auto", &err), 1);
	assert_int_equal(o.mem, RDMAE_GUEST_HUGE_IF_RESERVED);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_HUGEPAGES, "", &err), -EINVAL);
	assert_string_equal(err.msg, "--hugepages '': not auto, on or off");
	assert_int_equal(o.mem, RDMAE_GUEST_HUGE_IF_RESERVED);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_LANES, "17", &err), -EINVAL);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_MAX_ROUNDS, "0", &err), -EINVAL);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_DOWNTIME, "86400001", &err), -EINVAL);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_NO_VERIFY, NULL, &err), 1);
	assert_true(o.no_verify);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_RATE, "80", &err), 1);
	assert_true(o.rate == 80e6);
	assert_int_equal(o.reg, RDMAE_REG_AUTO);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_REG, "odp", &err), 1);
	assert_int_equal(o.reg, RDMAE_REG_ODP);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_REG, "pin-all", &err), 1);
	assert_int_equal(o.reg, RDMAE_REG_PIN_ALL);
	assert_int_equal(rdmae_migopt_parse(&o, RDMAE_MIGOPT_REG, "implicit", &err), -EINVAL);
	assert_string_equal(err.msg, "--reg 'implicit': not auto, pin-all, on-demand or odp");
	assert_int_equal(o.reg, RDMAE_REG_PIN_ALL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_numbers),
		cmocka_unit_test(test_rates),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_choice),
		cmocka_unit_test(test_shared_options),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
