/* test_manifest.c: manifests, indexes, image configs, platforms, digests. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/image/manifest.h"
#include "daemon/image/registry.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define EMPTY_SHA256 "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const char oci_manifest[] =
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\","
	"\"config\":{\"mediaType\":\"" MT_OCI_CONFIG "\",\"digest\":\"" D1 "\",\"size\":100},"
	"\"layers\":["
	"{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" D2 "\",\"size\":10},"
	"{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\",\"digest\":\"" D3 "\",\"size\":20},"
	"{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"" D1 "\",\"size\":0},"
	"{\"mediaType\":\"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\",\"digest\":\"" D2 "\","
	" \"size\":5,\"urls\":[\"https://example.com/layer\"]}"
	"],\"annotations\":{\"a\":\"b\"}}";

static void test_manifest_oci(void **state)
{
	(void)state;
	struct manifest m;
	alps_error *err = NULL;
	if (manifest_parse(oci_manifest, strlen(oci_manifest), &m, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(m.kind, MANIFEST_OCI);
	assert_string_equal(m.config.digest, D1);
	assert_int_equal(m.config.size, 100);
	assert_int_equal(m.nlayers, 4);
	assert_int_equal(m.layers[0].compression, LAYER_COMPRESSION_GZIP);
	assert_int_equal(m.layers[1].compression, LAYER_COMPRESSION_ZSTD);
	assert_int_equal(m.layers[2].compression, LAYER_COMPRESSION_NONE);
	assert_true(m.layers[3].foreign);
	assert_false(m.layers[0].foreign);
	assert_int_equal(m.layers[3].desc.nurls, 1);
	assert_string_equal(m.layers[3].desc.urls[0], "https://example.com/layer");
	struct descriptor copy;
	manifest_descriptor_copy(&copy, &m.layers[3].desc);
	assert_string_equal(copy.urls[0], "https://example.com/layer");
	manifest_descriptor_free(&copy);
	manifest_free(&m);

	enum manifest_kind k;
	assert_int_equal(manifest_detect(oci_manifest, strlen(oci_manifest), NULL, &k, NULL), 0);
	assert_int_equal(k, MANIFEST_OCI);
}

static void test_manifest_docker_v2(void **state)
{
	(void)state;
	static const char doc[] =
		"{\"schemaVersion\":2,\"mediaType\":\"" MT_DOCKER_MANIFEST "\","
		"\"config\":{\"mediaType\":\"" MT_DOCKER_CONFIG "\",\"digest\":\"" D1 "\",\"size\":7},"
		"\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\","
		"\"digest\":\"" D2 "\",\"size\":10}]}";
	struct manifest m;
	assert_int_equal(manifest_parse(doc, strlen(doc), &m, NULL), 0);
	assert_int_equal(m.kind, MANIFEST_DOCKER_V2);
	assert_int_equal(m.layers[0].compression, LAYER_COMPRESSION_GZIP);
	manifest_free(&m);
}

/* An OCI manifest without mediaType, told by Content-Type or by shape. */
static void test_detect(void **state)
{
	(void)state;
	static const char bare[] = "{\"schemaVersion\":2,\"config\":{},\"layers\":[]}";
	static const char list[] = "{\"schemaVersion\":2,\"manifests\":[]}";
	static const char v1[] = "{\"schemaVersion\":1,\"name\":\"x\",\"fsLayers\":[]}";
	enum manifest_kind k;
	alps_error *err = NULL;
	assert_int_equal(manifest_detect(bare, strlen(bare), NULL, &k, NULL), 0);
	assert_int_equal(k, MANIFEST_OCI);
	assert_int_equal(manifest_detect(bare, strlen(bare), MT_DOCKER_MANIFEST "; charset=utf-8",
					 &k, NULL), 0);
	assert_int_equal(k, MANIFEST_DOCKER_V2);
	assert_int_equal(manifest_detect(list, strlen(list), NULL, &k, NULL), 0);
	assert_int_equal(k, MANIFEST_OCI_INDEX);
	assert_int_equal(manifest_detect(v1, strlen(v1), "application/json", &k, &err), -1);
	assert_int_equal(err->code, ALPS_E_UNSUPPORTED);
	assert_non_null(strstr(err->msg, "schema 1"));
	alps_error_free(err);
	err = NULL;
	assert_int_equal(manifest_detect(v1, strlen(v1), MT_DOCKER_SCHEMA1_SIGNED, &k, &err), -1);
	assert_non_null(strstr(err->msg, "schema 1"));
	alps_error_free(err);
	err = NULL;
	static const char art[] = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.x+json\"}";
	assert_int_equal(manifest_detect(art, strlen(art), NULL, &k, &err), -1);
	assert_int_equal(err->code, ALPS_E_UNSUPPORTED);
	alps_error_free(err);
	assert_non_null(strstr(manifest_accept(), MT_OCI_MANIFEST));
	assert_non_null(strstr(manifest_accept(), MT_DOCKER_LIST));
	assert_null(strstr(manifest_accept(), "distribution.manifest.v1"));
}

