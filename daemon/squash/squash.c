/* squash.c: an OCI layer tar stream into one squashfs file (see squash.h).
 *
 * The plan of squash_convert():
 *  1. create the output and the libsquashfs writers (superblock first, data
 *     blocks after it, tables at the end, the superblock rewritten last);
 *  2. read the tar with libarchive from a callback that also hashes the
 *     stream (diff_id), counts it and enforces the size limit; each entry is
 *     checked and placed in an in-memory tree, regular file data goes
 *     straight to the block processor, which compresses on worker threads;
 *  3. after the tar, number the inodes, write them children first (a
 *     directory listing points at its children's inodes), then the
 *     directory, fragment, id and xattr tables and the superblock; fsync.
 *
 * Tree ownership: dentries (names) point at inodes (metadata).  Hard links
 * are several dentries of one inode.  Inodes are never freed before the end:
 * the block processor keeps a pointer into a file's inode until it finishes,
 * so an entry replaced by a later duplicate only loses its dentry. */
#include "config.h"

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
#include "daemon/work.h"

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

static const uint8_t zeros[64 * 1024];

/* --- errors --- */

static const char *sqfs_error_name(int code)
{
	switch (code) {
	case SQFS_ERROR_ALLOC: return "out of memory";
	case SQFS_ERROR_IO: return "I/O error";
	case SQFS_ERROR_COMPRESSOR: return "compressor failure";
	case SQFS_ERROR_CORRUPTED: return "corrupted data";
	case SQFS_ERROR_UNSUPPORTED: return "unsupported";
	case SQFS_ERROR_OVERFLOW: return "value too large";
	case SQFS_ERROR_OUT_OF_BOUNDS: return "out of bounds";
	case SQFS_ERROR_ARG_INVALID: return "invalid argument";
	case SQFS_ERROR_SEQUENCE: return "calls out of sequence";
	default: return "internal error";
	}
}

/* A libsquashfs failure; an I/O one carries the errno our file saw. */
static int sqfs_fail(struct squash *sq, alps_error **err, int ret, const char *what)
{
	if (ret == SQFS_ERROR_IO && sq->out.errnum)
		return alps_fail_errnum(err, sq->out.errnum, "%s: %s", what, sq->out_path);
	return alps_fail(err, ALPS_E_INTERNAL, "%s: libsquashfs: %s (%d)", what,
			 sqfs_error_name(ret), ret);
}

/* "entry '<path>' <what>", the path escaped: it comes from the layer. */
ALPS_PRINTF(4, 5)
static int entry_fail(struct squash *sq, alps_error **err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *what = xvasprintf(fmt, ap);
	va_end(ap);
	_cleanup_free_ char *esc = log_escape(sq->raw_path ? sq->raw_path : "", 256);
	return alps_fail(err, code, "entry '%s' %s", esc, what);
}

/* libsquashfs constructors fail only when memory runs out, which aborts
 * here as everywhere in alps. */
static void *must(void *p, const char *what)
{
	if (!p) {
		fprintf(stderr, "alps: out of memory creating %s\n", what);
		abort();
	}
	return p;
}

/* --- keyed hash table of dentries --- */

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND()                                                              \
	do {                                                                    \
		v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);   \
		v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                        \
		v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                        \
		v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);   \
	} while (0)

/* SipHash-1-3 (the variant hash tables use).  Words are read in host
 * order: the value only has to be stable within one process. */
static uint64_t siphash13(uint64_t k0, uint64_t k1, const uint8_t *m, size_t len)
{
	uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
	uint64_t w;
	size_t i;
	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&w, m + i, 8);
		v3 ^= w;
		SIPROUND();
		v0 ^= w;
	}
	w = 0;
	memcpy(&w, m + i, len - i);
	w |= (uint64_t)len << 56;
	v3 ^= w;
	SIPROUND();
	v0 ^= w;
	v2 ^= 0xff;
	SIPROUND();
	SIPROUND();
	SIPROUND();
	return v0 ^ v1 ^ v2 ^ v3;
}

static void ht_init(struct sq_htab *ht)
{
	uint64_t k[2];
	if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
		/* No entropy yet (early boot): a weaker key beats failing. */
		k[0] = now_realtime_ms() ^ ((uint64_t)getpid() << 32);
		k[1] = now_monotonic_ns() ^ (uint64_t)(uintptr_t)ht;
	}
	ht->k0 = k[0];
	ht->k1 = k[1];
	ht->mask = 1023;
	ht->buckets = xcalloc(ht->mask + 1, sizeof(*ht->buckets));
}

static uint64_t ht_hash(const struct sq_htab *ht, const struct sq_dentry *parent,
			const char *name, size_t len)
{
	return siphash13(ht->k0 ^ (uint64_t)(uintptr_t)parent, ht->k1, (const uint8_t *)name, len);
}

static struct sq_dentry *ht_lookup(const struct sq_htab *ht, const struct sq_dentry *parent,
				   const char *name, size_t len)
{
	uint64_t h = ht_hash(ht, parent, name, len);
	for (struct sq_dentry *d = ht->buckets[h & ht->mask]; d; d = d->hnext) {
		if (d->hash == h && d->parent == parent && d->namelen == len &&
		    memcmp(d->name, name, len) == 0)
			return d;
	}
	return NULL;
}

static void ht_grow(struct sq_htab *ht)
{
	size_t nmask = ht->mask * 2 + 1;
	struct sq_dentry **nb = xcalloc(nmask + 1, sizeof(*nb));
	for (size_t i = 0; i <= ht->mask; i++) {
		struct sq_dentry *d = ht->buckets[i];
		while (d) {
			struct sq_dentry *next = d->hnext;
			d->hnext = nb[d->hash & nmask];
			nb[d->hash & nmask] = d;
			d = next;
		}
	}
	free(ht->buckets);
	ht->buckets = nb;
	ht->mask = nmask;
}

static void ht_insert(struct sq_htab *ht, struct sq_dentry *d)
{
	if (ht->count > ht->mask)
		ht_grow(ht);
	struct sq_dentry **b = &ht->buckets[d->hash & ht->mask];
	d->hnext = *b;
	*b = d;
	ht->count++;
}

static void ht_remove(struct sq_htab *ht, struct sq_dentry *d)
{
	struct sq_dentry **p = &ht->buckets[d->hash & ht->mask];
	while (*p != d)
		p = &(*p)->hnext;
	*p = d->hnext;
	ht->count--;
}

/* --- the tree --- */

static struct sq_inode *inode_new(struct squash *sq, uint32_t mode)
{
	struct sq_inode *ino = xzalloc(sizeof(*ino));
	ino->mode = mode;
	ino->all_next = sq->inodes;
	sq->inodes = ino;
	return ino;
}

static void inode_free(struct sq_inode *ino)
{
	for (size_t i = 0; i < ino->nxattrs; i++) {
		free(ino->xattrs[i].key);
		free(ino->xattrs[i].value);
	}
	free(ino->xattrs);
	free(ino->target);
	free(ino->holes);
	sqfs_free(ino->file);
	free(ino);
}

static struct sq_dentry *dentry_alloc(const char *name, size_t len, struct sq_inode *ino)
{
	struct sq_dentry *d = xzalloc(sizeof(*d) + len + 1);
	memcpy(d->name, name, len);
	d->namelen = (uint16_t)len;
	d->inode = ino;
	ino->nlink++;
	return d;
}

/* Count a new dentry against the limit: entries and the directories they
 * imply, created over the whole layer, so that neither many entries nor
 * deep paths re-created over and over can use unbounded memory. */
static int node_budget(struct squash *sq, alps_error **err)
{
	if (++sq->nodes <= sq->set.max_entries)
		return 0;
	return alps_fail(err, ALPS_E_LIMIT, "layer has more than %llu entries",
			 (unsigned long long)sq->set.max_entries);
}

