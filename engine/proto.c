/* SPDX-License-Identifier: MIT */
#include "proto.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "rdmae_region.h"

#define HDR RDMAE_PROTO_HDR_SIZE
#define MAX_ERRNO 4095

static const char *const type_names[RDMAE_MSG_TYPE_END] = {
	[RDMAE_MSG_BLOCKS] = "BLOCKS",
	[RDMAE_MSG_PREFLIGHT_OK] = "PREFLIGHT_OK",
	[RDMAE_MSG_PREFLIGHT_ERR] = "PREFLIGHT_ERR",
	[RDMAE_MSG_ZERO_RUNS] = "ZERO_RUNS",
	[RDMAE_MSG_PROGRESS] = "PROGRESS",
	[RDMAE_MSG_ROUND_END] = "ROUND_END",
	[RDMAE_MSG_ROUND_ACK] = "ROUND_ACK",
	[RDMAE_MSG_STATE] = "STATE",
	[RDMAE_MSG_COMPLETE] = "COMPLETE",
	[RDMAE_MSG_BLOCK_SUMS] = "BLOCK_SUMS",
	[RDMAE_MSG_PAGE_SUMS_REQ] = "PAGE_SUMS_REQ",
	[RDMAE_MSG_PAGE_SUMS] = "PAGE_SUMS",
	[RDMAE_MSG_COMMIT_OK] = "COMMIT_OK",
	[RDMAE_MSG_COMMIT_FAIL] = "COMMIT_FAIL",
	[RDMAE_MSG_CANCEL] = "CANCEL",
	[RDMAE_MSG_DATA_RUNS] = "DATA_RUNS",
	[RDMAE_MSG_DESCS] = "DESCS",
};

const char *rdmae_msg_type_name(unsigned int type)
{
	if (type >= RDMAE_MSG_TYPE_END || !type_names[type])
		return "unknown";
	return type_names[type];
}

/* ---- little-endian helpers for array entries ---- */

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

/* Copy a string into a fixed wire field, truncated and NUL-padded. */
static void put_str(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strnlen(src, cap - 1) : 0;

	memset(dst, 0, cap);
	if (n)
		memcpy(dst, src, n);
}

static size_t put_hdr(void *buf, enum rdmae_msg_type type, size_t body_len)
{
	struct rdmae_wire_eng_hdr h = {
		.magic = htole32(RDMAE_PROTO_MAGIC),
		.version = htole16(RDMAE_PROTO_VERSION),
		.type = htole16((uint16_t)type),
		.body_len = htole32((uint32_t)body_len),
		.reserved = 0,
	};

	memcpy(buf, &h, sizeof(h));
	return HDR + body_len;
}

/* ---- encoders ---- */

size_t rdmae_msg_blocks_size(uint32_t count)
{
	return HDR + sizeof(struct rdmae_wire_blocks) +
	       (size_t)count * sizeof(struct rdmae_wire_block);
}

size_t rdmae_msg_blocks_encode(void *buf, const struct rdmae_msg_block *b, uint32_t count,
			       uint32_t reg_mode, uint32_t flags)
{
	uint8_t *p = (uint8_t *)buf + HDR;
	struct rdmae_wire_blocks w = {
		.count = htole32(count), .reg_mode = htole16((uint16_t)reg_mode),
		.flags = htole16((uint16_t)flags),
	};
	uint32_t i;

	memcpy(p, &w, sizeof(w));
	p += sizeof(w);
	for (i = 0; i < count; i++) {
		struct rdmae_wire_block wb;

		put_str(wb.name, sizeof(wb.name), b[i].name);
		wb.len = htole64(b[i].len);
		wb.page_size = htole32(b[i].page_size);
		wb.flags = htole32(b[i].flags);
		memcpy(p, &wb, sizeof(wb));
		p += sizeof(wb);
	}
	return put_hdr(buf, RDMAE_MSG_BLOCKS, rdmae_msg_blocks_size(count) - HDR);
}

size_t rdmae_msg_preflight_ok_encode(void *buf, uint32_t nblocks, uint32_t reg_mode,
				     uint32_t flags)
{
	struct rdmae_wire_preflight_ok w = {
		.nblocks = htole32(nblocks), .reg_mode = htole16((uint16_t)reg_mode),
		.flags = htole16((uint16_t)flags),
	};

	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_PREFLIGHT_OK, sizeof(w));
}

size_t rdmae_msg_descs_size(uint32_t n)
{
	return HDR + sizeof(struct rdmae_wire_descs) + (size_t)n * sizeof(struct rdmae_wire_bufdesc);
}

size_t rdmae_msg_descs_encode(void *buf, uint32_t block, uint64_t offset,
			      const struct rdmae_bufdesc *descs, uint32_t n)
{
	uint8_t *p = (uint8_t *)buf + HDR;
	struct rdmae_wire_descs w = {
		.block = htole32(block), .ndescs = htole32(n), .offset = htole64(offset),
	};
	uint32_t i;

	memcpy(p, &w, sizeof(w));
	p += sizeof(w);
	for (i = 0; i < n; i++) {
		rdmae_bufdesc_encode(p, &descs[i]);
		p += sizeof(struct rdmae_wire_bufdesc);
	}
	return put_hdr(buf, RDMAE_MSG_DESCS, rdmae_msg_descs_size(n) - HDR);
}

