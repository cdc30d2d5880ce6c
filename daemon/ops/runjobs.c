/* runjobs.c: see runjobs.h. */
#include <config.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/ops/runjobs.h"
#include "daemon/store/store.h"
#include "daemon/server/work.h"

/* The reaper looks this often at most, and at least once a minute (so a
 * reload that shortens jobs.run_ttl takes effect within a minute). */
#define REAP_MIN_S 1
#define REAP_MAX_S 60

enum rj_state {
	RJ_PREPARING,
	RJ_READY,
	RJ_RELEASING,
};

struct runjob {
	struct runjob *next;
	char *id;
	uid_t uid;
	uint64_t born_ms;               /* monotonic */
	enum rj_state state;
	bool client_gone;               /* its client went while preparing or releasing */
	struct close_watch *watch;      /* its connection, while there is one */
	struct event *ev_owner;         /* after a restart: the owner's pidfd */
	int owner_pidfd;
};

/* Loop thread only. */
static struct {
	struct daemon *d;
	struct runjob *list;
	struct event *reaper;
} rjs;

static struct runjob *rj_find(const char *id)
{
	for (struct runjob *rj = rjs.list; rj; rj = rj->next)
		if (strcmp(rj->id, id) == 0)
			return rj;
	return NULL;
}

static struct runjob *rj_add(const char *id, uid_t uid, enum rj_state state, uint64_t born_ms)
{
	struct runjob *rj = xzalloc(sizeof(*rj));
	rj->id = xstrdup(id);
	rj->uid = uid;
	rj->state = state;
	rj->born_ms = born_ms;
	rj->owner_pidfd = -1;
	rj->next = rjs.list;
	rjs.list = rj;
	return rj;
}

/* Stop listening for the end of its client (connection or process). */
static void rj_unwatch(struct runjob *rj)
{
	close_watch_cancel(rj->watch);
	rj->watch = NULL;
	if (rj->ev_owner) {
		event_free(rj->ev_owner);
		rj->ev_owner = NULL;
	}
	if (rj->owner_pidfd >= 0) {
		close(rj->owner_pidfd);
		rj->owner_pidfd = -1;
	}
}

static void rj_free(struct runjob *rj)
{
	rj_unwatch(rj);
	free(rj->id);
	free(rj);
}

static size_t rj_count(uid_t uid)
{
	size_t n = 0;
	for (struct runjob *rj = rjs.list; rj; rj = rj->next)
		n += rj->uid == uid;
	return n;
}

static void rj_release(struct runjob *rj, const char *why)
{
	rj_unwatch(rj);
	rj->state = RJ_RELEASING;
	/* On failure (no thread) it stays ready: the reaper tries again. */
	if (job_release_background(rjs.d, rj->id, why) < 0)
		rj->state = RJ_READY;
}

/* ---- the client's end ---- */

static void on_conn_closed(void *arg)
{
	struct runjob *rj = arg;
	rj->watch = NULL;
	/* A stopping daemon closes every connection: what it leaves is for
	 * the next start to judge, not for the stop to wait on. */
	if (rjs.d->stop_ms)
		return;
	if (rj->state == RJ_READY)
		rj_release(rj, "its client's connection closed");
	else
		rj->client_gone = true;
}

static void on_owner_exit(evutil_socket_t fd, short what, void *arg)
{
	struct runjob *rj = arg;
	if (rjs.d->stop_ms)
		return;
	if (rj->state == RJ_READY)
		rj_release(rj, "its client exited");
	else
		rj->client_gone = true;
}

int runjob_admit(struct request *rq, const char *job, uid_t uid, alps_error **err)
{
	rjs.d = request_daemon(rq);
	int64_t max = rjs.d->cfg->max_run_jobs_per_user;
	size_t have = rj_count(uid);
	if (have >= (size_t)max)
		return alps_fail(err, ALPS_E_LIMIT, "uid %u has %zu 'alps run' jobs on this node, the "
				 "most allowed (jobs.max_run_jobs_per_user = %lld); wait for one to "
				 "end", (unsigned)uid, have, (long long)max);
	struct runjob *rj = rj_add(job, uid, RJ_PREPARING, now_monotonic_ms());
	rj->watch = request_watch_close(rq, on_conn_closed, rj);
	rj->client_gone = !rj->watch;
	return 0;
}

void runjob_prepared(const char *job)
{
	struct runjob *rj = rj_find(job);
	if (!rj || rj->state != RJ_PREPARING)
		return;
	rj->state = RJ_READY;
	if (rj->client_gone)
		rj_release(rj, "its client's connection closed while it was prepared");
}

static void rj_forget(const char *job, bool unless_preparing)
{
	for (struct runjob **pp = &rjs.list; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->id, job) == 0) {
			if (unless_preparing && (*pp)->state == RJ_PREPARING)
				return;
			struct runjob *rj = *pp;
			*pp = rj->next;
			rj_free(rj);
			return;
		}
	}
}

void runjob_forget(const char *job)
{
	rj_forget(job, false);
}

void runjob_released(const char *job)
{
	rj_forget(job, true);
}

void runjob_release_failed(const char *job, bool by_daemon)
{
	struct runjob *rj = rj_find(job);
	if (!rj || rj->state != RJ_RELEASING)
		return;
	rj->state = RJ_READY;
	/* A client that went meanwhile left it to us; a failed release of
	 * our own is not retried at once (the reaper will). */
	if (!by_daemon && rj->client_gone)
		rj_release(rj, "its client's connection closed");
}

bool runjob_owned_by(const char *job, uid_t uid)
{
	struct runjob *rj = rj_find(job);
	return rj && rj->uid == uid;
}

