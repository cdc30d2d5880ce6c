/* store_image.c: images, tags and access rows; lookups and lists (see
 * store.h).  Removal and collection are in store_remove.c. */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "common/digest.h"
#include "common/log.h"
#include "common/ref.h"
#include "daemon/store/store_int.h"

/* More than any real image has (overlayfs stacks at most 500 lowers). */
#define STORE_MAX_LAYERS 1024

/* ---- validation ------------------------------------------------------- */

int store_check_uid(int64_t uid, bool any_ok, alps_error **err)
{
	if ((any_ok && uid == STORE_UID_ANY) || (uid >= 0 && uid < (int64_t)UINT32_MAX))
		return 0;
	return alps_fail(err, ALPS_E_INVALID, "uid %lld out of range", (long long)uid);
}

/* Tags are keys: one image must have one spelling, the one ref_format()
 * writes, or a lookup would miss it. */
int store_check_ref(const char *ref, alps_error **err)
{
	struct image_ref parsed;
	if (ref_parse(ref, NULL, &parsed, err) < 0)
		return -1;
	_cleanup_free_ char *canon = ref_format(&parsed);
	ref_free(&parsed);
	if (strcmp(canon, ref) == 0)
		return 0;
	_cleanup_free_ char *esc = log_escape(ref, 300);
	return alps_fail(err, ALPS_E_INVALID, "reference \"%s\" is not canonical (\"%s\" is)", esc,
			 canon);
}

static int check_rec(const struct store_image_rec *rec, const char *const *layers,
		     size_t nlayers, const char *tag, const struct store_origin *from,
		     alps_error **err)
{
	if (store_check_digest(rec->digest, "image digest", err) < 0 ||
	    store_check_digest(rec->config_digest, "config digest", err) < 0 ||
	    store_check_uid(from->uid, !from->private, err) < 0 ||
	    (tag && store_check_ref(tag, err) < 0))
		return -1;
	if (from->origin && *from->origin && !store_printable(from->origin, 512))
		return alps_fail(err, ALPS_E_INVALID, "origin not printable");
	if (!rec->platform || !store_printable(rec->platform, 128))
		return alps_fail(err, ALPS_E_INVALID, "platform missing or not printable");
	if (!rec->manifest_json || !rec->config_json)
		return alps_fail(err, ALPS_E_INVALID, "manifest or config JSON missing");
	if (nlayers == 0 || nlayers > STORE_MAX_LAYERS)
		return alps_fail(err, ALPS_E_INVALID, "%zu layers (1 to %d are accepted)", nlayers,
				 STORE_MAX_LAYERS);
	for (size_t i = 0; i < nlayers; i++)
		if (store_check_digest(layers[i], "layer digest", err) < 0)
			return -1;
	return 0;
}

/* ---- commit ----------------------------------------------------------- */

struct commit_arg {
	const struct store_image_rec *rec;
	const char *const *layers;
	size_t nlayers;
	const char *tag;
	const struct store_origin *from;
};

static int insert_layers(struct store *s, const struct commit_arg *a, int64_t now,
			 alps_error **err)
{
	const char *digest = a->rec->digest;
	for (size_t i = 0; i < a->nlayers; i++) {
		/* An alias stands for its layer (see store.h). */
		_cleanup_free_ char *layer = NULL;
		int r = store_canonical_locked(s, a->layers[i], &layer, err);
		if (r == 0)
			r = alps_fail(err, ALPS_E_NOT_FOUND, "layer %s is not in the store",
				      a->layers[i]);
		if (r < 0 || sql_run(s, err,
				     "INSERT INTO image_layers(image, position, layer) "
				     "VALUES (?1, ?2, ?3)",
				     "sis", digest, (int64_t)i, layer) < 0)
			return -1;
	}
	/* IN: a layer listed twice counts once. */
	if (sql_run(s, err,
		    "UPDATE layers SET refcount = refcount + 1, last_used_ms = ?2 "
		    "WHERE digest IN (SELECT layer FROM image_layers WHERE image = ?1)",
		    "si", digest, now) < 0)
		return -1;
	return sql_run(s, err,
		       "UPDATE images SET size = (SELECT coalesce(sum(squashfs_size), 0) "
		       "FROM layers WHERE digest IN "
		       "(SELECT layer FROM image_layers WHERE image = ?1)) WHERE digest = ?1",
		       "s", digest);
}

