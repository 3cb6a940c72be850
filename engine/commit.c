/* SPDX-License-Identifier: MIT */
/*
 * The source's commit: the final fence, COMPLETE (the point of no return),
 * the block sums the destination verifies against, the page sums it may
 * ask for to name a differing page, and its verdict.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "rdmae_write.h"
#include "checksum.h"
#include "commit_rules.h"
#include "pagesums.h"
#include "proto.h"
#include "session_int.h"

/* ---- complete (source) ---- */

/*
 * Tests only (RDMAE_TEST_FAULTS=recheck): does memory still hold what the
 * kept sums say? The commit compares sums, not memory, so a page the source
 * changed after its last send without sending it again (a dirty log that
 * missed a write), or a destination page overwritten after it was placed
 * and summed, passes the verification. This finds them: every differing
 * page is logged (the first 32, on stderr, which QEMU keeps in its log),
 * the first is named in why, and the side's commit fails with -EIO.
 * 0 at once without the fault, or outside the external data path.
 */
int sess_recheck(struct rdmae_session *s, size_t *blk, uint64_t *page, char *why,
		 size_t whylen)
{
	const char *side = s->role == RDMAE_SOURCE ? "source" : "destination";
	const char *what = s->role == RDMAE_SOURCE ?
		"changed after its last send without being sent again" :
		"changed after it was placed";
	uint64_t bad = 0, kept = 0;
	size_t i;

	if (!s->external || !s->sums || !rdmae_conn_test_fault(s->conn, "recheck"))
		return 0;
	for (i = 0; i < s->nblocks; i++) {
		struct sblock *b = &s->blk[i];
		uint64_t p;

		for (p = 0; p < b->npages; p++) {
			uint64_t want = __atomic_load_n(&b->ps.sums[p], __ATOMIC_RELAXED);
			uint64_t got;

			if (want == RDMAE_PAGESUM_UNSENT)
				continue;
			kept++;
			got = rdmae_page_sum((const uint8_t *)b->b.host + p * b->b.page_size,
					     b->b.page_size);
			if (got == RDMAE_PAGESUM_UNSENT)
				got = 1;
			if (got == want)
				continue;
			if (!bad) {
				*blk = i;
				*page = p;
				snprintf(why, whylen, "recheck: %s: block '%s': page %" PRIu64
					 " (offset %#" PRIx64 ") %s", side, b->b.name, p,
					 p * b->b.page_size, what);
			}
			if (bad++ < 32)
				fprintf(stderr, "rdmae recheck: %s: block '%s' page %" PRIu64
					" (offset %#" PRIx64 "): kept sum %016" PRIx64
					", memory now %016" PRIx64 "\n", side, b->b.name, p,
					p * b->b.page_size, want, got);
		}
	}
	fprintf(stderr, "rdmae recheck: %s: %" PRIu64 " of %" PRIu64
		" summed pages differ from their kept sums\n", side, bad, kept);
	return bad ? -EIO : 0;
}

/*
 * Block sums from the page sums kept through the rounds. Only pages that
 * never had a current sum (not sent in any round: normally none, since the
 * first round covers all of memory) are hashed from memory now. In the
 * external data path nothing is: the sums are what the caller's threads
 * stored (rdmae_session_page_sum), and a page never named keeps the
 * "never sent" sentinel on both sides, so that it is not compared.
 */
int sess_block_sums(struct rdmae_session *s, uint64_t *sums, struct rdmae_err *err)
{
	uint64_t t0 = rdmae_now_ns();
	size_t i;
	int rc = 0;

	uint64_t bytes = 0;

	for (i = 0; i < s->nblocks && !rc; i++) {
		struct sblock *b = &s->blk[i];
		uint64_t n = 0;

		if (!s->external)
			rc = rdmae_pagesums_hash_stale(&b->ps, b->b.host, &s->stop, &n, err);
		if (!rc)
			rc = rdmae_pagesums_digest(&b->ps, &sums[i], err);
		bytes += n * b->b.page_size + b->npages * sizeof(uint64_t);
	}
	sess_account_hash(s, t0, true, bytes);
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
	rc = sess_block_sums(s, sums, err);
	if (rc)
		goto out;
	rdmae_msg_block_sums_encode(msg, sums, (uint32_t)s->nblocks);
	rc = sess_send_msg(s, msg, len, err);
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
	rc = sess_send_msg(s, msg, len, err);
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
		rc = sess_fail(s, rc, err);
	if (!sess_decided(s) || s->peer_verdict)
		return rc;
	snprintf(why, sizeof(why), "%s", err->msg);
	rdmae_err_set(err, -ENOTRECOVERABLE, "complete: outcome unknown (%s); the destination "
		      "may have committed: do not resume the source before asking it", why);
	sess_set_failed(s, -ENOTRECOVERABLE, err);
	return -ENOTRECOVERABLE;
}

