/* SPDX-License-Identifier: MIT */
/*
 * The authentication messages (rdma/auth.c over rdma/wire.c), along the path
 * rdma/connect.c and rdma/negotiate.c take: the client decodes the server's
 * accept private data (bytes 0..55 of the input, as rdma_cm delivers it
 * padded), the server decodes a negotiate request (bytes 56..151) and checks
 * its mode and proof, answers with its proof, and the client decodes a
 * negotiate response (the rest) and checks the server's proof.
 *
 * Besides memory safety: a proof made with the key verifies, in its own role
 * only; the honest server's response to a request verifies at the client;
 * lane tokens are never 0 (0 means lane 0). A forged proof that verified
 * would be an HMAC collision, so any accepted fuzzed proof must be the one
 * computed from the same transcript.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "rdmae_auth.h"
#include "rdmae_wire.h"

#define PD_AREA		56	/* what rdma_cm delivers with an RC connect */
#define REQ_OFF		PD_AREA
#define RESP_OFF	(REQ_OFF + RDMAE_NEG_REQ_SIZE)

static const struct rdmae_wire_limits server = {
	.min_version = RDMAE_VERSION, .max_version = RDMAE_VERSION, .credits = 255, .lanes = 4,
	.preferred_send_size = 8192, .max_receive_size = 8192,
	.max_fragmented_size = 32u << 20, .max_rw_size = 1u << 20,
};

static struct rdmae_key key;

static size_t part(size_t size, size_t off, size_t len)
{
	if (size <= off)
		return 0;
	return size - off < len ? size - off : len;
}

static void lane_tokens(const uint8_t nc[RDMAE_NONCE_SIZE], const uint8_t ns[RDMAE_NONCE_SIZE])
{
	static const struct rdmae_key none;
	unsigned int lane;

	for (lane = 1; lane < RDMAE_MAX_LANES; lane++) {
		uint64_t t = rdmae_auth_lane_token(&key, nc, ns, lane);

		FUZZ_CHECK(t != 0);
		FUZZ_CHECK(rdmae_auth_token_equal(t, t));
		FUZZ_CHECK(rdmae_auth_lane_token(&none, nc, ns, lane) != 0);
	}
}

/* The server's side: on_request_locked (rdma/negotiate.c) with a key. Returns 0 when it accepts. */
static int server_side(const struct rdmae_neg_req *req, const uint8_t ns[RDMAE_NONCE_SIZE],
		       struct rdmae_neg_resp *resp)
{
	struct rdmae_negotiated out;
	enum rdmae_wire_field f;
	uint8_t proof[RDMAE_PROOF_SIZE];
	int ret;

	memset(resp, 0, sizeof(*resp));
	/* The right proof for this request verifies, and only as the client's. */
	FUZZ_CHECK(rdmae_auth_proof(&key, RDMAE_ROLE_CLIENT, req->nonce, ns, req, NULL, proof) == 0);
	FUZZ_CHECK(rdmae_auth_verify(&key, RDMAE_ROLE_CLIENT, req->nonce, ns, req, NULL,
				     proof) == 0);
	FUZZ_CHECK(rdmae_auth_verify(&key, RDMAE_ROLE_SERVER, req->nonce, ns, req, NULL,
				     proof) == -EACCES);
	if (req->auth != RDMAE_WIRE_AUTH_HMAC_SHA256)
		return -EACCES;
	ret = rdmae_auth_verify(&key, RDMAE_ROLE_CLIENT, req->nonce, ns, req, NULL, req->proof);
	FUZZ_CHECK(ret == 0 || ret == -EACCES);
	if (ret == 0)
		FUZZ_CHECK(memcmp(req->proof, proof, sizeof(proof)) == 0);
	/* The fuzzer cannot know the key: judge the rest of the request as if it had. */
	ret = rdmae_negotiate_server(&server, req, 255, resp, &out, &f);
	resp->auth = RDMAE_WIRE_AUTH_HMAC_SHA256;
	if (ret)
		return ret;
	FUZZ_CHECK(rdmae_auth_proof(&key, RDMAE_ROLE_SERVER, req->nonce, ns, req, resp,
				    resp->proof) == 0);
	return 0;
}

