/* test_plan_wire.c: the mount plan as it crosses from the daemon to the
 * namespace helper: round trips, and bytes a broken or hostile sender
 * could write (truncations, counts larger than the message, strings
 * without their NUL, unknown enums, trailing garbage, random damage).
 * No root needed. */
#include <config.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/util.h"
#include "daemon/job/ipc.h"
#include "daemon/job/plan.h"
#include "daemon/job/plan_wire.h"

static const char *const layers[] = { "/var/lib/alps/layers/a.sqfs",
				      "/var/lib/alps/layers/b.sqfs" };
static const char *const layer_ids[] = { "sha256:aaaa", "sha256:bbbb" };
static const gid_t groups[] = { 65534, 100, 4242 };

static struct ns_plan *built_plan(void)
{
	struct user_mount site[] = { { USER_MOUNT_BIND, "/opt/site", "/opt/site", USER_MOUNT_RO } };
	struct user_mount user[] = { { USER_MOUNT_BIND, "/scratch/u", "/scratch", USER_MOUNT_REC },
				     { USER_MOUNT_SQSH, "/home/u/tools.sqfs", "/tools", 0 } };
	static const char *const devices[] = { "/dev/null" };
	/* a CDI node whose host path is not its place in the container */
	static const struct job_device extra[] = { { "/srv/fake/dev/cxi0", "/dev/cxi0" } };
	struct job_spec s = {
		.run_dir = "/run/alps", .job = "4242.0", .uid = 65534, .gid = 65534,
		.groups = groups, .ngroups = ARRAY_SIZE(groups), .user_name = "nobody",
		.layers = layers, .layer_ids = layer_ids, .nlayers = 2, .writable = true,
		.workdir = "/scratch/work", .site_mounts = site, .nsite_mounts = 1,
		.mounts = user, .nmounts = 2, .devices = devices, .ndevices = 1,
		.extra_devices = extra, .nextra_devices = 1,
	};
	struct ns_plan *plan = NULL;
	alps_error *err = NULL;
	if (ns_plan_build(&s, &plan, &err) < 0)
		fail_msg("ns_plan_build: %s", err->msg);
	return plan;
}

/* "/run/alps", job "j", no groups, one operation with every string NULL. */
static struct ns_plan *tiny_plan(void)
{
	struct ns_plan *p = xzalloc(sizeof(*p));
	p->run_dir = xstrdup("/run/alps");
	p->job = xstrdup("j");
	p->uid = 1000;
	p->gid = 1000;
	p->ops = xcalloc(1, sizeof(*p->ops));
	p->nops = 1;
	p->ops[0].kind = MOUNT_WORKDIR;
	p->ops[0].origin = ORIGIN_USER;
	p->ops[0].flags = ~0ul;
	p->ops[0].optional = true;
	return p;
}

/* Offsets in tiny_plan()'s encoding. */
#define TINY_RUN_DIR 8                          /* u32 length of "/run/alps" */
#define TINY_JOB (TINY_RUN_DIR + 4 + 9 + 1)     /* u32 length of "j" */
#define TINY_NGROUPS (TINY_JOB + 4 + 1 + 1 + 8)
#define TINY_NOPS (TINY_NGROUPS + 4 + 1)
#define TINY_KIND (TINY_NOPS + 4)
#define TINY_ORIGIN (TINY_KIND + 4)
#define TINY_AS_USER (TINY_ORIGIN + 4 + 3 * 4 + 8 + 4)

static void assert_str_same(const char *a, const char *b)
{
	if (!a || !b)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void assert_plans_equal(const struct ns_plan *a, const struct ns_plan *b)
{
	assert_string_equal(a->run_dir, b->run_dir);
	assert_string_equal(a->job, b->job);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_int_equal(a->ngroups, b->ngroups);
	if (a->ngroups)
		assert_memory_equal(a->groups, b->groups, a->ngroups * sizeof(gid_t));
	assert_int_equal(a->writable, b->writable);
	assert_int_equal(a->nops, b->nops);
	for (size_t i = 0; i < a->nops; i++) {
		const struct mount_op *x = &a->ops[i], *y = &b->ops[i];
		assert_int_equal(x->kind, y->kind);
		assert_int_equal(x->origin, y->origin);
		assert_str_same(x->src, y->src);
		assert_str_same(x->dst, y->dst);
		assert_str_same(x->id, y->id);
		assert_str_same(x->data, y->data);
		assert_true(x->flags == y->flags);
		assert_int_equal(x->as_user, y->as_user);
		assert_int_equal(x->optional, y->optional);
	}
}

static void round_trip(const struct ns_plan *plan)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	plan_wire_encode(plan, &buf, &len);
	struct ns_plan *back = NULL;
	alps_error *err = NULL;
	if (plan_wire_decode(buf, len, &back, &err) < 0)
		fail_msg("decode: %s", err->msg);
	assert_plans_equal(plan, back);
	ns_plan_free(back);
}

