/* SPDX-License-Identifier: MIT */
/*
 * The connection core: allocation, the device-wide resources, the sticky
 * error and the waits on it, the accessors, and teardown. Setup is
 * connect.c's (client) and listen.c's (server), negotiation negotiate.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define SEND_DRAIN_MS 2000

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

struct rdmae_conn *rdmae_conn_alloc(const struct rdmae_conn_opts *o, bool server,
				    struct rdmae_err *err)
{
	const char *dbg = getenv("RDMAE_DEBUG");

	struct rdmae_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		rdmae_err_set(err, -ENOMEM, "connection: out of memory");
		return NULL;
	}
	rdmae_opts_fill(&c->opts, o);
	if (rdmae_opts_check(&c->opts, err))
		goto err_free;
	rdmae_opts_limits(&c->limits, &c->opts);
	c->server = server;
	c->debug = dbg && *dbg && *dbg != '0';
	if (rdmae_faults_parse(getenv("RDMAE_TEST_FAULTS"), &c->faults, err))
		goto err_free;
	c->numa_node = -1;
	c->notify_fd = -1;
	snprintf(c->peer, sizeof(c->peer), "?");
	c->mrc = rdmae_mr_cache_create(0);
	if (!c->mrc) {
		rdmae_err_set(err, -ENOMEM, "connection: out of memory");
		goto err_free;
	}
	c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->wake_fd < 0) {
		rdmae_err_set(err, -errno, "eventfd for a connection: %s", strerror(errno));
		goto err_mrc;
	}
	c->cm_ch = rdma_create_event_channel();
	if (!c->cm_ch) {
		rdmae_err_set(err, -errno, "rdma_create_event_channel: %s", strerror(errno));
		goto err_fd;
	}
	fcntl(c->cm_ch->fd, F_SETFL, fcntl(c->cm_ch->fd, F_GETFL) | O_NONBLOCK);
	pthread_mutex_init(&c->lock, NULL);
	rdmae_conn_cond_init(&c->cond);
	/* Every lane slot's lock and cond, now: a failure wakeup may walk them while lanes are made. */
	for (unsigned int i = 0; i < RDMAE_MAX_LANES; i++)
		rdmae_lane_sync_init(&c->lanes[i]);
	return c;

err_fd:
	close(c->wake_fd);
err_mrc:
	rdmae_mr_cache_destroy(c->mrc);
err_free:
	free(c);
	return NULL;
}

/* Both eventfds are non-blocking counters: a failed write means one is already pending. */
void rdmae_conn_eventfd_kick(int fd)
{
	uint64_t one = 1;
	ssize_t r = write(fd, &one, sizeof(one));

	(void)r;
}

void rdmae_conn_wake(struct rdmae_conn *c)
{
	rdmae_conn_eventfd_kick(c->wake_fd);
}

void rdmae_conn_heard(struct rdmae_conn *c, uint64_t now, const char *what)
{
	uint64_t probe = rdmae_conn_probe_ns(c);

	if (probe && what)
		rdmae_trace(c, "keepalive: answered by %s after %.1f ms", what,
			    (double)(now - probe) / 1e6);
	atomic_store_explicit(&c->last_heard_ns, now, memory_order_relaxed);
	atomic_store_explicit(&c->probe_ns, 0, memory_order_relaxed);
}

void rdmae_conn_pace_start_locked(struct rdmae_conn *c)
{
	uint64_t rw = c->neg.max_rw_size;

	/*
	 * Four full-size WRITEs per lane at least: with half the budget as the
	 * refill mark, each lane keeps one on the wire and one ready. Never more
	 * than the WR bound allows. Each lane paces its own share, under its own
	 * lock: the connection's budget is their sum, and a lane's writer waits
	 * only for its own lane's completions. Setup calls this before any lane
	 * carries WRITEs, so the lanes' locks are not needed here.
	 */
	for (unsigned int i = 0; i < c->nlanes; i++)
		rdmae_pace_init(&c->lanes[i].pace, 4ull * rw, (uint64_t)c->opts.writes_in_flight * rw);
}

