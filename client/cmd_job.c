/* cmd_job.c: alps prepare, exec, release, jobs, run. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/client.h"
#include "common/edf.h"

extern char **environ;

/* ---- reading EDF files as the job's user ---- */

struct saved_ids {
	bool switched;
	gid_t groups[256];
	int ngroups;
};

/* The prolog runs as root: the user's EDF files are read with the user's
 * rights (effective ids and groups), so a root client never reads for a
 * user what the user could not. */
static int become_user(const char *user, struct saved_ids *s, alps_error **err)
{
	s->switched = false;
	if (geteuid() != 0 || !user)
		return 0;
	struct passwd *pw;
	char *end;
	unsigned long n = strtoul(user, &end, 10);
	pw = (*user && *end == '\0') ? getpwuid((uid_t)n) : getpwnam(user);
	if (!pw)
		return alps_fail(err, ALPS_E_NOT_FOUND, "user '%s' does not exist", user);
	gid_t groups[256];
	int ng = 256;
	if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &ng) < 0)
		ng = 0;
	s->ngroups = getgroups(256, s->groups);
	if (setgroups((size_t)ng, groups) < 0 || setegid(pw->pw_gid) < 0 || seteuid(pw->pw_uid) < 0)
		return alps_fail_errno(err, "cannot take the identity of %s to read its files", user);
	s->switched = true;
	return 0;
}

static void become_root_again(struct saved_ids *s)
{
	if (!s->switched)
		return;
	if (seteuid(0) < 0 || setegid(0) < 0 || setgroups((size_t)(s->ngroups > 0 ? s->ngroups : 0),
							   s->groups) < 0) {
		perror("alps: cannot return to root");
		exit(EXIT_FAILED);
	}
}

/* The job user's world (alps-edf(5)): with --user, ~/.edf is that user's
 * and ${USER}, ${LOGNAME}, ${HOME}, ${UID} are that user's, whoever runs
 * the client (a root prolog); the daemon builds the same context. */
struct user_world {
	char *name, *home;      /* owned; home NULL: not known */
	unsigned long uid;
	bool set;               /* a --user was given */
};

static void user_world_free(struct user_world *w)
{
	free(w->name);
	free(w->home);
}

static int user_world_get(const char *user, struct user_world *w, alps_error **err)
{
	memset(w, 0, sizeof(*w));
	if (!user)
		return 0;
	char *end;
	unsigned long n = strtoul(user, &end, 10);
	struct passwd *pw = (*user && *end == '\0') ? getpwuid((uid_t)n) : getpwnam(user);
	if (!pw)
		return alps_fail(err, ALPS_E_NOT_FOUND, "user '%s' does not exist", user);
	w->name = xstrdup(pw->pw_name);
	w->home = pw->pw_dir && *pw->pw_dir ? xstrdup(pw->pw_dir) : NULL;
	w->uid = pw->pw_uid;
	w->set = true;
	return 0;
}

/* ctx's environment for w (edf_strv_free), the caller's own without --user. */
static char **user_world_env(const struct user_world *w)
{
	if (!w->set)
		return NULL;
	return edf_user_env((const char *const *)environ, w->name, w->uid, w->home);
}

/* An image file must hold a squashfs image: read it now, with the
 * reader's rights, for a clear error before anything is mounted. */
static int check_image_file(const struct edf *e, alps_error **err)
{
	if (e->image_kind != EDF_IMAGE_SQUASHFS)
		return 0;
	const char *path = edf_image(e);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return alps_fail_errno(err, "%s:%d:%d: %s: %s", e->image.loc.file,
				       e->image.loc.line, e->image.loc.col, e->image.loc.key, path);
	if (edf_image_file_check(fd, path, err) < 0)
		return alps_error_prefix(err, "%s:%d:%d: %s", e->image.loc.file,
					 e->image.loc.line, e->image.loc.col, e->image.loc.key);
	return 0;
}

/* Load, expand and check as the reader: what the daemon will do, so that
 * mistakes show here with the reader's rights (the daemon expands again). */
