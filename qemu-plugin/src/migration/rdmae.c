/*
 * rdmae: live migration over the librdmae RDMA engine
 *
 * RAM moves through multifd: every multifd channel is a lane (an RC queue
 * pair) of one authenticated RDMA connection, and multifd-rdmae.c's
 * methods write the pages by zero-copy RDMA WRITE from source guest RAM
 * into destination guest RAM. Lane 0 carries the main migration stream
 * and the engine's messages: pre-flight (both sides register guest RAM
 * and the destination advertises it), the stream's bytes, and the
 * verified commit.
 *
 * Source:
 *   rdmae_start_outgoing_migration (BQL): check, list the RAM blocks,
 *   hand QEMU the main channel (not connected yet). In the migration
 *   thread, multifd's first channel connects (authentication) and runs
 *   pre-flight; every channel then wraps its lane. After the stream's last
 *   byte, the transport's complete() sends COMPLETE and waits for the
 *   destination's verified COMMIT_OK.
 *
 * Destination:
 *   rdmae_start_incoming_migration: listen; an accept thread takes one
 *   connection, pre-flights, reads each lane's first multifd message, and
 *   hands QEMU the main channel first, then the lanes (lanes cannot be
 *   peeked: the first channel QEMU sees is taken as the main one). A pump
 *   thread runs the engine on lane 0 and feeds the main channel. The
 *   "rdmae" section, after "ram" and before every device, waits for the
 *   engine's commit: no device state loads before every page is placed
 *   and verified.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or
 * later.  See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-types-migration.h"
#include "qapi/qapi-visit-migration.h"
#include "qapi/clone-visitor.h"
#include "crypto/secret_common.h"
#include "qemu/coroutine.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/event_notifier.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/rcu.h"
#include "qemu/sockets.h"
#include "qemu/thread.h"
#include "qemu/units.h"
#include "qemu/iov.h"
#include "qom/object.h"
#include "io/channel.h"
#include "io/channel-watch.h"
#include "io/channel-util.h"
#include "block/aio.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "exec/target_page.h"
#include "migration.h"
#include "migration/client-options.h"
#include "migration/misc.h"
#include "migration/register.h"
#include "channel.h"
#include "multifd.h"
#include "multifd-rdmae.h"
#include "options.h"
#include "qemu-file.h"
#include "ram.h"
#include "rdmae.h"
#include "trace.h"

#include <sys/resource.h>

#include <rdmae/rdmae_engine.h>

#define RDMAE_LANES_MAX         16
#define RDMAE_KEY_MIN           16
#define RDMAE_KEY_MAX           1024
#define RDMAE_BLOCKS_MAX        4096

/* ---- address and parameters ---- */

bool rdmae_parse_uri(const char *str, InetSocketAddress *addr, Error **errp)
{
    const char *comma = strchr(str, ',');

    /*
     * The options that used to follow the address are migration
     * parameters now; say where each went rather than "bad address".
     */
    if (comma) {
        error_setg(errp, "rdmae: '%s' after the address: rdmae:HOST:PORT "
                   "takes no options; set migration parameters instead "
                   "(multifd-channels for the lanes, rdmae-secret for the "
                   "key, x-rdmae-insecure, x-rdmae-verify, "
                   "x-rdmae-registration)", comma + 1);
        return false;
    }
    if (inet_parse(addr, str, errp) < 0) {
        error_prepend(errp, "rdmae: address '%s': ", str);
        return false;
    }
    return true;
}

/* Parameters that rdmae refuses, whatever the address. */
static bool rdmae_params_check(Error **errp)
{
    const char *secret = migrate_rdmae_secret();
    bool has_secret = secret && *secret;

    if (migrate_tls()) {
        error_setg(errp, "rdmae: TLS (tls-creds) is not supported by the "
                   "rdmae transport; clear tls-creds or use tcp:");
        return false;
    }
    if (migrate_mode() != MIG_MODE_NORMAL) {
        error_setg(errp, "rdmae: migration mode '%s' is not supported; only "
                   "'normal'", MigMode_str(migrate_mode()));
        return false;
    }
    if (ram_block_discard_is_required()) {
        error_setg(errp, "rdmae: a device needs RAM discards (e.g. virtio-mem),"
                   " which pinned RDMA registrations cannot follow");
        return false;
    }
    if (migrate_multifd_channels() + 1 > RDMAE_LANES_MAX) {
        error_setg(errp, "rdmae: multifd-channels is %d: rdmae connects "
                   "multifd-channels + 1 lanes, at most %d; set it to %d or "
                   "fewer", migrate_multifd_channels(), RDMAE_LANES_MAX,
                   RDMAE_LANES_MAX - 1);
        return false;
    }
    if (migrate_multifd_compression() != MULTIFD_COMPRESSION_NONE) {
        error_setg(errp, "rdmae: multifd-compression '%s': rdmae writes guest "
                   "RAM as it is, from memory to memory; set it to 'none'",
                   MultiFDCompression_str(migrate_multifd_compression()));
        return false;
    }
    /*
     * Legacy detection sends zero pages on the main channel, which the
     * RDMA WRITEs on the other lanes are not ordered with: a zero page of
     * one round could land over the next round's data.
     */
    if (migrate_zero_page_detection() == ZERO_PAGE_DETECTION_LEGACY) {
        error_setg(errp, "rdmae: zero-page-detection 'legacy' sends zero "
                   "pages on the main channel, which RDMA WRITEs on the "
                   "other lanes are not ordered with; use 'multifd' (the "
                   "default) or 'none'");
        return false;
    }
    if (has_secret && migrate_rdmae_insecure()) {
        error_setg(errp, "rdmae: rdmae-secret names a key ('%s') and "
                   "x-rdmae-insecure is on: set one of them", secret);
        return false;
    }
    if (!has_secret && !migrate_rdmae_insecure()) {
        error_setg(errp, "rdmae: no key: set the rdmae-secret parameter to "
                   "the id of a 'secret' object that holds the key shared "
                   "with the peer (%d to %d bytes), or x-rdmae-insecure=on "
                   "to migrate without authentication", RDMAE_KEY_MIN,
                   RDMAE_KEY_MAX);
        return false;
    }
    return true;
}

bool rdmae_check_addr(const InetSocketAddress *addr, Error **errp)
{
    uint64_t port;

    if (!addr->host || !*addr->host) {
        error_setg(errp, "rdmae: no host (rdmae:HOST:PORT)");
        return false;
    }
    if (!addr->port || qemu_strtou64(addr->port, NULL, 10, &port) < 0 ||
        port < 1 || port > 65535) {
        error_setg(errp, "rdmae: port '%s' is not in 1..65535",
                   addr->port ? addr->port : "");
        return false;
    }
    /* rdma_cm resolves and routes by itself: socket options mean nothing. */
    if (addr->has_to || addr->has_ipv4 || addr->has_ipv6 ||
        addr->has_keep_alive || addr->has_numeric) {
        error_setg(errp, "rdmae: the address takes only host and port, not "
                   "'%s'", addr->has_to ? "to" : addr->has_ipv4 ? "ipv4" :
                   addr->has_ipv6 ? "ipv6" : addr->has_keep_alive ?
                   "keep-alive" : "numeric");
        return false;
    }
#ifdef HAVE_IPPROTO_MPTCP
    if (addr->has_mptcp) {
        error_setg(errp, "rdmae: the address takes only host and port, not "
                   "'mptcp'");
        return false;
    }
#endif
    return rdmae_params_check(errp);
}

/*
 * What a migration takes from the parameters, read once under the BQL
 * when it starts: a parameter changed later applies to the next one.
 */
typedef struct RdmaeParams {
    unsigned int lanes;
    enum rdmae_reg_mode reg;
    bool verify;
    uint8_t *key;               /* the secret's bytes; NULL: insecure */
    size_t key_len;
} RdmaeParams;

static void rdmae_params_wipe(RdmaeParams *p)
{
    if (p->key) {
        explicit_bzero(p->key, p->key_len);
        g_free(p->key);
        p->key = NULL;
    }
}

