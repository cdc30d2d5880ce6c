/* cdi_registry.c: the specs of the CDI directories, and device lookup
 * (cdi_registry_load, cdi_resolve in cdi.h). */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/hooks/cdi.h"

struct cdi_registry {
	char **dirs;
	size_t ndirs;
	struct cdi_spec **specs;        /* in load order; later ones win */
	bool *used;                     /* the spec's own edits were handed out */
	size_t nspecs;
	char **problems;                /* specs left out, and why */
	size_t nproblems;
};

static void add_problem(struct cdi_registry *reg, const char *msg)
{
	log_warn("%s", msg);
	if (reg->nproblems >= 16)
		return;
	reg->problems = xreallocarray(reg->problems, reg->nproblems + 1, sizeof(char *));
	reg->problems[reg->nproblems++] = xstrdup(msg);
}

/* A spec file root wrote: not a link, owned by root, writable by no one
 * else, at most CDI_MAX_FILE bytes.  Caller frees *text. */
static int read_spec(const char *path, char **text, size_t *len, alps_error **err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return alps_fail_errno(err, "CDI spec %s", path);
	if (!S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022))
		return alps_fail(err, ALPS_E_PERMISSION, "CDI spec %s: not a regular file of root's "
				 "that only root can write", path);
	if (st.st_size > CDI_MAX_FILE)
		return alps_fail(err, ALPS_E_LIMIT, "CDI spec %s: larger than 1 MiB", path);
	char *buf = xmalloc((size_t)st.st_size + 1);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	*text = buf;
	*len = got;
	return 0;
}

static void load_file(struct cdi_registry *reg, const char *path, bool yaml)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	struct cdi_spec *spec = NULL;
	alps_error *err = NULL;
	if (read_spec(path, &text, &len, &err) < 0 ||
	    cdi_spec_parse(text, len, yaml, path, &spec, &err) < 0) {
		add_problem(reg, err->msg);
		alps_error_free(err);
		return;
	}
	reg->specs = xreallocarray(reg->specs, reg->nspecs + 1, sizeof(*reg->specs));
	reg->used = xreallocarray(reg->used, reg->nspecs + 1, sizeof(*reg->used));
	reg->used[reg->nspecs] = false;
	reg->specs[reg->nspecs++] = spec;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int spec_file(const struct dirent *d)
{
	return d->d_name[0] != '.' &&
	       (str_has_suffix(d->d_name, ".json") || str_has_suffix(d->d_name, ".yaml") ||
		str_has_suffix(d->d_name, ".yml"));
}

static void load_dir(struct cdi_registry *reg, const char *dir)
{
	struct dirent **names = NULL;
	int n = scandir(dir, &names, spec_file, by_name);
	if (n < 0) {
		if (errno != ENOENT) {
			_cleanup_free_ char *msg = xasprintf("CDI directory %s: %s", dir, strerror(errno));
			add_problem(reg, msg);
		}
		return;
	}
	for (int i = 0; i < n; i++) {
		if (i < CDI_MAX_FILES) {
			_cleanup_free_ char *path = xasprintf("%s/%s", dir, names[i]->d_name);
			load_file(reg, path, !str_has_suffix(names[i]->d_name, ".json"));
		}
		free(names[i]);
	}
	free(names);
}

struct cdi_registry *cdi_registry_load(const char *const *dirs, size_t ndirs)
{
	struct cdi_registry *reg = xzalloc(sizeof(*reg));
	reg->dirs = xcalloc(ndirs + 1, sizeof(char *));
	for (size_t i = 0; i < ndirs; i++) {
		reg->dirs[reg->ndirs++] = xstrdup(dirs[i]);
		load_dir(reg, dirs[i]);
	}
	return reg;
}

void cdi_registry_free(struct cdi_registry *reg)
{
	if (!reg)
		return;
	for (size_t i = 0; i < reg->nspecs; i++)
		cdi_spec_free(reg->specs[i]);
	for (size_t i = 0; i < reg->ndirs; i++)
		free(reg->dirs[i]);
	for (size_t i = 0; i < reg->nproblems; i++)
		free(reg->problems[i]);
	free(reg->specs);
	free(reg->used);
	free(reg->dirs);
	free(reg->problems);
	free(reg);
}

/* ---- edits ---- */

static char **strv_dup(char **v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	char **out = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		out[i] = xstrdup(v[i]);
	return out;
}

