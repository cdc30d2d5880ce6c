/* dockercfg.h: registry credentials from a docker config.json.
 *
 * The client reads the user's ~/.docker/config.json (with the user's
 * rights) and sends the credentials for the registries it needs; the daemon
 * never reads users' files.  Understood per entry of "auths":
 *
 *	"auth": base64("user:password")
 *	"username" / "password"       (override "auth")
 *	"identitytoken"               (an OAuth2 refresh token)
 *
 * "credsStore" and "credHelpers" name external programs; the client may
 * run them itself, this parser only reports them as absent. */
#ifndef ALPS_DOCKERCFG_H
#define ALPS_DOCKERCFG_H

#include "error.h"

#define DOCKERCFG_MAX_SIZE (1 << 20)

struct registry_cred {
	char *host;             /* owned: normalized, "docker.io", "localhost:5000" */
	char *username;         /* owned, or NULL */
	char *password;         /* owned, or NULL; wiped on free */
	char *identity_token;   /* owned, or NULL; wiped on free */
};

/* Parse a config.json blob into *creds (caller frees with
 * dockercfg_creds_free()).  Keys are normalized: a scheme and a path are
 * dropped ("https://index.docker.io/v1/" is "docker.io").  Entries with
 * nothing usable are skipped.  ALPS_E_INVALID names the bad field. */
int dockercfg_parse(const char *json, size_t len, struct registry_cred **creds, size_t *ncreds,
		    alps_error **err);

/* The entry for a registry host (as in struct image_ref), or NULL. */
const struct registry_cred *dockercfg_find(const struct registry_cred *creds, size_t ncreds,
					   const char *host);

/* "https://index.docker.io/v1/" -> "docker.io"; caller frees. */
char *dockercfg_normalize_host(const char *key);

void dockercfg_cred_copy(struct registry_cred *dst, const struct registry_cred *src);
void dockercfg_cred_clear(struct registry_cred *c);
void dockercfg_creds_free(struct registry_cred *creds, size_t ncreds);

#endif
