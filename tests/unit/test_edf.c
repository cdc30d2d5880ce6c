/* test_edf.c: environment definition files: parsing, merging, expansion,
 * loading base environments, JSON and warnings. */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/edf.h"
#include "common/expand.h"

#include "tests/unit/edf_test.h"

/* ---- image ------------------------------------------------------------ */

static void test_image_reference(void **state)
{
	(void)state;
	struct edf *e = parse_ok("image = \"nvcr.io/nvidia/pytorch:24.01-py3\"\n");
	assert_int_equal(e->image_kind, EDF_IMAGE_REF);
	assert_string_equal(e->ref.registry, "nvcr.io");
	assert_string_equal(e->ref.repository, "nvidia/pytorch");
	assert_string_equal(e->ref.tag, "24.01-py3");
	assert_null(e->image_user);
	edf_free(e);

	e = parse_ok("image = \"ubuntu:24.04\"\n");
	assert_string_equal(e->ref.registry, "docker.io");
	assert_string_equal(e->ref.repository, "library/ubuntu");
	edf_free(e);
}

static void test_image_enroot(void **state)
{
	(void)state;
	struct edf *e = parse_ok("image = \"nvcr.io#nvidia/pytorch:24.01-py3\"\n");
	assert_int_equal(e->image_kind, EDF_IMAGE_REF);
	assert_string_equal(e->ref.registry, "nvcr.io");
	assert_string_equal(e->ref.repository, "nvidia/pytorch");
	assert_string_equal(e->ref.tag, "24.01-py3");
	edf_free(e);

	e = parse_ok("image = \"alice@nvcr.io#nvidia/pytorch:24.01-py3\"\n");
	assert_string_equal(e->image_user, "alice");
	assert_string_equal(e->ref.registry, "nvcr.io");
	edf_free(e);

	/* USER@IMAGE without a registry: docker's grammar reads a digest. */
	e = parse_ok("image = \"alice@ubuntu:22.04\"\n");
	assert_int_equal(e->image_kind, EDF_IMAGE_REF);
	assert_string_equal(e->image_user, "alice");
	assert_string_equal(e->ref.repository, "library/ubuntu");
	edf_free(e);
}

static void test_image_empty_and_errors(void **state)
{
	(void)state;
	struct edf *e = parse_ok("image = \"\"\n");
	assert_int_equal(e->image_kind, EDF_IMAGE_NONE);
	assert_string_equal(edf_image(e), "");
	edf_free(e);
	e = parse_ok("writable = true\n");
	assert_int_equal(e->image_kind, EDF_IMAGE_UNSET);
	edf_free(e);

	parse_fails("image = 3\n", "t.toml:1:9: image: expected a string, got integer");
	parse_fails("\nimage = [\"a\"]\n", "t.toml:2:9: image: expected a string, got array");
	parse_fails_with("image = \"Ubuntu\"\n", "t.toml:1:9: image: invalid image reference "
			 "\"Ubuntu\": ");
	parse_fails_with("image = \"nvcr.io/nvidia#pytorch\"\n", "t.toml:1:9: image: ");
	parse_fails("image = \"a\\u0000b\"\n", "t.toml:1:9: image: contains a NUL character");
}

/* ---- scalars ---------------------------------------------------------- */

static void test_scalars(void **state)
{
	(void)state;
	struct edf *e = parse_ok("");
	assert_false(edf_entrypoint(e));
	assert_true(edf_writable(e));
	assert_null(e->workdir.value);
	edf_free(e);

	e = parse_ok("entrypoint = true\nwritable = false\nworkdir = \"/w\"\n");
	assert_true(edf_entrypoint(e));
	assert_false(edf_writable(e));
	assert_string_equal(e->workdir.value, "/w");
	assert_int_equal(e->workdir.loc.line, 3);
	assert_int_equal(e->workdir.loc.col, 11);
	edf_free(e);

	parse_fails("writable = \"yes\"\n",
		    "t.toml:1:12: writable: expected a bool (true or false), got string");
	parse_fails("entrypoint = 1\n",
		    "t.toml:1:14: entrypoint: expected a bool (true or false), got integer");
	parse_fails("workdir = false\n", "t.toml:1:11: workdir: expected a string, got bool");
}

/* ---- env -------------------------------------------------------------- */

static void test_env(void **state)
{
	(void)state;
	struct edf *e = parse_ok("[env]\nA = \"1\"\nEMPTY = \"\"\n\"WITH SPACE\" = \"x\"\n");
	assert_int_equal(e->nenv, 3);
	assert_string_equal(edf_env_get(e, "A"), "1");
	/* "" unsets: kept as such, for the image's value to go too. */
	assert_string_equal(edf_env_get(e, "EMPTY"), "");
	assert_null(edf_env_get(e, "B"));
	assert_string_equal(e->env[0].loc.key, "env.A");
	assert_int_equal(e->env[0].loc.line, 2);
	assert_warning(e, "t.toml:4:16: env.WITH SPACE: \"WITH SPACE\" is not a portable "
		       "variable name");
	edf_free(e);

	e = parse_ok("env.A = \"dotted\"\n");
	assert_string_equal(edf_env_get(e, "A"), "dotted");
	edf_free(e);

	parse_fails("[env]\nN = 8\n", "t.toml:2:5: env.N: expected a string, got integer "
		    "(quote it: the environment holds strings)");
	parse_fails("[env]\n\"A=B\" = \"x\"\n",
		    "t.toml:2:9: env.A=B: a variable name cannot contain '=' or NUL");
	parse_fails("[env]\n\"\" = \"x\"\n", "t.toml:2:6: env.: empty variable name");
	parse_fails("[env.sub]\nA = \"x\"\n", "t.toml:1:1: env.sub: expected a string, got table");
	parse_fails("env = \"A=1\"\n", "t.toml:1:7: env: expected a table, got string");
}

static void test_env_warnings(void **state)
{
	(void)state;
	struct edf *e = parse_ok("[env]\npath = \"/x\"\nld_library_path = \"/y\"\n"
				 "http_proxy = \"p\"\nPATH = \"/opt/bin\"\n");
	assert_warning(e, "t.toml:2:8: env.path: \"path\": names are case sensitive; "
		       "did you mean PATH?");
	assert_warning(e, "env.ld_library_path: \"ld_library_path\": names are case sensitive; "
		       "did you mean LD_LIBRARY_PATH?");
	assert_no_warning(e, "http_proxy");
	assert_warning(e, "t.toml:5:8: env.PATH: replaces the image's PATH");
	edf_free(e);
	e = parse_ok("[env]\nPATH = \"/opt/bin:${PATH}\"\n");
	assert_no_warning(e, "PATH");
	edf_free(e);
}

/* ---- annotations ------------------------------------------------------ */

