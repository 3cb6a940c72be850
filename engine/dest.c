/* SPDX-License-Identifier: MIT */
/*
 * The destination's steps: ZERO_RUNS and DATA_RUNS applied, each round
 * acked once its fence has arrived, device state handed to the caller, and
 * COMPLETE checked, verified and committed in the order commit_rules.h
 * keeps.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdmae_write.h"
#include "commit_rules.h"
#include "pagesums.h"
#include "proto.h"
#include "rdmae_converge.h"
#include "rdmae_dirty.h"
#include "session_int.h"

#define PAGE_SUMS_CHUNK_MAX	(1u << 20)	/* page sums per PAGE_SUMS answer */
#define ZERO_CHECK_BYTES	(16 * MIB)	/* zero-filled between checks for a stop */

/* ---- destination steps ---- */

/*
 * ZERO_RUNS: one message may name up to RDMAE_PROTO_MAX_RUNS runs, each as
 * long as its block (the decoder only guarantees they do not overlap), so a
 * single message can be worth seconds of memset on a large guest. Check
 * for a local cancel and for a dead connection every ZERO_CHECK_BYTES, so
 * that neither waits for the message to be done.
 */
static int dst_zero_fill(struct rdmae_session *s, const struct rdmae_msg *m,
			 struct rdmae_err *err)
{
	struct sblock *b = &s->blk[m->u.zero_runs.block];
	size_t ps = b->b.page_size;
	uint64_t check_pages = (ZERO_CHECK_BYTES / ps) ? (ZERO_CHECK_BYTES / ps) : 1;
	uint64_t pages = 0, since_check = 0;
	uint32_t i;
	int rc = 0;

