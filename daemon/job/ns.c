/* ns.c: prepare and pin a job's mount namespace (see ns.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/job/apply.h"
#include "daemon/job/helper.h"
#include "daemon/job/ipc.h"
#include "daemon/job/mount.h"
#include "daemon/job/ns.h"
#include "daemon/job/rundir.h"
#include "daemon/job/sys.h"

static unsigned prepare_timeout_ms = 120000;

/* How long a killed leftover process (squashfuse) gets to be gone. */
#define KILL_WAIT_MS 5000

void ns_set_prepare_timeout(unsigned ms)
{
	prepare_timeout_ms = ms;
}

void ns_result_free(struct ns_result *r)
{
	for (size_t i = 0; i < r->nmounts; i++) {
		free(r->mounts[i].dst);
		free(r->mounts[i].fstype);
		free(r->mounts[i].source);
	}
	free(r->mounts);
	free(r->pin);
	memset(r, 0, sizeof(*r));
}

/* The job's directory, fresh: a leftover without a pinned namespace (a
 * prepare that crashed) is released first; a pinned one is EXISTS. */
static int job_dir_create(const struct ns_plan *plan, const char *dir, alps_error **err)
{
	_cleanup_free_ char *pin = xasprintf("%s/mnt", dir);
	if (mkdir(dir, 0700) < 0) {
		if (errno != EEXIST)
			return alps_fail_errno(err, "mkdir(%s)", dir);
		if (mnt_is_mount_root(AT_FDCWD, pin))
			return alps_fail(err, ALPS_E_EXISTS, "job %s is already prepared", plan->job);
		log_notice("job %s: cleaning up what a failed prepare left", plan->job);
		if (job_release(plan->run_dir, plan->job, err) < 0)
			return alps_error_prefix(err, "cleaning up job %s", plan->job);
		if (mkdir(dir, 0700) < 0)
			return alps_fail_errno(err, "mkdir(%s)", dir);
	}
	_cleanup_free_ char *root = xasprintf("%s/root", dir);
	if (mkdir(root, 0755) < 0)
		return alps_fail_errno(err, "mkdir(%s)", root);
	int fd = open(pin, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return alps_fail_errno(err, "creating %s", pin);
	close(fd);
	return 0;
}

/* The helper: apply the plan, report, wait to be pinned, exit.  Nothing
 * it does returns to the caller's code. */
static ALPS_NORETURN void helper_main(const struct ns_plan *plan, int sock, const char *job_dir,
				      pid_t parent)
{
	int keep[] = { sock };
	close_fds_except(keep, 1);
	/* The daemon's thread that forked waits for us; if it is gone, so
	 * is the prepare. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != parent)
		_exit(1);
	umask(022);
	struct apply_ctx ctx = {
		.plan = plan,
		.creds = { plan->uid, plan->gid, plan->groups, plan->ngroups },
		.job_dir = xstrdup(job_dir),
		.rootfd = -1,
		.report = sock,
	};
	alps_error *err = NULL;
	if (apply_plan(&ctx, &err) < 0) {
		helper_send_error(sock, err);
		_exit(1);
	}
	helper_send(sock, HELPER_READY, 0, NULL, NULL, NULL, -1);
	char c;
	ipc_recv(sock, &c, sizeof(c), NULL);
	_exit(0);
}

struct prepare {
	const struct ns_plan *plan;
	pid_t helper;
	int sock;               /* owned */
	int *pidfds;            /* owned: processes the helper left in the namespace */
	size_t npidfds;
	struct ns_result *out;
};

static void add_mount(struct ns_result *out, const struct helper_msg *m)
{
	const char *dst = m->text;
	const char *fstype = dst + strlen(dst) + 1;
	const char *source = fstype + strlen(fstype) + 1;
	out->mounts = xreallocarray(out->mounts, out->nmounts + 1, sizeof(*out->mounts));
	struct ns_mount *nm = &out->mounts[out->nmounts++];
	nm->dst = xstrdup(dst);
	nm->fstype = xstrdup(fstype);
	nm->source = xstrdup(source);
	nm->flags = (unsigned long)m->flags;
}

/* One message: 1 when the helper is ready, 0 to go on, -1 on its error. */
static int handle_msg(struct prepare *p, struct helper_msg *m, size_t len, int fd,
		      alps_error **err)
{
	size_t head = offsetof(struct helper_msg, text);
	if (len < head || m->text_len > len - head || m->text_len < 1) {
		if (fd >= 0)
			close(fd);
		return alps_fail(err, ALPS_E_INTERNAL, "malformed message from the namespace helper");
	}
	/* Three strings end inside what came; make sure of the last NUL. */
	m->text[m->text_len - 1] = '\0';
	memset(m->text + m->text_len, 0, sizeof(m->text) - m->text_len);
	switch (m->type) {
	case HELPER_MOUNT:
		add_mount(p->out, m);
		break;
	case HELPER_PIDFD:
		if (fd >= 0) {
			p->pidfds = xreallocarray(p->pidfds, p->npidfds + 1, sizeof(int));
			p->pidfds[p->npidfds++] = steal_fd(&fd);
		}
		break;
	case HELPER_ERROR:
		alps_fail(err, m->code ? m->code : ALPS_E_INTERNAL, "%s", m->text);
		if (*err)
			(*err)->errnum = m->errnum;
		return -1;
	case HELPER_READY:
		return 1;
	default:
		break;
	}
	if (fd >= 0)
		close(fd);
	return 0;
}

/* Read the helper's messages until READY, ERROR, its end or the timeout. */
static int wait_ready(struct prepare *p, alps_error **err)
{
	uint64_t deadline = now_monotonic_ms() + prepare_timeout_ms;
	_cleanup_free_ struct helper_msg *m = xmalloc(sizeof(*m));
	for (;;) {
		uint64_t now = now_monotonic_ms();
		struct pollfd pfd = { .fd = p->sock, .events = POLLIN };
		int rc = now >= deadline ? 0 : poll(&pfd, 1, (int)(deadline - now));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return alps_fail_errno(err, "poll() on the namespace helper");
		if (rc == 0)
			return alps_fail(err, ALPS_E_TIMEOUT, "the namespace helper took over %u ms",
					 prepare_timeout_ms);
		int fd;
		ssize_t n = ipc_recv(p->sock, m, sizeof(*m), &fd);
		if (n < 0)
			return alps_fail_errno(err, "reading from the namespace helper");
		if (n == 0)
			return alps_fail(err, ALPS_E_INTERNAL,
					 "the namespace helper ended without a result");
		rc = handle_msg(p, m, (size_t)n, fd, err);
		if (rc != 0)
			return rc < 0 ? -1 : 0;
	}
}

/* Bind the helper's namespace onto the pin: it outlives the helper. */
static int pin_ns(pid_t helper, const char *pin, alps_error **err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)helper);
	_cleanup_close_ int tfd = sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (tfd < 0)
		return alps_fail_errno(err, "open_tree(%s)", path);
	return mnt_attach_path(tfd, pin, "the job's namespace", err);
}

