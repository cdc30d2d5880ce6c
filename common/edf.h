/* edf.h: environment definition files (EDF), as users of the CSCS
 * Container Engine write them.
 *
 *	base_environment = ["site-base", "./mine.toml"]
 *	image = "nvcr.io#nvidia/pytorch:24.01-py3"
 *	workdir = "${SCRATCH}/run"
 *	writable = true
 *	entrypoint = false
 *	mounts = ["${SCRATCH}:/scratch", "/data/set.sqsh:/set:sqsh"]
 *	[env]
 *	NCCL_DEBUG = "INFO"
 *	[annotations]
 *	com.hooks.cxi.enabled = "true"
 *
 * Two layers.  The core (edf.c) parses and merges CONTENT that its caller
 * hands over and never opens a file: the client reads EDFs with the
 * calling user's rights and sends them, and the daemon, which runs as
 * root, must never open a path a user names.  Loading (edf_files.c) walks
 * base_environment through a loader: the client's reads files, the
 * daemon's serves the sources the client sent.
 *
 * The reference is doc/alps-edf.5; in short:
 *
 * Keys:
 *   image             a registry reference, either form of ref.h (docker's
 *                     "nvcr.io/nvidia/pytorch:24.01-py3" or enroot's
 *                     "[USER@][REGISTRY#]IMAGE[:TAG]"), or a file.
 *                     THE RULE (pyxis's): a value that starts with '/' or
 *                     '.' is a file path, whatever its name, relative to
 *                     the caller's cwd; its content decides its kind
 *                     (edf_image_file_check: a squashfs superblock).  A
 *                     bare "x.sqsh" is an error asking for "./x.sqsh", and
 *                     so is a leading '~' (not expanded).  "" means no
 *                     container.
 *   base_environment  a string or array of strings: EDF names or paths,
 *                     merged in order before this file (see edf_load_all);
 *                     "" (the default) names no base
 *   workdir           a string, absolute; "" means the image's
 *   entrypoint        bool, default false: run the image's entrypoint
 *   writable          bool, default true: a writable (tmpfs) upper layer
 *   mounts            array of "SRC[:DST[:FLAGS]]", FLAGS joined by '+':
 *                     ro, rw, rbind (= recursive; the default for binds),
 *                     norbind, nosuid, nodev (always applied anyway),
 *                     private, rprivate (every job mount is), sqsh.
 *                     Propagation other than private, suid, dev, noexec,
 *                     exec, bind and the atime options are refused by
 *                     name.  SRC alone mounts at the same path.  SRC is
 *                     absolute, or starts with '.' and is relative to the
 *                     caller's cwd.  DST is inside the container, must not
 *                     be "/" nor hold "..", and is kept normalized.  With
 *                     sqsh SRC is a squashfs file mounted at DST.  In one
 *                     file the same mount twice is dropped with a warning,
 *                     two on one DST are an error.  Paths cannot contain
 *                     ':' (they are not quoted).
 *   devices           array of CDI names (vendor.com/class=name) or /dev
 *                     paths (Sarus Suite); validated, and refused by
 *                     prepare when not empty (edf_job_check)
 *   [env]             string values; "" unsets the variable (the image's
 *                     included).  Names with '=' or NUL are errors.
 *   [annotations]     read by hooks; dotted keys are flattened to
 *                     "com.hooks.cxi.enabled".  Values are strings (bools
 *                     and integers are taken as their text).  Unknown
 *                     ones are kept, and listed by edf_warnings().
 * Any other top-level key is an error naming it, with a suggestion for a
 * near miss ("mount": did you mean 'mounts'?).  Parsing and expansion
 * report every error (up to EDF_MAX_ERRORS), one a line.
 *
 * Merging (edf_merge): a child overrides its bases' image, workdir,
 * entrypoint and writable; env and annotations are merged key by key with
 * the child winning; mounts and devices append, all kept in order.
 *
 * Expansion (edf_expand, grammar in expand.h) applies to every string
 * value: image, workdir, mounts (SRC, DST and FLAGS), base_environment
 * entries (at load, edf_load_all_ctx), devices, [env] and annotations.
 * Every name is looked up in one place, the job's environment on the
 * host (edf_context.caller_env: for root's prepare --user U, the job's
 * environment with U's USER, LOGNAME, HOME and UID, edf_user_env), never
 * the image's: the image is not known when the file is expanded, and the
 * CE documents that [env] "can only reference environment variables from
 * the host".  A name that is not defined there is an error ("Referencing
 * an undefined variable results in an error"); ${NAME:-} asks for an
 * empty default.  Values are validated once final: at parse time when
 * they hold no '$', after expansion otherwise.
 *
 * Every error and warning names its place as "FILE:LINE:COL: KEY: what",
 * KEY like "image", "mounts[2]" (0-based), "env.PATH".  FILE is the EDF's
 * display name: the name as the user wrote it, with ".toml" added to a
 * bare name ("pytorch" -> "pytorch.toml"). */