static int dentry_add(struct squash *sq, struct sq_dentry *dir, const char *name, size_t len,
		      struct sq_inode *ino, struct sq_dentry **out, alps_error **err)
{
	if (node_budget(sq, err) < 0)
		return -1;
	struct sq_dentry *d = dentry_alloc(name, len, ino);
	d->parent = dir;
	d->hash = ht_hash(&sq->ht, dir, name, len);
	ht_insert(&sq->ht, d);
	d->next = dir->child;
	if (dir->child)
		dir->child->prev = d;
	dir->child = d;
	if (out)
		*out = d;
	return 0;
}

static void dentry_free_one(struct squash *sq, struct sq_dentry *d)
{
	ht_remove(&sq->ht, d);
	if (d->prev)
		d->prev->next = d->next;
	else
		d->parent->child = d->next;
	if (d->next)
		d->next->prev = d->prev;
	d->inode->nlink--;
	free(d->sorted);
	free(d);
}

/* Remove d and everything under it, without recursion: a layer decides
 * how deep the tree is. */
static void dentry_remove(struct squash *sq, struct sq_dentry *d)
{
	struct sq_dentry *cur = d;
	for (;;) {
		if (cur->child) {
			cur = cur->child;
			continue;
		}
		struct sq_dentry *up = cur->parent;
		bool done = cur == d;
		dentry_free_one(sq, cur);
		if (done)
			return;
		cur = up;
	}
}

static void tree_free(struct squash *sq)
{
	if (sq->ht.buckets) {
		for (size_t i = 0; i <= sq->ht.mask; i++) {
			struct sq_dentry *d = sq->ht.buckets[i];
			while (d) {
				struct sq_dentry *next = d->hnext;
				free(d->sorted);
				free(d);
				d = next;
			}
		}
		free(sq->ht.buckets);
	}
	if (sq->root) {
		free(sq->root->sorted);
		free(sq->root);
	}
	while (sq->inodes) {
		struct sq_inode *next = sq->inodes->all_next;
		inode_free(sq->inodes);
		sq->inodes = next;
	}
}

/* --- the output file --- */

static int out_read_at(sqfs_file_t *f, sqfs_u64 off, void *buf, size_t size)
{
	struct out_file *o = (struct out_file *)f;
	if (off > o->size || size > o->size - off)
		return SQFS_ERROR_OUT_OF_BOUNDS;
	if (o->broken) {
		memset(buf, 0, size);
		return 0;
	}
	uint8_t *p = buf;
	while (size > 0) {
		ssize_t n = pread(o->fd, p, size, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			o->errnum = n < 0 ? errno : EIO;
			return SQFS_ERROR_IO;
		}
		p += n;
		off += (uint64_t)n;
		size -= (size_t)n;
	}
	return 0;
}

static int out_write_at(sqfs_file_t *f, sqfs_u64 off, const void *buf, size_t size)
{
	struct out_file *o = (struct out_file *)f;
	const uint8_t *p = buf;
	uint64_t end = off + size;
	while (size > 0 && !o->broken) {
		ssize_t n = pwrite(o->fd, p, size, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			o->errnum = n < 0 ? errno : EIO;
			o->broken = true;
			break;
		}
		p += n;
		off += (uint64_t)n;
		size -= (size_t)n;
	}
	if (end > o->size)
		o->size = end;
	return 0;
}

static sqfs_u64 out_get_size(const sqfs_file_t *f)
{
	return ((const struct out_file *)f)->size;
}

static int out_truncate(sqfs_file_t *f, sqfs_u64 size)
{
	struct out_file *o = (struct out_file *)f;
	if (!o->broken && ftruncate(o->fd, (off_t)size) < 0) {
		o->errnum = errno;
		return SQFS_ERROR_IO;
	}
	o->size = size;
	return 0;
}

/* The fd belongs to struct squash, which closes it. */
static void out_destroy(sqfs_object_t *obj)
{
	(void)obj;
}

static int out_open(struct squash *sq, alps_error **err)
{
	sq->out.fd = open(sq->out_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (sq->out.fd < 0)
		return alps_fail_errno(err, "creating %s", sq->out_path);
	sq->created = true;
	sq->out.base.base.destroy = out_destroy;
	sq->out.base.read_at = out_read_at;
	sq->out.base.write_at = out_write_at;
	sq->out.base.get_size = out_get_size;
	sq->out.base.truncate = out_truncate;
	return 0;
}

/* --- options --- */

static const struct {
	const char *name;
	int id;
	int min, max, def;
} compressors[] = {
	{ "zstd", SQFS_COMP_ZSTD, SQFS_ZSTD_MIN_LEVEL, SQFS_ZSTD_MAX_LEVEL, SQUASH_DEFAULT_ZSTD_LEVEL },
	{ "gzip", SQFS_COMP_GZIP, SQFS_GZIP_MIN_LEVEL, SQFS_GZIP_MAX_LEVEL, SQFS_GZIP_DEFAULT_LEVEL },
	{ "xz", SQFS_COMP_XZ, 1, SQFS_XZ_MAX_LEVEL, SQFS_XZ_DEFAULT_LEVEL },
	/* lz4 has no levels in squashfs: a level only selects LZ4 HC. */
	{ "lz4", SQFS_COMP_LZ4, 0, 1, 0 },
};

static int resolve_compressor(const struct squash_opts *o, struct settings *s, alps_error **err)
{
	const char *name = o->compressor ? o->compressor : SQUASH_DEFAULT_COMPRESSOR;
	for (size_t i = 0; i < ARRAY_SIZE(compressors); i++) {
		if (strcmp(name, compressors[i].name) != 0)
			continue;
		s->comp_id = compressors[i].id;
		s->level = o->level ? o->level : compressors[i].def;
		if (s->comp_id == SQFS_COMP_LZ4 && s->level > 0)
			s->level = 1;
		if (s->level < compressors[i].min || s->level > compressors[i].max)
			return alps_fail(err, ALPS_E_INVALID,
					 "squashfs %s level %d is outside %d..%d", name, o->level,
					 compressors[i].min, compressors[i].max);
		return 0;
	}
	_cleanup_free_ char *esc = log_escape(name, 64);
	return alps_fail(err, ALPS_E_UNSUPPORTED,
			 "unsupported squashfs compressor '%s' (zstd, gzip, xz or lz4)", esc);
}

static unsigned default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return 1;
	return n > 8 ? 8 : (unsigned)n;
}

static int resolve_opts(const struct squash_opts *o, struct settings *s, alps_error **err)
{
	static const struct squash_opts defaults;
	if (!o)
		o = &defaults;
	if (resolve_compressor(o, s, err) < 0)
		return -1;
	s->block_size = o->block_size ? o->block_size : SQUASH_DEFAULT_BLOCK_SIZE;
	if (s->block_size < SQFS_MIN_BLOCK_SIZE || s->block_size > SQFS_MAX_BLOCK_SIZE ||
	    (s->block_size & (s->block_size - 1)))
		return alps_fail(err, ALPS_E_INVALID,
				 "squashfs block size %u is not a power of two from 4 KiB to 1 MiB",
				 s->block_size);
	s->threads = o->threads ? o->threads : default_threads();
	if (s->threads > SQUASH_MAX_THREADS)
		return alps_fail(err, ALPS_E_INVALID, "%u squashfs writer threads (at most %u)",
				 s->threads, SQUASH_MAX_THREADS);
	s->max_entries = o->max_entries ? o->max_entries : SQUASH_DEFAULT_MAX_ENTRIES;
	s->max_tar_bytes = o->max_tar_bytes ? o->max_tar_bytes : SQUASH_DEFAULT_MAX_TAR_BYTES;
	return 0;
}

