/* test_peers.c: the per-uid bookkeeping behind the server's limits. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/server/peers.h"

static struct config *limits(int64_t max, int64_t reserved, int64_t per_uid)
{
	struct config *c = config_new_defaults();
	c->max_connections = max;
	c->reserved_connections = reserved;
	c->max_connections_per_uid = per_uid;
	return c;
}

static void remove_all(struct peer_table *t)
{
	while (t->uids)
		peer_remove(t, t->uids);
}

static void test_per_uid_share_root_exempt(void **state)
{
	struct config *cfg = limits(100, 10, 3);
	struct peer_table t = { 0 };
	for (int i = 0; i < 3; i++) {
		assert_null(peer_refusal(&t, cfg, 1000, false));
		peer_add(&t, 1000);
	}
	char *why = peer_refusal(&t, cfg, 1000, false);
	assert_non_null(why);
	assert_non_null(strstr(why, "uid 1000 already has 3 connections"));
	free(why);
	assert_null(peer_refusal(&t, cfg, 1001, false));   /* another user: its own share */
	for (int i = 0; i < 5; i++)
		peer_add(&t, 0);
	assert_null(peer_refusal(&t, cfg, 0, true));       /* root has no share */
	assert_int_equal(t.nconns, 8);
	remove_all(&t);
	config_free(cfg);
}

static void test_reserve_for_admins(void **state)
{
	struct config *cfg = limits(10, 4, 100);
	struct peer_table t = { 0 };
	for (int i = 0; i < 6; i++)
		peer_add(&t, 1000);
	char *why = peer_refusal(&t, cfg, 1001, false);
	assert_non_null(why);
	assert_non_null(strstr(why, "kept for root and administrators"));
	free(why);
	assert_null(peer_refusal(&t, cfg, 1002, true));    /* an admin */
	for (int i = 0; i < 4; i++)
		peer_add(&t, 0);
	why = peer_refusal(&t, cfg, 0, true);              /* the cap holds for all */
	assert_non_null(why);
	free(why);
	remove_all(&t);
	/* The reserve is at most half of the slots. */
	cfg->reserved_connections = 1000;
	for (int i = 0; i < 4; i++)
		peer_add(&t, 1000);
	assert_null(peer_refusal(&t, cfg, 1001, false));
	peer_add(&t, 1000);
	why = peer_refusal(&t, cfg, 1001, false);
	assert_non_null(why);
	free(why);
	remove_all(&t);
	config_free(cfg);
}

static void test_queued_over_and_back_at_half(void **state)
{
	struct peer_table t = { 0 };
	struct peer_uid *u = peer_add(&t, 1000);
	assert_false(peer_queued(u, 0, 900, 1000));
	assert_false(u->over);
	assert_false(peer_queued(u, 0, 200, 1000));        /* a second connection's */
	assert_true(u->over);
	assert_false(peer_queued(u, 900, 400, 1000));      /* 600: not yet half */
	assert_true(u->over);
	assert_true(peer_queued(u, 200, 100, 1000));       /* 500: back */
	assert_false(u->over);
	struct peer_uid *root = peer_add(&t, 0);
	assert_false(peer_queued(root, 0, 5000, 1000));
	assert_false(root->over);                          /* root is never over */
	peer_recheck(&t, 100);
	assert_true(u->over);
	assert_false(root->over);
	remove_all(&t);
}

static void test_input_cap_at_least_a_frame(void **state)
{
	struct config *cfg = config_new_defaults();
	cfg->max_input_per_uid = 1000;
	cfg->max_frame_size = 4096;
	struct peer_table t = { 0 };
	struct peer_uid *u = peer_add(&t, 1000);
	assert_false(peer_input(u, 0, 4000, cfg));         /* one frame always fits */
	assert_true(peer_input(u, 0, 200, cfg));           /* the one that grew is cut */
	assert_false(peer_input(u, 200, 0, NULL));         /* shrinking needs no cap */
	assert_int_equal(u->input, 4000);
	remove_all(&t);
	config_free(cfg);
}

static void test_frames_per_turn(void **state)
{
	struct peer_uid u = { .uid = 1000 };
	for (int i = 0; i < 3; i++)
		assert_true(peer_take_frame(&u, 7, 3));
	assert_false(peer_take_frame(&u, 7, 3));
	assert_true(peer_take_frame(&u, 8, 3));            /* a new turn */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_per_uid_share_root_exempt),
		cmocka_unit_test(test_reserve_for_admins),
		cmocka_unit_test(test_queued_over_and_back_at_half),
		cmocka_unit_test(test_input_cap_at_least_a_frame),
		cmocka_unit_test(test_frames_per_turn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
