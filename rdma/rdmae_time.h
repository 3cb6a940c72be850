/* SPDX-License-Identifier: MIT */
/*
 * The one clock of the library: CLOCK_MONOTONIC in nanoseconds, for
 * deadlines, keepalive and statistics, shared by the transport and the
 * engine so their figures are on the same time base.
 */
#ifndef RDMAE_TIME_H
#define RDMAE_TIME_H

#include <stdint.h>

uint64_t rdmae_now_ns(void);
/* now + ms as a deadline for rdmae_conn_wait_locked; ms < 0 gives 0 (none). */
uint64_t rdmae_deadline_after(int ms);
/* ms until deadline, rounded up, for poll(): -1 with no deadline (0), 0 once it has passed. */
int rdmae_ms_left(uint64_t deadline);

#endif
