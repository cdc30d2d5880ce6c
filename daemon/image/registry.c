/* registry.c: see registry.h.
 *
 * Layers of this file, bottom up: endpoints (where to send requests and
 * how), one HTTP exchange on a curl easy handle (struct xfer), the retry
 * and re-authentication loop around it, the token flow, then manifests,
 * blobs and resolution. */
#include "config.h"

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
#include "registry.h"

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
	long timeout_s;
	unsigned retries;
	struct endpoint *eps;
	size_t neps;
	size_t preferred;               /* the endpoint that resolved (atomic) */
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	struct registry_stats stats;    /* atomic counters */
	registry_config_source_fn config_source;
	void *config_source_arg;
};

static void stat_add(uint64_t *counter)
{
	__atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

static void free_null(char **p)
{
	free(*p);
	*p = NULL;
}

/* Give e to the caller (who may not want it) and return -1. */
static int hand_over(alps_error **err, alps_error *e)
{
	if (err && !*err)
		*err = e;
	else
		alps_error_free(e);
	return -1;
}

/* ---- global init, loopback ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init_once(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int registry_global_init(alps_error **err)
{
	pthread_once(&global_once, global_init_once);
	if (global_rc != CURLE_OK)
		return alps_fail(err, ALPS_E_INTERNAL, "curl_global_init: %s",
				 curl_easy_strerror(global_rc));
	return 0;
}

void registry_global_cleanup(void)
{
	if (global_rc == CURLE_OK)
		curl_global_cleanup();
}

/* The host part of "host[:port]" / "[v6]:port"; caller frees. */
static char *authority_host(const char *authority)
{
	if (authority[0] == '[') {
		const char *end = strchr(authority, ']');
		return end ? xstrndup(authority + 1, (size_t)(end - authority - 1)) : xstrdup("");
	}
	return xstrndup(authority, strcspn(authority, ":"));
}

bool registry_host_is_loopback(const char *authority)
{
	_cleanup_free_ char *host = authority_host(authority);
	struct in_addr a4;
	struct in6_addr a6;
	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

/* "scheme://authority/..." -> authority; NULL if the URL has userinfo or
 * no authority.  Caller frees. */
static char *url_authority(const char *url)
{
	const char *p = strstr(url, "://");
	if (!p)
		return NULL;
	p += 3;
	size_t len = strcspn(p, "/?#");
	if (len == 0 || memchr(p, '@', len))
		return NULL;
	return xstrndup(p, len);
}

/* ---- endpoints ---- */

static const struct registry_conf *conf_for(const struct config *cfg, const char *host)
{
	for (size_t i = 0; cfg && i < cfg->nregistries; i++)
		if (cfg->registries[i].host && strcasecmp(cfg->registries[i].host, host) == 0)
			return &cfg->registries[i];
	return NULL;
}

/* docker.io is a name; its API lives elsewhere. */
static const char *api_authority(const char *host)
{
	return strcmp(host, REF_DOCKER_HUB) == 0 ? "registry-1.docker.io" : host;
}

/* spec: "host[:port]" or "http[s]://host[:port][/prefix]" (mirrors). */
static int endpoint_init(struct endpoint *ep, const char *spec, const struct config *cfg,
			 const struct registry_cred *creds, size_t ncreds, alps_error **err)
{
	const char *rest = spec;
	if (str_has_prefix(spec, "https://") || str_has_prefix(spec, "http://")) {
		ep->fixed_scheme = xstrndup(spec, strcspn(spec, ":"));
		rest = strstr(spec, "://") + 3;
	}
	size_t alen = strcspn(rest, "/");
	_cleanup_free_ char *host = xstrndup(rest, alen);
	const char *prefix = rest + alen;
	size_t plen = strlen(prefix);
	while (plen > 0 && prefix[plen - 1] == '/')
		plen--;
	ep->prefix = xstrndup(prefix, plen);
	if (!ref_host_valid(host) || strpbrk(ep->prefix, "?#% \"\\")) {
		_cleanup_free_ char *esc = log_escape(spec, 200);
		return alps_fail(err, ALPS_E_INVALID, "registry endpoint \"%s\" is not "
				 "host[:port] or http(s)://host[:port][/path]", esc);
	}
	ep->authority = xstrdup(api_authority(host));
	const struct registry_conf *rc = conf_for(cfg, host);
	ep->ca_file = rc && rc->ca_file && *rc->ca_file ? xstrdup(rc->ca_file) : NULL;
	ep->allow_http = (rc && rc->insecure) || registry_host_is_loopback(host) ||
			 (ep->fixed_scheme && strcmp(ep->fixed_scheme, "http") == 0);
	const struct registry_cred *c = creds ? dockercfg_find(creds, ncreds, host) : NULL;
	if (c)
		dockercfg_cred_copy(&ep->cred, c);
	pthread_mutex_init(&ep->lock, NULL);
	ep->lock_ready = true;
	return 0;
}

static void challenge_clear(struct challenge *c)
{
	free(c->realm);
	free(c->service);
	free(c->scope);
	memset(c, 0, sizeof(*c));
}

static void endpoint_free(struct endpoint *ep)
{
	free(ep->authority);
	free(ep->prefix);
	free(ep->ca_file);
	free(ep->fixed_scheme);
	free(ep->scheme);
	dockercfg_cred_clear(&ep->cred);
	challenge_clear(&ep->auth);
	if (ep->token)
		explicit_bzero(ep->token, strlen(ep->token));
	free(ep->token);
	if (ep->lock_ready)
		pthread_mutex_destroy(&ep->lock);
}

/* ---- session ---- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
	(void)h;
	(void)access;
	struct registry_session *s = arg;
	pthread_mutex_lock(&s->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
	(void)h;
	struct registry_session *s = arg;
	pthread_mutex_unlock(&s->share_locks[data]);
}

static void session_share_init(struct registry_session *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(s->share_locks); i++)
		pthread_mutex_init(&s->share_locks[i], NULL);
	s->share = curl_share_init();
	if (!s->share)
		abort();        /* only fails on allocation */
	curl_share_setopt(s->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(s->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(s->share, CURLSHOPT_USERDATA, s);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
}

static int session_endpoints(struct registry_session *s, const struct config *cfg,
			     const struct registry_cred *creds, size_t ncreds, alps_error **err)
{
	const struct registry_conf *rc = conf_for(cfg, s->ref.registry);
	size_t nmirrors = rc ? rc->mirrors.n : 0;
	s->eps = xcalloc(nmirrors + 1, sizeof(*s->eps));
	for (size_t i = 0; i < nmirrors; i++) {
		if (endpoint_init(&s->eps[s->neps++], rc->mirrors.v[i], cfg, creds, ncreds, err) < 0)
			return alps_error_prefix(err, "mirror of %s", s->ref.registry);
	}
	return endpoint_init(&s->eps[s->neps++], s->ref.registry, cfg, creds, ncreds, err);
}

struct registry_session *registry_session_new(const struct config *cfg,
					      const struct image_ref *ref,
					      const struct registry_cred *creds, size_t ncreds,
					      alps_error **err)
{
	if (registry_global_init(err) < 0)
		return NULL;
	struct registry_session *s = xzalloc(sizeof(*s));
	ref_copy(&s->ref, ref);
	s->platform = xstrdup(cfg && cfg->platform ? cfg->platform : "");
	s->timeout_s = cfg && cfg->http_timeout_s > 0 ? (long)cfg->http_timeout_s : 30;
	s->retries = cfg && cfg->http_retries > 0 ? (unsigned)cfg->http_retries : 0;
	session_share_init(s);
	if (session_endpoints(s, cfg, creds, ncreds, err) < 0) {
		registry_session_free(s);
		return NULL;
	}
	return s;
}

void registry_session_free(struct registry_session *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->neps; i++)
		endpoint_free(&s->eps[i]);
	free(s->eps);
	if (s->share)
		curl_share_cleanup(s->share);
	for (size_t i = 0; i < ARRAY_SIZE(s->share_locks); i++)
		pthread_mutex_destroy(&s->share_locks[i]);
	ref_free(&s->ref);
	free(s->platform);
	free(s);
}

void registry_get_stats(struct registry_session *s, struct registry_stats *out)
{
	out->requests = __atomic_load_n(&s->stats.requests, __ATOMIC_RELAXED);
	out->retries = __atomic_load_n(&s->stats.retries, __ATOMIC_RELAXED);
	out->resumes = __atomic_load_n(&s->stats.resumes, __ATOMIC_RELAXED);
	out->token_fetches = __atomic_load_n(&s->stats.token_fetches, __ATOMIC_RELAXED);
}

/* ---- one HTTP exchange ---- */

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
	uint64_t retry_after_ms;
};

static void xfer_reset_response(struct xfer *x)
{
	x->status = 0;
	free_null(&x->content_type);
	free_null(&x->docker_digest);
	free_null(&x->retry_after);
	free_null(&x->content_range);
	free_null(&x->challenge);
	x->body_started = false;
	x->err_len = 0;
	x->err_body[0] = '\0';
}

static void xfer_clear(struct xfer *x)
{
	xfer_reset_response(x);
	free_null(&x->url);
	if (x->bearer)
		explicit_bzero(x->bearer, strlen(x->bearer));
	free_null(&x->bearer);
	alps_error_free(x->cb_err);
	x->cb_err = NULL;
}

static bool is_bearer(const char *challenge)
{
	return strncasecmp(challenge, "bearer ", 7) == 0;
}

static void header_store(struct xfer *x, const char *name, size_t nlen, const char *val,
			 size_t vlen)
{
	static const struct {
		const char *name;
		size_t off;
	} keep[] = {
		{ "content-type", offsetof(struct xfer, content_type) },
		{ "docker-content-digest", offsetof(struct xfer, docker_digest) },
		{ "retry-after", offsetof(struct xfer, retry_after) },
		{ "content-range", offsetof(struct xfer, content_range) },
	};
	for (size_t i = 0; i < ARRAY_SIZE(keep); i++) {
		if (strlen(keep[i].name) == nlen && strncasecmp(keep[i].name, name, nlen) == 0) {
			char **field = (char **)((char *)x + keep[i].off);
			free(*field);
			*field = xstrndup(val, vlen);
			return;
		}
	}
	/* Several challenges may come; Bearer is the one worth answering. */
	if (nlen == 16 && strncasecmp(name, "www-authenticate", 16) == 0) {
		_cleanup_free_ char *c = xstrndup(val, vlen);
		if (!x->challenge || (!is_bearer(x->challenge) && is_bearer(c))) {
			free(x->challenge);
			x->challenge = steal_pointer(&c);
		}
	}
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n;
	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		xfer_reset_response(x);
		const char *sp = memchr(buf, ' ', len);
		x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		return len;
	}
	const char *colon = memchr(buf, ':', len);
	if (!colon)
		return len;
	size_t nlen = (size_t)(colon - buf);
	const char *v = colon + 1, *end = buf + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	header_store(x, buf, nlen, v, (size_t)(end - v));
	return len;
}

