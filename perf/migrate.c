/* SPDX-License-Identifier: MIT */
/*
 * rdmae-perf migrate: a synthetic guest (rdmae_guest.h) migrated by the
 * engine from the client (source) to the server (destination), with its
 * figures: a row per round, then totals (time, downtime expected and
 * actual, throughput, CPU on both sides) and the destination's verdict
 * after rebuilding every page from the device state and comparing it byte
 * for byte.
 *
 * Before the engine's session the two exchange a SETUP (guest size, huge
 * pages required) and a HELLO (how the destination placed its memory), so
 * that only the source needs to be told the size; after the commit the
 * destination sends MIG_RESULT (its verification and CPU time).
 *
 * CPU time: the source's process time during the migration minus the CPU
 * its dirtier threads used meanwhile (those are the guest, not the cost of
 * moving it); the destination's process time from accepting to the commit,
 * the engine's own hashing included and the tool's byte-for-byte check
 * reported apart.
 */
#include <errno.h>
#include <inttypes.h>
#include <numa.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rdmae_engine.h"
#include "rdmae_ctl.h"
#include "rdmae_guest.h"
#include "rdmae_json.h"
#include "rdmae_perf.h"
#include "rdmae_plot.h"
#include "rdmae_meter.h"
#include "rdmae_migopt.h"

#define NB RDMAE_GUEST_BLOCKS
#define STATE_CHUNK (64u << 10)
#define MAX_ROWS 1024
#define RESULT_WAIT_MS 300000
#define GIB 1073741824.0

struct cfg {
	struct rdmae_perf_net net;
	struct rdmae_migopt m;		/* what rdmae_mig takes too */
	struct rdmae_dirtier_opts dirt;	/* its rate is m.rate */
	uint64_t size;			/* m.size, or 0 for a server not told one */
	int numa;			/* -1: none; -2: the node this process starts on */
	const char *plot;
	bool no_populate;		/* server --size: do not populate while waiting */
};

struct row {
	struct rdmae_round_stats rs;
	bool final;
};

/* The source's run. */
struct src {
	const struct cfg *cf;
	struct rdmae_guest g;
	struct rdmae_meter prog;
	struct rdmae_conn *conn;
	struct rdmae_session *ss;
	struct row rows[MAX_ROWS];
	unsigned int nrows;
	/* the progress thread's view of the round in flight */
	pthread_t pth;
	bool pth_on;
	atomic_bool pstop;
	atomic_uint pround;
	atomic_uint_fast64_t pbase;	/* bytes written before this round */
	atomic_uint_fast64_t pplan;	/* bytes this round should write (about) */
	/* figures */
	struct rdmae_session_stats st;
	bool have_st;
	int ret;
	struct rdmae_err err;
	double wall_s, cpu_s, guest_cpu_s;
	double connect_s;		/* rdmae_connect: connect and authentication */
	double connected_to_preflight_s;	/* connected to pre-flight start (the tool's SETUP) */
	double t_connected;
	uint64_t guest_writes;
	double guest_secs;
	int dst_huge[NB], dst_numa;
	struct rdmae_ctl dst;		/* the destination's MIG_RESULT */
	bool have_dst;
};

static int pick_numa(int numa)
{
	int cpu;

	if (numa != -2)
		return numa;
	if (numa_available() < 0)
		return -1;
	cpu = sched_getcpu();
	return cpu >= 0 ? numa_node_of_cpu(cpu) : -1;
}

static void guest_opts(const struct cfg *cf, uint64_t size, bool fill, bool huge_required,
		       struct rdmae_guest_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = size;
	o->fill = fill;
	o->numa_node = pick_numa(cf->numa);
	o->mem = huge_required ? RDMAE_GUEST_HUGE : cf->m.mem;
}

static void session_opts(const struct cfg *cf, struct rdmae_session_opts *o)
{
	rdmae_session_opts_default(o);
	o->max_bandwidth = (uint64_t)cf->m.bw_cap;
	o->downtime_limit_ns = cf->m.downtime_ms * 1000000ull;
	o->max_rounds = cf->m.max_rounds;
	o->timeout_ms = cf->m.timeout_ms;
	o->no_verify = cf->m.no_verify;
	o->reg_mode = cf->m.reg;
}

static uint64_t written(struct rdmae_conn *c)
{
	const struct rdmae_negotiated *neg = rdmae_conn_negotiated(c);
	uint64_t b = 0;

	for (unsigned int i = 0; neg && i < neg->lanes; i++) {
		struct rdmae_lane_stats ls;

		if (!rdmae_conn_lane_stats(c, i, &ls))
			b += ls.write_bytes;
	}
	return b;
}

