/* test_stream.c: byte streams, gzip/zstd decompression, media types,
 * chanbuf, readahead.
 *
 * Compressed test data is made with other encoders than the ones under test:
 * gzip with libarchive's writer (zlib underneath), zstd with libzstd's
 * one-shot compressor. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <zstd.h>

#include "common/error.h"
#include "common/util.h"
#include "daemon/image/stream.h"

struct buf {
	uint8_t *data;
	size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->data = xrealloc(b->data, b->cap);
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static la_ssize_t buf_write_cb(struct archive *a, void *arg, const void *p, size_t n)
{
	(void)a;
	buf_add(arg, p, n);
	return (la_ssize_t)n;
}

/* Mostly compressible bytes with some noise, so blocks of every kind show up. */
static uint8_t *test_data(size_t len)
{
	uint8_t *d = xmalloc(len);
	uint32_t x = 2463534242u;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		d[i] = (i / 4096) % 3 == 0 ? (uint8_t)x : (uint8_t)("layer data "[i % 11]);
	}
	return d;
}

/* One gzip member of data, from zlib through libarchive's raw writer. */
static void gzip_member(struct buf *out, const void *data, size_t len)
{
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_raw(a), ARCHIVE_OK);
	assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
	assert_int_equal(archive_write_set_bytes_in_last_block(a, 1), ARCHIVE_OK);
	assert_int_equal(archive_write_open(a, out, NULL, buf_write_cb, NULL), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_pathname(e, "x");
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	if (len)
		assert_int_equal(archive_write_data(a, data, len), (la_ssize_t)len);
	archive_entry_free(e);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

static void zstd_frame(struct buf *out, const void *data, size_t len)
{
	size_t cap = ZSTD_compressBound(len);
	uint8_t *tmp = xmalloc(cap);
	size_t n = ZSTD_compress(tmp, cap, data, len, 3);
	assert_false(ZSTD_isError(n));
	buf_add(out, tmp, n);
	free(tmp);
}

/* Read s to its end with reads of chunk bytes; -1 with *err on failure. */
static ssize_t read_all(struct stream *s, struct buf *out, size_t chunk, alps_error **err)
{
	uint8_t *tmp = xmalloc(chunk);
	ssize_t n;
	while ((n = stream_read(s, tmp, chunk, err)) > 0)
		buf_add(out, tmp, (size_t)n);
	free(tmp);
	return n < 0 ? -1 : (ssize_t)out->len;
}

static void expect_decoded(struct buf *compressed, enum layer_compression c,
			   const uint8_t *want, size_t want_len, size_t chunk)
{
	alps_error *err = NULL;
	struct stream *s = stream_decompress(stream_from_memory(compressed->data, compressed->len),
					     c, &err);
	assert_non_null(s);
	struct buf out = { 0 };
	assert_int_equal(read_all(s, &out, chunk, &err), (ssize_t)want_len);
	assert_null(err);
	assert_memory_equal(out.data, want, want_len);
	assert_int_equal(s->bytes, want_len);
	assert_int_equal(stream_source_bytes(s), compressed->len);
	stream_close(s);
	free(out.data);
}

static alps_error *decode_error(const void *data, size_t len, enum layer_compression c)
{
	alps_error *err = NULL;
	struct stream *s = stream_decompress(stream_from_memory(data, len), c, &err);
	assert_non_null(s);
	struct buf out = { 0 };
	assert_int_equal(read_all(s, &out, 65536, &err), -1);
	assert_non_null(err);
	stream_close(s);
	free(out.data);
	return err;
}

static void test_fd_and_memory(void **state)
{
	(void)state;
	char path[] = "/tmp/alps-test-stream-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	uint8_t *d = test_data(300000);
	assert_int_equal(write_all(fd, d, 300000), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	unlink(path);
	alps_error *err = NULL;
	struct stream *s = stream_from_fd(fd);
	struct buf out = { 0 };
	assert_int_equal(read_all(s, &out, 4096, &err), 300000);
	assert_memory_equal(out.data, d, 300000);
	assert_int_equal(stream_source_bytes(s), 300000);
	stream_close(s);
	free(out.data);

	/* NONE is the identity. */
	s = stream_decompress(stream_from_memory(d, 1000), LAYER_COMPRESSION_NONE, &err);
	out = (struct buf){ 0 };
	assert_int_equal(read_all(s, &out, 7, &err), 1000);
	assert_memory_equal(out.data, d, 1000);
	stream_close(s);
	free(out.data);

	/* A read error carries errno and a message. */
	s = stream_from_fd(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	uint8_t b[16];
	assert_int_equal(stream_read(s, b, sizeof(b), &err), -1);
	assert_int_equal(err->errnum, EISDIR);
	assert_int_equal(err->code, ALPS_E_IO);
	alps_error_free(err);
	stream_close(s);
	free(d);
}

static void test_gzip(void **state)
{
	(void)state;
	size_t len = 5 << 20;
	uint8_t *d = test_data(len);
	struct buf gz = { 0 };
	gzip_member(&gz, d, len);
	expect_decoded(&gz, LAYER_COMPRESSION_GZIP, d, len, 1 << 20);
	expect_decoded(&gz, LAYER_COMPRESSION_GZIP, d, len, 1000);

	/* Multi-member: members decode one after the other. */
	struct buf multi = { 0 };
	gzip_member(&multi, d, len / 2);
	gzip_member(&multi, NULL, 0);
	gzip_member(&multi, d + len / 2, len - len / 2);
	expect_decoded(&multi, LAYER_COMPRESSION_GZIP, d, len, 65536);
	free(multi.data);
	free(gz.data);
	free(d);
}

static void test_gzip_errors(void **state)
{
	(void)state;
	uint8_t *d = test_data(200000);
	struct buf gz = { 0 };
	gzip_member(&gz, d, 200000);
	alps_error *err;

	err = decode_error(gz.data, gz.len - 3, LAYER_COMPRESSION_GZIP);
	assert_int_equal(err->code, ALPS_E_INVALID);
	assert_non_null(strstr(err->msg, "truncated gzip stream"));
	alps_error_free(err);

	err = decode_error(gz.data, gz.len / 2, LAYER_COMPRESSION_GZIP);
	assert_non_null(strstr(err->msg, "truncated gzip stream"));
	alps_error_free(err);

	/* A flipped CRC byte in the trailer. */
	gz.data[gz.len - 6] ^= 0x55;
	err = decode_error(gz.data, gz.len, LAYER_COMPRESSION_GZIP);
	assert_int_equal(err->code, ALPS_E_INTEGRITY);
	gz.data[gz.len - 6] ^= 0x55;
	alps_error_free(err);

	/* Not gzip at all, and gzip followed by something else. */
	err = decode_error(d, 5000, LAYER_COMPRESSION_GZIP);
	assert_int_equal(err->code, ALPS_E_INVALID);
	alps_error_free(err);
	buf_add(&gz, "garbage after the member", 24);
	err = decode_error(gz.data, gz.len, LAYER_COMPRESSION_GZIP);
	assert_int_equal(err->code, ALPS_E_INVALID);
	assert_non_null(strstr(err->msg, "invalid gzip header"));
	alps_error_free(err);

	err = decode_error("", 0, LAYER_COMPRESSION_GZIP);
	assert_string_equal(err->msg, "gzip stream is empty");
	alps_error_free(err);
	free(gz.data);
	free(d);
}

static void test_zstd(void **state)
{
	(void)state;
	size_t len = 3 << 20;
	uint8_t *d = test_data(len);
	struct buf z = { 0 };
	zstd_frame(&z, d, len / 3);
	zstd_frame(&z, d + len / 3, len - len / 3);
	expect_decoded(&z, LAYER_COMPRESSION_ZSTD, d, len, 1 << 20);
	expect_decoded(&z, LAYER_COMPRESSION_ZSTD, d, len, 333);

	alps_error *err = decode_error(z.data, z.len - 1, LAYER_COMPRESSION_ZSTD);
	assert_non_null(strstr(err->msg, "truncated zstd stream"));
	alps_error_free(err);
	err = decode_error(d, 4096, LAYER_COMPRESSION_ZSTD);
	assert_int_equal(err->code, ALPS_E_INVALID);
	assert_non_null(strstr(err->msg, "corrupt zstd data"));
	alps_error_free(err);
	err = decode_error("", 0, LAYER_COMPRESSION_ZSTD);
	assert_string_equal(err->msg, "zstd stream is empty");
	alps_error_free(err);
	free(z.data);
	free(d);
}

static void test_media_types(void **state)
{
	(void)state;
	static const struct {
		const char *type;
		enum layer_compression c;
	} known[] = {
		{ "application/vnd.oci.image.layer.v1.tar", LAYER_COMPRESSION_NONE },
		{ "application/vnd.oci.image.layer.v1.tar+gzip", LAYER_COMPRESSION_GZIP },
		{ "application/vnd.oci.image.layer.v1.tar+zstd", LAYER_COMPRESSION_ZSTD },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", LAYER_COMPRESSION_GZIP },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", LAYER_COMPRESSION_ZSTD },
		{ "application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_COMPRESSION_GZIP },
		{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", LAYER_COMPRESSION_GZIP },
		{ "Application/VND.OCI.image.layer.v1.tar+GZIP", LAYER_COMPRESSION_GZIP },
	};
	alps_error *err = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
		enum layer_compression c = 99;
		assert_int_equal(stream_media_type_compression(known[i].type, &c, &err), 0);
		assert_int_equal(c, known[i].c);
	}
	enum layer_compression c;
	assert_int_equal(stream_media_type_compression("application/vnd.oci.image.layer.v1.tar+bz2",
						       &c, &err), -1);
	assert_int_equal(err->code, ALPS_E_UNSUPPORTED);
	assert_string_equal(err->msg, "unsupported layer media type "
				      "'application/vnd.oci.image.layer.v1.tar+bz2'");
	alps_error_free(err);
	assert_string_equal(layer_compression_name(LAYER_COMPRESSION_ZSTD), "zstd");
}

/* --- chanbuf --- */

struct producer {
	struct chanbuf *cb;
	const uint8_t *data;
	size_t len;
	int result;
	int code;                   /* error code of a failed write */
	bool fail_at_end;
};

static void *produce(void *arg)
{
	struct producer *p = arg;
	alps_error *err = NULL;
	size_t off = 0, step = 1;
	p->result = 0;
	while (off < p->len) {
		/* Odd sizes, so that writes wrap around the ring anywhere. */
		size_t n = p->len - off < step ? p->len - off : step;
		if (chanbuf_write(p->cb, p->data + off, n, &err) < 0) {
			p->result = -1;
			p->code = err->code;
			alps_error_free(err);
			chanbuf_close(p->cb, NULL);
			return NULL;
		}
		off += n;
		step = step * 7 % 100003 + 1;
	}
	alps_error *end = NULL;
	if (p->fail_at_end)
		alps_fail(&end, ALPS_E_UNAVAILABLE, "registry connection reset");
	chanbuf_close(p->cb, end);
	return NULL;
}

static void test_chanbuf_transfer(void **state)
{
	(void)state;
	size_t len = 8 << 20;
	uint8_t *d = test_data(len);
	for (int fail = 0; fail < 2; fail++) {
		struct producer p = { .cb = chanbuf_new(65536 + 17), .data = d, .len = len,
				      .fail_at_end = fail };
		struct stream *s = chanbuf_stream(p.cb);
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, produce, &p), 0);
		struct buf out = { 0 };
		alps_error *err = NULL;
		ssize_t n = read_all(s, &out, 40000, &err);
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_int_equal(p.result, 0);
		assert_int_equal(out.len, len);
		assert_memory_equal(out.data, d, len);
		if (fail) {
			/* The bytes first, then the producer's error, every time. */
			assert_int_equal(n, -1);
			assert_int_equal(err->code, ALPS_E_UNAVAILABLE);
			assert_string_equal(err->msg, "registry connection reset");
			alps_error_free(err);
			err = NULL;
			uint8_t b[8];
			assert_int_equal(stream_read(s, b, sizeof(b), &err), -1);
			assert_int_equal(err->code, ALPS_E_UNAVAILABLE);
			alps_error_free(err);
		} else {
			assert_int_equal(n, (ssize_t)len);
		}
		stream_close(s);
		chanbuf_unref(p.cb);
		free(out.data);
	}
	free(d);
}

static void test_chanbuf_abort(void **state)
{
	(void)state;
	size_t len = 4 << 20;
	uint8_t *d = test_data(len);
	/* The consumer reads a little, then closes its stream: the producer,
	 * blocked on a full buffer, must wake up and fail. */
	struct producer p = { .cb = chanbuf_new(4096), .data = d, .len = len };
	struct stream *s = chanbuf_stream(p.cb);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, produce, &p), 0);
	uint8_t b[1000];
	alps_error *err = NULL;
	assert_true(stream_read(s, b, sizeof(b), &err) > 0);
	usleep(20000);
	stream_close(s);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(p.result, -1);
	assert_int_equal(p.code, ALPS_E_CANCELLED);
	chanbuf_unref(p.cb);
	free(d);
}