/*
 * A secret read from a file must be private to its owner, as the
 * library's own key files must: QEMU's secret object does not check.
 */
static bool rdmae_secret_file_private(const char *id, Error **errp)
{
    Object *obj = object_resolve_path_component(object_get_objects_root(),
                                                id);
    g_autofree char *file = NULL;
    struct stat st;

    if (!obj || !object_property_find(obj, "file")) {
        return true;
    }
    file = object_property_get_str(obj, "file", NULL);
    if (!file || !*file || stat(file, &st) < 0) {
        return true;
    }
    if (st.st_mode & 077) {
        error_setg(errp, "rdmae: secret '%s' reads %s, which group or "
                   "others can access (mode %04o); it must be readable by "
                   "its owner only (chmod 600)", id, file,
                   (unsigned int)(st.st_mode & 07777));
        return false;
    }
    return true;
}

/* BQL held: the secret object is looked up here. */
static bool rdmae_params_get(RdmaeParams *p, Error **errp)
{
    const char *secret = migrate_rdmae_secret();

    memset(p, 0, sizeof(*p));
    if (!rdmae_params_check(errp)) {
        return false;
    }
    p->lanes = migrate_multifd_channels() + 1;
    p->verify = migrate_rdmae_verify();
    switch (migrate_rdmae_registration()) {
    case RDMAE_REGISTRATION_MODE_PIN_ALL:
        p->reg = RDMAE_REG_PIN_ALL;
        break;
    case RDMAE_REGISTRATION_MODE_ON_DEMAND:
        p->reg = RDMAE_REG_ON_DEMAND;
        break;
    case RDMAE_REGISTRATION_MODE_ODP:
        p->reg = RDMAE_REG_ODP;
        break;
    default:
        p->reg = RDMAE_REG_AUTO;
        break;
    }
    if (secret && *secret) {
        if (qcrypto_secret_lookup(secret, &p->key, &p->key_len, errp) < 0) {
            error_prepend(errp, "rdmae: rdmae-secret: ");
            return false;
        }
        if (p->key_len < RDMAE_KEY_MIN || p->key_len > RDMAE_KEY_MAX) {
            error_setg(errp, "rdmae: secret '%s' holds %zu bytes; the key "
                       "must have %d to %d", secret, p->key_len,
                       RDMAE_KEY_MIN, RDMAE_KEY_MAX);
            rdmae_params_wipe(p);
            return false;
        }
        if (!rdmae_secret_file_private(secret, errp)) {
            rdmae_params_wipe(p);
            return false;
        }
    } else {
        warn_report("rdmae: x-rdmae-insecure is on: no authentication, "
                    "anyone who reaches the destination's address can write "
                    "into its guest RAM");
    }
    return true;
}

static void conn_opts_from_params(const RdmaeParams *p,
                                  struct rdmae_conn_opts *o)
{
    rdmae_conn_opts_default(o);
    o->lanes = p->lanes;
    o->key = p->key;
    o->key_len = p->key_len;
    o->auth_none = !p->key;
}

bool rdmae_caps_check(const bool *caps, Error **errp)
{
    static const MigrationCapability refused[] = {
        MIGRATION_CAPABILITY_POSTCOPY_RAM,
        MIGRATION_CAPABILITY_XBZRLE,
        MIGRATION_CAPABILITY_RETURN_PATH,
        MIGRATION_CAPABILITY_SWITCHOVER_ACK,
        MIGRATION_CAPABILITY_MAPPED_RAM,
        MIGRATION_CAPABILITY_X_COLO,
        MIGRATION_CAPABILITY_BACKGROUND_SNAPSHOT,
        MIGRATION_CAPABILITY_DIRTY_BITMAPS,
        MIGRATION_CAPABILITY_POSTCOPY_PREEMPT,
        MIGRATION_CAPABILITY_ZERO_COPY_SEND,
    };

    for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
        if (caps[refused[i]]) {
            error_setg(errp, "rdmae: capability '%s' is not supported by the "
                       "rdmae transport; disable it or use tcp:",
                       MigrationCapability_str(refused[i]));
            return false;
        }
    }
    if (!caps[MIGRATION_CAPABILITY_MULTIFD]) {
        error_setg(errp, "rdmae: the multifd capability is off: rdmae moves "
                   "RAM through multifd, one RDMA lane per channel; enable "
                   "multifd on both sides (on the destination before "
                   "migrate-incoming)");
        return false;
    }
    return true;
}

/* ---- the RAM blocks ---- */

typedef struct RdmaeBlockInfo {
    char *name;
    void *host;
    uint64_t len;
    size_t page_size;
    bool hugepages;
} RdmaeBlockInfo;

/*
 * Every migratable block, ROMs and resizable ones included, at its
 * max_length: the mapping is fixed at that size, so registering it all
 * makes the used length (which the stream's MEM_SIZE record sets on the
 * destination) irrelevant to pre-flight. BQL held.
 */
static RdmaeBlockInfo *list_blocks(size_t *n, Error **errp)
{
    GArray *a = g_array_new(false, true, sizeof(RdmaeBlockInfo));
    size_t ps = qemu_target_page_size();
    RAMBlock *rb;

    WITH_RCU_READ_LOCK_GUARD() {
        RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
            RdmaeBlockInfo bi = {
                .name = g_strdup(rb->idstr),
                .host = rb->host,
                .len = rb->max_length,
                .page_size = ps,
                .hugepages = qemu_ram_pagesize(rb) > qemu_real_host_page_size(),
            };

            g_array_append_val(a, bi);
        }
    }
    *n = a->len;
    if (!a->len || a->len > RDMAE_BLOCKS_MAX) {
        error_setg(errp, "rdmae: %u RAM blocks to migrate (1..%d allowed)",
                   a->len, RDMAE_BLOCKS_MAX);
        for (guint i = 0; i < a->len; i++) {
            g_free(g_array_index(a, RdmaeBlockInfo, i).name);
        }
        g_array_free(a, true);
        return NULL;
    }
    return (RdmaeBlockInfo *)g_array_free(a, false);
}

static void free_blocks(RdmaeBlockInfo *b, size_t n)
{
    for (size_t i = 0; b && i < n; i++) {
        g_free(b[i].name);
    }
    g_free(b);
}

static struct rdmae_block *engine_blocks(const RdmaeBlockInfo *b, size_t n)
{
    struct rdmae_block *eb = g_new0(struct rdmae_block, n);

    for (size_t i = 0; i < n; i++) {
        eb[i].name = b[i].name;
        eb[i].host = b[i].host;
        eb[i].len = b[i].len;
        eb[i].page_size = b[i].page_size;
        eb[i].hugepages = b[i].hugepages;
    }
    return eb;
}

/* ---- the link: connection, session, blocks; shared by the channels ---- */

typedef struct RdmaeLink {
    int refs;                   /* qatomic: the channels and the migration */
    bool source;
    QemuMutex lock;             /* conn, sess and cancelled, against a stop */
    bool cancelled;             /* source: stopped before it connected */
    struct rdmae_conn *conn;
    struct rdmae_session *sess;
    RdmaeBlockInfo *blocks;
    size_t nblocks;
    struct rdmae_block *eblocks;
    char *peer;
    unsigned int lanes;         /* multifd-channels + 1 */
    bool verify;
    bool discard_disabled;
    bool connected;             /* source: pre-flight done */
    bool committed;             /* qatomic: a lane's end is no error then */
    bool outcome_unknown;       /* source */
    bool cost_warned;           /* source: fixed costs reach the limit */
    int64_t start_us;           /* source: migrate; destination: accepted */
    /* source: multifd's lane channels (not owned), for the END section */
    struct QIOChannelRdmae *lane_ioc[RDMAE_LANES_MAX];
    /* source, until it connects */
    InetSocketAddress *addr;
    RdmaeParams params;
} RdmaeLink;

static RdmaeLink *link_new(bool source)
{
    RdmaeLink *l = g_new0(RdmaeLink, 1);

    l->refs = 1;
    l->source = source;
    qemu_mutex_init(&l->lock);
    return l;
}

