/* ldcache.c: the image's ld.so.cache with the injected libraries first
 * (inject.h), made by the image's own ldconfig - its format is the
 * image's glibc's, which the host's ldconfig need not write.
 *
 * ldconfig runs in a namespace built like a job's (ns.h), of the image's
 * layers, read-only, with the entry's libraries where jobs get them and an
 * output directory: no user's mount is in it, so the cache every job of
 * the image shares depends on the image and the host stack only.  It runs
 * as nobody through alps-enter (exec.h), with a time limit
 * (hooks.ldconfig_timeout), in a worker thread.  `ldconfig -X -C OUT
 * LIB_DIR`: the directory given first comes first in the cache (before
 * ld.so.conf's and the standard ones); -X changes no link of the image.
 *
 * An image without glibc's ldconfig (Alpine: none, or musl's no-op
 * script) is no error: the job finds the libraries through
 * LD_LIBRARY_PATH alone. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/hooks/inject.h"
#include "daemon/job/exec.h"
#include "daemon/job/jobenv.h"
#include "daemon/job/ns.h"
#include "daemon/job/sys.h"

#define OUT_DIR "/run/alps-ldcache"
#define CACHE_MAX (64u << 20)
#define LOG_MAX 2048

static int build_ns(const struct ldcache_run *r, const char *job, const char *out,
		    struct ns_result *ns, alps_error **err)
{
	const struct config *cfg = r->cfg;
	struct job_mounts jm = { 0 };
	_cleanup_free_ char *lib = xasprintf("%s/lib", r->entry);
	/* The MPI libraries are not bound over the image's here: ldconfig
	 * names a file by its own soname, and Cray's (libmpi_gnu_123.so.12)
	 * is not the image's (libmpi.so.12).  The cache keeps the image's
	 * names and paths; in the job, those paths are the host's files. */
	jobenv_mounts_add_site(&jm, lib, r->lib_dir, true);
	jobenv_mounts_add_site(&jm, out, OUT_DIR, false);
	struct job_spec spec = {
		.run_dir = cfg->run_dir, .job = job, .uid = INJECT_UID, .gid = INJECT_UID,
		.user_name = "nobody", .layers = r->img->layer_files,
		.layer_ids = r->img->layer_ids, .nlayers = r->img->nlayers, .writable = false,
		.site_mounts = jm.site, .nsite_mounts = jm.nsite,
		.devices = (const char *const *)cfg->devices.v, .ndevices = cfg->devices.n,
		.tmp_size = cfg->tmp_size, .shm_size = cfg->shm_size, .upper_size = cfg->upper_size,
		.prepare_timeout_ms = (unsigned)cfg->prepare_timeout_s * 1000u,
	};
	int rc = ns_prepare(&spec, ns, err);
	jobenv_mounts_free(&jm);
	return rc;
}

/* Wait for pid at most ms; killed at the limit. */
static int wait_limited(pid_t pid, unsigned ms, int *status, alps_error **err)
{
	int pfd = sys_pidfd_open(pid, 0);
	struct pollfd p = { .fd = pfd, .events = POLLIN };
	int n = pfd < 0 ? 1 : poll(&p, 1, (int)ms);
	if (n == 0)
		kill(pid, SIGKILL);
	if (pfd >= 0)
		close(pfd);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
	if (n == 0)
		return alps_fail(err, ALPS_E_TIMEOUT, "the image's ldconfig was killed after its "
				 "time limit of %u s (hooks.ldconfig_timeout)", ms / 1000);
	return 0;
}

static char *read_log(int fd)
{
	char buf[LOG_MAX + 1];
	ssize_t n = pread(fd, buf, LOG_MAX, 0);
	buf[n > 0 ? n : 0] = '\0';
	return log_escape(buf, LOG_MAX);
}

