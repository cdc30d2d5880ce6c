/* cmd_image.c: alps pull, inspect, rm (images: cmd_images.c). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client/client.h"
#include "client/progress.h"
#include "client/creds.h"

/* ---- pull ---- */

struct pull_view {
	struct client *cl;
	struct progress progress;
};

static void pull_progress_json(const Alps__PullProgress *pp)
{
	json_t *layers = json_array();
	for (size_t i = 0; i < pp->n_layers; i++)
		json_array_append_new(layers, json_pack("{s:s, s:I, s:I, s:s}", "digest",
			pp->layers[i]->digest, "compressed_done", (json_int_t)pp->layers[i]->bytes_done,
			"compressed_total", (json_int_t)pp->layers[i]->bytes_total, "state",
			pp->layers[i]->state));
	json_t *ev = json_pack("{s:b, s:s, s:s, s:I, s:I, s:I, s:I, s:o}", "ok", 1, "event",
			       "progress", "phase", pp->phase, "compressed_done",
			       (json_int_t)pp->bytes_done, "compressed_total",
			       (json_int_t)pp->bytes_total, "rate_bps", (json_int_t)pp->rate_bps,
			       "eta_ms", (json_int_t)pp->eta_ms, "layers", layers);
	client_print_json_line(ev);
}

/* Retries, waits, a tag that moved: shown with --quiet too.  A drawn
 * progress block is erased first; the next update draws it below. */
static void pull_notices(struct pull_view *v, const Alps__PullProgress *pp)
{
	if (pp->n_notices && !v->cl->json && v->progress.redraw && v->progress.drawn) {
		fprintf(stderr, "\r\033[%zuA\033[J", v->progress.drawn);
		v->progress.drawn = 0;
	}
	for (size_t i = 0; i < pp->n_notices; i++) {
		if (v->cl->json)
			client_print_json_line(json_pack("{s:b, s:s, s:s}", "ok", 1, "event", "notice",
							 "message", pp->notices[i]));
		else
			fprintf(stderr, "%s\n", pp->notices[i]);
	}
}

static void on_pull_progress(const Alps__Response *resp, void *arg)
{
	struct pull_view *v = arg;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_PULL_PROGRESS)
		return;
	pull_notices(v, resp->pull_progress);
	if (v->cl->quiet)
		return;
	if (v->cl->json)
		pull_progress_json(resp->pull_progress);
	else
		progress_update(&v->progress, resp->pull_progress);
}

static void on_sigint(int sig)
{
	static const char msg[] = "\nalps pull: detached; the pull goes on in alpsd "
				  "('alps images' shows it when done)\n";
	(void)sig;
	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	_exit(130);
}

static int pull_result(struct client *cl, const Alps__Response *resp)
{
	if (resp->status != ALPS__STATUS__OK)
		return client_report_response(cl, "pull", resp);
	const Alps__PullReply *pr = resp->payload_case == ALPS__RESPONSE__PAYLOAD_PULL_REPLY
					    ? resp->pull_reply : NULL;
	if (!pr) {
		alps_error e = { ALPS_E_PROTOCOL, 0, (char *)"alpsd answered pull without a result" };
		return client_report_error(cl, "pull", &e);
	}
	if (cl->json) {
		/* One JSON object per line, like the progress events before it. */
		json_t *ev = json_pack("{s:s, s:b, s:s, s:s, s:i, s:i, s:I, s:s}", "event", "done",
				       "ok", 1, "reference", pr->reference, "digest", pr->digest,
				       "layer_count", (int)pr->layers, "layers_fetched",
				       (int)pr->layers_fetched, "compressed_size",
				       (json_int_t)pr->size, "refresh", pr->refresh);
		json_object_set_new(ev, "previous_digest", *pr->previous_digest
				    ? json_string(pr->previous_digest) : json_null());
		client_print_json_line(ev);
	} else {
		char size[32];
		format_size(pr->size, size, sizeof(size));
		printf("%s\n  digest %s, %u layers (%u fetched), %s compressed\n", pr->reference,
		       pr->digest, pr->layers, pr->layers_fetched, size);
		if (*pr->previous_digest)
			printf("  changed on the registry: was %s\n", pr->previous_digest);
		else if (strcmp(pr->refresh, "unchanged") == 0)
			printf("  cached, unchanged on the registry\n");
		else if (strcmp(pr->refresh, "not checked") == 0)
			printf("  cached, not checked with the registry (--no-refresh)\n");
	}
	return EXIT_OK;
}

