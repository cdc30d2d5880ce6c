/* test_cdi.c: CDI specs (daemon/hooks/cdi.h): JSON and YAML specs of the
 * versions in use, spec- and device-level edits, device lookup with
 * "all", later directories overriding earlier ones, and hostile specs
 * (relative and ".." paths, wrong types, aliases, deep nesting, huge
 * counts, bad names) refused with an error naming the field.  No root
 * needed, but spec files must be root's: the registry tests skip
 * otherwise. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/util.h"
#include "daemon/hooks/cdi.h"

static const char json_spec[] =
	"{\"cdiVersion\": \"0.6.0\", \"kind\": \"vendor.com/gpu\",\n"
	" \"containerEdits\": {\"env\": [\"SPEC=1\"],\n"
	"   \"mounts\": [{\"hostPath\": \"/usr/lib/x\", \"containerPath\": \"/usr/lib/y\","
	"                 \"options\": [\"ro\", \"nosuid\", \"bind\"]}]},\n"
	" \"devices\": [\n"
	"  {\"name\": \"0\", \"containerEdits\": {\"deviceNodes\": [{\"path\": \"/dev/gpu0\","
	"     \"hostPath\": \"/tmp/x/gpu0\", \"type\": \"c\", \"major\": 195, \"minor\": 0,"
	"     \"fileMode\": 438}], \"env\": [\"GPU=0\"]}},\n"
	"  {\"name\": \"1\", \"containerEdits\": {\"deviceNodes\": [{\"path\": \"/dev/gpu1\"}],"
	"   \"hooks\": [{\"hookName\": \"createContainer\", \"path\": \"/usr/bin/hook\","
	"     \"args\": [\"hook\", \"x\"], \"timeout\": 5}]}}]}\n";

static const char yaml_spec[] =
	"cdiVersion: 0.5.0\n"
	"kind: example.org/nic\n"
	"devices:\n"
	"  - name: cxi0\n"
	"    containerEdits:\n"
	"      deviceNodes:\n"
	"        - path: /dev/cxi0\n"
	"          hostPath: /srv/dev/cxi0\n"
	"          fileMode: 0666\n"
	"      env: [\"FI_PROVIDER=cxi\"]\n"
	"containerEdits:\n"
	"  mounts:\n"
	"    - hostPath: /opt/cray\n"
	"      containerPath: /opt/cray\n"
	"      options: [rbind, rw]\n";

static struct cdi_spec *parse_ok(const char *text, bool yaml)
{
	struct cdi_spec *s = NULL;
	alps_error *err = NULL;
	int rc = cdi_spec_parse(text, strlen(text), yaml, "t", &s, &err);
	if (rc < 0)
		fail_msg("parse: %s", err->msg);
	return s;
}

/* The error of a spec that must be refused contains want. */
static void parse_bad(const char *text, bool yaml, const char *want)
{
	struct cdi_spec *s = NULL;
	alps_error *err = NULL;
	assert_int_equal(cdi_spec_parse(text, strlen(text), yaml, "t", &s, &err), -1);
	assert_null(s);
	assert_non_null(err);
	if (!strstr(err->msg, want))
		fail_msg("error \"%s\" lacks \"%s\"", err->msg, want);
	alps_error_free(err);
}

static void test_json(void **state)
{
	struct cdi_spec *s = parse_ok(json_spec, false);
	assert_string_equal(s->kind, "vendor.com/gpu");
	assert_int_equal(s->ndevices, 2);
	assert_string_equal(s->edits.env[0], "SPEC=1");
	assert_true(s->edits.mounts[0].ro);
	const struct cdi_node *n = &s->devices[0].edits.nodes[0];
	assert_string_equal(n->path, "/dev/gpu0");
	assert_string_equal(n->host_path, "/tmp/x/gpu0");
	assert_int_equal(n->major, 195);
	assert_int_equal(n->mode, 0666);
	/* hostPath defaults to the path */
	assert_string_equal(s->devices[1].edits.nodes[0].host_path, "/dev/gpu1");
	const struct cdi_hook *h = &s->devices[1].edits.hooks[0];
	assert_string_equal(h->stage, "createContainer");
	assert_string_equal(h->args[1], "x");
	assert_null(h->args[2]);
	assert_int_equal(h->timeout, 5);
	cdi_spec_free(s);
}

