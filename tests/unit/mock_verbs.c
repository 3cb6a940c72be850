/* SPDX-License-Identifier: MIT */
/*
 * The mock verbs layer (mock_verbs.h): libibverbs and librdmacm as the
 * transport calls them, and rdma/mem.c, with every object logged and every
 * WR held until the test completes it. It knows nothing of the transport
 * but the lane number a qp carries (qp.h), so a test of one L1 file links
 * it alone (test_qp); the connection helpers over it are mock_conn.c.
 *
 * Every verb the transport's objects call resolves to the definitions
 * below: the data-path verbs because they are inline calls through the
 * context's ops table (ibv_post_send, ibv_poll_cq...), which the mock
 * context fills, the rest because a definition in the executable takes over
 * from the shared libraries. rdmae_mem_alloc allocates the rings with
 * malloc, so that AddressSanitizer sees a ring touched after it was freed,
 * and counts them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mem.h"
#include "qp.h"
#include "mock_verbs.h"

/* ---- the mock's objects ---- */

struct mock_wr {
	uint64_t wr_id;
	bool signaled;
	enum ibv_wc_opcode op;
	uint64_t addr;
	uint32_t length;
};

/* A FIFO of the WRs a queue holds: [head, tail) of v. */
struct mock_queue {
	struct mock_wr *v;
	size_t head, tail, cap;
};

struct mock_qp {
	struct ibv_qp qp;		/* first: the transport holds &qp */
	struct rdma_cm_id *id;
	enum ibv_qp_state state;
	uint32_t max_send, max_recv;
	struct mock_queue sq, rq;
};

struct mock_cq {
	struct ibv_cq cq;		/* first */
	struct ibv_wc *wc;
	size_t head, tail, cap;
	bool armed;
	unsigned int events;		/* raised and not yet got */
	unsigned int got, acked;
};

struct mock_channel {
	struct ibv_comp_channel ch;	/* first */
	/* cppcheck-suppress unusedStructMember ; reached through casts of the channel */
	struct mock_cq *cq;
};

struct mock_mr {
	struct ibv_mr mr;		/* first */
	int access;
};

_Static_assert(offsetof(struct mock_qp, qp) == 0, "mock_qp starts with its ibv_qp");
_Static_assert(offsetof(struct mock_cq, cq) == 0, "mock_cq starts with its ibv_cq");
_Static_assert(offsetof(struct mock_channel, ch) == 0, "mock_channel starts with its channel");
_Static_assert(offsetof(struct mock_mr, mr) == 0, "mock_mr starts with its ibv_mr");

#define MOCK_MAX_CQS 8
#define MOCK_MAX_CM_EVENTS 64

/*
 * The mock's state. The transport calls verbs with its connection lock held,
 * except for registration, which it does unlocked; this lock keeps the mock
 * whole either way, and is never held while a test's hook runs.
 */
static struct {
	pthread_mutex_t lock;
	unsigned int calls[MOCK_OP_COUNT];
	unsigned int fail_at[MOCK_OP_COUNT];	/* call number that fails, 0: none */
	int fail_err[MOCK_OP_COUNT];
	uint32_t fail_bad;
	long live[MOCK_OBJ_COUNT];
	struct mock_event *log;
	size_t nlog, caplog;
	struct mock_send *sends;
	size_t nsends, capsends;
	struct mock_modify *mods;
	size_t nmods, capmods;
	mock_send_hook hook;
	void *hook_arg;
	unsigned int recvs_posted;
	int max_qp_wr, max_cqe;
	uint32_t next_key, next_qpn;
	unsigned int unacked;
	int bind_dev;			/* mock_bind_device */
	bool odp_write;			/* mock_set_odp_write */
	struct mock_cq *cqs[MOCK_MAX_CQS];
	struct rdma_cm_event *cm[MOCK_MAX_CM_EVENTS];	/* [cm_head, ncm) are queued */
	size_t cm_head, ncm;
} M = { .lock = PTHREAD_MUTEX_INITIALIZER, .fail_bad = MOCK_BAD_NONE, .max_qp_wr = 16384,
	.max_cqe = 1 << 20, .next_key = 0x100, .next_qpn = 1 };

static const char mock_kind_letter[MOCK_OBJ_COUNT] = {
	[MOCK_OBJ_PD] = 'P', [MOCK_OBJ_CHANNEL] = 'H', [MOCK_OBJ_CQ] = 'C', [MOCK_OBJ_MR] = 'M',
	[MOCK_OBJ_QP] = 'Q', [MOCK_OBJ_MEM] = 'R', [MOCK_OBJ_CM_ID] = 'I',
	[MOCK_OBJ_CM_CHANNEL] = 'E',
};

static const char *const mock_kind_name[MOCK_OBJ_COUNT] = {
	[MOCK_OBJ_PD] = "PD", [MOCK_OBJ_CHANNEL] = "completion channel", [MOCK_OBJ_CQ] = "CQ",
	[MOCK_OBJ_MR] = "MR", [MOCK_OBJ_QP] = "QP", [MOCK_OBJ_MEM] = "ring memory",
	[MOCK_OBJ_CM_ID] = "cm_id", [MOCK_OBJ_CM_CHANNEL] = "CM event channel",
};

