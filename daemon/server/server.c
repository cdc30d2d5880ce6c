/* server.c: see server.h: connections, their state machine, accepting. */
#include <config.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/server/peers.h"
#include "daemon/server/server.h"
#include "proto/frame.h"

#include "daemon/server/server_int.h"

static void conn_close(struct conn *c);
static void conn_on_read(evutil_socket_t fd, short what, void *arg);

/* Go on reading c on the next turn of the loop, after it has polled the
 * other sockets.  (An event_active() here would run in this same turn:
 * libevent runs callbacks activated while it runs callbacks before it
 * polls again, so a pipelining client would starve everyone else.) */
void conn_read_next_turn(struct conn *c)
{
	static const struct timeval now = { 0, 0 };
	evtimer_add(c->ev_again, &now);
}

static void conn_on_again(evutil_socket_t fd, short what, void *arg)
{
	conn_on_read(fd, EV_READ, arg);
}

static const char *state_name(enum conn_state s)
{
	switch (s) {
	case CONN_READING: return "reading";
	case CONN_BUSY: return "busy";
	case CONN_CLOSING: return "closing";
	}
	return "?";
}

/* The one place a connection changes state. */
void conn_set_state(struct conn *c, enum conn_state s)
{
	if (c->state == s)
		return;
	log_debug("conn %d: %s -> %s", c->fd, state_name(c->state), state_name(s));
	if (s == CONN_BUSY)
		c->srv->nbusy++;
	if (c->state == CONN_BUSY)
		c->srv->nbusy--;
	c->state = s;
}

/* Whether the daemon waits for a frame the client has yet to finish: its
 * first one, or one it has begun. */
static bool conn_awaits_frame(const struct conn *c)
{
	if (c->state != CONN_READING || c->out_paused)
		return false;
	return !c->framed || frame_reader_buffered(&c->rd) > 0;
}

/* (Re)arm the one timer.  An awaited frame is due frame_timeout after it
 * was first awaited, and bytes trickling in do not move that deadline:
 * otherwise a byte now and then would hold a connection slot for ever.
 * Any other connection may stay idle_timeout without traffic. */
static void conn_arm_timer(struct conn *c)
{
	if (c->lingering)
		return;                 /* its own short deadline holds */
	const struct config *cfg = c->srv->d->cfg;
	uint64_t wait = (uint64_t)cfg->idle_timeout_s * NSEC_PER_SEC;
	if (conn_awaits_frame(c)) {
		uint64_t now = now_monotonic_ns();
		int64_t limit = cfg->frame_timeout_s < cfg->idle_timeout_s ? cfg->frame_timeout_s
									      : cfg->idle_timeout_s;
		if (!c->frame_deadline_ns)
			c->frame_deadline_ns = now + (uint64_t)limit * NSEC_PER_SEC;
		wait = c->frame_deadline_ns > now ? c->frame_deadline_ns - now : 0;
	} else {
		c->frame_deadline_ns = 0;
	}
	struct timeval tv = { .tv_sec = (time_t)(wait / NSEC_PER_SEC),
			      .tv_usec = (suseconds_t)(wait % NSEC_PER_SEC / 1000) };
	evtimer_add(c->ev_timer, &tv);
}

/* The turn of the loop: libevent caches the time once per turn, after it
 * polled, so the cached time names the turn. */
