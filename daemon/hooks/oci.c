/* oci.c: OCI hooks from hooks.d directories and CDI specs: parsing and
 * choosing them for a job (see oci.h; running them is oci_run.c). */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/hooks/cdi.h"
#include "daemon/hooks/hooks.h"
#include "daemon/hooks/oci.h"

#define OCI_MAX_LIST 256        /* args, env, stages, commands, annotations */
#define OCI_MAX_HOOKS 256       /* hooks of one job */

static const struct {
	const char *name;
	unsigned stage;
} stage_names[] = {
	{ "prestart", OCI_STAGE_CREATE },       { "createRuntime", OCI_STAGE_CREATE },
	{ "createContainer", OCI_STAGE_CREATE }, { "startContainer", OCI_STAGE_CREATE },
	{ "poststart", OCI_STAGE_CREATE },      { "poststop", OCI_STAGE_POSTSTOP },
};

static unsigned stage_of(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(stage_names); i++)
		if (strcmp(stage_names[i].name, name) == 0)
			return stage_names[i].stage;
	return 0;
}

static int bad(alps_error **err, const char *name, const char *where, const char *why)
{
	return alps_fail(err, ALPS_E_INVALID, "OCI hook %s: %s: %s", name, where, why);
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* A list of printable strings (absent: empty). */
static int get_strv(const json_t *obj, const char *key, const char *name, char ***out,
		    alps_error **err)
{
	const json_t *a = json_object_get(obj, key);
	*out = NULL;
	if (a && !json_is_array(a))
		return bad(err, name, key, "not a list");
	size_t n = a ? json_array_size(a) : 0;
	if (n > OCI_MAX_LIST)
		return bad(err, name, key, "too many entries");
	char **v = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		const json_t *s = json_array_get(a, i);
		const char *str = json_string_value(s);
		if (!str || strlen(str) != json_string_length(s) || strlen(str) > 4096) {
			strv_free(v);
			return bad(err, name, key, "entries must be strings without NUL");
		}
		v[i] = xstrdup(str);
	}
	*out = v;
	return 0;
}

/* Whether some annotation's key matches kre and its value vre; a broken
 * expression fails whatever the annotations. */
static int match_pair(const char *kre, const char *vre, const struct edf *edf, bool *match)
{
	regex_t k, v;
	if (regcomp(&k, kre, REG_EXTENDED | REG_NOSUB) != 0)
		return -1;
	if (regcomp(&v, vre, REG_EXTENDED | REG_NOSUB) != 0) {
		regfree(&k);
		return -1;
	}
	for (size_t i = 0; edf && i < edf->nannotations; i++)
		if (regexec(&k, edf->annotations[i].key, 0, NULL, 0) == 0 &&
		    regexec(&v, edf->annotations[i].value, 0, NULL, 0) == 0)
			*match = true;
	regfree(&k);
	regfree(&v);
	return 0;
}

/* "annotations": { KEY-REGEX: VALUE-REGEX }: some annotation matches one. */
static int when_annotations(const json_t *ann, const char *name, const struct edf *edf,
			    bool *match, alps_error **err)
{
	const char *kre;
	const json_t *vre;
	if (!json_is_object(ann))
		return ann ? bad(err, name, "when.annotations", "not an object") : 0;
	json_object_foreach((json_t *)ann, kre, vre) {
		if (!json_is_string(vre))
			return bad(err, name, "when.annotations", "values must be strings");
		if (match_pair(kre, json_string_value(vre), edf, match) < 0)
			return bad(err, name, "when.annotations", "not a regular expression");
	}
	return 0;
}

/* Whether the hook applies.  "commands" match the container's command,
 * which a prepared job does not have yet: they never select a hook. */
static int parse_when(const json_t *root, const char *name, const struct oci_when_ctx *ctx,
		      bool *match, alps_error **err)
{
	const json_t *when = json_object_get(root, "when");
	*match = false;
	if (!json_is_object(when))
		return bad(err, name, "when", "missing, or not an object");
	const json_t *always = json_object_get(when, "always");
	const json_t *binds = json_object_get(when, "hasBindMounts");
	if ((always && !json_is_boolean(always)) || (binds && !json_is_boolean(binds)))
		return bad(err, name, "when", "always and hasBindMounts are true or false");
	char **cmds;
	if (get_strv(when, "commands", name, &cmds, err) < 0)
		return -1;
	strv_free(cmds);
	*match = json_is_true(always) || (json_is_true(binds) && ctx->has_binds);
	return when_annotations(json_object_get(when, "annotations"), name, ctx->edf, match, err);
}

