/* SPDX-License-Identifier: MIT */
/*
 * A connection: rdma_cm setup by host:port, negotiation, N lanes (one RC QP
 * each), a credit-controlled message channel on lane 0 and keepalive.
 *
 * Threading: each connection runs one progress thread that reaps completions
 * (one CQ for all lanes, event-driven), handles CM events and the keepalive
 * timer. API calls may come from any thread; they post work and sleep on
 * condition variables that the progress thread signals. Once a connection
 * fails (completion error, disconnect, keepalive timeout, abort) every call
 * returns the same negative errno and rdmae_conn_error() tells why.
 */
#ifndef RDMAE_CONN_H
#define RDMAE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"
#include "rdmae_wire.h"

struct rdmae_conn;
struct rdmae_dev;
struct rdmae_listener;

struct rdmae_conn_opts {
	const char *bind_addr;		/* local address (dedicated network); NULL = any */
	int timeout_ms;			/* resolve, route, connect, negotiate; default 5000 */
	uint16_t credits;		/* receives kept posted on lane 0; default 255 (on
					 * the other lanes at most RDMAE_LANE_CREDITS, from 2.1) */
	uint16_t lanes;			/* lanes asked for (client) / allowed (server) */
	uint16_t min_version;		/* test knobs; default 2.0 (RDMAE_VERSION_2) .. RDMAE_VERSION */
	uint16_t max_version;
	uint32_t send_size;		/* preferred send size; default 8192 */
	uint32_t recv_size;		/* max receive size; default 8192 */
	uint32_t frag_size;		/* max fragmented message, reassembled per lane; default 32 MiB */
	uint32_t rw_size;		/* max bytes in one RDMA WRITE; default 1 MiB */
	int keepalive_ms;		/* idle time before a probe; default 10000, 0 = off */
	int keepalive_timeout_ms;	/* probe answer deadline; default 5000 */
	/*
	 * Unread bytes before receives are withheld, per lane; default 4 MiB.
	 * With frag_size, what a peer can make us hold is bounded by
	 * lanes x (frag_size + recv_queue_bytes) (doc/security.md).
	 */
	size_t recv_queue_bytes;
	int send_timeout_ms;		/* rdmae_send and fences wait this long for a
					 * credit; default 30000, negative = for ever */
	uint32_t writes_in_flight;	/* RDMA WRITE WRs outstanding per lane; default 128
					 * (bytes in flight are bounded by the pacing budget too) */
	/*
	 * Authentication (doc/security.md). key_file holds the pre-shared key
	 * (its bytes as they are, 16..1024 of them); it is read by listen or
	 * connect and refused if group or others have access to it. Both sides
	 * prove knowledge of it during negotiate, before anything is pinned or
	 * advertised. Without a key file the connection is refused unless
	 * auth_none is set, which runs unauthenticated and says so on stderr.
	 *
	 * key/key_len: the key as bytes instead of a file (QEMU passes the
	 * bytes of a secret object), under the same length rules (16..1024
	 * bytes). listen or connect copies them; the caller's buffer is not
	 * read afterwards, and the library's copy is wiped (OPENSSL_cleanse)
	 * when the listener or connection is freed. key and key_file together
	 * are refused (-EINVAL), as is either with auth_none.
	 */
	const char *key_file;
	const void *key;
	size_t key_len;
	bool auth_none;
	/*
	 * The device to use (rdmae_dev.h), and its PD, so regions prepared on
	 * it can be attached; NULL: a PD of the connection's own. A connection
	 * that rdma_cm places on another device is refused. The connection
	 * holds a reference: closing the device while it lives is safe.
	 */
	struct rdmae_dev *dev;
};

/* The options' defaults; a zero field in opts passed to connect/listen means its default. */
void rdmae_conn_opts_default(struct rdmae_conn_opts *o);

int rdmae_listen(struct rdmae_listener **out, const char *host, const char *port,
		 const struct rdmae_conn_opts *o, struct rdmae_err *err);
/* The port actually bound (useful with port "0"). */
int rdmae_listener_port(const struct rdmae_listener *l);
/*
 * Wait for one connection, negotiated and with all its lanes; timeout_ms < 0
 * waits for ever. A pending connection that fails first (its negotiation,
 * its setup deadline) does not end the wait: it is dropped, and logged on
 * stderr unless a drop callback is set. At most 16 connections are pending
 * at once, at most 4 from one peer address.
 */
