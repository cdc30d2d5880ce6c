/* frame.h: length-prefixed frames over a stream socket, shared by alpsd,
 * the alps client and the SPANK plugin.
 *
 * A frame is a 4-byte big-endian payload length and the payload (one
 * protobuf message).  A length over the reader's maximum is a protocol
 * error: the peer is cut off rather than the buffer grown.  File
 * descriptors (SCM_RIGHTS) travel with the first byte of a frame.
 *
 * The reader and writer never block: they do one recvmsg()/sendmsg() per
 * call on a non-blocking socket and keep what is partial. */
#ifndef ALPS_FRAME_H
#define ALPS_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FRAME_HEADER_SIZE 4u
#define FRAME_DEFAULT_MAX (4u * 1024u * 1024u)
#define FRAME_MAX_FDS 8u

enum frame_status {
	FRAME_ERR_TOO_LARGE = -2,    /* the header announces more than max */
	FRAME_INCOMPLETE = 0,
	FRAME_COMPLETE = 1,
};

/* Pure decoding step, kept free of I/O for tests and fuzzing: looks at
 * buf[0..len) and, when a whole frame is there, sets *payload, *plen and
 * *consumed (header + payload) and returns FRAME_COMPLETE. */
int frame_decode(const uint8_t *buf, size_t len, size_t max,
		 const uint8_t **payload, size_t *plen, size_t *consumed);
/* Write the 4-byte header for a payload of len bytes. */
void frame_encode_header(uint8_t hdr[FRAME_HEADER_SIZE], uint32_t len);

struct frame_reader {
	uint8_t *buf;       /* owned */
	size_t len, cap;
	size_t max;         /* largest payload accepted */
	size_t pending;     /* bytes of the frame returned by the last _next() */
	int fds[FRAME_MAX_FDS];
	size_t nfds;        /* received fds not yet taken (owned) */
};

void frame_reader_init(struct frame_reader *r, size_t max);
void frame_reader_release(struct frame_reader *r);  /* frees, closes fds */
/* One recvmsg(): returns bytes read, 0 at end of stream, -1 with errno
 * (EAGAIN when nothing is there; EMSGSIZE if more fds came than fit,
 * which are closed). */
ssize_t frame_reader_fill(struct frame_reader *r, int sock);
/* The next whole frame, if any: FRAME_COMPLETE, FRAME_INCOMPLETE or
 * FRAME_ERR_TOO_LARGE.  The payload stays valid until the next call. */
int frame_reader_next(struct frame_reader *r, const uint8_t **payload, size_t *len);
/* Bytes buffered that are not yet a whole frame (for half-sent timeouts). */
size_t frame_reader_buffered(const struct frame_reader *r);
/* Take up to max received fds; returns how many (caller owns them). */
size_t frame_reader_take_fds(struct frame_reader *r, int *fds, size_t max);

struct frame_out;

struct frame_writer {
	struct frame_out *head, *tail;  /* owned queue */
	size_t queued;                  /* bytes not yet written */
};

void frame_writer_init(struct frame_writer *w);
void frame_writer_release(struct frame_writer *w);
/* Queue one frame (payload copied, fds duplicated). */
void frame_writer_push(struct frame_writer *w, const uint8_t *payload, size_t len,
		       const int *fds, size_t nfds);
/* Write what the socket takes: 1 when the queue is empty, 0 when bytes
 * remain (EAGAIN), -1 with errno on a hard error. */
int frame_writer_flush(struct frame_writer *w, int sock);

#endif
