/* SPDX-License-Identifier: MIT */
/*
 * Revoking the peer's remote write access without deregistering: the
 * destination does it before its final verification, so that no late or
 * stray WRITE can change memory after it was checked. Deregistration would
 * unpin, which for a large guest takes hundreds of milliseconds and would
 * land inside the downtime; clearing the QPs' access flags is one modify
 * per lane.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

int rdmae_conn_revoke_remote_write(struct rdmae_conn *c, struct rdmae_err *err)
{
	unsigned int i;
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	for (i = 0; i < c->nlanes && !ret; i++) {
		struct ibv_qp_init_attr init;
		struct ibv_qp_attr attr;
		struct ibv_qp *qp = c->lanes[i].qp;
		int r;

		if (!qp)
			continue;
		memset(&attr, 0, sizeof(attr));
		attr.qp_access_flags = 0;
		r = ibv_modify_qp(qp, &attr, IBV_QP_ACCESS_FLAGS);
		if (!r)
			continue;
		/* A QP in the error state (the connection failed) accepts no WRITE either. */
		memset(&attr, 0, sizeof(attr));
		if (!ibv_query_qp(qp, &attr, IBV_QP_STATE, &init) && attr.qp_state == IBV_QPS_ERR)
			continue;
		ret = rdmae_err_set(err, r > 0 ? -r : -EIO,
				    "revoke remote write on lane %u to %s: %s", i, c->peer,
				    strerror(r > 0 ? r : EIO));
	}
	if (!ret)
		rdmae_trace(c, "remote write revoked on %u lanes", c->nlanes);
	pthread_mutex_unlock(&c->lock);
	return ret;
}
