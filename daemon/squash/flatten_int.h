/* flatten_int.h: what flatten.c (layers, data, output) and flatten_tree.c
 * (the merge of the layers' trees) share. */
#ifndef ALPS_DAEMON_SQUASH_FLATTEN_INT_H
#define ALPS_DAEMON_SQUASH_FLATTEN_INT_H

#include <sqfs/data_reader.h>
#include <sqfs/dir_reader.h>
#include <sqfs/xattr.h>
#include <sqfs/xattr_reader.h>

#include "daemon/squash/flatten.h"
#include "daemon/squash/squash_int.h"

#define FL_MAX_DEPTH 2048               /* a path of 4096 bytes has at most 2048 levels */
#define FL_NO_FRAGMENT 0xFFFFFFFFu

/* A layer file as libsquashfs reads it: our O_CLOEXEC fd. */
struct fl_in {
	sqfs_file_t base;
	int fd;
	uint64_t size;
};

struct fl_layer {
	struct fl_in in;
	const char *path;               /* the caller's */
	sqfs_super_t super;
	sqfs_compressor_t *cmp;
	sqfs_id_table_t *ids;
	sqfs_dir_reader_t *dir;
	sqfs_data_reader_t *data;
	sqfs_xattr_reader_t *xr;
	sqfs_tree_node_t *root;
	bool copy;                      /* same compressor and block size as the output */
};

/* A regular file of the output and where its data comes from. */
struct fl_file {
	struct sq_inode *ino;
	size_t layer;
	const sqfs_inode_generic_t *src;        /* in the layer's tree */
	sqfs_inode_generic_t *tail;             /* owned; the copied file's fragment */
};

/* A layer's hard links: inode number in the layer -> inode of the output. */
struct fl_links {
	struct {
		uint32_t num;
		struct sq_inode *ino;
	} *slots;                       /* owned; num 0: free */
	size_t mask, used;
};

struct flatten {
	struct squash sq;               /* the output's tree and writers */
	struct fl_layer *layers;        /* owned */
	size_t nlayers;
	struct fl_file *files;          /* owned */
	size_t nfiles, cap;
	struct fl_links links;
	const struct flatten_opts *opts;
	uint64_t done, total, next_progress;
	uint64_t copied, recompressed;
	uint8_t *buf;                   /* owned; one block */
};

/* flatten_tree.c */
int fl_merge_layer(struct flatten *fl, size_t li, alps_error **err);

#endif
