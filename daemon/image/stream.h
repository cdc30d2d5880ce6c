/* stream.h: pull-style byte streams for layer data.
 *
 * A layer travels as a chain of streams: a source (a file descriptor, a
 * memory buffer, or a chanbuf that an HTTP thread fills) wrapped by a
 * decompressor (ISA-L for gzip, libzstd for zstd), read by the tar-to-
 * squashfs converter.  Each stream owns the one it reads from, so closing
 * the outermost closes the chain.
 *
 *	struct stream *s = stream_decompress(stream_from_fd(fd), LAYER_COMPRESSION_GZIP, err);
 *	n = stream_read(s, buf, sizeof(buf), err);   // > 0 bytes, 0 at the end, -1 on error
 *	stream_close(s);
 *
 * A stream is used by one thread at a time.  The chanbuf is the one
 * thread-safe piece: a bounded pipe from a producer thread (a libcurl write
 * callback) to a consumer thread (the converter). */
#ifndef ALPS_DAEMON_IMAGE_STREAM_H
#define ALPS_DAEMON_IMAGE_STREAM_H

#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

struct stream {
	/* Read up to len (> 0) bytes into buf: the count (> 0), 0 at the
	 * end of the stream, or -1 with *err set.  Call through
	 * stream_read(), which keeps the byte count. */
	ssize_t (*read)(struct stream *s, void *buf, size_t len, alps_error **err);
	/* Release the stream and what it owns, the inner stream included. */
	void (*close)(struct stream *s);
	struct stream *inner;   /* owned; what this stream reads from, or NULL */
	uint64_t bytes;         /* bytes returned by stream_read() so far */
	/* Optional: what stream_source_bytes() answers, for a stream whose
	 * source is read on another thread. */
	uint64_t (*source_bytes)(const struct stream *s);
	/* Optional, callable from any thread: make a blocked read and every
	 * later one fail (a chanbuf stream aborts its chanbuf). */
	void (*abort)(struct stream *s);
};

ssize_t stream_read(struct stream *s, void *buf, size_t len, alps_error **err);
/* Close a stream and its inner streams; NULL is fine. */
void stream_close(struct stream *s);
void cleanup_streamp(struct stream **s);
#define _cleanup_stream_ __attribute__((cleanup(cleanup_streamp)))

/* Abort the first stream down the chain that can be aborted, if any: a
 * thread blocked reading it (waiting for a download) gets an error now. */
void stream_abort(struct stream *s);

/* Bytes read so far from the innermost stream: for a decompressing chain,
 * the compressed bytes consumed. */
uint64_t stream_source_bytes(const struct stream *s);

/* A stream reading fd; takes ownership of fd (closed with the stream). */
struct stream *stream_from_fd(int fd);
/* A stream over len bytes at data, which must outlive the stream (tests,
 * fuzzing, small in-memory blobs). */
struct stream *stream_from_memory(const void *data, size_t len);

enum layer_compression {
	LAYER_COMPRESSION_NONE = 0,
	LAYER_COMPRESSION_GZIP = 1,
	LAYER_COMPRESSION_ZSTD = 2,
};

/* "none", "gzip", "zstd". */
const char *layer_compression_name(enum layer_compression c);

/* The compression of an OCI or Docker layer media type (the
 * nondistributable/foreign variants included).  An unknown media type is
 * ALPS_E_UNSUPPORTED, naming it. */
int stream_media_type_compression(const char *media_type, enum layer_compression *out,
				  alps_error **err);

/* A stream that decompresses inner.  Takes ownership of inner, also on
 * failure (NULL with *err set).  gzip accepts multi-member streams and
 * checks each member's CRC and length; zstd accepts concatenated frames.
 * A stream that ends inside a member or frame is an error, as is data
 * after the last gzip member that is not another member. */
struct stream *stream_decompress(struct stream *inner, enum layer_compression c,
				 alps_error **err);

/* A stream that reads inner on a thread of its own, up to capacity bytes
 * (0: 4 MiB) ahead of its reader, so that inner's work (decompression)
 * overlaps the reader's.  Borrows inner: nothing else may use it until this
 * stream is closed, and closing does not close it.  Closing stops the
 * thread, waiting for a read of inner in progress to return.  NULL with
 * *err set if no thread can be started. */
struct stream *stream_readahead(struct stream *inner, size_t capacity, alps_error **err);

/* chanbuf: a bounded, thread-safe byte pipe.
 *
 * The producer writes with chanbuf_write() (blocking while the buffer is
 * full) or chanbuf_try_write() (never blocking, for a producer on an event
 * loop), then ends with chanbuf_close(), passing an error if the transfer
 * failed; the consumer reads through chanbuf_stream().  If the consumer gives
 * up (chanbuf_abort(), or closing its stream before the end), writes fail
 * with ALPS_E_CANCELLED so the producer stops.
 *
 * Reference counted because two threads hold it: chanbuf_new() returns the
 * producer's reference, chanbuf_stream() takes one for the stream (dropped
 * when the stream is closed); each side drops its own and the last one
 * frees. */
struct chanbuf;

/* capacity: bytes buffered at most (0: 4 MiB). */
struct chanbuf *chanbuf_new(size_t capacity);
void chanbuf_unref(struct chanbuf *cb);

/* Write all of buf, waiting for room.  -1 with ALPS_E_CANCELLED if the
 * consumer aborted (before or while waiting), or ALPS_E_INTERNAL after
 * chanbuf_close(). */
int chanbuf_write(struct chanbuf *cb, const void *buf, size_t len, alps_error **err);
/* Write what fits now; the count taken (possibly 0), or -1 as
 * chanbuf_write().  When it takes less than len, the space callback fires
 * once the consumer has made room. */
ssize_t chanbuf_try_write(struct chanbuf *cb, const void *buf, size_t len, alps_error **err);
/* Called from the consumer's thread, without the lock held, after a short
 * chanbuf_try_write() when room appears (or the consumer aborts). */
void chanbuf_set_space_cb(struct chanbuf *cb, void (*fn)(void *arg), void *arg);

/* End of data.  err (owned; NULL for a clean end) is what the consumer's
 * read returns once the buffered bytes are consumed.  Later calls are
 * ignored (their err is freed). */
void chanbuf_close(struct chanbuf *cb, alps_error *err);
/* The consumer gives up: pending and later writes fail, waiters wake. */
void chanbuf_abort(struct chanbuf *cb);
/* The consumer's end as a stream (one per chanbuf).  Closing the stream
 * aborts the chanbuf and drops the stream's reference. */
struct stream *chanbuf_stream(struct chanbuf *cb);

#endif
