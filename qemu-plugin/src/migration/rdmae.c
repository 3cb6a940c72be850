/*
 * rdmae: live migration over the librdmae RDMA engine
 *
 * Source:
 *   rdmae_start_outgoing_migration (BQL): check, list the RAM blocks, start
 *   a connect thread: rdmae_connect, HELLO (block names and used lengths),
 *   session, pre-flight (both sides register, outside the BQL); then a
 *   bottom half hands QEMU a QIOChannelRdmae (migration_channel_connect).
 *   ram.c sends one engine round per iteration over a dirty-bitmap
 *   snapshot and the final round after the last sync; the device state
 *   goes through the channel (rdmae_session_send_state); migration.c calls
 *   rdmae_complete() after the last byte: fence, verified commit.
 *
 * Destination:
 *   rdmae_start_incoming_migration: listen; an accept thread takes one
 *   connection and its HELLO, a bottom half resizes resizable blocks to the
 *   source's lengths, the thread creates the session and pre-flights (pins
 *   all of guest RAM); a pump thread then runs rdmae_session_dest_step and
 *   buffers the device state until RDMAE_EV_COMMITTED: the loadvm coroutine
 *   reads nothing before every page is placed and verified, so the VM never
 *   runs on unverified memory and no post_load can race the checksums.
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
#include "migration/register.h"
#include "channel.h"
#include "options.h"
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
    bool zero_detect;           /* source: zero-page-detection is not none */
    uint64_t max_bandwidth;     /* source: bytes/s */
    uint64_t downtime_limit_ms; /* source */
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
    p->zero_detect =
        migrate_zero_page_detection() != ZERO_PAGE_DETECTION_NONE;
    p->max_bandwidth = migrate_max_bandwidth();
    p->downtime_limit_ms = migrate_downtime_limit();
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
        MIGRATION_CAPABILITY_MULTIFD,
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
    return true;
}

/* ---- HELLO: the source's blocks, before the sessions exist ---- */

#define HELLO_MAGIC     0x48514452u     /* "RDQH" on the wire */
#define HELLO_VERSION   1
#define HELLO_NAME_LEN  256             /* RAMBlock idstr, NUL included */

typedef struct QEMU_PACKED HelloHdr {
    uint32_t magic;
    uint16_t version;
    uint16_t reserved0;
    uint32_t count;
    uint32_t reserved1;
} HelloHdr;

typedef struct QEMU_PACKED HelloBlock {
    char name[HELLO_NAME_LEN];
    uint64_t used_length;
    uint32_t page_size;
    uint32_t reserved;
} HelloBlock;

QEMU_BUILD_BUG_ON(sizeof(HelloHdr) != 16);
QEMU_BUILD_BUG_ON(sizeof(HelloBlock) != 272);
QEMU_BUILD_BUG_ON(sizeof(((RAMBlock *)0)->idstr) != HELLO_NAME_LEN);
QEMU_BUILD_BUG_ON(RDMAE_BLOCK_NAME_MAX != HELLO_NAME_LEN);
/* QEMU's dirty bitmaps are handed to the engine as they are. */
QEMU_BUILD_BUG_ON(sizeof(unsigned long) != sizeof(uint64_t));

typedef struct RdmaeBlockInfo {
    char *name;
    RAMBlock *rb;
    void *host;
    uint64_t len;
    uint64_t page_size;
    bool hugepages;
} RdmaeBlockInfo;

static void *hello_encode(const RdmaeBlockInfo *b, size_t n, size_t *len)
{
    HelloHdr h = {
        .magic = cpu_to_le32(HELLO_MAGIC),
        .version = cpu_to_le16(HELLO_VERSION),
        .count = cpu_to_le32(n),
    };
    uint8_t *buf;

    *len = sizeof(h) + n * sizeof(HelloBlock);
    buf = g_malloc0(*len);
    memcpy(buf, &h, sizeof(h));
    for (size_t i = 0; i < n; i++) {
        HelloBlock hb = { 0 };

        pstrcpy(hb.name, sizeof(hb.name), b[i].name);
        hb.used_length = cpu_to_le64(b[i].len);
        hb.page_size = cpu_to_le32(b[i].page_size);
        memcpy(buf + sizeof(h) + i * sizeof(hb), &hb, sizeof(hb));
    }
    return buf;
}

