/* main.c: alpsd, the per-node alps daemon.  main() reads as the plan:
 * options, config, lock, modules, server, loop, orderly stop. */
#include <config.h>

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/ops/runjobs.h"
#include "daemon/ops/cache.h"
#include "daemon/image/import.h"
#include "daemon/ops/ops.h"
#include "daemon/image/pull.h"
#include "daemon/image/registry.h"
#include "daemon/job/ns.h"
#include "daemon/server/work.h"
#include "daemon/node/fabric.h"
#include "daemon/node/topology.h"
#include "daemon/server/metrics_http.h"
#include "daemon/server/sdnotify.h"
#include "daemon/server/server.h"
#include "daemon/store/store.h"

struct cmdline {
	const char *config_path;
	bool config_required;
	bool foreground;
	bool print_config;
	bool print_man;
	/* key=value overrides, applied after the file */
	const char *keys[16];
	const char *values[16];
	size_t noverrides;
};

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: alpsd [OPTION]...\n"
		"The alps node daemon: image cache, job containers, node topology.\n\n"
		"  -c, --config FILE        configuration file (default %s/alpsd.conf)\n"
		"  -s, --socket PATH        listen on PATH (daemon.socket)\n"
		"      --state-dir DIR      image store: database and layers (daemon.state_dir)\n"
		"      --run-dir DIR        job state (daemon.run_dir)\n"
		"      --topology-xml FILE  load the node topology from an hwloc XML file\n"
		"  -f, --foreground         do not detach (implied under systemd)\n"
		"  -l, --log-level LEVEL    error, warn, notice, info or debug\n"
		"      --set KEY=VALUE      set any option, e.g. --set store.compression_level=6\n"
		"      --print-config       print the effective configuration and exit\n"
		"      --print-options-man  print alpsd.conf(5) (every option) and exit\n"
		"  -h, --help               this help\n"
		"  -V, --version            print the version\n\n"
		"Signals: SIGTERM/SIGINT stop (in-flight requests get daemon.shutdown_grace\n"
		"seconds), SIGHUP reloads the configuration.  See alpsd(8).\n",
		ALPS_CONFDIR);
}

static void add_override(struct cmdline *cl, const char *key, const char *value)
{
	if (cl->noverrides == ARRAY_SIZE(cl->keys)) {
		fprintf(stderr, "alpsd: too many option overrides\n");
		exit(2);
	}
	cl->keys[cl->noverrides] = key;
	cl->values[cl->noverrides++] = value;
}

static void parse_cmdline(int argc, char **argv, struct cmdline *cl)
{
	enum { OPT_STATE = 256, OPT_RUN, OPT_TOPO, OPT_SET, OPT_PRINT, OPT_MAN };
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "state-dir", required_argument, NULL, OPT_STATE },
		{ "run-dir", required_argument, NULL, OPT_RUN },
		{ "topology-xml", required_argument, NULL, OPT_TOPO },
		{ "foreground", no_argument, NULL, 'f' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "set", required_argument, NULL, OPT_SET },
		{ "print-config", no_argument, NULL, OPT_PRINT },
		{ "print-options-man", no_argument, NULL, OPT_MAN },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "c:s:fl:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': cl->config_path = optarg; cl->config_required = true; break;
		case 's': add_override(cl, "daemon.socket", optarg); break;
		case OPT_STATE: add_override(cl, "daemon.state_dir", optarg); break;
		case OPT_RUN: add_override(cl, "daemon.run_dir", optarg); break;
		case OPT_TOPO: add_override(cl, "topology.xml", optarg); break;
		case 'f': cl->foreground = true; break;
		case 'l': add_override(cl, "daemon.log_level", optarg); break;
		case OPT_SET: {
			char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg) {
				fprintf(stderr, "alpsd: --set wants KEY=VALUE, not '%s'\n", optarg);
				exit(2);
			}
			*eq = '\0';
			add_override(cl, optarg, eq + 1);
			break;
		}
		case OPT_PRINT: cl->print_config = true; break;
		case OPT_MAN: cl->print_man = true; break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("alpsd %s\n", PACKAGE_VERSION); exit(0);
		default:        /* getopt said what was wrong */
			fprintf(stderr, "See 'alpsd --help'.\n");
			exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "alpsd: unexpected argument '%s'\n", argv[optind]);
		exit(2);
	}
	if (!cl->config_path)
		cl->config_path = ALPS_CONFDIR "/alpsd.conf";
}

