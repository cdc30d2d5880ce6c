/* fabric_node.c: one fabric instance on its own loop, for tests.
 *
 *	fabric_node --node NAME --address 127.0.0.2 --port 7771
 *	            --peers 127.0.0.3,127.0.0.4 | --peers-file FILE [--provider tcp]
 *	            [--interval MS] [--down-after MS] [--print-every MS]
 *
 * Prints one JSON object a line on stdout: {"event":"ready"} once the
 * instance is up, {"event":"table",...} (fabric_to_json) every
 * --print-every ms, on SIGUSR1 and on the "table" command.  Commands on
 * stdin, one a line:
 *
 *	map n1,n2,n3             {"event":"map","map":{...},"down":[...]}
 *	pin JOB REF DIGEST       {"event":"pin","queued":N}
 *	lookup JOB REF           {"event":"lookup","digest":"..."|null}
 *	raw NODE HEX             send bytes as they are (hostile-input tests)
 *	peers LIST               reload with this peer list (as on SIGHUP)
 *	table                    the peer table now
 *	quit                     exit (so does end of input, or SIGTERM)
 *
 * It is a test tool: it refuses any address outside 127.0.0.0/8 for
 * itself and its peers, so nothing it does leaves the machine. */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/node/fabric.h"

struct tool {
	struct event_base *base;
	struct fabric *fabric;
	struct config *cfg;
	char line[8192];
	size_t len;
	bool discarding;        /* an over-long line is dropped whole */
};

static void emit(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		fflush(stdout);
	}
	free(s);
	json_decref(o);
}

static void emit_error(const char *msg)
{
	emit(json_pack("{s:s, s:s}", "event", "error", "message", msg));
}

static void emit_table(struct tool *t)
{
	json_t *o = fabric_to_json(t->fabric, 0);
	json_object_set_new(o, "event", json_string("table"));
	emit(o);
}

/* Split "a,b,c" in place into at most max pointers. */
static size_t split_commas(char *s, char **v, size_t max)
{
	size_t n = 0;
	char *save = NULL;
	for (char *tok = strtok_r(s, ",", &save); tok && n < max; tok = strtok_r(NULL, ",", &save))
		v[n++] = tok;
	return n;
}

static void cmd_map(struct tool *t, char *arg)
{
	char *nodes[1024];
	size_t n = arg ? split_commas(arg, nodes, ARRAY_SIZE(nodes)) : 0;
	json_t *map = NULL;
	char **down = NULL;
	size_t ndown = 0;
	alps_error *err = NULL;
	if (fabric_job_map(t->fabric, (const char *const *)nodes, n, &map, &down, &ndown, &err) < 0) {
		emit_error(err->msg);
		alps_error_free(err);
		return;
	}
	json_t *dl = json_array();
	for (size_t i = 0; i < ndown; i++)
		json_array_append_new(dl, json_string(down[i]));
	fabric_strv_free(down);
	emit(json_pack("{s:s, s:o, s:o}", "event", "map", "map", map, "down", dl));
}

static void cmd_pin(struct tool *t, char *job, char *ref, char *digest, char *nodes_arg)
{
	char *nodes[1024];
	size_t n = nodes_arg ? split_commas(nodes_arg, nodes, ARRAY_SIZE(nodes)) : 0;
	if (!job || !ref || !digest) {
		emit_error("usage: pin JOB REF DIGEST [NODES]");
		return;
	}
	/* Without a node list the pin goes to every peer, as for a job that
	 * spans the whole table. */
	json_t *table = NULL;
	if (n == 0) {
		table = fabric_to_json(t->fabric, 0);
		json_t *peers = json_object_get(table, "peers");
		for (size_t i = 0; i < json_array_size(peers) && n < ARRAY_SIZE(nodes); i++)
			nodes[n++] = (char *)json_string_value(json_object_get(json_array_get(peers, i), "name"));
	}
	alps_error *err = NULL;
	int queued = fabric_publish_pin(t->fabric, job, ref, digest, (const char *const *)nodes, n, &err);
	json_decref(table);
	if (queued < 0) {
		emit_error(err->msg);
		alps_error_free(err);
		return;
	}
	emit(json_pack("{s:s, s:i}", "event", "pin", "queued", queued));
}