static int stop(struct xfer *x, int code, const char *fmt, ...) ALPS_PRINTF(3, 4);

/* Stop the transfer from a callback with a final (not retried) error. */
static int stop(struct xfer *x, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	alps_fail(&x->cb_err, code, "%s", msg);
	return -1;
}

static int mem_append(struct xfer *x, const char *p, size_t n)
{
	struct membuf *m = x->mem;
	if (m->len + n > m->max)
		return stop(x, ALPS_E_LIMIT, "%s is larger than the limit of %" PRIu64 " bytes",
			    m->what, m->max);
	if (m->len + n + 1 > m->cap) {
		m->cap = (m->len + n + 1) * 2;
		m->data = xrealloc(m->data, m->cap);
	}
	memcpy(m->data + m->len, p, n);
	m->len += n;
	m->data[m->len] = '\0';
	return 0;
}

/* First bytes of a blob response: where does it start?  206 continues at
 * Content-Range's first byte; a 200 restarts at 0 (the server ignored the
 * Range), so the bytes we already delivered are dropped, not repeated. */
static int blob_begin(struct xfer *x)
{
	struct blob_stream *b = x->blob;
	uint64_t start = 0;
	if (x->status == 206) {
		if (!x->content_range ||
		    sscanf(x->content_range, "bytes %" SCNu64 "-", &start) != 1 ||
		    start > b->delivered)
			return stop(x, ALPS_E_UNAVAILABLE, "%s: bad Content-Range \"%s\" for a "
				    "request from byte %" PRIu64, x->what,
				    x->content_range ? x->content_range : "", b->delivered);
		stat_add(&x->s->stats.resumes);
	}
	b->skip = b->delivered - start;
	return 0;
}