/* The whole configuration: defaults, file, command line, checks. */
static struct config *load_config(const struct cmdline *cl, alps_error **err)
{
	struct config *c = config_new_defaults();
	if (config_load_file(c, cl->config_path, cl->config_required, err) < 0)
		goto fail;
	for (size_t i = 0; i < cl->noverrides; i++)
		if (config_set(c, cl->keys[i], cl->values[i], err) < 0) {
			alps_error_prefix(err, "command line");
			goto fail;
		}
	if (config_validate(c, err) < 0)
		goto fail;
	return c;
fail:
	config_free(c);
	return NULL;
}

/* One alpsd per store: a second one would corrupt it. */
static int lock_state_dir(struct daemon *d, alps_error **err)
{
	const char *dir = d->cfg->state_dir;
	if (mkdir_p(dir, 0700) < 0)
		return alps_fail_errno(err, "cannot create the state directory %s", dir);
	if (mkdir_p(d->cfg->run_dir, 0755) < 0)
		return alps_fail_errno(err, "cannot create the run directory %s", d->cfg->run_dir);
	_cleanup_free_ char *path = xasprintf("%s/alpsd.lock", dir);
	d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (d->lock_fd < 0)
		return alps_fail_errno(err, "cannot open the lock file %s", path);
	if (flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK) {
			char pid[32] = "";
			ssize_t n = pread(d->lock_fd, pid, sizeof(pid) - 1, 0);
			pid[n > 0 ? n : 0] = '\0';
			pid[strcspn(pid, "\n")] = '\0';
			return alps_fail(err, ALPS_E_EXISTS,
					 "another alpsd (pid %s) is using the store %s",
					 *pid ? pid : "?", dir);
		}
		return alps_fail_errno(err, "cannot lock %s", path);
	}
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (ftruncate(d->lock_fd, 0) < 0 || pwrite(d->lock_fd, buf, (size_t)len, 0) != len)
		log_warn("cannot write pid to %s: %s", path, strerror(errno));
	return 0;
}

/* Many idle clients each hold an fd: take what the hard limit allows. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("cannot raise the open-file limit: %s", strerror(errno));
	}
}

static void on_shutdown_tick(evutil_socket_t fd, short what, void *arg);

static void schedule_shutdown_tick(struct daemon *d)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
	event_base_once(d->base, -1, EV_TIMEOUT, on_shutdown_tick, d, &tv);
}

/* Milliseconds since the stop signal.  The clock is monotonic, but a
 * subtraction of unsigned times must never wrap into a huge "waited". */
static uint64_t ms_since_stop(const struct daemon *d)
{
	uint64_t now = now_monotonic_ms();
	return now > d->stop_ms ? now - d->stop_ms : 0;
}

/* Wait for in-flight requests, within the grace period. */
static void on_shutdown_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	uint64_t waited = ms_since_stop(d);
	size_t busy = server_busy(d->server);
	if (busy == 0 || waited >= (uint64_t)d->cfg->shutdown_grace_s * 1000) {
		if (busy)
			log_warn("stopping with %zu request(s) still in flight after %llu ms",
				 busy, (unsigned long long)waited);
		event_base_loopexit(d->base, NULL);
		return;
	}
	schedule_shutdown_tick(d);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	if (d->stopping) {
		log_notice("second signal: stopping now");
		event_base_loopexit(d->base, NULL);
		return;
	}
	log_notice("%s: stopping (no new connections; %zu request(s) in flight)",
		   sig == SIGTERM ? "SIGTERM" : "SIGINT", server_busy(d->server));
	sd_notify_state("STOPPING=1");
	d->stopping = true;
	d->stop_ms = now_monotonic_ms();
	server_stop_accepting(d->server);
	on_shutdown_tick(-1, 0, d);
}

/* The node's topology as c configures it, or NULL: a failure is logged
 * and leaves the daemon serving everything else (topology requests then
 * say why).  Blocking (hwloc reads /sys): at start-up or on the pool. */
static struct topology *topology_from(const struct config *c, bool have_old)
{
	alps_error *err = NULL;
	struct topology_opts o = topology_opts_from_config(c);
	struct topology *t = NULL;
	uint64_t t0 = now_monotonic_ms();
	if (topology_load(&o, &t, &err) < 0) {
		log_error("topology: %s%s", err->msg, have_old ? " (keeping the previous one)" : "");
		alps_error_free(err);
		return NULL;
	}
	log_info("topology loaded from %s in %llu ms", *c->topology_xml ? c->topology_xml
		 : "the live machine", (unsigned long long)(now_monotonic_ms() - t0));
	return t;
}

