/* SPDX-License-Identifier: MIT */
/* Credit accounting for one lane. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rdmae_credits.h"
#include "rdmae_wire.h"

static void test_init(void **state)
{
	struct rdmae_credits c;

	(void)state;
	memset(&c, 0xff, sizeof(c));
	rdmae_credits_init(&c, 10, 20, 30, 40);
	assert_int_equal(c.send, 10);
	assert_int_equal(c.recv_posted, 20);
	assert_int_equal(c.recv_target, 30);
	assert_int_equal(c.peer_target, 40);
	/* The negotiate response announced what is posted: nothing is owed yet. */
	assert_int_equal(c.to_grant, 0);
	assert_int_equal(rdmae_credits_take_grant(&c), 0);
	assert_int_equal(c.recv_target - c.recv_posted, 10);
}

static void test_window_exhausted_and_refilled(void **state)
{
	struct rdmae_credits c;

	(void)state;
	rdmae_credits_init(&c, 4, 8, 8, 8);
	for (int i = 0; i < 3; i++) {
		assert_true(rdmae_credits_can_send(&c, 0));
		rdmae_credits_on_send(&c);
	}
	assert_int_equal(c.send, 1);
	/* Only a message that grants may take the last one. */
	assert_false(rdmae_credits_can_send(&c, 0));
	assert_true(rdmae_credits_can_send(&c, 1));
	rdmae_credits_on_send(&c);
	assert_int_equal(c.send, 0);
	assert_false(rdmae_credits_can_send(&c, 0));
	assert_false(rdmae_credits_can_send(&c, 100));

	/* The peer's grant refills the window. */
	assert_int_equal(rdmae_credits_on_recv(&c, 5, 8), 0);
	assert_int_equal(c.send, 5);
	assert_int_equal(c.recv_posted, 7);
	assert_true(rdmae_credits_can_send(&c, 0));
}

static void test_last_credit_rule(void **state)
{
	struct rdmae_credits c;

	(void)state;
	rdmae_credits_init(&c, 1, 4, 4, 4);
	assert_false(rdmae_credits_can_send(&c, 0));
	assert_true(rdmae_credits_can_send(&c, 1));
	assert_true(rdmae_credits_can_send(&c, UINT32_MAX));
	/* can_send is a query: asking does not spend anything. */
	assert_int_equal(c.send, 1);

	rdmae_credits_init(&c, 2, 4, 4, 4);
	assert_true(rdmae_credits_can_send(&c, 0));
	rdmae_credits_init(&c, 0, 4, 4, 4);
	assert_false(rdmae_credits_can_send(&c, 0));
	assert_false(rdmae_credits_can_send(&c, 1));
}

static void test_on_send_never_wraps(void **state)
{
	struct rdmae_credits c;

	(void)state;
	rdmae_credits_init(&c, 0, 4, 4, 4);
	rdmae_credits_on_send(&c);
	assert_int_equal(c.send, 0);
	assert_false(rdmae_credits_can_send(&c, 1));
}

static void test_grants(void **state)
{
	struct rdmae_credits c;

	(void)state;
	rdmae_credits_init(&c, 4, 8, 8, 8);
	assert_int_equal(rdmae_credits_on_recv(&c, 0, 8), 0);
	assert_int_equal(rdmae_credits_on_recv(&c, 0, 8), 0);
	assert_int_equal(rdmae_credits_on_recv(&c, 0, 8), 0);
	assert_int_equal(c.recv_target - c.recv_posted, 3);
	rdmae_credits_on_repost(&c, 2);
	rdmae_credits_on_repost(&c, 1);
	assert_int_equal(c.recv_posted, 8);
	/* All that is owed goes in one message, and then nothing is owed. */
	assert_int_equal(rdmae_credits_take_grant(&c), 3);
	assert_int_equal(c.to_grant, 0);
	assert_int_equal(rdmae_credits_take_grant(&c), 0);
	/* Posting above the target is allowed; the extra receives are owed too. */
	rdmae_credits_on_repost(&c, 2);
	assert_int_equal(c.recv_posted, 10);
	assert_int_equal(rdmae_credits_take_grant(&c), 2);
}

static void test_grant_capped(void **state)
{
	struct rdmae_credits c;

	(void)state;
	/* More than a credits_granted field can carry goes out over two messages. */
	rdmae_credits_init(&c, 4, 0, RDMAE_MAX_CREDITS, 4);
	rdmae_credits_on_repost(&c, RDMAE_MAX_CREDITS + 10);
	assert_int_equal(rdmae_credits_take_grant(&c), RDMAE_MAX_CREDITS);
	assert_int_equal(rdmae_credits_take_grant(&c), 10);
	assert_int_equal(rdmae_credits_take_grant(&c), 0);
}

