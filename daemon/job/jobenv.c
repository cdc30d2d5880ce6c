/* jobenv.c: see jobenv.h. */
#include <config.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "common/edf.h"
#include "common/log.h"
#include "daemon/settings.h"
#include "daemon/job/ns.h"
#include "daemon/job/plan.h"
#include "daemon/job/jobenv.h"
#include "daemon/node/place.h"
#include "daemon/node/topology.h"
#include "daemon/store/store.h"

static char *keep(struct job_mounts *m, const char *s)
{
	m->strings = xreallocarray(m->strings, m->nstrings + 1, sizeof(char *));
	return m->strings[m->nstrings++] = xstrdup(s);
}

/* jobs.default_mounts entries: SRC:DST[:FLAGS], FLAGS ro, rw, recursive
 * joined by '+'. */
static int parse_site_mount(struct job_mounts *m, const char *spec, struct user_mount *out,
			    alps_error **err)
{
	_cleanup_free_ char *copy = xstrdup(spec);
	char *save = NULL;
	char *src = strtok_r(copy, ":", &save);
	char *dst = strtok_r(NULL, ":", &save);
	char *flags = strtok_r(NULL, ":", &save);
	if (!src || !dst || src[0] != '/' || dst[0] != '/' || strtok_r(NULL, ":", &save))
		return alps_fail(err, ALPS_E_INVALID, "jobs.default_mounts: '%s' is not "
				 "/SRC:/DST[:FLAGS]", spec);
	out->kind = USER_MOUNT_BIND;
	out->src = keep(m, src);
	out->dst = keep(m, dst);
	out->flags = 0;
	char *fsave = NULL;
	for (char *f = flags ? strtok_r(flags, "+", &fsave) : NULL; f; f = strtok_r(NULL, "+", &fsave)) {
		if (strcmp(f, "ro") == 0)
			out->flags |= USER_MOUNT_RO;
		else if (strcmp(f, "recursive") == 0 || strcmp(f, "rbind") == 0)
			out->flags |= USER_MOUNT_REC;
		else if (strcmp(f, "rw") != 0 && strcmp(f, "private") != 0 && strcmp(f, "rprivate") != 0)
			return alps_fail(err, ALPS_E_INVALID, "jobs.default_mounts: '%s': unknown flag "
					 "'%s' (ro, rw, recursive)", spec, f);
	}
	return 0;
}

int jobenv_mounts(const struct strlist *site, const struct edf *edf, struct job_mounts *out,
		  alps_error **err)
{
	memset(out, 0, sizeof(*out));
	out->site = xcalloc(site->n + 1, sizeof(*out->site));
	for (size_t i = 0; i < site->n; i++) {
		if (parse_site_mount(out, site->v[i], &out->site[i], err) < 0) {
			jobenv_mounts_free(out);
			return -1;
		}
		out->nsite++;
	}
	size_t n = edf ? edf->nmounts : 0;
	out->user = xcalloc(n + 1, sizeof(*out->user));
	for (size_t i = 0; i < n; i++) {
		const struct edf_mount *em = &edf->mounts[i];
		struct user_mount *um = &out->user[i];
		um->kind = (em->flags & EDF_MOUNT_SQSH) ? USER_MOUNT_SQSH : USER_MOUNT_BIND;
		um->src = keep(out, em->src);
		um->dst = keep(out, em->dst);
		um->flags = ((em->flags & EDF_MOUNT_RO) ? USER_MOUNT_RO : 0) |
			    ((em->flags & EDF_MOUNT_RECURSIVE) ? USER_MOUNT_REC : 0) |
			    ((em->flags & EDF_MOUNT_PROPAGATION) ? USER_MOUNT_PRIVATE : 0);
		out->nuser++;
	}
	return 0;
}

void jobenv_mounts_add_site(struct job_mounts *m, const char *src, const char *dst, bool ro)
{
	m->site = xreallocarray(m->site, m->nsite + 1, sizeof(*m->site));
	struct user_mount *um = &m->site[m->nsite++];
	memset(um, 0, sizeof(*um));
	um->kind = USER_MOUNT_BIND;
	um->src = keep(m, src);
	um->dst = keep(m, dst);
	um->flags = ro ? USER_MOUNT_RO : 0;
}

void jobenv_mounts_free(struct job_mounts *m)
{
	for (size_t i = 0; i < m->nstrings; i++)
		free(m->strings[i]);
	free(m->strings);
	free(m->site);
	free(m->user);
	memset(m, 0, sizeof(*m));
}

/* The image config's "config" object, or NULL; caller decrefs. */
static json_t *image_config(const struct store_image *img)
{
	if (!img || !img->config_json)
		return NULL;
	json_error_t jerr;
	json_t *root = json_loads(img->config_json, 0, &jerr);
	json_t *c = json_incref(json_object_get(root, "config"));
	json_decref(root);
	return c;
}