static int space_calls;

static void on_space(void *arg)
{
	(void)arg;
	space_calls++;
}

static void test_chanbuf_try_write(void **state)
{
	(void)state;
	struct chanbuf *cb = chanbuf_new(10);
	struct stream *s = chanbuf_stream(cb);
	chanbuf_set_space_cb(cb, on_space, NULL);
	alps_error *err = NULL;
	assert_int_equal(chanbuf_try_write(cb, "0123456789abcdef", 16, &err), 10);
	assert_int_equal(chanbuf_try_write(cb, "abcdef", 6, &err), 0);
	char b[4];
	assert_int_equal(space_calls, 0);
	assert_int_equal(stream_read(s, b, 4, &err), 4);
	assert_memory_equal(b, "0123", 4);
	assert_int_equal(space_calls, 1);
	/* Once per short write, not per read. */
	assert_int_equal(stream_read(s, b, 4, &err), 4);
	assert_int_equal(space_calls, 1);
	assert_int_equal(chanbuf_try_write(cb, "abcdef", 6, &err), 6);
	chanbuf_close(cb, NULL);
	assert_int_equal(chanbuf_write(cb, "x", 1, &err), -1);
	assert_int_equal(err->code, ALPS_E_INTERNAL);
	alps_error_free(err);
	err = NULL;
	struct buf out = { 0 };
	assert_int_equal(read_all(s, &out, 3, &err), 8);
	assert_memory_equal(out.data, "89abcdef", 8);
	free(out.data);
	/* After the consumer aborts, writes fail at once. */
	chanbuf_abort(cb);
	assert_int_equal(chanbuf_try_write(cb, "x", 1, &err), -1);
	assert_int_equal(err->code, ALPS_E_CANCELLED);
	alps_error_free(err);
	stream_close(s);
	chanbuf_unref(cb);
}

