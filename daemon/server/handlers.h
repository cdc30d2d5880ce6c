/* handlers.h: the table of operations alpsd serves, and the request API
 * handlers use to answer.
 *
 * One handler per operation, each declaring the privilege it needs; the
 * server checks the privilege from the peer's credentials (SO_PEERCRED)
 * before calling the handler.  A handler answers synchronously with
 * request_finish()/request_fail(), or keeps the request (request_ref) and
 * answers later from the loop; it may send progress with request_progress().
 * Returning -1 with *err set makes the server send the error as the final
 * response. */
#ifndef ALPS_HANDLERS_H
#define ALPS_HANDLERS_H

#include <sys/socket.h>

#include "common/error.h"
#include "proto/alps.pb-c.h"

struct daemon;
struct request;

enum handler_priv {
	PRIV_USER,      /* anyone who can reach the socket */
	PRIV_ADMIN,     /* root, or a member of the configured admin group */
};

typedef int (*handler_fn)(struct request *rq, const Alps__Request *req, alps_error **err);

struct handler {
	Alps__Request__OpCase op;
	const char *name;
	enum handler_priv priv;
	handler_fn fn;
};

/* The handler for op, or NULL when the operation is not served. */
const struct handler *handler_find(Alps__Request__OpCase op);

/* Accessors of a request in flight. */
struct daemon *request_daemon(struct request *rq);
const struct ucred *request_peer(struct request *rq);
bool request_peer_is_admin(struct request *rq);
/* The peer's supplementary groups at connect time (SO_PEERGROUPS). */
size_t request_peer_groups(struct request *rq, gid_t *groups, size_t max);
/* Take the fds that came with the request (SCM_RIGHTS); caller owns them. */
size_t request_take_fds(struct request *rq, int *fds, size_t max);
/* A new pidfd (O_CLOEXEC; caller closes) of the process that opened the
 * request's connection, taken at connect (SO_PEERPIDFD); -1 with errno
 * ENOTCONN once the client has gone, EOPNOTSUPP on kernels without it. */
int request_peer_pidfd(struct request *rq);
/* Nanoseconds since the request was received. */
uint64_t request_age_ns(struct request *rq);
/* Whether the client is still connected (a detached pull goes on). */
bool request_connected(struct request *rq);

/* Call fn(arg) on the loop once the connection that carried rq closes
 * (EOF, error, idle timeout, daemon stop).  Register while the request is
 * in flight; NULL when the connection is gone already (act at once).  The
 * watch ends when it fires or with close_watch_cancel(), never both. */
struct close_watch;
typedef void (*close_watch_fn)(void *arg);
struct close_watch *request_watch_close(struct request *rq, close_watch_fn fn, void *arg);
void close_watch_cancel(struct close_watch *w);

/* Keep a request past the handler's return / let it go. */
struct request *request_ref(struct request *rq);
void request_unref(struct request *rq);

/* Send a non-final response (progress).  The id is filled in; resp's
 * status and final are overwritten.  Dropped if the client has gone. */
void request_progress(struct request *rq, Alps__Response *resp);
/* Send the final OK response (resp may be NULL for an empty one). */
void request_finish(struct request *rq, Alps__Response *resp);
/* Send the final error response; takes err. */
void request_fail(struct request *rq, alps_error *err);
/* Send fds with the next response. */
void request_attach_fds(struct request *rq, const int *fds, size_t nfds);

/* The operations, one descriptor each, defined beside their handler in
 * daemon/ops/op_*.c and gathered in handlers.c's table. */
extern const struct handler handler_hello,
	handler_status,
	handler_pull,
	handler_images,
	handler_inspect,
	handler_remove,
	handler_gc,
	handler_pin,
	handler_df,
	handler_verify,
	handler_prepare,
	handler_exec,
	handler_release,
	handler_jobs,
	handler_attach,
	handler_topology,
	handler_place,
	handler_endpoints,
	handler_import,
	handler_export,
	handler_metrics,
	handler_outdated,
	handler_resolve;        /* a tag to its digest (op_resolve.c) */
/* At stop: stop waiting for exec'd processes (they go on with their job). */
void exec_shutdown(void);

#endif
