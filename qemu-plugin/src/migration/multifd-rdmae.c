/*
 * rdmae: multifd methods that move RAM by RDMA WRITE
 *
 * Source: send_prepare posts the batch's pages as RDMA WRITEs on the
 * channel's lane, from guest RAM into the destination's registered guest
 * RAM at the same offsets, and leaves only the multifd packet to send;
 * the send thread then sends it as a message on the same lane. Within one
 * RC queue pair the WRITEs are placed before the packet arrives, so when
 * the destination's receive thread reads the packet its pages are there.
 *
 * Destination: recv reads no payload. It records every page in the
 * receive bitmap (a later zero page of the same offset must then be
 * zero-filled, not skipped) and keeps the page sums for the commit.
 *
 * Nothing orders WRITEs across lanes, and they bypass the receive
 * threads, so a multifd sync alone is no fence: each lane acknowledges
 * every SYNC once everything before it is placed and processed, and the
 * source's sync waits for every acknowledgement.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or
 * later.  See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/timer.h"
#include "exec/ramblock.h"
#include "migration-stats.h"
#include "multifd.h"
#include "multifd-rdmae.h"
#include "ram.h"
#include "trace.h"

#include <rdmae/rdmae_engine.h>

#define RDMAE_SYNC_ACK_MAGIC    0x52445341u     /* "RDSA" */
#define RDMAE_SYNC_ACK_VERSION  1
/* Under a quarter of a lane's 32 credits (RDMAE_LANE_CREDITS). */
#define RDMAE_SYNC_SKIP_MAX     8

/* Destination to source, on the lane, once per SYNC packet. */
typedef struct QEMU_PACKED RdmaeSyncAck {
    uint32_t magic;
    uint32_t version;
    uint64_t seq;           /* the SYNC's number on this channel, from 1 */
} RdmaeSyncAck;

QEMU_BUILD_BUG_ON(sizeof(RdmaeSyncAck) != RDMAE_SYNC_ACK_SIZE);

typedef struct MultiFDRdmae {
    RdmaeLaneInfo lane;
    bool have_lane;
    RAMBlock *rb;           /* the last batch's block */
    int blk;                /* its index in the session */
    struct rdmae_run *runs; /* source: one per normal page */
    uint64_t syncs;         /* SYNC packets sent or received */
    uint64_t reported;      /* source: WRITE bytes counted in mig_stats */
    uint64_t unfenced;      /* source: packets since the last awaited ack */
    uint64_t unread;        /* source: SYNC acks skipped, not yet read */
} MultiFDRdmae;

static bool rdmae_lane(MultiFDRdmae *m, QIOChannel *ioc, Error **errp)
{
    if (!m->have_lane) {
        if (!rdmae_lane_info(ioc, &m->lane, errp)) {
            return false;
        }
        m->have_lane = true;
    }
    return true;
}

/* The session's index of @rb, looked up again only when the block changes. */
static int rdmae_block(MultiFDRdmae *m, RAMBlock *rb, Error **errp)
{
    if (rb != m->rb) {
        int i = rdmae_session_block_index(m->lane.sess, rb->idstr);

        if (i < 0) {
            error_setg(errp, "rdmae: RAM block '%s' is not part of the "
                       "migration (it appeared after pre-flight)", rb->idstr);
            return -1;
        }
        m->rb = rb;
        m->blk = i;
    }
    return m->blk;
}

/*
 * Source: count the lane's WRITE bytes in QEMU's statistics as their
 * completions come back, not as they are posted. A post returns at once,
 * and the pacing lets a lane run several MiB ahead of the wire; counted at
 * the post, QEMU's bandwidth (bytes per 100 ms) read the posting rate. On
 * a slow link that was many times the wire's rate, so the switchover
 * decision thought the remaining RAM fitted the downtime-limit and
 * stopped the guest early: 4.2 s of downtime against a 2 s limit on the
 * bench, 3.6 times tcp:'s. What is still in flight counts as pending
 * instead (rdmae_inflight_bytes).
 */
static void rdmae_account(MultiFDRdmae *m)
{
    struct rdmae_lane_stats st;

    if (rdmae_session_lane_stats(m->lane.sess, m->lane.lane, &st) == 0 &&
        st.one_sided_done > m->reported) {
        stat64_add(&mig_stats.multifd_bytes, st.one_sided_done - m->reported);
        m->reported = st.one_sided_done;
    }
}

static int run_cmp(const void *a, const void *b)
{
    const struct rdmae_run *x = a, *y = b;

    return x->local < y->local ? -1 : x->local > y->local;
}

static int multifd_rdmae_send_setup(MultiFDSendParams *p, Error **errp)
{
    MultiFDRdmae *m = g_new0(MultiFDRdmae, 1);

    m->runs = g_new(struct rdmae_run, multifd_ram_page_count());
    p->compress_data = m;
    /* The packet; device state (multifd-device-state.c) uses two. */
    p->iov = g_new0(struct iovec, 2);
    return 0;
}

