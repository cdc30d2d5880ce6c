/* edf_core.c: the EDF core's shared pieces: places, messages, life cycle
 * (see edf.h; the parts are listed in edf_impl.h). */
#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edf.h"
#include "edf_impl.h"
#include "expand.h"
#include "log.h"

/* ---- Places and messages -------------------------------------------- */

void loc_init(struct edf_loc *loc, const char *file, int line, int col, const char *key)
{
	loc->file = xstrdup(file);
	loc->line = line;
	loc->col = col;
	loc->key = xstrdup(key);
}

void loc_copy(struct edf_loc *dst, const struct edf_loc *src)
{
	loc_init(dst, src->file ? src->file : "", src->line, src->col, src->key ? src->key : "");
}

void loc_free(struct edf_loc *loc)
{
	free(loc->file);
	free(loc->key);
	loc->file = loc->key = NULL;
}

char *loc_vformat(const struct edf_loc *loc, const char *fmt, va_list ap)
{
	_cleanup_free_ char *msg = xvasprintf(fmt, ap);
	/* Line 0: a value from no file (jobs.default_mounts): the key says it. */
	if (loc->line == 0)
		return xasprintf("%s: %s", loc->key, msg);
	return xasprintf("%s:%d:%d: %s: %s", loc->file, loc->line, loc->col, loc->key, msg);
}

int fail_loc(alps_error **err, const struct edf_loc *loc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *msg = loc_vformat(loc, fmt, ap);
	va_end(ap);
	return alps_fail(err, ALPS_E_INVALID, "%s", msg);
}

/* Prefix an error from a helper (expand, ref_parse) with the place. */
int prefix_loc(alps_error **err, const struct edf_loc *loc)
{
	if (loc->line == 0)
		return alps_error_prefix(err, "%s", loc->key);
	return alps_error_prefix(err, "%s:%d:%d: %s", loc->file, loc->line, loc->col, loc->key);
}

void errors_keep(struct edf_errors *l, alps_error **e)
{
	if (!*e)
		return;
	if (l->n == 0)
		l->code = (*e)->code;
	if (l->n < EDF_MAX_ERRORS) {
		char *t = xasprintf("%s%s%s", l->text ? l->text : "", l->text ? "\n" : "",
				    (*e)->msg);
		free(l->text);
		l->text = t;
	}
	l->n++;
	alps_error_free(*e);
	*e = NULL;
}

int errors_finish(struct edf_errors *l, alps_error **err)
{
	if (l->n == 0)
		return 0;
	int rc;
	if (l->n > EDF_MAX_ERRORS)
		rc = alps_fail(err, l->code, "%s\n(%zu more errors not shown)", l->text,
			       l->n - EDF_MAX_ERRORS);
	else
		rc = alps_fail(err, l->code, "%s", l->text);
	free(l->text);
	memset(l, 0, sizeof(*l));
	return rc;
}

void strv_push(char ***v, size_t *n, char *s)
{
	*v = xreallocarray(*v, *n + 2, sizeof(**v));
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
}

void note_add(struct edf *e, const struct edf_loc *loc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	strv_push(&e->notes, &e->nnotes, loc_vformat(loc, fmt, ap));
	va_end(ap);
}

void edf_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

char *edf_display_name(const char *name)
{
	if (strchr(name, '/') || str_has_suffix(name, ".toml"))
		return xstrdup(name);
	return xasprintf("%s.toml", name);
}

/* ---- Life cycle ------------------------------------------------------ */

struct edf *edf_new(const char *file)
{
	struct edf *e = xzalloc(sizeof(*e));
	e->name = xstrdup(file);
	e->entrypoint.value = -1;
	e->writable.value = -1;
	e->files = xzalloc(sizeof(*e->files));
	e->files[0].name = xstrdup(file);
	e->nfiles = 1;
	return e;
}

void string_free(struct edf_string *s)
{
	free(s->value);
	s->value = NULL;
	loc_free(&s->loc);
}

void mount_free(struct edf_mount *m)
{
	free(m->src);
	free(m->dst);
	free(m->flags_text);
	loc_free(&m->loc);
}

void var_free(struct edf_var *v)
{
	free(v->key);
	free(v->value);
	loc_free(&v->loc);
}

void image_clear(struct edf *e)
{
	ref_free(&e->ref);
	free(e->image_user);
	e->image_user = NULL;
}

void bases_free(struct edf *e)
{
	for (size_t i = 0; i < e->nbases; i++) {
		free(e->bases[i].name);
		loc_free(&e->bases[i].loc);
	}
	free(e->bases);
	e->bases = NULL;
	e->nbases = 0;
}

void edf_free(struct edf *e)
{
	if (!e)
		return;
	free(e->name);
	string_free(&e->image);
	image_clear(e);
	string_free(&e->workdir);
	loc_free(&e->entrypoint.loc);
	loc_free(&e->writable.loc);
	bases_free(e);
	for (size_t i = 0; i < e->nmounts; i++)
		mount_free(&e->mounts[i]);
	free(e->mounts);
	for (size_t i = 0; i < e->nenv; i++)
		var_free(&e->env[i]);
	free(e->env);
	for (size_t i = 0; i < e->nannotations; i++)
		var_free(&e->annotations[i]);
	free(e->annotations);
	for (size_t i = 0; i < e->ndevices; i++)
		string_free(&e->devices[i]);
	free(e->devices);
	for (size_t i = 0; i < e->nfiles; i++) {
		free(e->files[i].name);
		free(e->files[i].path);
	}
	free(e->files);
	for (size_t i = 0; i < e->nnotes; i++)
		free(e->notes[i]);
	free(e->notes);
	free(e);
}

void cleanup_edf_freep(struct edf **e)
{
	edf_free(*e);
	*e = NULL;
}