char *jobenv_workdir(const struct edf *edf, const struct store_image *img)
{
	if (edf && edf->workdir.value && *edf->workdir.value)
		return xstrdup(edf->workdir.value);
	json_t *c = image_config(img);
	const char *wd = json_string_value(json_object_get(c, "WorkingDir"));
	char *out = xstrdup(wd && *wd == '/' ? wd : "/");
	json_decref(c);
	return out;
}

/* The EDF annotations that switch a group of a Slurm task's variables. */
static const char *const slurm_switches[] = { "rank_env", "master_env", "placement_env",
					      "affinity" };
#define SLURM_SWITCH_PREFIX "com.alps.slurm."

int jobenv_check_annotations(const struct edf *edf, alps_error **err)
{
	for (size_t i = 0; edf && i < edf->nannotations; i++) {
		const struct edf_var *a = &edf->annotations[i];
		if (!str_has_prefix(a->key, SLURM_SWITCH_PREFIX))
			continue;
		const char *name = a->key + strlen(SLURM_SWITCH_PREFIX);
		bool known = false;
		for (size_t k = 0; k < ARRAY_SIZE(slurm_switches); k++)
			known = known || strcmp(name, slurm_switches[k]) == 0;
		if (!known)
			return alps_fail(err, ALPS_E_INVALID, "%s:%d:%d: annotations.%s: unknown (%s"
					 "rank_env, master_env, placement_env or affinity)", a->loc.file,
					 a->loc.line, a->loc.col, a->key, SLURM_SWITCH_PREFIX);
		if (strcmp(a->value, "true") != 0 && strcmp(a->value, "false") != 0)
			return alps_fail(err, ALPS_E_INVALID, "%s:%d:%d: annotations.%s: \"true\" or "
					 "\"false\", not \"%s\"", a->loc.file, a->loc.line, a->loc.col,
					 a->key, a->value);
	}
	return 0;
}

/* {"rank_env": false, ...}: what the job's EDF says, for attach. */
static json_t *slurm_switches_json(const struct edf *edf)
{
	json_t *o = json_object();
	for (size_t k = 0; k < ARRAY_SIZE(slurm_switches); k++) {
		_cleanup_free_ char *key = xasprintf(SLURM_SWITCH_PREFIX "%s", slurm_switches[k]);
		const char *v = edf ? edf_annotation_get(edf, key) : NULL;
		if (v)
			json_object_set_new(o, slurm_switches[k], json_boolean(strcmp(v, "true") == 0));
	}
	return o;
}

bool jobenv_slurm_switch(const char *env_json, const char *name, bool site_default)
{
	json_t *j = env_json ? json_loads(env_json, 0, NULL) : NULL;
	json_t *v = json_object_get(json_object_get(j, "slurm"), name);
	bool on = json_is_boolean(v) ? json_is_true(v) : site_default;
	json_decref(j);
	return on;
}

char *jobenv_json(const struct edf *edf, const struct store_image *img, const char *fingerprint,
		  uint32_t tasks, const char *fabric_map)
{
	json_t *c = image_config(img);
	json_t *image_env = json_object_get(c, "Env");
	json_t *edf_env = json_array();
	for (size_t i = 0; edf && i < edf->nenv; i++)
		json_array_append_new(edf_env, json_pack("[s, s]", edf->env[i].key, edf->env[i].value));
	_cleanup_free_ char *wd = jobenv_workdir(edf, img);
	json_t *j = json_pack("{s:s?, s:O?, s:o, s:s, s:I}", "fingerprint", fingerprint,
			      "image_env", json_is_array(image_env) ? image_env : NULL, "edf_env",
			      edf_env, "workdir", wd, "tasks", (json_int_t)tasks);
	if (fabric_map)
		json_object_set_new(j, "fabric_map", json_string(fabric_map));
	json_object_set_new(j, "slurm", slurm_switches_json(edf));
	json_decref(c);
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return s;
}

static json_t *load(const char *env_json)
{
	json_error_t jerr;
	return env_json ? json_loads(env_json, 0, &jerr) : NULL;
}

char *jobenv_fingerprint(const char *env_json)
{
	json_t *j = load(env_json);
	const char *fp = json_string_value(json_object_get(j, "fingerprint"));
	char *out = fp ? xstrdup(fp) : NULL;
	json_decref(j);
	return out;
}

char *jobenv_exec_workdir(const char *env_json)
{
	json_t *j = load(env_json);
	const char *wd = json_string_value(json_object_get(j, "workdir"));
	char *out = xstrdup(wd ? wd : "/");
	json_decref(j);
	return out;
}

/* A KEY=VALUE list with set/unset by key, in first-set order. */
struct envlist {
	char **v;
	size_t n;
};

