/* test_squash.c: layer tar -> squashfs conversion.
 *
 * Tarballs are written here byte by byte (ustar headers, pax records), so a
 * test can say exactly what a hostile layer contains.  Results are read
 * back twice: with libsquashfs's reader (every inode field, xattrs, data)
 * and, as an independent oracle, with squashfs-tools' unsquashfs (listing
 * and file contents) when it is installed.  As root, one test mounts two
 * converted layers as an overlay and looks at what the kernel shows. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <sqfs/compressor.h>
#include <sqfs/data_reader.h>
#include <sqfs/dir_reader.h>
#include <sqfs/error.h>
#include <sqfs/id_table.h>
#include <sqfs/inode.h>
#include <sqfs/io.h>
#include <sqfs/super.h>
#include <sqfs/xattr.h>
#include <sqfs/xattr_reader.h>
#include <zstd.h>

#include "common/error.h"
#include "common/util.h"
#include "daemon/squash/squash.h"
#include "daemon/image/stream.h"

#define T0 1609459200       /* 2021-01-01 00:00:00 UTC */

static char tmpdir[64];
static int out_seq;
static bool have_unsquashfs;

/* --- a growing byte buffer --- */

struct buf {
	uint8_t *data;
	size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 4096;
		b->data = xrealloc(b->data, b->cap);
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void buf_zeros(struct buf *b, size_t n)
{
	while (n > 0) {
		static const uint8_t z[512];
		size_t k = n < sizeof(z) ? n : sizeof(z);
		buf_add(b, z, k);
		n -= k;
	}
}

/* --- writing tarballs by hand --- */

struct kv {
	const char *key;
	const char *val;
	size_t len;                 /* 0: strlen(val) */
};

struct tent {
	const char *name;
	char type;                  /* ustar typeflag; 0 means '0' */
	unsigned mode;              /* 0 means 0644 (0755 for directories) */
	unsigned uid, gid;
	long long mtime;            /* 0 means T0 */
	const void *data;
	size_t size;                /* data bytes; header size unless hsize */
	size_t hsize;               /* header size field when it differs */
	const char *link;
	unsigned major, minor;
	const struct kv *pax;       /* extra pax records, up to key == NULL */
	const struct kv *xattrs;    /* SCHILY.xattr.<key> records, up to key == NULL */
};

static void octal(char *field, size_t width, unsigned long long v)
{
	char tmp[32];
	snprintf(tmp, sizeof(tmp), "%0*llo", (int)width - 1, v);
	memcpy(field, tmp, width - 1);
}

static void pax_record(struct buf *recs, const char *key, const void *val, size_t len)
{
	size_t body = 1 + strlen(key) + 1 + len + 1;    /* " key=val\n" */
	size_t total = body + 1;
	while (snprintf(NULL, 0, "%zu", total) + body != total)
		total++;
	char head[32];
	snprintf(head, sizeof(head), "%zu ", total);
	buf_add(recs, head, strlen(head));
	buf_add(recs, key, strlen(key));
	buf_add(recs, "=", 1);
	buf_add(recs, val, len);
	buf_add(recs, "\n", 1);
}

static void ustar_header(struct buf *tb, const char *name, char type, unsigned mode,
			 const struct tent *e, size_t size, const char *link)
{
	char h[512];
	memset(h, 0, sizeof(h));
	strncpy(h, name, 99);
	octal(h + 100, 8, mode);
	octal(h + 108, 8, e->uid);
	octal(h + 116, 8, e->gid);
	octal(h + 124, 12, size);
	octal(h + 136, 12, (unsigned long long)(e->mtime ? e->mtime : T0));
	memset(h + 148, ' ', 8);
	h[156] = type;
	if (link)
		strncpy(h + 157, link, 99);
	memcpy(h + 257, "ustar\0" "00", 8);
	octal(h + 329, 8, e->major);
	octal(h + 337, 8, e->minor);
	unsigned sum = 0;
	for (size_t i = 0; i < sizeof(h); i++)
		sum += (unsigned char)h[i];
	snprintf(h + 148, 8, "%06o", sum);
	buf_add(tb, h, sizeof(h));
}

static void tar_pad(struct buf *tb)
{
	buf_zeros(tb, (512 - tb->len % 512) % 512);
}

static void tar_add(struct buf *tb, const struct tent *e)
{
	char type = e->type ? e->type : '0';
	unsigned mode = e->mode ? e->mode : type == '5' ? 0755 : 0644;
	struct buf recs = { 0 };
	if (strlen(e->name) > 99)
		pax_record(&recs, "path", e->name, strlen(e->name));
	if (e->link && strlen(e->link) > 99)
		pax_record(&recs, "linkpath", e->link, strlen(e->link));
	for (const struct kv *p = e->pax; p && p->key; p++)
		pax_record(&recs, p->key, p->val, p->len ? p->len : strlen(p->val));
	for (const struct kv *x = e->xattrs; x && x->key; x++) {
		char key[300];
		snprintf(key, sizeof(key), "SCHILY.xattr.%s", x->key);
		pax_record(&recs, key, x->val, x->len ? x->len : strlen(x->val));
	}
	if (recs.len) {
		ustar_header(tb, "PaxHeaders/x", 'x', 0644, e, recs.len, NULL);
		buf_add(tb, recs.data, recs.len);
		tar_pad(tb);
		free(recs.data);
	}
	ustar_header(tb, e->name, type, mode, e, e->hsize ? e->hsize : e->size, e->link);
	buf_add(tb, e->data, e->size);
	tar_pad(tb);
}

static void tar_end(struct buf *tb)
{
	buf_zeros(tb, 1024);
}

#define FILE_ENTRY(n, content) \
	(&(struct tent){ .name = (n), .data = (content), .size = strlen(content) })

/* --- compressing (with other encoders than the ones under test) --- */

static la_ssize_t buf_write_cb(struct archive *a, void *arg, const void *p, size_t n)
{
	(void)a;
	buf_add(arg, p, n);
	return (la_ssize_t)n;
}

static struct buf gzip_of(const struct buf *in)
{
	struct buf out = { 0 };
	struct archive *a = archive_write_new();
	archive_write_set_format_raw(a);
	archive_write_add_filter_gzip(a);
	archive_write_set_bytes_in_last_block(a, 1);
	assert_int_equal(archive_write_open(a, &out, NULL, buf_write_cb, NULL), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_pathname(e, "layer");
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(a, in->data, in->len), (la_ssize_t)in->len);
	archive_entry_free(e);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	return out;
}

static struct buf zstd_of(const struct buf *in)
{
	struct buf out = { 0 };
	out.cap = ZSTD_compressBound(in->len);
	out.data = xmalloc(out.cap);
	out.len = ZSTD_compress(out.data, out.cap, in->data, in->len, 3);
	assert_false(ZSTD_isError(out.len));
	return out;
}

static void sha256_id(const void *data, size_t len, char out[72])
{
	unsigned char md[32];
	unsigned int n = 0;
	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	strcpy(out, "sha256:");
	for (unsigned i = 0; i < n; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

/* --- converting --- */

static char *next_out(void)
{
	return xasprintf("%s/out-%d.sqfs", tmpdir, ++out_seq);
}

static int convert_c(const struct buf *layer, enum layer_compression c, const char *out,
		     const struct squash_opts *o, struct squash_result *res, alps_error **err)
{
	struct stream *s = stream_decompress(stream_from_memory(layer->data, layer->len), c, err);
	assert_non_null(s);
	int rc = squash_convert(s, out, o, res, err);
	stream_close(s);
	return rc;
}

/* Convert a plain tar that must succeed; returns the output path. */
static char *convert_ok(const struct buf *tar, const struct squash_opts *o, struct squash_result *res)
{
	char *out = next_out();
	alps_error *err = NULL;
	struct squash_result tmp;
	int rc = convert_c(tar, LAYER_COMPRESSION_NONE, out, o, res ? res : &tmp, &err);
	if (rc < 0)
		fail_msg("conversion failed: %s", err->msg);
	return out;
}

/* Convert a plain tar that must fail with code and a message containing
 * msg; the output must not exist afterwards. */
static void convert_fails(const struct buf *tar, const struct squash_opts *o, int code,
			  const char *msg)
{
	_cleanup_free_ char *out = next_out();
	alps_error *err = NULL;
	struct squash_result res;
	if (convert_c(tar, LAYER_COMPRESSION_NONE, out, o, &res, &err) == 0)
		fail_msg("conversion succeeded, expected '%s'", msg);
	if (err->code != code || !strstr(err->msg, msg))
		fail_msg("expected code %d with '%s', got %d: %s", code, msg, err->code, err->msg);
	assert_int_equal(access(out, F_OK), -1);
	alps_error_free(err);
}

static void fails_with_entry(const struct tent *e, int code, const char *msg)
{
	struct buf tb = { 0 };
	tar_add(&tb, e);
	tar_end(&tb);
	convert_fails(&tb, NULL, code, msg);
	free(tb.data);
}

/* --- reading images back with libsquashfs --- */

struct img {
	sqfs_file_t *file;
	sqfs_super_t super;
	sqfs_compressor_t *cmp;
	sqfs_id_table_t *ids;
	sqfs_dir_reader_t *dr;
	sqfs_data_reader_t *data;
	sqfs_xattr_reader_t *xr;
	sqfs_inode_generic_t *root;
	char *path;
	char *listing;              /* unsquashfs -lln, whitespace squeezed */
	bool oracle;                /* check with unsquashfs too */
};

struct node {
	unsigned type, perm, uid, gid, mtime, nlink, ino;
	unsigned major, minor;
	uint64_t size;
	char target[4100];
};

static char *run_capture(const char *cmd, size_t *len)
{
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	struct buf b = { 0 };
	char tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), p)) > 0)
		buf_add(&b, tmp, n);
	assert_int_equal(pclose(p), 0);
	buf_add(&b, "", 1);
	if (len)
		*len = b.len - 1;
	return (char *)b.data;
}

