/* enter.h: what alpsd hands alps-enter, and what alps-enter reports.
 *
 * alps-enter is started by the daemon (posix_spawn, with no environment of
 * its own) with these fds:
 *   0, 1, 2   the caller's stdin, stdout, stderr
 *   3         the request (a memfd, read from offset 0 to its end)
 *   4         the report pipe (write end)
 *   5         the job's pinned mount namespace
 *   6...      cgroup.procs of each cgroup to join (the request says how many)
 * The request is a sequence of NUL-terminated records, each a tag byte and
 * a value (decimal unless said otherwise):
 *   'u' uid  'g' gid  'G' a supplementary gid (repeated)  'k' number of cgroup fds
 *   'r' "RESOURCE CUR MAX" (repeated; -1 is RLIM_INFINITY)
 *   'C' a CPU of the affinity (repeated; none: left alone)
 *   'n' nice  'o' oom_score_adj  'm' umask (octal)
 *   'w' workdir (text)  'A' an argv element (repeated)  'E' an environment entry (repeated)
 *   't' 1: fd 0 is a pseudo-terminal, made the controlling terminal of a new session
 * The command is looked up in the PATH of its environment (inside the
 * container), like execvp.
 *
 * The report pipe is CLOEXEC: end of file without a report means the
 * command was exec'd.  Otherwise one struct enter_report comes first. */
#ifndef ALPS_LIBEXEC_ENTER_H
#define ALPS_LIBEXEC_ENTER_H

#include <stdint.h>

#define ENTER_FD_REQUEST 3
#define ENTER_FD_REPORT 4
#define ENTER_FD_NS 5
#define ENTER_FD_CGROUP0 6
#define ENTER_MAX_CGROUPS 64
#define ENTER_REQUEST_MAX (64u << 20)

enum enter_stage {
	ENTER_STAGE_REQUEST,    /* the request is malformed */
	ENTER_STAGE_CGROUP,     /* joining a cgroup */
	ENTER_STAGE_LIMITS,     /* the caller's limits, affinity, nice, oom_score_adj */
	ENTER_STAGE_SETNS,      /* entering the job's mount namespace */
	ENTER_STAGE_CREDS,      /* becoming the user */
	ENTER_STAGE_CHDIR,      /* the workdir */
	ENTER_STAGE_TTY,        /* the controlling terminal */
	ENTER_STAGE_EXEC,       /* execve (errnum ENOENT: not found) */
	ENTER_STAGE_COUNT
};

struct enter_report {
	int32_t stage;
	int32_t errnum;
	int32_t index;          /* the cgroup (for ENTER_STAGE_CGROUP), else 0 */
};

#endif
