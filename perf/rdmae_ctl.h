/* SPDX-License-Identifier: MIT */
/*
 * rdmae-perf's control messages between client and server, over the
 * connection's own message channel (rdmae_send/rdmae_recv).
 *
 * A message is a 16-byte header (magic, op, count of 64-bit values, bytes
 * of text; little endian), the values, then the text. Bytes after that are
 * ignored, so a DATA message of any size >= 16 is the header and filler.
 * A message without the magic is not ours (an engine message after a
 * migration) and is skipped by rdmae_ctl_recv.
 */
#ifndef RDMAE_CTL_H
#define RDMAE_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "rdmae_conn.h"
#include "rdmae_region.h"
#include "rdmae_write.h"

#define RDMAE_CTL_MAGIC 0x46525052u	/* "RPRF" */
#define RDMAE_CTL_HDR 16u
#define RDMAE_CTL_MAX_VALS 256
#define RDMAE_CTL_MAX_DESCS 64
#define RDMAE_CTL_TEXT_MAX 512

enum rdmae_ctl_op {
	RDMAE_CTL_SETUP = 1,	/* client: what to prepare (per subcommand) */
	RDMAE_CTL_HELLO,	/* server: ready; descriptors of its buffer */
	RDMAE_CTL_BEGIN,	/* client: a measurement starts (test, size) */
	RDMAE_CTL_DATA,		/* SEND test payload / ping */
	RDMAE_CTL_END,		/* client: the measurement ended */
	RDMAE_CTL_RESULT,	/* server: its figures for the measurement */
	RDMAE_CTL_NEXT,		/* client: done with this connection, another follows */
	RDMAE_CTL_QUIT,		/* client: done with the server */
	RDMAE_CTL_MIG_RESULT,	/* migration destination: its verification and figures */
};

/* What a BEGIN measures (its first value; the second is the message size). */
enum rdmae_ctl_test {
	RDMAE_TEST_WRITE = 1,	/* client WRITEs into the server's buffer */
	RDMAE_TEST_READ,	/* client READs from it */
	RDMAE_TEST_SEND,	/* client SENDs DATA; the server counts */
	RDMAE_TEST_PING,	/* client SENDs DATA; the server sends each back */
};

/* SETUP flags (second value; the first is the buffer size). */
#define RDMAE_SETUP_REMOTE_WRITE 1u
#define RDMAE_SETUP_REMOTE_READ 2u

struct rdmae_ctl {
	uint32_t op;
	uint32_t n;
	uint64_t v[RDMAE_CTL_MAX_VALS];
	char text[RDMAE_CTL_TEXT_MAX];	/* NUL-terminated, possibly cut */
	size_t len;			/* the whole message */
};

/* Room rdmae_ctl_encode needs for n values and text (NULL = none). */
size_t rdmae_ctl_size(uint32_t n, const char *text);
/* Encode into buf (at least rdmae_ctl_size bytes); returns the message's length. */
size_t rdmae_ctl_encode(void *buf, uint32_t op, const uint64_t *v, uint32_t n, const char *text);
/* -EPROTO when buf is not a control message or is truncated; -ENOMSG without the magic. */
int rdmae_ctl_decode(const void *buf, size_t len, struct rdmae_ctl *out);

int rdmae_ctl_send(struct rdmae_conn *c, uint32_t op, const uint64_t *v, uint32_t n,
		   const char *text, struct rdmae_err *err);
/*
 * Receive the next control message, skipping foreign ones. want != 0 makes
 * any other op an error (-EPROTO naming both). timeout_ms < 0: for ever.
 */
int rdmae_ctl_recv(struct rdmae_conn *c, struct rdmae_ctl *out, uint32_t want, int timeout_ms,
		   struct rdmae_err *err);

/*
 * A buffer the peer may write and/or read: its descriptors as HELLO values
 * (size, count, then offset, token, length per descriptor) and back.
 */
uint32_t rdmae_ctl_put_remote(uint64_t *v, uint64_t size, const struct rdmae_bufdesc *d,
			      size_t nd);
int rdmae_ctl_get_remote(const struct rdmae_ctl *m, struct rdmae_bufdesc *d, size_t cap,
			 struct rdmae_remote *out, struct rdmae_err *err);

#endif
