/* registry.h: a blocking OCI distribution client on libcurl.
 *
 * A session serves one image reference: it knows the endpoints to try
 * (the configured mirrors of the reference's registry, then the registry),
 * their scheme, CA and credentials, and caches each endpoint's auth token
 * until it expires.
 *
 * Thread safety: registry_resolve() and registry_fetch_*() may run
 * concurrently on one session from several worker threads (the pull code
 * fetches layers in parallel).  Each call uses its own curl easy handle;
 * connections, DNS answers and TLS sessions are shared through a CURLSH
 * guarded by mutexes, and an endpoint's auth state by its own mutex.
 * registry_session_new() and _free() must not race with anything on the
 * same session.  Calls block: never make them on the event loop.
 *
 * Security: TLS is always verified (system CAs plus the registry's
 * ca_file).  Plain HTTP is used only for registries the config marks
 * insecure and for loopback registries (localhost, 127.0.0.0/8, ::1), and
 * only after HTTPS failed.  Credentials go to the registry host only:
 * redirects to blob storage on another host get no Authorization (libcurl's
 * default, which we keep: no custom Authorization header is ever set).
 * Every byte is checked against its digest before it counts.
 *
 * Errors: ALPS_E_UNAVAILABLE (cannot connect; names the host), ALPS_E_TIMEOUT,
 * ALPS_E_NOT_FOUND (unknown repository, tag or blob; names the reference),
 * ALPS_E_PERMISSION (401/403 after authenticating), ALPS_E_INTEGRITY (digest
 * or size mismatch), ALPS_E_UNSUPPORTED (schema 1, unknown media types),
 * ALPS_E_INVALID (malformed JSON; names the field), ALPS_E_LIMIT (size
 * bounds), ALPS_E_CANCELLED (the sink stopped).  Messages quote the
 * registry's own {"errors":[...]} body, escaped and cut. */
#ifndef ALPS_REGISTRY_H
#define ALPS_REGISTRY_H

#include <stdint.h>

#include "common/dockercfg.h"
#include "common/error.h"
#include "common/ref.h"
#include "daemon/settings.h"
#include "manifest.h"

struct registry_session;

/* What a reference resolves to on the node's platform.  All owned. */
struct resolved_image {
	char *index_digest;             /* NULL when the reference named a manifest */
	void *index_bytes;
	size_t index_len;
	char *manifest_digest;
	char *manifest_media_type;
	void *manifest_bytes;           /* exactly as served: its digest is the image's */
	size_t manifest_len;
	struct manifest manifest;
	struct platform platform;       /* the platform asked for */
	void *config_bytes;
	size_t config_len;
	struct image_config config;
	char *endpoint;                 /* "https://host:port" that answered */
};

/* Receives verified-so-far bytes of a blob, in order, each byte once (also
 * across resumed transfers).  Non-zero stops the download
 * (ALPS_E_CANCELLED).  The blob is only good once registry_fetch_*()
 * returns 0: on ALPS_E_INTEGRITY the caller discards what it received. */
typedef int (*registry_sink_fn)(void *arg, const void *data, size_t len);

/* Counters for tests and logs; read after the calls have returned. */
struct registry_stats {
	uint64_t requests;      /* HTTP requests made, auth and retries included */
	uint64_t retries;
	uint64_t resumes;       /* blob transfers continued with Range */
	uint64_t token_fetches;
};

/* curl_global_init() once; registry_session_new() calls it too.  Call it
 * from main() before starting threads to be safe on old libcurl. */
int registry_global_init(alps_error **err);
/* curl_global_cleanup(), at exit, after every session is freed. */
void registry_global_cleanup(void);

/* cfg supplies default_registry, http_timeout_s, http_retries,
 * connect_timeout_s, connect_retries and the
 * [[registry.host]] entries (mirrors, insecure, ca_file); it must outlive
 * nothing: what is needed is copied.  creds (may be NULL) are matched by
 * host, for the registry and each mirror. */
struct registry_session *registry_session_new(const struct config *cfg,
					      const struct image_ref *ref,
					      const struct registry_cred *creds, size_t ncreds,
					      alps_error **err);
void registry_session_free(struct registry_session *s);

/* Fetch and verify the manifest (through the index for platform when the
 * reference names one; NULL platform: cfg->platform, else the node's) and
 * the image config.  On error *out is left zeroed. */
int registry_resolve(struct registry_session *s, const struct platform *platform,
		     struct resolved_image *out, alps_error **err);
void registry_resolved_free(struct resolved_image *r);

/* Stream blob digest (size bytes) to sink, verifying size and digest;
 * interrupted transfers resume with Range. */
int registry_fetch_blob(struct registry_session *s, const char *digest, uint64_t size,
			registry_sink_fn sink, void *arg, alps_error **err);
/* Same for a layer descriptor: from the registry first, then, for foreign
 * layers, from the descriptor's urls (without credentials). */
int registry_fetch_layer(struct registry_session *s, const struct descriptor *d,
			 registry_sink_fn sink, void *arg, alps_error **err);
/* A blob into memory (at most max bytes), verified. Caller frees *buf. */
int registry_fetch_blob_mem(struct registry_session *s, const char *digest, uint64_t size,
			    uint64_t max, void **buf, size_t *len, alps_error **err);

/* Where the session's reference points now for platform (NULL as in
 * registry_resolve()): *digest, the image manifest's digest (caller
 * frees).  A HEAD of the manifest, answered by its Docker-Content-Digest
 * when that equals known (the digest the caller has) or names no index;
 * else a GET (of the index: the platform's entry). */
int registry_current_digest(struct registry_session *s, const struct platform *platform,
			    const char *known, char **digest, alps_error **err);

void registry_get_stats(struct registry_session *s, struct registry_stats *out);

/* Told each retry and wait, as a line for the user ("registry
 * 127.0.0.1:5999: connection refused, retry 1 of 2 in 0.5 s").  Called
 * from the thread making the request; set before any request. */
typedef void (*registry_notice_fn)(void *arg, const char *msg);
void registry_set_notice(struct registry_session *s, registry_notice_fn fn, void *arg);

/* Override registry.timeout for this session (seconds, > 0); the connect
 * timeout is cut to it. */
void registry_set_timeout(struct registry_session *s, long timeout_s);

/* Where registry_resolve() may find an image's config instead of fetching
 * it: fn(arg, manifest_digest, config_digest, &buf, &len) returns 0 with a
 * malloc()ed copy when the image is already known (its digest is checked
 * as a download's would be).  Called from the resolving thread. */
typedef int (*registry_config_source_fn)(void *arg, const char *manifest_digest,
					 const char *config_digest, void **buf, size_t *len);
void registry_set_config_source(struct registry_session *s, registry_config_source_fn fn,
				void *arg);

/* Is host (as in a reference: "name[:port]" or "[v6]:port") a loopback
 * address?  Docker allows plain HTTP to those. */
bool registry_host_is_loopback(const char *host);

#endif