/* Strict: sizes, magic, version, reserved zero, names NUL-terminated. */
static bool hello_decode(const void *buf, size_t len, HelloBlock **out,
                         size_t *n, Error **errp)
{
    HelloHdr h;
    uint32_t count;

    if (len < sizeof(h)) {
        error_setg(errp, "rdmae: HELLO of %zu bytes is too short", len);
        return false;
    }
    memcpy(&h, buf, sizeof(h));
    count = le32_to_cpu(h.count);
    if (le32_to_cpu(h.magic) != HELLO_MAGIC) {
        error_setg(errp, "rdmae: the peer did not send a HELLO (magic 0x%x): "
                   "not an rdmae QEMU source?", le32_to_cpu(h.magic));
        return false;
    }
    if (le16_to_cpu(h.version) != HELLO_VERSION) {
        error_setg(errp, "rdmae: HELLO version %u, this QEMU speaks %u",
                   le16_to_cpu(h.version), HELLO_VERSION);
        return false;
    }
    if (h.reserved0 || h.reserved1 || !count || count > RDMAE_BLOCKS_MAX ||
        len != sizeof(h) + (size_t)count * sizeof(HelloBlock)) {
        error_setg(errp, "rdmae: malformed HELLO (%u blocks in %zu bytes)",
                   count, len);
        return false;
    }
    *out = g_new(HelloBlock, count);
    memcpy(*out, (const uint8_t *)buf + sizeof(h), count * sizeof(HelloBlock));
    for (uint32_t i = 0; i < count; i++) {
        HelloBlock *hb = &(*out)[i];

        hb->used_length = le64_to_cpu(hb->used_length);
        hb->page_size = le32_to_cpu(hb->page_size);
        if (!memchr(hb->name, '\0', sizeof(hb->name)) || !hb->name[0] ||
            hb->reserved || !hb->used_length) {
            error_setg(errp, "rdmae: malformed HELLO block %u", i);
            g_free(*out);
            *out = NULL;
            return false;
        }
    }
    *n = count;
    return true;
}

/* Every migratable block, ROMs and resizable ones included. BQL held. */
static RdmaeBlockInfo *list_blocks(size_t *n, Error **errp)
{
    GArray *a = g_array_new(false, true, sizeof(RdmaeBlockInfo));
    size_t ps = qemu_target_page_size();
    RAMBlock *rb;

    WITH_RCU_READ_LOCK_GUARD() {
        RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
            RdmaeBlockInfo bi = {
                .name = g_strdup(rb->idstr),
                .rb = rb,
                .host = rb->host,
                .len = rb->used_length,
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

/* ---- the link: connection, session, blocks; owned by the channel ---- */

typedef struct RdmaeLink {
    bool source;
    struct rdmae_conn *conn;
    struct rdmae_session *sess;
    RdmaeBlockInfo *blocks;
    size_t nblocks;
    struct rdmae_block *eblocks;
    uint64_t **bitmaps;         /* source: round snapshots */
    char *peer;
    bool discard_disabled;
    int64_t setup_ms;
    int64_t start_us;           /* source: migrate; destination: accepted */
    bool cost_warned;           /* source: fixed costs reach the limit */
} RdmaeLink;

static void link_free(RdmaeLink *l)
{
    struct rdmae_session_stats st;

    if (!l) {
        return;
    }
    /* The trace says how long after COMMIT_OK the deregistration ended. */
    if (l->sess && !rdmae_session_release(l->sess, NULL) &&
        !rdmae_session_stats(l->sess, &st) && st.dereg_ns) {
        trace_rdmae_dereg(l->source ? "source" : "destination",
                          st.dereg_after_commit_ns / 1000, st.dereg_ns / 1000);
    }
    rdmae_session_destroy(l->sess);
    rdmae_conn_destroy(l->conn);
    for (size_t i = 0; l->bitmaps && i < l->nblocks; i++) {
        g_free(l->bitmaps[i]);
    }
    g_free(l->bitmaps);
    g_free(l->eblocks);
    free_blocks(l->blocks, l->nblocks);
    g_free(l->peer);
    if (l->discard_disabled) {
        ram_block_discard_disable(false);
    }
    g_free(l);
}

static void *link_free_thread(void *opaque)
{
    link_free(opaque);
    return NULL;
}

/*
 * The channel closes with the BQL held: on the destination in the
 * incoming bottom half, after vm_start or, under -S (libvirt), before the
 * `cont` that waits for the BQL. Deregistering a large guest takes
 * seconds, so it runs on a thread of its own and stays out of the
 * downtime either way.
 */
static void link_free_async(RdmaeLink *l)
{
    QemuThread th;

    if (!l) {
        return;
    }
    qemu_thread_create(&th, "rdmae-release", link_free_thread, l,
                       QEMU_THREAD_DETACHED);
}

/* ---- the device-state channel ---- */

#define TYPE_QIO_CHANNEL_RDMAE "qio-channel-rdmae"
OBJECT_DECLARE_SIMPLE_TYPE(QIOChannelRdmae, QIO_CHANNEL_RDMAE)

struct QIOChannelRdmae {
    QIOChannel parent;
    RdmaeLink *link;
    bool blocking;

    /* destination: filled by the pump, readable once committed */
    QemuThread pump;
    bool pump_started;
    QemuMutex lock;
    QemuCond cond;
    GByteArray *state;          /* device state received */
    size_t read_off;            /* served to loadvm so far */
    bool committed;             /* every page placed and verified */
    bool closing;
    Error *err;                 /* the pump's failure */
    EventNotifier readable;     /* set once committed or failed */
};

static ssize_t qio_channel_rdmae_writev(QIOChannel *ioc,
                                        const struct iovec *iov, size_t niov,
                                        int *fds, size_t nfds, int flags,
                                        Error **errp)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);
    struct rdmae_err e = { 0 };
    size_t len = iov_size(iov, niov);
    g_autofree uint8_t *buf = NULL;
    int rc;

    if (!rioc->link || !rioc->link->source) {
        error_setg(errp, "rdmae: the channel is closed or not a source");
        return -1;
    }
    if (!len) {
        return 0;
    }
    /* One message per flush (QEMUFile buffers up to 32 KiB). */
    if (niov == 1) {
        rc = rdmae_session_send_state(rioc->link->sess, iov[0].iov_base, len,
                                      &e);
    } else {
        buf = g_malloc(len);
        iov_to_buf(iov, niov, 0, buf, len);
        rc = rdmae_session_send_state(rioc->link->sess, buf, len, &e);
    }
    if (rc) {
        error_setg_errno(errp, -rc, "rdmae: device state to %s: %s",
                         rioc->link->peer, e.msg);
        return -1;
    }
    return len;
}

static ssize_t qio_channel_rdmae_readv(QIOChannel *ioc,
                                       const struct iovec *iov, size_t niov,
                                       int **fds, size_t *nfds, int flags,
                                       Error **errp)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);
    size_t avail, n;

    if (!rioc->link || rioc->link->source) {
        error_setg(errp, "rdmae: the channel is closed or not a destination");
        return -1;
    }
    QEMU_LOCK_GUARD(&rioc->lock);
    while (!rioc->committed && !rioc->err && !rioc->closing) {
        if (!rioc->blocking) {
            return QIO_CHANNEL_ERR_BLOCK;
        }
        qemu_cond_wait(&rioc->cond, &rioc->lock);
    }
    if (rioc->err) {
        error_propagate(errp, error_copy(rioc->err));
        return -1;
    }
    if (!rioc->committed) {
        error_setg(errp, "rdmae: the channel is closed");
        return -1;
    }
    avail = rioc->state->len - rioc->read_off;
    n = iov_from_buf(iov, niov, 0, rioc->state->data + rioc->read_off, avail);
    rioc->read_off += n;
    return n;       /* 0: the end of the stream */
}

