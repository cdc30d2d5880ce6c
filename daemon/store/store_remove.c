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
#include "common/util.h"
#include "daemon/hooks/inject.h"
#include "daemon/store/store_int.h"

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
int store_drop_unused_locked(struct store *s, const struct store_strv *dead, struct removal *rm,
			     alps_error **err)
{
	for (size_t i = 0; i < dead->n; i++) {
		if (store_held_locked(s, dead->v[i]))
			continue;
		if (drop_layer(s, dead->v[i], rm, err) < 0)
			return -1;
	}
	return 0;
}

int store_remove_image_locked(struct store *s, const char *digest, struct removal *rm,
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
		r = store_drop_unused_locked(s, &dead, rm, err);
	if (r == 0)
		r = store_stat_add_locked(s, "images_removed", 1, err);
	store_strv_clear(&dead);
	if (r == 0) {
		rm->counts.images++;
		store_strv_add(&rm->images, xstrdup(digest));
	}
	return r;
}

/* After store_tx() returned r: unlink the dropped files if it committed, add
 * the counts to *total, release the list. */
int store_removal_finish(struct store *s, int r, struct removal *rm,
			 struct store_removed *total)
{
	if (r >= 0) {
		store_unlink_layer_files_locked(s, &rm->files);
		for (size_t i = 0; i < rm->images.n; i++)
			injcache_drop_image(s->dir, rm->images.v[i]);
		total->images += rm->counts.images;
		total->layers += rm->counts.layers;
		total->bytes_freed += rm->counts.bytes_freed;
	}
	store_strv_clear(&rm->files);
	store_strv_clear(&rm->images);
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
	return left > 0 ? 0 : store_remove_image_locked(s, digest, &a->rm, err);
}

static int remove_tx(struct store *s, void *arg, alps_error **err)
{
	struct removal_arg *a = arg;
	_cleanup_free_ char *digest = NULL;
	if (store_resolve_locked(s, a->what, STORE_UID_ANY, &digest, err) < 0)
		return -1;
	return store_remove_image_locked(s, digest, &a->rm, err);
}

static int run_removal(struct store *s, int (*fn)(struct store *, void *, alps_error **),
		       const char *what, struct store_removed *removed, alps_error **err)
{
	struct removal_arg a = { .what = what };
	struct store_removed total = { 0 };
	store_lock(s);
	int r = store_tx(s, fn, &a, err);
	store_removal_finish(s, r, &a.rm, &total);
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
		" (SELECT count(*) FROM jobs),"
		" (SELECT coalesce(sum(squashfs_size), 0) FROM layers WHERE refcount > 1),"
		" (SELECT count(*) FROM layer_aliases)",
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
		out->shared_bytes = sql_col_u64(st, 8);
		out->aliases = sql_col_u64(st, 9);
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
