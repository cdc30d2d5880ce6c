/* store.c: opening and closing the store, the SQL helpers, layer files and
 * holds (see store.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/digest.h"
#include "common/log.h"
#include "daemon/image/manifest.h"
#include "daemon/store/store_int.h"

/* ---- locking and errors --------------------------------------------- */

void store_lock(struct store *s)
{
	pthread_mutex_lock(&s->lock);
}

void store_unlock(struct store *s)
{
	pthread_mutex_unlock(&s->lock);
}

/* What the caller asked about and got wrong (no such job, in use...):
 * said in the caller's terms, without the store's path or what the store
 * was doing inside; the daemon's log keeps that. */
static bool user_facing(int code)
{
	return code == ALPS_E_NOT_FOUND || code == ALPS_E_BUSY || code == ALPS_E_EXISTS ||
	       code == ALPS_E_CONFLICT || code == ALPS_E_PERMISSION || code == ALPS_E_INVALID;
}

/* "no such job" about "999" reads "no such job 999"; other reasons get
 * the subject in front unless they name it already. */
static void user_message(alps_error *e, const char *subject)
{
	if (!subject || strstr(e->msg, subject))
		return;
	char *msg = strncmp(e->msg, "no such ", 8) == 0 && !strchr(e->msg, ':')
			    ? xasprintf("%s %s", e->msg, subject)
			    : xasprintf("%s: %s", subject, e->msg);
	free(e->msg);
	e->msg = msg;
}

int store_ctx(struct store *s, alps_error **err, const char *doing, const char *subject)
{
	_cleanup_free_ char *esc = subject ? log_escape(subject, 300) : NULL;
	/* Without doing: opening the store, an admin's matter where the path helps. */
	if (doing && err && *err && user_facing((*err)->code)) {
		log_debug("store %s: %s%s%s: %s", s->dir, doing, esc ? " " : "",
			  esc ? esc : "", (*err)->msg);
		user_message(*err, esc);
		return -1;
	}
	if (!doing)
		return alps_error_prefix(err, "store %s", s->dir);
	if (!esc)
		return alps_error_prefix(err, "store %s: %s", s->dir, doing);
	return alps_error_prefix(err, "store %s: %s %s", s->dir, doing, esc);
}

static int sql_code(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return ALPS_E_INTEGRITY;
	case SQLITE_FULL:
		return ALPS_E_LIMIT;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return ALPS_E_BUSY;
	case SQLITE_CONSTRAINT:
		return ALPS_E_CONFLICT;
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_READONLY:
	case SQLITE_PERM:
		return ALPS_E_IO;
	default:
		return ALPS_E_INTERNAL;
	}
}

int store_fail_sql(struct store *s, alps_error **err, const char *what)
{
	int rc = sqlite3_extended_errcode(s->db);
	return alps_fail(err, sql_code(rc), "%s: %s", what, sqlite3_errmsg(s->db));
}

/* ---- SQL helpers ------------------------------------------------------ */

static sqlite3_stmt *prepare_v(struct store *s, alps_error **err, const char *sql,
			       const char *fmt, va_list ap)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		/* Our own SQL: a failure here is a bug or a broken database. */
		_cleanup_free_ char *what = xasprintf("sqlite: preparing \"%.60s\"", sql);
		store_fail_sql(s, err, what);
		return NULL;
	}
	for (int i = 0; fmt && fmt[i]; i++) {
		int rc;
		if (fmt[i] == 's')
			rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1,
					       SQLITE_TRANSIENT);
		else if (fmt[i] == 'i')
			rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
		else
			abort();
		if (rc != SQLITE_OK) {
			store_fail_sql(s, err, "sqlite: binding a parameter");
			sqlite3_finalize(st);
			return NULL;
		}
	}
	return st;
}

sqlite3_stmt *sql_prepare(struct store *s, alps_error **err, const char *sql, const char *fmt,
			  ...)
{
	va_list ap;
	va_start(ap, fmt);
	sqlite3_stmt *st = prepare_v(s, err, sql, fmt, ap);
	va_end(ap);
	return st;
}

