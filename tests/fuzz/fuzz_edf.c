/* fuzz_edf.c: arbitrary bytes as an EDF (libFuzzer).
 *
 * The input is the top-level EDF "fuzz"; a loader serves it and a fixed
 * small set of bases it may name (a chain, a cycle, a diamond, one with
 * variables), so that merging, cycle detection and expansion run on
 * whatever the parser accepts.  The input is also fed to the expander
 * alone.  Seeds: tests/data/edf. */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/edf.h"
#include "common/expand.h"

static const struct {
	const char *name, *text;
} bases[] = {
	{ "base", "image = \"ubuntu:24.04\"\nmounts = [\"/opt:/opt:ro\"]\n[env]\nA = \"base\"\n" },
	{ "chain1", "base_environment = \"chain2\"\nworkdir = \"/c1\"\n" },
	{ "chain2", "base_environment = [\"base\"]\nmounts = [\"/c2:/data\"]\n" },
	{ "cycle", "base_environment = \"cycle2\"\n" },
	{ "cycle2", "base_environment = \"cycle\"\n" },
	{ "left", "base_environment = \"base\"\n[env]\nL = \"${HOME:-x}\"\n" },
	{ "right", "base_environment = \"base.toml\"\nmounts = [\"${SCRATCH}:/s\"]\n" },
	{ "vars", "image = \"${IMG:-./x.sqsh}\"\nworkdir = \"${HOME}/w\"\n"
		  "[annotations]\ncom.hooks.cxi.enabled = \"true\"\n" },
};

struct input {
	const uint8_t *data;
	size_t size;
};

static int fuzz_load(void *arg, const char *name, char **path, char **content, size_t *len,
		     alps_error **err)
{
	const struct input *in = arg;
	_cleanup_free_ char *want = edf_display_name(name);
	if (strcmp(want, "fuzz.toml") == 0) {
		*content = xmalloc(in->size + 1);
		memcpy(*content, in->data, in->size);
		(*content)[in->size] = '\0';
		*len = in->size;
		*path = xstrdup("/fuzz/fuzz.toml");
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(bases); i++) {
		_cleanup_free_ char *have = edf_display_name(bases[i].name);
		if (strcmp(have, want) != 0)
			continue;
		*content = xstrdup(bases[i].text);
		*len = strlen(bases[i].text);
		*path = xasprintf("/fuzz/%s", have);
		return 0;
	}
	return alps_fail(err, ALPS_E_NOT_FOUND, "environment \"%s\" not found", name);
}

static const char *const caller_env[] = {
	"HOME=/users/alice", "SCRATCH=/capstor/alice", "EMPTY=", "PATH=/usr/bin", NULL,
};

static void check_merged(struct edf *e)
{
	struct edf_context ctx = { .caller_env = caller_env, .cwd = "/w" };
	alps_error *err = NULL;
	if (edf_expand(e, &ctx, &err) < 0) {
		alps_error_free(err);
		return;
	}
	if (edf_job_check(e, &err) < 0) {
		if (!err || !err->msg)
			abort();
		alps_error_free(err);
	}
	json_t *j = edf_to_json(e, true);
	char *s = json_dumps(j, JSON_COMPACT);
	if (!s)
		abort();        /* every value must make valid JSON */
	free(s);
	json_decref(j);
}

static void fuzz_expander(const uint8_t *data, size_t size)
{
	_cleanup_free_ char *s = xmalloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	char *out = NULL;
	alps_error *err = NULL;
	if (expand(s, NULL, &out, &err) < 0)
		alps_error_free(err);
	free(out);
	if (expand_span(s, ':') > strlen(s))
		abort();
	/* The same bytes as a jobs.default_mounts entry. */
	char *site = NULL;
	err = NULL;
	if (edf_site_mount(s, 0, caller_env, &site, &err) < 0) {
		if (!err || !err->msg || site)
			abort();
		alps_error_free(err);
	}
	free(site);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	struct edf_loader loader = { .load = fuzz_load, .arg = &in };
	struct edf *e = NULL;
	struct edf_source *src = NULL;
	size_t n = 0;
	alps_error *err = NULL;
	struct edf_context ctx = { .caller_env = caller_env, .cwd = "/w" };
	if (edf_load_all_ctx("fuzz", &loader, &ctx, &e, &src, &n, &err) == 0) {
		check_merged(e);
		size_t nw;
		edf_strv_free(edf_warnings(e, &nw));
		edf_free(e);
		edf_sources_free(src, n);
	} else {
		if (!err || !err->msg)
			abort();        /* a failure always says why */
		alps_error_free(err);
	}
	fuzz_expander(data, size);
	return 0;
}
