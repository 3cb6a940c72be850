/*
 * rdmae-lguest: the workloads of the Linux test guest (tests/guest/linux),
 * and the network client the bench runs against it. One static binary, so
 * it runs in the guest's tiny initramfs and in the bench VMs alike.
 *
 *   rdmae-lguest mem MIB HOT_KIB
 *       Fills MIB MiB with a pattern that describes itself (each page holds
 *       its index and generation; a table of generations sits in the same
 *       RAM), then for ever rewrites a HOT_KIB hot set and sweeps over every
 *       page checking it. Prints "mem pass N BAD ..." after a sweep that
 *       found a difference, "mem pass N OK ..." after a good one (at most one
 *       a second): the second line printed after a migration comes from a
 *       sweep that ran wholly on the destination.
 *   rdmae-lguest disk DEV BLOCKS
 *       For ever: writes BLOCKS 4 KiB blocks of DEV with O_DIRECT, stamped
 *       with the pass number, flushes (fdatasync), then reads all of them
 *       back with O_DIRECT and checks them. Prints "disk pass N OK ..." or
 *       "disk pass N BAD ...". O_DIRECT: the page cache cannot hide a stale
 *       disk, and virtio-blk has requests in flight while the guest moves.
 *   rdmae-lguest echo PORT
 *       Echo server on UDP and TCP PORT (one datagram or one line at a time).
 *   rdmae-lguest klog
 *       Prints the kernel's messages of level warning or worse, as they
 *       come, as "klog: <L>[SECONDS] MESSAGE". It sleeps in read() on
 *       /dev/kmsg: a loop that runs dmesg every few seconds costs a nested
 *       guest a fork, an exec and a parse of the whole log each time, CPU
 *       the self-checking memory workload (at the lowest priority) then
 *       lacks.
 *   rdmae-lguest netclient HOST PORT STOPFILE
 *       Sends a UDP request every 200 ms (each waits up to 200 ms for its
 *       answer; a later answer counts too) and a TCP line once a second on one connection opened at the
 *       start, until STOPFILE exists; then prints one summary line:
 *       "netclient: udp sent S answered A lost L longest-gap G ms; tcp sent T
 *       answered U unanswered N conn ok|broken". The TCP connection is kept
 *       across a migration: it is the guest's TCP state that has to survive.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
/* A request rate a nested-TCG guest answers while its workloads run. */
#define UDP_INTERVAL_MS 200u
#define DISK_MAGIC 0x726d6165646b7631ull /* "rmaedkv1" */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static uint64_t word_of(uint64_t page, uint64_t gen, uint64_t i)
{
	return mix(page * 0x9e3779b97f4a7c15ull + gen) + i * 0x100000001b3ull;
}

static void page_fill(uint64_t *p, uint64_t page, uint64_t gen)
{
	p[0] = page;
	p[1] = gen;
	for (uint64_t i = 2; i < WORDS; i++)
		p[i] = word_of(page, gen, i);
}

/* Returns the first bad word, or -1. */
static long page_check(const uint64_t *p, uint64_t page, uint64_t gen)
{
	if (p[0] != page)
		return 0;
	if (p[1] != gen)
		return 1;
	for (uint64_t i = 2; i < WORDS; i++)
		if (p[i] != word_of(page, gen, i))
			return (long)i;
	return -1;
}

