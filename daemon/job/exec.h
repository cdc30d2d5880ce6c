/* exec.h: run a process inside a prepared job.
 *
 * The daemon has threads and never forks to do this: job_exec_spawn()
 * posix_spawn()s alps-enter (libexec/alps-enter.c; glibc's posix_spawn is
 * clone(CLONE_VM|CLONE_VFORK) + exec, no code of ours in between), hands
 * it the job's pinned mount namespace (RUN_DIR/jobs/<job>/mnt), cgroup.procs
 * of the cgroups to join (cgroup.h), the stdio fds and a request (argv,
 * environment, workdir, ids, the caller's limits); alps-enter joins, takes
 * the limits, enters, becomes the caller (each step verified), changes to
 * the workdir as the caller and execs the command, looked up in the PATH
 * of its environment inside the container.
 *
 * job_exec_spawn() blocks until the command is exec'd or failed (a lookup
 * on a stopped FUSE file system blocks that long): call it from a worker,
 * never from the loop.  A child that has not reported within the timeout is
 * killed and reaped, and the call fails with ALPS_E_TIMEOUT.  On success
 * the caller owns the pid and waits for it (pidfd_open() fits a loop). */
#ifndef ALPS_DAEMON_JOB_EXEC_H
#define ALPS_DAEMON_JOB_EXEC_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "common/error.h"

/* Exit statuses of a command that could not start (the shell's). */
#define EXEC_STATUS_FAILED 125          /* alps failed before the command */
#define EXEC_STATUS_NOT_EXECUTABLE 126
#define EXEC_STATUS_NOT_FOUND 127

/* The caller of an exec, as its own /proc entries say. */
struct exec_peer {
	pid_t pid;
	char *cgroup;                   /* owned; /proc/PID/cgroup */
	struct rlimit rlimits[RLIM_NLIMITS];
	cpu_set_t cpus;
	int nice;
	int oom_score_adj;
	mode_t umask;
};

/* Read the process of pidfd; fails if it is gone (its pid is checked to be
 * still its own after everything is read). */
int exec_peer_read(int pidfd, struct exec_peer *out, alps_error **err);
void exec_peer_free(struct exec_peer *p);

struct exec_spec {
	const char *run_dir;
	const char *job;
	uid_t uid;
	gid_t gid;
	const gid_t *groups;            /* supplementary groups */
	size_t ngroups;
	const struct exec_peer *peer;   /* its cgroups and limits; NULL: the daemon's stay */
	const char *const *argv;        /* NULL-terminated; argv[0] without '/' is looked up in PATH */
	const char *const *envp;        /* NULL-terminated KEY=VALUE: the whole environment */
	int stdin_fd;                   /* become 0, 1, 2; -1: /dev/null */
	int stdout_fd;
	int stderr_fd;
	const char *workdir;            /* NULL: "/" */
	bool tty;                       /* stdin is a pseudo-terminal the process takes as its
					 * controlling terminal, in a session of its own */
	unsigned timeout_ms;            /* 0: 30 s */
	int *start_status;              /* out, may be NULL: an EXEC_STATUS_* on failure */
};

/* Start spec's process; *pid is the caller's to wait for.  Borrowed fds
 * stay open in the caller. */
int job_exec_spawn(const struct exec_spec *spec, pid_t *pid, alps_error **err);

/* alps-enter: $ALPS_ENTER_PATH, else next to the daemon in a build tree,
 * else the installed one. */
const char *job_exec_enter_path(void);

#endif
