/* SPDX-License-Identifier: MIT */
/*
 * Connection setup and teardown with rdma_cm, and negotiation.
 *
 * Lane 0 connects first and carries the negotiate exchange, in which both
 * sides prove that they know the pre-shared key (rdmae_auth.h): the server's
 * accept of lane 0 carries its nonce, the request the client's nonce and
 * proof, the response the server's proof. Lanes 1..n-1 then connect with
 * tokens both sides derive from the key and the nonces (their rdma_cm
 * private data names them), so a listener can attach lanes to connections
 * even while several are being set up at once, and only to authenticated ones.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MAX_PENDING 16
/* Pending connections one peer address may hold, so no single peer can use them all. */
#define MAX_PENDING_PER_ADDR 4
/* Local ACK timeout exponent: 4.096 us * 2^16 = 268 ms per try, 7 tries. */
#define ACK_TIMEOUT 16
#define RETRY_COUNT 6
#define SEND_DRAIN_MS 2000

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

static int ms_left(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = rdmae_now_ns();
	return now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
}

/* rdma_cm takes a timeout in ms, where 0 would not mean "now". */
static int resolve_ms(uint64_t deadline)
{
	int ms = ms_left(deadline);

	return ms > 0 ? ms : 1;
}

void rdmae_conn_opts_default(struct rdmae_conn_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->timeout_ms = 5000;
	o->credits = 255;
	/*
	 * Four lanes: measured with make perf (one VM), four moved 131 MB/s of
	 * 1 MiB runs against 99 MB/s for one, and the same at 4-64 KiB runs; on
	 * hardware several QPs are what spreads the work over the NIC's engines.
	 * See doc/architecture.md.
	 */
	o->lanes = 4;
	o->min_version = RDMAE_VERSION;
	o->max_version = RDMAE_VERSION;
	o->send_size = 8192;
	o->recv_size = 8192;
	o->frag_size = 32u << 20;
	o->rw_size = 1u << 20;
	o->keepalive_ms = 10000;
	o->keepalive_timeout_ms = 5000;
	o->recv_queue_bytes = 4u << 20;
	o->writes_in_flight = 128;
	o->send_timeout_ms = 30000;
}

/* A zero field means "default", so callers can set only what they care about. */
static void opts_fill(struct rdmae_conn_opts *dst, const struct rdmae_conn_opts *src)
{
	struct rdmae_conn_opts d;

	rdmae_conn_opts_default(&d);
	if (!src) {
		*dst = d;
		return;
	}
	*dst = *src;
#define FILL(f) do { if (!dst->f) dst->f = d.f; } while (0)
	FILL(timeout_ms);
	FILL(credits);
	FILL(lanes);
	FILL(min_version);
	FILL(max_version);
	FILL(send_size);
	FILL(recv_size);
	FILL(frag_size);
	FILL(rw_size);
	FILL(keepalive_timeout_ms);
	FILL(recv_queue_bytes);
	FILL(writes_in_flight);
	FILL(send_timeout_ms);
#undef FILL
	if (src->keepalive_ms < 0)
		dst->keepalive_ms = 0;
	else if (!src->keepalive_ms)
		dst->keepalive_ms = d.keepalive_ms;
}

static int opts_check(const struct rdmae_conn_opts *o, struct rdmae_err *err)
{
	if (o->lanes > RDMAE_MAX_LANES)
		return rdmae_err_set(err, -EINVAL, "lanes %u: at most %d", o->lanes,
				     RDMAE_MAX_LANES);
	/* The client grants one fewer than it posts (one waits for the negotiate response). */
	if (o->credits < RDMAE_MIN_INITIAL_GRANT + 1 || o->credits > RDMAE_MAX_CREDITS)
		return rdmae_err_set(err, -EINVAL, "credits %u: must be %d..%d", o->credits,
				     RDMAE_MIN_INITIAL_GRANT + 1, RDMAE_MAX_CREDITS);
	if (o->recv_size < RDMAE_MIN_RECV_SIZE || o->recv_size > RDMAE_MAX_RECV_SIZE ||
	    o->send_size < RDMAE_MIN_RECV_SIZE || o->send_size > RDMAE_MAX_RECV_SIZE)
		return rdmae_err_set(err, -EINVAL, "send/receive size %u/%u: must be %u..%u",
				     o->send_size, o->recv_size, RDMAE_MIN_RECV_SIZE,
				     RDMAE_MAX_RECV_SIZE);
	return 0;
}

/*
 * The key of a listener or connection: from its file, or none with an
 * explicit auth_none (said once on stderr), else a refusal.
 */
static int auth_setup(const struct rdmae_conn_opts *o, struct rdmae_key *k, const char *what,
		      struct rdmae_err *err)
{
	rdmae_key_wipe(k);
	if (o->key_file && o->auth_none)
		return rdmae_err_set(err, -EINVAL, "%s: both a key file (%s) and auth=none given; "
				     "choose one", what, o->key_file);
	if (o->key_file)
		return rdmae_key_load(k, o->key_file, err);
	if (!o->auth_none)
		return rdmae_err_set(err, -EACCES, "%s: no key: give a key file (key=FILE, --key "
				     "FILE), or auth=none to run without authentication", what);
	fprintf(stderr, "rdmae: warning: %s: auth=none: the peer is not authenticated; any host "
		"that can reach this address can take part in the connection\n", what);
	return 0;
}

