/* squash_int.h: what the files of the converter share (squash.h is its
 * public face).  squash.c drives a conversion; squash_tar.c reads the tar
 * into the tree of squash_tree.c; squash_write.c writes that tree and the
 * tables; squash_out.c is the output file as libsquashfs sees it. */
#ifndef ALPS_DAEMON_SQUASH_SQUASH_INT_H
#define ALPS_DAEMON_SQUASH_SQUASH_INT_H

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <sqfs/block.h>
#include <sqfs/block_processor.h>
#include <sqfs/block_writer.h>
#include <sqfs/compressor.h>
#include <sqfs/dir_writer.h>
#include <sqfs/error.h>
#include <sqfs/frag_table.h>
#include <sqfs/id_table.h>
#include <sqfs/inode.h>
#include <sqfs/io.h>
#include <sqfs/meta_writer.h>
#include <sqfs/super.h>
#include <sqfs/xattr_writer.h>

#include "common/log.h"
#include "daemon/squash/squash.h"
#include "daemon/server/work.h"

#define READ_BUF_SIZE (1u << 20)       /* libarchive reads the tar in pieces this big */
#define PROGRESS_EVERY (8ull << 20)
#define NAME_MAX_BYTES 255
#define PATH_MAX_BYTES 4096
#define SYMLINK_MAX_BYTES 4095          /* the kernel reads a target into one page */
#define XATTR_VALUE_MAX 65536           /* Linux's XATTR_SIZE_MAX */
#define XATTRS_PER_ENTRY_MAX 1024
#define NO_XATTRS 0xFFFFFFFFu

#define WH_PREFIX ".wh."
#define WH_META_PREFIX ".wh..wh."
#define WH_OPAQUE ".wh..wh..opq"
#define OVERLAY_OPAQUE_XATTR "trusted.overlay.opaque"

struct sq_xattr {
	char *key;                  /* owned */
	void *value;                /* owned */
	size_t size;
};

/* Whole blocks of a sparse file's hole, never given to the block processor:
 * count sparse blocks go before the processor's block number index. */
struct sq_hole {
	uint64_t index, count;
};

struct sq_inode {
	struct sq_inode *all_next;  /* the list of every inode made */
	sqfs_inode_generic_t *file; /* owned; regular files, filled by the block processor */
	struct sq_hole *holes;      /* owned; regular files with holes of whole blocks */
	size_t nholes;
	char *target;               /* owned; symlinks */
	struct sq_xattr *xattrs;    /* owned */
	size_t nxattrs;
	uint64_t ref;               /* inode reference, once written */
	uint32_t ino;               /* inode number; 0 until numbered */
	uint32_t nlink;             /* dentries naming it */
	uint32_t mode, uid, gid, mtime, devno;
	bool written, opaque, whiteout;
};

struct sq_dentry {
	struct sq_dentry *parent;
	struct sq_dentry *hnext;            /* hash chain */
	struct sq_dentry *child;            /* directories: first child */
	struct sq_dentry *next, *prev;      /* siblings */
	struct sq_dentry **sorted;          /* owned; directories, when written */
	size_t nsorted;
	struct sq_inode *inode;
	uint64_t hash;
	uint16_t namelen;
	char name[];
};

/* All dentries but the root, by (parent, name).  Keyed SipHash: names come
 * from the layer, and a guessable hash would let a layer make every lookup
 * walk one long chain. */
struct sq_htab {
	struct sq_dentry **buckets;         /* owned */
	size_t mask;
	size_t count;
	uint64_t k0, k1;
};

/* The output as libsquashfs sees it: our fd, so that it is O_CLOEXEC and a
 * failed write keeps its errno. */
struct out_file {
	sqfs_file_t base;
	int fd;
	uint64_t size;
	int errnum;                 /* errno of the last failed call */
	/* A write failed (ENOSPC, EIO): later writes are dropped and reads
	 * of the file give zeros, so that libsquashfs's pipeline still runs
	 * to its end and hands back every queued block (libsquashfs 1.2 leaks
	 * the blocks queued when a write error stops it).  The conversion
	 * then fails with errnum. */
	bool broken;
};

