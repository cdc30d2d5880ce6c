/* store_jobs.c: the jobs table, in-flight pulls and counters (see store.h).
 *
 * The store only keeps the rows; what a state means and who may see a job
 * is the job module's business.  A job row names the image it uses, and the
 * schema (ON DELETE RESTRICT) together with the check in removals keeps that
 * image in the store until the row goes. */
#include <config.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/store/store_int.h"

#define JOB_COLS "id, uid, user_name, image, state, created_ms, environment_json, mounts"

/* Job ids end up in paths (/run/alps/jobs/<id>/): a leading alphanumeric
 * keeps "." and ".." out. */
static int check_job_id(const char *id, alps_error **err)
{
	static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				 "0123456789_.+-";
	size_t len = id ? strspn(id, ok) : 0;
	if (len > 0 && !id[len] && len <= STORE_JOB_ID_MAX && isalnum((unsigned char)id[0]))
		return 0;
	_cleanup_free_ char *esc = log_escape(id ? id : "(null)", 100);
	return alps_fail(err, ALPS_E_INVALID,
			 "job id \"%s\" is not valid (a letter or digit, then up to %d of "
			 "[A-Za-z0-9_.+-])",
			 esc, STORE_JOB_ID_MAX - 1);
}

static const char *const state_names[] = {
	[STORE_JOB_UNKNOWN] = "unknown",
	[STORE_JOB_PREPARING] = "preparing",
	[STORE_JOB_READY] = "ready",
};

const char *store_job_state_name(enum store_job_state s)
{
	return (unsigned)s < ARRAY_SIZE(state_names) ? state_names[s] : state_names[0];
}

static enum store_job_state state_parse(const char *name)
{
	for (size_t i = 1; name && i < ARRAY_SIZE(state_names); i++)
		if (strcmp(state_names[i], name) == 0)
			return (enum store_job_state)i;
	return STORE_JOB_UNKNOWN;
}

static int check_state(enum store_job_state state, alps_error **err)
{
	if (state == STORE_JOB_PREPARING || state == STORE_JOB_READY)
		return 0;
	return alps_fail(err, ALPS_E_INVALID, "job state %d is not one a job can be in", (int)state);
}

static int check_job(const struct store_job *job, alps_error **err)
{
	if (!job)
		return alps_fail(err, ALPS_E_INVALID, "no job");
	if (check_job_id(job->id, err) < 0 || check_state(job->state, err) < 0 ||
	    (job->image_digest && store_check_digest(job->image_digest, "image digest", err) < 0))
		return -1;
	if (!job->user || !store_printable(job->user, 256))
		return alps_fail(err, ALPS_E_INVALID, "user name missing or not printable");
	return store_check_uid(job->uid, false, err);
}

static int insert_job_tx(struct store *s, void *arg, alps_error **err)
{
	const struct store_job *job = arg;
	int64_t now = (int64_t)now_realtime_ms();
	int r = sql_int(s, err, NULL, "SELECT 1 FROM jobs WHERE id = ?1", "s", job->id);
	if (r > 0)
		return alps_fail(err, ALPS_E_EXISTS, "a job with this id exists");
	if (r == 0 && job->image_digest) {
		r = sql_int(s, err, NULL, "SELECT 1 FROM images WHERE digest = ?1", "s",
			    job->image_digest);
		if (r == 0)
			return alps_fail(err, ALPS_E_NOT_FOUND, "image %s is not in the store",
					 job->image_digest);
	}
	if (r < 0)
		return -1;
	return sql_run(s, err,
		       "INSERT INTO jobs(" JOB_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
		       "sisssiss", job->id, (int64_t)job->uid, job->user, job->image_digest,
		       store_job_state_name(job->state), job->created_ms ? (int64_t)job->created_ms : now,
		       job->environment_json, job->mounts);
}

int store_job_insert(struct store *s, const struct store_job *job, alps_error **err)
{
	if (check_job(job, err) < 0)
		return store_ctx(s, err, "adding a job", NULL);
	store_lock(s);
	int r = store_tx(s, insert_job_tx, (void *)job, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "adding job", job->id) : 0;
}

static void job_from_row(sqlite3_stmt *st, struct store_job *job)
{
	job->id = sql_col_str(st, 0);
	job->uid = (uid_t)sqlite3_column_int64(st, 1);
	job->user = sql_col_str(st, 2);
	job->image_digest = sql_col_str(st, 3);
	_cleanup_free_ char *state = sql_col_str(st, 4);
	job->state = state_parse(state);
	job->created_ms = sql_col_u64(st, 5);
	job->environment_json = sql_col_str(st, 6);
	job->mounts = sql_col_str(st, 7);
}

static void job_clear(struct store_job *job)
{
	free(job->id);
	free(job->user);
	free(job->image_digest);
	free(job->environment_json);
	free(job->mounts);
	memset(job, 0, sizeof(*job));
}

