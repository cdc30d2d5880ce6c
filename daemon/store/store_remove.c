/* store_remove.c: untagging, removing and collecting images; usage.
 *
 * A removal is one transaction: refuse if a job uses the image, decrement
 * the refcounts of its layers, delete the image (its tags, access rows and
 * image_layers go by cascade) and the layer rows that reached 0 and no pull
 * holds.  The files of those rows are unlinked after the commit, so a crash
 * in between leaves files without rows (start-up removes them), never rows
 * without files.  Unlinking happens under the mutex: see store.h, Holds. */
#include <config.h>

#include <string.h>

#include "common/log.h"
#include "daemon/store/store_int.h"

struct removal {
	struct store_removed counts;
	struct store_strv files;        /* under layers/, to unlink after commit */
};

struct removal_arg {
	const char *what;               /* a digest, a reference... */
	struct removal rm;
};

static int drop_layer(struct store *s, const char *digest, struct removal *rm, alps_error **err)
{
	int64_t size = 0;
	if (sql_int(s, err, &size, "SELECT squashfs_size FROM layers WHERE digest = ?1", "s",
		    digest) < 0 ||
	    sql_run(s, err, "DELETE FROM layers WHERE digest = ?1", "s", digest) < 0 ||
	    store_stat_add_locked(s, "layers_removed", 1, err) < 0 ||
	    store_stat_add_locked(s, "bytes_freed", size, err) < 0)
		return -1;
	rm->counts.layers++;
	rm->counts.bytes_freed += (uint64_t)size;
	/* The name comes from the digest, validated when the row went in, not
	 * from the row's file column. */
	store_strv_add(&rm->files, store_layer_file(digest));
	return 0;
}

/* Drop the rows of unused layers dead, except those a pull holds: they stay
 * as orphans for the pull's image. */
static int drop_unused_layers(struct store *s, const struct store_strv *dead,
			      struct removal *rm, alps_error **err)
{
	for (size_t i = 0; i < dead->n; i++) {
		if (store_held_locked(s, dead->v[i]))
			continue;
		if (drop_layer(s, dead->v[i], rm, err) < 0)
			return -1;
	}
	return 0;
}

/* Inside a transaction. */
static int remove_image(struct store *s, const char *digest, struct removal *rm,
			alps_error **err)
{
	_cleanup_free_ char *job = NULL;
	if (sql_text(s, err, &job,
		     "SELECT id FROM jobs WHERE image = ?1 ORDER BY created_ms, id LIMIT 1", "s",
		     digest) < 0)
		return -1;
	if (job) {
		_cleanup_free_ char *esc = log_escape(job, 100);
		return alps_fail(err, ALPS_E_BUSY, "image %s is in use by job %s", digest, esc);
	}
	struct store_strv dead = { 0 };
	int r = sql_run(s, err,
			"UPDATE layers SET refcount = refcount - 1 WHERE digest IN "
			"(SELECT layer FROM image_layers WHERE image = ?1)",
			"s", digest);
	if (r == 0)
		r = store_collect(s, &dead,
				  "SELECT digest FROM layers WHERE refcount = 0 AND digest IN "
				  "(SELECT layer FROM image_layers WHERE image = ?1)",
				  digest, err);
	if (r == 0)
		r = sql_run(s, err, "DELETE FROM images WHERE digest = ?1", "s", digest);
	if (r == 0)
		r = drop_unused_layers(s, &dead, rm, err);
	if (r == 0)
		r = store_stat_add_locked(s, "images_removed", 1, err);
	store_strv_clear(&dead);
	if (r == 0)
		rm->counts.images++;
	return r;
}

/* After store_tx() returned r: unlink the dropped files if it committed, add
 * the counts to *total, release the list. */
static int removal_finish(struct store *s, int r, struct removal *rm,
			  struct store_removed *total)
{
	if (r >= 0) {
		store_unlink_layer_files_locked(s, &rm->files);
		total->images += rm->counts.images;
		total->layers += rm->counts.layers;
		total->bytes_freed += rm->counts.bytes_freed;
	}
	store_strv_clear(&rm->files);
	memset(&rm->counts, 0, sizeof(rm->counts));
	return r;
}

static int untag_tx(struct store *s, void *arg, alps_error **err)
{
	struct removal_arg *a = arg;
	_cleanup_free_ char *digest = NULL;
	int64_t left = 0;
	int r = sql_text(s, err, &digest, "SELECT image FROM tags WHERE ref = ?1", "s", a->what);
	if (r == 0)
		r = alps_fail(err, ALPS_E_NOT_FOUND, "no such tag");
	if (r < 0 || sql_run(s, err, "DELETE FROM tags WHERE ref = ?1", "s", a->what) < 0 ||
	    sql_int(s, err, &left, "SELECT count(*) FROM tags WHERE image = ?1", "s", digest) < 0)
		return -1;
	/* A refusal (in use) rolls the tag's deletion back too. */
	return left > 0 ? 0 : remove_image(s, digest, &a->rm, err);
}

static int remove_tx(struct store *s, void *arg, alps_error **err)
{
	struct removal_arg *a = arg;
	_cleanup_free_ char *digest = NULL;
	if (store_resolve_locked(s, a->what, STORE_UID_ANY, &digest, err) < 0)
		return -1;
	return remove_image(s, digest, &a->rm, err);
}

