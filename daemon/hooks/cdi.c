/* cdi.c: parse and check one CDI spec (see cdi.h).
 *
 * The spec is read into a jansson value (JSON directly, YAML through
 * cdi_yaml_to_json) and then walked once; every string is checked where
 * it is read, so a spec that parses holds nothing alps would refuse later
 * (other than what the mount plan checks on its own). */
#include <config.h>

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "daemon/hooks/cdi.h"

static const char *const versions[] = { "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0" };

static const char *const hook_stages[] = { "prestart", "createRuntime", "createContainer",
					   "startContainer", "poststart", "poststop" };

/* Mount options alps understands; all but "ro" change nothing for a bind
 * (nosuid and nodev hold anyway). */
static const char *const mount_options[] = { "ro", "rw", "bind", "rbind", "nosuid", "nodev",
					     "noexec", "private", "rprivate", "slave", "rslave",
					     "relatime", "norelatime", "noatime", "nodiratime" };

struct walk {
	const char *file;
	alps_error **err;
};

static int bad(struct walk *w, const char *where, const char *why)
{
	return alps_fail(w->err, ALPS_E_INVALID, "CDI spec %s: %s: %s", w->file, where, why);
}

static bool in_list(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return true;
	return false;
}

static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static bool has_dotdot(const char *p)
{
	for (const char *s = p; (s = strstr(s, "..")); s += 2)
		if ((s == p || s[-1] == '/') && (s[2] == '\0' || s[2] == '/'))
			return true;
	return false;
}

/* A string field; NULL (and 0) when absent and optional. */
static int get_string(struct walk *w, const json_t *obj, const char *key, const char *where,
		      bool required, const char **out)
{
	const json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (!required)
			return 0;
		_cleanup_free_ char *why = xasprintf("\"%s\" is missing", key);
		return bad(w, where, why);
	}
	_cleanup_free_ char *at = xasprintf("%s.%s", where, key);
	if (!json_is_string(v))
		return bad(w, at, "not a string");
	const char *s = json_string_value(v);
	if (json_string_length(v) != strlen(s))
		return bad(w, at, "a NUL inside the string");
	if (strlen(s) > CDI_MAX_STRING)
		return bad(w, at, "longer than 4096 bytes");
	if (has_control(s))
		return bad(w, at, "control characters");
	*out = s;
	return 0;
}

static int get_path(struct walk *w, const json_t *obj, const char *key, const char *where,
		    bool required, const char **out)
{
	if (get_string(w, obj, key, where, required, out) < 0)
		return -1;
	if (!*out)
		return 0;
	_cleanup_free_ char *at = xasprintf("%s.%s", where, key);
	if ((*out)[0] != '/')
		return bad(w, at, "not an absolute path");
	if (has_dotdot(*out))
		return bad(w, at, "\"..\" in the path");
	return 0;
}

static int get_int(struct walk *w, const json_t *obj, const char *key, const char *where,
		   long min, long max, long *out)
{
	const json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	_cleanup_free_ char *at = xasprintf("%s.%s", where, key);
	if (!json_is_integer(v))
		return bad(w, at, "not an integer");
	json_int_t n = json_integer_value(v);
	if (n < min || n > max)
		return bad(w, at, "out of range");
	*out = (long)n;
	return 0;
}

/* An array field (absent: empty), at most CDI_MAX_ITEMS long. */
static int get_array(struct walk *w, const json_t *obj, const char *key, const char *where,
		     const json_t **out)
{
	const json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	_cleanup_free_ char *at = xasprintf("%s.%s", where, key);
	if (!json_is_array(v))
		return bad(w, at, "not a list");
	if (json_array_size(v) > CDI_MAX_ITEMS)
		return bad(w, at, "more than 1024 entries");
	*out = v;
	return 0;
}

/* A list of strings as a NULL-terminated array. */
static int get_strv(struct walk *w, const json_t *obj, const char *key, const char *where,
		    char ***out)
{
	const json_t *a;
	*out = NULL;
	if (get_array(w, obj, key, where, &a) < 0)
		return -1;
	size_t n = a ? json_array_size(a) : 0;
	char **v = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *at = xasprintf("%s.%s[%zu]", where, key, i);
		const char *s = json_string_value(json_array_get(a, i));
		if (!s || strlen(s) > CDI_MAX_STRING || has_control(s) ||
		    strlen(s) != json_string_length(json_array_get(a, i))) {
			for (size_t j = 0; j < i; j++)
				free(v[j]);
			free(v);
			return bad(w, at, "not a string of printable characters");
		}
		v[i] = xstrdup(s);
	}
	*out = v;
	return 0;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* "KEY=VALUE" with a shell-like name. */