static uint16_t auth_mode(const struct rdmae_conn *c)
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

static void limits_from_opts(struct rdmae_wire_limits *l, const struct rdmae_conn_opts *o)
{
	l->min_version = o->min_version;
	l->max_version = o->max_version;
	l->credits = o->credits;
	l->lanes = o->lanes;
	l->preferred_send_size = o->send_size;
	l->max_receive_size = o->recv_size;
	l->max_fragmented_size = o->frag_size;
	l->max_rw_size = o->rw_size;
}

void rdmae_trace_print(const struct rdmae_conn *c, const char *fmt, ...)
{
	char line[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "rdmae %.6f %s %s: %s\n", (double)rdmae_now_ns() / 1e9,
		c->server ? "server" : "client", c->peer, line);
}

static struct rdmae_conn *conn_alloc(const struct rdmae_conn_opts *o, bool server,
				     struct rdmae_err *err)
{
	const char *dbg = getenv("RDMAE_DEBUG");

	struct rdmae_conn *c = calloc(1, sizeof(*c));
	pthread_condattr_t ca;

	if (!c) {
		rdmae_err_set(err, -ENOMEM, "connection: out of memory");
		return NULL;
	}
	opts_fill(&c->opts, o);
	if (opts_check(&c->opts, err))
		goto err_free;
	limits_from_opts(&c->limits, &c->opts);
	c->server = server;
	c->debug = dbg && *dbg && *dbg != '0';
	c->numa_node = -1;
	c->notify_fd = -1;
	c->pin_limit = 256u << 20;
	snprintf(c->peer, sizeof(c->peer), "?");
	c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->wake_fd < 0) {
		rdmae_err_set(err, -errno, "eventfd for a connection: %s", strerror(errno));
		goto err_free;
	}
	c->cm_ch = rdma_create_event_channel();
	if (!c->cm_ch) {
		rdmae_err_set(err, -errno, "rdma_create_event_channel: %s", strerror(errno));
		goto err_fd;
	}
	fcntl(c->cm_ch->fd, F_SETFL, fcntl(c->cm_ch->fd, F_GETFL) | O_NONBLOCK);
	pthread_mutex_init(&c->lock, NULL);
	/* Waits are bounded against CLOCK_MONOTONIC so a clock step cannot stretch a timeout. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	return c;

err_fd:
	close(c->wake_fd);
err_free:
	free(c);
	return NULL;
}

/* Both eventfds are non-blocking counters: a failed write means one is already pending. */
static void eventfd_kick(int fd)
{
	uint64_t one = 1;
	ssize_t r = write(fd, &one, sizeof(one));

	(void)r;
}

void rdmae_conn_wake(struct rdmae_conn *c)
{
	eventfd_kick(c->wake_fd);
}

void rdmae_conn_fail_locked(struct rdmae_conn *c, int code, const char *fmt, ...)
{
	va_list ap;

	if (c->state == RDMAE_ST_ERROR)
		return;
	c->state = RDMAE_ST_ERROR;
	c->err.code = code < 0 ? code : -EIO;
	va_start(ap, fmt);
	vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
	va_end(ap);
	rdmae_trace(c, "error %d: %s%s", c->err.code, c->err.msg, c->linger ? " (lingering)" : "");
	/*
	 * Disconnecting moves the QPs to error, which flushes whatever is posted.
	 * A lingering connection first lets its queued sends go (a CANCEL, a
	 * negotiate refusal): the progress thread disconnects once they are out
	 * or linger_until_ns has passed.
	 */
	if (c->linger) {
		if (!c->linger_until_ns)
			c->linger_until_ns = rdmae_now_ns() + SEND_DRAIN_MS * 1000000ull;
		rdmae_conn_wake(c);
	} else {
		rdmae_conn_disconnect_locked(c);
	}
	pthread_cond_broadcast(&c->cond);
	if (c->notify_fd >= 0)
		eventfd_kick(c->notify_fd);
}

void rdmae_conn_disconnect_locked(struct rdmae_conn *c)
{
	for (unsigned int i = 0; i < c->nlanes; i++)
		if (c->lanes[i].qp && c->lanes[i].established)
			rdma_disconnect(c->lanes[i].id);
	c->linger = false;
}

int rdmae_conn_check_locked(struct rdmae_conn *c, struct rdmae_err *err)
{
	if (c->state != RDMAE_ST_ERROR)
		return 0;
	if (err)
		*err = c->err;
	return c->err.code;
}

int rdmae_conn_wait_locked(struct rdmae_conn *c, uint64_t deadline_ns)
{
	struct timespec ts;

	rdmae_lane_post_all_locked(c);
	if (!deadline_ns) {
		pthread_cond_wait(&c->cond, &c->lock);
		return 0;
	}
	ts.tv_sec = (time_t)(deadline_ns / 1000000000ull);
	ts.tv_nsec = (long)(deadline_ns % 1000000000ull);
	if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT)
		return -ETIMEDOUT;
	return 0;
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

