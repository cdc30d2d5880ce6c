/* test_fabric_msg.c: the fabric message codec; every malformed datagram
 * is rejected and nothing valid is. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"
#include "daemon/node/fabric_msg.h"

#define DIGEST_A "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void make_ping(struct fabric_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->type = FABRIC_MSG_PING;
	snprintf(m->node, sizeof(m->node), "nid001234");
	m->seq = 42;
	m->ts_ns = 0x0102030405060708ull;
	m->incarnation = 0xdeadbeefcafef00dull;
	m->naddrs = 2;
	m->addrs[0].format = 2;
	m->addrs[0].len = 16;
	memset(m->addrs[0].bytes, 0xab, 16);
	m->addrs[1].format = 0x10;
	m->addrs[1].len = 8;
	memset(m->addrs[1].bytes, 0x01, 8);
}

static void make_pin(struct fabric_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->type = FABRIC_MSG_PIN;
	snprintf(m->node, sizeof(m->node), "nid000001");
	snprintf(m->job, sizeof(m->job), "4242");
	snprintf(m->reference, sizeof(m->reference), "docker.io/library/ubuntu:24.04");
	snprintf(m->digest, sizeof(m->digest), "%s", DIGEST_A);
}

static size_t encode(const struct fabric_msg *m, uint8_t *buf)
{
	const char *why = NULL;
	ssize_t n = fabric_msg_encode(m, buf, FABRIC_MSG_MAX, &why);
	assert_null(why);
	assert_true(n > FABRIC_MSG_HEADER_SIZE);
	return (size_t)n;
}

static void assert_rejected(const uint8_t *buf, size_t len)
{
	struct fabric_msg m;
	const char *why = NULL;
	assert_int_equal(fabric_msg_decode(buf, len, &m, &why), -1);
	assert_non_null(why);
	assert_int_equal(m.type, 0);        /* nothing half-decoded is left behind */
}

static void test_roundtrip_ping(void **state)
{
	struct fabric_msg in, out;
	uint8_t buf[FABRIC_MSG_MAX];
	make_ping(&in);
	size_t n = encode(&in, buf);
	assert_int_equal(fabric_msg_decode(buf, n, &out, NULL), 0);
	assert_int_equal(out.type, FABRIC_MSG_PING);
	assert_string_equal(out.node, "nid001234");
	assert_int_equal(out.seq, 42);
	assert_true(out.ts_ns == in.ts_ns);
	assert_true(out.incarnation == in.incarnation);
	assert_int_equal(out.naddrs, 2);
	assert_int_equal(out.addrs[1].format, 0x10);
	assert_memory_equal(out.addrs[0].bytes, in.addrs[0].bytes, 16);
	/* The header is big-endian and the length is the payload's. */
	assert_memory_equal(buf, "ALPF", 4);
	assert_int_equal(buf[4], FABRIC_MSG_VERSION);
	assert_int_equal(buf[5], FABRIC_MSG_PING);
	assert_int_equal(((size_t)buf[10] << 8) | buf[11], n - FABRIC_MSG_HEADER_SIZE);
}

static void test_roundtrip_pong_no_addrs(void **state)
{
	struct fabric_msg in, out;
	uint8_t buf[FABRIC_MSG_MAX];
	make_ping(&in);
	in.type = FABRIC_MSG_PONG;
	in.naddrs = 0;
	size_t n = encode(&in, buf);
	assert_int_equal(fabric_msg_decode(buf, n, &out, NULL), 0);
	assert_int_equal(out.type, FABRIC_MSG_PONG);
	assert_int_equal(out.naddrs, 0);
}

static void test_roundtrip_pin(void **state)
{
	struct fabric_msg in, out;
	uint8_t buf[FABRIC_MSG_MAX];
	make_pin(&in);
	size_t n = encode(&in, buf);
	assert_int_equal(fabric_msg_decode(buf, n, &out, NULL), 0);
	assert_int_equal(out.type, FABRIC_MSG_PIN);
	assert_string_equal(out.job, "4242");
	assert_string_equal(out.reference, "docker.io/library/ubuntu:24.04");
	assert_string_equal(out.digest, DIGEST_A);
	assert_string_equal(out.node, "nid000001");
}

/* Every proper prefix of a valid datagram, and the datagram with any byte
 * appended, is rejected. */
static void test_truncated_and_trailing(void **state)
{
	struct fabric_msg m;
	uint8_t buf[FABRIC_MSG_MAX + 1];
	for (int kind = 0; kind < 2; kind++) {
		kind ? make_pin(&m) : make_ping(&m);
		size_t n = encode(&m, buf);
		for (size_t len = 0; len < n; len++)
			assert_rejected(buf, len);
		buf[n] = 0;
		assert_rejected(buf, n + 1);
	}
}

