/* store_import.c: what alps import needs of the store beyond a pull's
 * calls: who may take a tag, and undoing the layers of a failed import. */
#include <config.h>

#include <string.h>

#include "common/log.h"
#include "daemon/store/store_int.h"

int store_tag_claimable(struct store *s, const char *tag, const char *digest, int64_t uid,
			alps_error **err)
{
	_cleanup_free_ char *now = NULL;
	if (uid < 0)
		return 0;
	store_lock(s);
	int r = sql_text(s, err, &now, "SELECT image FROM tags WHERE ref = ?1", "s", tag);
	int64_t own = 0;
	bool other = r > 0 && strcmp(now, digest) != 0;
	if (other)
		r = sql_int(s, err, &own,
			    "SELECT 1 FROM image_access WHERE image = ?1 AND uid = ?2 AND "
			    "origin = '" STORE_ORIGIN_IMPORT "' LIMIT 1",
			    "si", now, uid);
	store_unlock(s);
	if (r < 0)
		return store_ctx(s, err, "checking tag", tag);
	if (other && !own)
		return alps_fail(err, ALPS_E_EXISTS,
				 "the tag %s names another image (%s) that you did not import: "
				 "choose another --tag", tag, now);
	return 0;
}

struct drop_arg {
	const char *digest;
	struct removal rm;
};

static int drop_tx(struct store *s, void *arg, alps_error **err)
{
	struct drop_arg *a = arg;
	_cleanup_free_ char *layer = NULL;
	int64_t refs = 0;
	int r = store_canonical_locked(s, a->digest, &layer, err);
	if (r <= 0)
		return r;
	r = sql_int(s, err, &refs, "SELECT refcount FROM layers WHERE digest = ?1", "s", layer);
	if (r <= 0 || refs > 0)
		return r < 0 ? -1 : 0;
	struct store_strv dead = { 0 };
	store_strv_add(&dead, steal_pointer(&layer));
	r = store_drop_unused_locked(s, &dead, &a->rm, err);
	store_strv_clear(&dead);
	return r;
}

void store_layer_drop_unused(struct store *s, const char *digest)
{
	struct drop_arg a = { .digest = digest };
	struct store_removed total = { 0 };
	alps_error *err = NULL;
	store_lock(s);
	int r = store_removal_finish(s, store_tx(s, drop_tx, &a, &err), &a.rm, &total);
	store_unlock(s);
	if (r < 0) {
		log_warn("store %s: cannot drop layer %s: %s", s->dir, digest, err->msg);
		alps_error_free(err);
	}
}
