/* ns.c: prepare and pin a job's mount namespace (see ns.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/job/apply.h"
#include "daemon/job/helper.h"
#include "daemon/job/ipc.h"
#include "daemon/job/mount.h"
#include "daemon/job/ns.h"
#include "daemon/job/plan_wire.h"
#include "daemon/job/rundir.h"
#include "daemon/job/sys.h"

/* How long a killed leftover process (squashfuse) gets to be gone, and
 * how long a pinned helper gets to exit before it is killed. */
#define KILL_WAIT_MS 5000
/* The helper's socket in the helper (alps-nshelper.c). */
#define HELPER_FD 3

/* ---- jobs in progress ---- */

/* Names of the jobs a thread of this process is preparing or releasing:
 * one at a time per job, any number of jobs at once. */
struct claim {
	struct claim *next;
	char *job;              /* owned */
};
static pthread_mutex_t claims_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t claims_cond = PTHREAD_COND_INITIALIZER;
static struct claim *claims;

static bool claimed_locked(const char *job)
{
	for (struct claim *c = claims; c; c = c->next)
		if (strcmp(c->job, job) == 0)
			return true;
	return false;
}

void job_claim(const char *job)
{
	struct claim *c = xzalloc(sizeof(*c));
	c->job = xstrdup(job);
	pthread_mutex_lock(&claims_mutex);
	while (claimed_locked(job))
		pthread_cond_wait(&claims_cond, &claims_mutex);
	c->next = claims;
	claims = c;
	pthread_mutex_unlock(&claims_mutex);
}

void job_unclaim(const char *job)
{
	struct claim *gone = NULL;
	pthread_mutex_lock(&claims_mutex);
	for (struct claim **pp = &claims; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->job, job) == 0) {
			gone = *pp;
			*pp = gone->next;
			break;
		}
	}
	pthread_cond_broadcast(&claims_cond);
	pthread_mutex_unlock(&claims_mutex);
	if (gone)
		free(gone->job);
	free(gone);
}

/* ---- the helper program ---- */

static pthread_once_t helper_once = PTHREAD_ONCE_INIT;
static const char *helper_path;

/* Read once, at the first prepare, rather than on every worker thread:
 * getenv() races with a setenv() elsewhere (the fabric sets libfabric's
 * variables). */
static void helper_path_init(void)
{
	const char *env = getenv("ALPS_NSHELPER");
	helper_path = env && env[0] == '/' ? env : ALPS_LIBEXECDIR "/" PACKAGE "/alps-nshelper";
}

const char *ns_helper_path(void)
{
	pthread_once(&helper_once, helper_path_init);
	return helper_path;
}

void ns_result_free(struct ns_result *r)
{
	for (size_t i = 0; i < r->nmounts; i++) {
		free(r->mounts[i].dst);
		free(r->mounts[i].fstype);
		free(r->mounts[i].source);
	}
	free(r->mounts);
	free(r->pin);
	memset(r, 0, sizeof(*r));
}

/* The job's directory, fresh: a leftover without a pinned namespace (a
 * prepare that crashed) is released first; a pinned one is EXISTS. */
