/* SPDX-License-Identifier: MIT */
#include "hostcheck.h"

#include "rdmae_region.h"

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

/* Every mapping that covers [addr, addr + len) must be on huge pages. */
int rdmae_check_hugepages(const void *addr, size_t len, char *why, size_t whylen)
{
	uintptr_t covered = (uintptr_t)addr, hi = covered + len;
	long base = sysconf(_SC_PAGESIZE);
	long huge = gethugepagesize();

	if (huge <= 0) {
		snprintf(why, whylen, "huge pages asked for, but this host has none configured");
		return -ENOMEM;
	}
	while (covered < hi) {
		uintptr_t end = 0;
		size_t ps = rdmae_mapping_page_size((const void *)covered, &end);

		if (!ps) {
			snprintf(why, whylen, "%#" PRIxPTR " is not mapped", covered);
			return -EFAULT;
		}
		if (ps <= (size_t)base) {
			snprintf(why, whylen, "mapping at %#" PRIxPTR " is on %zu KiB pages, not on "
				 "huge pages (%ld KiB)", covered, ps / 1024, huge / 1024);
			return -EINVAL;
		}
		covered = end;
	}
	return 0;
}
