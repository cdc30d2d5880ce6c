/* op_exec.c: Exec, a process in a prepared job.
 *
 * The client passes its argv, environment, working directory and stdin,
 * stdout, stderr (SCM_RIGHTS).  On the loop: only what the request and the
 * connection say.  On a worker: the job's row (sqlite), the access check,
 * the process's environment (jobenv.h), the caller's cgroups and limits
 * read through the pidfd taken at accept, and the spawn
 * (job_exec_spawn), which waits for the command to be exec'd (a stopped
 * squashfuse can make that take forever: the spawn kills it after
 * jobs.exec_timeout, and the loop never waits).  Back on the loop: one
 * answer with the pid (the client relays signals to it: it runs as the
 * client's own uid) and, when it ends, one with its wait status, through a
 * pidfd on the loop.
 *
 * A command that could not start is answered with a progress ExecReply
 * carrying start_status (126 not executable, 127 not found) and then the
 * error; any other error means 125 to the client. */
#include <config.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/log.h"
#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/server/metrics.h"
#include "daemon/job/cgroup.h"
#include "daemon/job/exec.h"
#include "daemon/job/plan.h"
#include "daemon/job/sys.h"
#include "daemon/job/jobenv.h"
#include "daemon/store/store.h"
#include "daemon/server/work.h"

#define MAX_PEER_GROUPS 256

struct running {
	struct running *next;       /* the list of processes being waited for */
	struct request *rq;
	pid_t pid;
	int pidfd;
	struct event *ev;
	char *job;
};

/* Loop thread only. */
static struct running *runnings;

static void running_unlink(struct running *r)
{
	for (struct running **pp = &runnings; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			return;
		}
	}
}

static void running_free(struct running *r)
{
	running_unlink(r);
	request_unref(r->rq);
	event_free(r->ev);
	close(r->pidfd);
	free(r->job);
	free(r);
}

void exec_shutdown(void)
{
	/* The processes belong to their jobs and go on; only our watch ends
	 * (a restarted daemon does not wait for them). */
	while (runnings)
		running_free(runnings);
}

static void on_exit_ready(evutil_socket_t fd, short what, void *arg)
{
	struct running *r = arg;
	int status = 0;
	pid_t got;
	do
		got = waitpid(r->pid, &status, __WALL | WNOHANG);
	while (got < 0 && errno == EINTR);
	if (got <= 0) {
		log_warn("job %s: waitpid %d: %s", r->job, (int)r->pid,
			 got == 0 ? "not ended" : strerror(errno));
		status = 0xff00;
	}
	bool released = job_release_seen(r->job);
	log_info("job %s: pid %d ended with status 0x%x%s", r->job, (int)r->pid, status,
		 released ? " (job released)" : "");
	Alps__ExecReply er = ALPS__EXEC_REPLY__INIT;
	er.pid = r->pid;
	er.exit_status = status;
	er.exited = true;
	er.released = released;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_EXEC_REPLY;
	resp.exec_reply = &er;
	request_finish(r->rq, &resp);
	running_free(r);
}

/* ---- the work ---- */

struct xe {
	struct request *rq;
	struct daemon *d;
	struct snapshot snap;       /* the settings and topology the worker reads */
	char *job;
	bool tty;                   /* the client's pseudo-terminal: its controlling tty */
	int fds[3];
	int peer_pidfd;
	uid_t uid;
	gid_t gid;
	bool admin;
	gid_t groups[MAX_PEER_GROUPS];
	size_t ngroups;
	char **argv;                /* NULL-terminated */
	char **caller_env;          /* NULL-terminated, as the client sent it */
	uint32_t local_rank;
	/* made on the worker */
	char **env;                 /* NULL-terminated: the process's whole environment */
	char *workdir;
	/* results */
	pid_t pid;
	int start_status;
	alps_error *err;
};

static void xe_free(struct xe *x)
{
	for (size_t i = 0; i < ARRAY_SIZE(x->fds); i++)
		if (x->fds[i] >= 0)
			close(x->fds[i]);
	if (x->peer_pidfd >= 0)
		close(x->peer_pidfd);
	request_unref(x->rq);
	free(x->job);
	edf_strv_free(x->argv);
	edf_strv_free(x->caller_env);
	edf_strv_free(x->env);
	free(x->workdir);
	alps_error_free(x->err);
	snapshot_drop(&x->snap);
	free(x);
}

