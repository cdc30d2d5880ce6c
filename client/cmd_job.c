/* cmd_job.c: alps prepare, exec, release, jobs; reading EDF files as the
 * job's user. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/client.h"
#include "client/exectty.h"
#include "client/job.h"
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
int load_checked(const char *path, const struct user_world *w, struct edf **out,
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

/* A mount as the daemon describes it, "TARGET FSTYPE SOURCE OPTIONS", as
 * {"target", "fstype", "source", "options": [...]}.  Target and type are
 * the first two words and the options the last, so only the source may
 * hold spaces. */
static json_t *mount_json(const char *text)
{
	const char *sp1 = strchr(text, ' ');
	const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	const char *last = strrchr(text, ' ');
	if (!sp2 || last <= sp2)
		return json_pack("{s:s, s:s, s:s, s:[]}", "target", text, "fstype", "",
				 "source", "", "options");
	json_t *opts = json_array();
	_cleanup_free_ char *o = xstrdup(last + 1);
	char *save = NULL;
	for (char *t = strtok_r(o, ",", &save); t; t = strtok_r(NULL, ",", &save))
		json_array_append_new(opts, json_string(t));
	return json_pack("{s:s%, s:s%, s:s%, s:o}", "target", text, (size_t)(sp1 - text),
			 "fstype", sp1 + 1, (size_t)(sp2 - sp1 - 1), "source", sp2 + 1,
			 (size_t)(last - sp2 - 1), "options", opts);
}

static json_t *mounts_json(char **mounts, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, mount_json(mounts[i]));
	return a;
}

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

int do_prepare(struct client *cl, const struct prepare_args *a, Alps__Response **reply)
{
	alps_error *err = NULL;
	struct edf_source *src = NULL;
	size_t nsrc = 0;
	if (a->edf && read_edf(a->edf, a->run ? NULL : a->user, &src, &nsrc, &err) < 0)
		return client_fail(cl, cl->cmd->name, err);
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
	int rc = prepare_send(cl, &pr, reply);
	free(srcv);
	free(storage);
	edf_sources_free(src, nsrc);
	return rc;
}

