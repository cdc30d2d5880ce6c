/* store_gc.c: the cache policy: least-recently-used collection with a plan
 * made in memory, the admission of pulls under a size limit, pins by name
 * (see store.h, "cache policy"). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "common/log.h"
#include "daemon/store/store_int.h"

/* ---- the plan --------------------------------------------------------- */

struct plan_layer {
	char *digest;
	uint64_t size;
	int64_t refs;           /* images using it, as the plan goes */
	bool held;
};

struct plan_image {
	char *digest;
	char *name;
	char *job;              /* a job using it, or NULL */
	uint64_t last_used_ms;
	bool pinned;
	bool gone;              /* chosen by the plan */
	size_t *layers;         /* indexes into plan.layers, distinct */
	size_t nlayers;
};

struct plan {
	struct plan_layer *layers;      /* sorted by digest */
	size_t nlayers;
	struct plan_image *images;      /* least recently used first */
	size_t nimages;
	uint64_t used;
};

static void plan_clear(struct plan *p)
{
	for (size_t i = 0; i < p->nlayers; i++)
		free(p->layers[i].digest);
	for (size_t i = 0; i < p->nimages; i++) {
		free(p->images[i].digest);
		free(p->images[i].name);
		free(p->images[i].job);
		free(p->images[i].layers);
	}
	free(p->layers);
	free(p->images);
	memset(p, 0, sizeof(*p));
}

static int layer_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct plan_layer *)elem)->digest);
}

static int load_layers(struct store *s, struct plan *p, alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err, "SELECT digest, squashfs_size, refcount FROM layers "
				       "ORDER BY digest", NULL);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0) {
		p->layers = xreallocarray(p->layers, p->nlayers + 1, sizeof(*p->layers));
		struct plan_layer *l = &p->layers[p->nlayers++];
		l->digest = sql_col_str(st, 0);
		l->size = sql_col_u64(st, 1);
		l->refs = sqlite3_column_int64(st, 2);
		l->held = store_held_locked(s, l->digest);
		p->used += l->size;
	}
	sqlite3_finalize(st);
	return r;
}

static int image_cmp(const void *key, const void *elem)
{
	return strcmp(key, (*(struct plan_image *const *)elem)->digest);
}

static int image_ptr_cmp(const void *a, const void *b)
{
	return strcmp((*(struct plan_image *const *)a)->digest,
		      (*(struct plan_image *const *)b)->digest);
}

/* One pass over image_layers (one query, not one per image: the plan is
 * made under the mutex). */
static int load_image_layers(struct store *s, struct plan *p, alps_error **err)
{
	struct plan_image **by_digest = xcalloc(p->nimages + 1, sizeof(*by_digest));
	for (size_t i = 0; i < p->nimages; i++) {
		by_digest[i] = &p->images[i];
		by_digest[i]->layers = xcalloc(1, sizeof(size_t));
	}
	qsort(by_digest, p->nimages, sizeof(*by_digest), image_ptr_cmp);
	sqlite3_stmt *st = sql_prepare(s, err, "SELECT DISTINCT image, layer FROM image_layers",
				       NULL);
	int r = st ? 0 : -1;
	while (st && (r = sql_step(s, st, err)) > 0) {
		const char *image = (const char *)sqlite3_column_text(st, 0);
		const char *layer = (const char *)sqlite3_column_text(st, 1);
		struct plan_image **img = image ? bsearch(image, by_digest, p->nimages,
							  sizeof(*by_digest), image_cmp) : NULL;
		struct plan_layer *l = layer ? bsearch(layer, p->layers, p->nlayers, sizeof(*l),
						       layer_cmp) : NULL;
		if (!img || !l)
			continue;
		(*img)->layers = xreallocarray((*img)->layers, (*img)->nlayers + 1, sizeof(size_t));
		(*img)->layers[(*img)->nlayers++] = (size_t)(l - p->layers);
	}
	sqlite3_finalize(st);
	free(by_digest);
	return r;
}

