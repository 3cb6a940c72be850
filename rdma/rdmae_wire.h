/* SPDX-License-Identifier: MIT */
/*
 * rdmae wire protocol v2 (2.1): the messages that travel over SEND/RECV.
 * Semantics follow MS-SMBD (negotiate, credits, fragmentation, keepalive);
 * the format is our own. All integers are little-endian; each message is a
 * fixed-size struct whose size is checked at compile time. doc/protocol.md is
 * the prose version of this file and must be kept in step with it.
 *
 * Host code never touches the wire structs' fields directly: it encodes from
 * and decodes into the host-order structs below, and the decoders reject
 * anything out of bounds before a caller sees it.
 */
#ifndef RDMAE_WIRE_H
#define RDMAE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define RDMAE_MAGIC		0x454d4452u	/* "RDME" on the wire */
#define RDMAE_VERSION_1		0x0100
/* 2.0: mutual HMAC-SHA256 authentication in negotiate, lane tokens derived from it. */
#define RDMAE_VERSION_2		0x0200
/*
 * 2.1: the same messages; lanes after lane 0 keep fewer receives posted
 * (rdmae_lane_credits), so each side starts them with fewer send credits.
 */
#define RDMAE_VERSION_2_1	0x0201
#define RDMAE_VERSION		RDMAE_VERSION_2_1

#define RDMAE_NEG_REQ_SIZE	96
#define RDMAE_NEG_RESP_SIZE	80
/* The version-1 sizes: the fixed part that every version shares. */
#define RDMAE_NEG_REQ_V1_SIZE	32
#define RDMAE_NEG_RESP_V1_SIZE	48
/* The larger of the two: what a receiver copies of a negotiate message. */
#define RDMAE_NEG_MAX_SIZE	96
#define RDMAE_ACCEPT_PD_SIZE	48
#define RDMAE_DATA_HDR_SIZE	24
#define RDMAE_BUFDESC_SIZE	16
#define RDMAE_LANE_PD_SIZE	16

/* Authentication (doc/protocol.md section 5.4). */
#define RDMAE_NONCE_SIZE	32
#define RDMAE_PROOF_SIZE	32		/* HMAC-SHA256 */
#define RDMAE_WIRE_AUTH_NONE		0		/* no key: nothing is proven (auth=none) */
#define RDMAE_WIRE_AUTH_HMAC_SHA256	1		/* pre-shared key, mutual challenge-response */

/* Floors and ceilings that every peer must respect. */
#define RDMAE_MIN_RECV_SIZE	128		/* header + some payload */
#define RDMAE_MAX_RECV_SIZE	(1u << 20)
#define RDMAE_MIN_FRAG_SIZE	131072u		/* MS-SMBD's floor */
#define RDMAE_MAX_FRAG_SIZE	(1u << 30)
#define RDMAE_MIN_RW_SIZE	4096u
#define RDMAE_MAX_RW_SIZE	(1u << 30)
#define RDMAE_MAX_LANES		16
#define RDMAE_MAX_CREDITS	4096
/*
 * The first grant must be at least 2: a side holding a single credit may
 * spend it only on a message that grants credits, and before it has
 * received anything it has none to grant, so it could never send first.
 */
#define RDMAE_MIN_INITIAL_GRANT	2
/*
 * From 2.1, receives kept posted on a lane after lane 0, at most: those
 * lanes carry one-sided WRITEs and few messages (fences, one per batch), so
 * a ring of 255 receives (2 MiB at 8 KiB) bought them nothing but setup
 * time. Not on the wire: both sides derive it (rdmae_lane_credits).
 */
#define RDMAE_LANE_CREDITS	32

/* Data-transfer flags. */
#define RDMAE_FLAG_RESPONSE_REQUESTED	0x0001	/* reply at once (keepalive) */
#define RDMAE_FLAG_FENCE		0x0002	/* WRITEs before this on this lane are placed */
#define RDMAE_FLAGS_KNOWN		0x0003

/* ---- on the wire (little-endian, never read directly) ---- */

