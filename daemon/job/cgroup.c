/* cgroup.c: the cgroups of a job's processes (see cgroup.h). */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/job/cgroup.h"
#include "daemon/job/mountinfo.h"
#include "daemon/job/ns.h"
#include "daemon/job/plan.h"
#include "daemon/job/sys.h"

#define LIST_MAX (64u << 10)
#define GONE_WAIT_MS 5000
#define POLL_MS 20

/* Two execs of one job may record its cgroups at once. */
static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;

/* --- small files --- */

/* The content of a small file (NUL-terminated), or NULL with errno. */
static char *read_small(int dirfd, const char *path)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	size_t n = 0, cap = 4096;
	char *buf = xmalloc(cap + 1);
	for (;;) {
		ssize_t got = read(fd, buf + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int e = errno;
			free(buf);
			errno = e;
			return NULL;
		}
		if (got == 0)
			break;
		n += (size_t)got;
		if (n == cap) {
			if (cap >= LIST_MAX) {
				free(buf);
				errno = EFBIG;
				return NULL;
			}
			cap *= 2;
			buf = xrealloc(buf, cap + 1);
		}
	}
	buf[n] = '\0';
	return buf;
}

static int write_text(const char *path, const char *text)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	return write_all(fd, text, strlen(text));
}

/* --- where the hierarchies are --- */

/* Whether every controller of a /proc/PID/cgroup line ("cpu,cpuacct",
 * "name=systemd") is an option of a v1 mount. */
static bool controllers_match(const char *controllers, const char *super_options)
{
	_cleanup_free_ char *list = xstrdup(controllers);
	char *save = NULL;
	bool any = false;
	for (char *c = strtok_r(list, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
		if (!mountinfo_has_option(super_options, c))
			return false;
		any = true;
	}
	return any;
}

/* The mount point of a hierarchy (controllers "" is the unified one);
 * only mounts of the whole hierarchy (root "/") count. */
static const char *hierarchy_mount(const struct mountinfo *mi, const char *controllers)
{
	bool unified = *controllers == '\0';
	for (size_t i = 0; i < mi->count; i++) {
		const struct mountinfo_entry *e = &mi->entries[i];
		if (strcmp(e->root, "/") != 0)
			continue;
		if (unified ? strcmp(e->fstype, "cgroup2") == 0
			    : strcmp(e->fstype, "cgroup") == 0 &&
			      controllers_match(controllers, e->super_options))
			return e->mountpoint;
	}
	return NULL;
}

/* A cgroup path as /proc shows it: absolute, no "." or ".." component. */
static bool cgroup_path_ok(const char *p)
{
	if (p[0] != '/' || strstr(p, "//"))
		return false;
	for (const char *c = p; c; c = strchr(c + 1, '/')) {
		const char *name = c + 1;
		size_t len = strcspn(name, "/");
		if ((len == 1 && name[0] == '.') || (len == 2 && strncmp(name, "..", 2) == 0))
			return false;
	}
	return true;
}

/* --- the job's list --- */

static char *list_path(const char *run_dir, const char *job)
{
	return xasprintf("%s/jobs/%s/cgroups", run_dir, job);
}

static bool list_has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len == n && strncmp(p, line, n) == 0)
			return true;
		p = nl ? nl + 1 : NULL;
	}
	return false;
}

static int list_add(const char *run_dir, const char *job, const char *dir, alps_error **err)
{
	_cleanup_free_ char *path = list_path(run_dir, job);
	pthread_mutex_lock(&list_lock);
	_cleanup_free_ char *text = read_small(AT_FDCWD, path);
	int rc = 0;
	if (!text && errno != ENOENT) {
		rc = alps_fail_errno(err, "read(%s)", path);
	} else if (!list_has_line(text, dir)) {
		int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
		_cleanup_free_ char *line = xasprintf("%s\n", dir);
		if (fd < 0 || write_all(fd, line, strlen(line)) < 0)
			rc = alps_fail_errno(err, "write(%s)", path);
		if (fd >= 0)
			close(fd);
	}
	pthread_mutex_unlock(&list_lock);
	return rc;
}

