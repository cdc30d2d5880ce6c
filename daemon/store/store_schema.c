/* store_schema.c: the database schema, its migrations, and the checks made
 * when alps.db is opened.
 *
 * PRAGMA user_version is the schema version.  Each migration step brings the
 * schema to the next version; the steps a database needs run in one
 * transaction with the new user_version, so a crash leaves the old version
 * or the new one.  A step, once released, never changes: a new need is a new
 * step.  A database of a version newer than this code knows is refused: an
 * older alpsd cannot know what the newer one's rows mean. */
#include <config.h>

#include <string.h>

#include "common/log.h"
#include "daemon/store/store_int.h"

/* Version 1: images, their tags and their layers. */
static const char schema_v1[] =
	"CREATE TABLE images ("
	"  digest        TEXT PRIMARY KEY NOT NULL,"
	"  config_digest TEXT NOT NULL,"
	"  platform      TEXT NOT NULL,"
	"  manifest_json TEXT NOT NULL,"
	"  config_json   TEXT NOT NULL,"
	"  size          INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),"
	"  created_ms    INTEGER NOT NULL,"
	"  last_used_ms  INTEGER NOT NULL,"
	"  pinned        INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1))"
	");"
	"CREATE INDEX images_last_used ON images(last_used_ms);"
	/* ref: a canonical reference, "docker.io/library/ubuntu:24.04". */
	"CREATE TABLE tags ("
	"  ref   TEXT PRIMARY KEY NOT NULL,"
	"  image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE"
	");"
	"CREATE INDEX tags_image ON tags(image);"
	/* file: "<algo>-<hex>.sqfs" under layers/; refcount: images using it,
	 * recomputed from image_layers at every start. */
	"CREATE TABLE layers ("
	"  digest          TEXT PRIMARY KEY NOT NULL,"
	"  diff_id         TEXT,"
	"  media_type      TEXT NOT NULL,"
	"  compressed_size INTEGER NOT NULL CHECK (compressed_size >= 0),"
	"  squashfs_size   INTEGER NOT NULL CHECK (squashfs_size >= 0),"
	"  file            TEXT NOT NULL UNIQUE,"
	"  refcount        INTEGER NOT NULL DEFAULT 0 CHECK (refcount >= 0),"
	"  last_used_ms    INTEGER NOT NULL"
	");"
	/* An image may list one layer twice (empty layers), hence the
	 * position in the key. */
	"CREATE TABLE image_layers ("
	"  image    TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,"
	"  position INTEGER NOT NULL CHECK (position >= 0),"
	"  layer    TEXT NOT NULL REFERENCES layers(digest) ON DELETE RESTRICT,"
	"  PRIMARY KEY (image, position)"
	") WITHOUT ROWID;"
	"CREATE INDEX image_layers_layer ON image_layers(layer);";

/* Version 2: who may use private images, jobs, in-flight pulls, counters. */
static const char schema_v2[] =
	/* No row: public on the node.  Rows: those uids (and admins) only. */
	"CREATE TABLE image_access ("
	"  image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,"
	"  uid   INTEGER NOT NULL CHECK (uid >= 0),"
	"  PRIMARY KEY (image, uid)"
	") WITHOUT ROWID;"
	"CREATE INDEX image_access_uid ON image_access(uid);"
	/* RESTRICT: an image a job uses cannot go. */
	"CREATE TABLE jobs ("
	"  id               TEXT PRIMARY KEY NOT NULL,"
	"  uid              INTEGER NOT NULL CHECK (uid >= 0),"
	"  user_name        TEXT NOT NULL,"
	"  image            TEXT REFERENCES images(digest) ON DELETE RESTRICT,"
	"  state            TEXT NOT NULL,"
	"  created_ms       INTEGER NOT NULL,"
	"  environment_json TEXT,"
	"  mounts           TEXT"
	");"
	"CREATE INDEX jobs_image ON jobs(image);"
	"CREATE INDEX jobs_uid ON jobs(uid);"
	"CREATE TABLE pulls ("
	"  id          INTEGER PRIMARY KEY,"
	"  ref         TEXT NOT NULL,"
	"  uid         INTEGER NOT NULL CHECK (uid >= 0),"
	"  started_ms  INTEGER NOT NULL,"
	"  bytes_done  INTEGER NOT NULL DEFAULT 0,"
	"  bytes_total INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE TABLE stats ("
	"  key   TEXT PRIMARY KEY NOT NULL,"
	"  value INTEGER NOT NULL DEFAULT 0"
	") WITHOUT ROWID;";

/* Version 3: access per origin, and who may reuse a layer.  An image's
 * access rows name the origin ("registry/repository") it was pulled from
 * privately, so that a pull without credentials from one origin cannot
 * widen what was pulled privately from another; rows from version 2 get
 * the origin '' (unknown: it matches no pull).  layer_access: the uids
 * (-1: everyone) that fetched a layer or proved they can.  tags.origin:
 * see below ('' for tags from before: shown to whoever sees the image). */
static const char schema_v3[] =
	"CREATE TABLE image_access_v3 ("
	"  image  TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,"
	"  uid    INTEGER NOT NULL CHECK (uid >= 0),"
	"  origin TEXT NOT NULL,"
	"  PRIMARY KEY (image, uid, origin)"
	") WITHOUT ROWID;"
	"INSERT INTO image_access_v3(image, uid, origin) SELECT image, uid, '' FROM image_access;"
	"DROP TABLE image_access;"
	"ALTER TABLE image_access_v3 RENAME TO image_access;"
	"CREATE INDEX image_access_uid ON image_access(uid);"
	/* The origin of the pull that set a tag: of a private image, a user
	 * sees the tags of the origins they pulled it from. */
	"ALTER TABLE tags ADD COLUMN origin TEXT NOT NULL DEFAULT '';"
	"CREATE TABLE layer_access ("
	"  layer TEXT NOT NULL REFERENCES layers(digest) ON DELETE CASCADE,"
	"  uid   INTEGER NOT NULL CHECK (uid >= -1),"
	"  PRIMARY KEY (layer, uid)"
	") WITHOUT ROWID;";

