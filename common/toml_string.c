/* toml_string.c: UTF-8 (checked once, up front) and the four kinds
 * of TOML strings. */
#include <config.h>

#include "common/toml_int.h"

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

int tp_check_utf8(struct parser *ps)
{
	const unsigned char *s = (const unsigned char *)ps->s;

	for (size_t off = ps->start; off < ps->len;) {
		size_t n = utf8_seq(s + off, ps->len - off);
		if (n == 0)
			return tp_fail(ps, off, "invalid UTF-8 (byte 0x%02X)", s[off]);
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

void tp_buf_add(struct buf *b, const char *p, size_t n)
{
	buf_grow(b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void tp_buf_addc(struct buf *b, char c)
{
	tp_buf_add(b, &c, 1);
}

static void buf_add_utf8(struct buf *b, uint32_t c)
{
	char u[4];

	if (c < 0x80) {
		tp_buf_addc(b, c);
	} else if (c < 0x800) {
		u[0] = 0xc0 | (c >> 6);
		u[1] = 0x80 | (c & 0x3f);
		tp_buf_add(b, u, 2);
	} else if (c < 0x10000) {
		u[0] = 0xe0 | (c >> 12);
		u[1] = 0x80 | ((c >> 6) & 0x3f);
		u[2] = 0x80 | (c & 0x3f);
		tp_buf_add(b, u, 3);
	} else {
		u[0] = 0xf0 | (c >> 18);
		u[1] = 0x80 | ((c >> 12) & 0x3f);
		u[2] = 0x80 | ((c >> 6) & 0x3f);
		u[3] = 0x80 | (c & 0x3f);
		tp_buf_add(b, u, 4);
	}
}

void tp_buf_cleanup(struct buf *b)
{
	free(b->p);
}

/* The buffer's bytes, NUL-terminated, as a new allocation. */
char *tp_buf_steal(struct buf *b, size_t *len)
{
	buf_grow(b, 0);
	b->p[b->len] = '\0';
	*len = b->len;
	b->cap = b->len = 0;
	return steal_pointer(&b->p);
}

/* ---- strings ---- */

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
			return tp_fail(ps, at, "invalid escape '\\%c': expected %d hex digits",
				    ps->s[ps->i + 1], digits);
		c = (c << 4) | h;
	}
	if (c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return tp_fail(ps, at, "escape '\\%c%0*X' is not a Unicode scalar value",
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
		tp_buf_addc(b, to[p - from]);
		ps->i += 2;
		return 0;
	}
	if (c > 0x20 && c < 0x7f)
		return tp_fail(ps, ps->i, "invalid escape '\\%c' in string", c);
	char d[16];
	return tp_fail(ps, ps->i, "invalid escape in string: '\\' followed by %s",
		    tp_describe(ps, ps->i + 1, d, sizeof(d)));
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
		tp_skip_ws(ps);
		if (!tp_eat_newline(ps))
			return true;
	}
}

/* The characters allowed as they are in a string: newlines only in the
 * multi-line kinds, where CRLF reads as LF. */
static int string_char(struct parser *ps, struct buf *b, bool multi)
{
	int c = peek(ps);

	if (multi && tp_eat_newline(ps)) {
		tp_buf_addc(b, '\n');
		return 0;
	}
	if (c == '\n' || (c == '\r' && peek_at(ps, 1) == '\n'))
		return tp_fail(ps, ps->i, "newline in a single-line string");
	if (c == '\r')
		return tp_fail(ps, ps->i, "carriage return not followed by a newline in a string");
	if (is_control(c))
		return tp_fail(ps, ps->i, "control character U+%04X in a string", c);
	tp_buf_addc(b, c);
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
		return tp_fail(ps, ps->i + 5, "too many quotes closing a multi-line string");
	*done = n >= 3;
	for (size_t k = 0; k < (*done ? n - 3 : n); k++)
		tp_buf_addc(b, q);
	ps->i += n;
	return 0;
}

/* Any of the four string kinds at the opening quote. */
int tp_parse_string(struct parser *ps, struct buf *b, bool allow_multi)
{
	size_t start = ps->i;
	char q = ps->s[ps->i];
	bool multi = peek_at(ps, 1) == q && peek_at(ps, 2) == q;
	bool done = false;

	if (multi && !allow_multi)
		return tp_fail(ps, start, "a key cannot be a multi-line string");
	ps->i += multi ? 3 : 1;
	/* A newline right after the opening delimiter is trimmed. */
	if (multi)
		tp_eat_newline(ps);
	buf_grow(b, 0);
	while (!done) {
		int c = peek(ps);
		int r;

		if (c < 0)
			return tp_fail(ps, start, "unterminated string");
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

int tp_parse_string_value(struct parser *ps, int depth, toml_value **out)
{
	_cleanup_buf_ struct buf b = { 0 };
	size_t start = ps->i;

	if (tp_parse_string(ps, &b, true) < 0)
		return -1;
	toml_value *v = tp_new_value(ps, TOML_STRING, start, O_VALUE, depth);
	v->u.str.ptr = tp_buf_steal(&b, &v->u.str.len);
	*out = v;
	return 0;
}