static int load_checked(const char *path, const struct user_world *w, struct edf **out,
			struct edf_source **src, size_t *n, alps_error **err)
{
	struct edf_file_world fw = { .home = w->home, .use_edf_path = w->set,
				     .edf_path = getenv("EDF_PATH") };
	struct edf_loader loader = { .load = edf_file_load, .arg = &fw };
	char **env = user_world_env(w);
	char cwd[4096];
	struct edf_context ctx = { .caller_env = env ? (const char *const *)env
						     : (const char *const *)environ,
				   .cwd = getcwd(cwd, sizeof(cwd)) ? cwd : NULL };
	int rc = edf_load_all_ctx(path, &loader, &ctx, out, src, n, err);
	if (rc == 0)
		rc = edf_expand(*out, &ctx, err);
	if (rc == 0)
		rc = check_image_file(*out, err);
	edf_strv_free(env);
	return rc;
}

/* The EDF and its bases, read as user, into src and n for the request. */
static int read_edf(const char *path, const char *user, struct edf_source **src, size_t *n,
		    alps_error **err)
{
	struct user_world w;
	if (user_world_get(user, &w, err) < 0)
		return -1;
	struct saved_ids ids;
	if (become_user(user, &ids, err) < 0) {
		user_world_free(&w);
		return -1;
	}
	struct edf *merged = NULL;
	int rc = load_checked(path, &w, &merged, src, n, err);
	become_root_again(&ids);
	edf_free(merged);
	user_world_free(&w);
	if (rc < 0 && *src) {
		edf_sources_free(*src, *n);
		*src = NULL;
		*n = 0;
	}
	return rc;
}

static Alps__EdfSource **edf_sources_msg(const struct edf_source *src, size_t n,
					 Alps__EdfSource **storage)
{
	*storage = xcalloc(n + 1, sizeof(**storage));
	Alps__EdfSource **v = xcalloc(n + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		alps__edf_source__init(&(*storage)[i]);
		(*storage)[i].path = src[i].name;
		(*storage)[i].content = src[i].content;
		v[i] = &(*storage)[i];
	}
	return v;
}

static size_t env_count(void)
{
	size_t n = 0;
	while (environ && environ[n])
		n++;
	return n;
}

/* ---- prepare ---- */

struct prepare_args {
	const char *job, *user, *edf, *image;
	unsigned tasks;
	bool run;
	char **nodes;           /* owned, from --nodes a,b,c */
	size_t nnodes;
};

static void split_nodes(struct prepare_args *a, const char *list)
{
	_cleanup_free_ char *copy = xstrdup(list);
	char *save = NULL;
	for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
		a->nodes = xreallocarray(a->nodes, a->nnodes + 1, sizeof(char *));
		a->nodes[a->nnodes++] = xstrdup(t);
	}
}

static void on_prepare_progress(const Alps__Response *resp, void *arg)
{
	struct client *cl = arg;
	static char last_phase[32];
	if (cl->quiet || cl->json || resp->payload_case != ALPS__RESPONSE__PAYLOAD_PULL_PROGRESS)
		return;
	const Alps__PullProgress *pp = resp->pull_progress;
	/* A line per phase: a prolog's log is no place for a progress bar. */
	if (strncmp(last_phase, pp->phase, sizeof(last_phase)) == 0)
		return;
	snprintf(last_phase, sizeof(last_phase), "%s", pp->phase);
	char done[32], total[32];
	format_size(pp->bytes_done, done, sizeof(done));
	format_size(pp->bytes_total, total, sizeof(total));
	fprintf(stderr, "pulling: %s, %s / %s\n", pp->phase, done, total);
}

/* Send a Prepare; on success *reply holds the response (caller frees). */
static int do_prepare(struct client *cl, const struct prepare_args *a, Alps__Response **reply)
{
	alps_error *err = NULL;
	struct edf_source *src = NULL;
	size_t nsrc = 0;
	if (a->edf && read_edf(a->edf, a->run ? NULL : a->user, &src, &nsrc, &err) < 0)
		return client_fail(cl, "prepare", err);
	Alps__EdfSource *storage = NULL;
	Alps__EdfSource **srcv = edf_sources_msg(src, nsrc, &storage);
	char cwd[4096];
	Alps__PrepareRequest pr = ALPS__PREPARE_REQUEST__INIT;
	pr.job = (char *)(a->job ? a->job : "");
	pr.user = (char *)(a->user ? a->user : "");
	pr.environment = srcv;
	pr.n_environment = nsrc;
	pr.image = (char *)(a->image ? a->image : "");
	pr.tasks = a->tasks;
	pr.run = a->run;
	pr.nodes = a->nodes;
	pr.n_nodes = a->nnodes;
	pr.caller_env = environ;
	pr.n_caller_env = env_count();
	pr.cwd = getcwd(cwd, sizeof(cwd)) ? cwd : (char *)"";
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_PREPARE;
	req.prepare = &pr;
	Alps__Response *resp = client_call(cl, &req, on_prepare_progress, cl, &err);
	free(srcv);
	free(storage);
	edf_sources_free(src, nsrc);
	if (!resp)
		return client_fail(cl, "prepare", err);
	if (resp->status != ALPS__STATUS__OK ||
	    resp->payload_case != ALPS__RESPONSE__PAYLOAD_PREPARE_REPLY) {
		int rc = client_report_response(cl, "prepare", resp);
		alps__response__free_unpacked(resp, NULL);
		return rc ? rc : EXIT_FAILED;
	}
	*reply = resp;
	return EXIT_OK;
}

