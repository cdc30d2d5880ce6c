/* op_image.c: Pull, Images, Inspect, Remove. */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/ref.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/handlers.h"
#include "daemon/image/pull.h"
#include "daemon/store/store.h"

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

static void pull_progress(void *arg, const struct pull_status *st)
{
	struct request *rq = arg;
	if (!request_connected(rq))
		return;
	Alps__LayerProgress *lp = xcalloc(st->nlayers ? st->nlayers : 1, sizeof(*lp));
	Alps__LayerProgress **lpp = xcalloc(st->nlayers ? st->nlayers : 1, sizeof(*lpp));
	for (size_t i = 0; i < st->nlayers; i++) {
		alps__layer_progress__init(&lp[i]);
		lp[i].digest = st->layers[i].digest;
		lp[i].bytes_done = st->layers[i].done;
		lp[i].bytes_total = st->layers[i].total;
		lp[i].state = (char *)st->layers[i].state;
		lpp[i] = &lp[i];
	}
	Alps__PullProgress pp = ALPS__PULL_PROGRESS__INIT;
	pp.layers = lpp;
	pp.n_layers = st->nlayers;
	pp.bytes_done = st->done;
	pp.bytes_total = st->total;
	pp.rate_bps = st->rate_bps;
	pp.eta_ms = st->eta_ms;
	pp.phase = (char *)st->phase;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_PULL_PROGRESS;
	resp.pull_progress = &pp;
	request_progress(rq, &resp);
	free(lpp);
	free(lp);
}

static void pull_done(void *arg, const struct pull_result *res, const alps_error *err)
{
	struct request *rq = arg;
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

int op_pull(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	const Alps__PullRequest *pr = req->pull;
	if (!pr || !pr->reference || !*pr->reference)
		return alps_fail(err, ALPS_E_INVALID, "pull: no image reference given");
	struct registry_cred *creds = xcalloc(pr->n_credentials ? pr->n_credentials : 1,
					      sizeof(*creds));
	for (size_t i = 0; i < pr->n_credentials; i++) {
		creds[i].host = pr->credentials[i]->registry;
		creds[i].username = pr->credentials[i]->username;
		creds[i].password = pr->credentials[i]->password;
		creds[i].identity_token = pr->credentials[i]->identity_token;
	}
	struct pull_request preq = {
		.reference = pr->reference, .platform = pr->platform,
		.uid = request_peer(rq)->uid, .creds = creds, .ncreds = pr->n_credentials,
	};
	int rc = puller_pull(d->puller, &preq, &pull_request_ops, request_ref(rq), err);
	free(creds);
	if (rc < 0)
		request_unref(rq);
	return rc;
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

int op_images(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	struct store_image *imgs = NULL;
	size_t n = 0;
	if (store_images_list(d->store, viewer(rq), &imgs, &n, err) < 0)
		return -1;
	Alps__ImageInfo *infos = xcalloc(n ? n : 1, sizeof(*infos));
	Alps__ImageInfo **ptrs = xcalloc(n ? n : 1, sizeof(*ptrs));
	for (size_t i = 0; i < n; i++) {
		image_info_fill(&infos[i], &imgs[i]);
		ptrs[i] = &infos[i];
	}
	Alps__ImagesReply ir = ALPS__IMAGES_REPLY__INIT;
	ir.images = ptrs;
	ir.n_images = n;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_IMAGES_REPLY;
	resp.images_reply = &ir;
	request_finish(rq, &resp);
	free(ptrs);
	free(infos);
	store_images_free(imgs, n);
	return 0;
}

int op_inspect(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	if (!req->inspect || !req->inspect->reference || !*req->inspect->reference)
		return alps_fail(err, ALPS_E_INVALID, "inspect: no image given");
	bool is_digest;
	_cleanup_free_ char *key = image_key(d, req->inspect->reference, &is_digest, err);
	if (!key)
		return -1;
	struct store_image *img = NULL;
	if (store_image_find(d->store, key, viewer(rq), &img, err) < 0)
		return -1;
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
		li[i].file = request_peer_is_admin(rq) ? l->path : (char *)"";
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
	request_finish(rq, &resp);
	free(lip);
	free(li);
	store_image_free(img);
	return 0;
}

/* ---- rm ---- */

int op_remove(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	if (!req->remove || !req->remove->reference || !*req->remove->reference)
		return alps_fail(err, ALPS_E_INVALID, "rm: no image given");
	const char *what = req->remove->reference;
	bool is_digest;
	_cleanup_free_ char *key = image_key(d, what, &is_digest, err);
	if (!key)
		return -1;
	struct store_removed removed = { 0 };
	/* A tag goes alone (the image with it if it was the last); a digest
	 * takes the image and all its tags. */
	int rc = is_digest ? store_image_remove(d->store, key, &removed, err)
			   : store_image_untag(d->store, key, &removed, err);
	if (rc < 0)
		return -1;
	log_notice("rm %s by uid %u: %u image(s), %u layer(s), %llu bytes freed", key,
		   (unsigned)request_peer(rq)->uid, removed.images, removed.layers,
		   (unsigned long long)removed.bytes_freed);
	Alps__RemoveReply rr = ALPS__REMOVE_REPLY__INIT;
	rr.layers_removed = removed.layers;
	rr.bytes_freed = removed.bytes_freed;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_REMOVE_REPLY;
	resp.remove_reply = &rr;
	request_finish(rq, &resp);
	return 0;
}
