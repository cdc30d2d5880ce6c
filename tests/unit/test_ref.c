/* test_ref.c: image references, digests and enroot's form. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/digest.h"
#include "common/dockercfg.h"
#include "common/ref.h"

#define SHA_A "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct valid_case {
	const char *in;
	const char *registry, *repository, *tag, *digest;
};

static const struct valid_case valid[] = {
	{ "ubuntu", "docker.io", "library/ubuntu", "latest", NULL },
	{ "ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", NULL },
	{ "docker://ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", NULL },
	{ "alice/tools", "docker.io", "alice/tools", "latest", NULL },
	{ "docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", NULL },
	{ "index.docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", NULL },
	{ "nvcr.io/nvidia/pytorch:24.01-py3", "nvcr.io", "nvidia/pytorch", "24.01-py3", NULL },
	{ "localhost/foo", "localhost", "foo", "latest", NULL },
	{ "localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", NULL },
	{ "127.0.0.1:5000/foo", "127.0.0.1:5000", "foo", "latest", NULL },
	{ "[::1]:5000/foo:t", "[::1]:5000", "foo", "t", NULL },
	{ "Registry.Example/foo", "Registry.Example", "foo", "latest", NULL },
	{ "ubuntu@" SHA_A, "docker.io", "library/ubuntu", NULL, SHA_A },
	{ "r.example/x:tag@" SHA_A, "r.example", "x", "tag", SHA_A },
	{ "a/b__c/d-e--f/g.h_i", "docker.io", "a/b__c/d-e--f/g.h_i", "latest", NULL },
	{ "x:_T.a-g", "docker.io", "library/x", "_T.a-g", NULL },
	/* "localhost:5000" alone is a name and a tag, as docker reads it. */
	{ "localhost:5000", "docker.io", "library/localhost", "5000", NULL },
};

static void test_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		const struct valid_case *c = &valid[i];
		struct image_ref r;
		alps_error *err = NULL;
		if (ref_parse(c->in, NULL, &r, &err) < 0)
			fail_msg("%s: %s", c->in, err->msg);
		assert_string_equal(r.registry, c->registry);
		assert_string_equal(r.repository, c->repository);
		if (c->tag)
			assert_string_equal(r.tag, c->tag);
		else
			assert_null(r.tag);
		if (c->digest)
			assert_string_equal(r.digest, c->digest);
		else
			assert_null(r.digest);
		ref_free(&r);
	}
}

struct invalid_case {
	const char *in;
	int code;
	const char *needle;     /* must appear in the message */
};

static const struct invalid_case invalid[] = {
	{ "", ALPS_E_INVALID, "empty image reference" },
	{ "Ubuntu", ALPS_E_INVALID, "must be lowercase" },
	{ "docker.io/Ubuntu", ALPS_E_INVALID, "must be lowercase" },
	{ "ubuntu:", ALPS_E_INVALID, "empty tag" },
	{ "ubuntu:-x", ALPS_E_INVALID, "tag must start" },
	{ "ubuntu:a+b", ALPS_E_INVALID, "may only contain" },
	{ "ubuntu@", ALPS_E_INVALID, "empty digest" },
	{ "ubuntu@sha256:abc", ALPS_E_INVALID, "64 lowercase hex" },
	{ "ubuntu@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
	  ALPS_E_INVALID, "lowercase hex" },
	{ "ubuntu@md5:d41d8cd98f00b204e9800998ecf8427e", ALPS_E_UNSUPPORTED, "unsupported algorithm" },
	{ "ubuntu@x@" SHA_A, ALPS_E_INVALID, "more than one '@'" },
	{ "a//b", ALPS_E_INVALID, "empty path component" },
	{ "a/b/", ALPS_E_INVALID, "empty path component" },
	{ "/a", ALPS_E_INVALID, "empty path component" },
	{ "a_-b", ALPS_E_INVALID, "path component" },
	{ "a___b", ALPS_E_INVALID, "path component" },
	{ "-a", ALPS_E_INVALID, "path component" },
	{ "a.", ALPS_E_INVALID, "path component" },
	{ "ubu ntu", ALPS_E_INVALID, "character 0x20 at offset 3" },
	{ "ubuntu\n", ALPS_E_INVALID, "character 0x0a" },
	{ "reg-.example/x", ALPS_E_INVALID, "not a valid host" },
	{ "reg.example:0/x", ALPS_E_INVALID, "not a valid host" },
	{ "reg.example:99999/x", ALPS_E_INVALID, "not a valid host" },
	{ "[::g]:5000/x", ALPS_E_INVALID, "not a valid host" },
	{ "oci:dir:tag", ALPS_E_INVALID, "" },
	{ "oci-archive://x", ALPS_E_UNSUPPORTED, "only docker://" },
	{ "nvcr.io#nvidia/pytorch", ALPS_E_INVALID, "enroot" },
	{ ":tag", ALPS_E_INVALID, "empty repository" },
};