/* A test that runs out of memory in the mock itself cannot go on. */
static void *mock_grow(void *v, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return v;
	*cap = *cap ? *cap * 2 : 64;
	v = realloc(v, *cap * size);
	if (!v)
		abort();
	return v;
}

static void log_add(bool create, enum mock_obj kind, const void *obj)
{
	M.log = mock_grow(M.log, &M.caplog, M.nlog, sizeof(*M.log));
	M.log[M.nlog++] = (struct mock_event){ .create = create, .kind = kind, .obj = obj };
	M.live[kind] += create ? 1 : -1;
}

/* Count a call of op; its errno when the test asked this call to fail, else 0. Lock held. */
static int fail_now(enum mock_op op)
{
	unsigned int n = ++M.calls[op];

	if (M.fail_at[op] && n == M.fail_at[op]) {
		M.fail_at[op] = 0;
		return M.fail_err[op];
	}
	return 0;
}

static void q_push(struct mock_queue *q, const struct mock_wr *w)
{
	size_t n = q->tail - q->head;

	if (q->head && q->tail == q->cap) {
		memmove(q->v, q->v + q->head, n * sizeof(*q->v));
		q->head = 0;
		q->tail = n;
	}
	q->v = mock_grow(q->v, &q->cap, q->tail, sizeof(*q->v));
	q->v[q->tail++] = *w;
}

static size_t q_len(const struct mock_queue *q)
{
	return q->tail - q->head;
}

static struct mock_wr q_pop(struct mock_queue *q)
{
	return q->v[q->head++];
}

static void cq_push(struct ibv_cq *cq, const struct mock_wr *w, enum ibv_wc_status st,
		    uint32_t byte_len, uint32_t qp_num)
{
	struct mock_cq *mc = (struct mock_cq *)(void *)cq;
	size_t n = mc->tail - mc->head;

	if (mc->head && mc->tail == mc->cap) {
		memmove(mc->wc, mc->wc + mc->head, n * sizeof(*mc->wc));
		mc->head = 0;
		mc->tail = n;
	}
	mc->wc = mock_grow(mc->wc, &mc->cap, mc->tail, sizeof(*mc->wc));
	mc->wc[mc->tail++] = (struct ibv_wc){ .wr_id = w->wr_id, .status = st, .opcode = w->op,
					      .byte_len = byte_len, .qp_num = qp_num };
	/* An armed CQ raises one event for the next completion, then must be armed again. */
	if (mc->armed) {
		mc->armed = false;
		mc->events++;
	}
}

/* The QP goes to error: whatever it holds completes as flushed, signalled or not. Lock held. */
static void qp_flush(struct mock_qp *q)
{
	q->state = IBV_QPS_ERR;
	while (q_len(&q->sq)) {
		struct mock_wr w = q_pop(&q->sq);

		cq_push(q->qp.send_cq, &w, IBV_WC_WR_FLUSH_ERR, 0, q->qp.qp_num);
	}
	while (q_len(&q->rq)) {
		struct mock_wr w = q_pop(&q->rq);

		cq_push(q->qp.recv_cq, &w, IBV_WC_WR_FLUSH_ERR, 0, q->qp.qp_num);
	}
}

static struct mock_qp *mqp(const struct ibv_qp *qp)
{
	return (struct mock_qp *)(void *)(uintptr_t)qp;
}

static enum ibv_wc_opcode wc_opcode(enum ibv_wr_opcode op)
{
	switch (op) {
	case IBV_WR_RDMA_WRITE:
	case IBV_WR_RDMA_WRITE_WITH_IMM:
		return IBV_WC_RDMA_WRITE;
	case IBV_WR_RDMA_READ:
		return IBV_WC_RDMA_READ;
	default:
		return IBV_WC_SEND;
	}
}

/* ---- the data path: the context's ops ---- */

static unsigned int lane_of(const struct mock_qp *q)
{
	const struct rdmae_qp *l = q->id ? q->id->context : NULL;

	return l ? l->idx : UINT32_MAX;
}

/* Record one send WR the QP takes; returns its index in the send log. Lock held. */
static size_t record_send(struct mock_qp *q, const struct ibv_send_wr *wr, unsigned int doorbell)
{
	struct mock_send *s;

	M.sends = mock_grow(M.sends, &M.capsends, M.nsends, sizeof(*M.sends));
	s = &M.sends[M.nsends];
	memset(s, 0, sizeof(*s));
	s->qp = &q->qp;
	s->lane = lane_of(q);
	s->doorbell = doorbell;
	s->wr_id = wr->wr_id;
	s->opcode = wr->opcode;
	s->send_flags = wr->send_flags;
	if (wr->num_sge > 0) {
		s->addr = wr->sg_list[0].addr;
		s->length = wr->sg_list[0].length;
		s->lkey = wr->sg_list[0].lkey;
	}
	if (wr->opcode == IBV_WR_RDMA_WRITE || wr->opcode == IBV_WR_RDMA_READ) {
		s->remote_addr = wr->wr.rdma.remote_addr;
		s->rkey = wr->wr.rdma.rkey;
	}
	/* A SEND's buffer may be reused once it completes: keep what it said now. */
	if (wr->opcode == IBV_WR_SEND && s->addr) {
		s->ncopy = s->length < MOCK_SEND_COPY ? s->length : MOCK_SEND_COPY;
		memcpy(s->data, (const void *)(uintptr_t)s->addr, s->ncopy);
	}
	return M.nsends++;
}

