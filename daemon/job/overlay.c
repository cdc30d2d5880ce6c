/* overlay.c: the container's root, an overlayfs of the image's layers over
 * a tmpfs upper layer (part of apply.h).
 *
 * The upper layer is always there, on a tmpfs private to the job: it holds
 * the mount points alps creates (a /etc/resolv.conf the image lacks, the
 * workdir).  A job that is not `writable` gets the root mount read-only
 * once everything is mounted on it (finish_root in apply.c), so nothing it
 * runs can write there.
 *
 * Layers are stacked one fsconfig("lowerdir+") each (kernel 6.8+): the
 * classic "lowerdir=a:b:c" option string must fit one page, about 45 long
 * layer paths.  Where "lowerdir+" is refused (an older kernel, or a path
 * over fsconfig's 256 bytes) the fallback is the classic string with
 * short relative paths: symlinks l/0, l/1... in the job directory to the
 * layer mounts, mounted from there with mount(2). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/apply.h"
#include "daemon/job/mount.h"
#include "daemon/job/sys.h"

#define OVERLAY_FLAGS (MS_NOSUID | MS_NODEV)
/* mount(2) copies one page of options. */
#define MOUNT_DATA_MAX 4096

static bool force_legacy;

void apply_overlay_force_legacy(bool on)
{
	force_legacy = on;
}

bool apply_overlay_legacy_forced(void)
{
	return force_legacy;
}

/* The upper tmpfs at job_dir/upper with upper/ and work/.  upper/ is the
 * root directory of the container as far as its attributes go, so it
 * takes the mode and owner of the top layer's root.  options are the
 * plan's ("mode=0700,size=25%": jobs.upper_size caps what a writable
 * job writes, and the mount points alps adds). */
