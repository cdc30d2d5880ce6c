/* loop.h: read-only loop devices that free themselves.
 *
 * A layer squashfs is mounted through a loop device configured in one step
 * (LOOP_CONFIGURE on a device from LOOP_CTL_GET_FREE) with LO_FLAGS_AUTOCLEAR:
 * the kernel detaches the file once the last user (the fd returned here,
 * then the mount) is gone, so nothing has to remember the device.  The
 * file is opened through a detached clone of its mount, so that the
 * world-readable sysfs path of the device's backing file is "/", not the
 * layer file's name (its digest).
 *
 *	char dev[32];
 *	_cleanup_close_ int lfd = loop_attach(path, dev, sizeof(dev), err);
 *	... mount dev ...
 *	// closing lfd after the mount leaves the mount as the only user
 */
#ifndef ALPS_DAEMON_JOB_LOOP_H
#define ALPS_DAEMON_JOB_LOOP_H

#include <stddef.h>

#include "common/error.h"

/* Attach the file at path, read-only and autoclear, to a free loop device.
 * Returns an O_CLOEXEC fd of the device and writes its node ("/dev/loopN")
 * into devname; -1 with *err set. */
int loop_attach(const char *path, char *devname, size_t size, alps_error **err);

/* The backing file of a loop device by number: the path loop_attach() was
 * given (LOOP_GET_STATUS64, cut to 63 bytes; sysfs shows users only "/"),
 * else what sysfs says; caller frees.  NULL when the device is unused or
 * gone. */
char *loop_backing_file(unsigned nr);

#endif