static int insert_image(struct store *s, const struct commit_arg *a, alps_error **err)
{
	const struct store_image_rec *rec = a->rec;
	int64_t now = (int64_t)now_realtime_ms();
	if (sql_run(s, err,
		    "INSERT INTO images(digest, config_digest, platform, manifest_json, "
		    "config_json, size, created_ms, last_used_ms, pinned) "
		    "VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6, 0)",
		    "sssssi", rec->digest, rec->config_digest, rec->platform, rec->manifest_json,
		    rec->config_json, now) < 0 ||
	    insert_layers(s, a, now, err) < 0)
		return -1;
	return store_stat_add_locked(s, "images_committed", 1, err);
}

static int commit_tx(struct store *s, void *arg, alps_error **err)
{
	const struct commit_arg *a = arg;
	const char *digest = a->rec->digest;
	int exists = sql_int(s, err, NULL, "SELECT 1 FROM images WHERE digest = ?1", "s", digest);
	if (exists < 0)
		return -1;
	/* Same digest, same manifest, same layers: only the tag, the access
	 * and the time of use can be new. */
	if (exists)
		exists = sql_run(s, err, "UPDATE images SET last_used_ms = ?2 WHERE digest = ?1",
				 "si", digest, (int64_t)now_realtime_ms()) < 0 ? -1 : 1;
	else
		exists = insert_image(s, a, err);
	if (exists < 0)
		return -1;
	if (a->tag && sql_run(s, err,
			      "INSERT INTO tags(ref, image, origin) VALUES (?1, ?2, ?3) "
			      "ON CONFLICT(ref) DO UPDATE SET image = excluded.image, "
			      "origin = excluded.origin",
			      "sss", a->tag, digest, a->from->origin ? a->from->origin : "") < 0)
		return -1;
	return store_set_access_locked(s, digest, a->from, exists == 0, err);
}

int store_image_commit(struct store *s, const struct store_image_rec *rec,
		       const char *const *layers, size_t nlayers, const char *tag,
		       const struct store_origin *from, alps_error **err)
{
	struct commit_arg a = { rec, layers, nlayers, tag, from };
	if (!rec || !from) {
		alps_fail(err, ALPS_E_INVALID, rec ? "no origin" : "no image record");
		return store_ctx(s, err, "committing an image", NULL);
	}
	if (check_rec(rec, layers, nlayers, tag, from, err) < 0)
		return store_ctx(s, err, "committing image", rec->digest ? rec->digest : "(null)");
	store_lock(s);
	int r = store_tx(s, commit_tx, &a, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "committing image", rec->digest) : 0;
}

/* ---- loading ---------------------------------------------------------- */

static void image_clear(struct store_image *img)
{
	free(img->digest);
	free(img->config_digest);
	free(img->platform);
	free(img->manifest_json);
	free(img->config_json);
	for (size_t i = 0; i < img->ntags; i++)
		free(img->tags[i]);
	free(img->tags);
	for (size_t i = 0; i < img->nlayers; i++)
		store_layer_clear(&img->layers[i]);
	free(img->layers);
	memset(img, 0, sizeof(*img));
}

void store_image_free(struct store_image *img)
{
	if (!img)
		return;
	image_clear(img);
	free(img);
}

void store_images_free(struct store_image *imgs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		image_clear(&imgs[i]);
	free(imgs);
}

static int load_layers(struct store *s, struct store_image *img, alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err,
				       "SELECT " STORE_LAYER_COLS " FROM image_layers il "
				       "JOIN layers l ON l.digest = il.layer "
				       "WHERE il.image = ?1 ORDER BY il.position",
				       "s", img->digest);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0) {
		img->layers = xreallocarray(img->layers, img->nlayers + 1, sizeof(*img->layers));
		memset(&img->layers[img->nlayers], 0, sizeof(*img->layers));
		store_layer_from_row(s, st, 0, &img->layers[img->nlayers++]);
	}
	sqlite3_finalize(st);
	return r;
}

