/* op_job.c: Prepare (Release and Jobs are in op_release.c, Exec in op_exec.c).
 *
 * prepare, as a sequence of steps that alternate between a worker thread
 * (blocking: NSS, EDF parsing, the store, files, building the namespace)
 * and the loop (pulls, the fabric, the reply); the loop never waits on
 * sqlite (its busy timeout is seconds):
 *   check   (loop)    what the request asks that this node cannot honour
 *   resolve (worker)  user, groups, the merged and expanded EDF; then
 *           (worker)  an existing job (idempotence), or the image
 *   pull    (loop)    when the image is missing; then the image row (worker)
 *   found   (loop)    the fabric map and pin
 *   setup   (worker)  the job row (which keeps the image from removal),
 *                     ns_prepare(), the row's state; on failure the row goes
 *   finish  (loop)    the reply
 * Release and the jobs list are in op_release.c. */
#include <config.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/log.h"
#include "common/ref.h"
#include "daemon/settings.h"
#include "daemon/hooks/hooks.h"
#include "daemon/hooks/inject.h"
#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/ops/ops.h"
#include "daemon/image/pull.h"
#include "daemon/job/cgroup.h"
#include "daemon/job/ns.h"
#include "daemon/job/plan.h"
#include "daemon/node/fabric.h"
#include "daemon/node/place.h"
#include "daemon/job/jobenv.h"
#include "daemon/ops/runjobs.h"
#include "daemon/store/store.h"
#include "daemon/server/work.h"

#define MAX_GROUPS 256

struct prep {
	struct request *rq;
	struct daemon *d;
	struct snapshot snap;           /* the settings it runs with, start to end */
	/* from the request */
	char *job;
	char *user_arg;
	struct edf_source *sources;
	size_t nsources;
	char *image_arg;
	char **caller_env;              /* NULL-terminated */
	char *cwd;
	uint32_t tasks;
	bool run;
	char **nodes;                   /* NULL-terminated; the job's node list */
	size_t nnodes;
	/* resolved */
	uid_t uid;
	gid_t gid;
	gid_t groups[MAX_GROUPS];
	size_t ngroups;
	char *user_name;
	struct edf *edf;                /* NULL when prepared from --image */
	char *image_ref;                /* canonical reference, or NULL */
	char *pulled;                   /* the manifest digest a pull committed */
	char *image_sqsh;               /* a squashfs file the user named, or NULL */
	char *fingerprint;              /* what makes two prepares "the same" */
	struct store_image *img;
	char *env_json;                 /* the job row's environment_json */
	struct hook_job *hooks;         /* devices and hooks (daemon/hooks) */
	struct ns_result ns;
	char *map_path;                 /* the job's fabric map on the host, or NULL */
	char **down;                    /* peers down at prepare (fabric_strv_free) */
	size_t ndown;
	alps_error *err;                /* a worker step's failure */
	bool row_inserted;
	/* found by the lookup (worker) */
	struct store_job *existing;     /* a job of that id already, or NULL */
	bool need_pull;
	json_t *map;                    /* the fabric map to write, or NULL */
	/* 'alps run' */
	bool admitted;                  /* counted by runjobs */
	pid_t owner_pid;
	uint64_t owner_start;
	char **warnings;                /* NULL-terminated, for the reply */
	size_t nwarnings;
};

static void prep_free(struct prep *p)
{
	request_unref(p->rq);
	snapshot_drop(&p->snap);
	free(p->job);
	free(p->user_arg);
	edf_sources_free(p->sources, p->nsources);
	free(p->image_arg);
	edf_strv_free(p->caller_env);
	free(p->cwd);
	free(p->user_name);
	edf_free(p->edf);
	free(p->image_ref);
	free(p->pulled);
	free(p->image_sqsh);
	free(p->fingerprint);
	store_image_free(p->img);
	free(p->env_json);
	hooks_job_free(p->hooks);
	ns_result_free(&p->ns);
	edf_strv_free(p->nodes);
	if (p->down)
		fabric_strv_free(p->down);
	free(p->map_path);
	alps_error_free(p->err);
	store_job_free(p->existing);
	json_decref(p->map);
	edf_strv_free(p->warnings);
	free(p);
}

