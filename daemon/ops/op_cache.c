/* op_cache.c: the operator's hold on the store: gc, pin and unpin, and
 * the collection timer (see cache.h).  Store calls run on workers; the loop
 * only copies what the configuration says and sends answers. */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/ref.h"
#include "daemon/ops/cache.h"
#include "daemon/store/policy.h"
#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/image/pull.h"
#include "daemon/store/store.h"
#include "daemon/server/work.h"

/* ---- work ---- */

struct cache_work {
	struct request *rq;             /* NULL for the timer */
	struct store *store;
	struct cache_policy policy;
	uid_t uid;
	char *key;                      /* owned: the image named (pin) */
	bool pinned;
	struct store_gc_opts gc;
	bool has_max_size;
	uint64_t target;
	struct store_gc_report rep;
	char *digest;                   /* owned: pin's result */
	/* df */
	uint32_t pulls;                 /* taken on the loop */
	struct store_usage usage;
	uint64_t limit, low_water, fs_size, fs_avail, reclaimable, reserved;
	int64_t hits, misses;
	/* verify */
	struct store_check_report check;
	alps_error *err;
};

static void cache_work_free(struct cache_work *w)
{
	if (w->rq)
		request_unref(w->rq);
	free(w->key);
	free(w->digest);
	store_gc_report_clear(&w->rep);
	store_check_report_clear(&w->check);
	alps_error_free(w->err);
	free(w);
}

static int cache_submit(struct request *rq, struct cache_work *w, work_fn fn, work_fn done,
			alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	w->rq = request_ref(rq);
	w->store = d->store;
	w->uid = request_peer(rq)->uid;
	cache_policy_from(&w->policy, d->cfg);
	if (work_submit(d, fn, done, w, err) < 0) {
		cache_work_free(w);
		return -1;
	}
	return 0;
}

static bool cache_failed(struct cache_work *w)
{
	if (!w->err)
		return false;
	request_fail(w->rq, w->err);
	w->err = NULL;
	cache_work_free(w);
	return true;
}

/* ---- gc ---- */

/* The size goal: --max-size, else the configured limit's low-water mark,
 * else none (orphan layers and --older-than only). */
static int gc_target(struct cache_work *w)
{
	uint64_t limit = 0, low = 0;
	if (w->has_max_size) {
		w->gc.target = w->target;
		return 0;
	}
	if (cache_limits(w->store, &w->policy, &limit, &low, &w->err) < 0)
		return -1;
	w->gc.target = limit ? low : STORE_NO_TARGET;
	return 0;
}

static void gc_work(void *arg)
{
	struct cache_work *w = arg;
	if (gc_target(w) == 0)
		store_collect_images(w->store, &w->gc, &w->rep, &w->err);
}

static void gc_done(void *arg)
{
	struct cache_work *w = arg;
	if (cache_failed(w))
		return;
	const struct store_gc_report *r = &w->rep;
	Alps__GcImage *imgs = xcalloc(r->nitems + 1, sizeof(*imgs));
	Alps__GcImage **ptrs = xcalloc(r->nitems + 1, sizeof(*ptrs));
	for (size_t i = 0; i < r->nitems; i++) {
		alps__gc_image__init(&imgs[i]);
		imgs[i].name = r->items[i].name;
		imgs[i].digest = r->items[i].digest;
		imgs[i].last_used_ms = r->items[i].last_used_ms;
		imgs[i].bytes_freed = r->items[i].bytes;
		ptrs[i] = &imgs[i];
	}
	Alps__GcReply gr = ALPS__GC_REPLY__INIT;
	gr.dry_run = w->gc.dry_run;
	gr.used_before = r->used_before;
	gr.used_after = r->used_after;
	gr.target = w->gc.target == STORE_NO_TARGET ? 0 : w->gc.target;
	gr.images_removed = r->removed.images;
	gr.layers_removed = r->removed.layers;
	gr.bytes_freed = r->removed.bytes_freed;
	gr.images = ptrs;
	gr.n_images = r->nitems;
	gr.kept = r->kept ? r->kept : (char *)"";
	if (!w->gc.dry_run)
		log_event(LOG_LVL_NOTICE, "evict", "trigger", "gc", "uid", LOG_U64(w->uid), "images",
			  LOG_U64(r->removed.images), "layers", LOG_U64(r->removed.layers), "bytes",
			  LOG_U64(r->removed.bytes_freed), "result", "ok", NULL);
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_GC_REPLY;
	resp.gc_reply = &gr;
	request_finish(w->rq, &resp);
	free(ptrs);
	free(imgs);
	cache_work_free(w);
}

static int op_gc(struct request *rq, const Alps__Request *req, alps_error **err)
{
	const Alps__GcRequest *g = req->gc;
	if (!g)
		return alps_fail(err, ALPS_E_INVALID, "gc: no request");
	if (g->older_than_s > UINT64_MAX / 1000)
		return alps_fail(err, ALPS_E_INVALID, "gc: older-than is out of range");
	struct cache_work *w = xzalloc(sizeof(*w));
	w->gc.dry_run = g->dry_run;
	w->gc.older_than_ms = g->older_than_s * 1000;
	w->has_max_size = g->has_max_size;
	w->target = g->max_size;
	return cache_submit(rq, w, gc_work, gc_done, err);
}

