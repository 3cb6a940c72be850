/* SPDX-License-Identifier: MIT */
/*
 * The negotiate request (rdma/wire.c), as the server receives it on lane 0:
 * rdmae_neg_req_decode on any bytes, then the server's rules
 * (rdmae_negotiate_server). What is accepted must re-encode to a request that
 * decodes the same; the response the server builds must pass its own client
 * decoder and, where the client's rules accept it too, both sides must agree
 * on every negotiated parameter (doc/protocol.md 5.3).
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "rdmae_wire.h"

/* The server of a default connection (rdmae_conn_opts_default). */
static const struct rdmae_wire_limits server = {
	.min_version = RDMAE_VERSION, .max_version = RDMAE_VERSION, .credits = 255, .lanes = 4,
	.preferred_send_size = 8192, .max_receive_size = 8192,
	.max_fragmented_size = 32u << 20, .max_rw_size = 1u << 20,
};

/* Decode, encode and decode again: the second trip must change nothing. */
static void roundtrip(const struct rdmae_neg_req *m)
{
	uint8_t a[RDMAE_NEG_REQ_SIZE], b[RDMAE_NEG_REQ_SIZE];
	struct rdmae_neg_req again;
	enum rdmae_wire_field f;

	rdmae_neg_req_encode(a, m);
	FUZZ_CHECK(rdmae_neg_req_decode(a, sizeof(a), &again, &f) == 0);
	rdmae_neg_req_encode(b, &again);
	FUZZ_CHECK(memcmp(a, b, sizeof(a)) == 0);
}

/* The client that sent req: its limits are what it asked for. */
static struct rdmae_wire_limits client_of(const struct rdmae_neg_req *req)
{
	struct rdmae_wire_limits l = {
		.min_version = req->min_version, .max_version = req->max_version,
		.credits = req->credits_requested, .lanes = req->lanes,
		.preferred_send_size = req->preferred_send_size,
		.max_receive_size = req->max_receive_size,
		.max_fragmented_size = req->max_fragmented_size, .max_rw_size = req->max_rw_size,
	};

	return l;
}

static void both_sides(const struct rdmae_neg_req *req)
{
	const uint16_t posted = 255;
	struct rdmae_neg_resp resp, dresp;
	struct rdmae_negotiated s, c;
	struct rdmae_wire_limits cl = client_of(req);
	uint8_t raw[RDMAE_NEG_RESP_SIZE];
	enum rdmae_wire_field f;
	int ret;

	ret = rdmae_negotiate_server(&server, req, posted, &resp, &s, &f);
	/* Success or refusal, the response goes out and must decode. */
	rdmae_neg_resp_encode(raw, &resp);
	FUZZ_CHECK(rdmae_neg_resp_decode(raw, sizeof(raw), &dresp, &f) == 0);
	FUZZ_CHECK(dresp.status == resp.status);
	if (ret) {
		FUZZ_CHECK(ret < 0 && resp.status == ret);
		FUZZ_CHECK(resp.status_field > RDMAE_F_NONE && resp.status_field < RDMAE_F_COUNT);
		/* The client reads a refusal as one, with the server's reason. */
		FUZZ_CHECK(rdmae_negotiate_client(&cl, req, &dresp, &c, &f) == ret);
		FUZZ_CHECK((uint32_t)f == resp.status_field);
		return;
	}
	FUZZ_CHECK(s.version >= req->min_version && s.version <= req->max_version);
	FUZZ_CHECK(s.version >= server.min_version && s.version <= server.max_version);
	FUZZ_CHECK(s.lanes >= 1 && s.lanes <= req->lanes && s.lanes <= server.lanes);
	FUZZ_CHECK(s.max_fragmented_size <= req->max_fragmented_size &&
		   s.max_fragmented_size <= server.max_fragmented_size);
	FUZZ_CHECK(s.max_rw_size <= req->max_rw_size && s.max_rw_size <= server.max_rw_size);
	FUZZ_CHECK(s.max_receive_size >= RDMAE_MIN_RECV_SIZE);
	FUZZ_CHECK(s.max_send_size <= req->max_receive_size);
	if (rdmae_negotiate_client(&cl, req, &dresp, &c, &f))
		return;
	FUZZ_CHECK(c.version == s.version && c.lanes == s.lanes);
	FUZZ_CHECK(c.max_fragmented_size == s.max_fragmented_size);
	FUZZ_CHECK(c.max_rw_size == s.max_rw_size);
	/* What one side sends the other can receive. */
	FUZZ_CHECK(s.max_send_size <= c.max_receive_size);
	FUZZ_CHECK(c.max_send_size <= s.max_receive_size);
	FUZZ_CHECK(s.send_credits == req->credits_granted && c.send_credits == posted);
	FUZZ_CHECK(s.peer_credits_target == req->credits_requested);
	FUZZ_CHECK(c.peer_credits_target == server.credits);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rdmae_neg_req req;
	enum rdmae_wire_field f = RDMAE_F_COUNT;
	int ret;

	memset(&req, 0, sizeof(req));
	ret = rdmae_neg_req_decode(data, size, &req, &f);
	if (ret) {
		FUZZ_CHECK(ret == -EBADMSG || ret == -EPROTO || ret == -EPROTONOSUPPORT);
		FUZZ_CHECK(f > RDMAE_F_NONE && f < RDMAE_F_COUNT);
		FUZZ_CHECK(strcmp(rdmae_wire_field_name(f), "unknown") != 0);
		return 0;
	}
	FUZZ_CHECK(f == RDMAE_F_NONE && size >= RDMAE_NEG_REQ_SIZE);
	FUZZ_CHECK(req.auth == RDMAE_WIRE_AUTH_NONE || req.auth == RDMAE_WIRE_AUTH_HMAC_SHA256);
	roundtrip(&req);
	both_sides(&req);
	return 0;
}