static void cmd_lookup(struct tool *t, const char *job, const char *ref)
{
	if (!job || !ref) {
		emit_error("usage: lookup JOB REF");
		return;
	}
	char *d = fabric_lookup_pin(t->fabric, job, ref);
	emit(json_pack("{s:s, s:s, s:s, s:o}", "event", "lookup", "job", job, "reference", ref,
		       "digest", d ? json_string(d) : json_null()));
	free(d);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void cmd_raw(struct tool *t, const char *node, const char *hex)
{
	uint8_t buf[2048];
	size_t n = 0;
	if (!node || !hex || strlen(hex) % 2 || strlen(hex) / 2 > sizeof(buf)) {
		emit_error("usage: raw NODE HEX (up to 2048 bytes)");
		return;
	}
	for (const char *h = hex; *h; h += 2) {
		int hi = hex_value(h[0]), lo = hex_value(h[1]);
		if (hi < 0 || lo < 0) {
			emit_error("raw: bad hex");
			return;
		}
		buf[n++] = (uint8_t)(hi << 4 | lo);
	}
	int rc = fabric_send_raw(t->fabric, node, buf, n);
	emit(json_pack("{s:s, s:b}", "event", "raw", "queued", rc == 0));
}

static bool loopback_host(const char *spec);

static void cmd_peers(struct tool *t, const char *list)
{
	alps_error *err = NULL;
	_cleanup_free_ char *copy = xstrdup(list ? list : "");
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (!loopback_host(tok)) {
			emit_error("peers: loopback addresses only");
			return;
		}
	if (config_set(t->cfg, "fabric.peers", list ? list : "", &err) < 0 ||
	    fabric_reload_peers(t->fabric, t->cfg, &err) < 0) {
		emit_error(err->msg);
		alps_error_free(err);
		return;
	}
	emit(json_pack("{s:s}", "event", "reloaded"));
}

static void command(struct tool *t, char *line)
{
	char *save = NULL;
	char *verb = strtok_r(line, " \t", &save);
	char *a1 = strtok_r(NULL, " \t", &save);
	char *a2 = strtok_r(NULL, " \t", &save);
	char *a3 = strtok_r(NULL, " \t", &save);
	char *a4 = strtok_r(NULL, " \t", &save);
	if (!verb)
		return;
	if (strcmp(verb, "map") == 0)
		cmd_map(t, a1);
	else if (strcmp(verb, "pin") == 0)
		cmd_pin(t, a1, a2, a3, a4);
	else if (strcmp(verb, "lookup") == 0)
		cmd_lookup(t, a1, a2);
	else if (strcmp(verb, "peers") == 0)
		cmd_peers(t, a1);
	else if (strcmp(verb, "raw") == 0)
		cmd_raw(t, a1, a2);
	else if (strcmp(verb, "table") == 0)
		emit_table(t);
	else if (strcmp(verb, "quit") == 0)
		event_base_loopexit(t->base, NULL);
	else
		emit_error("unknown command");
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
	struct tool *t = arg;
	char buf[1024];
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		event_base_loopexit(t->base, NULL);
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i] != '\n') {
			if (t->len + 1 < sizeof(t->line))
				t->line[t->len++] = buf[i];
			else
				t->discarding = true;
			continue;
		}
		t->line[t->len] = '\0';
		if (t->discarding)
			emit_error("line too long");
		else
			command(t, t->line);
		t->len = 0;
		t->discarding = false;
	}
}

static void on_print(evutil_socket_t fd, short what, void *arg)
{
	emit_table(arg);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct tool *t = arg;
	if (sig == SIGUSR1)
		emit_table(t);
	else
		event_base_loopexit(t->base, NULL);
}