/* The first failure: its code and message stay, later ones are dropped. */
static void fail_va_locked(struct rdmae_conn *c, bool after_sends, int code, const char *fmt,
			   va_list ap) RDMAE_REQUIRES(c->lock)
{
	if (rdmae_conn_failed(c))
		return;
	/* The error before the state: a reader that sees the state failed reads err without the lock. */
	c->err.code = code < 0 ? code : -EIO;
	vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
	atomic_store_explicit(&c->state, after_sends ? RDMAE_ST_DISCONNECTING : RDMAE_ST_ERROR,
			      memory_order_release);
	rdmae_trace(c, "error %d: %s%s", c->err.code, c->err.msg,
		    after_sends ? " (queued sends leave first)" : "");
	/*
	 * Disconnecting moves the QPs to error, which flushes whatever is
	 * posted. DISCONNECTING first lets the queued sends go: the progress
	 * thread disconnects once they are out or linger_until_ns has passed.
	 */
	if (after_sends)
		c->linger_until_ns = rdmae_now_ns() + SEND_DRAIN_MS * 1000000ull;
	else
		rdmae_conn_disconnect_locked(c);
	pthread_cond_broadcast(&c->cond);
	/*
	 * The lanes' waiters: a broadcast now wakes those already waiting, but
	 * the caller may hold a lane's lock and must not take another, so one
	 * that checked the state just before sleeps through it. The progress
	 * thread, woken here, broadcasts again under each lane's lock
	 * (rdmae_conn_wake_lanes), as do abort and the callers that return the
	 * error: no wakeup is lost.
	 */
	for (unsigned int i = 0; i < RDMAE_MAX_LANES; i++)
		if (c->lanes[i].sync_init)
			pthread_cond_broadcast(&c->lanes[i].cond);
	rdmae_conn_wake(c);
	if (c->notify_fd >= 0)
		rdmae_conn_eventfd_kick(c->notify_fd);
}

void rdmae_conn_fail_locked(struct rdmae_conn *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fail_va_locked(c, false, code, fmt, ap);
	va_end(ap);
}

void rdmae_conn_fail(struct rdmae_conn *c, int code, const char *fmt, ...)
{
	va_list ap;

	rdmae_conn_lock(c);
	va_start(ap, fmt);
	fail_va_locked(c, false, code, fmt, ap);
	va_end(ap);
	rdmae_conn_unlock(c);
}

void rdmae_conn_fail_after_sends_locked(struct rdmae_conn *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fail_va_locked(c, true, code, fmt, ap);
	va_end(ap);
}

void rdmae_conn_disconnect_locked(struct rdmae_conn *c)
{
	for (unsigned int i = 0; i < c->nlanes; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		if (l->live && l->qp.ibqp && l->established)
			rdma_disconnect(l->qp.id);
	}
	if (c->state == RDMAE_ST_DISCONNECTING)
		c->state = RDMAE_ST_ERROR;
}

void rdmae_conn_wake_lanes(struct rdmae_conn *c)
{
	for (unsigned int i = 0; i < RDMAE_MAX_LANES; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		if (!l->sync_init)
			continue;
		/* Under the lock: a waiter is either asleep already or has yet to check the state. */
		rdmae_lane_lock(l);
		pthread_cond_broadcast(&l->cond);
		rdmae_lane_unlock(l);
	}
}

void rdmae_conn_connected_locked(struct rdmae_conn *c)
{
	/* CONNECTED means negotiated and authenticated (attach relies on it): only from LANES. */
	if (c->state != RDMAE_ST_LANES) {
		if (!rdmae_conn_failed(c))
			rdmae_conn_fail_locked(c, -EPROTO, "connection to %s: setup ended in state %d, "
					       "not negotiated", c->peer, (int)c->state);
		return;
	}
	c->state = RDMAE_ST_CONNECTED;
	c->cm_to_thread = true;
	atomic_store_explicit(&c->last_heard_ns, rdmae_now_ns(), memory_order_relaxed);
	rdmae_conn_pace_start_locked(c);
}

int rdmae_conn_check(const struct rdmae_conn *c, struct rdmae_err *err)
{
	if (!rdmae_conn_failed(c))
		return 0;
	if (err)
		*err = c->err;
	return c->err.code;
}