struct rdmae_wire_neg_req {
	uint32_t magic;
	uint16_t min_version;
	uint16_t max_version;
	uint16_t credits_requested;
	uint16_t credits_granted;
	uint16_t lanes;
	uint16_t auth;			/* RDMAE_AUTH_*; was reserved in version 1 */
	uint32_t preferred_send_size;
	uint32_t max_receive_size;
	uint32_t max_fragmented_size;
	uint32_t max_rw_size;
	uint8_t nonce[RDMAE_NONCE_SIZE];	/* the client's, fresh per connection */
	uint8_t proof[RDMAE_PROOF_SIZE];	/* HMAC(key, client transcript); 0 with auth none */
};

struct rdmae_wire_neg_resp {
	uint32_t magic;
	uint16_t min_version;
	uint16_t max_version;
	uint16_t negotiated_version;
	uint16_t credits_requested;
	uint16_t credits_granted;
	uint16_t lanes;
	int32_t status;			/* 0, or a negative errno */
	uint32_t status_field;		/* enum rdmae_wire_field that failed */
	uint32_t max_rw_size;
	uint32_t preferred_send_size;
	uint32_t max_receive_size;
	uint32_t max_fragmented_size;
	uint16_t auth;			/* RDMAE_AUTH_*, the server's */
	uint16_t reserved;
	uint32_t reserved2;
	uint8_t proof[RDMAE_PROOF_SIZE];	/* HMAC(key, server transcript); 0 with auth none
						 * or on failure */
};

/*
 * rdma_cm private data of the server's accept of lane 0: its nonce, which the
 * client needs before it can prove itself in the negotiate request.
 */
struct rdmae_wire_accept_pd {
	uint32_t magic;
	uint16_t version;		/* highest version the server speaks */
	uint16_t auth;			/* RDMAE_AUTH_*, the server's */
	uint64_t reserved;
	uint8_t nonce[RDMAE_NONCE_SIZE];	/* the server's, fresh per connection */
};

struct rdmae_wire_data_hdr {
	uint16_t credits_requested;
	uint16_t credits_granted;
	uint16_t flags;
	uint16_t reserved;
	uint32_t remaining_data_length;
	uint32_t data_offset;		/* 0 when data_length is 0 */
	uint32_t data_length;
	uint32_t fence_seq;		/* meaningful with RDMAE_FLAG_FENCE */
};

/* An RDMA-accessible region advertised to the peer (MS-SMBD's descriptor). */
struct rdmae_wire_bufdesc {
	uint64_t offset;		/* remote virtual address (IOVA) */
	uint32_t token;			/* rkey */
	uint32_t length;
};

/*
 * rdma_cm private data of every connect request. Lane 0 carries token 0 and
 * is negotiated by messages; lane k of 1..n-1 carries its own token, derived
 * by both sides from the key and both nonces (HMAC), so that the listener
 * attaches it to its connection and no observer can make up another lane's.
 */
struct rdmae_wire_lane_pd {
	uint32_t magic;
	uint16_t version;
	uint16_t lane;
	uint64_t conn_token;
};

_Static_assert(sizeof(struct rdmae_wire_lane_pd) == RDMAE_LANE_PD_SIZE, "lane_pd size");
_Static_assert(sizeof(struct rdmae_wire_neg_req) == RDMAE_NEG_REQ_SIZE, "neg_req size");
_Static_assert(sizeof(struct rdmae_wire_neg_resp) == RDMAE_NEG_RESP_SIZE, "neg_resp size");
_Static_assert(sizeof(struct rdmae_wire_accept_pd) == RDMAE_ACCEPT_PD_SIZE, "accept_pd size");
_Static_assert(RDMAE_ACCEPT_PD_SIZE <= 56, "accept private data within what any rdma_cm port carries");
_Static_assert(RDMAE_NEG_MAX_SIZE >= RDMAE_NEG_REQ_SIZE && RDMAE_NEG_MAX_SIZE >= RDMAE_NEG_RESP_SIZE,
	       "neg max size");
