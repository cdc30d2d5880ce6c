/* test_flatten.c: the merge of layers into one squashfs file
 * (daemon/squash/flatten.h), on layers the converter makes from tars
 * written here: whiteouts, opaque directories, a file over a directory and
 * a directory over a file, a hard link broken by an upper layer, data that
 * spans blocks and a fragment; copied and recompressed alike. */
#include <config.h>

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <sqfs/compressor.h>
#include <sqfs/data_reader.h>
#include <sqfs/dir_reader.h>
#include <sqfs/id_table.h>
#include <sqfs/inode.h>
#include <sqfs/io.h>
#include <sqfs/super.h>

#include "common/error.h"
#include "common/util.h"
#include "daemon/image/stream.h"
#include "daemon/squash/flatten.h"
#include "daemon/squash/squash.h"

#define TAR_MAX (4u << 20)
#define BIG (300 * 1024 + 77)

static char tmpdir[64];
static int seq;
static uint8_t big[BIG];

struct tar {
	struct archive *a;
	uint8_t *buf;
	size_t used;
};

static void tar_begin(struct tar *t)
{
	t->buf = xmalloc(TAR_MAX);
	t->a = archive_write_new();
	assert_int_equal(archive_write_set_format_pax_restricted(t->a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_memory(t->a, t->buf, TAR_MAX, &t->used), ARCHIVE_OK);
}

/* kind: 'f' file (data), 'd' directory, 'h' hard link to data. */
static void tar_put(struct tar *t, char kind, const char *name, const void *data, size_t len)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_mtime(e, 1700000000, 0);
	archive_entry_set_filetype(e, kind == 'd' ? AE_IFDIR : AE_IFREG);
	archive_entry_set_perm(e, kind == 'd' ? 0755 : 0644);
	if (kind == 'h')
		archive_entry_set_hardlink(e, data);
	else if (kind == 'f')
		archive_entry_set_size(e, (la_int64_t)len);
	assert_int_equal(archive_write_header(t->a, e), ARCHIVE_OK);
	if (kind == 'f' && len)
		assert_int_equal(archive_write_data(t->a, data, len), (la_ssize_t)len);
	archive_entry_free(e);
}

static char *tar_layer(struct tar *t, const char *compressor)
{
	assert_int_equal(archive_write_close(t->a), ARCHIVE_OK);
	archive_write_free(t->a);
	char *out = xasprintf("%s/layer-%d.sqfs", tmpdir, ++seq);
	struct squash_opts o = { .compressor = compressor, .threads = 2 };
	struct squash_result res;
	alps_error *err = NULL;
	struct stream *s = stream_from_memory(t->buf, t->used);
	if (squash_convert(s, out, &o, &res, &err) < 0)
		fail_msg("conversion failed: %s", err->msg);
	stream_close(s);
	free(t->buf);
	return out;
}

#define F(t, name, s) tar_put(t, 'f', name, s, strlen(s))

/* A sparse file of SPARSE_SIZE bytes: "head" at 0 and "tail" at
 * SPARSE_MID; the blocks between are holes (sparse blocks in squashfs). */
#define SPARSE_SIZE (1u << 20)
#define SPARSE_MID (768u * 1024)

static uint8_t *sparse_content(void)
{
	uint8_t *b = xzalloc(SPARSE_SIZE);
	memcpy(b, "head", 4);
	memcpy(b + SPARSE_MID, "tail", 4);
	return b;
}

static void tar_sparse(struct tar *t, const char *name)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_mtime(e, 1700000000, 0);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, SPARSE_SIZE);
	archive_entry_sparse_add_entry(e, 0, 4);
	archive_entry_sparse_add_entry(e, SPARSE_MID, 4);
	assert_int_equal(archive_write_header(t->a, e), ARCHIVE_OK);
	/* The pax writer takes the whole file and skips the holes itself. */
	_cleanup_free_ uint8_t *all = sparse_content();
	assert_int_equal(archive_write_data(t->a, all, SPARSE_SIZE), SPARSE_SIZE);
	archive_entry_free(e);
}

/* Bottom: what the upper layers change. */
static char *layer0(const char *compressor)
{
	struct tar t;
	tar_begin(&t);
	F(&t, "a/x", "ax");
	F(&t, "a/sub/y", "ay");
	F(&t, "b", "a file below");
	F(&t, "c/k", "ck");
	F(&t, "h1", "linked");
	tar_put(&t, 'h', "h2", "h1", 0);
	F(&t, "d/1", "d1");
	tar_put(&t, 'f', "big", big, sizeof(big));
	tar_sparse(&t, "sparse");
	return tar_layer(&t, compressor);
}

