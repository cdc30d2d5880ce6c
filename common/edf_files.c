/* edf_files.c: loading EDFs and their base environments (see edf.h).
 *
 * edf_load_all() walks base_environment through a loader and never
 * touches a file itself: the client plugs in edf_file_loader, which reads
 * with the user's rights, and the daemon edf_source_load(), which serves
 * what the client sent. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edf.h"
#include "edf_impl.h"
#include "expand.h"
#include "log.h"

/* ---- The client's loader: files -------------------------------------- */

/* Read a whole EDF from fd.  The size is checked while reading as well as
 * before, because a file can grow in between. */
int edf_read_fd(int fd, const char *path, char **content, size_t *len, alps_error **err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return alps_fail_errno(err, "%s", path);
	if (!S_ISREG(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "%s: not a regular file", path);
	if (st.st_size > (off_t)EDF_MAX_SIZE)
		return alps_fail(err, ALPS_E_LIMIT, "%s: larger than %u bytes", path, EDF_MAX_SIZE);
	_cleanup_free_ char *buf = xmalloc(EDF_MAX_SIZE + 2);
	size_t n = 0;
	while (n <= EDF_MAX_SIZE) {
		ssize_t r = read(fd, buf + n, EDF_MAX_SIZE + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return alps_fail_errno(err, "reading %s", path);
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > EDF_MAX_SIZE)
		return alps_fail(err, ALPS_E_LIMIT, "%s: larger than %u bytes", path, EDF_MAX_SIZE);
	buf[n] = '\0';
	*content = xrealloc(steal_pointer(&buf), n + 1);
	*len = n;
	return 0;
}

/* Open and read path.  1 when it does not exist (the search goes on),
 * 0 when read, -1 on any other error: an unreadable EDF on the search
 * path is reported, not skipped, or a later one would silently win. */
static int try_read(const char *path, char **resolved, char **content, size_t *len,
		    alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(path, 300);
	/* O_NONBLOCK: opening a FIFO must not hang; edf_read_fd refuses it. */
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 && (errno == ENOENT || errno == ENOTDIR))
		return 1;
	if (fd < 0)
		return alps_fail_errno(err, "opening %s", esc);
	if (edf_read_fd(fd, esc, content, len, err) < 0)
		return -1;
	char *real = realpath(path, NULL);
	*resolved = real ? real : xstrdup(path);
	return 0;
}

/* The world the loader reads in: the job user's (edf.h). */
static const char *world_home(const struct edf_file_world *w)
{
	return w && w->home ? w->home : getenv("HOME");
}

static const char *world_edf_path(const struct edf_file_world *w)
{
	return w && w->use_edf_path ? w->edf_path : getenv("EDF_PATH");
}

/* "~/x" with the user's home; anything else as it is.  Caller frees; NULL
 * if it needs a home and there is none. */
static char *home_path(const struct edf_file_world *w, const char *p)
{
	if (!str_has_prefix(p, "~/"))
		return xstrdup(p);
	const char *home = world_home(w);
	if (!home || !*home)
		return NULL;
	return xasprintf("%s%s", home, p + 1);
}

static int load_path(const struct edf_file_world *w, const char *name, char **resolved,
		     char **content, size_t *len, alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(name, 300);
	_cleanup_free_ char *path = home_path(w, name);
	if (!path)
		return alps_fail(err, ALPS_E_NOT_FOUND, "%s: HOME is not set", esc);
	int rc = try_read(path, resolved, content, len, err);
	if (rc > 0)
		return alps_fail(err, ALPS_E_NOT_FOUND, "environment \"%s\" not found", esc);
	return rc;
}

struct searched {
	char *list;             /* ", "-separated, for the message */
};

static void searched_add(struct searched *s, const char *path)
{
	_cleanup_free_ char *esc = log_escape(path, 300);
	char *l = xasprintf("%s%s%s", s->list ? s->list : "", s->list ? ", " : "", esc);
	free(s->list);
	s->list = l;
}

static int not_found(const char *name, const char *file, struct searched *s, alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(name, 300);
	_cleanup_free_ char *fesc = log_escape(file, 300);
	/* Someone who wrote "x.toml" probably meant the file in front of them. */
	_cleanup_free_ char *hint = str_has_suffix(name, ".toml")
		? xasprintf("; for the file in the current directory write ./%s", fesc)
		: xstrdup("");
	int rc = alps_fail(err, ALPS_E_NOT_FOUND, "environment \"%s\" not found (searched %s)%s",
			   esc, s->list ? s->list : "nothing: EDF_PATH is not set and HOME is not "
			   "set", hint);
	free(s->list);
	return rc;
}

/* A bare name: NAME.toml in each directory of EDF_PATH (default ~/.edf),
 * then in the site's directory (edf_site.c); empty entries are skipped, as in PATH they would mean the working
 * directory, which bare names deliberately do not search. */
static int load_search(const struct edf_file_world *w, const char *name, char **resolved,
		       char **content, size_t *len, alps_error **err)
{
	const char *env = world_edf_path(w);
	_cleanup_free_ char *dirs = xstrdup(env && *env ? env : "~/.edf");
	_cleanup_free_ char *file = edf_display_name(name);
	struct searched s = { 0 };
	char *save = NULL;
	for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		_cleanup_free_ char *dir = home_path(w, d);
		if (!dir)
			continue;
		/* "EDF_PATH must be a colon-separated list of absolute paths":
		 * a relative entry would search the working directory. */
		if (dir[0] != '/') {
			free(s.list);
			_cleanup_free_ char *esc = log_escape(d, 300);
			return alps_fail(err, ALPS_E_INVALID, "EDF_PATH entry \"%s\" is not an "
					 "absolute path", esc);
		}
		const char *sep = str_has_suffix(dir, "/") ? "" : "/";
		_cleanup_free_ char *path = xasprintf("%s%s%s", dir, sep, file);
		int rc = try_read(path, resolved, content, len, err);
		if (rc <= 0) {
			free(s.list);
			return rc;
		}
		searched_add(&s, path);
	}
	/* The site's presets come last: the user's file of the same name wins. */
	_cleanup_free_ char *note = NULL;
	int rc = edf_site_search(file, resolved, content, len, &note, err);
	if (rc <= 0) {
		free(s.list);
		return rc;
	}
	if (note)
		searched_add(&s, note);
	return not_found(name, file, &s, err);
}

