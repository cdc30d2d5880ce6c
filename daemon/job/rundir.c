/* rundir.c: the run directory's layout and locks (see rundir.h). */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/mount.h"
#include "daemon/job/mountinfo.h"
#include "daemon/job/rundir.h"

static const char *const private_dirs[] = { "layers", "jobs" };

/* The lock is a pthread mutex (the daemon's threads) plus a POSIX record
 * lock on RUN_DIR/.lock (other processes: the namespace helpers).  Not
 * flock(): a flock belongs to the open file description, which a helper
 * forked while another thread held the lock inherits, keeping the lock
 * held for as long as that helper lives, and the helper itself then waits
 * for it forever.  Record locks belong to a process and are not inherited.
 * A forked child is single-threaded and must not touch the mutex (it may
 * have been copied locked): it uses the record lock alone. */
static pthread_mutex_t run_dir_mutex = PTHREAD_MUTEX_INITIALIZER;
static bool in_forked_child;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void mark_forked_child(void)
{
	in_forked_child = true;
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, mark_forked_child);
}

int run_dir_lock(const char *run_dir, alps_error **err)
{
	pthread_once(&atfork_once, register_atfork);
	_cleanup_free_ char *path = xasprintf("%s/.lock", run_dir);
	if (!in_forked_child)
		pthread_mutex_lock(&run_dir_mutex);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		alps_fail_errno(err, "open(%s)", path);
		goto fail;
	}
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	while (fcntl(fd, F_SETLKW, &fl) < 0) {
		if (errno != EINTR) {
			alps_fail_errno(err, "fcntl(%s, F_SETLKW)", path);
			close(fd);
			goto fail;
		}
	}
	return fd;
fail:
	if (!in_forked_child)
		pthread_mutex_unlock(&run_dir_mutex);
	return -1;
}

void run_dir_unlock(int fd)
{
	if (fd < 0)
		return;
	close_keep_errno(fd);   /* drops the record lock */
	if (!in_forked_child)
		pthread_mutex_unlock(&run_dir_mutex);
}

void cleanup_run_dir_unlockp(int *fd)
{
	run_dir_unlock(*fd);
	*fd = -1;
}

/* A directory root alone may enter, whatever the umask was. */
static int mkdir_private(const char *path, alps_error **err)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return alps_fail_errno(err, "mkdir(%s)", path);
	struct stat st;
	if (lstat(path, &st) < 0)
		return alps_fail_errno(err, "stat(%s)", path);
	if (!S_ISDIR(st.st_mode) || st.st_uid != 0)
		return alps_fail(err, ALPS_E_PERMISSION, "%s is not a directory owned by root", path);
	if ((st.st_mode & 07777) != 0700 && chmod(path, 0700) < 0)
		return alps_fail_errno(err, "chmod(%s, 0700)", path);
	return 0;
}

/* Bind path onto itself unless it is a mount already, then make it
 * private (the flag is idempotent). */
static int self_bind_private(const char *path, alps_error **err)
{
	if (!mnt_is_mount_root(AT_FDCWD, path) && mount(path, path, NULL, MS_BIND, NULL) < 0)
		return alps_fail_errno(err, "mount(%s, MS_BIND) onto itself", path);
	if (mount(NULL, path, NULL, MS_PRIVATE, NULL) < 0)
		return alps_fail_errno(err, "mount(%s, MS_PRIVATE)", path);
	return 0;
}

int ns_run_dir_init(const char *run_dir, alps_error **err)
{
	if (mkdir_p(run_dir, 0755) < 0)
		return alps_fail_errno(err, "mkdir(%s)", run_dir);
	_cleanup_run_dir_lock_ int lock = run_dir_lock(run_dir, err);
	if (lock < 0)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(private_dirs); i++) {
		_cleanup_free_ char *path = xasprintf("%s/%s", run_dir, private_dirs[i]);
		if (mkdir_private(path, err) < 0 || self_bind_private(path, err) < 0)
			return -1;
	}
	return 0;
}

int ns_run_dir_fini(const char *run_dir, alps_error **err)
{
	_cleanup_run_dir_lock_ int lock = run_dir_lock(run_dir, err);
	if (lock < 0)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(private_dirs); i++) {
		_cleanup_free_ char *path = xasprintf("%s/%s", run_dir, private_dirs[i]);
		if (!mnt_is_mount_root(AT_FDCWD, path))
			continue;
		/* Without MNT_DETACH: EBUSY tells that jobs or layers are
		 * still mounted below. */
		if (umount2(path, UMOUNT_NOFOLLOW) < 0)
			return alps_fail_errno(err, "umount(%s)", path);
	}
	return 0;
}
