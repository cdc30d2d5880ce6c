/* frame.c: see frame.h. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "frame.h"

/* Read at most this much per recvmsg(), so one busy peer cannot hog a
 * wake-up of the loop. */
#define FRAME_READ_CHUNK (64u * 1024u)

int frame_decode(const uint8_t *buf, size_t len, size_t max,
		 const uint8_t **payload, size_t *plen, size_t *consumed)
{
	if (len < FRAME_HEADER_SIZE)
		return FRAME_INCOMPLETE;
	uint32_t n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
		     (uint32_t)buf[2] << 8 | (uint32_t)buf[3];
	if (n > max)
		return FRAME_ERR_TOO_LARGE;
	if (len - FRAME_HEADER_SIZE < n)
		return FRAME_INCOMPLETE;
	*payload = buf + FRAME_HEADER_SIZE;
	*plen = n;
	*consumed = FRAME_HEADER_SIZE + (size_t)n;
	return FRAME_COMPLETE;
}

void frame_encode_header(uint8_t hdr[FRAME_HEADER_SIZE], uint32_t len)
{
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
}

void frame_reader_init(struct frame_reader *r, size_t max)
{
	memset(r, 0, sizeof(*r));
	r->max = max ? max : FRAME_DEFAULT_MAX;
}

void frame_reader_release(struct frame_reader *r)
{
	free(r->buf);
	for (size_t i = 0; i < r->nfds; i++)
		close(r->fds[i]);
	memset(r, 0, sizeof(*r));
}

static void reader_drop_pending(struct frame_reader *r)
{
	if (!r->pending)
		return;
	memmove(r->buf, r->buf + r->pending, r->len - r->pending);
	r->len -= r->pending;
	r->pending = 0;
}

static void reader_keep_fds(struct frame_reader *r, struct msghdr *msg, int *overflow)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *fds = (int *)CMSG_DATA(c);
		for (size_t i = 0; i < n; i++) {
			if (r->nfds < FRAME_MAX_FDS) {
				r->fds[r->nfds++] = fds[i];
			} else {
				close(fds[i]);
				*overflow = 1;
			}
		}
	}
}

ssize_t frame_reader_fill(struct frame_reader *r, int sock)
{
	reader_drop_pending(r);
	/* Never hold more than one maximal frame plus a chunk. */
	size_t limit = r->max + FRAME_HEADER_SIZE + FRAME_READ_CHUNK;
	size_t want = FRAME_READ_CHUNK;
	if (r->len + want > limit)
		want = limit > r->len ? limit - r->len : 0;
	if (want == 0) {
		errno = ENOBUFS;
		return -1;
	}
	if (r->cap < r->len + want) {
		r->cap = r->len + want;
		r->buf = xrealloc(r->buf, r->cap);
	}
	union {
		char buf[CMSG_SPACE(sizeof(int) * FRAME_MAX_FDS)];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = r->buf + r->len, .iov_len = want };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf),
	};
	ssize_t n;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	int overflow = 0;
	reader_keep_fds(r, &msg, &overflow);
	if (msg.msg_flags & MSG_CTRUNC)
		overflow = 1;
	r->len += (size_t)n;
	if (overflow) {
		errno = EMSGSIZE;
		return -1;
	}
	return n;
}

int frame_reader_next(struct frame_reader *r, const uint8_t **payload, size_t *len)
{
	reader_drop_pending(r);
	size_t consumed;
	int rc = frame_decode(r->buf, r->len, r->max, payload, len, &consumed);
	if (rc == FRAME_COMPLETE)
		r->pending = consumed;
	return rc;
}

size_t frame_reader_buffered(const struct frame_reader *r)
{
	return r->len - r->pending;
}

size_t frame_reader_take_fds(struct frame_reader *r, int *fds, size_t max)
{
	size_t n = r->nfds < max ? r->nfds : max;
	memcpy(fds, r->fds, n * sizeof(int));
	memmove(r->fds, r->fds + n, (r->nfds - n) * sizeof(int));
	r->nfds -= n;
	return n;
}

struct frame_out {
	struct frame_out *next;
	uint8_t *data;          /* header + payload, owned */
	size_t len, off;
	int fds[FRAME_MAX_FDS]; /* owned until sent */
	size_t nfds;
};

void frame_writer_init(struct frame_writer *w)
{
	memset(w, 0, sizeof(*w));
}

static void out_free(struct frame_out *o)
{
	for (size_t i = 0; i < o->nfds; i++)
		close(o->fds[i]);
	free(o->data);
	free(o);
}

void frame_writer_release(struct frame_writer *w)
{
	struct frame_out *o = w->head;
	while (o) {
		struct frame_out *next = o->next;
		out_free(o);
		o = next;
	}
	memset(w, 0, sizeof(*w));
}

void frame_writer_push(struct frame_writer *w, const uint8_t *payload, size_t len,
		       const int *fds, size_t nfds)
{
	struct frame_out *o = xzalloc(sizeof(*o));
	o->len = FRAME_HEADER_SIZE + len;
	o->data = xmalloc(o->len);
	frame_encode_header(o->data, (uint32_t)len);
	if (len)
		memcpy(o->data + FRAME_HEADER_SIZE, payload, len);
	for (size_t i = 0; i < nfds && i < FRAME_MAX_FDS; i++) {
		int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
		if (fd >= 0)
			o->fds[o->nfds++] = fd;
	}
	if (w->tail)
		w->tail->next = o;
	else
		w->head = o;
	w->tail = o;
	w->queued += o->len;
}

static ssize_t out_send(struct frame_out *o, int sock)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * FRAME_MAX_FDS)];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = o->data + o->off, .iov_len = o->len - o->off };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (o->off == 0 && o->nfds) {
		memset(&cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * o->nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		if (!c) {       /* cannot happen: the buffer is sized for it */
			errno = EINVAL;
			return -1;
		}
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * o->nfds);
		memcpy(CMSG_DATA(c), o->fds, sizeof(int) * o->nfds);
	}
	ssize_t n;
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n > 0 && o->nfds) {
		for (size_t i = 0; i < o->nfds; i++)
			close(o->fds[i]);
		o->nfds = 0;
	}
	return n;
}

int frame_writer_flush(struct frame_writer *w, int sock)
{
	while (w->head) {
		struct frame_out *o = w->head;
		ssize_t n = out_send(o, sock);
		if (n < 0)
			return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
		o->off += (size_t)n;
		w->queued -= (size_t)n;
		if (o->off < o->len)
			return 0;
		w->head = o->next;
		if (!w->head)
			w->tail = NULL;
		out_free(o);
	}
	return 1;
}
