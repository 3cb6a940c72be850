/*
 * rdmae-qmp: a minimal QMP client for the end-to-end tests. The bench VMs
 * have busybox, whose nc cannot open a unix socket, and no python.
 *
 *   rdmae-qmp [-t SECONDS] [-e] SOCKET COMMAND...
 *
 * Connects to QEMU's QMP unix socket (retrying until it exists, within the
 * timeout), negotiates capabilities, then sends each COMMAND in turn and
 * prints its response, one line each, on stdout. A COMMAND is
 *   {"execute": ...}   a JSON object, sent as is;
 *   NAME               {"execute":"NAME"};
 *   hmp:TEXT           human-monitor-command; prints the monitor's output
 *                      (unescaped) instead of the JSON response.
 * Events are skipped (printed on stderr with -e).
 *
 * Exit status: 0 every command returned, 1 one of them returned an error
 * (the rest are not sent), 2 usage, connection or timeout (default 60 s).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES ((size_t)1024 * 1024)

struct conn {
	int fd;
	char *buf;
	size_t len;
	double deadline;
	int show_events;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_unix(const char *path, double deadline)
{
	struct sockaddr_un sa;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "rdmae-qmp: socket path too long: %s\n", path);
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			perror("rdmae-qmp: socket");
			return -1;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		if ((errno != ENOENT && errno != ECONNREFUSED) || now_s() > deadline) {
			fprintf(stderr, "rdmae-qmp: connect %s: %s\n", path, strerror(errno));
			return -1;
		}
		usleep(100000);
	}
}

/* Reads one line (without its \r\n) into a malloc'd string; NULL on EOF,
 * error or timeout (a message says which). */
static char *read_line(struct conn *c)
{
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		double left;
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - c->buf);
			char *line = malloc(l + 1);

			if (!line) {
				fprintf(stderr, "rdmae-qmp: out of memory\n");
				return NULL;
			}
			memcpy(line, c->buf, l);
			line[l] = '\0';
			if (l > 0 && line[l - 1] == '\r')
				line[l - 1] = '\0';
			c->len -= l + 1;
			memmove(c->buf, nl + 1, c->len);
			return line;
		}
		if (c->len >= LINE_MAX_BYTES) {
			fprintf(stderr, "rdmae-qmp: line longer than %zu bytes\n", LINE_MAX_BYTES);
			return NULL;
		}
		left = c->deadline - now_s();
		if (left <= 0) {
			fprintf(stderr, "rdmae-qmp: timed out waiting for QEMU\n");
			return NULL;
		}
		n = poll(&pfd, 1, (int)(left * 1000) + 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("rdmae-qmp: poll");
			return NULL;
		}
		if (n == 0)
			continue;
		n = read(c->fd, c->buf + c->len, LINE_MAX_BYTES - c->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "rdmae-qmp: QEMU closed the connection%s%s\n",
				n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
			return NULL;
		}
		c->len += (size_t)n;
	}
}

static int send_all(int fd, const char *s, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			perror("rdmae-qmp: write");
			return -1;
		}
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

static int starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Waits for the response to the last command; returns it (malloc'd) or NULL. */
static char *read_response(struct conn *c)
{
	for (;;) {
		char *line = read_line(c);

		if (!line)
			return NULL;
		if (starts_with(line, "{\"return\"") || starts_with(line, "{\"error\""))
			return line;
		if (c->show_events)
			fprintf(stderr, "%s\n", line);
		free(line);
	}
}

/* Appends s to the JSON string being built in out (size cap), escaped. */
static size_t json_escape(char *out, size_t cap, size_t at, const char *s)
{
	for (; *s && at + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			out[at++] = '\\';
			out[at++] = (char)ch;
		} else if (ch < 0x20) {
			at += (size_t)snprintf(out + at, cap - at, "\\u%04x", ch);
		} else {
			out[at++] = (char)ch;
		}
	}
	out[at] = '\0';
	return at;
}

