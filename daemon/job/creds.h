/* creds.h: becoming the job user, and doing things as the job user.
 *
 * Dropping privileges follows one order, each step verified (bubblewrap,
 * pyxis): extra fds closed, setgroups, setresgid, setresuid, then
 * getresgid/getresuid must show the user in all three slots and
 * setresuid(0) must fail.  creds_drop() and close_fds_except() use only
 * async-signal-safe calls, so they can run in the child of a threaded
 * daemon between fork and exec.
 *
 * Paths a user names are opened by a short-lived child with the user's
 * credentials; the fd comes back over SCM_RIGHTS, and root mounts from the
 * fd.  A path the user cannot read is refused with the user's own EACCES. */
#ifndef ALPS_DAEMON_JOB_CREDS_H
#define ALPS_DAEMON_JOB_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"

struct creds {
	uid_t uid;
	gid_t gid;
	const gid_t *groups;    /* borrowed */
	size_t ngroups;
};

/* Become c (groups, gid, uid), verifying each step; then no_new_privs.
 * -1 with errno, *stage naming the step that failed (a static string). */
int creds_drop(const struct creds *c, const char **stage);
/* Close every fd from 3 up except the n fds of keep (close_range between
 * them).  Async-signal-safe. */
void close_fds_except(const int *keep, size_t n);

enum as_user_open_mode {
	AS_USER_PATH,   /* O_PATH; the user must be able to read it (and search a directory) */
	AS_USER_READ,   /* O_RDONLY of a regular file */
};

/* Open path (host path, the user's view of it) as c; the fd (O_CLOEXEC).
 * The error names the path and the user. */
int as_user_open(const struct creds *c, const char *path, enum as_user_open_mode mode,
		 alps_error **err);
/* openat2(rootfd, path, flags) as c, resolved inside rootfd
 * (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): a path in a container as the
 * user sees it, with the user's search and read rights on every component
 * (host directories bound into it included).  The error names the path and
 * the user, and keeps the errno (ENOENT, EACCES, ELOOP for a last
 * component that is a symlink under O_NOFOLLOW). */
int as_user_open_in_root(const struct creds *c, int rootfd, const char *path, int flags,
			 alps_error **err);
/* mkdirat(dirfd, name, mode) as c. */
int as_user_mkdirat(const struct creds *c, int dirfd, const char *name, mode_t mode,
		    alps_error **err);

#endif
