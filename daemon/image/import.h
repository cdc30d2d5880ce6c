/* import.h: images that did not come from a registry, into the store.
 *
 * alps import FILE hands the daemon an fd the client opened as the user
 * (the daemon never opens a user's path): a regular file, or the read end
 * of a pipe carrying a tar of an OCI layout directory that the client
 * streamed.  What the fd holds is found from its first bytes:
 *
 *	docker-archive   a tar with manifest.json (docker save, skopeo)
 *	oci-archive      a tar with oci-layout and index.json (also oci-dir)
 *	sif              a Singularity/Apptainer SIF: its primary squashfs
 *	squashfs         a plain squashfs file
 *
 * Tar layers go through the converter with the checks of a pull: the
 * blob's digest against the manifest, the tar's digest against the
 * config's diff_ids.  A user's squashfs is never mounted as it is: it is
 * read with libsquashfs (every name checked, device nodes refused, sizes
 * and counts bounded), streamed as a tar and written again by the
 * converter; the layer's digest is that tar's.  A pipe is first copied to
 * an unlinked file under the store's tmp/ (an archive is read twice).
 *
 * The image is private to the importing user unless an admin imports it;
 * a user's import may not take a tag that names an image the user did not
 * import.  On any error nothing stays: layers converted for the import
 * are removed unless another image uses them.  Runs on a worker thread. */
#ifndef ALPS_DAEMON_IMAGE_IMPORT_H
#define ALPS_DAEMON_IMAGE_IMPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "daemon/squash/squash.h"
#include "daemon/store/policy.h"

struct store;

/* What a progress tick reads (written by the worker). */
struct import_progress {
	_Atomic uint64_t done;          /* input bytes read */
	_Atomic uint64_t total;         /* input bytes, when known */
	_Atomic int phase;              /* enum pull_phase */
};

struct import_request {
	struct store *store;
	int fd;                         /* borrowed */
	bool from_directory;            /* fd is a pipe with a tar of a layout */
	const char *tag;                /* canonical, or NULL: the archive's own */
	const char *default_registry;   /* for the archive's own names */
	uid_t uid;
	bool admin;                     /* the import is public */
	struct squash_opts squash;      /* compressor, limits, budget */
	struct cache_policy policy;     /* store.max_size: admitted as a pull is */
	struct import_progress *progress;
};

struct import_result {
	char *reference;                /* owned: canonical tag */
	char *digest;                   /* owned: manifest digest */
	const char *format;             /* static */
	uint32_t layers;
	uint64_t size;
	bool private;
};

int import_image(const struct import_request *rq, struct import_result *res, alps_error **err);
/* At stop (any thread): imports running give up soon, ALPS_E_CANCELLED,
 * leaving nothing behind, so that draining the pool is quick. */
void import_stop(void);
void import_result_clear(struct import_result *res);

#endif
