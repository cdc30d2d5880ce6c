/* alps-importer: pyxis's importer= interface served from the node's alps
 * cache (NVIDIA/pyxis importers/README.md), so that pyxis and the CSCS
 * Container Engine use the images alpsd already holds.
 *
 *   alps-importer get URI     pull URI through alpsd (a cached image is not
 *                             fetched again), export it as one squashfs file
 *                             and print that file's absolute path on stdout
 *   alps-importer release     remove this job step's file; idempotent
 *
 * pyxis runs it as the job's user (after setgroups, setregid, setreuid),
 * stdin /dev/null, stdout a pipe it reads the path from, stderr its log,
 * with the enroot environment plus PYXIS_RUNTIME_PATH, PYXIS_VERSION and
 * Slurm's SLURM_JOB_UID, SLURM_JOB_ID, SLURM_STEP_ID.  The file is
 * $PYXIS_RUNTIME_PATH/$SLURM_JOB_UID/alps-$SLURM_JOB_ID.$SLURM_STEP_ID.sqsh:
 * pyxis makes that directory (0700, the user's) before it calls get; the
 * file is the user's own, written by alpsd to the fd `alps export` passes,
 * so a private image stays private.  release is called twice (after
 * `enroot create`, and at task cleanup) and may follow a get that was
 * SIGKILLed: it removes the file if it is there, and succeeds if not.
 *
 * The work is done by the alps client (`alps pull`, `alps export`), run as
 * children that die with this process (PR_SET_PDEATHSIG), so a SIGKILLed
 * get does not leave an export running that would create the file after
 * release removed it.  The client is $ALPS_CLIENT if set (a build tree),
 * else the installed one; $ALPS_SOCKET reaches it as for any alps call. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef ALPS_BINDIR
#define ALPS_BINDIR "/usr/bin"
#endif

#define ID_MAX 64

__attribute__((format(printf, 1, 2)))
static int fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "alps-importer: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* A job or step id: what Slurm puts there, nothing that could name a
 * path of its own. */
static bool id_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > ID_MAX)
		return false;
	return strspn(s, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_+") == n;
}

struct step {
	char dir[4096];         /* $PYXIS_RUNTIME_PATH/$SLURM_JOB_UID */
	char name[2 * ID_MAX + 16];
	char path[4096 + 2 * ID_MAX + 16];
};

/* The step's file from the environment; refuses what would let one user
 * write, or remove, another's. */
static int step_from_env(struct step *s)
{
	const char *rt = getenv("PYXIS_RUNTIME_PATH"), *uid = getenv("SLURM_JOB_UID");
	const char *job = getenv("SLURM_JOB_ID"), *step = getenv("SLURM_STEP_ID");
	if (!rt || rt[0] != '/')
		return fail("PYXIS_RUNTIME_PATH is not an absolute path (%s)", rt ? rt : "unset");
	if (!uid || !id_ok(uid) || strtoul(uid, NULL, 10) != (unsigned long)getuid() ||
	    strspn(uid, "0123456789") != strlen(uid))
		return fail("SLURM_JOB_UID (%s) is not the uid this runs as", uid ? uid : "unset");
	if (!id_ok(job) || !id_ok(step))
		return fail("%s", "SLURM_JOB_ID or SLURM_STEP_ID is missing or malformed");
	if ((size_t)snprintf(s->dir, sizeof(s->dir), "%s/%s", rt, uid) >= sizeof(s->dir))
		return fail("%s", "PYXIS_RUNTIME_PATH is too long");
	snprintf(s->name, sizeof(s->name), "alps-%s.%s.sqsh", job, step);
	snprintf(s->path, sizeof(s->path), "%s/%s", s->dir, s->name);
	return 0;
}

/* The user's runtime directory, as pyxis made it: a directory (no
 * symbolic link), the user's, closed to others.  -1 (reported) if not;
 * ENOENT is left in errno for release. */
static int open_dir(const struct step *s, bool quiet_enoent)
{
	int fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0) {
		int e = errno;
		if (!(quiet_enoent && e == ENOENT))
			fprintf(stderr, "alps-importer: cannot open %s: %s\n", s->dir, strerror(e));
		errno = e;
		return -1;
	}
	if (fstat(fd, &st) < 0 || st.st_uid != getuid() || (st.st_mode & 022)) {
		close(fd);
		fail("%s is not a directory of yours closed to others", s->dir);
		errno = EPERM;
		return -1;
	}
	return fd;
}

static const char *client_path(void)
{
	const char *p = getenv("ALPS_CLIENT");
	return p && *p ? p : ALPS_BINDIR "/alps";
}

/* Run the alps client with args; its stdout goes to our stderr (our
 * stdout is for the path only).  Returns its exit status. */
static int run_alps(char *const args[])
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return fail("fork: %s", strerror(errno));
	if (pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
			_exit(127);
		execv(client_path(), args);
		fprintf(stderr, "alps-importer: cannot run %s: %s\n", client_path(), strerror(errno));
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return fail("waitpid: %s", strerror(errno));
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

/* enroot's docker://[USER@][REGISTRY#]IMAGE[:TAG|@DIGEST] as alps takes
 * it (alps reads REGISTRY#IMAGE itself).  USER is dropped: credentials
 * come from the user's docker config, as for alps pull. */
static const char *image_of(const char *uri)
{
	static const char scheme[] = "docker://";
	if (strncmp(uri, scheme, sizeof(scheme) - 1) != 0)
		return NULL;
	const char *ref = uri + sizeof(scheme) - 1;
	const char *at = strchr(ref, '@');
	if (at && strncmp(at + 1, "sha256:", 7) != 0) {
		fprintf(stderr, "alps-importer: ignoring the user in %s (credentials come from "
			"your docker config)\n", uri);
		ref = at + 1;
	}
	return *ref ? ref : NULL;
}

static int cmd_get(const char *uri)
{
	struct step s;
	const char *image = image_of(uri);
	if (!image)
		return fail("unsupported image URI %s (alps serves docker:// images)", uri);
	if (step_from_env(&s) != 0)
		return 1;
	int dfd = open_dir(&s, false);
	if (dfd < 0)
		return 1;
	/* A get of this step that was killed left its file: ours to replace. */
	if (unlinkat(dfd, s.name, 0) < 0 && errno != ENOENT) {
		close(dfd);
		return fail("cannot remove an old %s", s.path);
	}
	close(dfd);
	char *pull[] = { "alps", "pull", "--quiet", (char *)image, NULL };
	char *export[] = { "alps", "export", "--quiet", (char *)image, s.path, NULL };
	int rc = run_alps(pull);
	if (rc == 0)
		rc = run_alps(export);
	if (rc != 0)
		return fail("could not get %s from alps", uri);
	printf("%s\n", s.path);
	return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_release(void)
{
	struct step s;
	if (step_from_env(&s) != 0)
		return 1;
	int dfd = open_dir(&s, true);
	if (dfd < 0)
		return errno == ENOENT ? 0 : 1;
	int r = unlinkat(dfd, s.name, 0);
	int e = errno;
	close(dfd);
	if (r < 0 && e != ENOENT)
		return fail("cannot remove %s", s.path);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "get") == 0)
		return cmd_get(argv[2]);
	if (argc == 2 && strcmp(argv[1], "release") == 0)
		return cmd_release();
	fprintf(stderr, "usage: alps-importer get URI | alps-importer release\n"
			"pyxis's importer= (plugstack.conf: required pyxis.so "
			"importer=%s/alps-importer)\n", ALPS_LIBEXECDIR "/alps");
	return 1;
}
