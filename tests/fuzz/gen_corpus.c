/* SPDX-License-Identifier: MIT */
/*
 * Writes the seed corpora of tests/fuzz/ (make fuzz-corpus), made with the
 * real encoders so that they stay valid as the wire evolves: for each
 * harness a few valid inputs and a few that break one rule.
 *
 *   gen_corpus DIR    writes DIR/<harness>/<seed> for every harness
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "rdmae_auth.h"
#include "rdmae_frag.h"
#include "rdmae_region.h"
#include "rdmae_wire.h"
#include "session.h"

static const char *root;
static int failures;

static void put(const char *harness, const char *name, const void *buf, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, harness);
	if (mkdir(path, 0755) && errno != EEXIST) {
		fprintf(stderr, "gen_corpus: mkdir %s: %s\n", path, strerror(errno));
		failures++;
		return;
	}
	snprintf(path, sizeof(path), "%s/%s/%s", root, harness, name);
	f = fopen(path, "wb");
	if (!f) {
		fprintf(stderr, "gen_corpus: open %s: %s\n", path, strerror(errno));
		failures++;
		return;
	}
	/* fclose flushes: its failure is a write failure too, and it must run either way. */
	bool short_write = fwrite(buf, 1, len, f) != len;
	bool close_failed = fclose(f) != 0;

	if (short_write || close_failed) {
		fprintf(stderr, "gen_corpus: write %s: %s\n", path, strerror(errno));
		failures++;
	}
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* ---- transport ---- */

/* A default client's request (rdma/negotiate.c), with a nonce that is not random. */
static struct rdmae_neg_req client_req(uint16_t auth)
{
	struct rdmae_neg_req r = {
		.min_version = RDMAE_VERSION, .max_version = RDMAE_VERSION,
		.credits_requested = 255, .credits_granted = 254, .lanes = 4, .auth = auth,
		.preferred_send_size = 8192, .max_receive_size = 8192,
		.max_fragmented_size = 32u << 20, .max_rw_size = 1u << 20,
	};

	memset(r.nonce, 0xc1, sizeof(r.nonce));
	return r;
}

static struct rdmae_neg_resp server_resp(void)
{
	struct rdmae_neg_resp r = {
		.min_version = RDMAE_VERSION, .max_version = RDMAE_VERSION,
		.negotiated_version = RDMAE_VERSION, .credits_requested = 255,
		.credits_granted = 255, .lanes = 4, .max_rw_size = 1u << 20,
		.preferred_send_size = 8192, .max_receive_size = 8192,
		.max_fragmented_size = 32u << 20, .auth = RDMAE_WIRE_AUTH_HMAC_SHA256,
	};

	return r;
}

static void neg_req(void)
{
	struct rdmae_neg_req r = client_req(RDMAE_WIRE_AUTH_HMAC_SHA256);
	uint8_t b[RDMAE_NEG_REQ_SIZE + 8];

	memset(b, 0, sizeof(b));
	memset(r.proof, 0x5a, sizeof(r.proof));
	rdmae_neg_req_encode(b, &r);
	put("fuzz_neg_req", "hmac", b, RDMAE_NEG_REQ_SIZE);
	/* A later version may append fields. */
	put("fuzz_neg_req", "longer", b, sizeof(b));
	r = client_req(RDMAE_WIRE_AUTH_NONE);
	r.lanes = 16;
	r.max_fragmented_size = RDMAE_MIN_FRAG_SIZE;
	rdmae_neg_req_encode(b, &r);
	put("fuzz_neg_req", "none-16-lanes", b, RDMAE_NEG_REQ_SIZE);
	/* Refused by the rules: no common version, then too many lanes. */
	r.min_version = r.max_version = 0x0300;
	rdmae_neg_req_encode(b, &r);
	put("fuzz_neg_req", "version-3", b, RDMAE_NEG_REQ_SIZE);
	r = client_req(RDMAE_WIRE_AUTH_NONE);
	r.lanes = 17;
	rdmae_neg_req_encode(b, &r);
	put("fuzz_neg_req", "lanes-17", b, RDMAE_NEG_REQ_SIZE);
	/* A version-1 client: 32 bytes. */
	r = client_req(RDMAE_WIRE_AUTH_NONE);
	r.min_version = r.max_version = RDMAE_VERSION_1;
	rdmae_neg_req_encode(b, &r);
	put("fuzz_neg_req", "v1", b, RDMAE_NEG_REQ_V1_SIZE);
}

