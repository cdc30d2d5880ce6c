/* store_int.h: what the store's files share; not for other modules.
 *
 * Functions named *_locked expect s->lock held; the public functions take
 * it.  Internal helpers fill *err with the bare reason ("layer file
 * layers/x is missing", "sqlite: disk I/O error"); each public function adds
 * "store <dir>: <what it was doing>: " once, with store_ctx(). */
#ifndef ALPS_DAEMON_STORE_INT_H
#define ALPS_DAEMON_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "common/digest.h"
#include "daemon/store/store.h"

struct store_hold {
	char *digest;           /* owned */
	unsigned count;
	unsigned publishing;    /* store_layer_commit() calls between rename and row */
};

struct store {
	char *dir;              /* owned: the state directory, no trailing '/' */
	char *layers_dir;       /* owned: <dir>/layers */
	char *tmp_dir;          /* owned: <dir>/tmp */
	int dir_fd;
	int layers_fd;
	int tmp_fd;
	int lock_fd;            /* flock()ed alps.lock */
	sqlite3 *db;
	pthread_mutex_t lock;   /* guards db, holds, tmp_seq */
	struct store_hold *holds;       /* owned; layers held by pulls */
	size_t nholds;
	uint64_t tmp_seq;
	uint64_t reserved;      /* bytes admitted pulls may still add (store_admit()) */
};

void store_lock(struct store *s);
void store_unlock(struct store *s);

/* Prefix *err with "store <dir>: <doing>[ <subject>]" (subject escaped, may
 * be NULL) and return -1; an error about the caller's input (no such job,
 * in use...) only names the subject, the rest goes to the debug log. */
int store_ctx(struct store *s, alps_error **err, const char *doing, const char *subject);
/* Fill *err with "<what>: <sqlite's last error on s->db>", the code taken
 * from sqlite's, and return -1. */
int store_fail_sql(struct store *s, alps_error **err, const char *what);

/* sha256 of the file open at fd, "sha256:<hex>".  Reads from offset 0
 * with pread(). */
int store_file_checksum(int fd, char out[DIGEST_STRLEN_MAX], alps_error **err);

/* Validate digest ("what" names it in the message). */
int store_check_digest(const char *digest, const char *what, alps_error **err);
/* Layer file name "<algo>-<hex>.sqfs" of a valid digest.  Caller frees. */
char *store_layer_file(const char *digest);
/* Is layer digest (or an alias of it) held by a pull? */
bool store_held_locked(struct store *s, const char *digest);
/* *out: the digest of the layer row of digest (itself or, for an alias,
 * its layer's; caller frees): 1, or 0 with *out NULL if neither. */
int store_canonical_locked(struct store *s, const char *digest, char **out, alps_error **err);

/* Statements.  fmt lists the parameters to bind, one letter each:
 * 's' const char * (NULL binds NULL), 'i' int64_t.  Parameters are numbered
 * in order, so SQL may use ?1, ?2... to repeat one.  Never format user
 * input into sql. */
sqlite3_stmt *sql_prepare(struct store *s, alps_error **err, const char *sql, const char *fmt,
			  ...);
/* Run a statement that returns no rows. */
int sql_run(struct store *s, alps_error **err, const char *sql, const char *fmt, ...);
/* Run SQL text without parameters (schema, pragmas). */
int sql_exec(struct store *s, alps_error **err, const char *sql);
/* First column of the first row as an integer: 1 with *out set, 0 if there
 * is no row, -1 on error.  out may be NULL (existence test). */
int sql_int(struct store *s, alps_error **err, int64_t *out, const char *sql, const char *fmt,
	    ...);
/* Same for text; *out (caller frees) is NULL for SQL NULL. */
int sql_text(struct store *s, alps_error **err, char **out, const char *sql, const char *fmt,
	     ...);
/* sqlite3_step(): SQLITE_ROW -> 1, SQLITE_DONE -> 0, else -1 with *err. */
int sql_step(struct store *s, sqlite3_stmt *st, alps_error **err);
/* A text column duplicated (caller frees), NULL for SQL NULL. */
char *sql_col_str(sqlite3_stmt *st, int col);
uint64_t sql_col_u64(sqlite3_stmt *st, int col);