static uint32_t wire_errno(int error)
{
	int e = error < 0 ? -error : error;

	return (e <= 0 || e > MAX_ERRNO) ? EPROTO : (uint32_t)e;
}

size_t rdmae_msg_preflight_err_encode(void *buf, int error, uint32_t block, const char *reason)
{
	struct rdmae_wire_preflight_err w;

	w.error = htole32(wire_errno(error));
	w.block = htole32(block);
	put_str(w.reason, sizeof(w.reason), reason);
	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_PREFLIGHT_ERR, sizeof(w));
}

size_t rdmae_msg_zero_runs_size(uint32_t count)
{
	return HDR + sizeof(struct rdmae_wire_zero_runs) +
	       (size_t)count * sizeof(struct rdmae_wire_page_run);
}

void rdmae_msg_zero_runs_put(void *buf, uint32_t i, uint64_t first_page, uint64_t npages)
{
	uint8_t *p = (uint8_t *)buf + HDR + sizeof(struct rdmae_wire_zero_runs) +
		     (size_t)i * sizeof(struct rdmae_wire_page_run);

	put_le64(p, first_page);
	put_le64(p + 8, npages);
}

size_t rdmae_msg_zero_runs_finish(void *buf, uint32_t block, uint32_t count)
{
	struct rdmae_wire_zero_runs w = { .block = htole32(block), .count = htole32(count) };

	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_ZERO_RUNS, rdmae_msg_zero_runs_size(count) - HDR);
}

size_t rdmae_msg_data_runs_finish(void *buf, uint32_t block, uint32_t count)
{
	rdmae_msg_zero_runs_finish(buf, block, count);
	return put_hdr(buf, RDMAE_MSG_DATA_RUNS, rdmae_msg_zero_runs_size(count) - HDR);
}

size_t rdmae_msg_progress_encode(void *buf, uint32_t round, uint64_t bytes)
{
	struct rdmae_wire_progress w = {
		.round = htole32(round), .reserved = 0, .bytes = htole64(bytes),
	};

	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_PROGRESS, sizeof(w));
}

size_t rdmae_msg_round_end_encode(void *buf, const struct rdmae_msg_round_end *r)
{
	struct rdmae_wire_round_end w = {
		.round = htole32(r->round),
		.fence_seq = htole32(r->fence_seq),
		.flags = htole32(r->flags),
		.reserved = 0,
		.pages = htole64(r->pages),
		.bytes = htole64(r->bytes),
		.zero_pages = htole64(r->zero_pages),
		.runs = htole64(r->runs),
		.duration_ns = htole64(r->duration_ns),
	};

	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_ROUND_END, sizeof(w));
}

size_t rdmae_msg_round_ack_encode(void *buf, uint32_t round, uint64_t hash_backlog)
{
	uint64_t mib = hash_backlog / (1u << 20) + (hash_backlog % (1u << 20) != 0);
	struct rdmae_wire_round_ack w = {
		.round = htole32(round),
		.hash_backlog_mib = htole32(mib > UINT32_MAX ? UINT32_MAX : (uint32_t)mib),
	};

	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_ROUND_ACK, sizeof(w));
}

size_t rdmae_msg_state_encode(void *buf, uint64_t offset, uint32_t len)
{
	struct rdmae_wire_state w = {
		.offset = htole64(offset), .len = htole32(len), .reserved = 0,
	};

	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_STATE, sizeof(w) + len);
}

size_t rdmae_msg_complete_encode(void *buf, const struct rdmae_msg_complete *c)
{
	struct rdmae_wire_complete w = {
		.fence_seq = htole32(c->fence_seq),
		.flags = htole32(c->flags),
		.nblocks = htole32(c->nblocks),
		.rounds = htole32(c->rounds),
		.state_bytes = htole64(c->state_bytes),
	};

	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_COMPLETE, sizeof(w));
}

size_t rdmae_msg_block_sums_size(uint32_t nblocks)
{
	return HDR + sizeof(struct rdmae_wire_block_sums) + (size_t)nblocks * sizeof(uint64_t);
}

size_t rdmae_msg_block_sums_encode(void *buf, const uint64_t *sums, uint32_t nblocks)
{
	struct rdmae_wire_block_sums w = { .nblocks = htole32(nblocks), .reserved = 0 };
	uint8_t *p = (uint8_t *)buf + HDR;
	uint32_t i;

	memcpy(p, &w, sizeof(w));
	p += sizeof(w);
	for (i = 0; i < nblocks; i++)
		put_le64(p + (size_t)i * 8, sums[i]);
	return put_hdr(buf, RDMAE_MSG_BLOCK_SUMS, rdmae_msg_block_sums_size(nblocks) - HDR);
}

static void put_page_sums(void *buf, uint32_t block, uint64_t first_page, uint64_t npages)
{
	struct rdmae_wire_page_sums w = {
		.block = htole32(block),
		.reserved = 0,
		.first_page = htole64(first_page),
		.npages = htole64(npages),
	};

	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
}

size_t rdmae_msg_page_sums_req_encode(void *buf, uint32_t block, uint64_t first_page,
				      uint64_t npages)
{
	put_page_sums(buf, block, first_page, npages);
	return put_hdr(buf, RDMAE_MSG_PAGE_SUMS_REQ, sizeof(struct rdmae_wire_page_sums));
}

size_t rdmae_msg_page_sums_size(uint64_t npages)
{
	return RDMAE_MSG_PAGE_SUMS_DATA_OFF + (size_t)npages * sizeof(uint64_t);
}

