/* SPDX-License-Identifier: MIT */
/*
 * rdmae_mig: live migration of a synthetic guest with the engine, one
 * process per side, on the soft-RoCE bench.
 *
 * The guest (perf/rdmae_guest.h, shared with rdmae-perf migrate) is a set of
 * RAM blocks and a "vCPU" thread that dirties pages at a set rate, logging
 * each write in a dirty bitmap (as KVM's dirty log would) and bumping the
 * page's version. Page content is a pure function of (block, page,
 * version), version 0 being a zero page. At stop the source sends the
 * version table as its device state, and the destination rebuilds every
 * page it should hold and compares them byte for byte: a check that does
 * not rely on the engine's own checksums. A source whose migration failed
 * checks its own memory the same way against its own version table: the
 * engine must not have written it.
 *
 *   rdmae_mig src|dst --addr A [--port P] --key FILE | --auth-none [options]
 * The options rdmae-perf migrate takes too (--size, --rate, --downtime,
 * --max-rounds, --bw-cap, --lanes, --hugepages, --no-verify, --timeout) are
 * perf/rdmae_migopt.h's: the same names, arguments and meaning in both;
 * rdmae_mig --help lists every option. The ones of this driver alone:
 *     --sessions N     N migrations at once in this process
 *     --repeat N       N migrations one after the other in this process, each
 *                      with a fresh guest, connection and session; the fds,
 *                      heap, mapped and pinned memory and RDMA objects it holds
 *                      must not grow after the first (--warmup N) ones
 *     --expect converge|noconverge|cancel|mismatch|unknown|fail
 *                      fail: the migration must end with an error (the source's
 *                      guest running, its memory intact)
 *     --cancel-at preflight|round|state  --cancel-side src|dst
 *     --hold-at POINT[:MS]  print "holding at POINT" and stop there for MS
 *                      (default 60000) or until the connection fails, so that a
 *                      test injects a fault at a known point. src: state (after
 *                      the final round, guest stopped), state-mid (after the
 *                      first chunk of device state); dst: preflight (before
 *                      pre-flight), round (after it: no message is read, so the
 *                      source runs out of credits), commit (all state received)
 *     --marks          (src) print "round N starting" before each round
 *     --dst-size N / --dst-name NAME     (dst) make pre-flight fail
 *     --drop-ipc-lock  give up CAP_IPC_LOCK, so that RLIMIT_MEMLOCK applies
 *     --on-demand      (src) register on demand; --require-verify (dst) refuse
 *                      a source that skips the checksums; --stall MS (dst) pause
 *                      before commit; --quiet
 *     --keepalive MS, --keepalive-timeout MS, --send-timeout MS, --credits N,
 *     --recv-queue N   connection options (rdmae_conn_opts)
 * A failed migration also prints "end time: T ms since boot" (CLOCK_BOOTTIME,
 * as /proc/uptime), the moment the engine call returned.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "rdmae_guest.h"
#include "rdmae_migopt.h"
#include "usage.h"

#include "rdmae_engine.h"

#define MAX_SESSIONS 8
#define NBLOCKS RDMAE_GUEST_BLOCKS
#define STATE_CHUNK (64u << 10)
#define HOLD_DEFAULT_MS 60000

enum expect { EX_CONVERGE, EX_NOCONVERGE, EX_CANCEL, EX_MISMATCH, EX_UNKNOWN, EX_FAIL };
enum phase { PH_NONE, PH_PREFLIGHT, PH_ROUND, PH_STATE };
/* Where --hold-at stops; the names are what a test waits for. */
enum point { PT_NONE, PT_PREFLIGHT, PT_ROUND, PT_STATE, PT_STATE_MID, PT_COMMIT };
static const char *const point_names[] = {
	[PT_NONE] = "", [PT_PREFLIGHT] = "preflight", [PT_ROUND] = "round",
	[PT_STATE] = "state", [PT_STATE_MID] = "state-mid", [PT_COMMIT] = "commit",
};

struct cfg {
	bool src;
	const char *addr;
	const char *port;
	struct rdmae_migopt m;		/* what rdmae-perf migrate takes too */
	unsigned int sessions;
	unsigned int repeat;		/* migrations in sequence */
	unsigned int warmup;		/* of them, before the baseline is taken */
	enum expect expect;
	enum phase cancel_at;
	bool cancel_src;
	enum point hold_at;
	int hold_ms;
	bool marks;
	uint64_t dst_size;
	const char *dst_name;
	bool on_demand;
	bool require_verify;		/* dst: refuse a source that skips the checksums */
	int stall_ms;			/* dst: pause before committing (an unresponsive destination) */
	int keepalive_ms;		/* connection options; 0: the transport's default */
	int keepalive_timeout_ms;
	int send_timeout_ms;
	unsigned int credits;
	uint64_t recv_queue;
	bool drop_ipc_lock;
	bool quiet;
	const char *key_file;
	bool auth_none;
};

struct sess {
	const struct cfg *cf;
	unsigned int id;
	struct rdmae_conn *conn;	/* NULL: connecting failed, with conn_err */
	struct rdmae_err conn_err;
	struct rdmae_guest g;
	unsigned int run;		/* 1, 2, ... with --repeat */
	int result;			/* 0 = behaved as expected */
	char msg[512];
};

/* The guest's one "vCPU": a dirtier at the set rate over all of its memory. */
static int guest_start(struct rdmae_guest *g, double rate)
{
	struct rdmae_dirtier_opts d = { .rate = rate, .threads = 1,
					.pattern = RDMAE_DIRTY_UNIFORM };

	return rdmae_guest_start(g, &d, NULL);
}

