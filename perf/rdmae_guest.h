/* SPDX-License-Identifier: MIT */
/*
 * A synthetic guest for migrations without QEMU: rdmae-perf migrate and the
 * bench's test driver tests/verbs/rdmae_mig use the same one.
 *
 * The guest is two RAM blocks ("pc.ram", 15/16 of the size, and
 * "vga.vram", 1/16, as QEMU names them) and dirtier threads that write
 * pages at a set rate, logging each write in a dirty bitmap (as KVM's dirty
 * log would) and bumping the page's version. A page's content is a pure
 * function of (block, page, version), version 0 being a zero page, so the
 * destination can rebuild every page from the version table alone (sent as
 * the device state) and compare byte for byte: a check that does not rely
 * on the engine's own checksums.
 */
#ifndef RDMAE_GUEST_H
#define RDMAE_GUEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_engine.h"
#include "rdmae_err.h"

#define RDMAE_GUEST_BLOCKS 2
#define RDMAE_GUEST_PAGE 4096u
#define RDMAE_GUEST_MAX_DIRTIERS 16
/* The device state starts with this word; see rdmae_guest_state_header. */
#define RDMAE_GUEST_STATE_MAGIC 0x53474d52u

enum rdmae_guest_mem {
	RDMAE_GUEST_SMALL = 0,		/* 4 KiB pages */
	RDMAE_GUEST_HUGE,		/* huge pages or fail; the blocks say so (the
					 * destination must match) */
	RDMAE_GUEST_HUGE_IF_RESERVED,	/* huge pages when enough are free, else small;
					 * not required of the destination */
};

enum rdmae_dirty_pattern {
	RDMAE_DIRTY_UNIFORM = 0,	/* any page, 1 write in 16 to vga.vram */
	RDMAE_DIRTY_HOTSET,		/* pages of the first hot_bytes of pc.ram */
	RDMAE_DIRTY_SEQUENTIAL,		/* every page in turn, pc.ram then vga.vram */
};

struct rdmae_guest_opts {
	unsigned int id;		/* seeds the dirtiers; several guests differ */
	uint64_t size;			/* both blocks together */
	const char *name0;		/* pc.ram's name instead (a pre-flight mismatch) */
	bool fill;			/* source: initial contents, 1 page in 4 zero */
	enum rdmae_guest_mem mem;
	int numa_node;			/* memory and dirtiers on this node; -1 = no binding */
};

struct rdmae_guest_block {
	const char *name;
	uint8_t *mem;
	size_t len;			/* bytes of guest RAM (a multiple of the page) */
	size_t map_len;			/* bytes mapped (a multiple of the huge page) */
	bool huge;			/* mem is on huge pages */
	size_t npages;
	_Atomic uint64_t *dirty;	/* written by the dirtiers, harvested by the migration */
	uint32_t *ver;			/* page versions; page p is written by one dirtier only */
	uint64_t *round;		/* the harvested bitmap of the current round */
};

struct rdmae_dirtier_opts {
	double rate;			/* bytes/s, all threads together; <= 0: idle guest */
	unsigned int threads;		/* 0 = 1 */
	enum rdmae_dirty_pattern pattern;
	uint64_t hot_bytes;		/* HOTSET: size of the hot set; 0 = 1/8 of pc.ram */
};

struct rdmae_guest;

struct rdmae_dirtier {
	struct rdmae_guest *g;
	unsigned int idx;
	pthread_t th;
	uint64_t rng;
	uint64_t cursor;		/* SEQUENTIAL: next page index over both blocks */
};

struct rdmae_guest {
	struct rdmae_guest_opts o;
	bool huge;			/* the blocks must be on huge pages (RDMAE_GUEST_HUGE) */
	struct rdmae_guest_block b[RDMAE_GUEST_BLOCKS];
	struct rdmae_dirtier_opts d;
	struct rdmae_dirtier th[RDMAE_GUEST_MAX_DIRTIERS];
	unsigned int running;		/* dirtier threads started */
	atomic_bool stop;
	atomic_uint_fast64_t writes;	/* page writes, all dirtiers */
};

/* Map (and with o->fill, fill) the blocks. err names the block on failure. */
int rdmae_guest_init(struct rdmae_guest *g, const struct rdmae_guest_opts *o,
		     struct rdmae_err *err);
/* Stops the dirtiers and unmaps; safe on a guest whose init failed. */
void rdmae_guest_free(struct rdmae_guest *g);

/* Start the dirtiers (none for an idle guest). */
int rdmae_guest_start(struct rdmae_guest *g, const struct rdmae_dirtier_opts *d,
		      struct rdmae_err *err);
/* Stop and join the dirtiers: the guest's "vCPUs" are paused. */
void rdmae_guest_pause(struct rdmae_guest *g);
bool rdmae_guest_running(const struct rdmae_guest *g);
/* CPU time the running dirtiers have used so far, ns (the guest's, not the migration's). */
uint64_t rdmae_guest_cpu_ns(const struct rdmae_guest *g);

enum rdmae_harvest {
	RDMAE_HARVEST_ALL,		/* every page: the first round */
	RDMAE_HARVEST_REPLACE,		/* the log since the last harvest */
	RDMAE_HARVEST_OR,		/* add the log to the round's bitmap (the final round) */
};

/* Take the dirty log into each block's round bitmap; words are swapped for zero as KVM does. */
void rdmae_guest_harvest(struct rdmae_guest *g, enum rdmae_harvest how);

/* The blocks as the engine wants them, and the round bitmaps in the same order. */
void rdmae_guest_blocks(const struct rdmae_guest *g, struct rdmae_block *out);
void rdmae_guest_bitmaps(const struct rdmae_guest *g, const uint64_t **out);

/* A hash of all guest memory (to show the source's memory was left alone). */
uint64_t rdmae_guest_sum(const struct rdmae_guest *g);

/*
 * Device state: a header of 2 + RDMAE_GUEST_BLOCKS words (magic, block
 * count, each block's page count), then each block's version table
 * (b[i].ver, npages words). state_len is the whole length.
 */
size_t rdmae_guest_state_len(const struct rdmae_guest *g);
void rdmae_guest_state_header(const struct rdmae_guest *g, uint32_t hdr[2 + RDMAE_GUEST_BLOCKS]);

struct rdmae_guest_check {
	uint64_t pages;			/* pages compared */
	uint64_t zero_pages;		/* of which version 0 */
	uint64_t bytes;			/* bytes compared */
};

/*
 * Destination: rebuild every page from the device state and compare it
 * with the guest's memory, byte for byte. -EILSEQ with err naming the
 * block, page and byte at the first difference, or the state's fault.
 */
int rdmae_guest_verify(const struct rdmae_guest *g, const void *state, size_t len,
		       struct rdmae_guest_check *out, struct rdmae_err *err);

const char *rdmae_dirty_pattern_name(enum rdmae_dirty_pattern p);
/* 0 and *out set, or -EINVAL for a name that is not a pattern. */
int rdmae_dirty_pattern_parse(const char *s, enum rdmae_dirty_pattern *out);

#endif
