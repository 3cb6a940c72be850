/* SPDX-License-Identifier: MIT */
/*
 * What a process holds, for the test programs' leak checks across repeated
 * migrations (rdmae_mig --repeat): open fds, heap in use, resident and
 * pinned memory, and the RDMA objects the kernel tracks for it.
 *
 * The RDMA objects come from the kernel's own resource tracking (RDMA
 * netlink, what `rdma resource show` prints) rather than from a counter in
 * the library: it sees every MR, QP, CQ, PD and cm_id, whoever made it
 * (the transport, librdmacm, libibverbs). The kernel names the thread that
 * created an object, and drops the name once that thread has exited; so an
 * object counts as ours when it names a thread of this process, and one
 * that names no thread is counted apart ("orphans": made by a thread that
 * has exited, here or in another process). A leaked registration shows in
 * VmPin in any case: the kernel counts every page an MR pins against the
 * process.
 *
 * Header-only: each program in tests/verbs is one source file.
 */
#ifndef RDMAE_TEST_USAGE_H
#define RDMAE_TEST_USAGE_H

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/netlink.h>
#include <malloc.h>
#include <rdma/rdma_netlink.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
/* libasan's (sanitizer/allocator_interface.h, which gcc does not ship). */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

enum { RES_MR, RES_QP, RES_CQ, RES_PD, RES_CM_ID, RES_KINDS };

struct usage {
	long fds;
	uint64_t heap;			/* bytes allocated and not freed */
	uint64_t rss_kib;		/* VmRSS */
	uint64_t size_kib;		/* VmSize */
	long maps;			/* mappings (/proc/self/maps lines) */
	uint64_t pin_kib;		/* VmPin: pages pinned by registrations */
	long res[RES_KINDS];		/* ours; -1 when the kernel would not tell */
	long orphans[RES_KINDS];	/* made by threads that have exited */
};

static const struct {
	const char *name;
	uint16_t cmd, table, entry;
} usage_res[RES_KINDS] = {
	[RES_MR] = { "MRs", RDMA_NLDEV_CMD_RES_MR_GET, RDMA_NLDEV_ATTR_RES_MR,
		     RDMA_NLDEV_ATTR_RES_MR_ENTRY },
	[RES_QP] = { "QPs", RDMA_NLDEV_CMD_RES_QP_GET, RDMA_NLDEV_ATTR_RES_QP,
		     RDMA_NLDEV_ATTR_RES_QP_ENTRY },
	[RES_CQ] = { "CQs", RDMA_NLDEV_CMD_RES_CQ_GET, RDMA_NLDEV_ATTR_RES_CQ,
		     RDMA_NLDEV_ATTR_RES_CQ_ENTRY },
	[RES_PD] = { "PDs", RDMA_NLDEV_CMD_RES_PD_GET, RDMA_NLDEV_ATTR_RES_PD,
		     RDMA_NLDEV_ATTR_RES_PD_ENTRY },
	[RES_CM_ID] = { "cm_ids", RDMA_NLDEV_CMD_RES_CM_ID_GET, RDMA_NLDEV_ATTR_RES_CM_ID,
			RDMA_NLDEV_ATTR_RES_CM_ID_ENTRY },
};

#define USAGE_MAX_DEVS 16

struct usage_walk {
	uint16_t kind;			/* RES_*, or RES_KINDS for the device list */
	long mine, orphans;
	uint32_t devs[USAGE_MAX_DEVS];
	unsigned int ndevs;
};

static bool usage_own_task(uint32_t tid)
{
	char p[64];

	snprintf(p, sizeof(p), "/proc/self/task/%" PRIu32, tid);
	return access(p, F_OK) == 0;
}

/* One resource entry: whose is it? */
static void usage_entry(struct usage_walk *w, const struct nlattr *e)
{
	const struct nlattr *a = (const struct nlattr *)((const char *)e + NLA_HDRLEN);
	int left = (int)e->nla_len - NLA_HDRLEN;
	bool named = false;

	while (left >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= left) {
		uint16_t t = a->nla_type & NLA_TYPE_MASK;

		if (t == RDMA_NLDEV_ATTR_RES_PID && a->nla_len >= NLA_HDRLEN + 4) {
			uint32_t pid;

			memcpy(&pid, (const char *)a + NLA_HDRLEN, 4);
			named = true;
			w->mine += usage_own_task(pid);
		} else if (t == RDMA_NLDEV_ATTR_RES_KERN_NAME) {
			named = true;		/* the kernel's own, e.g. a ULP's */
		}
		left -= NLA_ALIGN(a->nla_len);
		a = (const struct nlattr *)((const char *)a + NLA_ALIGN(a->nla_len));
	}
	if (!named)
		w->orphans++;
}