int sql_step(struct store *s, sqlite3_stmt *st, alps_error **err)
{
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return store_fail_sql(s, err, "sqlite");
}

int sql_run(struct store *s, alps_error **err, const char *sql, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sqlite3_stmt *st = prepare_v(s, err, sql, fmt, ap);
	va_end(ap);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0)
		;
	sqlite3_finalize(st);
	return r;
}

int sql_exec(struct store *s, alps_error **err, const char *sql)
{
	if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return store_fail_sql(s, err, "sqlite");
	return 0;
}

int sql_int(struct store *s, alps_error **err, int64_t *out, const char *sql, const char *fmt,
	    ...)
{
	va_list ap;
	va_start(ap, fmt);
	sqlite3_stmt *st = prepare_v(s, err, sql, fmt, ap);
	va_end(ap);
	if (!st)
		return -1;
	int r = sql_step(s, st, err);
	if (r > 0 && out)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return r;
}

int sql_text(struct store *s, alps_error **err, char **out, const char *sql, const char *fmt,
	     ...)
{
	va_list ap;
	*out = NULL;
	va_start(ap, fmt);
	sqlite3_stmt *st = prepare_v(s, err, sql, fmt, ap);
	va_end(ap);
	if (!st)
		return -1;
	int r = sql_step(s, st, err);
	if (r > 0)
		*out = sql_col_str(st, 0);
	sqlite3_finalize(st);
	return r;
}

char *sql_col_str(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	return t ? xstrdup((const char *)t) : NULL;
}

uint64_t sql_col_u64(sqlite3_stmt *st, int col)
{
	int64_t v = sqlite3_column_int64(st, col);
	return v < 0 ? 0 : (uint64_t)v;
}

int store_tx(struct store *s, int (*fn)(struct store *, void *, alps_error **), void *arg,
	     alps_error **err)
{
	/* IMMEDIATE: take the write lock now, so that a transaction never
	 * fails half-way to upgrade from reading to writing. */
	if (sql_exec(s, err, "BEGIN IMMEDIATE") < 0)
		return -1;
	int r = fn(s, arg, err);
	if (r >= 0 && sql_exec(s, err, "COMMIT") < 0)
		r = -1;
	if (r < 0 && !sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return r;
}

int store_stat_add_locked(struct store *s, const char *key, int64_t delta, alps_error **err)
{
	return sql_run(s, err,
		       "INSERT INTO stats(key, value) VALUES (?1, ?2) "
		       "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
		       "si", key, delta);
}

int store_collect(struct store *s, struct store_strv *out, const char *sql, const char *arg,
		  alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err, sql, arg ? "s" : NULL, arg);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0)
		store_strv_add(out, sql_col_str(st, 0));
	sqlite3_finalize(st);
	return r;
}

void store_strv_add(struct store_strv *l, char *str)
{
	l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
	l->v[l->n++] = str;
}

