/* pull.c: see pull.h. */
#include <config.h>

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/ref.h"
#include "common/util.h"
#include "daemon/server/metrics.h"
#include "daemon/store/policy.h"
#include "daemon/settings.h"
#include "daemon/image/fresh.h"
#include "daemon/image/pull.h"
#include "daemon/image/pull_space.h"
#include "daemon/image/registry.h"
#include "daemon/squash/squash.h"
#include "daemon/store/store.h"
#include "daemon/server/work.h"

#define PIPE_BYTES (8u << 20)          /* HTTP -> converter buffer per layer */
#define TICK_MS 250                     /* progress to waiters */
#define MAX_NOTICES 32                  /* pending between two ticks; more are logged only */

struct waiter {
	struct waiter *next;
	const struct pull_waiter_ops *ops;
	void *arg;
};

struct layer_job {
	struct pull *pl;
	const struct layer *layer;      /* in pl->img.manifest */
	const char *diff_id;            /* in pl->img.config */
	struct pull_layer_status st;    /* under pl->lock */
	bool held;                      /* store_layer_hold() taken */
};

/* What a pull needs from the configuration, copied at start: a reload
 * frees the config a running thread would otherwise read. */
struct pull_opts {
	char *compressor;
	int level;
	unsigned workers;
	uint64_t max_entries, max_tar_bytes;
	unsigned parallel;
	struct cache_policy policy;
};

struct pull {
	struct puller *p;
	struct pull *next;
	char *key;                      /* single-flight key */
	char *reference;                /* canonical */
	struct image_ref ref;
	struct platform platform;
	bool has_platform;
	int64_t owner;                  /* STORE_PUBLIC or the uid with private creds */
	int64_t uid;                    /* who asked for the pull */
	char *origin;                   /* "registry/repository", for access rows */
	struct registry_session *session;
	struct pull_opts opts;
	bool no_refresh;
	pthread_t thread;
	bool thread_started;
	struct event *ev_done, *ev_tick;
	struct waiter *waiters;         /* loop thread only */

	pthread_mutex_t lock;           /* guards what follows */
	enum pull_phase phase;
	struct layer_job *jobs;
	size_t njobs, next_job;
	uint64_t last_done, last_tick_ms, rate_bps;
	alps_error *err;                /* the first failure */
	char **notices;                 /* for the next snapshot */
	size_t nnotices;

	size_t tasks_left;              /* layer tasks on the pool not yet ended */
	pthread_cond_t tasks_done;      /* tasks_left reached 0 */
	struct pull_admission adm;      /* pull thread: layers held, bytes reserved */

	/* Written by the pull thread before ev_done, read after. */
	struct resolved_image img;
	uint32_t fetched;
	uint64_t size;
	struct image_fresh fresh;       /* the tag as the store had it */
	const char *refresh;            /* pull_result.refresh */
	bool from_cache;                /* nothing to pull: fresh is the result */
};

struct inflight {
	struct inflight *next;
	char *digest;
};

struct puller {
	struct event_base *base;
	struct store *store;
	struct work_pool *pool;
	struct pull *pulls;             /* loop thread only */
	size_t npulls;
	atomic_bool stopping;
	sem_t slots;                    /* layers converting at once, all pulls */
	pthread_mutex_t lock;           /* guards inflight */
	pthread_cond_t cond;
	struct inflight *inflight;      /* layers being fetched by some pull */
};

/* ---- layer single flight ---- */

/* true: the caller owns fetching digest; false: another pull had it and
 * has finished (or we are stopping): look in the store again. */
static bool layer_claim(struct puller *p, const char *digest)
{
	pthread_mutex_lock(&p->lock);
	bool waited = false;
	for (;;) {
		struct inflight *f = p->inflight;
		while (f && strcmp(f->digest, digest) != 0)
			f = f->next;
		if (!f)
			break;
		waited = true;
		pthread_cond_wait(&p->cond, &p->lock);
	}
	if (!waited) {
		struct inflight *f = xzalloc(sizeof(*f));
		f->digest = xstrdup(digest);
		f->next = p->inflight;
		p->inflight = f;
	}
	pthread_mutex_unlock(&p->lock);
	return !waited;
}

static void layer_unclaim(struct puller *p, const char *digest)
{
	pthread_mutex_lock(&p->lock);
	for (struct inflight **pp = &p->inflight; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->digest, digest) == 0) {
			struct inflight *f = *pp;
			*pp = f->next;
			free(f->digest);
			free(f);
			break;
		}
	}
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* ---- one layer ---- */

