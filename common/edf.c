/* edf.c: the EDF core: parse, merge, expand, check (see edf.h).
 *
 * Nothing here opens a file: the text always comes from the caller. */
#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edf.h"
#include "expand.h"
#include "log.h"
#include "toml.h"

/* ---- Places and messages -------------------------------------------- */

static void loc_init(struct edf_loc *loc, const char *file, int line, int col, const char *key)
{
	loc->file = xstrdup(file);
	loc->line = line;
	loc->col = col;
	loc->key = xstrdup(key);
}

static void loc_copy(struct edf_loc *dst, const struct edf_loc *src)
{
	loc_init(dst, src->file ? src->file : "", src->line, src->col, src->key ? src->key : "");
}

static void loc_free(struct edf_loc *loc)
{
	free(loc->file);
	free(loc->key);
	loc->file = loc->key = NULL;
}

static char *loc_vformat(const struct edf_loc *loc, const char *fmt, va_list ap)
	ALPS_PRINTF(2, 0);

static char *loc_vformat(const struct edf_loc *loc, const char *fmt, va_list ap)
{
	_cleanup_free_ char *msg = xvasprintf(fmt, ap);
	return xasprintf("%s:%d:%d: %s: %s", loc->file, loc->line, loc->col, loc->key, msg);
}

static int fail_loc(alps_error **err, const struct edf_loc *loc, const char *fmt, ...)
	ALPS_PRINTF(3, 4);

static int fail_loc(alps_error **err, const struct edf_loc *loc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *msg = loc_vformat(loc, fmt, ap);
	va_end(ap);
	return alps_fail(err, ALPS_E_INVALID, "%s", msg);
}

/* Prefix an error from a helper (expand, ref_parse) with the place. */
static int prefix_loc(alps_error **err, const struct edf_loc *loc)
{
	return alps_error_prefix(err, "%s:%d:%d: %s", loc->file, loc->line, loc->col, loc->key);
}

static void strv_push(char ***v, size_t *n, char *s)
{
	*v = xreallocarray(*v, *n + 2, sizeof(**v));
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
}

static void note_add(struct edf *e, const struct edf_loc *loc, const char *fmt, ...)
	ALPS_PRINTF(3, 4);

static void note_add(struct edf *e, const struct edf_loc *loc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	strv_push(&e->notes, &e->nnotes, loc_vformat(loc, fmt, ap));
	va_end(ap);
}

void edf_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

char *edf_display_name(const char *name)
{
	if (strchr(name, '/') || str_has_suffix(name, ".toml"))
		return xstrdup(name);
	return xasprintf("%s.toml", name);
}

/* ---- Life cycle ------------------------------------------------------ */

static struct edf *edf_new(const char *file)
{
	struct edf *e = xzalloc(sizeof(*e));
	e->name = xstrdup(file);
	e->entrypoint.value = -1;
	e->writable.value = -1;
	e->files = xzalloc(sizeof(*e->files));
	e->files[0].name = xstrdup(file);
	e->nfiles = 1;
	return e;
}

static void string_free(struct edf_string *s)
{
	free(s->value);
	s->value = NULL;
	loc_free(&s->loc);
}

static void mount_free(struct edf_mount *m)
{
	free(m->src);
	free(m->dst);
	loc_free(&m->loc);
}

static void var_free(struct edf_var *v)
{
	free(v->key);
	free(v->value);
	loc_free(&v->loc);
}

static void image_clear(struct edf *e)
{
	ref_free(&e->ref);
	free(e->image_user);
	e->image_user = NULL;
}

static void bases_free(struct edf *e)
{
	for (size_t i = 0; i < e->nbases; i++) {
		free(e->bases[i].name);
		loc_free(&e->bases[i].loc);
	}
	free(e->bases);
	e->bases = NULL;
	e->nbases = 0;
}

void edf_free(struct edf *e)
{
	if (!e)
		return;
	free(e->name);
	string_free(&e->image);
	image_clear(e);
	string_free(&e->workdir);
	loc_free(&e->entrypoint.loc);
	loc_free(&e->writable.loc);
	bases_free(e);
	for (size_t i = 0; i < e->nmounts; i++)
		mount_free(&e->mounts[i]);
	free(e->mounts);
	for (size_t i = 0; i < e->nenv; i++)
		var_free(&e->env[i]);
	free(e->env);
	for (size_t i = 0; i < e->nannotations; i++)
		var_free(&e->annotations[i]);
	free(e->annotations);
	for (size_t i = 0; i < e->nfiles; i++) {
		free(e->files[i].name);
		free(e->files[i].path);
	}
	free(e->files);
	for (size_t i = 0; i < e->nnotes; i++)
		free(e->notes[i]);
	free(e->notes);
	free(e);
}

void cleanup_edf_freep(struct edf **e)
{
	edf_free(*e);
	*e = NULL;
}

/* ---- Parsing: values ------------------------------------------------- */

struct pctx {
	struct edf *e;
	const char *file;       /* escaped display name */
};

