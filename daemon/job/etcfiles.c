/* etcfiles.c: passwd and group lines for the job user (see etcfiles.h). */
#include <config.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/etcfiles.h"

/* Field 0 (name) and field 2 (id) of a "name:x:id:..." line. */
struct etc_key {
	const char *name;
	size_t name_len;
	const char *id;
	size_t id_len;
};

static int etc_key_of(const char *line, size_t len, struct etc_key *k)
{
	const char *end = line + len;
	const char *c1 = memchr(line, ':', len);
	if (!c1)
		return -1;
	const char *c2 = memchr(c1 + 1, ':', (size_t)(end - c1 - 1));
	if (!c2)
		return -1;
	const char *c3 = memchr(c2 + 1, ':', (size_t)(end - c2 - 1));
	k->name = line;
	k->name_len = (size_t)(c1 - line);
	k->id = c2 + 1;
	k->id_len = (size_t)((c3 ? c3 : end) - k->id);
	return 0;
}

static bool key_field_eq(const char *a, size_t an, const char *b, size_t bn)
{
	return an == bn && an > 0 && memcmp(a, b, an) == 0;
}

/* Whether line (len bytes) clashes with one of add's lines. */
static bool clashes(const char *line, size_t len, const char *add)
{
	struct etc_key k;
	if (etc_key_of(line, len, &k) < 0)
		return false;
	for (const char *p = add; *p;) {
		size_t n = strcspn(p, "\n");
		struct etc_key a;
		if (etc_key_of(p, n, &a) == 0 &&
		    (key_field_eq(k.name, k.name_len, a.name, a.name_len) ||
		     key_field_eq(k.id, k.id_len, a.id, a.id_len)))
			return true;
		p += n + (p[n] == '\n');
	}
	return false;
}

char *etc_merge(const char *image, size_t len, const char *add)
{
	size_t alen = strlen(add);
	char *out = xmalloc(len + alen + 2), *o = out;
	for (size_t i = 0; i < len;) {
		const char *nl = memchr(image + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (image + i)) : len - i;
		if (!clashes(image + i, n, add)) {
			memcpy(o, image + i, n);
			o += n;
			*o++ = '\n';
		}
		i += n + 1;
	}
	memcpy(o, add, alen);
	o += alen;
	if (alen > 0 && add[alen - 1] != '\n')
		*o++ = '\n';
	*o = '\0';
	return out;
}

/* Colons and newlines would break the line format; the host's entries do
 * not have them, but a spec's user_name comes from elsewhere. */
static bool etc_field_ok(const char *s)
{
	return s && strpbrk(s, ":\n") == NULL;
}

static char *pw_buf_new(size_t *size)
{
	long n = sysconf(_SC_GETPW_R_SIZE_MAX);
	*size = n > 0 ? (size_t)n : 16384;
	return xmalloc(*size);
}

char *etc_passwd_line(uid_t uid, gid_t gid, const char *user_name, alps_error **err)
{
	size_t size;
	_cleanup_free_ char *buf = pw_buf_new(&size);
	struct passwd pw, *res = NULL;
	int rc;
	while ((rc = getpwuid_r(uid, &pw, buf, size, &res)) == ERANGE && size < (1u << 20)) {
		size *= 2;
		buf = xrealloc(buf, size);
	}
	const char *name = user_name ? user_name : (res ? res->pw_name : NULL);
	if (!name) {
		alps_fail(err, ALPS_E_NOT_FOUND, "uid %u has no name on this host and none was given",
			  (unsigned)uid);
		return NULL;
	}
	const char *gecos = res && etc_field_ok(res->pw_gecos) ? res->pw_gecos : "";
	const char *home = res && etc_field_ok(res->pw_dir) ? res->pw_dir : "/";
	const char *shell = res && etc_field_ok(res->pw_shell) ? res->pw_shell : "/bin/sh";
	if (!etc_field_ok(name) || !*name) {
		alps_fail(err, ALPS_E_INVALID, "user name \"%s\" is not usable in /etc/passwd", name);
		return NULL;
	}
	return xasprintf("%s:x:%u:%u:%s:%s:%s\n", name, (unsigned)uid, (unsigned)gid, gecos, home,
			 shell);
}

/* The host's name of gid, or NULL; caller frees. */
static char *group_name(gid_t gid)
{
	long n = sysconf(_SC_GETGR_R_SIZE_MAX);
	size_t size = n > 0 ? (size_t)n : 16384;
	_cleanup_free_ char *buf = xmalloc(size);
	struct group gr, *res = NULL;
	int rc;
	while ((rc = getgrgid_r(gid, &gr, buf, size, &res)) == ERANGE && size < (1u << 20)) {
		size *= 2;
		buf = xrealloc(buf, size);
	}
	if (rc != 0 || !res || !etc_field_ok(res->gr_name) || !*res->gr_name)
		return NULL;
	return xstrdup(res->gr_name);
}

static void append_group(char **acc, gid_t gid, const char *member)
{
	_cleanup_free_ char *name = group_name(gid);
	if (!name)
		return;
	char *n = xasprintf("%s%s:x:%u:%s\n", *acc, name, (unsigned)gid, member);
	free(*acc);
	*acc = n;
}

char *etc_group_lines(gid_t gid, const gid_t *groups, size_t ngroups, const char *user_name)
{
	char *acc = xstrdup("");
	const char *member = etc_field_ok(user_name) ? user_name : "";
	append_group(&acc, gid, "");
	for (size_t i = 0; i < ngroups; i++) {
		bool seen = groups[i] == gid;
		for (size_t j = 0; j < i && !seen; j++)
			seen = groups[j] == groups[i];
		if (!seen)
			append_group(&acc, groups[i], member);
	}
	return acc;
}
