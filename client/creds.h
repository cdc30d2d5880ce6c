/* creds.h: the calling user's registry credentials, for pull and outdated. */
#ifndef ALPS_CLIENT_CREDS_H
#define ALPS_CLIENT_CREDS_H

#include "client/client.h"
#include "common/dockercfg.h"

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
/* A line for the user on stderr ("alps CMD: warning: ..."), or in a JSON
 * stream (pull --json) a {"ok": true, "event": "warning", "message": ...}
 * line. */
void client_warn(struct client *cl, const char *msg);

#endif
