/* cmd_run.c: alps run, a one-shot private container, with the options
 * podman and Apptainer users bring (-e, -v, -w, an image file).
 *
 * The options become one more EDF on top of --environment (or alone),
 * built by the same code as the Slurm plugin's --container-* options
 * (client/slurmjob.c), so a run and an srun with the same options prepare
 * the same container. */
#include <config.h>

#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/job.h"
#include "client/slurmjob.h"
#include "common/edf.h"

extern char **environ;

struct run_args {
	const char *edf, *image, *workdir;
	bool no_home, no_cwd;   /* --no-home, --no-cwd (--contain: both) */
	char *mounts;           /* owned: "SRC:DST[:FLAGS],..." */
	char *cwd_workdir;      /* owned: the caller's cwd when the command starts there */
	char *env_names;        /* owned: "NAME,..." */
	char **env_values;      /* owned: "NAME=VALUE" with $ doubled */
	size_t nenv;
};

static void run_args_free(struct run_args *r)
{
	free(r->mounts);
	free(r->cwd_workdir);
	free(r->env_names);
	for (size_t i = 0; i < r->nenv; i++)
		free(r->env_values[i]);
	free(r->env_values);
}

static void append_list(char **list, const char *item)
{
	char *next = xasprintf("%s%s%s", *list ? *list : "", *list ? "," : "", item);
	free(*list);
	*list = next;
}

/* -e NAME=VALUE: the value is literal in the container, so a '$' is
 * doubled (EDF values are expanded). */
static int add_env(struct client *cl, struct run_args *r, const char *arg)
{
	const char *eq = strchr(arg, '=');
	size_t len = eq ? (size_t)(eq - arg) : 0;
	bool name_ok = len > 0 && !(arg[0] >= '0' && arg[0] <= '9');
	for (size_t i = 0; i < len; i++)
		name_ok = name_ok && (arg[i] == '_' || (arg[i] >= 'a' && arg[i] <= 'z') ||
				      (arg[i] >= 'A' && arg[i] <= 'Z') || (arg[i] >= '0' && arg[i] <= '9'));
	if (!name_ok && !eq)    /* -e was --environment once */
		return usage_error(cl, "--env '%s': give NAME=VALUE (an EDF is --environment "
				   "EDF)", arg);
	if (!name_ok)
		return usage_error(cl, "--env '%s': give NAME=VALUE with NAME of letters, digits, "
				   "'_'", arg);
	_cleanup_free_ char *name = xstrndup(arg, len);
	char *v = xasprintf("%s=", name);
	for (const char *p = eq + 1; *p; p++) {
		char *next = xasprintf("%s%s", v, *p == '$' ? "$$" : (char[]){ *p, 0 });
		free(v);
		v = next;
	}
	r->env_values = xreallocarray(r->env_values, r->nenv + 1, sizeof(char *));
	r->env_values[r->nenv++] = v;
	append_list(&r->env_names, name);
	return -1;
}

/* What the EDF parser says of one mount, said of the option: the mounts
 * travel as an EDF of their own, whose file name and index mean nothing to
 * the user.  Only parse-time checks (flags, form); the rest comes later
 * with the merged environment. */
static int check_mount(struct client *cl, const char *arg)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return -1;
	fputs("mounts = [\"", f);
	for (const char *c = arg; *c; c++) {
		if (*c == '"' || *c == '\\')
			fputc('\\', f);
		fputc(*c, f);
	}
	fputs("\"]\n", f);
	fclose(f);
	struct edf *e = NULL;
	alps_error *err = NULL;
	if (edf_parse("-v", text, len, &e, &err) == 0) {
		edf_free(e);
		return -1;
	}
	const char *why = strstr(err->msg, "mounts[0]: ");
	int rc = usage_error(cl, "--mount '%s': %s", arg, why ? why + 11 : err->msg);
	alps_error_free(err);
	return rc;
}

static int add_mount(struct client *cl, struct run_args *r, const char *arg)
{
	if (!*arg || strchr(arg, ','))
		return usage_error(cl, "--mount '%s': give SRC:DST[:FLAGS] (one mount, no ',')",
				   arg);
	int rc = check_mount(cl, arg);
	if (rc >= 0)
		return rc;
	append_list(&r->mounts, arg);
	return -1;
}

/* Options, then the image (unless --image or --environment) and "--".
 * -1 to go on, else the exit code. */
