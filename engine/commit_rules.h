/* SPDX-License-Identifier: MIT */
/*
 * The commit's decisions, kept apart from the session so that each can be
 * tested without a connection (tests/unit/test_commit.c):
 *
 * - the gate that orders a cancel against the point of no return (the
 *   source's COMPLETE, the destination's COMMIT_OK) under one lock;
 * - what the destination requires of COMPLETE before it commits (a FINAL
 *   round last, matching counts, verification when it insists on it);
 * - the bound on what the destination may ask of the source's page sums;
 * - the destination's commit sequence: fence, check, revoke remote access,
 *   verify, decide, COMMIT_OK, in that order.
 */
#ifndef RDMAE_COMMIT_RULES_H
#define RDMAE_COMMIT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"
#include "proto.h"

/*
 * The session's cancel lock guards every call. "decided" is the point of no
 * return: on the source COMPLETE is about to leave (from then on the
 * destination may commit at any moment), on the destination COMMIT_OK is.
 */
struct rdmae_commit_gate {
	bool stopped;			/* cancelled or failed */
	bool decided;			/* past the point of no return */
};

/* A cancel: true when it takes effect (now or by an earlier stop), false once decided. */
bool rdmae_gate_cancel(struct rdmae_commit_gate *g);
/* About to pass the point of no return: -ECANCELED once stopped, else 0 and cancels are refused. */
int rdmae_gate_decide(struct rdmae_commit_gate *g);

/* What the destination has placed and received, as COMPLETE is judged against it. */
struct rdmae_dst_progress {
	unsigned int rounds;		/* rounds placed */
	bool last_final;		/* the last of them had the FINAL flag */
	uint64_t state_bytes;		/* device state received */
	bool require_verify;		/* refuse NO_VERIFY */
	bool external;			/* the external data path: no engine rounds */
};

/*
 * 0 when the destination may go on to commit after c, else -EPROTO (no
 * round, a last round without FINAL, counts that differ; in the external
 * data path: any engine round, or a COMPLETE that does not say the
 * source's VM is stopped) or -EPERM (the
 * source asks to skip a verification this destination requires), with the
 * reason in why (sent in COMMIT_FAIL).
 */
int rdmae_commit_check(const struct rdmae_dst_progress *p, const struct rdmae_msg_complete *c,
		       char *why, size_t len);

/*
 * Source: the destination asks for page sums only to narrow one mismatching
 * block down to its first differing page, which it does in ascending,
 * contiguous chunks from page 0. Anything else (a second block, a gap, a
 * range asked twice) is refused, so at most one block's sums are ever sent.
 */
struct rdmae_sums_guard {
	bool started;
	uint32_t block;
	uint64_t next;			/* first page the next request must start at */
};

/* 0 and the request counted, or -EPROTO with the reason in why. The decoder checked the range. */
int rdmae_sums_guard_take(struct rdmae_sums_guard *g, uint32_t block, uint64_t first, uint64_t n,
			  char *why, size_t len);

/*
 * The destination's side of the commit, one step per callback; each step
 * reports its own failure (to the peer and in err) and returns its errno,
 * which ends the sequence. Fence, check, revoke, verify (when asked for),
 * decide, COMMIT_OK: remote access is revoked before anything is hashed for
 * the verdict, so that no late or stray WRITE can change the memory
 * between its verification and the guest's start.
 */
struct rdmae_dst_commit_ops {
	int (*fence_wait)(void *arg, uint32_t seq, struct rdmae_err *err);
	int (*refuse)(void *arg, int code, const char *why, struct rdmae_err *err);
	int (*revoke)(void *arg, struct rdmae_err *err);
	int (*verify)(void *arg, struct rdmae_err *err);
	int (*decide)(void *arg, struct rdmae_err *err);
	int (*commit_ok)(void *arg, bool verified, struct rdmae_err *err);
};

int rdmae_dst_commit(const struct rdmae_dst_commit_ops *ops, void *arg,
		     const struct rdmae_dst_progress *p, const struct rdmae_msg_complete *c,
		     bool *verified, struct rdmae_err *err);

#endif
