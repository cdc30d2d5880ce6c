/* apply.c: apply a mount plan in the helper (see apply.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/apply.h"
#include "daemon/job/etcfiles.h"
#include "daemon/job/helper.h"
#include "daemon/job/layers.h"
#include "daemon/job/mount.h"
#include "daemon/job/mountinfo.h"
#include "daemon/job/sys.h"

/* Image files the user line is merged into are small; a bigger one is
 * not a passwd file. */
#define ETC_FILE_MAX (8u << 20)

void apply_report(struct apply_ctx *ctx, const struct mount_op *op, const char *fstype,
		  const char *source)
{
	helper_send(ctx->report, HELPER_MOUNT, op->flags, op->dst ? op->dst : "", fstype,
		    source ? source : (op->src ? op->src : ""), -1);
}

void apply_ctx_free(struct apply_ctx *ctx)
{
	for (size_t i = 0; i < ctx->nlowers; i++)
		free(ctx->lowers[i]);
	free(ctx->lowers);
	free(ctx->job_dir);
	if (ctx->rootfd >= 0)
		close(ctx->rootfd);
	ctx->lowers = NULL;
	ctx->job_dir = NULL;
	ctx->rootfd = -1;
}

/* Append a line to RUN_DIR/jobs/<job>/layers, the list job_release()
 * drops references from; written after each acquisition so that a helper
 * dying half-way leaves an exact list. */
static int record_layer(struct apply_ctx *ctx, const char *id, alps_error **err)
{
	_cleanup_free_ char *path = xasprintf("%s/layers", ctx->job_dir);
	_cleanup_close_ int fd =
		open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return alps_fail_errno(err, "open(%s)", path);
	_cleanup_free_ char *line = xasprintf("%s\n", id);
	if (write_all(fd, line, strlen(line)) < 0)
		return alps_fail_errno(err, "write(%s)", path);
	return 0;
}

static int apply_layer(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	char *mp;
	if (layer_mount_acquire(ctx->plan->run_dir, op->id, op->src, &mp, err) < 0)
		return -1;
	ctx->lowers = xreallocarray(ctx->lowers, ctx->nlowers + 1, sizeof(char *));
	ctx->lowers[ctx->nlowers++] = mp;
	return record_layer(ctx, op->id, err);
}

/* Mount a new file system (proc, tmpfs) on op->dst in the container. */
static int apply_new_fs(struct apply_ctx *ctx, const struct mount_op *op, const char *fstype,
			alps_error **err)
{
	const char *what = op->dst;
	_cleanup_close_ int target = mnt_mkdir_in_root(ctx->rootfd, op->dst, 0755, err);
	if (target < 0)
		return -1;
	_cleanup_close_ int mfd = mnt_fs_new(fstype, fstype, op->data, mnt_attr_of(op->flags),
					     what, err);
	if (mfd < 0 || mnt_attach(mfd, target, what, err) < 0)
		return -1;
	_cleanup_close_ int fd = mnt_open_in_root(ctx->rootfd, op->dst, O_PATH, 0);
	if (fd < 0)
		return alps_fail_errno(err, "openat2(%s) in the container", op->dst);
	if (mnt_verify(fd, op->flags, what, err) < 0)
		return -1;
	apply_report(ctx, op, fstype, fstype);
	return 0;
}

static int apply_proc(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	return apply_new_fs(ctx, op, "proc", err);
}

static int apply_tmpfs(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	return apply_new_fs(ctx, op, "tmpfs", err);
}

/* Where a site or user mount really lands: a symlink in the image may
 * lead elsewhere than its destination says.  Wherever links lead, such
 * mounts stay out of /proc, /sys and /dev, and devices in /dev. */
int apply_check_target(struct apply_ctx *ctx, const struct mount_op *op, int fd,
			alps_error **err)
{
	static const char *const reserved[] = { "/proc", "/sys", "/dev" };
	if (op->origin != ORIGIN_USER && op->origin != ORIGIN_SITE)
		return 0;
	char link[64], where[4096];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, where, sizeof(where) - 1);
	if (n < 0)
		return alps_fail_errno(err, "readlink(%s)", link);
	where[n] = '\0';
	_cleanup_free_ char *root = xasprintf("%s/root", ctx->job_dir);
	if (!path_is_under(where, root))
		return alps_fail(err, ALPS_E_INVALID, "%s resolves outside the container", op->dst);
	const char *inside = where[strlen(root)] ? where + strlen(root) : "/";
	if (op->kind == MOUNT_DEVICE)
		return path_is_under(inside, "/dev") ? 0
			: alps_fail(err, ALPS_E_INVALID, "%s leads to %s, out of /dev", op->dst,
				    inside);
	for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
		if (path_is_under(inside, reserved[i]))
			return alps_fail(err, ALPS_E_INVALID, "%s leads to %s, which belongs to the "
					 "system", op->dst, inside);
	return 0;
}

