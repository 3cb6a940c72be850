/* SPDX-License-Identifier: MIT */
/*
 * Authentication of a connection by a pre-shared key (doc/protocol.md 5.4,
 * doc/security.md). Pure functions over the negotiate messages, no verbs:
 *
 *   client proof = HMAC-SHA256(key, transcript("rdmae-v2-client", Nc, Ns, req, -))
 *   server proof = HMAC-SHA256(key, transcript("rdmae-v2-server", Nc, Ns, req, resp))
 *   lane k token = first 8 bytes (LE) of HMAC-SHA256(key, "rdmae-v2-lane" || Nc || Ns || k)
 *
 * Nc is the client's nonce (in the negotiate request), Ns the server's (in
 * its accept of lane 0). The transcript binds both nonces and the negotiated
 * parameters as they were on the wire, so a proof is good for one connection
 * and one role only: it cannot be replayed, reflected or moved to other
 * parameters.
 */
#ifndef RDMAE_AUTH_H
#define RDMAE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"
#include "rdmae_wire.h"

#define RDMAE_KEY_MIN		16		/* bytes; shorter key files are refused */
#define RDMAE_KEY_MAX		1024
#define RDMAE_AUTH_LABEL_SIZE	16
/* label, Nc, Ns, the request's first 32 bytes, the response's first 48 (zero for the client). */
#define RDMAE_AUTH_TRANSCRIPT_SIZE \
	(RDMAE_AUTH_LABEL_SIZE + 2 * RDMAE_NONCE_SIZE + RDMAE_NEG_REQ_V1_SIZE + RDMAE_NEG_RESP_V1_SIZE)

struct rdmae_key {
	size_t len;			/* 0: no key (auth=none) */
	uint8_t bytes[RDMAE_KEY_MAX];
};

enum rdmae_auth_role { RDMAE_ROLE_CLIENT = 0, RDMAE_ROLE_SERVER = 1 };

/*
 * Read a key file: its bytes, as they are, are the key. Refused, with a
 * message that names the file and the reason, when it cannot be read, is
 * not a regular file, can be read or written by group or others (mode &
 * 077), or holds fewer than RDMAE_KEY_MIN or more than RDMAE_KEY_MAX bytes.
 */
int rdmae_key_load(struct rdmae_key *k, const char *path, struct rdmae_err *err);
/*
 * The key from bytes (rdmae_conn_opts.key): copied, under the same length
 * rules as a key file; what names the owner in the message.
 */
int rdmae_key_set(struct rdmae_key *k, const void *bytes, size_t len, const char *what,
		  struct rdmae_err *err);
/* Wipe a key (also a key that was never loaded). */
void rdmae_key_wipe(struct rdmae_key *k);

/*
 * The bytes that a proof covers. resp is NULL for the client's proof (its
 * part is zeros). Fields the proof travels in (proof) are not part of it.
 */
void rdmae_auth_transcript(uint8_t out[RDMAE_AUTH_TRANSCRIPT_SIZE], enum rdmae_auth_role role,
			   const uint8_t nc[RDMAE_NONCE_SIZE], const uint8_t ns[RDMAE_NONCE_SIZE],
			   const struct rdmae_neg_req *req, const struct rdmae_neg_resp *resp);
/* HMAC-SHA256 of the transcript with the key; -EINVAL without a key, -EIO if libcrypto fails. */
int rdmae_auth_proof(const struct rdmae_key *k, enum rdmae_auth_role role,
		     const uint8_t nc[RDMAE_NONCE_SIZE], const uint8_t ns[RDMAE_NONCE_SIZE],
		     const struct rdmae_neg_req *req, const struct rdmae_neg_resp *resp,
		     uint8_t out[RDMAE_PROOF_SIZE]);
/* 0 if proof is the right one (compared in constant time), else -EACCES. */
int rdmae_auth_verify(const struct rdmae_key *k, enum rdmae_auth_role role,
		      const uint8_t nc[RDMAE_NONCE_SIZE], const uint8_t ns[RDMAE_NONCE_SIZE],
		      const struct rdmae_neg_req *req, const struct rdmae_neg_resp *resp,
		      const uint8_t proof[RDMAE_PROOF_SIZE]);
/*
 * The join token of lane 1..15; never 0. Without a key (auth=none) the
 * HMAC has an empty key: anyone who saw both nonces can compute it, which
 * is no worse than the clear token of version 1.
 */
uint64_t rdmae_auth_lane_token(const struct rdmae_key *k, const uint8_t nc[RDMAE_NONCE_SIZE],
			       const uint8_t ns[RDMAE_NONCE_SIZE], unsigned int lane);
/* Constant-time equality of two tokens. */
bool rdmae_auth_token_equal(uint64_t a, uint64_t b);
/*
 * One HMAC of nothing with no key, its result dropped: libcrypto's first
 * HMAC in a process loads its configuration and provider and fetches the
 * algorithms (2 ms natively, about 100 ms on the bench's emulated CPUs),
 * and a caller that does this while it waits anyway keeps that off
 * negotiation's round trip. Safe to call any number of times.
 */
void rdmae_auth_warm(void);

#endif
