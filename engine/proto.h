/* SPDX-License-Identifier: MIT */
/*
 * The engine's own messages, carried as the payload of rdmae_send. Internal
 * to the engine; doc/protocol-engine.md is the prose version and must be kept
 * in step with this file.
 *
 * Every message is a 16-byte header followed by a body whose first part is a
 * fixed-size struct, possibly followed by an array of fixed-size entries.
 * All integers are little-endian. Host code never touches the wire structs:
 * encoders write from host values, and rdmae_msg_decode() checks everything
 * (length, counts against the body, block indices and page ranges against the
 * session, NUL-terminated strings) before the caller sees a field.
 */
#ifndef RDMAE_PROTO_H
#define RDMAE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdmae_err.h"
#include "rdmae_wire.h"

#define RDMAE_PROTO_MAGIC	0x47454452u	/* "RDEG" on the wire */
#define RDMAE_PROTO_VERSION	7		/* 2: block names of 256 bytes; 3: DATA_RUNS;
					 * 4: ROUND_ACK carries the hashing backlog;
					 * 5: descriptors in DESCS, piece by piece,
					 *    PREFLIGHT_OK carries none;
					 * 6: BLOCKS and PREFLIGHT_OK say how each
					 *    side registers (RDMAE_WIRE_REG_*);
					 * 7: BLOCKS and PREFLIGHT_OK carry flags
					 *    (the external data path), COMPLETE
					 *    says the VM is stopped */
#define RDMAE_PROTO_HDR_SIZE	16
#define RDMAE_PROTO_NAME_LEN	256		/* block name, NUL included (QEMU idstr) */
#define RDMAE_PROTO_REASON_LEN	192		/* error text, NUL included */
#define RDMAE_PROTO_MAX_BLOCKS	4096
/*
 * Runs in one ZERO_RUNS or DATA_RUNS message. The destination zero-fills or
 * marks every run of a message before it reads the next one, so the bound
 * caps the work (and the size) a single message can ask for; senders size
 * their batches by it.
 */
#define RDMAE_PROTO_MAX_RUNS	1024
/*
 * Descriptors in one DESCS message: a piece of up to 64 GiB. The destination
 * advertises far smaller pieces (engine/session_int.h, PIECE_MAX); the bound
 * keeps a message's size and the decoder's loop small whatever a peer claims.
 */
#define RDMAE_PROTO_MAX_DESCS	64
#define RDMAE_PROTO_NO_BLOCK	0xffffffffu	/* block index: not about one block */
#define RDMAE_PROTO_NO_PAGE	UINT64_MAX	/* page index: not known */

enum rdmae_msg_type {
	RDMAE_MSG_BLOCKS = 1,		/* S->D: the blocks to migrate */
	RDMAE_MSG_PREFLIGHT_OK,		/* D->S: the blocks fit; DESCS follow */
	RDMAE_MSG_PREFLIGHT_ERR,	/* D->S: a block that does not fit, and why */
	RDMAE_MSG_ZERO_RUNS,		/* S->D: page runs to zero-fill */
	RDMAE_MSG_PROGRESS,		/* S->D: a round goes on (keeps the peer's waits alive) */
	RDMAE_MSG_ROUND_END,		/* S->D: round done, fence to wait for, its stats */
	RDMAE_MSG_ROUND_ACK,		/* D->S: round placed and applied */
	RDMAE_MSG_STATE,		/* S->D: a chunk of device state */
	RDMAE_MSG_COMPLETE,		/* S->D: final fence, totals */
	RDMAE_MSG_BLOCK_SUMS,		/* S->D: per-block checksums */
	RDMAE_MSG_PAGE_SUMS_REQ,	/* D->S: send the page sums of a range */
	RDMAE_MSG_PAGE_SUMS,		/* S->D: the page sums of a range */
	RDMAE_MSG_COMMIT_OK,		/* D->S: verified, committed */
	RDMAE_MSG_COMMIT_FAIL,		/* D->S: not committed, and why */
	RDMAE_MSG_CANCEL,		/* either way: stop, and why */
	RDMAE_MSG_DATA_RUNS,		/* S->D: page runs written by RDMA in this round */
	RDMAE_MSG_DESCS,		/* D->S: one more piece of a block is writable */
	RDMAE_MSG_TYPE_END
};

