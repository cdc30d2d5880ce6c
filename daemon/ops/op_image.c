/* op_image.c: Pull, Images, Inspect, Remove. */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/ref.h"
#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/ops/ops.h"
#include "daemon/image/pull.h"
#include "daemon/store/store.h"
#include "daemon/server/work.h"

/* Who the store shows images to: everyone's for admins. */
static int64_t viewer(struct request *rq)
{
	return request_peer_is_admin(rq) ? STORE_UID_ANY : (int64_t)request_peer(rq)->uid;
}

/* What the user typed as the store wants it: a digest or digest prefix as
 * it is (*is_digest set), a reference in its canonical form.  Caller
 * frees. */
static char *image_key(struct daemon *d, const char *text, bool *is_digest, alps_error **err)
{
	size_t hex = strspn(text, "0123456789abcdef");
	*is_digest = str_has_prefix(text, "sha256:") || str_has_prefix(text, "sha512:") ||
		     (hex >= 12 && text[hex] == '\0');
	if (*is_digest)
		return xstrdup(text);
	struct image_ref ref;
	if (ref_parse(text, d->cfg->default_registry, &ref, err) < 0)
		return NULL;
	char *s = ref_format(&ref);
	ref_free(&ref);
	return s;
}

/* ---- pull ---- */

void ops_send_pull_progress(struct request *rq, const struct pull_status *st, bool layers)
{
	size_t n = layers ? st->nlayers : 0;
	Alps__LayerProgress *lp = xcalloc(n ? n : 1, sizeof(*lp));
	Alps__LayerProgress **lpp = xcalloc(n ? n : 1, sizeof(*lpp));
	for (size_t i = 0; i < n; i++) {
		alps__layer_progress__init(&lp[i]);
		lp[i].digest = (char *)st->layers[i].digest;
		lp[i].bytes_done = st->layers[i].done;
		lp[i].bytes_total = st->layers[i].total;
		lp[i].state = (char *)pull_layer_state_name(st->layers[i].state);
		lpp[i] = &lp[i];
	}
	Alps__PullProgress pp = ALPS__PULL_PROGRESS__INIT;
	pp.layers = lpp;
	pp.n_layers = n;
	pp.bytes_done = st->done;
	pp.bytes_total = st->total;
	pp.rate_bps = st->rate_bps;
	pp.eta_ms = st->eta_ms;
	pp.phase = (char *)pull_phase_name(st->phase);
	pp.notices = st->notices;
	pp.n_notices = st->nnotices;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_PULL_PROGRESS;
	resp.pull_progress = &pp;
	request_progress(rq, &resp);
	free(lpp);
	free(lp);
}

static void pull_progress(void *arg, const struct pull_status *st)
{
	struct request *rq = arg;
	if (request_connected(rq))
		ops_send_pull_progress(rq, st, true);
}

static void pull_done(void *arg, const struct pull_result *res, const alps_error *err)
{
	struct request *rq = arg;
	log_event(err ? LOG_LVL_WARN : LOG_LVL_INFO, "pull", "ref", res ? res->reference : NULL,
		  "digest", res ? res->digest : NULL, "bytes", res ? LOG_U64(res->size) : NULL,
		  "layers_fetched", res ? LOG_U64(res->fetched) : NULL, "seconds",
		  LOG_SECONDS(request_age_ns(rq)), "uid", LOG_U64(request_peer(rq)->uid), "result",
		  err ? "error" : "ok", "error", err ? err->msg : NULL, NULL);
	if (err) {
		alps_error *copy = NULL;
		alps_fail(&copy, err->code, "%s", err->msg);
		request_fail(rq, copy);
	} else {
		Alps__PullReply pr = ALPS__PULL_REPLY__INIT;
		pr.reference = (char *)res->reference;
		pr.digest = (char *)res->digest;
		pr.layers = res->layers;
		pr.layers_fetched = res->fetched;
		pr.size = res->size;
		pr.refresh = (char *)(res->refresh ? res->refresh : "");
		pr.previous_digest = (char *)(res->previous ? res->previous : "");
		Alps__Response resp = ALPS__RESPONSE__INIT;
		resp.payload_case = ALPS__RESPONSE__PAYLOAD_PULL_REPLY;
		resp.pull_reply = &pr;
		request_finish(rq, &resp);
	}
	request_unref(rq);
}

static const struct pull_waiter_ops pull_request_ops = {
	.progress = pull_progress,
	.done = pull_done,
};

