/* SPDX-License-Identifier: MIT */
#include "rdmae_runs.h"

/* Would a followed by b form one run of at most max_len bytes (0 = unbounded)? */
static int mergeable(const struct rdmae_run *a, const struct rdmae_run *b, uint64_t max_len)
{
	/* Compare by difference so that runs ending at the top of the space cannot wrap. */
	if (b->local < a->local || b->local - a->local != a->len)
		return 0;
	if (b->remote < a->remote || b->remote - a->remote != a->len)
		return 0;
	if (max_len == 0)
		return a->len <= UINT64_MAX - b->len;
	return a->len <= max_len && b->len <= max_len - a->len;
}

size_t rdmae_runs_coalesce(struct rdmae_run *runs, size_t n, uint64_t max_len)
{
	size_t out = 0;

	for (size_t i = 0; i < n; i++) {
		if (runs[i].len == 0)
			continue;
		if (out > 0 && mergeable(&runs[out - 1], &runs[i], max_len)) {
			runs[out - 1].len += runs[i].len;
			continue;
		}
		if (out != i)
			runs[out] = runs[i];
		out++;
	}
	return out;
}

/* Bytes from off up to the next multiple of boundary (boundary 0 = none). */
static uint64_t to_boundary(uint64_t off, uint64_t boundary, uint64_t n)
{
	uint64_t room;

	if (boundary == 0)
		return n;
	room = boundary - off % boundary;
	return room < n ? room : n;
}

struct rdmae_run rdmae_run_take(struct rdmae_run *r, uint64_t max_len, uint64_t boundary,
				uint64_t rboundary)
{
	struct rdmae_run piece = *r;
	uint64_t n = r->len;

	/* max_len 0 would return empty pieces for ever; treat it as no limit. */
	if (max_len != 0 && n > max_len)
		n = max_len;
	n = to_boundary(r->local, boundary, n);
	n = to_boundary(r->remote, rboundary, n);

	piece.len = n;
	r->local += n;
	r->remote += n;
	r->len -= n;
	return piece;
}
