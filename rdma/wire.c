/* SPDX-License-Identifier: MIT */
/*
 * Wire encoding and the negotiation rules. Every struct goes through a local
 * wire-layout copy made with memcpy: receive buffers carry no alignment
 * guarantee, and the explicit htole/letoh calls keep the format fixed on any
 * host.
 */
#include "rdmae_wire.h"

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

/* Largest errno the kernel ever returns; anything below -4095 is not one. */
#define RDMAE_MAX_ERRNO 4095

static const char *const field_names[RDMAE_F_COUNT] = {
	[RDMAE_F_NONE] = "none",
	[RDMAE_F_LENGTH] = "length",
	[RDMAE_F_MAGIC] = "magic",
	[RDMAE_F_VERSION] = "version",
	[RDMAE_F_CREDITS_REQUESTED] = "credits_requested",
	[RDMAE_F_CREDITS_GRANTED] = "credits_granted",
	[RDMAE_F_LANES] = "lanes",
	[RDMAE_F_PREFERRED_SEND_SIZE] = "preferred_send_size",
	[RDMAE_F_MAX_RECEIVE_SIZE] = "max_receive_size",
	[RDMAE_F_MAX_FRAGMENTED_SIZE] = "max_fragmented_size",
	[RDMAE_F_MAX_RW_SIZE] = "max_rw_size",
	[RDMAE_F_STATUS] = "status",
	[RDMAE_F_FLAGS] = "flags",
	[RDMAE_F_DATA_OFFSET] = "data_offset",
	[RDMAE_F_DATA_LENGTH] = "data_length",
	[RDMAE_F_REMAINING_DATA_LENGTH] = "remaining_data_length",
	[RDMAE_F_RESERVED] = "reserved",
	[RDMAE_F_AUTH] = "auth",
};

const char *rdmae_wire_field_name(enum rdmae_wire_field f)
{
	/* f may come straight off the wire (status_field), so never trust its range. */
	if ((unsigned int)f >= RDMAE_F_COUNT || !field_names[f])
		return "unknown";
	return field_names[f];
}

