/* toml_number.c: integers, floats, and the four kinds of dates and
 * times. */
#include <config.h>

#include "common/toml_int.h"

/* ---- numbers ---- */

static int check_end(struct parser *ps, const char *what)
{
	if (ends_value(peek(ps)))
		return 0;
	char b[16], msg[64];
	snprintf(msg, sizeof(msg), "invalid %s: unexpected %s", what,
		 tp_describe(ps, ps->i, b, sizeof(b)));
	return tp_fail(ps, ps->i, "%s", msg);
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
		return tp_fail_found(ps, m);
	}
	for (;;) {
		int c = peek(ps);
		if (c == '_') {
			if (!is_base_digit(peek_at(ps, 1), base))
				return tp_fail(ps, ps->i, "'_' in %s must be between digits", what);
			ps->i++;
			continue;
		}
		if (!is_base_digit(c, base))
			return 0;
		tp_buf_addc(b, c);
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
			return tp_fail(ps, start, "integer out of range (64-bit signed)");
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
	*out = tp_new_value(ps, TOML_INTEGER, start, O_VALUE, depth);
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
	*out = tp_new_value(ps, TOML_FLOAT, start, O_VALUE, depth);
	(*out)->u.f = inf ? (neg ? -INFINITY : INFINITY) : (neg ? -NAN : NAN);
	return 0;
}

/* The fraction and exponent of a float, after its integer part. */
static int scan_float_tail(struct parser *ps, struct buf *b)
{
	if (peek(ps) == '.') {
		tp_buf_addc(b, '.');
		ps->i++;
		if (scan_digits(ps, b, 10, "the fraction of a float") < 0)
			return -1;
	}
	if (peek(ps) == 'e' || peek(ps) == 'E') {
		tp_buf_addc(b, 'e');
		ps->i++;
		if (peek(ps) == '+' || peek(ps) == '-')
			tp_buf_addc(b, ps->s[ps->i++]);
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
		return tp_fail(ps, start, "invalid float");
	/* Underflow to zero or a subnormal is a fine approximation; a
	 * literal too large for a double is not. */
	if (errno == ERANGE && isinf(d))
		return tp_fail(ps, start, "float out of range");
	*out = tp_new_value(ps, TOML_FLOAT, start, O_VALUE, depth);
	(*out)->u.f = d;
	return 0;
}

/* Decimal integers and floats, inf and nan, and the prefixed integers. */
int tp_parse_number(struct parser *ps, int depth, toml_value **out)
{
	_cleanup_buf_ struct buf b = { 0 };
	size_t start = ps->i;
	int c = peek(ps);
	bool neg = c == '-';
	int64_t v = 0;

	if (c == '0' && (peek_at(ps, 1) == 'x' || peek_at(ps, 1) == 'o' || peek_at(ps, 1) == 'b'))
		return parse_prefixed_int(ps, depth, out);
	if (c == '+' || c == '-') {
		tp_buf_addc(&b, c);
		ps->i++;
	}
	if ((peek(ps) == 'i' && peek_at(ps, 1) == 'n' && peek_at(ps, 2) == 'f') ||
	    (peek(ps) == 'n' && peek_at(ps, 1) == 'a' && peek_at(ps, 2) == 'n'))
		return parse_special_float(ps, depth, neg, start, out);
	if (!is_digit(peek(ps)))
		return ps->i == start ? tp_fail_found(ps, "expected a value")
				      : tp_fail_found(ps, "expected a digit after the sign");
	if (peek(ps) == '0' && (peek_at(ps, 1) == 'x' || peek_at(ps, 1) == 'o' ||
				peek_at(ps, 1) == 'b'))
		return tp_fail(ps, start, "a prefixed integer cannot have a sign");
	if (peek(ps) == '0' && (is_digit(peek_at(ps, 1)) || peek_at(ps, 1) == '_'))
		return tp_fail(ps, ps->i, "leading zero in a decimal number");
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
	*out = tp_new_value(ps, TOML_INTEGER, start, O_VALUE, depth);
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

bool tp_looks_like(const struct parser *ps, size_t k, int ndigits, char sep)
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
		return tp_fail_found(ps, m);
	}
	if (v < min || v > max)
		return tp_fail(ps, at, "%s %0*d out of range (%0*d to %0*d)", name, width, v,
			    width, min, width, max);
	if (sep) {
		if (peek(ps) != sep) {
			char m[64];
			snprintf(m, sizeof(m), "expected '%c' after the %s", sep, name);
			return tp_fail_found(ps, m);
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
		return tp_fail(ps, at, "day %02d out of range for %04d-%02d", d, y, m);
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
		return tp_fail_found(ps, "expected digits after the decimal point of the seconds");
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
int tp_parse_datetime(struct parser *ps, int depth, toml_value **out)
{
	size_t start = ps->i;
	enum toml_type type = TOML_TIME_LOCAL;
	bool offset = false;

	if (tp_looks_like(ps, 0, 2, ':')) {
		if (parse_time(ps) < 0)
			return -1;
	} else {
		if (parse_date(ps) < 0)
			return -1;
		type = TOML_DATE_LOCAL;
		int c = peek(ps);
		/* A space separates a date from a time only when a time
		 * follows; otherwise it ends a local date. */
		if (c == 'T' || c == 't' || (c == ' ' && tp_looks_like(ps, 1, 2, ':'))) {
			ps->i++;
			if (parse_time(ps) < 0 || parse_offset(ps, &offset) < 0)
				return -1;
			type = offset ? TOML_DATETIME : TOML_DATETIME_LOCAL;
		}
	}
	if (check_end(ps, "date or time") < 0)
		return -1;
	*out = tp_new_value(ps, type, start, O_VALUE, depth);
	(*out)->u.datetime = normalize_datetime(ps->s + start, ps->i - start);
	return 0;
}