static int parse_stages(const json_t *root, const char *name, unsigned *stages,
			alps_error **err)
{
	char **v;
	*stages = 0;
	if (get_strv(root, "stages", name, &v, err) < 0)
		return -1;
	int rc = 0;
	for (size_t i = 0; v[i] && rc == 0; i++) {
		unsigned s = stage_of(v[i]);
		if (!s)
			rc = bad(err, name, "stages", "unknown stage");
		*stages |= s;
	}
	strv_free(v);
	if (rc == 0 && !*stages)
		rc = bad(err, name, "stages", "no stage");
	return rc;
}

static int parse_hook_obj(const json_t *h, const char *name, int default_timeout_s,
			  struct oci_hook *out, alps_error **err)
{
	const char *path = json_string_value(json_object_get(h, "path"));
	const json_t *t = json_object_get(h, "timeout");
	if (!json_is_object(h))
		return bad(err, name, "hook", "missing, or not an object");
	if (!path || path[0] != '/' || strlen(path) > 4096)
		return bad(err, name, "hook.path", "not an absolute path");
	if (t && (!json_is_integer(t) || json_integer_value(t) < 1 ||
		  json_integer_value(t) > 3600))
		return bad(err, name, "hook.timeout", "not 1 to 3600 seconds");
	out->path = xstrdup(path);
	out->timeout_s = t ? (int)json_integer_value(t) : default_timeout_s;
	if (get_strv(h, "args", name, &out->args, err) < 0 ||
	    get_strv(h, "env", name, &out->env, err) < 0)
		return -1;
	return 0;
}

int oci_hook_parse(const char *text, size_t len, const char *name, int default_timeout_s,
		   const struct oci_when_ctx *ctx, struct oci_hook *out, bool *when_matches,
		   alps_error **err)
{
	json_error_t jerr;
	memset(out, 0, sizeof(*out));
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return alps_fail(err, ALPS_E_INVALID, "OCI hook %s:%d:%d: %s", name, jerr.line,
				 jerr.column, jerr.text);
	const char *version = json_string_value(json_object_get(root, "version"));
	int rc = 0;
	if (!version || strcmp(version, "1.0.0") != 0)
		rc = bad(err, name, "version", "only \"1.0.0\" is known");
	else if (parse_hook_obj(json_object_get(root, "hook"), name, default_timeout_s, out,
				err) < 0 || parse_stages(root, name, &out->stages, err) < 0 ||
		 parse_when(root, name, ctx, when_matches, err) < 0)
		rc = -1;
	json_decref(root);
	if (rc < 0)
		oci_hook_clear(out);
	else
		out->name = xstrdup(name);
	return rc;
}

void oci_hook_clear(struct oci_hook *h)
{
	free(h->name);
	free(h->path);
	strv_free(h->args);
	strv_free(h->env);
	memset(h, 0, sizeof(*h));
}

void oci_hooks_free(struct oci_hooks *hooks)
{
	if (!hooks)
		return;
	for (size_t i = 0; i < hooks->n; i++)
		oci_hook_clear(&hooks->v[i]);
	free(hooks->v);
	free(hooks);
}

static int push(struct oci_hooks **hooks, struct oci_hook *h, alps_error **err)
{
	if (!*hooks)
		*hooks = xzalloc(sizeof(**hooks));
	if ((*hooks)->n >= OCI_MAX_HOOKS) {
		oci_hook_clear(h);
		return alps_fail(err, ALPS_E_LIMIT, "more than %d OCI hooks", OCI_MAX_HOOKS);
	}
	(*hooks)->v = xreallocarray((*hooks)->v, (*hooks)->n + 1, sizeof(*(*hooks)->v));
	(*hooks)->v[(*hooks)->n++] = *h;
	return 0;
}

