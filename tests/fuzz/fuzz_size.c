/* SPDX-License-Identifier: MIT */
/*
 * Size options ("64M", "0x1000", "4k") as rdmae-perf and the verbs test
 * programs parse them (perf/rdmae_size.h). Not a wire parser, and not the
 * QEMU URI parser (qemu-plugin/patches: it needs QEMU's own headers and
 * utilities); the only option-string parser this tree builds without QEMU.
 *
 * The input, NUL-terminated, is parsed whole: *end must stay inside the
 * string, and a plain decimal number without suffix must come back as itself.
 */
#include <ctype.h>
#include <string.h>

#include "rdmae_size.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), *end = NULL;
	uint64_t v;
	size_t i;
	int digits = 1;

	FUZZ_CHECK(s != NULL);
	memcpy(s, data, size);
	s[size] = '\0';
	v = rdmae_parse_size(s, &end);
	FUZZ_CHECK(end >= s && end <= s + strlen(s));
	/* Short decimal numbers (no wrap possible): the value is the number. */
	for (i = 0; i < size; i++)
		digits &= isdigit((unsigned char)s[i]) != 0;
	if (digits && size && size <= 18 && s[0] != '0') {
		uint64_t want = 0;

		for (i = 0; i < size; i++)
			want = want * 10 + (uint64_t)(s[i] - '0');
		FUZZ_CHECK(v == want && end == s + size);
	}
	free(s);
	return 0;
}