static int load_images(struct store *s, struct plan *p, alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(
		s, err,
		"SELECT i.digest, i.last_used_ms, i.pinned,"
		" (SELECT id FROM jobs j WHERE j.image = i.digest ORDER BY created_ms, id LIMIT 1),"
		" coalesce((SELECT min(ref) FROM tags t WHERE t.image = i.digest), i.digest)"
		" FROM images i ORDER BY i.last_used_ms, i.digest",
		NULL);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0) {
		p->images = xreallocarray(p->images, p->nimages + 1, sizeof(*p->images));
		struct plan_image *img = &p->images[p->nimages++];
		memset(img, 0, sizeof(*img));
		img->digest = sql_col_str(st, 0);
		img->last_used_ms = sql_col_u64(st, 1);
		img->pinned = sqlite3_column_int(st, 2) != 0;
		img->job = sql_col_str(st, 3);
		img->name = sql_col_str(st, 4);
	}
	sqlite3_finalize(st);
	return r < 0 ? -1 : load_image_layers(s, p, err);
}

static int plan_load(struct store *s, struct plan *p, alps_error **err)
{
	memset(p, 0, sizeof(*p));
	store_lock(s);
	int r = sql_exec(s, err, "BEGIN");
	if (r == 0)
		r = load_layers(s, p, err);
	if (r == 0)
		r = load_images(s, p, err);
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	store_unlock(s);
	if (r < 0)
		plan_clear(p);
	return r;
}

/* Take image i out of the plan: what its layers free. */
static uint64_t plan_drop(struct plan *p, struct plan_image *img, uint32_t *layers)
{
	uint64_t freed = 0;
	for (size_t k = 0; k < img->nlayers; k++) {
		struct plan_layer *l = &p->layers[img->layers[k]];
		if (--l->refs == 0 && !l->held) {
			freed += l->size;
			(*layers)++;
		}
	}
	p->used -= freed;
	return freed;
}

static void report_add(struct store_gc_report *rep, const struct plan_image *img, uint64_t bytes)
{
	rep->items = xreallocarray(rep->items, rep->nitems + 1, sizeof(*rep->items));
	rep->items[rep->nitems++] = (struct store_gc_item){
		.digest = xstrdup(img->digest), .name = xstrdup(img->name),
		.last_used_ms = img->last_used_ms, .bytes = bytes,
	};
}

/* What keeps the store over its target: pinned images, images in use, held
 * layers.  Caller frees. */
static char *plan_kept(const struct plan *p)
{
	char *pinned = xstrdup(""), *used = xstrdup("");
	uint64_t held = 0;
	for (size_t i = 0; i < p->nimages; i++) {
		const struct plan_image *img = &p->images[i];
		char **list = img->pinned ? &pinned : img->job ? &used : NULL;
		if (!list || img->gone)
			continue;
		_cleanup_free_ char *name = log_escape(img->name, 200);
		_cleanup_free_ char *job = img->job ? log_escape(img->job, 100) : NULL;
		char *next = img->job && !img->pinned
				     ? xasprintf("%s%s%s (job %s)", *list, **list ? ", " : "", name, job)
				     : xasprintf("%s%s%s", *list, **list ? ", " : "", name);
		free(*list);
		*list = next;
	}
	for (size_t i = 0; i < p->nlayers; i++)
		if (p->layers[i].refs <= 0 && p->layers[i].held)
			held += p->layers[i].size;
	char hb[32];
	format_size(held, hb, sizeof(hb));
	char *out = xasprintf("pinned: %s; in use by jobs: %s; held by pulls in flight: %s",
			      *pinned ? pinned : "none", *used ? used : "none", hb);
	free(pinned);
	free(used);
	return out;
}