static const char *const layer_state_names[] = {
	[PULL_LAYER_WAITING] = "waiting", [PULL_LAYER_DOWNLOADING] = "downloading",
	[PULL_LAYER_VERIFYING] = "verifying", [PULL_LAYER_CACHED] = "cached",
	[PULL_LAYER_DONE] = "done", [PULL_LAYER_FAILED] = "failed",
};

static const char *const phase_names[] = {
	[PULL_RESOLVING] = "resolving", [PULL_LAYERS] = "layers", [PULL_COMMITTING] = "committing",
};

const char *pull_layer_state_name(enum pull_layer_state s)
{
	return (unsigned)s < ARRAY_SIZE(layer_state_names) ? layer_state_names[s] : "?";
}

const char *pull_phase_name(enum pull_phase p)
{
	return (unsigned)p < ARRAY_SIZE(phase_names) ? phase_names[p] : "?";
}

static void job_set(struct pull *pl, struct layer_job *job, enum pull_layer_state state)
{
	pthread_mutex_lock(&pl->lock);
	job->st.state = state;
	pthread_mutex_unlock(&pl->lock);
}

struct fetch_ctx {
	struct pull *pl;
	struct layer_job *job;
	struct chanbuf *cb;
	alps_error *err;                /* the fetch's own failure */
};

static int fetch_sink(void *arg, const void *data, size_t len)
{
	struct fetch_ctx *fc = arg;
	if (atomic_load(&fc->pl->p->stopping))
		return -1;
	alps_error *err = NULL;
	if (chanbuf_write(fc->cb, data, len, &err) < 0) {
		alps_error_free(err);   /* the converter gave up: it has the cause */
		return -1;
	}
	pthread_mutex_lock(&fc->pl->lock);
	fc->job->st.done += len;
	pthread_mutex_unlock(&fc->pl->lock);
	return 0;
}

static void *fetch_main(void *arg)
{
	struct fetch_ctx *fc = arg;
	alps_error *err = NULL;
	if (registry_fetch_layer(fc->pl->session, &fc->job->layer->desc, fetch_sink, fc, &err) < 0) {
		fc->err = err;
		alps_error *copy = NULL;
		alps_fail(&copy, err->code, "%s", err->msg);
		chanbuf_close(fc->cb, copy);
	} else {
		chanbuf_close(fc->cb, NULL);
	}
	return NULL;
}

static int check_diff_id(const struct layer_job *job, const struct squash_result *res,
			 alps_error **err)
{
	if (job->diff_id && strcmp(job->diff_id, res->diff_id) != 0)
		return alps_fail(err, ALPS_E_INTEGRITY,
				 "layer %s: its uncompressed content is %s, but the image config "
				 "says %s", job->layer->desc.digest, res->diff_id, job->diff_id);
	return 0;
}

/* The compressor threads a layer asks for: its share of the pool among the
 * layers of its pull still to do.  A layer that took them all would make
 * the next ones wait for the budget (libsquashfs's workers are fixed for
 * a whole layer), and their downloads with them. */
static unsigned layer_share(struct pull *pl)
{
	unsigned pool = work_pool_size(pl->p->pool);
	pthread_mutex_lock(&pl->lock);
	size_t left = pl->tasks_left;
	pthread_mutex_unlock(&pl->lock);
	unsigned ways = left < pool ? (unsigned)left : pool;
	unsigned share = ways ? pool / ways : pool;
	share = share < pl->opts.workers ? share : pl->opts.workers;
	return share ? share : 1;
}

