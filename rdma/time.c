/* SPDX-License-Identifier: MIT */
/* The library's clock (rdmae_time.h) and the deadlines built on it. */
#include <time.h>

#include "rdmae_time.h"

uint64_t rdmae_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t rdmae_deadline_after(int ms)
{
	return ms < 0 ? 0 : rdmae_now_ns() + (uint64_t)ms * 1000000ull;
}

int rdmae_ms_left(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = rdmae_now_ns();
	return now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
}