static int compressor_create(const struct settings *s, sqfs_u16 flags, sqfs_compressor_t **out,
			     alps_error **err)
{
	sqfs_compressor_config_t cfg;
	if (s->comp_id == SQFS_COMP_LZ4 && s->level > 0)
		flags |= SQFS_COMP_FLAG_LZ4_HC;
	int ret = sqfs_compressor_config_init(&cfg, (SQFS_COMPRESSOR)s->comp_id, s->block_size, flags);
	if (ret == 0 && s->comp_id != SQFS_COMP_LZ4)
		cfg.level = (sqfs_u32)s->level;
	if (ret == 0)
		ret = sqfs_compressor_create(&cfg, out);
	if (ret != 0)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "creating the squashfs %s compressor: %s",
				 sqfs_compressor_name_from_id((SQFS_COMPRESSOR)s->comp_id),
				 sqfs_error_name(ret));
	return 0;
}

int squash_opts_check(const struct squash_opts *opts, alps_error **err)
{
	struct settings s;
	sqfs_compressor_t *cmp = NULL;
	if (resolve_opts(opts, &s, err) < 0 || compressor_create(&s, 0, &cmp, err) < 0)
		return -1;
	sqfs_destroy(cmp);
	return 0;
}

/* --- setting up the writers --- */

static int setup_super(struct squash *sq, alps_error **err)
{
	/* mtime 0: the same layer always gives the same file. */
	int ret = sqfs_super_init(&sq->super, sq->set.block_size, 0,
				  (SQFS_COMPRESSOR)sq->set.comp_id);
	if (ret == 0)
		ret = sqfs_super_write(&sq->super, &sq->out.base);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing the superblock");
	ret = sq->cmp->write_options(sq->cmp, &sq->out.base);
	if (ret < 0)
		return sqfs_fail(sq, err, ret, "writing the compressor options");
	if (ret > 0)
		sq->super.flags |= SQFS_FLAG_COMPRESSOR_OPTIONS;
	return 0;
}

static int setup_data(struct squash *sq, alps_error **err)
{
	sq->bw = must(sqfs_block_writer_create(&sq->out.base, SQFS_DEVBLK_SIZE, 0), "a block writer");
	sq->frag = must(sqfs_frag_table_create(0), "a fragment table");
	/* With file and uncmp, a fragment that hashes like an earlier one is
	 * compared byte for byte before it is shared. */
	sqfs_block_processor_desc_t desc = {
		.size = sizeof(desc),
		.max_block_size = sq->set.block_size,
		.num_workers = sq->set.threads,
		.max_backlog = 10 * sq->set.threads,
		.cmp = sq->cmp,
		.wr = sq->bw,
		.tbl = sq->frag,
		.file = &sq->out.base,
		.uncmp = sq->uncmp,
	};
	int ret = sqfs_block_processor_create_ex(&desc, &sq->proc);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "creating the block processor");
	return 0;
}

static int setup_meta(struct squash *sq)
{
	sq->ids = must(sqfs_id_table_create(0), "an id table");
	sq->xw = must(sqfs_xattr_writer_create(0), "an xattr writer");
	sq->im = must(sqfs_meta_writer_create(&sq->out.base, sq->cmp, 0), "an inode writer");
	/* Directory listings wait in memory: they follow the inode table. */
	sq->dm = must(sqfs_meta_writer_create(&sq->out.base, sq->cmp,
					      SQFS_META_WRITER_KEEP_IN_MEMORY),
		      "a directory writer");
	sq->dw = must(sqfs_dir_writer_create(sq->dm, 0), "a directory writer");
	return 0;
}

static void setup_tree(struct squash *sq)
{
	ht_init(&sq->ht);
	struct sq_inode *ino = inode_new(sq, S_IFDIR | 0755);
	sq->root = dentry_alloc("", 0, ino);
}

/* Decompression (inside the caller's stream) gets a thread of its own,
 * ahead of the tar reader: with enough cores for the compressors, the
 * reading thread (inflate, SHA-256, tar parsing) is what limits speed. */
static void setup_input(struct squash *sq)
{
	sq->src = sq->in;
	if (sq->set.threads < 2)
		return;
	alps_error *e = NULL;
	sq->ahead = stream_readahead(sq->in, 0, &e);
	if (sq->ahead)
		sq->src = sq->ahead;
	else
		log_warn("squash: reading without readahead: %s", e->msg);
	alps_error_free(e);
}

static int setup(struct squash *sq, alps_error **err)
{
	setup_input(sq);
	sq->rbuf = xmalloc(READ_BUF_SIZE);
	sq->sha = must(EVP_MD_CTX_new(), "a digest context");
	if (EVP_DigestInit_ex(sq->sha, EVP_sha256(), NULL) != 1)
		return alps_fail(err, ALPS_E_INTERNAL, "initialising SHA-256");
	setup_tree(sq);
	if (out_open(sq, err) < 0 ||
	    compressor_create(&sq->set, 0, &sq->cmp, err) < 0 ||
	    compressor_create(&sq->set, SQFS_COMP_FLAG_UNCOMPRESS, &sq->uncmp, err) < 0 ||
	    setup_super(sq, err) < 0 || setup_data(sq, err) < 0)
		return -1;
	return setup_meta(sq);
}

/* --- reading the tar --- */

static void report_progress(struct squash *sq)
{
	if (sq->progress)
		sq->progress(sq->progress_arg, stream_source_bytes(sq->src), sq->tar_bytes);
}

/* Every byte of the tar stream passes here once: hash, count, limit. */
static int account(struct squash *sq, const void *buf, size_t n, alps_error **err)
{
	if (EVP_DigestUpdate(sq->sha, buf, n) != 1)
		return alps_fail(err, ALPS_E_INTERNAL, "SHA-256 update failed");
	sq->tar_bytes += n;
	if (sq->tar_bytes > sq->set.max_tar_bytes ||
	    sq->hole_bytes > sq->set.max_tar_bytes - sq->tar_bytes)
		return alps_fail(err, ALPS_E_LIMIT, "layer is larger than %llu bytes uncompressed",
				 (unsigned long long)sq->set.max_tar_bytes);
	if (sq->tar_bytes >= sq->next_progress) {
		sq->next_progress = sq->tar_bytes + PROGRESS_EVERY;
		report_progress(sq);
	}
	return 0;
}

static la_ssize_t tar_read(struct archive *a, void *arg, const void **buf)
{
	struct squash *sq = arg;
	if (sq->read_err)
		return -1;
	ssize_t n = stream_read(sq->src, sq->rbuf, READ_BUF_SIZE, &sq->read_err);
	if (n > 0 && account(sq, sq->rbuf, (size_t)n, &sq->read_err) < 0)
		n = -1;
	if (n < 0) {
		archive_set_error(a, EIO, "%s", sq->read_err ? sq->read_err->msg : "read error");
		return -1;
	}
	*buf = sq->rbuf;
	return n;
}

/* A libarchive failure.  If it started in our read callback (the stream
 * failed, a limit was hit), that error is the one to report. */
static int archive_fail(struct squash *sq, alps_error **err, const char *fmt, ...)
	ALPS_PRINTF(3, 4);
static int archive_fail(struct squash *sq, alps_error **err, const char *fmt, ...)
{
	if (sq->read_err) {
		if (err && !*err)
			*err = steal_pointer(&sq->read_err);
		return -1;
	}
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *what = xvasprintf(fmt, ap);
	va_end(ap);
	const char *why = archive_error_string(sq->ar);
	return alps_fail(err, ALPS_E_INVALID, "%s: %s", what, why ? why : "unknown libarchive error");
}

/* Read what follows the end-of-archive marker: the diff_id covers the
 * whole stream, and the decompressor checks its trailer only at the end. */