static void link_free(RdmaeLink *l)
{
    struct rdmae_session_stats st;

    /* The trace says how long after COMMIT_OK the deregistration ended. */
    if (l->sess && !rdmae_session_release(l->sess, NULL) &&
        !rdmae_session_stats(l->sess, &st) && st.dereg_ns) {
        trace_rdmae_dereg(l->source ? "source" : "destination",
                          st.dereg_after_commit_ns / 1000, st.dereg_ns / 1000);
    }
    rdmae_session_destroy(l->sess);
    rdmae_conn_destroy(l->conn);
    g_free(l->eblocks);
    free_blocks(l->blocks, l->nblocks);
    g_free(l->peer);
    qapi_free_InetSocketAddress(l->addr);
    rdmae_params_wipe(&l->params);
    if (l->discard_disabled) {
        ram_block_discard_disable(false);
    }
    qemu_mutex_destroy(&l->lock);
    g_free(l);
}

static void *link_free_thread(void *opaque)
{
    link_free(opaque);
    return NULL;
}

static RdmaeLink *link_ref(RdmaeLink *l)
{
    qatomic_inc(&l->refs);
    return l;
}

/*
 * The last reference goes with the BQL held: on the destination in the
 * incoming bottom half, after vm_start or, under -S (libvirt), before the
 * `cont` that waits for the BQL. Deregistering a large guest takes
 * seconds, so it runs on a thread of its own and stays out of the
 * downtime either way.
 */
static void link_unref(RdmaeLink *l)
{
    QemuThread th;

    if (l && qatomic_fetch_dec(&l->refs) == 1) {
        qemu_thread_create(&th, "rdmae-release", link_free_thread, l,
                           QEMU_THREAD_DETACHED);
    }
}

/*
 * A channel was shut down (migrate_cancel, an error, the end): stop the
 * session unless it has decided. A destination that has committed also
 * ends the connection, so that its receive threads, blocked on their
 * lanes, see the end (COMMIT_OK's send has completed by then). A source
 * never does: from COMPLETE on, the commit's own wait decides.
 */
static void link_stop(RdmaeLink *l, const char *why)
{
    QEMU_LOCK_GUARD(&l->lock);
    l->cancelled = true;
    if (l->sess && rdmae_session_cancel(l->sess, why)) {
        return;
    }
    if (!l->source && l->conn) {
        rdmae_conn_abort(l->conn, -ESHUTDOWN, why);
    }
}

/* ---- the channels: main (lane 0) and one per multifd channel ---- */

#define TYPE_QIO_CHANNEL_RDMAE "qio-channel-rdmae"
OBJECT_DECLARE_SIMPLE_TYPE(QIOChannelRdmae, QIO_CHANNEL_RDMAE)

struct QIOChannelRdmae {
    QIOChannel parent;
    RdmaeLink *link;
    unsigned int lane;
    bool blocking;
    bool shut;                  /* qatomic: shut down, reads end */
    uint64_t acks_owed;         /* qatomic; tests only: rdmae_lane_ack_owed */

    /* lanes >= 1: the message being read */
    uint8_t *msg;
    size_t msg_len;
    size_t msg_off;

    /* destination, lane 0: the stream as the pump receives it */
    QemuThread pump;
    bool pump_started;
    QemuMutex lock;
    QemuCond cond;
    GByteArray *state;          /* received, not yet read */
    size_t read_off;            /* read by loadvm so far */
    bool committed;             /* every page placed and verified */
    bool closing;
    Error *err;                 /* the pump's failure */
    Coroutine *waiter;          /* the "rdmae" section, for the commit */
    EventNotifier readable;     /* bytes to read, the end or a failure */
};

static QIOChannelRdmae *rdmae_channel_new(RdmaeLink *l, unsigned int lane)
{
    QIOChannelRdmae *rioc =
        QIO_CHANNEL_RDMAE(object_new(TYPE_QIO_CHANNEL_RDMAE));
    g_autofree char *name = NULL;

    rioc->link = link_ref(l);
    rioc->lane = lane;
    if (lane) {
        name = g_strdup_printf("migration-rdmae-%s-lane-%u",
                               l->source ? "outgoing" : "incoming", lane);
    } else {
        name = g_strdup_printf("migration-rdmae-%s",
                               l->source ? "outgoing" : "incoming");
    }
    qio_channel_set_name(QIO_CHANNEL(rioc), name);
    return rioc;
}

bool rdmae_lane_info(QIOChannel *ioc, RdmaeLaneInfo *info, Error **errp)
{
    QIOChannelRdmae *rioc = (QIOChannelRdmae *)
        object_dynamic_cast(OBJECT(ioc), TYPE_QIO_CHANNEL_RDMAE);

    if (!rioc || !rioc->lane || !rioc->link || !rioc->link->sess) {
        error_setg(errp, "rdmae: multifd channel '%s' is not an rdmae lane",
                   ioc->name ? ioc->name : "?");
        return false;
    }
    info->sess = rioc->link->sess;
    info->lane = rioc->lane;
    info->verify = rioc->link->verify;
    info->no_sync_ack = rdmae_conn_test_fault(rioc->link->conn,
                                              "no_sync_ack");
    info->peer = rioc->link->peer;
    return true;
}

void rdmae_lane_ack_owed(QIOChannel *ioc)
{
    qatomic_inc(&QIO_CHANNEL_RDMAE(ioc)->acks_owed);
}

/* A message, split where it exceeds what the connection takes at once. */
static ssize_t lane_send(QIOChannelRdmae *rioc, const uint8_t *buf,
                         size_t len, Error **errp)
{
    RdmaeLink *l = rioc->link;
    size_t max = rdmae_conn_negotiated(l->conn)->max_fragmented_size;

    for (size_t off = 0; off < len;) {
        size_t n = MIN(len - off, max);
        struct rdmae_err e = { 0 };
        int rc = rdmae_send_lane(l->conn, rioc->lane, buf + off, n, -1, &e);

        if (rc) {
            error_setg_errno(errp, -rc, "rdmae: lane %u to %s: %s",
                             rioc->lane, l->peer, e.msg);
            return -1;
        }
        off += n;
    }
    return len;
}

static ssize_t qio_channel_rdmae_writev(QIOChannel *ioc,
                                        const struct iovec *iov, size_t niov,
                                        int *fds, size_t nfds, int flags,
                                        Error **errp)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);
    RdmaeLink *l = rioc->link;
    struct rdmae_err e = { 0 };
    size_t len = iov_size(iov, niov);
    g_autofree uint8_t *buf = NULL;
    const uint8_t *p;
    int rc;

    if (!l || !l->conn || (rioc->lane == 0 && !l->source)) {
        error_setg(errp, "rdmae: the channel is closed or not connected");
        return -1;
    }
    if (!len) {
        return 0;
    }
    if (niov == 1) {
        p = iov[0].iov_base;
    } else {
        buf = g_malloc(len);
        iov_to_buf(iov, niov, 0, buf, len);
        p = buf;
    }
    if (rioc->lane) {
        return lane_send(rioc, p, len, errp);
    }
    /* One message per flush (QEMUFile buffers up to 32 KiB). */
    rc = rdmae_session_send_state(l->sess, p, len, &e);
    if (rc) {
        error_setg_errno(errp, -rc, "rdmae: migration stream to %s: %s",
                         l->peer, e.msg);
        return -1;
    }
    return len;
}

/* Lanes are byte streams over their messages; multifd reads in pieces. */
static ssize_t lane_readv(QIOChannelRdmae *rioc, const struct iovec *iov,
                          size_t niov, Error **errp)
{
    RdmaeLink *l = rioc->link;
    size_t n;

    if (!rioc->msg) {
        struct rdmae_err e = { 0 };
        void *buf;
        size_t len;
        int rc = rdmae_recv_lane(l->conn, rioc->lane, &buf, &len, -1, &e);

        if (rc) {
            /* After a shutdown or the commit, the end is the end. */
            if (qatomic_read(&rioc->shut) || qatomic_read(&l->committed)) {
                return 0;
            }
            error_setg_errno(errp, -rc, "rdmae: lane %u from %s: %s",
                             rioc->lane, l->peer, e.msg);
            return -1;
        }
        rioc->msg = buf;
        rioc->msg_len = len;
        rioc->msg_off = 0;
    }
    n = iov_from_buf(iov, niov, 0, rioc->msg + rioc->msg_off,
                     rioc->msg_len - rioc->msg_off);
    rioc->msg_off += n;
    if (rioc->msg_off == rioc->msg_len) {
        free(rioc->msg);
        rioc->msg = NULL;
    }
    return n;
}

