/* op_resolve.c: Resolve, what an image reference's tag points to now.
 *
 * The Slurm plugin asks at submission (as the user, through the local
 * alpsd) and pins the job's image to the answer, so that every node of the
 * job runs the same image even if the tag moves while the job waits.
 * Nothing is pulled or stored: one manifest (and index) request to the
 * registry, through the registry client pulls use (mirrors, TLS, tokens).
 *
 *   resolve (worker)  registry_resolve(): the index's digest when the tag
 *                     names an index (every platform of the job then picks
 *                     its manifest from the same index), else the manifest's
 *   reply   (loop)
 *
 * Bounded: one attempt with a short timeout (a submission waits for it),
 * and a few at once, since each holds a worker thread while the registry
 * answers.  The caller's credentials (read by the client as the user) are
 * used for this one request and kept nowhere, so a private image is pinned
 * too; nothing of what is learnt is stored, so no other user gains by it. */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "common/dockercfg.h"
#include "common/log.h"
#include "common/ref.h"
#include "common/util.h"
#include "daemon/daemon.h"
#include "daemon/image/registry.h"
#include "daemon/server/handlers.h"
#include "daemon/server/work.h"
#include "daemon/settings.h"

#define RESOLVE_TIMEOUT_S 10
#define RESOLVE_MAX_INFLIGHT 4
#define RESOLVE_MAX_REF 1024
#define RESOLVE_MAX_CREDS 256

/* Loop thread only. */
static unsigned inflight;

struct resolve {
	struct request *rq;
	struct snapshot snap;
	struct image_ref ref;
	struct registry_cred *creds;    /* the caller's, copied */
	size_t ncreds;
	char *digest;           /* from the worker */
	alps_error *err;        /* from the worker */
};

static void resolve_free(struct resolve *r)
{
	request_unref(r->rq);
	snapshot_drop(&r->snap);
	ref_free(&r->ref);
	dockercfg_creds_free(r->creds, r->ncreds);
	free(r->digest);
	alps_error_free(r->err);
	free(r);
}

/* The worker: one bounded attempt. */
static void resolve_work(void *arg)
{
	struct resolve *r = arg;
	struct config cfg;
	memcpy(&cfg, r->snap.cfg, sizeof(cfg));         /* read-only, a few fields changed */
	if (cfg.http_timeout_s <= 0 || cfg.http_timeout_s > RESOLVE_TIMEOUT_S)
		cfg.http_timeout_s = RESOLVE_TIMEOUT_S;
	cfg.http_retries = 0;
	struct registry_session *s = registry_session_new(&cfg, &r->ref, r->creds, r->ncreds,
								  &r->err);
	if (!s)
		return;
	struct resolved_image img;
	if (registry_resolve(s, NULL, &img, &r->err) == 0) {
		r->digest = xstrdup(img.index_digest ? img.index_digest : img.manifest_digest);
		registry_resolved_free(&img);
	}
	registry_session_free(s);
}

static void resolve_reply(void *arg)
{
	struct resolve *r = arg;
	inflight--;
	if (r->err) {
		request_fail(r->rq, steal_pointer(&r->err));
		resolve_free(r);
		return;
	}
	free(r->ref.digest);
	r->ref.digest = NULL;
	_cleanup_free_ char *canon = ref_format(&r->ref);
	r->ref.digest = steal_pointer(&r->digest);
	_cleanup_free_ char *pinned = ref_format(&r->ref);
	Alps__ResolveReply rr = ALPS__RESOLVE_REPLY__INIT;
	rr.digest = r->ref.digest;
	rr.reference = canon;
	rr.pinned = pinned;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_RESOLVE_REPLY;
	resp.resolve_reply = &rr;
	request_finish(r->rq, &resp);
	resolve_free(r);
}

static int op_resolve(struct request *rq, const Alps__Request *req, alps_error **err)
{
	const Alps__ResolveRequest *rr = req->resolve;
	if (!rr || !rr->reference || !*rr->reference)
		return alps_fail(err, ALPS_E_INVALID, "resolve: no image reference given");
	if (strlen(rr->reference) > RESOLVE_MAX_REF)
		return alps_fail(err, ALPS_E_INVALID, "resolve: reference over %d bytes",
				 RESOLVE_MAX_REF);
	struct daemon *d = request_daemon(rq);
	struct resolve *r = xzalloc(sizeof(*r));
	if (ref_parse_any(rr->reference, d->cfg->default_registry, &r->ref, err) < 0) {
		free(r);
		return -1;
	}
	r->rq = request_ref(rq);
	snapshot_take(d, &r->snap);
	if (rr->n_credentials > RESOLVE_MAX_CREDS) {
		resolve_free(r);
		return alps_fail(err, ALPS_E_LIMIT, "resolve: more than %d credentials",
				 RESOLVE_MAX_CREDS);
	}
	r->creds = xcalloc(rr->n_credentials + 1, sizeof(*r->creds));
	for (size_t i = 0; i < rr->n_credentials; i++) {
		const Alps__RegistryCredential *c = rr->credentials[i];
		if (!c->registry || !*c->registry)
			continue;
		struct registry_cred in = {
			.host = c->registry, .username = *c->username ? c->username : NULL,
			.password = *c->password ? c->password : NULL,
			.identity_token = *c->identity_token ? c->identity_token : NULL,
		};
		dockercfg_cred_copy(&r->creds[r->ncreds++], &in);
	}
	if (r->ref.digest) {            /* nothing to ask: the reference is pinned */
		inflight++;
		r->digest = xstrdup(r->ref.digest);
		resolve_reply(r);
		return 0;
	}
	if (inflight >= RESOLVE_MAX_INFLIGHT) {
		resolve_free(r);
		return alps_fail(err, ALPS_E_BUSY, "resolve: %d resolutions are running; try again",
				 RESOLVE_MAX_INFLIGHT);
	}
	if (work_submit(d, resolve_work, resolve_reply, r, err) < 0) {
		resolve_free(r);
		return -1;
	}
	inflight++;
	return 0;
}

/* Any user: the same registries a pull reaches, nothing stored. */
const struct handler handler_resolve = {
	ALPS__REQUEST__OP_RESOLVE, "resolve", PRIV_USER, op_resolve,
};
