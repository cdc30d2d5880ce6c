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
	_cleanup_close_ int target = apply_mount_point(ctx, op, true, err);
	if (target < 0)
		return -1;
	_cleanup_close_ int mfd = mnt_fs_new(fstype, fstype, op->data, mnt_attr_of(op->flags),
					     what, err);
	if (mfd < 0 || mnt_attach(mfd, target, what, err) < 0)
		return -1;
	_cleanup_close_ int fd = mnt_open_in_root(ctx->rootfd, op->dst, O_PATH, 0);
	if (fd < 0)
		return alps_fail_errno(err, "cannot open %s in the container", op->dst);
	if (mnt_verify(fd, op->flags, what, err) < 0)
		return -1;
	/* A tmpfs of the job's is its own: mount points may go there. */
	if (strcmp(fstype, "tmpfs") == 0 && apply_own_mount(ctx, fd, err) < 0)
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

/* --- mount points ---
 *
 * Below the container's root, some directories are the job's own (the
 * overlay's tmpfs upper layer, the tmpfs mounts alps made) and others are
 * binds of host storage (or a user's squashfuse).  A mount point created
 * inside a bind would be created on the host, by root: an EDF binding
 * "/:/host" and then mounting on "/host/etc/nologin" would lock users out
 * of the node.  So mount points are created only on the job's own file
 * systems; a missing destination inside a bind is refused (its user can
 * create it beforehand, with their own rights, if they may).  Nothing is
 * created or removed before the place is checked. */

static int mount_id_of(int fd, uint64_t *id)
{
	struct statx stx;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) < 0)
		return -1;
	if (!(stx.stx_mask & STATX_MNT_ID)) {
		errno = ENOTSUP;
		return -1;
	}
	*id = stx.stx_mnt_id;
	return 0;
}

int apply_own_mount(struct apply_ctx *ctx, int fd, alps_error **err)
{
	uint64_t id;
	if (mount_id_of(fd, &id) < 0)
		return alps_fail_errno(err, "statx(STATX_MNT_ID)");
	if (ctx->nown >= APPLY_MAX_OWN)
		return alps_fail(err, ALPS_E_INTERNAL, "more than %d file systems of the job's own",
				 APPLY_MAX_OWN);
	ctx->own_mounts[ctx->nown++] = id;
	return 0;
}

static bool on_own_mount(const struct apply_ctx *ctx, int fd)
{
	uint64_t id;
	if (mount_id_of(fd, &id) < 0)
		return false;
	for (size_t i = 0; i < ctx->nown; i++)
		if (ctx->own_mounts[i] == id)
			return true;
	return false;
}

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
		return alps_fail_errno(err, "cannot open %s in the container", path);
	return fd;
}

/* An existing destination: an O_PATH fd; -2 (nothing in *err) when
 * missing.  A user's is looked up as the user: through a host directory
 * the user cannot search, "missing" and "there" fail alike (EACCES), so
 * mounts do not tell a user what root-only directories hold. */
static int find_mount_point(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	if (op->origin == ORIGIN_USER) {
		int fd = as_user_open_in_root(&ctx->creds, ctx->rootfd, op->dst, O_PATH, err);
		if (fd < 0 && (*err)->errnum == ENOENT) {
			cleanup_errorp(err);
			return -2;
		}
		return fd;
	}
	int fd = mnt_open_in_root(ctx->rootfd, op->dst, O_PATH, 0);
	if (fd < 0 && errno == ENOENT)
		return -2;
	if (fd < 0)
		return alps_fail_errno(err, "cannot open %s in the container", op->dst);
	return fd;
}

/* Create the missing part of op->dst, once its nearest existing ancestor
 * is known to be a place of the job's own outside /proc, /sys, /dev. */
static int create_mount_point(struct apply_ctx *ctx, const struct mount_op *op, bool dir,
			      alps_error **err)
{
	const char *missing;
	_cleanup_close_ int parent = nearest_existing(ctx, op->dst, &missing, err);
	if (parent < 0)
		return -1;
	if (!missing)
		return alps_fail(err, ALPS_E_BUSY, "%s appeared in the container while it was "
				 "being created", op->dst);
	if (apply_check_target(ctx, op, parent, err) < 0)
		return -1;
	if (!on_own_mount(ctx, parent)) {
		_cleanup_free_ char *where = missing > op->dst + 1
			? xstrndup(op->dst, (size_t)(missing - op->dst - 1)) : xstrdup("/");
		return alps_fail(err, ALPS_E_INVALID, "%s does not exist, and %s is not the "
				 "container's own file system (a bind of host storage or a squashfs): "
				 "alps creates mount points only on the container's own file systems",
				 op->dst, where);
	}
	return mnt_create_below(parent, missing, dir, op->dst, err);
}

