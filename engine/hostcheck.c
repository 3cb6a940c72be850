/* SPDX-License-Identifier: MIT */
#include "hostcheck.h"

#include <errno.h>
#include <hugetlbfs.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define CAP_IPC_LOCK_BIT 14

static bool has_cap_ipc_lock(void)
{
	unsigned long long eff = 0;
	bool found = false;
	char line[256];
	FILE *f;

	f = fopen("/proc/self/status", "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "CapEff: %llx", &eff) == 1) {
			found = true;
			break;
		}
	}
	fclose(f);
	return found && (eff >> CAP_IPC_LOCK_BIT) & 1;
}

int rdmae_check_memlock(uint64_t bytes, char *why, size_t whylen)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl)) {
		int e = errno;

		snprintf(why, whylen, "getrlimit(RLIMIT_MEMLOCK): %s", strerror(e));
		return -e;
	}
	if (rl.rlim_cur == RLIM_INFINITY || (uint64_t)rl.rlim_cur >= bytes)
		return 0;
	if (has_cap_ipc_lock())
		return 0;
	snprintf(why, whylen,
		 "memlock limit %" PRIu64 " bytes is below the %" PRIu64
		 " needed to pin every block (ulimit -l, or CAP_IPC_LOCK)",
		 (uint64_t)rl.rlim_cur, bytes);
	return -ENOMEM;
}

/*
 * Walk /proc/self/smaps: the mappings are listed in address order, each
 * header line followed by its fields, KernelPageSize among them.
 */
int rdmae_check_hugepages(const void *addr, size_t len, char *why, size_t whylen)
{
	uintptr_t lo = (uintptr_t)addr, hi = lo + len, covered = lo;
	uintptr_t vlo = 0, vhi = 0;
	long base = sysconf(_SC_PAGESIZE);
	long huge = gethugepagesize();
	bool in_range = false, line_start = true;
	unsigned long kps;
	char line[1024];
	int rc = 0;
	FILE *f;

	if (huge <= 0) {
		snprintf(why, whylen, "huge pages asked for, but this host has none configured");
		return -ENOMEM;
	}
	f = fopen("/proc/self/smaps", "re");
	if (!f) {
		int e = errno;

		snprintf(why, whylen, "open /proc/self/smaps: %s", strerror(e));
		return -e;
	}
	while (covered < hi && fgets(line, sizeof(line), f)) {
		/* The tail of a line longer than the buffer (a long path) is not a line. */
		bool at_start = line_start;
		unsigned long a, b;
		int n = 0;

		line_start = strchr(line, '\n') != NULL;
		if (!at_start)
			continue;
		if (sscanf(line, "%lx-%lx %n", &a, &b, &n) == 2 && n > 0) {
			vlo = a;
			vhi = b;
			in_range = vhi > covered && vlo < hi;
			if (in_range && vlo > covered) {
				snprintf(why, whylen, "%#" PRIxPTR " is not mapped", covered);
				rc = -EFAULT;
				goto out;
			}
			continue;
		}
		if (!in_range || sscanf(line, "KernelPageSize: %lu kB", &kps) != 1)
			continue;
		if (kps * 1024 <= (unsigned long)base) {
			snprintf(why, whylen,
				 "mapping %#" PRIxPTR "-%#" PRIxPTR
				 " is on %lu KiB pages, not on huge pages (%ld KiB)",
				 vlo, vhi, kps, huge / 1024);
			rc = -EINVAL;
			goto out;
		}
		covered = vhi;
		in_range = false;
	}
	if (covered < hi) {
		snprintf(why, whylen, "%#" PRIxPTR " is not mapped", covered);
		rc = -EFAULT;
	}
out:
	fclose(f);
	return rc;
}