static void test_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		const struct invalid_case *c = &invalid[i];
		struct image_ref r;
		alps_error *err = NULL;
		if (ref_parse(c->in, NULL, &r, &err) == 0)
			fail_msg("\"%s\" parsed", c->in);
		assert_non_null(err);
		if (err->code != c->code || !strstr(err->msg, c->needle))
			fail_msg("\"%s\": code %d message \"%s\"", c->in, err->code, err->msg);
		assert_null(r.registry);
		alps_error_free(err);
	}
}

static void test_long_names(void **state)
{
	(void)state;
	char name[300], tag[140];
	alps_error *err = NULL;
	struct image_ref r;
	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	assert_int_equal(ref_parse(name, NULL, &r, &err), -1);
	assert_non_null(strstr(err->msg, "longer than 255"));
	alps_error_free(err);
	err = NULL;
	memset(tag, 't', sizeof(tag));
	snprintf(name, sizeof(name), "x:%.*s", 129, tag);
	assert_int_equal(ref_parse(name, NULL, &r, &err), -1);
	assert_non_null(strstr(err->msg, "longer than 128"));
	alps_error_free(err);
}

static void test_default_registry(void **state)
{
	(void)state;
	struct image_ref r;
	assert_int_equal(ref_parse("ubuntu", "registry.site:5000", &r, NULL), 0);
	/* "library/" is docker.io's rule only. */
	assert_string_equal(r.registry, "registry.site:5000");
	assert_string_equal(r.repository, "ubuntu");
	ref_free(&r);
	assert_int_equal(ref_parse("nvcr.io/x", "registry.site", &r, NULL), 0);
	assert_string_equal(r.registry, "nvcr.io");
	ref_free(&r);
}

static void test_format(void **state)
{
	(void)state;
	struct image_ref r, c = { 0 };
	assert_int_equal(ref_parse("ubuntu", NULL, &r, NULL), 0);
	char *s = ref_format(&r);
	assert_string_equal(s, "docker.io/library/ubuntu:latest");
	assert_string_equal(ref_reference(&r), "latest");
	free(s);
	ref_free(&r);
	assert_int_equal(ref_parse("h:1/x:t@" SHA_A, NULL, &r, NULL), 0);
	ref_copy(&c, &r);
	ref_free(&r);
	s = ref_format(&c);
	assert_string_equal(s, "h:1/x:t@" SHA_A);
	assert_string_equal(ref_reference(&c), SHA_A);
	free(s);
	ref_free(&c);
	ref_free(&c);   /* idempotent */
}