static int do_mem(unsigned long mib, unsigned long hot_kib)
{
	uint64_t pages = (uint64_t)mib * 256u, hot = hot_kib / 4u, hp = 0, writes = 0;
	uint64_t *mem, *gen, next_print = 0;
	unsigned long pass;

	if (pages == 0 || hot > pages) {
		fprintf(stderr, "rdmae-lguest mem: bad size %lu MiB / hot %lu KiB\n", mib, hot_kib);
		return 2;
	}
	/* This loop never sleeps: at the lowest priority the echo server's
	 * wakeups preempt it (a nested-TCG guest has little CPU to share). */
	if (setpriority(PRIO_PROCESS, 0, 19))
		fprintf(stderr, "rdmae-lguest mem: setpriority 19: %s\n", strerror(errno));
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "rdmae-lguest mem: cannot map %lu MiB: %s\n", mib, strerror(errno));
		return 1;
	}
	gen = calloc(pages, sizeof(*gen));
	if (!gen) {
		fprintf(stderr, "rdmae-lguest mem: no memory for %" PRIu64 " page generations\n", pages);
		munmap(mem, pages * PAGE);
		return 1;
	}
	for (uint64_t p = 0; p < pages; p++) {
		gen[p] = 1;
		page_fill(mem + p * WORDS, p, 1);
	}
	printf("mem filled %" PRIu64 " pages, hot %" PRIu64 " pages\n", pages, hot);
	fflush(stdout);
	for (pass = 1;; pass++) {
		uint64_t bad = 0, first = 0;
		long w = -1;
		uint64_t t0 = now_ms();

		for (uint64_t p = 0; p < pages; p++) {
			long b = page_check(mem + p * WORDS, p, gen[p]);

			if (b >= 0) {
				if (!bad) {
					first = p;
					w = b;
				}
				bad++;
			}
			/* One hot page rewritten per 8 checked: the guest keeps
			 * dirtying memory while it verifies. */
			if (hot && (p & 7u) == 0) {
				gen[hp]++;
				page_fill(mem + hp * WORDS, hp, gen[hp]);
				hp = (hp + 1) % hot;
				writes++;
			}
		}
		/* A bad pass is always reported; good ones at most once a
		 * second, so a fast guest does not flood its serial console. */
		if (bad) {
			printf("mem pass %lu BAD: %" PRIu64 " pages differ, first page %" PRIu64
			       " word %ld (gen %" PRIu64 ")\n", pass, bad, first, w, gen[first]);
		} else if (now_ms() >= next_print) {
			printf("mem pass %lu OK pages %" PRIu64 " hot-writes %" PRIu64 " ms %" PRIu64 "\n",
			       pass, pages, writes, now_ms() - t0);
			next_print = now_ms() + 1000;
		}
		fflush(stdout);
	}
}

static void block_fill(uint64_t *b, uint64_t pass, uint64_t blk)
{
	b[0] = DISK_MAGIC;
	b[1] = pass;
	b[2] = blk;
	for (uint64_t i = 3; i < WORDS; i++)
		b[i] = word_of(blk, pass, i);
}

static int do_disk(const char *dev, unsigned long blocks)
{
	uint64_t *buf, want[WORDS];
	int fd;

	if (posix_memalign((void **)&buf, PAGE, PAGE)) {
		fprintf(stderr, "rdmae-lguest disk: no memory\n");
		return 1;
	}
	fd = open(dev, O_RDWR | O_DIRECT);
	if (fd < 0) {
		fprintf(stderr, "rdmae-lguest disk: open %s: %s\n", dev, strerror(errno));
		return 1;
	}
	for (uint64_t pass = 1;; pass++) {
		uint64_t bad = 0, first = 0, t0 = now_ms();

		for (uint64_t b = 0; b < blocks; b++) {
			block_fill(buf, pass, b);
			if (pwrite(fd, buf, PAGE, (off_t)(b * PAGE)) != (ssize_t)PAGE) {
				printf("disk pass %" PRIu64 " BAD: write block %" PRIu64 ": %s\n",
				       pass, b, strerror(errno));
				fflush(stdout);
				return 1;
			}
		}
		if (fdatasync(fd)) {
			printf("disk pass %" PRIu64 " BAD: fdatasync: %s\n", pass, strerror(errno));
			fflush(stdout);
			return 1;
		}
		for (uint64_t b = 0; b < blocks; b++) {
			memset(buf, 0, PAGE);
			if (pread(fd, buf, PAGE, (off_t)(b * PAGE)) != (ssize_t)PAGE) {
				printf("disk pass %" PRIu64 " BAD: read block %" PRIu64 ": %s\n",
				       pass, b, strerror(errno));
				fflush(stdout);
				return 1;
			}
			block_fill(want, pass, b);
			if (memcmp(buf, want, PAGE) != 0) {
				if (!bad)
					first = b;
				bad++;
			}
		}
		if (bad)
			printf("disk pass %" PRIu64 " BAD: %" PRIu64 " of %lu blocks read back wrong, first %"
			       PRIu64 "\n", pass, bad, blocks, first);
		else
			printf("disk pass %" PRIu64 " OK blocks %lu written+flushed+read (O_DIRECT) ms %" PRIu64 "\n",
			       pass, blocks, now_ms() - t0);
		fflush(stdout);
		sleep(1);
	}
}

static int listen_on(int type, unsigned port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1, fd = socket(AF_INET, type, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || (type == SOCK_STREAM && listen(fd, 8))) {
		close(fd);
		return -1;
	}
	return fd;
}

#define MAX_CONNS 8
#define ECHO_NICE (-10)
#define UDP_DRAIN_MAX 64

