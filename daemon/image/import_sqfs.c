/* import_sqfs.c: a user's squashfs (a plain file, or a SIF partition) as
 * one layer.  The kernel never mounts it: libsquashfs reads it (from the
 * fd the client passed, within the partition's bounds) on a thread of its
 * own that writes the tree as a tar stream, and the converter writes a new
 * squashfs from that stream, as it does for a registry's layers.  The tree
 * is checked on the way: names (no '/', '.', '..', none empty or over 255
 * bytes), depth, entry count; device nodes are refused (a user could
 * otherwise bring a device node the overlay would show), sockets dropped
 * (a tar cannot hold them).  Extended attributes are not carried. */
#include <config.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqfs/compressor.h>
#include <sqfs/data_reader.h>
#include <sqfs/dir_reader.h>
#include <sqfs/error.h>
#include <sqfs/id_table.h>
#include <sqfs/inode.h>
#include <sqfs/io.h>
#include <sqfs/super.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/image/import_int.h"
#include "daemon/image/manifest.h"
#include "daemon/image/pull.h"
#include "daemon/store/store.h"

#define PATH_MAX_BYTES 4096
#define CHAN_BYTES (4u << 20)
#define MT_TAR "application/vnd.oci.image.layer.v1.tar"

/* The partition as libsquashfs sees it: read-only, bounded. */
struct part_file {
	sqfs_file_t base;
	int fd;                 /* borrowed */
	uint64_t off, size;
};

