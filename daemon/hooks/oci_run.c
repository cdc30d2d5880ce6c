/* oci_run.c: running OCI hooks (oci_hooks_run in oci.h), and the hooks a
 * job keeps for its release as JSON.
 *
 * A hook is spawned (posix_spawn: no daemon code runs in the child) in a
 * process group of its own, with the state on stdin and its stdout and
 * stderr into one pipe, of which the first OCI_HOOK_MAX_OUTPUT bytes are
 * kept for the error.  At its timeout the whole group is killed.  This
 * runs in a worker thread: the loop never waits for a hook. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/hooks/hooks.h"
#include "daemon/hooks/oci.h"
#include "daemon/job/sys.h"

struct run {
	const struct oci_hook *hook;
	pid_t pid;
	int pidfd, out;
	char output[OCI_HOOK_MAX_OUTPUT + 1];
	size_t nout;
};

static int spawn_hook(struct run *r, int in_fd, int out_fd, alps_error **err)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	int rc = posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(&fa, out_fd, 2);
	if (rc == 0)
		rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
						   POSIX_SPAWN_SETSIGDEF);
	if (rc == 0)
		rc = posix_spawnattr_setsigmask(&at, &none);
	if (rc == 0)
		rc = posix_spawnattr_setsigdefault(&at, &all);
	const struct oci_hook *h = r->hook;
	char *argv0[] = { h->path, NULL };
	char **argv = h->args && h->args[0] ? h->args : argv0;
	if (rc == 0)
		rc = posix_spawn(&r->pid, h->path, &fa, &at, argv, h->env);
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		return alps_fail_errnum(err, rc, "OCI hook %s: cannot start %s", h->name, h->path);
	return 0;
}

/* Read what is there; true at end of file. */
static bool drain(struct run *r)
{
	char buf[4096];
	ssize_t n;
	while ((n = read(r->out, buf, sizeof(buf))) > 0) {
		size_t keep = OCI_HOOK_MAX_OUTPUT - r->nout;
		if (keep > (size_t)n)
			keep = (size_t)n;
		memcpy(r->output + r->nout, buf, keep);
		r->nout += keep;
	}
	r->output[r->nout] = '\0';
	return n == 0;
}

/* Until the hook exits or the deadline; false at the deadline. */
static bool wait_exit(struct run *r, uint64_t deadline)
{
	bool out_open = true;
	for (;;) {
		uint64_t now = now_monotonic_ms();
		if (now >= deadline)
			return false;
		struct pollfd p[2] = { { .fd = r->pidfd, .events = POLLIN },
				       { .fd = out_open ? r->out : -1, .events = POLLIN } };
		uint64_t left = deadline - now;
		if (poll(p, 2, left > 60000 ? 60000 : (int)left) < 0 && errno != EINTR)
			return false;
		if (p[1].revents && drain(r))
			out_open = false;   /* closed; a hook may still run */
		if (p[0].revents) {
			drain(r);
			return true;
		}
	}
}

static int finish(struct run *r, bool exited, alps_error **err)
{
	const struct oci_hook *h = r->hook;
	int status = 0;
	if (!exited)
		kill(-r->pid, SIGKILL);
	while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR)
		;
	_cleanup_free_ char *out = log_escape(r->output, 400);
	if (!exited)
		return alps_fail(err, ALPS_E_TIMEOUT, "OCI hook %s (%s) was killed after its timeout "
				 "of %d s%s%s", h->name, h->path, h->timeout_s, *out ? ": " : "", out);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	_cleanup_free_ char *how = WIFEXITED(status)
		? xasprintf("exit status %d", WEXITSTATUS(status))
		: xasprintf("signal %d", WTERMSIG(status));
	return alps_fail(err, ALPS_E_IO, "OCI hook %s (%s) failed: %s%s%s", h->name, h->path, how,
			 *out ? ": " : "", out);
}

/* The state to the hook's stdin: small (below a pipe's buffer), and a
 * hook that does not read it still runs. */
static void feed_state(const struct oci_hook *h, int fd, const char *state)
{
	fcntl(fd, F_SETFL, O_NONBLOCK);
	if (write_all(fd, state, strlen(state)) < 0 && errno != EAGAIN && errno != EPIPE)
		log_warn("OCI hook %s: writing its state: %s", h->name, strerror(errno));
}

/* After the spawn: the state in, the output read, the exit awaited. */
static int supervise(struct run *r, int in_fd, const char *state, alps_error **err)
{
	feed_state(r->hook, in_fd, state);
	close(in_fd);
	fcntl(r->out, F_SETFL, O_NONBLOCK);
	r->pidfd = sys_pidfd_open(r->pid, 0);
	uint64_t deadline = now_monotonic_ms() + (uint64_t)r->hook->timeout_s * 1000u;
	bool exited = r->pidfd >= 0 && wait_exit(r, deadline);
	int rc = finish(r, exited, err);
	if (r->pidfd >= 0)
		close(r->pidfd);
	return rc;
}