void rdmae_msg_page_sums_put(void *buf, uint64_t i, uint64_t sum)
{
	put_le64((uint8_t *)buf + RDMAE_MSG_PAGE_SUMS_DATA_OFF + (size_t)i * 8, sum);
}

size_t rdmae_msg_page_sums_encode(void *buf, uint32_t block, uint64_t first_page,
				  uint64_t npages)
{
	put_page_sums(buf, block, first_page, npages);
	return put_hdr(buf, RDMAE_MSG_PAGE_SUMS, rdmae_msg_page_sums_size(npages) - HDR);
}

uint64_t rdmae_msg_page_sums_max(uint32_t max_msg)
{
	if (max_msg <= RDMAE_MSG_PAGE_SUMS_DATA_OFF)
		return 0;
	return (max_msg - RDMAE_MSG_PAGE_SUMS_DATA_OFF) / sizeof(uint64_t);
}

size_t rdmae_msg_commit_ok_encode(void *buf, uint32_t flags)
{
	struct rdmae_wire_commit_ok w = { .flags = htole32(flags), .reserved = 0 };

	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_COMMIT_OK, sizeof(w));
}

size_t rdmae_msg_commit_fail_encode(void *buf, int error, uint32_t block, uint64_t first_page,
				    const char *reason)
{
	struct rdmae_wire_commit_fail w;

	w.error = htole32(wire_errno(error));
	w.block = htole32(block);
	w.first_page = htole64(first_page);
	put_str(w.reason, sizeof(w.reason), reason);
	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_COMMIT_FAIL, sizeof(w));
}

size_t rdmae_msg_cancel_encode(void *buf, int error, const char *reason)
{
	struct rdmae_wire_cancel w;

	w.error = htole32(wire_errno(error));
	w.reserved = 0;
	put_str(w.reason, sizeof(w.reason), reason);
	memcpy((uint8_t *)buf + HDR, &w, sizeof(w));
	return put_hdr(buf, RDMAE_MSG_CANCEL, sizeof(w));
}

/* ---- accessors (the decoder checked every index they can be given) ---- */

void rdmae_msg_blocks_get(const struct rdmae_msg *m, uint32_t i, struct rdmae_msg_block *b)
{
	struct rdmae_wire_block w;

	memcpy(&w, m->u.blocks.raw + (size_t)i * sizeof(w), sizeof(w));
	memcpy(b->name, w.name, sizeof(b->name));
	b->len = le64toh(w.len);
	b->page_size = le32toh(w.page_size);
	b->flags = le32toh(w.flags);
}

void rdmae_msg_descs_get(const struct rdmae_msg *m, uint32_t i, struct rdmae_bufdesc *d)
{
	rdmae_bufdesc_decode(m->u.descs.raw + (size_t)i * RDMAE_BUFDESC_SIZE, d);
}

void rdmae_msg_zero_runs_get(const struct rdmae_msg *m, uint32_t i, uint64_t *first_page,
			     uint64_t *npages)
{
	const uint8_t *p = m->u.zero_runs.raw + (size_t)i * sizeof(struct rdmae_wire_page_run);

	*first_page = get_le64(p);
	*npages = get_le64(p + 8);
}

uint64_t rdmae_msg_block_sums_get(const struct rdmae_msg *m, uint32_t i)
{
	return get_le64(m->u.block_sums.raw + (size_t)i * 8);
}

uint64_t rdmae_msg_page_sums_get(const struct rdmae_msg *m, uint64_t i)
{
	return get_le64(m->u.page_sums.raw + (size_t)i * 8);
}

/* ---- decoder ---- */

static int bad(struct rdmae_err *err, int code, unsigned int type, const char *what,
	       uint64_t got, uint64_t want)
{
	return rdmae_err_set(err, code, "decode %s: %s (%" PRIu64 ", expected %" PRIu64 ")",
			     rdmae_msg_type_name(type), what, got, want);
}

static int need_ctx(const struct rdmae_proto_ctx *ctx, unsigned int type, struct rdmae_err *err)
{
	if (ctx)
		return 0;
	return rdmae_err_set(err, -EPROTO, "decode %s: not expected before pre-flight",
			     rdmae_msg_type_name(type));
}

/* Fixed part of the body present, and the rest exactly n entries of size sz? */
static int check_body(unsigned int type, size_t body, size_t fixed, uint64_t n, size_t sz,
		      struct rdmae_err *err)
{
	size_t rest;

	if (body < fixed)
		return bad(err, -EBADMSG, type, "body shorter than its struct", body, fixed);
	rest = body - fixed;
	if (rest % sz || rest / sz != n)
		return bad(err, -EBADMSG, type, "count does not match the body", n, rest / sz);
	return 0;
}

static int dec_fixed(unsigned int type, const uint8_t *b, size_t body, void *w, size_t sz,
		     struct rdmae_err *err)
{
	if (body != sz) {
		rdmae_err_set(err, -EBADMSG, "decode %s: body of %zu bytes, expected %zu",
			      rdmae_msg_type_name(type), body, sz);
		return -EBADMSG;
	}
	memcpy(w, b, sz);
	return 0;
}