/* Append a copy of from's edits to to. */
static void edits_append(struct cdi_edits *to, const struct cdi_edits *from)
{
	to->env = xreallocarray(to->env, to->nenv + from->nenv + 1, sizeof(char *));
	for (size_t i = 0; i < from->nenv; i++)
		to->env[to->nenv++] = xstrdup(from->env[i]);
	to->env[to->nenv] = NULL;
	to->nodes = xreallocarray(to->nodes, to->nnodes + from->nnodes + 1, sizeof(*to->nodes));
	for (size_t i = 0; i < from->nnodes; i++) {
		struct cdi_node *n = &to->nodes[to->nnodes++];
		*n = from->nodes[i];
		n->path = xstrdup(n->path);
		n->host_path = xstrdup(n->host_path);
	}
	to->mounts = xreallocarray(to->mounts, to->nmounts + from->nmounts + 1, sizeof(*to->mounts));
	for (size_t i = 0; i < from->nmounts; i++) {
		struct cdi_mount *m = &to->mounts[to->nmounts++];
		*m = from->mounts[i];
		m->host_path = xstrdup(m->host_path);
		m->container_path = xstrdup(m->container_path);
	}
	to->hooks = xreallocarray(to->hooks, to->nhooks + from->nhooks + 1, sizeof(*to->hooks));
	for (size_t i = 0; i < from->nhooks; i++) {
		struct cdi_hook *h = &to->hooks[to->nhooks++];
		*h = from->hooks[i];
		h->stage = xstrdup(h->stage);
		h->path = xstrdup(h->path);
		h->args = strv_dup(h->args);
		h->env = strv_dup(h->env);
	}
}

/* The devices of kind named name in the last spec that has one. */
static struct cdi_spec *find(struct cdi_registry *reg, const char *kind, const char *name,
			     size_t *spec_index, const struct cdi_device **dev)
{
	for (size_t i = reg->nspecs; i-- > 0;) {
		struct cdi_spec *s = reg->specs[i];
		if (strcmp(s->kind, kind) != 0)
			continue;
		for (size_t j = 0; j < s->ndevices; j++)
			if (strcmp(s->devices[j].name, name) == 0) {
				*spec_index = i;
				*dev = &s->devices[j];
				return s;
			}
	}
	return NULL;
}

static void add_spec_edits(struct cdi_registry *reg, size_t i, struct cdi_edits *out)
{
	if (reg->used[i])
		return;
	reg->used[i] = true;
	edits_append(out, &reg->specs[i]->edits);
}

/* "all" without a device of that name: every device of every spec of the
 * kind (later specs' devices of the same name win). */
static bool resolve_all(struct cdi_registry *reg, const char *kind, struct cdi_edits *out)
{
	bool any = false;
	for (size_t i = 0; i < reg->nspecs; i++) {
		struct cdi_spec *s = reg->specs[i];
		if (strcmp(s->kind, kind) != 0)
			continue;
		for (size_t j = 0; j < s->ndevices; j++) {
			size_t at;
			const struct cdi_device *d;
			if (find(reg, kind, s->devices[j].name, &at, &d) != s)
				continue;
			add_spec_edits(reg, i, out);
			edits_append(out, &d->edits);
			any = true;
		}
	}
	return any;
}

static int unknown(struct cdi_registry *reg, const char *name, alps_error **err)
{
	_cleanup_free_ char *dirs = xstrdup("");
	for (size_t i = 0; i < reg->ndirs; i++) {
		char *next = xasprintf("%s%s%s", dirs, i ? ", " : "", reg->dirs[i]);
		free(dirs);
		dirs = next;
	}
	_cleanup_free_ char *files = xstrdup("");
	for (size_t i = 0; i < reg->nspecs; i++) {
		char *next = xasprintf("%s%s%s", files, i ? ", " : "", reg->specs[i]->file);
		free(files);
		files = next;
	}
	_cleanup_free_ char *esc = log_escape(name, 200);
	return alps_fail(err, ALPS_E_NOT_FOUND, "CDI device %s is in no spec (searched %s: %s)%s%s",
			 esc, dirs, reg->nspecs ? files : "no specs",
			 reg->nproblems ? "; left out: " : "",
			 reg->nproblems ? reg->problems[0] : "");
}

int cdi_resolve(struct cdi_registry *reg, const char *name, struct cdi_edits *out,
		alps_error **err)
{
	if (!cdi_name_valid(name)) {
		_cleanup_free_ char *esc = log_escape(name, 200);
		return alps_fail(err, ALPS_E_INVALID, "\"%s\" is not a CDI device name "
				 "(vendor.com/class=name)", esc);
	}
	const char *eq = strchr(name, '=');
	_cleanup_free_ char *kind = xstrndup(name, (size_t)(eq - name));
	size_t at;
	const struct cdi_device *dev;
	if (find(reg, kind, eq + 1, &at, &dev)) {
		add_spec_edits(reg, at, out);
		edits_append(out, &dev->edits);
		return 0;
	}
	if (strcmp(eq + 1, "all") == 0 && resolve_all(reg, kind, out))
		return 0;
	return unknown(reg, name, err);
}