static ssize_t qio_channel_rdmae_readv(QIOChannel *ioc,
                                       const struct iovec *iov, size_t niov,
                                       int **fds, size_t *nfds, int flags,
                                       Error **errp)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);
    size_t avail, n;

    if (!rioc->link || (rioc->lane == 0 && rioc->link->source)) {
        error_setg(errp, "rdmae: the channel is closed or not a destination");
        return -1;
    }
    if (rioc->lane) {
        return lane_readv(rioc, iov, niov, errp);
    }
    QEMU_LOCK_GUARD(&rioc->lock);
    for (;;) {
        if (rioc->err) {
            error_propagate(errp, error_copy(rioc->err));
            return -1;
        }
        avail = rioc->state->len - rioc->read_off;
        if (avail) {
            break;
        }
        if (rioc->committed) {
            return 0;       /* the end of the stream */
        }
        if (rioc->closing) {
            error_setg(errp, "rdmae: the channel is closed");
            return -1;
        }
        if (!rioc->blocking) {
            event_notifier_test_and_clear(&rioc->readable);
            return QIO_CHANNEL_ERR_BLOCK;
        }
        qemu_cond_wait(&rioc->cond, &rioc->lock);
    }
    n = iov_from_buf(iov, niov, 0, rioc->state->data + rioc->read_off, avail);
    rioc->read_off += n;
    if (rioc->read_off == rioc->state->len) {
        g_byte_array_set_size(rioc->state, 0);
        rioc->read_off = 0;
    }
    return n;
}

/* Wake whoever waits for bytes or for the commit. Lock held. */
static Coroutine *pump_wake_locked(QIOChannelRdmae *rioc)
{
    Coroutine *co = rioc->waiter;

    rioc->waiter = NULL;
    qemu_cond_broadcast(&rioc->cond);
    event_notifier_set(&rioc->readable);
    return co;
}

/*
 * Destination: the engine on lane 0. The stream's bytes are readable at
 * once (RAM sections and multifd flushes flow during pre-copy); the
 * "rdmae" section waits for RDMAE_EV_COMMITTED before any device loads.
 */
static void *rdmae_pump_thread(void *opaque)
{
    QIOChannelRdmae *rioc = opaque;
    RdmaeLink *l = rioc->link;

    for (;;) {
        struct rdmae_dest_event ev;
        struct rdmae_err e = { 0 };
        int rc = rdmae_session_dest_step(l->sess, &ev, &e);
        Coroutine *co;

        if (rc == -ETIMEDOUT) {
            /* A quiet source (e.g. pause-before-switchover): wait again. */
            bool closing;

            WITH_QEMU_LOCK_GUARD(&rioc->lock) {
                closing = rioc->closing;
            }
            if (!closing) {
                continue;
            }
        }
        qemu_mutex_lock(&rioc->lock);
        if (!rc && ev.kind == RDMAE_EV_STATE) {
            g_byte_array_append(rioc->state, ev.data, ev.len);
            co = pump_wake_locked(rioc);
            qemu_mutex_unlock(&rioc->lock);
            if (co) {
                aio_co_wake(co);
            }
            continue;
        }
        if (!rc && ev.kind == RDMAE_EV_ROUND) {
            qemu_mutex_unlock(&rioc->lock);
            continue;
        }
        if (rc) {
            if (!rioc->closing) {
                error_setg_errno(&rioc->err, -rc, "rdmae: from %s: %s",
                                 l->peer, e.msg);
                /*
                 * loadvm reports a failed read only as "not a migration
                 * stream" or a bare errno: say why here.
                 */
                error_report("%s", error_get_pretty(rioc->err));
            } else {
                error_setg(&rioc->err, "rdmae: the channel is closed");
            }
        } else {
            rioc->committed = true;
            qatomic_set(&l->committed, true);
            if (!ev.verified) {
                warn_report("rdmae: committed without verification (the "
                            "source has x-rdmae-verify=off)");
            }
        }
        co = pump_wake_locked(rioc);
        qemu_mutex_unlock(&rioc->lock);
        if (co) {
            aio_co_wake(co);
        }
        return NULL;
    }
}

static int qio_channel_rdmae_set_blocking(QIOChannel *ioc, bool enabled,
                                          Error **errp)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);

    if (rioc->lane && !enabled) {
        error_setg(errp, "rdmae: lane channels are blocking only");
        return -1;
    }
    rioc->blocking = enabled;
    return 0;
}

static int qio_channel_rdmae_shutdown(QIOChannel *ioc,
                                      QIOChannelShutdown how, Error **errp)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);

    qatomic_set(&rioc->shut, true);
    if (rioc->link) {
        /* Wakes any call blocked in the engine, on every lane. */
        link_stop(rioc->link, rioc->lane ? "a multifd channel shut down" :
                  "the migration channel shut down");
    }
    return 0;
}

static int qio_channel_rdmae_close(QIOChannel *ioc, Error **errp)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);
    RdmaeLink *l = rioc->link;

    if (!l) {
        return 0;
    }
    if (rioc->pump_started) {
        WITH_QEMU_LOCK_GUARD(&rioc->lock) {
            rioc->closing = true;
            qemu_cond_broadcast(&rioc->cond);
        }
        /* Without a commit, this cancels and undoes the registrations. */
        rdmae_session_cancel(l->sess, "the destination closed the channel");
        qemu_thread_join(&rioc->pump);
        rioc->pump_started = false;
    }
    free(rioc->msg);
    rioc->msg = NULL;
    rioc->link = NULL;
    link_unref(l);
    return 0;
}

static void qio_channel_rdmae_set_aio_fd_handler(QIOChannel *ioc,
                                                 AioContext *read_ctx,
                                                 IOHandler *io_read,
                                                 AioContext *write_ctx,
                                                 IOHandler *io_write,
                                                 void *opaque)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);

    /* Reads wait on the pump's notifier; writes never block. */
    if (read_ctx) {
        aio_set_fd_handler(read_ctx, event_notifier_get_fd(&rioc->readable),
                           io_read, NULL, NULL, NULL, opaque);
    }
}

static GSource *qio_channel_rdmae_create_watch(QIOChannel *ioc,
                                               GIOCondition condition)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);

    return qio_channel_create_fd_watch(ioc,
                                       event_notifier_get_fd(&rioc->readable),
                                       condition);
}

static void qio_channel_rdmae_init(Object *obj)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(obj);

    rioc->blocking = true;
    qemu_mutex_init(&rioc->lock);
    qemu_cond_init(&rioc->cond);
    rioc->state = g_byte_array_new();
    event_notifier_init(&rioc->readable, false);
    qio_channel_set_feature(QIO_CHANNEL(obj), QIO_CHANNEL_FEATURE_SHUTDOWN);
}

static void qio_channel_rdmae_finalize(Object *obj)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(obj);

    qio_channel_rdmae_close(QIO_CHANNEL(obj), NULL);
    event_notifier_cleanup(&rioc->readable);
    g_byte_array_unref(rioc->state);
    error_free(rioc->err);
    qemu_cond_destroy(&rioc->cond);
    qemu_mutex_destroy(&rioc->lock);
}

static void qio_channel_rdmae_class_init(ObjectClass *klass, void *data)
{
    QIOChannelClass *ioc_klass = QIO_CHANNEL_CLASS(klass);

    ioc_klass->io_writev = qio_channel_rdmae_writev;
    ioc_klass->io_readv = qio_channel_rdmae_readv;
    ioc_klass->io_set_blocking = qio_channel_rdmae_set_blocking;
    ioc_klass->io_close = qio_channel_rdmae_close;
    ioc_klass->io_shutdown = qio_channel_rdmae_shutdown;
    ioc_klass->io_create_watch = qio_channel_rdmae_create_watch;
    ioc_klass->io_set_aio_fd_handler = qio_channel_rdmae_set_aio_fd_handler;
}