/* Decide what goes: orphans, then images least recently used first. */
static void plan_run(struct plan *p, const struct store_gc_opts *o, struct store_gc_report *rep)
{
	uint64_t cutoff = 0, now = now_realtime_ms();
	if (o->older_than_ms)
		cutoff = now > o->older_than_ms ? now - o->older_than_ms : 0;
	rep->used_before = p->used;
	for (size_t i = 0; i < p->nlayers; i++) {
		struct plan_layer *l = &p->layers[i];
		if (l->refs <= 0 && !l->held) {
			rep->removed.layers++;
			rep->removed.bytes_freed += l->size;
			p->used -= l->size;
		}
	}
	for (size_t i = 0; i < p->nimages; i++) {
		struct plan_image *img = &p->images[i];
		bool old = o->older_than_ms && img->last_used_ms < cutoff;
		bool over = o->target != STORE_NO_TARGET && p->used > o->target;
		if (!old && !over)
			break;  /* the rest were used more recently */
		if (img->pinned || img->job)
			continue;
		uint64_t freed = plan_drop(p, img, &rep->removed.layers);
		rep->removed.images++;
		rep->removed.bytes_freed += freed;
		report_add(rep, img, freed);
		img->gone = true;
	}
	rep->used_after = p->used;
	if (o->target != STORE_NO_TARGET && p->used > o->target)
		rep->kept = plan_kept(p);
}

/* ---- carrying it out -------------------------------------------------- */

static int gc_orphans_tx(struct store *s, void *arg, alps_error **err)
{
	struct removal *rm = arg;
	struct store_strv dead = { 0 };
	int r = store_collect(s, &dead, "SELECT digest FROM layers WHERE refcount = 0", NULL, err);
	if (r == 0)
		r = store_drop_unused_locked(s, &dead, rm, err);
	store_strv_clear(&dead);
	return r;
}

struct victim_arg {
	const char *digest;
	struct removal rm;
};

/* The plan is a snapshot: pinned or taken by a job since, the image stays. */
static int victim_tx(struct store *s, void *arg, alps_error **err)
{
	struct victim_arg *a = arg;
	int64_t pinned = 0;
	int r = sql_int(s, err, &pinned, "SELECT pinned FROM images WHERE digest = ?1", "s",
			a->digest);
	if (r <= 0)
		return r < 0 ? -1 : alps_fail(err, ALPS_E_NOT_FOUND, "removed meanwhile");
	if (pinned)
		return alps_fail(err, ALPS_E_BUSY, "pinned meanwhile");
	if (store_remove_image_locked(s, a->digest, &a->rm, err) < 0)
		return -1;
	return store_stat_add_locked(s, "images_evicted", 1, err);
}

/* Remove one planned image: 1 if it went, 0 if it stays (pinned or taken
 * by a job since the plan, or gone already), -1 on error. */
static int carry_one(struct store *s, struct store_gc_item *it, struct store_removed *one,
		     alps_error **err)
{
	struct victim_arg a = { .digest = it->digest };
	alps_error *e = NULL;
	store_lock(s);
	int r = store_removal_finish(s, store_tx(s, victim_tx, &a, &e), &a.rm, one);
	store_unlock(s);
	if (r == 0)
		return 1;
	if (e->code != ALPS_E_BUSY && e->code != ALPS_E_NOT_FOUND) {
		*err = e;
		return -1;
	}
	_cleanup_free_ char *name = log_escape(it->name, 200);
	log_info("store %s: gc keeps %s: %s", s->dir, name, e->msg);
	alps_error_free(e);
	return 0;
}

/* Remove the planned images; the report keeps those that went, with what
 * their removal really freed. */
static int carry_out(struct store *s, struct store_gc_report *rep, alps_error **err)
{
	struct store_removed total = { 0 };
	struct removal orphans = { 0 };
	store_lock(s);
	int r = store_removal_finish(s, store_tx(s, gc_orphans_tx, &orphans, err), &orphans, &total);
	store_unlock(s);
	size_t kept = 0, i = 0;
	for (; r == 0 && i < rep->nitems; i++) {
		struct store_gc_item *it = &rep->items[i];
		struct store_removed one = { 0 };
		int rr = carry_one(s, it, &one, err);
		if (rr <= 0) {
			free(it->digest);
			free(it->name);
			r = rr;
			continue;
		}
		it->bytes = one.bytes_freed;
		total.images += one.images;
		total.layers += one.layers;
		total.bytes_freed += one.bytes_freed;
		rep->items[kept++] = *it;
	}
	/* After an error: what was not tried stays listed, for the clear. */
	for (; i < rep->nitems; i++)
		rep->items[kept++] = rep->items[i];
	rep->nitems = kept;
	rep->removed = total;
	return r;
}