void rdmae_conn_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t ca;

	/* Waits are bounded against CLOCK_MONOTONIC so a clock step cannot stretch a timeout. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
}

int rdmae_conn_cond_wait(pthread_cond_t *cv, pthread_mutex_t *m, uint64_t deadline_ns)
{
	struct timespec ts;

	if (!deadline_ns) {
		pthread_cond_wait(cv, m);
		return 0;
	}
	ts.tv_sec = (time_t)(deadline_ns / 1000000000ull);
	ts.tv_nsec = (long)(deadline_ns % 1000000000ull);
	if (pthread_cond_timedwait(cv, m, &ts) == ETIMEDOUT)
		return -ETIMEDOUT;
	return 0;
}

int rdmae_conn_wait_locked(struct rdmae_conn *c, uint64_t deadline_ns)
{
	return rdmae_conn_cond_wait(&c->cond, &c->lock, deadline_ns);
}

/*
 * Device-wide resources, made when lane 0 knows which device it is on: the
 * device given in the options (its PD), or one of the connection's own.
 */
int rdmae_conn_setup_device(struct rdmae_conn *c, struct ibv_context *verbs,
			    struct rdmae_err *err)
{
	const char *dev = ibv_get_device_name(verbs->device);
	uint32_t per_lane = c->opts.credits * 2u + c->opts.writes_in_flight + 1;
	uint32_t cqe = per_lane * c->opts.lanes;
	int ret;

	c->verbs = verbs;
	if (c->opts.dev) {
		if (c->opts.dev->verbs != verbs)
			return rdmae_err_set(err, -EXDEV, "connection to %s: rdma_cm placed it on "
					     "device %s, but its options give device %s",
					     c->peer, dev, c->opts.dev->name);
		c->dev = rdmae_dev_get(c->opts.dev);
	} else {
		ret = rdmae_dev_from_verbs(&c->dev, verbs, err);
		if (ret)
			return ret;
	}
	c->dev_attr = c->dev->attr;
	c->numa_node = c->dev->numa_node;
	c->pd = c->dev->pd;
	if (cqe > (uint32_t)c->dev_attr.max_cqe) {
		ret = rdmae_err_set(err, -EINVAL,
				    "%u lanes x %u completions = %u exceeds max_cqe %d on %s",
				    c->opts.lanes, per_lane, cqe, c->dev_attr.max_cqe, dev);
		goto err_pd;
	}
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
	rdmae_dev_put(c->dev);
	c->dev = NULL;
	c->pd = NULL;
	return ret;
}

void rdmae_conn_abort(struct rdmae_conn *c, int code, const char *why)
{
	bool pending;

	if (!c)
		return;
	/* Whatever was already queued (a CANCEL with its reason) still reaches the peer. */
	for (unsigned int i = 0; i < c->nlanes; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		rdmae_lane_lock(l);
		rdmae_lane_post_locked(l);
		rdmae_lane_unlock(l);
	}
	pending = rdmae_conn_sends_pending(c);
	rdmae_conn_lock(c);
	if (pending)
		rdmae_conn_fail_after_sends_locked(c, code, "%s", why ? why : "aborted");
	else
		rdmae_conn_fail_locked(c, code, "%s", why ? why : "aborted");
	rdmae_conn_unlock(c);
	rdmae_conn_wake_lanes(c);
	rdmae_conn_wake(c);
}

int rdmae_conn_error(struct rdmae_conn *c, struct rdmae_err *err)
{
	return rdmae_conn_check(c, err);
}

const struct rdmae_negotiated *rdmae_conn_negotiated(const struct rdmae_conn *c)
{
	return &c->neg;
}

unsigned int rdmae_conn_lanes(const struct rdmae_conn *c)
{
	/* Written only while the connection is set up, before its caller has it. */
	return c->nlanes;
}

const char *rdmae_conn_peer(const struct rdmae_conn *c)
{
	return c->peer;
}

const struct rdmae_dev *rdmae_conn_dev(const struct rdmae_conn *c)
{
	return c->dev;
}

void rdmae_conn_setup_times(const struct rdmae_conn *c, struct rdmae_setup_times *t)
{
	*t = c->setup;
}

int rdmae_conn_lane_stats(struct rdmae_conn *c, unsigned int lane, struct rdmae_lane_stats *out)
{
	struct rdmae_lane *l;

	if (lane >= c->nlanes)
		return -EINVAL;
	l = &c->lanes[lane];
	rdmae_lane_lock(l);
	*out = l->qp.st;
	out->one_sided_done = l->pace.delivered;
	rdmae_lane_unlock(l);
	return 0;
}

/*
 * The connection's pacing is its lanes' together: budgets, high-water marks,
 * bandwidths and stalls add up; the base latency is the lowest measured.
 */