/* Decoding buf fails with a protocol error whose message holds want. */
static void assert_refused(const uint8_t *buf, size_t len, const char *want)
{
	struct ns_plan *plan = (struct ns_plan *)1;
	alps_error *err = NULL;
	assert_int_equal(plan_wire_decode(buf, len, &plan, &err), -1);
	assert_null(plan);
	assert_non_null(err);
	assert_int_equal(err->code, ALPS_E_PROTOCOL);
	if (want && !strstr(err->msg, want))
		fail_msg("\"%s\" is not in \"%s\"", want, err->msg);
	alps_error_free(err);
}

static void put32(uint8_t *buf, size_t off, uint32_t v)
{
	memcpy(buf + off, &v, sizeof(v));
}

static void test_round_trip(void **state)
{
	(void)state;
	struct ns_plan *plan = built_plan();
	round_trip(plan);
	alps_error *err = NULL;
	assert_int_equal(ns_plan_validate(plan, &err), 0);
	bool cdi_node = false;
	for (size_t i = 0; i < plan->nops; i++)
		cdi_node |= plan->ops[i].kind == MOUNT_DEVICE && plan->ops[i].src &&
			    strcmp(plan->ops[i].src, "/srv/fake/dev/cxi0") == 0 &&
			    strcmp(plan->ops[i].dst, "/dev/cxi0") == 0;
	assert_true(cdi_node);
	ns_plan_free(plan);
	plan = tiny_plan();
	round_trip(plan);
	/* No operations at all, no groups. */
	plan->nops = 0;
	round_trip(plan);
	plan->nops = 1;
	ns_plan_free(plan);
}

static void test_truncated(void **state)
{
	(void)state;
	struct ns_plan *plan = built_plan();
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	plan_wire_encode(plan, &buf, &len);
	ns_plan_free(plan);
	for (size_t n = 0; n < len; n++) {
		/* A copy of exactly n bytes, so ASan sees any read past it. */
		uint8_t *cut = xmemdup(buf, n ? n : 1);
		assert_refused(cut, n, NULL);
		free(cut);
	}
	assert_refused(buf, 3, "magic: truncated");
}

static void test_oversized_counts(void **state)
{
	(void)state;
	struct ns_plan *plan = tiny_plan();
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	plan_wire_encode(plan, &buf, &len);
	ns_plan_free(plan);
	static const uint32_t huge[] = { 0xfffffffeu, 0x7fffffffu, 65537u, 1000u };
	for (size_t i = 0; i < ARRAY_SIZE(huge); i++) {
		_cleanup_free_ uint8_t *b = xmemdup(buf, len);
		put32(b, TINY_NGROUPS, huge[i]);
		assert_refused(b, len, "group count: more than the message holds");
		memcpy(b, buf, len);
		put32(b, TINY_NOPS, huge[i]);
		assert_refused(b, len, "operation count: more than the message holds");
		memcpy(b, buf, len);
		put32(b, TINY_RUN_DIR, huge[i]);
		assert_refused(b, len, "run directory: truncated");
	}
	/* A string length one past what is there (its NUL would be outside). */
	_cleanup_free_ uint8_t *b = xmemdup(buf, len);
	put32(b, TINY_JOB, (uint32_t)(len - TINY_JOB - 4));
	assert_refused(b, len, "job: truncated");
	/* Over the size limit, whatever the content. */
	assert_refused(buf, (size_t)PLAN_WIRE_MAX + 1, "over the size limit");
}

