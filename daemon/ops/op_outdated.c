/* op_outdated.c: alps outdated: is each cached tag the caller sees still
 * what its registry serves?  Runs on a worker (store and network calls);
 * the loop only parses the request and sends the answer. */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/ref.h"
#include "daemon/daemon.h"
#include "daemon/image/fresh.h"
#include "daemon/image/registry.h"
#include "daemon/server/handlers.h"
#include "daemon/server/work.h"
#include "daemon/settings.h"
#include "daemon/store/store.h"

#define OUTDATED_MAX_REFS 1000

struct outdated_row {
	char *reference;
	const char *status;     /* "up_to_date", "outdated", "unreachable", "not_cached" */
	char *cached, *now, *reason, *platform;
};

struct outdated_work {
	struct request *rq;
	struct store *store;
	struct snapshot snap;
	int64_t viewer;
	char **refs;                    /* canonical; none: every visible tag */
	size_t nrefs;
	struct registry_cred *creds;
	size_t ncreds;
	long timeout_s;
	struct outdated_row *rows;      /* results, written by the worker */
	size_t nrows;
	alps_error *err;
};

static void outdated_work_free(struct outdated_work *w)
{
	request_unref(w->rq);
	snapshot_drop(&w->snap);
	for (size_t i = 0; i < w->nrefs; i++)
		free(w->refs[i]);
	free(w->refs);
	dockercfg_creds_free(w->creds, w->ncreds);
	for (size_t i = 0; i < w->nrows; i++) {
		free(w->rows[i].reference);
		free(w->rows[i].cached);
		free(w->rows[i].now);
		free(w->rows[i].reason);
		free(w->rows[i].platform);
	}
	free(w->rows);
	alps_error_free(w->err);
	free(w);
}

static struct outdated_row *row_add(struct outdated_work *w, const char *reference)
{
	w->rows = xrealloc(w->rows, (w->nrows + 1) * sizeof(*w->rows));
	struct outdated_row *r = &w->rows[w->nrows++];
	memset(r, 0, sizeof(*r));
	r->reference = xstrdup(reference);
	return r;
}

/* Ask the tag's registry (or its mirrors) where the tag points now. */
static void check_one(struct outdated_work *w, struct outdated_row *r, const struct image_fresh *f)
{
	struct image_ref ref;
	alps_error *err = NULL;
	char *now = NULL;
	struct registry_session *s = NULL;
	r->cached = xstrdup(f->digest);
	r->platform = xstrdup(f->platform);
	if (ref_parse(r->reference, w->snap.cfg->default_registry, &ref, &err) == 0) {
		s = registry_session_new(w->snap.cfg, &ref, w->creds, w->ncreds, &err);
		ref_free(&ref);
	}
	if (s) {
		registry_set_timeout(s, w->timeout_s);
		fresh_current(s, f, &now, &err);
		registry_session_free(s);
	}
	if (err) {
		r->status = "unreachable";
		r->reason = log_escape(err->msg, 500);
		alps_error_free(err);
		return;
	}
	r->now = now;
	r->status = strcmp(now, f->digest) == 0 ? "up_to_date" : "outdated";
}

static void check_reference(struct outdated_work *w, const char *reference)
{
	struct image_fresh f;
	alps_error *err = NULL;
	struct outdated_row *r = row_add(w, reference);
	int have = fresh_cached(w->store, reference, w->viewer, &f, &err);
	if (have < 0) {
		r->status = "unreachable";
		r->reason = xstrdup(err->msg);
		alps_error_free(err);
	} else if (have == 0) {
		r->status = "not_cached";
	} else {
		check_one(w, r, &f);
		fresh_clear(&f);
	}
}

/* Every tag of the images the caller sees (tags, not digests: a digest
 * never changes). */
static void list_tags(struct outdated_work *w)
{
	struct store_image *imgs = NULL;
	size_t n = 0;
	if (store_images_list(w->store, w->viewer, &imgs, &n, &w->err) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i].ntags && w->nrefs < OUTDATED_MAX_REFS; j++) {
			if (strchr(imgs[i].tags[j], '@'))
				continue;
			w->refs = xrealloc(w->refs, (w->nrefs + 1) * sizeof(char *));
			w->refs[w->nrefs++] = xstrdup(imgs[i].tags[j]);
		}
	store_images_free(imgs, n);
}

