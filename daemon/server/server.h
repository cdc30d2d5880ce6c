/* server.h: the Unix-socket server on the libevent loop.
 *
 * Each connection is an explicit state machine (conn_set_state() is the
 * one setter):
 *   READING  - waiting for or reading a request frame
 *   BUSY     - a request is in flight; bytes that arrive are buffered, not
 *              parsed, so one connection holds at most one request
 *   CLOSING  - flushing the last responses before close
 * Peer credentials are taken at accept (SO_PEERCRED, SO_PEERGROUPS) and
 * checked per request against the handler's privilege.
 *
 * What a local user can make the daemon hold is bounded (see peers.h):
 *  - connections: a share per uid, and slots only root and the admin
 *    group may use; a refused connection is answered and closed;
 *  - replies: a READING connection whose unread replies are over its cap,
 *    or whose uid's are over the uid's, is paused (neither read nor
 *    dispatched) until its client reads;
 *  - requests: a busy connection buffers little of what its client sends;
 *    the connection that grows its uid's partly received requests past the
 *    uid's cap is cut;
 *  - turns: frames parsed per wake-up per connection and per uid, and
 *    "more next turn" waits for the loop to poll again;
 *  - time: the first frame, and any frame begun, must be complete within
 *    frame_timeout (trickling bytes do not extend it); otherwise a
 *    connection may stay idle_timeout without traffic. */
#ifndef ALPS_SERVER_H
#define ALPS_SERVER_H

#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

struct daemon;
struct server;

/* Bind path (or adopt listen_fd >= 0 from systemd) and start accepting. */
int server_start(struct daemon *d, const char *path, int listen_fd, struct server **out,
		 alps_error **err);
/* Stop accepting and close idle connections; in-flight requests go on. */
void server_stop_accepting(struct server *s);
/* Connections with a request in flight. */
size_t server_busy(const struct server *s);
size_t server_connections(const struct server *s);
uint64_t server_requests_served(const struct server *s);
/* Apply reloadable settings (limits, timeouts, admin group). */
void server_reconfigure(struct server *s);
/* Close everything; in-flight requests see their client gone. */
void server_free(struct server *s);

#endif
