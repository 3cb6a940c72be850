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
#include "rdmae_dev.h"
#include "session_int.h"

#define MEMLOCK_SLACK		(64 * MIB)

/* ---- registration modes ---- */

uint32_t sess_wire_mode(enum rdmae_reg_mode m)
{
	return m == RDMAE_REG_ODP ? RDMAE_WIRE_REG_ODP :
	       m == RDMAE_REG_ON_DEMAND ? RDMAE_WIRE_REG_ON_DEMAND : RDMAE_WIRE_REG_PIN;
}

enum rdmae_reg_mode sess_mode_of_wire(uint32_t w)
{
	/* The decoder admitted only the three. */
	return w == RDMAE_WIRE_REG_ODP ? RDMAE_REG_ODP :
	       w == RDMAE_WIRE_REG_ON_DEMAND ? RDMAE_REG_ON_DEMAND : RDMAE_REG_PIN_ALL;
}

/* reg=odp where the device has no ODP for RC WRITE: refused before anything is announced or pinned. */
int sess_check_odp(struct rdmae_session *s, struct rdmae_err *err)
{
	const struct rdmae_dev *d = rdmae_conn_dev(s->conn);

	pthread_mutex_lock(&s->lock);
	if (s->role == RDMAE_SOURCE)
		s->st.src_reg_mode = s->mode;
	else
		s->st.dst_reg_mode = s->mode;
	pthread_mutex_unlock(&s->lock);
	if (s->mode != RDMAE_REG_ODP || (d && rdmae_dev_odp_write(d)))
		return 0;
	return rdmae_err_set(err, -EOPNOTSUPP, "preflight: reg=odp on the %s: device %s has no "
			     "on-demand paging for RC WRITE (ibv_query_device_ex odp_caps); use "
			     "reg=pin-all or leave reg unset", s->role == RDMAE_SOURCE ?
			     "source" : "destination", d ? rdmae_dev_name(d) : "(none)");
}

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
	rdmae_msg_blocks_encode(buf, b, (uint32_t)s->nblocks, sess_wire_mode(s->mode),
				sess_wire_flags(s));
	rc = sess_send_msg(s, buf, len, err);
out:
	free(b);
	free(buf);
	return rc;
}

/* ---- registration in pieces ---- */

/* Time in registration, and the piece count; first: the part before the first piece was usable. */
static void account_reg(struct rdmae_session *s, uint64_t t0, bool first)
{
	uint64_t dt = rdmae_now_ns() - t0;

	pthread_mutex_lock(&s->lock);
	s->st.reg_ns += dt;
	s->st.reg_pieces++;
	if (first)
		s->st.reg_first_ns = s->st.reg_ns;
	pthread_mutex_unlock(&s->lock);
}

/*
 * Pipelined rather than on a thread of its own: the caller asks for the
 * piece its cursor is in and the one after, so the next piece is pinned
 * while the NIC still reads the WRITEs just posted (rdmae_write returns
 * once they are posted). Registering from the one engine thread keeps the
 * session's connection used by one thread at a time, as everywhere else
 * in the source, while rdma/'s locking is being reworked.
 */
int sess_src_pin(struct rdmae_session *s, size_t block, size_t upto, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = s->mode, .remote_write = 0 };
	struct sblock *b = &s->blk[block];
	struct rdmae_err e2 = { 0 };

	if (upto >= b->nloc)
		upto = b->nloc - 1;
	while (b->nready <= upto) {
		struct piece *p = &b->loc[b->nready];
		uint64_t t0 = rdmae_now_ns();
		int rc;

		if (atomic_load(&s->stop))
			return sess_stopped_err(s, err);
		rc = rdmae_region_create(&p->region, s->conn, (uint8_t *)b->b.host + p->off, p->len,
					 &ro, &e2);
		if (rc)
			return rdmae_err_set(err, rc, "register: block '%s': piece %zu (bytes %"
					     PRIu64 "+%" PRIu64 "): %s", b->b.name, b->nready,
					     p->off, p->len, e2.msg);
		/* Release: the external path's writers read nready without a lock. */
		__atomic_store_n(&b->nready, b->nready + 1, __ATOMIC_RELEASE);
		account_reg(s, t0, false);
	}
	return 0;
}

int sess_src_pin_at(struct rdmae_session *s, size_t block, size_t li, struct rdmae_err *err)
{
	int rc;

	if (li < __atomic_load_n(&s->blk[block].nready, __ATOMIC_ACQUIRE))
		return 0;
	/*
	 * One writer pins, for all: the others that need the piece wait here.
	 * reg_lock also orders the pinning with a cancel's teardown.
	 */
	pthread_mutex_lock(&s->reg_lock);
	rc = s->reg_stopped ? sess_stopped_err(s, err) : sess_src_pin(s, block, li + 1, err);
	pthread_mutex_unlock(&s->reg_lock);
	return rc;
}

int sess_src_take_descs(struct rdmae_session *s, const struct rdmae_msg *m,
			struct rdmae_err *err)
{
	struct sblock *b = &s->blk[m->u.descs.block];
	struct rdmae_bufdesc *descs;
	struct piece *p;
	uint32_t j;
	int rc = 0;