/* Stream one layer from the registry into a squashfs file and commit it. */
static int fetch_convert(struct pull *pl, struct layer_job *job, alps_error **err)
{
	struct store *st = pl->p->store;
	const struct layer *l = job->layer;
	metrics_conversion_begin();
	_cleanup_free_ char *tmp = store_tmp_path(st);
	struct fetch_ctx fc = { .pl = pl, .job = job, .cb = chanbuf_new(PIPE_BYTES) };
	pthread_t ft;
	if (pthread_create(&ft, NULL, fetch_main, &fc) != 0) {
		chanbuf_unref(fc.cb);
		return alps_fail_errno(err, "cannot start a download thread");
	}
	job_set(pl, job, PULL_LAYER_DOWNLOADING);
	struct squash_opts so = {
		.compressor = pl->opts.compressor, .level = pl->opts.level,
		.threads = layer_share(pl), .max_entries = pl->opts.max_entries,
		.max_tar_bytes = pl->opts.max_tar_bytes,
		.budget = work_pool_budget(pl->p->pool),
	};
	struct squash_result res;
	int rc = -1;
	struct stream *s = stream_decompress(chanbuf_stream(fc.cb), l->compression, err);
	if (s) {
		rc = squash_convert(s, tmp, &so, &res, err);
		stream_close(s);        /* aborts the pipe: a fetch still going stops */
	}
	pthread_join(ft, NULL);
	chanbuf_unref(fc.cb);
	if (fc.err && fc.err->code == ALPS_E_CANCELLED && rc < 0 && *err) {
		/* The converter stopped the download: its error is the cause
		 * (a full disk), not "stopped by its consumer". */
		alps_error_free(fc.err);
	} else if (fc.err) {
		/* The download's own error is the cause (a digest mismatch is
		 * found at the very end, after the tar may have looked fine). */
		alps_error_free(*err);
		*err = fc.err;
		rc = -1;
	}
	if (rc == 0)
		rc = check_diff_id(job, &res, err);
	if (rc < 0) {
		unlink(tmp);
		return alps_error_prefix(err, "layer %s", l->desc.digest);
	}
	struct store_layer_info info = {
		.digest = l->desc.digest, .diff_id = res.diff_id,
		.media_type = l->desc.media_type, .compressed_size = l->desc.size,
	};
	if (store_layer_commit(st, tmp, &info, NULL, err) < 0 ||
	    store_layer_allow(st, l->desc.digest, pl->owner, err) < 0)
		return -1;
	metrics_conversion_end(l->desc.size, res.out_bytes);
	log_info("layer %s: %llu bytes -> %llu bytes squashfs, %llu entries",
		 l->desc.digest, (unsigned long long)l->desc.size,
		 (unsigned long long)res.out_bytes, (unsigned long long)res.entries);
	return 0;
}

static int count_sink(void *arg, const void *data, size_t len)
{
	struct fetch_ctx *fc = arg;
	(void)data;
	if (atomic_load(&fc->pl->p->stopping))
		return -1;
	pthread_mutex_lock(&fc->pl->lock);
	fc->job->st.done += len;
	pthread_mutex_unlock(&fc->pl->lock);
	return 0;
}

/* The store has the layer, but the puller has not shown they may have it:
 * knowing a digest is not enough (it shows in mount tables).  Download it
 * from the pull's registry with the puller's credentials; its digest
 * verified, that proves access, and the bytes (the same as the store's)
 * are dropped. */
static int prove_access(struct pull *pl, struct layer_job *job, alps_error **err)
{
	const struct layer *l = job->layer;
	struct fetch_ctx fc = { .pl = pl, .job = job };
	log_info("layer %s: in the store, but uid %lld has not fetched it: fetching it again to "
		 "prove access", l->desc.digest, (long long)pl->uid);
	job_set(pl, job, PULL_LAYER_VERIFYING);
	if (registry_fetch_layer(pl->session, &l->desc, count_sink, &fc, err) < 0)
		return alps_error_prefix(err, "layer %s", l->desc.digest);
	return store_layer_allow(pl->p->store, l->desc.digest, pl->owner, err);
}

/* A layer the store has serves this pull only if its content is what the
 * image config says and the puller may have it (see store.h, "Layer
 * reuse").  *proved: it was downloaded to show that. */
static int cached_check(struct pull *pl, struct layer_job *job, const struct store_layer *have,
			bool *proved, alps_error **err)
{
	const char *digest = job->layer->desc.digest;
	if (job->diff_id && have->diff_id && strcmp(job->diff_id, have->diff_id) != 0)
		return alps_fail(err, ALPS_E_INTEGRITY,
				 "layer %s: its uncompressed content is %s, but the image config "
				 "says %s", digest, have->diff_id, job->diff_id);
	bool ok = false;
	if (store_layer_usable(pl->p->store, digest, pl->uid, &ok, err) < 0)
		return -1;
	if (ok)
		return 0;
	*proved = true;
	return prove_access(pl, job, err);
}

/* Another compression of a layer the store has (the image config's
 * diff_id) needs no download: 1 when the digest is now its alias. */
