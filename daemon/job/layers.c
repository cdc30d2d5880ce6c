/* layers.c: shared, counted layer mounts (see layers.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/layers.h"
#include "daemon/job/loop.h"
#include "daemon/job/mount.h"
#include "daemon/job/plan.h"
#include "daemon/job/rundir.h"
#include "daemon/job/sys.h"

#define LAYER_MOUNT_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV)

static int check_id(const char *id, alps_error **err)
{
	if (!layer_id_valid(id))
		return alps_fail(err, ALPS_E_INVALID, "invalid layer id \"%s\"", id ? id : "");
	return 0;
}

/* The count in dir/refs; a missing file is 0. */
static int refs_read(const char *dir, unsigned *refs, alps_error **err)
{
	_cleanup_free_ char *path = xasprintf("%s/refs", dir);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	*refs = 0;
	if (fd < 0)
		return errno == ENOENT ? 0 : alps_fail_errno(err, "open(%s)", path);
	char buf[32];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return alps_fail_errno(err, "read(%s)", path);
	buf[n] = '\0';
	char *end;
	errno = 0;
	unsigned long v = strtoul(buf, &end, 10);
	if (errno || end == buf || (*end && *end != '\n') || v > 1000000000ul)
		return alps_fail(err, ALPS_E_INTEGRITY, "%s holds no count", path);
	*refs = (unsigned)v;
	return 0;
}

/* Replace dir/refs atomically (write a temporary file, rename). */
static int refs_write(const char *dir, unsigned refs, alps_error **err)
{
	_cleanup_free_ char *path = xasprintf("%s/refs", dir);
	_cleanup_free_ char *tmp = xasprintf("%s/refs.tmp", dir);
	_cleanup_close_ int fd =
		open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return alps_fail_errno(err, "open(%s)", tmp);
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%u\n", refs);
	if (write_all(fd, buf, (size_t)n) < 0)
		return alps_fail_errno(err, "write(%s)", tmp);
	if (rename(tmp, path) < 0)
		return alps_fail_errno(err, "rename(%s, %s)", tmp, path);
	return 0;
}

/* Mount sqfs read-only on root through an autoclear loop device.  The
 * loop fd is closed on return: from then on the mount is the device's only
 * user, and unmounting it frees the device.  (No logging here: this runs
 * in the namespace helper, a fork of a threaded daemon, where the log's
 * lock may be held by a thread that does not exist.) */
static int layer_mount_new(const char *id, const char *sqfs, const char *root, alps_error **err)
{
	_cleanup_free_ char *what = xasprintf("layer %s (%s)", id, sqfs);
	char dev[32];
	_cleanup_close_ int lfd = loop_attach(sqfs, dev, sizeof(dev), err);
	if (lfd < 0)
		return alps_error_prefix(err, "%s", what);
	_cleanup_close_ int mfd = mnt_fs_new("squashfs", dev, "ro", mnt_attr_of(LAYER_MOUNT_FLAGS),
					     what, err);
	if (mfd < 0 || mnt_attach_path(mfd, root, what, err) < 0)
		return -1;
	_cleanup_close_ int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (rfd < 0) {
		alps_fail_errno(err, "open(%s)", root);
	} else if (mnt_verify(rfd, LAYER_MOUNT_FLAGS, what, err) == 0) {
		return 0;
	}
	umount2(root, MNT_DETACH | UMOUNT_NOFOLLOW);
	return -1;
}

/* Unmount and forget a layer; the lock is held.  Nothing mounted and no
 * directory is fine. */
