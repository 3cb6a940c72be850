/* SPDX-License-Identifier: MIT */
/* Wire encoders, decoders and the negotiation rules. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "rdmae_wire.h"

#define MIB (1024u * 1024u)

/* ---- helpers ---- */

/* A well-formed data header with a payload right after it. */
static struct rdmae_data_hdr data_hdr(uint32_t len)
{
	struct rdmae_data_hdr h = {
		.credits_requested = 255,
		.credits_granted = 3,
		.flags = 0,
		.remaining_data_length = 0,
		.data_offset = len ? RDMAE_DATA_HDR_SIZE : 0,
		.data_length = len,
		.fence_seq = 0,
	};
	return h;
}

/*
 * Encode h at an odd address (receive buffers promise no alignment) and
 * decode it back as if len bytes had arrived.
 */
static int dh_decode(const struct rdmae_data_hdr *h, size_t len, uint32_t max_frag,
		     struct rdmae_data_hdr *out, enum rdmae_wire_field *f)
{
	static const size_t cap = 4096;
	uint8_t raw[4096 + 1];

	assert_true(len <= cap);
	memset(raw, 0xa5, sizeof(raw));
	rdmae_data_hdr_encode(raw + 1, h);
	*f = RDMAE_F_COUNT;
	return rdmae_data_hdr_decode(raw + 1, len, max_frag, out, f);
}

static void expect_dh(const struct rdmae_data_hdr *h, size_t len, uint32_t max_frag, int err,
		      enum rdmae_wire_field field)
{
	struct rdmae_data_hdr out;
	enum rdmae_wire_field f;
	int ret = dh_decode(h, len, max_frag, &out, &f);

	if (ret != err || f != field)
		fail_msg("decode gave %d/%s, want %d/%s", ret, rdmae_wire_field_name(f), err,
			 rdmae_wire_field_name(field));
}

/* The limits one side runs with in most tests. */
static struct rdmae_wire_limits limits(void)
{
	struct rdmae_wire_limits l = {
		.min_version = RDMAE_VERSION,
		.max_version = RDMAE_VERSION,
		.credits = 255,
		.lanes = 4,
		.preferred_send_size = 8192,
		.max_receive_size = 8192,
		.max_fragmented_size = 32 * MIB,
		.max_rw_size = 1 * MIB,
	};
	return l;
}

static struct rdmae_neg_req req_from(const struct rdmae_wire_limits *l, uint16_t granted)
{
	struct rdmae_neg_req r = {
		.min_version = l->min_version,
		.max_version = l->max_version,
		.credits_requested = l->credits,
		.credits_granted = granted,
		.lanes = l->lanes,
		.preferred_send_size = l->preferred_send_size,
		.max_receive_size = l->max_receive_size,
		.max_fragmented_size = l->max_fragmented_size,
		.max_rw_size = l->max_rw_size,
	};
	return r;
}

/* ---- field names ---- */

static void test_field_names(void **state)
{
	(void)state;
	assert_string_equal(rdmae_wire_field_name(RDMAE_F_CREDITS_REQUESTED), "credits_requested");
	assert_string_equal(rdmae_wire_field_name(RDMAE_F_REMAINING_DATA_LENGTH),
			    "remaining_data_length");
	assert_string_equal(rdmae_wire_field_name(RDMAE_F_NONE), "none");
	/* Every field has its own name, and a value off the wire cannot index past the table. */
	for (int i = 0; i < RDMAE_F_COUNT; i++) {
		const char *a = rdmae_wire_field_name((enum rdmae_wire_field)i);

		assert_non_null(a);
		assert_string_not_equal(a, "unknown");
		for (int j = 0; j < i; j++)
			assert_string_not_equal(a, rdmae_wire_field_name((enum rdmae_wire_field)j));
	}
	assert_string_equal(rdmae_wire_field_name(RDMAE_F_COUNT), "unknown");
	assert_string_equal(rdmae_wire_field_name((enum rdmae_wire_field)-1), "unknown");
	assert_string_equal(rdmae_wire_field_name((enum rdmae_wire_field)12345), "unknown");
}

/* ---- byte-exact layouts ---- */

static void test_neg_req_layout(void **state)
{
	static const uint8_t want[RDMAE_NEG_REQ_SIZE] = {
		0x52, 0x44, 0x4d, 0x45,	/* "RDME" */
		0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07, 0x0a, 0x09,
		0x01, 0x00,		/* auth: HMAC-SHA256 */
		0x0e, 0x0d, 0x0c, 0x0b, 0x12, 0x11, 0x10, 0x0f,
		0x16, 0x15, 0x14, 0x13, 0x1a, 0x19, 0x18, 0x17,
		/* nonce 0x20.., proof 0x40.. (filled below) */
	};
	struct rdmae_neg_req m = {
		.min_version = 0x0102, .max_version = 0x0304,
		.credits_requested = 0x0506, .credits_granted = 0x0708, .lanes = 0x090a,
		.auth = RDMAE_WIRE_AUTH_HMAC_SHA256,
		.preferred_send_size = 0x0b0c0d0e, .max_receive_size = 0x0f101112,
		.max_fragmented_size = 0x13141516, .max_rw_size = 0x1718191a,
	};
	uint8_t w[RDMAE_NEG_REQ_SIZE];
	uint8_t buf[RDMAE_NEG_REQ_SIZE + 1];
	unsigned int i;

	(void)state;
	memcpy(w, want, sizeof(w));
	for (i = 0; i < RDMAE_NONCE_SIZE; i++) {
		m.nonce[i] = (uint8_t)(0x20 + i);
		w[32 + i] = (uint8_t)(0x20 + i);
	}
	for (i = 0; i < RDMAE_PROOF_SIZE; i++) {
		m.proof[i] = (uint8_t)(0x40 + i);
		w[64 + i] = (uint8_t)(0x40 + i);
	}
	memset(buf, 0xff, sizeof(buf));
	rdmae_neg_req_encode(buf, &m);
	assert_memory_equal(buf, w, sizeof(w));
	assert_int_equal(buf[RDMAE_NEG_REQ_SIZE], 0xff);	/* not one byte more */
}

static void test_neg_resp_layout(void **state)
{
	static const uint8_t want[RDMAE_NEG_RESP_SIZE] = {
		0x52, 0x44, 0x4d, 0x45,
		0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07, 0x0a, 0x09, 0x0c, 0x0b,
		0xb9, 0xff, 0xff, 0xff,	/* status -71 */
		0x10, 0x0f, 0x0e, 0x0d, 0x14, 0x13, 0x12, 0x11,
		0x18, 0x17, 0x16, 0x15, 0x1c, 0x1b, 0x1a, 0x19, 0x20, 0x1f, 0x1e, 0x1d,
		0x01, 0x00,		/* auth */
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00,	/* reserved */
		/* proof 0x60.. (filled below) */
	};
	struct rdmae_neg_resp m = {
		.min_version = 0x0102, .max_version = 0x0304, .negotiated_version = 0x0506,
		.credits_requested = 0x0708, .credits_granted = 0x090a, .lanes = 0x0b0c,
		.status = -71, .status_field = 0x0d0e0f10, .max_rw_size = 0x11121314,
		.preferred_send_size = 0x15161718, .max_receive_size = 0x191a1b1c,
		.max_fragmented_size = 0x1d1e1f20, .auth = RDMAE_WIRE_AUTH_HMAC_SHA256,
	};
	uint8_t w[RDMAE_NEG_RESP_SIZE];
	uint8_t buf[RDMAE_NEG_RESP_SIZE + 1];
	unsigned int i;

	(void)state;
	memcpy(w, want, sizeof(w));
	for (i = 0; i < RDMAE_PROOF_SIZE; i++) {
		m.proof[i] = (uint8_t)(0x60 + i);
		w[48 + i] = (uint8_t)(0x60 + i);
	}
	memset(buf, 0xff, sizeof(buf));
	rdmae_neg_resp_encode(buf, &m);
	assert_memory_equal(buf, w, sizeof(w));
	assert_int_equal(buf[RDMAE_NEG_RESP_SIZE], 0xff);
}

