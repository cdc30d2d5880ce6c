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

const char *mount_flag_at(size_t i, unsigned *bit)
{
	if (i >= ARRAY_SIZE(mount_flags))
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

bool is_final(const struct edf *e, const char *s)
{
	return e->expanded || !strchr(s, '$');
}

/* Check the parts of m whose value is final (see is_final). */
int mount_check(const struct edf *e, struct edf_mount *m, alps_error **err)
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

int parse_mounts(struct pctx *p, const toml_value *v, const char *key, alps_error **err)
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
int mounts_settle(struct edf *e, alps_error **err)
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

