/* expand.c: ${VAR} expansion (see expand.h for the grammar). */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "expand.h"
#include "log.h"

struct strbuf {
	char *p;
	size_t len, cap;
};

static void strbuf_add(struct strbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* One expansion in progress.  emit is false while reading a default that
 * is not used: its syntax is still checked, but nothing is written and no
 * unset name is reported. */
struct xp {
	const char *s;
	size_t i;
	const struct expand_vars *vars;
	struct strbuf out;
	alps_error **err;
};

static int xp_fail(struct xp *x, size_t at, const char *what)
{
	_cleanup_free_ char *esc = log_escape(x->s, 120);
	return alps_fail(x->err, ALPS_E_INVALID, "%s at character %zu of \"%s\"", what, at + 1,
			 esc);
}

static bool name_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static size_t name_len(const char *s)
{
	size_t n = 0;
	if (!name_start(s[0]))
		return 0;
	while (name_start(s[n]) || (s[n] >= '0' && s[n] <= '9'))
		n++;
	return n;
}

static const char *xp_lookup(struct xp *x, const char *name)
{
	if (!x->vars || !x->vars->lookup)
		return NULL;
	return x->vars->lookup(x->vars->arg, name);
}

static int xp_seq(struct xp *x, bool emit, int depth);

/* The name of a ${...} starting at x->i (the '$'): its length, or -1. */
static long xp_name(struct xp *x, size_t start)
{
	const char *p = x->s + x->i;
	size_t n = name_len(p);
	char c = p[n];
	/* With no '}' anywhere after it, "${HOME/x" is unterminated rather
	 * than a bad name: that is the mistake the user made. */
	if (c == '\0' || !strchr(p + n, '}'))
		return xp_fail(x, start, "unterminated \"${\"");
	if (n == 0 && (c == '}' || c == ':'))
		return xp_fail(x, start, "empty variable name");
	if (n == 0 || (c != '}' && !(c == ':' && p[n + 1] == '-')))
		return xp_fail(x, x->i + n, "invalid variable name (expected NAME, ${NAME} "
			       "or ${NAME:-default})");
	return (long)n;
}

/* An undefined name is an error, as the CE documents it ("Referencing an
 * undefined variable results in an error"): expanding it to "" turns a
 * mount of ${NOPE}/x into /x.  Without vars only the syntax is checked. */
static int xp_value(struct xp *x, const char *name, const char *val, bool emit)
{
	if (!emit || !x->vars)
		return 0;
	if (!val) {
		_cleanup_free_ char *esc = log_escape(name, 80);
		return alps_fail(x->err, ALPS_E_INVALID, "${%s} is not defined (write ${%s:-} "
				 "for an empty default)", esc, esc);
	}
	strbuf_add(&x->out, val, strlen(val));
	return 0;
}

/* ${NAME} or ${NAME:-default}, with x->i at the '$'. */
static int xp_var(struct xp *x, bool emit, int depth)
{
	size_t start = x->i;
	if (depth >= EXPAND_MAX_DEPTH)
		return xp_fail(x, start, "\"${\" nested too deeply");
	x->i += 2;
	long n = xp_name(x, start);
	if (n < 0)
		return -1;
	_cleanup_free_ char *name = xstrndup(x->s + x->i, (size_t)n);
	x->i += (size_t)n;
	const char *val = emit ? xp_lookup(x, name) : NULL;
	if (x->s[x->i] == '}') {
		x->i++;
		return xp_value(x, name, val, emit);
	}
	x->i += 2;      /* ":-" */
	bool use_default = emit && (!val || !*val);
	if (emit && !use_default && xp_value(x, name, val, true) < 0)
		return -1;
	if (xp_seq(x, use_default, depth + 1) < 0)
		return -1;
	if (x->s[x->i] != '}')
		return xp_fail(x, start, "unterminated \"${\"");
	x->i++;
	return 0;
}

/* Text up to the end of the string or, nested in a default, up to the '}'
 * that closes it (left for the caller to consume). */
static int xp_seq(struct xp *x, bool emit, int depth)
{
	for (;;) {
		char c = x->s[x->i];
		if (c == '\0' || (c == '}' && depth > 0))
			return 0;
		char d = c == '$' ? x->s[x->i + 1] : '\0';
		if (c == '$' && d == '{') {
			if (xp_var(x, emit, depth) < 0)
				return -1;
			continue;
		}
		if (c == '$' && name_start(d))
			return xp_fail(x, x->i, "bare '$' before a name (write ${NAME}, or $$ "
				       "for a literal '$')");
		/* "$$" is one '$'; any other character, a lone '$' included,
		 * stands for itself. */
		if (emit)
			strbuf_add(&x->out, &c, 1);
		x->i += (c == '$' && d == '$') ? 2 : 1;
	}
}

int expand(const char *s, const struct expand_vars *vars, char **out, alps_error **err)
{
	struct xp x = { .s = s, .vars = vars, .err = err };
	*out = NULL;
	strbuf_add(&x.out, "", 0);
	if (xp_seq(&x, true, 0) < 0) {
		free(x.out.p);
		return -1;
	}
	*out = x.out.p;
	return 0;
}

/* Skip a ${...} at s[i] (the '$'), nested ones included; the offset just
 * after it, or strlen(s) when it is unterminated. */
static size_t skip_braces(const char *s, size_t i)
{
	int depth = 0;
	while (s[i]) {
		if (s[i] == '$' && s[i + 1] == '{') {
			depth++;
			i += 2;
		} else if (s[i] == '$' && s[i + 1] == '$') {
			i += 2;
		} else if (s[i] == '}' && --depth == 0) {
			return i + 1;
		} else {
			i++;
		}
	}
	return i;
}

size_t expand_span(const char *s, char c)
{
	size_t i = 0;
	while (s[i] && s[i] != c) {
		if (s[i] == '$' && s[i + 1] == '{')
			i = skip_braces(s, i);
		else if (s[i] == '$' && s[i + 1] == '$')
			i += 2;
		else
			i++;
	}
	return i;
}

const char *expand_envv_get(const char *const *envv, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; envv && envv[i]; i++)
		if (strncmp(envv[i], name, n) == 0 && envv[i][n] == '=')
			return envv[i] + n + 1;
	return NULL;
}
