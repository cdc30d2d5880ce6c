/* fuse.c: squashfs files users name, served by squashfuse (part of apply.h).
 *
 * The kernel's squashfs driver only ever sees files alps wrote itself (a
 * crafted image is a kernel attack surface).  A squashfs file a user names
 * (as the image, or in a `sqsh` mount) is read by squashfuse, running as
 * the user, inside the job's mount namespace:
 *
 *  - the file is opened by a child with the user's credentials (a file the
 *    user cannot read is refused right there, with the user's EACCES);
 *  - the helper (root) opens /dev/fuse and mounts the FUSE file system
 *    itself with the new mount API, nosuid,nodev,ro, allow_other (root's
 *    overlay and the job's processes both read it; the mount exists only
 *    in the job's namespace, which other users cannot enter) and
 *    default_permissions (the kernel checks the files' modes);
 *  - squashfuse runs as the user, no_new_privs, with nothing of the
 *    daemon's environment (PATH only), with the file as
 *    /dev/fd/3 and the FUSE connection as /dev/fd/4 (libfuse's way to
 *    serve a mount someone else made); it never mounts anything;
 *  - the helper opens the mount's root to see it answer, and reports
 *    squashfuse's pidfd: the process lives in the job's namespace, so
 *    job_release() kills it with the job, and a failed prepare too.
 *
 * squashfuse's stderr goes to RUN_DIR/jobs/<job>/squashfuse-<n>.log. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/apply.h"
#include "daemon/job/creds.h"
#include "daemon/job/helper.h"
#include "daemon/job/mount.h"
#include "daemon/job/sys.h"

#ifndef SQUASHFUSE_PATH
#define SQUASHFUSE_PATH "/usr/bin/squashfuse"
#endif

#define FUSE_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV)

static int fuse_unavailable(alps_error **err, const char *why)
{
	return alps_fail(err, ALPS_E_NOT_IMPLEMENTED,
			 "squashfs images given by path need squashfuse and /dev/fuse (%s)", why);
}

/* /dev/fuse opened, or NOT_IMPLEMENTED when this node cannot do FUSE. */
static int open_fuse_dev(alps_error **err)
{
	if (access(SQUASHFUSE_PATH, X_OK) < 0)
		return fuse_unavailable(err, SQUASHFUSE_PATH " is missing");
	if (!mnt_fs_available("fuse"))
		return fuse_unavailable(err, "the kernel has no fuse file system");
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fd < 0 && (errno == ENOENT || errno == ENODEV || errno == ENXIO))
		return fuse_unavailable(err, "no /dev/fuse");
	if (fd < 0)
		return alps_fail_errno(err, "open(/dev/fuse)");
	return fd;
}

/* A detached FUSE mount on the connection fusefd, for uid/gid. */
static int fuse_mount_new(int fusefd, const struct creds *c, const char *what, alps_error **err)
{
	char fdstr[16], uid[16], gid[16];
	snprintf(fdstr, sizeof(fdstr), "%d", fusefd);
	snprintf(uid, sizeof(uid), "%u", (unsigned)c->uid);
	snprintf(gid, sizeof(gid), "%u", (unsigned)c->gid);
	_cleanup_close_ int fsfd = mnt_fs_open("fuse", what, err);
	if (fsfd < 0)
		return -1;
	if (mnt_fs_set(fsfd, "source", "squashfuse", what, err) < 0 ||
	    mnt_fs_set(fsfd, "subtype", "squashfuse", what, err) < 0 ||
	    mnt_fs_set(fsfd, "fd", fdstr, what, err) < 0 ||
	    mnt_fs_set(fsfd, "rootmode", "40000", what, err) < 0 ||
	    mnt_fs_set(fsfd, "user_id", uid, what, err) < 0 ||
	    mnt_fs_set(fsfd, "group_id", gid, what, err) < 0 ||
	    mnt_fs_set(fsfd, "allow_other", NULL, what, err) < 0 ||
	    mnt_fs_set(fsfd, "default_permissions", NULL, what, err) < 0)
		return -1;
	return mnt_fs_create(fsfd, mnt_attr_of(FUSE_FLAGS), what, err);
}