/* A place for key (escaped here) at line:col of the file being parsed. */
static void pctx_loc(const struct pctx *p, struct edf_loc *loc, int line, int col, const char *key)
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
static int fail_value_type(const struct pctx *p, const toml_value *v, const char *key,
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
static int want_string(const toml_value *v, const struct edf_loc *loc, alps_error **err)
{
	if (v->type != TOML_STRING)
		return fail_type(err, loc, "a string", v);
	if (strlen(v->u.str.ptr) != v->u.str.len)
		return fail_loc(err, loc, "contains a NUL character");
	return 0;
}

/* A value that will be expanded: check its syntax now, so that the
 * error names the file even though expansion happens later. */
static int check_expansion(const char *s, const struct edf_loc *loc, alps_error **err)
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
	return take_string(p, v, key, true, &p->e->workdir, err);
}

static int image_classify(struct edf *e, const char *cwd, alps_error **err);

static int parse_image(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	if (take_string(p, v, key, true, &p->e->image, err) < 0)
		return -1;
	return image_classify(p->e, NULL, err);
}

static int base_add(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	struct edf_loc loc;
	pctx_loc(p, &loc, v->line, v->col, key);
	int rc = want_string(v, &loc, err);
	if (rc == 0 && !*v->u.str.ptr)
		rc = fail_loc(err, &loc, "empty name");
	if (rc < 0) {
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

/* ---- Parsing: mounts ------------------------------------------------- */

static const struct {
	const char *name;
	unsigned bit;
} mount_flags[] = {
	{ "ro", EDF_MOUNT_RO },
	{ "rw", EDF_MOUNT_RW },
	{ "private", EDF_MOUNT_PRIVATE },
	{ "rprivate", EDF_MOUNT_RPRIVATE },
	{ "slave", EDF_MOUNT_SLAVE },
	{ "rslave", EDF_MOUNT_RSLAVE },
	{ "shared", EDF_MOUNT_SHARED },
	{ "rshared", EDF_MOUNT_RSHARED },
	{ "recursive", EDF_MOUNT_RECURSIVE },
	{ "sqsh", EDF_MOUNT_SQSH },
};

static const char *mount_flag_name(unsigned bit)
{
	for (size_t i = 0; i < ARRAY_SIZE(mount_flags); i++)
		if (mount_flags[i].bit == bit)
			return mount_flags[i].name;
	return "?";
}

char *edf_mount_flags_format(unsigned flags)
{
	char buf[128] = "";
	size_t len = 0;
	for (size_t i = 0; i < ARRAY_SIZE(mount_flags); i++) {
		if (!(flags & mount_flags[i].bit))
			continue;
		int n = snprintf(buf + len, sizeof(buf) - len, "%s%s", len ? "+" : "",
				 mount_flags[i].name);
		if (n < 0 || (size_t)n >= sizeof(buf) - len)
			break;  /* cannot happen: every flag fits */
		len += (size_t)n;
	}
	return xstrdup(buf);
}

/* The two flags of a conflicting pair in flags, or 0. */
static unsigned flags_conflict(unsigned flags, unsigned *other)
{
	static const unsigned exclusive[][2] = {
		{ EDF_MOUNT_RO, EDF_MOUNT_RW },
		{ EDF_MOUNT_SQSH, EDF_MOUNT_RW },        /* squashfs is read-only */
		{ EDF_MOUNT_SQSH, EDF_MOUNT_RECURSIVE }, /* a file has no submounts */
	};
	for (size_t i = 0; i < ARRAY_SIZE(exclusive); i++) {
		if ((flags & exclusive[i][0]) && (flags & exclusive[i][1])) {
			*other = exclusive[i][1];
			return exclusive[i][0];
		}
	}
	/* At most one propagation type: the kernel applies one. */
	unsigned first = 0;
	for (size_t i = 0; i < ARRAY_SIZE(mount_flags); i++) {
		unsigned bit = mount_flags[i].bit;
		if (!(flags & bit & EDF_MOUNT_PROPAGATION))
			continue;
		if (first) {
			*other = bit;
			return first;
		}
		first = bit;
	}
	return 0;
}

static int flag_lookup(const char *word, size_t len, unsigned *bit)
{
	for (size_t i = 0; i < ARRAY_SIZE(mount_flags); i++) {
		const char *name = mount_flags[i].name;
		if (strlen(name) == len && memcmp(name, word, len) == 0) {
			*bit = mount_flags[i].bit;
			return 0;
		}
	}
	return -1;
}

/* FLAGS of SRC:DST:FLAGS, '+'-separated. */
static int mount_flags_parse(const char *s, const struct edf_loc *loc, unsigned *out,
			     alps_error **err)
{
	unsigned flags = 0, bit, other;
	for (const char *p = s;; p++) {
		size_t len = strcspn(p, "+");
		_cleanup_free_ char *raw = xstrndup(p, len);
		_cleanup_free_ char *word = log_escape(raw, 40);
		if (len == 0) {
			_cleanup_free_ char *esc = log_escape(s, 100);
			return fail_loc(err, loc, "empty mount flag in \"%s\"", esc);
		}
		if (flag_lookup(p, len, &bit) < 0)
			return fail_loc(err, loc, "unknown mount flag '%s' (ro, rw, private, "
					"rprivate, slave, rslave, shared, rshared, recursive, "
					"sqsh)", word);
		if (flags & bit)
			return fail_loc(err, loc, "mount flag '%s' given twice", word);
		flags |= bit;
		p += len;
		if (*p == '\0')
			break;
	}
	unsigned first = flags_conflict(flags, &other);
	if (first)
		return fail_loc(err, loc, "conflicting mount flags '%s' and '%s'",
				mount_flag_name(first), mount_flag_name(other));
	*out = flags;
	return 0;
}

/* DST without "//" or "." components.  ".." is refused: it is resolved
 * against the container's tree, which is not known here, and it is the
 * classic way out of a directory the user meant to stay in. */
static int dst_normalize(const char *dst, const struct edf_loc *loc, char **out,
			 alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(dst, 200);
	if (dst[0] != '/')
		return fail_loc(err, loc, "destination \"%s\" is not absolute (it is a path "
				"inside the container)", esc);
	_cleanup_free_ char *res = xmalloc(strlen(dst) + 1);
	size_t len = 0;
	for (const char *p = dst;;) {
		p += strspn(p, "/");
		size_t c = strcspn(p, "/");
		if (c == 0)
			break;
		if (c == 2 && p[0] == '.' && p[1] == '.')
			return fail_loc(err, loc, "destination \"%s\" contains \"..\"", esc);
		if (!(c == 1 && p[0] == '.')) {
			res[len++] = '/';
			memcpy(res + len, p, c);
			len += c;
		}
		p += c;
	}
	if (len == 0)
		return fail_loc(err, loc, "destination \"%s\" is the container's root", esc);
	res[len] = '\0';
	*out = steal_pointer(&res);
	return 0;
}

static bool is_final(const struct edf *e, const char *s)
{
	return e->expanded || !strchr(s, '$');
}

/* Check the parts of m whose value is final (see is_final). */
static int mount_check(const struct edf *e, struct edf_mount *m, alps_error **err)
{
	if (is_final(e, m->src)) {
		_cleanup_free_ char *esc = log_escape(m->src, 200);
		if (!*m->src)
			return fail_loc(err, &m->loc, "empty source");
		if (m->src[0] != '/')
			return fail_loc(err, &m->loc, "source \"%s\" is not absolute", esc);
	}
	if (is_final(e, m->dst)) {
		char *norm = NULL;
		if (!*m->dst)
			return fail_loc(err, &m->loc, "empty destination");
		if (dst_normalize(m->dst, &m->loc, &norm, err) < 0)
			return -1;
		free(m->dst);
		m->dst = norm;
	}
	return 0;
}

/* Split "SRC:DST[:FLAGS]" into m.  A ':' inside ${...} (a default) does
 * not split. */
static int mount_split(const char *s, struct edf_mount *m, alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(s, 200);
	size_t a = expand_span(s, ':');
	if (!s[a])
		return fail_loc(err, &m->loc, "expected SRC:DST[:FLAGS], got \"%s\"", esc);
	const char *rest = s + a + 1;
	size_t b = expand_span(rest, ':');
	const char *flags = rest[b] ? rest + b + 1 : NULL;
	if (a == 0)
		return fail_loc(err, &m->loc, "empty source in \"%s\"", esc);
	if (b == 0)
		return fail_loc(err, &m->loc, "empty destination in \"%s\"", esc);
	if (flags && flags[expand_span(flags, ':')])
		return fail_loc(err, &m->loc, "too many ':' in \"%s\" (expected SRC:DST[:FLAGS]; "
				"paths cannot contain ':')", esc);
	if (flags && !*flags)
		return fail_loc(err, &m->loc, "empty flags after ':' in \"%s\"", esc);
	if (flags && mount_flags_parse(flags, &m->loc, &m->flags, err) < 0)
		return -1;
	m->src = xstrndup(s, a);
	m->dst = xstrndup(rest, b);
	return 0;
}

static int mount_parse(struct pctx *p, const toml_value *v, size_t idx, alps_error **err)
{
	_cleanup_free_ char *key = xasprintf("mounts[%zu]", idx);
	struct edf_mount m = { 0 };
	pctx_loc(p, &m.loc, v->line, v->col, key);
	if (want_string(v, &m.loc, err) < 0 || check_expansion(v->u.str.ptr, &m.loc, err) < 0 ||
	    mount_split(v->u.str.ptr, &m, err) < 0 || mount_check(p->e, &m, err) < 0) {
		mount_free(&m);
		return -1;
	}
	struct edf *e = p->e;
	e->mounts = xreallocarray(e->mounts, e->nmounts + 1, sizeof(*e->mounts));
	e->mounts[e->nmounts++] = m;
	return 0;
}

static int parse_mounts(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	if (v->type != TOML_ARRAY)
		return fail_value_type(p, v, key, "an array of \"SRC:DST[:FLAGS]\" strings", err);
	if (v->u.arr.n > EDF_MAX_MOUNTS)
		return alps_fail(err, ALPS_E_LIMIT, "%s:%d:%d: %s: more than %d mounts", p->file,
				 v->line, v->col, key, EDF_MAX_MOUNTS);
	for (size_t i = 0; i < p->e->nmounts; i++)
		mount_free(&p->e->mounts[i]);
	p->e->nmounts = 0;
	for (size_t i = 0; i < v->u.arr.n; i++)
		if (mount_parse(p, v->u.arr.items[i], i, err) < 0)
			return -1;
	return 0;
}

/* Two mounts on one destination: the later hides the earlier.  Within
 * one file that is a mistake; across files it is how a child replaces a
 * mount of its base, so the earlier one goes, with a note.  Only final
 * destinations compare; edf_expand settles the rest. */
static int mounts_settle(struct edf *e, alps_error **err)
{
	for (size_t j = 1; j < e->nmounts; j++) {
		struct edf_mount *b = &e->mounts[j];
		for (size_t i = 0; i < j && is_final(e, b->dst); i++) {
			struct edf_mount *a = &e->mounts[i];
			if (!is_final(e, a->dst) || strcmp(a->dst, b->dst) != 0)
				continue;
			_cleanup_free_ char *esc = log_escape(b->dst, 200);
			if (strcmp(a->loc.file, b->loc.file) == 0)
				return fail_loc(err, &b->loc, "destination %s is already mounted "
						"by %s (line %d)", esc, a->loc.key, a->loc.line);
			note_add(e, &b->loc, "replaces the mount at %s of %s:%d:%d: %s", esc,
				 a->loc.file, a->loc.line, a->loc.col, a->loc.key);
			mount_free(a);
			memmove(a, a + 1, (e->nmounts - i - 1) * sizeof(*a));
			e->nmounts--;
			j--;
			break;
		}
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
		note_add(p->e, loc, "replaces the image's PATH; to extend it, write "
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
		int rc = env_entry(p, t, i, &loc, err);
		loc_free(&loc);
		if (rc < 0)
			return -1;
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
	else if (want_string(v, loc, err) < 0)
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
		int rc;
		if (!*k || strlen(k) != t->u.tab.key_len[i])
			rc = fail_loc(err, &loc, "empty key or a key with a NUL character");
		else if (v->type == TOML_TABLE)
			rc = annotations_walk(p, v, name, err);
		else
			rc = annotation_add(p, v, name, &loc, err);
		loc_free(&loc);
		if (rc < 0)
			return -1;
	}
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
			 "entrypoint, writable, mounts, env, annotations)");
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
	for (size_t i = 0; i < root->u.tab.n; i++)
		if (parse_key(&p, root, i, err) < 0)
			return -1;
	if (mounts_settle(e, err) < 0)
		return -1;
	*out = steal_pointer(&e);
	return 0;
}

/* ---- Images ---------------------------------------------------------- */

static bool has_squashfs_suffix(const char *s)
{
	return str_has_suffix(s, ".sqsh") || str_has_suffix(s, ".sqfs") ||
	       str_has_suffix(s, ".squashfs");
}

/* THE RULE (edf.h): '/', "./" or "../" starts a path, anything else is a
 * reference.  No reference can start so, and the rule needs no look at
 * the file system, which the daemon must not do for the user. */
static bool is_path_image(const char *s)
{
	return s[0] == '/' || str_has_prefix(s, "./") || str_has_prefix(s, "../");
}

static int image_path(struct edf *e, const char *cwd, alps_error **err)
{
	const char *s = e->image.value;
	if (!has_squashfs_suffix(s)) {
		_cleanup_free_ char *esc = log_escape(s, 200);
		return fail_loc(err, &e->image.loc, "\"%s\" is a path but not a squashfs file "
				"(.sqsh, .sqfs or .squashfs)", esc);
	}
	if (s[0] != '/' && cwd) {
		char *abs = xasprintf("%s%s%s", cwd, str_has_suffix(cwd, "/") ? "" : "/", s);
		free(e->image.value);
		e->image.value = abs;
	}
	e->image_kind = EDF_IMAGE_SQUASHFS;
	return 0;
}

/* Docker's grammar first; enroot's when there is a '#', or when docker's
 * fails on what enroot reads as "USER@IMAGE".  Docker's error is the one
 * reported when both fail: it is the form most people mean. */
static int image_ref(struct edf *e, alps_error **err)
{
	const char *s = e->image.value;
	_cleanup_error_ alps_error *first = NULL;
	bool enroot = strchr(s, '#') != NULL;
	if (!enroot && ref_parse(s, NULL, &e->ref, &first) == 0)
		goto ok;
	if ((enroot || strchr(s, '@')) &&
	    ref_parse_enroot(s, NULL, &e->ref, &e->image_user, first ? NULL : err) == 0)
		goto ok;
	if (first && err && !*err)
		*err = steal_pointer(&first);
	return prefix_loc(err, &e->image.loc);
ok:
	e->image_kind = EDF_IMAGE_REF;
	return 0;
}

static int image_classify(struct edf *e, const char *cwd, alps_error **err)
{
	const char *s = e->image.value;
	image_clear(e);
	if (!s) {
		e->image_kind = EDF_IMAGE_UNSET;
		return 0;
	}
	e->image_kind = !*s ? EDF_IMAGE_NONE : EDF_IMAGE_DEFERRED;
	if (!*s || !is_final(e, s))
		return 0;
	if (is_path_image(s))
		return image_path(e, cwd, err);
	_cleanup_free_ char *esc = log_escape(s, 200);
	if (s[0] == '~')
		return fail_loc(err, &e->image.loc, "\"%s\": '~' is not expanded here; write "
				"\"${HOME}/...\"", esc);
	if (has_squashfs_suffix(s))
		return fail_loc(err, &e->image.loc, "\"%s\" looks like a squashfs file: name it "
				"by a path, \"./%s\" or an absolute one", esc, esc);
	return image_ref(e, err);
}

/* ---- Merging --------------------------------------------------------- */

static void string_override(struct edf_string *dst, const struct edf_string *src)
{
	if (!src->value)
		return;
	string_free(dst);
	dst->value = xstrdup(src->value);
	loc_copy(&dst->loc, &src->loc);
}

static void flag_override(struct edf_flag *dst, const struct edf_flag *src)
{
	if (src->value < 0)
		return;
	loc_free(&dst->loc);
	dst->value = src->value;
	loc_copy(&dst->loc, &src->loc);
}

static void image_override(struct edf *base, const struct edf *child)
{
	if (!child->image.value)
		return;
	string_override(&base->image, &child->image);
	image_clear(base);
	base->image_kind = child->image_kind;
	if (child->image_kind == EDF_IMAGE_REF)
		ref_copy(&base->ref, &child->ref);
	if (child->image_user)
		base->image_user = xstrdup(child->image_user);
}

/* Key by key, the later value winning in the place of the earlier. */
static void vars_merge(struct edf_var **v, size_t *n, const struct edf_var *src, size_t nsrc)
{
	for (size_t i = 0; i < nsrc; i++) {
		struct edf_var *dst = NULL;
		for (size_t j = 0; j < *n && !dst; j++)
			if (strcmp((*v)[j].key, src[i].key) == 0)
				dst = &(*v)[j];
		if (!dst) {
			*v = xreallocarray(*v, *n + 1, sizeof(**v));
			dst = &(*v)[(*n)++];
			dst->key = xstrdup(src[i].key);
		} else {
			free(dst->value);
			loc_free(&dst->loc);
		}
		dst->value = xstrdup(src[i].value);
		loc_copy(&dst->loc, &src[i].loc);
	}
}

static void mounts_append(struct edf *base, const struct edf *child)
{
	base->mounts = xreallocarray(base->mounts, base->nmounts + child->nmounts + 1,
				     sizeof(*base->mounts));
	for (size_t i = 0; i < child->nmounts; i++) {
		struct edf_mount *m = &base->mounts[base->nmounts++];
		m->src = xstrdup(child->mounts[i].src);
		m->dst = xstrdup(child->mounts[i].dst);
		m->flags = child->mounts[i].flags;
		loc_copy(&m->loc, &child->mounts[i].loc);
	}
}

static void bases_copy(struct edf *base, const struct edf *child)
{
	bases_free(base);
	base->bases = xcalloc(child->nbases + 1, sizeof(*base->bases));
	for (size_t i = 0; i < child->nbases; i++) {
		base->bases[i].name = xstrdup(child->bases[i].name);
		loc_copy(&base->bases[i].loc, &child->bases[i].loc);
	}
	base->nbases = child->nbases;
}

static void files_append(struct edf *base, const struct edf *child)
{
	base->files = xreallocarray(base->files, base->nfiles + child->nfiles,
				    sizeof(*base->files));
	for (size_t i = 0; i < child->nfiles; i++) {
		struct edf_file *f = &base->files[base->nfiles++];
		f->name = xstrdup(child->files[i].name);
		f->path = child->files[i].path ? xstrdup(child->files[i].path) : NULL;
	}
	for (size_t i = 0; i < child->nnotes; i++)
		strv_push(&base->notes, &base->nnotes, xstrdup(child->notes[i]));
}

int edf_merge(struct edf *base, const struct edf *child, alps_error **err)
{
	if (base->expanded || child->expanded)
		return alps_fail(err, ALPS_E_INTERNAL, "EDFs are merged before they are expanded");
	/* Limits first, so that a failure changes nothing. */
	if (base->nmounts + child->nmounts > EDF_MAX_MOUNTS)
		return alps_fail(err, ALPS_E_LIMIT, "%s: more than %d mounts with its bases",
				 child->name, EDF_MAX_MOUNTS);
	if (base->nenv + child->nenv > EDF_MAX_VARS ||
	    base->nannotations + child->nannotations > EDF_MAX_VARS)
		return alps_fail(err, ALPS_E_LIMIT, "%s: more than %d env entries or annotations "
				 "with its bases", child->name, EDF_MAX_VARS);
	image_override(base, child);
	string_override(&base->workdir, &child->workdir);
	flag_override(&base->entrypoint, &child->entrypoint);
	flag_override(&base->writable, &child->writable);
	bases_copy(base, child);
	vars_merge(&base->env, &base->nenv, child->env, child->nenv);
	vars_merge(&base->annotations, &base->nannotations, child->annotations,
		   child->nannotations);
	files_append(base, child);
	free(base->name);
	base->name = xstrdup(child->name);
	mounts_append(base, child);
	/* Cannot fail: base's and child's mounts come from different files,
	 * and each file was settled when it was parsed. */
	return mounts_settle(base, err);
}

/* ---- Expansion ------------------------------------------------------- */

struct lookup {
	const char *const *first, *const *second;
	bool image_unknown;     /* the image's environment counts, but is not known */
	struct edf *e;
	const struct edf_loc *loc;
};

static const char *lookup_get(void *arg, const char *name)
{
	const struct lookup *l = arg;
	const char *v = expand_envv_get(l->first, name);
	return v ? v : expand_envv_get(l->second, name);
}

static void lookup_unset(void *arg, const char *name)
{
	const struct lookup *l = arg;
	note_add(l->e, l->loc, "${%s} is not set%s, so it expands to \"\"", name,
		 l->image_unknown ? " (the image's environment is not known here)" : "");
}

static int expand_value(struct lookup *l, char **value, const struct edf_loc *loc,
			alps_error **err)
{
	if (!*value)
		return 0;
	l->loc = loc;
	struct expand_vars vars = { .lookup = lookup_get, .unset = lookup_unset, .arg = l };
	char *out;
	if (expand(*value, &vars, &out, err) < 0)
		return prefix_loc(err, loc);
	free(*value);
	*value = out;
	return 0;
}

/* Every value that expands, with the look-up order of edf.h. */
static int expand_all(struct edf *e, const struct edf_context *ctx, alps_error **err)
{
	const char *const *caller = ctx->caller_env, *const *image = ctx->image_env;
	struct lookup host = { .first = caller, .e = e };
	struct lookup path = { .first = caller, .second = image, .image_unknown = !image, .e = e };
	struct lookup env = { .first = image, .second = caller, .image_unknown = !image, .e = e };
	if (expand_value(&host, &e->image.value, &e->image.loc, err) < 0 ||
	    expand_value(&path, &e->workdir.value, &e->workdir.loc, err) < 0)
		return -1;
	for (size_t i = 0; i < e->nmounts; i++) {
		struct edf_mount *m = &e->mounts[i];
		if (expand_value(&host, &m->src, &m->loc, err) < 0 ||
		    expand_value(&path, &m->dst, &m->loc, err) < 0)
			return -1;
	}
	for (size_t i = 0; i < e->nenv; i++)
		if (expand_value(&env, &e->env[i].value, &e->env[i].loc, err) < 0)
			return -1;
	return 0;
}

int edf_expand(struct edf *e, const struct edf_context *ctx, alps_error **err)
{
	static const struct edf_context none;
	if (e->expanded)
		return 0;
	if (!ctx)
		ctx = &none;
	if (expand_all(e, ctx, err) < 0)
		return -1;
	e->expanded = true;
	if (image_classify(e, ctx->cwd, err) < 0)
		return -1;
	for (size_t i = 0; i < e->nmounts; i++)
		if (mount_check(e, &e->mounts[i], err) < 0)
			return -1;
	return mounts_settle(e, err);
}

/* ---- Accessors ------------------------------------------------------- */

bool edf_entrypoint(const struct edf *e)
{
	return e->entrypoint.value == 1;
}

bool edf_writable(const struct edf *e)
{
	return e->writable.value != 0;
}

const char *edf_image(const struct edf *e)
{
	return e->image.value ? e->image.value : "";
}

static const char *vars_get(const struct edf_var *v, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].key, key) == 0)
			return v[i].value;
	return NULL;
}