static void multifd_rdmae_send_cleanup(MultiFDSendParams *p, Error **errp)
{
    MultiFDRdmae *m = p->compress_data;

    if (m) {
        g_free(m->runs);
        g_free(m);
        p->compress_data = NULL;
    }
    g_free(p->iov);
    p->iov = NULL;
}

static int multifd_rdmae_send_prepare(MultiFDSendParams *p, Error **errp)
{
    MultiFDRdmae *m = p->compress_data;
    MultiFDPages_t *pages = &p->data->u.ram;
    RAMBlock *rb = pages->block;
    uint32_t psz = multifd_ram_page_size();
    struct rdmae_err e = { 0 };
    size_t n = 0;
    int blk, rc;

    /* Normal pages first, zero pages last; counts both. */
    multifd_send_zero_page_detect(p);
    if (!rdmae_lane(m, p->c, errp)) {
        return -1;
    }
    blk = rdmae_block(m, rb, errp);
    if (blk < 0) {
        return -1;
    }
    rdmae_account(m);
    m->unfenced++;
    for (uint32_t i = 0; i < pages->normal_num; i++) {
        ram_addr_t off = pages->offset[i];

        m->runs[n++] = (struct rdmae_run) {
            .local = off, .remote = off, .len = psz,
        };
        if (m->lane.verify) {
            rdmae_session_page_sum(m->lane.sess, blk, off / psz,
                                   rb->host + off);
        }
    }
    for (uint32_t i = pages->normal_num; i < pages->num; i++) {
        if (m->lane.verify) {
            rdmae_session_page_zero(m->lane.sess, blk, pages->offset[i] / psz);
        }
    }
    if (n) {
        /* Zero detection swapped offsets: sorted, neighbours coalesce. */
        qsort(m->runs, n, sizeof(m->runs[0]), run_cmp);
        rc = rdmae_session_write_lane(m->lane.sess, m->lane.lane, blk, m->runs,
                                      n, &e);
        if (rc) {
            error_setg_errno(errp, -rc, "rdmae: RDMA WRITE of %zu pages of "
                             "'%s' on lane %u to %s: %s", n, rb->idstr,
                             m->lane.lane, m->lane.peer, e.msg);
            return -1;
        }
    }
    trace_multifd_rdmae_send(p->id, rb->idstr, n, pages->num - n);

    /* Only the packet travels as a message; no payload follows it. */
    p->next_packet_size = 0;
    p->iov[0].iov_base = p->packet;
    p->iov[0].iov_len = p->packet_len;
    p->iovs_num = 1;
    p->flags |= MULTIFD_FLAG_NOCOMP;
    multifd_send_fill_packet(p);
    return 0;
}

/*
 * The SYNC packet is out: wait for the destination to say that every
 * WRITE and packet before it on this lane is placed and processed.
 */
static int multifd_rdmae_send_sync(MultiFDSendParams *p, Error **errp)
{
    MultiFDRdmae *m = p->compress_data;
    int64_t t0 = qemu_clock_get_us(QEMU_CLOCK_REALTIME), wait_us;
    RdmaeSyncAck ack;
    uint64_t seq;

    if (!rdmae_lane(m, p->c, errp)) {
        return -1;
    }
    m->syncs++;
    /*
     * Tests only (RDMAE_TEST_FAULTS=no_sync_ack): do not wait. The
     * acknowledgements stay queued on the lane until the "rdmae" section's
     * END drains them, so that COMPLETE still follows every WRITE and a
     * race of the syncs reaches the verified commit.
     */
    if (m->lane.no_sync_ack) {
        rdmae_lane_ack_owed(p->c);
        return 0;
    }
    /*
     * Nothing sent on this lane since the last acknowledged SYNC: that
     * acknowledgement already said everything before it is placed, so
     * this one fences nothing. Do not wait for it; the next awaited SYNC
     * reads it first (the loop below), and one left at the end is freed
     * with the lane. QEMU 10.0.2 syncs twice at the switchover (the
     * search for dirty pages reaches the end of the block list once after
     * the final pages and once finding nothing); waiting for the second
     * acknowledgement was 45-74 ms of downtime on the bench
     * (doc/performance.md). The skips are bounded well below the lane's
     * credits: an idle lane through many rounds must not leave the
     * destination's acknowledgements waiting for credit.
     */
    if (!m->unfenced && m->unread < RDMAE_SYNC_SKIP_MAX) {
        m->unread++;
        trace_multifd_rdmae_send_sync_skip(p->id, m->syncs);
        return 0;
    }
    do {
        if (qio_channel_read_all(p->c, (char *)&ack, sizeof(ack), errp) < 0) {
            error_prepend(errp, "rdmae: multifd channel %u, SYNC %" PRIu64
                          " acknowledgement: ", p->id, m->syncs);
            return -1;
        }
        seq = be64_to_cpu(ack.seq);
        if (be32_to_cpu(ack.magic) != RDMAE_SYNC_ACK_MAGIC ||
            be32_to_cpu(ack.version) != RDMAE_SYNC_ACK_VERSION ||
            !seq || seq > m->syncs) {
            error_setg(errp, "rdmae: multifd channel %u: bad SYNC "
                       "acknowledgement (magic 0x%x, version %u, seq %" PRIu64
                       ", expected %" PRIu64 ")", p->id,
                       be32_to_cpu(ack.magic), be32_to_cpu(ack.version), seq,
                       m->syncs);
            return -1;
        }
    } while (seq < m->syncs);
    m->unfenced = 0;
    m->unread = 0;
    /* Everything before the SYNC is placed: count it before QEMU reads it. */
    rdmae_account(m);
    wait_us = qemu_clock_get_us(QEMU_CLOCK_REALTIME) - t0;
    /*
     * The switchover waits for one of these and for the commit's round
     * trip: the cost model counts them at what they really take here.
     */
    rdmae_session_note_round_trip(m->lane.sess, wait_us * 1000);
    trace_multifd_rdmae_send_sync(p->id, m->syncs, wait_us);
    return 0;
}