static int threads_alive(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* CLOCK_BOOTTIME is what /proc/uptime shows: a test script can subtract its own readings. */
static uint64_t boot_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void opts_of(const struct cfg *cf, struct rdmae_session_opts *o)
{
	rdmae_session_opts_default(o);
	o->reg_mode = cf->on_demand ? RDMAE_REG_ON_DEMAND : cf->m.reg;
	o->max_bandwidth = (uint64_t)cf->m.bw_cap;
	o->downtime_limit_ns = cf->m.downtime_ms * 1000000ull;
	o->max_rounds = cf->m.max_rounds;
	o->timeout_ms = cf->m.timeout_ms;
	o->no_verify = cf->m.no_verify;
	o->require_verify = cf->require_verify;
}

static void conn_opts_of(const struct cfg *cf, struct rdmae_conn_opts *o)
{
	rdmae_conn_opts_default(o);
	if (cf->m.lanes)
		o->lanes = (uint16_t)cf->m.lanes;
	if (cf->keepalive_ms)
		o->keepalive_ms = cf->keepalive_ms;
	if (cf->keepalive_timeout_ms)
		o->keepalive_timeout_ms = cf->keepalive_timeout_ms;
	if (cf->send_timeout_ms)
		o->send_timeout_ms = cf->send_timeout_ms;
	if (cf->credits)
		o->credits = (uint16_t)cf->credits;
	if (cf->recv_queue)
		o->recv_queue_bytes = (size_t)cf->recv_queue;
	o->key_file = cf->key_file;
	o->auth_none = cf->auth_none;
}

/*
 * Root has CAP_IPC_LOCK, which lifts RLIMIT_MEMLOCK both for the kernel's
 * pinning and for the engine's pre-flight check: without this, a test
 * cannot show what a host with a low memlock limit does. Capabilities are
 * per thread; called before any thread exists, every later one inherits.
 */
static int drop_cap_ipc_lock(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &h, d))
		return -errno;
	d[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
	d[CAP_TO_INDEX(CAP_IPC_LOCK)].permitted &= ~CAP_TO_MASK(CAP_IPC_LOCK);
	d[CAP_TO_INDEX(CAP_IPC_LOCK)].inheritable &= ~CAP_TO_MASK(CAP_IPC_LOCK);
	if (syscall(SYS_capset, &h, d))
		return -errno;
	return 0;
}

static void say(const struct sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const struct sess *s, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (s->cf->sessions > 1)
		printf("[%s %u] %s\n", s->cf->src ? "src" : "dst", s->id, line);
	else
		printf("%s: %s\n", s->cf->src ? "src" : "dst", line);
	fflush(stdout);
}

/*
 * --hold-at: stop here, as a process that is slow or stuck at this point
 * would, and say so first, so that a test injects its fault at this point
 * rather than after a guessed delay. The hold ends early once the
 * connection has failed: what the fault did is then for the engine to find.
 */
static void hold(const struct sess *s, enum point at)
{
	uint64_t end;
	bool failed = false;

	if (s->cf->hold_at != at)
		return;
	end = boot_ms();
	say(s, "holding at %s for up to %d ms (from %" PRIu64 " ms since boot)", point_names[at],
	    s->cf->hold_ms, end);
	end += (uint64_t)s->cf->hold_ms;
	while (boot_ms() < end) {
		failed = rdmae_conn_error(s->conn, NULL) != 0;
		if (failed)
			break;
		sleep_ms(10);
	}
	say(s, "hold at %s over: %s", point_names[at],
	    failed ? "the connection failed" : "time is up");
}

static void print_round(const struct sess *s, const struct rdmae_round_stats *r)
{
	say(s, "| %5u | %8" PRIu64 " | %8.1f | %6" PRIu64 " | %6" PRIu64 " | %8.1f | %6.1f | %8.1f | "
	    "%9.1f | %8.1f | %8.1f |", r->round, r->pages, (double)r->bytes / 1048576.0,
	    r->zero_pages, r->runs, (double)r->duration_ns / 1e6, (double)r->ack_ns / 1e6,
	    r->bandwidth / 1e6,
	    r->dirty_rate / 1e6, (double)r->remaining_bytes / 1048576.0,
	    (double)r->expected_downtime_ns / 1e6);
}

/* Device state: the version table of every block, as the stream QEMU's vmstate would be. */
static int send_state(struct sess *s, struct rdmae_session *ss, struct rdmae_err *err)
{
	uint32_t hdr[2 + NBLOCKS];
	unsigned int i;
	int ret;

	rdmae_guest_state_header(&s->g, hdr);
	ret = rdmae_session_send_state(ss, hdr, sizeof(hdr), err);
	for (i = 0; i < NBLOCKS && !ret; i++) {
		const uint8_t *p = (const uint8_t *)s->g.b[i].ver;
		size_t len = s->g.b[i].npages * sizeof(uint32_t), off;

		for (off = 0; off < len && !ret; off += STATE_CHUNK) {
			size_t n = len - off < STATE_CHUNK ? len - off : STATE_CHUNK;

			/* Part of the state is out: the operator cancels now. */
			if (s->cf->cancel_at == PH_STATE && s->cf->cancel_src)
				return -ECANCELED;
			ret = rdmae_session_send_state(ss, p + off, n, err);
			if (!ret && i == 0 && off == 0)
				hold(s, PT_STATE_MID);
		}
	}
	return ret;
}

/*
 * The source's memory after a failed migration: every page must still be
 * what its version says, as the destination checks its copy. Only valid
 * with the vCPU paused (a page and its version change together).
 */
static int check_src_memory(const struct sess *s, struct rdmae_guest_check *chk,
			    struct rdmae_err *err)
{
	size_t len = rdmae_guest_state_len(&s->g), off;
	uint32_t hdr[2 + NBLOCKS];
	uint8_t *st = malloc(len);
	unsigned int i;
	int ret;