/* End the request with p->err or err, and free p.  Loop thread: what a
 * worker step set up, it has undone already (prep_undo). */
static void prep_fail(struct prep *p, alps_error *err)
{
	if (!err) {
		err = p->err;
		p->err = NULL;
	}
	if (p->admitted)
		runjob_forget(p->job);
	log_event(LOG_LVL_WARN, "prepare", "job", p->job, "user", p->user_name, "uid",
		  LOG_U64(p->uid), "result", "error", "error", err->msg, NULL);
	/* A prolog's log wants the job named; alps run's id is made up. */
	if (!p->run && p->job && !strstr(err->msg, p->job))
		alps_error_prefix(&err, "job %s", p->job);
	request_fail(p->rq, err);
	prep_free(p);
}

/* ---- resolve (worker) ---- */

static int resolve_user(struct prep *p, alps_error **err)
{
	char buf[16384];
	struct passwd pw, *res = NULL;
	char *end;
	errno = 0;
	unsigned long n = strtoul(p->user_arg, &end, 10);
	int rc;
	if (*p->user_arg && *end == '\0')
		rc = getpwuid_r((uid_t)n, &pw, buf, sizeof(buf), &res);
	else
		rc = getpwnam_r(p->user_arg, &pw, buf, sizeof(buf), &res);
	if (!res) {
		/* A uid with no passwd entry is still a user the job may run as. */
		if (*p->user_arg && *end == '\0' && n < 0x7fffffff) {
			p->uid = (uid_t)n;
			p->gid = (gid_t)n;
			p->user_name = xasprintf("%lu", n);
			return 0;
		}
		return alps_fail(err, ALPS_E_NOT_FOUND, "user '%s' does not exist%s%s", p->user_arg,
				 rc ? ": " : "", rc ? strerror(rc) : "");
	}
	if (res->pw_uid == 0 && !p->run)
		return alps_fail(err, ALPS_E_PERMISSION, "jobs do not run as root");
	p->uid = res->pw_uid;
	p->gid = res->pw_gid;
	p->user_name = xstrdup(res->pw_name);
	int ng = MAX_GROUPS;
	if (getgrouplist(res->pw_name, res->pw_gid, p->groups, &ng) < 0)
		ng = MAX_GROUPS;
	p->ngroups = (size_t)ng;
	return 0;
}

/* The EDF is expanded in the job user's world (alps-edf(5)): the job's
 * environment as the caller passes it, with USER, LOGNAME, HOME and UID
 * of the job's user, never those of a root prolog. */
static char **prep_user_env(const struct prep *p)
{
	char buf[16384];
	struct passwd pw, *res = NULL;
	if (getpwuid_r(p->uid, &pw, buf, sizeof(buf), &res) != 0)
		res = NULL;
	return edf_user_env((const char *const *)p->caller_env, p->user_name, p->uid,
			    res ? res->pw_dir : NULL);
}

static int resolve_edf(struct prep *p, alps_error **err)
{
	struct edf_source_set set = { .v = p->sources, .n = p->nsources };
	struct edf_loader loader = { .load = edf_source_load, .arg = &set };
	/* alps run: the caller is the job's user, its environment the job's. */
	char **env = p->run ? NULL : prep_user_env(p);
	struct edf_context ctx = {
		.caller_env = (const char *const *)(env ? env : p->caller_env), .cwd = p->cwd,
	};
	int rc = edf_load_all_ctx(p->sources[0].name, &loader, &ctx, &p->edf, NULL, NULL, err);
	if (rc == 0)
		rc = edf_expand(p->edf, &ctx, err);
	edf_strv_free(env);
	if (rc < 0 || edf_job_check(p->edf, err) < 0)
		return -1;
	switch (p->edf->image_kind) {
	case EDF_IMAGE_REF:
		p->image_ref = ref_format(&p->edf->ref);
		return 0;
	case EDF_IMAGE_SQUASHFS:
		p->image_sqsh = xstrdup(edf_image(p->edf));
		return 0;
	default:
		return alps_fail(err, ALPS_E_INVALID, "%s names no image: a job needs one",
				 p->edf->name);
	}
}

