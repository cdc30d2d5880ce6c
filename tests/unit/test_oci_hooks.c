/* test_oci_hooks.c: hooks.d files (daemon/hooks/oci.h) - podman's format,
 * the "when" conditions, and files a site could get wrong (other
 * versions, relative paths, timeouts out of range, unknown stages, broken
 * regular expressions), each refused naming the field; and a hook run
 * with its state on stdin and its timeout.  No root needed. */
#include <config.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/edf.h"
#include "common/error.h"
#include "common/util.h"
#include "daemon/hooks/oci.h"

static struct edf *edf_with(const char *toml)
{
	struct edf *e = NULL;
	alps_error *err = NULL;
	if (edf_parse("t.toml", toml, strlen(toml), &e, &err) < 0)
		fail_msg("%s", err->msg);
	return e;
}

static int parse(const char *text, const struct oci_when_ctx *ctx, struct oci_hook *h,
		 bool *match, alps_error **err)
{
	return oci_hook_parse(text, strlen(text), "h.json", 30, ctx, h, match, err);
}

static void parse_bad(const char *text, const char *want)
{
	struct oci_when_ctx ctx = { 0 };
	struct oci_hook h;
	bool match;
	alps_error *err = NULL;
	assert_int_equal(parse(text, &ctx, &h, &match, &err), -1);
	if (!strstr(err->msg, want))
		fail_msg("\"%s\" lacks \"%s\"", err->msg, want);
	alps_error_free(err);
}

#define HOOK(when, stages) "{\"version\":\"1.0.0\",\"hook\":{\"path\":\"/bin/h\"," \
	"\"args\":[\"h\",\"a\"],\"env\":[\"K=V\"],\"timeout\":5},\"when\":" when \
	",\"stages\":" stages "}"

static void test_parse(void **state)
{
	struct edf *e = edf_with("[annotations]\n\"com.example.gpu\" = \"yes\"\n");
	struct oci_when_ctx ctx = { .edf = e };
	struct oci_hook h;
	bool match;
	alps_error *err = NULL;
	assert_int_equal(parse(HOOK("{\"annotations\":{\"^com\\\\.example\\\\.gpu$\":\"^yes$\"}}",
				    "[\"prestart\",\"poststop\"]"), &ctx, &h, &match, &err), 0);
	assert_true(match);
	assert_string_equal(h.path, "/bin/h");
	assert_string_equal(h.args[1], "a");
	assert_string_equal(h.env[0], "K=V");
	assert_int_equal(h.timeout_s, 5);
	assert_int_equal(h.stages, OCI_STAGE_CREATE | OCI_STAGE_POSTSTOP);
	oci_hook_clear(&h);
	/* value regex does not match; commands never select at prepare */
	assert_int_equal(parse(HOOK("{\"annotations\":{\"gpu\":\"^no$\"},\"commands\":[\".*\"]}",
				    "[\"createRuntime\"]"), &ctx, &h, &match, &err), 0);
	assert_false(match);
	oci_hook_clear(&h);
	/* hasBindMounts */
	ctx.has_binds = true;
	assert_int_equal(parse(HOOK("{\"hasBindMounts\":true}", "[\"poststart\"]"), &ctx, &h,
			       &match, &err), 0);
	assert_true(match);
	oci_hook_clear(&h);
	edf_free(e);
}

static void test_hostile(void **state)
{
	parse_bad("{\"version\":\"2.0.0\"}", "version: only \"1.0.0\"");
	parse_bad(HOOK("{\"always\":true}", "[\"whenever\"]"), "stages: unknown stage");
	parse_bad(HOOK("{\"always\":true}", "[]"), "stages: no stage");
	parse_bad(HOOK("{\"always\":\"yes\"}", "[\"prestart\"]"), "always and hasBindMounts");
	parse_bad(HOOK("{\"annotations\":{\"(\":\"x\"}}", "[\"prestart\"]"),
		  "not a regular expression");
	parse_bad(HOOK("[]", "[\"prestart\"]"), "when: missing, or not an object");
	parse_bad("{\"version\":\"1.0.0\",\"hook\":{\"path\":\"bin/h\"},\"when\":{},\"stages\":"
		  "[\"prestart\"]}", "hook.path: not an absolute path");
	parse_bad("{\"version\":\"1.0.0\",\"hook\":{\"path\":\"/h\",\"timeout\":0},\"when\":{},"
		  "\"stages\":[\"prestart\"]}", "hook.timeout: not 1 to 3600");
	parse_bad("{\"version\":\"1.0.0\",\"hook\":{\"path\":\"/h\",\"args\":[1]},\"when\":{},"
		  "\"stages\":[\"prestart\"]}", "args: entries must be strings");
	parse_bad("{\"version\":\"1.0.0\",\"version\":\"1.0.0\"}", "duplicate");
	parse_bad("{", "h.json:1:");
}

