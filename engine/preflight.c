/* SPDX-License-Identifier: MIT */
/*
 * Pre-flight, both sides: the source announces its blocks and registers
 * them while the destination matches them by name, checks the host and
 * pins; the destination answers with its buffer descriptors, or with the
 * reason it cannot take the migration.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostcheck.h"
#include "proto.h"
#include "session_int.h"

#define MEMLOCK_SLACK		(64 * MIB)

/* ---- pre-flight, source ---- */

static int src_announce(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_msg_block *b;
	size_t len, i;
	void *buf;
	int rc;

	len = rdmae_msg_blocks_size((uint32_t)s->nblocks);
	buf = malloc(len);
	b = calloc(s->nblocks, sizeof(*b));
	if (!buf || !b) {
		rc = rdmae_err_set(err, -ENOMEM, "preflight: out of memory for BLOCKS");
		goto out;
	}
	for (i = 0; i < s->nblocks; i++) {
		snprintf(b[i].name, sizeof(b[i].name), "%s", s->blk[i].b.name);
		b[i].len = s->blk[i].b.len;
		b[i].page_size = (uint32_t)s->blk[i].b.page_size;
		b[i].flags = s->blk[i].b.hugepages ? RDMAE_BLOCK_HUGEPAGES : 0;
	}
	rdmae_msg_blocks_encode(buf, b, (uint32_t)s->nblocks);
	rc = sess_send_msg(s, buf, len, err);
out:
	free(b);
	free(buf);
	return rc;
}

static int src_register(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = s->o.reg_mode, .remote_write = 0 };
	struct rdmae_err e2 = { 0 };
	size_t i;

	for (i = 0; i < s->nblocks; i++) {
		struct sblock *b = &s->blk[i];
		int rc = rdmae_region_create(&b->region, s->conn, b->b.host, b->b.len, &ro, &e2);

		if (rc)
			return rdmae_err_set(err, rc, "preflight: block '%s': register: %s",
					     b->b.name, e2.msg);
	}
	return 0;
}

static int src_take_descs(struct rdmae_session *s, const struct rdmae_msg *m,
			  struct rdmae_err *err)
{
	size_t i;

	for (i = 0; i < s->nblocks; i++) {
		struct sblock *b = &s->blk[i];
		uint32_t first, n, j;

		rdmae_msg_preflight_ok_span(m, (uint32_t)i, &first, &n);
		b->descs = calloc(n, sizeof(*b->descs));
		if (!b->descs)
			return rdmae_err_set(err, -ENOMEM,
					     "preflight: out of memory for descriptors");
		for (j = 0; j < n; j++)
			rdmae_msg_preflight_ok_desc(m, first + j, &b->descs[j]);
		b->remote.descs = b->descs;
		b->remote.ndescs = n;
		b->remote.len = b->b.len;
	}
	return 0;
}

static int src_preflight(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_msg m;
	void *buf;
	int rc;

	/* Announce first: the destination checks and pins while we register. */
	rc = src_announce(s, err);
	if (rc)
		return sess_fail(s, rc, err);
	rc = src_register(s, err);
	if (rc)
		return sess_fail(s, rc, err);

	rc = sess_recv_msg(s, s->slow_timeout_ms, &buf, &m, err);
	if (rc) {
		if (atomic_load(&s->state) == ST_FAILED)
			return rc;
		return sess_fail(s, rc, err);
	}
	switch (m.type) {
	case RDMAE_MSG_PREFLIGHT_OK:
		rc = src_take_descs(s, &m, err);
		if (rc)
			rc = sess_fail(s, rc, err);
		break;
	case RDMAE_MSG_PREFLIGHT_ERR:
		/* The destination's text as it is: both sides report the same. */
		rc = rdmae_err_set(err, m.u.preflight_err.error, "%s", m.u.preflight_err.reason);
		sess_set_failed(s, rc, err);
		break;
	case RDMAE_MSG_CANCEL:
		rc = sess_peer_cancelled(s, &m, err);
		break;
	default:
		rc = sess_unexpected(s, &m, "PREFLIGHT_OK", err);
		break;
	}
	free(buf);
	return rc;
}

/* ---- pre-flight, destination ---- */

struct pf_err {
	uint32_t block;
	char reason[RDMAE_PROTO_REASON_LEN];
};