static char *squeeze(char *s)
{
	char *o = s;
	for (char *p = s; *p; p++) {
		if (*p == ' ' && (o == s || o[-1] == ' ' || o[-1] == '\n'))
			continue;
		*o++ = *p;
	}
	*o = '\0';
	return s;
}

/* oracle: also list with unsquashfs (when installed). */
static struct img *img_open_ex(const char *path, bool oracle)
{
	struct img *im = xzalloc(sizeof(*im));
	im->path = xstrdup(path);
	im->file = sqfs_open_file(path, SQFS_FILE_OPEN_READ_ONLY);
	assert_non_null(im->file);
	assert_int_equal(sqfs_super_read(&im->super, im->file), 0);
	sqfs_compressor_config_t cfg;
	assert_int_equal(sqfs_compressor_config_init(&cfg, im->super.compression_id,
						     im->super.block_size,
						     SQFS_COMP_FLAG_UNCOMPRESS), 0);
	assert_int_equal(sqfs_compressor_create(&cfg, &im->cmp), 0);
	if (im->super.flags & SQFS_FLAG_COMPRESSOR_OPTIONS)
		assert_true(im->cmp->read_options(im->cmp, im->file) >= 0);
	im->ids = sqfs_id_table_create(0);
	assert_int_equal(sqfs_id_table_read(im->ids, im->file, &im->super, im->cmp), 0);
	im->dr = sqfs_dir_reader_create(&im->super, im->cmp, im->file, 0);
	assert_non_null(im->dr);
	im->data = sqfs_data_reader_create(im->file, im->super.block_size, im->cmp, 0);
	assert_int_equal(sqfs_data_reader_load_fragment_table(im->data, &im->super), 0);
	im->xr = sqfs_xattr_reader_create(0);
	assert_int_equal(sqfs_xattr_reader_load(im->xr, &im->super, im->file, im->cmp), 0);
	assert_int_equal(sqfs_dir_reader_get_root_inode(im->dr, &im->root), 0);
	im->oracle = oracle && have_unsquashfs;
	if (im->oracle) {
		_cleanup_free_ char *cmd = xasprintf("TZ=UTC unsquashfs -lln -d R '%s'", path);
		im->listing = squeeze(run_capture(cmd, NULL));
	}
	return im;
}

static struct img *img_open(const char *path)
{
	return img_open_ex(path, true);
}

static void img_close(struct img *im)
{
	sqfs_free(im->root);
	sqfs_destroy(im->xr);
	sqfs_destroy(im->data);
	sqfs_destroy(im->dr);
	sqfs_destroy(im->ids);
	sqfs_destroy(im->cmp);
	sqfs_destroy(im->file);
	free(im->listing);
	free(im->path);
	free(im);
}

static sqfs_inode_generic_t *img_find(struct img *im, const char *path)
{
	sqfs_inode_generic_t *ino = NULL;
	if (sqfs_dir_reader_find_by_path(im->dr, im->root, path, &ino) != 0)
		return NULL;
	return ino;
}

static unsigned inode_nlink(const sqfs_inode_generic_t *g)
{
	switch (g->base.type) {
	case SQFS_INODE_DIR: return g->data.dir.nlink;
	case SQFS_INODE_EXT_DIR: return g->data.dir_ext.nlink;
	case SQFS_INODE_FILE: return 1;
	case SQFS_INODE_EXT_FILE: return g->data.file_ext.nlink;
	case SQFS_INODE_SLINK: return g->data.slink.nlink;
	case SQFS_INODE_EXT_SLINK: return g->data.slink_ext.nlink;
	case SQFS_INODE_BDEV: case SQFS_INODE_CDEV: return g->data.dev.nlink;
	case SQFS_INODE_EXT_BDEV: case SQFS_INODE_EXT_CDEV: return g->data.dev_ext.nlink;
	case SQFS_INODE_FIFO: case SQFS_INODE_SOCKET: return g->data.ipc.nlink;
	default: return g->data.ipc_ext.nlink;
	}
}

static bool img_stat(struct img *im, const char *path, struct node *n)
{
	sqfs_inode_generic_t *g = img_find(im, path);
	if (!g)
		return false;
	memset(n, 0, sizeof(*n));
	n->type = g->base.mode & S_IFMT;
	n->perm = g->base.mode & 07777;
	n->mtime = g->base.mod_time;
	n->ino = g->base.inode_number;
	n->nlink = inode_nlink(g);
	sqfs_u32 id;
	assert_int_equal(sqfs_id_table_index_to_id(im->ids, g->base.uid_idx, &id), 0);
	n->uid = id;
	assert_int_equal(sqfs_id_table_index_to_id(im->ids, g->base.gid_idx, &id), 0);
	n->gid = id;
	if (S_ISREG(n->type))
		sqfs_inode_get_file_size(g, &n->size);
	if (S_ISCHR(n->type) || S_ISBLK(n->type)) {
		sqfs_u32 dev = g->base.type == SQFS_INODE_CDEV || g->base.type == SQFS_INODE_BDEV ?
				       g->data.dev.devno : g->data.dev_ext.devno;
		n->major = (dev >> 8) & 0xfff;
		n->minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
	}
	if (S_ISLNK(n->type)) {
		size_t len = g->data.slink.target_size;
		assert_true(len < sizeof(n->target));
		memcpy(n->target, g->extra, len);
	}
	sqfs_free(g);
	return true;
}

static void expect_node(struct img *im, const char *path, unsigned type, unsigned perm,
			unsigned uid, unsigned gid)
{
	struct node n;
	if (!img_stat(im, path, &n))
		fail_msg("'%s' missing from the image", path);
	if (n.type != type || n.perm != perm || n.uid != uid || n.gid != gid)
		fail_msg("'%s': type 0%o perm 0%o %u:%u, expected 0%o 0%o %u:%u", path, n.type,
			 n.perm, n.uid, n.gid, type, perm, uid, gid);
}

static void expect_absent(struct img *im, const char *path)
{
	sqfs_inode_generic_t *g = img_find(im, path);
	if (g)
		fail_msg("'%s' should not be in the image", path);
}

static uint8_t *img_read(struct img *im, const char *path, size_t *len)
{
	sqfs_inode_generic_t *g = img_find(im, path);
	assert_non_null(g);
	sqfs_u64 size;
	assert_int_equal(sqfs_inode_get_file_size(g, &size), 0);
	uint8_t *out = xmalloc(size + 1);
	if (size)
		assert_int_equal(sqfs_data_reader_read(im->data, g, 0, out, (sqfs_u32)size),
				 (sqfs_s32)size);
	sqfs_free(g);
	*len = size;
	return out;
}

/* Content through both readers. */
static void expect_content(struct img *im, const char *path, const void *want, size_t len)
{
	size_t got_len;
	_cleanup_free_ uint8_t *got = img_read(im, path, &got_len);
	assert_int_equal(got_len, len);
	assert_memory_equal(got, want, len);
	if (!im->oracle)
		return;
	_cleanup_free_ char *cmd = xasprintf("unsquashfs -cat '%s' '%s'", im->path, path);
	size_t cat_len;
	_cleanup_free_ char *cat = run_capture(cmd, &cat_len);
	assert_int_equal(cat_len, len);
	assert_memory_equal(cat, want, len);
}

