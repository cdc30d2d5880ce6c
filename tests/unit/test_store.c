/* test_store.c: the image store (daemon/store/): schema and migrations,
 * layer commits, dedupe, start-up repair, removal, visibility, lookups,
 * collection, hostile input, a corrupt database, threads.
 *
 * Each test owns a temp directory (setup/teardown) and, most of them, a
 * store opened on it.  Raw sqlite on alps.db stands in for an older alpsd,
 * a crash or a tampering admin, and checks what the API does not show. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/store/store.h"

struct fixture {
	char dir[256];
	struct store *s;
};

/* ---- helpers ---------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	chmod(path, 0700);
	return remove(path);
}

static void rm_rf(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup_dir(void **state)
{
	struct fixture *f = xzalloc(sizeof(*f));
	const char *tmp = getenv("TMPDIR");
	if (xsnprintf(f->dir, sizeof(f->dir), "%s/alps-test-store-XXXXXX",
		      tmp && *tmp == '/' ? tmp : "/tmp") < 0 ||
	    !mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int setup_store(void **state)
{
	if (setup_dir(state) < 0)
		return -1;
	struct fixture *f = *state;
	alps_error *err = NULL;
	if (store_open(f->dir, &f->s, &err) < 0) {
		fprintf(stderr, "store_open: %s\n", err->msg);
		alps_error_free(err);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	store_close(f->s);
	rm_rf(f->dir);
	free(f);
	return 0;
}

static char *path_in(const struct fixture *f, const char *rel)
{
	return xasprintf("%s/%s", f->dir, rel);
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

static bool exists_in(const struct fixture *f, const char *rel)
{
	_cleanup_free_ char *p = path_in(f, rel);
	return exists(p);
}

/* No cmocka assertion: worker threads call it. */
static int try_write_file(const char *path, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	char buf[4096];
	if (fd < 0)
		return -1;
	memset(buf, 'q', sizeof(buf));
	while (size > 0) {
		size_t n = size < sizeof(buf) ? size : sizeof(buf);
		if (write_all(fd, buf, n) < 0) {
			close(fd);
			return -1;
		}
		size -= n;
	}
	return close(fd);
}

static void write_file(const char *path, size_t size)
{
	if (try_write_file(path, size) < 0)
		fail_msg("writing %s: %s", path, strerror(errno));
}

static void copy_file(const char *from, const char *to)
{
	_cleanup_fclose_ FILE *in = fopen(from, "rb");
	_cleanup_fclose_ FILE *out = fopen(to, "wbx");
	char buf[4096];
	size_t n;
	assert_non_null(in);
	assert_non_null(out);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	assert_false(ferror(in));
}

/* "sha256:" and 64 hex digits made from seed. */
static void mkdigest(char out[80], unsigned seed)
{
	snprintf(out, 80, "sha256:%08x%056x", seed, 0u);
}

/* Macros so that the call has set the error before it is looked at. */
#define expect_ok(call, e) expect_ok_at((call), &(e))
#define expect_fail(call, e, code) expect_fail_at((call), &(e), (code))

static void expect_ok_at(int r, alps_error **err)
{
	if (r < 0)
		fail_msg("unexpected error: %s", *err ? (*err)->msg : "(none)");
	assert_null(*err);
}

/* Expect failure with code; return the message (caller frees), reset *err. */
static char *expect_fail_at(int r, alps_error **err, int code)
{
	assert_int_equal(r, -1);
	assert_non_null(*err);
	if ((*err)->code != code)
		fail_msg("expected %s, got %s: %s", alps_code_name(code),
			 alps_code_name((*err)->code), (*err)->msg);
	char *msg = xstrdup((*err)->msg);
	alps_error_free(*err);
	*err = NULL;
	return msg;
}

static void commit_layer(struct store *s, unsigned seed, size_t size)
{
	char digest[80];
	alps_error *err = NULL;
	mkdigest(digest, seed);
	_cleanup_free_ char *tmp = store_tmp_path(s);
	write_file(tmp, size);
	struct store_layer_info info = { .digest = digest,
					 .media_type = "application/vnd.oci.image.layer.v1.tar+gzip",
					 .compressed_size = size / 2 };
	expect_ok(store_layer_commit(s, tmp, &info, NULL, &err), err);
}

/* Pulled without credentials from the tests' usual origin. */
static const struct store_origin anon = { .origin = "registry.example/test", .uid = STORE_PUBLIC };

/* A pull by uid (STORE_PUBLIC: anonymous) from origin; a real uid pulls
 * with credentials. */
static struct store_origin origin_of(const char *origin, int64_t uid)
{
	return (struct store_origin){ .origin = origin, .uid = uid, .private = uid != STORE_PUBLIC };
}

/* Commit image seed with the layers of seeds lseeds (committed before),
 * pulled from origin by uid as origin_of() says. */
static void commit_image_from(struct store *s, unsigned seed, const unsigned *lseeds, size_t n,
			      const char *tag, const struct store_origin *from)
{
	char digest[80], config[80], layers[16][80];
	const char *lp[16];
	alps_error *err = NULL;
	mkdigest(digest, seed);
	mkdigest(config, seed + 0x10000);
	for (size_t i = 0; i < n; i++) {
		mkdigest(layers[i], lseeds[i]);
		lp[i] = layers[i];
	}
	struct store_image_rec rec = { .digest = digest,
				       .config_digest = config,
				       .platform = "linux/amd64",
				       .manifest_json = "{\"schemaVersion\":2}",
				       .config_json = "{\"architecture\":\"amd64\"}" };
	expect_ok(store_image_commit(s, &rec, lp, n, tag, from, &err), err);
}

static void commit_image(struct store *s, unsigned seed, const unsigned *lseeds, size_t n,
			 const char *tag, int64_t uid)
{
	struct store_origin from = origin_of(anon.origin, uid);
	commit_image_from(s, seed, lseeds, n, tag, &from);
}

