/* test_toml.c: the TOML parser beyond the toml-test corpus: positions,
 * messages, ordering, limits, and inputs that are not NUL-terminated. */
#include <config.h>

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/toml.h"
#include "common/util.h"

/* Parse exactly len bytes from a copy of their own, so that AddressSanitizer
 * catches a read past the end. */
static int parse_n(const char *text, size_t len, toml_value **out, struct toml_error *err)
{
	_cleanup_free_ char *copy = xmemdup(text, len ? len : 1);
	return toml_parse(copy, len, out, err);
}

static toml_value *parse_ok(const char *text)
{
	toml_value *root = NULL;
	struct toml_error err;

	if (parse_n(text, strlen(text), &root, &err) < 0)
		fail_msg("unexpected error at %d:%d: %s\n--\n%s", err.line, err.col, err.msg, text);
	assert_non_null(root);
	assert_int_equal(root->type, TOML_TABLE);
	return root;
}

/* The document is rejected at line:col with a message containing msg. */
static void parse_err_n(const char *text, size_t len, int line, int col, const char *msg)
{
	toml_value *root = (toml_value *)1;
	struct toml_error err;

	if (parse_n(text, len, &root, &err) == 0)
		fail_msg("accepted: %s", text);
	assert_null(root);
	if (!strstr(err.msg, msg))
		fail_msg("message \"%s\", want \"%s\" for: %s", err.msg, msg, text);
	if (err.line != line || err.col != col)
		fail_msg("error \"%s\" at %d:%d, want %d:%d for: %s", err.msg, err.line, err.col,
			 line, col, text);
}

static void parse_err(const char *text, int line, int col, const char *msg)
{
	parse_err_n(text, strlen(text), line, col, msg);
}

/* The one value of "v = ..." */
static toml_value *value_of(const char *text, toml_value **root)
{
	*root = parse_ok(text);
	toml_value *v = toml_get(*root, "v");
	assert_non_null(v);
	return v;
}

static void test_document(void **state ALPS_UNUSED)
{
	_cleanup_toml_ toml_value *root = parse_ok(
		"# alpsd.toml\n"
		"title = \"alps\"\n"
		"[store]\n"
		"path = '/var/lib/alps'   # trailing comment\n"
		"  size  =  50\n"
		"[[registry]]\n"
		"host = \"docker.io\"\n"
		"[[registry]]\n"
		"host = \"ghcr.io\"\n");

	assert_int_equal(root->u.tab.n, 3);
	assert_string_equal(root->u.tab.keys[0], "title");
	assert_string_equal(root->u.tab.keys[1], "store");
	assert_string_equal(root->u.tab.keys[2], "registry");

	toml_value *store = toml_get(root, "store");
	assert_int_equal(store->type, TOML_TABLE);
	assert_int_equal(store->line, 3);
	assert_int_equal(store->col, 1);
	assert_int_equal(root->u.tab.key_line[1], 3);
	assert_int_equal(root->u.tab.key_col[1], 2);

	toml_value *path = toml_get(store, "path");
	assert_int_equal(path->type, TOML_STRING);
	assert_string_equal(path->u.str.ptr, "/var/lib/alps");
	assert_int_equal(path->line, 4);
	assert_int_equal(path->col, 8);
	toml_value *size = toml_get(store, "size");
	assert_int_equal(size->u.i, 50);
	assert_int_equal(size->line, 5);
	assert_int_equal(size->col, 12);
	assert_int_equal(store->u.tab.key_line[1], 5);
	assert_int_equal(store->u.tab.key_col[1], 3);

	toml_value *reg = toml_get(root, "registry");
	assert_int_equal(reg->type, TOML_ARRAY);
	assert_int_equal(reg->u.arr.n, 2);
	assert_string_equal(toml_get(reg->u.arr.items[1], "host")->u.str.ptr, "ghcr.io");
	assert_int_equal(reg->u.arr.items[1]->line, 8);
}

