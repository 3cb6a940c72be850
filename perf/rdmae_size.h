/* SPDX-License-Identifier: MIT */
/*
 * Sizes on command lines (rdmae-perf and the test programs): a number with an
 * optional K, M or G suffix, in powers of 1024. Decimal, or hexadecimal after
 * 0x; a leading 0 does not make it octal.
 */
#ifndef RDMAE_SIZE_H
#define RDMAE_SIZE_H

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/*
 * The size at the start of s; *end (when not NULL) receives the first
 * character after the number and its suffix. What is not a size gives 0
 * with *end == s: a sign or blank first (strtoull would read "-1" as
 * 2^64 - 1), or a value that does not fit 64 bits, suffix included
 * (strtoull and the shift would wrap silently).
 */
static inline uint64_t rdmae_parse_size(const char *s, char **end)
{
	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
	unsigned int shift = 0;
	uint64_t v;
	char *e;

	if (hex ? !isxdigit((unsigned char)s[2]) : !isdigit((unsigned char)s[0]))
		goto bad;
	errno = 0;
	v = strtoull(s, &e, hex ? 16 : 10);
	if (errno == ERANGE)
		goto bad;
	switch (*e) {
	case 'G': case 'g': shift = 30; break;
	case 'M': case 'm': shift = 20; break;
	case 'K': case 'k': shift = 10; break;
	default: break;
	}
	if (shift && v > (UINT64_MAX >> shift))
		goto bad;
	if (shift)
		e++;
	if (end)
		*end = e;
	return v << shift;
bad:
	if (end)
		*end = (char *)(uintptr_t)s;
	return 0;
}

/* A whole argument as a size: false when any of it is not (then *out is untouched). */
static inline bool rdmae_size_arg(const char *s, uint64_t *out)
{
	char *end;
	uint64_t v = rdmae_parse_size(s, &end);

	if (end == s || *end)
		return false;
	*out = v;
	return true;
}

/*
 * A size option for a command line: the value, or a message naming prog and
 * the bad text on stderr and exit status 2.
 */
static inline uint64_t rdmae_size_opt(const char *prog, const char *s)
{
	uint64_t v;

	if (!rdmae_size_arg(s, &v)) {
		fprintf(stderr, "%s: '%s' is not a size (a number with an optional K, M or G)\n",
			prog, s);
		exit(2);
	}
	return v;
}

#endif