void store_job_free(struct store_job *job)
{
	if (!job)
		return;
	job_clear(job);
	free(job);
}

void store_jobs_free(struct store_job *jobs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		job_clear(&jobs[i]);
	free(jobs);
}

static int get_locked(struct store *s, const char *id, struct store_job **out, alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err, "SELECT " JOB_COLS " FROM jobs WHERE id = ?1", "s",
				       id);
	if (!st)
		return -1;
	int r = sql_step(s, st, err);
	if (r > 0) {
		*out = xzalloc(sizeof(**out));
		job_from_row(st, *out);
	} else if (r == 0) {
		r = alps_fail(err, ALPS_E_NOT_FOUND, "no such job");
	}
	sqlite3_finalize(st);
	return r < 0 ? -1 : 0;
}

int store_job_get(struct store *s, const char *id, struct store_job **out, alps_error **err)
{
	*out = NULL;
	if (check_job_id(id, err) < 0)
		return store_ctx(s, err, "looking up a job", NULL);
	store_lock(s);
	int r = get_locked(s, id, out, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "looking up job", id) : 0;
}

static int list_locked(struct store *s, int64_t uid, struct store_job **out, size_t *n,
		       alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err,
				       "SELECT " JOB_COLS " FROM jobs WHERE ?1 < 0 OR uid = ?1 "
				       "ORDER BY created_ms, id",
				       "i", uid);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0) {
		*out = xreallocarray(*out, *n + 1, sizeof(**out));
		memset(&(*out)[*n], 0, sizeof(**out));
		job_from_row(st, &(*out)[(*n)++]);
	}
	sqlite3_finalize(st);
	return r;
}

int store_job_list(struct store *s, int64_t uid, struct store_job **out, size_t *n,
		   alps_error **err)
{
	*out = NULL;
	*n = 0;
	if (store_check_uid(uid, true, err) < 0)
		return store_ctx(s, err, "listing jobs", NULL);
	store_lock(s);
	int r = list_locked(s, uid, out, n, err);
	store_unlock(s);
	if (r < 0) {
		store_jobs_free(*out, *n);
		*out = NULL;
		*n = 0;
		return store_ctx(s, err, "listing jobs", NULL);
	}
	return 0;
}

struct job_arg {
	const char *id;
	enum store_job_state state;     /* update_state_tx */
	const char *text;               /* update_mounts_tx */
};

static int update_state_tx(struct store *s, void *arg, alps_error **err)
{
	const struct job_arg *a = arg;
	if (sql_run(s, err, "UPDATE jobs SET state = ?2 WHERE id = ?1", "ss", a->id,
		    store_job_state_name(a->state)) < 0)
		return -1;
	return sqlite3_changes(s->db) ? 0 : alps_fail(err, ALPS_E_NOT_FOUND, "no such job");
}

/* The image was in use until now: that counts as use for store_gc(). */
static int delete_tx(struct store *s, void *arg, alps_error **err)
{
	const struct job_arg *a = arg;
	if (sql_run(s, err,
		    "UPDATE images SET last_used_ms = ?2 WHERE digest = "
		    "(SELECT image FROM jobs WHERE id = ?1)",
		    "si", a->id, (int64_t)now_realtime_ms()) < 0 ||
	    sql_run(s, err, "DELETE FROM jobs WHERE id = ?1", "s", a->id) < 0)
		return -1;
	return sqlite3_changes(s->db) ? 0 : alps_fail(err, ALPS_E_NOT_FOUND, "no such job");
}

static int run_job_tx(struct store *s, int (*fn)(struct store *, void *, alps_error **),
		      const char *doing, const struct job_arg *a, alps_error **err)
{
	if (check_job_id(a->id, err) < 0 || (fn == update_state_tx && check_state(a->state, err) < 0))
		return store_ctx(s, err, doing, NULL);
	store_lock(s);
	int r = store_tx(s, fn, (void *)a, err);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, doing, a->id) : 0;
}

int store_job_update_state(struct store *s, const char *id, enum store_job_state state,
			   alps_error **err)
{
	struct job_arg a = { .id = id, .state = state };
	return run_job_tx(s, update_state_tx, "updating job", &a, err);
}

static int update_mounts_tx(struct store *s, void *arg, alps_error **err)
{
	const struct job_arg *a = arg;
	if (sql_run(s, err, "UPDATE jobs SET mounts = ?2 WHERE id = ?1", "ss", a->id, a->text) < 0)
		return -1;
	return sqlite3_changes(s->db) ? 0 : alps_fail(err, ALPS_E_NOT_FOUND, "no such job");
}

int store_job_set_mounts(struct store *s, const char *id, const char *mounts, alps_error **err)
{
	struct job_arg a = { .id = id, .text = mounts };
	return run_job_tx(s, update_mounts_tx, "recording the mounts of job", &a, err);
}