const char *edf_env_get(const struct edf *e, const char *key)
{
	return vars_get(e->env, e->nenv, key);
}

const char *edf_annotation_get(const struct edf *e, const char *key)
{
	return vars_get(e->annotations, e->nannotations, key);
}

/* ---- Warnings -------------------------------------------------------- */

struct warns {
	char **v;
	size_t n;
};

static void warn(struct warns *w, const struct edf_loc *loc, const char *fmt, ...)
	ALPS_PRINTF(3, 4);

static void warn(struct warns *w, const struct edf_loc *loc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	strv_push(&w->v, &w->n, loc_vformat(loc, fmt, ap));
	va_end(ap);
}

/* A tag that the reference does not write is ":latest", which moves. */
static bool image_untagged(const struct edf *e)
{
	if (e->image_kind != EDF_IMAGE_REF || e->ref.digest)
		return false;
	const char *s = e->image.value;
	const char *slash = strrchr(s, '/'), *hash = strrchr(s, '#');
	const char *last = slash > hash ? slash : hash ? hash : s;
	return !strchr(last, ':');
}

static void warn_image(const struct edf *e, struct warns *w)
{
	if (image_untagged(e))
		warn(w, &e->image.loc, "no tag: \":latest\" is used, and it changes when the image "
		     "is updated (name a tag or a digest)");
	bool none = e->image_kind == EDF_IMAGE_UNSET || e->image_kind == EDF_IMAGE_NONE;
	if (none && e->nmounts > 0)
		warn(w, &e->mounts[0].loc, "there is no image, so there is no container to "
		     "mount into");
	if (none && e->workdir.value && *e->workdir.value)
		warn(w, &e->workdir.loc, "there is no image, so workdir does not apply");
	if (e->workdir.value && *e->workdir.value && e->workdir.value[0] != '/' &&
	    is_final(e, e->workdir.value)) {
		_cleanup_free_ char *esc = log_escape(e->workdir.value, 200);
		warn(w, &e->workdir.loc, "\"%s\" is not an absolute path", esc);
	}
}