static int drain(struct squash *sq, alps_error **err)
{
	for (;;) {
		ssize_t n = stream_read(sq->src, sq->rbuf, READ_BUF_SIZE, err);
		if (n <= 0)
			return (int)n;
		if (account(sq, sq->rbuf, (size_t)n, err) < 0)
			return -1;
	}
}

/* Normalise a tar path into out: leading '/', empty and '.' components
 * dropped, components joined by '/' ("" is the root).  NULL, or what is
 * wrong with it, to follow "entry '...' ". */
static const char *path_normalise(const char *raw, char out[PATH_MAX_BYTES + 1])
{
	size_t len = strlen(raw), o = 0;
	int depth = 0;
	bool dotdot = false;
	if (len == 0)
		return "has an empty name";
	if (len > PATH_MAX_BYTES)
		return "has a path longer than 4096 bytes";
	for (const char *p = raw; *p;) {
		while (*p == '/')
			p++;
		const char *c = p;
		while (*p && *p != '/')
			p++;
		size_t n = (size_t)(p - c);
		if (n == 0 || (n == 1 && c[0] == '.'))
			continue;
		if (n == 2 && c[0] == '.' && c[1] == '.') {
			if (--depth < 0)
				return "escapes the layer root";
			dotdot = true;
			continue;
		}
		if (n > NAME_MAX_BYTES)
			return "has a name longer than 255 bytes";
		depth++;
		if (o)
			out[o++] = '/';
		memcpy(out + o, c, n);
		o += n;
	}
	out[o] = '\0';
	/* "a/../b" stays inside, but nothing legitimate writes it, and
	 * refusing it keeps one meaning for every path. */
	return dotdot ? "has a '..' component" : NULL;
}

enum entry_kind { KIND_NORMAL, KIND_WHITEOUT, KIND_OPAQUE, KIND_SKIP };

/* What an entry is by its name (OCI image spec, "whiteouts"); NULL or
 * what is wrong with it.  *last is the last component. */
static const char *classify(const char *path, enum entry_kind *kind, const char **last)
{
	const char *slash = strrchr(path, '/');
	*last = slash ? slash + 1 : path;
	*kind = KIND_NORMAL;
	for (const char *c = path; c < *last; c = strchr(c, '/') + 1) {
		/* .wh..wh.* is AUFS bookkeeping (.wh..wh.plnk and its
		 * contents): no file of the image. */
		if (str_has_prefix(c, WH_META_PREFIX)) {
			*kind = KIND_SKIP;
			return NULL;
		}
		if (str_has_prefix(c, WH_PREFIX))
			return "is inside a whiteout";
	}
	if (strcmp(*last, WH_OPAQUE) == 0) {
		*kind = KIND_OPAQUE;
	} else if (str_has_prefix(*last, WH_META_PREFIX)) {
		*kind = KIND_SKIP;
	} else if (str_has_prefix(*last, WH_PREFIX)) {
		const char *name = *last + strlen(WH_PREFIX);
		if (!*name)
			return "is a whiteout without a name";
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			return "is a whiteout of '.' or '..'";
		*kind = KIND_WHITEOUT;
	}
	return NULL;
}

static struct sq_inode *implied_dir(struct squash *sq)
{
	return inode_new(sq, S_IFDIR | 0755);
}

/* A whiteout or opaque marker below a non-directory of this layer hides
 * nothing the non-directory does not hide already (umoci writes dir/.wh.x
 * after turning dir into a symlink): drop it.  The link is never followed. */
static int parent_not_dir(struct squash *sq, enum entry_kind kind, const char *slash,
			  alps_error **err)
{
	if (kind == KIND_WHITEOUT || kind == KIND_OPAQUE) {
		_cleanup_free_ char *esc = log_escape(sq->path, 256);
		log_debug("squash: dropping whiteout '%s' below a non-directory", esc);
		return 1;
	}
	return entry_fail(sq, err, ALPS_E_INVALID, "has a parent '%.*s' that is not a directory",
			  (int)(slash - sq->path), sq->path);
}

/* The directory holding the last component of sq->path, creating the
 * missing ones as implied directories (0755 root:root, mtime 0).  1: the
 * entry is to be dropped (parent_not_dir()). */
static int walk_parents(struct squash *sq, enum entry_kind kind, const char *last,
			struct sq_dentry **out, alps_error **err)
{
	struct sq_dentry *dir = sq->root;
	for (const char *c = sq->path; c < last;) {
		const char *slash = strchr(c, '/');
		size_t n = (size_t)(slash - c);
		struct sq_dentry *d = ht_lookup(&sq->ht, dir, c, n);
		bool opaque = false;
		if (d && d->inode->whiteout) {
			/* Deleted from below, re-created here: only this
			 * layer's content shows. */
			dentry_remove(sq, d);
			d = NULL;
			opaque = true;
		}
		if (!d) {
			if (dentry_add(sq, dir, c, n, implied_dir(sq), &d, err) < 0)
				return -1;
			d->inode->opaque = opaque;
		} else if (!S_ISDIR(d->inode->mode)) {
			return parent_not_dir(sq, kind, slash, err);
		}
		dir = d;
		c = slash + 1;
	}
	*out = dir;
	return 0;
}

/* A later directory entry for an existing directory updates its metadata
 * and keeps its children (tar semantics). */
static void dir_update(struct sq_inode *dst, struct sq_inode *src)
{
	dst->mode = src->mode;
	dst->uid = src->uid;
	dst->gid = src->gid;
	dst->mtime = src->mtime;
	for (size_t i = 0; i < dst->nxattrs; i++) {
		free(dst->xattrs[i].key);
		free(dst->xattrs[i].value);
	}
	free(dst->xattrs);
	dst->xattrs = steal_pointer(&src->xattrs);
	dst->nxattrs = src->nxattrs;
	src->nxattrs = 0;
}

/* Put ino at dir/name.  A later entry replaces an earlier one; whiteouts
 * only hide lower layers, so they never replace what this layer has. */
static int place(struct squash *sq, struct sq_dentry *dir, const char *name,
		 struct sq_inode *ino, alps_error **err)
{
	size_t len = strlen(name);
	struct sq_dentry *old = ht_lookup(&sq->ht, dir, name, len);
	if (old) {
		struct sq_inode *o = old->inode;
		if (o == ino)
			return 0;
		if (ino->whiteout) {
			if (S_ISDIR(o->mode))
				o->opaque = true;
			return 0;
		}
		if (S_ISDIR(o->mode) && S_ISDIR(ino->mode)) {
			dir_update(o, ino);
			return 0;
		}
		if (o->whiteout && S_ISDIR(ino->mode))
			ino->opaque = true;
		dentry_remove(sq, old);
	}
	return dentry_add(sq, dir, name, len, ino, NULL, err);
}

static bool xattr_kept(const char *key)
{
	/* overlayfs reads trusted.overlay.* on lower layers (opaque,
	 * redirect, metacopy...): from a layer they would change what the
	 * stack shows, so only the converter sets them. */
	if (str_has_prefix(key, "trusted.overlay."))
		return false;
	return (str_has_prefix(key, "user.") && key[5]) ||
	       (str_has_prefix(key, "trusted.") && key[8]) ||
	       (str_has_prefix(key, "security.") && key[9]);
}

static void xattr_set(struct sq_inode *ino, const char *key, const void *value, size_t size)
{
	for (size_t i = 0; i < ino->nxattrs; i++) {
		if (strcmp(ino->xattrs[i].key, key) == 0) {
			free(ino->xattrs[i].value);
			ino->xattrs[i].value = xmemdup(value, size);
			ino->xattrs[i].size = size;
			return;
		}
	}
	ino->xattrs = xreallocarray(ino->xattrs, ino->nxattrs + 1, sizeof(*ino->xattrs));
	ino->xattrs[ino->nxattrs++] = (struct sq_xattr){
		.key = xstrdup(key), .value = xmemdup(value, size), .size = size,
	};
}

