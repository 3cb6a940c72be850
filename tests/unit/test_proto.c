/* SPDX-License-Identifier: MIT */
/* Engine messages: every one round-trips, and the decoder rejects what is out of bounds. */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto.h"
#include "rdmae_region.h"

#define H RDMAE_PROTO_HDR_SIZE
#define GIB (1ull << 30)

/* Two blocks: 2.5 GiB (three descriptors) and 1 MiB, 4 KiB pages. */
static const uint64_t blen[2] = { 5 * GIB / 2, 1 << 20 };
static const uint64_t bpages[2] = { 5 * GIB / 2 / 4096, 256 };
static const struct rdmae_proto_ctx ctx = {
	.nblocks = 2, .block_len = blen, .block_pages = bpages, .max_msg = 1 << 20,
};

static uint8_t buf[1 << 16];

static void put32(size_t off, uint32_t v)
{
	v = htole32(v);
	memcpy(buf + off, &v, 4);
}

static void put64(size_t off, uint64_t v)
{
	v = htole64(v);
	memcpy(buf + off, &v, 8);
}

static int dec(size_t len, const struct rdmae_proto_ctx *c, struct rdmae_msg *m)
{
	struct rdmae_err err = { 0 };
	int rc = rdmae_msg_decode(buf, len, c, m, &err);

	/* Every rejection says what it rejected. */
	if (rc) {
		assert_int_equal(err.code, rc);
		assert_true(strlen(err.msg) > 0);
	}
	return rc;
}

/* Decoding must fail with code; a message of len bytes is in buf. */
static void reject(size_t len, const struct rdmae_proto_ctx *c, int code)
{
	struct rdmae_msg m;

	assert_int_equal(dec(len, c, &m), code);
}

static void set_body_len(size_t len)
{
	put32(8, (uint32_t)(len - H));
}

/* ---- header ---- */

static void test_header(void **state)
{
	struct rdmae_msg m;
	size_t len;

	(void)state;
	len = rdmae_msg_round_ack_encode(buf, 7, 0);
	assert_int_equal(len, H + 8);
	assert_memory_equal(buf, "RDEG", 4);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.type, RDMAE_MSG_ROUND_ACK);
	assert_int_equal(m.u.round_ack.round, 7);

	reject(0, &ctx, -EBADMSG);
	reject(H - 1, &ctx, -EBADMSG);
	/* Truncated body: the header says more than came. */
	reject(len - 1, &ctx, -EBADMSG);
	/* Trailing bytes. */
	buf[len] = 0;
	reject(len + 1, &ctx, -EBADMSG);

	buf[0] = 'X';
	reject(len, &ctx, -EPROTO);
	rdmae_msg_round_ack_encode(buf, 7, 0);
	buf[4] = RDMAE_PROTO_VERSION + 1;
	reject(len, &ctx, -EPROTO);
	rdmae_msg_round_ack_encode(buf, 7, 0);
	buf[6] = 0;
	reject(len, &ctx, -EPROTO);
	buf[6] = RDMAE_MSG_TYPE_END;
	reject(len, &ctx, -EPROTO);
	rdmae_msg_round_ack_encode(buf, 7, 0);
	put32(12, 1);
	reject(len, &ctx, -EPROTO);
	/* Reserved body field. */
	len = rdmae_msg_progress_encode(buf, 7, 100);
	put32(H + 4, 1);
	reject(len, &ctx, -EPROTO);
	/* ROUND_ACK's backlog: MiB rounded up, saturating. */
	len = rdmae_msg_round_ack_encode(buf, 7, 1);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.round_ack.hash_backlog_mib, 1);
	rdmae_msg_round_ack_encode(buf, 7, 3ull << 20);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.round_ack.hash_backlog_mib, 3);
	rdmae_msg_round_ack_encode(buf, 7, UINT64_MAX);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.round_ack.hash_backlog_mib, UINT32_MAX);
	/* Before pre-flight only BLOCKS and CANCEL decode. */
	rdmae_msg_round_ack_encode(buf, 7, 0);
	reject(len, NULL, -EPROTO);
	assert_string_equal(rdmae_msg_type_name(RDMAE_MSG_ROUND_ACK), "ROUND_ACK");
	assert_string_equal(rdmae_msg_type_name(999), "unknown");
}

/* ---- BLOCKS ---- */

static size_t blocks_msg(void)
{
	struct rdmae_msg_block b[2] = {
		{ .name = "pc.ram", .len = 1ull << 30, .page_size = 4096,
		  .flags = RDMAE_BLOCK_HUGEPAGES },
		{ .name = "vga.vram", .len = 16 << 20, .page_size = 4096 },
	};

	return rdmae_msg_blocks_encode(buf, b, 2, RDMAE_WIRE_REG_PIN, 0);
}

