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
 * many keys stays linear.
 *
 * This file is the parser proper; strings (and the UTF-8 check) are in
 * toml_string.c, numbers, dates and times in toml_number.c, what they share
 * (peek_at() among it) in toml_int.h. */
#include <config.h>

#include "common/toml_int.h"

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
int ALPS_PRINTF(3, 4) tp_fail(struct parser *ps, size_t off, const char *fmt, ...)
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
const char *tp_describe(const struct parser *ps, size_t off, char *buf, size_t size)
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

int tp_fail_found(struct parser *ps, const char *what)
{
	char b[16];
	return tp_fail(ps, ps->i, "%s, found %s", what, tp_describe(ps, ps->i, b, sizeof(b)));
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

/* ---- values and tables ---- */

toml_value *tp_new_value(struct parser *ps, enum toml_type type, size_t off,
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
		return tp_fail(ps, off, "nesting deeper than %d levels", TOML_MAX_DEPTH);
	return 0;
}

/* A new table under key part kp of parent. */
static toml_value *add_table(struct parser *ps, toml_value *parent, struct key_part *kp,
			     size_t off, enum origin origin)
{
	int depth = node_of(parent)->depth + 1;

	if (check_depth(ps, kp->off, depth) < 0)
		return NULL;
	toml_value *t = tp_new_value(ps, TOML_TABLE, off, origin, depth);
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

void tp_skip_ws(struct parser *ps)
{
	int c;
	while ((c = peek(ps)) == ' ' || c == '\t')
		ps->i++;
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
			return tp_fail(ps, ps->i, "control character U+%04X in a comment", c);
	}
	return 0;
}

/* Consume a newline (LF or CRLF); false if there is none. */
bool tp_eat_newline(struct parser *ps)
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
		tp_skip_ws(ps);
		if (skip_comment(ps) < 0)
			return -1;
		if (!tp_eat_newline(ps))
			return 0;
	}
}

/* After a key/value pair or a header, only a comment may end the line. */
static int end_of_line(struct parser *ps, const char *after)
{
	tp_skip_ws(ps);
	if (skip_comment(ps) < 0)
		return -1;
	if (peek(ps) < 0 || tp_eat_newline(ps))
		return 0;
	if (peek(ps) == '\r')
		return tp_fail(ps, ps->i, "carriage return not followed by a newline");
	char what[64];
	snprintf(what, sizeof(what), "expected a newline after %s", after);
	return tp_fail_found(ps, what);
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
		if (tp_parse_string(ps, &b, false) < 0)
			return -1;
	} else {
		while (is_bare(peek(ps)))
			ps->i++;
		if (ps->i == start)
			return tp_fail_found(ps, "expected a key");
		tp_buf_add(&b, ps->s + start, ps->i - start);
	}
	/* Each part can make a table: a longer key is nested too deep anyway. */
	if (key->n == TOML_MAX_DEPTH)
		return tp_fail(ps, start, "key has more than %d parts", TOML_MAX_DEPTH);
	if (key->n == key->cap) {
		key->cap = key->cap ? key->cap * 2 : 4;
		key->parts = xreallocarray(key->parts, key->cap, sizeof(*key->parts));
	}
	struct key_part *kp = &key->parts[key->n++];
	kp->off = start;
	kp->s = tp_buf_steal(&b, &kp->len);
	return 0;
}

/* A dotted key: simple keys separated by dots, with optional whitespace
 * around the dots. */
static int parse_key(struct parser *ps, struct key *key)
{
	for (;;) {
		tp_skip_ws(ps);
		if (parse_simple_key(ps, key) < 0)
			return -1;
		tp_skip_ws(ps);
		if (peek(ps) != '.')
			return 0;
		ps->i++;
	}
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
		return tp_fail(ps, start, "invalid value (expected true or false)");
	ps->i += n;
	*out = tp_new_value(ps, TOML_BOOL, start, O_VALUE, depth);
	(*out)->u.b = b;
	return 0;
}

/* [ value, value, ... ] with newlines and comments anywhere between and
 * an optional trailing comma. */
