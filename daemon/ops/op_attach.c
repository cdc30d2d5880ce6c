/* op_attach.c: Attach, a Slurm task joining its prepared job.
 *
 * The SPANK plugin runs in slurmstepd as root, in the task's process just
 * before Slurm drops privileges and execs the task.  It asks for the job's
 * mount namespace (an fd of the pinned nsfs file, sent with the reply) and
 * the task's environment, setns()es, and lets Slurm go on: the task stays
 * slurmstepd's child, in the step's cgroup, with Slurm's binding, limits
 * and signals.  Only admins (root) may attach, and only a task of the
 * job's own user (the step's uid comes from Slurm, passed by the plugin).
 *
 *   lookup (worker)  the job row, the pinned namespace opened
 *   reply  (loop)    the environment (CPU only) and the fd
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/hooks/hooks.h"
#include "daemon/job/jobenv.h"
#include "daemon/job/slurmenv.h"
#include "daemon/node/place.h"
#include "daemon/store/store.h"
#include "daemon/server/work.h"

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

/* Bounds on what a request may carry. */
#define ATTACH_MAX_ENV 4096
#define ATTACH_MAX_NODELIST (1024 * 1024)

struct attach {
	struct request *rq;
	struct daemon *d;
	Alps__AttachRequest *a;         /* owned copy of the request */
	char *run_dir;
	struct store_job *job;          /* from the worker */
	int nsfd;                       /* from the worker */
	alps_error *err;                /* from the worker */
};

static void attach_free(struct attach *at)
{
	request_unref(at->rq);
	alps__attach_request__free_unpacked(at->a, NULL);
	free(at->run_dir);
	store_job_free(at->job);
	if (at->nsfd >= 0)
		close(at->nsfd);
	alps_error_free(at->err);
	free(at);
}