static int file_load(void *arg, const char *name, char **resolved, char **content, size_t *len,
		     alps_error **err)
{
	const struct edf_file_world *w = arg;
	*resolved = *content = NULL;
	*len = 0;
	if (strchr(name, '/'))
		return load_path(w, name, resolved, content, len, err);
	return load_search(w, name, resolved, content, len, err);
}

int edf_file_load(void *arg, const char *name, char **resolved, char **content, size_t *len,
		  alps_error **err)
{
	return file_load(arg, name, resolved, content, len, err);
}

const struct edf_loader edf_file_loader = { .load = file_load, .arg = NULL };

/* ---- The daemon's loader: what the client sent ------------------------ */

int edf_source_load(void *arg, const char *name, char **resolved, char **content, size_t *len,
		    alps_error **err)
{
	const struct edf_source_set *set = arg;
	_cleanup_free_ char *want = edf_display_name(name);
	for (size_t i = 0; i < set->n; i++) {
		const struct edf_source *s = &set->v[i];
		_cleanup_free_ char *have = edf_display_name(s->name);
		if (strcmp(have, want) != 0)
			continue;
		*resolved = xstrdup(s->path ? s->path : s->name);
		*content = xmalloc(s->len + 1);
		memcpy(*content, s->content, s->len);
		(*content)[s->len] = '\0';
		*len = s->len;
		return 0;
	}
	_cleanup_free_ char *esc = log_escape(name, 300);
	return alps_fail(err, ALPS_E_NOT_FOUND, "environment \"%s\" is not among the %zu the "
			 "client sent", esc, set->n);
}

void edf_sources_free(struct edf_source *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++) {
		free(s[i].name);
		free(s[i].path);
		free(s[i].content);
	}
	free(s);
}