/* Destinations where alps itself mounts something for every container. */
static const char *const system_dsts[] = { "/proc", "/sys", "/dev", "/tmp" };

static void warn_mount(const struct edf *e, const struct edf_mount *m, struct warns *w)
{
	if (!is_final(e, m->dst))
		return;
	for (size_t i = 0; i < ARRAY_SIZE(system_dsts); i++) {
		const char *d = system_dsts[i];
		size_t n = strlen(d);
		bool under = strncmp(m->dst, d, n) == 0 && m->dst[n] == '/';
		if (strcmp(m->dst, d) == 0)
			warn(w, &m->loc, "mounting at %s hides the container's own %s", d, d);
		else if (under && (i == 0 || i == 1))
			warn(w, &m->loc, "mounting under %s: that is the kernel's view of the "
			     "container, usually a mistake", d);
	}
	if ((m->flags & EDF_MOUNT_SQSH) && is_final(e, m->src) && !has_squashfs_suffix(m->src)) {
		_cleanup_free_ char *esc = log_escape(m->src, 200);
		warn(w, &m->loc, "with 'sqsh' the source is a squashfs file, and \"%s\" does not "
		     "end in .sqsh, .sqfs or .squashfs", esc);
	}
}

static bool env_name_portable(const char *k)
{
	static const char letters[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_";
	static const char name_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
					 "0123456789";
	return *k && strchr(letters, *k) && k[strspn(k, name_chars)] == '\0';
}

/* Upper-case names that people get wrong in lower case; others (such as
 * http_proxy) are lower case on purpose. */
static const char *const env_upper_names[] = {
	"PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "HOME", "LANG", "PYTHONPATH", "TMPDIR",
	"CUDA_HOME", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "NCCL_DEBUG",
	"NCCL_SOCKET_IFNAME", "NCCL_NET", "FI_PROVIDER", "MPICH_GPU_SUPPORT_ENABLED",
};

static void warn_env(const struct edf_var *v, struct warns *w)
{
	_cleanup_free_ char *esc = log_escape(v->key, 100);
	if (!env_name_portable(v->key)) {
		warn(w, &v->loc, "\"%s\" is not a portable variable name (letters, digits and "
		     "'_', not starting with a digit): shells cannot use it", esc);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(env_upper_names); i++)
		if (strcmp(v->key, env_upper_names[i]) != 0 &&
		    strcasecmp(v->key, env_upper_names[i]) == 0)
			warn(w, &v->loc, "\"%s\": names are case sensitive; did you mean %s?", esc,
			     env_upper_names[i]);
}

/* The annotations that the hooks alps knows read. */
static const char *const known_annotations[] = {
	"com.hooks.cxi.enabled",
	"com.hooks.aws_ofi_nccl.enabled",
	"com.hooks.aws_ofi_nccl.variant",
	"com.hooks.ssh.enabled",
	"com.hooks.ssh.authorize_ssh_key",
	"com.hooks.ssh.port",
	"com.hooks.nvidia_cuda_mps.enabled",
};

static bool annotation_known(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(known_annotations); i++)
		if (strcmp(key, known_annotations[i]) == 0)
			return true;
	return false;
}

