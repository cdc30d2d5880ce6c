/* store_repair.c: what store_open() puts right after a crash, and
 * store_verify().
 *
 * The commit order (file fsync'ed and renamed before its row commits, rows
 * dropped before files are unlinked) means a crash can leave files that no
 * row names, never rows without files.  Rows without files are repaired all
 * the same: an admin may have deleted a file, or a disk lost one.  Every
 * repair is logged with log_warn(), naming the file or digest. */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/store/store_int.h"

/* ---- directories ------------------------------------------------------ */

/* Names in directory dirfd, without "." and "..". */
static int list_dir(int dirfd, struct store_strv *out)
{
	/* A fresh open file description: a dup() would share the offset. */
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	_cleanup_closedir_ DIR *d = fdopendir(fd);
	if (!d) {
		close_keep_errno(fd);
		return -1;
	}
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de)
			return errno ? -1 : 0;
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			store_strv_add(out, xstrdup(de->d_name));
	}
}

int store_remove_entry(int dirfd, const char *name)
{
	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR)
		return -1;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct store_strv names = { 0 };
	int r = list_dir(fd, &names);
	for (size_t i = 0; r == 0 && i < names.n; i++)
		r = store_remove_entry(fd, names.v[i]);
	store_strv_clear(&names);
	close_keep_errno(fd);
	if (r < 0)
		return -1;
	return unlinkat(dirfd, name, AT_REMOVEDIR);
}

static int empty_tmp(struct store *s, alps_error **err)
{
	struct store_strv names = { 0 };
	int r = 0;
	if (list_dir(s->tmp_fd, &names) < 0)
		r = alps_fail_errno(err, "cannot list tmp/");
	for (size_t i = 0; r == 0 && i < names.n; i++) {
		_cleanup_free_ char *esc = log_escape(names.v[i], 300);
		log_warn("store %s: removing tmp/%s, left by an earlier run", s->dir, esc);
		if (store_remove_entry(s->tmp_fd, names.v[i]) < 0)
			r = alps_fail_errno(err, "cannot remove tmp/%s", esc);
	}
	store_strv_clear(&names);
	return r;
}

/* ---- rows whose file is gone ----------------------------------------- */

/* Is layers/file (the row of digest, size bytes) usable?  0 if so, 1 with
 * *why (caller frees) if not, -1 if it cannot be told. */
static int check_layer_file(struct store *s, const char *digest, const char *file,
			    uint64_t size, char **why, alps_error **err)
{
	struct stat st;
	*why = NULL;
	_cleanup_free_ char *expect = NULL;
	if (store_check_digest(digest, "layer digest", NULL) < 0) {
		*why = xstrdup("has a malformed digest");
		return 1;
	}
	/* The row's file name must be the one its digest gives: nothing from
	 * the database reaches a path unchecked. */
	expect = store_layer_file(digest);
	if (!file || strcmp(file, expect) != 0) {
		*why = xasprintf("names file \"%s\" instead of %s", file ? file : "", expect);
		return 1;
	}
	if (fstatat(s->layers_fd, file, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT) {
			*why = xasprintf("has no file layers/%s", file);
			return 1;
		}
		return alps_fail_errno(err, "cannot stat layers/%s", file);
	}
	if (!S_ISREG(st.st_mode))
		*why = xasprintf("has layers/%s, which is not a regular file", file);
	else if ((uint64_t)st.st_size != size)
		*why = xasprintf("has layers/%s of %lld bytes, not %llu", file,
				 (long long)st.st_size, (unsigned long long)size);
	return *why ? 1 : 0;
}

/* Digests of layer rows whose file is missing or wrong, logged. */
static int find_broken_layers(struct store *s, struct store_strv *digests, alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err, "SELECT digest, file, squashfs_size FROM layers",
				       NULL);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0) {
		const char *digest = (const char *)sqlite3_column_text(st, 0);
		const char *file = (const char *)sqlite3_column_text(st, 1);
		_cleanup_free_ char *why = NULL;
		r = check_layer_file(s, digest, file, sql_col_u64(st, 2), &why, err);
		if (r < 0)
			break;
		if (r == 0)
			continue;
		_cleanup_free_ char *esc = log_escape(digest ? digest : "", 200);
		_cleanup_free_ char *esc_why = log_escape(why, 400);
		log_warn("store %s: layer %s %s; removing its row and the images using it", s->dir,
			 esc, esc_why);
		store_strv_add(digests, xstrdup(digest ? digest : ""));
	}
	sqlite3_finalize(st);
	return r;
}

