/* metrics_http.c: see metrics_http.h. */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/daemon.h"
#include "daemon/ops/ops.h"
#include "daemon/server/metrics.h"
#include "daemon/server/metrics_http.h"
#include "daemon/settings.h"

struct mconn {
	struct metrics_http *h;
	struct mconn *prev, *next;
	int fd;
	struct event *ev;          /* reading the request */
	struct event *ev_write;    /* writing the answer */
	struct event *timer;       /* the connection's deadline */
	struct evbuffer *out;
	char buf[METRICS_HTTP_REQ_MAX];
	size_t len;
	bool waiting;              /* the figures are being read on a worker */
	bool dead;                 /* closed while waiting: freed by the answer */
};

struct metrics_http {
	struct daemon *d;
	int fd;
	char *unix_path;           /* owned; unlinked at stop */
	struct event *ev_listen;
	struct mconn *conns;
	size_t nconns;
};

/* ---- the address ---- */

/* ---- connections ---- */

static void mconn_close(struct mconn *c)
{
	struct metrics_http *h = c->h;
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	h->nconns--;
	event_free(c->ev);
	event_free(c->ev_write);
	event_free(c->timer);
	close(c->fd);
	evbuffer_free(c->out);
	if (c->waiting)
		c->dead = true;         /* the answer frees it */
	else
		free(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct mconn *c = arg;
	(void)what;
	int n = evbuffer_write(c->out, fd);
	if ((n < 0 && errno != EAGAIN && errno != EINTR) || evbuffer_get_length(c->out) == 0)
		mconn_close(c);
}

/* Queue the answer and write it as the socket takes it. */
static void mconn_reply(struct mconn *c, const char *status, const char *type,
			const char *body)
{
	evbuffer_add_printf(c->out, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			    "Connection: close\r\n\r\n", status, type, strlen(body));
	evbuffer_add(c->out, body, strlen(body));
	event_del(c->ev);
	event_add(c->ev_write, NULL);
}

static void on_figures(void *arg, const struct metrics_gauges *g, const char *store_error)
{
	struct mconn *c = arg;
	(void)store_error;
	c->waiting = false;
	if (c->dead) {
		free(c);
		return;
	}
	_cleanup_free_ char *text = metrics_render(g);
	mconn_reply(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text);
}

/* The request line of a complete head: GET /metrics is served, the rest
 * is 404 (405 would invite guessing; nothing else is here). */
static void mconn_serve(struct mconn *c)
{
	c->buf[c->len] = '\0';
	char *eol = strpbrk(c->buf, "\r\n");
	*eol = '\0';
	bool get = strncmp(c->buf, "GET /metrics", 12) == 0 &&
		   (c->buf[12] == ' ' || c->buf[12] == '?');
	if (!get) {
		mconn_reply(c, "404 Not Found", "text/plain", "only GET /metrics is served here\n");
		return;
	}
	event_del(c->ev);
	c->waiting = true;
	ops_gauges(c->h->d, on_figures, c);     /* may answer at once */
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct mconn *c = arg;
	(void)what;
	ssize_t n = read(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		mconn_close(c);
		return;
	}
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	if (strstr(c->buf, "\r\n\r\n") || strstr(c->buf, "\n\n"))
		mconn_serve(c);
	else if (c->len == sizeof(c->buf) - 1)
		mconn_reply(c, "431 Request Header Fields Too Large", "text/plain",
			    "request head too large\n");
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	mconn_close(arg);
}

static void mconn_new(struct metrics_http *h, int fd)
{
	struct mconn *c = xzalloc(sizeof(*c));
	c->h = h;
	c->fd = fd;
	c->out = evbuffer_new();
	c->ev = event_new(h->d->base, fd, EV_READ | EV_PERSIST, on_read, c);
	c->ev_write = event_new(h->d->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
	c->timer = evtimer_new(h->d->base, on_deadline, c);
	if (!c->out || !c->ev || !c->ev_write || !c->timer)
		abort();        /* out of memory, as xmalloc */
	struct timeval tv = { .tv_sec = METRICS_HTTP_DEADLINE_S };
	event_add(c->ev, NULL);
	evtimer_add(c->timer, &tv);
	c->next = h->conns;
	if (h->conns)
		h->conns->prev = c;
	h->conns = c;
	h->nconns++;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct metrics_http *h = arg;
	(void)what;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		if (h->nconns >= METRICS_HTTP_MAX_CONNS) {
			close(fd);      /* over the cap: the scraper retries later */
			continue;
		}
		mconn_new(h, fd);
	}
}

/* ---- the listener ---- */

static int listen_on(struct metrics_http *h, const char *spec, alps_error **err)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (metrics_listen_parse(spec, &ss, &len, err) < 0)
		return -1;
	h->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (h->fd < 0)
		return alps_fail_errno(err, "metrics.listen: socket");
	int one = 1;
	if (ss.ss_family != AF_UNIX)
		setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_UNIX) {
		const char *path = ((struct sockaddr_un *)&ss)->sun_path;
		struct stat st;
		/* A socket left by a previous daemon goes; any other file stays. */
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path);
		h->unix_path = xstrdup(path);
	}
	if (bind(h->fd, (struct sockaddr *)&ss, len) < 0)
		return alps_fail_errno(err, "metrics.listen: cannot bind %s", spec);
	/* Whoever can reach a loopback port can read the figures: the same
	 * for the Unix socket. */
	if (h->unix_path && chmod(h->unix_path, 0666) < 0)
		return alps_fail_errno(err, "metrics.listen: chmod %s", h->unix_path);
	if (listen(h->fd, 64) < 0)
		return alps_fail_errno(err, "metrics.listen: listen on %s", spec);
	return 0;
}

int metrics_http_start(struct daemon *d, struct metrics_http **out, alps_error **err)
{
	*out = NULL;
	const char *spec = d->cfg->metrics_listen;
	if (!*spec)
		return 0;
	struct metrics_http *h = xzalloc(sizeof(*h));
	h->d = d;
	h->fd = -1;
	if (listen_on(h, spec, err) < 0) {
		metrics_http_free(h);
		return -1;
	}
	h->ev_listen = event_new(d->base, h->fd, EV_READ | EV_PERSIST, on_accept, h);
	event_add(h->ev_listen, NULL);
	log_info("metrics: serving GET /metrics on %s", spec);
	*out = h;
	return 0;
}

void metrics_http_free(struct metrics_http *h)
{
	if (!h)
		return;
	while (h->conns)
		mconn_close(h->conns);
	if (h->ev_listen)
		event_free(h->ev_listen);
	if (h->fd >= 0)
		close(h->fd);
	if (h->unix_path)
		unlink(h->unix_path);
	free(h->unix_path);
	free(h);
}