#ifndef ALPS_EDF_H
#define ALPS_EDF_H

#include <jansson.h>

#include "error.h"
#include "ref.h"

#define EDF_MAX_SIZE (1u << 20)        /* bytes of one file */
#define EDF_MAX_DEPTH 10               /* levels of base_environment below the first file */
#define EDF_MAX_FILES 64               /* distinct names loaded by edf_load_all */
#define EDF_MAX_MOUNTS 1024            /* after merging */
#define EDF_MAX_VARS 1024              /* env entries, and annotations, after merging */

enum edf_image_kind {
	EDF_IMAGE_UNSET,        /* no file says: no container */
	EDF_IMAGE_NONE,         /* image = "": no container */
	EDF_IMAGE_REF,          /* ->ref is valid */
	EDF_IMAGE_SQUASHFS,     /* ->image.value is the file */
	EDF_IMAGE_DEFERRED,     /* holds ${...}: known after edf_expand */
};

enum edf_mount_flag {
	EDF_MOUNT_RO = 1u << 0,
	EDF_MOUNT_RW = 1u << 1,
	EDF_MOUNT_PRIVATE = 1u << 2,    /* honoured: every job mount is private */
	EDF_MOUNT_RPRIVATE = 1u << 3,
	EDF_MOUNT_RECURSIVE = 1u << 8,  /* rbind: set on every bind without norbind */
	EDF_MOUNT_SQSH = 1u << 9,
	EDF_MOUNT_NORBIND = 1u << 10,   /* a bind without its submounts */
	EDF_MOUNT_NOSUID = 1u << 11,    /* always applied; kept to show what was written */
	EDF_MOUNT_NODEV = 1u << 12,     /* likewise */
};
#define EDF_MOUNT_PROPAGATION (EDF_MOUNT_PRIVATE | EDF_MOUNT_RPRIVATE)

/* Where something was defined. */
struct edf_loc {
	char *file;             /* owned: display name, escaped for messages */
	int line, col;
	char *key;              /* owned: "image", "mounts[2]", "env.PATH", escaped */
};

struct edf_string {
	char *value;            /* owned; NULL: not set */
	struct edf_loc loc;
};

struct edf_flag {
	int value;              /* -1: not set, else 0 or 1 */
	struct edf_loc loc;
};

struct edf_mount {
	char *src;              /* owned: host path (with sqsh: the squashfs file) */
	char *dst;              /* owned: absolute path in the container */
	unsigned flags;         /* enum edf_mount_flag; neither RO nor RW: read-write */
	char *flags_text;       /* owned: FLAGS as written while it holds ${...}, else NULL */
	bool same_path;         /* written as "SRC" alone: DST is SRC once resolved */
	struct edf_loc loc;
};

struct edf_var {
	char *key;              /* owned */
	char *value;            /* owned; "" in env: unset the variable */
	struct edf_loc loc;
};

struct edf_base {
	char *name;             /* owned: as written in base_environment */
	struct edf_loc loc;
};

struct edf_file {
	char *name;             /* owned: display name */
	char *path;             /* owned: where the loader found it; NULL if unknown */
};

/* A parsed (and maybe merged and expanded) EDF.  Read the fields; change
 * them only through these functions. */
struct edf {
	char *name;                     /* owned: display name of the (last merged) file */
	struct edf_string image;
	enum edf_image_kind image_kind;
	struct image_ref ref;           /* owned; valid when image_kind == EDF_IMAGE_REF */
	char *image_user;               /* owned: enroot's USER@, or NULL */
	struct edf_string workdir;
	struct edf_flag entrypoint;     /* use edf_entrypoint() for the default */
	struct edf_flag writable;       /* use edf_writable() for the default */
	struct edf_base *bases;         /* owned: this file's base_environment */
	size_t nbases;
	struct edf_mount *mounts;       /* owned, in mount order */
	size_t nmounts;
	struct edf_var *env;            /* owned, in definition order */
	size_t nenv;
	struct edf_var *annotations;    /* owned, flattened keys */
	size_t nannotations;
	struct edf_string *devices;     /* owned: CDI names or /dev paths, in order */
	size_t ndevices;
	struct edf_file *files;         /* owned: the files merged in, in merge order */
	size_t nfiles;
	char **notes;                   /* owned: warnings found while merging/expanding */
	size_t nnotes;
	bool expanded;                  /* edf_expand() has run */
};

