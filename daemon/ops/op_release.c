/* op_release.c: Release (a job's container and its row, by an admin or
 * the owner of an 'alps run' job, or by the daemon for runjobs) and Jobs
 * (the list).  Their store calls and the release itself run on a worker;
 * the loop only answers. */
#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/log.h"
#include "daemon/daemon.h"
#include "daemon/hooks/hooks.h"
#include "daemon/job/cgroup.h"
#include "daemon/job/jobenv.h"
#include "daemon/job/ns.h"
#include "daemon/ops/ops.h"
#include "daemon/ops/runjobs.h"
#include "daemon/server/handlers.h"
#include "daemon/server/work.h"
#include "daemon/settings.h"
#include "daemon/store/store.h"

/* ---- release ---- */

struct rel {
	struct request *rq;     /* NULL: a release the daemon decided (runjobs) */
	struct daemon *d;
	struct snapshot snap;
	char *job;
	char *why;              /* the daemon's reason, or NULL */
	uid_t peer_uid;
	bool admin;
	bool was;
	char *env_json;         /* the row's: poststop hooks (daemon/hooks) */
	alps_error *err;
};

/* Whether the job is there and the peer may release it (worker: the
 * store).  Users may release their own 'alps run' jobs; the rest is
 * admins'. */
static int rel_check(struct rel *r)
{
	struct store_job *row = NULL;
	alps_error *e = NULL;
	r->was = store_job_get(r->d->store, r->job, &row, &e) == 0;
	if (!r->was && e->code != ALPS_E_NOT_FOUND) {
		r->err = e;
		return -1;
	}
	alps_error_free(e);
	bool own_run = r->was && str_has_prefix(r->job, RUNJOB_PREFIX) && row->uid == r->peer_uid;
	if (r->was)
		r->env_json = steal_pointer(&row->environment_json);
	store_job_free(row);
	if (!r->admin && !own_run)
		return alps_fail(&r->err, ALPS_E_PERMISSION, "'release' is for administrators (root "
				 "or the daemon's admin group) and for the owner of an 'alps run' job");
	return 0;
}

static void rel_release(struct rel *r)
{
	/* SIGTERM and the grace need no lock: other jobs' work goes on. */
	job_release_stop(r->snap.cfg->run_dir, r->job, (unsigned)r->snap.cfg->release_grace_s * 1000u);
	/* After a prepare of the same job still running, not in its middle. */
	job_claim(r->job);
	job_release(r->snap.cfg->run_dir, r->job, &r->err);
	job_unclaim(r->job);
	if (r->was && !r->err) {
		_cleanup_free_ char *bundle = xasprintf("%s/jobs/%s", r->snap.cfg->run_dir, r->job);
		hooks_release_run(r->env_json, r->job, bundle);
	}
	_cleanup_free_ char *map = xasprintf("%s/maps/%s.json", r->snap.cfg->run_dir, r->job);
	unlink(map);
}

static void rel_work(void *arg)
{
	struct rel *r = arg;
	if (rel_check(r) < 0)
		return;
	rel_release(r);
	if (!r->err && store_job_delete(r->d->store, r->job, &r->err) < 0 &&
	    r->err->code == ALPS_E_NOT_FOUND) {
		alps_error_free(r->err);
		r->err = NULL;
	}
}

static void rel_reply(struct rel *r)
{
	Alps__ReleaseReply rr = ALPS__RELEASE_REPLY__INIT;
	rr.was_prepared = r->was;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_RELEASE_REPLY;
	resp.release_reply = &rr;
	request_finish(r->rq, &resp);
}

static void rel_done(void *arg)
{
	struct rel *r = arg;
	alps_error *err = steal_pointer(&r->err);
	bool run = str_has_prefix(r->job, RUNJOB_PREFIX);
	if (err) {
		if (run)
			runjob_release_failed(r->job, !r->rq);
		alps_error_prefix(&err, "release %s", r->job);
		if (r->rq) {
			request_fail(r->rq, err);
		} else {
			log_event(LOG_LVL_ERROR, "release", "job", r->job, "why", r->why, "result",
				  "error", "error", err->msg, NULL);
			alps_error_free(err);
		}
	} else {
		log_event(LOG_LVL_NOTICE, "release", "job", r->job, "uid", r->rq ?
			  LOG_U64(r->peer_uid) : NULL, "why", r->why, "result", "ok", NULL);
		if (r->rq)
			rel_reply(r);
		if (run)
			runjob_released(r->job);
	}
	request_unref(r->rq);
	snapshot_drop(&r->snap);
	free(r->job);
	free(r->why);
	free(r->env_json);
	free(r);
}