/* Extended attributes from pax SCHILY.xattr / LIBARCHIVE.xattr records. */
static int entry_xattrs(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
			alps_error **err)
{
	const char *key;
	const void *value;
	size_t size;
	if (archive_entry_xattr_reset(e) > XATTRS_PER_ENTRY_MAX)
		return entry_fail(sq, err, ALPS_E_LIMIT, "has more than %d extended attributes",
				  XATTRS_PER_ENTRY_MAX);
	while (archive_entry_xattr_next(e, &key, &value, &size) == ARCHIVE_OK) {
		if (!xattr_kept(key)) {
			_cleanup_free_ char *k = log_escape(key, 64), *p = log_escape(sq->path, 256);
			log_debug("squash: dropping xattr '%s' of '%s'", k, p);
			continue;
		}
		if (strlen(key) > NAME_MAX_BYTES || size > XATTR_VALUE_MAX)
			return entry_fail(sq, err, ALPS_E_INVALID,
					  "has an extended attribute over Linux's size limits");
		xattr_set(ino, key, value ? value : "", value ? size : 0);
	}
	return 0;
}

static int entry_meta(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
		      alps_error **err)
{
	la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
	if (uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX)
		return entry_fail(sq, err, ALPS_E_INVALID, "has owner %lld:%lld, outside 0..%u",
				  (long long)uid, (long long)gid, UINT32_MAX);
	ino->uid = (uint32_t)uid;
	ino->gid = (uint32_t)gid;
	/* squashfs keeps unsigned 32-bit seconds: clamp rather than wrap. */
	time_t t = archive_entry_mtime(e);
	ino->mtime = t < 0 ? 0 : (uint64_t)t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
	ino->mode = (ino->mode & S_IFMT) | (archive_entry_perm(e) & 07777);
	return entry_xattrs(sq, e, ino, err);
}

static int feed(struct squash *sq, const void *buf, size_t len, alps_error **err)
{
	int ret = sqfs_block_processor_append(sq->proc, buf, len);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing file data");
	return 0;
}

/* Where a regular file is: logical bytes so far, and whole blocks of holes
 * recorded instead of fed (so the processor has pos - skipped * bs bytes). */
struct file_pos {
	uint64_t pos, skipped;
};

static int feed_zeros(struct squash *sq, uint64_t len, alps_error **err)
{
	while (len > 0) {
		size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
		if (feed(sq, zeros, n, err) < 0)
			return -1;
		len -= n;
	}
	return 0;
}

static void record_hole(struct sq_inode *ino, uint64_t index, uint64_t count)
{
	if (ino->nholes && ino->holes[ino->nholes - 1].index == index) {
		ino->holes[ino->nholes - 1].count += count;
		return;
	}
	ino->holes = xreallocarray(ino->holes, ino->nholes + 1, sizeof(*ino->holes));
	ino->holes[ino->nholes++] = (struct sq_hole){ index, count };
}

/* A hole of a sparse file.  The zeros up to the next block boundary and
 * after the last whole block go to the block processor (under two blocks);
 * the whole blocks between are only recorded and become sparse blocks of
 * the inode at the end (apply_holes()), so a few bytes of sparse map cost
 * no CPU per byte of hole.  Holes still count against the size limit: the
 * inode's block list grows with them. */
static int feed_hole(struct squash *sq, struct sq_inode *ino, struct file_pos *fp,
		     uint64_t len, alps_error **err)
{
	/* account() keeps tar_bytes + hole_bytes <= max_tar_bytes. */
	if (len > sq->set.max_tar_bytes - sq->tar_bytes - sq->hole_bytes)
		return entry_fail(sq, err, ALPS_E_LIMIT,
				  "expands the layer beyond %llu bytes (sparse holes included)",
				  (unsigned long long)sq->set.max_tar_bytes);
	sq->hole_bytes += len;
	uint64_t bs = sq->set.block_size;
	uint64_t head = (bs - fp->pos % bs) % bs;
	if (head > len)
		head = len;
	if (feed_zeros(sq, head, err) < 0)
		return -1;
	fp->pos += head;
	len -= head;
	uint64_t whole = len / bs;
	if (whole > 0) {
		/* pos is on a block boundary, so is what the processor has. */
		record_hole(ino, (fp->pos - fp->skipped * bs) / bs, whole);
		fp->skipped += whole;
		fp->pos += whole * bs;
		len -= whole * bs;
	}
	fp->pos += len;
	return feed_zeros(sq, len, err);
}

static int file_data(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
		     alps_error **err)
{
	int ret = sqfs_block_processor_begin_file(sq->proc, &ino->file, NULL, 0);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "starting a file");
	struct file_pos fp = { 0 };
	for (;;) {
		const void *buf;
		size_t size;
		la_int64_t off;
		int r = archive_read_data_block(sq->ar, &buf, &size, &off);
		if (r == ARCHIVE_EOF)
			break;
		/* ARCHIVE_RETRY (damaged data) ranks above ARCHIVE_WARN:
		 * only OK and WARN mean there is data. */
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			_cleanup_free_ char *esc = log_escape(sq->raw_path, 256);
			return archive_fail(sq, err, "entry '%s' cannot be read", esc);
		}
		if (off < 0 || (uint64_t)off < fp.pos)
			return entry_fail(sq, err, ALPS_E_INVALID, "has overlapping sparse data");
		if (feed_hole(sq, ino, &fp, (uint64_t)off - fp.pos, err) < 0 ||
		    feed(sq, buf, size, err) < 0)
			return -1;
		fp.pos += size;
	}
	la_int64_t size = archive_entry_size(e);
	if (archive_entry_size_is_set(e) && size > 0 && (uint64_t)size > fp.pos &&
	    feed_hole(sq, ino, &fp, (uint64_t)size - fp.pos, err) < 0)
		return -1;
	ret = sqfs_block_processor_end_file(sq->proc);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "finishing a file");
	sq->files++;
	return 0;
}

static int entry_symlink(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
			 alps_error **err)
{
	const char *target = archive_entry_symlink(e);
	if (!target || !*target)
		return entry_fail(sq, err, ALPS_E_INVALID, "is a symlink without a target");
	if (strlen(target) > SYMLINK_MAX_BYTES)
		return entry_fail(sq, err, ALPS_E_INVALID, "is a symlink with a target over %d bytes",
				  SYMLINK_MAX_BYTES);
	ino->target = xstrdup(target);
	return 0;
}

static int entry_device(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
			alps_error **err)
{
	unsigned long long major = (unsigned long long)archive_entry_rdevmajor(e);
	unsigned long long minor = (unsigned long long)archive_entry_rdevminor(e);
	/* squashfs stores the kernel's 32-bit encoding: 12-bit major,
	 * 20-bit minor. */
	if (major > 0xfff || minor > 0xfffff)
		return entry_fail(sq, err, ALPS_E_INVALID, "is a device %llu:%llu beyond 4095:1048575",
				  major, minor);
	ino->devno = (uint32_t)((minor & 0xff) | (major << 8) | ((minor & ~0xffull) << 12));
	return 0;
}

/* The content of a non-link entry into ino, by type. */
static int entry_content(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
			 alps_error **err)
{
	switch (ino->mode & S_IFMT) {
	case S_IFREG:
		return file_data(sq, e, ino, err);
	case S_IFLNK:
		return entry_symlink(sq, e, ino, err);
	case S_IFCHR:
	case S_IFBLK:
		return entry_device(sq, e, ino, err);
	case S_IFDIR:
	case S_IFIFO:
	case S_IFSOCK:
		return 0;
	}
	return entry_fail(sq, err, ALPS_E_UNSUPPORTED, "has an unsupported file type (0%o)",
			  (unsigned)(ino->mode & S_IFMT));
}

