/* SPDX-License-Identifier: MIT */
/* rdmae-perf's control messages (rdmae_ctl.h). */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rdmae_ctl.h"

static const char *op_name(uint32_t op)
{
	static const char *const names[] = {
		[RDMAE_CTL_SETUP] = "SETUP", [RDMAE_CTL_HELLO] = "HELLO",
		[RDMAE_CTL_BEGIN] = "BEGIN", [RDMAE_CTL_DATA] = "DATA", [RDMAE_CTL_END] = "END",
		[RDMAE_CTL_RESULT] = "RESULT", [RDMAE_CTL_NEXT] = "NEXT",
		[RDMAE_CTL_QUIT] = "QUIT", [RDMAE_CTL_MIG_RESULT] = "MIG_RESULT",
	};

	return op < sizeof(names) / sizeof(names[0]) && names[op] ? names[op] : "unknown";
}

static void put32(uint8_t *p, uint32_t x)
{
	x = htole32(x);
	memcpy(p, &x, 4);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t x;

	memcpy(&x, p, 4);
	return le32toh(x);
}

size_t rdmae_ctl_size(uint32_t n, const char *text)
{
	/* The text's terminator is written too (not sent): one byte of room for it. */
	return RDMAE_CTL_HDR + (size_t)n * 8 + (text ? strlen(text) + 1 : 0);
}

size_t rdmae_ctl_encode(void *buf, uint32_t op, const uint64_t *v, uint32_t n, const char *text)
{
	uint8_t *p = buf;
	size_t tl = text ? strlen(text) : 0;
	uint32_t i;

	put32(p, RDMAE_CTL_MAGIC);
	put32(p + 4, op);
	put32(p + 8, n);
	put32(p + 12, (uint32_t)tl);
	for (i = 0; i < n; i++) {
		uint64_t x = htole64(v[i]);

		memcpy(p + RDMAE_CTL_HDR + (size_t)i * 8, &x, 8);
	}
	if (tl)
		memcpy(p + RDMAE_CTL_HDR + (size_t)n * 8, text, tl + 1);
	return RDMAE_CTL_HDR + (size_t)n * 8 + tl;
}

int rdmae_ctl_decode(const void *buf, size_t len, struct rdmae_ctl *out)
{
	const uint8_t *p = buf;
	uint32_t i, tl;

	if (len < RDMAE_CTL_HDR)
		return -EPROTO;
	if (get32(p) != RDMAE_CTL_MAGIC)
		return -ENOMSG;
	out->op = get32(p + 4);
	out->n = get32(p + 8);
	tl = get32(p + 12);
	out->len = len;
	if (out->n > RDMAE_CTL_MAX_VALS || RDMAE_CTL_HDR + (size_t)out->n * 8 + tl > len)
		return -EPROTO;
	for (i = 0; i < out->n; i++) {
		uint64_t x;

		memcpy(&x, p + RDMAE_CTL_HDR + (size_t)i * 8, 8);
		out->v[i] = le64toh(x);
	}
	if (tl >= sizeof(out->text))
		tl = sizeof(out->text) - 1;
	memcpy(out->text, p + RDMAE_CTL_HDR + (size_t)out->n * 8, tl);
	out->text[tl] = 0;
	return 0;
}

int rdmae_ctl_send(struct rdmae_conn *c, uint32_t op, const uint64_t *v, uint32_t n,
		   const char *text, struct rdmae_err *err)
{
	uint8_t *buf = malloc(rdmae_ctl_size(n, text));
	size_t len;
	int ret;

	if (!buf)
		return rdmae_err_set(err, -ENOMEM, "control message %s to %s: out of memory",
				     op_name(op), rdmae_conn_peer(c));
	len = rdmae_ctl_encode(buf, op, v, n, text);
	ret = rdmae_send(c, buf, len, err);
	free(buf);
	return ret;
}

int rdmae_ctl_recv(struct rdmae_conn *c, struct rdmae_ctl *out, uint32_t want, int timeout_ms,
		   struct rdmae_err *err)
{
	for (;;) {
		void *buf;
		size_t len;
		int ret = rdmae_recv(c, &buf, &len, timeout_ms, err);

		if (ret)
			return ret;
		ret = rdmae_ctl_decode(buf, len, out);
		free(buf);
		if (ret == -ENOMSG)
			continue;
		if (ret)
			return rdmae_err_set(err, ret, "control message from %s: malformed (%zu "
					     "bytes)", rdmae_conn_peer(c), len);
		if (want && out->op != want)
			return rdmae_err_set(err, -EPROTO, "control message from %s: %s where %s "
					     "was expected%s%s", rdmae_conn_peer(c),
					     op_name(out->op), op_name(want),
					     out->text[0] ? ": " : "", out->text);
		return 0;
	}
}

uint32_t rdmae_ctl_put_remote(uint64_t *v, uint64_t size, const struct rdmae_bufdesc *d,
			      size_t nd)
{
	uint32_t n = 0;
	size_t i;

	v[n++] = size;
	v[n++] = nd;
	for (i = 0; i < nd; i++) {
		v[n++] = d[i].offset;
		v[n++] = d[i].token;
		v[n++] = d[i].length;
	}
	return n;
}

int rdmae_ctl_get_remote(const struct rdmae_ctl *m, struct rdmae_bufdesc *d, size_t cap,
			 struct rdmae_remote *out, struct rdmae_err *err)
{
	uint64_t nd;
	size_t i;

	if (m->n < 2 || (nd = m->v[1]) > cap || m->n < 2 + 3 * nd)
		return rdmae_err_set(err, -EPROTO, "HELLO: %u values do not describe a buffer",
				     m->n);
	for (i = 0; i < nd; i++) {
		d[i].offset = m->v[2 + 3 * i];
		d[i].token = (uint32_t)m->v[3 + 3 * i];
		d[i].length = (uint32_t)m->v[4 + 3 * i];
	}
	out->descs = d;
	out->ndescs = (size_t)nd;
	out->len = m->v[0];
	return 0;
}
