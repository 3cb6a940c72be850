/* SPDX-License-Identifier: MIT */
/*
 * The progress thread of a connection: it sleeps in poll() on the
 * completion channel, the CM event channel and a wake-up eventfd, reaps
 * completions in batches, answers response-requested messages, sends credit
 * grants, and runs the keepalive timer. Event-driven rather than busy
 * polling: with long WRITE runs and selective signalling there are few
 * completions per byte, so an interrupt per batch costs little CPU.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include <numa.h>

#include "internal.h"

#define WC_BATCH 32
#define CQ_ACK_BATCH 64

void rdmae_progress_reap(struct rdmae_conn *c)
{
	struct ibv_wc wc[WC_BATCH];
	struct ibv_cq *cq;
	void *ctx;
	int n, i;

	/* cq_events is the thread's (or, with it stopped, the one reaping in its place). */
	while (!ibv_get_cq_event(c->comp_ch, &cq, &ctx)) {
		if (++c->cq_events >= CQ_ACK_BATCH) {
			ibv_ack_cq_events(c->cq, c->cq_events);
			c->cq_events = 0;
		}
	}
	/* Re-arm before the last poll, so a completion between the two is not lost. */
	ibv_req_notify_cq(c->cq, 0);
	do {
		n = ibv_poll_cq(c->cq, WC_BATCH, wc);
		/* Each done takes its own lane's lock: no lock is held here. */
		for (i = 0; i < n; i++) {
			struct rdmae_cqe *cqe = (struct rdmae_cqe *)(uintptr_t)wc[i].wr_id;

			cqe->done(cqe, &wc[i]);
		}
	} while (n > 0);
	if (n < 0)
		rdmae_conn_fail(c, -EIO, "ibv_poll_cq on the connection to %s failed", c->peer);
}

void rdmae_progress_cm_events(struct rdmae_conn *c)
{
	struct rdma_cm_event *ev;

	rdmae_conn_lock(c);
	while (c->cm_to_thread && !rdma_get_cm_event(c->cm_ch, &ev)) {
		enum rdma_cm_event_type type = ev->event;
		struct rdmae_lane *l = rdmae_lane_of(ev->id);
		int status = ev->status;

		rdma_ack_cm_event(ev);
		rdmae_trace(c, "cm event %s on lane %u (status %d)", rdma_event_str(type),
			    l ? l->idx : 0, status);
		switch (type) {
		case RDMA_CM_EVENT_DISCONNECTED:
			rdmae_conn_fail_locked(c, -ECONNRESET,
					       "connection to %s closed by the peer (lane %u)",
					       c->peer, l ? l->idx : 0);
			break;
		case RDMA_CM_EVENT_DEVICE_REMOVAL:
			rdmae_conn_fail_locked(c, -ENODEV, "RDMA device of the connection to %s "
					       "was removed", c->peer);
			break;
		default:
			break;
		}
	}
	rdmae_conn_unlock(c);
}

void rdmae_progress_housekeeping(struct rdmae_conn *c)
{
	enum rdmae_conn_state st = c->state;
	unsigned int i;

	/* A failure: every lane's waiters woken under its lock (see internal.h, Locking). */
	if (rdmae_conn_failed(c)) {
		rdmae_conn_wake_lanes(c);
		return;
	}
	if (st != RDMAE_ST_CONNECTED && st != RDMAE_ST_LANES)
		return;
	for (i = 0; i < RDMAE_MAX_LANES; i++) {
		struct rdmae_lane *l = &c->lanes[i];

		if (!l->sync_init)
			continue;
		rdmae_lane_lock(l);
		if (l->live && l->qp.ibqp && l->established) {
			rdmae_msg_repost_parked_locked(l);
			rdmae_msg_grant_locked(l);
			rdmae_lane_post_locked(l);
		}
		rdmae_lane_unlock(l);
	}
}