static bool env_entry_valid(const char *s)
{
	size_t k = strcspn(s, "=");
	if (k == 0 || s[k] != '=' || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (size_t i = 0; i < k; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_'))
			return false;
	}
	return true;
}

static int parse_env(struct walk *w, const json_t *ce, const char *where, struct cdi_edits *e)
{
	char **v;
	if (get_strv(w, ce, "env", where, &v) < 0)
		return -1;
	size_t n = 0;
	while (v[n])
		n++;
	for (size_t i = 0; i < n; i++)
		if (!env_entry_valid(v[i])) {
			strv_free(v);
			_cleanup_free_ char *at = xasprintf("%s.env[%zu]", where, i);
			return bad(w, at, "not NAME=VALUE");
		}
	e->env = v;
	e->nenv = n;
	return 0;
}

static int parse_node(struct walk *w, const json_t *o, const char *where, struct cdi_node *n)
{
	const char *path, *host, *type;
	long mode = 0;
	n->major = n->minor = -1;
	if (!json_is_object(o))
		return bad(w, where, "not an object");
	if (get_path(w, o, "path", where, true, &path) < 0 ||
	    get_path(w, o, "hostPath", where, false, &host) < 0 ||
	    get_string(w, o, "type", where, false, &type) < 0 ||
	    get_int(w, o, "major", where, 0, 0xfffff, &n->major) < 0 ||
	    get_int(w, o, "minor", where, 0, 0xfffff, &n->minor) < 0 ||
	    get_int(w, o, "fileMode", where, 0, 07777, &mode) < 0)
		return -1;
	if (strncmp(path, "/dev/", 5) != 0 || !path[5])
		return bad(w, where, "a device node's path must be below /dev");
	if (type && strcmp(type, "c") && strcmp(type, "u") && strcmp(type, "b"))
		return bad(w, where, "type must be \"c\", \"u\" or \"b\"");
	n->type = type ? (type[0] == 'u' ? 'c' : type[0]) : 0;
	n->mode = (unsigned)mode;
	n->path = xstrdup(path);
	n->host_path = xstrdup(host ? host : path);
	return 0;
}

static int parse_options(struct walk *w, const json_t *o, const char *where, bool *ro)
{
	char **opts;
	if (get_strv(w, o, "options", where, &opts) < 0)
		return -1;
	int rc = 0;
	*ro = false;
	for (size_t i = 0; opts[i] && rc == 0; i++) {
		if (!in_list(opts[i], mount_options, ARRAY_SIZE(mount_options))) {
			_cleanup_free_ char *why = xasprintf("mount option \"%s\" is not supported "
							     "(ro, rw, bind, rbind, nosuid...)", opts[i]);
			rc = bad(w, where, why);
		}
		*ro = (*ro || strcmp(opts[i], "ro") == 0) && strcmp(opts[i], "rw") != 0;
	}
	strv_free(opts);
	return rc;
}

static int parse_mount(struct walk *w, const json_t *o, const char *where, struct cdi_mount *m)
{
	const char *host, *ctr, *type;
	if (!json_is_object(o))
		return bad(w, where, "not an object");
	if (get_path(w, o, "hostPath", where, true, &host) < 0 ||
	    get_path(w, o, "containerPath", where, true, &ctr) < 0 ||
	    get_string(w, o, "type", where, false, &type) < 0 ||
	    parse_options(w, o, where, &m->ro) < 0)
		return -1;
	if (type && strcmp(type, "bind") != 0)
		return bad(w, where, "only bind mounts are supported");
	m->host_path = xstrdup(host);
	m->container_path = xstrdup(ctr);
	return 0;
}

static int parse_hook(struct walk *w, const json_t *o, const char *where, struct cdi_hook *h)
{
	const char *stage, *path;
	long timeout = 0;
	if (!json_is_object(o))
		return bad(w, where, "not an object");
	if (get_string(w, o, "hookName", where, true, &stage) < 0 ||
	    get_path(w, o, "path", where, true, &path) < 0 ||
	    get_int(w, o, "timeout", where, 1, 3600, &timeout) < 0)
		return -1;
	if (!in_list(stage, hook_stages, ARRAY_SIZE(hook_stages)))
		return bad(w, where, "unknown hookName");
	if (get_strv(w, o, "args", where, &h->args) < 0)
		return -1;
	if (get_strv(w, o, "env", where, &h->env) < 0)
		return -1;
	h->stage = xstrdup(stage);
	h->path = xstrdup(path);
	h->timeout = (int)timeout;
	return 0;
}

static int parse_nodes(struct walk *w, const json_t *ce, const char *where, struct cdi_edits *e)
{
	const json_t *a;
	if (get_array(w, ce, "deviceNodes", where, &a) < 0)
		return -1;
	size_t n = a ? json_array_size(a) : 0;
	e->nodes = xcalloc(n + 1, sizeof(*e->nodes));
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *at = xasprintf("%s.deviceNodes[%zu]", where, i);
		if (parse_node(w, json_array_get(a, i), at, &e->nodes[i]) < 0)
			return -1;
		e->nnodes++;
	}
	return 0;
}