	if (!st)
		return rdmae_err_set(err, -ENOMEM, "%zu bytes for the version table", len);
	rdmae_guest_state_header(&s->g, hdr);
	memcpy(st, hdr, sizeof(hdr));
	off = sizeof(hdr);
	for (i = 0; i < NBLOCKS; i++) {
		memcpy(st + off, s->g.b[i].ver, s->g.b[i].npages * sizeof(uint32_t));
		off += s->g.b[i].npages * sizeof(uint32_t);
	}
	ret = rdmae_guest_verify(&s->g, st, len, chk, err);
	free(st);
	return ret;
}

static void *cancel_later(void *arg)
{
	struct rdmae_session *ss = arg;
	struct timespec ts = { 0, 300000000 };

	nanosleep(&ts, NULL);
	if (!rdmae_session_cancel(ss, "cancelled by the operator during a round"))
		printf("src: the cancel did not take effect (COMPLETE already sent)\n");
	return NULL;
}

/*
 * --repeat: in the middle of the first migration the counters must see its
 * registrations, or "no growth" afterwards would prove nothing.
 */
static void usage_during(struct sess *s)
{
	struct usage u;

	if (s->cf->repeat < 2 || s->run != 1)
		return;
	usage_take(&u);
	usage_print(s->cf->src ? "src" : "dst", "during migration 1 (after pre-flight)", &u);
	if (u.res[RES_MR] <= 0 || !u.pin_kib)
		snprintf(s->msg, sizeof(s->msg), "the leak check is blind: it sees %ld MRs and %"
			 PRIu64 " KiB pinned during a migration", u.res[RES_MR], u.pin_kib);
}

