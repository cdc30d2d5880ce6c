/* edf.c: parsing one EDF (see edf.h).
 *
 * Nothing here opens a file: the text always comes from the caller. */
#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edf.h"
#include "edf_impl.h"
#include "expand.h"
#include "log.h"
#include "toml.h"

/* ---- Parsing: values ------------------------------------------------- */


/* A place for key (escaped here) at line:col of the file being parsed. */
void pctx_loc(const struct pctx *p, struct edf_loc *loc, int line, int col, const char *key)
{
	_cleanup_free_ char *esc = log_escape(key, 200);
	loc_init(loc, p->file, line, col, esc);
}

static int fail_type(alps_error **err, const struct edf_loc *loc, const char *want,
		     const toml_value *v)
{
	return fail_loc(err, loc, "expected %s, got %s", want, toml_type_name(v->type));
}

/* fail_type() for a value that has no place of its own yet. */
int fail_value_type(const struct pctx *p, const toml_value *v, const char *key,
			   const char *want, alps_error **err)
{
	struct edf_loc loc;
	pctx_loc(p, &loc, v->line, v->col, key);
	fail_type(err, &loc, want, v);
	loc_free(&loc);
	return -1;
}

/* A string value without NUL bytes, which would cut it short in C and in
 * the environment of a process. */
int want_string(const toml_value *v, const struct edf_loc *loc, alps_error **err)
{
	if (v->type != TOML_STRING)
		return fail_type(err, loc, "a string", v);
	if (strlen(v->u.str.ptr) != v->u.str.len)
		return fail_loc(err, loc, "contains a NUL character");
	return 0;
}

/* A value that will be expanded: check its syntax now, so that the
 * error names the file even though expansion happens later. */
int check_expansion(const char *s, const struct edf_loc *loc, alps_error **err)
{
	_cleanup_free_ char *out = NULL;
	if (expand(s, NULL, &out, err) < 0)
		return prefix_loc(err, loc);
	return 0;
}

/* Read a string value for key into *dst, replacing what it held. */
static int take_string(struct pctx *p, const toml_value *v, const char *key, bool expands,
		       struct edf_string *dst, alps_error **err)
{
	struct edf_loc loc;
	pctx_loc(p, &loc, v->line, v->col, key);
	if (want_string(v, &loc, err) < 0 ||
	    (expands && check_expansion(v->u.str.ptr, &loc, err) < 0)) {
		loc_free(&loc);
		return -1;
	}
	string_free(dst);
	dst->value = xstrdup(v->u.str.ptr);
	dst->loc = loc;
	return 0;
}

static int take_flag(struct pctx *p, const toml_value *v, const char *key, struct edf_flag *dst,
		     alps_error **err)
{
	if (v->type != TOML_BOOL)
		return fail_value_type(p, v, key, "a bool (true or false)", err);
	loc_free(&dst->loc);
	dst->value = v->u.b ? 1 : 0;
	pctx_loc(p, &dst->loc, v->line, v->col, key);
	return 0;
}

static int parse_entrypoint(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	return take_flag(p, v, key, &p->e->entrypoint, err);
}

static int parse_writable(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	return take_flag(p, v, key, &p->e->writable, err);
}

static int parse_workdir(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	if (take_string(p, v, key, true, &p->e->workdir, err) < 0)
		return -1;
	return is_final(p->e, p->e->workdir.value) ? workdir_check(p->e, err) : 0;
}

static int parse_image(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	if (take_string(p, v, key, true, &p->e->image, err) < 0)
		return -1;
	return image_classify(p->e, NULL, err);
}

/* "" names no base: it is the CE's documented default, and what
 * "${EXTRA:-}" gives when EXTRA is not set (edf_load_all skips it). */