static void test_enroot(void **state)
{
	(void)state;
	struct image_ref r;
	char *user = NULL;
	assert_int_equal(ref_parse_enroot("nvcr.io#nvidia/pytorch:24.01-py3", NULL, &r, &user, NULL), 0);
	assert_string_equal(r.registry, "nvcr.io");
	assert_string_equal(r.repository, "nvidia/pytorch");
	assert_string_equal(r.tag, "24.01-py3");
	assert_null(user);
	ref_free(&r);

	assert_int_equal(ref_parse_enroot("docker://alice@nvcr.io#nvidia/pytorch", NULL, &r, &user, NULL), 0);
	assert_string_equal(user, "alice");
	assert_string_equal(r.tag, "latest");
	free(user);
	ref_free(&r);

	assert_int_equal(ref_parse_enroot("alice@ubuntu:22.04", NULL, &r, &user, NULL), 0);
	assert_string_equal(user, "alice");
	assert_string_equal(r.repository, "library/ubuntu");
	free(user);
	ref_free(&r);

	assert_int_equal(ref_parse_enroot("ubuntu@" SHA_A, NULL, &r, &user, NULL), 0);
	assert_null(user);
	assert_string_equal(r.digest, SHA_A);
	ref_free(&r);

	/* A registry without a dot is fine after '#'. */
	assert_int_equal(ref_parse_enroot("myreg:5000#team/img", NULL, &r, NULL, NULL), 0);
	assert_string_equal(r.registry, "myreg:5000");
	ref_free(&r);

	assert_int_equal(ref_parse_enroot("docker.io#ubuntu", NULL, &r, NULL, NULL), 0);
	assert_string_equal(r.repository, "library/ubuntu");
	ref_free(&r);

	assert_int_equal(ref_parse_any("nvcr.io#nvidia/cuda", NULL, &r, NULL), 0);
	assert_string_equal(r.registry, "nvcr.io");
	ref_free(&r);
	assert_int_equal(ref_parse_any("nvcr.io/nvidia/cuda", NULL, &r, NULL), 0);
	assert_string_equal(r.registry, "nvcr.io");
	ref_free(&r);
}

