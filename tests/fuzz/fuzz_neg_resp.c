/* SPDX-License-Identifier: MIT */
/*
 * The negotiate response (rdma/wire.c), as the client receives it on lane 0:
 * rdmae_neg_resp_decode on any bytes (the full 80-byte form and the 48-byte
 * refusal of a version-1 server), then the client's rules
 * (rdmae_negotiate_client) against the request a default client sends. What
 * the rules accept must stay inside what was asked for, a refusal must carry
 * an errno, and status_field, which comes straight off the wire, must name
 * safely.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "rdmae_wire.h"

/* A default client (rdmae_conn_opts_default) and the request it sends. */
static const struct rdmae_wire_limits client = {
	.min_version = RDMAE_VERSION, .max_version = RDMAE_VERSION, .credits = 255, .lanes = 4,
	.preferred_send_size = 8192, .max_receive_size = 8192,
	.max_fragmented_size = 32u << 20, .max_rw_size = 1u << 20,
};
static const struct rdmae_neg_req sent = {
	.min_version = RDMAE_VERSION, .max_version = RDMAE_VERSION, .credits_requested = 255,
	.credits_granted = 254, .lanes = 4, .auth = RDMAE_WIRE_AUTH_HMAC_SHA256,
	.preferred_send_size = 8192, .max_receive_size = 8192,
	.max_fragmented_size = 32u << 20, .max_rw_size = 1u << 20,
};

static void roundtrip(const struct rdmae_neg_resp *m)
{
	uint8_t a[RDMAE_NEG_RESP_SIZE], b[RDMAE_NEG_RESP_SIZE];
	struct rdmae_neg_resp again;
	enum rdmae_wire_field f;

	rdmae_neg_resp_encode(a, m);
	FUZZ_CHECK(rdmae_neg_resp_decode(a, sizeof(a), &again, &f) == 0);
	rdmae_neg_resp_encode(b, &again);
	FUZZ_CHECK(memcmp(a, b, sizeof(a)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rdmae_neg_resp resp;
	struct rdmae_negotiated n;
	enum rdmae_wire_field f = RDMAE_F_COUNT;
	int ret;

	ret = rdmae_neg_resp_decode(data, size, &resp, &f);
	if (ret) {
		FUZZ_CHECK(ret == -EBADMSG || ret == -EPROTO);
		FUZZ_CHECK(f > RDMAE_F_NONE && f < RDMAE_F_COUNT);
		return 0;
	}
	FUZZ_CHECK(size >= RDMAE_NEG_RESP_V1_SIZE);
	/* Shorter than 80 bytes is accepted only as a refusal. */
	FUZZ_CHECK(size >= RDMAE_NEG_RESP_SIZE || resp.status != 0);
	/* Never trusted: any value must name something printable. */
	FUZZ_CHECK(rdmae_wire_field_name((enum rdmae_wire_field)resp.status_field) != NULL);
	roundtrip(&resp);

	ret = rdmae_negotiate_client(&client, &sent, &resp, &n, &f);
	if (ret) {
		FUZZ_CHECK(ret < 0 && ret >= -4095);
		FUZZ_CHECK(f > RDMAE_F_NONE && f < RDMAE_F_COUNT);
		FUZZ_CHECK(strcmp(rdmae_wire_field_name(f), "unknown") != 0);
		return 0;
	}
	FUZZ_CHECK(resp.status == 0);
	FUZZ_CHECK(n.version >= client.min_version && n.version <= client.max_version);
	FUZZ_CHECK(n.lanes >= 1 && n.lanes <= sent.lanes);
	FUZZ_CHECK(n.send_credits >= RDMAE_MIN_INITIAL_GRANT &&
		   n.send_credits <= RDMAE_MAX_CREDITS);
	FUZZ_CHECK(n.peer_credits_target >= 1 && n.peer_credits_target <= RDMAE_MAX_CREDITS);
	FUZZ_CHECK(n.max_fragmented_size >= RDMAE_MIN_FRAG_SIZE &&
		   n.max_fragmented_size <= sent.max_fragmented_size);
	FUZZ_CHECK(n.max_rw_size >= RDMAE_MIN_RW_SIZE && n.max_rw_size <= sent.max_rw_size);
	FUZZ_CHECK(n.max_receive_size >= RDMAE_MIN_RECV_SIZE &&
		   n.max_receive_size <= client.max_receive_size);
	FUZZ_CHECK(n.max_send_size >= RDMAE_MIN_RECV_SIZE &&
		   n.max_send_size <= client.preferred_send_size);
	return 0;
}
