/* SPDX-License-Identifier: MIT */
/*
 * The engine's CPU cost per dirty page on the save path, for callgrind:
 * from the dirty bitmap to the RDMA WRITE handed to the QP, with the verbs
 * stubbed (make bench-callgrind; doc/performance.md).
 *
 * It includes the engine's rounds.c, so that the source's own walk
 * (walk_block: rdmae_dirty_walk, on_data, flush_data, rdmae_write, the lane's
 * send queue and doorbell) runs exactly as in a migration, on a connection
 * built by the real rdmae_lane_create over stub objects (stub_verbs.c):
 *   - ibv_post_send/ibv_post_recv are inline calls through the QP's context
 *     ops: the stub post_send counts the WRs and completes every signalled
 *     one at once through its rdmae_cqe, as the progress thread would;
 *   - ibv_reg_mr, ibv_reg_mr_iova2, ibv_dereg_mr and rdma_create_qp are
 *     replaced at link time (-Wl,--wrap=...).
 * The page hashing that verification adds (on by default) is measured on its
 * own (bench_hash), as it costs per byte, not per page.
 *
 *   pagecost PATTERN [MIB [ROUNDS [LANES]]]
 *     PATTERN: dense | alternate | sparse64 | random10 | hash
 * Prints "pagecost: PATTERN pages P rounds R runs N wrs W ...". Run it under
 *   valgrind --tool=callgrind --toggle-collect=bench_walk (or bench_hash):
 * the instructions collected divided by P x R are the cost per dirty page.
 */
/*
 * rounds.c's own symbols come from here, so the linker never takes its copy
 * in the library; the rest of the session (session.c) comes from the library.
 */
#include "../../engine/rounds.c" /* NOLINT(bugprone-suspicious-include): white-box benchmark */

#include <stdio.h>

#include "stub_verbs.h"

#define PAGE 4096u

static void fill_bitmap(uint64_t *bm, size_t npages, const char *pattern)
{
	size_t i, words = rdmae_bitmap_words(npages);
	uint64_t x = 88172645463325252ull;

	memset(bm, 0, words * sizeof(*bm));
	for (i = 0; i < npages; i++) {
		bool set;

		if (!strcmp(pattern, "alternate"))
			set = i % 2 == 0;
		else if (!strcmp(pattern, "sparse64"))
			set = i % 64 == 0;
		else if (!strcmp(pattern, "random10")) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			set = x % 10 == 0;
		} else
			set = true;
		if (set)
			bm[i / RDMAE_BITS_PER_WORD] |= 1ull << (i % RDMAE_BITS_PER_WORD);
	}
}

/* One round of the source's walk over a block: bitmap to posted WRITEs. */
__attribute__((noinline)) int bench_walk(struct rdmae_session *s, const uint64_t *bm,
					 unsigned int round, struct rdmae_err *err);
__attribute__((noinline)) int bench_walk(struct rdmae_session *s, const uint64_t *bm,
					 unsigned int round, struct rdmae_err *err)
{
	struct round_ctx rctx = { .s = s, .err = err, .round = round };

	rdmae_ratelimit_init(&rctx.rl, atomic_load(&s->max_bw), rdmae_now_ns());
	rctx.batch_cap = batch_cap(rctx.rl.rate, s->blk[0].b.page_size);
	return walk_block(&rctx, bm);
}

/* What verification adds on the source per dirty page: hashing it (hash_batch). */
__attribute__((noinline)) void bench_hash(struct rdmae_pagesums *ps, const void *base,
					  const uint64_t *bm, uint64_t npages);
__attribute__((noinline)) void bench_hash(struct rdmae_pagesums *ps, const void *base,
					  const uint64_t *bm, uint64_t npages)
{
	size_t pos = 0, start, len;

	while (rdmae_bitmap_next_run(bm, npages, &pos, &start, &len))
		rdmae_pagesums_hash(ps, base, start, len);
}