static int load_row(struct store *s, const char *digest, bool full, struct store_image *img,
		    alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(
		s, err,
		"SELECT digest, config_digest, platform, CASE WHEN ?2 THEN manifest_json END, "
		"CASE WHEN ?2 THEN config_json END, size, created_ms, last_used_ms, pinned, "
		"EXISTS (SELECT 1 FROM image_access WHERE image = ?1) "
		"FROM images WHERE digest = ?1",
		"si", digest, (int64_t)full);
	if (!st)
		return -1;
	int r = sql_step(s, st, err);
	if (r > 0) {
		img->digest = sql_col_str(st, 0);
		img->config_digest = sql_col_str(st, 1);
		img->platform = sql_col_str(st, 2);
		img->manifest_json = sql_col_str(st, 3);
		img->config_json = sql_col_str(st, 4);
		img->size = sql_col_u64(st, 5);
		img->created_ms = sql_col_u64(st, 6);
		img->last_used_ms = sql_col_u64(st, 7);
		img->pinned = sqlite3_column_int(st, 8) != 0;
		img->restricted = sqlite3_column_int(st, 9) != 0;
	} else if (r == 0) {
		r = alps_fail(err, ALPS_E_NOT_FOUND, "no image %s", digest);
	}
	sqlite3_finalize(st);
	return r < 0 ? -1 : 0;
}

/* Images uid may see: no access rows, or one for uid.  uid is SQL parameter
 * P; negative (STORE_UID_ANY) and 0 (root) see everything. */
#define VISIBLE(P)                                                                  \
	"(" P " <= 0 OR NOT EXISTS (SELECT 1 FROM image_access a WHERE a.image = "  \
	"i.digest) OR EXISTS (SELECT 1 FROM image_access a WHERE a.image = "        \
	"i.digest AND a.uid = " P "))"

/* Tags (aliased t) uid may see, of an image uid may see: all of a public
 * image, and of a private one those set by a pull from an origin uid has
 * an access row for (rows from before origins and grants: all).  A user
 * who got an image from their own origin does not learn the names others
 * pulled it under. */
#define TAG_VISIBLE(P)                                                                 \
	"(" P " <= 0 OR t.origin = '' OR NOT EXISTS (SELECT 1 FROM image_access a "   \
	"WHERE a.image = t.image) OR EXISTS (SELECT 1 FROM image_access a WHERE "      \
	"a.image = t.image AND a.uid = " P " AND a.origin IN (t.origin, '', '"         \
	STORE_ORIGIN_GRANT "')))"

static int load_tags(struct store *s, const char *digest, int64_t uid, struct store_strv *tags,
		     alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err,
				       "SELECT t.ref FROM tags t WHERE t.image = ?1 AND "
				       TAG_VISIBLE("?2") " ORDER BY t.ref",
				       "si", digest, uid);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0)
		store_strv_add(tags, sql_col_str(st, 0));
	sqlite3_finalize(st);
	return r;
}

/* Fill *img (zeroed) with image digest, the tags uid may see; the JSON
 * fields only if full. */
static int load_image(struct store *s, const char *digest, int64_t uid, bool full,
		      struct store_image *img, alps_error **err)
{
	struct store_strv tags = { 0 };
	if (load_row(s, digest, full, img, err) < 0 || load_tags(s, digest, uid, &tags, err) < 0 ||
	    load_layers(s, img, err) < 0) {
		store_strv_clear(&tags);
		image_clear(img);
		return -1;
	}
	img->tags = tags.v;
	img->ntags = tags.n;
	return 0;
}

/* ---- lookups ---------------------------------------------------------- */

/* A digest prefix: an optional "sha256:"/"sha512:", then at least 12
 * lowercase hex digits, fewer than a whole digest's.  *pattern (caller frees)
 * is a GLOB pattern, safe since it holds nothing but hex and the algorithm. */