_Static_assert(RDMAE_NEG_REQ_SIZE <= RDMAE_MIN_RECV_SIZE && RDMAE_NEG_RESP_SIZE <= RDMAE_MIN_RECV_SIZE,
	       "negotiate messages fit the smallest receive buffer");
_Static_assert(sizeof(struct rdmae_wire_data_hdr) == RDMAE_DATA_HDR_SIZE, "data_hdr size");
_Static_assert(sizeof(struct rdmae_wire_bufdesc) == RDMAE_BUFDESC_SIZE, "bufdesc size");

/* ---- host order ---- */

struct rdmae_neg_req {
	uint16_t min_version;
	uint16_t max_version;
	uint16_t credits_requested;
	uint16_t credits_granted;
	uint16_t lanes;
	uint16_t auth;
	uint32_t preferred_send_size;
	uint32_t max_receive_size;
	uint32_t max_fragmented_size;
	uint32_t max_rw_size;
	uint8_t nonce[RDMAE_NONCE_SIZE];
	uint8_t proof[RDMAE_PROOF_SIZE];
};

struct rdmae_neg_resp {
	uint16_t min_version;
	uint16_t max_version;
	uint16_t negotiated_version;
	uint16_t credits_requested;
	uint16_t credits_granted;
	uint16_t lanes;
	int32_t status;
	uint32_t status_field;
	uint32_t max_rw_size;
	uint32_t preferred_send_size;
	uint32_t max_receive_size;
	uint32_t max_fragmented_size;
	uint16_t auth;
	uint8_t proof[RDMAE_PROOF_SIZE];
};

struct rdmae_accept_pd {
	uint16_t version;
	uint16_t auth;
	uint8_t nonce[RDMAE_NONCE_SIZE];
};

struct rdmae_data_hdr {
	uint16_t credits_requested;
	uint16_t credits_granted;
	uint16_t flags;
	uint32_t remaining_data_length;
	uint32_t data_offset;
	uint32_t data_length;
	uint32_t fence_seq;
};

struct rdmae_bufdesc {
	uint64_t offset;
	uint32_t token;
	uint32_t length;
};

struct rdmae_lane_pd {
	uint16_t version;
	uint16_t lane;
	uint64_t conn_token;
};

/* Which field a decoder or negotiation rule rejected; names in rdmae_wire_field_name(). */
enum rdmae_wire_field {
	RDMAE_F_NONE = 0,
	RDMAE_F_LENGTH,			/* message shorter than its struct */
	RDMAE_F_MAGIC,
	RDMAE_F_VERSION,		/* ranges do not overlap / negotiated one not ours */
	RDMAE_F_CREDITS_REQUESTED,
	RDMAE_F_CREDITS_GRANTED,
	RDMAE_F_LANES,
	RDMAE_F_PREFERRED_SEND_SIZE,
	RDMAE_F_MAX_RECEIVE_SIZE,
	RDMAE_F_MAX_FRAGMENTED_SIZE,
	RDMAE_F_MAX_RW_SIZE,
	RDMAE_F_STATUS,
	RDMAE_F_FLAGS,
	RDMAE_F_DATA_OFFSET,
	RDMAE_F_DATA_LENGTH,
	RDMAE_F_REMAINING_DATA_LENGTH,
	RDMAE_F_RESERVED,
	RDMAE_F_AUTH,			/* authentication mode or proof */
	RDMAE_F_COUNT
};

const char *rdmae_wire_field_name(enum rdmae_wire_field f);

/*
 * What the local side offers and accepts; the negotiation rules compare a
 * peer's message against it.
 */
struct rdmae_wire_limits {
	uint16_t min_version;
	uint16_t max_version;
	uint16_t credits;		/* receive credits we post */
	uint16_t lanes;			/* lanes we ask for / allow at most */
	uint32_t preferred_send_size;
	uint32_t max_receive_size;
	uint32_t max_fragmented_size;
	uint32_t max_rw_size;
};