static int parse_mounts(struct walk *w, const json_t *ce, const char *where, struct cdi_edits *e)
{
	const json_t *a;
	if (get_array(w, ce, "mounts", where, &a) < 0)
		return -1;
	size_t n = a ? json_array_size(a) : 0;
	e->mounts = xcalloc(n + 1, sizeof(*e->mounts));
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *at = xasprintf("%s.mounts[%zu]", where, i);
		if (parse_mount(w, json_array_get(a, i), at, &e->mounts[i]) < 0)
			return -1;
		e->nmounts++;
	}
	return 0;
}

static int parse_hooks(struct walk *w, const json_t *ce, const char *where, struct cdi_edits *e)
{
	const json_t *a;
	if (get_array(w, ce, "hooks", where, &a) < 0)
		return -1;
	size_t n = a ? json_array_size(a) : 0;
	e->hooks = xcalloc(n + 1, sizeof(*e->hooks));
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *at = xasprintf("%s.hooks[%zu]", where, i);
		e->nhooks++;
		if (parse_hook(w, json_array_get(a, i), at, &e->hooks[i]) < 0)
			return -1;
	}
	return 0;
}

/* containerEdits of the spec or a device; absent: nothing. */
static int parse_edits(struct walk *w, const json_t *parent, const char *where,
		       struct cdi_edits *e)
{
	const json_t *ce = json_object_get(parent, "containerEdits");
	_cleanup_free_ char *at = xasprintf("%s.containerEdits", where);
	if (!ce || json_is_null(ce))
		ce = json_object();
	else
		json_incref((json_t *)ce);
	int rc = -1;
	if (!json_is_object(ce))
		bad(w, at, "not an object");
	else if (parse_env(w, ce, at, e) == 0 && parse_nodes(w, ce, at, e) == 0 &&
		 parse_mounts(w, ce, at, e) == 0 && parse_hooks(w, ce, at, e) == 0)
		rc = 0;
	json_decref((json_t *)ce);
	return rc;
}

/* ---- names ---- */

