/* layers.c: shared, counted layer mounts (see layers.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
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

/* Replace dir/name with text atomically (write a temporary file, rename). */
static int file_replace(const char *dir, const char *name, const char *text, alps_error **err)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
	_cleanup_free_ char *tmp = xasprintf("%s/%s.tmp", dir, name);
	_cleanup_close_ int fd =
		open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return alps_fail_errno(err, "open(%s)", tmp);
	if (write_all(fd, text, strlen(text)) < 0)
		return alps_fail_errno(err, "write(%s)", tmp);
	if (rename(tmp, path) < 0)
		return alps_fail_errno(err, "rename(%s, %s)", tmp, path);
	return 0;
}

static int refs_write(const char *dir, unsigned refs, alps_error **err)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%u\n", refs);
	return file_replace(dir, "refs", buf, err);
}

/* ---- opaque mount points ----
 *
 * Layer ids are digests, and the host's mount table is world-readable: a
 * mount point named by a digest tells every user which private layers the
 * node has (and knowing one was enough to pull it before the store checked
 * access).  So a layer is mounted at RUN_DIR/layers/.mnt/<name>, name 32
 * random hex digits kept in RUN_DIR/layers/<id>/mountpoint (a name with a
 * leading '.' is never a layer id, so reconciliation skips .mnt).  A layer
 * an older alpsd mounted at RUN_DIR/layers/<id>/root keeps that mount
 * point until it is released. */

#define MNT_DIR ".mnt"
#define MNT_NAME_LEN 32

static bool mnt_name_valid(const char *name)
{
	return strlen(name) == MNT_NAME_LEN && strspn(name, "0123456789abcdef") == MNT_NAME_LEN;
}

/* 1 with name[] set from dir/mountpoint, 0 if there is none. */
static int mnt_name_read(const char *dir, char name[MNT_NAME_LEN + 1], alps_error **err)
{
	_cleanup_free_ char *path = xasprintf("%s/mountpoint", dir);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 0 : alps_fail_errno(err, "open(%s)", path);
	ssize_t n = read(fd, name, MNT_NAME_LEN + 1);
	if (n < 0)
		return alps_fail_errno(err, "read(%s)", path);
	name[n < MNT_NAME_LEN ? n : MNT_NAME_LEN] = '\0';
	if (n != MNT_NAME_LEN + 1 || !mnt_name_valid(name))
		return alps_fail(err, ALPS_E_INTEGRITY, "%s holds no mount point name", path);
	return 1;
}

static int mnt_name_new(const char *dir, char name[MNT_NAME_LEN + 1], alps_error **err)
{
	unsigned char rnd[MNT_NAME_LEN / 2];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return alps_fail_errno(err, "getrandom");
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(name + 2 * i, 3, "%02x", rnd[i]);
	char text[MNT_NAME_LEN + 2];
	snprintf(text, sizeof(text), "%s\n", name);
	return file_replace(dir, "mountpoint", text, err);
}

/* *root (caller frees): where layer dir is or will be mounted; NULL when
 * it has no mount point and create is false. */
static int layer_root(const char *run_dir, const char *dir, bool create, char **root,
		      alps_error **err)
{
	char name[MNT_NAME_LEN + 1];
	*root = NULL;
	int r = mnt_name_read(dir, name, err);
	if (r < 0)
		return -1;
	if (r > 0) {
		*root = xasprintf("%s/layers/" MNT_DIR "/%s", run_dir, name);
		return 0;
	}
	_cleanup_free_ char *legacy = xasprintf("%s/root", dir);
	if (access(legacy, F_OK) == 0) {
		*root = steal_pointer(&legacy);
		return 0;
	}
	if (!create)
		return 0;
	if (mnt_name_new(dir, name, err) < 0)
		return -1;
	*root = xasprintf("%s/layers/" MNT_DIR "/%s", run_dir, name);
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
static int layer_drop(const char *run_dir, const char *dir, alps_error **err)
{
	_cleanup_free_ char *root = NULL;
	if (layer_root(run_dir, dir, false, &root, err) < 0)
		return -1;
	/* Detached rather than unmounted: a job namespace that has not yet
	 * let go of its copy (a helper before pivot_root) holds the file
	 * system, and the loop device follows it when it does. */
	if (root && mnt_is_mount_root(AT_FDCWD, root) &&
	    umount2(root, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
		return alps_fail_errno(err, "umount(%s)", root);
	if (root && rmdir(root) < 0 && errno != ENOENT)
		return alps_fail_errno(err, "rmdir(%s)", root);
	static const char *const files[] = { "refs", "mountpoint" };
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		_cleanup_free_ char *path = xasprintf("%s/%s", dir, files[i]);
		if (unlink(path) < 0 && errno != ENOENT)
			return alps_fail_errno(err, "unlink(%s)", path);
	}
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
	_cleanup_free_ char *mnt = xasprintf("%s/layers/" MNT_DIR, run_dir);
	_cleanup_free_ char *root = NULL;
	unsigned refs;
	if (mkdir_exist_ok(dir, 0700, err) < 0 || mkdir_exist_ok(mnt, 0700, err) < 0 ||
	    refs_read(dir, &refs, err) < 0 || layer_root(run_dir, dir, true, &root, err) < 0 ||
	    mkdir_exist_ok(root, 0755, err) < 0)
		return -1;
	bool mounted = mnt_is_mount_root(AT_FDCWD, root);
	if (!mounted && layer_mount_new(id, sqfs_path, root, err) < 0) {
		if (refs == 0)
			layer_drop(run_dir, dir, NULL);
		return -1;
	}
	if (refs_write(dir, refs + 1, err) < 0) {
		if (!mounted)
			layer_drop(run_dir, dir, NULL);
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
	return layer_drop(run_dir, dir, err);
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
	_cleanup_free_ char *root = NULL;
	*mounted = false;
	if (layer_root(run_dir, dir, false, &root, err) < 0)
		return -1;
	*mounted = root && mnt_is_mount_root(AT_FDCWD, root);
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
		return layer_drop(run_dir, dir, err);
	if (access(dir, F_OK) < 0)
		return alps_fail_errno(err, "access(%s)", dir);
	return refs_write(dir, refs, err);
}
