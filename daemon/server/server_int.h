/* server_int.h: what the server's files share (server.c: connections and
 * accepting; request.c: the request API of handlers.h).  Not for
 * handlers: they see requests only through handlers.h. */
#ifndef ALPS_SERVER_INT_H
#define ALPS_SERVER_INT_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "daemon/server/handlers.h"
#include "daemon/server/peers.h"
#include "proto/frame.h"

/* Caps on work done for one wake-up, so that no peer starves the others. */
#define ACCEPTS_PER_WAKEUP 64
#define FRAMES_PER_WAKEUP 16
/* The same over all the connections of one uid, per turn of the loop: a
 * user's many pipelining connections get no more turns than one. */
#define UID_FRAMES_PER_TURN 8
/* Progress responses are dropped, never queued without bound, when a slow
 * client has this much unread. */
#define PROGRESS_BACKLOG (1u << 20)
#define MAX_PEER_GROUPS 256
/* A busy connection is read only to see its client go: what it sends
 * meanwhile is buffered up to this much, then left in the socket. */
#define BUSY_INPUT_MAX (64u * 1024u)
/* An input buffer grown by a large frame is given back past this size. */
#define INPUT_KEEP (128u * 1024u)
#define NSEC_PER_SEC 1000000000ull
/* A refused connection stays open, answered, until its client has sent
 * something (or this long): closed at once, the client's first write
 * would fail and it would never read why.  Only so many stay. */
#define REFUSED_LINGER_S 2
#define REFUSED_LINGER_MAX 64

enum conn_state {
	CONN_READING,
	CONN_BUSY,
	CONN_CLOSING,
};

struct conn {
	struct server *srv;
	struct conn *prev, *next;
	int fd;
	enum conn_state state;
	struct peer_uid *owner;    /* NULL for a refused connection */
	bool framed;               /* a whole frame has come */
	bool out_paused;           /* not read: too many replies unread */
	uint64_t frame_deadline_ns;/* the awaited frame is due; 0: none awaited */
	struct ucred peer;
	int peer_pidfd;            /* SO_PEERPIDFD at accept, owned; -1 if unsupported */
	gid_t groups[MAX_PEER_GROUPS];
	size_t ngroups;
	bool admin;
	bool said_hello;
	bool peer_gone;            /* EOF or error seen */
	bool want_close;           /* closed on the next turn of the loop */
	bool lingering;            /* refused, answered, waiting for its client */
	struct frame_reader rd;
	struct frame_writer wr;
	struct event *ev_read;     /* persistent */
	struct event *ev_write;    /* armed while output is pending */
	struct event *ev_timer;    /* idle, frame and unread-reply timeouts */
	struct event *ev_again;    /* reads buffered frames on the next turn */
	struct request *active;    /* the request in flight, or NULL */
	struct close_watch *watches;   /* told when the connection closes */
};

struct close_watch {
	struct close_watch *prev, *next;
	struct conn *conn;
	close_watch_fn fn;
	void *arg;
};

struct request {
	int refs;
	struct conn *conn;         /* NULL once the client has gone */
	struct daemon *d;
	uint64_t id;
	const struct handler *h;
	struct ucred peer;
	gid_t groups_copy[MAX_PEER_GROUPS];   /* the peer's, at connect */
	size_t ngroups;
	bool admin;
	bool finished;
	int fds[FRAME_MAX_FDS];    /* received with the request, owned */
	size_t nfds;
	int out_fds[FRAME_MAX_FDS];/* to send with the next response, owned */
	size_t nout_fds;
	uint64_t start_ns;
};

struct server {
	struct daemon *d;
	int listen_fd;
	char *path;                /* owned; unlinked at stop if we bound it */
	bool bound_here;
	struct event *ev_listen;
	struct conn *conns;        /* refused ones too, until closed */
	struct peer_table peers;   /* counts no refused connection */
	size_t nbusy;
	size_t nlingering;         /* refused connections still open */
	uint64_t served;
	gid_t admin_gid;
	bool have_admin_gid;
};

/* server.c */
void conn_send(struct conn *c, const Alps__Response *resp, const int *fds, size_t nfds);
void conn_set_state(struct conn *c, enum conn_state s);
/* Go on reading c on the next turn of the loop. */
void conn_read_next_turn(struct conn *c);

/* request.c */
/* Tell c's close watches it is closing (conn_close). */
void conn_fire_watches(struct conn *c);

#endif