/* Destination: every message in order; device state held until the commit. */
static void *rdmae_pump_thread(void *opaque)
{
    QIOChannelRdmae *rioc = opaque;
    RdmaeLink *l = rioc->link;

    for (;;) {
        struct rdmae_dest_event ev;
        struct rdmae_err e = { 0 };
        int rc = rdmae_session_dest_step(l->sess, &ev, &e);

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
        } else if (ev.kind == RDMAE_EV_STATE) {
            g_byte_array_append(rioc->state, ev.data, ev.len);
            qemu_mutex_unlock(&rioc->lock);
            continue;
        } else if (ev.kind == RDMAE_EV_ROUND) {
            qemu_mutex_unlock(&rioc->lock);
            continue;
        } else {
            rioc->committed = true;
            if (!ev.verified) {
                warn_report("rdmae: committed without verification (the "
                            "source has x-rdmae-verify=off)");
            }
        }
        qemu_cond_broadcast(&rioc->cond);
        qemu_mutex_unlock(&rioc->lock);
        event_notifier_set(&rioc->readable);
        return NULL;
    }
}

static int qio_channel_rdmae_set_blocking(QIOChannel *ioc, bool enabled,
                                          Error **errp)
{
    QIO_CHANNEL_RDMAE(ioc)->blocking = enabled;
    return 0;
}

static int qio_channel_rdmae_shutdown(QIOChannel *ioc,
                                      QIOChannelShutdown how, Error **errp)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);

    /* Wakes any call blocked in the engine with -ECANCELED. */
    if (rioc->link && rioc->link->sess) {
        rdmae_session_cancel(rioc->link->sess, "migration channel shut down");
    }
    return 0;
}

