/* SPDX-License-Identifier: MIT */
/*
 * Credit accounting for one lane, MS-SMBD style. Pure arithmetic with no
 * locking; the transport holds the lane lock around every call.
 *
 * Send credits are granted by the peer, one per receive it has posted for us;
 * each SEND spends one. Receive credits are receives we have posted; each
 * arriving message consumes one, and reposting it makes a credit we owe the
 * peer, announced in the credits_granted field of our next message.
 */
#ifndef RDMAE_CREDITS_H
#define RDMAE_CREDITS_H

#include <stdbool.h>
#include <stdint.h>

struct rdmae_credits {
	uint32_t send;		/* we may send this many more messages */
	uint32_t recv_posted;	/* receives posted and not yet consumed */
	uint32_t recv_target;	/* how many receives we keep posted */
	uint32_t to_grant;	/* posted receives the peer has not heard of */
	uint32_t peer_target;	/* the peer's last credits_requested */
};

/* Start with send credits granted at negotiation and receives already posted. */
void rdmae_credits_init(struct rdmae_credits *c, uint32_t send, uint32_t recv_posted,
			uint32_t recv_target, uint32_t peer_target);

/*
 * May a message that grants `grant` credits be sent now? The last send
 * credit is kept for a message that grants credits, so that both sides can
 * never end up waiting for each other (MS-SMBD 3.1.5.1).
 */
bool rdmae_credits_can_send(const struct rdmae_credits *c, uint32_t grant);

/*
 * Credits to put in the next message (all we owe, at most RDMAE_MAX_CREDITS);
 * what is returned is no longer owed.
 */
uint32_t rdmae_credits_take_grant(struct rdmae_credits *c);

/* A message was sent: one send credit spent. */
void rdmae_credits_on_send(struct rdmae_credits *c);

/*
 * A message arrived carrying the peer's credits_granted and
 * credits_requested: one receive consumed, send credits grow. Returns
 * -EPROTO, changing nothing, when the peer sent without a credit (no posted
 * receive it has been told of: recv_posted <= to_grant) or grants more than
 * our send side can ever hold (more than RDMAE_MAX_CREDITS outstanding).
 */
int rdmae_credits_on_recv(struct rdmae_credits *c, uint32_t granted, uint32_t requested);

/* n receives were (re)posted; they become credits to grant. */
void rdmae_credits_on_repost(struct rdmae_credits *c, uint32_t n);

/*
 * Should an empty message be sent just to grant credits? True when credits
 * are owed and the peer is low: it has fewer than a quarter of its target
 * left (as far as we can tell: to_grant + what it holds is recv_posted), or
 * owes is large. Used when nothing else is queued to send.
 */
bool rdmae_credits_need_grant_msg(const struct rdmae_credits *c);

#endif
