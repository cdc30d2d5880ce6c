/* registry_int.h: what the files of the registry client share (registry.h
 * is its public face).  registry.c holds the endpoints, the session and the
 * registry API (manifests, blobs, resolution); registry_http.c one HTTP
 * exchange on a curl easy handle (struct xfer); registry_auth.c the token
 * flow and the retry and re-authentication loop around an exchange. */
#ifndef ALPS_DAEMON_IMAGE_REGISTRY_INT_H
#define ALPS_DAEMON_IMAGE_REGISTRY_INT_H

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "daemon/image/registry.h"

#ifdef PACKAGE_VERSION
#define USER_AGENT "alps/" PACKAGE_VERSION
#else
#define USER_AGENT "alps"
#endif

#define ERR_BODY_MAX 4096       /* registry error bodies kept for messages */
#define TOKEN_BODY_MAX (1u << 20)
#define TOKEN_MIN_LIFETIME_S 60 /* the token spec's default and floor */
#define TOKEN_EARLY_S 10        /* renew a little before expiry */
#define RETRY_BASE_MS 500
#define RETRY_MAX_MS 30000
#define RETRY_AFTER_MAX_S 120   /* a longer wait fails the pull instead */
#define REFUSED_RETRY_MAX_MS 1000       /* a refusing registry is down: no long waits */
#define LOW_SPEED_BYTES 1024    /* below this rate for http_timeout_s: stalled */

enum auth_scheme {
	AUTH_NONE = 0,
	AUTH_BASIC,
	AUTH_BEARER,
};

struct challenge {
	enum auth_scheme scheme;
	char *realm, *service, *scope;  /* owned */
};

/* One place to fetch from: a mirror or the registry itself. */
struct endpoint {
	char *authority;        /* "host:port" as in URLs */
	char *prefix;           /* a mirror's path prefix, "" or "/path" */
	char *ca_file;          /* owned, or NULL */
	bool allow_http;        /* insecure in config, or loopback */
	char *fixed_scheme;     /* a mirror URL's scheme, or NULL */
	struct registry_cred cred;      /* copy; empty fields when none */

	bool lock_ready;
	pthread_mutex_t lock;   /* guards everything below */
	bool pinged;
	char *scheme;           /* "https" or "http", once pinged */
	struct challenge auth;  /* what /v2/ asked for */
	char *token;            /* bearer token, or NULL */
	uint64_t token_expiry_ms;
	unsigned token_gen;     /* bumped on each new token */
};

struct registry_session {
	struct image_ref ref;
	char *platform;                 /* cfg->platform, "" = node's */
	long timeout_s;                 /* no answer or progress for this long: give up */
	long connect_timeout_s;         /* TCP and TLS; at most timeout_s */
	long connect_timeout_cfg;       /* registry.connect_timeout */
	unsigned retries;
	unsigned connect_retries;       /* of a refused connection */
	registry_notice_fn notice;
	void *notice_arg;
	struct endpoint *eps;
	size_t neps;
	size_t preferred;               /* the endpoint that resolved (atomic) */
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	struct registry_stats stats;    /* atomic counters */
	registry_config_source_fn config_source;
	void *config_source_arg;
};

struct membuf {
	char *data;
	size_t len, cap;
	uint64_t max;
	const char *what;       /* for the limit message */
};

/* A blob being streamed: survives retries and endpoint changes so that a
 * resumed transfer continues the digest and never repeats bytes. */
struct blob_stream {
	const char *digest;
	uint64_t size;
	struct digester *hash;
	uint64_t delivered;     /* bytes hashed and given to the sink */
	uint64_t skip;          /* bytes of this response already delivered */
	registry_sink_fn sink;
	void *arg;
};

struct xfer {
	struct registry_session *s;
	struct endpoint *ep;    /* TLS settings and auth; NULL for foreign URLs */
	char *url;              /* owned */
	const char *what;       /* "manifest docker.io/library/x:1", for messages */
	const char *accept;
	bool use_auth;          /* send the endpoint's credentials */
	bool allow_http;
	bool ok_401;            /* the /v2/ ping: 401 is an answer */
	bool head;              /* HEAD: headers only */
	const char *post;       /* form body, or NULL for GET */
	const char *basic_user, *basic_pass;    /* token requests */
	char *bearer;           /* owned copy of the token sent */
	unsigned token_gen;
	struct membuf *mem;     /* body into memory ... */
	struct blob_stream *blob;       /* ... or streamed */

	/* The last response's status and headers (redirects reset them). */
	long status;
	char *content_type, *docker_digest, *retry_after, *content_range, *challenge;
	bool body_started;
	char err_body[ERR_BODY_MAX + 1];
	size_t err_len;
	alps_error *cb_err;     /* why a callback stopped the transfer */
	char curl_msg[CURL_ERROR_SIZE];
	CURLcode curl_rc;
	bool retryable;
	bool refused;           /* the host refused the connection, or is unknown */
	bool connected;         /* the TCP connection was made */
	bool tls_done;          /* ... and its TLS handshake (or plain HTTP) */
	int os_errno;           /* of a failed connect */
	uint64_t retry_after_ms;
	char reason[96];        /* why it failed, short: "connection refused", "HTTP 503" */
};


/* registry.c */
void reg_stat_add(uint64_t *counter);
void reg_free_null(char **p);
int reg_hand_over(alps_error **err, alps_error *e);
char *url_authority(const char *url);
void challenge_clear(struct challenge *c);

/* registry_http.c */
void xfer_clear(struct xfer *x);
bool is_bearer(const char *challenge);
int xfer_once(struct xfer *x, alps_error **err);
void reg_sleep_ms(uint64_t ms);
uint64_t reg_backoff_ms(unsigned attempt);

/* registry_auth.c */
int endpoint_ping(struct registry_session *s, struct endpoint *ep, alps_error **err);
int xfer_run(struct xfer *x, alps_error **err);

#endif