static void test_integers(void **state ALPS_UNUSED)
{
	static const struct {
		const char *text;
		int64_t v;
	} ok[] = {
		{ "v = 0", 0 },
		{ "v = +0", 0 },
		{ "v = -0", 0 },
		{ "v = 1_000_000", 1000000 },
		{ "v = -17", -17 },
		{ "v = 0xDEAD_beef", 0xdeadbeef },
		{ "v = 0x00ff", 255 },
		{ "v = 0o755", 0755 },
		{ "v = 0b1101", 13 },
		{ "v = 9223372036854775807", INT64_MAX },
		{ "v = -9223372036854775808", INT64_MIN },
		{ "v = 0x7fffffffffffffff", INT64_MAX },
	};
	for (size_t k = 0; k < ARRAY_SIZE(ok); k++) {
		_cleanup_toml_ toml_value *root = NULL;
		toml_value *v = value_of(ok[k].text, &root);
		assert_int_equal(v->type, TOML_INTEGER);
		assert_true(v->u.i == ok[k].v);
	}
	parse_err("v = 9223372036854775808", 1, 5, "integer out of range");
	parse_err("v = -9223372036854775809", 1, 5, "integer out of range");
	parse_err("v = 0x8000000000000000", 1, 5, "integer out of range");
	parse_err("v = 99999999999999999999999", 1, 5, "integer out of range");
	parse_err("v = 012", 1, 5, "leading zero in a decimal number");
	parse_err("v = 1__2", 1, 6, "'_' in a number must be between digits");
	parse_err("v = 12_", 1, 7, "'_' in a number must be between digits");
	parse_err("v = -0x1", 1, 5, "a prefixed integer cannot have a sign");
	parse_err("v = 0x", 1, 7, "expected a digit in a hexadecimal integer, found end of file");
	parse_err("v = 0b102", 1, 9, "invalid integer: unexpected '2'");
	parse_err("v = 1a", 1, 6, "invalid integer: unexpected 'a'");
}

static void test_floats(void **state ALPS_UNUSED)
{
	static const struct {
		const char *text;
		double v;
	} ok[] = {
		{ "v = 1.5", 1.5 },
		{ "v = -0.25", -0.25 },
		{ "v = 1e3", 1000.0 },
		{ "v = 6.25E-2", 0.0625 },
		{ "v = 1_000.5", 1000.5 },
		{ "v = 0.000_1", 0.0001 },
		{ "v = 1e0_1", 10.0 },
		{ "v = 1e-400", 0.0 },
	};
	for (size_t k = 0; k < ARRAY_SIZE(ok); k++) {
		_cleanup_toml_ toml_value *root = NULL;
		toml_value *v = value_of(ok[k].text, &root);
		assert_int_equal(v->type, TOML_FLOAT);
		assert_true(v->u.f == ok[k].v);
	}
	_cleanup_toml_ toml_value *root = parse_ok("a = inf\nb = -inf\nc = nan\nd = -nan\ne = +nan");
	assert_true(isinf(toml_get(root, "a")->u.f) && toml_get(root, "a")->u.f > 0);
	assert_true(isinf(toml_get(root, "b")->u.f) && toml_get(root, "b")->u.f < 0);
	assert_true(isnan(toml_get(root, "c")->u.f));
	assert_true(isnan(toml_get(root, "d")->u.f));
	assert_true(isnan(toml_get(root, "e")->u.f));

	parse_err("v = 1e400", 1, 5, "float out of range");
	parse_err("v = 1.", 1, 7, "expected a digit in the fraction of a float");
	parse_err("v = .5", 1, 5, "expected a value, found '.'");
	parse_err("v = 1e", 1, 7, "expected a digit in the exponent of a float");
	parse_err("v = 01.5", 1, 5, "leading zero in a decimal number");
	parse_err("v = 1.5.", 1, 8, "invalid float: unexpected '.'");
	parse_err("v = infinity", 1, 8, "invalid float: unexpected 'i'");
}