/* The value of xattr key on path (caller frees), or NULL. */
static char *img_xattr(struct img *im, const char *path, const char *key, size_t *len)
{
	sqfs_inode_generic_t *g = img_find(im, path);
	assert_non_null(g);
	sqfs_u32 idx;
	assert_int_equal(sqfs_inode_get_xattr_index(g, &idx), 0);
	sqfs_free(g);
	if (idx == 0xFFFFFFFF)
		return NULL;
	sqfs_xattr_id_t desc;
	assert_int_equal(sqfs_xattr_reader_get_desc(im->xr, idx, &desc), 0);
	assert_int_equal(sqfs_xattr_reader_seek_kv(im->xr, &desc), 0);
	char *found = NULL;
	for (sqfs_u32 i = 0; i < desc.count; i++) {
		sqfs_xattr_entry_t *k;
		sqfs_xattr_value_t *v;
		assert_int_equal(sqfs_xattr_reader_read_key(im->xr, &k), 0);
		assert_int_equal(sqfs_xattr_reader_read_value(im->xr, k, &v), 0);
		/* libsquashfs 1.2 returns the whole key, prefix included. */
		if (strcmp((const char *)k->key, key) == 0) {
			found = xmemdup(v->value, v->size + 1);
			found[v->size] = '\0';
			*len = v->size;
		}
		sqfs_free(k);
		sqfs_free(v);
	}
	return found;
}

static unsigned img_xattr_count(struct img *im, const char *path)
{
	sqfs_inode_generic_t *g = img_find(im, path);
	assert_non_null(g);
	sqfs_u32 idx;
	sqfs_inode_get_xattr_index(g, &idx);
	sqfs_free(g);
	if (idx == 0xFFFFFFFF)
		return 0;
	sqfs_xattr_id_t desc;
	assert_int_equal(sqfs_xattr_reader_get_desc(im->xr, idx, &desc), 0);
	return desc.count;
}

static void expect_xattr(struct img *im, const char *path, const char *key, const void *val,
			 size_t len)
{
	size_t got_len = 0;
	_cleanup_free_ char *got = img_xattr(im, path, key, &got_len);
	if (!got)
		fail_msg("'%s' has no xattr %s", path, key);
	assert_int_equal(got_len, len);
	assert_memory_equal(got, val, len);
}

/* A line of unsquashfs -lln (whitespace squeezed), the independent view. */
static void expect_listed(struct img *im, const char *line)
{
	if (!im->listing)
		return;
	_cleanup_free_ char *want = xasprintf("\n%s\n", line);
	if (!strstr(im->listing, want))
		fail_msg("unsquashfs does not list '%s'; it lists:\n%s", line, im->listing);
}

static bool is_whiteout(struct img *im, const char *path)
{
	struct node n;
	return img_stat(im, path, &n) && S_ISCHR(n.type) && n.major == 0 && n.minor == 0;
}

static bool is_opaque(struct img *im, const char *path)
{
	size_t len = 0;
	_cleanup_free_ char *v = img_xattr(im, path, "trusted.overlay.opaque", &len);
	return v && len == 1 && v[0] == 'y';
}

/* --- fixtures --- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/alps-test-squash-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	have_unsquashfs = system("unsquashfs -help >/dev/null 2>&1") == 0;
	if (!have_unsquashfs)
		fprintf(stderr, "note: unsquashfs not found; checking with libsquashfs only\n");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static uint8_t *pattern(size_t len, unsigned seed)
{
	uint8_t *d = xmalloc(len);
	uint32_t x = 2463534242u + seed;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		d[i] = (i / 1000) % 2 ? (uint8_t)x : (uint8_t)('a' + i % 26);
	}
	return d;
}

/* --- the tests --- */

static const char cap_value[20] = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

static void build_tree(struct buf *tb, const uint8_t *big, const char *longpath, const char *longlink)
{
	static const struct kv xattrs[] = {
		{ "user.mime", "text/plain", 0 },
		{ "security.capability", cap_value, sizeof(cap_value) },
		{ "trusted.t", "1", 0 },
		{ "system.posix_acl_access", "\x02\x00\x00\x00", 4 },
		{ "trusted.overlay.redirect", "/elsewhere", 0 },
		{ NULL, NULL, 0 },
	};
	static const struct kv dir_xattrs[] = { { "user.d", "dirattr", 0 }, { NULL, NULL, 0 } };
	tar_add(tb, &(struct tent){ .name = "./", .type = '5', .mode = 0755 });
	tar_add(tb, &(struct tent){ .name = "./etc/", .type = '5' });
	tar_add(tb, FILE_ENTRY("./etc/passwd", "root:x:0:0::/root:/bin/sh\n"));
	tar_add(tb, &(struct tent){ .name = "etc/big", .data = big, .size = 300000 });
	tar_add(tb, &(struct tent){ .name = "etc/empty" });
	tar_add(tb, &(struct tent){ .name = "bin/su", .mode = 04755, .data = "su", .size = 2 });
	tar_add(tb, &(struct tent){ .name = "bin/sgid", .mode = 02711, .uid = 1000, .gid = 50,
				    .data = "sg", .size = 2 });
	tar_add(tb, &(struct tent){ .name = "tmp/", .type = '5', .mode = 01777 });
	tar_add(tb, FILE_ENTRY("usr/bin/tool", "#!/bin/sh\n"));
	tar_add(tb, &(struct tent){ .name = "home/alice/.profile", .mode = 0600, .uid = 1000,
				    .gid = 1000, .data = "PS1=$ ", .size = 6 });
	tar_add(tb, &(struct tent){ .name = "home/alice/", .type = '5', .mode = 0700,
				    .uid = 1000, .gid = 1000, .mtime = T0 + 60 });
	tar_add(tb, &(struct tent){ .name = "lib/libx.so", .type = '2', .mode = 0777,
				    .link = "libx.so.1" });
	tar_add(tb, &(struct tent){ .name = "abs", .type = '2', .mode = 0777, .link = "/etc/passwd" });
	tar_add(tb, &(struct tent){ .name = "up", .type = '2', .mode = 0777,
				    .link = "../../../../etc/shadow" });
	tar_add(tb, &(struct tent){ .name = "bin/ln1", .type = '1', .link = "bin/su" });
	tar_add(tb, &(struct tent){ .name = "bin/ln2", .type = '1', .link = "/bin/su" });
	tar_add(tb, &(struct tent){ .name = "dev/null", .type = '3', .mode = 0666, .major = 1, .minor = 3 });
	tar_add(tb, &(struct tent){ .name = "dev/sda", .type = '4', .mode = 0660, .gid = 6, .major = 8 });
	tar_add(tb, &(struct tent){ .name = "dev/big", .type = '3', .mode = 0600, .major = 300,
				    .minor = 70000 });
	tar_add(tb, &(struct tent){ .name = "run/fifo", .type = '6', .mode = 0600 });
	tar_add(tb, &(struct tent){ .name = "x/xattrs", .data = "x", .size = 1, .xattrs = xattrs });
	tar_add(tb, &(struct tent){ .name = "x/dir/", .type = '5', .xattrs = dir_xattrs });
	tar_add(tb, FILE_ENTRY("x/\xc3\xa9t\xc3\xa9", "utf-8 name"));
	tar_add(tb, FILE_ENTRY(longpath, "long"));
	tar_add(tb, &(struct tent){ .name = "x/longlink", .type = '2', .mode = 0777, .link = longlink });
	static const struct kv before_1970[] = { { "mtime", "-5", 0 }, { NULL, NULL, 0 } };
	tar_add(tb, &(struct tent){ .name = "x/old", .pax = before_1970, .data = "o", .size = 1 });
	tar_end(tb);
}

static void check_tree_metadata(struct img *im)
{
	expect_node(im, "etc", S_IFDIR, 0755, 0, 0);
	expect_node(im, "etc/passwd", S_IFREG, 0644, 0, 0);
	expect_node(im, "bin/su", S_IFREG, 04755, 0, 0);
	expect_node(im, "bin/sgid", S_IFREG, 02711, 1000, 50);
	expect_node(im, "tmp", S_IFDIR, 01777, 0, 0);
	/* Implied directories. */
	expect_node(im, "usr", S_IFDIR, 0755, 0, 0);
	expect_node(im, "usr/bin", S_IFDIR, 0755, 0, 0);
	/* A directory entry after its children sets their parent's metadata. */
	expect_node(im, "home/alice", S_IFDIR, 0700, 1000, 1000);
	expect_node(im, "home/alice/.profile", S_IFREG, 0600, 1000, 1000);
	expect_node(im, "dev/null", S_IFCHR, 0666, 0, 0);
	expect_node(im, "dev/sda", S_IFBLK, 0660, 0, 6);
	expect_node(im, "run/fifo", S_IFIFO, 0600, 0, 0);
	struct node n;
	assert_true(img_stat(im, "home/alice", &n));
	assert_int_equal(n.mtime, T0 + 60);
	assert_true(img_stat(im, "etc/passwd", &n));
	assert_int_equal(n.mtime, T0);
	assert_true(img_stat(im, "x/old", &n));
	assert_int_equal(n.mtime, 0);
	assert_true(img_stat(im, "dev/big", &n));
	assert_int_equal(n.major, 300);
	assert_int_equal(n.minor, 70000);
	assert_true(img_stat(im, "lib/libx.so", &n));
	assert_string_equal(n.target, "libx.so.1");
	assert_true(img_stat(im, "abs", &n));
	assert_string_equal(n.target, "/etc/passwd");
	assert_true(img_stat(im, "up", &n));
	assert_string_equal(n.target, "../../../../etc/shadow");
	/* Directory link counts: 2 + subdirectories. */
	assert_true(img_stat(im, "x", &n));
	assert_int_equal(n.nlink, 3);
	assert_true(img_stat(im, "etc", &n));
	assert_int_equal(n.nlink, 2);
}

