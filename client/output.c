/* output.c: connecting, error reporting and JSON output of the client. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "client/creds.h"
#include "common/ref.h"

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

int client_parse_uint(struct client *cl, const char *s, const char *what, unsigned max,
		      unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *s == '-' || *end || errno || v > max) {
		usage_error(cl, "%s must be a number from 0 to %u, not '%s'", what, max, s);
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

const char *client_code_name(int code)
{
	static const char *names[] = {
		[ALPS_OK] = "ok",
		[ALPS_E_INVALID] = "invalid_argument",
		[ALPS_E_NOT_FOUND] = "not_found",
		[ALPS_E_PERMISSION] = "permission_denied",
		[ALPS_E_EXISTS] = "already_exists",
		[ALPS_E_UNSUPPORTED] = "unsupported",
		[ALPS_E_NOT_IMPLEMENTED] = "not_implemented",
		[ALPS_E_INTERNAL] = "internal_error",
		[ALPS_E_IO] = "io_error",
		[ALPS_E_UNAVAILABLE] = "unavailable",
		[ALPS_E_PROTOCOL] = "protocol_error",
		[ALPS_E_CONFLICT] = "conflict",
		[ALPS_E_BUSY] = "busy",
		[ALPS_E_LIMIT] = "limit_exceeded",
		[ALPS_E_CANCELLED] = "cancelled",
		[ALPS_E_VERSION] = "version_mismatch",
		[ALPS_E_TIMEOUT] = "timed_out",
		[ALPS_E_INTEGRITY] = "integrity_error",
	};
	if (code == CLIENT_E_USAGE)
		return "usage_error";
	if (code < 0 || (size_t)code >= ARRAY_SIZE(names) || !names[code])
		return "internal_error";
	return names[code];
}

json_t *client_error_json(int code, const char *msg)
{
	return json_pack("{s:b, s:s, s:s}", "ok", 0, "code", client_code_name(code), "message",
			 msg && *msg ? msg : alps_code_name(code));
}

static int report(struct client *cl, const char *what, int code, const char *msg)
{
	if (cl->json) {
		json_t *j = client_error_json(code, msg);
		json_object_set_new(j, "command", json_string(what));
		if (cl->stream) {
			json_object_set_new(j, "event", json_string("error"));
			client_print_json_line(j);
		} else {
			client_print_json(j);
		}
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

char *image_ref_norm(const char *arg, alps_error **err)
{
	if (!strchr(arg, '#'))
		return xstrdup(arg);
	struct image_ref ref;
	/* The default registry is not used: the form names its registry. */
	if (ref_parse_any(arg, "docker.io", &ref, err) < 0)
		return NULL;
	char *out = ref_format(&ref);
	ref_free(&ref);
	return out;
}

char *client_image_ref(struct client *cl, const char *arg, int *rc)
{
	alps_error *err = NULL;
	char *out = image_ref_norm(arg, &err);
	if (!out)
		*rc = client_fail(cl, cl->cmd ? cl->cmd->name : "alps", err);
	return out;
}

/* ---- warnings, and the user's credentials with one ---- */

void client_warn(struct client *cl, const char *msg)
{
	if (cl->json && cl->stream)
		client_print_json_line(json_pack("{s:b, s:s, s:s}", "ok", 1, "event", "warning",
						  "message", msg));
	else
		fprintf(stderr, "alps %s: warning: %s\n", cl->cmd ? cl->cmd->name : "", msg);
}

void client_creds_read(struct client *cl, struct client_creds *out)
{
	alps_error *err = NULL;
	if (client_creds_load(out, &err) < 0) {
		_cleanup_free_ char *msg = xasprintf("%s; going on without registry credentials",
						     err->msg);
		client_warn(cl, msg);
		alps_error_free(err);
	}
}