const struct handler handler_gc = {
	ALPS__REQUEST__OP_GC, "gc", PRIV_ADMIN, op_gc,
};

/* ---- pin, unpin ---- */

static void pin_work(void *arg)
{
	struct cache_work *w = arg;
	store_image_pin_named(w->store, w->key, w->pinned, &w->digest, &w->err);
}

static void pin_done(void *arg)
{
	struct cache_work *w = arg;
	if (cache_failed(w))
		return;
	_cleanup_free_ char *esc = log_escape(w->key, 300);
	log_notice("%s %s (%s) by uid %u", w->pinned ? "pin" : "unpin", esc, w->digest,
		   (unsigned)w->uid);
	Alps__PinReply pr = ALPS__PIN_REPLY__INIT;
	pr.digest = w->digest;
	pr.pinned = w->pinned;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_PIN_REPLY;
	resp.pin_reply = &pr;
	request_finish(w->rq, &resp);
	cache_work_free(w);
}

/* A digest or digest prefix as it is; a reference in its canonical form.
 * Caller frees. */
static char *cache_key(struct daemon *d, const char *text, alps_error **err)
{
	size_t hex = strspn(text, "0123456789abcdef");
	if (str_has_prefix(text, "sha256:") || str_has_prefix(text, "sha512:") ||
	    (hex >= 12 && text[hex] == '\0'))
		return xstrdup(text);
	struct image_ref ref;
	if (ref_parse(text, d->cfg->default_registry, &ref, err) < 0)
		return NULL;
	char *s = ref_format(&ref);
	ref_free(&ref);
	return s;
}

static int op_pin(struct request *rq, const Alps__Request *req, alps_error **err)
{
	const Alps__PinRequest *p = req->pin;
	const char *op = p && p->pinned ? "pin" : "unpin";
	if (!p || !p->reference || !*p->reference)
		return alps_fail(err, ALPS_E_INVALID, "%s: no image given", op);
	_cleanup_free_ char *key = cache_key(request_daemon(rq), p->reference, err);
	if (!key)
		return alps_error_prefix(err, "%s", op);
	struct cache_work *w = xzalloc(sizeof(*w));
	w->key = steal_pointer(&key);
	w->pinned = p->pinned;
	return cache_submit(rq, w, pin_work, pin_done, err);
}

/* pin and unpin (PinRequest.pinned). */
const struct handler handler_pin = {
	ALPS__REQUEST__OP_PIN, "pin", PRIV_ADMIN, op_pin,
};

/* ---- df ---- */

static int df_collect(struct cache_work *w)
{
	struct store *s = w->store;
	struct store_gc_opts dry = { .target = 0, .dry_run = true };
	if (cache_limits(s, &w->policy, &w->limit, &w->low_water, &w->err) < 0 ||
	    store_fs_usage(s, &w->fs_size, &w->fs_avail, &w->err) < 0 ||
	    store_df(s, &w->usage, &w->err) < 0 ||
	    store_stat_get(s, "layer_hits", &w->hits, &w->err) < 0 ||
	    store_stat_get(s, "layer_misses", &w->misses, &w->err) < 0 ||
	    store_collect_images(s, &dry, &w->rep, &w->err) < 0)
		return -1;
	w->reclaimable = w->rep.removed.bytes_freed;
	w->reserved = store_reserved(s);
	return 0;
}

static void df_work(void *arg)
{
	df_collect(arg);
}

static void df_done(void *arg)
{
	struct cache_work *w = arg;
	if (cache_failed(w))
		return;
	const struct store_usage *u = &w->usage;
	Alps__DfReply dr = ALPS__DF_REPLY__INIT;
	dr.store_path = (char *)store_dir(w->store);
	dr.store_bytes = u->total_bytes;
	dr.limit = w->limit;
	dr.low_water = w->limit ? w->low_water : 0;
	dr.fs_size = w->fs_size;
	dr.fs_avail = w->fs_avail;
	dr.images = u->images;
	dr.pinned_images = u->pinned_images;
	dr.tags = u->tags;
	dr.layers = u->layers;
	dr.orphan_layers = u->orphan_layers;
	dr.orphan_bytes = u->orphan_bytes;
	dr.shared_bytes = u->shared_bytes;
	dr.reclaimable_bytes = w->reclaimable;
	dr.layer_hits = w->hits < 0 ? 0 : (uint64_t)w->hits;
	dr.layer_misses = w->misses < 0 ? 0 : (uint64_t)w->misses;
	dr.layers_deduplicated = u->aliases;
	dr.pulls_in_flight = w->pulls;
	dr.reserved_bytes = w->reserved;
	dr.jobs = u->jobs;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_DF_REPLY;
	resp.df_reply = &dr;
	request_finish(w->rq, &resp);
	cache_work_free(w);
}

/* Open to every user: sizes and counts, no names. */
static int op_df(struct request *rq, const Alps__Request *req, alps_error **err)
{
	(void)req;
	struct cache_work *w = xzalloc(sizeof(*w));
	w->pulls = (uint32_t)puller_active(request_daemon(rq)->puller);
	return cache_submit(rq, w, df_work, df_done, err);
}