static void test_run(void **state)
{
	char dir[] = "/tmp/alps-oci-XXXXXX";
	assert_non_null(mkdtemp(dir));
	_cleanup_free_ char *script = xasprintf("%s/h.sh", dir);
	_cleanup_free_ char *out = xasprintf("%s/state", dir);
	FILE *f = fopen(script, "w");
	fprintf(f, "#!/bin/sh\ncase \"$1\" in\nslow) sleep 30;;\nfail) echo oops; exit 4;;\n"
		"*) cat > %s;;\nesac\n", out);
	fclose(f);
	chmod(script, 0755);
	char *args_ok[] = { (char *)"h", (char *)"ok", NULL };
	char *args_slow[] = { (char *)"h", (char *)"slow", NULL };
	char *args_fail[] = { (char *)"h", (char *)"fail", NULL };
	char *env[] = { NULL };
	struct oci_hook v[] = {
		{ (char *)"ok.json", script, args_ok, env, 5, OCI_STAGE_CREATE },
		{ (char *)"slow.json", script, args_slow, env, 1, OCI_STAGE_POSTSTOP },
		{ (char *)"fail.json", script, args_fail, env, 5, OCI_STAGE_CREATE },
	};
	struct oci_hooks hooks = { v, 1 };
	json_t *ann = json_pack("{s:s}", "a", "b");
	alps_error *err = NULL;
	assert_int_equal(oci_hooks_run(&hooks, OCI_STAGE_CREATE, "j1", "/run/x", 0, ann, &err), 0);
	json_error_t jerr;
	json_t *st = json_load_file(out, 0, &jerr);
	assert_non_null(st);
	assert_string_equal(json_string_value(json_object_get(st, "id")), "j1");
	assert_string_equal(json_string_value(json_object_get(st, "status")), "created");
	json_decref(st);
	hooks.n = 2;    /* the slow one is poststop only */
	uint64_t t0 = now_monotonic_ms();
	assert_int_equal(oci_hooks_run(&hooks, OCI_STAGE_POSTSTOP, "j1", "/run/x", 0, ann, &err), -1);
	assert_true(now_monotonic_ms() - t0 < 5000);
	assert_non_null(strstr(err->msg, "slow.json"));
	assert_non_null(strstr(err->msg, "killed after its timeout of 1 s"));
	alps_error_free(err);
	err = NULL;
	hooks.n = 3;
	assert_int_equal(oci_hooks_run(&hooks, OCI_STAGE_CREATE, "j1", "/run/x", 0, ann, &err), -1);
	assert_non_null(strstr(err->msg, "fail.json"));
	assert_non_null(strstr(err->msg, "exit status 4: oops"));
	alps_error_free(err);
	/* poststop hooks survive the trip through the job's row */
	json_t *kept = oci_hooks_to_json(&hooks, OCI_STAGE_POSTSTOP);
	struct oci_hooks *back = oci_hooks_from_json(kept);
	assert_int_equal(back->n, 1);
	assert_string_equal(back->v[0].name, "slow.json");
	assert_string_equal(back->v[0].args[1], "slow");
	assert_int_equal(back->v[0].timeout_s, 1);
	oci_hooks_free(back);
	json_decref(kept);
	json_decref(ann);
	unlink(script);
	unlink(out);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_run),
	};
	/* As in alpsd (daemon/main.c): a hook that exits before reading its
	 * state must give the writer EPIPE, not kill it. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("oci_hooks", tests, NULL, NULL);
}
