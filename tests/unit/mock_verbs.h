/* SPDX-License-Identifier: MIT */
/*
 * A verbs and rdma_cm stand-in for unit tests of the transport's concurrent
 * code without RDMA hardware, the way SPDK tests its RDMA transport:
 * mock_verbs.c defines the libibverbs and librdmacm functions the rdma/
 * objects call, and the tests link those objects as the library has them,
 * so the code that runs is the transport's own, with every verb scripted.
 *
 * What the mock models, because the transport's correctness depends on it:
 *   - a QP takes WRs into a send and a receive queue, bounded by the depths
 *     it was created with (a post past them fails with ENOMEM, as on real
 *     devices), and completes them only when the test says so;
 *   - an unsignalled send completes silently, but an error or a flush
 *     completes every WR, signalled or not, and a QP in error flushes all
 *     it holds and everything posted to it later, as a QP in the error
 *     state does;
 *   - one CQ per channel, which raises one event per arming;
 *   - every object created and destroyed is logged, so a test can check
 *     that a failure released what came before it, in reverse order.
 * The conn helpers below (mock_conn.c) build connections as rdmae_connect leaves them,
 * but with no progress thread: mock_progress() is one turn of its loop, so
 * every completion is reaped exactly when the test decides.
 */
#ifndef RDMAE_MOCK_VERBS_H
#define RDMAE_MOCK_VERBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "rdmae_conn.h"
#include "rdmae_err.h"
#include "rdmae_region.h"

/* Verbs whose failure a test can ask for. */
enum mock_op {
	MOCK_QUERY_DEVICE,
	MOCK_ALLOC_PD,
	MOCK_CREATE_COMP_CHANNEL,
	MOCK_CREATE_CQ,
	MOCK_REQ_NOTIFY_CQ,
	MOCK_POLL_CQ,
	MOCK_REG_MR,
	MOCK_CREATE_QP,
	MOCK_POST_SEND,
	MOCK_POST_RECV,
	MOCK_MODIFY_QP,
	MOCK_MEM_ALLOC,			/* rdmae_mem_alloc, the rings' memory */
	MOCK_OP_COUNT
};

/* Objects the mock hands out, as logged. */
enum mock_obj {
	MOCK_OBJ_PD,
	MOCK_OBJ_CHANNEL,
	MOCK_OBJ_CQ,
	MOCK_OBJ_MR,
	MOCK_OBJ_QP,
	MOCK_OBJ_MEM,
	MOCK_OBJ_CM_ID,
	MOCK_OBJ_CM_CHANNEL,
	MOCK_OBJ_COUNT
};

struct mock_event {
	bool create;
	enum mock_obj kind;
	const void *obj;
};

/* Forget all scripting, counts and logs (objects still live are reported by mock_clean). */
void mock_reset(void);
/* The nth call from now (1: the next) of op fails with err, a positive errno. */
void mock_fail(enum mock_op op, unsigned int nth, int err);
/* No bad WR reported: the whole chain was refused. */
#define MOCK_BAD_NONE UINT32_MAX
/*
 * The nth ibv_post_send from now fails with err; the WRs before index bad
 * of its chain were taken by the QP and *bad_wr points at WR number bad
 * (MOCK_BAD_NONE: *bad_wr untouched, nothing taken).
 */
void mock_fail_post_send(unsigned int nth, int err, uint32_t bad);
unsigned int mock_calls(enum mock_op op);
/* Objects of a kind created and not destroyed. */
long mock_live(enum mock_obj kind);
/* True when nothing the mock handed out is still live; else why says what. */
bool mock_clean(char *why, size_t len);
/* Device limits ibv_query_device reports. */
void mock_set_device_limits(int max_qp_wr, int max_cqe);

size_t mock_log_len(void);
/* Good until the next object is created or destroyed. */
const struct mock_event *mock_log_at(size_t i);
/*
 * Since log position from: every object created was destroyed, the last
 * created first, and nothing else was destroyed. Else false, why says what.
 */
bool mock_unwound(size_t from, char *why, size_t len);
/*
 * The log since from as text, "+M -Q ...": + created, - destroyed; P PD,
 * H completion channel, C CQ, M MR, Q QP, R ring memory, I cm_id, E CM
 * event channel.
 */
void mock_log_string(size_t from, char *buf, size_t len);

/* A send WR as the QP took it. */
#define MOCK_SEND_COPY 1024
struct mock_send {
	const struct ibv_qp *qp;
	unsigned int lane;		/* index of the lane whose QP took it */
	unsigned int doorbell;		/* ibv_post_send call it came with, from 1 */
	uint64_t wr_id;
	enum ibv_wr_opcode opcode;
	unsigned int send_flags;
	uint64_t addr;
	uint32_t length;
	uint32_t lkey;
	uint64_t remote_addr;
	uint32_t rkey;
	uint32_t ncopy;			/* SEND: bytes of its buffer copied at post time */
	uint8_t data[MOCK_SEND_COPY];
};

size_t mock_sends(void);
/* Good until the next WR is recorded: read it while no other thread posts. */
const struct mock_send *mock_send_at(size_t i);
/* Called with every send WR the QP takes, after it is recorded (connection lock held). */
typedef void (*mock_send_hook)(const struct mock_send *s, void *arg);
void mock_set_send_hook(mock_send_hook fn, void *arg);
/* Receive WRs taken by all QPs so far. */
unsigned int mock_recvs_posted(void);

/* ---- completions, as the test scripts them ---- */