/* The job's pinned namespace, checked to be one. */
static int open_pin(const char *run_dir, const char *job, alps_error **err)
{
	_cleanup_free_ char *pin = xasprintf("%s/jobs/%s/mnt", run_dir, job);
	_cleanup_close_ int fd = open(pin, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return alps_fail_errno(err, "job %s has no pinned namespace (open %s)", job, pin);
	struct statfs sf;
	if (fstatfs(fd, &sf) < 0)
		return alps_fail_errno(err, "fstatfs(%s)", pin);
	if ((unsigned long)sf.f_type != (unsigned long)NSFS_MAGIC)
		return alps_fail(err, ALPS_E_INTEGRITY, "job %s: %s is not a pinned namespace", job,
				 pin);
	return steal_fd(&fd);
}

static void attach_lookup(void *arg)
{
	struct attach *at = arg;
	const Alps__AttachRequest *a = at->a;
	if (store_job_get(at->d->store, a->job, &at->job, &at->err) < 0)
		return;
	if (at->job->uid != (uid_t)a->uid) {
		alps_fail(&at->err, ALPS_E_PERMISSION, "job %s belongs to uid %u, not to the step's uid %u",
			  a->job, (unsigned)at->job->uid, (unsigned)a->uid);
		return;
	}
	if (at->job->state != STORE_JOB_READY) {
		alps_fail(&at->err, ALPS_E_BUSY, "job %s is %s, not ready", a->job,
			  store_job_state_name(at->job->state));
		return;
	}
	at->nsfd = open_pin(at->run_dir, a->job, &at->err);
}

/* ALPS_CPU_AFFINITY=LIST, the placement plan's CPUs for the local rank,
 * which the plugin applies as the task's affinity when the site or the
 * EDF asks (slurm.apply_affinity, com.alps.slurm.affinity); NULL when it
 * is off or the node cannot place the step's tasks (Slurm's binding
 * stands). */
static char *affinity_var(struct attach *at)
{
	const Alps__AttachRequest *a = at->a;
	if (!at->d->topology || a->local_tasks == 0 || a->local_rank >= a->local_tasks ||
	    !jobenv_slurm_switch(at->job->environment_json, "affinity",
				 at->d->cfg->slurm_apply_affinity))
		return NULL;
	struct place_plan *plan = NULL;
	alps_error *err = NULL;
	if (place_plan_new(at->d->topology, a->local_tasks, 0, &plan, &err) < 0) {
		log_warn("job %s: no CPU mask for %u tasks, Slurm's binding stands: %s", a->job,
			 (unsigned)a->local_tasks, err->msg);
		alps_error_free(err);
		return NULL;
	}
	char *list = NULL, *var = NULL;
	if (hwloc_bitmap_list_asprintf(&list, plan->ranks[a->local_rank].cpuset) >= 0 && list)
		var = xasprintf("ALPS_CPU_AFFINITY=%s", list);
	free(list);
	place_plan_free(plan);
	return var;
}

static void drop_var(char **env, const char *prefix)
{
	size_t j = 0;
	for (size_t i = 0; env[i]; i++) {
		if (str_has_prefix(env[i], prefix))
			free(env[i]);
		else
			env[j++] = env[i];
	}
	env[j] = NULL;
}

/* The task's environment: the job's (jobenv_exec_env) and Slurm's. */
static char **task_env(struct attach *at, alps_error **err)
{
	const struct config *cfg = at->d->cfg;
	const Alps__AttachRequest *a = at->a;
	const char **caller = xcalloc(a->n_env + 1, sizeof(char *));
	for (size_t i = 0; i < a->n_env; i++)
		caller[i] = a->env[i];
	const char *ej = at->job->environment_json;
	char **env = jobenv_task_env(ej, caller,
				     jobenv_slurm_switch(ej, "placement_env", cfg->slurm_placement_env)
					     ? at->d->topology : NULL,
				     a->job, a->local_rank, a->local_tasks);
	free(caller);
	struct slurm_task t = {
		.job_id = a->slurm_job_id, .local_rank = a->local_rank,
		.global_rank = a->global_rank, .ntasks = a->ntasks, .nodelist = a->nodelist,
	};
	struct slurmenv_conf sc = {
		.ranks = jobenv_slurm_switch(ej, "rank_env", cfg->slurm_rank_env),
		.master = jobenv_slurm_switch(ej, "master_env", cfg->slurm_master_env),
		.port_min = (uint32_t)cfg->slurm_master_port_min,
		.port_max = (uint32_t)cfg->slurm_master_port_max,
	};
	char **extra = NULL;
	if (slurmenv_task_env(&t, &sc, &extra, err) < 0) {
		edf_strv_free(env);
		return NULL;
	}
	size_t n = 0, m = 0;
	while (env[n])
		n++;
	while (extra[m])
		m++;
	char *aff = affinity_var(at);
	if (aff) {
		extra = xreallocarray(extra, m + 2, sizeof(char *));
		extra[m++] = aff;
		extra[m] = NULL;
	}
	env = xreallocarray(env, n + m + 1, sizeof(char *));
	/* Slurm's own values win over anything of the same name before. */
	for (size_t i = 0; i < m; i++) {
		size_t klen = strcspn(extra[i], "=") + 1;
		size_t j = 0;
		for (; j < n; j++)
			if (strncmp(env[j], extra[i], klen) == 0)
				break;
		if (j < n) {
			free(env[j]);
			env[j] = extra[i];
		} else {
			env[n++] = extra[i];
		}
	}
	env[n] = NULL;
	free(extra);
	env = hooks_pmix_task_env(ej, a->env, a->n_env, env);
	if (!aff)                       /* the plugin applies only what alpsd set */
		drop_var(env, "ALPS_CPU_AFFINITY=");
	return env;
}

static void attach_reply(void *arg)
{
	struct attach *at = arg;
	alps_error *err = steal_pointer(&at->err);
	char **env = err ? NULL : task_env(at, &err);
	if (err) {
		request_fail(at->rq, err);
		attach_free(at);
		return;
	}
	size_t n = 0;
	while (env[n])
		n++;
	_cleanup_free_ char *workdir = jobenv_exec_workdir(at->job->environment_json);
	Alps__AttachReply ar = ALPS__ATTACH_REPLY__INIT;
	ar.n_env = n;
	ar.env = env;
	ar.workdir = workdir ? workdir : (char *)"/";
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_ATTACH_REPLY;
	resp.attach_reply = &ar;
	request_attach_fds(at->rq, &at->nsfd, 1);
	log_info("job %s: Slurm task %u (local %u) of uid %u attached", at->a->job,
		 (unsigned)at->a->global_rank, (unsigned)at->a->local_rank, (unsigned)at->a->uid);
	request_finish(at->rq, &resp);
	edf_strv_free(env);
	attach_free(at);
}

static int check_request(const Alps__AttachRequest *a, alps_error **err)
{
	if (!a || !a->job || !*a->job)
		return alps_fail(err, ALPS_E_INVALID, "attach needs a job");
	if (a->n_env > ATTACH_MAX_ENV)
		return alps_fail(err, ALPS_E_LIMIT, "attach: over %d environment variables",
				 ATTACH_MAX_ENV);
	if (a->nodelist && strlen(a->nodelist) > ATTACH_MAX_NODELIST)
		return alps_fail(err, ALPS_E_LIMIT, "attach: node list over 1 MiB");
	if (a->local_rank >= 65536 || a->ntasks > 16u * 1024 * 1024)
		return alps_fail(err, ALPS_E_INVALID, "attach: local rank %u / %u tasks out of range",
				 (unsigned)a->local_rank, (unsigned)a->ntasks);
	return 0;
}

/* A copy of the request that outlives the handler's frame. */
static Alps__AttachRequest *copy_request(const Alps__AttachRequest *a)
{
	size_t len = alps__attach_request__get_packed_size(a);
	_cleanup_free_ uint8_t *buf = xmalloc(len ? len : 1);
	alps__attach_request__pack(a, buf);
	return alps__attach_request__unpack(NULL, len, buf);
}

static int op_attach(struct request *rq, const Alps__Request *req, alps_error **err)
{
	if (check_request(req->attach, err) < 0)
		return -1;
	struct daemon *d = request_daemon(rq);
	struct attach *at = xzalloc(sizeof(*at));
	at->a = copy_request(req->attach);
	if (!at->a) {
		free(at);
		return alps_fail(err, ALPS_E_INTERNAL, "attach: cannot copy the request");
	}
	at->rq = request_ref(rq);
	at->d = d;
	at->nsfd = -1;
	at->run_dir = xstrdup(d->cfg->run_dir);
	if (work_submit(d, attach_lookup, attach_reply, at, err) < 0) {
		attach_free(at);
		return -1;
	}
	return 0;
}

/* The SPANK plugin in slurmstepd (root): a namespace fd for a task. */
const struct handler handler_attach = {
	ALPS__REQUEST__OP_ATTACH, "attach", PRIV_ADMIN, op_attach,
};
