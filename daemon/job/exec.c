/* exec.c: run a process inside a prepared job (see exec.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/creds.h"
#include "daemon/job/exec.h"
#include "daemon/job/mount.h"
#include "daemon/job/ns.h"
#include "daemon/job/plan.h"
#include "daemon/job/sys.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Where the child failed. */
enum exec_stage {
	STAGE_SETNS,
	STAGE_CGROUP,
	STAGE_FDS,
	STAGE_CREDS,
	STAGE_CHDIR,
	STAGE_EXEC,
};

static const char *const stage_names[] = {
	[STAGE_SETNS] = "setns() into the job's namespace",
	[STAGE_CGROUP] = "joining the cgroup",
	[STAGE_FDS] = "arranging fds",
	[STAGE_CREDS] = "becoming the user",
	[STAGE_CHDIR] = "entering the workdir",
	[STAGE_EXEC] = "exec",
};

struct exec_report {
	int stage;
	int errnum;
};

/* What the child needs, all allocated before fork. */
struct exec_prep {
	int nsfd, cgfd, nullfd;
	int pipe[2];
	char **candidates;      /* the paths to try, in PATH order */
	const char *workdir;
	struct creds creds;
	const struct exec_spec *spec;
};

static ALPS_NORETURN void child_fail(int fd, enum exec_stage stage, int errnum)
{
	struct exec_report r = { .stage = (int)stage, .errnum = errnum };
	write_all(fd, &r, sizeof(r));
	_exit(127);
}

/* Decimal pid into buf (no stdio after fork); its length. */
static size_t pid_text(pid_t pid, char *buf)
{
	char tmp[16];
	size_t n = 0, len = 0;
	unsigned v = (unsigned)pid;
	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) && n < sizeof(tmp));
	while (n)
		buf[len++] = tmp[--n];
	return len;
}

/* 0, 1, 2 from the given fds (or /dev/null), every other fd closed but
 * the report pipe, which is moved above 2 first (CLOEXEC). */
static int arrange_fds(const struct exec_prep *p, int *report)
{
	const struct exec_spec *s = p->spec;
	int src[3] = { s->stdin_fd, s->stdout_fd, s->stderr_fd };
	int moved[3];
	*report = fcntl(p->pipe[1], F_DUPFD_CLOEXEC, 3);
	if (*report < 0)
		return -1;
	for (int i = 0; i < 3; i++) {
		moved[i] = fcntl(src[i] >= 0 ? src[i] : p->nullfd, F_DUPFD_CLOEXEC, 3);
		if (moved[i] < 0)
			return -1;
	}
	for (int i = 0; i < 3; i++)
		if (dup2(moved[i], i) < 0)
			return -1;
	close_fds_except(report, 1);
	return 0;
}