int rdmae_conn_pace_stats(struct rdmae_conn *c, struct rdmae_pace_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned int i = 0; i < c->nlanes; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		rdmae_lane_lock(l);
		out->budget_bytes += l->pace.budget;
		out->max_inflight_bytes += l->pace.max_inflight;
		out->bandwidth += l->pace.bw;
		if (l->pace.base_ns && (!out->base_latency_ns ||
					l->pace.base_ns < out->base_latency_ns))
			out->base_latency_ns = l->pace.base_ns;
		out->stalls += l->pace.stalls;
		rdmae_lane_unlock(l);
	}
	return 0;
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

	rdmae_conn_lock(c);
	for (i = 0; i < c->nlanes && !ret; i++) {
		struct ibv_qp_init_attr init;
		struct ibv_qp_attr attr;
		struct ibv_qp *qp = c->lanes[i].live ? c->lanes[i].qp.ibqp : NULL;
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
	rdmae_conn_unlock(c);
	return ret;
}

bool rdmae_conn_sends_pending(struct rdmae_conn *c)
{
	bool pending = false;

	for (unsigned int i = 0; i < c->nlanes && !pending; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		rdmae_lane_lock(l);
		rdmae_lane_qp_held(l, &l->qp);
		pending = l->live && rdmae_qp_sends_pending_locked(&l->qp);
		rdmae_lane_unlock(l);
	}
	return pending;
}

void rdmae_conn_destroy(struct rdmae_conn *c)
{
	unsigned int i;
	uint64_t deadline;

	if (!c)
		return;
	/*
	 * Teardown order: pending sends, disconnect, thread, QPs, MRs of
	 * regions made on it (prepared ones are only detached), each lane's
	 * rings and cm_id, CQ, the device reference (its PD). The QPs go
	 * before the regions: a QP's destruction releases the chunk pins of
	 * the WRs it will never complete, and a chunk may only be
	 * deregistered once nothing can still read it.
	 */
	deadline = rdmae_deadline_after(SEND_DRAIN_MS);
	/* Pending sends leave first: each lane's, in turn, under its own lock and cond. */
	for (i = 0; i < c->nlanes && c->thread_started; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		rdmae_lane_lock(l);
		rdmae_lane_qp_held(l, &l->qp);
		while (l->live && rdmae_qp_sends_pending_locked(&l->qp) &&
		       (!rdmae_conn_failed(c) || c->state == RDMAE_ST_DISCONNECTING))
			if (rdmae_lane_wait_locked(l, deadline))
				break;
		rdmae_lane_unlock(l);
	}
	rdmae_conn_lock(c);
	rdmae_conn_disconnect_locked(c);
	if (!rdmae_conn_failed(c)) {
		c->err.code = -ESHUTDOWN;
		snprintf(c->err.msg, sizeof(c->err.msg), "connection to %s closed", c->peer);
	}
	atomic_store_explicit(&c->state, RDMAE_ST_CLOSED, memory_order_release);
	pthread_cond_broadcast(&c->cond);
	rdmae_conn_unlock(c);
	rdmae_conn_wake_lanes(c);

	rdmae_progress_stop(c);
	/* Nobody reaps any more: no drain, and no lock needed from here on. */
	for (i = 0; i < c->nlanes; i++)
		rdmae_qp_destroy_qp(&c->lanes[i].qp);
	rdmae_regions_detach_all(c);
	for (i = 0; i < c->nlanes; i++) {
		rdmae_qp_destroy(&c->lanes[i].qp);
		rdmae_msg_lane_clear(&c->lanes[i]);
	}
	if (c->cq) {
		ibv_ack_cq_events(c->cq, c->cq_events);
		ibv_destroy_cq(c->cq);
	}
	if (c->comp_ch)
		ibv_destroy_comp_channel(c->comp_ch);
	/* The PD is the device's: it goes with the last reference (prepared regions hold one). */
	rdmae_dev_put(c->dev);
	rdmae_mr_cache_destroy(c->mrc);
	rdma_destroy_event_channel(c->cm_ch);
	close(c->wake_fd);
	for (i = 0; i < RDMAE_MAX_LANES; i++)
		if (c->lanes[i].sync_init) {
			pthread_cond_destroy(&c->lanes[i].cond);
			pthread_mutex_destroy(&c->lanes[i].lock);
		}
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	rdmae_key_wipe(&c->key);
	free(c);
}
