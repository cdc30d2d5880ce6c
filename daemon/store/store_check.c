/* store_check.c: alps verify: every layer file re-read and compared with
 * what its row recorded at conversion (see store.h, store_layers_check()). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/store/store_int.h"

#define SQUASHFS_MAGIC 0x73717368u      /* "hsqs" little-endian */
#define SUPERBLOCK_SIZE 96

struct check_row {
	char *digest;
	char *file;
	char *checksum;         /* NULL: none recorded */
	uint64_t size;
};

static uint64_t le(const unsigned char *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = n; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}

/* The squashfs superblock: magic, version 4.0, the bytes it says it uses
 * within the file. */
static char *check_superblock(int fd, uint64_t size)
{
	unsigned char sb[SUPERBLOCK_SIZE];
	if (pread(fd, sb, sizeof(sb), 0) != (ssize_t)sizeof(sb))
		return xstrdup("too short for a squashfs superblock");
	if (le(sb, 4) != SQUASHFS_MAGIC)
		return xstrdup("no squashfs magic in the superblock");
	if (le(sb + 28, 2) != 4 || le(sb + 30, 2) != 0)
		return xasprintf("squashfs version %u.%u, not 4.0", (unsigned)le(sb + 28, 2),
				 (unsigned)le(sb + 30, 2));
	if (le(sb + 40, 8) > size)
		return xasprintf("the superblock says %llu bytes are used, the file has %llu",
				 (unsigned long long)le(sb + 40, 8), (unsigned long long)size);
	return NULL;
}

/* What is wrong with the file of row r (caller frees), or NULL; *sum is its
 * checksum when it could be read. */
static char *check_file(struct store *s, const struct check_row *r, char sum[DIGEST_STRLEN_MAX])
{
	sum[0] = '\0';
	_cleanup_close_ int fd = openat(s->layers_fd, r->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		return xasprintf("cannot open layers/%s: %s", r->file, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return xasprintf("layers/%s is not a regular file", r->file);
	if ((uint64_t)st.st_size != r->size)
		return xasprintf("size %llu, recorded %llu", (unsigned long long)st.st_size,
				 (unsigned long long)r->size);
	char *bad = check_superblock(fd, (uint64_t)st.st_size);
	if (bad)
		return bad;
	alps_error *err = NULL;
	if (store_file_checksum(fd, sum, &err) < 0) {
		bad = xasprintf("layers/%s: %s", r->file, err->msg);
		alps_error_free(err);
		sum[0] = '\0';
		return bad;
	}
	if (r->checksum && strcmp(r->checksum, sum) != 0)
		return xasprintf("content checksum %s, recorded %s", sum, r->checksum);
	return NULL;
}

static int load_rows(struct store *s, const char *image, struct check_row **rows, size_t *n,
		     alps_error **err)
{
	const char *sql = image ? "SELECT digest, file, checksum, squashfs_size FROM layers "
				  "WHERE digest IN (SELECT layer FROM image_layers WHERE image = ?1) "
				  "ORDER BY digest"
				: "SELECT digest, file, checksum, squashfs_size FROM layers ORDER BY digest";
	store_lock(s);
	sqlite3_stmt *st = sql_prepare(s, err, sql, image ? "s" : NULL, image);
	int r = st ? 0 : -1;
	while (st && (r = sql_step(s, st, err)) > 0) {
		*rows = xreallocarray(*rows, *n + 1, sizeof(**rows));
		(*rows)[(*n)++] = (struct check_row){
			.digest = sql_col_str(st, 0), .file = sql_col_str(st, 1),
			.checksum = sql_col_str(st, 2), .size = sql_col_u64(st, 3),
		};
	}
	sqlite3_finalize(st);
	store_unlock(s);
	return r;
}

/* Record what the check found: damage, or the first checksum of an older
 * row.  A row that changed meanwhile (replaced, removed) is left alone. */
static int record(struct store *s, const struct check_row *r, const char *bad, const char *sum,
		  alps_error **err)
{
	store_lock(s);
	int rc = 0;
	if (bad)
		rc = sql_run(s, err, "UPDATE layers SET damaged = 1 WHERE digest = ?1 AND "
			     "squashfs_size = ?2 AND checksum IS ?3", "sis", r->digest,
			     (int64_t)r->size, r->checksum);
	else if (!r->checksum)
		rc = sql_run(s, err, "UPDATE layers SET checksum = ?2 WHERE digest = ?1 AND "
			     "checksum IS NULL", "ss", r->digest, sum);
	store_unlock(s);
	return rc;
}

static void report_bad(struct store_check_report *rep, const char *digest, char *problem)
{
	rep->bad = xreallocarray(rep->bad, rep->nbad + 1, sizeof(*rep->bad));
	rep->bad[rep->nbad++] = (struct store_layer_problem){ .digest = xstrdup(digest),
							      .problem = problem };
}

int store_layers_check(struct store *s, const char *image, struct store_check_report *rep,
		       alps_error **err)
{
	struct check_row *rows = NULL;
	size_t n = 0;
	int r = 0;
	memset(rep, 0, sizeof(*rep));
	if (image && store_check_digest(image, "image digest", err) < 0)
		return store_ctx(s, err, "verifying layers", NULL);
	if (load_rows(s, image, &rows, &n, err) < 0)
		r = -1;
	/* Files are read without the mutex: a large store takes a while. */
	for (size_t i = 0; r == 0 && i < n; i++) {
		char sum[DIGEST_STRLEN_MAX];
		char *bad = check_file(s, &rows[i], sum);
		rep->checked++;
		rep->bytes += rows[i].size;
		rep->recorded += !bad && !rows[i].checksum;
		r = record(s, &rows[i], bad, sum, err);
		if (bad) {
			_cleanup_free_ char *esc = log_escape(bad, 300);
			log_warn("store %s: layer %s is damaged: %s", s->dir, rows[i].digest, esc);
			report_bad(rep, rows[i].digest, bad);
		}
	}
	for (size_t i = 0; i < n; i++) {
		free(rows[i].digest);
		free(rows[i].file);
		free(rows[i].checksum);
	}
	free(rows);
	return r < 0 ? store_ctx(s, err, "verifying layers", NULL) : 0;
}

void store_check_report_clear(struct store_check_report *rep)
{
	for (size_t i = 0; i < rep->nbad; i++) {
		free(rep->bad[i].digest);
		free(rep->bad[i].problem);
	}
	free(rep->bad);
	memset(rep, 0, sizeof(*rep));
}
