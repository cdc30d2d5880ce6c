/* wire.c: see wire.h. */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util.h"
#include "wire.h"

static int wait_fd(int fd, short events, int timeout_ms, alps_error **err)
{
	struct pollfd p = { .fd = fd, .events = events };
	for (;;) {
		int n = poll(&p, 1, timeout_ms);
		if (n > 0)
			return 0;
		if (n == 0)
			return alps_fail(err, ALPS_E_TIMEOUT, "no answer from alpsd within %d ms",
					 timeout_ms);
		if (errno != EINTR)
			return alps_fail_errno(err, "poll");
	}
}

int wire_connect(struct wire_client *c, const char *path, const char *client_name,
		 alps_error **err)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->next_id = 1;
	frame_reader_init(&c->reader, FRAME_DEFAULT_MAX);
	frame_writer_init(&c->writer);
	c->socket_path = xstrdup(path);

	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return alps_fail(err, ALPS_E_INVALID, "socket path too long: %s", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0)
		return alps_fail_errno(err, "socket");
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EAGAIN || errno == EINPROGRESS) {
			/* A full backlog: wait for it to take us. */
			if (wait_fd(c->fd, POLLOUT, 10000, err) < 0)
				return -1;
		} else {
			int e = errno;
			return alps_fail(err, ALPS_E_UNAVAILABLE,
					 "cannot reach alpsd at %s: %s (is the daemon running? "
					 "start it with 'systemctl start alpsd' or 'alpsd --socket %s')",
					 path, strerror(e), path);
		}
	}

	Alps__Hello hello = ALPS__HELLO__INIT;
	hello.protocol_version = ALPS__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT;
	hello.client = (char *)client_name;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_HELLO;
	req.hello = &hello;
	Alps__Response *resp = wire_call(c, &req, NULL, 0, NULL, NULL, 30000, err);
	if (!resp)
		return alps_error_prefix(err, "talking to alpsd at %s", path);
	int rc = 0;
	if (resp->status != ALPS__STATUS__OK) {
		rc = alps_fail(err, (int)resp->status, "alpsd at %s: %s", path, resp->message);
	} else if (resp->payload_case == ALPS__RESPONSE__PAYLOAD_HELLO) {
		c->server_version = resp->hello->protocol_version;
		c->server_name = xstrdup(resp->hello->server);
	}
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

void wire_close(struct wire_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	frame_reader_release(&c->reader);
	frame_writer_release(&c->writer);
	free(c->socket_path);
	free(c->server_name);
	c->socket_path = c->server_name = NULL;
}

int wire_send(struct wire_client *c, Alps__Request *req, const int *fds, size_t nfds,
	      alps_error **err)
{
	req->id = c->next_id++;
	size_t len = alps__request__get_packed_size(req);
	_cleanup_free_ uint8_t *buf = xmalloc(len);
	alps__request__pack(req, buf);
	frame_writer_push(&c->writer, buf, len, fds, nfds);
	for (;;) {
		int rc = frame_writer_flush(&c->writer, c->fd);
		if (rc == 1)
			return 0;
		if (rc < 0)
			return alps_fail_errno(err, "sending to alpsd");
		if (wait_fd(c->fd, POLLOUT, 30000, err) < 0)
			return -1;
	}
}

int wire_recv(struct wire_client *c, Alps__Response **out, int timeout_ms, alps_error **err)
{
	for (;;) {
		const uint8_t *payload;
		size_t len;
		int rc = frame_reader_next(&c->reader, &payload, &len);
		if (rc == FRAME_ERR_TOO_LARGE)
			return alps_fail(err, ALPS_E_PROTOCOL, "alpsd sent an oversized frame");
		if (rc == FRAME_COMPLETE) {
			*out = alps__response__unpack(NULL, len, payload);
			if (!*out)
				return alps_fail(err, ALPS_E_PROTOCOL, "alpsd sent a malformed response");
			return 0;
		}
		if (wait_fd(c->fd, POLLIN, timeout_ms, err) < 0)
			return -1;
		ssize_t n = frame_reader_fill(&c->reader, c->fd);
		if (n == 0)
			return alps_fail(err, ALPS_E_UNAVAILABLE, "alpsd closed the connection");
		if (n < 0 && errno != EAGAIN)
			return alps_fail_errno(err, "reading from alpsd");
	}
}

Alps__Response *wire_call(struct wire_client *c, Alps__Request *req, const int *fds, size_t nfds,
			  void (*on_progress)(const Alps__Response *, void *), void *arg,
			  int timeout_ms, alps_error **err)
{
	if (wire_send(c, req, fds, nfds, err) < 0)
		return NULL;
	uint64_t id = req->id;
	for (;;) {
		Alps__Response *resp;
		if (wire_recv(c, &resp, timeout_ms, err) < 0)
			return NULL;
		if (resp->id != id && resp->id != 0) {
			alps__response__free_unpacked(resp, NULL);
			continue;
		}
		if (resp->final || resp->id == 0)
			return resp;
		if (on_progress)
			on_progress(resp, arg);
		alps__response__free_unpacked(resp, NULL);
	}
}
