/* SPDX-License-Identifier: MIT */
/*
 * The migration session: pre-flight, rounds, device state, commit, cancel.
 * doc/protocol-engine.md describes the messages and the ordering argument;
 * the comments here point at the places where the ordering is enforced.
 */
#include "rdmae_engine.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../rdma/rdmae_runs.h"
#include "../rdma/rdmae_write.h"
#include "checksum.h"
#include "commit_rules.h"
#include "hostcheck.h"
#include "pagesums.h"
#include "proto.h"
#include "rdmae_converge.h"
#include "rdmae_dirty.h"

#define NSEC_PER_MSEC		1000000ull
#define NSEC_PER_SEC		1000000000ull
#define MIB			(1ull << 20)

#define DEF_DOWNTIME_NS		(300 * NSEC_PER_MSEC)
#define DEF_MAX_ROUNDS		30
#define DEF_TIMEOUT_MS		30000

#define RUN_BATCH		256		/* runs per rdmae_write */
#define ZERO_BATCH		1024		/* zero runs per ZERO_RUNS message */
#define BATCH_BYTES_MAX		(64 * MIB)	/* per rdmae_write: bounds a rate-limit step */
#define BATCH_TIME_NS		(50 * NSEC_PER_MSEC)	/* capped: a batch is ~50 ms of data */
#define WALK_SEGMENT_BYTES	(1ull << 30)	/* scanned between progress checks */
#define SLEEP_SLICE_NS		(50 * NSEC_PER_MSEC)
#define PROGRESS_MAX_MS		1000		/* a round says it is alive at least this often */
#define MEMLOCK_SLACK		(64 * MIB)
#define CANCEL_SEND_MS		1000		/* best effort: longest wait for CANCEL to go */
#define STATE_CHUNK_MAX		(16 * MIB)
#define PAGE_SUMS_CHUNK_MAX	(1u << 20)	/* page sums per PAGE_SUMS answer */
#define RECENT_ROUNDS		3		/* rounds the expected downtime is measured over */

enum sess_state { ST_NEW, ST_READY, ST_DONE, ST_FAILED };

struct sblock {
	struct rdmae_block b;		/* the caller's; name borrowed */
	uint64_t npages;
	struct rdmae_region *region;
	struct rdmae_bufdesc *descs;	/* source: the destination's, for remote */
	struct rdmae_remote remote;
	struct rdmae_pagesums ps;	/* page sums, when verifying (see pagesums.h) */
};

struct zrun {
	uint64_t first;
	uint64_t n;
};

struct rdmae_session {
	enum rdmae_role role;
	struct rdmae_conn *conn;
	struct rdmae_session_opts o;
	size_t nblocks;
	struct sblock *blk;		/* in the source's order on both sides */
	uint64_t *ctx_len;
	uint64_t *ctx_pages;
	struct rdmae_proto_ctx ctx;
	bool have_ctx;			/* destination: only once the blocks are matched */
	uint32_t max_msg;
	int slow_timeout_ms;		/* for waits that scale with memory size */
	uint64_t progress_ns;
	uint64_t total_bytes;

	_Atomic int state;
	atomic_flag busy;		/* one engine call at a time */
	atomic_bool stop;		/* cancelled or failed: loops bail out */
	struct rdmae_commit_gate gate;	/* under cancel_lock: cancel against COMPLETE / COMMIT_OK */
	bool sums;			/* page sums kept (source: verifying; destination: always) */
	bool peer_verdict;		/* the peer's CANCEL / COMMIT_FAIL explained a failure */
	bool final_round;		/* source: a round went with the VM stopped */
	_Atomic uint64_t max_bw;	/* bytes/s, 0 = unlimited; settable while running */
	_Atomic uint64_t downtime_ns;	/* the convergence limit; settable while running */

	pthread_mutex_t lock;		/* stats, failure record, stop reason, timing */
	pthread_mutex_t reg_lock;	/* blk[].region on the destination */
	pthread_mutex_t cancel_lock;	/* one shutdown at a time */
	int stop_code;
	char stop_why[RDMAE_PROTO_REASON_LEN];
	int fail_code;
	char fail_msg[RDMAE_ERR_LEN];

	/* source */
	struct rdmae_run *runs;
	struct zrun *zruns;
	uint8_t *zmsg;
	unsigned int precopy_rounds;
	bool stopped;
	uint64_t stopped_ns;
	uint64_t prev_round_start_ns;
	uint64_t sum_round_ns;
	struct rdmae_round_stats recent[RECENT_ROUNDS];	/* last rounds: the downtime model */
	uint64_t hashed_bytes;		/* with st.hash_ns: the rate hashing runs at here */
	uint64_t last_send_ns;
	uint64_t state_off;
	struct rdmae_round_stats last_rs;
	struct rdmae_sums_guard sums_guard;	/* what the destination may ask of our page sums */

	/* destination */
	void *ev_msg;			/* holds the last STATE event's bytes */
	unsigned int rx_rounds;
	bool rx_last_final;		/* the last round placed had the FINAL flag */
	bool rx_sums;			/* DATA_RUNS came: the source verifies, keep sums */
	uint64_t rx_state;
	uint64_t rx_round_ns;

	uint64_t start_ns;
	struct rdmae_session_stats st;
};

/* Per-round state of the source's walk. */
struct round_ctx {
	struct rdmae_session *s;
	struct rdmae_err *err;
	unsigned int round;
	bool final;			/* the VM is stopped: hashing here is in the downtime */
	size_t block;
	uint64_t seg_first;		/* first page of the segment being walked */
	size_t nruns;
	uint64_t batch_bytes;
	uint64_t batch_cap;
	size_t nzero;
	struct rdmae_ratelimit rl;
	uint64_t data_pages;
	uint64_t bytes;
	uint64_t zero_pages;
	uint64_t runs;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

static const char *role_name(enum rdmae_role r)
{
	return r == RDMAE_SOURCE ? "source" : "destination";
}

static const char *peer_name(enum rdmae_role r)
{
	return r == RDMAE_SOURCE ? "destination" : "source";
}

void rdmae_session_opts_default(struct rdmae_session_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->reg_mode = RDMAE_REG_PIN_ALL;
	o->downtime_limit_ns = DEF_DOWNTIME_NS;
	o->max_rounds = DEF_MAX_ROUNDS;
	o->timeout_ms = DEF_TIMEOUT_MS;
}

/* ---- shutdown: cancel, failures ---- */

struct cancel_tx {
	struct rdmae_conn *conn;
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	size_t len;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void *cancel_tx_main(void *arg)
{
	struct cancel_tx *t = arg;

	rdmae_send(t->conn, t->msg, t->len, NULL);
	pthread_mutex_lock(&t->lock);
	t->done = true;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/*
 * Tell the peer, but never hang on it: rdmae_send blocks while no credit is
 * usable, which a dead peer never grants. The send runs in a helper thread;
 * past the deadline the connection is aborted, which wakes it.
 */
static void send_cancel_bounded(struct rdmae_conn *c, int code, const char *why)
{
	struct cancel_tx t = { .conn = c };
	pthread_condattr_t ca;
	struct timespec dl;
	pthread_t th;

	t.len = rdmae_msg_cancel_encode(t.msg, code, why);
	if (pthread_condattr_init(&ca))
		return;
	if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) || pthread_cond_init(&t.cond, &ca))
		goto out_attr;
	if (pthread_mutex_init(&t.lock, NULL))
		goto out_cond;
	if (pthread_create(&th, NULL, cancel_tx_main, &t))
		goto out_mutex;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += CANCEL_SEND_MS / 1000;
	dl.tv_nsec += (long)(CANCEL_SEND_MS % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&t.lock);
	while (!t.done)
		if (pthread_cond_timedwait(&t.cond, &t.lock, &dl) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&t.lock);
	if (!t.done)
		rdmae_conn_abort(c, code, why);
	pthread_join(th, NULL);
out_mutex:
	pthread_mutex_destroy(&t.lock);
out_cond:
	pthread_cond_destroy(&t.cond);
out_attr:
	pthread_condattr_destroy(&ca);
}

static int stopped_err(struct rdmae_session *s, struct rdmae_err *err);

static void destroy_regions(struct rdmae_session *s)
{
	size_t i;

	pthread_mutex_lock(&s->reg_lock);
	for (i = 0; i < s->nblocks; i++) {
		rdmae_region_destroy(s->blk[i].region);
		s->blk[i].region = NULL;
	}
	pthread_mutex_unlock(&s->reg_lock);
}

/*
 * Stop the session for good: loops bail out, the peer is told (when notify),
 * the connection is aborted so that every blocked call wakes, and the
 * destination's memory stops being remotely writable. The first caller's
 * reason sticks; a concurrent second caller returns only once the regions
 * are gone.
 */
static void shut_locked(struct rdmae_session *s, int code, const char *prefix, const char *why,
			bool notify)
{
	/* From here on COMPLETE (source) or COMMIT_OK (destination) may not leave. */
	s->gate.stopped = true;
	if (!atomic_load(&s->stop)) {
		pthread_mutex_lock(&s->lock);
		s->stop_code = code;
		snprintf(s->stop_why, sizeof(s->stop_why), "%s%s", prefix, why);
		pthread_mutex_unlock(&s->lock);
		atomic_store(&s->stop, true);
		if (notify)
			send_cancel_bounded(s->conn, code, why);
		rdmae_conn_abort(s->conn, code, s->stop_why);
	}
	if (s->role == RDMAE_DEST)
		destroy_regions(s);
}

static void shut(struct rdmae_session *s, int code, const char *prefix, const char *why,
		 bool notify)
{
	pthread_mutex_lock(&s->cancel_lock);
	shut_locked(s, code, prefix, why, notify);
	pthread_mutex_unlock(&s->cancel_lock);
}

/*
 * The point of no return (COMPLETE on the source, COMMIT_OK on the
 * destination), ordered against cancel by the cancel lock: either a cancel
 * came first and the message never leaves, or the message leaves and every
 * later cancel reports that it did not take effect.
 */
static int decide(struct rdmae_session *s, const char *op, struct rdmae_err *err)
{
	int rc;

	pthread_mutex_lock(&s->cancel_lock);
	rc = rdmae_gate_decide(&s->gate);
	pthread_mutex_unlock(&s->cancel_lock);
	if (rc)
		return atomic_load(&s->stop) ? stopped_err(s, err)
					     : rdmae_err_set(err, rc, "%s: cancelled", op);
	return 0;
}

static bool decided(struct rdmae_session *s)
{
	bool d;

	pthread_mutex_lock(&s->cancel_lock);
	d = s->gate.decided;
	pthread_mutex_unlock(&s->cancel_lock);
	return d;
}

static int stopped_err(struct rdmae_session *s, struct rdmae_err *err)
{
	int code;

	pthread_mutex_lock(&s->lock);
	code = s->stop_code ? s->stop_code : -ECANCELED;
	rdmae_err_set(err, code, "%s", s->stop_why);
	pthread_mutex_unlock(&s->lock);
	return code;
}

static void set_failed(struct rdmae_session *s, int rc, const struct rdmae_err *err)
{
	pthread_mutex_lock(&s->lock);
	s->fail_code = rc;
	snprintf(s->fail_msg, sizeof(s->fail_msg), "%s", err->msg);
	pthread_mutex_unlock(&s->lock);
	atomic_store(&s->state, ST_FAILED);
}

static int peer_cancelled(struct rdmae_session *s, const struct rdmae_msg *m,
			  struct rdmae_err *err);

/*
 * A peer that gives up sends its verdict (CANCEL, PREFLIGHT_ERR,
 * COMMIT_FAIL) and then disconnects, so a transport error may only be the
 * echo of a verdict already queued. Look for it among the messages that
 * arrived before the failure; returns its code, or 0 when there is none.
 */
static int peer_verdict_queued(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_msg m;
	void *buf;
	size_t len;
	int rc = 0;

	while (!rc && rdmae_recv(s->conn, &buf, &len, 0, NULL) == 0) {
		/* Every verdict below ends the loop with rc set: the peer has spoken. */
		if (!rdmae_msg_decode(buf, len, s->have_ctx ? &s->ctx : NULL, &m, NULL)) {
			if (m.type == RDMAE_MSG_CANCEL) {
				rc = peer_cancelled(s, &m, err);
			} else if (m.type == RDMAE_MSG_PREFLIGHT_ERR) {
				rc = rdmae_err_set(err, m.u.preflight_err.error, "%s",
						   m.u.preflight_err.reason);
				set_failed(s, rc, err);
			} else if (m.type == RDMAE_MSG_COMMIT_FAIL) {
				rc = rdmae_err_set(err, m.u.commit_fail.error, "%s",
						   m.u.commit_fail.reason);
				set_failed(s, rc, err);
			}
		}
		free(buf);
	}
	if (rc)
		s->peer_verdict = true;
	return rc;
}

/*
 * A fatal error: record it and shut down, telling the peer why when the
 * connection can still carry it.
 */
static int fail(struct rdmae_session *s, int rc, struct rdmae_err *err)
{
	int verdict;

	/*
	 * Already stopped: a local cancel, or a failure another thread saw
	 * first. This error is its echo (a cancelled source tells the peer,
	 * which hangs up; our own abort fails every call), and the first
	 * reason stands, or a cancel that took effect would read as a link
	 * failure.
	 */
	if (atomic_load(&s->stop))
		return stopped_err(s, err);
	verdict = rdmae_conn_error(s->conn, NULL) ? peer_verdict_queued(s, err) : 0;
	if (verdict) {
		shut(s, verdict, "", err->msg, false);
		return verdict;
	}
	set_failed(s, rc, err);
	shut(s, rc, "", err->msg, rdmae_conn_error(s->conn, NULL) == 0);
	return rc;
}

/* The peer sent CANCEL: stop without answering. */
static int peer_cancelled(struct rdmae_session *s, const struct rdmae_msg *m,
			  struct rdmae_err *err)
{
	char why[RDMAE_ERR_LEN];

