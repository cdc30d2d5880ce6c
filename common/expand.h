/* expand.h: ${VAR} expansion of environment definition file values.
 *
 *	$$              a literal '$'
 *	${NAME}         the value of NAME; an error if NAME is not defined
 *	${NAME:-WORD}   the value of NAME if it is set and not empty, else
 *	                WORD, itself expanded by these rules (so it may hold
 *	                ':' and a nested ${...}, at most EXPAND_MAX_DEPTH deep)
 *
 * NAME is [A-Za-z_][A-Za-z0-9_]*.  "$" followed by a letter or '_' is an
 * error that asks for ${NAME}: a shell user expects $HOME to expand, and
 * keeping it literal would fail later, far from the cause.  Any other '$'
 * ("$1", "$ ", a trailing "$") is literal.  An unterminated "${", an empty
 * name or an invalid one is an error that gives the character position. */
#ifndef ALPS_EXPAND_H
#define ALPS_EXPAND_H

#include "error.h"

#define EXPAND_MAX_DEPTH 8

/* Where names are looked up.  lookup returns NULL for an undefined name. */
struct expand_vars {
	const char *(*lookup)(void *arg, const char *name);
	void *arg;
};

/* Expand s into *out (caller frees).  An undefined NAME without a default
 * is an error naming it.  vars NULL: nothing is looked up and every name
 * expands to "", which checks the syntax only. */
int expand(const char *s, const struct expand_vars *vars, char **out, alps_error **err);

/* Offset of the first c in s that is outside any ${...}, or strlen(s). */
size_t expand_span(const char *s, char c);

/* The value of name in a NULL-terminated "NAME=value" list (NULL if the
 * list is NULL or has no such entry). */
const char *expand_envv_get(const char *const *envv, const char *name);

#endif