static uint64_t loop_turn(const struct server *s)
{
	struct timeval tv;
	event_base_gettimeofday_cached(s->d->base, &tv);
	return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

/* ---- flow control: replies nobody reads ---- */

/* Whether c has more replies unread than it may: its own cap, or its uid's
 * over all that uid's connections.  Such a connection is neither read nor
 * dispatched, so a client that never reads cannot make the daemon queue
 * replies without bound; the kernel's socket buffer stops the client. */
static bool conn_output_full(const struct conn *c)
{
	return c->wr.queued > (size_t)c->srv->d->cfg->max_queued_output ||
	       (c->owner && c->owner->over);
}

static void conn_pause(struct conn *c)
{
	if (!c->out_paused)
		log_debug("conn %d (uid %u): %zu reply bytes unread (%zu over the uid's "
			  "connections); stop reading its requests", c->fd, (unsigned)c->peer.uid,
			  c->wr.queued, c->owner ? c->owner->queued : c->wr.queued);
	c->out_paused = true;
	event_del(c->ev_read);
	conn_arm_timer(c);
}

static void conn_resume(struct conn *c)
{
	if (!c->out_paused || c->state != CONN_READING || c->want_close || conn_output_full(c))
		return;
	log_debug("conn %d: replies read; reading its requests again", c->fd);
	c->out_paused = false;
	event_add(c->ev_read, NULL);
	conn_read_next_turn(c);        /* frames already buffered */
}

static void server_resume_uid(struct server *s, const struct peer_uid *u)
{
	for (struct conn *c = s->conns; c; c = c->next)
		if (c->owner == u)
			conn_resume(c);
}

/* c's queued output changed from `before`: keep its uid's total in step,
 * and pause or resume by the caps. */
static void conn_account_output(struct conn *c, size_t before)
{
	size_t cap = (size_t)c->srv->d->cfg->max_queued_output_per_uid;
	if (c->owner && peer_queued(c->owner, before, c->wr.queued, cap))
		server_resume_uid(c->srv, c->owner);
	if (c->wr.queued < before)
		conn_resume(c);
}

/* Closing is deferred to a callback of its own: a flush can fail deep in
 * a handler's call stack, which must not see its connection freed. */
static void conn_close_later(struct conn *c)
{
	c->want_close = true;
	event_active(c->ev_write, EV_WRITE, 0);
}

static void conn_flush(struct conn *c)
{
	size_t before = c->wr.queued;
	int rc = frame_writer_flush(&c->wr, c->fd);
	conn_account_output(c, before);
	if (rc < 0) {
		log_debug("conn %d: write failed: %s", c->fd, strerror(errno));
		c->peer_gone = true;
		conn_close_later(c);
		return;
	}
	if (rc == 0) {
		event_add(c->ev_write, NULL);
		return;
	}
	event_del(c->ev_write);
	if (c->state == CONN_CLOSING && !c->lingering)
		conn_close_later(c);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->want_close) {
		conn_close(c);
		return;
	}
	conn_arm_timer(c);
	conn_flush(c);
}

/* Pack resp and queue it (fds attached); flushes at once. */
void conn_send(struct conn *c, const Alps__Response *resp, const int *fds, size_t nfds)
{
	size_t len = alps__response__get_packed_size(resp);
	_cleanup_free_ uint8_t *buf = xmalloc(len);
	alps__response__pack(resp, buf);
	size_t before = c->wr.queued;
	frame_writer_push(&c->wr, buf, len, fds, nfds);
	conn_account_output(c, before);
	conn_flush(c);
}

/* An error for which no request object exists (bad frame, version). */
static void conn_send_error(struct conn *c, uint64_t id, int code, const char *msg)
{
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.id = id;
	resp.status = (Alps__Status)code;
	resp.message = (char *)msg;
	resp.final = true;
	conn_send(c, &resp, NULL, 0);
}

/* Answer what cannot go on (bad frame, wrong version) and close after. */
static void conn_fail_and_close(struct conn *c, uint64_t id, int code, const char *msg)
{
	_cleanup_free_ char *esc = log_escape(msg, 200);
	log_info("conn %d (uid %u pid %d): %s; closing", c->fd, (unsigned)c->peer.uid,
		 (int)c->peer.pid, esc);
	conn_set_state(c, CONN_CLOSING);
	event_del(c->ev_read);
	conn_send_error(c, id, code, msg);
}

/* ---- dispatch ---- */

static int check_hello(struct conn *c, const Alps__Request *req)
{
	if (req->op_case != ALPS__REQUEST__OP_HELLO)
		return 0;
	if (c->said_hello) {
		conn_fail_and_close(c, req->id, ALPS_E_PROTOCOL, "Hello sent twice");
		return -1;
	}
	c->said_hello = true;
	if (req->hello->protocol_version != ALPS__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT) {
		_cleanup_free_ char *msg = xasprintf(
			"protocol version %u is not supported: this alpsd speaks version %d; "
			"use an alps client of the same release as the daemon",
			req->hello->protocol_version, ALPS__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT);
		conn_fail_and_close(c, req->id, ALPS_E_VERSION, msg);
		return -1;
	}
	return 0;
}