static int update_env_tx(struct store *s, void *arg, alps_error **err)
{
	const struct job_arg *a = arg;
	if (sql_run(s, err, "UPDATE jobs SET environment_json = ?2 WHERE id = ?1", "ss", a->id,
		    a->text) < 0)
		return -1;
	return sqlite3_changes(s->db) ? 0 : alps_fail(err, ALPS_E_NOT_FOUND, "no such job");
}

int store_job_set_environment(struct store *s, const char *id, const char *env_json,
			      alps_error **err)
{
	struct job_arg a = { .id = id, .text = env_json };
	return run_job_tx(s, update_env_tx, "recording the environment of job", &a, err);
}

int store_job_delete(struct store *s, const char *id, alps_error **err)
{
	struct job_arg a = { .id = id };
	return run_job_tx(s, delete_tx, "deleting job", &a, err);
}

int store_image_in_use(struct store *s, const char *digest, char **job_id, alps_error **err)
{
	*job_id = NULL;
	if (store_check_digest(digest, "image digest", err) < 0)
		return store_ctx(s, err, "checking the use of an image", NULL);
	store_lock(s);
	int r = sql_text(s, err, job_id,
			 "SELECT id FROM jobs WHERE image = ?1 ORDER BY created_ms, id LIMIT 1", "s",
			 digest);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "checking the use of image", digest) : 0;
}

/* ---- pulls ------------------------------------------------------------ */

int store_pull_begin(struct store *s, const char *ref, uid_t uid, int64_t *id, alps_error **err)
{
	*id = 0;
	if (!ref || !store_printable(ref, 1024)) {
		alps_fail(err, ALPS_E_INVALID, "reference missing or not printable");
		return store_ctx(s, err, "recording a pull", NULL);
	}
	store_lock(s);
	int r = sql_run(s, err, "INSERT INTO pulls(ref, uid, started_ms) VALUES (?1, ?2, ?3)",
			"sii", ref, (int64_t)uid, (int64_t)now_realtime_ms());
	if (r == 0)
		*id = sqlite3_last_insert_rowid(s->db);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "recording the pull of", ref) : 0;
}

int store_pull_progress(struct store *s, int64_t id, uint64_t bytes_done, uint64_t bytes_total,
			alps_error **err)
{
	store_lock(s);
	int r = sql_run(s, err, "UPDATE pulls SET bytes_done = ?2, bytes_total = ?3 WHERE id = ?1",
			"iii", id, (int64_t)bytes_done, (int64_t)bytes_total);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "recording pull progress", NULL) : 0;
}

void store_pull_end(struct store *s, int64_t id)
{
	_cleanup_error_ alps_error *err = NULL;
	store_lock(s);
	int r = sql_run(s, &err, "DELETE FROM pulls WHERE id = ?1", "i", id);
	store_unlock(s);
	if (r < 0)
		log_warn("store %s: dropping pull row %lld: %s", s->dir, (long long)id, err->msg);
}

void store_pulls_free(struct store_pull *pulls, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(pulls[i].ref);
	free(pulls);
}

static int pulls_locked(struct store *s, struct store_pull **out, size_t *n, alps_error **err)
{
	sqlite3_stmt *st = sql_prepare(s, err,
				       "SELECT id, ref, uid, started_ms, bytes_done, bytes_total "
				       "FROM pulls ORDER BY id",
				       NULL);
	if (!st)
		return -1;
	int r;
	while ((r = sql_step(s, st, err)) > 0) {
		*out = xreallocarray(*out, *n + 1, sizeof(**out));
		(*out)[(*n)++] = (struct store_pull){
			.id = sqlite3_column_int64(st, 0),
			.ref = sql_col_str(st, 1),
			.uid = (uid_t)sqlite3_column_int64(st, 2),
			.started_ms = sql_col_u64(st, 3),
			.bytes_done = sql_col_u64(st, 4),
			.bytes_total = sql_col_u64(st, 5),
		};
	}
	sqlite3_finalize(st);
	return r;
}

int store_pulls_list(struct store *s, struct store_pull **out, size_t *n, alps_error **err)
{
	*out = NULL;
	*n = 0;
	store_lock(s);
	int r = pulls_locked(s, out, n, err);
	store_unlock(s);
	if (r < 0) {
		store_pulls_free(*out, *n);
		*out = NULL;
		*n = 0;
		return store_ctx(s, err, "listing pulls", NULL);
	}
	return 0;
}

int store_stat_get(struct store *s, const char *key, int64_t *value, alps_error **err)
{
	*value = 0;
	if (!key || !store_printable(key, 64)) {
		alps_fail(err, ALPS_E_INVALID, "counter name missing or not printable");
		return store_ctx(s, err, "reading a counter", NULL);
	}
	store_lock(s);
	int r = sql_int(s, err, value, "SELECT value FROM stats WHERE key = ?1", "s", key);
	store_unlock(s);
	return r < 0 ? store_ctx(s, err, "reading counter", key) : 0;
}