static int pf_fail(struct pf_err *pe, int code, uint32_t block, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int pf_fail(struct pf_err *pe, int code, uint32_t block, const char *fmt, ...)
{
	va_list ap;

	pe->block = block;
	va_start(ap, fmt);
	vsnprintf(pe->reason, sizeof(pe->reason), fmt, ap);
	va_end(ap);
	return code;
}

/* Match the announced blocks to ours by name and put ours in the source's order. */
static int dst_match(struct rdmae_session *s, const struct rdmae_msg *m, struct pf_err *pe)
{
	struct sblock *sorted;
	bool *used;
	uint32_t i;
	size_t j;
	int rc = 0;

	if (m->u.blocks.count != s->nblocks)
		return pf_fail(pe, -EINVAL, RDMAE_PROTO_NO_BLOCK,
			       "preflight: %zu blocks here, %" PRIu32 " at the source", s->nblocks,
			       m->u.blocks.count);
	sorted = calloc(s->nblocks, sizeof(*sorted));
	used = calloc(s->nblocks, sizeof(*used));
	if (!sorted || !used) {
		rc = pf_fail(pe, -ENOMEM, RDMAE_PROTO_NO_BLOCK, "preflight: out of memory");
		goto out;
	}
	for (i = 0; i < m->u.blocks.count; i++) {
		struct rdmae_msg_block b;
		struct sblock *mine = NULL;

		rdmae_msg_blocks_get(m, i, &b);
		for (j = 0; j < s->nblocks; j++) {
			if (!strcmp(s->blk[j].b.name, b.name)) {
				mine = &s->blk[j];
				break;
			}
		}
		if (!mine) {
			rc = pf_fail(pe, -ENOENT, i,
				     "preflight: block '%s' of the source does not exist here",
				     b.name);
			goto out;
		}
		if (used[j]) {
			rc = pf_fail(pe, -EINVAL, i, "preflight: block '%s' announced twice",
				     b.name);
			goto out;
		}
		if (mine->b.len != b.len) {
			rc = pf_fail(pe, -EINVAL, i,
				     "preflight: block '%s': size %zu here, %" PRIu64
				     " at the source", b.name, mine->b.len, b.len);
			goto out;
		}
		if (mine->b.page_size != b.page_size) {
			rc = pf_fail(pe, -EINVAL, i,
				     "preflight: block '%s': page size %zu here, %" PRIu32
				     " at the source", b.name, mine->b.page_size, b.page_size);
			goto out;
		}
		used[j] = true;
		sorted[i] = *mine;
		if (b.flags & RDMAE_BLOCK_HUGEPAGES)
			sorted[i].b.hugepages = true;
	}
	memcpy(s->blk, sorted, s->nblocks * sizeof(*sorted));
	sess_set_ctx(s);
out:
	free(used);
	free(sorted);
	return rc;
}

static int dst_check_host(struct rdmae_session *s, struct pf_err *pe)
{
	char why[RDMAE_PROTO_REASON_LEN];
	size_t i;
	int rc;

	rc = rdmae_check_memlock(s->total_bytes + MEMLOCK_SLACK, why, sizeof(why));
	if (rc)
		return pf_fail(pe, rc, RDMAE_PROTO_NO_BLOCK, "preflight: %s", why);
	for (i = 0; i < s->nblocks; i++) {
		if (!s->blk[i].b.hugepages)
			continue;
		rc = rdmae_check_hugepages(s->blk[i].b.host, s->blk[i].b.len, why, sizeof(why));
		if (rc)
			return pf_fail(pe, rc, (uint32_t)i, "preflight: block '%s': %s",
				       s->blk[i].b.name, why);
	}
	return 0;
}

static int dst_register(struct rdmae_session *s, struct pf_err *pe)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL, .remote_write = 1 };
	struct rdmae_err e2 = { 0 };
	size_t i;
	int rc = 0;

	for (i = 0; i < s->nblocks && !rc; i++) {
		struct sblock *b = &s->blk[i];

		/* Under reg_lock, so that a cancel waits for a pin in progress and undoes it. */
		pthread_mutex_lock(&s->reg_lock);
		if (atomic_load(&s->stop))
			rc = -ECANCELED;
		else
			rc = rdmae_region_create(&b->region, s->conn, b->b.host, b->b.len, &ro,
						 &e2);
		pthread_mutex_unlock(&s->reg_lock);
		if (rc)
			pf_fail(pe, rc, (uint32_t)i, "preflight: block '%s': register: %s",
				b->b.name, rc == -ECANCELED ? "cancelled" : e2.msg);
	}
	return rc;
}