static void test_annotations(void **state)
{
	(void)state;
	struct edf *e = parse_ok("[annotations]\ncom.hooks.cxi.enabled = \"true\"\n"
				 "\"com.hooks.ssh.port\" = 15263\n"
				 "com.example.flag = true\n"
				 "[annotations.org.site]\nx = \"y\"\n");
	assert_int_equal(e->nannotations, 4);
	assert_string_equal(edf_annotation_get(e, "com.hooks.cxi.enabled"), "true");
	assert_string_equal(edf_annotation_get(e, "com.hooks.ssh.port"), "15263");
	assert_string_equal(edf_annotation_get(e, "com.example.flag"), "true");
	assert_string_equal(edf_annotation_get(e, "org.site.x"), "y");
	assert_string_equal(e->annotations[0].loc.key, "annotations.com.hooks.cxi.enabled");
	/* Unknown ones are kept, and reported. */
	assert_warning(e, "t.toml:4:20: annotations.com.example.flag: not an annotation alps "
		       "knows");
	assert_no_warning(e, "annotations.com.hooks.cxi.enabled: not");
	json_t *j = edf_to_json(e, false);
	json_t *u = json_object_get(j, "unknown_annotations");
	assert_int_equal(json_array_size(u), 2);
	assert_string_equal(json_string_value(json_array_get(u, 0)), "com.example.flag");
	assert_string_equal(json_string_value(json_array_get(u, 1)), "org.site.x");
	json_decref(j);
	edf_free(e);

	e = parse_ok("[annotations]\ncom.hooks.cxi.enabled = \"yes\"\n");
	assert_warning(e, "\"yes\": hooks compare .enabled with \"true\" and \"false\"");
	edf_free(e);

	/* A quoted dotted key and a dotted key flatten to the same name. */
	parse_fails("[annotations]\na.b = \"1\"\n\"a.b\" = \"2\"\n",
		    "t.toml:3:9: annotations.a.b: defined twice (also at line 2)");
	parse_fails("[annotations]\nx = 1.5\n",
		    "t.toml:2:5: annotations.x: expected a string, got float");
	parse_fails("[annotations]\nx = [\"a\"]\n",
		    "t.toml:2:5: annotations.x: expected a string, got array");
	parse_fails("annotations = 1\n", "t.toml:1:15: annotations: expected a table, got integer");
}

/* The SSH hook example of the CE: "Control of SSH hook parameters via
 * annotation and variable expansion" -- annotations expand, $$ escapes. */
/* ---- unknown keys, syntax, limits -------------------------------------- */

static void test_unknown_keys(void **state)
{
	(void)state;
	parse_fails("mount = [\"/a:/b\"]\n", "t.toml:1:1: mount: unknown key (did you mean "
		    "'mounts'?)");
	parse_fails("image = \"u\"\n[enviroment]\nA = \"1\"\n",
		    "t.toml:2:2: enviroment: unknown key (did you mean 'env'?)");
	parse_fails("[environment]\n", "t.toml:1:2: environment: unknown key (did you mean "
		    "'env'?)");
	parse_fails("Image = \"u\"\n", "t.toml:1:1: Image: unknown key (did you mean 'image'?)");
	parse_fails("  writeable = true\n", "t.toml:1:3: writeable: unknown key (did you mean "
		    "'writable'?)");
	parse_fails("base_enviroment = \"x\"\n", "t.toml:1:1: base_enviroment: unknown key "
		    "(did you mean 'base_environment'?)");
	parse_fails("working_dir = \"/\"\n", "t.toml:1:1: working_dir: unknown key (did you "
		    "mean 'workdir'?)");
	parse_fails("zzz = 1\n", "t.toml:1:1: zzz: unknown key (known: base_environment, "
		    "image, workdir, entrypoint, writable, mounts, env, annotations, devices)");
}

static void test_syntax_and_limits(void **state)
{
	(void)state;
	parse_fails_with("image = \"ubuntu\n", "t.toml:1:");
	parse_fails_with("image = \"a\"\nimage = \"b\"\n", "t.toml:2:");

	size_t n = EDF_MAX_SIZE + 1;
	char *big = xmalloc(n);
	memset(big, '#', n);
	struct edf *e = NULL;
	alps_error *err = NULL;
	assert_int_equal(edf_parse("big", big, n, &e, &err), -1);
	assert_int_equal(err->code, ALPS_E_LIMIT);
	assert_string_equal(err->msg, "big.toml: larger than 1048576 bytes");
	alps_error_free(err);
	free(big);

	/* Display names: ".toml" added to bare names only. */
	char *d = edf_display_name("pytorch");
	assert_string_equal(d, "pytorch.toml");
	free(d);
	d = edf_display_name("./x");
	assert_string_equal(d, "./x");
	free(d);
}

/* ---- the expander ------------------------------------------------------ */

static const char *const caller_env[] = {
	"HOME=/users/alice", "USER=alice", "EMPTY=", "PATH=/usr/bin", "SCRATCH=/capstor/alice",
	NULL,
};

static const char *envv_lookup(void *arg, const char *name)
{
	return expand_envv_get(arg, name);
}

static void expands_to(const char *in, const char *want)
{
	struct expand_vars v = { .lookup = envv_lookup, .arg = (void *)caller_env };
	char *out = NULL;
	alps_error *err = NULL;
	if (expand(in, &v, &out, &err) < 0)
		fail_msg("%s: %s", in, err->msg);
	if (strcmp(out, want) != 0)
		fail_msg("%s: got \"%s\", want \"%s\"", in, out, want);
	free(out);
}

static void expand_fails(const char *in, const char *want)
{
	char *out = NULL;
	alps_error *err = NULL;
	if (expand(in, NULL, &out, &err) == 0)
		fail_msg("%s: no error", in);
	assert_null(out);
	if (strcmp(err->msg, want) != 0)
		fail_msg("%s:\n got: %s\nwant: %s", in, err->msg, want);
	alps_error_free(err);
}