/* Drop image (it used lost layer), its tags, and its jobs' reference to it:
 * a running job keeps its mounts; only the row's link goes. */
static int drop_image(struct store *s, const char *image, const char *layer, alps_error **err)
{
	_cleanup_free_ char *tags = NULL, *jobs = NULL;
	if (sql_text(s, err, &tags, "SELECT group_concat(ref, ', ') FROM tags WHERE image = ?1",
		     "s", image) < 0 ||
	    sql_text(s, err, &jobs, "SELECT group_concat(id, ', ') FROM jobs WHERE image = ?1",
		     "s", image) < 0)
		return -1;
	_cleanup_free_ char *esc_img = log_escape(image, 200);
	_cleanup_free_ char *esc_tags = log_escape(tags ? tags : "none", 2000);
	log_warn("store %s: removing image %s (tags: %s): its layer %s is gone", s->dir, esc_img,
		 esc_tags, layer);
	if (jobs) {
		_cleanup_free_ char *esc_jobs = log_escape(jobs, 2000);
		log_warn("store %s: jobs %s lose their link to image %s", s->dir, esc_jobs,
			 esc_img);
		if (sql_run(s, err, "UPDATE jobs SET image = NULL WHERE image = ?1", "s", image) < 0)
			return -1;
	}
	return sql_run(s, err, "DELETE FROM images WHERE digest = ?1", "s", image);
}

static int drop_layers_tx(struct store *s, void *arg, alps_error **err)
{
	const struct store_strv *digests = arg;
	for (size_t i = 0; i < digests->n; i++) {
		struct store_strv images = { 0 };
		int r = store_collect(s, &images,
				"SELECT DISTINCT image FROM image_layers WHERE layer = ?1",
				digests->v[i], err);
		for (size_t j = 0; r == 0 && j < images.n; j++)
			r = drop_image(s, images.v[j], digests->v[i], err);
		store_strv_clear(&images);
		if (r < 0 || sql_run(s, err, "DELETE FROM layers WHERE digest = ?1", "s",
				     digests->v[i]) < 0)
			return -1;
	}
	return 0;
}

static int drop_broken_layers(struct store *s, alps_error **err)
{
	struct store_strv digests = { 0 };
	int r = find_broken_layers(s, &digests, err);
	if (r == 0 && digests.n > 0)
		r = store_tx(s, drop_layers_tx, &digests, err);
	store_strv_clear(&digests);
	return r;
}

/* ---- refcounts, strays, pulls ----------------------------------------- */

#define REFCOUNT_MISMATCH                                                           \
	"SELECT digest, refcount, n FROM (SELECT digest, refcount, "                \
	"(SELECT count(DISTINCT image) FROM image_layers WHERE layer = layers.digest) " \
	"AS n FROM layers) WHERE refcount != n"

static int fix_refcounts_tx(struct store *s, void *arg, alps_error **err)
{
	(void)arg;
	return sql_run(s, err,
		       "UPDATE layers SET refcount = (SELECT count(DISTINCT image) "
		       "FROM image_layers WHERE layer = layers.digest)",
		       NULL);
}

/* A crash cannot leave a refcount wrong (it changes in the transaction that
 * changes image_layers), but recomputing costs little and makes sure. */
static int fix_refcounts(struct store *s, alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err, REFCOUNT_MISMATCH, NULL);
	if (!st)
		return -1;
	int r, wrong = 0;
	while ((r = sql_step(s, st, err)) > 0) {
		wrong++;
		log_warn("store %s: layer %s had refcount %lld, images using it: %lld", s->dir,
			 (const char *)sqlite3_column_text(st, 0),
			 (long long)sqlite3_column_int64(st, 1),
			 (long long)sqlite3_column_int64(st, 2));
	}
	sqlite3_finalize(st);
	if (r == 0 && wrong)
		r = store_tx(s, fix_refcounts_tx, NULL, err);
	return r;
}

