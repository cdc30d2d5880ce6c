/* test_frame.c: framing, reader and writer over a real socketpair, with
 * fd passing. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "proto/frame.h"

static void test_decode_incomplete(void **state)
{
	const uint8_t buf[] = { 0, 0, 0, 5, 'a', 'b' };
	const uint8_t *p;
	size_t n, used;
	assert_int_equal(frame_decode(buf, 0, 100, &p, &n, &used), FRAME_INCOMPLETE);
	assert_int_equal(frame_decode(buf, 3, 100, &p, &n, &used), FRAME_INCOMPLETE);
	assert_int_equal(frame_decode(buf, sizeof(buf), 100, &p, &n, &used), FRAME_INCOMPLETE);
}

static void test_decode_complete_and_empty(void **state)
{
	const uint8_t buf[] = { 0, 0, 0, 2, 'h', 'i', 0, 0, 0, 0 };
	const uint8_t *p;
	size_t n, used;
	assert_int_equal(frame_decode(buf, sizeof(buf), 100, &p, &n, &used), FRAME_COMPLETE);
	assert_int_equal(n, 2);
	assert_int_equal(used, 6);
	assert_memory_equal(p, "hi", 2);
	assert_int_equal(frame_decode(buf + used, 4, 100, &p, &n, &used), FRAME_COMPLETE);
	assert_int_equal(n, 0);
	assert_int_equal(used, 4);
}

static void test_decode_too_large(void **state)
{
	uint8_t hdr[4];
	const uint8_t *p;
	size_t n, used;
	frame_encode_header(hdr, 101);
	assert_int_equal(frame_decode(hdr, 4, 100, &p, &n, &used), FRAME_ERR_TOO_LARGE);
	frame_encode_header(hdr, 100);
	assert_int_equal(frame_decode(hdr, 4, 100, &p, &n, &used), FRAME_INCOMPLETE);
	frame_encode_header(hdr, 0xffffffffu);
	assert_int_equal(frame_decode(hdr, 4, FRAME_DEFAULT_MAX, &p, &n, &used), FRAME_ERR_TOO_LARGE);
}

static void test_header_big_endian(void **state)
{
	uint8_t hdr[4];
	frame_encode_header(hdr, 0x01020304u);
	assert_int_equal(hdr[0], 1);
	assert_int_equal(hdr[3], 4);
}

static void socketpair_nb(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
}

/* Several frames written in one go come out one by one, in order. */
static void test_roundtrip_many(void **state)
{
	int sv[2];
	socketpair_nb(sv);
	struct frame_writer w;
	struct frame_reader r;
	frame_writer_init(&w);
	frame_reader_init(&r, 1024);
	for (int i = 0; i < 10; i++) {
		char msg[16];
		int len = snprintf(msg, sizeof(msg), "msg-%d", i);
		frame_writer_push(&w, (uint8_t *)msg, (size_t)len, NULL, 0);
	}
	assert_int_equal(frame_writer_flush(&w, sv[0]), 1);
	assert_true(frame_reader_fill(&r, sv[1]) > 0);
	for (int i = 0; i < 10; i++) {
		const uint8_t *p;
		size_t n;
		char want[16];
		int len = snprintf(want, sizeof(want), "msg-%d", i);
		assert_int_equal(frame_reader_next(&r, &p, &n), FRAME_COMPLETE);
		assert_int_equal(n, (size_t)len);
		assert_memory_equal(p, want, n);
	}
	const uint8_t *p;
	size_t n;
	assert_int_equal(frame_reader_next(&r, &p, &n), FRAME_INCOMPLETE);
	assert_int_equal(frame_reader_buffered(&r), 0);
	frame_writer_release(&w);
	frame_reader_release(&r);
	close(sv[0]);
	close(sv[1]);
}

/* A frame trickled byte by byte is only complete at its last byte. */
static void test_trickle(void **state)
{
	int sv[2];
	socketpair_nb(sv);
	struct frame_reader r;
	frame_reader_init(&r, 1024);
	const uint8_t frame[] = { 0, 0, 0, 3, 'a', 'b', 'c' };
	for (size_t i = 0; i < sizeof(frame); i++) {
		const uint8_t *p;
		size_t n;
		assert_int_equal(frame_reader_next(&r, &p, &n), FRAME_INCOMPLETE);
		assert_int_equal(write(sv[0], &frame[i], 1), 1);
		assert_int_equal(frame_reader_fill(&r, sv[1]), 1);
	}
	const uint8_t *p;
	size_t n;
	assert_int_equal(frame_reader_next(&r, &p, &n), FRAME_COMPLETE);
	assert_memory_equal(p, "abc", 3);
	frame_reader_release(&r);
	close(sv[0]);
	close(sv[1]);
}

