/* dev.c: the container's /dev (part of apply.h).
 *
 * A small tmpfs (nosuid, nodev, noexec) with the standard nodes bound one
 * by one from the host's /dev (each bind its own mount, the only places
 * in /dev where device files open), the usual symlinks and a devpts
 * instance of the job's own (newinstance: the job sees only its ptys).
 * /dev/shm (a tmpfs of the size jobs.shm_size says) and site devices
 * (GPUs...) come as operations of their own afterwards. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/apply.h"
#include "daemon/job/mount.h"
#include "daemon/job/sys.h"

static const char *const std_nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };

static const struct {
	const char *name, *target;
} std_links[] = {
	{ "fd", "/proc/self/fd" },
	{ "stdin", "/proc/self/fd/0" },
	{ "stdout", "/proc/self/fd/1" },
	{ "stderr", "/proc/self/fd/2" },
	{ "ptmx", "pts/ptmx" },
};

/* Check the flags of what is now mounted at devfd/name. */
static int verify_at(int devfd, const char *name, unsigned long want, alps_error **err)
{
	_cleanup_free_ char *what = xasprintf("/dev/%s", name);
	_cleanup_close_ int fd = openat(devfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return alps_fail_errno(err, "cannot open %s in the container", what);
	return mnt_verify(fd, want, what, err);
}

/* Bind the host's /dev/<name> onto a new empty file in the job's /dev. */
static int bind_node(int devfd, const char *name, alps_error **err)
{
	_cleanup_free_ char *host = xasprintf("/dev/%s", name);
	_cleanup_close_ int src = open(host, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (src < 0)
		return alps_fail_errno(err, "open(%s)", host);
	struct stat st;
	if (fstat(src, &st) < 0)
		return alps_fail_errno(err, "stat(%s)", host);
	if (!S_ISCHR(st.st_mode))
		return alps_fail(err, ALPS_E_INTERNAL, "the host's %s is not a character device", host);
	int fd = openat(devfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
	if (fd < 0)
		return alps_fail_errno(err, "creating /dev/%s in the container", name);
	close(fd);
	_cleanup_close_ int target = openat(devfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (target < 0)
		return alps_fail_errno(err, "cannot open /dev/%s in the container", name);
	_cleanup_close_ int mfd = mnt_clone(src, false, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, host,
					    err);
	if (mfd < 0 || mnt_attach(mfd, target, host, err) < 0)
		return -1;
	return verify_at(devfd, name, MS_NOSUID | MS_NOEXEC, err);
}

/* A new file system on the directory name of the job's /dev. */
static int mount_sub(int devfd, const char *name, mode_t mode, const char *fstype,
		     const char *options, unsigned long want, alps_error **err)
{
	unsigned attr = mnt_attr_of(want);
	_cleanup_free_ char *what = xasprintf("/dev/%s", name);
	if (mkdirat(devfd, name, mode) < 0 || fchmodat(devfd, name, mode, 0) < 0)
		return alps_fail_errno(err, "cannot create %s in the container", what);
	_cleanup_close_ int target = openat(devfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (target < 0)
		return alps_fail_errno(err, "cannot open %s in the container", what);
	_cleanup_close_ int mfd = mnt_fs_new(fstype, fstype, options, attr, what, err);
	if (mfd < 0 || mnt_attach(mfd, target, what, err) < 0)
		return -1;
	return verify_at(devfd, name, want, err);
}

static int fill_dev(int devfd, alps_error **err)
{
	for (size_t i = 0; i < ARRAY_SIZE(std_nodes); i++)
		if (bind_node(devfd, std_nodes[i], err) < 0)
			return -1;
	for (size_t i = 0; i < ARRAY_SIZE(std_links); i++)
		if (symlinkat(std_links[i].target, devfd, std_links[i].name) < 0)
			return alps_fail_errno(err, "cannot link /dev/%s in the container",
					       std_links[i].name);
	return mount_sub(devfd, "pts", 0755, "devpts", "newinstance,ptmxmode=0666,mode=0620",
			 MS_NOSUID | MS_NOEXEC, err);
}

int apply_devtmp(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err)
{
	_cleanup_close_ int target = apply_mount_point(ctx, op, true, err);
	if (target < 0)
		return -1;
	_cleanup_close_ int mfd = mnt_fs_new("tmpfs", "tmpfs", op->data, mnt_attr_of(op->flags),
					     op->dst, err);
	if (mfd < 0 || mnt_attach(mfd, target, op->dst, err) < 0)
		return -1;
	_cleanup_close_ int devfd = mnt_open_in_root(ctx->rootfd, op->dst, O_PATH | O_DIRECTORY, 0);
	if (devfd < 0)
		return alps_fail_errno(err, "cannot open %s in the container", op->dst);
	if (mnt_verify(devfd, op->flags, op->dst, err) < 0 || apply_own_mount(ctx, devfd, err) < 0 ||
	    fill_dev(devfd, err) < 0)
		return -1;
	apply_report(ctx, op, "tmpfs", "tmpfs + host nodes, devpts");
	return 0;
}