static void test_data_hdr_layout(void **state)
{
	static const uint8_t want[RDMAE_DATA_HDR_SIZE] = {
		0x02, 0x01, 0x04, 0x03, 0x03, 0x00,
		0x00, 0x00,		/* reserved */
		0x08, 0x07, 0x06, 0x05, 0x18, 0x00, 0x00, 0x00,
		0x0c, 0x0b, 0x0a, 0x09, 0x10, 0x0f, 0x0e, 0x0d,
	};
	const struct rdmae_data_hdr m = {
		.credits_requested = 0x0102, .credits_granted = 0x0304, .flags = 0x0003,
		.remaining_data_length = 0x05060708, .data_offset = 24,
		.data_length = 0x090a0b0c, .fence_seq = 0x0d0e0f10,
	};
	uint8_t buf[RDMAE_DATA_HDR_SIZE + 1];

	(void)state;
	memset(buf, 0xff, sizeof(buf));
	rdmae_data_hdr_encode(buf, &m);
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(buf[RDMAE_DATA_HDR_SIZE], 0xff);
}

static void test_bufdesc_layout(void **state)
{
	static const uint8_t want[RDMAE_BUFDESC_SIZE] = {
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
		0x0c, 0x0b, 0x0a, 0x09, 0x10, 0x0f, 0x0e, 0x0d,
	};
	const struct rdmae_bufdesc d = {
		.offset = 0x0102030405060708ull, .token = 0x090a0b0c, .length = 0x0d0e0f10,
	};
	uint8_t buf[RDMAE_BUFDESC_SIZE];

	(void)state;
	rdmae_bufdesc_encode(buf, &d);
	assert_memory_equal(buf, want, sizeof(want));
}

static void test_lane_pd_layout(void **state)
{
	static const uint8_t want[RDMAE_LANE_PD_SIZE] = {
		0x52, 0x44, 0x4d, 0x45, 0x00, 0x01, 0x03, 0x00,
		0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,
	};
	const struct rdmae_lane_pd p = {
		.version = 0x0100, .lane = 3, .conn_token = 0x1112131415161718ull,
	};
	uint8_t buf[RDMAE_LANE_PD_SIZE];

	(void)state;
	rdmae_lane_pd_encode(buf, &p);
	assert_memory_equal(buf, want, sizeof(want));
}

/* ---- round trips, at unaligned addresses ---- */

static void test_neg_req_roundtrip(void **state)
{
	const struct rdmae_neg_req m = {
		.min_version = 0x0100, .max_version = 0xfffe, .credits_requested = 4096,
		.credits_granted = 1, .lanes = 16, .preferred_send_size = 0xfffffff0,
		.max_receive_size = 128, .max_fragmented_size = 0x80000001,
		.max_rw_size = 4096, .auth = RDMAE_WIRE_AUTH_HMAC_SHA256,
		.nonce = { 9, 8, 7, [31] = 0xaa }, .proof = { 0xbb, [30] = 5, [31] = 6 },
	};
	uint8_t raw[RDMAE_NEG_REQ_SIZE + 3];
	struct rdmae_neg_req out;
	enum rdmae_wire_field f = RDMAE_F_COUNT;

	(void)state;
	rdmae_neg_req_encode(raw + 3, &m);
	memset(&out, 0, sizeof(out));
	assert_int_equal(rdmae_neg_req_decode(raw + 3, RDMAE_NEG_REQ_SIZE, &out, &f), 0);
	assert_int_equal(f, RDMAE_F_NONE);
	/* Field by field: the host structs have padding. */
	assert_int_equal(out.min_version, m.min_version);
	assert_int_equal(out.max_version, m.max_version);
	assert_int_equal(out.credits_requested, m.credits_requested);
	assert_int_equal(out.credits_granted, m.credits_granted);
	assert_int_equal(out.lanes, m.lanes);
	assert_int_equal(out.preferred_send_size, m.preferred_send_size);
	assert_int_equal(out.max_receive_size, m.max_receive_size);
	assert_int_equal(out.max_fragmented_size, m.max_fragmented_size);
	assert_int_equal(out.max_rw_size, m.max_rw_size);
	assert_int_equal(out.auth, m.auth);
	assert_memory_equal(out.nonce, m.nonce, sizeof(m.nonce));
	assert_memory_equal(out.proof, m.proof, sizeof(m.proof));
}

static void test_neg_resp_roundtrip(void **state)
{
	const struct rdmae_neg_resp m = {
		.min_version = 0x0100, .max_version = 0x0200, .negotiated_version = 0x0100,
		.credits_requested = 255, .credits_granted = 254, .lanes = 7,
		.status = -EPROTONOSUPPORT, .status_field = RDMAE_F_VERSION,
		.max_rw_size = 1 * MIB, .preferred_send_size = 8192, .max_receive_size = 65536,
		.max_fragmented_size = 32 * MIB, .auth = RDMAE_WIRE_AUTH_HMAC_SHA256,
		.proof = { 1, 2, 3, [31] = 0xee },
	};
	uint8_t raw[RDMAE_NEG_RESP_SIZE + 5];
	struct rdmae_neg_resp out;
	enum rdmae_wire_field f = RDMAE_F_COUNT;

	(void)state;
	rdmae_neg_resp_encode(raw + 5, &m);
	memset(&out, 0, sizeof(out));
	assert_int_equal(rdmae_neg_resp_decode(raw + 5, RDMAE_NEG_RESP_SIZE, &out, &f), 0);
	assert_int_equal(f, RDMAE_F_NONE);
	assert_int_equal(out.min_version, m.min_version);
	assert_int_equal(out.max_version, m.max_version);
	assert_int_equal(out.negotiated_version, m.negotiated_version);
	assert_int_equal(out.credits_requested, m.credits_requested);
	assert_int_equal(out.credits_granted, m.credits_granted);
	assert_int_equal(out.lanes, m.lanes);
	assert_int_equal(out.status, m.status);
	assert_int_equal(out.status_field, m.status_field);
	assert_int_equal(out.max_rw_size, m.max_rw_size);
	assert_int_equal(out.preferred_send_size, m.preferred_send_size);
	assert_int_equal(out.max_receive_size, m.max_receive_size);
	assert_int_equal(out.max_fragmented_size, m.max_fragmented_size);
	assert_int_equal(out.auth, m.auth);
	assert_memory_equal(out.proof, m.proof, sizeof(m.proof));
}

