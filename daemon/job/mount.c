/* mount.c: fd-based mount primitives (see mount.h). */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/mount.h"
#include "daemon/job/sys.h"

/* openat2 answers EAGAIN when a rename raced the lookup; try again. */
#define OPENAT2_TRIES 16

unsigned mnt_attr_of(unsigned long ms_flags)
{
	unsigned a = 0;
	if (ms_flags & MS_RDONLY)
		a |= MOUNT_ATTR_RDONLY;
	if (ms_flags & MS_NOSUID)
		a |= MOUNT_ATTR_NOSUID;
	if (ms_flags & MS_NODEV)
		a |= MOUNT_ATTR_NODEV;
	if (ms_flags & MS_NOEXEC)
		a |= MOUNT_ATTR_NOEXEC;
	return a;
}

int mnt_open_in_root(int rootfd, const char *path, int flags, mode_t mode)
{
	while (*path == '/')
		path++;
	if (*path == '\0')
		path = ".";
	for (int i = 0;; i++) {
		int fd = sys_openat2(rootfd, path, (uint64_t)(flags | O_CLOEXEC),
				     (flags & O_CREAT) ? mode : 0,
				     RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
		if (fd >= 0 || errno != EAGAIN || i >= OPENAT2_TRIES)
			return fd;
	}
}

/* A directory name in parent, made if missing.  Something already there
 * that is not a directory, seen through the lookup as missing, is a
 * symlink to nowhere: its target is not created, a link is the image's
 * and where it leads is not ours to decide. */
static int create_dir_at(int parent, const char *name, const char *path, alps_error **err)
{
	if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
		return alps_fail_errno(err, "cannot create %s for %s in the container", name, path);
	int fd = openat(parent, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 && errno == ENOTDIR && fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISLNK(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "%s: %s is a dangling symlink in the container",
				 path, name);
	if (fd < 0)
		return alps_fail_errno(err, "cannot open %s for %s in the container", name, path);
	return fd;
}

/* An empty file name in parent.  A dangling symlink there (an image's
 * /etc/resolv.conf pointing into a /run it does not ship) would make the
 * file be created wherever it points, so it is replaced. */
static int create_file_at(int parent, const char *name, const char *path, alps_error **err)
{
	struct stat st;
	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) &&
	    unlinkat(parent, name, 0) < 0)
		return alps_fail_errno(err, "cannot remove %s in the container", path);
	int fd = openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 && errno != EEXIST)
		return alps_fail_errno(err, "creating %s in the container", path);
	if (fd >= 0)
		close(fd);
	fd = openat(parent, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return alps_fail_errno(err, "cannot open %s in the container", path);
	return fd;
}

int mnt_create_below(int dirfd, const char *rest, bool dir, const char *path, alps_error **err)
{
	int cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	if (cur < 0)
		return alps_fail_errno(err, "fcntl(F_DUPFD_CLOEXEC)");
	for (const char *p = rest; *p;) {
		p += strspn(p, "/");
		size_t len = strcspn(p, "/");
		if (len == 0)
			break;
		_cleanup_free_ char *name = xstrndup(p, len);
		p += len;
		bool last = p[strspn(p, "/")] == '\0';
		int next = last && !dir ? create_file_at(cur, name, path, err)
					: create_dir_at(cur, name, path, err);
		close(cur);
		if (next < 0)
			return -1;
		cur = next;
	}
	return cur;
}

/* The kernel explains fsconfig() failures through the fs context fd:
 * "e overlayfs: ..." lines.  The last error line, or "". */
static void fs_context_message(int fsfd, char *buf, size_t size)
{
	char line[512];
	buf[0] = '\0';
	for (int i = 0; i < 32; i++) {
		ssize_t n = read(fsfd, line, sizeof(line) - 1);
		if (n <= 0)
			break;
		line[n] = '\0';
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == 'e' && line[1] == ' ')
			snprintf(buf, size, " (%s)", line + 2);
	}
}

/* Fail for syscall (e.g. "fsconfig(lowerdir+=/x)"), adding the kernel's
 * explanation. */
static int fs_fail(int fsfd, alps_error **err, const char *syscall, const char *what)
{
	int saved = errno;
	char msg[600];
	fs_context_message(fsfd, msg, sizeof(msg));
	return alps_fail_errnum(err, saved, "%s for %s%s", syscall, what, msg);
}

int mnt_fs_open(const char *fstype, const char *what, alps_error **err)
{
	int fd = sys_fsopen(fstype, FSOPEN_CLOEXEC);
	if (fd < 0)
		return alps_fail_errno(err, "fsopen(%s) for %s", fstype, what);
	return fd;
}

int mnt_fs_set(int fsfd, const char *key, const char *value, const char *what, alps_error **err)
{
	int rc = value ? sys_fsconfig(fsfd, FSCONFIG_SET_STRING, key, value, 0)
		       : sys_fsconfig(fsfd, FSCONFIG_SET_FLAG, key, NULL, 0);
	if (rc < 0) {
		_cleanup_free_ char *call = value ? xasprintf("fsconfig(%s=%s)", key, value)
						  : xasprintf("fsconfig(%s)", key);
		return fs_fail(fsfd, err, call, what);
	}
	return 0;
}