	descs = calloc(m->u.descs.ndescs, sizeof(*descs));
	if (!descs)
		return rdmae_err_set(err, -ENOMEM, "DESCS: block '%s': out of memory for piece %zu",
				     b->b.name, b->nrem);
	for (j = 0; j < m->u.descs.ndescs; j++)
		rdmae_msg_descs_get(m, j, &descs[j]);
	/* Written under rem_lock: the external path's writers read rem while we grow it. */
	pthread_rwlock_wrlock(&s->rem_lock);
	if (b->nrem == b->rem_cap) {
		size_t cap = b->rem_cap ? 2 * b->rem_cap : 16;
		struct piece *n = realloc(b->rem, cap * sizeof(*n));

		if (!n) {
			rc = rdmae_err_set(err, -ENOMEM, "DESCS: block '%s': out of memory for"
					   " piece %zu", b->b.name, b->nrem);
			goto out;
		}
		b->rem = n;
		b->rem_cap = cap;
	}
	p = &b->rem[b->nrem];
	memset(p, 0, sizeof(*p));
	p->descs = descs;
	descs = NULL;
	p->off = m->u.descs.offset;
	p->len = m->u.descs.len;
	p->remote.descs = p->descs;
	p->remote.ndescs = m->u.descs.ndescs;
	p->remote.len = p->len;
	b->nrem++;
	/* The decoder checked offset == advertised: the pieces stay consecutive. */
	s->advertised[m->u.descs.block] += p->len;
out:
	pthread_rwlock_unlock(&s->rem_lock);
	free(descs);
	return rc;
}

/*
 * Destination: register the next piece, under reg_lock so that a cancel
 * waits for a pin in progress and undoes it, and read its descriptors
 * under it too. 1: *blk and descs filled; 0: nothing left, or stopped
 * registering (the final round is in).
 */
static int dst_register_next(struct rdmae_session *s, size_t *blk, uint64_t *off,
			     struct rdmae_bufdesc *descs, size_t *n, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = s->mode, .remote_write = 1 };
	struct rdmae_err e2 = { 0 };
	struct sblock *b;
	struct piece *p;
	uint64_t t0;
	bool first;
	int rc;

	pthread_mutex_lock(&s->reg_lock);
	/* Under reg_lock: a cancel's teardown resets nready under it. */
	while (s->reg_block < s->nblocks &&
	       s->blk[s->reg_block].nready == s->blk[s->reg_block].nloc)
		s->reg_block++;
	if (atomic_load(&s->stop)) {
		pthread_mutex_unlock(&s->reg_lock);
		return sess_stopped_err(s, err);
	}
	if (s->reg_stopped || s->reg_block == s->nblocks) {
		pthread_mutex_unlock(&s->reg_lock);
		return 0;
	}
	*blk = s->reg_block;
	b = &s->blk[*blk];
	p = &b->loc[b->nready];
	*off = p->off;
	first = !s->st.reg_pieces;
	t0 = rdmae_now_ns();
	rc = rdmae_region_create(&p->region, s->conn, (uint8_t *)b->b.host + p->off, p->len, &ro,
				 &e2);
	if (!rc) {
		b->nready++;
		rc = rdmae_region_bufdescs(p->region, descs, RDMAE_PROTO_MAX_DESCS, n, &e2);
	}
	pthread_mutex_unlock(&s->reg_lock);
	if (rc)
		return rdmae_err_set(err, rc, "register: block '%s': piece at bytes %" PRIu64 "+%"
				     PRIu64 ": %s", b->b.name, p->off, p->len, e2.msg);
	account_reg(s, t0, first);
	return 1;
}

/*
 * DESCS for the piece of block blk at off just registered. Not read from
 * blk[].loc: a cancel may have destroyed the pieces since reg_lock was let
 * go (then the send fails on the aborted connection, or says nothing the
 * revoked QPs would honour).
 */
static int dst_send_descs(struct rdmae_session *s, size_t blk, uint64_t off,
			  const struct rdmae_bufdesc *descs, size_t n, struct rdmae_err *err)
{
	uint8_t msg[RDMAE_PROTO_HDR_SIZE + sizeof(struct rdmae_wire_descs) +
		    RDMAE_PROTO_MAX_DESCS * sizeof(struct rdmae_wire_bufdesc)];

	return sess_send_msg(s, msg, rdmae_msg_descs_encode(msg, (uint32_t)blk, off, descs,
							    (uint32_t)n), err);
}

int sess_dst_advertise(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_bufdesc descs[RDMAE_PROTO_MAX_DESCS];
	size_t blk = 0, n = 0;
	uint64_t off = 0;
	int rc;

	rc = dst_register_next(s, &blk, &off, descs, &n, err);
	if (rc == 1) {
		rc = dst_send_descs(s, blk, off, descs, n, err);
		if (!rc)
			return 1;
	}
	if (rc < 0)
		return atomic_load(&s->state) == ST_FAILED ? rc : sess_fail(s, rc, err);
	return 0;
}

