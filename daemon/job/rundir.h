/* rundir.h: the run directory of the job engine.
 *
 *	RUN_DIR/.lock              flock()ed around layer counts and set-up
 *	RUN_DIR/layers/            0700; a private bind mount of itself
 *	RUN_DIR/layers/<id>/root   a layer's shared read-only mount
 *	RUN_DIR/layers/<id>/refs   its reference count ("3\n")
 *	RUN_DIR/jobs/              0700; a private bind mount of itself
 *	RUN_DIR/jobs/<job>/        one prepared job (see ns.h)
 *
 * layers/ and jobs/ are private mounts so that nothing mounted below them
 * propagates to other namespaces (on systemd hosts / is shared): a layer
 * mount copied into some service's namespace would keep its loop device
 * busy, and the kernel refuses to propagate the nsfs bind mounts that pin
 * job namespaces.
 *
 * The two self-binds stay when the daemon stops, on purpose.  Prepared jobs
 * outlive the daemon (a restart or an upgrade must not end running jobs:
 * the pins and the layer mounts they use stay, and the next daemon adopts
 * them, job_reconcile in ns.h), and what is below must stay private for as
 * long as it exists; detaching the self-binds under it would make it
 * propagate (or fail with EBUSY).  With nothing below they are harmless:
 * an empty private bind of a root-only directory onto itself, on /run
 * (gone at reboot), which the next start reuses as it is.  An admin who
 * removes alps detaches them with `umount RUN_DIR/jobs RUN_DIR/layers`
 * once every job is released (what ns_run_dir_fini does). */
#ifndef ALPS_DAEMON_JOB_RUNDIR_H
#define ALPS_DAEMON_JOB_RUNDIR_H

#include "common/error.h"

/* Create the directories and make layers/ and jobs/ private self-binds;
 * idempotent, safe to call from several threads and processes at once. */
int ns_run_dir_init(const char *run_dir, alps_error **err);
/* Detach the self-binds of layers/ and jobs/ (daemon shutdown, tests).
 * Fails with ALPS_E_BUSY while something is mounted below them. */
int ns_run_dir_fini(const char *run_dir, alps_error **err);
/* Lock the run directory against the daemon's other threads and other
 * processes (see rundir.c); release with run_dir_unlock(). */
int run_dir_lock(const char *run_dir, alps_error **err);
/* Release what run_dir_lock() returned (-1 is fine). */
void run_dir_unlock(int fd);
void cleanup_run_dir_unlockp(int *fd);
#define _cleanup_run_dir_lock_ __attribute__((cleanup(cleanup_run_dir_unlockp)))

#endif