static int layer_drop(const char *dir, alps_error **err)
{
	_cleanup_free_ char *root = xasprintf("%s/root", dir);
	_cleanup_free_ char *refs = xasprintf("%s/refs", dir);
	/* Detached rather than unmounted: a job namespace that has not yet
	 * let go of its copy (a helper before pivot_root) holds the file
	 * system, and the loop device follows it when it does. */
	if (mnt_is_mount_root(AT_FDCWD, root) && umount2(root, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
		return alps_fail_errno(err, "umount(%s)", root);
	if (unlink(refs) < 0 && errno != ENOENT)
		return alps_fail_errno(err, "unlink(%s)", refs);
	if (rmdir(root) < 0 && errno != ENOENT)
		return alps_fail_errno(err, "rmdir(%s)", root);
	if (rmdir(dir) < 0 && errno != ENOENT)
		return alps_fail_errno(err, "rmdir(%s)", dir);
	return 0;
}

static int mkdir_exist_ok(const char *path, mode_t mode, alps_error **err)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return alps_fail_errno(err, "mkdir(%s)", path);
	return 0;
}

int layer_mount_acquire(const char *run_dir, const char *id, const char *sqfs_path,
			char **mountpoint, alps_error **err)
{
	if (check_id(id, err) < 0)
		return -1;
	if (!sqfs_path || sqfs_path[0] != '/')
		return alps_fail(err, ALPS_E_INVALID, "layer %s: the squashfs path must be absolute",
				 id);
	_cleanup_run_dir_lock_ int lock = run_dir_lock(run_dir, err);
	if (lock < 0)
		return -1;
	_cleanup_free_ char *dir = xasprintf("%s/layers/%s", run_dir, id);
	_cleanup_free_ char *root = xasprintf("%s/root", dir);
	unsigned refs;
	if (mkdir_exist_ok(dir, 0700, err) < 0 || mkdir_exist_ok(root, 0755, err) < 0 ||
	    refs_read(dir, &refs, err) < 0)
		return -1;
	bool mounted = mnt_is_mount_root(AT_FDCWD, root);
	if (!mounted && layer_mount_new(id, sqfs_path, root, err) < 0) {
		if (refs == 0)
			layer_drop(dir, NULL);
		return -1;
	}
	if (refs_write(dir, refs + 1, err) < 0) {
		if (!mounted)
			layer_drop(dir, NULL);
		return -1;
	}
	*mountpoint = steal_pointer(&root);
	return 0;
}

int layer_mount_release(const char *run_dir, const char *id, alps_error **err)
{
	if (check_id(id, err) < 0)
		return -1;
	_cleanup_run_dir_lock_ int lock = run_dir_lock(run_dir, err);
	if (lock < 0)
		return -1;
	_cleanup_free_ char *dir = xasprintf("%s/layers/%s", run_dir, id);
	unsigned refs;
	if (access(dir, F_OK) < 0)
		return errno == ENOENT ? 0 : alps_fail_errno(err, "access(%s)", dir);
	if (refs_read(dir, &refs, err) < 0)
		return -1;
	if (refs > 1)
		return refs_write(dir, refs - 1, err);
	return layer_drop(dir, err);
}

int layer_mount_state(const char *run_dir, const char *id, unsigned *refs, bool *mounted,
		      alps_error **err)
{
	if (check_id(id, err) < 0)
		return -1;
	_cleanup_run_dir_lock_ int lock = run_dir_lock(run_dir, err);
	if (lock < 0)
		return -1;
	_cleanup_free_ char *dir = xasprintf("%s/layers/%s", run_dir, id);
	_cleanup_free_ char *root = xasprintf("%s/root", dir);
	*mounted = mnt_is_mount_root(AT_FDCWD, root);
	return refs_read(dir, refs, err);
}

int layer_mount_set_refs(const char *run_dir, const char *id, unsigned refs, alps_error **err)
{
	if (check_id(id, err) < 0)
		return -1;
	_cleanup_run_dir_lock_ int lock = run_dir_lock(run_dir, err);
	if (lock < 0)
		return -1;
	_cleanup_free_ char *dir = xasprintf("%s/layers/%s", run_dir, id);
	if (refs == 0)
		return layer_drop(dir, err);
	if (access(dir, F_OK) < 0)
		return alps_fail_errno(err, "access(%s)", dir);
	return refs_write(dir, refs, err);
}
