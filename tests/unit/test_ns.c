/* test_ns.c: real job namespaces (root only; skipped otherwise).
 *
 * Builds small squashfs layers with mksquashfs from trees the test makes
 * (a minimal userland copied from the host, an overlay whiteout and an
 * opaque directory, a setuid-root copy of id), prepares jobs from them,
 * enters them from a child of the test (job_exec_spawn) and from a
 * separate program (nsenter), and checks that releasing leaves no mount,
 * loop device, fd or process behind.  Everything lives in one temporary
 * directory; the teardown detaches whatever is still mounted below it and
 * frees loop devices backed by its files, whatever the tests did. */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <linux/loop.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/job/apply.h"
#include "daemon/job/exec.h"
#include "daemon/job/layers.h"
#include "daemon/job/loop.h"
#include "daemon/job/mountinfo.h"
#include "daemon/job/ns.h"
#include "daemon/job/rundir.h"
#include "daemon/job/sys.h"

#define NOBODY 65534
#define MAX_LAYERS 100
#define CYCLES 50
#define TIMED_RUNS 20

static bool is_root;
static bool fuse_ok;
static char tmpdir[64];
static char run_dir[128];
static char cgroup_dir[256];
static char *layer_file[MAX_LAYERS];    /* base, top, then 2..99 */
static char *layer_id[MAX_LAYERS];
static const char *const test_env[] = { "PATH=/usr/bin:/bin", "HOME=/", NULL };

/* --- small helpers --- */