static void test_strings_without_nul(void **state)
{
	(void)state;
	struct ns_plan *plan = tiny_plan();
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	plan_wire_encode(plan, &buf, &len);
	ns_plan_free(plan);
	_cleanup_free_ uint8_t *b = xmemdup(buf, len);
	/* "/run/alps" followed by 'x' where its NUL was. */
	b[TINY_RUN_DIR + 4 + 9] = 'x';
	assert_refused(b, len, "run directory: not NUL-terminated");
	/* A NUL inside: "/run\0alps" would be "/run" to C. */
	memcpy(b, buf, len);
	b[TINY_RUN_DIR + 4 + 4] = '\0';
	assert_refused(b, len, "run directory: a NUL inside the string");
	/* The job string's length 0 but its "NUL" is 'j'. */
	memcpy(b, buf, len);
	put32(b, TINY_JOB, 0);
	assert_refused(b, len, "job: not NUL-terminated");
	/* A NULL where the plan needs a string. */
	memcpy(b, buf, len);
	plan = tiny_plan();
	free(plan->job);
	plan->job = NULL;
	_cleanup_free_ uint8_t *nulljob = NULL;
	size_t nlen;
	plan_wire_encode(plan, &nulljob, &nlen);
	ns_plan_free(plan);
	assert_refused(nulljob, nlen, "job: missing");
}

static void test_bad_values(void **state)
{
	(void)state;
	struct ns_plan *plan = tiny_plan();
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	plan_wire_encode(plan, &buf, &len);
	ns_plan_free(plan);
	_cleanup_free_ uint8_t *b = xmemdup(buf, len + 1);
	put32(b, 0, 0x12345678);
	assert_refused(b, len, "magic: not a plan");
	memcpy(b, buf, len);
	put32(b, 4, PLAN_WIRE_VERSION + 1);
	assert_refused(b, len, "version");
	static const uint32_t kinds[] = { 0, MOUNT_WORKDIR + 1, 0xffffffffu };
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		memcpy(b, buf, len);
		put32(b, TINY_KIND, kinds[i]);
		assert_refused(b, len, "operation 0: malformed plan: operation kind: unknown value");
	}
	memcpy(b, buf, len);
	put32(b, TINY_ORIGIN, ORIGIN_USER + 1);
	assert_refused(b, len, "operation origin: unknown value");
	memcpy(b, buf, len);
	b[TINY_AS_USER] = 2;
	assert_refused(b, len, "as_user: not 0 or 1");
	memcpy(b, buf, len);
	b[len] = 0;
	assert_refused(b, len + 1, "bytes after the last operation");
}

/* Random damage: decoding either works or fails cleanly (ASan watches). */
static void test_random_damage(void **state)
{
	(void)state;
	struct ns_plan *plan = built_plan();
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	plan_wire_encode(plan, &buf, &len);
	ns_plan_free(plan);
	unsigned seed = 42;
	for (int i = 0; i < 5000; i++) {
		uint8_t *b = xmemdup(buf, len);
		int flips = 1 + rand_r(&seed) % 4;
		for (int k = 0; k < flips; k++)
			b[(size_t)rand_r(&seed) % len] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
		size_t n = rand_r(&seed) % 4 ? len : (size_t)rand_r(&seed) % len;
		struct ns_plan *out = NULL;
		alps_error *err = NULL;
		if (plan_wire_decode(b, n, &out, &err) == 0)
			ns_plan_free(out);
		else
			assert_int_equal(err->code, ALPS_E_PROTOCOL);
		alps_error_free(err);
		free(b);
	}
}

/* ---- over a socketpair, as between ns.c and alps-nshelper ---- */

struct receiver {
	int sock;
	struct ns_plan *plan;
	struct plan_wire_header h;
	alps_error *err;
};

static void *receive(void *arg)
{
	struct receiver *r = arg;
	plan_wire_recv(r->sock, &r->plan, &r->h, &r->err);
	return NULL;
}

