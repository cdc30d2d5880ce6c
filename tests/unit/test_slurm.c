/* test_slurm.c: Slurm host list expressions (common/hostlist.h) and the
 * per-task variables of Slurm tasks (daemon/job/slurmenv.h). */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/edf.h"
#include "common/hostlist.h"
#include "daemon/job/slurmenv.h"

/* Expand expr and compare with the space-separated want. */
static void expect(const char *expr, const char *want)
{
	char **hosts;
	size_t n;
	alps_error *err = NULL;
	if (hostlist_expand(expr, 0, 0, &hosts, &n, &err) < 0)
		fail_msg("%s: %s", expr, err->msg);
	char buf[4096] = "";
	for (size_t i = 0; i < n; i++) {
		if (i)
			strcat(buf, " ");
		strcat(buf, hosts[i]);
	}
	assert_string_equal(buf, want);
	assert_null(hosts[n]);
	size_t c;
	assert_int_equal(hostlist_count(expr, &c, &err), 0);
	assert_int_equal(c, n);
	hostlist_free(hosts);
}

static void expect_error(const char *expr, const char *fragment)
{
	char **hosts;
	size_t n;
	alps_error *err = NULL;
	assert_int_equal(hostlist_expand(expr, 0, 0, &hosts, &n, &err), -1);
	assert_non_null(err);
	if (!strstr(err->msg, fragment))
		fail_msg("%s: '%s' lacks '%s'", expr, err->msg, fragment);
	alps_error_free(err);
	err = NULL;
	assert_null(hostlist_first(expr, &err));
	alps_error_free(err);
}

static void test_plain(void **state)
{
	expect("nid001", "nid001");
	expect("a,b,c", "a b c");
	expect("gpu07.cluster-x_1", "gpu07.cluster-x_1");
}

static void test_ranges(void **state)
{
	/* The example, as SLURM_JOB_NODELIST writes it. */
	expect("nid[001-004,010],gpu07", "nid001 nid002 nid003 nid004 nid010 gpu07");
	expect("n[8-11]", "n8 n9 n10 n11");
	expect("n[098-101]", "n098 n099 n100 n101");
	expect("x[1-2]y", "x1y x2y");
	expect("r[1-2]n[1-2]", "r1n1 r1n2 r2n1 r2n2");
	expect("[1-3]", "1 2 3");
	expect("a[5]", "a5");
}

static void test_first(void **state)
{
	alps_error *err = NULL;
	char *f = hostlist_first("nid[001-004,010],gpu07", &err);
	assert_string_equal(f, "nid001");
	free(f);
	/* The first host does not expand the rest, but the rest is checked. */
	f = hostlist_first("big[0000001-9999999]", &err);
	assert_null(f);
	assert_non_null(err);
	alps_error_free(err);
}

static void test_errors(void **state)
{
	expect_error("", "empty host list");
	expect_error("a,,b", "empty name");
	expect_error("a,", "ends with a comma");
	expect_error("n[1-", "a number expected");
	expect_error("n[2-1]", "goes backwards");
	expect_error("n[1,2", "unexpected end");
	expect_error("n[1x]", "unexpected character");
	expect_error("a b", "not allowed");
	expect_error("a;rm -rf", "not allowed");
	expect_error("n[0-99999]", "over 65536 hosts");
	expect_error("n[1234567890]", "number too long");
	expect_error("a[1-300]b[1-300]", "over 65536 hosts");
	char longname[300];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	expect_error(longname, "longer than");
}

static void test_limit(void **state)
{
	char **hosts;
	size_t n;
	alps_error *err = NULL;
	assert_int_equal(hostlist_expand("n[1-10]", 3, 1, &hosts, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(hosts[2], "n3");
	hostlist_free(hosts);
	assert_int_equal(hostlist_expand("n[1-10]", 3, 0, &hosts, &n, &err), -1);
	alps_error_free(err);
}

static void test_master_port(void **state)
{
	assert_int_equal(slurmenv_master_port(0, 29500, 29999), 29500);
	assert_int_equal(slurmenv_master_port(499, 29500, 29999), 29999);
	assert_int_equal(slurmenv_master_port(500, 29500, 29999), 29500);
	/* Two jobs sharing a node (consecutive ids) get different ports. */
	assert_int_not_equal(slurmenv_master_port(4242, 29500, 29999),
			     slurmenv_master_port(4243, 29500, 29999));
	assert_int_equal(slurmenv_master_port(7, 30000, 30000), 30000);
}

static void test_task_env(void **state)
{
	struct slurm_task t = { .job_id = 1001, .local_rank = 1, .global_rank = 5, .ntasks = 8,
				.nodelist = "nid[001-004,010],gpu07" };
	struct slurmenv_conf c = { .ranks = true, .master = true, .port_min = 29500,
				   .port_max = 29999 };
	char **env = NULL;
	alps_error *err = NULL;
	assert_int_equal(slurmenv_task_env(&t, &c, &env, &err), 0);
	assert_string_equal(env[0], "RANK=5");
	assert_string_equal(env[1], "LOCAL_RANK=1");
	assert_string_equal(env[2], "WORLD_SIZE=8");
	assert_string_equal(env[3], "MASTER_ADDR=nid001");
	assert_string_equal(env[4], "MASTER_PORT=29501");
	assert_null(env[5]);
	edf_strv_free(env);
	/* Each group can be switched off. */
	c.ranks = false;
	assert_int_equal(slurmenv_task_env(&t, &c, &env, &err), 0);
	assert_string_equal(env[0], "MASTER_ADDR=nid001");
	edf_strv_free(env);
	c.master = false;
	assert_int_equal(slurmenv_task_env(&t, &c, &env, &err), 0);
	assert_null(env[0]);
	edf_strv_free(env);
}

static void test_task_env_errors(void **state)
{
	struct slurmenv_conf c = { .ranks = true, .master = true, .port_min = 29500,
				   .port_max = 29999 };
	struct slurm_task t = { .job_id = 1, .global_rank = 4, .ntasks = 4, .nodelist = "n1" };
	char **env = NULL;
	alps_error *err = NULL;
	assert_int_equal(slurmenv_task_env(&t, &c, &env, &err), -1);
	assert_non_null(strstr(err->msg, "rank 4"));
	alps_error_free(err);
	err = NULL;
	t.global_rank = 0;
	t.nodelist = "bad list";
	assert_int_equal(slurmenv_task_env(&t, &c, &env, &err), -1);
	assert_non_null(strstr(err->msg, "MASTER_ADDR"));
	assert_null(env);
	alps_error_free(err);
	err = NULL;
	t.nodelist = "";
	assert_int_equal(slurmenv_task_env(&t, &c, &env, &err), -1);
	alps_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_first),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_limit),
		cmocka_unit_test(test_master_port),
		cmocka_unit_test(test_task_env),
		cmocka_unit_test(test_task_env_errors),
	};
	return cmocka_run_group_tests_name("slurm", tests, NULL, NULL);
}