static int resolve_image_arg(struct prep *p, alps_error **err)
{
	struct image_ref ref;
	if (ref_parse(p->image_arg, p->snap.cfg->default_registry, &ref, err) < 0)
		return -1;
	p->image_ref = ref_format(&ref);
	ref_free(&ref);
	return 0;
}

static void prep_resolve_user(void *arg)
{
	struct prep *p = arg;
	alps_error *err = NULL;
	if (resolve_user(p, &err) < 0 ||
	    (p->nsources ? resolve_edf(p, &err) : resolve_image_arg(p, &err)) < 0) {
		p->err = err;
		return;
	}
	json_t *fp = json_pack("{s:s?, s:s?, s:I, s:o}", "image", p->image_ref, "sqsh",
			       p->image_sqsh, "uid", (json_int_t)p->uid, "edf",
			       p->edf ? edf_to_json(p->edf, false) : json_null());
	p->fingerprint = json_dumps(fp, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(fp);
}

/* What the store knows an image by: a reference pinned to a digest
 * (name:tag@digest, as the Slurm plugin pins a job's image) by the digest,
 * since the tag may point elsewhere now. */
static const char *image_key(const char *ref)
{
	const char *at = strchr(ref, '@');
	return at ? at + 1 : ref;
}

/* The store's view (worker): a job of that id already, else the image or
 * the need of a pull. */
static void prep_lookup(struct prep *p)
{
	if (p->err)
		return;
	if (p->run)
		p->owner_start = runjob_proc_start(p->owner_pid);
	alps_error *err = NULL;
	if (store_job_get(p->d->store, p->job, &p->existing, &err) == 0) {
		if (p->existing->image_digest)
			store_image_find(p->d->store, p->existing->image_digest, STORE_UID_ANY,
					 &p->img, NULL);
		return;
	}
	if (err->code != ALPS_E_NOT_FOUND) {
		p->err = err;
		return;
	}
	alps_error_free(err);
	err = NULL;
	if (!p->image_ref ||
	    store_image_find(p->d->store, image_key(p->image_ref), (int64_t)p->uid, &p->img,
			     &err) == 0)
		return;
	if (err->code == ALPS_E_NOT_FOUND) {
		p->need_pull = true;
		alps_error_free(err);
	} else {
		p->err = err;
	}
}

static void prep_resolve(void *arg)
{
	prep_resolve_user(arg);
	prep_lookup(arg);
}

/* ---- build (worker) ---- */

/* out: jobs.default_mounts expanded for the job's user (edf_site_mount);
 * the caller frees out->v with edf_strv_free.  (Only the list is copied:
 * the settings snapshot is shared with other threads.) */
static int site_mounts(const struct prep *p, struct strlist *out, alps_error **err)
{
	const struct strlist *dm = &p->snap.cfg->default_mounts;
	out->v = xcalloc(dm->n + 1, sizeof(char *));
	out->n = 0;
	char **env = prep_user_env(p);
	int rc = 0;
	for (size_t i = 0; i < dm->n && rc == 0; i++)
		if ((rc = edf_site_mount(dm->v[i], i, (const char *const *)env, &out->v[i],
					 err)) == 0)
			out->n++;
	edf_strv_free(env);
	return rc;
}

/* The OCI hooks of the create stages, once the namespace is there; a
 * failure releases it. */
static int prep_hooks_run(struct prep *p, alps_error **err)
{
	_cleanup_free_ char *bundle = xasprintf("%s/jobs/%s", p->snap.cfg->run_dir, p->job);
	if (hooks_job_run_create(p->hooks, p->edf, p->job, bundle, err) == 0) {
		/* What the hooks did, for `alps jobs`; losing it fails nothing. */
		alps_error *e2 = NULL;
		p->env_json = hooks_job_record_runs(p->hooks, p->env_json);
		if (store_job_set_environment(p->d->store, p->job, p->env_json, &e2) < 0) {
			log_warn("job %s: cannot record its hooks: %s", p->job, e2->msg);
			alps_error_free(e2);
		}
		return 0;
	}
	alps_error *e2 = NULL;
	if (job_release(p->snap.cfg->run_dir, p->job, &e2) < 0)
		alps_error_free(e2);
	ns_result_free(&p->ns);
	return -1;
}

/* ---- build (worker) ---- */

/* Jobs build in parallel, each in a helper program of its own (ns.h);
 * the worker waits for it at most jobs.prepare_timeout. */
static void prep_build(void *arg)
{
	struct prep *p = arg;
	struct job_mounts jm;
	alps_error *err = NULL;
	struct strlist site;
	int rc = site_mounts(p, &site, &err);
	if (rc == 0)
		rc = jobenv_mounts(&site, p->edf, &jm, &err);
	edf_strv_free(site.v);
	if (rc < 0) {
		p->err = err;
		return;
	}
	if (p->map_path)
		jobenv_mounts_add_site(&jm, p->map_path, JOBENV_FABRIC_MAP, true);
	hooks_job_add_mounts(p->hooks, &jm);
	_cleanup_free_ char *workdir = jobenv_workdir(p->edf, p->img);
	size_t n = p->img ? p->img->nlayers : 0;
	const char **files = xcalloc(n + 1, sizeof(char *));
	const char **ids = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		files[i] = p->img->layers[i].path;
		ids[i] = p->img->layers[i].digest;
	}
	struct job_spec spec = {
		.run_dir = p->snap.cfg->run_dir, .job = p->job, .uid = p->uid, .gid = p->gid,
		.groups = p->groups, .ngroups = p->ngroups, .user_name = p->user_name,
		.layers = files, .layer_ids = ids, .nlayers = n, .image_sqsh = p->image_sqsh,
		.writable = p->edf ? edf_writable(p->edf) : true,
		.workdir = workdir,
		.site_mounts = jm.site, .nsite_mounts = jm.nsite,
		.mounts = jm.user, .nmounts = jm.nuser,
		.devices = (const char *const *)p->snap.cfg->devices.v, .ndevices = p->snap.cfg->devices.n,
		.extra_devices = p->hooks->devices, .nextra_devices = p->hooks->ndevices,
		.tmp_size = p->snap.cfg->tmp_size, .shm_size = p->snap.cfg->shm_size,
		.upper_size = p->snap.cfg->upper_size,
		.prepare_timeout_ms = (unsigned)p->snap.cfg->prepare_timeout_s * 1000u,
	};
	if (ns_prepare(&spec, &p->ns, &err) < 0 || prep_hooks_run(p, &err) < 0)
		p->err = err;
	free(files);
	free(ids);
	jobenv_mounts_free(&jm);
}