/* Device-wide resources, made when lane 0 knows which device it is on. */
static int setup_device(struct rdmae_conn *c, struct ibv_context *verbs, struct rdmae_err *err)
{
	struct ibv_device_attr_ex ax;
	const char *dev = ibv_get_device_name(verbs->device);
	uint32_t per_lane = c->opts.credits * 2u + c->opts.writes_in_flight + 1;
	uint32_t cqe = per_lane * c->opts.lanes;
	int ret;

	c->verbs = verbs;
	memset(&ax, 0, sizeof(ax));
	if (ibv_query_device_ex(verbs, NULL, &ax))
		return rdmae_err_set(err, -errno, "ibv_query_device on %s: %s", dev, strerror(errno));
	c->dev_attr = ax.orig_attr;
	c->odp_write = (ax.odp_caps.general_caps & IBV_ODP_SUPPORT) &&
		       (ax.odp_caps.per_transport_caps.rc_odp_caps & IBV_ODP_SUPPORT_WRITE);
	if (cqe > (uint32_t)c->dev_attr.max_cqe)
		return rdmae_err_set(err, -EINVAL,
				     "%u lanes x %u completions = %u exceeds max_cqe %d on %s",
				     c->opts.lanes, per_lane, cqe, c->dev_attr.max_cqe, dev);
	c->numa_node = rdmae_device_numa_node(verbs);
	c->pd = ibv_alloc_pd(verbs);
	if (!c->pd)
		return rdmae_err_set(err, -errno, "ibv_alloc_pd on %s: %s", dev, strerror(errno));
	c->comp_ch = ibv_create_comp_channel(verbs);
	if (!c->comp_ch) {
		ret = rdmae_err_set(err, -errno, "ibv_create_comp_channel on %s: %s", dev,
				    strerror(errno));
		goto err_pd;
	}
	fcntl(c->comp_ch->fd, F_SETFL, fcntl(c->comp_ch->fd, F_GETFL) | O_NONBLOCK);
	c->cq = ibv_create_cq(verbs, (int)cqe, c, c->comp_ch, 0);
	if (!c->cq) {
		ret = rdmae_err_set(err, -errno, "ibv_create_cq of %u entries on %s: %s", cqe, dev,
				    strerror(errno));
		goto err_ch;
	}
	if (ibv_req_notify_cq(c->cq, 0)) {
		ret = rdmae_err_set(err, -EIO, "ibv_req_notify_cq on %s", dev);
		goto err_cq;
	}
	ret = rdmae_progress_start(c, err);
	if (ret)
		goto err_cq;
	return 0;

err_cq:
	ibv_destroy_cq(c->cq);
	c->cq = NULL;
err_ch:
	ibv_destroy_comp_channel(c->comp_ch);
	c->comp_ch = NULL;
err_pd:
	ibv_dealloc_pd(c->pd);
	c->pd = NULL;
	return ret;
}

/* Data lanes: both sides post their own credit count and start with the peer's. */
static void data_lane_credits(struct rdmae_conn *c, struct rdmae_lane *l)
{
	rdmae_credits_init(&l->cr, c->neg.peer_credits_target, l->nrx, l->nrx,
			   c->neg.peer_credits_target);
}