static void test_data_hdr_roundtrip(void **state)
{
	struct rdmae_data_hdr m = data_hdr(100);
	struct rdmae_data_hdr out;
	enum rdmae_wire_field f;

	(void)state;
	m.credits_granted = 0xffff;
	m.credits_requested = 1;
	m.flags = RDMAE_FLAG_FENCE | RDMAE_FLAG_RESPONSE_REQUESTED;
	m.remaining_data_length = 0xabcdef;
	m.fence_seq = 0xdeadbeef;
	memset(&out, 0, sizeof(out));
	assert_int_equal(dh_decode(&m, RDMAE_DATA_HDR_SIZE + 100, 0, &out, &f), 0);
	assert_int_equal(f, RDMAE_F_NONE);
	assert_int_equal(out.credits_requested, m.credits_requested);
	assert_int_equal(out.credits_granted, m.credits_granted);
	assert_int_equal(out.flags, m.flags);
	assert_int_equal(out.remaining_data_length, m.remaining_data_length);
	assert_int_equal(out.data_offset, m.data_offset);
	assert_int_equal(out.data_length, m.data_length);
	assert_int_equal(out.fence_seq, m.fence_seq);
}

static void test_bufdesc_roundtrip(void **state)
{
	const struct rdmae_bufdesc d = {
		.offset = 0xffffffffffff0000ull, .token = 0x80000001u, .length = 1u << 30,
	};
	uint8_t raw[RDMAE_BUFDESC_SIZE + 7];
	struct rdmae_bufdesc out;

	(void)state;
	rdmae_bufdesc_encode(raw + 7, &d);
	rdmae_bufdesc_decode(raw + 7, &out);
	assert_true(out.offset == d.offset);
	assert_int_equal(out.token, d.token);
	assert_int_equal(out.length, d.length);
}

static void test_lane_pd_roundtrip(void **state)
{
	const struct rdmae_lane_pd p0 = { .version = RDMAE_VERSION, .lane = 0, .conn_token = 0 };
	const struct rdmae_lane_pd p15 = {
		.version = RDMAE_VERSION, .lane = RDMAE_MAX_LANES - 1, .conn_token = ~0ull,
	};
	/* rdma_cm hands over padded private data, so longer must be fine. */
	uint8_t raw[56 + 1];
	struct rdmae_lane_pd out;
	enum rdmae_wire_field f = RDMAE_F_COUNT;

	(void)state;
	memset(raw, 0, sizeof(raw));
	rdmae_lane_pd_encode(raw + 1, &p0);
	assert_int_equal(rdmae_lane_pd_decode(raw + 1, 56, &out, &f), 0);
	assert_int_equal(f, RDMAE_F_NONE);
	assert_int_equal(out.version, p0.version);
	assert_int_equal(out.lane, 0);
	assert_true(out.conn_token == 0);

	rdmae_lane_pd_encode(raw + 1, &p15);
	assert_int_equal(rdmae_lane_pd_decode(raw + 1, RDMAE_LANE_PD_SIZE, &out, &f), 0);
	assert_int_equal(out.lane, RDMAE_MAX_LANES - 1);
	assert_true(out.conn_token == ~0ull);
}

/* ---- negotiate message decoders ---- */

