/* creds.c: privilege drops and work done as the job user (see creds.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/job/creds.h"
#include "daemon/job/ipc.h"
#include "daemon/job/sys.h"

/* Raw system calls: glibc's wrappers broadcast credential changes to every
 * thread (setxid), machinery a child between fork and exec should not
 * touch.  The child has one thread, which is all the raw calls change. */
static int raw_setgroups(size_t n, const gid_t *groups)
{
	return (int)syscall(SYS_setgroups, n, groups);
}

static int raw_setresgid(gid_t g)
{
	return (int)syscall(SYS_setresgid, g, g, g);
}

static int raw_setresuid(uid_t u)
{
	return (int)syscall(SYS_setresuid, u, u, u);
}

static int verify_ids(const struct creds *c, const char **stage)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	*stage = "getresgid";
	if (getresgid(&rg, &eg, &sg) < 0)
		return -1;
	if (rg != c->gid || eg != c->gid || sg != c->gid) {
		errno = EPERM;
		return -1;
	}
	*stage = "getresuid";
	if (getresuid(&ru, &eu, &su) < 0)
		return -1;
	if (ru != c->uid || eu != c->uid || su != c->uid) {
		errno = EPERM;
		return -1;
	}
	/* Verified the other way round too: root must be out of reach. */
	*stage = "setresuid(0) must fail";
	if (c->uid != 0 && raw_setresuid(0) == 0) {
		errno = EPERM;
		return -1;
	}
	return 0;
}

int creds_drop(const struct creds *c, const char **stage)
{
	*stage = "setgroups";
	if (raw_setgroups(c->ngroups, c->groups) < 0)
		return -1;
	*stage = "setresgid";
	if (raw_setresgid(c->gid) < 0)
		return -1;
	*stage = "setresuid";
	if (raw_setresuid(c->uid) < 0)
		return -1;
	if (verify_ids(c, stage) < 0)
		return -1;
	*stage = "prctl(PR_SET_NO_NEW_PRIVS)";
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return 0;
}

void close_fds_except(const int *keep, size_t n)
{
	int sorted[8];
	size_t m = 0;
	for (size_t i = 0; i < n && m < ARRAY_SIZE(sorted); i++)
		if (keep[i] >= 3)
			sorted[m++] = keep[i];
	for (size_t i = 1; i < m; i++)
		for (size_t j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
			int t = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = t;
		}
	unsigned from = 3;
	for (size_t i = 0; i < m; i++) {
		if ((unsigned)sorted[i] > from)
			sys_close_range(from, (unsigned)sorted[i] - 1, 0);
		from = (unsigned)sorted[i] + 1;
	}
	sys_close_range(from, ~0u, 0);
}

/* --- work done as the user --- */

struct as_user_reply {
	int errnum;
	char stage[48];
};

/* Runs in the child with the user's credentials; sets *fd if it made one;
 * -1 with errno. */
typedef int (*as_user_fn)(const void *arg, int *fd);

static ALPS_NORETURN void as_user_child(int sock, int keep, const struct creds *c, as_user_fn fn,
					const void *arg)
{
	struct as_user_reply r;
	const char *stage = "open";
	int fd = -1;
	int fds[2] = { sock, keep };
	memset(&r, 0, sizeof(r));
	close_fds_except(fds, 2);
	/* Nobody may ptrace the child once it is the user: it still holds
	 * a root-made fd (keep) and shares the helper's memory image. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	int failed = creds_drop(c, &stage);
	if (failed == 0) {
		stage = "open";         /* errors from here on are fn's */
		failed = fn(arg, &fd);
	}
	if (failed < 0) {
		r.errnum = errno;
		strncpy(r.stage, stage, sizeof(r.stage) - 1);
	}
	ipc_send(sock, &r, sizeof(r), r.errnum ? -1 : fd);
	_exit(0);
}