void store_strv_clear(struct store_strv *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* ---- digests, paths --------------------------------------------------- */

int store_check_digest(const char *digest, const char *what, alps_error **err)
{
	return digest_parse(digest, what, NULL, err);
}

char *store_layer_file(const char *digest)
{
	const char *colon = strchr(digest, ':');
	return xasprintf("%.*s-%s.sqfs", (int)(colon - digest), digest, colon + 1);
}

const char *store_dir(const struct store *s)
{
	return s->dir;
}

char *store_tmp_path(struct store *s)
{
	store_lock(s);
	uint64_t n = ++s->tmp_seq;
	store_unlock(s);
	/* tmp/ is emptied at start-up and only this process writes there, so
	 * a counter is unique; the pid only helps whoever reads a listing. */
	return xasprintf("%s/%ld-%" PRIu64 ".part", s->tmp_dir, (long)getpid(), n);
}

int store_layer_path(struct store *s, const char *digest, char **out, alps_error **err)
{
	*out = NULL;
	if (store_check_digest(digest, "layer digest", err) < 0)
		return store_ctx(s, err, NULL, NULL);
	_cleanup_free_ char *file = store_layer_file(digest);
	*out = xasprintf("%s/%s", s->layers_dir, file);
	return 0;
}

/* ---- holds ------------------------------------------------------------ */

static struct store_hold *hold_find(struct store *s, const char *digest)
{
	for (size_t i = 0; i < s->nholds; i++)
		if (strcmp(s->holds[i].digest, digest) == 0)
			return &s->holds[i];
	return NULL;
}

bool store_held_locked(struct store *s, const char *digest)
{
	if (hold_find(s, digest))
		return true;
	/* A pull holds what its manifest names, which may be an alias. */
	struct store_strv aliases = { 0 };
	int r = store_collect(s, &aliases, "SELECT digest FROM layer_aliases WHERE layer = ?1",
			      digest, NULL);
	bool held = r < 0;      /* in doubt, keep the layer */
	for (size_t i = 0; !held && i < aliases.n; i++)
		held = hold_find(s, aliases.v[i]) != NULL;
	store_strv_clear(&aliases);
	return held;
}

int store_canonical_locked(struct store *s, const char *digest, char **out, alps_error **err)
{
	return sql_text(s, err, out,
			"SELECT digest FROM layers WHERE digest = ?1 UNION ALL "
			"SELECT layer FROM layer_aliases WHERE digest = ?1 LIMIT 1",
			"s", digest);
}

static struct store_hold *hold_locked(struct store *s, const char *digest)
{
	struct store_hold *h = hold_find(s, digest);
	if (h) {
		h->count++;
		return h;
	}
	s->holds = xreallocarray(s->holds, s->nholds + 1, sizeof(*s->holds));
	s->holds[s->nholds] = (struct store_hold){ .digest = xstrdup(digest), .count = 1 };
	return &s->holds[s->nholds++];
}

static void release_locked(struct store *s, const char *digest)
{
	struct store_hold *h = hold_find(s, digest);
	if (!h) {
		log_error("store %s: release of layer %s, which is not held", s->dir, digest);
		return;
	}
	if (--h->count > 0)
		return;
	free(h->digest);
	*h = s->holds[--s->nholds];
}

int store_layer_hold(struct store *s, const char *digest, alps_error **err)
{
	if (store_check_digest(digest, "layer digest", err) < 0)
		return store_ctx(s, err, "holding a layer", NULL);
	store_lock(s);
	hold_locked(s, digest);
	store_unlock(s);
	return 0;
}

void store_layer_release(struct store *s, const char *digest)
{
	if (!digest_valid(digest))
		return;
	store_lock(s);
	release_locked(s, digest);
	store_unlock(s);
}

/* ---- layer rows ------------------------------------------------------- */

void store_layer_clear(struct store_layer *l)
{
	free(l->digest);
	free(l->diff_id);
	free(l->media_type);
	free(l->path);
	memset(l, 0, sizeof(*l));
}

void store_layer_free(struct store_layer *l)
{
	if (!l)
		return;
	store_layer_clear(l);
	free(l);
}

void store_layer_from_row(struct store *s, sqlite3_stmt *st, int col, struct store_layer *l)
{
	l->digest = sql_col_str(st, col);
	l->diff_id = sql_col_str(st, col + 1);
	l->media_type = sql_col_str(st, col + 2);
	l->compressed_size = sql_col_u64(st, col + 3);
	l->squashfs_size = sql_col_u64(st, col + 4);
	l->path = xasprintf("%s/%s", s->layers_dir, (const char *)sqlite3_column_text(st, col + 5));
	l->refcount = (uint32_t)sqlite3_column_int64(st, col + 6);
	l->last_used_ms = sql_col_u64(st, col + 7);
	l->damaged = sqlite3_column_int(st, col + 8) != 0;
}

int store_load_layer_locked(struct store *s, const char *digest, struct store_layer **out,
			    alps_error **err)
{
	*out = NULL;
	sqlite3_stmt *st = sql_prepare(s, err, "SELECT " STORE_LAYER_COLS
				       " FROM layers l WHERE l.digest = coalesce("
				       "(SELECT layer FROM layer_aliases WHERE digest = ?1), ?1)",
				       "s", digest);
	if (!st)
		return -1;
	int r = sql_step(s, st, err);
	if (r > 0) {
		*out = xzalloc(sizeof(**out));
		store_layer_from_row(s, st, 0, *out);
	}
	sqlite3_finalize(st);
	return r < 0 ? -1 : 0;
}

int store_layer_get(struct store *s, const char *digest, struct store_layer **out,
		    alps_error **err)
{
	*out = NULL;
	if (store_check_digest(digest, "layer digest", err) < 0)
		return store_ctx(s, err, "looking up a layer", NULL);
	store_lock(s);
	int r = store_load_layer_locked(s, digest, out, err);
	store_unlock(s);
	if (r == 0 && *out && (*out)->damaged) {
		/* A pull fetches it again and store_layer_commit() replaces it. */
		store_layer_free(*out);
		*out = NULL;
		r = alps_fail(err, ALPS_E_NOT_FOUND, "the layer is damaged (found by a verify)");
	} else if (r == 0 && !*out) {
		r = alps_fail(err, ALPS_E_NOT_FOUND, "no such layer");
	}
	return r < 0 ? store_ctx(s, err, "looking up layer", digest) : 0;
}

/* ---- committing a layer ----------------------------------------------- */

/* The name under tmp/ of tmp_path, or NULL if it is not a file directly
 * under tmp/: the store renames only what it handed out. */
static const char *tmp_name(struct store *s, const char *tmp_path)
{
	size_t len = strlen(s->tmp_dir);
	if (!tmp_path || strncmp(tmp_path, s->tmp_dir, len) != 0 || tmp_path[len] != '/')
		return NULL;
	const char *name = tmp_path + len + 1;
	if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return NULL;
	return name;
}

bool store_printable(const char *s, size_t max)
{
	size_t i;
	for (i = 0; s[i]; i++)
		if (i >= max || s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return i > 0;
}

static int check_layer_info(const struct store_layer_info *info, alps_error **err)
{
	if (store_check_digest(info->digest, "layer digest", err) < 0)
		return -1;
	if (info->diff_id && store_check_digest(info->diff_id, "diff id", err) < 0)
		return -1;
	if (!info->media_type || !store_printable(info->media_type, 255))
		return alps_fail(err, ALPS_E_INVALID, "media type missing or not printable");
	if (info->compressed_size > INT64_MAX)
		return alps_fail(err, ALPS_E_INVALID, "compressed size out of range");
	return 0;
}

/* Make tmp/name durable and visible as layers/file: fsync the data, rename,
 * fsync the directory.  Only after that may a row name the file.  Runs
 * without the mutex: fsync of a large layer takes a while. */
int store_file_checksum(int fd, char out[DIGEST_STRLEN_MAX], alps_error **err)
{
	struct digester *d = digester_new(DIGEST_SHA256);
	char buf[1 << 16];
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			digester_free(d);
			return alps_fail_errno(err, "cannot read");
		}
		if (n == 0)
			break;
		digester_update(d, buf, (size_t)n);
		off += n;
	}
	digester_final(d, out);
	digester_free(d);
	return 0;
}