static int run_pull(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "platform", required_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "timeout", required_argument, NULL, 't' },
		{ "no-refresh", no_argument, NULL, 'N' },
		{ NULL, 0, NULL, 0 },
	};
	const char *platform = "";
	unsigned timeout = 0;
	bool no_refresh = false;
	int opt;
	cl->stream = cl->json;          /* JSON lines, the error too */
	while ((opt = command_getopt(cl, argc, argv, "p:q", opts)) != -1) {
		switch (opt) {
		case 'p': platform = optarg; break;
		case 'q': cl->quiet = true; break;
		case 'N': no_refresh = true; break;
		case 't':
			if (client_parse_uint(cl, optarg, "--timeout", 3600, &timeout) < 0)
				return EXIT_USAGE;
			if (timeout == 0)
				return usage_error(cl, "--timeout takes 1 to 3600 seconds");
			break;
		default: return command_opt_exit(opt);
		}
	}
	cl->stream = cl->json;
	if (optind + 1 != argc)
		return usage_error(cl, "give exactly one image reference");
	int rc = EXIT_OK;
	_cleanup_free_ char *ref = client_image_ref(cl, argv[optind], &rc);
	if (!ref)
		return rc;
	alps_error *err = NULL;
	struct client_creds creds;
	client_creds_read(cl, &creds);
	Alps__PullRequest pr = ALPS__PULL_REQUEST__INIT;
	pr.reference = ref;
	pr.platform = (char *)platform;
	pr.credentials = creds.ptrs;
	pr.n_credentials = creds.n;
	pr.timeout_s = timeout;
	pr.no_refresh = no_refresh;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_PULL;
	req.pull = &pr;

	struct pull_view view = { .cl = cl };
	progress_init(&view.progress, !cl->json && !cl->quiet);
	signal(SIGINT, on_sigint);
	Alps__Response *resp = client_call(cl, &req, on_pull_progress, &view, &err);
	signal(SIGINT, SIG_DFL);
	client_creds_free(&creds);
	progress_finish(&view.progress);
	if (!resp)
		return client_fail(cl, "pull", err);
	rc = pull_result(cl, resp);
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

const struct command cmd_pull = {
	.name = "pull",
	.summary = "Pull an image from its registry into the node's store.",
	.usage = "[--platform OS/ARCH[/VARIANT]] [--quiet] [--timeout SECONDS] [--no-refresh] "
		 "REFERENCE",
	.help = "  -p, --platform P   choose P from a multi-platform image (default: the node's)\n"
		"  -q, --quiet        no progress (retries and warnings still show)\n"
		"      --timeout S    give up on a registry that does not answer or send for S\n"
		"                     seconds (1-3600; default: alpsd's registry.timeout)\n"
		"      --no-refresh   a tag the node has cached: use it without asking the\n"
		"                     registry whether it changed\n"
		"A cached tag is re-checked with the registry (a HEAD of its manifest) and\n"
		"pulled again only if it changed.\n"
		"Credentials come from $DOCKER_CONFIG/config.json or ~/.docker/config.json;\n"
		"a broken file is a warning and the pull goes on without credentials.\n"
		"Ctrl-C detaches: the pull goes on in the daemon.\n",
	.run = run_pull,
};

/* ---- an image as JSON (inspect) ---- */

static json_t *image_json(const Alps__ImageInfo *im)
{
	json_t *refs = json_array();
	for (size_t i = 0; i < im->n_references; i++)
		json_array_append_new(refs, json_string(im->references[i]));
	return json_pack("{s:o, s:s, s:I, s:i, s:I, s:I, s:b, s:s}", "references", refs, "digest",
			 im->digest, "squashfs_size", (json_int_t)im->size, "layer_count", (int)im->layers,
			 "created_ms", (json_int_t)im->created_ms, "last_used_ms",
			 (json_int_t)im->last_used_ms, "pinned", (int)im->pinned, "platform",
			 im->platform);
}

/* ---- inspect ---- */