/* Version 4: layers deduplicated by their uncompressed content, and their
 * integrity.  The same
 * tar compressed two ways (gzip, zstd) has two blob digests and one
 * diff_id: the second blob becomes an alias of the first one's layer, with
 * no file of its own.  Images and access rows name the layer, never the
 * alias. */
static const char schema_v4[] =
	"CREATE TABLE layer_aliases ("
	"  digest          TEXT PRIMARY KEY NOT NULL,"
	"  layer           TEXT NOT NULL REFERENCES layers(digest) ON DELETE CASCADE,"
	"  media_type      TEXT NOT NULL,"
	"  compressed_size INTEGER NOT NULL CHECK (compressed_size >= 0)"
	") WITHOUT ROWID;"
	"CREATE INDEX layer_aliases_layer ON layer_aliases(layer);"
	"CREATE INDEX layers_diff_id ON layers(diff_id);"
	/* Integrity: checksum, the sha256 of the squashfs file as committed
	 * (NULL for older rows until a verify records it); damaged, set by a
	 * verify that found the file changed: the layer counts as missing
	 * until a pull fetches it again. */
	"ALTER TABLE layers ADD COLUMN checksum TEXT;"
	"ALTER TABLE layers ADD COLUMN damaged INTEGER NOT NULL DEFAULT 0 CHECK (damaged IN (0, 1));";

static const struct migration {
	int version;            /* user_version after the step */
	const char *sql;
} migrations[] = {
	{ 1, schema_v1 },
	{ 2, schema_v2 },
	{ 3, schema_v3 },
	{ 4, schema_v4 },
};

_Static_assert(ARRAY_SIZE(migrations) == STORE_SCHEMA_VERSION,
	       "one migration step per schema version");

static int set_pragmas(struct store *s, alps_error **err)
{
	_cleanup_free_ char *mode = NULL;
	/* The first statement reads the header: a file that is not a
	 * database fails here. */
	if (sql_text(s, err, &mode, "PRAGMA journal_mode = WAL", NULL) < 0)
		return -1;
	if (!mode || strcmp(mode, "wal") != 0)
		return alps_fail(err, ALPS_E_IO, "alps.db: cannot use the WAL journal (got %s)",
				 mode ? mode : "nothing");
	/* FULL: a commit that returned survives a power loss, so a pull
	 * reported done stays done, and a removal's rows are gone for good
	 * before its files are unlinked. */
	return sql_exec(s, err, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL");
}

static int quick_check(struct store *s, alps_error **err)
{
	_cleanup_free_ char *res = NULL;
	int r = sql_text(s, err, &res, "PRAGMA quick_check(1)", NULL);
	if (r < 0)
		return -1;
	if (r == 0 || !res || strcmp(res, "ok") != 0) {
		_cleanup_free_ char *esc = log_escape(res ? res : "no result", 300);
		return alps_fail(err, ALPS_E_INTEGRITY, "quick_check: %s", esc);
	}
	return 0;
}

static int migrate_tx(struct store *s, void *arg, alps_error **err)
{
	int64_t from = *(int64_t *)arg;
	for (size_t i = 0; i < ARRAY_SIZE(migrations); i++) {
		if (migrations[i].version <= from)
			continue;
		if (sql_exec(s, err, migrations[i].sql) < 0)
			return alps_error_prefix(err, "schema step to version %d",
						 migrations[i].version);
	}
	/* PRAGMA takes no parameters; the number is ours, not input. */
	char sql[64];
	if (xsnprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION) < 0)
		return alps_fail(err, ALPS_E_INTERNAL, "user_version statement too long");
	return sql_exec(s, err, sql);
}

static int migrate(struct store *s, alps_error **err)
{
	int64_t version = 0;
	if (sql_int(s, err, &version, "PRAGMA user_version", NULL) < 0)
		return -1;
	if (version > STORE_SCHEMA_VERSION)
		return alps_fail(err, ALPS_E_VERSION,
				 "alps.db has schema version %lld, newer than the %d this alpsd "
				 "knows; refusing to use it (run the newer alpsd, or move "
				 "alps.db aside to start with an empty store)",
				 (long long)version, STORE_SCHEMA_VERSION);
	if (version < 0)
		return alps_fail(err, ALPS_E_INTEGRITY, "alps.db has schema version %lld",
				 (long long)version);
	if (version == STORE_SCHEMA_VERSION)
		return 0;
	if (store_tx(s, migrate_tx, &version, err) < 0)
		return alps_error_prefix(err, "upgrading alps.db from schema version %lld to %d",
					 (long long)version, STORE_SCHEMA_VERSION);
	if (version > 0)
		log_notice("store %s: upgraded alps.db from schema version %lld to %d", s->dir,
			   (long long)version, STORE_SCHEMA_VERSION);
	return 0;
}

int store_schema_open(struct store *s, alps_error **err)
{
	if (set_pragmas(s, err) == 0 && quick_check(s, err) == 0 && migrate(s, err) == 0)
		return 0;
	if (err && *err && (*err)->code == ALPS_E_INTEGRITY)
		return alps_error_prefix(err, "alps.db is corrupt or not an sqlite database "
					      "(move it aside to start with an empty store)");
	return -1;
}