static void test_yaml(void **state)
{
	struct cdi_spec *s = parse_ok(yaml_spec, true);
	assert_string_equal(s->version, "0.5.0");
	assert_string_equal(s->devices[0].name, "cxi0");
	assert_int_equal(s->devices[0].edits.nodes[0].mode, 0666);
	assert_string_equal(s->devices[0].edits.env[0], "FI_PROVIDER=cxi");
	assert_false(s->edits.mounts[0].ro);
	cdi_spec_free(s);
	/* JSON is YAML: the YAML reader takes the JSON spec too */
	s = parse_ok(json_spec, true);
	assert_int_equal(s->ndevices, 2);
	cdi_spec_free(s);
}

static void test_versions(void **state)
{
	static const char *const ok[] = { "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0" };
	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		_cleanup_free_ char *t = xasprintf("{\"cdiVersion\":\"%s\",\"kind\":\"a.b/c\","
						   "\"devices\":[{\"name\":\"d\",\"containerEdits\":"
						   "{\"env\":[\"A=1\"]}}]}", ok[i]);
		cdi_spec_free(parse_ok(t, false));
	}
	parse_bad("{\"cdiVersion\":\"1.0.0\",\"kind\":\"a.b/c\",\"devices\":[]}", false,
		  "cdiVersion: not one of 0.3.0 to 0.8.0");
}

#define DEV(edits) "{\"cdiVersion\":\"0.6.0\",\"kind\":\"a.b/c\",\"devices\":[{\"name\":\"d\"," \
	"\"containerEdits\":" edits "}]}"

static void test_hostile_paths(void **state)
{
	parse_bad(DEV("{\"deviceNodes\":[{\"path\":\"dev/x\"}]}"), false,
		  "deviceNodes[0].path: not an absolute path");
	parse_bad(DEV("{\"deviceNodes\":[{\"path\":\"/dev/../etc/shadow\"}]}"), false,
		  "\"..\" in the path");
	parse_bad(DEV("{\"deviceNodes\":[{\"path\":\"/etc/x\"}]}"), false, "below /dev");
	parse_bad(DEV("{\"deviceNodes\":[{\"path\":\"/dev/x\",\"hostPath\":\"/a/../../b\"}]}"),
		  false, "hostPath: \"..\" in the path");
	parse_bad(DEV("{\"mounts\":[{\"hostPath\":\"/a\",\"containerPath\":\"b\"}]}"), false,
		  "containerPath: not an absolute path");
	parse_bad(DEV("{\"mounts\":[{\"hostPath\":\"/a\",\"containerPath\":\"/b\","
		      "\"options\":[\"suid\"]}]}"), false, "mount option \"suid\" is not supported");
	parse_bad(DEV("{\"mounts\":[{\"hostPath\":\"/a\",\"containerPath\":\"/b\","
		      "\"type\":\"tmpfs\"}]}"), false, "only bind mounts");
	parse_bad(DEV("{\"hooks\":[{\"hookName\":\"whenever\",\"path\":\"/x\"}]}"), false,
		  "unknown hookName");
	parse_bad(DEV("{\"hooks\":[{\"hookName\":\"prestart\",\"path\":\"x\"}]}"), false,
		  "hooks[0].path: not an absolute path");
	parse_bad(DEV("{\"deviceNodes\":[{\"path\":\"/dev/x\\u0001\"}]}"), false,
		  "control characters");
	parse_bad(DEV("{\"deviceNodes\":[{\"path\":\"/dev/a\\u0000b\"}]}"), false,
		  "is not allowed");	/* jansson's own refusal */
	parse_bad("cdiVersion: 0.6.0\nkind: a.b/c\ndevices:\n - name: \"d\\0\"\n", true,
		  "a NUL inside the string");
}