void rdmae_conn_on_negotiate_locked(struct rdmae_conn *c, const void *buf, size_t len)
{
	struct rdmae_lane *l0 = &c->lanes[0];
	enum rdmae_wire_field f = RDMAE_F_NONE;
	int ret;

	if (c->server) {
		struct rdmae_neg_req req;
		struct rdmae_neg_resp resp;
		uint8_t out[RDMAE_NEG_RESP_SIZE];

		const char *why = NULL;

		memset(&resp, 0, sizeof(resp));
		memset(&req, 0, sizeof(req));
		ret = rdmae_neg_req_decode(buf, len, &req, &f);
		/*
		 * The client proves itself first: an unauthenticated peer learns
		 * nothing but our version range and mode, not even our limits.
		 */
		if (!ret && req.auth != auth_mode(c)) {
			ret = -EACCES;
			f = RDMAE_F_AUTH;
			why = req.auth == RDMAE_WIRE_AUTH_NONE ?
			      "the peer sent no proof (it runs with auth=none) and this listener "
			      "requires the key" :
			      "the peer offers a key, but this listener runs with auth=none (both "
			      "sides need the same key, or both auth=none)";
		} else if (!ret && auth_mode(c) != RDMAE_WIRE_AUTH_NONE &&
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
			ret = rdmae_negotiate_server(&c->limits, &req, l0->nrx, &resp, &c->neg, &f);
		}
		resp.auth = auth_mode(c);
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
			rdmae_credits_init(&l0->cr, c->neg.send_credits, l0->nrx, l0->nrx,
					   c->neg.peer_credits_target);
			rdmae_reasm_init(&c->reasm, c->neg.max_fragmented_size);
			c->state = RDMAE_ST_LANES;
		}
		rdmae_neg_resp_encode(out, &resp);
		if (rdmae_lane_send_raw_locked(l0, out, sizeof(out)) && !ret)
			ret = -EIO;
		if (ret) {
			/* Let the response with its status reach the client before disconnecting. */
			c->linger = true;
			if (why)
				rdmae_conn_fail_locked(c, ret, "authentication failed with %s: %s",
						       c->peer, why);
			else
				rdmae_conn_fail_locked(c, ret, "negotiate with %s: request rejected: "
						       "bad %s", c->peer, rdmae_wire_field_name(f));
		}
	} else {
		struct rdmae_neg_resp resp;

		const char *why = NULL;

		memset(&resp, 0, sizeof(resp));
		ret = rdmae_neg_resp_decode(buf, len, &resp, &f);
		if (!ret && resp.status == -EACCES && resp.status_field == RDMAE_F_AUTH)
			why = auth_mode(c) == RDMAE_WIRE_AUTH_NONE ?
			      "the peer requires a key and we run with auth=none" :
			      c->peer_auth == RDMAE_WIRE_AUTH_NONE ?
			      "the peer runs with auth=none and we have a key (both sides need the "
			      "same key, or both auth=none)" :
			      "the peer does not know the key (it rejected our proof)";
		if (!ret)
			ret = rdmae_negotiate_client(&c->limits, &c->neg_sent, &resp, &c->neg, &f);
		if (!ret && resp.auth != auth_mode(c)) {
			ret = -EACCES;
			f = RDMAE_F_AUTH;
			why = "the peer accepted us without the authentication we asked for";
		} else if (!ret && auth_mode(c) != RDMAE_WIRE_AUTH_NONE &&
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
			rdmae_credits_init(&l0->cr, c->neg.send_credits, l0->nrx - 1, l0->nrx,
					   c->neg.peer_credits_target);
			rdmae_credits_on_repost(&l0->cr, 1);
			rdmae_reasm_init(&c->reasm, c->neg.max_fragmented_size);
			c->state = RDMAE_ST_LANES;
		}
	}
	pthread_cond_broadcast(&c->cond);
	if (c->notify_fd >= 0)
		eventfd_kick(c->notify_fd);
}

