/* flatten.c: an image's layers into one squashfs file (see flatten.h).
 *
 * The plan of flatten_layers():
 *  1. open every layer with libsquashfs's readers (its whole directory
 *     tree in memory) and set up the output's writers (squash.c's);
 *  2. merge the trees, bottom first (flatten_tree.c), into the output tree
 *     of squash_tree.c, noting each regular file's source inode;
 *  3. write the data of the files the merged tree still names, in the
 *     order of their layer and data, so that every layer is read forward:
 *     data blocks copied as they are through the block processor (so they
 *     keep their place in its ordered output), or decompressed and fed to
 *     it like any file;
 *  4. write the tree and the tables as the converter does (squash_write.c).
 *
 * Copied blocks go to the block processor as manual submissions, flagged
 * compressed and not to be compressed again; the block writer they go
 * through is wrapped, so that the location of a copied file's first block
 * (after deduplication) lands in its inode. */
#include <config.h>

#include <stdatomic.h>

#include "daemon/squash/flatten_int.h"

#define SIZE_MASK ((1u << 24) - 1)
#define UNCOMPRESSED_BIT (1u << 24)

/* --- reading a layer --- */

static int in_read_at(sqfs_file_t *f, sqfs_u64 off, void *buf, size_t size)
{
	struct fl_in *in = (struct fl_in *)f;
	if (off > in->size || size > in->size - off)
		return SQFS_ERROR_OUT_OF_BOUNDS;
	uint8_t *p = buf;
	while (size > 0) {
		ssize_t n = pread(in->fd, p, size, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return SQFS_ERROR_IO;
		p += n;
		off += (uint64_t)n;
		size -= (size_t)n;
	}
	return 0;
}

static int in_write_at(sqfs_file_t *f, sqfs_u64 off, const void *buf, size_t size)
{
	(void)f, (void)off, (void)buf, (void)size;
	return SQFS_ERROR_IO;
}

static sqfs_u64 in_get_size(const sqfs_file_t *f)
{
	return ((const struct fl_in *)f)->size;
}

static int in_truncate(sqfs_file_t *f, sqfs_u64 size)
{
	(void)f, (void)size;
	return SQFS_ERROR_IO;
}

static void in_destroy(sqfs_object_t *o)
{
	(void)o;        /* the fd is the layer's */
}

static int layer_file(struct fl_layer *L, alps_error **err)
{
	L->in.fd = open(L->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (L->in.fd < 0 || fstat(L->in.fd, &st) < 0)
		return alps_fail_errno(err, "opening layer %s", L->path);
	if (!S_ISREG(st.st_mode))
		return alps_fail(err, ALPS_E_INTEGRITY, "layer %s is not a regular file", L->path);
	L->in.size = (uint64_t)st.st_size;
	L->in.base.base.destroy = in_destroy;
	L->in.base.read_at = in_read_at;
	L->in.base.write_at = in_write_at;
	L->in.base.get_size = in_get_size;
	L->in.base.truncate = in_truncate;
	return 0;
}

static int layer_bad(const struct fl_layer *L, alps_error **err, const char *what, int ret)
{
	return alps_fail(err, ALPS_E_INTEGRITY, "layer %s: %s (libsquashfs %d)", L->path, what, ret);
}

static int layer_open(struct fl_layer *L, alps_error **err)
{
	if (layer_file(L, err) < 0)
		return -1;
	sqfs_file_t *f = &L->in.base;
	sqfs_compressor_config_t cfg;
	int ret = sqfs_super_read(&L->super, f);
	if (ret != 0)
		return layer_bad(L, err, "not a squashfs file", ret);
	ret = sqfs_compressor_config_init(&cfg, (SQFS_COMPRESSOR)L->super.compression_id,
					  L->super.block_size, SQFS_COMP_FLAG_UNCOMPRESS);
	if (ret == 0)
		ret = sqfs_compressor_create(&cfg, &L->cmp);
	if (ret != 0)
		return layer_bad(L, err, "its compressor is not supported", ret);
	if ((L->super.flags & SQFS_FLAG_COMPRESSOR_OPTIONS) &&
	    (ret = L->cmp->read_options(L->cmp, f)) != 0)
		return layer_bad(L, err, "bad compressor options", ret);
	L->ids = sq_must(sqfs_id_table_create(0), "an id table");
	L->dir = sq_must(sqfs_dir_reader_create(&L->super, L->cmp, f, 0), "a directory reader");
	L->data = sq_must(sqfs_data_reader_create(f, L->super.block_size, L->cmp, 0), "a data reader");
	L->xr = sq_must(sqfs_xattr_reader_create(0), "an xattr reader");
	if ((ret = sqfs_id_table_read(L->ids, f, &L->super, L->cmp)) != 0 ||
	    (ret = sqfs_data_reader_load_fragment_table(L->data, &L->super)) != 0 ||
	    (ret = sqfs_xattr_reader_load(L->xr, &L->super, f, L->cmp)) != 0 ||
	    (ret = sqfs_dir_reader_get_full_hierarchy(L->dir, L->ids, NULL, 0, &L->root)) != 0)
		return layer_bad(L, err, "cannot read its tables", ret);
	return 0;
}

static void layer_close(struct fl_layer *L)
{
	sqfs_dir_tree_destroy(L->root);
	sqfs_destroy(L->xr);
	sqfs_destroy(L->data);
	sqfs_destroy(L->dir);
	sqfs_destroy(L->ids);
	sqfs_destroy(L->cmp);
	if (L->in.fd >= 0)
		close(L->in.fd);
}

/* --- the output --- */

int flatten_check_output(int fd, alps_error **err)
{
	struct stat st;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fstat(fd, &st) < 0)
		return alps_fail_errno(err, "the output file");
	if (!S_ISREG(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "the output is not a regular file");
	if (st.st_size != 0)
		return alps_fail(err, ALPS_E_INVALID, "the output file is not empty");
	if ((fl & O_ACCMODE) != O_RDWR || (fl & O_APPEND))
		return alps_fail(err, ALPS_E_INVALID,
				 "the output file must be open for reading and writing, not appending");
	return 0;
}

/* The block writer, wrapped: a copied file's final first-block location
 * into its inode (user is its struct fl_file). */
struct fl_writer {
	sqfs_block_writer_t base;
	sqfs_block_writer_t *inner;     /* owned */
};

static int fw_write(sqfs_block_writer_t *b, void *user, sqfs_u32 size, sqfs_u32 sum,
		    sqfs_u32 flags, const sqfs_u8 *data, sqfs_u64 *loc)
{
	struct fl_writer *w = (struct fl_writer *)b;
	int ret = w->inner->write_data_block(w->inner, user, size, sum, flags, data, loc);
	if (ret == 0 && user && (flags & SQFS_BLK_LAST_BLOCK))
		sqfs_inode_set_file_block_start(((struct fl_file *)user)->ino->file, *loc);
	return ret;
}

static sqfs_u64 fw_count(const sqfs_block_writer_t *b)
{
	const struct fl_writer *w = (const struct fl_writer *)b;
	return w->inner->get_block_count(w->inner);
}

static void fw_destroy(sqfs_object_t *o)
{
	sqfs_destroy(((struct fl_writer *)o)->inner);
	free(o);
}

static int setup_data(struct squash *sq, alps_error **err)
{
	struct fl_writer *w = xzalloc(sizeof(*w));
	w->base.base.destroy = fw_destroy;
	w->base.write_data_block = fw_write;
	w->base.get_block_count = fw_count;
	w->inner = sq_must(sqfs_block_writer_create(&sq->out.base, SQFS_DEVBLK_SIZE, 0),
			   "a block writer");
	sq->bw = &w->base;
	return sq_start_processor(sq, err);
}

/* The output's settings: the bottom layer's compressor (or the one asked
 * for) and block size. */
static int out_settings(struct flatten *fl, alps_error **err)
{
	const sqfs_super_t *s = &fl->layers[0].super;
	struct squash_opts so = {
		.compressor = fl->opts->compressor,
		.block_size = s->block_size,
		.threads = fl->opts->threads,
	};
	if (!so.compressor)
		so.compressor = sqfs_compressor_name_from_id((SQFS_COMPRESSOR)s->compression_id);
	if (!so.compressor)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "layer %s: unknown compressor %u",
				 fl->layers[0].path, (unsigned)s->compression_id);
	return sq_resolve_opts(&so, &fl->sq.set, err);
}

static int out_setup(struct flatten *fl, int fd, alps_error **err)
{
	struct squash *sq = &fl->sq;
	sq->out_path = "the output file";
	sq->set.max_entries = SQUASH_DEFAULT_MAX_ENTRIES;
	sq_setup_tree(sq);
	sq_out_adopt(sq, fd);
	if (sq_compressor_create(&sq->set, 0, &sq->cmp, err) < 0 ||
	    sq_compressor_create(&sq->set, SQFS_COMP_FLAG_UNCOMPRESS, &sq->uncmp, err) < 0 ||
	    sq_setup_super(sq, err) < 0 || setup_data(sq, err) < 0)
		return -1;
	return sq_setup_meta(sq);
}

/* --- file data --- */

static void progress(struct flatten *fl, uint64_t bytes)
{
	fl->done += bytes;
	if (fl->opts->progress && fl->done >= fl->next_progress) {
		fl->opts->progress(fl->opts->progress_arg, fl->done, fl->total);
		fl->next_progress = fl->done + PROGRESS_EVERY;
	}
}

/* The copied file's inode: the source's block list, no fragment yet. */
static sqfs_inode_generic_t *copy_inode(const sqfs_inode_generic_t *src, size_t count)
{
	sqfs_inode_generic_t *dst = xzalloc(sizeof(*dst) + count * sizeof(sqfs_u32));
	sqfs_u64 size = 0;
	dst->base.type = SQFS_INODE_FILE;
	dst->payload_bytes_available = dst->payload_bytes_used = (sqfs_u32)(count * sizeof(sqfs_u32));
	memcpy(dst->extra, src->extra, count * sizeof(sqfs_u32));
	sqfs_inode_get_file_size(src, &size);
	sqfs_inode_set_file_size(dst, size);
	sqfs_inode_set_frag_location(dst, FL_NO_FRAGMENT, FL_NO_FRAGMENT);
	if (src->base.type == SQFS_INODE_EXT_FILE && src->data.file_ext.sparse) {
		sqfs_inode_make_extended(dst);
		dst->data.file_ext.sparse = src->data.file_ext.sparse;
	}
	return dst;
}

static int copy_blocks(struct flatten *fl, struct fl_file *ff, size_t count, alps_error **err)
{
	struct fl_layer *L = &fl->layers[ff->layer];
	sqfs_u64 off = 0;
	sqfs_inode_get_file_block_start(ff->src, &off);
	for (size_t i = 0; i < count; i++) {
		sqfs_u32 word = ff->src->extra[i], n = word & SIZE_MASK;
		sqfs_u32 flags = SQFS_BLK_DONT_COMPRESS | SQFS_BLK_IGNORE_SPARSE |
				 (word & UNCOMPRESSED_BIT ? 0 : SQFS_BLK_IS_COMPRESSED) |
				 (i == 0 ? SQFS_BLK_FIRST_BLOCK : 0) |
				 (i + 1 == count ? SQFS_BLK_LAST_BLOCK : 0);
		if (n > fl->sq.set.block_size)
			return layer_bad(L, err, "a data block larger than its block size",
					 SQFS_ERROR_CORRUPTED);
		int ret = n ? L->in.base.read_at(&L->in.base, off, fl->buf, n) : 0;
		if (ret != 0)
			return layer_bad(L, err, "cannot read a data block", ret);
		off += n;
		ret = sqfs_block_processor_submit_block(fl->sq.proc, ff, flags, fl->buf, n);
		if (ret != 0)
			return sq_fail(&fl->sq, err, ret, "writing file data");
	}
	fl->copied += count;
	return 0;
}

/* The tail packed in the layer's fragment block: into the output's. */
static int copy_tail(struct flatten *fl, struct fl_file *ff, alps_error **err)
{
	struct fl_layer *L = &fl->layers[ff->layer];
	size_t size = 0;
	sqfs_u8 *data = NULL;
	int ret = sqfs_data_reader_get_fragment(L->data, ff->src, &size, &data);
	if (ret != 0)
		return layer_bad(L, err, "cannot read a fragment", ret);
	ret = sqfs_block_processor_begin_file(fl->sq.proc, &ff->tail, NULL, SQFS_BLK_IGNORE_SPARSE);
	if (ret == 0)
		ret = sqfs_block_processor_append(fl->sq.proc, data, size);
	if (ret == 0)
		ret = sqfs_block_processor_end_file(fl->sq.proc);
	sqfs_free(data);
	return ret != 0 ? sq_fail(&fl->sq, err, ret, "writing file data") : 0;
}

static int copy_file(struct flatten *fl, struct fl_file *ff, alps_error **err)
{
	size_t count = sqfs_inode_get_file_block_count(ff->src);
	sqfs_u32 frag = FL_NO_FRAGMENT, frag_off = 0;
	sqfs_inode_get_frag_location(ff->src, &frag, &frag_off);
	ff->ino->file = copy_inode(ff->src, count);
	if (copy_blocks(fl, ff, count, err) < 0)
		return -1;
	return frag != FL_NO_FRAGMENT ? copy_tail(fl, ff, err) : 0;
}

static int recompress_file(struct flatten *fl, struct fl_file *ff, alps_error **err)
{
	struct fl_layer *L = &fl->layers[ff->layer];
	sqfs_u64 size = 0, off = 0;
	sqfs_inode_get_file_size(ff->src, &size);
	int ret = sqfs_block_processor_begin_file(fl->sq.proc, &ff->ino->file, NULL, 0);
	while (ret == 0 && off < size) {
		sqfs_s32 n = sqfs_data_reader_read(L->data, ff->src, off, fl->buf,
						   fl->sq.set.block_size);
		if (n <= 0)
			return layer_bad(L, err, "cannot read file data", n ? n : SQFS_ERROR_CORRUPTED);
		ret = sqfs_block_processor_append(fl->sq.proc, fl->buf, (size_t)n);
		off += (sqfs_u64)n;
	}
	if (ret == 0)
		ret = sqfs_block_processor_end_file(fl->sq.proc);
	if (ret != 0)
		return sq_fail(&fl->sq, err, ret, "writing file data");
	fl->recompressed += (size + fl->sq.set.block_size - 1) / fl->sq.set.block_size;
	return 0;
}

static int file_order(const void *a, const void *b)
{
	const struct fl_file *x = a, *y = b;
	sqfs_u64 sx = 0, sy = 0;
	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	sqfs_inode_get_file_block_start(x->src, &sx);
	sqfs_inode_get_file_block_start(y->src, &sy);
	return sx < sy ? -1 : sx > sy;
}

/* Files still named in the tree (a replaced one has no link left). */
static void keep_named_files(struct flatten *fl)
{
	size_t n = 0;
	for (size_t i = 0; i < fl->nfiles; i++) {
		if (!fl->files[i].ino->nlink)
			continue;
		sqfs_u64 size = 0;
		sqfs_inode_get_file_size(fl->files[i].src, &size);
		fl->total += size;
		fl->files[n++] = fl->files[i];
	}
	fl->nfiles = n;
	qsort(fl->files, fl->nfiles, sizeof(*fl->files), file_order);
}

static int write_files(struct flatten *fl, alps_error **err)
{
	keep_named_files(fl);
	for (size_t i = 0; i < fl->nfiles; i++) {
		struct fl_file *ff = &fl->files[i];
		if (fl->opts->cancel && atomic_load(fl->opts->cancel))
			return alps_fail(err, ALPS_E_CANCELLED, "export cancelled");
		int r = fl->layers[ff->layer].copy ? copy_file(fl, ff, err)
						   : recompress_file(fl, ff, err);
		if (r < 0)
			return -1;
		sqfs_u64 size = 0;
		sqfs_inode_get_file_size(ff->src, &size);
		progress(fl, size);
	}
	return 0;
}

/* Once the processor is done: each copied tail's fragment location. */
static void place_tails(struct flatten *fl)
{
	for (size_t i = 0; i < fl->nfiles; i++) {
		struct fl_file *ff = &fl->files[i];
		sqfs_u32 idx, off;
		if (!ff->tail)
			continue;
		sqfs_inode_get_frag_location(ff->tail, &idx, &off);
		sqfs_inode_set_frag_location(ff->ino->file, idx, off);
	}
}

/* --- the whole --- */

static int finish(struct flatten *fl, alps_error **err)
{
	struct squash *sq = &fl->sq;
	int ret = sqfs_block_processor_finish(sq->proc);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing file data");
	place_tails(fl);
	if (sq_write_inodes_and_dirs(sq, err) < 0 || sq_write_tables(sq, err) < 0)
		return -1;
	if (sq->out.broken)
		return sq_out_failed(sq, err);
	if (fsync(sq->out.fd) < 0)
		return alps_fail_errno(err, "fsync of the output file");
	return 0;
}

static void fill_result(struct flatten *fl, struct flatten_result *res)
{
	memset(res, 0, sizeof(*res));
	res->entries = fl->sq.ht.count;
	res->files = fl->nfiles;
	res->file_bytes = fl->total;
	res->blocks_copied = fl->copied;
	res->blocks_recompressed = fl->recompressed;
	res->out_bytes = fl->sq.out.size;
	res->block_size = fl->sq.set.block_size;
	snprintf(res->compressor, sizeof(res->compressor), "%s",
		 sqfs_compressor_name_from_id((SQFS_COMPRESSOR)fl->sq.set.comp_id));
}

static void flatten_free(struct flatten *fl, bool failed)
{
	sq_writer_destroy(&fl->sq, failed);
	for (size_t i = 0; i < fl->nfiles; i++)
		sqfs_free(fl->files[i].tail);
	free(fl->files);
	free(fl->links.slots);
	for (size_t i = 0; i < fl->nlayers; i++)
		layer_close(&fl->layers[i]);
	free(fl->layers);
	free(fl->buf);
}

static int open_layers(struct flatten *fl, const char *const *paths, alps_error **err)
{
	for (size_t i = 0; i < fl->nlayers; i++) {
		fl->layers[i].path = paths[i];
		fl->layers[i].in.fd = -1;
	}
	for (size_t i = 0; i < fl->nlayers; i++)
		if (layer_open(&fl->layers[i], err) < 0)
			return -1;
	return 0;
}

static int run(struct flatten *fl, const char *const *paths, int fd, alps_error **err)
{
	if (open_layers(fl, paths, err) < 0 || out_settings(fl, err) < 0)
		return -1;
	if (fl->opts->before_write && fl->opts->before_write(fl->opts->before_write_arg, err) < 0)
		return -1;
	for (size_t i = 0; i < fl->nlayers; i++) {
		const sqfs_super_t *s = &fl->layers[i].super;
		fl->layers[i].copy = !fl->opts->recompress &&
				     s->compression_id == fl->sq.set.comp_id &&
				     s->block_size == fl->sq.set.block_size;
	}
	fl->buf = xmalloc(fl->sq.set.block_size);
	if (out_setup(fl, fd, err) < 0)
		return -1;
	for (size_t i = 0; i < fl->nlayers; i++)
		if (fl_merge_layer(fl, i, err) < 0)
			return -1;
	return write_files(fl, err) < 0 ? -1 : finish(fl, err);
}

int flatten_layers(const char *const *layers, size_t n, int out_fd,
		   const struct flatten_opts *opts, struct flatten_result *res, alps_error **err)
{
	static const struct flatten_opts none;
	if (n == 0)
		return alps_fail(err, ALPS_E_INVALID, "an image without layers");
	if (flatten_check_output(out_fd, err) < 0)
		return -1;
	struct flatten fl = { .nlayers = n, .opts = opts ? opts : &none };
	fl.layers = xcalloc(n, sizeof(*fl.layers));
	unsigned granted = 0;
	if (fl.opts->budget) {
		unsigned want = fl.opts->threads ? fl.opts->threads : 8;
		granted = thread_budget_take(fl.opts->budget, want);
	}
	struct flatten_opts o = *fl.opts;
	if (granted)
		o.threads = granted;
	fl.opts = &o;
	int ret = run(&fl, layers, out_fd, err);
	if (ret == 0) {
		if (o.progress)
			o.progress(o.progress_arg, fl.done, fl.total);
		fill_result(&fl, res);
	}
	flatten_free(&fl, ret < 0);
	if (granted)
		thread_budget_give(o.budget, granted);
	return ret;
}