static int publish_file(struct store *s, const char *name, const char *file, uint64_t *size,
			char checksum[DIGEST_STRLEN_MAX], alps_error **err)
{
	_cleanup_close_ int fd = openat(s->tmp_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		return alps_fail_errno(err, "cannot open tmp/%s", name);
	if (fstat(fd, &st) < 0)
		return alps_fail_errno(err, "cannot stat tmp/%s", name);
	if (!S_ISREG(st.st_mode) || st.st_size == 0)
		return alps_fail(err, ALPS_E_INVALID, "tmp/%s is not a non-empty regular file", name);
	/* Nothing may change a layer once its digest names it. */
	if (fchmod(fd, 0400) < 0)
		return alps_fail_errno(err, "cannot chmod tmp/%s", name);
	if (fsync(fd) < 0)
		return alps_fail_errno(err, "cannot fsync tmp/%s", name);
	/* Read back from the page cache, what alps verify compares with. */
	if (store_file_checksum(fd, checksum, err) < 0)
		return alps_error_prefix(err, "checksum of tmp/%s", name);
	if (renameat(s->tmp_fd, name, s->layers_fd, file) < 0)
		return alps_fail_errno(err, "cannot rename tmp/%s to layers/%s", name, file);
	if (fsync(s->layers_fd) < 0)
		return alps_fail_errno(err, "cannot fsync layers/ after adding %s", file);
	*size = (uint64_t)st.st_size;
	return 0;
}

struct layer_row {
	const struct store_layer_info *info;
	const char *file;
	uint64_t size;
	char checksum[DIGEST_STRLEN_MAX];
};

static int insert_layer_tx(struct store *s, void *arg, alps_error **err)
{
	struct layer_row *row = arg;
	const struct store_layer_info *info = row->info;
	/* Another thread may have committed the same digest meanwhile: the
	 * file is the same content, the first row stays. */
	if (sql_run(s, err,
		    "INSERT INTO layers(digest, diff_id, media_type, compressed_size, "
		    "squashfs_size, file, refcount, last_used_ms, checksum) "
		    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8) ON CONFLICT(digest) DO NOTHING",
		    "sssiisis", info->digest, info->diff_id, info->media_type,
		    (int64_t)info->compressed_size, (int64_t)row->size, row->file,
		    (int64_t)now_realtime_ms(), row->checksum) < 0)
		return -1;
	if (sqlite3_changes(s->db) == 0)
		return 0;
	return store_stat_add_locked(s, "layers_committed", 1, err);
}

