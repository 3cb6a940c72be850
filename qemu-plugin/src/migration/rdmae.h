/*
 * rdmae: live migration over the librdmae RDMA engine
 *
 * RAM moves through multifd, each channel a lane of one authenticated
 * RDMA connection, by zero-copy RDMA WRITE (multifd-rdmae.c); the main
 * stream and the engine's verified commit use lane 0; the destination
 * loads device state only once every page is placed and verified.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or
 * later.  See the COPYING file in the top-level directory.
 */

#ifndef QEMU_MIGRATION_RDMAE_H
#define QEMU_MIGRATION_RDMAE_H

#include "qapi/qapi-types-migration.h"

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
 * (multifd-channels for the lanes, rdmae-secret or x-rdmae-insecure,
 * multifd-compression, zero-page-detection).
 */
bool rdmae_check_addr(const InetSocketAddress *addr, Error **errp);
/*
 * Capabilities rdmae cannot serve, and multifd, which it needs; caps is
 * indexed by MigrationCapability (the parameters are rdmae_check_addr's).
 */
bool rdmae_caps_check(const bool *caps, Error **errp);
/* The destination is listening for (or receiving) an rdmae migration. */
bool rdmae_incoming_active(void);

void rdmae_start_outgoing_migration(MigrationState *s, InetSocketAddress *addr,
                                    Error **errp);
void rdmae_start_incoming_migration(InetSocketAddress *addr, Error **errp);

#else

static inline bool rdmae_incoming_active(void) { return false; }

#endif

#endif