static int check_block(const struct rdmae_proto_ctx *ctx, unsigned int type, uint32_t block,
		       bool none_ok, struct rdmae_err *err)
{
	if (none_ok && block == RDMAE_PROTO_NO_BLOCK)
		return 0;
	if (block >= ctx->nblocks)
		return rdmae_err_set(err, -EPROTO,
				     "decode %s: block index %" PRIu32 " out of range (%" PRIu32
				     " blocks)", rdmae_msg_type_name(type), block, ctx->nblocks);
	return 0;
}

static int check_range(const struct rdmae_proto_ctx *ctx, unsigned int type, uint32_t block,
		       uint64_t first, uint64_t n, struct rdmae_err *err)
{
	uint64_t pages = ctx->block_pages[block];

	if (!n || first >= pages || n > pages - first)
		return rdmae_err_set(err, -EPROTO,
				     "decode %s: pages %" PRIu64 "+%" PRIu64
				     " outside block %" PRIu32 " (%" PRIu64 " pages)",
				     rdmae_msg_type_name(type), first, n, block, pages);
	return 0;
}

static int check_errno(unsigned int type, uint32_t e, struct rdmae_err *err)
{
	if (!e || e > MAX_ERRNO)
		return rdmae_err_set(err, -EPROTO, "decode %s: errno %" PRIu32 " not in 1..%d",
				     rdmae_msg_type_name(type), e, MAX_ERRNO);
	return 0;
}

static int check_reserved(unsigned int type, uint32_t v, struct rdmae_err *err)
{
	if (v)
		return bad(err, -EPROTO, type, "reserved field not zero", v, 0);
	return 0;
}

static int check_flags(unsigned int type, uint32_t flags, uint32_t known, struct rdmae_err *err)
{
	if (flags & ~known)
		return bad(err, -EPROTO, type, "unknown flags", flags, known);
	return 0;
}

static int get_reason(unsigned int type, char *dst, const char *src, struct rdmae_err *err)
{
	if (!memchr(src, '\0', RDMAE_PROTO_REASON_LEN))
		return rdmae_err_set(err, -EPROTO, "decode %s: reason not NUL-terminated",
				     rdmae_msg_type_name(type));
	memcpy(dst, src, RDMAE_PROTO_REASON_LEN);
	return 0;
}

static int dec_blocks(const uint8_t *b, size_t body, struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_blocks w;
	uint32_t i;
	int rc;

	if (body < sizeof(w))
		return bad(err, -EBADMSG, m->type, "body shorter than its struct", body, sizeof(w));
	memcpy(&w, b, sizeof(w));
	m->u.blocks.count = le32toh(w.count);
	m->u.blocks.reg_mode = le16toh(w.reg_mode);
	m->u.blocks.flags = le16toh(w.flags);
	if (m->u.blocks.reg_mode > RDMAE_WIRE_REG_ODP)
		return rdmae_err_set(err, -EPROTO, "decode BLOCKS: registration mode %" PRIu32
				     " unknown (0 pin, 1 on-demand, 2 ODP)", m->u.blocks.reg_mode);
	rc = check_flags(m->type, m->u.blocks.flags, RDMAE_SESS_FLAGS_KNOWN, err);
	if (rc)
		return rc;
	if (!m->u.blocks.count || m->u.blocks.count > RDMAE_PROTO_MAX_BLOCKS)
		return rdmae_err_set(err, -EPROTO, "decode BLOCKS: block count %" PRIu32
				     " not in 1..%d", m->u.blocks.count, RDMAE_PROTO_MAX_BLOCKS);
	rc = check_body(m->type, body, sizeof(w), m->u.blocks.count,
			sizeof(struct rdmae_wire_block), err);
	if (rc)
		return rc;
	m->u.blocks.raw = b + sizeof(w);
	for (i = 0; i < m->u.blocks.count; i++) {
		struct rdmae_msg_block blk;

		rdmae_msg_blocks_get(m, i, &blk);
		if (!memchr(blk.name, '\0', sizeof(blk.name)) || !blk.name[0])
			return rdmae_err_set(err, -EPROTO,
					     "decode BLOCKS: block %" PRIu32
					     ": name empty or not NUL-terminated", i);
		if (!blk.page_size || (blk.page_size & (blk.page_size - 1)) || !blk.len ||
		    blk.len % blk.page_size)
			return rdmae_err_set(err, -EPROTO,
					     "decode BLOCKS: block '%s': length %" PRIu64
					     " not a non-zero multiple of page size %" PRIu32,
					     blk.name, blk.len, blk.page_size);
		rc = check_flags(m->type, blk.flags, RDMAE_BLOCK_FLAGS_KNOWN, err);
		if (rc)
			return rc;
	}
	return 0;
}

static int dec_preflight_ok(const uint8_t *b, size_t body, const struct rdmae_proto_ctx *ctx,
			    struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_preflight_ok w;
	int rc;

	rc = dec_fixed(m->type, b, body, &w, sizeof(w), err);
	if (rc)
		return rc;
	m->u.preflight_ok.reg_mode = le16toh(w.reg_mode);
	m->u.preflight_ok.flags = le16toh(w.flags);
	rc = check_flags(m->type, m->u.preflight_ok.flags, RDMAE_SESS_FLAGS_KNOWN, err);
	if (rc)
		return rc;
	/* On-demand chunks cannot take remote WRITEs: a destination never says so. */
	if (m->u.preflight_ok.reg_mode != RDMAE_WIRE_REG_PIN &&
	    m->u.preflight_ok.reg_mode != RDMAE_WIRE_REG_ODP)
		return rdmae_err_set(err, -EPROTO, "decode PREFLIGHT_OK: registration mode %"
				     PRIu32 " not one a destination uses (0 pin, 2 ODP)",
				     m->u.preflight_ok.reg_mode);
	m->u.preflight_ok.nblocks = le32toh(w.nblocks);
	if (m->u.preflight_ok.nblocks != ctx->nblocks)
		return bad(err, -EPROTO, m->type, "block count", m->u.preflight_ok.nblocks,
			   ctx->nblocks);
	return 0;
}

