/* op_exec.c: Exec, a process in a prepared job.
 *
 * The client passes its argv, environment, working directory and stdin,
 * stdout, stderr (SCM_RIGHTS).  The daemon computes the process's
 * environment (jobenv.h), spawns it as the caller in the job's namespace
 * (job_exec_spawn), answers once with its pid (so the client can relay
 * signals to it: it runs as the client's own uid) and, when it ends,
 * with its wait status.  The wait is a pidfd on the loop. */
#include <config.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/log.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/handlers.h"
#include "daemon/job/exec.h"
#include "daemon/jobenv.h"
#include "daemon/store/store.h"

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
		got = waitpid(r->pid, &status, __WALL);
	while (got < 0 && errno == EINTR);
	if (got < 0) {
		log_warn("job %s: waitpid %d: %s", r->job, (int)r->pid, strerror(errno));
		status = 0xff00;
	}
	log_info("job %s: pid %d ended with status 0x%x", r->job, (int)r->pid, status);
	Alps__ExecReply er = ALPS__EXEC_REPLY__INIT;
	er.pid = r->pid;
	er.exit_status = status;
	er.exited = true;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_EXEC_REPLY;
	resp.exec_reply = &er;
	request_finish(r->rq, &resp);
	running_free(r);
}

/* The cgroup of the calling process (cgroup v2), as a directory, or NULL.
 * Read from /proc at the call: the caller is waiting on us, so its pid is
 * its own. */
static char *peer_cgroup(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	char line[4096];
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::/", 4) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (strstr(line, "/..") || strcmp(line + 3, "/") == 0)
			return NULL;    /* the root cgroup: nothing to move to */
		/* cgroup v2 alone, or the hybrid layout's unified tree. */
		const char *base = access("/sys/fs/cgroup/cgroup.procs", F_OK) == 0
					   ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
		char *dir = xasprintf("%s%s", base, line + 3);
		_cleanup_free_ char *procs = xasprintf("%s/cgroup.procs", dir);
		if (access(procs, W_OK) == 0)
			return dir;
		/* No cgroup v2 here (or not writable): the process stays in
		 * the daemon's cgroup rather than failing. */
		free(dir);
		return NULL;
	}
	return NULL;
}

static int check_access(struct request *rq, const struct store_job *job, alps_error **err)
{
	const struct ucred *peer = request_peer(rq);
	if (peer->uid == job->uid || request_peer_is_admin(rq))
		return 0;
	return alps_fail(err, ALPS_E_PERMISSION, "job %s belongs to uid %u; uid %u may not enter it",
			 job->id, (unsigned)job->uid, (unsigned)peer->uid);
}

static int spawn(struct request *rq, const Alps__ExecRequest *x, const struct store_job *job,
		 const int *fds, pid_t *pid, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	const struct ucred *peer = request_peer(rq);
	/* protobuf-c's repeated strings are counted, not NULL-terminated. */
	const char **caller_env = xcalloc(x->n_env + 1, sizeof(char *));
	for (size_t i = 0; i < x->n_env; i++)
		caller_env[i] = x->env[i];
	char **env = jobenv_exec_env(job->environment_json, caller_env, d->topology, job->id,
				     x->local_rank);
	free(caller_env);
	/* The EDF's workdir, else the image's, else "/" (recorded at prepare).
	 * The caller's own cwd is a host path: it means nothing inside. */
	_cleanup_free_ char *workdir = jobenv_exec_workdir(job->environment_json);
	_cleanup_free_ char *cgroup = peer_cgroup(peer->pid);
	gid_t groups[MAX_PEER_GROUPS];
	size_t ngroups = request_peer_groups(rq, groups, MAX_PEER_GROUPS);
	const char **argv = xcalloc(x->n_argv + 1, sizeof(char *));
	for (size_t i = 0; i < x->n_argv; i++)
		argv[i] = x->argv[i];
	struct exec_spec spec = {
		.run_dir = d->cfg->run_dir, .job = job->id, .uid = peer->uid, .gid = peer->gid,
		.groups = groups, .ngroups = ngroups, .cgroup = cgroup,
		.argv = argv, .envp = (const char *const *)env,
		.stdin_fd = fds[0], .stdout_fd = fds[1], .stderr_fd = fds[2], .workdir = workdir,
	};
	int rc = job_exec_spawn(&spec, pid, err);
	free(argv);
	edf_strv_free(env);
	return rc;
}

int op_exec(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	const Alps__ExecRequest *x = req->exec;
	int fds[3] = { -1, -1, -1 };
	size_t nfds = request_take_fds(rq, fds, 3);
	int rc = -1;
	struct store_job *job = NULL;
	if (!x || !x->job || !*x->job || x->n_argv == 0) {
		alps_fail(err, ALPS_E_INVALID, "exec needs a job and a command");
		goto out;
	}
	if (nfds != 3) {
		alps_fail(err, ALPS_E_INVALID, "exec needs the caller's stdin, stdout and stderr "
			  "(got %zu file descriptors)", nfds);
		goto out;
	}
	if (store_job_get(d->store, x->job, &job, err) < 0)
		goto out;
	if (check_access(rq, job, err) < 0)
		goto out;
	if (strcmp(job->state, "ready") != 0) {
		alps_fail(err, ALPS_E_BUSY, "job %s is %s, not ready", job->id, job->state);
		goto out;
	}
	pid_t pid;
	if (spawn(rq, x, job, fds, &pid, err) < 0)
		goto out;
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		/* Cannot watch it: do not leave it running unseen. */
		alps_fail_errno(err, "pidfd_open %d", (int)pid);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		goto out;
	}
	struct running *r = xzalloc(sizeof(*r));
	r->rq = request_ref(rq);
	r->pid = pid;
	r->pidfd = pidfd;
	r->job = xstrdup(job->id);
	r->ev = event_new(d->base, pidfd, EV_READ, on_exit_ready, r);
	event_add(r->ev, NULL);
	r->next = runnings;
	runnings = r;
	log_info("job %s: uid %u runs %s as pid %d", job->id, (unsigned)request_peer(rq)->uid,
		 x->argv[0], (int)pid);
	Alps__ExecReply er = ALPS__EXEC_REPLY__INIT;
	er.pid = pid;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_EXEC_REPLY;
	resp.exec_reply = &er;
	request_progress(rq, &resp);
	rc = 0;
out:
	for (size_t i = 0; i < nfds; i++)
		close(fds[i]);
	store_job_free(job);
	return rc;
}