	snprintf(why, sizeof(why), "cancelled by the %s: %s", peer_name(s->role),
		 m->u.cancel.reason);
	rdmae_err_set(err, -ECANCELED, "%s", why);
	set_failed(s, -ECANCELED, err);
	shut(s, -ECANCELED, "", why, false);
	return -ECANCELED;
}

static int unexpected(struct rdmae_session *s, const struct rdmae_msg *m, const char *waiting,
		      struct rdmae_err *err)
{
	rdmae_err_set(err, -EPROTO, "%s: unexpected %s from the %s while waiting for %s",
		      role_name(s->role), rdmae_msg_type_name(m->type), peer_name(s->role),
		      waiting);
	return fail(s, -EPROTO, err);
}

/* ---- entry and exit of the public calls ---- */

static int enter(struct rdmae_session *s, enum rdmae_role role, int want, const char *op,
		 struct rdmae_err *err)
{
	int st, rc;

	if (atomic_flag_test_and_set(&s->busy))
		return rdmae_err_set(err, -EBUSY, "%s: another call on this session is in progress",
				     op);
	if (s->role != role) {
		rc = rdmae_err_set(err, -EINVAL, "%s: not a %s call", op, role_name(s->role));
		goto out;
	}
	st = atomic_load(&s->state);
	if (st == ST_FAILED) {
		pthread_mutex_lock(&s->lock);
		rc = rdmae_err_set(err, s->fail_code, "%s", s->fail_msg);
		pthread_mutex_unlock(&s->lock);
		goto out;
	}
	if (atomic_load(&s->stop)) {
		rc = stopped_err(s, err);
		goto out;
	}
	if (st != want) {
		static const char *const names[] = { "new", "ready", "done", "failed" };

		rc = rdmae_err_set(err, -EINVAL, "%s: session is %s, not %s", op, names[st],
				   names[want]);
		goto out;
	}
	return 0;
out:
	atomic_flag_clear(&s->busy);
	return rc;
}

static void leave(struct rdmae_session *s)
{
	atomic_flag_clear(&s->busy);
}

/* ---- messages ---- */

static int send_msg(struct rdmae_session *s, const void *buf, size_t len, struct rdmae_err *err)
{
	int rc = rdmae_send(s->conn, buf, len, err);

	if (!rc)
		s->last_send_ns = now_ns();
	return rc;
}

/* Time spent hashing, and the part of it after the stop (the verification in the downtime). */
static void account_hash(struct rdmae_session *s, uint64_t t0, bool at_stop, uint64_t bytes)
{
	uint64_t dt = now_ns() - t0;

	pthread_mutex_lock(&s->lock);
	s->st.hash_ns += dt;
	s->hashed_bytes += bytes;
	if (at_stop)
		s->st.verify_ns += dt;
	pthread_mutex_unlock(&s->lock);
}

/*
 * Next message, decoded and checked. *buf is the caller's to free on
 * success. A malformed message is fatal (the peer is told); a transport
 * timeout is not, the caller decides.
 */
static int recv_msg(struct rdmae_session *s, int timeout_ms, void **buf, struct rdmae_msg *m,
		    struct rdmae_err *err)
{
	size_t len;
	int rc;