static uint64_t used_bytes(struct store *s)
{
	int64_t used = 0;
	store_lock(s);
	if (sql_int(s, NULL, &used, "SELECT coalesce(sum(squashfs_size), 0) FROM layers", NULL) < 0)
		used = 0;
	store_unlock(s);
	return used < 0 ? 0 : (uint64_t)used;
}

int store_collect_images(struct store *s, const struct store_gc_opts *o,
			 struct store_gc_report *rep, alps_error **err)
{
	struct plan p;
	memset(rep, 0, sizeof(*rep));
	if (plan_load(s, &p, err) < 0)
		return store_ctx(s, err, "planning a collection", NULL);
	plan_run(&p, o, rep);
	plan_clear(&p);
	if (o->dry_run)
		return 0;
	if (carry_out(s, rep, err) < 0)
		return store_ctx(s, err, "collecting", NULL);
	rep->used_after = used_bytes(s);
	if (rep->removed.images || rep->removed.layers) {
		char freed[32];
		log_info("store %s: collected %u images and %u layers, %s", s->dir,
			 rep->removed.images, rep->removed.layers,
			 format_size(rep->removed.bytes_freed, freed, sizeof(freed)));
	}
	return 0;
}

void store_gc_report_clear(struct store_gc_report *rep)
{
	for (size_t i = 0; i < rep->nitems; i++) {
		free(rep->items[i].digest);
		free(rep->items[i].name);
	}
	free(rep->items);
	free(rep->kept);
	memset(rep, 0, sizeof(*rep));
}

int store_gc(struct store *s, uint64_t max_bytes, struct store_removed *removed,
	     alps_error **err)
{
	struct store_gc_opts o = { .target = max_bytes };
	struct store_gc_report rep;
	int r = store_collect_images(s, &o, &rep, err);
	if (removed)
		*removed = rep.removed;
	if (r == 0 && rep.used_after > max_bytes) {
		char have[32], limit[32];
		alps_fail(err, ALPS_E_LIMIT,
			  "layers take %s, over the limit of %s, and every image left is pinned or "
			  "in use by a job (%s)",
			  format_size(rep.used_after, have, sizeof(have)),
			  format_size(max_bytes, limit, sizeof(limit)), rep.kept ? rep.kept : "");
		r = store_ctx(s, err, "collecting", NULL);
	}
	store_gc_report_clear(&rep);
	return r;
}

/* ---- admission -------------------------------------------------------- */

/* Reserve need if it fits: true if it did. */
static bool try_reserve(struct store *s, uint64_t need, uint64_t limit, uint64_t *used)
{
	int64_t u = 0;
	/* One hold of the mutex: two admissions cannot both take the room. */
	store_lock(s);
	if (sql_int(s, NULL, &u, "SELECT coalesce(sum(squashfs_size), 0) FROM layers", NULL) < 0)
		u = 0;
	*used = u < 0 ? 0 : (uint64_t)u;
	bool ok = *used + s->reserved + need <= limit;
	if (ok)
		s->reserved += need;
	store_unlock(s);
	return ok;
}