static int run_inspect(struct client *cl, int argc, char **argv)
{
	int rc = command_operands(cl, argc, argv, 1, 1, "give exactly one image (reference or digest)");
	if (rc >= 0)
		return rc;
	_cleanup_free_ char *ref = client_image_ref(cl, argv[optind], &rc);
	if (!ref)
		return rc;
	Alps__InspectRequest ir = ALPS__INSPECT_REQUEST__INIT;
	ir.reference = ref;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_INSPECT;
	req.inspect = &ir;
	rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "inspect", NULL, NULL, &rc);
	if (!resp)
		return rc;
	const Alps__InspectReply *r = resp->payload_case == ALPS__RESPONSE__PAYLOAD_INSPECT_REPLY
					      ? resp->inspect_reply : NULL;
	if (!r || !r->image) {
		alps__response__free_unpacked(resp, NULL);
		alps_error e = { ALPS_E_PROTOCOL, 0, (char *)"alpsd answered inspect without an image" };
		return client_report_error(cl, "inspect", &e);
	}
	json_error_t jerr;
	json_t *j = image_json(r->image);
	json_object_set_new(j, "manifest", json_loads(r->manifest_json, 0, &jerr));
	json_object_set_new(j, "config", json_loads(r->config_json, 0, &jerr));
	json_t *layers = json_array();
	for (size_t i = 0; i < r->n_layers; i++) {
		const Alps__LayerInfo *l = r->layers[i];
		json_array_append_new(layers, json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "digest",
			l->digest, "diff_id", l->diff_id, "media_type", l->media_type,
			"compressed_size", (json_int_t)l->compressed_size, "squashfs_size",
			(json_int_t)l->squashfs_size, "file", l->file));
	}
	json_object_set_new(j, "layers", layers);
	if (!cl->json) {
		/* The labels and the config a user looks for first, then all. */
		json_t *cfg = json_object_get(json_object_get(j, "config"), "config");
		json_t *labels = json_object_get(cfg, "Labels");
		const char *k;
		json_t *v;
		printf("%s\n", r->image->digest);
		for (size_t i = 0; i < r->image->n_references; i++)
			printf("  reference: %s\n", r->image->references[i]);
		json_object_foreach(labels, k, v)
			printf("  label %s = %s\n", k, json_string_value(v) ? json_string_value(v) : "");
		for (size_t i = 0; i < r->n_layers; i++) {
			char c[32], q[32];
			format_size(r->layers[i]->compressed_size, c, sizeof(c));
			format_size(r->layers[i]->squashfs_size, q, sizeof(q));
			printf("  layer %s: %s compressed, %s squashfs %s\n", r->layers[i]->digest, c, q,
			       r->layers[i]->file);
		}
		json_decref(j);
	} else {
		json_object_set_new(j, "ok", json_true());
		client_print_json(j);
	}
	alps__response__free_unpacked(resp, NULL);
	return EXIT_OK;
}

static void append_strings(json_t *arr, char ***argv, int *argc)
{
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		if (!json_is_string(v))
			continue;
		*argv = xreallocarray(*argv, (size_t)*argc + 2, sizeof(char *));
		(*argv)[(*argc)++] = xstrdup(json_string_value(v));
		(*argv)[*argc] = NULL;
	}
}

int image_default_argv(struct client *cl, const char *image, char ***argv, int *argc)
{
	*argv = NULL;
	*argc = 0;
	Alps__InspectRequest ir = ALPS__INSPECT_REQUEST__INIT;
	ir.reference = (char *)image;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_INSPECT;
	req.inspect = &ir;
	int rc = EXIT_OK;
	Alps__Response *resp = *image ? client_call_ok(cl, &req, "run", NULL, NULL, &rc) : NULL;
	json_error_t jerr;
	json_t *cfg = resp && resp->payload_case == ALPS__RESPONSE__PAYLOAD_INSPECT_REPLY
			      ? json_loads(resp->inspect_reply->config_json, 0, &jerr) : NULL;
	json_t *c = json_object_get(cfg, "config");
	append_strings(json_object_get(c, "Entrypoint"), argv, argc);
	append_strings(json_object_get(c, "Cmd"), argv, argc);
	json_decref(cfg);
	if (resp)
		alps__response__free_unpacked(resp, NULL);
	if (*argc > 0)
		return 0;
	if (rc == EXIT_OK) {
		alps_error e = { ALPS_E_INVALID, 0,
				 (char *)"the image has no entrypoint or cmd: give a command" };
		client_report_error(cl, "run", &e);
	}
	return -1;
}