static const TypeInfo qio_channel_rdmae_info = {
    .parent = TYPE_QIO_CHANNEL,
    .name = TYPE_QIO_CHANNEL_RDMAE,
    .instance_size = sizeof(QIOChannelRdmae),
    .instance_init = qio_channel_rdmae_init,
    .instance_finalize = qio_channel_rdmae_finalize,
    .class_init = qio_channel_rdmae_class_init,
};

static void qio_channel_rdmae_register_types(void)
{
    type_register_static(&qio_channel_rdmae_info);
}

type_init(qio_channel_rdmae_register_types);

/* The connection's setup phases, as rdma/ timed them. */
static void trace_setup_conn(RdmaeLink *l)
{
    struct rdmae_setup_times st;

    rdmae_conn_setup_times(l->conn, &st);
    trace_rdmae_setup_conn(l->source ? "source" : "destination", st.lanes,
                           st.total_us, st.resolve_us, st.lanes_us,
                           st.handshake_us, st.negotiate_us, st.more_lanes_us);
    trace_rdmae_setup_conn_parts(l->source ? "source" : "destination",
                                 st.init_us, st.device_us, st.ring_alloc_us,
                                 st.ring_reg_us, st.qp_create_us,
                                 st.post_recv_us, st.auth_us, st.lane0_recvs,
                                 st.lane_recvs);
}

/* How each side registers guest RAM, as pre-flight told both. */
static void trace_reg_modes(RdmaeLink *l)
{
    struct rdmae_session_stats st;

    if (!rdmae_session_stats(l->sess, &st)) {
        trace_rdmae_reg_modes(l->source ? "source" : "destination",
                              rdmae_reg_mode_name(st.src_reg_mode),
                              rdmae_reg_mode_name(st.dst_reg_mode));
    }
}


/* ---- source ---- */

static const MigrationTransportOps rdmae_transport_ops;
static void rdmae_savevm_register(void);
static void rdmae_savevm_unregister(void);

/* The migration's link, while an rdmae migration runs. */
static RdmaeLink *src_link(MigrationState *s)
{
    return s->transport == &rdmae_transport_ops ? s->transport_opaque : NULL;
}

/*
 * Migration thread, multifd's first channel: connect (authentication),
 * session, pre-flight (both sides register). A shutdown of any channel
 * (migrate_cancel) stops it: at once once the session exists, else
 * when rdmae_connect returns.
 */
static bool rdmae_link_connect(RdmaeLink *l, Error **errp)
{
    struct rdmae_conn *conn = NULL;
    struct rdmae_session *sess = NULL;
    struct rdmae_conn_opts co;
    struct rdmae_session_opts so;
    struct rdmae_err e = { 0 };
    bool cancelled;
    int64_t t[4];
    int rc;

    t[0] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    conn_opts_from_params(&l->params, &co);
    rc = rdmae_connect(&conn, l->addr->host, l->addr->port, &co, &e);
    /* The library keeps its own copy of the key. */
    rdmae_params_wipe(&l->params);
    t[1] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (rc) {
        error_setg_errno(errp, -rc, "rdmae: connect to %s:%s: %s",
                         l->addr->host, l->addr->port, e.msg);
        return false;
    }
    WITH_QEMU_LOCK_GUARD(&l->lock) {
        l->conn = conn;
        cancelled = l->cancelled;
    }
    l->peer = g_strdup(rdmae_conn_peer(conn));
    if (cancelled) {
        error_setg(errp, "rdmae: cancelled while connecting to %s", l->peer);
        return false;
    }
    trace_setup_conn(l);
    /* The connection has the smaller side's lanes: multifd needs them all. */
    if (rdmae_conn_lanes(conn) != l->lanes) {
        error_setg(errp, "rdmae: %s has multifd-channels %u, this side %u: "
                   "set the same on both sides", l->peer,
                   rdmae_conn_lanes(conn) - 1, l->lanes - 1);
        return false;
    }

    rdmae_session_opts_default(&so);
    so.reg_mode = l->params.reg;
    so.no_verify = !l->verify;
    so.data_path = RDMAE_DATA_PATH_EXTERNAL;
    rc = rdmae_session_create(&sess, RDMAE_SOURCE, conn, l->eblocks,
                              l->nblocks, &so, &e);
    t[2] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (rc) {
        error_setg_errno(errp, -rc, "rdmae: %s", e.msg);
        return false;
    }
    WITH_QEMU_LOCK_GUARD(&l->lock) {
        l->sess = sess;
        cancelled = l->cancelled;
    }
    if (cancelled) {
        error_setg(errp, "rdmae: cancelled during pre-flight with %s",
                   l->peer);
        return false;
    }
    rc = rdmae_session_preflight(sess, &e);
    if (rc) {
        error_setg_errno(errp, -rc, "rdmae: pre-flight with %s: %s", l->peer,
                         e.msg);
        return false;
    }
    t[3] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    trace_rdmae_setup_src(t[0] - l->start_us, t[1] - t[0], t[2] - t[1],
                          t[3] - t[2]);
    trace_reg_modes(l);
    l->connected = true;
    return true;
}

/*
 * multifd_send_setup(), in the migration thread, per channel: the first
 * connects, and every one wraps its lane, synchronously, as
 * file_send_channel_create() does.
 */
static bool rdmae_multifd_channel_create(void *opaque, Error **errp)
{
    MultiFDSendParams *p = opaque;
    RdmaeLink *l = src_link(migrate_get_current());
    bool ok;

    if (p->id == 0) {
        ok = rdmae_link_connect(l, errp);
    } else {
        ok = l->connected;
        if (!ok) {
            error_setg(errp, "rdmae: multifd channel %u: not connected",
                       p->id);
        }
    }
    if (ok) {
        QIOChannelRdmae *lane = rdmae_channel_new(l, p->id + 1);

        l->lane_ioc[p->id + 1] = lane;
        multifd_channel_connect(p, QIO_CHANNEL(lane));
    }
    /* Synchronous, but multifd_send_setup() waits for every channel. */
    multifd_send_channel_created();
    return ok;
}

/*
 * What the switchover costs beyond moving the final pass at QEMU's
 * bandwidth, in the engine's model (rdmae_session_switchover_cost_ns):
 * hashing the final pass on both sides, digesting the page sums, the
 * commit's round trips (the device state is not known ahead, so it is not
 * counted). Counted nowhere else, it let a guest converge "in time" and
 * then overrun downtime-limit by exactly these costs.
 */
static uint64_t rdmae_switchover_cost_ms(MigrationState *s,
                                         uint64_t final_bytes)
{
    RdmaeLink *l = src_link(s);

    if (!l || !l->connected) {
        return 0;
    }
    return DIV_ROUND_UP(rdmae_session_switchover_cost_ns(l->sess,
                                                         final_bytes),
                        SCALE_MS);
}

/* After the stream's last byte: COMPLETE, and the verified COMMIT_OK. */
static int rdmae_complete(MigrationState *s, Error **errp)
{
    RdmaeLink *l = src_link(s);
    struct rdmae_err e = { 0 };
    int rc;

    rc = rdmae_session_complete(l->sess, &e);
    if (rc == -ENOTRECOVERABLE) {
        l->outcome_unknown = true;
        error_setg(errp, "rdmae: %s; the source VM stays paused: resume it "
                   "with 'cont' only once the destination (%s) is known not "
                   "to run", e.msg, l->peer);
    } else if (rc) {
        error_setg_errno(errp, -rc, "rdmae: commit with %s: %s", l->peer,
                         e.msg);
    } else {
        qatomic_set(&l->committed, true);
    }
    return rc;
}

static bool rdmae_outcome_unknown(MigrationState *s)
{
    RdmaeLink *l = src_link(s);

    return l && l->outcome_unknown;
}

/* The channels are closed: the migration's own reference goes. */
static void rdmae_cleanup(MigrationState *s)
{
    RdmaeLink *l = src_link(s);

    s->transport = NULL;
    s->transport_opaque = NULL;
    rdmae_savevm_unregister();
    link_unref(l);
}