static RdmaeLink *current_src_link;
static QemuMutex src_lock;

static int qio_channel_rdmae_close(QIOChannel *ioc, Error **errp)
{
    QIOChannelRdmae *rioc = QIO_CHANNEL_RDMAE(ioc);
    RdmaeLink *l = rioc->link;

    if (!l) {
        return 0;
    }
    if (l->source) {
        WITH_QEMU_LOCK_GUARD(&src_lock) {
            if (current_src_link == l) {
                current_src_link = NULL;
            }
        }
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
    rioc->link = NULL;
    link_free_async(l);
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
    qemu_mutex_init(&src_lock);
    type_register_static(&qio_channel_rdmae_info);
}

type_init(qio_channel_rdmae_register_types);

/* ---- source ---- */

static uint64_t rdmae_switchover_cost_ms(uint64_t final_bytes);
static void rdmae_savevm_register(void);

typedef struct RdmaeConnectJob {
    MigrationState *s;
    InetSocketAddress *addr;
    RdmaeParams params;
    RdmaeLink *link;
    Error *err;
} RdmaeConnectJob;

/* The job between migrate and the channel: migrate_cancel reaches it here. */
static RdmaeConnectJob *pending_job;
static bool pending_cancelled;
static bool src_outcome_unknown;

static bool job_cancelled(void)
{
    QEMU_LOCK_GUARD(&src_lock);
    return pending_cancelled;
}

static void rdmae_connect_bh(void *opaque)
{
    RdmaeConnectJob *job = opaque;
    MigrationState *s = job->s;

    WITH_QEMU_LOCK_GUARD(&src_lock) {
        pending_job = NULL;
        if (pending_cancelled && !job->err) {
            error_setg(&job->err, "rdmae: cancelled during setup");
        }
    }
    if (job->err) {
        link_free(job->link);
        migration_connect(s, job->err);
        error_free(job->err);
    } else {
        QIOChannelRdmae *rioc =
            QIO_CHANNEL_RDMAE(object_new(TYPE_QIO_CHANNEL_RDMAE));

        rioc->link = job->link;
        WITH_QEMU_LOCK_GUARD(&src_lock) {
            current_src_link = job->link;
        }
        qio_channel_set_name(QIO_CHANNEL(rioc), "migration-rdmae-outgoing");
        migration_channel_connect(s, QIO_CHANNEL(rioc), job->addr->host, NULL);
        object_unref(OBJECT(rioc));
    }
    qapi_free_InetSocketAddress(job->addr);
    rdmae_params_wipe(&job->params);
    object_unref(OBJECT(s));
    g_free(job);
}

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

static void *rdmae_connect_thread(void *opaque)
{
    RdmaeConnectJob *job = opaque;
    RdmaeLink *l = job->link;
    struct rdmae_session *sess = NULL;
    bool cancelled;
    struct rdmae_conn_opts co;
    struct rdmae_session_opts so;
    struct rdmae_err e = { 0 };
    g_autofree void *hello = NULL;
    size_t hello_len;
    int64_t t0 = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    int64_t t[5];
    int rc;

    t[0] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    conn_opts_from_params(&job->params, &co);
    rc = rdmae_connect(&l->conn, job->addr->host, job->addr->port, &co, &e);
    /* The library keeps its own copy of the key. */
    rdmae_params_wipe(&job->params);
    t[1] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (rc) {
        error_setg_errno(&job->err, -rc, "rdmae: connect to %s:%s: %s",
                         job->addr->host, job->addr->port, e.msg);
        goto out;
    }
    l->peer = g_strdup(rdmae_conn_peer(l->conn));
    if (job_cancelled()) {
        goto out;
    }

    trace_setup_conn(l);
    hello = hello_encode(l->blocks, l->nblocks, &hello_len);
    rc = rdmae_send(l->conn, hello, hello_len, &e);
    t[2] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (rc) {
        error_setg_errno(&job->err, -rc, "rdmae: HELLO to %s: %s", l->peer,
                         e.msg);
        goto out;
    }

    rdmae_session_opts_default(&so);
    so.reg_mode = job->params.reg;
    so.no_verify = !job->params.verify;
    so.no_zero_detect = !job->params.zero_detect;
    so.max_bandwidth = job->params.max_bandwidth;
    so.downtime_limit_ns = job->params.downtime_limit_ms * 1000000ull;
    /* QEMU decides convergence (threshold, downtime-limit, auto-converge). */
    so.max_rounds = RDMAE_ROUNDS_UNLIMITED;
    rc = rdmae_session_create(&sess, RDMAE_SOURCE, l->conn, l->eblocks,
                              l->nblocks, &so, &e);
    t[3] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (rc) {
        error_setg_errno(&job->err, -rc, "rdmae: %s", e.msg);
        goto out;
    }
    /* From here, migrate_cancel cancels the session. */
    qemu_mutex_lock(&src_lock);
    l->sess = sess;
    cancelled = pending_cancelled;
    qemu_mutex_unlock(&src_lock);
    if (cancelled) {
        goto out;
    }
    rc = rdmae_session_preflight(l->sess, &e);
    if (rc) {
        error_setg_errno(&job->err, -rc, "rdmae: pre-flight with %s: %s",
                         l->peer, e.msg);
        goto out;
    }
    t[4] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    l->setup_ms = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) - t0;
    trace_rdmae_setup_src(t[0] - l->start_us, t[1] - t[0], t[2] - t[1],
                          t[3] - t[2], t[4] - t[3]);
    trace_reg_modes(l);

out:
    aio_bh_schedule_oneshot(qemu_get_aio_context(), rdmae_connect_bh, job);
    return NULL;
}