static void test_header_fields(void **state)
{
	struct fabric_msg m;
	uint8_t buf[FABRIC_MSG_MAX], bad[FABRIC_MSG_MAX];
	make_ping(&m);
	size_t n = encode(&m, buf);
	static const size_t offsets[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 };
	for (size_t i = 0; i < ARRAY_SIZE(offsets); i++) {
		memcpy(bad, buf, n);
		bad[offsets[i]] ^= 0x40;        /* magic, version, type, reserved, length */
		assert_rejected(bad, n);
	}
	memcpy(bad, buf, n);
	bad[5] = 99;                            /* unknown type */
	assert_rejected(bad, n);
	bad[5] = 0;
	assert_rejected(bad, n);
}

static void test_too_long(void **state)
{
	static uint8_t big[FABRIC_MSG_MAX + 16];
	struct fabric_msg m;
	make_ping(&m);
	size_t n = encode(&m, big);
	/* A valid message padded past the maximum, with a length to match. */
	size_t len = FABRIC_MSG_MAX + 8;
	size_t payload = len - FABRIC_MSG_HEADER_SIZE;
	big[10] = (uint8_t)(payload >> 8);
	big[11] = (uint8_t)payload;
	memset(big + n, 0, len - n);
	assert_rejected(big, len);
}

/* Offset of the node string's length field in a ping. */
#define PING_NODE_OFF (FABRIC_MSG_HEADER_SIZE + 24)

static void test_bad_strings(void **state)
{
	struct fabric_msg m;
	uint8_t buf[FABRIC_MSG_MAX], bad[FABRIC_MSG_MAX];
	make_ping(&m);
	size_t n = encode(&m, buf);
	size_t slen = ((size_t)buf[PING_NODE_OFF] << 8) | buf[PING_NODE_OFF + 1];
	assert_int_equal(slen, strlen("nid001234") + 1);

	memcpy(bad, buf, n);
	bad[PING_NODE_OFF + 2 + slen - 1] = 'x';        /* no terminating NUL */
	assert_rejected(bad, n);
	memcpy(bad, buf, n);
	bad[PING_NODE_OFF + 2 + 3] = '\0';              /* embedded NUL */
	assert_rejected(bad, n);
	memcpy(bad, buf, n);
	bad[PING_NODE_OFF + 2] = '/';                   /* not a host name */
	assert_rejected(bad, n);
	memcpy(bad, buf, n);
	bad[PING_NODE_OFF + 2] = (char)0xc3;            /* not ASCII */
	assert_rejected(bad, n);
	static const uint16_t lens[] = { 0, 1, 0xffff, FABRIC_NODE_MAX + 2 };
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		memcpy(bad, buf, n);
		bad[PING_NODE_OFF] = (uint8_t)(lens[i] >> 8);
		bad[PING_NODE_OFF + 1] = (uint8_t)lens[i];
		assert_rejected(bad, n);
	}
}

static void test_bad_addresses(void **state)
{
	struct fabric_msg m;
	uint8_t buf[FABRIC_MSG_MAX], bad[FABRIC_MSG_MAX];
	make_ping(&m);
	size_t n = encode(&m, buf);
	size_t naddr_off = PING_NODE_OFF + 2 + strlen("nid001234") + 1;
	assert_int_equal(buf[naddr_off], 2);
	static const uint8_t counts[] = { 3, FABRIC_MSG_ADDRS_MAX + 1, 255 };
	for (size_t i = 0; i < ARRAY_SIZE(counts); i++) {
		memcpy(bad, buf, n);
		bad[naddr_off] = counts[i];
		assert_rejected(bad, n);
	}
	size_t len_off = naddr_off + 1 + 4;
	static const uint8_t lens[] = { 0, 17, FABRIC_ADDR_MAX + 1, 255 };
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		memcpy(bad, buf, n);
		bad[len_off] = lens[i];
		assert_rejected(bad, n);
	}
	/* One address fewer than announced, with the length fixed up. */
	memcpy(bad, buf, n);
	bad[naddr_off] = 1;
	assert_rejected(bad, n);
}