static int layer_dedup(struct pull *pl, struct layer_job *job, alps_error **err)
{
	const struct descriptor *d = &job->layer->desc;
	struct store_layer_info info = {
		.digest = d->digest, .diff_id = job->diff_id, .media_type = d->media_type,
		.compressed_size = d->size,
	};
	return store_layer_dedup(pl->p->store, &info, pl->owner, err);
}

/* The layer is there, or made by us or by another pull meanwhile.  The
 * hold comes first, so that a removal or gc cannot take the layer between
 * finding it and the image's commit. */
static int layer_run(struct pull *pl, struct layer_job *job, bool *fetched, alps_error **err)
{
	struct puller *p = pl->p;
	const char *digest = job->layer->desc.digest;
	if (store_layer_hold(p->store, digest, err) < 0)
		return -1;
	job->held = true;
	for (;;) {
		if (atomic_load(&p->stopping))
			return alps_fail(err, ALPS_E_CANCELLED, "alpsd is stopping");
		struct store_layer *have = NULL;
		if (store_layer_get(p->store, digest, &have, err) == 0) {
			int rc = cached_check(pl, job, have, fetched, err);
			store_layer_free(have);
			return rc;
		}
		if ((*err)->code != ALPS_E_NOT_FOUND)
			return -1;
		alps_error_free(*err);
		*err = NULL;
		int dup = layer_dedup(pl, job, err);
		if (dup < 0)
			return -1;
		if (dup == 0 && layer_claim(p, digest))
			break;
	}
	int rc = fetch_convert(pl, job, err);
	layer_unclaim(p, digest);
	*fetched = rc == 0;
	return rc;
}

/* One layer, a task on the daemon's pool.  It waits only for its own
 * download thread, a running conversion of the same layer (layer_claim)
 * and the slots held by running conversions: never for a queued task. */
static void layer_task(void *arg)
{
	struct layer_job *job = arg;
	struct pull *pl = job->pl;
	pthread_mutex_lock(&pl->lock);
	bool skip = pl->err != NULL;
	pthread_mutex_unlock(&pl->lock);
	alps_error *err = NULL;
	bool fetched = false;
	int rc = 0;
	if (!skip) {
		sem_wait(&pl->p->slots);
		rc = layer_run(pl, job, &fetched, &err);
		sem_post(&pl->p->slots);
	}
	pthread_mutex_lock(&pl->lock);
	if (skip) {
		/* another layer failed: this one stays "waiting" */
	} else if (rc < 0) {
		job->st.state = PULL_LAYER_FAILED;
		if (!pl->err)
			pl->err = err;
		else
			alps_error_free(err);
	} else {
		job->st.state = fetched ? PULL_LAYER_DONE : PULL_LAYER_CACHED;
		if (!fetched)
			job->st.done = job->st.total;
		pl->fetched += fetched;
	}
	if (--pl->tasks_left == 0)
		pthread_cond_signal(&pl->tasks_done);
	pthread_mutex_unlock(&pl->lock);
}

/* ---- the pull thread ---- */

/* Every layer a task on the pool; the pull thread (not a pool thread)
 * waits for them.  The pool's size and store.max_parallel_layers bound how
 * many convert at once across all pulls. */
static int pull_layers(struct pull *pl, alps_error **err)
{
	const struct manifest *m = &pl->img.manifest;
	struct layer_job *jobs = xcalloc(m->nlayers, sizeof(*jobs));
	for (size_t i = 0; i < m->nlayers; i++) {
		jobs[i].pl = pl;
		jobs[i].layer = &m->layers[i];
		jobs[i].diff_id = i < pl->img.config.ndiff_ids ? pl->img.config.diff_ids[i] : NULL;
		snprintf(jobs[i].st.digest, sizeof(jobs[i].st.digest), "%s", m->layers[i].desc.digest);
		jobs[i].st.total = m->layers[i].desc.size;
		jobs[i].st.state = PULL_LAYER_WAITING;
		pl->size += m->layers[i].desc.size;
	}
	pthread_mutex_lock(&pl->lock);
	pl->jobs = jobs;
	pl->njobs = m->nlayers;
	pl->phase = PULL_LAYERS;
	pl->tasks_left = m->nlayers;
	pthread_mutex_unlock(&pl->lock);
	for (size_t i = 0; i < m->nlayers; i++)
		work_pool_run(pl->p->pool, layer_task, &jobs[i]);
	pthread_mutex_lock(&pl->lock);
	while (pl->tasks_left > 0)
		pthread_cond_wait(&pl->tasks_done, &pl->lock);
	alps_error *e = pl->err;
	pl->err = NULL;
	pthread_mutex_unlock(&pl->lock);
	if (e) {
		*err = e;
		return -1;
	}
	return 0;
}

