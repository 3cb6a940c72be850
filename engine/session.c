/* SPDX-License-Identifier: MIT */
/*
 * The migration session's lifecycle and what its other parts share
 * (session_int.h lists them): create/destroy, shutdown (cancel, failures,
 * the point of no return), entry and exit of the public calls, messages,
 * live settings, stats. doc/protocol-engine.md describes the messages and
 * the ordering argument; the comments point at the places where the
 * ordering is enforced.
 */
#include "rdmae_engine.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commit_rules.h"
#include "pagesums.h"
#include "proto.h"
#include "rdmae_dev.h"
#include "session_int.h"

#define DEF_DOWNTIME_NS		(300 * NSEC_PER_MSEC)
#define DEF_MAX_ROUNDS		30
#define DEF_TIMEOUT_MS		30000

#define PROGRESS_MAX_MS		1000		/* a round says it is alive at least this often */
#define CANCEL_SEND_MS		1000		/* best effort: longest wait for CANCEL to go */

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
	o->reg_mode = RDMAE_REG_AUTO;
	o->downtime_limit_ns = DEF_DOWNTIME_NS;
	o->max_rounds = DEF_MAX_ROUNDS;
	o->timeout_ms = DEF_TIMEOUT_MS;
}

const char *rdmae_reg_mode_name(enum rdmae_reg_mode m)
{
	switch (m) {
	case RDMAE_REG_PIN_ALL:
		return "pin-all";
	case RDMAE_REG_ON_DEMAND:
		return "on-demand";
	case RDMAE_REG_ODP:
		return "odp";
	case RDMAE_REG_AUTO:
		return "auto";
	}
	return "?";
}

/*
 * This side's mode from the asked one. ODP asked for stays ODP even where
 * the device lacks it: pre-flight refuses it then, naming the device.
 */
static enum rdmae_reg_mode resolve_mode(enum rdmae_role role, enum rdmae_reg_mode asked,
					const struct rdmae_dev *dev)
{
	bool odp = dev && rdmae_dev_odp_write(dev);

	if (role == RDMAE_SOURCE)
		return asked == RDMAE_REG_AUTO ? RDMAE_REG_PIN_ALL : asked;
	/* On-demand chunks cannot take remote WRITEs: the destination's on-demand is ODP. */
	if (asked == RDMAE_REG_AUTO || asked == RDMAE_REG_ON_DEMAND)
		return odp ? RDMAE_REG_ODP : RDMAE_REG_PIN_ALL;
	return asked;
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

void sess_destroy_regions(struct rdmae_session *s)
{
	uint64_t t0 = rdmae_now_ns(), t1;
	size_t i, k, n = 0;

	pthread_mutex_lock(&s->reg_lock);
	for (i = 0; i < s->nblocks; i++) {
		for (k = 0; k < s->blk[i].nready; k++) {
			rdmae_region_destroy(s->blk[i].loc[k].region);
			s->blk[i].loc[k].region = NULL;
			n++;
		}
		s->blk[i].nready = 0;
	}
	/* Nothing is registered after this: a stopped session advertises no more. */
	s->reg_stopped = true;
	pthread_mutex_unlock(&s->reg_lock);
	if (!n)
		return;
	t1 = rdmae_now_ns();
	pthread_mutex_lock(&s->lock);
	s->st.dereg_ns += t1 - t0;
	if (s->commit_at_ns)
		s->st.dereg_after_commit_ns = t1 - s->commit_at_ns;
	pthread_mutex_unlock(&s->lock);
}

int rdmae_session_release(struct rdmae_session *s, struct rdmae_err *err)
{
	int st;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "release: no session");
	if (atomic_flag_test_and_set(&s->busy))
		return rdmae_err_set(err, -EBUSY, "release: another call on this session is in "
				     "progress");
	st = atomic_load(&s->state);
	/*
	 * Unregistering under a live round would fault the WRITEs still
	 * landing; before pre-flight it would leave a session that registers
	 * nothing more, its source waiting for pieces that never come.
	 */
	if ((st == ST_READY || st == ST_NEW) && !atomic_load(&s->stop)) {
		atomic_flag_clear(&s->busy);
		return rdmae_err_set(err, -EINVAL, "release: the migration is %s (cancel it "
				     "first)", st == ST_NEW ? "not started" : "still in progress");
	}
	sess_destroy_regions(s);
	atomic_flag_clear(&s->busy);
	return 0;
}

/* Piece k of b, starting off bytes in: PIECE_FIRST << k, capped, whole pages, not past the end. */
static uint64_t piece_len(const struct sblock *b, bool whole, size_t k, uint64_t off)
{
	uint64_t len = whole ? PIECE_WHOLE_MAX : PIECE_MAX, ps = b->b.page_size;

	if (!whole && k < 32 && (PIECE_FIRST << k) < PIECE_MAX)
		len = PIECE_FIRST << k;
	len = (len + ps - 1) / ps * ps;
	return len < b->b.len - off ? len : b->b.len - off;
}