static void test_expand(void **state)
{
	(void)state;
	expands_to("", "");
	expands_to("plain", "plain");
	expands_to("${HOME}/x", "/users/alice/x");
	expands_to("$$", "$");
	expands_to("a$$b$${HOME}", "a$b${HOME}");
	expands_to("${NOPE:-dflt}", "dflt");
	expands_to("${HOME:-dflt}", "/users/alice");
	expands_to("${EMPTY:-dflt}", "dflt");        /* ":-": set but empty too */
	expands_to("${NOPE:-}", "");
	expands_to("${NOPE:-a:b}", "a:b");
	expands_to("${NOPE:-${USER}}", "alice");
	expands_to("${NOPE:-${NOPE2:-x$$y}}", "x$y");
	expands_to("$1 $ a$", "$1 $ a$");
	expands_to("}", "}");
	expands_to("${_a1:-}", "");

	expand_fails("${HOME", "unterminated \"${\" at character 1 of \"${HOME\"");
	expand_fails("ab${", "unterminated \"${\" at character 3 of \"ab${\"");
	expand_fails("${NOPE:-x", "unterminated \"${\" at character 1 of \"${NOPE:-x\"");
	expand_fails("${}", "empty variable name at character 1 of \"${}\"");
	expand_fails("${:-x}", "empty variable name at character 1 of \"${:-x}\"");
	expand_fails("${1A}", "invalid variable name (expected NAME, ${NAME} or ${NAME:-default}) "
		     "at character 3 of \"${1A}\"");
	expand_fails("${A-b}", "invalid variable name (expected NAME, ${NAME} or "
		     "${NAME:-default}) at character 4 of \"${A-b}\"");
	expand_fails("${A B}", "invalid variable name (expected NAME, ${NAME} or "
		     "${NAME:-default}) at character 4 of \"${A B}\"");
	expand_fails("x$HOME", "bare '$' before a name (write ${NAME}, or $$ for a literal '$') "
		     "at character 2 of \"x$HOME\"");
	/* The syntax of a default that is not used is still checked. */
	expand_fails("${HOME:-${}", "empty variable name at character 9 of \"${HOME:-${}\"");
	expand_fails("${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A}}}}}}}}}",
		     "\"${\" nested too deeply at character 41 of "
		     "\"${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A}}}}}}}}}\"");

	/* "Referencing an undefined variable results in an error.  To safely
	 * handle undefined variables, you can use the syntax ${VAR:-}, which
	 * evaluates to an empty string if VAR is undefined." (CE, edf.md) */
	struct expand_vars v = { .lookup = envv_lookup, .arg = (void *)caller_env };
	char *out = NULL;
	alps_error *err = NULL;
	assert_int_equal(expand("/x/${NOPE}/y", &v, &out, &err), -1);
	assert_null(out);
	assert_string_equal(err->msg, "${NOPE} is not defined (write ${NOPE:-} for an empty "
			    "default)");
	alps_error_free(err);
	err = NULL;
	/* Inside a default that is used, too; in one that is not, never. */
	assert_int_equal(expand("${NOPE:-${NOPE2}}", &v, &out, &err), -1);
	assert_string_equal(err->msg, "${NOPE2} is not defined (write ${NOPE2:-} for an empty "
			    "default)");
	alps_error_free(err);
	expands_to("${HOME:-${NOPE}}", "/users/alice");
	expands_to("${EMPTY}", "");             /* defined, empty */
	/* Without vars: the syntax only. */
	assert_int_equal(expand("${NOPE}", NULL, &out, NULL), 0);
	assert_string_equal(out, "");
	free(out);

	assert_int_equal(expand_span("/a:/b", ':'), 2);
	assert_int_equal(expand_span("${A:-x:y}:/b", ':'), 9);
	assert_int_equal(expand_span("$${A:/b", ':'), 4);
	assert_int_equal(expand_span("${A:-${B:-:}}:z", ':'), 13);
	assert_int_equal(expand_span("nothing", ':'), 7);
	assert_null(expand_envv_get(NULL, "A"));
	assert_null(expand_envv_get(caller_env, "HOM"));
}

/* ---- expansion in EDFs ------------------------------------------------- */

/* "Variables defined within the [env] EDF table cannot reference other
 * entries from [env] tables ... Therefore, only environment variables from
 * the host can be referenced." (CE, edf.md)  alps holds every value to
 * that one rule: names come from the job's host environment only. */
static void test_expand_edf(void **state)
{
	(void)state;
	struct edf *e = parse_ok(
		"image = \"${REG:-nvcr.io}#nvidia/pytorch:${TAG:-24.01}\"\n"
		"workdir = \"${HOME}/w\"\n"
		"mounts = [\"${SCRATCH}:/scratch\", \"${HOME}/src:${SCRATCH}/src:ro\",\n"
		"          \"${NOPE:-/opt}:/o\"]\n"
		"[env]\n"
		"PATH = \"/opt/bin:${PATH}\"\n"
		"WHO = \"${USER}\"\n"
		"PRICE = \"$$5\"\n");
	assert_int_equal(e->image_kind, EDF_IMAGE_DEFERRED);
	expand_ok(e, caller_env);
	assert_true(e->expanded);
	assert_int_equal(e->image_kind, EDF_IMAGE_REF);
	assert_string_equal(e->ref.registry, "nvcr.io");
	assert_string_equal(e->ref.tag, "24.01");
	assert_string_equal(e->workdir.value, "/users/alice/w");
	assert_string_equal(e->mounts[0].src, "/capstor/alice");
	assert_string_equal(e->mounts[1].src, "/users/alice/src");
	assert_string_equal(e->mounts[1].dst, "/capstor/alice/src");
	assert_string_equal(e->mounts[2].src, "/opt");
	/* ${PATH} in [env] is the host's. */
	assert_string_equal(edf_env_get(e, "PATH"), "/opt/bin:/usr/bin");
	assert_string_equal(edf_env_get(e, "WHO"), "alice");
	assert_string_equal(edf_env_get(e, "PRICE"), "$5");
	/* Once only: "$5" must not be expanded again. */
	expand_ok(e, caller_env);
	assert_string_equal(edf_env_get(e, "PRICE"), "$5");
	edf_free(e);
}

