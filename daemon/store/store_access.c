/* store_access.c: who may use an image, and who may reuse a layer (see
 * "Visibility" and "Layer reuse" in store.h). */
#include <config.h>

#include <string.h>

#include "common/log.h"
#include "daemon/store/store_int.h"

/* ---- images ----------------------------------------------------------- */

/* A pull without credentials of a private image: public if every access
 * row from a pull is from this very origin (it serves the image to anyone
 * now; an admin's grants do not count); otherwise (another origin, or ''
 * for rows older than origins) the image stays private and only the puller,
 * who fetched it from their origin, is added. */
static int access_anonymous(struct store *s, const char *digest, const struct store_origin *from,
			    const char *origin, alps_error **err)
{
	int other = sql_int(s, err, NULL,
			    "SELECT 1 FROM image_access WHERE image = ?1 AND "
			    "origin NOT IN (?2, ?3) LIMIT 1",
			    "sss", digest, origin, STORE_ORIGIN_GRANT);
	if (other < 0)
		return -1;
	if (!other && *origin) {
		if (sql_run(s, err, "DELETE FROM image_access WHERE image = ?1", "s", digest) < 0)
			return -1;
		_cleanup_free_ char *esc = log_escape(origin, 300);
		log_info("store %s: image %s is public now: %s serves it without credentials",
			 s->dir, digest, esc);
		return 0;
	}
	if (from->uid < 0)
		return 0;
	log_info("store %s: image %s stays private (pulled with credentials from another "
		 "origin); uid %lld may use it", s->dir, digest, (long long)from->uid);
	return sql_run(s, err,
		       "INSERT OR IGNORE INTO image_access(image, uid, origin) VALUES (?1, ?2, ?3)",
		       "sis", digest, from->uid, origin);
}

int store_set_access_locked(struct store *s, const char *digest, const struct store_origin *from,
			    bool is_new, alps_error **err)
{
	const char *origin = from->origin ? from->origin : "";
	int restricted = is_new ? 0
				: sql_int(s, err, NULL,
					  "SELECT 1 FROM image_access WHERE image = ?1 LIMIT 1", "s",
					  digest);
	if (restricted < 0)
		return -1;
	/* A public image stays public, whoever pulls it. */
	if (!is_new && !restricted)
		return 0;
	if (!from->private)
		return is_new ? 0 : access_anonymous(s, digest, from, origin, err);
	if (from->uid < 0)
		return alps_fail(err, ALPS_E_INVALID, "a private pull names no uid");
	return sql_run(s, err,
		       "INSERT OR IGNORE INTO image_access(image, uid, origin) VALUES (?1, ?2, ?3)",
		       "sis", digest, from->uid, origin);
}

/* Public, or an access row for uid; root gets no exception. */
#define USABLE_IMAGE(I, P)                                                          \
	"(NOT EXISTS (SELECT 1 FROM image_access a WHERE a.image = " I ") OR "      \
	"EXISTS (SELECT 1 FROM image_access a WHERE a.image = " I " AND a.uid = " P "))"

static int check_args(const char *digest, const char *what, int64_t uid, alps_error **err)
{
	if (store_check_digest(digest, what, err) < 0 || store_check_uid(uid, false, err) < 0)
		return -1;
	return 0;
}

int store_image_usable(struct store *s, const char *digest, int64_t uid, bool *ok,
		       alps_error **err)
{
	*ok = false;
	if (check_args(digest, "image digest", uid, err) < 0)
		return store_ctx(s, err, "checking access to an image", NULL);
	store_lock(s);
	int r = sql_int(s, err, NULL,
			"SELECT 1 FROM images i WHERE i.digest = ?1 AND " USABLE_IMAGE("i.digest", "?2"),
			"si", digest, uid);
	store_unlock(s);
	if (r < 0)
		return store_ctx(s, err, "checking access to image", digest);
	*ok = r > 0;
	return 0;
}

/* ---- layers ----------------------------------------------------------- */