static void warn_annotation(const struct edf_var *v, struct warns *w)
{
	if (!annotation_known(v->key))
		warn(w, &v->loc, "not an annotation alps knows; it is kept for the hooks "
		     "configured on the site");
	if (str_has_suffix(v->key, ".enabled") && strcmp(v->value, "true") != 0 &&
	    strcmp(v->value, "false") != 0) {
		_cleanup_free_ char *esc = log_escape(v->value, 100);
		warn(w, &v->loc, "\"%s\": hooks compare .enabled with \"true\" and \"false\"", esc);
	}
}

char **edf_warnings(const struct edf *e, size_t *n)
{
	struct warns w = { .v = xzalloc(sizeof(char *)) };
	for (size_t i = 0; i < e->nnotes; i++)
		strv_push(&w.v, &w.n, xstrdup(e->notes[i]));
	warn_image(e, &w);
	for (size_t i = 0; i < e->nmounts; i++)
		warn_mount(e, &e->mounts[i], &w);
	for (size_t i = 0; i < e->nenv; i++)
		warn_env(&e->env[i], &w);
	for (size_t i = 0; i < e->nannotations; i++)
		warn_annotation(&e->annotations[i], &w);
	if (n)
		*n = w.n;
	return w.v;
}

/* ---- JSON ------------------------------------------------------------ */

