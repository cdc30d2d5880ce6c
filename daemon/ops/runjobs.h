/* runjobs.h: the one-shot jobs of 'alps run' (ids "run-UID-PID-N").
 *
 * Such a job belongs to one client process and lives as long as the
 * connection that prepared it: the `alps` client prepares, execs and
 * releases on one connection.  This module keeps, on the loop thread, the
 * run jobs the daemon knows of and
 *   - refuses a prepare beyond jobs.max_run_jobs_per_user of one uid;
 *   - releases a job once its connection closes (a SIGKILLed client);
 *   - releases jobs older than jobs.run_ttl (a timer on the loop);
 *   - at start, releases the run jobs whose client is gone and watches
 *     the others' processes (they lost their connection with the daemon).
 * The owner is recorded in the job row's environment_json ("run_owner":
 * pid and start time), so that a reused pid is not taken for the owner.
 * Every function here runs on the loop thread. */
#ifndef ALPS_DAEMON_RUNJOBS_H
#define ALPS_DAEMON_RUNJOBS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

struct daemon;
struct request;

#define RUNJOB_PREFIX "run-"

/* A new run job for rq's peer: ALPS_E_LIMIT over the quota; otherwise it
 * counts from now on and is watched for its connection's close. */
int runjob_admit(struct request *rq, const char *job, uid_t uid, alps_error **err);
/* Its prepare succeeded: it is released at once if its client has gone. */
void runjob_prepared(const char *job);
/* Its prepare failed: it no longer counts. */
void runjob_forget(const char *job);
/* A release of it succeeded: it no longer counts (unless a prepare of it
 * is still under way, whose end then decides). */
void runjob_released(const char *job);
/* A release of it failed: it is ready again (by_daemon: one of ours). */
void runjob_release_failed(const char *job, bool by_daemon);
/* Whether job is a run job of uid's that the daemon knows of. */
bool runjob_owned_by(const char *job, uid_t uid);
/* A release of it is under way (op_release): no second one. */
void runjob_releasing(const char *job);

/* At start (after the server, before the loop runs): reconcile the run
 * jobs of the table and arm the reaper.  At stop: drop the bookkeeping
 * (the jobs stay for the next start to judge). */
void runjobs_start(struct daemon *d);
void runjobs_stop(void);

/* The start time of process pid (clock ticks since boot, /proc/PID/stat),
 * or 0 if there is no such process.  Blocking (procfs): workers only. */
uint64_t runjob_proc_start(pid_t pid);

/* env_json with the owner (pid, start time) added; caller frees. */
char *runjob_env_with_owner(const char *env_json, pid_t pid, uint64_t start);

/* Release job in the background (op_job.c): stop what runs in it, undo
 * its namespace, drop its row; why goes to the log.  Then runjob_released()
 * or runjob_release_failed().
 * -1 (logged) when no work could be started. */
int job_release_background(struct daemon *d, const char *job, const char *why);

#endif
