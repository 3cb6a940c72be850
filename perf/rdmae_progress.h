/* SPDX-License-Identifier: MIT */
/*
 * Progress display of rdmae-perf: a bar redrawn in place on a terminal
 * (stderr), plain lines every few seconds otherwise, so that a log is
 * readable and a console is not flooded. Table rows go through
 * rdmae_progress_printf, which takes the bar out of the way first; calls
 * may come from several threads.
 */
#ifndef RDMAE_PROGRESS_H
#define RDMAE_PROGRESS_H

#include <pthread.h>
#include <stdbool.h>

struct rdmae_progress {
	pthread_mutex_t lock;
	bool off;			/* --quiet */
	bool tty;			/* stderr is a terminal */
	bool drawn;			/* a bar is on the screen */
	double last;			/* when the last bar or line was shown */
};

void rdmae_progress_init(struct rdmae_progress *p, bool quiet);
void rdmae_progress_destroy(struct rdmae_progress *p);

/* frac in [0, 1], or negative for "unknown" (no bar, text only). */
void rdmae_progress_update(struct rdmae_progress *p, double frac, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Remove the bar (before the program's own output on stderr). */
void rdmae_progress_clear(struct rdmae_progress *p);
/* A line of output on stdout, with the bar out of the way. */
void rdmae_progress_printf(struct rdmae_progress *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