const struct handler handler_df = {
	ALPS__REQUEST__OP_DF, "df", PRIV_USER, op_df,
};

/* ---- verify ---- */

static void verify_work(void *arg)
{
	struct cache_work *w = arg;
	struct store_image *img = NULL;
	if (w->key && store_image_find(w->store, w->key, STORE_UID_ANY, &img, &w->err) < 0)
		return;
	store_layers_check(w->store, img ? img->digest : NULL, &w->check, &w->err);
	store_image_free(img);
}

static void verify_done(void *arg)
{
	struct cache_work *w = arg;
	if (cache_failed(w))
		return;
	const struct store_check_report *c = &w->check;
	Alps__LayerProblem *lp = xcalloc(c->nbad + 1, sizeof(*lp));
	Alps__LayerProblem **lpp = xcalloc(c->nbad + 1, sizeof(*lpp));
	for (size_t i = 0; i < c->nbad; i++) {
		alps__layer_problem__init(&lp[i]);
		lp[i].digest = c->bad[i].digest;
		lp[i].problem = c->bad[i].problem;
		lpp[i] = &lp[i];
	}
	log_notice("verify by uid %u: %zu layer(s) checked, %zu damaged", (unsigned)w->uid,
		   c->checked, c->nbad);
	Alps__VerifyReply vr = ALPS__VERIFY_REPLY__INIT;
	vr.layers_checked = c->checked;
	vr.bytes_checked = c->bytes;
	vr.checksums_recorded = c->recorded;
	vr.damaged = lpp;
	vr.n_damaged = c->nbad;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_VERIFY_REPLY;
	resp.verify_reply = &vr;
	request_finish(w->rq, &resp);
	free(lpp);
	free(lp);
	cache_work_free(w);
}

static int op_verify(struct request *rq, const Alps__Request *req, alps_error **err)
{
	const Alps__VerifyRequest *v = req->verify;
	_cleanup_free_ char *key = NULL;
	if (v && v->reference && *v->reference) {
		key = cache_key(request_daemon(rq), v->reference, err);
		if (!key)
			return alps_error_prefix(err, "verify");
	}
	struct cache_work *w = xzalloc(sizeof(*w));
	w->key = steal_pointer(&key);
	return cache_submit(rq, w, verify_work, verify_done, err);
}

/* Reads every layer: an admin's decision. */
const struct handler handler_verify = {
	ALPS__REQUEST__OP_VERIFY, "verify", PRIV_ADMIN, op_verify,
};

/* ---- the timer ---- */

static struct {
	struct daemon *d;
	struct event *ev;
	bool running;           /* a collection is under way */
} timer;

static void timer_arm(void)
{
	int64_t s = timer.d->cfg->gc_interval_s;
	/* A reload may turn it on: look again every minute. */
	struct timeval tv = { .tv_sec = s > 0 ? s : 60 };
	event_add(timer.ev, &tv);
}

/* Over the limit (pulls that missed their admission, a lowered limit): down
 * to the low-water mark.  Under it, nothing: orphan layers stay for the
 * pull that resumes them until a collection needs their room. */
static void timer_work(void *arg)
{
	struct cache_work *w = arg;
	uint64_t limit = 0, low = 0;
	struct store_usage u;
	if (cache_limits(w->store, &w->policy, &limit, &low, &w->err) < 0 || limit == 0 ||
	    store_df(w->store, &u, &w->err) < 0 || u.total_bytes <= limit)
		return;
	w->gc.target = low;
	store_collect_images(w->store, &w->gc, &w->rep, &w->err);
}

static void timer_done(void *arg)
{
	struct cache_work *w = arg;
	if (w->err)
		log_warn("timed gc: %s", w->err->msg);
	else if (w->rep.removed.images || w->rep.removed.layers)
		log_event(LOG_LVL_NOTICE, "evict", "trigger", "timer", "images",
			  LOG_U64(w->rep.removed.images), "layers", LOG_U64(w->rep.removed.layers),
			  "bytes", LOG_U64(w->rep.removed.bytes_freed), "result", "ok", NULL);
	cache_work_free(w);
	timer.running = false;
	if (timer.ev)
		timer_arm();
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (timer.running || timer.d->cfg->gc_interval_s == 0) {
		timer_arm();
		return;
	}
	struct cache_work *w = xzalloc(sizeof(*w));
	w->store = timer.d->store;
	cache_policy_from(&w->policy, timer.d->cfg);
	alps_error *err = NULL;
	if (work_submit(timer.d, timer_work, timer_done, w, &err) < 0) {
		log_warn("timed gc: %s", err->msg);
		alps_error_free(err);
		cache_work_free(w);
		timer_arm();
		return;
	}
	timer.running = true;
}

void cache_start(struct daemon *d)
{
	timer.d = d;
	timer.ev = evtimer_new(d->base, on_timer, NULL);
	timer_arm();
}

void cache_stop(void)
{
	if (timer.ev)
		event_free(timer.ev);
	timer.ev = NULL;
}