static void test_hostile_values(void **state)
{
	parse_bad(DEV("{\"env\":[\"=x\"]}"), false, "env[0]: not NAME=VALUE");
	parse_bad(DEV("{\"env\":[\"A B=x\"]}"), false, "not NAME=VALUE");
	parse_bad(DEV("{\"env\":[3]}"), false, "env[0]: not a string");
	parse_bad(DEV("{\"env\":\"A=1\"}"), false, "env: not a list");
	parse_bad(DEV("{\"deviceNodes\":[{\"path\":\"/dev/x\",\"major\":-1}]}"), false,
		  "major: out of range");
	parse_bad(DEV("{\"deviceNodes\":[{\"path\":\"/dev/x\",\"fileMode\":\"0666\"}]}"), false,
		  "fileMode: not an integer");
	parse_bad(DEV("{\"deviceNodes\":[{\"path\":\"/dev/x\",\"type\":\"p\"}]}"), false,
		  "type must be");
	parse_bad(DEV("{}"), false, "a device must edit the container");
	parse_bad("{\"cdiVersion\":\"0.6.0\",\"kind\":\"nodomain/c\",\"devices\":[]}", false,
		  "kind: not vendor.com/class");
	parse_bad("{\"cdiVersion\":\"0.6.0\",\"kind\":\"a.b/c\",\"devices\":[{\"name\":\"../x\","
		  "\"containerEdits\":{\"env\":[\"A=1\"]}}]}", false, "devices[0]");
	parse_bad("{\"cdiVersion\":\"0.6.0\",\"kind\":\"a.b/c\",\"devices\":[{\"name\":\"d\","
		  "\"containerEdits\":{\"env\":[\"A=1\"]}},{\"name\":\"d\",\"containerEdits\":"
		  "{\"env\":[\"A=1\"]}}]}", false, "defined twice");
	parse_bad("{\"cdiVersion\":\"0.6.0\",\"cdiVersion\":\"0.6.0\"}", false, "duplicate");
	parse_bad("[1,2]", false, "spec: not an object");
	parse_bad("{\"cdiVersion\":\"0.6.0\",\"kind\":\"a.b/c\",\"devices\":[]}", false,
		  "at least one device");
	parse_bad("{\"cdiVersion\": ", false, "t:1:");
}

static void test_hostile_sizes(void **state)
{
	/* 1025 env entries */
	char *t = xstrdup("{\"cdiVersion\":\"0.6.0\",\"kind\":\"a.b/c\",\"devices\":[{\"name\":"
			  "\"d\",\"containerEdits\":{\"env\":[\"A=1\"");
	for (int i = 0; i < 1024; i++) {
		char *n = xasprintf("%s,\"A=1\"", t);
		free(t);
		t = n;
	}
	char *n = xasprintf("%s]}}]}", t);
	free(t);
	parse_bad(n, false, "more than 1024 entries");
	free(n);
	/* a path of 5000 bytes */
	char *longp = xmalloc(5001);
	memset(longp, 'a', 5000);
	longp[0] = '/';
	longp[5000] = '\0';
	t = xasprintf(DEV("{\"mounts\":[{\"hostPath\":\"%s\",\"containerPath\":\"/b\"}]}"), longp);
	parse_bad(t, false, "longer than 4096 bytes");
	free(t);
	free(longp);
	/* over 1 MiB */
	size_t big = CDI_MAX_FILE + 1;
	char *huge = xmalloc(big + 1);
	memset(huge, ' ', big);
	huge[big] = '\0';
	struct cdi_spec *s = NULL;
	alps_error *err = NULL;
	assert_int_equal(cdi_spec_parse(huge, big, false, "t", &s, &err), -1);
	assert_non_null(strstr(err->msg, "larger than 1 MiB"));
	alps_error_free(err);
	free(huge);
}

static void test_hostile_yaml(void **state)
{
	/* a billion laughs needs aliases */
	parse_bad("a: &x [1, 2]\nb: [*x, *x]\n", true, "aliases are not accepted");
	/* deep nesting */
	char deep[200];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	char *d = xstrndup(deep, sizeof(deep));
	parse_bad(d, true, "nested more than 32 levels");
	free(d);
	parse_bad("cdiVersion: 0.6.0\ncdiVersion: 0.6.0\n", true, "a key appears twice");
	parse_bad("a: 1\n---\nb: 2\n", true, "one YAML document");
	parse_bad("", true, "an empty document");
	parse_bad("a: [1, 2\n", true, "line");
	parse_bad("? [a]\n: b\n", true, "a mapping key must be a plain string");
	parse_bad("cdiVersion: 0.6.0\nkind: a.b/c\ndevices:\n - name: d\n   containerEdits:\n"
		  "     env: [\"A=\\0x\"]\n", true, "not a string of printable characters");
	/* a YAML integer where a string belongs */
	parse_bad("cdiVersion: 0.6.0\nkind: a.b/c\ndevices:\n - name: 0\n   containerEdits:\n"
		  "     env: [A=1]\n", true, "devices[0].name: not a string");
}

