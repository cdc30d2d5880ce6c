/* dockercfg.c: see dockercfg.h. */
#include <config.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "dockercfg.h"
#include "log.h"

/* Base64 of "user:password"; NULL on bad input.  Caller frees. */
static char *b64_decode(const char *in)
{
	size_t len;
	char *out = (char *)base64_decode(in, &len);
	/* A NUL inside would cut the password silently. */
	if (out && strlen(out) != len) {
		free(out);
		return NULL;
	}
	return out;
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

char *dockercfg_normalize_host(const char *key)
{
	const char *p = strstr(key, "://");
	p = p ? p + 3 : key;
	size_t len = strcspn(p, "/");
	char *host = xstrndup(p, len);
	if (strcmp(host, "index.docker.io") == 0 || strcmp(host, "registry-1.docker.io") == 0 ||
	    strcmp(host, "registry.hub.docker.com") == 0) {
		free(host);
		host = xstrdup("docker.io");
	}
	return host;
}

static int fail_field(alps_error **err, const char *host, const char *field, const char *why)
{
	_cleanup_free_ char *esc = log_escape(host, 100);
	return alps_fail(err, ALPS_E_INVALID, "docker config: auths.\"%s\".%s %s", esc, field, why);
}

static int string_field(json_t *entry, const char *host, const char *field, char **out,
			alps_error **err)
{
	json_t *v = json_object_get(entry, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return fail_field(err, host, field, "is not a string");
	if (json_string_length(v) > 0)
		*out = xstrdup(json_string_value(v));
	return 0;
}

static int decode_auth(const char *host, const char *auth, struct registry_cred *c,
		       alps_error **err)
{
	char *plain = b64_decode(auth);
	if (!plain)
		return fail_field(err, host, "auth", "is not valid base64");
	char *colon = strchr(plain, ':');
	if (!colon) {
		wipe_free(plain);
		return fail_field(err, host, "auth", "does not decode to \"user:password\"");
	}
	*colon = '\0';
	c->username = xstrdup(plain);
	c->password = xstrdup(colon + 1);
	wipe_free(plain);
	return 0;
}

static int parse_entry(const char *key, json_t *entry, struct registry_cred *c, alps_error **err)
{
	_cleanup_free_ char *auth = NULL;
	char *user = NULL, *pass = NULL;
	if (!json_is_object(entry)) {
		_cleanup_free_ char *esc = log_escape(key, 100);
		return alps_fail(err, ALPS_E_INVALID, "docker config: auths.\"%s\" is not an object",
				 esc);
	}
	if (string_field(entry, key, "auth", &auth, err) < 0 ||
	    string_field(entry, key, "username", &user, err) < 0 ||
	    string_field(entry, key, "password", &pass, err) < 0 ||
	    string_field(entry, key, "identitytoken", &c->identity_token, err) < 0)
		goto fail;
	if (auth && decode_auth(key, auth, c, err) < 0)
		goto fail;
	if (auth)
		explicit_bzero(auth, strlen(auth));
	/* Explicit fields win over "auth", as in docker's own reader. */
	if (user) {
		free(c->username);
		c->username = user;
		user = NULL;
	}
	if (pass) {
		wipe_free(c->password);
		c->password = pass;
		pass = NULL;
	}
	c->host = dockercfg_normalize_host(key);
	return 0;
fail:
	free(user);
	wipe_free(pass);
	dockercfg_cred_clear(c);
	return -1;
}

static bool cred_usable(const struct registry_cred *c)
{
	return c->identity_token || (c->username && c->password);
}

static int parse_auths(json_t *auths, struct registry_cred **creds, size_t *ncreds,
		       alps_error **err)
{
	const char *key;
	json_t *entry;
	struct registry_cred *v = xcalloc(json_object_size(auths), sizeof(*v));
	size_t n = 0;
	json_object_foreach(auths, key, entry) {
		if (parse_entry(key, entry, &v[n], err) < 0) {
			dockercfg_creds_free(v, n);
			return -1;
		}
		if (cred_usable(&v[n]) && !dockercfg_find(v, n, v[n].host))
			n++;
		else
			dockercfg_cred_clear(&v[n]);
	}
	*creds = v;
	*ncreds = n;
	return 0;
}

int dockercfg_parse(const char *json, size_t len, struct registry_cred **creds, size_t *ncreds,
		    alps_error **err)
{
	json_error_t jerr;
	*creds = NULL;
	*ncreds = 0;
	if (len > DOCKERCFG_MAX_SIZE)
		return alps_fail(err, ALPS_E_LIMIT, "docker config: larger than %d bytes",
				 DOCKERCFG_MAX_SIZE);
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return alps_fail(err, ALPS_E_INVALID, "docker config: line %d column %d: %s",
				 jerr.line, jerr.column, jerr.text);
	int rc = 0;
	json_t *auths = json_object_get(root, "auths");
	if (!json_is_object(root))
		rc = alps_fail(err, ALPS_E_INVALID, "docker config: not a JSON object");
	else if (auths && !json_is_object(auths))
		rc = alps_fail(err, ALPS_E_INVALID, "docker config: \"auths\" is not an object");
	else if (auths)
		rc = parse_auths(auths, creds, ncreds, err);
	json_decref(root);
	return rc;
}

const struct registry_cred *dockercfg_find(const struct registry_cred *creds, size_t ncreds,
					   const char *host)
{
	for (size_t i = 0; i < ncreds; i++)
		if (creds[i].host && strcasecmp(creds[i].host, host) == 0)
			return &creds[i];
	return NULL;
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

void dockercfg_cred_copy(struct registry_cred *dst, const struct registry_cred *src)
{
	dst->host = dup_or_null(src->host);
	dst->username = dup_or_null(src->username);
	dst->password = dup_or_null(src->password);
	dst->identity_token = dup_or_null(src->identity_token);
}

void dockercfg_cred_clear(struct registry_cred *c)
{
	free(c->host);
	free(c->username);
	wipe_free(c->password);
	wipe_free(c->identity_token);
	memset(c, 0, sizeof(*c));
}

void dockercfg_creds_free(struct registry_cred *creds, size_t ncreds)
{
	if (!creds)
		return;
	for (size_t i = 0; i < ncreds; i++)
		dockercfg_cred_clear(&creds[i]);
	free(creds);
}