static int reject(enum rdmae_wire_field *field, enum rdmae_wire_field f, int code)
{
	*field = f;
	return code;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static uint16_t min_u16(uint16_t a, uint16_t b)
{
	return a < b ? a : b;
}

static uint16_t max_u16(uint16_t a, uint16_t b)
{
	return a > b ? a : b;
}

/* ---- negotiate request ---- */

void rdmae_neg_req_encode(void *buf, const struct rdmae_neg_req *m)
{
	struct rdmae_wire_neg_req w;

	memset(&w, 0, sizeof(w));
	w.magic = htole32(RDMAE_MAGIC);
	w.min_version = htole16(m->min_version);
	w.max_version = htole16(m->max_version);
	w.credits_requested = htole16(m->credits_requested);
	w.credits_granted = htole16(m->credits_granted);
	w.lanes = htole16(m->lanes);
	w.auth = htole16(m->auth);
	w.preferred_send_size = htole32(m->preferred_send_size);
	w.max_receive_size = htole32(m->max_receive_size);
	w.max_fragmented_size = htole32(m->max_fragmented_size);
	w.max_rw_size = htole32(m->max_rw_size);
	memcpy(w.nonce, m->nonce, sizeof(w.nonce));
	memcpy(w.proof, m->proof, sizeof(w.proof));
	memcpy(buf, &w, sizeof(w));
}

static bool known_auth(uint16_t a)
{
	return a == RDMAE_WIRE_AUTH_NONE || a == RDMAE_WIRE_AUTH_HMAC_SHA256;
}

int rdmae_neg_req_decode(const void *buf, size_t len, struct rdmae_neg_req *m,
			 enum rdmae_wire_field *field)
{
	struct rdmae_wire_neg_req w;

	*field = RDMAE_F_NONE;
	/*
	 * A version-1 request is 32 bytes: say "version", not "length", to a
	 * peer that speaks nothing newer. Longer is accepted: a later version
	 * may append fields.
	 */
	if (len >= RDMAE_NEG_REQ_V1_SIZE && len < sizeof(w)) {
		memcpy(&w, buf, RDMAE_NEG_REQ_V1_SIZE);
		if (le32toh(w.magic) == RDMAE_MAGIC && le16toh(w.max_version) < RDMAE_VERSION_2)
			return reject(field, RDMAE_F_VERSION, -EPROTONOSUPPORT);
	}
	if (len < sizeof(w))
		return reject(field, RDMAE_F_LENGTH, -EBADMSG);
	memcpy(&w, buf, sizeof(w));
	if (le32toh(w.magic) != RDMAE_MAGIC)
		return reject(field, RDMAE_F_MAGIC, -EBADMSG);
	if (!known_auth(le16toh(w.auth)))
		return reject(field, RDMAE_F_AUTH, -EPROTO);
	m->auth = le16toh(w.auth);
	memcpy(m->nonce, w.nonce, sizeof(m->nonce));
	memcpy(m->proof, w.proof, sizeof(m->proof));
	m->min_version = le16toh(w.min_version);
	m->max_version = le16toh(w.max_version);
	m->credits_requested = le16toh(w.credits_requested);
	m->credits_granted = le16toh(w.credits_granted);
	m->lanes = le16toh(w.lanes);
	m->preferred_send_size = le32toh(w.preferred_send_size);
	m->max_receive_size = le32toh(w.max_receive_size);
	m->max_fragmented_size = le32toh(w.max_fragmented_size);
	m->max_rw_size = le32toh(w.max_rw_size);
	return 0;
}

/* ---- negotiate response ---- */

void rdmae_neg_resp_encode(void *buf, const struct rdmae_neg_resp *m)
{
	struct rdmae_wire_neg_resp w;

	memset(&w, 0, sizeof(w));
	w.magic = htole32(RDMAE_MAGIC);
	w.min_version = htole16(m->min_version);
	w.max_version = htole16(m->max_version);
	w.negotiated_version = htole16(m->negotiated_version);
	w.credits_requested = htole16(m->credits_requested);
	w.credits_granted = htole16(m->credits_granted);
	w.lanes = htole16(m->lanes);
	w.status = (int32_t)htole32((uint32_t)m->status);
	w.status_field = htole32(m->status_field);
	w.max_rw_size = htole32(m->max_rw_size);
	w.preferred_send_size = htole32(m->preferred_send_size);
	w.max_receive_size = htole32(m->max_receive_size);
	w.max_fragmented_size = htole32(m->max_fragmented_size);
	w.auth = htole16(m->auth);
	memcpy(w.proof, m->proof, sizeof(w.proof));
	memcpy(buf, &w, sizeof(w));
}

int rdmae_neg_resp_decode(const void *buf, size_t len, struct rdmae_neg_resp *m,
			  enum rdmae_wire_field *field)
{
	struct rdmae_wire_neg_resp w;

	*field = RDMAE_F_NONE;
	memset(m, 0, sizeof(*m));
	/*
	 * A refusal from a version-1 server is 48 bytes; its status still
	 * tells why (its version range), so it is decoded as far as it goes.
	 */
	if (len >= RDMAE_NEG_RESP_V1_SIZE && len < sizeof(w)) {
		memset(&w, 0, sizeof(w));
		memcpy(&w, buf, RDMAE_NEG_RESP_V1_SIZE);
		if (le32toh(w.magic) == RDMAE_MAGIC && w.status != 0) {
			m->min_version = le16toh(w.min_version);
			m->max_version = le16toh(w.max_version);
			m->status = (int32_t)le32toh((uint32_t)w.status);
			m->status_field = le32toh(w.status_field);
			return 0;
		}
	}
	if (len < sizeof(w))
		return reject(field, RDMAE_F_LENGTH, -EBADMSG);
	memcpy(&w, buf, sizeof(w));
	if (le32toh(w.magic) != RDMAE_MAGIC)
		return reject(field, RDMAE_F_MAGIC, -EBADMSG);
	if (w.reserved != 0 || w.reserved2 != 0)
		return reject(field, RDMAE_F_RESERVED, -EPROTO);
	if (!known_auth(le16toh(w.auth)))
		return reject(field, RDMAE_F_AUTH, -EPROTO);
	m->auth = le16toh(w.auth);
	memcpy(m->proof, w.proof, sizeof(m->proof));
	m->min_version = le16toh(w.min_version);
	m->max_version = le16toh(w.max_version);
	m->negotiated_version = le16toh(w.negotiated_version);
	m->credits_requested = le16toh(w.credits_requested);
	m->credits_granted = le16toh(w.credits_granted);
	m->lanes = le16toh(w.lanes);
	m->status = (int32_t)le32toh((uint32_t)w.status);
	m->status_field = le32toh(w.status_field);
	m->max_rw_size = le32toh(w.max_rw_size);
	m->preferred_send_size = le32toh(w.preferred_send_size);
	m->max_receive_size = le32toh(w.max_receive_size);
	m->max_fragmented_size = le32toh(w.max_fragmented_size);
	return 0;
}

/* ---- accept private data (lane 0) ---- */

void rdmae_accept_pd_encode(void *buf, const struct rdmae_accept_pd *p)
{
	struct rdmae_wire_accept_pd w;

	memset(&w, 0, sizeof(w));
	w.magic = htole32(RDMAE_MAGIC);
	w.version = htole16(p->version);
	w.auth = htole16(p->auth);
	memcpy(w.nonce, p->nonce, sizeof(w.nonce));
	memcpy(buf, &w, sizeof(w));
}

int rdmae_accept_pd_decode(const void *buf, size_t len, struct rdmae_accept_pd *p,
			   enum rdmae_wire_field *field)
{
	struct rdmae_wire_accept_pd w;

	*field = RDMAE_F_NONE;
	/* rdma_cm pads private data, so only a floor applies. */
	if (!buf || len < sizeof(w))
		return reject(field, RDMAE_F_LENGTH, -EBADMSG);
	memcpy(&w, buf, sizeof(w));
	if (le32toh(w.magic) != RDMAE_MAGIC)
		return reject(field, RDMAE_F_MAGIC, -EBADMSG);
	if (w.reserved != 0)
		return reject(field, RDMAE_F_RESERVED, -EPROTO);
	if (!known_auth(le16toh(w.auth)))
		return reject(field, RDMAE_F_AUTH, -EPROTO);
	p->version = le16toh(w.version);
	p->auth = le16toh(w.auth);
	memcpy(p->nonce, w.nonce, sizeof(p->nonce));
	return 0;
}

/* ---- data transfer header ---- */

void rdmae_data_hdr_encode(void *buf, const struct rdmae_data_hdr *m)
{
	struct rdmae_wire_data_hdr w;

	memset(&w, 0, sizeof(w));
	w.credits_requested = htole16(m->credits_requested);
	w.credits_granted = htole16(m->credits_granted);
	w.flags = htole16(m->flags);
	w.remaining_data_length = htole32(m->remaining_data_length);
	w.data_offset = htole32(m->data_offset);
	w.data_length = htole32(m->data_length);
	w.fence_seq = htole32(m->fence_seq);
	memcpy(buf, &w, sizeof(w));
}

int rdmae_data_hdr_decode(const void *buf, size_t len, uint32_t max_frag,
			  struct rdmae_data_hdr *m, enum rdmae_wire_field *field)
{
	struct rdmae_wire_data_hdr w;
	struct rdmae_data_hdr h;

	*field = RDMAE_F_NONE;
	if (len < sizeof(w))
		return reject(field, RDMAE_F_LENGTH, -EBADMSG);
	memcpy(&w, buf, sizeof(w));
	h.credits_requested = le16toh(w.credits_requested);
	h.credits_granted = le16toh(w.credits_granted);
	h.flags = le16toh(w.flags);
	h.remaining_data_length = le32toh(w.remaining_data_length);
	h.data_offset = le32toh(w.data_offset);
	h.data_length = le32toh(w.data_length);
	h.fence_seq = le32toh(w.fence_seq);

	if (w.reserved != 0)
		return reject(field, RDMAE_F_RESERVED, -EPROTO);
	if (h.flags & ~RDMAE_FLAGS_KNOWN)
		return reject(field, RDMAE_F_FLAGS, -EPROTO);
	/* A peer asking for no credits could leave us unable to ever answer it. */
	if (h.credits_requested == 0)
		return reject(field, RDMAE_F_CREDITS_REQUESTED, -EPROTO);
	if (h.data_length == 0) {
		if (h.data_offset != 0)
			return reject(field, RDMAE_F_DATA_OFFSET, -EBADMSG);
	} else {
		if (h.data_offset < RDMAE_DATA_HDR_SIZE || (h.data_offset & 7u))
			return reject(field, RDMAE_F_DATA_OFFSET, -EBADMSG);
		/* In 64 bits so that offset + length cannot wrap past a short buffer. */
		if ((uint64_t)h.data_offset + h.data_length > (uint64_t)len)
			return reject(field, RDMAE_F_DATA_LENGTH, -EBADMSG);
	}
	if (max_frag != 0 && (uint64_t)h.data_length + h.remaining_data_length > max_frag)
		return reject(field, RDMAE_F_REMAINING_DATA_LENGTH, -EPROTO);
	*m = h;
	return 0;
}

/* ---- lane private data ---- */

void rdmae_lane_pd_encode(void *buf, const struct rdmae_lane_pd *p)
{
	struct rdmae_wire_lane_pd w;

	memset(&w, 0, sizeof(w));
	w.magic = htole32(RDMAE_MAGIC);
	w.version = htole16(p->version);
	w.lane = htole16(p->lane);
	w.conn_token = htole64(p->conn_token);
	memcpy(buf, &w, sizeof(w));
}

int rdmae_lane_pd_decode(const void *buf, size_t len, struct rdmae_lane_pd *p,
			 enum rdmae_wire_field *field)
{
	struct rdmae_wire_lane_pd w;
	uint16_t lane;
	uint64_t token;

	*field = RDMAE_F_NONE;
	/* rdma_cm pads private data (56 bytes on RC), so only a floor applies. */
	if (!buf || len < sizeof(w))
		return reject(field, RDMAE_F_LENGTH, -EBADMSG);
	memcpy(&w, buf, sizeof(w));
	if (le32toh(w.magic) != RDMAE_MAGIC)
		return reject(field, RDMAE_F_MAGIC, -EBADMSG);
	lane = le16toh(w.lane);
	token = le64toh(w.conn_token);
	if (lane >= RDMAE_MAX_LANES)
		return reject(field, RDMAE_F_LANES, -EPROTO);
	/* Lane 0 opens a connection, every other lane joins one: the token says which. */
	if ((lane == 0) != (token == 0))
		return reject(field, RDMAE_F_LANES, -EPROTO);
	p->version = le16toh(w.version);
	p->lane = lane;
	p->conn_token = token;
	return 0;
}

/* ---- buffer descriptor ---- */

void rdmae_bufdesc_encode(void *buf, const struct rdmae_bufdesc *d)
{
	struct rdmae_wire_bufdesc w;

	w.offset = htole64(d->offset);
	w.token = htole32(d->token);
	w.length = htole32(d->length);
	memcpy(buf, &w, sizeof(w));
}

void rdmae_bufdesc_decode(const void *buf, struct rdmae_bufdesc *d)
{
	struct rdmae_wire_bufdesc w;

	memcpy(&w, buf, sizeof(w));
	d->offset = le64toh(w.offset);
	d->token = le32toh(w.token);
	d->length = le32toh(w.length);
}

/* ---- negotiation ---- */

static int server_check(const struct rdmae_wire_limits *ours, const struct rdmae_neg_req *req,
			uint16_t *version, enum rdmae_wire_field *field)
{
	uint16_t hi, lo;

	if (req->min_version > req->max_version)
		return reject(field, RDMAE_F_VERSION, -EPROTONOSUPPORT);
	hi = min_u16(ours->max_version, req->max_version);
	lo = max_u16(ours->min_version, req->min_version);
	if (hi < lo)
		return reject(field, RDMAE_F_VERSION, -EPROTONOSUPPORT);
	*version = hi;
	if (req->credits_requested < 1 || req->credits_requested > RDMAE_MAX_CREDITS)
		return reject(field, RDMAE_F_CREDITS_REQUESTED, -EPROTO);
	if (req->credits_granted < RDMAE_MIN_INITIAL_GRANT || req->credits_granted > RDMAE_MAX_CREDITS)
		return reject(field, RDMAE_F_CREDITS_GRANTED, -EPROTO);
	if (req->lanes < 1 || req->lanes > RDMAE_MAX_LANES)
		return reject(field, RDMAE_F_LANES, -EPROTO);
	if (req->max_receive_size < RDMAE_MIN_RECV_SIZE ||
	    req->max_receive_size > RDMAE_MAX_RECV_SIZE)
		return reject(field, RDMAE_F_MAX_RECEIVE_SIZE, -EPROTO);
	if (req->preferred_send_size < RDMAE_MIN_RECV_SIZE)
		return reject(field, RDMAE_F_PREFERRED_SEND_SIZE, -EPROTO);
	if (req->max_fragmented_size < RDMAE_MIN_FRAG_SIZE ||
	    req->max_fragmented_size > RDMAE_MAX_FRAG_SIZE)
		return reject(field, RDMAE_F_MAX_FRAGMENTED_SIZE, -EPROTO);
	if (req->max_rw_size < RDMAE_MIN_RW_SIZE || req->max_rw_size > RDMAE_MAX_RW_SIZE)
		return reject(field, RDMAE_F_MAX_RW_SIZE, -EPROTO);
	return 0;
}

static uint32_t recv_size(uint32_t our_max_recv, uint32_t peer_pref_send)
{
	/* The peer promised not to send more than its preferred size... */
	uint32_t v = min_u32(our_max_recv, peer_pref_send);

	/* ...but a header plus some payload must always fit. */
	return v < RDMAE_MIN_RECV_SIZE ? RDMAE_MIN_RECV_SIZE : v;
}

int rdmae_negotiate_server(const struct rdmae_wire_limits *ours, const struct rdmae_neg_req *req,
			   uint16_t credits_posted,
			   struct rdmae_neg_resp *resp, struct rdmae_negotiated *out,
			   enum rdmae_wire_field *field)
{
	uint16_t version = 0;
	int ret;

	*field = RDMAE_F_NONE;
	memset(resp, 0, sizeof(*resp));
	memset(out, 0, sizeof(*out));
	/* Our range goes back even on failure, so that the client can tell why. */
	resp->min_version = ours->min_version;
	resp->max_version = ours->max_version;

	ret = server_check(ours, req, &version, field);
	if (ret) {
		resp->status = ret;
		resp->status_field = (uint32_t)*field;
		return ret;
	}

	resp->negotiated_version = version;
	resp->credits_requested = ours->credits;
	resp->credits_granted = credits_posted;
	resp->lanes = min_u16(req->lanes, ours->lanes);
	resp->max_rw_size = min_u32(ours->max_rw_size, req->max_rw_size);
	resp->preferred_send_size = ours->preferred_send_size;
	resp->max_receive_size = ours->max_receive_size;
	resp->max_fragmented_size = min_u32(ours->max_fragmented_size, req->max_fragmented_size);

	out->version = version;
	out->lanes = resp->lanes;
	out->send_credits = req->credits_granted;
	out->peer_credits_target = req->credits_requested;
	out->max_send_size = min_u32(ours->preferred_send_size, req->max_receive_size);
	out->max_receive_size = recv_size(ours->max_receive_size, req->preferred_send_size);
	out->max_fragmented_size = resp->max_fragmented_size;
	out->max_rw_size = resp->max_rw_size;
	return 0;
}

uint16_t rdmae_lane_credits(uint16_t version, unsigned int lane, uint16_t credits)
{
	if (lane == 0 || version < RDMAE_VERSION_2_1)
		return credits;
	return min_u16(credits, RDMAE_LANE_CREDITS);
}

static int client_check(const struct rdmae_wire_limits *ours, const struct rdmae_neg_req *sent,
			const struct rdmae_neg_resp *r, enum rdmae_wire_field *field)
{
	if (r->status != 0) {
		/* A refusal: pass on the server's reason when it is a sane one. */
		enum rdmae_wire_field f = RDMAE_F_STATUS;

		if (r->status_field > RDMAE_F_NONE && r->status_field < RDMAE_F_COUNT)
			f = (enum rdmae_wire_field)r->status_field;
		if (r->status < 0 && r->status >= -RDMAE_MAX_ERRNO)
			return reject(field, f, r->status);
		return reject(field, f, -EPROTO);
	}
	if (r->negotiated_version < ours->min_version ||
	    r->negotiated_version > ours->max_version ||
	    r->negotiated_version < r->min_version || r->negotiated_version > r->max_version)
		return reject(field, RDMAE_F_VERSION, -EPROTONOSUPPORT);
	if (r->credits_granted < RDMAE_MIN_INITIAL_GRANT || r->credits_granted > RDMAE_MAX_CREDITS)
		return reject(field, RDMAE_F_CREDITS_GRANTED, -EPROTO);
	if (r->credits_requested < 1 || r->credits_requested > RDMAE_MAX_CREDITS)
		return reject(field, RDMAE_F_CREDITS_REQUESTED, -EPROTO);
	if (r->lanes < 1 || r->lanes > sent->lanes)
		return reject(field, RDMAE_F_LANES, -EPROTO);
	if (r->preferred_send_size < RDMAE_MIN_RECV_SIZE ||
	    r->preferred_send_size > ours->max_receive_size)
		return reject(field, RDMAE_F_PREFERRED_SEND_SIZE, -EPROTO);
	if (r->max_receive_size < RDMAE_MIN_RECV_SIZE || r->max_receive_size > RDMAE_MAX_RECV_SIZE)
		return reject(field, RDMAE_F_MAX_RECEIVE_SIZE, -EPROTO);
	if (r->max_fragmented_size < RDMAE_MIN_FRAG_SIZE ||
	    r->max_fragmented_size > sent->max_fragmented_size)
		return reject(field, RDMAE_F_MAX_FRAGMENTED_SIZE, -EPROTO);
	if (r->max_rw_size < RDMAE_MIN_RW_SIZE || r->max_rw_size > sent->max_rw_size)
		return reject(field, RDMAE_F_MAX_RW_SIZE, -EPROTO);
	return 0;
}

int rdmae_negotiate_client(const struct rdmae_wire_limits *ours, const struct rdmae_neg_req *sent,
			   const struct rdmae_neg_resp *resp, struct rdmae_negotiated *out,
			   enum rdmae_wire_field *field)
{
	int ret;

	*field = RDMAE_F_NONE;
	memset(out, 0, sizeof(*out));
	ret = client_check(ours, sent, resp, field);
	if (ret)
		return ret;

	out->version = resp->negotiated_version;
	out->lanes = resp->lanes;
	out->send_credits = resp->credits_granted;
	out->peer_credits_target = resp->credits_requested;
	out->max_send_size = min_u32(ours->preferred_send_size, resp->max_receive_size);
	out->max_receive_size = recv_size(ours->max_receive_size, resp->preferred_send_size);
	out->max_fragmented_size = resp->max_fragmented_size;
	out->max_rw_size = resp->max_rw_size;
	return 0;
}