static void test_strings(void **state ALPS_UNUSED)
{
	static const struct {
		const char *text;
		const char *v;
	} ok[] = {
		{ "v = \"a\\tb\\n\\\"\\\\\\b\\f\\r\"", "a\tb\n\"\\\b\f\r" },
		{ "v = \"\\u00e9\\U0001F600\"", "\xc3\xa9\xf0\x9f\x98\x80" },
		{ "v = 'C:\\path\\n'", "C:\\path\\n" },
		{ "v = \"\"\"\nfirst\nsecond\"\"\"", "first\nsecond" },
		{ "v = \"\"\"\r\nCR\r\nLF\"\"\"", "CR\nLF" },
		{ "v = \"\"\"one \\\n    two \\  \n\n  three\"\"\"", "one two three" },
		{ "v = \"\"\"two \"\"quotes\"\" at the end\"\"\"\"\"", "two \"\"quotes\"\" at the end\"\"" },
		{ "v = '''\n'raw' \\n''''", "'raw' \\n'" },
		{ "v = \"tab\there\"", "tab\there" },
		{ "v = \"\"", "" },
	};
	for (size_t k = 0; k < ARRAY_SIZE(ok); k++) {
		_cleanup_toml_ toml_value *root = NULL;
		toml_value *v = value_of(ok[k].text, &root);
		assert_int_equal(v->type, TOML_STRING);
		assert_string_equal(v->u.str.ptr, ok[k].v);
		assert_int_equal(v->u.str.len, strlen(ok[k].v));
	}
	parse_err("v = \"a\\qb\"", 1, 7, "invalid escape '\\q' in string");
	parse_err("v = \"\\uD800\"", 1, 6, "escape '\\uD800' is not a Unicode scalar value");
	parse_err("v = \"\\U00110000\"", 1, 6, "escape '\\U00110000' is not a Unicode scalar value");
	parse_err("v = \"\\u12\"", 1, 6, "invalid escape '\\u': expected 4 hex digits");
	parse_err("v = \"abc", 1, 5, "unterminated string");
	parse_err("v = \"abc\nd\"", 1, 9, "newline in a single-line string");
	parse_err("v = '''abc''''''", 1, 16, "too many quotes closing a multi-line string");
	parse_err("v = \"a\x01\"", 1, 7, "control character U+0001 in a string");
	parse_err("v = \"\"\"a\rb\"\"\"", 1, 9, "carriage return not followed by a newline");
	parse_err("v = \"a\" \"b\"", 1, 9, "expected a newline after a value, found '\"'");
}

static void test_nul_in_strings(void **state ALPS_UNUSED)
{
	_cleanup_toml_ toml_value *root = parse_ok("v = \"a\\u0000b\"\n\"k\\u0000ey\" = 1\n");
	toml_value *v = toml_get(root, "v");

	assert_int_equal(v->u.str.len, 3);
	assert_memory_equal(v->u.str.ptr, "a\0b", 4);
	assert_int_equal(root->u.tab.key_len[1], 4);
	assert_memory_equal(root->u.tab.keys[1], "k\0ey", 5);
	assert_non_null(toml_getn(root, "k\0ey", 4));
	/* A C-string lookup must not match on the part before the NUL. */
	assert_null(toml_get(root, "k"));

	/* A raw NUL byte is a control character, not an escape. */
	parse_err_n("v = \"a\0b\"", 9, 1, 7, "control character U+0000 in a string");
	parse_err_n("v = 1 # \0", 9, 1, 9, "control character U+0000 in a comment");
	parse_err_n("\0", 1, 1, 1, "expected a key, found U+0000");
}

static void test_datetimes(void **state ALPS_UNUSED)
{
	static const struct {
		const char *text;
		enum toml_type type;
		const char *v;
	} ok[] = {
		{ "v = 1979-05-27T07:32:00Z", TOML_DATETIME, "1979-05-27T07:32:00Z" },
		{ "v = 1979-05-27t07:32:00z", TOML_DATETIME, "1979-05-27T07:32:00Z" },
		{ "v = 1979-05-27 07:32:00.999999-07:00", TOML_DATETIME,
		  "1979-05-27T07:32:00.999999-07:00" },
		{ "v = 1979-05-27T07:32:00", TOML_DATETIME_LOCAL, "1979-05-27T07:32:00" },
		{ "v = 1979-05-27", TOML_DATE_LOCAL, "1979-05-27" },
		{ "v = 1979-05-27 # a date, then a comment", TOML_DATE_LOCAL, "1979-05-27" },
		{ "v = 07:32:00.5", TOML_TIME_LOCAL, "07:32:00.5" },
		{ "v = 2024-02-29", TOML_DATE_LOCAL, "2024-02-29" },
		{ "v = 2000-02-29", TOML_DATE_LOCAL, "2000-02-29" },
		{ "v = 1990-12-31T23:59:60Z", TOML_DATETIME, "1990-12-31T23:59:60Z" },
	};
	for (size_t k = 0; k < ARRAY_SIZE(ok); k++) {
		_cleanup_toml_ toml_value *root = NULL;
		toml_value *v = value_of(ok[k].text, &root);
		assert_int_equal(v->type, ok[k].type);
		assert_string_equal(v->u.datetime, ok[k].v);
	}
	parse_err("v = 1900-02-29", 1, 13, "day 29 out of range for 1900-02");
	parse_err("v = 2023-04-31", 1, 13, "day 31 out of range for 2023-04");
	parse_err("v = 2023-13-01", 1, 10, "month 13 out of range (01 to 12)");
	parse_err("v = 2023-01-01T24:00:00", 1, 16, "hour 24 out of range (00 to 23)");
	parse_err("v = 12:60:00", 1, 8, "minute 60 out of range (00 to 59)");
	parse_err("v = 12:00:61", 1, 11, "second 61 out of range (00 to 60)");
	parse_err("v = 2023-01-01T00:00:00+24:00", 1, 25, "offset hour 24 out of range");
	parse_err("v = 2023-01-01T00:00", 1, 21, "expected ':' after the minute");
	parse_err("v = 2023-01-01T", 1, 16, "expected 2 digits for the hour, found end of file");
	parse_err("v = 2023-1-01", 1, 10, "expected 2 digits for the month");
	parse_err("v = 07:32:00Z", 1, 13, "invalid date or time: unexpected 'Z'");
}

