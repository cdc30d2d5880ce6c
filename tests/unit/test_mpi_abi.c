/* test_mpi_abi.c: the MPI hook's version numbers (daemon/hooks/inject.h,
 * mpi_version): those after the last ".so." of a real file name, missing
 * ones 0, as Sarus's MPI hook reads them; names a site or an image could
 * give that are not numbers. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/hooks/inject.h"

static void expect(const char *name, unsigned a, unsigned b, unsigned c)
{
	unsigned v[3] = { 7, 7, 7 };
	mpi_version(name, v);
	if (v[0] != a || v[1] != b || v[2] != c)
		fail_msg("%s: %u.%u.%u, expected %u.%u.%u", name, v[0], v[1], v[2], a, b, c);
}

static void test_versions(void **state)
{
	(void)state;
	expect("libmpi.so.12.1.1", 12, 1, 1);
	expect("libmpi.so.12", 12, 0, 0);
	expect("libmpi_gnu_123.so.12.0.0", 12, 0, 0);          /* Cray's names */
	expect("/opt/x.so.9/lib/libmpi.so.12.5", 12, 5, 0);    /* the last ".so." */
	expect("libmpi.so", 0, 0, 0);
	expect("libmpi.so.", 0, 0, 0);
	expect("libmpi.so.x.1", 0, 0, 0);
	expect("libmpi.so.12.1.1.9", 12, 1, 1);
	expect("libmpi.so.12..3", 12, 0, 0);
	expect("libmpi.so.99999999999999999999.1", 999999, 1, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_versions),
	};
	return cmocka_run_group_tests_name("mpi_abi", tests, NULL, NULL);
}
