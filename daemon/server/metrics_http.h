/* metrics_http.h: the optional scrape listener (metrics.listen): GET
 * /metrics over HTTP/1.x on a loopback TCP address or a Unix socket,
 * served on the daemon's loop without ever waiting on it.
 *
 * A scraper is not trusted more than any local user: requests are bounded
 * (METRICS_HTTP_REQ_MAX bytes of head, no body read), so is the number of
 * connections (METRICS_HTTP_MAX_CONNS; more are closed at accept), and
 * each connection has METRICS_HTTP_DEADLINE_S in all to send its request
 * and read the answer: a slow client holds one slot for that long and
 * stalls nothing else.  One request per connection (Connection: close). */
#ifndef ALPS_METRICS_HTTP_H
#define ALPS_METRICS_HTTP_H

#include <sys/socket.h>

#include "common/error.h"

#define METRICS_HTTP_REQ_MAX 4096
#define METRICS_HTTP_MAX_CONNS 16
#define METRICS_HTTP_DEADLINE_S 5

struct daemon;
struct metrics_http;

/* Whether spec is a listen address the daemon takes: "" (none),
 * "HOST:PORT" with HOST 127.0.0.0/8, localhost or [::1], or
 * "unix:/absolute/path".  Anything else, a non-loopback address above
 * all, is an error naming metrics.listen. */
int metrics_listen_check(const char *spec, alps_error **err);
/* The same check, and the address to bind (metrics_addr.c). */
struct sockaddr_storage;
int metrics_listen_parse(const char *spec, struct sockaddr_storage *ss, socklen_t *len,
			 alps_error **err);
/* Listen on d->cfg's metrics.listen (none: *out NULL, 0). */
int metrics_http_start(struct daemon *d, struct metrics_http **out, alps_error **err);
/* Close everything; after work_drain() (answers in preparation are gone). */
void metrics_http_free(struct metrics_http *h);

#endif