static const MigrationTransportOps rdmae_transport_ops = {
    .multifd_channel_create = rdmae_multifd_channel_create,
    .multifd_methods = &multifd_rdmae_ops,
    .switchover_cost_ms = rdmae_switchover_cost_ms,
    .complete = rdmae_complete,
    .outcome_unknown = rdmae_outcome_unknown,
    .cleanup = rdmae_cleanup,
};

void rdmae_start_outgoing_migration(MigrationState *s,
                                    InetSocketAddress *addr, Error **errp)
{
    struct rdmae_err e = { 0 };
    QIOChannelRdmae *rioc;
    RdmaeLink *l;

    if (!rdmae_check_addr(addr, errp) ||
        !rdmae_caps_check(s->capabilities, errp)) {
        return;
    }
    l = link_new(true);
    l->start_us = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (!rdmae_params_get(&l->params, errp)) {
        goto fail;
    }
    l->lanes = l->params.lanes;
    l->verify = l->params.verify;
    l->addr = QAPI_CLONE(InetSocketAddress, addr);
    l->blocks = list_blocks(&l->nblocks, errp);
    if (!l->blocks) {
        goto fail;
    }
    l->eblocks = engine_blocks(l->blocks, l->nblocks);
    if (rdmae_session_check_blocks(l->eblocks, l->nblocks, &e)) {
        error_setg(errp, "rdmae: %s", e.msg);
        goto fail;
    }
    /* A discarded page would leave its pinned registration stale. */
    if (ram_block_discard_disable(true)) {
        error_setg(errp, "rdmae: RAM discards (e.g. a balloon) cannot be "
                   "disabled");
        goto fail;
    }
    l->discard_disabled = true;

    rdmae_savevm_register();
    s->transport = &rdmae_transport_ops;
    s->transport_opaque = l;
    /* Connecting waits for the migration thread (multifd's setup). */
    rioc = rdmae_channel_new(l, 0);
    migration_channel_connect(s, QIO_CHANNEL(rioc), addr->host, NULL);
    object_unref(OBJECT(rioc));
    return;

fail:
    link_free(l);
}

/* ---- the "rdmae" section: after "ram", before every device ---- */

#define RDMAE_SECTION_MAGIC     0x52444d45u     /* "RDME" */
#define RDMAE_SECTION_START     1
#define RDMAE_SECTION_END       2

static bool rdmae_save_is_active(void *opaque)
{
    RdmaeLink *l = src_link(migrate_get_current());

    return l && l->connected;
}

/*
 * WRITE bytes posted on the multifd lanes whose completions have not come
 * back. ram.c no longer counts their pages as dirty, and multifd counts
 * them as transferred only once they complete (multifd-rdmae.c), so
 * without this they would be nowhere in the switchover decision; up to a
 * pacing budget per lane, which on a slow link is seconds.
 */
static uint64_t rdmae_inflight_bytes(RdmaeLink *l)
{
    uint64_t sum = 0;

    for (unsigned int i = 1; i < l->lanes; i++) {
        struct rdmae_lane_stats st;

        if (rdmae_session_lane_stats(l->sess, i, &st) == 0 &&
            st.write_bytes > st.one_sided_done) {
            sum += st.write_bytes - st.one_sided_done;
        }
    }
    return sum;
}

/*
 * The cost as pending bytes, at the bandwidth of QEMU's switchover
 * decision: pending < threshold_size then means "the dirty bytes, what is
 * still in flight and the fixed costs together fit downtime-limit".
 */
static void rdmae_state_pending(void *opaque, uint64_t *must_precopy,
                                uint64_t *can_postcopy)
{
    MigrationState *s = migrate_get_current();
    RdmaeLink *l = src_link(s);
    uint64_t limit_ms = migrate_downtime_limit();
    uint64_t cost_ms;

    if (!l || !l->connected) {
        return;
    }
    *must_precopy += rdmae_inflight_bytes(l);
    if (!limit_ms || !s->threshold_size) {
        return;
    }
    cost_ms = rdmae_switchover_cost_ms(s, ram_bytes_remaining());
    if (cost_ms >= limit_ms && !l->cost_warned) {
        l->cost_warned = true;
        warn_report("rdmae: the switchover's fixed costs (%" PRIu64 " ms: "
                    "verification, the commit's round trips) alone reach "
                    "downtime-limit (%" PRIu64 " ms), so the migration cannot "
                    "converge; raise downtime-limit, or set x-rdmae-verify=off"
                    " on both sides", cost_ms, limit_ms);
    }
    /* threshold_size is the bandwidth (bytes/ms) times the limit. */
    *must_precopy += cost_ms * (s->threshold_size / limit_ms);
    trace_rdmae_switchover_cost(cost_ms, *must_precopy, s->threshold_size);
}

/* So that a destination without rdmae fails on a named section. */
static int rdmae_save_setup(QEMUFile *f, void *opaque, Error **errp)
{
    RdmaeLink *l = src_link(migrate_get_current());

    qemu_put_be32(f, RDMAE_SECTION_MAGIC);
    qemu_put_be32(f, RDMAE_SECTION_START);
    qemu_put_be32(f, l->lanes);
    return 0;
}

/*
 * The VM is stopped and ram's final pass is placed (its SYNC was
 * acknowledged on every lane): the destination waits here for the commit.
 */
static int rdmae_save_complete(QEMUFile *f, void *opaque)
{
    RdmaeLink *l = src_link(migrate_get_current());
    Error *err = NULL;

    /*
     * Tests only (no_sync_ack): the acknowledgements not waited for, so
     * that every WRITE is placed before COMPLETE revokes remote access.
     */
    for (unsigned int i = 1; i < l->lanes; i++) {
        QIOChannelRdmae *lane = l->lane_ioc[i];

        while (lane && qatomic_read(&lane->acks_owed)) {
            uint8_t ack[RDMAE_SYNC_ACK_SIZE];

            if (qio_channel_read_all(QIO_CHANNEL(lane), (char *)ack,
                                     sizeof(ack), &err) < 0) {
                error_report_err(err);
                return -EIO;
            }
            qatomic_dec(&lane->acks_owed);
        }
    }
    rdmae_session_mark_stopped(l->sess);
    qemu_put_be32(f, RDMAE_SECTION_MAGIC);
    qemu_put_be32(f, RDMAE_SECTION_END);
    return 0;
}

typedef struct RdmaeIncoming RdmaeIncoming;
static int rdmae_wait_commit(void);

static int rdmae_load_state(QEMUFile *f, void *opaque, int version_id)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    uint32_t magic = qemu_get_be32(f);
    uint32_t kind = qemu_get_be32(f);
    uint32_t lanes;

    if (mis->transport != &rdmae_transport_ops) {
        error_report("rdmae: an rdmae section, but the migration does not "
                     "come over rdmae:");
        return -EINVAL;
    }
    if (magic != RDMAE_SECTION_MAGIC) {
        error_report("rdmae: bad section magic 0x%x", magic);
        return -EINVAL;
    }
    switch (kind) {
    case RDMAE_SECTION_START:
        lanes = qemu_get_be32(f);
        if (lanes != migrate_multifd_channels() + 1) {
            error_report("rdmae: the source has %u lanes, this side %d",
                         lanes, migrate_multifd_channels() + 1);
            return -EINVAL;
        }
        return qemu_file_get_error(f);
    case RDMAE_SECTION_END:
        return rdmae_wait_commit();
    default:
        error_report("rdmae: unknown section kind %u", kind);
        return -EINVAL;
    }
}

static const SaveVMHandlers savevm_rdmae_handlers = {
    .is_active = rdmae_save_is_active,
    .save_setup = rdmae_save_setup,
    .save_live_complete_precopy = rdmae_save_complete,
    /*
     * Not in the estimate: QEMU syncs the dirty bitmap (and so starts the
     * next round) only once the estimate falls below the threshold, and
     * with the fixed costs in it a downtime-limit below them would stop
     * the rounds instead of only the switchover.
     */
    .state_pending_exact = rdmae_state_pending,
    .load_state = rdmae_load_state,
};

