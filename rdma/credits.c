/* SPDX-License-Identifier: MIT */
#include "rdmae_credits.h"

#include <errno.h>

#include "rdmae_wire.h"

void rdmae_credits_init(struct rdmae_credits *c, uint32_t send, uint32_t recv_posted,
			uint32_t recv_target, uint32_t peer_target)
{
	c->send = send;
	c->recv_posted = recv_posted;
	c->recv_target = recv_target;
	/* The negotiate response already announced the receives posted so far. */
	c->to_grant = 0;
	c->peer_target = peer_target;
}

bool rdmae_credits_can_send(const struct rdmae_credits *c, uint32_t grant)
{
	if (c->send == 0)
		return false;
	/*
	 * With one credit left, a message that grants nothing could leave the
	 * peer without credits to send us the grant we would need to go on.
	 */
	return c->send > 1 || grant > 0;
}

uint32_t rdmae_credits_take_grant(struct rdmae_credits *c)
{
	uint32_t g = c->to_grant;

	/* credits_granted is 16 bits on the wire and the peer caps its total. */
	if (g > RDMAE_MAX_CREDITS)
		g = RDMAE_MAX_CREDITS;
	c->to_grant -= g;
	return g;
}

void rdmae_credits_on_send(struct rdmae_credits *c)
{
	/* Calling this with no credit is a caller bug; do not make it worse by wrapping. */
	if (c->send > 0)
		c->send--;
}

int rdmae_credits_on_recv(struct rdmae_credits *c, uint32_t granted, uint32_t requested)
{
	/*
	 * Receives still owed to the peer as grants were never announced, so a
	 * message arriving when only those are left was sent without a credit.
	 */
	if (c->recv_posted <= c->to_grant)
		return -EPROTO;
	if ((uint64_t)c->send + granted > RDMAE_MAX_CREDITS)
		return -EPROTO;
	c->recv_posted--;
	c->send += granted;
	c->peer_target = requested;
	return 0;
}

void rdmae_credits_on_repost(struct rdmae_credits *c, uint32_t n)
{
	c->recv_posted += n;
	c->to_grant += n;
}

bool rdmae_credits_need_grant_msg(const struct rdmae_credits *c)
{
	uint32_t peer_view;

	if (c->to_grant == 0)
		return false;
	peer_view = c->recv_posted > c->to_grant ? c->recv_posted - c->to_grant : 0;
	return peer_view < c->recv_target / 4 || c->to_grant >= c->recv_target / 2;
}
