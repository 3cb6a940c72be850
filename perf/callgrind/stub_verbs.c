/* SPDX-License-Identifier: MIT */
/*
 * Stub verbs for the page-cost benchmark (pagecost.c): a connection whose
 * lanes are made by the real rdmae_lane_create over stub objects. Apart from
 * pagecost.c because the transport's internals and the engine's protocol
 * both name a struct rdmae_msg.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "stub_verbs.h"

static struct ibv_context stub_ctx;
static struct ibv_pd stub_pd;
static struct ibv_qp stub_qp[RDMAE_MAX_LANES];
static uint64_t stub_wrs, stub_bytes, stub_doorbells;
static uint32_t stub_lkey = 1;

/*
 * Completions are handed to a reaper thread, the stand-in for the progress
 * thread: it runs each signalled WR's done() under the connection lock and
 * wakes the waiters, as reap_locked does. post_send runs with that lock held.
 */
#define STUB_RING (1u << 16)
static struct rdmae_cqe *stub_ring[STUB_RING];
static struct rdmae_conn *stub_c;
static uint64_t stub_head, stub_tail;
static sem_t stub_sem;

static int stub_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	(void)qp;
	(void)bad;
	stub_doorbells++;
	for (; wr; wr = wr->next) {
		stub_wrs++;
		stub_bytes += wr->sg_list[0].length;
		if (wr->send_flags & IBV_SEND_SIGNALED) {
			if (stub_head - stub_tail == STUB_RING)
				abort();
			stub_ring[stub_head++ % STUB_RING] = (struct rdmae_cqe *)(uintptr_t)wr->wr_id;
		}
	}
	sem_post(&stub_sem);
	return 0;
}

/* One pass of the reaper: the completions' share of the per-page cost. */
__attribute__((noinline)) void stub_reap(struct rdmae_conn *c);
__attribute__((noinline)) void stub_reap(struct rdmae_conn *c)
{
	struct ibv_wc wc = { .status = IBV_WC_SUCCESS, .opcode = IBV_WC_RDMA_WRITE };

	pthread_mutex_lock(&c->lock);
	while (stub_tail != stub_head) {
		struct rdmae_cqe *cqe = stub_ring[stub_tail++ % STUB_RING];

		wc.wr_id = (uintptr_t)cqe;
		cqe->done(cqe, &wc);
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static void *stub_reaper(void *arg)
{
	(void)arg;
	for (;;) {
		while (sem_wait(&stub_sem))
			;
		stub_reap(stub_c);
	}
	return NULL;
}

static int stub_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	(void)qp;
	(void)wr;
	(void)bad;
	return 0;
}

struct ibv_mr *__wrap_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access);
struct ibv_mr *__wrap_ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length,
				       uint64_t iova, unsigned int access);
int __wrap_ibv_dereg_mr(struct ibv_mr *mr);
int __wrap_rdma_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd,
			  struct ibv_qp_init_attr *attr);

struct ibv_mr *__wrap_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access)
{
	struct ibv_mr *mr = calloc(1, sizeof(*mr));

	(void)access;
	if (mr) {
		mr->pd = pd;
		mr->addr = addr;
		mr->length = length;
		mr->lkey = stub_lkey;
		mr->rkey = stub_lkey++;
	}
	return mr;
}

struct ibv_mr *__wrap_ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length,
				       uint64_t iova, unsigned int access)
{
	(void)iova;
	return __wrap_ibv_reg_mr(pd, addr, length, (int)access);
}

int __wrap_ibv_dereg_mr(struct ibv_mr *mr)
{
	free(mr);
	return 0;
}

int __wrap_rdma_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd,
			  struct ibv_qp_init_attr *attr)
{
	const struct rdmae_qp *q = id->context;

	(void)pd;
	(void)attr;
	id->qp = &stub_qp[q->idx];
	return 0;
}

void stub_counts(uint64_t *wrs, uint64_t *doorbells, uint64_t *bytes)
{
	*wrs = stub_wrs;
	*doorbells = stub_doorbells;
	*bytes = stub_bytes;
}

struct rdmae_conn *stub_conn_create(unsigned int lanes, struct rdmae_err *err)
{
	static struct rdmae_conn conn;
	static struct rdma_cm_id ids[RDMAE_MAX_LANES];
	struct rdmae_conn *c = &conn;
	pthread_t reaper;
	unsigned int i;

	stub_ctx.ops.post_send = stub_post_send;
	stub_ctx.ops.post_recv = stub_post_recv;
	stub_pd.context = &stub_ctx;
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	rdmae_conn_opts_default(&c->opts);
	c->opts.lanes = lanes;
	c->state = RDMAE_ST_CONNECTED;
	c->verbs = &stub_ctx;
	c->pd = &stub_pd;
	c->dev_attr.max_qp_wr = 1 << 20;
	c->numa_node = -1;
	c->neg.max_rw_size = c->opts.rw_size;
	c->neg.lanes = lanes;
	snprintf(c->peer, sizeof(c->peer), "stub");
	for (i = 0; i < lanes; i++) {
		stub_qp[i].context = &stub_ctx;
		stub_qp[i].qp_num = i + 1;
		if (rdmae_lane_create(c, &ids[i], i, err))
			return NULL;
		c->lanes[i].established = true;
	}
	rdmae_conn_pace_start_locked(c);
	stub_c = c;
	if (sem_init(&stub_sem, 0, 0) || pthread_create(&reaper, NULL, stub_reaper, NULL)) {
		rdmae_err_set(err, -errno, "stub reaper thread: %s", strerror(errno));
		return NULL;
	}
	pthread_detach(reaper);
	return c;
}