/* ldconfig in the namespace: 1 ran (exit 0), 0 not there or failed (*why). */
static int run_ldconfig(const struct ldcache_run *r, const char *job, int logfd, char **why,
			alps_error **err)
{
	const char *argv[] = { "ldconfig", "-X", "-C", OUT_DIR "/ld.so.cache", r->lib_dir, NULL };
	const char *envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };
	int start = 0, status = 0;
	pid_t pid;
	struct exec_spec x = {
		.run_dir = r->cfg->run_dir, .job = job, .uid = INJECT_UID, .gid = INJECT_UID,
		.argv = argv, .envp = envp, .stdin_fd = -1, .stdout_fd = logfd, .stderr_fd = logfd,
		.workdir = "/", .timeout_ms = 30000, .start_status = &start,
	};
	alps_error *e = NULL;
	if (job_exec_spawn(&x, &pid, &e) < 0) {
		if (start != EXEC_STATUS_NOT_FOUND) {
			*err = e;
			return alps_error_prefix(err, "the image's ldconfig");
		}
		alps_error_free(e);
		*why = xstrdup("the image has no ldconfig");
		return 0;
	}
	if (wait_limited(pid, (unsigned)r->cfg->ldconfig_timeout_s * 1000u, &status, err) < 0)
		return -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 1;
	_cleanup_free_ char *out = read_log(logfd);
	*why = xasprintf("the image's ldconfig failed (status 0x%x): %s", (unsigned)status, out);
	return 0;
}

/* What ldconfig left in out, checked, copied to the entry as root's. */
static int take_cache(const struct ldcache_run *r, const char *out, char **why,
		      alps_error **err)
{
	_cleanup_free_ char *src = xasprintf("%s/ld.so.cache", out);
	_cleanup_free_ char *dst = xasprintf("%s/ld.so.cache", r->entry);
	_cleanup_close_ int in = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	char magic[20] = "";
	if (in < 0 || fstat(in, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CACHE_MAX ||
	    pread(in, magic, sizeof(magic), 0) != (ssize_t)sizeof(magic) ||
	    (memcmp(magic, "ld.so-1.7.0", 11) != 0 && memcmp(magic, "glibc-ld.so.cache", 17) != 0)) {
		*why = xstrdup("the image's ldconfig wrote no glibc ld.so.cache (not glibc's)");
		return 0;
	}
	_cleanup_close_ int o = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (o < 0)
		return alps_fail_errno(err, "cannot create %s", dst);
	char buf[65536];
	ssize_t n;
	off_t off = 0;
	while (off < st.st_size && (n = pread(in, buf, sizeof(buf), off)) > 0) {
		if (write_all(o, buf, (size_t)n) < 0)
			return alps_fail_errno(err, "cannot write %s", dst);
		off += n;
	}
	if (fdatasync(o) < 0)
		return alps_fail_errno(err, "cannot write %s", dst);
	return 1;
}

static int run_in_ns(const struct ldcache_run *r, const char *job, const char *out, char **why,
		     alps_error **err)
{
	_cleanup_free_ char *logp = xasprintf("%s/ldconfig.log", r->entry);
	_cleanup_close_ int logfd = open(logp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (logfd < 0)
		return alps_fail_errno(err, "cannot create %s", logp);
	unlink(logp);
	int rc = run_ldconfig(r, job, logfd, why, err);
	if (rc == 1) {
		log_notice("injection cache: the image's ldconfig ran for %s", r->entry);
		rc = take_cache(r, out, why, err);
	}
	if (rc == 0 && *why && !str_has_prefix(*why, "the image's ldconfig failed")) {
		_cleanup_free_ char *said = read_log(logfd);
		char *w = xasprintf("%s%s%s", *why, *said ? ": " : "", said);
		free(*why);
		*why = w;
	}
	return rc;
}

int ldcache_build(const struct ldcache_run *r, char **why, alps_error **err)
{
	static atomic_uint counter;
	_cleanup_free_ char *out = xasprintf("%s/out", r->entry);
	if (mkdir(out, 0700) < 0 || chown(out, INJECT_UID, INJECT_UID) < 0)
		return alps_fail_errno(err, "cannot create %s", out);
	/* A leading '-': no job id a user may choose (op_job.c). */
	_cleanup_free_ char *job = xasprintf("-ldcache-%d-%u", (int)getpid(),
					     atomic_fetch_add(&counter, 1));
	struct ns_result ns;
	if (build_ns(r, job, out, &ns, err) < 0)
		return alps_error_prefix(err, "the namespace of the image's ldconfig");
	int rc = run_in_ns(r, job, out, why, err);
	alps_error *e2 = NULL;
	if (job_release(r->cfg->run_dir, job, &e2) < 0) {
		log_warn("injection cache: %s", e2->msg);
		alps_error_free(e2);
	}
	ns_result_free(&ns);
	/* What nobody wrote there, its writer gone (released): links not
	 * followed. */
	inject_rm_tree(out);
	if (rc == 0)
		log_notice("injection cache: no ld.so.cache for %s: %s", r->entry, *why);
	return rc;
}