/* Wait for the next CM event on a channel we drive ourselves (setup). */
static int cm_next(struct rdma_event_channel *ch, uint64_t deadline, struct rdma_cm_event **ev)
{
	for (;;) {
		struct pollfd p = { .fd = ch->fd, .events = POLLIN };
		int ms = ms_left(deadline);

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

static void conn_param_init(struct rdma_conn_param *p, const uint8_t *pd, uint8_t pd_len)
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

static int client_lane(struct rdmae_conn *c, unsigned int idx, struct rdma_addrinfo *dst,
		       struct sockaddr *src, uint64_t deadline, struct rdmae_err *err)
{
	struct rdma_cm_id *id;
	enum rdma_cm_event_type got;
	struct rdma_conn_param param;
	struct rdmae_lane_pd pd = { .version = RDMAE_VERSION, .lane = (uint16_t)idx,
				    .conn_token = idx < RDMAE_MAX_LANES ? c->lane_token[idx] : 0 };
	uint8_t pdbuf[RDMAE_LANE_PD_SIZE];
	uint8_t apd[RDMAE_ACCEPT_PD_SIZE];
	size_t apd_len = 0;
	uint8_t tmo = ACK_TIMEOUT;
	int status = 0, ret;

	if (idx >= RDMAE_MAX_LANES)
		return rdmae_err_set(err, -EINVAL, "lane %u: at most %d lanes", idx, RDMAE_MAX_LANES);
	if (rdma_create_id(c->cm_ch, &id, NULL, RDMA_PS_TCP))
		return rdmae_err_set(err, -errno, "rdma_create_id for %s: %s", c->peer,
				     strerror(errno));
	if (src && rdma_bind_addr(id, src)) {
		ret = -errno;
		rdmae_err_set(err, ret, "no RDMA device has address %s (%s)", c->opts.bind_addr,
			      strerror(-ret));
		goto err_id;
	}
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
	if (idx == 0) {
		ret = setup_device(c, id->verbs, err);
		if (ret)
			goto err_id;
	} else if (id->verbs != c->verbs) {
		ret = rdmae_err_set(err, -EXDEV, "lane %u to %s resolved to device %s, lane 0 to %s",
				    idx, c->peer, ibv_get_device_name(id->verbs->device),
				    ibv_get_device_name(c->verbs->device));
		goto err_id;
	}
	pthread_mutex_lock(&c->lock);
	ret = rdmae_lane_create(c, id, idx, err);
	if (!ret && idx > 0)
		data_lane_credits(c, id->context);
	pthread_mutex_unlock(&c->lock);
	if (ret)
		goto err_id;

	rdmae_lane_pd_encode(pdbuf, &pd);
	conn_param_init(&param, pdbuf, RDMAE_LANE_PD_SIZE);
	if (rdma_connect(id, &param)) {
		ret = rdmae_err_set(err, -errno, "rdma_connect %s: %s", c->peer, strerror(errno));
		goto err_lane;
	}
	ret = cm_expect(c, id, RDMA_CM_EVENT_ESTABLISHED, deadline, &got, &status,
			idx == 0 ? apd : NULL, &apd_len);
	if (ret) {
		if (ret == -ETIMEDOUT)
			rdmae_err_set(err, ret, "connect to %s: timed out after %d ms", c->peer,
				      c->opts.timeout_ms);
		else if (got == RDMA_CM_EVENT_REJECTED)
			ret = rdmae_err_set(err, -ECONNREFUSED, "connection refused by %s (lane %u)",
					    c->peer, idx);
		else
			ret = rdmae_err_set(err, ret == -ECONNRESET ? ret : -ECONNABORTED,
					    "connect to %s: %s (status %d)", c->peer,
					    rdma_event_str(got), status);
		goto err_lane;
	}
	if (idx == 0) {
		/* The server's accept carries its nonce, which our proof needs. */
		struct rdmae_accept_pd ap;
		enum rdmae_wire_field f;

		if (rdmae_accept_pd_decode(apd, apd_len, &ap, &f)) {
			ret = rdmae_err_set(err, -EPROTONOSUPPORT, "connect to %s: its accept carries "
					    "no nonce (%s): not an rdmae server of version 2 or "
					    "later, which authenticate", c->peer,
					    rdmae_wire_field_name(f));
			goto err_lane;
		}
		pthread_mutex_lock(&c->lock);
		memcpy(c->nonce_s, ap.nonce, sizeof(c->nonce_s));
		c->peer_auth = ap.auth;
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_lock(&c->lock);
	c->lanes[idx].established = true;
	pthread_mutex_unlock(&c->lock);
	return 0;

err_lane:
	pthread_mutex_lock(&c->lock);
	rdmae_lane_destroy(&c->lanes[idx]);
	c->lanes[idx].id = NULL;
	pthread_mutex_unlock(&c->lock);
err_id:
	rdma_destroy_id(id);
	return ret;
}

static int client_negotiate(struct rdmae_conn *c, uint64_t deadline, struct rdmae_err *err)
{
	struct rdmae_neg_req *req = &c->neg_sent;
	uint8_t buf[RDMAE_NEG_REQ_SIZE];
	int ret = 0;

	if (getrandom(c->nonce_c, sizeof(c->nonce_c), 0) != (ssize_t)sizeof(c->nonce_c))
		return rdmae_err_set(err, -EIO, "negotiate with %s: getrandom for a nonce", c->peer);
	pthread_mutex_lock(&c->lock);
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
	req->auth = auth_mode(c);
	memcpy(req->nonce, c->nonce_c, sizeof(req->nonce));
	memset(req->proof, 0, sizeof(req->proof));
	if (req->auth != RDMAE_WIRE_AUTH_NONE)
		ret = rdmae_auth_proof(&c->key, RDMAE_ROLE_CLIENT, c->nonce_c, c->nonce_s, req,
				       NULL, req->proof);
	rdmae_neg_req_encode(buf, req);
	c->state = RDMAE_ST_NEGOTIATING;
	if (ret)
		rdmae_conn_fail_locked(c, -EIO, "negotiate with %s: HMAC-SHA256 failed in "
				       "libcrypto", c->peer);
	else if (rdmae_lane_send_raw_locked(&c->lanes[0], buf, sizeof(buf)))
		rdmae_conn_fail_locked(c, -EIO, "negotiate with %s: cannot post the request",
				       c->peer);
	ret = 0;
	while (c->state == RDMAE_ST_NEGOTIATING && !ret)
		ret = rdmae_conn_wait_locked(c, deadline);
	if (ret == -ETIMEDOUT && c->state == RDMAE_ST_NEGOTIATING)
		rdmae_conn_fail_locked(c, ret, "negotiate with %s: no response within %d ms",
				       c->peer, c->opts.timeout_ms);
	ret = rdmae_conn_check_locked(c, err);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

int rdmae_connect(struct rdmae_conn **out, const char *host, const char *port,
		  const struct rdmae_conn_opts *o, struct rdmae_err *err)
{
	struct rdma_addrinfo hints, *dst = NULL, *src = NULL;
	struct rdmae_conn *c;
	uint64_t deadline;
	unsigned int i;
	int ret;

	*out = NULL;
	if (!host || !port)
		return rdmae_err_set(err, -EINVAL, "connect: host and port are required");
	c = conn_alloc(o, false, err);
	if (!c)
		return err ? err->code : -ENOMEM;
	snprintf(c->peer, sizeof(c->peer), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
	{
		char what[sizeof(c->peer) + 16];

		snprintf(what, sizeof(what), "connection to %s", c->peer);
		ret = auth_setup(&c->opts, &c->key, what, err);
		if (ret)
			goto err_conn;
	}
	deadline = rdmae_deadline_after(c->opts.timeout_ms);

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
	ret = client_lane(c, 0, dst, src ? src->ai_src_addr : NULL, deadline, err);
	if (ret)
		goto err_ai;
	ret = client_negotiate(c, deadline, err);
	if (ret)
		goto err_ai;
	for (i = 1; i < c->neg.lanes; i++) {
		ret = client_lane(c, i, dst, src ? src->ai_src_addr : NULL, deadline, err);
		if (ret)
			goto err_ai;
	}
	pthread_mutex_lock(&c->lock);
	if (c->state == RDMAE_ST_LANES)
		c->state = RDMAE_ST_CONNECTED;
	ret = rdmae_conn_check_locked(c, err);
	c->cm_to_thread = true;
	c->last_heard_ns = rdmae_now_ns();
	rdmae_write_pace_start_locked(c);
	pthread_mutex_unlock(&c->lock);
	rdmae_conn_wake(c);
	if (ret)
		goto err_ai;
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

/* ---- server side ---- */

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
	opts_fill(&l->opts, o);
	ret = opts_check(&l->opts, err);
	if (ret)
		goto err_free;
	snprintf(l->addr, sizeof(l->addr), host && strchr(host, ':') ? "[%s]:%s" : "%s:%s",
		 host ? host : "*", port ? port : "0");
	{
		char what[sizeof(l->addr) + 16];

		snprintf(what, sizeof(what), "listener %s", l->addr);
		ret = auth_setup(&l->opts, &l->key, what, err);
		if (ret)
			goto err_free;
	}
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
		pthread_mutex_lock(&c->lock);
		/* Tokens exist only once the client proved itself (state LANES). */
		if (!found && c->state == RDMAE_ST_LANES &&
		    rdmae_auth_token_equal(c->lane_token[lane], token))
			found = c;
		pthread_mutex_unlock(&c->lock);
	}
	return found;
}

static void pending_remove(struct rdmae_listener *l, struct rdmae_conn *c)
{
	unsigned int i;

	for (i = 0; i < MAX_PENDING; i++)
		if (l->pending[i] == c)
			l->pending[i] = NULL;
	pthread_mutex_lock(&c->lock);
	c->notify_fd = -1;
	pthread_mutex_unlock(&c->lock);
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

static int accept_lane0(struct rdmae_listener *l, struct rdma_cm_id *id, struct rdmae_err *err)
{
	struct rdma_conn_param param;
	struct rdmae_accept_pd pd = { .version = RDMAE_VERSION };
	uint8_t pdbuf[RDMAE_ACCEPT_PD_SIZE];
	struct rdmae_conn *c;
	unsigned int slot;
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
	c = conn_alloc(&l->opts, true, err);
	if (!c)
		return err ? err->code : -ENOMEM;
	memcpy(c->peer, peer, sizeof(c->peer));
	c->key = l->key;
	/* A fresh nonce per connection: no proof of an earlier one is good for this one. */
	if (getrandom(c->nonce_s, sizeof(c->nonce_s), 0) != (ssize_t)sizeof(c->nonce_s)) {
		ret = rdmae_err_set(err, -EIO, "getrandom for a connection nonce");
		goto err_conn;
	}
	pd.auth = auth_mode(c);
	memcpy(pd.nonce, c->nonce_s, sizeof(pd.nonce));
	ret = setup_device(c, id->verbs, err);
	if (ret)
		goto err_conn;
	pthread_mutex_lock(&c->lock);
	ret = rdmae_lane_create(c, id, 0, err);
	c->state = RDMAE_ST_NEGOTIATING;
	c->notify_fd = l->wake_fd;
	/* A client that connects and then goes quiet must not hold a slot for ever. */
	c->setup_deadline_ns = rdmae_deadline_after(c->opts.timeout_ms);
	pthread_mutex_unlock(&c->lock);
	if (ret)
		goto err_conn;
	rdmae_accept_pd_encode(pdbuf, &pd);
	conn_param_init(&param, pdbuf, RDMAE_ACCEPT_PD_SIZE);
	if (rdma_accept(id, &param)) {
		ret = rdmae_err_set(err, -errno, "rdma_accept from %s: %s", c->peer, strerror(errno));
		goto err_conn;
	}
	l->pending[slot] = c;
	return 0;

err_conn:
	/* The cm_id is the caller's to reject and destroy. */
	pthread_mutex_lock(&c->lock);
	rdmae_lane_destroy(&c->lanes[0]);
	c->nlanes = 0;
	pthread_mutex_unlock(&c->lock);
	rdmae_conn_destroy(c);
	return ret;
}

static int accept_lane(struct rdmae_listener *l, struct rdma_cm_id *id,
		       const struct rdmae_lane_pd *pd, struct rdmae_err *err)
{
	struct rdmae_conn *c = pending_by_token(l, pd->lane, pd->conn_token);
	struct rdma_conn_param param;
	uint8_t pdbuf[RDMAE_LANE_PD_SIZE];
	int ret;

	if (!c)
		return rdmae_err_set(err, -ENOENT, "lane %u: no pending connection with that token",
				     pd->lane);
	pthread_mutex_lock(&c->lock);
	if (c->state != RDMAE_ST_LANES || pd->lane >= c->neg.lanes || c->lanes[pd->lane].conn) {
		pthread_mutex_unlock(&c->lock);
		return rdmae_err_set(err, -EPROTO, "lane %u from %s not expected", pd->lane,
				     c->peer);
	}
	if (id->verbs != c->verbs) {
		pthread_mutex_unlock(&c->lock);
		return rdmae_err_set(err, -EXDEV, "lane %u from %s arrived on another device",
				     pd->lane, c->peer);
	}
	ret = rdmae_lane_create(c, id, pd->lane, err);
	if (!ret)
		data_lane_credits(c, &c->lanes[pd->lane]);
	pthread_mutex_unlock(&c->lock);
	if (ret)
		return ret;
	rdmae_lane_pd_encode(pdbuf, pd);
	conn_param_init(&param, pdbuf, RDMAE_LANE_PD_SIZE);
	if (rdma_accept(id, &param)) {
		ret = rdmae_err_set(err, -errno, "rdma_accept lane %u from %s: %s", pd->lane, c->peer,
				    strerror(errno));
		pthread_mutex_lock(&c->lock);
		rdmae_lane_destroy(&c->lanes[pd->lane]);
		c->lanes[pd->lane].id = NULL;
		pthread_mutex_unlock(&c->lock);
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
		int ret = bad ? -EPROTO : pd.lane == 0 ? accept_lane0(l, id, &lerr)
						       : accept_lane(l, id, &pd, &lerr);

		if (ret) {
			/* Refused before it was pending: logged, never the caller's failure. */
			fprintf(stderr, "rdmae: listener %s: refused a connection: %s\n", l->addr,
				bad ? "its private data is not an rdmae lane request" : lerr.msg);
			rdma_reject(id, NULL, 0);
			rdma_destroy_id(id);
		}
		return;
	}
	if (id == l->id || !id->context)
		return;
	{
		struct rdmae_lane *lane = id->context;
		struct rdmae_conn *c = lane->conn;

		pthread_mutex_lock(&c->lock);
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
		pthread_mutex_unlock(&c->lock);
	}
}

/* A pending connection is done when negotiated with every lane up; failed past its deadline. */
static int pending_ready(struct rdmae_conn *c)
{
	int r = 0;

	pthread_mutex_lock(&c->lock);
	if (c->state == RDMAE_ST_LANES && lanes_established(c) == c->neg.lanes &&
	    c->nlanes == c->neg.lanes)
		r = 1;
	else if (c->state != RDMAE_ST_ERROR && rdmae_now_ns() >= c->setup_deadline_ns)
		rdmae_conn_fail_locked(c, -ETIMEDOUT, "setup of %s: not negotiated with all its "
				       "lanes within %d ms", c->peer, c->opts.timeout_ms);
	if (c->state == RDMAE_ST_ERROR)
		r = -1;
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int finish_accept(struct rdmae_listener *l, struct rdmae_conn *c, struct rdmae_err *err)
{
	unsigned int i;
	int ret = 0;

	pending_remove(l, c);
	/* From now on the connection's own progress thread hears its CM events. */
	for (i = 0; i < c->nlanes && !ret; i++)
		if (rdma_migrate_id(c->lanes[i].id, c->cm_ch))
			ret = rdmae_err_set(err, -errno, "rdma_migrate_id lane %u of %s: %s", i,
					    c->peer, strerror(errno));
	pthread_mutex_lock(&c->lock);
	/* The connection may have failed since it was found ready: keep that error. */
	if (!ret)
		ret = rdmae_conn_check_locked(c, err);
	if (!ret) {
		c->state = RDMAE_ST_CONNECTED;
		rdmae_trace(c, "accepted with %u lanes", c->nlanes);
		c->cm_to_thread = true;
		c->last_heard_ns = rdmae_now_ns();
		rdmae_write_pace_start_locked(c);
	}
	pthread_mutex_unlock(&c->lock);
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
				pthread_mutex_lock(&c->lock);
				rdmae_conn_check_locked(c, &e);
				pthread_mutex_unlock(&c->lock);
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
			int ms = ms_left(deadline);
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

/* ---- common ---- */

void rdmae_conn_abort(struct rdmae_conn *c, int code, const char *why)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	/* Whatever was already posted (a CANCEL with its reason) still reaches the peer. */
	rdmae_lane_post_all_locked(c);
	c->linger = rdmae_conn_sends_pending(c);
	rdmae_conn_fail_locked(c, code, "%s", why ? why : "aborted");
	pthread_mutex_unlock(&c->lock);
	rdmae_conn_wake(c);
}

int rdmae_conn_error(struct rdmae_conn *c, struct rdmae_err *err)
{
	int ret;

	pthread_mutex_lock(&c->lock);
	ret = rdmae_conn_check_locked(c, err);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

const struct rdmae_negotiated *rdmae_conn_negotiated(const struct rdmae_conn *c)
{
	return &c->neg;
}

const char *rdmae_conn_peer(const struct rdmae_conn *c)
{
	return c->peer;
}

int rdmae_conn_lane_stats(struct rdmae_conn *c, unsigned int lane, struct rdmae_lane_stats *out)
{
	if (lane >= c->nlanes)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	*out = c->lanes[lane].st;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int rdmae_conn_pace_stats(struct rdmae_conn *c, struct rdmae_pace_stats *out)
{
	pthread_mutex_lock(&c->lock);
	out->budget_bytes = c->pace.budget;
	out->max_inflight_bytes = c->pace.max_inflight;
	out->bandwidth = c->pace.bw;
	out->base_latency_ns = c->pace.base_ns;
	out->stalls = c->pace.stalls;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void rdmae_conn_set_pin_limit(struct rdmae_conn *c, size_t bytes)
{
	pthread_mutex_lock(&c->lock);
	c->pin_limit = bytes;
	pthread_mutex_unlock(&c->lock);
}

size_t rdmae_conn_pinned(struct rdmae_conn *c)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->pinned;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/*
 * Revoking the peer's remote write access without deregistering: the
 * destination does it before its final verification, so that no late or
 * stray WRITE can change memory after it was checked. Deregistration would
 * unpin, which for a large guest takes hundreds of milliseconds and would
 * land inside the downtime; clearing the QPs' access flags is one modify
 * per lane.
 */
int rdmae_conn_revoke_remote_write(struct rdmae_conn *c, struct rdmae_err *err)
{
	unsigned int i;
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	for (i = 0; i < c->nlanes && !ret; i++) {
		struct ibv_qp_init_attr init;
		struct ibv_qp_attr attr;
		struct ibv_qp *qp = c->lanes[i].qp;
		int r;

		if (!qp)
			continue;
		memset(&attr, 0, sizeof(attr));
		attr.qp_access_flags = 0;
		r = ibv_modify_qp(qp, &attr, IBV_QP_ACCESS_FLAGS);
		if (!r)
			continue;
		/* A QP in the error state (the connection failed) accepts no WRITE either. */
		memset(&attr, 0, sizeof(attr));
		if (!ibv_query_qp(qp, &attr, IBV_QP_STATE, &init) && attr.qp_state == IBV_QPS_ERR)
			continue;
		ret = rdmae_err_set(err, r > 0 ? -r : -EIO,
				    "revoke remote write on lane %u to %s: %s", i, c->peer,
				    strerror(r > 0 ? r : EIO));
	}
	if (!ret)
		rdmae_trace(c, "remote write revoked on %u lanes", c->nlanes);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

bool rdmae_conn_sends_pending(const struct rdmae_conn *c)
{
	unsigned int i;

	for (i = 0; i < c->nlanes; i++)
		if (c->lanes[i].qp && c->lanes[i].tx_tail != c->lanes[i].tx_head)
			return true;
	return false;
}

void rdmae_conn_destroy(struct rdmae_conn *c)
{
	struct rdmae_rxmsg *m;
	unsigned int i;
	uint64_t deadline;

	if (!c)
		return;
	/*
	 * Teardown order: pending sends, disconnect, thread, QPs, MRs of regions,
	 * rings, CQ, PD, ids. The QPs go before the regions: a QP's destruction
	 * releases the chunk pins of the WRs it will never complete, and a chunk
	 * may only be deregistered once nothing can still read it.
	 */
	pthread_mutex_lock(&c->lock);
	deadline = rdmae_deadline_after(SEND_DRAIN_MS);
	while (c->thread_started && rdmae_conn_sends_pending(c) &&
	       (c->state != RDMAE_ST_ERROR || c->linger))
		if (rdmae_conn_wait_locked(c, deadline))
			break;
	rdmae_conn_disconnect_locked(c);
	if (c->state != RDMAE_ST_ERROR) {
		c->state = RDMAE_ST_ERROR;
		c->err.code = -ESHUTDOWN;
		snprintf(c->err.msg, sizeof(c->err.msg), "connection to %s closed", c->peer);
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);

	rdmae_progress_stop(c);
	for (i = 0; i < c->nlanes; i++)
		rdmae_lane_destroy_qp(&c->lanes[i]);
	rdmae_regions_destroy_all(c);
	for (i = 0; i < c->nlanes; i++)
		rdmae_lane_destroy(&c->lanes[i]);
	if (c->cq) {
		ibv_ack_cq_events(c->cq, c->cq_events);
		ibv_destroy_cq(c->cq);
	}
	if (c->comp_ch)
		ibv_destroy_comp_channel(c->comp_ch);
	if (c->pd)
		ibv_dealloc_pd(c->pd);
	for (i = 0; i < c->nlanes; i++)
		if (c->lanes[i].id)
			rdma_destroy_id(c->lanes[i].id);
	rdma_destroy_event_channel(c->cm_ch);
	while ((m = c->q_head)) {
		c->q_head = m->next;
		free(m->data);
		free(m);
	}
	rdmae_reasm_reset(&c->reasm);
	close(c->wake_fd);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	rdmae_key_wipe(&c->key);
	free(c);
}
