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
	pthread_condattr_t ca;

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
	/* Waits are bounded against CLOCK_MONOTONIC so a clock step cannot stretch a timeout. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
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
		rdmae_conn_eventfd_kick(c->notify_fd);
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
	if (!c)
		return;
	rdmae_conn_lock(c);
	/* Whatever was already posted (a CANCEL with its reason) still reaches the peer. */
	rdmae_lane_post_all_locked(c);
	c->linger = rdmae_conn_sends_pending_locked(c);
	rdmae_conn_fail_locked(c, code, "%s", why ? why : "aborted");
	rdmae_conn_unlock(c);
	rdmae_conn_wake(c);
}

int rdmae_conn_error(struct rdmae_conn *c, struct rdmae_err *err)
{
	int ret;

	rdmae_conn_lock(c);
	ret = rdmae_conn_check_locked(c, err);
	rdmae_conn_unlock(c);
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
	rdmae_conn_lock(c);
	*out = c->lanes[lane].st;
	rdmae_conn_unlock(c);
	return 0;
}

int rdmae_conn_pace_stats(struct rdmae_conn *c, struct rdmae_pace_stats *out)
{
	rdmae_conn_lock(c);
	out->budget_bytes = c->pace.budget;
	out->max_inflight_bytes = c->pace.max_inflight;
	out->bandwidth = c->pace.bw;
	out->base_latency_ns = c->pace.base_ns;
	out->stalls = c->pace.stalls;
	rdmae_conn_unlock(c);
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
	rdmae_conn_unlock(c);
	return ret;
}

bool rdmae_conn_sends_pending_locked(const struct rdmae_conn *c)
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
	 * Teardown order: pending sends, disconnect, thread, QPs, MRs of regions
	 * made on it (prepared ones are only detached), rings, CQ, PD, ids. The
	 * QPs go before the regions: a QP's destruction releases the chunk pins
	 * of the WRs it will never complete, and a chunk may only be
	 * deregistered once nothing can still read it.
	 */
	rdmae_conn_lock(c);
	deadline = rdmae_deadline_after(SEND_DRAIN_MS);
	while (c->thread_started && rdmae_conn_sends_pending_locked(c) &&
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
	rdmae_conn_unlock(c);

	rdmae_progress_stop(c);
	for (i = 0; i < c->nlanes; i++)
		rdmae_lane_destroy_qp(&c->lanes[i]);
	rdmae_regions_detach_all(c);
	for (i = 0; i < c->nlanes; i++)
		rdmae_lane_destroy(&c->lanes[i]);
	if (c->cq) {
		ibv_ack_cq_events(c->cq, c->cq_events);
		ibv_destroy_cq(c->cq);
	}
	if (c->comp_ch)
		ibv_destroy_comp_channel(c->comp_ch);
	/* The PD is the device's: it goes with the last reference (prepared regions hold one). */
	rdmae_dev_put(c->dev);
	rdmae_mr_cache_destroy(c->mrc);
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