static int parse_array(struct parser *ps, int depth, toml_value **out)
{
	size_t start = ps->i;
	_cleanup_toml_ toml_value *arr = tp_new_value(ps, TOML_ARRAY, start, O_VALUE, depth);
	toml_value *item;

	ps->i++;
	for (;;) {
		if (skip_blank(ps) < 0)
			return -1;
		if (peek(ps) == ']')
			break;
		if (peek(ps) < 0)
			return tp_fail(ps, start, "unterminated array");
		if (parse_value(ps, depth + 1, &item) < 0)
			return -1;
		arr_add(arr, item);
		if (skip_blank(ps) < 0)
			return -1;
		if (peek(ps) == ']')
			break;
		if (peek(ps) < 0)
			return tp_fail(ps, start, "unterminated array");
		if (peek(ps) != ',')
			return tp_fail_found(ps, "expected ',' or ']' after an array item");
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

	tp_skip_ws(ps);
	c = peek(ps);
	if (c < 0)
		return tp_fail(ps, start, "unterminated inline table");
	if (c == '\n' || c == '\r' || c == '#')
		return tp_fail(ps, ps->i, "inline table must be on one line");
	return 0;
}

/* { key = value, ... } on one line, without a trailing comma. */
static int parse_inline_table(struct parser *ps, int depth, toml_value **out)
{
	size_t start = ps->i;
	_cleanup_toml_ toml_value *tab = tp_new_value(ps, TOML_TABLE, start, O_VALUE, depth);

	ps->i++;
	if (inline_ws(ps, start) < 0)
		return -1;
	while (peek(ps) != '}') {
		if (parse_keyval(ps, tab) < 0 || inline_ws(ps, start) < 0)
			return -1;
		if (peek(ps) == '}')
			break;
		if (peek(ps) != ',')
			return tp_fail_found(ps, "expected ',' or '}' after an inline table item");
		ps->i++;
		if (inline_ws(ps, start) < 0)
			return -1;
		if (peek(ps) == '}')
			return tp_fail(ps, ps->i, "trailing comma in an inline table");
	}
	ps->i++;
	*out = steal_pointer(&tab);
	return 0;
}

static bool starts_datetime(const struct parser *ps)
{
	return tp_looks_like(ps, 0, 4, '-') || tp_looks_like(ps, 0, 2, ':');
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
		return tp_parse_string_value(ps, depth, out);
	case '[':
		return parse_array(ps, depth, out);
	case '{':
		return parse_inline_table(ps, depth, out);
	case 't':
	case 'f':
		return parse_bool(ps, depth, out);
	}
	if (is_digit(c) && starts_datetime(ps))
		return tp_parse_datetime(ps, depth, out);
	if (is_digit(c) || c == '+' || c == '-' || c == 'i' || c == 'n')
		return tp_parse_number(ps, depth, out);
	return tp_fail_found(ps, "expected a value");
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
			tp_fail(ps, kp->off, "cannot add to '%s' with dotted keys: it is %s%s",
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
		return tp_fail_found(ps, "expected '=' after key");
	ps->i++;
	tp_skip_ws(ps);
	parent = walk_dotted(ps, tab, &key);
	if (!parent)
		return -1;
	struct key_part *kp = &key.parts[key.n - 1];
	if (tab_lookup(ps, parent, kp))
		return tp_fail(ps, kp->off, "duplicate key '%s'", show_key(&key, key.n, kb, sizeof(kb)));
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
			tp_fail(ps, kp->off, "cannot extend '%s' with a header: it is %s",
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
		tp_fail(ps, kp->off, "table '%s' defined twice", kb);
		return NULL;
	}
	if (t->type != TOML_TABLE || node_of(t)->origin != O_IMPLICIT) {
		tp_fail(ps, kp->off, "cannot define table '%s': it is already %s%s", kb, what_is(t),
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
		arr = tp_new_value(ps, TOML_ARRAY, start, O_AOT, depth);
		tab_add(ps, parent, kp, arr);
	} else if (arr->type != TOML_ARRAY || node_of(arr)->origin != O_AOT) {
		tp_fail(ps, kp->off, "cannot define array of tables '%s': it is already %s",
		     show_key(key, key->n, kb, sizeof(kb)), what_is(arr));
		return NULL;
	}
	toml_value *t = tp_new_value(ps, TOML_TABLE, start, O_HEADER, node_of(arr)->depth + 1);
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
		return tp_fail_found(ps, aot ? "expected ']]' to close the header"
					  : "expected ']' to close the header");
	ps->i++;
	if (aot && peek(ps) != ']')
		return tp_fail_found(ps, "expected ']]' to close the header");
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
		tp_skip_ws(ps);
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
	if (tp_check_utf8(&ps) < 0)
		return -1;
	ps.root = tp_new_value(&ps, TOML_TABLE, ps.i, O_ROOT, 0);
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
