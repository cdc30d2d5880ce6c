/* cmd_node.c: alps topology, alps place: the node's hardware and a job
 * step's placement on it, as computed by the daemon. */
#include <config.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

/* Call, check, and parse the JSON text the reply carries. */
static json_t *call_json(struct client *cl, Alps__Request *req, const char *what,
			 const char *(*get)(const Alps__Response *), int *rc)
{
	Alps__Response *resp = client_call_ok(cl, req, what, NULL, NULL, rc);
	if (!resp)
		return NULL;
	const char *text = get(resp);
	json_error_t jerr;
	json_t *j = text ? json_loads(text, 0, &jerr) : NULL;
	if (!j) {
		alps_error e = { ALPS_E_PROTOCOL, 0, (char *)"alpsd sent no valid JSON" };
		*rc = client_report_error(cl, what, &e);
	}
	alps__response__free_unpacked(resp, NULL);
	return j;
}

static const char *topology_text(const Alps__Response *r)
{
	return r->payload_case == ALPS__RESPONSE__PAYLOAD_TOPOLOGY_REPLY ? r->topology_reply->topology_json
									 : NULL;
}

static const char *place_text(const Alps__Response *r)
{
	return r->payload_case == ALPS__RESPONSE__PAYLOAD_PLACE_REPLY ? r->place_reply->plan_json : NULL;
}

static const char *jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "-";
}

/* "a,b,c" of an array of strings or integers; caller frees. */
static char *join_names(json_t *arr)
{
	size_t i;
	json_t *v;
	char *out = xstrdup(json_array_size(arr) ? "" : "-");
	json_array_foreach(arr, i, v) {
		char *next = json_is_string(v)
			? xasprintf("%s%s%s", out, i ? "," : "", json_string_value(v))
			: xasprintf("%s%s%lld", out, i ? "," : "", (long long)json_integer_value(v));
		free(out);
		out = next;
	}
	return out;
}

static void print_names(json_t *arr)
{
	_cleanup_free_ char *s = join_names(arr);
	fputs(s, stdout);
}

static void numa_text(json_t *numa, char *buf, size_t size)
{
	if (json_is_integer(numa))
		snprintf(buf, size, "%lld", (long long)json_integer_value(numa));
	else
		snprintf(buf, size, "-");
}

static void print_topology(json_t *t)
{
	printf("source: %s\n", jstr(t, "source"));
	printf("cores: %lld (%lld usable), hardware threads: %lld, cpus %s\n",
	       (long long)json_integer_value(json_object_get(t, "cores")),
	       (long long)json_integer_value(json_object_get(t, "usable_cores")),
	       (long long)json_integer_value(json_object_get(t, "pus")), jstr(t, "cpus"));
	json_t *res = json_object_get(t, "reserved");
	printf("reserved: %s (%lld cores: %s)\n", jstr(res, "setting"),
	       (long long)json_integer_value(json_object_get(res, "cores")), jstr(res, "cpus"));
	size_t i;
	json_t *g;
	json_t *gpus = json_object_get(t, "gpus");
	printf("\nGPUs: %zu\n", json_array_size(gpus));
	if (json_array_size(gpus))
		printf("  %-6s %-5s %-10s %-14s %-5s %-20s %s\n", "VENDOR", "INDEX", "NAME", "PCI",
		       "NUMA", "CPUS", "NEAREST NICS");
	json_array_foreach(gpus, i, g) {
		char numbuf[16];
		numa_text(json_object_get(g, "numa"), numbuf, sizeof(numbuf));
		printf("  %-6s %-5lld %-10s %-14s %-5s %-20s ", jstr(g, "vendor"),
		       (long long)json_integer_value(json_object_get(g, "index")), jstr(g, "name"),
		       jstr(g, "pci"), numbuf, jstr(g, "cpus"));
		print_names(json_object_get(g, "nearest_nics"));
		putchar('\n');
	}
	json_t *nics = json_object_get(t, "nics");
	printf("\nNICs: %zu\n", json_array_size(nics));
	if (json_array_size(nics))
		printf("  %-12s %-12s %-14s %-5s %s\n", "NAME", "KIND", "PCI", "NUMA", "HIGH-SPEED");
	json_array_foreach(nics, i, g) {
		char numbuf[16];
		numa_text(json_object_get(g, "numa"), numbuf, sizeof(numbuf));
		printf("  %-12s %-12s %-14s %-5s %s\n", jstr(g, "name"), jstr(g, "kind"), jstr(g, "pci"),
		       numbuf, json_is_true(json_object_get(g, "high_speed")) ? "yes" : "no");
	}
}