static int op_pull(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	const Alps__PullRequest *pr = req->pull;
	if (!pr || !pr->reference || !*pr->reference)
		return alps_fail(err, ALPS_E_INVALID, "pull: no image reference given");
	if (pr->timeout_s > 3600)
		return alps_fail(err, ALPS_E_INVALID, "pull: a timeout of %u s is more than "
				 "3600 s", pr->timeout_s);
	struct registry_cred *creds = xcalloc(pr->n_credentials ? pr->n_credentials : 1,
					      sizeof(*creds));
	for (size_t i = 0; i < pr->n_credentials; i++) {
		creds[i].host = pr->credentials[i]->registry;
		creds[i].username = pr->credentials[i]->username;
		creds[i].password = pr->credentials[i]->password;
		creds[i].identity_token = pr->credentials[i]->identity_token;
	}
	struct pull_request preq = {
		.cfg = d->cfg,
		.reference = pr->reference, .platform = pr->platform,
		.uid = request_peer(rq)->uid, .creds = creds, .ncreds = pr->n_credentials,
		.timeout_s = pr->timeout_s, .no_refresh = pr->no_refresh,
	};
	int rc = puller_pull(d->puller, &preq, &pull_request_ops, request_ref(rq), err);
	free(creds);
	if (rc < 0)
		request_unref(rq);
	return rc;
}

const struct handler handler_pull = {
	ALPS__REQUEST__OP_PULL, "pull", PRIV_USER, op_pull,
};

/* ---- store calls off the loop ----
 *
 * Images, inspect and rm are store calls, and a store call may wait up to
 * sqlite's busy timeout for a lock (an admin's sqlite3 shell, a checkpoint):
 * they run on a worker, and the answer is sent from the loop. */

struct image_work {
	struct request *rq;
	struct store *store;
	int64_t viewer;                 /* viewer(rq), taken on the loop */
	bool admin;
	uid_t uid;
	char *key;                      /* owned: what the user named (inspect, rm) */
	bool is_digest;
	/* Results, written by the worker, read by done(). */
	struct store_image *imgs;       /* owned: images' list, or inspect's one */
	size_t n;
	struct store_removed removed;
	alps_error *err;
};

static void image_work_free(struct image_work *w)
{
	request_unref(w->rq);
	free(w->key);
	store_images_free(w->imgs, w->n);
	alps_error_free(w->err);
	free(w);
}

/* Fail the request if the worker failed; true if it did. */
static bool image_work_failed(struct image_work *w)
{
	if (!w->err)
		return false;
	request_fail(w->rq, w->err);
	w->err = NULL;
	return true;
}

/* Submit w (from a handler: takes a reference on rq); w is freed on
 * failure. */
static int image_work_submit(struct request *rq, struct image_work *w, work_fn fn, work_fn done,
			     alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	w->rq = request_ref(rq);
	w->store = d->store;
	w->viewer = viewer(rq);
	w->admin = request_peer_is_admin(rq);
	w->uid = request_peer(rq)->uid;
	if (work_submit(d, fn, done, w, err) < 0) {
		image_work_free(w);
		return -1;
	}
	return 0;
}

/* The key the user named, for inspect and rm; NULL with *err set. */
static struct image_work *image_work_named(struct request *rq, const char *text, const char *op,
					   alps_error **err)
{
	if (!text || !*text) {
		alps_fail(err, ALPS_E_INVALID, "%s: no image given", op);
		return NULL;
	}
	struct image_work *w = xzalloc(sizeof(*w));
	w->key = image_key(request_daemon(rq), text, &w->is_digest, err);
	if (!w->key) {
		free(w);
		return NULL;
	}
	return w;
}

/* ---- images, inspect ---- */

static void image_info_fill(Alps__ImageInfo *info, const struct store_image *img)
{
	alps__image_info__init(info);
	info->references = img->tags;
	info->n_references = img->ntags;
	info->digest = img->digest;
	info->size = img->size;
	info->layers = (uint32_t)img->nlayers;
	info->created_ms = img->created_ms;
	info->last_used_ms = img->last_used_ms;
	info->pinned = img->pinned;
	info->platform = img->platform;
}

static void images_work(void *arg)
{
	struct image_work *w = arg;
	store_images_list(w->store, w->viewer, &w->imgs, &w->n, &w->err);
}

/* The image's layers as ImageLayerRef messages, pointing into img. */
static void image_layer_refs(Alps__ImageInfo *info, const struct store_image *img,
			     Alps__ImageLayerRef *refs, Alps__ImageLayerRef **ptrs)
{
	for (size_t i = 0; i < img->nlayers; i++) {
		alps__image_layer_ref__init(&refs[i]);
		refs[i].digest = img->layers[i].digest;
		refs[i].squashfs_size = img->layers[i].squashfs_size;
		ptrs[i] = &refs[i];
	}
	info->layer_refs = ptrs;
	info->n_layer_refs = img->nlayers;
}