int prepare_send(struct client *cl, Alps__PrepareRequest *pr, Alps__Response **reply)
{
	alps_error *err = NULL;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_PREPARE;
	req.prepare = pr;
	Alps__Response *resp = client_call(cl, &req, on_prepare_progress, cl, &err);
	if (!resp)
		return client_fail(cl, cl->cmd->name, err);
	if (resp->status != ALPS__STATUS__OK ||
	    resp->payload_case != ALPS__RESPONSE__PAYLOAD_PREPARE_REPLY) {
		int rc = client_report_response(cl, cl->cmd->name, resp);
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
	while ((opt = command_getopt(cl, argc, argv, "j:u:e:i:N:n:", opts)) != -1) {
		switch (opt) {
		case 'j': a.job = optarg; break;
		case 'u': a.user = optarg; break;
		case 'e': a.edf = optarg; break;
		case 'i': a.image = optarg; break;
		case 'N': split_nodes(&a, optarg); break;
		case 'n':
			if (client_parse_uint(cl, optarg, "--tasks", 1000000, &a.tasks) < 0)
				return EXIT_USAGE;
			if (a.tasks == 0)       /* 0 means "not given" to the daemon */
				return usage_error(cl, "--tasks must be at least 1 (leave it out "
						   "when no per-rank placement is wanted)");
			break;
		default: return command_opt_exit(opt);
		}
	}
	if (optind < argc)
		return usage_error(cl, "unexpected argument '%s'", argv[optind]);
	if (!a.job || !a.user || !!a.edf == !!a.image)
		return usage_error(cl, "--job, --user and one of --environment or --image are "
				   "required");
	Alps__Response *resp = NULL;
	int rc = do_prepare(cl, &a, &resp);
	for (size_t i = 0; i < a.nnodes; i++)
		free(a.nodes[i]);
	free(a.nodes);
	if (rc != EXIT_OK)
		return rc;
	const Alps__PrepareReply *r = resp->prepare_reply;
	if (cl->json) {
		json_t *mounts = mounts_json(r->mounts, r->n_mounts);
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

static volatile bool relay_tty;

static void relay_signal(int sig)
{
	/* With a pseudo-terminal the kernel tells the command of a new size. */
	if (sig == SIGWINCH && relay_tty)
		exectty_winch();
	else if (relay_pid > 0)
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
		client_report_response(cl, cl->cmd->name, resp);
		return start_status ? start_status : 125;
	}
	const Alps__ExecReply *er = resp->exec_reply;
	if (er->released)
		fprintf(stderr, "alps %s: the job was released while the command ran\n",
			cl->cmd->name);
	int st = er->exit_status;
	return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 125;
}

/* alpsd went away (stopped, restarted, killed) while the command ran: the
 * command goes on with its job.  Keep relaying signals and wait for it
 * (it runs as us, so a pidfd works), then say plainly that its status is
 * not known, rather than returning as if it had ended. */
static int exec_lost(struct client *cl, pid_t pid, alps_error *err)
{
	if (!relay_tty)
		fprintf(stderr, "alps %s: lost alpsd while pid %d ran (%s); waiting for it to "
			"end\n", cl->cmd->name, (int)pid, err ? err->msg : "connection closed");
	alps_error_free(err);
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd >= 0) {
		struct pollfd p = { .fd = pidfd, .events = POLLIN };
		while (poll(&p, 1, -1) < 0 && errno == EINTR)
			;
		close(pidfd);
	}
	relay_pid = 0;
	if (relay_tty)
		exectty_stop();
	relay_tty = false;
	if (cl->json)
		client_print_json(json_pack("{s:b, s:s, s:s, s:i}", "ok", 0, "code", "unavailable",
					    "message", "alpsd went away: the command's exit status "
					    "is unknown", "pid", (int)pid));
	else
		fprintf(stderr, "alps %s: pid %d ended; its exit status is unknown (alpsd was "
			"not there to see it)\n", cl->cmd->name, (int)pid);
	return 125;
}

int do_exec(struct client *cl, const char *job, unsigned rank, int argc, char **argv)
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
		client_fail(cl, cl->cmd->name, err);
		return 125;
	}
	start_status = 0;
	int fds[3] = { STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO };
	if (exectty_wanted() && !cl->json) {
		int slave;
		if (exectty_start(&slave, &err) < 0) {
			client_fail(cl, cl->cmd->name, err);
			return 125;
		}
		fds[0] = fds[1] = fds[2] = slave;
		x.tty = relay_tty = true;
	}
	install_relays();
	Alps__Response *resp = wire_call(&cl->wire, &req, fds, 3, on_exec_progress, NULL, -1, &err);
	pid_t started = relay_pid;
	if (!resp && started > 0)
		return exec_lost(cl, started, err);
	relay_pid = 0;
	if (relay_tty)
		exectty_stop();
	relay_tty = false;
	if (!resp) {
		client_fail(cl, cl->cmd->name, err);
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
	char *end;
	/* Slurm's variable, not the user's word: a bad one is rank 0, as before. */
	if (r && *r && strtoul(r, &end, 10) <= 1000000 && *end == '\0')
		rank = (unsigned)strtoul(r, NULL, 10);
	int opt;
	while ((opt = command_getopt(cl, argc, argv, "+j:r:", opts)) != -1) {
		switch (opt) {
		case 'j': job = optarg; break;
		case 'r':
			if (client_parse_uint(cl, optarg, "--rank", 1000000, &rank) < 0)
				return EXIT_USAGE;
			break;
		default: return command_opt_exit(opt);
		}
	}
	if (!job || optind >= argc)
		return usage_error(cl, "--job ID and a command are required");
	return do_exec(cl, job, rank, argc - optind, argv + optind);
}