static int mock_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	struct mock_qp *q = mqp(qp);
	unsigned int doorbell, i;
	int err;

	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_POST_SEND);
	doorbell = M.calls[MOCK_POST_SEND];
	for (i = 0; wr; wr = wr->next, i++) {
		struct mock_wr w = { .wr_id = wr->wr_id, .signaled = wr->send_flags & IBV_SEND_SIGNALED,
				     .op = wc_opcode(wr->opcode),
				     .addr = wr->num_sge ? wr->sg_list[0].addr : 0,
				     .length = wr->num_sge ? wr->sg_list[0].length : 0 };
		mock_send_hook hook;
		void *arg;
		size_t idx;

		if (err && (M.fail_bad == MOCK_BAD_NONE || i >= M.fail_bad)) {
			if (M.fail_bad != MOCK_BAD_NONE)
				*bad = wr;
			pthread_mutex_unlock(&M.lock);
			return err;
		}
		/* Sends before the connection is up are refused; past the depth, the queue is full. */
		if (q->state == IBV_QPS_RESET || q->state == IBV_QPS_INIT ||
		    q_len(&q->sq) >= q->max_send) {
			*bad = wr;
			pthread_mutex_unlock(&M.lock);
			return q_len(&q->sq) >= q->max_send ? ENOMEM : EINVAL;
		}
		idx = record_send(q, wr, doorbell);
		if (q->state == IBV_QPS_ERR)
			cq_push(q->qp.send_cq, &w, IBV_WC_WR_FLUSH_ERR, 0, q->qp.qp_num);
		else
			q_push(&q->sq, &w);
		hook = M.hook;
		arg = M.hook_arg;
		if (hook) {
			struct mock_send copy = M.sends[idx];

			/* The hook may call back into the transport, and so into the mock. */
			pthread_mutex_unlock(&M.lock);
			hook(&copy, arg);
			pthread_mutex_lock(&M.lock);
		}
	}
	pthread_mutex_unlock(&M.lock);
	/* A failure reported past the chain's end: all was taken, the call still fails. */
	return err;
}

static int mock_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	struct mock_qp *q = mqp(qp);
	int err;

	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_POST_RECV);
	if (err) {
		*bad = wr;
		pthread_mutex_unlock(&M.lock);
		return err;
	}
	for (; wr; wr = wr->next) {
		struct mock_wr w = { .wr_id = wr->wr_id, .signaled = true, .op = IBV_WC_RECV,
				     .addr = wr->num_sge ? wr->sg_list[0].addr : 0,
				     .length = wr->num_sge ? wr->sg_list[0].length : 0 };

		if (q_len(&q->rq) >= q->max_recv) {
			*bad = wr;
			pthread_mutex_unlock(&M.lock);
			return ENOMEM;
		}
		M.recvs_posted++;
		if (q->state == IBV_QPS_ERR)
			cq_push(q->qp.recv_cq, &w, IBV_WC_WR_FLUSH_ERR, 0, q->qp.qp_num);
		else
			q_push(&q->rq, &w);
	}
	pthread_mutex_unlock(&M.lock);
	return 0;
}

static int mock_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc)
{
	struct mock_cq *mc = (struct mock_cq *)(void *)cq;
	int i = 0;

	pthread_mutex_lock(&M.lock);
	if (fail_now(MOCK_POLL_CQ)) {
		pthread_mutex_unlock(&M.lock);
		return -1;
	}
	while (i < n && mc->head < mc->tail)
		wc[i++] = mc->wc[mc->head++];
	pthread_mutex_unlock(&M.lock);
	return i;
}

static int mock_req_notify_cq(struct ibv_cq *cq, int solicited_only)
{
	struct mock_cq *mc = (struct mock_cq *)(void *)cq;
	int err;

	(void)solicited_only;
	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_REQ_NOTIFY_CQ);
	if (!err)
		mc->armed = true;
	pthread_mutex_unlock(&M.lock);
	return err;
}

static int mock_query_device_ex(struct ibv_context *context,
				const struct ibv_query_device_ex_input *input,
				struct ibv_device_attr_ex *attr, size_t attr_size);

/*
 * mock0 is an extended context with one extended op, query_device_ex, so
 * that ibv_query_device_ex reports ODP as a test sets it; every other
 * extended op is NULL, which verbs.h treats as a legacy context does.
 */