static int blob_data(struct xfer *x, const char *p, size_t n)
{
	struct blob_stream *b = x->blob;
	size_t drop = b->skip < n ? (size_t)b->skip : n;
	b->skip -= drop;
	p += drop;
	n -= drop;
	if (n == 0)
		return 0;
	if (n > b->size - b->delivered)
		return stop(x, ALPS_E_INTEGRITY, "blob %s is larger than the %" PRIu64 " bytes "
			    "its descriptor gives", b->digest, b->size);
	digester_update(b->hash, p, n);
	if (b->sink(b->arg, p, n) != 0)
		return stop(x, ALPS_E_CANCELLED, "the download of blob %s was stopped by its "
			    "consumer", b->digest);
	b->delivered += n;
	return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n;
	if (x->status < 200 || x->status > 299) {
		size_t room = ERR_BODY_MAX - x->err_len;
		size_t take = len < room ? len : room;
		memcpy(x->err_body + x->err_len, p, take);
		x->err_len += take;
		x->err_body[x->err_len] = '\0';
		return len;
	}
	if (!x->body_started) {
		x->body_started = true;
		if (x->blob && blob_begin(x) < 0)
			return 0;
	}
	int rc = x->blob ? blob_data(x, p, len) : x->mem ? mem_append(x, p, len) : 0;
	return rc < 0 ? 0 : len;
}

static void set_protocols(CURL *c, bool allow_http)
{
#if LIBCURL_VERSION_NUM >= 0x075500
	const char *p = allow_http ? "http,https" : "https";
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, p);
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, p);
#else
	long p = CURLPROTO_HTTPS | (allow_http ? CURLPROTO_HTTP : 0);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS, p);
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, p);
#endif
}

/* Credentials go through libcurl's own auth options, never a custom
 * "Authorization:" header, so that libcurl drops them when a redirect
 * leaves the host (CURLOPT_UNRESTRICTED_AUTH stays off). */
static void set_auth(CURL *c, const struct xfer *x)
{
	if (x->bearer) {
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, x->bearer);
	} else if (x->basic_user && x->basic_pass) {
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(c, CURLOPT_USERNAME, x->basic_user);
		curl_easy_setopt(c, CURLOPT_PASSWORD, x->basic_pass);
	}
	curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
}

static CURL *xfer_setup(struct xfer *x, struct curl_slist **headers)
{
	CURL *c = curl_easy_init();
	if (!c)
		abort();        /* allocation failure */
	curl_easy_setopt(c, CURLOPT_URL, x->url);
	curl_easy_setopt(c, CURLOPT_SHARE, x->s->share);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
	set_protocols(c, x->allow_http);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, x->s->timeout_s);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, (long)LOW_SPEED_BYTES);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, x->s->timeout_s);
	curl_easy_setopt(c, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->curl_msg);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
	/* The system CAs (libcurl's default CA path) stay trusted; the
	 * registry's own CA is added to them. */
	if (x->ep && x->ep->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, x->ep->ca_file);
	if (x->accept) {
		_cleanup_free_ char *h = xasprintf("Accept: %s", x->accept);
		*headers = curl_slist_append(*headers, h);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, *headers);
	}
	if (x->blob && x->blob->delivered > 0) {
		char range[32];
		snprintf(range, sizeof(range), "%" PRIu64 "-", x->blob->delivered);
		curl_easy_setopt(c, CURLOPT_RANGE, range);
	}
	if (x->post)
		curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, x->post);
	set_auth(c, x);
	return c;
}

/* "CODE: message; CODE: message" from {"errors":[...]}, escaped and cut;
 * NULL if the body is not that.  Caller frees. */
static char *registry_errors(const char *body, size_t len)
{
	json_t *root = json_loadb(body, len, 0, NULL), *e;
	json_t *errs = json_object_get(root, "errors");
	size_t i;
	char out[400] = "";
	size_t used = 0;
	json_array_foreach(errs, i, e) {
		const char *code = json_string_value(json_object_get(e, "code"));
		const char *msg = json_string_value(json_object_get(e, "message"));
		int n = snprintf(out + used, sizeof(out) - used, "%s%s%s%s", used ? "; " : "",
				 code ? code : "", code && msg ? ": " : "", msg ? msg : "");
		if (n < 0 || (size_t)n >= sizeof(out) - used)
			break;
		used += (size_t)n;
	}
	json_decref(root);
	return used ? log_escape(out, 300) : NULL;
}

static uint64_t retry_after_ms(const char *v)
{
	if (!v || !*v)
		return 0;
	if (strspn(v, "0123456789") == strlen(v))
		return strtoull(v, NULL, 10) * 1000;
	time_t when = curl_getdate(v, NULL);
	time_t now = time(NULL);
	return when > now ? (uint64_t)(when - now) * 1000 : 0;
}

static const char *xfer_host(const struct xfer *x)
{
	return x->ep ? x->ep->authority : x->url;
}

static int status_failure(struct xfer *x, alps_error **err)
{
	_cleanup_free_ char *said = registry_errors(x->err_body, x->err_len);
	_cleanup_free_ char *tail = said ? xasprintf(" (registry said: %s)", said) : xstrdup("");
	const char *host = xfer_host(x);
	long st = x->status;
	x->retryable = st == 429 || st == 500 || st == 502 || st == 503 || st == 504;
	x->retry_after_ms = x->retryable ? retry_after_ms(x->retry_after) : 0;
	if (x->retry_after_ms > RETRY_AFTER_MAX_S * 1000) {
		x->retryable = false;
		return alps_fail(err, ALPS_E_UNAVAILABLE, "%s: %s asks to retry after %" PRIu64
				 " s%s", x->what, host, x->retry_after_ms / 1000, tail);
	}
	if (st == 401 || st == 403)
		return alps_fail(err, ALPS_E_PERMISSION, "%s: %s denied access (HTTP %ld)%s",
				 x->what, host, st, tail);
	if (st == 404)
		return alps_fail(err, ALPS_E_NOT_FOUND, "%s: not found on %s%s", x->what, host, tail);
	if (st == 429)
		return alps_fail(err, ALPS_E_UNAVAILABLE, "%s: %s is rate limiting (HTTP 429)%s",
				 x->what, host, tail);
	return alps_fail(err, ALPS_E_UNAVAILABLE, "%s: %s answered HTTP %ld%s", x->what, host,
			 st, tail);
}