static void conn_dispatch(struct conn *c, const Alps__Request *req)
{
	if (check_hello(c, req) < 0)
		return;
	struct request *rq = xzalloc(sizeof(*rq));
	rq->refs = 1;
	rq->conn = c;
	rq->d = c->srv->d;
	rq->id = req->id;
	rq->peer = c->peer;
	rq->admin = c->admin;
	rq->ngroups = c->ngroups;
	memcpy(rq->groups_copy, c->groups, c->ngroups * sizeof(gid_t));
	rq->start_ns = now_monotonic_ns();
	rq->nfds = frame_reader_take_fds(&c->rd, rq->fds, FRAME_MAX_FDS);
	rq->h = handler_find(req->op_case);
	c->active = rq;
	conn_set_state(c, CONN_BUSY);

	alps_error *err = NULL;
	if (!rq->h) {
		alps_fail(&err, ALPS_E_UNSUPPORTED,
			  "unsupported operation (field %d): this alpsd does not know it",
			  (int)req->op_case);
	} else if (rq->h->priv == PRIV_ADMIN && !rq->admin) {
		alps_fail(&err, ALPS_E_PERMISSION, "'%s' is for administrators (root or the "
			  "daemon's admin group); uid %u is neither", rq->h->name,
			  (unsigned)rq->peer.uid);
	} else {
		/* Hold a reference across the call: the handler may finish and
		 * the connection may drop its own. */
		request_ref(rq);
		int rc = rq->h->fn(rq, req, &err);
		if (rc < 0 && !err)
			alps_fail(&err, ALPS_E_INTERNAL, "%s failed without saying why", rq->h->name);
		if (rc < 0 && rq->finished) {
			/* Answered already; the late error only goes to the log. */
			log_warn("%s: error after the final response: %s", rq->h->name, err->msg);
			alps_error_free(err);
			err = NULL;
		}
		if (err)
			request_fail(rq, err);
		request_unref(rq);
		return;
	}
	request_fail(rq, err);
}

/* Whether a whole frame is buffered already: then reading more would
 * only grow the buffer. */
static bool conn_has_frame(const struct conn *c)
{
	const struct frame_reader *r = &c->rd;
	if (frame_reader_buffered(r) < FRAME_HEADER_SIZE)
		return false;
	const uint8_t *payload;
	size_t len, used;
	return frame_decode(r->buf + r->pending, r->len - r->pending, r->max, &payload, &len,
			    &used) != FRAME_INCOMPLETE;
}

/* Input buffer bytes past what every connection may keep: what a user
 * can make the daemon hold by sending most of a large frame. */
static size_t conn_input_held(const struct conn *c)
{
	return c->rd.cap > INPUT_KEEP ? c->rd.cap - INPUT_KEEP : 0;
}

/* A connection that once sent a large frame does not keep a buffer of
 * that size for as long as it stays. */
static void conn_trim_input(struct conn *c)
{
	if (frame_reader_buffered(&c->rd) || c->rd.nfds || c->rd.cap <= INPUT_KEEP)
		return;
	size_t held = conn_input_held(c);
	size_t max = c->rd.max;
	frame_reader_release(&c->rd);
	frame_reader_init(&c->rd, max);
	if (c->owner)
		peer_input(c->owner, held, 0, NULL);
}

/* The uid of a connection whose buffer just grew holds more than its cap
 * of requests partly received (a user's many connections each sending
 * most of a maximal frame): that connection is cut. */
static void conn_cut_input(struct conn *c)
{
	const struct config *cfg = c->srv->d->cfg;
	_cleanup_free_ char *msg = xasprintf(
		"uid %u has more than %zu bytes of requests partly sent over its connections "
		"(daemon.max_input_per_uid); closing this one", (unsigned)c->peer.uid,
		peer_input_cap(cfg));
	conn_fail_and_close(c, 0, ALPS_E_LIMIT, msg);
	peer_input(c->owner, conn_input_held(c), 0, NULL);
	frame_reader_release(&c->rd);
	frame_reader_init(&c->rd, (size_t)cfg->max_frame_size);
}