static void test_transport(void **state)
{
	(void)state;
	/* Many long destinations: several chunks, more than a socket holds. */
	struct ns_plan *plan = built_plan();
	size_t n0 = plan->nops;
	plan->ops = xreallocarray(plan->ops, n0 + 300, sizeof(*plan->ops));
	for (size_t i = 0; i < 300; i++) {
		struct mount_op *op = &plan->ops[n0 + i];
		memset(op, 0, sizeof(*op));
		op->kind = MOUNT_TMPFS;
		op->dst = xmalloc(3001);
		memset(op->dst, 'a' + (char)(i % 26), 3000);
		op->dst[0] = '/';
		op->dst[3000] = '\0';
	}
	plan->nops = n0 + 300;
	int sv[2];
	assert_int_equal(ipc_pair(sv), 0);
	struct receiver r = { .sock = sv[1] };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, receive, &r), 0);
	alps_error *err = NULL;
	if (plan_wire_send(sv[0], plan, PLAN_WIRE_F_OVERLAY_LEGACY, now_monotonic_ms() + 10000,
			   &err) < 0)
		fail_msg("send: %s", err->msg);
	assert_int_equal(pthread_join(t, NULL), 0);
	if (r.err)
		fail_msg("recv: %s", r.err->msg);
	assert_plans_equal(plan, r.plan);
	assert_int_equal(r.h.parent, getpid());
	assert_int_equal(r.h.flags, PLAN_WIRE_F_OVERLAY_LEGACY);
	ns_plan_free(r.plan);
	/* Nobody reads: the sender gives up at its deadline. */
	uint64_t t0 = now_monotonic_ms();
	assert_int_equal(plan_wire_send(sv[0], plan, 0, t0 + 200, &err), -1);
	assert_int_equal(err->code, ALPS_E_TIMEOUT);
	assert_true(now_monotonic_ms() - t0 < 5000);
	alps_error_free(err);
	ns_plan_free(plan);
	close(sv[0]);
	close(sv[1]);
}

/* A header and then not what it promised. */
static void test_transport_hostile(void **state)
{
	(void)state;
	struct {
		struct plan_wire_header h;
		const char *want;
	} cases[] = {
		{ { PLAN_WIRE_MAGIC, PLAN_WIRE_VERSION, 1, 1000, 0 }, "ended after 0 of 1000" },
		{ { 0xdeadbeef, PLAN_WIRE_VERSION, 1, 1000, 0 }, "malformed plan header" },
		{ { PLAN_WIRE_MAGIC, PLAN_WIRE_VERSION, 1, PLAN_WIRE_MAX + 1, 0 }, "a plan of" },
		{ { PLAN_WIRE_MAGIC, PLAN_WIRE_VERSION, 1, 4, 0 }, "a plan of 4 bytes" },
		{ { PLAN_WIRE_MAGIC, PLAN_WIRE_VERSION, 1, 1000, 0x80 }, "unknown plan flags" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int sv[2];
		assert_int_equal(ipc_pair(sv), 0);
		assert_int_equal(ipc_send(sv[0], &cases[i].h, sizeof(cases[i].h), -1), 0);
		close(sv[0]);
		struct ns_plan *plan = NULL;
		struct plan_wire_header h;
		alps_error *err = NULL;
		assert_int_equal(plan_wire_recv(sv[1], &plan, &h, &err), -1);
		assert_null(plan);
		if (!strstr(err->msg, cases[i].want))
			fail_msg("case %zu: \"%s\" is not in \"%s\"", i, cases[i].want, err->msg);
		alps_error_free(err);
		close(sv[1]);
	}
	/* A chunk larger than announced is cut by the kernel: refused. */
	int sv[2];
	assert_int_equal(ipc_pair(sv), 0);
	struct plan_wire_header h = { PLAN_WIRE_MAGIC, PLAN_WIRE_VERSION, 1, 16, 0 };
	char big[64] = { 0 };
	assert_int_equal(ipc_send(sv[0], &h, sizeof(h), -1), 0);
	assert_int_equal(ipc_send(sv[0], big, sizeof(big), -1), 0);
	struct ns_plan *plan = NULL;
	alps_error *err = NULL;
	assert_int_equal(plan_wire_recv(sv[1], &plan, &h, &err), -1);
	assert_non_null(strstr(err->msg, "reading the plan"));
	alps_error_free(err);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_oversized_counts),
		cmocka_unit_test(test_strings_without_nul),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_random_damage),
		cmocka_unit_test(test_transport),
		cmocka_unit_test(test_transport_hostile),
	};
	return cmocka_run_group_tests_name("plan_wire", tests, NULL, NULL);
}