/* The mount point for a source: a directory for a directory, else a file;
 * an existing one of the other type is refused. */
static int bind_target(struct apply_ctx *ctx, const struct mount_op *op, bool dir,
		       alps_error **err)
{
	int fd = dir ? mnt_mkdir_in_root(ctx->rootfd, op->dst, 0755, err)
		     : mnt_mkfile_in_root(ctx->rootfd, op->dst, err);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		alps_fail_errno(err, "stat(%s) in the container", op->dst);
	} else if (!dir && S_ISDIR(st.st_mode)) {
		alps_fail(err, ALPS_E_INVALID, "%s is a directory in the container, the source "
			  "is not", op->dst);
	} else if (apply_check_target(ctx, op, fd, err) == 0) {
		return fd;
	}
	close(fd);
	return -1;
}

/* Clone the tree at src (an fd) onto op->dst with op's flags, verified. */
static int bind_from_fd(struct apply_ctx *ctx, const struct mount_op *op, int src,
			alps_error **err)
{
	const char *what = op->dst;
	struct stat st;
	if (fstat(src, &st) < 0)
		return alps_fail_errno(err, "stat(%s)", op->src);
	_cleanup_close_ int target = bind_target(ctx, op, S_ISDIR(st.st_mode), err);
	if (target < 0)
		return -1;
	_cleanup_close_ int mfd = mnt_clone(src, op->flags & MS_REC, mnt_attr_of(op->flags), what,
					    err);
	if (mfd < 0 || mnt_attach(mfd, target, what, err) < 0)
		return -1;
	_cleanup_close_ int fd = mnt_open_in_root(ctx->rootfd, op->dst, O_PATH, 0);
	if (fd < 0)
		return alps_fail_errno(err, "openat2(%s) in the container", op->dst);
	return mnt_verify(fd, op->flags, what, err);
}

static int apply_bind(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	_cleanup_close_ int src = -1;
	if (op->as_user) {
		src = as_user_open(&ctx->creds, op->src, AS_USER_PATH, err);
	} else {
		src = open(op->src, O_PATH | O_CLOEXEC);
		if (src < 0 && errno == ENOENT && op->optional)
			return 0;
		if (src < 0)
			alps_fail_errno(err, "open(%s)", op->src);
	}
	if (src < 0 || bind_from_fd(ctx, op, src, err) < 0)
		return -1;
	apply_report(ctx, op, "bind", NULL);
	return 0;
}

static int apply_sysfs(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	_cleanup_close_ int src = open(op->src, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (src < 0)
		return alps_fail_errno(err, "open(%s)", op->src);
	if (bind_from_fd(ctx, op, src, err) < 0)
		return -1;
	apply_report(ctx, op, "sysfs", NULL);
	return 0;
}

static int apply_device(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	_cleanup_close_ int src = open(op->src, O_PATH | O_CLOEXEC);
	if (src < 0)
		return alps_fail_errno(err, "open(%s)", op->src);
	struct stat st;
	if (fstat(src, &st) < 0)
		return alps_fail_errno(err, "stat(%s)", op->src);
	if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "%s is not a device node", op->src);
	if (bind_from_fd(ctx, op, src, err) < 0)
		return -1;
	apply_report(ctx, op, "device", NULL);
	return 0;
}

/* The image's version of a file (dst inside the root), or "" when it has
 * none.  Caller frees. */
static char *read_image_file(struct apply_ctx *ctx, const char *dst, size_t *len,
			     alps_error **err)
{
	*len = 0;
	/* Looked at before it is opened for reading: a link in the image
	 * could lead to a device node (a site's GPU in /dev), and opening a
	 * device can do things. */
	_cleanup_close_ int pfd = mnt_open_in_root(ctx->rootfd, dst, O_PATH, 0);
	if (pfd < 0 && errno == ENOENT)
		return xstrdup("");
	struct stat st;
	if (pfd < 0 || fstat(pfd, &st) < 0) {
		alps_fail_errno(err, "opening the image's %s", dst);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > ETC_FILE_MAX) {
		alps_fail(err, ALPS_E_INVALID, "the image's %s is not a regular file of at most "
			  "%u bytes", dst, ETC_FILE_MAX);
		return NULL;
	}
	char reopen[64];
	snprintf(reopen, sizeof(reopen), "/proc/self/fd/%d", pfd);
	_cleanup_close_ int fd = open(reopen, O_RDONLY | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		alps_fail_errno(err, "reading the image's %s", dst);
		return NULL;
	}
	char *buf = xmalloc((size_t)st.st_size + 1);
	while (*len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + *len, (size_t)st.st_size - *len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			alps_fail_errno(err, "reading the image's %s", dst);
			free(buf);
			return NULL;
		}
		if (n == 0)
			break;
		*len += (size_t)n;
	}
	buf[*len] = '\0';
	return buf;
}