static void check_tree_links(struct img *im)
{
	struct node a, b, c;
	assert_true(img_stat(im, "bin/su", &a));
	assert_true(img_stat(im, "bin/ln1", &b));
	assert_true(img_stat(im, "bin/ln2", &c));
	assert_int_equal(a.ino, b.ino);
	assert_int_equal(a.ino, c.ino);
	assert_int_equal(a.nlink, 3);
	assert_int_equal(c.nlink, 3);
	assert_int_equal(c.perm, 04755);
}

static void check_tree_xattrs(struct img *im)
{
	expect_xattr(im, "x/xattrs", "user.mime", "text/plain", 10);
	expect_xattr(im, "x/xattrs", "security.capability", cap_value, sizeof(cap_value));
	expect_xattr(im, "x/xattrs", "trusted.t", "1", 1);
	/* system.* has no squashfs prefix; trusted.overlay.* is overlayfs's. */
	assert_int_equal(img_xattr_count(im, "x/xattrs"), 3);
	expect_xattr(im, "x/dir", "user.d", "dirattr", 7);
	assert_int_equal(img_xattr_count(im, "etc/passwd"), 0);
}

static void check_tree_listing(struct img *im, const char *longpath)
{
	expect_listed(im, "-rwsr-xr-x 0/0 2 2021-01-01 00:00 R/bin/su");
	expect_listed(im, "-rwx--s--x 1000/50 2 2021-01-01 00:00 R/bin/sgid");
	expect_listed(im, "drwxrwxrwt 0/0 3 2021-01-01 00:00 R/tmp");
	expect_listed(im, "drwx------ 1000/1000 31 2021-01-01 00:01 R/home/alice");
	expect_listed(im, "crw-rw-rw- 0/0 1, 3 2021-01-01 00:00 R/dev/null");
	expect_listed(im, "brw-rw---- 0/6 8, 0 2021-01-01 00:00 R/dev/sda");
	expect_listed(im, "prw------- 0/0 0 2021-01-01 00:00 R/run/fifo");
	expect_listed(im, "lrwxrwxrwx 0/0 11 2021-01-01 00:00 R/abs -> /etc/passwd");
	expect_listed(im, "-rw-r--r-- 0/0 300000 2021-01-01 00:00 R/etc/big");
	expect_listed(im, "-rw-r--r-- 0/0 0 2021-01-01 00:00 R/etc/empty");
	_cleanup_free_ char *line = xasprintf("-rw-r--r-- 0/0 4 2021-01-01 00:00 R/%s", longpath);
	expect_listed(im, line);
}

static void make_long_names(char *longpath, char *longlink)
{
	/* Components at the 255-byte limit; the whole path past ustar's 100. */
	char comp[256];
	memset(comp, 'n', 255);
	comp[255] = '\0';
	snprintf(longpath, 1000, "long/%s/%s/file", comp, comp);
	memset(longlink, 'L', 1000);
	longlink[1000] = '\0';
}

static void test_tree(void **state)
{
	(void)state;
	_cleanup_free_ uint8_t *big = pattern(300000, 1);
	char longpath[1000], longlink[1001];
	make_long_names(longpath, longlink);
	struct buf tb = { 0 };
	build_tree(&tb, big, longpath, longlink);
	struct squash_result res;
	_cleanup_free_ char *out = convert_ok(&tb, NULL, &res);

	char want[72];
	sha256_id(tb.data, tb.len, want);
	assert_string_equal(res.diff_id, want);
	assert_int_equal(res.tar_bytes, tb.len);
	assert_int_equal(res.bytes_in, tb.len);
	assert_int_equal(res.entries, 26);
	assert_int_equal(res.files, 11);
	struct stat st;
	assert_int_equal(stat(out, &st), 0);
	assert_int_equal((uint64_t)st.st_size, res.out_bytes);
	assert_int_equal(st.st_size % 4096, 0);

	struct img *im = img_open(out);
	check_tree_metadata(im);
	check_tree_links(im);
	check_tree_xattrs(im);
	check_tree_listing(im, longpath);
	expect_content(im, "etc/big", big, 300000);
	expect_content(im, "etc/passwd", "root:x:0:0::/root:/bin/sh\n", 26);
	expect_content(im, "etc/empty", "", 0);
	expect_content(im, "bin/ln2", "su", 2);
	expect_content(im, "x/\xc3\xa9t\xc3\xa9", "utf-8 name", 10);
	expect_content(im, longpath, "long", 4);
	struct node n;
	assert_true(img_stat(im, "x/longlink", &n));
	assert_string_equal(n.target, longlink);
	img_close(im);
	free(tb.data);
}

/* The same layer gzip- and zstd-compressed gives the same diff_id and,
 * conversion being deterministic, the same bytes. */
static void test_compressed_inputs(void **state)
{
	(void)state;
	_cleanup_free_ uint8_t *big = pattern(300000, 2);
	char longpath[1000], longlink[1001];
	make_long_names(longpath, longlink);
	struct buf tb = { 0 };
	build_tree(&tb, big, longpath, longlink);
	struct squash_result plain, res;
	_cleanup_free_ char *ref = convert_ok(&tb, NULL, &plain);
	struct buf z[2] = { gzip_of(&tb), zstd_of(&tb) };
	enum layer_compression c[2] = { LAYER_COMPRESSION_GZIP, LAYER_COMPRESSION_ZSTD };
	for (int i = 0; i < 2; i++) {
		_cleanup_free_ char *out = next_out();
		alps_error *err = NULL;
		assert_int_equal(convert_c(&z[i], c[i], out, NULL, &res, &err), 0);
		assert_string_equal(res.diff_id, plain.diff_id);
		assert_int_equal(res.bytes_in, z[i].len);
		assert_int_equal(res.tar_bytes, tb.len);
		_cleanup_free_ char *cmd = xasprintf("cmp -s '%s' '%s'", ref, out);
		assert_int_equal(system(cmd), 0);
		free(z[i].data);
	}
	free(tb.data);
}

static void test_whiteouts(void **state)
{
	(void)state;
	struct buf tb = { 0 };
	tar_add(&tb, &(struct tent){ .name = "etc/.wh.passwd", .uid = 3, .gid = 4 });
	tar_add(&tb, &(struct tent){ .name = ".wh.media" });
	tar_add(&tb, &(struct tent){ .name = "opt/app/.wh..wh..opq" });
	tar_add(&tb, FILE_ENTRY("opt/app/new", "new"));
	/* The marker before its directory's own entry: both apply. */
	tar_add(&tb, &(struct tent){ .name = "var/.wh..wh..opq" });
	tar_add(&tb, &(struct tent){ .name = "var/", .type = '5', .mode = 0700 });
	/* Whiteout then re-creation as a directory: only the new content. */
	tar_add(&tb, &(struct tent){ .name = "srv/.wh.data" });
	tar_add(&tb, FILE_ENTRY("srv/data/x", "x"));
	/* A whiteout never removes what this layer has. */
	tar_add(&tb, FILE_ENTRY("home/bob", "bob"));
	tar_add(&tb, &(struct tent){ .name = "home/.wh.bob" });
	tar_add(&tb, FILE_ENTRY("root/cache/keep", "k"));
	tar_add(&tb, &(struct tent){ .name = "root/.wh.cache" });
	/* AUFS bookkeeping is no part of the image. */
	tar_add(&tb, &(struct tent){ .name = ".wh..wh.plnk/", .type = '5' });
	tar_add(&tb, FILE_ENTRY(".wh..wh.plnk/12.34", "aufs"));
	tar_add(&tb, FILE_ENTRY(".wh..wh.aufs", ""));
	tar_end(&tb);
	_cleanup_free_ char *out = convert_ok(&tb, NULL, NULL);
	struct img *im = img_open(out);
	assert_true(is_whiteout(im, "etc/passwd"));
	expect_node(im, "etc/passwd", S_IFCHR, 0, 3, 4);
	assert_true(is_whiteout(im, "media"));
	expect_listed(im, "c--------- 3/4 0, 0 2021-01-01 00:00 R/etc/passwd");
	assert_true(is_opaque(im, "opt/app"));
	assert_false(is_opaque(im, "opt"));
	expect_content(im, "opt/app/new", "new", 3);
	assert_true(is_opaque(im, "var"));
	expect_node(im, "var", S_IFDIR, 0700, 0, 0);
	assert_true(is_opaque(im, "srv/data"));
	expect_content(im, "srv/data/x", "x", 1);
	expect_content(im, "home/bob", "bob", 3);
	assert_true(is_opaque(im, "root/cache"));
	expect_content(im, "root/cache/keep", "k", 1);
	expect_absent(im, ".wh..wh.plnk");
	expect_absent(im, ".wh..wh.aufs");
	expect_absent(im, "etc/.wh.passwd");
	/* Whiteouts carry no xattrs, directories only the opaque one. */
	assert_int_equal(img_xattr_count(im, "opt/app"), 1);
	img_close(im);
	free(tb.data);
}