void rdmae_start_outgoing_migration(MigrationState *s,
                                    InetSocketAddress *addr, Error **errp)
{
    RdmaeConnectJob *job;
    RdmaeParams params;
    RdmaeLink *l;
    QemuThread th;

    if (!rdmae_check_addr(addr, errp) ||
        !rdmae_caps_check(s->capabilities, errp) ||
        !rdmae_params_get(&params, errp)) {
        return;
    }
    l = g_new0(RdmaeLink, 1);
    l->source = true;
    l->start_us = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    l->blocks = list_blocks(&l->nblocks, errp);
    if (!l->blocks) {
        g_free(l);
        rdmae_params_wipe(&params);
        return;
    }
    l->eblocks = engine_blocks(l->blocks, l->nblocks);
    l->bitmaps = g_new0(uint64_t *, l->nblocks);
    for (size_t i = 0; i < l->nblocks; i++) {
        l->bitmaps[i] = g_new0(uint64_t,
                               BITS_TO_LONGS(l->blocks[i].len /
                                             l->blocks[i].page_size));
    }
    {
        struct rdmae_err e = { 0 };

        if (rdmae_session_check_blocks(l->eblocks, l->nblocks, &e)) {
            error_setg(errp, "rdmae: %s", e.msg);
            link_free(l);
            rdmae_params_wipe(&params);
            return;
        }
    }
    /* A discarded page would leave its pinned registration stale. */
    if (ram_block_discard_disable(true)) {
        error_setg(errp, "rdmae: RAM discards (e.g. a balloon) cannot be "
                   "disabled");
        link_free(l);
        rdmae_params_wipe(&params);
        return;
    }
    l->discard_disabled = true;

    job = g_new0(RdmaeConnectJob, 1);
    job->s = s;
    job->addr = QAPI_CLONE(InetSocketAddress, addr);
    job->params = params;
    job->link = l;
    WITH_QEMU_LOCK_GUARD(&src_lock) {
        pending_job = job;
        pending_cancelled = false;
        src_outcome_unknown = false;
    }
    s->rdmae_migration = true;
    s->switchover_cost_ms = rdmae_switchover_cost_ms;
    rdmae_savevm_register();
    object_ref(OBJECT(s));
    qemu_thread_create(&th, "rdmae-connect", rdmae_connect_thread, job,
                       QEMU_THREAD_DETACHED);
}

void rdmae_cancel_setup(void)
{
    QEMU_LOCK_GUARD(&src_lock);
    if (pending_job) {
        pending_cancelled = true;
        if (pending_job->link && pending_job->link->sess) {
            rdmae_session_cancel(pending_job->link->sess,
                                 "migrate_cancel during setup");
        }
    }
}

void rdmae_params_changed(void)
{
    QEMU_LOCK_GUARD(&src_lock);
    if (current_src_link && current_src_link->sess) {
        rdmae_session_set_max_bandwidth(current_src_link->sess,
                                        migrate_max_bandwidth());
        rdmae_session_set_downtime_limit(current_src_link->sess,
                                         migrate_downtime_limit() * 1000000ull);
    }
}

/*
 * What the switchover costs beyond moving the final pass at QEMU's
 * bandwidth, in the engine's model (rdmae_session_switchover_cost_ns):
 * hashing the final pass on both sides, digesting the page sums, the
 * commit's round trips (the device state is not known ahead, so it is not
 * counted). Counted nowhere else, it let a guest converge "in time" and
 * then overrun downtime-limit by exactly these costs.
 */
