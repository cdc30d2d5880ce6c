/* cmd_status.c: alps status. */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>

#include "client/client.h"

static void print_human(const Alps__StatusReply *st, const char *server)
{
	char rss[32];
	uint64_t up = st->uptime_ms / 1000;
	format_size(st->peak_rss_kb * 1024, rss, sizeof(rss));
	printf("alpsd %s (pid %d), up %" PRIu64 "d %02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 "\n",
	       st->version, st->pid, up / 86400, up / 3600 % 24, up / 60 % 60, up % 60);
	printf("  socket:    %s\n", st->socket_path);
	printf("  store:     %s\n", st->store_path);
	printf("  run dir:   %s\n", st->run_dir);
	printf("  clients:   %u connected\n", st->clients);
	printf("  requests:  %" PRIu64 " served\n", st->requests_served);
	printf("  peak RSS:  %s\n", rss);
	printf("  protocol:  %u (%s)\n", st->protocol_version, server ? server : "?");
}

static json_t *status_json(const Alps__StatusReply *st)
{
	return json_pack("{s:b, s:s, s:i, s:I, s:s, s:s, s:s, s:i, s:I, s:I, s:i}",
			 "ok", 1, "version", st->version, "pid", (int)st->pid,
			 "uptime_ms", (json_int_t)st->uptime_ms, "socket", st->socket_path,
			 "store", st->store_path, "run_dir", st->run_dir,
			 "clients", (int)st->clients, "requests_served",
			 (json_int_t)st->requests_served, "peak_rss_kb",
			 (json_int_t)st->peak_rss_kb, "protocol_version", (int)st->protocol_version);
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
	.summary = "Show the daemon's version, uptime, store, clients and memory.",
	.usage = "",
	.help = "",
	.run = run_status,
};
