/* SPDX-License-Identifier: MIT */
/*
 * The server side of connection setup: a listener accepts lane 0 of a
 * connection, which then negotiates in its own progress thread while it is
 * pending; further lanes attach to it by their token; rdmae_accept returns
 * it once every lane is up, or drops it if it fails first.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "internal.h"

#define MAX_PENDING 16
/* Pending connections one peer address may hold, so no single peer can use them all. */
#define MAX_PENDING_PER_ADDR 4

struct rdmae_listener {
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct rdmae_conn_opts opts;
	int wake_fd;
	char addr[80];
	struct rdmae_key key;		/* len 0: auth=none */
	struct rdmae_conn *pending[MAX_PENDING];
	rdmae_drop_fn on_drop;
	void *on_drop_arg;
	uint64_t dropped;
};

int rdmae_listen(struct rdmae_listener **out, const char *host, const char *port,
		 const struct rdmae_conn_opts *o, struct rdmae_err *err)
{
	struct rdma_addrinfo hints, *ai = NULL;
	struct rdmae_listener *l;
	int ret;

	*out = NULL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return rdmae_err_set(err, -ENOMEM, "listener: out of memory");
	rdmae_opts_fill(&l->opts, o);
	ret = rdmae_opts_check(&l->opts, err);
	if (ret)
		goto err_free;
	snprintf(l->addr, sizeof(l->addr), host && strchr(host, ':') ? "[%s]:%s" : "%s:%s",
		 host ? host : "*", port ? port : "0");
	{
		char what[sizeof(l->addr) + 16];

		snprintf(what, sizeof(what), "listener %s", l->addr);
		ret = rdmae_negotiate_auth_setup(&l->opts, &l->key, what, err);
		/* The caller's key bytes are copied: never read again, nor kept a pointer to. */
		l->opts.key = NULL;
		l->opts.key_len = 0;
		if (ret)
			goto err_free;
	}
	/* Before any client comes: a request's proof is then checked at full speed. */
	rdmae_auth_warm();
	l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wake_fd < 0) {
		ret = rdmae_err_set(err, -errno, "eventfd for listener %s: %s", l->addr,
				    strerror(errno));
		goto err_free;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = RAI_PASSIVE;
	hints.ai_port_space = RDMA_PS_TCP;
	ret = rdma_getaddrinfo(host, port ? port : "0", &hints, &ai);
	if (ret) {
		ret = rdmae_err_set(err, -EADDRNOTAVAIL, "cannot resolve listen address %s: %s",
				    l->addr, ret == -1 && errno ? strerror(errno) : "no such host");
		goto err_fd;
	}
	l->ch = rdma_create_event_channel();
	if (!l->ch) {
		ret = rdmae_err_set(err, -errno, "rdma_create_event_channel: %s", strerror(errno));
		goto err_ai;
	}
	fcntl(l->ch->fd, F_SETFL, fcntl(l->ch->fd, F_GETFL) | O_NONBLOCK);
	if (rdma_create_id(l->ch, &l->id, l, RDMA_PS_TCP)) {
		ret = rdmae_err_set(err, -errno, "rdma_create_id for %s: %s", l->addr,
				    strerror(errno));
		goto err_ch;
	}
	if (rdma_bind_addr(l->id, ai->ai_src_addr)) {
		ret = -errno;
		if (ret == -EADDRINUSE)
			rdmae_err_set(err, ret, "listen on %s: address already in use", l->addr);
		else
			rdmae_err_set(err, ret, "no RDMA device has address %s (%s)", l->addr,
				      strerror(-ret));
		goto err_id;
	}
	if (rdma_listen(l->id, MAX_PENDING)) {
		ret = rdmae_err_set(err, -errno, "rdma_listen on %s: %s", l->addr, strerror(errno));
		goto err_id;
	}
	rdma_freeaddrinfo(ai);
	*out = l;
	return 0;

err_id:
	rdma_destroy_id(l->id);
err_ch:
	rdma_destroy_event_channel(l->ch);
err_ai:
	rdma_freeaddrinfo(ai);
err_fd:
	close(l->wake_fd);
err_free:
	rdmae_key_wipe(&l->key);
	free(l);
	return ret;
}

