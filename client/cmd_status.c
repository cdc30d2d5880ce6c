/* cmd_status.c: alps status. */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>

#include "client/client.h"

/* Usage, counts and the file system: the store's figures. */
static void print_store(const Alps__StatusReply *st)
{
	char used[32], size[32], avail[32];
	format_size(st->store_bytes, used, sizeof(used));
	format_size(st->fs_size, size, sizeof(size));
	format_size(st->fs_free, avail, sizeof(avail));
	printf("  usage:     %s in %" PRIu64 " image(s), %" PRIu64 " layer(s)\n", used, st->images,
	       st->layers);
	printf("  fs:        %s, %s free\n", size, avail);
	printf("  jobs:      %" PRIu64 " prepared\n", st->jobs);
	printf("  pulls:     %u in flight\n", st->pulls_in_flight);
	if (st->store_error && *st->store_error)
		printf("  note:      %s\n", st->store_error);
}

static void print_human(const Alps__StatusReply *st, const char *server)
{
	char rss[32];
	uint64_t up = st->uptime_ms / 1000;
	format_size(st->peak_rss_kb * 1024, rss, sizeof(rss));
	printf("alpsd %s (pid %d), up %" PRIu64 "d %02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 "\n",
	       st->version, st->pid, up / 86400, up / 3600 % 24, up / 60 % 60, up % 60);
	printf("  socket:    %s\n", st->socket_path);
	printf("  store:     %s\n", st->store_path);
	print_store(st);
	printf("  run dir:   %s\n", st->run_dir);
	printf("  clients:   %u connected\n", st->clients);
	printf("  requests:  %" PRIu64 " served\n", st->requests_served);
	printf("  peak RSS:  %s\n", rss);
	printf("  protocol:  %u (%s)\n", st->protocol_version, server ? server : "?");
	if (st->reload_failed)
		printf("  reload:    the last one failed: %s\n", st->reload_error);
	else
		printf("  reload:    ok (or none since start)\n");
}

static json_t *status_json(const Alps__StatusReply *st)
{
	json_t *j = json_pack("{s:b, s:s, s:i, s:I, s:s, s:s, s:s, s:i, s:I, s:I, s:i}",
			 "ok", 1, "version", st->version, "pid", (int)st->pid,
			 "uptime_ms", (json_int_t)st->uptime_ms, "socket", st->socket_path,
			 "store", st->store_path, "run_dir", st->run_dir,
			 "clients", (int)st->clients, "requests_served",
			 (json_int_t)st->requests_served, "peak_rss_kb",
			 (json_int_t)st->peak_rss_kb, "protocol_version", (int)st->protocol_version);
	json_t *store = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "store_bytes",
				  (json_int_t)st->store_bytes, "fs_size", (json_int_t)st->fs_size,
				  "fs_free", (json_int_t)st->fs_free, "images", (json_int_t)st->images,
				  "layers", (json_int_t)st->layers, "jobs", (json_int_t)st->jobs,
				  "pulls_in_flight", (json_int_t)st->pulls_in_flight);
	json_object_update(j, store);
	json_decref(store);
	json_object_set_new(j, "store_error", *st->store_error ? json_string(st->store_error)
							     : json_null());
	json_object_set_new(j, "reload_failed", json_boolean(st->reload_failed));
	json_object_set_new(j, "reload_error", st->reload_failed ? json_string(st->reload_error)
								 : json_null());
	return j;
}

static int run_status(struct client *cl, int argc, char **argv)
{
	int rc = command_operands(cl, argc, argv, 0, 0, "");
	if (rc >= 0)
		return rc;
	Alps__StatusRequest sr = ALPS__STATUS_REQUEST__INIT;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_STATUS;
	req.status = &sr;
	rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "status", NULL, NULL, &rc);
	if (!resp)
		return rc;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_STATUS_REPLY)
		rc = client_report_error(cl, "status", &(alps_error){ ALPS_E_PROTOCOL, 0,
				(char *)"alpsd answered Status without a StatusReply" });
	else if (cl->json)
		client_print_json(status_json(resp->status_reply));
	else
		print_human(resp->status_reply, cl->wire.server_name);
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

const struct command cmd_status = {
	.name = "status",
	.summary = "Show the daemon's version, uptime, store usage, jobs, pulls, clients, reload.",
	.usage = "",
	.help = "",
	.run = run_status,
};