static int curl_failure(struct xfer *x, CURLcode rc, alps_error **err)
{
	const char *detail = x->curl_msg[0] ? x->curl_msg : curl_easy_strerror(rc);
	_cleanup_free_ char *esc = log_escape(detail, 300);
	const char *host = xfer_host(x);
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
		x->retryable = true;
		return alps_fail(err, ALPS_E_UNAVAILABLE, "%s: cannot connect to %s: %s",
				 x->what, host, esc);
	case CURLE_OPERATION_TIMEDOUT:
		x->retryable = true;
		return alps_fail(err, ALPS_E_TIMEOUT, "%s: %s timed out: %s", x->what, host, esc);
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		x->retryable = true;
		return alps_fail(err, ALPS_E_UNAVAILABLE, "%s: transfer from %s interrupted: %s",
				 x->what, host, esc);
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
		return alps_fail(err, ALPS_E_UNAVAILABLE, "%s: TLS with %s failed: %s", x->what,
				 host, esc);
	default:
		return alps_fail(err, ALPS_E_UNAVAILABLE, "%s: request to %s failed: %s", x->what,
				 host, esc);
	}
}

/* One request.  0 on a 2xx (or the ping's 401); else -1 with *err and
 * x->retryable / x->retry_after_ms set. */
static int xfer_once(struct xfer *x, alps_error **err)
{
	struct curl_slist *headers = NULL;
	xfer_reset_response(x);
	x->retryable = false;
	x->retry_after_ms = 0;
	x->curl_msg[0] = '\0';
	if (x->mem)
		x->mem->len = 0;        /* memory bodies restart from scratch */
	CURL *c = xfer_setup(x, &headers);
	CURLcode rc = curl_easy_perform(c);
	x->curl_rc = rc;
	curl_easy_cleanup(c);
	curl_slist_free_all(headers);
	stat_add(&x->s->stats.requests);
	if (x->cb_err)
		return hand_over(err, steal_pointer(&x->cb_err));
	if (rc != CURLE_OK)
		return curl_failure(x, rc, err);
	if ((x->status >= 200 && x->status <= 299) || (x->ok_401 && x->status == 401))
		return 0;
	return status_failure(x, err);
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t backoff_ms(unsigned attempt)
{
	uint64_t ms = RETRY_BASE_MS;
	for (unsigned i = 0; i < attempt && ms < RETRY_MAX_MS; i++)
		ms *= 2;
	return ms < RETRY_MAX_MS ? ms : RETRY_MAX_MS;
}

/* ---- authentication ---- */

/* One auth-param value: a token or a quoted string with \-escapes. */
static const char *param_value(const char *p, char **out)
{
	char buf[2048];
	size_t n = 0;
	if (*p == '"') {
		for (p++; *p && *p != '"'; p++) {
			if (*p == '\\' && p[1])
				p++;
			if (n < sizeof(buf) - 1)
				buf[n++] = *p;
		}
		if (*p == '"')
			p++;
	} else {
		for (; *p && *p != ',' && *p != ' '; p++)
			if (n < sizeof(buf) - 1)
				buf[n++] = *p;
	}
	buf[n] = '\0';
	*out = xstrdup(buf);
	return p;
}

/* 'Bearer realm="https://auth/token",service="reg",scope="repository:x:pull"' */
static void challenge_parse(const char *h, struct challenge *c)
{
	memset(c, 0, sizeof(*c));
	if (!h)
		return;
	if (strncasecmp(h, "basic", 5) == 0 && (h[5] == ' ' || h[5] == '\0'))
		c->scheme = AUTH_BASIC;
	else if (is_bearer(h))
		c->scheme = AUTH_BEARER;
	else
		return;
	const char *p = h + strcspn(h, " ");
	while (*p) {
		p += strspn(p, " ,\t");
		size_t klen = strcspn(p, "= ,");
		if (klen == 0 || p[klen] != '=')
			break;
		const char *key = p;
		char *val = NULL;
		p = param_value(p + klen + 1, &val);
		char **slot = klen == 5 && strncasecmp(key, "realm", 5) == 0 ? &c->realm
			    : klen == 7 && strncasecmp(key, "service", 7) == 0 ? &c->service
			    : klen == 5 && strncasecmp(key, "scope", 5) == 0 ? &c->scope : NULL;
		if (slot && !*slot)
			*slot = steal_pointer(&val);
		free(val);
	}
}

static bool token_chars_valid(const char *t)
{
	for (; *t; t++)
		if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f)
			return false;
	return true;
}

static int token_parse(struct endpoint *ep, const struct membuf *m, const char *realm,
		       alps_error **err)
{
	json_t *root = json_loadb(m->data ? m->data : "", m->len, 0, NULL);
	json_t *tok = json_object_get(root, "token");
	if (!json_is_string(tok) || !json_string_length(tok))
		tok = json_object_get(root, "access_token");
	json_t *exp = json_object_get(root, "expires_in");
	int rc = 0;
	_cleanup_free_ char *esc = log_escape(realm, 200);
	if (!json_is_string(tok) || !json_string_length(tok))
		rc = alps_fail(err, ALPS_E_INVALID, "token service %s: field \"token\" is missing", esc);
	else if (!token_chars_valid(json_string_value(tok)))
		rc = alps_fail(err, ALPS_E_INVALID, "token service %s: field \"token\" has "
			       "characters a token cannot have", esc);
	if (rc == 0) {
		json_int_t life = json_is_integer(exp) ? json_integer_value(exp) : 0;
		if (life < TOKEN_MIN_LIFETIME_S)
			life = TOKEN_MIN_LIFETIME_S;
		free(ep->token);
		ep->token = xstrdup(json_string_value(tok));
		ep->token_expiry_ms = now_monotonic_ms() + (uint64_t)(life - TOKEN_EARLY_S) * 1000;
		ep->token_gen++;
	}
	json_decref(root);
	return rc;
}

/* A realm the server names is untrusted: credentials go to it only over
 * HTTPS, or to loopback, or when the registry itself is plain HTTP. */
