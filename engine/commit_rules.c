/* SPDX-License-Identifier: MIT */
#include "commit_rules.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

bool rdmae_gate_cancel(struct rdmae_commit_gate *g)
{
	if (g->decided)
		return false;
	g->stopped = true;
	return true;
}

int rdmae_gate_decide(struct rdmae_commit_gate *g)
{
	if (g->stopped)
		return -ECANCELED;
	g->decided = true;
	return 0;
}

int rdmae_commit_check(const struct rdmae_dst_progress *p, const struct rdmae_msg_complete *c,
		       char *why, size_t len)
{
	/*
	 * External: the caller moved the pages, its last pass with the VM
	 * stopped, which COMPLETE must say; engine rounds have no place here.
	 */
	if (p->external) {
		if (p->rounds || c->rounds) {
			snprintf(why, len, "complete: %u engine rounds placed and %" PRIu32 " sent "
				 "in the external data path; refusing to commit", p->rounds,
				 c->rounds);
			return -EPROTO;
		}
		if (!(c->flags & RDMAE_COMPLETE_STOPPED)) {
			snprintf(why, len, "complete: the source's VM is not stopped; refusing to "
				 "commit");
			return -EPROTO;
		}
		goto counts;
	}
	/* Without a FINAL round last, pages dirtied after the last round would run stale. */
	if (!p->rounds) {
		snprintf(why, len, "complete: no round was placed; refusing to commit");
		return -EPROTO;
	}
	if (!p->last_final) {
		snprintf(why, len, "complete: round %u, the last placed, was not FINAL (the source's "
			 "VM was still running); refusing to commit", p->rounds);
		return -EPROTO;
	}
counts:
	if (c->rounds != p->rounds || c->state_bytes != p->state_bytes) {
		snprintf(why, len, "complete: the source sent %" PRIu32 " rounds and %" PRIu64
			 " state bytes, %u and %" PRIu64 " arrived", c->rounds, c->state_bytes,
			 p->rounds, p->state_bytes);
		return -EPROTO;
	}
	if (p->require_verify && (c->flags & RDMAE_COMPLETE_NO_VERIFY)) {
		snprintf(why, len, "complete: the source asks to skip verification, which this "
			 "destination requires; refusing to commit");
		return -EPERM;
	}
	return 0;
}

int rdmae_sums_guard_take(struct rdmae_sums_guard *g, uint32_t block, uint64_t first, uint64_t n,
			  char *why, size_t len)
{
	if (!g->started ? first != 0 : block != g->block || first != g->next) {
		if (!g->started)
			snprintf(why, len, "verify: page sums of block %" PRIu32 " asked from page %"
				 PRIu64 ", not from page 0", block, first);
		else
			snprintf(why, len, "verify: page sums of block %" PRIu32 " page %" PRIu64
				 " asked, after block %" PRIu32 " up to page %" PRIu64, block,
				 first, g->block, g->next);
		return -EPROTO;
	}
	g->started = true;
	g->block = block;
	g->next = first + n;
	return 0;
}

int rdmae_dst_commit(const struct rdmae_dst_commit_ops *ops, void *arg,
		     const struct rdmae_dst_progress *p, const struct rdmae_msg_complete *c,
		     bool *verified, struct rdmae_err *err)
{
	bool verify = !(c->flags & RDMAE_COMPLETE_NO_VERIFY);
	char why[RDMAE_PROTO_REASON_LEN];
	int rc;

	*verified = false;
	/* Every WRITE of every round is placed before anything is judged. */
	rc = ops->fence_wait(arg, c->fence_seq, err);
	if (rc)
		return rc;
	rc = rdmae_commit_check(p, c, why, sizeof(why));
	if (rc)
		return ops->refuse(arg, rc, why, err);
	/* Nothing may write this memory from afar once it is judged (and it never needs to). */
	rc = ops->revoke(arg, err);
	if (!rc && verify)
		rc = ops->verify(arg, err);
	if (!rc)
		rc = ops->decide(arg, err);
	if (!rc)
		rc = ops->commit_ok(arg, verify, err);
	if (!rc)
		*verified = verify;
	return rc;
}
