/* exec.c: run a process inside a prepared job (see exec.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/job/cgroup.h"
#include "daemon/job/exec.h"
#include "daemon/job/mount.h"
#include "daemon/job/plan.h"
#include "daemon/job/sys.h"
#include "libexec/enter.h"

#define DEFAULT_TIMEOUT_MS 30000
#define REAP_WAIT_MS 5000
#define PROC_FILE_MAX 65536

/* --- the caller --- */

/* A small /proc file of the peer, NUL-terminated; NULL with errno. */
static char *proc_read(int procfd, const char *name)
{
	_cleanup_close_ int fd = openat(procfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	char *buf = xmalloc(PROC_FILE_MAX + 1);
	size_t n = 0;
	ssize_t got;
	while (n < PROC_FILE_MAX && (got = read(fd, buf + n, PROC_FILE_MAX - n)) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			free(buf);
			return NULL;
		}
		n += (size_t)got;
	}
	buf[n] = '\0';
	return buf;
}

/* The value after "key" in a /proc status-like text, or NULL. */
static const char *field(const char *text, const char *key)
{
	size_t n = strlen(key);
	for (const char *p = text; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, key, n) == 0)
			return p + n + strspn(p + n, " \t");
	return NULL;
}

/* The pid of a pidfd in our pid namespace (fdinfo's "Pid:"). */
static pid_t pidfd_pid(int pidfd)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	_cleanup_free_ char *text = proc_read(AT_FDCWD, path);
	const char *v = text ? field(text, "Pid:") : NULL;
	return v ? (pid_t)atoi(v) : -1;
}

/* "unlimited" or a number. */
static int limit_value(const char *s, rlim_t *v)
{
	if (strcmp(s, "unlimited") == 0) {
		*v = RLIM_INFINITY;
		return 0;
	}
	char *end;
	errno = 0;
	unsigned long long n = strtoull(s, &end, 10);
	if (!*s || *end || errno)
		return -1;
	*v = (rlim_t)n;
	return 0;
}

/* /proc/PID/limits: one line a resource, in RLIMIT_* order, the values in
 * fixed columns ("%-25s %-20s %-20s %-10s").  Read rather than prlimit()
 * on the pid: that needs CAP_SYS_RESOURCE, which containers often drop. */
static int parse_limits(struct exec_peer *p, const char *text, alps_error **err)
{
	const char *line = strchr(text, '\n');
	int r = 0;
	for (; line && line[1] && r < RLIM_NLIMITS; line = strchr(line + 1, '\n'), r++) {
		char soft[32], hard[32];
		if (strlen(line + 1) < 27 ||
		    sscanf(line + 1 + 26, "%31s %31s", soft, hard) != 2 ||
		    limit_value(soft, &p->rlimits[r].rlim_cur) < 0 ||
		    limit_value(hard, &p->rlimits[r].rlim_max) < 0)
			break;
	}
	if (r != RLIM_NLIMITS)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "/proc/%d/limits: unexpected line %d",
				 (int)p->pid, r + 2);
	return 0;
}

static int read_limits(struct exec_peer *p, int procfd, alps_error **err)
{
	_cleanup_free_ char *limits = proc_read(procfd, "limits");
	if (!limits)
		return alps_fail_errno(err, "reading /proc/%d/limits", (int)p->pid);
	if (parse_limits(p, limits, err) < 0)
		return -1;
	CPU_ZERO(&p->cpus);
	if (sched_getaffinity(p->pid, sizeof(p->cpus), &p->cpus) < 0)
		return alps_fail_errno(err, "sched_getaffinity(%d)", (int)p->pid);
	errno = 0;
	p->nice = getpriority(PRIO_PROCESS, (id_t)p->pid);
	if (p->nice == -1 && errno)
		return alps_fail_errno(err, "getpriority(%d)", (int)p->pid);
	return 0;
}

static int read_proc_files(struct exec_peer *p, int procfd, alps_error **err)
{
	p->cgroup = proc_read(procfd, "cgroup");
	_cleanup_free_ char *oom = proc_read(procfd, "oom_score_adj");
	_cleanup_free_ char *status = proc_read(procfd, "status");
	const char *um = status ? field(status, "Umask:") : NULL;
	if (!p->cgroup || !oom || !status)
		return alps_fail_errno(err, "reading /proc/%d of the caller", (int)p->pid);
	p->oom_score_adj = atoi(oom);
	if (!um)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "/proc/%d/status has no Umask", (int)p->pid);
	p->umask = (mode_t)(strtoul(um, NULL, 8) & 0777);
	return 0;
}

