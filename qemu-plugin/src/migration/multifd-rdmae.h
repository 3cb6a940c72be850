/*
 * rdmae: the multifd methods and what they need of a lane
 *
 * Internal to migration/rdmae.c (the link, its channels) and
 * migration/multifd-rdmae.c (the methods that move RAM).
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or
 * later.  See the COPYING file in the top-level directory.
 */

#ifndef QEMU_MIGRATION_MULTIFD_RDMAE_H
#define QEMU_MIGRATION_MULTIFD_RDMAE_H

#include "multifd.h"

struct rdmae_session;

/* What a multifd channel of an rdmae migration moves pages with. */
typedef struct RdmaeLaneInfo {
    struct rdmae_session *sess;
    unsigned int lane;          /* 1..multifd-channels */
    bool verify;                /* keep page sums for the commit */
    bool no_sync_ack;           /* tests only: see multifd_rdmae_send_sync */
    const char *peer;           /* for messages */
} RdmaeLaneInfo;

/*
 * The lane behind a multifd channel's QIOChannel, once the connection is
 * up (the session lives as long as the channel).
 */
bool rdmae_lane_info(QIOChannel *ioc, RdmaeLaneInfo *info, Error **errp);

/*
 * Tests only (no_sync_ack): the source did not wait for a SYNC's
 * acknowledgement on this lane; it is read before COMPLETE instead.
 */
void rdmae_lane_ack_owed(QIOChannel *ioc);

/* The size of a SYNC acknowledgement on the wire. */
#define RDMAE_SYNC_ACK_SIZE 16

extern const MultiFDMethods multifd_rdmae_ops;

#endif