static int run_prepare(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "job", required_argument, NULL, 'j' },
		{ "user", required_argument, NULL, 'u' },
		{ "environment", required_argument, NULL, 'e' },
		{ "image", required_argument, NULL, 'i' },
		{ "nodes", required_argument, NULL, 'N' },
		{ "tasks", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	struct prepare_args a = { 0 };
	int opt;
	while ((opt = getopt_long(argc, argv, "j:u:e:i:N:n:", opts, NULL)) != -1) {
		switch (opt) {
		case 'j': a.job = optarg; break;
		case 'u': a.user = optarg; break;
		case 'e': a.edf = optarg; break;
		case 'i': a.image = optarg; break;
		case 'N': split_nodes(&a, optarg); break;
		case 'n':
			if (client_parse_uint(optarg, "--tasks", 1000000, &a.tasks) < 0)
				return EXIT_USAGE;
			if (a.tasks == 0) {
				/* 0 means "not given" to the daemon: say so here. */
				fprintf(stderr, "alps prepare: --tasks must be at least 1 (leave it out "
						"when no per-rank placement is wanted)\n");
				return EXIT_USAGE;
			}
			break;
		default: return EXIT_USAGE;
		}
	}
	if (!a.job || !a.user || !!a.edf == !!a.image || optind < argc) {
		fprintf(stderr, "alps prepare: --job, --user and one of --environment or --image "
				"are required\n");
		return EXIT_USAGE;
	}
	Alps__Response *resp = NULL;
	int rc = do_prepare(cl, &a, &resp);
	for (size_t i = 0; i < a.nnodes; i++)
		free(a.nodes[i]);
	free(a.nodes);
	if (rc != EXIT_OK)
		return rc;
	const Alps__PrepareReply *r = resp->prepare_reply;
	if (cl->json) {
		json_t *mounts = json_array();
		for (size_t i = 0; i < r->n_mounts; i++)
			json_array_append_new(mounts, json_string(r->mounts[i]));
		json_t *down = json_array();
		for (size_t i = 0; i < r->n_down_peers; i++)
			json_array_append_new(down, json_string(r->down_peers[i]));
		json_t *warnings = json_array();
		for (size_t i = 0; i < r->n_warnings; i++)
			json_array_append_new(warnings, json_string(r->warnings[i]));
		client_print_json(json_pack("{s:b, s:s, s:s, s:b, s:o, s:o, s:o}", "ok", 1, "job",
					    r->job, "image_digest", r->image_digest,
					    "already_prepared", (int)r->already_prepared, "mounts",
					    mounts, "down_peers", down, "warnings", warnings));
	} else {
		printf("job %s %s (image %s)\n", r->job,
		       r->already_prepared ? "was already prepared" : "prepared", r->image_digest);
		for (size_t i = 0; i < r->n_mounts; i++)
			printf("  %s\n", r->mounts[i]);
		for (size_t i = 0; i < r->n_down_peers; i++)
			fprintf(stderr, "warning: node %s is down or unknown to the fabric\n",
				r->down_peers[i]);
		for (size_t i = 0; i < r->n_warnings; i++)
			fprintf(stderr, "warning: %s\n", r->warnings[i]);
	}
	alps__response__free_unpacked(resp, NULL);
	return EXIT_OK;
}