int rdmae_listener_port(const struct rdmae_listener *l)
{
	return ntohs(rdma_get_src_port(l->id));
}

/* The pending connection, authenticated, whose lane `lane` has this token. */
static struct rdmae_conn *pending_by_token(struct rdmae_listener *l, unsigned int lane,
					   uint64_t token)
{
	struct rdmae_conn *found = NULL;
	unsigned int i;

	if (lane == 0 || lane >= RDMAE_MAX_LANES)
		return NULL;
	for (i = 0; i < MAX_PENDING; i++) {
		struct rdmae_conn *c = l->pending[i];

		if (!c)
			continue;
		rdmae_conn_lock(c);
		/* Tokens exist only once the client proved itself (state LANES). */
		if (!found && c->state == RDMAE_ST_LANES &&
		    rdmae_auth_token_equal(c->lane_token[lane], token))
			found = c;
		rdmae_conn_unlock(c);
	}
	return found;
}

static void pending_remove(struct rdmae_listener *l, struct rdmae_conn *c)
{
	unsigned int i;

	for (i = 0; i < MAX_PENDING; i++)
		if (l->pending[i] == c)
			l->pending[i] = NULL;
	rdmae_conn_lock(c);
	c->notify_fd = -1;
	rdmae_conn_unlock(c);
}

static unsigned int lanes_established(const struct rdmae_conn *c)
{
	unsigned int i, n = 0;

	for (i = 0; i < c->nlanes; i++)
		n += c->lanes[i].established;
	return n;
}

/* Do "host:port" and "host:port2" (or "[v6]:port") name the same host? */
static bool same_host(const char *a, const char *b)
{
	const char *ca = strrchr(a, ':'), *cb = strrchr(b, ':');

	if (!ca || !cb)
		return !strcmp(a, b);
	return ca - a == cb - b && !strncmp(a, b, (size_t)(ca - a));
}

/*
 * A connection that failed before accept could return it: by default it is
 * logged and dropped, and accept goes on, so that one bad or half-open peer
 * cannot end a listener that a real source will reach later.
 */
static int drop_pending(struct rdmae_listener *l, const struct rdmae_err *e, const char *peer)
{
	l->dropped++;
	if (l->on_drop)
		return l->on_drop(l->on_drop_arg, e);
	fprintf(stderr, "rdmae: listener %s: dropped a connection from %s: %s\n", l->addr, peer,
		e->msg);
	return 0;
}

void rdmae_listener_on_drop(struct rdmae_listener *l, rdmae_drop_fn fn, void *arg)
{
	l->on_drop = fn;
	l->on_drop_arg = arg;
}

uint64_t rdmae_listener_dropped(const struct rdmae_listener *l)
{
	return l->dropped;
}

static void addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[64] = "?";

	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, len, "?");
	}
}

/*
 * Lane 0 of a new pending connection on id. On failure *taken says whether
 * id went with the lane (rejected and destroyed with it); otherwise it is
 * still the caller's to reject and destroy.
 */
static int accept_lane0(struct rdmae_listener *l, struct rdma_cm_id *id, bool *taken,
			struct rdmae_err *err)
{
	struct rdma_conn_param param;
	struct rdmae_accept_pd pd = { .version = RDMAE_VERSION };
	uint8_t pdbuf[RDMAE_ACCEPT_PD_SIZE];
	struct rdmae_conn *c;
	unsigned int slot;
	uint64_t t;
	int ret;

	char peer[sizeof(c->peer)];
	unsigned int same = 0;