/* The chain the pull code builds: chanbuf -> gzip -> reader. */
static void test_chanbuf_gzip_chain(void **state)
{
	(void)state;
	size_t len = 6 << 20;
	uint8_t *d = test_data(len);
	struct buf gz = { 0 };
	gzip_member(&gz, d, len);
	struct producer p = { .cb = chanbuf_new(0), .data = gz.data, .len = gz.len };
	alps_error *err = NULL;
	struct stream *s = stream_decompress(chanbuf_stream(p.cb), LAYER_COMPRESSION_GZIP, &err);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, produce, &p), 0);
	struct buf out = { 0 };
	assert_int_equal(read_all(s, &out, 1 << 20, &err), (ssize_t)len);
	assert_memory_equal(out.data, d, len);
	assert_int_equal(stream_source_bytes(s), gz.len);
	assert_int_equal(pthread_join(t, NULL), 0);
	stream_close(s);
	chanbuf_unref(p.cb);
	free(out.data);
	free(gz.data);
	free(d);
}

static void test_readahead(void **state)
{
	(void)state;
	size_t len = 6 << 20;
	uint8_t *d = test_data(len);
	struct buf gz = { 0 };
	gzip_member(&gz, d, len);
	alps_error *err = NULL;

	struct stream *inner = stream_decompress(stream_from_memory(gz.data, gz.len),
						 LAYER_COMPRESSION_GZIP, &err);
	struct stream *r = stream_readahead(inner, 65536, &err);
	assert_non_null(r);
	struct buf out = { 0 };
	assert_int_equal(read_all(r, &out, 100000, &err), (ssize_t)len);
	assert_memory_equal(out.data, d, len);
	assert_int_equal(stream_source_bytes(r), gz.len);
	stream_close(r);
	stream_close(inner);
	free(out.data);

	/* The inner stream's error arrives after the data before it. */
	inner = stream_decompress(stream_from_memory(gz.data, gz.len - 5), LAYER_COMPRESSION_GZIP, &err);
	r = stream_readahead(inner, 0, &err);
	out = (struct buf){ 0 };
	assert_int_equal(read_all(r, &out, 1 << 20, &err), -1);
	assert_non_null(strstr(err->msg, "truncated gzip stream"));
	alps_error_free(err);
	err = NULL;
	stream_close(r);
	stream_close(inner);
	free(out.data);

	/* Closed early, with the thread blocked on a full buffer. */
	inner = stream_decompress(stream_from_memory(gz.data, gz.len), LAYER_COMPRESSION_GZIP, &err);
	r = stream_readahead(inner, 4096, &err);
	uint8_t b[1000];
	assert_int_equal(stream_read(r, b, sizeof(b), &err), (ssize_t)sizeof(b));
	assert_memory_equal(b, d, sizeof(b));
	usleep(10000);
	stream_close(r);
	stream_close(inner);
	free(gz.data);
	free(d);
}