static bool digest_prefix(const char *what, char **pattern)
{
	const char *hex = strchr(what, ':');
	size_t max = 128;
	if (hex) {
		size_t alen = (size_t)(hex - what);
		if (alen == 6 && strncmp(what, "sha256", 6) == 0)
			max = 64;
		else if (!(alen == 6 && strncmp(what, "sha512", 6) == 0))
			return false;
		hex++;
	} else {
		hex = what;
	}
	size_t len = strspn(hex, "0123456789abcdef");
	if (hex[len] || len < 12 || len > max)
		return false;
	*pattern = hex == what ? xasprintf("*:%s*", hex) : xasprintf("%s*", what);
	return true;
}

static int find_by_prefix(struct store *s, const char *pattern, int64_t uid, char **digest,
			  alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err,
				       "SELECT digest FROM images i WHERE digest GLOB ?1 AND "
				       VISIBLE("?2") " ORDER BY digest LIMIT 2",
				       "si", pattern, uid);
	if (!st)
		return -1;
	int r = sql_step(s, st, err);
	if (r > 0) {
		*digest = sql_col_str(st, 0);
		r = sql_step(s, st, err);
		if (r > 0)
			r = alps_fail(err, ALPS_E_INVALID, "ambiguous digest prefix: %s and %s match",
				      *digest, (const char *)sqlite3_column_text(st, 0));
		else if (r == 0)
			r = 1;
	}
	sqlite3_finalize(st);
	return r;
}

/* *digest (caller frees) of the image uid may see that what names, or
 * ALPS_E_NOT_FOUND. */
int store_resolve_locked(struct store *s, const char *what, int64_t uid, char **digest,
			 alps_error **err)
{
	_cleanup_free_ char *pattern = NULL;
	int r;
	*digest = NULL;
	if (digest_valid(what))
		r = sql_text(s, err, digest,
			     "SELECT digest FROM images i WHERE digest = ?1 AND " VISIBLE("?2"), "si",
			     what, uid);
	else if (digest_prefix(what, &pattern))
		r = find_by_prefix(s, pattern, uid, digest, err);
	else
		r = sql_text(s, err, digest,
			     "SELECT i.digest FROM tags t JOIN images i ON i.digest = t.image "
			     "WHERE t.ref = ?1 AND " VISIBLE("?2") " AND " TAG_VISIBLE("?2"),
			     "si", what, uid);
	if (r == 0)
		r = alps_fail(err, ALPS_E_NOT_FOUND, "no such image");
	if (r < 0) {
		free(*digest);
		*digest = NULL;
		return -1;
	}
	return 0;
}

int store_image_find(struct store *s, const char *what, int64_t uid, struct store_image **out,
		     alps_error **err)
{
	_cleanup_free_ char *digest = NULL;
	*out = NULL;
	if (!what || !*what)
		alps_fail(err, ALPS_E_INVALID, "no image named");
	if (!what || !*what || store_check_uid(uid, true, err) < 0)
		return store_ctx(s, err, "looking up an image", NULL);
	struct store_image *img = xzalloc(sizeof(*img));
	store_lock(s);
	int r = store_resolve_locked(s, what, uid, &digest, err);
	if (r == 0)
		r = load_image(s, digest, uid, true, img, err);
	store_unlock(s);
	/* What a user is given to mount (prepare) never has a layer a verify
	 * found damaged: not found, a prepare pulls the image again, which
	 * fetches that layer anew.  Admins (STORE_UID_ANY) see it as it is. */
	for (size_t i = 0; r == 0 && uid != STORE_UID_ANY && i < img->nlayers; i++)
		if (img->layers[i].damaged) {
			r = alps_fail(err, ALPS_E_NOT_FOUND,
				      "layer %s is damaged (alps verify found it); the next pull "
				      "fetches it again", img->layers[i].digest);
			store_image_free(img);
			img = NULL;
		}
	if (r < 0) {
		free(img);
		return store_ctx(s, err, "looking up image", what);
	}
	*out = img;
	return 0;
}

