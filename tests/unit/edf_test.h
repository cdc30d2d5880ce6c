/* edf_test.h: what the EDF unit tests share (test_edf.c, test_edf_ce.c):
 * parsing and loading helpers, an in-memory loader, fixtures. */
#ifndef ALPS_TEST_EDF_H
#define ALPS_TEST_EDF_H

#pragma GCC diagnostic ignored "-Wunused-function"

/* ---- Helpers ---------------------------------------------------------- */

static struct edf *parse_ok(const char *text)
{
	struct edf *e = NULL;
	alps_error *err = NULL;
	if (edf_parse("t.toml", text, strlen(text), &e, &err) < 0)
		fail_msg("unexpected error: %s\n--- in:\n%s", err->msg, text);
	return e;
}

/* The error of parsing text must be want, exactly. */
static void parse_fails(const char *text, const char *want)
{
	struct edf *e = NULL;
	alps_error *err = NULL;
	if (edf_parse("t.toml", text, strlen(text), &e, &err) == 0)
		fail_msg("no error for:\n%s", text);
	assert_null(e);
	assert_non_null(err);
	if (strcmp(err->msg, want) != 0)
		fail_msg("for:\n%s\n got: %s\nwant: %s", text, err->msg, want);
	alps_error_free(err);
}

/* The error must contain want. */
static void parse_fails_with(const char *text, const char *want)
{
	struct edf *e = NULL;
	alps_error *err = NULL;
	if (edf_parse("t.toml", text, strlen(text), &e, &err) == 0)
		fail_msg("no error for:\n%s", text);
	if (!strstr(err->msg, want))
		fail_msg("for:\n%s\n got: %s\nwant: ...%s...", text, err->msg, want);
	alps_error_free(err);
}

static bool has_warning(char **w, const char *needle)
{
	for (size_t i = 0; w[i]; i++)
		if (strstr(w[i], needle))
			return true;
	return false;
}

static void assert_warning(const struct edf *e, const char *needle)
{
	char **w = edf_warnings(e, NULL);
	if (!has_warning(w, needle)) {
		for (size_t i = 0; w[i]; i++)
			print_message("warning: %s\n", w[i]);
		edf_strv_free(w);
		fail_msg("no warning with: %s", needle);
	}
	edf_strv_free(w);
}

static void assert_no_warning(const struct edf *e, const char *needle)
{
	char **w = edf_warnings(e, NULL);
	bool found = has_warning(w, needle);
	edf_strv_free(w);
	if (found)
		fail_msg("unexpected warning with: %s", needle);
}

static void expand_ok(struct edf *e, const char *const *caller)
{
	struct edf_context ctx = { .caller_env = caller };
	alps_error *err = NULL;
	if (edf_expand(e, &ctx, &err) < 0)
		fail_msg("expand: %s", err->msg);
}

/* An in-memory loader: name -> (path, text).  Two names may share a path. */
struct memfile {
	const char *name, *path, *text;
};

struct memfs {
	const struct memfile *f;
	size_t n;
	int calls;
};

static int mem_load(void *arg, const char *name, char **path, char **content, size_t *len,
		    alps_error **err)
{
	struct memfs *fs = arg;
	fs->calls++;
	for (size_t i = 0; i < fs->n; i++) {
		if (strcmp(fs->f[i].name, name) != 0)
			continue;
		*path = xstrdup(fs->f[i].path ? fs->f[i].path : name);
		*content = xstrdup(fs->f[i].text);
		*len = strlen(fs->f[i].text);
		return 0;
	}
	return alps_fail(err, ALPS_E_NOT_FOUND, "environment \"%s\" not found (searched memory)",
			 name);
}

static struct edf *load_ok(struct memfs *fs, const char *first)
{
	struct edf_loader l = { .load = mem_load, .arg = fs };
	struct edf *e = NULL;
	alps_error *err = NULL;
	if (edf_load_all(first, &l, &e, NULL, NULL, &err) < 0)
		fail_msg("load %s: %s", first, err->msg);
	return e;
}

static alps_error *load_fails(struct memfs *fs, const char *first)
{
	struct edf_loader l = { .load = mem_load, .arg = fs };
	struct edf *e = NULL;
	alps_error *err = NULL;
	if (edf_load_all(first, &l, &e, NULL, NULL, &err) == 0)
		fail_msg("load %s: no error", first);
	assert_null(e);
	return err;
}

#define MEMFS(arr) { .f = (arr), .n = sizeof(arr) / sizeof((arr)[0]) }

static char *fixture_dir(void)
{
	const char *src = getenv("ALPS_SRCDIR");
	return xasprintf("%s/tests/data/edf", src ? src : ".");
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	if (!f)
		fail_msg("%s: %s (set ALPS_SRCDIR to the source tree)", path, strerror(errno));
	char *buf = xmalloc(EDF_MAX_SIZE + 1);
	*len = fread(buf, 1, EDF_MAX_SIZE, f);
	buf[*len] = '\0';
	fclose(f);
	return buf;
}

/* Each bad-*.toml fixture says its error on the first line. */

#endif