static int add_node(struct squash *sq, struct archive_entry *e, struct sq_dentry *dir,
		    const char *name, alps_error **err)
{
	struct sq_inode *ino = inode_new(sq, archive_entry_filetype(e));
	if (entry_meta(sq, e, ino, err) < 0 || entry_content(sq, e, ino, err) < 0)
		return -1;
	return place(sq, dir, name, ino, err);
}

static int add_whiteout(struct squash *sq, struct archive_entry *e, struct sq_dentry *dir,
			const char *name, alps_error **err)
{
	/* overlayfs's whiteout: a character device 0:0. */
	struct sq_inode *ino = inode_new(sq, S_IFCHR);
	ino->whiteout = true;
	la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
	ino->uid = uid >= 0 && uid <= UINT32_MAX ? (uint32_t)uid : 0;
	ino->gid = gid >= 0 && gid <= UINT32_MAX ? (uint32_t)gid : 0;
	time_t t = archive_entry_mtime(e);
	ino->mtime = t < 0 ? 0 : (uint64_t)t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
	return place(sq, dir, name + strlen(WH_PREFIX), ino, err);
}

/* The dentry at a normalised path, or NULL; never creates anything. */
static struct sq_dentry *lookup_path(struct squash *sq, const char *path)
{
	struct sq_dentry *d = sq->root;
	for (const char *c = path; d;) {
		const char *slash = strchr(c, '/');
		size_t n = slash ? (size_t)(slash - c) : strlen(c);
		if (!S_ISDIR(d->inode->mode))
			return NULL;
		d = ht_lookup(&sq->ht, d, c, n);
		if (!slash)
			break;
		c = slash + 1;
	}
	return d;
}

static int add_hardlink(struct squash *sq, const char *target_raw, struct sq_dentry *dir,
			const char *name, alps_error **err)
{
	char target[PATH_MAX_BYTES + 1];
	_cleanup_free_ char *esc = log_escape(target_raw, 256);
	const char *why = path_normalise(target_raw, target);
	if (why)
		return entry_fail(sq, err, ALPS_E_INVALID, "is a hard link to '%s', which %s", esc, why);
	struct sq_dentry *t = target[0] ? lookup_path(sq, target) : sq->root;
	if (!t || t->inode->whiteout)
		return entry_fail(sq, err, ALPS_E_INVALID,
				  "is a hard link to '%s', which is not in the layer before it", esc);
	if (S_ISDIR(t->inode->mode))
		return entry_fail(sq, err, ALPS_E_INVALID, "is a hard link to directory '%s'", esc);
	return place(sq, dir, name, t->inode, err);
}

/* "./" and the like: the root directory's own metadata. */
static int add_root(struct squash *sq, struct archive_entry *e, alps_error **err)
{
	if (archive_entry_hardlink(e) || archive_entry_filetype(e) != AE_IFDIR)
		return entry_fail(sq, err, ALPS_E_INVALID, "would replace the layer root with a non-directory");
	struct sq_inode *tmp = inode_new(sq, S_IFDIR);
	if (entry_meta(sq, e, tmp, err) < 0)
		return -1;
	dir_update(sq->root->inode, tmp);
	return 0;
}

static int add_entry(struct squash *sq, struct archive_entry *e, alps_error **err)
{
	sq->raw_path = archive_entry_pathname(e);
	if (!sq->raw_path)
		return entry_fail(sq, err, ALPS_E_INVALID, "has no name");
	const char *why = path_normalise(sq->raw_path, sq->path);
	if (why)
		return entry_fail(sq, err, ALPS_E_INVALID, "%s", why);
	if (!sq->path[0])
		return add_root(sq, e, err);
	enum entry_kind kind;
	const char *last;
	why = classify(sq->path, &kind, &last);
	if (why)
		return entry_fail(sq, err, ALPS_E_INVALID, "%s", why);
	if (kind == KIND_SKIP) {
		_cleanup_free_ char *esc = log_escape(sq->path, 256);
		log_debug("squash: skipping AUFS metadata '%s'", esc);
		return 0;
	}
	struct sq_dentry *dir = NULL;
	int r = walk_parents(sq, kind, last, &dir, err);
	if (r != 0)
		return r < 0 ? -1 : 0;
	if (kind == KIND_OPAQUE) {
		dir->inode->opaque = true;
		return 0;
	}
	if (kind == KIND_WHITEOUT)
		return add_whiteout(sq, e, dir, last, err);
	const char *link_target = archive_entry_hardlink(e);
	if (link_target)
		return add_hardlink(sq, link_target, dir, last, err);
	return add_node(sq, e, dir, last, err);
}

/* libarchive could not start: an empty stream is an empty layer (as Go's
 * tar reader, and so containerd, treat it); anything else is not a tar. */
static int open_failed(struct squash *sq, alps_error **err)
{
	if (sq->read_err)
		return archive_fail(sq, err, "reading the layer");
	if (sq->tar_bytes == 0)
		return 0;
	const char *why = archive_error_string(sq->ar);
	return alps_fail(err, ALPS_E_INVALID, "layer is not a tar archive: %s",
			 why ? why : "unrecognised data");
}

static int next_failed(struct squash *sq, alps_error **err)
{
	if (sq->entries == 0)
		return open_failed(sq, err);
	_cleanup_free_ char *esc = log_escape(sq->path, 256);
	return archive_fail(sq, err, "reading the layer after entry '%s'", esc);
}

static int out_failed(struct squash *sq, alps_error **err)
{
	return alps_fail_errnum(err, sq->out.errnum, "writing %s", sq->out_path);
}

static int read_entries(struct squash *sq, alps_error **err)
{
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(sq->ar, &e);
		if (r == ARCHIVE_EOF)
			return 0;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			/* An empty stream fails at the first header. */
			if (next_failed(sq, err) < 0)
				return -1;
			return 0;
		}
		if (r == ARCHIVE_WARN)
			log_debug("squash: libarchive: %s", archive_error_string(sq->ar));
		if (++sq->entries > sq->set.max_entries)
			return alps_fail(err, ALPS_E_LIMIT, "layer has more than %llu entries",
					 (unsigned long long)sq->set.max_entries);
		if (add_entry(sq, e, err) < 0)
			return -1;
		if (sq->out.broken)
			return out_failed(sq, err);
	}
}

static int read_layer(struct squash *sq, alps_error **err)
{
	sq->ar = archive_read_new();
	if (!sq->ar || archive_read_support_format_tar(sq->ar) != ARCHIVE_OK ||
	    archive_read_support_filter_none(sq->ar) != ARCHIVE_OK)
		return alps_fail(err, ALPS_E_INTERNAL, "setting up libarchive");
	if (archive_read_open(sq->ar, sq, NULL, tar_read, NULL) != ARCHIVE_OK) {
		if (open_failed(sq, err) < 0)
			return -1;
	} else if (read_entries(sq, err) < 0) {
		return -1;
	}
	return drain(sq, err);
}

/* --- writing the tree --- */

static int dentry_cmp(const void *a, const void *b)
{
	const struct sq_dentry *x = *(const struct sq_dentry *const *)a;
	const struct sq_dentry *y = *(const struct sq_dentry *const *)b;
	return strcmp(x->name, y->name);
}

/* squashfs lists a directory sorted by name (bytewise). */
static void sort_children(struct sq_dentry *d)
{
	size_t n = 0;
	for (struct sq_dentry *c = d->child; c; c = c->next)
		n++;
	d->sorted = xcalloc(n, sizeof(*d->sorted));
	d->nsorted = n;
	n = 0;
	for (struct sq_dentry *c = d->child; c; c = c->next)
		d->sorted[n++] = c;
	qsort(d->sorted, d->nsorted, sizeof(*d->sorted), dentry_cmp);
}