/* ---- loop steps ---- */

static void prep_reply(struct prep *p, bool already)
{
	Alps__PrepareReply pr = ALPS__PREPARE_REPLY__INIT;
	pr.job = p->job;
	pr.image_digest = p->img ? p->img->digest : (char *)"";
	pr.already_prepared = already;
	pr.down_peers = p->down;
	pr.n_down_peers = p->ndown;
	pr.warnings = p->warnings;
	pr.n_warnings = p->nwarnings;
	char **mounts = xcalloc(p->ns.nmounts + 1, sizeof(char *));
	for (size_t i = 0; i < p->ns.nmounts; i++)
		mounts[i] = jobenv_mount_text(&p->ns.mounts[i]);
	pr.mounts = mounts;
	pr.n_mounts = p->ns.nmounts;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_PREPARE_REPLY;
	resp.prepare_reply = &pr;
	request_finish(p->rq, &resp);
	edf_strv_free(mounts);
}

static void prep_built(void *arg)
{
	struct prep *p = arg;
	if (p->err)
		return prep_fail(p, NULL);
	log_event(LOG_LVL_NOTICE, "prepare", "job", p->job, "user", p->user_name, "uid",
		  LOG_U64(p->uid), "image", p->image_ref ? p->image_ref : p->image_sqsh, "seconds",
		  LOG_SECONDS(request_age_ns(p->rq)), "result", "ok", NULL);
	prep_reply(p, false);
	if (p->admitted)
		runjob_prepared(p->job);
	prep_free(p);
}