/* The client's side: decode the response and check the server's proof. */
static void client_side(const struct rdmae_neg_req *req, const uint8_t ns[RDMAE_NONCE_SIZE],
			const uint8_t *raw, size_t len)
{
	struct rdmae_neg_resp resp;
	enum rdmae_wire_field f;
	int ret;

	if (rdmae_neg_resp_decode(raw, len, &resp, &f))
		return;
	ret = rdmae_auth_verify(&key, RDMAE_ROLE_SERVER, req->nonce, ns, req, &resp, resp.proof);
	FUZZ_CHECK(ret == 0 || ret == -EACCES);
	if (ret == 0) {
		uint8_t want[RDMAE_PROOF_SIZE];

		FUZZ_CHECK(rdmae_auth_proof(&key, RDMAE_ROLE_SERVER, req->nonce, ns, req, &resp,
					    want) == 0);
		FUZZ_CHECK(memcmp(want, resp.proof, sizeof(want)) == 0);
	}
}

static void run(const uint8_t *data, size_t size)
{
	struct rdmae_accept_pd apd;
	struct rdmae_neg_req req;
	struct rdmae_neg_resp resp;
	enum rdmae_wire_field f;
	uint8_t t[RDMAE_AUTH_TRANSCRIPT_SIZE];
	uint8_t *part_buf;
	int ret;

	memset(&apd, 0, sizeof(apd));
	part_buf = fuzz_dup(data, part(size, 0, PD_AREA));
	ret = rdmae_accept_pd_decode(part_buf, part(size, 0, PD_AREA), &apd, &f);
	free(part_buf);
	if (ret)
		return;
	FUZZ_CHECK(apd.auth == RDMAE_WIRE_AUTH_NONE || apd.auth == RDMAE_WIRE_AUTH_HMAC_SHA256);
	part_buf = fuzz_dup(data + REQ_OFF, part(size, REQ_OFF, RDMAE_NEG_REQ_SIZE));
	ret = rdmae_neg_req_decode(part_buf, part(size, REQ_OFF, RDMAE_NEG_REQ_SIZE), &req, &f);
	free(part_buf);
	if (ret)
		return;
	lane_tokens(req.nonce, apd.nonce);
	rdmae_auth_transcript(t, RDMAE_ROLE_CLIENT, req.nonce, apd.nonce, &req, NULL);
	/* The transcript holds both nonces where 5.4 puts them. */
	FUZZ_CHECK(memcmp(t + RDMAE_AUTH_LABEL_SIZE, req.nonce, RDMAE_NONCE_SIZE) == 0);
	FUZZ_CHECK(memcmp(t + RDMAE_AUTH_LABEL_SIZE + RDMAE_NONCE_SIZE, apd.nonce,
			  RDMAE_NONCE_SIZE) == 0);
	/* Without a key there is no proof to make. */
	{
		static const struct rdmae_key none;
		uint8_t p[RDMAE_PROOF_SIZE];

		FUZZ_CHECK(rdmae_auth_proof(&none, RDMAE_ROLE_CLIENT, req.nonce, apd.nonce, &req,
					    NULL, p) == -EINVAL);
	}
	if (server_side(&req, apd.nonce, &resp) == 0) {
		uint8_t raw[RDMAE_NEG_RESP_SIZE];

		/* What the honest server sends, the client accepts. */
		rdmae_neg_resp_encode(raw, &resp);
		FUZZ_CHECK(rdmae_neg_resp_decode(raw, sizeof(raw), &resp, &f) == 0);
		FUZZ_CHECK(rdmae_auth_verify(&key, RDMAE_ROLE_SERVER, req.nonce, apd.nonce, &req,
					     &resp, resp.proof) == 0);
	}
	if (size > RESP_OFF) {
		part_buf = fuzz_dup(data + RESP_OFF, size - RESP_OFF);
		client_side(&req, apd.nonce, part_buf, size - RESP_OFF);
		free(part_buf);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!key.len) {
		/* Fixed: the fuzzer plays a peer that does not know it. */
		key.len = sizeof(FUZZ_AUTH_KEY) - 1;
		memcpy(key.bytes, FUZZ_AUTH_KEY, key.len);
	}
	run(data, size);
	return 0;
}