struct bad_case {
	const char *json;
	int code;
	const char *needle;
};

#define CFG "\"config\":{\"mediaType\":\"" MT_OCI_CONFIG "\",\"digest\":\"" D1 "\",\"size\":1}"
#define LAYER(mt, dg, sz) "{\"mediaType\":\"" mt "\",\"digest\":\"" dg "\",\"size\":" sz "}"
#define TGZ "application/vnd.oci.image.layer.v1.tar+gzip"

static const struct bad_case bad_manifests[] = {
	{ "[1]", ALPS_E_INVALID, "not a JSON object" },
	{ "{\"schemaVersion\":2,", ALPS_E_INVALID, "not valid JSON" },
	{ "{\"schemaVersion\":\"2\"}", ALPS_E_INVALID, "\"schemaVersion\"" },
	{ "{\"schemaVersion\":3}", ALPS_E_INVALID, "is not 2" },
	{ "{\"schemaVersion\":1}", ALPS_E_UNSUPPORTED, "schema 1" },
	{ "{\"schemaVersion\":2," CFG "}", ALPS_E_INVALID, "\"layers\" is missing" },
	{ "{\"schemaVersion\":2,\"layers\":[]}", ALPS_E_INVALID, "\"config\" is not an object" },
	{ "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\"," CFG ",\"layers\":[]}",
	  ALPS_E_INVALID, "is not a manifest type" },
	{ "{\"schemaVersion\":2," CFG ",\"layers\":[" LAYER(TGZ, "sha256:abc", "1") "]}",
	  ALPS_E_INVALID, "layers[0].digest" },
	{ "{\"schemaVersion\":2," CFG ",\"layers\":[" LAYER(TGZ, D2, "-1") "]}",
	  ALPS_E_INVALID, "\"layers[0].size\"" },
	{ "{\"schemaVersion\":2," CFG ",\"layers\":[" LAYER("text/plain", D2, "1") "]}",
	  ALPS_E_UNSUPPORTED, "layers[0] has media type \"text/plain\"" },
	{ "{\"schemaVersion\":2," CFG ",\"layers\":[" LAYER("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", D2, "1") "]}",
	  ALPS_E_UNSUPPORTED, "cannot unpack" },
	{ "{\"schemaVersion\":2," CFG ",\"layers\":[" LAYER("not a type", D2, "1") "]}",
	  ALPS_E_INVALID, "\"layers[0].mediaType\" is not a media type" },
	{ "{\"schemaVersion\":2,\"config\":" LAYER("application/vnd.cncf.helm.config.v1+json", D1, "1")
	  ",\"layers\":[]}", ALPS_E_UNSUPPORTED, "artifact" },
	{ "{\"schemaVersion\":2,\"config\":" LAYER(MT_OCI_CONFIG, D1, "9999999999") ",\"layers\":[]}",
	  ALPS_E_LIMIT, "limit" },
	{ "{\"schemaVersion\":2," CFG ",\"layers\":[{\"mediaType\":\"" TGZ "\",\"digest\":\"" D2 "\","
	  "\"size\":1,\"urls\":[\"file:///etc/passwd\"]}]}", ALPS_E_INVALID, "not http(s)" },
	{ "{\"schemaVersion\":2,\"schemaVersion\":2}", ALPS_E_INVALID, "duplicate" },
};

static void test_manifest_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_manifests) / sizeof(bad_manifests[0]); i++) {
		const struct bad_case *c = &bad_manifests[i];
		struct manifest m;
		alps_error *err = NULL;
		if (manifest_parse(c->json, strlen(c->json), &m, &err) == 0)
			fail_msg("parsed: %s", c->json);
		if (err->code != c->code || !strstr(err->msg, c->needle))
			fail_msg("%s: code %d \"%s\"", c->json, err->code, err->msg);
		alps_error_free(err);
	}
}