/* Worker: the job's row and the caller's right to enter it. */
static int find_job(struct xe *x, struct store_job **job, alps_error **err)
{
	if (store_job_get(x->d->store, x->job, job, err) < 0) {
		if ((*err)->code != ALPS_E_NOT_FOUND)
			return -1;
		alps_error_free(*err);
		*err = NULL;
		return alps_fail(err, ALPS_E_NOT_FOUND, "no such job %s", x->job);
	}
	if (x->uid != (*job)->uid && !x->admin)
		return alps_fail(err, ALPS_E_PERMISSION, "job %s belongs to uid %u; uid %u may not "
				 "enter it", x->job, (unsigned)(*job)->uid, (unsigned)x->uid);
	if ((*job)->state != STORE_JOB_READY)
		return alps_fail(err, ALPS_E_BUSY, "job %s is %s, not ready", x->job,
				 store_job_state_name((*job)->state));
	return 0;
}

/* A rank the job was not prepared for gets no placement: say so rather
 * than run it unplaced (a job prepared without --tasks takes any rank). */
static int check_rank(const struct xe *x, const char *env_json, alps_error **err)
{
	json_t *j = env_json ? json_loads(env_json, 0, NULL) : NULL;
	json_int_t tasks = j ? json_integer_value(json_object_get(j, "tasks")) : 0;
	json_decref(j);
	if (tasks <= 0 || x->local_rank < (uint32_t)tasks)
		return 0;
	return alps_fail(err, ALPS_E_INVALID, "rank %u is beyond job %s's %lld task%s (ranks 0 "
			 "to %lld)", (unsigned)x->local_rank, x->job, (long long)tasks,
			 tasks == 1 ? "" : "s", (long long)tasks - 1);
}

/* Worker: the process's environment and workdir from the job's row. */
static int job_env(struct xe *x, alps_error **err)
{
	struct store_job *job = NULL;
	if (find_job(x, &job, err) < 0 || check_rank(x, job->environment_json, err) < 0) {
		store_job_free(job);
		return -1;
	}
	x->env = jobenv_exec_env(job->environment_json, (const char *const *)x->caller_env,
				 x->snap.topology, job->id, x->local_rank);
	/* The EDF's workdir, else the image's, else "/" (recorded at prepare).
	 * The caller's own cwd is a host path: it means nothing inside. */
	x->workdir = jobenv_exec_workdir(job->environment_json);
	store_job_free(job);
	return 0;
}

/* Worker: the job, the caller's state, then the spawn (which may block
 * until the timeout). */
static void exec_work(void *arg)
{
	struct xe *x = arg;
	struct exec_peer peer;
	if (job_env(x, &x->err) < 0 || exec_peer_read(x->peer_pidfd, &peer, &x->err) < 0)
		return;
	struct exec_spec spec = {
		.run_dir = x->snap.cfg->run_dir, .job = x->job, .uid = x->uid, .gid = x->gid,
		.groups = x->groups, .ngroups = x->ngroups, .peer = &peer,
		.argv = (const char *const *)x->argv, .envp = (const char *const *)x->env,
		.stdin_fd = x->fds[0], .stdout_fd = x->fds[1], .stderr_fd = x->fds[2],
		.workdir = x->workdir, .timeout_ms = (unsigned)x->snap.cfg->exec_timeout_s * 1000u,
		.tty = x->tty,
		.start_status = &x->start_status,
	};
	job_exec_spawn(&spec, &x->pid, &x->err);
	exec_peer_free(&peer);
}

static void send_pid(struct request *rq, pid_t pid, int start_status)
{
	Alps__ExecReply er = ALPS__EXEC_REPLY__INIT;
	er.pid = pid;
	er.start_status = start_status;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_EXEC_REPLY;
	resp.exec_reply = &er;
	request_progress(rq, &resp);
}

/* Loop: watch the process, or answer the failure. */
static int watch(struct xe *x, alps_error **err)
{
	int pidfd = sys_pidfd_open(x->pid, 0);
	if (pidfd < 0) {
		/* Cannot watch it: do not leave it running unseen. */
		alps_fail_errno(err, "pidfd_open %d", (int)x->pid);
		kill(x->pid, SIGKILL);
		return -1;
	}
	struct running *r = xzalloc(sizeof(*r));
	r->rq = request_ref(x->rq);
	r->pid = x->pid;
	r->pidfd = pidfd;
	r->job = xstrdup(x->job);
	r->ev = event_new(x->d->base, pidfd, EV_READ, on_exit_ready, r);
	event_add(r->ev, NULL);
	r->next = runnings;
	runnings = r;
	_cleanup_free_ char *cmd = log_escape(x->argv[0], 256);
	log_info("job %s: uid %u runs %s as pid %d", x->job, (unsigned)x->uid, cmd, (int)x->pid);
	metrics_observe(METRICS_EXEC, request_age_ns(x->rq));
	send_pid(x->rq, x->pid, 0);
	return 0;
}