static int realm_check(const struct endpoint *ep, const char *realm, bool with_creds,
		       alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(realm, 200);
	_cleanup_free_ char *auth = url_authority(realm);
	bool https = str_has_prefix(realm, "https://");
	if ((!https && !str_has_prefix(realm, "http://")) || !auth || !ref_host_valid(auth))
		return alps_fail(err, ALPS_E_PERMISSION, "%s asks for a token from \"%s\", "
				 "which is not an http(s) URL", ep->authority, esc);
	if (with_creds && !https && !ep->allow_http && !registry_host_is_loopback(auth))
		return alps_fail(err, ALPS_E_PERMISSION, "%s asks for a token over plain HTTP "
				 "from %s: refusing to send credentials", ep->authority, esc);
	return 0;
}

static char *token_query(CURL *c, const struct challenge *ch, const char *scope)
{
	char *svc = curl_easy_escape(c, ch->service ? ch->service : "", 0);
	char *scp = curl_easy_escape(c, scope, 0);
	char *q = xasprintf("service=%s&scope=%s", svc, scp);
	curl_free(svc);
	curl_free(scp);
	return q;
}

/* The OAuth2 refresh-token grant docker uses with an identity token. */
static char *token_post_body(CURL *c, const struct endpoint *ep, const char *query)
{
	char *rt = curl_easy_escape(c, ep->cred.identity_token, 0);
	char *body = xasprintf("grant_type=refresh_token&client_id=alps&%s&refresh_token=%s",
			       query, rt);
	explicit_bzero(rt, strlen(rt));
	curl_free(rt);
	return body;
}

static int xfer_run(struct xfer *x, alps_error **err);

/* Get a token for scope into ep; ep->lock held. */
static int token_fetch(struct registry_session *s, struct endpoint *ep, const char *scope,
		       alps_error **err)
{
	const struct challenge *ch = &ep->auth;
	bool creds = ep->cred.identity_token || (ep->cred.username && ep->cred.password);
	if (!ch->realm)
		return alps_fail(err, ALPS_E_PERMISSION, "%s asks for a bearer token but names "
				 "no realm", ep->authority);
	if (realm_check(ep, ch->realm, creds, err) < 0)
		return -1;
	CURL *c = curl_easy_init();
	_cleanup_free_ char *query = token_query(c, ch, scope);
	_cleanup_free_ char *post = ep->cred.identity_token ? token_post_body(c, ep, query) : NULL;
	curl_easy_cleanup(c);
	struct membuf m = { .max = TOKEN_BODY_MAX, .what = "token response" };
	_cleanup_free_ char *what = xasprintf("token for %s", ep->authority);
	struct xfer x = {
		.s = s, .ep = ep, .what = what, .mem = &m, .post = post,
		.allow_http = !str_has_prefix(ch->realm, "https://"),
		.url = post ? xstrdup(ch->realm)
			    : xasprintf("%s%c%s", ch->realm, strchr(ch->realm, '?') ? '&' : '?', query),
	};
	if (!post && creds) {
		x.basic_user = ep->cred.username;
		x.basic_pass = ep->cred.password;
	}
	stat_add(&s->stats.token_fetches);
	int rc = xfer_run(&x, err);
	if (rc == 0)
		rc = token_parse(ep, &m, ch->realm, err);
	if (post)
		explicit_bzero(post, strlen(post));
	xfer_clear(&x);
	free(m.data);
	return rc;
}

static char *default_scope(const struct registry_session *s)
{
	return xasprintf("repository:%s:pull", s->ref.repository);
}

/* GET /v2/ over HTTPS, or HTTP where allowed when HTTPS cannot talk to the
 * host at all.  Learns the scheme and the auth challenge.  ep->lock held. */
static int endpoint_ping(struct registry_session *s, struct endpoint *ep, alps_error **err)
{
	const char *schemes[2] = { ep->fixed_scheme ? ep->fixed_scheme : "https", "http" };
	size_t nschemes = !ep->fixed_scheme && ep->allow_http ? 2 : 1;
	_cleanup_free_ char *what = xasprintf("registry %s", ep->authority);
	for (size_t i = 0; i < nschemes; i++) {
		alps_error *e = NULL;
		struct xfer x = { .s = s, .ep = ep, .what = what, .ok_401 = true,
				  .allow_http = strcmp(schemes[i], "http") == 0 };
		x.url = xasprintf("%s://%s%s/v2/", schemes[i], ep->authority, ep->prefix);
		int rc = xfer_run(&x, &e);
		if (rc == 0) {
			ep->scheme = xstrdup(schemes[i]);
			challenge_parse(x.status == 401 ? x.challenge : NULL, &ep->auth);
			ep->pinged = true;
		}
		/* Plain HTTP only when the host does not talk TLS at all: one that
		 * does but fails verification must not be downgraded. */
		bool no_fallback = x.status != 0 || x.curl_rc == CURLE_PEER_FAILED_VERIFICATION;
		xfer_clear(&x);
		if (rc == 0)
			return 0;
		if (i + 1 == nschemes || no_fallback)
			return hand_over(err, e);
		log_info("%s: HTTPS failed (%s), trying plain HTTP", ep->authority, e->msg);
		alps_error_free(e);
	}
	return -1;
}

static bool has_basic_creds(const struct endpoint *ep)
{
	return ep->cred.username && ep->cred.password;
}

/* Before a request: ping once, get a token if the registry wants one, and
 * put the credentials into x. */
static int endpoint_auth_ready(struct xfer *x, alps_error **err)
{
	struct endpoint *ep = x->ep;
	int rc = 0;
	pthread_mutex_lock(&ep->lock);
	if (!ep->pinged)
		rc = endpoint_ping(x->s, ep, err);
	if (rc == 0 && ep->auth.scheme == AUTH_BEARER &&
	    (!ep->token || now_monotonic_ms() >= ep->token_expiry_ms)) {
		_cleanup_free_ char *scope = default_scope(x->s);
		rc = token_fetch(x->s, ep, scope, err);
	}
	if (rc == 0 && ep->auth.scheme == AUTH_BEARER) {
		free(x->bearer);
		x->bearer = xstrdup(ep->token);
		x->token_gen = ep->token_gen;
	} else if (rc == 0 && ep->auth.scheme == AUTH_BASIC && has_basic_creds(ep)) {
		x->basic_user = ep->cred.username;
		x->basic_pass = ep->cred.password;
	}
	pthread_mutex_unlock(&ep->lock);
	return rc;
}