/* Values may come from the caller's environment, which need not be
 * UTF-8; JSON must be. */
static json_t *jstr(const char *s)
{
	if (!s)
		return json_null();
	json_t *j = json_string(s);
	if (j)
		return j;
	_cleanup_free_ char *esc = log_escape(s, 0);
	return json_string(esc);
}

static json_t *jloc(const struct edf_loc *loc)
{
	if (!loc->file)
		return json_null();
	_cleanup_free_ char *s = xasprintf("%s:%d:%d", loc->file, loc->line, loc->col);
	return jstr(s);
}

static const char *image_kind_name(enum edf_image_kind k)
{
	switch (k) {
	case EDF_IMAGE_REF: return "reference";
	case EDF_IMAGE_SQUASHFS: return "squashfs";
	case EDF_IMAGE_DEFERRED: return "unexpanded";
	case EDF_IMAGE_UNSET:
	case EDF_IMAGE_NONE: break;
	}
	return "none";
}

static json_t *json_mount(const struct edf_mount *m)
{
	json_t *flags = json_array();
	for (size_t i = 0; i < ARRAY_SIZE(mount_flags); i++)
		if (m->flags & mount_flags[i].bit)
			json_array_append_new(flags, json_string(mount_flags[i].name));
	return json_pack("{s:o, s:o, s:o}", "source", jstr(m->src), "destination", jstr(m->dst),
			 "flags", flags);
}