/* Work that took the old topology keeps it until it ends. */
static void topology_swap(struct daemon *d, struct topology *t)
{
	if (!t)
		return;
	topology_unref(d->topology);
	d->topology = t;
}

static bool in_list(char **v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

/* After a restart: prepared jobs survive (their namespaces are pinned), so
 * the table and what is really mounted are brought back in line.  A row
 * without a namespace goes; a namespace without a row is released; layer
 * mounts are recounted from the jobs that use them. */
static void reconcile_jobs(struct daemon *d)
{
	const char *run_dir = d->cfg->run_dir;
	alps_error *err = NULL;
	struct job_reconcile r = { 0 };
	struct store_job *jobs = NULL;
	size_t n = 0;
	if (job_reconcile(run_dir, &r, &err) < 0 ||
	    store_job_list(d->store, STORE_UID_ANY, &jobs, &n, &err) < 0) {
		log_error("cannot reconcile jobs with %s: %s", run_dir, err->msg);
		alps_error_free(err);
		return;
	}
	char **ids = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		ids[i] = jobs[i].id;
		if (in_list(r.pinned, r.npinned, jobs[i].id))
			continue;
		log_warn("job %s: its namespace is gone; dropping it from the table", jobs[i].id);
		if (store_job_delete(d->store, jobs[i].id, &err) < 0) {
			log_error("job %s: %s", jobs[i].id, err->msg);
			alps_error_free(err);
			err = NULL;
		}
	}
	for (size_t i = 0; i < r.npinned; i++) {
		if (in_list(ids, n, r.pinned[i]))
			continue;
		log_warn("job %s: pinned namespace without a table row; releasing it", r.pinned[i]);
		if (job_release(run_dir, r.pinned[i], &err) < 0) {
			log_error("job %s: %s", r.pinned[i], err->msg);
			alps_error_free(err);
			err = NULL;
		}
	}
	free(ids);
	store_jobs_free(jobs, n);
	job_reconcile_free(&r);
	memset(&r, 0, sizeof(r));
	/* Again, now that the table and the namespaces agree. */
	if (job_reconcile(run_dir, &r, &err) < 0 || job_reconcile_apply(run_dir, &r, &err) < 0) {
		log_error("cannot reconcile layer mounts in %s: %s", run_dir, err->msg);
		alps_error_free(err);
	}
	job_reconcile_free(&r);
}

/* Detached: neither --foreground nor under systemd (log.target = auto). */
static bool detached(const struct cmdline *cl)
{
	return !cl->foreground && getenv("NOTIFY_SOCKET") == NULL;
}

/* What status and metrics say of the last reload: why it failed, or NULL. */
static void reload_result(struct daemon *d, const char *why)
{
	free(d->reload_error);
	d->reload_error = why ? xstrdup(why) : NULL;
}

/* Options that cannot change under a running daemon. */
static bool reload_allowed(const struct config *old, const struct config *new)
{
	const char *fixed[][3] = {
		{ "daemon.socket", old->socket_path, new->socket_path },
		{ "daemon.state_dir", old->state_dir, new->state_dir },
		{ "daemon.run_dir", old->run_dir, new->run_dir },
	};
	bool ok = true;
	for (size_t i = 0; i < ARRAY_SIZE(fixed); i++) {
		if (strcmp(fixed[i][1], fixed[i][2]) != 0) {
			log_error("reload refused: %s cannot change while alpsd runs (restart it)",
				  fixed[i][0]);
			ok = false;
		}
	}
	return ok;
}

/* A reload reads the file and loads the topology on the pool (both may
 * block), then swaps them in on the loop.  Signals during one coalesce
 * into one more: a SIGHUP storm never queues up reloads. */
struct reload {
	struct daemon *d;
	struct config *cfg;             /* the new one, or NULL */
	struct topology *topology;      /* loaded with it, or NULL */
	alps_error *err;
};

static void reload_load(void *arg)
{
	struct reload *r = arg;
	r->cfg = load_config(r->d->cmdline, &r->err);
	if (r->cfg)
		r->topology = topology_from(r->cfg, true);
}

