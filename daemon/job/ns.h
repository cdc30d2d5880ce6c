/* ns.h: a job's mount namespace: prepare, pin, release, recover.
 *
 * ns_prepare() builds the plan of a job_spec (plan.h), validates it whole,
 * then forks a helper that applies it (apply.h) and reports back; the
 * daemon pins the finished namespace by bind-mounting the helper's nsfs
 * file on RUN_DIR/jobs/<job>/mnt, and the helper exits.  Anything in the
 * host's mount namespace can then join the job with an open() and a
 * setns() (job_exec_spawn in exec.h, `nsenter --mount=.../mnt`).
 *
 *	RUN_DIR/jobs/<job>/mnt        the pinned namespace (nsfs bind mount)
 *	RUN_DIR/jobs/<job>/layers     the layer ids the job holds, one a line
 *	RUN_DIR/jobs/<job>/file_etc_* generated /etc/passwd and /etc/group
 *	RUN_DIR/jobs/<job>/squashfuse-<n>.log   what squashfuse said
 *	RUN_DIR/jobs/<job>/{root,upper,image,l}  mount points of the build;
 *	                              empty on the host (the mounts exist only
 *	                              in the job's namespace)
 *
 * The root is an overlay over a tmpfs upper layer in every case: the
 * upper layer takes the mount points alps adds (a /etc/resolv.conf the
 * image lacks, the workdir); a job that is not writable gets the root
 * mount read-only once everything is mounted (writes fail with EROFS).
 *
 * ns_prepare() is blocking (a worker thread's call, never the event
 * loop's); it forks, so the caller must not hold locks a child would need.
 * Either it succeeds or it leaves nothing behind: no mount, no layer
 * reference, no process, no job directory. */
#ifndef ALPS_DAEMON_JOB_NS_H
#define ALPS_DAEMON_JOB_NS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "daemon/job/plan.h"

/* One mount of a prepared job, for `alps jobs`. */
struct ns_mount {
	char *dst;              /* owned; "/" for the root */
	char *fstype;           /* owned; "overlay", "bind", "fuse.squashfuse"... */
	char *source;           /* owned; host path, "generated", "3 layers, writable"... */
	unsigned long flags;    /* MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC */
};

struct ns_result {
	char *pin;              /* owned; RUN_DIR/jobs/<job>/mnt */
	struct ns_mount *mounts;        /* owned */
	size_t nmounts;
};

/* Build, pin and report the namespace of spec.  A job already prepared is
 * ALPS_E_EXISTS; a leftover of a failed or crashed prepare (a job
 * directory without a pinned namespace) is cleaned up first.  *out is
 * filled on success (ns_result_free); on failure it is left empty. */
int ns_prepare(const struct job_spec *spec, struct ns_result *out, alps_error **err);
/* Free what a result holds (not the struct itself). */
void ns_result_free(struct ns_result *r);

/* How long the helper may take before it is killed (default 120 s). */
void ns_set_prepare_timeout(unsigned ms);

/* Kill what is left in the job's namespace (processes whose
 * /proc/<pid>/ns/mnt is the pinned one, and only those), detach the pin,
 * drop the job's layer references (unmounting layers nobody uses), remove
 * the job directory.  Idempotent: an unknown job is not an error.
 * Processes that outlive SIGKILL for seconds make it ALPS_E_BUSY after
 * everything else is done. */
int job_release(const char *run_dir, const char *job, alps_error **err);

/* The jobs whose namespaces are pinned (per /proc/self/mountinfo). *jobs
 * is a NULL-terminated array the caller frees with job_list_free(). */
int job_list_pinned(const char *run_dir, char ***jobs, size_t *njobs, alps_error **err);
void job_list_free(char **jobs);

/* What exists after a restart, for the daemon to compare with its table. */
struct job_reconcile_layer {
	char *id;               /* owned */
	unsigned refs;          /* the count on disk */
	unsigned users;         /* pinned jobs that list the layer */
	bool mounted;           /* a squashfs mount is really there */
};

struct job_reconcile {
	char **pinned;          /* owned, NULL-terminated: jobs with a pinned namespace */
	size_t npinned;
	char **stale;           /* owned, NULL-terminated: job directories without one */
	size_t nstale;
	struct job_reconcile_layer *layers;     /* owned */
	size_t nlayers;
};

int job_reconcile(const char *run_dir, struct job_reconcile *out, alps_error **err);
/* Act on a report: release the stale jobs, and set each layer's count to
 * its users (unmounting the layers no pinned job uses).  Jobs the daemon
 * no longer knows are its to release (job_release) before. */
int job_reconcile_apply(const char *run_dir, const struct job_reconcile *r, alps_error **err);
void job_reconcile_free(struct job_reconcile *r);

#endif