static int run_removal(struct store *s, int (*fn)(struct store *, void *, alps_error **),
		       const char *what, struct store_removed *removed, alps_error **err)
{
	struct removal_arg a = { .what = what };
	struct store_removed total = { 0 };
	store_lock(s);
	int r = store_tx(s, fn, &a, err);
	removal_finish(s, r, &a.rm, &total);
	store_unlock(s);
	if (removed)
		*removed = total;
	return r;
}

int store_image_untag(struct store *s, const char *ref, struct store_removed *removed,
		      alps_error **err)
{
	if (!ref) {
		alps_fail(err, ALPS_E_INVALID, "no reference");
		return store_ctx(s, err, "untagging", NULL);
	}
	if (run_removal(s, untag_tx, ref, removed, err) < 0)
		return store_ctx(s, err, "untagging", ref);
	return 0;
}

int store_image_remove(struct store *s, const char *what, struct store_removed *removed,
		       alps_error **err)
{
	if (!what || !*what) {
		alps_fail(err, ALPS_E_INVALID, "no image named");
		return store_ctx(s, err, "removing an image", NULL);
	}
	if (run_removal(s, remove_tx, what, removed, err) < 0)
		return store_ctx(s, err, "removing image", what);
	return 0;
}

/* ---- collection ------------------------------------------------------- */

static int gc_orphans_tx(struct store *s, void *arg, alps_error **err)
{
	struct removal *rm = arg;
	struct store_strv dead = { 0 };
	int r = store_collect(s, &dead, "SELECT digest FROM layers WHERE refcount = 0", NULL, err);
	if (r == 0)
		r = drop_unused_layers(s, &dead, rm, err);
	store_strv_clear(&dead);
	return r;
}

/* Remove the least recently used image that may go, if the layers take
 * more than max_bytes: 1 if one went, 0 if within the limit, -1 on error
 * (ALPS_E_LIMIT if no image may go). */
static int gc_step_locked(struct store *s, uint64_t max_bytes, struct store_removed *total,
			  alps_error **err)
{
	int64_t used = 0;
	if (sql_int(s, err, &used, "SELECT coalesce(sum(squashfs_size), 0) FROM layers", NULL) < 0)
		return -1;
	if ((uint64_t)used <= max_bytes)
		return 0;
	struct removal_arg a = { 0 };
	_cleanup_free_ char *victim = NULL;
	if (sql_text(s, err, &victim,
		     "SELECT digest FROM images i WHERE pinned = 0 AND NOT EXISTS "
		     "(SELECT 1 FROM jobs j WHERE j.image = i.digest) "
		     "ORDER BY last_used_ms, digest LIMIT 1",
		     NULL) < 0)
		return -1;
	if (!victim) {
		char have[32], limit[32];
		return alps_fail(err, ALPS_E_LIMIT,
				 "layers take %s, over the limit of %s, and every image left is "
				 "pinned or in use by a job",
				 format_size((uint64_t)used, have, sizeof(have)),
				 format_size(max_bytes, limit, sizeof(limit)));
	}
	a.what = victim;
	if (removal_finish(s, store_tx(s, remove_tx, &a, err), &a.rm, total) < 0)
		return -1;
	return 1;
}

int store_gc(struct store *s, uint64_t max_bytes, struct store_removed *removed,
	     alps_error **err)
{
	struct store_removed total = { 0 };
	struct removal rm = { 0 };
	store_lock(s);
	int r = removal_finish(s, store_tx(s, gc_orphans_tx, &rm, err), &rm, &total);
	store_unlock(s);
	/* One image per transaction, the mutex released between them: a large
	 * collection must not stall the event loop's calls. */
	while (r == 0) {
		store_lock(s);
		r = gc_step_locked(s, max_bytes, &total, err);
		store_unlock(s);
		if (r == 0)
			break;
		if (r > 0)
			r = 0;
	}
	if (removed)
		*removed = total;
	if (total.images || total.layers) {
		char freed[32];
		log_info("store %s: collected %u images and %u layers, %s", s->dir, total.images,
			 total.layers, format_size(total.bytes_freed, freed, sizeof(freed)));
	}
	return r < 0 ? store_ctx(s, err, "collecting", NULL) : 0;
}

/* ---- usage ------------------------------------------------------------ */

static int df_locked(struct store *s, struct store_usage *out, alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(
		s, err,
		"SELECT (SELECT coalesce(sum(squashfs_size), 0) FROM layers),"
		" (SELECT count(*) FROM images), (SELECT count(*) FROM tags),"
		" (SELECT count(*) FROM layers), (SELECT count(*) FROM images WHERE pinned = 1),"
		" (SELECT count(*) FROM layers WHERE refcount = 0),"
		" (SELECT coalesce(sum(squashfs_size), 0) FROM layers WHERE refcount = 0),"
		" (SELECT count(*) FROM jobs)",
		NULL);
	if (!st)
		return -1;
	int r = sql_step(s, st, err);
	if (r > 0) {
		out->total_bytes = sql_col_u64(st, 0);
		out->images = sql_col_u64(st, 1);
		out->tags = sql_col_u64(st, 2);
		out->layers = sql_col_u64(st, 3);
		out->pinned_images = sql_col_u64(st, 4);
		out->orphan_layers = sql_col_u64(st, 5);
		out->orphan_bytes = sql_col_u64(st, 6);
		out->jobs = sql_col_u64(st, 7);
	}
	sqlite3_finalize(st);
	return r < 0 ? -1 : 0;
}

int store_df(struct store *s, struct store_usage *out, alps_error **err)
{
	memset(out, 0, sizeof(*out));
	store_lock(s);
	int r = df_locked(s, out, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "measuring usage", NULL) : 0;
}