static void test_arrays_and_inline_tables(void **state ALPS_UNUSED)
{
	_cleanup_toml_ toml_value *root = parse_ok(
		"v = [ 1, 'two', [3.0], {four = 4}, # comment\n"
		"      1979-05-27,\n"
		"]\n"
		"t = { a.b = 1, a.c = 2, d = {} }\n");
	toml_value *v = toml_get(root, "v");

	assert_int_equal(v->u.arr.n, 5);
	assert_int_equal(v->u.arr.items[0]->type, TOML_INTEGER);
	assert_int_equal(v->u.arr.items[1]->type, TOML_STRING);
	assert_int_equal(v->u.arr.items[2]->type, TOML_ARRAY);
	assert_int_equal(v->u.arr.items[3]->type, TOML_TABLE);
	assert_int_equal(v->u.arr.items[4]->type, TOML_DATE_LOCAL);
	assert_int_equal(v->u.arr.items[4]->line, 2);
	assert_int_equal(v->u.arr.items[4]->col, 7);
	assert_int_equal(toml_get_path(root, "t.a.c")->u.i, 2);
	assert_int_equal(toml_get_path(root, "t.d")->u.tab.n, 0);

	parse_err("v = [1,,2]", 1, 8, "expected a value, found ','");
	parse_err("v = [1 2]", 1, 8, "expected ',' or ']' after an array item, found '2'");
	parse_err("v = [1,\n2", 1, 5, "unterminated array");
	parse_err("v = {a = 1,}", 1, 12, "trailing comma in an inline table");
	parse_err("v = {a = 1,\nb = 2}", 1, 12, "inline table must be on one line");
	parse_err("v = {a = 1", 1, 5, "unterminated inline table");
	parse_err("v = {a = 1, a = 2}", 1, 13, "duplicate key 'a'");
}

static void test_order(void **state ALPS_UNUSED)
{
	_cleanup_toml_ toml_value *root = parse_ok(
		"z = 1\n"
		"y.b = 2\n"
		"y.a = 3\n"
		"x = 4\n"
		"[m.n]\n"
		"[c]\n"
		"[m]\n"
		"k = 5\n");
	static const char *const want[] = { "z", "y", "x", "m", "c" };

	assert_int_equal(root->u.tab.n, ARRAY_SIZE(want));
	for (size_t k = 0; k < ARRAY_SIZE(want); k++) {
		assert_string_equal(root->u.tab.keys[k], want[k]);
		assert_int_equal(toml_index(root, want[k]), (long)k);
	}
	toml_value *y = toml_get(root, "y");
	assert_string_equal(y->u.tab.keys[0], "b");
	assert_string_equal(y->u.tab.keys[1], "a");
	toml_value *m = toml_get(root, "m");
	assert_string_equal(m->u.tab.keys[0], "n");
	assert_string_equal(m->u.tab.keys[1], "k");
	/* [m] defined the table that [m.n] implied: it is placed there. */
	assert_int_equal(m->line, 7);
	assert_int_equal(root->u.tab.key_line[3], 7);
	assert_int_equal(root->u.tab.key_col[3], 2);
}