static int run_topology(struct client *cl, int argc, char **argv)
{
	int rc = command_operands(cl, argc, argv, 0, 0, "");
	if (rc >= 0)
		return rc;
	Alps__TopologyRequest tr = ALPS__TOPOLOGY_REQUEST__INIT;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_TOPOLOGY;
	req.topology = &tr;
	rc = EXIT_OK;
	json_t *j = call_json(cl, &req, "topology", topology_text, &rc);
	if (!j)
		return rc;
	if (cl->json) {
		json_object_set_new(j, "ok", json_true());
		client_print_json(j);
	} else {
		print_topology(j);
		json_decref(j);
	}
	return EXIT_OK;
}

const struct command cmd_topology = {
	.name = "topology",
	.summary = "Show the node's GPUs, NICs, NUMA nodes and their locality.",
	.usage = "",
	.help = "",
	.run = run_topology,
};

static void print_plan(json_t *p, bool env_only, bool bind_only)
{
	if (bind_only) {
		printf("--cpu-bind=%s\n", jstr(p, "cpu_bind"));
		return;
	}
	size_t i, k;
	json_t *r, *e;
	json_t *ranks = json_object_get(p, "ranks");
	if (env_only) {
		json_array_foreach(ranks, i, r) {
			printf("# rank %zu\n", i);
			json_array_foreach(json_object_get(r, "env"), k, e)
				printf("%s\n", json_string_value(e));
		}
		return;
	}
	printf("%-5s %-8s %-14s %-24s %s\n", "RANK", "GPUS", "NICS", "CPUS", "MASK");
	json_array_foreach(ranks, i, r) {
		_cleanup_free_ char *g = join_names(json_object_get(r, "gpus"));
		_cleanup_free_ char *n = join_names(json_object_get(r, "nics"));
		printf("%-5lld %-8s %-14s %-24s %s\n",
		       (long long)json_integer_value(json_object_get(r, "rank")), g, n,
		       jstr(r, "cpus"), jstr(r, "mask"));
	}
	printf("\nslurm: --cpu-bind=%s\n", jstr(p, "cpu_bind"));
}

