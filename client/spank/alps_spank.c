/* alps_spank.c: the Slurm SPANK plugin: `srun --environment=EDF` and
 * pyxis-style `--container-*` options run a step's tasks in a container
 * that alpsd prepared.
 *
 *   srun/salloc/sbatch (local/allocator, as the user)
 *       read and check the EDF and options now, so a mistake fails before
 *       anything is queued; pack what the nodes need (client/slurmjob.h)
 *       into the job's environment and its control environment (prolog)
 *   slurmstepd (remote, root), once per step (init_post_opt)
 *       prepare the job's container through alpsd (idempotent: the prolog
 *       may have done it); a step whose environment differs from the
 *       job's gets a container of its own, released at the step's end
 *   each task, as root (task_init_privileged)
 *       attach: alpsd sends the job's mount namespace (an fd) and the
 *       task's environment; setns() into it, replace the environment
 *   each task, as the user (task_init)
 *       chdir to the container's workdir; Slurm then execs the task, which
 *       stays slurmstepd's child: the step's cgroup, binding, limits
 *
 * Without any of its options the plugin does nothing at all (and needs no
 * daemon).  plugstack.conf arguments:
 *   socket=PATH          alpsd's socket (default /run/alps/alpsd.sock)
 *   batch=host|container the batch script on the host (default: its
 *                        sruns inherit --environment) or in the container
 *   timeout=SECONDS      bound on a prepare at step start (default 600)
 *   edf_site_dir=PATH    the site's preset EDFs (default $ALPS_EDF_SITE_DIR,
 *                        else /etc/alps/edf; see edf_site_dir in edf.h)
 *   annotation=KEY=VALUE a default annotation of every job (repeatable):
 *                        applies where the environment sets no KEY
 *   env=GROUP,...|none   the per-task variable groups on by default (rank,
 *                        master, placement; the others off), as default
 *                        com.alps.slurm.GROUP_env annotations */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <slurm/spank.h>

#include "client/slurmjob.h"
#include "common/util.h"
#include "proto/wire.h"

SPANK_PLUGIN(alps, 1)

#ifndef SLURM_BATCH_SCRIPT
#define SLURM_BATCH_SCRIPT 0xfffffffb
#endif
#ifndef SLURM_EXTERN_CONT
#define SLURM_EXTERN_CONT 0xfffffffc
#endif

enum opt_id {
	OPT_ENVIRONMENT = 1,
	OPT_IMAGE, OPT_MOUNTS, OPT_WORKDIR, OPT_WRITABLE, OPT_READONLY, OPT_ENV,
	OPT_MOUNT_HOME, OPT_NO_MOUNT_HOME, OPT_ENTRYPOINT, OPT_NO_ENTRYPOINT, OPT_NAME,
	OPT_REMAP_ROOT, OPT_NO_REMAP_ROOT, OPT_SAVE,
};

/* The step's state; slurmstepd forks the tasks from it, so the task
 * callbacks see what init_post_opt left. */
static struct {
	char *environment;
	struct container_opts co;
	char *name;
	const char *unsupported;        /* the first option alps cannot honour */
	char *socket;
	bool batch_in_container;
	int timeout_s;
	char *container;                /* the container this step's tasks join */
	bool step_private;              /* prepared for this step: released at its end */
	char *workdir;                  /* for task_init */
	char *pin_note;                 /* srun's verbose line, said once -v counts */
	char *affinity;                 /* the plan's CPU list for this task, or NULL */
	char **defaults;                /* "KEY=VALUE" annotations, NULL-terminated */
	size_t ndefaults;
} st = {
	.co = { .writable = -1, .mount_home = -1, .entrypoint = -1 },
	.timeout_s = 600,
};

static int opt_cb(int val, const char *arg, int remote);