/* ---- setup (worker) ---- */

static int prep_write_map(struct prep *p, alps_error **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/maps", p->snap.cfg->run_dir);
	if (mkdir_p(dir, 0755) < 0)
		return alps_fail_errno(err, "cannot create %s", dir);
	if (json_dump_file(p->map, p->map_path, JSON_INDENT(2) | JSON_SORT_KEYS) < 0)
		return alps_fail(err, ALPS_E_IO, "cannot write the fabric map %s", p->map_path);
	return 0;
}

/* The job's row (and its fabric map file), before the namespace exists. */
static int prep_record(struct prep *p, alps_error **err)
{
	if (p->map && prep_write_map(p, err) < 0)
		return -1;
	p->env_json = jobenv_json(p->edf, p->img, p->fingerprint, p->tasks,
				  p->map_path ? JOBENV_FABRIC_MAP : NULL);
	p->env_json = hooks_job_env_json(p->hooks, p->env_json);
	if (p->run) {
		char *with = runjob_env_with_owner(p->env_json, p->owner_pid, p->owner_start);
		free(p->env_json);
		p->env_json = with;
	}
	struct store_job row = {
		.id = p->job, .uid = p->uid, .user = p->user_name,
		.image_digest = p->img ? p->img->digest : NULL, .state = STORE_JOB_PREPARING,
		.environment_json = p->env_json, .mounts = NULL,
	};
	if (store_job_insert(p->d->store, &row, err) < 0) {
		/* Another prepare of this id got its row in first (both found no
		 * job at lookup: two prologs of one job on one alpsd, several
		 * slurmd on a host).  Busy, so the caller asks again and then
		 * gets that job's answer: already prepared, or a conflict. */
		if ((*err)->code != ALPS_E_EXISTS)
			return -1;
		alps_error_free(*err);
		*err = NULL;
		return alps_fail(err, ALPS_E_BUSY, "job %s is being prepared by another request; "
				 "try again", p->job);
	}
	p->row_inserted = true;
	if (p->img)
		store_image_touch(p->d->store, p->img->digest, NULL);
	return 0;
}

/* The namespace is there: the table says so, or the namespace goes. */
static int prep_mark_ready(struct prep *p, alps_error **err)
{
	_cleanup_free_ char *mounts = jobenv_mounts_text(&p->ns);
	if (store_job_set_mounts(p->d->store, p->job, mounts, err) == 0 &&
	    store_job_update_state(p->d->store, p->job, STORE_JOB_READY, err) == 0)
		return 0;
	alps_error *e2 = NULL;
	if (job_release(p->snap.cfg->run_dir, p->job, &e2) < 0)
		alps_error_free(e2);
	return -1;
}

/* What a failed setup left: the row and the map file. */
static void prep_undo(struct prep *p)
{
	alps_error *e2 = NULL;
	if (p->row_inserted && store_job_delete(p->d->store, p->job, &e2) < 0) {
		log_error("job %s: cannot drop its row after a failed prepare: %s", p->job, e2->msg);
		alps_error_free(e2);
	}
	p->row_inserted = false;
	if (p->map_path)
		unlink(p->map_path);
}

static void prep_warn(struct prep *p, const char *fmt, ...) ALPS_PRINTF(2, 3);

