/* ref.h: image references.
 *
 * The grammar is the one of distribution/reference (what docker, podman and
 * skopeo accept):
 *
 *	reference := name [ ":" tag ] [ "@" digest ]
 *	name      := [ domain "/" ] path
 *	domain    := host [ ":" port ]         host: DNS name, IPv4, [IPv6]
 *	path      := component ( "/" component )*
 *	component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
 *	tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
 *
 * The first path element is a registry only if it looks like a host: it
 * has a "." or a ":", or is "localhost" (docker's rule).  Otherwise the
 * reference is on the default registry, and on docker.io a single
 * component name means "library/NAME".  "index.docker.io" is docker.io.
 * A "docker://" prefix is accepted; no tag and no digest means ":latest".
 *
 * Enroot's form, which users write in environment definition files, puts a
 * "#" after the registry instead: [USER@][REGISTRY#]IMAGE[:TAG].
 */
#ifndef ALPS_REF_H
#define ALPS_REF_H

#include "error.h"

#define REF_DOCKER_HUB "docker.io"
#define REF_NAME_MAX 255        /* registry "/" repository */
#define REF_TAG_MAX 128

struct image_ref {
	char *registry;         /* owned: "docker.io", "localhost:5000", "[::1]:5000" */
	char *repository;       /* owned: "library/ubuntu" */
	char *tag;              /* owned; NULL when only a digest was given */
	char *digest;           /* owned; NULL unless given */
};

/* Parse s into *out (which the caller then releases with ref_free()).
 * default_registry is used when s names none (NULL: docker.io).
 * ALPS_E_INVALID with the reason on a malformed reference. */
int ref_parse(const char *s, const char *default_registry, struct image_ref *out,
	      alps_error **err);

/* Parse enroot's [docker://][USER@][REGISTRY#]IMAGE[:TAG][@DIGEST].  The
 * user, if any, goes to *user (caller frees; user may be NULL to ignore
 * it).  Without "#" the image is on the default registry; an image whose
 * first component looks like a host but has no "#" is rejected, because
 * enroot would read it as a path on the default registry and that is
 * almost never what the user meant. */
int ref_parse_enroot(const char *s, const char *default_registry, struct image_ref *out,
		     char **user, alps_error **err);

/* Either form: "#" in the name part selects enroot's. */
int ref_parse_any(const char *s, const char *default_registry, struct image_ref *out,
		  alps_error **err);

/* Canonical "registry/repository[:tag][@digest]".  Caller frees. */
char *ref_format(const struct image_ref *ref);
/* What to ask the registry for: the digest if there is one, else the tag. */
const char *ref_reference(const struct image_ref *ref);

void ref_copy(struct image_ref *dst, const struct image_ref *src);
/* Free the fields and zero the struct; safe on a zeroed struct. */
void ref_free(struct image_ref *ref);

/* Is host a valid "host[:port]" registry name? */
bool ref_host_valid(const char *host);

#endif