	for (i = 0; i < m->u.zero_runs.count && !rc; i++) {
		uint64_t first, n, p;

		rdmae_msg_zero_runs_get(m, i, &first, &n);
		for (p = first; p < first + n; p++) {
			uint8_t *page = (uint8_t *)b->b.host + p * ps;

			if (++since_check >= check_pages) {
				since_check = 0;
				if (atomic_load(&s->stop) || rdmae_conn_error(s->conn, NULL)) {
					rc = -ECANCELED;
					n = p - first;
					break;
				}
			}
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
	if (!rc)
		return 0;
	if (atomic_load(&s->stop))
		return sess_stopped_err(s, err);
	/* The connection's own error says why (peer gone, keepalive, CANCEL then hang-up). */
	return sess_fail(s, rdmae_conn_error(s->conn, err), err);
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
	uint64_t t0 = rdmae_now_ns();
	size_t i;
	int rc = 0;

	uint64_t bytes = 0;

	for (i = 0; i < s->nblocks && !rc; i++) {
		uint64_t n = 0;

		rc = rdmae_pagesums_hash_stale(&s->blk[i].ps, s->blk[i].b.host, &s->stop, &n,
					       err);
		bytes += n * s->blk[i].b.page_size;
	}
	sess_account_hash(s, t0, at_stop, bytes);
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
		uint64_t backlog = 0;
		size_t i;

		/*
		 * The hashing this side does next (below) delays its answer to the
		 * next ROUND_END: the source counts it in its expected downtime, so
		 * it does not stop the guest while we are still behind.
		 */
		for (i = 0; s->rx_sums && i < s->nblocks; i++)
			backlog += rdmae_pagesums_stale(&s->blk[i].ps) * s->blk[i].b.page_size;
		rc = sess_send_msg(s, ack, rdmae_msg_round_ack_encode(ack, re->round, backlog),
				   err);
	}
	/* A source that does not verify sends no DATA_RUNS: then hashing would be wasted. */
	if (!rc && s->rx_sums)
		rc = dst_hash_placed(s, final, err);
	if (rc)
		return sess_fail(s, rc, err);
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
	sess_set_failed(s, code, err);
	sess_send_msg(s, msg, rdmae_msg_commit_fail_encode(msg, code, block, page, r), NULL);
	sess_destroy_regions(s);
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

		rc = sess_send_msg(s, msg, rdmae_msg_page_sums_req_encode(msg, block, first, n),
				   err);
		if (!rc)
			rc = sess_recv_msg(s, s->slow_timeout_ms, &buf, &m, err);
		if (rc)
			break;
		if (m.type == RDMAE_MSG_CANCEL) {
			rc = sess_peer_cancelled(s, &m, err);
		} else if (m.type != RDMAE_MSG_PAGE_SUMS || m.u.page_sums.block != block ||
			   m.u.page_sums.first_page != first || m.u.page_sums.npages != n) {
			rc = sess_unexpected(s, &m, "PAGE_SUMS of the range asked for", err);
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
	rc = sess_block_sums(s, sums, err);
	if (!rc)
		rc = sess_recv_msg(s, s->slow_timeout_ms, &buf, &m, err);
	if (rc)
		goto out;
	if (m.type == RDMAE_MSG_CANCEL) {
		rc = sess_peer_cancelled(s, &m, err);
		goto out;
	}
	if (m.type != RDMAE_MSG_BLOCK_SUMS) {
		rc = sess_unexpected(s, &m, "BLOCK_SUMS", err);
		goto out;
	}
	/* Tests only (RDMAE_TEST_FAULTS=recheck): memory, not only the sums. */
	if (sess_recheck(s, &i, &page, reason, sizeof(reason))) {
		rc = dst_commit_fail(s, -EIO, (uint32_t)i, page, reason, err);
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
	/* External: the source fenced lane 0 only; the other lanes' streams are the caller's. */
	int rc = s->external ? rdmae_fence_wait_lane(s->conn, 0, seq, s->slow_timeout_ms, err)
			     : rdmae_fence_wait(s->conn, seq, s->slow_timeout_ms, err);

	return rc ? sess_fail(s, rc, err) : 0;
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

	return rc ? sess_fail(s, rc, err) : 0;
}

static int dcs_verify(void *arg, struct rdmae_err *err)
{
	struct rdmae_session *s = arg;
	int rc = dst_verify(s, err);

	if (rc && atomic_load(&s->state) != ST_FAILED)
		rc = sess_fail(s, rc, err);
	return rc;
}

static int dcs_decide(void *arg, struct rdmae_err *err)
{
	struct rdmae_session *s = arg;
	int rc = sess_decide(s, "commit", err);

	return rc ? sess_fail(s, rc, err) : 0;
}

static int dcs_commit_ok(void *arg, bool verified, struct rdmae_err *err)
{
	struct rdmae_session *s = arg;
	uint8_t msg[RDMAE_MSG_SMALL_MAX];
	int rc;

	rc = sess_send_msg(s, msg,
			   rdmae_msg_commit_ok_encode(msg, verified ? RDMAE_COMMIT_VERIFIED : 0),
			   err);
	if (rc)
		return sess_fail(s, rc, err);
	/*
	 * External (QEMU): COMMITTED starts the guest here and the caller may
	 * tear the connection down right after; give COMMIT_OK the time to
	 * leave first. Posting it was the decision: a drain that fails (the
	 * source already hung up, having read it; or a link that died) must
	 * not fail the commit, or the guest would run nowhere. A source that
	 * missed it stays paused, its outcome unknown.
	 */
	if (s->external) {
		struct rdmae_err drain_err = { 0 };

		(void)rdmae_send_drain_lane(s->conn, 0, s->o.timeout_ms, &drain_err);
	}
	/* Pinned (but unwritable) until released, after the guest runs. */
	pthread_mutex_lock(&s->lock);
	s->commit_at_ns = rdmae_now_ns();
	pthread_mutex_unlock(&s->lock);
	return 0;
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
		.external = s->external,
	};

	return rdmae_dst_commit(&dst_commit_ops, s, &p, c, verified, err);
}

/*
 * Registration interleaved with the messages, not on a thread of its own:
 * a message already waiting is taken first, else one piece is registered
 * and advertised, and so on; once all are in, wait for the next message as
 * before. A message waits at most one piece's registration (PIECE_MAX), a
 * final ROUND_END or COMPLETE that has arrived is never held up by one
 * more piece (nothing is made writable after it), and the connection and
 * the regions stay in one thread's hands (no DESCS racing a ROUND_ACK for
 * the send credits, no registration racing a cancel's teardown beyond what
 * reg_lock orders).
 */
static int dst_next_msg(struct rdmae_session *s, void **buf, struct rdmae_msg *m,
			struct rdmae_err *err)
{
	for (;;) {
		int rc = sess_recv_msg(s, 0, buf, m, err);

		if (rc != -ETIMEDOUT || rdmae_conn_error(s->conn, NULL))
			return rc;
		rdmae_err_clear(err);
		rc = sess_dst_advertise(s, err);
		if (rc < 0)
			return rc;
		if (!rc)
			return sess_recv_msg(s, s->o.timeout_ms, buf, m, err);
	}
}

/*
 * The final round is placed (or COMPLETE came): no WRITE comes any more,
 * so nothing more is registered: registering now would only lengthen the
 * downtime and make memory writable that no one writes.
 */
static void dst_stop_registering(struct rdmae_session *s)
{
	pthread_mutex_lock(&s->reg_lock);
	s->reg_stopped = true;
	pthread_mutex_unlock(&s->reg_lock);
}

static int dst_step(struct rdmae_session *s, struct rdmae_dest_event *ev, struct rdmae_err *err)
{
	for (;;) {
		struct rdmae_msg m;
		void *buf;
		int rc = dst_next_msg(s, &buf, &m, err);

		if (rc) {
			/* A quiet source is not an error in itself: the caller may wait again. */
			if (rc == -ETIMEDOUT && !rdmae_conn_error(s->conn, NULL))
				return rc;
			return atomic_load(&s->state) == ST_FAILED ? rc : sess_fail(s, rc, err);
		}
		/* The external data path has no engine rounds: their messages are out of place. */
		if (s->external && (m.type == RDMAE_MSG_ZERO_RUNS || m.type == RDMAE_MSG_DATA_RUNS ||
				    m.type == RDMAE_MSG_ROUND_END)) {
			rc = sess_unexpected(s, &m, "state or COMPLETE (external data path)", err);
			free(buf);
			return rc;
		}
		switch (m.type) {
		case RDMAE_MSG_PROGRESS:
			free(buf);
			continue;
		case RDMAE_MSG_ZERO_RUNS:
			rc = dst_zero_fill(s, &m, err);
			free(buf);
			if (rc)
				return rc;
			continue;
		case RDMAE_MSG_DATA_RUNS:
			dst_data_runs(s, &m);
			free(buf);
			continue;
		case RDMAE_MSG_ROUND_END:
			if (m.u.round_end.flags & RDMAE_ROUND_FINAL)
				dst_stop_registering(s);
			rc = dst_round_end(s, &m.u.round_end, ev, err);
			free(buf);
			return rc;
		case RDMAE_MSG_STATE:
			if (m.u.state.offset != s->rx_state) {
				rdmae_err_set(err, -EPROTO,
					      "destination: STATE at offset %" PRIu64 ", expected %"
					      PRIu64, m.u.state.offset, s->rx_state);
				free(buf);
				return sess_fail(s, -EPROTO, err);
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
			dst_stop_registering(s);
			rc = dst_complete(s, &c, &verified, err);
			if (rc)
				return rc;
			ev->kind = RDMAE_EV_COMMITTED;
			ev->verified = verified;
			ev->round = s->rx_rounds;
			return 0;
		}
		case RDMAE_MSG_CANCEL:
			rc = sess_peer_cancelled(s, &m, err);
			free(buf);
			return rc;
		default:
			rc = sess_unexpected(s, &m, "a round, state or COMPLETE", err);
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
	rc = sess_enter(s, RDMAE_DEST, ST_READY, "dest step", e);
	if (rc)
		return rc;
	free(s->ev_msg);
	s->ev_msg = NULL;
	memset(ev, 0, sizeof(*ev));
	rc = dst_step(s, ev, e);
	if (!rc && ev->kind == RDMAE_EV_COMMITTED) {
		pthread_mutex_lock(&s->lock);
		s->st.total_ns = rdmae_now_ns() - s->start_ns;
		pthread_mutex_unlock(&s->lock);
		atomic_store(&s->state, ST_DONE);
	}
	sess_leave(s);
	return rc;
}

int rdmae_session_dest_advertise_all(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_err le = { 0 };
	struct rdmae_err *e = err ? err : &le;
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "dest advertise: no session");
	rdmae_err_clear(e);
	rc = sess_enter(s, RDMAE_DEST, ST_READY, "dest advertise", e);
	if (rc)
		return rc;
	do
		rc = sess_dst_advertise(s, e);
	while (rc > 0);
	sess_leave(s);
	return rc;
}