int store_admit(struct store *s, uint64_t need, uint64_t limit, uint64_t low_water,
		alps_error **err)
{
	uint64_t used = 0;
	if (limit == 0 || try_reserve(s, need, limit, &used))
		return 0;
	char nb[32], lb[32], ub[32], rb[32];
	format_size(need, nb, sizeof(nb));
	format_size(limit, lb, sizeof(lb));
	uint64_t reserved = store_reserved(s);
	format_size(reserved, rb, sizeof(rb));
	if (need + reserved > limit) {
		alps_fail(err, ALPS_E_LIMIT, "the pull needs about %s, and the store's limit is %s "
			  "(pulls in flight may still add %s)", nb, lb, rb);
		return store_ctx(s, err, "admitting a pull", NULL);
	}
	uint64_t room = limit - need - reserved;
	struct store_gc_opts o = { .target = low_water < room ? low_water : room };
	struct store_gc_report rep;
	if (store_collect_images(s, &o, &rep, err) < 0)
		return -1;
	if (rep.removed.images || rep.removed.layers)
		log_notice("store %s: evicted %zu images to make room for a pull of %s", s->dir,
			   rep.nitems, nb);
	int r = 0;
	if (!try_reserve(s, need, limit, &used)) {
		format_size(used, ub, sizeof(ub));
		struct store_gc_report why;
		struct store_gc_opts dry = { .target = 0, .dry_run = true };
		if (store_collect_images(s, &dry, &why, NULL) < 0)
			memset(&why, 0, sizeof(why));
		r = alps_fail(err, ALPS_E_LIMIT,
			      "not enough room: the pull needs about %s, the store's limit is %s and "
			      "%s stay after eviction (pulls in flight may still add %s); %s", nb, lb,
			      ub, rb, why.kept ? why.kept : "nothing else may go");
		store_gc_report_clear(&why);
		store_ctx(s, err, NULL, NULL);
	}
	store_gc_report_clear(&rep);
	return r;
}

void store_admit_end(struct store *s, uint64_t need)
{
	store_lock(s);
	s->reserved -= need < s->reserved ? need : s->reserved;
	store_unlock(s);
}

uint64_t store_reserved(struct store *s)
{
	store_lock(s);
	uint64_t r = s->reserved;
	store_unlock(s);
	return r;
}

/* ---- limits, pins ----------------------------------------------------- */

int store_fs_usage(struct store *s, uint64_t *size, uint64_t *avail, alps_error **err)
{
	struct statvfs sv;
	if (fstatvfs(s->dir_fd, &sv) < 0) {
		alps_fail_errno(err, "cannot statvfs the state directory");
		return store_ctx(s, err, NULL, NULL);
	}
	*size = (uint64_t)sv.f_blocks * sv.f_frsize;
	*avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	return 0;
}

int store_limit_bytes(struct store *s, int64_t max_size, uint64_t *out, alps_error **err)
{
	uint64_t size = 0, avail = 0;
	*out = 0;
	if (max_size >= 0) {
		*out = (uint64_t)max_size;
		return 0;
	}
	if (max_size < -100)
		return alps_fail(err, ALPS_E_INVALID, "store.max_size: %lld%% is not a percentage",
				 (long long)-max_size);
	if (store_fs_usage(s, &size, &avail, err) < 0)
		return -1;
	*out = size / 100 * (uint64_t)-max_size;
	return 0;
}

int store_image_pin_named(struct store *s, const char *what, bool pinned, char **digest,
			  alps_error **err)
{
	_cleanup_free_ char *d = NULL;
	if (digest)
		*digest = NULL;
	if (!what || !*what) {
		alps_fail(err, ALPS_E_INVALID, "no image named");
		return store_ctx(s, err, pinned ? "pinning" : "unpinning", NULL);
	}
	store_lock(s);
	int r = store_resolve_locked(s, what, STORE_UID_ANY, &d, err);
	store_unlock(s);
	if (r < 0)
		return store_ctx(s, err, pinned ? "pinning" : "unpinning", what);
	if (store_image_pin(s, d, pinned, err) < 0)
		return -1;
	if (digest)
		*digest = steal_pointer(&d);
	return 0;
}

int store_stat_bump(struct store *s, const char *key, int64_t delta, alps_error **err)
{
	store_lock(s);
	int r = store_stat_add_locked(s, key, delta, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "counting", key) : 0;
}