/* Parse the frames buffered, as long as the connection is READING and its
 * client reads its replies. */
static void conn_parse(struct conn *c)
{
	for (int n = 0; n < FRAMES_PER_WAKEUP && c->state == CONN_READING && !c->want_close; n++) {
		if (conn_output_full(c)) {
			conn_pause(c);
			return;
		}
		if (!conn_has_frame(c)) {
			conn_trim_input(c);
			return;
		}
		if (c->owner && !peer_take_frame(c->owner, loop_turn(c->srv), UID_FRAMES_PER_TURN)) {
			conn_read_next_turn(c);
			return;
		}
		const uint8_t *payload;
		size_t len;
		int rc = frame_reader_next(&c->rd, &payload, &len);
		if (rc == FRAME_ERR_TOO_LARGE) {
			conn_fail_and_close(c, 0, ALPS_E_PROTOCOL, "frame larger than the daemon's maximum");
			return;
		}
		Alps__Request *req = alps__request__unpack(NULL, len, payload);
		if (!req) {
			conn_fail_and_close(c, 0, ALPS_E_PROTOCOL, "malformed request (not a protobuf Request)");
			return;
		}
		c->framed = true;
		c->frame_deadline_ns = 0;
		conn_dispatch(c, req);
		alps__request__free_unpacked(req, NULL);
	}
	if (c->state == CONN_READING && frame_reader_buffered(&c->rd) >= FRAME_HEADER_SIZE)
		conn_read_next_turn(c);        /* more frames */
}

/* One read into c's buffer; false when that ended the connection.  *got:
 * bytes came. */
static bool conn_fill(struct conn *c, bool *got)
{
	size_t held = conn_input_held(c);
	ssize_t n = frame_reader_fill(&c->rd, c->fd);
	int saved = errno;
	*got = n > 0;
	if (c->owner && peer_input(c->owner, held, conn_input_held(c), c->srv->d->cfg)) {
		conn_cut_input(c);
		return false;
	}
	errno = saved;
	if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)))
		return true;
	if (n < 0 && errno == EMSGSIZE) {
		conn_fail_and_close(c, 0, ALPS_E_PROTOCOL, "too many file descriptors in one message");
		return false;
	}
	c->peer_gone = true;
	conn_close(c);
	return false;
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->lingering) {
		conn_close(c);          /* the client wrote or went: it can read */
		return;
	}
	if (c->state == CONN_CLOSING || c->want_close)
		return;
	if (c->state == CONN_READING && conn_output_full(c)) {
		conn_pause(c);
		return;
	}
	if (c->state == CONN_BUSY && frame_reader_buffered(&c->rd) >= BUSY_INPUT_MAX) {
		/* What a busy client sends stays in its socket until the
		 * request in flight is done (request_done() reads again). */
		event_del(c->ev_read);
		return;
	}
	bool got = false;
	if (!(c->state == CONN_READING && conn_has_frame(c)) && !conn_fill(c, &got))
		return;
	if (c->state == CONN_READING)
		conn_parse(c);
	if (got || c->state == CONN_READING)
		conn_arm_timer(c);
}

static void conn_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->state == CONN_BUSY) {
		conn_arm_timer(c);      /* a long request is not idleness */
		return;
	}
	const char *why = c->frame_deadline_ns ? (c->framed ? "a request begun and not finished"
							    : "no request since it connected")
			  : c->wr.queued ? "its replies unread" : "idle";
	log_debug("conn %d (uid %u): timeout, %s (%zu bytes buffered, %zu unread)", c->fd,
		  (unsigned)c->peer.uid, why, frame_reader_buffered(&c->rd), c->wr.queued);
	conn_close(c);
}