/* The hooks' libraries from the node's injection cache (inject.h). */
static int prep_inject(struct prep *p, alps_error **err)
{
	size_t n = p->img ? p->img->nlayers : 0;
	_cleanup_free_ const char **files = xcalloc(n + 1, sizeof(char *));
	_cleanup_free_ const char **ids = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		files[i] = p->img->layers[i].path;
		ids[i] = p->img->layers[i].digest;
	}
	struct inject_image img = {
		.digest = p->img ? p->img->digest : NULL, .layer_files = files, .layer_ids = ids,
		.nlayers = n, .config_json = p->img ? p->img->config_json : NULL,
	};
	return hooks_job_inject(p->snap.cfg, p->hooks, &img, err);
}

static void prep_setup(void *arg)
{
	struct prep *p = arg;
	alps_error *err = NULL;
	if (jobenv_check_annotations(p->edf, &err) < 0 ||
	    hooks_job_resolve(p->snap.cfg, p->edf, p->img ? p->img->config_json : NULL, &p->hooks,
			      &err) < 0 || prep_inject(p, &err) < 0 || prep_record(p, &err) < 0)
		p->err = err;
	else
		prep_build(p);
	for (size_t i = 0; p->hooks && i < p->hooks->nwarnings; i++)
		prep_warn(p, "%s", p->hooks->warnings[i]);
	if (!p->err && prep_mark_ready(p, &err) < 0)
		p->err = err;
	if (p->err)
		prep_undo(p);
}

/* With a node list and warm fabric: the job's map (node -> addresses,
 * liveness) from the peer table, written where the job will see it, and
 * the image digest pinned for the other nodes when this node is the
 * first.  Peers that are down are reported, not fatal: the prolog
 * decides. */
static int prep_fabric(struct prep *p, alps_error **err)
{
	struct fabric *f = p->d->fabric;
	if (!f || p->nnodes == 0)
		return 0;
	json_t *map = NULL;
	if (fabric_job_map(f, (const char *const *)p->nodes, p->nnodes, &map, &p->down, &p->ndown,
			   err) < 0)
		return -1;
	_cleanup_free_ char *dir = xasprintf("%s/maps", p->snap.cfg->run_dir);
	/* Written by the setup step: no file system work on the loop. */
	p->map_path = xasprintf("%s/%s.json", dir, p->job);
	p->map = map;
	if (p->img && p->image_ref && strcmp(p->nodes[0], p->d->node_name) == 0 &&
	    fabric_publish_pin(f, p->job, p->image_ref, p->img->digest,
			       (const char *const *)p->nodes, p->nnodes, err) < 0)
		return -1;
	return 0;
}

/* The image is in the store (or is a user's squashfs): the fabric's part,
 * then record the job and build its namespace. */
static void prep_found(struct prep *p)
{
	alps_error *err = NULL;
	if (prep_fabric(p, &err) < 0)
		return prep_fail(p, err);
	if (work_submit(p->d, prep_setup, prep_built, p, &err) < 0)
		return prep_fail(p, err);
}

/* After a pull: the image's row (worker), then on. */
static void prep_find_image(void *arg)
{
	struct prep *p = arg;
	alps_error *err = NULL;
	if (store_image_find(p->d->store, p->pulled ? p->pulled : image_key(p->image_ref),
			     (int64_t)p->uid, &p->img, &err) < 0)
		p->err = err;
}

static void prep_image_found(void *arg)
{
	struct prep *p = arg;
	if (p->err)
		return prep_fail(p, NULL);
	prep_found(p);
}

static void prep_pull_progress(void *arg, const struct pull_status *st)
{
	struct prep *p = arg;
	/* A prolog's log gets the phases and totals, not every layer. */
	ops_send_pull_progress(p->rq, st, false);
}

static void prep_pull_done(void *arg, const struct pull_result *res, const alps_error *err)
{
	struct prep *p = arg;
	if (err) {
		alps_error *copy = NULL;
		alps_fail(&copy, err->code, "%s", err->msg);
		return prep_fail(p, copy);
	}
	p->pulled = xstrdup(res->digest);
	alps_error *e2 = NULL;
	if (work_submit(p->d, prep_find_image, prep_image_found, p, &e2) < 0)
		prep_fail(p, e2);
}