static int make_upper(struct apply_ctx *ctx, const char *options, alps_error **err)
{
	const char *what = "the overlay's upper tmpfs";
	_cleanup_free_ char *path = xasprintf("%s/upper", ctx->job_dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return alps_fail_errno(err, "mkdir(%s)", path);
	_cleanup_close_ int mfd = mnt_fs_new("tmpfs", "tmpfs", options ? options : "mode=0700",
					     mnt_attr_of(OVERLAY_FLAGS), what, err);
	if (mfd < 0 || mnt_attach_path(mfd, path, what, err) < 0)
		return -1;
	_cleanup_close_ int ufd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (ufd < 0)
		return alps_fail_errno(err, "open(%s)", path);
	struct stat st;
	const char *top = ctx->lowers[ctx->nlowers - 1];
	if (stat(top, &st) < 0)
		return alps_fail_errno(err, "stat(%s)", top);
	if (mkdirat(ufd, "upper", 0700) < 0 || mkdirat(ufd, "work", 0700) < 0)
		return alps_fail_errno(err, "mkdir(%s/upper, %s/work)", path, path);
	if (fchownat(ufd, "upper", st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
	    fchmodat(ufd, "upper", st.st_mode & 07777, 0) < 0)
		return alps_fail_errno(err, "setting the owner and mode of %s/upper", path);
	return 0;
}

/* The new mount API, one layer at a time, top first.  A detached mount;
 * -2 (with *err cleared) when the kernel refuses "lowerdir+" (EINVAL). */
static int overlay_new_api(struct apply_ctx *ctx, const char *what, alps_error **err)
{
	_cleanup_close_ int fsfd = mnt_fs_open("overlay", what, err);
	if (fsfd < 0 || mnt_fs_set(fsfd, "source", "alps", what, err) < 0)
		return -1;
	for (size_t i = ctx->nlowers; i-- > 0;) {
		if (mnt_fs_set(fsfd, "lowerdir+", ctx->lowers[i], what, err) == 0)
			continue;
		if ((*err)->errnum != EINVAL)
			return -1;
		cleanup_errorp(err);
		return -2;
	}
	_cleanup_free_ char *upper = xasprintf("%s/upper/upper", ctx->job_dir);
	_cleanup_free_ char *work = xasprintf("%s/upper/work", ctx->job_dir);
	if (mnt_fs_set(fsfd, "upperdir", upper, what, err) < 0 ||
	    mnt_fs_set(fsfd, "workdir", work, what, err) < 0)
		return -1;
	return mnt_fs_create(fsfd, mnt_attr_of(OVERLAY_FLAGS), what, err);
}

/* l/<i> -> the i-th lower layer, in the job directory. */
static int make_short_links(struct apply_ctx *ctx, alps_error **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/l", ctx->job_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return alps_fail_errno(err, "mkdir(%s)", dir);
	for (size_t i = 0; i < ctx->nlowers; i++) {
		_cleanup_free_ char *link = xasprintf("%s/%zu", dir, i);
		if (symlink(ctx->lowers[i], link) < 0 && errno != EEXIST)
			return alps_fail_errno(err, "symlink(%s)", link);
	}
	return 0;
}

/* "lowerdir=l/N-1:...:l/0,upperdir=upper/upper,workdir=upper/work". */
static char *legacy_options(const struct apply_ctx *ctx)
{
	char *acc = xstrdup("lowerdir=");
	for (size_t i = ctx->nlowers; i-- > 0;) {
		char *n = xasprintf("%sl/%zu%s", acc, i, i ? ":" : "");
		free(acc);
		acc = n;
	}
	char *n = xasprintf("%s,upperdir=upper/upper,workdir=upper/work", acc);
	free(acc);
	return n;
}

/* mount(2) from inside the job directory, so the relative paths resolve
 * there; the helper's cwd is its own. */
static int overlay_legacy(struct apply_ctx *ctx, alps_error **err)
{
	if (make_short_links(ctx, err) < 0)
		return -1;
	_cleanup_free_ char *opts = legacy_options(ctx);
	if (strlen(opts) >= MOUNT_DATA_MAX)
		return alps_fail(err, ALPS_E_LIMIT, "%zu layers do not fit the overlay's options",
				 ctx->nlowers);
	if (chdir(ctx->job_dir) < 0)
		return alps_fail_errno(err, "chdir(%s)", ctx->job_dir);
	int rc = mount("alps", "root", "overlay", OVERLAY_FLAGS, opts);
	int saved = errno;
	if (chdir("/") < 0 && rc == 0)
		return alps_fail_errno(err, "chdir(/)");
	if (rc < 0)
		return alps_fail_errnum(err, saved, "mount(overlay, %s/root, %s)", ctx->job_dir, opts);
	return 0;
}

/* *legacy tells which way it went, for the mount list. */
static int mount_root(struct apply_ctx *ctx, const char *root, bool *legacy, alps_error **err)
{
	const char *what = "the container's root";
	int mfd = force_legacy ? -2 : overlay_new_api(ctx, what, err);
	*legacy = mfd == -2;
	if (mfd == -1)
		return -1;
	if (mfd == -2)
		return overlay_legacy(ctx, err);
	int rc = mnt_attach_path(mfd, root, what, err);
	close(mfd);
	return rc;
}

int apply_overlay(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	if (ctx->nlowers == 0)
		return alps_fail(err, ALPS_E_INTERNAL, "no layers to stack");
	if (make_upper(ctx, op->data, err) < 0)
		return -1;
	_cleanup_free_ char *root = xasprintf("%s/root", ctx->job_dir);
	bool legacy;
	if (mount_root(ctx, root, &legacy, err) < 0)
		return -1;
	ctx->rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (ctx->rootfd < 0)
		return alps_fail_errno(err, "open(%s)", root);
	if (mnt_verify(ctx->rootfd, OVERLAY_FLAGS, "the container's root", err) < 0 ||
	    apply_own_mount(ctx, ctx->rootfd, err) < 0)
		return -1;
	_cleanup_free_ char *src = xasprintf("%zu layer%s, %s%s", ctx->nlowers,
					     ctx->nlowers == 1 ? "" : "s",
					     ctx->plan->writable ? "writable" : "read-only",
					     legacy ? ", lowerdir string" : "");
	apply_report(ctx, op, "overlay", src);
	return 0;
}