/*
 * DESCS: a piece of a block, in order. Everything is checked here, before
 * the source keeps a descriptor: the block, a page-aligned start exactly
 * where the block's advertised part ends (so pieces neither overlap nor
 * leave gaps), 1..RDMAE_PROTO_MAX_DESCS descriptors each RDMAE_DESC_SPAN
 * long but the last (which is not empty), addresses that do not wrap, and an
 * end on a page boundary inside the block.
 */
static int dec_descs(const uint8_t *b, size_t body, const struct rdmae_proto_ctx *ctx,
		     struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_descs w;
	uint64_t len = 0, blen, ps, end;
	uint32_t j, blk, n;
	int rc;

	if (body < sizeof(w))
		return bad(err, -EBADMSG, m->type, "body shorter than its struct", body, sizeof(w));
	memcpy(&w, b, sizeof(w));
	blk = le32toh(w.block);
	n = le32toh(w.ndescs);
	m->u.descs.block = blk;
	m->u.descs.ndescs = n;
	m->u.descs.offset = le64toh(w.offset);
	if (!ctx->advertised)
		return rdmae_err_set(err, -EPROTO, "decode DESCS: not expected by this side");
	rc = check_block(ctx, m->type, blk, false, err);
	if (rc)
		return rc;
	if (!n || n > RDMAE_PROTO_MAX_DESCS)
		return rdmae_err_set(err, -EPROTO, "decode DESCS: %" PRIu32
				     " descriptors, not in 1..%d", n, RDMAE_PROTO_MAX_DESCS);
	rc = check_body(m->type, body, sizeof(w), n, RDMAE_BUFDESC_SIZE, err);
	if (rc)
		return rc;
	m->u.descs.raw = b + sizeof(w);
	blen = ctx->block_len[blk];
	ps = blen / ctx->block_pages[blk];
	if (m->u.descs.offset != ctx->advertised[blk])
		return rdmae_err_set(err, -EPROTO, "decode DESCS: block %" PRIu32 ": piece at"
				     " offset %" PRIu64 ", expected %" PRIu64 " (%s)", blk,
				     m->u.descs.offset, ctx->advertised[blk],
				     m->u.descs.offset < ctx->advertised[blk] ? "overlap" : "gap");
	if (m->u.descs.offset >= blen || m->u.descs.offset % ps)
		return rdmae_err_set(err, -EPROTO, "decode DESCS: block %" PRIu32 ": offset %"
				     PRIu64 " not a page boundary inside its %" PRIu64 " bytes",
				     blk, m->u.descs.offset, blen);
	for (j = 0; j < n; j++) {
		struct rdmae_bufdesc d;

		rdmae_msg_descs_get(m, j, &d);
		if (!d.length || d.length > RDMAE_DESC_SPAN ||
		    (j + 1 < n && d.length != RDMAE_DESC_SPAN))
			return rdmae_err_set(err, -EPROTO, "decode DESCS: block %" PRIu32
					     " descriptor %" PRIu32 ": length %" PRIu32 ", expected %s",
					     blk, j, d.length, j + 1 < n ? "the full span" :
					     "1 up to the full span");
		if (d.offset > UINT64_MAX - d.length)
			return rdmae_err_set(err, -EPROTO, "decode DESCS: block %" PRIu32
					     " descriptor %" PRIu32 ": address %#" PRIx64 " + %"
					     PRIu32 " wraps", blk, j, d.offset, d.length);
		len += d.length;
	}
	/* len <= 64 GiB and offset < blen: no overflow. */
	end = m->u.descs.offset + len;
	if (end > blen || (end % ps && end != blen))
		return rdmae_err_set(err, -EPROTO, "decode DESCS: block %" PRIu32 ": piece %" PRIu64
				     "+%" PRIu64 " does not end on a page inside its %" PRIu64
				     " bytes", blk, m->u.descs.offset, len, blen);
	m->u.descs.len = len;
	return 0;
}

static int dec_preflight_err(const uint8_t *b, size_t body, const struct rdmae_proto_ctx *ctx,
			     struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_preflight_err w;
	int rc;

	rc = dec_fixed(m->type, b, body, &w, sizeof(w), err);
	if (rc)
		return rc;
	rc = check_errno(m->type, le32toh(w.error), err);
	if (!rc)
		rc = check_block(ctx, m->type, le32toh(w.block), true, err);
	if (!rc)
		rc = get_reason(m->type, m->u.preflight_err.reason, w.reason, err);
	if (rc)
		return rc;
	m->u.preflight_err.error = -(int)le32toh(w.error);
	m->u.preflight_err.block = le32toh(w.block);
	return 0;
}

/*
 * Run i of a ZERO_RUNS or DATA_RUNS list: non-empty, inside the block, and
 * starting at or after the end of run i - 1 (prev_first..prev_end). Ascending
 * runs that never overlap let the destination count each page once and keep
 * a message's work proportional to the block, whatever the sender claims.
 */
