/* hooks.c: a job's host integration as data (see hooks.h): CDI devices,
 * then the built-in hooks, then the OCI hooks that apply. */
#include <config.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/edf.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/hooks/cdi.h"
#include "daemon/hooks/hooks.h"
#include "daemon/hooks/oci.h"
#include "daemon/job/jobenv.h"

#define HOOK_MAX_ITEMS 4096     /* devices, mounts, variables of one job */

int hook_add_device(struct hook_job *hj, const char *host, const char *path, alps_error **err)
{
	for (size_t i = 0; i < hj->ndevices; i++) {
		if (strcmp(hj->devices[i].path, path) != 0)
			continue;
		if (strcmp(hj->devices[i].host, host) == 0)
			return 0;       /* two devices of a spec may share a node */
		return alps_fail(err, ALPS_E_CONFLICT, "device %s is both %s and %s", path,
				 hj->devices[i].host, host);
	}
	if (hj->ndevices >= HOOK_MAX_ITEMS)
		return alps_fail(err, ALPS_E_LIMIT, "more than %d device nodes", HOOK_MAX_ITEMS);
	hj->devices = xreallocarray(hj->devices, hj->ndevices + 1, sizeof(*hj->devices));
	hj->devices[hj->ndevices++] = (struct job_device){ xstrdup(host), xstrdup(path) };
	return 0;
}

int hook_add_mount(struct hook_job *hj, const char *host, const char *path, bool ro,
		   alps_error **err)
{
	for (size_t i = 0; i < hj->nmounts; i++) {
		struct hook_mount *m = &hj->mounts[i];
		if (strcmp(m->path, path) != 0)
			continue;
		if (strcmp(m->host, host) == 0) {
			m->ro = m->ro && ro;
			return 0;
		}
		return alps_fail(err, ALPS_E_CONFLICT, "%s is both %s and %s", path, m->host, host);
	}
	if (hj->nmounts >= HOOK_MAX_ITEMS)
		return alps_fail(err, ALPS_E_LIMIT, "more than %d mounts", HOOK_MAX_ITEMS);
	hj->mounts = xreallocarray(hj->mounts, hj->nmounts + 1, sizeof(*hj->mounts));
	hj->mounts[hj->nmounts++] = (struct hook_mount){ xstrdup(host), xstrdup(path), ro };
	return 0;
}

void hook_add_env(struct hook_job *hj, const char *kv)
{
	hj->env = xreallocarray(hj->env, hj->nenv + 2, sizeof(char *));
	hj->env[hj->nenv++] = xstrdup(kv);
	hj->env[hj->nenv] = NULL;
}

int hook_add_lib(struct hook_job *hj, const char *host, const char *name, alps_error **err)
{
	for (size_t i = 0; i < hj->nlibs; i++) {
		if (strcmp(hj->libs[i].name, name) != 0)
			continue;
		if (strcmp(hj->libs[i].host, host) == 0)
			return 0;
		return alps_fail(err, ALPS_E_CONFLICT, "the injected library %s is both %s and %s",
				 name, hj->libs[i].host, host);
	}
	if (hj->nlibs >= HOOK_MAX_ITEMS)
		return alps_fail(err, ALPS_E_LIMIT, "more than %d libraries", HOOK_MAX_ITEMS);
	hj->libs = xreallocarray(hj->libs, hj->nlibs + 1, sizeof(*hj->libs));
	hj->libs[hj->nlibs++] = (struct hook_lib){ xstrdup(host), xstrdup(name) };
	return 0;
}

void hook_add_what(struct hook_job *hj, const char *what)
{
	hj->what = xreallocarray(hj->what, hj->nwhat + 1, sizeof(char *));
	hj->what[hj->nwhat++] = xstrdup(what);
}

/* A CDI device's edits into the job.  Its hooks run with the OCI hooks. */
static int add_cdi_edits(struct hook_job *hj, const struct cdi_edits *e, int timeout_s,
			 alps_error **err)
{
	for (size_t i = 0; i < e->nnodes; i++)
		if (hook_add_device(hj, e->nodes[i].host_path, e->nodes[i].path, err) < 0)
			return -1;
	for (size_t i = 0; i < e->nmounts; i++)
		if (hook_add_mount(hj, e->mounts[i].host_path, e->mounts[i].container_path,
				   e->mounts[i].ro, err) < 0)
			return -1;
	for (size_t i = 0; i < e->nenv; i++)
		hook_add_env(hj, e->env[i]);
	for (size_t i = 0; i < e->nhooks; i++)
		if (oci_hooks_add_cdi(&hj->oci, &e->hooks[i], timeout_s, err) < 0)
			return -1;
	return 0;
}

/* The EDF's devices: CDI names only.  A /dev path would let a user pick
 * any node of the host; the site lists nodes in CDI specs instead. */
