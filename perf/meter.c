/* SPDX-License-Identifier: MIT */
/* rdmae-perf's progress meter (rdmae_meter.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rdmae_perf.h"
#include "rdmae_meter.h"

#define BAR_WIDTH 30
/* A terminal is redrawn at most this often; a log gets a line this often. */
#define TTY_EVERY_S 0.1
#define PLAIN_EVERY_S 5.0

void rdmae_meter_init(struct rdmae_meter *p, bool quiet)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	p->off = quiet;
	p->tty = isatty(STDERR_FILENO) == 1;
	p->last = rdmae_perf_now();
}

void rdmae_meter_destroy(struct rdmae_meter *p)
{
	rdmae_meter_clear(p);
	pthread_mutex_destroy(&p->lock);
}

static void clear_locked(struct rdmae_meter *p)
{
	if (!p->drawn)
		return;
	/* Carriage return and erase to the end of the line. */
	fputs("\r\033[K", stderr);
	fflush(stderr);
	p->drawn = false;
}

void rdmae_meter_update(struct rdmae_meter *p, double frac, const char *fmt, ...)
{
	char text[160];
	double now = rdmae_perf_now();
	va_list ap;

	if (p->off)
		return;
	pthread_mutex_lock(&p->lock);
	if (now - p->last < (p->tty ? TTY_EVERY_S : PLAIN_EVERY_S)) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->last = now;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (frac > 1)
		frac = 1;
	if (!p->tty) {
		if (frac >= 0)
			fprintf(stderr, "progress: %s (%.0f%%)\n", text, frac * 100);
		else
			fprintf(stderr, "progress: %s\n", text);
		fflush(stderr);
		pthread_mutex_unlock(&p->lock);
		return;
	}
	if (frac >= 0) {
		char bar[BAR_WIDTH + 1];
		int i, fill = (int)(frac * BAR_WIDTH + 0.5);

		for (i = 0; i < BAR_WIDTH; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[BAR_WIDTH] = 0;
		fprintf(stderr, "\r\033[K[%s] %3.0f%% %s", bar, frac * 100, text);
	} else {
		fprintf(stderr, "\r\033[K%s", text);
	}
	fflush(stderr);
	p->drawn = true;
	pthread_mutex_unlock(&p->lock);
}

void rdmae_meter_clear(struct rdmae_meter *p)
{
	pthread_mutex_lock(&p->lock);
	clear_locked(p);
	pthread_mutex_unlock(&p->lock);
}

void rdmae_meter_printf(struct rdmae_meter *p, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&p->lock);
	clear_locked(p);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	/* On a terminal the next update redraws at once rather than leave no bar. */
	if (p->tty)
		p->last = 0;
	pthread_mutex_unlock(&p->lock);
}
