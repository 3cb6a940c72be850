/* SPDX-License-Identifier: MIT */
/*
 * The engine's messages (engine/proto.c): rdmae_msg_decode on any bytes,
 * once before pre-flight (no context: only BLOCKS and CANCEL may pass) and
 * once against a session of three blocks. A decoded message is then read in
 * full through its accessors, the way engine/session.c reads it, so an index
 * or count the decoder let through past the buffer is an ASan report; and
 * what the decoder promises (doc/protocol-engine.md) is checked: block
 * indices and page ranges inside the session, runs ascending and at most
 * RDMAE_PROTO_MAX_RUNS, DESCS pieces where the advertised part ends and
 * inside their block, strings terminated. PAGE_SUMS_REQ and COMPLETE also
 * go through the destination's and source's rules (engine/commit_rules.c).
 */
#include <errno.h>
#include <string.h>

#include "commit_rules.h"
#include "fuzz.h"
#include "proto.h"
#include "rdmae_region.h"
#include "session.h"

static const uint64_t blen[FUZZ_NBLOCKS] = FUZZ_BLOCK_LEN;
static const uint64_t bpages[FUZZ_NBLOCKS] = FUZZ_BLOCK_PAGES;
static const uint64_t advertised[FUZZ_NBLOCKS] = FUZZ_ADVERTISED;
/* The source's view: it alone takes DESCS. */
static const struct rdmae_proto_ctx session = {
	.nblocks = FUZZ_NBLOCKS, .block_len = blen, .block_pages = bpages,
	.max_msg = FUZZ_MAX_MSG, .advertised = advertised,
};
/* The destination's: the same blocks, no DESCS. */
static const struct rdmae_proto_ctx dest = {
	.nblocks = FUZZ_NBLOCKS, .block_len = blen, .block_pages = bpages,
	.max_msg = FUZZ_MAX_MSG,
};

static void read_blocks(const struct rdmae_msg *m)
{
	uint32_t i;

	FUZZ_CHECK(m->u.blocks.count >= 1 && m->u.blocks.count <= RDMAE_PROTO_MAX_BLOCKS);
	for (i = 0; i < m->u.blocks.count; i++) {
		struct rdmae_msg_block b;

		rdmae_msg_blocks_get(m, i, &b);
		FUZZ_CHECK(b.name[0] && memchr(b.name, '\0', sizeof(b.name)));
		FUZZ_CHECK(b.page_size && !(b.page_size & (b.page_size - 1)));
		FUZZ_CHECK(b.len && b.len % b.page_size == 0);
	}
}

static void read_descs(const struct rdmae_msg *m, const struct rdmae_proto_ctx *ctx)
{
	uint64_t covered = 0, ps;
	uint32_t j;

	FUZZ_CHECK(ctx->advertised && m->u.descs.block < ctx->nblocks);
	FUZZ_CHECK(m->u.descs.ndescs >= 1 && m->u.descs.ndescs <= RDMAE_PROTO_MAX_DESCS);
	FUZZ_CHECK(m->u.descs.offset == ctx->advertised[m->u.descs.block]);
	for (j = 0; j < m->u.descs.ndescs; j++) {
		struct rdmae_bufdesc d;

		rdmae_msg_descs_get(m, j, &d);
		FUZZ_CHECK(d.length && d.length <= RDMAE_DESC_SPAN);
		FUZZ_CHECK(j + 1 == m->u.descs.ndescs || d.length == RDMAE_DESC_SPAN);
		FUZZ_CHECK(d.offset <= UINT64_MAX - d.length);
		covered += d.length;
	}
	FUZZ_CHECK(covered == m->u.descs.len);
	ps = ctx->block_len[m->u.descs.block] / ctx->block_pages[m->u.descs.block];
	FUZZ_CHECK(m->u.descs.offset % ps == 0);
	FUZZ_CHECK(m->u.descs.offset + covered <= ctx->block_len[m->u.descs.block]);
}

static void read_runs(const struct rdmae_msg *m, const struct rdmae_proto_ctx *ctx)
{
	uint64_t pages, end = 0;
	uint32_t i;

	FUZZ_CHECK(m->u.zero_runs.block < ctx->nblocks);
	FUZZ_CHECK(m->u.zero_runs.count <= RDMAE_PROTO_MAX_RUNS);
	pages = ctx->block_pages[m->u.zero_runs.block];
	for (i = 0; i < m->u.zero_runs.count; i++) {
		uint64_t first, n;

		rdmae_msg_zero_runs_get(m, i, &first, &n);
		FUZZ_CHECK(n && first < pages && n <= pages - first);
		FUZZ_CHECK(first >= end);
		end = first + n;
	}
}

static void read_page_sums(const struct rdmae_msg *m, const struct rdmae_proto_ctx *ctx)
{
	uint64_t pages;

	FUZZ_CHECK(m->u.page_sums.block < ctx->nblocks);
	pages = ctx->block_pages[m->u.page_sums.block];
	FUZZ_CHECK(m->u.page_sums.npages && m->u.page_sums.first_page < pages &&
		   m->u.page_sums.npages <= pages - m->u.page_sums.first_page);
	if (m->type == RDMAE_MSG_PAGE_SUMS) {
		uint64_t i, sum = 0;

		for (i = 0; i < m->u.page_sums.npages; i++)
			sum += rdmae_msg_page_sums_get(m, i);
		(void)sum;
		return;
	}
	/* The source answers only ascending chunks of one block from page 0. */
	{
		struct rdmae_sums_guard g = { .started = false };
		char why[RDMAE_PROTO_REASON_LEN];
		int ret = rdmae_sums_guard_take(&g, m->u.page_sums.block,
						m->u.page_sums.first_page, m->u.page_sums.npages,
						why, sizeof(why));

		FUZZ_CHECK(ret == 0 || (ret == -EPROTO && memchr(why, '\0', sizeof(why))));
		FUZZ_CHECK(ret != 0 || m->u.page_sums.first_page == 0);
	}
}

