/* release.c: release a job, list pinned jobs, reconcile after a restart
 * (see ns.h). */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/job/cgroup.h"
#include "daemon/job/layers.h"
#include "daemon/job/mount.h"
#include "daemon/job/mountinfo.h"
#include "daemon/job/ns.h"
#include "daemon/job/plan.h"
#include "daemon/job/sys.h"

/* A job's processes get this many rounds of SIGKILL, each waiting up to
 * KILL_ROUND_MS for the killed ones to be gone. */
#define KILL_ROUNDS 20
#define KILL_ROUND_MS 1000
#define LAYERS_FILE_MAX (1u << 20)
#define GRACE_POLL_MS 50
#define SEEN_MAX 64
#define SEEN_TTL_MS 60000

/* --- the processes in a namespace --- */

static bool in_ns(int procfd, const char *pid, const struct stat *ns)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "%s/ns/mnt", pid);
	return fstatat(procfd, path, &st, 0) == 0 && st.st_dev == ns->st_dev &&
	       st.st_ino == ns->st_ino;
}

static bool is_pid(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* Signal each process of the namespace ns (through a pidfd, checked again
 * after opening it, so a reused pid is never hit); their pidfds. */
static int kill_round(const struct stat *ns, int sig, int **pidfds, size_t *n, alps_error **err)
{
	_cleanup_closedir_ DIR *d = opendir("/proc");
	if (!d)
		return alps_fail_errno(err, "opendir(/proc)");
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!is_pid(e->d_name) || !in_ns(dirfd(d), e->d_name, ns))
			continue;
		int pidfd = sys_pidfd_open((pid_t)atoi(e->d_name), 0);
		if (pidfd < 0)
			continue;
		if (!in_ns(dirfd(d), e->d_name, ns) || sys_pidfd_send_signal(pidfd, sig) < 0) {
			close(pidfd);
			continue;
		}
		*pidfds = xreallocarray(*pidfds, *n + 1, sizeof(int));
		(*pidfds)[(*n)++] = pidfd;
	}
	return 0;
}

/* Wait for killed processes to be gone (a pidfd polls readable once its
 * process has exited, its mounts released). */
static void wait_gone(int *pidfds, size_t n)
{
	uint64_t deadline = now_monotonic_ms() + KILL_ROUND_MS;
	for (size_t i = 0; i < n; i++) {
		struct pollfd pfd = { .fd = pidfds[i], .events = POLLIN };
		uint64_t now = now_monotonic_ms();
		int left = now >= deadline ? 0 : (int)(deadline - now);
		while (poll(&pfd, 1, left) < 0 && errno == EINTR)
			;
		close(pidfds[i]);
	}
}

static int kill_ns_members(const char *pin, const char *job, alps_error **err)
{
	struct stat ns;
	if (stat(pin, &ns) < 0)
		return alps_fail_errno(err, "stat(%s)", pin);
	for (int round = 0; round < KILL_ROUNDS; round++) {
		_cleanup_free_ int *pidfds = NULL;
		size_t n = 0;
		if (kill_round(&ns, SIGKILL, &pidfds, &n, err) < 0)
			return -1;
		if (n == 0)
			return 0;
		log_debug("job %s: killed %zu processes", job, n);
		wait_gone(pidfds, n);
	}
	return alps_fail(err, ALPS_E_BUSY, "processes of job %s survive SIGKILL", job);
}

/* --- SIGTERM and the grace --- */

/* Jobs released lately (any thread; a short list, pruned by age). */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char job[64];
	uint64_t at;
} seen[SEEN_MAX];

static void seen_add(const char *job)
{
	uint64_t now = now_monotonic_ms();
	size_t slot = 0;
	pthread_mutex_lock(&seen_lock);
	for (size_t i = 0; i < SEEN_MAX; i++)
		if (seen[i].at < seen[slot].at)
			slot = i;
	snprintf(seen[slot].job, sizeof(seen[slot].job), "%s", job);
	seen[slot].at = now;
	pthread_mutex_unlock(&seen_lock);
}