/* Number inodes breadth first, so a directory's children get consecutive
 * numbers and its listing needs few headers.  Hard links share a number. */
static int number_inodes(struct squash *sq, alps_error **err)
{
	size_t cap = 64, head = 0, tail = 0;
	struct sq_dentry **queue = xcalloc(cap, sizeof(*queue));
	uint32_t count = 1;
	sq->root->inode->ino = count;
	queue[tail++] = sq->root;
	while (head < tail) {
		struct sq_dentry *d = queue[head++];
		sort_children(d);
		for (size_t i = 0; i < d->nsorted; i++) {
			struct sq_inode *ino = d->sorted[i]->inode;
			if (!ino->ino && count == UINT32_MAX - 1) {
				free(queue);
				return alps_fail(err, ALPS_E_LIMIT, "layer has too many inodes for squashfs");
			}
			if (!ino->ino)
				ino->ino = ++count;
			if (!S_ISDIR(ino->mode))
				continue;
			if (tail == cap)
				queue = xreallocarray(queue, cap *= 2, sizeof(*queue));
			queue[tail++] = d->sorted[i];
		}
	}
	free(queue);
	sq->inode_count = count;
	return 0;
}

static int write_xattrs(struct squash *sq, const struct sq_inode *ino, uint32_t *idx,
			alps_error **err)
{
	*idx = NO_XATTRS;
	if (!ino->nxattrs && !ino->opaque)
		return 0;
	int ret = sqfs_xattr_writer_begin(sq->xw, 0);
	for (size_t i = 0; ret == 0 && i < ino->nxattrs; i++)
		ret = sqfs_xattr_writer_add(sq->xw, ino->xattrs[i].key, ino->xattrs[i].value,
					    ino->xattrs[i].size);
	if (ret == 0 && ino->opaque)
		ret = sqfs_xattr_writer_add(sq->xw, OVERLAY_OPAQUE_XATTR, "y", 1);
	if (ret == 0)
		ret = sqfs_xattr_writer_end(sq->xw, idx);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing extended attributes");
	return 0;
}

/* Fill the common fields of gen from ino and append it to the inode table. */
static int emit_inode(struct squash *sq, struct sq_inode *ino, sqfs_inode_generic_t *gen,
		      alps_error **err)
{
	gen->base.mode = (sqfs_u16)ino->mode;
	gen->base.mod_time = ino->mtime;
	gen->base.inode_number = ino->ino;
	int ret = sqfs_id_table_id_to_index(sq->ids, ino->uid, &gen->base.uid_idx);
	if (ret == 0)
		ret = sqfs_id_table_id_to_index(sq->ids, ino->gid, &gen->base.gid_idx);
	if (ret != 0)
		return alps_fail(err, ALPS_E_LIMIT,
				 "layer has more distinct owners than squashfs can store (65536)");
	sqfs_u64 block;
	sqfs_u32 offset;
	sqfs_meta_writer_get_position(sq->im, &block, &offset);
	ino->ref = (block << 16) | offset;
	ret = sqfs_meta_writer_write_inode(sq->im, gen);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing an inode");
	ino->written = true;
	return 0;
}

/* A generic inode for what is not a file or directory; caller frees. */
static sqfs_inode_generic_t *leaf_inode(const struct sq_inode *ino)
{
	size_t extra = S_ISLNK(ino->mode) ? strlen(ino->target) : 0;
	sqfs_inode_generic_t *gen = xzalloc(sizeof(*gen) + extra);
	switch (ino->mode & S_IFMT) {
	case S_IFLNK:
		gen->base.type = SQFS_INODE_SLINK;
		gen->data.slink.nlink = ino->nlink;
		gen->data.slink.target_size = (sqfs_u32)extra;
		gen->payload_bytes_available = gen->payload_bytes_used = (sqfs_u32)extra;
		memcpy(gen->extra, ino->target, extra);
		break;
	case S_IFCHR:
	case S_IFBLK:
		gen->base.type = S_ISCHR(ino->mode) ? SQFS_INODE_CDEV : SQFS_INODE_BDEV;
		gen->data.dev.nlink = ino->nlink;
		gen->data.dev.devno = ino->devno;
		break;
	default:
		gen->base.type = S_ISFIFO(ino->mode) ? SQFS_INODE_FIFO : SQFS_INODE_SOCKET;
		gen->data.ipc.nlink = ino->nlink;
		break;
	}
	return gen;
}

static int write_leaf(struct squash *sq, struct sq_inode *ino, alps_error **err)
{
	uint32_t xattr;
	if (write_xattrs(sq, ino, &xattr, err) < 0)
		return -1;
	sqfs_inode_generic_t *gen = S_ISREG(ino->mode) ? ino->file : leaf_inode(ino);
	if (xattr != NO_XATTRS)
		sqfs_inode_set_xattr_index(gen, xattr);
	/* Only extended file inodes have a link count; the basic ones
	 * mean 1.  Set after the xattr index, which may demote. */
	if (S_ISREG(ino->mode) && ino->nlink > 1) {
		sqfs_inode_make_extended(gen);
		gen->data.file_ext.nlink = ino->nlink;
	}
	int ret = emit_inode(sq, ino, gen, err);
	if (gen != ino->file)
		free(gen);
	return ret;
}

static int write_dir(struct squash *sq, struct sq_dentry *d, alps_error **err)
{
	uint32_t nsub = 0, xattr;
	int ret = sqfs_dir_writer_begin(sq->dw, 0);
	for (size_t i = 0; ret == 0 && i < d->nsorted; i++) {
		const struct sq_inode *c = d->sorted[i]->inode;
		nsub += S_ISDIR(c->mode);
		ret = sqfs_dir_writer_add_entry(sq->dw, d->sorted[i]->name, c->ino, c->ref,
						(sqfs_u16)c->mode);
	}
	if (ret == 0)
		ret = sqfs_dir_writer_end(sq->dw);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing a directory listing");
	if (write_xattrs(sq, d->inode, &xattr, err) < 0)
		return -1;
	/* The root's parent: one past the last inode, as mksquashfs does. */
	uint32_t parent = d->parent ? d->parent->inode->ino : sq->inode_count + 1;
	sqfs_inode_generic_t *gen = must(sqfs_dir_writer_create_inode(sq->dw, 2 + nsub, xattr, parent),
					 "a directory inode");
	if (gen->base.type == SQFS_INODE_DIR)
		gen->data.dir.nlink = 2 + nsub;
	else
		gen->data.dir_ext.nlink = 2 + nsub;
	ret = emit_inode(sq, d->inode, gen, err);
	sqfs_free(gen);
	return ret;
}

/* Children before their directory (post-order), without recursion. */
static int write_tree(struct squash *sq, alps_error **err)
{
	struct frame {
		struct sq_dentry *dir;
		size_t next;
	};
	size_t cap = 64, depth = 0;
	_cleanup_free_ struct frame *stack = xcalloc(cap, sizeof(*stack));
	stack[depth++] = (struct frame){ sq->root, 0 };
	while (depth > 0) {
		struct frame *f = &stack[depth - 1];
		if (f->next == f->dir->nsorted) {
			if (write_dir(sq, f->dir, err) < 0)
				return -1;
			depth--;
			continue;
		}
		struct sq_dentry *c = f->dir->sorted[f->next++];
		if (S_ISDIR(c->inode->mode)) {
			if (depth == cap)
				stack = xreallocarray(stack, cap *= 2, sizeof(*stack));
			stack[depth++] = (struct frame){ c, 0 };
		} else if (!c->inode->written && write_leaf(sq, c->inode, err) < 0) {
			return -1;
		}
	}
	return 0;
}