/* Only 127.0.0.0/8 (or "localhost"): the tool never targets another host. */
static bool loopback_host(const char *spec)
{
	_cleanup_free_ char *host = xstrdup(spec);
	host[strcspn(host, ":")] = '\0';
	if (strcmp(host, "localhost") == 0)
		return true;
	struct in_addr a;
	return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

static int check_peers_file(const char *path)
{
	_cleanup_fclose_ FILE *fp = fopen(path, "re");
	char line[1024];
	if (!fp) {
		fprintf(stderr, "fabric_node: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), fp)) {
		line[strcspn(line, "# \t\r\n")] = '\0';
		if (line[0] && !loopback_host(line)) {
			fprintf(stderr, "fabric_node: peer %s is not a loopback address\n", line);
			return -1;
		}
	}
	return 0;
}

static int check_loopback(const struct config *c)
{
	if (!loopback_host(c->fabric_address)) {
		fprintf(stderr, "fabric_node: --address must be in 127.0.0.0/8\n");
		return -1;
	}
	for (size_t i = 0; i < c->peers.n; i++)
		if (!loopback_host(c->peers.v[i])) {
			fprintf(stderr, "fabric_node: peer %s is not a loopback address\n", c->peers.v[i]);
			return -1;
		}
	return c->peers.n == 0 && c->peers_file[0] ? check_peers_file(c->peers_file) : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: fabric_node --node NAME --address 127.x.y.z --port PORT\n"
			"       --peers LIST | --peers-file FILE\n"
			"       [--provider P] [--interval MS] [--down-after MS] [--print-every MS]\n"
			"       [--log-level LEVEL]\n");
	exit(2);
}

struct opts {
	const char *node;
	long print_every;
	const char *log_level;
};

static void parse_args(int argc, char **argv, struct config *c, struct opts *o)
{
	static const struct option longopts[] = {
		{ "node", required_argument, NULL, 'n' }, { "address", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' }, { "peers", required_argument, NULL, 'P' },
		{ "peers-file", required_argument, NULL, 'F' }, { "provider", required_argument, NULL, 'v' }, { "interval", required_argument, NULL, 'i' },
		{ "down-after", required_argument, NULL, 'd' }, { "print-every", required_argument, NULL, 'e' },
		{ "log-level", required_argument, NULL, 'l' }, { NULL, 0, NULL, 0 },
	};
	static const char *const keys[128] = {
		['a'] = "fabric.address", ['p'] = "fabric.port", ['P'] = "fabric.peers", ['F'] = "fabric.peers_file",
		['v'] = "fabric.provider", ['i'] = "fabric.liveness_interval_ms",
		['d'] = "fabric.peer_down_after_ms",
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		alps_error *err = NULL;
		if (ch == 'n')
			o->node = optarg;
		else if (ch == 'e')
			o->print_every = strtol(optarg, NULL, 10);
		else if (ch == 'l')
			o->log_level = optarg;
		else if (ch > 0 && ch < 128 && keys[ch]) {
			if (config_set(c, keys[ch], optarg, &err) < 0) {
				fprintf(stderr, "fabric_node: %s\n", err->msg);
				exit(2);
			}
		} else
			usage();
	}
	if (!o->node || optind != argc)
		usage();
}

static int run(struct tool *t, const struct opts *o, struct config *c)
{
	alps_error *err = NULL;
	if (fabric_open(t->base, c, o->node, &t->fabric, &err) < 0) {
		fprintf(stderr, "fabric_node: %s\n", err->msg);
		alps_error_free(err);
		return 1;
	}
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	struct event *evs[] = {
		event_new(t->base, 0, EV_READ | EV_PERSIST, on_stdin, t),
		evsignal_new(t->base, SIGUSR1, on_signal, t),
		evsignal_new(t->base, SIGTERM, on_signal, t),
		evsignal_new(t->base, SIGINT, on_signal, t),
		event_new(t->base, -1, EV_PERSIST, on_print, t),
	};
	for (size_t i = 0; i < 4; i++)
		event_add(evs[i], NULL);
	if (o->print_every > 0) {
		struct timeval tv = { o->print_every / 1000, (o->print_every % 1000) * 1000 };
		event_add(evs[4], &tv);
	}
	emit(json_pack("{s:s, s:s}", "event", "ready", "node", o->node));
	event_base_dispatch(t->base);
	for (size_t i = 0; i < ARRAY_SIZE(evs); i++)
		event_free(evs[i]);
	fabric_close(t->fabric);
	return 0;
}

int main(int argc, char **argv)
{
	struct config *c = config_new_defaults();
	struct opts o = { .print_every = 0, .log_level = "warn" };
	alps_error *err = NULL;
	if (config_set(c, "fabric.address", "127.0.0.1", &err) < 0 ||
	    config_set(c, "fabric.provider", "tcp", &err) < 0)
		log_fatal("%s", err->msg);
	parse_args(argc, argv, c, &o);
	int level = log_level_parse(o.log_level);
	log_init("fabric_node", level < 0 ? LOG_LVL_WARN : (enum log_level)level, false);
	if (check_loopback(c) < 0) {
		config_free(c);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct tool t = { .base = event_base_new(), .cfg = c };
	int rc = run(&t, &o, c);
	event_base_free(t.base);
	config_free(c);
	return rc;
}