static int pull_commit(struct pull *pl, alps_error **err)
{
	const struct resolved_image *img = &pl->img;
	pthread_mutex_lock(&pl->lock);
	pl->phase = PULL_COMMITTING;
	pthread_mutex_unlock(&pl->lock);
	_cleanup_free_ char *platform = manifest_platform_format(&img->platform);
	_cleanup_free_ char *manifest = xstrndup(img->manifest_bytes, img->manifest_len);
	_cleanup_free_ char *cfgjson = xstrndup(img->config_bytes, img->config_len);
	const char **digests = xcalloc(img->manifest.nlayers ? img->manifest.nlayers : 1,
				       sizeof(char *));
	for (size_t i = 0; i < img->manifest.nlayers; i++)
		digests[i] = img->manifest.layers[i].desc.digest;
	struct store_image_rec rec = {
		.digest = img->manifest_digest, .config_digest = img->manifest.config.digest,
		.platform = platform, .manifest_json = manifest, .config_json = cfgjson,
	};
	/* Only a plain tag is pointed at what was pulled.  tag@digest (a job
	 * pinned at submission while the tag may have moved since) pulls by
	 * digest and leaves the node's tag alone, as docker does: else a
	 * pinned job would roll the tag back for everyone else on the node. */
	_cleanup_free_ char *tag = pl->ref.tag && !pl->ref.digest ? ref_format(&pl->ref) : NULL;
	struct store_origin from = { .origin = pl->origin, .uid = pl->uid,
				     .private = pl->owner != STORE_PUBLIC };
	int rc = store_image_commit(pl->p->store, &rec, digests, img->manifest.nlayers, tag,
				    &from, err);
	free(digests);
	return rc;
}

static void pull_release_holds(struct pull *pl)
{
	for (size_t i = 0; i < pl->njobs; i++)
		if (pl->jobs[i].held)
			store_layer_release(pl->p->store, pl->jobs[i].layer->desc.digest);
}

/* A line for the user, sent with the next progress snapshot. */
static void pull_notice(void *arg, const char *msg)
{
	struct pull *pl = arg;
	_cleanup_free_ char *esc = log_escape(msg, 400);
	log_info("pull %s: %s", pl->reference, esc);
	pthread_mutex_lock(&pl->lock);
	if (pl->nnotices < MAX_NOTICES) {
		pl->notices = xrealloc(pl->notices, (pl->nnotices + 1) * sizeof(char *));
		pl->notices[pl->nnotices++] = xstrdup(msg);
	}
	pthread_mutex_unlock(&pl->lock);
}

/* A tag the store has: served from the store with --no-refresh or when the
 * registry still serves it (a HEAD, no download); else the pull goes on
 * and says the tag moved. */
static int pull_refresh(struct pull *pl, alps_error **err)
{
	pl->refresh = "new";
	if (!pl->ref.tag || pl->ref.digest)
		return 0;
	int r = fresh_cached(pl->p->store, pl->reference, pl->uid, &pl->fresh, err);
	if (r <= 0)
		return r;
	_cleanup_free_ char *want = pl->has_platform ? manifest_platform_format(&pl->platform) : NULL;
	if ((want && strcmp(want, pl->fresh.platform) != 0) || pl->fresh.damaged)
		return 0;
	_cleanup_free_ char *now = NULL;
	if (!pl->no_refresh && fresh_current(pl->session, &pl->fresh, &now, err) < 0)
		return alps_error_prefix(err, "checking the cached %s (pull --no-refresh uses it "
					 "as it is)", pl->reference);
	pl->from_cache = pl->no_refresh || strcmp(now, pl->fresh.digest) == 0;
	pl->refresh = pl->no_refresh ? "not checked" : pl->from_cache ? "unchanged" : "changed";
	if (!pl->from_cache) {
		_cleanup_free_ char *msg = xasprintf("%s changed: %s -> %s", pl->reference,
						     pl->fresh.digest, now);
		pull_notice(pl, msg);
	}
	return 0;
}