static void test_blocks(void **state)
{
	struct rdmae_msg_block b;
	struct rdmae_msg m;
	size_t len;

	(void)state;
	len = blocks_msg();
	assert_int_equal(len, rdmae_msg_blocks_size(2));
	assert_int_equal(len, H + 8 + 2 * 272);
	assert_int_equal(dec(len, NULL, &m), 0);
	assert_int_equal(m.type, RDMAE_MSG_BLOCKS);
	assert_int_equal(m.u.blocks.count, 2);
	assert_int_equal(m.u.blocks.reg_mode, RDMAE_WIRE_REG_PIN);
	rdmae_msg_blocks_get(&m, 0, &b);
	assert_string_equal(b.name, "pc.ram");
	assert_int_equal(b.len, 1ull << 30);
	assert_int_equal(b.page_size, 4096);
	assert_int_equal(b.flags, RDMAE_BLOCK_HUGEPAGES);
	rdmae_msg_blocks_get(&m, 1, &b);
	assert_string_equal(b.name, "vga.vram");
	assert_int_equal(b.flags, 0);

	/* A name too long for the field is cut, and stays terminated. */
	{
		struct rdmae_msg_block lb = { .len = 4096, .page_size = 4096 };

		memset(lb.name, 'a', sizeof(lb.name));	/* no NUL at all */
		len = rdmae_msg_blocks_encode(buf, &lb, 1, RDMAE_WIRE_REG_PIN, 0);
		assert_int_equal(dec(len, NULL, &m), 0);
		rdmae_msg_blocks_get(&m, 0, &b);
		assert_int_equal(strlen(b.name), RDMAE_PROTO_NAME_LEN - 1);
	}

	/* QEMU's longest idstr (255 bytes) goes through whole. */
	{
		struct rdmae_msg_block qb = { .len = 4096, .page_size = 4096 };

		assert_int_equal(RDMAE_PROTO_NAME_LEN, 256);
		memset(qb.name, 'q', RDMAE_PROTO_NAME_LEN - 1);
		len = rdmae_msg_blocks_encode(buf, &qb, 1, RDMAE_WIRE_REG_PIN, 0);
		assert_int_equal(dec(len, NULL, &m), 0);
		rdmae_msg_blocks_get(&m, 0, &b);
		assert_memory_equal(b.name, qb.name, RDMAE_PROTO_NAME_LEN);
	}
}

static void test_blocks_reject(void **state)
{
	size_t len, b0 = H + 8;

	(void)state;
	/* Count past the body. */
	len = blocks_msg();
	put32(H, 3);
	reject(len, NULL, -EBADMSG);
	/* Count short of the body. */
	put32(H, 1);
	reject(len, NULL, -EBADMSG);
	/* No blocks, too many. */
	put32(H, 0);
	reject(len, NULL, -EPROTO);
	put32(H, RDMAE_PROTO_MAX_BLOCKS + 1);
	reject(len, NULL, -EPROTO);
	/* Body shorter than the count field. */
	blocks_msg();
	set_body_len(H + 4);
	reject(H + 4, NULL, -EBADMSG);
	/* Name without NUL. */
	len = blocks_msg();
	memset(buf + b0, 'x', RDMAE_PROTO_NAME_LEN);
	reject(len, NULL, -EPROTO);
	/* Empty name. */
	len = blocks_msg();
	buf[b0] = 0;
	reject(len, NULL, -EPROTO);
	/* Length not a multiple of the page size, zero length, bad page sizes. */
	len = blocks_msg();
	put64(b0 + RDMAE_PROTO_NAME_LEN, 4097);
	reject(len, NULL, -EPROTO);
	put64(b0 + RDMAE_PROTO_NAME_LEN, 0);
	reject(len, NULL, -EPROTO);
	len = blocks_msg();
	put32(b0 + RDMAE_PROTO_NAME_LEN + 8, 3000);
	reject(len, NULL, -EPROTO);
	put32(b0 + RDMAE_PROTO_NAME_LEN + 8, 0);
	reject(len, NULL, -EPROTO);
	/* Unknown flag. */
	len = blocks_msg();
	put32(b0 + RDMAE_PROTO_NAME_LEN + 12, 0x2);
	reject(len, NULL, -EPROTO);
	/* Registration mode (version 6, where version 5 had a reserved 0): none past ODP. */
	len = blocks_msg();
	put32(H + 4, RDMAE_WIRE_REG_ODP + 1);
	reject(len, NULL, -EPROTO);
	put32(H + 4, 0xffffffffu);
	reject(len, NULL, -EPROTO);
}

/* ---- PREFLIGHT_OK / DESCS / PREFLIGHT_ERR ---- */

static void test_preflight_ok(void **state)
{
	struct rdmae_msg m;
	size_t len;

	(void)state;
	/* Version 5: the blocks fit, nothing more; descriptors come in DESCS. */
	len = rdmae_msg_preflight_ok_encode(buf, 2, RDMAE_WIRE_REG_PIN, 0);
	assert_int_equal(len, H + 8);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.type, RDMAE_MSG_PREFLIGHT_OK);
	assert_int_equal(m.u.preflight_ok.nblocks, 2);
	assert_int_equal(m.u.preflight_ok.reg_mode, RDMAE_WIRE_REG_PIN);
	/* Version 6: each side's registration mode; every source mode reads back. */
	len = rdmae_msg_preflight_ok_encode(buf, 2, RDMAE_WIRE_REG_ODP, 0);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.preflight_ok.reg_mode, RDMAE_WIRE_REG_ODP);
	for (uint32_t mode = RDMAE_WIRE_REG_PIN; mode <= RDMAE_WIRE_REG_ODP; mode++) {
		struct rdmae_msg_block b = { .name = "pc.ram", .len = 4096, .page_size = 4096 };

		len = rdmae_msg_blocks_encode(buf, &b, 1, mode, 0);
		assert_int_equal(dec(len, NULL, &m), 0);
		assert_int_equal(m.u.blocks.reg_mode, mode);
	}
}