static int dst_answer(struct rdmae_session *s, struct pf_err *pe, struct rdmae_err *err)
{
	struct rdmae_bufdesc *descs = NULL;
	uint32_t *counts = NULL;
	struct rdmae_err e2 = { 0 };
	size_t total = 0, at = 0, i, len;
	void *buf = NULL;
	int rc;

	for (i = 0; i < s->nblocks; i++)
		total += (s->blk[i].b.len + RDMAE_DESC_SPAN - 1) / RDMAE_DESC_SPAN;
	/* create() refuses empty block lists and blocks; this keeps the analyzer informed. */
	if (!s->nblocks || !total)
		return pf_fail(pe, -EINVAL, RDMAE_PROTO_NO_BLOCK, "preflight: no memory to offer");
	counts = calloc(s->nblocks, sizeof(*counts));
	descs = calloc(total, sizeof(*descs));
	len = rdmae_msg_preflight_ok_size((uint32_t)s->nblocks, (uint32_t)total);
	if (len > s->max_msg) {
		rc = pf_fail(pe, -EMSGSIZE, RDMAE_PROTO_NO_BLOCK,
			     "preflight: %zu descriptors do not fit one message", total);
		goto out;
	}
	buf = malloc(len);
	if (!counts || !descs || !buf) {
		rc = pf_fail(pe, -ENOMEM, RDMAE_PROTO_NO_BLOCK, "preflight: out of memory");
		goto out;
	}
	/* A cancel destroys the regions under reg_lock: read them under it too. */
	rc = 0;
	pthread_mutex_lock(&s->reg_lock);
	for (i = 0; i < s->nblocks && !rc; i++) {
		size_t want = (s->blk[i].b.len + RDMAE_DESC_SPAN - 1) / RDMAE_DESC_SPAN, n = 0;

		if (atomic_load(&s->stop) || !s->blk[i].region) {
			rc = pf_fail(pe, -ECANCELED, (uint32_t)i, "preflight: cancelled");
			break;
		}
		rc = rdmae_region_bufdescs(s->blk[i].region, descs + at, want, &n, &e2);
		if (!rc && n != want)
			rc = rdmae_err_set(&e2, -EPROTO, "%zu descriptors, expected %zu", n, want);
		if (rc) {
			pf_fail(pe, rc, (uint32_t)i, "preflight: block '%s': descriptors: %s",
				s->blk[i].b.name, e2.msg);
			break;
		}
		counts[i] = (uint32_t)n;
		at += n;
	}
	pthread_mutex_unlock(&s->reg_lock);
	if (rc)
		goto out;
	rdmae_msg_preflight_ok_encode(buf, (uint32_t)s->nblocks, counts, descs);
	rc = sess_send_msg(s, buf, len, err);
	if (rc)
		rc = sess_fail(s, rc, err);
out:
	free(buf);
	free(descs);
	free(counts);
	return rc;
}

static int dst_preflight(struct rdmae_session *s, struct rdmae_err *err)
{
	uint8_t small[RDMAE_MSG_SMALL_MAX];
	struct pf_err pe = { .block = RDMAE_PROTO_NO_BLOCK };
	struct rdmae_msg m;
	void *buf;
	int rc;

	rc = sess_recv_msg(s, s->o.timeout_ms, &buf, &m, err);
	if (rc) {
		if (atomic_load(&s->state) == ST_FAILED)
			return rc;
		return sess_fail(s, rc, err);
	}
	if (m.type == RDMAE_MSG_CANCEL) {
		rc = sess_peer_cancelled(s, &m, err);
		free(buf);
		return rc;
	}
	if (m.type != RDMAE_MSG_BLOCKS) {
		rc = sess_unexpected(s, &m, "BLOCKS", err);
		free(buf);
		return rc;
	}
	rc = dst_match(s, &m, &pe);
	free(buf);
	if (!rc)
		rc = dst_check_host(s, &pe);
	if (!rc)
		rc = dst_register(s, &pe);
	if (!rc)
		rc = dst_answer(s, &pe, err);
	if (!rc || atomic_load(&s->state) == ST_FAILED)
		return rc;
	if (atomic_load(&s->stop)) {
		rc = sess_stopped_err(s, err);
		sess_set_failed(s, rc, err);
		return rc;
	}

	/*
	 * The check failed: tell the source in the same words we return, and
	 * leave the connection up so that the answer is not lost in a teardown.
	 */
	sess_destroy_regions(s);
	rdmae_err_set(err, rc, "%s", pe.reason);
	sess_set_failed(s, rc, err);
	sess_send_msg(s, small, rdmae_msg_preflight_err_encode(small, rc, pe.block, pe.reason),
		      NULL);
	return rc;
}

int rdmae_session_preflight(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_err le = { 0 };
	struct rdmae_err *e = err ? err : &le;
	uint64_t t0 = rdmae_now_ns();
	int rc;

	if (!s)
		return rdmae_err_set(err, -EINVAL, "preflight: no session");
	rdmae_err_clear(e);
	rc = sess_enter(s, s->role, ST_NEW, "preflight", e);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	s->start_ns = t0;
	pthread_mutex_unlock(&s->lock);
	rc = s->role == RDMAE_SOURCE ? src_preflight(s, e) : dst_preflight(s, e);
	if (!rc) {
		pthread_mutex_lock(&s->lock);
		s->st.setup_ns = rdmae_now_ns() - t0;
		pthread_mutex_unlock(&s->lock);
		atomic_store(&s->state, ST_READY);
	}
	sess_leave(s);
	return rc;
}
