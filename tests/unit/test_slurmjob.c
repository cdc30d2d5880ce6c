/* test_slurmjob.c: what the SPANK plugin's local side packs for the nodes
 * (client/slurmjob.h): the site's default annotations (plugstack.conf
 * annotation= and env=) as one more EDF file holding only what the
 * user's environment leaves unset, the pinned image on top of that, and
 * the checks on a default as plugstack.conf gives it. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/slurmjob.h"
#include "common/edf.h"
#include "common/error.h"
#include "common/util.h"

static char dir[] = "/tmp/alps-slurmjob-XXXXXX";

static char *write_edf(const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static Alps__PrepareRequest *build(const char *path, const char *const *defaults)
{
	static const char *const env[] = { "HOME=/nonexistent", NULL };
	Alps__PrepareRequest *req = NULL;
	alps_error *err = NULL;
	if (slurmjob_build_ref(path, NULL, env, "/", defaults, &req, NULL, &err) < 0)
		fail_msg("%s", err->msg);
	return req;
}

/* req's merged environment, as the nodes merge it (daemon/ops/op_job.c). */
static struct edf *merge(const Alps__PrepareRequest *req)
{
	struct edf_source *src = xcalloc(req->n_environment, sizeof(*src));
	for (size_t i = 0; i < req->n_environment; i++) {
		src[i].name = req->environment[i]->path;
		src[i].content = req->environment[i]->content;
		src[i].len = strlen(src[i].content);
	}
	struct edf_source_set set = { .v = src, .n = req->n_environment };
	struct edf_loader loader = { .load = edf_source_load, .arg = &set };
	struct edf *e = NULL;
	alps_error *err = NULL;
	static const char *const env[] = { "HOME=/nonexistent", NULL };
	struct edf_context ctx = { .caller_env = env, .cwd = "/" };
	if (edf_load_all_ctx(src[0].name, &loader, &ctx, &e, NULL, NULL, &err) < 0 ||
	    edf_expand(e, &ctx, &err) < 0)
		fail_msg("%s", err->msg);
	free(src);
	return e;
}

static void test_defaults_fill_only_what_is_unset(void **state)
{
	(void)state;
	_cleanup_free_ char *p = write_edf("u.toml", "image = \"docker.io/library/x:1\"\n"
					   "[annotations]\ncom.alps.slurm.master_env = \"true\"\n");
	const char *const defaults[] = { "com.alps.slurm.master_env=false",
					 "com.hooks.cxi.enabled=false", NULL };
	Alps__PrepareRequest *req = build(p, defaults);
	assert_int_equal(req->n_environment, 2);
	assert_string_equal(req->environment[0]->path, SLURMJOB_DEFAULTS_EDF);
	assert_non_null(strstr(req->environment[0]->content, "com.hooks.cxi.enabled"));
	assert_null(strstr(req->environment[0]->content, "master_env"));
	struct edf *e = merge(req);
	assert_string_equal(edf_annotation_get(e, "com.alps.slurm.master_env"), "true");
	assert_string_equal(edf_annotation_get(e, "com.hooks.cxi.enabled"), "false");
	/* The pin goes on top of the defaults and keeps them. */
	alps_error *err = NULL;
	assert_int_equal(slurmjob_pin(req, "docker.io/library/x:1@sha256:"
				      "0000000000000000000000000000000000000000000000000000000000000000",
				      &err), 0);
	assert_int_equal(req->n_environment, 3);
	edf_free(e);
	e = merge(req);
	assert_string_equal(edf_annotation_get(e, "com.hooks.cxi.enabled"), "false");
	assert_non_null(strstr(edf_image(e), "@sha256:"));
	edf_free(e);
	slurmjob_request_free(req);
}

static void test_no_defaults_no_layer(void **state)
{
	(void)state;
	_cleanup_free_ char *p = write_edf("v.toml", "image = \"docker.io/library/x:1\"\n"
					   "[annotations]\ncom.hooks.cxi.enabled = \"true\"\n");
	const char *const defaults[] = { "com.hooks.cxi.enabled=false", NULL };
	Alps__PrepareRequest *req = build(p, defaults);
	assert_int_equal(req->n_environment, 1);          /* everything set already */
	slurmjob_request_free(req);
	req = build(p, NULL);
	assert_int_equal(req->n_environment, 1);
	slurmjob_request_free(req);
}

static void test_default_ok(void **state)
{
	(void)state;
	assert_true(slurmjob_default_ok("com.hooks.cxi.enabled=false"));
	assert_true(slurmjob_default_ok("a=")); /* an empty value is a value */
	assert_false(slurmjob_default_ok("=x"));
	assert_false(slurmjob_default_ok("noequals"));
	assert_false(slurmjob_default_ok("a b=x"));
	assert_false(slurmjob_default_ok("a=\"x"));
	assert_false(slurmjob_default_ok("a=x\\"));
	assert_false(slurmjob_default_ok("a=x\ny"));
	char big[200];
	memset(big, 'k', sizeof(big));
	big[150] = '=';
	big[199] = '\0';
	assert_false(slurmjob_default_ok(big));
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	_cleanup_free_ char *cmd = xasprintf("rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_fill_only_what_is_unset),
		cmocka_unit_test(test_no_defaults_no_layer),
		cmocka_unit_test(test_default_ok),
	};
	return cmocka_run_group_tests_name("slurmjob", tests, setup, teardown);
}