static int run_src(struct sess *s)
{
	const struct cfg *cf = s->cf;
	struct rdmae_block blocks[NBLOCKS];
	struct rdmae_session_opts so;
	struct rdmae_session_stats st;
	struct rdmae_session *ss = NULL;
	struct rdmae_round_stats rs;
	struct rdmae_plan plan;
	struct rdmae_err err = { 0 };
	const uint64_t *bm[NBLOCKS];
	pthread_t canceller;
	bool cancel_thread = false;
	uint64_t writes_before, sum_before = 0, end_ms;
	unsigned int i;
	int ret;

	rdmae_guest_blocks(&s->g, blocks);
	rdmae_guest_bitmaps(&s->g, bm);
	opts_of(cf, &so);
	/* The device state is known in advance here; it is part of the expected downtime. */
	so.expected_state_bytes = rdmae_guest_state_len(&s->g);
	ret = guest_start(&s->g, cf->m.rate);
	if (ret)
		return ret;
	/* A connection refused (a wrong key, nobody there) ends the migration like any fault. */
	if (!s->conn) {
		err = s->conn_err;
		ret = err.code ? err.code : -ENOTCONN;
		goto out;
	}
	ret = rdmae_session_create(&ss, RDMAE_SOURCE, s->conn, blocks, NBLOCKS, &so, &err);
	if (ret)
		goto out;
	ret = rdmae_session_preflight(ss, &err);
	if (ret)
		goto out;
	say(s, "pre-flight passed: %u blocks, %" PRIu64 " MiB", NBLOCKS, cf->m.size >> 20);
	usage_during(s);
	if (cf->cancel_at == PH_PREFLIGHT && cf->cancel_src) {
		rdmae_session_cancel(ss, "cancelled by the operator after pre-flight");
		ret = -ECANCELED;
		goto out;
	}
	if (cf->cancel_at == PH_ROUND && cf->cancel_src) {
		if (pthread_create(&canceller, NULL, cancel_later, ss) == 0)
			cancel_thread = true;
	}
	say(s, "| round |    pages |      MiB |  zeros |   runs |       ms | ack ms |     MB/s | "
	    "dirty MB/s | left MiB | expected downtime ms |");
	rdmae_guest_harvest(&s->g, RDMAE_HARVEST_ALL);
	for (i = 1;; i++) {
		if (cf->marks)
			say(s, "round %u starting", i);
		ret = rdmae_session_round(ss, bm, &rs, &err);
		if (ret)
			goto out;
		rdmae_guest_harvest(&s->g, RDMAE_HARVEST_REPLACE);
		rdmae_session_plan(ss, bm, &plan);
		/* The plan fills in what is left after the round and its expected downtime. */
		rdmae_session_last_round(ss, &rs);
		print_round(s, &rs);
		if (plan.converged) {
			say(s, "converged: %.1f MiB left, expected downtime %.1f ms: stopping the guest",
			    (double)plan.dirty_bytes / 1048576.0,
			    (double)plan.expected_downtime_ns / 1e6);
			break;
		}
	}
	/* Converged: stop the vCPU, take the last dirty log, send it and the device state. */
	rdmae_guest_pause(&s->g);
	rdmae_session_mark_stopped(ss);
	/* The planned pages were not sent yet: the final round is them plus the last log. */
	rdmae_guest_harvest(&s->g, RDMAE_HARVEST_OR);
	ret = rdmae_session_round(ss, bm, &rs, &err);
	if (ret)
		goto out;
	say(s, "final round, guest stopped:");
	print_round(s, &rs);
	/* The cancel-during-state case also compares a hash of all memory from here on. */
	if (cf->cancel_at == PH_STATE)
		sum_before = rdmae_guest_sum(&s->g);
	hold(s, PT_STATE);
	ret = send_state(s, ss, &err);
	if (ret == -ECANCELED) {
		rdmae_session_cancel(ss, "cancelled by the operator during device state");
		goto out;
	}
	if (ret)
		goto out;
	ret = rdmae_session_complete(ss, &err);
out:
	end_ms = boot_ms();
	if (cancel_thread)
		pthread_join(canceller, NULL);
	/* Not converging is not fatal to the guest: the operator gives up on the migration. */
	if (ret == -ETIME)
		rdmae_session_cancel(ss, "migration did not converge");
	writes_before = atomic_load(&s->g.writes);
	/* Committed: the guest runs on the destination, unpinning is outside the downtime. */
	if (!ret && !rdmae_session_release(ss, &err) && !rdmae_session_stats(ss, &st))
		say(s, "dereg: %.1f ms after COMMIT_OK, %.1f ms in ibv_dereg_mr",
		    (double)st.dereg_after_commit_ns / 1e6, (double)st.dereg_ns / 1e6);
	if (ss && !rdmae_session_stats(ss, &st))
		say(s, "stats: %" PRIu64 " MiB RAM, %" PRIu64 " MiB sent, %" PRIu64 " zero pages, "
		    "%u rounds, %.1f MB/s, setup %.1f ms, downtime %.1f ms (expected %.1f; "
		    "%.1f ms of it hashing after the stop, %.1f ms from COMPLETE to COMMIT_OK), "
		    "hashing %.1f ms in all, total %.1f ms, %u lanes%s",
		    st.total_bytes >> 20, st.transferred_bytes >> 20, st.zero_pages, st.rounds,
		    st.throughput / 1e6, (double)st.setup_ns / 1e6,
		    (double)st.actual_downtime_ns / 1e6, (double)st.expected_downtime_ns / 1e6,
		    (double)st.verify_ns / 1e6, (double)st.commit_ns / 1e6,
		    (double)st.hash_ns / 1e6, (double)st.total_ns / 1e6, st.lanes,
		    cf->m.no_verify ? ", not verified" : "");
	if (ss && !cf->quiet) {
		for (i = 0; i < rdmae_conn_negotiated(s->conn)->lanes; i++) {
			struct rdmae_lane_stats ls;

			if (!rdmae_session_lane_stats(ss, i, &ls))
				say(s, "lane %u: %" PRIu64 " WRITEs, %" PRIu64 " MiB, %" PRIu64
				    " doorbells, %" PRIu64 " completions", i, ls.writes,
				    ls.write_bytes >> 20, ls.doorbells, ls.completions);
		}
	}
	rdmae_session_destroy(ss);
	if (ret) {
		say(s, "migration ended: %s (%d)", err.msg[0] ? err.msg : strerror(-ret), ret);
		say(s, "end time: %" PRIu64 " ms since boot", end_ms);
	}
	/*
	 * A failed or cancelled migration leaves the guest running and its memory
	 * untouched; an unknown outcome leaves it paused, as the engine asks.
	 */
	if (ret == -ENOTRECOVERABLE) {
		if (cf->expect != EX_UNKNOWN)
			snprintf(s->msg, sizeof(s->msg), "outcome unknown: %s", err.msg);
		else
			say(s, "outcome unknown, as it should be: the guest stays paused");
	} else if (ret) {
		struct rdmae_guest_check chk = { 0 };
		struct rdmae_err merr = { 0 };

		if (!rdmae_guest_running(&s->g) && cf->m.rate > 0 &&
		    rdmae_guest_sum(&s->g) != sum_before && sum_before)
			snprintf(s->msg, sizeof(s->msg), "source memory changed by the engine");
		/* Paused for the check, so that no page changes while it is compared. */
		rdmae_guest_pause(&s->g);
		if (check_src_memory(s, &chk, &merr))
			snprintf(s->msg, sizeof(s->msg), "source memory damaged: %s", merr.msg);
		else
			say(s, "source memory intact: %" PRIu64 " pages match their versions",
			    chk.pages);
		guest_start(&s->g, cf->m.rate);
		if (cf->m.rate > 0) {
			sleep_ms(200);
			if (atomic_load(&s->g.writes) == writes_before)
				snprintf(s->msg, sizeof(s->msg), "the source guest is not running");
			else
				say(s, "source guest still running (%" PRIuFAST64 " page writes)",
				    atomic_load(&s->g.writes));
		}
	}
	rdmae_guest_pause(&s->g);
	switch (cf->expect) {
	case EX_CONVERGE:
		s->result = ret || s->msg[0];
		if (!ret)
			say(s, "migration committed: %s",
			    cf->m.no_verify ? "not verified (--no-verify)" : "destination verified");
		break;
	case EX_NOCONVERGE:
		s->result = !(ret == -ETIME && strstr(err.msg, "converge")) || s->msg[0];
		break;
	case EX_CANCEL:
		s->result = ret != -ECANCELED || s->msg[0];
		break;
	case EX_MISMATCH:
		s->result = !ret || !strstr(err.msg, "block") || s->msg[0];
		break;
	case EX_UNKNOWN:
		s->result = ret != -ENOTRECOVERABLE || rdmae_guest_running(&s->g) || s->msg[0];
		break;
	case EX_FAIL:
		if (!ret)
			snprintf(s->msg, sizeof(s->msg), "the migration succeeded; a failure was expected");
		s->result = !ret || ret == -ENOTRECOVERABLE || s->msg[0];
		break;
	}
	if (s->msg[0])
		say(s, "FAIL: %s", s->msg);
	return 0;
}

static int verify_dest(struct sess *s, const uint8_t *state, size_t len)
{
	struct rdmae_guest_check chk;
	struct rdmae_err err = { 0 };
	int ret = rdmae_guest_verify(&s->g, state, len, &chk, &err);

	if (ret) {
		snprintf(s->msg, sizeof(s->msg), "%s", err.msg);
		return -EILSEQ;
	}
	say(s, "verified byte for byte: %" PRIu64 " pages (%" PRIu64 " zero) equal the source's "
	    "at stop", chk.pages, chk.zero_pages);
	return 0;
}

