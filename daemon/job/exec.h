/* exec.h: run a process inside a prepared job.
 *
 * A child of the daemon joins the job's pinned mount namespace
 * (setns(CLONE_NEWNS) on RUN_DIR/jobs/<job>/mnt), moves into the caller's
 * cgroup, arranges its fds (the given stdin/stdout/stderr, nothing else),
 * becomes the caller (setgroups, setresgid, setresuid, each verified, then
 * no_new_privs), changes to the workdir with the user's rights and execs
 * argv with exactly the environment given, looking the command up in that
 * environment's PATH inside the container.  Between fork and exec the child
 * makes only async-signal-safe calls: the daemon has threads.
 *
 * A failure before the exec (no such command, a workdir the user cannot
 * enter...) comes back through a CLOEXEC pipe: job_exec_spawn() fails with
 * it and the child is already reaped.  On success the caller owns the pid
 * and waits for it (a pidfd from pidfd_open() fits an event loop). */
#ifndef ALPS_DAEMON_JOB_EXEC_H
#define ALPS_DAEMON_JOB_EXEC_H

#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"

struct exec_spec {
	const char *run_dir;
	const char *job;
	uid_t uid;
	gid_t gid;
	const gid_t *groups;            /* supplementary groups */
	size_t ngroups;
	const char *cgroup;             /* a cgroup directory to join, or NULL */
	const char *const *argv;        /* NULL-terminated; argv[0] without '/' is looked up in PATH */
	const char *const *envp;        /* NULL-terminated KEY=VALUE: the whole environment */
	int stdin_fd;                   /* become 0, 1, 2; -1: /dev/null */
	int stdout_fd;
	int stderr_fd;
	const char *workdir;            /* NULL: "/" */
};

/* Start spec's process; *pid is the caller's to wait for.  Borrowed fds
 * stay open in the caller. */
int job_exec_spawn(const struct exec_spec *spec, pid_t *pid, alps_error **err);

#endif
