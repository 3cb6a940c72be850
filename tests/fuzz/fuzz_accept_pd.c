/* SPDX-License-Identifier: MIT */
/*
 * The server's accept private data of lane 0 (rdma/wire.c), as the client
 * receives it with ESTABLISHED: rdmae_accept_pd_decode on any bytes. Whatever
 * it accepts carries a known auth mode and re-encodes to bytes that decode
 * the same.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "rdmae_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rdmae_accept_pd p, again;
	enum rdmae_wire_field f = RDMAE_F_COUNT;
	uint8_t a[RDMAE_ACCEPT_PD_SIZE], b[RDMAE_ACCEPT_PD_SIZE];
	int ret;

	/* rdma_cm hands over no buffer at all when the peer sent no private data. */
	ret = rdmae_accept_pd_decode(size ? data : NULL, size, &p, &f);
	if (ret) {
		FUZZ_CHECK(ret == -EBADMSG || ret == -EPROTO);
		FUZZ_CHECK(f > RDMAE_F_NONE && f < RDMAE_F_COUNT);
		return 0;
	}
	FUZZ_CHECK(size >= RDMAE_ACCEPT_PD_SIZE);
	FUZZ_CHECK(p.auth == RDMAE_WIRE_AUTH_NONE || p.auth == RDMAE_WIRE_AUTH_HMAC_SHA256);
	FUZZ_CHECK(memcmp(p.nonce, data + 16, RDMAE_NONCE_SIZE) == 0);
	rdmae_accept_pd_encode(a, &p);
	FUZZ_CHECK(rdmae_accept_pd_decode(a, sizeof(a), &again, &f) == 0);
	rdmae_accept_pd_encode(b, &again);
	FUZZ_CHECK(memcmp(a, b, sizeof(a)) == 0);
	/* The first 48 bytes of what was accepted are exactly its encoding. */
	FUZZ_CHECK(memcmp(a, data, sizeof(a)) == 0);
	return 0;
}
