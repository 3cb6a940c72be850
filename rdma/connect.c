/* SPDX-License-Identifier: MIT */
/*
 * The client side of connection setup: resolve the peer, connect lane 0,
 * negotiate, then connect the other lanes, driving rdma_cm's events on the
 * connection's own channel until the progress thread takes them over. The
 * CM helpers here (connection parameters) serve the listener too.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Local ACK timeout exponent: 4.096 us * 2^16 = 268 ms per try, 7 tries. */
#define ACK_TIMEOUT 16
#define RETRY_COUNT 6

/* rdma_cm takes a timeout in ms, where 0 would not mean "now". */
static int resolve_ms(uint64_t deadline)
{
	int ms = rdmae_ms_left(deadline);

	return ms > 0 ? ms : 1;
}

/* Wait for the next CM event on a channel we drive ourselves (setup). */
static int cm_next(struct rdma_event_channel *ch, uint64_t deadline, struct rdma_cm_event **ev)
{
	for (;;) {
		struct pollfd p = { .fd = ch->fd, .events = POLLIN };
		int ms = rdmae_ms_left(deadline);

		if (!rdma_get_cm_event(ch, ev))
			return 0;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if (ms == 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, ms) < 0 && errno != EINTR)
			return -errno;
	}
}

/* Wait for one expected event on id; anything else is an error described by the caller. */
/* pd (RDMAE_ACCEPT_PD_SIZE bytes, or NULL) receives the event's private data, *pd_len its length. */
static int cm_expect(struct rdmae_conn *c, const struct rdma_cm_id *id,
		     enum rdma_cm_event_type want, uint64_t deadline, enum rdma_cm_event_type *got,
		     int *status, uint8_t *pd, size_t *pd_len)
{
	struct rdma_cm_event *ev;

	/* What a caller prints when no event of this id came (another lane's disconnect). */
	*got = RDMA_CM_EVENT_DISCONNECTED;
	*status = 0;
	for (;;) {
		int ret = cm_next(c->cm_ch, deadline, &ev);

		if (ret)
			return ret;
		if (ev->id != id) {
			/* A late event of another lane (e.g. a disconnect) during setup. */
			if (ev->event == RDMA_CM_EVENT_DISCONNECTED) {
				rdma_ack_cm_event(ev);
				return -ECONNRESET;
			}
			rdma_ack_cm_event(ev);
			continue;
		}
		*got = ev->event;
		*status = ev->status;
		if (pd && ev->event == want) {
			size_t n = ev->param.conn.private_data ? ev->param.conn.private_data_len : 0;

			*pd_len = n < RDMAE_ACCEPT_PD_SIZE ? n : RDMAE_ACCEPT_PD_SIZE;
			if (*pd_len)
				memcpy(pd, ev->param.conn.private_data, *pd_len);
		}
		rdmae_trace(c, "setup: cm event %s (status %d)", rdma_event_str(ev->event),
			    ev->status);
		rdma_ack_cm_event(ev);
		return *got == want ? 0 : -EPROTO;
	}
}

void rdmae_connect_param_init(struct rdma_conn_param *p, const uint8_t *pd, uint8_t pd_len)
{
	memset(p, 0, sizeof(*p));
	p->private_data = pd;
	p->private_data_len = pd_len;
	/*
	 * RDMA READ depth: let rdma_cm take the device's limits on connect and
	 * the lesser of those and the peer's on accept. One READ at a time per
	 * QP (the old setting) turned rdmae_read into a round trip per WR. The
	 * depth grants no access by itself: a READ needs an MR registered with
	 * remote read, which guest RAM never is.
	 */
	p->responder_resources = RDMA_MAX_RESP_RES;
	p->initiator_depth = RDMA_MAX_INIT_DEPTH;
	p->retry_count = RETRY_COUNT;
	/* Credits make receiver-not-ready impossible; an RNR is a bug and must surface. */
	p->rnr_retry_count = 0;
}

/*
 * Lane 0: the device comes from its route, and its accept carries the
 * server's nonce. The further lanes connect together after negotiation
 * (client_more_lanes).
 */