/* Write the generated file under the job directory; an O_PATH fd of it. */
static int write_job_file(struct apply_ctx *ctx, const char *dst, const char *text,
			  alps_error **err)
{
	_cleanup_free_ char *name = xstrdup(dst);
	for (char *p = name; *p; p++)
		if (*p == '/')
			*p = '_';
	_cleanup_free_ char *path = xasprintf("%s/file%s", ctx->job_dir, name);
	_cleanup_close_ int fd =
		open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return alps_fail_errno(err, "open(%s)", path);
	if (fchmod(fd, 0644) < 0 || write_all(fd, text, strlen(text)) < 0)
		return alps_fail_errno(err, "write(%s)", path);
	int pfd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return alps_fail_errno(err, "open(%s)", path);
	return pfd;
}

static int apply_file_over(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	size_t len;
	_cleanup_free_ char *image = read_image_file(ctx, op->dst, &len, err);
	if (!image)
		return -1;
	_cleanup_free_ char *merged = etc_merge(image, len, op->data);
	_cleanup_close_ int src = write_job_file(ctx, op->dst, merged, err);
	if (src < 0 || bind_from_fd(ctx, op, src, err) < 0)
		return -1;
	apply_report(ctx, op, "file", "generated");
	return 0;
}

static int apply_workdir(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err);

static const struct {
	enum mount_kind kind;
	int (*apply)(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err);
} handlers[] = {
	{ MOUNT_LAYER, apply_layer },
	{ MOUNT_IMAGE_SQSH, apply_image_sqsh },
	{ MOUNT_OVERLAY, apply_overlay },
	{ MOUNT_PROC, apply_proc },
	{ MOUNT_SYSFS, apply_sysfs },
	{ MOUNT_DEVTMP, apply_devtmp },
	{ MOUNT_DEVICE, apply_device },
	{ MOUNT_TMPFS, apply_tmpfs },
	{ MOUNT_BIND, apply_bind },
	{ MOUNT_SQUASHFUSE, apply_squashfuse },
	{ MOUNT_FILE_OVER, apply_file_over },
	{ MOUNT_WORKDIR, apply_workdir },
};

/* The nearest existing ancestor of path in the container: an O_PATH fd,
 * and *missing pointing at the first component that does not exist. */
static int nearest_existing(struct apply_ctx *ctx, const char *path, const char **missing,
			    alps_error **err)
{
	_cleanup_free_ char *prefix = xstrdup(path);
	int fd = mnt_open_in_root(ctx->rootfd, "/", O_PATH | O_DIRECTORY, 0);
	*missing = NULL;
	for (const char *p = path; fd >= 0 && *p;) {
		while (*p == '/')
			p++;
		size_t len = strcspn(p, "/");
		if (len == 0)
			break;
		prefix[(p - path) + len] = '\0';
		int next = mnt_open_in_root(ctx->rootfd, prefix, O_PATH | O_DIRECTORY, 0);
		prefix[(p - path) + len] = path[(p - path) + len];
		if (next < 0 && errno == ENOENT) {
			*missing = p;
			return fd;
		}
		close(fd);
		fd = next;
		p += len;
	}
	if (fd < 0)
		return alps_fail_errno(err, "openat2(%s) in the container", path);
	return fd;
}

static bool same_mount(int a, int b)
{
	struct statx sa, sb;
	if (statx(a, "", AT_EMPTY_PATH, STATX_MNT_ID, &sa) < 0 ||
	    statx(b, "", AT_EMPTY_PATH, STATX_MNT_ID, &sb) < 0)
		return false;
	return (sa.stx_mask & STATX_MNT_ID) && (sb.stx_mask & STATX_MNT_ID) &&
	       sa.stx_mnt_id == sb.stx_mnt_id;
}