static const struct pull_waiter_ops prep_pull_ops = {
	.progress = prep_pull_progress,
	.done = prep_pull_done,
};

/* An existing job (p->existing, p->img from the lookup): the same
 * environment is done already, another is an error. */
static void prep_existing(struct prep *p)
{
	const struct store_job *job = p->existing;
	_cleanup_free_ char *fp = jobenv_fingerprint(job->environment_json);
	bool same = fp && p->fingerprint && strcmp(fp, p->fingerprint) == 0;
	if (same && job->state == STORE_JOB_READY) {
		prep_reply(p, true);
		prep_free(p);
		return;
	}
	alps_error *err = NULL;
	alps_fail(&err, same ? ALPS_E_BUSY : ALPS_E_CONFLICT,
		  same ? "job %s is still being prepared" :
			 "job %s is already prepared with another environment; release it first",
		  p->job);
	prep_fail(p, err);
}

static void prep_resolved(void *arg)
{
	struct prep *p = arg;
	if (p->err)
		return prep_fail(p, NULL);
	if (p->existing)
		return prep_existing(p);
	if (!p->need_pull)
		return prep_found(p);
	alps_error *err = NULL;
	/* The job's first node may have pinned the tag to a digest already:
	 * pull exactly that, so all nodes run the same image. */
	_cleanup_free_ char *pinned = p->d->fabric && p->nnodes ?
		fabric_lookup_pin(p->d->fabric, p->job, p->image_ref) : NULL;
	_cleanup_free_ char *by_digest = pinned && !strchr(p->image_ref, '@') ?
		xasprintf("%s@%s", p->image_ref, pinned) : NULL;
	struct pull_request pr = {
		.cfg = p->snap.cfg, .reference = by_digest ? by_digest : p->image_ref, .uid = p->uid,
	};
	if (puller_pull(p->d->puller, &pr, &prep_pull_ops, p, &err) < 0)
		return prep_fail(p, err);
}

/* ---- the handler ---- */

bool job_id_valid(const char *s)
{
	size_t n = strlen(s);
	return n > 0 && n <= STORE_JOB_ID_MAX && s[0] != '.' && s[0] != '-' &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+-") == n;
}

static int prep_from_request(struct prep *p, const Alps__PrepareRequest *r, alps_error **err)
{
	const struct ucred *peer = request_peer(p->rq);
	if (r->run) {
		if (!p->snap.cfg->allow_user_run && !request_peer_is_admin(p->rq))
			return alps_fail(err, ALPS_E_PERMISSION,
					 "'alps run' is disabled on this node (jobs.allow_user_run)");
		static unsigned counter;
		p->job = xasprintf(RUNJOB_PREFIX "%u-%d-%u", (unsigned)peer->uid, (int)peer->pid,
				   ++counter);
		p->user_arg = xasprintf("%u", (unsigned)peer->uid);
		p->owner_pid = peer->pid;
	} else {
		if (!request_peer_is_admin(p->rq))
			return alps_fail(err, ALPS_E_PERMISSION, "'prepare' is for administrators "
					 "(root or the daemon's admin group); uid %u is neither",
					 (unsigned)peer->uid);
		if (!r->job || !job_id_valid(r->job))
			return alps_fail(err, ALPS_E_INVALID, "invalid job id '%.64s%s': use letters, "
					 "digits and _ . + - (at most %d)", r->job ? r->job : "",
					 r->job && strlen(r->job) > 64 ? "..." : "", STORE_JOB_ID_MAX);
		if (!r->user || !*r->user)
			return alps_fail(err, ALPS_E_INVALID, "prepare needs --user");
		p->job = xstrdup(r->job);
		p->user_arg = xstrdup(r->user);
	}
	if ((r->n_environment > 0) == (r->image && *r->image))
		return alps_fail(err, ALPS_E_INVALID, "give either an environment file or an image");
	if (r->n_environment > EDF_MAX_FILES)
		return alps_fail(err, ALPS_E_LIMIT, "more than %d environment files", EDF_MAX_FILES);
	p->sources = xcalloc(r->n_environment + 1, sizeof(*p->sources));
	for (size_t i = 0; i < r->n_environment; i++) {
		const Alps__EdfSource *s = r->environment[i];
		p->sources[i].name = xstrdup(s->path);
		p->sources[i].path = xstrdup(s->path);
		p->sources[i].content = xstrdup(s->content);
		p->sources[i].len = strlen(s->content);
		p->nsources++;
	}
	p->image_arg = r->image && *r->image ? xstrdup(r->image) : NULL;
	p->caller_env = xcalloc(r->n_caller_env + 1, sizeof(char *));
	for (size_t i = 0; i < r->n_caller_env; i++)
		p->caller_env[i] = xstrdup(r->caller_env[i]);
	p->cwd = r->cwd && *r->cwd == '/' ? xstrdup(r->cwd) : NULL;
	p->tasks = r->tasks;
	p->run = r->run;
	if (r->n_nodes > 65536)
		return alps_fail(err, ALPS_E_LIMIT, "more than 65536 nodes");
	p->nodes = xcalloc(r->n_nodes + 1, sizeof(char *));
	for (size_t i = 0; i < r->n_nodes; i++)
		p->nodes[i] = xstrdup(r->nodes[i]);
	p->nnodes = r->n_nodes;
	return 0;
}