static void test_preflight_ok_reject(void **state)
{
	size_t len;

	(void)state;
	len = rdmae_msg_preflight_ok_encode(buf, 2, RDMAE_WIRE_REG_PIN, 0);
	reject(len, NULL, -EPROTO);
	/* Block count not the session's. */
	put32(H, 3);
	reject(len, &ctx, -EPROTO);
	/* Registration mode: a destination pins or uses ODP, never on-demand chunks. */
	len = rdmae_msg_preflight_ok_encode(buf, 2, RDMAE_WIRE_REG_ON_DEMAND, 0);
	reject(len, &ctx, -EPROTO);
	put32(H + 4, RDMAE_WIRE_REG_ODP + 1);
	reject(len, &ctx, -EPROTO);
	/* Descriptors after it (version 4's layout): no longer. */
	len = rdmae_msg_preflight_ok_encode(buf, 2, RDMAE_WIRE_REG_PIN, 0);
	memset(buf + len, 0, 16);
	set_body_len(len + 16);
	reject(len + 16, &ctx, -EBADMSG);
	/* Truncated. */
	len = rdmae_msg_preflight_ok_encode(buf, 2, RDMAE_WIRE_REG_PIN, 0);
	set_body_len(len - 4);
	reject(len - 4, &ctx, -EBADMSG);
}

/* The source's view: bytes of each block advertised so far. */
static uint64_t adv[2];
static const struct rdmae_proto_ctx sctx = {
	.nblocks = 2, .block_len = blen, .block_pages = bpages, .max_msg = 1 << 20,
	.advertised = adv,
};

/* Block 0 in one piece: three descriptors, the last one half a span. */
static const struct rdmae_bufdesc whole0[3] = {
	{ 0x100000000ull, 11, 1u << 30 },
	{ 0x140000000ull, 12, 1u << 30 },
	{ 0x180000000ull, 13, 1u << 29 },
};

static size_t descs_msg(void)
{
	memset(adv, 0, sizeof(adv));
	return rdmae_msg_descs_encode(buf, 0, 0, whole0, 3);
}

static void test_descs(void **state)
{
	const struct rdmae_bufdesc piece = { 0x7000000ull, 14, 8u << 20 };
	const struct rdmae_bufdesc last = { 0x9000000ull, 15, 1u << 20 };
	struct rdmae_bufdesc d;
	struct rdmae_msg m;
	size_t len;

	(void)state;
	len = descs_msg();
	assert_int_equal(len, rdmae_msg_descs_size(3));
	assert_int_equal(len, H + 16 + 3 * 16);
	assert_int_equal(dec(len, &sctx, &m), 0);
	assert_int_equal(m.type, RDMAE_MSG_DESCS);
	assert_int_equal(m.u.descs.block, 0);
	assert_int_equal(m.u.descs.offset, 0);
	assert_int_equal(m.u.descs.ndescs, 3);
	assert_int_equal(m.u.descs.len, 5 * GIB / 2);
	rdmae_msg_descs_get(&m, 2, &d);
	assert_int_equal(d.offset, 0x180000000ull);
	assert_int_equal(d.token, 13);
	assert_int_equal(d.length, 1u << 29);

	/* A piece in the middle, where the advertised part ends. */
	adv[0] = GIB;
	len = rdmae_msg_descs_encode(buf, 0, GIB, &piece, 1);
	assert_int_equal(dec(len, &sctx, &m), 0);
	assert_int_equal(m.u.descs.offset, GIB);
	assert_int_equal(m.u.descs.len, 8u << 20);
	rdmae_msg_descs_get(&m, 0, &d);
	assert_int_equal(d.token, 14);
	/* The last piece of block 1 ends the block. */
	adv[1] = 0;
	len = rdmae_msg_descs_encode(buf, 1, 0, &last, 1);
	assert_int_equal(dec(len, &sctx, &m), 0);
	assert_int_equal(m.u.descs.block, 1);
	assert_int_equal(m.u.descs.len, 1u << 20);
}

