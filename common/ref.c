/* ref.c: image references (see ref.h for the grammar). */
#include <config.h>

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "log.h"
#include "ref.h"

#define DOCKER_PREFIX "docker://"

static int fail_ref(alps_error **err, const char *s, const char *fmt, ...) ALPS_PRINTF(3, 4);

static int fail_ref(alps_error **err, const char *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *why = xvasprintf(fmt, ap);
	va_end(ap);
	_cleanup_free_ char *esc = log_escape(s, 300);
	return alps_fail(err, ALPS_E_INVALID, "invalid image reference \"%s\": %s", esc, why);
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )* */
static bool component_valid(const char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		if (!is_lower_alnum(s[i]))
			return false;
		while (i < len && is_lower_alnum(s[i]))
			i++;
		if (i == len)
			return true;
		size_t sep = i;
		if (s[i] == '-') {
			while (i < len && s[i] == '-')
				i++;
		} else if (s[i] == '_') {
			i += (i + 1 < len && s[i + 1] == '_') ? 2 : 1;
		} else if (s[i] == '.') {
			i++;
		} else {
			return false;
		}
		if (i == len || i == sep)
			return false;
	}
	return len > 0;
}

static int path_check(const char *input, const char *path, alps_error **err)
{
	const char *p = path;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len == 0)
			return fail_ref(err, input, "empty path component in \"%s\"", path);
		if (!component_valid(p, len)) {
			_cleanup_free_ char *c = xstrndup(p, len);
			for (size_t i = 0; i < len; i++)
				if (c[i] >= 'A' && c[i] <= 'Z')
					return fail_ref(err, input,
							"repository name must be lowercase");
			return fail_ref(err, input,
					"path component \"%s\" must be lowercase letters and digits "
					"joined by '.', '_', '__' or '-'", c);
		}
		if (!slash)
			return 0;
		p = slash + 1;
	}
}

/* [A-Za-z0-9] | [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9], dot separated. */
static bool domain_name_valid(const char *s, size_t len)
{
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != '.') {
			if (!is_alnum(s[i]) && s[i] != '-')
				return false;
			continue;
		}
		if (i == start || s[start] == '-' || s[i - 1] == '-')
			return false;
		start = i + 1;
	}
	return len > 0;
}

static bool port_valid(const char *s)
{
	size_t len = strlen(s);
	if (len == 0 || len > 5 || strspn(s, "0123456789") != len)
		return false;
	long port = strtol(s, NULL, 10);
	return port >= 1 && port <= 65535;
}

bool ref_host_valid(const char *host)
{
	const char *port = NULL;
	if (host[0] == '[') {
		const char *end = strchr(host, ']');
		if (!end || (end[1] != '\0' && end[1] != ':'))
			return false;
		char addr[INET6_ADDRSTRLEN + 1];
		struct in6_addr a6;
		size_t alen = (size_t)(end - host - 1);
		if (alen >= sizeof(addr))
			return false;
		memcpy(addr, host + 1, alen);
		addr[alen] = '\0';
		if (inet_pton(AF_INET6, addr, &a6) != 1)
			return false;
		port = end[1] == ':' ? end + 2 : NULL;
		return !port || port_valid(port);
	}
	const char *colon = strchr(host, ':');
	size_t nlen = colon ? (size_t)(colon - host) : strlen(host);
	if (!domain_name_valid(host, nlen))
		return false;
	return !colon || port_valid(colon + 1);
}

/* Docker's rule: the first element names a registry if it has a "." or a
 * ":", is "localhost", or has uppercase letters (which a repository
 * cannot have).  "[" starts an IPv6 address. */
static bool looks_like_host(const char *s, size_t len)
{
	if (len == 9 && memcmp(s, "localhost", 9) == 0)
		return true;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '.' || s[i] == ':' || s[i] == '[' || (s[i] >= 'A' && s[i] <= 'Z'))
			return true;
	return false;
}

/* Tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
static int tag_check(const char *input, const char *tag, alps_error **err)
{
	size_t len = strlen(tag);
	if (len == 0)
		return fail_ref(err, input, "empty tag after ':'");
	if (len > REF_TAG_MAX)
		return fail_ref(err, input, "tag longer than %d characters", REF_TAG_MAX);
	if (!is_alnum(tag[0]) && tag[0] != '_')
		return fail_ref(err, input, "tag must start with a letter, digit or '_'");
	for (size_t i = 1; i < len; i++)
		if (!is_alnum(tag[i]) && !strchr("_.-", tag[i]))
			return fail_ref(err, input, "tag \"%s\" may only contain letters, digits, "
					"'_', '.' and '-'", tag);
	return 0;
}

/* Bytes that no part of a reference can hold; a precise message beats a
 * "path component" complaint about a stray space or newline. */
