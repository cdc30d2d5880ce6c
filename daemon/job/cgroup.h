/* cgroup.h: the cgroups a job's process joins, and ending them at release.
 *
 * An exec'd process joins every hierarchy its caller is in (the caller's
 * /proc/PID/cgroup, read through the caller's pidfd): the same cgroup in
 * each cgroup v1 hierarchy, and in the unified (v2) hierarchy a child
 * "alps-job-<job>" of the caller's cgroup, so that the caller's limits
 * still apply (hierarchically) and release can find and end every process
 * of the job whatever namespaces it made.  The job's cgroups are listed in
 * RUN_DIR/jobs/<job>/cgroups, one directory a line.
 *
 * Release signals the members (SIGTERM, each through a pidfd checked to be
 * still a member), waits for them up to a grace, then kills what is left
 * with cgroup.kill (or SIGKILL to each member where the kernel lacks it) and
 * removes the cgroups. */
#ifndef ALPS_DAEMON_JOB_CGROUP_H
#define ALPS_DAEMON_JOB_CGROUP_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

#define JOB_CGROUP_PREFIX "alps-job-"

/* Open cgroup.procs (O_WRONLY|O_CLOEXEC) of each cgroup a process with
 * this /proc/PID/cgroup text should join for job (making and recording the
 * job's unified cgroup).  Fails when any of them cannot be found, made or
 * opened: a process outside its caller's cgroups escapes their limits. */
int job_cgroup_open(const char *run_dir, const char *job, const char *proc_cgroup, int **fds,
		    size_t *nfds, alps_error **err);

/* Send sig to every member of the job's cgroups; how many were signalled. */
size_t job_cgroup_signal(const char *run_dir, const char *job, int sig);
/* Whether any of the job's cgroups still has a process. */
bool job_cgroup_populated(const char *run_dir, const char *job);
/* Kill what is left (cgroup.kill), wait for it to be gone, remove the
 * cgroups and the list. */
int job_cgroup_remove(const char *run_dir, const char *job, alps_error **err);

/* --- release (release.c) --- */

/* In the job's directory once a release has begun: no exec starts then.
 * Execs hold the directory flock()ed shared while they start; the release
 * takes it exclusively to make this file. */
#define JOB_RELEASING_MARK "releasing"

/* The first part of a release, before the job's lock: SIGTERM to every
 * process of the job (its cgroups and its mount namespace), then wait up to
 * grace_ms for them to end.  What is left is killed by job_release(). */
void job_release_stop(const char *run_dir, const char *job, unsigned grace_ms);
/* Whether job was released (or is being released) in the last minute:
 * an exec'd process that ends then was ended by the release. */
bool job_release_seen(const char *job);

#endif