static void neg_resp(void)
{
	struct rdmae_neg_resp r = server_resp();
	uint8_t b[RDMAE_NEG_RESP_SIZE];

	memset(r.proof, 0xa5, sizeof(r.proof));
	rdmae_neg_resp_encode(b, &r);
	put("fuzz_neg_resp", "hmac", b, sizeof(b));
	r.credits_granted = 1;
	rdmae_neg_resp_encode(b, &r);
	put("fuzz_neg_resp", "grant-1", b, sizeof(b));
	/* A refusal: the server's range, the error and the field. */
	memset(&r, 0, sizeof(r));
	r.min_version = r.max_version = RDMAE_VERSION;
	r.status = -EACCES;
	r.status_field = RDMAE_F_AUTH;
	r.auth = RDMAE_WIRE_AUTH_HMAC_SHA256;
	rdmae_neg_resp_encode(b, &r);
	put("fuzz_neg_resp", "refused-auth", b, sizeof(b));
	/* A version-1 server's refusal: 48 bytes. */
	r.min_version = r.max_version = RDMAE_VERSION_1;
	r.status = -EPROTONOSUPPORT;
	r.status_field = RDMAE_F_VERSION;
	r.auth = 0;
	rdmae_neg_resp_encode(b, &r);
	put("fuzz_neg_resp", "v1-refusal", b, RDMAE_NEG_RESP_V1_SIZE);
	/* Reserved bytes set. */
	r = server_resp();
	rdmae_neg_resp_encode(b, &r);
	b[44] = 1;
	put("fuzz_neg_resp", "reserved", b, sizeof(b));
}

static void accept_pd(void)
{
	struct rdmae_accept_pd p = { .version = RDMAE_VERSION, .auth = RDMAE_WIRE_AUTH_HMAC_SHA256 };
	uint8_t b[56];

	memset(b, 0, sizeof(b));
	memset(p.nonce, 0x5e, sizeof(p.nonce));
	rdmae_accept_pd_encode(b, &p);
	put("fuzz_accept_pd", "hmac", b, RDMAE_ACCEPT_PD_SIZE);
	p.auth = RDMAE_WIRE_AUTH_NONE;
	rdmae_accept_pd_encode(b, &p);
	put("fuzz_accept_pd", "none-padded", b, sizeof(b));
	/* A version-1 server accepts with its 16-byte lane private data. */
	{
		struct rdmae_lane_pd l = { .version = RDMAE_VERSION_1, .lane = 0 };

		memset(b, 0, sizeof(b));
		rdmae_lane_pd_encode(b, &l);
		put("fuzz_accept_pd", "v1-16", b, RDMAE_LANE_PD_SIZE);
	}
}

static void lane_pd(void)
{
	struct rdmae_lane_pd p = { .version = RDMAE_VERSION, .lane = 0, .conn_token = 0 };
	uint8_t b[56];

	memset(b, 0, sizeof(b));
	rdmae_lane_pd_encode(b, &p);
	/* As the listener gets it on RC: padded to 56. */
	put("fuzz_lane_pd", "lane0-padded", b, sizeof(b));
	p.lane = 3;
	p.conn_token = 0x0123456789abcdefull;
	rdmae_lane_pd_encode(b, &p);
	put("fuzz_lane_pd", "lane3", b, RDMAE_LANE_PD_SIZE);
	/* Refused: lane 0 with a token, lane 16, a short request. */
	p.lane = 0;
	rdmae_lane_pd_encode(b, &p);
	put("fuzz_lane_pd", "lane0-token", b, RDMAE_LANE_PD_SIZE);
	p.lane = RDMAE_MAX_LANES;
	rdmae_lane_pd_encode(b, &p);
	put("fuzz_lane_pd", "lane16", b, RDMAE_LANE_PD_SIZE);
	put("fuzz_lane_pd", "short", b, 8);
}

static size_t data_msg(uint8_t *b, uint16_t flags, uint32_t fence, const void *payload,
		       uint32_t len, uint32_t remaining)
{
	struct rdmae_data_hdr h = {
		.credits_requested = 255, .credits_granted = 1, .flags = flags,
		.remaining_data_length = remaining, .data_offset = len ? RDMAE_DATA_HDR_SIZE : 0,
		.data_length = len, .fence_seq = fence,
	};

	rdmae_data_hdr_encode(b, &h);
	if (len)
		memcpy(b + RDMAE_DATA_HDR_SIZE, payload, len);
	return RDMAE_DATA_HDR_SIZE + len;
}

