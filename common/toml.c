/* toml.c: a TOML 1.0.0 parser (see toml.h).
 *
 * A recursive-descent parser over the whole document in memory.  The input
 * is checked to be UTF-8 once, up front, so that the rest of the parser can
 * treat any byte >= 0x80 as part of a valid character.  Nothing reads past
 * len: every look-ahead goes through peek_at().
 *
 * Each value is allocated inside a struct node that also records how the
 * value came to be (its origin), which is what the redefinition rules of
 * the spec are about; the node begins with the public toml_value, so
 * toml_free() frees a node as its toml_value.  Keys are found through one
 * hash map per parse, keyed by (table, key), so that a hostile document of
 * many keys stays linear. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "toml.h"
#include "util.h"

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

static struct node *node_of(toml_value *v)
{
	return (struct node *)v;
}

/* ---- positions and errors ---- */

/* Columns count characters, not bytes: a byte counts unless it continues
 * a UTF-8 sequence. */
static bool starts_char(unsigned char c)
{
	return (c & 0xc0) != 0x80;
}

static void cursor_back(struct parser *ps, size_t off)
{
	bool crossed = false;

	while (ps->pos_off > off) {
		unsigned char c = ps->s[--ps->pos_off];
		if (c == '\n') {
			ps->pos_line--;
			crossed = true;
		} else if (starts_char(c)) {
			ps->pos_col--;
		}
	}
	if (!crossed)
		return;
	/* Back over a newline the column is unknown: count it from the start
	 * of the line (once per multi-line token, so still linear). */
	size_t bol = off;
	while (bol > ps->start && ps->s[bol - 1] != '\n')
		bol--;
	ps->pos_col = 1;
	for (; bol < off; bol++)
		ps->pos_col += starts_char(ps->s[bol]);
}

static void position(struct parser *ps, size_t off, int *line, int *col)
{
	if (off < ps->pos_off)
		cursor_back(ps, off);
	for (; ps->pos_off < off && ps->pos_off < ps->len; ps->pos_off++) {
		unsigned char c = ps->s[ps->pos_off];
		if (c == '\n') {
			ps->pos_line++;
			ps->pos_col = 1;
		} else if (starts_char(c)) {
			ps->pos_col++;
		}
	}
	*line = ps->pos_line < INT_MAX ? (int)ps->pos_line : INT_MAX;
	*col = ps->pos_col < INT_MAX ? (int)ps->pos_col : INT_MAX;
}

/* Record the first error, at offset off; returns -1. */
static int ALPS_PRINTF(3, 4) fail(struct parser *ps, size_t off, const char *fmt, ...)
{
	va_list ap;

	if (ps->failed)
		return -1;
	ps->failed = true;
	position(ps, off, &ps->err->line, &ps->err->col);
	va_start(ap, fmt);
	vsnprintf(ps->err->msg, sizeof(ps->err->msg), fmt, ap);
	va_end(ap);
	return -1;
}

static int peek_at(const struct parser *ps, size_t k)
{
	if (k >= ps->len - ps->i)
		return -1;
	return (unsigned char)ps->s[ps->i + k];
}

static int peek(const struct parser *ps)
{
	return peek_at(ps, 0);
}

/* The code point that starts at off (the input is valid UTF-8). */
static uint32_t decode_at(const struct parser *ps, size_t off)
{
	const unsigned char *p = (const unsigned char *)ps->s + off;
	size_t n = 1;
	uint32_t c = p[0];

	if (c >= 0xf0) {
		n = 4;
		c &= 0x07;
	} else if (c >= 0xe0) {
		n = 3;
		c &= 0x0f;
	} else if (c >= 0xc0) {
		n = 2;
		c &= 0x1f;
	}
	for (size_t k = 1; k < n && off + k < ps->len; k++)
		c = (c << 6) | (p[k] & 0x3f);
	return c;
}

/* "'x'", "end of line", "U+0007"... for "found %s" in messages. */
static const char *describe(const struct parser *ps, size_t off, char *buf, size_t size)
{
	if (off >= ps->len)
		return "end of file";
	unsigned char c = ps->s[off];
	if (c == '\n' || (c == '\r' && off + 1 < ps->len && ps->s[off + 1] == '\n'))
		return "end of line";
	if (c >= 0x20 && c < 0x7f)
		snprintf(buf, size, "'%c'", c);
	else
		snprintf(buf, size, "U+%04X", (unsigned)decode_at(ps, off));
	return buf;
}

static int fail_found(struct parser *ps, const char *what)
{
	char b[16];
	return fail(ps, ps->i, "%s, found %s", what, describe(ps, ps->i, b, sizeof(b)));
}