#define OPT(n, a, u, h, v) { (char *)(n), (char *)(a), (char *)(u), h, v, opt_cb }
static struct spank_option options[] = {
	OPT("environment", "EDF", "run in the container an environment definition file "
	    "describes: a path, or a name searched in EDF_PATH (default ~/.edf) [alps]", 1,
	    OPT_ENVIRONMENT),
	OPT("container-image", "IMAGE", "[pyxis] the image to run in [alps]", 1, OPT_IMAGE),
	OPT("container-mounts", "SRC:DST[:FLAGS],...", "[pyxis] bind mounts [alps]", 1, OPT_MOUNTS),
	OPT("container-workdir", "DIR", "[pyxis] working directory in the container [alps]", 1,
	    OPT_WORKDIR),
	OPT("container-writable", NULL, "[pyxis] a writable container [alps]", 0, OPT_WRITABLE),
	OPT("container-readonly", NULL, "[pyxis] a read-only container [alps]", 0, OPT_READONLY),
	OPT("container-env", "NAME,...", "[pyxis] variables taken from the host [alps]", 1, OPT_ENV),
	OPT("container-mount-home", NULL, "[pyxis] bind the home directory [alps]", 0,
	    OPT_MOUNT_HOME),
	OPT("no-container-mount-home", NULL, "[pyxis] do not bind home [alps]", 0, OPT_NO_MOUNT_HOME),
	OPT("container-entrypoint", NULL, "[pyxis] run the image's entrypoint [alps]", 0,
	    OPT_ENTRYPOINT),
	OPT("no-container-entrypoint", NULL, "[pyxis] do not run the entrypoint [alps]", 0,
	    OPT_NO_ENTRYPOINT),
	OPT("container-name", "NAME", "[pyxis] share one container between the job's steps of "
	    "that name [alps]", 1, OPT_NAME),
	OPT("container-remap-root", NULL, "[pyxis] not supported by alps", 0, OPT_REMAP_ROOT),
	OPT("no-container-remap-root", NULL, "[pyxis] accepted: alps never remaps", 0,
	    OPT_NO_REMAP_ROOT),
	OPT("container-save", "PATH", "[pyxis] not supported by alps", 1, OPT_SAVE),
	SPANK_OPTIONS_TABLE_END
};

static void set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = v ? xstrdup(v) : NULL;
}

static int opt_cb(int val, const char *arg, int remote)
{
	(void)remote;
	switch (val) {
	case OPT_ENVIRONMENT: set_str(&st.environment, arg); break;
	case OPT_IMAGE: st.co.image = arg ? xstrdup(arg) : NULL; break;
	case OPT_MOUNTS: st.co.mounts = arg ? xstrdup(arg) : NULL; break;
	case OPT_WORKDIR: st.co.workdir = arg ? xstrdup(arg) : NULL; break;
	case OPT_WRITABLE: st.co.writable = 1; break;
	case OPT_READONLY: st.co.writable = 0; break;
	case OPT_ENV: st.co.env_names = arg ? xstrdup(arg) : NULL; break;
	case OPT_MOUNT_HOME: st.co.mount_home = 1; break;
	case OPT_NO_MOUNT_HOME: st.co.mount_home = 0; break;
	case OPT_ENTRYPOINT: st.co.entrypoint = 1; break;
	case OPT_NO_ENTRYPOINT: st.co.entrypoint = 0; break;
	case OPT_NAME: set_str(&st.name, arg); break;
	case OPT_NO_REMAP_ROOT: break;
	case OPT_REMAP_ROOT: st.unsupported = "--container-remap-root"; break;
	case OPT_SAVE: st.unsupported = "--container-save"; break;
	default: return -1;
	}
	return 0;
}

static bool active(void)
{
	return st.environment || container_opts_given(&st.co) || st.name || st.unsupported;
}

/* A default annotation; a later one of the same KEY replaces it. */
static void add_default(const char *kv)
{
	size_t klen = strcspn(kv, "=") + 1;
	for (size_t i = 0; i < st.ndefaults; i++)
		if (strncmp(st.defaults[i], kv, klen) == 0) {
			free(st.defaults[i]);
			st.defaults[i] = xstrdup(kv);
			return;
		}
	st.defaults = xreallocarray(st.defaults, st.ndefaults + 2, sizeof(char *));
	st.defaults[st.ndefaults++] = xstrdup(kv);
	st.defaults[st.ndefaults] = NULL;
}

