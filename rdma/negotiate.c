/* SPDX-License-Identifier: MIT */
/*
 * Negotiation and its authentication policy.
 *
 * Lane 0 connects first and carries the negotiate exchange, in which both
 * sides prove that they know the pre-shared key (rdmae_auth.h): the server's
 * accept of lane 0 carries its nonce, the request the client's nonce and
 * proof, the response the server's proof. Lanes 1..n-1 then connect with
 * tokens both sides derive from the key and the nonces (their rdma_cm
 * private data names them), so a listener can attach lanes to connections
 * even while several are being set up at once, and only to authenticated ones.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"

/*
 * The key of a listener or connection: from its file, or none with an
 * explicit auth_none (said once on stderr), else a refusal.
 */
int rdmae_negotiate_auth_setup(const struct rdmae_conn_opts *o, struct rdmae_key *k,
				const char *what, struct rdmae_err *err)
{
	rdmae_key_wipe(k);
	if (o->key_file && (o->key || o->key_len))
		return rdmae_err_set(err, -EINVAL, "%s: both a key (%zu bytes) and a key file (%s) "
				     "given; choose one", what, o->key_len, o->key_file);
	if (o->key_file && o->auth_none)
		return rdmae_err_set(err, -EINVAL, "%s: both a key file (%s) and auth=none given; "
				     "choose one", what, o->key_file);
	if ((o->key || o->key_len) && o->auth_none)
		return rdmae_err_set(err, -EINVAL, "%s: both a key (%zu bytes) and auth=none given; "
				     "choose one", what, o->key_len);
	if (o->key_file)
		return rdmae_key_load(k, o->key_file, err);
	if (o->key || o->key_len)
		return rdmae_key_set(k, o->key, o->key_len, what, err);
	if (!o->auth_none)
		return rdmae_err_set(err, -EACCES, "%s: no key: give a key file (key=FILE, --key "
				     "FILE), or auth=none to run without authentication", what);
	fprintf(stderr, "rdmae: warning: %s: auth=none: the peer is not authenticated; any host "
		"that can reach this address can take part in the connection\n", what);
	return 0;
}

uint16_t rdmae_negotiate_auth_mode(const struct rdmae_conn *c)
{
	return c->key.len ? RDMAE_WIRE_AUTH_HMAC_SHA256 : RDMAE_WIRE_AUTH_NONE;
}

/* Once both nonces are known and the peer is authenticated: the tokens of lanes 1..n-1. */
static void derive_lane_tokens(struct rdmae_conn *c)
{
	unsigned int i;

	memset(c->lane_token, 0, sizeof(c->lane_token));
	for (i = 1; i < c->neg.lanes && i < RDMAE_MAX_LANES; i++)
		c->lane_token[i] = rdmae_auth_lane_token(&c->key, c->nonce_c, c->nonce_s, i);
}

/*
 * Lanes after lane 0: each side posts its own lane depth and starts with
 * the peer's, both derived by the same rule (rdmae_lane_credits) from what
 * negotiation exchanged: no message is needed to open a lane's credits.
 */
void rdmae_negotiate_lane_credits_locked(struct rdmae_conn *c, struct rdmae_lane *l)
{
	uint16_t peer = rdmae_lane_credits(c->neg.version, l->idx, c->neg.peer_credits_target);

	rdmae_credits_init(&l->cr, peer, l->qp.nrx, l->qp.nrx, peer);
	rdmae_reasm_init(&l->reasm, c->neg.max_fragmented_size);
}