static void test_expand_unset_and_errors(void **state)
{
	(void)state;
	/* "Referencing an undefined variable results in an error." (CE,
	 * edf.md): with the file, line and key, in every value. */
	struct {
		const char *text, *want;
	} undef[] = {
		{ "workdir = \"/w/${NOPE}\"\n", "t.toml:1:11: workdir: ${NOPE} is not defined "
		  "(write ${NOPE:-} for an empty default)" },
		{ "[env]\nX = \"${CUDA_HOME}\"\n", "t.toml:2:5: env.X: ${CUDA_HOME} is not defined "
		  "(write ${CUDA_HOME:-} for an empty default)" },
		{ "mounts = [\"${NOPE}/x:/x\"]\n", "t.toml:1:11: mounts[0]: ${NOPE} is not defined "
		  "(write ${NOPE:-} for an empty default)" },
		{ "image = \"${NOIMAGE}\"\n", "t.toml:1:9: image: ${NOIMAGE} is not defined "
		  "(write ${NOIMAGE:-} for an empty default)" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(undef); i++) {
		struct edf *u = parse_ok(undef[i].text);
		struct edf_context ctx = { .caller_env = caller_env };
		alps_error *err = NULL;
		assert_int_equal(edf_expand(u, &ctx, &err), -1);
		if (strcmp(err->msg, undef[i].want) != 0)
			fail_msg("got: %s\nwant: %s", err->msg, undef[i].want);
		alps_error_free(err);
		edf_free(u);
	}
	/* ${VAR:-} is how a user asks for an empty value. */
	struct edf *e = parse_ok("workdir = \"/w/${NOPE:-}\"\n[env]\nX = \"${NOPE:-}\"\n");
	expand_ok(e, caller_env);
	assert_string_equal(e->workdir.value, "/w/");
	assert_string_equal(edf_env_get(e, "X"), "");
	edf_free(e);

	/* Syntax errors are found when parsing, with the place. */
	parse_fails("workdir = \"${HOME\"\n", "t.toml:1:11: workdir: unterminated \"${\" at "
		    "character 1 of \"${HOME\"");
	parse_fails("[env]\nA = \"$HOME\"\n", "t.toml:2:5: env.A: bare '$' before a name (write "
		    "${NAME}, or $$ for a literal '$') at character 1 of \"$HOME\"");
	parse_fails("mounts = [\"${}:/d\"]\n",
		    "t.toml:1:11: mounts[0]: empty variable name at character 1 of \"${}:/d\"");
	parse_fails("image = \"${1}\"\n", "t.toml:1:9: image: invalid variable name (expected "
		    "NAME, ${NAME} or ${NAME:-default}) at character 3 of \"${1}\"");

	/* Values checked once final, with the place. */
	struct {
		const char *text, *want;
	} late[] = {
		{ "mounts = [\"${USER}:/d\"]\n", "t.toml:1:11: mounts[0]: source \"alice\" is not "
		  "absolute (write \"./alice\" for a path relative to the working directory)" },
		{ "mounts = [\"/s:${USER}\"]\n", "t.toml:1:11: mounts[0]: destination \"alice\" is "
		  "not absolute (it is a path inside the container)" },
		{ "mounts = [\"${EMPTY}:/d\"]\n", "t.toml:1:11: mounts[0]: empty source" },
		{ "mounts = [\"/a:/d\", \"/b:${HOME}/../d\"]\n", "t.toml:1:20: mounts[1]: "
		  "destination \"/users/alice/../d\" contains \"..\"" },
		{ "mounts = [\"/a:/users/alice\", \"/b:${HOME}\"]\n", "t.toml:1:30: mounts[1]: "
		  "destination /users/alice is already mounted by mounts[0] (line 1)" },
		{ "image = \"./${USER}.sqsh\"\n", "t.toml:1:9: image: relative image path "
		  "\"./alice.sqsh\" and no working directory to resolve it against" },
		{ "workdir = \"${USER}\"\n", "t.toml:1:11: workdir: \"alice\" is not an absolute "
		  "path (it is a path inside the container)" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(late); i++) {
		e = parse_ok(late[i].text);
		struct edf_context ctx = { .caller_env = caller_env };
		alps_error *err = NULL;
		assert_int_equal(edf_expand(e, &ctx, &err), -1);
		if (strcmp(err->msg, late[i].want) != 0)
			fail_msg("got: %s\nwant: %s", err->msg, late[i].want);
		alps_error_free(err);
		edf_free(e);
	}

	/* An image that expands to nothing is no container. */
	e = parse_ok("image = \"${NOIMAGE:-}\"\n");
	expand_ok(e, caller_env);
	assert_int_equal(e->image_kind, EDF_IMAGE_NONE);
	edf_free(e);
}

/* ---- merging and base_environment -------------------------------------- */

static void test_merge_rules(void **state)
{
	(void)state;
	const struct memfile files[] = {
		{ "top", NULL,
		  "base_environment = [\"b1\", \"b2\"]\n"
		  "workdir = \"/top\"\n"
		  "mounts = [\"/t:/t\"]\n"
		  "[env]\nA = \"top\"\nT = \"t\"\n"
		  "[annotations]\nx.y = \"top\"\n" },
		{ "b1", NULL,
		  "image = \"ubuntu:1\"\nwritable = false\nentrypoint = true\nworkdir = \"/b1\"\n"
		  "mounts = [\"/b1:/b1\"]\n"
		  "[env]\nA = \"b1\"\nB = \"b1\"\nC = \"b1\"\n"
		  "[annotations]\nx.y = \"b1\"\nz = \"b1\"\n" },
		{ "b2", NULL,
		  "image = \"ubuntu:2\"\nwritable = true\n"
		  "mounts = [\"/b2:/b2\"]\n"
		  "[env]\nB = \"b2\"\nC = \"\"\n" },
	};
	struct memfs fs = MEMFS(files);
	struct edf *e = load_ok(&fs, "top");
	/* "Parameters from the listed environments are evaluated sequentially,
	 * adding new entries or overwriting previous ones, before evaluating
	 * the parameters from the current EDF."
	 * Scalars: the child over its bases, a later base over an earlier. */
	assert_string_equal(e->ref.tag, "2");
	assert_string_equal(e->image.loc.file, "b2.toml");
	assert_true(edf_writable(e));
	assert_true(edf_entrypoint(e));        /* only b1 says */
	assert_string_equal(e->workdir.value, "/top");
	/* Mounts append, bases first, in order. */
	assert_int_equal(e->nmounts, 3);
	assert_string_equal(e->mounts[0].dst, "/b1");
	assert_string_equal(e->mounts[1].dst, "/b2");
	assert_string_equal(e->mounts[2].dst, "/t");
	/* env: key by key, later wins, first place kept. */
	assert_int_equal(e->nenv, 4);
	assert_string_equal(e->env[0].key, "A");
	assert_string_equal(e->env[0].value, "top");
	assert_string_equal(e->env[1].value, "b2");
	assert_string_equal(e->env[2].value, "");      /* unset by b2 */
	assert_string_equal(e->env[3].key, "T");
	assert_string_equal(e->env[0].loc.file, "top.toml");
	assert_string_equal(edf_annotation_get(e, "x.y"), "top");
	assert_string_equal(edf_annotation_get(e, "z"), "b1");
	/* The result is the top file's, with the files in merge order. */
	assert_string_equal(e->name, "top.toml");
	assert_int_equal(e->nbases, 2);
	assert_int_equal(e->nfiles, 3);
	assert_string_equal(e->files[0].name, "b1.toml");
	assert_string_equal(e->files[1].name, "b2.toml");
	assert_string_equal(e->files[2].name, "top.toml");
	edf_free(e);
}

static void test_merge_image_override_and_diamond(void **state)
{
	(void)state;
	/* image = "" in the child drops the base's image. */
	const struct memfile drop[] = {
		{ "top", NULL, "base_environment = \"b\"\nimage = \"\"\n" },
		{ "b", NULL, "image = \"ubuntu:24.04\"\n" },
	};
	struct memfs fs = MEMFS(drop);
	struct edf *e = load_ok(&fs, "top");
	assert_int_equal(e->image_kind, EDF_IMAGE_NONE);
	edf_free(e);

	/* A diamond: d counts once, at its first place, so that b's values
	 * are not overridden again by d on the way through c. */
	const struct memfile diamond[] = {
		{ "a", NULL, "base_environment = [\"b\", \"c\"]\n" },
		{ "b", NULL, "base_environment = \"d\"\nworkdir = \"/b\"\nmounts = [\"/b:/b\"]\n" },
		{ "c", NULL, "base_environment = \"d.toml\"\nmounts = [\"/c:/c\"]\n" },
		{ "d", NULL, "workdir = \"/d\"\nmounts = [\"/d:/d\"]\n" },
	};
	struct memfs fs2 = MEMFS(diamond);
	e = load_ok(&fs2, "a");
	assert_string_equal(e->workdir.value, "/b");
	assert_int_equal(e->nmounts, 3);
	assert_string_equal(e->mounts[0].dst, "/d");
	assert_string_equal(e->mounts[1].dst, "/b");
	assert_string_equal(e->mounts[2].dst, "/c");
	assert_int_equal(fs2.calls, 4);        /* "d.toml" is "d": not loaded again */
	edf_free(e);

	/* Merging after expanding is refused. */
	struct edf *x = parse_ok(""), *y = parse_ok("");
	expand_ok(y, NULL);
	alps_error *err = NULL;
	assert_int_equal(edf_merge(x, y, &err), -1);
	assert_int_equal(err->code, ALPS_E_INTERNAL);
	alps_error_free(err);
	edf_free(x);
	edf_free(y);
}

static void test_depth_limit(void **state)
{
	(void)state;
	/* e0 -> e1 -> ... -> e11; starting at eK gives 11-K levels of bases. */
	struct memfile files[12];
	char names[12][8], texts[12][64];
	for (int i = 0; i < 12; i++) {
		snprintf(names[i], sizeof(names[i]), "e%d", i);
		if (i < 11)
			snprintf(texts[i], sizeof(texts[i]), "base_environment = \"e%d\"\n", i + 1);
		else
			snprintf(texts[i], sizeof(texts[i]), "workdir = \"/deepest\"\n");
		files[i] = (struct memfile){ names[i], NULL, texts[i] };
	}
	struct memfs fs = MEMFS(files);
	struct edf *e = load_ok(&fs, "e1");     /* 10 levels: fine */
	assert_string_equal(e->workdir.value, "/deepest");
	assert_int_equal(e->nfiles, 11);
	edf_free(e);

	alps_error *err = load_fails(&fs, "e0");  /* 11 levels */
	assert_int_equal(err->code, ALPS_E_LIMIT);
	assert_string_equal(err->msg, "e10.toml:1:20: base_environment: base_environment nests "
			    "more than 10 levels deep: e0.toml -> e1.toml -> e2.toml -> e3.toml -> "
			    "e4.toml -> e5.toml -> e6.toml -> e7.toml -> e8.toml -> e9.toml -> "
			    "e10.toml -> e11.toml");
	alps_error_free(err);
}

static void test_cycles(void **state)
{
	(void)state;
	const struct memfile files[] = {
		{ "a", NULL, "base_environment = \"b\"\n" },
		{ "b", NULL, "image = \"u:1\"\nbase_environment = [\"c\", \"a.toml\"]\n" },
		{ "c", NULL, "" },
		{ "self", NULL, "base_environment = [\"self\"]\n" },
		/* Two names, one file: found by path. */
		{ "x", "/edf/x.toml", "base_environment = \"y\"\n" },
		{ "y", "/edf/y.toml", "base_environment = \"/edf/x.toml\"\n" },
		{ "/edf/x.toml", "/edf/x.toml", "base_environment = \"y\"\n" },
	};
	struct memfs fs = MEMFS(files);
	alps_error *err = load_fails(&fs, "a");
	assert_int_equal(err->code, ALPS_E_INVALID);
	assert_string_equal(err->msg, "b.toml:2:26: base_environment[1]: base_environment cycle: "
			    "a.toml -> b.toml -> a.toml");
	alps_error_free(err);

	err = load_fails(&fs, "self");
	assert_string_equal(err->msg, "self.toml:1:21: base_environment[0]: base_environment "
			    "cycle: self.toml -> self.toml");
	alps_error_free(err);

	err = load_fails(&fs, "x");
	assert_string_equal(err->msg, "y.toml:1:20: base_environment: base_environment cycle: "
			    "x.toml -> y.toml -> /edf/x.toml (the same file as x.toml)");
	alps_error_free(err);
}

static void test_missing_and_bad_base(void **state)
{
	(void)state;
	const struct memfile files[] = {
		{ "top", NULL, "image = \"u:1\"\n\nbase_environment = [\"ok\", \"gone\"]\n" },
		{ "ok", NULL, "" },
		{ "badtop", NULL, "base_environment = \"bad\"\n" },
		{ "bad", NULL, "mounts = [\"/a:/b:rwx\"]\n" },
	};
	struct memfs fs = MEMFS(files);
	alps_error *err = load_fails(&fs, "top");
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	assert_string_equal(err->msg, "top.toml:3:27: base_environment[1]: environment \"gone\" "
			    "not found (searched memory)");
	alps_error_free(err);

	err = load_fails(&fs, "");
	assert_string_equal(err->msg, "empty environment name");
	alps_error_free(err);

	err = load_fails(&fs, "nothing");
	assert_string_equal(err->msg, "environment \"nothing\" not found (searched memory)");
	alps_error_free(err);

	/* An error in a base names the base. */
	err = load_fails(&fs, "badtop");
	assert_string_equal(err->msg, "bad.toml:1:11: mounts[0]: unknown mount flag 'rwx' (ro, "
			    "rw, rbind, norbind, nosuid, nodev, private, rprivate, sqsh)");
	alps_error_free(err);

	parse_fails("base_environment = 3\n", "t.toml:1:20: base_environment: expected a string "
		    "or an array of strings, got integer");
	parse_fails("base_environment = [\"a\", 1]\n",
		    "t.toml:1:26: base_environment[1]: expected a string, got integer");
}

/* base_environment: "Default: """; "" names no base, and so does an entry
 * that expands to "" ("${EXTRA_BASE:-}").  Entries expand like every value
 * ("Variable expansion is supported across all EDF parameters"). */
/* ---- the file loader --------------------------------------------------- */

struct tmp {
	char dir[PATH_MAX];
	char cwd[PATH_MAX];
	char *home, *edf_path;
};

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *dup_env(const char *name)
{
	const char *v = getenv(name);
	return v ? xstrdup(v) : NULL;
}

static int tmp_setup(void **state)
{
	struct tmp *t = xzalloc(sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/test_edf.XXXXXX");
	if (!mkdtemp(t->dir) || !getcwd(t->cwd, sizeof(t->cwd)))
		return -1;
	t->home = dup_env("HOME");
	t->edf_path = dup_env("EDF_PATH");
	*state = t;
	return 0;
}

static void rm_rf(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			char sub[PATH_MAX];
			snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
			rm_rf(sub);
		}
		if (d)
			closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

static void restore_env(const char *name, const char *value)
{
	if (value)
		setenv(name, value, 1);
	else
		unsetenv(name);
}

static int tmp_teardown(void **state)
{
	struct tmp *t = *state;
	if (chdir(t->cwd) < 0)
		return -1;
	rm_rf(t->dir);
	restore_env("HOME", t->home);
	restore_env("EDF_PATH", t->edf_path);
	free(t->home);
	free(t->edf_path);
	free(t);
	return 0;
}

static int file_load_all(const char *first, struct edf **e, struct edf_source **src,
			 size_t *n, alps_error **err)
{
	return edf_load_all(first, &edf_file_loader, e, src, n, err);
}

static void test_files_default_path(void **state)
{
	struct tmp *t = *state;
	char edf_dir[PATH_MAX + 8];
	snprintf(edf_dir, sizeof(edf_dir), "%s/.edf", t->dir);
	assert_int_equal(mkdir(edf_dir, 0700), 0);
	write_file(edf_dir, "mine.toml", "base_environment = \"base.toml\"\nimage = \"u:1\"\n");
	write_file(edf_dir, "base.toml", "workdir = \"/w\"\n");
	setenv("HOME", t->dir, 1);
	unsetenv("EDF_PATH");

	struct edf *e = NULL;
	struct edf_source *src = NULL;
	size_t n = 0;
	alps_error *err = NULL;
	if (file_load_all("mine", &e, &src, &n, &err) < 0)
		fail_msg("%s", err->msg);
	assert_string_equal(e->workdir.value, "/w");
	assert_int_equal(n, 2);
	assert_string_equal(src[0].name, "mine");
	assert_string_equal(src[1].name, "base.toml");
	assert_true(str_has_suffix(src[0].path, "/.edf/mine.toml"));
	assert_string_equal(src[1].content, "workdir = \"/w\"\n");
	assert_int_equal(src[1].len, strlen(src[1].content));
	edf_sources_free(src, n);
	edf_free(e);

	/* Missing: the message says where it looked. */
	assert_int_equal(file_load_all("nope", &e, NULL, NULL, &err), -1);
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	char want[PATH_MAX * 2];
	snprintf(want, sizeof(want), "environment \"nope\" not found (searched %s/.edf/nope.toml)",
		 t->dir);
	assert_string_equal(err->msg, want);
	alps_error_free(err);
	err = NULL;

	/* "x.toml" that is not on the path: a hint about ./ */
	assert_int_equal(file_load_all("here.toml", &e, NULL, NULL, &err), -1);
	snprintf(want, sizeof(want), "environment \"here.toml\" not found (searched "
		 "%s/.edf/here.toml); for the file in the current directory write ./here.toml",
		 t->dir);
	assert_string_equal(err->msg, want);
	alps_error_free(err);
	err = NULL;

	unsetenv("HOME");
	assert_int_equal(file_load_all("mine", &e, NULL, NULL, &err), -1);
	assert_string_equal(err->msg, "environment \"mine\" not found (searched nothing: "
			    "EDF_PATH is not set and HOME is not set)");
	alps_error_free(err);
}

static void test_files_edf_path(void **state)
{
	struct tmp *t = *state;
	char d1[PATH_MAX + 8], d2[PATH_MAX + 8], p[3 * PATH_MAX];
	snprintf(d1, sizeof(d1), "%s/one", t->dir);
	snprintf(d2, sizeof(d2), "%s/two", t->dir);
	assert_int_equal(mkdir(d1, 0700), 0);
	assert_int_equal(mkdir(d2, 0700), 0);
	write_file(d1, "x.toml", "workdir = \"/one\"\n");
	write_file(d2, "x.toml", "workdir = \"/two\"\n");
	write_file(d2, "y.toml", "base_environment = \"x\"\nworkdir = \"/y\"\n"
		   "mounts = [\"/a:/a\"]\n");
	snprintf(p, sizeof(p), "::%s:%s/", d1, d2);
	setenv("EDF_PATH", p, 1);
	setenv("HOME", "/nonexistent", 1);

	struct edf *e = NULL;
	alps_error *err = NULL;
	assert_int_equal(file_load_all("x", &e, NULL, NULL, &err), 0);
	assert_string_equal(e->workdir.value, "/one");      /* first directory wins */
	edf_free(e);
	assert_int_equal(file_load_all("y", &e, NULL, NULL, &err), 0);
	assert_string_equal(e->workdir.value, "/y");
	edf_free(e);

	assert_int_equal(file_load_all("z", &e, NULL, NULL, &err), -1);
	char want[4 * PATH_MAX];
	snprintf(want, sizeof(want), "environment \"z\" not found (searched %s/z.toml, %s/z.toml)",
		 d1, d2);
	assert_string_equal(err->msg, want);
	alps_error_free(err);

	/* "EDF_PATH must be a colon-separated list of absolute paths". */
	err = NULL;
	setenv("EDF_PATH", "edfs", 1);
	assert_int_equal(file_load_all("x", &e, NULL, NULL, &err), -1);
	assert_string_equal(err->msg, "EDF_PATH entry \"edfs\" is not an absolute path");
	alps_error_free(err);
}

/* The job user's world: "By default, the EDFs for each user are looked up
 * in ${HOME}/.edf" -- the job user's home, not the caller's. */
static void test_files_user_world(void **state)
{
	struct tmp *t = *state;
	char edfdir[PATH_MAX + 8];
	snprintf(edfdir, sizeof(edfdir), "%s/.edf", t->dir);
	assert_int_equal(mkdir(edfdir, 0700), 0);
	write_file(edfdir, "mine.toml", "workdir = \"/mine\"\n");
	setenv("HOME", "/nonexistent", 1);
	setenv("EDF_PATH", "/nonexistent/edf", 1);
	struct edf_file_world w = { .home = t->dir, .use_edf_path = true, .edf_path = NULL };
	struct edf_loader loader = { .load = edf_file_load, .arg = &w };
	struct edf *e = NULL;
	alps_error *err = NULL;
	if (edf_load_all("mine", &loader, &e, NULL, NULL, &err) < 0)
		fail_msg("%s", err->msg);
	assert_string_equal(e->workdir.value, "/mine");
	edf_free(e);
}

static void test_files_relative_and_checks(void **state)
{
	struct tmp *t = *state;
	char sub[PATH_MAX + 8];
	snprintf(sub, sizeof(sub), "%s/sub", t->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	write_file(t->dir, "local.toml",
		   "base_environment = \"sub/inner.toml\"\nimage = \"u:1\"\n");
	write_file(sub, "inner.toml", "workdir = \"/inner\"\n");
	assert_int_equal(chdir(t->dir), 0);
	setenv("EDF_PATH", "/nonexistent", 1);

	struct edf *e = NULL;
	struct edf_source *src = NULL;
	size_t n = 0;
	alps_error *err = NULL;
	/* Relative names resolve against the working directory, not the
	 * directory of the file that names them. */
	if (file_load_all("./local.toml", &e, &src, &n, &err) < 0)
		fail_msg("%s", err->msg);
	assert_string_equal(e->workdir.value, "/inner");
	assert_string_equal(e->files[0].name, "sub/inner.toml");
	assert_true(str_has_suffix(e->files[0].path, "/sub/inner.toml"));
	edf_free(e);
	edf_sources_free(src, n);
	assert_int_equal(chdir(sub), 0);
	assert_int_equal(file_load_all("./local.toml", &e, NULL, NULL, &err), -1);
	assert_string_equal(err->msg, "environment \"./local.toml\" not found");
	alps_error_free(err);
	err = NULL;

	/* A symlink is followed: the client reads as the user. */
	assert_int_equal(symlink("../local.toml", "link.toml"), 0);
	assert_int_equal(chdir(t->dir), 0);
	assert_int_equal(file_load_all("sub/link.toml", &e, NULL, NULL, &err), 0);
	edf_free(e);

	/* Only regular files. */
	assert_int_equal(mkdir("dir.toml", 0700), 0);
	assert_int_equal(file_load_all("./dir.toml", &e, NULL, NULL, &err), -1);
	assert_string_equal(err->msg, "./dir.toml: not a regular file");
	alps_error_free(err);
	err = NULL;
	assert_int_equal(mkfifo("fifo.toml", 0600), 0);
	assert_int_equal(file_load_all("./fifo.toml", &e, NULL, NULL, &err), -1);
	assert_string_equal(err->msg, "./fifo.toml: not a regular file");
	alps_error_free(err);
	err = NULL;

	/* At most 1 MiB. */
	int fd = open("big.toml", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, EDF_MAX_SIZE + 1), 0);
	close(fd);
	assert_int_equal(file_load_all("./big.toml", &e, NULL, NULL, &err), -1);
	assert_int_equal(err->code, ALPS_E_LIMIT);
	assert_string_equal(err->msg, "./big.toml: larger than 1048576 bytes");
	alps_error_free(err);
	err = NULL;

	/* Unreadable: reported, not skipped (root reads anyway). */
	if (geteuid() != 0) {
		write_file(t->dir, "secret.toml", "");
		assert_int_equal(chmod("secret.toml", 0), 0);
		assert_int_equal(file_load_all("./secret.toml", &e, NULL, NULL, &err), -1);
		assert_int_equal(err->code, ALPS_E_PERMISSION);
		alps_error_free(err);
	}
}

/* The daemon merges from the sources the client sent, exactly as the
 * client merged from files. */
static void test_sources_roundtrip(void **state)
{
	struct tmp *t = *state;
	write_file(t->dir, "top.toml", "base_environment = [\"b\", \"./c.toml\"]\n"
		   "image = \"nvcr.io#nvidia/pytorch:24.01-py3\"\n[env]\nA = \"${USER}\"\n");
	write_file(t->dir, "b.toml", "base_environment = \"./c.toml\"\nmounts = [\"/b:/b\"]\n");
	write_file(t->dir, "c.toml", "mounts = [\"/c:/c:ro\"]\nworkdir = \"/c\"\n");
	assert_int_equal(chdir(t->dir), 0);
	setenv("EDF_PATH", t->dir, 1);

	struct edf *client = NULL, *daemon = NULL;
	struct edf_source *src = NULL;
	size_t n = 0;
	alps_error *err = NULL;
	if (file_load_all("./top.toml", &client, &src, &n, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(n, 3);

	/* What goes on the wire: name and content only. */
	struct edf_source wire[3];
	for (size_t i = 0; i < n; i++)
		wire[i] = (struct edf_source){ .name = src[i].name, .content = src[i].content,
					       .len = src[i].len };
	struct edf_source_set set = { .v = wire, .n = n };
	struct edf_loader l = { .load = edf_source_load, .arg = &set };
	if (edf_load_all(wire[0].name, &l, &daemon, NULL, NULL, &err) < 0)
		fail_msg("%s", err->msg);
	expand_ok(client, caller_env);
	expand_ok(daemon, caller_env);
	json_t *a = edf_to_json(client, false), *b = edf_to_json(daemon, false);
	assert_true(json_equal(a, b));
	json_decref(a);
	json_decref(b);
	edf_free(daemon);

	/* A name the client did not send is not found, and never a file. */
	set.n = 1;
	assert_int_equal(edf_load_all(wire[0].name, &l, &daemon, NULL, NULL, &err), -1);
	assert_string_equal(err->msg, "./top.toml:1:21: base_environment[0]: environment \"b\" "
			    "is not among the 1 the client sent");
	alps_error_free(err);
	edf_free(client);
	edf_sources_free(src, n);
}

/* ---- fixtures, JSON, warnings ------------------------------------------ */

static void test_fixtures_bad(void **state)
{
	(void)state;
	char *dir = fixture_dir();
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *de;
	int seen = 0;
	while ((de = readdir(d))) {
		if (!str_has_prefix(de->d_name, "bad-"))
			continue;
		char *path = xasprintf("%s/%s", dir, de->d_name);
		size_t len;
		char *text = slurp(path, &len);
		char *want = xstrndup(text + strlen("# error: "), strcspn(text, "\n") -
				      strlen("# error: "));
		struct edf *e = NULL;
		alps_error *err = NULL;
		if (edf_parse(de->d_name, text, len, &e, &err) == 0)
			fail_msg("%s: no error", de->d_name);
		if (!str_has_prefix(err->msg, want))
			fail_msg("%s:\n got: %s\nwant: %s", de->d_name, err->msg, want);
		alps_error_free(err);
		free(want);
		free(text);
		free(path);
		seen++;
	}
	closedir(d);
	free(dir);
	assert_true(seen >= 7);
}

static void test_fixtures_good(void **state)
{
	(void)state;
	char *dir = fixture_dir();
	char *saved = dup_env("EDF_PATH");
	setenv("EDF_PATH", dir, 1);
	struct edf *e = NULL;
	struct edf_source *src = NULL;
	size_t n = 0;
	alps_error *err = NULL;
	if (edf_load_all("pytorch", &edf_file_loader, &e, &src, &n, &err) < 0)
		fail_msg("%s", err->msg);
	expand_ok(e, caller_env);
	assert_int_equal(n, 2);
	assert_string_equal(e->ref.registry, "nvcr.io");
	assert_string_equal(e->workdir.value, "/capstor/alice/run");
	assert_int_equal(e->nmounts, 3);
	assert_string_equal(e->mounts[0].dst, "/opt/site");
	assert_string_equal(e->mounts[1].src, "/capstor/alice");
	assert_int_equal(e->mounts[2].flags, EDF_MOUNT_SQSH);
	assert_string_equal(edf_env_get(e, "NCCL_DEBUG"), "INFO");
	assert_string_equal(edf_env_get(e, "FI_PROVIDER"), "cxi");
	assert_string_equal(edf_env_get(e, "PYTHONPATH"), "/workspace/lib:");
	assert_string_equal(edf_annotation_get(e, "com.hooks.cxi.enabled"), "true");
	size_t nw = 0;
	char **w = edf_warnings(e, &nw);
	if (nw != 0)
		fail_msg("unexpected warning: %s", w[0]);
	edf_strv_free(w);
	edf_free(e);
	edf_sources_free(src, n);

	const char *more[] = { "squashfs", "docker" };
	for (size_t i = 0; i < ARRAY_SIZE(more); i++) {
		if (edf_load_all(more[i], &edf_file_loader, &e, NULL, NULL, &err) < 0)
			fail_msg("%s: %s", more[i], err->msg);
		edf_free(e);
	}
	assert_int_equal(edf_load_all("cycle-a", &edf_file_loader, &e, NULL, NULL, &err), -1);
	assert_string_equal(err->msg, "cycle-b.toml:1:21: base_environment[0]: base_environment "
			    "cycle: cycle-a.toml -> cycle-b.toml -> cycle-a.toml");
	alps_error_free(err);
	restore_env("EDF_PATH", saved);
	free(saved);
	free(dir);
}

/* The CE reference's own examples mean what it says they mean. */
static void test_json(void **state)
{
	(void)state;
	struct edf *e = parse_ok("base_environment = \"b\"\n"
				 "image = \"alice@nvcr.io#nvidia/pytorch:24.01-py3\"\n"
				 "workdir = \"/w\"\nwritable = false\n"
				 "mounts = [\"/a:/b:ro+rprivate\"]\n"
				 "[env]\nA = \"1\"\nGONE = \"\"\n"
				 "[annotations]\ncom.hooks.cxi.enabled = \"true\"\n");
	json_t *j = edf_to_json(e, false);
	char *s = json_dumps(j, JSON_COMPACT);
	assert_string_equal(s,
		"{\"name\":\"t.toml\",\"image\":\"alice@nvcr.io#nvidia/pytorch:24.01-py3\","
		"\"image_kind\":\"reference\",\"image_ref\":\"nvcr.io/nvidia/pytorch:24.01-py3\","
		"\"image_user\":\"alice\",\"workdir\":\"/w\",\"entrypoint\":false,"
		"\"writable\":false,\"base_environment\":[\"b\"],"
		"\"mounts\":[{\"source\":\"/a\",\"destination\":\"/b\","
		"\"flags\":[\"ro\",\"rprivate\",\"rbind\"]}],\"devices\":[],"
		"\"env\":{\"A\":\"1\",\"GONE\":null},"
		"\"annotations\":{\"com.hooks.cxi.enabled\":\"true\"},"
		"\"unknown_annotations\":[],\"warnings\":[]}");
	free(s);
	json_decref(j);

	j = edf_to_json(e, true);
	json_t *files = json_object_get(j, "files");
	assert_int_equal(json_array_size(files), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(files, 0), "name")),
			    "t.toml");
	assert_true(json_is_null(json_object_get(json_array_get(files, 0), "path")));
	json_t *o = json_object_get(j, "origins");
	assert_string_equal(json_string_value(json_object_get(o, "image")), "t.toml:2:9");
	assert_true(json_is_null(json_object_get(o, "entrypoint")));
	assert_string_equal(json_string_value(json_array_get(json_object_get(o, "mounts"), 0)),
			    "t.toml:5:11");
	assert_string_equal(json_string_value(json_object_get(json_object_get(o, "env"), "GONE")),
			    "t.toml:8:8");
	json_decref(j);
	edf_free(e);

	/* A value from the caller's environment that is not UTF-8 still
	 * makes valid JSON. */
	static const char *const latin1[] = { "X=caf\xe9", NULL };
	e = parse_ok("[env]\nA = \"${X}\"\n");
	expand_ok(e, latin1);
	j = edf_to_json(e, false);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "env"), "A")),
			    "caf\\xe9");
	json_decref(j);
	edf_free(e);
}

