/* SPDX-License-Identifier: MIT */
/*
 * A small streaming JSON writer for rdmae-perf --json: objects and arrays
 * nest, commas and string escapes are its business. Non-finite numbers
 * are written as null, which is what JSON has for "not measured".
 */
#ifndef RDMAE_JSON_H
#define RDMAE_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "rdmae_err.h"

#define RDMAE_JSON_DEPTH 16

struct rdmae_json {
	FILE *f;
	bool own;			/* f was opened here (not stdout) */
	const char *path;
	unsigned int depth;
	char close[RDMAE_JSON_DEPTH];	/* '}' or ']' per open level */
	bool comma[RDMAE_JSON_DEPTH];	/* a value was written at this level */
};

/* path "-" writes to stdout. The top level is an object, opened here. */
int rdmae_json_open(struct rdmae_json *j, const char *path, struct rdmae_err *err);
/* Close every open level; -EIO (err names the file) if anything failed to be written. */
int rdmae_json_close(struct rdmae_json *j, struct rdmae_err *err);

/* key is the member name inside an object, NULL inside an array. */
void rdmae_json_obj(struct rdmae_json *j, const char *key);
void rdmae_json_arr(struct rdmae_json *j, const char *key);
void rdmae_json_end(struct rdmae_json *j);
void rdmae_json_num(struct rdmae_json *j, const char *key, double v);
void rdmae_json_u64(struct rdmae_json *j, const char *key, uint64_t v);
void rdmae_json_int(struct rdmae_json *j, const char *key, int64_t v);
void rdmae_json_str(struct rdmae_json *j, const char *key, const char *v);
void rdmae_json_bool(struct rdmae_json *j, const char *key, bool v);

#endif