const struct command cmd_prepare = {
	.name = "prepare",
	.summary = "Prepare a job's container on this node (admin; the Slurm prolog).",
	.usage = "--job ID --user NAME|UID (--environment EDF | --image REF) [--tasks N]",
	.help = "  -j, --job ID            the job id\n"
		"  -u, --user NAME|UID     the job's user (EDF files are read with its rights)\n"
		"  -e, --environment EDF   an environment definition file (TOML)\n"
		"  -i, --image REF         an image instead of an EDF\n"
		"  -n, --tasks N           local tasks, for per-rank GPU/NIC/CPU placement\n"
		"  -N, --nodes A,B,...     the job's nodes: the fabric map goes to\n"
		"                          /run/alps/fabric.json ($ALPS_FABRIC_MAP); the first\n"
		"                          node pins the image digest for the others\n"
		"Pulls the image if needed; preparing the same job twice with the same\n"
		"environment returns at once.\n",
	.run = run_prepare,
};

/* ---- exec ---- */

static volatile pid_t relay_pid;
/* From a progress reply before an error: 126 or 127 (see exec_exit_code). */
static int start_status;

static void relay_signal(int sig)
{
	if (relay_pid > 0)
		kill(relay_pid, sig);
}

static void install_relays(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
				    SIGCONT, SIGALRM };
	struct sigaction sa = { .sa_handler = relay_signal, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		sigaction(sigs[i], &sa, NULL);
}

static void on_exec_progress(const Alps__Response *resp, void *arg)
{
	(void)arg;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_EXEC_REPLY)
		return;
	if (resp->exec_reply->pid > 0)
		relay_pid = resp->exec_reply->pid;
	if (resp->exec_reply->start_status == 126 || resp->exec_reply->start_status == 127)
		start_status = resp->exec_reply->start_status;
}

/* The shell's and podman's convention: the command's own status when it
 * ran (128+N for signal N); 126 found but not executable, 127 not found;
 * 125 when alps failed before the command could start. */
static int exec_exit_code(struct client *cl, const Alps__Response *resp)
{
	if (resp->status != ALPS__STATUS__OK || resp->payload_case != ALPS__RESPONSE__PAYLOAD_EXEC_REPLY) {
		client_report_response(cl, "exec", resp);
		return start_status ? start_status : 125;
	}
	const Alps__ExecReply *er = resp->exec_reply;
	if (er->released)
		fprintf(stderr, "alps exec: the job was released while the command ran\n");
	int st = er->exit_status;
	return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 125;
}