/* env: "" (unset) shows as null. */
static json_t *json_vars(const struct edf_var *v, size_t n, bool null_empty)
{
	json_t *o = json_object();
	for (size_t i = 0; i < n; i++) {
		/* Keys are valid UTF-8: they come from the TOML parser. */
		json_t *val = (null_empty && !*v[i].value) ? json_null() : jstr(v[i].value);
		json_object_set_new(o, v[i].key, val);
	}
	return o;
}

static void json_image(json_t *o, const struct edf *e)
{
	json_object_set_new(o, "image", jstr(e->image.value));
	json_object_set_new(o, "image_kind", json_string(image_kind_name(e->image_kind)));
	if (e->image_kind == EDF_IMAGE_REF) {
		_cleanup_free_ char *canon = ref_format(&e->ref);
		json_object_set_new(o, "image_ref", jstr(canon));
	}
	if (e->image_user)
		json_object_set_new(o, "image_user", jstr(e->image_user));
}

static json_t *json_origins(const struct edf *e)
{
	json_t *mounts = json_array(), *env = json_object(), *ann = json_object();
	for (size_t i = 0; i < e->nmounts; i++)
		json_array_append_new(mounts, jloc(&e->mounts[i].loc));
	for (size_t i = 0; i < e->nenv; i++)
		json_object_set_new(env, e->env[i].key, jloc(&e->env[i].loc));
	for (size_t i = 0; i < e->nannotations; i++)
		json_object_set_new(ann, e->annotations[i].key, jloc(&e->annotations[i].loc));
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
			 "image", jloc(&e->image.loc), "workdir", jloc(&e->workdir.loc),
			 "entrypoint", jloc(&e->entrypoint.loc), "writable", jloc(&e->writable.loc),
			 "mounts", mounts, "env", env, "annotations", ann);
}

