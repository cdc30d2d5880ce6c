/* fabric_map.c: what the warm peer table buys a job, and what it costs.
 *
 *	tests/bench/fabric_map [--max-nodes N] [--idle-seconds S] [--port P]
 *
 * warm   N fabric instances in one process (one loop), node 0 with all the
 *        others as peers; once its table is up, the time to build a job's
 *        map of all N nodes from it, as JSON text (what the job container
 *        writes to /run/alps/fabric.json).
 * cold   N processes that each do what a job does without the table:
 *        fi_getinfo, fabric, domain, CQ, AV, endpoint, fi_getname, an
 *        address exchange through the launcher (pipes here), fi_av_insert
 *        of all N, then one message around a ring (the first connection).
 * idle   one instance with 1,000 peers nobody answers (127.1.x.y, closed
 *        ports): CPU (utime+stime from /proc/<pid>/stat) and RSS.
 *
 * Only loopback addresses are used.  Every phase runs in a child process
 * (the parent never initializes libfabric, so forking stays clean), is
 * bounded in time, and children are ended by their PID. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/node/fabric.h"

#define PHASE_TIMEOUT_S 60
#define ADDR_MAX 64

static uint16_t base_port = 23771;

static double now_s(void)
{
	return (double)now_monotonic_ns() / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Run fn(arg, fd) in a child; its result comes back as text through fd. */