static void read_complete(const struct rdmae_msg *m)
{
	const struct rdmae_dst_progress p = {
		.rounds = 3, .last_final = true, .state_bytes = 4096, .require_verify = true,
	};
	char why[RDMAE_PROTO_REASON_LEN];
	int ret = rdmae_commit_check(&p, &m->u.complete, why, sizeof(why));

	FUZZ_CHECK(ret <= 0);
	FUZZ_CHECK(ret == 0 || memchr(why, '\0', sizeof(why)));
}

static void read_all(const struct rdmae_msg *m, const struct rdmae_proto_ctx *ctx)
{
	uint32_t i;
	uint64_t sum = 0;

	switch (m->type) {
	case RDMAE_MSG_BLOCKS:
		read_blocks(m);
		break;
	case RDMAE_MSG_PREFLIGHT_OK:
		FUZZ_CHECK(m->u.preflight_ok.nblocks == ctx->nblocks);
		FUZZ_CHECK(m->body_len == sizeof(struct rdmae_wire_preflight_ok));
		break;
	case RDMAE_MSG_DESCS:
		read_descs(m, ctx);
		break;
	case RDMAE_MSG_PREFLIGHT_ERR:
		FUZZ_CHECK(m->u.preflight_err.error < 0);
		FUZZ_CHECK(memchr(m->u.preflight_err.reason, '\0', RDMAE_PROTO_REASON_LEN));
		FUZZ_CHECK(m->u.preflight_err.block == RDMAE_PROTO_NO_BLOCK ||
			   m->u.preflight_err.block < ctx->nblocks);
		break;
	case RDMAE_MSG_ZERO_RUNS:
	case RDMAE_MSG_DATA_RUNS:
		read_runs(m, ctx);
		break;
	case RDMAE_MSG_STATE:
		FUZZ_CHECK(m->u.state.len && m->body_len == 16 + (size_t)m->u.state.len);
		FUZZ_CHECK(m->u.state.offset <= UINT64_MAX - m->u.state.len);
		{
			volatile uint8_t last = m->u.state.data[m->u.state.len - 1];

			(void)last;
		}
		break;
	case RDMAE_MSG_COMPLETE:
		FUZZ_CHECK(m->u.complete.nblocks == ctx->nblocks && m->u.complete.fence_seq);
		read_complete(m);
		break;
	case RDMAE_MSG_BLOCK_SUMS:
		FUZZ_CHECK(m->u.block_sums.nblocks == ctx->nblocks);
		for (i = 0; i < m->u.block_sums.nblocks; i++)
			sum += rdmae_msg_block_sums_get(m, i);
		(void)sum;
		break;
	case RDMAE_MSG_PAGE_SUMS_REQ:
	case RDMAE_MSG_PAGE_SUMS:
		read_page_sums(m, ctx);
		break;
	case RDMAE_MSG_COMMIT_FAIL:
		FUZZ_CHECK(m->u.commit_fail.error < 0);
		FUZZ_CHECK(memchr(m->u.commit_fail.reason, '\0', RDMAE_PROTO_REASON_LEN));
		FUZZ_CHECK(m->u.commit_fail.first_page == RDMAE_PROTO_NO_PAGE ||
			   (m->u.commit_fail.block < ctx->nblocks &&
			    m->u.commit_fail.first_page < ctx->block_pages[m->u.commit_fail.block]));
		break;
	case RDMAE_MSG_CANCEL:
		FUZZ_CHECK(m->u.cancel.error < 0 && m->u.cancel.error >= -4095);
		FUZZ_CHECK(memchr(m->u.cancel.reason, '\0', RDMAE_PROTO_REASON_LEN));
		break;
	case RDMAE_MSG_ROUND_END:
		FUZZ_CHECK(m->u.round_end.round && m->u.round_end.fence_seq);
		FUZZ_CHECK(m->u.round_end.zero_pages <= m->u.round_end.pages);
		break;
	case RDMAE_MSG_PROGRESS:
	case RDMAE_MSG_ROUND_ACK:
	case RDMAE_MSG_COMMIT_OK:
		break;
	case RDMAE_MSG_TYPE_END:
		FUZZ_CHECK(m->type != RDMAE_MSG_TYPE_END);
		break;
	}
}

static void decode(const uint8_t *data, size_t size, const struct rdmae_proto_ctx *ctx)
{
	struct rdmae_err err = { 0 };
	struct rdmae_msg m;
	int ret = rdmae_msg_decode(data, size, ctx, &m, &err);

	if (ret) {
		FUZZ_CHECK(ret == -EPROTO || ret == -EBADMSG);
		/* Every rejection says what it rejected. */
		FUZZ_CHECK(err.code == ret && err.msg[0] && memchr(err.msg, '\0', sizeof(err.msg)));
		return;
	}
	FUZZ_CHECK(size >= RDMAE_PROTO_HDR_SIZE && m.body_len == size - RDMAE_PROTO_HDR_SIZE);
	FUZZ_CHECK(strcmp(rdmae_msg_type_name(m.type), "unknown") != 0);
	FUZZ_CHECK(ctx || m.type == RDMAE_MSG_BLOCKS || m.type == RDMAE_MSG_CANCEL);
	FUZZ_CHECK(m.type != RDMAE_MSG_DESCS || (ctx && ctx->advertised));
	read_all(&m, ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	decode(size ? data : NULL, size, NULL);
	decode(size ? data : NULL, size, &session);
	decode(size ? data : NULL, size, &dest);
	return 0;
}