static int check_run(const struct rdmae_proto_ctx *ctx, const struct rdmae_msg *m, uint32_t i,
		     uint64_t first, uint64_t n, uint64_t prev_first, uint64_t prev_end,
		     struct rdmae_err *err)
{
	const char *type = rdmae_msg_type_name(m->type);
	uint32_t block = m->u.zero_runs.block;
	uint64_t pages = ctx->block_pages[block];

	if (!n)
		return rdmae_err_set(err, -EPROTO, "decode %s: run %" PRIu32 ": empty (page %"
				     PRIu64 "+0)", type, i, first);
	if (first >= pages || n > pages - first)
		return rdmae_err_set(err, -EPROTO, "decode %s: run %" PRIu32 ": pages %" PRIu64
				     "+%" PRIu64 " outside block %" PRIu32 " (%" PRIu64 " pages)",
				     type, i, first, n, block, pages);
	if (i && first < prev_first)
		return rdmae_err_set(err, -EPROTO, "decode %s: run %" PRIu32 ": out of order: "
				     "starts at page %" PRIu64 ", before run %" PRIu32
				     " (page %" PRIu64 ")", type, i, first, i - 1, prev_first);
	if (i && first < prev_end)
		return rdmae_err_set(err, -EPROTO, "decode %s: run %" PRIu32 ": pages %" PRIu64
				     "+%" PRIu64 " overlap run %" PRIu32 " (pages %" PRIu64
				     "..%" PRIu64 ")", type, i, first, n, i - 1, prev_first,
				     prev_end - 1);
	return 0;
}

static int dec_zero_runs(const uint8_t *b, size_t body, const struct rdmae_proto_ctx *ctx,
			 struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_zero_runs w;
	uint64_t prev_first = 0, prev_end = 0;
	uint32_t i;
	int rc;

	if (body < sizeof(w))
		return bad(err, -EBADMSG, m->type, "body shorter than its struct", body, sizeof(w));
	memcpy(&w, b, sizeof(w));
	m->u.zero_runs.block = le32toh(w.block);
	m->u.zero_runs.count = le32toh(w.count);
	if (m->u.zero_runs.count > RDMAE_PROTO_MAX_RUNS)
		return rdmae_err_set(err, -EPROTO, "decode %s: %" PRIu32 " runs, at most %d",
				     rdmae_msg_type_name(m->type), m->u.zero_runs.count,
				     RDMAE_PROTO_MAX_RUNS);
	rc = check_body(m->type, body, sizeof(w), m->u.zero_runs.count,
			sizeof(struct rdmae_wire_page_run), err);
	if (!rc)
		rc = check_block(ctx, m->type, m->u.zero_runs.block, false, err);
	if (rc)
		return rc;
	m->u.zero_runs.raw = b + sizeof(w);
	for (i = 0; i < m->u.zero_runs.count; i++) {
		uint64_t first, n;

		rdmae_msg_zero_runs_get(m, i, &first, &n);
		rc = check_run(ctx, m, i, first, n, prev_first, prev_end, err);
		if (rc)
			return rc;
		prev_first = first;
		/* Cannot wrap: check_run put the run inside the block. */
		prev_end = first + n;
	}
	return 0;
}

static int dec_round_end(const uint8_t *b, size_t body, struct rdmae_msg *m,
			 struct rdmae_err *err)
{
	struct rdmae_wire_round_end w;
	struct rdmae_msg_round_end *r = &m->u.round_end;
	int rc;

	rc = dec_fixed(m->type, b, body, &w, sizeof(w), err);
	if (!rc)
		rc = check_reserved(m->type, le32toh(w.reserved), err);
	if (!rc)
		rc = check_flags(m->type, le32toh(w.flags), RDMAE_ROUND_FLAGS_KNOWN, err);
	if (rc)
		return rc;
	r->round = le32toh(w.round);
	r->fence_seq = le32toh(w.fence_seq);
	r->flags = le32toh(w.flags);
	r->pages = le64toh(w.pages);
	r->bytes = le64toh(w.bytes);
	r->zero_pages = le64toh(w.zero_pages);
	r->runs = le64toh(w.runs);
	r->duration_ns = le64toh(w.duration_ns);
	if (!r->round || !r->fence_seq)
		return bad(err, -EPROTO, m->type, "round and fence must be non-zero", 0, 1);
	if (r->zero_pages > r->pages)
		return bad(err, -EPROTO, m->type, "more zero pages than pages", r->zero_pages,
			   r->pages);
	return 0;
}

static int dec_state(const uint8_t *b, size_t body, struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_state w;
	int rc;

	if (body < sizeof(w))
		return bad(err, -EBADMSG, m->type, "body shorter than its struct", body, sizeof(w));
	memcpy(&w, b, sizeof(w));
	m->u.state.offset = le64toh(w.offset);
	m->u.state.len = le32toh(w.len);
	rc = check_reserved(m->type, le32toh(w.reserved), err);
	if (!rc)
		rc = check_body(m->type, body, sizeof(w), m->u.state.len, 1, err);
	if (rc)
		return rc;
	if (!m->u.state.len)
		return bad(err, -EPROTO, m->type, "empty chunk", 0, 1);
	if (m->u.state.offset > UINT64_MAX - m->u.state.len)
		return bad(err, -EPROTO, m->type, "offset overflows", m->u.state.offset, 0);
	m->u.state.data = b + sizeof(w);
	return 0;
}