int rdmae_accept(struct rdmae_listener *l, struct rdmae_conn **out, int timeout_ms,
		 struct rdmae_err *err);

/*
 * Called for each dropped pending connection with its error. Return 0 to
 * keep accepting, or a negative errno for rdmae_accept to return, with e.
 */
typedef int (*rdmae_drop_fn)(void *arg, const struct rdmae_err *e);
void rdmae_listener_on_drop(struct rdmae_listener *l, rdmae_drop_fn fn, void *arg);
/* Pending connections dropped so far. */
uint64_t rdmae_listener_dropped(const struct rdmae_listener *l);
void rdmae_listener_destroy(struct rdmae_listener *l);

int rdmae_connect(struct rdmae_conn **out, const char *host, const char *port,
		  const struct rdmae_conn_opts *o, struct rdmae_err *err);

/* Disconnect and free everything; idempotent on NULL. */
void rdmae_conn_destroy(struct rdmae_conn *c);

/*
 * Put the connection in the error state with code (e.g. -ECANCELED) and
 * disconnect: every waiter wakes with that code. Safe from any thread.
 */
void rdmae_conn_abort(struct rdmae_conn *c, int code, const char *why);

/* 0 while healthy, else the sticky error code, with its message in err. */
int rdmae_conn_error(struct rdmae_conn *c, struct rdmae_err *err);

const struct rdmae_negotiated *rdmae_conn_negotiated(const struct rdmae_conn *c);

/* "10.9.9.2:4444" of the peer, for messages. */
const char *rdmae_conn_peer(const struct rdmae_conn *c);
/* The device the connection runs on (its PD holds the connection's memory). */
const struct rdmae_dev *rdmae_conn_dev(const struct rdmae_conn *c);

/*
 * Where the connection's setup went, in microseconds, summed over lanes.
 * Client: total is rdmae_connect's; server: from lane 0's connect request
 * to the accept. Phases a side does not time read 0.
 */
struct rdmae_setup_times {
	uint64_t total_us;
	uint64_t resolve_us;	/* client: address and route resolution */
	uint64_t lanes_us;	/* QP creation and ring registration */
	uint64_t handshake_us;	/* client: rdma_connect to ESTABLISHED */
	uint64_t negotiate_us;	/* client: negotiation and mutual authentication */
	uint64_t more_lanes_us;	/* client: wall time of the lanes after lane 0 */
	unsigned int lanes;
	/*
	 * Finer phases (appended, so that callers built against the fields
	 * above still compile). The ring and QP phases are parts of lanes_us,
	 * summed over lanes like it.
	 */
	uint64_t init_us;	/* client: connection, key and rdma_cm set up before lane 0 resolves */
	uint64_t device_us;	/* the device's completion channel, CQ and progress thread */
	uint64_t ring_alloc_us;	/* ring memory allocated and zeroed */
	uint64_t ring_reg_us;	/* ibv_reg_mr of the rings */
	uint64_t qp_create_us;	/* rdma_create_qp */
	uint64_t post_recv_us;	/* the receive rings posted */
	uint64_t auth_us;	/* negotiate messages made and handled: HMAC-SHA256 proofs,
				 * their checks, lane tokens (part of negotiate_us) */
	unsigned int lane0_recvs;	/* receives posted on lane 0 */
	unsigned int lane_recvs;	/* receives posted on each further lane */
};
void rdmae_conn_setup_times(const struct rdmae_conn *c, struct rdmae_setup_times *t);

/*
 * Send one message of 1..max_fragmented_size bytes, fragmented as needed.
 * Waits while no send credit is usable, at most opts.send_timeout_ms.
 * Messages arrive in order.
 */
int rdmae_send(struct rdmae_conn *c, const void *buf, size_t len, struct rdmae_err *err);

/*
 * The same with its own bound (timeout_ms < 0: for ever). -ETIMEDOUT when no
 * credit came in time: before the first fragment the connection is intact
 * and the send may be tried again; after it the connection has failed.
 */
int rdmae_send_timeout(struct rdmae_conn *c, const void *buf, size_t len, int timeout_ms,
		       struct rdmae_err *err);

/*
 * Receive the next whole message into a malloc'd buffer (the caller frees
 * it). timeout_ms < 0 waits for ever; -ETIMEDOUT when none came in time.
 */
int rdmae_recv(struct rdmae_conn *c, void **buf, size_t *len, int timeout_ms,
	       struct rdmae_err *err);