static void prep_warn(struct prep *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *w = NULL;
	if (vasprintf(&w, fmt, ap) < 0)
		abort();        /* out of memory, like the x* allocators */
	va_end(ap);
	log_info("prepare %s: %s", p->job, w);
	p->warnings = xreallocarray(p->warnings, p->nwarnings + 2, sizeof(char *));
	p->warnings[p->nwarnings++] = w;
	p->warnings[p->nwarnings] = NULL;
}

/* What the request asks that this node cannot honour: an error when the
 * job could not run as asked (tasks it cannot place), a warning in the
 * reply when it runs without what was asked (no fabric: no map).  A task
 * count of 0 means "not given" on the wire; the client refuses --tasks 0. */
static int prep_check(struct prep *p, alps_error **err)
{
	struct daemon *d = p->d;
	if (p->nnodes > 0 && !d->fabric)
		prep_warn(p, "--nodes is ignored: the fabric is off on this node (fabric.enabled), "
			  "so the job gets no fabric map and no pinned image digest");
	if (p->tasks == 0)
		return 0;
	if (!d->topology) {
		prep_warn(p, "--tasks %u is not checked: this node's topology did not load",
			  (unsigned)p->tasks);
		return 0;
	}
	struct place_plan *plan = NULL;
	if (place_plan_new(d->topology, p->tasks, 0, &plan, err) < 0)
		return alps_error_prefix(err, "--tasks %u cannot be placed on this node",
					 (unsigned)p->tasks);
	place_plan_free(plan);
	return 0;
}

static int op_prepare(struct request *rq, const Alps__Request *req, alps_error **err)
{
	if (!req->prepare)
		return alps_fail(err, ALPS_E_PROTOCOL, "prepare request without its body");
	struct prep *p = xzalloc(sizeof(*p));
	p->rq = request_ref(rq);
	p->d = request_daemon(rq);
	snapshot_take(p->d, &p->snap);
	if (prep_from_request(p, req->prepare, err) < 0 || prep_check(p, err) < 0 ||
	    (p->run && runjob_admit(rq, p->job, request_peer(rq)->uid, err) < 0)) {
		prep_free(p);
		return -1;
	}
	p->admitted = p->run;
	if (work_submit(p->d, prep_resolve, prep_resolved, p, err) < 0) {
		if (p->admitted)
			runjob_forget(p->job);
		prep_free(p);
		return -1;
	}
	return 0;
}

/* Checks inside: users may 'alps run' their own. */
const struct handler handler_prepare = {
	ALPS__REQUEST__OP_PREPARE, "prepare", PRIV_USER, op_prepare,
};
