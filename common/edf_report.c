/* edf_report.c: warnings and the JSON form of an EDF (see edf.h). */
#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edf.h"
#include "edf_impl.h"
#include "expand.h"
#include "log.h"

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
	"com.hooks.amd.enabled",
	"com.hooks.mpi.enabled",
	"com.alps.slurm.rank_env",
	"com.alps.slurm.master_env",
	"com.alps.slurm.placement_env",
	"com.alps.slurm.affinity",
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

static const struct edf_var *annotation(const struct edf *e, const char *key)
{
	for (size_t i = 0; i < e->nannotations; i++)
		if (strcmp(e->annotations[i].key, key) == 0)
			return &e->annotations[i];
	return NULL;
}

/* Hook combinations known to fail or to do nothing (doc/hooks.md). */
static void warn_hooks(const struct edf *e, struct warns *w)
{
	const struct edf_var *nccl = annotation(e, "com.hooks.aws_ofi_nccl.enabled");
	const struct edf_var *cxi = annotation(e, "com.hooks.cxi.enabled");
	const struct edf_var *ssh = annotation(e, "com.hooks.ssh.enabled");
	bool nccl_on = nccl && strcmp(nccl->value, "true") == 0;
	if (nccl_on && cxi && strcmp(cxi->value, "false") == 0)
		warn(w, &cxi->loc, "the aws_ofi_nccl hook needs the CXI hook: prepare refuses "
		     "turning CXI off with it on");
	if (ssh && strcmp(ssh->value, "true") == 0)
		warn(w, &ssh->loc, "the SSH hook is not implemented: prepare refuses it");
	for (size_t i = 0; i < e->nannotations && !(ssh && strcmp(ssh->value, "true") == 0); i++)
		if (str_has_prefix(e->annotations[i].key, "com.hooks.ssh.") &&
		    &e->annotations[i] != ssh) {
			warn(w, &e->annotations[i].loc, "ignored: the SSH hook is not on");
			break;
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
	warn_hooks(e, &w);
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
	unsigned bit;
	const char *name;
	for (size_t i = 0; (name = mount_flag_at(i, &bit)); i++)
		if (m->flags & bit)
			json_array_append_new(flags, json_string(name));
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
	json_t *devices = json_array();
	for (size_t i = 0; i < e->ndevices; i++)
		json_array_append_new(devices, jstr(e->devices[i].value));
	json_object_set_new(o, "devices", devices);
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

