/* mount.h: fd-based mount primitives.
 *
 * Every mount is made the same way: a detached mount from fsmount() or
 * open_tree(OPEN_TREE_CLONE), its flags set with mount_setattr(), attached
 * with move_mount() onto an O_PATH fd of the target, and its flags read
 * back with fstatvfs().  Targets inside a container root are opened with
 * openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), so a symlink in an image
 * cannot point a mount at the host.  Errors name the syscall and the path
 * (`what` is the description of the mount the caller is making). */
#ifndef ALPS_DAEMON_JOB_MOUNT_H
#define ALPS_DAEMON_JOB_MOUNT_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/error.h"

/* MOUNT_ATTR_* bits of MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC. */
unsigned mnt_attr_of(unsigned long ms_flags);

/* openat2(rootfd, path, flags | O_CLOEXEC, mode) resolved inside rootfd;
 * path may be absolute (it is taken relative to rootfd).  -1 with errno. */
int mnt_open_in_root(int rootfd, const char *path, int flags, mode_t mode);
/* Create the missing components rest ("a/b/c", relative) below the
 * directory dirfd, none followed if it is a symlink: directories, and the
 * last one a directory (dir) or an empty file (replacing a dangling symlink
 * there).  An O_PATH fd of the last.  Where that may happen is the
 * caller's decision (apply_mount_point: only on the container's own file
 * systems); path is the whole destination, for errors. */
int mnt_create_below(int dirfd, const char *rest, bool dir, const char *path, alps_error **err);

/* The new mount API step by step, for file systems configured by hand
 * (overlayfs, layer by layer): fsopen(), fsconfig() of one parameter (a
 * NULL value sets a flag), then FSCONFIG_CMD_CREATE and fsmount() with the
 * MOUNT_ATTR_* bits attr, giving a detached mount fd. */
int mnt_fs_open(const char *fstype, const char *what, alps_error **err);
int mnt_fs_set(int fsfd, const char *key, const char *value, const char *what, alps_error **err);
int mnt_fs_create(int fsfd, unsigned attr, const char *what, alps_error **err);
/* A new detached mount of fstype: source (or NULL) and options
 * ("mode=0755,size=64k", flags without '=' are flags; or NULL) given
 * through fsconfig(), then fsmount() with the MOUNT_ATTR_* bits attr.  The
 * kernel's own message (read from the fs context) is added to errors. */
int mnt_fs_new(const char *fstype, const char *source, const char *options, unsigned attr,
	       const char *what, alps_error **err);
/* A detached clone (open_tree(OPEN_TREE_CLONE)) of the mount tree at fd,
 * recursive or not, with attr set on every mount of it. */
int mnt_clone(int fd, bool recursive, unsigned attr, const char *what, alps_error **err);
/* Attach the detached mount mfd onto the target fd. */
int mnt_attach(int mfd, int targetfd, const char *what, alps_error **err);
/* Attach onto a path (host side paths alps made itself). */
int mnt_attach_path(int mfd, const char *path, const char *what, alps_error **err);
/* mount_setattr() on the mount at fd: attr set, clr cleared. */
int mnt_setattr(int fd, bool recursive, unsigned set, unsigned clr, const char *what,
		alps_error **err);
/* Check that the mount at fd has at least the MS_RDONLY, MS_NOSUID,
 * MS_NODEV and MS_NOEXEC bits of want; the error says which one is
 * missing on what. */
int mnt_verify(int fd, unsigned long want, const char *what, alps_error **err);
/* Whether path (relative to dirfd) is the root of a mount. */
bool mnt_is_mount_root(int dirfd, const char *path);
/* Whether the kernel offers the new mount API's fsopen() for fstype. */
bool mnt_fs_available(const char *fstype);

/* Remove dirfd/name and everything below, not following symlinks and not
 * crossing into other mounts; a missing name is fine. */
int rm_tree_at(int dirfd, const char *name, alps_error **err);

#endif
