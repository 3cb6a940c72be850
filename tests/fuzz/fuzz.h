/* SPDX-License-Identifier: MIT */
/*
 * Shared by the libFuzzer harnesses of tests/fuzz/ (doc/testing.md, "Fuzzing").
 * Each harness feeds one wire parser bytes it did not choose and checks what
 * the parser promises about what it accepts; a broken promise aborts, which
 * libFuzzer reports as a crash with the input that caused it.
 */
#ifndef RDMAE_FUZZ_H
#define RDMAE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Not assert(): the harnesses must check with NDEBUG too. */
#define FUZZ_CHECK(cond)                                                            \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                             \
			abort();                                                    \
		}                                                                   \
	} while (0)

/*
 * A copy of part of the input in a buffer of exactly n bytes, so that a parser
 * reading past the length it was given meets ASan's redzone rather than the
 * next bytes of the input; NULL for nothing, which faults on any read. Free
 * it with free().
 */
static inline uint8_t *fuzz_dup(const uint8_t *p, size_t n)
{
	uint8_t *d;

	if (!n)
		return NULL;
	d = malloc(n);
	FUZZ_CHECK(d != NULL);
	memcpy(d, p, n);
	return d;
}

/* The key fuzz_auth's server and client hold; the seed generator proves with it. */
#define FUZZ_AUTH_KEY "rdmae fuzz key, 32 bytes long!!!"

/* libFuzzer's entry point; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