static int run_dst(struct sess *s)
{
	const struct cfg *cf = s->cf;
	struct rdmae_block blocks[NBLOCKS];
	struct rdmae_session_opts so;
	struct rdmae_session *ss = NULL;
	struct rdmae_dest_event ev;
	struct rdmae_session_stats st;
	struct rdmae_err err = { 0 };
	uint8_t *state = NULL;
	size_t slen = 0, scap = 0;
	unsigned int rounds = 0, states = 0;
	uint64_t end_ms;
	int ret;

	if (!s->conn) {
		err = s->conn_err;
		ret = err.code ? err.code : -ENOTCONN;
		goto out;
	}
	rdmae_guest_blocks(&s->g, blocks);
	opts_of(cf, &so);
	ret = rdmae_session_create(&ss, RDMAE_DEST, s->conn, blocks, NBLOCKS, &so, &err);
	if (ret)
		goto out;
	hold(s, PT_PREFLIGHT);
	ret = rdmae_session_preflight(ss, &err);
	if (ret)
		goto out;
	say(s, "pre-flight passed");
	usage_during(s);
	if (cf->cancel_at == PH_PREFLIGHT && !cf->cancel_src) {
		rdmae_session_cancel(ss, "destination cancelled after pre-flight");
		ret = -ECANCELED;
		goto out;
	}
	/*
	 * Reading nothing while the source sends: it runs out of credits.
	 * Everything is advertised first, so that what stops the source is
	 * the credits, not the end of what it may write into (which a
	 * destination that reads nothing would never move either).
	 */
	if (cf->hold_at == PT_ROUND) {
		ret = rdmae_session_dest_advertise_all(ss, &err);
		if (ret)
			goto out;
	}
	hold(s, PT_ROUND);
	for (;;) {
		ret = rdmae_session_dest_step(ss, &ev, &err);
		if (ret)
			goto out;
		if (ev.kind == RDMAE_EV_ROUND) {
			rounds++;
			if (!cf->quiet)
				say(s, "round %u placed", ev.round);
			if (cf->cancel_at == PH_ROUND && !cf->cancel_src) {
				rdmae_session_cancel(ss, "destination cancelled during the rounds");
				ret = -ECANCELED;
				goto out;
			}
		} else if (ev.kind == RDMAE_EV_STATE && ev.len) {
			if (slen + ev.len > scap) {
				size_t ncap = (slen + ev.len) * 2;
				uint8_t *n = realloc(state, ncap);

				if (!n) {
					ret = -ENOMEM;
					goto out;
				}
				state = n;
				scap = ncap;
			}
			memcpy(state + slen, ev.data, ev.len);
			slen += ev.len;
			/* The whole state is here: a destination that stops answering now. */
			if (slen >= rdmae_guest_state_len(&s->g)) {
				if (cf->stall_ms) {
					say(s, "stalling %d ms before the commit", cf->stall_ms);
					sleep_ms(cf->stall_ms);
				}
				hold(s, PT_COMMIT);
			}
			if (++states == 2 && cf->cancel_at == PH_STATE && !cf->cancel_src) {
				rdmae_session_cancel(ss, "destination cancelled during device state");
				ret = -ECANCELED;
				goto out;
			}
		} else if (ev.kind == RDMAE_EV_COMMITTED) {
			break;
		}
	}
	say(s, "committed after %u rounds, %zu bytes of device state%s", rounds, slen,
	    ev.verified ? ", verified" : ", NOT verified");
	/* Where the guest would resume: unpin after it, never in the downtime. */
	ret = rdmae_session_release(ss, &err);
	if (ret)
		goto out;
	if (!rdmae_session_stats(ss, &st))
		say(s, "stats: hashing %.1f ms in all, %.1f ms of it after the final round's "
		    "fence (in the downtime); dereg %.1f ms after COMMIT_OK, %.1f ms in "
		    "ibv_dereg_mr", (double)st.hash_ns / 1e6, (double)st.verify_ns / 1e6,
		    (double)st.dereg_after_commit_ns / 1e6, (double)st.dereg_ns / 1e6);
	ret = verify_dest(s, state, slen);
out:
	end_ms = boot_ms();
	rdmae_session_destroy(ss);
	free(state);
	if (ret && ret != -EILSEQ) {
		say(s, "migration ended: %s (%d)", err.msg[0] ? err.msg : strerror(-ret), ret);
		say(s, "end time: %" PRIu64 " ms since boot", end_ms);
	}
	switch (cf->expect) {
	case EX_CONVERGE:
		s->result = ret != 0 || s->msg[0];
		break;
	case EX_NOCONVERGE:
	case EX_CANCEL:
		s->result = ret != -ECANCELED;
		break;
	case EX_MISMATCH:
		s->result = !ret || !strstr(err.msg, "block");
		break;
	case EX_UNKNOWN:
		/* Committed or not, the destination's own account is all it can give. */
		s->result = 0;
		break;
	case EX_FAIL:
		s->result = !ret || ret == -EILSEQ;
		break;
	}
	if (s->msg[0])
		say(s, "FAIL: %s", s->msg);
	return 0;
}

static void *sess_main(void *arg)
{
	struct sess *s = arg;

	if (s->cf->src)
		run_src(s);
	else
		run_dst(s);
	return NULL;
}

/* A test that expects a failure wants the refused peer's error, not a listener that waits on. */
static int fail_on_drop(void *arg, const struct rdmae_err *e)
{
	(void)arg;
	return e->code ? e->code : -ECONNABORTED;
}

/*
 * One migration of every session: guests, connections, sessions (each in
 * its thread, or in this one when there is one session), teardown. The
 * listener (dst) is kept for the next one with --repeat. Returns the
 * sessions that misbehaved, or -1 when the run could not start.
 */