static int chars_check(const char *input, alps_error **err)
{
	for (const unsigned char *p = (const unsigned char *)input; *p; p++)
		if (*p <= ' ' || *p >= 0x7f)
			return fail_ref(err, input, "character 0x%02x at offset %zu is not allowed",
					*p, (size_t)(p - (const unsigned char *)input));
	return 0;
}

static int strip_transport(const char *input, const char **rest, alps_error **err)
{
	if (str_has_prefix(input, DOCKER_PREFIX)) {
		*rest = input + strlen(DOCKER_PREFIX);
		return 0;
	}
	const char *sep = strstr(input, "://");
	if (sep) {
		_cleanup_free_ char *scheme = xstrndup(input, (size_t)(sep - input));
		_cleanup_free_ char *esc = log_escape(scheme, 40);
		return alps_fail(err, ALPS_E_UNSUPPORTED,
				 "image reference transport \"%s://\" is not supported "
				 "(only docker://)", esc);
	}
	*rest = input;
	return 0;
}

/* Split "name[:tag][@digest]" in place: body is a private copy. */
static int split_tag_digest(const char *input, char *body, struct image_ref *out,
			    alps_error **err)
{
	char *at = strchr(body, '@');
	if (at) {
		*at = '\0';
		if (strchr(at + 1, '@'))
			return fail_ref(err, input, "more than one '@'");
		if (at[1] == '\0')
			return fail_ref(err, input, "empty digest after '@'");
		if (digest_parse(at + 1, "digest", NULL, err) < 0) {
			_cleanup_free_ char *esc = log_escape(input, 300);
			return alps_error_prefix(err, "invalid image reference \"%s\"", esc);
		}
		out->digest = xstrdup(at + 1);
	}
	char *slash = strrchr(body, '/');
	char *colon = strrchr(slash ? slash : body, ':');
	if (colon) {
		*colon = '\0';
		if (tag_check(input, colon + 1, err) < 0)
			return -1;
		out->tag = xstrdup(colon + 1);
	}
	return 0;
}

/* Set registry and repository from the name part.  registry, when not
 * NULL, is forced (enroot's "REGISTRY#"); else the name may begin with
 * one, or the default applies. */
static int split_name(const char *input, const char *name, const char *registry,
		      const char *default_registry, struct image_ref *out, alps_error **err)
{
	const char *path = name;
	if (name[0] == '\0')
		return fail_ref(err, input, "empty repository name");
	const char *slash = strchr(name, '/');
	if (!registry && slash && looks_like_host(name, (size_t)(slash - name))) {
		out->registry = xstrndup(name, (size_t)(slash - name));
		path = slash + 1;
	} else {
		const char *r = registry ? registry
				: (default_registry && *default_registry) ? default_registry
				: REF_DOCKER_HUB;
		out->registry = xstrdup(r);
	}
	if (!ref_host_valid(out->registry))
		return fail_ref(err, input, "registry \"%s\" is not a valid host[:port]",
				out->registry);
	if (strcmp(out->registry, "index.docker.io") == 0) {
		free(out->registry);
		out->registry = xstrdup(REF_DOCKER_HUB);
	}
	if (path_check(input, path, err) < 0)
		return -1;
	bool hub = strcmp(out->registry, REF_DOCKER_HUB) == 0;
	out->repository = (hub && !strchr(path, '/')) ? xasprintf("library/%s", path)
						       : xstrdup(path);
	if (strlen(out->registry) + 1 + strlen(out->repository) > REF_NAME_MAX)
		return fail_ref(err, input, "name longer than %d characters", REF_NAME_MAX);
	return 0;
}

static int parse_body(const char *input, const char *body_in, const char *registry,
		      const char *default_registry, struct image_ref *out, alps_error **err)
{
	_cleanup_free_ char *body = xstrdup(body_in);
	struct image_ref r = { 0 };
	if (split_tag_digest(input, body, &r, err) < 0 ||
	    split_name(input, body, registry, default_registry, &r, err) < 0) {
		ref_free(&r);
		return -1;
	}
	if (!r.tag && !r.digest)
		r.tag = xstrdup("latest");
	*out = r;
	return 0;
}

