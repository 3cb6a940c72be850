/* SPDX-License-Identifier: MIT */
#include "rdmae_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int rdmae_err_set(struct rdmae_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return code;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

void rdmae_err_clear(struct rdmae_err *err)
{
	if (!err)
		return;
	err->code = 0;
	err->msg[0] = '\0';
}
