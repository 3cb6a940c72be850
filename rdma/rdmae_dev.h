/* SPDX-License-Identifier: MIT */
/*
 * An RDMA device with a protection domain, opened by local address and
 * usable before any connection exists: memory can be prepared on it
 * (rdmae_region_prepare) while no peer is there yet, and connections given
 * it in rdmae_conn_opts.dev use its PD, so that memory becomes usable on
 * them once they are up and authenticated (rdmae_region_attach).
 *
 * librdmacm shares one device context per device across the process, so a
 * connection made through rdma_cm on the same local address lands on this
 * device; a connection that lands elsewhere is refused, naming both.
 *
 * Lifetime: rdmae_dev_close drops the opener's reference. Connections and
 * prepared regions made on the device hold their own, so closing it while
 * they live is safe: the PD goes with the last of them.
 */
#ifndef RDMAE_DEV_H
#define RDMAE_DEV_H

#include <stdbool.h>

#include "rdmae_err.h"

struct rdmae_dev;

/*
 * The device serving bind_addr (a local IP address or host name; a wildcard
 * address names no device and is refused), with a PD of its own.
 */
int rdmae_dev_open(struct rdmae_dev **out, const char *bind_addr, struct rdmae_err *err);
void rdmae_dev_close(struct rdmae_dev *d);
/* The verbs device name ("rxe0", "mlx5_0"). */
const char *rdmae_dev_name(const struct rdmae_dev *d);
/*
 * Does the device serve RC WRITE from on-demand-paged memory
 * (ibv_query_device_ex: IBV_ODP_SUPPORT, and IBV_ODP_SUPPORT_WRITE in the
 * RC caps)? Then RDMAE_REG_ODP regions can be registered on it.
 */
bool rdmae_dev_odp_write(const struct rdmae_dev *d);

#endif