/* The job's cgroups, NULL-terminated; caller frees with job_list_free(). */
static char **list_read(const char *run_dir, const char *job)
{
	_cleanup_free_ char *path = list_path(run_dir, job);
	_cleanup_free_ char *text = read_small(AT_FDCWD, path);
	char **v = xcalloc(1, sizeof(char *));
	size_t n = 0;
	char *save = NULL;
	for (char *l = text ? strtok_r(text, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save)) {
		if (l[0] != '/' || !cgroup_path_ok(l))
			continue;
		v = xreallocarray(v, n + 2, sizeof(char *));
		v[n++] = xstrdup(l);
		v[n] = NULL;
	}
	return v;
}

/* --- joining --- */

/* The job's cgroup below dir (made if needed), or dir itself when the
 * caller is already in it (an exec from inside the job). */
static char *job_dir_below(const char *dir, const char *job, alps_error **err)
{
	_cleanup_free_ char *name = xasprintf(JOB_CGROUP_PREFIX "%s", job);
	const char *last = strrchr(dir, '/');
	if (last && strcmp(last + 1, name) == 0)
		return xstrdup(dir);
	char *sub = xasprintf("%s/%s", strcmp(dir, "/") == 0 ? "" : dir, name);
	if (mkdir(sub, 0755) < 0 && errno != EEXIST) {
		alps_fail_errno(err, "cannot make the job's cgroup %s", sub);
		free(sub);
		return NULL;
	}
	return sub;
}

/* cgroup.procs of one line of /proc/PID/cgroup ("ID:CONTROLLERS:PATH"). */
static int open_line(const char *run_dir, const char *job, const struct mountinfo *mi, char *line,
		     alps_error **err)
{
	char *c1 = strchr(line, ':');
	char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	if (!c2)
		return alps_fail(err, ALPS_E_INTEGRITY, "unexpected cgroup line \"%s\"", line);
	*c2 = '\0';
	const char *controllers = c1 + 1, *path = c2 + 1;
	if (!cgroup_path_ok(path))
		return alps_fail(err, ALPS_E_INTEGRITY, "unexpected cgroup path \"%s\"", path);
	const char *mp = hierarchy_mount(mi, controllers);
	if (!mp)
		return alps_fail(err, ALPS_E_NOT_FOUND, "the cgroup hierarchy \"%s\" is not mounted",
				 *controllers ? controllers : "unified");
	_cleanup_free_ char *dir = xasprintf("%s%s", mp, strcmp(path, "/") == 0 ? "" : path);
	if (*controllers == '\0') {
		char *sub = job_dir_below(dir, job, err);
		if (!sub || list_add(run_dir, job, sub, err) < 0) {
			free(sub);
			return -1;
		}
		free(dir);
		dir = sub;
	}
	_cleanup_free_ char *procs = xasprintf("%s/cgroup.procs", dir);
	int fd = open(procs, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return alps_fail_errno(err, "cannot join the caller's cgroup %s", dir);
	return fd;
}

int job_cgroup_open(const char *run_dir, const char *job, const char *proc_cgroup, int **fds,
		    size_t *nfds, alps_error **err)
{
	*fds = NULL;
	*nfds = 0;
	struct mountinfo mi;
	if (mountinfo_read(NULL, &mi, err) < 0)
		return -1;
	_cleanup_free_ char *text = xstrdup(proc_cgroup);
	char *save = NULL;
	int rc = 0;
	for (char *l = strtok_r(text, "\n", &save); l && rc == 0; l = strtok_r(NULL, "\n", &save)) {
		int fd = open_line(run_dir, job, &mi, l, err);
		if (fd < 0) {
			rc = -1;
			break;
		}
		*fds = xreallocarray(*fds, *nfds + 1, sizeof(int));
		(*fds)[(*nfds)++] = fd;
	}
	mountinfo_free(&mi);
	if (rc < 0) {
		for (size_t i = 0; i < *nfds; i++)
			close((*fds)[i]);
		free(*fds);
		*fds = NULL;
		*nfds = 0;
	}
	return rc;
}

/* --- ending them --- */

/* Whether process pid (still) has dir, a unified cgroup, as its own. */
static bool member_of(pid_t pid, const char *rel)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	_cleanup_free_ char *text = read_small(AT_FDCWD, path);
	_cleanup_free_ char *want = xasprintf("0::%s", rel);
	return text && list_has_line(text, want);
}

