/* hostlist.c: Slurm host list expressions (see hostlist.h). */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hostlist.h"
#include "common/util.h"

#define MAX_GROUPS 8            /* bracket groups in one name */
#define MAX_RANGES 4096         /* ranges in one group */
#define NUM_DIGITS_MAX 9

struct range {
	unsigned long lo, hi;
	int width;              /* digits of lo as written: zero padding */
};

struct group {
	struct range r[MAX_RANGES];
	size_t nr;
	size_t count;           /* numbers the group names */
};

/* One top-level name: text, then for each group a group and the text
 * after it. */
struct item {
	const char *text[MAX_GROUPS + 1];
	size_t text_len[MAX_GROUPS + 1];
	struct group *groups;   /* owned, ngroups of them */
	size_t ngroups;
};

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.';
}

static int parse_number(const char **p, unsigned long *v, int *width, const char *expr,
			alps_error **err)
{
	const char *s = *p;
	size_t n = 0;
	while (s[n] >= '0' && s[n] <= '9')
		n++;
	if (n == 0 || n > NUM_DIGITS_MAX)
		return alps_fail(err, ALPS_E_INVALID, "host list '%s': %s at offset %zu", expr,
				 n == 0 ? "a number expected" : "number too long",
				 (size_t)(s - expr));
	*v = strtoul(s, NULL, 10);
	*width = (int)n;
	*p = s + n;
	return 0;
}

/* "[a,b-c,...]" at *p (after the '['), up to and past the ']'. */
static int parse_group(const char **p, struct group *g, const char *expr, alps_error **err)
{
	g->nr = 0;
	g->count = 0;
	for (;;) {
		if (g->nr == MAX_RANGES)
			return alps_fail(err, ALPS_E_LIMIT, "host list '%s': over %d ranges in brackets",
					 expr, MAX_RANGES);
		struct range *r = &g->r[g->nr];
		int w2;
		if (parse_number(p, &r->lo, &r->width, expr, err) < 0)
			return -1;
		r->hi = r->lo;
		if (**p == '-') {
			(*p)++;
			if (parse_number(p, &r->hi, &w2, expr, err) < 0)
				return -1;
			if (r->hi < r->lo)
				return alps_fail(err, ALPS_E_INVALID,
						 "host list '%s': range %lu-%lu goes backwards", expr,
						 r->lo, r->hi);
		}
		size_t c = (size_t)(r->hi - r->lo) + 1;
		if (c > HOSTLIST_MAX_HOSTS || g->count + c > HOSTLIST_MAX_HOSTS)
			return alps_fail(err, ALPS_E_LIMIT, "host list '%s': over %d hosts", expr,
					 HOSTLIST_MAX_HOSTS);
		g->count += c;
		g->nr++;
		if (**p == ',') {
			(*p)++;
			continue;
		}
		if (**p == ']') {
			(*p)++;
			return 0;
		}
		return alps_fail(err, ALPS_E_INVALID, "host list '%s': unexpected %s at offset %zu",
				 expr, **p ? "character" : "end", (size_t)(*p - expr));
	}
}

static void item_free(struct item *it)
{
	free(it->groups);
	it->groups = NULL;
	it->ngroups = 0;
}

/* One top-level name starting at *p, up to a ',' at depth 0 or the end. */
static int parse_item(const char **p, struct item *it, const char *expr, alps_error **err)
{
	memset(it, 0, sizeof(*it));
	const char *s = *p;
	for (;;) {
		const char *t = s;
		while (name_char(*s))
			s++;
		it->text[it->ngroups] = t;
		it->text_len[it->ngroups] = (size_t)(s - t);
		if (*s != '[')
			break;
		if (it->ngroups == MAX_GROUPS) {
			item_free(it);
			return alps_fail(err, ALPS_E_LIMIT,
					 "host list '%s': over %d bracket groups in one name", expr,
					 MAX_GROUPS);
		}
		s++;
		it->groups = xreallocarray(it->groups, it->ngroups + 1, sizeof(*it->groups));
		if (parse_group(&s, &it->groups[it->ngroups], expr, err) < 0) {
			item_free(it);
			return -1;
		}
		it->ngroups++;
	}
	if (*s != ',' && *s != '\0') {
		item_free(it);
		return alps_fail(err, ALPS_E_INVALID,
				 "host list '%s': character '%c' at offset %zu is not allowed", expr,
				 *s, (size_t)(s - expr));
	}
	size_t len = 0;
	for (size_t i = 0; i <= it->ngroups; i++)
		len += it->text_len[i];
	if (len == 0 && it->ngroups == 0) {
		item_free(it);
		return alps_fail(err, ALPS_E_INVALID, "host list '%s': empty name at offset %zu",
				 expr, (size_t)(s - expr));
	}
	*p = s;
	return 0;
}

static size_t item_count(const struct item *it)
{
	size_t c = 1;
	for (size_t i = 0; i < it->ngroups; i++) {
		if (it->groups[i].count > HOSTLIST_MAX_HOSTS / c)
			return HOSTLIST_MAX_HOSTS + 1;
		c *= it->groups[i].count;
	}
	return c;
}

