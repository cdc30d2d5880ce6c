/* wire.h: the client side of the protocol, blocking with timeouts, for the
 * alps CLI and the SPANK plugin.  Messages are packed with protobuf-c and
 * carried in frames (frame.h). */
#ifndef ALPS_WIRE_H
#define ALPS_WIRE_H

#include "common/error.h"
#include "frame.h"
#include "proto/alps.pb-c.h"

#define WIRE_DEFAULT_SOCKET "/run/alps/alpsd.sock"

struct wire_client {
	int fd;
	struct frame_reader reader;
	struct frame_writer writer;
	uint64_t next_id;
	char *socket_path;       /* owned */
	uint32_t server_version; /* from HelloReply */
	char *server_name;       /* owned */
};

/* Connect to path and exchange Hello.  A daemon that is not there gets
 * ALPS_E_UNAVAILABLE with a message naming the socket. */
int wire_connect(struct wire_client *c, const char *path, const char *client_name,
		 alps_error **err);
void wire_close(struct wire_client *c);
/* Send req (its id is assigned here and returned in *id); fds go along. */
int wire_send(struct wire_client *c, Alps__Request *req, const int *fds, size_t nfds,
	      alps_error **err);
/* Wait up to timeout_ms (-1: forever) for the next Response. */
int wire_recv(struct wire_client *c, Alps__Response **out, int timeout_ms, alps_error **err);
/* Send req and wait for its final response, calling on_progress for the
 * others (may be NULL).  Returns the final Response (caller frees with
 * alps__response__free_unpacked) whatever its status. */
Alps__Response *wire_call(struct wire_client *c, Alps__Request *req, const int *fds, size_t nfds,
			  void (*on_progress)(const Alps__Response *, void *), void *arg,
			  int timeout_ms, alps_error **err);

#endif