static void outdated_work(void *arg)
{
	struct outdated_work *w = arg;
	if (w->nrefs == 0)
		list_tags(w);
	for (size_t i = 0; i < w->nrefs && !w->err; i++)
		check_reference(w, w->refs[i]);
}

static void outdated_done(void *arg)
{
	struct outdated_work *w = arg;
	if (w->err) {
		request_fail(w->rq, steal_pointer(&w->err));
		return outdated_work_free(w);
	}
	size_t n = w->nrows;
	Alps__OutdatedImage *im = xcalloc(n ? n : 1, sizeof(*im));
	Alps__OutdatedImage **ptrs = xcalloc(n ? n : 1, sizeof(*ptrs));
	for (size_t i = 0; i < n; i++) {
		const struct outdated_row *r = &w->rows[i];
		alps__outdated_image__init(&im[i]);
		im[i].reference = r->reference;
		im[i].status = (char *)r->status;
		im[i].cached_digest = r->cached ? r->cached : (char *)"";
		im[i].registry_digest = r->now ? r->now : (char *)"";
		im[i].reason = r->reason ? r->reason : (char *)"";
		im[i].platform = r->platform ? r->platform : (char *)"";
		ptrs[i] = &im[i];
	}
	Alps__OutdatedReply rep = ALPS__OUTDATED_REPLY__INIT;
	rep.images = ptrs;
	rep.n_images = n;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_OUTDATED_REPLY;
	resp.outdated_reply = &rep;
	request_finish(w->rq, &resp);
	free(ptrs);
	free(im);
	outdated_work_free(w);
}

/* The request's references, canonical, and credentials, copied. */
static int outdated_parse(struct outdated_work *w, const Alps__OutdatedRequest *or,
			  const struct config *cfg, alps_error **err)
{
	if (or->n_references > OUTDATED_MAX_REFS)
		return alps_fail(err, ALPS_E_LIMIT, "outdated: more than %d references",
				 OUTDATED_MAX_REFS);
	if (or->timeout_s > 3600)
		return alps_fail(err, ALPS_E_INVALID, "outdated: a timeout of %u s is more than "
				 "3600 s", or->timeout_s);
	w->timeout_s = (long)or->timeout_s;
	w->refs = xcalloc(or->n_references + 1, sizeof(char *));
	for (size_t i = 0; i < or->n_references; i++) {
		struct image_ref ref;
		if (ref_parse(or->references[i], cfg->default_registry, &ref, err) < 0)
			return alps_error_prefix(err, "outdated");
		w->refs[w->nrefs++] = ref_format(&ref);
		ref_free(&ref);
	}
	w->creds = xcalloc(or->n_credentials + 1, sizeof(*w->creds));
	for (size_t i = 0; i < or->n_credentials; i++) {
		const Alps__RegistryCredential *c = or->credentials[i];
		struct registry_cred in = {
			.host = c->registry, .username = *c->username ? c->username : NULL,
			.password = *c->password ? c->password : NULL,
			.identity_token = *c->identity_token ? c->identity_token : NULL,
		};
		if (!c->registry || !*c->registry)
			continue;
		dockercfg_cred_copy(&w->creds[w->ncreds++], &in);
	}
	return 0;
}

static int op_outdated(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	static const Alps__OutdatedRequest empty = ALPS__OUTDATED_REQUEST__INIT;
	struct outdated_work *w = xzalloc(sizeof(*w));
	w->rq = request_ref(rq);
	w->store = d->store;
	w->viewer = request_peer_is_admin(rq) ? STORE_UID_ANY : (int64_t)request_peer(rq)->uid;
	snapshot_take(d, &w->snap);
	if (outdated_parse(w, req->outdated ? req->outdated : &empty, w->snap.cfg, err) < 0 ||
	    work_submit(d, outdated_work, outdated_done, w, err) < 0) {
		outdated_work_free(w);
		return -1;
	}
	return 0;
}

const struct handler handler_outdated = {
	ALPS__REQUEST__OP_OUTDATED, "outdated", PRIV_USER, op_outdated,
};
