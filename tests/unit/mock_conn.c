/* SPDX-License-Identifier: MIT */
/*
 * Connections over the mock verbs layer (mock_verbs.h): the transport's own
 * objects, linked from the library as they are (the Makefile's test_mock_%
 * rule), set up as rdmae_connect leaves them but without a progress
 * thread; the progress thread's steps are driven one at a time through
 * their internal names (internal.h).
 *
 * One source is still compiled in: mr.c, whose struct rdmae_chunk and pin
 * cache are opaque outside it and whose internals the region helpers at the
 * end read.
 */
/* NOLINTBEGIN(bugprone-suspicious-include): the registration cache's internals, read by the helpers below */
#include "../../rdma/mr.c"
/* NOLINTEND(bugprone-suspicious-include) */

#include "internal.h"
#include "mock_verbs.h"

/* ---- connections over the mock ---- */

void mock_conn_opts(struct rdmae_conn_opts *o)
{
	rdmae_conn_opts_default(o);
	o->credits = 16;
	o->send_size = 1024;
	o->recv_size = 1024;
	o->rw_size = 64u << 10;
	o->writes_in_flight = 64;
	o->keepalive_ms = -1;
	o->auth_none = true;
}

struct rdmae_conn *mock_conn_bare(const struct rdmae_conn_opts *o)
{
	struct rdmae_conn_opts d;
	struct rdmae_conn *c;

	if (!o) {
		mock_conn_opts(&d);
		o = &d;
	}
	c = rdmae_conn_alloc(o, false, NULL);
	if (c)
		snprintf(c->peer, sizeof(c->peer), "mock");
	return c;
}

int mock_conn_setup_device(struct rdmae_conn *c, struct rdmae_err *err)
{
	int ret = rdmae_conn_setup_device(c, mock_context(), err);

	/*
	 * The tests reap completions themselves (mock_progress); the thread
	 * only sleeps until it is told to stop, which is now.
	 */
	if (!ret)
		rdmae_progress_stop(c);
	return ret;
}

struct rdmae_conn *mock_conn(unsigned int lanes, const struct rdmae_conn_opts *o)
{
	struct rdmae_conn_opts opts;
	struct rdmae_err err = { 0 };
	struct rdmae_conn *c;
	unsigned int i;

	if (o)
		opts = *o;
	else
		mock_conn_opts(&opts);
	opts.lanes = (uint16_t)lanes;
	c = mock_conn_bare(&opts);
	if (!c)
		return NULL;
	if (mock_conn_setup_device(c, &err))
		goto fail;
	/*
	 * What negotiation between two peers with these options leaves: known
	 * before the lanes after lane 0 are made, as in a real setup, since
	 * their depth follows from it (rdmae_lane_credits).
	 */
	pthread_mutex_lock(&c->lock);
	c->neg.version = c->opts.max_version;
	c->neg.lanes = (uint16_t)lanes;
	c->neg.send_credits = c->opts.credits;
	c->neg.peer_credits_target = c->opts.credits;
	c->neg.max_send_size = c->opts.send_size;
	c->neg.max_receive_size = c->opts.recv_size;
	c->neg.max_fragmented_size = c->opts.frag_size;
	c->neg.max_rw_size = c->opts.rw_size;
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < lanes; i++) {
		struct rdma_cm_id *id = mock_cm_id();

		if (rdmae_lane_create(c, id, i, &err)) {
			rdma_destroy_id(id);
			goto fail;
		}
	}
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < lanes; i++) {
		c->lanes[i].established = true;
		mock_qp_set_state(c->lanes[i].qp.ibqp, IBV_QPS_RTS);
	}
	rdmae_credits_init(&c->lanes[0].cr, c->neg.send_credits, c->lanes[0].qp.nrx,
			   c->lanes[0].qp.nrx, c->neg.peer_credits_target);
	rdmae_reasm_init(&c->lanes[0].reasm, c->neg.max_fragmented_size);
	for (i = 1; i < lanes; i++)
		rdmae_negotiate_lane_credits_locked(c, &c->lanes[i]);
	c->state = RDMAE_ST_LANES; /* negotiated: what CONNECTED is reached from */
	rdmae_conn_connected_locked(c);
	pthread_mutex_unlock(&c->lock);
	return c;