static char *layer1(const char *compressor)
{
	struct tar t;
	tar_begin(&t);
	F(&t, "a/.wh.x", "");
	F(&t, "a/new", "new");
	F(&t, "b/inner", "a directory over a file");
	F(&t, "c", "a file over a directory");
	tar_put(&t, 'd', "d", NULL, 0);
	F(&t, "d/.wh..wh..opq", "");
	F(&t, "d/2", "d2");
	F(&t, "h1", "replaced");
	F(&t, ".wh.nothing", "");
	return tar_layer(&t, compressor);
}

struct img {
	sqfs_file_t *file;
	sqfs_super_t super;
	sqfs_compressor_t *cmp;
	sqfs_id_table_t *ids;
	sqfs_dir_reader_t *dr;
	sqfs_data_reader_t *data;
	sqfs_inode_generic_t *root;
};

static void img_open(struct img *im, const char *path)
{
	sqfs_compressor_config_t cfg;
	im->file = sqfs_open_file(path, SQFS_FILE_OPEN_READ_ONLY);
	assert_non_null(im->file);
	assert_int_equal(sqfs_super_read(&im->super, im->file), 0);
	assert_int_equal(sqfs_compressor_config_init(&cfg, im->super.compression_id,
						     im->super.block_size,
						     SQFS_COMP_FLAG_UNCOMPRESS), 0);
	assert_int_equal(sqfs_compressor_create(&cfg, &im->cmp), 0);
	im->ids = sqfs_id_table_create(0);
	assert_int_equal(sqfs_id_table_read(im->ids, im->file, &im->super, im->cmp), 0);
	im->dr = sqfs_dir_reader_create(&im->super, im->cmp, im->file, 0);
	im->data = sqfs_data_reader_create(im->file, im->super.block_size, im->cmp, 0);
	assert_int_equal(sqfs_data_reader_load_fragment_table(im->data, &im->super), 0);
	assert_int_equal(sqfs_dir_reader_get_root_inode(im->dr, &im->root), 0);
}

static void img_close(struct img *im)
{
	sqfs_free(im->root);
	sqfs_destroy(im->data);
	sqfs_destroy(im->dr);
	sqfs_destroy(im->ids);
	sqfs_destroy(im->cmp);
	sqfs_destroy(im->file);
}

static sqfs_inode_generic_t *img_find(struct img *im, const char *path)
{
	sqfs_inode_generic_t *ino = NULL;
	return sqfs_dir_reader_find_by_path(im->dr, im->root, path, &ino) == 0 ? ino : NULL;
}

static void expect_absent(struct img *im, const char *path)
{
	sqfs_inode_generic_t *ino = img_find(im, path);
	if (ino)
		fail_msg("%s is in the flattened image", path);
}

static void expect_dir(struct img *im, const char *path)
{
	sqfs_inode_generic_t *ino = img_find(im, path);
	if (!ino) {
		fail_msg("%s is missing", path);
		return;         /* not reached: for -Wnull-dereference */
	}
	assert_true(S_ISDIR(ino->base.mode));
	sqfs_u32 x = 0;
	sqfs_inode_get_xattr_index(ino, &x);
	assert_int_equal(x, 0xFFFFFFFFu);         /* no trusted.overlay.opaque left */
	sqfs_free(ino);
}

static void expect_file(struct img *im, const char *path, const void *want, size_t len,
			unsigned nlink)
{
	sqfs_inode_generic_t *ino = img_find(im, path);
	if (!ino) {
		fail_msg("%s is missing", path);
		return;         /* not reached: for -Wnull-dereference */
	}
	assert_true(S_ISREG(ino->base.mode));
	sqfs_u64 size = 0;
	sqfs_inode_get_file_size(ino, &size);
	assert_int_equal(size, len);
	uint8_t *got = xmalloc(len + 1);
	if (len)
		assert_int_equal(sqfs_data_reader_read(im->data, ino, 0, got, len), (sqfs_s32)len);
	assert_memory_equal(got, want, len);
	unsigned n = ino->base.type == SQFS_INODE_EXT_FILE ? ino->data.file_ext.nlink : 1;
	assert_int_equal(n, nlink);
	free(got);
	sqfs_free(ino);
}