static int part_read_at(sqfs_file_t *f, sqfs_u64 off, void *buf, size_t size)
{
	struct part_file *p = (struct part_file *)f;
	if (off > p->size || size > p->size - off)
		return SQFS_ERROR_OUT_OF_BOUNDS;
	uint8_t *b = buf;
	while (size > 0) {
		ssize_t n = pread(p->fd, b, size, (off_t)(p->off + off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return SQFS_ERROR_IO;
		b += n;
		off += (uint64_t)n;
		size -= (size_t)n;
	}
	return 0;
}

static int part_write_at(sqfs_file_t *f, sqfs_u64 off, const void *buf, size_t size)
{
	(void)f, (void)off, (void)buf, (void)size;
	return SQFS_ERROR_UNSUPPORTED;
}

static sqfs_u64 part_get_size(const sqfs_file_t *f)
{
	return ((const struct part_file *)f)->size;
}

static int part_truncate(sqfs_file_t *f, sqfs_u64 size)
{
	(void)f, (void)size;
	return SQFS_ERROR_UNSUPPORTED;
}

static void part_destroy(sqfs_object_t *obj)
{
	(void)obj;
}

/* The squashfs being read. */
struct rfs {
	struct part_file file;
	sqfs_compressor_t *cmp;
	sqfs_id_table_t *ids;
	sqfs_dir_reader_t *dir;
	sqfs_data_reader_t *data;
	sqfs_tree_node_t *root;
};

static void rfs_close(struct rfs *fs)
{
	sqfs_dir_tree_destroy(fs->root);
	sqfs_destroy(fs->data);
	sqfs_destroy(fs->dir);
	sqfs_destroy(fs->ids);
	sqfs_destroy(fs->cmp);
}

static int rfs_super(struct rfs *fs, uint64_t max_entries, sqfs_super_t *super, alps_error **err)
{
	int r = sqfs_super_read(super, &fs->file.base);
	if (r != 0)
		return alps_fail(err, ALPS_E_INVALID, "not a squashfs file system (superblock: %d)",
				 r);
	if (super->bytes_used > fs->file.size)
		return alps_fail(err, ALPS_E_INVALID, "the squashfs is truncated (%llu of %llu "
				 "bytes)", (unsigned long long)fs->file.size,
				 (unsigned long long)super->bytes_used);
	if (super->inode_count > max_entries)
		return alps_fail(err, ALPS_E_LIMIT, "the squashfs has %u inodes, over the limit of "
				 "%llu", super->inode_count, (unsigned long long)max_entries);
	return 0;
}

static int rfs_open(struct rfs *fs, uint64_t max_entries, alps_error **err)
{
	sqfs_super_t super;
	sqfs_compressor_config_t cfg;
	fs->file.base.base.destroy = part_destroy;
	fs->file.base.read_at = part_read_at;
	fs->file.base.write_at = part_write_at;
	fs->file.base.get_size = part_get_size;
	fs->file.base.truncate = part_truncate;
	if (rfs_super(fs, max_entries, &super, err) < 0)
		return -1;
	if (sqfs_compressor_config_init(&cfg, super.compression_id, super.block_size,
					SQFS_COMP_FLAG_UNCOMPRESS) != 0 ||
	    sqfs_compressor_create(&cfg, &fs->cmp) != 0)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "the squashfs's compressor (%u) is not "
				 "supported", (unsigned)super.compression_id);
	if ((super.flags & SQFS_FLAG_COMPRESSOR_OPTIONS) &&
	    fs->cmp->read_options(fs->cmp, &fs->file.base) != 0)
		return alps_fail(err, ALPS_E_INVALID, "the squashfs's compressor options are bad");
	fs->ids = sqfs_id_table_create(0);
	fs->dir = sqfs_dir_reader_create(&super, fs->cmp, &fs->file.base, 0);
	fs->data = sqfs_data_reader_create(&fs->file.base, super.block_size, fs->cmp, 0);
	if (!fs->ids || !fs->dir || !fs->data)
		return alps_fail(err, ALPS_E_INTERNAL, "out of memory");
	int r = sqfs_id_table_read(fs->ids, &fs->file.base, &super, fs->cmp);
	if (r == 0)
		r = sqfs_data_reader_load_fragment_table(fs->data, &super);
	if (r == 0)
		r = sqfs_dir_reader_get_full_hierarchy(fs->dir, fs->ids, NULL, 0, &fs->root);
	if (r != 0)
		return alps_fail(err, ALPS_E_INVALID, "the squashfs's tables cannot be read (%d): "
				 "damaged or truncated", r);
	return 0;
}

/* ---- the tar writer thread ---- */

struct link_seen {
	uint32_t ino;
	char *path;             /* owned */
};

struct tarw {
	struct rfs *fs;
	struct chanbuf *cb;     /* a reference of its own */
	struct archive *ar;
	struct archive_entry *e;
	uint64_t entries, max_entries;
	struct link_seen *links;        /* owned: files with more than one link, by inode */
	size_t nlinks, cap;
	bool gone;              /* the converter stopped reading */
	alps_error *err;        /* owned: why the tree was refused */
	char path[PATH_MAX_BYTES + 1];
};

static la_ssize_t tw_write(struct archive *a, void *arg, const void *buf, size_t len)
{
	struct tarw *t = arg;
	alps_error *e = NULL;
	(void)a;
	/* After a failure the rest is dropped, not failed: a failed write
	 * leaves libarchive fatal, with buffers it then never frees. */
	if (!t->gone && chanbuf_write(t->cb, buf, len, &e) < 0) {
		t->gone = true;
		alps_error_free(e);
	}
	return (la_ssize_t)len;
}

static bool name_ok(const char *n)
{
	size_t len = strlen(n);
	return len > 0 && len <= 255 && !strchr(n, '/') && strcmp(n, ".") != 0 &&
	       strcmp(n, "..") != 0;
}

static int tw_fail(struct tarw *t, alps_error **err, int code, const char *what)
{
	_cleanup_free_ char *esc = log_escape(t->path, 300);
	return alps_fail(err, code, "squashfs entry '%s': %s", esc, what);
}

static int tw_data(struct tarw *t, const sqfs_inode_generic_t *ino, uint64_t size,
		   alps_error **err)
{
	char buf[1 << 16];
	uint64_t off = 0;
	while (off < size && !t->gone) {
		sqfs_s32 n = sqfs_data_reader_read(t->fs->data, ino, off, buf, sizeof(buf));
		if (n <= 0)
			return tw_fail(t, err, ALPS_E_INVALID, "its data cannot be read (damaged)");
		if (archive_write_data(t->ar, buf, (size_t)n) < 0)
			return tw_fail(t, err, ALPS_E_INTERNAL, archive_error_string(t->ar));
		off += (uint64_t)n;
	}
	return 0;
}

static void links_grow(struct tarw *t)
{
	size_t cap = t->cap ? t->cap * 2 : 1024;
	struct link_seen *v = xcalloc(cap, sizeof(*v));
	for (size_t i = 0; i < t->cap; i++) {
		if (!t->links[i].path)
			continue;
		size_t j = t->links[i].ino * 2654435761u & (cap - 1);
		while (v[j].path)
			j = (j + 1) & (cap - 1);
		v[j] = t->links[i];
	}
	free(t->links);
	t->links = v;
	t->cap = cap;
}

/* A regular file seen before under another name: a hard link to it.
 * Inode numbers in an open-addressed table: a squashfs may hold millions
 * of links. */
static const char *tw_link_of(struct tarw *t, const sqfs_inode_generic_t *ino)
{
	if (ino->base.type != SQFS_INODE_EXT_FILE || ino->data.file_ext.nlink < 2)
		return NULL;
	if (2 * (t->nlinks + 1) > t->cap)
		links_grow(t);
	uint32_t n = ino->base.inode_number;
	size_t j = n * 2654435761u & (t->cap - 1);
	for (; t->links[j].path; j = (j + 1) & (t->cap - 1))
		if (t->links[j].ino == n)
			return t->links[j].path;
	t->links[j] = (struct link_seen){ n, xstrdup(t->path) };
	t->nlinks++;
	return NULL;
}

static int tw_symlink(struct tarw *t, const sqfs_inode_generic_t *ino, alps_error **err)
{
	size_t len = ino->base.type == SQFS_INODE_EXT_SLINK ? ino->data.slink_ext.target_size
							     : ino->data.slink.target_size;
	if (len == 0 || len > ino->payload_bytes_used || len > 4095)
		return tw_fail(t, err, ALPS_E_INVALID, "a malformed symbolic link");
	_cleanup_free_ char *target = xstrndup((const char *)ino->extra, len);
	archive_entry_set_symlink(t->e, target);
	return 0;
}

/* Fill t->e for node n (t->path set); *data: a regular file's size to copy. */
static int tw_entry(struct tarw *t, const sqfs_tree_node_t *n, uint64_t *data, alps_error **err)
{
	const sqfs_inode_generic_t *ino = n->inode;
	mode_t mode = ino->base.mode;
	*data = 0;
	archive_entry_clear(t->e);
	archive_entry_set_pathname(t->e, t->path);
	archive_entry_set_mode(t->e, mode);
	archive_entry_set_uid(t->e, n->uid);
	archive_entry_set_gid(t->e, n->gid);
	archive_entry_set_mtime(t->e, ino->base.mod_time, 0);
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return tw_fail(t, err, ALPS_E_PERMISSION, "a device node: refused in an import");
	if (S_ISLNK(mode))
		return tw_symlink(t, ino, err);
	if (!S_ISREG(mode))
		return 0;
	const char *first = tw_link_of(t, ino);
	if (first) {
		archive_entry_set_hardlink(t->e, first);
		archive_entry_set_size(t->e, 0);
		return 0;
	}
	sqfs_u64 size = 0;
	sqfs_inode_get_file_size(ino, &size);
	archive_entry_set_size(t->e, (la_int64_t)size);
	*data = size;
	return 0;
}

static int tw_dir(struct tarw *t, const sqfs_tree_node_t *dir, size_t plen, int depth,
		  alps_error **err);

static int tw_node(struct tarw *t, const sqfs_tree_node_t *n, size_t plen, int depth,
		   alps_error **err)
{
	const char *name = (const char *)n->name;
	size_t len = strlen(name);
	if (plen + !!plen + len > PATH_MAX_BYTES)
		return tw_fail(t, err, ALPS_E_LIMIT, "a path over 4096 bytes below it");
	snprintf(t->path + plen, sizeof(t->path) - plen, "%s%s", plen ? "/" : "", name);
	size_t nlen = plen + !!plen + len;
	if (!name_ok(name))
		return tw_fail(t, err, ALPS_E_INVALID, "a name with '/', or '.', '..', empty or "
			       "over 255 bytes");
	if (++t->entries > t->max_entries)
		return tw_fail(t, err, ALPS_E_LIMIT, "over the limit of entries");
	if (S_ISSOCK(n->inode->base.mode))
		return 0;
	uint64_t data;
	if (tw_entry(t, n, &data, err) < 0)
		return -1;
	if (archive_write_header(t->ar, t->e) < ARCHIVE_WARN)
		return tw_fail(t, err, ALPS_E_INTERNAL, archive_error_string(t->ar));
	if (data && tw_data(t, n->inode, data, err) < 0)
		return -1;
	return S_ISDIR(n->inode->base.mode) ? tw_dir(t, n, nlen, depth + 1, err) : 0;
}

static int tw_dir(struct tarw *t, const sqfs_tree_node_t *dir, size_t plen, int depth,
		  alps_error **err)
{
	if (depth > IMPORT_MAX_DEPTH)
		return tw_fail(t, err, ALPS_E_LIMIT, "directories nested deeper than 256");
	for (const sqfs_tree_node_t *n = dir->children; n && !t->gone; n = n->next)
		if (tw_node(t, n, plen, depth, err) < 0)
			return -1;
	t->path[plen] = '\0';
	return 0;
}

static void *tw_main(void *arg)
{
	struct tarw *t = arg;
	alps_error *err = NULL;
	t->ar = archive_write_new();
	t->e = archive_entry_new();
	int r = archive_write_set_format_pax_restricted(t->ar) == ARCHIVE_OK &&
			archive_write_open(t->ar, t, NULL, tw_write, NULL) == ARCHIVE_OK
		? tw_dir(t, t->fs->root, 0, 0, &err)
		: alps_fail(&err, ALPS_E_INTERNAL, "tar writer: %s", archive_error_string(t->ar));
	if (archive_write_close(t->ar) != ARCHIVE_OK && r == 0)
		r = alps_fail(&err, ALPS_E_INTERNAL, "tar writer: %s", archive_error_string(t->ar));
	archive_entry_free(t->e);
	archive_write_free(t->ar);
	if (r < 0)
		alps_fail(&t->err, err->code, "%s", err->msg);
	chanbuf_close(t->cb, err);
	return NULL;
}

/* ---- the layer and its image ---- */

/* The tree of fs as a tar into the converter. */
static int stream_tree(struct imp *im, struct rfs *fs, char **digest, alps_error **err)
{
	struct tarw t = { .fs = fs, .cb = chanbuf_new(CHAN_BYTES) };
	t.max_entries = im->rq->squash.max_entries ? im->rq->squash.max_entries
						   : SQUASH_DEFAULT_MAX_ENTRIES;
	struct stream *s = chanbuf_stream(t.cb);        /* the stream's own reference */
	pthread_t th;
	if (pthread_create(&th, NULL, tw_main, &t) != 0) {
		stream_close(s);
		chanbuf_unref(t.cb);
		return alps_fail(err, ALPS_E_INTERNAL, "cannot start a thread");
	}
	/* The stream is the tar: its digest is the layer's and its diff_id. */
	int r = imp_layer_from_tar(im, s, LAYER_COMPRESSION_NONE, MT_TAR, NULL, NULL, digest,
				   NULL, err);
	pthread_join(th, NULL);
	chanbuf_unref(t.cb);
	if (t.err) {
		/* The tree's refusal is the cause; the converter saw a short tar. */
		if (r == 0) {
			/* import.c drops it (it is in im->committed). */
			free(*digest);
			*digest = NULL;
		}
		alps_error_free(*err);
		*err = t.err;
		r = -1;
	}
	for (size_t i = 0; i < t.cap; i++)
		free(t.links[i].path);
	free(t.links);
	return r;
}

static void make_config(struct imp *im, const char *arch, const char *diff_id)
{
	const char *a = arch && *arch ? arch : NULL;
	struct platform host = { 0 };
	alps_error *e = NULL;
	if (!a && manifest_platform_host(&host, &e) == 0)
		a = host.architecture;
	alps_error_free(e);
	json_t *c = json_pack("{s:s, s:s, s:{s:[s]}, s:{s:s, s:[s]}}", "architecture",
			      a ? a : "amd64", "os", "linux", "config", "Env",
			      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			      "rootfs", "type", "layers", "diff_ids", diff_id);
	im->platform = xasprintf("linux/%s", a ? a : "amd64");
	im->config_json = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(c);
	manifest_platform_free(&host);
}

int imp_squashfs(struct imp *im, uint64_t off, uint64_t size, const char *arch, alps_error **err)
{
	struct rfs fs = { .file = { .fd = im->fd, .off = off, .size = size } };
	uint64_t max = im->rq->squash.max_entries ? im->rq->squash.max_entries
						  : SQUASH_DEFAULT_MAX_ENTRIES;
	char *digest = NULL;
	atomic_store(&im->rq->progress->phase, PULL_LAYERS);
	atomic_store(&im->rq->progress->total, 0);      /* tar bytes: not known ahead */
	int r = rfs_open(&fs, max, err);
	if (r == 0)
		r = stream_tree(im, &fs, &digest, err);
	rfs_close(&fs);
	if (r < 0)
		return alps_error_prefix(err, "%s", im->format);
	im->layers = xcalloc(1, sizeof(*im->layers));
	im->layers[im->nlayers++] = digest;
	make_config(im, arch, digest);
	const char *mt[] = { MT_TAR };
	struct store_layer *l = NULL;
	uint64_t sz = 0;
	alps_error *e = NULL;
	if (store_layer_get(im->rq->store, digest, &l, &e) == 0)
		sz = l->compressed_size;
	store_layer_free(l);
	alps_error_free(e);
	return imp_make_manifest(im, mt, &sz, err);
}