static void data_hdr(void)
{
	static const char text[] = "an upper-layer message of some length, to be carried whole";
	uint8_t b[256];
	size_t n;

	n = data_msg(b, 0, 0, NULL, 0, 0);
	put("fuzz_data_hdr", "grant", b, n);
	n = data_msg(b, RDMAE_FLAG_RESPONSE_REQUESTED, 0, NULL, 0, 0);
	put("fuzz_data_hdr", "probe", b, n);
	n = data_msg(b, RDMAE_FLAG_FENCE, 7, NULL, 0, 0);
	put("fuzz_data_hdr", "fence", b, n);
	n = data_msg(b, 0, 0, text, sizeof(text), 0);
	put("fuzz_data_hdr", "payload", b, n);
	n = data_msg(b, 0, 0, text, sizeof(text), 100000);
	put("fuzz_data_hdr", "first-fragment", b, n);
	/* Payload past the bytes received. */
	put("fuzz_data_hdr", "cut", b, n - 1);
}

/* A record of fuzz_frag's input: le16 length, then the received buffer. */
static size_t record(uint8_t *out, const uint8_t *msg, size_t len)
{
	out[0] = (uint8_t)len;
	out[1] = (uint8_t)(len >> 8);
	memcpy(out + 2, msg, len);
	return 2 + len;
}

static void frag(void)
{
	static const char text[] = "one message cut into fragments of 40 bytes at most, as "
				   "rdmae_send cuts them by the negotiated send size";
	uint8_t in[2048], m[256];
	size_t at = 0, sent = 0, n;

	in[at++] = 0;		/* max_fragmented_size 128 KiB */
	in[at++] = 9;		/* round trip in pieces of 37 bytes */
	n = data_msg(m, 0, 0, "whole", 5, 0);
	at += record(in + at, m, n);
	while (sent < sizeof(text)) {
		uint32_t len, remaining;

		rdmae_frag_next(sizeof(text), sent, 40, &len, &remaining);
		n = data_msg(m, 0, 0, text + sent, len, remaining);
		at += record(in + at, m, n);
		sent += len;
	}
	n = data_msg(m, RDMAE_FLAG_FENCE | RDMAE_FLAG_RESPONSE_REQUESTED, 3, NULL, 0, 0);
	at += record(in + at, m, n);
	put("fuzz_frag", "messages", in, at);

	/* A fragment that does not continue the message in progress. */
	at = 2;
	n = data_msg(m, 0, 0, text, 40, 100);
	at += record(in + at, m, n);
	n = data_msg(m, 0, 0, text, 40, 100);
	at += record(in + at, m, n);
	put("fuzz_frag", "broken-chain", in, at);
}

/* Request, response and accept as fuzz_auth lays them out, with proofs made with its key. */
static void auth(void)
{
	struct rdmae_key k = { .len = sizeof(FUZZ_AUTH_KEY) - 1 };
	struct rdmae_accept_pd apd = { .version = RDMAE_VERSION,
				       .auth = RDMAE_WIRE_AUTH_HMAC_SHA256 };
	struct rdmae_neg_req req = client_req(RDMAE_WIRE_AUTH_HMAC_SHA256);
	struct rdmae_neg_resp resp = server_resp();
	uint8_t in[56 + RDMAE_NEG_REQ_SIZE + RDMAE_NEG_RESP_SIZE];

	memcpy(k.bytes, FUZZ_AUTH_KEY, k.len);
	memset(apd.nonce, 0x5e, sizeof(apd.nonce));
	memset(in, 0, sizeof(in));
	rdmae_accept_pd_encode(in, &apd);
	if (rdmae_auth_proof(&k, RDMAE_ROLE_CLIENT, req.nonce, apd.nonce, &req, NULL, req.proof) ||
	    rdmae_auth_proof(&k, RDMAE_ROLE_SERVER, req.nonce, apd.nonce, &req, &resp,
			     resp.proof)) {
		fprintf(stderr, "gen_corpus: HMAC failed\n");
		failures++;
		return;
	}
	rdmae_neg_req_encode(in + 56, &req);
	rdmae_neg_resp_encode(in + 56 + RDMAE_NEG_REQ_SIZE, &resp);
	put("fuzz_auth", "both-proofs", in, sizeof(in));
	/* A client that does not know the key. */
	in[56 + 64] ^= 1;
	put("fuzz_auth", "bad-client-proof", in, 56 + RDMAE_NEG_REQ_SIZE);
	rdmae_key_wipe(&k);
}

/* ---- engine messages, valid for session.h's blocks ---- */

static uint8_t big[1 << 15];

/*
 * An engine message seed: valid ones must decode against the session (and a
 * near miss must not), or the seed would not be what its name says.
 */