static int base_add(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	struct edf_loc loc;
	pctx_loc(p, &loc, v->line, v->col, key);
	if (want_string(v, &loc, err) < 0 || check_expansion(v->u.str.ptr, &loc, err) < 0) {
		loc_free(&loc);
		return -1;
	}
	struct edf *e = p->e;
	e->bases = xreallocarray(e->bases, e->nbases + 1, sizeof(*e->bases));
	e->bases[e->nbases].name = xstrdup(v->u.str.ptr);
	e->bases[e->nbases++].loc = loc;
	return 0;
}

static int parse_bases(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	bases_free(p->e);
	if (v->type == TOML_STRING)
		return base_add(p, v, key, err);
	if (v->type != TOML_ARRAY)
		return fail_value_type(p, v, key, "a string or an array of strings", err);
	for (size_t i = 0; i < v->u.arr.n; i++) {
		_cleanup_free_ char *k = xasprintf("%s[%zu]", key, i);
		if (base_add(p, v->u.arr.items[i], k, err) < 0)
			return -1;
	}
	return 0;
}

/* ---- Parsing: env and annotations ------------------------------------ */

static void var_append(struct edf_var **v, size_t *n, const char *key, const char *value,
		       struct edf_loc *loc)
{
	*v = xreallocarray(*v, *n + 1, sizeof(**v));
	(*v)[*n].key = xstrdup(key);
	(*v)[*n].value = xstrdup(value);
	(*v)[*n].loc = *loc;
	(*n)++;
	memset(loc, 0, sizeof(*loc));
}

static int want_table(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	if (v->type == TOML_TABLE && v->u.tab.n <= EDF_MAX_VARS)
		return 0;
	if (v->type == TOML_TABLE)
		return alps_fail(err, ALPS_E_LIMIT, "%s:%d:%d: %s: more than %d entries", p->file,
				 v->line, v->col, key, EDF_MAX_VARS);
	return fail_value_type(p, v, key, "a table", err);
}

static int env_entry(struct pctx *p, const toml_value *t, size_t i, struct edf_loc *loc,
		     alps_error **err)
{
	const char *k = t->u.tab.keys[i];
	const toml_value *v = t->u.tab.vals[i];
	if (!*k)
		return fail_loc(err, loc, "empty variable name");
	if (strlen(k) != t->u.tab.key_len[i] || strchr(k, '='))
		return fail_loc(err, loc, "a variable name cannot contain '=' or NUL");
	if (v->type == TOML_INTEGER || v->type == TOML_BOOL || v->type == TOML_FLOAT)
		return fail_loc(err, loc, "expected a string, got %s (quote it: the environment "
				"holds strings)", toml_type_name(v->type));
	if (want_string(v, loc, err) < 0 || check_expansion(v->u.str.ptr, loc, err) < 0)
		return -1;
	/* Noted now: after expansion nobody can tell any more. */
	if (strcmp(k, "PATH") == 0 && *v->u.str.ptr && !strstr(v->u.str.ptr, "${PATH"))
		note_add(p->e, loc, "replaces the image's PATH; to extend the host's, write "
			 "\"...:${PATH}\"");
	var_append(&p->e->env, &p->e->nenv, k, v->u.str.ptr, loc);
	return 0;
}

static int parse_env(struct pctx *p, const toml_value *t, const char *key, alps_error **err)
{
	if (want_table(p, t, key, err) < 0)
		return -1;
	for (size_t i = 0; i < t->u.tab.n; i++) {
		const toml_value *v = t->u.tab.vals[i];
		_cleanup_free_ char *k = xasprintf("%s.%s", key, t->u.tab.keys[i]);
		struct edf_loc loc;
		pctx_loc(p, &loc, v->line, v->col, k);
		alps_error *e1 = NULL;
		if (env_entry(p, t, i, &loc, &e1) < 0)
			errors_keep(&p->errs, &e1);
		loc_free(&loc);
	}
	return 0;
}

static int annotation_text(const toml_value *v, const struct edf_loc *loc, char **out,
			   alps_error **err)
{
	if (v->type == TOML_BOOL)
		*out = xstrdup(v->u.b ? "true" : "false");
	else if (v->type == TOML_INTEGER)
		*out = xasprintf("%lld", (long long)v->u.i);
	else if (want_string(v, loc, err) < 0 || check_expansion(v->u.str.ptr, loc, err) < 0)
		return -1;
	else
		*out = xstrdup(v->u.str.ptr);
	return 0;
}