static int client_lane0(struct rdmae_conn *c, struct rdma_addrinfo *dst, struct sockaddr *src,
			uint64_t deadline, struct rdmae_err *err)
{
	struct rdma_cm_id *id;
	enum rdma_cm_event_type got;
	struct rdma_conn_param param;
	struct rdmae_lane_pd pd = { .version = RDMAE_VERSION, .lane = 0,
				    .conn_token = c->lane_token[0] };
	uint8_t pdbuf[RDMAE_LANE_PD_SIZE];
	uint8_t apd[RDMAE_ACCEPT_PD_SIZE];
	struct rdmae_accept_pd ap;
	enum rdmae_wire_field field;
	size_t apd_len = 0;
	uint8_t tmo = ACK_TIMEOUT;
	uint64_t t, t1;
	int status = 0, ret;

	if (rdma_create_id(c->cm_ch, &id, NULL, RDMA_PS_TCP))
		return rdmae_err_set(err, -errno, "rdma_create_id for %s: %s", c->peer,
				     strerror(errno));
	if (src && rdma_bind_addr(id, src)) {
		ret = -errno;
		rdmae_err_set(err, ret, "no RDMA device has address %s (%s)", c->opts.bind_addr,
			      strerror(-ret));
		goto err_id;
	}
	t = rdmae_now_ns();
	c->setup.init_us = (t - c->setup_t0_ns) / 1000;
	if (rdma_resolve_addr(id, src, dst->ai_dst_addr, resolve_ms(deadline))) {
		ret = rdmae_err_set(err, -errno, "rdma_resolve_addr %s: %s", c->peer,
				    strerror(errno));
		goto err_id;
	}
	ret = cm_expect(c, id, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, &got, &status, NULL, NULL);
	/* rdma_cm's own resolution timeout (no ARP/ND answer) is a timeout too. */
	if (ret == -ETIMEDOUT || (got == RDMA_CM_EVENT_ADDR_ERROR && status == -ETIMEDOUT)) {
		ret = -ETIMEDOUT;
		rdmae_err_set(err, ret, "resolve %s: timed out after %d ms", c->peer,
			      c->opts.timeout_ms);
		goto err_id;
	} else if (ret) {
		rdmae_err_set(err, -EHOSTUNREACH, "no RDMA device can reach %s (%s, status %d)",
			      c->peer, rdma_event_str(got), status);
		ret = -EHOSTUNREACH;
		goto err_id;
	}
	rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &tmo, sizeof(tmo));
	if (rdma_resolve_route(id, resolve_ms(deadline))) {
		ret = rdmae_err_set(err, -errno, "rdma_resolve_route %s: %s", c->peer,
				    strerror(errno));
		goto err_id;
	}
	ret = cm_expect(c, id, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, &got, &status, NULL, NULL);
	if (ret) {
		rdmae_err_set(err, ret == -ETIMEDOUT ? ret : -EHOSTUNREACH,
			      "route to %s: %s", c->peer,
			      ret == -ETIMEDOUT ? "timed out" : rdma_event_str(got));
		ret = ret == -ETIMEDOUT ? ret : -EHOSTUNREACH;
		goto err_id;
	}
	t1 = rdmae_now_ns();
	c->setup.resolve_us += (t1 - t) / 1000;
	ret = rdmae_conn_setup_device(c, id->verbs, err);
	if (ret)
		goto err_id;
	c->setup.device_us += (rdmae_now_ns() - t1) / 1000;
	ret = rdmae_lane_create(c, id, 0, err);
	if (ret)
		goto err_id;

	t = rdmae_now_ns();
	c->setup.lanes_us += (t - t1) / 1000;
	rdmae_lane_pd_encode(pdbuf, &pd);
	rdmae_connect_param_init(&param, pdbuf, RDMAE_LANE_PD_SIZE);
	if (rdma_connect(id, &param)) {
		ret = rdmae_err_set(err, -errno, "rdma_connect %s: %s", c->peer, strerror(errno));
		goto err_lane;
	}
	/*
	 * While the server makes its lane 0 and answers: libcrypto's first
	 * HMAC, which the proof would otherwise pay for inside negotiation.
	 */
	rdmae_auth_warm();
	ret = cm_expect(c, id, RDMA_CM_EVENT_ESTABLISHED, deadline, &got, &status, apd, &apd_len);
	if (ret) {
		if (ret == -ETIMEDOUT)
			rdmae_err_set(err, ret, "connect to %s: timed out after %d ms", c->peer,
				      c->opts.timeout_ms);
		else if (got == RDMA_CM_EVENT_REJECTED)
			ret = rdmae_err_set(err, -ECONNREFUSED, "connection refused by %s (lane 0)",
					    c->peer);
		else
			ret = rdmae_err_set(err, ret == -ECONNRESET ? ret : -ECONNABORTED,
					    "connect to %s: %s (status %d)", c->peer,
					    rdma_event_str(got), status);
		goto err_lane;
	}
	t1 = rdmae_now_ns();
	c->setup.handshake_us += (t1 - t) / 1000;
	rdmae_trace(c, "setup: lane 0 connected in %.1f ms", (double)(t1 - t) / 1e6);
	/* The server's accept carries its nonce, which our proof needs. */
	if (rdmae_accept_pd_decode(apd, apd_len, &ap, &field)) {
		ret = rdmae_err_set(err, -EPROTONOSUPPORT, "connect to %s: its accept carries no "
				    "nonce (%s): not an rdmae server of version 2 or later, which "
				    "authenticate", c->peer, rdmae_wire_field_name(field));
		goto err_lane;
	}
	rdmae_conn_lock(c);
	memcpy(c->nonce_s, ap.nonce, sizeof(c->nonce_s));
	c->peer_auth = ap.auth;
	rdmae_conn_unlock(c);
	/* Under both locks: either one suffices to read it (internal.h, Locking). */
	rdmae_lane_lock(&c->lanes[0]);
	rdmae_conn_lock(c);
	c->lanes[0].established = true;
	rdmae_conn_unlock(c);
	rdmae_lane_unlock(&c->lanes[0]);
	return 0;