/* Returns the poll timeout in ms until the next keepalive deadline (-1: none). */
int rdmae_progress_keepalive(struct rdmae_conn *c)
{
	struct rdmae_lane *l0 = &c->lanes[0];
	uint64_t now, idle_ns, tmo_ns, due, probe, heard, idle;

	if (c->state != RDMAE_ST_CONNECTED || c->opts.keepalive_ms <= 0)
		return -1;
	now = rdmae_now_ns();
	idle_ns = (uint64_t)c->opts.keepalive_ms * 1000000ull;
	tmo_ns = (uint64_t)c->opts.keepalive_timeout_ms * 1000000ull;
	probe = rdmae_conn_probe_ns(c);
	heard = rdmae_conn_last_heard_ns(c);
	/* A completion may stamp after now was read: then the peer was heard just now. */
	idle = heard < now ? now - heard : 0;
	if (probe) {
		if (probe <= now && now - probe >= tmo_ns) {
			rdmae_conn_fail(c, -ETIMEDOUT, "keepalive: no answer from %s within %d ms",
					c->peer, c->opts.keepalive_timeout_ms);
			return -1;
		}
		due = probe + tmo_ns;
	} else if (idle >= idle_ns) {
		/*
		 * Probe: an empty message asking for a reply, which proves the
		 * peer's process runs. Without a usable credit (a reader that is
		 * merely slow withholds them, and must not be taken for a dead
		 * peer) a zero-length RDMA WRITE asks the peer's NIC instead:
		 * no credit, and a dead host or path fails it by retry
		 * exhaustion. Lane 0's lock, not the connection's.
		 */
		rdmae_lane_lock(l0);
		rdmae_lane_qp_held(l0, &l0->qp);
		if (!rdmae_msg_lane_send_locked(l0, NULL, 0, 0, RDMAE_FLAG_RESPONSE_REQUESTED, 0,
						true, 0)) {
			rdmae_qp_post_chain_locked(&l0->qp);
			atomic_store_explicit(&c->probe_ns, now, memory_order_relaxed);
			rdmae_trace(c, "keepalive: probe sent after %.0f ms idle", (double)idle / 1e6);
			due = now + tmo_ns;
		} else if (l0->established && !rdmae_qp_probe_write_locked(&l0->qp)) {
			atomic_store_explicit(&c->probe_ns, now, memory_order_relaxed);
			rdmae_trace(c, "keepalive: no credit, zero-length WRITE sent after %.0f ms "
				    "idle", (double)idle / 1e6);
			due = now + tmo_ns;
		} else {
			due = now + idle_ns;
		}
		rdmae_lane_unlock(l0);
	} else {
		due = heard + idle_ns;
	}
	return due <= now ? 0 : (int)((due - now) / 1000000ull) + 1;
}

int rdmae_progress_disconnecting(struct rdmae_conn *c)
{
	uint64_t now;
	bool pending;
	int tmo = -1;

	if (c->state != RDMAE_ST_DISCONNECTING)
		return -1;
	/* The lanes first, each under its own lock; then the connection's lock alone. */
	pending = rdmae_conn_sends_pending(c);
	now = rdmae_now_ns();
	rdmae_conn_lock(c);
	if (c->state == RDMAE_ST_DISCONNECTING) {
		if (!pending || now >= c->linger_until_ns)
			rdmae_conn_disconnect_locked(c);
		else
			tmo = (int)((c->linger_until_ns - now) / 1000000ull) + 1;
	}
	rdmae_conn_unlock(c);
	return tmo;
}

static void *progress_main(void *arg)
{
	struct rdmae_conn *c = arg;

	/* Completions touch the rings, which live on the device's node: run there too. */
	if (c->numa_node >= 0 && numa_available() >= 0)
		numa_run_on_node(c->numa_node);
	/* No lock is held across a turn: each step takes the lane's or the connection's it needs. */
	while (!c->stop) {
		struct pollfd p[3];
		nfds_t n = 0;
		int tmo = rdmae_progress_keepalive(c);
		int ltmo = rdmae_progress_disconnecting(c);
		int ready, poll_err;
		bool cm;
		uint64_t v;

		if (ltmo >= 0)
			tmo = ltmo;

		rdmae_conn_lock(c);
		cm = c->cm_to_thread;
		rdmae_conn_unlock(c);
		p[n++] = (struct pollfd){ .fd = c->comp_ch->fd, .events = POLLIN };
		p[n++] = (struct pollfd){ .fd = c->wake_fd, .events = POLLIN };
		if (cm)
			p[n++] = (struct pollfd){ .fd = c->cm_ch->fd, .events = POLLIN };
		ready = poll(p, n, tmo);
		poll_err = errno;
		if (p[1].revents & POLLIN) {
			ssize_t r = read(c->wake_fd, &v, sizeof(v));

			(void)r;
		}
		if (c->stop)
			break;
		if (ready < 0) {
			/* A signal is not an event: recompute the timeout and sleep again. */
			if (poll_err == EINTR)
				continue;
			/*
			 * Events can no longer be waited for, so the connection
			 * cannot be kept alive: it fails like any other loss of its
			 * progress. The steps below still run, so waiters see it.
			 */
			rdmae_conn_fail(c, -poll_err, "poll in the progress thread of the "
					"connection to %s: %s", c->peer, strerror(poll_err));
		}
		rdmae_progress_reap(c);
		if (cm)
			rdmae_progress_cm_events(c);
		rdmae_progress_housekeeping(c);
		/* Conn-level waiters (negotiation, setup) look again. */
		rdmae_conn_lock(c);
		pthread_cond_broadcast(&c->cond);
		rdmae_conn_unlock(c);
	}
	return NULL;
}

int rdmae_progress_start(struct rdmae_conn *c, struct rdmae_err *err)
{
	int ret = pthread_create(&c->thread, NULL, progress_main, c);

	if (ret)
		return rdmae_err_set(err, -ret, "progress thread for %s: %s", c->peer, strerror(ret));
	c->thread_started = true;
	return 0;
}

void rdmae_progress_stop(struct rdmae_conn *c)
{
	if (!c->thread_started)
		return;
	rdmae_conn_lock(c);
	c->stop = true;
	rdmae_conn_unlock(c);
	rdmae_conn_wake(c);
	pthread_join(c->thread, NULL);
	c->thread_started = false;
}
