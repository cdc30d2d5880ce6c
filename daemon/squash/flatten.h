/* flatten.h: the layers of an image (squashfs files as squash.h makes
 * them) into one squashfs file of the image's whole tree, for tools that
 * take one file (alps export: enroot, Apptainer, uenv).
 *
 * The layers are merged as overlayfs merges them when a job mounts them
 * (daemon/job/overlay.c), bottom first: a name in an upper layer hides the
 * same name below (a directory over a directory merges with it; anything
 * else replaces the whole entry); a whiteout (a character device 0:0, what
 * the converter makes of an OCI .wh.NAME) removes the name below and is
 * not itself written; an opaque directory (trusted.overlay.opaque=y, from
 * .wh..wh..opq) hides everything below it.  No trusted.overlay.* xattr is
 * written: the result is a plain file system.  Hard links stay links
 * within the layer that made them.
 *
 * File data: where a layer's compressor and block size are the output's,
 * its data blocks are copied as they are, still compressed (only the tail
 * of a file packed in a fragment block is decompressed and packed again);
 * otherwise, or with recompress, the data is decompressed and compressed
 * again on the block processor's threads.  Blocks are deduplicated as the
 * converter does, across layers too.
 *
 * The output is an fd the caller checked (flatten_check_output); nothing
 * is unlinked here: on failure the caller (the client, who created the
 * file) removes it. */
#ifndef ALPS_DAEMON_SQUASH_FLATTEN_H
#define ALPS_DAEMON_SQUASH_FLATTEN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct thread_budget;

/* Called on the flattening thread, every few MiB of file data. */
typedef void (*flatten_progress_fn)(void *arg, uint64_t done, uint64_t total);

struct flatten_opts {
	const char *compressor;         /* NULL: the bottom layer's */
	bool recompress;                /* never copy blocks (benchmarks, a new compressor) */
	unsigned threads;               /* compressor workers; 0: online CPUs (max 8) */
	struct thread_budget *budget;   /* NULL, or threads come from it (work.h) */
	const atomic_bool *cancel;      /* NULL, or set when the result is no longer wanted */
	flatten_progress_fn progress;
	void *progress_arg;
	/* NULL, or called once the layers are open and before anything is
	 * written to the output (alps export takes the user's file system
	 * identity there); on the calling thread, which does every write. */
	int (*before_write)(void *arg, alps_error **err);
	void *before_write_arg;
};

struct flatten_result {
	uint64_t entries;               /* names in the output tree */
	uint64_t files;                 /* regular files (inodes) */
	uint64_t file_bytes;            /* their sizes */
	uint64_t blocks_copied;         /* data blocks copied compressed */
	uint64_t blocks_recompressed;   /* files' data blocks decompressed and compressed again */
	uint64_t out_bytes;             /* size of the squashfs file */
	char compressor[16];
	unsigned block_size;
};

/* Refuse an output fd that is not a regular, empty file open for reading
 * and writing (libsquashfs reads back what it wrote to deduplicate), or
 * that appends. */
int flatten_check_output(int fd, alps_error **err);

/* Merge the n layer files (bottom first) into out_fd. */
int flatten_layers(const char *const *layers, size_t n, int out_fd,
		   const struct flatten_opts *opts, struct flatten_result *res, alps_error **err);

#endif