fail:
	fprintf(stderr, "mock_conn: %s\n", err.msg);
	rdmae_conn_destroy(c);
	return NULL;
}

struct ibv_qp *mock_lane_qp(struct rdmae_conn *c, unsigned int lane)
{
	return c->lanes[lane].qp.ibqp;
}

/* One turn of the progress thread's loop, as it runs it: no lock held, each step takes its own. */
void mock_progress(struct rdmae_conn *c)
{
	rdmae_progress_reap(c);
	rdmae_progress_cm_events(c);
	rdmae_progress_housekeeping(c);
	pthread_mutex_lock(&c->lock);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

int mock_keepalive(struct rdmae_conn *c)
{
	return rdmae_progress_keepalive(c);
}

uint64_t mock_pace_inflight(struct rdmae_conn *c)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < c->nlanes; i++) {
		pthread_mutex_lock(&c->lanes[i].lock);
		n += c->lanes[i].pace.inflight;
		pthread_mutex_unlock(&c->lanes[i].lock);
	}
	return n;
}

uint64_t mock_pace_budget(struct rdmae_conn *c)
{
	struct rdmae_pace_stats st;

	rdmae_conn_pace_stats(c, &st);
	return st.budget_bytes;
}

bool mock_conn_any_busy(struct rdmae_conn *c)
{
	bool busy = false;

	for (unsigned int i = 0; i < c->nlanes; i++) {
		pthread_mutex_lock(&c->lanes[i].lock);
		busy |= c->lanes[i].live && rdmae_qp_busy_locked(&c->lanes[i].qp);
		pthread_mutex_unlock(&c->lanes[i].lock);
	}
	return busy;
}

int mock_deliver_msg(struct rdmae_conn *c, unsigned int lane, const void *payload, uint32_t len,
		     uint16_t granted, uint16_t flags, uint32_t fence_seq)
{
	struct rdmae_data_hdr h = {
		.credits_requested = (uint16_t)c->lanes[lane].qp.nrx,
		.credits_granted = granted,
		.flags = flags,
		.data_offset = len ? RDMAE_DATA_HDR_SIZE : 0,
		.data_length = len,
		.fence_seq = fence_seq,
	};
	uint8_t *buf = malloc(RDMAE_DATA_HDR_SIZE + (size_t)len);
	int ret;

	if (!buf)
		abort();
	rdmae_data_hdr_encode(buf, &h);
	if (len)
		memcpy(buf + RDMAE_DATA_HDR_SIZE, payload, len);
	ret = mock_deliver(c->lanes[lane].qp.ibqp, buf, RDMAE_DATA_HDR_SIZE + len);
	free(buf);
	return ret;
}

void mock_conn_fail_locked(struct rdmae_conn *c, int code, const char *why)
{
	rdmae_conn_fail_locked(c, code, "%s", why);
}

/* ---- region internals ---- */

const struct ibv_mr *mock_region_mr(const struct rdmae_region *r, size_t i)
{
	return r->mrs && i < r->nmrs ? r->mrs[i] : NULL;
}

size_t mock_region_chunk_size(const struct rdmae_region *r)
{
	return r->chunk_size;
}

const struct ibv_mr *mock_chunk_mr(const struct rdmae_region *r, size_t idx)
{
	return r->chunks && idx < r->nchunks ? r->chunks[idx].mr : NULL;
}

unsigned int mock_chunk_refs(const struct rdmae_region *r, size_t idx)
{
	return r->chunks && idx < r->nchunks ? r->chunks[idx].refs : 0;
}

size_t mock_lru(struct rdmae_conn *c, size_t *out, size_t cap)
{
	const struct rdmae_chunk *ch;
	size_t n = 0;

	pthread_mutex_lock(&c->mrc->lock);
	for (ch = c->mrc->lru_head; ch && n < cap; ch = ch->next)
		out[n++] = ch->idx;
	pthread_mutex_unlock(&c->mrc->lock);
	return n;
}

bool mock_lru_empty(struct rdmae_conn *c)
{
	bool empty;

	pthread_mutex_lock(&c->mrc->lock);
	empty = !c->mrc->lru_head && !c->mrc->lru_tail;
	pthread_mutex_unlock(&c->mrc->lock);
	return empty;
}