static void test_descs_reject(void **state)
{
	const struct rdmae_bufdesc small = { 0x7000000ull, 14, 8u << 20 };
	size_t len, descs = H + 16;

	(void)state;
	/* Not before pre-flight, and not on a side that takes none (the destination). */
	len = descs_msg();
	reject(len, NULL, -EPROTO);
	reject(len, &ctx, -EPROTO);
	/* Block out of range. */
	put32(H, 2);
	reject(len, &sctx, -EPROTO);
	/* No descriptor; more than allowed. */
	len = descs_msg();
	put32(H + 4, 0);
	reject(len, &sctx, -EPROTO);
	put32(H + 4, RDMAE_PROTO_MAX_DESCS + 1);
	reject(len, &sctx, -EPROTO);
	/* Count past the body, and short of it. */
	put32(H + 4, 4);
	reject(len, &sctx, -EBADMSG);
	put32(H + 4, 2);
	reject(len, &sctx, -EBADMSG);
	/* A gap (starts past the advertised end) and an overlap (starts before it). */
	len = rdmae_msg_descs_encode(buf, 0, 16u << 20, &small, 1);
	memset(adv, 0, sizeof(adv));
	reject(len, &sctx, -EPROTO);
	adv[0] = 32u << 20;
	reject(len, &sctx, -EPROTO);
	/* Offset not on a page, and at the end of the block. */
	adv[0] = 100;
	len = rdmae_msg_descs_encode(buf, 0, 100, &small, 1);
	reject(len, &sctx, -EPROTO);
	adv[1] = 1u << 20;
	len = rdmae_msg_descs_encode(buf, 1, 1u << 20, &small, 1);
	reject(len, &sctx, -EPROTO);
	/* Descriptor lengths: a middle one short, the last empty or longer than a span. */
	len = descs_msg();
	put32(descs + 16 + 12, 4096);
	reject(len, &sctx, -EPROTO);
	len = descs_msg();
	put32(descs + 2ul * 16 + 12, 0);
	reject(len, &sctx, -EPROTO);
	len = descs_msg();
	put32(descs + 2ul * 16 + 12, (1u << 30) + 4096);
	reject(len, &sctx, -EPROTO);
	/* Address that wraps. */
	len = descs_msg();
	put64(descs + 2ul * 16, UINT64_MAX - 10);
	reject(len, &sctx, -EPROTO);
	/* Past the end of the block: block 1 is 1 MiB. */
	memset(adv, 0, sizeof(adv));
	len = rdmae_msg_descs_encode(buf, 1, 0, &small, 1);
	reject(len, &sctx, -EPROTO);
	/* Not ending on a page. */
	len = descs_msg();
	put32(descs + 2ul * 16 + 12, (1u << 29) - 1);
	reject(len, &sctx, -EPROTO);
	/* Truncated, and shorter than its struct. */
	len = descs_msg();
	set_body_len(len - 16);
	reject(len - 16, &sctx, -EBADMSG);
	set_body_len(H + 8);
	reject(H + 8, &sctx, -EBADMSG);
}

static void test_preflight_err(void **state)
{
	struct rdmae_msg m;
	size_t len;
	char longr[400];

	(void)state;
	len = rdmae_msg_preflight_err_encode(buf, -EINVAL, 1,
					     "block 'x': size 1 here, 2 at the source");
	assert_int_equal(len, H + 200);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.preflight_err.error, -EINVAL);
	assert_int_equal(m.u.preflight_err.block, 1);
	assert_string_equal(m.u.preflight_err.reason, "block 'x': size 1 here, 2 at the source");

	len = rdmae_msg_preflight_err_encode(buf, -ENOMEM, RDMAE_PROTO_NO_BLOCK, NULL);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.preflight_err.block, RDMAE_PROTO_NO_BLOCK);
	assert_string_equal(m.u.preflight_err.reason, "");

	memset(longr, 'r', sizeof(longr) - 1);
	longr[sizeof(longr) - 1] = 0;
	len = rdmae_msg_preflight_err_encode(buf, -EIO, 0, longr);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(strlen(m.u.preflight_err.reason), RDMAE_PROTO_REASON_LEN - 1);

	/* Block index out of range. */
	rdmae_msg_preflight_err_encode(buf, -EINVAL, 2, "x");
	reject(len, &ctx, -EPROTO);
	/* Reason without NUL. */
	rdmae_msg_preflight_err_encode(buf, -EINVAL, 0, "x");
	memset(buf + H + 8, 'y', RDMAE_PROTO_REASON_LEN);
	reject(len, &ctx, -EPROTO);
	/* errno 0 and out of range. */
	rdmae_msg_preflight_err_encode(buf, -EINVAL, 0, "x");
	put32(H, 0);
	reject(len, &ctx, -EPROTO);
	put32(H, 100000);
	reject(len, &ctx, -EPROTO);
	/* Truncated. */
	rdmae_msg_preflight_err_encode(buf, -EINVAL, 0, "x");
	set_body_len(len - 1);
	reject(len - 1, &ctx, -EBADMSG);
}

/* ---- ZERO_RUNS ---- */

static void test_zero_runs(void **state)
{
	struct rdmae_msg m;
	uint64_t f, n;
	size_t len;

	(void)state;
	rdmae_msg_zero_runs_put(buf, 0, 0, 1);
	rdmae_msg_zero_runs_put(buf, 1, 10, 246);
	len = rdmae_msg_zero_runs_finish(buf, 1, 2);
	assert_int_equal(len, rdmae_msg_zero_runs_size(2));
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.zero_runs.block, 1);
	assert_int_equal(m.u.zero_runs.count, 2);
	rdmae_msg_zero_runs_get(&m, 1, &f, &n);
	assert_int_equal(f, 10);
	assert_int_equal(n, 246);

	/* Empty list is fine. */
	len = rdmae_msg_zero_runs_finish(buf, 0, 0);
	assert_int_equal(dec(len, &ctx, &m), 0);
}

