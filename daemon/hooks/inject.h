/* inject.h: libraries injected into a job, built once per node.
 *
 * The CXI, NCCL plugin and MPI hooks (builtin.c, mpi.c) name host
 * libraries; hooks_job_inject() turns them into a node cache entry
 * (injcache.c) that later jobs of the same image and host stack reuse:
 *
 *	STATE_DIR/injcache/<image digest hex>/<key>/
 *	    lib/<name>          copies of the host's libraries (hooks.lib_dir)
 *	    mpi/<soname>        the host's MPI libraries, bound over the image's
 *	    ld.so.cache         made by the image's own ldconfig (ldcache.c)
 *	    entry.json          what the job binds: the MPI targets, the cache
 *
 * key: a hash of the hooks, the names and the host files' real paths,
 * sizes, mtimes and versions, so a changed host library makes a new
 * entry.  Entries go when the image leaves the store (injcache_drop_image).
 * The image's files are read from its layers (imgtree.c) for the MPI ABI
 * check, never through a job's tree, which holds the user's mounts too. */
#ifndef ALPS_DAEMON_HOOKS_INJECT_H
#define ALPS_DAEMON_HOOKS_INJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"

struct config;
struct hook_job;

/* The image a job runs, as injection needs it. */
struct inject_image {
	const char *digest;             /* NULL: a squashfs file the user named */
	const char *const *layer_files; /* bottom first */
	const char *const *layer_ids;
	size_t nlayers;
	const char *config_json;        /* its Env (LD_LIBRARY_PATH), or NULL */
};

/* The uid the image's ldconfig runs as: nobody's. */
#define INJECT_UID 65534

/* Build or reuse the entry of hj's libraries for img and add its binds to
 * hj (lib_dir, /etc/ld.so.cache, the MPI libraries over the image's).
 * Blocking: a worker's call.  A refused MPI ABI check leaves nothing. */
int hooks_job_inject(const struct config *cfg, struct hook_job *hj,
		     const struct inject_image *img, alps_error **err);

/* rm -rf, never following a link nor crossing a mount. */
void inject_rm_tree(const char *path);

/* Remove the entries of an image (the store removed it).  Logs failures. */
void injcache_drop_image(const char *state_dir, const char *digest);

/* ---- the image's tree, read from its layers (imgtree.c) ---- */

struct imgtree {
	int *fds;               /* O_PATH roots of the layers, top first */
	size_t n;
	const char *run_dir;
	const char *const *ids;
	size_t nacquired;
};

int imgtree_open(struct imgtree *t, const char *run_dir, const struct inject_image *img,
		 alps_error **err);
void imgtree_close(struct imgtree *t);
/* path with every symlink followed inside the image (at most 40), as an
 * absolute path of the merged tree; NULL when it does not exist.  *layer:
 * the top layer that holds it.  Caller frees. */
char *imgtree_resolve(const struct imgtree *t, const char *path, size_t *layer);
/* Is real (imgtree_resolve's) a regular file? */
bool imgtree_is_file(const struct imgtree *t, const char *real);
/* A regular file's first max bytes (NUL-terminated), or NULL. */
char *imgtree_read(const struct imgtree *t, const char *path, size_t max);
/* The names in directory path of every layer (union, unsorted, without
 * "." and ".."); NULL-terminated, caller frees with edf_strv_free. */
char **imgtree_list(const struct imgtree *t, const char *path);

/* ---- the MPI hook (mpi.c) ---- */

/* One MPI library: the host file bound over the image's. */
struct mpi_lib {
	char *soname;           /* the image's name: libmpi.so.12 */
	char *host;             /* real path on the host */
	char *image_path;       /* the image's file it replaces (real path), set by the check */
	bool dependency;        /* a dependency: into lib_dir instead */
};

/* Host side (config only): the configured libraries, checked to exist. */
int mpi_host_libs(const struct config *cfg, struct mpi_lib **out, size_t *n, alps_error **err);
void mpi_libs_free(struct mpi_lib *libs, size_t n);
/* The image's counterparts and the ABI check; libraries the image lacks
 * are dropped from *libs (libmpicxx without C++).  None at all is an
 * error when the EDF asked for the hook, else *n is 0 (the site's
 * default meets an image without MPI). */
int mpi_image_check(const struct imgtree *t, const char *config_json, bool asked,
		    struct mpi_lib **libs, size_t *n, alps_error **err);
/* "12.1.1" of "libmpi.so.12.1.1"; missing numbers are 0. */
void mpi_version(const char *name, unsigned v[3]);

/* ---- the image's ldconfig (ldcache.c) ---- */

struct ldcache_run {
	const struct config *cfg;
	const struct inject_image *img;
	const char *entry;      /* the entry being built: lib/, mpi/ */
	const char *lib_dir;    /* hooks.lib_dir: first in the cache */
};

/* Run the image's ldconfig over lib_dir in a namespace of the image and
 * the entry; on success entry/ld.so.cache exists.  1: done; 0: the image
 * has no glibc ldconfig (*why says what happened); -1: error. */
int ldcache_build(const struct ldcache_run *r, char **why, alps_error **err);

#endif