/* Rounds block for their whole length: this thread shows how far the current one is. */
static void *progress_main(void *arg)
{
	struct src *s = arg;
	struct timespec ts = { 0, 100000000 };

	while (!atomic_load(&s->pstop)) {
		uint64_t plan = atomic_load(&s->pplan);
		uint64_t done = written(s->conn) - atomic_load(&s->pbase);
		unsigned int r = atomic_load(&s->pround);

		if (r)
			rdmae_meter_update(&s->prog, plan ? (double)done / (double)plan : -1,
					   "round %u: %.1f of ~%.1f MiB", r,
					   (double)done / 1048576.0, (double)plan / 1048576.0);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void round_starts(struct src *s, unsigned int round, uint64_t plan)
{
	atomic_store(&s->pbase, written(s->conn));
	atomic_store(&s->pplan, plan);
	atomic_store(&s->pround, round);
}

static void print_header(struct src *s)
{
	rdmae_meter_printf(&s->prog, " %5s %9s %9s %7s %7s %9s %7s %9s %10s %9s %12s", "round",
			   "pages", "MiB", "zeros", "runs", "ms", "ack ms", "MB/s",
			   "dirty MB/s", "left MiB", "exp. down ms");
}

static void add_row(struct src *s, const struct rdmae_round_stats *r, bool final)
{
	if (s->nrows < MAX_ROWS) {
		s->rows[s->nrows].rs = *r;
		s->rows[s->nrows].final = final;
		s->nrows++;
	}
	rdmae_meter_printf(&s->prog, " %4u%s %9" PRIu64 " %9.1f %7" PRIu64 " %7" PRIu64
			   " %9.1f %7.1f %9.1f %10.1f %9.1f %12.1f", r->round, final ? "*" : " ",
			   r->pages, (double)r->bytes / 1048576.0, r->zero_pages, r->runs,
			   (double)r->duration_ns / 1e6, (double)r->ack_ns / 1e6,
			   r->bandwidth / 1e6, r->dirty_rate / 1e6,
			   (double)r->remaining_bytes / 1048576.0,
			   (double)r->expected_downtime_ns / 1e6);
}

/* Device state: the header, then each block's version table, in pieces. */
static int send_state(struct src *s, struct rdmae_err *err)
{
	uint32_t hdr[2 + NB];
	unsigned int i;
	int ret;

	rdmae_guest_state_header(&s->g, hdr);
	ret = rdmae_session_send_state(s->ss, hdr, sizeof(hdr), err);
	for (i = 0; i < NB && !ret; i++) {
		const uint8_t *p = (const uint8_t *)s->g.b[i].ver;
		size_t len = s->g.b[i].npages * sizeof(uint32_t), off;

		for (off = 0; off < len && !ret; off += STATE_CHUNK)
			ret = rdmae_session_send_state(s->ss, p + off,
						       len - off < STATE_CHUNK ? len - off :
						       STATE_CHUNK, err);
	}
	return ret;
}

/* Pre-copy until the engine says the rest fits the downtime, then stop and finish. */
static int migrate(struct src *s, struct rdmae_err *err)
{
	const struct cfg *cf = s->cf;
	struct rdmae_block blocks[NB];
	struct rdmae_session_opts so;
	struct rdmae_round_stats rs;
	struct rdmae_plan plan = { 0 };
	const uint64_t *bm[NB];
	double cpu0, t0, gcpu0, gcpu1;
	uint64_t gw0;
	unsigned int round = 0;
	int ret;

	rdmae_guest_blocks(&s->g, blocks);
	rdmae_guest_bitmaps(&s->g, bm);
	session_opts(cf, &so);
	/* Known in advance: part of the expected downtime. */
	so.expected_state_bytes = rdmae_guest_state_len(&s->g);
	ret = rdmae_guest_start(&s->g, &cf->dirt, err);
	if (ret)
		return ret;
	gw0 = atomic_load(&s->g.writes);
	t0 = rdmae_perf_now();
	cpu0 = rdmae_perf_cpu();
	gcpu0 = (double)rdmae_guest_cpu_ns(&s->g) / 1e9;
	gcpu1 = gcpu0;
	s->connected_to_preflight_s = t0 - s->t_connected;
	ret = rdmae_session_create(&s->ss, RDMAE_SOURCE, s->conn, blocks, NB, &so, err);
	if (!ret)
		ret = rdmae_session_preflight(s->ss, err);
	if (ret)
		goto out;
	if (!cf->net.quiet && pthread_create(&s->pth, NULL, progress_main, s) == 0)
		s->pth_on = true;
	print_header(s);
	rdmae_guest_harvest(&s->g, RDMAE_HARVEST_ALL);
	plan.dirty_bytes = s->g.b[0].len + s->g.b[1].len;
	for (;;) {
		round_starts(s, ++round, plan.dirty_bytes);
		ret = rdmae_session_round(s->ss, bm, &rs, err);
		if (ret)
			goto out;
		rdmae_guest_harvest(&s->g, RDMAE_HARVEST_REPLACE);
		rdmae_session_plan(s->ss, bm, &plan);
		/* The plan fills in what is left after the round and its expected downtime. */
		rdmae_session_last_round(s->ss, &rs);
		add_row(s, &rs, false);
		if (plan.converged)
			break;
	}
	/* Converged: stop the dirtiers, take the last log, send it with what was planned. */
	gcpu1 = (double)rdmae_guest_cpu_ns(&s->g) / 1e9;
	s->guest_writes = atomic_load(&s->g.writes) - gw0;
	s->guest_secs = rdmae_perf_now() - t0;
	rdmae_guest_pause(&s->g);
	rdmae_session_mark_stopped(s->ss);
	rdmae_guest_harvest(&s->g, RDMAE_HARVEST_OR);
	round_starts(s, ++round, plan.dirty_bytes);
	ret = rdmae_session_round(s->ss, bm, &rs, err);
	if (ret)
		goto out;
	add_row(s, &rs, true);
	ret = send_state(s, err);
	if (!ret)
		ret = rdmae_session_complete(s->ss, err);
out:
	if (rdmae_guest_running(&s->g)) {
		gcpu1 = (double)rdmae_guest_cpu_ns(&s->g) / 1e9;
		s->guest_writes = atomic_load(&s->g.writes) - gw0;
		s->guest_secs = rdmae_perf_now() - t0;
	}
	s->cpu_s = rdmae_perf_cpu() - cpu0;
	s->guest_cpu_s = gcpu1 - gcpu0;
	s->wall_s = rdmae_perf_now() - t0;
	if (s->pth_on) {
		atomic_store(&s->pstop, true);
		pthread_join(s->pth, NULL);
		s->pth_on = false;
	}
	rdmae_meter_clear(&s->prog);
	/* Not converging leaves the guest where it was: running, its migration called off. */
	if (ret == -ETIME)
		rdmae_session_cancel(s->ss, "migration did not converge");
	/* After COMMIT_OK the guest runs on the destination: unpinning is outside the downtime. */
	if (s->ss && !ret)
		ret = rdmae_session_release(s->ss, err);
	if (s->ss && !rdmae_session_stats(s->ss, &s->st))
		s->have_st = true;
	rdmae_guest_pause(&s->g);
	return ret;
}

static double per_gib(double cpu, uint64_t bytes)
{
	return bytes ? cpu / ((double)bytes / GIB) : 0;
}

/* Connect to first WRITE: the tool's SETUP exchange, then the engine's pre-flight to its first WRITE. */
static double first_write_ms(const struct src *s)
{
	if (!s->st.first_write_ns)
		return 0;
	return s->connected_to_preflight_s * 1e3 + (double)s->st.first_write_ns / 1e6;
}

static double ms_per_gib(const struct rdmae_session_stats *st)
{
	return st->total_bytes ? (double)st->total_ns / 1e6 / ((double)st->total_bytes / GIB) : 0;
}

/* Registration in pieces (issue 18): what stands between connect and the first WRITE. */
static void print_setup(const struct src *s)
{
	const struct rdmae_session_stats *st = &s->st;

	printf("  connect           %.1f ms (connect and authentication)\n", s->connect_s * 1e3);
	printf("  first WRITE       %.1f ms after connect (%.1f ms after pre-flight start)\n",
	       first_write_ms(s), (double)st->first_write_ns / 1e6);
	printf("  registration      source %s, destination %s\n",
	       rdmae_reg_mode_name(st->src_reg_mode), rdmae_reg_mode_name(st->dst_reg_mode));
	printf("  source reg.       %.1f ms in %u pieces, %.1f ms of it before the first WRITE\n",
	       (double)st->reg_ns / 1e6, st->reg_pieces, (double)st->reg_first_ns / 1e6);
	if (s->have_dst && s->dst.n >= 14)
		printf("  destination reg.  %.1f ms in %" PRIu64 " pieces, %.1f ms of it before its"
		       " first piece was advertised (before any WRITE)\n",
		       (double)s->dst.v[11] / 1e6, s->dst.v[13], (double)s->dst.v[12] / 1e6);
	if (s->have_dst && s->dst.n >= 17)
		printf("  dest. populate    %.1f ms before the connect, while it waited (none "
		       "registered)\n", (double)s->dst.v[16] / 1e6);
	if (s->have_dst && s->dst.n >= 18)
		printf("  destination reg.  %.1f ms of it before the connect was accepted\n",
		       (double)s->dst.v[17] / 1e6);
	printf("  per GiB           %.1f ms per GiB of guest (engine total)\n", ms_per_gib(st));
}

/* Deregistration (issue 18): from COMMIT_OK to the last ibv_dereg_mr, outside the downtime. */
static void print_dereg(const struct src *s)
{
	const struct rdmae_session_stats *st = &s->st;

	printf("  source dereg.     %.1f ms after COMMIT_OK (%.1f ms in ibv_dereg_mr), "
	       "outside the downtime\n", (double)st->dereg_after_commit_ns / 1e6,
	       (double)st->dereg_ns / 1e6);
	if (s->have_dst && s->dst.n >= 16)
		printf("  dest. dereg.      %.1f ms after COMMIT_OK (%.1f ms in ibv_dereg_mr), "
		       "after its guest runs\n", (double)s->dst.v[15] / 1e6,
		       (double)s->dst.v[14] / 1e6);
}

static void print_totals(struct src *s)
{
	const struct cfg *cf = s->cf;
	const struct rdmae_session_stats *st = &s->st;
	double mig = s->cpu_s - s->guest_cpu_s;
	uint64_t moved = st->transferred_bytes;

	printf("totals:\n");
	printf("  result            %s\n", s->ret ? "FAILED" : "committed");
	if (s->ret)
		printf("  error             %s\n", s->err.msg);
	printf("  guest             %" PRIu64 " MiB (%s, %.1f MB/s asked, %.1f MB/s written by "
	       "%u dirtier(s))\n", st->total_bytes >> 20, rdmae_dirty_pattern_name(cf->dirt.pattern),
	       cf->dirt.rate / 1e6, s->guest_secs > 0 ? (double)s->guest_writes *
	       RDMAE_GUEST_PAGE / s->guest_secs / 1e6 : 0, cf->dirt.threads ? cf->dirt.threads : 1);
	printf("  time              %.1f ms (engine: pre-flight to commit; setup %.1f ms), "
	       "%.1f ms wall\n", (double)st->total_ns / 1e6, (double)st->setup_ns / 1e6,
	       s->wall_s * 1e3);
	print_setup(s);
	printf("  rounds            %u, %" PRIu64 " MiB written, %" PRIu64 " zero pages, %" PRIu64
	       " bytes of device state\n", st->rounds, moved >> 20, st->zero_pages,
	       st->state_bytes);
	printf("  throughput        %.1f MB/s over all rounds\n", st->throughput / 1e6);
	printf("  downtime          %.1f ms actual, %.1f ms expected, limit %" PRIu64 " ms "
	       "(%.1f ms of it hashing, %.1f ms COMPLETE to COMMIT_OK)\n",
	       (double)st->actual_downtime_ns / 1e6, (double)st->expected_downtime_ns / 1e6,
	       cf->m.downtime_ms, (double)st->verify_ns / 1e6, (double)st->commit_ns / 1e6);
	if (!s->ret)
		print_dereg(s);
	printf("  source CPU        %.3f s migration (%.3f s/GiB written), %.3f s process, "
	       "%.3f s of it the dirtiers\n", mig, per_gib(mig, moved), s->cpu_s, s->guest_cpu_s);
	if (s->have_dst && s->dst.n >= 7) {
		const uint64_t *v = s->dst.v;

		printf("  destination CPU   %.3f s (%.3f s/GiB written), pre-flight to commit\n",
		       (double)v[4] / 1e9, per_gib((double)v[4] / 1e9, moved));
		printf("  destination check %s: %" PRIu64 " pages (%" PRIu64 " zero) rebuilt from "
		       "the device state and compared byte for byte in %.1f ms%s%s\n",
		       v[0] ? "PASSED" : "FAILED", v[1], v[2], (double)v[5] / 1e6,
		       s->dst.text[0] ? ": " : "", s->dst.text);
	} else if (!s->ret) {
		printf("  destination       no result received\n");
	}
}

static void json_round(struct rdmae_json *j, const struct row *r)
{
	const struct rdmae_round_stats *rs = &r->rs;

	rdmae_json_obj(j, NULL);
	rdmae_json_u64(j, "round", rs->round);
	rdmae_json_bool(j, "final", r->final);
	rdmae_json_u64(j, "pages", rs->pages);
	rdmae_json_u64(j, "bytes", rs->bytes);
	rdmae_json_u64(j, "zero_pages", rs->zero_pages);
	rdmae_json_u64(j, "runs", rs->runs);
	rdmae_json_num(j, "duration_ms", (double)rs->duration_ns / 1e6);
	rdmae_json_num(j, "ack_ms", (double)rs->ack_ns / 1e6);
	rdmae_json_num(j, "bandwidth_mb_s", rs->bandwidth / 1e6);
	rdmae_json_num(j, "dirty_rate_mb_s", rs->dirty_rate / 1e6);
	rdmae_json_u64(j, "remaining_bytes", rs->remaining_bytes);
	rdmae_json_num(j, "expected_downtime_ms", (double)rs->expected_downtime_ns / 1e6);
	rdmae_json_end(j);
}

static unsigned int default_lanes(void)
{
	struct rdmae_conn_opts o;

	rdmae_conn_opts_default(&o);
	return o.lanes;
}

static void json_config(struct rdmae_json *j, const struct cfg *cf, uint64_t size,
			uint64_t hot_bytes)
{
	rdmae_json_obj(j, "config");
	rdmae_json_str(j, "peer", cf->net.addr);
	rdmae_json_u64(j, "guest_bytes", size);
	rdmae_json_num(j, "dirty_rate_mb_s", cf->dirt.rate / 1e6);
	rdmae_json_str(j, "pattern", rdmae_dirty_pattern_name(cf->dirt.pattern));
	rdmae_json_u64(j, "hot_bytes", hot_bytes);
	rdmae_json_u64(j, "dirtiers", cf->dirt.threads ? cf->dirt.threads : 1);
	rdmae_json_u64(j, "downtime_limit_ms", cf->m.downtime_ms);
	rdmae_json_u64(j, "max_rounds", cf->m.max_rounds);
	rdmae_json_num(j, "bw_cap_mb_s", cf->m.bw_cap / 1e6);
	rdmae_json_u64(j, "lanes_asked", cf->m.lanes ? cf->m.lanes : default_lanes());
	rdmae_json_str(j, "hugepages", rdmae_migopt_huge_name(cf->m.mem));
	rdmae_json_bool(j, "engine_verify", !cf->m.no_verify);
	rdmae_json_end(j);
}

static void json_memory(struct rdmae_json *j, const char *key, const int *huge, int numa)
{
	rdmae_json_obj(j, key);
	rdmae_json_arr(j, "huge_pages");
	for (unsigned int i = 0; i < NB; i++)
		rdmae_json_bool(j, NULL, huge[i] != 0);
	rdmae_json_end(j);
	rdmae_json_int(j, "numa_node", numa);
	rdmae_json_end(j);
}

static int src_json(struct src *s, struct rdmae_err *err)
{
	const struct cfg *cf = s->cf;
	const struct rdmae_session_stats *st = &s->st;
	double mig = s->cpu_s - s->guest_cpu_s;
	int huge[NB] = { s->g.b[0].huge, s->g.b[1].huge };
	struct rdmae_json j;
	int ret = rdmae_json_open(&j, cf->net.json, err);

	if (ret)
		return ret;
	rdmae_json_str(&j, "tool", "rdmae-perf");
	rdmae_json_str(&j, "mode", "migrate");
	rdmae_json_str(&j, "role", "source");
	rdmae_json_str(&j, "units", "MB = 10^6 bytes, MiB = 2^20 bytes, cpu_s_per_gib per 2^30 "
		       "bytes written");
	json_config(&j, cf, cf->size, s->g.d.hot_bytes);
	rdmae_json_obj(&j, "memory");
	json_memory(&j, "source", huge, s->g.o.numa_node);
	json_memory(&j, "destination", s->dst_huge, s->dst_numa);
	rdmae_json_end(&j);
	rdmae_json_arr(&j, "rounds");
	for (unsigned int i = 0; i < s->nrows; i++)
		json_round(&j, &s->rows[i]);
	rdmae_json_end(&j);
	rdmae_json_obj(&j, "totals");
	rdmae_json_bool(&j, "completed", s->ret == 0);
	rdmae_json_str(&j, "error", s->ret ? s->err.msg : NULL);
	rdmae_json_u64(&j, "guest_bytes", st->total_bytes);
	rdmae_json_u64(&j, "rounds", st->rounds);
	rdmae_json_u64(&j, "transferred_bytes", st->transferred_bytes);
	rdmae_json_u64(&j, "normal_pages", st->normal_pages);
	rdmae_json_u64(&j, "zero_pages", st->zero_pages);
	rdmae_json_u64(&j, "state_bytes", st->state_bytes);
	rdmae_json_u64(&j, "lanes", st->lanes);
	rdmae_json_num(&j, "total_ms", (double)st->total_ns / 1e6);
	rdmae_json_num(&j, "wall_ms", s->wall_s * 1e3);
	rdmae_json_num(&j, "setup_ms", (double)st->setup_ns / 1e6);
	/* Issue 18's figures: setup as connect to first WRITE, and where registration falls. */
	rdmae_json_num(&j, "connect_ms", s->connect_s * 1e3);
	rdmae_json_num(&j, "first_write_ms", first_write_ms(s));
	rdmae_json_num(&j, "engine_first_write_ms", (double)st->first_write_ns / 1e6);
	rdmae_json_str(&j, "src_reg_mode", rdmae_reg_mode_name(st->src_reg_mode));
	rdmae_json_str(&j, "dst_reg_mode", rdmae_reg_mode_name(st->dst_reg_mode));
	rdmae_json_num(&j, "src_reg_ms", (double)st->reg_ns / 1e6);
	rdmae_json_num(&j, "src_reg_before_first_write_ms", (double)st->reg_first_ns / 1e6);
	rdmae_json_u64(&j, "src_reg_pieces", st->reg_pieces);
	rdmae_json_num(&j, "ms_per_gib", ms_per_gib(st));
	if (s->have_dst && s->dst.n >= 14) {
		rdmae_json_num(&j, "dst_reg_ms", (double)s->dst.v[11] / 1e6);
		rdmae_json_num(&j, "dst_reg_before_first_write_ms", (double)s->dst.v[12] / 1e6);
		rdmae_json_u64(&j, "dst_reg_pieces", s->dst.v[13]);
	}
	/* Registration never comes before authentication: only populating can. */
	if (s->have_dst && s->dst.n >= 17)
		rdmae_json_num(&j, "dst_populate_before_connect_ms", (double)s->dst.v[16] / 1e6);
	if (s->have_dst && s->dst.n >= 18)
		rdmae_json_num(&j, "dst_reg_before_connect_ms", (double)s->dst.v[17] / 1e6);
	rdmae_json_num(&j, "src_dereg_ms", (double)st->dereg_ns / 1e6);
	rdmae_json_num(&j, "src_dereg_after_commit_ms", (double)st->dereg_after_commit_ns / 1e6);
	if (s->have_dst && s->dst.n >= 16) {
		rdmae_json_num(&j, "dst_dereg_ms", (double)s->dst.v[14] / 1e6);
		rdmae_json_num(&j, "dst_dereg_after_commit_ms", (double)s->dst.v[15] / 1e6);
	}
	rdmae_json_num(&j, "throughput_mb_s", st->throughput / 1e6);
	rdmae_json_num(&j, "downtime_actual_ms", (double)st->actual_downtime_ns / 1e6);
	rdmae_json_num(&j, "downtime_expected_ms", (double)st->expected_downtime_ns / 1e6);
	rdmae_json_u64(&j, "downtime_limit_ms", cf->m.downtime_ms);
	rdmae_json_num(&j, "verify_ms", (double)st->verify_ns / 1e6);
	rdmae_json_num(&j, "hash_ms", (double)st->hash_ns / 1e6);
	rdmae_json_num(&j, "commit_ms", (double)st->commit_ns / 1e6);
	rdmae_json_u64(&j, "guest_page_writes", s->guest_writes);
	rdmae_json_num(&j, "guest_dirty_mb_s", s->guest_secs > 0 ? (double)s->guest_writes *
		       RDMAE_GUEST_PAGE / s->guest_secs / 1e6 : 0);
	rdmae_json_num(&j, "src_cpu_s", mig);
	rdmae_json_num(&j, "src_cpu_s_per_gib", per_gib(mig, st->transferred_bytes));
	rdmae_json_num(&j, "src_process_cpu_s", s->cpu_s);
	rdmae_json_num(&j, "src_dirtier_cpu_s", s->guest_cpu_s);
	if (s->have_dst && s->dst.n >= 7) {
		rdmae_json_num(&j, "dst_cpu_s", (double)s->dst.v[4] / 1e9);
		rdmae_json_num(&j, "dst_cpu_s_per_gib", per_gib((double)s->dst.v[4] / 1e9,
								st->transferred_bytes));
		rdmae_json_bool(&j, "dst_verified", s->dst.v[0] != 0);
		rdmae_json_u64(&j, "dst_pages_checked", s->dst.v[1]);
		rdmae_json_u64(&j, "dst_zero_pages", s->dst.v[2]);
		rdmae_json_u64(&j, "dst_bytes_checked", s->dst.v[3]);
		rdmae_json_num(&j, "dst_check_ms", (double)s->dst.v[5] / 1e6);
		rdmae_json_num(&j, "dst_total_ms", (double)s->dst.v[6] / 1e6);
		rdmae_json_str(&j, "dst_error", s->dst.text[0] ? s->dst.text : NULL);
	} else {
		rdmae_json_bool(&j, "dst_verified", false);
	}
	rdmae_json_end(&j);
	return rdmae_json_close(&j, err);
}

static void plot(struct src *s)
{
	struct rdmae_plot_round pr[MAX_ROWS];
	struct rdmae_err err = { 0 };
	char title[160];
	unsigned int i;

	for (i = 0; i < s->nrows; i++) {
		pr[i].round = s->rows[i].rs.round;
		pr[i].bytes = s->rows[i].rs.bytes;
		pr[i].bandwidth = s->rows[i].rs.bandwidth;
		pr[i].dirty_rate = s->rows[i].rs.dirty_rate;
		pr[i].final = s->rows[i].final;
	}
	snprintf(title, sizeof(title), "rdmae-perf migrate: %" PRIu64 " MiB guest, %s at %.1f MB/s",
		 s->cf->size >> 20, rdmae_dirty_pattern_name(s->cf->dirt.pattern),
		 s->cf->dirt.rate / 1e6);
	/* The measurement stands without its picture: a missing gnuplot is a warning. */
	if (rdmae_plot_rounds(s->cf->plot, title, pr, s->nrows, &err))
		fprintf(stderr, "rdmae-perf migrate: warning: %s\n", err.msg);
	else
		printf("plot: %s\n", s->cf->plot);
}

static int run_source(const struct cfg *cf)
{
	struct src *s = calloc(1, sizeof(*s));
	struct rdmae_guest_opts go;
	struct rdmae_conn_opts co;
	struct rdmae_ctl m;
	uint64_t v[2];
	int ret, jret = 0;

	if (!s)
		return 1;
	s->cf = cf;
	s->dst_numa = -1;
	rdmae_meter_init(&s->prog, cf->net.quiet);
	guest_opts(cf, cf->size, true, false, &go);
	ret = rdmae_guest_init(&s->g, &go, &s->err);
	if (ret)
		goto out;
	rdmae_perf_conn_opts(&cf->net, &co);
	if (cf->m.lanes)
		co.lanes = (uint16_t)cf->m.lanes;
	s->t_connected = rdmae_perf_now();
	ret = rdmae_connect(&s->conn, cf->net.addr, cf->net.port, &co, &s->err);
	if (ret)
		goto out;
	s->connect_s = rdmae_perf_now() - s->t_connected;
	s->t_connected += s->connect_s;
	v[0] = cf->size;
	v[1] = s->g.huge;
	ret = rdmae_ctl_send(s->conn, RDMAE_CTL_SETUP, v, 2, NULL, &s->err);
	if (!ret)
		ret = rdmae_ctl_recv(s->conn, &m, RDMAE_CTL_HELLO, 120000, &s->err);
	if (ret)
		goto out;
	for (unsigned int i = 0; i < NB && i < m.n; i++)
		s->dst_huge[i] = (int)m.v[i];
	s->dst_numa = m.n > NB ? (int)m.v[NB] - 1 : -1;
	printf("rdmae-perf migrate: %" PRIu64 " MiB guest to %s, %s dirtying at %.1f MB/s "
	       "(%u thread(s)), downtime limit %" PRIu64 " ms\n", cf->size >> 20,
	       rdmae_conn_peer(s->conn), rdmae_dirty_pattern_name(cf->dirt.pattern),
	       cf->dirt.rate / 1e6, cf->dirt.threads ? cf->dirt.threads : 1, cf->m.downtime_ms);
	printf("memory: source on %s pages (NUMA node %d), destination on %s pages (node %d)\n",
	       s->g.b[0].huge ? "huge" : "4 KiB", s->g.o.numa_node,
	       s->dst_huge[0] ? "huge" : "4 KiB", s->dst_numa);
	fflush(stdout);
	s->ret = migrate(s, &s->err);
	if (!s->ret) {
		/* The destination checks every page, then says what it found. */
		ret = rdmae_ctl_recv(s->conn, &s->dst, RDMAE_CTL_MIG_RESULT, RESULT_WAIT_MS,
				     &s->err);
		s->have_dst = !ret;
		if (ret)
			s->ret = ret;
	}
	print_totals(s);
	if (cf->net.json)
		jret = src_json(s, &s->err);
	if (cf->plot && s->nrows)
		plot(s);
	ret = s->ret ? s->ret : jret;
	if (!ret && !(s->have_dst && s->dst.n >= 1 && s->dst.v[0]))
		ret = rdmae_err_set(&s->err, -EILSEQ, "the destination's check of the guest "
				    "failed%s%s", s->dst.text[0] ? ": " : "", s->dst.text);
out:
	rdmae_meter_clear(&s->prog);
	if (ret && !s->ret)
		fprintf(stderr, "rdmae-perf migrate client: %s\n",
			s->err.msg[0] ? s->err.msg : strerror(-ret));
	rdmae_session_destroy(s->ss);
	rdmae_conn_destroy(s->conn);
	rdmae_guest_free(&s->g);
	rdmae_meter_destroy(&s->prog);
	free(s);
	return ret ? 1 : 0;
}

/* ---- destination ---- */

struct dst {
	struct rdmae_guest g;
	struct rdmae_session *ss;
	uint8_t *state;
	size_t slen, scap;
	unsigned int rounds;
	bool engine_verified;
	double cpu_s, secs, check_s;
	double t_accepted, t_session;	/* connect accepted; session created (registration follows) */
	struct rdmae_guest_check chk;
	struct rdmae_session_stats st;
	bool ready;			/* g mapped (and populated) before the source came */
	double populate_s;		/* populating g while waiting, before the connect */
};

/*
 * A server told the size maps the guest and populates it before it is
 * ready for the source, so that registration later finds the pages
 * allocated and zeroed. Nothing is registered: that waits for authentication. ODP
 * pins nothing and needs no populating.
 */
static int populate_ahead(const struct cfg *cf, struct dst *d, struct rdmae_err *err)
{
	struct rdmae_guest_opts go;
	uint64_t bytes = 0;
	double t;
	int ret;

	if (!cf->size || cf->no_populate || cf->m.reg == RDMAE_REG_ODP)
		return 0;
	guest_opts(cf, cf->size, false, false, &go);
	ret = rdmae_guest_init(&d->g, &go, err);
	if (ret)
		return ret;
	t = rdmae_perf_now();
	for (int i = 0; i < RDMAE_GUEST_BLOCKS; i++) {
		const struct rdmae_guest_block *b = &d->g.b[i];

		ret = rdmae_populate(b->mem, b->len, rdmae_mapping_page_size(b->mem, NULL));
		if (ret)
			return rdmae_err_set(err, ret, "populate block '%s' (%zu MiB) while waiting:"
					     " %s", b->name, b->len >> 20, strerror(-ret));
		bytes += b->len;
	}
	d->populate_s = rdmae_perf_now() - t;
	d->ready = true;
	printf("rdmae-perf migrate server: populated %" PRIu64 " MiB of guest RAM in %.1f ms "
	       "while waiting (registered only after authentication)\n", bytes >> 20,
	       d->populate_s * 1e3);
	fflush(stdout);
	return 0;
}

/*
 * The destination's registration that can have fallen before the connect
 * was accepted: it all happens in the session, so at most the time from
 * creating the session to the accept, and at most all of it; 0 when the
 * session was created after the accept (this tool's order).
 */
static uint64_t reg_before_connect_ns(const struct dst *d)
{
	double ahead = d->t_accepted - d->t_session;

	if (ahead <= 0)
		return 0;
	return ahead * 1e9 < (double)d->st.reg_ns ? (uint64_t)(ahead * 1e9) : d->st.reg_ns;
}

static int collect_state(struct dst *d, const struct rdmae_dest_event *ev)
{
	if (d->slen + ev->len > d->scap) {
		size_t ncap = (d->slen + ev->len) * 2;
		uint8_t *n = realloc(d->state, ncap);

		if (!n)
			return -ENOMEM;
		d->state = n;
		d->scap = ncap;
	}
	memcpy(d->state + d->slen, ev->data, ev->len);
	d->slen += ev->len;
	return 0;
}

static int receive(const struct cfg *cf, struct rdmae_conn *c, struct dst *d,
		   struct rdmae_err *err)
{
	struct rdmae_block blocks[NB];
	struct rdmae_session_opts so;
	struct rdmae_dest_event ev;
	double cpu0 = rdmae_perf_cpu(), t0 = rdmae_perf_now();
	int ret;

	rdmae_guest_blocks(&d->g, blocks);
	session_opts(cf, &so);
	d->t_session = t0;
	ret = rdmae_session_create(&d->ss, RDMAE_DEST, c, blocks, NB, &so, err);
	if (!ret)
		ret = rdmae_session_preflight(d->ss, err);
	while (!ret) {
		ret = rdmae_session_dest_step(d->ss, &ev, err);
		if (ret)
			break;
		if (ev.kind == RDMAE_EV_ROUND) {
			d->rounds++;
		} else if (ev.kind == RDMAE_EV_STATE && ev.len) {
			ret = collect_state(d, &ev);
			if (ret)
				rdmae_err_set(err, ret, "device state: out of memory");
		} else if (ev.kind == RDMAE_EV_COMMITTED) {
			d->engine_verified = ev.verified;
			/* Where QEMU would resume the guest: unpin after, as QEMU does. */
			ret = rdmae_session_release(d->ss, err);
			break;
		}
	}
	d->cpu_s = rdmae_perf_cpu() - cpu0;
	d->secs = rdmae_perf_now() - t0;
	if (d->ss)
		rdmae_session_stats(d->ss, &d->st);
	return ret;
}

static int dst_json(const struct cfg *cf, const struct dst *d, int ret, const char *msg,
		    struct rdmae_err *err)
{
	int huge[NB] = { d->g.b[0].huge, d->g.b[1].huge };
	struct rdmae_json j;
	int jr = rdmae_json_open(&j, cf->net.json, err);

	if (jr)
		return jr;
	rdmae_json_str(&j, "tool", "rdmae-perf");
	rdmae_json_str(&j, "mode", "migrate");
	rdmae_json_str(&j, "role", "destination");
	rdmae_json_u64(&j, "guest_bytes", d->g.o.size);
	json_memory(&j, "memory", huge, d->g.o.numa_node);
	rdmae_json_obj(&j, "totals");
	rdmae_json_bool(&j, "completed", ret == 0);
	rdmae_json_str(&j, "error", ret ? msg : NULL);
	rdmae_json_u64(&j, "rounds", d->rounds);
	rdmae_json_u64(&j, "state_bytes", d->slen);
	rdmae_json_bool(&j, "engine_verified", d->engine_verified);
	rdmae_json_bool(&j, "verified", ret == 0);
	rdmae_json_u64(&j, "pages_checked", d->chk.pages);
	rdmae_json_u64(&j, "zero_pages", d->chk.zero_pages);
	rdmae_json_num(&j, "check_ms", d->check_s * 1e3);
	rdmae_json_num(&j, "cpu_s", d->cpu_s);
	rdmae_json_num(&j, "time_ms", d->secs * 1e3);
	rdmae_json_num(&j, "hash_ms", (double)d->st.hash_ns / 1e6);
	rdmae_json_num(&j, "verify_ms", (double)d->st.verify_ns / 1e6);
	rdmae_json_num(&j, "setup_ms", (double)d->st.setup_ns / 1e6);
	rdmae_json_num(&j, "reg_ms", (double)d->st.reg_ns / 1e6);
	rdmae_json_num(&j, "reg_before_first_advert_ms", (double)d->st.reg_first_ns / 1e6);
	rdmae_json_u64(&j, "reg_pieces", d->st.reg_pieces);
	rdmae_json_num(&j, "populate_before_connect_ms", d->populate_s * 1e3);
	rdmae_json_num(&j, "dereg_ms", (double)d->st.dereg_ns / 1e6);
	rdmae_json_num(&j, "dereg_after_commit_ms", (double)d->st.dereg_after_commit_ns / 1e6);
	rdmae_json_num(&j, "reg_before_connect_ms", (double)reg_before_connect_ns(d) / 1e6);
	rdmae_json_end(&j);
	return rdmae_json_close(&j, err);
}

static int serve_one(const struct cfg *cf, struct rdmae_conn *c, struct dst *d,
		     struct rdmae_err *err)
{
	struct rdmae_guest_opts go;
	struct rdmae_ctl m;
	uint64_t v[18];
	double t;
	int ret;

	ret = rdmae_ctl_recv(c, &m, RDMAE_CTL_SETUP, 30000, err);
	if (ret)
		return ret;
	if (m.n < 2 || m.v[0] < (1u << 20) || (cf->size && m.v[0] != cf->size))
		return rdmae_err_set(err, -EINVAL, "SETUP from %s: a guest of %" PRIu64 " bytes%s",
				     rdmae_conn_peer(c), m.n ? m.v[0] : 0,
				     cf->size ? " (this server was told another size)" : "");
	/* Populated ahead on small pages while huge ones are required: map again. */
	if (d->ready && m.v[1] && !d->g.b[0].huge) {
		rdmae_guest_free(&d->g);
		d->ready = false;
		d->populate_s = 0;
	}
	if (!d->ready) {
		guest_opts(cf, m.v[0], false, m.v[1] != 0, &go);
		ret = rdmae_guest_init(&d->g, &go, err);
		if (ret)
			return ret;
	}
	v[0] = d->g.b[0].huge;
	v[1] = d->g.b[1].huge;
	v[2] = (uint64_t)((int64_t)d->g.o.numa_node + 1);
	ret = rdmae_ctl_send(c, RDMAE_CTL_HELLO, v, 3, NULL, err);
	if (ret)
		return ret;
	printf("rdmae-perf migrate server: %" PRIu64 " MiB guest from %s on %s pages (NUMA node "
	       "%d)\n", m.v[0] >> 20, rdmae_conn_peer(c), d->g.b[0].huge ? "huge" : "4 KiB",
	       d->g.o.numa_node);
	fflush(stdout);
	ret = receive(cf, c, d, err);
	if (ret)
		return ret;
	t = rdmae_perf_now();
	ret = rdmae_guest_verify(&d->g, d->state, d->slen, &d->chk, err);
	d->check_s = rdmae_perf_now() - t;
	v[0] = ret == 0;
	v[1] = d->chk.pages;
	v[2] = d->chk.zero_pages;
	v[3] = d->chk.bytes;
	v[4] = (uint64_t)(d->cpu_s * 1e9);
	v[5] = (uint64_t)(d->check_s * 1e9);
	v[6] = (uint64_t)(d->secs * 1e9);
	v[7] = d->rounds;
	v[8] = d->engine_verified;
	v[9] = d->st.hash_ns;
	v[10] = d->st.setup_ns;
	v[11] = d->st.reg_ns;
	v[12] = d->st.reg_first_ns;
	v[13] = d->st.reg_pieces;
	v[14] = d->st.dereg_ns;
	v[15] = d->st.dereg_after_commit_ns;
	v[16] = (uint64_t)(d->populate_s * 1e9);
	v[17] = reg_before_connect_ns(d);
	/* The verdict goes to the source whatever it is: it reports both sides. */
	if (rdmae_ctl_send(c, RDMAE_CTL_MIG_RESULT, v, 18, ret ? err->msg : NULL, NULL) && !ret)
		fprintf(stderr, "rdmae-perf migrate server: could not send the result to %s\n",
			rdmae_conn_peer(c));
	return ret;
}

static int run_dest(const struct cfg *cf)
{
	struct dst *d = calloc(1, sizeof(*d));
	struct rdmae_conn_opts co;
	struct rdmae_listener *l = NULL;
	struct rdmae_conn *c = NULL;
	struct rdmae_err err = { 0 }, jerr = { 0 };
	int ret;

	if (!d)
		return 1;
	rdmae_perf_conn_opts(&cf->net, &co);
	co.lanes = RDMAE_MAX_LANES;
	ret = rdmae_listen(&l, cf->net.addr, cf->net.port, &co, &err);
	if (ret)
		goto out;
	/*
	 * Ready (and saying so) once populated: a source that came meanwhile
	 * would wait in the listener's backlog, its connect timing out on a
	 * guest that takes long.
	 */
	ret = populate_ahead(cf, d, &err);
	if (ret)
		goto out;
	printf("rdmae-perf migrate server: listening on %s:%d\n", cf->net.addr,
	       rdmae_listener_port(l));
	fflush(stdout);
	ret = rdmae_accept(l, &c, -1, &err);
	d->t_accepted = rdmae_perf_now();
	rdmae_listener_destroy(l);
	l = NULL;
	if (ret)
		goto out;
	ret = serve_one(cf, c, d, &err);
	if (!ret)
		printf("rdmae-perf migrate server: committed after %u rounds, %zu bytes of device "
		       "state; %" PRIu64 " pages (%" PRIu64 " zero) rebuilt and compared byte for "
		       "byte in %.1f ms: PASSED; CPU %.3f s, pre-flight to commit %.1f ms%s\n",
		       d->rounds, d->slen, d->chk.pages, d->chk.zero_pages, d->check_s * 1e3,
		       d->cpu_s, d->secs * 1e3, d->engine_verified ? ", engine checksums verified" :
		       ", engine checksums NOT verified");
	if (cf->net.json && dst_json(cf, d, ret, err.msg, &jerr))
		fprintf(stderr, "rdmae-perf migrate server: %s\n", jerr.msg);
out:
	if (ret)
		fprintf(stderr, "rdmae-perf migrate server: %s\n",
			err.msg[0] ? err.msg : strerror(-ret));
	rdmae_session_destroy(d->ss);
	rdmae_conn_destroy(c);
	rdmae_listener_destroy(l);
	rdmae_guest_free(&d->g);
	free(d->state);
	free(d);
	return ret ? 1 : 0;
}

/* Exits: 0 when asked for (--help), 2 for a wrong command line. */
static __attribute__((noreturn)) void usage(int code)
{
	fprintf(code ? stderr : stdout,
		"usage: rdmae-perf migrate server --addr A [--port P] --key FILE | --auth-none\n"
		"       rdmae-perf migrate client --addr A [--port P] --key FILE | --auth-none\n"
		"             [--size N] [--rate MB/s] [--pattern uniform|hotset|sequential]\n"
		"             [--json FILE] [--plot FILE.png] ...\n"
		"The server is the destination; the client tells it the size.\n"
		RDMAE_PERF_NET_USAGE
		RDMAE_MIGOPT_USAGE("8", "auto")
		"  --pattern P           uniform (default), hotset, sequential\n"
		"  --hot N               hotset: bytes of the hot set (default 1/8 of pc.ram)\n"
		"  --dirtiers N          dirtier threads, 1 to 16, sharing --rate (default 1)\n"
		"  --numa N|none         NUMA node of guest RAM and dirtiers (default: the node\n"
		"                        rdmae-perf starts on)\n"
		"  --plot FILE.png       per-round bytes, bandwidth and dirty rate, by gnuplot\n"
		"  --no-populate         server given --size: do not populate guest RAM while\n"
		"                        waiting for the client (it is, by default, unless\n"
		"                        --reg odp)\n");
	exit(code);
}

/* A wrong command line: what is wrong, then exit 2. */
static __attribute__((noreturn)) void bad_usage(const char *msg)
{
	fprintf(stderr, "rdmae-perf migrate: %s (--help lists the options)\n", msg);
	exit(2);
}

int rdmae_perf_migrate(int argc, char **argv)
{
	static const struct option lo[] = {
		RDMAE_PERF_NET_OPTIONS,
		RDMAE_MIGOPT_OPTIONS,
		{ "pattern", required_argument, NULL, 'P' },
		{ "hot", required_argument, NULL, 'H' },
		{ "dirtiers", required_argument, NULL, 'D' },
		{ "numa", required_argument, NULL, 'N' },
		{ "plot", required_argument, NULL, 'O' },
		{ "no-populate", no_argument, NULL, 'Z' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	static const char *const patterns[] = {
		[RDMAE_DIRTY_UNIFORM] = "uniform", [RDMAE_DIRTY_HOTSET] = "hotset",
		[RDMAE_DIRTY_SEQUENTIAL] = "sequential",
	};
	struct cfg cf = { .dirt = { .threads = 1 }, .numa = -2 };
	struct rdmae_err err = { 0 };
	unsigned int node = 0;
	int opt, ret, i = 0;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		usage(0);
	if (rdmae_perf_net_init(&cf.net, argc, argv, "7640"))
		bad_usage(argc >= 2 ? "the first argument must be server or client" :
			  "server or client?");
	rdmae_migopt_init(&cf.m, 8e6, RDMAE_GUEST_HUGE_IF_RESERVED);
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (rdmae_perf_net_opt(&cf.net, opt, optarg))
			continue;
		ret = rdmae_migopt_parse(&cf.m, opt, optarg, &err);
		if (ret < 0)
			bad_usage(err.msg);
		if (ret > 0)
			continue;
		switch (opt) {
		case 'P':
			ret = rdmae_opt_choice("--pattern", optarg, patterns, 3, &i, &err);
			if (!ret)
				cf.dirt.pattern = (enum rdmae_dirty_pattern)i;
			break;
		case 'H': ret = rdmae_opt_size("--hot", optarg, 1, &cf.dirt.hot_bytes, &err); break;
		case 'D':
			ret = rdmae_opt_uint("--dirtiers", optarg, 1, RDMAE_GUEST_MAX_DIRTIERS,
					     &cf.dirt.threads, &err);
			break;
		case 'N':
			if (!strcmp(optarg, "none"))
				cf.numa = -1;
			else if (!rdmae_opt_uint("--numa", optarg, 0, INT_MAX, &node, &err))
				cf.numa = (int)node;
			else
				ret = rdmae_err_set(&err, -EINVAL, "--numa '%s': not a node number "
						    "or none", optarg);
			break;
		case 'O': cf.plot = optarg; break;
		case 'Z': cf.no_populate = true; break;
		case 'h': usage(0);
		default: usage(2);	/* getopt has said what */
		}
		if (ret)
			bad_usage(err.msg);
	}
	if (optind != argc) {
		snprintf(err.msg, sizeof(err.msg), "unexpected argument '%s'", argv[optind]);
		bad_usage(err.msg);
	}
	if (!cf.net.addr)
		bad_usage("--addr is required");
	cf.dirt.rate = cf.m.rate;
	/* The source tells the size; a server given one insists on it. */
	cf.size = cf.net.server && !cf.m.size_given ? 0 : cf.m.size;
	return cf.net.server ? run_dest(&cf) : run_source(&cf);
}