static int fail_no_creds(struct xfer *x, alps_error **err)
{
	return alps_fail(err, ALPS_E_PERMISSION, "%s: %s requires authentication and there "
			 "are no credentials for it", x->what, x->ep->authority);
}

/* After a 401: answer the challenge once.  Another thread may have renewed
 * the token meanwhile (token_gen moved): then just use the new one. */
static int endpoint_reauth(struct xfer *x, alps_error **err)
{
	struct endpoint *ep = x->ep;
	struct challenge ch;
	int rc = 0;
	challenge_parse(x->challenge, &ch);
	pthread_mutex_lock(&ep->lock);
	if (ch.scheme == AUTH_BEARER && x->bearer && ep->token_gen != x->token_gen) {
		rc = 0;
	} else if (ch.scheme == AUTH_BEARER) {
		challenge_clear(&ep->auth);
		ep->auth = ch;
		memset(&ch, 0, sizeof(ch));
		_cleanup_free_ char *scope = ep->auth.scope ? xstrdup(ep->auth.scope)
							    : default_scope(x->s);
		rc = token_fetch(x->s, ep, scope, err);
	} else if (ch.scheme == AUTH_BASIC && has_basic_creds(ep) && !x->basic_user) {
		ep->auth.scheme = AUTH_BASIC;
	} else {
		rc = has_basic_creds(ep) || ch.scheme == AUTH_NONE ? -1 : fail_no_creds(x, err);
	}
	pthread_mutex_unlock(&ep->lock);
	challenge_clear(&ch);
	return rc;
}

/* Progress of a blob, to tell a retry that moved forward from one that
 * did not. */
static uint64_t xfer_progress(const struct xfer *x)
{
	return x->blob ? x->blob->delivered : 0;
}

/* The request with authentication, retries with backoff (Retry-After
 * honoured) and, for blobs, resumption.  The attempt counter restarts
 * when a blob transfer made progress: a long download over a flaky link
 * should finish, a dead server should not be hammered. */
static int xfer_run(struct xfer *x, alps_error **err)
{
	unsigned attempt = 0;
	bool reauthed = false;
	uint64_t mark = xfer_progress(x);
	for (;;) {
		alps_error *e = NULL;
		if (x->use_auth && endpoint_auth_ready(x, err) < 0)
			return -1;
		if (xfer_once(x, &e) == 0)
			return 0;
		if (x->status == 401 && x->use_auth && !reauthed) {
			reauthed = true;
			if (endpoint_reauth(x, err) == 0) {
				alps_error_free(e);
				continue;
			}
			return hand_over(err, e);
		}
		if (xfer_progress(x) > mark) {
			mark = xfer_progress(x);
			attempt = 0;
			reauthed = false;
		}
		if (!x->retryable || attempt >= x->s->retries)
			return hand_over(err, e);
		uint64_t delay = x->retry_after_ms ? x->retry_after_ms : backoff_ms(attempt);
		log_info("%s (retrying in %" PRIu64 " ms, %u of %u)", e->msg, delay, attempt + 1,
			 x->s->retries);
		alps_error_free(e);
		stat_add(&x->s->stats.retries);
		sleep_ms(delay);
		attempt++;
	}
}

/* ---- manifests and blobs at one endpoint ---- */

static char *endpoint_url(struct registry_session *s, struct endpoint *ep, const char *kind,
			  const char *reference)
{
	/* The scheme is known only once the endpoint was pinged: ep_request()
	 * pings first, then builds the URL. */
	pthread_mutex_lock(&ep->lock);
	char *url = xasprintf("%s://%s%s/v2/%s/%s/%s", ep->scheme ? ep->scheme : "https",
			      ep->authority, ep->prefix, s->ref.repository, kind, reference);
	pthread_mutex_unlock(&ep->lock);
	return url;
}

static int endpoint_ensure_pinged(struct registry_session *s, struct endpoint *ep,
				  alps_error **err)
{
	int rc = 0;
	pthread_mutex_lock(&ep->lock);
	if (!ep->pinged)
		rc = endpoint_ping(s, ep, err);
	pthread_mutex_unlock(&ep->lock);
	return rc;
}

/* A request to the registry API of ep: kind "manifests" or "blobs". */
static int ep_request(struct xfer *x, struct endpoint *ep, const char *kind,
		      const char *reference, alps_error **err)
{
	if (endpoint_ensure_pinged(x->s, ep, err) < 0)
		return -1;
	x->ep = ep;
	x->use_auth = true;
	x->url = endpoint_url(x->s, ep, kind, reference);
	x->allow_http = str_has_prefix(x->url, "http://");
	return xfer_run(x, err);
}

struct fetched {
	struct membuf body;
	char *content_type;
	char *digest;           /* verified digest of body */
};

static void fetched_clear(struct fetched *f)
{
	free(f->body.data);
	free(f->content_type);
	free(f->digest);
	memset(f, 0, sizeof(*f));
}

/* A manifest fetched by tag is checked against Docker-Content-Digest when
 * the registry sends one; by digest, against that digest. */
static int manifest_verify(const char *what, const char *reference, const char *header,
			   struct fetched *f, alps_error **err)
{
	char got[DIGEST_STRLEN_MAX];
	const char *expect = digest_valid(reference) ? reference
			   : header && digest_valid(header) ? header : NULL;
	if (expect && digest_verify(what, expect, f->body.data, f->body.len, got, err) < 0)
		return -1;
	if (!expect)
		digest_sha256(f->body.data, f->body.len, got);
	f->digest = xstrdup(got);
	return 0;
}

static int fetch_manifest(struct registry_session *s, struct endpoint *ep,
			  const char *reference, struct fetched *out, alps_error **err)
{
	_cleanup_free_ char *what = xasprintf("manifest %s/%s%s%s", s->ref.registry,
					      s->ref.repository, digest_valid(reference) ? "@" : ":",
					      reference);
	memset(out, 0, sizeof(*out));
	out->body = (struct membuf){ .max = MANIFEST_MAX_SIZE, .what = what };
	struct xfer x = { .s = s, .what = what, .accept = manifest_accept(), .mem = &out->body };
	int rc = ep_request(&x, ep, "manifests", reference, err);
	if (rc == 0) {
		out->content_type = x.content_type ? xstrdup(x.content_type) : NULL;
		rc = manifest_verify(what, reference, x.docker_digest, out, err);
	}
	xfer_clear(&x);
	if (rc < 0)
		fetched_clear(out);
	return rc;
}

