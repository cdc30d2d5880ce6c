/* layers.h: node-wide shared read-only mounts of layer squashfs files.
 *
 * A layer (a squashfs file alps wrote itself, named by its digest) is
 * mounted once per node, read-only, nosuid, nodev, through an autoclear
 * loop device, at RUN_DIR/layers/.mnt/<name> (name: random, so that the
 * world-readable mount table names no digest), and every job that uses it
 * stacks that directory into its overlay.  RUN_DIR/layers is 0700 root, so
 * no user reads a layer's files outside a job allowed to use it.
 *
 * The count of users is kept on disk (RUN_DIR/layers/<id>/refs) under the
 * run directory's flock(): the mounts are made by forked helpers, so the
 * count has to live outside any one process, and it survives a daemon
 * restart (see job_reconcile).  The store will own the count later (sqlite);
 * the two calls stay the same.
 *
 *	char *root;
 *	layer_mount_acquire(run_dir, "sha256:ab..", "/var/lib/alps/layers/sha256-ab...sqfs", &root, err);
 *	... stack root ...
 *	layer_mount_release(run_dir, "sha256:ab..", err);   // unmounts at 0
 */
#ifndef ALPS_DAEMON_JOB_LAYERS_H
#define ALPS_DAEMON_JOB_LAYERS_H

#include <stdbool.h>

#include "common/error.h"

/* Take one reference on layer id, mounting sqfs_path if nobody uses it (or
 * if its mount went missing).  *mountpoint: the directory to stack, caller
 * frees.  Needs ns_run_dir_init() first. */
int layer_mount_acquire(const char *run_dir, const char *id, const char *sqfs_path,
			char **mountpoint, alps_error **err);
/* Drop one reference; at zero the mount is detached (its loop device frees
 * itself) and the layer's directory removed.  A layer nobody holds is
 * fine (idempotent). */
int layer_mount_release(const char *run_dir, const char *id, alps_error **err);
/* The count on disk and whether the mount exists; 0 and false for a layer
 * alps does not know. */
int layer_mount_state(const char *run_dir, const char *id, unsigned *refs, bool *mounted,
		      alps_error **err);
/* Overwrite the count (reconciling after a restart); 0 unmounts. */
int layer_mount_set_refs(const char *run_dir, const char *id, unsigned refs, alps_error **err);

#endif
