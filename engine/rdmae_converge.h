/* SPDX-License-Identifier: MIT */
/*
 * Convergence math and the bandwidth cap. Pure functions of numbers and
 * times (nanoseconds), so they are tested without a clock.
 */
#ifndef RDMAE_CONVERGE_H
#define RDMAE_CONVERGE_H

#include <stdbool.h>
#include <stdint.h>

/* Bandwidth of bytes moved in ns nanoseconds, bytes per second (0 when ns is 0). */
double rdmae_bandwidth(uint64_t bytes, uint64_t ns);

/* Expected downtime of moving remaining bytes at bw bytes/s, in ns; UINT64_MAX when bw is 0 and bytes > 0. */
uint64_t rdmae_expected_downtime_ns(uint64_t remaining, double bw);

/* Does the expected downtime fit the limit? */
bool rdmae_converged(uint64_t remaining, double bw, uint64_t downtime_limit_ns);

/*
 * What the stop costs, from figures measured in the recent rounds: the
 * final round's data bytes at the recent data bandwidth, zero pages as
 * 16-byte descriptors plus a read of the page on each side, the device
 * state, the hashing left for the stop (the final round's data pages on
 * both sides, then one digest over every page sum), and two round trips
 * (the final round's fence and ROUND_ACK, COMPLETE and COMMIT_OK).
 */
struct rdmae_downtime_model {
	double data_bw;			/* bytes/s of WRITE data, recent rounds; 0 = unknown */
	double mem_rate;		/* bytes/s hashed (a read pass); 0 = not verifying/unknown */
	double zero_ratio;		/* share of dirty pages that were zero, recent rounds */
	uint64_t rtt_ns;		/* a round's fence-to-ROUND_ACK wait, recent minimum */
	uint64_t state_bytes;		/* device state expected at the stop */
	uint64_t sum_pages;		/* pages whose sums are digested at commit; 0 = no verify */
	uint64_t peer_hash_bytes;	/* the destination's hashing left from earlier rounds */
	bool verify;
};

/* Expected downtime in ns; UINT64_MAX while the data bandwidth is unknown. */
uint64_t rdmae_downtime_estimate_ns(const struct rdmae_downtime_model *m, uint64_t dirty_pages,
				    uint64_t dirty_bytes);

/*
 * Bandwidth cap. Bytes are charged as they are posted; the limiter says how
 * long to wait before the next post so that the average since start never
 * exceeds rate bytes/s. rate 0 means no cap.
 */
struct rdmae_ratelimit {
	uint64_t rate;		/* bytes per second, 0 = unlimited */
	uint64_t start_ns;
	uint64_t bytes;		/* charged since start_ns */
};

void rdmae_ratelimit_init(struct rdmae_ratelimit *rl, uint64_t rate, uint64_t now_ns);
/* Charge bytes and return how many ns to sleep before sending more (0 = go on). */
uint64_t rdmae_ratelimit_charge(struct rdmae_ratelimit *rl, uint64_t bytes, uint64_t now_ns);

#endif