static bool is_bare(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* A key for a message: bare keys as they are, others quoted with control
 * characters escaped, cut to keep the message readable. */
static void show_part(struct buf *out, const char *s, size_t len)
{
	bool bare = len > 0;
	for (size_t k = 0; k < len; k++)
		bare = bare && is_bare((unsigned char)s[k]);
	if (bare) {
		for (size_t k = 0; k < len && out->len + 1 < out->cap; k++)
			out->p[out->len++] = s[k];
		out->p[out->len] = '\0';
		return;
	}
	size_t k = 0;
	out->len += snprintf(out->p + out->len, out->cap - out->len, "\"");
	for (; k < len && out->len + 8 < out->cap; k++) {
		unsigned char c = s[k];
		if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
			out->len += snprintf(out->p + out->len, out->cap - out->len, "\\u%04X", c);
		else
			out->p[out->len++] = c;
	}
	/* Do not end the message in the middle of a character. */
	while (k < len && k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80) {
		k--;
		out->len--;
	}
	out->p[out->len] = '\0';
	snprintf(out->p + out->len, out->cap - out->len, k < len ? "...\"" : "\"");
	out->len = strlen(out->p);
}

/* The parts [0, n) of key, joined with dots, into buf. */
static const char *show_key(const struct key *key, size_t n, char *buf, size_t size)
{
	struct buf out = { .p = buf, .len = 0, .cap = size };
	buf[0] = '\0';
	for (size_t k = 0; k < n && out.len + 16 < size; k++) {
		if (k > 0)
			out.p[out.len++] = '.';
		show_part(&out, key->parts[k].s, key->parts[k].len);
	}
	if (n > 0 && out.len + 16 >= size)
		snprintf(buf + out.len, size - out.len, "...");
	return buf;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s, or 0: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (avail < n || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t k = 2; k < n; k++)
		if ((s[k] & 0xc0) != 0x80)
			return 0;
	return n;
}

static int check_utf8(struct parser *ps)
{
	const unsigned char *s = (const unsigned char *)ps->s;

	for (size_t off = ps->start; off < ps->len;) {
		size_t n = utf8_seq(s + off, ps->len - off);
		if (n == 0)
			return fail(ps, off, "invalid UTF-8 (byte 0x%02X)", s[off]);
		off += n;
	}
	return 0;
}

static void buf_grow(struct buf *b, size_t more)
{
	if (b->len + more < b->cap)
		return;
	size_t cap = b->cap ? b->cap : 32;
	while (cap <= b->len + more)
		cap *= 2;
	b->p = xrealloc(b->p, cap);
	b->cap = cap;
}

static void buf_add(struct buf *b, const char *p, size_t n)
{
	buf_grow(b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_addc(struct buf *b, char c)
{
	buf_add(b, &c, 1);
}

static void buf_add_utf8(struct buf *b, uint32_t c)
{
	char u[4];

	if (c < 0x80) {
		buf_addc(b, c);
	} else if (c < 0x800) {
		u[0] = 0xc0 | (c >> 6);
		u[1] = 0x80 | (c & 0x3f);
		buf_add(b, u, 2);
	} else if (c < 0x10000) {
		u[0] = 0xe0 | (c >> 12);
		u[1] = 0x80 | ((c >> 6) & 0x3f);
		u[2] = 0x80 | (c & 0x3f);
		buf_add(b, u, 3);
	} else {
		u[0] = 0xf0 | (c >> 18);
		u[1] = 0x80 | ((c >> 12) & 0x3f);
		u[2] = 0x80 | ((c >> 6) & 0x3f);
		u[3] = 0x80 | (c & 0x3f);
		buf_add(b, u, 4);
	}
}

static void buf_cleanup(struct buf *b)
{
	free(b->p);
}

#define _cleanup_buf_ __attribute__((cleanup(buf_cleanup)))

/* The buffer's bytes, NUL-terminated, as a new allocation. */
static char *buf_steal(struct buf *b, size_t *len)
{
	buf_grow(b, 0);
	b->p[b->len] = '\0';
	*len = b->len;
	b->cap = b->len = 0;
	return steal_pointer(&b->p);
}

/* ---- values and tables ---- */

static toml_value *new_value(struct parser *ps, enum toml_type type, size_t off,
			     enum origin origin, int depth)
{
	struct node *n = xzalloc(sizeof(*n));

	n->v.type = type;
	position(ps, off, &n->v.line, &n->v.col);
	n->origin = origin;
	n->depth = depth;
	return &n->v;
}

static uint64_t key_hash(const toml_value *tab, const char *key, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ ((uintptr_t)tab * 0x9e3779b97f4a7c15ULL);

	for (size_t k = 0; k < len; k++) {
		h ^= (unsigned char)key[k];
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 32);
}

static bool key_is(const toml_value *tab, size_t idx, const char *key, size_t len)
{
	return tab->u.tab.key_len[idx] == len && memcmp(tab->u.tab.keys[idx], key, len) == 0;
}

static long map_find(const struct keymap *m, const toml_value *tab, const char *key, size_t len)
{
	if (m->cap == 0)
		return -1;
	size_t mask = m->cap - 1;
	for (size_t k = key_hash(tab, key, len) & mask; m->slots[k].tab; k = (k + 1) & mask) {
		const struct slot *sl = &m->slots[k];
		if (sl->tab == tab && key_is(tab, sl->idx, key, len))
			return (long)sl->idx;
	}
	return -1;
}

static void map_put(struct keymap *m, const toml_value *tab, size_t idx)
{
	size_t mask = m->cap - 1;
	size_t k = key_hash(tab, tab->u.tab.keys[idx], tab->u.tab.key_len[idx]) & mask;

	while (m->slots[k].tab)
		k = (k + 1) & mask;
	m->slots[k].tab = tab;
	m->slots[k].idx = idx;
	m->n++;
}

static void map_add(struct keymap *m, const toml_value *tab, size_t idx)
{
	/* Keep the load under one half so that probes stay short. */
	if ((m->n + 1) * 2 > m->cap) {
		struct keymap old = *m;
		m->cap = old.cap ? old.cap * 2 : 64;
		m->slots = xcalloc(m->cap, sizeof(*m->slots));
		m->n = 0;
		for (size_t k = 0; k < old.cap; k++)
			if (old.slots[k].tab)
				map_put(m, old.slots[k].tab, old.slots[k].idx);
		free(old.slots);
	}
	map_put(m, tab, idx);
}

static toml_value *tab_lookup(struct parser *ps, toml_value *tab, const struct key_part *kp)
{
	long idx = map_find(&ps->map, tab, kp->s, kp->len);
	return idx < 0 ? NULL : tab->u.tab.vals[idx];
}

/* Add a value under kp, which the table takes over; the caller has
 * checked that the key is new. */
static void tab_add(struct parser *ps, toml_value *tab, struct key_part *kp, toml_value *val)
{
	struct node *n = node_of(tab);
	size_t k = tab->u.tab.n;

	if (k == n->cap) {
		n->cap = n->cap ? n->cap * 2 : 4;
		tab->u.tab.keys = xreallocarray(tab->u.tab.keys, n->cap, sizeof(char *));
		tab->u.tab.key_len = xreallocarray(tab->u.tab.key_len, n->cap, sizeof(size_t));
		tab->u.tab.key_line = xreallocarray(tab->u.tab.key_line, n->cap, sizeof(int));
		tab->u.tab.key_col = xreallocarray(tab->u.tab.key_col, n->cap, sizeof(int));
		tab->u.tab.vals = xreallocarray(tab->u.tab.vals, n->cap, sizeof(toml_value *));
	}
	tab->u.tab.keys[k] = steal_pointer(&kp->s);
	tab->u.tab.key_len[k] = kp->len;
	position(ps, kp->off, &tab->u.tab.key_line[k], &tab->u.tab.key_col[k]);
	tab->u.tab.vals[k] = val;
	tab->u.tab.n++;
	map_add(&ps->map, tab, k);
}

static void arr_add(toml_value *arr, toml_value *item)
{
	struct node *n = node_of(arr);

	if (arr->u.arr.n == n->cap) {
		n->cap = n->cap ? n->cap * 2 : 4;
		arr->u.arr.items = xreallocarray(arr->u.arr.items, n->cap, sizeof(toml_value *));
	}
	arr->u.arr.items[arr->u.arr.n++] = item;
}

static int check_depth(struct parser *ps, size_t off, int depth)
{
	if (depth > TOML_MAX_DEPTH)
		return fail(ps, off, "nesting deeper than %d levels", TOML_MAX_DEPTH);
	return 0;
}

/* A new table under key part kp of parent. */
static toml_value *add_table(struct parser *ps, toml_value *parent, struct key_part *kp,
			     size_t off, enum origin origin)
{
	int depth = node_of(parent)->depth + 1;

	if (check_depth(ps, kp->off, depth) < 0)
		return NULL;
	toml_value *t = new_value(ps, TOML_TABLE, off, origin, depth);
	tab_add(ps, parent, kp, t);
	return t;
}

/* "an integer", "an inline table"... for messages about what a key holds. */
static const char *what_is(toml_value *v)
{
	switch (v->type) {
	case TOML_TABLE:
		return node_of(v)->origin == O_VALUE ? "an inline table" : "a table";
	case TOML_ARRAY:
		return node_of(v)->origin == O_AOT ? "an array of tables" : "a static array";
	case TOML_INTEGER:
		return "an integer";
	case TOML_STRING:
		return "a string";
	case TOML_FLOAT:
		return "a float";
	case TOML_BOOL:
		return "a bool";
	default:
		return "a date or time";
	}
}

/* ---- whitespace, comments, newlines ---- */

static void skip_ws(struct parser *ps)
{
	int c;
	while ((c = peek(ps)) == ' ' || c == '\t')
		ps->i++;
}

static bool is_control(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

/* A comment runs to the end of the line; it may hold any character but
 * the control ones (tab aside). */
static int skip_comment(struct parser *ps)
{
	int c;

	if (peek(ps) != '#')
		return 0;
	for (ps->i++; (c = peek(ps)) >= 0 && c != '\n'; ps->i++) {
		if (c == '\r' && peek_at(ps, 1) == '\n')
			break;
		if (is_control(c))
			return fail(ps, ps->i, "control character U+%04X in a comment", c);
	}
	return 0;
}

/* Consume a newline (LF or CRLF); false if there is none. */
static bool eat_newline(struct parser *ps)
{
	if (peek(ps) == '\n') {
		ps->i++;
		return true;
	}
	if (peek(ps) == '\r' && peek_at(ps, 1) == '\n') {
		ps->i += 2;
		return true;
	}
	return false;
}

/* Whitespace, comments and newlines, as allowed between array items. */
static int skip_blank(struct parser *ps)
{
	for (;;) {
		skip_ws(ps);
		if (skip_comment(ps) < 0)
			return -1;
		if (!eat_newline(ps))
			return 0;
	}
}

/* After a key/value pair or a header, only a comment may end the line. */
static int end_of_line(struct parser *ps, const char *after)
{
	skip_ws(ps);
	if (skip_comment(ps) < 0)
		return -1;
	if (peek(ps) < 0 || eat_newline(ps))
		return 0;
	if (peek(ps) == '\r')
		return fail(ps, ps->i, "carriage return not followed by a newline");
	char what[64];
	snprintf(what, sizeof(what), "expected a newline after %s", after);
	return fail_found(ps, what);
}

/* ---- strings ---- */

static int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* \uXXXX or \UXXXXXXXX at the backslash; the code must be a Unicode
 * scalar value (no surrogates), which keeps the result valid UTF-8. */
static int parse_unicode_escape(struct parser *ps, struct buf *b)
{
	size_t at = ps->i;
	int digits = ps->s[ps->i + 1] == 'u' ? 4 : 8;
	uint32_t c = 0;

	for (int k = 0; k < digits; k++) {
		int h = hex_value(peek_at(ps, 2 + k));
		if (h < 0)
			return fail(ps, at, "invalid escape '\\%c': expected %d hex digits",
				    ps->s[ps->i + 1], digits);
		c = (c << 4) | h;
	}
	if (c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return fail(ps, at, "escape '\\%c%0*X' is not a Unicode scalar value",
			    ps->s[ps->i + 1], digits, (unsigned)c);
	buf_add_utf8(b, c);
	ps->i += 2 + digits;
	return 0;
}

/* One escape sequence at the backslash. */
static int parse_escape(struct parser *ps, struct buf *b)
{
	static const char from[] = "btnfr\"\\";
	static const char to[] = "\b\t\n\f\r\"\\";
	int c = peek_at(ps, 1);
	const char *p;

	if (c == 'u' || c == 'U')
		return parse_unicode_escape(ps, b);
	if (c > 0 && (p = strchr(from, c)) != NULL) {
		buf_addc(b, to[p - from]);
		ps->i += 2;
		return 0;
	}
	if (c > 0x20 && c < 0x7f)
		return fail(ps, ps->i, "invalid escape '\\%c' in string", c);
	char d[16];
	return fail(ps, ps->i, "invalid escape in string: '\\' followed by %s",
		    describe(ps, ps->i + 1, d, sizeof(d)));
}

/* A backslash that ends a line in a multi-line basic string joins the
 * lines: it eats all whitespace and newlines up to the next character.
 * True if the backslash at the read offset is one. */
static bool line_ending_backslash(struct parser *ps)
{
	size_t k = 1;
	int c;

	while ((c = peek_at(ps, k)) == ' ' || c == '\t')
		k++;
	if (c != '\n' && !(c == '\r' && peek_at(ps, k + 1) == '\n'))
		return false;
	ps->i += k;
	for (;;) {
		skip_ws(ps);
		if (!eat_newline(ps))
			return true;
	}
}

/* The characters allowed as they are in a string: newlines only in the
 * multi-line kinds, where CRLF reads as LF. */
static int string_char(struct parser *ps, struct buf *b, bool multi)
{
	int c = peek(ps);

	if (multi && eat_newline(ps)) {
		buf_addc(b, '\n');
		return 0;
	}
	if (c == '\n' || (c == '\r' && peek_at(ps, 1) == '\n'))
		return fail(ps, ps->i, "newline in a single-line string");
	if (c == '\r')
		return fail(ps, ps->i, "carriage return not followed by a newline in a string");
	if (is_control(c))
		return fail(ps, ps->i, "control character U+%04X in a string", c);
	buf_addc(b, c);
	ps->i++;
	return 0;
}

/* At a run of quote characters in a multi-line string: up to two are
 * content, three close the string, and up to two more before those three
 * are content too ("""a""""" is 'a""').  True when the string ended. */
static int multi_quotes(struct parser *ps, struct buf *b, char q, bool *done)
{
	size_t n = 0;

	while (peek_at(ps, n) == q)
		n++;
	if (n >= 6)
		return fail(ps, ps->i + 5, "too many quotes closing a multi-line string");
	*done = n >= 3;
	for (size_t k = 0; k < (*done ? n - 3 : n); k++)
		buf_addc(b, q);
	ps->i += n;
	return 0;
}

/* Any of the four string kinds at the opening quote. */
static int parse_string(struct parser *ps, struct buf *b, bool allow_multi)
{
	size_t start = ps->i;
	char q = ps->s[ps->i];
	bool multi = peek_at(ps, 1) == q && peek_at(ps, 2) == q;
	bool done = false;

	if (multi && !allow_multi)
		return fail(ps, start, "a key cannot be a multi-line string");
	ps->i += multi ? 3 : 1;
	/* A newline right after the opening delimiter is trimmed. */
	if (multi)
		eat_newline(ps);
	buf_grow(b, 0);
	while (!done) {
		int c = peek(ps);
		int r;

		if (c < 0)
			return fail(ps, start, "unterminated string");
		if (c == q && multi)
			r = multi_quotes(ps, b, q, &done);
		else if (c == q) {
			ps->i++;
			done = true;
			r = 0;
		} else if (c == '\\' && q == '"') {
			if (multi && line_ending_backslash(ps))
				continue;
			r = parse_escape(ps, b);
		} else
			r = string_char(ps, b, multi);
		if (r < 0)
			return -1;
	}
	return 0;
}

static int parse_string_value(struct parser *ps, int depth, toml_value **out)
{
	_cleanup_buf_ struct buf b = { 0 };
	size_t start = ps->i;

	if (parse_string(ps, &b, true) < 0)
		return -1;
	toml_value *v = new_value(ps, TOML_STRING, start, O_VALUE, depth);
	v->u.str.ptr = buf_steal(&b, &v->u.str.len);
	*out = v;
	return 0;
}

/* ---- keys ---- */

static void key_cleanup(struct key *key)
{
	for (size_t k = 0; k < key->n; k++)
		free(key->parts[k].s);
	free(key->parts);
}

#define _cleanup_key_ __attribute__((cleanup(key_cleanup)))

static int parse_simple_key(struct parser *ps, struct key *key)
{
	_cleanup_buf_ struct buf b = { 0 };
	size_t start = ps->i;
	int c = peek(ps);

	if (c == '"' || c == '\'') {
		if (parse_string(ps, &b, false) < 0)
			return -1;
	} else {
		while (is_bare(peek(ps)))
			ps->i++;
		if (ps->i == start)
			return fail_found(ps, "expected a key");
		buf_add(&b, ps->s + start, ps->i - start);
	}
	/* Each part can make a table: a longer key is nested too deep anyway. */
	if (key->n == TOML_MAX_DEPTH)
		return fail(ps, start, "key has more than %d parts", TOML_MAX_DEPTH);
	if (key->n == key->cap) {
		key->cap = key->cap ? key->cap * 2 : 4;
		key->parts = xreallocarray(key->parts, key->cap, sizeof(*key->parts));
	}
	struct key_part *kp = &key->parts[key->n++];
	kp->off = start;
	kp->s = buf_steal(&b, &kp->len);
	return 0;
}

/* A dotted key: simple keys separated by dots, with optional whitespace
 * around the dots. */
static int parse_key(struct parser *ps, struct key *key)
{
	for (;;) {
		skip_ws(ps);
		if (parse_simple_key(ps, key) < 0)
			return -1;
		skip_ws(ps);
		if (peek(ps) != '.')
			return 0;
		ps->i++;
	}
}

/* ---- numbers ---- */

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* Characters that may end a value: whitespace, a newline, a comment or
 * the punctuation of arrays and inline tables. */
static bool ends_value(int c)
{
	return c < 0 || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '#' ||
	       c == ',' || c == ']' || c == '}';
}

static int check_end(struct parser *ps, const char *what)
{
	if (ends_value(peek(ps)))
		return 0;
	char b[16], msg[64];
	snprintf(msg, sizeof(msg), "invalid %s: unexpected %s", what,
		 describe(ps, ps->i, b, sizeof(b)));
	return fail(ps, ps->i, "%s", msg);
}

static bool is_base_digit(int c, int base)
{
	int h = hex_value(c);
	return h >= 0 && h < base;
}

/* Digits with single underscores between them, copied without the
 * underscores; at least one digit. */
static int scan_digits(struct parser *ps, struct buf *b, int base, const char *what)
{
	if (!is_base_digit(peek(ps), base)) {
		char m[64];
		snprintf(m, sizeof(m), "expected a digit in %s", what);
		return fail_found(ps, m);
	}
	for (;;) {
		int c = peek(ps);
		if (c == '_') {
			if (!is_base_digit(peek_at(ps, 1), base))
				return fail(ps, ps->i, "'_' in %s must be between digits", what);
			ps->i++;
			continue;
		}
		if (!is_base_digit(c, base))
			return 0;
		buf_addc(b, c);
		ps->i++;
	}
}

/* Digits (no sign, no underscores) in base to a magnitude that fits in
 * int64_t, or up to 2^63 when negative. */
static int to_int(struct parser *ps, size_t start, const struct buf *b, int base, bool neg,
		  int64_t *out)
{
	uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	uint64_t v = 0;

	for (size_t k = 0; k < b->len; k++) {
		uint64_t d = hex_value((unsigned char)b->p[k]);
		if (v > (limit - d) / base)
			return fail(ps, start, "integer out of range (64-bit signed)");
		v = v * base + d;
	}
	if (neg)
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	else
		*out = (int64_t)v;
	return 0;
}

/* strtod() reads the decimal point of LC_NUMERIC, which a program may have
 * set from the environment: parse in the C locale, whatever the process's. */
static locale_t c_numeric;
static pthread_once_t c_numeric_once = PTHREAD_ONCE_INIT;

static void c_numeric_init(void)
{
	c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

static double strtod_c(const char *s, char **end)
{
	pthread_once(&c_numeric_once, c_numeric_init);
	if (!c_numeric)
		return strtod(s, end);
	locale_t old = uselocale(c_numeric);
	double d = strtod(s, end);
	uselocale(old);
	return d;
}

static int parse_prefixed_int(struct parser *ps, int depth, toml_value **out)
{
	static const struct { char c; int base; const char *name; } prefixes[] = {
		{ 'x', 16, "a hexadecimal integer" },
		{ 'o', 8, "an octal integer" },
		{ 'b', 2, "a binary integer" },
	};
	_cleanup_buf_ struct buf b = { 0 };
	size_t start = ps->i;
	size_t k = 0;
	int64_t v = 0;

	while (prefixes[k].c != ps->s[ps->i + 1])
		k++;
	ps->i += 2;
	if (scan_digits(ps, &b, prefixes[k].base, prefixes[k].name) < 0 ||
	    check_end(ps, "integer") < 0 ||
	    to_int(ps, start, &b, prefixes[k].base, false, &v) < 0)
		return -1;
	*out = new_value(ps, TOML_INTEGER, start, O_VALUE, depth);
	(*out)->u.i = v;
	return 0;
}

/* inf and nan, with an optional sign. */
static int parse_special_float(struct parser *ps, int depth, bool neg, size_t start,
			       toml_value **out)
{
	bool inf = ps->s[ps->i] == 'i';

	ps->i += 3;
	if (check_end(ps, "float") < 0)
		return -1;
	*out = new_value(ps, TOML_FLOAT, start, O_VALUE, depth);
	(*out)->u.f = inf ? (neg ? -INFINITY : INFINITY) : (neg ? -NAN : NAN);
	return 0;
}

/* The fraction and exponent of a float, after its integer part. */
static int scan_float_tail(struct parser *ps, struct buf *b)
{
	if (peek(ps) == '.') {
		buf_addc(b, '.');
		ps->i++;
		if (scan_digits(ps, b, 10, "the fraction of a float") < 0)
			return -1;
	}
	if (peek(ps) == 'e' || peek(ps) == 'E') {
		buf_addc(b, 'e');
		ps->i++;
		if (peek(ps) == '+' || peek(ps) == '-')
			buf_addc(b, ps->s[ps->i++]);
		if (scan_digits(ps, b, 10, "the exponent of a float") < 0)
			return -1;
	}
	return 0;
}

static int make_float(struct parser *ps, size_t start, struct buf *b, int depth, toml_value **out)
{
	char *end;

	errno = 0;
	double d = strtod_c(b->p, &end);
	if (*end != '\0')
		return fail(ps, start, "invalid float");
	/* Underflow to zero or a subnormal is a fine approximation; a
	 * literal too large for a double is not. */
	if (errno == ERANGE && isinf(d))
		return fail(ps, start, "float out of range");
	*out = new_value(ps, TOML_FLOAT, start, O_VALUE, depth);
	(*out)->u.f = d;
	return 0;
}

/* Decimal integers and floats, inf and nan, and the prefixed integers. */
static int parse_number(struct parser *ps, int depth, toml_value **out)
{
	_cleanup_buf_ struct buf b = { 0 };
	size_t start = ps->i;
	int c = peek(ps);
	bool neg = c == '-';
	int64_t v = 0;

	if (c == '0' && (peek_at(ps, 1) == 'x' || peek_at(ps, 1) == 'o' || peek_at(ps, 1) == 'b'))
		return parse_prefixed_int(ps, depth, out);
	if (c == '+' || c == '-') {
		buf_addc(&b, c);
		ps->i++;
	}
	if ((peek(ps) == 'i' && peek_at(ps, 1) == 'n' && peek_at(ps, 2) == 'f') ||
	    (peek(ps) == 'n' && peek_at(ps, 1) == 'a' && peek_at(ps, 2) == 'n'))
		return parse_special_float(ps, depth, neg, start, out);
	if (!is_digit(peek(ps)))
		return ps->i == start ? fail_found(ps, "expected a value")
				      : fail_found(ps, "expected a digit after the sign");
	if (peek(ps) == '0' && (peek_at(ps, 1) == 'x' || peek_at(ps, 1) == 'o' ||
				peek_at(ps, 1) == 'b'))
		return fail(ps, start, "a prefixed integer cannot have a sign");
	if (peek(ps) == '0' && (is_digit(peek_at(ps, 1)) || peek_at(ps, 1) == '_'))
		return fail(ps, ps->i, "leading zero in a decimal number");
	size_t digits = b.len;
	if (scan_digits(ps, &b, 10, "a number") < 0 || scan_float_tail(ps, &b) < 0)
		return -1;
	if (memchr(b.p, '.', b.len) || memchr(b.p, 'e', b.len))
		return check_end(ps, "float") < 0 ? -1 : make_float(ps, start, &b, depth, out);
	if (check_end(ps, "integer") < 0)
		return -1;
	/* to_int() takes the magnitude: drop the sign copied above. */
	struct buf mag = { .p = b.p + digits, .len = b.len - digits };
	if (to_int(ps, start, &mag, 10, neg, &v) < 0)
		return -1;
	*out = new_value(ps, TOML_INTEGER, start, O_VALUE, depth);
	(*out)->u.i = v;
	return 0;
}

/* ---- dates and times ---- */

/* n decimal digits at the read offset, or -1. */
static int fixed_digits(struct parser *ps, int n)
{
	int v = 0;

	for (int k = 0; k < n; k++) {
		int c = peek_at(ps, k);
		if (!is_digit(c))
			return -1;
		v = v * 10 + (c - '0');
	}
	ps->i += n;
	return v;
}

static bool looks_like(const struct parser *ps, size_t k, int ndigits, char sep)
{
	for (int d = 0; d < ndigits; d++)
		if (!is_digit(peek_at(ps, k + d)))
			return false;
	return peek_at(ps, k + ndigits) == sep;
}

static int days_in_month(int year, int month)
{
	static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	return month == 2 && leap ? 29 : days[month - 1];
}

/* "n" two-digit field, a separator after it unless sep is 0, in [0, max]. */
static int field(struct parser *ps, int width, char sep, int min, int max, const char *name)
{
	size_t at = ps->i;
	int v = fixed_digits(ps, width);

	if (v < 0) {
		char m[64];
		snprintf(m, sizeof(m), "expected %d digits for the %s", width, name);
		return fail_found(ps, m);
	}
	if (v < min || v > max)
		return fail(ps, at, "%s %0*d out of range (%0*d to %0*d)", name, width, v,
			    width, min, width, max);
	if (sep) {
		if (peek(ps) != sep) {
			char m[64];
			snprintf(m, sizeof(m), "expected '%c' after the %s", sep, name);
			return fail_found(ps, m);
		}
		ps->i++;
	}
	return v;
}

/* YYYY-MM-DD, a real day of the proleptic Gregorian calendar. */
static int parse_date(struct parser *ps)
{
	size_t at;
	int y, m, d;

	if ((y = field(ps, 4, '-', 0, 9999, "year")) < 0 ||
	    (m = field(ps, 2, '-', 1, 12, "month")) < 0)
		return -1;
	at = ps->i;
	if ((d = field(ps, 2, 0, 1, 31, "day")) < 0)
		return -1;
	if (d > days_in_month(y, m))
		return fail(ps, at, "day %02d out of range for %04d-%02d", d, y, m);
	return 0;
}

/* HH:MM:SS with an optional fraction; 60 seconds for a leap second. */
static int parse_time(struct parser *ps)
{
	if (field(ps, 2, ':', 0, 23, "hour") < 0 || field(ps, 2, ':', 0, 59, "minute") < 0 ||
	    field(ps, 2, 0, 0, 60, "second") < 0)
		return -1;
	if (peek(ps) != '.')
		return 0;
	ps->i++;
	if (!is_digit(peek(ps)))
		return fail_found(ps, "expected digits after the decimal point of the seconds");
	while (is_digit(peek(ps)))
		ps->i++;
	return 0;
}

/* Z or +HH:MM / -HH:MM after a date-time; false if there is none. */
static int parse_offset(struct parser *ps, bool *has)
{
	int c = peek(ps);

	*has = c == 'Z' || c == 'z' || c == '+' || c == '-';
	if (c == 'Z' || c == 'z') {
		ps->i++;
		return 0;
	}
	if (!*has)
		return 0;
	ps->i++;
	if (field(ps, 2, ':', 0, 23, "offset hour") < 0 ||
	    field(ps, 2, 0, 0, 59, "offset minute") < 0)
		return -1;
	return 0;
}

/* The text of a date or time, with the separator as 'T' and the UTC
 * designator as 'Z': one spelling per value. */
static char *normalize_datetime(const char *s, size_t len)
{
	char *t = xstrndup(s, len);

	if (len > 10 && t[4] == '-')
		t[10] = 'T';
	if (len > 0 && t[len - 1] == 'z')
		t[len - 1] = 'Z';
	return t;
}

/* A local time, or a date with an optional time and offset. */
static int parse_datetime(struct parser *ps, int depth, toml_value **out)
{
	size_t start = ps->i;
	enum toml_type type = TOML_TIME_LOCAL;
	bool offset = false;

	if (looks_like(ps, 0, 2, ':')) {
		if (parse_time(ps) < 0)
			return -1;
	} else {
		if (parse_date(ps) < 0)
			return -1;
		type = TOML_DATE_LOCAL;
		int c = peek(ps);
		/* A space separates a date from a time only when a time
		 * follows; otherwise it ends a local date. */
		if (c == 'T' || c == 't' || (c == ' ' && looks_like(ps, 1, 2, ':'))) {
			ps->i++;
			if (parse_time(ps) < 0 || parse_offset(ps, &offset) < 0)
				return -1;
			type = offset ? TOML_DATETIME : TOML_DATETIME_LOCAL;
		}
	}
	if (check_end(ps, "date or time") < 0)
		return -1;
	*out = new_value(ps, type, start, O_VALUE, depth);
	(*out)->u.datetime = normalize_datetime(ps->s + start, ps->i - start);
	return 0;
}

/* ---- values ---- */

static int parse_value(struct parser *ps, int depth, toml_value **out);
static int parse_keyval(struct parser *ps, toml_value *tab);

static int parse_bool(struct parser *ps, int depth, toml_value **out)
{
	size_t start = ps->i;
	bool b = peek(ps) == 't';
	const char *word = b ? "true" : "false";
	size_t n = strlen(word);

	if (ps->len - ps->i < n || memcmp(ps->s + ps->i, word, n) != 0 ||
	    !ends_value(peek_at(ps, n)))
		return fail(ps, start, "invalid value (expected true or false)");
	ps->i += n;
	*out = new_value(ps, TOML_BOOL, start, O_VALUE, depth);
	(*out)->u.b = b;
	return 0;
}

/* [ value, value, ... ] with newlines and comments anywhere between and
 * an optional trailing comma. */
static int parse_array(struct parser *ps, int depth, toml_value **out)
{
	size_t start = ps->i;
	_cleanup_toml_ toml_value *arr = new_value(ps, TOML_ARRAY, start, O_VALUE, depth);
	toml_value *item;

	ps->i++;
	for (;;) {
		if (skip_blank(ps) < 0)
			return -1;
		if (peek(ps) == ']')
			break;
		if (peek(ps) < 0)
			return fail(ps, start, "unterminated array");
		if (parse_value(ps, depth + 1, &item) < 0)
			return -1;
		arr_add(arr, item);
		if (skip_blank(ps) < 0)
			return -1;
		if (peek(ps) == ']')
			break;
		if (peek(ps) < 0)
			return fail(ps, start, "unterminated array");
		if (peek(ps) != ',')
			return fail_found(ps, "expected ',' or ']' after an array item");
		ps->i++;
	}
	ps->i++;
	*out = steal_pointer(&arr);
	return 0;
}

/* Inside an inline table, which TOML 1.0 keeps on one line. */
static int inline_ws(struct parser *ps, size_t start)
{
	int c;

	skip_ws(ps);
	c = peek(ps);
	if (c < 0)
		return fail(ps, start, "unterminated inline table");
	if (c == '\n' || c == '\r' || c == '#')
		return fail(ps, ps->i, "inline table must be on one line");
	return 0;
}

/* { key = value, ... } on one line, without a trailing comma. */
static int parse_inline_table(struct parser *ps, int depth, toml_value **out)
{
	size_t start = ps->i;
	_cleanup_toml_ toml_value *tab = new_value(ps, TOML_TABLE, start, O_VALUE, depth);

	ps->i++;
	if (inline_ws(ps, start) < 0)
		return -1;
	while (peek(ps) != '}') {
		if (parse_keyval(ps, tab) < 0 || inline_ws(ps, start) < 0)
			return -1;
		if (peek(ps) == '}')
			break;
		if (peek(ps) != ',')
			return fail_found(ps, "expected ',' or '}' after an inline table item");
		ps->i++;
		if (inline_ws(ps, start) < 0)
			return -1;
		if (peek(ps) == '}')
			return fail(ps, ps->i, "trailing comma in an inline table");
	}
	ps->i++;
	*out = steal_pointer(&tab);
	return 0;
}

static bool starts_datetime(const struct parser *ps)
{
	return looks_like(ps, 0, 4, '-') || looks_like(ps, 0, 2, ':');
}

static int parse_value(struct parser *ps, int depth, toml_value **out)
{
	int c = peek(ps);

	*out = NULL;
	if (check_depth(ps, ps->i, depth) < 0)
		return -1;
	switch (c) {
	case '"':
	case '\'':
		return parse_string_value(ps, depth, out);
	case '[':
		return parse_array(ps, depth, out);
	case '{':
		return parse_inline_table(ps, depth, out);
	case 't':
	case 'f':
		return parse_bool(ps, depth, out);
	}
	if (is_digit(c) && starts_datetime(ps))
		return parse_datetime(ps, depth, out);
	if (is_digit(c) || c == '+' || c == '-' || c == 'i' || c == 'n')
		return parse_number(ps, depth, out);
	return fail_found(ps, "expected a value");
}

/* ---- key/value pairs and headers ---- */

/* Walk the dotted prefix of key from tab, making tables as needed.  Dotted
 * keys may go into tables that dotted keys made (in this same table, as no
 * other way leads back into one) and into tables a header only implied;
 * never into a table defined by a header or written as a value. */
static toml_value *walk_dotted(struct parser *ps, toml_value *tab, struct key *key)
{
	char kb[128];

	for (size_t k = 0; k + 1 < key->n; k++) {
		struct key_part *kp = &key->parts[k];
		toml_value *next = tab_lookup(ps, tab, kp);
		if (!next) {
			next = add_table(ps, tab, kp, kp->off, O_DOTTED);
			if (!next)
				return NULL;
		} else if (next->type == TOML_TABLE && node_of(next)->origin == O_IMPLICIT) {
			node_of(next)->origin = O_DOTTED;
		} else if (next->type != TOML_TABLE || node_of(next)->origin != O_DOTTED) {
			fail(ps, kp->off, "cannot add to '%s' with dotted keys: it is %s%s",
			     show_key(key, k + 1, kb, sizeof(kb)), what_is(next),
			     node_of(next)->origin == O_HEADER ? " defined by a header" : "");
			return NULL;
		}
		tab = next;
	}
	return tab;
}

/* key = value, into tab. */
static int parse_keyval(struct parser *ps, toml_value *tab)
{
	_cleanup_key_ struct key key = { 0 };
	toml_value *parent, *v;
	char kb[128];

	if (parse_key(ps, &key) < 0)
		return -1;
	if (peek(ps) != '=')
		return fail_found(ps, "expected '=' after key");
	ps->i++;
	skip_ws(ps);
	parent = walk_dotted(ps, tab, &key);
	if (!parent)
		return -1;
	struct key_part *kp = &key.parts[key.n - 1];
	if (tab_lookup(ps, parent, kp))
		return fail(ps, kp->off, "duplicate key '%s'", show_key(&key, key.n, kb, sizeof(kb)));
	if (parse_value(ps, node_of(parent)->depth + 1, &v) < 0)
		return -1;
	tab_add(ps, parent, kp, v);
	return 0;
}

/* Walk the prefix of a header's key from the root: through tables (but
 * not inline ones) and into the last table of an array of tables, making
 * implicit tables as needed. */
static toml_value *walk_header(struct parser *ps, struct key *key, size_t start)
{
	toml_value *tab = ps->root;
	char kb[128];

	for (size_t k = 0; k + 1 < key->n; k++) {
		struct key_part *kp = &key->parts[k];
		toml_value *next = tab_lookup(ps, tab, kp);
		if (!next) {
			next = add_table(ps, tab, kp, start, O_IMPLICIT);
			if (!next)
				return NULL;
		} else if (next->type == TOML_ARRAY && node_of(next)->origin == O_AOT) {
			next = next->u.arr.items[next->u.arr.n - 1];
		} else if (next->type != TOML_TABLE || node_of(next)->origin == O_VALUE) {
			fail(ps, kp->off, "cannot extend '%s' with a header: it is %s",
			     show_key(key, k + 1, kb, sizeof(kb)), what_is(next));
			return NULL;
		}
		tab = next;
	}
	return tab;
}

/* [a.b]: define the table, unless something already did. */
static toml_value *define_table(struct parser *ps, toml_value *parent, struct key *key,
				size_t start)
{
	struct key_part *kp = &key->parts[key->n - 1];
	toml_value *t = tab_lookup(ps, parent, kp);
	char kb[128];

	if (!t)
		return add_table(ps, parent, kp, start, O_HEADER);
	show_key(key, key->n, kb, sizeof(kb));
	if (t->type == TOML_TABLE && node_of(t)->origin == O_HEADER) {
		fail(ps, kp->off, "table '%s' defined twice", kb);
		return NULL;
	}
	if (t->type != TOML_TABLE || node_of(t)->origin != O_IMPLICIT) {
		fail(ps, kp->off, "cannot define table '%s': it is already %s%s", kb, what_is(t),
		     node_of(t)->origin == O_DOTTED ? " defined by dotted keys" : "");
		return NULL;
	}
	/* It was only implied so far: it is defined here. */
	node_of(t)->origin = O_HEADER;
	position(ps, start, &t->line, &t->col);
	long idx = map_find(&ps->map, parent, kp->s, kp->len);
	position(ps, kp->off, &parent->u.tab.key_line[idx], &parent->u.tab.key_col[idx]);
	return t;
}

/* [[a.b]]: append a table to the array of tables, making it if needed. */
static toml_value *append_table(struct parser *ps, toml_value *parent, struct key *key,
				size_t start)
{
	struct key_part *kp = &key->parts[key->n - 1];
	toml_value *arr = tab_lookup(ps, parent, kp);
	char kb[128];

	if (!arr) {
		int depth = node_of(parent)->depth + 1;
		if (check_depth(ps, kp->off, depth + 1) < 0)
			return NULL;
		arr = new_value(ps, TOML_ARRAY, start, O_AOT, depth);
		tab_add(ps, parent, kp, arr);
	} else if (arr->type != TOML_ARRAY || node_of(arr)->origin != O_AOT) {
		fail(ps, kp->off, "cannot define array of tables '%s': it is already %s",
		     show_key(key, key->n, kb, sizeof(kb)), what_is(arr));
		return NULL;
	}
	toml_value *t = new_value(ps, TOML_TABLE, start, O_HEADER, node_of(arr)->depth + 1);
	arr_add(arr, t);
	return t;
}

/* [table] or [[array of tables]]: the tables that follow go there. */
static int parse_header(struct parser *ps)
{
	_cleanup_key_ struct key key = { 0 };
	size_t start = ps->i;
	bool aot = peek_at(ps, 1) == '[';
	toml_value *parent, *t;

	ps->i += aot ? 2 : 1;
	if (parse_key(ps, &key) < 0)
		return -1;
	if (peek(ps) != ']')
		return fail_found(ps, aot ? "expected ']]' to close the header"
					  : "expected ']' to close the header");
	ps->i++;
	if (aot && peek(ps) != ']')
		return fail_found(ps, "expected ']]' to close the header");
	ps->i += aot;
	parent = walk_header(ps, &key, start);
	if (!parent)
		return -1;
	t = aot ? append_table(ps, parent, &key, start) : define_table(ps, parent, &key, start);
	if (!t)
		return -1;
	ps->cur = t;
	return end_of_line(ps, "a table header");
}

static int parse_document(struct parser *ps)
{
	for (;;) {
		skip_ws(ps);
		int c = peek(ps);
		if (c < 0)
			return 0;
		if (c == '[') {
			if (parse_header(ps) < 0)
				return -1;
			continue;
		}
		if (c != '#' && c != '\n' && c != '\r' && parse_keyval(ps, ps->cur) < 0)
			return -1;
		if (end_of_line(ps, "a value") < 0)
			return -1;
	}
}

int toml_parse(const char *text, size_t len, toml_value **out, struct toml_error *err)
{
	struct toml_error dummy;
	struct parser ps = {
		.s = text ? text : "",
		.len = text ? len : 0,
		.err = err ? err : &dummy,
		.pos_line = 1,
		.pos_col = 1,
	};

	*out = NULL;
	memset(ps.err, 0, sizeof(*ps.err));
	/* A byte order mark is not part of the document. */
	if (ps.len >= 3 && memcmp(ps.s, "\xef\xbb\xbf", 3) == 0)
		ps.i = ps.start = ps.pos_off = 3;
	if (check_utf8(&ps) < 0)
		return -1;
	ps.root = new_value(&ps, TOML_TABLE, ps.i, O_ROOT, 0);
	ps.cur = ps.root;
	int r = parse_document(&ps);
	free(ps.map.slots);
	if (r < 0) {
		toml_free(ps.root);
		return -1;
	}
	*out = ps.root;
	return 0;
}

void toml_free(toml_value *v)
{
	if (!v)
		return;
	switch (v->type) {
	case TOML_STRING:
		free(v->u.str.ptr);
		break;
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		free(v->u.datetime);
		break;
	case TOML_ARRAY:
		for (size_t k = 0; k < v->u.arr.n; k++)
			toml_free(v->u.arr.items[k]);
		free(v->u.arr.items);
		break;
	case TOML_TABLE:
		for (size_t k = 0; k < v->u.tab.n; k++) {
			free(v->u.tab.keys[k]);
			toml_free(v->u.tab.vals[k]);
		}
		free(v->u.tab.keys);
		free(v->u.tab.key_len);
		free(v->u.tab.key_line);
		free(v->u.tab.key_col);
		free(v->u.tab.vals);
		break;
	case TOML_INTEGER:
	case TOML_FLOAT:
	case TOML_BOOL:
		break;
	}
	free(v);
}

void cleanup_toml_freep(toml_value **v)
{
	toml_free(*v);
}

toml_value *toml_getn(const toml_value *table, const char *key, size_t len)
{
	if (!table || table->type != TOML_TABLE)
		return NULL;
	for (size_t k = 0; k < table->u.tab.n; k++)
		if (key_is(table, k, key, len))
			return table->u.tab.vals[k];
	return NULL;
}

toml_value *toml_get(const toml_value *table, const char *key)
{
	return toml_getn(table, key, strlen(key));
}

toml_value *toml_get_path(const toml_value *table, const char *path)
{
	const toml_value *v = table;

	for (;;) {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);
		v = toml_getn(v, path, n);
		if (!v || !dot)
			return (toml_value *)v;
		path = dot + 1;
	}
}

long toml_index(const toml_value *table, const char *key)
{
	size_t len = strlen(key);

	if (!table || table->type != TOML_TABLE)
		return -1;
	for (size_t k = 0; k < table->u.tab.n; k++)
		if (key_is(table, k, key, len))
			return (long)k;
	return -1;
}

const char *toml_type_name(enum toml_type t)
{
	static const char *const names[] = {
		[TOML_STRING] = "string",
		[TOML_INTEGER] = "integer",
		[TOML_FLOAT] = "float",
		[TOML_BOOL] = "bool",
		[TOML_DATETIME] = "datetime",
		[TOML_DATETIME_LOCAL] = "datetime-local",
		[TOML_DATE_LOCAL] = "date-local",
		[TOML_TIME_LOCAL] = "time-local",
		[TOML_ARRAY] = "array",
		[TOML_TABLE] = "table",
	};

	if ((unsigned)t >= ARRAY_SIZE(names))
		return "unknown";
	return names[t];
}
