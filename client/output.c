/* output.c: connecting, error reporting and JSON output of the client. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

int client_connect(struct client *cl, alps_error **err)
{
	if (cl->connected)
		return 0;
	if (wire_connect(&cl->wire, cl->socket_path, "alps " PACKAGE_VERSION, err) < 0) {
		wire_close(&cl->wire);
		return -1;
	}
	cl->connected = true;
	return 0;
}

Alps__Response *client_call(struct client *cl, Alps__Request *req,
			    void (*on_progress)(const Alps__Response *, void *), void *arg,
			    alps_error **err)
{
	if (client_connect(cl, err) < 0)
		return NULL;
	return wire_call(&cl->wire, req, NULL, 0, on_progress, arg, -1, err);
}

Alps__Response *client_call_ok(struct client *cl, Alps__Request *req, const char *what,
			       void (*on_progress)(const Alps__Response *, void *), void *arg,
			       int *rc)
{
	alps_error *err = NULL;
	Alps__Response *resp = client_call(cl, req, on_progress, arg, &err);
	if (!resp) {
		*rc = client_fail(cl, what, err);
		return NULL;
	}
	if (resp->status != ALPS__STATUS__OK) {
		*rc = client_report_response(cl, what, resp);
		alps__response__free_unpacked(resp, NULL);
		return NULL;
	}
	return resp;
}

int client_parse_uint(const char *s, const char *what, unsigned max, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *s == '-' || *end || errno || v > max) {
		fprintf(stderr, "alps: %s must be a number from 0 to %u, not '%s'\n", what, max, s);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int exit_code_for(int code)
{
	switch (code) {
	case ALPS_E_UNAVAILABLE:
	case ALPS_E_VERSION:
		return EXIT_UNREACHABLE;
	default:
		return EXIT_FAILED;
	}
}

static int report(struct client *cl, const char *what, int code, const char *msg)
{
	if (cl->json) {
		json_t *j = json_pack("{s:b, s:s, s:i, s:s}", "ok", 0, "error", alps_code_name(code),
				      "code", code, "message", msg ? msg : "");
		client_print_json(j);
	} else {
		fprintf(stderr, "alps %s: %s\n", what, msg && *msg ? msg : alps_code_name(code));
	}
	return exit_code_for(code);
}

int client_report_error(struct client *cl, const char *what, const alps_error *err)
{
	return report(cl, what, err->code, err->msg);
}

int client_fail(struct client *cl, const char *what, alps_error *err)
{
	int rc = client_report_error(cl, what, err);
	alps_error_free(err);
	return rc;
}

int client_report_response(struct client *cl, const char *what, const Alps__Response *resp)
{
	/* The daemon answered: whatever it said, it was reachable, so only a
	 * version mismatch is exit 3. */
	int rc = report(cl, what, (int)resp->status, resp->message);
	return resp->status == ALPS__STATUS__VERSION_MISMATCH ? rc : EXIT_FAILED;
}

void client_print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (s) {
		puts(s);
		free(s);
	}
	json_decref(j);
}

void command_usage(const struct command *c, FILE *out)
{
	fprintf(out, "Usage: alps [--socket PATH] [--json] %s %s\n%s\n", c->name, c->usage,
		c->summary);
	if (c->help && *c->help)
		fprintf(out, "\n%s", c->help);
}

bool command_wants_help(const struct command *c, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			command_usage(c, stdout);
			return true;
		}
	}
	return false;
}

void client_print_json_line(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	if (s) {
		puts(s);
		fflush(stdout);
		free(s);
	}
	json_decref(j);
}