static void test_recv_without_credit(void **state)
{
	struct rdmae_credits c, before;

	(void)state;
	rdmae_credits_init(&c, 4, 1, 4, 4);
	assert_int_equal(rdmae_credits_on_recv(&c, 0, 4), 0);
	assert_int_equal(c.recv_posted, 0);
	/* Nothing posted: the peer sent without a credit. */
	before = c;
	assert_int_equal(rdmae_credits_on_recv(&c, 1, 4), -EPROTO);
	assert_memory_equal(&c, &before, sizeof(c));

	/* Reposted but not yet announced: the peer cannot know of these either. */
	rdmae_credits_on_repost(&c, 2);
	before = c;
	assert_int_equal(rdmae_credits_on_recv(&c, 0, 4), -EPROTO);
	assert_memory_equal(&c, &before, sizeof(c));
	/* Once announced, they may be used. */
	assert_int_equal(rdmae_credits_take_grant(&c), 2);
	assert_int_equal(rdmae_credits_on_recv(&c, 0, 4), 0);
	assert_int_equal(rdmae_credits_on_recv(&c, 0, 4), 0);
	assert_int_equal(rdmae_credits_on_recv(&c, 0, 4), -EPROTO);
}

static void test_grant_overflow(void **state)
{
	struct rdmae_credits c, before;

	(void)state;
	rdmae_credits_init(&c, 10, 8, 8, 8);
	assert_int_equal(rdmae_credits_on_recv(&c, RDMAE_MAX_CREDITS - 10, 8), 0);
	assert_int_equal(c.send, RDMAE_MAX_CREDITS);
	before = c;
	assert_int_equal(rdmae_credits_on_recv(&c, 1, 8), -EPROTO);
	assert_memory_equal(&c, &before, sizeof(c));
	/* A grant that would wrap 32 bits is caught too. */
	assert_int_equal(rdmae_credits_on_recv(&c, UINT32_MAX, 8), -EPROTO);
	assert_memory_equal(&c, &before, sizeof(c));
}

static void test_peer_target(void **state)
{
	struct rdmae_credits c;

	(void)state;
	rdmae_credits_init(&c, 4, 8, 8, 16);
	assert_int_equal(rdmae_credits_on_recv(&c, 0, 32), 0);
	assert_int_equal(c.peer_target, 32);
	assert_int_equal(rdmae_credits_on_recv(&c, 2, 3), 0);
	assert_int_equal(c.peer_target, 3);
	assert_int_equal(c.send, 6);
}

static void test_need_grant_msg(void **state)
{
	struct rdmae_credits c;

	(void)state;
	/* Nothing owed: never. */
	rdmae_credits_init(&c, 4, 0, 100, 4);
	assert_false(rdmae_credits_need_grant_msg(&c));

	/* The peer believes it has 80 left, and we owe 10: not worth a message. */
	rdmae_credits_init(&c, 4, 80, 100, 4);
	rdmae_credits_on_repost(&c, 10);
	assert_false(rdmae_credits_need_grant_msg(&c));

	/* Owing half the target is worth one. */
	rdmae_credits_init(&c, 4, 50, 100, 4);
	rdmae_credits_on_repost(&c, 49);
	assert_false(rdmae_credits_need_grant_msg(&c));
	rdmae_credits_on_repost(&c, 1);
	assert_true(rdmae_credits_need_grant_msg(&c));

	/* The peer is below a quarter of the target: 24 left, and 1 owed. */
	rdmae_credits_init(&c, 4, 24, 100, 4);
	rdmae_credits_on_repost(&c, 1);
	assert_true(rdmae_credits_need_grant_msg(&c));
	/* Exactly a quarter is not low yet. */
	rdmae_credits_init(&c, 4, 25, 100, 4);
	rdmae_credits_on_repost(&c, 1);
	assert_false(rdmae_credits_need_grant_msg(&c));

	/* Once taken, nothing is owed. */
	rdmae_credits_take_grant(&c);
	assert_false(rdmae_credits_need_grant_msg(&c));

	/* The peer has nothing left at all. */
	rdmae_credits_init(&c, 4, 0, 100, 4);
	rdmae_credits_on_repost(&c, 1);
	assert_true(rdmae_credits_need_grant_msg(&c));
}

/*
 * Two peers exchanging messages in a pseudo-random order, each with its own
 * receive target, over FIFO links. Whatever the order, the peers' credit
 * rules must neither violate the protocol (on_recv never fails) nor deadlock
 * (some action always remains while data is left to send).
 */
struct peer {
	struct rdmae_credits c;
	uint32_t data_left;	/* data messages still to send */
	uint32_t to_repost;	/* consumed receives not yet reposted */
	uint32_t delivered;	/* data messages received */
};

struct msg {
	uint32_t granted;
	uint32_t requested;
	int data;
};

#define LINK_CAP 8192

struct link {
	struct msg q[LINK_CAP];
	size_t head, tail;
};

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int try_send(struct peer *p, struct link *out, int data)
{
	uint32_t grant = p->c.to_grant;

	if (data && p->data_left == 0)
		return 0;
	if (!data && !rdmae_credits_need_grant_msg(&p->c))
		return 0;
	if (!rdmae_credits_can_send(&p->c, grant))
		return 0;
	assert_true(out->tail - out->head < LINK_CAP);
	out->q[out->tail % LINK_CAP] = (struct msg){
		.granted = rdmae_credits_take_grant(&p->c),
		.requested = p->c.recv_target,
		.data = data,
	};
	out->tail++;
	rdmae_credits_on_send(&p->c);
	if (data)
		p->data_left--;
	return 1;
}