/* The reader never buffers much more than one maximal frame. */
static void test_reader_bounded(void **state)
{
	int sv[2];
	socketpair_nb(sv);
	int big = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	struct frame_reader r;
	frame_reader_init(&r, 16);
	uint8_t junk[4096];
	memset(junk, 0, sizeof(junk));   /* zero-length frames, many */
	assert_int_equal(write(sv[0], junk, sizeof(junk)), (ssize_t)sizeof(junk));
	ssize_t got = frame_reader_fill(&r, sv[1]);
	assert_true(got > 0);
	assert_int_equal(write(sv[0], junk, sizeof(junk)), (ssize_t)sizeof(junk));
	size_t total = (size_t)got;
	for (int i = 0; i < 100; i++) {
		ssize_t n = frame_reader_fill(&r, sv[1]);
		if (n <= 0)
			break;
		total += (size_t)n;
	}
	assert_true(frame_reader_buffered(&r) <= 16 + FRAME_HEADER_SIZE + 64 * 1024);
	frame_reader_release(&r);
	close(sv[0]);
	close(sv[1]);
}

static void test_fd_passing(void **state)
{
	int sv[2];
	socketpair_nb(sv);
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	struct frame_writer w;
	struct frame_reader r;
	frame_writer_init(&w);
	frame_reader_init(&r, 1024);
	frame_writer_push(&w, (const uint8_t *)"x", 1, &fd, 1);
	close(fd);   /* the writer holds its own duplicate */
	assert_int_equal(frame_writer_flush(&w, sv[0]), 1);
	assert_true(frame_reader_fill(&r, sv[1]) > 0);
	const uint8_t *p;
	size_t n;
	assert_int_equal(frame_reader_next(&r, &p, &n), FRAME_COMPLETE);
	int got[FRAME_MAX_FDS];
	assert_int_equal(frame_reader_take_fds(&r, got, FRAME_MAX_FDS), 1);
	struct stat a, b;
	assert_int_equal(fstat(got[0], &a), 0);
	assert_int_equal(stat("/dev/null", &b), 0);
	assert_true(a.st_rdev == b.st_rdev);
	assert_true(fcntl(got[0], F_GETFD) & FD_CLOEXEC);
	close(got[0]);
	frame_writer_release(&w);
	frame_reader_release(&r);
	close(sv[0]);
	close(sv[1]);
}

static void test_writer_partial(void **state)
{
	int sv[2];
	socketpair_nb(sv);
	int small = 4096;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	struct frame_writer w;
	struct frame_reader r;
	frame_writer_init(&w);
	frame_reader_init(&r, 1 << 20);
	size_t len = 512 * 1024;
	uint8_t *big = xmalloc(len);
	for (size_t i = 0; i < len; i++)
		big[i] = (uint8_t)(i * 7);
	frame_writer_push(&w, big, len, NULL, 0);
	assert_int_equal(frame_writer_flush(&w, sv[0]), 0);   /* would block */
	const uint8_t *p;
	size_t n;
	int rc = FRAME_INCOMPLETE;
	for (int i = 0; i < 100000 && rc != FRAME_COMPLETE; i++) {
		frame_writer_flush(&w, sv[0]);
		frame_reader_fill(&r, sv[1]);
		rc = frame_reader_next(&r, &p, &n);
	}
	assert_int_equal(rc, FRAME_COMPLETE);
	assert_int_equal(n, len);
	assert_memory_equal(p, big, len);
	free(big);
	frame_writer_release(&w);
	frame_reader_release(&r);
	close(sv[0]);
	close(sv[1]);
}

static void test_eof(void **state)
{
	int sv[2];
	socketpair_nb(sv);
	struct frame_reader r;
	frame_reader_init(&r, 1024);
	close(sv[0]);
	assert_int_equal(frame_reader_fill(&r, sv[1]), 0);
	frame_reader_release(&r);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_incomplete),
		cmocka_unit_test(test_decode_complete_and_empty),
		cmocka_unit_test(test_decode_too_large),
		cmocka_unit_test(test_header_big_endian),
		cmocka_unit_test(test_roundtrip_many),
		cmocka_unit_test(test_trickle),
		cmocka_unit_test(test_reader_bounded),
		cmocka_unit_test(test_fd_passing),
		cmocka_unit_test(test_writer_partial),
		cmocka_unit_test(test_eof),
	};
	return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