/* BLOCKS, per block flags */
#define RDMAE_BLOCK_HUGEPAGES	0x1u
#define RDMAE_BLOCK_FLAGS_KNOWN	0x1u
/*
 * BLOCKS and PREFLIGHT_OK, session flags (v7): each side says its own; a
 * destination refuses BLOCKS, and a source PREFLIGHT_OK, whose data path
 * differs from its own.
 */
#define RDMAE_SESS_EXTERNAL	0x1u	/* the caller writes lanes >= 1 (QEMU multifd) */
#define RDMAE_SESS_FLAGS_KNOWN	0x1u
/* ROUND_END flags */
#define RDMAE_ROUND_FINAL	0x1u	/* the VM was stopped */
#define RDMAE_ROUND_FLAGS_KNOWN	0x1u
/* COMPLETE flags */
#define RDMAE_COMPLETE_NO_VERIFY	0x1u	/* no BLOCK_SUMS follows */
#define RDMAE_COMPLETE_STOPPED		0x2u	/* the source's VM is stopped (v7) */
#define RDMAE_COMPLETE_FLAGS_KNOWN	0x3u
/* COMMIT_OK flags */
#define RDMAE_COMMIT_VERIFIED	0x1u
#define RDMAE_COMMIT_FLAGS_KNOWN	0x1u

/* ---- on the wire (little-endian, never read directly) ---- */

struct rdmae_wire_eng_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t body_len;
	uint32_t reserved;
};

/*
 * How a side registers guest RAM, reported in pre-flight so that each side
 * logs both: the source PIN (ahead of its cursor), ON_DEMAND or ODP; the
 * destination PIN or ODP only (on-demand chunks cannot be written remotely).
 */
#define RDMAE_WIRE_REG_PIN		0u
#define RDMAE_WIRE_REG_ON_DEMAND	1u
#define RDMAE_WIRE_REG_ODP		2u

struct rdmae_wire_blocks {		/* + count * struct rdmae_wire_block */
	uint32_t count;
	uint16_t reg_mode;		/* the source's, RDMAE_WIRE_REG_* (v6; was reserved) */
	uint16_t flags;			/* RDMAE_SESS_* (v7; was reg_mode's high half) */
};

struct rdmae_wire_block {
	char name[RDMAE_PROTO_NAME_LEN];
	uint64_t len;
	uint32_t page_size;
	uint32_t flags;
};

struct rdmae_wire_preflight_ok {
	uint32_t nblocks;
	uint16_t reg_mode;		/* the destination's: PIN or ODP (v6; was reserved) */
	uint16_t flags;			/* RDMAE_SESS_* (v7; was reg_mode's high half) */
};

/*
 * One piece of a block, [offset, offset + sum of the lengths), made
 * remotely writable: the pieces of a block come in order, each starting
 * where the last ended (no gap, no overlap), until the block is covered.
 */
struct rdmae_wire_descs {		/* + ndescs * struct rdmae_wire_bufdesc */
	uint32_t block;
	uint32_t ndescs;
	uint64_t offset;		/* bytes into the block */
};

struct rdmae_wire_preflight_err {
	uint32_t error;			/* positive errno */
	uint32_t block;			/* or RDMAE_PROTO_NO_BLOCK */
	char reason[RDMAE_PROTO_REASON_LEN];
};

struct rdmae_wire_zero_runs {		/* + count * struct rdmae_wire_page_run */
	uint32_t block;
	uint32_t count;
};

struct rdmae_wire_page_run {
	uint64_t first_page;
	uint64_t npages;
};

struct rdmae_wire_progress {
	uint32_t round;
	uint32_t reserved;
	uint64_t bytes;			/* posted so far in this round */
};

