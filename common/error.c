/* error.c: see error.h. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static int fail_v(alps_error **err, int code, int errnum, const char *fmt, va_list ap)
	ALPS_PRINTF(4, 0);

static int fail_v(alps_error **err, int code, int errnum, const char *fmt, va_list ap)
{
	if (!err)
		return -1;
	_cleanup_free_ char *msg = xvasprintf(fmt, ap);
	/* A second failure before the first was reported keeps the first:
	 * it is the cause. */
	if (*err)
		return -1;
	alps_error *e = xzalloc(sizeof(*e));
	e->code = code;
	e->errnum = errnum;
	if (errnum)
		e->msg = xasprintf("%s: %s", msg, strerror(errnum));
	else
		e->msg = steal_pointer(&msg);
	*err = e;
	return -1;
}

int alps_fail(alps_error **err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fail_v(err, code, 0, fmt, ap);
	va_end(ap);
	return -1;
}

int alps_fail_errnum(alps_error **err, int errnum, const char *fmt, ...)
{
	va_list ap;
	int code = ALPS_E_IO;
	if (errnum == ENOENT)
		code = ALPS_E_NOT_FOUND;
	else if (errnum == EACCES || errnum == EPERM)
		code = ALPS_E_PERMISSION;
	else if (errnum == EEXIST)
		code = ALPS_E_EXISTS;
	else if (errnum == EBUSY)
		code = ALPS_E_BUSY;
	else if (errnum == ENOSPC || errnum == EDQUOT || errnum == EMFILE)
		code = ALPS_E_LIMIT;
	else if (errnum == ETIMEDOUT)
		code = ALPS_E_TIMEOUT;
	va_start(ap, fmt);
	fail_v(err, code, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

int alps_fail_errno(alps_error **err, const char *fmt, ...)
{
	int errnum = errno;
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	return alps_fail_errnum(err, errnum, "%s", msg);
}

int alps_error_prefix(alps_error **err, const char *fmt, ...)
{
	if (!err || !*err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *ctx = xvasprintf(fmt, ap);
	va_end(ap);
	char *msg = xasprintf("%s: %s", ctx, (*err)->msg);
	free((*err)->msg);
	(*err)->msg = msg;
	return -1;
}

void alps_error_free(alps_error *err)
{
	if (!err)
		return;
	free(err->msg);
	free(err);
}

void cleanup_errorp(alps_error **err)
{
	alps_error_free(*err);
	*err = NULL;
}

const char *alps_code_name(int code)
{
	static const char *names[] = {
		[ALPS_OK] = "ok",
		[ALPS_E_INVALID] = "invalid argument",
		[ALPS_E_NOT_FOUND] = "not found",
		[ALPS_E_PERMISSION] = "permission denied",
		[ALPS_E_EXISTS] = "already exists",
		[ALPS_E_UNSUPPORTED] = "unsupported",
		[ALPS_E_NOT_IMPLEMENTED] = "not implemented",
		[ALPS_E_INTERNAL] = "internal error",
		[ALPS_E_IO] = "I/O error",
		[ALPS_E_UNAVAILABLE] = "unavailable",
		[ALPS_E_PROTOCOL] = "protocol error",
		[ALPS_E_CONFLICT] = "conflict",
		[ALPS_E_BUSY] = "busy",
		[ALPS_E_LIMIT] = "limit exceeded",
		[ALPS_E_CANCELLED] = "cancelled",
		[ALPS_E_VERSION] = "version mismatch",
		[ALPS_E_TIMEOUT] = "timed out",
		[ALPS_E_INTEGRITY] = "integrity error",
	};
	if (code < 0 || (size_t)code >= ARRAY_SIZE(names) || !names[code])
		return "unknown error";
	return names[code];
}