static int do_echo(unsigned port)
{
	struct pollfd pf[2 + MAX_CONNS];
	uint64_t udp = 0, tcp = 0, udp_said = 0, tcp_said = 0, next_report = 0;
	int n = 2;

	signal(SIGPIPE, SIG_IGN);
	/*
	 * Above the disk workload, which otherwise takes half of a nested
	 * guest's CPU: requests then queue faster than they are answered,
	 * and a probe's datagram waits behind seconds of backlog.
	 */
	if (setpriority(PRIO_PROCESS, 0, ECHO_NICE))
		fprintf(stderr, "rdmae-lguest echo: setpriority %d: %s\n", ECHO_NICE, strerror(errno));
	pf[0].fd = listen_on(SOCK_DGRAM, port);
	pf[1].fd = listen_on(SOCK_STREAM, port);
	if (pf[0].fd < 0 || pf[1].fd < 0) {
		fprintf(stderr, "rdmae-lguest echo: cannot listen on port %u: %s\n", port, strerror(errno));
		return 1;
	}
	pf[0].events = pf[1].events = POLLIN;
	printf("echo listening on udp and tcp port %u\n", port);
	fflush(stdout);
	for (;;) {
		char buf[512];
		uint64_t t = now_ms();

		/* What arrived, every 5 s while requests come: the guest's own
		 * view when the network looks dead from outside. */
		if (t >= next_report && (udp != udp_said || tcp != tcp_said)) {
			printf("echo served udp %" PRIu64 " tcp %" PRIu64 "\n", udp, tcp);
			udp_said = udp;
			tcp_said = tcp;
			next_report = t + 5000;
		}
		if (poll(pf, (nfds_t)n, 1000) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		/* Every datagram queued, not one per wakeup: each wakeup costs a nested guest dearly. */
		for (int k = 0; (pf[0].revents & POLLIN) && k < UDP_DRAIN_MAX; k++) {
			struct sockaddr_in from;
			socklen_t fl = sizeof(from);
			ssize_t r = recvfrom(pf[0].fd, buf, sizeof(buf), MSG_DONTWAIT,
					     (struct sockaddr *)&from, &fl);

			if (r < 0)
				break;
			if (sendto(pf[0].fd, buf, (size_t)r, 0, (struct sockaddr *)&from, fl) == r)
				udp++;
		}
		if ((pf[1].revents & POLLIN) && n < 2 + MAX_CONNS) {
			int c = accept(pf[1].fd, NULL, NULL);

			if (c >= 0) {
				pf[n].fd = c;
				pf[n].events = POLLIN;
				pf[n].revents = 0;
				n++;
			}
		}
		for (int i = 2; i < n; i++) {
			ssize_t r;

			if (!pf[i].revents)
				continue;
			r = read(pf[i].fd, buf, sizeof(buf));
			if (r <= 0 || write(pf[i].fd, buf, (size_t)r) != r) {
				close(pf[i].fd);
				pf[i] = pf[--n];
				i--;
				continue;
			}
			tcp++;
		}
	}
}

static int do_netclient(const char *host, unsigned port, const char *stopfile)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	uint64_t usent = 0, uans = 0, tsent = 0, tans = 0, last_ok, gap = 0, next_tcp;
	int u, t, tcp_ok = 1;
	char line[64], got[256];
	size_t have = 0;
	struct stat st;

	signal(SIGPIPE, SIG_IGN);
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
		fprintf(stderr, "rdmae-lguest netclient: bad IPv4 address '%s'\n", host);
		return 2;
	}
	u = socket(AF_INET, SOCK_DGRAM, 0);
	t = socket(AF_INET, SOCK_STREAM, 0);
	if (u < 0 || t < 0 || connect(u, (struct sockaddr *)&a, sizeof(a)) ||
	    connect(t, (struct sockaddr *)&a, sizeof(a))) {
		fprintf(stderr, "rdmae-lguest netclient: connect to %s:%u: %s\n", host, port, strerror(errno));
		return 1;
	}
	last_ok = next_tcp = now_ms();
	while (stat(stopfile, &st) != 0) {
		uint64_t t0 = now_ms(), seq = ++usent;
		struct pollfd pf[2] = { { .fd = u, .events = POLLIN }, { .fd = t, .events = POLLIN } };
		int answered = 0;

		snprintf(line, sizeof(line), "udp %" PRIu64 "\n", seq);
		send(u, line, strlen(line), 0);
		if (tcp_ok && t0 >= next_tcp) {
			int l = snprintf(line, sizeof(line), "tcp %" PRIu64 "\n", ++tsent);

			if (send(t, line, (size_t)l, 0) != l)
				tcp_ok = 0;
			next_tcp = t0 + 1000;
		}
		/* Answers to earlier requests count too: a late answer was not lost. */
		while (now_ms() < t0 + UDP_INTERVAL_MS) {
			int r = poll(pf, 2, (int)(t0 + UDP_INTERVAL_MS - now_ms()));

			if (r <= 0)
				break;
			if (pf[0].revents & POLLIN) {
				char b[64];
				ssize_t n = recv(u, b, sizeof(b) - 1, MSG_DONTWAIT);

				if (n > 0) {
					uans++;
					answered = 1;
				}
			}
			if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t n = recv(t, got + have, sizeof(got) - 1 - have, MSG_DONTWAIT);

				if (n <= 0) {
					tcp_ok = 0;
					pf[1].fd = -1;
					continue;
				}
				have += (size_t)n;
				for (char *nl; (nl = memchr(got, '\n', have));) {
					size_t k = (size_t)(nl - got) + 1;

					tans++;
					memmove(got, got + k, have - k);
					have -= k;
				}
				if (have == sizeof(got) - 1)
					have = 0;
			}
		}
		if (answered) {
			if (t0 - last_ok > gap)
				gap = t0 - last_ok;
			last_ok = t0;
		}
		while (now_ms() < t0 + UDP_INTERVAL_MS)
			usleep(1000);
	}
	printf("netclient: udp sent %" PRIu64 " answered %" PRIu64 " lost %" PRIu64
	       " longest-gap %" PRIu64 " ms; tcp sent %" PRIu64 " answered %" PRIu64
	       " unanswered %" PRIu64 " conn %s\n",
	       usent, uans, usent > uans ? usent - uans : 0, gap, tsent, tans,
	       tsent > tans ? tsent - tans : 0, tcp_ok ? "ok" : "broken");
	return 0;
}