	addr_str(rdma_get_peer_addr(id), peer, sizeof(peer));
	for (slot = 0; slot < MAX_PENDING; slot++)
		if (l->pending[slot] && same_host(l->pending[slot]->peer, peer))
			same++;
	if (same >= MAX_PENDING_PER_ADDR)
		return rdmae_err_set(err, -EBUSY, "listener %s: %s already has %d connections "
				     "pending", l->addr, peer, MAX_PENDING_PER_ADDR);
	for (slot = 0; slot < MAX_PENDING && l->pending[slot]; slot++)
		;
	if (slot == MAX_PENDING)
		return rdmae_err_set(err, -EBUSY, "listener %s: %d connections already pending",
				     l->addr, MAX_PENDING);
	c = rdmae_conn_alloc(&l->opts, true, err);
	if (!c)
		return err ? err->code : -ENOMEM;
	memcpy(c->peer, peer, sizeof(c->peer));
	c->setup_t0_ns = rdmae_now_ns();
	c->key = l->key;
	/* A fresh nonce per connection: no proof of an earlier one is good for this one. */
	if (getrandom(c->nonce_s, sizeof(c->nonce_s), 0) != (ssize_t)sizeof(c->nonce_s)) {
		ret = rdmae_err_set(err, -EIO, "getrandom for a connection nonce");
		goto err_conn;
	}
	pd.auth = rdmae_negotiate_auth_mode(c);
	memcpy(pd.nonce, c->nonce_s, sizeof(pd.nonce));
	t = rdmae_now_ns();
	ret = rdmae_conn_setup_device(c, id->verbs, err);
	if (ret)
		goto err_conn;
	c->setup.device_us += (rdmae_now_ns() - t) / 1000;
	t = rdmae_now_ns();
	ret = rdmae_lane_create(c, id, 0, err);
	if (ret)
		goto err_conn;
	c->setup.lanes_us += (rdmae_now_ns() - t) / 1000;
	rdmae_conn_lock(c);
	c->state = RDMAE_ST_NEGOTIATING;
	c->notify_fd = l->wake_fd;
	/* A client that connects and then goes quiet must not hold a slot for ever. */
	c->setup_deadline_ns = rdmae_deadline_after(c->opts.timeout_ms);
	rdmae_conn_unlock(c);
	rdmae_accept_pd_encode(pdbuf, &pd);
	rdmae_connect_param_init(&param, pdbuf, RDMAE_ACCEPT_PD_SIZE);
	if (rdma_accept(id, &param)) {
		ret = rdmae_err_set(err, -errno, "rdma_accept from %s: %s", c->peer, strerror(errno));
		goto err_conn;
	}
	l->pending[slot] = c;
	return 0;

err_conn:
	/* Once lane 0 holds id, it is rejected here and destroyed with the lane. */
	*taken = c->lanes[0].live;
	if (*taken)
		rdma_reject(id, NULL, 0);
	rdmae_conn_destroy(c);
	return ret;
}

/* A further lane of a pending connection; *taken as for accept_lane0. */
static int accept_lane(struct rdmae_listener *l, struct rdma_cm_id *id,
		       const struct rdmae_lane_pd *pd, bool *taken, struct rdmae_err *err)
{
	struct rdmae_conn *c = pending_by_token(l, pd->lane, pd->conn_token);
	struct rdma_conn_param param;
	uint8_t pdbuf[RDMAE_LANE_PD_SIZE];
	uint64_t t;
	int ret;

	if (!c)
		return rdmae_err_set(err, -ENOENT, "lane %u: no pending connection with that token",
				     pd->lane);
	rdmae_conn_lock(c);
	if (c->state != RDMAE_ST_LANES || pd->lane >= c->neg.lanes || c->lanes[pd->lane].conn) {
		rdmae_conn_unlock(c);
		return rdmae_err_set(err, -EPROTO, "lane %u from %s not expected", pd->lane,
				     c->peer);
	}
	if (id->verbs != c->verbs) {
		rdmae_conn_unlock(c);
		return rdmae_err_set(err, -EXDEV, "lane %u from %s arrived on another device",
				     pd->lane, c->peer);
	}
	rdmae_conn_unlock(c);
	/* A duplicate that raced in meanwhile finds the lane claimed (-EEXIST). */
	t = rdmae_now_ns();
	ret = rdmae_lane_create(c, id, pd->lane, err);
	if (ret)
		return ret;
	c->setup.lanes_us += (rdmae_now_ns() - t) / 1000;
	rdmae_lane_lock(&c->lanes[pd->lane]);
	rdmae_conn_lock(c);
	rdmae_negotiate_lane_credits_locked(c, &c->lanes[pd->lane]);
	rdmae_conn_unlock(c);
	rdmae_lane_unlock(&c->lanes[pd->lane]);
	rdmae_lane_pd_encode(pdbuf, pd);
	rdmae_connect_param_init(&param, pdbuf, RDMAE_LANE_PD_SIZE);
	if (rdma_accept(id, &param)) {
		ret = rdmae_err_set(err, -errno, "rdma_accept lane %u from %s: %s", pd->lane, c->peer,
				    strerror(errno));
		rdma_reject(id, NULL, 0);
		*taken = true;
		/* Marked dead under the locks; rings and cm_id go with none held. */
		rdmae_lane_destroy(&c->lanes[pd->lane]);
		return ret;
	}
	return 0;
}