/* DATA_RUNS: ZERO_RUNS' layout and checks under its own type. */
static void test_data_runs(void **state)
{
	struct rdmae_msg m;
	uint64_t f, n;
	size_t len;

	(void)state;
	rdmae_msg_zero_runs_put(buf, 0, 3, 4);
	len = rdmae_msg_data_runs_finish(buf, 1, 1);
	assert_int_equal(len, rdmae_msg_zero_runs_size(1));
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.type, RDMAE_MSG_DATA_RUNS);
	assert_string_equal(rdmae_msg_type_name(m.type), "DATA_RUNS");
	assert_int_equal(m.u.zero_runs.block, 1);
	rdmae_msg_zero_runs_get(&m, 0, &f, &n);
	assert_int_equal(f, 3);
	assert_int_equal(n, 4);
	/* Past the block's end. */
	rdmae_msg_zero_runs_put(buf, 0, 3, UINT64_MAX);
	len = rdmae_msg_data_runs_finish(buf, 1, 1);
	reject(len, &ctx, -EPROTO);
}

static void test_zero_runs_reject(void **state)
{
	size_t len;

	(void)state;
	rdmae_msg_zero_runs_put(buf, 0, 0, 1);
	rdmae_msg_zero_runs_put(buf, 1, 10, 246);
	len = rdmae_msg_zero_runs_finish(buf, 1, 2);
	/* Block index out of range. */
	put32(H, 2);
	reject(len, &ctx, -EPROTO);
	put32(H, 1);
	/* Count past the body. */
	put32(H + 4, 3);
	reject(len, &ctx, -EBADMSG);
	put32(H + 4, 2);
	/* Page range past the block (1 MiB = 256 pages). */
	rdmae_msg_zero_runs_put(buf, 1, 10, 247);
	reject(len, &ctx, -EPROTO);
	rdmae_msg_zero_runs_put(buf, 1, 256, 1);
	reject(len, &ctx, -EPROTO);
	/* Wraps around. */
	rdmae_msg_zero_runs_put(buf, 1, 10, UINT64_MAX - 5);
	reject(len, &ctx, -EPROTO);
	/* Empty run. */
	rdmae_msg_zero_runs_put(buf, 1, 10, 0);
	reject(len, &ctx, -EPROTO);
	/* Body cut inside a run. */
	rdmae_msg_zero_runs_put(buf, 1, 10, 1);
	set_body_len(len - 8);
	reject(len - 8, &ctx, -EBADMSG);
	/* Before pre-flight. */
	len = rdmae_msg_zero_runs_finish(buf, 1, 2);
	reject(len, NULL, -EPROTO);
}

/*
 * Decoding must fail with -EPROTO and a text that contains want (the type,
 * the run index, what is wrong).
 */
static void reject_says(size_t len, const char *want)
{
	struct rdmae_err err = { 0 };
	struct rdmae_msg m;

	assert_int_equal(rdmae_msg_decode(buf, len, &ctx, &m, &err), -EPROTO);
	if (!strstr(err.msg, want))
		fail_msg("error '%s' does not say '%s'", err.msg, want);
}

/* count one-page runs with a one-page gap between them, in block 0. */
static size_t spaced_runs(uint32_t count, bool data)
{
	uint32_t i;

	for (i = 0; i < count; i++)
		rdmae_msg_zero_runs_put(buf, i, 2ull * i, 1);
	return data ? rdmae_msg_data_runs_finish(buf, 0, count)
		    : rdmae_msg_zero_runs_finish(buf, 0, count);
}

static void test_runs_limit(void **state)
{
	struct rdmae_msg m;
	size_t len;
	int data;

	(void)state;
	assert_true(rdmae_msg_zero_runs_size(RDMAE_PROTO_MAX_RUNS + 1) <= sizeof(buf));
	for (data = 0; data <= 1; data++) {
		len = spaced_runs(RDMAE_PROTO_MAX_RUNS, data);
		assert_int_equal(dec(len, &ctx, &m), 0);
		assert_int_equal(m.u.zero_runs.count, RDMAE_PROTO_MAX_RUNS);
		len = spaced_runs(RDMAE_PROTO_MAX_RUNS + 1, data);
		reject_says(len, data ? "DATA_RUNS: 1025 runs, at most 1024"
				      : "ZERO_RUNS: 1025 runs, at most 1024");
	}
	/* The count is judged before the body: a huge one is not a length error. */
	len = spaced_runs(1, false);
	put32(H + 4, UINT32_MAX);
	reject_says(len, "runs, at most");
}