/*
 * Per migration, on either side: after "ram" (registered when the
 * migration object is created), so that the END section follows ram's
 * final pass and the pending callbacks run after ram's dirty-bitmap sync.
 */
static void rdmae_savevm_register(void)
{
    register_savevm_live("rdmae", 0, 1, &savevm_rdmae_handlers, NULL);
}

static void rdmae_savevm_unregister(void)
{
    unregister_savevm(NULL, "rdmae", NULL);
}

/* ---- destination ---- */

/* A RAM block to populate while -incoming waits, referenced until done. */
typedef struct PopulateRange {
    MemoryRegion *mr;
    char *host;
    size_t len;
    int fd;
} PopulateRange;

struct RdmaeIncoming {
    InetSocketAddress *addr;
    enum rdmae_reg_mode reg;
    bool verify;
    unsigned int lanes;
    struct rdmae_listener *listener;
    RdmaeLink *link;            /* until the channels take it */
    QIOChannelRdmae **chans;    /* main, then the lanes: for the bottom half */
    QIOChannelRdmae *main;      /* for the "rdmae" section */
    Error *err;
    bool accept_done;           /* the accept thread has finished */
    QemuThread populate;
    bool populating;            /* the populate thread is to be joined */
    bool populate_started;      /* set before the accept thread starts */
    bool populate_stop;         /* qatomic: stop at the next step */
    QemuEvent populate_done;    /* set when the populate thread ends */
    bool discard_disabled;      /* by the populating, undone at cleanup */
    PopulateRange *ranges;
    size_t nranges;
};

bool rdmae_incoming_active(void)
{
    MigrationIncomingState *mis = migration_incoming_get_current();

    return mis->transport == &rdmae_transport_ops;
}

/* ---- populating guest RAM while -incoming waits ---- */

/*
 * Pinning fresh memory is mostly allocating and zeroing it. Done here,
 * before any source connects, registration later only pins. Nothing is
 * registered: that waits for authentication. A source that connects
 * meanwhile is served at once, and populating stops at the next step
 * (16 MiB): registration faults in what is left.
 */
#define RDMAE_POPULATE_STEP     (16 * MiB)
/*
 * Under libvirt, migrate follows migrate-incoming at once: there is no
 * wait to use, and populating beside the connection's setup only slows it
 * (page faults contend for the same mm, even at nice 19: a 512 MiB
 * destination's lanes took 3.4 s to set up against 0.2 s). A destination
 * that has waited this long is waiting for real.
 */
#define RDMAE_POPULATE_GRACE_MS 2000
#define RDMAE_POPULATE_THREADS  4

static void *rdmae_populate_thread(void *opaque)
{
    RdmaeIncoming *in = opaque;
    int64_t t0 = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    uint64_t done = 0;
    bool stopped = false;
    Error *err = NULL;

    while (qemu_clock_get_ms(QEMU_CLOCK_REALTIME) - t0 < RDMAE_POPULATE_GRACE_MS
           && !qatomic_read(&in->populate_stop)) {
        g_usleep(50 * 1000);
    }
    t0 = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

    /*
     * Lowest priority, inherited by qemu_prealloc_mem's threads: a source
     * may connect at any moment, and its negotiation must not wait behind
     * populating (measured: on one vCPU, a 512 MiB destination populating
     * at normal priority answered too late, and the source's connect
     * timed out).
     */
    setpriority(PRIO_PROCESS, qemu_get_thread_id(), 19);

    for (size_t i = 0; i < in->nranges && !stopped; i++) {
        PopulateRange *r = &in->ranges[i];

        for (size_t off = 0; off < r->len; off += RDMAE_POPULATE_STEP) {
            size_t n = MIN(RDMAE_POPULATE_STEP, r->len - off);

            stopped = qatomic_read(&in->populate_stop);
            if (stopped) {
                break;
            }
            if (!qemu_prealloc_mem(r->fd, r->host + off, n,
                                   RDMAE_POPULATE_THREADS, NULL, false,
                                   &err)) {
                /* Registration faults this block in later: only slower. */
                warn_reportf_err(err, "rdmae: populating guest RAM while "
                                 "waiting: ");
                err = NULL;
                break;
            }
            done += n;
        }
    }
    trace_rdmae_populate(done, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) - t0,
                         stopped);
    qemu_event_set(&in->populate_done);
    return NULL;
}

/* BQL held. */
static void rdmae_populate_start(RdmaeIncoming *in)
{
    GArray *a;
    RAMBlock *rb;

    /* ODP pins nothing: populating would commit what it exists to spare. */
    if (in->reg == RDMAE_REG_ODP) {
        trace_rdmae_populate_skipped("x-rdmae-registration=odp");
        return;
    }
    /* A balloon or virtio-mem discard would undo what is populated. */
    if (ram_block_discard_disable(true)) {
        trace_rdmae_populate_skipped("a device needs RAM discards");
        return;
    }
    in->discard_disabled = true;
    a = g_array_new(false, true, sizeof(PopulateRange));
    WITH_RCU_READ_LOCK_GUARD() {
        RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
            PopulateRange r;

            /* Nothing writes these; a write fault would only fail. */
            if (memory_region_is_rom(rb->mr) || (rb->flags & RAM_READONLY)) {
                continue;
            }
            r = (PopulateRange) {
                .mr = rb->mr,
                .host = (char *)rb->host,
                .len = rb->used_length,
                .fd = qemu_ram_get_fd(rb),
            };

            memory_region_ref(rb->mr);
            g_array_append_val(a, r);
        }
    }
    in->nranges = a->len;
    in->ranges = (PopulateRange *)g_array_free(a, false);
    in->populating = true;
    in->populate_started = true;
    qemu_event_init(&in->populate_done, false);
    qemu_thread_create(&in->populate, "rdmae-populate", rdmae_populate_thread,
                       in, QEMU_THREAD_JOINABLE);
}

/* BQL held: stops at the next step, waits, lets the blocks and discards go. */
static void rdmae_populate_finish(RdmaeIncoming *in)
{
    if (in->populating) {
        qatomic_set(&in->populate_stop, true);
        qemu_thread_join(&in->populate);
        in->populating = false;
    }
    for (size_t i = 0; i < in->nranges; i++) {
        memory_region_unref(in->ranges[i].mr);
    }
    g_free(in->ranges);
    in->ranges = NULL;
    in->nranges = 0;
    if (in->discard_disabled) {
        ram_block_discard_disable(false);
        in->discard_disabled = false;
    }
}

/*
 * The "rdmae" section's END: every page of the final pass is placed (its
 * SYNC was acknowledged); wait for the engine to compare the page sums
 * and commit. The loadvm coroutine yields meanwhile, so the main loop
 * runs.
 */
static int rdmae_wait_commit(void)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    RdmaeIncoming *in = mis->transport_data;
    QIOChannelRdmae *rioc = in ? in->main : NULL;
    int64_t t0 = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    int ret = 0;

    if (!rioc) {
        error_report("rdmae: no rdmae connection for the rdmae section");
        return -EINVAL;
    }
    qemu_mutex_lock(&rioc->lock);
    while (!rioc->committed && !rioc->err && !rioc->closing) {
        if (qemu_in_coroutine()) {
            rioc->waiter = qemu_coroutine_self();
            qemu_mutex_unlock(&rioc->lock);
            qemu_coroutine_yield();
            qemu_mutex_lock(&rioc->lock);
        } else {
            qemu_cond_wait(&rioc->cond, &rioc->lock);
        }
    }
    if (!rioc->committed) {
        error_report("%s", rioc->err ? error_get_pretty(rioc->err) :
                     "rdmae: the channel closed before the commit");
        ret = -EINVAL;
    }
    qemu_mutex_unlock(&rioc->lock);
    trace_rdmae_commit_wait(qemu_clock_get_us(QEMU_CLOCK_REALTIME) - t0,
                            ret == 0);
    return ret;
}