/* Level 0-4 (emerg .. warning): what the bench checks for. */
#define KLOG_WORST 4

static int do_klog(void)
{
	char rec[8192];
	int fd = open("/dev/kmsg", O_RDONLY);

	if (fd < 0) {
		fprintf(stderr, "rdmae-lguest klog: open /dev/kmsg: %s\n", strerror(errno));
		return 1;
	}
	for (;;) {
		/* One record per read: "PRI,SEQ,USEC,FLAGS;TEXT\n" then key=value lines. */
		ssize_t r = read(fd, rec, sizeof(rec) - 1);
		unsigned long pri, usec;
		char *text, *end;

		if (r < 0) {
			/* Records overwritten before they were read: go on with the next. */
			if (errno == EPIPE || errno == EINTR)
				continue;
			fprintf(stderr, "rdmae-lguest klog: read /dev/kmsg: %s\n", strerror(errno));
			return 1;
		}
		if (r == 0)
			continue;
		rec[r] = '\0';
		text = strchr(rec, ';');
		if (!text || sscanf(rec, "%lu,%*u,%lu", &pri, &usec) != 2)
			continue;
		text++;
		end = strchr(text, '\n');
		if (end)
			*end = '\0';
		if ((pri & 7u) <= KLOG_WORST)
			printf("klog: <%lu>[%5lu.%06lu] %s\n", pri & 7u, usec / 1000000u, usec % 1000000u,
			       text);
	}
}

static unsigned long num(const char *s, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end) {
		fprintf(stderr, "rdmae-lguest: %s: not a number: '%s'\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 4 && !strcmp(argv[1], "mem"))
		return do_mem(num(argv[2], "MIB"), num(argv[3], "HOT_KIB"));
	if (argc == 4 && !strcmp(argv[1], "disk"))
		return do_disk(argv[2], num(argv[3], "BLOCKS"));
	if (argc == 3 && !strcmp(argv[1], "echo"))
		return do_echo((unsigned)num(argv[2], "PORT"));
	if (argc == 2 && !strcmp(argv[1], "klog"))
		return do_klog();
	if (argc == 5 && !strcmp(argv[1], "netclient"))
		return do_netclient(argv[2], (unsigned)num(argv[3], "PORT"), argv[4]);
	fprintf(stderr, "usage: rdmae-lguest mem MIB HOT_KIB | disk DEV BLOCKS | echo PORT |"
			" klog | netclient HOST PORT STOPFILE\n");
	return 2;
}