static struct ibv_device mock_dev = { .name = "mock0" };
static struct verbs_context mock_vctx = {
	.query_device_ex = mock_query_device_ex,
	.sz = sizeof(struct verbs_context),
	.context = {
		.device = &mock_dev,
		.abi_compat = __VERBS_ABI_IS_EXTENDED,
		.ops = {
			.poll_cq = mock_poll_cq,
			.req_notify_cq = mock_req_notify_cq,
			.post_send = mock_post_send,
			.post_recv = mock_post_recv,
		},
	},
};
#define mock_ctx (mock_vctx.context)
/* A second device, for what must refuse to mix devices. */
static struct ibv_device mock_dev1 = { .name = "mock1" };
static struct ibv_context mock_ctx1 = {
	.device = &mock_dev1,
	.ops = {
		.poll_cq = mock_poll_cq,
		.req_notify_cq = mock_req_notify_cq,
		.post_send = mock_post_send,
		.post_recv = mock_post_recv,
	},
};

/* ---- libibverbs ---- */

const char *ibv_get_device_name(struct ibv_device *device)
{
	return device->name;
}

/* ibv_query_device_ex falls back to this on mock1, which is not an extended context. */
int ibv_query_device(struct ibv_context *context, struct ibv_device_attr *attr)
{
	int err;

	(void)context;
	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_QUERY_DEVICE);
	memset(attr, 0, sizeof(*attr));
	attr->max_qp_wr = M.max_qp_wr;
	attr->max_cqe = M.max_cqe;
	pthread_mutex_unlock(&M.lock);
	errno = err;
	return err;
}

static int mock_query_device_ex(struct ibv_context *context,
				const struct ibv_query_device_ex_input *input,
				struct ibv_device_attr_ex *attr, size_t attr_size)
{
	bool odp;
	int err;

	(void)input;
	(void)attr_size;
	memset(attr, 0, sizeof(*attr));
	err = ibv_query_device(context, &attr->orig_attr);
	if (err)
		return err;
	pthread_mutex_lock(&M.lock);
	odp = M.odp_write;
	pthread_mutex_unlock(&M.lock);
	if (odp) {
		attr->odp_caps.general_caps = IBV_ODP_SUPPORT;
		attr->odp_caps.per_transport_caps.rc_odp_caps = IBV_ODP_SUPPORT_WRITE |
								IBV_ODP_SUPPORT_SEND |
								IBV_ODP_SUPPORT_RECV;
	}
	return 0;
}

void mock_set_odp_write(bool on)
{
	pthread_mutex_lock(&M.lock);
	M.odp_write = on;
	pthread_mutex_unlock(&M.lock);
}

struct ibv_pd *ibv_alloc_pd(struct ibv_context *context)
{
	struct ibv_pd *pd = NULL;
	int err;

	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_ALLOC_PD);
	if (!err) {
		pd = calloc(1, sizeof(*pd));
		if (!pd)
			abort();
		pd->context = context;
		log_add(true, MOCK_OBJ_PD, pd);
	}
	pthread_mutex_unlock(&M.lock);
	errno = err;
	return pd;
}

int ibv_dealloc_pd(struct ibv_pd *pd)
{
	pthread_mutex_lock(&M.lock);
	log_add(false, MOCK_OBJ_PD, pd);
	pthread_mutex_unlock(&M.lock);
	free(pd);
	return 0;
}

struct ibv_comp_channel *ibv_create_comp_channel(struct ibv_context *context)
{
	struct mock_channel *ch = NULL;
	int err;

	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_CREATE_COMP_CHANNEL);
	if (!err) {
		ch = calloc(1, sizeof(*ch));
		if (!ch)
			abort();
		ch->ch.context = context;
		/* A real descriptor: the transport sets it non-blocking and polls it. */
		ch->ch.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (ch->ch.fd < 0)
			abort();
		log_add(true, MOCK_OBJ_CHANNEL, ch);
	}
	pthread_mutex_unlock(&M.lock);
	errno = err;
	return ch ? &ch->ch : NULL;
}

int ibv_destroy_comp_channel(struct ibv_comp_channel *channel)
{
	pthread_mutex_lock(&M.lock);
	log_add(false, MOCK_OBJ_CHANNEL, channel);
	pthread_mutex_unlock(&M.lock);
	close(channel->fd);
	free(channel);
	return 0;
}

struct ibv_cq *ibv_create_cq(struct ibv_context *context, int cqe, void *cq_context,
			     struct ibv_comp_channel *channel, int comp_vector)
{
	struct mock_cq *mc = NULL;
	int err;

	(void)comp_vector;
	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_CREATE_CQ);
	if (!err) {
		unsigned int i;

		mc = calloc(1, sizeof(*mc));
		if (!mc)
			abort();
		mc->cq.context = context;
		mc->cq.channel = channel;
		mc->cq.cq_context = cq_context;
		mc->cq.cqe = cqe;
		if (channel)
			((struct mock_channel *)(void *)channel)->cq = mc;
		for (i = 0; i < MOCK_MAX_CQS && M.cqs[i]; i++)
			;
		if (i == MOCK_MAX_CQS)
			abort();
		M.cqs[i] = mc;
		log_add(true, MOCK_OBJ_CQ, mc);
	}
	pthread_mutex_unlock(&M.lock);
	errno = err;
	return mc ? &mc->cq : NULL;
}