int main(int argc, char **argv)
{
	const char *pattern = argc > 1 ? argv[1] : "dense";
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
	unsigned int rounds = argc > 3 ? (unsigned int)strtoul(argv[3], NULL, 10) : 4;
	unsigned int lanes = argc > 4 ? (unsigned int)strtoul(argv[4], NULL, 10) : 4;
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .page_size = PAGE };
	struct rdmae_err err = { 0 };
	struct rdmae_conn *conn;
	struct rdmae_session *s;
	struct rdmae_bufdesc *descs;
	struct piece lp = { 0 }, rp = { 0 };
	uint64_t advertised;
	bool hash = !strcmp(pattern, "hash");
	size_t len, npages, ndescs, i;
	uint64_t *bm, dirty, wrs, doorbells, bytes;
	uint8_t *mem;
	unsigned int r;
	int rc = 1;

	if (!mib || !rounds || !lanes || lanes > RDMAE_MAX_LANES) {
		fprintf(stderr, "usage: pagecost dense|alternate|sparse64|random10|hash [MIB [ROUNDS [LANES]]]\n");
		return 2;
	}
	len = mib << 20;
	npages = len / PAGE;
	mem = aligned_alloc(PAGE, len);
	bm = calloc(rdmae_bitmap_words(npages), sizeof(*bm));
	ndescs = (len + RDMAE_DESC_SPAN - 1) / RDMAE_DESC_SPAN;
	descs = calloc(ndescs, sizeof(*descs));
	s = calloc(1, sizeof(*s));
	if (!mem || !bm || !descs || !s) {
		fprintf(stderr, "pagecost: out of memory\n");
		goto out;
	}
	/* Non-zero pages: zero detection stops at the first word, as for most guest pages. */
	for (i = 0; i < len; i += sizeof(uint64_t))
		*(uint64_t *)(void *)(mem + i) = i | 1;
	fill_bitmap(bm, npages, hash ? "dense" : pattern);
	dirty = rdmae_bitmap_count(bm, npages);

	conn = stub_conn_create(lanes, &err);
	if (!conn) {
		fprintf(stderr, "pagecost: %s\n", err.msg);
		goto out;
	}
	s->role = RDMAE_SOURCE;
	s->conn = conn;
	rdmae_session_opts_default(&s->o);
	s->o.no_verify = true;
	s->nblocks = 1;
	s->blk = calloc(1, sizeof(*s->blk));
	s->runs = calloc(RUN_BATCH, sizeof(*s->runs));
	s->zruns = calloc(ZERO_BATCH, sizeof(*s->zruns));
	s->zmsg = malloc(rdmae_msg_zero_runs_size(ZERO_BATCH));
	if (!s->blk || !s->runs || !s->zruns || !s->zmsg) {
		fprintf(stderr, "pagecost: out of memory\n");
		goto out;
	}
	s->progress_ns = UINT64_MAX / 2;
	s->last_send_ns = rdmae_now_ns();
	s->blk[0].b = (struct rdmae_block){ .name = "pc.ram", .host = mem, .len = len,
					    .page_size = PAGE };
	s->blk[0].npages = npages;
	for (i = 0; i < ndescs; i++) {
		uint64_t off = (uint64_t)i * RDMAE_DESC_SPAN;

		descs[i].offset = 0x7f0000000000ull + off;
		descs[i].token = 7;
		descs[i].length = (uint32_t)(len - off < RDMAE_DESC_SPAN ? len - off : RDMAE_DESC_SPAN);
	}
	/* One piece each side, the whole block: the walk's cost, not the pieces'. */
	rp = (struct piece){ .len = len, .descs = descs,
			     .remote = { .descs = descs, .ndescs = ndescs, .len = len } };
	lp.len = len;
	advertised = len;
	s->advertised = &advertised;
	s->blk[0].loc = &lp;
	s->blk[0].nloc = 1;
	s->blk[0].rem = &rp;
	s->blk[0].nrem = 1;
	if (rdmae_region_create(&lp.region, conn, mem, len, &ro, &err)) {
		fprintf(stderr, "pagecost: %s\n", err.msg);
		goto out;
	}
	s->blk[0].nready = 1;

	if (hash) {
		struct rdmae_pagesums ps;

		if (rdmae_pagesums_init(&ps, npages, PAGE, &err)) {
			fprintf(stderr, "pagecost: %s\n", err.msg);
			goto out;
		}
		for (r = 0; r < rounds; r++)
			bench_hash(&ps, mem, bm, npages);
		rdmae_pagesums_free(&ps);
	} else {
		for (r = 0; r < rounds; r++) {
			if (bench_walk(s, bm, r + 1, &err)) {
				fprintf(stderr, "pagecost: round %u: %s\n", r + 1, err.msg);
				goto out;
			}
		}
	}
	stub_counts(&wrs, &doorbells, &bytes);
	printf("pagecost: %s pages %" PRIu64 " rounds %u lanes %u wrs %" PRIu64 " doorbells %" PRIu64
	       " bytes %" PRIu64 "\n", pattern, dirty, rounds, lanes, wrs, doorbells, bytes);
	if (!hash && bytes != dirty * PAGE * rounds) {
		fprintf(stderr, "pagecost: posted %" PRIu64 " bytes, want %" PRIu64 "\n", bytes,
			dirty * PAGE * rounds);
		goto out;
	}
	rc = 0;
out:
	if (s && s->blk) {
		rdmae_region_destroy(lp.region);
		free(s->blk);
	}
	if (s) {
		free(s->runs);
		free(s->zruns);
		free(s->zmsg);
	}
	free(s);
	free(descs);
	free(bm);
	free(mem);
	return rc;
}
