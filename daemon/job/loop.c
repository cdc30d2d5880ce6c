/* loop.c: read-only autoclear loop devices (see loop.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/loop.h>

#include "common/util.h"
#include "daemon/job/loop.h"
#include "daemon/job/sys.h"

#ifndef LOOP_CONFIGURE
#define LOOP_CONFIGURE 0x4C0A
#endif

/* Another process may take the device LOOP_CTL_GET_FREE handed out before
 * we configure it; then we ask again. */
#define LOOP_ATTACH_TRIES 64

static void loop_info_fill(struct loop_info64 *info, const char *path)
{
	memset(info, 0, sizeof(*info));
	info->lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
	/* For root (LOOP_GET_STATUS64 needs the device open; see
	 * loop_backing_file()); the kernel keeps the first LO_NAME_SIZE - 1
	 * bytes. */
	size_t n = strlen(path);
	if (n >= LO_NAME_SIZE)
		n = LO_NAME_SIZE - 1;
	memcpy(info->lo_file_name, path, n);
}

/* Kernels before 5.8 lack LOOP_CONFIGURE: set the file, then the flags.
 * Not atomic (a reader could see the device without autoclear for a
 * moment), which is why LOOP_CONFIGURE comes first. */
static int loop_configure_legacy(int lfd, int ffd, const char *path)
{
	struct loop_info64 info;
	if (ioctl(lfd, LOOP_SET_FD, ffd) < 0)
		return -1;
	loop_info_fill(&info, path);
	if (ioctl(lfd, LOOP_SET_STATUS64, &info) < 0) {
		int saved = errno;
		ioctl(lfd, LOOP_CLR_FD, 0);
		errno = saved;
		return -1;
	}
	return 0;
}

static int loop_configure(int lfd, int ffd, const char *path)
{
	struct loop_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.fd = (unsigned)ffd;
	loop_info_fill(&cfg.info, path);
	if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0)
		return 0;
	if (errno == EINVAL || errno == ENOTTY)
		return loop_configure_legacy(lfd, ffd, path);
	return -1;
}

/* One attempt on the device LOOP_CTL_GET_FREE names: the device fd, -1
 * with *err set, or -2 when somebody configured it first (try again). */
static int loop_try_one(int ctl, int ffd, const char *path, char *devname, size_t size,
			alps_error **err)
{
	int nr = ioctl(ctl, LOOP_CTL_GET_FREE);
	if (nr < 0)
		return alps_fail_errno(err, "ioctl(LOOP_CTL_GET_FREE) on /dev/loop-control");
	if (xsnprintf(devname, size, "/dev/loop%d", nr) < 0)
		return alps_fail(err, ALPS_E_INTERNAL, "loop device name too long");
	_cleanup_close_ int lfd = open(devname, O_RDONLY | O_CLOEXEC);
	if (lfd < 0)
		return alps_fail_errno(err, "open(%s)", devname);
	if (loop_configure(lfd, ffd, path) < 0) {
		if (errno == EBUSY)
			return -2;
		return alps_fail_errno(err, "ioctl(LOOP_CONFIGURE) on %s for %s", devname, path);
	}
	return steal_fd(&lfd);
}

/* A loop device shows its backing file's path to every user
 * (/sys/block/loopN/loop/backing_file), and a layer file is named by its
 * digest.  Opened through a detached clone of its mount, the file is the
 * root of a mount in no namespace, and that path reads "/".  Without
 * open_tree() (kernels before 5.2) or /proc, the file is opened as it is. */
static int open_backing(const char *path, alps_error **err)
{
	_cleanup_close_ int tree = sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
								 AT_SYMLINK_NOFOLLOW);
	if (tree >= 0) {
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", tree);
		int fd = open(proc, O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			return fd;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return alps_fail_errno(err, "open(%s)", path);
	return fd;
}

int loop_attach(const char *path, char *devname, size_t size, alps_error **err)
{
	_cleanup_close_ int ffd = open_backing(path, err);
	if (ffd < 0)
		return -1;
	_cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return alps_fail_errno(err, "open(/dev/loop-control)");
	for (int i = 0; i < LOOP_ATTACH_TRIES; i++) {
		int lfd = loop_try_one(ctl, ffd, path, devname, size, err);
		if (lfd != -2)
			return lfd;
	}
	return alps_fail(err, ALPS_E_BUSY, "no free loop device for %s after %d tries", path,
			 LOOP_ATTACH_TRIES);
}

/* The name loop_attach() gave the device (root only: the device node is
 * not for users); NULL if there is none. */
static char *loop_file_name(unsigned nr)
{
	char dev[32];
	if (xsnprintf(dev, sizeof(dev), "/dev/loop%u", nr) < 0)
		return NULL;
	_cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
	struct loop_info64 info;
	if (fd < 0 || ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
		return NULL;
	info.lo_file_name[LO_NAME_SIZE - 1] = '\0';
	return info.lo_file_name[0] ? xstrdup((const char *)info.lo_file_name) : NULL;
}

char *loop_backing_file(unsigned nr)
{
	char *name = loop_file_name(nr);
	if (name)
		return name;
	char path[64];
	if (xsnprintf(path, sizeof(path), "/sys/block/loop%u/loop/backing_file", nr) < 0)
		return NULL;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return xstrdup(buf);
}