/* The layer is already there: drop the new copy, mark the old one used. */
static int commit_existing(struct store *s, const char *name, const char *digest,
			   struct store_layer **out, alps_error **err)
{
	if (unlinkat(s->tmp_fd, name, 0) < 0 && errno != ENOENT)
		log_warn("store %s: cannot remove tmp/%s: %s", s->dir, name, strerror(errno));
	store_lock(s);
	int r = sql_run(s, err,
			"UPDATE layers SET last_used_ms = ?2 WHERE digest = coalesce("
			"(SELECT layer FROM layer_aliases WHERE digest = ?1), ?1)",
			"si", digest, (int64_t)now_realtime_ms());
	if (r == 0 && out)
		r = store_load_layer_locked(s, digest, out, err);
	store_unlock(s);
	/* Only if the caller did not hold the layer (see store.h). */
	if (r == 0 && out && !*out)
		r = alps_fail(err, ALPS_E_NOT_FOUND, "the layer was removed meanwhile");
	return r;
}

/* Inside a transaction: make info->digest an alias of the layer with the
 * same diff_id, if there is one (1), else 0. */
static int alias_tx(struct store *s, void *arg, alps_error **err)
{
	const struct store_layer_info *info = arg;
	_cleanup_free_ char *same = NULL;
	int r = sql_text(s, err, &same,
			 "SELECT digest FROM layers WHERE diff_id = ?1 AND damaged = 0 "
			 "ORDER BY digest LIMIT 1", "s",
			 info->diff_id);
	if (r <= 0)
		return r;
	if (sql_run(s, err,
		    "INSERT INTO layer_aliases(digest, layer, media_type, compressed_size) "
		    "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(digest) DO NOTHING",
		    "sssi", info->digest, same, info->media_type,
		    (int64_t)info->compressed_size) < 0 ||
	    store_stat_add_locked(s, "layers_deduplicated", 1, err) < 0)
		return -1;
	log_info("store %s: layer %s has the content of layer %s (diff_id %s): stored once",
		 s->dir, info->digest, same, info->diff_id);
	return 1;
}

/* 1 if the store has the layer, by digest, as an alias, or (made an alias
 * now) by its uncompressed content; 0 if not. */
