/* test_store_gc.c: the cache policy of the store (daemon/store/store_gc.c):
 * the collection plan (least recently used first, shared and held layers
 * stay, dry runs, --older-than), pins by name, the admission of pulls under
 * a limit with reservations. */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	chmod(path, 0700);
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = xzalloc(sizeof(*f));
	const char *tmp = getenv("TMPDIR");
	alps_error *err = NULL;
	if (xsnprintf(f->dir, sizeof(f->dir), "%s/alps-test-gc-XXXXXX",
		      tmp && *tmp == '/' ? tmp : "/tmp") < 0 || !mkdtemp(f->dir) ||
	    store_open(f->dir, &f->s, &err) < 0) {
		alps_error_free(err);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	store_close(f->s);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void mkdigest(char out[80], unsigned seed)
{
	snprintf(out, 80, "sha256:%08x%056x", seed, 0u);
}

#define expect_ok(call, e) expect_ok_at((call), &(e))

static void expect_ok_at(int r, alps_error **err)
{
	if (r < 0)
		fail_msg("unexpected error: %s", *err ? (*err)->msg : "(none)");
	assert_null(*err);
}

static char *expect_limit(int r, alps_error **err)
{
	assert_int_equal(r, -1);
	assert_non_null(*err);
	assert_int_equal((*err)->code, ALPS_E_LIMIT);
	char *msg = xstrdup((*err)->msg);
	alps_error_free(*err);
	*err = NULL;
	return msg;
}

static void commit_layer_diff(struct store *s, unsigned seed, size_t size, const char *diff_id)
{
	char digest[80], buf[512];
	alps_error *err = NULL;
	mkdigest(digest, seed);
	_cleanup_free_ char *tmp = store_tmp_path(s);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	memset(buf, 'g', sizeof(buf));
	for (size_t left = size; left > 0;) {
		size_t n = left < sizeof(buf) ? left : sizeof(buf);
		assert_int_equal(write_all(fd, buf, n), 0);
		left -= n;
	}
	close(fd);
	struct store_layer_info info = { .digest = digest, .diff_id = diff_id, .media_type = "x",
					 .compressed_size = size };
	expect_ok(store_layer_commit(s, tmp, &info, NULL, &err), err);
}

static void commit_layer(struct store *s, unsigned seed, size_t size)
{
	commit_layer_diff(s, seed, size, NULL);
}

static void commit_image(struct store *s, unsigned seed, const unsigned *lseeds, size_t n,
			 const char *tag)
{
	char digest[80], config[80], layers[8][80];
	const char *lp[8];
	alps_error *err = NULL;
	mkdigest(digest, seed);
	mkdigest(config, seed + 0x10000);
	for (size_t i = 0; i < n; i++) {
		mkdigest(layers[i], lseeds[i]);
		lp[i] = layers[i];
	}
	struct store_image_rec rec = { .digest = digest, .config_digest = config,
				       .platform = "linux/amd64", .manifest_json = "{}",
				       .config_json = "{}" };
	struct store_origin from = { .origin = "r.example/x", .uid = STORE_PUBLIC };
	expect_ok(store_image_commit(s, &rec, lp, n, tag, &from, &err), err);
}

static void db_exec(const struct fixture *f, const char *sql)
{
	_cleanup_free_ char *p = xasprintf("%s/alps.db", f->dir);
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static bool has_layer(struct store *s, unsigned seed)
{
	char digest[80];
	struct store_layer *l = NULL;
	alps_error *err = NULL;
	mkdigest(digest, seed);
	int r = store_layer_get(s, digest, &l, &err);
	store_layer_free(l);
	alps_error_free(err);
	return r == 0;
}

static bool has_image(struct store *s, const char *what)
{
	struct store_image *img = NULL;
	alps_error *err = NULL;
	int r = store_image_find(s, what, STORE_UID_ANY, &img, &err);
	store_image_free(img);
	alps_error_free(err);
	return r == 0;
}

#define TAG_A "r.example/x/a:1"
#define TAG_B "r.example/x/b:1"
#define TAG_C "r.example/x/c:1"

/* Layers 1 (1000 B), 2 (2000 B), 3 (3000 B); images a = {1, 2},
 * b = {2, 3}, c = {1}, used in that order (a least recently). */
static void three_images(struct fixture *f)
{
	commit_layer(f->s, 1, 1000);
	commit_layer(f->s, 2, 2000);
	commit_layer(f->s, 3, 3000);
	unsigned a[] = { 1, 2 }, b[] = { 2, 3 }, c[] = { 1 };
	commit_image(f->s, 100, a, 2, TAG_A);
	commit_image(f->s, 101, b, 2, TAG_B);
	commit_image(f->s, 102, c, 1, TAG_C);
	db_exec(f, "UPDATE images SET last_used_ms = 1000000 + CAST(substr(digest, 8, 8) AS INTEGER)");
}

static void test_plan_shared_layers(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_gc_report rep;
	three_images(f);

	/* A dry run to nothing: a frees nothing (its layers are shared),
	 * b frees 2 and 3, c frees 1; nothing is removed. */
	struct store_gc_opts o = { .target = 0, .dry_run = true };
	expect_ok(store_collect_images(f->s, &o, &rep, &err), err);
	assert_int_equal(rep.nitems, 3);
	assert_string_equal(rep.items[0].name, TAG_A);
	assert_int_equal(rep.items[0].bytes, 0);
	assert_string_equal(rep.items[1].name, TAG_B);
	assert_int_equal(rep.items[1].bytes, 5000);
	assert_int_equal(rep.items[2].bytes, 1000);
	assert_int_equal(rep.used_before, 6000);
	assert_int_equal(rep.used_after, 0);
	assert_null(rep.kept);
	store_gc_report_clear(&rep);
	assert_true(has_image(f->s, TAG_A) && has_layer(f->s, 3));

	/* Down to 4000: a then b go; layer 1 stays for c. */
	o = (struct store_gc_opts){ .target = 4000 };
	expect_ok(store_collect_images(f->s, &o, &rep, &err), err);
	assert_int_equal(rep.removed.images, 2);
	assert_int_equal(rep.removed.bytes_freed, 5000);
	assert_int_equal(rep.used_after, 1000);
	store_gc_report_clear(&rep);
	assert_false(has_image(f->s, TAG_A) || has_image(f->s, TAG_B));
	assert_true(has_image(f->s, TAG_C) && has_layer(f->s, 1));
	assert_false(has_layer(f->s, 2) || has_layer(f->s, 3));
	expect_ok(store_verify(f->s, &err), err);
}

static void test_pinned_held_and_in_use_stay(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_gc_report rep;
	char d3[80];
	three_images(f);
	char *digest = NULL;
	expect_ok(store_image_pin_named(f->s, TAG_A, true, &digest, &err), err);
	assert_non_null(digest);
	free(digest);
	char img_b[80];
	mkdigest(img_b, 101);
	struct store_job job = { .id = "77", .uid = 1000, .user = "u", .image_digest = img_b,
				 .state = STORE_JOB_READY };
	expect_ok(store_job_insert(f->s, &job, &err), err);
	/* A pull holds layer 3. */
	mkdigest(d3, 3);
	expect_ok(store_layer_hold(f->s, d3, &err), err);

	struct store_gc_opts o = { .target = 0 };
	expect_ok(store_collect_images(f->s, &o, &rep, &err), err);
	/* Only c goes, and it frees nothing: a (pinned) uses layer 1. */
	assert_int_equal(rep.removed.images, 1);
	assert_int_equal(rep.removed.layers, 0);
	assert_non_null(rep.kept);
	assert_non_null(strstr(rep.kept, "pinned: " TAG_A));
	assert_non_null(strstr(rep.kept, TAG_B " (job 77)"));
	store_gc_report_clear(&rep);
	assert_true(has_image(f->s, TAG_A) && has_image(f->s, TAG_B));
	assert_false(has_image(f->s, TAG_C));

	/* Unpinned and the job gone, the held layer still stays. */
	expect_ok(store_image_pin_named(f->s, TAG_A, false, NULL, &err), err);
	expect_ok(store_job_delete(f->s, "77", &err), err);
	expect_ok(store_collect_images(f->s, &o, &rep, &err), err);
	assert_int_equal(rep.removed.images, 2);
	assert_int_equal(rep.used_after, 3000);
	assert_non_null(strstr(rep.kept, "pinned: none; in use by jobs: none; held by pulls"));
	store_gc_report_clear(&rep);
	assert_true(has_layer(f->s, 3));
	store_layer_release(f->s, d3);
	expect_ok(store_gc(f->s, 0, NULL, &err), err);
	assert_false(has_layer(f->s, 3));
	expect_ok(store_verify(f->s, &err), err);
}

static void test_older_than(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_gc_report rep;
	three_images(f);
	uint64_t now = now_realtime_ms();
	char sql[200];
	/* b unused for two hours, the others just used. */
	snprintf(sql, sizeof(sql), "UPDATE images SET last_used_ms = %llu",
		 (unsigned long long)now);
	db_exec(f, sql);
	snprintf(sql, sizeof(sql), "UPDATE images SET last_used_ms = %llu WHERE digest LIKE "
		 "'sha256:00000065%%'", (unsigned long long)(now - 2 * 3600 * 1000));
	db_exec(f, sql);
	struct store_gc_opts o = { .target = STORE_NO_TARGET, .older_than_ms = 3600 * 1000 };
	expect_ok(store_collect_images(f->s, &o, &rep, &err), err);
	assert_int_equal(rep.nitems, 1);
	assert_string_equal(rep.items[0].name, TAG_B);
	assert_int_equal(rep.items[0].bytes, 3000);
	store_gc_report_clear(&rep);
	assert_true(has_image(f->s, TAG_A) && has_image(f->s, TAG_C));
}

static void test_admission(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	three_images(f);
	/* 6000 used, limit 8000: 1500 fits and is reserved. */
	expect_ok(store_admit(f->s, 1500, 8000, 7000, &err), err);
	assert_int_equal(store_reserved(f->s), 1500);
	assert_true(has_image(f->s, TAG_A));
	/* 6000 + 1500 + 1000 > 8000: eviction down to min(low water, room):
	 * a (frees nothing), then b (5000). */
	expect_ok(store_admit(f->s, 1000, 8000, 7000, &err), err);
	assert_int_equal(store_reserved(f->s), 2500);
	assert_false(has_image(f->s, TAG_B));
	assert_true(has_image(f->s, TAG_C));
	/* More than the limit itself: refused at once, nothing removed. */
	_cleanup_free_ char *m1 = expect_limit(store_admit(f->s, 9000, 8000, 7000, &err), &err);
	assert_non_null(strstr(m1, "needs about"));
	assert_true(has_image(f->s, TAG_C));
	store_admit_end(f->s, 2500);
	assert_int_equal(store_reserved(f->s), 0);
	/* c pinned: 1000 stays, 7500 cannot fit under 8000. */
	expect_ok(store_image_pin_named(f->s, TAG_C, true, NULL, &err), err);
	_cleanup_free_ char *m2 = expect_limit(store_admit(f->s, 7500, 8000, 7000, &err), &err);
	assert_non_null(strstr(m2, "pinned: " TAG_C));
	assert_int_equal(store_reserved(f->s), 0);
	/* No limit: always admitted, nothing reserved. */
	expect_ok(store_admit(f->s, 1 << 30, 0, 0, &err), err);
	assert_int_equal(store_reserved(f->s), 0);
}

static void test_limits_and_pins(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	uint64_t limit = 0, size = 0, avail = 0;
	expect_ok(store_limit_bytes(f->s, 12345, &limit, &err), err);
	assert_int_equal(limit, 12345);
	expect_ok(store_fs_usage(f->s, &size, &avail, &err), err);
	assert_true(size > 0 && avail <= size);
	expect_ok(store_limit_bytes(f->s, -50, &limit, &err), err);
	assert_int_equal(limit, size / 100 * 50);
	assert_int_equal(store_limit_bytes(f->s, -101, &limit, &err), -1);
	alps_error_free(err);
	err = NULL;
	assert_int_equal(store_image_pin_named(f->s, "r.example/x/none:1", true, NULL, &err), -1);
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	alps_error_free(err);
	err = NULL;
	assert_int_equal(store_image_pin_named(f->s, "", true, NULL, &err), -1);
	assert_int_equal(err->code, ALPS_E_INVALID);
	alps_error_free(err);
}

static size_t layer_files(const struct fixture *f)
{
	_cleanup_free_ char *p = xasprintf("%s/layers", f->dir);
	_cleanup_closedir_ DIR *d = opendir(p);
	size_t n = 0;
	struct dirent *de;
	assert_non_null(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	return n;
}

/* The same tar compressed two ways: one file, the second digest an alias. */
static void test_dedup_by_diff_id(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	char gz[80], zst[80], diff[80];
	struct store_layer *l = NULL;
	mkdigest(gz, 1);
	mkdigest(zst, 2);
	mkdigest(diff, 0x77);
	commit_layer_diff(f->s, 1, 3000, diff);
	commit_layer_diff(f->s, 2, 2500, diff);
	assert_int_equal(layer_files(f), 1);
	/* The alias resolves to the layer, whose digest it names. */
	expect_ok(store_layer_get(f->s, zst, &l, &err), err);
	assert_string_equal(l->digest, gz);
	assert_int_equal(l->squashfs_size, 3000);
	store_layer_free(l);
	/* An image naming the alias uses the layer; access rows go to it. */
	unsigned a[] = { 1 }, b[] = { 2 };
	commit_image(f->s, 100, a, 1, TAG_A);
	commit_image(f->s, 101, b, 1, TAG_B);
	expect_ok(store_layer_allow(f->s, zst, 1234, &err), err);
	bool ok = false;
	expect_ok(store_layer_usable(f->s, gz, 1234, &ok, &err), err);
	assert_true(ok);
	struct store_image *img = NULL;
	expect_ok(store_image_find(f->s, TAG_B, STORE_UID_ANY, &img, &err), err);
	assert_string_equal(img->layers[0].digest, gz);
	assert_int_equal(img->layers[0].refcount, 2);
	store_image_free(img);
	/* One image gone, the other keeps the file; a hold on the alias
	 * keeps the layer once both are gone. */
	expect_ok(store_image_remove(f->s, TAG_A, NULL, &err), err);
	assert_int_equal(layer_files(f), 1);
	expect_ok(store_layer_hold(f->s, zst, &err), err);
	expect_ok(store_image_remove(f->s, TAG_B, NULL, &err), err);
	expect_ok(store_gc(f->s, UINT64_MAX, NULL, &err), err);
	assert_int_equal(layer_files(f), 1);
	store_layer_release(f->s, zst);
	expect_ok(store_gc(f->s, UINT64_MAX, NULL, &err), err);
	assert_int_equal(layer_files(f), 0);
	/* The alias went with its layer. */
	assert_int_equal(store_layer_get(f->s, zst, &l, &err), -1);
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	alps_error_free(err);
	err = NULL;
	expect_ok(store_verify(f->s, &err), err);
}

/* A layer whose file starts with a squashfs 4.0 superblock. */
static void commit_squashfs(struct store *s, unsigned seed, size_t size)
{
	char digest[80];
	alps_error *err = NULL;
	unsigned char *buf = xzalloc(size);
	mkdigest(digest, seed);
	memcpy(buf, "hsqs", 4);
	buf[28] = 4;                    /* version 4.0 */
	for (int i = 0; i < 8; i++)     /* bytes used: all */
		buf[40 + i] = (unsigned char)((uint64_t)size >> (8 * i));
	buf[size - 1] = (unsigned char)seed;
	_cleanup_free_ char *tmp = store_tmp_path(s);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, buf, size), 0);
	close(fd);
	free(buf);
	struct store_layer_info info = { .digest = digest, .media_type = "x", .compressed_size = 1 };
	expect_ok(store_layer_commit(s, tmp, &info, NULL, &err), err);
}

static void test_check_marks_and_replaces(void **state)
{
	struct fixture *f = *state;
	alps_error *err = NULL;
	struct store_check_report rep;
	char d1[80], path[512];
	struct store_image *img = NULL;
	struct store_layer *l = NULL;
	mkdigest(d1, 1);
	commit_squashfs(f->s, 1, 8192);
	commit_squashfs(f->s, 2, 4096);
	unsigned a[] = { 1 };
	commit_image(f->s, 100, a, 1, TAG_A);
	expect_ok(store_layers_check(f->s, NULL, &rep, &err), err);
	assert_int_equal(rep.checked, 2);
	assert_int_equal(rep.nbad, 0);
	assert_int_equal(rep.bytes, 8192 + 4096);
	store_check_report_clear(&rep);

	/* One byte flipped in the middle: only the checksum sees it. */
	snprintf(path, sizeof(path), "%s/layers/sha256-%08x%056x.sqfs", f->dir, 1u, 0u);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "Z", 1, 5000), 1);
	close(fd);
	expect_ok(store_layers_check(f->s, NULL, &rep, &err), err);
	assert_int_equal(rep.nbad, 1);
	assert_string_equal(rep.bad[0].digest, d1);
	assert_non_null(strstr(rep.bad[0].problem, "checksum"));
	store_check_report_clear(&rep);

	/* Marked: missing for pulls, not given to users, seen by admins. */
	assert_int_equal(store_layer_get(f->s, d1, &l, &err), -1);
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	alps_error_free(err);
	err = NULL;
	assert_int_equal(store_image_find(f->s, TAG_A, 1000, &img, &err), -1);
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	assert_non_null(strstr(err->msg, "damaged"));
	alps_error_free(err);
	err = NULL;
	expect_ok(store_image_find(f->s, TAG_A, STORE_UID_ANY, &img, &err), err);
	assert_true(img->layers[0].damaged);
	store_image_free(img);

	/* Fetched again: the file is replaced, the mark goes. */
	commit_squashfs(f->s, 1, 8192);
	expect_ok(store_layer_get(f->s, d1, &l, &err), err);
	assert_false(l->damaged);
	store_layer_free(l);
	expect_ok(store_layers_check(f->s, NULL, &rep, &err), err);
	assert_int_equal(rep.nbad, 0);
	store_check_report_clear(&rep);

	/* Rows from before checksums get one recorded at the first check. */
	db_exec(f, "UPDATE layers SET checksum = NULL");
	expect_ok(store_layers_check(f->s, NULL, &rep, &err), err);
	assert_int_equal(rep.recorded, 2);
	store_check_report_clear(&rep);
	expect_ok(store_verify(f->s, &err), err);
}

int main(void)
{
	log_init("test_store_gc", getenv("STORE_TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR, false);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_plan_shared_layers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pinned_held_and_in_use_stay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_older_than, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admission, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits_and_pins, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dedup_by_diff_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_marks_and_replaces, setup, teardown),
	};
	return cmocka_run_group_tests_name("store_gc", tests, NULL, NULL);
}
