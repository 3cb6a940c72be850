/* SPDX-License-Identifier: MIT */
/* rdmae-perf bw and lat: server and client ends (rdmae_peer.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "rdmae_region.h"
#include "rdmae_peer.h"

/* A client asking for more than this is refused: the server's memory is not for the asking. */
#define MAX_BUF (64ull << 30)
#define SETUP_WAIT_MS 30000
#define NEXT_ACCEPT_MS 120000

/* One measurement: count or echo DATA until END, then report. */
static int serve_test(struct rdmae_conn *c, const struct rdmae_ctl *begin, struct rdmae_err *err)
{
	uint64_t test = begin->n > 0 ? begin->v[0] : 0, v[3], msgs = 0, bytes = 0;
	bool data = test == RDMAE_TEST_SEND || test == RDMAE_TEST_PING;
	double cpu0 = rdmae_perf_cpu();
	struct rdmae_ctl m;

	for (;;) {
		void *buf;
		size_t len;
		int ret = rdmae_recv(c, &buf, &len, -1, err);

		if (ret)
			return ret;
		ret = rdmae_ctl_decode(buf, len, &m);
		if (!ret && m.op == RDMAE_CTL_DATA && data) {
			msgs++;
			bytes += len;
			if (test == RDMAE_TEST_PING)
				ret = rdmae_send(c, buf, len, err);
			free(buf);
			if (ret)
				return ret;
			continue;
		}
		free(buf);
		if (!ret && m.op == RDMAE_CTL_END)
			break;
		return rdmae_err_set(err, -EPROTO, "measurement from %s: unexpected message "
				     "(%zu bytes) before END", rdmae_conn_peer(c), len);
	}
	v[0] = (uint64_t)((rdmae_perf_cpu() - cpu0) * 1e9);
	v[1] = msgs;
	v[2] = bytes;
	return rdmae_ctl_send(c, RDMAE_CTL_RESULT, v, 3, NULL, err);
}

static int serve_conn(struct rdmae_conn *c, bool *more, struct rdmae_err *err)
{
	struct rdmae_region_opts ro = { .mode = RDMAE_REG_PIN_ALL };
	struct rdmae_bufdesc d[RDMAE_CTL_MAX_DESCS];
	struct rdmae_region *r = NULL;
	uint64_t size, v[RDMAE_CTL_MAX_VALS];
	uint8_t *buf = MAP_FAILED;
	struct rdmae_ctl m;
	size_t nd = 0;
	uint32_t flags, n;
	int ret;

	ret = rdmae_ctl_recv(c, &m, RDMAE_CTL_SETUP, SETUP_WAIT_MS, err);
	if (ret)
		return ret;
	size = m.n >= 2 ? m.v[0] : 0;
	flags = m.n >= 2 ? (uint32_t)m.v[1] : 0;
	if (!size || size > MAX_BUF)
		return rdmae_err_set(err, -EINVAL, "SETUP from %s: buffer of %" PRIu64 " bytes "
				     "(1..%llu)", rdmae_conn_peer(c), size, MAX_BUF);
	buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return rdmae_err_set(err, -ENOMEM, "buffer of %" PRIu64 " MiB for %s: %s",
				     size >> 20, rdmae_conn_peer(c), strerror(errno));
	/* Real bytes for READs to fetch; and every page is faulted in before any timing. */
	memset(buf, 0x5a, size);
	/* Remote access exactly as the client's tests need, no more. */
	ro.remote_write = (flags & RDMAE_SETUP_REMOTE_WRITE) != 0;
	ro.remote_read = (flags & RDMAE_SETUP_REMOTE_READ) != 0;
	if (ro.remote_write || ro.remote_read) {
		ret = rdmae_region_create(&r, c, buf, size, &ro, err);
		if (!ret)
			ret = rdmae_region_bufdescs(r, d, RDMAE_CTL_MAX_DESCS, &nd, err);
		if (ret)
			goto out;
	}
	n = rdmae_ctl_put_remote(v, size, d, nd);
	ret = rdmae_ctl_send(c, RDMAE_CTL_HELLO, v, n, NULL, err);
	while (!ret) {
		ret = rdmae_ctl_recv(c, &m, 0, -1, err);
		if (ret)
			break;
		if (m.op == RDMAE_CTL_BEGIN) {
			ret = serve_test(c, &m, err);
		} else if (m.op == RDMAE_CTL_NEXT || m.op == RDMAE_CTL_QUIT) {
			*more = m.op == RDMAE_CTL_NEXT;
			break;
		} else {
			ret = rdmae_err_set(err, -EPROTO, "control message %u from %s out of place",
					    m.op, rdmae_conn_peer(c));
		}
	}
out:
	rdmae_region_destroy(r);
	munmap(buf, size);
	return ret;
}