bool job_release_seen(const char *job)
{
	uint64_t now = now_monotonic_ms();
	bool found = false;
	pthread_mutex_lock(&seen_lock);
	for (size_t i = 0; i < SEEN_MAX && !found; i++)
		found = seen[i].at && now - seen[i].at < SEEN_TTL_MS && strcmp(seen[i].job, job) == 0;
	pthread_mutex_unlock(&seen_lock);
	return found;
}

/* SIGTERM to the members of the namespace; how many. */
static size_t term_ns_members(const char *pin)
{
	struct stat ns;
	_cleanup_free_ int *pidfds = NULL;
	size_t n = 0;
	if (!mnt_is_mount_root(AT_FDCWD, pin) || stat(pin, &ns) < 0 ||
	    kill_round(&ns, SIGTERM, &pidfds, &n, NULL) < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		close(pidfds[i]);
	return n;
}

/* Whether the namespace still has a member. */
static bool ns_populated(const char *pin)
{
	struct stat ns;
	if (!mnt_is_mount_root(AT_FDCWD, pin) || stat(pin, &ns) < 0)
		return false;
	_cleanup_closedir_ DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (is_pid(e->d_name) && in_ns(dirfd(d), e->d_name, &ns))
			return true;
	return false;
}

/* From now on no exec starts in the job; those starting are waited for. */
static void bar_execs(const char *run_dir, const char *job)
{
	_cleanup_free_ char *dir = xasprintf("%s/jobs/%s", run_dir, job);
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	while (flock(fd, LOCK_EX) < 0 && errno == EINTR)
		;
	int mark = openat(fd, JOB_RELEASING_MARK, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (mark < 0)
		log_warn("job %s: cannot mark it released: %s", job, strerror(errno));
	else
		close(mark);
}

void job_release_stop(const char *run_dir, const char *job, unsigned grace_ms)
{
	if (!job_name_valid(job))
		return;
	seen_add(job);
	bar_execs(run_dir, job);
	_cleanup_free_ char *pin = xasprintf("%s/jobs/%s/mnt", run_dir, job);
	size_t n = job_cgroup_signal(run_dir, job, SIGTERM) + term_ns_members(pin);
	if (n == 0)
		return;
	log_debug("job %s: SIGTERM to %zu processes, %u ms to end", job, n, grace_ms);
	uint64_t deadline = now_monotonic_ms() + grace_ms;
	while (now_monotonic_ms() < deadline &&
	       (job_cgroup_populated(run_dir, job) || ns_populated(pin)))
		usleep(GRACE_POLL_MS * 1000);
}

/* --- the job's layer list --- */

/* The lines of a small file; a missing file has none.  *lines is
 * NULL-terminated, caller frees with job_list_free(). */
static int read_lines(const char *path, char ***lines, size_t *n, alps_error **err)
{
	*lines = xcalloc(1, sizeof(char *));
	*n = 0;
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : alps_fail_errno(err, "open(%s)", path);
	char buf[512];
	size_t total = 0;
	while (fgets(buf, sizeof(buf), f)) {
		total += strlen(buf);
		if (total > LAYERS_FILE_MAX)
			return alps_fail(err, ALPS_E_INTEGRITY, "%s is too big", path);
		buf[strcspn(buf, "\n")] = '\0';
		if (!*buf)
			continue;
		*lines = xreallocarray(*lines, *n + 2, sizeof(char *));
		(*lines)[(*n)++] = xstrdup(buf);
		(*lines)[*n] = NULL;
	}
	if (ferror(f))
		return alps_fail_errno(err, "read(%s)", path);
	return 0;
}

/* Keep the first n lines (the layers still held) in path, atomically. */
static int write_lines(const char *path, char **lines, size_t n, alps_error **err)
{
	if (n == 0)
		return unlink(path) < 0 && errno != ENOENT ? alps_fail_errno(err, "unlink(%s)", path)
							   : 0;
	_cleanup_free_ char *tmp = xasprintf("%s.tmp", path);
	_cleanup_close_ int fd =
		open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return alps_fail_errno(err, "open(%s)", tmp);
	_cleanup_free_ char *text = xstrdup("");
	for (size_t i = 0; i < n; i++) {
		char *t = xasprintf("%s%s\n", text, lines[i]);
		free(text);
		text = t;
	}
	if (write_all(fd, text, strlen(text)) < 0)
		return alps_fail_errno(err, "write(%s)", tmp);
	if (rename(tmp, path) < 0)
		return alps_fail_errno(err, "rename(%s, %s)", tmp, path);
	return 0;
}

/* Drop the job's layer references, top first, crossing each off the list
 * as it goes: a release that fails half-way can be repeated. */
static int release_layers(const char *run_dir, const char *job_dir, alps_error **err)
{
	_cleanup_free_ char *path = xasprintf("%s/layers", job_dir);
	char **ids;
	size_t n;
	int rc = read_lines(path, &ids, &n, err);
	for (size_t k = n; rc == 0 && k-- > 0;) {
		rc = layer_mount_release(run_dir, ids[k], err);
		if (rc == 0)
			rc = write_lines(path, ids, k, err);
	}
	job_list_free(ids);
	return rc;
}

/* --- release --- */

int job_release(const char *run_dir, const char *job, alps_error **err)
{
	if (!job_name_valid(job))
		return alps_fail(err, ALPS_E_INVALID, "invalid job name \"%s\"", job ? job : "");
	_cleanup_free_ char *jobs = xasprintf("%s/jobs", run_dir);
	_cleanup_free_ char *dir = xasprintf("%s/%s", jobs, job);
	_cleanup_free_ char *pin = xasprintf("%s/mnt", dir);
	if (access(dir, F_OK) < 0)
		return errno == ENOENT ? 0 : alps_fail_errno(err, "access(%s)", dir);
	_cleanup_error_ alps_error *busy = NULL;
	seen_add(job);
	bar_execs(run_dir, job);
	/* The cgroups first: a process that made namespaces of its own is
	 * in no namespace of the job, but still in its cgroup, and holds
	 * the layers' mounts (and loop devices) as long as it lives. */
	if (job_cgroup_remove(run_dir, job, busy ? NULL : &busy) < 0)
		log_warn("job %s: %s", job, busy->msg);
	if (mnt_is_mount_root(AT_FDCWD, pin)) {
		kill_ns_members(pin, job, busy ? NULL : &busy);
		if (umount2(pin, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
			return alps_fail_errno(err, "umount2(%s)", pin);
	}
	if (release_layers(run_dir, dir, err) < 0)
		return alps_error_prefix(err, "releasing job %s", job);
	_cleanup_close_ int jfd = open(jobs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (jfd < 0)
		return alps_fail_errno(err, "open(%s)", jobs);
	if (rm_tree_at(jfd, job, err) < 0)
		return alps_error_prefix(err, "removing %s", dir);
	if (busy) {
		*err = steal_pointer(&busy);
		return -1;
	}
	return 0;
}

/* --- listing and reconciling --- */

void job_list_free(char **jobs)
{
	if (!jobs)
		return;
	for (char **p = jobs; *p; p++)
		free(*p);
	free(jobs);
}

static void list_add(char ***list, size_t *n, const char *s)
{
	*list = xreallocarray(*list, *n + 2, sizeof(char *));
	(*list)[(*n)++] = xstrdup(s);
	(*list)[*n] = NULL;
}

static bool list_has(char **list, const char *s)
{
	for (char **p = list; p && *p; p++)
		if (strcmp(*p, s) == 0)
			return true;
	return false;
}

/* The run directory as mountinfo spells it (symlinks resolved). */
static char *canonical(const char *run_dir)
{
	char *rp = realpath(run_dir, NULL);
	return rp ? rp : xstrdup(run_dir);
}

/* "<name>/<tail>" right under dir: name, or NULL; caller frees. */
static char *name_under(const char *mp, const char *dir, const char *tail)
{
	size_t n = strlen(dir);
	if (strncmp(mp, dir, n) != 0 || mp[n] != '/')
		return NULL;
	const char *name = mp + n + 1;
	const char *slash = strchr(name, '/');
	if (!slash || slash == name || strcmp(slash + 1, tail) != 0)
		return NULL;
	return xstrndup(name, (size_t)(slash - name));
}

int job_list_pinned(const char *run_dir, char ***jobs, size_t *njobs, alps_error **err)
{
	_cleanup_free_ char *rp = canonical(run_dir);
	_cleanup_free_ char *dir = xasprintf("%s/jobs", rp);
	struct mountinfo mi;
	*jobs = xcalloc(1, sizeof(char *));
	*njobs = 0;
	if (mountinfo_read(NULL, &mi, err) < 0)
		return -1;
	for (size_t i = 0; i < mi.count; i++) {
		if (strcmp(mi.entries[i].fstype, "nsfs") != 0)
			continue;
		_cleanup_free_ char *name = name_under(mi.entries[i].mountpoint, dir, "mnt");
		if (name && job_name_valid(name) && !list_has(*jobs, name))
			list_add(jobs, njobs, name);
	}
	mountinfo_free(&mi);
	return 0;
}

/* Job directories without a pinned namespace. */
static int find_stale(const char *rp, struct job_reconcile *r, alps_error **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/jobs", rp);
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : alps_fail_errno(err, "opendir(%s)", dir);
	struct dirent *e;
	while ((e = readdir(d)))
		if (job_name_valid(e->d_name) && !list_has(r->pinned, e->d_name))
			list_add(&r->stale, &r->nstale, e->d_name);
	return 0;
}

/* How many pinned jobs list layer id. */
static unsigned count_users(const char *rp, char **pinned, const char *id)
{
	unsigned users = 0;
	for (char **p = pinned; p && *p; p++) {
		_cleanup_free_ char *path = xasprintf("%s/jobs/%s/layers", rp, *p);
		char **ids;
		size_t n;
		if (read_lines(path, &ids, &n, NULL) == 0)
			users += list_has(ids, id);
		job_list_free(ids);
	}
	return users;
}

static int find_layers(const char *rp, struct job_reconcile *r, alps_error **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/layers", rp);
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : alps_fail_errno(err, "opendir(%s)", dir);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!layer_id_valid(e->d_name))
			continue;
		struct job_reconcile_layer l = { .id = xstrdup(e->d_name) };
		if (layer_mount_state(rp, l.id, &l.refs, &l.mounted, err) < 0) {
			free(l.id);
			return -1;
		}
		l.users = count_users(rp, r->pinned, l.id);
		r->layers = xreallocarray(r->layers, r->nlayers + 1, sizeof(*r->layers));
		r->layers[r->nlayers++] = l;
	}
	return 0;
}

int job_reconcile(const char *run_dir, struct job_reconcile *out, alps_error **err)
{
	memset(out, 0, sizeof(*out));
	_cleanup_free_ char *rp = canonical(run_dir);
	out->stale = xcalloc(1, sizeof(char *));
	if (job_list_pinned(rp, &out->pinned, &out->npinned, err) < 0 ||
	    find_stale(rp, out, err) < 0 || find_layers(rp, out, err) < 0) {
		job_reconcile_free(out);
		return -1;
	}
	return 0;
}

int job_reconcile_apply(const char *run_dir, const struct job_reconcile *r, alps_error **err)
{
	for (size_t i = 0; i < r->nstale; i++)
		if (job_release(run_dir, r->stale[i], err) < 0)
			return -1;
	for (size_t i = 0; i < r->nlayers; i++) {
		const struct job_reconcile_layer *l = &r->layers[i];
		if (l->users > 0 && l->refs == l->users)
			continue;
		log_notice("layer %s: %u references recorded, %u jobs use it", l->id, l->refs,
			   l->users);
		if (layer_mount_set_refs(run_dir, l->id, l->users, err) < 0)
			return -1;
	}
	return 0;
}

void job_reconcile_free(struct job_reconcile *r)
{
	job_list_free(r->pinned);
	job_list_free(r->stale);
	for (size_t i = 0; i < r->nlayers; i++)
		free(r->layers[i].id);
	free(r->layers);
	memset(r, 0, sizeof(*r));
}