static int wait_child(pid_t pid)
{
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

/* Run fn in a child as c; *fd gets what fn made (or -1).  what names the
 * operation for errors ("opening /x"). */
static int as_user_run(const struct creds *c, as_user_fn fn, const void *arg, int keep, int *fd,
		       const char *what, alps_error **err)
{
	int sv[2];
	*fd = -1;
	if (ipc_pair(sv) < 0)
		return alps_fail_errno(err, "cannot %s: no socket pair", what);
	pid_t pid = fork();
	if (pid < 0) {
		alps_fail_errno(err, "cannot %s: no process", what);
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0)
		as_user_child(sv[1], keep, c, fn, arg);
	close(sv[1]);
	struct as_user_reply r;
	ssize_t n = ipc_recv(sv[0], &r, sizeof(r), fd);
	int saved = errno;
	close(sv[0]);
	wait_child(pid);
	if (n != (ssize_t)sizeof(r)) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return alps_fail_errnum(err, n < 0 ? saved : EPROTO, "cannot %s as uid %u: no answer", what,
					(unsigned)c->uid);
	}
	if (r.errnum) {
		r.stage[sizeof(r.stage) - 1] = '\0';
		/* The user reads what failed; the step inside (setgroups, prctl...)
		 * is for the log. */
		log_debug("%s as uid %u failed at %s: %s", what, (unsigned)c->uid, r.stage,
			  strerror(r.errnum));
		if (strcmp(r.stage, "open") != 0)
			return alps_fail_errnum(err, r.errnum, "cannot switch to uid %u to %s",
						(unsigned)c->uid, what);
		return alps_fail_errnum(err, r.errnum, "cannot %s as uid %u", what, (unsigned)c->uid);
	}
	return 0;
}

struct open_args {
	const char *path;
	enum as_user_open_mode mode;
};

static int open_as_user_fn(const void *arg, int *out)
{
	const struct open_args *a = arg;
	struct stat st;
	if (a->mode == AS_USER_READ) {
		int fd = open(a->path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0)
			return -1;
		int bad = fstat(fd, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR
						     : !S_ISREG(st.st_mode) ? EINVAL : 0;
		if (bad) {
			close(fd);
			errno = bad;
			return -1;
		}
		*out = fd;
		return 0;
	}
	int fd = open(a->path, O_PATH | O_CLOEXEC);
	if (fd < 0)
		return -1;
	/* O_PATH checks only the search rights on the way; the source itself
	 * must be readable by the user too (and searchable, a directory). */
	int mode = R_OK;
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
		mode |= X_OK;
	if (syscall(SYS_faccessat2, fd, "", mode, AT_EMPTY_PATH) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	*out = fd;
	return 0;
}

int as_user_open(const struct creds *c, const char *path, enum as_user_open_mode mode,
		 alps_error **err)
{
	struct open_args a = { .path = path, .mode = mode };
	_cleanup_free_ char *what = xasprintf("open %s", path);
	int fd;
	if (as_user_run(c, open_as_user_fn, &a, -1, &fd, what, err) < 0)
		return -1;
	if (fd < 0)
		return alps_fail(err, ALPS_E_INTERNAL, "%s as uid %u: no fd came back", what,
				 (unsigned)c->uid);
	return fd;
}

struct open_in_root_args {
	int rootfd;
	const char *path;
	int flags;
};

/* openat2 answers EAGAIN when a rename raced the lookup; try again. */
#define OPENAT2_TRIES 16

static int open_in_root_fn(const void *arg, int *out)
{
	const struct open_in_root_args *a = arg;
	const char *p = a->path;
	while (*p == '/')
		p++;
	for (int i = 0;; i++) {
		int fd = sys_openat2(a->rootfd, *p ? p : ".", (uint64_t)(a->flags | O_CLOEXEC), 0,
				     RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
		if (fd >= 0) {
			*out = fd;
			return 0;
		}
		if (errno != EAGAIN || i >= OPENAT2_TRIES)
			return -1;
	}
}

int as_user_open_in_root(const struct creds *c, int rootfd, const char *path, int flags,
			 alps_error **err)
{
	struct open_in_root_args a = { .rootfd = rootfd, .path = path, .flags = flags };
	_cleanup_free_ char *what = xasprintf("open %s in the container", path);
	int fd;
	if (as_user_run(c, open_in_root_fn, &a, rootfd, &fd, what, err) < 0)
		return -1;
	if (fd < 0)
		return alps_fail(err, ALPS_E_INTERNAL, "%s as uid %u: no fd came back", what,
				 (unsigned)c->uid);
	return fd;
}

struct mkdir_args {
	int dirfd;
	const char *name;
	mode_t mode;
};

static int mkdir_as_user_fn(const void *arg, int *out)
{
	const struct mkdir_args *a = arg;
	(void)out;
	return mkdirat(a->dirfd, a->name, a->mode) < 0 && errno != EEXIST ? -1 : 0;
}

int as_user_mkdirat(const struct creds *c, int dirfd, const char *name, mode_t mode,
		    alps_error **err)
{
	struct mkdir_args a = { .dirfd = dirfd, .name = name, .mode = mode };
	_cleanup_free_ char *what = xasprintf("create %s", name);
	int fd;
	return as_user_run(c, mkdir_as_user_fn, &a, dirfd, &fd, what, err);
}
