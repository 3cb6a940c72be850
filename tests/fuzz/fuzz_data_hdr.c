/* SPDX-License-Identifier: MIT */
/*
 * The data-transfer header (rdma/wire.c) that starts every message after
 * negotiation, on any lane: rdmae_data_hdr_decode on any bytes, with no
 * fragment limit and with the smallest one a negotiation allows. Whatever it
 * accepts has its payload inside the received bytes, at an aligned offset
 * past the header, within the limit, and re-encodes to the same header.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "rdmae_wire.h"

static void one(const uint8_t *data, size_t size, uint32_t max_frag)
{
	struct rdmae_data_hdr h;
	enum rdmae_wire_field f = RDMAE_F_COUNT;
	uint8_t a[RDMAE_DATA_HDR_SIZE];
	int ret;

	ret = rdmae_data_hdr_decode(data, size, max_frag, &h, &f);
	if (ret) {
		FUZZ_CHECK(ret == -EBADMSG || ret == -EPROTO);
		FUZZ_CHECK(f > RDMAE_F_NONE && f < RDMAE_F_COUNT);
		return;
	}
	FUZZ_CHECK(size >= RDMAE_DATA_HDR_SIZE);
	FUZZ_CHECK((h.flags & ~RDMAE_FLAGS_KNOWN) == 0 && h.credits_requested >= 1);
	if (h.data_length) {
		volatile uint8_t last;

		FUZZ_CHECK(h.data_offset >= RDMAE_DATA_HDR_SIZE && h.data_offset % 8 == 0);
		FUZZ_CHECK(h.data_offset <= size && h.data_length <= size - h.data_offset);
		/* The payload is readable to its last byte (ASan says if not). */
		last = data[h.data_offset + h.data_length - 1];
		(void)last;
	} else {
		FUZZ_CHECK(h.data_offset == 0);
	}
	if (max_frag)
		FUZZ_CHECK((uint64_t)h.data_length + h.remaining_data_length <= max_frag);
	/* Every field was read and the reserved one is 0: encoding gives back the header. */
	rdmae_data_hdr_encode(a, &h);
	FUZZ_CHECK(memcmp(a, data, sizeof(a)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(data, size, 0);
	one(data, size, RDMAE_MIN_FRAG_SIZE);
	return 0;
}