/* env=rank,master,placement or env=none: each group's annotation. */
static int parse_env_groups(const char *list)
{
	static const char *const groups[] = { "rank", "master", "placement" };
	bool on[3] = { false, false, false };
	if (strcmp(list, "none") != 0) {
		_cleanup_free_ char *copy = xstrdup(list);
		char *save = NULL;
		for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
			size_t i = 0;
			while (i < 3 && strcmp(g, groups[i]) != 0)
				i++;
			if (i == 3) {
				slurm_error("alps: plugstack.conf: env=: unknown group '%s' (rank, "
					    "master, placement, or none)", g);
				return -1;
			}
			on[i] = true;
		}
	}
	for (size_t i = 0; i < 3; i++) {
		_cleanup_free_ char *kv = xasprintf("com.alps.slurm.%s_env=%s", groups[i],
						    on[i] ? "true" : "false");
		add_default(kv);
	}
	return 0;
}

static int parse_args(int ac, char **av)
{
	for (int i = 0; i < ac; i++) {
		if (strncmp(av[i], "socket=", 7) == 0) {
			set_str(&st.socket, av[i] + 7);
		} else if (strcmp(av[i], "batch=host") == 0) {
			st.batch_in_container = false;
		} else if (strcmp(av[i], "batch=container") == 0) {
			st.batch_in_container = true;
		} else if (strncmp(av[i], "edf_site_dir=", 13) == 0) {
			edf_set_site_dir(av[i] + 13);
		} else if (strncmp(av[i], "annotation=", 11) == 0) {
			if (!slurmjob_default_ok(av[i] + 11)) {
				slurm_error("alps: plugstack.conf: bad annotation '%s' (KEY=VALUE, KEY "
					    "of letters, digits, '.', '_', '-')", av[i] + 11);
				return -1;
			}
			add_default(av[i] + 11);
		} else if (strncmp(av[i], "env=", 4) == 0) {
			if (parse_env_groups(av[i] + 4) < 0)
				return -1;
		} else if (strncmp(av[i], "timeout=", 8) == 0) {
			char *end;
			long v = strtol(av[i] + 8, &end, 10);
			if (*end || v < 1 || v > 86400) {
				slurm_error("alps: plugstack.conf: bad timeout '%s'", av[i] + 8);
				return -1;
			}
			st.timeout_s = (int)v;
		} else {
			slurm_error("alps: plugstack.conf: unknown argument '%s' (socket=, batch=, "
				    "timeout=, edf_site_dir=, annotation=, env=)", av[i]);
			return -1;
		}
	}
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	if (parse_args(ac, av) < 0)
		return -1;
	for (struct spank_option *o = options; o->name; o++)
		if (spank_option_register(sp, o) != ESPANK_SUCCESS)
			slurm_error("alps: cannot register --%s", o->name);
	return 0;
}

/* ---- local side: srun, salloc, sbatch, as the user ---- */

extern char **environ;

#define RESOLVE_TIMEOUT_MS 15000
#define AFFINITY_VAR "ALPS_CPU_AFFINITY"

/* Pin the image's tag to its digest for the whole job (slurmjob.h).  An
 * srun inside an sbatch/salloc job takes the job's pin rather than asking
 * again: its steps must run what the prolog prepared.  Without an alpsd
 * here or a registry answering, the job goes on with the tag. */
static void pin_image(Alps__PrepareRequest *req, const char *tag, bool in_job)
{
	alps_error *err = NULL;
	const char *inherited = getenv(SLURMJOB_PIN_ENV);
	char *pinned = in_job && slurmjob_pin_matches(inherited, tag) ? xstrdup(inherited) :
		slurmjob_resolve(st.socket ? st.socket : WIRE_DEFAULT_SOCKET, tag,
				 RESOLVE_TIMEOUT_MS, &err);
	free(st.pin_note);
	if (pinned && slurmjob_pin(req, pinned, &err) == 0 &&
	    setenv(SLURMJOB_PIN_ENV, pinned, 1) == 0) {
		st.pin_note = xasprintf("alps: image %s pinned to %s", tag,
					pinned + strlen(tag) + 1);
	} else {
		st.pin_note = xasprintf("alps: image %s not pinned to a digest (%s): the nodes use "
					"the tag as they find it", tag,
					err ? err->msg : "cannot set the environment");
		unsetenv(SLURMJOB_PIN_ENV);
	}
	/* srun sets its log level from -v after the options' callbacks: it
	 * says this again in local_user_init. */
	slurm_verbose("%s", st.pin_note);
	alps_error_free(err);
	free(pinned);
}