static void exec_done(void *arg)
{
	struct xe *x = arg;
	alps_error *err = steal_pointer(&x->err);
	if (!err && watch(x, &err) == 0) {
		xe_free(x);
		return;
	}
	if (x->start_status != EXEC_STATUS_FAILED)
		send_pid(x->rq, 0, x->start_status);
	_cleanup_free_ char *msg = log_escape(err->msg, 512);
	log_info("job %s: exec for uid %u failed: %s", x->job, (unsigned)x->uid, msg);
	request_fail(x->rq, err);
	xe_free(x);
}

/* ---- the request ---- */

/* protobuf-c's repeated strings are counted, not NULL-terminated. */
static char **strv_of(char *const *v, size_t n)
{
	char **out = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		out[i] = xstrdup(v[i]);
	return out;
}

/* The caller's pidfd; without SO_PEERPIDFD, one of the pid recorded at
 * connect, checked to be still a process of the peer's uid. */
static int caller_pidfd(struct request *rq, alps_error **err)
{
	int fd = request_peer_pidfd(rq);
	if (fd >= 0)
		return fd;
	if (errno != EOPNOTSUPP)
		return alps_fail(err, ALPS_E_CANCELLED, "the caller has gone");
	const struct ucred *peer = request_peer(rq);
	fd = sys_pidfd_open(peer->pid, 0);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d", (int)peer->pid);
	struct stat st;
	if (fd < 0 || stat(path, &st) < 0 || st.st_uid != peer->uid) {
		if (fd >= 0)
			close(fd);
		return alps_fail(err, ALPS_E_CANCELLED, "the caller (pid %d) has gone",
				 (int)peer->pid);
	}
	return fd;
}

static struct xe *xe_new(struct request *rq, const Alps__ExecRequest *x, const int *fds)
{
	const struct ucred *peer = request_peer(rq);
	struct xe *e = xzalloc(sizeof(*e));
	e->rq = request_ref(rq);
	e->d = request_daemon(rq);
	snapshot_take(e->d, &e->snap);
	e->job = xstrdup(x->job);
	e->tty = x->tty;
	memcpy(e->fds, fds, sizeof(e->fds));
	e->peer_pidfd = -1;
	e->uid = peer->uid;
	e->gid = peer->gid;
	e->admin = request_peer_is_admin(rq);
	e->ngroups = request_peer_groups(rq, e->groups, MAX_PEER_GROUPS);
	e->argv = strv_of(x->argv, x->n_argv);
	e->caller_env = strv_of(x->env, x->n_env);
	e->local_rank = x->local_rank;
	e->start_status = EXEC_STATUS_FAILED;
	return e;
}

static int op_exec(struct request *rq, const Alps__Request *req, alps_error **err)
{
	const Alps__ExecRequest *x = req->exec;
	int fds[3] = { -1, -1, -1 };
	size_t nfds = request_take_fds(rq, fds, 3);
	if (!x || !job_name_valid(x->job) || x->n_argv == 0 || nfds != 3) {
		for (size_t i = 0; i < nfds; i++)
			close(fds[i]);
		if (nfds != 3 && x && job_name_valid(x->job) && x->n_argv)
			return alps_fail(err, ALPS_E_INVALID, "exec needs the caller's stdin, stdout "
					 "and stderr (got %zu file descriptors)", nfds);
		return alps_fail(err, ALPS_E_INVALID, "exec needs a valid job id and a command");
	}
	struct xe *e = xe_new(rq, x, fds);
	e->peer_pidfd = caller_pidfd(rq, err);
	if (e->peer_pidfd < 0 || work_submit(e->d, exec_work, exec_done, e, err) < 0) {
		xe_free(e);
		return -1;
	}
	return 0;
}

const struct handler handler_exec = {
	ALPS__REQUEST__OP_EXEC, "exec", PRIV_USER, op_exec,
};
