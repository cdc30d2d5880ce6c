/* alps-enter: the last step of `alps exec`, as a program of its own.
 *
 * The daemon has threads, and a fork() of it copies whatever locks other
 * threads hold (the sanitizers' allocator is not fork-safe), so it never
 * forks to start a job's process: it posix_spawn()s this small program
 * (clone(CLONE_VM|CLONE_VFORK) + exec, nothing run in between) and waits for
 * its report on a worker thread, with a timeout.  Here, single-threaded and
 * in a fresh image, the process joins the caller's cgroups, takes on the
 * caller's limits, enters the job's mount namespace, becomes the caller
 * (every step verified), enters the workdir as the caller and execs the
 * command.  The protocol is in enter.h.
 *
 * Run by root only, with no environment: nothing a user controls (their
 * environment, their PATH) reaches this program's own loader. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/creds.h"
#include "daemon/job/sys.h"
#include "libexec/enter.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_GROUPS 65536
#define MAX_RLIMITS 64

struct rlim_rec {
	int resource;
	struct rlimit lim;
};

struct enter_req {
	uid_t uid;
	gid_t gid;
	bool have_uid, have_gid;
	gid_t *groups;
	size_t ngroups;
	unsigned ncgroups;
	struct rlim_rec rlimits[MAX_RLIMITS];
	size_t nrlimits;
	cpu_set_t cpus;
	bool have_cpus;
	int nice;
	bool have_nice;
	int oom;
	bool have_oom;
	mode_t umask;
	const char *workdir;
	bool tty;
	char **argv, **envp;
	size_t argc, envc;
};

static ALPS_NORETURN void fail(enum enter_stage stage, int errnum, int index)
{
	struct enter_report r = { .stage = stage, .errnum = errnum, .index = index };
	write_all(ENTER_FD_REPORT, &r, sizeof(r));
	_exit(127);
}

/* The whole request, NUL-terminated once more at the end. */
static char *read_request(size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = xmalloc(cap + 1);
	for (;;) {
		if (n == cap) {
			if (cap >= ENTER_REQUEST_MAX)
				fail(ENTER_STAGE_REQUEST, E2BIG, 0);
			cap *= 2;
			buf = xrealloc(buf, cap + 1);
		}
		ssize_t got = read(ENTER_FD_REQUEST, buf + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			fail(ENTER_STAGE_REQUEST, errno, 0);
		if (got == 0)
			break;
		n += (size_t)got;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

static long long num(const char *s, long long min, long long max)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < min || v > max)
		fail(ENTER_STAGE_REQUEST, EINVAL, 0);
	return v;
}

static rlim_t rlim_value(long long v)
{
	return v < 0 ? RLIM_INFINITY : (rlim_t)v;
}

static void parse_rlimit(struct enter_req *r, const char *v)
{
	long long res, cur, max;
	char tail;
	if (r->nrlimits == MAX_RLIMITS ||
	    sscanf(v, "%lld %lld %lld%c", &res, &cur, &max, &tail) != 3 || res < 0 ||
	    res >= RLIM_NLIMITS)
		fail(ENTER_STAGE_REQUEST, EINVAL, 0);
	struct rlim_rec *l = &r->rlimits[r->nrlimits++];
	l->resource = (int)res;
	l->lim.rlim_cur = rlim_value(cur);
	l->lim.rlim_max = rlim_value(max);
}

static void push(char ***v, size_t *n, char *s)
{
	*v = xreallocarray(*v, *n + 2, sizeof(char *));
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
}

static void parse_record(struct enter_req *r, char tag, char *v)
{
	switch (tag) {
	case 'u': r->uid = (uid_t)num(v, 0, UINT32_MAX - 1); r->have_uid = true; break;
	case 'g': r->gid = (gid_t)num(v, 0, UINT32_MAX - 1); r->have_gid = true; break;
	case 'G':
		if (r->ngroups == MAX_GROUPS)
			fail(ENTER_STAGE_REQUEST, E2BIG, 0);
		r->groups = xreallocarray(r->groups, r->ngroups + 1, sizeof(gid_t));
		r->groups[r->ngroups++] = (gid_t)num(v, 0, UINT32_MAX - 1);
		break;
	case 'k': r->ncgroups = (unsigned)num(v, 0, ENTER_MAX_CGROUPS); break;
	case 'r': parse_rlimit(r, v); break;
	case 'C': {
		long long cpu = num(v, 0, CPU_SETSIZE - 1);
		CPU_SET((int)cpu, &r->cpus);
		r->have_cpus = true;
		break;
	}
	case 'n': r->nice = (int)num(v, -20, 19); r->have_nice = true; break;
	case 'o': r->oom = (int)num(v, -1000, 1000); r->have_oom = true; break;
	case 'm': {
		char *end;
		unsigned long m = strtoul(v, &end, 8);
		if (!*v || *end || m > 0777)
			fail(ENTER_STAGE_REQUEST, EINVAL, 0);
		r->umask = (mode_t)m;
		break;
	}
	case 'w': r->workdir = v; break;
	case 't': r->tty = num(v, 0, 1) == 1; break;
	case 'A': push(&r->argv, &r->argc, v); break;
	case 'E': push(&r->envp, &r->envc, v); break;
	default: fail(ENTER_STAGE_REQUEST, EINVAL, 0);
	}
}

static void parse_request(struct enter_req *r, char *buf, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->umask = 022;
	r->envp = xcalloc(1, sizeof(char *));
	CPU_ZERO(&r->cpus);
	for (size_t off = 0; off < len;) {
		char *rec = buf + off;
		size_t n = strlen(rec);
		if (n == 0)
			fail(ENTER_STAGE_REQUEST, EINVAL, 0);
		parse_record(r, rec[0], rec + 1);
		off += n + 1;
	}
	if (!r->have_uid || !r->have_gid || !r->workdir || r->argc == 0 || !*r->argv[0])
		fail(ENTER_STAGE_REQUEST, EINVAL, 0);
}

/* Writing 0 to cgroup.procs moves the writer itself (v1 and v2). */
static void join_cgroups(const struct enter_req *r)
{
	for (unsigned i = 0; i < r->ncgroups; i++) {
		int fd = ENTER_FD_CGROUP0 + (int)i;
		if (write(fd, "0", 1) != 1)
			fail(ENTER_STAGE_CGROUP, errno, (int)i);
		close(fd);
	}
}

/* A limit above what we may set (raising a hard limit needs
 * CAP_SYS_RESOURCE, which a daemon in a container may lack) is kept at our
 * own hard limit: never more than the caller had, at most the daemon's. */
static int set_limit(int resource, struct rlimit want)
{
	if (setrlimit((__rlimit_resource_t)resource, &want) == 0)
		return 0;
	struct rlimit have;
	if (errno != EPERM || getrlimit((__rlimit_resource_t)resource, &have) < 0)
		return -1;
	if (want.rlim_max > have.rlim_max)
		want.rlim_max = have.rlim_max;
	if (want.rlim_cur > want.rlim_max)
		want.rlim_cur = want.rlim_max;
	return setrlimit((__rlimit_resource_t)resource, &want);
}

/* oom_score_adj below ours needs CAP_SYS_RESOURCE too: then ours stays
 * (the process is no less killable than the caller's own child). */
static int set_oom(int oom)
{
	char text[16];
	int n = snprintf(text, sizeof(text), "%d", oom);
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = write(fd, text, (size_t)n) == n || errno == EACCES ? 0 : -1;
	close(fd);
	return rc;
}

/* Done while still root: lowering nice, or raising a hard limit back to
 * the caller's, needs a privilege the user's own process had no need for. */
static void apply_limits(const struct enter_req *r)
{
	if (r->have_oom && set_oom(r->oom) < 0)
		fail(ENTER_STAGE_LIMITS, errno, 0);
	if (r->have_nice && setpriority(PRIO_PROCESS, 0, r->nice) < 0)
		fail(ENTER_STAGE_LIMITS, errno, 0);
	if (r->have_cpus && sched_setaffinity(0, sizeof(r->cpus), &r->cpus) < 0)
		fail(ENTER_STAGE_LIMITS, errno, 0);
	for (size_t i = 0; i < r->nrlimits; i++)
		if (set_limit(r->rlimits[i].resource, r->rlimits[i].lim) < 0)
			fail(ENTER_STAGE_LIMITS, errno, 0);
	umask(r->umask);
}

/* The value of PATH in envp, or the default. */
static const char *env_path(char *const *envp)
{
	for (char *const *e = envp; *e; e++)
		if (strncmp(*e, "PATH=", 5) == 0)
			return *e + 5;
	return DEFAULT_PATH;
}

/* Like execvp: EACCES from one candidate is the answer if no other works,
 * ENOENT and ENOTDIR move on, anything else stops. */
static int exec_command(const struct enter_req *r)
{
	const char *cmd = r->argv[0];
	if (strchr(cmd, '/')) {
		execve(cmd, r->argv, r->envp);
		return errno;
	}
	bool eacces = false;
	for (const char *p = env_path(r->envp);;) {
		size_t len = strcspn(p, ":");
		char *path = len ? xasprintf("%.*s/%s", (int)len, p, cmd) : xasprintf("./%s", cmd);
		execve(path, r->argv, r->envp);
		int e = errno;
		free(path);
		if (e == EACCES)
			eacces = true;
		else if (e != ENOENT && e != ENOTDIR)
			return e;
		if (p[len] == '\0')
			break;
		p += len + 1;
	}
	return eacces ? EACCES : ENOENT;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

int main(int argc, char **argv)
{
	(void)argv;
	if (argc != 1 || !fd_open(ENTER_FD_REQUEST) || !fd_open(ENTER_FD_REPORT) ||
	    !fd_open(ENTER_FD_NS)) {
		fputs("alps-enter: started by alpsd only (see alps-enter.c)\n", stderr);
		return 125;
	}
	/* Nobody may trace us once we are the user: we still hold root's
	 * fds until the exec. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	fcntl(ENTER_FD_REPORT, F_SETFD, FD_CLOEXEC);
	size_t len;
	char *buf = read_request(&len);
	close(ENTER_FD_REQUEST);
	struct enter_req r;
	parse_request(&r, buf, len);
	join_cgroups(&r);
	apply_limits(&r);
	if (setns(ENTER_FD_NS, CLONE_NEWNS) < 0)
		fail(ENTER_STAGE_SETNS, errno, 0);
	close(ENTER_FD_NS);
	/* Only 0, 1, 2 and the report are left; the report closes at exec. */
	int keep = ENTER_FD_REPORT;
	close_fds_except(&keep, 1);
	const char *stage;
	struct creds c = { r.uid, r.gid, r.groups, r.ngroups };
	if (creds_drop(&c, &stage) < 0)
		fail(ENTER_STAGE_CREDS, errno, 0);
	if (chdir(r.workdir) < 0)
		fail(ENTER_STAGE_CHDIR, errno, 0);
	/* A session of its own with the client's pseudo-terminal as its
	 * controlling terminal: job control, ^C and the window size work as
	 * in a local shell.  (As the user: the tty is the user's.) */
	if (r.tty && (setsid() < 0 || ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0))
		fail(ENTER_STAGE_TTY, errno, 0);
	fail(ENTER_STAGE_EXEC, exec_command(&r), 0);
}
