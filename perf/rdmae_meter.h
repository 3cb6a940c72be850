/* SPDX-License-Identifier: MIT */
/*
 * Progress display of rdmae-perf: a bar redrawn in place on a terminal
 * (stderr), plain lines every few seconds otherwise, so that a log is
 * readable and a console is not flooded. Table rows go through
 * rdmae_meter_printf, which takes the bar out of the way first; calls
 * may come from several threads.
 */
#ifndef RDMAE_METER_H
#define RDMAE_METER_H

#include <pthread.h>
#include <stdbool.h>

struct rdmae_meter {
	pthread_mutex_t lock;
	bool off;			/* --quiet */
	bool tty;			/* stderr is a terminal */
	bool drawn;			/* a bar is on the screen */
	double last;			/* when the last bar or line was shown */
};

void rdmae_meter_init(struct rdmae_meter *p, bool quiet);
void rdmae_meter_destroy(struct rdmae_meter *p);

/* frac in [0, 1], or negative for "unknown" (no bar, text only). */
void rdmae_meter_update(struct rdmae_meter *p, double frac, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Remove the bar (before the program's own output on stderr). */
void rdmae_meter_clear(struct rdmae_meter *p);
/* A line of output on stdout, with the bar out of the way. */
void rdmae_meter_printf(struct rdmae_meter *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