err_lane:
	/*
	 * The lane owns id now and destroys it with its QP: marked dead under
	 * the locks, its rings deregistered and id destroyed with none held.
	 */
	rdmae_lane_destroy(&c->lanes[0]);
	return ret;
err_id:
	rdma_destroy_id(id);
	return ret;
}

/* One further lane's progress in client_more_lanes. */
enum more_step { MORE_ADDR, MORE_ROUTE, MORE_CONN, MORE_DONE };

/* Lane idx's route is resolved: its QP and rings, credits, then rdma_connect. */
static int more_lane_connect(struct rdmae_conn *c, struct rdma_cm_id *id, unsigned int idx,
			     struct rdmae_err *err)
{
	struct rdmae_lane_pd pd = { .version = RDMAE_VERSION, .lane = (uint16_t)idx,
				    .conn_token = c->lane_token[idx] };
	uint8_t pdbuf[RDMAE_LANE_PD_SIZE];
	struct rdma_conn_param param;
	struct rdmae_lane *l;
	uint64_t t = rdmae_now_ns();
	int ret;

	if (id->verbs != c->verbs)
		return rdmae_err_set(err, -EXDEV, "lane %u to %s resolved to device %s, lane 0 to %s",
				     idx, c->peer, ibv_get_device_name(id->verbs->device),
				     ibv_get_device_name(c->verbs->device));
	ret = rdmae_lane_create(c, id, idx, err);
	if (ret)
		return ret;
	l = rdmae_lane_of(id);
	rdmae_lane_lock(l);
	rdmae_conn_lock(c);
	rdmae_negotiate_lane_credits_locked(c, l);
	rdmae_conn_unlock(c);
	rdmae_lane_unlock(l);
	c->setup.lanes_us += (rdmae_now_ns() - t) / 1000;
	rdmae_lane_pd_encode(pdbuf, &pd);
	rdmae_connect_param_init(&param, pdbuf, RDMAE_LANE_PD_SIZE);
	if (rdma_connect(id, &param))
		return rdmae_err_set(err, -errno, "rdma_connect %s: %s", c->peer, strerror(errno));
	return 0;
}

/*
 * Lanes first..n-1 after negotiation, all at once: each lane's resolution
 * and CM handshake overlap the others' (one after another, setup grew by a
 * handshake per lane). Every lane carries its token; the server takes them
 * in any order. On failure every lane made here is destroyed.
 */
static int client_more_lanes(struct rdmae_conn *c, unsigned int first, unsigned int n,
			     struct rdma_addrinfo *dst, struct sockaddr *src, uint64_t deadline,
			     struct rdmae_err *err)
{
	struct rdma_cm_id *ids[RDMAE_MAX_LANES] = { 0 };
	enum more_step step[RDMAE_MAX_LANES] = { 0 };
	uint64_t t0[RDMAE_MAX_LANES] = { 0 };
	uint64_t start = rdmae_now_ns();
	unsigned int i, left = 0;
	uint8_t tmo = ACK_TIMEOUT;
	int ret;

