/* hooks.h: what the host adds to a job - CDI devices the EDF names,
 * built-in hooks its annotations (or the site's defaults) turn on, OCI
 * hooks - turned into plain data the job's plan and environment take.
 *
 * Everything is decided in a worker thread before the namespace exists
 * (hooks_job_resolve reads specs, globs device nodes, checks libraries);
 * the plan then binds what it lists, like any site mount.
 *
 *	struct hook_job *hj;
 *	if (hooks_job_resolve(cfg, edf, &hj, err) < 0) ...
 *	hooks_job_inject(cfg, hj, &image, err);          (libraries: inject.h)
 *	env_json = hooks_job_env_json(hj, env_json);     (the job's environment)
 *	hooks_job_add_mounts(hj, &jm);                   (site mounts)
 *	spec.extra_devices = hj->devices ...
 *	hooks_job_free(hj);
 */
#ifndef ALPS_DAEMON_HOOKS_HOOKS_H
#define ALPS_DAEMON_HOOKS_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "daemon/job/plan.h"

struct config;
struct edf;
struct job_mounts;
struct json_t;

struct hook_mount {
	char *host;             /* absolute host path (a file or a directory) */
	char *path;             /* absolute path in the container */
	bool ro;
};

/* A host library injected into lib_dir (inject.h). */
struct hook_lib {
	char *host;             /* real path on the host */
	char *name;             /* its name in lib_dir */
};

struct hook_job {
	struct job_device *devices;     /* owned, strings too */
	size_t ndevices;
	struct hook_mount *mounts;
	size_t nmounts;
	char **env;                     /* "VAR=value"; a later one wins */
	size_t nenv;
	char *lib_dir;                  /* injected libraries: first on LD_LIBRARY_PATH */
	struct hook_lib *libs;          /* what goes into lib_dir (hooks_job_inject) */
	size_t nlibs;
	bool mpi;                       /* the MPI hook is on (mpi.c) */
	bool mpi_asked;                 /* ... by the EDF, not the site's default */
	char **what;                    /* "cdi vendor.com/gpu=0", "cxi"... for the log */
	size_t nwhat;
	struct oci_hooks *oci;          /* OCI hooks chosen for the job (oci.h), or NULL */
	struct json_t *annotations;     /* the EDF's, for the hooks' state */
	char **warnings;                /* for the prepare reply */
	size_t nwarnings;
	bool pmix;                      /* the PMIx hook is on (pmix.c) */
	struct json_t *runs;            /* what each hook did (hookrec.c) */
};

/* The label an image that ships its own network stack (libfabric, NCCL
 * plugin) carries; a job with the CXI hook on is warned. */
#define HOOKS_LABEL_OWN_STACK "com.alps.network-stack"

/* The job's devices, built-in hooks and OCI hooks; image_config is the
 * image's config JSON (its labels), or NULL.  Errors name the device,
 * hook or annotation, and what is missing on the host. */
int hooks_job_resolve(const struct config *cfg, const struct edf *edf, const char *image_config,
		      struct hook_job **out, alps_error **err);
void hooks_job_free(struct hook_job *hj);
/* env_json (jobenv_json's) with the hooks' variables before the EDF's own
 * (which still win), lib_dir first on LD_LIBRARY_PATH, and the poststop
 * hooks with the annotations for release.  Takes env_json, returns the
 * new text. */
char *hooks_job_env_json(const struct hook_job *hj, char *env_json);
/* The OCI hooks of the create stages, after the namespace is built. */
int hooks_job_run_create(const struct hook_job *hj, const struct edf *edf, const char *job,
			 const char *bundle, alps_error **err);
/* At release: the poststop hooks hooks_job_env_json kept in env_json (the
 * job row's).  Failures are logged: the job goes anyway. */
void hooks_release_run(const char *env_json, const char *job, const char *bundle);
/* Add the hooks' binds to jm as site mounts. */
void hooks_job_add_mounts(const struct hook_job *hj, struct job_mounts *jm);

/* Built-in hooks (builtin.c): add what the annotations turn on. */
int hooks_builtin(const struct config *cfg, const struct edf *edf, struct hook_job *hj,
		  alps_error **err);

/* The PMIx hook (pmix.c): SlurmdSpoolDir & co. bound for srun --mpi=pmix. */
int hooks_pmix(const struct config *cfg, const struct edf *edf, struct hook_job *hj,
	       alps_error **err);
/* Records in the job's env_json object that the PMIx hook is on. */
void hooks_pmix_mark(const struct hook_job *hj, struct json_t *env_obj);
/* At attach: the task's (caller's, ncaller "K=V") PMIX_* and SLURM_PMIX*
 * variables over env when the job has the PMIx hook on.  Takes env,
 * returns it. */
char **hooks_pmix_task_env(const char *env_json, char *const *caller, size_t ncaller,
			   char **env);

/* ---- records of what hooks did, for `alps jobs` (hookrec.c) ---- */
/* The last lines of a hook's output (at most 5 lines, 1 KiB), each
 * escaped; caller frees. */
char *hook_output_tail(const char *out);
/* Append {name, result ("ok", "warned", "failed"), duration_ms, output}
 * to runs (NULL: nothing). */
void hook_record(struct json_t *runs, const char *name, const char *result, uint64_t ms,
		 const char *output);
/* env_json with hj's records.  Takes env_json, returns the new text. */
char *hooks_job_record_runs(const struct hook_job *hj, char *env_json);
/* The records of a job row's env_json as HookRun messages (proto/wire.h);
 * free with hooks_runs_info_free. */
struct Alps__HookRun;
size_t hooks_runs_info(const char *env_json, struct Alps__HookRun ***out);
void hooks_runs_info_free(struct Alps__HookRun **v, size_t n);

/* An annotation "true" or "false" (else an error naming it); dflt when
 * the EDF does not set it. */
int hook_annotation_flag(const struct edf *edf, const char *key, bool dflt, bool *on,
			 alps_error **err);
/* The MPI hook (mpi.c): its environment; the libraries are found and
 * checked against the image by hooks_job_inject (inject.h). */
int hooks_mpi(const struct config *cfg, struct hook_job *hj, bool asked, alps_error **err);

/* Helpers for builtin.c and hooks.c. */
int hook_add_device(struct hook_job *hj, const char *host, const char *path, alps_error **err);
int hook_add_mount(struct hook_job *hj, const char *host, const char *path, bool ro,
		   alps_error **err);
void hook_add_env(struct hook_job *hj, const char *kv);
/* host (a real path) into lib_dir as name; the same name twice must be
 * the same file. */
int hook_add_lib(struct hook_job *hj, const char *host, const char *name, alps_error **err);
void hook_add_what(struct hook_job *hj, const char *what);

#endif
