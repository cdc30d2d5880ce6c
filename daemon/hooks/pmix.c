/* pmix.c: the PMIx hook (com.hooks.pmix.enabled, [hooks.pmix]): what a
 * task of `srun --mpi=pmix` needs to reach the step's PMIx server from
 * inside the container.
 *
 * Slurm's mpi/pmix plugin starts a PMIx server in slurmstepd for each
 * step.  Its rendezvous files and socket are in a directory made at step
 * start, SlurmdSpoolDir/pmix.JOB.STEP (PMIX_SERVER_TMPDIR), and the client
 * side's temporary files under mpi.conf's PMIxCliTmpDirBase when set.  A
 * job is prepared before its steps exist (by the prolog), so the hook
 * binds the parent directories the site lists, at the same path and
 * writable: a later step's directory appears inside through the bind, and
 * the paths in the variables Slurm gives the task hold as they are (LUMI
 * users bind /var/spool/slurmd by hand for exactly this).
 *
 * The variables themselves (PMIX_NAMESPACE, PMIX_RANK, PMIX_SERVER_URI*,
 * PMIX_SERVER_TMPDIR, SLURM_PMIX_* ...) come from slurmstepd in the task's
 * environment.  At attach the job's environment is laid over the task's;
 * a job with the hook on keeps the task's PMIX_* and SLURM_PMIX* values
 * over the image's and the EDF's (hooks_pmix_task_env), since they
 * describe the live server and a stale value baked into an image would
 * break the rendezvous. */
#include <config.h>

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/edf.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/hooks/hooks.h"

/* The key of env_json that says the job has the hook on. */
#define PMIX_JSON_KEY "pmix"

static int add_dir(struct hook_job *hj, const char *dir, alps_error **err)
{
	char real[PATH_MAX];
	struct stat st;
	if (dir[0] != '/' || !realpath(dir, real) || stat(real, &st) < 0 || !S_ISDIR(st.st_mode))
		return alps_fail(err, ALPS_E_NOT_FOUND, "the pmix hook: the host directory %s is "
				 "missing or not a directory (hooks.pmix.directories)", dir);
	return hook_add_mount(hj, real, dir, false, err);
}

static int add_env(struct hook_job *hj, const struct strlist *env, alps_error **err)
{
	for (size_t i = 0; i < env->n; i++) {
		const char *eq = strchr(env->v[i], '=');
		if (!eq || eq == env->v[i])
			return alps_fail(err, ALPS_E_INVALID, "hooks.pmix.env: \"%s\" is not "
					 "VAR=value", env->v[i]);
		hook_add_env(hj, env->v[i]);
	}
	return 0;
}

int hooks_pmix(const struct config *cfg, const struct edf *edf, struct hook_job *hj,
	       alps_error **err)
{
	bool on;
	if (hook_annotation_flag(edf, "com.hooks.pmix.enabled", cfg->pmix_enabled, &on, err) < 0)
		return -1;
	if (!on)
		return 0;
	if (cfg->pmix_dirs.n == 0)
		return alps_fail(err, ALPS_E_NOT_FOUND, "the pmix hook is on but this node names no "
				 "directories (hooks.pmix.directories)");
	for (size_t i = 0; i < cfg->pmix_dirs.n; i++)
		if (add_dir(hj, cfg->pmix_dirs.v[i], err) < 0)
			return -1;
	if (add_env(hj, &cfg->pmix_env, err) < 0)
		return -1;
	hj->pmix = true;
	hook_add_what(hj, "pmix");
	return 0;
}

void hooks_pmix_mark(const struct hook_job *hj, json_t *env_obj)
{
	if (hj && hj->pmix)
		json_object_set_new(env_obj, PMIX_JSON_KEY, json_true());
}

static bool is_pmix_var(const char *kv)
{
	return str_has_prefix(kv, "PMIX_") || str_has_prefix(kv, "SLURM_PMIX");
}

/* kv into env (NULL-terminated, owned strings), replacing the same name. */
static char **put(char **env, const char *kv)
{
	size_t klen = strcspn(kv, "=") + 1, n = 0;
	for (; env[n]; n++) {
		if (strncmp(env[n], kv, klen) == 0) {
			free(env[n]);
			env[n] = xstrdup(kv);
			return env;
		}
	}
	env = xreallocarray(env, n + 2, sizeof(char *));
	env[n] = xstrdup(kv);
	env[n + 1] = NULL;
	return env;
}

char **hooks_pmix_task_env(const char *env_json, char *const *caller, size_t ncaller,
			   char **env)
{
	json_t *j = env_json ? json_loads(env_json, 0, NULL) : NULL;
	bool on = json_is_true(json_object_get(j, PMIX_JSON_KEY));
	json_decref(j);
	for (size_t i = 0; on && i < ncaller; i++)
		if (is_pmix_var(caller[i]) && strchr(caller[i], '='))
			env = put(env, caller[i]);
	return env;
}