static int layer_present_locked(struct store *s, const struct store_layer_info *info,
				alps_error **err)
{
	_cleanup_free_ char *have = NULL;
	int r = store_canonical_locked(s, info->digest, &have, err);
	if (r != 0 || !info->diff_id)
		return r;
	return store_tx(s, alias_tx, (void *)info, err);
}

/* *digest: the layer of digest (or of the alias) if it is marked damaged,
 * else NULL. */
static int damaged_locked(struct store *s, const char *digest, char **out, alps_error **err)
{
	return sql_text(s, err, out,
			"SELECT digest FROM layers WHERE damaged = 1 AND digest = coalesce("
			"(SELECT layer FROM layer_aliases WHERE digest = ?1), ?1)",
			"s", digest) < 0 ? -1 : 0;
}

/* A verify found layer digest damaged and a pull fetched it again: the new
 * file takes the old one's place (a job that has the old one mounted keeps
 * its inode), the row is whole again.  The caller took a hold. */
static int replace_damaged(struct store *s, const char *name, const char *digest,
			   struct store_layer **out, alps_error **err)
{
	_cleanup_free_ char *file = store_layer_file(digest);
	char sum[DIGEST_STRLEN_MAX];
	uint64_t size = 0;
	int r = publish_file(s, name, file, &size, sum, err);
	store_lock(s);
	if (r == 0)
		r = sql_run(s, err,
			    "UPDATE layers SET squashfs_size = ?2, checksum = ?3, damaged = 0, "
			    "last_used_ms = ?4 WHERE digest = ?1",
			    "sisi", digest, (int64_t)size, sum, (int64_t)now_realtime_ms());
	if (r == 0) {
		log_notice("store %s: damaged layer %s fetched again and replaced", s->dir, digest);
		if (out)
			r = store_load_layer_locked(s, digest, out, err);
	}
	release_locked(s, digest);
	store_unlock(s);
	return r;
}

static int commit_layer(struct store *s, const char *name, const struct store_layer_info *info,
			struct store_layer **out, alps_error **err)
{
	_cleanup_free_ char *file = store_layer_file(info->digest);
	struct layer_row row = { .info = info, .file = file };

	/* The hold keeps a removal that decided to delete this digest's file
	 * from unlinking it after our rename: removals unlink under the
	 * mutex and skip held layers. */
	store_lock(s);
	_cleanup_free_ char *broken = NULL;
	int present = layer_present_locked(s, info, err);
	if (present > 0 && damaged_locked(s, info->digest, &broken, err) < 0)
		present = -1;
	/* (damaged_locked runs only for a present layer: broken is NULL when
	 * present is 0.) */
	if (present == 0)
		hold_locked(s, info->digest)->publishing++;
	else if (broken)
		hold_locked(s, broken);
	store_unlock(s);
	if (present < 0)
		return -1;
	if (broken)
		return replace_damaged(s, name, broken, out, err);
	if (present > 0)
		return commit_existing(s, name, info->digest, out, err);

	int r = publish_file(s, name, file, &row.size, row.checksum, err);
	store_lock(s);
	bool published = r == 0;
	if (r == 0)
		r = store_tx(s, insert_layer_tx, &row, err);
	if (r == 0 && out)
		r = store_load_layer_locked(s, info->digest, out, err);
	/* Ours since the hold above: no removal drops a hold it did not take. */
	struct store_hold *h = hold_find(s, info->digest);
	unsigned others = h ? --h->publishing : 0;
	/* A file renamed into layers/ whose row failed (a full disk) goes at
	 * once, unless another commit of the same digest is between its own
	 * rename and row, or a row names it after all; the space it holds may
	 * be what the next pull needs. */
	if (r < 0 && published && others == 0 &&
	    sql_int(s, NULL, NULL, "SELECT 1 FROM layers WHERE digest = ?1", "s", info->digest) == 0 &&
	    unlinkat(s->layers_fd, file, 0) < 0 && errno != ENOENT)
		log_warn("store %s: cannot remove layers/%s (start-up will): %s", s->dir, file,
			 strerror(errno));
	release_locked(s, info->digest);
	store_unlock(s);
	return r;
}