	if (n > RDMAE_MAX_LANES)
		return rdmae_err_set(err, -EINVAL, "lane %u: at most %d lanes", n - 1,
				     RDMAE_MAX_LANES);
	for (i = first; i < n; i++) {
		if (rdma_create_id(c->cm_ch, &ids[i], NULL, RDMA_PS_TCP)) {
			ids[i] = NULL;
			ret = rdmae_err_set(err, -errno, "rdma_create_id for %s: %s", c->peer,
					    strerror(errno));
			goto fail;
		}
		if (src && rdma_bind_addr(ids[i], src)) {
			ret = -errno;
			rdmae_err_set(err, ret, "no RDMA device has address %s (%s)",
				      c->opts.bind_addr, strerror(-ret));
			goto fail;
		}
		t0[i] = rdmae_now_ns();
		if (rdma_resolve_addr(ids[i], src, dst->ai_dst_addr, resolve_ms(deadline))) {
			ret = rdmae_err_set(err, -errno, "rdma_resolve_addr %s: %s", c->peer,
					    strerror(errno));
			goto fail;
		}
		step[i] = MORE_ADDR;
		left++;
	}
	while (left) {
		struct rdma_cm_event *ev;
		enum rdma_cm_event_type type;
		int status;

		ret = cm_next(c->cm_ch, deadline, &ev);
		if (ret) {
			if (ret == -ETIMEDOUT)
				rdmae_err_set(err, ret, "connect to %s: timed out after %d ms "
					      "(%u of %u lanes up)", c->peer, c->opts.timeout_ms,
					      n - left, n);
			else
				rdmae_err_set(err, ret, "connect to %s: rdma_get_cm_event: %s",
					      c->peer, strerror(-ret));
			goto fail;
		}
		type = ev->event;
		status = ev->status;
		for (i = first; i < n && ids[i] != ev->id; i++)
			;
		rdma_ack_cm_event(ev);
		if (i == n) {
			/* A late event of another lane (e.g. a disconnect) during setup. */
			if (type == RDMA_CM_EVENT_DISCONNECTED) {
				ret = rdmae_err_set(err, -ECONNRESET, "connect to %s: %s (status %d)",
						    c->peer, rdma_event_str(type), status);
				goto fail;
			}
			continue;
		}
		rdmae_trace(c, "setup: lane %u: cm event %s (status %d)", i, rdma_event_str(type),
			    status);
		switch (step[i]) {
		case MORE_ADDR:
			if (type != RDMA_CM_EVENT_ADDR_RESOLVED) {
				ret = status == -ETIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
				if (ret == -ETIMEDOUT)
					rdmae_err_set(err, ret, "resolve %s: timed out after %d ms",
						      c->peer, c->opts.timeout_ms);
				else
					rdmae_err_set(err, ret, "no RDMA device can reach %s (%s, "
						      "status %d)", c->peer, rdma_event_str(type),
						      status);
				goto fail;
			}
			rdma_set_option(ids[i], RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &tmo,
					sizeof(tmo));
			if (rdma_resolve_route(ids[i], resolve_ms(deadline))) {
				ret = rdmae_err_set(err, -errno, "rdma_resolve_route %s: %s", c->peer,
						    strerror(errno));
				goto fail;
			}
			step[i] = MORE_ROUTE;
			break;
		case MORE_ROUTE:
			if (type != RDMA_CM_EVENT_ROUTE_RESOLVED) {
				ret = rdmae_err_set(err, -EHOSTUNREACH, "route to %s: %s", c->peer,
						    rdma_event_str(type));
				goto fail;
			}
			c->setup.resolve_us += (rdmae_now_ns() - t0[i]) / 1000;
			ret = more_lane_connect(c, ids[i], i, err);
			/* From rdmae_lane_create on, the lane owns the id. */
			if (c->lanes[i].live)
				step[i] = MORE_CONN;
			if (ret)
				goto fail;
			t0[i] = rdmae_now_ns();
			break;
		case MORE_CONN:
			if (type != RDMA_CM_EVENT_ESTABLISHED) {
				if (type == RDMA_CM_EVENT_REJECTED)
					ret = rdmae_err_set(err, -ECONNREFUSED, "connection refused "
							    "by %s (lane %u)", c->peer, i);
				else
					ret = rdmae_err_set(err, -ECONNABORTED, "connect to %s: %s "
							    "(status %d)", c->peer,
							    rdma_event_str(type), status);
				goto fail;
			}
			c->setup.handshake_us += (rdmae_now_ns() - t0[i]) / 1000;
			rdmae_lane_lock(&c->lanes[i]);
			rdmae_conn_lock(c);
			c->lanes[i].established = true;
			rdmae_conn_unlock(c);
			rdmae_lane_unlock(&c->lanes[i]);
			step[i] = MORE_DONE;
			left--;
			break;
		case MORE_DONE:
			ret = rdmae_err_set(err, -ECONNABORTED, "connect to %s: %s on lane %u "
					    "(status %d)", c->peer, rdma_event_str(type), i, status);
			goto fail;
		}
	}
	c->setup.more_lanes_us = (rdmae_now_ns() - start) / 1000;
	return 0;

fail:
	for (i = first; i < n; i++) {
		if (step[i] >= MORE_CONN)
			rdmae_lane_destroy(&c->lanes[i]);
		else if (ids[i])
			rdma_destroy_id(ids[i]);
	}
	return ret;
}

