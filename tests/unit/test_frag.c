/* SPDX-License-Identifier: MIT */
/* Fragmentation and reassembly. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rdmae_frag.h"

static uint8_t *pattern(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);

	assert_non_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 131 + 7);
	return p;
}

/*
 * Send total bytes through frag_next and reasm_push, as a sender and a
 * receiver would, and check that the message comes out whole at the last
 * fragment and only then. Returns the number of fragments.
 */
static size_t roundtrip(size_t total, uint32_t max_payload, uint32_t max)
{
	uint8_t *src = pattern(total);
	struct rdmae_reasm r;
	size_t sent = 0, frags = 0;
	void *msg = NULL;
	size_t msg_len = 0;

	rdmae_reasm_init(&r, max);
	while (sent < total) {
		uint32_t len, remaining;

		rdmae_frag_next(total, sent, max_payload, &len, &remaining);
		assert_true(len > 0 && len <= max_payload);
		assert_int_equal((size_t)remaining, total - sent - len);
		assert_int_equal(rdmae_reasm_push(&r, src + sent, len, remaining, &msg, &msg_len),
				 0);
		sent += len;
		frags++;
		if (sent < total) {
			assert_null(msg);
			assert_non_null(r.buf);
		}
	}
	assert_non_null(msg);
	assert_int_equal(msg_len, total);
	assert_memory_equal(msg, src, total);
	/* The reassembler handed its buffer over and is ready for the next message. */
	assert_null(r.buf);
	assert_int_equal(r.have, 0);
	free(msg);
	free(src);
	return frags;
}

static void test_frag_next(void **state)
{
	uint32_t len, rem;

	(void)state;
	rdmae_frag_next(100, 0, 1000, &len, &rem);
	assert_int_equal(len, 100);
	assert_int_equal(rem, 0);
	rdmae_frag_next(3000, 0, 1000, &len, &rem);
	assert_int_equal(len, 1000);
	assert_int_equal(rem, 2000);
	rdmae_frag_next(3000, 2000, 1000, &len, &rem);
	assert_int_equal(len, 1000);
	assert_int_equal(rem, 0);
	rdmae_frag_next(2500, 2000, 1000, &len, &rem);
	assert_int_equal(len, 500);
	assert_int_equal(rem, 0);
	/* Past the end: nothing more, and no wrap. */
	rdmae_frag_next(100, 100, 1000, &len, &rem);
	assert_int_equal(len, 0);
	assert_int_equal(rem, 0);
	rdmae_frag_next(100, 200, 1000, &len, &rem);
	assert_int_equal(len, 0);
	assert_int_equal(rem, 0);
}

static void test_single_fragment(void **state)
{
	(void)state;
	assert_int_equal(roundtrip(1, 4096, 1 << 20), 1);
	assert_int_equal(roundtrip(4095, 4096, 1 << 20), 1);
	assert_int_equal(roundtrip(4096, 4096, 1 << 20), 1);
}

static void test_exact_multiple(void **state)
{
	(void)state;
	/* No empty trailing fragment after an exact multiple. */
	assert_int_equal(roundtrip((size_t)3 * 4096, 4096, 1 << 20), 3);
	assert_int_equal(roundtrip((size_t)3 * 4096 + 1, 4096, 1 << 20), 4);
	assert_int_equal(roundtrip(4097, 4096, 1 << 20), 2);
}

static void test_one_byte_payload(void **state)
{
	(void)state;
	assert_int_equal(roundtrip(1000, 1, 1 << 20), 1000);
	assert_int_equal(roundtrip(1, 1, 1), 1);
}

static void test_total_at_and_over_max(void **state)
{
	uint8_t data[64] = { 0 };
	struct rdmae_reasm r;
	void *msg = &r;
	size_t msg_len = 1;

	(void)state;
	assert_int_equal(roundtrip(8192, 1000, 8192), 9);

	rdmae_reasm_init(&r, 8192);
	assert_int_equal(rdmae_reasm_push(&r, data, 64, 8192 - 63, &msg, &msg_len), -EMSGSIZE);
	assert_null(msg);
	assert_int_equal(msg_len, 0);
	assert_null(r.buf);
	/* A single fragment bigger than max. */
	rdmae_reasm_init(&r, 63);
	assert_int_equal(rdmae_reasm_push(&r, data, 64, 0, &msg, &msg_len), -EMSGSIZE);
	/* len + remaining past 32 bits must not wrap to something small. */
	rdmae_reasm_init(&r, UINT32_MAX);
	assert_int_equal(rdmae_reasm_push(&r, data, 64, UINT32_MAX - 10, &msg, &msg_len),
			 -EMSGSIZE);
	assert_null(r.buf);
}