int store_layer_commit(struct store *s, const char *tmp_path, const struct store_layer_info *info,
		       struct store_layer **out, alps_error **err)
{
	const char *name = tmp_name(s, tmp_path);
	int r;
	if (out)
		*out = NULL;
	if (!name) {
		_cleanup_free_ char *esc = log_escape(tmp_path ? tmp_path : "(null)", 300);
		alps_fail(err, ALPS_E_INVALID, "%s is not a file under %s/", esc, s->tmp_dir);
		return store_ctx(s, err, "committing a layer", NULL);
	}
	r = info ? check_layer_info(info, err) : alps_fail(err, ALPS_E_INVALID, "no layer info");
	if (r == 0)
		r = commit_layer(s, name, info, out, err);
	if (r < 0) {
		if (unlinkat(s->tmp_fd, name, 0) < 0 && errno != ENOENT)
			log_warn("store %s: cannot remove tmp/%s: %s", s->dir, name,
				 strerror(errno));
		return store_ctx(s, err, "committing layer",
				 info && info->digest ? info->digest : "(null)");
	}
	return 0;
}

void store_unlink_layer_files_locked(struct store *s, const struct store_strv *files)
{
	for (size_t i = 0; i < files->n; i++)
		if (unlinkat(s->layers_fd, files->v[i], 0) < 0 && errno != ENOENT)
			log_warn("store %s: cannot remove layers/%s (start-up will): %s",
				 s->dir, files->v[i], strerror(errno));
}

/* ---- open, close ------------------------------------------------------ */

static struct store *store_new(const char *dir)
{
	struct store *s = xzalloc(sizeof(*s));
	size_t len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	s->dir = xstrndup(dir, len);
	s->layers_dir = xasprintf("%s/layers", s->dir);
	s->tmp_dir = xasprintf("%s/tmp", s->dir);
	s->dir_fd = s->layers_fd = s->tmp_fd = s->lock_fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

/* The store is root's alone: alps.db holds every user's tags, access rows,
 * image configs (ENV secrets) and jobs' environments, and read access to
 * -shm lets a user take sqlite's locks.  An older alpsd made the directory
 * 0755 and the files 0644; take away what is more than mode, and say so. */
static int repair_mode(struct store *s, int fd, const char *name, mode_t mode, alps_error **err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return alps_fail_errno(err, "cannot stat %s", name);
	if (st.st_uid != geteuid())
		log_warn("store %s: %s is owned by uid %u, not by alpsd's uid %u", s->dir, name,
			 (unsigned)st.st_uid, (unsigned)geteuid());
	mode_t had = st.st_mode & 07777;
	if ((had & ~mode) == 0)
		return 0;
	if (fchmod(fd, had & mode) < 0)
		return alps_fail_errno(err, "cannot chmod %s to %04o", name, (unsigned)(had & mode));
	log_notice("store %s: %s had mode %04o, now %04o: the store is for root only", s->dir,
		   name, (unsigned)had, (unsigned)(had & mode));
	return 0;
}

/* The database files: alps.db is created 0600 here rather than by sqlite
 * (which would honour the umask), and sqlite gives -wal and -shm the mode
 * of alps.db, so all three end up 0600. */
static int repair_db_modes(struct store *s, alps_error **err)
{
	static const char *const names[] = { "alps.db", "alps.db-wal", "alps.db-shm" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | (i == 0 ? O_CREAT : 0);
		_cleanup_close_ int fd = openat(s->dir_fd, names[i], flags, 0600);
		if (fd < 0 && errno == ENOENT)
			continue;
		if (fd < 0)
			return alps_fail_errno(err, "cannot open %s", names[i]);
		if (repair_mode(s, fd, names[i], 0600, err) < 0)
			return -1;
	}
	return 0;
}

static int open_subdir(struct store *s, const char *name, int *fd, alps_error **err)
{
	if (mkdirat(s->dir_fd, name, 0700) < 0 && errno != EEXIST)
		return alps_fail_errno(err, "cannot create %s/", name);
	/* O_NOFOLLOW: a symlink here would point renames and unlinks
	 * somewhere else. */
	*fd = openat(s->dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*fd < 0)
		return alps_fail_errno(err, "cannot open %s/", name);
	_cleanup_free_ char *what = xasprintf("%s/", name);
	return repair_mode(s, *fd, what, 0700, err);
}

static int open_dirs(struct store *s, alps_error **err)
{
	if (mkdir_p(s->dir, 0700) < 0)
		return alps_fail_errno(err, "cannot create the directory");
	s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd < 0)
		return alps_fail_errno(err, "cannot open the directory");
	if (repair_mode(s, s->dir_fd, "the state directory", 0700, err) < 0 ||
	    repair_db_modes(s, err) < 0)
		return -1;
	if (open_subdir(s, "layers", &s->layers_fd, err) < 0 ||
	    open_subdir(s, "tmp", &s->tmp_fd, err) < 0)
		return -1;
	return 0;
}