/* Server: answer the client's request; a refusal lingers so that its status reaches the client. */
static void on_request_locked(struct rdmae_conn *c, const void *buf, size_t len)
	RDMAE_REQUIRES(c->lanes[0].lock) RDMAE_REQUIRES(c->lock)
{
	struct rdmae_lane *l0 = &c->lanes[0];
	enum rdmae_wire_field f = RDMAE_F_NONE;
	struct rdmae_neg_req req;
	struct rdmae_neg_resp resp;
	uint8_t out[RDMAE_NEG_RESP_SIZE];
	const char *why = NULL;
	int ret;

	memset(&resp, 0, sizeof(resp));
	memset(&req, 0, sizeof(req));
	ret = rdmae_neg_req_decode(buf, len, &req, &f);
	/*
	 * The client proves itself first: an unauthenticated peer learns
	 * nothing but our version range and mode, not even our limits.
	 */
	if (!ret && req.auth != rdmae_negotiate_auth_mode(c)) {
		ret = -EACCES;
		f = RDMAE_F_AUTH;
		why = req.auth == RDMAE_WIRE_AUTH_NONE ?
		      "the peer sent no proof (it runs with auth=none) and this listener "
		      "requires the key" :
		      "the peer offers a key, but this listener runs with auth=none (both "
		      "sides need the same key, or both auth=none)";
	} else if (!ret && rdmae_negotiate_auth_mode(c) != RDMAE_WIRE_AUTH_NONE &&
		   rdmae_auth_verify(&c->key, RDMAE_ROLE_CLIENT, req.nonce, c->nonce_s, &req,
				     NULL, req.proof)) {
		ret = -EACCES;
		f = RDMAE_F_AUTH;
		why = "the peer does not know the key (its proof does not match)";
	}
	if (ret) {
		resp.status = ret;
		resp.status_field = f;
		resp.min_version = c->limits.min_version;
		resp.max_version = c->limits.max_version;
	} else {
		ret = rdmae_negotiate_server(&c->limits, &req, l0->qp.nrx, &resp, &c->neg, &f);
	}
	resp.auth = rdmae_negotiate_auth_mode(c);
	if (!ret && resp.auth != RDMAE_WIRE_AUTH_NONE &&
	    rdmae_auth_proof(&c->key, RDMAE_ROLE_SERVER, req.nonce, c->nonce_s, &req, &resp,
			     resp.proof)) {
		memset(&resp, 0, sizeof(resp));
		resp.status = ret = -EIO;
		resp.status_field = f = RDMAE_F_AUTH;
		resp.min_version = c->limits.min_version;
		resp.max_version = c->limits.max_version;
		why = "HMAC-SHA256 failed in libcrypto";
	}
	if (!ret) {
		memcpy(c->nonce_c, req.nonce, sizeof(c->nonce_c));
		derive_lane_tokens(c);
		rdmae_credits_init(&l0->cr, c->neg.send_credits, l0->qp.nrx, l0->qp.nrx,
				   c->neg.peer_credits_target);
		rdmae_reasm_init(&l0->reasm, c->neg.max_fragmented_size);
		atomic_store_explicit(&c->state, RDMAE_ST_LANES, memory_order_release);
	}
	rdmae_neg_resp_encode(out, &resp);
	rdmae_lane_assert_held(l0);
	rdmae_lane_qp_held(l0, &l0->qp);
	if (rdmae_qp_send_raw_locked(&l0->qp, out, sizeof(out)) && !ret)
		ret = -EIO;
	if (ret) {
		/* Let the response with its status reach the client before disconnecting. */
		if (why)
			rdmae_conn_fail_after_sends_locked(c, ret, "authentication failed with "
							   "%s: %s", c->peer, why);
		else
			rdmae_conn_fail_after_sends_locked(c, ret, "negotiate with %s: request "
							   "rejected: bad %s", c->peer,
							   rdmae_wire_field_name(f));
	}
}

/* Client: the server's response settles the connection's parameters, or fails it. */
static void on_response_locked(struct rdmae_conn *c, const void *buf, size_t len)
	RDMAE_REQUIRES(c->lanes[0].lock) RDMAE_REQUIRES(c->lock)
{
	struct rdmae_lane *l0 = &c->lanes[0];
	enum rdmae_wire_field f = RDMAE_F_NONE;
	struct rdmae_neg_resp resp;
	const char *why = NULL;
	int ret;

	memset(&resp, 0, sizeof(resp));
	ret = rdmae_neg_resp_decode(buf, len, &resp, &f);
	if (!ret && resp.status == -EACCES && resp.status_field == RDMAE_F_AUTH)
		why = rdmae_negotiate_auth_mode(c) == RDMAE_WIRE_AUTH_NONE ?
		      "the peer requires a key and we run with auth=none" :
		      c->peer_auth == RDMAE_WIRE_AUTH_NONE ?
		      "the peer runs with auth=none and we have a key (both sides need the "
		      "same key, or both auth=none)" :
		      "the peer does not know the key (it rejected our proof)";
	if (!ret)
		ret = rdmae_negotiate_client(&c->limits, &c->neg_sent, &resp, &c->neg, &f);
	if (!ret && resp.auth != rdmae_negotiate_auth_mode(c)) {
		ret = -EACCES;
		f = RDMAE_F_AUTH;
		why = "the peer accepted us without the authentication we asked for";
	} else if (!ret && rdmae_negotiate_auth_mode(c) != RDMAE_WIRE_AUTH_NONE &&
		   rdmae_auth_verify(&c->key, RDMAE_ROLE_SERVER, c->nonce_c, c->nonce_s,
				     &c->neg_sent, &resp, resp.proof)) {
		ret = -EACCES;
		f = RDMAE_F_AUTH;
		why = "the peer does not know the key (its proof does not match)";
	}
	if (ret && why) {
		rdmae_conn_fail_locked(c, ret, "authentication failed with %s: %s", c->peer,
				       why);
	} else if (ret) {
		rdmae_conn_fail_locked(c, ret, "negotiate with %s: %s: %s", c->peer,
				       !resp.status ? "bad response" : "refused by the peer",
				       rdmae_wire_field_name(f));
	} else {
		derive_lane_tokens(c);
		/* One receive was kept back for this response and is reposted now. */
		rdmae_credits_init(&l0->cr, c->neg.send_credits, l0->qp.nrx - 1, l0->qp.nrx,
				   c->neg.peer_credits_target);
		rdmae_credits_on_repost(&l0->cr, 1);
		rdmae_reasm_init(&l0->reasm, c->neg.max_fragmented_size);
		atomic_store_explicit(&c->state, RDMAE_ST_LANES, memory_order_release);
	}
}