/* The workdir, created if missing.  On the container's own root (the
 * overlay's upper layer, private to the job) alps creates it for the user;
 * inside a bind mount of host storage it is created with the user's own
 * rights, so a job cannot make directories where its user could not. */
static int apply_workdir(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	const char *missing;
	_cleanup_close_ int fd = nearest_existing(ctx, op->dst, &missing, err);
	if (fd < 0)
		return -1;
	if (!missing)
		return 0;
	bool own_root = same_mount(fd, ctx->rootfd);
	for (const char *p = missing; *p;) {
		while (*p == '/')
			p++;
		size_t len = strcspn(p, "/");
		if (len == 0)
			break;
		_cleanup_free_ char *name = xstrndup(p, len);
		bool last = p[len] == '\0' || strspn(p + len, "/") == strlen(p + len);
		if (own_root) {
			if (mkdirat(fd, name, 0755) < 0 && errno != EEXIST)
				return alps_fail_errno(err, "mkdir(%s) for the workdir %s", name,
						       op->dst);
			if (last && fchownat(fd, name, ctx->plan->uid, ctx->plan->gid,
					     AT_SYMLINK_NOFOLLOW) < 0)
				return alps_fail_errno(err, "chown(%s)", op->dst);
		} else if (as_user_mkdirat(&ctx->creds, fd, name, 0755, err) < 0) {
			return alps_error_prefix(err, "the workdir %s", op->dst);
		}
		int next = openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
			return alps_fail_errno(err, "open(%s) for the workdir %s", name, op->dst);
		close(fd);
		fd = next;
		p += len;
	}
	return 0;
}

/* From here on the helper's mounts are its own: a new mount namespace
 * whose mounts are all private, so nothing propagates back to the host
 * (on systemd hosts / is shared). */
static int enter_private_ns(struct apply_ctx *ctx, alps_error **err)
{
	if (unshare(CLONE_NEWNS) < 0)
		return alps_fail_errno(err, "unshare(CLONE_NEWNS)");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return alps_fail_errno(err, "mount(/, MS_REC | MS_PRIVATE)");
	ctx->unshared = true;
	return 0;
}

/* The root read-only unless writable (everything on it is mounted, the
 * mount points and the workdir exist), its flags checked, then
 * pivot_root(".", ".") and the old root detached from under it: the
 * old root's mounts (the host's, copied by unshare) leave the
 * namespace. */
static int finish_root(struct apply_ctx *ctx, alps_error **err)
{
	unsigned long want = MS_NOSUID | MS_NODEV | (ctx->plan->writable ? 0 : MS_RDONLY);
	if (!ctx->plan->writable &&
	    mnt_setattr(ctx->rootfd, false, MOUNT_ATTR_RDONLY, 0, "the container's root", err) < 0)
		return -1;
	if (mnt_verify(ctx->rootfd, want, "the container's root", err) < 0)
		return -1;
	if (fchdir(ctx->rootfd) < 0)
		return alps_fail_errno(err, "fchdir(%s/root)", ctx->job_dir);
	if (sys_pivot_root(".", ".") < 0)
		return alps_fail_errno(err, "pivot_root(%s/root)", ctx->job_dir);
	if (umount2(".", MNT_DETACH) < 0)
		return alps_fail_errno(err, "umount2(old root, MNT_DETACH)");
	if (chdir("/") < 0)
		return alps_fail_errno(err, "chdir(/) in the container");
	return 0;
}

static int apply_one(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	if (op->kind != MOUNT_LAYER && !ctx->unshared && enter_private_ns(ctx, err) < 0)
		return -1;
	if (op->kind != MOUNT_LAYER && op->kind != MOUNT_IMAGE_SQSH && op->kind != MOUNT_OVERLAY &&
	    ctx->rootfd < 0)
		return alps_fail(err, ALPS_E_INTERNAL, "no root before %s", mount_kind_name(op->kind));
	for (size_t i = 0; i < ARRAY_SIZE(handlers); i++)
		if (handlers[i].kind == op->kind)
			return handlers[i].apply(ctx, op, err);
	return alps_fail(err, ALPS_E_INTERNAL, "no handler for %s", mount_kind_name(op->kind));
}

int apply_plan(struct apply_ctx *ctx, alps_error **err)
{
	for (size_t i = 0; i < ctx->plan->nops; i++) {
		const struct mount_op *op = &ctx->plan->ops[i];
		if (apply_one(ctx, op, err) < 0) {
			_cleanup_free_ char *what = mount_op_describe(op);
			return alps_error_prefix(err, "%s", what);
		}
	}
	return finish_root(ctx, err);
}