int exec_peer_read(int pidfd, struct exec_peer *out, alps_error **err)
{
	memset(out, 0, sizeof(*out));
	out->pid = pidfd_pid(pidfd);
	if (out->pid <= 0)
		return alps_fail(err, ALPS_E_CANCELLED, "the caller has gone");
	char path[32];
	snprintf(path, sizeof(path), "/proc/%d", (int)out->pid);
	_cleanup_close_ int procfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (procfd < 0 || read_proc_files(out, procfd, err) < 0 || read_limits(out, procfd, err) < 0) {
		if (procfd < 0)
			alps_fail_errno(err, "open(%s)", path);
		exec_peer_free(out);
		return -1;
	}
	/* Alive now, so alive all along: every pid-based read above was its. */
	if (sys_pidfd_send_signal(pidfd, 0) < 0) {
		exec_peer_free(out);
		return alps_fail(err, ALPS_E_CANCELLED, "the caller has gone");
	}
	return 0;
}

void exec_peer_free(struct exec_peer *p)
{
	free(p->cgroup);
	p->cgroup = NULL;
}

/* --- the request to alps-enter --- */

struct buf {
	char *data;
	size_t len;
};

static void rec(struct buf *b, char tag, const char *fmt, ...) ALPS_PRINTF(3, 4);

static void rec(struct buf *b, char tag, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *v = xvasprintf(fmt, ap);
	va_end(ap);
	size_t n = strlen(v);
	b->data = xrealloc(b->data, b->len + n + 2);
	b->data[b->len] = tag;
	memcpy(b->data + b->len + 1, v, n + 1);
	b->len += n + 2;
}

static long long rlim_num(rlim_t v)
{
	return v == RLIM_INFINITY ? -1 : (long long)v;
}

static void peer_records(struct buf *b, const struct exec_peer *p)
{
	for (int r = 0; r < RLIM_NLIMITS; r++)
		rec(b, 'r', "%d %lld %lld", r, rlim_num(p->rlimits[r].rlim_cur),
		    rlim_num(p->rlimits[r].rlim_max));
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &p->cpus))
			rec(b, 'C', "%d", c);
	rec(b, 'n', "%d", p->nice);
	rec(b, 'o', "%d", p->oom_score_adj);
	rec(b, 'm', "%o", (unsigned)p->umask);
}

/* Strings with a NUL inside cannot be passed; protobuf strings can hold one. */
static void request_build(struct buf *b, const struct exec_spec *s, size_t ncgroups)
{
	rec(b, 'u', "%u", (unsigned)s->uid);
	rec(b, 'g', "%u", (unsigned)s->gid);
	for (size_t i = 0; i < s->ngroups; i++)
		rec(b, 'G', "%u", (unsigned)s->groups[i]);
	rec(b, 'k', "%zu", ncgroups);
	if (s->peer)
		peer_records(b, s->peer);
	rec(b, 'w', "%s", s->workdir ? s->workdir : "/");
	if (s->tty)
		rec(b, 't', "%d", 1);
	for (const char *const *a = s->argv; *a; a++)
		rec(b, 'A', "%s", *a);
	for (const char *const *e = s->envp; e && *e; e++)
		rec(b, 'E', "%s", *e);
}