static uint64_t rdmae_switchover_cost_ms(uint64_t final_bytes)
{
    QEMU_LOCK_GUARD(&src_lock);
    if (!current_src_link || !current_src_link->sess) {
        return 0;
    }
    return DIV_ROUND_UP(rdmae_session_switchover_cost_ns(
                            current_src_link->sess, final_bytes), SCALE_MS);
}

static bool rdmae_pending_is_active(void *opaque)
{
    QEMU_LOCK_GUARD(&src_lock);
    return current_src_link && current_src_link->sess;
}

/*
 * The cost as pending bytes, at the bandwidth of QEMU's switchover
 * decision: pending < threshold_size then means "the dirty bytes and the
 * fixed costs together fit downtime-limit".
 */
static void rdmae_state_pending(void *opaque, uint64_t *must_precopy,
                                uint64_t *can_postcopy)
{
    MigrationState *s = migrate_get_current();
    uint64_t limit_ms = migrate_downtime_limit();
    uint64_t cost_ms;

    if (!limit_ms || !s->threshold_size) {
        return;
    }
    cost_ms = rdmae_switchover_cost_ms(ram_bytes_remaining());
    if (cost_ms >= limit_ms) {
        bool warn = false;

        WITH_QEMU_LOCK_GUARD(&src_lock) {
            if (current_src_link && !current_src_link->cost_warned) {
                current_src_link->cost_warned = warn = true;
            }
        }
        if (warn) {
            warn_report("rdmae: the switchover's fixed costs (%" PRIu64
                        " ms: verification, the commit's round trips) alone "
                        "reach downtime-limit (%" PRIu64 " ms), so the "
                        "migration cannot converge; raise downtime-limit, "
                        "or set x-rdmae-verify=off on both sides", cost_ms,
                        limit_ms);
        }
    }
    /* threshold_size is the bandwidth (bytes/ms) times the limit. */
    *must_precopy += cost_ms * (s->threshold_size / limit_ms);
    trace_rdmae_switchover_cost(cost_ms, *must_precopy, s->threshold_size);
}

/*
 * No section of its own: only the pending callbacks, so that the stream
 * and the destination are unchanged.
 */
static SaveVMHandlers savevm_rdmae_handlers = {
    .is_active = rdmae_pending_is_active,
    .state_pending_estimate = rdmae_state_pending,
    .state_pending_exact = rdmae_state_pending,
};

/*
 * Once per process, at the first rdmae migration: after "ram" (registered
 * when the migration object is created), so that its pending callbacks
 * run after ram's dirty-bitmap sync and see the bytes the final pass would
 * move. is_active keeps it out of every other migration.
 */
static void rdmae_savevm_register(void)
{
    static bool registered;

    if (!registered) {
        register_savevm_live("rdmae", 0, 1, &savevm_rdmae_handlers, NULL);
        registered = true;
    }
}

int64_t rdmae_setup_ms(void)
{
    QEMU_LOCK_GUARD(&src_lock);
    return current_src_link ? current_src_link->setup_ms : 0;
}

size_t rdmae_round_nblocks(void)
{
    return current_src_link ? current_src_link->nblocks : 0;
}

unsigned long *rdmae_round_bitmap(size_t index, RAMBlock *rb, Error **errp)
{
    RdmaeLink *l = current_src_link;

    /* The migration thread owns the link while it runs rounds. */
    if (!l) {
        error_setg(errp, "rdmae: no session");
        return NULL;
    }
    if (index >= l->nblocks || l->blocks[index].rb != rb ||
        l->blocks[index].len != rb->used_length ||
        l->blocks[index].host != rb->host) {
        error_setg(errp, "rdmae: RAM block '%s' appeared, moved or changed "
                   "size during the migration", rb->idstr);
        return NULL;
    }
    return (unsigned long *)l->bitmaps[index];
}

int rdmae_round(bool final, RdmaeRoundResult *res, Error **errp)
{
    RdmaeLink *l = current_src_link;
    struct rdmae_round_stats rs;
    struct rdmae_err e = { 0 };
    int rc;

    if (!l) {
        error_setg(errp, "rdmae: no session");
        return -EINVAL;
    }
    if (final) {
        /* QEMU lifts the rate limit for the final stage; so does the round. */
        rdmae_session_set_max_bandwidth(l->sess, 0);
    }
    rc = rdmae_session_round(l->sess, (const uint64_t *const *)l->bitmaps,
                             &rs, &e);
    if (rc) {
        error_setg_errno(errp, -rc, "rdmae: %sround to %s: %s",
                         final ? "final " : "", l->peer, e.msg);
        return rc;
    }
    res->pages = rs.pages;
    res->zero_pages = rs.zero_pages;
    res->bytes = rs.bytes;
    return 0;
}

