/* cmd_metrics.c: alps metrics, the daemon's counters as Prometheus text. */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include "client/client.h"

static int run_metrics(struct client *cl, int argc, char **argv)
{
	int rc = command_operands(cl, argc, argv, 0, 0, "");
	if (rc >= 0)
		return rc;
	Alps__MetricsRequest mr = ALPS__METRICS_REQUEST__INIT;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_METRICS;
	req.metrics = &mr;
	rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "metrics", NULL, NULL, &rc);
	if (!resp)
		return rc;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_METRICS_REPLY)
		rc = client_report_error(cl, "metrics", &(alps_error){ ALPS_E_PROTOCOL, 0,
				(char *)"alpsd answered Metrics without a MetricsReply" });
	else if (cl->json)
		client_print_json(json_pack("{s:b, s:s, s:s}", "ok", 1, "format",
					    "prometheus-text-0.0.4", "text",
					    resp->metrics_reply->text));
	else
		fputs(resp->metrics_reply->text, stdout);
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

const struct command cmd_metrics = {
	.name = "metrics",
	.summary = "Print the daemon's counters in the Prometheus text format.",
	.usage = "",
	.help = "The text suits node_exporter's textfile collector: write it to a file in its\n"
		"directory and rename it there (see alps(1), METRICS).\n",
	.run = run_metrics,
};