static int add_cdi(const struct config *cfg, const struct edf *edf, struct hook_job *hj,
		   alps_error **err)
{
	if (!edf || edf->ndevices == 0)
		return 0;
	struct cdi_registry *reg = cdi_registry_load((const char *const *)cfg->cdi_dirs.v,
						     cfg->cdi_dirs.n);
	struct cdi_edits e = { 0 };
	int rc = 0;
	for (size_t i = 0; i < edf->ndevices && rc == 0; i++) {
		const struct edf_string *d = &edf->devices[i];
		if (d->value[0] == '/')
			rc = alps_fail(err, ALPS_E_INVALID, "%s:%d:%d: %s: device paths are not "
				       "accepted; name a CDI device (vendor.com/class=name)",
				       d->loc.file, d->loc.line, d->loc.col, d->loc.key);
		else if (cdi_resolve(reg, d->value, &e, err) < 0)
			rc = alps_error_prefix(err, "%s:%d:%d: %s", d->loc.file, d->loc.line,
					       d->loc.col, d->loc.key);
		else {
			_cleanup_free_ char *w = xasprintf("cdi %s", d->value);
			hook_add_what(hj, w);
		}
	}
	if (rc == 0)
		rc = add_cdi_edits(hj, &e, (int)cfg->oci_hook_timeout_s, err);
	cdi_edits_clear(&e);
	cdi_registry_free(reg);
	return rc;
}

/* The image says it brings its own network stack: the CXI hook puts the
 * host's first, which is what such images are built to avoid. */
static void check_image(struct hook_job *hj, const char *image_config)
{
	bool cxi = false;
	for (size_t i = 0; i < hj->nwhat; i++)
		cxi = cxi || strcmp(hj->what[i], "cxi") == 0;
	json_error_t jerr;
	json_t *c = cxi && image_config ? json_loads(image_config, 0, &jerr) : NULL;
	json_t *labels = json_object_get(json_object_get(c, "config"), "Labels");
	const char *v = json_string_value(json_object_get(labels, HOOKS_LABEL_OWN_STACK));
	if (v && strcmp(v, "bundled") == 0) {
		hj->warnings = xreallocarray(hj->warnings, hj->nwarnings + 1, sizeof(char *));
		hj->warnings[hj->nwarnings++] = xstrdup(
			"the image ships its own network stack (label " HOOKS_LABEL_OWN_STACK
			"=bundled) and the CXI hook is on: the host's libfabric comes first; set "
			"com.hooks.cxi.enabled = \"false\" to use the image's");
	}
	json_decref(c);
}

int hooks_job_resolve(const struct config *cfg, const struct edf *edf, const char *image_config,
		      struct hook_job **out, alps_error **err)
{
	struct hook_job *hj = xzalloc(sizeof(*hj));
	*out = NULL;
	hj->annotations = oci_annotations(edf);
	hj->runs = json_array();
	uint64_t t0 = now_monotonic_ms();
	if (add_cdi(cfg, edf, hj, err) < 0 || hooks_builtin(cfg, edf, hj, err) < 0 ||
	    oci_hooks_select(cfg, edf, hj, &hj->oci, err) < 0) {
		hooks_job_free(hj);
		return -1;
	}
	check_image(hj, image_config);
	uint64_t ms = now_monotonic_ms() - t0;
	for (size_t i = 0; i < hj->nwhat; i++) {
		log_info("host integration: %s", hj->what[i]);
		bool warned = hj->nwarnings && strcmp(hj->what[i], "cxi") == 0;
		hook_record(hj->runs, hj->what[i], warned ? "warned" : "ok", ms,
			    warned ? hj->warnings[0] : "");
	}
	*out = hj;
	return 0;
}

void hooks_job_free(struct hook_job *hj)
{
	if (!hj)
		return;
	for (size_t i = 0; i < hj->ndevices; i++) {
		free((char *)hj->devices[i].host);
		free((char *)hj->devices[i].path);
	}
	for (size_t i = 0; i < hj->nmounts; i++) {
		free(hj->mounts[i].host);
		free(hj->mounts[i].path);
	}
	for (size_t i = 0; i < hj->nenv; i++)
		free(hj->env[i]);
	for (size_t i = 0; i < hj->nwhat; i++)
		free(hj->what[i]);
	for (size_t i = 0; i < hj->nlibs; i++) {
		free(hj->libs[i].host);
		free(hj->libs[i].name);
	}
	free(hj->libs);
	for (size_t i = 0; i < hj->nwarnings; i++)
		free(hj->warnings[i]);
	free(hj->warnings);
	free(hj->devices);
	free(hj->mounts);
	free(hj->env);
	free(hj->what);
	free(hj->lib_dir);
	oci_hooks_free(hj->oci);
	json_decref(hj->annotations);
	json_decref(hj->runs);
	free(hj);
}

