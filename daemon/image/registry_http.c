/* registry_http.c: one HTTP exchange on a curl easy handle (struct
 * xfer): its options, its header and body callbacks, and what its failure means. */
#include <config.h>

#include "daemon/image/registry_int.h"

static void xfer_reset_response(struct xfer *x)
{
	x->status = 0;
	reg_free_null(&x->content_type);
	reg_free_null(&x->docker_digest);
	reg_free_null(&x->retry_after);
	reg_free_null(&x->content_range);
	reg_free_null(&x->challenge);
	x->body_started = false;
	x->err_len = 0;
	x->err_body[0] = '\0';
}

void xfer_clear(struct xfer *x)
{
	xfer_reset_response(x);
	reg_free_null(&x->url);
	if (x->bearer)
		explicit_bzero(x->bearer, strlen(x->bearer));
	reg_free_null(&x->bearer);
	alps_error_free(x->cb_err);
	x->cb_err = NULL;
}

bool is_bearer(const char *challenge)
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
		reg_stat_add(&x->s->stats.resumes);
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
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, x->s->connect_timeout_s);
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
	if (x->head)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
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
	snprintf(x->reason, sizeof(x->reason), "HTTP %ld", st);
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

/* A timeout: a host that never connects or never answers fails now (a
 * retry would wait as long again); a transfer that stalled after its
 * answer began is retried and resumed. */
static int timeout_failure(struct xfer *x, const char *host, alps_error **err)
{
	if (!x->connected) {
		snprintf(x->reason, sizeof(x->reason), "no connection in %ld s", x->s->connect_timeout_s);
		return alps_fail(err, ALPS_E_TIMEOUT, "%s: cannot connect to %s within %ld s "
				 "(registry.connect_timeout)", x->what, host, x->s->connect_timeout_s);
	}
	if (x->status == 0 && !x->tls_done)
		return alps_fail(err, ALPS_E_TIMEOUT, "%s: %s accepted the connection but did not "
				 "answer the TLS handshake within %ld s (registry.connect_timeout, "
				 "at most registry.timeout or pull --timeout)", x->what, host,
				 x->s->connect_timeout_s);
	if (x->status == 0)
		return alps_fail(err, ALPS_E_TIMEOUT, "%s: %s accepted the connection but did not "
				 "answer within %ld s (registry.timeout or pull --timeout)", x->what,
				 host, x->s->timeout_s);
	x->retryable = true;
	snprintf(x->reason, sizeof(x->reason), "nothing received for %ld s", x->s->timeout_s);
	return alps_fail(err, ALPS_E_TIMEOUT, "%s: %s sent nothing for %ld s (registry.timeout "
			 "or pull --timeout)", x->what, host, x->s->timeout_s);
}

static int curl_failure(struct xfer *x, CURLcode rc, alps_error **err)
{
	const char *detail = x->curl_msg[0] ? x->curl_msg : curl_easy_strerror(rc);
	_cleanup_free_ char *esc = log_escape(detail, 300);
	const char *host = xfer_host(x);
	snprintf(x->reason, sizeof(x->reason), "%s", curl_easy_strerror(rc));
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
		x->retryable = true;
		x->refused = true;
		if (rc == CURLE_COULDNT_CONNECT && x->os_errno == ECONNREFUSED)
			snprintf(x->reason, sizeof(x->reason), "connection refused");
		else if (rc == CURLE_COULDNT_CONNECT && x->os_errno)
			snprintf(x->reason, sizeof(x->reason), "%s", strerror(x->os_errno));
		else
			snprintf(x->reason, sizeof(x->reason), "unknown host");
		return alps_fail(err, ALPS_E_UNAVAILABLE, "%s: cannot connect to %s: %s",
				 x->what, host, esc);
	case CURLE_OPERATION_TIMEDOUT:
		return timeout_failure(x, host, err);
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		x->retryable = true;
		snprintf(x->reason, sizeof(x->reason), "transfer interrupted");
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

/* How far the connection got, for what a failure means. */
static void xfer_conn_info(struct xfer *x, CURL *c)
{
	curl_off_t conn = 0, app = 0;
	long os_err = 0;
	curl_easy_getinfo(c, CURLINFO_CONNECT_TIME_T, &conn);
	curl_easy_getinfo(c, CURLINFO_APPCONNECT_TIME_T, &app);
	curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_err);
	/* A TLS handshake that timed out leaves the connect time at 0
	 * (libcurl counts TLS in the connection): its message tells. */
	x->connected = conn > 0 || strstr(x->curl_msg, "SSL connection timeout") != NULL;
	x->tls_done = app > 0 || !str_has_prefix(x->url, "https://");
	x->os_errno = (int)os_err;
}

/* One request.  0 on a 2xx (or the ping's 401); else -1 with *err and
 * x->retryable / x->retry_after_ms set. */
int xfer_once(struct xfer *x, alps_error **err)
{
	struct curl_slist *headers = NULL;
	xfer_reset_response(x);
	x->retryable = false;
	x->refused = false;
	x->connected = false;
	x->tls_done = false;
	x->os_errno = 0;
	x->reason[0] = '\0';
	x->retry_after_ms = 0;
	x->curl_msg[0] = '\0';
	if (x->mem)
		x->mem->len = 0;        /* memory bodies restart from scratch */
	CURL *c = xfer_setup(x, &headers);
	CURLcode rc = curl_easy_perform(c);
	x->curl_rc = rc;
	xfer_conn_info(x, c);
	curl_easy_cleanup(c);
	curl_slist_free_all(headers);
	reg_stat_add(&x->s->stats.requests);
	if (x->cb_err)
		return reg_hand_over(err, steal_pointer(&x->cb_err));
	if (rc != CURLE_OK)
		return curl_failure(x, rc, err);
	if ((x->status >= 200 && x->status <= 299) || (x->ok_401 && x->status == 401))
		return 0;
	return status_failure(x, err);
}

void reg_sleep_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

uint64_t reg_backoff_ms(unsigned attempt)
{
	uint64_t ms = RETRY_BASE_MS;
	for (unsigned i = 0; i < attempt && ms < RETRY_MAX_MS; i++)
		ms *= 2;
	return ms < RETRY_MAX_MS ? ms : RETRY_MAX_MS;
}
