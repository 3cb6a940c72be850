/* SPDX-License-Identifier: MIT */
/*
 * Fragmentation and reassembly with MS-SMBD's remaining-length semantics:
 * a message of up to max_fragmented_size bytes travels as a sequence of
 * data-transfer messages, each carrying data_length bytes and the count of
 * bytes still to come (remaining_data_length); 0 marks the last fragment.
 */
#ifndef RDMAE_FRAG_H
#define RDMAE_FRAG_H

#include <stddef.h>
#include <stdint.h>

/* Sender side: the next fragment of a total-byte message, sent bytes already out. */
void rdmae_frag_next(size_t total, size_t sent, uint32_t max_payload,
		     uint32_t *len, uint32_t *remaining);

/* Receiver side: one reassembly in progress per lane-0 stream. */
struct rdmae_reasm {
	uint8_t *buf;		/* NULL when no message is in progress */
	size_t total;		/* length of the message being assembled */
	size_t have;		/* bytes received so far */
	uint32_t max;		/* negotiated max fragmented size */
};

void rdmae_reasm_init(struct rdmae_reasm *r, uint32_t max);

/*
 * Add one fragment. On the last fragment *msg receives the malloc'd whole
 * message (the caller frees it) and *msg_len its length; otherwise *msg is
 * NULL. Returns 0, -EMSGSIZE when the total would exceed max, -EPROTO when
 * the fragment does not continue the message in progress (remaining must
 * fall by exactly len), -EINVAL for an empty fragment, or -ENOMEM. On error
 * the message in progress is dropped.
 */
int rdmae_reasm_push(struct rdmae_reasm *r, const void *data, uint32_t len, uint32_t remaining,
		     void **msg, size_t *msg_len);

/* Drop any message in progress and free its buffer. */
void rdmae_reasm_reset(struct rdmae_reasm *r);

#endif
