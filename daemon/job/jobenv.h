/* jobenv.h: what a job carries from prepare to exec - its mounts as the
 * namespace builder wants them, its workdir, and the environment of its
 * processes - and the text forms `alps jobs` shows. */
#ifndef ALPS_JOBENV_H
#define ALPS_JOBENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct config;
struct strlist;
struct edf;
struct ns_mount;
struct ns_result;
struct store_image;
struct topology;
struct user_mount;

struct job_mounts {
	struct user_mount *site;        /* owned, from jobs.default_mounts */
	size_t nsite;
	struct user_mount *user;        /* owned, from the EDF */
	size_t nuser;
	char **strings;                 /* owned storage of the paths */
	size_t nstrings;
};

/* site: jobs.default_mounts as expanded for the job's user. */
int jobenv_mounts(const struct strlist *site, const struct edf *edf, struct job_mounts *out,
		  alps_error **err);
void jobenv_mounts_free(struct job_mounts *m);
/* One more site mount (a file the daemon wrote, such as the fabric map). */
void jobenv_mounts_add_site(struct job_mounts *m, const char *src, const char *dst, bool ro);

/* Where a job finds its fabric map ($ALPS_FABRIC_MAP). */
#define JOBENV_FABRIC_MAP "/run/alps/fabric.json"

/* The EDF's workdir, else the image's WorkingDir, else "/".  Caller frees. */
char *jobenv_workdir(const struct edf *edf, const struct store_image *img);

/* The job row's environment_json: fingerprint, image env, EDF env,
 * workdir, tasks.  Caller frees. */
char *jobenv_json(const struct edf *edf, const struct store_image *img, const char *fingerprint,
		  uint32_t tasks, const char *fabric_map);
/* The annotations com.alps.slurm.{rank_env,master_env,placement_env,affinity}:
 * known names, "true" or "false"; an error names file, line and key. */
int jobenv_check_annotations(const struct edf *edf, alps_error **err);
/* Whether a group of a Slurm task's variables is on for the job: its EDF's
 * annotation when it has one, else the site's setting. */
bool jobenv_slurm_switch(const char *env_json, const char *name, bool site_default);

/* The fingerprint in a row's environment_json, or NULL.  Caller frees. */
char *jobenv_fingerprint(const char *env_json);

/* The environment of a process in the job, NULL-terminated, caller frees
 * with edf_strv_free(): the caller's, then the image's, then the EDF's
 * [env] (an empty value unsets), then the rank's placement, then ALPS_*. */
char **jobenv_exec_env(const char *env_json, const char *const *caller_env,
		       const struct topology *topo, const char *job, uint32_t local_rank);
/* The same with the node's task count given (a Slurm step's, known only at
 * attach), instead of the one recorded at prepare; 0: the recorded one.
 * Tasks the node cannot place get no placement variables (logged). */
char **jobenv_task_env(const char *env_json, const char *const *caller_env,
		       const struct topology *topo, const char *job, uint32_t local_rank,
		       uint32_t local_tasks);
/* The workdir recorded at prepare.  Caller frees. */
char *jobenv_exec_workdir(const char *env_json);

/* "DST TYPE SOURCE FLAGS" of one mount; all mounts one a line.  Caller frees. */
char *jobenv_mount_text(const struct ns_mount *m);
char *jobenv_mounts_text(const struct ns_result *r);
/* Lines of text as a NULL-terminated array (edf_strv_free); NULL text: empty. */
char **jobenv_split_lines(const char *text, size_t *n);

#endif