static int src_complete(struct rdmae_session *s, struct rdmae_err *err)
{
	uint8_t small[RDMAE_MSG_SMALL_MAX];
	struct rdmae_msg_complete c = { 0 };
	struct rdmae_msg m;
	uint64_t commit_start;
	void *buf;
	int rc = 0;

	/*
	 * The final fence proves every WRITE of every round is placed. In the
	 * external data path it goes on lane 0 only: the caller's WRITEs on
	 * lanes >= 1 are proven placed by its own per-lane sync before it
	 * calls complete, and a fence there would reach the caller's readers
	 * as a message of theirs.
	 */
	if (s->external)
		rc = rdmae_fence_lane(s->conn, 0, &c.fence_seq, err);
	else
		rc = rdmae_fence(s->conn, &c.fence_seq, err);
	if (rc)
		return sess_fail(s, rc, err);
	c.flags = s->o.no_verify ? RDMAE_COMPLETE_NO_VERIFY : 0;
	if (atomic_load(&s->x_stopped))
		c.flags |= RDMAE_COMPLETE_STOPPED;
	c.nblocks = (uint32_t)s->nblocks;
	c.rounds = s->st.rounds;
	c.state_bytes = s->state_off;
	/* A connection already down carries nothing: fail plainly, the guest may resume. */
	rc = rdmae_conn_error(s->conn, err);
	if (!rc)
		rc = sess_decide(s, "complete", err);
	if (rc)
		return sess_fail(s, rc, err);
	/* From here a cancel does not take effect: the destination decides. */
	commit_start = rdmae_now_ns();
	rc = sess_send_msg(s, small, rdmae_msg_complete_encode(small, &c), err);
	/* Sent before the sums: the destination revokes and checks while we digest. */
	if (!rc && !s->o.no_verify)
		rc = src_block_sums(s, err);
	if (rc)
		return complete_failed(s, rc, err);

	for (;;) {
		rc = sess_recv_msg(s, s->slow_timeout_ms, &buf, &m, err);
		if (rc)
			return complete_failed(s, rc, err);
		switch (m.type) {
		case RDMAE_MSG_COMMIT_OK:
			free(buf);
			pthread_mutex_lock(&s->lock);
			s->commit_at_ns = rdmae_now_ns();
			s->st.commit_ns = s->commit_at_ns - commit_start;
			pthread_mutex_unlock(&s->lock);
			return 0;
		case RDMAE_MSG_COMMIT_FAIL:
			rc = rdmae_err_set(err, m.u.commit_fail.error, "%s",
					   m.u.commit_fail.reason);
			sess_set_failed(s, rc, err);
			free(buf);
			return rc;
		case RDMAE_MSG_PAGE_SUMS_REQ:
			if (s->o.no_verify) {
				rc = sess_unexpected(s, &m, "COMMIT_OK", err);
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
			rc = sess_peer_cancelled(s, &m, err);
			free(buf);
			return rc;
		default:
			rc = sess_unexpected(s, &m, "COMMIT_OK", err);
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
	rc = sess_enter(s, RDMAE_SOURCE, ST_READY, "complete", e);
	if (rc)
		return rc;
	/* Without a round after the stop, the destination would commit stale pages. */
	if (!s->external && !s->final_round) {
		rc = rdmae_err_set(e, -EINVAL, "complete: no round since the VM was stopped "
				   "(mark_stopped, then a final round)");
		sess_leave(s);
		return rc;
	}
	/* External: the caller's final pass ran with the VM stopped, and said so. */
	if (s->external && !atomic_load(&s->x_stopped)) {
		rc = rdmae_err_set(e, -EINVAL, "complete: the VM is not marked stopped "
				   "(rdmae_session_mark_stopped before the final pass)");
		sess_leave(s);
		return rc;
	}
	/* Tests only: before COMPLETE leaves, so that a failure leaves the source free to resume. */
	{
		char why[RDMAE_ERR_LEN];
		uint64_t page;
		size_t blk;

		if (sess_recheck(s, &blk, &page, why, sizeof(why))) {
			rdmae_err_set(e, -EIO, "complete: %s", why);
			rc = sess_fail(s, -EIO, e);
			sess_leave(s);
			return rc;
		}
	}
	/* Lane 0 is ours alone from here: no writer still waits there for DESCS. */
	if (s->external)
		pthread_mutex_lock(&s->rx_lock);
	rc = src_complete(s, e);
	if (s->external)
		pthread_mutex_unlock(&s->rx_lock);
	if (!rc) {
		uint64_t t = rdmae_now_ns();

		pthread_mutex_lock(&s->lock);
		if (s->stopped)
			s->st.actual_downtime_ns = t - s->stopped_ns;
		s->st.total_ns = t - s->start_ns;
		pthread_mutex_unlock(&s->lock);
		atomic_store(&s->state, ST_DONE);
	}
	sess_leave(s);
	return rc;
}