static void test_warnings(void **state)
{
	(void)state;
	parse_fails("image = \"ubuntu\"\nworkdir = \"rel/dir\"\n", "t.toml:2:11: workdir: "
		    "\"rel/dir\" is not an absolute path (it is a path inside the container)");
	struct edf *e = parse_ok("image = \"ubuntu\"\nworkdir = \"/dir\"\n"
				 "mounts = [\"/a:/proc\", \"/b:/sys/x\", \"/c:/tmp\", "
				 "\"/d:/dev\",\n"
				 "  \"/e.img:/e:sqsh\", \"/f:/tmp/ok\", \"/g:/dev/shm\"]\n");
	assert_warning(e, "t.toml:1:9: image: no tag: \":latest\" is used");
	assert_warning(e, "t.toml:3:11: mounts[0]: mounting at /proc hides the container's own "
		       "/proc");
	assert_warning(e, "mounts[1]: mounting under /sys");
	assert_warning(e, "mounts[2]: mounting at /tmp hides");
	assert_warning(e, "mounts[3]: mounting at /dev hides");
	assert_warning(e, "t.toml:4:3: mounts[4]: with 'sqsh' the source is a squashfs file, and "
		       "\"/e.img\" does not end in .sqsh, .sqfs or .squashfs");
	assert_no_warning(e, "mounts[5]");
	assert_no_warning(e, "mounts[6]");
	edf_free(e);

	e = parse_ok("mounts = [\"/a:/a\"]\nworkdir = \"/w\"\n");
	assert_warning(e, "t.toml:1:11: mounts[0]: there is no image, so there is no container");
	assert_warning(e, "t.toml:2:11: workdir: there is no image, so workdir does not apply");
	edf_free(e);

	const char *tagged[] = { "ubuntu:24.04", "nvcr.io#nvidia/pytorch:24.01-py3",
				 "localhost:5000/x:1", "alice@ubuntu:1" };
	for (size_t i = 0; i < ARRAY_SIZE(tagged); i++) {
		char text[128];
		snprintf(text, sizeof(text), "image = \"%s\"\n", tagged[i]);
		e = parse_ok(text);
		assert_no_warning(e, "no tag");
		edf_free(e);
	}
	e = parse_ok("image = \"localhost:5000/x\"\n");
	assert_warning(e, "no tag");
	edf_free(e);
	e = parse_ok("image = \"nvcr.io#nvidia/pytorch\"\n");
	assert_warning(e, "no tag");
	edf_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_image_reference),
		cmocka_unit_test(test_image_enroot),
		cmocka_unit_test(test_image_empty_and_errors),
		cmocka_unit_test(test_scalars),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_env_warnings),
		cmocka_unit_test(test_annotations),
		cmocka_unit_test(test_unknown_keys),
		cmocka_unit_test(test_syntax_and_limits),
		cmocka_unit_test(test_expand),
		cmocka_unit_test(test_expand_edf),
		cmocka_unit_test(test_expand_unset_and_errors),
		cmocka_unit_test(test_merge_rules),
		cmocka_unit_test(test_merge_image_override_and_diamond),
		cmocka_unit_test(test_depth_limit),
		cmocka_unit_test(test_cycles),
		cmocka_unit_test(test_missing_and_bad_base),
		cmocka_unit_test_setup_teardown(test_files_default_path, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_files_edf_path, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_files_user_world, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_files_relative_and_checks, tmp_setup,
						tmp_teardown),
		cmocka_unit_test_setup_teardown(test_sources_roundtrip, tmp_setup, tmp_teardown),
		cmocka_unit_test(test_fixtures_bad),
		cmocka_unit_test(test_fixtures_good),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_warnings),
	};
	return cmocka_run_group_tests_name("edf", tests, NULL, NULL);
}