static void conn_close(struct conn *c)
{
	struct server *s = c->srv;
	if (c->active) {
		/* The request goes on (a pull keeps running); it only loses its
		 * way back to the client. */
		struct request *rq = c->active;
		c->active = NULL;
		rq->conn = NULL;
		request_unref(rq);
	}
	conn_fire_watches(c);
	conn_set_state(c, CONN_CLOSING);
	event_free(c->ev_read);
	event_free(c->ev_write);
	event_free(c->ev_timer);
	event_free(c->ev_again);
	if (c->owner)
		peer_input(c->owner, conn_input_held(c), 0, NULL);
	frame_reader_release(&c->rd);
	size_t before = c->wr.queued;
	frame_writer_release(&c->wr);
	conn_account_output(c, before);
	close(c->fd);
	if (c->peer_pidfd >= 0)
		close(c->peer_pidfd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->owner)
		peer_remove(&s->peers, c->owner);
	if (c->lingering)
		s->nlingering--;
	free(c);
}

/* ---- accepting ---- */

/* The peer's supplementary groups as they were at connect(). */
static size_t peer_groups(int fd, gid_t *groups, size_t max)
{
	socklen_t len = (socklen_t)(max * sizeof(gid_t));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return 0;
	return len / sizeof(gid_t);
}

static bool peer_in_group(const struct conn *c, gid_t gid)
{
	if (c->peer.gid == gid)
		return true;
	for (size_t i = 0; i < c->ngroups; i++)
		if (c->groups[i] == gid)
			return true;
	return false;
}

/* A pidfd of the process that connected (Linux 6.5+), so that work done
 * for it later (joining its cgroup, reading its limits) acts on that
 * process and not on whoever reused its pid.  -1 where unsupported. */
static int peer_pidfd(int fd)
{
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
	int pidfd = -1;
	socklen_t len = sizeof(pidfd);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
		return -1;
	return pidfd;
}

/* Answer a refused connection and close it after; it counts in no limit. */
static void conn_refuse(struct conn *c, const char *why)
{
	struct server *s = c->srv;
	peer_log_refusal(&s->peers, &c->peer, why);
	conn_set_state(c, CONN_CLOSING);
	if (s->nlingering < REFUSED_LINGER_MAX) {
		c->lingering = true;
		s->nlingering++;
		struct timeval tv = { .tv_sec = REFUSED_LINGER_S };
		evtimer_add(c->ev_timer, &tv);
	} else {
		event_del(c->ev_read);
	}
	conn_send_error(c, 0, ALPS_E_LIMIT, why);
}

static void server_accept_one(struct server *s, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warn("SO_PEERCRED: %s; dropping connection", strerror(errno));
		close(fd);
		return;
	}
	struct conn *c = xzalloc(sizeof(*c));
	c->srv = s;
	c->fd = fd;
	c->peer = cred;
	c->peer_pidfd = peer_pidfd(fd);
	c->ngroups = peer_groups(fd, c->groups, MAX_PEER_GROUPS);
	c->admin = cred.uid == 0 || (s->have_admin_gid && peer_in_group(c, s->admin_gid));
	_cleanup_free_ char *why = peer_refusal(&s->peers, s->d->cfg, cred.uid, c->admin);
	if (!why)
		c->owner = peer_add(&s->peers, cred.uid);
	c->state = CONN_READING;
	frame_reader_init(&c->rd, (size_t)s->d->cfg->max_frame_size);
	frame_writer_init(&c->wr);
	c->ev_read = event_new(s->d->base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
	c->ev_write = event_new(s->d->base, fd, EV_WRITE, conn_on_write, c);
	c->ev_timer = evtimer_new(s->d->base, conn_on_timeout, c);
	c->ev_again = evtimer_new(s->d->base, conn_on_again, c);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	event_add(c->ev_read, NULL);
	conn_arm_timer(c);
	log_debug("conn %d: uid %u gid %u pid %d%s%s", fd, (unsigned)cred.uid, (unsigned)cred.gid,
		  (int)cred.pid, c->admin ? " (admin)" : "", why ? " (refused)" : "");
	if (why)
		conn_refuse(c, why);
}

static void server_on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct server *s = arg;
	for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				log_warn("accept: %s (open connections: %zu)", strerror(errno),
					 s->peers.nconns);
			else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
				 errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		server_accept_one(s, fd);
	}
}

static int socket_in_use(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, path, strlen(path) + 1);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	return connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
}

