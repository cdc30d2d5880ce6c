/* store.h: the image store, an sqlite index over one squashfs file per layer.
 *
 *	<state_dir>/alps.db          sqlite (WAL), 0600: images, tags, layers,
 *	                             image_layers, image_access, layer_access,
 *	                             jobs, pulls, stats
 *	<state_dir>/layers/          <algo>-<hex>.sqfs, one per layer digest
 *	<state_dir>/tmp/             files being written; emptied by store_open()
 *	<state_dir>/alps.lock        flock()ed while a store is open
 *
 * Crash safety.  A layer file is written under tmp/, then
 * store_layer_commit() fsync()s it, renames it into layers/, fsync()s
 * layers/, and only then commits its row.  Removal commits the row changes
 * first and unlinks files after.  So after a crash there can be files that no
 * row names (removed by store_open()) but a committed row always had its file;
 * store_open() still drops rows whose file is missing or has the wrong size
 * (with the images that use them) and recomputes every layer's refcount from
 * image_layers.  Each repair is logged with log_warn().
 *
 * Layers are shared: a layer row exists once per digest and its refcount is
 * the number of images that use it.  A layer committed by a pull that has not
 * yet committed its image has refcount 0 (an "orphan"); orphans survive a
 * restart so that an interrupted pull resumes, and store_gc() removes them.
 *
 * Threads.  A store has one sqlite connection guarded by a mutex inside the
 * module: every function may be called from any thread, and each holds the
 * mutex for one short transaction (no call keeps a transaction open across
 * calls).  The slow part of store_layer_commit(), fsync() of the layer file,
 * runs without the mutex.  Unlinking removed layer files happens under the
 * mutex so that a concurrent commit of the same digest cannot be undone.
 *
 * Holds.  A pull decides which layers it needs to download from
 * store_layer_get(), and commits the image afterwards.  So that a removal or
 * store_gc() running in between cannot delete a layer the pull counted on, a
 * pull holds every layer digest of its image for its duration:
 *
 *	store_layer_hold(s, d)                  for each layer digest d, FIRST
 *	store_layer_get(s, d, &l, err)          ALPS_E_NOT_FOUND: download into
 *	    store_tmp_path(s), then store_layer_commit(s, tmp, &info, NULL, err)
 *	store_image_commit(s, &rec, digests, n, tag, &from, err)
 *	store_layer_release(s, d)               for each, also on failure
 *
 * A held layer whose refcount drops to 0 keeps its row and file.  Taking the
 * hold after store_layer_get() or store_layer_commit() leaves a window in
 * which a removal or store_gc() may drop the layer; store_image_commit() then
 * fails with ALPS_E_NOT_FOUND (nothing is corrupted, but the pull fails).
 *
 * Visibility.  An image with no image_access rows is public on the node; one
 * with rows is visible only to those uids.  Functions that take a viewer uid
 * accept STORE_UID_ANY (admins: everything); uid 0 sees everything too.
 * Each access row names the origin (registry/repository) the uid pulled
 * the image from with credentials: a pull without credentials from another
 * origin never widens access (see store_image_commit()).
 *
 * Layers by content.  A layer committed with a diff_id that a layer of the
 * store already has (the same tar, compressed another way) is not stored
 * again: its digest becomes an alias of that layer (schema version 4).
 * Every function taking a layer digest accepts an alias and acts on the
 * layer; a struct store_layer names the layer's own digest.
 *
 * Layer reuse.  A layer is shared by digest, so knowing a private layer's
 * digest must not be enough to get it: a pull reuses a layer only if
 * store_layer_usable() says the puller may (the layer was fetched without
 * credentials, or by that user, or an image the user may use holds it);
 * otherwise the pull fetches it again, which proves access (the registry
 * served it, its digest checked), and records that with
 * store_layer_allow().
 *
 * Errors follow common/error.h; every message starts with "store <dir>: ".
 * Digests are validated (sha256/sha512, lowercase hex) before any path is
 * built from them.  Returned structs and strings belong to the caller, who
 * frees them with the matching free function. */
#ifndef ALPS_DAEMON_STORE_H
#define ALPS_DAEMON_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

/* The schema version this code writes (PRAGMA user_version). */
#define STORE_SCHEMA_VERSION 4

/* Viewer uid that sees every image and job (root, admins). */
#define STORE_UID_ANY ((int64_t)-1)
/* Owner uid for store_image_commit(): pulled without private credentials. */
#define STORE_PUBLIC ((int64_t)-1)

/* Longest job id accepted (Slurm: "4242", "4242_7", "4242+1"). */
#define STORE_JOB_ID_MAX 64

