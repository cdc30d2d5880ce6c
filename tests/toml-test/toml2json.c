/* toml2json: the decoder that toml-test drives (test-only).
 *
 * Reads a TOML document on stdin and prints it on stdout as toml-test's
 * tagged JSON: tables are objects, arrays are arrays, and every other value
 * is {"type": T, "value": "text"}.  An invalid document prints its error on
 * stderr and exits 1; any other failure exits 2, so that the runner can
 * tell a rejection from a crash. */
#include <config.h>

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/toml.h"
#include "common/util.h"

static json_t *to_json(const toml_value *v);

static json_t *tagged(const char *type, const char *text)
{
	return json_pack("{s:s, s:s}", "type", type, "value", text);
}

/* The shortest decimal text that reads back as the same double. */
static void format_float(double d, char *buf, size_t size)
{
	if (isnan(d)) {
		snprintf(buf, size, "nan");
		return;
	}
	if (isinf(d)) {
		snprintf(buf, size, d < 0 ? "-inf" : "inf");
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, size, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			return;
	}
}

static json_t *table_to_json(const toml_value *v)
{
	json_t *obj = json_object();

	for (size_t k = 0; k < v->u.tab.n; k++) {
		json_t *val = to_json(v->u.tab.vals[k]);
#if JANSSON_VERSION_HEX >= 0x020e00
		/* Keys may hold U+0000: the length-aware setter keeps them. */
		json_object_setn_new_nocheck(obj, v->u.tab.keys[k], v->u.tab.key_len[k], val);
#else
		json_object_set_new_nocheck(obj, v->u.tab.keys[k], val);
#endif
	}
	return obj;
}

static json_t *to_json(const toml_value *v)
{
	char buf[64];
	json_t *arr;

	switch (v->type) {
	case TOML_STRING:
		return json_pack("{s:s, s:s%}", "type", "string", "value", v->u.str.ptr,
				 v->u.str.len);
	case TOML_INTEGER:
		snprintf(buf, sizeof(buf), "%" PRId64, v->u.i);
		return tagged("integer", buf);
	case TOML_FLOAT:
		format_float(v->u.f, buf, sizeof(buf));
		return tagged("float", buf);
	case TOML_BOOL:
		return tagged("bool", v->u.b ? "true" : "false");
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		return tagged(toml_type_name(v->type), v->u.datetime);
	case TOML_ARRAY:
		arr = json_array();
		for (size_t k = 0; k < v->u.arr.n; k++)
			json_array_append_new(arr, to_json(v->u.arr.items[k]));
		return arr;
	case TOML_TABLE:
		return table_to_json(v);
	}
	return json_null();
}

/* All of stdin; caller frees. */
static char *read_all(FILE *f, size_t *len)
{
	size_t cap = 4096, n = 0, r;
	char *p = xmalloc(cap);

	while ((r = fread(p + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap)
			p = xrealloc(p, cap *= 2);
	}
	*len = n;
	return p;
}

int main(void)
{
	_cleanup_toml_ toml_value *root = NULL;
	struct toml_error err;
	size_t len;
	_cleanup_free_ char *text = read_all(stdin, &len);

	if (ferror(stdin)) {
		fprintf(stderr, "toml2json: cannot read stdin\n");
		return 2;
	}
	if (toml_parse(text, len, &root, &err) < 0) {
		fprintf(stderr, "toml2json: line %d, column %d: %s\n", err.line, err.col, err.msg);
		return 1;
	}
	json_t *doc = to_json(root);
	int r = json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	if (r < 0 || fputc('\n', stdout) == EOF || fflush(stdout) == EOF) {
		fprintf(stderr, "toml2json: cannot write stdout\n");
		return 2;
	}
	return 0;
}
