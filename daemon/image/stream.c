/* stream.c: byte sources, decompressors and the chanbuf (see stream.h). */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <isa-l/igzip_lib.h>
#include <zstd.h>

#include "common/log.h"
#include "daemon/image/stream.h"

/* Compressed input is read in large pieces: fewer calls down the chain and
 * long runs for the inflater. */
#define DECOMP_IN_SIZE (1u << 20)
#define CHANBUF_DEFAULT_CAPACITY (4u << 20)

ssize_t stream_read(struct stream *s, void *buf, size_t len, alps_error **err)
{
	if (len == 0)
		return 0;
	ssize_t n = s->read(s, buf, len, err);
	if (n > 0)
		s->bytes += (uint64_t)n;
	return n;
}

void stream_close(struct stream *s)
{
	if (s)
		s->close(s);
}

void cleanup_streamp(struct stream **s)
{
	stream_close(*s);
	*s = NULL;
}

void stream_abort(struct stream *s)
{
	while (s && !s->abort)
		s = s->inner;
	if (s)
		s->abort(s);
}

uint64_t stream_source_bytes(const struct stream *s)
{
	while (s->inner && !s->source_bytes)
		s = s->inner;
	return s->source_bytes ? s->source_bytes(s) : s->bytes;
}

/* --- file descriptors --- */

struct fd_stream {
	struct stream base;
	int fd;     /* owned */
};

static ssize_t fd_read(struct stream *s, void *buf, size_t len, alps_error **err)
{
	struct fd_stream *f = (struct fd_stream *)s;
	for (;;) {
		ssize_t n = read(f->fd, buf, len);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return alps_fail_errno(err, "reading layer data");
	}
}

static void fd_close(struct stream *s)
{
	struct fd_stream *f = (struct fd_stream *)s;
	close_keep_errno(f->fd);
	free(f);
}

struct stream *stream_from_fd(int fd)
{
	struct fd_stream *f = xzalloc(sizeof(*f));
	f->base.read = fd_read;
	f->base.close = fd_close;
	f->fd = fd;
	return &f->base;
}

/* --- memory --- */

struct mem_stream {
	struct stream base;
	const uint8_t *data;
	size_t len, pos;
};

