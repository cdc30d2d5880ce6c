/* cmd_outdated.c: alps outdated [REF...]: do cached tags still match their
 * registries? */
#include <config.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "client/creds.h"

static json_t *outdated_json(const Alps__OutdatedReply *rep)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < rep->n_images; i++) {
		const Alps__OutdatedImage *im = rep->images[i];
		json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "reference", im->reference, "status",
				      im->status, "cached_digest", im->cached_digest, "platform",
				      im->platform);
		json_object_set_new(o, "registry_digest", *im->registry_digest
				    ? json_string(im->registry_digest) : json_null());
		json_object_set_new(o, "reason", *im->reason ? json_string(im->reason) : json_null());
		json_array_append_new(arr, o);
	}
	return json_pack("{s:b, s:o}", "ok", 1, "images", arr);
}

static const char *status_text(const char *status)
{
	if (strcmp(status, "up_to_date") == 0)
		return "up to date";
	if (strcmp(status, "not_cached") == 0)
		return "not cached";
	return status;
}

static void outdated_text(const Alps__OutdatedReply *rep)
{
	if (rep->n_images == 0) {
		printf("no cached tags\n");
		return;
	}
	for (size_t i = 0; i < rep->n_images; i++) {
		const Alps__OutdatedImage *im = rep->images[i];
		printf("%s: %s\n", im->reference, status_text(im->status));
		if (strcmp(im->status, "outdated") == 0)
			printf("  cached %s\n  now    %s\n", im->cached_digest, im->registry_digest);
		else if (*im->reason)
			printf("  %s\n", im->reason);
	}
}

static int run_outdated(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned timeout = 0;
	int opt;
	while ((opt = command_getopt(cl, argc, argv, "", opts)) != -1) {
		if (opt != 't')
			return command_opt_exit(opt);
		if (client_parse_uint(cl, optarg, "--timeout", 3600, &timeout) < 0)
			return EXIT_USAGE;
		if (timeout == 0)
			return usage_error(cl, "--timeout takes 1 to 3600 seconds");
	}
	int rc = EXIT_OK;
	size_t n = (size_t)(argc - optind);
	char **refs = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n && rc == EXIT_OK; i++)
		refs[i] = client_image_ref(cl, argv[optind + i], &rc);
	struct client_creds creds;
	if (rc == EXIT_OK)
		client_creds_read(cl, &creds);
	if (rc == EXIT_OK) {
		Alps__OutdatedRequest orq = ALPS__OUTDATED_REQUEST__INIT;
		orq.references = refs;
		orq.n_references = n;
		orq.credentials = creds.ptrs;
		orq.n_credentials = creds.n;
		orq.timeout_s = timeout;
		Alps__Request req = ALPS__REQUEST__INIT;
		req.op_case = ALPS__REQUEST__OP_OUTDATED;
		req.outdated = &orq;
		Alps__Response *resp = client_call_ok(cl, &req, "outdated", NULL, NULL, &rc);
		client_creds_free(&creds);
		if (resp && resp->payload_case == ALPS__RESPONSE__PAYLOAD_OUTDATED_REPLY) {
			if (cl->json)
				client_print_json(outdated_json(resp->outdated_reply));
			else
				outdated_text(resp->outdated_reply);
		} else if (resp) {
			alps_error e = { ALPS_E_PROTOCOL, 0,
					 (char *)"alpsd answered outdated without a result" };
			rc = client_report_error(cl, "outdated", &e);
		}
		if (resp)
			alps__response__free_unpacked(resp, NULL);
	}
	for (size_t i = 0; i < n; i++)
		free(refs[i]);
	free(refs);
	return rc;
}

const struct command cmd_outdated = {
	.name = "outdated",
	.summary = "Say which cached tags their registries now serve differently.",
	.usage = "[--timeout SECONDS] [REFERENCE...]",
	.help = "  REFERENCE          tags to check (default: every cached tag you can see)\n"
		"      --timeout S    give up on a registry that does not answer for S seconds\n"
		"                     (1-3600; default: alpsd's registry.timeout)\n"
		"Each tag is up to date, outdated (the registry's digest differs: 'alps pull'\n"
		"gets the new one), unreachable (with the registry's reason) or not cached.\n"
		"Asks with a HEAD of the manifest; credentials as for 'alps pull'.\n"
		"The exit status is 0 when alpsd answered, whatever each tag's status.\n",
	.run = run_outdated,
};