/* A flattened annotation: "a.b" = 1 and [a] b = 2 name the same one. */
static int annotation_add(struct pctx *p, const toml_value *v, const char *name,
			  struct edf_loc *loc, alps_error **err)
{
	struct edf *e = p->e;
	for (size_t i = 0; i < e->nannotations; i++)
		if (strcmp(e->annotations[i].key, name) == 0)
			return fail_loc(err, loc, "defined twice (also at line %d)",
					e->annotations[i].loc.line);
	if (e->nannotations >= EDF_MAX_VARS)
		return alps_fail(err, ALPS_E_LIMIT, "%s:%d:%d: %s: more than %d annotations",
				 loc->file, loc->line, loc->col, loc->key, EDF_MAX_VARS);
	_cleanup_free_ char *text = NULL;
	if (annotation_text(v, loc, &text, err) < 0)
		return -1;
	var_append(&e->annotations, &e->nannotations, name, text, loc);
	return 0;
}

/* Walk nested tables; recursion is bounded by TOML_MAX_DEPTH. */
static int annotations_walk(struct pctx *p, const toml_value *t, const char *prefix,
			    alps_error **err)
{
	for (size_t i = 0; i < t->u.tab.n; i++) {
		const char *k = t->u.tab.keys[i];
		const toml_value *v = t->u.tab.vals[i];
		_cleanup_free_ char *name = xasprintf("%s%s%s", prefix, *prefix ? "." : "", k);
		_cleanup_free_ char *key = xasprintf("annotations.%s", name);
		struct edf_loc loc;
		pctx_loc(p, &loc, v->line, v->col, key);
		alps_error *e1 = NULL;
		if (!*k || strlen(k) != t->u.tab.key_len[i])
			fail_loc(&e1, &loc, "empty key or a key with a NUL character");
		else if (v->type == TOML_TABLE)
			annotations_walk(p, v, name, &e1);
		else
			annotation_add(p, v, name, &loc, &e1);
		errors_keep(&p->errs, &e1);
		loc_free(&loc);
	}
	(void)err;
	return 0;
}

static int parse_annotations(struct pctx *p, const toml_value *t, const char *key,
			     alps_error **err)
{
	if (want_table(p, t, key, err) < 0)
		return -1;
	return annotations_walk(p, t, "", err);
}

/* ---- Parsing: the document ------------------------------------------- */

static const struct edf_key {
	const char *name;
	int (*parse)(struct pctx *p, const toml_value *v, const char *key, alps_error **err);
} edf_keys[] = {
	{ "base_environment", parse_bases },
	{ "image", parse_image },
	{ "workdir", parse_workdir },
	{ "entrypoint", parse_entrypoint },
	{ "writable", parse_writable },
	{ "mounts", parse_mounts },
	{ "env", parse_env },
	{ "annotations", parse_annotations },
	{ "devices", parse_devices },
};

/* Names people write for a key, from other tools or by habit; the edit
 * distance alone would not find "environment" -> "env". */
static const struct {
	const char *typo, *key;
} key_hints[] = {
	{ "environment", "env" },
	{ "environ", "env" },
	{ "envs", "env" },
	{ "variables", "env" },
	{ "mount", "mounts" },
	{ "volumes", "mounts" },
	{ "base", "base_environment" },
	{ "bases", "base_environment" },
	{ "base_env", "base_environment" },
	{ "base_environments", "base_environment" },
	{ "working_dir", "workdir" },
	{ "workingdir", "workdir" },
	{ "cwd", "workdir" },
	{ "writeable", "writable" },
	{ "entry_point", "entrypoint" },
	{ "annotation", "annotations" },
	{ "labels", "annotations" },
};

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Case-insensitive optimal string alignment distance (Levenshtein with
 * transpositions), for short strings; SIZE_MAX beyond 63 bytes. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t n = strlen(a), m = strlen(b);
	size_t d[64][64];
	if (n >= 64 || m >= 64)
		return SIZE_MAX;
	for (size_t i = 0; i <= n; i++)
		for (size_t j = 0; j <= m; j++) {
			if (i == 0 || j == 0) {
				d[i][j] = i + j;
				continue;
			}
			size_t cost = lower(a[i - 1]) != lower(b[j - 1]);
			size_t v = d[i - 1][j - 1] + cost;
			if (d[i - 1][j] + 1 < v)
				v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
			    lower(a[i - 2]) == lower(b[j - 1]) && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	return d[n][m];
}