static int remove_stray_files(struct store *s, alps_error **err)
{
	struct store_strv names = { 0 };
	int r = 0;
	if (list_dir(s->layers_fd, &names) < 0)
		r = alps_fail_errno(err, "cannot list layers/");
	for (size_t i = 0; r == 0 && i < names.n; i++) {
		int named = sql_int(s, err, NULL, "SELECT 1 FROM layers WHERE file = ?1", "s",
				    names.v[i]);
		if (named != 0) {
			r = named < 0 ? -1 : 0;
			continue;
		}
		_cleanup_free_ char *esc = log_escape(names.v[i], 300);
		log_warn("store %s: removing layers/%s: no row names it", s->dir, esc);
		if (store_remove_entry(s->layers_fd, names.v[i]) < 0)
			r = alps_fail_errno(err, "cannot remove layers/%s", esc);
	}
	store_strv_clear(&names);
	return r < 0 ? -1 : 0;
}

static int drop_stale_pulls(struct store *s, alps_error **err)
{
	if (sql_run(s, err, "DELETE FROM pulls", NULL) < 0)
		return -1;
	int n = sqlite3_changes(s->db);
	if (n > 0)
		log_info("store %s: dropped %d pull rows of an earlier run", s->dir, n);
	return 0;
}

int store_repair(struct store *s, alps_error **err)
{
	if (empty_tmp(s, err) < 0 || drop_stale_pulls(s, err) < 0 ||
	    drop_broken_layers(s, err) < 0 || fix_refcounts(s, err) < 0 ||
	    remove_stray_files(s, err) < 0)
		return alps_error_prefix(err, "start-up repair");
	return 0;
}

/* ---- verify ----------------------------------------------------------- */

static int expect_no_row(struct store *s, const char *sql, const char *problem,
			 alps_error **err)
{
	_cleanup_free_ char *first = NULL;
	int r = sql_text(s, err, &first, sql, NULL);
	if (r <= 0)
		return r;
	_cleanup_free_ char *esc = log_escape(first ? first : "NULL", 300);
	return alps_fail(err, ALPS_E_INTEGRITY, "%s: %s", problem, esc);
}

static int verify_files(struct store *s, alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err, "SELECT digest, file, squashfs_size FROM layers",
				       NULL);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0) {
		const char *digest = (const char *)sqlite3_column_text(st, 0);
		_cleanup_free_ char *why = NULL;
		r = check_layer_file(s, digest, (const char *)sqlite3_column_text(st, 1),
				     sql_col_u64(st, 2), &why, err);
		if (r > 0)
			r = alps_fail(err, ALPS_E_INTEGRITY, "layer %s %s", digest ? digest : "",
				      why);
		if (r < 0)
			break;
	}
	sqlite3_finalize(st);
	if (r < 0)
		return -1;
	struct store_strv names = { 0 };
	if (list_dir(s->layers_fd, &names) < 0)
		r = alps_fail_errno(err, "cannot list layers/");
	for (size_t i = 0; r == 0 && i < names.n; i++) {
		int named = sql_int(s, err, NULL, "SELECT 1 FROM layers WHERE file = ?1", "s",
				    names.v[i]);
		if (named == 0)
			named = alps_fail(err, ALPS_E_INTEGRITY, "no row names layers/%s",
					  names.v[i]);
		r = named < 0 ? -1 : 0;
	}
	store_strv_clear(&names);
	return r;
}

int store_verify_locked(struct store *s, alps_error **err)
{
	_cleanup_free_ char *res = NULL;
	if (sql_text(s, err, &res, "PRAGMA integrity_check(1)", NULL) < 0)
		return -1;
	if (!res || strcmp(res, "ok") != 0)
		return alps_fail(err, ALPS_E_INTEGRITY, "integrity_check: %s",
				 res ? res : "no result");
	if (expect_no_row(s, "SELECT \"table\" FROM pragma_foreign_key_check",
			  "foreign key violation in table", err) < 0 ||
	    expect_no_row(s, REFCOUNT_MISMATCH, "wrong refcount of layer", err) < 0 ||
	    expect_no_row(s,
			  "SELECT digest FROM images WHERE NOT EXISTS "
			  "(SELECT 1 FROM image_layers WHERE image = images.digest)",
			  "no layers in image", err) < 0 ||
	    expect_no_row(s,
			  "SELECT digest FROM images i WHERE size != (SELECT "
			  "coalesce(sum(squashfs_size), 0) FROM layers WHERE digest IN "
			  "(SELECT layer FROM image_layers WHERE image = i.digest))",
			  "wrong size of image", err) < 0)
		return -1;
	return verify_files(s, err);
}
