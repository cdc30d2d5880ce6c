/* manifest.h: OCI / Docker manifests, image indexes and image configs.
 *
 * Parsing turns registry JSON into C structs and checks what the pull code
 * relies on: media types, digest formats, sizes, bounds.  Everything here
 * is pure (no I/O) and thread safe; the structs own their strings.
 *
 * Supported: OCI image index and Docker manifest list (platform chosen with
 * manifest_index_select()), OCI image manifest and Docker schema 2.
 * Docker schema 1 is rejected (ALPS_E_UNSUPPORTED): it has no config blob
 * and no content-addressed layers worth trusting, and registries stopped
 * serving it.
 *
 * The digest helpers (OpenSSL EVP) are here rather than in common/digest.c
 * so that the client, which only validates digests, does not link libcrypto.
 */
#ifndef ALPS_MANIFEST_H
#define ALPS_MANIFEST_H

#include <stdint.h>

#include "common/digest.h"
#include "common/error.h"
#include "daemon/image/stream.h"   /* enum layer_compression, shared with the converter */

#define MANIFEST_MAX_SIZE (4u << 20)    /* manifests and indexes */
#define MANIFEST_CONFIG_MAX_SIZE (4u << 20)
#define MANIFEST_MAX_LAYERS 256         /* overlayfs stacks no more, in practice */
#define MANIFEST_MAX_INDEX_ENTRIES 1024
#define MANIFEST_MAX_URLS 16

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define MT_DOCKER_SCHEMA1 "application/vnd.docker.distribution.manifest.v1+json"
#define MT_DOCKER_SCHEMA1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"

enum manifest_kind {
	MANIFEST_UNKNOWN = 0,
	MANIFEST_OCI_INDEX,
	MANIFEST_DOCKER_LIST,
	MANIFEST_OCI,
	MANIFEST_DOCKER_V2,
	MANIFEST_DOCKER_V1,     /* schema 1: recognised to be refused */
};

struct platform {
	char *os;               /* owned: "linux" */
	char *architecture;     /* owned: "amd64", "arm64", "arm", ... */
	char *variant;          /* owned, or NULL: "v8", "v7" */
};

struct descriptor {
	char *media_type;       /* owned */
	char *digest;           /* owned, validated */
	uint64_t size;
	char **urls;            /* owned; foreign layers only */
	size_t nurls;
};

struct index_entry {
	struct descriptor desc;
	struct platform platform;   /* zeroed when the entry has none */
};

struct manifest_index {
	enum manifest_kind kind;
	struct index_entry *entries;    /* owned */
	size_t nentries;
};

struct layer {
	struct descriptor desc;
	enum layer_compression compression;
	bool foreign;               /* non-distributable: may live at desc.urls */
};

struct manifest {
	enum manifest_kind kind;
	struct descriptor config;
	struct layer *layers;       /* owned, base first */
	size_t nlayers;
};

struct label {
	char *key, *value;          /* owned */
};

struct image_config {
	char *os, *architecture, *variant;  /* owned; variant may be NULL */
	char *created;                      /* owned, or NULL */
	char **env;                         /* owned "K=V" */
	size_t nenv;
	char **entrypoint;
	size_t nentrypoint;
	char **cmd;
	size_t ncmd;
	char *working_dir;                  /* owned, or NULL */
	char *user;                         /* owned, or NULL */
	struct label *labels;               /* org.opencontainers.image.* included */
	size_t nlabels;
	char **diff_ids;                    /* owned, validated digests, base first */
	size_t ndiff_ids;
};

/* The Accept header value for manifest requests: every index and manifest
 * type, so that a registry never answers 404 for a type we did not list
 * (schema 1 is left out: asking for it invites the conversion). */
const char *manifest_accept(void);

/* Kind of a manifest from its media type; MANIFEST_UNKNOWN if not one. */
enum manifest_kind manifest_kind_of(const char *media_type);
bool manifest_kind_is_index(enum manifest_kind kind);

/* What buf holds: its "mediaType" field, else content_type (the HTTP
 * Content-Type, may be NULL), else the shape of the JSON.  Schema 1 and
 * unknown types are ALPS_E_UNSUPPORTED, bad JSON ALPS_E_INVALID. */
int manifest_detect(const void *buf, size_t len, const char *content_type,
		    enum manifest_kind *kind, alps_error **err);

int manifest_index_parse(const void *buf, size_t len, struct manifest_index *out,
			 alps_error **err);
int manifest_parse(const void *buf, size_t len, struct manifest *out, alps_error **err);
int manifest_config_parse(const void *buf, size_t len, struct image_config *out,
			  alps_error **err);
/* Cross-checks between a manifest and its config: one diff_id per layer. */
int manifest_check_config(const struct manifest *m, const struct image_config *c,
			  alps_error **err);

/* Platforms.  "os/arch[/variant]", normalized ("x86_64" is amd64,
 * "aarch64" arm64; arm64's variant v8 is implied). */
int manifest_platform_parse(const char *s, struct platform *out, alps_error **err);
/* The node's platform from uname(2). */
int manifest_platform_host(struct platform *out, alps_error **err);
/* "linux/arm64/v8"; caller frees. */
char *manifest_platform_format(const struct platform *p);
void manifest_platform_copy(struct platform *dst, const struct platform *src);
void manifest_platform_free(struct platform *p);

/* The entry of idx that runs on want: an exact match first, then for arm
 * the closest older variant (a v7 machine runs v6 and v5 images).
 * ALPS_E_NOT_FOUND lists the platforms the index offers. */
const struct index_entry *manifest_index_select(const struct manifest_index *idx,
						const struct platform *want, alps_error **err);

void manifest_index_free(struct manifest_index *idx);
void manifest_free(struct manifest *m);
void manifest_config_free(struct image_config *c);
void manifest_descriptor_free(struct descriptor *d);
void manifest_descriptor_copy(struct descriptor *dst, const struct descriptor *src);
/* The value of a label, or NULL. */
const char *manifest_config_label(const struct image_config *c, const char *key);

/* Incremental digest computation (SHA-256 / SHA-512, OpenSSL EVP). */
struct digester;
struct digester *digester_new(enum digest_algo algo);
void digester_update(struct digester *d, const void *buf, size_t len);
/* Writes "algo:hex" into out (DIGEST_STRLEN_MAX); the digester can then
 * only be freed. */
void digester_final(struct digester *d, char out[DIGEST_STRLEN_MAX]);
void digester_free(struct digester *d);

/* Digest of a buffer, in the algorithm of expected; compare.  On a
 * mismatch, ALPS_E_INTEGRITY: "WHAT EXPECTED does not match its digest:
 * got ACTUAL".  actual (may be NULL) receives the computed digest. */
int digest_verify(const char *what, const char *expected, const void *buf, size_t len,
		  char actual[DIGEST_STRLEN_MAX], alps_error **err);
/* sha256 of a buffer as "sha256:hex". */
void digest_sha256(const void *buf, size_t len, char out[DIGEST_STRLEN_MAX]);

#endif