static int bind_socket(const char *path, alps_error **err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return alps_fail(err, ALPS_E_INVALID, "socket path too long (%zu bytes, max %zu): %s",
				 strlen(path), sizeof(sa.sun_path) - 1, path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (socket_in_use(path))
		return alps_fail(err, ALPS_E_EXISTS, "another alpsd is already listening on %s", path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return alps_fail(err, ALPS_E_EXISTS, "%s exists and is not a socket", path);
		unlink(path);   /* stale: nobody answered on it */
	}
	_cleanup_free_ char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir_p(dir, 0755) < 0)
			return alps_fail_errno(err, "cannot create %s", dir);
	}
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return alps_fail_errno(err, "socket");
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return alps_fail_errno(err, "cannot bind %s", path);
	/* Everyone may connect: every request is authorized from the peer's
	 * credentials, not from the socket's mode. */
	if (chmod(path, 0666) < 0)
		return alps_fail_errno(err, "chmod %s", path);
	if (listen(fd, 1024) < 0)
		return alps_fail_errno(err, "listen on %s", path);
	return steal_fd(&fd);
}

void server_reconfigure(struct server *s)
{
	/* The caps may have moved: what they stopped may go on. */
	peer_recheck(&s->peers, (size_t)s->d->cfg->max_queued_output_per_uid);
	for (struct conn *c = s->conns; c; c = c->next)
		conn_resume(c);
	const char *group = s->d->cfg->admin_group;
	s->have_admin_gid = false;
	if (group && *group) {
		struct group *gr = getgrnam(group);
		if (!gr) {
			log_warn("admin group '%s' does not exist; only root is admin", group);
		} else {
			s->admin_gid = gr->gr_gid;
			s->have_admin_gid = true;
		}
	}
}

/* libevent's own messages (a failed epoll_ctl, a bad event) go to the
 * daemon's log with its levels, not to a bare stderr. */
static void on_libevent_log(int severity, const char *msg)
{
	enum log_level level = severity >= EVENT_LOG_ERR ? LOG_LVL_ERROR
			       : severity == EVENT_LOG_WARN ? LOG_LVL_WARN
			       : severity == EVENT_LOG_MSG ? LOG_LVL_INFO : LOG_LVL_DEBUG;
	if (level > log_get_level())
		return;
	_cleanup_free_ char *esc = log_escape(msg, 512);
	log_msg(level, "libevent: %s", esc);
}

int server_start(struct daemon *d, const char *path, int listen_fd, struct server **out,
		 alps_error **err)
{
	event_set_log_callback(on_libevent_log);
	struct server *s = xzalloc(sizeof(*s));
	s->d = d;
	s->path = xstrdup(path);
	if (listen_fd >= 0) {
		s->listen_fd = listen_fd;
		if (fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK) < 0) {
			free(s->path);
			free(s);
			return alps_fail_errno(err, "systemd socket");
		}
	} else {
		s->listen_fd = bind_socket(path, err);
		if (s->listen_fd < 0) {
			free(s->path);
			free(s);
			return -1;
		}
		s->bound_here = true;
	}
	server_reconfigure(s);
	s->ev_listen = event_new(d->base, s->listen_fd, EV_READ | EV_PERSIST, server_on_accept, s);
	event_add(s->ev_listen, NULL);
	*out = s;
	return 0;
}

void server_stop_accepting(struct server *s)
{
	if (s->ev_listen) {
		event_free(s->ev_listen);
		s->ev_listen = NULL;
		close(s->listen_fd);
		s->listen_fd = -1;
		if (s->bound_here)
			unlink(s->path);
	}
	/* Idle connections go now; busy ones finish their request. */
	struct conn *c = s->conns;
	while (c) {
		struct conn *next = c->next;
		if (c->state != CONN_BUSY && !c->wr.head)
			conn_close(c);
		c = next;
	}
}

size_t server_busy(const struct server *s)
{
	return s->nbusy;
}

size_t server_connections(const struct server *s)
{
	return s->peers.nconns;
}

uint64_t server_requests_served(const struct server *s)
{
	return s->served;
}

void server_free(struct server *s)
{
	if (!s)
		return;
	server_stop_accepting(s);
	while (s->conns)
		conn_close(s->conns);
	free(s->path);
	free(s);
}
