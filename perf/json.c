/* SPDX-License-Identifier: MIT */
/* rdmae-perf --json: the writer (rdmae_json.h). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "rdmae_json.h"

int rdmae_json_open(struct rdmae_json *j, const char *path, struct rdmae_err *err)
{
	memset(j, 0, sizeof(*j));
	j->path = path;
	if (!strcmp(path, "-")) {
		j->f = stdout;
	} else {
		j->f = fopen(path, "we");
		if (!j->f)
			return rdmae_err_set(err, -errno, "open %s for the JSON output: %s", path,
					     strerror(errno));
		j->own = true;
	}
	fputc('{', j->f);
	j->close[0] = '}';
	j->depth = 1;
	return 0;
}

int rdmae_json_close(struct rdmae_json *j, struct rdmae_err *err)
{
	int bad;

	if (!j->f)
		return 0;
	while (j->depth)
		rdmae_json_end(j);
	fputc('\n', j->f);
	bad = ferror(j->f);
	if (j->own)
		bad |= fclose(j->f) != 0;
	else
		bad |= fflush(j->f) != 0;
	j->f = NULL;
	if (bad)
		return rdmae_err_set(err, -EIO, "write the JSON output %s: %s", j->path,
				     strerror(errno ? errno : EIO));
	return 0;
}

static void put_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch == '\t')
			fputs("\\t", f);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

/* Comma and member name before a value at the current level. */
static void lead(struct rdmae_json *j, const char *key)
{
	unsigned int d = j->depth - 1;

	if (j->comma[d])
		fputc(',', j->f);
	j->comma[d] = true;
	if (key) {
		put_str(j->f, key);
		fputc(':', j->f);
	}
}

static void open_level(struct rdmae_json *j, const char *key, char open, char close)
{
	if (!j->f)
		return;
	lead(j, key);
	fputc(open, j->f);
	/* Deeper than any output here nests: keep the text valid, flatten the rest. */
	if (j->depth == RDMAE_JSON_DEPTH) {
		fputc(close, j->f);
		return;
	}
	j->close[j->depth] = close;
	j->comma[j->depth] = false;
	j->depth++;
}

void rdmae_json_obj(struct rdmae_json *j, const char *key)
{
	open_level(j, key, '{', '}');
}

void rdmae_json_arr(struct rdmae_json *j, const char *key)
{
	open_level(j, key, '[', ']');
}

void rdmae_json_end(struct rdmae_json *j)
{
	if (!j->f || !j->depth)
		return;
	j->depth--;
	fputc(j->close[j->depth], j->f);
}

void rdmae_json_num(struct rdmae_json *j, const char *key, double v)
{
	if (!j->f)
		return;
	lead(j, key);
	if (isfinite(v))
		fprintf(j->f, "%.9g", v);
	else
		fputs("null", j->f);
}

void rdmae_json_u64(struct rdmae_json *j, const char *key, uint64_t v)
{
	if (!j->f)
		return;
	lead(j, key);
	fprintf(j->f, "%" PRIu64, v);
}

void rdmae_json_int(struct rdmae_json *j, const char *key, int64_t v)
{
	if (!j->f)
		return;
	lead(j, key);
	fprintf(j->f, "%" PRId64, v);
}

void rdmae_json_str(struct rdmae_json *j, const char *key, const char *v)
{
	if (!j->f)
		return;
	lead(j, key);
	if (v)
		put_str(j->f, v);
	else
		fputs("null", j->f);
}

void rdmae_json_bool(struct rdmae_json *j, const char *key, bool v)
{
	if (!j->f)
		return;
	lead(j, key);
	fputs(v ? "true" : "false", j->f);
}