static json_t *json_files(const struct edf *e)
{
	json_t *a = json_array();
	for (size_t i = 0; i < e->nfiles; i++)
		json_array_append_new(a, json_pack("{s:o, s:o}", "name", jstr(e->files[i].name),
						   "path", jstr(e->files[i].path)));
	return a;
}

json_t *edf_to_json(const struct edf *e, bool with_sources)
{
	json_t *o = json_object(), *bases = json_array(), *mounts = json_array();
	json_t *unknown = json_array(), *warnings = json_array();
	json_object_set_new(o, "name", jstr(e->name));
	json_image(o, e);
	json_object_set_new(o, "workdir", jstr(e->workdir.value));
	json_object_set_new(o, "entrypoint", json_boolean(edf_entrypoint(e)));
	json_object_set_new(o, "writable", json_boolean(edf_writable(e)));
	for (size_t i = 0; i < e->nbases; i++)
		json_array_append_new(bases, jstr(e->bases[i].name));
	json_object_set_new(o, "base_environment", bases);
	for (size_t i = 0; i < e->nmounts; i++)
		json_array_append_new(mounts, json_mount(&e->mounts[i]));
	json_object_set_new(o, "mounts", mounts);
	json_object_set_new(o, "env", json_vars(e->env, e->nenv, true));
	json_object_set_new(o, "annotations", json_vars(e->annotations, e->nannotations, false));
	for (size_t i = 0; i < e->nannotations; i++)
		if (!annotation_known(e->annotations[i].key))
			json_array_append_new(unknown, jstr(e->annotations[i].key));
	json_object_set_new(o, "unknown_annotations", unknown);
	char **w = edf_warnings(e, NULL);
	for (size_t i = 0; w[i]; i++)
		json_array_append_new(warnings, jstr(w[i]));
	edf_strv_free(w);
	json_object_set_new(o, "warnings", warnings);
	if (with_sources) {
		json_object_set_new(o, "files", json_files(e));
		json_object_set_new(o, "origins", json_origins(e));
	}
	return o;
}