int ibv_destroy_cq(struct ibv_cq *cq)
{
	struct mock_cq *mc = (struct mock_cq *)(void *)cq;
	unsigned int i;

	pthread_mutex_lock(&M.lock);
	log_add(false, MOCK_OBJ_CQ, mc);
	/* The library would wait for ever here: every event got must be acked first. */
	M.unacked += mc->got - mc->acked;
	for (i = 0; i < MOCK_MAX_CQS; i++)
		if (M.cqs[i] == mc)
			M.cqs[i] = NULL;
	if (cq->channel)
		((struct mock_channel *)(void *)cq->channel)->cq = NULL;
	pthread_mutex_unlock(&M.lock);
	free(mc->wc);
	free(mc);
	return 0;
}

int ibv_get_cq_event(struct ibv_comp_channel *channel, struct ibv_cq **cq, void **cq_context)
{
	struct mock_cq *mc;
	int ret = -1;

	pthread_mutex_lock(&M.lock);
	mc = ((struct mock_channel *)(void *)channel)->cq;
	if (mc && mc->events) {
		mc->events--;
		mc->got++;
		*cq = &mc->cq;
		*cq_context = mc->cq.cq_context;
		ret = 0;
	}
	pthread_mutex_unlock(&M.lock);
	if (ret)
		errno = EAGAIN;
	return ret;
}

void ibv_ack_cq_events(struct ibv_cq *cq, unsigned int nevents)
{
	pthread_mutex_lock(&M.lock);
	((struct mock_cq *)(void *)cq)->acked += nevents;
	pthread_mutex_unlock(&M.lock);
}

static struct ibv_mr *reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access)
{
	struct mock_mr *m = NULL;
	int err;

	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_REG_MR);
	if (!err) {
		m = calloc(1, sizeof(*m));
		if (!m)
			abort();
		m->mr.context = pd->context;
		m->mr.pd = pd;
		m->mr.addr = addr;
		m->mr.length = length;
		m->mr.lkey = M.next_key;
		m->mr.rkey = M.next_key + 0x10000;
		M.next_key++;
		m->access = access;
		log_add(true, MOCK_OBJ_MR, m);
	}
	pthread_mutex_unlock(&M.lock);
	errno = err;
	return m ? &m->mr : NULL;
}

/* ibv_reg_mr is a macro choosing between these two by whether access is a constant. */
struct ibv_mr *(ibv_reg_mr)(struct ibv_pd *pd, void *addr, size_t length, int access)
{
	return reg_mr(pd, addr, length, access);
}

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
				unsigned int access)
{
	(void)iova;
	return reg_mr(pd, addr, length, (int)access);
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
	pthread_mutex_lock(&M.lock);
	log_add(false, MOCK_OBJ_MR, mr);
	pthread_mutex_unlock(&M.lock);
	free(mr);
	return 0;
}

int mock_mr_access(const struct ibv_mr *mr)
{
	return ((const struct mock_mr *)(const void *)mr)->access;
}

int ibv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask)
{
	struct mock_qp *q = mqp(qp);
	int err;

	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_MODIFY_QP);
	/*
	 * A QP in error takes no modification but to reset, or to error again
	 * (the kernel's qp_state_table allows ERR -> ERR: a drain after the
	 * connection has already failed does it).
	 */
	if (!err && q->state == IBV_QPS_ERR &&
	    !((attr_mask & IBV_QP_STATE) && (attr->qp_state == IBV_QPS_RESET ||
					      attr->qp_state == IBV_QPS_ERR)))
		err = EINVAL;
	if (!err) {
		M.mods = mock_grow(M.mods, &M.capmods, M.nmods, sizeof(*M.mods));
		M.mods[M.nmods++] = (struct mock_modify){
			.qp = qp, .mask = attr_mask,
			.state = (attr_mask & IBV_QP_STATE) ? attr->qp_state : q->state,
			.access = (attr_mask & IBV_QP_ACCESS_FLAGS) ? attr->qp_access_flags : 0 };
		if (attr_mask & IBV_QP_STATE) {
			if (attr->qp_state == IBV_QPS_ERR)
				qp_flush(q);
			q->state = attr->qp_state;
		}
	}
	pthread_mutex_unlock(&M.lock);
	return err;
}

int ibv_query_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask,
		 struct ibv_qp_init_attr *init_attr)
{
	(void)attr_mask;
	pthread_mutex_lock(&M.lock);
	memset(attr, 0, sizeof(*attr));
	memset(init_attr, 0, sizeof(*init_attr));
	attr->qp_state = mqp(qp)->state;
	pthread_mutex_unlock(&M.lock);
	return 0;
}

/* ---- librdmacm ---- */

struct rdma_event_channel *rdma_create_event_channel(void)
{
	struct rdma_event_channel *ch = calloc(1, sizeof(*ch));

	if (!ch)
		abort();
	ch->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ch->fd < 0)
		abort();
	pthread_mutex_lock(&M.lock);
	log_add(true, MOCK_OBJ_CM_CHANNEL, ch);
	pthread_mutex_unlock(&M.lock);
	return ch;
}