static int parse_run(struct client *cl, int argc, char **argv, struct run_args *r)
{
	static const struct option opts[] = {
		{ "environment", required_argument, NULL, 'E' },
		{ "image", required_argument, NULL, 'i' },
		{ "env", required_argument, NULL, 'e' },
		{ "mount", required_argument, NULL, 'v' },
		{ "workdir", required_argument, NULL, 'w' },
		{ "no-home", no_argument, NULL, 'H' },
		{ "no-cwd", no_argument, NULL, 'C' },
		{ "contain", no_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	int opt, rc = -1;
	while (rc < 0 && (opt = command_getopt(cl, argc, argv, "+E:i:e:v:w:", opts)) != -1) {
		switch (opt) {
		case 'E': r->edf = optarg; break;
		case 'i': r->image = optarg; break;
		case 'e': rc = add_env(cl, r, optarg); break;
		case 'v': rc = add_mount(cl, r, optarg); break;
		case 'w':
			r->workdir = optarg;
			if (optarg[0] != '/' && optarg[0] != '$')
				rc = usage_error(cl, "--workdir '%s': give an absolute path in the "
						 "container", optarg);
			break;
		case 'H': r->no_home = true; break;
		case 'C': r->no_cwd = true; break;
		case 'c': r->no_home = r->no_cwd = true; break;
		default: return command_opt_exit(opt);
		}
	}
	if (rc >= 0)
		return rc;
	if (!r->edf && !r->image) {
		if (optind >= argc || strcmp(argv[optind], "--") == 0)
			return usage_error(cl, "give an IMAGE (or --environment EDF)");
		r->image = argv[optind++];
	}
	if (optind < argc && strcmp(argv[optind], "--") == 0)
		optind++;
	return -1;
}

/* ---- the caller's home and working directory, as Apptainer binds them ---- */

/* The host's own directories: a cwd there is not bound (the container has
 * its own /etc, /usr...; binding them over it would break it). */
static bool is_system_dir(const char *path)
{
	static const char *const dirs[] = { "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32",
					    "/lib64", "/libx32", "/proc", "/run", "/sbin", "/sys",
					    "/usr", "/var" };
	if (strcmp(path, "/") == 0)
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		size_t n = strlen(dirs[i]);
		if (strncmp(path, dirs[i], n) == 0 && (path[n] == '\0' || path[n] == '/'))
			return true;
	}
	return false;
}

/* Bound at the same path by default: an absolute directory, not a system
 * one, that the caller may enter (the daemon checks again, as the user)
 * and that the mount syntax can carry (no ',' or ':').  Anything else is
 * left out quietly: a default must not make a run fail. */
static bool bindable(const char *path)
{
	struct stat st;
	return path[0] == '/' && !is_system_dir(path) && !strpbrk(path, ",:") &&
	       stat(path, &st) == 0 && S_ISDIR(st.st_mode) && access(path, R_OK | X_OK) == 0;
}

static bool is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Does a -v mount go to path?  Then it replaces the default bind there
 * (one file may not hold two mounts on one destination). */
static bool mount_dst_taken(const char *mounts, const char *path)
{
	if (!mounts)
		return false;
	_cleanup_free_ char *copy = xstrdup(mounts);
	char *save = NULL;
	for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
		char *dst = strchr(m, ':');
		dst = dst ? dst + 1 : m;
		char *flags = strchr(dst, ':');
		if (flags)
			*flags = '\0';
		size_t n = strlen(dst);
		while (n > 1 && dst[n - 1] == '/')
			dst[--n] = '\0';
		if (strcmp(dst, path) == 0)
			return true;
	}
	return false;
}

/* The home comes from the password database, not $HOME: $HOME is the
 * caller's to set and could name anybody's directory.  The binds go
 * before the -v ones, which may mount inside them. */
static void add_default_binds(struct run_args *r, const char *cwd)
{
	char *binds = NULL;
	const struct passwd *pw = r->no_home ? NULL : getpwuid(getuid());
	const char *home = pw && pw->pw_dir && bindable(pw->pw_dir) ? pw->pw_dir : NULL;
	if (home && mount_dst_taken(r->mounts, home))
		home = NULL;
	if (home) {
		_cleanup_free_ char *m = xasprintf("%s:%s", home, home);
		append_list(&binds, m);
	}
	bool cwd_there = !r->no_cwd && home && is_under(cwd, home);
	if (!r->no_cwd && !cwd_there && bindable(cwd)) {
		_cleanup_free_ char *m = xasprintf("%s:%s", cwd, cwd);
		if (!mount_dst_taken(r->mounts, cwd))
			append_list(&binds, m);
		cwd_there = true;
	}
	/* -w, or an EDF's workdir, decide where the command starts. */
	if (cwd_there && !r->workdir && !r->edf)
		r->cwd_workdir = xstrdup(cwd);
	if (binds && r->mounts)
		append_list(&binds, r->mounts);
	if (binds) {
		free(r->mounts);
		r->mounts = binds;
	}
}

/* A path to an image file (podman and Apptainer take both). */
static bool is_file_image(const char *image)
{
	return image[0] == '/' || strncmp(image, "./", 2) == 0 || strncmp(image, "../", 3) == 0;
}

