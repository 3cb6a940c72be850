/* SPDX-License-Identifier: MIT */
#include "rdmae_frag.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void rdmae_frag_next(size_t total, size_t sent, uint32_t max_payload,
		     uint32_t *len, uint32_t *remaining)
{
	size_t left = sent < total ? total - sent : 0;
	size_t n = left < max_payload ? left : max_payload;

	/* total is bounded by the negotiated max_fragmented_size, a uint32_t. */
	*len = (uint32_t)n;
	*remaining = (uint32_t)(left - n);
}

void rdmae_reasm_init(struct rdmae_reasm *r, uint32_t max)
{
	r->buf = NULL;
	r->total = 0;
	r->have = 0;
	r->max = max;
}

void rdmae_reasm_reset(struct rdmae_reasm *r)
{
	free(r->buf);
	r->buf = NULL;
	r->total = 0;
	r->have = 0;
}

static int fail(struct rdmae_reasm *r, int code)
{
	rdmae_reasm_reset(r);
	return code;
}

int rdmae_reasm_push(struct rdmae_reasm *r, const void *data, uint32_t len, uint32_t remaining,
		     void **msg, size_t *msg_len)
{
	*msg = NULL;
	*msg_len = 0;
	if (len == 0)
		return fail(r, -EINVAL);

	if (!r->buf) {
		/* The first fragment announces the whole size: allocate it once. */
		uint64_t total = (uint64_t)len + remaining;

		if (total > r->max)
			return fail(r, -EMSGSIZE);
		r->buf = malloc((size_t)total);
		if (!r->buf)
			return fail(r, -ENOMEM);
		r->total = (size_t)total;
		r->have = 0;
	} else {
		size_t left = r->total - r->have;

		/* Anything but an exact continuation means fragments were lost or mixed. */
		if (len > left || remaining != left - len)
			return fail(r, -EPROTO);
	}

	memcpy(r->buf + r->have, data, len);
	r->have += len;
	if (r->have < r->total)
		return 0;

	*msg = r->buf;
	*msg_len = r->total;
	r->buf = NULL;
	r->total = 0;
	r->have = 0;
	return 0;
}