/* ---- Walking base_environment ----------------------------------------- */

struct walk {
	const struct edf_loader *loader;
	const struct edf_context *ctx;          /* expands base_environment entries */
	struct edf_source src[EDF_MAX_FILES];   /* one per distinct name */
	struct edf *parsed[EDF_MAX_FILES];      /* parallel to src */
	bool done[EDF_MAX_FILES];               /* placed in order[] */
	size_t n;
	size_t order[EDF_MAX_FILES];            /* the merge order */
	size_t norder;
	size_t stack[EDF_MAX_DEPTH + 1];        /* the chain being walked */
	size_t depth;
};

static void walk_free(struct walk *w)
{
	for (size_t i = 0; i < w->n; i++) {
		edf_free(w->parsed[i]);
		free(w->src[i].name);
		free(w->src[i].path);
		free(w->src[i].content);
	}
	free(w);
}

static const char *base_lookup(void *arg, const char *name)
{
	return expand_envv_get(arg, name);
}

/* Names that display alike ("x" and "x.toml") are one file. */
static long walk_find(const struct walk *w, const char *name)
{
	_cleanup_free_ char *want = edf_display_name(name);
	for (size_t i = 0; i < w->n; i++) {
		_cleanup_free_ char *have = edf_display_name(w->src[i].name);
		if (strcmp(have, want) == 0)
			return (long)i;
	}
	return -1;
}

/* "a.toml -> b.toml" from stack position from to the top, then last. */
static char *walk_chain(const struct walk *w, size_t from, const char *last)
{
	char *s = xstrdup("");
	for (size_t i = from; i < w->depth; i++) {
		char *t = xasprintf("%s%s -> ", s, w->parsed[w->stack[i]]->name);
		free(s);
		s = t;
	}
	_cleanup_free_ char *disp = edf_display_name(last);
	_cleanup_free_ char *esc = log_escape(disp, 200);
	char *t = xasprintf("%s%s", s, esc);
	free(s);
	return t;
}

static int fail_from(alps_error **err, int code, const struct edf_loc *from, const char *msg)
{
	if (!from)
		return alps_fail(err, code, "%s", msg);
	return alps_fail(err, code, "%s:%d:%d: %s: %s", from->file, from->line, from->col,
			 from->key, msg);
}

/* idx is on the stack: the chain from there back to it is the cycle. */
static int walk_cycle(const struct walk *w, size_t idx, const char *name,
		      const struct edf_loc *from, const char *alias, alps_error **err)
{
	size_t at = 0;
	while (at < w->depth && w->stack[at] != idx)
		at++;
	_cleanup_free_ char *chain = walk_chain(w, at, name);
	_cleanup_free_ char *msg = xasprintf("base_environment cycle: %s%s%s%s", chain,
					     alias ? " (the same file as " : "", alias ? alias : "",
					     alias ? ")" : "");
	return fail_from(err, ALPS_E_INVALID, from, msg);
}

/* A name that resolves to a file already on the chain under another name
 * closes a cycle too. */
static long walk_alias(const struct walk *w, const char *path)
{
	for (size_t i = 0; i < w->depth; i++)
		if (w->src[w->stack[i]].path && strcmp(w->src[w->stack[i]].path, path) == 0)
			return (long)w->stack[i];
	return -1;
}

static int walk_load(struct walk *w, const char *name, const struct edf_loc *from, size_t *idx,
		     alps_error **err)
{
	struct edf_source s = { 0 };
	if (w->loader->load(w->loader->arg, name, &s.path, &s.content, &s.len, err) < 0)
		return from ? alps_error_prefix(err, "%s:%d:%d: %s", from->file, from->line,
						from->col, from->key) : -1;
	long alias = walk_alias(w, s.path);
	if (alias >= 0) {
		free(s.path);
		free(s.content);
		return walk_cycle(w, (size_t)alias, name, from, w->parsed[alias]->name, err);
	}
	struct edf *e;
	if (edf_parse(name, s.content, s.len, &e, err) < 0) {
		free(s.path);
		free(s.content);
		return -1;
	}
	e->files[0].path = xstrdup(s.path);
	s.name = xstrdup(name);
	*idx = w->n++;
	w->src[*idx] = s;
	w->parsed[*idx] = e;
	return 0;
}