static int job_dir_create(const struct ns_plan *plan, const char *dir, alps_error **err)
{
	_cleanup_free_ char *pin = xasprintf("%s/mnt", dir);
	if (mkdir(dir, 0700) < 0) {
		if (errno != EEXIST)
			return alps_fail_errno(err, "mkdir(%s)", dir);
		if (mnt_is_mount_root(AT_FDCWD, pin))
			return alps_fail(err, ALPS_E_EXISTS, "job %s is already prepared", plan->job);
		log_notice("job %s: cleaning up what a failed prepare left", plan->job);
		if (job_release(plan->run_dir, plan->job, err) < 0)
			return alps_error_prefix(err, "cleaning up job %s", plan->job);
		if (mkdir(dir, 0700) < 0)
			return alps_fail_errno(err, "mkdir(%s)", dir);
	}
	_cleanup_free_ char *root = xasprintf("%s/root", dir);
	if (mkdir(root, 0755) < 0)
		return alps_fail_errno(err, "mkdir(%s)", root);
	int fd = open(pin, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return alps_fail_errno(err, "creating %s", pin);
	close(fd);
	return 0;
}

struct prepare {
	const struct ns_plan *plan;
	pid_t helper;
	int pidfd;              /* owned: the helper's */
	int sock;               /* owned */
	int *pidfds;            /* owned: processes the helper left in the namespace */
	size_t npidfds;
	struct ns_result *out;
	uint64_t deadline;      /* monotonic ms: the helper is READY by then or killed */
	unsigned timeout_ms;
	char *last;             /* owned: what the helper reported last */
};

static void add_mount(struct ns_result *out, const struct helper_msg *m)
{
	const char *dst = m->text;
	const char *fstype = dst + strlen(dst) + 1;
	const char *source = fstype + strlen(fstype) + 1;
	out->mounts = xreallocarray(out->mounts, out->nmounts + 1, sizeof(*out->mounts));
	struct ns_mount *nm = &out->mounts[out->nmounts++];
	nm->dst = xstrdup(dst);
	nm->fstype = xstrdup(fstype);
	nm->source = xstrdup(source);
	nm->flags = (unsigned long)m->flags;
}

/* Remember a step or mount, for the timeout's message and the debug log. */
static void note_progress(struct prepare *p, const struct helper_msg *m)
{
	free(p->last);
	if (m->type == HELPER_MOUNT)
		p->last = xasprintf("mounted %s", m->text);
	else
		p->last = xstrdup(m->text);
	_cleanup_free_ char *e = log_escape(p->last, 200);
	log_debug("job %s: namespace helper %d: %s", p->plan->job, (int)p->helper, e);
}

/* One message: 1 when the helper is ready, 0 to go on, -1 on its error. */
static int handle_msg(struct prepare *p, struct helper_msg *m, size_t len, int fd,
		      alps_error **err)
{
	size_t head = offsetof(struct helper_msg, text);
	if (len < head || m->text_len > len - head || m->text_len < 1) {
		if (fd >= 0)
			close(fd);
		return alps_fail(err, ALPS_E_INTERNAL, "malformed message from the namespace helper");
	}
	/* Three strings end inside what came; make sure of the last NUL. */
	m->text[m->text_len - 1] = '\0';
	memset(m->text + m->text_len, 0, sizeof(m->text) - m->text_len);
	switch (m->type) {
	case HELPER_MOUNT:
		add_mount(p->out, m);
		note_progress(p, m);
		break;
	case HELPER_STEP:
		note_progress(p, m);
		break;
	case HELPER_PIDFD:
		if (fd >= 0) {
			p->pidfds = xreallocarray(p->pidfds, p->npidfds + 1, sizeof(int));
			p->pidfds[p->npidfds++] = steal_fd(&fd);
		}
		break;
	case HELPER_ERROR:
		alps_fail(err, m->code ? m->code : ALPS_E_INTERNAL, "%s", m->text);
		if (*err)
			(*err)->errnum = m->errnum;
		return -1;
	case HELPER_READY:
		return 1;
	default:
		break;
	}
	if (fd >= 0)
		close(fd);
	return 0;
}

static int timed_out(struct prepare *p, alps_error **err)
{
	return alps_fail(err, ALPS_E_TIMEOUT, "the namespace helper took over %u ms (its last "
			 "report: %s)", p->timeout_ms, p->last ? p->last : "none");
}

/* Read the helper's messages until READY, ERROR, its end or the deadline. */
static int wait_ready(struct prepare *p, alps_error **err)
{
	_cleanup_free_ struct helper_msg *m = xmalloc(sizeof(*m));
	for (;;) {
		uint64_t now = now_monotonic_ms();
		struct pollfd pfd = { .fd = p->sock, .events = POLLIN };
		uint64_t left = p->deadline > now ? p->deadline - now : 0;
		int rc = left ? poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left) : 0;
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return alps_fail_errno(err, "poll() on the namespace helper");
		if (rc == 0)
			return timed_out(p, err);
		int fd;
		ssize_t n = ipc_recv(p->sock, m, sizeof(*m), &fd);
		if (n < 0)
			return alps_fail_errno(err, "reading from the namespace helper");
		if (n == 0)
			return alps_fail(err, ALPS_E_INTERNAL,
					 "the namespace helper ended without a result");
		rc = handle_msg(p, m, (size_t)n, fd, err);
		if (rc != 0)
			return rc < 0 ? -1 : 0;
	}
}

