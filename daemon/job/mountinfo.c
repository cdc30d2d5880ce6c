/* mountinfo.c: /proc/<pid>/mountinfo parser (see mountinfo.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/mountinfo.h"

/* A mount table of a big node is a few hundred kB; refuse silly sizes. */
#define MOUNTINFO_MAX (64u << 20)

/* Undo the kernel's \ooo escapes. Caller frees. */
static char *unescape(const char *s, size_t len)
{
	char *out = xmalloc(len + 1), *o = out;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\\' && i + 3 < len && s[i + 1] >= '0' && s[i + 1] <= '3' &&
		    s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
			*o++ = (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
			i += 3;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

/* The next space-separated field of *p, unescaped; NULL at the end. */
static char *next_field(const char **p)
{
	const char *s = *p;
	while (*s == ' ')
		s++;
	if (*s == '\0')
		return NULL;
	size_t n = strcspn(s, " ");
	*p = s + n;
	return unescape(s, n);
}

static void entry_free(struct mountinfo_entry *e)
{
	free(e->root);
	free(e->mountpoint);
	free(e->options);
	free(e->optional);
	free(e->fstype);
	free(e->source);
	free(e->super_options);
}

/* The optional fields run up to a lone "-". */
static char *optional_fields(const char **p)
{
	char *acc = xstrdup("");
	for (;;) {
		char *f = next_field(p);
		if (!f || strcmp(f, "-") == 0) {
			int end = f == NULL;
			free(f);
			if (end) {
				free(acc);
				return NULL;
			}
			return acc;
		}
		char *n = *acc ? xasprintf("%s %s", acc, f) : xstrdup(f);
		free(acc);
		free(f);
		acc = n;
	}
}

static int parse_line(const char *line, struct mountinfo_entry *e)
{
	const char *p = line;
	int consumed = 0;
	memset(e, 0, sizeof(*e));
	if (sscanf(p, "%d %d %u:%u %n", &e->id, &e->parent, &e->major, &e->minor, &consumed) < 4 ||
	    consumed == 0)
		return -1;
	p += consumed;
	e->root = next_field(&p);
	e->mountpoint = next_field(&p);
	e->options = next_field(&p);
	if (e->options)
		e->optional = optional_fields(&p);
	if (e->optional) {
		e->fstype = next_field(&p);
		e->source = next_field(&p);
		e->super_options = next_field(&p);
	}
	if (!e->root || !e->mountpoint || !e->options || !e->optional || !e->fstype ||
	    !e->source || !e->super_options) {
		entry_free(e);
		return -1;
	}
	return 0;
}

int mountinfo_parse(const char *text, struct mountinfo *out, alps_error **err)
{
	size_t cap = 0;
	memset(out, 0, sizeof(*out));
	for (const char *p = text; *p;) {
		size_t n = strcspn(p, "\n");
		_cleanup_free_ char *line = xstrndup(p, n);
		p += n + (p[n] == '\n');
		if (n == 0)
			continue;
		if (out->count == cap) {
			cap = cap ? cap * 2 : 64;
			out->entries = xreallocarray(out->entries, cap, sizeof(*out->entries));
		}
		if (parse_line(line, &out->entries[out->count]) < 0) {
			mountinfo_free(out);
			return alps_fail(err, ALPS_E_INTERNAL, "unparsable mountinfo line: %.200s", line);
		}
		out->count++;
	}
	return 0;
}

/* Read a proc file whole; proc files report no size, so read to the end. */
static char *read_all(int fd, size_t max)
{
	size_t cap = 65536, len = 0;
	char *buf = xmalloc(cap);
	for (;;) {
		if (len + 1 >= cap) {
			if (cap >= max) {
				free(buf);
				errno = EFBIG;
				return NULL;
			}
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int saved = errno;
			free(buf);
			errno = saved;
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

int mountinfo_read(const char *path, struct mountinfo *out, alps_error **err)
{
	if (!path)
		path = "/proc/self/mountinfo";
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return alps_fail_errno(err, "open(%s)", path);
	_cleanup_free_ char *text = read_all(fd, MOUNTINFO_MAX);
	if (!text)
		return alps_fail_errno(err, "read(%s)", path);
	return mountinfo_parse(text, out, err);
}

void mountinfo_free(struct mountinfo *mi)
{
	for (size_t i = 0; i < mi->count; i++)
		entry_free(&mi->entries[i]);
	free(mi->entries);
	mi->entries = NULL;
	mi->count = 0;
}

const struct mountinfo_entry *mountinfo_find(const struct mountinfo *mi, const char *mountpoint)
{
	/* Later lines are mounted later: the last match is on top. */
	for (size_t i = mi->count; i-- > 0;)
		if (strcmp(mi->entries[i].mountpoint, mountpoint) == 0)
			return &mi->entries[i];
	return NULL;
}

int mountinfo_has_option(const char *options, const char *opt)
{
	size_t n = strlen(opt);
	for (const char *p = options; *p;) {
		size_t len = strcspn(p, ",");
		if (len == n && memcmp(p, opt, n) == 0)
			return 1;
		p += len + (p[len] == ',');
	}
	return 0;
}

int path_is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	if (n == 1 && dir[0] == '/')
		return path[0] == '/';
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}