static void rdmae_incoming_fail_bh(void *opaque)
{
    RdmaeIncoming *in = opaque;
    MigrationIncomingState *mis = migration_incoming_get_current();

    if (mis->transport_data != in) {
        return;
    }
    error_report_err(error_copy(in->err));
    rdmae_populate_finish(in);
    if (in->link) {
        link_unref(in->link);
        in->link = NULL;
    }
    migrate_set_state(&mis->state, mis->state, MIGRATION_STATUS_FAILED);
    if (mis->exit_on_error) {
        /* Registrations are undone above; nothing stays pinned. */
        exit(EXIT_FAILURE);
    }
}

/*
 * The main channel first: lanes cannot be peeked, and QEMU takes the
 * first channel without a main one as the main channel. Each lane's
 * MultiFDInit_t is already read, so multifd_recv_new_channel() does not
 * block the main loop.
 */
static void rdmae_incoming_bh(void *opaque)
{
    RdmaeIncoming *in = opaque;

    for (unsigned int i = 0; i < in->lanes; i++) {
        migration_channel_process_incoming(QIO_CHANNEL(in->chans[i]));
        object_unref(OBJECT(in->chans[i]));
    }
    g_free(in->chans);
    in->chans = NULL;
}

static void *rdmae_accept_thread(void *opaque)
{
    RdmaeIncoming *in = opaque;
    RdmaeLink *l = in->link;
    struct rdmae_session_opts so;
    struct rdmae_err e = { 0 };
    int64_t t[4];
    int rc;

    rc = rdmae_accept(in->listener, &l->conn, -1, &e);
    /*
     * The source is here: populating on would only take CPU and memory
     * bandwidth from its setup (measured: a 512 MiB destination's connect
     * took 4.1 s against 1.3 s). Registration faults in the rest.
     */
    qatomic_set(&in->populate_stop, true);
    /*
     * And wait for its last step: registration and the source's WRITEs
     * must not meet a populate that writes the pages (the fallback of
     * qemu_prealloc_mem without MADV_POPULATE_WRITE does).
     */
    if (in->populate_started) {
        qemu_event_wait(&in->populate_done);
    }
    rdmae_listener_destroy(in->listener);
    in->listener = NULL;
    if (rc) {
        error_setg_errno(&in->err, -rc, "rdmae: accept on %s:%s: %s",
                         in->addr->host, in->addr->port, e.msg);
        goto fail;
    }
    l->start_us = t[0] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    l->peer = g_strdup(rdmae_conn_peer(l->conn));
    trace_setup_conn(l);
    if (rdmae_conn_lanes(l->conn) != in->lanes) {
        error_setg(&in->err, "rdmae: %s connected with %u lanes "
                   "(multifd-channels %u); this side has multifd-channels "
                   "%u: set the same on both sides", l->peer,
                   rdmae_conn_lanes(l->conn), rdmae_conn_lanes(l->conn) - 1,
                   in->lanes - 1);
        goto fail;
    }

    rdmae_session_opts_default(&so);
    so.reg_mode = in->reg;
    /* A destination that verifies refuses a source that would not. */
    so.require_verify = in->verify;
    so.data_path = RDMAE_DATA_PATH_EXTERNAL;
    rc = rdmae_session_create(&l->sess, RDMAE_DEST, l->conn, l->eblocks,
                              l->nblocks, &so, &e);
    t[1] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (!rc) {
        rc = rdmae_session_preflight(l->sess, &e);
    }
    t[2] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (rc) {
        error_setg_errno(&in->err, -rc, "rdmae: pre-flight with %s: %s",
                         l->peer, e.msg);
        goto fail;
    }
    trace_reg_modes(l);

    in->chans = g_new0(QIOChannelRdmae *, in->lanes);
    for (unsigned int i = 0; i < in->lanes; i++) {
        in->chans[i] = rdmae_channel_new(l, i);
    }
    in->main = in->chans[0];
    object_ref(OBJECT(in->main));
    in->main->pump_started = true;
    qemu_thread_create(&in->main->pump, "rdmae-pump", rdmae_pump_thread,
                       in->main, QEMU_THREAD_JOINABLE);
    for (unsigned int i = 1; i < in->lanes; i++) {
        QIOChannelRdmae *lane = in->chans[i];
        void *buf;
        size_t len;

        rc = rdmae_recv_lane(l->conn, i, &buf, &len, so.timeout_ms, &e);
        if (rc) {
            error_setg_errno(&in->err, -rc, "rdmae: lane %u from %s, the "
                             "first multifd message: %s", i, l->peer, e.msg);
            goto fail_chans;
        }
        lane->msg = buf;
        lane->msg_len = len;
    }
    t[3] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    trace_rdmae_setup_dst(t[1] - t[0], t[2] - t[1], t[3] - t[2]);
    link_unref(l);
    in->link = NULL;
    qatomic_set(&in->accept_done, true);
    aio_bh_schedule_oneshot(qemu_get_aio_context(), rdmae_incoming_bh, in);
    return NULL;

fail_chans:
    /* The main channel's close cancels the session (and its pump). */
    for (unsigned int i = 0; i < in->lanes; i++) {
        object_unref(OBJECT(in->chans[i]));
    }
    g_free(in->chans);
    in->chans = NULL;
fail:
    qatomic_set(&in->accept_done, true);
    aio_bh_schedule_oneshot(qemu_get_aio_context(), rdmae_incoming_fail_bh,
                            in);
    return NULL;
}

static void rdmae_incoming_cleanup(void *opaque)
{
    RdmaeIncoming *in = opaque;

    rdmae_populate_finish(in);
    rdmae_savevm_unregister();
    /*
     * Still waiting in rdmae_accept (e.g. QEMU quits while listening): the
     * thread owns everything else; the process exit releases it.
     */
    if (!qatomic_read(&in->accept_done)) {
        return;
    }
    if (in->main) {
        object_unref(OBJECT(in->main));
    }
    if (in->link) {
        link_unref(in->link);
    }
    rdmae_listener_destroy(in->listener);
    if (in->populate_started) {
        qemu_event_destroy(&in->populate_done);
    }
    error_free(in->err);
    qapi_free_InetSocketAddress(in->addr);
    g_free(in);
}

void rdmae_start_incoming_migration(InetSocketAddress *addr, Error **errp)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    MigrationState *s = migrate_get_current();
    struct rdmae_conn_opts co;
    struct rdmae_err e = { 0 };
    RdmaeIncoming *in;
    RdmaeParams params;
    RdmaeLink *l;
    QemuThread th;
    int rc;

    if (!rdmae_check_addr(addr, errp) ||
        !rdmae_caps_check(s->capabilities, errp)) {
        return;
    }
    if (rdmae_incoming_active()) {
        error_setg(errp, "rdmae: already listening");
        return;
    }
    if (!rdmae_params_get(&params, errp)) {
        return;
    }
    l = link_new(false);
    l->lanes = params.lanes;
    l->verify = params.verify;
    l->blocks = list_blocks(&l->nblocks, errp);
    if (!l->blocks) {
        rdmae_params_wipe(&params);
        link_free(l);
        return;
    }
    l->eblocks = engine_blocks(l->blocks, l->nblocks);

    in = g_new0(RdmaeIncoming, 1);
    in->addr = QAPI_CLONE(InetSocketAddress, addr);
    in->reg = params.reg;
    in->verify = params.verify;
    in->lanes = params.lanes;
    in->link = l;
    conn_opts_from_params(&params, &co);
    rc = rdmae_listen(&in->listener, addr->host, addr->port, &co, &e);
    /* The listener keeps its own copy of the key. */
    rdmae_params_wipe(&params);
    if (rc) {
        error_setg_errno(errp, -rc, "rdmae: listen on %s:%s: %s", addr->host,
                         addr->port, e.msg);
        link_free(l);
        qapi_free_InetSocketAddress(in->addr);
        g_free(in);
        return;
    }
    rdmae_savevm_register();
    mis->transport = &rdmae_transport_ops;
    mis->transport_data = in;
    mis->transport_cleanup = rdmae_incoming_cleanup;
    rdmae_populate_start(in);
    qemu_thread_create(&th, "rdmae-accept", rdmae_accept_thread, in,
                       QEMU_THREAD_DETACHED);
}