static int local_post_opt(spank_t sp)
{
	alps_error *err = NULL;
	char cwd[4096];
	if (!getcwd(cwd, sizeof(cwd)))
		cwd[0] = '\0';
	Alps__PrepareRequest *req = NULL;
	_cleanup_free_ char *tag = NULL;
	if (slurmjob_build_ref(st.environment, &st.co, (const char *const *)environ, cwd,
			       (const char *const *)st.defaults, &req,
			       &tag, &err) < 0) {
		slurm_error("alps: %s", err->msg);
		alps_error_free(err);
		return -1;
	}
	if (tag)
		pin_image(req, tag, spank_context() == S_CTX_LOCAL && getenv("SLURM_JOB_ID"));
	_cleanup_free_ char *id = slurmjob_container_id(0, st.name, &err);
	if (!id) {
		slurm_error("alps: %s", err->msg);
		alps_error_free(err);
		slurmjob_request_free(req);
		return -1;
	}
	slurmjob_set_string(&req->job, st.name);
	_cleanup_free_ char *enc = slurmjob_encode(req);
	slurmjob_request_free(req);
	/* Our own environment is what srun and sbatch hand to the job. */
	if (setenv(SLURMJOB_ENV, enc, 1) < 0) {
		slurm_error("alps: cannot set %s: %s", SLURMJOB_ENV, strerror(errno));
		return -1;
	}
	/* The prolog's copy; only before the allocation exists. */
	spank_job_control_setenv(sp, SLURMJOB_ENV, enc, 1);
	return 0;
}

int slurm_spank_local_user_init(spank_t sp, int ac, char **av)
{
	(void)sp;
	(void)ac;
	(void)av;
	if (st.pin_note)
		slurm_verbose("%s", st.pin_note);
	return 0;
}

/* ---- remote side: slurmstepd, as root ---- */

/* A copy of a job environment variable, any size.  Caller frees. */
static char *job_getenv(spank_t sp, const char *name)
{
	for (int size = 4096; size <= (int)SLURMJOB_MAX_ENCODED * 2; size *= 4) {
		char *buf = xmalloc((size_t)size);
		spank_err_t rc = spank_getenv(sp, name, buf, size);
		if (rc == ESPANK_SUCCESS)
			return buf;
		free(buf);
		if (rc != ESPANK_NOSPACE)
			return NULL;
	}
	return NULL;
}

static int connect_daemon(struct wire_client *c, alps_error **err)
{
	return wire_connect(c, st.socket ? st.socket : WIRE_DEFAULT_SOCKET, "alps-spank", err);
}

/* Prepare container for uid from req; 1 when the job's container exists
 * with another environment (CONFLICT), 0 when ready. */
static int prepare(Alps__PrepareRequest *req, const char *container, uid_t uid, uint32_t tasks,
		   alps_error **err)
{
	struct wire_client c;
	if (connect_daemon(&c, err) < 0)
		return -1;
	char user[16];
	snprintf(user, sizeof(user), "%u", (unsigned)uid);
	slurmjob_set_string(&req->job, container);
	slurmjob_set_string(&req->user, user);
	req->tasks = tasks;
	Alps__Request r = ALPS__REQUEST__INIT;
	r.op_case = ALPS__REQUEST__OP_PREPARE;
	r.prepare = req;
	Alps__Response *resp = wire_call(&c, &r, NULL, 0, NULL, NULL, st.timeout_s * 1000, err);
	/* Another step (or a second prolog on this host) is preparing it:
	 * wait for that one, within the same bound. */
	for (int waited_ms = 0; resp && resp->status == ALPS__STATUS__BUSY &&
	     waited_ms < st.timeout_s * 1000; waited_ms += 200) {
		alps__response__free_unpacked(resp, NULL);
		usleep(200 * 1000);
		resp = wire_call(&c, &r, NULL, 0, NULL, NULL, st.timeout_s * 1000, err);
	}
	wire_close(&c);
	if (!resp)
		return -1;
	int rc = 0;
	if (resp->status == ALPS__STATUS__CONFLICT)
		rc = 1;
	else if (resp->status != ALPS__STATUS__OK)
		rc = alps_fail(err, ALPS_E_INTERNAL, "preparing %s: %s", container,
			       resp->message ? resp->message : "failed");
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

static int step_ids(spank_t sp, uint32_t *job, uint32_t *step, uid_t *uid, uint32_t *tasks)
{
	if (spank_get_item(sp, S_JOB_ID, job) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_STEPID, step) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_UID, uid) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_LOCAL_TASK_COUNT, tasks) != ESPANK_SUCCESS) {
		slurm_error("alps: cannot read the step's ids from Slurm");
		return -1;
	}
	return 0;
}