int sess_pieces_init(struct sblock *b, bool whole)
{
	uint64_t off;
	size_t n = 0;

	/* create() refuses empty blocks; this keeps the analyzer informed. */
	if (!b->b.len)
		return -EINVAL;
	for (off = 0; off < b->b.len; n++)
		off += piece_len(b, whole, n, off);
	b->loc = calloc(n, sizeof(*b->loc));
	if (!b->loc)
		return -ENOMEM;
	b->nloc = n;
	for (n = 0, off = 0; n < b->nloc; n++) {
		b->loc[n].off = off;
		b->loc[n].len = piece_len(b, whole, n, off);
		off += b->loc[n].len;
	}
	return 0;
}

size_t sess_piece_at(const struct piece *p, size_t n, uint64_t off)
{
	size_t lo = 0, hi = n;

	/* Pieces are consecutive from 0: the last one starting at or before off. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (p[mid].off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
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
		sess_destroy_regions(s);
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
int sess_decide(struct rdmae_session *s, const char *op, struct rdmae_err *err)
{
	int rc;

	pthread_mutex_lock(&s->cancel_lock);
	rc = rdmae_gate_decide(&s->gate);
	pthread_mutex_unlock(&s->cancel_lock);
	if (rc)
		return atomic_load(&s->stop) ? sess_stopped_err(s, err)
					     : rdmae_err_set(err, rc, "%s: cancelled", op);
	return 0;
}

bool sess_decided(struct rdmae_session *s)
{
	bool d;

	pthread_mutex_lock(&s->cancel_lock);
	d = s->gate.decided;
	pthread_mutex_unlock(&s->cancel_lock);
	return d;
}

int sess_stopped_err(struct rdmae_session *s, struct rdmae_err *err)
{
	int code;

	pthread_mutex_lock(&s->lock);
	code = s->stop_code ? s->stop_code : -ECANCELED;
	rdmae_err_set(err, code, "%s", s->stop_why);
	pthread_mutex_unlock(&s->lock);
	return code;
}

void sess_set_failed(struct rdmae_session *s, int rc, const struct rdmae_err *err)
{
	pthread_mutex_lock(&s->lock);
	s->fail_code = rc;
	snprintf(s->fail_msg, sizeof(s->fail_msg), "%s", err->msg);
	pthread_mutex_unlock(&s->lock);
	atomic_store(&s->state, ST_FAILED);
}

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
				rc = sess_peer_cancelled(s, &m, err);
			} else if (m.type == RDMAE_MSG_PREFLIGHT_ERR) {
				rc = rdmae_err_set(err, m.u.preflight_err.error, "%s",
						   m.u.preflight_err.reason);
				sess_set_failed(s, rc, err);
			} else if (m.type == RDMAE_MSG_COMMIT_FAIL) {
				rc = rdmae_err_set(err, m.u.commit_fail.error, "%s",
						   m.u.commit_fail.reason);
				sess_set_failed(s, rc, err);
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
int sess_fail(struct rdmae_session *s, int rc, struct rdmae_err *err)
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
		return sess_stopped_err(s, err);
	verdict = rdmae_conn_error(s->conn, NULL) ? peer_verdict_queued(s, err) : 0;
	if (verdict) {
		shut(s, verdict, "", err->msg, false);
		return verdict;
	}
	sess_set_failed(s, rc, err);
	shut(s, rc, "", err->msg, rdmae_conn_error(s->conn, NULL) == 0);
	return rc;
}

/* The peer sent CANCEL: stop without answering. */
int sess_peer_cancelled(struct rdmae_session *s, const struct rdmae_msg *m,
			struct rdmae_err *err)
{
	char why[RDMAE_ERR_LEN];

	snprintf(why, sizeof(why), "cancelled by the %s: %s", peer_name(s->role),
		 m->u.cancel.reason);
	rdmae_err_set(err, -ECANCELED, "%s", why);
	sess_set_failed(s, -ECANCELED, err);
	shut(s, -ECANCELED, "", why, false);
	return -ECANCELED;
}

int sess_unexpected(struct rdmae_session *s, const struct rdmae_msg *m, const char *waiting,
		    struct rdmae_err *err)
{
	rdmae_err_set(err, -EPROTO, "%s: unexpected %s from the %s while waiting for %s",
		      role_name(s->role), rdmae_msg_type_name(m->type), peer_name(s->role),
		      waiting);
	return sess_fail(s, -EPROTO, err);
}

/* ---- entry and exit of the public calls ---- */

int sess_enter(struct rdmae_session *s, enum rdmae_role role, int want, const char *op,
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
		rc = sess_stopped_err(s, err);
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

void sess_leave(struct rdmae_session *s)
{
	atomic_flag_clear(&s->busy);
}

/* ---- messages ---- */

int sess_send_msg(struct rdmae_session *s, const void *buf, size_t len, struct rdmae_err *err)
{
	int rc = rdmae_send(s->conn, buf, len, err);

	if (!rc)
		s->last_send_ns = rdmae_now_ns();
	return rc;
}

/* Time spent hashing, and the part of it after the stop (the verification in the downtime). */
void sess_note_first_write(struct rdmae_session *s)
{
	pthread_mutex_lock(&s->lock);
	if (!s->st.first_write_ns) {
		s->st.first_write_ns = rdmae_now_ns() - s->start_ns;
		if (!s->st.first_write_ns)
			s->st.first_write_ns = 1;
		s->st.reg_first_ns = s->st.reg_ns;
	}
	pthread_mutex_unlock(&s->lock);
}

void sess_account_hash(struct rdmae_session *s, uint64_t t0, bool at_stop, uint64_t bytes)
{
	uint64_t dt = rdmae_now_ns() - t0;

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
int sess_recv_any(struct rdmae_session *s, int timeout_ms, void **buf, struct rdmae_msg *m,
		  struct rdmae_err *err)
{
	size_t len;
	int rc;

	*buf = NULL;
	rc = rdmae_recv(s->conn, buf, &len, timeout_ms, err);
	if (rc)
		return rc;
	rc = rdmae_msg_decode(*buf, len, s->have_ctx ? &s->ctx : NULL, m, err);
	/* Taken in at once: the next DESCS is decoded against the frontier this one moves. */
	if (!rc && m->type == RDMAE_MSG_DESCS)
		rc = sess_src_take_descs(s, m, err);
	if (rc) {
		free(*buf);
		*buf = NULL;
		return sess_fail(s, rc, err);
	}
	return 0;
}

int sess_recv_msg(struct rdmae_session *s, int timeout_ms, void **buf, struct rdmae_msg *m,
		  struct rdmae_err *err)
{
	for (;;) {
		int rc = sess_recv_any(s, timeout_ms, buf, m, err);

		if (rc || m->type != RDMAE_MSG_DESCS)
			return rc;
		free(*buf);
		*buf = NULL;
	}
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
void sess_set_ctx(struct rdmae_session *s)
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
	/* Set at PREFLIGHT_OK (preflight.c): a DESCS before it is refused by the decoder. */
	s->ctx.advertised = NULL;
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
	if (o && (unsigned int)o->reg_mode > RDMAE_REG_AUTO)
		return rdmae_err_set(err, -EINVAL, "session create: registration mode %d unknown",
				     (int)o->reg_mode);
	if (o && (unsigned int)o->data_path > RDMAE_DATA_PATH_EXTERNAL)
		return rdmae_err_set(err, -EINVAL, "session create: data path %d unknown",
				     (int)o->data_path);
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
	s->mode = resolve_mode(role, s->o.reg_mode, rdmae_conn_dev(conn));
	s->external = s->o.data_path == RDMAE_DATA_PATH_EXTERNAL;
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
		s->advertised = calloc(nblocks, sizeof(*s->advertised));
		if (!s->runs || !s->zruns || !s->zmsg || !s->advertised)
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
		sess_set_ctx(s);

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
	if (pthread_mutex_init(&s->rx_lock, NULL))
		goto err_cancel_lock;
	if (pthread_rwlock_init(&s->rem_lock, NULL))
		goto err_rx_lock;
	*out = s;
	return 0;

err_rx_lock:
	pthread_mutex_destroy(&s->rx_lock);
err_cancel_lock:
	pthread_mutex_destroy(&s->cancel_lock);
err_reg_lock:
	pthread_mutex_destroy(&s->reg_lock);
err_lock:
	pthread_mutex_destroy(&s->lock);
err_free:
	for (i = 0; s->blk && i < nblocks; i++)
		rdmae_pagesums_free(&s->blk[i].ps);
	free(s->advertised);
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
	/* Unpinned here unless released before: after the guest runs, never in the downtime. */
	sess_destroy_regions(s);
	for (i = 0; i < s->nblocks; i++) {
		struct sblock *b = &s->blk[i];
		size_t k;

		for (k = 0; k < b->nrem; k++)
			free(b->rem[k].descs);
		free(b->loc);
		free(b->rem);
		rdmae_pagesums_free(&b->ps);
	}
	free(s->advertised);
	pthread_rwlock_destroy(&s->rem_lock);
	pthread_mutex_destroy(&s->rx_lock);
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
	 * the stop happen under the same lock as the sender's (sess_decide()).
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
		st->total_ns = rdmae_now_ns() - s->start_ns;
	sess_external_stats(s, st);
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