static void test_names(void **state)
{
	assert_true(cdi_name_valid("nvidia.com/gpu=all"));
	assert_true(cdi_name_valid("hpe.com/cxi=cxi0"));
	assert_true(cdi_name_valid("vendor.com/class_x=a:b-c.d"));
	assert_false(cdi_name_valid("nvidia.com/gpu"));
	assert_false(cdi_name_valid("nvidia/gpu=0"));
	assert_false(cdi_name_valid("nvidia.com/gpu=../0"));
	assert_false(cdi_name_valid("nvidia.com/gpu="));
	assert_false(cdi_name_valid("/dev/nvidia0"));
}

/* ---- the registry: files in directories ---- */

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void test_registry(void **state)
{
	if (geteuid() != 0)
		skip();
	char a[] = "/tmp/alps-cdi-a-XXXXXX", b[] = "/tmp/alps-cdi-b-XXXXXX";
	assert_non_null(mkdtemp(a));
	assert_non_null(mkdtemp(b));
	_cleanup_free_ char *fa = xasprintf("%s/gpu.json", a);
	_cleanup_free_ char *fb = xasprintf("%s/gpu.yaml", b);
	_cleanup_free_ char *fw = xasprintf("%s/writable.json", b);
	_cleanup_free_ char *fbad = xasprintf("%s/broken.yml", b);
	write_file(fa, json_spec, 0644);
	write_file(fb, "cdiVersion: 0.6.0\nkind: vendor.com/gpu\ndevices:\n - name: \"1\"\n"
		   "   containerEdits:\n     env: [FROM=b]\n", 0644);
	write_file(fw, DEV("{\"env\":[\"A=1\"]}"), 0666);
	write_file(fbad, "cdiVersion: [\n", 0644);
	const char *dirs[] = { a, b, "/nonexistent/cdi" };
	struct cdi_registry *reg = cdi_registry_load(dirs, 3);
	struct cdi_edits e = { 0 };
	alps_error *err = NULL;
	/* the later directory wins for device 1; device 0 comes from a */
	assert_int_equal(cdi_resolve(reg, "vendor.com/gpu=1", &e, &err), 0);
	assert_int_equal(e.nenv, 1);
	assert_string_equal(e.env[0], "FROM=b");
	assert_int_equal(cdi_resolve(reg, "vendor.com/gpu=0", &e, &err), 0);
	assert_string_equal(e.env[1], "SPEC=1");     /* spec edits once, before the device's */
	assert_string_equal(e.env[2], "GPU=0");
	assert_int_equal(e.nmounts, 1);
	cdi_edits_clear(&e);
	/* a file others can write is left out */
	assert_int_equal(cdi_resolve(reg, "a.b/c=d", &e, &err), -1);
	assert_non_null(strstr(err->msg, "is in no spec"));
	assert_non_null(strstr(err->msg, a));
	assert_non_null(strstr(err->msg, fa));
	assert_non_null(strstr(err->msg, "left out"));
	alps_error_free(err);
	err = NULL;
	assert_int_equal(cdi_resolve(reg, "bad name", &e, &err), -1);
	assert_non_null(strstr(err->msg, "not a CDI device name"));
	alps_error_free(err);
	cdi_registry_free(reg);
	unlink(fa);
	unlink(fb);
	unlink(fw);
	unlink(fbad);
	rmdir(a);
	rmdir(b);
}

static void test_all(void **state)
{
	if (geteuid() != 0)
		skip();
	char a[] = "/tmp/alps-cdi-all-XXXXXX";
	assert_non_null(mkdtemp(a));
	_cleanup_free_ char *fa = xasprintf("%s/gpu.json", a);
	write_file(fa, json_spec, 0644);
	const char *dirs[] = { a };
	struct cdi_registry *reg = cdi_registry_load(dirs, 1);
	struct cdi_edits e = { 0 };
	alps_error *err = NULL;
	assert_int_equal(cdi_resolve(reg, "vendor.com/gpu=all", &e, &err), 0);
	assert_int_equal(e.nnodes, 2);
	assert_int_equal(e.nhooks, 1);
	assert_int_equal(e.nmounts, 1);
	cdi_edits_clear(&e);
	assert_int_equal(cdi_resolve(reg, "vendor.com/gpu=7", &e, &err), -1);
	alps_error_free(err);
	cdi_registry_free(reg);
	unlink(fa);
	rmdir(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_yaml),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_hostile_paths),
		cmocka_unit_test(test_hostile_values),
		cmocka_unit_test(test_hostile_sizes),
		cmocka_unit_test(test_hostile_yaml),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_registry),
		cmocka_unit_test(test_all),
	};
	return cmocka_run_group_tests_name("cdi", tests, NULL, NULL);
}