static void reload_apply(struct daemon *d, struct config *c, struct topology *t)
{
	alps_error *err = NULL;
	if (c->workers != d->cfg->workers)
		log_notice("daemon.workers takes effect at the next start");
	if (strcmp(c->metrics_listen, d->cfg->metrics_listen) != 0)
		log_notice("metrics.listen takes effect at the next start");
	/* Work that took the old snapshot keeps it until it ends. */
	config_unref(d->cfg);
	d->cfg = c;
	log_set_level((enum log_level)log_level_parse(c->log_level));
	if (log_set_target(c->log_target, detached(d->cmdline)) < 0)
		log_error("log.target %s: %s (keeping the previous target)", c->log_target,
			  strerror(errno));
	server_reconfigure(d->server);
	topology_swap(d, t);
	if (d->fabric && fabric_reload_peers(d->fabric, d->cfg, &err) < 0) {
		log_error("fabric peers: %s (keeping the previous list)", err->msg);
		alps_error_free(err);
	}
	log_notice("configuration reloaded from %s", d->cmdline->config_path);
}

static void reload_start(struct daemon *d);

static void reload_done(void *arg)
{
	struct reload *r = arg;
	struct daemon *d = r->d;
	if (!r->cfg) {
		log_error("reload failed, keeping the running configuration: %s", r->err->msg);
		reload_result(d, r->err->msg);
	} else if (d->stopping || !reload_allowed(d->cfg, r->cfg)) {
		if (!d->stopping)
			reload_result(d, "refused: an option that needs a restart changed (see the log)");
		config_unref(r->cfg);
		topology_unref(r->topology);
	} else {
		reload_apply(d, r->cfg, r->topology);
		reload_result(d, NULL);
	}
	alps_error_free(r->err);
	free(r);
	d->reloading = false;
	if (d->reload_again && !d->stopping) {
		d->reload_again = false;
		reload_start(d);
		return;
	}
	sd_notify_state("READY=1");
}

static void reload_start(struct daemon *d)
{
	struct reload *r = xzalloc(sizeof(*r));
	r->d = d;
	alps_error *err = NULL;
	if (work_submit(d, reload_load, reload_done, r, &err) < 0) {
		log_error("cannot reload: %s", err->msg);
		alps_error_free(err);
		free(r);
		sd_notify_state("READY=1");
		return;
	}
	d->reloading = true;
}

static void on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	if (d->stopping)
		return;
	if (d->reloading) {
		d->reload_again = true;
		return;
	}
	sd_notify_state("RELOADING=1");
	reload_start(d);
}

/* daemon.workers, or one thread per online CPU. */
static unsigned pool_threads(const struct config *c)
{
	if (c->workers > 0)
		return (unsigned)c->workers;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
}

/* Detach unless told not to: the parent exits once the child is ready (or
 * failed), so "alpsd && alps status" works from a shell. */
static int daemonize(int *ready_fd, bool keep_stderr)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		log_fatal("pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0)
		log_fatal("fork: %s", strerror(errno));
	if (pid > 0) {
		close(p[1]);
		char c = 0;
		ssize_t n;
		do
			n = read(p[0], &c, 1);
		while (n < 0 && errno == EINTR);
		_exit(n == 1 && c == 'R' ? 0 : 1);
	}
	close(p[0]);
	if (setsid() < 0)
		log_fatal("setsid: %s", strerror(errno));
	/* The log has its target (syslog or a file) by now, unless it was
	 * told stderr: the terminal the daemon was started from is let go. */
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		if (!keep_stderr)
			dup2(null, STDERR_FILENO);
		close(null);
	}
	*ready_fd = p[1];
	return 0;
}

/* The state directory, the store, the jobs left from before, the
 * topology (fatal on failure: start-up only). */
static void open_state(struct daemon *d)
{
	alps_error *err = NULL;
	d->pid = getpid();
	d->start_ms = now_monotonic_ms();
	raise_fd_limit();
	signal(SIGPIPE, SIG_IGN);
	if (lock_state_dir(d, &err) < 0)
		log_fatal("%s", err->msg);
	if (store_open(d->cfg->state_dir, &d->store, &err) < 0)
		log_fatal("%s", err->msg);
	if (registry_global_init(&err) < 0)
		log_fatal("%s", err->msg);
	reconcile_jobs(d);
	d->topology = topology_from(d->cfg, false);
}