static bool alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Letters and digits first and last, extra characters inside. */
static bool name_part_valid(const char *s, size_t n, const char *extra)
{
	if (n == 0 || n > 253 || !alnum(s[0]) || !alnum(s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!alnum(s[i]) && !strchr(extra, s[i]))
			return false;
	return true;
}

/* vendor.com/class: a domain-like vendor, a class of [A-Za-z0-9_.-]. */
static bool kind_valid(const char *kind)
{
	const char *slash = strchr(kind, '/');
	if (!slash)
		return false;
	return name_part_valid(kind, (size_t)(slash - kind), ".-") &&
	       memchr(kind, '.', (size_t)(slash - kind)) &&
	       name_part_valid(slash + 1, strlen(slash + 1), "_.-");
}

static bool device_name_valid(const char *name)
{
	return name_part_valid(name, strlen(name), "_.:-");
}

bool cdi_name_valid(const char *name)
{
	const char *eq = name ? strchr(name, '=') : NULL;
	if (!eq || strlen(name) > 600)
		return false;
	_cleanup_free_ char *kind = xstrndup(name, (size_t)(eq - name));
	return kind_valid(kind) && device_name_valid(eq + 1);
}

/* ---- the spec ---- */

static int parse_device(struct walk *w, const json_t *o, size_t i, struct cdi_device *d)
{
	_cleanup_free_ char *at = xasprintf("devices[%zu]", i);
	const char *name;
	if (!json_is_object(o))
		return bad(w, at, "not an object");
	if (get_string(w, o, "name", at, true, &name) < 0)
		return -1;
	if (!device_name_valid(name))
		return bad(w, at, "the name is not letters, digits, '_', '.', ':' and '-'");
	d->name = xstrdup(name);
	if (parse_edits(w, o, at, &d->edits) < 0)
		return -1;
	if (d->edits.nenv + d->edits.nnodes + d->edits.nmounts + d->edits.nhooks == 0)
		return bad(w, at, "a device must edit the container");
	return 0;
}

static int parse_devices(struct walk *w, const json_t *root, struct cdi_spec *s)
{
	const json_t *a;
	if (get_array(w, root, "devices", "spec", &a) < 0)
		return -1;
	size_t n = a ? json_array_size(a) : 0;
	if (n == 0)
		return bad(w, "devices", "a spec needs at least one device");
	s->devices = xcalloc(n, sizeof(*s->devices));
	for (size_t i = 0; i < n; i++) {
		s->ndevices++;
		if (parse_device(w, json_array_get(a, i), i, &s->devices[i]) < 0)
			return -1;
		for (size_t j = 0; j < i; j++)
			if (strcmp(s->devices[j].name, s->devices[i].name) == 0)
				return bad(w, s->devices[i].name, "the device is defined twice");
	}
	return 0;
}

static int parse_root(struct walk *w, const json_t *root, struct cdi_spec *s)
{
	const char *version, *kind;
	if (!json_is_object(root))
		return bad(w, "spec", "not an object");
	if (get_string(w, root, "cdiVersion", "spec", true, &version) < 0 ||
	    get_string(w, root, "kind", "spec", true, &kind) < 0)
		return -1;
	if (!in_list(version, versions, ARRAY_SIZE(versions)))
		return bad(w, "cdiVersion", "not one of 0.3.0 to 0.8.0");
	if (!kind_valid(kind))
		return bad(w, "kind", "not vendor.com/class");
	s->version = xstrdup(version);
	s->kind = xstrdup(kind);
	if (parse_devices(w, root, s) < 0)
		return -1;
	return parse_edits(w, root, "spec", &s->edits);
}

int cdi_spec_parse(const char *text, size_t len, bool yaml, const char *file,
		   struct cdi_spec **out, alps_error **err)
{
	struct walk w = { .file = file, .err = err };
	*out = NULL;
	if (len > CDI_MAX_FILE)
		return bad(&w, "spec", "larger than 1 MiB");
	json_t *root;
	if (yaml) {
		root = cdi_yaml_to_json(text, len, err);
		if (!root)
			return alps_error_prefix(err, "CDI spec %s", file);
	} else {
		json_error_t jerr;
		root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
		if (!root)
			return alps_fail(err, ALPS_E_INVALID, "CDI spec %s:%d:%d: %s", file, jerr.line,
					 jerr.column, jerr.text);
	}
	struct cdi_spec *s = xzalloc(sizeof(*s));
	s->file = xstrdup(file);
	int rc = parse_root(&w, root, s);
	json_decref(root);
	if (rc < 0) {
		cdi_spec_free(s);
		return -1;
	}
	*out = s;
	return 0;
}

void cdi_edits_clear(struct cdi_edits *e)
{
	strv_free(e->env);
	for (size_t i = 0; i < e->nnodes; i++) {
		free(e->nodes[i].path);
		free(e->nodes[i].host_path);
	}
	free(e->nodes);
	for (size_t i = 0; i < e->nmounts; i++) {
		free(e->mounts[i].host_path);
		free(e->mounts[i].container_path);
	}
	free(e->mounts);
	for (size_t i = 0; i < e->nhooks; i++) {
		free(e->hooks[i].stage);
		free(e->hooks[i].path);
		strv_free(e->hooks[i].args);
		strv_free(e->hooks[i].env);
	}
	free(e->hooks);
	memset(e, 0, sizeof(*e));
}

void cdi_spec_free(struct cdi_spec *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->ndevices; i++) {
		free(s->devices[i].name);
		cdi_edits_clear(&s->devices[i].edits);
	}
	free(s->devices);
	cdi_edits_clear(&s->edits);
	free(s->file);
	free(s->version);
	free(s->kind);
	free(s);
}