static ssize_t mem_read(struct stream *s, void *buf, size_t len, alps_error **err)
{
	(void)err;
	struct mem_stream *m = (struct mem_stream *)s;
	size_t n = m->len - m->pos;
	if (n > len)
		n = len;
	if (n > 0)
		memcpy(buf, m->data + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

static void mem_close(struct stream *s)
{
	free(s);
}

struct stream *stream_from_memory(const void *data, size_t len)
{
	struct mem_stream *m = xzalloc(sizeof(*m));
	m->base.read = mem_read;
	m->base.close = mem_close;
	m->data = data;
	m->len = len;
	return &m->base;
}

/* --- media types --- */

static const struct {
	const char *media_type;
	enum layer_compression compression;
} media_types[] = {
	{ "application/vnd.oci.image.layer.v1.tar", LAYER_COMPRESSION_NONE },
	{ "application/vnd.oci.image.layer.v1.tar+gzip", LAYER_COMPRESSION_GZIP },
	{ "application/vnd.oci.image.layer.v1.tar+zstd", LAYER_COMPRESSION_ZSTD },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar", LAYER_COMPRESSION_NONE },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", LAYER_COMPRESSION_GZIP },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", LAYER_COMPRESSION_ZSTD },
	{ "application/vnd.docker.image.rootfs.diff.tar", LAYER_COMPRESSION_NONE },
	{ "application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_COMPRESSION_GZIP },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", LAYER_COMPRESSION_GZIP },
};

int stream_media_type_compression(const char *media_type, enum layer_compression *out,
				  alps_error **err)
{
	/* Media types compare case-insensitively (RFC 6838). */
	for (size_t i = 0; i < ARRAY_SIZE(media_types); i++) {
		if (strcasecmp(media_type, media_types[i].media_type) == 0) {
			*out = media_types[i].compression;
			return 0;
		}
	}
	_cleanup_free_ char *esc = log_escape(media_type, 200);
	return alps_fail(err, ALPS_E_UNSUPPORTED, "unsupported layer media type '%s'", esc);
}

const char *layer_compression_name(enum layer_compression c)
{
	switch (c) {
	case LAYER_COMPRESSION_NONE:
		return "none";
	case LAYER_COMPRESSION_GZIP:
		return "gzip";
	case LAYER_COMPRESSION_ZSTD:
		return "zstd";
	}
	return "unknown";
}

/* Read the next piece of compressed input; 0 at its end, -1 on error. */
static ssize_t refill(struct stream *inner, uint8_t *in, alps_error **err)
{
	return stream_read(inner, in, DECOMP_IN_SIZE, err);
}

/* --- gzip (ISA-L) --- */

struct gzip_stream {
	struct stream base;
	struct inflate_state *st;   /* owned; ~40 KiB, so not on the stack */
	uint8_t *in;                /* owned; DECOMP_IN_SIZE */
	uint64_t members;           /* completed members */
	bool in_member;
};

static int gzip_fail(struct gzip_stream *g, int ret, alps_error **err)
{
	/* Offset of the first unconsumed compressed byte, to say where. */
	uint64_t at = g->base.inner->bytes - g->st->avail_in;
	switch (ret) {
	case ISAL_INVALID_WRAPPER:
		return alps_fail(err, ALPS_E_INVALID,
				 "invalid gzip header near compressed byte %llu",
				 (unsigned long long)at);
	case ISAL_UNSUPPORTED_METHOD:
		return alps_fail(err, ALPS_E_UNSUPPORTED,
				 "gzip stream uses an unsupported compression method");
	case ISAL_INCORRECT_CHECKSUM:
		return alps_fail(err, ALPS_E_INTEGRITY,
				 "gzip checksum mismatch in member %llu",
				 (unsigned long long)g->members + 1);
	default:
		return alps_fail(err, ALPS_E_INVALID,
				 "corrupt gzip data near compressed byte %llu (isa-l error %d)",
				 (unsigned long long)at, ret);
	}
}

/* Start the next member at the current input position.  isal_inflate_reset()
 * clears the whole state, the input pointers and checksum mode included. */
static void gzip_next_member(struct gzip_stream *g)
{
	uint8_t *next_in = g->st->next_in;
	uint32_t avail_in = g->st->avail_in;
	isal_inflate_reset(g->st);
	g->st->next_in = next_in;
	g->st->avail_in = avail_in;
	g->st->crc_flag = ISAL_GZIP;
	g->in_member = true;
}

/* Make input available; 1 if there is some, 0 at the end, -1 on error. */
static int gzip_input(struct gzip_stream *g, alps_error **err)
{
	if (g->st->avail_in > 0)
		return 1;
	ssize_t n = refill(g->base.inner, g->in, err);
	if (n <= 0)
		return (int)n;
	g->st->next_in = g->in;
	g->st->avail_in = (uint32_t)n;
	return 1;
}

static ssize_t gzip_read(struct stream *s, void *buf, size_t len, alps_error **err)
{
	struct gzip_stream *g = (struct gzip_stream *)s;
	uint32_t want = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;

	for (;;) {
		if (!g->in_member) {
			int r = gzip_input(g, err);
			if (r < 0)
				return -1;
			if (r == 0 && g->members == 0)
				return alps_fail(err, ALPS_E_INVALID, "gzip stream is empty");
			if (r == 0)
				return 0;
			gzip_next_member(g);
		}
		uint32_t in_before = g->st->avail_in;
		g->st->next_out = buf;
		g->st->avail_out = want;
		int ret = isal_inflate(g->st);
		if (ret < 0 || ret == ISAL_NEED_DICT)
			return gzip_fail(g, ret, err);
		size_t produced = want - g->st->avail_out;
		if (g->st->block_state == ISAL_BLOCK_FINISH) {
			g->in_member = false;
			g->members++;
		}
		if (produced > 0)
			return (ssize_t)produced;
		if (!g->in_member)
			continue;
		if (g->st->avail_in > 0) {
			/* Input left, room for output, nothing happened:
			 * never expected, but never spin on it. */
			if (g->st->avail_in == in_before)
				return alps_fail(err, ALPS_E_INTERNAL, "gzip decoder made no progress");
			continue;
		}
		int r = gzip_input(g, err);
		if (r < 0)
			return -1;
		if (r == 0)
			return alps_fail(err, ALPS_E_INVALID,
					 "truncated gzip stream (ends inside member %llu)",
					 (unsigned long long)g->members + 1);
	}
}

static void gzip_close(struct stream *s)
{
	struct gzip_stream *g = (struct gzip_stream *)s;
	stream_close(s->inner);
	free(g->st);
	free(g->in);
	free(g);
}

static struct stream *gzip_stream_new(struct stream *inner)
{
	struct gzip_stream *g = xzalloc(sizeof(*g));
	g->base.read = gzip_read;
	g->base.close = gzip_close;
	g->base.inner = inner;
	g->st = xmalloc(sizeof(*g->st));
	isal_inflate_init(g->st);
	g->in = xmalloc(DECOMP_IN_SIZE);
	return &g->base;
}

/* --- zstd --- */

struct zstd_stream {
	struct stream base;
	ZSTD_DStream *d;        /* owned */
	uint8_t *in;            /* owned; DECOMP_IN_SIZE */
	ZSTD_inBuffer ib;
	size_t last;            /* last ZSTD_decompressStream() result: 0 at a frame end */
	bool pending;           /* the output filled up: the decoder may hold more */
	bool any_input;
};

/* Refill the input unless the decoder may still have output to give;
 * 1 to go on decoding, 0 at a clean end, -1 on error. */
static int zstd_input(struct zstd_stream *z, alps_error **err)
{
	if (z->ib.pos < z->ib.size || z->pending)
		return 1;
	ssize_t n = refill(z->base.inner, z->in, err);
	if (n < 0)
		return -1;
	if (n > 0) {
		z->ib = (ZSTD_inBuffer){ .src = z->in, .size = (size_t)n, .pos = 0 };
		z->any_input = true;
		return 1;
	}
	if (!z->any_input)
		return alps_fail(err, ALPS_E_INVALID, "zstd stream is empty");
	if (z->last != 0)
		return alps_fail(err, ALPS_E_INVALID, "truncated zstd stream (ends inside a frame)");
	return 0;
}

static ssize_t zstd_read(struct stream *s, void *buf, size_t len, alps_error **err)
{
	struct zstd_stream *z = (struct zstd_stream *)s;
	for (;;) {
		int r = zstd_input(z, err);
		if (r <= 0)
			return r;
		ZSTD_outBuffer ob = { .dst = buf, .size = len, .pos = 0 };
		size_t ret = ZSTD_decompressStream(z->d, &ob, &z->ib);
		if (ZSTD_isError(ret))
			return alps_fail(err, ALPS_E_INVALID,
					 "corrupt zstd data near compressed byte %llu: %s",
					 (unsigned long long)(s->inner->bytes - (z->ib.size - z->ib.pos)),
					 ZSTD_getErrorName(ret));
		z->last = ret;
		z->pending = ob.pos == ob.size;
		if (ob.pos > 0)
			return (ssize_t)ob.pos;
	}
}

static void zstd_close(struct stream *s)
{
	struct zstd_stream *z = (struct zstd_stream *)s;
	stream_close(s->inner);
	ZSTD_freeDStream(z->d);
	free(z->in);
	free(z);
}

static struct stream *zstd_stream_new(struct stream *inner)
{
	struct zstd_stream *z = xzalloc(sizeof(*z));
	z->base.read = zstd_read;
	z->base.close = zstd_close;
	z->base.inner = inner;
	/* The decoder keeps zstd's default window limit (128 MiB): a frame
	 * asking for more is refused instead of allocating what a hostile
	 * header says. */
	z->d = ZSTD_createDStream();
	if (!z->d) {
		fprintf(stderr, "alps: out of memory creating a zstd decoder\n");
		abort();
	}
	z->in = xmalloc(DECOMP_IN_SIZE);
	return &z->base;
}

struct stream *stream_decompress(struct stream *inner, enum layer_compression c,
				 alps_error **err)
{
	switch (c) {
	case LAYER_COMPRESSION_NONE:
		return inner;
	case LAYER_COMPRESSION_GZIP:
		return gzip_stream_new(inner);
	case LAYER_COMPRESSION_ZSTD:
		return zstd_stream_new(inner);
	}
	stream_close(inner);
	alps_fail(err, ALPS_E_UNSUPPORTED, "unsupported layer compression %d", (int)c);
	return NULL;
}

/* --- chanbuf --- */

struct chanbuf {
	pthread_mutex_t lock;
	pthread_cond_t readable;    /* data, close or abort */
	pthread_cond_t writable;    /* room or abort */
	uint8_t *buf;               /* owned; ring of cap bytes */
	size_t cap, head, len;      /* read position, bytes stored */
	alps_error *error;          /* owned; the producer's failure */
	void (*space_fn)(void *arg);
	void *space_arg;
	int refs;
	bool closed, aborted, want_space;
};

struct chanbuf *chanbuf_new(size_t capacity)
{
	struct chanbuf *cb = xzalloc(sizeof(*cb));
	pthread_mutex_init(&cb->lock, NULL);
	pthread_cond_init(&cb->readable, NULL);
	pthread_cond_init(&cb->writable, NULL);
	cb->cap = capacity ? capacity : CHANBUF_DEFAULT_CAPACITY;
	cb->buf = xmalloc(cb->cap);
	cb->refs = 1;
	return cb;
}

void chanbuf_unref(struct chanbuf *cb)
{
	if (!cb)
		return;
	pthread_mutex_lock(&cb->lock);
	bool last = --cb->refs == 0;
	pthread_mutex_unlock(&cb->lock);
	if (!last)
		return;
	pthread_mutex_destroy(&cb->lock);
	pthread_cond_destroy(&cb->readable);
	pthread_cond_destroy(&cb->writable);
	alps_error_free(cb->error);
	free(cb->buf);
	free(cb);
}

/* Copy up to len bytes into the ring; the count.  Lock held. */
static size_t ring_put(struct chanbuf *cb, const uint8_t *src, size_t len)
{
	size_t room = cb->cap - cb->len;
	size_t n = len < room ? len : room;
	size_t tail = (cb->head + cb->len) % cb->cap;
	size_t first = cb->cap - tail < n ? cb->cap - tail : n;
	memcpy(cb->buf + tail, src, first);
	memcpy(cb->buf, src + first, n - first);
	cb->len += n;
	return n;
}

/* Copy up to len bytes out of the ring; the count.  Lock held. */
static size_t ring_get(struct chanbuf *cb, uint8_t *dst, size_t len)
{
	size_t n = len < cb->len ? len : cb->len;
	size_t first = cb->cap - cb->head < n ? cb->cap - cb->head : n;
	memcpy(dst, cb->buf + cb->head, first);
	memcpy(dst + first, cb->buf, n - first);
	cb->head = (cb->head + n) % cb->cap;
	cb->len -= n;
	return n;
}

/* Why a write cannot proceed, or 0.  Lock held. */
static int write_refused(struct chanbuf *cb, alps_error **err)
{
	if (cb->aborted)
		return alps_fail(err, ALPS_E_CANCELLED, "the layer consumer stopped reading");
	if (cb->closed)
		return alps_fail(err, ALPS_E_INTERNAL, "write to a closed chanbuf");
	return 0;
}

int chanbuf_write(struct chanbuf *cb, const void *buf, size_t len, alps_error **err)
{
	const uint8_t *p = buf;
	pthread_mutex_lock(&cb->lock);
	while (len > 0) {
		while (cb->len == cb->cap && !cb->aborted)
			pthread_cond_wait(&cb->writable, &cb->lock);
		if (write_refused(cb, err) < 0) {
			pthread_mutex_unlock(&cb->lock);
			return -1;
		}
		size_t n = ring_put(cb, p, len);
		p += n;
		len -= n;
		pthread_cond_signal(&cb->readable);
	}
	pthread_mutex_unlock(&cb->lock);
	return 0;
}

ssize_t chanbuf_try_write(struct chanbuf *cb, const void *buf, size_t len, alps_error **err)
{
	pthread_mutex_lock(&cb->lock);
	if (write_refused(cb, err) < 0) {
		pthread_mutex_unlock(&cb->lock);
		return -1;
	}
	size_t n = ring_put(cb, buf, len);
	if (n > 0)
		pthread_cond_signal(&cb->readable);
	if (n < len)
		cb->want_space = true;
	pthread_mutex_unlock(&cb->lock);
	return (ssize_t)n;
}

void chanbuf_set_space_cb(struct chanbuf *cb, void (*fn)(void *arg), void *arg)
{
	pthread_mutex_lock(&cb->lock);
	cb->space_fn = fn;
	cb->space_arg = arg;
	pthread_mutex_unlock(&cb->lock);
}

void chanbuf_close(struct chanbuf *cb, alps_error *err)
{
	pthread_mutex_lock(&cb->lock);
	if (cb->closed) {
		pthread_mutex_unlock(&cb->lock);
		alps_error_free(err);
		return;
	}
	cb->closed = true;
	cb->error = err;
	pthread_cond_broadcast(&cb->readable);
	pthread_mutex_unlock(&cb->lock);
}

/* Take the space callback if a short try_write is waiting for it.  The
 * callback runs after unlocking: it may well call back into the chanbuf. */
static void (*take_space_cb(struct chanbuf *cb, void **arg))(void *)
{
	if (!cb->want_space || !cb->space_fn)
		return NULL;
	cb->want_space = false;
	*arg = cb->space_arg;
	return cb->space_fn;
}

void chanbuf_abort(struct chanbuf *cb)
{
	void *arg = NULL;
	pthread_mutex_lock(&cb->lock);
	cb->aborted = true;
	pthread_cond_broadcast(&cb->writable);
	pthread_cond_broadcast(&cb->readable);
	void (*fn)(void *) = take_space_cb(cb, &arg);
	pthread_mutex_unlock(&cb->lock);
	if (fn)
		fn(arg);
}

/* A copy of the producer's error for the reader, which may ask again. */
static int chanbuf_error(const struct chanbuf *cb, alps_error **err)
{
	if (!err || *err)
		return -1;
	alps_error *e = xzalloc(sizeof(*e));
	e->code = cb->error->code;
	e->errnum = cb->error->errnum;
	e->msg = xstrdup(cb->error->msg);
	*err = e;
	return -1;
}

struct chanbuf_stream {
	struct stream base;
	struct chanbuf *cb;   /* one reference */
};

static ssize_t chanbuf_read(struct stream *s, void *buf, size_t len, alps_error **err)
{
	struct chanbuf *cb = ((struct chanbuf_stream *)s)->cb;
	void *arg = NULL;
	pthread_mutex_lock(&cb->lock);
	while (cb->len == 0 && !cb->closed && !cb->aborted)
		pthread_cond_wait(&cb->readable, &cb->lock);
	ssize_t n;
	if (cb->aborted)
		n = alps_fail(err, ALPS_E_CANCELLED, "layer transfer aborted");
	else if (cb->len > 0)
		n = (ssize_t)ring_get(cb, buf, len);
	else if (cb->error)
		n = chanbuf_error(cb, err);
	else
		n = 0;
	if (n > 0)
		pthread_cond_signal(&cb->writable);
	void (*fn)(void *) = n > 0 ? take_space_cb(cb, &arg) : NULL;
	pthread_mutex_unlock(&cb->lock);
	if (fn)
		fn(arg);
	return n;
}

static void chanbuf_stream_abort(struct stream *s)
{
	chanbuf_abort(((struct chanbuf_stream *)s)->cb);
}

static void chanbuf_stream_close(struct stream *s)
{
	struct chanbuf_stream *c = (struct chanbuf_stream *)s;
	chanbuf_abort(c->cb);
	chanbuf_unref(c->cb);
	free(c);
}

struct stream *chanbuf_stream(struct chanbuf *cb)
{
	struct chanbuf_stream *c = xzalloc(sizeof(*c));
	c->base.read = chanbuf_read;
	c->base.close = chanbuf_stream_close;
	c->base.abort = chanbuf_stream_abort;
	c->cb = cb;
	pthread_mutex_lock(&cb->lock);
	cb->refs++;
	pthread_mutex_unlock(&cb->lock);
	return &c->base;
}

/* --- readahead --- */

struct readahead {
	struct stream base;
	struct stream *reader;      /* owned; the chanbuf's consumer end */
	struct chanbuf *cb;         /* the producer's reference */
	struct stream *inner;       /* borrowed; used by the thread only */
	pthread_t thread;
	_Atomic uint64_t source;    /* stream_source_bytes(inner), from the thread */
};

static void *readahead_main(void *arg)
{
	struct readahead *r = arg;
	uint8_t *buf = xmalloc(DECOMP_IN_SIZE);
	alps_error *err = NULL;
	for (;;) {
		ssize_t n = stream_read(r->inner, buf, DECOMP_IN_SIZE, &err);
		atomic_store_explicit(&r->source, stream_source_bytes(r->inner), memory_order_relaxed);
		if (n <= 0) {
			chanbuf_close(r->cb, steal_pointer(&err));
			break;
		}
		/* Fails only when the reader has gone: nothing to tell. */
		if (chanbuf_write(r->cb, buf, (size_t)n, &err) < 0) {
			alps_error_free(err);
			break;
		}
	}
	free(buf);
	return NULL;
}

static ssize_t readahead_read(struct stream *s, void *buf, size_t len, alps_error **err)
{
	return stream_read(((struct readahead *)s)->reader, buf, len, err);
}

static uint64_t readahead_source_bytes(const struct stream *s)
{
	return atomic_load_explicit(&((const struct readahead *)s)->source, memory_order_relaxed);
}

static void readahead_close(struct stream *s)
{
	struct readahead *r = (struct readahead *)s;
	/* Closing the reader aborts the chanbuf, which stops the thread. */
	stream_close(r->reader);
	pthread_join(r->thread, NULL);
	chanbuf_unref(r->cb);
	free(r);
}

struct stream *stream_readahead(struct stream *inner, size_t capacity, alps_error **err)
{
	struct readahead *r = xzalloc(sizeof(*r));
	r->base.read = readahead_read;
	r->base.close = readahead_close;
	r->base.source_bytes = readahead_source_bytes;
	r->inner = inner;
	atomic_init(&r->source, stream_source_bytes(inner));
	r->cb = chanbuf_new(capacity);
	r->reader = chanbuf_stream(r->cb);
	int e = pthread_create(&r->thread, NULL, readahead_main, r);
	if (e != 0) {
		stream_close(r->reader);
		chanbuf_unref(r->cb);
		free(r);
		alps_fail_errnum(err, e, "starting a readahead thread");
		return NULL;
	}
	return &r->base;
}
