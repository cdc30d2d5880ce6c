/* toml.h: a TOML 1.0 parser producing a tree of values.
 *
 * Held to the public toml-test suite (valid documents decode to the
 * expected values, invalid ones are rejected).  Tables keep their keys in
 * document order; every value and key records the line and column (1-based)
 * where it was defined, so that config and EDF errors can name them.
 * Strings are UTF-8 and may contain NUL (from "\u0000"): use ->len; so may
 * quoted keys (toml-test's valid/key/quoted-unicode), hence ->key_len.
 *
 * Containers nest at most TOML_MAX_DEPTH levels below the root, so code that
 * walks a parsed tree recursively has a bounded stack. */
#ifndef ALPS_TOML_H
#define ALPS_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deepest nesting of values (the root table is depth 0): deeper documents
 * are rejected, which bounds the parser's and every walker's recursion. */
#define TOML_MAX_DEPTH 128

enum toml_type {
	TOML_STRING,
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_BOOL,
	TOML_DATETIME,        /* offset date-time: 1979-05-27T07:32:00Z */
	TOML_DATETIME_LOCAL,  /* 1979-05-27T07:32:00 */
	TOML_DATE_LOCAL,      /* 1979-05-27 */
	TOML_TIME_LOCAL,      /* 07:32:00 */
	TOML_ARRAY,
	TOML_TABLE,
};

typedef struct toml_value toml_value;

struct toml_value {
	enum toml_type type;
	int line, col;            /* where the value starts */
	union {
		struct {
			char *ptr;        /* NUL-terminated, owned */
			size_t len;       /* bytes, excluding the terminator */
		} str;                    /* TOML_STRING */
		int64_t i;                /* TOML_INTEGER */
		double f;                 /* TOML_FLOAT */
		bool b;                   /* TOML_BOOL */
		char *datetime;           /* TOML_DATE*, TOML_TIME*: normalized text as
		                             written, with 'T' separator and 'Z' in
		                             upper case, owned */
		struct {
			size_t n;
			toml_value **items;   /* owned */
		} arr;                    /* TOML_ARRAY */
		struct {
			size_t n;
			char **keys;          /* owned, NUL-terminated; a quoted key may
			                         hold U+0000 too, see key_len */
			size_t *key_len;      /* bytes of keys[i], excluding the terminator */
			int *key_line, *key_col;
			toml_value **vals;    /* owned */
		} tab;                    /* TOML_TABLE */
	} u;
};

struct toml_error {
	int line, col;            /* 1-based; 0 when not tied to a position */
	char msg[256];
};

/* Parse len bytes (need not be NUL-terminated).  On success *out is the
 * root table (caller frees with toml_free) and 0 is returned.  On failure
 * -1 is returned, *out is NULL, and *err says where and what. */
int toml_parse(const char *text, size_t len, toml_value **out, struct toml_error *err);
void toml_free(toml_value *v);
void cleanup_toml_freep(toml_value **v);
#define _cleanup_toml_ __attribute__((cleanup(cleanup_toml_freep)))

/* Lookup in a table by key; NULL if absent or v is not a table. */
toml_value *toml_get(const toml_value *table, const char *key);
/* The same for a key of len bytes, which may contain NUL. */
toml_value *toml_getn(const toml_value *table, const char *key, size_t len);
/* Lookup by a dotted path of bare keys, "a.b.c": each component but the
 * last must name a table.  NULL if any is absent. */
toml_value *toml_get_path(const toml_value *table, const char *path);
/* Index of key in table, or -1. */
long toml_index(const toml_value *table, const char *key);
const char *toml_type_name(enum toml_type t);

#endif