int store_layer_usable(struct store *s, const char *digest, int64_t uid, bool *ok,
		       alps_error **err)
{
	*ok = false;
	if (check_args(digest, "layer digest", uid, err) < 0)
		return store_ctx(s, err, "checking access to a layer", NULL);
	store_lock(s);
	_cleanup_free_ char *layer = NULL;
	int r = store_canonical_locked(s, digest, &layer, err);
	if (r > 0)
		r = sql_int(s, err, NULL,
			"SELECT 1 FROM layers l WHERE l.digest = ?1 AND ("
			" EXISTS (SELECT 1 FROM layer_access la WHERE la.layer = ?1 AND"
			"   la.uid IN (-1, ?2)) OR"
			" EXISTS (SELECT 1 FROM image_layers il WHERE il.layer = ?1 AND "
			USABLE_IMAGE("il.image", "?2") "))",
			"si", layer, uid);
	store_unlock(s);
	if (r < 0)
		return store_ctx(s, err, "checking access to layer", digest);
	*ok = r > 0;
	return 0;
}

int store_layer_allow(struct store *s, const char *digest, int64_t uid, alps_error **err)
{
	if (store_check_digest(digest, "layer digest", err) < 0 ||
	    store_check_uid(uid, true, err) < 0)
		return store_ctx(s, err, "recording access to a layer", NULL);
	store_lock(s);
	_cleanup_free_ char *layer = NULL;
	int r = store_canonical_locked(s, digest, &layer, err);
	if (r == 0)
		r = alps_fail(err, ALPS_E_NOT_FOUND, "no such layer");
	if (r > 0)
		r = sql_run(s, err, "INSERT OR IGNORE INTO layer_access(layer, uid) VALUES (?1, ?2)",
			    "si", layer, uid < 0 ? (int64_t)-1 : uid);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "recording access to layer", digest) : 0;
}

struct dedup_arg {
	const struct store_layer_info *info;
	int64_t owner;
};

/* The alias, if a sound layer with the diff_id was fetched by owner or
 * without credentials: 1 made, 0 no such layer. */
static int dedup_tx(struct store *s, void *arg, alps_error **err)
{
	const struct dedup_arg *a = arg;
	_cleanup_free_ char *same = NULL;
	int r = sql_text(s, err, &same,
			 "SELECT l.digest FROM layers l WHERE l.diff_id = ?1 AND l.damaged = 0 "
			 "AND EXISTS (SELECT 1 FROM layer_access la WHERE la.layer = l.digest "
			 "AND la.uid IN (-1, ?2)) ORDER BY l.digest LIMIT 1",
			 "si", a->info->diff_id, a->owner < 0 ? (int64_t)-1 : a->owner);
	if (r <= 0)
		return r;
	if (sql_run(s, err,
		    "INSERT INTO layer_aliases(digest, layer, media_type, compressed_size) "
		    "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(digest) DO NOTHING",
		    "sssi", a->info->digest, same, a->info->media_type,
		    (int64_t)a->info->compressed_size) < 0 ||
	    store_stat_add_locked(s, "layers_deduplicated", 1, err) < 0)
		return -1;
	log_info("store %s: layer %s has the content of layer %s (diff_id %s): stored once, "
		 "not fetched", s->dir, a->info->digest, same, a->info->diff_id);
	return 1;
}

int store_layer_dedup(struct store *s, const struct store_layer_info *info, int64_t owner,
		      alps_error **err)
{
	if (!info->diff_id)
		return 0;
	if (store_check_digest(info->digest, "layer digest", err) < 0 ||
	    store_check_digest(info->diff_id, "diff id", err) < 0 ||
	    ((!info->media_type || !*info->media_type) &&
	     alps_fail(err, ALPS_E_INVALID, "media type missing") < 0))
		return store_ctx(s, err, "deduplicating a layer", NULL);
	struct dedup_arg a = { .info = info, .owner = owner };
	store_lock(s);
	int r = store_tx(s, dedup_tx, &a, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "deduplicating layer", info->digest) : r;
}