static int remote_post_opt(spank_t sp)
{
	uint32_t job, step, tasks;
	uid_t uid;
	if (step_ids(sp, &job, &step, &uid, &tasks) < 0)
		return -1;
	if (step == SLURM_EXTERN_CONT || (step == SLURM_BATCH_SCRIPT && !st.batch_in_container))
		return 0;
	_cleanup_free_ char *enc = job_getenv(sp, SLURMJOB_ENV);
	alps_error *err = NULL;
	Alps__PrepareRequest *req = NULL;
	if (!enc) {
		slurm_error("alps: %s is missing from the job's environment (was the job submitted "
			    "with --export=NONE?)", SLURMJOB_ENV);
		return -1;
	}
	if (slurmjob_decode(enc, &req, &err) < 0)
		goto fail;
	st.container = slurmjob_container_id(job, req->job && *req->job ? req->job : NULL, &err);
	if (!st.container)
		goto fail;
	slurmjob_set_string(&req->job, NULL);
	/* No task count at prepare: Slurm may run more tasks than the node can
	 * place (--overcommit), which must not fail the step; placement is
	 * per task, at attach. */
	(void)tasks;
	int rc = prepare(req, st.container, uid, 0, &err);
	if (rc == 1 && !st.name) {
		/* The prolog prepared another environment for the job. */
		free(st.container);
		st.container = xasprintf("%u.step%u", (unsigned)job, (unsigned)step);
		st.step_private = true;
		rc = prepare(req, st.container, uid, 0, &err);
	}
	if (rc == 1)
		alps_fail(&err, ALPS_E_CONFLICT, "container %s exists with another environment",
			  st.container);
	if (rc != 0)
		goto fail;
	slurmjob_request_free(req);
	return 0;
fail:
	slurm_error("alps: %s", err ? err->msg : "prepare failed");
	alps_error_free(err);
	slurmjob_request_free(req);
	return -1;
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	if (!active())
		return 0;
	if (st.unsupported) {
		slurm_error("alps: %s is not supported by alps", st.unsupported);
		return -1;
	}
	switch (spank_context()) {
	case S_CTX_LOCAL:
	case S_CTX_ALLOCATOR:
		return local_post_opt(sp);
	case S_CTX_REMOTE:
		return remote_post_opt(sp);
	default:
		return 0;
	}
}

/* ---- each task ---- */

static int attach_request(spank_t sp, uid_t uid, Alps__AttachRequest *a, char ***envp)
{
	int id;
	uint32_t gid = 0, ntasks = 0, job = 0, local = 0;
	if (spank_get_item(sp, S_TASK_ID, &id) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_LOCAL_TASK_COUNT, &local) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_TASK_GLOBAL_ID, &gid) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_TOTAL_TASK_COUNT, &ntasks) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_ENV, envp) != ESPANK_SUCCESS) {
		slurm_error("alps: cannot read the task's ids from Slurm");
		return -1;
	}
	a->job = st.container;
	a->uid = uid;
	a->local_rank = (uint32_t)id;
	a->global_rank = gid;
	/* The batch step (batch=container) counts no tasks: its script is
	 * the one. */
	a->ntasks = ntasks ? ntasks : 1;
	a->slurm_job_id = job;
	a->local_tasks = local;
	return 0;
}