/* Run fn(s, arg, err) in a transaction (BEGIN IMMEDIATE): committed if fn
 * returns >= 0, rolled back otherwise.  Returns fn's result or -1. */
int store_tx(struct store *s, int (*fn)(struct store *, void *, alps_error **), void *arg,
	     alps_error **err);
/* Bump counter key by delta (inside a transaction). */
int store_stat_add_locked(struct store *s, const char *key, int64_t delta, alps_error **err);

/* A growing list of strings (digests, file names). */
struct store_strv {
	char **v;               /* owned, each owned */
	size_t n;
};
void store_strv_add(struct store_strv *l, char *str);  /* takes str */
void store_strv_clear(struct store_strv *l);
/* Append the first column of every row of sql, run with one text
 * parameter arg (or none if arg is NULL), to *out. */
int store_collect(struct store *s, struct store_strv *out, const char *sql, const char *arg,
		  alps_error **err);
/* Is s non-empty, at most max bytes of printable ASCII? */
bool store_printable(const char *s, size_t max);

/* Unlink files (names under layers/) of rows a committed transaction
 * dropped.  A failure is logged, not returned: the rows are gone, so the
 * next start-up removes what is left. */
void store_unlink_layer_files_locked(struct store *s, const struct store_strv *files);

/* store_remove.c: a removal in progress. */
struct removal {
	struct store_removed counts;
	struct store_strv files;        /* under layers/, to unlink after commit */
	struct store_strv images;       /* removed: their injection cache entries go too */
};
/* Inside a transaction: remove image digest (ALPS_E_BUSY naming the job
 * if one uses it), dropping the layers that no image uses any more and no
 * pull holds. */
int store_remove_image_locked(struct store *s, const char *digest, struct removal *rm,
			      alps_error **err);
/* Inside a transaction: drop the rows of the layers of dead that no pull
 * holds (their refcount is 0). */
int store_drop_unused_locked(struct store *s, const struct store_strv *dead, struct removal *rm,
			     alps_error **err);
/* After store_tx() returned r: unlink the dropped files if it committed,
 * add the counts to *total, clear *rm.  Returns r. */
int store_removal_finish(struct store *s, int r, struct removal *rm,
			 struct store_removed *total);

/* store_image.c: uid in range (STORE_UID_ANY too if any_ok); a canonical
 * reference; *digest (caller frees) of the image uid may see that what
 * names (see store_image_find()), or ALPS_E_NOT_FOUND. */
int store_check_uid(int64_t uid, bool any_ok, alps_error **err);
int store_check_ref(const char *ref, alps_error **err);
int store_resolve_locked(struct store *s, const char *what, int64_t uid, char **digest,
			 alps_error **err);

/* The origin of access rows store_image_grant() adds: no registry's. */
#define STORE_ORIGIN_GRANT "(granted)"

/* store_access.c: record the access a commit (from) gives to image
 * digest (is_new: inserted by this transaction). */
int store_set_access_locked(struct store *s, const char *digest, const struct store_origin *from,
			    bool is_new, alps_error **err);

/* store_schema.c: check the database, bring its schema to
 * STORE_SCHEMA_VERSION. */
int store_schema_open(struct store *s, alps_error **err);
/* store_repair.c: start-up repair (see store.h) and store_verify(). */
int store_repair(struct store *s, alps_error **err);
int store_verify_locked(struct store *s, alps_error **err);
/* Remove name under dirfd, a directory recursively.  -1 with errno. */
int store_remove_entry(int dirfd, const char *name);

/* Layer rows.  STORE_LAYER_COLS selects a row of layers aliased "l" in
 * the order store_layer_from_row() reads from column col on. */
#define STORE_LAYER_COLS \
	"l.digest, l.diff_id, l.media_type, l.compressed_size, l.squashfs_size, " \
	"l.file, l.refcount, l.last_used_ms, l.damaged"
void store_layer_from_row(struct store *s, sqlite3_stmt *st, int col, struct store_layer *l);
/* *out = layer digest (caller frees), or NULL if there is none. */
int store_load_layer_locked(struct store *s, const char *digest, struct store_layer **out,
			    alps_error **err);
void store_layer_clear(struct store_layer *l);

#endif