struct store;

/* A layer as the store knows it.  All fields owned. */
struct store_layer {
	char *digest;           /* "sha256:<hex>" of the (compressed) blob */
	char *diff_id;          /* digest of the uncompressed tar, or NULL */
	char *media_type;
	char *path;             /* absolute path of the squashfs file */
	uint64_t compressed_size;
	uint64_t squashfs_size;
	uint64_t last_used_ms;  /* wall clock */
	uint32_t refcount;      /* images using it */
	bool damaged;           /* store_layers_verify() found its file changed */
};

/* An image.  All fields owned. */
struct store_image {
	char *digest;           /* manifest digest */
	char *config_digest;
	char *platform;         /* "linux/amd64" */
	char *manifest_json;    /* NULL in store_images_list() results */
	char *config_json;      /* NULL in store_images_list() results */
	uint64_t size;          /* bytes of its layers' squashfs files */
	uint64_t created_ms;    /* when it was committed to this store */
	uint64_t last_used_ms;
	bool pinned;            /* store_gc() never removes it */
	bool restricted;        /* has image_access rows: not public */
	char **tags;            /* canonical references, sorted */
	size_t ntags;
	struct store_layer *layers;     /* bottom first */
	size_t nlayers;
};

/* What a removal or store_gc() did. */
struct store_removed {
	uint32_t images;
	uint32_t layers;
	uint64_t bytes_freed;   /* squashfs bytes of the removed layers */
};

/* store_df(). */
struct store_usage {
	uint64_t total_bytes;   /* squashfs bytes of all layers */
	uint64_t images;
	uint64_t tags;
	uint64_t layers;
	uint64_t pinned_images;
	uint64_t orphan_layers; /* refcount 0: held by a pull or left by a crash */
	uint64_t orphan_bytes;
	uint64_t jobs;
	uint64_t shared_bytes;  /* layers more than one image uses */
	uint64_t aliases;       /* digests deduplicated onto another layer */
};

/* ---- opening ---------------------------------------------------------- */

/* Open (creating as needed) the store under state_dir, an absolute path:
 * lock it (ALPS_E_BUSY if another store has it open), open the database
 * (WAL, foreign keys on), refuse a corrupt one (ALPS_E_INTEGRITY) or one of
 * a newer schema (ALPS_E_VERSION), apply migrations, then empty tmp/ and
 * repair rows and files (see above).  *out is the store; free it with
 * store_close(). */
int store_open(const char *state_dir, struct store **out, alps_error **err);
/* Close the database and free s; NULL is fine.  No call may be running. */
void store_close(struct store *s);
/* The state directory.  Owned by s. */
const char *store_dir(const struct store *s);
/* Full consistency check, slower than start-up's: integrity_check,
 * foreign_key_check, refcounts against image_layers, every layer file present
 * with its recorded size, no file in layers/ without a row.  For tests and
 * diagnostics.  ALPS_E_INTEGRITY naming the first problem. */
int store_verify(struct store *s, alps_error **err);

/* ---- layers ----------------------------------------------------------- */

/* What store_layer_commit() records.  Fields borrowed. */
struct store_layer_info {
	const char *digest;         /* required */
	const char *diff_id;        /* may be NULL */
	const char *media_type;     /* required */
	uint64_t compressed_size;
};

/* A new unique path under tmp/ for a file to commit.  Nothing is created.
 * Caller frees. */
char *store_tmp_path(struct store *s);
/* Absolute path of the file of layer digest (present or not) in *out.
 * ALPS_E_INVALID for a malformed digest.  Caller frees *out. */
int store_layer_path(struct store *s, const char *digest, char **out, alps_error **err);
/* The layer digest in *out (caller frees with store_layer_free()), or
 * ALPS_E_NOT_FOUND if the store does not have it. */
int store_layer_get(struct store *s, const char *digest, struct store_layer **out,
		    alps_error **err);
/* Commit tmp_path, a file from store_tmp_path(), as layer info->digest:
 * fsync, chmod 0400, rename into layers/, fsync layers/, commit the row
 * (refcount 0 until an image uses it).  The store takes tmp_path over: it is
 * renamed into layers/ or, when the layer is already there or on error,
 * unlinked (a path outside tmp/ is refused, ALPS_E_INVALID, and left alone).
 * If out is not NULL, *out is the layer (caller frees). */
int store_layer_commit(struct store *s, const char *tmp_path, const struct store_layer_info *info,
		       struct store_layer **out, alps_error **err);