/* umoci turns a directory into a symlink as "d -> t" followed by
 * whiteouts of d's old entries below the link: they are dropped (a
 * non-directory hides everything below it anyway), never applied to the
 * link's target.  Other entries below a non-directory are still refused. */
static void test_whiteout_below_symlink(void **state)
{
	(void)state;
	struct buf tb = { 0 };
	tar_add(&tb, FILE_ENTRY("t/x", "keep"));
	tar_add(&tb, &(struct tent){ .name = "d", .type = '2', .link = "t" });
	tar_add(&tb, &(struct tent){ .name = "d/.wh.x" });
	tar_add(&tb, &(struct tent){ .name = "d/.wh..wh..opq" });
	tar_add(&tb, &(struct tent){ .name = "d/sub/.wh.y" });
	tar_add(&tb, FILE_ENTRY("f", "file"));
	tar_add(&tb, &(struct tent){ .name = "f/.wh.g" });
	tar_end(&tb);
	_cleanup_free_ char *out = convert_ok(&tb, NULL, NULL);
	struct img *im = img_open(out);
	struct node n;
	assert_true(img_stat(im, "d", &n));
	assert_int_equal(n.type, S_IFLNK);
	assert_string_equal(n.target, "t");
	expect_content(im, "t/x", "keep", 4);
	assert_false(is_whiteout(im, "t/x"));
	assert_false(is_opaque(im, "t"));
	expect_absent(im, "d/x");
	expect_absent(im, "d/sub");
	expect_content(im, "f", "file", 4);
	img_close(im);
	free(tb.data);

	tb = (struct buf){ 0 };
	tar_add(&tb, &(struct tent){ .name = "d", .type = '2', .link = "t" });
	tar_add(&tb, FILE_ENTRY("d/x", "through the link"));
	tar_end(&tb);
	convert_fails(&tb, NULL, ALPS_E_INVALID, "entry 'd/x' has a parent 'd' that is not a directory");
	free(tb.data);
}

static void test_duplicates(void **state)
{
	(void)state;
	struct buf tb = { 0 };
	tar_add(&tb, FILE_ENTRY("a", "one"));
	tar_add(&tb, FILE_ENTRY("a", "two"));
	/* A hard link keeps the inode it was made to, whatever comes later. */
	tar_add(&tb, &(struct tent){ .name = "h", .type = '1', .link = "a" });
	tar_add(&tb, FILE_ENTRY("a", "three"));
	tar_add(&tb, FILE_ENTRY("d/x", "x"));
	tar_add(&tb, FILE_ENTRY("d/y/z", "z"));
	tar_add(&tb, &(struct tent){ .name = "hz", .type = '1', .link = "d/y/z" });
	tar_add(&tb, FILE_ENTRY("d", "now a file"));
	tar_add(&tb, FILE_ENTRY("f", "file"));
	tar_add(&tb, &(struct tent){ .name = "f/", .type = '5' });
	tar_add(&tb, FILE_ENTRY("f/z", "now a dir"));
	tar_add(&tb, FILE_ENTRY("dd/k", "k"));
	tar_add(&tb, &(struct tent){ .name = "dd/", .type = '5', .mode = 0700, .uid = 5 });
	tar_add(&tb, &(struct tent){ .name = "s", .type = '2', .link = "x" });
	tar_add(&tb, FILE_ENTRY("s", "not a link"));
	tar_add(&tb, FILE_ENTRY("self", "self"));
	tar_add(&tb, &(struct tent){ .name = "self", .type = '1', .link = "self" });
	for (int i = 0; i < 500; i++) {
		char content[16];
		snprintf(content, sizeof(content), "v%d", i);
		tar_add(&tb, FILE_ENTRY("many", content));
	}
	tar_end(&tb);
	_cleanup_free_ char *out = convert_ok(&tb, NULL, NULL);
	struct img *im = img_open(out);
	expect_content(im, "a", "three", 5);
	expect_content(im, "h", "two", 3);
	struct node a, h;
	assert_true(img_stat(im, "a", &a));
	assert_true(img_stat(im, "h", &h));
	assert_int_not_equal(a.ino, h.ino);
	assert_int_equal(a.nlink, 1);
	assert_int_equal(h.nlink, 1);
	expect_content(im, "d", "now a file", 10);
	expect_absent(im, "d/x");
	/* The link outlives the directory its first name was in. */
	expect_content(im, "hz", "z", 1);
	expect_node(im, "f", S_IFDIR, 0755, 0, 0);
	expect_content(im, "f/z", "now a dir", 9);
	expect_node(im, "dd", S_IFDIR, 0700, 5, 0);
	expect_content(im, "dd/k", "k", 1);
	expect_node(im, "s", S_IFREG, 0644, 0, 0);
	expect_content(im, "self", "self", 4);
	assert_true(img_stat(im, "self", &a));
	assert_int_equal(a.nlink, 1);
	expect_content(im, "many", "v499", 4);
	img_close(im);
	free(tb.data);
}

static void test_normalised_paths(void **state)
{
	(void)state;
	struct buf tb = { 0 };
	tar_add(&tb, FILE_ENTRY("/abs/file", "abs"));
	tar_add(&tb, FILE_ENTRY("./dot/file", "dot"));
	tar_add(&tb, &(struct tent){ .name = "//double//slash/", .type = '5' });
	tar_add(&tb, FILE_ENTRY("a/./b", "ab"));
	tar_add(&tb, &(struct tent){ .name = "/", .type = '5', .mode = 0711, .uid = 7 });
	tar_end(&tb);
	_cleanup_free_ char *out = convert_ok(&tb, NULL, NULL);
	struct img *im = img_open(out);
	expect_content(im, "abs/file", "abs", 3);
	expect_content(im, "dot/file", "dot", 3);
	expect_content(im, "a/b", "ab", 2);
	struct node n;
	assert_true(img_stat(im, "double/slash", &n));
	expect_node(im, "", S_IFDIR, 0711, 7, 0);
	img_close(im);
	free(tb.data);
}

static void test_hostile_names(void **state)
{
	(void)state;
	char comp[300], path[4200];
	memset(comp, 'c', 256);
	comp[256] = '\0';
	fails_with_entry(FILE_ENTRY("x/../../etc/passwd", "p"), ALPS_E_INVALID,
			 "entry 'x/../../etc/passwd' escapes the layer root");
	fails_with_entry(FILE_ENTRY("../evil", "e"), ALPS_E_INVALID, "entry '../evil' escapes the layer root");
	fails_with_entry(FILE_ENTRY("a/../b", "b"), ALPS_E_INVALID, "entry 'a/../b' has a '..' component");
	fails_with_entry(FILE_ENTRY(comp, "c"), ALPS_E_INVALID, "has a name longer than 255 bytes");
	for (int i = 0; i < 20; i++)
		snprintf(path + i * 205, sizeof(path) - (size_t)i * 205, "%.204s/", comp);
	fails_with_entry(FILE_ENTRY(path, "p"), ALPS_E_INVALID, "has a path longer than 4096 bytes");
	fails_with_entry(FILE_ENTRY("bad\n\x01name/../..", "b"), ALPS_E_INVALID,
			 "entry 'bad\\x0a\\x01name/../..' escapes the layer root");
	fails_with_entry(&(struct tent){ .name = "l", .type = '1', .link = "missing" }, ALPS_E_INVALID,
			 "entry 'l' is a hard link to 'missing', which is not in the layer before it");
	fails_with_entry(&(struct tent){ .name = "l", .type = '1', .link = "../x" }, ALPS_E_INVALID,
			 "entry 'l' is a hard link to '../x', which escapes the layer root");
	fails_with_entry(&(struct tent){ .name = "l", .type = '1', .link = "./" }, ALPS_E_INVALID,
			 "entry 'l' is a hard link to directory './'");
	fails_with_entry(&(struct tent){ .name = "dir/.wh..." }, ALPS_E_INVALID,
			 "entry 'dir/.wh...' is a whiteout of '.' or '..'");
	fails_with_entry(&(struct tent){ .name = "dir/.wh." }, ALPS_E_INVALID,
			 "entry 'dir/.wh.' is a whiteout without a name");
	fails_with_entry(FILE_ENTRY(".wh.x/y", "y"), ALPS_E_INVALID, "entry '.wh.x/y' is inside a whiteout");
	fails_with_entry(&(struct tent){ .name = "." }, ALPS_E_INVALID,
			 "entry '.' would replace the layer root with a non-directory");
	fails_with_entry(&(struct tent){ .name = "/", .type = '2', .link = "x" }, ALPS_E_INVALID,
			 "entry '/' would replace the layer root with a non-directory");
	fails_with_entry(&(struct tent){ .name = "s", .type = '2' }, ALPS_E_INVALID,
			 "entry 's' is a symlink without a target");
	fails_with_entry(&(struct tent){ .name = "d", .type = '3', .major = 5000 }, ALPS_E_INVALID,
			 "entry 'd' is a device 5000:0 beyond 4095:1048575");
	fails_with_entry(&(struct tent){ .name = "" }, ALPS_E_INVALID, "entry '' has an empty name");
}