static void usage_msg(struct usage_walk *w, const struct nlmsghdr *nh)
{
	const struct nlattr *a = (const struct nlattr *)NLMSG_DATA(nh);
	int left = (int)NLMSG_PAYLOAD(nh, 0);

	while (left >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= left) {
		uint16_t t = a->nla_type & NLA_TYPE_MASK;

		if (w->kind == RES_KINDS && t == RDMA_NLDEV_ATTR_DEV_INDEX &&
		    a->nla_len >= NLA_HDRLEN + 4 && w->ndevs < USAGE_MAX_DEVS) {
			memcpy(&w->devs[w->ndevs++], (const char *)a + NLA_HDRLEN, 4);
		} else if (w->kind < RES_KINDS && t == usage_res[w->kind].table) {
			const struct nlattr *e = (const struct nlattr *)((const char *)a + NLA_HDRLEN);
			int eleft = (int)a->nla_len - NLA_HDRLEN;

			while (eleft >= NLA_HDRLEN && e->nla_len >= NLA_HDRLEN &&
			       e->nla_len <= eleft) {
				if ((e->nla_type & NLA_TYPE_MASK) == usage_res[w->kind].entry)
					usage_entry(w, e);
				eleft -= NLA_ALIGN(e->nla_len);
				e = (const struct nlattr *)((const char *)e + NLA_ALIGN(e->nla_len));
			}
		}
		left -= NLA_ALIGN(a->nla_len);
		a = (const struct nlattr *)((const char *)a + NLA_ALIGN(a->nla_len));
	}
}

/* One RDMA netlink dump (of device dev when with_dev), fed to usage_msg. */
static int usage_dump(int fd, uint16_t cmd, bool with_dev, uint32_t dev, struct usage_walk *w)
{
	struct {
		struct nlmsghdr nh;
		struct nlattr a;
		uint32_t dev;
	} req;
	static char buf[65536] __attribute__((aligned(NLMSG_ALIGNTO)));
	static uint32_t seq;

	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = with_dev ? sizeof(req) : NLMSG_LENGTH(0);
	req.nh.nlmsg_type = (uint16_t)RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, cmd);
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.nh.nlmsg_seq = ++seq;
	req.a.nla_len = NLA_HDRLEN + 4;
	req.a.nla_type = RDMA_NLDEV_ATTR_DEV_INDEX;
	req.dev = dev;
	if (send(fd, &req, req.nh.nlmsg_len, 0) < 0)
		return -errno;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		const struct nlmsghdr *nh = (const struct nlmsghdr *)buf;
		int left = (int)n;

		if (n < 0)
			return -errno;
		for (; NLMSG_OK(nh, (unsigned int)left); nh = NLMSG_NEXT(nh, left)) {
			if (nh->nlmsg_seq != req.nh.nlmsg_seq)
				continue;
			if (nh->nlmsg_type == NLMSG_DONE)
				return 0;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(nh);

				return e->error ? e->error : 0;
			}
			usage_msg(w, nh);
		}
	}
}

static void usage_rdma(struct usage *u)
{
	struct usage_walk w = { .kind = RES_KINDS };
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	unsigned int k, d;
	int fd;

	for (k = 0; k < RES_KINDS; k++)
		u->res[k] = u->orphans[k] = -1;
	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_RDMA);
	if (fd < 0)
		return;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || usage_dump(fd, RDMA_NLDEV_CMD_GET,
									 false, 0, &w)) {
		close(fd);
		return;
	}
	for (k = 0; k < RES_KINDS; k++) {
		struct usage_walk r = { .kind = (uint16_t)k };
		int ret = 0;

		for (d = 0; d < w.ndevs && !ret; d++)
			ret = usage_dump(fd, usage_res[k].cmd, true, w.devs[d], &r);
		if (!ret) {
			u->res[k] = r.mine;
			u->orphans[k] = r.orphans;
		}
	}
	close(fd);
}

static long usage_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	const struct dirent *e;
	long n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;		/* not the directory's own */
}

static long usage_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	long n = 0;
	int ch;

	if (!f)
		return -1;
	while ((ch = fgetc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

static uint64_t usage_status_kib(const char *key)
{
	size_t kl = strlen(key);
	unsigned long long v = 0;
	char line[256];
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			sscanf(line + kl + 1, "%llu", &v);
			break;
		}
	fclose(f);
	return v;
}

static void usage_take(struct usage *u)
{
	memset(u, 0, sizeof(*u));
	u->fds = usage_fds();
#if defined(__SANITIZE_ADDRESS__)
	/* ASan owns malloc: glibc's arenas would say nothing. */
	u->heap = __sanitizer_get_current_allocated_bytes();
#else
	{
		struct mallinfo2 mi = mallinfo2();

		u->heap = mi.uordblks + mi.hblkhd;
	}
#endif
	u->rss_kib = usage_status_kib("VmRSS");
	u->size_kib = usage_status_kib("VmSize");
	u->maps = usage_maps();
	u->pin_kib = usage_status_kib("VmPin");
	usage_rdma(u);
}

static void usage_print(const char *who, const char *when, const struct usage *u)
{
	char res[256];
	size_t off = 0;
	unsigned int k;

	res[0] = 0;
	for (k = 0; k < RES_KINDS && off < sizeof(res); k++)
		off += (size_t)snprintf(res + off, sizeof(res) - off, ", %s %ld (+%ld orphans)",
					usage_res[k].name, u->res[k], u->orphans[k]);
	printf("%s: usage %s: fds %ld, heap %" PRIu64 " B, VmRSS %" PRIu64 " KiB, VmSize %" PRIu64
	       " KiB, %ld maps, VmPin %" PRIu64 " KiB%s\n", who, when, u->fds, u->heap, u->rss_kib,
	       u->size_kib, u->maps, u->pin_kib, res);
}

#endif