static void test_remaining_not_decreasing(void **state)
{
	uint8_t data[100] = { 1 };
	struct rdmae_reasm r;
	void *msg;
	size_t msg_len;

	(void)state;
	rdmae_reasm_init(&r, 1 << 20);
	assert_int_equal(rdmae_reasm_push(&r, data, 100, 300, &msg, &msg_len), 0);
	assert_null(msg);
	/* remaining stays where it was. */
	assert_int_equal(rdmae_reasm_push(&r, data, 100, 300, &msg, &msg_len), -EPROTO);
	assert_null(msg);
	assert_null(r.buf);

	/* remaining falls, but not by len. */
	assert_int_equal(rdmae_reasm_push(&r, data, 100, 300, &msg, &msg_len), 0);
	assert_int_equal(rdmae_reasm_push(&r, data, 100, 150, &msg, &msg_len), -EPROTO);
	assert_null(r.buf);

	/* A "last" fragment that stops short. */
	assert_int_equal(rdmae_reasm_push(&r, data, 100, 300, &msg, &msg_len), 0);
	assert_int_equal(rdmae_reasm_push(&r, data, 100, 0, &msg, &msg_len), -EPROTO);
	assert_null(r.buf);

	/* More than was announced. */
	assert_int_equal(rdmae_reasm_push(&r, data, 100, 50, &msg, &msg_len), 0);
	assert_int_equal(rdmae_reasm_push(&r, data, 100, 0, &msg, &msg_len), -EPROTO);
	assert_null(r.buf);

	/* Growing. */
	assert_int_equal(rdmae_reasm_push(&r, data, 10, 20, &msg, &msg_len), 0);
	assert_int_equal(rdmae_reasm_push(&r, data, 10, 30, &msg, &msg_len), -EPROTO);
	assert_null(r.buf);

	/* After any of these, a new message starts cleanly. */
	assert_int_equal(rdmae_reasm_push(&r, data, 50, 50, &msg, &msg_len), 0);
	assert_int_equal(rdmae_reasm_push(&r, data + 50, 50, 0, &msg, &msg_len), 0);
	assert_non_null(msg);
	assert_int_equal(msg_len, 100);
	assert_memory_equal(msg, data, 100);
	free(msg);
}

static void test_reset_mid_message(void **state)
{
	uint8_t data[256] = { 0 };
	struct rdmae_reasm r;
	void *msg;
	size_t msg_len;

	(void)state;
	/* LeakSanitizer fails this test if reset does not free the partial message. */
	rdmae_reasm_init(&r, 1 << 20);
	assert_int_equal(rdmae_reasm_push(&r, data, 256, 100000, &msg, &msg_len), 0);
	assert_non_null(r.buf);
	rdmae_reasm_reset(&r);
	assert_null(r.buf);
	assert_int_equal(r.total, 0);
	assert_int_equal(r.have, 0);
	assert_int_equal(r.max, 1 << 20);
	/* Reset of an idle reassembler is harmless, and twice too. */
	rdmae_reasm_reset(&r);
	rdmae_reasm_reset(&r);
	/* What follows a reset is a first fragment again. */
	assert_int_equal(rdmae_reasm_push(&r, data, 10, 0, &msg, &msg_len), 0);
	assert_int_equal(msg_len, 10);
	free(msg);
}

static void test_zero_length_fragment(void **state)
{
	uint8_t data[16] = { 0 };
	struct rdmae_reasm r;
	void *msg = &r;
	size_t msg_len = 1;

	(void)state;
	rdmae_reasm_init(&r, 1 << 20);
	assert_int_equal(rdmae_reasm_push(&r, data, 0, 0, &msg, &msg_len), -EINVAL);
	assert_null(msg);
	assert_int_equal(rdmae_reasm_push(&r, data, 0, 100, &msg, &msg_len), -EINVAL);
	assert_null(r.buf);
	/* In the middle of a message: the message is dropped. */
	assert_int_equal(rdmae_reasm_push(&r, data, 16, 16, &msg, &msg_len), 0);
	assert_int_equal(rdmae_reasm_push(&r, data, 0, 16, &msg, &msg_len), -EINVAL);
	assert_null(r.buf);
	assert_int_equal(r.have, 0);
}

static void test_interleaved_messages(void **state)
{
	struct rdmae_reasm r;
	uint8_t *src = pattern(5000);
	void *msg;
	size_t msg_len;

	(void)state;
	/* Back-to-back messages through one reassembler. */
	rdmae_reasm_init(&r, 5000);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(rdmae_reasm_push(&r, src, 2000, 3000, &msg, &msg_len), 0);
		assert_int_equal(rdmae_reasm_push(&r, src + 2000, 2000, 1000, &msg, &msg_len), 0);
		assert_null(msg);
		assert_int_equal(rdmae_reasm_push(&r, src + 4000, 1000, 0, &msg, &msg_len), 0);
		assert_int_equal(msg_len, 5000);
		assert_memory_equal(msg, src, 5000);
		free(msg);
		assert_int_equal(rdmae_reasm_push(&r, src, 7, 0, &msg, &msg_len), 0);
		assert_int_equal(msg_len, 7);
		free(msg);
	}
	free(src);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frag_next),
		cmocka_unit_test(test_single_fragment),
		cmocka_unit_test(test_exact_multiple),
		cmocka_unit_test(test_one_byte_payload),
		cmocka_unit_test(test_total_at_and_over_max),
		cmocka_unit_test(test_remaining_not_decreasing),
		cmocka_unit_test(test_reset_mid_message),
		cmocka_unit_test(test_zero_length_fragment),
		cmocka_unit_test(test_interleaved_messages),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