static int request_memfd(const struct exec_spec *s, size_t ncgroups, alps_error **err)
{
	struct buf b = { NULL, 0 };
	request_build(&b, s, ncgroups);
	int fd = memfd_create("alps-enter-request", MFD_CLOEXEC);
	if (fd < 0 || write_all(fd, b.data, b.len) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
		alps_fail_errno(err, "memfd for alps-enter");
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	free(b.data);
	return fd;
}

/* --- the fds alps-enter gets --- */

struct enter_fds {
	int fds[ENTER_FD_CGROUP0 + ENTER_MAX_CGROUPS];  /* by their number in alps-enter */
	size_t n;
	int report;                     /* our end */
};

static void enter_fds_close(struct enter_fds *f)
{
	for (size_t i = ENTER_FD_REQUEST; i < f->n; i++)
		if (f->fds[i] >= 0)
			close(f->fds[i]);
	if (f->report >= 0)
		close(f->report);
}

static int open_ns(const struct exec_spec *s, alps_error **err)
{
	_cleanup_free_ char *pin = xasprintf("%s/jobs/%s/mnt", s->run_dir, s->job);
	if (!mnt_is_mount_root(AT_FDCWD, pin))
		return alps_fail(err, ALPS_E_NOT_FOUND, "job %s is not prepared", s->job);
	int fd = open(pin, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? alps_fail_errno(err, "open(%s)", pin) : fd;
}

static int open_cgroups(const struct exec_spec *s, struct enter_fds *f, size_t *ncg,
			alps_error **err)
{
	*ncg = 0;
	if (!s->peer)
		return 0;
	_cleanup_free_ int *cg = NULL;
	if (job_cgroup_open(s->run_dir, s->job, s->peer->cgroup, &cg, ncg, err) < 0)
		return alps_error_prefix(err, "job %s", s->job);
	if (*ncg > ENTER_MAX_CGROUPS) {
		for (size_t i = 0; i < *ncg; i++)
			close(cg[i]);
		return alps_fail(err, ALPS_E_LIMIT, "the caller is in %zu cgroup hierarchies", *ncg);
	}
	for (size_t i = 0; i < *ncg; i++)
		f->fds[f->n++] = cg[i];
	return 0;
}

static int enter_fds_open(const struct exec_spec *s, struct enter_fds *f, alps_error **err)
{
	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < ARRAY_SIZE(f->fds); i++)
		f->fds[i] = -1;
	f->report = -1;
	f->fds[0] = s->stdin_fd;
	f->fds[1] = s->stdout_fd;
	f->fds[2] = s->stderr_fd;
	f->n = ENTER_FD_CGROUP0;
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return alps_fail_errno(err, "pipe2()");
	f->report = pipefd[0];
	f->fds[ENTER_FD_REPORT] = pipefd[1];
	f->fds[ENTER_FD_NS] = open_ns(s, err);
	if (f->fds[ENTER_FD_NS] < 0)
		return -1;
	size_t ncg;
	if (open_cgroups(s, f, &ncg, err) < 0)
		return -1;
	f->fds[ENTER_FD_REQUEST] = request_memfd(s, ncg, err);
	return f->fds[ENTER_FD_REQUEST] < 0 ? -1 : 0;
}

/* --- spawning --- */

static char enter_path[4200];

static void find_enter_path(void)
{
	const char *env = getenv("ALPS_ENTER_PATH");
	snprintf(enter_path, sizeof(enter_path), "%s",
		 env && *env ? env : ALPS_LIBEXECDIR "/" PACKAGE "/alps-enter");
	if (env && *env)
		return;
	/* A daemon run from its build tree (config.status beside it) uses
	 * the alps-enter built with it. */
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash = n > 0 ? (exe[n] = '\0', strrchr(exe, '/')) : NULL;
	if (!slash)
		return;
	*slash = '\0';
	char marker[4200], built[4200];
	snprintf(marker, sizeof(marker), "%s/config.status", exe);
	snprintf(built, sizeof(built), "%s/libexec/alps-enter", exe);
	if (access(marker, F_OK) == 0 && access(built, X_OK) == 0)
		memcpy(enter_path, built, sizeof(built));
}

const char *job_exec_enter_path(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, find_enter_path);
	return enter_path;
}

/* posix_spawn's dup2 actions run in order: sources are first moved above
 * every target so that no action overwrites a later one's source. */