/* ---- the environment ---- */

/* The value of key in a list of "K=V" strings (the image's), or NULL. */
static const char *image_value(json_t *image_env, const char *key)
{
	size_t i, klen = strlen(key);
	json_t *v;
	json_array_foreach(image_env, i, v) {
		const char *s = json_string_value(v);
		if (s && strncmp(s, key, klen) == 0 && s[klen] == '=')
			return s + klen + 1;
	}
	return NULL;
}

/* lib_dir first on the image's LD_LIBRARY_PATH, and on the EDF's if it
 * sets one: the host's libraries win over the image's. */
static void prepend_lib_dir(const struct hook_job *hj, json_t *j, json_t *pairs)
{
	const char *img = image_value(json_object_get(j, "image_env"), "LD_LIBRARY_PATH");
	_cleanup_free_ char *v = img && *img ? xasprintf("%s:%s", hj->lib_dir, img)
					     : xstrdup(hj->lib_dir);
	json_array_append_new(pairs, json_pack("[s, s]", "LD_LIBRARY_PATH", v));
}

static void fix_edf_ld_path(const struct hook_job *hj, json_t *edf_env)
{
	size_t i;
	json_t *pair;
	json_array_foreach(edf_env, i, pair) {
		const char *k = json_string_value(json_array_get(pair, 0));
		const char *v = json_string_value(json_array_get(pair, 1));
		if (!k || !v || strcmp(k, "LD_LIBRARY_PATH") != 0 || !*v)
			continue;
		_cleanup_free_ char *nv = xasprintf("%s:%s", hj->lib_dir, v);
		json_array_set_new(pair, 1, json_string(nv));
	}
}

/* The hooks' variables, then LD_LIBRARY_PATH, as [name, value] pairs. */
static json_t *hook_pairs(const struct hook_job *hj, json_t *j)
{
	json_t *pairs = json_array();
	for (size_t i = 0; i < hj->nenv; i++) {
		const char *eq = strchr(hj->env[i], '=');
		_cleanup_free_ char *k = xstrndup(hj->env[i], (size_t)(eq - hj->env[i]));
		json_array_append_new(pairs, json_pack("[s, s]", k, eq + 1));
	}
	if (hj->lib_dir)
		prepend_lib_dir(hj, j, pairs);
	return pairs;
}

char *hooks_job_env_json(const struct hook_job *hj, char *env_json)
{
	json_error_t jerr;
	json_t *poststop = oci_hooks_to_json(hj ? hj->oci : NULL, OCI_STAGE_POSTSTOP);
	bool any = hj && (hj->nenv || hj->lib_dir || hj->pmix || json_array_size(poststop));
	json_t *j = any ? json_loads(env_json, 0, &jerr) : NULL;
	json_t *edf_env = json_object_get(j, "edf_env");
	if (json_is_array(edf_env)) {
		if (json_array_size(poststop)) {
			json_object_set(j, "oci_poststop", poststop);
			json_object_set(j, "oci_annotations", hj->annotations);
		}
		hooks_pmix_mark(hj, j);
		json_t *pairs = hook_pairs(hj, j);
		if (hj->lib_dir)
			fix_edf_ld_path(hj, edf_env);
		json_array_extend(pairs, edf_env);
		json_object_set_new(j, "edf_env", pairs);
		free(env_json);
		env_json = json_dumps(j, JSON_COMPACT);
	}
	json_decref(poststop);
	json_decref(j);
	return env_json;
}

void hooks_job_add_mounts(const struct hook_job *hj, struct job_mounts *jm)
{
	for (size_t i = 0; hj && i < hj->nmounts; i++)
		jobenv_mounts_add_site(jm, hj->mounts[i].host, hj->mounts[i].path, hj->mounts[i].ro);
}

/* ---- running OCI hooks ---- */

int hooks_job_run_create(const struct hook_job *hj, const struct edf *edf, const char *job,
			 const char *bundle, alps_error **err)
{
	(void)edf;
	return oci_hooks_run_rec(hj->oci, OCI_STAGE_CREATE, job, bundle, 0, hj->annotations,
				 hj->runs, err);
}

void hooks_release_run(const char *env_json, const char *job, const char *bundle)
{
	json_error_t jerr;
	json_t *j = env_json ? json_loads(env_json, 0, &jerr) : NULL;
	json_t *a = json_object_get(j, "oci_poststop");
	if (json_array_size(a)) {
		struct oci_hooks *hooks = oci_hooks_from_json(a);
		alps_error *err = NULL;
		if (oci_hooks_run(hooks, OCI_STAGE_POSTSTOP, job, bundle, 0,
				  json_object_get(j, "oci_annotations"), &err) < 0) {
			log_warn("job %s: %s", job, err->msg);
			alps_error_free(err);
		}
		oci_hooks_free(hooks);
	}
	json_decref(j);
}