/* Bind the helper's namespace onto the pin: it outlives the helper. */
static int pin_ns(pid_t helper, const char *pin, alps_error **err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)helper);
	_cleanup_close_ int tfd = sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (tfd < 0)
		return alps_fail_errno(err, "open_tree(%s)", path);
	return mnt_attach_path(tfd, pin, "the job's namespace", err);
}

static void wait_gone(int pidfd, int ms)
{
	struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
	while (poll(&pfd, 1, ms) < 0 && errno == EINTR)
		;
}

/* Reap the helper: given grace_ms to exit on its own, then killed. */
static int reap(struct prepare *p, int grace_ms)
{
	if (grace_ms > 0)
		wait_gone(p->pidfd, grace_ms);
	int status = 0;
	if (waitpid(p->helper, &status, WNOHANG) == p->helper)
		return status;
	sys_pidfd_send_signal(p->pidfd, SIGKILL);
	while (waitpid(p->helper, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

/* SIGKILL what the helper left in the namespace, and wait until it is
 * gone: its copy of the mounts must be too before the layers go. */
static void kill_leftovers(struct prepare *p)
{
	for (size_t i = 0; i < p->npidfds; i++) {
		sys_pidfd_send_signal(p->pidfds[i], SIGKILL);
		wait_gone(p->pidfds[i], KILL_WAIT_MS);
	}
}

static void prepare_cleanup(struct prepare *p)
{
	for (size_t i = 0; i < p->npidfds; i++)
		close(p->pidfds[i]);
	free(p->pidfds);
	if (p->sock >= 0)
		close(p->sock);
	if (p->pidfd >= 0)
		close(p->pidfd);
	free(p->last);
}

/* Run the helper to the end: pinned, or failed with everything undone. */
static int run_helper(struct prepare *p, const char *job_dir, alps_error **err)
{
	_cleanup_free_ char *pin = xasprintf("%s/mnt", job_dir);
	uint32_t flags = apply_overlay_legacy_forced() ? PLAN_WIRE_F_OVERLAY_LEGACY : 0;
	int rc = plan_wire_send(p->sock, p->plan, flags, p->deadline, err);
	if (rc == 0)
		rc = wait_ready(p, err);
	if (rc == 0)
		rc = pin_ns(p->helper, pin, err);
	if (rc == 0) {
		char go = 'x';
		ipc_send(p->sock, &go, 1, -1);
	}
	int status = reap(p, rc == 0 ? KILL_WAIT_MS : 0);
	if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		log_warn("job %s: the namespace helper ended with status 0x%x after pinning",
			 p->plan->job, (unsigned)status);
	if (rc < 0)
		kill_leftovers(p);
	else
		p->out->pin = steal_pointer(&pin);
	return rc;
}

/* The helper's environment: fixed, nothing of the daemon's (proxy
 * settings, credentials) reaches it or the squashfuse it starts.  The
 * sanitizers' options come along: they only steer a sanitizer build's
 * runtime, and the tests' settings must reach the helper too. */
static char **helper_env(void)
{
	static const char *const pass[] = { "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
					    "TSAN_OPTIONS" };
	char **env = xcalloc(ARRAY_SIZE(pass) + 2, sizeof(char *));
	size_t n = 0;
	env[n++] = xstrdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
	for (size_t i = 0; i < ARRAY_SIZE(pass); i++) {
		const char *v = getenv(pass[i]);
		if (v)
			env[n++] = xasprintf("%s=%s", pass[i], v);
	}
	return env;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* stdin /dev/null, stdout and stderr the daemon's, sock as fd 3; every
 * other fd of the daemon is O_CLOEXEC.  Signals as at boot. */
static int spawn_setup(posix_spawn_file_actions_t *fa, posix_spawnattr_t *at, int sock)
{
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	int rc = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(fa, sock, HELPER_FD);
	if (rc == 0)
		rc = posix_spawnattr_setflags(at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	if (rc == 0)
		rc = posix_spawnattr_setsigmask(at, &none);
	if (rc == 0)
		rc = posix_spawnattr_setsigdefault(at, &all);
	return rc;
}

/* posix_spawn: the child never runs daemon code between fork and exec
 * (glibc's is a vfork-style clone straight into execve). */
static int spawn_exec(const char *path, int sock, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	char *argv[] = { (char *)"alps-nshelper", NULL };
	char **env = helper_env();
	int rc = spawn_setup(&fa, &at, sock);
	if (rc == 0)
		rc = posix_spawn(pid, path, &fa, &at, argv, env);
	strv_free(env);
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	return rc;
}

static int spawn_helper(struct prepare *p, alps_error **err)
{
	int sv[2];
	const char *path = ns_helper_path();
	if (ipc_pair(sv) < 0)
		return alps_fail_errno(err, "socketpair() for the namespace helper");
	/* dup2 onto itself would leave O_CLOEXEC set: keep the child's end
	 * off fd 3. */
	_cleanup_close_ int child = sv[1] == HELPER_FD ? fcntl(sv[1], F_DUPFD_CLOEXEC, 4) : sv[1];
	if (sv[1] == HELPER_FD)
		close(sv[1]);
	p->sock = sv[0];
	if (child < 0)
		return alps_fail_errno(err, "fcntl(F_DUPFD) for the namespace helper");
	int rc = spawn_exec(path, child, &p->helper);
	if (rc != 0)
		return alps_fail_errnum(err, rc, "starting the namespace helper %s", path);
	p->pidfd = sys_pidfd_open(p->helper, 0);
	if (p->pidfd < 0) {
		alps_fail_errno(err, "pidfd_open(%d)", (int)p->helper);
		kill(p->helper, SIGKILL);
		waitpid(p->helper, NULL, 0);
		return -1;
	}
	log_debug("job %s: namespace helper %d started", p->plan->job, (int)p->helper);
	return 0;
}

/* Undo a failed prepare: the job's layers, files and directory. */
static void undo(const struct ns_plan *plan)
{
	_cleanup_error_ alps_error *e = NULL;
	if (job_release(plan->run_dir, plan->job, &e) < 0)
		log_error("job %s: cleaning up after a failed prepare: %s", plan->job, e->msg);
}

static int prepare_claimed(const struct job_spec *spec, const struct ns_plan *plan,
			   struct ns_result *out, alps_error **err)
{
	_cleanup_free_ char *job_dir = xasprintf("%s/jobs/%s", plan->run_dir, plan->job);
	if (job_dir_create(plan, job_dir, err) < 0)
		return -1;
	unsigned timeout = spec->prepare_timeout_ms ? spec->prepare_timeout_ms
						    : NS_PREPARE_TIMEOUT_DEFAULT_MS;
	struct prepare p = { .plan = plan, .sock = -1, .pidfd = -1, .out = out,
			     .timeout_ms = timeout, .deadline = now_monotonic_ms() + timeout };
	int rc = spawn_helper(&p, err);
	if (rc == 0)
		rc = run_helper(&p, job_dir, err);
	if (rc == 0)
		log_debug("job %s: namespace helper %d done, namespace pinned", plan->job,
			  (int)p.helper);
	prepare_cleanup(&p);
	if (rc < 0) {
		ns_result_free(out);
		undo(plan);
	}
	return rc;
}

int ns_prepare(const struct job_spec *spec, struct ns_result *out, alps_error **err)
{
	memset(out, 0, sizeof(*out));
	_cleanup_ns_plan_ struct ns_plan *plan = NULL;
	if (ns_plan_build(spec, &plan, err) < 0 || ns_plan_validate(plan, err) < 0 ||
	    ns_run_dir_init(plan->run_dir, err) < 0)
		return -1;      /* the caller names the job it asked for */
	job_claim(plan->job);
	int rc = prepare_claimed(spec, plan, out, err);
	job_unclaim(plan->job);
	return rc;
}
