/* edf_mounts.c: the mounts key: "SRC:DST[:FLAGS]", flags, destinations. */
#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edf.h"
#include "edf_impl.h"
#include "expand.h"
#include "log.h"
#include "toml.h"

/* ---- Parsing: mounts ------------------------------------------------- */

/* The flags a bind or squashfs mount accepts.  The CE forwards bind flags
 * "to the system mount operation (e.g., ro or private)"; alps accepts the
 * ones it applies.  "recursive" is alps's older name for rbind. */
static const struct {
	const char *name;
	unsigned bit;
} mount_flags[] = {
	{ "ro", EDF_MOUNT_RO },
	{ "rw", EDF_MOUNT_RW },
	{ "private", EDF_MOUNT_PRIVATE },
	{ "rprivate", EDF_MOUNT_RPRIVATE },
	{ "rbind", EDF_MOUNT_RECURSIVE },
	{ "norbind", EDF_MOUNT_NORBIND },
	{ "nosuid", EDF_MOUNT_NOSUID },
	{ "nodev", EDF_MOUNT_NODEV },
	{ "sqsh", EDF_MOUNT_SQSH },
	{ "recursive", EDF_MOUNT_RECURSIVE },
};

#define FLAGS_KNOWN "ro, rw, rbind, norbind, nosuid, nodev, private, rprivate, sqsh"

/* System mount options people write that alps refuses, and why: never
 * accepted and then applied differently. */
static const struct {
	const char *name;
	const char *why;
} refused_flags[] = {
	{ "shared", "propagation is not supported: every job mount is private" },
	{ "rshared", "propagation is not supported: every job mount is private" },
	{ "slave", "propagation is not supported: every job mount is private" },
	{ "rslave", "propagation is not supported: every job mount is private" },
	{ "unbindable", "propagation is not supported: every job mount is private" },
	{ "runbindable", "propagation is not supported: every job mount is private" },
	{ "suid", "cannot be lifted: every job mount is nosuid" },
	{ "dev", "cannot be lifted: every job mount is nodev" },
	{ "noexec", "not implemented: alps cannot apply it to a bind mount yet" },
	{ "exec", "not implemented: a bind keeps the exec setting of its source" },
	{ "bind", "ambiguous: binds are recursive (rbind) by default; write norbind for a "
		  "non-recursive one" },
	{ "atime", "not supported: a bind keeps the access-time setting of its source" },
	{ "noatime", "not supported: a bind keeps the access-time setting of its source" },
	{ "relatime", "not supported: a bind keeps the access-time setting of its source" },
	{ "norelatime", "not supported: a bind keeps the access-time setting of its source" },
	{ "strictatime", "not supported: a bind keeps the access-time setting of its source" },
	{ "nodiratime", "not supported: a bind keeps the access-time setting of its source" },
	{ "diratime", "not supported: a bind keeps the access-time setting of its source" },
	{ "lazytime", "not supported: a bind keeps the access-time setting of its source" },
};

const char *mount_flag_at(size_t i, unsigned *bit)
{
	/* The last entry is an alias: each bit is listed once. */
	if (i >= ARRAY_SIZE(mount_flags) - 1)
		return NULL;
	*bit = mount_flags[i].bit;
	return mount_flags[i].name;
}

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
	unsigned bit;
	const char *name;
	for (size_t i = 0; (name = mount_flag_at(i, &bit)); i++) {
		if (!(flags & bit))
			continue;
		int n = snprintf(buf + len, sizeof(buf) - len, "%s%s", len ? "+" : "", name);
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
		{ EDF_MOUNT_RECURSIVE, EDF_MOUNT_NORBIND },
		{ EDF_MOUNT_PRIVATE, EDF_MOUNT_RPRIVATE },
		{ EDF_MOUNT_SQSH, EDF_MOUNT_RW },        /* squashfs is read-only */
		{ EDF_MOUNT_SQSH, EDF_MOUNT_RECURSIVE }, /* a file has no submounts */
		{ EDF_MOUNT_SQSH, EDF_MOUNT_NORBIND },
	};
	for (size_t i = 0; i < ARRAY_SIZE(exclusive); i++) {
		if ((flags & exclusive[i][0]) && (flags & exclusive[i][1])) {
			*other = exclusive[i][1];
			return exclusive[i][0];
		}
	}
	return 0;
}