/* A base_environment entry expands like every value (${HOME}/envs/x);
 * "" after expansion names no base. */
static int base_expand(const struct walk *w, const struct edf_base *b, char **out,
		       alps_error **err)
{
	struct expand_vars vars = { .lookup = base_lookup,
				    .arg = w->ctx ? (void *)w->ctx->caller_env : NULL };
	if (expand(b->name, &vars, out, err) < 0)
		return prefix_loc(err, &b->loc);
	return 0;
}

static int walk_visit(struct walk *w, const char *name, const struct edf_loc *from,
		      alps_error **err)
{
	long found = walk_find(w, name);
	if (found >= 0 && !w->done[found])
		return walk_cycle(w, (size_t)found, name, from, NULL, err);
	if (found >= 0)
		return 0;       /* a diamond: merged at its first place only */
	if (w->depth > EDF_MAX_DEPTH) {
		_cleanup_free_ char *chain = walk_chain(w, 0, name);
		_cleanup_free_ char *msg = xasprintf("base_environment nests more than %d levels "
						     "deep: %s", EDF_MAX_DEPTH, chain);
		return fail_from(err, ALPS_E_LIMIT, from, msg);
	}
	if (w->n >= EDF_MAX_FILES) {
		_cleanup_free_ char *msg = xasprintf("more than %d environments", EDF_MAX_FILES);
		return fail_from(err, ALPS_E_LIMIT, from, msg);
	}
	size_t idx = 0;
	if (walk_load(w, name, from, &idx, err) < 0)
		return -1;
	w->stack[w->depth++] = idx;
	const struct edf *e = w->parsed[idx];
	for (size_t i = 0; i < e->nbases; i++) {
		_cleanup_free_ char *name_x = NULL;
		if (base_expand(w, &e->bases[i], &name_x, err) < 0)
			return -1;
		if (*name_x && walk_visit(w, name_x, &e->bases[i].loc, err) < 0)
			return -1;
	}
	w->depth--;
	w->done[idx] = true;
	w->order[w->norder++] = idx;
	return 0;
}

static int walk_merge(struct walk *w, struct edf **merged, alps_error **err)
{
	_cleanup_edf_ struct edf *m = steal_pointer(&w->parsed[w->order[0]]);
	for (size_t i = 1; i < w->norder; i++)
		if (edf_merge(m, w->parsed[w->order[i]], err) < 0)
			return -1;
	*merged = steal_pointer(&m);
	return 0;
}

static void walk_sources(struct walk *w, struct edf_source **sources, size_t *nsources)
{
	*sources = xcalloc(w->n, sizeof(**sources));
	for (size_t i = 0; i < w->n; i++) {
		(*sources)[i] = w->src[i];
		memset(&w->src[i], 0, sizeof(w->src[i]));
	}
	*nsources = w->n;
}

int edf_load_all(const char *first, const struct edf_loader *loader, struct edf **merged,
		 struct edf_source **sources, size_t *nsources, alps_error **err)
{
	return edf_load_all_ctx(first, loader, NULL, merged, sources, nsources, err);
}

int edf_load_all_ctx(const char *first, const struct edf_loader *loader,
		     const struct edf_context *ctx, struct edf **merged,
		     struct edf_source **sources, size_t *nsources, alps_error **err)
{
	*merged = NULL;
	if (sources)
		*sources = NULL;
	if (nsources)
		*nsources = 0;
	if (!first || !*first)
		return alps_fail(err, ALPS_E_INVALID, "empty environment name");
	struct walk *w = xzalloc(sizeof(*w));
	w->loader = loader;
	w->ctx = ctx;
	int rc = walk_visit(w, first, NULL, err);
	if (rc == 0)
		rc = walk_merge(w, merged, err);
	if (rc == 0 && sources)
		walk_sources(w, sources, nsources);
	walk_free(w);
	return rc;
}