/* The options as an EDF over r->edf, through the Slurm plugin's code. */
static int build_request(struct client *cl, const struct run_args *r, const char *cwd,
			 Alps__PrepareRequest **req)
{
	_cleanup_free_ char *image = NULL;
	if (r->image && is_file_image(r->image)) {
		/* Absolute, and there for the caller: a clear error before a job. */
		const char *rel = strncmp(r->image, "./", 2) == 0 ? r->image + 2 : r->image;
		image = rel[0] == '/' ? xstrdup(rel) : xasprintf("%s/%s", cwd, rel);
		_cleanup_close_ int fd = open(image, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (fd < 0) {
			alps_error *err = NULL;
			alps_fail_errno(&err, "%s", image);
			return client_fail(cl, "run", err);
		}
	} else if (r->image) {
		image = xstrdup(r->image);
	}
	const char *workdir = r->workdir ? r->workdir : r->cwd_workdir;
	struct container_opts o = { .image = image, .mounts = r->mounts, .workdir = workdir,
				    .writable = -1, .env_names = r->env_names, .mount_home = -1,
				    .entrypoint = -1 };
	/* The -e values first: the options' EDF looks names up there. */
	size_t n = 0;
	while (environ && environ[n])
		n++;
	_cleanup_free_ char **env = xcalloc(r->nenv + n + 1, sizeof(char *));
	if (r->nenv)
		memcpy(env, r->env_values, r->nenv * sizeof(char *));
	memcpy(env + r->nenv, environ, n * sizeof(char *));
	alps_error *err = NULL;
	if (slurmjob_build(r->edf, &o, (const char *const *)env, cwd, req, &err) < 0)
		return client_fail(cl, "run", err);
	slurmjob_set_string(&(*req)->job, "");
	slurmjob_set_string(&(*req)->user, "");
	(*req)->run = true;
	return EXIT_OK;
}

static bool needs_edf(const struct run_args *r)
{
	return r->edf || r->mounts || r->env_names || r->workdir || r->cwd_workdir ||
	       is_file_image(r->image);
}

static int prepare_run(struct client *cl, struct run_args *r, Alps__Response **resp)
{
	char cwd[4096];
	if (!getcwd(cwd, sizeof(cwd)))
		snprintf(cwd, sizeof(cwd), "/");
	add_default_binds(r, cwd);
	if (!needs_edf(r)) {
		int rc = EXIT_OK;
		_cleanup_free_ char *ref = client_image_ref(cl, r->image, &rc);
		if (!ref)
			return rc;
		struct prepare_args a = { .run = true, .image = ref };
		return do_prepare(cl, &a, resp);
	}
	Alps__PrepareRequest *req = NULL;
	int rc = build_request(cl, r, cwd, &req);
	if (rc == EXIT_OK)
		rc = prepare_send(cl, req, resp);
	if (req)
		slurmjob_request_free(req);
	return rc;
}

static int run_run(struct client *cl, int argc, char **argv)
{
	struct run_args r = { 0 };
	int rc = parse_run(cl, argc, argv, &r);
	if (rc >= 0) {
		run_args_free(&r);
		return rc;
	}
	Alps__Response *resp = NULL;
	rc = prepare_run(cl, &r, &resp);
	run_args_free(&r);
	if (rc != EXIT_OK)
		return 125;             /* the command never started */
	_cleanup_free_ char *job = xstrdup(resp->prepare_reply->job);
	_cleanup_free_ char *digest = xstrdup(resp->prepare_reply->image_digest);
	alps__response__free_unpacked(resp, NULL);
	char **cmd = argv + optind;
	int ncmd = argc - optind;
	char **deflt = NULL;
	if (ncmd == 0 && image_default_argv(cl, digest, &deflt, &ncmd) == 0)
		cmd = deflt;
	rc = ncmd > 0 ? do_exec(cl, job, 0, ncmd, cmd) : 125;
	int rrc = do_release(cl, job, true);
	for (int i = 0; deflt && deflt[i]; i++)
		free(deflt[i]);
	free(deflt);
	return rc != 0 ? rc : rrc != EXIT_OK ? 125 : 0;
}

const struct command cmd_run = {
	.name = "run",
	.summary = "Run a command in a one-shot private container of your own.",
	.usage = "[OPTION]... (IMAGE | --image IMAGE | --environment EDF) [--] [COMMAND [ARG]...]",
	.help = "  --environment EDF     an environment definition file (alps-edf(5))\n"
		"  -i, --image IMAGE     the image (instead of the IMAGE operand): a reference,\n"
		"                        REGISTRY#IMAGE, or a squashfs file (/path, ./path)\n"
		"  -e, --env NAME=VALUE  set a variable in the container\n"
		"  -v, --mount SRC:DST[:FLAGS]  bind-mount SRC at DST (EDF mount syntax)\n"
		"  -w, --workdir DIR     the command's working directory in the container\n"
		"      --no-home         do not bind your home directory\n"
		"      --no-cwd          do not bind the working directory nor start in it\n"
		"      --contain         neither: only the image and the -v mounts\n"
		"Prepares a job for you, runs the command (the image's entrypoint and cmd\n"
		"when none is given), releases the job.  The options are an EDF on top of\n"
		"--environment, like srun's --container-* options.\n"
		"By default, as with Apptainer, your home directory (from the password\n"
		"database, not $HOME) and the working directory are bound at the same\n"
		"paths and the command starts in the working directory (unless -w or an\n"
		"EDF says otherwise); a working directory under /, /etc, /usr, /var and\n"
		"the other system directories is not bound.\n"
		"Exit status: as for exec.\n",
	.operand_stops = true,
	.run = run_run,
};
