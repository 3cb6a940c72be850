/* SPDX-License-Identifier: MIT */
/*
 * Pacing of bulk RDMA WRITEs on one connection. Pure arithmetic with no
 * locking and no clock of its own; the transport calls it under the
 * connection lock and passes the time in.
 *
 * Why: a control message (a keepalive answer, a fence, a credit grant)
 * queues behind every WRITE already posted on its lane. Bounding WRITEs by a
 * count of work requests ties the queue to the largest WRITE, not to the
 * link: 4 lanes x 128 x 1 MiB is 40 ms at 100 Gb/s but seconds on a slow or
 * congested link. So the bytes in flight are bounded by a budget derived
 * from what is measured: about twice the bandwidth-delay product, never less
 * than a floor of a few full-size WRITEs per lane (each lane needs one on
 * the wire and more ready behind it), never more than the WR count bound.
 *
 * Measured: the delivery rate (WRITE bytes completed per unit of time while
 * WRITEs were outstanding, over intervals of at least twice the base
 * latency and RDMAE_PACE_RATE_INTERVAL_NS; up at once, down slowly)
 * and the base latency (the flight time, doorbell to completion, of
 * signalled WRITEs that had the path nearly to themselves: little completed
 * during their flight and little is left in flight at completion; the minimum,
 * rising slowly). A WRITE behind a queue, or sharing the link with WRITEs
 * on other lanes, measures that traffic, not the path: taking it would let
 * the budget feed on the delay it causes. Until a base latency is measured
 * the budget stays at the floor, which on a data-centre path is already
 * above the bandwidth-delay product (4 x 4 lanes x 1 MiB = 16 MiB is 0.3 ms
 * at 400 Gb/s).
 */
#ifndef RDMAE_PACE_H
#define RDMAE_PACE_H

#include <stdbool.h>
#include <stdint.h>

/* Delivery-rate samples span at least this long (and twice the base latency). */
#define RDMAE_PACE_RATE_INTERVAL_NS 20000000ull
/* An empty pipe refilled within this is the writer reacting, not an idle link. */
#define RDMAE_PACE_IDLE_NS 1000000ull
/* Headroom over the bandwidth-delay product. */
#define RDMAE_PACE_GAIN 2

struct rdmae_pace {
	uint64_t inflight;		/* WRITE bytes posted, not yet known complete */
	uint64_t delivered;		/* WRITE bytes known complete, since creation */
	uint64_t max_inflight;		/* high-water mark of inflight */
	uint64_t floor;			/* the budget never goes below this */
	uint64_t cap;			/* ... nor above this */
	uint64_t budget;		/* the bound on inflight */
	double bw;			/* bytes/s; 0 until measured */
	uint64_t base_ns;		/* base latency; 0 until measured */
	uint64_t rate_t0_ns;		/* start of the current rate sample (0: none) */
	uint64_t rate_d0;		/* delivered at rate_t0_ns */
	uint64_t last_done_ns;		/* the last completion */
	uint64_t stalls;		/* times a writer waited for the budget */
	bool refill;			/* found full: wait for half to drain */
};

/* What a WRITE remembers from its post, for the sample at its completion. */
struct rdmae_pace_mark {
	uint64_t post_ns;		/* its doorbell */
	uint64_t delivered;		/* pace.delivered then */
	uint64_t len;
};

/* floor <= cap; both in bytes. The budget starts at floor. */
void rdmae_pace_init(struct rdmae_pace *p, uint64_t floor, uint64_t cap);

/*
 * May a WRITE of len bytes be posted now? Always when nothing is in flight;
 * once the budget was found full, not before half of it has drained.
 */
bool rdmae_pace_may_post(struct rdmae_pace *p, uint64_t len);

/*
 * A WRITE of len bytes is posted; now_ns is read only when the pipe was
 * empty (pass 0 otherwise). Returns the bytes in flight ahead of it.
 */
uint64_t rdmae_pace_on_post(struct rdmae_pace *p, uint64_t len, uint64_t now_ns);

/* len bytes of WRITE completed (any WR, signalled or not), retired at now_ns. */
void rdmae_pace_on_done(struct rdmae_pace *p, uint64_t len, uint64_t now_ns);

/* A signalled WRITE completed at now_ns: a latency sample, taken if it had the path alone. */
void rdmae_pace_sample(struct rdmae_pace *p, const struct rdmae_pace_mark *m, uint64_t now_ns);

/* Bytes that will never complete (QP destroyed, post failed). */
void rdmae_pace_forget(struct rdmae_pace *p, uint64_t len);

#endif