static int write_inodes_and_dirs(struct squash *sq, alps_error **err)
{
	sq->super.inode_table_start = sq->out.size;
	if (number_inodes(sq, err) < 0 || write_tree(sq, err) < 0)
		return -1;
	int ret = sqfs_meta_writer_flush(sq->im);
	if (ret == 0)
		ret = sqfs_meta_writer_flush(sq->dm);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing the inode table");
	sq->super.inode_count = sq->inode_count;
	sq->super.root_inode_ref = sq->root->inode->ref;
	sq->super.directory_table_start = sq->out.size;
	ret = sqfs_meta_write_write_to_file(sq->dm);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing the directory table");
	return 0;
}

static int write_tables(struct squash *sq, alps_error **err)
{
	int ret = sqfs_frag_table_write(sq->frag, &sq->out.base, &sq->super, sq->cmp);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing the fragment table");
	ret = sqfs_id_table_write(sq->ids, &sq->out.base, &sq->super, sq->cmp);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing the id table");
	ret = sqfs_xattr_writer_flush(sq->xw, &sq->out.base, &sq->super, sq->cmp);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing the xattr table");
	sq->super.bytes_used = sq->out.size;
	ret = sqfs_super_write(&sq->super, &sq->out.base);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing the superblock");
	/* Loop devices want whole 4 KiB blocks. */
	size_t pad = (size_t)(-sq->out.size % SQFS_DEVBLK_SIZE);
	if (pad && (ret = sq->out.base.write_at(&sq->out.base, sq->out.size, zeros, pad)) != 0)
		return sqfs_fail(sq, err, ret, "padding the image");
	return 0;
}

/* The recorded holes into ino's block list, as sparse blocks (size 0: no
 * data on disk, the kernel reads zeros), once the block processor is done
 * with the inode. */
static int apply_holes(struct squash *sq, struct sq_inode *ino, alps_error **err)
{
	sqfs_inode_generic_t *old = ino->file;
	size_t nold = sqfs_inode_get_file_block_count(old);
	uint64_t added = 0;
	for (size_t h = 0; h < ino->nholes; h++)
		added += ino->holes[h].count;
	/* libsquashfs keeps the block list's byte count in 32 bits. */
	if (added > (UINT32_MAX / sizeof(sqfs_u32)) - nold)
		return alps_fail(err, ALPS_E_LIMIT, "layer has a sparse file with more blocks than squashfs can list");
	size_t total = nold + (size_t)added;
	sqfs_inode_generic_t *gen = xzalloc(sizeof(*gen) + total * sizeof(sqfs_u32));
	memcpy(gen, old, sizeof(*gen));
	gen->payload_bytes_available = gen->payload_bytes_used = (sqfs_u32)(total * sizeof(sqfs_u32));
	size_t o = 0, h = 0;
	for (size_t i = 0; i <= nold; i++) {
		for (; h < ino->nholes && ino->holes[h].index == i; h++)
			for (uint64_t k = 0; k < ino->holes[h].count; k++)
				gen->extra[o++] = 0;
		if (i < nold)
			gen->extra[o++] = old->extra[i];
	}
	sqfs_u64 size = 0;
	uint64_t hole = added * sq->set.block_size;
	sqfs_inode_get_file_size(gen, &size);
	sqfs_inode_make_extended(gen);
	sqfs_inode_set_file_size(gen, size + hole);
	gen->data.file_ext.sparse += hole;
	sqfs_free(old);
	ino->file = gen;
	return 0;
}

static int finish(struct squash *sq, alps_error **err)
{
	int ret = sqfs_block_processor_finish(sq->proc);
	if (ret != 0)
		return sqfs_fail(sq, err, ret, "writing file data");
	for (struct sq_inode *ino = sq->inodes; ino; ino = ino->all_next)
		if (ino->nholes && apply_holes(sq, ino, err) < 0)
			return -1;
	if (write_inodes_and_dirs(sq, err) < 0 || write_tables(sq, err) < 0)
		return -1;
	if (sq->out.broken)
		return out_failed(sq, err);
	if (fsync(sq->out.fd) < 0)
		return alps_fail_errno(err, "fsync %s", sq->out_path);
	return 0;
}

static void fill_result(struct squash *sq, struct squash_result *res)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	EVP_DigestFinal_ex(sq->sha, md, &len);
	memset(res, 0, sizeof(*res));
	int o = snprintf(res->diff_id, sizeof(res->diff_id), "sha256:");
	for (unsigned i = 0; i < len && o + 2 < (int)sizeof(res->diff_id); i++, o += 2)
		snprintf(res->diff_id + o, sizeof(res->diff_id) - (size_t)o, "%02x", md[i]);
	res->entries = sq->entries;
	res->files = sq->files;
	res->bytes_in = stream_source_bytes(sq->src);
	res->tar_bytes = sq->tar_bytes;
	res->out_bytes = sq->out.size;
}

static void squash_free(struct squash *sq, bool failed)
{
	/* Stop the readahead thread: the caller's stream is the caller's
	 * again once squash_convert() returns.  After a failure the thread
	 * may be waiting for a stalled download: abort the input first. */
	if (sq->ahead && failed)
		stream_abort(sq->in);
	stream_close(sq->ahead);
	if (sq->ar)
		archive_read_free(sq->ar);
	/* The block processor first: its threads hold pointers into inodes.
	 * Blocks still queued in its thread pool are not freed by destroy
	 * (libsquashfs 1.2), so after a failure let them drain first. */
	if (sq->proc && failed)
		sqfs_block_processor_finish(sq->proc);
	sqfs_destroy(sq->proc);
	sqfs_destroy(sq->dw);
	sqfs_destroy(sq->dm);
	sqfs_destroy(sq->im);
	sqfs_destroy(sq->xw);
	sqfs_destroy(sq->ids);
	sqfs_destroy(sq->frag);
	sqfs_destroy(sq->bw);
	sqfs_destroy(sq->uncmp);
	sqfs_destroy(sq->cmp);
	tree_free(sq);
	EVP_MD_CTX_free(sq->sha);
	alps_error_free(sq->read_err);
	free(sq->rbuf);
	if (sq->created)
		close_keep_errno(sq->out.fd);
}

/* Compressor threads from the shared budget, if any: the layers converting
 * at once never have more than it holds (libsquashfs 1.2 starts one worker
 * even when asked for none, so each takes one at least).  With one,
 * setup_input() starts no readahead thread either.  Returns how many to
 * give back. */
static unsigned budget_take(const struct squash_opts *o, struct settings *s)
{
	if (!o || !o->budget)
		return 0;
	unsigned got = thread_budget_take(o->budget, s->threads);
	s->threads = got;
	return got;
}

int squash_convert(struct stream *tar, const char *out_path, const struct squash_opts *opts,
		   struct squash_result *res, alps_error **err)
{
	struct squash sq = { .in = tar, .out_path = out_path, .out.fd = -1 };
	if (resolve_opts(opts, &sq.set, err) < 0)
		return -1;
	unsigned granted = budget_take(opts, &sq.set);
	if (opts) {
		sq.progress = opts->progress;
		sq.progress_arg = opts->progress_arg;
	}
	int ret = -1;
	if (setup(&sq, err) == 0 && read_layer(&sq, err) == 0 && finish(&sq, err) == 0) {
		report_progress(&sq);
		fill_result(&sq, res);
		ret = 0;
	}
	/* A failed conversion leaves no file behind: it is ours (O_EXCL). */
	if (ret < 0 && sq.created && unlink(out_path) < 0)
		log_warn("squash: removing %s: %s", out_path, strerror(errno));
	squash_free(&sq, ret < 0);      /* the compressor threads end here */
	if (granted)
		thread_budget_give(opts->budget, granted);
	return ret;
}