static void put_msg(const char *name, size_t n, bool valid)
{
	static const uint64_t blen[FUZZ_NBLOCKS] = FUZZ_BLOCK_LEN;
	static const uint64_t bpages[FUZZ_NBLOCKS] = FUZZ_BLOCK_PAGES;
	static const uint64_t advertised[FUZZ_NBLOCKS] = FUZZ_ADVERTISED;
	const struct rdmae_proto_ctx ctx = {
		.nblocks = FUZZ_NBLOCKS, .block_len = blen, .block_pages = bpages,
		.max_msg = FUZZ_MAX_MSG, .advertised = advertised,
	};
	struct rdmae_err err = { 0 };
	struct rdmae_msg m;

	if ((rdmae_msg_decode(big, n, &ctx, &m, &err) == 0) != valid) {
		fprintf(stderr, "gen_corpus: seed %s should %sdecode: %s\n", name,
			valid ? "" : "not ", valid ? err.msg : "it does");
		failures++;
	}
	put("fuzz_proto", name, big, n);
}

static void proto(void)
{
	static const uint64_t len[FUZZ_NBLOCKS] = FUZZ_BLOCK_LEN;
	static const uint32_t psize[FUZZ_NBLOCKS] = FUZZ_BLOCK_PAGE_SIZE;
	static const char *const names[FUZZ_NBLOCKS] = { "pc.ram", "vga.vram", "/rom@etc/acpi" };
	struct rdmae_msg_block blocks[FUZZ_NBLOCKS];
	static const uint64_t adv[FUZZ_NBLOCKS] = FUZZ_ADVERTISED;
	struct rdmae_bufdesc descs[8];
	uint32_t i, j;
	uint64_t sums[FUZZ_NBLOCKS] = { 1, 2, 3 };
	size_t n;

	memset(blocks, 0, sizeof(blocks));
	for (i = 0; i < FUZZ_NBLOCKS; i++) {
		snprintf(blocks[i].name, sizeof(blocks[i].name), "%s", names[i]);
		blocks[i].len = len[i];
		blocks[i].page_size = psize[i];
		blocks[i].flags = psize[i] > 4096 ? RDMAE_BLOCK_HUGEPAGES : 0;
	}
	n = rdmae_msg_blocks_encode(big, blocks, FUZZ_NBLOCKS, RDMAE_WIRE_REG_PIN, 0);
	put_msg("blocks", n, true);
	/* v7: the external data path (the caller writes lanes >= 1) on both sides. */
	n = rdmae_msg_blocks_encode(big, blocks, FUZZ_NBLOCKS, RDMAE_WIRE_REG_PIN,
				    RDMAE_SESS_EXTERNAL);
	put_msg("blocks-external", n, true);
	n = rdmae_msg_preflight_ok_encode(big, FUZZ_NBLOCKS, RDMAE_WIRE_REG_PIN,
					  RDMAE_SESS_EXTERNAL);
	put_msg("preflight-ok-external", n, true);

	n = rdmae_msg_preflight_ok_encode(big, FUZZ_NBLOCKS, RDMAE_WIRE_REG_ODP, 0);
	put_msg("preflight-ok", n, true);
	/* Each block's rest, from where the session's advertised part ends, in one piece. */
	for (i = 0; i < FUZZ_NBLOCKS; i++) {
		uint64_t left = len[i] - adv[i];
		uint32_t nd = (uint32_t)((left + RDMAE_DESC_SPAN - 1) / RDMAE_DESC_SPAN);
		char name[32];

		for (j = 0; j < nd; j++) {
			uint64_t l = left < RDMAE_DESC_SPAN ? left : RDMAE_DESC_SPAN;

			descs[j].offset = 0x7f0000000000ull + (uint64_t)i * 0x100000000ull +
					  adv[i] + (uint64_t)j * RDMAE_DESC_SPAN;
			descs[j].token = 0x1000 + i * 8 + j;
			descs[j].length = (uint32_t)l;
			left -= l;
		}
		snprintf(name, sizeof(name), "descs-%u", i);
		n = rdmae_msg_descs_encode(big, i, adv[i], descs, nd);
		put_msg(name, n, true);
	}
	/* A near miss: a gap (one page past the advertised end). */
	descs[0].length = 4096;
	n = rdmae_msg_descs_encode(big, 1, 4096, descs, 1);
	put_msg("descs-gap", n, false);
	n = rdmae_msg_preflight_err_encode(big, -ENOMEM, 1, "preflight: block 'vga.vram': "
					   "cannot pin");
	put_msg("preflight-err", n, true);

	rdmae_msg_zero_runs_put(big, 0, 0, 16);
	rdmae_msg_zero_runs_put(big, 1, 16, 8);
	rdmae_msg_zero_runs_put(big, 2, 100, 156);
	n = rdmae_msg_zero_runs_finish(big, 1, 3);
	put_msg("zero-runs", n, true);
	n = rdmae_msg_data_runs_finish(big, 1, 3);
	put_msg("data-runs", n, true);
	/* Near misses: overlapping, out of order. */
	rdmae_msg_zero_runs_put(big, 1, 15, 8);
	n = rdmae_msg_zero_runs_finish(big, 1, 3);
	put_msg("zero-runs-overlap", n, false);
	rdmae_msg_zero_runs_put(big, 1, 200, 8);
	n = rdmae_msg_data_runs_finish(big, 1, 3);
	put_msg("data-runs-order", n, false);
	/* At the limit, in the big block. */
	for (i = 0; i < RDMAE_PROTO_MAX_RUNS; i++)
		rdmae_msg_zero_runs_put(big, i, 3ull * i, 2);
	n = rdmae_msg_zero_runs_finish(big, 0, RDMAE_PROTO_MAX_RUNS);
	put_msg("zero-runs-max", n, true);

	n = rdmae_msg_progress_encode(big, 2, 1u << 30);
	put_msg("progress", n, true);
	{
		const struct rdmae_msg_round_end re = {
			.round = 2, .fence_seq = 5, .flags = RDMAE_ROUND_FINAL, .pages = 1000,
			.bytes = 900ull * 4096, .zero_pages = 100, .runs = 30, .duration_ns = 1000000,
		};

		n = rdmae_msg_round_end_encode(big, &re);
		put_msg("round-end", n, true);
	}
	n = rdmae_msg_round_ack_encode(big, 2, 0);
	put_msg("round-ack", n, true);
	n = rdmae_msg_state_encode(big, 4096, 32);
	memset(big + RDMAE_MSG_STATE_DATA_OFF, 's', 32);
	put_msg("state", n, true);
	{
		const struct rdmae_msg_complete c = {
			.fence_seq = 6, .flags = 0, .nblocks = FUZZ_NBLOCKS, .rounds = 3,
			.state_bytes = 4096,
		};

		const struct rdmae_msg_complete cx = {
			.fence_seq = 7, .flags = RDMAE_COMPLETE_STOPPED, .nblocks = FUZZ_NBLOCKS,
			.state_bytes = 4096,
		};

		n = rdmae_msg_complete_encode(big, &c);
		put_msg("complete", n, true);
		/* v7, the external data path: no engine round, the VM said stopped. */
		n = rdmae_msg_complete_encode(big, &cx);
		put_msg("complete-external", n, true);
	}
	n = rdmae_msg_block_sums_encode(big, sums, FUZZ_NBLOCKS);
	put_msg("block-sums", n, true);
	n = rdmae_msg_page_sums_req_encode(big, 1, 0, 64);
	put_msg("page-sums-req", n, true);
	n = rdmae_msg_page_sums_encode(big, 1, 64, 4);
	for (i = 0; i < 4; i++)
		rdmae_msg_page_sums_put(big, i, 0x1111111111111111ull * (i + 1));
	put_msg("page-sums", n, true);
	n = rdmae_msg_commit_ok_encode(big, RDMAE_COMMIT_VERIFIED);
	put_msg("commit-ok", n, true);
	n = rdmae_msg_commit_fail_encode(big, -EIO, 0, 1234, "verify: block 'pc.ram': page 1234 "
					 "differs from the source's");
	put_msg("commit-fail", n, true);
	n = rdmae_msg_cancel_encode(big, -ECANCELED, "cancelled by the operator");
	put_msg("cancel", n, true);
	/* A header with a body length that does not match. */
	put_le32(big + 8, 1000);
	put_msg("bad-length", n, false);
}

static void size_opts(void)
{
	static const char *const seeds[][2] = {
		{ "mib", "64M" }, { "kib", "4k" }, { "hex", "0x1000" }, { "gib", "1G" },
		{ "plain", "12" }, { "trailing", "7x" },
	};
	size_t i;

	for (i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
		put("fuzz_size", seeds[i][0], seeds[i][1], strlen(seeds[i][1]));
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	root = argv[1];
	if (mkdir(root, 0755) && errno != EEXIST) {
		fprintf(stderr, "gen_corpus: mkdir %s: %s\n", root, strerror(errno));
		return 1;
	}
	neg_req();
	neg_resp();
	accept_pd();
	lane_pd();
	data_hdr();
	frag();
	auth();
	proto();
	size_opts();
	return failures ? 1 : 0;
}