static int reap(pid_t pid)
{
	int status = 0;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

/* SIGKILL what the helper left in the namespace, and wait until it is
 * gone: its copy of the mounts must be too before the layers go. */
static void kill_leftovers(struct prepare *p)
{
	for (size_t i = 0; i < p->npidfds; i++) {
		sys_pidfd_send_signal(p->pidfds[i], SIGKILL);
		struct pollfd pfd = { .fd = p->pidfds[i], .events = POLLIN };
		while (poll(&pfd, 1, KILL_WAIT_MS) < 0 && errno == EINTR)
			;
	}
}

static void prepare_cleanup(struct prepare *p)
{
	for (size_t i = 0; i < p->npidfds; i++)
		close(p->pidfds[i]);
	free(p->pidfds);
	if (p->sock >= 0)
		close(p->sock);
}

/* Run the helper to the end: pinned, or failed with everything undone. */
static int run_helper(struct prepare *p, const char *job_dir, alps_error **err)
{
	_cleanup_free_ char *pin = xasprintf("%s/mnt", job_dir);
	int rc = wait_ready(p, err);
	if (rc == 0)
		rc = pin_ns(p->helper, pin, err);
	if (rc == 0) {
		char go = 'x';
		ipc_send(p->sock, &go, 1, -1);
	} else {
		kill(p->helper, SIGKILL);
	}
	int status = reap(p->helper);
	if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		log_warn("job %s: the namespace helper ended with status 0x%x after pinning",
			 p->plan->job, (unsigned)status);
	if (rc < 0)
		kill_leftovers(p);
	else
		p->out->pin = steal_pointer(&pin);
	return rc;
}

static int spawn_helper(struct prepare *p, const char *job_dir, alps_error **err)
{
	int sv[2];
	if (ipc_pair(sv) < 0)
		return alps_fail_errno(err, "socketpair() for the namespace helper");
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		alps_fail_errno(err, "fork() of the namespace helper");
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0)
		helper_main(p->plan, sv[1], job_dir, parent);
	close(sv[1]);
	p->sock = sv[0];
	p->helper = pid;
	return 0;
}

/* Undo a failed prepare: the job's layers, files and directory. */
static void undo(const struct ns_plan *plan)
{
	_cleanup_error_ alps_error *e = NULL;
	if (job_release(plan->run_dir, plan->job, &e) < 0)
		log_error("job %s: cleaning up after a failed prepare: %s", plan->job, e->msg);
}

int ns_prepare(const struct job_spec *spec, struct ns_result *out, alps_error **err)
{
	memset(out, 0, sizeof(*out));
	_cleanup_ns_plan_ struct ns_plan *plan = NULL;
	if (ns_plan_build(spec, &plan, err) < 0 || ns_plan_validate(plan, err) < 0 ||
	    ns_run_dir_init(plan->run_dir, err) < 0)
		return alps_error_prefix(err, "job %s", spec->job ? spec->job : "?");
	_cleanup_free_ char *job_dir = xasprintf("%s/jobs/%s", plan->run_dir, plan->job);
	if (job_dir_create(plan, job_dir, err) < 0)
		return alps_error_prefix(err, "job %s", plan->job);
	struct prepare p = { .plan = plan, .sock = -1, .out = out };
	int rc = spawn_helper(&p, job_dir, err);
	if (rc == 0)
		rc = run_helper(&p, job_dir, err);
	prepare_cleanup(&p);
	if (rc < 0) {
		ns_result_free(out);
		undo(plan);
		return alps_error_prefix(err, "job %s", plan->job);
	}
	return 0;
}