void rdma_destroy_event_channel(struct rdma_event_channel *channel)
{
	pthread_mutex_lock(&M.lock);
	log_add(false, MOCK_OBJ_CM_CHANNEL, channel);
	pthread_mutex_unlock(&M.lock);
	close(channel->fd);
	free(channel);
}

struct rdma_cm_id *mock_cm_id(void)
{
	struct rdma_cm_id *id = calloc(1, sizeof(*id));

	if (!id)
		abort();
	id->verbs = &mock_ctx;
	id->qp_type = IBV_QPT_RC;
	pthread_mutex_lock(&M.lock);
	log_add(true, MOCK_OBJ_CM_ID, id);
	pthread_mutex_unlock(&M.lock);
	return id;
}

int rdma_create_id(struct rdma_event_channel *channel, struct rdma_cm_id **id, void *context,
		   enum rdma_port_space ps)
{
	*id = mock_cm_id();
	(*id)->verbs = NULL;
	(*id)->channel = channel;
	(*id)->context = context;
	(*id)->ps = ps;
	return 0;
}

int rdma_bind_addr(struct rdma_cm_id *id, struct sockaddr *addr)
{
	int which;

	(void)addr;
	pthread_mutex_lock(&M.lock);
	which = M.bind_dev;
	pthread_mutex_unlock(&M.lock);
	id->verbs = which == 0 ? &mock_ctx : which == 1 ? &mock_ctx1 : NULL;
	return 0;
}

void mock_bind_device(int which)
{
	pthread_mutex_lock(&M.lock);
	M.bind_dev = which;
	pthread_mutex_unlock(&M.lock);
}

int rdma_destroy_id(struct rdma_cm_id *id)
{
	pthread_mutex_lock(&M.lock);
	log_add(false, MOCK_OBJ_CM_ID, id);
	pthread_mutex_unlock(&M.lock);
	free(id);
	return 0;
}

int rdma_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_qp_init_attr *attr)
{
	struct mock_qp *q;
	int err;

	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_CREATE_QP);
	if (err) {
		pthread_mutex_unlock(&M.lock);
		errno = err;
		return -1;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		abort();
	q->qp.context = pd->context;
	q->qp.pd = pd;
	q->qp.send_cq = attr->send_cq;
	q->qp.recv_cq = attr->recv_cq;
	q->qp.qp_type = attr->qp_type;
	q->qp.qp_num = M.next_qpn++;
	q->qp.state = IBV_QPS_INIT;
	q->id = id;
	/* rdma_cm creates the QP in INIT; it goes to RTS when the connection is established. */
	q->state = IBV_QPS_INIT;
	q->max_send = attr->cap.max_send_wr;
	q->max_recv = attr->cap.max_recv_wr;
	id->qp = &q->qp;
	log_add(true, MOCK_OBJ_QP, q);
	pthread_mutex_unlock(&M.lock);
	return 0;
}

void rdma_destroy_qp(struct rdma_cm_id *id)
{
	struct mock_qp *q = mqp(id->qp);

	pthread_mutex_lock(&M.lock);
	log_add(false, MOCK_OBJ_QP, q);
	pthread_mutex_unlock(&M.lock);
	/* What the QP held never completes: a destroyed QP reports nothing. */
	free(q->sq.v);
	free(q->rq.v);
	free(q);
	id->qp = NULL;
}

/* rdma_cm moves the QP to error, which flushes what it holds, and tells the peer. */
int rdma_disconnect(struct rdma_cm_id *id)
{
	pthread_mutex_lock(&M.lock);
	if (id->qp)
		qp_flush(mqp(id->qp));
	pthread_mutex_unlock(&M.lock);
	return 0;
}

int rdma_get_cm_event(struct rdma_event_channel *channel, struct rdma_cm_event **event)
{
	int ret = -1;

	(void)channel;
	pthread_mutex_lock(&M.lock);
	if (M.cm_head < M.ncm) {
		*event = M.cm[M.cm_head++];
		if (M.cm_head == M.ncm)
			M.cm_head = M.ncm = 0;
		ret = 0;
	}
	pthread_mutex_unlock(&M.lock);
	if (ret)
		errno = EAGAIN;
	return ret;
}

int rdma_ack_cm_event(struct rdma_cm_event *event)
{
	free(event);
	return 0;
}

void mock_cm_event(struct rdma_cm_id *id, enum rdma_cm_event_type type, int status)
{
	struct rdma_cm_event *ev = calloc(1, sizeof(*ev));

	if (!ev)
		abort();
	ev->id = id;
	ev->event = type;
	ev->status = status;
	pthread_mutex_lock(&M.lock);
	if (M.ncm == MOCK_MAX_CM_EVENTS)
		abort();
	M.cm[M.ncm++] = ev;
	pthread_mutex_unlock(&M.lock);
}

/* ---- rdma/mem.c, replaced ---- */

void *rdmae_mem_alloc(size_t len, int numa_node, bool *huge)
{
	void *p = NULL;
	int err;

	(void)numa_node;
	*huge = false;
	pthread_mutex_lock(&M.lock);
	err = fail_now(MOCK_MEM_ALLOC);
	if (!err) {
		p = calloc(1, len);
		if (p)
			log_add(true, MOCK_OBJ_MEM, p);
	}
	pthread_mutex_unlock(&M.lock);
	return p;
}

