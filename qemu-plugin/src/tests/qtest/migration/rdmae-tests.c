/*
 * QTest testcases for migration over rdmae: (RDMA through multifd)
 *
 * rdmae: moves guest RAM through multifd, each multifd channel an RDMA
 * lane, so both sides need the multifd capability, the same
 * multifd-channels, and the same pre-shared key (the rdmae-secret
 * parameter names a 'secret' object).
 *
 * The tests that move data need an RDMA device (soft-RoCE, rdma_rxe, is
 * enough): RDMAE_QTEST_ADDR names an IPv4 address of an interface that
 * has one. Without it they are skipped, saying why; the refusal test,
 * which the parameters decide before anything connects, runs anywhere.
 * RDMAE_QTEST_PORT (default 4490) is the first of the ports they listen
 * on, one per test.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or
 * later. See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "migration/framework.h"
#include "migration/migration-qmp.h"
#include "migration/migration-util.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"

#define RDMAE_SECRET_ID "rdmae-key"
#define RDMAE_PORT_DEFAULT 4490
/* Four multifd channels: rdmae connects five lanes (at most 16). */
#define RDMAE_CHANNELS 4

/* 32 bytes each (the key takes 16 to 1024). */
#define RDMAE_KEY_A "0123456789abcdef0123456789abcdef"
#define RDMAE_KEY_B "fedcba9876543210fedcba9876543210"

#define RDMAE_SECRET_OPTS(key) \
    "-object secret,id=" RDMAE_SECRET_ID ",data=" key ",format=raw "

/* Ports: one per test, so that a listener left by one never meets another. */
enum {
    RDMAE_PORT_PLAIN,
    RDMAE_PORT_CHANNELS,
    RDMAE_PORT_BAD_KEY,
    RDMAE_PORT_NO_MULTIFD,
    RDMAE_PORT_COUNT,
};

/*
 * The host and port of an RDMA-capable address; false (the test skipped)
 * when RDMAE_QTEST_ADDR does not name one.
 */
static bool rdmae_addr(int port_index, bool need_rdma, const char **host,
                       int *port)
{
    const char *addr = getenv("RDMAE_QTEST_ADDR");
    const char *port_env = getenv("RDMAE_QTEST_PORT");
    int base = RDMAE_PORT_DEFAULT;

    if (!addr || !*addr) {
        if (need_rdma) {
            g_test_skip("no RDMA address: set RDMAE_QTEST_ADDR to an IPv4 "
                        "address of an interface with an RDMA device "
                        "(e.g. soft-RoCE: rdma link add rxe0 type rxe "
                        "netdev IFACE)");
            return false;
        }
        /* Nothing listens: the refusal comes before any connection. */
        addr = "127.0.0.1";
    }
    if (port_env && *port_env) {
        base = atoi(port_env);
        g_assert(base > 0 && base + RDMAE_PORT_COUNT <= 65536);
    }
    *host = addr;
    *port = base + port_index;
    return true;
}

/* The URI form of rdmae_addr(), or NULL. */
static char *rdmae_uri(int port_index, bool need_rdma)
{
    const char *host;
    int port;

    if (!rdmae_addr(port_index, need_rdma, &host, &port)) {
        return NULL;
    }
    return g_strdup_printf("rdmae:%s:%d", host, port);
}

static void rdmae_set_key(QTestState *who)
{
    migrate_set_parameter_str(who, "rdmae-secret", RDMAE_SECRET_ID);
}

/*
 * Both sides: the key, multifd and its channels; then the destination
 * listens. The capability must be on before migrate-incoming, which
 * refuses an rdmae: address without it.
 */
static void *migrate_hook_start_rdmae(QTestState *from, QTestState *to,
                                      const char *uri)
{
    rdmae_set_key(from);
    rdmae_set_key(to);
    migrate_set_parameter_int(from, "multifd-channels", RDMAE_CHANNELS);
    migrate_set_parameter_int(to, "multifd-channels", RDMAE_CHANNELS);
    migrate_set_capability(from, "multifd", true);
    migrate_set_capability(to, "multifd", true);

    migrate_incoming_qmp(to, uri, NULL, "{}");
    return NULL;
}

/*
 * Both sides as above, the destination given the address in the QMP
 * channels form.
 */
static void *migrate_hook_start_rdmae_channels(QTestState *from,
                                               QTestState *to,
                                               const char *channels)
{
    rdmae_set_key(from);
    rdmae_set_key(to);
    migrate_set_parameter_int(from, "multifd-channels", RDMAE_CHANNELS);
    migrate_set_parameter_int(to, "multifd-channels", RDMAE_CHANNELS);
    migrate_set_capability(from, "multifd", true);
    migrate_set_capability(to, "multifd", true);

    migrate_incoming_qmp(to, NULL, qobject_from_json(channels, &error_abort),
                         "{}");
    return NULL;
}

static char *plain_uri;

static void *migrate_hook_start_rdmae_plain(QTestState *from, QTestState *to)
{
    return migrate_hook_start_rdmae(from, to, plain_uri);
}

/*
 * Precopy with multifd over rdmae:, the guest stopped (full speed);
 * the framework compares the destination's RAM with what the guest
 * wrote once it runs there.
 */
static void test_multifd_rdmae_plain(void)
{
    g_autofree char *uri = rdmae_uri(RDMAE_PORT_PLAIN, true);
    MigrateCommon args = {
        .start = {
            .opts_source = RDMAE_SECRET_OPTS(RDMAE_KEY_A),
            .opts_target = RDMAE_SECRET_OPTS(RDMAE_KEY_A),
        },
        .listen_uri = "defer",
        .start_hook = migrate_hook_start_rdmae_plain,
    };

    if (!uri) {
        return;
    }
    plain_uri = uri;
    args.connect_uri = uri;
    test_precopy_common(&args);
    plain_uri = NULL;
}