static int in_child(int (*fn)(void *, int), void *arg, char *out, size_t size)
{
	int p[2];
	if (pipe(p) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		alarm(PHASE_TIMEOUT_S);
		_exit(fn(arg, p[1]) == 0 ? 0 : 1);
	}
	close(p[1]);
	size_t got = 0;
	ssize_t n;
	while (got + 1 < size && (n = read(p[0], out + got, size - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(p[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---- warm: the job map from the table ---- */

static struct config *node_config(const char *addr, uint16_t port, const char *peers,
				  const char *peers_file, const char *interval)
{
	struct config *c = config_new_defaults();
	alps_error *err = NULL;
	char portbuf[8];
	snprintf(portbuf, sizeof(portbuf), "%u", port);
	if (config_set(c, "fabric.address", addr, &err) < 0 ||
	    config_set(c, "fabric.port", portbuf, &err) < 0 ||
	    config_set(c, "fabric.provider", "tcp", &err) < 0 ||
	    config_set(c, "fabric.liveness_interval_ms", interval, &err) < 0 ||
	    config_set(c, "fabric.peer_down_after_ms", "60000", &err) < 0 ||
	    (peers && config_set(c, "fabric.peers", peers, &err) < 0) ||
	    (peers_file && config_set(c, "fabric.peers_file", peers_file, &err) < 0))
		log_fatal("%s", err->msg);
	return c;
}

struct warm_arg {
	size_t n;
	unsigned reps;
};

static int warm_child(void *p, int out)
{
	struct warm_arg *a = p;
	size_t n = a->n;
	struct event_base *base = event_base_new();
	struct fabric **f = xcalloc(n, sizeof(*f));
	char **names = xcalloc(n, sizeof(*names));
	for (size_t i = 0; i < n; i++)
		names[i] = xasprintf("127.0.1.%zu", i + 1);
	_cleanup_free_ char *all = xstrdup("");
	for (size_t i = 1; i < n; i++) {
		char *s = xasprintf("%s%s%s", all, i > 1 ? "," : "", names[i]);
		free(all);
		all = s;
	}
	double t0 = now_s();
	for (size_t i = 0; i < n; i++) {
		struct config *c = node_config(names[i], base_port, i == 0 ? all : names[0], NULL, "1000");
		alps_error *err = NULL;
		if (fabric_open(base, c, names[i], &f[i], &err) < 0)
			log_fatal("%s", err->msg);
		config_free(c);
	}
	struct fabric_stats st = { 0 };
	while (now_s() - t0 < 30) {
		event_base_loop(base, EVLOOP_ONCE);
		fabric_get_stats(f[0], &st);
		if (st.peers_up == n - 1)
			break;
	}
	double converge = now_s() - t0;
	double *t = xcalloc(a->reps, sizeof(*t));
	size_t bytes = 0;
	for (unsigned r = 0; r < a->reps; r++) {
		double s = now_s();
		json_t *map;
		char **down;
		size_t ndown;
		if (fabric_job_map(f[0], (const char *const *)names, n, &map, &down, &ndown, NULL) < 0)
			log_fatal("job map failed");
		char *text = json_dumps(map, JSON_COMPACT);
		t[r] = now_s() - s;
		bytes = strlen(text);
		free(text);
		json_decref(map);
		fabric_strv_free(down);
	}
	qsort(t, a->reps, sizeof(*t), cmp_double);
	dprintf(out, "%zu %.3f %.1f %.1f %zu\n", st.peers_up + 1, converge, t[a->reps / 2] * 1e6,
		t[a->reps * 99 / 100] * 1e6, bytes);
	for (size_t i = 0; i < n; i++) {
		fabric_close(f[i]);
		free(names[i]);
	}
	free(t);
	free(f);
	free(names);
	event_base_free(base);
	return 0;
}

/* ---- cold: what every job does without the table ---- */

struct cold_ep {
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_ep *ep;
};

static int cold_open(struct cold_ep *c, size_t rank, uint8_t *addr, size_t *addrlen)
{
	char node[32], service[8];
	snprintf(node, sizeof(node), "127.0.2.%zu", rank + 1);
	snprintf(service, sizeof(service), "%u", base_port + 1);
	struct fi_info *hints = fi_allocinfo();
	hints->caps = FI_MSG;
	hints->ep_attr->type = FI_EP_RDM;
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	hints->fabric_attr->prov_name = xstrdup("tcp;ofi_rxm");
	int rc = fi_getinfo(FI_VERSION(1, 9), node, service, FI_SOURCE, hints, &c->info);
	fi_freeinfo(hints);
	struct fi_cq_attr cq_attr = { .format = FI_CQ_FORMAT_CONTEXT, .size = 64 };
	struct fi_av_attr av_attr = { .type = FI_AV_UNSPEC };
	if (rc || fi_fabric(c->info->fabric_attr, &c->fabric, NULL) ||
	    fi_domain(c->fabric, c->info, &c->domain, NULL) ||
	    fi_cq_open(c->domain, &cq_attr, &c->cq, NULL) ||
	    fi_av_open(c->domain, &av_attr, &c->av, NULL) ||
	    fi_endpoint(c->domain, c->info, &c->ep, NULL) ||
	    fi_ep_bind(c->ep, &c->cq->fid, FI_TRANSMIT | FI_RECV) ||
	    fi_ep_bind(c->ep, &c->av->fid, 0) || fi_enable(c->ep))
		return -1;
	return fi_getname(&c->ep->fid, addr, addrlen) ? -1 : 0;
}

/* One message to the next rank, one from the previous: each rank's first
 * connection, as a job's first collective would make. */
static int cold_ring(struct cold_ep *c, fi_addr_t next)
{
	char sbuf[64] = "hello", rbuf[64];
	struct fi_context2 sctx, rctx;
	if (fi_recv(c->ep, rbuf, sizeof(rbuf), NULL, FI_ADDR_UNSPEC, &rctx))
		return -1;
	bool sent = false;
	int done = 0;
	double t0 = now_s();
	while (done < 2 && now_s() - t0 < 30) {
		if (!sent) {
			ssize_t rc = fi_send(c->ep, sbuf, sizeof(sbuf), NULL, next, &sctx);
			if (rc == 0)
				sent = true;
			else if (rc != -FI_EAGAIN)
				return -1;
		}
		struct fi_cq_entry e[4];
		ssize_t n = fi_cq_read(c->cq, e, 4);
		if (n > 0)
			done += (int)n;
		else if (n != -FI_EAGAIN)
			return -1;
	}
	return done == 2 ? 0 : -1;
}

static void cold_close(struct cold_ep *c)
{
	struct fid *fids[] = { c->ep ? &c->ep->fid : NULL, c->av ? &c->av->fid : NULL,
			       c->cq ? &c->cq->fid : NULL, c->domain ? &c->domain->fid : NULL,
			       c->fabric ? &c->fabric->fid : NULL };
	for (size_t i = 0; i < ARRAY_SIZE(fids); i++)
		if (fids[i])
			fi_close(fids[i]);
	fi_freeinfo(c->info);
}

struct addr_msg {
	uint32_t rank;
	uint32_t len;
	uint8_t addr[ADDR_MAX];
};

/* A rank: wait for "go", open, send our address up, read everyone's,
 * insert them, report, ring, report. */
static int cold_rank(size_t rank, size_t n, int in, int out)
{
	char go;
	if (read(in, &go, 1) != 1)
		return 1;
	struct cold_ep c = { 0 };
	struct addr_msg me = { .rank = (uint32_t)rank };
	size_t len = ADDR_MAX;
	if (cold_open(&c, rank, me.addr, &len) < 0)
		return 1;
	me.len = (uint32_t)len;
	if (write(out, &me, sizeof(me)) != (ssize_t)sizeof(me))
		return 1;
	struct addr_msg *all = xcalloc(n, sizeof(*all));
	fi_addr_t next = FI_ADDR_UNSPEC;
	for (size_t i = 0; i < n; i++) {
		fi_addr_t fa;
		if (read(in, &all[i], sizeof(all[i])) != (ssize_t)sizeof(all[i]) ||
		    fi_av_insert(c.av, all[i].addr, 1, &fa, 0, NULL) != 1)
			return 1;
		if (all[i].rank == (rank + 1) % n)
			next = fa;
	}
	int rc = write(out, "A", 1) == 1 && cold_ring(&c, next) == 0 && write(out, "R", 1) == 1 ? 0 : 1;
	free(all);
	cold_close(&c);
	return rc;
}

static int read_full(int fd, void *buf, size_t len, double deadline)
{
	size_t got = 0;
	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int ms = (int)((deadline - now_s()) * 1000);
		if (ms <= 0 || poll(&p, 1, ms) <= 0)
			return -1;
		ssize_t r = read(fd, (char *)buf + got, len - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

struct cold_result {
	double open_exchange;   /* go -> every rank has every address in its AV */
	double first_message;   /* go -> the ring message went around */
};

static int cold_launch(size_t n, pid_t *pids, int *to, int *from)
{
	for (size_t i = 0; i < n; i++) {
		int down[2], up[2];
		if (pipe(down) < 0 || pipe(up) < 0)
			return -1;
		pids[i] = fork();
		if (pids[i] == 0) {
			close(down[1]);
			close(up[0]);
			alarm(PHASE_TIMEOUT_S);
			_exit(cold_rank(i, n, down[0], up[1]));
		}
		close(down[0]);
		close(up[1]);
		to[i] = down[1];
		from[i] = up[0];
	}
	return 0;
}

/* The launcher's part: start the ranks, gather and broadcast addresses. */
static int cold_run(size_t n, struct cold_result *res)
{
	pid_t *pids = xcalloc(n, sizeof(*pids));
	int *to = xcalloc(n, sizeof(*to)), *from = xcalloc(n, sizeof(*from));
	struct addr_msg *all = xcalloc(n, sizeof(*all));
	int rc = cold_launch(n, pids, to, from);
	double t0 = now_s(), deadline = t0 + PHASE_TIMEOUT_S;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = write(to[i], "g", 1) == 1 ? 0 : -1;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = read_full(from[i], &all[i], sizeof(all[i]), deadline);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = write(to[i], all, n * sizeof(*all)) == (ssize_t)(n * sizeof(*all)) ? 0 : -1;
	char c;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = read_full(from[i], &c, 1, deadline);
	res->open_exchange = now_s() - t0;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = read_full(from[i], &c, 1, deadline);
	res->first_message = now_s() - t0;
	for (size_t i = 0; i < n; i++) {
		if (rc < 0 && pids[i] > 0)
			kill(pids[i], SIGKILL);
		close(to[i]);
		close(from[i]);
		if (pids[i] > 0)
			waitpid(pids[i], NULL, 0);
	}
	free(pids);
	free(to);
	free(from);
	free(all);
	return rc;
}

/* ---- idle: 1,000 peers nobody answers ---- */

struct idle_arg {
	const char *peers_file;
};

static int idle_child(void *p, int out)
{
	struct idle_arg *a = p;
	struct event_base *base = event_base_new();
	struct config *c = node_config("127.0.3.1", base_port + 2, NULL, a->peers_file, "5000");
	struct fabric *f;
	alps_error *err = NULL;
	if (fabric_open(base, c, "idle-node", &f, &err) < 0)
		log_fatal("%s", err->msg);
	config_free(c);
	close(out);
	event_base_dispatch(base);      /* until SIGKILL from the parent */
	return 0;
}

static uint64_t proc_cpu_ticks(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_fclose_ FILE *fp = fopen(path, "re");
	if (!fp || !fgets(buf, sizeof(buf), fp))
		return 0;
	char *s = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	/* Fields after the command: state is 3rd, utime 14th, stime 15th. */
	if (!s || sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return 0;
	return ut + st;
}

static long proc_rss_kb(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	_cleanup_fclose_ FILE *fp = fopen(path, "re");
	long kb = -1;
	while (fp && fgets(line, sizeof(line), fp))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	return kb;
}

static void idle_run(size_t npeers, unsigned warmup_s, unsigned seconds)
{
	char path[] = "/tmp/fabric_map_peers.XXXXXX";
	int fd = mkstemp(path);
	FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!fp)
		log_fatal("peers file: %s", strerror(errno));
	for (size_t i = 0; i < npeers; i++)
		fprintf(fp, "127.1.%zu.%zu:%zu\n", i / 250, i % 250 + 1, 40000 + i);
	fclose(fp);
	struct idle_arg a = { .peers_file = path };
	int p[2];
	if (pipe(p) < 0)
		log_fatal("pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		alarm(warmup_s + seconds + 30);
		_exit(idle_child(&a, p[1]));
	}
	close(p[1]);
	char c;
	(void)!read(p[0], &c, 1);       /* EOF once the child has opened its fabric */
	close(p[0]);
	long hz = sysconf(_SC_CLK_TCK);
	uint64_t c0 = proc_cpu_ticks(pid);
	sleep(warmup_s);
	uint64_t c1 = proc_cpu_ticks(pid);
	sleep(seconds);
	uint64_t c2 = proc_cpu_ticks(pid);
	long rss = proc_rss_kb(pid);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(path);
	printf("| %zu | %.2f%% | %.2f%% (%" PRIu64 " ticks in %u s) | %.1f MiB |\n", npeers,
	       100.0 * (double)(c1 - c0) / (double)hz / warmup_s,
	       100.0 * (double)(c2 - c1) / (double)hz / seconds, c2 - c1, seconds, rss / 1024.0);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	size_t max_nodes = 64;
	unsigned idle_s = 30;
	static const struct option opts[] = {
		{ "max-nodes", required_argument, NULL, 'n' },
		{ "idle-seconds", required_argument, NULL, 'i' },
		{ "port", required_argument, NULL, 'p' }, { NULL, 0, NULL, 0 },
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch == 'n')
			max_nodes = strtoul(optarg, NULL, 10);
		else if (ch == 'i')
			idle_s = (unsigned)strtoul(optarg, NULL, 10);
		else if (ch == 'p')
			base_port = (uint16_t)strtoul(optarg, NULL, 10);
		else
			return 2;
	}
	if (max_nodes < 2 || max_nodes > 250)
		log_fatal("--max-nodes is 2..250");
	log_init("fabric_map", LOG_LVL_ERROR, false);
	setenv("FI_OFI_RXM_BUFFER_SIZE", "2048", 0);    /* as alpsd does */

	printf("| nodes | warm: table up after | warm: job map (median / p99) | map JSON | "
	       "cold: open + exchange | cold: + first message |\n|---|---|---|---|---|---|\n");
	fflush(stdout);
	for (size_t n = 2; n <= max_nodes; n *= 2) {
		char out[256];
		struct warm_arg wa = { .n = n, .reps = 1000 };
		struct cold_result cr = { 0 };
		size_t up = 0, bytes = 0;
		double conv = 0, med = 0, p99 = 0;
		if (in_child(warm_child, &wa, out, sizeof(out)) < 0 ||
		    sscanf(out, "%zu %lf %lf %lf %zu", &up, &conv, &med, &p99, &bytes) != 5 || up != n)
			printf("| %zu | warm phase failed (%zu up) |\n", n, up);
		else if (cold_run(n, &cr) < 0)
			printf("| %zu | %.2f s | %.1f / %.1f µs | %zu B | cold phase failed | |\n", n, conv,
			       med, p99, bytes);
		else
			printf("| %zu | %.2f s | %.1f / %.1f µs | %zu B | %.1f ms | %.1f ms |\n", n, conv,
			       med, p99, bytes, cr.open_exchange * 1e3, cr.first_message * 1e3);
		fflush(stdout);
	}
	printf("\n| peers | CPU, first 10 s | CPU, idle | RSS |\n|---|---|---|---|\n");
	fflush(stdout);
	idle_run(0, 10, idle_s);
	idle_run(1000, 10, idle_s);
	return 0;
}