static void test_neg_req_decode_rejects(void **state)
{
	const struct rdmae_wire_limits l = limits();
	struct rdmae_neg_req m = req_from(&l, 1);
	uint8_t raw[RDMAE_NEG_REQ_SIZE + 32];
	enum rdmae_wire_field f;

	(void)state;
	memset(raw, 0x5a, sizeof(raw));
	rdmae_neg_req_encode(raw, &m);

	/* Truncated, down to nothing. */
	f = RDMAE_F_NONE;
	assert_int_equal(rdmae_neg_req_decode(raw, RDMAE_NEG_REQ_SIZE - 1, &m, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_LENGTH);
	assert_int_equal(rdmae_neg_req_decode(raw, 0, &m, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_LENGTH);

	/* Oversized: trailing bytes belong to a later version and are ignored. */
	assert_int_equal(rdmae_neg_req_decode(raw, sizeof(raw), &m, &f), 0);
	assert_int_equal(f, RDMAE_F_NONE);

	raw[3] ^= 0x01;
	assert_int_equal(rdmae_neg_req_decode(raw, RDMAE_NEG_REQ_SIZE, &m, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_MAGIC);
	raw[3] ^= 0x01;

	/* auth: 0 and 1 are known, anything else is refused. */
	raw[15] = 0x80;
	assert_int_equal(rdmae_neg_req_decode(raw, RDMAE_NEG_REQ_SIZE, &m, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_AUTH);
	raw[15] = 0;
	raw[14] = 0x02;
	assert_int_equal(rdmae_neg_req_decode(raw, RDMAE_NEG_REQ_SIZE, &m, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_AUTH);
	raw[14] = 0x01;
	assert_int_equal(rdmae_neg_req_decode(raw, RDMAE_NEG_REQ_SIZE, &m, &f), 0);
	assert_int_equal(m.auth, RDMAE_WIRE_AUTH_HMAC_SHA256);

	/* A version-1 request (32 bytes, max version 1.0) is told "version", not "length". */
	raw[6] = 0x00;
	raw[7] = 0x01;
	assert_int_equal(rdmae_neg_req_decode(raw, RDMAE_NEG_REQ_V1_SIZE, &m, &f),
			 -EPROTONOSUPPORT);
	assert_int_equal(f, RDMAE_F_VERSION);
	raw[7] = 0x02;
	assert_int_equal(rdmae_neg_req_decode(raw, RDMAE_NEG_REQ_V1_SIZE, &m, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_LENGTH);
}

static void test_neg_resp_decode_rejects(void **state)
{
	struct rdmae_neg_resp m;
	uint8_t raw[RDMAE_NEG_RESP_SIZE + 16];
	enum rdmae_wire_field f;

	(void)state;
	memset(&m, 0, sizeof(m));
	memset(raw, 0, sizeof(raw));
	rdmae_neg_resp_encode(raw, &m);

	assert_int_equal(rdmae_neg_resp_decode(raw, RDMAE_NEG_RESP_SIZE - 1, &m, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_LENGTH);
	/* A version-1-sized message is not a response unless it is a refusal. */
	assert_int_equal(rdmae_neg_resp_decode(raw, RDMAE_NEG_RESP_V1_SIZE, &m, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_LENGTH);
	assert_int_equal(rdmae_neg_resp_decode(raw, sizeof(raw), &m, &f), 0);
	assert_int_equal(f, RDMAE_F_NONE);

	/* Reserved and auth. */
	raw[43] = 1;
	assert_int_equal(rdmae_neg_resp_decode(raw, RDMAE_NEG_RESP_SIZE, &m, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_RESERVED);
	raw[43] = 0;
	raw[47] = 1;
	assert_int_equal(rdmae_neg_resp_decode(raw, RDMAE_NEG_RESP_SIZE, &m, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_RESERVED);
	raw[47] = 0;
	raw[40] = 7;
	assert_int_equal(rdmae_neg_resp_decode(raw, RDMAE_NEG_RESP_SIZE, &m, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_AUTH);
	raw[40] = 0;

	/* A version-1 server's refusal (48 bytes) still says why. */
	m.status = -EPROTONOSUPPORT;
	m.status_field = RDMAE_F_VERSION;
	m.min_version = m.max_version = 0x0100;
	rdmae_neg_resp_encode(raw, &m);
	memset(&m, 0, sizeof(m));
	assert_int_equal(rdmae_neg_resp_decode(raw, RDMAE_NEG_RESP_V1_SIZE, &m, &f), 0);
	assert_int_equal(m.status, -EPROTONOSUPPORT);
	assert_int_equal(m.status_field, RDMAE_F_VERSION);
	assert_int_equal(m.max_version, 0x0100);

	raw[0] = 'X';
	assert_int_equal(rdmae_neg_resp_decode(raw, RDMAE_NEG_RESP_SIZE, &m, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_MAGIC);
}

/* ---- data header decoder ---- */

static void test_data_hdr_truncated(void **state)
{
	struct rdmae_data_hdr h = data_hdr(0);

	(void)state;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE - 1, 0, -EBADMSG, RDMAE_F_LENGTH);
	expect_dh(&h, 0, 0, -EBADMSG, RDMAE_F_LENGTH);
	/* The empty message (credit grant, keepalive) is the header alone. */
	expect_dh(&h, RDMAE_DATA_HDR_SIZE, 0, 0, RDMAE_F_NONE);
	h.flags = RDMAE_FLAG_RESPONSE_REQUESTED;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE, 64 * 1024, 0, RDMAE_F_NONE);
	/* Padding after an empty message is harmless. */
	expect_dh(&h, 200, 0, 0, RDMAE_F_NONE);
}

static void test_data_hdr_reserved(void **state)
{
	struct rdmae_data_hdr h = data_hdr(8);
	uint8_t raw[64];
	struct rdmae_data_hdr out;
	enum rdmae_wire_field f;

	(void)state;
	memset(raw, 0, sizeof(raw));
	rdmae_data_hdr_encode(raw, &h);
	assert_int_equal(rdmae_data_hdr_decode(raw, 32, 0, &out, &f), 0);
	raw[7] = 1;
	assert_int_equal(rdmae_data_hdr_decode(raw, 32, 0, &out, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_RESERVED);
}

static void test_data_hdr_flags(void **state)
{
	struct rdmae_data_hdr h = data_hdr(0);

	(void)state;
	h.flags = RDMAE_FLAGS_KNOWN;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE, 0, 0, RDMAE_F_NONE);
	h.flags = 0x0004;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE, 0, -EPROTO, RDMAE_F_FLAGS);
	h.flags = 0x8000 | RDMAE_FLAG_FENCE;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE, 0, -EPROTO, RDMAE_F_FLAGS);
}

static void test_data_hdr_zero_credits(void **state)
{
	struct rdmae_data_hdr h = data_hdr(0);

	(void)state;
	h.credits_requested = 0;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE, 0, -EPROTO, RDMAE_F_CREDITS_REQUESTED);
	h.credits_requested = 1;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE, 0, 0, RDMAE_F_NONE);
	/* Granting none is normal: most messages carry no new credits. */
	h.credits_granted = 0;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE, 0, 0, RDMAE_F_NONE);
}

static void test_data_hdr_offset(void **state)
{
	struct rdmae_data_hdr h = data_hdr(0);

	(void)state;
	/* No payload, yet an offset. */
	h.data_offset = 24;
	expect_dh(&h, 64, 0, -EBADMSG, RDMAE_F_DATA_OFFSET);

	h = data_hdr(16);
	h.data_offset = 0;
	expect_dh(&h, 64, 0, -EBADMSG, RDMAE_F_DATA_OFFSET);
	/* Aligned, but inside the header. */
	h.data_offset = 16;
	expect_dh(&h, 64, 0, -EBADMSG, RDMAE_F_DATA_OFFSET);
	/* Misaligned: each of the seven wrong residues. */
	for (uint32_t off = 25; off < 32; off++) {
		h.data_offset = off;
		expect_dh(&h, 64, 0, -EBADMSG, RDMAE_F_DATA_OFFSET);
	}
	h.data_offset = 32;
	expect_dh(&h, 64, 0, 0, RDMAE_F_NONE);
}

static void test_data_hdr_past_end(void **state)
{
	struct rdmae_data_hdr h = data_hdr(40);

	(void)state;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE + 40, 0, 0, RDMAE_F_NONE);
	expect_dh(&h, RDMAE_DATA_HDR_SIZE + 39, 0, -EBADMSG, RDMAE_F_DATA_LENGTH);
	h.data_offset = 32;
	expect_dh(&h, 72, 0, 0, RDMAE_F_NONE);
	expect_dh(&h, 71, 0, -EBADMSG, RDMAE_F_DATA_LENGTH);
	/* Offsets and lengths that would wrap a 32-bit sum back into the buffer. */
	h.data_offset = 0xfffffff8u;
	h.data_length = 0x10;
	expect_dh(&h, 4096, 0, -EBADMSG, RDMAE_F_DATA_LENGTH);
	h.data_offset = 24;
	h.data_length = 0xffffffffu;
	expect_dh(&h, 4096, 0, -EBADMSG, RDMAE_F_DATA_LENGTH);
}

static void test_data_hdr_remaining(void **state)
{
	const uint32_t max = 256 * 1024;
	struct rdmae_data_hdr h = data_hdr(1000);

	(void)state;
	h.remaining_data_length = max - 1000;
	expect_dh(&h, 1024, max, 0, RDMAE_F_NONE);
	h.remaining_data_length = max - 999;
	expect_dh(&h, 1024, max, -EPROTO, RDMAE_F_REMAINING_DATA_LENGTH);
	/* 0 = the header alone, no limit known yet. */
	expect_dh(&h, 1024, 0, 0, RDMAE_F_NONE);
	/* A sum that wraps 32 bits to something small must still be caught. */
	h.remaining_data_length = 0xffffffffu;
	expect_dh(&h, 1024, 0xffffffffu, -EPROTO, RDMAE_F_REMAINING_DATA_LENGTH);
	/* An empty message announcing more than the maximum is just as wrong. */
	h = data_hdr(0);
	h.remaining_data_length = max + 1;
	expect_dh(&h, RDMAE_DATA_HDR_SIZE, max, -EPROTO, RDMAE_F_REMAINING_DATA_LENGTH);
}

/* ---- lane private data ---- */

static int lane_pd(uint16_t lane, uint64_t token, size_t len, enum rdmae_wire_field *f)
{
	const struct rdmae_lane_pd p = {
		.version = RDMAE_VERSION, .lane = lane, .conn_token = token,
	};
	uint8_t raw[64];
	struct rdmae_lane_pd out;

	memset(raw, 0, sizeof(raw));
	rdmae_lane_pd_encode(raw, &p);
	return rdmae_lane_pd_decode(raw, len, &out, f);
}

static void test_lane_pd_rejects(void **state)
{
	enum rdmae_wire_field f;
	uint8_t raw[RDMAE_LANE_PD_SIZE];
	struct rdmae_lane_pd out;
	const struct rdmae_lane_pd p = { .version = 1, .lane = 1, .conn_token = 9 };

	(void)state;
	assert_int_equal(lane_pd(0, 0, RDMAE_LANE_PD_SIZE - 1, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_LENGTH);
	assert_int_equal(lane_pd(0, 0, 0, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_LENGTH);
	/* A connect request without private data at all. */
	assert_int_equal(rdmae_lane_pd_decode(NULL, 0, &out, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_LENGTH);

	rdmae_lane_pd_encode(raw, &p);
	raw[2] = 0;
	assert_int_equal(rdmae_lane_pd_decode(raw, sizeof(raw), &out, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_MAGIC);

	assert_int_equal(lane_pd(RDMAE_MAX_LANES, 7, RDMAE_LANE_PD_SIZE, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_LANES);
	assert_int_equal(lane_pd(0xffff, 7, RDMAE_LANE_PD_SIZE, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_LANES);
	assert_int_equal(lane_pd(0, 7, RDMAE_LANE_PD_SIZE, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_LANES);
	assert_int_equal(lane_pd(1, 0, RDMAE_LANE_PD_SIZE, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_LANES);
	assert_int_equal(lane_pd(1, 7, RDMAE_LANE_PD_SIZE, &f), 0);
	assert_int_equal(f, RDMAE_F_NONE);
}

/* ---- negotiation: server ---- */

static void test_negotiate_server_ok(void **state)
{
	const struct rdmae_wire_limits srv = {
		.min_version = RDMAE_VERSION, .max_version = RDMAE_VERSION, .credits = 128,
		.lanes = 4, .preferred_send_size = 4096, .max_receive_size = 16384,
		.max_fragmented_size = 16 * MIB, .max_rw_size = 2 * MIB,
	};
	struct rdmae_wire_limits cli = limits();
	struct rdmae_neg_req req;
	struct rdmae_neg_resp resp;
	struct rdmae_negotiated out;
	enum rdmae_wire_field f = RDMAE_F_COUNT;

	(void)state;
	cli.lanes = 8;
	req = req_from(&cli, 200);
	assert_int_equal(rdmae_negotiate_server(&srv, &req, 127, &resp, &out, &f), 0);
	assert_int_equal(f, RDMAE_F_NONE);
	assert_int_equal(resp.status, 0);
	assert_int_equal(resp.status_field, RDMAE_F_NONE);
	assert_int_equal(resp.min_version, RDMAE_VERSION);
	assert_int_equal(resp.max_version, RDMAE_VERSION);
	assert_int_equal(resp.negotiated_version, RDMAE_VERSION);
	assert_int_equal(resp.credits_granted, 127);
	assert_int_equal(resp.credits_requested, 128);
	assert_int_equal(resp.lanes, 4);
	assert_int_equal(resp.max_rw_size, 1 * MIB);
	assert_int_equal(resp.max_fragmented_size, 16 * MIB);
	assert_int_equal(resp.preferred_send_size, 4096);
	assert_int_equal(resp.max_receive_size, 16384);

	assert_int_equal(out.version, RDMAE_VERSION);
	assert_int_equal(out.lanes, 4);
	assert_int_equal(out.send_credits, 200);
	assert_int_equal(out.peer_credits_target, 255);
	assert_int_equal(out.max_send_size, 4096);
	assert_int_equal(out.max_receive_size, 8192);
	assert_int_equal(out.max_fragmented_size, 16 * MIB);
	assert_int_equal(out.max_rw_size, 1 * MIB);
}

static void test_negotiate_server_version(void **state)
{
	struct rdmae_wire_limits srv = limits();
	struct rdmae_neg_req req = req_from(&srv, 10);
	struct rdmae_neg_resp resp;
	struct rdmae_negotiated out;
	enum rdmae_wire_field f;

	(void)state;
	srv.min_version = 0x0100;
	srv.max_version = 0x0300;

	/* The highest version both speak. */
	req.min_version = 0x0200;
	req.max_version = 0x0400;
	assert_int_equal(rdmae_negotiate_server(&srv, &req, 1, &resp, &out, &f), 0);
	assert_int_equal(resp.negotiated_version, 0x0300);
	assert_int_equal(out.version, 0x0300);
	req.min_version = 0x0080;
	req.max_version = 0x0100;
	assert_int_equal(rdmae_negotiate_server(&srv, &req, 1, &resp, &out, &f), 0);
	assert_int_equal(out.version, 0x0100);
	req.min_version = 0x0180;
	req.max_version = 0x0280;
	assert_int_equal(rdmae_negotiate_server(&srv, &req, 1, &resp, &out, &f), 0);
	assert_int_equal(out.version, 0x0280);

	/* Entirely above, entirely below, and upside down. */
	const uint16_t bad[][2] = {
		{ 0x0301, 0x0400 }, { 0x0001, 0x00ff }, { 0x0200, 0x0100 }, { 0, 0 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		req.min_version = bad[i][0];
		req.max_version = bad[i][1];
		assert_int_equal(rdmae_negotiate_server(&srv, &req, 1, &resp, &out, &f),
				 -EPROTONOSUPPORT);
		assert_int_equal(f, RDMAE_F_VERSION);
		assert_int_equal(resp.status, -EPROTONOSUPPORT);
		assert_int_equal(resp.status_field, RDMAE_F_VERSION);
		/* The refusal still tells the client what we speak. */
		assert_int_equal(resp.min_version, 0x0100);
		assert_int_equal(resp.max_version, 0x0300);
		assert_int_equal(resp.negotiated_version, 0);
		assert_int_equal(resp.lanes, 0);
	}
}

/* One rule violation: set field `off` (of `width` bytes) of the message to value. */
struct neg_case {
	const char *what;
	size_t off;
	size_t width;
	uint32_t value;
	enum rdmae_wire_field field;	/* RDMAE_F_NONE = must be accepted */
};

#define REQ(m) offsetof(struct rdmae_neg_req, m), sizeof(((struct rdmae_neg_req *)0)->m)
#define RESP(m) offsetof(struct rdmae_neg_resp, m), sizeof(((struct rdmae_neg_resp *)0)->m)

static void poke(void *msg, const struct neg_case *c)
{
	uint8_t *p = (uint8_t *)msg + c->off;

	if (c->width == 2) {
		uint16_t v = (uint16_t)c->value;

		memcpy(p, &v, 2);
	} else {
		uint32_t v = c->value;

		assert_int_equal(c->width, 4);
		memcpy(p, &v, 4);
	}
}

static const struct neg_case server_cases[] = {
	{ "credits_requested 0", REQ(credits_requested), 0, RDMAE_F_CREDITS_REQUESTED },
	{ "credits_requested max+1", REQ(credits_requested), RDMAE_MAX_CREDITS + 1,
	  RDMAE_F_CREDITS_REQUESTED },
	{ "credits_requested max", REQ(credits_requested), RDMAE_MAX_CREDITS, RDMAE_F_NONE },
	{ "credits_requested 1", REQ(credits_requested), 1, RDMAE_F_NONE },
	{ "credits_granted 0", REQ(credits_granted), 0, RDMAE_F_CREDITS_GRANTED },
	{ "credits_granted 1", REQ(credits_granted), 1, RDMAE_F_CREDITS_GRANTED },
	{ "credits_granted 2", REQ(credits_granted), 2, RDMAE_F_NONE },
	{ "credits_granted max+1", REQ(credits_granted), RDMAE_MAX_CREDITS + 1,
	  RDMAE_F_CREDITS_GRANTED },
	{ "credits_granted max", REQ(credits_granted), RDMAE_MAX_CREDITS, RDMAE_F_NONE },
	{ "lanes 0", REQ(lanes), 0, RDMAE_F_LANES },
	{ "lanes max+1", REQ(lanes), RDMAE_MAX_LANES + 1, RDMAE_F_LANES },
	{ "lanes max", REQ(lanes), RDMAE_MAX_LANES, RDMAE_F_NONE },
	{ "max_receive_size min-1", REQ(max_receive_size), RDMAE_MIN_RECV_SIZE - 1,
	  RDMAE_F_MAX_RECEIVE_SIZE },
	{ "max_receive_size max+1", REQ(max_receive_size), RDMAE_MAX_RECV_SIZE + 1,
	  RDMAE_F_MAX_RECEIVE_SIZE },
	{ "max_receive_size min", REQ(max_receive_size), RDMAE_MIN_RECV_SIZE, RDMAE_F_NONE },
	{ "max_receive_size max", REQ(max_receive_size), RDMAE_MAX_RECV_SIZE, RDMAE_F_NONE },
	{ "preferred_send_size min-1", REQ(preferred_send_size), RDMAE_MIN_RECV_SIZE - 1,
	  RDMAE_F_PREFERRED_SEND_SIZE },
	{ "preferred_send_size 0", REQ(preferred_send_size), 0, RDMAE_F_PREFERRED_SEND_SIZE },
	{ "preferred_send_size min", REQ(preferred_send_size), RDMAE_MIN_RECV_SIZE, RDMAE_F_NONE },
	{ "preferred_send_size huge", REQ(preferred_send_size), UINT32_MAX, RDMAE_F_NONE },
	{ "max_fragmented_size min-1", REQ(max_fragmented_size), RDMAE_MIN_FRAG_SIZE - 1,
	  RDMAE_F_MAX_FRAGMENTED_SIZE },
	{ "max_fragmented_size max+1", REQ(max_fragmented_size), RDMAE_MAX_FRAG_SIZE + 1,
	  RDMAE_F_MAX_FRAGMENTED_SIZE },
	{ "max_fragmented_size min", REQ(max_fragmented_size), RDMAE_MIN_FRAG_SIZE, RDMAE_F_NONE },
	{ "max_fragmented_size max", REQ(max_fragmented_size), RDMAE_MAX_FRAG_SIZE, RDMAE_F_NONE },
	{ "max_rw_size min-1", REQ(max_rw_size), RDMAE_MIN_RW_SIZE - 1, RDMAE_F_MAX_RW_SIZE },
	{ "max_rw_size max+1", REQ(max_rw_size), RDMAE_MAX_RW_SIZE + 1, RDMAE_F_MAX_RW_SIZE },
	{ "max_rw_size min", REQ(max_rw_size), RDMAE_MIN_RW_SIZE, RDMAE_F_NONE },
	{ "max_rw_size max", REQ(max_rw_size), RDMAE_MAX_RW_SIZE, RDMAE_F_NONE },
};

static void test_negotiate_server_rules(void **state)
{
	const struct rdmae_wire_limits srv = limits();

	(void)state;
	for (size_t i = 0; i < sizeof(server_cases) / sizeof(server_cases[0]); i++) {
		const struct neg_case *c = &server_cases[i];
		struct rdmae_neg_req req = req_from(&srv, 32);
		struct rdmae_neg_resp resp;
		struct rdmae_negotiated out;
		enum rdmae_wire_field f = RDMAE_F_COUNT;
		int want = c->field == RDMAE_F_NONE ? 0 : -EPROTO;
		int ret;

		poke(&req, c);
		ret = rdmae_negotiate_server(&srv, &req, 16, &resp, &out, &f);
		if (ret != want || f != c->field)
			fail_msg("%s: got %d/%s, want %d/%s", c->what, ret,
				 rdmae_wire_field_name(f), want, rdmae_wire_field_name(c->field));
		assert_int_equal(resp.status, want);
		assert_int_equal(resp.status_field, c->field);
		if (want) {
			assert_int_equal(resp.lanes, 0);
			assert_int_equal(out.send_credits, 0);
		}
	}
}

static void test_negotiate_server_sizes(void **state)
{
	struct rdmae_wire_limits srv = limits();
	struct rdmae_neg_req req = req_from(&srv, 32);
	struct rdmae_neg_resp resp;
	struct rdmae_negotiated out;
	enum rdmae_wire_field f;

	(void)state;
	/* We receive no more than the peer will ever send, nor less than a header and some. */
	req.preferred_send_size = 1000;
	req.max_receive_size = 2000;
	assert_int_equal(rdmae_negotiate_server(&srv, &req, 1, &resp, &out, &f), 0);
	assert_int_equal(out.max_receive_size, 1000);
	assert_int_equal(out.max_send_size, 2000);
	srv.max_receive_size = 64;
	req.preferred_send_size = 128;
	assert_int_equal(rdmae_negotiate_server(&srv, &req, 1, &resp, &out, &f), 0);
	assert_int_equal(out.max_receive_size, RDMAE_MIN_RECV_SIZE);
	/* The smaller lane count wins either way. */
	srv.lanes = 16;
	req.lanes = 3;
	assert_int_equal(rdmae_negotiate_server(&srv, &req, 1, &resp, &out, &f), 0);
	assert_int_equal(out.lanes, 3);
	assert_int_equal(resp.lanes, 3);
}

/* ---- negotiation: client ---- */

/* A response the client in limits() accepts, from a server in limits() too. */
static struct rdmae_neg_resp good_resp(void)
{
	const struct rdmae_wire_limits l = limits();
	const struct rdmae_neg_req req = req_from(&l, 32);
	struct rdmae_neg_resp resp;
	struct rdmae_negotiated out;
	enum rdmae_wire_field f;

	assert_int_equal(rdmae_negotiate_server(&l, &req, 64, &resp, &out, &f), 0);
	return resp;
}

static void test_negotiate_end_to_end(void **state)
{
	const struct rdmae_wire_limits srv = {
		.min_version = RDMAE_VERSION_2, .max_version = RDMAE_VERSION, .credits = 128,
		.lanes = 4, .preferred_send_size = 4096, .max_receive_size = 16384,
		.max_fragmented_size = 16 * MIB, .max_rw_size = 2 * MIB,
	};
	struct rdmae_wire_limits cli = limits();
	struct rdmae_neg_req req, req_rx;
	struct rdmae_neg_resp resp, resp_rx;
	struct rdmae_negotiated so, co;
	enum rdmae_wire_field f;
	uint8_t buf[RDMAE_NEG_MAX_SIZE];

	(void)state;
	cli.lanes = 8;
	req = req_from(&cli, 254);
	rdmae_neg_req_encode(buf, &req);
	assert_int_equal(rdmae_neg_req_decode(buf, RDMAE_NEG_REQ_SIZE, &req_rx, &f), 0);
	assert_int_equal(rdmae_negotiate_server(&srv, &req_rx, 127, &resp, &so, &f), 0);
	rdmae_neg_resp_encode(buf, &resp);
	assert_int_equal(rdmae_neg_resp_decode(buf, RDMAE_NEG_RESP_SIZE, &resp_rx, &f), 0);
	assert_int_equal(rdmae_negotiate_client(&cli, &req, &resp_rx, &co, &f), 0);
	assert_int_equal(f, RDMAE_F_NONE);

	assert_int_equal(co.version, RDMAE_VERSION);
	assert_int_equal(co.lanes, 4);
	assert_int_equal(co.send_credits, 127);
	assert_int_equal(co.peer_credits_target, 128);
	assert_int_equal(co.max_send_size, 8192);
	assert_int_equal(co.max_receive_size, 4096);
	assert_int_equal(co.max_fragmented_size, 16 * MIB);
	assert_int_equal(co.max_rw_size, 1 * MIB);

	/* Each side receives at most what the other sends; the rest is shared. */
	assert_int_equal(so.version, co.version);
	assert_int_equal(so.lanes, co.lanes);
	assert_int_equal(so.max_send_size, co.max_receive_size);
	assert_int_equal(co.max_send_size, so.max_receive_size);
	assert_int_equal(so.max_fragmented_size, co.max_fragmented_size);
	assert_int_equal(so.max_rw_size, co.max_rw_size);
	assert_int_equal(so.send_credits, req.credits_granted);
	assert_int_equal(so.peer_credits_target, cli.credits);
}

/*
 * The lanes after lane 0: what each side posts on them, derived from its own
 * credits, is what the other starts with, derived from the peer's target.
 */
static void test_lane_credits(void **state)
{
	struct rdmae_wire_limits srv = limits(), cli = limits();
	struct rdmae_neg_req req;
	struct rdmae_neg_resp resp;
	struct rdmae_negotiated so, co;
	enum rdmae_wire_field f;
	unsigned int lane;

	(void)state;
	/* Lane 0 keeps the full ring; before 2.1 every lane does. */
	assert_int_equal(rdmae_lane_credits(RDMAE_VERSION, 0, 255), 255);
	assert_int_equal(rdmae_lane_credits(RDMAE_VERSION_2, 1, 255), 255);
	assert_int_equal(rdmae_lane_credits(0, 3, 255), 255);
	/* From 2.1 the others keep at most RDMAE_LANE_CREDITS, never more than asked. */
	assert_int_equal(rdmae_lane_credits(RDMAE_VERSION_2_1, 1, 255), RDMAE_LANE_CREDITS);
	assert_int_equal(rdmae_lane_credits(RDMAE_VERSION_2_1, RDMAE_MAX_LANES - 1, 4096),
			 RDMAE_LANE_CREDITS);
	assert_int_equal(rdmae_lane_credits(RDMAE_VERSION_2_1, 1, 3), 3);
	assert_true(RDMAE_LANE_CREDITS >= RDMAE_MIN_INITIAL_GRANT + 1);

	/* Two peers of different credits: each one's sends fit the other's posted ring. */
	srv.credits = 20;
	cli.credits = 300;
	req = req_from(&cli, 299);
	assert_int_equal(rdmae_negotiate_server(&srv, &req, 20, &resp, &so, &f), 0);
	assert_int_equal(rdmae_negotiate_client(&cli, &req, &resp, &co, &f), 0);
	assert_int_equal(so.version, RDMAE_VERSION_2_1);
	for (lane = 1; lane < co.lanes; lane++) {
		assert_int_equal(rdmae_lane_credits(co.version, lane, co.peer_credits_target),
				 rdmae_lane_credits(so.version, lane, srv.credits));
		assert_int_equal(rdmae_lane_credits(so.version, lane, so.peer_credits_target),
				 rdmae_lane_credits(co.version, lane, cli.credits));
	}
	assert_int_equal(rdmae_lane_credits(co.version, 1, co.peer_credits_target), 20);
	assert_int_equal(rdmae_lane_credits(so.version, 1, so.peer_credits_target),
			 RDMAE_LANE_CREDITS);

	/* A 2.0 server: 2.0 is negotiated and the lanes keep their full rings. */
	srv.min_version = srv.max_version = RDMAE_VERSION_2;
	cli.min_version = RDMAE_VERSION_2;
	req = req_from(&cli, 299);
	assert_int_equal(rdmae_negotiate_server(&srv, &req, 20, &resp, &so, &f), 0);
	assert_int_equal(rdmae_negotiate_client(&cli, &req, &resp, &co, &f), 0);
	assert_int_equal(co.version, RDMAE_VERSION_2);
	assert_int_equal(rdmae_lane_credits(co.version, 1, cli.credits), 300);
	assert_int_equal(rdmae_lane_credits(so.version, 1, so.peer_credits_target), 300);
}

static void test_negotiate_client_status(void **state)
{
	const struct rdmae_wire_limits cli = limits();
	const struct rdmae_neg_req sent = req_from(&cli, 32);
	struct rdmae_neg_resp resp = good_resp();
	struct rdmae_negotiated out;
	enum rdmae_wire_field f;

	(void)state;
	/* The server's refusal comes back as is. */
	resp.status = -EPROTONOSUPPORT;
	resp.status_field = RDMAE_F_VERSION;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTONOSUPPORT);
	assert_int_equal(f, RDMAE_F_VERSION);
	resp.status = -EPROTO;
	resp.status_field = RDMAE_F_MAX_RW_SIZE;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_MAX_RW_SIZE);
	/* ...unless it makes no sense. */
	resp.status_field = RDMAE_F_COUNT;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_STATUS);
	resp.status_field = 0xffffffffu;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_STATUS);
	resp.status_field = RDMAE_F_NONE;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_STATUS);
	resp.status = 5;
	resp.status_field = RDMAE_F_LANES;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_LANES);
	resp.status = INT32_MIN;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTO);
	resp.status = -4096;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTO);
	resp.status = -4095;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -4095);
	assert_int_equal(out.send_credits, 0);
}

static void test_negotiate_client_version(void **state)
{
	struct rdmae_wire_limits cli = limits();
	const struct rdmae_neg_req sent = req_from(&cli, 32);
	struct rdmae_neg_resp resp = good_resp();
	struct rdmae_negotiated out;
	enum rdmae_wire_field f;

	(void)state;
	cli.min_version = 0x0100;
	cli.max_version = 0x0200;
	resp.min_version = 0x0100;
	resp.max_version = 0x0300;
	resp.negotiated_version = 0x0200;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), 0);
	assert_int_equal(out.version, 0x0200);

	/* Not one of ours. */
	resp.negotiated_version = 0x0201;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTONOSUPPORT);
	assert_int_equal(f, RDMAE_F_VERSION);
	resp.negotiated_version = 0x00ff;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTONOSUPPORT);
	assert_int_equal(f, RDMAE_F_VERSION);
	/* Ours, but not one the server claims to speak. */
	resp.negotiated_version = 0x0180;
	resp.min_version = 0x0190;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTONOSUPPORT);
	assert_int_equal(f, RDMAE_F_VERSION);
	resp.min_version = 0x0100;
	resp.max_version = 0x0170;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), -EPROTONOSUPPORT);
	assert_int_equal(f, RDMAE_F_VERSION);
}