static void *pull_main(void *arg)
{
	struct pull *pl = arg;
	alps_error *err = NULL;
	int rc = pull_refresh(pl, &err);
	if (rc == 0 && pl->from_cache) {
		pl->size = pl->fresh.size;
		alps_error *e = NULL;  /* for alps df; a failure to count fails no pull */
		if (store_stat_bump(pl->p->store, "layer_hits", pl->fresh.layers, &e) < 0) {
			log_warn("%s", e->msg);
			alps_error_free(e);
		}
		goto out;
	}
	if (rc == 0)
		rc = registry_resolve(pl->session, pl->has_platform ? &pl->platform : NULL,
				      &pl->img, &err);
	if (rc == 0)
		rc = pull_admit(pl->p->store, &pl->img.manifest, &pl->opts.policy, &pl->adm, &err);
	if (rc == 0)
		rc = pull_layers(pl, &err);
	if (rc == 0)
		rc = pull_commit(pl, &err);
	pull_release_holds(pl);
	pull_admit_end(pl->p->store, &pl->img.manifest, &pl->adm);
out:
	if (rc < 0) {
		pull_space_explain(pl->p->store, pl->adm.need, &err);
		alps_error_prefix(&err, "pulling %s", pl->reference);
		pthread_mutex_lock(&pl->lock);
		pl->err = err;
		pthread_mutex_unlock(&pl->lock);
	}
	/* event_active() is thread-safe: the loop was made with pthreads. */
	event_active(pl->ev_done, EV_TIMEOUT, 0);
	return NULL;
}

/* ---- on the loop ---- */

static void pull_snapshot_send(struct pull *pl)
{
	pthread_mutex_lock(&pl->lock);
	size_t n = pl->njobs;
	struct pull_layer_status *ls = xcalloc(n ? n : 1, sizeof(*ls));
	uint64_t done = 0, total = 0;
	for (size_t i = 0; i < n; i++) {
		ls[i] = pl->jobs[i].st;
		if (ls[i].state != PULL_LAYER_CACHED) {
			done += ls[i].done;
			total += ls[i].total;
		}
	}
	enum pull_phase phase = pl->phase;
	uint64_t now = now_monotonic_ms();
	if (pl->last_tick_ms && now > pl->last_tick_ms) {
		uint64_t inst = (done - pl->last_done) * 1000 / (now - pl->last_tick_ms);
		pl->rate_bps = pl->rate_bps ? (pl->rate_bps * 3 + inst) / 4 : inst;
	}
	pl->last_tick_ms = now;
	pl->last_done = done;
	uint64_t rate = pl->rate_bps;
	char **notices = steal_pointer(&pl->notices);
	size_t nnotices = pl->nnotices;
	pl->nnotices = 0;
	pthread_mutex_unlock(&pl->lock);

	struct pull_status st = {
		.reference = pl->reference, .phase = phase, .layers = ls, .nlayers = n,
		.done = done, .total = total, .rate_bps = rate,
		.eta_ms = rate && total > done ? (total - done) * 1000 / rate : 0,
		.notices = notices, .nnotices = nnotices,
	};
	for (struct waiter *w = pl->waiters; w; w = w->next)
		if (w->ops->progress)
			w->ops->progress(w->arg, &st);
	free(ls);
	for (size_t i = 0; i < nnotices; i++)
		free(notices[i]);
	free(notices);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	pull_snapshot_send(arg);
}

static void pull_free(struct pull *pl)
{
	if (pl->ev_done)
		event_free(pl->ev_done);
	if (pl->ev_tick)
		event_free(pl->ev_tick);
	registry_resolved_free(&pl->img);
	registry_session_free(pl->session);
	ref_free(&pl->ref);
	if (pl->has_platform)
		manifest_platform_free(&pl->platform);
	free(pl->jobs);
	free(pl->key);
	free(pl->reference);
	free(pl->origin);
	free(pl->opts.compressor);
	fresh_clear(&pl->fresh);
	for (size_t i = 0; i < pl->nnotices; i++)
		free(pl->notices[i]);
	free(pl->notices);
	alps_error_free(pl->err);
	pthread_cond_destroy(&pl->tasks_done);
	pthread_mutex_destroy(&pl->lock);
	free(pl);
}