void rdmae_negotiate_on_msg_locked(struct rdmae_conn *c, const void *buf, size_t len)
{
	uint64_t t = rdmae_now_ns();

	if (c->server)
		on_request_locked(c, buf, len);
	else
		on_response_locked(c, buf, len);
	c->setup.auth_us += (rdmae_now_ns() - t) / 1000;
	pthread_cond_broadcast(&c->cond);
	if (c->notify_fd >= 0)
		rdmae_conn_eventfd_kick(c->notify_fd);
}

int rdmae_negotiate_request(struct rdmae_conn *c, uint64_t deadline, struct rdmae_err *err)
{
	struct rdmae_neg_req *req = &c->neg_sent;
	uint8_t buf[RDMAE_NEG_REQ_SIZE];
	int ret = 0;

	if (getrandom(c->nonce_c, sizeof(c->nonce_c), 0) != (ssize_t)sizeof(c->nonce_c))
		return rdmae_err_set(err, -EIO, "negotiate with %s: getrandom for a nonce", c->peer);
	/* Lane 0's lock, then c->lock: the request goes out on lane 0's qp. */
	rdmae_lane_lock(&c->lanes[0]);
	rdmae_conn_lock(c);
	req->min_version = c->limits.min_version;
	req->max_version = c->limits.max_version;
	req->credits_requested = c->limits.credits;
	/* One of our receives stays back for the response, outside the credit count. */
	req->credits_granted = (uint16_t)(c->limits.credits - 1);
	req->lanes = c->limits.lanes;
	req->preferred_send_size = c->limits.preferred_send_size;
	req->max_receive_size = c->limits.max_receive_size;
	req->max_fragmented_size = c->limits.max_fragmented_size;
	req->max_rw_size = c->limits.max_rw_size;
	req->auth = rdmae_negotiate_auth_mode(c);
	memcpy(req->nonce, c->nonce_c, sizeof(req->nonce));
	memset(req->proof, 0, sizeof(req->proof));
	if (req->auth != RDMAE_WIRE_AUTH_NONE) {
		uint64_t t = rdmae_now_ns();

		ret = rdmae_auth_proof(&c->key, RDMAE_ROLE_CLIENT, c->nonce_c, c->nonce_s, req,
				       NULL, req->proof);
		c->setup.auth_us += (rdmae_now_ns() - t) / 1000;
	}
	rdmae_neg_req_encode(buf, req);
	c->state = RDMAE_ST_NEGOTIATING;
	/* Posted with c->lock held: a failed post must not take it again (conn_held). */
	rdmae_lane_qp_held(&c->lanes[0], &c->lanes[0].qp);
	c->lanes[0].conn_held = true;
	if (ret)
		rdmae_conn_fail_locked(c, -EIO, "negotiate with %s: HMAC-SHA256 failed in "
				       "libcrypto", c->peer);
	else if (rdmae_qp_send_raw_locked(&c->lanes[0].qp, buf, sizeof(buf)))
		rdmae_conn_fail_locked(c, -EIO, "negotiate with %s: cannot post the request",
				       c->peer);
	c->lanes[0].conn_held = false;
	/* The response is handled with lane 0's lock: the wait holds c->lock alone. */
	rdmae_lane_unlock(&c->lanes[0]);
	ret = 0;
	while (c->state == RDMAE_ST_NEGOTIATING && !ret)
		ret = rdmae_conn_wait_locked(c, deadline);
	if (ret == -ETIMEDOUT && c->state == RDMAE_ST_NEGOTIATING)
		rdmae_conn_fail_locked(c, ret, "negotiate with %s: no response within %d ms",
				       c->peer, c->opts.timeout_ms);
	ret = rdmae_conn_check(c, err);
	rdmae_conn_unlock(c);
	return ret;
}
