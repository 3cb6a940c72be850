/* SPDX-License-Identifier: MIT */
/*
 * rdmae-perf --plot: a migration's rounds drawn by gnuplot. The script is
 * written next to the image (FILE.gp, data inline) and then run, so a
 * machine without gnuplot (the bench VMs) still leaves a plot that any
 * other machine can draw with "gnuplot FILE.gp".
 */
#ifndef RDMAE_PLOT_H
#define RDMAE_PLOT_H

#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"

struct rdmae_plot_round {
	unsigned int round;
	uint64_t bytes;			/* written by RDMA in this round */
	double bandwidth;		/* bytes/s */
	double dirty_rate;		/* bytes/s dirtied during the previous round */
	int final;			/* the round with the guest stopped */
};

/*
 * Write png's script and run gnuplot on it. -ENOENT when gnuplot is not
 * installed (the script is there; err says so), another negative errno
 * when the script cannot be written or gnuplot fails.
 */
int rdmae_plot_rounds(const char *png, const char *title, const struct rdmae_plot_round *r,
		      size_t n, struct rdmae_err *err);

#endif
