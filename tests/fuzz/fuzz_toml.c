/* fuzz_toml: libFuzzer target for the TOML parser.
 *
 * Parses the input (which is not NUL-terminated, so any read past its end
 * trips AddressSanitizer) and frees the result.  Beyond not crashing, it
 * checks what callers rely on: an error has a position and a message; a
 * tree has no duplicate keys, stays within TOML_MAX_DEPTH, and its strings
 * are terminated at their length.
 *
 *	clang -fsanitize=fuzzer,address,undefined -I. ... tests/fuzz/fuzz_toml.c
 *	./fuzz_toml tests/fuzz/corpus/toml */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "common/toml.h"

static void check(bool ok)
{
	if (!ok)
		abort();
}

static void walk(const toml_value *v, int depth)
{
	check(depth <= TOML_MAX_DEPTH);
	check(v->line >= 1 && v->col >= 1);
	switch (v->type) {
	case TOML_STRING:
		check(v->u.str.ptr[v->u.str.len] == '\0');
		break;
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		check(strlen(v->u.datetime) >= 8);
		break;
	case TOML_ARRAY:
		for (size_t k = 0; k < v->u.arr.n; k++)
			walk(v->u.arr.items[k], depth + 1);
		break;
	case TOML_TABLE:
		for (size_t k = 0; k < v->u.tab.n; k++) {
			const char *key = v->u.tab.keys[k];
			size_t len = v->u.tab.key_len[k];
			check(key[len] == '\0');
			check(v->u.tab.key_line[k] >= 1 && v->u.tab.key_col[k] >= 1);
			/* Keys are unique: the first match is this one. */
			check(toml_getn(v, key, len) == v->u.tab.vals[k]);
			walk(v->u.tab.vals[k], depth + 1);
		}
		break;
	case TOML_INTEGER:
	case TOML_FLOAT:
	case TOML_BOOL:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	toml_value *root = NULL;
	struct toml_error err;

	if (toml_parse((const char *)data, size, &root, &err) < 0) {
		check(root == NULL);
		check(err.line >= 1 && err.col >= 1 && err.msg[0] != '\0');
		check(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
		return 0;
	}
	check(root && root->type == TOML_TABLE);
	walk(root, 0);
	toml_free(root);
	return 0;
}