static int spawn_enter(struct enter_fds *f, pid_t *pid, alps_error **err)
{
	int high[ARRAY_SIZE(f->fds)];
	int null = -1, rc = 0;
	size_t made = 0;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	for (size_t i = 0; i < f->n; i++) {
		int src = f->fds[i];
		if (src < 0 && i <= 2) {
			if (null < 0)
				null = open("/dev/null", O_RDWR | O_CLOEXEC);
			src = null;
		}
		high[i] = src < 0 ? -1 : fcntl(src, F_DUPFD_CLOEXEC, (int)f->n);
		if (high[i] < 0) {
			rc = alps_fail_errno(err, "fd for alps-enter");
			break;
		}
		made++;
		posix_spawn_file_actions_adddup2(&fa, high[i], (int)i);
	}
	sigset_t all, none;
	sigfillset(&all);
	sigemptyset(&none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
	const char *path = job_exec_enter_path();
	char *const argv[] = { (char *)"alps-enter", NULL };
	char *const envp[] = { NULL };
	if (rc == 0 && (rc = posix_spawn(pid, path, &fa, &attr, argv, envp)) != 0)
		rc = alps_fail_errnum(err, rc, "cannot start %s", path);
	for (size_t i = 0; i < made; i++)
		close(high[i]);
	if (null >= 0)
		close(null);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return rc == 0 ? 0 : -1;
}

/* --- its report --- */

/* Wait up to ms for the report: 1 with *r, 0 at exec (EOF), -1 at timeout. */
static int wait_report(int fd, unsigned ms, struct enter_report *r)
{
	uint64_t deadline = now_monotonic_ms() + ms;
	size_t got = 0;
	for (;;) {
		uint64_t now = now_monotonic_ms();
		if (now >= deadline)
			return -1;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int n = poll(&pfd, 1, (int)(deadline - now));
		if (n <= 0)
			continue;
		ssize_t k = read(fd, (char *)r + got, sizeof(*r) - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return got == sizeof(*r) ? 1 : 0;
		got += (size_t)k;
		if (got == sizeof(*r))
			return 1;
	}
}

/* Kill (if asked) and reap the child, waiting a bounded time. */
static void reap(pid_t pid, bool kill_it)
{
	int pidfd = sys_pidfd_open(pid, 0);
	if (kill_it && pidfd >= 0)
		sys_pidfd_send_signal(pidfd, SIGKILL);
	if (pidfd >= 0) {
		struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
		while (poll(&pfd, 1, REAP_WAIT_MS) < 0 && errno == EINTR)
			;
		close(pidfd);
	}
	if (waitpid(pid, NULL, WNOHANG) == 0)
		log_warn("alps-enter %d does not end after SIGKILL; left unreaped", (int)pid);
}

static const char *const stage_names[] = {
	[ENTER_STAGE_REQUEST] = "reading its request",
	[ENTER_STAGE_CGROUP] = "joining the caller's cgroups",
	[ENTER_STAGE_LIMITS] = "applying the caller's limits",
	[ENTER_STAGE_SETNS] = "entering the job's namespace",
	[ENTER_STAGE_CREDS] = "becoming the user",
	[ENTER_STAGE_CHDIR] = "entering the workdir",
	[ENTER_STAGE_TTY] = "taking the terminal as its controlling terminal",
	[ENTER_STAGE_EXEC] = "exec",
};

static int report_error(const struct exec_spec *s, const struct enter_report *r, alps_error **err)
{
	int *st = s->start_status;
	if (r->stage < 0 || r->stage >= ENTER_STAGE_COUNT)
		return alps_fail(err, ALPS_E_INTERNAL, "job %s: the command could not be "
				 "started", s->job);
	if (r->stage == ENTER_STAGE_EXEC && (r->errnum == ENOENT || r->errnum == ENOTDIR)) {
		if (st)
			*st = EXEC_STATUS_NOT_FOUND;
		return alps_fail(err, ALPS_E_NOT_FOUND, "%s: command not found", s->argv[0]);
	}
	if (r->stage == ENTER_STAGE_EXEC) {
		if (st)
			*st = EXEC_STATUS_NOT_EXECUTABLE;
		return alps_fail_errnum(err, r->errnum, "cannot execute %s", s->argv[0]);
	}
	if (r->stage == ENTER_STAGE_CHDIR)      /* the caller's -w: its words */
		return alps_fail_errnum(err, r->errnum, "cannot enter the workdir %s",
					s->workdir ? s->workdir : "/");
	return alps_fail_errnum(err, r->errnum, "job %s: %s%s%s", s->job, stage_names[r->stage],
				r->stage == ENTER_STAGE_CHDIR ? " " : "",
				r->stage == ENTER_STAGE_CHDIR ? (s->workdir ? s->workdir : "/") : "");
}

/* The job's directory, locked shared until the command is exec'd (or has
 * failed): a release takes it exclusively before it signals anything, so
 * a process being started is either refused or already in the job's
 * cgroups when the release looks for them. */
static int lock_job(const struct exec_spec *s, alps_error **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/jobs/%s", s->run_dir, s->job);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? alps_fail(err, ALPS_E_NOT_FOUND, "job %s is not prepared",
						   s->job)
				       : alps_fail_errno(err, "open(%s)", dir);
	while (flock(fd, LOCK_SH) < 0 && errno == EINTR)
		;
	if (faccessat(fd, JOB_RELEASING_MARK, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		close(fd);
		return alps_fail(err, ALPS_E_BUSY, "job %s is being released", s->job);
	}
	return fd;
}

static int run_enter(const struct exec_spec *s, pid_t *pid, alps_error **err)
{
	_cleanup_close_ int lock = lock_job(s, err);
	if (lock < 0)
		return -1;
	struct enter_fds f;
	int rc = enter_fds_open(s, &f, err);
	if (rc == 0)
		rc = spawn_enter(&f, pid, err);
	int report = steal_fd(&f.report);
	enter_fds_close(&f);
	if (rc < 0) {
		close(report);
		return -1;
	}
	unsigned ms = s->timeout_ms ? s->timeout_ms : DEFAULT_TIMEOUT_MS;
	struct enter_report r;
	int got = wait_report(report, ms, &r);
	close(report);
	if (got == 0)
		return 0;
	reap(*pid, got < 0);
	if (got < 0)
		return alps_fail(err, ALPS_E_TIMEOUT, "job %s: %s did not start within %u s "
				 "(a file system of the job not answering?); killed", s->job,
				 s->argv[0], ms / 1000);
	return report_error(s, &r, err);
}

int job_exec_spawn(const struct exec_spec *s, pid_t *pid, alps_error **err)
{
	if (s->start_status)
		*s->start_status = EXEC_STATUS_FAILED;
	if (!job_name_valid(s->job))
		return alps_fail(err, ALPS_E_INVALID, "invalid job name \"%s\"", s->job ? s->job : "");
	if (!s->argv || !s->argv[0] || !*s->argv[0])
		return alps_fail(err, ALPS_E_INVALID, "job %s: no command to run", s->job);
	return run_enter(s, pid, err);
}
