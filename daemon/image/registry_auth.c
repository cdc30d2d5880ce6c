/* registry_auth.c: authentication: challenges, the token flow, and
 * xfer_run(), the retry and re-authentication loop around one exchange. */
#include <config.h>

#include "daemon/image/registry_int.h"

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
	reg_stat_add(&s->stats.token_fetches);
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

static bool authority_has_port(const char *authority)
{
	const char *end = authority[0] == '[' ? strchr(authority, ']') : authority;
	return end && strchr(end, ':') != NULL;
}

/* GET /v2/ over HTTPS, or HTTP where allowed when HTTPS cannot talk to the
 * host at all.  Learns the scheme and the auth challenge.  ep->lock held. */
int endpoint_ping(struct registry_session *s, struct endpoint *ep, alps_error **err)
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
		 * does but fails verification must not be downgraded.  Nor when
		 * the port (the same for both) refused or never answered. */
		bool no_fallback = x.status != 0 || x.curl_rc == CURLE_PEER_FAILED_VERIFICATION ||
				   (authority_has_port(ep->authority) &&
				    (x.refused || x.curl_rc == CURLE_OPERATION_TIMEDOUT));
		xfer_clear(&x);
		if (rc == 0)
			return 0;
		if (i + 1 == nschemes || no_fallback)
			return reg_hand_over(err, e);
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

/* Tell the session's listener: "registry H: connection refused, retry 1
 * of 2 in 0.5 s". */
static void xfer_notice_retry(const struct xfer *x, unsigned n, unsigned max, uint64_t delay_ms)
{
	if (!x->s->notice)
		return;
	_cleanup_free_ char *host = log_escape(x->ep ? x->ep->authority : x->url, 200);
	char wait[32];
	if (delay_ms < 10000 && delay_ms % 1000)
		snprintf(wait, sizeof(wait), "%.1f s", (double)delay_ms / 1000.0);
	else
		snprintf(wait, sizeof(wait), "%" PRIu64 " s", delay_ms / 1000);
	_cleanup_free_ char *msg = xasprintf("registry %s: %s, retry %u of %u in %s", host,
					     x->reason[0] ? x->reason : "failed", n, max, wait);
	x->s->notice(x->s->notice_arg, msg);
}

/* The request with authentication, retries with backoff (Retry-After
 * honoured) and, for blobs, resumption.  The attempt counter restarts
 * when a blob transfer made progress: a long download over a flaky link
 * should finish, a dead server should not be hammered. */
int xfer_run(struct xfer *x, alps_error **err)
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
			return reg_hand_over(err, e);
		}
		if (xfer_progress(x) > mark) {
			mark = xfer_progress(x);
			attempt = 0;
			reauthed = false;
		}
		unsigned max = x->refused ? x->s->connect_retries : x->s->retries;
		if (!x->retryable || attempt >= max)
			return reg_hand_over(err, e);
		uint64_t delay = x->retry_after_ms ? x->retry_after_ms : reg_backoff_ms(attempt);
		if (x->refused && delay > REFUSED_RETRY_MAX_MS)
			delay = REFUSED_RETRY_MAX_MS;
		log_info("%s (retrying in %" PRIu64 " ms, %u of %u)", e->msg, delay, attempt + 1, max);
		xfer_notice_retry(x, attempt + 1, max, delay);
		alps_error_free(e);
		reg_stat_add(&x->s->stats.retries);
		reg_sleep_ms(delay);
		attempt++;
	}
}