/* Before fetching layer info->digest: if a sound layer with the same
 * diff_id (the same tar, compressed another way) was fetched by owner or
 * without credentials (a layer_access row for owner or STORE_PUBLIC), make
 * info->digest an alias of it and return 1; 0 if there is none (or no
 * diff_id).  Only access rows count: a diff_id from an image config is
 * the registry's word, so it must never reach a layer the puller could
 * not have had anyway. */
int store_layer_dedup(struct store *s, const struct store_layer_info *info, int64_t owner,
		      alps_error **err);
/* Keep layer digest from being removed until the matching release (see
 * "Holds" above).  Holds nest.  ALPS_E_INVALID for a malformed digest. */
int store_layer_hold(struct store *s, const char *digest, alps_error **err);
void store_layer_release(struct store *s, const char *digest);
/* *ok: may uid reuse layer digest as the store has it (see "Layer reuse")?
 * false for a layer the store does not have.  No exception for root. */
int store_layer_usable(struct store *s, const char *digest, int64_t uid, bool *ok,
		       alps_error **err);
/* Record that uid (STORE_PUBLIC: anyone, it was fetched without
 * credentials) fetched layer digest from a registry.  ALPS_E_NOT_FOUND if
 * the store does not have it. */
int store_layer_allow(struct store *s, const char *digest, int64_t uid, alps_error **err);
/* Free a layer and its fields; NULL is fine. */
void store_layer_free(struct store_layer *l);

/* ---- images ----------------------------------------------------------- */

/* What store_image_commit() records.  Fields borrowed. */
struct store_image_rec {
	const char *digest;         /* manifest digest */
	const char *config_digest;
	const char *platform;       /* "linux/amd64", "linux/arm64/v8" */
	const char *manifest_json;
	const char *config_json;
};

/* Where a pull got an image, and who pulled.  Fields borrowed. */
struct store_origin {
	const char *origin;     /* "registry/repository"; NULL: unknown */
	int64_t uid;            /* the puller, or STORE_PUBLIC for nobody in particular */
	bool private;           /* with the puller's credentials for the registry */
};

/* In one transaction: add image rec with layers (digests of committed
 * layers, bottom first; a digest may repeat), incrementing their refcounts,
 * unless the image is already there; point tag (a canonical reference as
 * ref_format() writes it, or NULL) at it, moving the tag off another image,
 * which stays, untagged, until removed or collected; record access from
 * from: a private pull makes a new image private to from->uid (a row for
 * from->origin) and adds from->uid to an already private one (a public
 * image stays public).  A pull without credentials leaves a new or public
 * image public; a private image becomes public only when all its access
 * rows are from from->origin (that origin now serves it to anyone),
 * otherwise it only gains from->uid (who fetched it from their origin).
 * ALPS_E_NOT_FOUND if a layer is not in the store. */
int store_image_commit(struct store *s, const struct store_image_rec *rec,
		       const char *const *layers, size_t nlayers, const char *tag,
		       const struct store_origin *from, alps_error **err);
/* *ok: may uid use image digest as it is (public, or an access row for
 * uid)?  No exception for root: this decides what a pull may reuse. */
int store_image_usable(struct store *s, const char *digest, int64_t uid, bool *ok,
		       alps_error **err);

/* Find an image visible to uid by what: a digest ("sha256:<hex>"), a digest
 * prefix of at least 12 hex digits with or without "sha256:"/"sha512:"
 * (ALPS_E_INVALID if ambiguous), or a canonical reference (a tag).
 * ALPS_E_NOT_FOUND if none; an image uid may not see is not found.  *out
 * is complete (JSON, tags, layers); caller frees with store_image_free(). */
int store_image_find(struct store *s, const char *what, int64_t uid, struct store_image **out,
		     alps_error **err);
/* Every image visible to uid, most recently committed first, without the
 * JSON fields.  Caller frees with store_images_free(*out, *n). */
int store_images_list(struct store *s, int64_t uid, struct store_image **out, size_t *n,
		      alps_error **err);
/* Set last_used of the image and its layers to now. */
int store_image_touch(struct store *s, const char *digest, alps_error **err);
/* Let uid use private image digest.  A public image stays public. */
int store_image_grant(struct store *s, const char *digest, int64_t uid, alps_error **err);
/* Pin (store_gc() keeps it) or unpin an image. */
int store_image_pin(struct store *s, const char *digest, bool pinned, alps_error **err);

/* Remove tag ref (a canonical reference).  When it was the image's last tag
 * the image goes too, and then the call is refused with ALPS_E_BUSY, naming
 * the job, while a job uses the image.  Layers no other image uses are
 * removed; *removed (may be NULL) says what went. */