static void test_redefinitions(void **state ALPS_UNUSED)
{
	static const char *const ok[] = {
		"[a.b]\n[a]\n",
		"[a]\nb.c = 1\n[a.b.d]\n",
		"a.b.c = 1\na.b.d = 2\n",
		"[[a]]\n[a.b]\n[[a]]\n[a.b]\n",
		"[a.b.c]\n[a]\nb.d = 1\n",
		"[[a.b]]\n[a]\n",
		"t = {}\nu = []\n",
	};
	for (size_t k = 0; k < ARRAY_SIZE(ok); k++)
		toml_free(parse_ok(ok[k]));

	parse_err("name = 1\nname = 2", 2, 1, "duplicate key 'name'");
	parse_err("[a]\n[a]", 2, 2, "table 'a' defined twice");
	parse_err("[a.b]\n[a]\n[a]", 3, 2, "table 'a' defined twice");
	parse_err("a.b = 1\n[a]", 2, 2, "cannot define table 'a': it is already a table defined by dotted keys");
	parse_err("[a.b]\nc = 1\n[a]\nb.d = 2", 4, 1, "cannot add to 'b' with dotted keys: it is a table defined by a header");
	parse_err("a = {}\n[a.b]", 2, 2, "cannot extend 'a' with a header: it is an inline table");
	parse_err("a = {b = 1}\na.c = 2", 2, 1, "cannot add to 'a' with dotted keys: it is an inline table");
	parse_err("a = []\n[[a]]", 2, 3, "cannot define array of tables 'a': it is already a static array");
	parse_err("a = [{}]\n[a.b]", 2, 2, "cannot extend 'a' with a header: it is a static array");
	parse_err("[[a]]\n[a]", 2, 2, "cannot define table 'a': it is already an array of tables");
	parse_err("[a]\n[[a]]", 2, 3, "cannot define array of tables 'a': it is already a table");
	parse_err("a = 1\n[a.b]", 2, 2, "cannot extend 'a' with a header: it is an integer");
	parse_err("a = 1\na.b = 2", 2, 1, "cannot add to 'a' with dotted keys: it is an integer");
	parse_err("\"a.b\" = 1\n\"a.b\" = 2", 2, 1, "duplicate key '\"a.b\"'");
}

/* "v = " and depth brackets; the innermost value is at depth `depth`. */
static char *nested(const char *open, const char *close, int depth)
{
	size_t n = 4 + depth * (strlen(open) + strlen(close)) + 1;
	char *s = xmalloc(n + 1);
	size_t at = 0;

	at += snprintf(s + at, n + 1 - at, "v = ");
	for (int k = 0; k < depth - 1; k++)
		at += snprintf(s + at, n + 1 - at, "%s", open);
	at += snprintf(s + at, n + 1 - at, "1");
	for (int k = 0; k < depth - 1; k++)
		at += snprintf(s + at, n + 1 - at, "%s", close);
	return s;
}

static void test_nesting_limit(void **state ALPS_UNUSED)
{
	/* v is at depth 1; TOML_MAX_DEPTH levels are fine, one more is not. */
	_cleanup_free_ char *arr_ok = nested("[", "]", TOML_MAX_DEPTH);
	_cleanup_free_ char *arr_deep = nested("[", "]", TOML_MAX_DEPTH + 1);
	_cleanup_free_ char *tab_ok = nested("{a=", "}", TOML_MAX_DEPTH);
	_cleanup_free_ char *tab_deep = nested("{a=", "}", TOML_MAX_DEPTH + 1);
	_cleanup_free_ char *huge = nested("[", "]", 100000);

	toml_free(parse_ok(arr_ok));
	toml_free(parse_ok(tab_ok));
	/* The error is at the first value too deep: the innermost "1". */
	parse_err(arr_deep, 1, 5 + TOML_MAX_DEPTH, "nesting deeper than 128 levels");
	parse_err(tab_deep, 1, 5 + 3 * TOML_MAX_DEPTH, "nesting deeper than 128 levels");
	/* Deep enough to overflow the stack without the limit. */
	parse_err(huge, 1, 5 + TOML_MAX_DEPTH, "nesting deeper than 128 levels");

	/* Dotted keys and headers nest tables too. */
	struct buf {
		char s[4 * (TOML_MAX_DEPTH + 2) + 16];
		size_t n;
	} key = { .n = 0 };
	for (int k = 0; k <= TOML_MAX_DEPTH; k++)
		key.n += snprintf(key.s + key.n, sizeof(key.s) - key.n, "%sk", k ? "." : "");
	_cleanup_free_ char *dotted = xasprintf("%s = 1", key.s);
	_cleanup_free_ char *header = xasprintf("[%s]", key.s);
	parse_err(dotted, 1, 1 + 2 * TOML_MAX_DEPTH, "key has more than 128 parts");
	parse_err(header, 1, 2 + 2 * TOML_MAX_DEPTH, "key has more than 128 parts");
	/* Headers and values add up: a is at depth 1, b at 2, v at 3, so the
	 * array that opens at index 126 of the brackets is at depth 129. */
	_cleanup_free_ char *mixed_inner = nested("[", "]", TOML_MAX_DEPTH);
	_cleanup_free_ char *mixed = xasprintf("[a.b]\n%s", mixed_inner);
	parse_err(mixed, 2, 5 + 126, "nesting deeper than 128 levels");
}