/* The mount point is of the right type and in a place it may be. */
static int check_mount_point(struct apply_ctx *ctx, const struct mount_op *op, int fd, bool dir,
			     alps_error **err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return alps_fail_errno(err, "cannot look up %s in the container", op->dst);
	if (dir && !S_ISDIR(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "%s is not a directory in the container, the "
				 "source is", op->dst);
	if (!dir && S_ISDIR(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "%s is a directory in the container, the source "
				 "is not", op->dst);
	return apply_check_target(ctx, op, fd, err);
}

int apply_mount_point(struct apply_ctx *ctx, const struct mount_op *op, bool dir,
		      alps_error **err)
{
	int fd = find_mount_point(ctx, op, err);
	if (fd == -2)
		fd = create_mount_point(ctx, op, dir, err);
	if (fd < 0)
		return -1;
	if (check_mount_point(ctx, op, fd, dir, err) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Clone the tree at src (an fd) onto op->dst with op's flags, verified. */
static int bind_from_fd(struct apply_ctx *ctx, const struct mount_op *op, int src,
			alps_error **err)
{
	const char *what = op->dst;
	struct stat st;
	if (fstat(src, &st) < 0)
		return alps_fail_errno(err, "cannot look up %s", op->src);
	_cleanup_close_ int target = apply_mount_point(ctx, op, S_ISDIR(st.st_mode), err);
	if (target < 0)
		return -1;
	_cleanup_close_ int mfd = mnt_clone(src, op->flags & MS_REC, mnt_attr_of(op->flags), what,
					    err);
	if (mfd < 0 || mnt_attach(mfd, target, what, err) < 0)
		return -1;
	_cleanup_close_ int fd = mnt_open_in_root(ctx->rootfd, op->dst, O_PATH, 0);
	if (fd < 0)
		return alps_fail_errno(err, "cannot open %s in the container", op->dst);
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
			alps_fail_errno(err, "cannot open %s", op->src);
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
		return alps_fail_errno(err, "cannot open %s", op->src);
	if (bind_from_fd(ctx, op, src, err) < 0)
		return -1;
	apply_report(ctx, op, "sysfs", NULL);
	return 0;
}

static int apply_device(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	_cleanup_close_ int src = open(op->src, O_PATH | O_CLOEXEC);
	if (src < 0)
		return alps_fail_errno(err, "cannot open %s", op->src);
	struct stat st;
	if (fstat(src, &st) < 0)
		return alps_fail_errno(err, "cannot look up %s", op->src);
	if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "%s is not a device node", op->src);
	if (bind_from_fd(ctx, op, src, err) < 0)
		return -1;
	apply_report(ctx, op, "device", NULL);
	return 0;
}

/* Read all of fd (size bytes at most, as fstat said).  Caller frees. */
static char *read_all(int fd, size_t size, size_t *len, const char *dst, alps_error **err)
{
	char *buf = xmalloc(size + 1);
	*len = 0;
	while (*len < size) {
		ssize_t n = read(fd, buf + *len, size - *len);
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

/* The image's version of a file (dst inside the root), or "" when it has
 * none.  It is read before anything is mounted on the root (the plan puts
 * these first), so no path in the image leads to the host's /sys or /proc;
 * opened as the job user, so nothing is read that the user could not read;
 * and never through a symlink as the last component (O_NOFOLLOW), which
 * could name any file.  Opening with O_NONBLOCK cannot hang on a FIFO;
 * devices do not open on the nodev root.  Caller frees. */
static char *read_image_file(struct apply_ctx *ctx, const char *dst, size_t *len,
			     alps_error **err)
{
	*len = 0;
	_cleanup_close_ int fd = as_user_open_in_root(&ctx->creds, ctx->rootfd, dst,
						      O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY,
						      err);
	if (fd < 0 && (*err)->errnum == ENOENT) {
		cleanup_errorp(err);
		return xstrdup("");
	}
	if (fd < 0 && (*err)->errnum == ELOOP) {
		cleanup_errorp(err);
		alps_fail(err, ALPS_E_INVALID, "the image's %s is a symbolic link; alps reads it "
			  "only as a regular file", dst);
		return NULL;
	}
	if (fd < 0) {
		alps_error_prefix(err, "the image's %s", dst);
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		alps_fail_errno(err, "stat of the image's %s", dst);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > ETC_FILE_MAX) {
		alps_fail(err, ALPS_E_INVALID, "the image's %s is not a regular file of at most "
			  "%u bytes", dst, ETC_FILE_MAX);
		return NULL;
	}
	return read_all(fd, (size_t)st.st_size, len, dst, err);
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

/* The workdir, created if missing.  On the container's own file systems
 * (the overlay's upper layer, /tmp, private to the job) alps creates it
 * for the user; inside a bind mount of host storage it is created with the
 * user's own rights, so a job cannot make directories where its user could
 * not. */
static int apply_workdir(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	/* Looked up as the user first, as mount points are (find_mount_point):
	 * "there" and "missing" must not differ below a directory the user
	 * cannot search. */
	int found = find_mount_point(ctx, op, err);
	if (found >= 0)
		close(found);
	if (found != -2)
		return found < 0 ? alps_error_prefix(err, "the workdir %s", op->dst) : 0;
	const char *missing;
	_cleanup_close_ int fd = nearest_existing(ctx, op->dst, &missing, err);
	if (fd < 0)
		return -1;
	if (!missing)
		return 0;
	bool own_root = on_own_mount(ctx, fd);
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
				return alps_fail_errno(err, "cannot create %s for the workdir %s", name,
						       op->dst);
			if (last && fchownat(fd, name, ctx->plan->uid, ctx->plan->gid,
					     AT_SYMLINK_NOFOLLOW) < 0)
				return alps_fail_errno(err, "cannot give the workdir %s to the job's user", op->dst);
		} else if (as_user_mkdirat(&ctx->creds, fd, name, 0755, err) < 0) {
			return alps_error_prefix(err, "the workdir %s", op->dst);
		}
		int next = openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
			return alps_fail_errno(err, "cannot open %s for the workdir %s", name, op->dst);
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