static void test_runs_order(void **state)
{
	struct rdmae_msg m;
	size_t len;

	(void)state;
	/* Adjacent runs: the next starts exactly where the last one ends. */
	rdmae_msg_zero_runs_put(buf, 0, 0, 10);
	rdmae_msg_zero_runs_put(buf, 1, 10, 5);
	rdmae_msg_zero_runs_put(buf, 2, 15, 241);
	len = rdmae_msg_zero_runs_finish(buf, 1, 3);
	assert_int_equal(dec(len, &ctx, &m), 0);
	len = rdmae_msg_data_runs_finish(buf, 1, 3);
	assert_int_equal(dec(len, &ctx, &m), 0);

	/* Overlapping by one page. */
	rdmae_msg_zero_runs_put(buf, 1, 9, 5);
	len = rdmae_msg_zero_runs_finish(buf, 1, 3);
	reject_says(len, "ZERO_RUNS: run 1: pages 9+5 overlap run 0 (pages 0..9)");
	len = rdmae_msg_data_runs_finish(buf, 1, 3);
	reject_says(len, "DATA_RUNS: run 1: pages 9+5 overlap run 0");
	/* The same run twice. */
	rdmae_msg_zero_runs_put(buf, 1, 0, 10);
	len = rdmae_msg_zero_runs_finish(buf, 1, 3);
	reject_says(len, "run 1: pages 0+10 overlap run 0");
	/* Inside the previous run, ending before it does. */
	rdmae_msg_zero_runs_put(buf, 0, 0, 100);
	rdmae_msg_zero_runs_put(buf, 1, 20, 5);
	len = rdmae_msg_zero_runs_finish(buf, 1, 2);
	reject_says(len, "run 1: pages 20+5 overlap run 0 (pages 0..99)");

	/* Out of order, not overlapping: the last run comes first. */
	rdmae_msg_zero_runs_put(buf, 0, 0, 10);
	rdmae_msg_zero_runs_put(buf, 1, 200, 5);
	rdmae_msg_zero_runs_put(buf, 2, 100, 5);
	len = rdmae_msg_zero_runs_finish(buf, 1, 3);
	reject_says(len, "ZERO_RUNS: run 2: out of order: starts at page 100, before run 1");
	len = rdmae_msg_data_runs_finish(buf, 1, 3);
	reject_says(len, "DATA_RUNS: run 2: out of order");

	/* Empty and out-of-block runs name their index too. */
	rdmae_msg_zero_runs_put(buf, 2, 210, 0);
	len = rdmae_msg_zero_runs_finish(buf, 1, 3);
	reject_says(len, "ZERO_RUNS: run 2: empty");
	rdmae_msg_zero_runs_put(buf, 2, 210, 47);
	len = rdmae_msg_zero_runs_finish(buf, 1, 3);
	reject_says(len, "ZERO_RUNS: run 2: pages 210+47 outside block 1 (256 pages)");
	rdmae_msg_zero_runs_put(buf, 2, 210, 46);
	len = rdmae_msg_zero_runs_finish(buf, 1, 3);
	assert_int_equal(dec(len, &ctx, &m), 0);
}

/* ---- rounds ---- */

static void test_rounds(void **state)
{
	struct rdmae_msg_round_end re = {
		.round = 3, .fence_seq = 9, .flags = RDMAE_ROUND_FINAL, .pages = 100,
		.bytes = 90ull * 4096, .zero_pages = 10, .runs = 7, .duration_ns = 12345678,
	};
	struct rdmae_msg m;
	size_t len;

	(void)state;
	len = rdmae_msg_progress_encode(buf, 2, 1ull << 40);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.type, RDMAE_MSG_PROGRESS);
	assert_int_equal(m.u.progress.round, 2);
	assert_int_equal(m.u.progress.bytes, 1ull << 40);
	set_body_len(len - 1);
	reject(len - 1, &ctx, -EBADMSG);

	len = rdmae_msg_round_end_encode(buf, &re);
	assert_int_equal(len, H + 56);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.type, RDMAE_MSG_ROUND_END);
	/* Field by field: the struct has padding, which neither side defines. */
	assert_int_equal(m.u.round_end.round, re.round);
	assert_int_equal(m.u.round_end.fence_seq, re.fence_seq);
	assert_int_equal(m.u.round_end.flags, re.flags);
	assert_int_equal(m.u.round_end.pages, re.pages);
	assert_int_equal(m.u.round_end.bytes, re.bytes);
	assert_int_equal(m.u.round_end.zero_pages, re.zero_pages);
	assert_int_equal(m.u.round_end.runs, re.runs);
	assert_int_equal(m.u.round_end.duration_ns, re.duration_ns);

	/* Unknown flag, zero round, zero fence, more zero pages than pages. */
	put32(H + 8, 2);
	reject(len, &ctx, -EPROTO);
	rdmae_msg_round_end_encode(buf, &re);
	put32(H, 0);
	reject(len, &ctx, -EPROTO);
	rdmae_msg_round_end_encode(buf, &re);
	put32(H + 4, 0);
	reject(len, &ctx, -EPROTO);
	rdmae_msg_round_end_encode(buf, &re);
	put64(H + 32, 101);
	reject(len, &ctx, -EPROTO);
	rdmae_msg_round_end_encode(buf, &re);
	set_body_len(len + 8);
	reject(len + 8, &ctx, -EBADMSG);
}

/* ---- STATE ---- */

static void test_state(void **state)
{
	struct rdmae_msg m;
	size_t len;

	(void)state;
	memcpy(buf + RDMAE_MSG_STATE_DATA_OFF, "vmstate!", sizeof("vmstate!"));
	len = rdmae_msg_state_encode(buf, 1000, 8);
	assert_int_equal(len, H + 16 + 8);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.state.offset, 1000);
	assert_int_equal(m.u.state.len, 8);
	assert_memory_equal(m.u.state.data, "vmstate!", 8);

	/* Length past the body, short of it, empty. */
	put32(H + 8, 9);
	reject(len, &ctx, -EBADMSG);
	put32(H + 8, 7);
	reject(len, &ctx, -EBADMSG);
	len = rdmae_msg_state_encode(buf, 0, 0);
	reject(len, &ctx, -EPROTO);
	/* Offset + length wraps. */
	len = rdmae_msg_state_encode(buf, UINT64_MAX - 2, 8);
	reject(len, &ctx, -EPROTO);
	/* Shorter than its struct. */
	rdmae_msg_state_encode(buf, 0, 8);
	set_body_len(H + 8);
	reject(H + 8, &ctx, -EBADMSG);
}