static sqlite3 *db_open(const struct fixture *f)
{
	_cleanup_free_ char *p = path_in(f, "alps.db");
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static void db_exec(const struct fixture *f, const char *sql)
{
	sqlite3 *db = db_open(f);
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

static char *db_text(const struct fixture *f, const char *sql)
{
	sqlite3 *db = db_open(f);
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	char *v = NULL;
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		v = xstrdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static int64_t db_int(const struct fixture *f, const char *sql)
{
	sqlite3 *db = db_open(f);
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void verify(struct store *s)
{
	alps_error *err = NULL;
	expect_ok(store_verify(s, &err), err);
}

static int64_t refcount(const struct fixture *f, unsigned seed)
{
	char sql[160], digest[80];
	mkdigest(digest, seed);
	snprintf(sql, sizeof(sql), "SELECT refcount FROM layers WHERE digest = '%s'", digest);
	return db_int(f, sql);
}

static bool layer_file_exists(struct store *s, unsigned seed)
{
	char digest[80];
	_cleanup_free_ char *path = NULL;
	alps_error *err = NULL;
	mkdigest(digest, seed);
	expect_ok(store_layer_path(s, digest, &path, &err), err);
	return exists(path);
}

static struct store_image *find(struct store *s, const char *what, int64_t uid)
{
	struct store_image *img = NULL;
	alps_error *err = NULL;
	expect_ok(store_image_find(s, what, uid, &img, &err), err);
	return img;
}

static bool found(struct store *s, const char *what, int64_t uid)
{
	struct store_image *img = NULL;
	alps_error *err = NULL;
	int r = store_image_find(s, what, uid, &img, &err);
	if (r < 0) {
		assert_int_equal(err->code, ALPS_E_NOT_FOUND);
		alps_error_free(err);
		return false;
	}
	store_image_free(img);
	return true;
}

static size_t count_entries(const struct fixture *f, const char *sub)
{
	_cleanup_free_ char *p = path_in(f, sub);
	_cleanup_closedir_ DIR *d = opendir(p);
	size_t n = 0;
	struct dirent *de;
	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	return n;
}

#define TAG_A "docker.io/library/ubuntu:24.04"
#define TAG_B "docker.io/library/ubuntu:latest"
#define TAG_C "registry.example:5000/hpc/pytorch:26.01"

/* ---- schema ----------------------------------------------------------- */

static void test_schema_create_reopen(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store *again = NULL;

	assert_true(exists_in(f, "alps.db"));
	assert_true(exists_in(f, "layers"));
	assert_true(exists_in(f, "tmp"));
	assert_int_equal(db_int(f, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	assert_int_equal(db_int(f, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
				   "name IN ('images', 'tags', 'layers', 'image_layers', 'jobs', "
				   "'image_access', 'pulls', 'stats')"),
			 8);
	/* One store per directory: a second open is refused. */
	char *msg = expect_fail(store_open(f->dir, &again, &err), err, ALPS_E_BUSY);
	assert_non_null(strstr(msg, f->dir));
	assert_null(again);
	free(msg);

	commit_layer(f->s, 1, 100);
	unsigned l[] = { 1 };
	commit_image(f->s, 100, l, 1, TAG_A, STORE_PUBLIC);
	store_close(f->s);
	f->s = NULL;
	_cleanup_free_ char *mode = db_text(f, "PRAGMA journal_mode");
	assert_string_equal(mode, "wal");
	expect_ok(store_open(f->dir, &f->s, &err), err);
	struct store_image *img = find(f->s, TAG_A, STORE_UID_ANY);
	assert_int_equal(img->nlayers, 1);
	assert_int_equal(img->size, 100);
	store_image_free(img);
	verify(f->s);

	/* Relative state directories are refused. */
	msg = expect_fail(store_open("relative/dir", &again, &err), err, ALPS_E_INVALID);
	free(msg);
}

/* The version 1 schema exactly as the first release created it. */
static const char v1_sql[] =
	"CREATE TABLE images (digest TEXT PRIMARY KEY NOT NULL, config_digest TEXT NOT NULL,"
	" platform TEXT NOT NULL, manifest_json TEXT NOT NULL, config_json TEXT NOT NULL,"
	" size INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0), created_ms INTEGER NOT NULL,"
	" last_used_ms INTEGER NOT NULL, pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)));"
	"CREATE INDEX images_last_used ON images(last_used_ms);"
	"CREATE TABLE tags (ref TEXT PRIMARY KEY NOT NULL,"
	" image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE);"
	"CREATE INDEX tags_image ON tags(image);"
	"CREATE TABLE layers (digest TEXT PRIMARY KEY NOT NULL, diff_id TEXT,"
	" media_type TEXT NOT NULL, compressed_size INTEGER NOT NULL CHECK (compressed_size >= 0),"
	" squashfs_size INTEGER NOT NULL CHECK (squashfs_size >= 0), file TEXT NOT NULL UNIQUE,"
	" refcount INTEGER NOT NULL DEFAULT 0 CHECK (refcount >= 0), last_used_ms INTEGER NOT NULL);"
	"CREATE TABLE image_layers (image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,"
	" position INTEGER NOT NULL CHECK (position >= 0),"
	" layer TEXT NOT NULL REFERENCES layers(digest) ON DELETE RESTRICT,"
	" PRIMARY KEY (image, position)) WITHOUT ROWID;"
	"CREATE INDEX image_layers_layer ON image_layers(layer);"
	"INSERT INTO layers VALUES ('sha256:00000001" "00000000000000000000000000000000000000000000000000000000',"
	" NULL, 'application/vnd.oci.image.layer.v1.tar', 10, 300,"
	" 'sha256-00000001" "00000000000000000000000000000000000000000000000000000000.sqfs', 1, 5);"
	"INSERT INTO images VALUES ('sha256:00000064" "00000000000000000000000000000000000000000000000000000000',"
	" 'sha256:00010064" "00000000000000000000000000000000000000000000000000000000', 'linux/amd64',"
	" '{}', '{}', 300, 1, 2, 0);"
	"INSERT INTO image_layers VALUES ('sha256:00000064" "00000000000000000000000000000000000000000000000000000000', 0,"
	" 'sha256:00000001" "00000000000000000000000000000000000000000000000000000000');"
	"INSERT INTO tags VALUES ('" TAG_A "', 'sha256:00000064" "00000000000000000000000000000000000000000000000000000000');"
	"PRAGMA user_version = 1;";

static void test_migration_from_v1(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char digest[80];

	db_exec(f, v1_sql);
	_cleanup_free_ char *layers = path_in(f, "layers");
	assert_int_equal(mkdir(layers, 0700), 0);
	_cleanup_free_ char *file = path_in(
		f, "layers/sha256-00000001" "00000000000000000000000000000000000000000000000000000000.sqfs");
	write_file(file, 300);

	expect_ok(store_open(f->dir, &f->s, &err), err);
	assert_int_equal(db_int(f, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	assert_int_equal(db_int(f, "SELECT count(*) FROM jobs"), 0);
	assert_int_equal(db_int(f, "SELECT count(*) FROM image_access"), 0);
	/* The old rows survive and work with the new tables. */
	struct store_image *img = find(f->s, TAG_A, 1234);
	mkdigest(digest, 100);
	assert_string_equal(img->digest, digest);
	assert_false(img->restricted);
	assert_int_equal(img->nlayers, 1);
	assert_int_equal(img->layers[0].refcount, 1);
	struct store_job job = { .id = "77", .uid = 1234, .user = "alice", .image_digest = digest,
				 .state = STORE_JOB_READY };
	expect_ok(store_job_insert(f->s, &job, &err), err);
	store_image_free(img);
	verify(f->s);
}

/* What version 2 added, as it created it, and a private image on top of
 * the version 1 rows: uid 1000's, from an origin nobody recorded. */
static const char v2_sql[] =
	"CREATE TABLE image_access (image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,"
	" uid INTEGER NOT NULL CHECK (uid >= 0), PRIMARY KEY (image, uid)) WITHOUT ROWID;"
	"CREATE INDEX image_access_uid ON image_access(uid);"
	"CREATE TABLE jobs (id TEXT PRIMARY KEY NOT NULL, uid INTEGER NOT NULL CHECK (uid >= 0),"
	" user_name TEXT NOT NULL, image TEXT REFERENCES images(digest) ON DELETE RESTRICT,"
	" state TEXT NOT NULL, created_ms INTEGER NOT NULL, environment_json TEXT, mounts TEXT);"
	"CREATE INDEX jobs_image ON jobs(image);"
	"CREATE INDEX jobs_uid ON jobs(uid);"
	"CREATE TABLE pulls (id INTEGER PRIMARY KEY, ref TEXT NOT NULL,"
	" uid INTEGER NOT NULL CHECK (uid >= 0), started_ms INTEGER NOT NULL,"
	" bytes_done INTEGER NOT NULL DEFAULT 0, bytes_total INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE stats (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL DEFAULT 0)"
	" WITHOUT ROWID;"
	"INSERT INTO image_access VALUES ('sha256:00000064" "00000000000000000000000000000000000000000000000000000000', 1000);"
	"PRAGMA user_version = 2;";

static void test_migration_from_v2(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char digest[80], layer[80];
	bool ok = true;

	db_exec(f, v1_sql);
	db_exec(f, v2_sql);
	_cleanup_free_ char *layers = path_in(f, "layers");
	assert_int_equal(mkdir(layers, 0700), 0);
	_cleanup_free_ char *file = path_in(
		f, "layers/sha256-00000001" "00000000000000000000000000000000000000000000000000000000.sqfs");
	write_file(file, 300);

	expect_ok(store_open(f->dir, &f->s, &err), err);
	assert_int_equal(db_int(f, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	/* The access row kept, its origin unknown. */
	assert_int_equal(db_int(f, "SELECT count(*) FROM image_access WHERE uid = 1000 AND "
				   "origin = ''"), 1);
	assert_int_equal(db_int(f, "SELECT count(*) FROM layer_access"), 0);
	mkdigest(digest, 100);
	mkdigest(layer, 1);
	assert_true(found(f->s, TAG_A, 1000));
	assert_false(found(f->s, TAG_A, 1001));
	/* The owner may reuse its layer; nobody else, root neither. */
	expect_ok(store_layer_usable(f->s, layer, 1000, &ok, &err), err);
	assert_true(ok);
	expect_ok(store_layer_usable(f->s, layer, 1001, &ok, &err), err);
	assert_false(ok);
	expect_ok(store_layer_usable(f->s, layer, 0, &ok, &err), err);
	assert_false(ok);
	/* An unknown origin is never the origin of a pull without
	 * credentials: the image stays private. */
	unsigned l[] = { 1 };
	struct store_origin from = origin_of("docker.io/library/ubuntu", STORE_PUBLIC);
	commit_image_from(f->s, 100, l, 1, NULL, &from);
	assert_false(found(f->s, TAG_A, 1001));
	assert_true(found(f->s, TAG_A, 1000));
	verify(f->s);
}

/* Access per origin: a pull without credentials from another origin does
 * not make a privately pulled image public; one from the same origin does
 * (that registry serves it to anyone). */
static void test_access_per_origin(void **state)
{
	struct fixture *f = *state;
	char digest[80];
	mkdigest(digest, 100);
	commit_layer(f->s, 1, 100);
	unsigned l[] = { 1 };
	struct store_origin victim = origin_of("private.example/victim/app", 1000);
	struct store_origin attacker = origin_of("evil.example/hostile/app", 1001);
	attacker.private = false;
	struct store_origin same = origin_of("private.example/victim/app", 1003);
	same.private = false;

	commit_image_from(f->s, 100, l, 1, "private.example/victim/app:v1", &victim);
	assert_false(found(f->s, digest, 1001));
	commit_image_from(f->s, 100, l, 1, "evil.example/hostile/app:latest", &attacker);
	/* The attacker fetched it from their origin: theirs too, nobody else's. */
	assert_true(found(f->s, "private.example/victim/app:v1", 1000));
	assert_true(found(f->s, "evil.example/hostile/app:latest", 1001));
	assert_false(found(f->s, "private.example/victim/app:v1", 1002));
	assert_false(found(f->s, digest, 1002));
	struct store_image *img = find(f->s, digest, STORE_UID_ANY);
	assert_true(img->restricted);
	store_image_free(img);
	assert_int_equal(db_int(f, "SELECT count(DISTINCT origin) FROM image_access"), 2);
	/* Each sees the tags of their own origin (admins all). */
	assert_false(found(f->s, "private.example/victim/app:v1", 1001));
	assert_false(found(f->s, "evil.example/hostile/app:latest", 1000));
	img = find(f->s, digest, 1001);
	assert_int_equal(img->ntags, 1);
	assert_string_equal(img->tags[0], "evil.example/hostile/app:latest");
	store_image_free(img);
	img = find(f->s, digest, STORE_UID_ANY);
	assert_int_equal(img->ntags, 2);
	store_image_free(img);

	/* Another private pull from the attacker's origin: the rows from two
	 * origins stay; then the victim's origin goes public: still private
	 * because of the attacker's origin's row. */
	commit_image_from(f->s, 100, l, 1, NULL, &same);
	assert_false(found(f->s, digest, 1002));
	assert_true(found(f->s, digest, 1003));

	/* With only rows from one origin, a pull without credentials from it
	 * makes the image public. */
	commit_layer(f->s, 2, 100);
	unsigned l2[] = { 2 };
	commit_image_from(f->s, 101, l2, 1, "private.example/victim/app:v2", &victim);
	assert_false(found(f->s, "private.example/victim/app:v2", 1002));
	struct store_origin same2 = origin_of("private.example/victim/app", STORE_PUBLIC);
	commit_image_from(f->s, 101, l2, 1, NULL, &same2);
	assert_true(found(f->s, "private.example/victim/app:v2", 1002));
	verify(f->s);
}

/* Who may reuse a layer (store.h, "Layer reuse"). */
static void test_layer_usable(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char l1[80], l2[80], l3[80], img[80];
	bool ok = true;
	mkdigest(l1, 1);
	mkdigest(l2, 2);
	mkdigest(l3, 3);
	mkdigest(img, 100);
	commit_layer(f->s, 1, 100);
	commit_layer(f->s, 2, 100);

	/* An orphan nobody was recorded for: nobody, root neither. */
	expect_ok(store_layer_usable(f->s, l1, 0, &ok, &err), err);
	assert_false(ok);
	expect_ok(store_layer_allow(f->s, l1, 1000, &err), err);
	expect_ok(store_layer_usable(f->s, l1, 1000, &ok, &err), err);
	assert_true(ok);
	expect_ok(store_layer_usable(f->s, l1, 1001, &ok, &err), err);
	assert_false(ok);
	expect_ok(store_layer_allow(f->s, l1, STORE_PUBLIC, &err), err);
	expect_ok(store_layer_usable(f->s, l1, 1001, &ok, &err), err);
	assert_true(ok);

	/* Held by a private image: its users only; by a public one: all. */
	unsigned a[] = { 2 };
	commit_image(f->s, 100, a, 1, TAG_A, 1000);
	expect_ok(store_layer_usable(f->s, l2, 1000, &ok, &err), err);
	assert_true(ok);
	expect_ok(store_layer_usable(f->s, l2, 1001, &ok, &err), err);
	assert_false(ok);
	expect_ok(store_image_usable(f->s, img, 1001, &ok, &err), err);
	assert_false(ok);
	expect_ok(store_image_usable(f->s, img, 0, &ok, &err), err);
	assert_false(ok);
	expect_ok(store_image_usable(f->s, img, 1000, &ok, &err), err);
	assert_true(ok);
	commit_image(f->s, 101, a, 1, TAG_B, STORE_PUBLIC);
	expect_ok(store_layer_usable(f->s, l2, 1001, &ok, &err), err);
	assert_true(ok);

	/* Not in the store; bad input. */
	expect_ok(store_layer_usable(f->s, l3, 1000, &ok, &err), err);
	assert_false(ok);
	_cleanup_free_ char *msg = expect_fail(store_layer_allow(f->s, l3, 1000, &err), err,
					       ALPS_E_NOT_FOUND);
	free(msg);
	msg = expect_fail(store_layer_usable(f->s, "sha256:xyz", 1000, &ok, &err), err,
			  ALPS_E_INVALID);
	free(msg);
	msg = expect_fail(store_layer_usable(f->s, l1, -5, &ok, &err), err, ALPS_E_INVALID);
	/* Removing the layer takes its rows. */
	struct store_removed rm;
	expect_ok(store_gc(f->s, 0, &rm, &err), err);
	assert_int_equal(db_int(f, "SELECT count(*) FROM layer_access"), 0);
	verify(f->s);
}

static mode_t mode_of(const struct fixture *f, const char *rel)
{
	_cleanup_free_ char *p = path_in(f, rel);
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	return st.st_mode & 07777;
}

/* The store is root's alone; start-up repairs what an older alpsd left. */
static void test_modes(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	commit_layer(f->s, 1, 100);
	assert_int_equal(mode_of(f, "."), 0700);
	assert_int_equal(mode_of(f, "alps.db"), 0600);
	assert_int_equal(mode_of(f, "alps.db-wal"), 0600);
	assert_int_equal(mode_of(f, "alps.db-shm"), 0600);
	store_close(f->s);
	f->s = NULL;
	_cleanup_free_ char *db = path_in(f, "alps.db");
	assert_int_equal(chmod(f->dir, 0755), 0);
	assert_int_equal(chmod(db, 0644), 0);
	_cleanup_free_ char *layers = path_in(f, "layers");
	assert_int_equal(chmod(layers, 0755), 0);
	expect_ok(store_open(f->dir, &f->s, &err), err);
	assert_int_equal(mode_of(f, "."), 0700);
	assert_int_equal(mode_of(f, "layers"), 0700);
	assert_int_equal(mode_of(f, "alps.db"), 0600);
	assert_int_equal(mode_of(f, "alps.db-shm"), 0600);
}

static void test_refuse_newer_version(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	db_exec(f, "CREATE TABLE future (x); PRAGMA user_version = 99;");
	_cleanup_free_ char *msg = expect_fail(store_open(f->dir, &f->s, &err), err,
					       ALPS_E_VERSION);
	assert_null(f->s);
	assert_non_null(strstr(msg, "schema version 99"));
	assert_non_null(strstr(msg, f->dir));
	/* Nothing touched. */
	assert_int_equal(db_int(f, "PRAGMA user_version"), 99);
	assert_int_equal(db_int(f, "SELECT count(*) FROM sqlite_master WHERE name = 'images'"), 0);
}

/* ---- layers ----------------------------------------------------------- */

static void test_layer_commit(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char digest[80];
	struct store_layer *l = NULL;
	mkdigest(digest, 7);

	_cleanup_free_ char *tmp = store_tmp_path(f->s);
	_cleanup_free_ char *tmp2 = store_tmp_path(f->s);
	assert_string_not_equal(tmp, tmp2);
	_cleanup_free_ char *tmpdir = path_in(f, "tmp/");
	assert_true(str_has_prefix(tmp, tmpdir));
	_cleanup_free_ char *path = NULL;
	expect_ok(store_layer_path(f->s, digest, &path, &err), err);
	_cleanup_free_ char *want = path_in(
		f, "layers/sha256-00000007" "00000000000000000000000000000000000000000000000000000000.sqfs");
	assert_string_equal(path, want);

	write_file(tmp, 5000);
	/* Written but not committed: neither visible nor known. */
	assert_false(exists(path));
	char *msg = expect_fail(store_layer_get(f->s, digest, &l, &err), err, ALPS_E_NOT_FOUND);
	assert_null(l);
	assert_non_null(strstr(msg, digest));
	free(msg);

	struct store_layer_info info = { .digest = digest, .diff_id = digest,
					 .media_type = "application/vnd.oci.image.layer.v1.tar+zstd",
					 .compressed_size = 1234 };
	expect_ok(store_layer_commit(f->s, tmp, &info, &l, &err), err);
	assert_false(exists(tmp));
	assert_true(exists(path));
	assert_string_equal(l->path, path);
	assert_int_equal(l->squashfs_size, 5000);
	assert_int_equal(l->compressed_size, 1234);
	assert_int_equal(l->refcount, 0);
	assert_string_equal(l->media_type, info.media_type);
	store_layer_free(l);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0400);

	/* The same digest again: the new copy goes, the row stays one. */
	write_file(tmp2, 777);
	expect_ok(store_layer_commit(f->s, tmp2, &info, NULL, &err), err);
	assert_false(exists(tmp2));
	expect_ok(store_layer_get(f->s, digest, &l, &err), err);
	assert_int_equal(l->squashfs_size, 5000);
	store_layer_free(l);
	assert_int_equal(db_int(f, "SELECT count(*) FROM layers"), 1);

	assert_int_equal(db_int(f, "SELECT value FROM stats WHERE key = 'layers_committed'"), 1);
	verify(f->s);
}

static void test_layer_commit_refused(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char digest[80];
	char *msg;
	mkdigest(digest, 7);
	struct store_layer_info info = { .digest = digest, .media_type = "t" };
	_cleanup_free_ char *tmpdir = path_in(f, "tmp/");

	/* Only files under tmp/ are taken, and they are left alone. */
	_cleanup_free_ char *outside = path_in(f, "outside");
	write_file(outside, 10);
	msg = expect_fail(store_layer_commit(f->s, outside, &info, NULL, &err), err,
			  ALPS_E_INVALID);
	assert_true(exists(outside));
	free(msg);
	_cleanup_free_ char *dotdot = xasprintf("%s/../outside", tmpdir);
	msg = expect_fail(store_layer_commit(f->s, dotdot, &info, NULL, &err), err,
			  ALPS_E_INVALID);
	assert_true(exists(outside));

	/* An empty file is not a layer; the store removes it. */
	free(msg);
	_cleanup_free_ char *tmp3 = store_tmp_path(f->s);
	write_file(tmp3, 0);
	info.digest = "sha256:00000008" "00000000000000000000000000000000000000000000000000000000";
	msg = expect_fail(store_layer_commit(f->s, tmp3, &info, NULL, &err), err, ALPS_E_INVALID);
	assert_false(exists(tmp3));
	free(msg);
	_cleanup_free_ char *tmp4 = store_tmp_path(f->s);
	write_file(tmp4, 10);
	msg = expect_fail(store_layer_commit(f->s, tmp4, NULL, NULL, &err), err, ALPS_E_INVALID);
	assert_false(exists(tmp4));
	free(msg);
	assert_int_equal(count_entries(f, "layers"), 0);
	assert_int_equal(db_int(f, "SELECT count(*) FROM layers"), 0);
	verify(f->s);
}

static void test_dedupe_and_remove(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_removed rm;
	char digest[80];

	commit_layer(f->s, 1, 1000); /* shared */
	commit_layer(f->s, 2, 2000); /* image 100 only */
	commit_layer(f->s, 3, 3000); /* image 101 only */
	unsigned a[] = { 1, 2 }, b[] = { 1, 3, 1 }; /* b lists 1 twice */
	commit_image(f->s, 100, a, 2, TAG_A, STORE_PUBLIC);
	commit_image(f->s, 101, b, 3, TAG_C, STORE_PUBLIC);
	assert_int_equal(refcount(f, 1), 2);
	assert_int_equal(refcount(f, 2), 1);
	assert_int_equal(refcount(f, 3), 1);
	assert_int_equal(db_int(f, "SELECT count(*) FROM layers"), 3);
	assert_int_equal(count_entries(f, "layers"), 3);
	struct store_image *img = find(f->s, TAG_C, STORE_UID_ANY);
	assert_int_equal(img->size, 4000);
	assert_int_equal(img->nlayers, 3);
	store_image_free(img);
	/* Committing an image again changes nothing but the tag. */
	commit_image(f->s, 100, a, 2, TAG_B, STORE_PUBLIC);
	assert_int_equal(refcount(f, 1), 2);
	verify(f->s);

	mkdigest(digest, 100);
	expect_ok(store_image_remove(f->s, digest, &rm, &err), err);
	assert_int_equal(rm.images, 1);
	assert_int_equal(rm.layers, 1);
	assert_int_equal(rm.bytes_freed, 2000);
	assert_true(layer_file_exists(f->s, 1));
	assert_false(layer_file_exists(f->s, 2));
	assert_true(layer_file_exists(f->s, 3));
	assert_int_equal(refcount(f, 1), 1);
	assert_false(found(f->s, TAG_A, STORE_UID_ANY));
	assert_false(found(f->s, TAG_B, STORE_UID_ANY));

	/* By reference: removes the image with its tags and both layers. */
	expect_ok(store_image_remove(f->s, TAG_C, &rm, &err), err);
	assert_int_equal(rm.layers, 2);
	assert_int_equal(rm.bytes_freed, 4000);
	assert_int_equal(count_entries(f, "layers"), 0);
	assert_int_equal(db_int(f, "SELECT count(*) FROM layers"), 0);
	_cleanup_free_ char *msg = expect_fail(store_image_remove(f->s, TAG_C, &rm, &err), err,
					       ALPS_E_NOT_FOUND);
	assert_non_null(strstr(msg, TAG_C));
	assert_int_equal(db_int(f, "SELECT value FROM stats WHERE key = 'bytes_freed'"), 6000);
	verify(f->s);
}

/* ---- repair ----------------------------------------------------------- */

static void test_repair(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;

	commit_layer(f->s, 1, 100);
	commit_layer(f->s, 2, 200);
	commit_layer(f->s, 3, 300);
	commit_layer(f->s, 4, 400);
	unsigned a[] = { 1, 2 }, b[] = { 3 }, c[] = { 4 };
	commit_image(f->s, 100, a, 2, TAG_A, STORE_PUBLIC);
	commit_image(f->s, 101, b, 1, TAG_B, STORE_PUBLIC);
	commit_image(f->s, 102, c, 1, TAG_C, STORE_PUBLIC);
	struct store_job job = { .id = "9", .uid = 1, .user = "u", .state = STORE_JOB_READY,
				 .image_digest = "sha256:00000064" "00000000000000000000000000000000000000000000000000000000" };
	expect_ok(store_job_insert(f->s, &job, &err), err);
	store_close(f->s);
	f->s = NULL;

	/* What a crash, a lost disk block and a careless admin leave. */
	_cleanup_free_ char *stray = path_in(
		f, "layers/sha256-000000ff" "00000000000000000000000000000000000000000000000000000000.sqfs");
	write_file(stray, 10);
	_cleanup_free_ char *junk = path_in(f, "layers/junk");
	write_file(junk, 1);
	_cleanup_free_ char *tmpfile = path_in(f, "tmp/12-3.part");
	write_file(tmpfile, 10);
	_cleanup_free_ char *tmpdir = path_in(f, "tmp/half");
	assert_int_equal(mkdir(tmpdir, 0700), 0);
	_cleanup_free_ char *tmpsub = path_in(f, "tmp/half/x");
	write_file(tmpsub, 10);
	_cleanup_free_ char *lost = path_in(
		f, "layers/sha256-00000002" "00000000000000000000000000000000000000000000000000000000.sqfs");
	assert_int_equal(unlink(lost), 0);
	_cleanup_free_ char *truncated = path_in(
		f, "layers/sha256-00000004" "00000000000000000000000000000000000000000000000000000000.sqfs");
	assert_int_equal(truncate(truncated, 10), 0);
	db_exec(f, "UPDATE layers SET refcount = 7");

	expect_ok(store_open(f->dir, &f->s, &err), err);
	assert_false(exists(stray));
	assert_false(exists(junk));
	assert_int_equal(count_entries(f, "tmp"), 0);
	/* Layer 2's row went, with image 100 and its tag; layer 1 stays as
	 * an orphan; the job lost its link. */
	assert_int_equal(db_int(f, "SELECT count(*) FROM layers WHERE digest LIKE 'sha256:00000002%'"), 0);
	assert_false(found(f->s, TAG_A, STORE_UID_ANY));
	assert_int_equal(db_int(f, "SELECT count(*) FROM tags"), 1);
	assert_int_equal(refcount(f, 1), 0);
	assert_int_equal(refcount(f, 3), 1);
	assert_true(layer_file_exists(f->s, 1));
	assert_int_equal(db_int(f, "SELECT count(*) FROM jobs WHERE id = '9' AND image IS NULL"), 1);
	/* Layer 4's file had the wrong size: row, image and file gone. */
	assert_false(exists(truncated));
	assert_false(found(f->s, TAG_C, STORE_UID_ANY));
	assert_true(found(f->s, TAG_B, STORE_UID_ANY));
	verify(f->s);

	struct store_usage u;
	expect_ok(store_df(f->s, &u, &err), err);
	assert_int_equal(u.images, 1);
	assert_int_equal(u.layers, 2);
	assert_int_equal(u.orphan_layers, 1);
	assert_int_equal(u.orphan_bytes, 100);
	assert_int_equal(u.total_bytes, 400);
	assert_int_equal(u.jobs, 1);
}

/* ---- removal ---------------------------------------------------------- */

static void test_remove_busy(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char digest[80], *job_id = NULL;
	struct store_removed rm;
	mkdigest(digest, 100);

	commit_layer(f->s, 1, 100);
	unsigned a[] = { 1 };
	commit_image(f->s, 100, a, 1, TAG_A, STORE_PUBLIC);
	struct store_job job = { .id = "4242_7", .uid = 1000, .user = "alice",
				 .image_digest = digest, .state = STORE_JOB_READY };
	expect_ok(store_job_insert(f->s, &job, &err), err);
	expect_ok(store_image_in_use(f->s, digest, &job_id, &err), err);
	assert_string_equal(job_id, "4242_7");
	free(job_id);

	_cleanup_free_ char *msg = expect_fail(store_image_remove(f->s, TAG_A, &rm, &err), err,
					       ALPS_E_BUSY);
	assert_non_null(strstr(msg, "4242_7"));
	assert_null(strstr(msg, f->dir));     /* the user's words: no store path */
	assert_int_equal(rm.images, 0);
	free(msg);
	/* The last tag would take the image: refused, the tag kept. */
	msg = expect_fail(store_image_untag(f->s, TAG_A, &rm, &err), err, ALPS_E_BUSY);
	assert_true(found(f->s, TAG_A, STORE_UID_ANY));
	assert_true(layer_file_exists(f->s, 1));
	/* gc does not take it either. */
	free(msg);
	msg = expect_fail(store_gc(f->s, 0, &rm, &err), err, ALPS_E_LIMIT);
	assert_true(found(f->s, TAG_A, STORE_UID_ANY));

	expect_ok(store_job_delete(f->s, "4242_7", &err), err);
	expect_ok(store_image_in_use(f->s, digest, &job_id, &err), err);
	assert_null(job_id);
	expect_ok(store_image_remove(f->s, digest, &rm, &err), err);
	assert_int_equal(rm.images, 1);
	assert_false(layer_file_exists(f->s, 1));
	verify(f->s);
}

static void test_untag(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_removed rm;

	commit_layer(f->s, 1, 100);
	unsigned a[] = { 1 };
	commit_image(f->s, 100, a, 1, TAG_A, STORE_PUBLIC);
	commit_image(f->s, 100, a, 1, TAG_B, STORE_PUBLIC);
	struct store_image *img = find(f->s, TAG_B, STORE_UID_ANY);
	assert_int_equal(img->ntags, 2);
	assert_string_equal(img->tags[0], TAG_A);
	assert_string_equal(img->tags[1], TAG_B);
	store_image_free(img);

	expect_ok(store_image_untag(f->s, TAG_A, &rm, &err), err);
	assert_int_equal(rm.images, 0);
	assert_false(found(f->s, TAG_A, STORE_UID_ANY));
	assert_true(found(f->s, TAG_B, STORE_UID_ANY));
	assert_true(layer_file_exists(f->s, 1));
	_cleanup_free_ char *msg = expect_fail(store_image_untag(f->s, TAG_A, &rm, &err), err,
					       ALPS_E_NOT_FOUND);
	assert_non_null(strstr(msg, "no such tag"));

	expect_ok(store_image_untag(f->s, TAG_B, &rm, &err), err);
	assert_int_equal(rm.images, 1);
	assert_int_equal(rm.layers, 1);
	assert_int_equal(rm.bytes_freed, 100);
	assert_false(layer_file_exists(f->s, 1));
	assert_int_equal(db_int(f, "SELECT count(*) FROM images"), 0);

	/* A tag moved to a new image leaves the old one, untagged. */
	commit_layer(f->s, 2, 200);
	unsigned b[] = { 2 };
	commit_image(f->s, 101, b, 1, TAG_C, STORE_PUBLIC);
	commit_layer(f->s, 1, 100);
	commit_image(f->s, 102, a, 1, TAG_C, STORE_PUBLIC);
	img = find(f->s, TAG_C, STORE_UID_ANY);
	assert_true(str_has_prefix(img->digest, "sha256:00000066"));
	store_image_free(img);
	assert_true(found(f->s, "sha256:00000065" "00000000000000000000000000000000000000000000000000000000",
			  STORE_UID_ANY));
	verify(f->s);
}

/* ---- visibility ------------------------------------------------------- */

static size_t list_count(struct store *s, int64_t uid)
{
	struct store_image *imgs = NULL;
	size_t n = 0;
	alps_error *err = NULL;
	expect_ok(store_images_list(s, uid, &imgs, &n, &err), err);
	for (size_t i = 0; i < n; i++) {
		assert_null(imgs[i].manifest_json);
		assert_true(imgs[i].nlayers > 0);
	}
	store_images_free(imgs, n);
	return n;
}

static void test_visibility(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char pub[80], priv[80];
	mkdigest(pub, 100);
	mkdigest(priv, 101);

	commit_layer(f->s, 1, 100);
	unsigned a[] = { 1 };
	commit_image(f->s, 100, a, 1, TAG_A, STORE_PUBLIC);
	commit_image(f->s, 101, a, 1, TAG_C, 1000);
	/* Another user's private pull of a public image keeps it public. */
	commit_image(f->s, 100, a, 1, TAG_A, 2000);

	assert_int_equal(list_count(f->s, STORE_UID_ANY), 2);
	assert_int_equal(list_count(f->s, 0), 2);
	assert_int_equal(list_count(f->s, 1000), 2);
	assert_int_equal(list_count(f->s, 1001), 1);
	assert_true(found(f->s, TAG_C, 1000));
	assert_false(found(f->s, TAG_C, 1001));
	assert_false(found(f->s, priv, 1001));
	assert_true(found(f->s, TAG_A, 1001));
	struct store_image *img = find(f->s, priv, STORE_UID_ANY);
	assert_true(img->restricted);
	store_image_free(img);
	img = find(f->s, pub, 2000);
	assert_false(img->restricted);
	store_image_free(img);

	expect_ok(store_image_grant(f->s, priv, 1001, &err), err);
	assert_true(found(f->s, TAG_C, 1001));
	assert_false(found(f->s, TAG_C, 1002));
	/* Granting on a public image does not make it private. */
	expect_ok(store_image_grant(f->s, pub, 1001, &err), err);
	assert_true(found(f->s, pub, 1002));
	/* Pulled without credentials: public from now on. */
	commit_image(f->s, 101, a, 1, NULL, STORE_PUBLIC);
	assert_true(found(f->s, TAG_C, 1002));

	_cleanup_free_ char *msg = expect_fail(store_image_grant(f->s, pub, -5, &err), err,
					       ALPS_E_INVALID);
	free(msg);
	msg = expect_fail(store_images_list(f->s, -7, &img, &(size_t){ 0 }, &err), err,
			  ALPS_E_INVALID);
	verify(f->s);
}

/* ---- lookups ---------------------------------------------------------- */

static void commit_named(struct store *s, const char *digest, const char *tag)
{
	alps_error *err = NULL;
	char layer[80];
	mkdigest(layer, 1);
	const char *lp[] = { layer };
	struct store_image_rec rec = { .digest = digest,
				       .config_digest = digest,
				       .platform = "linux/arm64/v8",
				       .manifest_json = "{}",
				       .config_json = "{}" };
	expect_ok(store_image_commit(s, &rec, lp, 1, tag, &anon, &err), err);
}

static void test_digest_prefix(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_image *img = NULL;
	const char *d1 = "sha256:abcdef0123451111111111111111111111111111111111111111111111111111";
	const char *d2 = "sha256:abcdef0123452222222222222222222222222222222222222222222222222222";

	commit_layer(f->s, 1, 100);
	commit_named(f->s, d1, TAG_A);
	commit_named(f->s, d2, TAG_B);

	_cleanup_free_ char *msg = expect_fail(
		store_image_find(f->s, "abcdef012345", STORE_UID_ANY, &img, &err), err,
		ALPS_E_INVALID);
	assert_non_null(strstr(msg, "ambiguous"));
	assert_null(img);
	img = find(f->s, "abcdef0123451", STORE_UID_ANY);
	assert_string_equal(img->digest, d1);
	assert_string_equal(img->platform, "linux/arm64/v8");
	assert_non_null(img->manifest_json);
	store_image_free(img);
	img = find(f->s, "sha256:abcdef0123452", STORE_UID_ANY);
	assert_string_equal(img->digest, d2);
	store_image_free(img);
	img = find(f->s, d2 + 7, STORE_UID_ANY); /* whole hex, no algorithm */
	assert_string_equal(img->digest, d2);
	store_image_free(img);
	/* Too short to be a prefix; wrong algorithm; upper case. */
	assert_false(found(f->s, "abcdef01234", STORE_UID_ANY));
	assert_false(found(f->s, "sha512:abcdef0123451", STORE_UID_ANY));
	assert_false(found(f->s, "ABCDEF0123451", STORE_UID_ANY));
	free(msg);
	msg = expect_fail(store_image_find(f->s, "", STORE_UID_ANY, &img, &err), err,
			  ALPS_E_INVALID);
	/* An ambiguous prefix removes nothing. */
	free(msg);
	msg = expect_fail(store_image_remove(f->s, "abcdef012345", NULL, &err), err,
			  ALPS_E_INVALID);
	assert_int_equal(db_int(f, "SELECT count(*) FROM images"), 2);
}

/* ---- collection ------------------------------------------------------- */

static void test_gc(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_removed rm;
	char d100[80], d101[80], d102[80];
	mkdigest(d100, 100);
	mkdigest(d101, 101);
	mkdigest(d102, 102);

	commit_layer(f->s, 1, 1000);
	commit_layer(f->s, 2, 2000);
	commit_layer(f->s, 3, 3000);
	commit_layer(f->s, 9, 500); /* an orphan: no image */
	unsigned a[] = { 1 }, b[] = { 2 }, c[] = { 3 };
	commit_image(f->s, 100, a, 1, TAG_A, STORE_PUBLIC);
	commit_image(f->s, 101, b, 1, TAG_B, STORE_PUBLIC);
	commit_image(f->s, 102, c, 1, TAG_C, STORE_PUBLIC);
	/* Use order: 100 oldest, then 101, then 102. */
	db_exec(f, "UPDATE images SET last_used_ms = CAST(substr(digest, 8, 8) AS INTEGER)");
	expect_ok(store_image_pin(f->s, d100, true, &err), err);

	/* Within the limit but with an orphan: only the orphan goes. */
	expect_ok(store_gc(f->s, 1 << 20, &rm, &err), err);
	assert_int_equal(rm.images, 0);
	assert_int_equal(rm.layers, 1);
	assert_int_equal(rm.bytes_freed, 500);
	assert_false(layer_file_exists(f->s, 9));

	/* 6000 bytes, limit 4500: the least recently used unpinned (101). */
	expect_ok(store_gc(f->s, 4500, &rm, &err), err);
	assert_int_equal(rm.images, 1);
	assert_int_equal(rm.bytes_freed, 2000);
	assert_true(found(f->s, d100, STORE_UID_ANY));
	assert_false(found(f->s, d101, STORE_UID_ANY));
	assert_true(found(f->s, d102, STORE_UID_ANY));

	/* Down to 500: 102 goes, the pinned one cannot. */
	_cleanup_free_ char *msg = expect_fail(store_gc(f->s, 500, &rm, &err), err, ALPS_E_LIMIT);
	assert_non_null(strstr(msg, "pinned"));
	assert_int_equal(rm.images, 1);
	assert_int_equal(rm.bytes_freed, 3000);
	assert_true(found(f->s, d100, STORE_UID_ANY));
	assert_false(found(f->s, d102, STORE_UID_ANY));

	expect_ok(store_image_pin(f->s, d100, false, &err), err);
	expect_ok(store_gc(f->s, 0, &rm, &err), err);
	assert_int_equal(rm.images, 1);
	struct store_usage u;
	expect_ok(store_df(f->s, &u, &err), err);
	assert_int_equal(u.total_bytes, 0);
	assert_int_equal(u.images + u.layers + u.tags, 0);
	assert_int_equal(count_entries(f, "layers"), 0);
	verify(f->s);
}

static void test_holds(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_removed rm;
	char layer[80];
	struct store_layer *l = NULL;
	mkdigest(layer, 1);

	commit_layer(f->s, 1, 100);
	unsigned a[] = { 1 };
	commit_image(f->s, 100, a, 1, TAG_A, STORE_PUBLIC);
	/* A pull found layer 1 present and counts on it... */
	expect_ok(store_layer_hold(f->s, layer, &err), err);
	expect_ok(store_layer_hold(f->s, layer, &err), err);
	/* ...while the only image using it goes. */
	expect_ok(store_image_remove(f->s, TAG_A, &rm, &err), err);
	assert_int_equal(rm.layers, 0);
	expect_ok(store_gc(f->s, UINT64_MAX, &rm, &err), err);
	assert_int_equal(rm.layers, 0);
	expect_ok(store_layer_get(f->s, layer, &l, &err), err);
	assert_non_null(l);
	assert_int_equal(l->refcount, 0);
	store_layer_free(l);
	assert_true(layer_file_exists(f->s, 1));
	commit_image(f->s, 101, a, 1, TAG_B, STORE_PUBLIC);
	assert_int_equal(refcount(f, 1), 1);

	store_layer_release(f->s, layer);
	store_layer_release(f->s, layer);
	expect_ok(store_image_remove(f->s, TAG_B, &rm, &err), err);
	assert_int_equal(rm.layers, 1);
	assert_false(layer_file_exists(f->s, 1));

	/* Committing an image whose layer is not there fails, changes nothing. */
	_cleanup_free_ char *msg = NULL;
	{
		char d[80];
		mkdigest(d, 103);
		const char *lp[] = { layer };
		struct store_image_rec rec = { .digest = d, .config_digest = d, .platform = "linux/amd64",
					       .manifest_json = "{}", .config_json = "{}" };
		msg = expect_fail(store_image_commit(f->s, &rec, lp, 1, TAG_A, &anon, &err),
				  err, ALPS_E_NOT_FOUND);
		assert_non_null(strstr(msg, layer));
	}
	assert_int_equal(db_int(f, "SELECT count(*) FROM images"), 0);
	verify(f->s);
}

/* ---- hostile input ---------------------------------------------------- */

static void test_malformed_digest(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char *path = NULL;
	struct store_layer *l = NULL;
	const char *bad[] = {
		"sha256:../../x",
		"sha256:../../../../../../tmp/alps-store-escape",
		"sha256:ABCDEF0000000000000000000000000000000000000000000000000000000000",
		"sha256:abc",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha256",
		"",
		"sha256:0000000000000000000000000000000000000000000000000000000000000000/x",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *msg = NULL;
		int code = strncmp(bad[i], "md5", 3) == 0 ? ALPS_E_UNSUPPORTED : ALPS_E_INVALID;
		msg = expect_fail(store_layer_path(f->s, bad[i], &path, &err), err, code);
		assert_null(path);
		free(msg);
		msg = expect_fail(store_layer_get(f->s, bad[i], &l, &err), err, code);
		free(msg);
		msg = expect_fail(store_layer_hold(f->s, bad[i], &err), err, code);
		free(msg);

		_cleanup_free_ char *tmp = store_tmp_path(f->s);
		write_file(tmp, 10);
		struct store_layer_info info = { .digest = bad[i], .media_type = "x" };
		msg = expect_fail(store_layer_commit(f->s, tmp, &info, NULL, &err), err, code);
		free(msg);
		assert_false(exists(tmp));

		const char *lp[] = { bad[i] };
		struct store_image_rec rec = { .digest = bad[i], .config_digest = bad[i],
					       .platform = "linux/amd64", .manifest_json = "{}",
					       .config_json = "{}" };
		msg = expect_fail(store_image_commit(f->s, &rec, lp, 1, NULL, &anon, &err),
				  err, code);
		free(msg);
		assert_false(found(f->s, bad[i][0] ? bad[i] : "x", STORE_UID_ANY));
		msg = expect_fail(store_image_touch(f->s, bad[i], &err), err, code);
		free(msg);
	}
	assert_int_equal(count_entries(f, "layers"), 0);
	assert_int_equal(count_entries(f, "tmp"), 0);
	assert_false(exists("/tmp/alps-store-escape.sqfs"));
	assert_int_equal(db_int(f, "SELECT count(*) FROM layers"), 0);
	verify(f->s);
}

/* Records the store refuses besides bad digests. */
static void test_bad_records(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char *path = NULL;

	/* A non-canonical tag, no layers, a hostile media type. */
	commit_layer(f->s, 1, 10);
	char d[80], l1[80];
	mkdigest(d, 100);
	mkdigest(l1, 1);
	const char *lp[] = { l1 };
	struct store_image_rec rec = { .digest = d, .config_digest = d, .platform = "linux/amd64",
				       .manifest_json = "{}", .config_json = "{}" };
	_cleanup_free_ char *msg = expect_fail(
		store_image_commit(f->s, &rec, lp, 1, "ubuntu:24.04", &anon, &err), err,
		ALPS_E_INVALID);
	assert_non_null(strstr(msg, "canonical"));
	free(msg);
	msg = expect_fail(store_image_commit(f->s, &rec, lp, 0, NULL, &anon, &err), err,
			  ALPS_E_INVALID);
	free(msg);
	_cleanup_free_ char *tmp = store_tmp_path(f->s);
	write_file(tmp, 10);
	char l2[80];
	mkdigest(l2, 2);
	struct store_layer_info info = { .digest = l2, .media_type = "a\nb" };
	msg = expect_fail(store_layer_commit(f->s, tmp, &info, NULL, &err), err, ALPS_E_INVALID);
	/* sha512 digests are fine. */
	free(msg);
	msg = NULL;
	const char *d512 = "sha512:"
			   "0000000000000000000000000000000000000000000000000000000000000000"
			   "0000000000000000000000000000000000000000000000000000000000000001";
	expect_ok(store_layer_path(f->s, d512, &path, &err), err);
	assert_true(str_has_suffix(path, "/layers/sha512-"
					 "0000000000000000000000000000000000000000000000000000000000000000"
					 "0000000000000000000000000000000000000000000000000000000000000001.sqfs"));
	free(path);
	verify(f->s);
}

static void test_corrupt_db(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	commit_layer(f->s, 1, 100);
	unsigned a[] = { 1 };
	commit_image(f->s, 100, a, 1, TAG_A, STORE_PUBLIC);
	store_close(f->s);
	f->s = NULL;

	/* A copy of the store with garbage over the database header. */
	static const char layer_rel[] =
		"layers/sha256-00000001" "00000000000000000000000000000000000000000000000000000000.sqfs";
	_cleanup_free_ char *copy = path_in(f, "copy");
	_cleanup_free_ char *copy_layers = path_in(f, "copy/layers");
	_cleanup_free_ char *db = xasprintf("%s/alps.db", copy);
	_cleanup_free_ char *db_orig = path_in(f, "alps.db");
	_cleanup_free_ char *layer = xasprintf("%s/%s", copy, layer_rel);
	_cleanup_free_ char *layer_orig = path_in(f, layer_rel);
	_cleanup_free_ char *copy2 = path_in(f, "copy2");
	_cleanup_free_ char *db2 = xasprintf("%s/alps.db", copy2);
	assert_int_equal(mkdir(copy, 0700), 0);
	assert_int_equal(mkdir(copy2, 0700), 0);
	assert_int_equal(mkdir(copy_layers, 0700), 0);
	copy_file(db_orig, db);
	copy_file(layer_orig, layer);
	int fd = open(db, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	char garbage[100];
	memset(garbage, 0xa5, sizeof(garbage));
	assert_int_equal(write_all(fd, garbage, sizeof(garbage)), 0);
	close(fd);

	struct store *s = NULL;
	char *msg = expect_fail(store_open(copy, &s, &err), err, ALPS_E_INTEGRITY);
	assert_null(s);
	assert_non_null(strstr(msg, copy));
	assert_non_null(strstr(msg, "alps.db is corrupt"));
	/* Nothing was repaired away on the strength of a bad database. */
	assert_true(exists(layer));

	/* A sound header over a damaged page: quick_check finds it. */
	free(msg);
	copy_file(db_orig, db2);
	fd = open(db2, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, garbage, sizeof(garbage), 4096 + 8), (ssize_t)sizeof(garbage));
	close(fd);
	msg = expect_fail(store_open(copy2, &s, &err), err, ALPS_E_INTEGRITY);
	assert_null(s);
	assert_non_null(strstr(msg, "alps.db is corrupt"));
	free(msg);

	/* The original is fine. */
	expect_ok(store_open(f->dir, &f->s, &err), err);
	verify(f->s);
}

/* ---- jobs, pulls, counters -------------------------------------------- */

static void test_jobs(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_job *job = NULL, *jobs = NULL;
	size_t n = 0;
	char digest[80];
	mkdigest(digest, 100);

	commit_layer(f->s, 1, 100);
	unsigned a[] = { 1 };
	commit_image(f->s, 100, a, 1, TAG_A, STORE_PUBLIC);
	struct store_job j1 = { .id = "100", .uid = 1000, .user = "alice", .image_digest = digest,
				.state = STORE_JOB_PREPARING, .environment_json = "{\"image\":\"x\"}",
				.mounts = "/scratch:/scratch" };
	struct store_job j2 = { .id = "101+1", .uid = 2000, .user = "bob", .state = STORE_JOB_PREPARING,
				.created_ms = 5 };
	expect_ok(store_job_insert(f->s, &j1, &err), err);
	expect_ok(store_job_insert(f->s, &j2, &err), err);
	_cleanup_free_ char *msg = expect_fail(store_job_insert(f->s, &j1, &err), err,
					       ALPS_E_EXISTS);
	free(msg);
	struct store_job j3 = j2;
	j3.id = "102";
	j3.image_digest = "sha256:00000099" "00000000000000000000000000000000000000000000000000000000";
	msg = expect_fail(store_job_insert(f->s, &j3, &err), err, ALPS_E_NOT_FOUND);
	free(msg);
	const char *bad_ids[] = { "", "../x", ".", "a/b", "-1", "x y",
				  "12345678901234567890123456789012345678901234567890123456789012345" };
	for (size_t i = 0; i < ARRAY_SIZE(bad_ids); i++) {
		j3.id = (char *)bad_ids[i];
		msg = expect_fail(store_job_insert(f->s, &j3, &err), err, ALPS_E_INVALID);
		free(msg);
	}

	expect_ok(store_job_get(f->s, "100", &job, &err), err);
	assert_string_equal(job->user, "alice");
	assert_string_equal(job->image_digest, digest);
	assert_string_equal(job->mounts, "/scratch:/scratch");
	assert_string_equal(job->environment_json, "{\"image\":\"x\"}");
	assert_true(job->created_ms > 5);
	store_job_free(job);
	expect_ok(store_job_update_state(f->s, "100", STORE_JOB_READY, &err), err);
	expect_ok(store_job_get(f->s, "100", &job, &err), err);
	assert_int_equal(job->state, STORE_JOB_READY);
	assert_string_equal(store_job_state_name(job->state), "ready");
	store_job_free(job);

	expect_ok(store_job_list(f->s, STORE_UID_ANY, &jobs, &n, &err), err);
	assert_int_equal(n, 2);
	assert_string_equal(jobs[0].id, "101+1"); /* created first */
	assert_null(jobs[0].image_digest);
	store_jobs_free(jobs, n);
	expect_ok(store_job_list(f->s, 1000, &jobs, &n, &err), err);
	assert_int_equal(n, 1);
	store_jobs_free(jobs, n);

	expect_ok(store_job_delete(f->s, "101+1", &err), err);
	msg = expect_fail(store_job_delete(f->s, "101+1", &err), err, ALPS_E_NOT_FOUND);
	free(msg);
	msg = expect_fail(store_job_get(f->s, "101+1", &job, &err), err, ALPS_E_NOT_FOUND);
	free(msg);
	msg = expect_fail(store_job_update_state(f->s, "nope", STORE_JOB_READY, &err), err,
			  ALPS_E_NOT_FOUND);
	verify(f->s);
}

static void test_pulls_and_stats(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	int64_t id1, id2, v;
	struct store_pull *pulls = NULL;
	size_t n;

	expect_ok(store_pull_begin(f->s, TAG_A, 1000, &id1, &err), err);
	expect_ok(store_pull_begin(f->s, TAG_B, 0, &id2, &err), err);
	expect_ok(store_pull_progress(f->s, id1, 10, 100, &err), err);
	expect_ok(store_pulls_list(f->s, &pulls, &n, &err), err);
	assert_int_equal(n, 2);
	assert_string_equal(pulls[0].ref, TAG_A);
	assert_int_equal(pulls[0].bytes_done, 10);
	assert_int_equal(pulls[0].bytes_total, 100);
	assert_int_equal(pulls[0].uid, 1000);
	store_pulls_free(pulls, n);
	store_pull_end(f->s, id1);
	store_pull_end(f->s, id1);
	expect_ok(store_pulls_list(f->s, &pulls, &n, &err), err);
	assert_int_equal(n, 1);
	store_pulls_free(pulls, n);
	/* A restart drops what an earlier run was pulling. */
	store_close(f->s);
	f->s = NULL;
	expect_ok(store_open(f->dir, &f->s, &err), err);
	expect_ok(store_pulls_list(f->s, &pulls, &n, &err), err);
	assert_int_equal(n, 0);
	store_pulls_free(pulls, n);

	commit_layer(f->s, 1, 10);
	unsigned a[] = { 1 };
	commit_image(f->s, 100, a, 1, TAG_A, STORE_PUBLIC);
	expect_ok(store_stat_get(f->s, "images_committed", &v, &err), err);
	assert_int_equal(v, 1);
	expect_ok(store_stat_get(f->s, "layers_committed", &v, &err), err);
	assert_int_equal(v, 1);
	expect_ok(store_stat_get(f->s, "never", &v, &err), err);
	assert_int_equal(v, 0);
}

/* ---- threads ---------------------------------------------------------- */

#define THREADS 4
#define POOL 10         /* layer digests shared by all threads */
#define ROUNDS 12

struct worker {
	struct store *s;
	unsigned id;
	int failures;
	char msg[512];
};

static void worker_fail(struct worker *w, alps_error *err)
{
	if (!w->failures++)
		snprintf(w->msg, sizeof(w->msg), "%s", err ? err->msg : "?");
	alps_error_free(err);
}

/* A pull as the pull code does it: hold, look up, commit what is missing,
 * commit the image, release.  Layers overlap with other threads'. */
static void worker_pull(struct worker *w, unsigned round)
{
	char digests[3][80], img[80], cfg[80];
	const char *lp[3];
	alps_error *err = NULL;
	for (unsigned i = 0; i < 3; i++) {
		mkdigest(digests[i], 1 + (w->id + round + i * 3) % POOL);
		lp[i] = digests[i];
		if (store_layer_hold(w->s, lp[i], &err) < 0) {
			worker_fail(w, err);
			return;
		}
	}
	for (unsigned i = 0; i < 3; i++) {
		struct store_layer *l = NULL;
		if (store_layer_get(w->s, lp[i], &l, &err) < 0) {
			if (err->code != ALPS_E_NOT_FOUND)
				worker_fail(w, err);
			else
				alps_error_free(err);
			err = NULL;
		}
		if (!l) {
			_cleanup_free_ char *tmp = store_tmp_path(w->s);
			struct store_layer_info info = { .digest = lp[i], .media_type = "t" };
			if (try_write_file(tmp, 100 + 10 * ((w->id + round + i * 3) % POOL)) < 0) {
				snprintf(w->msg, sizeof(w->msg), "writing %s", tmp);
				w->failures++;
			} else if (store_layer_commit(w->s, tmp, &info, NULL, &err) < 0) {
				worker_fail(w, err);
				err = NULL;
			}
		}
		store_layer_free(l);
	}
	mkdigest(img, 0x1000 + w->id * 100 + round);
	mkdigest(cfg, 0x2000 + w->id * 100 + round);
	struct store_image_rec rec = { .digest = img, .config_digest = cfg, .platform = "linux/amd64",
				       .manifest_json = "{}", .config_json = "{}" };
	_cleanup_free_ char *tag = xasprintf("docker.io/t/w%u:r%u", w->id, round);
	struct store_origin from = origin_of("docker.io/t", round % 2 ? 1000 + w->id : STORE_PUBLIC);
	if (store_image_commit(w->s, &rec, lp, 3, tag, &from, &err) < 0) {
		worker_fail(w, err);
		err = NULL;
	}
	for (unsigned i = 0; i < 3; i++)
		store_layer_release(w->s, lp[i]);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	alps_error *err = NULL;
	for (unsigned round = 0; round < ROUNDS; round++) {
		worker_pull(w, round);
		/* Remove every third image again, and collect now and then,
		 * while the other threads pull the same layers. */
		if (round % 3 == 2) {
			_cleanup_free_ char *tag = xasprintf("docker.io/t/w%u:r%u", w->id, round);
			if (store_image_untag(w->s, tag, NULL, &err) < 0) {
				worker_fail(w, err);
				err = NULL;
			}
		}
		if (round % 4 == 3 && store_gc(w->s, UINT64_MAX, NULL, &err) < 0) {
			worker_fail(w, err);
			err = NULL;
		}
		struct store_image *imgs = NULL;
		size_t n = 0;
		if (store_images_list(w->s, 1000 + w->id, &imgs, &n, &err) < 0) {
			worker_fail(w, err);
			err = NULL;
		}
		store_images_free(imgs, n);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fixture *f = *state;
	struct worker w[THREADS];
	pthread_t t[THREADS];
	alps_error *err = NULL;

	for (unsigned i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ .s = f->s, .id = i };
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		if (w[i].failures)
			fail_msg("worker %u: %d failures, first: %s", i, w[i].failures, w[i].msg);
	}
	verify(f->s);
	/* 12 rounds, every third image untagged away. */
	assert_int_equal(db_int(f, "SELECT count(*) FROM images"), THREADS * (ROUNDS - ROUNDS / 3));
	assert_int_equal(db_int(f, "SELECT count(*) FROM tags"), THREADS * (ROUNDS - ROUNDS / 3));
	struct store_usage u;
	expect_ok(store_df(f->s, &u, &err), err);
	assert_int_equal(u.layers, count_entries(f, "layers"));
	assert_int_equal(count_entries(f, "tmp"), 0);
	expect_ok(store_gc(f->s, UINT64_MAX, NULL, &err), err);
	expect_ok(store_df(f->s, &u, &err), err);
	assert_int_equal(u.orphan_layers, 0);
	/* And the result survives a restart's repair untouched. */
	store_close(f->s);
	f->s = NULL;
	expect_ok(store_open(f->dir, &f->s, &err), err);
	verify(f->s);
	assert_int_equal(db_int(f, "SELECT count(*) FROM images"), THREADS * (ROUNDS - ROUNDS / 3));
}

int main(void)
{
	log_init("test_store", getenv("STORE_TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR, false);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_schema_create_reopen, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_migration_from_v1, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_migration_from_v2, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_refuse_newer_version, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_access_per_origin, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_layer_usable, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_modes, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_layer_commit, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_layer_commit_refused, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_dedupe_and_remove, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_repair, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_remove_busy, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_untag, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_visibility, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_digest_prefix, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_gc, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_holds, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_digest, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_bad_records, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_db, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_jobs, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_pulls_and_stats, setup_store, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup_store, teardown),
	};
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