/* Run argv in job; returns the exit code to leave with. */
static int do_exec(struct client *cl, const char *job, unsigned rank, int argc, char **argv)
{
	char cwd[4096];
	Alps__ExecRequest x = ALPS__EXEC_REQUEST__INIT;
	x.job = (char *)job;
	x.argv = argv;
	x.n_argv = (size_t)argc;
	x.env = environ;
	x.n_env = env_count();
	x.cwd = getcwd(cwd, sizeof(cwd)) ? cwd : (char *)"";
	x.local_rank = rank;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_EXEC;
	req.exec = &x;
	alps_error *err = NULL;
	if (client_connect(cl, &err) < 0) {
		client_fail(cl, "exec", err);
		return 125;
	}
	install_relays();
	start_status = 0;
	const int fds[3] = { STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO };
	Alps__Response *resp = wire_call(&cl->wire, &req, fds, 3, on_exec_progress, NULL, -1, &err);
	relay_pid = 0;
	if (!resp) {
		client_fail(cl, "exec", err);
		return 125;
	}
	int rc = exec_exit_code(cl, resp);
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

static int run_exec(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "job", required_argument, NULL, 'j' },
		{ "rank", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *job = NULL;
	unsigned rank = 0;
	const char *r = getenv("SLURM_LOCALID");
	if (r && client_parse_uint(r, "SLURM_LOCALID", 1000000, &rank) < 0)
		rank = 0;
	int opt;
	while ((opt = getopt_long(argc, argv, "+j:r:", opts, NULL)) != -1) {
		switch (opt) {
		case 'j': job = optarg; break;
		case 'r':
			if (client_parse_uint(optarg, "--rank", 1000000, &rank) < 0)
				return EXIT_USAGE;
			break;
		default: return EXIT_USAGE;
		}
	}
	if (!job || optind >= argc) {
		fprintf(stderr, "alps exec: --job ID and a command are required\n");
		return EXIT_USAGE;
	}
	return do_exec(cl, job, rank, argc - optind, argv + optind);
}

const struct command cmd_exec = {
	.name = "exec",
	.summary = "Run a command in a prepared job's container.",
	.usage = "--job ID [--rank N] [--] COMMAND [ARG]...",
	.help = "  -j, --job ID    the job\n"
		"  -r, --rank N    local rank, for its GPU/NIC/CPU environment (default\n"
		"                  $SLURM_LOCALID, else 0)\n"
		"The command runs as you, with your stdin/stdout/stderr, cgroups, limits,\n"
		"CPU affinity, nice value and umask; signals sent to alps reach it.\n"
		"Exit status: the command's (128+N for signal N); 125 if alps failed\n"
		"before it could start; 126 if it is not executable; 127 if not found.\n",
	.run = run_exec,
};

/* ---- release ---- */

static int do_release(struct client *cl, const char *job, bool quiet)
{
	Alps__ReleaseRequest rr = ALPS__RELEASE_REQUEST__INIT;
	rr.job = (char *)job;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_RELEASE;
	req.release = &rr;
	int rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "release", NULL, NULL, &rc);
	if (!resp)
		return rc;
	if (!quiet && cl->json)
		client_print_json(json_pack("{s:b, s:s, s:b}", "ok", 1, "job", job, "was_prepared",
					    resp->payload_case == ALPS__RESPONSE__PAYLOAD_RELEASE_REPLY &&
					    resp->release_reply->was_prepared));
	else if (!quiet)
		printf("job %s released\n", job);
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

static int run_release(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "job", required_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	const char *job = NULL;
	int opt;
	while ((opt = getopt_long(argc, argv, "j:", opts, NULL)) != -1) {
		if (opt != 'j')
			return EXIT_USAGE;
		job = optarg;
	}
	if (!job || optind < argc) {
		fprintf(stderr, "alps release: --job ID is required\n");
		return EXIT_USAGE;
	}
	return do_release(cl, job, false);
}

const struct command cmd_release = {
	.name = "release",
	.summary = "Release a job's container: stop what is left, unmount (the epilog).",
	.usage = "--job ID",
	.help = "Idempotent: releasing a job that is not prepared is not an error.\n",
	.run = run_release,
};

/* ---- jobs ---- */

static int run_jobs(struct client *cl, int argc, char **argv)
{
	if (argc > 1) {
		fprintf(stderr, "alps jobs: unexpected argument '%s'\n", argv[1]);
		return EXIT_USAGE;
	}
	Alps__JobsRequest jr = ALPS__JOBS_REQUEST__INIT;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_JOBS;
	req.jobs = &jr;
	int rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "jobs", NULL, NULL, &rc);
	if (!resp)
		return rc;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_JOBS_REPLY) {
		alps__response__free_unpacked(resp, NULL);
		alps_error e = { ALPS_E_PROTOCOL, 0, (char *)"alpsd answered jobs without a list" };
		return client_report_error(cl, "jobs", &e);
	}
	const Alps__JobsReply *r = resp->jobs_reply;
	if (cl->json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < r->n_jobs; i++) {
			const Alps__JobInfo *j = r->jobs[i];
			json_t *m = json_array();
			for (size_t k = 0; k < j->n_mounts; k++)
				json_array_append_new(m, json_string(j->mounts[k]));
			json_array_append_new(arr, json_pack("{s:s, s:i, s:s, s:s, s:s, s:I, s:o}", "job",
				j->job, "uid", (int)j->uid, "user", j->user, "image", j->image, "state",
				j->state, "created_ms", (json_int_t)j->created_ms, "mounts", m));
		}
		client_print_json(json_pack("{s:b, s:o}", "ok", 1, "jobs", arr));
	} else {
		printf("%-24s %-12s %-8s %-19s %s\n", "JOB", "USER", "STATE", "IMAGE", "MOUNTS");
		for (size_t i = 0; i < r->n_jobs; i++) {
			const Alps__JobInfo *j = r->jobs[i];
			printf("%-24s %-12s %-8s %-19.19s %zu\n", j->job, j->user, j->state,
			       *j->image ? j->image : "-", j->n_mounts);
		}
	}
	alps__response__free_unpacked(resp, NULL);
	return EXIT_OK;
}

