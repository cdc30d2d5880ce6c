/* test_util.c: helpers, errors, log escaping, config table. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"

static void test_parse_size(void **state)
{
	uint64_t v;
	assert_int_equal(parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(parse_size("4M", &v), 0);
	assert_int_equal(v, 4u << 20);
	assert_int_equal(parse_size("10GiB", &v), 0);
	assert_int_equal(v, 10ull << 30);
	assert_int_equal(parse_size("2t", &v), 0);
	assert_int_equal(v, 2ull << 40);
	assert_int_equal(parse_size("", &v), -1);
	assert_int_equal(parse_size("-1", &v), -1);
	assert_int_equal(parse_size("4X", &v), -1);
	assert_int_equal(parse_size("4MM", &v), -1);
	assert_int_equal(parse_size("99999999999999999999", &v), -1);
	assert_int_equal(parse_size("99999999999T", &v), -1);
}

static void test_error_chain(void **state)
{
	alps_error *err = NULL;
	assert_int_equal(alps_fail(&err, ALPS_E_NOT_FOUND, "layer %s", "x"), -1);
	assert_int_equal(alps_error_prefix(&err, "pulling %s", "img"), -1);
	assert_string_equal(err->msg, "pulling img: layer x");
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	/* The first cause wins. */
	alps_fail(&err, ALPS_E_INTERNAL, "later");
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	alps_error_free(err);
	err = NULL;
	errno = ENOENT;
	alps_fail_errno(&err, "open %s", "/nope");
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	assert_int_equal(err->errnum, ENOENT);
	assert_non_null(strstr(err->msg, "open /nope: "));
	alps_error_free(err);
	assert_string_equal(alps_code_name(ALPS_E_PERMISSION), "permission denied");
	assert_string_equal(alps_code_name(999), "unknown error");
}

static void test_log_escape(void **state)
{
	char *s = log_escape("a\nb\\c\x01\xff", 0);
	assert_string_equal(s, "a\\x0ab\\\\c\\x01\\xff");
	free(s);
	s = log_escape("abcdef", 3);
	assert_string_equal(s, "abc...");
	free(s);
}

static void test_xsnprintf(void **state)
{
	char buf[4];
	assert_int_equal(xsnprintf(buf, sizeof(buf), "%s", "abc"), 0);
	assert_int_equal(xsnprintf(buf, sizeof(buf), "%s", "abcd"), -1);
}