static void reset_signals(void)
{
	struct sigaction dfl;
	sigset_t none;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			sigaction(s, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Try each candidate like execvp: EACCES from one is kept as the answer
 * if no other works, ENOENT and ENOTDIR move on, anything else stops. */
static int exec_candidates(const struct exec_prep *p)
{
	char *const *argv = (char *const *)p->spec->argv;
	static char *const empty[] = { NULL };
	char *const *envp = p->spec->envp ? (char *const *)p->spec->envp : empty;
	bool eacces = false;
	for (char **c = p->candidates; *c; c++) {
		execve(*c, argv, envp);
		if (errno == EACCES)
			eacces = true;
		else if (errno != ENOENT && errno != ENOTDIR)
			return errno;
	}
	return eacces ? EACCES : ENOENT;
}

static ALPS_NORETURN void exec_child(const struct exec_prep *p)
{
	int report = p->pipe[1];
	if (setns(p->nsfd, CLONE_NEWNS) < 0)
		child_fail(report, STAGE_SETNS, errno);
	if (p->cgfd >= 0) {
		char buf[16];
		size_t n = pid_text(getpid(), buf);
		if (write(p->cgfd, buf, n) != (ssize_t)n)
			child_fail(report, STAGE_CGROUP, errno);
	}
	if (arrange_fds(p, &report) < 0)
		child_fail(report, STAGE_FDS, errno);
	const char *stage;
	if (creds_drop(&p->creds, &stage) < 0)
		child_fail(report, STAGE_CREDS, errno);
	reset_signals();
	if (chdir(p->workdir) < 0)
		child_fail(report, STAGE_CHDIR, errno);
	child_fail(report, STAGE_EXEC, exec_candidates(p));
}

/* The value of PATH in envp, or the default. */
static const char *env_path(const char *const *envp)
{
	for (const char *const *e = envp; e && *e; e++)
		if (strncmp(*e, "PATH=", 5) == 0)
			return *e + 5;
	return DEFAULT_PATH;
}

/* The paths execve() will try for cmd; NULL-terminated, caller frees
 * with job_list_free(). */
static char **exec_candidates_of(const char *cmd, const char *path)
{
	size_t n = 0;
	char **c = xcalloc(1, sizeof(char *));
	if (strchr(cmd, '/')) {
		c = xreallocarray(c, 2, sizeof(char *));
		c[0] = xstrdup(cmd);
		c[1] = NULL;
		return c;
	}
	for (const char *p = path;;) {
		size_t len = strcspn(p, ":");
		c = xreallocarray(c, n + 2, sizeof(char *));
		c[n++] = len ? xasprintf("%.*s/%s", (int)len, p, cmd) : xasprintf("./%s", cmd);
		c[n] = NULL;
		if (p[len] == '\0')
			break;
		p += len + 1;
	}
	return c;
}

static void prep_free(struct exec_prep *p)
{
	int fds[] = { p->nsfd, p->cgfd, p->nullfd, p->pipe[0], p->pipe[1] };
	for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	job_list_free(p->candidates);
}

static int prep_open(struct exec_prep *p, const struct exec_spec *s, alps_error **err)
{
	_cleanup_free_ char *pin = xasprintf("%s/jobs/%s/mnt", s->run_dir, s->job);
	if (!mnt_is_mount_root(AT_FDCWD, pin))
		return alps_fail(err, ALPS_E_NOT_FOUND, "job %s is not prepared", s->job);
	p->nsfd = open(pin, O_RDONLY | O_CLOEXEC);
	if (p->nsfd < 0)
		return alps_fail_errno(err, "open(%s)", pin);
	if (s->cgroup) {
		_cleanup_free_ char *procs = xasprintf("%s/cgroup.procs", s->cgroup);
		p->cgfd = open(procs, O_WRONLY | O_CLOEXEC);
		if (p->cgfd < 0)
			return alps_fail_errno(err, "open(%s)", procs);
	}
	p->nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (p->nullfd < 0)
		return alps_fail_errno(err, "open(/dev/null)");
	if (pipe2(p->pipe, O_CLOEXEC) < 0)
		return alps_fail_errno(err, "pipe2()");
	return 0;
}

/* The child's report: 0 bytes when the exec happened. */
static int read_report(int fd, struct exec_report *r)
{
	size_t got = 0;
	while (got < sizeof(*r)) {
		ssize_t n = read(fd, (char *)r + got, sizeof(*r) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return (int)got;
}

static int spawn(struct exec_prep *p, pid_t *pid, alps_error **err)
{
	const struct exec_spec *s = p->spec;
	pid_t child = fork();
	if (child < 0)
		return alps_fail_errno(err, "fork()");
	if (child == 0)
		exec_child(p);
	close(p->pipe[1]);
	p->pipe[1] = -1;
	struct exec_report r;
	int got = read_report(p->pipe[0], &r);
	if (got == 0) {
		*pid = child;
		return 0;
	}
	int status;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	if (got != (int)sizeof(r) || r.stage < 0 || (size_t)r.stage >= ARRAY_SIZE(stage_names))
		return alps_fail(err, ALPS_E_INTERNAL, "job %s: the exec child failed", s->job);
	if (r.stage == STAGE_EXEC && r.errnum == ENOENT)
		return alps_fail(err, ALPS_E_NOT_FOUND, "job %s: command not found: %s", s->job,
				 s->argv[0]);
	if (r.stage == STAGE_CHDIR)
		return alps_fail_errnum(err, r.errnum, "job %s: %s %s", s->job,
					stage_names[r.stage], p->workdir);
	return alps_fail_errnum(err, r.errnum, "job %s: %s %s", s->job, stage_names[r.stage],
				r.stage == STAGE_EXEC ? s->argv[0] : "");
}

int job_exec_spawn(const struct exec_spec *s, pid_t *pid, alps_error **err)
{
	if (!job_name_valid(s->job))
		return alps_fail(err, ALPS_E_INVALID, "invalid job name \"%s\"", s->job ? s->job : "");
	if (!s->argv || !s->argv[0] || !*s->argv[0])
		return alps_fail(err, ALPS_E_INVALID, "job %s: no command to run", s->job);
	struct exec_prep p = {
		.nsfd = -1, .cgfd = -1, .nullfd = -1, .pipe = { -1, -1 },
		.workdir = s->workdir ? s->workdir : "/",
		.creds = { s->uid, s->gid, s->groups, s->ngroups },
		.spec = s,
	};
	p.candidates = exec_candidates_of(s->argv[0], env_path(s->envp));
	int rc = prep_open(&p, s, err);
	if (rc == 0)
		rc = spawn(&p, pid, err);
	prep_free(&p);
	return rc;
}