/* Lanes the connection has (each an RC QP), numbered 0..n-1; fixed once connected. */
unsigned int rdmae_conn_lanes(const struct rdmae_conn *c);

/*
 * Messages on a named lane: rdmae_send_timeout and rdmae_recv on lane
 * 0..rdmae_conn_lanes()-1 (-EINVAL beyond). Each lane is its own stream,
 * with its own credits, fragmentation, reassembly and receive queue (and
 * back-pressure: a reader that lags on one lane stalls that lane's senders
 * only); messages are in order within a lane, in no order across lanes.
 * rdmae_send and rdmae_recv are lane 0's. A peer of an earlier release takes
 * a message on a lane other than 0 for a protocol error (doc/protocol.md).
 *
 * Ordering (RC, within one QP): on one lane, a WRITE posted before a SEND
 * (rdmae_write_lane then rdmae_send_lane) is placed in the peer's memory
 * before the peer receives the SEND. Nothing is ordered across lanes.
 */
int rdmae_send_lane(struct rdmae_conn *c, unsigned int lane, const void *buf, size_t len,
		    int timeout_ms, struct rdmae_err *err);
int rdmae_recv_lane(struct rdmae_conn *c, unsigned int lane, void **buf, size_t *len,
		    int timeout_ms, struct rdmae_err *err);

/*
 * Tests only: whether RDMAE_TEST_FAULTS (rdma/faults.h) named the fault
 * name ("no_sync_ack") for this connection's process; false otherwise,
 * and always in production, where the variable is not set.
 */
bool rdmae_conn_test_fault(const struct rdmae_conn *c, const char *name);

/*
 * Wait until every message sent so far on lane has left and its SENDs have
 * completed here (on RC: the peer's side acknowledged them), for a sender
 * that must know its last message is out before it acts on it, e.g.
 * before a process exits or a connection is torn down. timeout_ms < 0
 * waits for ever. 0 once nothing is pending, even if the connection has
 * failed since (the peer read the messages and hung up); otherwise
 * -ETIMEDOUT, -EINVAL for a lane the connection lacks, or the connection's
 * error.
 */
int rdmae_send_drain_lane(struct rdmae_conn *c, unsigned int lane, int timeout_ms,
			  struct rdmae_err *err);

struct rdmae_lane_stats {
	uint64_t sends;			/* SEND WRs posted */
	uint64_t send_bytes;
	uint64_t recvs;			/* messages received */
	uint64_t recv_bytes;
	uint64_t writes;		/* RDMA WRITE WRs posted */
	uint64_t write_bytes;
	uint64_t doorbells;		/* ibv_post_send calls */
	uint64_t completions;		/* work completions reaped */
	uint64_t credit_stalls;		/* a sender waited for a credit */
	uint64_t sq_stalls;		/* a writer waited for send-queue room */
	uint64_t fences;		/* fences sent */
	uint64_t reads;			/* RDMA READ WRs posted */
	uint64_t read_bytes;
	/*
	 * WRITE and READ bytes whose completion has been reaped (the pacing's
	 * count): write_bytes + read_bytes minus this is what is still in
	 * flight. A caller that reports progress counts this, not the posts,
	 * which can run a whole pacing budget ahead of the wire.
	 */
	uint64_t one_sided_done;
};

int rdmae_conn_lane_stats(struct rdmae_conn *c, unsigned int lane, struct rdmae_lane_stats *out);

/* Bulk pacing as measured so far (see rdmae_pace.h in the sources). */
struct rdmae_pace_stats {
	uint64_t budget_bytes;		/* current bound on WRITE bytes in flight */
	uint64_t max_inflight_bytes;	/* most WRITE bytes ever in flight at once */
	double bandwidth;		/* measured delivery rate, bytes/s (0: not yet) */
	uint64_t base_latency_ns;	/* measured, queueing taken out (0: not yet) */
	uint64_t stalls;		/* a writer waited for the budget */
};

int rdmae_conn_pace_stats(struct rdmae_conn *c, struct rdmae_pace_stats *out);

/*
 * Clear the remote-write permission of every lane's QP in place (RTS to
 * RTS): from then on a WRITE that arrives is refused by the responder,
 * while the message channel keeps working. Nothing is unpinned. A lane
 * already in the error state accepts nothing and counts as revoked.
 */
int rdmae_conn_revoke_remote_write(struct rdmae_conn *c, struct rdmae_err *err);

#endif