/* Parse one EDF of len bytes (need not be NUL-terminated) named name (as
 * the user wrote it, not NULL; see the display name above).  On success *out is the
 * result (caller frees with edf_free).  ALPS_E_INVALID on any error,
 * ALPS_E_LIMIT above EDF_MAX_SIZE. */
int edf_parse(const char *name, const char *text, size_t len, struct edf **out,
	      alps_error **err);

/* Apply child on top of base, in place (the merge rules above); base's
 * name becomes child's.  Both must not be expanded yet.  ALPS_E_LIMIT
 * past EDF_MAX_MOUNTS or EDF_MAX_VARS. */
int edf_merge(struct edf *base, const struct edf *child, alps_error **err);

/* What ${...} sees (see the rules above). */
struct edf_context {
	const char *const *caller_env;  /* the job's environment on the host: a
					   NULL-terminated "NAME=value" array;
					   NULL: empty */
	const char *cwd;                /* the caller's; makes a relative image path
					   absolute (NULL: left relative) */
};

/* Expand and validate every value, once (a second call does nothing).
 * Errors name the place; after one, e is only good for edf_free(). */
int edf_expand(struct edf *e, const struct edf_context *ctx, alps_error **err);

/* Defaults applied. */
bool edf_entrypoint(const struct edf *e);
bool edf_writable(const struct edf *e);
/* "" for no container (unset or empty), else the image as written. */
const char *edf_image(const struct edf *e);
/* The env value for key, NULL if absent; "" means unset. */
const char *edf_env_get(const struct edf *e, const char *key);
const char *edf_annotation_get(const struct edf *e, const char *key);
/* "ro+recursive"; "" for none.  Caller frees. */
char *edf_mount_flags_format(unsigned flags);

/* Likely mistakes, one message a line ("FILE:LINE:COL: KEY: ..."): the
 * notes, then what the whole result shows (relative workdir, mounts
 * without an image, env names in the wrong case, mounts hiding /proc,
 * /sys, /dev or /tmp, untagged references, unknown annotations...).
 * Returns a NULL-terminated array (caller frees with edf_strv_free). */
char **edf_warnings(const struct edf *e, size_t *n);
void edf_strv_free(char **v);

/* The result as JSON for `alps edf check --json` (caller json_decref()s).
 * with_sources adds "files" (name and path of each file merged) and an
 * "origin" ("FILE:LINE:COL") to every value. */
json_t *edf_to_json(const struct edf *e, bool with_sources);

void edf_free(struct edf *e);
void cleanup_edf_freep(struct edf **e);
#define _cleanup_edf_ __attribute__((cleanup(cleanup_edf_freep)))

/* ---- Loading: edf_files.c ---------------------------------------------- */

/* Resolve and read one EDF.  name_or_path is the first EDF's name or a
 * base_environment entry, verbatim.  On success *resolved_path (where it
 * was found, for messages) and *content (NUL-terminated, *len bytes
 * before the NUL) belong to the caller.  On failure: -1 with *err; a
 * missing EDF is ALPS_E_NOT_FOUND saying where it was searched. */
struct edf_loader {
	int (*load)(void *arg, const char *name_or_path, char **resolved_path, char **content,
		    size_t *len, alps_error **err);
	void *arg;
};

/* One file that edf_load_all read: what the client sends (EdfSource.path
 * is ->name, EdfSource.content is ->content), the top-level EDF first. */
struct edf_source {
	char *name;             /* owned: as referenced; what a loader is asked for */
	char *path;             /* owned: where it was found */
	char *content;          /* owned, NUL-terminated */
	size_t len;
};