static void images_done(void *arg)
{
	struct image_work *w = arg;
	if (image_work_failed(w))
		return image_work_free(w);
	size_t n = w->n, nl = 0;
	for (size_t i = 0; i < n; i++)
		nl += w->imgs[i].nlayers;
	Alps__ImageInfo *infos = xcalloc(n ? n : 1, sizeof(*infos));
	Alps__ImageInfo **ptrs = xcalloc(n ? n : 1, sizeof(*ptrs));
	Alps__ImageLayerRef *lrefs = xcalloc(nl ? nl : 1, sizeof(*lrefs));
	Alps__ImageLayerRef **lptrs = xcalloc(nl ? nl : 1, sizeof(*lptrs));
	for (size_t i = 0, at = 0; i < n; i++) {
		image_info_fill(&infos[i], &w->imgs[i]);
		image_layer_refs(&infos[i], &w->imgs[i], lrefs + at, lptrs + at);
		at += w->imgs[i].nlayers;
		ptrs[i] = &infos[i];
	}
	Alps__ImagesReply ir = ALPS__IMAGES_REPLY__INIT;
	ir.images = ptrs;
	ir.n_images = n;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_IMAGES_REPLY;
	resp.images_reply = &ir;
	request_finish(w->rq, &resp);
	free(lptrs);
	free(lrefs);
	free(ptrs);
	free(infos);
	image_work_free(w);
}

static int op_images(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct image_work *w = xzalloc(sizeof(*w));
	return image_work_submit(rq, w, images_work, images_done, err);
}

const struct handler handler_images = {
	ALPS__REQUEST__OP_IMAGES, "images", PRIV_USER, op_images,
};

static void inspect_work(void *arg)
{
	struct image_work *w = arg;
	if (store_image_find(w->store, w->key, w->viewer, &w->imgs, &w->err) == 0)
		w->n = 1;
}

static void inspect_done(void *arg)
{
	struct image_work *w = arg;
	if (image_work_failed(w))
		return image_work_free(w);
	const struct store_image *img = w->imgs;
	Alps__ImageInfo info;
	image_info_fill(&info, img);
	Alps__LayerInfo *li = xcalloc(img->nlayers + 1, sizeof(*li));
	Alps__LayerInfo **lip = xcalloc(img->nlayers + 1, sizeof(*lip));
	for (size_t i = 0; i < img->nlayers; i++) {
		const struct store_layer *l = &img->layers[i];
		alps__layer_info__init(&li[i]);
		li[i].digest = l->digest;
		li[i].diff_id = l->diff_id ? l->diff_id : (char *)"";
		li[i].media_type = l->media_type;
		li[i].compressed_size = l->compressed_size;
		li[i].squashfs_size = l->squashfs_size;
		/* Where the store keeps its files is the admins' business. */
		li[i].file = w->admin ? l->path : (char *)"";
		lip[i] = &li[i];
	}
	Alps__InspectReply ir = ALPS__INSPECT_REPLY__INIT;
	ir.image = &info;
	ir.manifest_json = img->manifest_json;
	ir.config_json = img->config_json;
	ir.layers = lip;
	ir.n_layers = img->nlayers;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_INSPECT_REPLY;
	resp.inspect_reply = &ir;
	request_finish(w->rq, &resp);
	free(lip);
	free(li);
	image_work_free(w);
}

static int op_inspect(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct image_work *w = image_work_named(
		rq, req->inspect ? req->inspect->reference : NULL, "inspect", err);
	return w ? image_work_submit(rq, w, inspect_work, inspect_done, err) : -1;
}

const struct handler handler_inspect = {
	ALPS__REQUEST__OP_INSPECT, "inspect", PRIV_USER, op_inspect,
};

/* ---- rm ---- */

/* A tag goes alone (the image with it if it was the last); a digest takes
 * the image and all its tags. */
static void remove_work(void *arg)
{
	struct image_work *w = arg;
	if (w->is_digest)
		store_image_remove(w->store, w->key, &w->removed, &w->err);
	else
		store_image_untag(w->store, w->key, &w->removed, &w->err);
}

static void remove_done(void *arg)
{
	struct image_work *w = arg;
	if (image_work_failed(w))
		return image_work_free(w);
	log_notice("rm %s by uid %u: %u image(s), %u layer(s), %llu bytes freed", w->key,
		   (unsigned)w->uid, w->removed.images, w->removed.layers,
		   (unsigned long long)w->removed.bytes_freed);
	Alps__RemoveReply rr = ALPS__REMOVE_REPLY__INIT;
	rr.layers_removed = w->removed.layers;
	rr.bytes_freed = w->removed.bytes_freed;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_REMOVE_REPLY;
	resp.remove_reply = &rr;
	request_finish(w->rq, &resp);
	image_work_free(w);
}

static int op_remove(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct image_work *w = image_work_named(
		rq, req->remove ? req->remove->reference : NULL, "rm", err);
	return w ? image_work_submit(rq, w, remove_work, remove_done, err) : -1;
}

const struct handler handler_remove = {
	ALPS__REQUEST__OP_REMOVE, "rm", PRIV_ADMIN, op_remove,
};
