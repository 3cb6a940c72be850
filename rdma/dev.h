/* SPDX-License-Identifier: MIT */
/*
 * dev.c's internals (L1): the device object behind rdmae_dev.h. Not installed.
 *
 * A device is the ibv_context rdma_cm gives for a local address, with one
 * PD and what was read of the device once (attributes, ODP, NUMA node). It
 * is reference counted: its opener holds one reference, and every
 * connection and prepared region that uses its PD holds one more, so the PD
 * outlives whatever registered memory or created QPs on it. The count is
 * atomic; nothing else of the device changes after it is made.
 */
#ifndef RDMAE_DEV_INT_H
#define RDMAE_DEV_INT_H

#include <stdatomic.h>
#include <stdbool.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "rdmae_dev.h"

struct rdmae_dev {
	atomic_uint refs;
	struct ibv_context *verbs;
	struct ibv_pd *pd;
	struct ibv_device_attr attr;
	bool odp_write;			/* device can do RC WRITE on ODP memory */
	int numa_node;			/* -1: unknown (soft devices) */
	struct rdma_cm_id *id;		/* rdmae_dev_open's bound id: holds the device open */
	bool pd_borrowed;		/* rdmae_dev_wrap_pd: the PD is not the device's to free */
	char name[64];
};

/*
 * A device for verbs (a connection's own, made when no rdmae_dev was given):
 * attributes read, a PD allocated. One reference, the caller's.
 */
int rdmae_dev_from_verbs(struct rdmae_dev **out, struct ibv_context *verbs,
			 struct rdmae_err *err);
/*
 * A device record over a PD someone else owns and frees (a connection
 * assembled by hand, without rdmae_conn_setup_device: the callgrind bench's
 * stub), so regions can be made on it like on any other.
 */
int rdmae_dev_wrap_pd(struct rdmae_dev **out, struct ibv_pd *pd, struct rdmae_err *err);
struct rdmae_dev *rdmae_dev_get(struct rdmae_dev *d);
/* Drop a reference; the last one deallocates the PD and frees the device. */
void rdmae_dev_put(struct rdmae_dev *d);

#endif