static char *channels_json;

static void *migrate_hook_start_rdmae_channels_json(QTestState *from,
                                                    QTestState *to)
{
    return migrate_hook_start_rdmae_channels(from, to, channels_json);
}

/*
 * As plain, with the address in the QMP channels form on both sides
 * (MigrationAddress of transport rdmae), as libvirt gives it.
 */
static void test_multifd_rdmae_channels(void)
{
    g_autofree char *channels = NULL;
    const char *host;
    int port;
    MigrateCommon args = {
        .start = {
            .opts_source = RDMAE_SECRET_OPTS(RDMAE_KEY_A),
            .opts_target = RDMAE_SECRET_OPTS(RDMAE_KEY_A),
        },
        .listen_uri = "defer",
        .start_hook = migrate_hook_start_rdmae_channels_json,
    };

    if (!rdmae_addr(RDMAE_PORT_CHANNELS, true, &host, &port)) {
        return;
    }
    channels = g_strdup_printf("[ { 'channel-type': 'main',"
                               "    'addr': { 'transport': 'rdmae',"
                               "              'host': '%s',"
                               "              'port': '%d' } } ]",
                               host, port);
    channels_json = channels;
    args.connect_channels = channels;
    test_precopy_common(&args);
    channels_json = NULL;
}

static char *bad_key_uri;

static void *migrate_hook_start_rdmae_bad_key(QTestState *from,
                                              QTestState *to)
{
    return migrate_hook_start_rdmae(from, to, bad_key_uri);
}

/*
 * The destination still listens after refusing the source: a peer with
 * the wrong key must not end an incoming migration that the right
 * source may still come to.
 */
static void migrate_hook_end_rdmae_bad_key(QTestState *from, QTestState *to,
                                           void *opaque)
{
    g_autofree char *status = migrate_query_status(to);

    if (strcmp(status, "setup")) {
        g_test_message("destination status %s, not setup", status);
        g_assert_not_reached();
    }
}

/*
 * Different keys: the authentication fails, the source's migration
 * fails and its guest runs on (the framework checks both).
 */
static void test_multifd_rdmae_bad_key(void)
{
    g_autofree char *uri = rdmae_uri(RDMAE_PORT_BAD_KEY, true);
    MigrateCommon args = {
        .start = {
            .hide_stderr = true,
            .opts_source = RDMAE_SECRET_OPTS(RDMAE_KEY_A),
            .opts_target = RDMAE_SECRET_OPTS(RDMAE_KEY_B),
        },
        .listen_uri = "defer",
        .start_hook = migrate_hook_start_rdmae_bad_key,
        .end_hook = migrate_hook_end_rdmae_bad_key,
        .result = MIG_TEST_FAIL,
    };

    if (!uri) {
        return;
    }
    bad_key_uri = uri;
    args.connect_uri = uri;
    test_precopy_common(&args);
    bad_key_uri = NULL;
}

static void assert_error_names(QDict *err, const char *what)
{
    const char *desc = qdict_get_try_str(err, "desc");

    g_assert(desc);
    if (!strstr(desc, what)) {
        g_test_message("error: %s", desc);
        g_assert_not_reached();
    }
}

/*
 * Without the multifd capability both sides refuse rdmae:, naming it,
 * before anything connects (no RDMA device needed); the source's guest
 * runs on.
 */
static void test_multifd_rdmae_no_multifd(void)
{
    g_autofree char *uri = rdmae_uri(RDMAE_PORT_NO_MULTIFD, false);
    MigrateStart args = {
        .hide_stderr = true,
        .opts_source = RDMAE_SECRET_OPTS(RDMAE_KEY_A),
        .opts_target = RDMAE_SECRET_OPTS(RDMAE_KEY_A),
    };
    QTestState *from, *to;
    QDict *rsp;

    if (migrate_start(&from, &to, "defer", &args)) {
        return;
    }
    /* The key first: without one, the refusal would name the key. */
    rdmae_set_key(from);
    rdmae_set_key(to);

    rsp = qtest_qmp_assert_failure_ref(
        to, "{ 'execute': 'migrate-incoming', 'arguments': { 'uri': %s } }",
        uri);
    assert_error_names(rsp, "multifd");
    qobject_unref(rsp);

    rsp = qtest_qmp_assert_failure_ref(
        from, "{ 'execute': 'migrate', 'arguments': { 'uri': %s } }", uri);
    assert_error_names(rsp, "multifd");
    qobject_unref(rsp);

    rsp = qtest_qmp_assert_success_ref(from,
                                       "{ 'execute': 'query-status' }");
    g_assert(qdict_get_bool(rsp, "running"));
    qobject_unref(rsp);

    migrate_end(from, to, false);
}

void migration_test_add_rdmae(MigrationTestEnv *env)
{
    migration_test_add("/migration/multifd/rdmae/plain",
                       test_multifd_rdmae_plain);
    migration_test_add("/migration/multifd/rdmae/channels",
                       test_multifd_rdmae_channels);
    migration_test_add("/migration/multifd/rdmae/bad-key",
                       test_multifd_rdmae_bad_key);
    migration_test_add("/migration/multifd/rdmae/no-multifd",
                       test_multifd_rdmae_no_multifd);
}