static void test_enroot_invalid(void **state)
{
	(void)state;
	static const struct invalid_case cases[] = {
		{ "#ubuntu", ALPS_E_INVALID, "empty registry" },
		{ "@r.example#ubuntu", ALPS_E_INVALID, "empty user" },
		{ "a#b#c", ALPS_E_INVALID, "more than one '#'" },
		{ "bad_host#x", ALPS_E_INVALID, "not a valid host" },
		{ "nvcr.io/nvidia/pytorch", ALPS_E_INVALID, "\"nvcr.io#nvidia/pytorch\"" },
		{ "r.example#Bad", ALPS_E_INVALID, "lowercase" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct image_ref r;
		char *user = NULL;
		alps_error *err = NULL;
		if (ref_parse_enroot(cases[i].in, NULL, &r, &user, &err) == 0)
			fail_msg("\"%s\" parsed", cases[i].in);
		if (err->code != cases[i].code || !strstr(err->msg, cases[i].needle))
			fail_msg("\"%s\": code %d message \"%s\"", cases[i].in, err->code, err->msg);
		assert_null(user);
		alps_error_free(err);
	}
}

static void test_digest(void **state)
{
	(void)state;
	enum digest_algo a;
	assert_true(digest_valid(SHA_A));
	assert_int_equal(digest_parse(SHA_A, NULL, &a, NULL), 0);
	assert_int_equal(a, DIGEST_SHA256);
	assert_string_equal(digest_hex(SHA_A), SHA_A + 7);
	char s512[7 + 128 + 1];
	snprintf(s512, sizeof(s512), "sha512:%0128d", 0);
	assert_int_equal(digest_parse(s512, NULL, &a, NULL), 0);
	assert_int_equal(a, DIGEST_SHA512);
	assert_int_equal(digest_hex_len(a), 128);
	assert_false(digest_valid("sha256"));
	assert_false(digest_valid(":abc"));
	assert_false(digest_valid("sha256:"));
	assert_false(digest_valid("sha256+:00"));
	assert_false(digest_valid(SHA_A "0"));
	alps_error *err = NULL;
	assert_int_equal(digest_parse("blake3:abcd", "layer digest", NULL, &err), -1);
	assert_int_equal(err->code, ALPS_E_UNSUPPORTED);
	assert_non_null(strstr(err->msg, "layer digest \"blake3:abcd\""));
	alps_error_free(err);
}

static void test_dockercfg(void **state)
{
	(void)state;
	/* "YWxpY2U6czNjcjp0" is base64("alice:s3cr:t"): the password keeps its colon. */
	static const char json[] =
		"{\"auths\": {"
		"\"https://index.docker.io/v1/\": {\"auth\": \"YWxpY2U6czNjcjp0\"},"
		"\"localhost:5000\": {\"username\": \"bob\", \"password\": \"pw\"},"
		"\"https://nvcr.io/v2/\": {\"auth\": \"YWxpY2U6czNjcjp0\", \"password\": \"over\"},"
		"\"tok.example\": {\"identitytoken\": \"refresh\"},"
		"\"empty.example\": {}"
		"}, \"credsStore\": \"desktop\"}";
	struct registry_cred *c = NULL;
	size_t n = 0;
	assert_int_equal(dockercfg_parse(json, strlen(json), &c, &n, NULL), 0);
	assert_int_equal(n, 4);
	const struct registry_cred *hub = dockercfg_find(c, n, "docker.io");
	assert_non_null(hub);
	assert_string_equal(hub->username, "alice");
	assert_string_equal(hub->password, "s3cr:t");
	const struct registry_cred *local = dockercfg_find(c, n, "localhost:5000");
	assert_string_equal(local->username, "bob");
	assert_string_equal(local->password, "pw");
	const struct registry_cred *nv = dockercfg_find(c, n, "NVCR.io");
	assert_string_equal(nv->username, "alice");
	assert_string_equal(nv->password, "over");
	const struct registry_cred *tok = dockercfg_find(c, n, "tok.example");
	assert_string_equal(tok->identity_token, "refresh");
	assert_null(tok->username);
	assert_null(dockercfg_find(c, n, "empty.example"));
	struct registry_cred copy = { 0 };
	dockercfg_cred_copy(&copy, hub);
	assert_string_equal(copy.password, "s3cr:t");
	dockercfg_cred_clear(&copy);
	dockercfg_creds_free(c, n);
}

static void test_dockercfg_invalid(void **state)
{
	(void)state;
	static const struct {
		const char *json, *needle;
	} cases[] = {
		{ "{", "line 1" },
		{ "[]", "not a JSON object" },
		{ "{\"auths\": 3}", "\"auths\" is not an object" },
		{ "{\"auths\": {\"h\": 3}}", "auths.\"h\" is not an object" },
		{ "{\"auths\": {\"h\": {\"auth\": \"!!!\"}}}", "auths.\"h\".auth is not valid base64" },
		{ "{\"auths\": {\"h\": {\"auth\": \"bm9jb2xvbg==\"}}}", "\"user:password\"" },
		{ "{\"auths\": {\"h\": {\"username\": 1}}}", "auths.\"h\".username is not a string" },
		{ "{\"auths\": {}, \"auths\": {}}", "duplicate" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct registry_cred *c = NULL;
		size_t n = 0;
		alps_error *err = NULL;
		assert_int_equal(dockercfg_parse(cases[i].json, strlen(cases[i].json), &c, &n, &err), -1);
		if (!strstr(err->msg, cases[i].needle))
			fail_msg("%s: \"%s\"", cases[i].json, err->msg);
		assert_int_equal(err->code, ALPS_E_INVALID);
		assert_null(c);
		alps_error_free(err);
	}
	char *h = dockercfg_normalize_host("http://registry-1.docker.io");
	assert_string_equal(h, "docker.io");
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_long_names),
		cmocka_unit_test(test_default_registry),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_enroot),
		cmocka_unit_test(test_enroot_invalid),
		cmocka_unit_test(test_digest),
		cmocka_unit_test(test_dockercfg),
		cmocka_unit_test(test_dockercfg_invalid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