static int sh(const char *fmt, ...) ALPS_PRINTF(1, 2);
static int sh(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *cmd = xvasprintf(fmt, ap);
	va_end(ap);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static char *read_fd_all(int fd)
{
	size_t cap = 4096, len = 0;
	char *buf = xmalloc(cap);
	for (;;) {
		if (len + 1 >= cap)
			buf = xrealloc(buf, cap *= 2);
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

static char *sh_output(const char *fmt, ...) ALPS_PRINTF(1, 2);
static char *sh_output(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *cmd = xvasprintf(fmt, ap);
	va_end(ap);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	char *out = read_fd_all(fileno(f));
	pclose(f);
	return out;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, text, strlen(text)), 0);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void fail_on_error(int rc, alps_error *err, const char *what)
{
	if (rc < 0)
		fail_msg("%s: %s", what, err ? err->msg : "?");
}

/* expr first, then its error (argument order is unspecified). */
#define OK_OR_FAIL(expr, err, what)                     \
	do {                                            \
		int rc_ = (expr);                       \
		fail_on_error(rc_, err, what);          \
	} while (0)

/* --- what exists --- */

static size_t mounts_under(const char *dir)
{
	struct mountinfo mi;
	size_t n = 0;
	assert_int_equal(mountinfo_read(NULL, &mi, NULL), 0);
	for (size_t i = 0; i < mi.count; i++)
		n += path_is_under(mi.entries[i].mountpoint, dir);
	mountinfo_free(&mi);
	return n;
}

static size_t mountinfo_lines(void)
{
	struct mountinfo mi;
	assert_int_equal(mountinfo_read(NULL, &mi, NULL), 0);
	size_t n = mi.count;
	mountinfo_free(&mi);
	return n;
}

/* Loop devices backed by a file of ours (other tests on the machine may
 * use loop devices of their own). */
static size_t loops_under(const char *dir, bool detach)
{
	size_t n = 0;
	DIR *d = opendir("/sys/block");
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		unsigned nr;
		if (sscanf(e->d_name, "loop%u", &nr) != 1)
			continue;
		_cleanup_free_ char *back = loop_backing_file(nr);
		if (!back || !path_is_under(back, dir))
			continue;
		n++;
		if (detach) {
			char dev[32];
			snprintf(dev, sizeof(dev), "/dev/loop%u", nr);
			int fd = open(dev, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				ioctl(fd, LOOP_CLR_FD, 0);
				close(fd);
			}
		}
	}
	closedir(d);
	return n;
}

static size_t open_fds(void)
{
	size_t n = 0;
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Processes running squashfuse on /dev/fd/3: ours. */
static size_t squashfuse_procs(void)
{
	_cleanup_free_ char *out = sh_output("pgrep -c -f '^squashfuse -f /dev/fd/3' || true");
	return (size_t)strtoul(out, NULL, 10);
}

/* Whatever a test left: its jobs released, mounts below tmpdir detached
 * (the newest first), loop devices of our files freed. */
static void cleanup_everything(void)
{
	_cleanup_free_ char *jobs = xasprintf("%s/jobs", run_dir);
	DIR *d = opendir(jobs);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		alps_error *err = NULL;
		if (job_release(run_dir, e->d_name, &err) < 0)
			fprintf(stderr, "cleanup: %s\n", err->msg);
		alps_error_free(err);
	}
	if (d)
		closedir(d);
	for (int i = 0; i < 1000; i++) {
		struct mountinfo mi;
		if (mountinfo_read(NULL, &mi, NULL) < 0)
			break;
		const char *victim = NULL;
		for (size_t k = mi.count; k-- > 0 && !victim;)
			if (path_is_under(mi.entries[k].mountpoint, tmpdir))
				victim = mi.entries[k].mountpoint;
		int rc = victim ? umount2(victim, MNT_DETACH) : -1;
		mountinfo_free(&mi);
		if (!victim || rc < 0)
			break;
	}
	loops_under(tmpdir, true);
}

/* --- the image --- */

/* A minimal userland: a few host binaries and their libraries, Debian's
 * merged /usr layout. */
static void make_base_tree(const char *t)
{
	assert_int_equal(sh("set -e; t=%s; mkdir -p $t/usr/bin $t/usr/lib $t/usr/lib64 $t/etc $t/root "
			    "$t/opaque $t/layers; ln -s usr/bin $t/bin; ln -s usr/lib $t/lib; "
			    "ln -s usr/lib64 $t/lib64; "
			    "for b in sh cat id touch ls stat rm mkdir; do "
			    "  p=$(command -v $b); cp -L $p $t/usr/bin/$b; "
			    "  for l in $(ldd $p | grep -o '/[^ ]*'); do "
			    "    mkdir -p $t$(dirname $l); cp -L $l $t$l; done; done",
			    t),
			 0);
	_cleanup_free_ char *p = xasprintf("%s/etc/passwd", t);
	write_file(p, "root:x:0:0:root:/root:/bin/sh\n", 0644);
	free(p);
	p = xasprintf("%s/etc/group", t);
	write_file(p, "root:x:0:\n", 0644);
	free(p);
	p = xasprintf("%s/etc/os-release", t);
	write_file(p, "NAME=\"alps-base\"\n", 0644);
	free(p);
	p = xasprintf("%s/etc/deleted-by-upper", t);
	write_file(p, "gone\n", 0644);
	free(p);
	p = xasprintf("%s/opaque/old.txt", t);
	write_file(p, "old\n", 0644);
	free(p);
	p = xasprintf("%s/layers/top", t);
	write_file(p, "base\n", 0644);
}

/* The image's second layer: a new os-release, a whiteout (char 0:0) of a
 * base file, an opaque directory, a setuid-root id, a symlink that points
 * out of the container. */
static void make_top_tree(const char *t)
{
	assert_int_equal(sh("set -e; t=%s; mkdir -p $t/etc $t/opaque $t/usr/bin $t/layers; "
			    "cp /usr/bin/id $t/usr/bin/id-suid; chown 0:0 $t/usr/bin/id-suid; "
			    "chmod 4755 $t/usr/bin/id-suid; ln -s ../../../../../../etc $t/escape; "
			    "ln -s /proc/sys $t/proclink; mkdir -p $t/home; ln -s ../dev $t/home/devlink",
			    t),
			 0);
	_cleanup_free_ char *p = xasprintf("%s/etc/os-release", t);
	write_file(p, "NAME=\"alps-test-image\"\nID=alpstest\n", 0644);
	free(p);
	p = xasprintf("%s/etc/deleted-by-upper", t);
	assert_int_equal(mknod(p, S_IFCHR | 0000, makedev(0, 0)), 0);
	free(p);
	p = xasprintf("%s/opaque", t);
	assert_int_equal(setxattr(p, "trusted.overlay.opaque", "y", 1, 0), 0);
	free(p);
	p = xasprintf("%s/opaque/new.txt", t);
	write_file(p, "new\n", 0644);
	free(p);
	p = xasprintf("%s/layers/top", t);
	write_file(p, "top\n", 0644);
}

static void make_small_tree(const char *t, int k)
{
	assert_int_equal(sh("mkdir -p %s/layers", t), 0);
	_cleanup_free_ char *p = xasprintf("%s/layers/%d", t, k);
	_cleanup_free_ char *text = xasprintf("%d\n", k);
	write_file(p, text, 0644);
	free(p);
	p = xasprintf("%s/layers/top", t);
	write_file(p, text, 0644);
}

static void squash(const char *tree, const char *out)
{
	assert_int_equal(sh("mksquashfs %s %s -quiet -no-progress -noappend >/dev/null", tree, out), 0);
	assert_int_equal(chmod(out, 0644), 0);
}

static void make_images(void)
{
	_cleanup_free_ char *trees = xasprintf("%s/trees", tmpdir);
	assert_int_equal(sh("mkdir -p %s %s/layers", trees, tmpdir), 0);
	for (int k = 0; k < MAX_LAYERS; k++) {
		_cleanup_free_ char *t = xasprintf("%s/%d", trees, k);
		assert_int_equal(mkdir(t, 0755), 0);
		if (k == 0)
			make_base_tree(t);
		else if (k == 1)
			make_top_tree(t);
		else
			make_small_tree(t, k);
		layer_file[k] = xasprintf("%s/layers/%d.sqfs", tmpdir, k);
		layer_id[k] = xasprintf("sha256:test%03d", k);
		squash(t, layer_file[k]);
	}
	/* A user's own image (the base tree plus a marker), and a copy the
	 * user cannot read. */
	assert_int_equal(sh("set -e; cp -a %s/0 %s/user; echo user-image > %s/user/marker", trees,
			    trees, trees),
			 0);
	_cleanup_free_ char *user = xasprintf("%s/trees/user", tmpdir);
	_cleanup_free_ char *user_sqfs = xasprintf("%s/user.sqfs", tmpdir);
	squash(user, user_sqfs);
	assert_int_equal(sh("set -e; cd %s; cp user.sqfs secret.sqfs; chmod 0600 secret.sqfs; "
			    "mkdir -m 0755 shared; echo hello > shared/hello; chmod 0644 shared/hello; "
			    "mkdir -m 0700 secret; echo secret > secret/file",
			    tmpdir),
			 0);
}

/* A cgroup v2 directory of our own, if the host has cgroup2 mounted. */
static void make_cgroup(void)
{
	struct mountinfo mi;
	cgroup_dir[0] = '\0';
	if (mountinfo_read(NULL, &mi, NULL) < 0)
		return;
	for (size_t i = 0; i < mi.count; i++)
		if (strcmp(mi.entries[i].fstype, "cgroup2") == 0) {
			snprintf(cgroup_dir, sizeof(cgroup_dir), "%s/alps-test-%d",
				 mi.entries[i].mountpoint, (int)getpid());
			break;
		}
	mountinfo_free(&mi);
	if (cgroup_dir[0] && mkdir(cgroup_dir, 0755) < 0)
		cgroup_dir[0] = '\0';
}

static bool fuse_available(void)
{
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return false;
	close(fd);
	return access("/usr/bin/squashfuse", X_OK) == 0;
}

static int group_setup(void **state)
{
	(void)state;
	is_root = geteuid() == 0;
	if (!is_root)
		return 0;
	log_init("test_ns", LOG_LVL_WARN, false);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/alps-test-ns-XXXXXX");
	if (!mkdtemp(tmpdir) || chmod(tmpdir, 0755) < 0)
		return -1;
	snprintf(run_dir, sizeof(run_dir), "%s/run", tmpdir);
	make_images();
	make_cgroup();
	fuse_ok = fuse_available();
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (!is_root)
		return 0;
	cleanup_everything();
	alps_error *err = NULL;
	if (access(run_dir, F_OK) == 0 && ns_run_dir_fini(run_dir, &err) < 0)
		fprintf(stderr, "teardown: %s\n", err->msg);
	alps_error_free(err);
	cleanup_everything();
	if (cgroup_dir[0])
		rmdir(cgroup_dir);
	for (int k = 0; k < MAX_LAYERS; k++) {
		free(layer_file[k]);
		free(layer_id[k]);
	}
	if (mounts_under(tmpdir) == 0)
		sh("rm -rf %s", tmpdir);
	else
		fprintf(stderr, "teardown: mounts remain under %s; left in place\n", tmpdir);
	return 0;
}

static int test_setup(void **state)
{
	(void)state;
	if (!is_root)
		return 0;
	/* The run directory's own mounts are part of every baseline. */
	alps_error *err = NULL;
	int rc = ns_run_dir_init(run_dir, &err);
	fail_on_error(rc, err, "ns_run_dir_init");
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	if (is_root)
		cleanup_everything();
	return 0;
}

/* --- preparing and running --- */

/* A job spec over the first n layers (base, top, then 2...). */
static struct job_spec spec_of(const char *job, size_t nlayers, bool writable)
{
	struct job_spec s = {
		.run_dir = run_dir,
		.job = job,
		.uid = NOBODY,
		.gid = NOBODY,
		.user_name = "nobody",
		.layers = (const char *const *)layer_file,
		.layer_ids = (const char *const *)layer_id,
		.nlayers = nlayers,
		.writable = writable,
		.workdir = "/work/dir",
	};
	return s;
}

static void prepare_ok(const struct job_spec *s)
{
	struct ns_result r;
	alps_error *err = NULL;
	OK_OR_FAIL(ns_prepare(s, &r, &err), err, "ns_prepare");
	ns_result_free(&r);
}

static void release_ok(const char *job)
{
	alps_error *err = NULL;
	OK_OR_FAIL(job_release(run_dir, job, &err), err, "job_release");
}

/* Run argv in the job as nobody; its wait status, and stdout+stderr in
 * *out (caller frees).  stdin_fd -1: /dev/null. */
static int run_in(const char *job, const char *workdir, const char *const *argv, char **out,
		  alps_error **err)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	struct exec_spec es = {
		.run_dir = run_dir, .job = job, .uid = NOBODY, .gid = NOBODY,
		.argv = argv, .envp = test_env, .stdin_fd = -1, .stdout_fd = p[1],
		.stderr_fd = p[1], .workdir = workdir,
	};
	pid_t pid;
	int rc = job_exec_spawn(&es, &pid, err);
	close(p[1]);
	if (rc < 0) {
		close(p[0]);
		*out = NULL;
		return -1;
	}
	*out = read_fd_all(p[0]);
	close(p[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

/* Run argv in the job: it must exit 0; its output. */
static char *run_ok(const char *job, const char *const *argv)
{
	char *out;
	alps_error *err = NULL;
	int st = run_in(job, NULL, argv, &out, &err);
	OK_OR_FAIL(st, err, argv[0]);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("%s exited with 0x%x: %s", argv[0], (unsigned)st, out);
	return out;
}

#define ARGV(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* --- tests --- */

/* A read-only 10-layer job: the image's files with overlay semantics, the
 * user, the workdir, nosuid, no_new_privs, /dev and /proc, then nothing
 * left after release. */
static void test_prepare_readonly(void **state)
{
	(void)state;
	size_t mounts0 = mounts_under(tmpdir), loops0 = loops_under(tmpdir, false);
	struct job_spec s = spec_of("ro", 10, false);
	struct ns_result r;
	alps_error *err = NULL;
	OK_OR_FAIL(ns_prepare(&s, &r, &err), err, "ns_prepare");
	assert_non_null(strstr(r.pin, "/jobs/ro/mnt"));
	for (size_t i = 0; i < r.nmounts; i++)
		assert_true(r.mounts[i].flags & MS_NOSUID);
	assert_string_equal(r.mounts[0].dst, "/");
	assert_string_equal(r.mounts[0].fstype, "overlay");
	ns_result_free(&r);
	/* One squashfs mount and one loop device per layer. */
	assert_int_equal(loops_under(tmpdir, false), loops0 + 10);

	char *out = run_ok("ro", ARGV("cat", "/etc/os-release"));
	assert_non_null(strstr(out, "alps-test-image"));
	free(out);
	out = run_ok("ro", ARGV("id", "-u"));
	assert_string_equal(out, "65534\n");
	free(out);
	out = run_ok("ro", ARGV("cat", "/layers/top", "/layers/5"));
	assert_string_equal(out, "9\n5\n");
	free(out);
	/* Whiteout and opaque directory. */
	out = run_ok("ro", ARGV("ls", "-A", "/opaque", "/etc"));
	assert_non_null(strstr(out, "new.txt"));
	assert_null(strstr(out, "old.txt"));
	assert_null(strstr(out, "deleted-by-upper"));
	assert_non_null(strstr(out, "os-release"));
	free(out);
	/* Read-only root. */
	alps_error *e2 = NULL;
	int st = run_in("ro", NULL, ARGV("touch", "/newfile"), &out, &e2);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	assert_non_null(strstr(out, "Read-only file system"));
	free(out);
	/* The workdir exists, belongs to the user, and is where we start. */
	st = run_in("ro", "/work/dir", ARGV("sh", "-c", "pwd; stat -c %u /work/dir"), &out, &e2);
	assert_int_equal(st, 0);
	assert_string_equal(out, "/work/dir\n65534\n");
	free(out);
	/* A setuid-root binary does not make anyone root. */
	out = run_ok("ro", ARGV("/usr/bin/id-suid", "-u"));
	assert_string_equal(out, "65534\n");
	free(out);
	out = run_ok("ro", ARGV("cat", "/proc/self/status"));
	assert_non_null(strstr(out, "NoNewPrivs:\t1"));
	free(out);
	/* The user is in /etc/passwd next to the image's entries. */
	out = run_ok("ro", ARGV("cat", "/etc/passwd", "/etc/group"));
	assert_non_null(strstr(out, "root:x:0:0:root:/root:/bin/sh\n"));
	assert_non_null(strstr(out, "nobody:x:65534:65534:"));
	assert_non_null(strstr(out, ":x:65534:"));
	free(out);
	out = run_ok("ro", ARGV("sh", "-c", "echo x > /dev/null && ls /dev/pts /dev/shm && echo ok"));
	assert_non_null(strstr(out, "ok"));
	free(out);

	/* A separate program joins through the pin. */
	out = sh_output("nsenter --mount=%s/jobs/ro/mnt cat /etc/os-release", run_dir);
	assert_non_null(strstr(out, "alps-test-image"));
	free(out);

	release_ok("ro");
	assert_int_equal(mounts_under(tmpdir), mounts0);
	assert_int_equal(loops_under(tmpdir, false), loops0);
	_cleanup_free_ char *dir = xasprintf("%s/jobs/ro", run_dir);
	assert_int_equal(access(dir, F_OK), -1);
	/* Releasing again, or a job never seen, is fine. */
	release_ok("ro");
	release_ok("never-prepared");
}

static void test_prepare_writable(void **state)
{
	(void)state;
	struct job_spec s = spec_of("rw", 3, true);
	prepare_ok(&s);
	char *out = run_ok("rw", ARGV("sh", "-c", "touch /tmp/x /work/dir/y && echo ok"));
	assert_string_equal(out, "ok\n");
	free(out);
	/* Root writes need root; the upper layer takes them (nobody cannot
	 * write /, so check the copy-up through a file the user owns). */
	out = run_ok("rw", ARGV("sh", "-c", "echo data > /work/dir/f && cat /work/dir/f"));
	assert_string_equal(out, "data\n");
	free(out);
	out = sh_output("nsenter --mount=%s/jobs/rw/mnt sh -c 'rm /etc/os-release && "
			"touch /rootfile && ls /work/dir /rootfile && cat /etc/os-release 2>&1'",
			run_dir);
	assert_non_null(strstr(out, "/rootfile"));
	assert_non_null(strstr(out, "No such file"));
	free(out);
	/* The layer underneath is untouched. */
	out = sh_output("unsquashfs -cat %s etc/os-release", layer_file[1]);
	assert_non_null(strstr(out, "alps-test-image"));
	free(out);
	release_ok("rw");
}

static void test_user_mounts(void **state)
{
	(void)state;
	_cleanup_free_ char *shared = xasprintf("%s/shared", tmpdir);
	_cleanup_free_ char *secret = xasprintf("%s/secret", tmpdir);
	struct user_mount ok[] = { { USER_MOUNT_BIND, shared, "/data", USER_MOUNT_RO } };
	const char *devices[] = { "/dev/loop-control" };
	struct job_spec s = spec_of("um", 2, false);
	s.mounts = ok;
	s.nmounts = 1;
	s.devices = devices;
	s.ndevices = 1;
	prepare_ok(&s);
	char *out = run_ok("um", ARGV("cat", "/data/hello"));
	assert_string_equal(out, "hello\n");
	free(out);
	alps_error *err = NULL;
	int st = run_in("um", NULL, ARGV("touch", "/data/x"), &out, &err);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	assert_non_null(strstr(out, "Read-only file system"));
	free(out);
	out = run_ok("um", ARGV("stat", "-c", "%F %t:%T", "/dev/loop-control"));
	assert_string_equal(out, "character special file a:ed\n");
	free(out);
	release_ok("um");

	/* A workdir inside host storage is made with the user's rights. */
	_cleanup_free_ char *mine = xasprintf("%s/nobody-dir", tmpdir);
	assert_int_equal(mkdir(mine, 0755), 0);
	assert_int_equal(chown(mine, NOBODY, NOBODY), 0);
	struct user_mount wd[] = { { USER_MOUNT_BIND, mine, "/home/u", 0 },
				   { USER_MOUNT_BIND, shared, "/data", 0 } };
	s = spec_of("wd", 2, false);
	s.mounts = wd;
	s.nmounts = 2;
	s.workdir = "/home/u/a/b";
	prepare_ok(&s);
	struct stat st_wd;
	_cleanup_free_ char *made = xasprintf("%s/a/b", mine);
	assert_int_equal(stat(made, &st_wd), 0);
	assert_int_equal(st_wd.st_uid, NOBODY);
	release_ok("wd");
	s.workdir = "/data/not-mine";
	struct ns_result r;
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_int_equal(err->code, ALPS_E_PERMISSION);
	assert_non_null(strstr(err->msg, "/data/not-mine"));
	cleanup_errorp(&err);
	_cleanup_free_ char *not_made = xasprintf("%s/not-mine", shared);
	assert_int_equal(access(not_made, F_OK), -1);

	/* A directory the user cannot read is refused, and nothing stays. */
	size_t mounts0 = mounts_under(tmpdir), loops0 = loops_under(tmpdir, false);
	struct user_mount bad[] = { { USER_MOUNT_BIND, secret, "/secret", 0 } };
	s = spec_of("um2", 2, false);
	s.mounts = bad;
	s.nmounts = 1;
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_int_equal(err->code, ALPS_E_PERMISSION);
	assert_non_null(strstr(err->msg, secret));
	assert_non_null(strstr(err->msg, "uid 65534"));
	cleanup_errorp(&err);
	assert_int_equal(mounts_under(tmpdir), mounts0);
	assert_int_equal(loops_under(tmpdir, false), loops0);
	_cleanup_free_ char *dir = xasprintf("%s/jobs/um2", run_dir);
	assert_int_equal(access(dir, F_OK), -1);
}

/* A symlink in the image pointing out of the container (../../../etc)
 * cannot aim a mount at the host: destinations resolve inside its root. */
static void test_symlink_stays_inside(void **state)
{
	(void)state;
	_cleanup_free_ char *shared = xasprintf("%s/shared", tmpdir);
	struct user_mount m[] = { { USER_MOUNT_BIND, shared, "/escape/alps-sub", USER_MOUNT_RO } };
	struct job_spec s = spec_of("esc", 2, false);
	s.mounts = m;
	s.nmounts = 1;
	size_t mounts0 = mounts_under(tmpdir);
	prepare_ok(&s);
	/* Nothing appeared on the host... */
	assert_int_equal(access("/etc/alps-sub", F_OK), -1);
	assert_int_equal(mounts_under(tmpdir), mounts0 + 3);   /* 2 layers, the pin */
	/* ...and inside, the link leads to the mount in the container's /etc. */
	char *out = run_ok("esc", ARGV("cat", "/etc/alps-sub/hello", "/escape/alps-sub/hello"));
	assert_string_equal(out, "hello\nhello\n");
	free(out);
	release_ok("esc");

	/* Links into /proc or /dev do not take a user's mount there. */
	static const char *const into_system[] = { "/proclink/kernel", "/home/devlink/shm" };
	for (size_t i = 0; i < ARRAY_SIZE(into_system); i++) {
		struct user_mount sys_m[] = { { USER_MOUNT_BIND, shared, into_system[i], 0 } };
		s.mounts = sys_m;
		struct ns_result r0;
		alps_error *e0 = NULL;
		assert_int_equal(ns_prepare(&s, &r0, &e0), -1);
		assert_non_null(strstr(e0->msg, "belongs to the system"));
		assert_non_null(strstr(e0->msg, into_system[i]));
		alps_error_free(e0);
	}
	assert_int_equal(mounts_under(tmpdir), mounts0);

	/* Below a file: refused, naming the place. */
	struct user_mount d[] = { { USER_MOUNT_BIND, shared, "/layers/top/x", 0 } };
	s.mounts = d;
	struct ns_result r;
	alps_error *err = NULL;
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_non_null(strstr(err->msg, "/layers/top"));
	cleanup_errorp(&err);
	assert_int_equal(mounts_under(tmpdir), mounts0);
}

/* Mount points are created only on the container's own file systems: a
 * destination missing inside a bind of host storage is refused before
 * anything is created there (issue 8, item 1); one on the root or in the
 * job's /tmp is made; one that exists inside the bind is mounted over. */
static void test_mount_points_not_on_host(void **state)
{
	(void)state;
	_cleanup_free_ char *shared = xasprintf("%s/shared", tmpdir);
	_cleanup_free_ char *made = xasprintf("%s/created", shared);
	static const char *const dsts[] = { "/h/created", "/h/new/sub", "/h/hello/x" };
	size_t mounts0 = mounts_under(tmpdir);
	for (size_t i = 0; i < ARRAY_SIZE(dsts); i++) {
		struct user_mount m[] = { { USER_MOUNT_BIND, shared, "/h", 0 },
					  { USER_MOUNT_BIND, "/etc/hostname", dsts[i], 0 } };
		struct job_spec s = spec_of("mp", 2, false);
		s.mounts = m;
		s.nmounts = 2;
		struct ns_result r;
		alps_error *err = NULL;
		assert_int_equal(ns_prepare(&s, &r, &err), -1);
		assert_non_null(strstr(err->msg, dsts[i]));
		if (i < 2)
			assert_non_null(strstr(err->msg, "own file system"));
		alps_error_free(err);
	}
	assert_int_equal(access(made, F_OK), -1);
	_cleanup_free_ char *sub = xasprintf("%s/new", shared);
	assert_int_equal(access(sub, F_OK), -1);
	assert_int_equal(mounts_under(tmpdir), mounts0);

	struct user_mount ok[] = { { USER_MOUNT_BIND, shared, "/h", 0 },
				   { USER_MOUNT_BIND, "/etc/hostname", "/h/hello", 0 },
				   { USER_MOUNT_BIND, shared, "/tmp/a/b", USER_MOUNT_RO },
				   { USER_MOUNT_BIND, shared, "/new/dir", USER_MOUNT_RO } };
	struct job_spec s = spec_of("mp", 2, false);
	s.mounts = ok;
	s.nmounts = ARRAY_SIZE(ok);
	prepare_ok(&s);
	char *out = run_ok("mp", ARGV("cat", "/tmp/a/b/hello", "/new/dir/hello"));
	assert_string_equal(out, "hello\nhello\n");
	free(out);
	release_ok("mp");
	_cleanup_free_ char *hello = xasprintf("%s/hello", shared);
	out = sh_output("cat %s", hello);
	assert_string_equal(out, "hello\n");
	free(out);
}

/* An image whose /etc/passwd is a link to a root-only sysfs file: the
 * link is never followed (issue 8, item 13). */
static void test_etc_passwd_link_refused(void **state)
{
	(void)state;
	_cleanup_free_ char *tree = xasprintf("%s/trees/evil", tmpdir);
	_cleanup_free_ char *evil = xasprintf("%s/layers/evil.sqfs", tmpdir);
	assert_int_equal(sh("set -e; mkdir -p %s/etc; ln -sf /sys/kernel/notes %s/etc/passwd", tree,
			    tree),
			 0);
	squash(tree, evil);
	const char *files[] = { layer_file[0], evil };
	const char *ids[] = { layer_id[0], "sha256:evil" };
	struct job_spec s = spec_of("evil", 2, false);
	s.layers = files;
	s.layer_ids = ids;
	size_t mounts0 = mounts_under(tmpdir);
	struct ns_result r;
	alps_error *err = NULL;
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_non_null(strstr(err->msg, "/etc/passwd is a symbolic link"));
	alps_error_free(err);
	assert_int_equal(mounts_under(tmpdir), mounts0);
}

static void test_squashfuse(void **state)
{
	(void)state;
	_cleanup_free_ char *user = xasprintf("%s/user.sqfs", tmpdir);
	_cleanup_free_ char *secret = xasprintf("%s/secret.sqfs", tmpdir);
	struct job_spec s = spec_of("fuse", 0, false);
	s.image_sqsh = user;
	struct user_mount m[] = { { USER_MOUNT_SQSH, user, "/tools", 0 } };
	s.mounts = m;
	s.nmounts = 1;
	struct ns_result r;
	alps_error *err = NULL;
	size_t procs0 = squashfuse_procs(), mounts0 = mounts_under(tmpdir);
	int rc = ns_prepare(&s, &r, &err);
	if (!fuse_ok) {
		assert_int_equal(rc, -1);
		assert_int_equal(err->code, ALPS_E_NOT_IMPLEMENTED);
		assert_non_null(strstr(err->msg, "need squashfuse and /dev/fuse"));
		alps_error_free(err);
		skip();
	}
	OK_OR_FAIL(rc, err, "ns_prepare");
	ns_result_free(&r);
	assert_int_equal(squashfuse_procs(), procs0 + 2);
	char *out = run_ok("fuse", ARGV("cat", "/marker", "/tools/marker", "/etc/os-release"));
	assert_string_equal(out, "user-image\nuser-image\nNAME=\"alps-base\"\n");
	free(out);
	out = run_ok("fuse", ARGV("id", "-u"));
	assert_string_equal(out, "65534\n");
	free(out);
	/* No squashfs mount of the user's file in the kernel. */
	out = sh_output("nsenter --mount=%s/jobs/fuse/mnt cat /proc/self/mountinfo", run_dir);
	assert_null(strstr(out, " squashfs "));
	assert_non_null(strstr(out, "fuse.squashfuse"));
	free(out);
	release_ok("fuse");
	assert_int_equal(squashfuse_procs(), procs0);

	/* A failure after squashfuse started: it does not survive the prepare. */
	_cleanup_free_ char *secret_dir = xasprintf("%s/secret", tmpdir);
	struct user_mount late[] = { { USER_MOUNT_SQSH, user, "/tools", 0 },
				     { USER_MOUNT_BIND, secret_dir, "/z/secret", 0 } };
	s.mounts = late;
	s.nmounts = 2;
	size_t fds0 = open_fds();
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_int_equal(err->code, ALPS_E_PERMISSION);
	cleanup_errorp(&err);
	assert_int_equal(squashfuse_procs(), procs0);
	assert_int_equal(mounts_under(tmpdir), mounts0);
	assert_int_equal(open_fds(), fds0);

	/* A file the user cannot read never reaches squashfuse. */
	s.image_sqsh = secret;
	s.nmounts = 0;
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_int_equal(err->code, ALPS_E_PERMISSION);
	assert_non_null(strstr(err->msg, secret));
	cleanup_errorp(&err);
	/* Not a squashfs at all: squashfuse says so, the prepare fails clean. */
	s.image_sqsh = "/etc/hostname";
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_non_null(strstr(err->msg, "squashfuse"));
	cleanup_errorp(&err);
	assert_int_equal(squashfuse_procs(), procs0);
	assert_int_equal(mounts_under(tmpdir), mounts0);
}

static void check_100_layers(const char *job)
{
	struct job_spec s = spec_of(job, 100, false);
	prepare_ok(&s);
	char *out = run_ok(job, ARGV("cat", "/layers/top", "/layers/2", "/layers/57", "/etc/os-release"));
	assert_string_equal(out, "99\n2\n57\nNAME=\"alps-test-image\"\nID=alpstest\n");
	free(out);
	out = run_ok(job, ARGV("ls", "/layers"));
	size_t lines = 0;
	for (char *p = out; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 99);    /* 2..99 and top */
	free(out);
	release_ok(job);
}

static void test_100_layers(void **state)
{
	(void)state;
	size_t loops0 = loops_under(tmpdir, false);
	check_100_layers("deep");
	/* The fallback for kernels without "lowerdir+": short paths. */
	apply_overlay_force_legacy(true);
	check_100_layers("deep-legacy");
	apply_overlay_force_legacy(false);
	assert_int_equal(loops_under(tmpdir, false), loops0);
}

/* Processes in the job die with it, those outside do not. */
static void test_release_kills(void **state)
{
	(void)state;
	struct job_spec s = spec_of("kill", 2, false);
	prepare_ok(&s);
	int in[2];
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	/* One started by us, one by nsenter, one on the host: all wait on
	 * the pipe. */
	struct exec_spec es = {
		.run_dir = run_dir, .job = "kill", .uid = NOBODY, .gid = NOBODY,
		.argv = ARGV("cat"), .envp = test_env, .stdin_fd = in[0], .stdout_fd = -1,
		.stderr_fd = -1,
	};
	pid_t inside, entered, host;
	alps_error *err = NULL;
	OK_OR_FAIL(job_exec_spawn(&es, &inside, &err), err, "job_exec_spawn");
	_cleanup_free_ char *pin = xasprintf("--mount=%s/jobs/kill/mnt", run_dir);
	entered = fork();
	if (entered == 0) {
		dup2(in[0], 0);
		execlp("nsenter", "nsenter", pin, "cat", (char *)NULL);
		_exit(127);
	}
	host = fork();
	if (host == 0) {
		dup2(in[0], 0);
		execlp("cat", "cat", (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	usleep(200 * 1000);     /* let nsenter get in */
	release_ok("kill");
	int st;
	assert_int_equal(waitpid(inside, &st, 0), inside);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	assert_int_equal(waitpid(entered, &st, 0), entered);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	assert_int_equal(waitpid(host, &st, WNOHANG), 0);   /* still running */
	close(in[1]);
	assert_int_equal(waitpid(host, &st, 0), host);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_exec(void **state)
{
	(void)state;
	size_t fds0 = open_fds();
	struct job_spec s = spec_of("ex", 2, false);
	prepare_ok(&s);
	char *out;
	alps_error *err = NULL;
	assert_int_equal(run_in("ex", NULL, ARGV("no-such-command"), &out, &err), -1);
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	assert_non_null(strstr(err->msg, "no-such-command"));
	cleanup_errorp(&err);
	assert_int_equal(run_in("ex", "/root/../nowhere", ARGV("id"), &out, &err), -1);
	assert_non_null(strstr(err->msg, "workdir"));
	cleanup_errorp(&err);
	/* /root is 0755 in the image but a file is not a directory. */
	assert_int_equal(run_in("ex", "/etc/passwd", ARGV("id"), &out, &err), -1);
	assert_int_equal(err->errnum, ENOTDIR);
	cleanup_errorp(&err);
	assert_int_equal(run_in("unknown-job", NULL, ARGV("id"), &out, &err), -1);
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	cleanup_errorp(&err);
	/* Only the given fds reach the process. */
	out = run_ok("ex", ARGV("ls", "/proc/self/fd"));
	assert_string_equal(out, "0\n1\n2\n3\n");      /* 3: ls's own directory */
	free(out);
	/* The environment is exactly the one given. */
	out = run_ok("ex", ARGV("sh", "-c", "echo $PATH:$HOME:${USER:-none}"));
	assert_string_equal(out, "/usr/bin:/bin:/:none\n");
	free(out);
	out = run_ok("ex", ARGV("id", "-G"));
	assert_string_equal(out, "65534\n");
	free(out);

	if (cgroup_dir[0]) {
		/* The caller's cgroups (here the test's own): the process lands
		 * in the job's cgroup below the caller's unified one. */
		int in[2];
		assert_int_equal(pipe2(in, O_CLOEXEC), 0);
		const gid_t groups[] = { 100 };
		struct exec_peer peer;
		int self = sys_pidfd_open(getpid(), 0);
		OK_OR_FAIL(exec_peer_read(self, &peer, &err), err, "exec_peer_read");
		close(self);
		struct exec_spec es = {
			.run_dir = run_dir, .job = "ex", .uid = NOBODY, .gid = NOBODY,
			.groups = groups, .ngroups = 1, .peer = &peer, .argv = ARGV("cat"),
			.envp = test_env, .stdin_fd = in[0], .stdout_fd = -1, .stderr_fd = -1,
		};
		pid_t pid;
		OK_OR_FAIL(job_exec_spawn(&es, &pid, &err), err, "job_exec_spawn");
		exec_peer_free(&peer);
		close(in[0]);
		_cleanup_free_ char *cg = sh_output("cat /proc/%d/cgroup", (int)pid);
		assert_non_null(strstr(cg, "/alps-job-ex\n"));
		_cleanup_free_ char *ids = sh_output("grep -E '^(Uid|Gid|Groups)' /proc/%d/status", (int)pid);
		assert_non_null(strstr(ids, "Uid:\t65534\t65534\t65534\t65534"));
		assert_non_null(strstr(ids, "Groups:\t100"));
		close(in[1]);
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
	}
	release_ok("ex");
	assert_int_equal(open_fds(), fds0);
}

/* Worker threads of a daemon prepare, enter and release jobs at once,
 * sharing layers. */
struct worker {
	pthread_t thread;
	int n;
	char failure[512];
};

static int worker_cycle(struct worker *w, int i)
{
	char job[32];
	snprintf(job, sizeof(job), "par-%d-%d", w->n, i);
	struct job_spec s = spec_of(job, 3 + (size_t)(w->n % 2), w->n % 2);
	struct ns_result r;
	alps_error *err = NULL;
	pid_t pid;
	int st = -1;
	struct exec_spec es = {
		.run_dir = run_dir, .job = job, .uid = NOBODY, .gid = NOBODY,
		.argv = ARGV("cat", "/etc/os-release"), .envp = test_env, .stdin_fd = -1,
		.stdout_fd = -1, .stderr_fd = -1,
	};
	if (ns_prepare(&s, &r, &err) == 0) {
		ns_result_free(&r);
		if (job_exec_spawn(&es, &pid, &err) == 0 && waitpid(pid, &st, 0) == pid && st != 0)
			snprintf(w->failure, sizeof(w->failure), "%s: cat exited 0x%x", job, (unsigned)st);
		if (!err)
			job_release(run_dir, job, &err);
	}
	if (err)
		snprintf(w->failure, sizeof(w->failure), "%s: %s", job, err->msg);
	alps_error_free(err);
	return w->failure[0] ? -1 : 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < 5; i++)
		if (worker_cycle(w, i) < 0)
			break;
	return NULL;
}

static void test_concurrent(void **state)
{
	(void)state;
	size_t loops0 = loops_under(tmpdir, false), mounts0 = mounts_under(tmpdir);
	struct worker w[4];
	memset(w, 0, sizeof(w));
	for (int t = 0; t < 4; t++) {
		w[t].n = t;
		assert_int_equal(pthread_create(&w[t].thread, NULL, worker_main, &w[t]), 0);
	}
	for (int t = 0; t < 4; t++)
		assert_int_equal(pthread_join(w[t].thread, NULL), 0);
	for (int t = 0; t < 4; t++)
		if (w[t].failure[0])
			fail_msg("worker %d: %s", t, w[t].failure);
	unsigned refs;
	bool mounted;
	alps_error *err = NULL;
	for (int k = 0; k < 4; k++) {
		OK_OR_FAIL(layer_mount_state(run_dir, layer_id[k], &refs, &mounted, &err), err, "state");
		assert_int_equal(refs, 0);
		assert_false(mounted);
	}
	assert_int_equal(loops_under(tmpdir, false), loops0);
	assert_int_equal(mounts_under(tmpdir), mounts0);
}

static void test_prepare_errors(void **state)
{
	(void)state;
	size_t mounts0 = mounts_under(tmpdir), loops0 = loops_under(tmpdir, false);
	size_t fds0 = open_fds();
	alps_error *err = NULL;
	struct ns_result r;
	/* A layer file that is not there: named, and the layers mounted
	 * before it are released. */
	const char *files[] = { layer_file[0], layer_file[1], "/nonexistent/layer.sqfs" };
	const char *ids[] = { layer_id[0], layer_id[1], "sha256:missing" };
	struct job_spec s = spec_of("bad", 3, false);
	s.layers = files;
	s.layer_ids = ids;
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_non_null(strstr(err->msg, "/nonexistent/layer.sqfs"));
	assert_non_null(strstr(err->msg, "sha256:missing"));
	cleanup_errorp(&err);
	assert_int_equal(mounts_under(tmpdir), mounts0);
	assert_int_equal(loops_under(tmpdir, false), loops0);
	assert_int_equal(open_fds(), fds0);
	/* A file that is not a squashfs. */
	files[2] = "/etc/hostname";
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_non_null(strstr(err->msg, "squashfs"));
	cleanup_errorp(&err);
	assert_int_equal(mounts_under(tmpdir), mounts0);
	assert_int_equal(loops_under(tmpdir, false), loops0);

	/* Twice the same job. */
	s = spec_of("twice", 2, false);
	prepare_ok(&s);
	assert_int_equal(ns_prepare(&s, &r, &err), -1);
	assert_int_equal(err->code, ALPS_E_EXISTS);
	cleanup_errorp(&err);
	release_ok("twice");

	/* A leftover directory of a crashed prepare is cleaned up. */
	_cleanup_free_ char *stale = xasprintf("%s/jobs/stale", run_dir);
	assert_int_equal(mkdir(stale, 0700), 0);
	s = spec_of("stale", 2, false);
	prepare_ok(&s);
	release_ok("stale");
	assert_int_equal(mounts_under(tmpdir), mounts0);
}

/* Jobs share layer mounts; the count goes up and down with them. */
static void test_layer_refcount(void **state)
{
	(void)state;
	alps_error *err = NULL;
	unsigned refs;
	bool mounted;
	size_t loops0 = loops_under(tmpdir, false);
	struct job_spec a = spec_of("share-a", 3, false), b = spec_of("share-b", 2, true);
	prepare_ok(&a);
	prepare_ok(&b);
	OK_OR_FAIL(layer_mount_state(run_dir, layer_id[0], &refs, &mounted, &err), err, "state");
	assert_int_equal(refs, 2);
	assert_true(mounted);
	OK_OR_FAIL(layer_mount_state(run_dir, layer_id[2], &refs, &mounted, &err), err, "state");
	assert_int_equal(refs, 1);
	assert_int_equal(loops_under(tmpdir, false), loops0 + 3);

	/* Recovery sees the two jobs, a stale directory, and a wrong count. */
	_cleanup_free_ char *stale = xasprintf("%s/jobs/crashed", run_dir);
	assert_int_equal(mkdir(stale, 0700), 0);
	OK_OR_FAIL(layer_mount_set_refs(run_dir, layer_id[1], 7, &err), err, "set_refs");
	char **pinned;
	size_t npinned;
	OK_OR_FAIL(job_list_pinned(run_dir, &pinned, &npinned, &err), err, "list");
	assert_int_equal(npinned, 2);
	job_list_free(pinned);
	struct job_reconcile rec;
	OK_OR_FAIL(job_reconcile(run_dir, &rec, &err), err, "reconcile");
	assert_int_equal(rec.npinned, 2);
	assert_int_equal(rec.nstale, 1);
	assert_string_equal(rec.stale[0], "crashed");
	assert_int_equal(rec.nlayers, 3);
	for (size_t i = 0; i < rec.nlayers; i++) {
		assert_true(rec.layers[i].mounted);
		if (strcmp(rec.layers[i].id, layer_id[1]) == 0) {
			assert_int_equal(rec.layers[i].refs, 7);
			assert_int_equal(rec.layers[i].users, 2);
		}
	}
	OK_OR_FAIL(job_reconcile_apply(run_dir, &rec, &err), err, "reconcile_apply");
	job_reconcile_free(&rec);
	assert_int_equal(access(stale, F_OK), -1);
	OK_OR_FAIL(layer_mount_state(run_dir, layer_id[1], &refs, &mounted, &err), err, "state");
	assert_int_equal(refs, 2);

	release_ok("share-a");
	OK_OR_FAIL(layer_mount_state(run_dir, layer_id[0], &refs, &mounted, &err), err, "state");
	assert_int_equal(refs, 1);
	OK_OR_FAIL(layer_mount_state(run_dir, layer_id[2], &refs, &mounted, &err), err, "state");
	assert_int_equal(refs, 0);
	assert_false(mounted);
	/* b still works with its layers. */
	char *out = run_ok("share-b", ARGV("cat", "/layers/top"));
	assert_string_equal(out, "top\n");
	free(out);
	release_ok("share-b");
	assert_int_equal(loops_under(tmpdir, false), loops0);

	/* The acquire/release calls on their own; releasing too often is fine. */
	char *mp;
	OK_OR_FAIL(layer_mount_acquire(run_dir, layer_id[0], layer_file[0], &mp, &err), err,
		      "acquire");
	_cleanup_free_ char *osr = xasprintf("%s/etc/os-release", mp);
	assert_int_equal(access(osr, R_OK), 0);
	free(mp);
	OK_OR_FAIL(layer_mount_release(run_dir, layer_id[0], &err), err, "release");
	OK_OR_FAIL(layer_mount_release(run_dir, layer_id[0], &err), err, "release");
	assert_int_equal(loops_under(tmpdir, false), loops0);
	assert_int_equal(layer_mount_acquire(run_dir, "../x", layer_file[0], &mp, &err), -1);
	cleanup_errorp(&err);
}

/* The layer directories are root's alone. */
static void test_layers_private(void **state)
{
	(void)state;
	struct job_spec s = spec_of("priv", 2, false);
	prepare_ok(&s);
	struct stat st;
	_cleanup_free_ char *layers = xasprintf("%s/layers", run_dir);
	assert_int_equal(stat(layers, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(sh("setpriv --reuid=%d --regid=%d --clear-groups cat %s/%s/root/etc/os-release "
			    "2>/dev/null",
			    NOBODY, NOBODY, layers, layer_id[1]),
			 1);
	/* Layer mounts: read-only, nosuid, nodev. */
	struct mountinfo mi;
	assert_int_equal(mountinfo_read(NULL, &mi, NULL), 0);
	size_t n = 0;
	for (size_t i = 0; i < mi.count; i++) {
		if (!path_is_under(mi.entries[i].mountpoint, layers) ||
		    strcmp(mi.entries[i].fstype, "squashfs") != 0)
			continue;
		n++;
		assert_true(mountinfo_has_option(mi.entries[i].options, "ro"));
		assert_true(mountinfo_has_option(mi.entries[i].options, "nosuid"));
		assert_true(mountinfo_has_option(mi.entries[i].options, "nodev"));
	}
	mountinfo_free(&mi);
	assert_int_equal(n, 2);
	release_ok("priv");
}

/* 50 prepare/exec/release cycles leave no mount, loop device or fd. */
static void test_cycles(void **state)
{
	(void)state;
	/* Warm up: the run directory's own mounts exist from here on. */
	struct job_spec s = spec_of("cycle", 10, false);
	prepare_ok(&s);
	release_ok("cycle");
	size_t lines0 = mountinfo_lines(), mounts0 = mounts_under(tmpdir);
	size_t loops0 = loops_under(tmpdir, false), fds0 = open_fds();
	_cleanup_free_ char *losetup0 = sh_output("losetup -a | wc -l");
	for (int i = 0; i < CYCLES; i++) {
		s.writable = i % 2;
		prepare_ok(&s);
		char *out = run_ok("cycle", ARGV("id", "-u"));
		assert_string_equal(out, "65534\n");
		free(out);
		release_ok("cycle");
	}
	/* All of our mounts are below tmpdir; other mounts on the machine
	 * (other tests running) may come and go meanwhile. */
	size_t lines1 = mountinfo_lines();
	_cleanup_free_ char *losetup1 = sh_output("losetup -a | wc -l");
	losetup0[strcspn(losetup0, "\n")] = losetup1[strcspn(losetup1, "\n")] = '\0';
	printf("after %d cycles: mountinfo %zu -> %zu lines (%zu -> %zu below the test's directory), "
	       "losetup -a %s -> %s (%zu -> %zu of ours), fds %zu -> %zu\n",
	       CYCLES, lines0, lines1, mounts0, mounts_under(tmpdir), losetup0, losetup1, loops0,
	       loops_under(tmpdir, false), fds0, open_fds());
	assert_int_equal(mounts_under(tmpdir), mounts0);
	assert_int_equal(loops_under(tmpdir, false), loops0);
	assert_int_equal(open_fds(), fds0);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double p50_ms(uint64_t *ns, size_t n)
{
	qsort(ns, n, sizeof(*ns), cmp_u64);
	return (double)ns[n / 2] / 1e6;
}

/* Prepare, exec (to the child's exit) and release of a 10-layer image. */
static void test_timings(void **state)
{
	(void)state;
	uint64_t prep[TIMED_RUNS], exec[TIMED_RUNS], rel[TIMED_RUNS];
	struct job_spec s = spec_of("timed", 10, false);
	for (int i = 0; i < TIMED_RUNS; i++) {
		uint64_t t0 = now_monotonic_ns();
		prepare_ok(&s);
		uint64_t t1 = now_monotonic_ns();
		alps_error *err = NULL;
		struct exec_spec es = {
			.run_dir = run_dir, .job = "timed", .uid = NOBODY, .gid = NOBODY,
			.argv = ARGV("id", "-u"), .envp = test_env, .stdin_fd = -1,
			.stdout_fd = -1, .stderr_fd = -1,
		};
		pid_t pid;
		OK_OR_FAIL(job_exec_spawn(&es, &pid, &err), err, "job_exec_spawn");
		uint64_t t2 = now_monotonic_ns();
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_int_equal(st, 0);
		uint64_t t3 = now_monotonic_ns();
		release_ok("timed");
		uint64_t t4 = now_monotonic_ns();
		prep[i] = t1 - t0;
		exec[i] = t2 - t1;
		rel[i] = t4 - t3;
	}
	printf("timings (10-layer image, p50 of %d runs): prepare %.2f ms, exec spawn %.2f ms, "
	       "release %.2f ms\n",
	       TIMED_RUNS, p50_ms(prep, TIMED_RUNS), p50_ms(exec, TIMED_RUNS),
	       p50_ms(rel, TIMED_RUNS));
}

static void test_needs_root(void **state)
{
	(void)state;
	skip();
}

int main(void)
{
	/* alps-enter of this build tree (make check runs at its top). */
	if (!getenv("ALPS_ENTER_PATH")) {
		const char *b = getenv("ALPS_BUILDDIR");
		_cleanup_free_ char *p = xasprintf("%s/libexec/alps-enter", b ? b : ".");
		setenv("ALPS_ENTER_PATH", p, 1);
	}
	/* ns_prepare() runs the helper program this build made. */
	setenv("ALPS_NSHELPER", ALPS_TEST_NSHELPER, 0);
	bool tools = system("command -v mksquashfs unsquashfs nsenter >/dev/null") == 0;
	if (geteuid() != 0 || !tools) {
		const struct CMUnitTest skipped[] = { cmocka_unit_test(test_needs_root) };
		fprintf(stderr, "test_ns: %s\n", tools ? "not root; real namespaces need root"
						       : "needs mksquashfs (squashfs-tools) and nsenter");
		return cmocka_run_group_tests_name("ns", skipped, NULL, NULL);
	}
#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)
	const struct CMUnitTest tests[] = {
		T(test_prepare_readonly), T(test_prepare_writable), T(test_user_mounts),
		T(test_symlink_stays_inside), T(test_mount_points_not_on_host),
		T(test_etc_passwd_link_refused), T(test_squashfuse), T(test_100_layers),
		T(test_release_kills), T(test_exec), T(test_concurrent), T(test_prepare_errors),
		T(test_layer_refcount), T(test_layers_private), T(test_cycles), T(test_timings),
	};
	/* ALPS_TEST_FILTER=test_cycles runs one test (cmocka's glob). */
	if (getenv("ALPS_TEST_FILTER"))
		cmocka_set_test_filter(getenv("ALPS_TEST_FILTER"));
	return cmocka_run_group_tests_name("ns", tests, group_setup, group_teardown);
}