/* The key that an unknown one most likely meant, or NULL. */
static const char *key_suggest(const char *key)
{
	size_t len = strlen(key);
	size_t best = len < 5 ? 1 : len < 10 ? 2 : 3;
	const char *pick = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(edf_keys); i++) {
		size_t d = edit_distance(key, edf_keys[i].name);
		if (d <= best) {
			best = d;
			pick = edf_keys[i].name;
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(key_hints); i++) {
		size_t d = edit_distance(key, key_hints[i].typo);
		if (d < best || (d == best && !pick)) {
			best = d;
			pick = key_hints[i].key;
		}
	}
	return pick;
}

static int unknown_key(struct pctx *p, const toml_value *root, size_t i, alps_error **err)
{
	const char *k = root->u.tab.keys[i];
	struct edf_loc loc;
	pctx_loc(p, &loc, root->u.tab.key_line[i], root->u.tab.key_col[i], k);
	const char *hint = strlen(k) == root->u.tab.key_len[i] ? key_suggest(k) : NULL;
	if (hint)
		fail_loc(err, &loc, "unknown key (did you mean '%s'?)", hint);
	else
		fail_loc(err, &loc, "unknown key (known: base_environment, image, workdir, "
			 "entrypoint, writable, mounts, env, annotations, devices)");
	loc_free(&loc);
	return -1;
}

static int parse_key(struct pctx *p, const toml_value *root, size_t i, alps_error **err)
{
	const char *k = root->u.tab.keys[i];
	for (size_t j = 0; j < ARRAY_SIZE(edf_keys); j++)
		if (strlen(k) == root->u.tab.key_len[i] && strcmp(k, edf_keys[j].name) == 0)
			return edf_keys[j].parse(p, root->u.tab.vals[i], k, err);
	return unknown_key(p, root, i, err);
}

int edf_parse(const char *name, const char *text, size_t len, struct edf **out,
	      alps_error **err)
{
	*out = NULL;
	_cleanup_free_ char *display = edf_display_name(name);
	_cleanup_free_ char *file = log_escape(display, 200);
	if (len > EDF_MAX_SIZE)
		return alps_fail(err, ALPS_E_LIMIT, "%s: larger than %u bytes", file, EDF_MAX_SIZE);
	_cleanup_toml_ toml_value *root = NULL;
	struct toml_error terr;
	if (toml_parse(text, len, &root, &terr) < 0) {
		if (terr.line > 0)
			return alps_fail(err, ALPS_E_INVALID, "%s:%d:%d: %s", file, terr.line,
					 terr.col, terr.msg);
		return alps_fail(err, ALPS_E_INVALID, "%s: %s", file, terr.msg);
	}
	_cleanup_edf_ struct edf *e = edf_new(file);
	struct pctx p = { .e = e, .file = file };
	/* Every key is parsed even after an error: all of them are reported. */
	for (size_t i = 0; i < root->u.tab.n; i++) {
		alps_error *e1 = NULL;
		if (parse_key(&p, root, i, &e1) < 0)
			errors_keep(&p.errs, &e1);
	}
	alps_error *e1 = NULL;
	if (mounts_settle(e, &e1) < 0)
		errors_keep(&p.errs, &e1);
	if (errors_finish(&p.errs, err) < 0)
		return -1;
	*out = steal_pointer(&e);
	return 0;
}

