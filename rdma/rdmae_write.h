/* SPDX-License-Identifier: MIT */
/*
 * Bulk transfer: one-sided RDMA WRITE of runs from a local region straight
 * into the peer's advertised region, spread across the lanes; and RDMA READ,
 * its mirror, from a region the peer advertised for reading.
 *
 * Runs are coalesced and split to the negotiated max_rw_size, chained per
 * lane behind one doorbell, and signalled selectively. A fence is a message
 * sent on every lane after its WRITEs: on an RC QP its arrival tells the
 * peer that all the WRITEs before it on that lane are placed.
 */
#ifndef RDMAE_WRITE_H
#define RDMAE_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"
#include "rdmae_runs.h"
#include "rdmae_wire.h"

struct rdmae_conn;
struct rdmae_region;

/* The peer's region as advertised: descriptors covering it in order, each RDMAE_DESC_SPAN long but the last. */
struct rdmae_remote {
	const struct rdmae_bufdesc *descs;
	size_t ndescs;
	uint64_t len;
};

/*
 * Post WRITEs for runs (local offsets into src, remote offsets into dst).
 * Returns once all are posted; may block for send-queue room. The runs
 * array is coalesced in place. Offsets are checked against both regions.
 */
int rdmae_write(struct rdmae_conn *c, struct rdmae_region *src, const struct rdmae_remote *dst,
		struct rdmae_run *runs, size_t n, struct rdmae_err *err);

/*
 * Post READs for runs: `remote` offsets into the peer's region src (which
 * it registered with remote_read and advertised), `local` offsets into dst
 * (registered with local_write). Returns once all are posted; the data is
 * in dst once rdmae_write_flush returns. Runs are coalesced in place and
 * checked against both regions, as for rdmae_write. The outstanding READs
 * per lane are bounded by what rdma_cm negotiated with the peer (the
 * devices' limits); READs beyond it wait in the send queue.
 */
int rdmae_read(struct rdmae_conn *c, struct rdmae_region *dst, const struct rdmae_remote *src,
	       struct rdmae_run *runs, size_t n, struct rdmae_err *err);

/*
 * rdmae_write and rdmae_read with every WR on one lane's QP (0..
 * rdmae_conn_lanes()-1, -EINVAL beyond). Ordering: on one lane, a WRITE
 * posted before a SEND (rdmae_send_lane on the same lane) is placed in the
 * peer's memory before the peer receives that SEND (RC ordering within one
 * QP); across lanes nothing is ordered. Several threads may drive different
 * lanes at once: each lane has its own lock, so they post, wait for room
 * and complete without waiting for each other (rdma/internal.h, Locking).
 */
int rdmae_write_lane(struct rdmae_conn *c, unsigned int lane, struct rdmae_region *src,
		     const struct rdmae_remote *dst, struct rdmae_run *runs, size_t n,
		     struct rdmae_err *err);
int rdmae_read_lane(struct rdmae_conn *c, unsigned int lane, struct rdmae_region *dst,
		    const struct rdmae_remote *src, struct rdmae_run *runs, size_t n,
		    struct rdmae_err *err);

/* Wait until every WRITE and READ posted so far has completed locally. */
int rdmae_write_flush(struct rdmae_conn *c, struct rdmae_err *err);

/* Send a fence on every lane after its WRITEs; *seq receives its number (1, 2, ...). */
int rdmae_fence(struct rdmae_conn *c, uint32_t *seq, struct rdmae_err *err);

/* Peer side: wait until fence seq has arrived on every lane. */
int rdmae_fence_wait(struct rdmae_conn *c, uint32_t seq, int timeout_ms, struct rdmae_err *err);

/*
 * The same on one lane only, for a caller that owns the other lanes' message
 * streams (where a fence would arrive as a message of theirs): a fence
 * sent with rdmae_fence_lane is waited for with rdmae_fence_wait_lane on
 * the same lane. -EINVAL for a lane the connection lacks.
 */
int rdmae_fence_lane(struct rdmae_conn *c, unsigned int lane, uint32_t *seq,
		     struct rdmae_err *err);
int rdmae_fence_wait_lane(struct rdmae_conn *c, unsigned int lane, uint32_t seq, int timeout_ms,
			  struct rdmae_err *err);

#endif