/* Prints the "return" string of a human-monitor-command response, unescaped. */
static void print_hmp_output(const char *resp)
{
	const char *p = strstr(resp, "\"return\": \"");

	if (!p) {
		p = strstr(resp, "\"return\":\"");
		if (!p)
			return;
		p += strlen("\"return\":\"");
	} else {
		p += strlen("\"return\": \"");
	}
	for (; *p && *p != '"'; p++) {
		if (*p != '\\' || !p[1]) {
			putchar(*p);
			continue;
		}
		p++;
		switch (*p) {
		case 'n': putchar('\n'); break;
		case 'r': break;
		case 't': putchar('\t'); break;
		case 'u':
			if (strlen(p) >= 5) {
				char hex[5];

				memcpy(hex, p + 1, 4);
				hex[4] = '\0';
				putchar((int)strtol(hex, NULL, 16));
				p += 4;
			}
			break;
		default: putchar(*p); break;
		}
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: rdmae-qmp [-t SECONDS] [-e] SOCKET COMMAND...\n"
		"  COMMAND: a JSON object, a bare command name, or hmp:TEXT\n");
}

int main(int argc, char **argv)
{
	struct conn c = { .fd = -1 };
	double timeout = 60;
	int i, rc = 0;
	char *line;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
			char *end;

			timeout = strtod(argv[++i], &end);
			if (*end || timeout <= 0) {
				usage();
				return 2;
			}
		} else if (strcmp(argv[i], "-e") == 0) {
			c.show_events = 1;
		} else if (argv[i][0] == '-') {
			usage();
			return 2;
		} else {
			break;
		}
	}
	if (i + 2 > argc) {
		usage();
		return 2;
	}
	c.buf = malloc(LINE_MAX_BYTES);
	if (!c.buf) {
		fprintf(stderr, "rdmae-qmp: out of memory\n");
		return 2;
	}
	c.deadline = now_s() + timeout;
	c.fd = connect_unix(argv[i], c.deadline);
	if (c.fd < 0) {
		free(c.buf);
		return 2;
	}
	line = read_line(&c);   /* greeting */
	if (!line || !strstr(line, "\"QMP\"")) {
		fprintf(stderr, "rdmae-qmp: no QMP greeting%s%s\n", line ? ": " : "", line ? line : "");
		rc = 2;
		goto out;
	}
	free(line);
	line = NULL;
	if (send_all(c.fd, "{\"execute\":\"qmp_capabilities\"}\n", 31) < 0) {
		rc = 2;
		goto out;
	}
	line = read_response(&c);
	if (!line || !starts_with(line, "{\"return\"")) {
		fprintf(stderr, "rdmae-qmp: qmp_capabilities: %s\n", line ? line : "no answer");
		rc = 2;
		goto out;
	}
	free(line);
	line = NULL;

	for (i++; i < argc; i++) {
		const char *cmd = argv[i];
		size_t cap = strlen(cmd) * 6 + 128, at;
		char *msg = malloc(cap);
		int hmp = starts_with(cmd, "hmp:");

		if (!msg) {
			fprintf(stderr, "rdmae-qmp: out of memory\n");
			rc = 2;
			goto out;
		}
		if (hmp) {
			at = (size_t)snprintf(msg, cap, "{\"execute\":\"human-monitor-command\","
					      "\"arguments\":{\"command-line\":\"");
			at = json_escape(msg, cap, at, cmd + 4);
			snprintf(msg + at, cap - at, "\"}}\n");
		} else if (cmd[0] == '{') {
			snprintf(msg, cap, "%s\n", cmd);
		} else {
			at = (size_t)snprintf(msg, cap, "{\"execute\":\"");
			at = json_escape(msg, cap, at, cmd);
			snprintf(msg + at, cap - at, "\"}\n");
		}
		c.deadline = now_s() + timeout;
		if (send_all(c.fd, msg, strlen(msg)) < 0) {
			free(msg);
			rc = 2;
			goto out;
		}
		free(msg);
		line = read_response(&c);
		if (!line) {
			rc = 2;
			goto out;
		}
		if (hmp && starts_with(line, "{\"return\""))
			print_hmp_output(line);
		else
			printf("%s\n", line);
		fflush(stdout);
		if (starts_with(line, "{\"error\"")) {
			rc = 1;
			goto out;
		}
		free(line);
		line = NULL;
	}
out:
	free(line);
	if (c.fd >= 0)
		close(c.fd);
	free(c.buf);
	return rc;
}
