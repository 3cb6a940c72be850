/*
 * rdmae: live migration over the librdmae RDMA engine
 *
 * Guest RAM moves by zero-copy RDMA WRITE, one engine round per pre-copy
 * iteration over a snapshot of each RAMBlock's dirty bitmap; the device
 * state stream travels over the engine's message channel (a QIOChannel);
 * the destination loads it only once every page is placed and verified.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or
 * later.  See the COPYING file in the top-level directory.
 */

#ifndef QEMU_MIGRATION_RDMAE_H
#define QEMU_MIGRATION_RDMAE_H

#include "qapi/qapi-types-migration.h"
#include "exec/cpu-common.h"

/* One engine round's figures, for QEMU's migration statistics. */
typedef struct RdmaeRoundResult {
    uint64_t pages;         /* dirty pages of the round */
    uint64_t zero_pages;    /* of which zero (not written, zero-filled) */
    uint64_t bytes;         /* bytes written by RDMA */
} RdmaeRoundResult;

#ifdef CONFIG_RDMAE

/*
 * "HOST:PORT" (after "rdmae:") into addr. Anything after a comma is
 * refused, naming the migration parameters that took the old options'
 * place.
 */
bool rdmae_parse_uri(const char *str, InetSocketAddress *addr, Error **errp);
/*
 * The address (host and port only, for the URI and the QMP channels form
 * alike) and the migration parameters an rdmae migration reads
 * (multifd-channels for the lanes, rdmae-secret or x-rdmae-insecure).
 */
bool rdmae_check_addr(const InetSocketAddress *addr, Error **errp);
/*
 * Capabilities rdmae cannot serve; caps is indexed by MigrationCapability
 * (the parameters are rdmae_check_addr's).
 */
bool rdmae_caps_check(const bool *caps, Error **errp);
/* The destination is listening for (or receiving) an rdmae migration. */
bool rdmae_incoming_active(void);

void rdmae_start_outgoing_migration(MigrationState *s, InetSocketAddress *addr,
                                    Error **errp);
void rdmae_start_incoming_migration(InetSocketAddress *addr, Error **errp);

/*
 * Source, migration thread (ram.c). For each RAMBlock in
 * RAMBLOCK_FOREACH_NOT_IGNORED order, rdmae_round_bitmap() returns the
 * snapshot buffer that the next round sends (its bits past the block's
 * pages are ignored), or NULL when the block list no longer matches the
 * session's; rdmae_round() then sends one round over the snapshots.
 */
size_t rdmae_round_nblocks(void);
unsigned long *rdmae_round_bitmap(size_t index, RAMBlock *rb, Error **errp);
int rdmae_round(bool final, RdmaeRoundResult *res, Error **errp);
/* The VM is stopped: downtime counts from here; the next round is final. */
void rdmae_mark_stopped(void);
/* After the last byte of the stream: fence, verified commit. */
int rdmae_complete(Error **errp);
/*
 * The last rdmae_complete() could not learn the outcome: keep the source
 * paused.
 */
bool rdmae_outcome_unknown(void);
/* migrate_cancel before the channel exists. */
void rdmae_cancel_setup(void);
/* max-bandwidth or downtime-limit changed: apply to a running session. */
void rdmae_params_changed(void);
/*
 * Pre-flight (connect, registration on both sides) in ms, part of setup
 * time.
 */
int64_t rdmae_setup_ms(void);

#else

static inline bool rdmae_incoming_active(void) { return false; }
static inline size_t rdmae_round_nblocks(void) { return 0; }
static inline unsigned long *rdmae_round_bitmap(size_t index, RAMBlock *rb,
                                                Error **errp)
{
    return NULL;
}
static inline int rdmae_round(bool final, RdmaeRoundResult *res, Error **errp)
{
    return -ENOTSUP;
}
static inline void rdmae_mark_stopped(void) { }
static inline int rdmae_complete(Error **errp) { return -ENOTSUP; }
static inline bool rdmae_outcome_unknown(void) { return false; }
static inline void rdmae_cancel_setup(void) { }
static inline void rdmae_params_changed(void) { }
static inline int64_t rdmae_setup_ms(void) { return 0; }

#endif

#endif