static int run_place(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tasks", required_argument, NULL, 'n' },
		{ "gpus-per-task", required_argument, NULL, 'g' },
		{ "env", no_argument, NULL, 'e' },
		{ "cpu-bind", no_argument, NULL, 'b' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned tasks = 0, gpus = 0;
	bool env_only = false, bind_only = false, have_tasks = false;
	int opt;
	while ((opt = command_getopt(cl, argc, argv, "n:g:eb", opts)) != -1) {
		switch (opt) {
		case 'n':
			if (client_parse_uint(cl, optarg, "--tasks", 65536, &tasks) < 0)
				return EXIT_USAGE;
			have_tasks = true;
			break;
		case 'g':
			if (client_parse_uint(cl, optarg, "--gpus-per-task", 1024, &gpus) < 0)
				return EXIT_USAGE;
			break;
		case 'e': env_only = true; break;
		case 'b': bind_only = true; break;
		default: return command_opt_exit(opt);
		}
	}
	if (optind < argc)
		return usage_error(cl, "unexpected argument '%s'", argv[optind]);
	if (!have_tasks)
		return usage_error(cl, "--tasks N is required");
	Alps__PlaceRequest pr = ALPS__PLACE_REQUEST__INIT;
	pr.tasks = tasks;
	pr.gpus_per_task = gpus;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_PLACE;
	req.place = &pr;
	int rc = EXIT_OK;
	json_t *j = call_json(cl, &req, "place", place_text, &rc);
	if (!j)
		return rc;
	if (cl->json) {
		json_object_set_new(j, "ok", json_true());
		client_print_json(j);
	} else {
		print_plan(j, env_only, bind_only);
		json_decref(j);
	}
	return EXIT_OK;
}

const struct command cmd_place = {
	.name = "place",
	.summary = "Plan GPUs, NICs and CPU masks for the local ranks of a job step.",
	.usage = "--tasks N [--gpus-per-task G] [--env | --cpu-bind]",
	.help = "  -n, --tasks N          local tasks (ranks) on this node\n"
		"  -g, --gpus-per-task G  GPUs per task (0: share the node's GPUs evenly)\n"
		"  -e, --env              print each rank's environment (KEY=VALUE)\n"
		"  -b, --cpu-bind         print the Slurm --cpu-bind=mask_cpu: option\n",
	.run = run_place,
};

static const char *endpoints_text(const Alps__Response *r)
{
	return r->payload_case == ALPS__RESPONSE__PAYLOAD_ENDPOINTS_REPLY
		       ? r->endpoints_reply->endpoints_json : NULL;
}

static void print_endpoints(json_t *j)
{
	if (!json_is_true(json_object_get(j, "enabled"))) {
		printf("fabric: disabled (set [fabric] enabled = true in alpsd.conf)\n");
		return;
	}
	printf("fabric: %s, node %s, provider %s\n", jstr(j, "state"), jstr(j, "node"),
	       jstr(j, "provider"));
	size_t i;
	json_t *e;
	printf("\nlocal endpoints:\n");
	json_array_foreach(json_object_get(j, "endpoints"), i, e)
		printf("  %-10s %-16s %-20s %s\n", jstr(e, "provider"), jstr(e, "domain"),
		       jstr(e, "address"), jstr(e, "state"));
	json_t *peers = json_object_get(j, "peers");
	printf("\npeers: %zu\n", json_array_size(peers));
	if (json_array_size(peers))
		printf("  %-20s %-22s %-8s %-26s %s\n", "NAME", "ADDRESS", "STATE", "LAST SEEN", "RTT");
	json_array_foreach(peers, i, e) {
		json_t *rtt = json_object_get(e, "rtt_us");
		char rttbuf[32] = "-";
		if (json_is_integer(rtt))
			snprintf(rttbuf, sizeof(rttbuf), "%lld us", (long long)json_integer_value(rtt));
		printf("  %-20s %-22s %-8s %-26s %s\n", jstr(e, "name"), jstr(e, "address"),
		       jstr(e, "state"), jstr(e, "last_seen"), rttbuf);
	}
}

static int run_endpoints(struct client *cl, int argc, char **argv)
{
	int rc = command_operands(cl, argc, argv, 0, 0, "");
	if (rc >= 0)
		return rc;
	Alps__EndpointsRequest er = ALPS__ENDPOINTS_REQUEST__INIT;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_ENDPOINTS;
	req.endpoints = &er;
	rc = EXIT_OK;
	json_t *j = call_json(cl, &req, "endpoints", endpoints_text, &rc);
	if (!j)
		return rc;
	if (cl->json) {
		json_object_set_new(j, "ok", json_true());
		client_print_json(j);
	} else {
		print_endpoints(j);
		json_decref(j);
	}
	return EXIT_OK;
}

const struct command cmd_endpoints = {
	.name = "endpoints",
	.summary = "Show the warm fabric endpoints and the peers' liveness.",
	.usage = "",
	.help = "",
	.run = run_endpoints,
};