static int blob_finish(struct blob_stream *b, alps_error **err)
{
	char got[DIGEST_STRLEN_MAX];
	if (b->delivered != b->size)
		return alps_fail(err, ALPS_E_INTEGRITY, "blob %s: got %" PRIu64 " bytes, its "
				 "descriptor gives %" PRIu64, b->digest, b->delivered, b->size);
	digester_final(b->hash, got);
	if (strcmp(got, b->digest) != 0)
		return alps_fail(err, ALPS_E_INTEGRITY, "blob %s does not match its digest: got %s",
				 b->digest, got);
	return 0;
}

static int blob_at_endpoint(struct registry_session *s, struct endpoint *ep,
			    struct blob_stream *b, alps_error **err)
{
	_cleanup_free_ char *what = xasprintf("blob %s of %s/%s", b->digest, s->ref.registry,
					      s->ref.repository);
	struct xfer x = { .s = s, .what = what, .blob = b };
	int rc = ep_request(&x, ep, "blobs", b->digest, err);
	xfer_clear(&x);
	return rc;
}

/* Foreign layers: the descriptor's URLs, never with credentials. */
static int blob_at_url(struct registry_session *s, const char *url, struct blob_stream *b,
		       alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(url, 200);
	_cleanup_free_ char *what = xasprintf("blob %s from %s", b->digest, esc);
	struct xfer x = { .s = s, .what = what, .blob = b, .url = xstrdup(url),
			  .allow_http = true };
	int rc = xfer_run(&x, err);
	xfer_clear(&x);
	return rc;
}

static size_t preferred_endpoint(struct registry_session *s)
{
	return __atomic_load_n(&s->preferred, __ATOMIC_RELAXED);
}

/* Errors that another endpoint cannot cure. */
static bool error_is_final(const alps_error *e)
{
	return e->code == ALPS_E_INTEGRITY || e->code == ALPS_E_CANCELLED ||
	       e->code == ALPS_E_LIMIT;
}

static int blob_stream_run(struct registry_session *s, const struct descriptor *d,
			   struct blob_stream *b, alps_error **err)
{
	alps_error *last = NULL;
	for (size_t i = preferred_endpoint(s); i < s->neps; i++) {
		alps_error_free(last);
		last = NULL;
		if (blob_at_endpoint(s, &s->eps[i], b, &last) == 0)
			return blob_finish(b, err);
		if (error_is_final(last))
			break;
		if (i + 1 < s->neps)
			log_warn("%s; trying %s", last->msg, s->eps[i + 1].authority);
	}
	for (size_t i = 0; d && i < d->nurls && !error_is_final(last); i++) {
		log_info("%s; trying the layer's URL", last->msg);
		alps_error_free(last);
		last = NULL;
		if (blob_at_url(s, d->urls[i], b, &last) == 0)
			return blob_finish(b, err);
	}
	return hand_over(err, last);
}

int registry_fetch_layer(struct registry_session *s, const struct descriptor *d,
			 registry_sink_fn sink, void *arg, alps_error **err)
{
	enum digest_algo algo;
	if (digest_parse(d->digest, "blob digest", &algo, err) < 0)
		return -1;
	struct blob_stream b = { .digest = d->digest, .size = d->size, .sink = sink, .arg = arg,
				 .hash = digester_new(algo) };
	int rc = blob_stream_run(s, d, &b, err);
	digester_free(b.hash);
	return rc;
}

int registry_fetch_blob(struct registry_session *s, const char *digest, uint64_t size,
			registry_sink_fn sink, void *arg, alps_error **err)
{
	struct descriptor d = { .digest = (char *)digest, .size = size };
	return registry_fetch_layer(s, &d, sink, arg, err);
}

static int mem_sink(void *arg, const void *data, size_t len)
{
	struct membuf *m = arg;
	if (m->len + len > m->cap) {
		m->cap = m->len + len;
		m->data = xrealloc(m->data, m->cap + 1);
	}
	memcpy(m->data + m->len, data, len);
	m->len += len;
	return 0;
}

int registry_fetch_blob_mem(struct registry_session *s, const char *digest, uint64_t size,
			    uint64_t max, void **buf, size_t *len, alps_error **err)
{
	*buf = NULL;
	*len = 0;
	if (size > max)
		return alps_fail(err, ALPS_E_LIMIT, "blob %s is %" PRIu64 " bytes, more than the "
				 "limit of %" PRIu64, digest, size, max);
	struct membuf m = { .cap = (size_t)size, .data = xmalloc((size_t)size + 1) };
	if (registry_fetch_blob(s, digest, size, mem_sink, &m, err) < 0) {
		free(m.data);
		return -1;
	}
	m.data[m.len] = '\0';
	*buf = m.data;
	*len = m.len;
	return 0;
}

/* ---- resolution ---- */

static void take_fetched(struct fetched *f, void **bytes, size_t *len, char **digest)
{
	*bytes = steal_pointer(&f->body.data);
	*len = f->body.len;
	*digest = steal_pointer(&f->digest);
}

/* The image manifest an index entry names, checked against the entry. */
static int fetch_platform_manifest(struct registry_session *s, struct endpoint *ep,
				   const struct index_entry *e, struct fetched *out,
				   alps_error **err)
{
	enum manifest_kind kind;
	if (e->desc.size > MANIFEST_MAX_SIZE)
		return alps_fail(err, ALPS_E_LIMIT, "image index: manifest %s is %" PRIu64
				 " bytes, more than the limit of %u", e->desc.digest, e->desc.size,
				 MANIFEST_MAX_SIZE);
	if (fetch_manifest(s, ep, e->desc.digest, out, err) < 0)
		return -1;
	if (out->body.len != e->desc.size)
		return alps_fail(err, ALPS_E_INTEGRITY, "manifest %s is %zu bytes, the index "
				 "gives %" PRIu64, e->desc.digest, out->body.len, e->desc.size);
	if (manifest_detect(out->body.data, out->body.len, e->desc.media_type, &kind, err) < 0)
		return -1;
	if (manifest_kind_is_index(kind))
		return alps_fail(err, ALPS_E_UNSUPPORTED, "image index entry %s is itself an "
				 "index; nested indexes are not supported", e->desc.digest);
	return 0;
}