	*buf = NULL;
	rc = rdmae_recv(s->conn, buf, &len, timeout_ms, err);
	if (rc)
		return rc;
	rc = rdmae_msg_decode(*buf, len, s->have_ctx ? &s->ctx : NULL, m, err);
	if (rc) {
		free(*buf);
		*buf = NULL;
		return fail(s, rc, err);
	}
	return 0;
}

/* ---- create / destroy ---- */

int rdmae_session_check_blocks(const struct rdmae_block *b, size_t n, struct rdmae_err *err)
{
	size_t i, j;

	if (!b || !n || n > RDMAE_PROTO_MAX_BLOCKS)
		return rdmae_err_set(err, -EINVAL, "session create: %zu blocks (1..%d allowed)", n,
				     RDMAE_PROTO_MAX_BLOCKS);
	for (i = 0; i < n; i++) {
		size_t nl = b[i].name ? strnlen(b[i].name, RDMAE_BLOCK_NAME_MAX) : 0;

		if (!nl || nl >= RDMAE_BLOCK_NAME_MAX)
			return rdmae_err_set(err, -EINVAL,
					     "session create: block %zu: name empty or %d bytes"
					     " or more", i, RDMAE_BLOCK_NAME_MAX);
		if (!b[i].host || !b[i].page_size || b[i].page_size > UINT32_MAX ||
		    (b[i].page_size & (b[i].page_size - 1)) || !b[i].len ||
		    b[i].len % b[i].page_size)
			return rdmae_err_set(err, -EINVAL,
					     "session create: block '%s': needs memory, a"
					     " power-of-two page size and a length that is a"
					     " non-zero multiple of it (len %zu, page size %zu)",
					     b[i].name, b[i].len, b[i].page_size);
		for (j = 0; j < i; j++)
			if (!strcmp(b[i].name, b[j].name))
				return rdmae_err_set(err, -EINVAL,
						     "session create: block name '%s' used twice",
						     b[i].name);
	}
	return 0;
}

/* Context the decoder checks indices and ranges against, in blk[] order. */
static void set_ctx(struct rdmae_session *s)
{
	size_t i;

	for (i = 0; i < s->nblocks; i++) {
		s->ctx_len[i] = s->blk[i].b.len;
		s->ctx_pages[i] = s->blk[i].npages;
	}
	s->ctx.nblocks = (uint32_t)s->nblocks;
	s->ctx.block_len = s->ctx_len;
	s->ctx.block_pages = s->ctx_pages;
	s->ctx.max_msg = s->max_msg;
	s->have_ctx = true;
}

int rdmae_session_create(struct rdmae_session **out, enum rdmae_role role, struct rdmae_conn *conn,
			 const struct rdmae_block *blocks, size_t nblocks,
			 const struct rdmae_session_opts *o, struct rdmae_err *err)
{
	const struct rdmae_negotiated *neg;
	struct rdmae_session *s;
	size_t i;
	int rc;

	if (!out || !conn || (role != RDMAE_SOURCE && role != RDMAE_DEST))
		return rdmae_err_set(err, -EINVAL, "session create: no connection or bad role");
	rc = rdmae_session_check_blocks(blocks, nblocks, err);
	if (rc)
		return rc;
	neg = rdmae_conn_negotiated(conn);
	if (!neg || neg->max_fragmented_size < RDMAE_MIN_FRAG_SIZE)
		return rdmae_err_set(err, -ENOTCONN,
				     "session create: connection to %s not negotiated",
				     rdmae_conn_peer(conn));

	s = calloc(1, sizeof(*s));
	if (!s)
		return rdmae_err_set(err, -ENOMEM, "session create: out of memory");
	s->role = role;
	s->conn = conn;
	if (o)
		s->o = *o;
	else
		rdmae_session_opts_default(&s->o);
	/* Zero means default, as for the connection options. */
	if (!s->o.downtime_limit_ns)
		s->o.downtime_limit_ns = DEF_DOWNTIME_NS;
	if (!s->o.max_rounds)
		s->o.max_rounds = DEF_MAX_ROUNDS;
	if (!s->o.timeout_ms)
		s->o.timeout_ms = DEF_TIMEOUT_MS;
	s->nblocks = nblocks;
	s->max_msg = neg->max_fragmented_size;
	atomic_init(&s->max_bw, s->o.max_bandwidth);
	atomic_init(&s->downtime_ns, s->o.downtime_limit_ns);
	atomic_init(&s->state, ST_NEW);
	atomic_flag_clear(&s->busy);
	atomic_init(&s->stop, false);

	rc = -ENOMEM;
	s->blk = calloc(nblocks, sizeof(*s->blk));
	s->ctx_len = calloc(nblocks, sizeof(*s->ctx_len));
	s->ctx_pages = calloc(nblocks, sizeof(*s->ctx_pages));
	if (!s->blk || !s->ctx_len || !s->ctx_pages)
		goto err_free;
	if (role == RDMAE_SOURCE) {
		s->runs = calloc(RUN_BATCH, sizeof(*s->runs));
		s->zruns = calloc(ZERO_BATCH, sizeof(*s->zruns));
		s->zmsg = malloc(rdmae_msg_zero_runs_size(ZERO_BATCH));
		if (!s->runs || !s->zruns || !s->zmsg)
			goto err_free;
	}
	/* The destination cannot know yet whether the source will verify. */
	s->sums = role == RDMAE_DEST || !s->o.no_verify;
	for (i = 0; i < nblocks; i++) {
		s->blk[i].b = blocks[i];
		s->blk[i].npages = blocks[i].len / blocks[i].page_size;
		s->total_bytes += blocks[i].len;
		if (s->sums && rdmae_pagesums_init(&s->blk[i].ps, s->blk[i].npages,
						   blocks[i].page_size, NULL))
			goto err_free;
	}
	/* The destination learns the source's order at pre-flight. */
	if (role == RDMAE_SOURCE)
		set_ctx(s);

	if (s->o.timeout_ms < 0) {
		s->slow_timeout_ms = -1;
	} else {
		/* Pinning and hashing run at well over 1 GiB/s: allow 1 ms per MiB. */
		uint64_t t = (uint64_t)s->o.timeout_ms + s->total_bytes / MIB;

		s->slow_timeout_ms = t > INT_MAX ? INT_MAX : (int)t;
	}
	s->progress_ns = (uint64_t)PROGRESS_MAX_MS * NSEC_PER_MSEC;
	if (s->o.timeout_ms > 0 && (uint64_t)s->o.timeout_ms * NSEC_PER_MSEC / 4 < s->progress_ns)
		s->progress_ns = (uint64_t)s->o.timeout_ms * NSEC_PER_MSEC / 4;
	s->st.total_bytes = s->total_bytes;
	s->st.lanes = neg->lanes;

	if (pthread_mutex_init(&s->lock, NULL))
		goto err_free;
	if (pthread_mutex_init(&s->reg_lock, NULL))
		goto err_lock;
	if (pthread_mutex_init(&s->cancel_lock, NULL))
		goto err_reg_lock;
	*out = s;
	return 0;

err_reg_lock:
	pthread_mutex_destroy(&s->reg_lock);
err_lock:
	pthread_mutex_destroy(&s->lock);
err_free:
	for (i = 0; s->blk && i < nblocks; i++)
		rdmae_pagesums_free(&s->blk[i].ps);
	free(s->zmsg);
	free(s->zruns);
	free(s->runs);
	free(s->ctx_pages);
	free(s->ctx_len);
	free(s->blk);
	free(s);
	return rdmae_err_set(err, rc, "session create: out of memory");
}

void rdmae_session_destroy(struct rdmae_session *s)
{
	size_t i;

	if (!s)
		return;
	free(s->ev_msg);
	/* The destination's memory is unpinned here, after the guest runs, never in the downtime. */
	for (i = 0; i < s->nblocks; i++) {
		rdmae_region_destroy(s->blk[i].region);
		free(s->blk[i].descs);
		rdmae_pagesums_free(&s->blk[i].ps);
	}
	pthread_mutex_destroy(&s->cancel_lock);
	pthread_mutex_destroy(&s->reg_lock);
	pthread_mutex_destroy(&s->lock);
	free(s->zmsg);
	free(s->zruns);
	free(s->runs);
	free(s->ctx_pages);
	free(s->ctx_len);
	free(s->blk);
	free(s);
}

/* ---- pre-flight, source ---- */

static int src_announce(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_msg_block *b;
	size_t len, i;
	void *buf;
	int rc;

	len = rdmae_msg_blocks_size((uint32_t)s->nblocks);
	buf = malloc(len);
	b = calloc(s->nblocks, sizeof(*b));
	if (!buf || !b) {
		rc = rdmae_err_set(err, -ENOMEM, "preflight: out of memory for BLOCKS");
		goto out;
	}
	for (i = 0; i < s->nblocks; i++) {
		snprintf(b[i].name, sizeof(b[i].name), "%s", s->blk[i].b.name);
		b[i].len = s->blk[i].b.len;
		b[i].page_size = (uint32_t)s->blk[i].b.page_size;
		b[i].flags = s->blk[i].b.hugepages ? RDMAE_BLOCK_HUGEPAGES : 0;
	}
	rdmae_msg_blocks_encode(buf, b, (uint32_t)s->nblocks);
	rc = send_msg(s, buf, len, err);
out:
	free(b);
	free(buf);
	return rc;
}

static int src_register(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = s->o.reg_mode, .remote_write = 0 };
	struct rdmae_err e2 = { 0 };
	size_t i;

	for (i = 0; i < s->nblocks; i++) {
		struct sblock *b = &s->blk[i];
		int rc = rdmae_region_create(&b->region, s->conn, b->b.host, b->b.len, &ro, &e2);

		if (rc)
			return rdmae_err_set(err, rc, "preflight: block '%s': register: %s",
					     b->b.name, e2.msg);
	}
	return 0;
}

static int src_take_descs(struct rdmae_session *s, const struct rdmae_msg *m,
			  struct rdmae_err *err)
{
	size_t i;

	for (i = 0; i < s->nblocks; i++) {
		struct sblock *b = &s->blk[i];
		uint32_t first, n, j;

		rdmae_msg_preflight_ok_span(m, (uint32_t)i, &first, &n);
		b->descs = calloc(n, sizeof(*b->descs));
		if (!b->descs)
			return rdmae_err_set(err, -ENOMEM,
					     "preflight: out of memory for descriptors");
		for (j = 0; j < n; j++)
			rdmae_msg_preflight_ok_desc(m, first + j, &b->descs[j]);
		b->remote.descs = b->descs;
		b->remote.ndescs = n;
		b->remote.len = b->b.len;
	}
	return 0;
}

static int src_preflight(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_msg m;
	void *buf;
	int rc;

	/* Announce first: the destination checks and pins while we register. */
	rc = src_announce(s, err);
	if (rc)
		return fail(s, rc, err);
	rc = src_register(s, err);
	if (rc)
		return fail(s, rc, err);

	rc = recv_msg(s, s->slow_timeout_ms, &buf, &m, err);
	if (rc) {
		if (atomic_load(&s->state) == ST_FAILED)
			return rc;
		return fail(s, rc, err);
	}
	switch (m.type) {
	case RDMAE_MSG_PREFLIGHT_OK:
		rc = src_take_descs(s, &m, err);
		if (rc)
			rc = fail(s, rc, err);
		break;
	case RDMAE_MSG_PREFLIGHT_ERR:
		/* The destination's text as it is: both sides report the same. */
		rc = rdmae_err_set(err, m.u.preflight_err.error, "%s", m.u.preflight_err.reason);
		set_failed(s, rc, err);
		break;
	case RDMAE_MSG_CANCEL:
		rc = peer_cancelled(s, &m, err);
		break;
	default:
		rc = unexpected(s, &m, "PREFLIGHT_OK", err);
		break;
	}
	free(buf);
	return rc;
}

/* ---- pre-flight, destination ---- */

struct pf_err {
	uint32_t block;
	char reason[RDMAE_PROTO_REASON_LEN];
};

static int pf_fail(struct pf_err *pe, int code, uint32_t block, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int pf_fail(struct pf_err *pe, int code, uint32_t block, const char *fmt, ...)
{
	va_list ap;

	pe->block = block;
	va_start(ap, fmt);
	vsnprintf(pe->reason, sizeof(pe->reason), fmt, ap);
	va_end(ap);
	return code;
}

/* Match the announced blocks to ours by name and put ours in the source's order. */
static int dst_match(struct rdmae_session *s, const struct rdmae_msg *m, struct pf_err *pe)
{
	struct sblock *sorted;
	bool *used;
	uint32_t i;
	size_t j;
	int rc = 0;

	if (m->u.blocks.count != s->nblocks)
		return pf_fail(pe, -EINVAL, RDMAE_PROTO_NO_BLOCK,
			       "preflight: %zu blocks here, %" PRIu32 " at the source", s->nblocks,
			       m->u.blocks.count);
	sorted = calloc(s->nblocks, sizeof(*sorted));
	used = calloc(s->nblocks, sizeof(*used));
	if (!sorted || !used) {
		rc = pf_fail(pe, -ENOMEM, RDMAE_PROTO_NO_BLOCK, "preflight: out of memory");
		goto out;
	}
	for (i = 0; i < m->u.blocks.count; i++) {
		struct rdmae_msg_block b;
		struct sblock *mine = NULL;

		rdmae_msg_blocks_get(m, i, &b);
		for (j = 0; j < s->nblocks; j++) {
			if (!strcmp(s->blk[j].b.name, b.name)) {
				mine = &s->blk[j];
				break;
			}
		}
		if (!mine) {
			rc = pf_fail(pe, -ENOENT, i,
				     "preflight: block '%s' of the source does not exist here",
				     b.name);
			goto out;
		}
		if (used[j]) {
			rc = pf_fail(pe, -EINVAL, i, "preflight: block '%s' announced twice",
				     b.name);
			goto out;
		}
		if (mine->b.len != b.len) {
			rc = pf_fail(pe, -EINVAL, i,
				     "preflight: block '%s': size %zu here, %" PRIu64
				     " at the source", b.name, mine->b.len, b.len);
			goto out;
		}
		if (mine->b.page_size != b.page_size) {
			rc = pf_fail(pe, -EINVAL, i,
				     "preflight: block '%s': page size %zu here, %" PRIu32
				     " at the source", b.name, mine->b.page_size, b.page_size);
			goto out;
		}
		used[j] = true;
		sorted[i] = *mine;
		if (b.flags & RDMAE_BLOCK_HUGEPAGES)
			sorted[i].b.hugepages = true;
	}
	memcpy(s->blk, sorted, s->nblocks * sizeof(*sorted));
	set_ctx(s);
out:
	free(used);
	free(sorted);
	return rc;
}

static int dst_check_host(struct rdmae_session *s, struct pf_err *pe)
{
	char why[RDMAE_PROTO_REASON_LEN];
	size_t i;
	int rc;

	rc = rdmae_check_memlock(s->total_bytes + MEMLOCK_SLACK, why, sizeof(why));
	if (rc)
		return pf_fail(pe, rc, RDMAE_PROTO_NO_BLOCK, "preflight: %s", why);
	for (i = 0; i < s->nblocks; i++) {
		if (!s->blk[i].b.hugepages)
			continue;
		rc = rdmae_check_hugepages(s->blk[i].b.host, s->blk[i].b.len, why, sizeof(why));
		if (rc)
			return pf_fail(pe, rc, (uint32_t)i, "preflight: block '%s': %s",
				       s->blk[i].b.name, why);
	}
	return 0;
}

static int dst_register(struct rdmae_session *s, struct pf_err *pe)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .remote_write = 1 };
	struct rdmae_err e2 = { 0 };
	size_t i;
	int rc = 0;

	for (i = 0; i < s->nblocks && !rc; i++) {
		struct sblock *b = &s->blk[i];

		/* Under reg_lock, so that a cancel waits for a pin in progress and undoes it. */
		pthread_mutex_lock(&s->reg_lock);
		if (atomic_load(&s->stop))
			rc = -ECANCELED;
		else
			rc = rdmae_region_create(&b->region, s->conn, b->b.host, b->b.len, &ro,
						 &e2);
		pthread_mutex_unlock(&s->reg_lock);
		if (rc)
			pf_fail(pe, rc, (uint32_t)i, "preflight: block '%s': register: %s",
				b->b.name, rc == -ECANCELED ? "cancelled" : e2.msg);
	}
	return rc;
}