static int multifd_rdmae_recv_setup(MultiFDRecvParams *p, Error **errp)
{
    p->compress_data = g_new0(MultiFDRdmae, 1);
    return 0;
}

static void multifd_rdmae_recv_cleanup(MultiFDRecvParams *p)
{
    g_free(p->compress_data);
    p->compress_data = NULL;
}

static int multifd_rdmae_recv(MultiFDRecvParams *p, Error **errp)
{
    MultiFDRdmae *m = p->compress_data;
    uint32_t flags = p->flags & MULTIFD_FLAG_COMPRESSION_MASK;
    uint32_t psz = multifd_ram_page_size();
    int blk;

    if (flags != MULTIFD_FLAG_NOCOMP) {
        error_setg(errp, "multifd %u: flags received %x flags expected %x",
                   p->id, flags, MULTIFD_FLAG_NOCOMP);
        return -1;
    }
    if (!rdmae_lane(m, p->c, errp)) {
        return -1;
    }
    blk = rdmae_block(m, p->block, errp);
    if (blk < 0) {
        return -1;
    }
    /* Zero-fill what an earlier round wrote, mark the rest received. */
    multifd_recv_zero_page_process(p);
    /* The source's WRITEs came before this packet on the lane: placed. */
    for (uint32_t i = 0; i < p->normal_num; i++) {
        ramblock_recv_bitmap_set_offset(p->block, p->normal[i]);
    }
    if (m->lane.verify) {
        for (uint32_t i = 0; i < p->normal_num; i++) {
            rdmae_session_page_sum(m->lane.sess, blk, p->normal[i] / psz,
                                   p->host + p->normal[i]);
        }
        for (uint32_t i = 0; i < p->zero_num; i++) {
            rdmae_session_page_zero(m->lane.sess, blk, p->zero[i] / psz);
        }
    }
    return 0;
}

/*
 * Every packet before this SYNC is processed (zero-fills and sums
 * included), and receiving the SYNC proves the WRITEs before it placed.
 */
static int multifd_rdmae_recv_sync(MultiFDRecvParams *p, Error **errp)
{
    MultiFDRdmae *m = p->compress_data;
    RdmaeSyncAck ack = {
        .magic = cpu_to_be32(RDMAE_SYNC_ACK_MAGIC),
        .version = cpu_to_be32(RDMAE_SYNC_ACK_VERSION),
    };

    m->syncs++;
    ack.seq = cpu_to_be64(m->syncs);
    if (qio_channel_write_all(p->c, (char *)&ack, sizeof(ack), errp) < 0) {
        error_prepend(errp, "rdmae: multifd channel %u, SYNC %" PRIu64
                      " acknowledgement: ", p->id, m->syncs);
        return -1;
    }
    trace_multifd_rdmae_recv_sync(p->id, m->syncs);
    return 0;
}

const MultiFDMethods multifd_rdmae_ops = {
    .send_setup = multifd_rdmae_send_setup,
    .send_cleanup = multifd_rdmae_send_cleanup,
    .send_prepare = multifd_rdmae_send_prepare,
    .send_sync = multifd_rdmae_send_sync,
    .recv_setup = multifd_rdmae_recv_setup,
    .recv_cleanup = multifd_rdmae_recv_cleanup,
    .recv = multifd_rdmae_recv,
    .recv_sync = multifd_rdmae_recv_sync,
};