int rdmae_connect(struct rdmae_conn **out, const char *host, const char *port,
		  const struct rdmae_conn_opts *o, struct rdmae_err *err)
{
	struct rdma_addrinfo hints, *dst = NULL, *src = NULL;
	struct rdmae_conn *c;
	uint64_t deadline, t, t0 = rdmae_now_ns();
	int ret;

	*out = NULL;
	if (!host || !port)
		return rdmae_err_set(err, -EINVAL, "connect: host and port are required");
	c = rdmae_conn_alloc(o, false, err);
	if (!c)
		return err ? err->code : -ENOMEM;
	snprintf(c->peer, sizeof(c->peer), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
	{
		char what[sizeof(c->peer) + 16];

		snprintf(what, sizeof(what), "connection to %s", c->peer);
		ret = rdmae_negotiate_auth_setup(&c->opts, &c->key, what, err);
		/* The caller's key bytes are copied: never read again, nor kept a pointer to. */
		c->opts.key = NULL;
		c->opts.key_len = 0;
		if (ret)
			goto err_conn;
	}
	deadline = rdmae_deadline_after(c->opts.timeout_ms);
	/* From the call on: the connection, its key and rdma_cm's start are setup too. */
	c->setup_t0_ns = t0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_port_space = RDMA_PS_TCP;
	ret = rdma_getaddrinfo(host, port, &hints, &dst);
	if (ret) {
		ret = rdmae_err_set(err, -EHOSTUNREACH, "cannot resolve %s: %s", c->peer,
				    ret == -1 && errno ? strerror(errno) : "no such host");
		goto err_conn;
	}
	if (c->opts.bind_addr) {
		hints.ai_flags = RAI_PASSIVE;
		ret = rdma_getaddrinfo(c->opts.bind_addr, NULL, &hints, &src);
		if (ret) {
			ret = rdmae_err_set(err, -EADDRNOTAVAIL, "cannot resolve bind address %s: %s",
					    c->opts.bind_addr, ret == -1 && errno ? strerror(errno) : "no such host");
			goto err_ai;
		}
	}
	ret = client_lane0(c, dst, src ? src->ai_src_addr : NULL, deadline, err);
	if (ret)
		goto err_ai;
	t = rdmae_now_ns();
	ret = rdmae_negotiate_request(c, deadline, err);
	if (ret)
		goto err_ai;
	c->setup.negotiate_us = (rdmae_now_ns() - t) / 1000;
	ret = client_more_lanes(c, 1, c->neg.lanes, dst, src ? src->ai_src_addr : NULL, deadline,
				err);
	if (ret)
		goto err_ai;
	rdmae_conn_lock(c);
	ret = rdmae_conn_check(c, err);
	if (!ret) {
		rdmae_conn_connected_locked(c);
		ret = rdmae_conn_check(c, err);
	}
	rdmae_conn_unlock(c);
	rdmae_conn_wake(c);
	if (ret)
		goto err_ai;
	c->setup.lanes = c->nlanes;
	c->setup.total_us = (rdmae_now_ns() - c->setup_t0_ns) / 1000;
	rdmae_trace(c, "setup: %u lanes in %.1f ms (init %.1f, resolve %.1f, lanes %.1f, "
		    "handshake %.1f, negotiate %.1f of which HMAC %.1f; lanes after 0: %.1f)",
		    c->setup.lanes, c->setup.total_us / 1e3, c->setup.init_us / 1e3,
		    c->setup.resolve_us / 1e3, c->setup.lanes_us / 1e3,
		    c->setup.handshake_us / 1e3, c->setup.negotiate_us / 1e3,
		    c->setup.auth_us / 1e3, c->setup.more_lanes_us / 1e3);
	rdma_freeaddrinfo(dst);
	if (src)
		rdma_freeaddrinfo(src);
	*out = c;
	return 0;

err_ai:
	if (src)
		rdma_freeaddrinfo(src);
	rdma_freeaddrinfo(dst);
err_conn:
	rdmae_conn_destroy(c);
	return ret;
}