/* dir relative to its unified mount ("/a/alps-job-1"), or NULL. */
static char *unified_rel(const char *dir)
{
	struct mountinfo mi;
	if (mountinfo_read(NULL, &mi, NULL) < 0)
		return NULL;
	const char *mp = hierarchy_mount(&mi, "");
	char *rel = NULL;
	size_t n = mp ? strlen(mp) : 0;
	if (mp && strncmp(dir, mp, n) == 0 && dir[n] == '/')
		rel = xstrdup(dir + n);
	mountinfo_free(&mi);
	return rel;
}

/* Signal each member of dir through a pidfd taken before checking that
 * the process is a member: a pid reused meanwhile is never hit. */
static size_t signal_members(const char *dir, int sig)
{
	_cleanup_free_ char *procs = xasprintf("%s/cgroup.procs", dir);
	_cleanup_free_ char *text = read_small(AT_FDCWD, procs);
	_cleanup_free_ char *rel = unified_rel(dir);
	size_t n = 0;
	char *save = NULL;
	if (!text || !rel)
		return 0;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		pid_t pid = (pid_t)atoi(l);
		int pidfd = pid > 0 ? sys_pidfd_open(pid, 0) : -1;
		if (pidfd < 0)
			continue;
		if (member_of(pid, rel) && sys_pidfd_send_signal(pidfd, sig) == 0)
			n++;
		close(pidfd);
	}
	return n;
}

size_t job_cgroup_signal(const char *run_dir, const char *job, int sig)
{
	char **dirs = list_read(run_dir, job);
	size_t n = 0;
	for (char **d = dirs; *d; d++)
		n += signal_members(*d, sig);
	job_list_free(dirs);
	return n;
}

static bool populated(const char *dir)
{
	_cleanup_free_ char *events = xasprintf("%s/cgroup.events", dir);
	_cleanup_free_ char *text = read_small(AT_FDCWD, events);
	return text && !strstr(text, "populated 0");
}

bool job_cgroup_populated(const char *run_dir, const char *job)
{
	char **dirs = list_read(run_dir, job);
	bool any = false;
	for (char **d = dirs; *d && !any; d++)
		any = populated(*d);
	job_list_free(dirs);
	return any;
}

/* cgroup.kill (Linux 5.14), else SIGKILL to each member, until empty. */
static int kill_all(const char *dir, alps_error **err)
{
	_cleanup_free_ char *kill_file = xasprintf("%s/cgroup.kill", dir);
	bool has_kill = access(kill_file, F_OK) == 0;
	uint64_t deadline = now_monotonic_ms() + GONE_WAIT_MS;
	while (populated(dir)) {
		if (now_monotonic_ms() > deadline)
			return alps_fail(err, ALPS_E_BUSY, "processes of cgroup %s survive SIGKILL", dir);
		if (!has_kill)
			signal_members(dir, SIGKILL);
		else if (write_text(kill_file, "1") < 0 && errno != ENOENT)
			return alps_fail_errno(err, "write(%s)", kill_file);
		usleep(POLL_MS * 1000);
	}
	return 0;
}

/* rmdir, retried while the last processes are being reaped. */
static int remove_dir(const char *dir, alps_error **err)
{
	uint64_t deadline = now_monotonic_ms() + GONE_WAIT_MS;
	while (rmdir(dir) < 0) {
		if (errno == ENOENT)
			return 0;
		if (errno != EBUSY || now_monotonic_ms() > deadline)
			return alps_fail_errno(err, "rmdir(%s)", dir);
		usleep(POLL_MS * 1000);
	}
	return 0;
}

int job_cgroup_remove(const char *run_dir, const char *job, alps_error **err)
{
	char **dirs = list_read(run_dir, job);
	int rc = 0;
	for (char **d = dirs; *d && rc == 0; d++) {
		if (access(*d, F_OK) < 0)
			continue;
		rc = kill_all(*d, err);
		if (rc == 0)
			rc = remove_dir(*d, err);
	}
	job_list_free(dirs);
	if (rc == 0) {
		_cleanup_free_ char *path = list_path(run_dir, job);
		if (unlink(path) < 0 && errno != ENOENT)
			rc = alps_fail_errno(err, "unlink(%s)", path);
	}
	return rc;
}