static void test_hostile_structure(void **state)
{
	(void)state;
	struct buf tb = { 0 };
	tar_add(&tb, FILE_ENTRY("f", "file"));
	tar_add(&tb, FILE_ENTRY("f/g", "under a file"));
	tar_end(&tb);
	convert_fails(&tb, NULL, ALPS_E_INVALID, "entry 'f/g' has a parent 'f' that is not a directory");
	free(tb.data);

	tb = (struct buf){ 0 };
	tar_add(&tb, &(struct tent){ .name = "d/", .type = '5' });
	tar_add(&tb, &(struct tent){ .name = "l", .type = '1', .link = "d" });
	tar_end(&tb);
	convert_fails(&tb, NULL, ALPS_E_INVALID, "entry 'l' is a hard link to directory 'd'");
	free(tb.data);

	/* A whiteout is not a file one can link to. */
	tb = (struct buf){ 0 };
	tar_add(&tb, &(struct tent){ .name = ".wh.w" });
	tar_add(&tb, &(struct tent){ .name = "l", .type = '1', .link = "w" });
	tar_end(&tb);
	convert_fails(&tb, NULL, ALPS_E_INVALID, "entry 'l' is a hard link to 'w', which is not in the layer");
	free(tb.data);

	/* Links forward are refused: the target must come first. */
	tb = (struct buf){ 0 };
	tar_add(&tb, &(struct tent){ .name = "l", .type = '1', .link = "later" });
	tar_add(&tb, FILE_ENTRY("later", "x"));
	tar_end(&tb);
	convert_fails(&tb, NULL, ALPS_E_INVALID, "is a hard link to 'later', which is not in the layer");
	free(tb.data);
}

static void test_limits(void **state)
{
	(void)state;
	struct buf tb = { 0 };
	for (int i = 0; i < 100; i++) {
		char name[16];
		snprintf(name, sizeof(name), "f%d", i);
		tar_add(&tb, FILE_ENTRY(name, "x"));
	}
	struct buf exact = { 0 };
	buf_add(&exact, tb.data, tb.len);
	tar_end(&exact);
	struct squash_opts o = { .max_entries = 100 };
	free(convert_ok(&exact, &o, NULL));
	tar_add(&tb, FILE_ENTRY("f100", "x"));
	tar_end(&tb);
	convert_fails(&tb, &o, ALPS_E_LIMIT, "layer has more than 100 entries");
	free(tb.data);
	free(exact.data);

	/* Implied directories count too. */
	tb = (struct buf){ 0 };
	tar_add(&tb, FILE_ENTRY("a/b/c/d/e/f", "deep"));
	tar_end(&tb);
	o.max_entries = 3;
	convert_fails(&tb, &o, ALPS_E_LIMIT, "layer has more than 3 entries");
	free(tb.data);

	/* A gzip bomb: 64 MiB of zeros in a few dozen KiB. */
	tb = (struct buf){ 0 };
	size_t zlen = 64 << 20;
	uint8_t *zeros = xzalloc(zlen);
	tar_add(&tb, &(struct tent){ .name = "zeros", .data = zeros, .size = zlen });
	tar_end(&tb);
	free(zeros);
	struct buf gz = gzip_of(&tb);
	assert_true(gz.len < 1 << 20);
	o = (struct squash_opts){ .max_tar_bytes = 16 << 20 };
	_cleanup_free_ char *out = next_out();
	alps_error *err = NULL;
	struct squash_result res;
	assert_int_equal(convert_c(&gz, LAYER_COMPRESSION_GZIP, out, &o, &res, &err), -1);
	assert_int_equal(err->code, ALPS_E_LIMIT);
	assert_string_equal(err->msg, "layer is larger than 16777216 bytes uncompressed");
	assert_int_equal(access(out, F_OK), -1);
	alps_error_free(err);
	free(gz.data);
	free(tb.data);
}

/* GNU sparse format 1.0 in pax, as GNU tar writes it: a map of decimal
 * lines in the data area, then the data of each region. */
static void tar_add_sparse(struct buf *tb, const char *name, unsigned long long realsize,
			   const unsigned long long (*regions)[2], size_t nregions, const uint8_t *data)
{
	struct buf map = { 0 };
	char line[64];
	snprintf(line, sizeof(line), "%zu\n", nregions);
	buf_add(&map, line, strlen(line));
	for (size_t i = 0; i < nregions; i++) {
		snprintf(line, sizeof(line), "%llu\n%llu\n", regions[i][0], regions[i][1]);
		buf_add(&map, line, strlen(line));
	}
	buf_zeros(&map, (512 - map.len % 512) % 512);
	for (size_t i = 0; i < nregions; i++)
		buf_add(&map, data + regions[i][0], regions[i][1]);
	char size[32];
	snprintf(size, sizeof(size), "%llu", realsize);
	const struct kv pax[] = {
		{ "GNU.sparse.major", "1", 0 }, { "GNU.sparse.minor", "0", 0 },
		{ "GNU.sparse.name", name, 0 }, { "GNU.sparse.realsize", size, 0 },
		{ NULL, NULL, 0 },
	};
	tar_add(tb, &(struct tent){ .name = "GNUSparseFile.0/x", .data = map.data, .size = map.len,
				    .pax = pax });
	free(map.data);
}

static void test_sparse(void **state)
{
	(void)state;
	size_t real = 10 << 20;
	uint8_t *want = xzalloc(real);
	const unsigned long long regions[][2] = { { 0, 1000 }, { 6 << 20, 70000 }, { 8 << 20, 0 } };
	memset(want, 'A', 1000);
	memset(want + (6 << 20), 'B', 70000);
	struct buf tb = { 0 };
	tar_add_sparse(&tb, "sparse", real, regions, 3, want);
	tar_end(&tb);
	struct squash_result res;
	_cleanup_free_ char *out = convert_ok(&tb, NULL, &res);
	assert_true(res.out_bytes < 64 * 1024);
	struct img *im = img_open(out);
	expect_content(im, "sparse", want, real);
	img_close(im);
	free(tb.data);

	/* A few bytes of map claiming a terabyte. */
	tb = (struct buf){ 0 };
	tar_add_sparse(&tb, "bomb", 1ull << 40, regions, 1, want);
	tar_end(&tb);
	struct squash_opts o = { .max_tar_bytes = 100 << 20 };
	convert_fails(&tb, &o, ALPS_E_LIMIT, "entry 'bomb' expands the layer beyond 104857600 bytes");
	free(tb.data);
	free(want);
}