int oci_hooks_add_cdi(struct oci_hooks **hooks, const struct cdi_hook *c, int default_timeout_s,
		      alps_error **err)
{
	struct oci_hook h = { 0 };
	size_t na = 0, ne = 0;
	while (c->args && c->args[na])
		na++;
	while (c->env && c->env[ne])
		ne++;
	h.name = xasprintf("CDI %s hook %s", c->stage, c->path);
	h.path = xstrdup(c->path);
	h.args = xcalloc(na + 1, sizeof(char *));
	for (size_t i = 0; i < na; i++)
		h.args[i] = xstrdup(c->args[i]);
	h.env = xcalloc(ne + 1, sizeof(char *));
	for (size_t i = 0; i < ne; i++)
		h.env[i] = xstrdup(c->env[i]);
	h.timeout_s = c->timeout > 0 ? c->timeout : default_timeout_s;
	h.stages = stage_of(c->stage);
	return push(hooks, &h, err);
}

/* ---- hooks.d directories ---- */

struct hook_file {
	char *name;             /* file name: the order, and what overrides */
	char *path;
};

static int by_file_name(const void *a, const void *b)
{
	return strcmp(((const struct hook_file *)a)->name, ((const struct hook_file *)b)->name);
}

static void collect_dir(const char *dir, struct hook_file **files, size_t *n)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d)) && *n < OCI_MAX_HOOKS) {
		if (de->d_name[0] == '.' || !str_has_suffix(de->d_name, ".json"))
			continue;
		size_t i = 0;
		while (i < *n && strcmp((*files)[i].name, de->d_name) != 0)
			i++;
		if (i == *n) {
			*files = xreallocarray(*files, *n + 1, sizeof(**files));
			(*files)[(*n)++] = (struct hook_file){ xstrdup(de->d_name), NULL };
		}
		free((*files)[i].path);
		(*files)[i].path = xasprintf("%s/%s", dir, de->d_name);
	}
}

/* Root's file, writable by no one else, at most OCI_HOOK_MAX_FILE. */
static char *read_hook_file(const char *path, size_t *len, alps_error **err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		alps_fail_errno(err, "OCI hook %s", path);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) ||
	    st.st_size > OCI_HOOK_MAX_FILE) {
		alps_fail(err, ALPS_E_PERMISSION, "OCI hook %s: not a file of root's that only root "
			  "can write, of at most 64 KiB", path);
		return NULL;
	}
	char *buf = xmalloc((size_t)st.st_size + 1);
	ssize_t got = pread(fd, buf, (size_t)st.st_size, 0);
	if (got < 0) {
		free(buf);
		alps_fail_errno(err, "reading OCI hook %s", path);
		return NULL;
	}
	*len = (size_t)got;
	return buf;
}

/* One file: a hook that applies is added; a broken file is logged and
 * left out (a site's other hooks still run). */
static int select_file(const struct config *cfg, const char *path,
		       const struct oci_when_ctx *ctx, struct oci_hooks **hooks, alps_error **err)
{
	alps_error *e = NULL;
	size_t len = 0;
	_cleanup_free_ char *text = read_hook_file(path, &len, &e);
	struct oci_hook h;
	bool match = false;
	if (!text || oci_hook_parse(text, len, path, (int)cfg->oci_hook_timeout_s, ctx, &h, &match,
				    &e) < 0) {
		log_warn("%s (left out)", e->msg);
		alps_error_free(e);
		return 0;
	}
	if (!match) {
		oci_hook_clear(&h);
		return 0;
	}
	return push(hooks, &h, err);
}

int oci_hooks_select(const struct config *cfg, const struct edf *edf, const struct hook_job *hj,
		     struct oci_hooks **hooks, alps_error **err)
{
	struct hook_file *files = NULL;
	size_t n = 0;
	for (size_t i = 0; i < cfg->oci_hook_dirs.n; i++)
		collect_dir(cfg->oci_hook_dirs.v[i], &files, &n);
	if (n)
		qsort(files, n, sizeof(*files), by_file_name);
	struct oci_when_ctx ctx = { .edf = edf,
				    .has_binds = (edf && edf->nmounts) || hj->nmounts };
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		if (rc == 0)
			rc = select_file(cfg, files[i].path, &ctx, hooks, err);
		free(files[i].name);
		free(files[i].path);
	}
	free(files);
	return rc;
}