/*
 * Version 7: BLOCKS and PREFLIGHT_OK carry the session flags (the external
 * data path), in the high half of what was the registration mode; a flag
 * this side does not know is refused. COMPLETE says the VM is stopped.
 */
static void test_session_flags(void **state)
{
	struct rdmae_msg_block b = { .name = "pc.ram", .len = 4096, .page_size = 4096 };
	struct rdmae_msg_complete c = { .fence_seq = 1, .flags = RDMAE_COMPLETE_STOPPED,
					.nblocks = 2 };
	struct rdmae_msg m;
	size_t len;

	(void)state;
	len = rdmae_msg_blocks_encode(buf, &b, 1, RDMAE_WIRE_REG_ODP, RDMAE_SESS_EXTERNAL);
	assert_int_equal(dec(len, NULL, &m), 0);
	assert_int_equal(m.u.blocks.reg_mode, RDMAE_WIRE_REG_ODP);
	assert_int_equal(m.u.blocks.flags, RDMAE_SESS_EXTERNAL);
	len = rdmae_msg_blocks_encode(buf, &b, 1, RDMAE_WIRE_REG_PIN, 0);
	assert_int_equal(dec(len, NULL, &m), 0);
	assert_int_equal(m.u.blocks.flags, 0);
	/* An unknown flag: refused, as is a version 6 message. */
	len = rdmae_msg_blocks_encode(buf, &b, 1, RDMAE_WIRE_REG_PIN, 0x2);
	reject(len, NULL, -EPROTO);
	len = rdmae_msg_blocks_encode(buf, &b, 1, RDMAE_WIRE_REG_PIN, RDMAE_SESS_EXTERNAL);
	buf[4] = 6;
	buf[5] = 0;
	reject(len, NULL, -EPROTO);

	len = rdmae_msg_preflight_ok_encode(buf, 2, RDMAE_WIRE_REG_PIN, RDMAE_SESS_EXTERNAL);
	assert_int_equal(len, H + 8);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.preflight_ok.reg_mode, RDMAE_WIRE_REG_PIN);
	assert_int_equal(m.u.preflight_ok.flags, RDMAE_SESS_EXTERNAL);
	len = rdmae_msg_preflight_ok_encode(buf, 2, RDMAE_WIRE_REG_PIN, 0x8000);
	reject(len, &ctx, -EPROTO);

	len = rdmae_msg_complete_encode(buf, &c);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.complete.flags, RDMAE_COMPLETE_STOPPED);
	assert_int_equal(m.u.complete.rounds, 0);
}

/* ---- commit ---- */

static void test_complete(void **state)
{
	struct rdmae_msg_complete c = {
		.fence_seq = 5, .flags = RDMAE_COMPLETE_NO_VERIFY, .nblocks = 2, .rounds = 4,
		.state_bytes = 1234567,
	};
	struct rdmae_msg m;
	size_t len;

	(void)state;
	len = rdmae_msg_complete_encode(buf, &c);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_memory_equal(&m.u.complete, &c, sizeof(c));
	put32(H + 8, 3);
	reject(len, &ctx, -EPROTO);
	rdmae_msg_complete_encode(buf, &c);
	put32(H + 4, 4);
	reject(len, &ctx, -EPROTO);
	rdmae_msg_complete_encode(buf, &c);
	put32(H, 0);
	reject(len, &ctx, -EPROTO);
}

static void test_sums(void **state)
{
	const uint64_t sums[2] = { 0x1122334455667788ull, 42 };
	struct rdmae_msg m;
	uint64_t i;
	size_t len;

	(void)state;
	len = rdmae_msg_block_sums_encode(buf, sums, 2);
	assert_int_equal(len, rdmae_msg_block_sums_size(2));
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_true(rdmae_msg_block_sums_get(&m, 0) == sums[0]);
	assert_true(rdmae_msg_block_sums_get(&m, 1) == sums[1]);
	/* Count not the session's, and count past the body. */
	len = rdmae_msg_block_sums_encode(buf, sums, 1);
	reject(len, &ctx, -EPROTO);
	put32(H, 2);
	reject(len, &ctx, -EBADMSG);

	len = rdmae_msg_page_sums_req_encode(buf, 0, 100, 50);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.type, RDMAE_MSG_PAGE_SUMS_REQ);
	assert_int_equal(m.u.page_sums.block, 0);
	assert_int_equal(m.u.page_sums.first_page, 100);
	assert_int_equal(m.u.page_sums.npages, 50);
	assert_null(m.u.page_sums.raw);
	/* Past the block, out of range block, empty, more than one answer can carry. */
	len = rdmae_msg_page_sums_req_encode(buf, 1, 200, 57);
	reject(len, &ctx, -EPROTO);
	len = rdmae_msg_page_sums_req_encode(buf, 2, 0, 1);
	reject(len, &ctx, -EPROTO);
	len = rdmae_msg_page_sums_req_encode(buf, 1, 0, 0);
	reject(len, &ctx, -EPROTO);
	len = rdmae_msg_page_sums_req_encode(buf, 0, 0, rdmae_msg_page_sums_max(ctx.max_msg) + 1);
	reject(len, &ctx, -EPROTO);
	len = rdmae_msg_page_sums_req_encode(buf, 0, 0, rdmae_msg_page_sums_max(ctx.max_msg));
	assert_int_equal(dec(len, &ctx, &m), 0);

	for (i = 0; i < 6; i++)
		rdmae_msg_page_sums_put(buf, i, 1000 + i);
	len = rdmae_msg_page_sums_encode(buf, 1, 250, 6);
	assert_int_equal(len, rdmae_msg_page_sums_size(6));
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.type, RDMAE_MSG_PAGE_SUMS);
	for (i = 0; i < 6; i++)
		assert_int_equal(rdmae_msg_page_sums_get(&m, i), 1000 + i);
	/* npages past the body, and past the block. */
	put64(H + 16, 7);
	reject(len, &ctx, -EBADMSG);
	len = rdmae_msg_page_sums_encode(buf, 1, 251, 6);
	reject(len, &ctx, -EPROTO);
}

