/* SPDX-License-Identifier: MIT */
/*
 * The lane private data of a connect request (rdma/wire.c), as the listener
 * receives it (rdma/listen.c, listener_event): rdmae_lane_pd_decode on any
 * bytes, of any delivered length (56 on RC, padded; exact on iWARP).
 * Whatever it accepts names a lane below 16, carries a token exactly when
 * the lane is not 0, and re-encodes to the first 16 bytes it came from.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "rdmae_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rdmae_lane_pd p;
	enum rdmae_wire_field f = RDMAE_F_COUNT;
	uint8_t a[RDMAE_LANE_PD_SIZE];
	int ret;

	ret = rdmae_lane_pd_decode(size ? data : NULL, size, &p, &f);
	if (ret) {
		FUZZ_CHECK(ret == -EBADMSG || ret == -EPROTO);
		FUZZ_CHECK(f == RDMAE_F_LENGTH || f == RDMAE_F_MAGIC || f == RDMAE_F_LANES);
		return 0;
	}
	FUZZ_CHECK(size >= RDMAE_LANE_PD_SIZE);
	FUZZ_CHECK(p.lane < RDMAE_MAX_LANES);
	FUZZ_CHECK((p.lane == 0) == (p.conn_token == 0));
	rdmae_lane_pd_encode(a, &p);
	FUZZ_CHECK(memcmp(a, data, sizeof(a)) == 0);
	return 0;
}