static int src_preflight(struct rdmae_session *s, struct rdmae_err *err)
{
	struct rdmae_msg m;
	size_t i;
	void *buf;
	int rc;

	/*
	 * Announce first: the destination checks and pins its first piece
	 * while we pin ours (and the one after). ON_DEMAND registers nothing
	 * up front: one region per block, pinned as it is written; ODP one
	 * region per block, pinned never.
	 */
	rc = sess_check_odp(s, err);
	if (!rc)
		rc = src_announce(s, err);
	for (i = 0; i < s->nblocks && !rc; i++)
		if (sess_pieces_init(&s->blk[i], s->mode != RDMAE_REG_PIN_ALL))
			rc = rdmae_err_set(err, -ENOMEM, "preflight: block '%s': out of memory"
					   " for its pieces", s->blk[i].b.name);
	if (!rc && s->mode == RDMAE_REG_PIN_ALL)
		rc = sess_src_pin(s, 0, 1, err);
	/*
	 * The rest is pinned as the writers reach it (the rounds' cursor, or
	 * the external path's writers, sess_src_pin_at), one piece ahead, so
	 * that setup does not grow with guest RAM.
	 */
	for (i = 0; i < s->nblocks && !rc && s->mode != RDMAE_REG_PIN_ALL; i++)
		rc = sess_src_pin(s, i, 0, err);
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
		/* A destination of the other data path: refused (it checks too, this is its echo). */
		if (m.u.preflight_ok.flags != sess_wire_flags(s)) {
			rdmae_err_set(err, -EPROTO, "preflight: the destination's data path is %s, "
				      "this source's %s; both sides must use the same",
				      sess_data_path_name(m.u.preflight_ok.flags),
				      sess_data_path_name(sess_wire_flags(s)));
			rc = sess_fail(s, -EPROTO, err);
			break;
		}
		/* From here on (not before) DESCS are taken, each where the last ended. */
		s->ctx.advertised = s->advertised;
		pthread_mutex_lock(&s->lock);
		s->st.dst_reg_mode = sess_mode_of_wire(m.u.preflight_ok.reg_mode);
		pthread_mutex_unlock(&s->lock);
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

	if (m->u.blocks.flags != sess_wire_flags(s))
		return pf_fail(pe, -EPROTO, RDMAE_PROTO_NO_BLOCK,
			       "preflight: the source's data path is %s, this destination's %s; "
			       "both sides must use the same",
			       sess_data_path_name(m->u.blocks.flags),
			       sess_data_path_name(sess_wire_flags(s)));
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
	pthread_mutex_lock(&s->lock);
	s->st.src_reg_mode = sess_mode_of_wire(m->u.blocks.reg_mode);
	pthread_mutex_unlock(&s->lock);
out:
	free(used);
	free(sorted);
	return rc;
}

static int dst_check_host(struct rdmae_session *s, struct pf_err *pe)
{
	char why[RDMAE_PROTO_REASON_LEN];
	struct rdmae_err e2 = { 0 };
	size_t i;
	int rc;

	rc = sess_check_odp(s, &e2);
	if (rc)
		return pf_fail(pe, rc, RDMAE_PROTO_NO_BLOCK, "%s", e2.msg);
	/* ODP pins nothing: the memlock limit does not apply. */
	rc = s->mode == RDMAE_REG_PIN_ALL ?
	     rdmae_check_memlock(s->total_bytes + MEMLOCK_SLACK, why, sizeof(why)) : 0;
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

/*
 * The blocks fit: register the first piece (a failure here still goes back
 * as PREFLIGHT_ERR), say PREFLIGHT_OK, then advertise that piece. The
 * rest follows piece by piece from rdmae_session_dest_step (dest.c).
 */
static int dst_answer(struct rdmae_session *s, struct pf_err *pe, struct rdmae_err *err)
{
	uint8_t small[RDMAE_MSG_SMALL_MAX];
	struct rdmae_bufdesc descs[RDMAE_PROTO_MAX_DESCS];
	struct rdmae_err e2 = { 0 };
	size_t i, blk = 0, n = 0;
	uint64_t off = 0;
	int rc;

	/* ODP registration costs next to nothing: one piece per block. */
	for (i = 0; i < s->nblocks; i++)
		if (sess_pieces_init(&s->blk[i], s->mode == RDMAE_REG_ODP))
			return pf_fail(pe, -ENOMEM, (uint32_t)i,
				       "preflight: block '%s': out of memory for its pieces",
				       s->blk[i].b.name);
	rc = dst_register_next(s, &blk, &off, descs, &n, &e2);
	if (rc <= 0) {
		if (!rc)
			rdmae_err_set(&e2, -ECANCELED, "cancelled");
		return pf_fail(pe, rc ? rc : -ECANCELED, (uint32_t)blk, "preflight: %s", e2.msg);
	}
	rc = sess_send_msg(s, small, rdmae_msg_preflight_ok_encode(small, (uint32_t)s->nblocks,
								   sess_wire_mode(s->mode),
								   sess_wire_flags(s)), err);
	if (!rc)
		rc = dst_send_descs(s, blk, off, descs, n, err);
	return rc ? sess_fail(s, rc, err) : 0;
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