/* What the hook did, for `alps jobs` (hookrec.c). */
static void record_run(const struct run *r, json_t *record, uint64_t t0, int rc,
		       const alps_error *err)
{
	if (!record)
		return;
	_cleanup_free_ char *name = xasprintf("oci %s", r->hook->name);
	_cleanup_free_ char *tail = hook_output_tail(r->output);
	if (rc < 0 && err && !*tail) {
		free(tail);
		tail = log_escape(err->msg, 1024);
	}
	hook_record(record, name, rc == 0 ? "ok" : "failed", now_monotonic_ms() - t0, tail);
}

static int run_one(const struct oci_hook *h, const char *state, json_t *record,
		   alps_error **err)
{
	int in[2], out[2];
	struct run r = { .hook = h, .pidfd = -1 };
	uint64_t t0 = now_monotonic_ms();
	if (pipe2(in, O_CLOEXEC) < 0)
		return alps_fail_errno(err, "pipe() for OCI hook %s", h->name);
	if (pipe2(out, O_CLOEXEC) < 0) {
		close(in[0]);
		close(in[1]);
		return alps_fail_errno(err, "pipe() for OCI hook %s", h->name);
	}
	int rc = spawn_hook(&r, in[0], out[1], err);
	close(in[0]);
	close(out[1]);
	r.out = out[0];
	if (rc == 0)
		rc = supervise(&r, in[1], state, err);
	else
		close(in[1]);
	close(r.out);
	record_run(&r, record, t0, rc, rc < 0 ? *err : NULL);
	return rc;
}

json_t *oci_annotations(const struct edf *edf)
{
	json_t *ann = json_object();
	for (size_t i = 0; edf && i < edf->nannotations; i++)
		json_object_set_new(ann, edf->annotations[i].key,
				    json_string(edf->annotations[i].value));
	return ann;
}

static char *state_json(const char *job, const char *bundle, pid_t pid, json_t *annotations,
			enum oci_stage stage)
{
	json_t *s = json_pack("{s:s, s:s, s:s, s:s, s:O}", "ociVersion", "1.0.2", "id", job,
			      "status", stage == OCI_STAGE_POSTSTOP ? "stopped" : "created",
			      "bundle", bundle, "annotations",
			      json_is_object(annotations) ? annotations : json_object());
	if (pid > 0)
		json_object_set_new(s, "pid", json_integer(pid));
	char *text = json_dumps(s, JSON_COMPACT);
	json_decref(s);
	return text;
}

int oci_hooks_run(const struct oci_hooks *hooks, enum oci_stage stage, const char *job,
		  const char *bundle, pid_t pid, json_t *annotations, alps_error **err)
{
	return oci_hooks_run_rec(hooks, stage, job, bundle, pid, annotations, NULL, err);
}

int oci_hooks_run_rec(const struct oci_hooks *hooks, enum oci_stage stage, const char *job,
		      const char *bundle, pid_t pid, json_t *annotations, json_t *record,
		      alps_error **err)
{
	if (!hooks)
		return 0;
	_cleanup_free_ char *state = state_json(job, bundle, pid, annotations, stage);
	for (size_t i = 0; i < hooks->n; i++) {
		if (!(hooks->v[i].stages & stage))
			continue;
		if (run_one(&hooks->v[i], state, record, err) < 0)
			return -1;
		log_info("job %s: OCI hook %s ran", job, hooks->v[i].name);
	}
	return 0;
}

/* ---- kept until release ---- */

static json_t *strv_json(char **v)
{
	json_t *a = json_array();
	for (size_t i = 0; v && v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

json_t *oci_hooks_to_json(const struct oci_hooks *hooks, enum oci_stage stage)
{
	json_t *a = json_array();
	for (size_t i = 0; hooks && i < hooks->n; i++) {
		const struct oci_hook *h = &hooks->v[i];
		if (h->stages & stage)
			json_array_append_new(a, json_pack("{s:s, s:s, s:o, s:o, s:i}", "name", h->name,
							    "path", h->path, "args", strv_json(h->args),
							    "env", strv_json(h->env), "timeout",
							    h->timeout_s));
	}
	return a;
}

static char **json_strv(const json_t *a)
{
	size_t n = json_array_size(a), i;
	const json_t *v;
	char **out = xcalloc(n + 1, sizeof(char *));
	size_t k = 0;
	json_array_foreach(a, i, v)
		if (json_is_string(v))
			out[k++] = xstrdup(json_string_value(v));
	return out;
}

struct oci_hooks *oci_hooks_from_json(const json_t *array)
{
	struct oci_hooks *hooks = xzalloc(sizeof(*hooks));
	size_t i;
	const json_t *o;
	hooks->v = xcalloc(json_array_size(array) + 1, sizeof(*hooks->v));
	json_array_foreach(array, i, o) {
		const char *name = json_string_value(json_object_get(o, "name"));
		const char *path = json_string_value(json_object_get(o, "path"));
		json_int_t t = json_integer_value(json_object_get(o, "timeout"));
		if (!name || !path || path[0] != '/' || t < 1 || t > 3600)
			continue;
		struct oci_hook *h = &hooks->v[hooks->n++];
		h->name = xstrdup(name);
		h->path = xstrdup(path);
		h->args = json_strv(json_object_get(o, "args"));
		h->env = json_strv(json_object_get(o, "env"));
		h->timeout_s = (int)t;
		h->stages = OCI_STAGE_POSTSTOP;
	}
	return hooks;
}