void rdmae_mark_stopped(void)
{
    if (current_src_link) {
        rdmae_session_mark_stopped(current_src_link->sess);
    }
}

int rdmae_complete(Error **errp)
{
    RdmaeLink *l = current_src_link;
    struct rdmae_err e = { 0 };
    int rc;

    if (!l) {
        error_setg(errp, "rdmae: no session");
        return -EINVAL;
    }
    rc = rdmae_session_complete(l->sess, &e);
    if (rc == -ENOTRECOVERABLE) {
        WITH_QEMU_LOCK_GUARD(&src_lock) {
            src_outcome_unknown = true;
        }
        error_setg(errp, "rdmae: %s; the source VM stays paused: resume it "
                   "with 'cont' only once the destination (%s) is known not "
                   "to run", e.msg, l->peer);
    } else if (rc) {
        error_setg_errno(errp, -rc, "rdmae: commit with %s: %s", l->peer,
                         e.msg);
    }
    return rc;
}

bool rdmae_outcome_unknown(void)
{
    QEMU_LOCK_GUARD(&src_lock);
    return src_outcome_unknown;
}

/* ---- destination ---- */

/* A RAM block to populate while -incoming waits, referenced until done. */
typedef struct PopulateRange {
    MemoryRegion *mr;
    char *host;
    size_t len;
    int fd;
} PopulateRange;

typedef struct RdmaeIncoming {
    InetSocketAddress *addr;
    enum rdmae_reg_mode reg;
    bool verify;
    struct rdmae_listener *listener;
    RdmaeLink *link;            /* until the channel takes it */
    HelloBlock *hello;
    size_t nhello;
    QemuEvent resized;
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
} RdmaeIncoming;

static RdmaeIncoming *incoming;

bool rdmae_incoming_active(void)
{
    return incoming != NULL;
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

static void rdmae_incoming_fail_bh(void *opaque)
{
    RdmaeIncoming *in = opaque;
    MigrationIncomingState *mis = migration_incoming_get_current();

    if (in != incoming) {
        return;
    }
    error_report_err(error_copy(in->err));
    rdmae_populate_finish(in);
    link_free(in->link);
    in->link = NULL;
    migrate_set_state(&mis->state, mis->state, MIGRATION_STATUS_FAILED);
    if (mis->exit_on_error) {
        /* Registrations are undone above; nothing stays pinned. */
        exit(EXIT_FAILURE);
    }
}

/*
 * BQL: resizable blocks take the source's used length, as parse_ramblock
 * does. A block that cannot take it stays as it is, with a warning: the
 * engine's pre-flight then refuses the migration and tells the source
 * which block differs, where failing here would only hang up on it.
 */
static void rdmae_resize_bh(void *opaque)
{
    RdmaeIncoming *in = opaque;

    for (size_t i = 0; i < in->nhello; i++) {
        RAMBlock *rb = qemu_ram_block_by_name(in->hello[i].name);
        Error *err = NULL;

        if (rb && rb->used_length != in->hello[i].used_length &&
            (memory_region_ram_resize(rb->mr, in->hello[i].used_length,
                                      &err), err)) {
            warn_reportf_err(err, "rdmae: block '%s' is %" PRIu64 " bytes at"
                             " the source, " RAM_ADDR_FMT " here: ",
                             in->hello[i].name, in->hello[i].used_length,
                             rb->used_length);
        }
    }
    in->link->blocks = list_blocks(&in->link->nblocks, &in->err);
    qemu_event_set(&in->resized);
}

static void rdmae_incoming_bh(void *opaque)
{
    QIOChannelRdmae *rioc = opaque;

    migration_channel_process_incoming(QIO_CHANNEL(rioc));
    object_unref(OBJECT(rioc));
}

static void *rdmae_accept_thread(void *opaque)
{
    RdmaeIncoming *in = opaque;
    RdmaeLink *l = g_new0(RdmaeLink, 1);
    struct rdmae_session_opts so;
    struct rdmae_err e = { 0 };
    QIOChannelRdmae *rioc;
    void *buf = NULL;
    size_t len;
    int64_t t0, t[4];
    int rc;

    in->link = l;
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
    t0 = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    l->start_us = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    l->peer = g_strdup(rdmae_conn_peer(l->conn));
    trace_setup_conn(l);
    rc = rdmae_recv(l->conn, &buf, &len, 30000, &e);
    if (rc) {
        error_setg_errno(&in->err, -rc, "rdmae: HELLO from %s: %s", l->peer,
                         e.msg);
        goto fail;
    }
    if (!hello_decode(buf, len, &in->hello, &in->nhello, &in->err)) {
        free(buf);
        goto fail;
    }
    free(buf);
    t[0] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);

    /* Resizing takes the BQL; the pinning below must not. */
    aio_bh_schedule_oneshot(qemu_get_aio_context(), rdmae_resize_bh, in);
    qemu_event_wait(&in->resized);
    t[1] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (in->err) {
        goto fail;
    }
    l->eblocks = engine_blocks(l->blocks, l->nblocks);

    rdmae_session_opts_default(&so);
    so.reg_mode = in->reg;
    /* A destination that verifies refuses a source that would not. */
    so.require_verify = in->verify;
    so.max_rounds = RDMAE_ROUNDS_UNLIMITED;
    rc = rdmae_session_create(&l->sess, RDMAE_DEST, l->conn, l->eblocks,
                              l->nblocks, &so, &e);
    t[2] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (!rc) {
        rc = rdmae_session_preflight(l->sess, &e);
    }
    t[3] = qemu_clock_get_us(QEMU_CLOCK_REALTIME);
    if (rc) {
        error_setg_errno(&in->err, -rc, "rdmae: pre-flight with %s: %s",
                         l->peer, e.msg);
        goto fail;
    }
    l->setup_ms = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) - t0;
    trace_rdmae_setup_dst(t[0] - l->start_us, t[1] - t[0], t[2] - t[1],
                          t[3] - t[2]);
    trace_reg_modes(l);

    rioc = QIO_CHANNEL_RDMAE(object_new(TYPE_QIO_CHANNEL_RDMAE));
    qio_channel_set_name(QIO_CHANNEL(rioc), "migration-rdmae-incoming");
    rioc->link = l;
    in->link = NULL;
    rioc->pump_started = true;
    qemu_thread_create(&rioc->pump, "rdmae-pump", rdmae_pump_thread, rioc,
                       QEMU_THREAD_JOINABLE);
    qatomic_set(&in->accept_done, true);
    aio_bh_schedule_oneshot(qemu_get_aio_context(), rdmae_incoming_bh, rioc);
    return NULL;