static int dst_answer(struct rdmae_session *s, struct pf_err *pe, struct rdmae_err *err)
{
	struct rdmae_bufdesc *descs = NULL;
	uint32_t *counts = NULL;
	struct rdmae_err e2 = { 0 };
	size_t total = 0, at = 0, i, len;
	void *buf = NULL;
	int rc;

	for (i = 0; i < s->nblocks; i++)
		total += (s->blk[i].b.len + RDMAE_DESC_SPAN - 1) / RDMAE_DESC_SPAN;
	/* create() refuses empty block lists and blocks; this keeps the analyzer informed. */
	if (!s->nblocks || !total)
		return pf_fail(pe, -EINVAL, RDMAE_PROTO_NO_BLOCK, "preflight: no memory to offer");
	counts = calloc(s->nblocks, sizeof(*counts));
	descs = calloc(total, sizeof(*descs));
	len = rdmae_msg_preflight_ok_size((uint32_t)s->nblocks, (uint32_t)total);
	if (len > s->max_msg) {
		rc = pf_fail(pe, -EMSGSIZE, RDMAE_PROTO_NO_BLOCK,
			     "preflight: %zu descriptors do not fit one message", total);
		goto out;
	}
	buf = malloc(len);
	if (!counts || !descs || !buf) {
		rc = pf_fail(pe, -ENOMEM, RDMAE_PROTO_NO_BLOCK, "preflight: out of memory");
		goto out;
	}
	/* A cancel destroys the regions under reg_lock: read them under it too. */
	rc = 0;
	pthread_mutex_lock(&s->reg_lock);
	for (i = 0; i < s->nblocks && !rc; i++) {
		size_t want = (s->blk[i].b.len + RDMAE_DESC_SPAN - 1) / RDMAE_DESC_SPAN, n = 0;

		if (atomic_load(&s->stop) || !s->blk[i].region) {
			rc = pf_fail(pe, -ECANCELED, (uint32_t)i, "preflight: cancelled");
			break;
		}
		rc = rdmae_region_bufdescs(s->blk[i].region, descs + at, want, &n, &e2);
		if (!rc && n != want)
			rc = rdmae_err_set(&e2, -EPROTO, "%zu descriptors, expected %zu", n, want);
		if (rc) {
			pf_fail(pe, rc, (uint32_t)i, "preflight: block '%s': descriptors: %s",
				s->blk[i].b.name, e2.msg);
			break;
		}
		counts[i] = (uint32_t)n;
		at += n;
	}
	pthread_mutex_unlock(&s->reg_lock);
	if (rc)
		goto out;
	rdmae_msg_preflight_ok_encode(buf, (uint32_t)s->nblocks, counts, descs);
	rc = send_msg(s, buf, len, err);
	if (rc)
		rc = fail(s, rc, err);
out:
	free(buf);
	free(descs);
	free(counts);
	return rc;
}

static int dst_preflight(struct rdmae_session *s, struct rdmae_err *err)
{
	uint8_t small[RDMAE_MSG_SMALL_MAX];
	struct pf_err pe = { .block = RDMAE_PROTO_NO_BLOCK };
	struct rdmae_msg m;
	void *buf;
	int rc;

	rc = recv_msg(s, s->o.timeout_ms, &buf, &m, err);
	if (rc) {
		if (atomic_load(&s->state) == ST_FAILED)
			return rc;
		return fail(s, rc, err);
	}
	if (m.type == RDMAE_MSG_CANCEL) {
		rc = peer_cancelled(s, &m, err);
		free(buf);
		return rc;
	}
	if (m.type != RDMAE_MSG_BLOCKS) {
		rc = unexpected(s, &m, "BLOCKS", err);
		free(buf);
		return rc;
	}
	rc = dst_match(s, &m, &pe);
	free(buf);
	if (!rc)
		rc = dst_check_host(s, &pe);
	if (!rc)
		rc = dst_register(s, &pe);
	if (!rc)
		rc = dst_answer(s, &pe, err);
	if (!rc || atomic_load(&s->state) == ST_FAILED)
		return rc;
	if (atomic_load(&s->stop)) {
		rc = stopped_err(s, err);
		set_failed(s, rc, err);
		return rc;
	}

	/*
	 * The check failed: tell the source in the same words we return, and
	 * leave the connection up so that the answer is not lost in a teardown.
	 */
	destroy_regions(s);
	rdmae_err_set(err, rc, "%s", pe.reason);
	set_failed(s, rc, err);
	send_msg(s, small, rdmae_msg_preflight_err_encode(small, rc, pe.block, pe.reason), NULL);
	return rc;
}

int rdmae_session_preflight(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_err le = { 0 };
	struct rdmae_err *e = err ? err : &le;
	uint64_t t0 = now_ns();
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "preflight: no session");
	rdmae_err_clear(e);
	rc = enter(s, s->role, ST_NEW, "preflight", e);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	s->start_ns = t0;
	pthread_mutex_unlock(&s->lock);
	rc = s->role == RDMAE_SOURCE ? src_preflight(s, e) : dst_preflight(s, e);
	if (!rc) {
		pthread_mutex_lock(&s->lock);
		s->st.setup_ns = now_ns() - t0;
		pthread_mutex_unlock(&s->lock);
		atomic_store(&s->state, ST_READY);
	}
	leave(s);
	return rc;
}

/* ---- plan ---- */

static uint64_t dirty_bytes(const struct rdmae_session *s, const uint64_t *const *bitmaps,
			    uint64_t *pages)
{
	uint64_t bytes = 0, p = 0;
	size_t i;

	for (i = 0; i < s->nblocks; i++) {
		uint64_t n = rdmae_bitmap_count(bitmaps[i], s->blk[i].npages);

		p += n;
		bytes += n * s->blk[i].b.page_size;
	}
	*pages = p;
	return bytes;
}

static int check_bitmaps(const struct rdmae_session *s, const uint64_t *const *bitmaps)
{
	size_t i;

	if (!bitmaps)
		return -EINVAL;
	for (i = 0; i < s->nblocks; i++)
		if (!bitmaps[i])
			return -EINVAL;
	return 0;
}

/*
 * The downtime model's figures (rdmae_converge.h), from the last rounds
 * only: the final round resembles the rounds just before it far more than
 * the first, full one. Under s->lock.
 */
static void downtime_model(const struct rdmae_session *s, struct rdmae_downtime_model *m)
{
	uint64_t bytes = 0, ns = 0, pages = 0, zeros = 0, rtt = UINT64_MAX, total = 0;
	size_t i;

	memset(m, 0, sizeof(*m));
	for (i = 0; i < RECENT_ROUNDS; i++)
		if (s->recent[i].round && s->recent[i].ack_ns < rtt)
			rtt = s->recent[i].ack_ns;
	if (rtt == UINT64_MAX)
		return;
	for (i = 0; i < RECENT_ROUNDS; i++) {
		const struct rdmae_round_stats *r = &s->recent[i];

		if (!r->round)
			continue;
		pages += r->pages;
		zeros += r->zero_pages;
		/* A round with no data says nothing about the data rate. */
		if (r->bytes) {
			bytes += r->bytes;
			ns += r->duration_ns > rtt ? r->duration_ns - rtt : 1;
		}
	}
	m->data_bw = rdmae_bandwidth(bytes, ns);
	/* Only zero pages lately: move data at the first round's rate. */
	if (!(m->data_bw > 0.0))
		m->data_bw = s->st.throughput;
	m->zero_ratio = pages ? (double)zeros / (double)pages : 0.0;
	m->rtt_ns = rtt;
	m->mem_rate = rdmae_bandwidth(s->hashed_bytes, s->st.hash_ns);
	m->state_bytes = s->o.expected_state_bytes;
	m->verify = s->sums;
	for (i = 0; i < s->nblocks; i++)
		total += s->blk[i].npages;
	m->sum_pages = s->sums ? total : 0;
}

int rdmae_session_plan(struct rdmae_session *s, const uint64_t *const *bitmaps,
		       struct rdmae_plan *plan)
{
	struct rdmae_downtime_model dm;
	uint64_t pages, bytes;

	if (!s || !plan || s->role != RDMAE_SOURCE || check_bitmaps(s, bitmaps))
		return -EINVAL;
	bytes = dirty_bytes(s, bitmaps, &pages);