/* The next n send WRs of qp complete successfully (a CQE for the signalled ones). 0, or -1 if fewer. */
int mock_complete_sends(struct ibv_qp *qp, unsigned int n);
/* The next send WR of qp fails with status; the QP goes to error and flushes the rest. */
int mock_fail_send(struct ibv_qp *qp, enum ibv_wc_status status);
/* A message arrives in the next receive of qp. 0, or -1 with no receive posted or too long. */
int mock_deliver(struct ibv_qp *qp, const void *data, uint32_t len);
/* The QP goes to error (the peer is gone): all it holds is flushed. */
void mock_qp_error(struct ibv_qp *qp);
enum ibv_qp_state mock_qp_state(const struct ibv_qp *qp);
/* Move qp to state as the connection's setup would (e.g. RTS once the peer is there). */
void mock_qp_set_state(struct ibv_qp *qp, enum ibv_qp_state state);
/* The mock device's context, for tests that make their own PD, CQ and QPs. */
struct ibv_context *mock_context(void);
unsigned int mock_qp_sends_out(const struct ibv_qp *qp);
unsigned int mock_qp_recvs_out(const struct ibv_qp *qp);
/* Completions in CQs not yet polled. */
size_t mock_cq_pending(void);
/* CQ events that were got and not acked when their CQ was destroyed (must stay 0). */
unsigned int mock_cq_unacked_at_destroy(void);
/*
 * The device rdma_bind_addr finds for any address from now: 0 the mock
 * device "mock0" (connections are made on it), 1 a second one "mock1", -1
 * none (as for a wildcard address). mock_reset: 0.
 */
void mock_bind_device(int which);
/* A CM event for id, returned by the next rdma_get_cm_event. */
void mock_cm_event(struct rdma_cm_id *id, enum rdma_cm_event_type type, int status);

struct mock_modify {
	const struct ibv_qp *qp;
	int mask;
	enum ibv_qp_state state;	/* with IBV_QP_STATE */
	unsigned int access;		/* with IBV_QP_ACCESS_FLAGS */
};
size_t mock_modifies(void);
const struct mock_modify *mock_modify_at(size_t i);
/* Access flags an MR was registered with. */
int mock_mr_access(const struct ibv_mr *mr);
/*
 * Devices opened from now report ODP for RC WRITE (ibv_query_device_ex) on
 * mock0, as a ConnectX does and rxe on Linux 6.1 does not. mock_reset: off.
 */
void mock_set_odp_write(bool on);

/* ---- connections over the mock (mock_conn.c: the transport's own code, no progress thread) ---- */

/* Small defaults: 16 credits, 1 KiB sends and receives, 64 KiB WRITEs, no keepalive. */
void mock_conn_opts(struct rdmae_conn_opts *o);
/* A connection as allocation leaves it: no device, no lanes. NULL on failure. */
struct rdmae_conn *mock_conn_bare(const struct rdmae_conn_opts *o);
/* The transport's device setup (PD, channel, CQ) on the mock device; its thread is stopped again. */
int mock_conn_setup_device(struct rdmae_conn *c, struct rdmae_err *err);
/*
 * Connected and negotiated, with lanes lanes (o NULL: mock_conn_opts),
 * every lane's QP ready to send, credits as negotiation leaves them.
 */
struct rdmae_conn *mock_conn(unsigned int lanes, const struct rdmae_conn_opts *o);
struct rdma_cm_id *mock_cm_id(void);
struct ibv_qp *mock_lane_qp(struct rdmae_conn *c, unsigned int lane);
/* One turn of the progress thread without its poll(): completions, CM events, housekeeping. */
void mock_progress(struct rdmae_conn *c);
/* The keepalive step of the progress thread; returns its poll timeout. */
int mock_keepalive(struct rdmae_conn *c);
/* The connection's pacing, over its lanes: WRITE/READ bytes in flight, and the budget. */
uint64_t mock_pace_inflight(struct rdmae_conn *c);
uint64_t mock_pace_budget(struct rdmae_conn *c);
/* Is a WR in flight on any lane? */
bool mock_conn_any_busy(struct rdmae_conn *c);
/* A data-transfer message from the peer on a lane: header and payload (len may be 0). */
int mock_deliver_msg(struct rdmae_conn *c, unsigned int lane, const void *payload, uint32_t len,
		     uint16_t granted, uint16_t flags, uint32_t fence_seq);
/* Fail the connection as a completion error would; for send hooks, which run with its lock held. */
void mock_conn_fail_locked(struct rdmae_conn *c, int code, const char *why);

/* ---- region internals (rdma/mr.c), for the on-demand cache ---- */

/* PIN_ALL: the MR of span i. */
const struct ibv_mr *mock_region_mr(const struct rdmae_region *r, size_t i);
/* ON_DEMAND: chunk size, and chunk idx's MR (NULL while unpinned) and WRs in flight on it. */
size_t mock_region_chunk_size(const struct rdmae_region *r);
const struct ibv_mr *mock_chunk_mr(const struct rdmae_region *r, size_t idx);
unsigned int mock_chunk_refs(const struct rdmae_region *r, size_t idx);
/* The idle pinned chunks of c, most recently used first: up to cap indices into out. */
size_t mock_lru(struct rdmae_conn *c, size_t *out, size_t cap);
/* c's cache holds no idle chunk: its LRU's head and tail are both empty. */
bool mock_lru_empty(struct rdmae_conn *c);

#endif