static void test_bad_pin_fields(void **state)
{
	struct fabric_msg m;
	uint8_t buf[FABRIC_MSG_MAX];
	const char *why;
	static const char *const digests[] = {
		"sha256:0123", "md5:0123456789abcdef0123456789abcdef",
		"sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", "",
	};
	for (size_t i = 0; i < ARRAY_SIZE(digests); i++) {
		make_pin(&m);
		snprintf(m.digest, sizeof(m.digest), "%s", digests[i]);
		assert_int_equal(fabric_msg_encode(&m, buf, sizeof(buf), &why), -1);
	}
	static const char *const refs[] = { "", "a b", "ubuntu\n", "x\x7f" };
	for (size_t i = 0; i < ARRAY_SIZE(refs); i++) {
		make_pin(&m);
		snprintf(m.reference, sizeof(m.reference), "%s", refs[i]);
		assert_int_equal(fabric_msg_encode(&m, buf, sizeof(buf), &why), -1);
	}
	static const char *const jobs[] = { "", "42/../x", "4 2" };
	for (size_t i = 0; i < ARRAY_SIZE(jobs); i++) {
		make_pin(&m);
		snprintf(m.job, sizeof(m.job), "%s", jobs[i]);
		assert_int_equal(fabric_msg_encode(&m, buf, sizeof(buf), &why), -1);
	}
	static const char *const good_jobs[] = { "4242", "4242_7", "4242+1", "job.step-1" };
	for (size_t i = 0; i < ARRAY_SIZE(good_jobs); i++) {
		make_pin(&m);
		snprintf(m.job, sizeof(m.job), "%s", good_jobs[i]);
		assert_true(fabric_msg_encode(&m, buf, sizeof(buf), &why) > 0);
	}
	/* The decoder applies the same checks to what arrives: corrupt a hex
	 * digit of an encoded digest into an uppercase one. */
	make_pin(&m);
	size_t n = encode(&m, buf);
	uint8_t *d = memmem(buf, n, "sha256:", 7);
	assert_non_null(d);
	d[7] = 'A';
	assert_rejected(buf, n);
}

static void test_encode_limits(void **state)
{
	struct fabric_msg m;
	uint8_t buf[FABRIC_MSG_MAX];
	const char *why = NULL;
	make_ping(&m);
	assert_int_equal(fabric_msg_encode(&m, buf, 10, &why), -1);
	assert_non_null(why);
	make_ping(&m);
	m.naddrs = FABRIC_MSG_ADDRS_MAX + 1;
	assert_int_equal(fabric_msg_encode(&m, buf, sizeof(buf), NULL), -1);
	make_ping(&m);
	m.addrs[0].len = 0;
	assert_int_equal(fabric_msg_encode(&m, buf, sizeof(buf), NULL), -1);
	make_ping(&m);
	m.type = 7;
	assert_int_equal(fabric_msg_encode(&m, buf, sizeof(buf), NULL), -1);
	make_ping(&m);
	memset(m.node, 'a', sizeof(m.node));          /* not terminated */
	assert_int_equal(fabric_msg_encode(&m, buf, sizeof(buf), NULL), -1);
	/* The largest legal ping fits in one datagram. */
	make_ping(&m);
	memset(m.node, 'n', FABRIC_NODE_MAX);
	m.node[FABRIC_NODE_MAX] = '\0';
	m.naddrs = FABRIC_MSG_ADDRS_MAX;
	for (size_t i = 0; i < m.naddrs; i++)
		m.addrs[i].len = FABRIC_ADDR_MAX;
	assert_true(fabric_msg_encode(&m, buf, sizeof(buf), NULL) > 0);
}

/* Random corruption never crashes the decoder, and what it accepts
 * re-encodes to the same bytes (there is one encoding per message). */
static void test_random_mutations(void **state)
{
	struct fabric_msg m, out;
	uint8_t buf[FABRIC_MSG_MAX], bad[FABRIC_MSG_MAX], again[FABRIC_MSG_MAX];
	unsigned seed = 12345;
	for (int iter = 0; iter < 20000; iter++) {
		(iter & 1) ? make_pin(&m) : make_ping(&m);
		size_t n = encode(&m, buf);
		memcpy(bad, buf, n);
		int flips = 1 + (int)(rand_r(&seed) % 4);
		for (int k = 0; k < flips; k++)
			bad[rand_r(&seed) % n] = (uint8_t)rand_r(&seed);
		size_t len = (rand_r(&seed) % 8 == 0) ? rand_r(&seed) % (n + 1) : n;
		if (fabric_msg_decode(bad, len, &out, NULL) == 0) {
			ssize_t n2 = fabric_msg_encode(&out, again, sizeof(again), NULL);
			assert_int_equal(n2, (ssize_t)len);
			assert_memory_equal(again, bad, len);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_ping),
		cmocka_unit_test(test_roundtrip_pong_no_addrs),
		cmocka_unit_test(test_roundtrip_pin),
		cmocka_unit_test(test_truncated_and_trailing),
		cmocka_unit_test(test_header_fields),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_bad_strings),
		cmocka_unit_test(test_bad_addresses),
		cmocka_unit_test(test_bad_pin_fields),
		cmocka_unit_test(test_encode_limits),
		cmocka_unit_test(test_random_mutations),
	};
	return cmocka_run_group_tests_name("fabric_msg", tests, NULL, NULL);
}
