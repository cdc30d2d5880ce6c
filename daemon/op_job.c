/* op_job.c: Prepare, Release, Jobs (Exec is in op_exec.c).
 *
 * prepare, as a sequence of steps that alternate between a worker thread
 * (blocking: NSS, EDF parsing, building the namespace) and the loop (the
 * store, pulls, the reply):
 *   resolve (worker)  user, groups, the merged and expanded EDF
 *   lookup  (loop)    an existing job (idempotence), the image, or a pull
 *   insert  (loop)    the job row, which keeps the image from removal
 *   build   (worker)  ns_prepare(): layers, overlay, mounts, pivot, pin
 *   finish  (loop)    the row's state and the reply; on failure the row goes
 */
#include <config.h>

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/log.h"
#include "common/ref.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/handlers.h"
#include "daemon/image/pull.h"
#include "daemon/job/ns.h"
#include "daemon/job/plan.h"
#include "daemon/node/fabric.h"
#include "daemon/jobenv.h"
#include "daemon/store/store.h"
#include "daemon/work.h"

#define MAX_GROUPS 256

/* Job work on worker threads runs one at a time.  Building a namespace
 * forks a helper that allocates; a fork while another thread is inside the
 * allocator gives the child a lock that no one will release.  glibc's
 * malloc guards against that at fork, but the AddressSanitizer runtime the
 * tests run under (GCC 12) does not, and CI caught a helper hung that way
 * (10 concurrent prepares).  Keeping our own workers out of the allocator
 * while one of them forks removes most of that window; prepares are short
 * (10 ms), so serializing them costs little. */
static pthread_mutex_t job_work_lock = PTHREAD_MUTEX_INITIALIZER;

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
	char *image_sqsh;               /* a squashfs file the user named, or NULL */
	char *fingerprint;              /* what makes two prepares "the same" */
	struct store_image *img;
	char *env_json;                 /* the job row's environment_json */
	struct ns_result ns;
	char *map_path;                 /* the job's fabric map on the host, or NULL */
	char **down;                    /* peers down at prepare (fabric_strv_free) */
	size_t ndown;
	alps_error *err;                /* a worker step's failure */
	bool row_inserted;
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
	free(p->image_sqsh);
	free(p->fingerprint);
	store_image_free(p->img);
	free(p->env_json);
	ns_result_free(&p->ns);
	edf_strv_free(p->nodes);
	if (p->down)
		fabric_strv_free(p->down);
	free(p->map_path);
	alps_error_free(p->err);
	free(p);
}