int store_image_untag(struct store *s, const char *ref, struct store_removed *removed,
		      alps_error **err);
/* Remove an image with all its tags; what as for store_image_find() (any
 * visibility).  ALPS_E_BUSY naming the job while a job uses it. */
int store_image_remove(struct store *s, const char *what, struct store_removed *removed,
		       alps_error **err);
/* Remove orphan layers, then least recently used images that are neither
 * pinned nor used by a job, until the layers take at most max_bytes.
 * ALPS_E_LIMIT if the rest cannot go; *removed (may be NULL) is filled in
 * either case. */
int store_gc(struct store *s, uint64_t max_bytes, struct store_removed *removed,
	     alps_error **err);
int store_df(struct store *s, struct store_usage *out, alps_error **err);

/* ---- cache policy (store_gc.c) ---------------------------------------- *
 *
 * A collection plans in memory from one snapshot of the rows (which images
 * go, least recently used first, and which layers that frees: a layer
 * shared with an image that stays, or held by a pull, stays), then removes
 * the chosen images one transaction each, re-checking pin and jobs, so the
 * mutex is never kept for long.  A dry run only plans. */

#define STORE_NO_TARGET UINT64_MAX

struct store_gc_opts {
	uint64_t target;        /* layers may take this much after; STORE_NO_TARGET: no goal */
	uint64_t older_than_ms; /* > 0: images unused that long go whatever the size */
	bool dry_run;
};

struct store_gc_item {
	char *digest;           /* owned */
	char *name;             /* owned: its first tag, or the digest */
	uint64_t last_used_ms;
	uint64_t bytes;         /* what its removal freed (would free) */
};

struct store_gc_report {
	struct store_removed removed;   /* orphans included */
	uint64_t used_before, used_after;
	struct store_gc_item *items;    /* images removed (to be), in order */
	size_t nitems;
	char *kept;             /* owned, when over target after: what stays and why */
};

int store_collect_images(struct store *s, const struct store_gc_opts *o,
			 struct store_gc_report *rep, alps_error **err);
void store_gc_report_clear(struct store_gc_report *rep);

/* Admission of a pull that will add about need bytes of layers under limit
 * bytes (0: no limit): if the layers, plus what admitted pulls may still
 * add, would pass the limit, collect down to low_water (or lower, as
 * needed) first; ALPS_E_LIMIT, saying how much is needed and what is pinned
 * or in use, if that is not enough.  Admitted, need is reserved until
 * store_admit_end(s, need). */
int store_admit(struct store *s, uint64_t need, uint64_t limit, uint64_t low_water,
		alps_error **err);
void store_admit_end(struct store *s, uint64_t need);
/* Bytes reserved by admitted pulls. */
uint64_t store_reserved(struct store *s);
/* Size and free bytes of the file system holding the store. */
int store_fs_usage(struct store *s, uint64_t *size, uint64_t *avail, alps_error **err);
/* The byte limit of a store.max_size value: > 0 bytes, < 0 minus a
 * percentage of the file system's size, 0 none (0). */
int store_limit_bytes(struct store *s, int64_t max_size, uint64_t *out, alps_error **err);
/* ---- integrity (store_check.c) ---------------------------------------- */

struct store_layer_problem {
	char *digest;           /* owned */
	char *problem;          /* owned: what is wrong */
};

struct store_check_report {
	size_t checked;
	uint64_t bytes;
	size_t recorded;        /* rows from before checksums: checksum recorded now */
	struct store_layer_problem *bad;
	size_t nbad;
};

/* Re-read every layer file (of image digest image, or all if NULL): its
 * size, its squashfs superblock, and its sha256 against the checksum
 * recorded at conversion.  A damaged layer is marked: store_layer_get()
 * says it is not there (a pull fetches it again and store_layer_commit()
 * replaces the file), and store_image_find() for a uid does not give out
 * an image that uses it.  Slow: reads every byte, without the mutex. */
int store_layers_check(struct store *s, const char *image, struct store_check_report *rep,
		       alps_error **err);
void store_check_report_clear(struct store_check_report *rep);

/* Pin or unpin an image named as for store_image_find() (any visibility);
 * *digest (may be NULL; caller frees) is the image's. */
int store_image_pin_named(struct store *s, const char *what, bool pinned, char **digest,
			  alps_error **err);

/* ---- imports (store_import.c) ---------------------------------------- */