/* The outcome of a negotiation, identical on both sides. */
struct rdmae_negotiated {
	uint16_t version;
	uint16_t lanes;
	uint16_t send_credits;		/* initial credits granted by the peer */
	uint16_t peer_credits_target;	/* what the peer asks us to keep posted */
	uint32_t max_send_size;		/* min(our preferred send, peer max receive) */
	uint32_t max_receive_size;	/* min(our max receive, peer preferred send), floor 128 */
	uint32_t max_fragmented_size;	/* min of both */
	uint32_t max_rw_size;		/* min of both */
};

/*
 * Encoders write exactly the struct's size into buf, which must hold it.
 * Decoders take the received length and return 0, or -EPROTO/-EBADMSG with
 * *field set to the offending field; they check only what can be checked
 * without the peer's context (lengths, magic, alignment, flags).
 */
void rdmae_neg_req_encode(void *buf, const struct rdmae_neg_req *m);
/*
 * A request of the version-1 size (32..95 bytes) from a peer that speaks no
 * version 2 is refused as -EPROTONOSUPPORT, version; otherwise as length.
 */
int rdmae_neg_req_decode(const void *buf, size_t len, struct rdmae_neg_req *m,
			 enum rdmae_wire_field *field);
void rdmae_neg_resp_encode(void *buf, const struct rdmae_neg_resp *m);
int rdmae_neg_resp_decode(const void *buf, size_t len, struct rdmae_neg_resp *m,
			  enum rdmae_wire_field *field);
void rdmae_data_hdr_encode(void *buf, const struct rdmae_data_hdr *m);
/* max_frag is the negotiated max fragmented size (0 during tests of the header alone = no limit). */
int rdmae_data_hdr_decode(const void *buf, size_t len, uint32_t max_frag,
			  struct rdmae_data_hdr *m, enum rdmae_wire_field *field);
void rdmae_accept_pd_encode(void *buf, const struct rdmae_accept_pd *p);
/* Rejects short data (an rdmae server of version 1 sends 16 bytes), a wrong magic, an unknown auth. */
int rdmae_accept_pd_decode(const void *buf, size_t len, struct rdmae_accept_pd *p,
			   enum rdmae_wire_field *field);
void rdmae_lane_pd_encode(void *buf, const struct rdmae_lane_pd *p);
/* Rejects short data, a wrong magic, lane >= RDMAE_MAX_LANES, and lane 0 with a token or lane > 0 without one. */
int rdmae_lane_pd_decode(const void *buf, size_t len, struct rdmae_lane_pd *p,
			 enum rdmae_wire_field *field);
void rdmae_bufdesc_encode(void *buf, const struct rdmae_bufdesc *d);
void rdmae_bufdesc_decode(const void *buf, struct rdmae_bufdesc *d);

/*
 * Negotiation rules (MS-SMBD 3.1.5, adapted).
 * Server side: validate a decoded request against our limits and fill the
 * response and the negotiated parameters. Returns 0, or a negative errno with
 * *field naming the rule that failed; resp is filled in both cases (with
 * status and status_field set on failure) so that it can be sent back.
 * Authentication is checked before these rules, by the caller (rdmae_auth.h);
 * resp->auth and resp->proof are the caller's to fill.
 */
int rdmae_negotiate_server(const struct rdmae_wire_limits *ours, const struct rdmae_neg_req *req,
			   uint16_t credits_posted,
			   struct rdmae_neg_resp *resp, struct rdmae_negotiated *out,
			   enum rdmae_wire_field *field);
/*
 * The receives a side whose credits_requested is `credits` keeps posted on
 * lane `lane` of a connection negotiated at `version`: its credits on lane
 * 0 and before 2.1, at most RDMAE_LANE_CREDITS on the lanes after lane 0
 * from 2.1. Each side applies it to its own credits for its rings and to
 * the peer's (peer_credits_target) for the send credits it starts a lane
 * with, so the two agree without a field of their own.
 */
uint16_t rdmae_lane_credits(uint16_t version, unsigned int lane, uint16_t credits);
/* Client side: validate the response against what we asked for. */
int rdmae_negotiate_client(const struct rdmae_wire_limits *ours, const struct rdmae_neg_req *sent,
			   const struct rdmae_neg_resp *resp, struct rdmae_negotiated *out,
			   enum rdmae_wire_field *field);

#endif