static int dec_complete(const uint8_t *b, size_t body, const struct rdmae_proto_ctx *ctx,
			struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_complete w;
	struct rdmae_msg_complete *c = &m->u.complete;
	int rc;

	rc = dec_fixed(m->type, b, body, &w, sizeof(w), err);
	if (!rc)
		rc = check_flags(m->type, le32toh(w.flags), RDMAE_COMPLETE_FLAGS_KNOWN, err);
	if (rc)
		return rc;
	c->fence_seq = le32toh(w.fence_seq);
	c->flags = le32toh(w.flags);
	c->nblocks = le32toh(w.nblocks);
	c->rounds = le32toh(w.rounds);
	c->state_bytes = le64toh(w.state_bytes);
	if (c->nblocks != ctx->nblocks)
		return bad(err, -EPROTO, m->type, "block count", c->nblocks, ctx->nblocks);
	if (!c->fence_seq)
		return bad(err, -EPROTO, m->type, "fence must be non-zero", 0, 1);
	return 0;
}

static int dec_block_sums(const uint8_t *b, size_t body, const struct rdmae_proto_ctx *ctx,
			  struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_block_sums w;
	int rc;

	if (body < sizeof(w))
		return bad(err, -EBADMSG, m->type, "body shorter than its struct", body, sizeof(w));
	memcpy(&w, b, sizeof(w));
	m->u.block_sums.nblocks = le32toh(w.nblocks);
	rc = check_reserved(m->type, le32toh(w.reserved), err);
	if (!rc)
		rc = check_body(m->type, body, sizeof(w), m->u.block_sums.nblocks, 8, err);
	if (rc)
		return rc;
	if (m->u.block_sums.nblocks != ctx->nblocks)
		return bad(err, -EPROTO, m->type, "block count", m->u.block_sums.nblocks,
			   ctx->nblocks);
	m->u.block_sums.raw = b + sizeof(w);
	return 0;
}

static int dec_page_sums(const uint8_t *b, size_t body, const struct rdmae_proto_ctx *ctx,
			 struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_page_sums w;
	bool answer = m->type == RDMAE_MSG_PAGE_SUMS;
	int rc;

	if (body < sizeof(w))
		return bad(err, -EBADMSG, m->type, "body shorter than its struct", body, sizeof(w));
	memcpy(&w, b, sizeof(w));
	m->u.page_sums.block = le32toh(w.block);
	m->u.page_sums.first_page = le64toh(w.first_page);
	m->u.page_sums.npages = le64toh(w.npages);
	m->u.page_sums.raw = answer ? b + sizeof(w) : NULL;
	rc = check_reserved(m->type, le32toh(w.reserved), err);
	if (!rc)
		rc = check_body(m->type, body, sizeof(w), answer ? m->u.page_sums.npages : 0, 8,
				err);
	if (!rc)
		rc = check_block(ctx, m->type, m->u.page_sums.block, false, err);
	if (!rc)
		rc = check_range(ctx, m->type, m->u.page_sums.block, m->u.page_sums.first_page,
				 m->u.page_sums.npages, err);
	if (rc)
		return rc;
	/* A request must be answerable within one message. */
	if (!answer && ctx->max_msg &&
	    m->u.page_sums.npages > rdmae_msg_page_sums_max(ctx->max_msg))
		return bad(err, -EPROTO, m->type, "more pages than one answer carries",
			   m->u.page_sums.npages, rdmae_msg_page_sums_max(ctx->max_msg));
	return 0;
}

static int dec_commit_fail(const uint8_t *b, size_t body, const struct rdmae_proto_ctx *ctx,
			   struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_commit_fail w;
	uint32_t block;
	uint64_t page;
	int rc;

	rc = dec_fixed(m->type, b, body, &w, sizeof(w), err);
	if (rc)
		return rc;
	rc = check_errno(m->type, le32toh(w.error), err);
	block = le32toh(w.block);
	page = le64toh(w.first_page);
	if (!rc)
		rc = check_block(ctx, m->type, block, true, err);
	if (!rc && page != RDMAE_PROTO_NO_PAGE && block == RDMAE_PROTO_NO_BLOCK)
		rc = rdmae_err_set(err, -EPROTO, "decode COMMIT_FAIL: page %" PRIu64
				   " without a block", page);
	else if (!rc && page != RDMAE_PROTO_NO_PAGE && page >= ctx->block_pages[block])
		rc = rdmae_err_set(err, -EPROTO, "decode COMMIT_FAIL: page %" PRIu64
				   " outside block %" PRIu32 " (%" PRIu64 " pages)", page, block,
				   ctx->block_pages[block]);
	if (!rc)
		rc = get_reason(m->type, m->u.commit_fail.reason, w.reason, err);
	if (rc)
		return rc;
	m->u.commit_fail.error = -(int)le32toh(w.error);
	m->u.commit_fail.block = block;
	m->u.commit_fail.first_page = page;
	return 0;
}

static int dec_cancel(const uint8_t *b, size_t body, struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_cancel w;
	int rc;

	rc = dec_fixed(m->type, b, body, &w, sizeof(w), err);
	if (!rc)
		rc = check_errno(m->type, le32toh(w.error), err);
	if (!rc)
		rc = check_reserved(m->type, le32toh(w.reserved), err);
	if (!rc)
		rc = get_reason(m->type, m->u.cancel.reason, w.reason, err);
	if (rc)
		return rc;
	m->u.cancel.error = -(int)le32toh(w.error);
	return 0;
}