static void test_utf8(void **state ALPS_UNUSED)
{
	_cleanup_toml_ toml_value *root = parse_ok("\"\xc3\xa9t\xc3\xa9\" = \"\xe2\x82\xac \xf0\x9f\x98\x80\"");
	assert_string_equal(toml_get(root, "\xc3\xa9t\xc3\xa9")->u.str.ptr, "\xe2\x82\xac \xf0\x9f\x98\x80");
	/* Columns count characters: the 'x' is the 13th character. */
	parse_err("\"\xc3\xa9t\xc3\xa9\" = \"\xe2\x82\xac\" x", 1, 13, "expected a newline after a value");

	parse_err("v = \"\xff\"", 1, 6, "invalid UTF-8 (byte 0xFF)");
	parse_err("# \xc0\x80 overlong\n", 1, 3, "invalid UTF-8 (byte 0xC0)");
	parse_err("v = 1\nw = '\xed\xa0\x80'", 2, 6, "invalid UTF-8 (byte 0xED)");
	parse_err("v = '\xf4\x90\x80\x80'", 1, 6, "invalid UTF-8 (byte 0xF4)");
	parse_err("v = '\xe2\x82'", 1, 6, "invalid UTF-8 (byte 0xE2)");
	parse_err_n("v = 'ok' # \xe2\x82", 13, 1, 12, "invalid UTF-8 (byte 0xE2)");
	parse_err("v = 1\n\xe3\x80\x80", 2, 1, "expected a key, found U+3000");
}

static void test_crlf_and_bom(void **state ALPS_UNUSED)
{
	_cleanup_toml_ toml_value *root = parse_ok("\xef\xbb\xbf" "a = 1\r\n[t]\r\nb = [\r\n 2,\r\n]\r\n");

	assert_int_equal(toml_get(root, "a")->col, 5);
	assert_int_equal(toml_get(root, "a")->line, 1);
	assert_int_equal(toml_get_path(root, "t.b")->line, 3);
	assert_int_equal(toml_get_path(root, "t.b")->u.arr.items[0]->line, 4);
	parse_err("a = 1\rb = 2", 1, 6, "carriage return not followed by a newline");
	parse_err("a = 1 # c\r", 1, 10, "control character U+000D in a comment");
	parse_err("a = 1\n\xef\xbb\xbf" "b = 2", 2, 1, "expected a key, found U+FEFF");
	parse_err("\xef\xbb\xbf" "a = x", 1, 5, "expected a value, found 'x'");
}

static void test_error_messages(void **state ALPS_UNUSED)
{
	parse_err("key value", 1, 5, "expected '=' after key, found 'v'");
	parse_err("key", 1, 4, "expected '=' after key, found end of file");
	parse_err("key =", 1, 6, "expected a value, found end of file");
	parse_err("= 1", 1, 1, "expected a key, found '='");
	parse_err("a.\n", 1, 3, "expected a key, found end of line");
	parse_err("a = 1 b = 2", 1, 7, "expected a newline after a value, found 'b'");
	parse_err("[t] x", 1, 5, "expected a newline after a table header, found 'x'");
	parse_err("[t", 1, 3, "expected ']' to close the header, found end of file");
	parse_err("[[t]", 1, 5, "expected ']]' to close the header, found end of file");
	parse_err("[]", 1, 2, "expected a key, found ']'");
	parse_err("\"\"\"k\"\"\" = 1", 1, 1, "a key cannot be a multi-line string");
	parse_err("a = tru", 1, 5, "invalid value (expected true or false)");
	parse_err("a = truely", 1, 5, "invalid value (expected true or false)");
	parse_err("a = \x7f", 1, 5, "expected a value, found U+007F");
	parse_err("# comment\x7f", 1, 10, "control character U+007F in a comment");
	parse_err("\n\n   [a]\n  b = @", 4, 7, "expected a value, found '@'");
}

