/* SPDX-License-Identifier: MIT */
/* Pacing of bulk WRITEs: see rdmae_pace.h for the reasoning. */
#include "rdmae_pace.h"

void rdmae_pace_init(struct rdmae_pace *p, uint64_t floor, uint64_t cap)
{
	*p = (struct rdmae_pace){ 0 };
	if (cap < floor)
		cap = floor;
	p->floor = floor;
	p->cap = cap;
	p->budget = floor;
}

bool rdmae_pace_may_post(struct rdmae_pace *p, uint64_t len)
{
	if (p->inflight == 0) {
		p->refill = false;
		return true;
	}
	/*
	 * Once full, refill only when half the budget has drained: the writer
	 * then posts a batch behind few doorbells instead of waking and ringing
	 * once per completion, which costs CPU per byte (and on soft-RoCE,
	 * where the doorbell runs the NIC's own code, throughput).
	 */
	if (p->refill) {
		if (p->inflight * 2 > p->budget)
			return false;
		p->refill = false;
	}
	if (p->inflight + len <= p->budget)
		return true;
	p->refill = true;
	return false;
}

uint64_t rdmae_pace_on_post(struct rdmae_pace *p, uint64_t len, uint64_t now_ns)
{
	uint64_t ahead = p->inflight;

	/*
	 * The pipe was idle for longer than it takes a writer to react: a rate
	 * sample starts now, not when it last ran. A shorter gap is the writer
	 * refilling a pipe that drained at once (lanes share the link fairly,
	 * so the WRITEs in flight tend to finish together): the sample goes on.
	 */
	if (ahead == 0 && (!p->rate_t0_ns || now_ns > p->last_done_ns + RDMAE_PACE_IDLE_NS)) {
		p->rate_t0_ns = now_ns;
		p->rate_d0 = p->delivered;
	}
	p->inflight += len;
	if (p->inflight > p->max_inflight)
		p->max_inflight = p->inflight;
	return ahead;
}

static void update_budget(struct rdmae_pace *p)
{
	double b = (double)RDMAE_PACE_GAIN * p->bw * (double)p->base_ns / 1e9;

	if (b < (double)p->floor)
		p->budget = p->floor;
	else if (b > (double)p->cap)
		p->budget = p->cap;
	else
		p->budget = (uint64_t)b;
}

static uint64_t rate_interval(const struct rdmae_pace *p)
{
	return 2 * p->base_ns > RDMAE_PACE_RATE_INTERVAL_NS ? 2 * p->base_ns
							     : RDMAE_PACE_RATE_INTERVAL_NS;
}

void rdmae_pace_on_done(struct rdmae_pace *p, uint64_t len, uint64_t now_ns)
{
	if (len > p->inflight)
		len = p->inflight;
	p->inflight -= len;
	p->delivered += len;
	p->last_done_ns = now_ns;
	if (p->rate_t0_ns && now_ns >= p->rate_t0_ns + rate_interval(p)) {
		double rate = (double)(p->delivered - p->rate_d0) * 1e9 /
			      (double)(now_ns - p->rate_t0_ns);

		/*
		 * Up at once, so that a latency-bound start grows the budget each
		 * interval; down slowly, so that a lull of the writer is not taken
		 * for a slower link. The interval (20 ms at least) is long against
		 * the bursts in which completions are retired (one signalled WR
		 * retires the unsignalled ones before it, each lane at its own time).
		 */
		p->bw = rate > p->bw ? rate : p->bw + (rate - p->bw) / 4;
		p->rate_t0_ns = now_ns;
		p->rate_d0 = p->delivered;
		update_budget(p);
	}
}

void rdmae_pace_sample(struct rdmae_pace *p, const struct rdmae_pace_mark *m, uint64_t now_ns)
{
	uint64_t lat;

	if (now_ns <= m->post_ns)
		return;
	lat = now_ns - m->post_ns;
	/*
	 * Only a WRITE that had the path nearly to itself tells the base
	 * latency: little completed during its flight besides itself, and
	 * little is still in flight as it completes. One behind a queue, or
	 * sharing the link with WRITEs on other lanes (which the device serves
	 * in turn, so they all finish late and together), measures that
	 * traffic, and taking it would let the budget feed on the delay it
	 * causes.
	 */
	if (p->delivered - m->delivered <= 2 * m->len && p->inflight <= m->len) {
		/* Down at once, up slowly (a route change); one lucky sample cannot pin it. */
		if (!p->base_ns || lat < p->base_ns)
			p->base_ns = lat;
		else
			p->base_ns += (lat - p->base_ns) / 16;
	}
	update_budget(p);
}

void rdmae_pace_forget(struct rdmae_pace *p, uint64_t len)
{
	p->inflight -= len < p->inflight ? len : p->inflight;
	/* Whatever the sample measured, it was not delivery: start over. */
	p->rate_t0_ns = 0;
}