static void pull_unlink(struct puller *p, struct pull *pl)
{
	for (struct pull **pp = &p->pulls; *pp; pp = &(*pp)->next) {
		if (*pp == pl) {
			*pp = pl->next;
			p->npulls--;
			return;
		}
	}
}

/* Tell every waiter, then free.  err NULL: success. */
static void pull_finish(struct pull *pl, const alps_error *err)
{
	struct pull_result res = {
		.reference = pl->reference, .digest = pl->img.manifest_digest,
		.layers = (uint32_t)pl->img.manifest.nlayers, .fetched = pl->fetched,
		.size = pl->size, .refresh = pl->refresh,
		.previous = pl->refresh && strcmp(pl->refresh, "changed") == 0 ? pl->fresh.digest
									 : NULL,
	};
	if (pl->from_cache) {
		res.digest = pl->fresh.digest;
		res.layers = pl->fresh.layers;
	}
	struct waiter *w = pl->waiters;
	pl->waiters = NULL;
	while (w) {
		struct waiter *next = w->next;
		w->ops->done(w->arg, err ? NULL : &res, err);
		free(w);
		w = next;
	}
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct pull *pl = arg;
	pthread_join(pl->thread, NULL);
	pl->thread_started = false;
	pull_unlink(pl->p, pl);
	metrics_pull(pl->err == NULL);
	if (pl->err)
		log_warn("%s", pl->err->msg);
	else if (pl->from_cache)
		log_info("pull %s: the store's %s (%s)", pl->reference, pl->fresh.digest,
			 pl->refresh);
	else
		log_info("pulled %s (%s): %u layers, %u fetched", pl->reference,
			 pl->img.manifest_digest, (unsigned)pl->img.manifest.nlayers,
			 (unsigned)pl->fetched);
	pull_snapshot_send(pl);
	pull_finish(pl, pl->err);
	pull_free(pl);
}

/* A re-pull of an image the store has needs no config download: the
 * manifest (fetched to see where the tag points) names it.  Only when the
 * puller may use that image: manifest bytes are easy to re-serve, and the
 * config holds the image's ENV. */
static int config_from_store(void *arg, const char *manifest_digest, const char *config_digest,
			     void **buf, size_t *len)
{
	struct pull *pl = arg;
	struct puller *p = pl->p;
	struct store_image *img = NULL;
	bool ok = false;
	if (store_image_usable(p->store, manifest_digest, pl->uid, &ok, NULL) < 0 || !ok)
		return -1;
	if (store_image_find(p->store, manifest_digest, STORE_UID_ANY, &img, NULL) < 0)
		return -1;
	int rc = -1;
	if (img->config_json && img->config_digest && strcmp(img->config_digest, config_digest) == 0) {
		*len = strlen(img->config_json);
		*buf = xmemdup(img->config_json, *len);
		rc = 0;
	}
	store_image_free(img);
	return rc;
}

static void opts_from_config(struct pull_opts *o, const struct config *c)
{
	o->compressor = xstrdup(c->compression);
	o->level = (int)c->compression_level;
	o->workers = 0;         /* set from the pool by pull_new() */
	o->max_entries = (uint64_t)c->max_layer_entries;
	o->max_tar_bytes = (uint64_t)c->max_layer_bytes;
	o->parallel = (unsigned)c->max_parallel_layers;
	cache_policy_from(&o->policy, c);
}

/* Whether the user's credentials cover the image's registry: then the
 * image is theirs until the registry lets someone else have it too. */
static bool has_creds_for(const struct pull_request *req, const char *host)
{
	return dockercfg_find(req->creds, req->ncreds, host) != NULL;
}

