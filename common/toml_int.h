/* toml_int.h: what the files of the TOML parser share (toml.h is its public
 * face).  toml.c is the parser (positions and errors, values and tables,
 * keys, key/value lines and headers); toml_string.c checks UTF-8 and reads
 * strings; toml_number.c reads numbers, dates and times. */
#ifndef ALPS_COMMON_TOML_INT_H
#define ALPS_COMMON_TOML_INT_H

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/toml.h"
#include "common/util.h"

/* How a table or array came to be.  The spec allows a table to be defined
 * once: by a [header], by dotted keys, or as an inline value; only a table
 * that a header's prefix created in passing can be defined later. */
enum origin {
	O_VALUE,        /* a value written after '=' (inline table, array...):
	                   closed to headers and dotted keys */
	O_ROOT,
	O_IMPLICIT,     /* made by the prefix of a header: [a.b] makes a */
	O_HEADER,       /* defined by [header], or an element of [[header]] */
	O_DOTTED,       /* defined by dotted keys: a.b = 1 makes a */
	O_AOT,          /* the array of [[header]]: headers may append */
};

struct node {
	toml_value v;   /* first: toml_free() frees the node through it */
	enum origin origin;
	int depth;      /* the root table is 0 */
	size_t cap;     /* allocated items or keys */
};

/* The key map: open addressing over (table, index of key in table). */
struct slot {
	const toml_value *tab;
	size_t idx;
};

struct keymap {
	struct slot *slots;
	size_t cap, n;          /* cap is 0 or a power of two */
};

/* A key as written, split at its dots. */
struct key_part {
	char *s;                /* owned until handed to a table */
	size_t len;
	size_t off;             /* where the part starts in the input */
};

struct key {
	struct key_part *parts;
	size_t n, cap;
};

/* A growing byte buffer for decoded strings. */
struct buf {
	char *p;
	size_t len, cap;
};

struct parser {
	const char *s;
	size_t len;
	size_t i;               /* read offset */
	size_t start;           /* after the BOM */
	struct toml_error *err;
	bool failed;
	/* A cursor that turns offsets into line and column.  Offsets asked for
	 * mostly grow; when one is behind, it is the start of what was just
	 * read, so the way back is short. */
	size_t pos_off;
	size_t pos_line, pos_col;
	struct keymap map;
	toml_value *root;
	toml_value *cur;        /* the table that key/value lines go into */
};

static inline struct node *node_of(toml_value *v)
{
	return (struct node *)v;
}

static inline int peek_at(const struct parser *ps, size_t k)
{
	if (k >= ps->len - ps->i)
		return -1;
	return (unsigned char)ps->s[ps->i + k];
}

static inline int peek(const struct parser *ps)
{
	return peek_at(ps, 0);
}

static inline bool is_control(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

static inline bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* Characters that may end a value: whitespace, a newline, a comment or
 * the punctuation of arrays and inline tables. */
static inline bool ends_value(int c)
{
	return c < 0 || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '#' ||
	       c == ',' || c == ']' || c == '}';
}

static inline int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* toml.c */
int ALPS_PRINTF(3, 4) tp_fail(struct parser *ps, size_t off, const char *fmt, ...);
const char *tp_describe(const struct parser *ps, size_t off, char *buf, size_t size);
int tp_fail_found(struct parser *ps, const char *what);
toml_value *tp_new_value(struct parser *ps, enum toml_type type, size_t off,
			 enum origin origin, int depth);
void tp_skip_ws(struct parser *ps);
bool tp_eat_newline(struct parser *ps);

/* toml_string.c */
int tp_check_utf8(struct parser *ps);
void tp_buf_add(struct buf *b, const char *p, size_t n);
void tp_buf_addc(struct buf *b, char c);
void tp_buf_cleanup(struct buf *b);
#define _cleanup_buf_ __attribute__((cleanup(tp_buf_cleanup)))
char *tp_buf_steal(struct buf *b, size_t *len);
int tp_parse_string(struct parser *ps, struct buf *b, bool allow_multi);
int tp_parse_string_value(struct parser *ps, int depth, toml_value **out);

/* toml_number.c */
int tp_parse_number(struct parser *ps, int depth, toml_value **out);
bool tp_looks_like(const struct parser *ps, size_t k, int ndigits, char sep);
int tp_parse_datetime(struct parser *ps, int depth, toml_value **out);

#endif
