/* test_store_import.c: what alps import asks of the store
 * (store_import.c): who may point a tag at an imported image, and the
 * removal of the layers of a failed import. */
#include <config.h>

#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/util.h"
#include "daemon/store/store.h"

#define TAG "docker.io/local/x:1"

struct fixture {
	char dir[256];
	struct store *s;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = xzalloc(sizeof(*f));
	alps_error *err = NULL;
	snprintf(f->dir, sizeof(f->dir), "/tmp/alps-test-store-import-XXXXXX");
	if (!mkdtemp(f->dir) || store_open(f->dir, &f->s, &err) < 0) {
		alps_error_free(err);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	store_close(f->s);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void digest_of(char out[80], unsigned seed)
{
	snprintf(out, 80, "sha256:%08x%056x", seed, 0u);
}

static void layer(struct store *s, unsigned seed)
{
	char d[80];
	alps_error *err = NULL;
	digest_of(d, seed);
	_cleanup_free_ char *tmp = store_tmp_path(s);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0 && write_all(fd, "layer", 5) == 0);
	close(fd);
	struct store_layer_info info = { .digest = d, .media_type = "application/x-test" };
	if (store_layer_commit(s, tmp, &info, NULL, &err) < 0)
		fail_msg("%s", err->msg);
}

/* Image seed on layer lseed, tagged TAG, from who. */
static void image(struct store *s, unsigned seed, unsigned lseed, const struct store_origin *who)
{
	char d[80], c[80], l[80];
	const char *lp[] = { l };
	alps_error *err = NULL;
	digest_of(d, seed);
	digest_of(c, seed + 0x1000);
	digest_of(l, lseed);
	struct store_image_rec rec = { d, c, "linux/amd64", "{}", "{}" };
	if (store_image_commit(s, &rec, lp, 1, TAG, who, &err) < 0)
		fail_msg("%s", err->msg);
}

static int claim(struct store *s, unsigned seed, int64_t uid)
{
	char d[80];
	alps_error *err = NULL;
	digest_of(d, seed);
	int r = store_tag_claimable(s, TAG, d, uid, &err);
	if (r < 0) {
		assert_int_equal(err->code, ALPS_E_EXISTS);
		assert_non_null(strstr(err->msg, "choose another --tag"));
	}
	alps_error_free(err);
	return r;
}

static void test_tag_of_own_import(void **state)
{
	struct fixture *f = *state;
	struct store_origin mine = { STORE_ORIGIN_IMPORT, 1000, true };
	assert_int_equal(claim(f->s, 1, 1000), 0);      /* a free tag */
	layer(f->s, 100);
	image(f->s, 1, 100, &mine);
	assert_int_equal(claim(f->s, 1, 1001), 0);      /* the same image */
	assert_int_equal(claim(f->s, 2, 1000), 0);      /* the owner's import */
	assert_int_equal(claim(f->s, 2, 1001), -1);     /* someone else's */
	assert_int_equal(claim(f->s, 2, STORE_UID_ANY), 0);     /* an admin */
}

static void test_tag_of_pulled_image(void **state)
{
	struct fixture *f = *state;
	struct store_origin pulled = { "registry.example/x", STORE_PUBLIC, false };
	layer(f->s, 100);
	image(f->s, 1, 100, &pulled);
	assert_int_equal(claim(f->s, 2, 1000), -1);
	assert_int_equal(claim(f->s, 2, STORE_UID_ANY), 0);
}

static bool have(struct store *s, unsigned seed)
{
	char d[80];
	struct store_layer *l = NULL;
	alps_error *err = NULL;
	digest_of(d, seed);
	int r = store_layer_get(s, d, &l, &err);
	store_layer_free(l);
	alps_error_free(err);
	return r == 0;
}

static void test_drop_unused(void **state)
{
	struct fixture *f = *state;
	struct store_origin pulled = { "registry.example/x", STORE_PUBLIC, false };
	char d[80];
	alps_error *err = NULL;
	layer(f->s, 100);
	layer(f->s, 101);
	layer(f->s, 102);
	image(f->s, 1, 102, &pulled);
	digest_of(d, 101);
	assert_int_equal(store_layer_hold(f->s, d, &err), 0);
	for (unsigned seed = 100; seed <= 103; seed++) {
		digest_of(d, seed);
		store_layer_drop_unused(f->s, d);       /* 103: not there, fine */
	}
	assert_false(have(f->s, 100));  /* unused: gone */
	assert_true(have(f->s, 101));   /* held by a pull or import */
	assert_true(have(f->s, 102));   /* an image uses it */
	digest_of(d, 101);
	store_layer_release(f->s, d);
	assert_int_equal(store_verify(f->s, &err), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tag_of_own_import, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tag_of_pulled_image, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_unused, setup, teardown),
	};
	return cmocka_run_group_tests_name("store_import", tests, NULL, NULL);
}