static void test_commit(void **state)
{
	struct rdmae_msg m;
	size_t len;

	(void)state;
	len = rdmae_msg_commit_ok_encode(buf, RDMAE_COMMIT_VERIFIED);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.commit_ok.flags, RDMAE_COMMIT_VERIFIED);
	len = rdmae_msg_commit_ok_encode(buf, 4);
	reject(len, &ctx, -EPROTO);

	len = rdmae_msg_commit_fail_encode(buf, -EIO, 1, 255, "page 255 differs");
	assert_int_equal(len, H + 208);
	assert_int_equal(dec(len, &ctx, &m), 0);
	assert_int_equal(m.u.commit_fail.error, -EIO);
	assert_int_equal(m.u.commit_fail.block, 1);
	assert_int_equal(m.u.commit_fail.first_page, 255);
	assert_string_equal(m.u.commit_fail.reason, "page 255 differs");
	len = rdmae_msg_commit_fail_encode(buf, -EPROTO, RDMAE_PROTO_NO_BLOCK, RDMAE_PROTO_NO_PAGE,
					   "counts");
	assert_int_equal(dec(len, &ctx, &m), 0);

	/* Page past the block; page without a block; block out of range; reason without NUL. */
	rdmae_msg_commit_fail_encode(buf, -EIO, 1, 256, "x");
	reject(len, &ctx, -EPROTO);
	rdmae_msg_commit_fail_encode(buf, -EIO, RDMAE_PROTO_NO_BLOCK, 3, "x");
	reject(len, &ctx, -EPROTO);
	rdmae_msg_commit_fail_encode(buf, -EIO, 2, RDMAE_PROTO_NO_PAGE, "x");
	reject(len, &ctx, -EPROTO);
	rdmae_msg_commit_fail_encode(buf, -EIO, 0, 0, "x");
	memset(buf + H + 16, 'z', RDMAE_PROTO_REASON_LEN);
	reject(len, &ctx, -EPROTO);
}

static void test_cancel(void **state)
{
	struct rdmae_msg m;
	size_t len;

	(void)state;
	len = rdmae_msg_cancel_encode(buf, -ECANCELED, "operator said so");
	assert_true(len <= RDMAE_MSG_SMALL_MAX);
	/* CANCEL decodes before pre-flight too. */
	assert_int_equal(dec(len, NULL, &m), 0);
	assert_int_equal(m.u.cancel.error, -ECANCELED);
	assert_string_equal(m.u.cancel.reason, "operator said so");
	/* An errno that is not one becomes EPROTO on the wire. */
	len = rdmae_msg_cancel_encode(buf, 0, "x");
	assert_int_equal(dec(len, NULL, &m), 0);
	assert_int_equal(m.u.cancel.error, -EPROTO);

	memset(buf + H + 8, 'c', RDMAE_PROTO_REASON_LEN);
	reject(len, NULL, -EPROTO);
	len = rdmae_msg_cancel_encode(buf, -ECANCELED, "x");
	put32(H + 4, 1);
	reject(len, NULL, -EPROTO);
	len = rdmae_msg_cancel_encode(buf, -ECANCELED, "x");
	set_body_len(len - 1);
	reject(len - 1, NULL, -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_blocks),
		cmocka_unit_test(test_blocks_reject),
		cmocka_unit_test(test_preflight_ok),
		cmocka_unit_test(test_preflight_ok_reject),
		cmocka_unit_test(test_descs),
		cmocka_unit_test(test_descs_reject),
		cmocka_unit_test(test_preflight_err),
		cmocka_unit_test(test_zero_runs),
		cmocka_unit_test(test_zero_runs_reject),
		cmocka_unit_test(test_data_runs),
		cmocka_unit_test(test_runs_limit),
		cmocka_unit_test(test_runs_order),
		cmocka_unit_test(test_rounds),
		cmocka_unit_test(test_state),
		cmocka_unit_test(test_complete),
		cmocka_unit_test(test_session_flags),
		cmocka_unit_test(test_sums),
		cmocka_unit_test(test_commit),
		cmocka_unit_test(test_cancel),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
