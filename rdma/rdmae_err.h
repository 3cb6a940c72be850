/* SPDX-License-Identifier: MIT */
/*
 * Error reporting. Every fallible function returns 0 or a negative errno and,
 * when given a non-NULL struct rdmae_err, a message that names the operation
 * and the object ("rdma_resolve_addr 10.0.0.1:4444: timed out after 5000 ms").
 * A caller that does not care passes NULL.
 */
#ifndef RDMAE_ERR_H
#define RDMAE_ERR_H

#define RDMAE_ERR_LEN 256

struct rdmae_err {
	int code;		/* negative errno, 0 when no error */
	char msg[RDMAE_ERR_LEN];
};

/*
 * Record an error and return code, so that a failure path can read
 * "return rdmae_err_set(err, -EINVAL, "...", ...);". code must be negative.
 * err may be NULL.
 */
int rdmae_err_set(struct rdmae_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Clear an error record. */
void rdmae_err_clear(struct rdmae_err *err);

#endif
