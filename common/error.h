/* error.h: the one error convention of alps.
 *
 * A function that can fail returns a negative value (or NULL) and fills
 * *err with a code, the errno that caused it (0 if none) and a message.
 * Callers add context on the way up with alps_error_prefix(); the error is
 * reported once, at the request boundary (a Response status and message),
 * or at start-up (a fatal log line).  The codes are the wire protocol's
 * Status values, so the boundary never translates.
 *
 *	if (store_open(path, &store, err) < 0)
 *		return alps_error_prefix(err, "opening the store");
 */
#ifndef ALPS_ERROR_H
#define ALPS_ERROR_H

#include "util.h"

/* Keep in step with enum Status in proto/alps.proto. */
enum alps_code {
	ALPS_OK = 0,
	ALPS_E_INVALID = 1,           /* bad input from the caller */
	ALPS_E_NOT_FOUND = 2,
	ALPS_E_PERMISSION = 3,
	ALPS_E_EXISTS = 4,
	ALPS_E_UNSUPPORTED = 5,       /* unknown operation, media type... */
	ALPS_E_NOT_IMPLEMENTED = 6,
	ALPS_E_INTERNAL = 7,
	ALPS_E_IO = 8,                /* a system call failed */
	ALPS_E_UNAVAILABLE = 9,       /* a registry or peer cannot be reached */
	ALPS_E_PROTOCOL = 10,         /* malformed frame or message */
	ALPS_E_CONFLICT = 11,
	ALPS_E_BUSY = 12,             /* in use by a job */
	ALPS_E_LIMIT = 13,            /* a configured limit was exceeded */
	ALPS_E_CANCELLED = 14,
	ALPS_E_VERSION = 15,          /* protocol version mismatch */
	ALPS_E_TIMEOUT = 16,
	ALPS_E_INTEGRITY = 17,        /* digest mismatch, corrupt data */
};

typedef struct alps_error {
	int code;       /* enum alps_code */
	int errnum;     /* errno, or 0 */
	char *msg;      /* owned; never NULL once set */
} alps_error;

/* Set *err (which must be NULL) and return -1. */
int alps_fail(alps_error **err, int code, const char *fmt, ...) ALPS_PRINTF(3, 4);
/* Same, taking the errno current at the call, appending strerror(). */
int alps_fail_errno(alps_error **err, const char *fmt, ...) ALPS_PRINTF(2, 3);
/* Same with an explicit errno value (e.g. a negative return turned around). */
int alps_fail_errnum(alps_error **err, int errnum, const char *fmt, ...) ALPS_PRINTF(3, 4);
/* Prepend "context: " to the message; returns -1 so it can be returned. */
int alps_error_prefix(alps_error **err, const char *fmt, ...) ALPS_PRINTF(2, 3);
void alps_error_free(alps_error *err);
void cleanup_errorp(alps_error **err);
#define _cleanup_error_ __attribute__((cleanup(cleanup_errorp)))

/* A short name of a code, e.g. "not found". */
const char *alps_code_name(int code);

#endif