static int migrate_once(const struct cfg *cf, unsigned int run, struct rdmae_listener **l,
			const struct rdmae_conn_opts *co, const char *role)
{
	struct sess *ss = calloc(cf->sessions, sizeof(*ss));
	pthread_t th[MAX_SESSIONS];
	struct rdmae_err err = { 0 };
	unsigned int i, started, failed = 0;
	bool conn_failed = false;
	int ret = 0;

	if (!ss)
		return -1;
	for (i = 0; i < cf->sessions; i++) {
		struct rdmae_guest_opts go = {
			.id = i,
			.size = !cf->src && cf->dst_size ? cf->dst_size : cf->m.size,
			.name0 = cf->src ? NULL : cf->dst_name,
			.fill = cf->src,
			.mem = cf->m.mem,
			.numa_node = -1,
		};

		ss[i].cf = cf;
		ss[i].id = i;
		ss[i].run = run;
		ret = rdmae_guest_init(&ss[i].g, &go, &err);
		if (ret) {
			fprintf(stderr, "%s: guest %u: %s\n", role, i, err.msg);
			goto out;
		}
		/* After a failed one the others would only repeat its error. */
		if (conn_failed) {
			rdmae_err_set(&ss[i].conn_err, -ENOTCONN, "not connected: session %u "
				      "could not connect", i - 1);
			continue;
		}
		ret = cf->src ? rdmae_connect(&ss[i].conn, cf->addr, cf->port, co, &ss[i].conn_err)
			      : rdmae_accept(*l, &ss[i].conn, 120000, &ss[i].conn_err);
		if (ret) {
			fprintf(stderr, "%s: session %u: %s\n", role, i, ss[i].conn_err.msg);
			conn_failed = true;
			ret = 0;
		}
	}
	/* A one-shot destination listens no longer than it must, as QEMU's -incoming. */
	if (cf->repeat == 1) {
		rdmae_listener_destroy(*l);
		*l = NULL;
	}
	if (cf->sessions == 1) {
		sess_main(&ss[0]);
		started = 1;
	} else {
		for (started = 0; started < cf->sessions; started++)
			if (pthread_create(&th[started], NULL, sess_main, &ss[started])) {
				ret = -EAGAIN;
				break;
			}
		for (i = 0; i < started; i++)
			pthread_join(th[i], NULL);
	}
	for (i = 0; i < started; i++)
		failed += ss[i].result != 0;
out:
	for (i = 0; i < cf->sessions; i++) {
		rdmae_conn_destroy(ss[i].conn);
		rdmae_guest_free(&ss[i].g);
	}
	free(ss);
	return ret ? -1 : (int)failed;
}

/*
 * After the warm-up, what the process holds must come back to the same level
 * each time. Not VmRSS: ASan keeps freed blocks in its quarantine (up to 256
 * MiB), so that grows by design. Not quite VmSize either: the quarantine's
 * own bookkeeping maps a page now and then (4 KiB per ten migrations here);
 * a mapping leaked by every migration is at least a page each time, so
 * VmSize may grow by less than a page per migration, no more.
 */
static int usage_grew(const char *role, const struct usage *base, const struct usage *now,
		      unsigned int migrations)
{
	int bad = 0;
	unsigned int k;

	if (now->fds > base->fds) {
		printf("%s: FAIL: open fds grew from %ld to %ld\n", role, base->fds, now->fds);
		bad++;
	}
	if (now->heap > base->heap) {
		printf("%s: FAIL: heap in use grew from %" PRIu64 " to %" PRIu64 " bytes\n", role,
		       base->heap, now->heap);
		bad++;
	}
	if (now->size_kib >= base->size_kib + 4ull * migrations) {
		printf("%s: FAIL: mapped memory (VmSize) grew from %" PRIu64 " to %" PRIu64
		       " KiB: a page or more per migration\n", role, base->size_kib, now->size_kib);
		bad++;
	}
	if (now->pin_kib > base->pin_kib) {
		printf("%s: FAIL: pinned memory (VmPin) grew from %" PRIu64 " to %" PRIu64
		       " KiB\n", role, base->pin_kib, now->pin_kib);
		bad++;
	}
	for (k = 0; k < RES_KINDS; k++) {
		if (now->res[k] > base->res[k] || now->orphans[k] > base->orphans[k]) {
			printf("%s: FAIL: %s grew from %ld (+%ld orphans) to %ld (+%ld orphans)\n",
			       role, usage_res[k].name, base->res[k], base->orphans[k], now->res[k],
			       now->orphans[k]);
			bad++;
		}
		if (now->res[k] < 0) {
			printf("%s: FAIL: the kernel did not tell how many %s there are\n", role,
			       usage_res[k].name);
			bad++;
		}
	}
	return bad;
}

/* POINT[:MS]: -EINVAL (err says why) for a point this role has not, or a bad MS. */
static int parse_point(const char *v, bool src, enum point *at, int *ms, struct rdmae_err *err)
{
	const char *colon = strchr(v, ':');
	size_t n = colon ? (size_t)(colon - v) : strlen(v);
	unsigned int p;

	*ms = HOLD_DEFAULT_MS;
	if (colon && (rdmae_opt_ms("--hold-at POINT:MS", colon + 1, ms, err) || *ms == 0))
		return rdmae_err_set(err, -EINVAL, "--hold-at '%s': MS is not a number of "
				     "milliseconds above 0", v);
	for (p = PT_PREFLIGHT; p <= PT_COMMIT; p++)
		if (strlen(point_names[p]) == n && !strncmp(v, point_names[p], n)) {
			bool src_point = p == PT_STATE || p == PT_STATE_MID;

			if (src_point != src)
				break;
			*at = (enum point)p;
			return 0;
		}
	return rdmae_err_set(err, -EINVAL, "--hold-at '%s': not a point of the %s (%s)", v,
			     src ? "source" : "destination",
			     src ? "state, state-mid" : "preflight, round, commit");
}

