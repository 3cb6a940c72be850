/* SPDX-License-Identifier: MIT */
#include "rdmae_converge.h"

#define NSEC_PER_SEC 1000000000ull

double rdmae_bandwidth(uint64_t bytes, uint64_t ns)
{
	if (!ns)
		return 0.0;
	return (double)bytes * (double)NSEC_PER_SEC / (double)ns;
}

uint64_t rdmae_expected_downtime_ns(uint64_t remaining, double bw)
{
	double ns;

	if (!remaining)
		return 0;
	/* !(bw > 0) also catches NaN. */
	if (!(bw > 0.0))
		return UINT64_MAX;
	ns = (double)remaining * (double)NSEC_PER_SEC / bw;
	/* 2^64 as a double: anything at or past it does not fit. */
	if (ns >= 18446744073709551616.0)
		return UINT64_MAX;
	/* Round up so that a limit is never met by truncation. */
	if (ns > (double)(uint64_t)ns)
		return (uint64_t)ns + 1;
	return (uint64_t)ns;
}

bool rdmae_converged(uint64_t remaining, double bw, uint64_t downtime_limit_ns)
{
	uint64_t d = rdmae_expected_downtime_ns(remaining, bw);

	if (d == UINT64_MAX)
		return false;
	return d <= downtime_limit_ns;
}

uint64_t rdmae_downtime_estimate_ns(const struct rdmae_downtime_model *m, uint64_t dirty_pages,
				    uint64_t dirty_bytes)
{
	double z = m->zero_ratio < 0.0 ? 0.0 : m->zero_ratio > 1.0 ? 1.0 : m->zero_ratio;
	double data = (double)dirty_bytes * (1.0 - z), zpages = (double)dirty_pages * z;
	double zbytes = (double)dirty_bytes * z, ns;

	if (!dirty_bytes && !m->state_bytes && !m->verify)
		return 0;
	if (!(m->data_bw > 0.0))
		return UINT64_MAX;
	/* Data, zero-run descriptors and device state share the link. */
	ns = (data + zpages * 16.0 + (double)m->state_bytes) * (double)NSEC_PER_SEC / m->data_bw;
	ns += 2.0 * (double)m->rtt_ns;
	if (m->mem_rate > 0.0) {
		/* Zero pages are read once on each side (the check, the fill). */
		double mem = 2.0 * zbytes;

		/* The source hashes the final data as it sends, the destination after the fence. */
		if (m->verify)
			mem += 2.0 * data + 8.0 * (double)m->sum_pages +
			       (double)m->peer_hash_bytes;
		ns += mem * (double)NSEC_PER_SEC / m->mem_rate;
	}
	if (ns >= 18446744073709551616.0)
		return UINT64_MAX;
	return (uint64_t)ns + 1;
}

void rdmae_ratelimit_init(struct rdmae_ratelimit *rl, uint64_t rate, uint64_t now_ns)
{
	rl->rate = rate;
	rl->start_ns = now_ns;
	rl->bytes = 0;
}

uint64_t rdmae_ratelimit_charge(struct rdmae_ratelimit *rl, uint64_t bytes, uint64_t now_ns)
{
	unsigned __int128 due;
	uint64_t elapsed;

	rl->bytes += bytes;
	if (!rl->rate)
		return 0;
	/*
	 * The charged bytes may not be on their way before start + bytes/rate:
	 * then the average since start is exactly rate. 128 bits because
	 * bytes * 1e9 passes 2^64 after 18 GB.
	 */
	due = ((unsigned __int128)rl->bytes * NSEC_PER_SEC + rl->rate - 1) / rl->rate;
	elapsed = now_ns > rl->start_ns ? now_ns - rl->start_ns : 0;
	if (due <= elapsed)
		return 0;
	due -= elapsed;
	return due > UINT64_MAX ? UINT64_MAX : (uint64_t)due;
}
