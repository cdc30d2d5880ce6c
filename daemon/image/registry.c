/* registry.c: see registry.h.
 *
 * Layers of the client, bottom up: endpoints (where to send requests and
 * how; here), one HTTP exchange on a curl easy handle (struct xfer,
 * registry_http.c), the retry and re-authentication loop around it and the
 * token flow (registry_auth.c), then manifests, blobs and resolution (here). */
#include <config.h>

#include "daemon/image/registry_int.h"

void reg_stat_add(uint64_t *counter)
{
	__atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

void reg_free_null(char **p)
{
	free(*p);
	*p = NULL;
}

/* Give e to the caller (who may not want it) and return -1. */
int reg_hand_over(alps_error **err, alps_error *e)
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
char *url_authority(const char *url)
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

void challenge_clear(struct challenge *c)
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
	s->connect_timeout_cfg = cfg && cfg->connect_timeout_s > 0 ? (long)cfg->connect_timeout_s : 10;
	registry_set_timeout(s, s->timeout_s);
	s->connect_retries = cfg && cfg->connect_retries > 0 ? (unsigned)cfg->connect_retries : 0;
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

void registry_set_notice(struct registry_session *s, registry_notice_fn fn, void *arg)
{
	s->notice = fn;
	s->notice_arg = arg;
}

void registry_set_timeout(struct registry_session *s, long timeout_s)
{
	if (timeout_s <= 0)
		return;
	s->timeout_s = timeout_s;
	s->connect_timeout_s = s->connect_timeout_cfg < timeout_s ? s->connect_timeout_cfg
								   : timeout_s;
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
	return reg_hand_over(err, last);
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
	return reg_hand_over(err, last);
}

/* ---- where a tag points now ---- */

static bool media_type_is_index(const char *ct)
{
	return ct && (str_has_prefix(ct, MT_OCI_INDEX) || str_has_prefix(ct, MT_DOCKER_LIST));
}

/* HEAD of the session's manifest: its digest and media type, when the
 * registry says them (either may be NULL). */
static int head_manifest(struct registry_session *s, struct endpoint *ep, char **digest,
			 char **ctype, alps_error **err)
{
	const char *reference = ref_reference(&s->ref);
	_cleanup_free_ char *what = xasprintf("manifest %s/%s%s%s", s->ref.registry,
					      s->ref.repository, digest_valid(reference) ? "@" : ":",
					      reference);
	struct xfer x = { .s = s, .what = what, .accept = manifest_accept(), .head = true };
	int rc = ep_request(&x, ep, "manifests", reference, err);
	if (rc == 0) {
		*digest = x.docker_digest && digest_valid(x.docker_digest) ? xstrdup(x.docker_digest)
									  : NULL;
		*ctype = x.content_type ? xstrdup(x.content_type) : NULL;
	}
	xfer_clear(&x);
	return rc;
}

/* The manifest itself: an index gives the platform's entry. */
static int current_by_get(struct registry_session *s, struct endpoint *ep,
			  const struct platform *want, char **out, alps_error **err)
{
	struct fetched top;
	enum manifest_kind kind;
	struct manifest_index idx;
	if (fetch_manifest(s, ep, ref_reference(&s->ref), &top, err) < 0)
		return -1;
	int rc = manifest_detect(top.body.data, top.body.len, top.content_type, &kind, err);
	if (rc == 0 && !manifest_kind_is_index(kind)) {
		*out = steal_pointer(&top.digest);
	} else if (rc == 0 && (rc = manifest_index_parse(top.body.data, top.body.len, &idx, err)) == 0) {
		const struct index_entry *e = manifest_index_select(&idx, want, err);
		if (e)
			*out = xstrdup(e->desc.digest);
		else
			rc = -1;
		manifest_index_free(&idx);
	}
	fetched_clear(&top);
	return rc;
}

static int current_at(struct registry_session *s, size_t i, const struct platform *want,
		      const char *known, char **out, alps_error **err)
{
	struct endpoint *ep = &s->eps[i];
	_cleanup_free_ char *d = NULL, *ct = NULL;
	if (head_manifest(s, ep, &d, &ct, err) < 0)
		return -1;
	if (d && ((known && strcmp(d, known) == 0) || (ct && !media_type_is_index(ct)))) {
		*out = steal_pointer(&d);
		return 0;
	}
	return current_by_get(s, ep, want, out, err);
}

int registry_current_digest(struct registry_session *s, const struct platform *platform,
			    const char *known, char **digest, alps_error **err)
{
	struct platform want;
	*digest = NULL;
	if (want_platform(s, platform, &want, err) < 0)
		return -1;
	alps_error *last = NULL;
	int rc = -1;
	for (size_t i = 0; i < s->neps && rc < 0; i++) {
		alps_error_free(last);
		last = NULL;
		rc = current_at(s, i, &want, known, digest, &last);
		if (rc < 0 && (error_is_final(last) || i + 1 == s->neps))
			break;
		if (rc < 0)
			log_warn("%s; trying %s", last->msg, s->eps[i + 1].authority);
	}
	manifest_platform_free(&want);
	if (rc == 0) {
		alps_error_free(last);
		return 0;
	}
	return reg_hand_over(err, last);
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