void rdmae_mem_free(void *p, size_t len, bool huge)
{
	(void)len;
	(void)huge;
	if (!p)
		return;
	pthread_mutex_lock(&M.lock);
	log_add(false, MOCK_OBJ_MEM, p);
	pthread_mutex_unlock(&M.lock);
	free(p);
}

int rdmae_device_numa_node(struct ibv_context *verbs)
{
	(void)verbs;
	return -1;
}

/* ---- scripting and inspection ---- */

void mock_reset(void)
{
	size_t i;

	pthread_mutex_lock(&M.lock);
	for (i = M.cm_head; i < M.ncm; i++)
		free(M.cm[i]);
	free(M.log);
	free(M.sends);
	free(M.mods);
	memset(M.calls, 0, sizeof(M.calls));
	memset(M.fail_at, 0, sizeof(M.fail_at));
	memset(M.fail_err, 0, sizeof(M.fail_err));
	memset(M.live, 0, sizeof(M.live));
	M.fail_bad = MOCK_BAD_NONE;
	M.log = NULL;
	M.nlog = M.caplog = 0;
	M.sends = NULL;
	M.nsends = M.capsends = 0;
	M.mods = NULL;
	M.nmods = M.capmods = 0;
	M.hook = NULL;
	M.hook_arg = NULL;
	M.recvs_posted = 0;
	M.max_qp_wr = 16384;
	M.max_cqe = 1 << 20;
	M.unacked = 0;
	M.bind_dev = 0;
	M.odp_write = false;
	M.cm_head = M.ncm = 0;
	pthread_mutex_unlock(&M.lock);
}

void mock_fail(enum mock_op op, unsigned int nth, int err)
{
	pthread_mutex_lock(&M.lock);
	M.fail_at[op] = M.calls[op] + nth;
	M.fail_err[op] = err;
	if (op == MOCK_POST_SEND)
		M.fail_bad = MOCK_BAD_NONE;
	pthread_mutex_unlock(&M.lock);
}

void mock_fail_post_send(unsigned int nth, int err, uint32_t bad)
{
	mock_fail(MOCK_POST_SEND, nth, err);
	pthread_mutex_lock(&M.lock);
	M.fail_bad = bad;
	pthread_mutex_unlock(&M.lock);
}

unsigned int mock_calls(enum mock_op op)
{
	unsigned int n;

	pthread_mutex_lock(&M.lock);
	n = M.calls[op];
	pthread_mutex_unlock(&M.lock);
	return n;
}

long mock_live(enum mock_obj kind)
{
	long n;

	pthread_mutex_lock(&M.lock);
	n = M.live[kind];
	pthread_mutex_unlock(&M.lock);
	return n;
}

bool mock_clean(char *why, size_t len)
{
	bool clean = true;
	int k;

	pthread_mutex_lock(&M.lock);
	snprintf(why, len, "nothing live");
	for (k = 0; k < MOCK_OBJ_COUNT && clean; k++) {
		if (M.live[k]) {
			snprintf(why, len, "%ld %s live", M.live[k], mock_kind_name[k]);
			clean = false;
		}
	}
	pthread_mutex_unlock(&M.lock);
	return clean;
}

void mock_set_device_limits(int max_qp_wr, int max_cqe)
{
	pthread_mutex_lock(&M.lock);
	M.max_qp_wr = max_qp_wr;
	M.max_cqe = max_cqe;
	pthread_mutex_unlock(&M.lock);
}

size_t mock_log_len(void)
{
	size_t n;

	pthread_mutex_lock(&M.lock);
	n = M.nlog;
	pthread_mutex_unlock(&M.lock);
	return n;
}

const struct mock_event *mock_log_at(size_t i)
{
	return i < M.nlog ? &M.log[i] : NULL;
}

bool mock_unwound(size_t from, char *why, size_t len)
{
	enum { DEPTH = 256 };
	const struct mock_event *stack[DEPTH];
	size_t n = 0, i;

	for (i = from; i < M.nlog; i++) {
		const struct mock_event *e = &M.log[i];

		if (e->create) {
			if (n == DEPTH) {
				snprintf(why, len, "more than %d objects live", DEPTH);
				return false;
			}
			stack[n++] = e;
			continue;
		}
		if (!n || stack[n - 1]->obj != e->obj) {
			snprintf(why, len, "event %zu: a %s destroyed while %s (created later) is live",
				 i - from, mock_kind_name[e->kind],
				 n ? mock_kind_name[stack[n - 1]->kind] : "nothing");
			return false;
		}
		n--;
	}
	if (n) {
		snprintf(why, len, "%zu objects never destroyed, the last created a %s", n,
			 mock_kind_name[stack[n - 1]->kind]);
		return false;
	}
	snprintf(why, len, "unwound");
	return true;
}

