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
#include "hostcheck.h"
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

enum sess_state { ST_NEW, ST_READY, ST_DONE, ST_FAILED };

struct sblock {
	struct rdmae_block b;		/* the caller's; name borrowed */
	uint64_t npages;
	struct rdmae_region *region;
	struct rdmae_bufdesc *descs;	/* source: the destination's, for remote */
	struct rdmae_remote remote;
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
	atomic_bool complete_sent;	/* source: COMPLETE is out, the destination may commit */
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
	uint64_t sum_round_dirty;	/* dirty bytes retired by the rounds, zero pages included */
	uint64_t last_send_ns;
	uint64_t state_off;
	struct rdmae_round_stats last_rs;

	/* destination */
	void *ev_msg;			/* holds the last STATE event's bytes */
	unsigned int rx_rounds;
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
static void shut(struct rdmae_session *s, int code, const char *prefix, const char *why,
		 bool notify)
{
	pthread_mutex_lock(&s->cancel_lock);
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
	pthread_mutex_unlock(&s->cancel_lock);
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
	int verdict = rdmae_conn_error(s->conn, NULL) ? peer_verdict_queued(s, err) : 0;

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
	for (i = 0; i < nblocks; i++) {
		s->blk[i].b = blocks[i];
		s->blk[i].npages = blocks[i].len / blocks[i].page_size;
		s->total_bytes += blocks[i].len;
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
	for (i = 0; i < s->nblocks; i++) {
		rdmae_region_destroy(s->blk[i].region);
		free(s->blk[i].descs);
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

int rdmae_session_plan(struct rdmae_session *s, const uint64_t *const *bitmaps,
		       struct rdmae_plan *plan)
{
	uint64_t pages, bytes;
	double bw;

	if (!s || !plan || s->role != RDMAE_SOURCE || check_bitmaps(s, bitmaps))
		return -EINVAL;
	bytes = dirty_bytes(s, bitmaps, &pages);

	pthread_mutex_lock(&s->lock);
	/*
	 * The rate at which past rounds retired dirty bytes (zero pages
	 * included, like the remaining bytes they are compared with). Before any
	 * round it is unknown: only nothing to send fits for sure.
	 */
	bw = rdmae_bandwidth(s->sum_round_dirty, s->sum_round_ns);
	plan->dirty_pages = pages;
	plan->dirty_bytes = bytes;
	plan->expected_downtime_ns = rdmae_expected_downtime_ns(bytes, bw);
	plan->converged = rdmae_converged(bytes, bw, atomic_load(&s->downtime_ns));
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
static int progress_tick(struct round_ctx *rc)
{
	struct rdmae_session *s = rc->s;
	uint8_t msg[RDMAE_MSG_SMALL_MAX];

	if (atomic_load(&s->stop))
		return stopped_err(s, rc->err);
	if (now_ns() - s->last_send_ns < s->progress_ns)
		return 0;
	return send_msg(s, msg, rdmae_msg_progress_encode(msg, rc->round, rc->bytes), rc->err);
}

static int sleep_ns(struct round_ctx *rc, uint64_t ns)
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
		ret = progress_tick(rc);
		if (ret)
			return ret;
		/* A new cap (set_max_bandwidth) counts from now: stop paying the old one. */
		if (atomic_load(&rc->s->max_bw) != rc->rl.rate)
			return 0;
	}
	return 0;
}

static int flush_data(struct round_ctx *rc)
{
	struct rdmae_session *s = rc->s;
	struct sblock *b = &s->blk[rc->block];
	uint64_t wait;
	size_t n;
	int ret;

	if (!rc->nruns)
		return 0;
	/* Charge before posting: the cap holds at the moment the bytes leave. */
	wait = rdmae_ratelimit_charge(&rc->rl, rc->batch_bytes, now_ns());
	if (wait) {
		ret = sleep_ns(rc, wait);
		if (ret)
			return ret;
	}
	/* on_data already merged neighbours; rdmae_write sizes the WRs. */
	n = rc->nruns;
	ret = rdmae_write(s->conn, b->region, &b->remote, s->runs, n, rc->err);
	if (ret)
		return ret;
	rc->runs += n;
	rc->bytes += rc->batch_bytes;
	rc->nruns = 0;
	rc->batch_bytes = 0;
	return progress_tick(rc);
}

static int flush_zero(struct round_ctx *rc)
{
	struct rdmae_session *s = rc->s;
	size_t i, len;

	if (!rc->nzero)
		return 0;
	for (i = 0; i < rc->nzero; i++)
		rdmae_msg_zero_runs_put(s->zmsg, (uint32_t)i, s->zruns[i].first, s->zruns[i].n);
	len = rdmae_msg_zero_runs_finish(s->zmsg, (uint32_t)rc->block, (uint32_t)rc->nzero);
	rc->nzero = 0;
	return send_msg(s, s->zmsg, len, rc->err);
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
static int adopt_rate(struct round_ctx *rc)
{
	uint64_t rate = atomic_load(&rc->s->max_bw);
	int ret;

	if (rate == rc->rl.rate)
		return 0;
	ret = flush_data(rc);
	if (ret)
		return ret;
	rdmae_ratelimit_init(&rc->rl, rate, now_ns());
	rc->batch_cap = batch_cap(rate, rc->s->blk[rc->block].b.page_size);
	return 0;
}

static int on_data(void *arg, size_t first_page, size_t npages)
{
	struct round_ctx *rc = arg;
	struct rdmae_session *s = rc->s;
	uint64_t ps = rc->s->blk[rc->block].b.page_size;
	uint64_t off = (rc->seg_first + first_page) * ps, len = (uint64_t)npages * ps;
	int ret;

	ret = adopt_rate(rc);
	if (ret)
		return ret;
	rc->data_pages += npages;
	/* Split at the batch cap (a multiple of the page size) so that pieces stay whole pages. */
	while (len) {
		uint64_t piece = rc->batch_cap - rc->batch_bytes;
		struct rdmae_run *r = s->runs + rc->nruns;

		if (piece > len)
			piece = len;
		if (rc->nruns && r[-1].local + r[-1].len == off) {
			r[-1].len += piece;
		} else {
			r->local = off;
			r->remote = off;
			r->len = piece;
			rc->nruns++;
		}
		rc->batch_bytes += piece;
		off += piece;
		len -= piece;
		if (rc->nruns == RUN_BATCH || rc->batch_bytes >= rc->batch_cap) {
			ret = flush_data(rc);
			if (ret)
				return ret;
		}
	}
	return 0;
}

static int on_zero(void *arg, size_t first_page, size_t npages)
{
	struct round_ctx *rc = arg;
	struct zrun *z = rc->s->zruns;
	uint64_t first = rc->seg_first + first_page;

	rc->zero_pages += npages;
	/* Walk segments cut runs; glue them back. */
	if (rc->nzero && z[rc->nzero - 1].first + z[rc->nzero - 1].n == first) {
		z[rc->nzero - 1].n += npages;
		return 0;
	}
	z[rc->nzero].first = first;
	z[rc->nzero].n = npages;
	if (++rc->nzero == ZERO_BATCH)
		return flush_zero(rc);
	return 0;
}

static int walk_block(struct round_ctx *rc, const uint64_t *bitmap)
{
	struct rdmae_session *s = rc->s;
	struct sblock *b = &s->blk[rc->block];
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
			.arg = rc,
		};

		rc->seg_first = first;
		ret = rdmae_dirty_walk(&w);
		if (!ret)
			ret = progress_tick(rc);
		if (ret) {
			if (!rc->err->code)
				rdmae_err_set(rc->err, ret,
					      "round %u: block '%s': dirty walk failed", rc->round,
					      b->b.name);
			return ret;
		}
	}
	/* ZERO_RUNS name one block: flush both batches before the next. */
	ret = flush_data(rc);
	if (!ret)
		ret = flush_zero(rc);
	return ret;
}

static int wait_ack(struct round_ctx *rc)
{
	struct rdmae_session *s = rc->s;
	struct rdmae_msg m;
	void *buf;
	int ret;

	ret = recv_msg(s, s->slow_timeout_ms, &buf, &m, rc->err);
	if (ret)
		return ret;
	if (m.type == RDMAE_MSG_ROUND_ACK && m.u.round_ack.round == rc->round)
		ret = 0;
	else if (m.type == RDMAE_MSG_CANCEL)
		ret = peer_cancelled(s, &m, rc->err);
	else if (m.type == RDMAE_MSG_ROUND_ACK)
		ret = rdmae_err_set(rc->err, -EPROTO, "round %u: ROUND_ACK for round %" PRIu32,
				    rc->round, m.u.round_ack.round);
	else
		ret = rdmae_err_set(rc->err, -EPROTO,
				    "round %u: unexpected %s while waiting for ROUND_ACK",
				    rc->round, rdmae_msg_type_name(m.type));
	free(buf);
	return ret;
}


static int do_round(struct rdmae_session *s, const uint64_t *const *bitmaps, bool final,
		    struct rdmae_round_stats *r, struct rdmae_err *err)
{
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	struct round_ctx rc = { .s = s, .err = err };
	struct rdmae_msg_round_end re;
	uint64_t t0 = now_ns(), pages, dbytes, dur;
	uint32_t seq = 0;
	int ret;

	rc.round = s->st.rounds + 1;
	dbytes = dirty_bytes(s, bitmaps, &pages);
	rdmae_ratelimit_init(&rc.rl, atomic_load(&s->max_bw), t0);

	for (rc.block = 0; rc.block < s->nblocks; rc.block++) {
		rc.batch_cap = batch_cap(rc.rl.rate, s->blk[rc.block].b.page_size);
		ret = walk_block(&rc, bitmaps[rc.block]);
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
	re.round = rc.round;
	re.fence_seq = seq;
	re.flags = final ? RDMAE_ROUND_FINAL : 0;
	re.pages = pages;
	re.bytes = rc.bytes;
	re.zero_pages = rc.zero_pages;
	re.runs = rc.runs;
	re.duration_ns = now_ns() - t0;
	ret = send_msg(s, msg, rdmae_msg_round_end_encode(msg, &re), err);
	if (!ret)
		ret = wait_ack(&rc);
	if (ret)
		return ret;
	dur = now_ns() - t0;
	if (!dur)
		dur = 1;

	memset(r, 0, sizeof(*r));
	r->round = rc.round;
	r->pages = pages;
	r->bytes = rc.bytes;
	r->zero_pages = rc.zero_pages;
	r->runs = rc.runs;
	r->duration_ns = dur;
	r->bandwidth = rdmae_bandwidth(rc.bytes, dur);

	pthread_mutex_lock(&s->lock);
	/* Bytes dirtied between the starts of the previous round and this one. */
	if (s->prev_round_start_ns && t0 > s->prev_round_start_ns)
		r->dirty_rate = rdmae_bandwidth(dbytes, t0 - s->prev_round_start_ns);
	s->prev_round_start_ns = t0;
	s->sum_round_ns += dur;
	s->sum_round_dirty += dbytes;
	s->st.rounds = rc.round;
	s->st.transferred_bytes += rc.bytes;
	s->st.normal_pages += rc.data_pages;
	s->st.zero_pages += rc.zero_pages;
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

static int src_block_sums(struct rdmae_session *s, struct rdmae_err *err)
{
	uint64_t *sums;
	uint8_t *msg;
	size_t i, len = rdmae_msg_block_sums_size((uint32_t)s->nblocks);
	int rc = 0;

	sums = calloc(s->nblocks, sizeof(*sums));
	msg = malloc(len);
	if (!sums || !msg) {
		rc = rdmae_err_set(err, -ENOMEM, "complete: out of memory for checksums");
		goto out;
	}
	for (i = 0; i < s->nblocks && !rc; i++) {
		const struct sblock *b = &s->blk[i];

		rc = rdmae_block_sum(b->b.host, b->npages, b->b.page_size, &s->stop, &sums[i], err);
	}
	if (rc)
		goto out;
	rdmae_msg_block_sums_encode(msg, sums, (uint32_t)s->nblocks);
	rc = send_msg(s, msg, len, err);
out:
	free(msg);
	free(sums);
	return rc;
}

static int src_page_sums(struct rdmae_session *s, const struct rdmae_msg *m,
			 struct rdmae_err *err)
{
	const struct sblock *b = &s->blk[m->u.page_sums.block];
	uint64_t i, n = m->u.page_sums.npages, first = m->u.page_sums.first_page;
	size_t len = rdmae_msg_page_sums_size(n);
	uint8_t *msg;
	int rc;

	/* The decoder bounded n to one message, and the range to the block. */
	msg = malloc(len);
	if (!msg)
		return rdmae_err_set(err, -ENOMEM, "complete: out of memory for %" PRIu64
				     " page sums", n);
	for (i = 0; i < n; i++)
		rdmae_msg_page_sums_put(msg, i,
					rdmae_page_sum((const uint8_t *)b->b.host +
						       (first + i) * b->b.page_size,
						       b->b.page_size));
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
	if (!atomic_load(&s->complete_sent) || s->peer_verdict)
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
	uint64_t verify_start;
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
	verify_start = now_ns();
	rc = send_msg(s, small, rdmae_msg_complete_encode(small, &c), err);
	if (!rc)
		atomic_store(&s->complete_sent, true);
	/* Sent before hashing, so that both sides hash at the same time. */
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
			s->st.verify_ns = now_ns() - verify_start;
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
				return rc;
			}
			rc = src_page_sums(s, &m, err);
			free(buf);
			if (rc)
				return complete_failed(s, rc, err);
			break;
		case RDMAE_MSG_CANCEL:
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
	const struct sblock *b = &s->blk[m->u.zero_runs.block];
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
		pages += n;
	}
	pthread_mutex_lock(&s->lock);
	s->st.zero_pages += pages;
	pthread_mutex_unlock(&s->lock);
}

static int dst_round_end(struct rdmae_session *s, const struct rdmae_msg_round_end *re,
			 struct rdmae_dest_event *ev, struct rdmae_err *err)
{
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
	if (rc)
		return fail(s, rc, err);
	s->rx_rounds = re->round;
	pthread_mutex_lock(&s->lock);
	s->rx_round_ns += re->duration_ns;
	s->st.rounds = re->round;
	s->st.transferred_bytes += re->bytes;
	s->st.normal_pages += re->pages - re->zero_pages;
	s->st.throughput = rdmae_bandwidth(s->st.transferred_bytes, s->rx_round_ns);
	pthread_mutex_unlock(&s->lock);
	ev->kind = RDMAE_EV_ROUND;
	ev->round = re->round;
	ev->final = (re->flags & RDMAE_ROUND_FINAL) != 0;
	return 0;
}

/* Answer COMMIT_FAIL in the words we return ourselves. */
static int dst_commit_fail(struct rdmae_session *s, int code, uint32_t block, uint64_t page,
			   const char *reason, struct rdmae_err *err)
{
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	char r[RDMAE_PROTO_REASON_LEN];

	snprintf(r, sizeof(r), "%s", reason);
	destroy_regions(s);
	rdmae_err_set(err, code, "%s", r);
	set_failed(s, code, err);
	send_msg(s, msg, rdmae_msg_commit_fail_encode(msg, code, block, page, r), NULL);
	return code;
}

/* Narrow a mismatching block down to its first differing page, chunk by chunk. */
static int dst_first_diff(struct rdmae_session *s, uint32_t block, uint64_t *page,
			  struct rdmae_err *err)
{
	const struct sblock *b = &s->blk[block];
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	uint64_t max = rdmae_msg_page_sums_max(s->max_msg), first, i;
	uint64_t *mine;
	int rc = 0;

	if (max > PAGE_SUMS_CHUNK_MAX)
		max = PAGE_SUMS_CHUNK_MAX;
	mine = malloc(max * sizeof(*mine));
	if (!mine)
		return rdmae_err_set(err, -ENOMEM, "verify: out of memory for page sums");
	*page = RDMAE_PROTO_NO_PAGE;
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
			rdmae_page_sums(b->b.host, b->b.page_size, first, n, mine);
			for (i = 0; i < n; i++) {
				if (mine[i] != rdmae_msg_page_sums_get(&m, i)) {
					*page = first + i;
					break;
				}
			}
		}
		free(buf);
		if (rc)
			break;
	}
	free(mine);
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
	/* Hash while the source hashes; its sums come after. */
	for (i = 0; i < s->nblocks && !rc; i++)
		rc = rdmae_block_sum(s->blk[i].b.host, s->blk[i].npages, s->blk[i].b.page_size,
				     &s->stop, &sums[i], err);
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

static int dst_complete(struct rdmae_session *s, const struct rdmae_msg_complete *c,
			bool *verified, struct rdmae_err *err)
{
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	bool verify = !(c->flags & RDMAE_COMPLETE_NO_VERIFY);
	int rc;

	rc = rdmae_fence_wait(s->conn, c->fence_seq, s->slow_timeout_ms, err);
	if (rc)
		return fail(s, rc, err);
	if (c->rounds != s->rx_rounds || c->state_bytes != s->rx_state) {
		char reason[RDMAE_PROTO_REASON_LEN];

		snprintf(reason, sizeof(reason),
			 "complete: the source sent %" PRIu32 " rounds and %" PRIu64
			 " state bytes, %u and %" PRIu64 " arrived", c->rounds, c->state_bytes,
			 s->rx_rounds, s->rx_state);
		return dst_commit_fail(s, -EPROTO, RDMAE_PROTO_NO_BLOCK, RDMAE_PROTO_NO_PAGE,
				       reason, err);
	}
	if (verify) {
		rc = dst_verify(s, err);
		if (rc) {
			if (atomic_load(&s->state) != ST_FAILED)
				rc = fail(s, rc, err);
			return rc;
		}
	}
	rc = send_msg(s, msg, rdmae_msg_commit_ok_encode(msg, verify ? RDMAE_COMMIT_VERIFIED : 0),
		      err);
	if (rc)
		return fail(s, rc, err);
	*verified = verify;
	/* Committed: nothing may write this memory from afar any more. */
	destroy_regions(s);
	return 0;
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

void rdmae_session_cancel(struct rdmae_session *s, const char *why)
{
	char r[RDMAE_PROTO_REASON_LEN];

	if (!s)
		return;
	/*
	 * After commit there is nothing left to undo; and once the source has
	 * sent COMPLETE the destination may commit at any moment, so only it
	 * can still refuse (a source-side cancel would leave the outcome unknown).
	 */
	if (atomic_load(&s->state) == ST_DONE ||
	    (s->role == RDMAE_SOURCE && atomic_load(&s->complete_sent)))
		return;
	snprintf(r, sizeof(r), "%s", why && *why ? why : "cancelled");
	/* The peer gets the reason as given; local callers learn it was a cancel. */
	shut(s, -ECANCELED, "cancelled: ", r, true);
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