fail:
    qatomic_set(&in->accept_done, true);
    aio_bh_schedule_oneshot(qemu_get_aio_context(), rdmae_incoming_fail_bh,
                            in);
    return NULL;
}

static void rdmae_incoming_cleanup(void *opaque)
{
    RdmaeIncoming *in = opaque;

    if (in != incoming) {
        return;
    }
    rdmae_populate_finish(in);
    /*
     * Still waiting in rdmae_accept (e.g. QEMU quits while listening): the
     * thread owns everything else; the process exit releases it.
     */
    if (!qatomic_read(&in->accept_done)) {
        return;
    }
    link_free(in->link);
    rdmae_listener_destroy(in->listener);
    g_free(in->hello);
    qemu_event_destroy(&in->resized);
    if (in->populate_started) {
        qemu_event_destroy(&in->populate_done);
    }
    error_free(in->err);
    qapi_free_InetSocketAddress(in->addr);
    g_free(in);
    incoming = NULL;
}

void rdmae_start_incoming_migration(InetSocketAddress *addr, Error **errp)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    MigrationState *s = migrate_get_current();
    struct rdmae_conn_opts co;
    struct rdmae_err e = { 0 };
    RdmaeIncoming *in;
    RdmaeParams params;
    QemuThread th;
    int rc;

    if (!rdmae_check_addr(addr, errp) ||
        !rdmae_caps_check(s->capabilities, errp)) {
        return;
    }
    if (incoming) {
        error_setg(errp, "rdmae: already listening");
        return;
    }
    if (!rdmae_params_get(&params, errp)) {
        return;
    }
    in = g_new0(RdmaeIncoming, 1);
    in->addr = QAPI_CLONE(InetSocketAddress, addr);
    in->reg = params.reg;
    in->verify = params.verify;
    qemu_event_init(&in->resized, false);
    conn_opts_from_params(&params, &co);
    rc = rdmae_listen(&in->listener, addr->host, addr->port, &co, &e);
    /* The listener keeps its own copy of the key. */
    rdmae_params_wipe(&params);
    if (rc) {
        error_setg_errno(errp, -rc, "rdmae: listen on %s:%s: %s", addr->host,
                         addr->port, e.msg);
        qemu_event_destroy(&in->resized);
        qapi_free_InetSocketAddress(in->addr);
        g_free(in);
        return;
    }
    incoming = in;
    mis->transport_data = in;
    mis->transport_cleanup = rdmae_incoming_cleanup;
    rdmae_populate_start(in);
    qemu_thread_create(&th, "rdmae-accept", rdmae_accept_thread, in,
                       QEMU_THREAD_DETACHED);
}
