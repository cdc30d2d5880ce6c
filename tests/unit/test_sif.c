/* test_sif.c: the SIF header and descriptor parser (import_sif.c), on SIF
 * files built here byte by byte as sylabs/sif lays them out. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/image/import_sif.h"

#define NDESC 4
#define DESC_OFF 128
#define DATA_OFF (DESC_OFF + NDESC * SIF_DESCRIPTOR_SIZE)
#define FILE_SIZE (DATA_OFF + 4096)

static uint8_t img[FILE_SIZE];

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Descriptor i: a used partition (fstype, parttype) at off, size bytes. */
static void partition(int i, uint32_t fstype, uint32_t parttype, uint64_t off, uint64_t size)
{
	uint8_t *d = img + DESC_OFF + i * SIF_DESCRIPTOR_SIZE;
	put32(d, 0x4004);
	d[4] = 1;
	put32(d + 5, (uint32_t)i + 1);
	put64(d + 17, off);
	put64(d + 25, size);
	memcpy(d + 73, "rootfs.squashfs", 15);
	put32(d + 201, fstype);
	put32(d + 205, parttype);
	memcpy(d + 209, "04", 3);
}

static int setup(void **state)
{
	(void)state;
	memset(img, 0, sizeof(img));
	memcpy(img, "#!/usr/bin/env run-singularity\n", 31);
	memcpy(img + 32, "SIF_MAGIC", 10);
	memcpy(img + 42, "01", 3);
	memcpy(img + 45, "02", 3);
	put64(img + 88, NDESC);
	put64(img + 96, DESC_OFF);
	put64(img + 104, NDESC * SIF_DESCRIPTOR_SIZE);
	put64(img + 112, DATA_OFF);
	/* a deffile object, then the primary squashfs partition */
	put32(img + DESC_OFF, 0x4001);
	img[DESC_OFF + 4] = 1;
	partition(1, 1, 2, DATA_OFF, 4096);
	return 0;
}

static void expect_fail(int code, const char *words)
{
	struct sif_rootfs r;
	alps_error *err = NULL;
	assert_int_equal(sif_find_rootfs_mem(img, sizeof(img), &r, &err), -1);
	assert_int_equal(err->code, code);
	if (!strstr(err->msg, words))
		fail_msg("'%s' lacks '%s'", err->msg, words);
	alps_error_free(err);
}

static void test_primary(void **state)
{
	(void)state;
	struct sif_rootfs r;
	alps_error *err = NULL;
	assert_true(sif_is_sif(img, sizeof(img)));
	if (sif_find_rootfs_mem(img, sizeof(img), &r, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(r.offset, DATA_OFF);
	assert_int_equal(r.size, 4096);
	assert_string_equal(r.arch, "arm64");
	assert_string_equal(r.name, "rootfs.squashfs");
}

static void test_not_sif(void **state)
{
	(void)state;
	img[33] = 'X';
	assert_false(sif_is_sif(img, sizeof(img)));
	expect_fail(ALPS_E_INVALID, "no SIF_MAGIC");
}

static void test_version(void **state)
{
	(void)state;
	memcpy(img + 42, "02", 3);
	expect_fail(ALPS_E_UNSUPPORTED, "version 02");
}

static void test_no_primary(void **state)
{
	(void)state;
	partition(1, 1, 3, DATA_OFF, 4096);     /* a data partition only */
	expect_fail(ALPS_E_NOT_FOUND, "no primary system partition");
	partition(1, 1, 2, DATA_OFF, 4096);
	img[DESC_OFF + SIF_DESCRIPTOR_SIZE + 4] = 0;    /* unused: ignored */
	expect_fail(ALPS_E_NOT_FOUND, "no primary system partition");
}

static void test_oci_sif(void **state)
{
	(void)state;
	partition(1, 1, 3, DATA_OFF, 4096);     /* no primary partition... */
	put32(img + DESC_OFF + 2 * SIF_DESCRIPTOR_SIZE, 0x400a);   /* ...an OCI root index */
	img[DESC_OFF + 2 * SIF_DESCRIPTOR_SIZE + 4] = 1;
	expect_fail(ALPS_E_UNSUPPORTED, "OCI-SIF");
}

static void test_two_primary(void **state)
{
	(void)state;
	partition(2, 1, 2, DATA_OFF, 1024);
	expect_fail(ALPS_E_INVALID, "two primary");
}

static void test_not_squashfs(void **state)
{
	(void)state;
	partition(1, 2, 2, DATA_OFF, 4096);
	expect_fail(ALPS_E_UNSUPPORTED, "ext3");
	partition(1, 5, 2, DATA_OFF, 4096);
	expect_fail(ALPS_E_UNSUPPORTED, "encrypted");
}

static void test_bounds(void **state)
{
	(void)state;
	partition(1, 1, 2, DATA_OFF, 4097);
	expect_fail(ALPS_E_INVALID, "does not fit");
	partition(1, 1, 2, UINT64_MAX - 10, 4096);
	expect_fail(ALPS_E_INVALID, "does not fit");
	partition(1, 1, 2, DATA_OFF, 0);
	expect_fail(ALPS_E_INVALID, "does not fit");
}

static void test_table_bounds(void **state)
{
	(void)state;
	put64(img + 88, 0);
	expect_fail(ALPS_E_INVALID, "0 descriptors");
	put64(img + 88, 1u << 20);
	expect_fail(ALPS_E_INVALID, "descriptors");
	put64(img + 88, NDESC);
	put64(img + 96, UINT64_MAX - 100);
	expect_fail(ALPS_E_INVALID, "does not fit");
	put64(img + 96, DESC_OFF);
	put64(img + 104, 10);
	expect_fail(ALPS_E_INVALID, "does not fit");
}

static void test_truncated(void **state)
{
	(void)state;
	struct sif_rootfs r;
	alps_error *err = NULL;
	for (size_t len = 0; len < DATA_OFF; len += 61) {
		assert_int_equal(sif_find_rootfs_mem(img, len, &r, &err), -1);
		assert_int_equal(err->code, ALPS_E_INVALID);
		alps_error_free(err);
		err = NULL;
	}
	/* The partition is past the end of a file cut in its data. */
	assert_int_equal(sif_find_rootfs_mem(img, DATA_OFF + 100, &r, &err), -1);
	assert_non_null(strstr(err->msg, "does not fit"));
	alps_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_primary, setup),
		cmocka_unit_test_setup(test_not_sif, setup),
		cmocka_unit_test_setup(test_version, setup),
		cmocka_unit_test_setup(test_no_primary, setup),
		cmocka_unit_test_setup(test_oci_sif, setup),
		cmocka_unit_test_setup(test_two_primary, setup),
		cmocka_unit_test_setup(test_not_squashfs, setup),
		cmocka_unit_test_setup(test_bounds, setup),
		cmocka_unit_test_setup(test_table_bounds, setup),
		cmocka_unit_test_setup(test_truncated, setup),
	};
	return cmocka_run_group_tests_name("sif", tests, NULL, NULL);
}
