/* squash.h: one OCI layer (an uncompressed tar stream) into one squashfs file.
 *
 * The tar is read with libarchive (tar formats only) and written with
 * libsquashfs as it streams: file data goes to the block processor, whose
 * worker threads compress it, while the directory tree is kept in memory
 * and written at the end.  Nothing is unpacked on the host: the squashfs file
 * is the only output, so no entry can reach outside it.
 *
 * The file is what overlayfs expects of a lower layer: OCI whiteouts
 * (dir/.wh.NAME) become character devices 0:0 named NAME, opaque markers
 * (dir/.wh..wh..opq) the xattr trusted.overlay.opaque=y on dir.  Mounting the
 * layers of an image as one overlay gives the image's file system.
 *
 * Hostile layers are normalised or refused, naming the entry: a leading '/'
 * or './' is dropped; '..' components, names over 255 bytes, paths over 4096
 * bytes, hard links to paths not (yet) in the layer, invalid whiteouts,
 * non-tar input and truncated streams are errors; entry counts and
 * uncompressed size are limited (ALPS_E_LIMIT).  trusted.overlay.* xattrs
 * from the layer are dropped: they would change what overlayfs shows.
 *
 * Output file: squash_convert() creates out_path (O_EXCL), writes it, and
 * fsync()s it; the caller renames it into place.  On any error it unlinks
 * out_path itself, so a failed conversion leaves nothing behind. */
#ifndef ALPS_DAEMON_SQUASH_SQUASH_H
#define ALPS_DAEMON_SQUASH_SQUASH_H

#include <stdint.h>

#include "common/error.h"
#include "daemon/image/stream.h"

struct thread_budget;

#define SQUASH_DEFAULT_COMPRESSOR "zstd"
#define SQUASH_DEFAULT_ZSTD_LEVEL 3
#define SQUASH_DEFAULT_BLOCK_SIZE (128u * 1024)
#define SQUASH_DEFAULT_MAX_ENTRIES 10000000ull
#define SQUASH_DEFAULT_MAX_TAR_BYTES (256ull << 30)
#define SQUASH_MAX_THREADS 64u

/* Progress while converting: bytes read from the innermost stream (the
 * compressed layer) and uncompressed tar bytes.  Called on the converting
 * thread every few MiB and once at the end. */
typedef void (*squash_progress_fn)(void *arg, uint64_t bytes_in, uint64_t tar_bytes);

/* Zero means the default for every field. */
struct squash_opts {
	const char *compressor;     /* "zstd" (default), "gzip", "xz" or "lz4" */
	int level;                  /* 0: the default (zstd 3, gzip 9, xz 6);
				     * lz4: any level > 0 selects LZ4 HC */
	unsigned block_size;        /* power of two, 4 KiB .. 1 MiB; 128 KiB */
	unsigned threads;           /* compression workers; 0: online CPUs (max 8) */
	struct thread_budget *budget;   /* NULL, or threads are taken from it
					 * (work.h): fewer when it is short */
	uint64_t max_entries;       /* tar entries and implied directories */
	uint64_t max_tar_bytes;     /* uncompressed tar bytes, sparse holes included */
	squash_progress_fn progress;
	void *progress_arg;
};

struct squash_result {
	char diff_id[72];           /* "sha256:<hex>" of the uncompressed tar stream */
	uint64_t entries;           /* tar entries read */
	uint64_t files;             /* regular files written (not hard links) */
	uint64_t bytes_in;          /* bytes of the innermost stream (compressed layer) */
	uint64_t tar_bytes;         /* uncompressed tar bytes */
	uint64_t out_bytes;         /* size of the squashfs file */
};

/* Check options without converting (configuration loading): compressor,
 * level, block size, threads. */
int squash_opts_check(const struct squash_opts *opts, alps_error **err);

/* Convert the tar stream tar (not closed; read to its end) into a new
 * squashfs file at out_path.  opts may be NULL; res is filled on success.
 * On failure tar may have been aborted (stream_abort()), so that a
 * download feeding it stops instead of being waited for. */
int squash_convert(struct stream *tar, const char *out_path, const struct squash_opts *opts,
		   struct squash_result *res, alps_error **err);

#endif