struct rdmae_wire_round_end {
	uint32_t round;
	uint32_t fence_seq;
	uint32_t flags;
	uint32_t reserved;
	uint64_t pages;
	uint64_t bytes;
	uint64_t zero_pages;
	uint64_t runs;
	uint64_t duration_ns;
};

struct rdmae_wire_round_ack {
	uint32_t round;
	uint32_t hash_backlog_mib;	/* destination: bytes it still hashes, MiB rounded up */
};

struct rdmae_wire_state {		/* + len bytes */
	uint64_t offset;		/* state bytes sent before this chunk */
	uint32_t len;
	uint32_t reserved;
};

struct rdmae_wire_complete {
	uint32_t fence_seq;
	uint32_t flags;
	uint32_t nblocks;
	uint32_t rounds;
	uint64_t state_bytes;
};

struct rdmae_wire_block_sums {		/* + nblocks * le64 */
	uint32_t nblocks;
	uint32_t reserved;
};

struct rdmae_wire_page_sums {		/* request; the answer adds npages * le64 */
	uint32_t block;
	uint32_t reserved;
	uint64_t first_page;
	uint64_t npages;
};

struct rdmae_wire_commit_ok {
	uint32_t flags;
	uint32_t reserved;
};

struct rdmae_wire_commit_fail {
	uint32_t error;			/* positive errno */
	uint32_t block;			/* or RDMAE_PROTO_NO_BLOCK */
	uint64_t first_page;		/* or RDMAE_PROTO_NO_PAGE */
	char reason[RDMAE_PROTO_REASON_LEN];
};

struct rdmae_wire_cancel {
	uint32_t error;			/* positive errno */
	uint32_t reserved;
	char reason[RDMAE_PROTO_REASON_LEN];
};

_Static_assert(sizeof(struct rdmae_wire_eng_hdr) == RDMAE_PROTO_HDR_SIZE, "eng_hdr size");
_Static_assert(sizeof(struct rdmae_wire_blocks) == 8, "blocks size");
_Static_assert(sizeof(struct rdmae_wire_block) == 272, "block size");
_Static_assert(sizeof(struct rdmae_wire_preflight_ok) == 8, "preflight_ok size");
_Static_assert(sizeof(struct rdmae_wire_descs) == 16, "descs size");
_Static_assert(sizeof(struct rdmae_wire_preflight_err) == 200, "preflight_err size");
_Static_assert(sizeof(struct rdmae_wire_zero_runs) == 8, "zero_runs size");
_Static_assert(sizeof(struct rdmae_wire_page_run) == 16, "page_run size");
_Static_assert(sizeof(struct rdmae_wire_progress) == 16, "progress size");
_Static_assert(sizeof(struct rdmae_wire_round_end) == 56, "round_end size");
_Static_assert(sizeof(struct rdmae_wire_round_ack) == 8, "round_ack size");
_Static_assert(sizeof(struct rdmae_wire_state) == 16, "state size");
_Static_assert(sizeof(struct rdmae_wire_complete) == 24, "complete size");
_Static_assert(sizeof(struct rdmae_wire_block_sums) == 8, "block_sums size");
_Static_assert(sizeof(struct rdmae_wire_page_sums) == 24, "page_sums size");
_Static_assert(sizeof(struct rdmae_wire_commit_ok) == 8, "commit_ok size");
_Static_assert(sizeof(struct rdmae_wire_commit_fail) == 208, "commit_fail size");
_Static_assert(sizeof(struct rdmae_wire_cancel) == 200, "cancel size");

/* ---- host order ---- */

/*
 * What the decoder checks indices and ranges against: the session's blocks in
 * the source's order. NULL context (before pre-flight) admits only the
 * messages that need none: BLOCKS and CANCEL.
 */
struct rdmae_proto_ctx {
	uint32_t nblocks;
	const uint64_t *block_len;	/* bytes */
	const uint64_t *block_pages;	/* len / page_size */
	uint32_t max_msg;		/* largest message the transport carries */
	/*
	 * Source only: bytes of each block advertised so far. A DESCS must
	 * start exactly there (a gap or an overlap is refused before use);
	 * without it (the destination) DESCS is refused altogether.
	 */
	const uint64_t *advertised;
};