static void test_manifest_limits(void **state)
{
	(void)state;
	size_t cap = 64 + (MANIFEST_MAX_LAYERS + 1) * 160;
	char *doc = malloc(cap);
	size_t o = (size_t)snprintf(doc, cap, "{\"schemaVersion\":2," CFG ",\"layers\":[");
	for (int i = 0; i <= MANIFEST_MAX_LAYERS; i++)
		o += (size_t)snprintf(doc + o, cap - o, "%s" LAYER(TGZ, D2, "1"), i ? "," : "");
	snprintf(doc + o, cap - o, "]}");
	struct manifest m;
	alps_error *err = NULL;
	assert_int_equal(manifest_parse(doc, strlen(doc), &m, &err), -1);
	assert_int_equal(err->code, ALPS_E_LIMIT);
	alps_error_free(err);
	err = NULL;
	free(doc);
	size_t big = MANIFEST_MAX_SIZE + 1;
	doc = calloc(1, big);
	memset(doc, ' ', big);
	assert_int_equal(manifest_parse(doc, big, &m, &err), -1);
	assert_int_equal(err->code, ALPS_E_LIMIT);
	alps_error_free(err);
	free(doc);
}

static const char index_json[] =
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":["
	"{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":1,"
	" \"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
	"{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":1,"
	" \"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\"}},"
	"{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D3 "\",\"size\":1,"
	" \"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v6\"}},"
	"{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D3 "\",\"size\":1,"
	" \"platform\":{\"os\":\"unknown\",\"architecture\":\"unknown\"}}"
	"]}";

static const char *select_digest(const char *platform)
{
	struct manifest_index idx;
	struct platform p;
	assert_int_equal(manifest_index_parse(index_json, strlen(index_json), &idx, NULL), 0);
	assert_int_equal(manifest_platform_parse(platform, &p, NULL), 0);
	const struct index_entry *e = manifest_index_select(&idx, &p, NULL);
	const char *d = !e ? NULL : strcmp(e->desc.digest, D1) == 0 ? D1
			   : strcmp(e->desc.digest, D2) == 0 ? D2 : D3;
	manifest_platform_free(&p);
	manifest_index_free(&idx);
	return d;
}

static void test_index_select(void **state)
{
	(void)state;
	assert_string_equal(select_digest("linux/amd64"), D1);
	assert_string_equal(select_digest("linux/x86_64"), D1);
	assert_string_equal(select_digest("linux/arm64"), D2);
	assert_string_equal(select_digest("linux/aarch64"), D2);
	assert_string_equal(select_digest("linux/arm64/v8"), D2);
	assert_string_equal(select_digest("linux/arm/v7"), D3);   /* v7 runs v6 */
	assert_null(select_digest("linux/arm/v5"));
	assert_null(select_digest("linux/ppc64le"));
	assert_null(select_digest("windows/amd64"));

	struct manifest_index idx;
	struct platform p;
	alps_error *err = NULL;
	assert_int_equal(manifest_index_parse(index_json, strlen(index_json), &idx, NULL), 0);
	assert_int_equal(idx.kind, MANIFEST_OCI_INDEX);
	assert_int_equal(idx.nentries, 4);
	assert_int_equal(manifest_platform_parse("linux/riscv64", &p, NULL), 0);
	assert_null(manifest_index_select(&idx, &p, &err));
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	assert_non_null(strstr(err->msg, "no image for linux/riscv64"));
	assert_non_null(strstr(err->msg, "linux/amd64, linux/arm64/v8, linux/arm/v6"));
	alps_error_free(err);
	manifest_platform_free(&p);
	manifest_index_free(&idx);
}