static int flag_lookup(const char *word, unsigned *bit)
{
	for (size_t i = 0; i < ARRAY_SIZE(mount_flags); i++) {
		if (strcmp(mount_flags[i].name, word) == 0) {
			*bit = mount_flags[i].bit;
			return 0;
		}
	}
	return -1;
}

static int flag_word(const char *word, const struct edf_loc *loc, unsigned *bit,
		     alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(word, 40);
	if (!*word)
		return fail_loc(err, loc, "empty mount flag");
	if (flag_lookup(word, bit) == 0)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(refused_flags); i++)
		if (strcmp(refused_flags[i].name, word) == 0)
			return fail_loc(err, loc, "mount flag '%s': %s", esc, refused_flags[i].why);
	return fail_loc(err, loc, "unknown mount flag '%s' (" FLAGS_KNOWN ")", esc);
}

/* FLAGS of SRC:DST:FLAGS, '+'-separated; binds get rbind unless norbind
 * (pyxis adds rbind to every bind: /capstor comes with its submounts). */
static int mount_flags_parse(const char *s, const struct edf_loc *loc, unsigned *out,
			     alps_error **err)
{
	unsigned flags = 0, bit = 0, other;
	_cleanup_free_ char *copy = xstrdup(s);
	for (char *p = copy, *w; (w = strsep(&p, "+"));) {
		if (flag_word(w, loc, &bit, err) < 0)
			return -1;
		if (flags & bit) {
			_cleanup_free_ char *esc = log_escape(w, 40);
			return fail_loc(err, loc, "mount flag '%s' given twice", esc);
		}
		flags |= bit;
	}
	unsigned first = flags_conflict(flags, &other);
	if (first)
		return fail_loc(err, loc, "conflicting mount flags '%s' and '%s'",
				mount_flag_name(first), mount_flag_name(other));
	if (!(flags & (EDF_MOUNT_SQSH | EDF_MOUNT_NORBIND)))
		flags |= EDF_MOUNT_RECURSIVE;
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

bool is_final(const struct edf *e, const char *s)
{
	return e->expanded || !strchr(s, '$');
}

/* SRC once final: absolute, or relative with a leading '.' (pyxis's
 * rule; the CE: "Relative paths should be prepended by ./"), which
 * edf_expand resolves against the caller's working directory. */
static int src_check(const struct edf *e, const struct edf_mount *m, alps_error **err)
{
	const char *s = m->src;
	_cleanup_free_ char *esc = log_escape(s, 200);
	if (!*s)
		return fail_loc(err, &m->loc, "empty source");
	if (s[0] == '/' || (s[0] == '.' && !e->expanded))
		return 0;
	if (s[0] == '.')
		return fail_loc(err, &m->loc, "relative source \"%s\" and no working directory "
				"to resolve it against", esc);
	if (s[0] == '~')
		return fail_loc(err, &m->loc, "source \"%s\": '~' is not expanded here; write "
				"\"${HOME}/...\"", esc);
	return fail_loc(err, &m->loc, "source \"%s\" is not absolute (write \"./%s\" for a "
			"path relative to the working directory)", esc, esc);
}

/* Check the parts of m whose value is final (see is_final). */
int mount_check(const struct edf *e, struct edf_mount *m, alps_error **err)
{
	bool src_ready = is_final(e, m->src);
	if (src_ready && src_check(e, m, err) < 0)
		return -1;
	if (m->same_path && src_ready && m->src[0] == '/') {
		free(m->dst);
		m->dst = xstrdup(m->src);
	}
	if (m->flags_text && is_final(e, m->flags_text)) {
		if (mount_flags_parse(m->flags_text, &m->loc, &m->flags, err) < 0)
			return -1;
		free(m->flags_text);
		m->flags_text = NULL;
	}
	if (is_final(e, m->dst) && !(m->same_path && m->src[0] != '/')) {
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

/* Split "SRC[:DST[:FLAGS]]" into m.  A ':' inside ${...} (a default)
 * does not split.  SRC alone mounts at the same path, as pyxis does. */
static int mount_split(const char *s, struct edf_mount *m, alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(s, 200);
	size_t a = expand_span(s, ':');
	if (a == 0)
		return fail_loc(err, &m->loc, "empty source in \"%s\"", esc);
	m->src = xstrndup(s, a);
	m->flags = EDF_MOUNT_RECURSIVE;
	if (!s[a]) {
		m->same_path = true;
		m->dst = xstrdup(m->src);
		return 0;
	}
	const char *rest = s + a + 1;
	size_t b = expand_span(rest, ':');
	const char *flags = rest[b] ? rest + b + 1 : NULL;
	if (b == 0)
		return fail_loc(err, &m->loc, "empty destination in \"%s\"", esc);
	if (flags && flags[expand_span(flags, ':')])
		return fail_loc(err, &m->loc, "too many ':' in \"%s\" (expected SRC[:DST[:FLAGS]]; "
				"paths cannot contain ':')", esc);
	if (flags && !*flags)
		return fail_loc(err, &m->loc, "empty flags after ':' in \"%s\"", esc);
	m->dst = xstrndup(rest, b);
	if (flags)
		m->flags_text = xstrdup(flags);
	return 0;
}

static int mount_parse(struct pctx *p, const toml_value *v, size_t idx, alps_error **err)
{
	_cleanup_free_ char *key = xasprintf("mounts[%zu]", idx);
	return mount_parse_key(p, v, key, err);
}

int mount_parse_key(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
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

int parse_mounts(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	if (v->type != TOML_ARRAY)
		return fail_value_type(p, v, key, "an array of \"SRC[:DST[:FLAGS]]\" strings", err);
	if (v->u.arr.n > EDF_MAX_MOUNTS)
		return alps_fail(err, ALPS_E_LIMIT, "%s:%d:%d: %s: more than %d mounts", p->file,
				 v->line, v->col, key, EDF_MAX_MOUNTS);
	for (size_t i = 0; i < p->e->nmounts; i++)
		mount_free(&p->e->mounts[i]);
	p->e->nmounts = 0;
	/* Every bad mount is reported, not only the first. */
	for (size_t i = 0; i < v->u.arr.n; i++) {
		alps_error *e1 = NULL;
		if (mount_parse(p, v->u.arr.items[i], i, &e1) < 0)
			errors_keep(&p->errs, &e1);
	}
	return 0;
}

static bool mount_final(const struct edf *e, const struct edf_mount *m)
{
	return is_final(e, m->src) && is_final(e, m->dst) && !m->flags_text &&
	       m->dst[0] == '/';
}

/* Two mounts of one file on one destination: the same line twice is
 * dropped with a warning (pyxis drops it too); two different ones are an
 * error, the later would hide the earlier.  Mounts of different files all
 * stay, in order: the CE appends inherited mounts ("values from downstream
 * EDFs are appended to inherited values"). */
int mounts_settle(struct edf *e, alps_error **err)
{
	for (size_t j = 1; j < e->nmounts; j++) {
		struct edf_mount *b = &e->mounts[j];
		for (size_t i = 0; i < j && mount_final(e, b); i++) {
			struct edf_mount *a = &e->mounts[i];
			if (!mount_final(e, a) || strcmp(a->loc.file, b->loc.file) != 0 ||
			    strcmp(a->dst, b->dst) != 0)
				continue;
			_cleanup_free_ char *esc = log_escape(b->dst, 200);
			if (strcmp(a->src, b->src) != 0 || a->flags != b->flags)
				return fail_loc(err, &b->loc, "destination %s is already mounted "
						"by %s (line %d)", esc, a->loc.key, a->loc.line);
			note_add(e, &b->loc, "the same mount as %s (line %d): dropped", a->loc.key,
				 a->loc.line);
			mount_free(b);
			memmove(b, b + 1, (e->nmounts - j - 1) * sizeof(*b));
			e->nmounts--;
			j--;
			break;
		}
	}
	return 0;
}

/* "/a/./b/../c" -> "/a/c". */
char *path_lexical(const char *path)
{
	char *res = xmalloc(strlen(path) + 2);
	size_t len = 0;
	for (const char *p = path;;) {
		p += strspn(p, "/");
		size_t c = strcspn(p, "/");
		if (c == 0)
			break;
		if (c == 2 && p[0] == '.' && p[1] == '.') {
			while (len > 0 && res[--len] != '/')
				;
		} else if (!(c == 1 && p[0] == '.')) {
			res[len++] = '/';
			memcpy(res + len, p, c);
			len += c;
		}
		p += c;
	}
	if (len == 0)
		res[len++] = '/';
	res[len] = '\0';
	return res;
}

/* ---- devices (Sarus Suite) ------------------------------------------- */

static bool cdi_chars(const char *s, size_t n, const char *extra)
{
	if (n == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
			(s[0] >= '0' && s[0] <= '9')))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || strchr(extra, c);
		if (!ok || c == '\0')
			return false;
	}
	return true;
}

/* A CDI device name, "vendor.com/class=name": the vendor a domain (with a
 * '.'), the class [A-Za-z0-9][A-Za-z0-9_.-]*, the name the same plus ':'. */
static bool cdi_name(const char *s)
{
	const char *slash = strchr(s, '/'), *eq = strchr(s, '=');
	if (!slash || !eq || eq < slash)
		return false;
	size_t nv = (size_t)(slash - s), nc = (size_t)(eq - slash - 1);
	return cdi_chars(s, nv, ".-") && memchr(s, '.', nv) && cdi_chars(slash + 1, nc, "_.-") &&
	       cdi_chars(eq + 1, strlen(eq + 1), "_.:-");
}

int device_check(const struct edf *e, const struct edf_string *d, alps_error **err)
{
	const char *s = d->value;
	if (!is_final(e, s))
		return 0;
	_cleanup_free_ char *esc = log_escape(s, 200);
	if (s[0] == '/') {
		_cleanup_free_ char *norm = path_lexical(s);
		if (!str_has_prefix(s, "/dev/") || strcmp(norm, s) != 0 || strstr(s, "/.."))
			return fail_loc(err, &d->loc, "\"%s\" is not a normalized path below /dev",
					esc);
		return 0;
	}
	if (!cdi_name(s))
		return fail_loc(err, &d->loc, "\"%s\" is neither a CDI device name "
				"(vendor.com/class=name) nor an absolute /dev path", esc);
	return 0;
}

static int device_add(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	struct edf_string d = { 0 };
	pctx_loc(p, &d.loc, v->line, v->col, key);
	if (want_string(v, &d.loc, err) < 0 || check_expansion(v->u.str.ptr, &d.loc, err) < 0) {
		loc_free(&d.loc);
		return -1;
	}
	d.value = xstrdup(v->u.str.ptr);
	if (device_check(p->e, &d, err) < 0) {
		string_free(&d);
		return -1;
	}
	struct edf *e = p->e;
	e->devices = xreallocarray(e->devices, e->ndevices + 1, sizeof(*e->devices));
	e->devices[e->ndevices++] = d;
	return 0;
}

int parse_devices(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
{
	if (v->type != TOML_ARRAY)
		return fail_value_type(p, v, key, "an array of strings", err);
	if (v->u.arr.n > EDF_MAX_MOUNTS)
		return alps_fail(err, ALPS_E_LIMIT, "%s:%d:%d: %s: more than %d devices", p->file,
				 v->line, v->col, key, EDF_MAX_MOUNTS);
	for (size_t i = 0; i < v->u.arr.n; i++) {
		_cleanup_free_ char *k = xasprintf("%s[%zu]", key, i);
		alps_error *e1 = NULL;
		if (device_add(p, v->u.arr.items[i], k, &e1) < 0)
			errors_keep(&p->errs, &e1);
	}
	return 0;
}
