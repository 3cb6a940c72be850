/* SPDX-License-Identifier: MIT */
/*
 * Sizes on command lines (rdmae-perf and the test programs): a number with an
 * optional K, M or G suffix, in powers of 1024.
 */
#ifndef RDMAE_SIZE_H
#define RDMAE_SIZE_H

#include <stdint.h>
#include <stdlib.h>

/* *end (when not NULL) receives the first character after the number and its suffix. */
static inline uint64_t rdmae_parse_size(const char *s, char **end)
{
	char *e;
	uint64_t v = strtoull(s, &e, 0);
	unsigned int shift = 0;

	switch (*e) {
	case 'G': case 'g': shift = 30; break;
	case 'M': case 'm': shift = 20; break;
	case 'K': case 'k': shift = 10; break;
	default: break;
	}
	if (shift)
		e++;
	if (end)
		*end = e;
	return v << shift;
}

#endif
