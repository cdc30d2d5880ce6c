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
 * so an entry replaced by a later duplicate only loses its dentry.
 *
 * The files: this one drives a conversion (options, the writers, the end);
 * squash_tar.c reads the tar into the tree of squash_tree.c, squash_write.c
 * writes that tree and the tables, squash_out.c is the output file. */
#include <config.h>

#include "daemon/squash/squash_int.h"
#include "daemon/server/work.h"

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
int sq_fail(struct squash *sq, alps_error **err, int ret, const char *what)
{
	if (ret == SQFS_ERROR_IO && sq->out.errnum)
		return alps_fail_errnum(err, sq->out.errnum, "%s: %s", what, sq->out_path);
	return alps_fail(err, ALPS_E_INTERNAL, "%s: libsquashfs: %s (%d)", what,
			 sqfs_error_name(ret), ret);
}

/* "entry '<path>' <what>", the path escaped: it comes from the layer. */
ALPS_PRINTF(4, 5)
int sq_entry_fail(struct squash *sq, alps_error **err, int code, const char *fmt, ...)
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
void *sq_must(void *p, const char *what)
{
	if (!p) {
		fprintf(stderr, "alps: out of memory creating %s\n", what);
		abort();
	}
	return p;
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

int sq_resolve_opts(const struct squash_opts *o, struct settings *s, alps_error **err)
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

int sq_compressor_create(const struct settings *s, sqfs_u16 flags, sqfs_compressor_t **out,
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
	if (sq_resolve_opts(opts, &s, err) < 0 || sq_compressor_create(&s, 0, &cmp, err) < 0)
		return -1;
	sqfs_destroy(cmp);
	return 0;
}

/* --- setting up the writers --- */

int sq_setup_super(struct squash *sq, alps_error **err)
{
	/* mtime 0: the same layer always gives the same file. */
	int ret = sqfs_super_init(&sq->super, sq->set.block_size, 0,
				  (SQFS_COMPRESSOR)sq->set.comp_id);
	if (ret == 0)
		ret = sqfs_super_write(&sq->super, &sq->out.base);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing the superblock");
	ret = sq->cmp->write_options(sq->cmp, &sq->out.base);
	if (ret < 0)
		return sq_fail(sq, err, ret, "writing the compressor options");
	if (ret > 0)
		sq->super.flags |= SQFS_FLAG_COMPRESSOR_OPTIONS;
	return 0;
}

void sq_writer_destroy(struct squash *sq, bool failed)
{
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
	sq_tree_free(sq);
}

int sq_start_processor(struct squash *sq, alps_error **err)
{
	sq->frag = sq_must(sqfs_frag_table_create(0), "a fragment table");
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
		return sq_fail(sq, err, ret, "creating the block processor");
	return 0;
}

static int setup_data(struct squash *sq, alps_error **err)
{
	sq->bw = sq_must(sqfs_block_writer_create(&sq->out.base, SQFS_DEVBLK_SIZE, 0), "a block writer");
	return sq_start_processor(sq, err);
}

int sq_setup_meta(struct squash *sq)
{
	sq->ids = sq_must(sqfs_id_table_create(0), "an id table");
	sq->xw = sq_must(sqfs_xattr_writer_create(0), "an xattr writer");
	sq->im = sq_must(sqfs_meta_writer_create(&sq->out.base, sq->cmp, 0), "an inode writer");
	/* Directory listings wait in memory: they follow the inode table. */
	sq->dm = sq_must(sqfs_meta_writer_create(&sq->out.base, sq->cmp,
					      SQFS_META_WRITER_KEEP_IN_MEMORY),
		      "a directory writer");
	sq->dw = sq_must(sqfs_dir_writer_create(sq->dm, 0), "a directory writer");
	return 0;
}

void sq_setup_tree(struct squash *sq)
{
	sq_ht_init(&sq->ht);
	struct sq_inode *ino = sq_inode_new(sq, S_IFDIR | 0755);
	sq->root = sq_dentry_alloc("", 0, ino);
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
	sq->sha = sq_must(EVP_MD_CTX_new(), "a digest context");
	if (EVP_DigestInit_ex(sq->sha, EVP_sha256(), NULL) != 1)
		return alps_fail(err, ALPS_E_INTERNAL, "initialising SHA-256");
	sq_setup_tree(sq);
	if (sq_out_open(sq, err) < 0 ||
	    sq_compressor_create(&sq->set, 0, &sq->cmp, err) < 0 ||
	    sq_compressor_create(&sq->set, SQFS_COMP_FLAG_UNCOMPRESS, &sq->uncmp, err) < 0 ||
	    sq_setup_super(sq, err) < 0 || setup_data(sq, err) < 0)
		return -1;
	return sq_setup_meta(sq);
}

static int finish(struct squash *sq, alps_error **err)
{
	int ret = sqfs_block_processor_finish(sq->proc);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing file data");
	for (struct sq_inode *ino = sq->inodes; ino; ino = ino->all_next)
		if (ino->nholes && sq_apply_holes(sq, ino, err) < 0)
			return -1;
	if (sq_write_inodes_and_dirs(sq, err) < 0 || sq_write_tables(sq, err) < 0)
		return -1;
	if (sq->out.broken)
		return sq_out_failed(sq, err);
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
	sq_writer_destroy(sq, failed);
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
	if (sq_resolve_opts(opts, &sq.set, err) < 0)
		return -1;
	unsigned granted = budget_take(opts, &sq.set);
	if (opts) {
		sq.progress = opts->progress;
		sq.progress_arg = opts->progress_arg;
	}
	int ret = -1;
	if (setup(&sq, err) == 0 && sq_read_layer(&sq, err) == 0 && finish(&sq, err) == 0) {
		sq_report_progress(&sq);
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