struct rdmae_msg_block {
	char name[RDMAE_PROTO_NAME_LEN];
	uint64_t len;
	uint32_t page_size;
	uint32_t flags;
};

struct rdmae_msg_round_end {
	uint32_t round;
	uint32_t fence_seq;
	uint32_t flags;
	uint64_t pages;
	uint64_t bytes;
	uint64_t zero_pages;
	uint64_t runs;
	uint64_t duration_ns;
};

struct rdmae_msg_complete {
	uint32_t fence_seq;
	uint32_t flags;
	uint32_t nblocks;
	uint32_t rounds;
	uint64_t state_bytes;
};

/* A decoded message. Array members point into the buffer given to the decoder. */
struct rdmae_msg {
	enum rdmae_msg_type type;
	size_t body_len;
	union {
		struct {
			uint32_t count;
			uint32_t reg_mode;	/* RDMAE_WIRE_REG_* */
			uint32_t flags;		/* RDMAE_SESS_* */
			const uint8_t *raw;
		} blocks;
		struct {
			uint32_t nblocks;
			uint32_t reg_mode;	/* RDMAE_WIRE_REG_PIN or _ODP */
			uint32_t flags;		/* RDMAE_SESS_* */
		} preflight_ok;
		struct {
			uint32_t block;
			uint32_t ndescs;
			uint64_t offset;
			uint64_t len;		/* bytes the descriptors cover */
			const uint8_t *raw;
		} descs;
		struct {
			int error;		/* negative errno */
			uint32_t block;
			char reason[RDMAE_PROTO_REASON_LEN];
		} preflight_err;
		struct {
			uint32_t block;
			uint32_t count;
			const uint8_t *raw;
		} zero_runs;
		struct {
			uint32_t round;
			uint64_t bytes;
		} progress;
		struct rdmae_msg_round_end round_end;
		struct {
			uint32_t round;
			uint32_t hash_backlog_mib;
		} round_ack;
		struct {
			uint64_t offset;
			uint32_t len;
			const uint8_t *data;
		} state;
		struct rdmae_msg_complete complete;
		struct {
			uint32_t nblocks;
			const uint8_t *raw;
		} block_sums;
		struct {
			uint32_t block;
			uint64_t first_page;
			uint64_t npages;
			const uint8_t *raw;	/* answer only */
		} page_sums;
		struct {
			uint32_t flags;
		} commit_ok;
		struct {
			int error;		/* negative errno */
			uint32_t block;
			uint64_t first_page;
			char reason[RDMAE_PROTO_REASON_LEN];
		} commit_fail;
		struct {
			int error;		/* negative errno */
			char reason[RDMAE_PROTO_REASON_LEN];
		} cancel;
	} u;
};

const char *rdmae_msg_type_name(unsigned int type);

/*
 * Decode and check a whole message. Returns 0, or -EPROTO (bad header,
 * unknown type, a value out of range) / -EBADMSG (length or count not
 * matching the body) with a message naming the message and the field.
 */
int rdmae_msg_decode(const void *buf, size_t len, const struct rdmae_proto_ctx *ctx,
		     struct rdmae_msg *m, struct rdmae_err *err);

/* Accessors for decoded arrays; the index must be below the decoded count. */
void rdmae_msg_blocks_get(const struct rdmae_msg *m, uint32_t i, struct rdmae_msg_block *b);
void rdmae_msg_descs_get(const struct rdmae_msg *m, uint32_t i, struct rdmae_bufdesc *d);
void rdmae_msg_zero_runs_get(const struct rdmae_msg *m, uint32_t i, uint64_t *first_page,
			     uint64_t *npages);
uint64_t rdmae_msg_block_sums_get(const struct rdmae_msg *m, uint32_t i);
uint64_t rdmae_msg_page_sums_get(const struct rdmae_msg *m, uint64_t i);

/*
 * Encoders. Each returns the message length; buf must hold it (the *_size
 * functions say how much). Strings are truncated to fit and always
 * NUL-terminated.
 */