const struct command cmd_jobs = {
	.name = "jobs",
	.summary = "List prepared jobs (yours; all of them for admins).",
	.usage = "",
	.help = "",
	.run = run_jobs,
};

/* ---- run ---- */

static int run_run(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "environment", required_argument, NULL, 'e' },
		{ NULL, 0, NULL, 0 },
	};
	struct prepare_args a = { .run = true };
	int opt;
	while ((opt = getopt_long(argc, argv, "+e:", opts, NULL)) != -1) {
		if (opt != 'e')
			return EXIT_USAGE;
		a.edf = optarg;
	}
	if (!a.edf) {
		if (optind >= argc) {
			fprintf(stderr, "alps run: give --environment EDF or an IMAGE\n");
			return EXIT_USAGE;
		}
		a.image = argv[optind++];
	}
	if (optind < argc && strcmp(argv[optind], "--") == 0)
		optind++;
	if (optind >= argc) {
		fprintf(stderr, "alps run: a command is required\n");
		return EXIT_USAGE;
	}
	Alps__Response *resp = NULL;
	int rc = do_prepare(cl, &a, &resp);
	if (rc != EXIT_OK)
		return 125;             /* the command never started */
	_cleanup_free_ char *job = xstrdup(resp->prepare_reply->job);
	alps__response__free_unpacked(resp, NULL);
	rc = do_exec(cl, job, 0, argc - optind, argv + optind);
	int rrc = do_release(cl, job, true);
	return rc != 0 ? rc : rrc != EXIT_OK ? 125 : 0;
}

const struct command cmd_run = {
	.name = "run",
	.summary = "Run a command in a one-shot private container of your own.",
	.usage = "(--environment EDF | IMAGE) [--] COMMAND [ARG]...",
	.help = "  -e, --environment EDF   an environment definition file\n"
		"Prepares a job for you, runs the command, releases the job.\n",
	.run = run_run,
};

/* ---- edf check ---- */

struct check_out {
	json_t *warnings;       /* strings */
	json_t *errors;
};

static void check_lines(json_t *a, const char *text)
{
	_cleanup_free_ char *copy = xstrdup(text);
	for (char *p = copy, *line; (line = strsep(&p, "\n"));)
		if (*line)
			json_array_append_new(a, json_string(line));
}

/* --image: does the image resolve and do the mount sources exist for the
 * reader?  Only warnings: the node that runs the job may differ. */
static void check_sources(const struct edf *e, struct check_out *o)
{
	for (size_t i = 0; i < e->nmounts; i++) {
		const struct edf_mount *m = &e->mounts[i];
		struct stat st;
		char *w = NULL;
		if (stat(m->src, &st) < 0)
			w = xasprintf("%s:%d:%d: %s: source %s: %s", m->loc.file, m->loc.line,
				      m->loc.col, m->loc.key, m->src, strerror(errno));
		else if ((m->flags & EDF_MOUNT_SQSH) && !S_ISREG(st.st_mode))
			w = xasprintf("%s:%d:%d: %s: source %s is not a file: 'sqsh' mounts a "
				      "squashfs file", m->loc.file, m->loc.line, m->loc.col,
				      m->loc.key, m->src);
		if (w)
			json_array_append_new(o->warnings, json_string(w));
		free(w);
	}
}

static void check_image_ref(struct client *cl, const struct edf *e, struct check_out *o)
{
	if (e->image_kind != EDF_IMAGE_REF)
		return;
	_cleanup_free_ char *ref = ref_format(&e->ref);
	Alps__InspectRequest ir = ALPS__INSPECT_REQUEST__INIT;
	ir.reference = ref;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_INSPECT;
	req.inspect = &ir;
	alps_error *err = NULL;
	Alps__Response *resp = client_call(cl, &req, NULL, NULL, &err);
	char *w = NULL;
	if (!resp)
		w = xasprintf("%s:%d:%d: image: %s not checked: %s", e->image.loc.file,
			      e->image.loc.line, e->image.loc.col, ref, err->msg);
	else if (resp->status != ALPS__STATUS__OK)
		w = xasprintf("%s:%d:%d: image: %s is not in this node's store (%s); prepare "
			      "pulls it", e->image.loc.file, e->image.loc.line, e->image.loc.col,
			      ref, resp->message ? resp->message : "not found");
	if (w)
		json_array_append_new(o->warnings, json_string(w));
	free(w);
	alps_error_free(err);
	if (resp)
		alps__response__free_unpacked(resp, NULL);
}

