/* SPDX-License-Identifier: MIT */
/*
 * Fragment reassembly (rdma/frag.c) driven the way rdma/msg.c drives it on
 * lane 0: each received buffer goes through rdmae_data_hdr_decode, the
 * credit rules (rdma/credits.c) and, with a payload, rdmae_reasm_push.
 *
 * Input: byte 0 picks the negotiated max_fragmented_size (128 KiB..1 MiB),
 * byte 1 the payload size of the round trip below, then received buffers,
 * each a le16 length and that many bytes (cut at the end of the input).
 * A buffer the transport would fail the connection on starts a new
 * connection here, so that one input explores several.
 *
 * Checked besides memory safety and leaks: a reassembled message is exactly
 * the concatenation of the payloads that made it, never over the limit; a
 * failed push leaves nothing in progress; send credits never pass
 * RDMAE_MAX_CREDITS. Then the whole input, cut by rdmae_frag_next as the
 * sender cuts, must reassemble to itself.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "rdmae_credits.h"
#include "rdmae_frag.h"
#include "rdmae_wire.h"

#define MAX_FRAG_TOP	(RDMAE_MIN_FRAG_SIZE << 3)	/* 1 MiB: keeps allocations cheap */

struct conn {
	struct rdmae_reasm r;
	struct rdmae_credits cr;
	uint32_t max;
	size_t have;			/* bytes of the message in progress, in shadow */
};

/* What the message in progress should hold, built from the accepted payloads. */
static uint8_t shadow[MAX_FRAG_TOP];

static void reconnect(struct conn *c)
{
	rdmae_reasm_reset(&c->r);
	rdmae_reasm_init(&c->r, c->max);
	/* A server after negotiation with 255 receives on each side. */
	rdmae_credits_init(&c->cr, 255, 255, 255, 255);
	c->have = 0;
}

static void push(struct conn *c, const uint8_t *payload, const struct rdmae_data_hdr *h)
{
	bool fresh = c->r.buf == NULL;
	void *msg;
	size_t len;
	int ret;

	ret = rdmae_reasm_push(&c->r, payload, h->data_length, h->remaining_data_length, &msg,
			       &len);
	if (ret) {
		FUZZ_CHECK(ret == -EMSGSIZE || ret == -EPROTO || ret == -ENOMEM);
		FUZZ_CHECK(c->r.buf == NULL && msg == NULL);
		reconnect(c);
		return;
	}
	if (fresh) {
		FUZZ_CHECK((uint64_t)h->data_length + h->remaining_data_length <= c->max);
		c->have = 0;
	}
	FUZZ_CHECK(c->have + h->data_length <= sizeof(shadow));
	memcpy(shadow + c->have, payload, h->data_length);
	c->have += h->data_length;
	if (!msg) {
		FUZZ_CHECK(c->r.buf != NULL && c->r.have == c->have);
		FUZZ_CHECK(c->r.total - c->r.have == h->remaining_data_length);
		return;
	}
	FUZZ_CHECK(h->remaining_data_length == 0 && c->r.buf == NULL);
	FUZZ_CHECK(len == c->have && len <= c->max && memcmp(msg, shadow, len) == 0);
	free(msg);
	c->have = 0;
}

/* One received buffer: rdma/msg.c handle_data_locked, then the repost. */
static void receive(struct conn *c, const uint8_t *buf, uint32_t len)
{
	struct rdmae_data_hdr h;
	enum rdmae_wire_field f;

	if (rdmae_data_hdr_decode(buf, len, c->max, &h, &f)) {
		reconnect(c);
		return;
	}
	if (rdmae_credits_on_recv(&c->cr, h.credits_granted, h.credits_requested)) {
		reconnect(c);
		return;
	}
	FUZZ_CHECK(c->cr.send <= RDMAE_MAX_CREDITS);
	if (h.data_length)
		push(c, buf + h.data_offset, &h);
	rdmae_credits_on_repost(&c->cr, 1);
	/* Answer a keepalive probe, or grant when the peer runs low, as the lane does. */
	if (((h.flags & RDMAE_FLAG_RESPONSE_REQUESTED) || rdmae_credits_need_grant_msg(&c->cr)) &&
	    rdmae_credits_can_send(&c->cr, c->cr.to_grant)) {
		FUZZ_CHECK(rdmae_credits_take_grant(&c->cr) <= RDMAE_MAX_CREDITS);
		rdmae_credits_on_send(&c->cr);
	}
}

/* The sender's cut (rdmae_frag_next) and the receiver's reassembly agree. */
static void roundtrip(const uint8_t *data, size_t size, uint32_t max_payload, uint32_t max)
{
	struct rdmae_reasm r;
	size_t sent = 0;
	void *msg = NULL;
	size_t len = 0;

	rdmae_reasm_init(&r, max);
	while (sent < size) {
		uint32_t flen, remaining;

		rdmae_frag_next(size, sent, max_payload, &flen, &remaining);
		FUZZ_CHECK(flen >= 1 && flen <= max_payload && sent + flen + remaining == size);
		FUZZ_CHECK(msg == NULL);
		FUZZ_CHECK(rdmae_reasm_push(&r, data + sent, flen, remaining, &msg, &len) == 0);
		sent += flen;
	}
	FUZZ_CHECK(msg != NULL && len == size && memcmp(msg, data, size) == 0);
	free(msg);
	rdmae_reasm_reset(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conn c = { .max = 0 };
	size_t off = 2;

	if (size < 2)
		return 0;
	c.max = RDMAE_MIN_FRAG_SIZE << (data[0] % 4);
	rdmae_reasm_init(&c.r, c.max);
	reconnect(&c);
	while (off + 2 <= size) {
		size_t len = (size_t)data[off] | (size_t)data[off + 1] << 8;

		off += 2;
		if (len > size - off)
			len = size - off;
		{
			uint8_t *buf = fuzz_dup(data + off, len);

			receive(&c, buf, (uint32_t)len);
			free(buf);
		}
		off += len;
	}
	rdmae_reasm_reset(&c.r);
	roundtrip(data, size, 1u + data[1] * 4u, c.max);
	return 0;
}