static void env_set(struct envlist *e, const char *key, size_t klen, const char *value)
{
	for (size_t i = 0; i < e->n; i++) {
		if (strncmp(e->v[i], key, klen) == 0 && e->v[i][klen] == '=') {
			free(e->v[i]);
			if (value) {
				e->v[i] = xasprintf("%.*s=%s", (int)klen, key, value);
			} else {
				memmove(&e->v[i], &e->v[i + 1], (e->n - i - 1) * sizeof(char *));
				e->n--;
			}
			return;
		}
	}
	if (!value)
		return;
	e->v = xreallocarray(e->v, e->n + 2, sizeof(char *));
	e->v[e->n++] = xasprintf("%.*s=%s", (int)klen, key, value);
	e->v[e->n] = NULL;
}

static void env_put(struct envlist *e, const char *kv)
{
	const char *eq = strchr(kv, '=');
	if (eq && eq != kv)
		env_set(e, kv, (size_t)(eq - kv), eq + 1);
}

char **jobenv_exec_env(const char *env_json, const char *const *caller_env,
		       const struct topology *topo, const char *job, uint32_t local_rank)
{
	return jobenv_task_env(env_json, caller_env, topo, job, local_rank, 0);
}

char **jobenv_task_env(const char *env_json, const char *const *caller_env,
		       const struct topology *topo, const char *job, uint32_t local_rank,
		       uint32_t local_tasks)
{
	struct envlist e = { .v = xcalloc(1, sizeof(char *)), .n = 0 };
	for (size_t i = 0; caller_env && caller_env[i]; i++)
		env_put(&e, caller_env[i]);
	json_t *j = load(env_json);
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(j, "image_env"), i, v)
		if (json_is_string(v))
			env_put(&e, json_string_value(v));
	json_array_foreach(json_object_get(j, "edf_env"), i, v) {
		const char *k = json_string_value(json_array_get(v, 0));
		const char *val = json_string_value(json_array_get(v, 1));
		if (k && val)
			env_set(&e, k, strlen(k), *val ? val : NULL);
	}
	json_int_t tasks = local_tasks ? (json_int_t)local_tasks
				       : json_integer_value(json_object_get(j, "tasks"));
	if (topo && tasks > 0 && local_rank < (uint32_t)tasks) {
		struct place_plan *plan = NULL;
		alps_error *err = NULL;
		if (place_plan_new(topo, (unsigned)tasks, 0, &plan, &err) == 0) {
			char **pe = place_plan_env(plan, local_rank);
			for (size_t k = 0; pe && pe[k]; k++) {
				env_put(&e, pe[k]);
				/* The NVIDIA container toolkit's name for the same GPUs. */
				if (str_has_prefix(pe[k], "CUDA_VISIBLE_DEVICES="))
					env_set(&e, "NVIDIA_VISIBLE_DEVICES", 22, pe[k] + 21);
			}
			place_env_free(pe);
			place_plan_free(plan);
		} else {
			log_warn("job %s: no placement for %lld tasks: %s", job, (long long)tasks,
				 err->msg);
			alps_error_free(err);
		}
	}
	const char *map = json_string_value(json_object_get(j, "fabric_map"));
	if (map)
		env_set(&e, "ALPS_FABRIC_MAP", 15, map);
	json_decref(j);
	env_set(&e, "ALPS_JOB_ID", 11, job);
	char rank[16];
	snprintf(rank, sizeof(rank), "%u", local_rank);
	env_set(&e, "ALPS_LOCAL_RANK", 15, rank);
	return e.v;
}

char *jobenv_mount_text(const struct ns_mount *m)
{
	return xasprintf("%s %s %s %s%s%s", m->dst, m->fstype, m->source,
			 (m->flags & MS_RDONLY) ? "ro" : "rw", (m->flags & MS_NOSUID) ? ",nosuid" : "",
			 (m->flags & MS_NODEV) ? ",nodev" : "");
}

char *jobenv_mounts_text(const struct ns_result *r)
{
	char *out = xstrdup("");
	for (size_t i = 0; i < r->nmounts; i++) {
		_cleanup_free_ char *line = jobenv_mount_text(&r->mounts[i]);
		char *next = xasprintf("%s%s%s", out, i ? "\n" : "", line);
		free(out);
		out = next;
	}
	return out;
}

char **jobenv_split_lines(const char *text, size_t *n)
{
	*n = 0;
	char **v = xcalloc(1, sizeof(char *));
	if (!text)
		return v;
	_cleanup_free_ char *copy = xstrdup(text);
	char *save = NULL;
	for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		v = xreallocarray(v, *n + 2, sizeof(char *));
		v[(*n)++] = xstrdup(l);
		v[*n] = NULL;
	}
	return v;
}