/* The task's environment without our own carrier variable. */
static char **task_env(char **env, size_t *n)
{
	size_t cnt = 0;
	while (env && env[cnt])
		cnt++;
	char **v = xcalloc(cnt + 1, sizeof(char *));
	*n = 0;
	for (size_t i = 0; i < cnt; i++)
		if (strncmp(env[i], SLURMJOB_ENV "=", sizeof(SLURMJOB_ENV)) != 0)
			v[(*n)++] = env[i];
	return v;
}

/* Make the task's environment exactly want. */
static void replace_env(spank_t sp, char **have, char **want, size_t nwant)
{
	/* Names first: spank_unsetenv changes the array we walk. */
	size_t nhave = 0;
	while (have && have[nhave])
		nhave++;
	char **names = xcalloc(nhave + 1, sizeof(char *));
	for (size_t i = 0; i < nhave; i++)
		names[i] = xstrndup(have[i], strcspn(have[i], "="));
	for (size_t i = 0; i < nhave; i++) {
		spank_unsetenv(sp, names[i]);
		free(names[i]);
	}
	free(names);
	for (size_t i = 0; i < nwant; i++) {
		char *eq = strchr(want[i], '=');
		if (!eq || eq == want[i])
			continue;
		*eq = '\0';
		spank_setenv(sp, want[i], eq + 1, 1);
		*eq = '=';
	}
}

/* The batch step in the container (batch=container): Slurm execs the
 * script from its spool directory, which the container does not see.
 * Open it while still on the host; the task then execs it as
 * /proc/self/fd/N (the descriptor is left open across exec on purpose:
 * the script's interpreter reads it from there).  *fd: -1 for another
 * step. */
static int batch_script_open(spank_t sp, int *fd, char ***argvp)
{
	uint32_t step = 0;
	int argc = 0;
	char **argv = NULL;
	*fd = -1;
	if (spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS || step != SLURM_BATCH_SCRIPT)
		return 0;
	if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc < 1 ||
	    !argv[0]) {
		slurm_error("alps: cannot read the batch script's path from Slurm");
		return -1;
	}
	*fd = open(argv[0], O_RDONLY | O_NOFOLLOW);
	if (*fd < 0) {
		slurm_error("alps: cannot open the batch script %s: %s", argv[0], strerror(errno));
		return -1;
	}
	*argvp = argv;
	return 0;
}

static int join(spank_t sp, const Alps__AttachReply *ar, int nsfd, char **have)
{
	int script = -1;
	char **argv = NULL;
	if (batch_script_open(sp, &script, &argv) < 0)
		return -1;
	if (setns(nsfd, CLONE_NEWNS) < 0) {
		slurm_error("alps: setns into job %s: %s", st.container, strerror(errno));
		if (script >= 0)
			close(script);
		return -1;
	}
	/* Slurm execs task->argv, which S_JOB_ARGV hands out (not a copy),
	 * in this process only. */
	if (script >= 0)
		argv[0] = xasprintf("/proc/self/fd/%d", script);
	replace_env(sp, have, ar->env, ar->n_env);
	set_str(&st.workdir, ar->workdir && *ar->workdir ? ar->workdir : "/");
	for (size_t i = 0; i < ar->n_env; i++)
		if (strncmp(ar->env[i], AFFINITY_VAR "=", sizeof(AFFINITY_VAR)) == 0)
			set_str(&st.affinity, ar->env[i] + sizeof(AFFINITY_VAR));
	return 0;
}