const struct command cmd_exec = {
	.name = "exec",
	.summary = "Run a command in a prepared job's container.",
	.usage = "--job ID [--rank N] [--] COMMAND [ARG]...",
	.operand_stops = true,
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

int do_release(struct client *cl, const char *job, bool quiet)
{
	Alps__ReleaseRequest rr = ALPS__RELEASE_REQUEST__INIT;
	rr.job = (char *)job;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_RELEASE;
	req.release = &rr;
	int rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, cl->cmd->name, NULL, NULL, &rc);
	if (!resp)
		return rc;
	if (!quiet && cl->json)
		client_print_json(json_pack("{s:b, s:s, s:b}", "ok", 1, "job", job, "was_prepared",
					    resp->payload_case == ALPS__RESPONSE__PAYLOAD_RELEASE_REPLY &&
					    resp->release_reply->was_prepared));
	else if (!quiet && resp->payload_case == ALPS__RESPONSE__PAYLOAD_RELEASE_REPLY &&
		 !resp->release_reply->was_prepared)
		printf("job %s was not prepared: nothing to release\n", job);
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
	while ((opt = command_getopt(cl, argc, argv, "j:", opts)) != -1) {
		if (opt != 'j')
			return command_opt_exit(opt);
		job = optarg;
	}
	if (optind < argc)
		return usage_error(cl, "unexpected argument '%s'", argv[optind]);
	if (!job)
		return usage_error(cl, "--job ID is required");
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

static json_t *hooks_json(Alps__HookRun *const *h, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:I, s:s}", "name", h[i]->name,
						   "result", h[i]->result, "duration_ms",
						   (json_int_t)h[i]->duration_ms, "output",
						   h[i]->output));
	return a;
}

/* "cxi pmix oci:10-x.json(warned)": the hooks, with any result but ok. */
static char *hooks_summary(Alps__HookRun *const *h, size_t n)
{
	char *s = xstrdup(n ? "" : "-");
	for (size_t i = 0; i < n; i++) {
		/* An OCI hook is named by its file's path: its file name will do. */
		const char *slash = strrchr(h[i]->name, '/');
		_cleanup_free_ char *name = str_has_prefix(h[i]->name, "oci /") && slash
			? xasprintf("oci %s", slash + 1) : xstrdup(h[i]->name);
		for (char *c = name; *c; c++)
			if (*c == ' ')
				*c = ':';
		bool ok = strcmp(h[i]->result, "ok") == 0;
		char *next = xasprintf("%s%s%s%s%s%s", s, i ? " " : "", name, ok ? "" : "(",
				       ok ? "" : h[i]->result, ok ? "" : ")");
		free(s);
		s = next;
	}
	return s;
}

static int run_jobs(struct client *cl, int argc, char **argv)
{
	int rc = command_operands(cl, argc, argv, 0, 0, "");
	if (rc >= 0)
		return rc;
	Alps__JobsRequest jr = ALPS__JOBS_REQUEST__INIT;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_JOBS;
	req.jobs = &jr;
	rc = EXIT_OK;
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
			json_t *m = mounts_json(j->mounts, j->n_mounts);
			json_array_append_new(arr, json_pack("{s:s, s:i, s:s, s:s, s:s, s:I, s:o, s:o}",
				"job", j->job, "uid", (int)j->uid, "user", j->user, "image", j->image,
				"state", j->state, "created_ms", (json_int_t)j->created_ms, "mounts", m,
				"hooks", hooks_json(j->hooks, j->n_hooks)));
		}
		client_print_json(json_pack("{s:b, s:o}", "ok", 1, "jobs", arr));
	} else {
		printf("%-24s %-12s %-8s %-19s %-6s %s\n", "JOB", "USER", "STATE", "IMAGE", "MOUNTS",
		       "HOOKS");
		for (size_t i = 0; i < r->n_jobs; i++) {
			const Alps__JobInfo *j = r->jobs[i];
			_cleanup_free_ char *hooks = hooks_summary(j->hooks, j->n_hooks);
			printf("%-24s %-12s %-8s %-19.19s %-6zu %s\n", j->job, j->user, j->state,
			       *j->image ? j->image : "-", j->n_mounts, hooks);
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