static int list_locked(struct store *s, int64_t uid, struct store_image **out, size_t *n,
		       alps_error **err)
{
	struct store_strv digests = { 0 };
	sqlite3_stmt *st = sql_prepare(s, err,
				       "SELECT digest FROM images i WHERE " VISIBLE("?1")
				       " ORDER BY created_ms DESC, digest",
				       "i", uid);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0)
		store_strv_add(&digests, sql_col_str(st, 0));
	sqlite3_finalize(st);
	struct store_image *imgs = xcalloc(digests.n, sizeof(*imgs));
	size_t i;
	for (i = 0; r == 0 && i < digests.n; i++)
		r = load_image(s, digests.v[i], uid, false, &imgs[i], err);
	store_strv_clear(&digests);
	if (r < 0) {
		store_images_free(imgs, i);
		return -1;
	}
	*out = imgs;
	*n = i;
	return 0;
}

int store_images_list(struct store *s, int64_t uid, struct store_image **out, size_t *n,
		      alps_error **err)
{
	*out = NULL;
	*n = 0;
	if (store_check_uid(uid, true, err) < 0)
		return store_ctx(s, err, "listing images", NULL);
	store_lock(s);
	int r = list_locked(s, uid, out, n, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "listing images", NULL) : 0;
}

/* ---- small updates ---------------------------------------------------- */

struct update_arg {
	const char *digest;
	int64_t value;
};

static int touch_tx(struct store *s, void *arg, alps_error **err)
{
	const struct update_arg *a = arg;
	if (sql_run(s, err, "UPDATE images SET last_used_ms = ?2 WHERE digest = ?1", "si",
		    a->digest, a->value) < 0)
		return -1;
	if (sqlite3_changes(s->db) == 0)
		return alps_fail(err, ALPS_E_NOT_FOUND, "no such image");
	return sql_run(s, err,
		       "UPDATE layers SET last_used_ms = ?2 WHERE digest IN "
		       "(SELECT layer FROM image_layers WHERE image = ?1)",
		       "si", a->digest, a->value);
}

static int pin_tx(struct store *s, void *arg, alps_error **err)
{
	const struct update_arg *a = arg;
	if (sql_run(s, err, "UPDATE images SET pinned = ?2 WHERE digest = ?1", "si", a->digest,
		    a->value) < 0)
		return -1;
	return sqlite3_changes(s->db) ? 0 : alps_fail(err, ALPS_E_NOT_FOUND, "no such image");
}

static int grant_tx(struct store *s, void *arg, alps_error **err)
{
	const struct update_arg *a = arg;
	int r = sql_int(s, err, NULL, "SELECT 1 FROM images WHERE digest = ?1", "s", a->digest);
	if (r == 0)
		return alps_fail(err, ALPS_E_NOT_FOUND, "no such image");
	/* Granted by an admin, from no registry. */
	struct store_origin from = { .origin = STORE_ORIGIN_GRANT, .uid = a->value, .private = true };
	return r < 0 ? -1 : store_set_access_locked(s, a->digest, &from, false, err);
}

static int update_image(struct store *s, const char *doing,
			int (*fn)(struct store *, void *, alps_error **), const char *digest,
			int64_t value, alps_error **err)
{
	struct update_arg a = { digest, value };
	if (store_check_digest(digest, "image digest", err) < 0)
		return store_ctx(s, err, doing, NULL);
	store_lock(s);
	int r = store_tx(s, fn, &a, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, doing, digest) : 0;
}

int store_image_touch(struct store *s, const char *digest, alps_error **err)
{
	return update_image(s, "touching image", touch_tx, digest, (int64_t)now_realtime_ms(),
			    err);
}

int store_image_pin(struct store *s, const char *digest, bool pinned, alps_error **err)
{
	return update_image(s, pinned ? "pinning image" : "unpinning image", pin_tx, digest,
			    pinned, err);
}

int store_image_grant(struct store *s, const char *digest, int64_t uid, alps_error **err)
{
	if (store_check_uid(uid, false, err) < 0)
		return store_ctx(s, err, "granting access to image", digest);
	return update_image(s, "granting access to image", grant_tx, digest, uid, err);
}
