/* SPDX-License-Identifier: MIT */
/*
 * L1: a device and its PD, opened by local address with no connection
 * (rdmae_dev.h), or made for a connection's own use from the context its
 * lane 0 landed on. What is read of the device (attributes, ODP, NUMA
 * node) is read here once, for both.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev.h"
#include "mem.h"

int rdmae_dev_from_verbs(struct rdmae_dev **out, struct ibv_context *verbs,
			 struct rdmae_err *err)
{
	struct ibv_device_attr_ex ax;
	struct rdmae_dev *d;
	int ret;

	*out = NULL;
	d = calloc(1, sizeof(*d));
	if (!d) {
		rdmae_err_set(err, -ENOMEM, "device: out of memory");
		return -ENOMEM;
	}
	atomic_init(&d->refs, 1);
	d->verbs = verbs;
	snprintf(d->name, sizeof(d->name), "%s", ibv_get_device_name(verbs->device));
	memset(&ax, 0, sizeof(ax));
	if (ibv_query_device_ex(verbs, NULL, &ax)) {
		ret = rdmae_err_set(err, -errno, "ibv_query_device on %s: %s", d->name,
				    strerror(errno));
		goto err_free;
	}
	d->attr = ax.orig_attr;
	d->odp_write = (ax.odp_caps.general_caps & IBV_ODP_SUPPORT) &&
		       (ax.odp_caps.per_transport_caps.rc_odp_caps & IBV_ODP_SUPPORT_WRITE);
	d->numa_node = rdmae_device_numa_node(verbs);
	d->pd = ibv_alloc_pd(verbs);
	if (!d->pd) {
		ret = rdmae_err_set(err, -errno, "ibv_alloc_pd on %s: %s", d->name, strerror(errno));
		goto err_free;
	}
	*out = d;
	return 0;

err_free:
	free(d);
	return ret;
}

int rdmae_dev_open(struct rdmae_dev **out, const char *bind_addr, struct rdmae_err *err)
{
	struct addrinfo hints, *ai = NULL;
	struct rdma_cm_id *id = NULL;
	int ret;

	*out = NULL;
	if (!bind_addr || !*bind_addr)
		return rdmae_err_set(err, -EINVAL, "open device: no local address given");
	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_PASSIVE;
	hints.ai_socktype = SOCK_STREAM;
	ret = getaddrinfo(bind_addr, NULL, &hints, &ai);
	if (ret)
		return rdmae_err_set(err, -EADDRNOTAVAIL, "open device for %s: %s", bind_addr,
				     gai_strerror(ret));
	/* A bound cm_id names the device that serves the address, as a listener's would. */
	if (rdma_create_id(NULL, &id, NULL, RDMA_PS_TCP)) {
		ret = rdmae_err_set(err, -errno, "open device for %s: rdma_create_id: %s",
				    bind_addr, strerror(errno));
		goto err_ai;
	}
	if (rdma_bind_addr(id, ai->ai_addr)) {
		ret = rdmae_err_set(err, -errno, "open device for %s: rdma_bind_addr: %s",
				    bind_addr, strerror(errno));
		goto err_id;
	}
	if (!id->verbs) {
		ret = rdmae_err_set(err, -ENODEV, "open device for %s: the address is on no RDMA "
				    "device (a wildcard address names none)", bind_addr);
		goto err_id;
	}
	ret = rdmae_dev_from_verbs(out, id->verbs, err);
	if (ret)
		goto err_id;
	/* Kept for the device's life: it holds librdmacm's reference on the context. */
	(*out)->id = id;
	freeaddrinfo(ai);
	return 0;

err_id:
	rdma_destroy_id(id);
err_ai:
	freeaddrinfo(ai);
	return ret;
}

int rdmae_dev_wrap_pd(struct rdmae_dev **out, struct ibv_pd *pd, struct rdmae_err *err)
{
	struct rdmae_dev *d = calloc(1, sizeof(*d));

	*out = NULL;
	if (!d) {
		rdmae_err_set(err, -ENOMEM, "device: out of memory");
		return -ENOMEM;
	}
	atomic_init(&d->refs, 1);
	d->verbs = pd->context;
	d->pd = pd;
	d->pd_borrowed = true;
	d->numa_node = -1;
	snprintf(d->name, sizeof(d->name), "%s", d->verbs && d->verbs->device ?
		 ibv_get_device_name(d->verbs->device) : "?");
	*out = d;
	return 0;
}

struct rdmae_dev *rdmae_dev_get(struct rdmae_dev *d)
{
	atomic_fetch_add(&d->refs, 1);
	return d;
}

void rdmae_dev_put(struct rdmae_dev *d)
{
	if (!d || atomic_fetch_sub(&d->refs, 1) != 1)
		return;
	if (!d->pd_borrowed) {
		int ret = ibv_dealloc_pd(d->pd);

		/* Something still uses the PD (an MR or QP leaked): say which device. */
		if (ret)
			fprintf(stderr, "rdmae: ibv_dealloc_pd on %s: %s\n", d->name,
				strerror(ret));
	}
	if (d->id)
		rdma_destroy_id(d->id);
	free(d);
}

void rdmae_dev_close(struct rdmae_dev *d)
{
	rdmae_dev_put(d);
}

const char *rdmae_dev_name(const struct rdmae_dev *d)
{
	return d->name;
}

bool rdmae_dev_odp_write(const struct rdmae_dev *d)
{
	return d->odp_write;
}