void mock_log_string(size_t from, char *buf, size_t len)
{
	size_t i, o = 0;

	if (!len)
		return;
	for (i = from; i < M.nlog && o + 4 <= len; i++) {
		if (o)
			buf[o++] = ' ';
		buf[o++] = M.log[i].create ? '+' : '-';
		buf[o++] = mock_kind_letter[M.log[i].kind];
	}
	buf[o] = '\0';
}

size_t mock_sends(void)
{
	size_t n;

	pthread_mutex_lock(&M.lock);
	n = M.nsends;
	pthread_mutex_unlock(&M.lock);
	return n;
}

const struct mock_send *mock_send_at(size_t i)
{
	return i < M.nsends ? &M.sends[i] : NULL;
}

void mock_set_send_hook(mock_send_hook fn, void *arg)
{
	pthread_mutex_lock(&M.lock);
	M.hook = fn;
	M.hook_arg = arg;
	pthread_mutex_unlock(&M.lock);
}

unsigned int mock_recvs_posted(void)
{
	unsigned int n;

	pthread_mutex_lock(&M.lock);
	n = M.recvs_posted;
	pthread_mutex_unlock(&M.lock);
	return n;
}

int mock_complete_sends(struct ibv_qp *qp, unsigned int n)
{
	struct mock_qp *q = mqp(qp);
	int ret = 0;

	pthread_mutex_lock(&M.lock);
	for (; n && !ret; n--) {
		struct mock_wr w;

		if (!q_len(&q->sq) || q->state == IBV_QPS_ERR) {
			ret = -1;
			break;
		}
		w = q_pop(&q->sq);
		if (w.signaled)
			cq_push(q->qp.send_cq, &w, IBV_WC_SUCCESS, w.length, q->qp.qp_num);
	}
	pthread_mutex_unlock(&M.lock);
	return ret;
}

int mock_fail_send(struct ibv_qp *qp, enum ibv_wc_status status)
{
	struct mock_qp *q = mqp(qp);
	struct mock_wr w;

	pthread_mutex_lock(&M.lock);
	if (!q_len(&q->sq)) {
		pthread_mutex_unlock(&M.lock);
		return -1;
	}
	/* An error completes its WR whether it asked for a completion or not. */
	w = q_pop(&q->sq);
	cq_push(q->qp.send_cq, &w, status, 0, q->qp.qp_num);
	qp_flush(q);
	pthread_mutex_unlock(&M.lock);
	return 0;
}

int mock_deliver(struct ibv_qp *qp, const void *data, uint32_t len)
{
	struct mock_qp *q = mqp(qp);
	struct mock_wr w;

	pthread_mutex_lock(&M.lock);
	if (!q_len(&q->rq) || q->state == IBV_QPS_ERR || len > q->rq.v[q->rq.head].length) {
		pthread_mutex_unlock(&M.lock);
		return -1;
	}
	w = q_pop(&q->rq);
	/* The NIC places the message in the posted buffer. */
	memcpy((void *)(uintptr_t)w.addr, data, len);
	cq_push(q->qp.recv_cq, &w, IBV_WC_SUCCESS, len, q->qp.qp_num);
	pthread_mutex_unlock(&M.lock);
	return 0;
}

void mock_qp_error(struct ibv_qp *qp)
{
	pthread_mutex_lock(&M.lock);
	qp_flush(mqp(qp));
	pthread_mutex_unlock(&M.lock);
}

/* Under the mock's lock: with a lock per lane, other lanes' threads post meanwhile. */
enum ibv_qp_state mock_qp_state(const struct ibv_qp *qp)
{
	enum ibv_qp_state st;

	pthread_mutex_lock(&M.lock);
	st = mqp(qp)->state;
	pthread_mutex_unlock(&M.lock);
	return st;
}

unsigned int mock_qp_sends_out(const struct ibv_qp *qp)
{
	unsigned int n;

	pthread_mutex_lock(&M.lock);
	n = (unsigned int)q_len(&mqp(qp)->sq);
	pthread_mutex_unlock(&M.lock);
	return n;
}

unsigned int mock_qp_recvs_out(const struct ibv_qp *qp)
{
	unsigned int n;

	pthread_mutex_lock(&M.lock);
	n = (unsigned int)q_len(&mqp(qp)->rq);
	pthread_mutex_unlock(&M.lock);
	return n;
}

size_t mock_cq_pending(void)
{
	size_t n = 0, i;

	pthread_mutex_lock(&M.lock);
	for (i = 0; i < MOCK_MAX_CQS; i++)
		if (M.cqs[i])
			n += M.cqs[i]->tail - M.cqs[i]->head;
	pthread_mutex_unlock(&M.lock);
	return n;
}

unsigned int mock_cq_unacked_at_destroy(void)
{
	return M.unacked;
}

size_t mock_modifies(void)
{
	return M.nmods;
}

const struct mock_modify *mock_modify_at(size_t i)
{
	return i < M.nmods ? &M.mods[i] : NULL;
}

struct ibv_context *mock_context(void)
{
	return &mock_ctx;
}

void mock_qp_set_state(struct ibv_qp *qp, enum ibv_qp_state state)
{
	pthread_mutex_lock(&M.lock);
	mqp(qp)->state = state;
	pthread_mutex_unlock(&M.lock);
}