static char *write_temp(const char *text)
{
	char *path = xstrdup("/tmp/alps-test-conf-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, text, strlen(text)), 0);
	close(fd);
	return path;
}

static void test_config_defaults_and_set(void **state)
{
	struct config *c = config_new_defaults();
	assert_string_equal(c->compression, "zstd");
	assert_int_equal(c->max_frame_size, 4 << 20);
	assert_true(c->allow_user_run);
	alps_error *err = NULL;
	assert_int_equal(config_set(c, "daemon.socket", "/tmp/x.sock", &err), 0);
	assert_string_equal(c->socket_path, "/tmp/x.sock");
	assert_int_equal(config_set(c, "daemon.socket", "relative", &err), -1);
	assert_non_null(strstr(err->msg, "absolute"));
	alps_error_free(err);
	err = NULL;
	assert_int_equal(config_set(c, "daemon.nope", "1", &err), -1);
	assert_string_equal(err->msg, "daemon.nope: unknown key (alpsd --print-config lists every key)");
	alps_error_free(err);
	err = NULL;
	assert_int_equal(config_set(c, "jobs.alow_user_run", "1", &err), -1);
	assert_string_equal(err->msg, "jobs.alow_user_run: unknown key (did you mean "
			    "'jobs.allow_user_run'?)");
	alps_error_free(err);
	err = NULL;
	assert_int_equal(config_set(c, "daemon.max_connections", "0", &err), -1);
	assert_non_null(strstr(err->msg, "out of range"));
	alps_error_free(err);
	err = NULL;
	/* --set takes TOML values, and the plain text forms as before. */
	assert_int_equal(config_set(c, "jobs.default_mounts", "[\"/a:/b\", \"/c\"]", &err), 0);
	assert_int_equal(c->default_mounts.n, 2);
	assert_string_equal(c->default_mounts.v[1], "/c");
	assert_int_equal(config_set(c, "store.compression_level", "7", &err), 0);
	assert_int_equal(c->compression_level, 7);
	assert_int_equal(config_set(c, "jobs.allow_user_run", "false", &err), 0);
	assert_false(c->allow_user_run);
	assert_int_equal(config_set(c, "jobs.allow_user_run", "1", &err), 0);
	assert_true(c->allow_user_run);
	assert_int_equal(config_set(c, "daemon.socket", "\"/q/x.sock\"", &err), 0);
	assert_string_equal(c->socket_path, "/q/x.sock");
	assert_int_equal(config_set(c, "store.compression", "bz2", &err), -1);
	assert_string_equal(err->msg, "store.compression: 'bz2' is not one of: zstd, gzip, xz, lz4, lzo");
	alps_error_free(err);
	err = NULL;
	/* A topology file named on the command line that cannot be read
	 * stops the daemon at start. */
	assert_int_equal(config_set(c, "topology.xml", "/nonexistent/topo.xml", &err), -1);
	assert_non_null(strstr(err->msg, "topology.xml: cannot read /nonexistent/topo.xml"));
	alps_error_free(err);
	config_free(c);
}

static void test_config_file(void **state)
{
	char *path = write_temp(
		"[daemon]\nsocket = \"/tmp/a.sock\"\nmax_frame_size = \"1M\"\n"
		"[store]\ncompression_level = 6\n"
		"[topology]\nnic_patterns = [\"hsn*\"]\n"
		"[registry]\ndefault = \"example.org\"\n"
		"[[registry.host]]\nhost = \"localhost:5000\"\ninsecure = true\nmirrors = [\"m:1\"]\n");
	struct config *c = config_new_defaults();
	alps_error *err = NULL;
	assert_int_equal(config_load_file(c, path, true, &err), 0);
	assert_string_equal(c->socket_path, "/tmp/a.sock");
	assert_int_equal(c->max_frame_size, 1 << 20);
	assert_int_equal(c->compression_level, 6);
	assert_int_equal(c->nic_patterns.n, 1);
	assert_string_equal(c->default_registry, "example.org");
	const struct registry_conf *r = config_registry(c, "localhost:5000");
	assert_non_null(r);
	assert_true(r->insecure);
	assert_string_equal(r->mirrors.v[0], "m:1");
	config_free(c);
	unlink(path);
	free(path);
}

/* Each bad file gets an error naming the file, the line and the key. */
static void test_config_errors(void **state)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{ "[daemon]\nsockett = \"/x\"\n",
		  ":2:1: daemon.sockett: unknown key (did you mean 'daemon.socket'?)" },
		{ "[daemon]\ncompression_level = 3\n",
		  ":2:1: daemon.compression_level: unknown key (did you mean 'store.compression_level'?)" },
		{ "[deamon]\n", ":1:2: deamon: unknown section (did you mean [daemon]?)" },
		{ "[frobnicator]\n", ":1:2: frobnicator: unknown section" },
		{ "top = 1\n", ":1:1: top: a key outside any section" },
		{ "[store]\ncompression = \"bz2\"\n",
		  ":2:1: store.compression: 'bz2' is not one of: zstd, gzip, xz, lz4, lzo" },
		{ "[store]\ncompression_level = \"3\"\n",
		  ":2:1: store.compression_level: must be an integer, not string" },
		{ "[store]\ncompression_level = 99\n", ":2:1: store.compression_level: 99 is out of range" },
		{ "[daemon]\nsocket = 3\n", ":2:1: daemon.socket: must be a path string" },
		{ "[jobs]\nallow_user_run = \"yes\"\n", ":2:1: jobs.allow_user_run: must be true or false" },
		{ "[daemon]\nsocket = \"/x\"\nsocket = \"/y\"\n", ":3:" },
		{ "[registry]\nhost = [{ host = \"a\", bogus = 1 }]\n", ": registry.host.bogus: unknown key" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *path = write_temp(cases[i].text);
		struct config *c = config_new_defaults();
		alps_error *err = NULL;
		assert_int_equal(config_load_file(c, path, true, &err), -1);
		assert_non_null(err);
		/* One format: FILE:LINE:COL: key: reason. */
		if (!strstr(err->msg, cases[i].want) || strncmp(err->msg, path, strlen(path)) != 0)
			fail_msg("case %zu: '%s' lacks '%s' or the path", i, err->msg, cases[i].want);
		alps_error_free(err);
		config_free(c);
		unlink(path);
		free(path);
	}
}

/* What the converter would refuse is refused at load, naming the key: a
 * compressor it does not have, a level outside that compressor's range. */
static void test_config_compressor(void **state)
{
	static const struct {
		const char *text, *want;        /* want NULL: accepted */
	} cases[] = {
		{ "[store]\ncompression = \"lzo\"\n", "store.compression = 'lzo'" },
		{ "[store]\ncompression = \"gzip\"\ncompression_level = 22\n",
		  "store.compression_level = 22" },
		{ "[store]\ncompression = \"xz\"\ncompression_level = 12\n",
		  "store.compression_level = 12" },
		{ "[store]\ncompression = \"zstd\"\ncompression_level = 22\n", NULL },
		{ "[store]\ncompression = \"gzip\"\ncompression_level = 0\n", NULL },
		/* lz4 has no levels: any level > 0 selects LZ4 HC. */
		{ "[store]\ncompression = \"lz4\"\ncompression_level = 9\n", NULL },
		{ "[store]\ncompression = \"xz\"\ncompression_level = 9\n", NULL },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *path = write_temp(cases[i].text);
		struct config *c = config_new_defaults();
		alps_error *err = NULL;
		assert_int_equal(config_load_file(c, path, true, &err), 0);
		int rc = config_validate(c, &err);
		if (!cases[i].want && rc != 0)
			fail_msg("case %zu refused: %s", i, err ? err->msg : "?");
		if (cases[i].want && (rc != -1 || !err || !strstr(err->msg, cases[i].want)))
			fail_msg("case %zu: '%s' lacks '%s'", i, err ? err->msg : "(accepted)", cases[i].want);
		alps_error_free(err);
		config_free(c);
		unlink(path);
		free(path);
	}
}

static void test_config_missing_file(void **state)
{
	struct config *c = config_new_defaults();
	alps_error *err = NULL;
	assert_int_equal(config_load_file(c, "/nonexistent/alpsd.conf", false, &err), 0);
	assert_int_equal(config_load_file(c, "/nonexistent/alpsd.conf", true, &err), -1);
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	alps_error_free(err);
	config_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_error_chain),
		cmocka_unit_test(test_log_escape),
		cmocka_unit_test(test_xsnprintf),
		cmocka_unit_test(test_config_defaults_and_set),
		cmocka_unit_test(test_config_file),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_config_compressor),
		cmocka_unit_test(test_config_missing_file),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