/* Two daemons on one store would empty each other's tmp/ and remove each
 * other's fresh files as strays. */
static int lock_dir(struct store *s, alps_error **err)
{
	s->lock_fd = openat(s->dir_fd, "alps.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
			    0600);
	if (s->lock_fd < 0)
		return alps_fail_errno(err, "cannot open alps.lock");
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	if (errno == EWOULDBLOCK)
		return alps_fail(err, ALPS_E_BUSY, "already open elsewhere (alps.lock is locked)");
	return alps_fail_errno(err, "cannot lock alps.lock");
}

static int open_db(struct store *s, alps_error **err)
{
	_cleanup_free_ char *path = xasprintf("%s/alps.db", s->dir);
	/* NOMUTEX: s->lock serializes every use of the connection. */
	int rc = sqlite3_open_v2(path, &s->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
					 SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
				 NULL);
	if (!s->db) {
		fprintf(stderr, "alps: out of memory opening sqlite\n");
		abort();
	}
	sqlite3_extended_result_codes(s->db, 1);
	if (rc != SQLITE_OK)
		return store_fail_sql(s, err, "cannot open alps.db");
	/* Only an outside reader (an admin's sqlite3 shell) can make us wait. */
	sqlite3_busy_timeout(s->db, 5000);
	return 0;
}

int store_open(const char *state_dir, struct store **out, alps_error **err)
{
	*out = NULL;
	if (!state_dir || state_dir[0] != '/') {
		_cleanup_free_ char *esc = log_escape(state_dir ? state_dir : "(null)", 300);
		return alps_fail(err, ALPS_E_INVALID,
				 "store %s: the state directory must be an absolute path", esc);
	}
	struct store *s = store_new(state_dir);
	if (open_dirs(s, err) < 0 || lock_dir(s, err) < 0 || open_db(s, err) < 0 ||
	    store_schema_open(s, err) < 0 || store_repair(s, err) < 0) {
		store_ctx(s, err, NULL, NULL);
		store_close(s);
		return -1;
	}
	*out = s;
	return 0;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->db) {
		sqlite3_exec(s->db, "PRAGMA optimize", NULL, NULL, NULL);
		if (sqlite3_close(s->db) != SQLITE_OK) {
			log_error("store %s: closing alps.db: %s", s->dir, sqlite3_errmsg(s->db));
			sqlite3_close_v2(s->db);
		}
	}
	int fds[] = { s->tmp_fd, s->layers_fd, s->lock_fd, s->dir_fd };
	for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	for (size_t i = 0; i < s->nholds; i++)
		free(s->holds[i].digest);
	free(s->holds);
	pthread_mutex_destroy(&s->lock);
	free(s->dir);
	free(s->layers_dir);
	free(s->tmp_dir);
	free(s);
}

int store_verify(struct store *s, alps_error **err)
{
	store_lock(s);
	int r = store_verify_locked(s, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "verifying", NULL) : 0;
}