static int want_platform(struct registry_session *s, const struct platform *given,
			 struct platform *out, alps_error **err)
{
	if (given) {
		manifest_platform_copy(out, given);
		return 0;
	}
	if (*s->platform)
		return manifest_platform_parse(s->platform, out, err);
	return manifest_platform_host(out, err);
}

/* The tag named an index: keep it, choose the platform's manifest. */
static int resolve_index(struct registry_session *s, struct endpoint *ep, struct fetched *top,
			 struct resolved_image *out, struct fetched *m, alps_error **err)
{
	struct manifest_index idx;
	if (manifest_index_parse(top->body.data, top->body.len, &idx, err) < 0)
		return -1;
	const struct index_entry *e = manifest_index_select(&idx, &out->platform, err);
	int rc = e ? fetch_platform_manifest(s, ep, e, m, err) : -1;
	manifest_index_free(&idx);
	if (rc == 0)
		take_fetched(top, &out->index_bytes, &out->index_len, &out->index_digest);
	return rc;
}

/* A single manifest must be for this platform: the node could not run it. */
static int platform_check(const struct resolved_image *r, alps_error **err)
{
	struct platform p;
	_cleanup_free_ char *s = r->config.variant
		? xasprintf("%s/%s/%s", r->config.os, r->config.architecture, r->config.variant)
		: xasprintf("%s/%s", r->config.os, r->config.architecture);
	if (manifest_platform_parse(s, &p, NULL) < 0)
		return 0;       /* odd spellings: let the runtime decide */
	bool ok = strcmp(p.os, r->platform.os) == 0 &&
		  strcmp(p.architecture, r->platform.architecture) == 0;
	_cleanup_free_ char *have = manifest_platform_format(&p);
	_cleanup_free_ char *want = manifest_platform_format(&r->platform);
	manifest_platform_free(&p);
	if (ok)
		return 0;
	return alps_fail(err, ALPS_E_UNSUPPORTED, "the image is for %s, not %s", have, want);
}

/* The config of an image the caller already has, checked like a download. */
static bool config_from_source(struct registry_session *s, struct resolved_image *out)
{
	const struct descriptor *c = &out->manifest.config;
	void *buf = NULL;
	size_t len = 0;
	if (!s->config_source ||
	    s->config_source(s->config_source_arg, out->manifest_digest, c->digest, &buf, &len) != 0)
		return false;
	alps_error *err = NULL;
	if (len != c->size || digest_verify("image config", c->digest, buf, len, NULL, &err) < 0) {
		alps_error_free(err);
		free(buf);
		return false;
	}
	out->config_bytes = buf;
	out->config_len = len;
	return true;
}

static int resolve_config(struct registry_session *s, struct resolved_image *out,
			  alps_error **err)
{
	const struct descriptor *c = &out->manifest.config;
	if ((!config_from_source(s, out) &&
	     registry_fetch_blob_mem(s, c->digest, c->size, MANIFEST_CONFIG_MAX_SIZE,
				     &out->config_bytes, &out->config_len, err) < 0) ||
	    manifest_config_parse(out->config_bytes, out->config_len, &out->config, err) < 0 ||
	    manifest_check_config(&out->manifest, &out->config, err) < 0)
		return alps_error_prefix(err, "image config %s", c->digest);
	return out->index_digest ? 0 : platform_check(out, err);
}

static int resolve_at(struct registry_session *s, size_t i, struct resolved_image *out,
		      alps_error **err)
{
	struct endpoint *ep = &s->eps[i];
	struct fetched top, m = { 0 };
	enum manifest_kind kind;
	if (fetch_manifest(s, ep, ref_reference(&s->ref), &top, err) < 0)
		return -1;
	int rc = manifest_detect(top.body.data, top.body.len, top.content_type, &kind, err);
	if (rc == 0 && manifest_kind_is_index(kind))
		rc = resolve_index(s, ep, &top, out, &m, err);
	struct fetched *man = out->index_digest ? &m : &top;
	if (rc == 0)
		rc = manifest_parse(man->body.data, man->body.len, &out->manifest, err);
	if (rc == 0) {
		take_fetched(man, &out->manifest_bytes, &out->manifest_len, &out->manifest_digest);
		__atomic_store_n(&s->preferred, i, __ATOMIC_RELAXED);
		rc = resolve_config(s, out, err);
	}
	fetched_clear(&top);
	fetched_clear(&m);
	if (rc == 0)
		out->endpoint = xasprintf("%s://%s%s", ep->scheme, ep->authority, ep->prefix);
	return rc;
}

static const char *kind_media_type(enum manifest_kind kind)
{
	switch (kind) {
	case MANIFEST_OCI:
		return MT_OCI_MANIFEST;
	case MANIFEST_DOCKER_V2:
		return MT_DOCKER_MANIFEST;
	default:
		return "";
	}
}

int registry_resolve(struct registry_session *s, const struct platform *platform,
		     struct resolved_image *out, alps_error **err)
{
	memset(out, 0, sizeof(*out));
	if (want_platform(s, platform, &out->platform, err) < 0)
		return -1;
	alps_error *last = NULL;
	for (size_t i = 0; i < s->neps; i++) {
		alps_error_free(last);
		last = NULL;
		struct platform keep = out->platform;
		memset(&out->platform, 0, sizeof(out->platform));
		registry_resolved_free(out);
		out->platform = keep;
		if (resolve_at(s, i, out, &last) == 0) {
			out->manifest_media_type = xstrdup(kind_media_type(out->manifest.kind));
			return 0;
		}
		if (error_is_final(last) || i + 1 == s->neps)
			break;
		log_warn("%s; trying %s", last->msg, s->eps[i + 1].authority);
	}
	registry_resolved_free(out);
	return hand_over(err, last);
}

void registry_set_config_source(struct registry_session *s, registry_config_source_fn fn,
				void *arg)
{
	s->config_source = fn;
	s->config_source_arg = arg;
}

void registry_resolved_free(struct resolved_image *r)
{
	if (!r)
		return;
	free(r->index_digest);
	free(r->index_bytes);
	free(r->manifest_digest);
	free(r->manifest_media_type);
	free(r->manifest_bytes);
	manifest_free(&r->manifest);
	manifest_platform_free(&r->platform);
	free(r->config_bytes);
	manifest_config_free(&r->config);
	free(r->endpoint);
	memset(r, 0, sizeof(*r));
}