const struct command cmd_inspect = {
	.name = "inspect",
	.summary = "Show an image's manifest, config, labels and layers.",
	.usage = "REFERENCE|DIGEST",
	.help = "",
	.run = run_inspect,
};

/* ---- rm ---- */

/* Remove one image; its result as JSON (ok or not), text printed when
 * not --json. */
static json_t *rm_one(struct client *cl, const char *ref)
{
	alps_error *err = NULL;
	_cleanup_free_ char *norm = image_ref_norm(ref, &err);
	Alps__RemoveRequest rr = ALPS__REMOVE_REQUEST__INIT;
	rr.reference = norm;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_REMOVE;
	req.remove = &rr;
	Alps__Response *resp = norm ? client_call(cl, &req, NULL, NULL, &err) : NULL;
	json_t *j;
	if (!resp) {
		j = client_error_json(err->code, err->msg);
		alps_error_free(err);
	} else if (resp->status != ALPS__STATUS__OK) {
		j = client_error_json((int)resp->status, resp->message);
	} else {
		const Alps__RemoveReply *r = resp->payload_case ==
				ALPS__RESPONSE__PAYLOAD_REMOVE_REPLY ? resp->remove_reply : NULL;
		j = json_pack("{s:b, s:i, s:I}", "ok", 1, "layers_removed",
			      (int)(r ? r->layers_removed : 0), "bytes_freed",
			      (json_int_t)(r ? r->bytes_freed : 0));
	}
	json_object_set_new(j, "reference", json_string(ref));
	if (resp)
		alps__response__free_unpacked(resp, NULL);
	return j;
}

static void rm_print(const json_t *j)
{
	const char *ref = json_string_value(json_object_get(j, "reference"));
	if (!json_is_true(json_object_get(j, "ok"))) {
		fprintf(stderr, "alps rm: %s: %s\n", ref,
			json_string_value(json_object_get(j, "message")));
		return;
	}
	char size[32];
	format_size((uint64_t)json_integer_value(json_object_get(j, "bytes_freed")), size,
		    sizeof(size));
	printf("removed %s (%lld layers, %s freed)\n", ref,
	       (long long)json_integer_value(json_object_get(j, "layers_removed")), size);
}

/* {"ok", "results": [...]} (stolen), and when one failed, the first
 * failure's code and how many failed, as every ok:false object has. */
static json_t *rm_document(json_t *results)
{
	size_t i, failed = 0;
	json_t *r, *first = NULL;
	json_array_foreach(results, i, r) {
		if (json_is_true(json_object_get(r, "ok")))
			continue;
		failed++;
		first = first ? first : r;
	}
	json_t *doc = json_pack("{s:b, s:o}", "ok", failed == 0, "results", results);
	if (first) {
		json_object_set(doc, "code", json_object_get(first, "code"));
		json_object_set_new(doc, "message", json_sprintf("%zu of %zu images not removed",
								 failed, json_array_size(results)));
	}
	return doc;
}

/* One document for all the images: {"ok", "results": [...]}. */
static int run_rm(struct client *cl, int argc, char **argv)
{
	int rc = command_operands(cl, argc, argv, 1, INT_MAX,
				  "give one or more images (reference or digest)");
	if (rc >= 0)
		return rc;
	rc = EXIT_OK;
	json_t *results = json_array();
	for (int i = optind; i < argc; i++) {
		json_t *j = rm_one(cl, argv[i]);
		if (!json_is_true(json_object_get(j, "ok"))) {
			const char *code = json_string_value(json_object_get(j, "code"));
			rc = rc == EXIT_UNREACHABLE || strcmp(code, "unavailable") == 0
				     ? EXIT_UNREACHABLE : EXIT_FAILED;
		}
		if (!cl->json)
			rm_print(j);
		json_array_append_new(results, j);
	}
	if (cl->json)
		client_print_json(rm_document(results));
	else
		json_decref(results);
	return rc;
}

const struct command cmd_rm = {
	.name = "rm",
	.summary = "Remove images from the store (admin; refused while a job uses them).",
	.usage = "REFERENCE|DIGEST...",
	.help = "A reference removes that tag (and the image with its last tag); a digest\n"
		"removes the image with all its tags.  Layers no other image uses go too.\n",
	.run = run_rm,
};
