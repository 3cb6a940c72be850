/* SPDX-License-Identifier: MIT */
/*
 * Runs: the unit of bulk transfer. A run copies len bytes from offset
 * `local` of a local region to offset `remote` of the peer's region.
 */
#ifndef RDMAE_RUNS_H
#define RDMAE_RUNS_H

#include <stddef.h>
#include <stdint.h>

struct rdmae_run {
	uint64_t local;
	uint64_t remote;
	uint64_t len;
};

/*
 * Merge neighbours in place when both sides are contiguous
 * (a.local + a.len == b.local and a.remote + a.len == b.remote) and the
 * merged length stays within max_len (0 = no limit). Runs longer than max_len
 * are left as they are (the poster splits them). Zero-length runs are
 * dropped. Returns the new count.
 */
size_t rdmae_runs_coalesce(struct rdmae_run *runs, size_t n, uint64_t max_len);

/*
 * Cut the first piece off *r: at most max_len bytes, and never crossing a
 * multiple of `boundary` on the local side nor of `rboundary` on the remote
 * side (0 = no boundary; max_len 0 = no limit). The piece is returned and *r
 * advanced past it. r->len must be > 0.
 */
struct rdmae_run rdmae_run_take(struct rdmae_run *r, uint64_t max_len, uint64_t boundary,
				uint64_t rboundary);

#endif