static void check(const char *path)
{
	struct img im;
	img_open(&im, path);
	expect_absent(&im, "a/x");
	expect_absent(&im, "a/.wh.x");
	expect_absent(&im, ".wh.nothing");
	expect_absent(&im, "d/1");
	expect_absent(&im, "d/.wh..wh..opq");
	expect_file(&im, "a/sub/y", "ay", 2, 1);
	expect_file(&im, "a/new", "new", 3, 1);
	expect_dir(&im, "b");
	expect_file(&im, "b/inner", "a directory over a file", 23, 1);
	expect_file(&im, "c", "a file over a directory", 23, 1);
	expect_absent(&im, "c/k");
	expect_dir(&im, "d");
	expect_file(&im, "d/2", "d2", 2, 1);
	expect_file(&im, "h1", "replaced", 8, 1);
	expect_file(&im, "h2", "linked", 6, 1);       /* the link is broken, as in overlayfs */
	expect_file(&im, "big", big, sizeof(big), 1);
	_cleanup_free_ uint8_t *sp = sparse_content();
	expect_file(&im, "sparse", sp, SPARSE_SIZE, 1);
	sqfs_inode_generic_t *ino = img_find(&im, "sparse");
	if (!ino) {
		fail_msg("sparse is missing");
		return;
	}
	size_t holes = 0;
	for (size_t i = 0; i < sqfs_inode_get_file_block_count(ino); i++)
		holes += ino->extra[i] == 0;
	assert_true(holes >= 4);        /* still sparse blocks, copied or not */
	sqfs_free(ino);
	img_close(&im);
}

static char *flatten_ok(char *const *layers, size_t n, const struct flatten_opts *o,
			struct flatten_result *res)
{
	char *out = xasprintf("%s/flat-%d.sqfs", tmpdir, ++seq);
	int fd = open(out, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	alps_error *err = NULL;
	if (flatten_layers((const char *const *)layers, n, fd, o, res, &err) < 0)
		fail_msg("flatten failed: %s", err->msg);
	close(fd);
	return out;
}

static void test_merge_copied(void **state)
{
	(void)state;
	char *layers[2] = { layer0("zstd"), layer1("zstd") };
	struct flatten_result res;
	_cleanup_free_ char *out = flatten_ok(layers, 2, NULL, &res);
	check(out);
	assert_true(res.blocks_copied >= 2);
	assert_int_equal(res.blocks_recompressed, 0);
	assert_string_equal(res.compressor, "zstd");
	free(layers[0]);
	free(layers[1]);
}

static void test_merge_recompressed(void **state)
{
	(void)state;
	/* Layers of two compressors: the gzip one is recompressed, always. */
	char *layers[2] = { layer0("gzip"), layer1("zstd") };
	struct flatten_result res;
	struct flatten_opts o = { .compressor = "zstd" };
	_cleanup_free_ char *out = flatten_ok(layers, 2, &o, &res);
	check(out);
	assert_true(res.blocks_recompressed >= 2);
	struct flatten_opts all = { .recompress = true };
	_cleanup_free_ char *out2 = flatten_ok(layers, 2, &all, &res);
	check(out2);
	assert_string_equal(res.compressor, "gzip");        /* the bottom layer's */
	assert_int_equal(res.blocks_copied, 0);
	free(layers[0]);
	free(layers[1]);
}

static void test_bad_output(void **state)
{
	(void)state;
	char *layers[1] = { layer0("zstd") };
	_cleanup_free_ char *path = xasprintf("%s/wo-%d", tmpdir, ++seq);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	alps_error *err = NULL;
	struct flatten_result res;
	assert_int_equal(flatten_layers((const char *const *)layers, 1, fd, NULL, &res, &err), -1);
	assert_non_null(strstr(err->msg, "reading and writing"));
	alps_error_free(err);
	err = NULL;
	close(fd);
	char *missing[1] = { (char *)"/nonexistent/layer.sqfs" };
	fd = open(path, O_RDWR | O_CLOEXEC);
	assert_int_equal(flatten_layers((const char *const *)missing, 1, fd, NULL, &res, &err), -1);
	assert_non_null(strstr(err->msg, "opening layer"));
	alps_error_free(err);
	close(fd);
	free(layers[0]);
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/alps-test-flatten-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	uint32_t x = 12345;
	for (size_t i = 0; i < sizeof(big); i++) {
		x = x * 1103515245u + 12345u;
		big[i] = (uint8_t)(i % 3 ? x >> 24 : 'a');     /* compressible, not trivially */
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	_cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merge_copied),
		cmocka_unit_test(test_merge_recompressed),
		cmocka_unit_test(test_bad_output),
	};
	return cmocka_run_group_tests_name("flatten", tests, setup, teardown);
}