static void check_print_text(const char *file, const struct edf *e, const struct check_out *o)
{
	size_t i;
	json_t *v;
	json_array_foreach(o->errors, i, v)
		fprintf(stderr, "error: %s\n", json_string_value(v));
	json_array_foreach(o->warnings, i, v)
		fprintf(stderr, "warning: %s\n", json_string_value(v));
	if (!e) {
		fprintf(stderr, "%s: %zu error%s\n", file, json_array_size(o->errors),
			json_array_size(o->errors) == 1 ? "" : "s");
		return;
	}
	printf("%s: valid\n  image:      %s\n", file, *edf_image(e) ? edf_image(e) : "(none)");
	if (e->workdir.value && *e->workdir.value)
		printf("  workdir:    %s\n", e->workdir.value);
	printf("  writable:   %s\n  entrypoint: %s\n", edf_writable(e) ? "yes" : "no",
	       edf_entrypoint(e) ? "yes" : "no");
	for (i = 0; i < e->nmounts; i++) {
		_cleanup_free_ char *f = edf_mount_flags_format(e->mounts[i].flags);
		printf("  mount:      %s -> %s (%s)\n", e->mounts[i].src, e->mounts[i].dst, f);
	}
	for (i = 0; i < e->nenv; i++)
		printf("  env:        %s=%s\n", e->env[i].key, e->env[i].value);
	for (i = 0; i < e->nannotations; i++)
		printf("  annotation: %s=%s\n", e->annotations[i].key, e->annotations[i].value);
}

static int check_usage(void)
{
	fprintf(stderr, "alps edf: usage: alps edf check [--json] [--image] FILE\n");
	return EXIT_USAGE;
}

static int run_edf(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "image", no_argument, NULL, 'i' },
		{ NULL, 0, NULL, 0 },
	};
	if (argc < 2 || strcmp(argv[1], "check") != 0)
		return check_usage();
	bool image = false;
	int opt;
	while ((opt = getopt_long(argc - 1, argv + 1, "ji", opts, NULL)) != -1) {
		if (opt == 'j')
			cl->json = true;
		else if (opt == 'i')
			image = true;
		else
			return check_usage();
	}
	if (optind + 1 != argc - 1)
		return check_usage();
	const char *file = argv[optind + 1];
	struct check_out o = { .warnings = json_array(), .errors = json_array() };
	struct user_world w = { 0 };
	alps_error *err = NULL;
	struct edf *e = NULL;
	struct edf_source *src = NULL;
	size_t n = 0;
	if (load_checked(file, &w, &e, &src, &n, &err) < 0 || edf_job_check(e, &err) < 0) {
		check_lines(o.errors, err->msg);
		alps_error_free(err);
		edf_free(e);
		e = NULL;
	}
	if (e) {
		char **warnings = edf_warnings(e, NULL);
		for (size_t i = 0; warnings[i]; i++)
			json_array_append_new(o.warnings, json_string(warnings[i]));
		edf_strv_free(warnings);
		if (image) {
			check_sources(e, &o);
			check_image_ref(cl, e, &o);
		}
	}
	int rc = e ? EXIT_OK : EXIT_FAILED;
	if (cl->json)
		client_print_json(json_pack("{s:b, s:o, s:O, s:O}", "ok", e != NULL, "environment",
					    e ? edf_to_json(e, true) : json_null(), "warnings",
					    o.warnings, "errors", o.errors));
	else
		check_print_text(file, e, &o);
	json_decref(o.warnings);
	json_decref(o.errors);
	edf_free(e);
	edf_sources_free(src, n);
	return rc;
}

const struct command cmd_edf = {
	.name = "edf",
	.summary = "Check an environment definition file and show the merged result.",
	.usage = "check [--json] [--image] FILE",
	.help = "Validates FILE and its base_environment chain (read with your rights) as\n"
		"prepare would, in your environment and working directory: every error\n"
		"with FILE:LINE:COL and key, warnings for likely mistakes, then the merged\n"
		"environment as text (as JSON with --json).\n"
		"  -i, --image   also check that the image is in the node's store and that\n"
		"                mount sources exist (warnings)\n"
		"  -j, --json    machine-readable output\n"
		"See alps-edf(5).\n",
	.run = run_edf,
};