size_t rdmae_msg_blocks_size(uint32_t count);
size_t rdmae_msg_blocks_encode(void *buf, const struct rdmae_msg_block *b, uint32_t count,
			       uint32_t reg_mode, uint32_t flags);

size_t rdmae_msg_preflight_ok_encode(void *buf, uint32_t nblocks, uint32_t reg_mode,
				     uint32_t flags);

/* n descriptors of block's piece starting offset bytes in, each RDMAE_DESC_SPAN long but the last. */
size_t rdmae_msg_descs_size(uint32_t n);
size_t rdmae_msg_descs_encode(void *buf, uint32_t block, uint64_t offset,
			      const struct rdmae_bufdesc *descs, uint32_t n);

size_t rdmae_msg_preflight_err_encode(void *buf, int error, uint32_t block, const char *reason);

/* Build in place: put runs one by one, then finish with the header. */
size_t rdmae_msg_zero_runs_size(uint32_t count);
void rdmae_msg_zero_runs_put(void *buf, uint32_t i, uint64_t first_page, uint64_t npages);
size_t rdmae_msg_zero_runs_finish(void *buf, uint32_t block, uint32_t count);
/*
 * DATA_RUNS has ZERO_RUNS' layout (built with rdmae_msg_zero_runs_put, read
 * from m->u.zero_runs with rdmae_msg_zero_runs_get); only the type differs.
 */
size_t rdmae_msg_data_runs_finish(void *buf, uint32_t block, uint32_t count);

size_t rdmae_msg_progress_encode(void *buf, uint32_t round, uint64_t bytes);
size_t rdmae_msg_round_end_encode(void *buf, const struct rdmae_msg_round_end *r);
/* hash_backlog: bytes the destination hashes after sending this ack (saturates). */
size_t rdmae_msg_round_ack_encode(void *buf, uint32_t round, uint64_t hash_backlog);

/* The data goes at buf + RDMAE_MSG_STATE_DATA_OFF; the encoder writes only the headers. */
#define RDMAE_MSG_STATE_DATA_OFF (RDMAE_PROTO_HDR_SIZE + sizeof(struct rdmae_wire_state))
size_t rdmae_msg_state_encode(void *buf, uint64_t offset, uint32_t len);

size_t rdmae_msg_complete_encode(void *buf, const struct rdmae_msg_complete *c);

size_t rdmae_msg_block_sums_size(uint32_t nblocks);
size_t rdmae_msg_block_sums_encode(void *buf, const uint64_t *sums, uint32_t nblocks);

size_t rdmae_msg_page_sums_req_encode(void *buf, uint32_t block, uint64_t first_page,
				      uint64_t npages);
/* Answer: the sums go at buf + RDMAE_MSG_PAGE_SUMS_DATA_OFF as le64 (rdmae_msg_page_sums_put). */
#define RDMAE_MSG_PAGE_SUMS_DATA_OFF (RDMAE_PROTO_HDR_SIZE + sizeof(struct rdmae_wire_page_sums))
size_t rdmae_msg_page_sums_size(uint64_t npages);
void rdmae_msg_page_sums_put(void *buf, uint64_t i, uint64_t sum);
size_t rdmae_msg_page_sums_encode(void *buf, uint32_t block, uint64_t first_page,
				  uint64_t npages);

size_t rdmae_msg_commit_ok_encode(void *buf, uint32_t flags);
size_t rdmae_msg_commit_fail_encode(void *buf, int error, uint32_t block, uint64_t first_page,
				    const char *reason);
size_t rdmae_msg_cancel_encode(void *buf, int error, const char *reason);

/* Room for the largest fixed-size message (COMMIT_FAIL), for stack buffers. */
#define RDMAE_MSG_SMALL_MAX (RDMAE_PROTO_HDR_SIZE + sizeof(struct rdmae_wire_commit_fail))

/* Largest number of page sums one PAGE_SUMS answer carries within max_msg bytes. */
uint64_t rdmae_msg_page_sums_max(uint32_t max_msg);

#endif
