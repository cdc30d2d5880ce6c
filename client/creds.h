/* creds.h: the calling user's registry credentials, for pull, outdated
 * and resolve (the client and the Slurm plugin's local side, which runs as
 * the user: creds.c needs nothing of the client's). */
#ifndef ALPS_CLIENT_CREDS_H
#define ALPS_CLIENT_CREDS_H

#include "common/dockercfg.h"
#include "common/error.h"
#include "proto/alps.pb-c.h"

struct client;

/* The user's credentials from $DOCKER_CONFIG/config.json or
 * ~/.docker/config.json as protobuf messages, read with the user's own
 * rights (the daemon never opens a user's files).  A missing file means
 * none; a broken one is a warning (client_warn()) and means none too:
 * registries that need no credentials still work.  Free with client_creds_free(). */
struct client_creds {
	struct registry_cred *creds;
	size_t n;
	Alps__RegistryCredential *msgs;
	Alps__RegistryCredential **ptrs;
};

void client_creds_read(struct client *cl, struct client_creds *out);
void client_creds_free(struct client_creds *c);
/* The same without a client (creds.c): a broken file is an error, *out
 * then empty (still to be freed). */
int client_creds_load(struct client_creds *out, alps_error **err);
/* A line for the user on stderr ("alps CMD: warning: ..."), or in a JSON
 * stream (pull --json) a {"ok": true, "event": "warning", "message": ...}
 * line. */
void client_warn(struct client *cl, const char *msg);

#endif
