/* import_int.h: what the files of alps import share (import.h is its
 * public face).  import.c finds the format and commits; import_archive.c
 * reads docker and OCI archives; import_sqfs.c turns a user's squashfs
 * into a tar stream for the converter. */
#ifndef ALPS_DAEMON_IMAGE_IMPORT_INT_H
#define ALPS_DAEMON_IMAGE_IMPORT_INT_H

#include "daemon/image/import.h"
#include "daemon/image/stream.h"

#define IMPORT_MAX_DEPTH 256            /* directories nested in a squashfs */

/* One import in progress. */
struct imp {
	const struct import_request *rq;
	int fd;                         /* the input: a regular file (owned if spooled) */
	bool own_fd;
	uint64_t size;                  /* of the input */
	const char *format;             /* static: "docker-archive"... */
	char **committed;               /* owned: layer digests this import committed */
	size_t ncommitted;
	char **layers;                  /* owned: the image's layer digests, bottom first */
	size_t nlayers;
	char *manifest_json, *config_json;  /* owned */
	char *platform;                 /* owned: "linux/amd64" */
	char *own_name;                 /* owned: the archive's name for the image, or NULL */
};

/* A layer from a tar stream raw (taken), compressed as c: its digest
 * checked against want_digest and its tar's against want_diff_id (each
 * may be NULL), converted and committed.  *digest (caller frees) is the
 * blob's, *diff_id (may be NULL; caller frees) the tar's. */
int imp_layer_from_tar(struct imp *im, struct stream *raw, enum layer_compression c,
		       const char *media_type, const char *want_digest, const char *want_diff_id,
		       char **digest, char **diff_id, alps_error **err);
/* Whether import_stop() was called; ALPS_E_CANCELLED in *err if so. */
bool imp_stopping(alps_error **err);
/* Count bytes read from the input for progress. */
struct stream *imp_counting(struct imp *im, struct stream *inner);

/* import_archive.c: a docker or OCI archive (im->fd, regular, at any
 * offset): the layers committed, im's manifest, config and platform set. */
int imp_archive(struct imp *im, alps_error **err);

/* import_sqfs.c: the squashfs of size bytes at offset off of im->fd as
 * one layer (its arch: "" for the node's); im's image set. */
int imp_squashfs(struct imp *im, uint64_t off, uint64_t size, const char *arch, alps_error **err);

/* import.c: the image of im->layers from a config im->config_json the
 * caller made, with a manifest made here (squashfs and docker imports). */
int imp_make_manifest(struct imp *im, const char *const *media_types, const uint64_t *sizes,
		      alps_error **err);

#endif