static const struct neg_case client_cases[] = {
	{ "credits_granted 0", RESP(credits_granted), 0, RDMAE_F_CREDITS_GRANTED },
	{ "credits_granted max+1", RESP(credits_granted), RDMAE_MAX_CREDITS + 1,
	  RDMAE_F_CREDITS_GRANTED },
	{ "credits_granted 1", RESP(credits_granted), 1, RDMAE_F_CREDITS_GRANTED },
	{ "credits_granted 2", RESP(credits_granted), 2, RDMAE_F_NONE },
	{ "credits_granted max", RESP(credits_granted), RDMAE_MAX_CREDITS, RDMAE_F_NONE },
	{ "credits_requested 0", RESP(credits_requested), 0, RDMAE_F_CREDITS_REQUESTED },
	{ "credits_requested max+1", RESP(credits_requested), RDMAE_MAX_CREDITS + 1,
	  RDMAE_F_CREDITS_REQUESTED },
	{ "credits_requested max", RESP(credits_requested), RDMAE_MAX_CREDITS, RDMAE_F_NONE },
	{ "lanes 0", RESP(lanes), 0, RDMAE_F_LANES },
	{ "lanes more than asked", RESP(lanes), 5, RDMAE_F_LANES },
	{ "lanes as asked", RESP(lanes), 4, RDMAE_F_NONE },
	{ "lanes 1", RESP(lanes), 1, RDMAE_F_NONE },
	{ "preferred_send_size 127", RESP(preferred_send_size), 127, RDMAE_F_PREFERRED_SEND_SIZE },
	{ "preferred_send_size over our receive", RESP(preferred_send_size), 8193,
	  RDMAE_F_PREFERRED_SEND_SIZE },
	{ "preferred_send_size our receive", RESP(preferred_send_size), 8192, RDMAE_F_NONE },
	{ "preferred_send_size 128", RESP(preferred_send_size), 128, RDMAE_F_NONE },
	{ "max_receive_size 127", RESP(max_receive_size), 127, RDMAE_F_MAX_RECEIVE_SIZE },
	{ "max_receive_size max+1", RESP(max_receive_size), RDMAE_MAX_RECV_SIZE + 1,
	  RDMAE_F_MAX_RECEIVE_SIZE },
	{ "max_receive_size 128", RESP(max_receive_size), 128, RDMAE_F_NONE },
	{ "max_receive_size max", RESP(max_receive_size), RDMAE_MAX_RECV_SIZE, RDMAE_F_NONE },
	{ "max_fragmented_size min-1", RESP(max_fragmented_size), RDMAE_MIN_FRAG_SIZE - 1,
	  RDMAE_F_MAX_FRAGMENTED_SIZE },
	{ "max_fragmented_size over sent", RESP(max_fragmented_size), 32 * MIB + 1,
	  RDMAE_F_MAX_FRAGMENTED_SIZE },
	{ "max_fragmented_size min", RESP(max_fragmented_size), RDMAE_MIN_FRAG_SIZE,
	  RDMAE_F_NONE },
	{ "max_fragmented_size sent", RESP(max_fragmented_size), 32 * MIB, RDMAE_F_NONE },
	{ "max_rw_size min-1", RESP(max_rw_size), RDMAE_MIN_RW_SIZE - 1, RDMAE_F_MAX_RW_SIZE },
	{ "max_rw_size over sent", RESP(max_rw_size), 1 * MIB + 1, RDMAE_F_MAX_RW_SIZE },
	{ "max_rw_size min", RESP(max_rw_size), RDMAE_MIN_RW_SIZE, RDMAE_F_NONE },
	{ "max_rw_size sent", RESP(max_rw_size), 1 * MIB, RDMAE_F_NONE },
};