/* Between fork and exec: only async-signal-safe calls. */
static ALPS_NORETURN void squashfuse_child(const struct creds *c, int img, int fuse, int log,
					   int nul)
{
	static char *const argv[] = { "squashfuse", "-f", "/dev/fd/3", "/dev/fd/4", NULL };
	/* A fixed environment: the daemon's own (proxy credentials...) would
	 * be readable by the user in /proc/<pid>/environ. */
	static char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	static const char failed[] = "alps: could not become the user or exec squashfuse\n";
	const char *stage;
	sigset_t all;
	/* Out of the way of 0-4 first, then into place (dup2 clears
	 * O_CLOEXEC on the copies). */
	int a = fcntl(img, F_DUPFD_CLOEXEC, 10), b = fcntl(fuse, F_DUPFD_CLOEXEC, 10);
	int l = fcntl(log, F_DUPFD_CLOEXEC, 10), n = fcntl(nul, F_DUPFD_CLOEXEC, 10);
	if (a < 0 || b < 0 || l < 0 || n < 0 || dup2(n, 0) < 0 || dup2(l, 1) < 0 ||
	    dup2(l, 2) < 0 || dup2(a, 3) < 0 || dup2(b, 4) < 0)
		_exit(126);
	sys_close_range(5, ~0u, 0);
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			sigaction(s, &dfl, NULL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	setsid();
	if (chdir("/") < 0 || creds_drop(c, &stage) < 0) {
		write_all(2, failed, sizeof(failed) - 1);
		_exit(126);
	}
	execve(SQUASHFUSE_PATH, argv, envp);
	write_all(2, failed, sizeof(failed) - 1);
	_exit(127);
}

/* The log squashfuse writes to, in the job directory. */
static int open_log(struct apply_ctx *ctx, char **path, alps_error **err)
{
	*path = xasprintf("%s/squashfuse-%u.log", ctx->job_dir, ctx->nfuse);
	int fd = open(*path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return alps_fail_errno(err, "open(%s)", *path);
	return fd;
}

static pid_t spawn_squashfuse(struct apply_ctx *ctx, int img, int fuse, int log, alps_error **err)
{
	_cleanup_close_ int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nul < 0)
		return alps_fail_errno(err, "open(/dev/null)");
	pid_t pid = fork();
	if (pid < 0)
		return alps_fail_errno(err, "fork() for squashfuse");
	if (pid == 0)
		squashfuse_child(&ctx->creds, img, fuse, log, nul);
	ctx->nfuse++;
	return pid;
}

/* What squashfuse said, for the error; caller frees. */
static char *read_log(const char *path)
{
	char buf[512];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return xstrdup("no message");
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	for (char *p = buf; *p; p++)
		if (*p == '\n')
			*p = ' ';
	return xstrdup(buf);
}

/* Open the mount's root: the first FUSE request, answered once squashfuse
 * has opened and checked the file.  If squashfuse exits instead, the
 * connection dies and the open fails (ENOTCONN). */
static int probe(struct apply_ctx *ctx, const char *path, bool in_root, pid_t pid,
		 const char *log, alps_error **err)
{
	int fd = in_root ? mnt_open_in_root(ctx->rootfd, path, O_RDONLY | O_DIRECTORY, 0)
			 : open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	int saved = errno, status = 0;
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	_cleanup_free_ char *msg = read_log(log);
	return alps_fail_errnum(err, saved, "squashfuse did not serve the file (%s)", msg);
}

/* Hand the daemon a pidfd of squashfuse, to kill it if the prepare fails:
 * a squashfuse nobody could kill would keep the namespace alive. */
static int report_pid(struct apply_ctx *ctx, pid_t pid, alps_error **err)
{
	int pidfd = sys_pidfd_open(pid, 0);
	if (pidfd < 0 || helper_send(ctx->report, HELPER_PIDFD, 0, NULL, NULL, NULL, pidfd) < 0) {
		alps_fail_errno(err, "handing over squashfuse (pid %d)", (int)pid);
		kill(pid, SIGKILL);
		if (pidfd >= 0)
			close(pidfd);
		return -1;
	}
	close(pidfd);
	return 0;
}

/* Mount the squashfs file img (opened as the user) on the directory
 * target (an O_PATH fd) under squashfuse; path (in the container if
 * in_root, else a host path) opens the mount. */
static int fuse_serve(struct apply_ctx *ctx, int img, int target, const char *path, bool in_root,
		      alps_error **err)
{
	_cleanup_close_ int fusefd = open_fuse_dev(err);
	if (fusefd < 0)
		return -1;
	_cleanup_close_ int mfd = fuse_mount_new(fusefd, &ctx->creds, path, err);
	if (mfd < 0 || mnt_attach(mfd, target, path, err) < 0)
		return -1;
	_cleanup_free_ char *log = NULL;
	_cleanup_close_ int logfd = open_log(ctx, &log, err);
	if (logfd < 0)
		return -1;
	pid_t pid = spawn_squashfuse(ctx, img, fusefd, logfd, err);
	if (pid < 0)
		return -1;
	/* Only squashfuse may hold the connection: if it dies, the mount
	 * must fail rather than hang. */
	close(steal_fd(&fusefd));
	if (probe(ctx, path, in_root, pid, log, err) < 0)
		return -1;
	return report_pid(ctx, pid, err);
}

int apply_image_sqsh(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/image", ctx->job_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return alps_fail_errno(err, "mkdir(%s)", dir);
	_cleanup_close_ int target = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (target < 0)
		return alps_fail_errno(err, "open(%s)", dir);
	_cleanup_close_ int img = as_user_open(&ctx->creds, op->src, AS_USER_READ, err);
	if (img < 0 || fuse_serve(ctx, img, target, dir, false, err) < 0)
		return -1;
	ctx->lowers = xreallocarray(ctx->lowers, ctx->nlowers + 1, sizeof(char *));
	ctx->lowers[ctx->nlowers++] = steal_pointer(&dir);
	return 0;
}

int apply_squashfuse(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	/* The source first: nothing is created for a file the user cannot
	 * read. */
	_cleanup_close_ int img = as_user_open(&ctx->creds, op->src, AS_USER_READ, err);
	if (img < 0)
		return -1;
	_cleanup_close_ int target = apply_mount_point(ctx, op, true, err);
	if (target < 0 || fuse_serve(ctx, img, target, op->dst, true, err) < 0)
		return -1;
	_cleanup_close_ int fd = mnt_open_in_root(ctx->rootfd, op->dst, O_PATH, 0);
	if (fd < 0)
		return alps_fail_errno(err, "cannot open %s in the container", op->dst);
	if (mnt_verify(fd, FUSE_FLAGS, op->dst, err) < 0)
		return -1;
	apply_report(ctx, op, "fuse.squashfuse", NULL);
	return 0;
}
