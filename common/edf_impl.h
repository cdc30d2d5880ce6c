/* edf_impl.h: what the parts of the EDF core share; not for callers
 * (they use edf.h).  The parts:
 *   edf_core.c     places, messages, life cycle
 *   edf.c          parsing one file: scalars, env, annotations, keys
 *   edf_mounts.c   the mounts key: splitting, flags, destinations
 *   edf_merge.c    images, merging files, expansion, accessors
 *   edf_report.c   warnings and JSON
 *   edf_files.c    loading a file and its base environments */
#ifndef ALPS_EDF_IMPL_H
#define ALPS_EDF_IMPL_H

#include <stdarg.h>

#include "edf.h"
#include "toml.h"

/* ---- edf_core.c ---- */
/* Errors gathered so that one pass reports them all, up to EDF_MAX_ERRORS
 * (`alps edf check` shows every mistake of a file at once). */
#define EDF_MAX_ERRORS 20
struct edf_errors {
	char *text;             /* owned: the messages, one a line */
	size_t n;
	int code;               /* the first one's */
};
/* Keep *e (if set) and clear it. */
void errors_keep(struct edf_errors *l, alps_error **e);
/* 0 when nothing was kept; else -1 with every message in one error. */
int errors_finish(struct edf_errors *l, alps_error **err);
void loc_init(struct edf_loc *loc, const char *file, int line, int col, const char *key);
void loc_copy(struct edf_loc *dst, const struct edf_loc *src);
void loc_free(struct edf_loc *loc);
char *loc_vformat(const struct edf_loc *loc, const char *fmt, va_list ap) ALPS_PRINTF(2, 0);
/* ALPS_E_INVALID with "FILE:LINE:COL: KEY: " and the message. */
int fail_loc(alps_error **err, const struct edf_loc *loc, const char *fmt, ...)
	ALPS_PRINTF(3, 4);
/* Prefix an error from a helper (expand, ref_parse) with the place. */
int prefix_loc(alps_error **err, const struct edf_loc *loc);
void strv_push(char ***v, size_t *n, char *s);
void note_add(struct edf *e, const struct edf_loc *loc, const char *fmt, ...) ALPS_PRINTF(3, 4);
struct edf *edf_new(const char *file);
void string_free(struct edf_string *s);
void mount_free(struct edf_mount *m);
void var_free(struct edf_var *v);
void image_clear(struct edf *e);
void bases_free(struct edf *e);

/* ---- edf.c: the parser's state ---- */
struct pctx {
	struct edf *e;
	const char *file;       /* escaped display name */
	struct edf_errors errs;
};
/* A place for key (escaped here) at line:col of the file being parsed. */
void pctx_loc(const struct pctx *p, struct edf_loc *loc, int line, int col, const char *key);
int fail_value_type(const struct pctx *p, const toml_value *v, const char *key,
		    const char *want, alps_error **err);
int want_string(const toml_value *v, const struct edf_loc *loc, alps_error **err);
int check_expansion(const char *s, const struct edf_loc *loc, alps_error **err);

/* ---- edf_mounts.c ---- */
int parse_mounts(struct pctx *p, const toml_value *v, const char *key, alps_error **err);
/* One mount line v under key (a string value; its place is v's). */
int mount_parse_key(struct pctx *p, const toml_value *v, const char *key, alps_error **err);
/* True when s holds its final value: expanded, or with nothing to expand. */
bool is_final(const struct edf *e, const char *s);
int mount_check(const struct edf *e, struct edf_mount *m, alps_error **err);
int mounts_settle(struct edf *e, alps_error **err);
/* The name of the i-th mount flag bit, NULL past the last. */
const char *mount_flag_at(size_t i, unsigned *bit);

/* ---- edf_merge.c ---- */
int image_classify(struct edf *e, const char *cwd, alps_error **err);
/* "/a/./b/../c" -> "/a/c": "." and empty components dropped, ".." taken
 * back lexically (never above "/").  path must be absolute. */
char *path_lexical(const char *path);
int parse_devices(struct pctx *p, const toml_value *v, const char *key, alps_error **err);
int device_check(const struct edf *e, const struct edf_string *d, alps_error **err);
bool has_squashfs_suffix(const char *s);
/* A workdir that is final must be absolute. */
int workdir_check(const struct edf *e, alps_error **err);

/* ---- edf_files.c, edf_site.c ---- */
/* Read a whole EDF (at most EDF_MAX_SIZE) from fd; path names it. */
int edf_read_fd(int fd, const char *path, char **content, size_t *len, alps_error **err);
/* file (NAME.toml) in the site's directory (edf_site_dir): 0 read, 1 not
 * there or left out (*note says where it was looked for and why it was
 * left out; caller frees), -1 on another error. */
int edf_site_search(const char *file, char **resolved, char **content, size_t *len,
		    char **note, alps_error **err);

#endif