static void test_negotiate_client_rules(void **state)
{
	const struct rdmae_wire_limits cli = limits();
	const struct rdmae_neg_req sent = req_from(&cli, 32);

	(void)state;
	for (size_t i = 0; i < sizeof(client_cases) / sizeof(client_cases[0]); i++) {
		const struct neg_case *c = &client_cases[i];
		struct rdmae_neg_resp resp = good_resp();
		struct rdmae_negotiated out;
		enum rdmae_wire_field f = RDMAE_F_COUNT;
		int want = c->field == RDMAE_F_NONE ? 0 : -EPROTO;
		int ret;

		poke(&resp, c);
		ret = rdmae_negotiate_client(&cli, &sent, &resp, &out, &f);
		if (ret != want || f != c->field)
			fail_msg("%s: got %d/%s, want %d/%s", c->what, ret,
				 rdmae_wire_field_name(f), want, rdmae_wire_field_name(c->field));
	}
}

static void test_negotiate_client_sizes(void **state)
{
	struct rdmae_wire_limits cli = limits();
	const struct rdmae_neg_req sent = req_from(&cli, 32);
	struct rdmae_neg_resp resp = good_resp();
	struct rdmae_negotiated out;
	enum rdmae_wire_field f;

	(void)state;
	resp.preferred_send_size = 1000;
	resp.max_receive_size = 3000;
	resp.lanes = 2;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), 0);
	assert_int_equal(out.max_receive_size, 1000);
	assert_int_equal(out.max_send_size, 3000);
	assert_int_equal(out.lanes, 2);
	resp.max_receive_size = RDMAE_MAX_RECV_SIZE;
	assert_int_equal(rdmae_negotiate_client(&cli, &sent, &resp, &out, &f), 0);
	assert_int_equal(out.max_send_size, cli.preferred_send_size);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_field_names),
		cmocka_unit_test(test_neg_req_layout),
		cmocka_unit_test(test_neg_resp_layout),
		cmocka_unit_test(test_data_hdr_layout),
		cmocka_unit_test(test_bufdesc_layout),
		cmocka_unit_test(test_lane_pd_layout),
		cmocka_unit_test(test_neg_req_roundtrip),
		cmocka_unit_test(test_neg_resp_roundtrip),
		cmocka_unit_test(test_data_hdr_roundtrip),
		cmocka_unit_test(test_bufdesc_roundtrip),
		cmocka_unit_test(test_lane_pd_roundtrip),
		cmocka_unit_test(test_neg_req_decode_rejects),
		cmocka_unit_test(test_neg_resp_decode_rejects),
		cmocka_unit_test(test_data_hdr_truncated),
		cmocka_unit_test(test_data_hdr_reserved),
		cmocka_unit_test(test_data_hdr_flags),
		cmocka_unit_test(test_data_hdr_zero_credits),
		cmocka_unit_test(test_data_hdr_offset),
		cmocka_unit_test(test_data_hdr_past_end),
		cmocka_unit_test(test_data_hdr_remaining),
		cmocka_unit_test(test_lane_pd_rejects),
		cmocka_unit_test(test_negotiate_server_ok),
		cmocka_unit_test(test_negotiate_server_version),
		cmocka_unit_test(test_negotiate_server_rules),
		cmocka_unit_test(test_negotiate_server_sizes),
		cmocka_unit_test(test_negotiate_end_to_end),
		cmocka_unit_test(test_lane_credits),
		cmocka_unit_test(test_negotiate_client_status),
		cmocka_unit_test(test_negotiate_client_version),
		cmocka_unit_test(test_negotiate_client_rules),
		cmocka_unit_test(test_negotiate_client_sizes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
