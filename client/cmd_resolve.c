/* cmd_resolve.c: alps resolve REF: what a tag points to in its registry
 * now (the digest the Slurm plugin pins a job's image to), without
 * pulling anything. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>

#include "client/client.h"
#include "client/creds.h"

static int run_resolve(struct client *cl, int argc, char **argv)
{
	int prc = command_operands(cl, argc, argv, 1, 1, "give one image reference");
	if (prc >= 0)
		return prc;
	struct client_creds creds;
	client_creds_read(cl, &creds);
	Alps__ResolveRequest rq = ALPS__RESOLVE_REQUEST__INIT;
	rq.reference = argv[optind];
	rq.credentials = creds.ptrs;
	rq.n_credentials = creds.n;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_RESOLVE;
	req.resolve = &rq;
	int rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "resolve", NULL, NULL, &rc);
	client_creds_free(&creds);
	if (!resp)
		return rc;
	const Alps__ResolveReply *rr = resp->resolve_reply;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_RESOLVE_REPLY) {
		alps__response__free_unpacked(resp, NULL);
		fprintf(stderr, "alps resolve: the daemon sent no resolve reply\n");
		return EXIT_FAILED;
	}
	if (cl->json)
		client_print_json(json_pack("{s:b, s:s, s:s, s:s}", "ok", 1, "reference",
					    rr->reference, "digest", rr->digest, "pinned",
					    rr->pinned));
	else
		printf("%s\n", rr->pinned);
	alps__response__free_unpacked(resp, NULL);
	return EXIT_OK;
}

const struct command cmd_resolve = {
	.name = "resolve",
	.summary = "Show the digest an image reference's tag points to now (nothing is pulled).",
	.usage = "REFERENCE",
	.help = "  Prints REGISTRY/REPOSITORY:TAG@DIGEST: the index's digest when the tag\n"
		"  names a multi-platform index, else the manifest's.  The Slurm plugin pins\n"
		"  a job's image so at submission (doc/slurm.md).  Credentials as for\n"
		"  'alps pull' ($DOCKER_CONFIG/config.json or ~/.docker/config.json, read\n"
		"  as you); alpsd uses them for this request and keeps nothing.\n",
	.run = run_resolve,
};
