/* ns.h: a job's mount namespace: prepare, pin, release, recover.
 *
 * ns_prepare() builds the plan of a job_spec (plan.h), validates it whole,
 * then starts the helper program alps-nshelper (posix_spawn; a clean
 * environment), sends it the plan (plan_wire.h), and reads its reports
 * (helper.h) until it is READY; the daemon pins the finished namespace by
 * bind-mounting the helper's nsfs file on RUN_DIR/jobs/<job>/mnt, and the
 * helper exits.  Anything in the host's mount namespace can then join the
 * job with an open() and a setns() (job_exec_spawn in exec.h,
 * `nsenter --mount=.../mnt`).
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
 * loop's), for at most the spec's prepare timeout: a helper that is not
 * READY by then (stalled on a user's FUSE file system, say) is killed.
 * Prepares of different jobs run in parallel, each with its own helper;
 * those of one job (and its release, through job_claim) one at a time.
 * Nothing is forked from the calling process: it may have other threads
 * in any state.  Either it succeeds or it leaves nothing behind: no mount,
 * no layer reference, no process, no job directory.
 *
 * The helper program is ALPS_LIBEXECDIR/alps/alps-nshelper as configured,
 * or the absolute path in the environment variable ALPS_NSHELPER (the
 * build tree's, for the tests), read once. */
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

/* What a job_spec without a prepare timeout gets. */
#define NS_PREPARE_TIMEOUT_DEFAULT_MS 120000u

/* The helper program ns_prepare() starts. */
const char *ns_helper_path(void);

/* Wait until no other thread of this process prepares or releases job,
 * and mark it as ours until job_unclaim().  ns_prepare() claims its job;
 * a caller of job_release() that may race with a prepare claims it
 * first. */
void job_claim(const char *job);
void job_unclaim(const char *job);

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