/* Every prefix of a document that uses every construct: each either
 * parses or fails with a position, and none reads past its end. */
static void test_truncated_inputs(void **state ALPS_UNUSED)
{
	static const char doc[] =
		"\xef\xbb\xbf# c\r\n"
		"a = \"s\\u00e9\\U0001F600\\t\" # x\n"
		"b = '''\nlit'''\n"
		"c = \"\"\"ml \\\n  x\"\"\"\n"
		"d = [0x1f, 0o7, 0b1, -1_000, +1.5e-3, inf, -nan, true, false]\n"
		"e = 1979-05-27T07:32:00.5+01:00\n"
		"f = {g.h = 07:32:00, i = 1979-05-27 07:32:00, j = 1979-05-27}\n"
		"[k.\"l\".'m']\n"
		"[[n]]\n"
		"o.p = \"\xe2\x82\xac\"\n";

	for (size_t len = 0; len < sizeof(doc) - 1; len++) {
		toml_value *root = NULL;
		struct toml_error err;
		if (parse_n(doc, len, &root, &err) == 0) {
			toml_free(root);
			continue;
		}
		assert_null(root);
		assert_true(err.line >= 1 && err.col >= 1);
		assert_true(err.msg[0] != '\0');
	}
	toml_free(parse_ok(doc));
}

static void test_lookups(void **state ALPS_UNUSED)
{
	_cleanup_toml_ toml_value *root = parse_ok("a.b.c = 1\nx = [1]\n");

	assert_int_equal(toml_get_path(root, "a.b.c")->u.i, 1);
	assert_int_equal(toml_get_path(root, "a.b")->type, TOML_TABLE);
	assert_null(toml_get_path(root, "a.x.c"));
	assert_null(toml_get_path(root, "x.y"));
	assert_null(toml_get(toml_get(root, "x"), "y"));
	assert_null(toml_get(NULL, "y"));
	assert_int_equal(toml_index(root, "x"), 1);
	assert_int_equal(toml_index(root, "nope"), -1);
	assert_string_equal(toml_type_name(TOML_DATETIME_LOCAL), "datetime-local");
	assert_string_equal(toml_type_name(TOML_TABLE), "table");

	/* An empty document is an empty table; err may be NULL. */
	toml_value *empty = NULL;
	assert_int_equal(toml_parse(NULL, 0, &empty, NULL), 0);
	assert_int_equal(empty->u.tab.n, 0);
	toml_free(empty);
	assert_int_equal(toml_parse("a =", 3, &empty, NULL), -1);
	assert_null(empty);
}

static void test_many_keys(void **state ALPS_UNUSED)
{
	/* Enough keys that a lookup per key must not be linear. */
	enum { N = 50000 };
	size_t cap = N * 24, n = 0;
	_cleanup_free_ char *doc = xmalloc(cap);

	for (int k = 0; k < N; k++)
		n += snprintf(doc + n, cap - n, "k%d = %d\n", k, k);
	_cleanup_toml_ toml_value *root = parse_ok(doc);
	assert_int_equal(root->u.tab.n, N);
	assert_int_equal(toml_get(root, "k49999")->u.i, 49999);
	n += snprintf(doc + n, cap - n, "k777 = 0\n");
	parse_err(doc, N + 1, 1, "duplicate key 'k777'");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_document),
		cmocka_unit_test(test_integers),
		cmocka_unit_test(test_floats),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_nul_in_strings),
		cmocka_unit_test(test_datetimes),
		cmocka_unit_test(test_arrays_and_inline_tables),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_redefinitions),
		cmocka_unit_test(test_nesting_limit),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_crlf_and_bom),
		cmocka_unit_test(test_error_messages),
		cmocka_unit_test(test_truncated_inputs),
		cmocka_unit_test(test_lookups),
		cmocka_unit_test(test_many_keys),
	};
	return cmocka_run_group_tests_name("toml", tests, NULL, NULL);
}