int rdmae_perf_serve(const struct rdmae_perf_net *n, const char *what)
{
	struct rdmae_conn_opts o;
	struct rdmae_listener *l;
	struct rdmae_err err = { 0 };
	bool more = true;
	unsigned int served = 0;
	int ret;

	rdmae_perf_conn_opts(n, &o);
	/* The client chooses: as many lanes and as long WRITEs as it asks for. */
	o.lanes = RDMAE_MAX_LANES;
	o.rw_size = RDMAE_MAX_RW_SIZE;
	ret = rdmae_listen(&l, n->addr, n->port, &o, &err);
	if (ret) {
		fprintf(stderr, "rdmae-perf %s server: %s\n", what, err.msg);
		return 1;
	}
	printf("rdmae-perf %s server: listening on %s:%d\n", what, n->addr,
	       rdmae_listener_port(l));
	fflush(stdout);
	while (more && !ret) {
		struct rdmae_conn *c;

		more = false;
		/* The first client may take its time; the next one follows at once. */
		ret = rdmae_accept(l, &c, served ? NEXT_ACCEPT_MS : -1, &err);
		if (ret)
			break;
		ret = serve_conn(c, &more, &err);
		rdmae_conn_destroy(c);
		served++;
	}
	if (ret)
		fprintf(stderr, "rdmae-perf %s server: %s\n", what, err.msg);
	else
		printf("rdmae-perf %s server: done, %u connection(s)\n", what, served);
	rdmae_listener_destroy(l);
	return ret ? 1 : 0;
}

int rdmae_perf_peer_open(struct rdmae_perf_peer *p, const struct rdmae_perf_net *n,
			 const struct rdmae_conn_opts *o, uint64_t size, uint32_t flags,
			 struct rdmae_err *err)
{
	uint64_t v[2] = { size, flags };
	struct rdmae_ctl m;
	int ret;

	memset(p, 0, sizeof(*p));
	ret = rdmae_connect(&p->conn, n->addr, n->port, o, err);
	if (ret)
		return ret;
	ret = rdmae_ctl_send(p->conn, RDMAE_CTL_SETUP, v, 2, NULL, err);
	if (!ret)
		ret = rdmae_ctl_recv(p->conn, &m, RDMAE_CTL_HELLO, SETUP_WAIT_MS, err);
	if (!ret)
		ret = rdmae_ctl_get_remote(&m, p->descs, RDMAE_CTL_MAX_DESCS, &p->remote, err);
	if (!ret && p->remote.len < size)
		ret = rdmae_err_set(err, -EPROTO, "HELLO from %s: a buffer of %" PRIu64 " bytes "
				    "where %" PRIu64 " were asked for", rdmae_conn_peer(p->conn),
				    p->remote.len, size);
	if (ret) {
		rdmae_conn_destroy(p->conn);
		p->conn = NULL;
	}
	return ret;
}

int rdmae_perf_peer_close(struct rdmae_perf_peer *p, bool last, struct rdmae_err *err)
{
	int ret = 0;

	if (!p->conn)
		return 0;
	ret = rdmae_ctl_send(p->conn, last ? RDMAE_CTL_QUIT : RDMAE_CTL_NEXT, NULL, 0, NULL, err);
	rdmae_conn_destroy(p->conn);
	p->conn = NULL;
	return ret;
}

int rdmae_perf_begin(struct rdmae_perf_peer *p, enum rdmae_ctl_test t, uint64_t size,
		     struct rdmae_err *err)
{
	uint64_t v[2] = { (uint64_t)t, size };

	return rdmae_ctl_send(p->conn, RDMAE_CTL_BEGIN, v, 2, NULL, err);
}

int rdmae_perf_end(struct rdmae_perf_peer *p, struct rdmae_perf_srv *out, struct rdmae_err *err)
{
	struct rdmae_ctl m;
	int ret;

	ret = rdmae_ctl_send(p->conn, RDMAE_CTL_END, NULL, 0, NULL, err);
	if (!ret)
		ret = rdmae_ctl_recv(p->conn, &m, RDMAE_CTL_RESULT, 60000, err);
	if (ret)
		return ret;
	if (m.n < 3)
		return rdmae_err_set(err, -EPROTO, "RESULT from %s: %u values",
				     rdmae_conn_peer(p->conn), m.n);
	out->cpu_s = (double)m.v[0] / 1e9;
	out->msgs = m.v[1];
	out->bytes = m.v[2];
	return 0;
}