/* A stalled producer: stream_abort() from another thread frees a reader
 * blocked behind readahead and decompression. */
static void test_abort(void **state)
{
	(void)state;
	struct chanbuf *cb = chanbuf_new(0);
	alps_error *err = NULL;
	struct stream *chain = stream_decompress(chanbuf_stream(cb), LAYER_COMPRESSION_GZIP, &err);
	struct stream *r = stream_readahead(chain, 0, &err);
	usleep(20000);
	stream_abort(chain);
	uint8_t b[16];
	assert_int_equal(stream_read(r, b, sizeof(b), &err), -1);
	assert_int_equal(err->code, ALPS_E_CANCELLED);
	alps_error_free(err);
	err = NULL;
	assert_int_equal(chanbuf_write(cb, "x", 1, &err), -1);
	assert_int_equal(err->code, ALPS_E_CANCELLED);
	alps_error_free(err);
	stream_close(r);
	stream_close(chain);
	chanbuf_unref(cb);
	/* Nothing to abort: harmless. */
	struct stream *m = stream_from_memory("x", 1);
	stream_abort(m);
	stream_close(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fd_and_memory),
		cmocka_unit_test(test_gzip),
		cmocka_unit_test(test_gzip_errors),
		cmocka_unit_test(test_zstd),
		cmocka_unit_test(test_media_types),
		cmocka_unit_test(test_chanbuf_transfer),
		cmocka_unit_test(test_chanbuf_abort),
		cmocka_unit_test(test_chanbuf_try_write),
		cmocka_unit_test(test_chanbuf_gzip_chain),
		cmocka_unit_test(test_readahead),
		cmocka_unit_test(test_abort),
	};
	return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