	pthread_mutex_lock(&s->lock);
	downtime_model(s, &dm);
	plan->dirty_pages = pages;
	plan->dirty_bytes = bytes;
	plan->expected_downtime_ns = rdmae_downtime_estimate_ns(&dm, pages, bytes);
	plan->converged = plan->expected_downtime_ns != UINT64_MAX &&
			  plan->expected_downtime_ns <= atomic_load(&s->downtime_ns);
	s->st.remaining_bytes = bytes;
	s->st.expected_downtime_ns = plan->expected_downtime_ns;
	if (s->last_rs.round) {
		s->last_rs.remaining_bytes = bytes;
		s->last_rs.expected_downtime_ns = plan->expected_downtime_ns;
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int rdmae_session_last_round(struct rdmae_session *s, struct rdmae_round_stats *rs)
{
	if (!s || !rs)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	*rs = s->last_rs;
	pthread_mutex_unlock(&s->lock);
	return rs->round ? 0 : -ENOENT;
}

/* ---- rounds (source) ---- */

/* Tell a waiting destination that the round goes on; bail out once stopped. */
static int progress_tick(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	uint8_t msg[RDMAE_MSG_SMALL_MAX];

	if (atomic_load(&s->stop))
		return stopped_err(s, rctx->err);
	if (now_ns() - s->last_send_ns < s->progress_ns)
		return 0;
	return send_msg(s, msg, rdmae_msg_progress_encode(msg, rctx->round, rctx->bytes),
			rctx->err);
}

static int sleep_ns(struct round_ctx *rctx, uint64_t ns)
{
	uint64_t deadline = now_ns() + ns, t;

	while ((t = now_ns()) < deadline) {
		uint64_t d = deadline - t < SLEEP_SLICE_NS ? deadline - t : SLEEP_SLICE_NS;
		struct timespec ts = {
			.tv_sec = (time_t)(d / NSEC_PER_SEC),
			.tv_nsec = (long)(d % NSEC_PER_SEC),
		};
		int ret;

		nanosleep(&ts, NULL);
		ret = progress_tick(rctx);
		if (ret)
			return ret;
		/* A new cap (set_max_bandwidth) counts from now: stop paying the old one. */
		if (atomic_load(&rctx->s->max_bw) != rctx->rl.rate)
			return 0;
	}
	return 0;
}

/*
 * Hash the batch about to be posted (the NIC is still busy with the ones
 * before it) and tell the destination which pages it writes, so that it hashes them after the
 * round's fence. A page the guest changes after this round's dirty log was
 * taken, before or after the hash, is dirty in the next log and is sent and
 * hashed again; in the final round the guest is stopped.
 */
static int sum_batch(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	struct sblock *b = &s->blk[rctx->block];
	uint64_t ps = b->b.page_size, t0 = now_ns();
	size_t i, len;

	for (i = 0; i < rctx->nruns; i++) {
		uint64_t first = s->runs[i].local / ps, n = s->runs[i].len / ps;

		rdmae_pagesums_hash(&b->ps, b->b.host, first, n);
		rdmae_msg_zero_runs_put(s->zmsg, (uint32_t)i, first, n);
	}
	account_hash(s, t0, rctx->final, rctx->batch_bytes);
	len = rdmae_msg_data_runs_finish(s->zmsg, (uint32_t)rctx->block, (uint32_t)rctx->nruns);
	return send_msg(s, s->zmsg, len, rctx->err);
}

static int flush_data(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	struct sblock *b = &s->blk[rctx->block];
	uint64_t wait;
	size_t n;
	int ret;

	if (!rctx->nruns)
		return 0;
	/* Charge before posting: the cap holds at the moment the bytes leave. */
	wait = rdmae_ratelimit_charge(&rctx->rl, rctx->batch_bytes, now_ns());
	if (wait) {
		ret = sleep_ns(rctx, wait);
		if (ret)
			return ret;
	}
	/* on_data already merged neighbours; rdmae_write sizes the WRs. */
	n = rctx->nruns;
	/* Before rdmae_write, which coalesces the runs in place. */
	ret = s->sums ? sum_batch(rctx) : 0;
	if (!ret)
		ret = rdmae_write(s->conn, b->region, &b->remote, s->runs, n, rctx->err);
	if (ret)
		return ret;
	rctx->runs += n;
	rctx->bytes += rctx->batch_bytes;
	rctx->nruns = 0;
	rctx->batch_bytes = 0;
	return progress_tick(rctx);
}

static int flush_zero(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	size_t i, len;

	if (!rctx->nzero)
		return 0;
	for (i = 0; i < rctx->nzero; i++)
		rdmae_msg_zero_runs_put(s->zmsg, (uint32_t)i, s->zruns[i].first, s->zruns[i].n);
	len = rdmae_msg_zero_runs_finish(s->zmsg, (uint32_t)rctx->block, (uint32_t)rctx->nzero);
	rctx->nzero = 0;
	return send_msg(s, s->zmsg, len, rctx->err);
}

static uint64_t batch_cap(uint64_t rate, size_t ps)
{
	uint64_t cap = BATCH_BYTES_MAX;

	if (rate) {
		uint64_t c = rate / (NSEC_PER_SEC / BATCH_TIME_NS);

		if (c < cap)
			cap = c;
	}
	cap -= cap % ps;
	return cap ? cap : ps;
}

/*
 * A bandwidth cap set while the round runs: the batch built so far goes at
 * the old cap, everything after it at the new one, counted from now.
 */
static int adopt_rate(struct round_ctx *rctx)
{
	uint64_t rate = atomic_load(&rctx->s->max_bw);
	int ret;

	if (rate == rctx->rl.rate)
		return 0;
	ret = flush_data(rctx);
	if (ret)
		return ret;
	rdmae_ratelimit_init(&rctx->rl, rate, now_ns());
	rctx->batch_cap = batch_cap(rate, rctx->s->blk[rctx->block].b.page_size);
	return 0;
}

static int on_data(void *arg, size_t first_page, size_t npages)
{
	struct round_ctx *rctx = arg;
	struct rdmae_session *s = rctx->s;
	uint64_t ps = rctx->s->blk[rctx->block].b.page_size;
	uint64_t off = (rctx->seg_first + first_page) * ps, len = (uint64_t)npages * ps;
	int ret;

	ret = adopt_rate(rctx);
	if (ret)
		return ret;
	rctx->data_pages += npages;
	/* Split at the batch cap (a multiple of the page size) so that pieces stay whole pages. */
	while (len) {
		uint64_t piece = rctx->batch_cap - rctx->batch_bytes;
		struct rdmae_run *r = s->runs + rctx->nruns;

		if (piece > len)
			piece = len;
		if (rctx->nruns && r[-1].local + r[-1].len == off) {
			r[-1].len += piece;
		} else {
			r->local = off;
			r->remote = off;
			r->len = piece;
			rctx->nruns++;
		}
		rctx->batch_bytes += piece;
		off += piece;
		len -= piece;
		if (rctx->nruns == RUN_BATCH || rctx->batch_bytes >= rctx->batch_cap) {
			ret = flush_data(rctx);
			if (ret)
				return ret;
		}
	}
	return 0;
}

static int on_zero(void *arg, size_t first_page, size_t npages)
{
	struct round_ctx *rctx = arg;
	struct zrun *z = rctx->s->zruns;
	uint64_t first = rctx->seg_first + first_page;

	rctx->zero_pages += npages;
	if (rctx->s->sums)
		rdmae_pagesums_set_zero(&rctx->s->blk[rctx->block].ps, first, npages);
	/* Walk segments cut runs; glue them back. */
	if (rctx->nzero && z[rctx->nzero - 1].first + z[rctx->nzero - 1].n == first) {
		z[rctx->nzero - 1].n += npages;
		return 0;
	}
	z[rctx->nzero].first = first;
	z[rctx->nzero].n = npages;
	if (++rctx->nzero == ZERO_BATCH)
		return flush_zero(rctx);
	return 0;
}

static int walk_block(struct round_ctx *rctx, const uint64_t *bitmap)
{
	struct rdmae_session *s = rctx->s;
	struct sblock *b = &s->blk[rctx->block];
	size_t ps = b->b.page_size;
	uint64_t seg = WALK_SEGMENT_BYTES / ps, first;
	int ret;

	/* Segments start on bitmap words. */
	seg -= seg % RDMAE_BITS_PER_WORD;
	if (!seg)
		seg = RDMAE_BITS_PER_WORD;
	for (first = 0; first < b->npages; first += seg) {
		struct rdmae_dirty_walk w = {
			.bitmap = bitmap + first / RDMAE_BITS_PER_WORD,
			.npages = b->npages - first < seg ? b->npages - first : seg,
			.page_size = ps,
			.base = (const uint8_t *)b->b.host + first * ps,
			.detect_zero = !s->o.no_zero_detect,
			.data = on_data,
			.zero = on_zero,
			.arg = rctx,
		};

		rctx->seg_first = first;
		ret = rdmae_dirty_walk(&w);
		if (!ret)
			ret = progress_tick(rctx);
		if (ret) {
			if (!rctx->err->code)
				rdmae_err_set(rctx->err, ret,
					      "round %u: block '%s': dirty walk failed",
					      rctx->round, b->b.name);
			return ret;
		}
	}
	/* ZERO_RUNS name one block: flush both batches before the next. */
	ret = flush_data(rctx);
	if (!ret)
		ret = flush_zero(rctx);
	return ret;
}

static int wait_ack(struct round_ctx *rctx)
{
	struct rdmae_session *s = rctx->s;
	struct rdmae_msg m;
	void *buf;
	int ret;

	ret = recv_msg(s, s->slow_timeout_ms, &buf, &m, rctx->err);
	if (ret)
		return ret;
	if (m.type == RDMAE_MSG_ROUND_ACK && m.u.round_ack.round == rctx->round)
		ret = 0;
	else if (m.type == RDMAE_MSG_CANCEL)
		ret = peer_cancelled(s, &m, rctx->err);
	else if (m.type == RDMAE_MSG_ROUND_ACK)
		ret = rdmae_err_set(rctx->err, -EPROTO, "round %u: ROUND_ACK for round %" PRIu32,
				    rctx->round, m.u.round_ack.round);
	else
		ret = rdmae_err_set(rctx->err, -EPROTO,
				    "round %u: unexpected %s while waiting for ROUND_ACK",
				    rctx->round, rdmae_msg_type_name(m.type));
	free(buf);
	return ret;
}


static int do_round(struct rdmae_session *s, const uint64_t *const *bitmaps, bool final,
		    struct rdmae_round_stats *r, struct rdmae_err *err)
{
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	struct round_ctx rctx = { .s = s, .err = err };
	struct rdmae_msg_round_end re;
	uint64_t t0 = now_ns(), t_end, pages, dbytes, dur;
	uint32_t seq = 0;
	int ret;

	rctx.round = s->st.rounds + 1;
	rctx.final = final;
	dbytes = dirty_bytes(s, bitmaps, &pages);
	rdmae_ratelimit_init(&rctx.rl, atomic_load(&s->max_bw), t0);

	for (rctx.block = 0; rctx.block < s->nblocks; rctx.block++) {
		rctx.batch_cap = batch_cap(rctx.rl.rate, s->blk[rctx.block].b.page_size);
		ret = walk_block(&rctx, bitmaps[rctx.block]);
		if (ret)
			return ret;
	}

	/*
	 * Ordering: the fence follows every WRITE of this round on every lane,
	 * ROUND_END follows every ZERO_RUNS on the ordered message channel, and
	 * the destination acks only after the fence has arrived and every
	 * ZERO_RUNS is applied. Nothing of the next round leaves before the ack,
	 * so a page's zero-fill and its WRITEs of different rounds cannot pass
	 * each other.
	 */
	ret = rdmae_fence(s->conn, &seq, err);
	if (ret)
		return ret;
	memset(&re, 0, sizeof(re));
	re.round = rctx.round;
	re.fence_seq = seq;
	re.flags = final ? RDMAE_ROUND_FINAL : 0;
	re.pages = pages;
	re.bytes = rctx.bytes;
	re.zero_pages = rctx.zero_pages;
	re.runs = rctx.runs;
	re.duration_ns = now_ns() - t0;
	ret = send_msg(s, msg, rdmae_msg_round_end_encode(msg, &re), err);
	t_end = now_ns();
	if (!ret)
		ret = wait_ack(&rctx);
	if (ret)
		return ret;
	dur = now_ns() - t0;
	if (!dur)
		dur = 1;

	memset(r, 0, sizeof(*r));
	r->round = rctx.round;
	r->pages = pages;
	r->bytes = rctx.bytes;
	r->zero_pages = rctx.zero_pages;
	r->runs = rctx.runs;
	r->duration_ns = dur;
	r->ack_ns = t0 + dur - t_end;
	r->bandwidth = rdmae_bandwidth(rctx.bytes, dur);

	pthread_mutex_lock(&s->lock);
	/* Bytes dirtied between the starts of the previous round and this one. */
	if (s->prev_round_start_ns && t0 > s->prev_round_start_ns)
		r->dirty_rate = rdmae_bandwidth(dbytes, t0 - s->prev_round_start_ns);
	s->prev_round_start_ns = t0;
	s->sum_round_ns += dur;
	s->recent[(rctx.round - 1) % RECENT_ROUNDS] = *r;
	s->st.rounds = rctx.round;
	s->st.transferred_bytes += rctx.bytes;
	s->st.normal_pages += rctx.data_pages;
	s->st.zero_pages += rctx.zero_pages;
	s->st.throughput = rdmae_bandwidth(s->st.transferred_bytes, s->sum_round_ns);
	s->st.dirty_rate = r->dirty_rate;
	if (!final)
		s->precopy_rounds++;
	s->last_rs = *r;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int rdmae_session_round(struct rdmae_session *s, const uint64_t *const *bitmaps,
			struct rdmae_round_stats *rs, struct rdmae_err *err)
{
	struct rdmae_err le = { 0 };
	struct rdmae_err *e = err ? err : &le;
	struct rdmae_round_stats r;
	bool stopped;
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "round: no session");
	rdmae_err_clear(e);
	rc = enter(s, RDMAE_SOURCE, ST_READY, "round", e);
	if (rc)
		return rc;
	if (check_bitmaps(s, bitmaps)) {
		rc = rdmae_err_set(e, -EINVAL, "round: a block has no dirty bitmap");
		goto out;
	}
	pthread_mutex_lock(&s->lock);
	stopped = s->stopped;
	pthread_mutex_unlock(&s->lock);

	/* The final round, with the VM stopped, is always allowed. */
	if (!stopped && s->precopy_rounds >= s->o.max_rounds) {
		struct rdmae_plan p = { 0 };

		if (rdmae_session_plan(s, bitmaps, &p) || !p.converged) {
			char dt[32];

			if (p.expected_downtime_ns == UINT64_MAX)
				snprintf(dt, sizeof(dt), "unknown");
			else
				snprintf(dt, sizeof(dt), "%" PRIu64 " ms",
					 (uint64_t)(p.expected_downtime_ns / NSEC_PER_MSEC));
			/* Not fatal: the caller cancels or goes on with the VM running. */
			rc = rdmae_err_set(e, -ETIME,
					   "did not converge after %u rounds: %.1f MiB dirty,"
					   " expected downtime %s > limit %" PRIu64 " ms",
					   s->precopy_rounds, (double)p.dirty_bytes / (double)MIB,
					   dt, (uint64_t)(atomic_load(&s->downtime_ns) / NSEC_PER_MSEC));
			goto out;
		}
	}
	rc = do_round(s, bitmaps, stopped, &r, e);
	if (rc) {
		if (atomic_load(&s->state) != ST_FAILED)
			rc = fail(s, rc, e);
		goto out;
	}
	if (stopped)
		s->final_round = true;
	if (rs)
		*rs = r;
out:
	leave(s);
	return rc;
}

void rdmae_session_mark_stopped(struct rdmae_session *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	if (!s->stopped) {
		s->stopped = true;
		s->stopped_ns = now_ns();
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---- device state ---- */

int rdmae_session_send_state(struct rdmae_session *s, const void *buf, size_t len,
			     struct rdmae_err *err)
{
	struct rdmae_err le = { 0 };
	struct rdmae_err *e = err ? err : &le;
	size_t chunk, off = 0;
	uint8_t *msg;
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "send state: no session");
	rdmae_err_clear(e);
	rc = enter(s, RDMAE_SOURCE, ST_READY, "send state", e);
	if (rc)
		return rc;
	if (!len)
		goto out;
	if (!buf) {
		rc = rdmae_err_set(e, -EINVAL, "send state: no buffer for %zu bytes", len);
		goto out;
	}
	chunk = s->max_msg - RDMAE_MSG_STATE_DATA_OFF;
	if (chunk > STATE_CHUNK_MAX)
		chunk = STATE_CHUNK_MAX;
	if (chunk > len)
		chunk = len;
	msg = malloc(RDMAE_MSG_STATE_DATA_OFF + chunk);
	if (!msg) {
		rc = rdmae_err_set(e, -ENOMEM, "send state: out of memory for a %zu-byte chunk",
				   chunk);
		goto out;
	}
	/* The message channel is ordered: the state lands after every round sent before it. */
	while (off < len) {
		size_t n = len - off < chunk ? len - off : chunk;

		rdmae_msg_state_encode(msg, s->state_off, (uint32_t)n);
		memcpy(msg + RDMAE_MSG_STATE_DATA_OFF, (const uint8_t *)buf + off, n);
		rc = send_msg(s, msg, RDMAE_MSG_STATE_DATA_OFF + n, e);
		if (rc)
			break;
		off += n;
		s->state_off += n;
		pthread_mutex_lock(&s->lock);
		s->st.state_bytes += n;
		pthread_mutex_unlock(&s->lock);
	}
	free(msg);
	if (rc)
		rc = fail(s, rc, e);
out:
	leave(s);
	return rc;
}

/* ---- complete (source) ---- */

/*
 * Block sums from the page sums kept through the rounds. Only pages that
 * never had a current sum (not sent in any round: normally none, since the
 * first round covers all of memory) are hashed from memory now.
 */
static int block_sums(struct rdmae_session *s, uint64_t *sums, struct rdmae_err *err)
{
	uint64_t t0 = now_ns();
	size_t i;
	int rc = 0;

	uint64_t bytes = 0;

	for (i = 0; i < s->nblocks && !rc; i++) {
		struct sblock *b = &s->blk[i];
		uint64_t n = 0;

		rc = rdmae_pagesums_hash_stale(&b->ps, b->b.host, &s->stop, &n, err);
		if (!rc)
			rc = rdmae_pagesums_digest(&b->ps, &sums[i], err);
		bytes += n * b->b.page_size + b->npages * sizeof(uint64_t);
	}
	account_hash(s, t0, true, bytes);
	return rc;
}

static int src_block_sums(struct rdmae_session *s, struct rdmae_err *err)
{
	uint64_t *sums;
	uint8_t *msg;
	size_t len = rdmae_msg_block_sums_size((uint32_t)s->nblocks);
	int rc;

	sums = calloc(s->nblocks, sizeof(*sums));
	msg = malloc(len);
	if (!sums || !msg) {
		rc = rdmae_err_set(err, -ENOMEM, "complete: out of memory for checksums");
		goto out;
	}
	rc = block_sums(s, sums, err);
	if (rc)
		goto out;
	rdmae_msg_block_sums_encode(msg, sums, (uint32_t)s->nblocks);
	rc = send_msg(s, msg, len, err);
out:
	free(msg);
	free(sums);
	return rc;
}

/*
 * Answer a PAGE_SUMS_REQ from the sums kept (no memory is read), and only
 * what the destination needs to find one block's first differing page
 * (rdmae_sums_guard_take): a confused destination cannot keep the source
 * busy while its guest is paused.
 */
static int src_page_sums(struct rdmae_session *s, const struct rdmae_msg *m,
			 struct rdmae_err *err)
{
	const struct sblock *b = &s->blk[m->u.page_sums.block];
	uint64_t i, n = m->u.page_sums.npages, first = m->u.page_sums.first_page;
	char why[RDMAE_PROTO_REASON_LEN];
	size_t len = rdmae_msg_page_sums_size(n);
	uint8_t *msg;
	int rc;

	rc = rdmae_sums_guard_take(&s->sums_guard, m->u.page_sums.block, first, n, why,
				   sizeof(why));
	if (rc)
		return rdmae_err_set(err, rc, "complete: refused the destination's request: %s",
				     why);
	/* The decoder bounded n to one message, and the range to the block. */
	msg = malloc(len);
	if (!msg)
		return rdmae_err_set(err, -ENOMEM, "complete: out of memory for %" PRIu64
				     " page sums", n);
	for (i = 0; i < n; i++)
		rdmae_msg_page_sums_put(msg, i, b->ps.sums[first + i]);
	rdmae_msg_page_sums_encode(msg, m->u.page_sums.block, first, n);
	rc = send_msg(s, msg, len, err);
	free(msg);
	return rc;
}

/*
 * Once COMPLETE is out, a failure on our side says nothing about the
 * destination: it may have committed and be running the VM. Unless the
 * destination said otherwise (CANCEL, COMMIT_FAIL), the outcome is unknown,
 * and the caller must not resume the source before finding out: both
 * copies running would be far worse than a pause.
 */
static int complete_failed(struct rdmae_session *s, int rc, struct rdmae_err *err)
{
	char why[RDMAE_ERR_LEN];

	if (atomic_load(&s->state) != ST_FAILED)
		rc = fail(s, rc, err);
	if (!decided(s) || s->peer_verdict)
		return rc;
	snprintf(why, sizeof(why), "%s", err->msg);
	rdmae_err_set(err, -ENOTRECOVERABLE, "complete: outcome unknown (%s); the destination "
		      "may have committed: do not resume the source before asking it", why);
	set_failed(s, -ENOTRECOVERABLE, err);
	return -ENOTRECOVERABLE;
}

static int src_complete(struct rdmae_session *s, struct rdmae_err *err)
{
	uint8_t small[RDMAE_MSG_SMALL_MAX];
	struct rdmae_msg_complete c = { 0 };
	struct rdmae_msg m;
	uint64_t commit_start;
	void *buf;
	int rc;

	/* The final fence proves every WRITE of every round is placed. */
	rc = rdmae_fence(s->conn, &c.fence_seq, err);
	if (rc)
		return fail(s, rc, err);
	c.flags = s->o.no_verify ? RDMAE_COMPLETE_NO_VERIFY : 0;
	c.nblocks = (uint32_t)s->nblocks;
	c.rounds = s->st.rounds;
	c.state_bytes = s->state_off;
	/* A connection already down carries nothing: fail plainly, the guest may resume. */
	rc = rdmae_conn_error(s->conn, err);
	if (!rc)
		rc = decide(s, "complete", err);
	if (rc)
		return fail(s, rc, err);
	/* From here a cancel does not take effect: the destination decides. */
	commit_start = now_ns();
	rc = send_msg(s, small, rdmae_msg_complete_encode(small, &c), err);
	/* Sent before the sums: the destination revokes and checks while we digest. */
	if (!rc && !s->o.no_verify)
		rc = src_block_sums(s, err);
	if (rc)
		return complete_failed(s, rc, err);

	for (;;) {
		rc = recv_msg(s, s->slow_timeout_ms, &buf, &m, err);
		if (rc)
			return complete_failed(s, rc, err);
		switch (m.type) {
		case RDMAE_MSG_COMMIT_OK:
			free(buf);
			pthread_mutex_lock(&s->lock);
			s->st.commit_ns = now_ns() - commit_start;
			pthread_mutex_unlock(&s->lock);
			return 0;
		case RDMAE_MSG_COMMIT_FAIL:
			rc = rdmae_err_set(err, m.u.commit_fail.error, "%s",
					   m.u.commit_fail.reason);
			set_failed(s, rc, err);
			free(buf);
			return rc;
		case RDMAE_MSG_PAGE_SUMS_REQ:
			if (s->o.no_verify) {
				rc = unexpected(s, &m, "COMMIT_OK", err);
				free(buf);
				return complete_failed(s, rc, err);
			}
			rc = src_page_sums(s, &m, err);
			free(buf);
			if (rc)
				return complete_failed(s, rc, err);
			break;
		case RDMAE_MSG_CANCEL:
			s->peer_verdict = true;
			rc = peer_cancelled(s, &m, err);
			free(buf);
			return rc;
		default:
			rc = unexpected(s, &m, "COMMIT_OK", err);
			free(buf);
			return complete_failed(s, rc, err);
		}
	}
}

int rdmae_session_complete(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_err le = { 0 };
	struct rdmae_err *e = err ? err : &le;
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "complete: no session");
	rdmae_err_clear(e);
	rc = enter(s, RDMAE_SOURCE, ST_READY, "complete", e);
	if (rc)
		return rc;
	/* Without a round after the stop, the destination would commit stale pages. */
	if (!s->final_round) {
		rc = rdmae_err_set(e, -EINVAL, "complete: no round since the VM was stopped "
				   "(mark_stopped, then a final round)");
		leave(s);
		return rc;
	}
	rc = src_complete(s, e);
	if (!rc) {
		uint64_t t = now_ns();

		pthread_mutex_lock(&s->lock);
		if (s->stopped)
			s->st.actual_downtime_ns = t - s->stopped_ns;
		s->st.total_ns = t - s->start_ns;
		pthread_mutex_unlock(&s->lock);
		atomic_store(&s->state, ST_DONE);
	}
	leave(s);
	return rc;
}

/* ---- destination steps ---- */

static void dst_zero_fill(struct rdmae_session *s, const struct rdmae_msg *m)
{
	struct sblock *b = &s->blk[m->u.zero_runs.block];
	size_t ps = b->b.page_size;
	uint32_t i;

	uint64_t pages = 0;

	for (i = 0; i < m->u.zero_runs.count && !atomic_load(&s->stop); i++) {
		uint64_t first, n, p;

		rdmae_msg_zero_runs_get(m, i, &first, &n);
		for (p = first; p < first + n; p++) {
			uint8_t *page = (uint8_t *)b->b.host + p * ps;

			/* Reading is cheaper than writing: most are zero already. */
			if (!rdmae_page_is_zero(page, ps))
				memset(page, 0, ps);
		}
		rdmae_pagesums_zero_filled(&b->ps, first, n);
		pages += n;
	}
	pthread_mutex_lock(&s->lock);
	s->st.zero_pages += pages;
	pthread_mutex_unlock(&s->lock);
}

/* DATA_RUNS: these pages are being written by this round; hash them after its fence. */
static void dst_data_runs(struct rdmae_session *s, const struct rdmae_msg *m)
{
	struct sblock *b = &s->blk[m->u.zero_runs.block];
	uint32_t i;

	s->rx_sums = true;
	for (i = 0; i < m->u.zero_runs.count; i++) {
		uint64_t first, n;

		rdmae_msg_zero_runs_get(m, i, &first, &n);
		rdmae_pagesums_mark(&b->ps, first, n);
	}
}

/*
 * Hash every page without a current sum: the pages the round just placed
 * (its fence has arrived) and, after the first round, normally nothing else.
 * Runs after ROUND_ACK, while the source walks the next round: a page that
 * round rewrites is marked again by its DATA_RUNS and hashed after its
 * fence, so a sum taken mid-WRITE never survives.
 */
static int dst_hash_placed(struct rdmae_session *s, bool at_stop, struct rdmae_err *err)
{
	uint64_t t0 = now_ns();
	size_t i;
	int rc = 0;

	uint64_t bytes = 0;

	for (i = 0; i < s->nblocks && !rc; i++) {
		uint64_t n = 0;

		rc = rdmae_pagesums_hash_stale(&s->blk[i].ps, s->blk[i].b.host, &s->stop, &n,
					       err);
		bytes += n * s->blk[i].b.page_size;
	}
	account_hash(s, t0, at_stop, bytes);
	return rc;
}

static int dst_round_end(struct rdmae_session *s, const struct rdmae_msg_round_end *re,
			 struct rdmae_dest_event *ev, struct rdmae_err *err)
{
	bool final = (re->flags & RDMAE_ROUND_FINAL) != 0;
	int rc;

	/* Every ZERO_RUNS before ROUND_END is applied; now the WRITEs must be placed too. */
	if (re->round == s->rx_rounds + 1)
		rc = rdmae_fence_wait(s->conn, re->fence_seq, s->slow_timeout_ms, err);
	else
		rc = rdmae_err_set(err, -EPROTO, "destination: ROUND_END for round %" PRIu32
				   ", expected %u", re->round, s->rx_rounds + 1);
	if (!rc) {
		uint8_t ack[RDMAE_MSG_SMALL_MAX];

		rc = send_msg(s, ack, rdmae_msg_round_ack_encode(ack, re->round), err);
	}
	/* A source that does not verify sends no DATA_RUNS: then hashing would be wasted. */
	if (!rc && s->rx_sums)
		rc = dst_hash_placed(s, final, err);
	if (rc)
		return fail(s, rc, err);
	s->rx_rounds = re->round;
	s->rx_last_final = final;
	pthread_mutex_lock(&s->lock);
	s->rx_round_ns += re->duration_ns;
	s->st.rounds = re->round;
	s->st.transferred_bytes += re->bytes;
	s->st.normal_pages += re->pages - re->zero_pages;
	s->st.throughput = rdmae_bandwidth(s->st.transferred_bytes, s->rx_round_ns);
	pthread_mutex_unlock(&s->lock);
	ev->kind = RDMAE_EV_ROUND;
	ev->round = re->round;
	ev->final = final;
	return 0;
}

/*
 * Answer COMMIT_FAIL in the words we return ourselves. The source resumes
 * its guest on it, so it leaves before the deregistration (which for a
 * large guest is slow); remote access is already revoked, or the source has
 * nothing more to write.
 */
static int dst_commit_fail(struct rdmae_session *s, int code, uint32_t block, uint64_t page,
			   const char *reason, struct rdmae_err *err)
{
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	char r[RDMAE_PROTO_REASON_LEN];

	snprintf(r, sizeof(r), "%s", reason);
	rdmae_err_set(err, code, "%s", r);
	set_failed(s, code, err);
	send_msg(s, msg, rdmae_msg_commit_fail_encode(msg, code, block, page, r), NULL);
	destroy_regions(s);
	return code;
}

/* Narrow a mismatching block down to its first differing page, chunk by chunk. */
static int dst_first_diff(struct rdmae_session *s, uint32_t block, uint64_t *page,
			  struct rdmae_err *err)
{
	const struct sblock *b = &s->blk[block];
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	uint64_t max = rdmae_msg_page_sums_max(s->max_msg), first, i;
	int rc = 0;

	if (max > PAGE_SUMS_CHUNK_MAX)
		max = PAGE_SUMS_CHUNK_MAX;
	*page = RDMAE_PROTO_NO_PAGE;
	/* Ascending and contiguous from page 0: the only requests the source answers. */
	for (first = 0; first < b->npages && *page == RDMAE_PROTO_NO_PAGE; first += max) {
		uint64_t n = b->npages - first < max ? b->npages - first : max;
		struct rdmae_msg m;
		void *buf;

		rc = send_msg(s, msg, rdmae_msg_page_sums_req_encode(msg, block, first, n), err);
		if (!rc)
			rc = recv_msg(s, s->slow_timeout_ms, &buf, &m, err);
		if (rc)
			break;
		if (m.type == RDMAE_MSG_CANCEL) {
			rc = peer_cancelled(s, &m, err);
		} else if (m.type != RDMAE_MSG_PAGE_SUMS || m.u.page_sums.block != block ||
			   m.u.page_sums.first_page != first || m.u.page_sums.npages != n) {
			rc = unexpected(s, &m, "PAGE_SUMS of the range asked for", err);
		} else {
			for (i = 0; i < n; i++) {
				if (b->ps.sums[first + i] != rdmae_msg_page_sums_get(&m, i)) {
					*page = first + i;
					break;
				}
			}
		}
		free(buf);
		if (rc)
			break;
	}
	return rc;
}

static int dst_verify(struct rdmae_session *s, struct rdmae_err *err)
{
	char reason[RDMAE_PROTO_REASON_LEN];
	struct rdmae_msg m;
	uint64_t *sums, page = RDMAE_PROTO_NO_PAGE;
	size_t i;
	void *buf = NULL;
	int rc = 0;

	sums = calloc(s->nblocks, sizeof(*sums));
	if (!sums)
		return rdmae_err_set(err, -ENOMEM, "verify: out of memory for checksums");
	/* From the sums kept through the rounds; the source digests its own meanwhile. */
	rc = block_sums(s, sums, err);
	if (!rc)
		rc = recv_msg(s, s->slow_timeout_ms, &buf, &m, err);
	if (rc)
		goto out;
	if (m.type == RDMAE_MSG_CANCEL) {
		rc = peer_cancelled(s, &m, err);
		goto out;
	}
	if (m.type != RDMAE_MSG_BLOCK_SUMS) {
		rc = unexpected(s, &m, "BLOCK_SUMS", err);
		goto out;
	}
	for (i = 0; i < s->nblocks; i++)
		if (sums[i] != rdmae_msg_block_sums_get(&m, (uint32_t)i))
			break;
	if (i == s->nblocks)
		goto out;

	rc = dst_first_diff(s, (uint32_t)i, &page, err);
	if (rc)
		goto out;
	if (page == RDMAE_PROTO_NO_PAGE)
		snprintf(reason, sizeof(reason),
			 "verify: block '%s': checksum differs from the source's, but no page does",
			 s->blk[i].b.name);
	else
		snprintf(reason, sizeof(reason),
			 "verify: block '%s': page %" PRIu64 " (offset %#" PRIx64
			 ") differs from the source's", s->blk[i].b.name, page,
			 page * s->blk[i].b.page_size);
	rc = dst_commit_fail(s, -EIO, (uint32_t)i, page, reason, err);
out:
	free(buf);
	free(sums);
	return rc;
}

/* The steps of rdmae_dst_commit (commit_rules.h), each reporting its own failure. */

static int dcs_fence_wait(void *arg, uint32_t seq, struct rdmae_err *err)
{
	struct rdmae_session *s = arg;
	int rc = rdmae_fence_wait(s->conn, seq, s->slow_timeout_ms, err);

	return rc ? fail(s, rc, err) : 0;
}

static int dcs_refuse(void *arg, int code, const char *why, struct rdmae_err *err)
{
	return dst_commit_fail(arg, code, RDMAE_PROTO_NO_BLOCK, RDMAE_PROTO_NO_PAGE, why, err);
}

/* QPs stop accepting WRITEs: cheap, and nothing is unpinned inside the downtime. */
static int dcs_revoke(void *arg, struct rdmae_err *err)
{
	struct rdmae_session *s = arg;
	int rc = rdmae_conn_revoke_remote_write(s->conn, err);

	return rc ? fail(s, rc, err) : 0;
}

static int dcs_verify(void *arg, struct rdmae_err *err)
{
	struct rdmae_session *s = arg;
	int rc = dst_verify(s, err);

	if (rc && atomic_load(&s->state) != ST_FAILED)
		rc = fail(s, rc, err);
	return rc;
}

static int dcs_decide(void *arg, struct rdmae_err *err)
{
	struct rdmae_session *s = arg;
	int rc = decide(s, "commit", err);

	return rc ? fail(s, rc, err) : 0;
}

static int dcs_commit_ok(void *arg, bool verified, struct rdmae_err *err)
{
	struct rdmae_session *s = arg;
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	int rc;

	rc = send_msg(s, msg, rdmae_msg_commit_ok_encode(msg, verified ? RDMAE_COMMIT_VERIFIED : 0),
		      err);
	/* Pinned (but unwritable) until rdmae_session_destroy, after the guest runs. */
	return rc ? fail(s, rc, err) : 0;
}

static const struct rdmae_dst_commit_ops dst_commit_ops = {
	.fence_wait = dcs_fence_wait,
	.refuse = dcs_refuse,
	.revoke = dcs_revoke,
	.verify = dcs_verify,
	.decide = dcs_decide,
	.commit_ok = dcs_commit_ok,
};

static int dst_complete(struct rdmae_session *s, const struct rdmae_msg_complete *c,
			bool *verified, struct rdmae_err *err)
{
	struct rdmae_dst_progress p = {
		.rounds = s->rx_rounds,
		.last_final = s->rx_last_final,
		.state_bytes = s->rx_state,
		.require_verify = s->o.require_verify,
	};

	return rdmae_dst_commit(&dst_commit_ops, s, &p, c, verified, err);
}

static int dst_step(struct rdmae_session *s, struct rdmae_dest_event *ev, struct rdmae_err *err)
{
	for (;;) {
		struct rdmae_msg m;
		void *buf;
		int rc = recv_msg(s, s->o.timeout_ms, &buf, &m, err);

		if (rc) {
			/* A quiet source is not an error in itself: the caller may wait again. */
			if (rc == -ETIMEDOUT && !rdmae_conn_error(s->conn, NULL))
				return rc;
			return atomic_load(&s->state) == ST_FAILED ? rc : fail(s, rc, err);
		}
		switch (m.type) {
		case RDMAE_MSG_PROGRESS:
			free(buf);
			continue;
		case RDMAE_MSG_ZERO_RUNS:
			dst_zero_fill(s, &m);
			free(buf);
			if (atomic_load(&s->stop))
				return stopped_err(s, err);
			continue;
		case RDMAE_MSG_DATA_RUNS:
			dst_data_runs(s, &m);
			free(buf);
			continue;
		case RDMAE_MSG_ROUND_END:
			rc = dst_round_end(s, &m.u.round_end, ev, err);
			free(buf);
			return rc;
		case RDMAE_MSG_STATE:
			if (m.u.state.offset != s->rx_state) {
				rdmae_err_set(err, -EPROTO,
					      "destination: STATE at offset %" PRIu64 ", expected %"
					      PRIu64, m.u.state.offset, s->rx_state);
				free(buf);
				return fail(s, -EPROTO, err);
			}
			s->rx_state += m.u.state.len;
			pthread_mutex_lock(&s->lock);
			s->st.state_bytes = s->rx_state;
			pthread_mutex_unlock(&s->lock);
			/* The bytes stay valid until the next step, which frees them. */
			s->ev_msg = buf;
			ev->kind = RDMAE_EV_STATE;
			ev->round = s->rx_rounds;
			ev->data = m.u.state.data;
			ev->len = m.u.state.len;
			return 0;
		case RDMAE_MSG_COMPLETE: {
			struct rdmae_msg_complete c = m.u.complete;
			bool verified = false;

			free(buf);
			rc = dst_complete(s, &c, &verified, err);
			if (rc)
				return rc;
			ev->kind = RDMAE_EV_COMMITTED;
			ev->verified = verified;
			ev->round = s->rx_rounds;
			return 0;
		}
		case RDMAE_MSG_CANCEL:
			rc = peer_cancelled(s, &m, err);
			free(buf);
			return rc;
		default:
			rc = unexpected(s, &m, "a round, state or COMPLETE", err);
			free(buf);
			return rc;
		}
	}
}

int rdmae_session_dest_step(struct rdmae_session *s, struct rdmae_dest_event *ev,
			    struct rdmae_err *err)
{
	struct rdmae_err le = { 0 };
	struct rdmae_err *e = err ? err : &le;
	int rc;

	if (!s || !ev)
		return rdmae_err_set(err, -EINVAL, "dest step: no session or event");
	rdmae_err_clear(e);
	rc = enter(s, RDMAE_DEST, ST_READY, "dest step", e);
	if (rc)
		return rc;
	free(s->ev_msg);
	s->ev_msg = NULL;
	memset(ev, 0, sizeof(*ev));
	rc = dst_step(s, ev, e);
	if (!rc && ev->kind == RDMAE_EV_COMMITTED) {
		pthread_mutex_lock(&s->lock);
		s->st.total_ns = now_ns() - s->start_ns;
		pthread_mutex_unlock(&s->lock);
		atomic_store(&s->state, ST_DONE);
	}
	leave(s);
	return rc;
}

/* ---- live settings ---- */

int rdmae_session_set_max_bandwidth(struct rdmae_session *s, uint64_t bytes_per_sec)
{
	if (!s || s->role != RDMAE_SOURCE)
		return -EINVAL;
	atomic_store(&s->max_bw, bytes_per_sec);
	return 0;
}

int rdmae_session_set_downtime_limit(struct rdmae_session *s, uint64_t ns)
{
	if (!s || s->role != RDMAE_SOURCE)
		return -EINVAL;
	atomic_store(&s->downtime_ns, ns ? ns : DEF_DOWNTIME_NS);
	return 0;
}

/* ---- cancel, stats ---- */

bool rdmae_session_cancel(struct rdmae_session *s, const char *why)
{
	char r[RDMAE_PROTO_REASON_LEN];
	bool took;

	if (!s)
		return false;
	snprintf(r, sizeof(r), "%s", why && *why ? why : "cancelled");
	/*
	 * Once the source has sent COMPLETE the destination may commit at any
	 * moment, and once the destination has sent COMMIT_OK it has: only
	 * before those points can a cancel stop the migration. The decision and
	 * the stop happen under the same lock as the sender's (decide()).
	 */
	pthread_mutex_lock(&s->cancel_lock);
	took = atomic_load(&s->state) != ST_DONE && rdmae_gate_cancel(&s->gate);
	/* The peer gets the reason as given; local callers learn it was a cancel. */
	if (took)
		shut_locked(s, -ECANCELED, "cancelled: ", r, true);
	pthread_mutex_unlock(&s->cancel_lock);
	return took;
}

int rdmae_session_stats(struct rdmae_session *s, struct rdmae_session_stats *st)
{
	if (!s || !st)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	*st = s->st;
	if (s->start_ns && !st->total_ns)
		st->total_ns = now_ns() - s->start_ns;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int rdmae_session_lane_stats(struct rdmae_session *s, unsigned int lane,
			     struct rdmae_lane_stats *out)
{
	if (!s || !out)
		return -EINVAL;
	return rdmae_conn_lane_stats(s->conn, lane, out);
}