static int dec_body(const uint8_t *b, size_t body, const struct rdmae_proto_ctx *ctx,
		    struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_progress pw;
	struct rdmae_wire_round_ack aw;
	struct rdmae_wire_commit_ok ow;
	int rc;

	switch (m->type) {
	case RDMAE_MSG_BLOCKS:
		return dec_blocks(b, body, m, err);
	case RDMAE_MSG_PREFLIGHT_OK:
		return dec_preflight_ok(b, body, ctx, m, err);
	case RDMAE_MSG_PREFLIGHT_ERR:
		return dec_preflight_err(b, body, ctx, m, err);
	case RDMAE_MSG_ZERO_RUNS:
	case RDMAE_MSG_DATA_RUNS:
		return dec_zero_runs(b, body, ctx, m, err);
	case RDMAE_MSG_PROGRESS:
		rc = dec_fixed(m->type, b, body, &pw, sizeof(pw), err);
		if (!rc)
			rc = check_reserved(m->type, le32toh(pw.reserved), err);
		if (rc)
			return rc;
		m->u.progress.round = le32toh(pw.round);
		m->u.progress.bytes = le64toh(pw.bytes);
		return 0;
	case RDMAE_MSG_ROUND_END:
		return dec_round_end(b, body, m, err);
	case RDMAE_MSG_ROUND_ACK:
		rc = dec_fixed(m->type, b, body, &aw, sizeof(aw), err);
		if (rc)
			return rc;
		m->u.round_ack.round = le32toh(aw.round);
		m->u.round_ack.hash_backlog_mib = le32toh(aw.hash_backlog_mib);
		return 0;
	case RDMAE_MSG_STATE:
		return dec_state(b, body, m, err);
	case RDMAE_MSG_COMPLETE:
		return dec_complete(b, body, ctx, m, err);
	case RDMAE_MSG_BLOCK_SUMS:
		return dec_block_sums(b, body, ctx, m, err);
	case RDMAE_MSG_PAGE_SUMS_REQ:
	case RDMAE_MSG_PAGE_SUMS:
		return dec_page_sums(b, body, ctx, m, err);
	case RDMAE_MSG_COMMIT_OK:
		rc = dec_fixed(m->type, b, body, &ow, sizeof(ow), err);
		if (!rc)
			rc = check_reserved(m->type, le32toh(ow.reserved), err);
		if (!rc)
			rc = check_flags(m->type, le32toh(ow.flags), RDMAE_COMMIT_FLAGS_KNOWN, err);
		if (rc)
			return rc;
		m->u.commit_ok.flags = le32toh(ow.flags);
		return 0;
	case RDMAE_MSG_COMMIT_FAIL:
		return dec_commit_fail(b, body, ctx, m, err);
	case RDMAE_MSG_CANCEL:
		return dec_cancel(b, body, m, err);
	case RDMAE_MSG_DESCS:
		return dec_descs(b, body, ctx, m, err);
	case RDMAE_MSG_TYPE_END:
		break;
	}
	return rdmae_err_set(err, -EPROTO, "decode: unknown message type %u",
			     (unsigned int)m->type);
}

int rdmae_msg_decode(const void *buf, size_t len, const struct rdmae_proto_ctx *ctx,
		     struct rdmae_msg *m, struct rdmae_err *err)
{
	struct rdmae_wire_eng_hdr h;
	uint16_t type;
	uint32_t body;

	memset(m, 0, sizeof(*m));
	if (!buf || len < HDR)
		return rdmae_err_set(err, -EBADMSG,
				     "decode: message of %zu bytes shorter than the %d-byte header",
				     len, HDR);
	memcpy(&h, buf, sizeof(h));
	if (le32toh(h.magic) != RDMAE_PROTO_MAGIC)
		return rdmae_err_set(err, -EPROTO, "decode: bad magic 0x%08" PRIx32,
				     le32toh(h.magic));
	if (le16toh(h.version) != RDMAE_PROTO_VERSION)
		return rdmae_err_set(err, -EPROTO, "decode: version %u, expected %u",
				     (unsigned int)le16toh(h.version), RDMAE_PROTO_VERSION);
	type = le16toh(h.type);
	if (!type || type >= RDMAE_MSG_TYPE_END)
		return rdmae_err_set(err, -EPROTO, "decode: unknown message type %u",
				     (unsigned int)type);
	if (h.reserved)
		return rdmae_err_set(err, -EPROTO, "decode %s: reserved header field not zero",
				     rdmae_msg_type_name(type));
	body = le32toh(h.body_len);
	if (body != len - HDR)
		return rdmae_err_set(err, -EBADMSG,
				     "decode %s: body length %" PRIu32 ", message carries %zu",
				     rdmae_msg_type_name(type), body, len - HDR);
	m->type = (enum rdmae_msg_type)type;
	m->body_len = body;
	if (type != RDMAE_MSG_BLOCKS && type != RDMAE_MSG_CANCEL) {
		int rc = need_ctx(ctx, type, err);

		if (rc)
			return rc;
	}
	return dec_body((const uint8_t *)buf + HDR, body, ctx, m, err);
}