static void listener_event(struct rdmae_listener *l, struct rdma_cm_event *ev)
{
	enum rdma_cm_event_type type = ev->event;
	struct rdma_cm_id *id = ev->id;
	struct rdmae_lane_pd pd;
	enum rdmae_wire_field f;
	struct rdmae_err lerr = { 0 };
	int bad = 1;

	if (type == RDMA_CM_EVENT_CONNECT_REQUEST)
		bad = rdmae_lane_pd_decode(ev->param.conn.private_data,
					   ev->param.conn.private_data_len, &pd, &f);
	/* Ack before acting: destroying an id waits for its events to be acked. */
	rdma_ack_cm_event(ev);

	if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
		bool taken = false;
		int ret = bad ? -EPROTO : pd.lane == 0 ? accept_lane0(l, id, &taken, &lerr)
						       : accept_lane(l, id, &pd, &taken, &lerr);

		if (ret) {
			/* Refused before it was pending: logged, never the caller's failure. */
			fprintf(stderr, "rdmae: listener %s: refused a connection: %s\n", l->addr,
				bad ? "its private data is not an rdmae lane request" : lerr.msg);
			if (!taken) {
				rdma_reject(id, NULL, 0);
				rdma_destroy_id(id);
			}
		}
		return;
	}
	if (id == l->id || !id->context)
		return;
	{
		struct rdmae_lane *lane = rdmae_lane_of(id);
		struct rdmae_conn *c = lane->conn;

		/* The lane's lock, then c->lock: established is written under both. */
		rdmae_lane_lock(lane);
		rdmae_conn_lock(c);
		rdmae_trace(c, "listener: cm event %s on lane %u", rdma_event_str(type), lane->idx);
		if (type == RDMA_CM_EVENT_ESTABLISHED) {
			lane->established = true;
		} else if (type == RDMA_CM_EVENT_DISCONNECTED && lane->idx == 0 &&
			   c->state == RDMAE_ST_LANES && lanes_established(c) < 2 &&
			   c->neg.lanes > 1) {
			/* The client got our response and hung up instead of adding lanes. */
			rdmae_conn_fail_locked(c, -ECONNRESET, "negotiate with %s: the client "
					       "disconnected after our response (it refused it)",
					       c->peer);
		} else if (type == RDMA_CM_EVENT_DISCONNECTED || type == RDMA_CM_EVENT_REJECTED ||
			   type == RDMA_CM_EVENT_CONNECT_ERROR || type == RDMA_CM_EVENT_UNREACHABLE) {
			rdmae_conn_fail_locked(c, -ECONNRESET, "setup of %s: %s on lane %u",
					       c->peer, rdma_event_str(type), lane->idx);
		}
		rdmae_conn_unlock(c);
		rdmae_lane_unlock(lane);
	}
}

/* A pending connection is done when negotiated with every lane up; failed past its deadline. */
static int pending_ready(struct rdmae_conn *c)
{
	int r = 0;

	rdmae_conn_lock(c);
	if (c->state == RDMAE_ST_LANES && lanes_established(c) == c->neg.lanes &&
	    c->nlanes == c->neg.lanes)
		r = 1;
	else if (!rdmae_conn_failed(c) && rdmae_now_ns() >= c->setup_deadline_ns)
		rdmae_conn_fail_locked(c, -ETIMEDOUT, "setup of %s: not negotiated with all its "
				       "lanes within %d ms", c->peer, c->opts.timeout_ms);
	if (rdmae_conn_failed(c))
		r = -1;
	rdmae_conn_unlock(c);
	return r;
}