/* End the request with p->err or err, and free p. */
static void prep_fail(struct prep *p, alps_error *err)
{
	if (!err) {
		err = p->err;
		p->err = NULL;
	}
	if (p->row_inserted) {
		alps_error *e2 = NULL;
		if (store_job_delete(p->d->store, p->job, &e2) < 0) {
			log_error("job %s: cannot drop its row after a failed prepare: %s", p->job,
				  e2->msg);
			alps_error_free(e2);
		}
	}
	if (p->map_path)
		unlink(p->map_path);
	alps_error_prefix(&err, "prepare %s", p->job);
	log_warn("%s", err->msg);
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

static int resolve_edf(struct prep *p, alps_error **err)
{
	struct edf_source_set set = { .v = p->sources, .n = p->nsources };
	struct edf_loader loader = { .load = edf_source_load, .arg = &set };
	struct edf_source *used = NULL;
	size_t nused = 0;
	if (edf_load_all(p->sources[0].name, &loader, &p->edf, &used, &nused, err) < 0)
		return -1;
	edf_sources_free(used, nused);
	struct edf_context ctx = {
		.caller_env = (const char *const *)p->caller_env, .cwd = p->cwd,
	};
	if (edf_expand(p->edf, &ctx, err) < 0)
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

static void prep_resolve_locked(struct prep *p)
{
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

static void prep_resolve(void *arg)
{
	pthread_mutex_lock(&job_work_lock);
	prep_resolve_locked(arg);
	pthread_mutex_unlock(&job_work_lock);
}

/* ---- build (worker) ---- */

static void prep_build_locked(struct prep *p)
{
	struct job_mounts jm;
	alps_error *err = NULL;
	if (jobenv_mounts(p->snap.cfg, p->edf, &jm, &err) < 0) {
		p->err = err;
		return;
	}
	if (p->map_path)
		jobenv_mounts_add_site(&jm, p->map_path, JOBENV_FABRIC_MAP, true);
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
		.devices = (const char *const *)p->snap.cfg->devices.v,
		.ndevices = p->snap.cfg->devices.n,
	};
	int rc = ns_prepare(&spec, &p->ns, &err);
	if (rc < 0 && err->code == ALPS_E_TIMEOUT) {
		/* A helper that never answers was killed and undone; one more
		 * try.  (Seen only under the sanitizers' allocator, which is
		 * not fork-safe: see job_work_lock.) */
		log_warn("job %s: %s; trying once more", p->job, err->msg);
		alps_error_free(err);
		err = NULL;
		rc = ns_prepare(&spec, &p->ns, &err);
	}
	if (rc < 0)
		p->err = err;
	free(files);
	free(ids);
	jobenv_mounts_free(&jm);
}

static void prep_build(void *arg)
{
	pthread_mutex_lock(&job_work_lock);
	prep_build_locked(arg);
	pthread_mutex_unlock(&job_work_lock);
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
	alps_error *err = NULL;
	_cleanup_free_ char *mounts = jobenv_mounts_text(&p->ns);
	if (store_job_set_mounts(p->d->store, p->job, mounts, &err) < 0 ||
	    store_job_update_state(p->d->store, p->job, "ready", &err) < 0) {
		/* The namespace is there but the table cannot say so: undo. */
		alps_error *e2 = NULL;
		if (job_release(p->snap.cfg->run_dir, p->job, &e2) < 0)
			alps_error_free(e2);
		return prep_fail(p, err);
	}
	log_notice("job %s prepared for %s (uid %u): %s", p->job, p->user_name, (unsigned)p->uid,
		   p->image_ref ? p->image_ref : p->image_sqsh);
	prep_reply(p, false);
	prep_free(p);
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
	if (mkdir_p(dir, 0755) < 0) {
		json_decref(map);
		return alps_fail_errno(err, "cannot create %s", dir);
	}
	p->map_path = xasprintf("%s/%s.json", dir, p->job);
	int rc = json_dump_file(map, p->map_path, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(map);
	if (rc < 0)
		return alps_fail(err, ALPS_E_IO, "cannot write the fabric map %s", p->map_path);
	if (p->img && p->image_ref && strcmp(p->nodes[0], p->d->node_name) == 0 &&
	    fabric_publish_pin(f, p->job, p->image_ref, p->img->digest,
			       (const char *const *)p->nodes, p->nnodes, err) < 0)
		return -1;
	return 0;
}

/* The image is in the store (or is a user's squashfs): record the job and
 * build its namespace. */
static void prep_insert_and_build(struct prep *p)
{
	alps_error *err = NULL;
	if (p->image_ref && store_image_find(p->d->store, p->image_ref, (int64_t)p->uid, &p->img,
					     &err) < 0)
		return prep_fail(p, err);
	if (prep_fabric(p, &err) < 0)
		return prep_fail(p, err);
	p->env_json = jobenv_json(p->edf, p->img, p->fingerprint, p->tasks,
				  p->map_path ? JOBENV_FABRIC_MAP : NULL);
	struct store_job row = {
		.id = p->job, .uid = p->uid, .user = p->user_name,
		.image_digest = p->img ? p->img->digest : NULL, .state = (char *)"preparing",
		.environment_json = p->env_json, .mounts = NULL,
	};
	if (store_job_insert(p->d->store, &row, &err) < 0)
		return prep_fail(p, err);
	p->row_inserted = true;
	if (p->img)
		store_image_touch(p->d->store, p->img->digest, NULL);
	if (work_submit(p->d, prep_build, prep_built, p, &err) < 0)
		return prep_fail(p, err);
}

static void prep_pull_progress(void *arg, const struct pull_status *st)
{
	struct prep *p = arg;
	Alps__PullProgress pp = ALPS__PULL_PROGRESS__INIT;
	pp.bytes_done = st->done;
	pp.bytes_total = st->total;
	pp.rate_bps = st->rate_bps;
	pp.eta_ms = st->eta_ms;
	pp.phase = (char *)st->phase;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_PULL_PROGRESS;
	resp.pull_progress = &pp;
	request_progress(p->rq, &resp);
}

static void prep_pull_done(void *arg, const struct pull_result *res, const alps_error *err)
{
	struct prep *p = arg;
	if (err) {
		alps_error *copy = NULL;
		alps_fail(&copy, err->code, "%s", err->msg);
		return prep_fail(p, copy);
	}
	prep_insert_and_build(p);
}

static const struct pull_waiter_ops prep_pull_ops = {
	.progress = prep_pull_progress,
	.done = prep_pull_done,
};

/* An existing job: the same environment is done already, another is an
 * error.  Returns true when it answered. */
static bool prep_existing(struct prep *p)
{
	struct store_job *job = NULL;
	alps_error *err = NULL;
	if (store_job_get(p->d->store, p->job, &job, &err) < 0) {
		alps_error_free(err);
		return false;
	}
	_cleanup_free_ char *fp = jobenv_fingerprint(job->environment_json);
	bool same = fp && p->fingerprint && strcmp(fp, p->fingerprint) == 0;
	if (same && strcmp(job->state, "ready") == 0) {
		if (job->image_digest)
			store_image_find(p->d->store, job->image_digest, STORE_UID_ANY, &p->img, NULL);
		store_job_free(job);
		prep_reply(p, true);
		prep_free(p);
		return true;
	}
	alps_fail(&err, same ? ALPS_E_BUSY : ALPS_E_CONFLICT,
		  same ? "job %s is still being prepared" :
			 "job %s is already prepared with another environment; release it first",
		  p->job);
	store_job_free(job);
	prep_fail(p, err);
	return true;
}

static void prep_resolved(void *arg)
{
	struct prep *p = arg;
	if (p->err)
		return prep_fail(p, NULL);
	if (prep_existing(p))
		return;
	alps_error *err = NULL;
	struct store_image *img = NULL;
	if (!p->image_ref || store_image_find(p->d->store, p->image_ref, (int64_t)p->uid, &img,
					      &err) == 0) {
		store_image_free(img);
		return prep_insert_and_build(p);
	}
	if (err->code != ALPS_E_NOT_FOUND)
		return prep_fail(p, err);
	alps_error_free(err);
	err = NULL;
	/* The job's first node may have pinned the tag to a digest already:
	 * pull exactly that, so all nodes run the same image. */
	_cleanup_free_ char *pinned = p->d->fabric && p->nnodes ?
		fabric_lookup_pin(p->d->fabric, p->job, p->image_ref) : NULL;
	_cleanup_free_ char *by_digest = pinned && !strchr(p->image_ref, '@') ?
		xasprintf("%s@%s", p->image_ref, pinned) : NULL;
	struct pull_request pr = { .reference = by_digest ? by_digest : p->image_ref,
				   .uid = p->uid };
	if (puller_pull(p->d->puller, &pr, &prep_pull_ops, p, &err) < 0)
		return prep_fail(p, err);
}

/* ---- the handler ---- */

static bool job_id_valid(const char *s)
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
		p->job = xasprintf("run-%u-%d-%u", (unsigned)peer->uid, (int)peer->pid, ++counter);
		p->user_arg = xasprintf("%u", (unsigned)peer->uid);
	} else {
		if (!request_peer_is_admin(p->rq))
			return alps_fail(err, ALPS_E_PERMISSION, "'prepare' is for administrators "
					 "(root or the daemon's admin group); uid %u is neither",
					 (unsigned)peer->uid);
		if (!r->job || !job_id_valid(r->job))
			return alps_fail(err, ALPS_E_INVALID, "invalid job id '%s': use letters, digits "
					 "and _ . + - (at most %d)", r->job ? r->job : "",
					 STORE_JOB_ID_MAX);
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

int op_prepare(struct request *rq, const Alps__Request *req, alps_error **err)
{
	if (!req->prepare)
		return alps_fail(err, ALPS_E_PROTOCOL, "prepare request without its body");
	struct prep *p = xzalloc(sizeof(*p));
	p->rq = request_ref(rq);
	p->d = request_daemon(rq);
	snapshot_take(p->d, &p->snap);
	if (prep_from_request(p, req->prepare, err) < 0 ||
	    work_submit(p->d, prep_resolve, prep_resolved, p, err) < 0) {
		prep_free(p);
		return -1;
	}
	return 0;
}

/* ---- release ---- */

struct rel {
	struct request *rq;
	struct daemon *d;
	struct snapshot snap;
	char *job;
	bool was;
	alps_error *err;
};

static void rel_work(void *arg)
{
	struct rel *r = arg;
	pthread_mutex_lock(&job_work_lock);
	job_release(r->snap.cfg->run_dir, r->job, &r->err);
	_cleanup_free_ char *map = xasprintf("%s/maps/%s.json", r->snap.cfg->run_dir, r->job);
	unlink(map);
	pthread_mutex_unlock(&job_work_lock);
}

static void rel_done(void *arg)
{
	struct rel *r = arg;
	alps_error *err = r->err;
	if (!err && store_job_delete(r->d->store, r->job, &err) < 0 && err->code == ALPS_E_NOT_FOUND) {
		alps_error_free(err);
		err = NULL;
	}
	if (err) {
		alps_error_prefix(&err, "release %s", r->job);
		request_fail(r->rq, err);
	} else {
		log_notice("job %s released", r->job);
		Alps__ReleaseReply rr = ALPS__RELEASE_REPLY__INIT;
		rr.was_prepared = r->was;
		Alps__Response resp = ALPS__RESPONSE__INIT;
		resp.payload_case = ALPS__RESPONSE__PAYLOAD_RELEASE_REPLY;
		resp.release_reply = &rr;
		request_finish(r->rq, &resp);
	}
	request_unref(r->rq);
	snapshot_drop(&r->snap);
	free(r->job);
	free(r);
}

int op_release(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	const char *job = req->release ? req->release->job : NULL;
	if (!job || !job_id_valid(job))
		return alps_fail(err, ALPS_E_INVALID, "invalid job id '%s'", job ? job : "");
	struct store_job *row = NULL;
	alps_error *e = NULL;
	bool known = store_job_get(d->store, job, &row, &e) == 0;
	alps_error_free(e);
	/* Users may release their own 'alps run' jobs; the rest is admins'. */
	bool own_run = known && str_has_prefix(job, "run-") && row->uid == request_peer(rq)->uid;
	store_job_free(row);
	if (!request_peer_is_admin(rq) && !own_run)
		return alps_fail(err, ALPS_E_PERMISSION, "'release' is for administrators (root or "
				 "the daemon's admin group) and for the owner of an 'alps run' job");
	struct rel *r = xzalloc(sizeof(*r));
	r->rq = request_ref(rq);
	r->d = d;
	snapshot_take(d, &r->snap);
	r->job = xstrdup(job);
	r->was = known;
	if (work_submit(d, rel_work, rel_done, r, err) < 0) {
		request_unref(r->rq);
		snapshot_drop(&r->snap);
		free(r->job);
		free(r);
		return -1;
	}
	return 0;
}

/* ---- jobs ---- */

int op_jobs(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	int64_t who = request_peer_is_admin(rq) ? STORE_UID_ANY : (int64_t)request_peer(rq)->uid;
	struct store_job *jobs = NULL;
	size_t n = 0;
	if (store_job_list(d->store, who, &jobs, &n, err) < 0)
		return -1;
	Alps__JobInfo *infos = xcalloc(n + 1, sizeof(*infos));
	Alps__JobInfo **ptrs = xcalloc(n + 1, sizeof(*ptrs));
	char ***mounts = xcalloc(n + 1, sizeof(char **));
	for (size_t i = 0; i < n; i++) {
		alps__job_info__init(&infos[i]);
		infos[i].job = jobs[i].id;
		infos[i].uid = (uint32_t)jobs[i].uid;
		infos[i].user = jobs[i].user;
		infos[i].image = jobs[i].image_digest ? jobs[i].image_digest : (char *)"";
		infos[i].state = jobs[i].state;
		infos[i].created_ms = jobs[i].created_ms;
		size_t nm = 0;
		mounts[i] = jobenv_split_lines(jobs[i].mounts, &nm);
		infos[i].mounts = mounts[i];
		infos[i].n_mounts = nm;
		ptrs[i] = &infos[i];
	}
	Alps__JobsReply jr = ALPS__JOBS_REPLY__INIT;
	jr.jobs = ptrs;
	jr.n_jobs = n;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_JOBS_REPLY;
	resp.jobs_reply = &jr;
	request_finish(rq, &resp);
	for (size_t i = 0; i < n; i++)
		edf_strv_free(mounts[i]);
	free(mounts);
	free(ptrs);
	free(infos);
	store_jobs_free(jobs, n);
	return 0;
}