static void test_index_invalid(void **state)
{
	(void)state;
	static const struct bad_case cases[] = {
		{ "{\"schemaVersion\":2}", ALPS_E_INVALID, "\"manifests\" is missing" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"manifests\":[]}",
		  ALPS_E_INVALID, "is not an index type" },
		{ "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" MT_OCI_MANIFEST "\","
		  "\"digest\":\"" D1 "\",\"size\":1,\"platform\":{\"os\":\"linux\"}}]}",
		  ALPS_E_INVALID, "manifests[0].platform.architecture\" is missing" },
		{ "{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"" D1 "\",\"size\":1}]}",
		  ALPS_E_INVALID, "manifests[0].mediaType" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct manifest_index idx;
		alps_error *err = NULL;
		if (manifest_index_parse(cases[i].json, strlen(cases[i].json), &idx, &err) == 0)
			fail_msg("parsed: %s", cases[i].json);
		if (err->code != cases[i].code || !strstr(err->msg, cases[i].needle))
			fail_msg("%s: code %d \"%s\"", cases[i].json, err->code, err->msg);
		alps_error_free(err);
	}
	/* Docker manifest list; a single entry without platform is chosen. */
	static const char list[] = "{\"schemaVersion\":2,\"mediaType\":\"" MT_DOCKER_LIST "\","
		"\"manifests\":[{\"mediaType\":\"" MT_DOCKER_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":1}]}";
	struct manifest_index idx;
	struct platform p;
	assert_int_equal(manifest_index_parse(list, strlen(list), &idx, NULL), 0);
	assert_int_equal(idx.kind, MANIFEST_DOCKER_LIST);
	assert_int_equal(manifest_platform_parse("linux/s390x", &p, NULL), 0);
	assert_non_null(manifest_index_select(&idx, &p, NULL));
	manifest_platform_free(&p);
	manifest_index_free(&idx);
}

static void test_platform(void **state)
{
	(void)state;
	struct platform p;
	alps_error *err = NULL;
	char *s;
	assert_int_equal(manifest_platform_parse("Linux/ARMHF", &p, NULL), 0);
	s = manifest_platform_format(&p);
	assert_string_equal(s, "linux/arm/v7");
	free(s);
	manifest_platform_free(&p);
	assert_int_equal(manifest_platform_parse("linux/arm64/8", &p, NULL), 0);
	assert_string_equal(p.variant, "v8");
	manifest_platform_free(&p);
	assert_int_equal(manifest_platform_host(&p, NULL), 0);
	assert_string_equal(p.os, "linux");
	assert_non_null(p.architecture);
	manifest_platform_free(&p);
	const char *bad[] = { "linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(manifest_platform_parse(bad[i], &p, &err), -1);
		assert_non_null(strstr(err->msg, "os/arch[/variant]"));
		alps_error_free(err);
		err = NULL;
	}
}

static const char config_json[] =
	"{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2024-01-01T00:00:00Z\","
	"\"config\":{\"Env\":[\"PATH=/usr/bin\",\"A=b=c\"],\"Entrypoint\":[\"/bin/sh\",\"-c\"],"
	"\"Cmd\":null,\"WorkingDir\":\"/work\",\"User\":\"1000:1000\","
	"\"Labels\":{\"org.opencontainers.image.source\":\"https://example.com/src\","
	"\"org.opencontainers.image.revision\":\"abc\"}},"
	"\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"" D2 "\"]},"
	"\"history\":[{\"created_by\":\"x\"}]}";

static void test_config(void **state)
{
	(void)state;
	struct image_config c;
	alps_error *err = NULL;
	if (manifest_config_parse(config_json, strlen(config_json), &c, &err) < 0)
		fail_msg("%s", err->msg);
	assert_string_equal(c.architecture, "amd64");
	assert_int_equal(c.nenv, 2);
	assert_string_equal(c.env[1], "A=b=c");
	assert_int_equal(c.nentrypoint, 2);
	assert_int_equal(c.ncmd, 0);
	assert_string_equal(c.working_dir, "/work");
	assert_string_equal(c.user, "1000:1000");
	assert_string_equal(manifest_config_label(&c, "org.opencontainers.image.source"),
			    "https://example.com/src");
	assert_null(manifest_config_label(&c, "nope"));
	assert_int_equal(c.ndiff_ids, 2);

	struct manifest m;
	assert_int_equal(manifest_parse(oci_manifest, strlen(oci_manifest), &m, NULL), 0);
	assert_int_equal(manifest_check_config(&m, &c, &err), -1);
	assert_non_null(strstr(err->msg, "4 layers but the image config lists 2"));
	alps_error_free(err);
	manifest_free(&m);
	manifest_config_free(&c);
}

static void test_config_invalid(void **state)
{
	(void)state;
	static const struct bad_case cases[] = {
		{ "{\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\"}}", ALPS_E_INVALID, "\"architecture\" is missing" },
		{ "{\"os\":\"linux\",\"architecture\":\"amd64\"}", ALPS_E_INVALID, "\"rootfs\" is missing" },
		{ "{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{\"type\":\"x\"}}",
		  ALPS_E_INVALID, "\"rootfs.type\" is not \"layers\"" },
		{ "{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{\"type\":\"layers\","
		  "\"diff_ids\":[\"sha256:zz\"]}}", ALPS_E_INVALID, "rootfs.diff_ids[0]" },
		{ "{\"os\":\"linux\",\"architecture\":\"amd64\",\"config\":{\"Env\":[\"NOEQ\"]},"
		  "\"rootfs\":{\"type\":\"layers\"}}", ALPS_E_INVALID, "\"config.Env[0]\" is not NAME=VALUE" },
		{ "{\"os\":\"linux\",\"architecture\":\"amd64\",\"config\":{\"Cmd\":\"sh\"},"
		  "\"rootfs\":{\"type\":\"layers\"}}", ALPS_E_INVALID, "\"config.Cmd\" is not an array" },
		{ "{\"os\":\"linux\",\"architecture\":\"amd64\",\"config\":{\"Labels\":{\"k\":1}},"
		  "\"rootfs\":{\"type\":\"layers\"}}", ALPS_E_INVALID, "\"config.Labels.k\" is not a string" },
		{ "{\"os\":\"linux\",\"architecture\":\"amd64\",\"config\":{\"User\":0},"
		  "\"rootfs\":{\"type\":\"layers\"}}", ALPS_E_INVALID, "\"config.User\" is not a string" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct image_config c;
		alps_error *err = NULL;
		if (manifest_config_parse(cases[i].json, strlen(cases[i].json), &c, &err) == 0)
			fail_msg("parsed: %s", cases[i].json);
		if (err->code != cases[i].code || !strstr(err->msg, cases[i].needle))
			fail_msg("%s: code %d \"%s\"", cases[i].json, err->code, err->msg);
		alps_error_free(err);
	}
}

static void test_digests(void **state)
{
	(void)state;
	char out[DIGEST_STRLEN_MAX];
	alps_error *err = NULL;
	digest_sha256("", 0, out);
	assert_string_equal(out, EMPTY_SHA256);
	assert_int_equal(digest_verify("blob", EMPTY_SHA256, "", 0, NULL, NULL), 0);
	assert_int_equal(digest_verify("blob", D1, "", 0, out, &err), -1);
	assert_int_equal(err->code, ALPS_E_INTEGRITY);
	assert_string_equal(err->msg, "blob " D1 " does not match its digest: got " EMPTY_SHA256);
	assert_string_equal(out, EMPTY_SHA256);
	alps_error_free(err);

	/* Incremental equals one-shot; sha512 of "abc" from FIPS 180-2. */
	struct digester *d = digester_new(DIGEST_SHA512);
	digester_update(d, "a", 1);
	digester_update(d, "bc", 2);
	digester_final(d, out);
	digester_free(d);
	assert_string_equal(out, "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
			    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
}

/* Docker's rule for plain HTTP without configuration. */
static void test_loopback(void **state)
{
	(void)state;
	assert_true(registry_host_is_loopback("localhost"));
	assert_true(registry_host_is_loopback("localhost:5000"));
	assert_true(registry_host_is_loopback("127.0.0.1:5000"));
	assert_true(registry_host_is_loopback("127.8.9.10"));
	assert_true(registry_host_is_loopback("[::1]:5000"));
	assert_false(registry_host_is_loopback("128.0.0.1"));
	assert_false(registry_host_is_loopback("localhost.example.com"));
	assert_false(registry_host_is_loopback("[::2]:5000"));
	assert_false(registry_host_is_loopback("registry.example:5000"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_manifest_oci),
		cmocka_unit_test(test_manifest_docker_v2),
		cmocka_unit_test(test_detect),
		cmocka_unit_test(test_manifest_invalid),
		cmocka_unit_test(test_manifest_limits),
		cmocka_unit_test(test_index_select),
		cmocka_unit_test(test_index_invalid),
		cmocka_unit_test(test_platform),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_config_invalid),
		cmocka_unit_test(test_digests),
		cmocka_unit_test(test_loopback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