/* The loop and what runs on it: fabric, pool, puller, server, timers. */
static void start_services(struct daemon *d, int listen_fd)
{
	alps_error *err = NULL;
	evthread_use_pthreads();
	d->base = event_base_new();
	if (!d->base)
		log_fatal("cannot create the event loop");
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	d->node_name = xstrdup(*d->cfg->fabric_node ? d->cfg->fabric_node : host);
	/* Before threads: it may set a libfabric variable in environ. */
	if (d->cfg->fabric_enabled && fabric_open(d->base, d->cfg, d->node_name, &d->fabric, &err) < 0)
		log_fatal("fabric: %s", err->msg);
	d->pool = work_pool_new(d->base, pool_threads(d->cfg), &err);
	if (!d->pool)
		log_fatal("%s", err->msg);
	d->puller = puller_new(d->base, d->store, d->pool, (unsigned)d->cfg->max_parallel_layers);
	if (server_start(d, d->cfg->socket_path, listen_fd, &d->server, &err) < 0)
		log_fatal("%s", err->msg);
	if (metrics_http_start(d, &d->metrics_http, &err) < 0)
		log_fatal("%s", err->msg);
	runjobs_start(d);
	cache_start(d);
}

static void tell_ready(const struct daemon *d, int ready_fd)
{
	log_notice("alpsd %s ready on %s (store %s, pid %d)", PACKAGE_VERSION,
		   d->cfg->socket_path, d->cfg->state_dir, (int)d->pid);
	sd_notify_state("READY=1");
	if (ready_fd >= 0) {
		if (write(ready_fd, "R", 1) != 1)
			log_warn("cannot tell the parent we are ready: %s", strerror(errno));
		close(ready_fd);
	}
}

/* In the reverse order of the start, once the loop has ended. */
static void stop_services(struct daemon *d)
{
	d->stopping = true;     /* a reload that ends while draining is dropped */
	exec_shutdown();
	server_free(d->server);
	/* Pulls first give up, so that draining the pool of their layer
	 * conversions is quick; then their threads are joined. */
	puller_stop(d->puller);
	import_stop();
	work_drain(d);
	metrics_http_free(d->metrics_http);     /* its answers in preparation are done */
	ops_gauges_free();
	cache_stop();
	runjobs_stop();
	puller_free(d->puller);
	work_pool_free(d->pool);
	fabric_close(d->fabric);
	store_close(d->store);
	registry_global_cleanup();
	topology_unref(d->topology);
}

int main(int argc, char **argv)
{
	struct cmdline cl = { 0 };
	parse_cmdline(argc, argv, &cl);
	if (cl.print_man) {     /* the build writes alpsd.conf(5) with it */
		config_print_man(stdout);
		return 0;
	}
	log_init("alpsd", LOG_LVL_INFO, getenv("JOURNAL_STREAM") != NULL);

	alps_error *err = NULL;
	struct daemon d = { .lock_fd = -1, .cmdline = &cl };
	d.cfg = load_config(&cl, &err);
	if (!d.cfg) {           /* FILE:LINE:COL: key: reason, without a log prefix */
		fprintf(stderr, "alpsd: %s\n", err->msg);
		alps_error_free(err);
		return 1;
	}
	if (cl.print_config) {
		config_print(d.cfg, stdout);
		config_free(d.cfg);
		return 0;
	}
	log_set_level((enum log_level)log_level_parse(d.cfg->log_level));

	int listen_fd = sd_listen_fd();
	int ready_fd = -1;
	if (log_set_target(d.cfg->log_target, detached(&cl)) < 0) {
		fprintf(stderr, "alpsd: log.target %s: %s\n", d.cfg->log_target, strerror(errno));
		return 1;
	}
	if (detached(&cl))
		daemonize(&ready_fd, strcmp(d.cfg->log_target, "stderr") == 0);
	open_state(&d);
	start_services(&d, listen_fd);

	struct event *ev_term = evsignal_new(d.base, SIGTERM, on_stop_signal, &d);
	struct event *ev_int = evsignal_new(d.base, SIGINT, on_stop_signal, &d);
	struct event *ev_hup = evsignal_new(d.base, SIGHUP, on_reload_signal, &d);
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	event_add(ev_hup, NULL);
	tell_ready(&d, ready_fd);

	event_base_dispatch(d.base);

	stop_services(&d);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_base_free(d.base);
	libevent_global_shutdown();
	close(d.lock_fd);
	log_notice("stopped");
	free(d.node_name);
	free(d.reload_error);
	config_unref(d.cfg);
	return 0;
}