/* Exits: 0 when asked for (--help), 2 for a wrong command line. */
static __attribute__((noreturn)) void usage(int code)
{
	fprintf(code ? stderr : stdout,
		"usage: rdmae_mig dst --addr A [--port P] --key FILE | --auth-none [--size N] ...\n"
		"       rdmae_mig src --addr A [--port P] --key FILE | --auth-none [--size N]\n"
		"             [--rate MB/s] [--expect converge|noconverge|...] ...\n"
		"Both sides are told the size (the destination's may differ: --dst-size).\n"
		"  --addr A [--port P]   dst: address to listen on; src: the destination's\n"
		"                        (default port 7800)\n"
		"  --key FILE | --auth-none   pre-shared key (doc/security.md), or none\n"
		"  [--quiet]             no per-round and per-lane lines\n"
		RDMAE_MIGOPT_USAGE("0", "off")
		"  --sessions N          N migrations at once in this process, 1 to 8\n"
		"  --repeat N            N migrations one after the other; the fds, heap, pinned\n"
		"                        memory and RDMA objects must not grow after the first\n"
		"                        --warmup N (default 1)\n"
		"  --expect E            converge (default), noconverge, cancel, mismatch,\n"
		"                        unknown (after COMPLETE: the guest stays paused), fail\n"
		"                        (an error, the source's guest running and intact)\n"
		"  --cancel-at P         preflight, round or state; --cancel-side src|dst\n"
		"  --hold-at POINT[:MS]  say \"holding at POINT\" and stop there for MS (default\n"
		"                        60000): src state|state-mid, dst preflight|round|commit\n"
		"  --marks               src: print \"round N starting\" before each round\n"
		"  --dst-size N          dst: guest RAM other than the source's\n"
		"  --dst-name NAME       dst: pc.ram named otherwise\n"
		"  --drop-ipc-lock       give up CAP_IPC_LOCK: RLIMIT_MEMLOCK applies\n"
		"  --on-demand           src: register on demand instead of pinning all\n"
		"  --require-verify      dst: refuse a source that skips the checksums\n"
		"  --stall MS            dst: pause before the commit\n"
		"  --keepalive MS, --keepalive-timeout MS, --send-timeout MS\n"
		"                        connection timeouts (0 or unset: the transport's)\n"
		"  --credits N           receive credits, 1 to 65535; --recv-queue N (K/M/G)\n");
	exit(code);
}

/* A wrong command line: what is wrong, then exit 2. */
static __attribute__((noreturn)) void bad_usage(const char *msg)
{
	fprintf(stderr, "rdmae_mig: %s (--help lists the options)\n", msg);
	exit(2);
}

/* This driver's own options, by getopt_long code; 0, or -EINVAL with err saying why. */
static int parse_own(struct cfg *cf, int opt, const char *arg, const char **hold_arg,
		     struct rdmae_err *err)
{
	static const char *const expects[] = {
		[EX_CONVERGE] = "converge", [EX_NOCONVERGE] = "noconverge",
		[EX_CANCEL] = "cancel", [EX_MISMATCH] = "mismatch", [EX_UNKNOWN] = "unknown",
		[EX_FAIL] = "fail",
	};
	/* Indexed by enum phase - 1. */
	static const char *const phases[] = { "preflight", "round", "state" };
	static const char *const sides[] = { "src", "dst" };
	int i = 0, ret = 0;