/* Access rows and tags of an image imported by a user name this origin. */
#define STORE_ORIGIN_IMPORT "(import)"
/* May uid (STORE_UID_ANY: an admin, always) point tag at image digest?
 * Yes if the tag is free, names digest already, or names an image uid
 * imported; ALPS_E_EXISTS otherwise (a user may not move a tag off an
 * image others use).  A check before the commit, not in its transaction:
 * a tag taken in between is moved, as by a pull. */
int store_tag_claimable(struct store *s, const char *tag, const char *digest, int64_t uid,
			alps_error **err);
/* Remove layer digest (an alias: its layer) if no image uses it and no pull
 * holds it: the layers of an import that failed.  Errors are logged. */
void store_layer_drop_unused(struct store *s, const char *digest);

void store_image_free(struct store_image *img);
void store_images_free(struct store_image *imgs, size_t n);

/* ---- jobs ------------------------------------------------------------- */

/* Where a job is; stored as its name. */
enum store_job_state {
	STORE_JOB_UNKNOWN = 0,  /* a row this code cannot read the state of */
	STORE_JOB_PREPARING,    /* the row exists, the namespace is being built */
	STORE_JOB_READY,        /* prepared: exec and attach may enter */
};
/* "preparing", "ready" ("unknown" for anything else). */
const char *store_job_state_name(enum store_job_state s);

/* A job's row.  All fields owned (borrowed in store_job_insert()). */
struct store_job {
	char *id;               /* [A-Za-z0-9_.+-], at most STORE_JOB_ID_MAX */
	uid_t uid;
	char *user;
	char *image_digest;     /* the image it uses, or NULL */
	enum store_job_state state;
	uint64_t created_ms;    /* 0 in store_job_insert(): now */
	char *environment_json; /* may be NULL */
	char *mounts;           /* may be NULL */
};

/* ALPS_E_EXISTS if the id is taken, ALPS_E_NOT_FOUND if the image is not in
 * the store.  A job row keeps its image from removal: insert it before
 * mounting the image. */
int store_job_insert(struct store *s, const struct store_job *job, alps_error **err);
/* ALPS_E_NOT_FOUND if absent.  Caller frees *out with store_job_free(). */
int store_job_get(struct store *s, const char *id, struct store_job **out, alps_error **err);
/* Jobs of uid (STORE_UID_ANY: all), oldest first.  Caller frees with
 * store_jobs_free(*out, *n). */
int store_job_list(struct store *s, int64_t uid, struct store_job **out, size_t *n,
		   alps_error **err);
int store_job_update_state(struct store *s, const char *id, enum store_job_state state,
			   alps_error **err);
/* ALPS_E_NOT_FOUND if absent. */
int store_job_delete(struct store *s, const char *id, alps_error **err);
/* Record the job's mounts (text, one a line) once its namespace exists. */
int store_job_set_mounts(struct store *s, const char *id, const char *mounts, alps_error **err);
/* Replace the job's environment_json (what its hooks did, once they ran). */
int store_job_set_environment(struct store *s, const char *id, const char *env_json,
			      alps_error **err);
/* *job_id: a job using image digest (caller frees), or NULL. */
int store_image_in_use(struct store *s, const char *digest, char **job_id, alps_error **err);
void store_job_free(struct store_job *job);
void store_jobs_free(struct store_job *jobs, size_t n);

/* ---- pulls and counters (diagnostics) --------------------------------- */

/* Record an in-flight pull of ref for uid; *id names it.  The rows of a
 * previous run are dropped by store_open(). */
int store_pull_begin(struct store *s, const char *ref, uid_t uid, int64_t *id, alps_error **err);
int store_pull_progress(struct store *s, int64_t id, uint64_t bytes_done, uint64_t bytes_total,
			alps_error **err);
/* Drop the row; a missing one is fine. */
void store_pull_end(struct store *s, int64_t id);

struct store_pull {
	int64_t id;
	char *ref;              /* owned */
	uid_t uid;
	uint64_t started_ms;
	uint64_t bytes_done;
	uint64_t bytes_total;
};

/* In-flight pulls, oldest first.  Caller frees with store_pulls_free(). */
int store_pulls_list(struct store *s, struct store_pull **out, size_t *n, alps_error **err);
void store_pulls_free(struct store_pull *pulls, size_t n);
/* Counters kept in the stats table: "images_committed", "layers_committed",
 * "images_removed", "layers_removed", "bytes_freed".  *value is 0 for a
 * counter never touched. */
int store_stat_get(struct store *s, const char *key, int64_t *value, alps_error **err);
/* Add delta to counter key ("layer_hits", "layer_misses"). */
int store_stat_bump(struct store *s, const char *key, int64_t delta, alps_error **err);

#endif