/* The k-th number of group g (0 <= k < g->count), formatted. */
static int group_nth(const struct group *g, size_t k, char *buf, size_t size)
{
	for (size_t i = 0; i < g->nr; i++) {
		size_t c = (size_t)(g->r[i].hi - g->r[i].lo) + 1;
		if (k < c)
			return snprintf(buf, size, "%0*lu", g->r[i].width, g->r[i].lo + k);
		k -= c;
	}
	return -1;
}

/* The k-th name of it (the last group varies fastest). */
static char *item_nth(const struct item *it, size_t k, const char *expr, alps_error **err)
{
	size_t idx[MAX_GROUPS];
	for (size_t i = it->ngroups; i-- > 0;) {
		idx[i] = k % it->groups[i].count;
		k /= it->groups[i].count;
	}
	char name[HOSTLIST_NAME_MAX + 1];
	size_t len = 0;
	for (size_t i = 0; i <= it->ngroups; i++) {
		if (it->text_len[i] > HOSTLIST_NAME_MAX - len)
			goto too_long;
		memcpy(name + len, it->text[i], it->text_len[i]);
		len += it->text_len[i];
		if (i == it->ngroups)
			break;
		char num[16];
		int n = group_nth(&it->groups[i], idx[i], num, sizeof(num));
		if (n < 0 || (size_t)n > HOSTLIST_NAME_MAX - len)
			goto too_long;
		memcpy(name + len, num, (size_t)n);
		len += (size_t)n;
	}
	name[len] = '\0';
	return xstrdup(name);
too_long:
	alps_fail(err, ALPS_E_INVALID, "host list '%s': a name is longer than %d characters", expr,
		  HOSTLIST_NAME_MAX);
	return NULL;
}

void hostlist_free(char **hosts)
{
	if (!hosts)
		return;
	for (char **h = hosts; *h; h++)
		free(*h);
	free(hosts);
}

static int check_expr(const char *expr, alps_error **err)
{
	if (!expr || !*expr)
		return alps_fail(err, ALPS_E_INVALID, "empty host list");
	if (strlen(expr) > 1024 * 1024)
		return alps_fail(err, ALPS_E_LIMIT, "host list longer than 1 MiB");
	return 0;
}

int hostlist_expand(const char *expr, size_t max, int stop_at_max, char ***hosts, size_t *n,
		    alps_error **err)
{
	*hosts = NULL;
	*n = 0;
	if (check_expr(expr, err) < 0)
		return -1;
	if (max == 0 || max > HOSTLIST_MAX_HOSTS)
		max = HOSTLIST_MAX_HOSTS;
	char **out = xcalloc(1, sizeof(char *));
	size_t nout = 0;
	const char *p = expr;
	while (*p) {
		struct item it;
		if (parse_item(&p, &it, expr, err) < 0)
			goto fail;
		size_t c = item_count(&it);
		for (size_t k = 0; k < c; k++) {
			if (nout == max) {
				item_free(&it);
				if (stop_at_max)
					goto done;
				alps_fail(err, ALPS_E_LIMIT, "host list '%s': over %zu hosts", expr, max);
				goto fail;
			}
			char *name = item_nth(&it, k, expr, err);
			if (!name) {
				item_free(&it);
				goto fail;
			}
			out = xreallocarray(out, nout + 2, sizeof(char *));
			out[nout++] = name;
			out[nout] = NULL;
		}
		item_free(&it);
		if (*p == ',' && *++p == '\0') {
			alps_fail(err, ALPS_E_INVALID, "host list '%s' ends with a comma", expr);
			goto fail;
		}
	}
done:
	*hosts = out;
	*n = nout;
	return 0;
fail:
	hostlist_free(out);
	return -1;
}

int hostlist_count(const char *expr, size_t *n, alps_error **err)
{
	*n = 0;
	if (check_expr(expr, err) < 0)
		return -1;
	const char *p = expr;
	size_t total = 0;
	while (*p) {
		struct item it;
		if (parse_item(&p, &it, expr, err) < 0)
			return -1;
		size_t c = item_count(&it);
		item_free(&it);
		if (c > HOSTLIST_MAX_HOSTS - total)
			return alps_fail(err, ALPS_E_LIMIT, "host list '%s': over %d hosts", expr,
					 HOSTLIST_MAX_HOSTS);
		total += c;
		if (*p == ',' && *++p == '\0')
			return alps_fail(err, ALPS_E_INVALID, "host list '%s' ends with a comma", expr);
	}
	*n = total;
	return 0;
}

char *hostlist_first(const char *expr, alps_error **err)
{
	size_t n;
	if (hostlist_count(expr, &n, err) < 0)
		return NULL;
	char **hosts;
	if (hostlist_expand(expr, 1, 1, &hosts, &n, err) < 0)
		return NULL;
	char *first = hosts[0];
	hosts[0] = NULL;
	hostlist_free(hosts);
	return first;
}