static double cpu_seconds(void)
{
	struct rusage ru;
	assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void expect_range(struct img *im, const char *path, uint64_t off, const void *want,
			 size_t len)
{
	sqfs_inode_generic_t *g = img_find(im, path);
	assert_non_null(g);
	_cleanup_free_ uint8_t *got = xmalloc(len);
	assert_int_equal(sqfs_data_reader_read(im->data, g, off, got, (sqfs_u32)len), (sqfs_s32)len);
	sqfs_free(g);
	assert_memory_equal(got, want, len);
}

/* Issue 8 #15: a few hundred bytes of sparse map claiming 20 GiB of holes
 * once cost the daemon 20 GiB of zeros through the block processor.  Whole
 * blocks of holes are now sparse blocks of the inode: bounded CPU, and the
 * file reads back with its data where the map put it. */
static void test_sparse_cpu(void **state)
{
	(void)state;
	const unsigned long long real = 20ull << 30, mid = (10ull << 30) + 5;
	static uint8_t head[4] = { 'h', 'e', 'a', 'd' }, tail[3] = { 'm', 'i', 'd' };
	uint8_t *data = xzalloc(1 << 20);
	memcpy(data, head, 4);
	struct buf tb = { 0 };
	const unsigned long long r0[][2] = { { 0, 4 } };
	/* Two files: data, a 10 GiB hole, data, a 10 GiB hole; and data then
	 * a hole to an odd size (through tar_add_sparse()). */
	struct buf map = { 0 };
	char line[96];
	snprintf(line, sizeof(line), "2\n0\n4\n%llu\n3\n", mid);
	buf_add(&map, line, strlen(line));
	buf_zeros(&map, (512 - map.len % 512) % 512);
	buf_add(&map, head, 4);
	buf_add(&map, tail, 3);
	char size[32];
	snprintf(size, sizeof(size), "%llu", real);
	const struct kv pax[] = {
		{ "GNU.sparse.major", "1", 0 }, { "GNU.sparse.minor", "0", 0 },
		{ "GNU.sparse.name", "big", 0 }, { "GNU.sparse.realsize", size, 0 },
		{ NULL, NULL, 0 },
	};
	tar_add(&tb, &(struct tent){ .name = "GNUSparseFile.0/x", .data = map.data, .size = map.len,
				    .pax = pax });
	free(map.data);
	tar_add_sparse(&tb, "head-only", real + 12345, r0, 1, data);
	tar_end(&tb);
	double t0 = cpu_seconds();
	struct squash_result res;
	_cleanup_free_ char *out = convert_ok(&tb, NULL, &res);
	double used = cpu_seconds() - t0;
	print_message("converting 40 GiB of sparse files took %.3f s of CPU\n", used);
	assert_true(used < 2.0);
	assert_true(res.out_bytes < 4 << 20);
	struct img *im = img_open_ex(out, false);
	struct node n;
	assert_true(img_stat(im, "big", &n));
	assert_int_equal(n.size, real);
	assert_true(img_stat(im, "head-only", &n));
	assert_int_equal(n.size, real + 12345);
	static const uint8_t z[4096];
	expect_range(im, "big", 0, "head", 4);
	expect_range(im, "big", 4, z, sizeof(z));
	expect_range(im, "big", mid - 100, z, 100);
	expect_range(im, "big", mid, "mid", 3);
	expect_range(im, "big", mid + 3, z, sizeof(z));
	expect_range(im, "big", real - sizeof(z), z, sizeof(z));
	expect_range(im, "head-only", 0, "head", 4);
	expect_range(im, "head-only", (5ull << 30) + 7, z, sizeof(z));
	expect_range(im, "head-only", real + 12345 - 100, z, 100);
	img_close(im);
	free(tb.data);
	free(data);
}

static void test_bad_streams(void **state)
{
	(void)state;
	_cleanup_free_ uint8_t *junk = pattern(20000, 3);
	struct buf g = { 0 };
	buf_add(&g, junk, 20000);
	convert_fails(&g, NULL, ALPS_E_INVALID, "layer is not a tar archive: ");
	free(g.data);

	/* Cut in the middle of a file's data. */
	_cleanup_free_ uint8_t *big = pattern(100000, 4);
	struct buf tb = { 0 };
	tar_add(&tb, FILE_ENTRY("first", "1"));
	tar_add(&tb, &(struct tent){ .name = "big", .data = big, .size = 100000 });
	tar_end(&tb);
	struct buf cut = { 0 };
	buf_add(&cut, tb.data, 50000);
	convert_fails(&cut, NULL, ALPS_E_INVALID, "entry 'big' cannot be read: Truncated");
	free(cut.data);

	/* A corrupt header after good entries. */
	struct buf bad = { 0 };
	buf_add(&bad, tb.data, 1024);
	buf_add(&bad, junk, 2048);
	convert_fails(&bad, NULL, ALPS_E_INVALID, "reading the layer after entry 'first'");
	free(bad.data);

	/* Truncated gzip: the decompressor's error comes through. */
	struct buf gz = gzip_of(&tb);
	gz.len -= 10;
	_cleanup_free_ char *out = next_out();
	alps_error *err = NULL;
	struct squash_result res;
	assert_int_equal(convert_c(&gz, LAYER_COMPRESSION_GZIP, out, NULL, &res, &err), -1);
	assert_non_null(strstr(err->msg, "truncated gzip stream"));
	assert_int_equal(access(out, F_OK), -1);
	alps_error_free(err);
	free(gz.data);
	free(tb.data);
}

static void test_empty_layers(void **state)
{
	(void)state;
	struct buf empty = { 0 };
	struct squash_result res;
	char want[72];
	for (int i = 0; i < 2; i++) {
		/* A zero-length stream, and just the end-of-archive blocks. */
		if (i)
			tar_end(&empty);
		_cleanup_free_ char *out = convert_ok(&empty, NULL, &res);
		sha256_id(empty.data, empty.len, want);
		assert_string_equal(res.diff_id, want);
		assert_int_equal(res.entries, 0);
		struct img *im = img_open(out);
		expect_node(im, "", S_IFDIR, 0755, 0, 0);
		img_close(im);
	}
	free(empty.data);
}

static void test_existing_output(void **state)
{
	(void)state;
	struct buf tb = { 0 };
	tar_end(&tb);
	_cleanup_free_ char *out = next_out();
	int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	alps_error *err = NULL;
	struct squash_result res;
	assert_int_equal(convert_c(&tb, LAYER_COMPRESSION_NONE, out, NULL, &res, &err), -1);
	assert_int_equal(err->code, ALPS_E_EXISTS);
	/* Not ours: left alone. */
	assert_int_equal(access(out, F_OK), 0);
	alps_error_free(err);
	free(tb.data);
}

static void test_options(void **state)
{
	(void)state;
	alps_error *err = NULL;
	assert_int_equal(squash_opts_check(NULL, &err), 0);
	struct {
		struct squash_opts o;
		int code;
		const char *msg;
	} bad[] = {
		{ { .compressor = "lzo" }, ALPS_E_UNSUPPORTED, "unsupported squashfs compressor 'lzo'" },
		{ { .compressor = "zstd", .level = 23 }, ALPS_E_INVALID, "squashfs zstd level 23 is outside 1..22" },
		{ { .compressor = "gzip", .level = -1 }, ALPS_E_INVALID, "outside 1..9" },
		{ { .block_size = 3000 }, ALPS_E_INVALID, "block size 3000 is not a power of two" },
		{ { .block_size = 2 << 20 }, ALPS_E_INVALID, "is not a power of two from 4 KiB to 1 MiB" },
		{ { .threads = 1000 }, ALPS_E_INVALID, "1000 squashfs writer threads" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(squash_opts_check(&bad[i].o, &err), -1);
		if (err->code != bad[i].code || !strstr(err->msg, bad[i].msg))
			fail_msg("case %zu: %d %s", i, err->code, err->msg);
		alps_error_free(err);
		err = NULL;
	}
	_cleanup_free_ uint8_t *big = pattern(500000, 5);
	struct buf tb = { 0 };
	tar_add(&tb, &(struct tent){ .name = "big", .data = big, .size = 500000 });
	tar_add(&tb, FILE_ENTRY("small", "small"));
	tar_end(&tb);
	const struct squash_opts good[] = {
		{ .compressor = "gzip", .level = 1 }, { .compressor = "xz" },
		{ .compressor = "lz4" }, { .compressor = "lz4", .level = 1 },
		{ .compressor = "zstd", .level = 19, .block_size = 1 << 20, .threads = 1 },
		{ .block_size = 4096, .threads = 3 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		assert_int_equal(squash_opts_check(&good[i], &err), 0);
		_cleanup_free_ char *out = convert_ok(&tb, &good[i], NULL);
		/* unsquashfs 4.5.1 refuses libsquashfs's lz4 options block
		 * (tar2sqfs's output too); the kernel reads it. */
		bool lz4 = good[i].compressor && strcmp(good[i].compressor, "lz4") == 0;
		struct img *im = img_open_ex(out, !lz4);
		expect_content(im, "big", big, 500000);
		expect_content(im, "small", "small", 5);
		img_close(im);
	}
	free(tb.data);
}

/* Worker threads change nothing in the output: layers stay content addressed. */
static void test_deterministic(void **state)
{
	(void)state;
	struct buf tb = { 0 };
	for (int i = 0; i < 40; i++) {
		char name[32];
		snprintf(name, sizeof(name), "d%d/f%d", i % 5, i);
		uint8_t *d = pattern(30000 + (size_t)i * 7001, (unsigned)i);
		tar_add(&tb, &(struct tent){ .name = name, .data = d, .size = 30000 + (size_t)i * 7001 });
		free(d);
	}
	tar_end(&tb);
	struct squash_opts one = { .threads = 1 }, four = { .threads = 4 };
	_cleanup_free_ char *a = convert_ok(&tb, &one, NULL);
	_cleanup_free_ char *b = convert_ok(&tb, &four, NULL);
	_cleanup_free_ char *cmd = xasprintf("cmp -s '%s' '%s'", a, b);
	assert_int_equal(system(cmd), 0);
	free(tb.data);
}

struct stalled {
	struct chanbuf *cb;
	const struct buf *data;
	_Atomic bool release;
};

/* Sends data, then neither sends more nor ends until released: a
 * download that hangs after delivering a bad layer. */
static void *stalled_producer(void *arg)
{
	struct stalled *st = arg;
	alps_error *err = NULL;
	if (chanbuf_write(st->cb, st->data->data, st->data->len, &err) < 0)
		alps_error_free(err);
	while (!st->release)
		usleep(1000);
	chanbuf_close(st->cb, NULL);
	return NULL;
}

/* A failed conversion returns at once, not when the download ends. */
static void test_stalled_download(void **state)
{
	(void)state;
	struct buf tb = { 0 };
	tar_add(&tb, FILE_ENTRY("ok", "fine"));
	tar_add(&tb, FILE_ENTRY("../escape", "bad"));
	struct stalled st = { .cb = chanbuf_new(0), .data = &tb };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, stalled_producer, &st), 0);
	struct stream *s = chanbuf_stream(st.cb);
	struct squash_opts o = { .threads = 2 };
	_cleanup_free_ char *out = next_out();
	alps_error *err = NULL;
	struct squash_result res;
	uint64_t t0 = now_monotonic_ms();
	int rc = squash_convert(s, out, &o, &res, &err);
	uint64_t took = now_monotonic_ms() - t0;
	st.release = true;
	assert_int_equal(pthread_join(t, NULL), 0);
	stream_close(s);
	chanbuf_unref(st.cb);
	free(tb.data);
	assert_int_equal(rc, -1);
	assert_string_equal(err->msg, "entry '../escape' escapes the layer root");
	assert_true(took < 5000);
	alps_error_free(err);
}

struct progress_seen {
	int calls;
	uint64_t last_in, last_tar;
};

static void on_progress(void *arg, uint64_t in, uint64_t tar)
{
	struct progress_seen *p = arg;
	assert_true(tar >= p->last_tar);
	p->calls++;
	p->last_in = in;
	p->last_tar = tar;
}

static void test_progress(void **state)
{
	(void)state;
	size_t len = 20 << 20;
	_cleanup_free_ uint8_t *big = pattern(len, 6);
	struct buf tb = { 0 };
	tar_add(&tb, &(struct tent){ .name = "big", .data = big, .size = len });
	tar_end(&tb);
	struct buf gz = gzip_of(&tb);
	struct progress_seen seen = { 0 };
	struct squash_opts o = { .progress = on_progress, .progress_arg = &seen };
	_cleanup_free_ char *out = next_out();
	alps_error *err = NULL;
	struct squash_result res;
	assert_int_equal(convert_c(&gz, LAYER_COMPRESSION_GZIP, out, &o, &res, &err), 0);
	assert_true(seen.calls >= 3);
	assert_int_equal(seen.last_in, gz.len);
	assert_int_equal(seen.last_tar, tb.len);
	free(gz.data);
	free(tb.data);
}

/* --- the kernel's view: two layers as an overlay --- */

static bool mount_layers(const char *lower, const char *upper, const char *dir)
{
	_cleanup_free_ char *ml = xasprintf("%s/ml", dir), *mu = xasprintf("%s/mu", dir);
	_cleanup_free_ char *merged = xasprintf("%s/merged", dir);
	mkdir(ml, 0755);
	mkdir(mu, 0755);
	mkdir(merged, 0755);
	_cleanup_free_ char *c1 = xasprintf("mount -t squashfs -o loop,ro '%s' '%s' 2>/dev/null", lower, ml);
	_cleanup_free_ char *c2 = xasprintf("mount -t squashfs -o loop,ro '%s' '%s' 2>/dev/null", upper, mu);
	_cleanup_free_ char *opts = xasprintf("lowerdir=%s:%s", mu, ml);
	if (system(c1) != 0 || system(c2) != 0)
		return false;
	return mount("overlay", merged, "overlay", MS_RDONLY, opts) == 0;
}

static void unmount_layers(const char *dir)
{
	static const char *names[] = { "merged", "mu", "ml" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		_cleanup_free_ char *p = xasprintf("%s/%s", dir, names[i]);
		umount2(p, 0);
		rmdir(p);
	}
}

static void overlay_layers(struct buf *lower, struct buf *upper)
{
	static const struct kv mime[] = { { "user.mime", "text/plain", 0 }, { NULL, NULL, 0 } };
	tar_add(lower, FILE_ENTRY("etc/a", "a"));
	tar_add(lower, FILE_ENTRY("etc/b", "b"));
	tar_add(lower, FILE_ENTRY("opt/x/old", "old"));
	tar_add(lower, FILE_ENTRY("srv/data/old", "old"));
	tar_add(lower, &(struct tent){ .name = "bin/su", .mode = 04755, .data = "su", .size = 2,
				      .xattrs = mime });
	tar_add(lower, &(struct tent){ .name = "bin/ln", .type = '1', .link = "bin/su" });
	tar_add(lower, &(struct tent){ .name = "dev/big", .type = '3', .major = 300, .minor = 70000 });
	tar_end(lower);
	tar_add(upper, &(struct tent){ .name = "etc/.wh.a" });
	tar_add(upper, &(struct tent){ .name = "opt/x/.wh..wh..opq" });
	tar_add(upper, FILE_ENTRY("opt/x/new", "new"));
	tar_add(upper, &(struct tent){ .name = "srv/.wh.data" });
	tar_add(upper, FILE_ENTRY("srv/data/new", "new"));
	tar_end(upper);
}

/* What the merged tree shows, gathered before unmounting. */
struct overlay_view {
	int a, b, old, new, srv_old, srv_new;   /* lstat() results */
	struct stat su, ln, dev;
	char xattr[32];
};

static int lstat_in(const char *root, const char *path, struct stat *st)
{
	struct stat tmp;
	_cleanup_free_ char *p = xasprintf("%s/%s", root, path);
	return lstat(p, st ? st : &tmp);
}

static void overlay_observe(const char *merged, struct overlay_view *v)
{
	v->a = lstat_in(merged, "etc/a", NULL);
	v->b = lstat_in(merged, "etc/b", NULL);
	v->old = lstat_in(merged, "opt/x/old", NULL);
	v->new = lstat_in(merged, "opt/x/new", NULL);
	v->srv_old = lstat_in(merged, "srv/data/old", NULL);
	v->srv_new = lstat_in(merged, "srv/data/new", NULL);
	lstat_in(merged, "bin/su", &v->su);
	lstat_in(merged, "bin/ln", &v->ln);
	lstat_in(merged, "dev/big", &v->dev);
	_cleanup_free_ char *su = xasprintf("%s/bin/su", merged);
	ssize_t n = lgetxattr(su, "user.mime", v->xattr, sizeof(v->xattr) - 1);
	v->xattr[n > 0 ? n : 0] = '\0';
}

static void test_overlay_mount(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	struct buf lower = { 0 }, upper = { 0 };
	overlay_layers(&lower, &upper);
	_cleanup_free_ char *lo = convert_ok(&lower, NULL, NULL);
	_cleanup_free_ char *up = convert_ok(&upper, NULL, NULL);
	free(lower.data);
	free(upper.data);
	_cleanup_free_ char *dir = xasprintf("%s/ovl", tmpdir);
	_cleanup_free_ char *merged = xasprintf("%s/merged", dir);
	mkdir(dir, 0755);
	struct overlay_view v;
	bool mounted = mount_layers(lo, up, dir);
	if (mounted)
		overlay_observe(merged, &v);
	/* Unmount before asserting: a failed assertion jumps out. */
	unmount_layers(dir);
	rmdir(dir);
	if (!mounted)
		skip();
	assert_int_equal(v.a, -1);              /* a whiteout hides the lower file */
	assert_int_equal(v.b, 0);
	assert_int_equal(v.old, -1);            /* an opaque directory hides lower content */
	assert_int_equal(v.new, 0);
	assert_int_equal(v.srv_old, -1);        /* whiteout + directory re-created */
	assert_int_equal(v.srv_new, 0);
	assert_int_equal(v.su.st_mode, S_IFREG | 04755);
	assert_int_equal(v.su.st_nlink, 2);
	assert_int_equal(v.su.st_ino, v.ln.st_ino);
	assert_string_equal(v.xattr, "text/plain");
	assert_true(S_ISCHR(v.dev.st_mode));
	assert_int_equal(major(v.dev.st_rdev), 300);
	assert_int_equal(minor(v.dev.st_rdev), 70000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tree),
		cmocka_unit_test(test_compressed_inputs),
		cmocka_unit_test(test_whiteouts),
		cmocka_unit_test(test_whiteout_below_symlink),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_normalised_paths),
		cmocka_unit_test(test_hostile_names),
		cmocka_unit_test(test_hostile_structure),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_sparse),
		cmocka_unit_test(test_sparse_cpu),
		cmocka_unit_test(test_bad_streams),
		cmocka_unit_test(test_empty_layers),
		cmocka_unit_test(test_existing_output),
		cmocka_unit_test(test_options),
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_progress),
		cmocka_unit_test(test_stalled_download),
		cmocka_unit_test(test_overlay_mount),
	};
	if (getenv("SQUASH_TEST"))
		cmocka_set_test_filter(getenv("SQUASH_TEST"));
	return cmocka_run_group_tests_name("squash", tests, group_setup, group_teardown);
}