/* Load first, walk its base_environment depth first and merge everything.
 *
 * A name with a '/' is a path: absolute, or relative to the caller's
 * working directory (not to the file that names it).  A name without '/'
 * is searched in the directories of EDF_PATH (':'-separated, default
 * ~/.edf) as NAME.toml (".toml" is not added twice).
 *
 * The merge order is the depth-first post-order: bases in the order
 * written, each before the file that names it; a file reached twice (a
 * diamond) counts at its first place only.  Files are told apart by the
 * name written, so that the daemon, which sees only names, merges exactly
 * as the client.  At most EDF_MAX_DEPTH levels below the first file and
 * EDF_MAX_FILES names; a cycle is an error that shows it ("a.toml ->
 * b.toml -> a.toml"), found by name and, when the loader resolves two
 * names to one path, by path.
 *
 * On success *merged (not yet expanded; edf_free) and *sources (one per
 * distinct name, in load order, first one first; edf_sources_free) belong
 * to the caller.  sources may be NULL when not wanted. */
int edf_load_all(const char *first, const struct edf_loader *loader, struct edf **merged,
		 struct edf_source **sources, size_t *nsources, alps_error **err);
/* The same, with base_environment entries expanded in ctx (edf_load_all:
 * an empty environment); an entry that expands to "" names no base. */
int edf_load_all_ctx(const char *first, const struct edf_loader *loader,
		     const struct edf_context *ctx, struct edf **merged,
		     struct edf_source **sources, size_t *nsources, alps_error **err);
void edf_sources_free(struct edf_source *s, size_t n);

/* The client's loader: reads files with the rights of the process, from
 * EDF_PATH and $HOME as they are at the call.  Only regular files (a
 * symlink is followed: the client runs as the user, so it reaches only
 * what the user may read), at most EDF_MAX_SIZE bytes.  arg unused. */
extern const struct edf_loader edf_file_loader;

/* The same loader in the job user's world (root's `alps prepare --user
 * U`): arg is a struct edf_file_world; the caller reads with U's rights. */
struct edf_file_world {
	const char *home;               /* U's home for ~/.edf and "~/" (NULL: $HOME) */
	bool use_edf_path;              /* edf_path below, not the process's EDF_PATH */
	const char *edf_path;           /* the job's EDF_PATH (NULL: ~/.edf) */
};
int edf_file_load(void *arg, const char *name, char **resolved, char **content, size_t *len,
		  alps_error **err);

/* The site's directory of preset EDFs, searched for bare names after
 * EDF_PATH (default ~/.edf): a site ships base environments there
 * ("lumi-ai") and users name them.  It counts only if it and the file are
 * root's and writable by no one else.  Its place: edf_set_site_dir()
 * (the SPANK plugin's edf_site_dir= argument), else $ALPS_EDF_SITE_DIR,
 * else EDF_SITE_DIR; "" turns the search off. */
#define EDF_SITE_DIR "/etc/alps/edf"
#define EDF_SITE_DIR_ENV "ALPS_EDF_SITE_DIR"
void edf_set_site_dir(const char *dir);
const char *edf_site_dir(void);

/* The job user's world for expansion: caller_env (the job's environment
 * as the caller passes it, may be NULL) with USER, LOGNAME, HOME and UID
 * set from the user database entry of uid (name and home; home NULL: HOME
 * left out).  NULL-terminated; edf_strv_free. */
char **edf_user_env(const char *const *caller_env, const char *name, unsigned long uid,
		    const char *home);

/* An image file must be a squashfs image: fd open on it (with the user's
 * rights), display is its name for messages.  ALPS_E_INVALID naming what
 * it is instead. */
int edf_image_file_check(int fd, const char *display, alps_error **err);

/* What `prepare` refuses in an expanded EDF beyond its values (a
 * non-empty devices list, until the host integration applies it);
 * `alps edf check` calls it too, so that both say the same words. */
int edf_job_check(const struct edf *e, alps_error **err);

/* jobs.default_mounts[idx]: spec read as an EDF mount line (the same flags
 * and defaults) and expanded with USER, LOGNAME, HOME and UID of user_env
 * only (NULL: sample values, to validate the configuration at start); an
 * unknown variable or a relative path is an error naming the key.  *out:
 * "SRC:DST:ro|rw[+rbind]" (caller frees). */
int edf_site_mount(const char *spec, size_t idx, const char *const *user_env, char **out,
		   alps_error **err);

/* The daemon's loader: arg is a struct edf_source_set; a name is found
 * by exact match on ->name, and never on the file system. */
struct edf_source_set {
	const struct edf_source *v;
	size_t n;
};
int edf_source_load(void *arg, const char *name, char **resolved_path, char **content,
		    size_t *len, alps_error **err);

/* The display name of a reference: name, with ".toml" added when it has
 * no '/' and no ".toml" suffix.  Caller frees. */
char *edf_display_name(const char *name);

#endif