static int pull_new(struct puller *p, const struct pull_request *req, const char *key,
		    struct image_ref *ref, struct pull **out, alps_error **err)
{
	struct pull *pl = xzalloc(sizeof(*pl));
	pthread_mutex_init(&pl->lock, NULL);
	pthread_cond_init(&pl->tasks_done, NULL);
	pl->p = p;
	pl->key = xstrdup(key);
	pl->ref = *ref;
	memset(ref, 0, sizeof(*ref));
	pl->reference = ref_format(&pl->ref);
	pl->phase = PULL_RESOLVING;
	pl->owner = has_creds_for(req, pl->ref.registry) ? (int64_t)req->uid : STORE_PUBLIC;
	pl->uid = (int64_t)req->uid;
	pl->origin = xasprintf("%s/%s", pl->ref.registry, pl->ref.repository);
	opts_from_config(&pl->opts, req->cfg);
	/* A layer asks for up to the pool's size in compressor threads (the
	 * shared budget decides how many it gets), 8 at most: beyond that
	 * one tar reader cannot keep them busy. */
	unsigned pool = work_pool_size(p->pool);
	pl->opts.workers = pool > 8 ? 8 : pool ? pool : 1;
	if (req->platform && *req->platform) {
		if (manifest_platform_parse(req->platform, &pl->platform, err) < 0)
			goto fail;
		pl->has_platform = true;
	}
	pl->session = registry_session_new(req->cfg, &pl->ref, req->creds, req->ncreds, err);
	if (!pl->session)
		goto fail;
	registry_set_config_source(pl->session, config_from_store, pl);
	registry_set_notice(pl->session, pull_notice, pl);
	registry_set_timeout(pl->session, req->timeout_s);
	pl->no_refresh = req->no_refresh;
	pl->ev_done = event_new(p->base, -1, 0, on_done, pl);
	pl->ev_tick = event_new(p->base, -1, EV_PERSIST, on_tick, pl);
	*out = pl;
	return 0;
fail:
	pull_free(pl);
	return -1;
}

int puller_pull(struct puller *p, const struct pull_request *req,
		const struct pull_waiter_ops *ops, void *arg, alps_error **err)
{
	if (atomic_load(&p->stopping))
		return alps_fail(err, ALPS_E_UNAVAILABLE, "alpsd is stopping");
	struct image_ref ref;
	if (ref_parse(req->reference, req->cfg->default_registry, &ref, err) < 0)
		return -1;
	_cleanup_free_ char *canon = ref_format(&ref);
	bool private = has_creds_for(req, ref.registry);
	/* Per user even without credentials: what a pull reuses from the
	 * store and the access it records depend on who pulls. */
	_cleanup_free_ char *key = xasprintf("%s#%u#%c%c#%s", canon, (unsigned)req->uid,
					     private ? 'p' : 'a', req->no_refresh ? 'n' : 'r',
					     req->platform ? req->platform : "");
	struct pull *pl = p->pulls;
	while (pl && strcmp(pl->key, key) != 0)
		pl = pl->next;
	if (pl) {
		ref_free(&ref);
		log_debug("pull %s: joining the pull in flight", canon);
	} else {
		if (pull_new(p, req, key, &ref, &pl, err) < 0) {
			ref_free(&ref);
			return -1;
		}
		if (pthread_create(&pl->thread, NULL, pull_main, pl) != 0) {
			pull_free(pl);
			return alps_fail_errno(err, "cannot start a pull thread");
		}
		pl->thread_started = true;
		pl->next = p->pulls;
		p->pulls = pl;
		p->npulls++;
		struct timeval tv = { .tv_sec = 0, .tv_usec = TICK_MS * 1000 };
		event_add(pl->ev_tick, &tv);
		log_info("pull %s: started for uid %u", canon, (unsigned)req->uid);
	}
	struct waiter *w = xzalloc(sizeof(*w));
	w->ops = ops;
	w->arg = arg;
	w->next = pl->waiters;
	pl->waiters = w;
	return 0;
}

size_t puller_active(const struct puller *p)
{
	return p->npulls;
}

struct puller *puller_new(struct event_base *base, struct store *store, struct work_pool *pool,
			  unsigned max_parallel)
{
	struct puller *p = xzalloc(sizeof(*p));
	p->base = base;
	p->store = store;
	p->pool = pool;
	atomic_init(&p->stopping, false);
	sem_init(&p->slots, 0, max_parallel);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	return p;
}

void puller_stop(struct puller *p)
{
	atomic_store(&p->stopping, true);
	pthread_mutex_lock(&p->lock);
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

void puller_free(struct puller *p)
{
	if (!p)
		return;
	puller_stop(p);
	while (p->pulls) {
		struct pull *pl = p->pulls;
		p->pulls = pl->next;
		if (pl->thread_started)
			pthread_join(pl->thread, NULL);
		alps_error *err = NULL;
		alps_fail(&err, ALPS_E_CANCELLED, "pulling %s: alpsd is stopping", pl->reference);
		pull_finish(pl, err);
		alps_error_free(err);
		pull_free(pl);
	}
	sem_destroy(&p->slots);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p);
}