static int rel_submit(struct rel *r, alps_error **err)
{
	if (work_submit(r->d, rel_work, rel_done, r, err) == 0)
		return 0;
	request_unref(r->rq);
	free(r->job);
	free(r->why);
	free(r);
	return -1;
}

static int op_release(struct request *rq, const Alps__Request *req, alps_error **err)
{
	const char *job = req->release ? req->release->job : NULL;
	if (!job || !job_id_valid(job))
		return alps_fail(err, ALPS_E_INVALID, "invalid job id '%.64s%s'", job ? job : "",
				 job && strlen(job) > 64 ? "..." : "");
	struct rel *r = xzalloc(sizeof(*r));
	r->rq = request_ref(rq);
	r->d = request_daemon(rq);
	snapshot_take(r->d, &r->snap);
	r->job = xstrdup(job);
	r->peer_uid = request_peer(rq)->uid;
	r->admin = request_peer_is_admin(rq);
	if (runjob_owned_by(job, r->peer_uid) || (r->admin && str_has_prefix(job, RUNJOB_PREFIX)))
		runjob_releasing(job);
	return rel_submit(r, err);
}

/* Checks inside: users may release their own 'alps run' jobs. */
const struct handler handler_release = {
	ALPS__REQUEST__OP_RELEASE, "release", PRIV_USER, op_release,
};

int job_release_background(struct daemon *d, const char *job, const char *why)
{
	struct rel *r = xzalloc(sizeof(*r));
	r->d = d;
	snapshot_take(d, &r->snap);
	r->job = xstrdup(job);
	r->why = xstrdup(why);
	r->admin = true;
	alps_error *err = NULL;
	if (rel_submit(r, &err) < 0) {
		log_error("job %s: cannot release it (%s): %s", job, why, err->msg);
		alps_error_free(err);
		return -1;
	}
	return 0;
}

/* ---- jobs ---- */

struct jlist {
	struct request *rq;
	struct daemon *d;
	int64_t who;
	struct store_job *jobs;
	size_t n;
	alps_error *err;
};

static void jobs_work(void *arg)
{
	struct jlist *l = arg;
	store_job_list(l->d->store, l->who, &l->jobs, &l->n, &l->err);
}

static void jobs_reply(struct request *rq, const struct store_job *jobs, size_t n)
{
	Alps__JobInfo *infos = xcalloc(n + 1, sizeof(*infos));
	Alps__JobInfo **ptrs = xcalloc(n + 1, sizeof(*ptrs));
	char ***mounts = xcalloc(n + 1, sizeof(char **));
	for (size_t i = 0; i < n; i++) {
		alps__job_info__init(&infos[i]);
		infos[i].job = jobs[i].id;
		infos[i].uid = (uint32_t)jobs[i].uid;
		infos[i].user = jobs[i].user;
		infos[i].image = jobs[i].image_digest ? jobs[i].image_digest : (char *)"";
		infos[i].state = (char *)store_job_state_name(jobs[i].state);
		infos[i].created_ms = jobs[i].created_ms;
		size_t nm = 0;
		mounts[i] = jobenv_split_lines(jobs[i].mounts, &nm);
		infos[i].mounts = mounts[i];
		infos[i].n_mounts = nm;
		infos[i].n_hooks = hooks_runs_info(jobs[i].environment_json, &infos[i].hooks);
		ptrs[i] = &infos[i];
	}
	Alps__JobsReply jr = ALPS__JOBS_REPLY__INIT;
	jr.jobs = ptrs;
	jr.n_jobs = n;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_JOBS_REPLY;
	resp.jobs_reply = &jr;
	request_finish(rq, &resp);
	for (size_t i = 0; i < n; i++) {
		edf_strv_free(mounts[i]);
		hooks_runs_info_free(infos[i].hooks, infos[i].n_hooks);
	}
	free(mounts);
	free(ptrs);
	free(infos);
}

static void jobs_done(void *arg)
{
	struct jlist *l = arg;
	if (l->err)
		request_fail(l->rq, steal_pointer(&l->err));
	else
		jobs_reply(l->rq, l->jobs, l->n);
	store_jobs_free(l->jobs, l->n);
	request_unref(l->rq);
	free(l);
}

static int op_jobs(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct jlist *l = xzalloc(sizeof(*l));
	l->rq = request_ref(rq);
	l->d = request_daemon(rq);
	l->who = request_peer_is_admin(rq) ? STORE_UID_ANY : (int64_t)request_peer(rq)->uid;
	if (work_submit(l->d, jobs_work, jobs_done, l, err) < 0) {
		request_unref(l->rq);
		free(l);
		return -1;
	}
	return 0;
}

const struct handler handler_jobs = {
	ALPS__REQUEST__OP_JOBS, "jobs", PRIV_USER, op_jobs,
};