void runjob_releasing(const char *job)
{
	struct runjob *rj = rj_find(job);
	/* Not while it is prepared: the prepare's end decides then. */
	if (rj && rj->state == RJ_READY)
		rj->state = RJ_RELEASING;
}

/* ---- the reaper ---- */

static void reaper_arm(void)
{
	int64_t ttl = rjs.d->cfg->run_ttl_s;
	int64_t period = ttl > 0 ? ttl / 4 : REAP_MAX_S;
	period = period < REAP_MIN_S ? REAP_MIN_S : period > REAP_MAX_S ? REAP_MAX_S : period;
	struct timeval tv = { .tv_sec = (time_t)period };
	evtimer_add(rjs.reaper, &tv);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	int64_t ttl = rjs.d->cfg->run_ttl_s;
	uint64_t now = now_monotonic_ms();
	for (struct runjob *rj = rjs.list; ttl > 0 && rj; rj = rj->next) {
		if (rj->state != RJ_READY || now - rj->born_ms < (uint64_t)ttl * 1000)
			continue;
		_cleanup_free_ char *why = xasprintf("older than jobs.run_ttl (%lld s)", (long long)ttl);
		rj_release(rj, why);
	}
	reaper_arm();
}

/* ---- the owner, in environment_json ---- */

uint64_t runjob_proc_start(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* After the command name's closing parenthesis: field 3 (state) on;
	 * the start time is field 22. */
	char *p = strrchr(buf, ')');
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

char *runjob_env_with_owner(const char *env_json, pid_t pid, uint64_t start)
{
	json_error_t jerr;
	json_t *j = json_loads(env_json, 0, &jerr);
	if (!j)
		return xstrdup(env_json);
	json_object_set_new(j, "run_owner", json_pack("{s:I, s:I}", "pid", (json_int_t)pid,
						      "start", (json_int_t)start));
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return s;
}

static bool owner_from_env(const char *env_json, pid_t *pid, uint64_t *start)
{
	json_error_t jerr;
	json_t *j = env_json ? json_loads(env_json, 0, &jerr) : NULL;
	json_t *o = json_object_get(j, "run_owner");
	json_int_t p = json_integer_value(json_object_get(o, "pid"));
	json_int_t s = json_integer_value(json_object_get(o, "start"));
	json_decref(j);
	if (p <= 0 || s <= 0)
		return false;
	*pid = (pid_t)p;
	*start = (uint64_t)s;
	return true;
}

/* ---- at start ---- */

struct rj_scan {
	struct store_job *jobs;
	size_t n;
	int *pidfds;            /* per job: the owner's, or -1 when it is gone */
	alps_error *err;
};

/* A pidfd of the job's owner if it still runs, else -1.  The start time
 * is read after the pidfd is taken, so the pidfd is of that process. */
static int owner_pidfd(const struct store_job *job)
{
	pid_t pid;
	uint64_t start;
	if (!owner_from_env(job->environment_json, &pid, &start))
		return -1;      /* prepared by a daemon that did not record it */
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd >= 0 && runjob_proc_start(pid) != start) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void scan_work(void *arg)
{
	struct rj_scan *sc = arg;
	if (store_job_list(rjs.d->store, STORE_UID_ANY, &sc->jobs, &sc->n, &sc->err) < 0)
		return;
	sc->pidfds = xcalloc(sc->n + 1, sizeof(int));
	for (size_t i = 0; i < sc->n; i++)
		sc->pidfds[i] = str_has_prefix(sc->jobs[i].id, RUNJOB_PREFIX) ?
			owner_pidfd(&sc->jobs[i]) : -1;
}

static void scan_adopt(const struct store_job *job, int pidfd)
{
	uint64_t now = now_monotonic_ms(), wall = now_realtime_ms();
	uint64_t age = wall > job->created_ms ? wall - job->created_ms : 0;
	struct runjob *rj = rj_add(job->id, job->uid, RJ_READY, now > age ? now - age : 0);
	if (pidfd < 0) {
		log_notice("job %s: its 'alps run' client is gone", job->id);
		rj_release(rj, "its client went while alpsd was down");
		return;
	}
	rj->owner_pidfd = pidfd;
	rj->ev_owner = event_new(rjs.d->base, pidfd, EV_READ, on_owner_exit, rj);
	event_add(rj->ev_owner, NULL);
}

static void scan_done(void *arg)
{
	struct rj_scan *sc = arg;
	if (sc->err) {
		log_error("cannot look for 'alps run' jobs left behind: %s", sc->err->msg);
		alps_error_free(sc->err);
	}
	for (size_t i = 0; i < sc->n; i++) {
		if (!str_has_prefix(sc->jobs[i].id, RUNJOB_PREFIX) || rj_find(sc->jobs[i].id)) {
			if (sc->pidfds[i] >= 0)
				close(sc->pidfds[i]);
			continue;
		}
		scan_adopt(&sc->jobs[i], sc->pidfds[i]);
	}
	store_jobs_free(sc->jobs, sc->n);
	free(sc->pidfds);
	free(sc);
}

void runjobs_start(struct daemon *d)
{
	rjs.d = d;
	rjs.reaper = evtimer_new(d->base, on_reap, NULL);
	reaper_arm();
	alps_error *err = NULL;
	struct rj_scan *sc = xzalloc(sizeof(*sc));
	if (work_submit(d, scan_work, scan_done, sc, &err) < 0) {
		log_error("cannot look for 'alps run' jobs left behind: %s", err->msg);
		alps_error_free(err);
		free(sc);
	}
}

void runjobs_stop(void)
{
	if (rjs.reaper)
		event_free(rjs.reaper);
	rjs.reaper = NULL;
	while (rjs.list) {
		struct runjob *rj = rjs.list;
		rjs.list = rj->next;
		rj_free(rj);
	}
}
