/* request.c: the request API of handlers.h: references, the peer's
 * credentials, close watches, progress and final responses. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/server/metrics.h"
#include "daemon/server/server_int.h"

/* ---- requests ---- */

static void request_free(struct request *rq)
{
	for (size_t i = 0; i < rq->nfds; i++)
		close(rq->fds[i]);
	for (size_t i = 0; i < rq->nout_fds; i++)
		close(rq->out_fds[i]);
	free(rq);
}

struct request *request_ref(struct request *rq)
{
	rq->refs++;
	return rq;
}

void request_unref(struct request *rq)
{
	if (rq && --rq->refs == 0)
		request_free(rq);
}

struct daemon *request_daemon(struct request *rq)
{
	return rq->d;
}

const struct ucred *request_peer(struct request *rq)
{
	return &rq->peer;
}

bool request_peer_is_admin(struct request *rq)
{
	return rq->admin;
}

size_t request_peer_groups(struct request *rq, gid_t *groups, size_t max)
{
	size_t n = rq->ngroups < max ? rq->ngroups : max;
	memcpy(groups, rq->groups_copy, n * sizeof(gid_t));
	return n;
}

int request_peer_pidfd(struct request *rq)
{
	if (!rq->conn || rq->conn->peer_pidfd < 0) {
		errno = rq->conn ? EOPNOTSUPP : ENOTCONN;
		return -1;
	}
	return fcntl(rq->conn->peer_pidfd, F_DUPFD_CLOEXEC, 3);
}

uint64_t request_age_ns(struct request *rq)
{
	return now_monotonic_ns() - rq->start_ns;
}

bool request_connected(struct request *rq)
{
	return rq->conn && !rq->conn->peer_gone;
}

struct close_watch *request_watch_close(struct request *rq, close_watch_fn fn, void *arg)
{
	struct conn *c = rq->conn;
	if (!c || c->peer_gone || c->want_close || c->state == CONN_CLOSING)
		return NULL;
	struct close_watch *w = xzalloc(sizeof(*w));
	w->conn = c;
	w->fn = fn;
	w->arg = arg;
	w->next = c->watches;
	if (c->watches)
		c->watches->prev = w;
	c->watches = w;
	return w;
}

void close_watch_cancel(struct close_watch *w)
{
	if (!w)
		return;
	if (w->prev)
		w->prev->next = w->next;
	else
		w->conn->watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	free(w);
}

/* Each watch is unlinked before its callback runs, so a callback may
 * cancel other watches (never its own: it is gone). */
void conn_fire_watches(struct conn *c)
{
	while (c->watches) {
		struct close_watch *w = c->watches;
		c->watches = w->next;
		if (c->watches)
			c->watches->prev = NULL;
		close_watch_fn fn = w->fn;
		void *arg = w->arg;
		free(w);
		fn(arg);
	}
}

size_t request_take_fds(struct request *rq, int *fds, size_t max)
{
	size_t n = rq->nfds < max ? rq->nfds : max;
	memcpy(fds, rq->fds, n * sizeof(int));
	memmove(rq->fds, rq->fds + n, (rq->nfds - n) * sizeof(int));
	rq->nfds -= n;
	return n;
}

void request_attach_fds(struct request *rq, const int *fds, size_t nfds)
{
	for (size_t i = 0; i < nfds && rq->nout_fds < FRAME_MAX_FDS; i++) {
		int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
		if (fd >= 0)
			rq->out_fds[rq->nout_fds++] = fd;
	}
}

static void request_send(struct request *rq, Alps__Response *resp)
{
	resp->id = rq->id;
	struct conn *c = rq->conn;
	if (c && !c->peer_gone)
		conn_send(c, resp, rq->out_fds, rq->nout_fds);
	for (size_t i = 0; i < rq->nout_fds; i++)
		close(rq->out_fds[i]);
	rq->nout_fds = 0;
}

void request_progress(struct request *rq, Alps__Response *resp)
{
	if (rq->finished || !rq->conn || rq->conn->wr.queued > PROGRESS_BACKLOG)
		return;
	resp->status = ALPS__STATUS__OK;
	resp->final = false;
	request_send(rq, resp);
}

/* The final response has been sent: the connection may read again. */
static void request_done(struct request *rq, int code)
{
	rq->finished = true;
	uint64_t us = (now_monotonic_ns() - rq->start_ns) / 1000;
	log_debug("request %llu %s from uid %u: %s in %llu us", (unsigned long long)rq->id,
		  rq->h ? rq->h->name : "?", (unsigned)rq->peer.uid, alps_code_name(code),
		  (unsigned long long)us);
	metrics_request(rq->h ? rq->h->name : "unknown", code);
	if (rq->h && rq->h->op == ALPS__REQUEST__OP_PREPARE)
		metrics_observe(METRICS_PREPARE, now_monotonic_ns() - rq->start_ns);
	struct conn *c = rq->conn;
	if (!c)
		return;
	c->srv->served++;
	rq->conn = NULL;
	c->active = NULL;
	if (c->state == CONN_BUSY) {
		conn_set_state(c, CONN_READING);
		event_add(c->ev_read, NULL);
		/* Frames that arrived while busy are parsed on the next turn of
		 * the loop, not here, so a pipelining client cannot recurse. */
		conn_read_next_turn(c);
	}
	request_unref(rq);      /* the connection's reference */
}

void request_finish(struct request *rq, Alps__Response *resp)
{
	if (rq->finished)
		return;
	Alps__Response empty = ALPS__RESPONSE__INIT;
	if (!resp)
		resp = &empty;
	resp->status = ALPS__STATUS__OK;
	resp->final = true;
	request_send(rq, resp);
	request_done(rq, ALPS_OK);
}

void request_fail(struct request *rq, alps_error *err)
{
	if (rq->finished) {
		alps_error_free(err);
		return;
	}
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.status = (Alps__Status)err->code;
	resp.message = err->msg;
	resp.final = true;
	log_event(LOG_LVL_INFO, "error", "op", rq->h ? rq->h->name : "unknown", "uid",
		  LOG_U64(rq->peer.uid), "code", alps_code_name(err->code), "error", err->msg, NULL);
	request_send(rq, &resp);
	int code = err->code;
	alps_error_free(err);
	request_done(rq, code);
}