	switch (opt) {
	case 'a': cf->addr = arg; break;
	case 'p': cf->port = arg; break;
	case 'n': ret = rdmae_opt_uint("--sessions", arg, 1, MAX_SESSIONS, &cf->sessions, err); break;
	case 'x': ret = rdmae_opt_uint("--repeat", arg, 1, UINT_MAX, &cf->repeat, err); break;
	case 'w': ret = rdmae_opt_uint("--warmup", arg, 0, UINT_MAX, &cf->warmup, err); break;
	case 'e':
		ret = rdmae_opt_choice("--expect", arg, expects, 6, &i, err);
		cf->expect = (enum expect)i;
		break;
	case 'c':
		ret = rdmae_opt_choice("--cancel-at", arg, phases, 3, &i, err);
		cf->cancel_at = ret ? PH_NONE : (enum phase)(i + 1);
		break;
	case 'C':
		ret = rdmae_opt_choice("--cancel-side", arg, sides, 2, &i, err);
		cf->cancel_src = i == 0;
		break;
	case 'h': *hold_arg = arg; break;
	case 'M': cf->marks = true; break;
	case 'S': ret = rdmae_opt_size("--dst-size", arg, 1u << 20, &cf->dst_size, err); break;
	case 'N': cf->dst_name = arg; break;
	case 'L': cf->drop_ipc_lock = true; break;
	case 'o': cf->on_demand = true; break;
	case 'R': cf->require_verify = true; break;
	case 'W': ret = rdmae_opt_ms("--stall", arg, &cf->stall_ms, err); break;
	case 'k': ret = rdmae_opt_ms("--keepalive", arg, &cf->keepalive_ms, err); break;
	case 't': ret = rdmae_opt_ms("--keepalive-timeout", arg, &cf->keepalive_timeout_ms, err); break;
	case 'D': ret = rdmae_opt_ms("--send-timeout", arg, &cf->send_timeout_ms, err); break;
	case 'E': ret = rdmae_opt_uint("--credits", arg, 1, UINT16_MAX, &cf->credits, err); break;
	case 'Q': ret = rdmae_opt_size("--recv-queue", arg, 1, &cf->recv_queue, err); break;
	case 'q': cf->quiet = true; break;
	case 'K': cf->key_file = arg; break;
	case 'A': cf->auth_none = true; break;
	default: usage(2);	/* getopt has said what */
	}
	return ret;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		RDMAE_MIGOPT_OPTIONS,
		{ "addr", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },
		{ "sessions", required_argument, NULL, 'n' },
		{ "repeat", required_argument, NULL, 'x' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "expect", required_argument, NULL, 'e' },
		{ "cancel-at", required_argument, NULL, 'c' },
		{ "cancel-side", required_argument, NULL, 'C' },
		{ "hold-at", required_argument, NULL, 'h' },
		{ "marks", no_argument, NULL, 'M' },
		{ "dst-size", required_argument, NULL, 'S' },
		{ "dst-name", required_argument, NULL, 'N' },
		{ "drop-ipc-lock", no_argument, NULL, 'L' },
		{ "on-demand", no_argument, NULL, 'o' },
		{ "require-verify", no_argument, NULL, 'R' },
		{ "stall", required_argument, NULL, 'W' },
		{ "keepalive", required_argument, NULL, 'k' },
		{ "keepalive-timeout", required_argument, NULL, 't' },
		{ "send-timeout", required_argument, NULL, 'D' },
		{ "credits", required_argument, NULL, 'E' },
		{ "recv-queue", required_argument, NULL, 'Q' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "key", required_argument, NULL, 'K' },
		{ "auth-none", no_argument, NULL, 'A' },
		{ "help", no_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 }
	};
	struct cfg cf = { .port = "7800", .sessions = 1, .repeat = 1, .warmup = 1 };
	struct rdmae_listener *l = NULL;
	struct rdmae_conn_opts co;
	struct rdmae_err err = { 0 };
	struct usage base = { 0 }, now;
	const char *role = argv[1];
	const char *hold_arg = NULL;
	unsigned int i, run, failed = 0;
	int opt, ret;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		usage(0);
	if (argc < 2)
		bad_usage("src or dst?");
	if (!strcmp(argv[1], "src"))
		cf.src = true;
	else if (strcmp(argv[1], "dst") != 0)
		bad_usage("the first argument must be src or dst");
	rdmae_migopt_init(&cf.m, 0, RDMAE_GUEST_SMALL);
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (opt == 'H')
			usage(0);
		ret = rdmae_migopt_parse(&cf.m, opt, optarg, &err);
		if (!ret)
			ret = parse_own(&cf, opt, optarg, &hold_arg, &err);
		if (ret < 0)
			bad_usage(err.msg);
	}
	if (optind != argc) {
		snprintf(err.msg, sizeof(err.msg), "unexpected argument '%s'", argv[optind]);
		bad_usage(err.msg);
	}
	if (hold_arg && parse_point(hold_arg, cf.src, &cf.hold_at, &cf.hold_ms, &err))
		bad_usage(err.msg);
	if (!cf.addr)
		bad_usage("--addr is required");
	if (cf.repeat > 1 && cf.warmup >= cf.repeat)
		bad_usage("--warmup must be below --repeat");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (cf.drop_ipc_lock) {
		ret = drop_cap_ipc_lock();
		if (ret) {
			fprintf(stderr, "%s: dropping CAP_IPC_LOCK: %s\n", role, strerror(-ret));
			return 1;
		}
		printf("%s: running without CAP_IPC_LOCK: RLIMIT_MEMLOCK applies\n", role);
	}
	conn_opts_of(&cf, &co);
	if (!cf.src) {
		if (rdmae_listen(&l, cf.addr, cf.port, &co, &err)) {
			fprintf(stderr, "dst: %s\n", err.msg);
			return 1;
		}
		if (cf.expect == EX_FAIL)
			rdmae_listener_on_drop(l, fail_on_drop, NULL);
		printf("dst: listening on %s:%d for %u session(s)\n", cf.addr,
		       rdmae_listener_port(l), cf.sessions);
	}
	for (run = 1; run <= cf.repeat; run++) {
		int n = migrate_once(&cf, run, &l, &co, role);

		if (n < 0) {
			rdmae_listener_destroy(l);
			return 1;
		}
		failed += (unsigned int)n;
		if (cf.repeat == 1)
			break;
		if (n) {
			printf("%s: migration %u of %u misbehaved; stopping\n", role, run, cf.repeat);
			break;
		}
		usage_take(&now);
		if (run == cf.warmup) {
			base = now;
			usage_print(role, "after the warm-up (baseline)", &now);
		} else if (run <= 3 || run % 10 == 0 || run == cf.repeat) {
			char when[64];

			snprintf(when, sizeof(when), "after migration %u", run);
			usage_print(role, when, &now);
		}
		if (run == cf.repeat) {
			int bad = usage_grew(role, &base, &now, cf.repeat - cf.warmup);

			if (!bad)
				printf("%s: no growth over %u migrations after the warm-up: fds, heap, "
				       "VmPin and RDMA objects as at the baseline, VmSize %+" PRId64
				       " KiB\n", role, cf.repeat - cf.warmup,
				       (int64_t)(now.size_kib - base.size_kib));
			failed += (unsigned int)bad;
		}
	}
	rdmae_listener_destroy(l);
	/*
	 * Nothing may be left behind: no progress thread, no vCPU, no canceller.
	 * A joined thread can stay listed in /proc for a moment while the kernel
	 * finishes its exit; a leaked one stays for good. Allow one second.
	 */
	for (i = 0; i < 100 && threads_alive() != 1; i++)
		sleep_ms(10);
	if (threads_alive() != 1) {
		printf("%s: FAIL: %d threads still alive after teardown\n", role, threads_alive());
		failed++;
	}
	if (cf.repeat > 1)
		printf("%s: %s (%u migrations)\n", role, failed ? "FAIL" : "PASS", cf.repeat);
	else
		printf("%s: %s (%u of %u sessions behaved as expected)\n", role,
		       failed ? "FAIL" : "PASS", failed > cf.sessions ? 0 : cf.sessions - failed,
		       cf.sessions);
	return failed ? 1 : 0;
}