int mnt_fs_create(int fsfd, unsigned attr, const char *what, alps_error **err)
{
	if (sys_fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return fs_fail(fsfd, err, "fsconfig(FSCONFIG_CMD_CREATE)", what);
	int mfd = sys_fsmount(fsfd, FSMOUNT_CLOEXEC, attr);
	if (mfd < 0)
		return fs_fail(fsfd, err, "fsmount()", what);
	return mfd;
}

/* Each "key=value" or "flag" of a comma-separated option string. */
static int fs_set_options(int fsfd, const char *options, const char *what, alps_error **err)
{
	for (const char *p = options; p && *p;) {
		size_t n = strcspn(p, ",");
		_cleanup_free_ char *opt = xstrndup(p, n);
		p += n + (p[n] == ',');
		if (n == 0)
			continue;
		char *eq = strchr(opt, '=');
		if (eq)
			*eq = '\0';
		if (mnt_fs_set(fsfd, opt, eq ? eq + 1 : NULL, what, err) < 0)
			return -1;
	}
	return 0;
}

int mnt_fs_new(const char *fstype, const char *source, const char *options, unsigned attr,
	       const char *what, alps_error **err)
{
	_cleanup_close_ int fsfd = mnt_fs_open(fstype, what, err);
	if (fsfd < 0)
		return -1;
	if (source && mnt_fs_set(fsfd, "source", source, what, err) < 0)
		return -1;
	if (fs_set_options(fsfd, options, what, err) < 0)
		return -1;
	return mnt_fs_create(fsfd, attr, what, err);
}

int mnt_setattr(int fd, bool recursive, unsigned set, unsigned clr, const char *what,
		alps_error **err)
{
	struct mount_attr attr = { .attr_set = set, .attr_clr = clr, .propagation = MS_PRIVATE };
	unsigned flags = AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0);
	if (sys_mount_setattr(fd, "", flags, &attr) < 0)
		return alps_fail_errno(err, "mount_setattr() for %s", what);
	return 0;
}

int mnt_clone(int fd, bool recursive, unsigned attr, const char *what, alps_error **err)
{
	unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH |
			 (recursive ? AT_RECURSIVE : 0);
	_cleanup_close_ int tfd = sys_open_tree(fd, "", flags);
	if (tfd < 0)
		return alps_fail_errno(err, "open_tree(OPEN_TREE_CLONE) for %s", what);
	if (mnt_setattr(tfd, recursive, attr, 0, what, err) < 0)
		return -1;
	return steal_fd(&tfd);
}

int mnt_attach(int mfd, int targetfd, const char *what, alps_error **err)
{
	if (sys_move_mount(mfd, "", targetfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) <
	    0)
		return alps_fail_errno(err, "move_mount() for %s", what);
	return 0;
}

int mnt_attach_path(int mfd, const char *path, const char *what, alps_error **err)
{
	if (sys_move_mount(mfd, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return alps_fail_errno(err, "move_mount(%s) for %s", path, what);
	return 0;
}

int mnt_verify(int fd, unsigned long want, const char *what, alps_error **err)
{
	static const struct {
		unsigned long ms, st;
		const char *name;
	} bits[] = {
		{ MS_RDONLY, ST_RDONLY, "ro" },
		{ MS_NOSUID, ST_NOSUID, "nosuid" },
		{ MS_NODEV, ST_NODEV, "nodev" },
		{ MS_NOEXEC, ST_NOEXEC, "noexec" },
	};
	struct statvfs sv;
	if (fstatvfs(fd, &sv) < 0)
		return alps_fail_errno(err, "fstatvfs() for %s", what);
	for (size_t i = 0; i < ARRAY_SIZE(bits); i++)
		if ((want & bits[i].ms) && !(sv.f_flag & bits[i].st))
			return alps_fail(err, ALPS_E_INTERNAL, "%s is not %s after mounting", what,
					 bits[i].name);
	return 0;
}

bool mnt_is_mount_root(int dirfd, const char *path)
{
	struct statx stx;
	int flags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | (*path ? 0 : AT_EMPTY_PATH);
	if (statx(dirfd, path, flags, STATX_TYPE, &stx) < 0)
		return false;
	return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	       (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

bool mnt_fs_available(const char *fstype)
{
	int fd = sys_fsopen(fstype, FSOPEN_CLOEXEC);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static int rm_children(int dfd, const char *name, dev_t dev, alps_error **err)
{
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return alps_fail_errno(err, "open(%s)", name);
	_cleanup_closedir_ DIR *d = fdopendir(fd);
	if (!d) {
		close_keep_errno(fd);
		return alps_fail_errno(err, "fdopendir(%s)", name);
	}
	struct dirent *e;
	while ((errno = 0, e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			return alps_fail_errno(err, "stat(%s/%s)", name, e->d_name);
		}
		if (st.st_dev != dev || mnt_is_mount_root(fd, e->d_name))
			return alps_fail(err, ALPS_E_BUSY, "%s/%s is a mount point", name, e->d_name);
		if (S_ISDIR(st.st_mode) && rm_children(fd, e->d_name, dev, err) < 0)
			return alps_error_prefix(err, "%s", name);
		if (unlinkat(fd, e->d_name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0 &&
		    errno != ENOENT)
			return alps_fail_errno(err, "unlink(%s/%s)", name, e->d_name);
	}
	if (errno)
		return alps_fail_errno(err, "readdir(%s)", name);
	return 0;
}

int rm_tree_at(int dirfd, const char *name, alps_error **err)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : alps_fail_errno(err, "stat(%s)", name);
	if (S_ISDIR(st.st_mode)) {
		if (mnt_is_mount_root(dirfd, name))
			return alps_fail(err, ALPS_E_BUSY, "%s is a mount point", name);
		if (rm_children(dirfd, name, st.st_dev, err) < 0)
			return -1;
	}
	if (unlinkat(dirfd, name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0 && errno != ENOENT)
		return alps_fail_errno(err, "unlink(%s)", name);
	return 0;
}