static int finish_accept(struct rdmae_listener *l, struct rdmae_conn *c, struct rdmae_err *err)
{
	unsigned int i;
	int ret = 0;

	pending_remove(l, c);
	/* From now on the connection's own progress thread hears its CM events. */
	for (i = 0; i < c->nlanes && !ret; i++)
		if (rdma_migrate_id(c->lanes[i].qp.id, c->cm_ch))
			ret = rdmae_err_set(err, -errno, "rdma_migrate_id lane %u of %s: %s", i,
					    c->peer, strerror(errno));
	rdmae_conn_lock(c);
	/* The connection may have failed since it was found ready: keep that error. */
	if (!ret)
		ret = rdmae_conn_check(c, err);
	if (!ret) {
		c->setup.lanes = c->nlanes;
		c->setup.total_us = (rdmae_now_ns() - c->setup_t0_ns) / 1000;
		rdmae_trace(c, "accepted with %u lanes, %.1f ms after lane 0's request (lanes %.1f)",
			    c->nlanes, c->setup.total_us / 1e3, c->setup.lanes_us / 1e3);
		rdmae_conn_connected_locked(c);
		ret = rdmae_conn_check(c, err);
	}
	rdmae_conn_unlock(c);
	rdmae_conn_wake(c);
	return ret;
}

int rdmae_accept(struct rdmae_listener *l, struct rdmae_conn **out, int timeout_ms,
		 struct rdmae_err *err)
{
	uint64_t deadline = rdmae_deadline_after(timeout_ms);
	struct rdma_cm_event *ev;
	unsigned int i;
	int ret;

	*out = NULL;
	for (;;) {
		for (i = 0; i < MAX_PENDING; i++) {
			struct rdmae_conn *c = l->pending[i];
			int r;

			if (!c)
				continue;
			r = pending_ready(c);
			if (r < 0) {
				struct rdmae_err e = { 0 };
				char peer[sizeof(c->peer)];

				pending_remove(l, c);
				rdmae_conn_lock(c);
				rdmae_conn_check(c, &e);
				rdmae_conn_unlock(c);
				memcpy(peer, c->peer, sizeof(peer));
				rdmae_conn_destroy(c);
				ret = drop_pending(l, &e, peer);
				if (ret) {
					if (err)
						*err = e;
					return ret;
				}
				continue;
			}
			if (r > 0) {
				struct rdmae_err e = { 0 };
				char peer[sizeof(c->peer)];

				ret = finish_accept(l, c, &e);
				if (!ret) {
					*out = c;
					return 0;
				}
				memcpy(peer, c->peer, sizeof(peer));
				rdmae_conn_destroy(c);
				ret = drop_pending(l, &e, peer);
				if (ret) {
					if (err)
						*err = e;
					return ret;
				}
			}
		}
		if (!rdma_get_cm_event(l->ch, &ev)) {
			/* One event at a time: it may have completed a connection, check first. */
			listener_event(l, ev);
			continue;
		}
		{
			struct pollfd p[2] = { { .fd = l->ch->fd, .events = POLLIN },
					       { .fd = l->wake_fd, .events = POLLIN } };
			int ms = rdmae_ms_left(deadline);
			uint64_t v;

			/* Wake up in time to retire pending connections past their setup deadline. */
			for (i = 0; i < MAX_PENDING; i++)
				if (l->pending[i] && (ms < 0 || ms > 200))
					ms = 200;
			if (ms == 0)
				return rdmae_err_set(err, -ETIMEDOUT,
						     "accept on %s: no connection within %d ms",
						     l->addr, timeout_ms);
			/* Pending connections report progress through wake_fd; poll it too. */
			if (poll(p, 2, ms) < 0 && errno != EINTR)
				return rdmae_err_set(err, -errno, "poll on listener %s: %s", l->addr,
						     strerror(errno));
			if (read(l->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				return rdmae_err_set(err, -errno, "listener %s wake: %s", l->addr,
						     strerror(errno));
		}
	}
}

void rdmae_listener_destroy(struct rdmae_listener *l)
{
	unsigned int i;

	if (!l)
		return;
	for (i = 0; i < MAX_PENDING; i++) {
		struct rdmae_conn *c = l->pending[i];

		if (c) {
			pending_remove(l, c);
			rdmae_conn_destroy(c);
		}
	}
	rdma_destroy_id(l->id);
	rdma_destroy_event_channel(l->ch);
	close(l->wake_fd);
	rdmae_key_wipe(&l->key);
	free(l);
}