int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	if (!st.container)
		return 0;
	uid_t uid;
	if (spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS)
		return -1;
	Alps__AttachRequest a = ALPS__ATTACH_REQUEST__INIT;
	char **env = NULL;
	if (attach_request(sp, uid, &a, &env) < 0)
		return -1;
	_cleanup_free_ char *nodes = job_getenv(sp, "SLURM_STEP_NODELIST");
	if (!nodes)
		nodes = job_getenv(sp, "SLURM_JOB_NODELIST");
	a.nodelist = nodes;
	_cleanup_free_ char **tenv = task_env(env, &a.n_env);
	a.env = tenv;
	Alps__Request r = ALPS__REQUEST__INIT;
	r.op_case = ALPS__REQUEST__OP_ATTACH;
	r.attach = &a;
	alps_error *err = NULL;
	struct wire_client c;
	Alps__Response *resp = NULL;
	int nsfd = -1, rc = -1;
	if (connect_daemon(&c, &err) < 0)
		goto out;
	resp = wire_call(&c, &r, NULL, 0, NULL, NULL, 60000, &err);
	if (resp && frame_reader_take_fds(&c.reader, &nsfd, 1) != 1)
		nsfd = -1;
	wire_close(&c);
	if (!resp)
		goto out;
	if (resp->status != ALPS__STATUS__OK || !resp->attach_reply || nsfd < 0) {
		alps_fail(&err, ALPS_E_INTERNAL, "attaching to %s: %s", st.container,
			  resp->message && *resp->message ? resp->message : "no namespace");
		goto out;
	}
	rc = join(sp, resp->attach_reply, nsfd, env);
out:
	if (err)
		slurm_error("alps: %s", err->msg);
	alps_error_free(err);
	if (resp)
		alps__response__free_unpacked(resp, NULL);
	if (nsfd >= 0)
		close(nsfd);
	return rc;
}

/* "0-3,8,10-11" into set; -1 if malformed or beyond CPU_SETSIZE. */
static int parse_cpu_list(const char *s, cpu_set_t *set)
{
	CPU_ZERO(set);
	while (*s) {
		char *end;
		errno = 0;
		unsigned long lo = strtoul(s, &end, 10), hi = lo;
		if (end == s || errno)
			return -1;
		if (*end == '-') {
			s = end + 1;
			hi = strtoul(s, &end, 10);
			if (end == s || errno)
				return -1;
		}
		if (lo > hi || hi >= CPU_SETSIZE || (*end && *end != ','))
			return -1;
		for (unsigned long c = lo; c <= hi; c++)
			CPU_SET(c, set);
		s = *end ? end + 1 : end;
	}
	return CPU_COUNT(set) > 0 ? 0 : -1;
}

/* The placement plan's CPUs as the task's affinity, in task_init: the
 * last hook before exec, after every binding Slurm's task plugins do
 * (22.05's task/affinity binds before task_init_privileged already; a
 * later Slurm binding there would undo a mask set in that hook).  The
 * kernel keeps the mask within the step's cpuset cgroup. */
static int apply_affinity(void)
{
	cpu_set_t set;
	if (parse_cpu_list(st.affinity, &set) < 0) {
		slurm_error("alps: bad %s '%s' from alpsd", AFFINITY_VAR, st.affinity);
		return -1;
	}
	if (sched_setaffinity(0, sizeof(set), &set) < 0) {
		slurm_error("alps: cannot run the task on CPUs %s (the step's allocation?): %s",
			    st.affinity, strerror(errno));
		return -1;
	}
	return 0;
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void)sp;
	(void)ac;
	(void)av;
	if (!st.workdir)
		return 0;
	if (chdir(st.workdir) < 0) {
		slurm_error("alps: cannot enter the workdir %s in the container: %s", st.workdir,
			    strerror(errno));
		return -1;
	}
	return st.affinity ? apply_affinity() : 0;
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	if (spank_context() != S_CTX_REMOTE || !st.step_private || !st.container)
		return 0;
	alps_error *err = NULL;
	struct wire_client c;
	if (connect_daemon(&c, &err) == 0) {
		Alps__ReleaseRequest rr = ALPS__RELEASE_REQUEST__INIT;
		rr.job = st.container;
		Alps__Request r = ALPS__REQUEST__INIT;
		r.op_case = ALPS__REQUEST__OP_RELEASE;
		r.release = &rr;
		Alps__Response *resp = wire_call(&c, &r, NULL, 0, NULL, NULL, 60000, &err);
		if (resp && resp->status != ALPS__STATUS__OK)
			slurm_error("alps: releasing %s: %s", st.container, resp->message);
		if (resp)
			alps__response__free_unpacked(resp, NULL);
		wire_close(&c);
	}
	if (err)
		slurm_error("alps: releasing %s: %s", st.container, err->msg);
	alps_error_free(err);
	(void)sp;
	return 0;
}