int ref_parse(const char *s, const char *default_registry, struct image_ref *out,
	      alps_error **err)
{
	const char *body;
	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return alps_fail(err, ALPS_E_INVALID, "empty image reference");
	if (strip_transport(s, &body, err) < 0 || chars_check(s, err) < 0)
		return -1;
	if (strchr(body, '#'))
		return fail_ref(err, s, "'#' belongs to enroot's REGISTRY#IMAGE form, "
				"which is not accepted here");
	return parse_body(s, body, NULL, default_registry, out, err);
}

/* Does what follows an '@' read as a digest rather than an image?  Both
 * "user@image" and "image@sha256:..." are enroot input. */
static bool starts_digest(const char *s)
{
	const char *colon = strchr(s, ':');
	if (!colon || strchr(s, '/') || colon == s)
		return false;
	const char *hex = colon + 1;
	size_t n = strspn(hex, "0123456789abcdefABCDEF");
	return n >= 32 && hex[n] == '\0';
}

static int enroot_user(const char *input, const char *head, size_t len, char **user,
		       alps_error **err)
{
	if (len == 0)
		return fail_ref(err, input, "empty user before '@'");
	if (memchr(head, '/', len) || memchr(head, ':', len))
		return fail_ref(err, input, "user name may not contain '/' or ':'");
	if (user)
		*user = xstrndup(head, len);
	return 0;
}

/* Enroot without "REGISTRY#": the image is on the default registry. */
static int enroot_default(const char *input, const char *body, const char *default_registry,
			  struct image_ref *out, alps_error **err)
{
	const char *slash = strchr(body, '/');
	if (slash && looks_like_host(body, (size_t)(slash - body))) {
		_cleanup_free_ char *host = xstrndup(body, (size_t)(slash - body));
		return fail_ref(err, input, "\"%s\" looks like a registry: enroot's form "
				"writes it \"%s#%s\"", host, host, slash + 1);
	}
	const char *reg = (default_registry && *default_registry) ? default_registry
								   : REF_DOCKER_HUB;
	return parse_body(input, body, reg, NULL, out, err);
}

int ref_parse_enroot(const char *s, const char *default_registry, struct image_ref *out,
		     char **user, alps_error **err)
{
	const char *body;
	memset(out, 0, sizeof(*out));
	if (user)
		*user = NULL;
	if (!s || !*s)
		return alps_fail(err, ALPS_E_INVALID, "empty image reference");
	if (strip_transport(s, &body, err) < 0 || chars_check(s, err) < 0)
		return -1;
	_cleanup_free_ char *u = NULL;
	const char *hash = strchr(body, '#');
	if (hash) {
		const char *at = memchr(body, '@', (size_t)(hash - body));
		const char *reg = at ? at + 1 : body;
		if (at && enroot_user(s, body, (size_t)(at - body), &u, err) < 0)
			return -1;
		if (reg == hash)
			return fail_ref(err, s, "empty registry before '#'");
		if (strchr(hash + 1, '#'))
			return fail_ref(err, s, "more than one '#'");
		_cleanup_free_ char *registry = xstrndup(reg, (size_t)(hash - reg));
		if (parse_body(s, hash + 1, registry, NULL, out, err) < 0)
			return -1;
	} else {
		const char *at = strchr(body, '@');
		if (at && !starts_digest(at + 1)) {
			if (enroot_user(s, body, (size_t)(at - body), &u, err) < 0)
				return -1;
			body = at + 1;
		}
		if (enroot_default(s, body, default_registry, out, err) < 0)
			return -1;
	}
	if (user)
		*user = steal_pointer(&u);
	return 0;
}

int ref_parse_any(const char *s, const char *default_registry, struct image_ref *out,
		  alps_error **err)
{
	if (s && strchr(s, '#'))
		return ref_parse_enroot(s, default_registry, out, NULL, err);
	return ref_parse(s, default_registry, out, err);
}

char *ref_format(const struct image_ref *ref)
{
	return xasprintf("%s/%s%s%s%s%s", ref->registry, ref->repository,
			 ref->tag ? ":" : "", ref->tag ? ref->tag : "",
			 ref->digest ? "@" : "", ref->digest ? ref->digest : "");
}

const char *ref_reference(const struct image_ref *ref)
{
	return ref->digest ? ref->digest : ref->tag;
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

void ref_copy(struct image_ref *dst, const struct image_ref *src)
{
	dst->registry = dup_or_null(src->registry);
	dst->repository = dup_or_null(src->repository);
	dst->tag = dup_or_null(src->tag);
	dst->digest = dup_or_null(src->digest);
}

void ref_free(struct image_ref *ref)
{
	if (!ref)
		return;
	free(ref->registry);
	free(ref->repository);
	free(ref->tag);
	free(ref->digest);
	memset(ref, 0, sizeof(*ref));
}