struct settings {
	int comp_id;
	int level;
	unsigned block_size, threads;
	uint64_t max_entries, max_tar_bytes;
};

struct squash {
	struct settings set;
	const char *out_path;
	squash_progress_fn progress;
	void *progress_arg;

	struct stream *in;          /* the caller's */
	struct stream *ahead;       /* owned; reads in on a thread of its own, or NULL */
	struct stream *src;         /* where tar bytes come from: ahead or in */
	struct archive *ar;
	uint8_t *rbuf;              /* owned */
	alps_error *read_err;       /* owned; a failure inside the read callback */
	EVP_MD_CTX *sha;            /* owned */
	uint64_t tar_bytes, hole_bytes, next_progress;
	uint64_t entries, nodes, files;
	const char *raw_path;       /* the current entry as the tar names it */
	char path[PATH_MAX_BYTES + 1];  /* ... and normalised */

	struct sq_dentry *root;     /* owned, with the tree */
	struct sq_htab ht;
	struct sq_inode *inodes;    /* owned */
	uint32_t inode_count;

	struct out_file out;
	bool created;
	sqfs_super_t super;
	sqfs_compressor_t *cmp, *uncmp;
	sqfs_block_writer_t *bw;
	sqfs_frag_table_t *frag;
	sqfs_block_processor_t *proc;
	sqfs_id_table_t *ids;
	sqfs_xattr_writer_t *xw;
	sqfs_meta_writer_t *im, *dm;
	sqfs_dir_writer_t *dw;
};


/* squash.c */
int sq_resolve_opts(const struct squash_opts *o, struct settings *s, alps_error **err);
int sq_compressor_create(const struct settings *s, sqfs_u16 flags, sqfs_compressor_t **out,
			 alps_error **err);
int sq_setup_super(struct squash *sq, alps_error **err);
/* The fragment table and the block processor, writing through sq->bw
 * (set by the caller: the plain block writer, or export's copying one). */
int sq_start_processor(struct squash *sq, alps_error **err);
/* The writer's libsquashfs objects and the tree, freed (after a failure,
 * queued blocks drain first). */
void sq_writer_destroy(struct squash *sq, bool failed);
int sq_setup_meta(struct squash *sq);
void sq_setup_tree(struct squash *sq);
int sq_fail(struct squash *sq, alps_error **err, int ret, const char *what);
ALPS_PRINTF(4, 5)
int sq_entry_fail(struct squash *sq, alps_error **err, int code, const char *fmt, ...);
void *sq_must(void *p, const char *what);

/* squash_tree.c */
void sq_ht_init(struct sq_htab *ht);
struct sq_dentry *sq_ht_lookup(const struct sq_htab *ht, const struct sq_dentry *parent,
			       const char *name, size_t len);
struct sq_inode *sq_inode_new(struct squash *sq, uint32_t mode);
struct sq_dentry *sq_dentry_alloc(const char *name, size_t len, struct sq_inode *ino);
int sq_dentry_add(struct squash *sq, struct sq_dentry *dir, const char *name, size_t len,
		  struct sq_inode *ino, struct sq_dentry **out, alps_error **err);
void sq_dentry_remove(struct squash *sq, struct sq_dentry *d);
void sq_tree_free(struct squash *sq);

/* squash_out.c */
int sq_out_open(struct squash *sq, alps_error **err);
void sq_out_adopt(struct squash *sq, int fd);

/* squash_tar.c */
void sq_report_progress(struct squash *sq);
int sq_out_failed(struct squash *sq, alps_error **err);
int sq_read_layer(struct squash *sq, alps_error **err);

/* squash_write.c */
int sq_write_inodes_and_dirs(struct squash *sq, alps_error **err);
int sq_write_tables(struct squash *sq, alps_error **err);
int sq_apply_holes(struct squash *sq, struct sq_inode *ino, alps_error **err);

#endif
