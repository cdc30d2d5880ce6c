/* apply.h: the helper's side of a prepare: apply a validated plan.
 *
 * Runs in the forked helper, single-threaded.  Layer operations run in the
 * host's mount namespace (the shared layer mounts are the node's); then the
 * helper unshares a private mount namespace and builds the root at
 * RUN_DIR/jobs/<job>/root, mounts everything on it, and pivots into it.
 * Each operation is one handler of a table, in the plan's order. */
#ifndef ALPS_DAEMON_JOB_APPLY_H
#define ALPS_DAEMON_JOB_APPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "daemon/job/creds.h"
#include "daemon/job/plan.h"

/* The file systems the helper makes for the job: the root, /tmp, /dev,
 * /dev/shm. */
#define APPLY_MAX_OWN 8

struct apply_ctx {
	const struct ns_plan *plan;
	struct creds creds;
	char *job_dir;          /* owned; RUN_DIR/jobs/<job> */
	char **lowers;          /* owned; directories to stack, bottom first */
	size_t nlowers;
	int rootfd;             /* O_PATH of the container's root, once mounted */
	int report;             /* socket to the daemon */
	bool unshared;          /* in the job's own mount namespace */
	unsigned nfuse;         /* squashfuse processes started */
	/* Mount ids of the job's own file systems, the only places where
	 * alps creates mount points (zero-initialized: none yet). */
	uint64_t own_mounts[APPLY_MAX_OWN];
	size_t nown;
};

/* Apply every operation, then pivot_root into the container.  The helper
 * reports mounts and processes as they come. */
int apply_plan(struct apply_ctx *ctx, alps_error **err);
void apply_ctx_free(struct apply_ctx *ctx);

/* Tell the daemon about a mount made for op (kind names what it is). */
void apply_report(struct apply_ctx *ctx, const struct mount_op *op, const char *fstype,
		  const char *source);

/* Record the mount at fd as one of the job's own file systems (a fresh
 * tmpfs, the root overlay). */
int apply_own_mount(struct apply_ctx *ctx, int fd, alps_error **err);
/* The mount point of op->dst in the container: an O_PATH fd of a
 * directory (dir) or of a non-directory, checked with apply_check_target.
 * A user's destination is looked up with the user's rights.  A missing one
 * is created only on the job's own file systems (never inside a bind of
 * host storage or a user's squashfuse), after its place is checked. */
int apply_mount_point(struct apply_ctx *ctx, const struct mount_op *op, bool dir,
		      alps_error **err);

/* Refuse a site or user mount whose target fd (O_PATH, in the container)
 * lies in /proc, /sys or /dev (a device outside /dev), wherever the
 * image's symlinks led. */
int apply_check_target(struct apply_ctx *ctx, const struct mount_op *op, int fd,
		       alps_error **err);

/* Handlers in other files. */
int apply_overlay(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err);
int apply_devtmp(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err);
int apply_image_sqsh(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err);
int apply_squashfuse(struct apply_ctx *ctx, const struct mount_op *op, alps_error **err);

/* Force the overlay's fallback (one mount(2) option string with short
 * relative lower paths, for kernels before 6.8) even where "lowerdir+"
 * works: for tests. */
void apply_overlay_force_legacy(bool on);
/* Whether it is forced: the daemon passes the switch on to the helper
 * program it starts (plan_wire.h). */
bool apply_overlay_legacy_forced(void);

#endif