static int try_deliver(struct peer *p, struct link *in)
{
	struct msg m;

	if (in->head == in->tail)
		return 0;
	m = in->q[in->head % LINK_CAP];
	in->head++;
	assert_int_equal(rdmae_credits_on_recv(&p->c, m.granted, m.requested), 0);
	p->to_repost++;
	if (m.data)
		p->delivered++;
	return 1;
}

static int try_repost(struct peer *p)
{
	if (p->to_repost == 0)
		return 0;
	p->to_repost--;
	rdmae_credits_on_repost(&p->c, 1);
	return 1;
}

static int step(struct peer *self, struct link *out, struct link *in, unsigned int action)
{
	switch (action) {
	case 0:
		return try_send(self, out, 1);
	case 1:
		return try_deliver(self, in);
	case 2:
		return try_repost(self);
	default:
		return try_send(self, out, 0);
	}
}

struct sim {
	struct peer a, b;
	struct link ab, ba;	/* too big for the stack under ASan */
};

static int sim_setup(void **state)
{
	*state = malloc(sizeof(struct sim));
	return *state ? 0 : -1;
}

/* Runs after a failed assertion too, so a failing simulation does not also leak. */
static int sim_teardown(void **state)
{
	free(*state);
	return 0;
}

static void simulate(struct sim *sim, uint32_t target_a, uint32_t target_b, uint64_t seed)
{
	struct peer *a = &sim->a, *b = &sim->b;
	struct link *ab = &sim->ab, *ba = &sim->ba;
	const uint32_t total = 5000;

	memset(sim, 0, sizeof(*sim));
	/* As after negotiation: each side may send what the other posted. */
	rdmae_credits_init(&a->c, target_b, target_a, target_a, target_b);
	rdmae_credits_init(&b->c, target_a, target_b, target_b, target_a);
	a->data_left = total;
	b->data_left = total / 3;

	/*
	 * Until all data has arrived: with tiny targets the peers may go on
	 * trading empty grants afterwards, which is their right.
	 */
	while (b->delivered < total || a->delivered < total / 3) {
		unsigned int first = (unsigned int)(rng_next(&seed) % 8);
		int progressed = 0;

		/* Try every action from a random start, so that a stuck state is detected. */
		for (unsigned int k = 0; k < 8 && !progressed; k++) {
			unsigned int act = (first + k) % 8;

			if (act < 4)
				progressed = step(a, ab, ba, act);
			else
				progressed = step(b, ba, ab, act - 4);
		}
		if (!progressed)
			fail_msg("deadlock: a send %u posted %u owed %u left %u, "
				 "b send %u posted %u owed %u left %u",
				 a->c.send, a->c.recv_posted, a->c.to_grant, a->data_left,
				 b->c.send, b->c.recv_posted, b->c.to_grant, b->data_left);
		assert_true(a->c.send <= RDMAE_MAX_CREDITS);
		assert_true(b->c.send <= RDMAE_MAX_CREDITS);
	}
	assert_int_equal(b->delivered, total);
	assert_int_equal(a->delivered, total / 3);
}

static void test_two_peers_never_deadlock(void **state)
{
	/* From 2 up: see test_single_credit_stalls for 1. */
	static const uint32_t targets[] = { 2, 3, 4, 5, 7, 16, 255 };

	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
		for (size_t j = 0; j < sizeof(targets) / sizeof(targets[0]); j++)
			simulate(*state, targets[i], targets[j],
				 0x9e3779b97f4a7c15ull + i * 31 + j);
}

/*
 * The last-credit rule's price: a peer holding one credit and owing no grant
 * cannot send until the other side sends first. A side that posts a single
 * receive therefore leaves the peer able to send only in reply.
 */
static void test_single_credit_stalls(void **state)
{
	struct rdmae_credits a, b;

	(void)state;
	rdmae_credits_init(&a, 1, 1, 1, 1);
	rdmae_credits_init(&b, 1, 1, 1, 1);
	assert_false(rdmae_credits_can_send(&a, a.to_grant));
	assert_false(rdmae_credits_can_send(&b, b.to_grant));
	assert_false(rdmae_credits_need_grant_msg(&a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init),
		cmocka_unit_test(test_window_exhausted_and_refilled),
		cmocka_unit_test(test_last_credit_rule),
		cmocka_unit_test(test_on_send_never_wraps),
		cmocka_unit_test(test_grants),
		cmocka_unit_test(test_grant_capped),
		cmocka_unit_test(test_recv_without_credit),
		cmocka_unit_test(test_grant_overflow),
		cmocka_unit_test(test_peer_target),
		cmocka_unit_test(test_need_grant_msg),
		cmocka_unit_test_setup_teardown(test_two_peers_never_deadlock, sim_setup,
						sim_teardown),
		cmocka_unit_test(test_single_credit_stalls),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
