/* edf_merge.c: images, merging files, expansion and accessors (see edf.h). */
#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edf.h"
#include "edf_impl.h"
#include "expand.h"
#include "log.h"

/* ---- Images ---------------------------------------------------------- */

bool has_squashfs_suffix(const char *s)
{
	return str_has_suffix(s, ".sqsh") || str_has_suffix(s, ".sqfs") ||
	       str_has_suffix(s, ".squashfs");
}

/* THE RULE (edf.h), pyxis's: '/' or '.' starts a path, anything else is
 * a reference.  No reference can start so, and the rule needs no look at
 * the file system, which the daemon must not do for the user; what the
 * file holds is decided by reading it (edf_image_file_check). */
static bool is_path_image(const char *s)
{
	return s[0] == '/' || s[0] == '.';
}

/* cwd + "/" + rel, lexically normalized. */
static char *path_from(const char *cwd, const char *rel)
{
	_cleanup_free_ char *joined = xasprintf("%s/%s", cwd, rel);
	return path_lexical(joined);
}

static int image_path(struct edf *e, const char *cwd, alps_error **err)
{
	const char *s = e->image.value;
	if (s[0] != '/' && cwd) {
		char *abs = path_from(cwd, s);
		free(e->image.value);
		e->image.value = abs;
	} else if (s[0] != '/' && e->expanded) {
		_cleanup_free_ char *esc = log_escape(s, 200);
		return fail_loc(err, &e->image.loc, "relative image path \"%s\" and no working "
				"directory to resolve it against", esc);
	}
	e->image_kind = EDF_IMAGE_SQUASHFS;
	return 0;
}

/* Docker's grammar first; enroot's when there is a '#', or when docker's
 * fails on what enroot reads as "USER@IMAGE".  Docker's error is the one
 * reported when both fail: it is the form most people mean. */
static int image_ref(struct edf *e, alps_error **err)
{
	const char *s = e->image.value;
	_cleanup_error_ alps_error *first = NULL;
	bool enroot = strchr(s, '#') != NULL;
	if (!enroot && ref_parse(s, NULL, &e->ref, &first) == 0)
		goto ok;
	if ((enroot || strchr(s, '@')) &&
	    ref_parse_enroot(s, NULL, &e->ref, &e->image_user, first ? NULL : err) == 0)
		goto ok;
	if (first && err && !*err)
		*err = steal_pointer(&first);
	return prefix_loc(err, &e->image.loc);
ok:
	e->image_kind = EDF_IMAGE_REF;
	return 0;
}

int image_classify(struct edf *e, const char *cwd, alps_error **err)
{
	const char *s = e->image.value;
	image_clear(e);
	if (!s) {
		e->image_kind = EDF_IMAGE_UNSET;
		return 0;
	}
	e->image_kind = !*s ? EDF_IMAGE_NONE : EDF_IMAGE_DEFERRED;
	if (!*s || !is_final(e, s))
		return 0;
	if (is_path_image(s))
		return image_path(e, cwd, err);
	_cleanup_free_ char *esc = log_escape(s, 200);
	if (s[0] == '~')
		return fail_loc(err, &e->image.loc, "\"%s\": '~' is not expanded here; write "
				"\"${HOME}/...\"", esc);
	if (has_squashfs_suffix(s))
		return fail_loc(err, &e->image.loc, "\"%s\" looks like a squashfs file: name it "
				"by a path, \"./%s\" or an absolute one", esc, esc);
	return image_ref(e, err);
}

/* ---- Merging --------------------------------------------------------- */

static void string_override(struct edf_string *dst, const struct edf_string *src)
{
	if (!src->value)
		return;
	string_free(dst);
	dst->value = xstrdup(src->value);
	loc_copy(&dst->loc, &src->loc);
}

static void flag_override(struct edf_flag *dst, const struct edf_flag *src)
{
	if (src->value < 0)
		return;
	loc_free(&dst->loc);
	dst->value = src->value;
	loc_copy(&dst->loc, &src->loc);
}

static void image_override(struct edf *base, const struct edf *child)
{
	if (!child->image.value)
		return;
	string_override(&base->image, &child->image);
	image_clear(base);
	base->image_kind = child->image_kind;
	if (child->image_kind == EDF_IMAGE_REF)
		ref_copy(&base->ref, &child->ref);
	if (child->image_user)
		base->image_user = xstrdup(child->image_user);
}

/* Key by key, the later value winning in the place of the earlier. */
static void vars_merge(struct edf_var **v, size_t *n, const struct edf_var *src, size_t nsrc)
{
	for (size_t i = 0; i < nsrc; i++) {
		struct edf_var *dst = NULL;
		for (size_t j = 0; j < *n && !dst; j++)
			if (strcmp((*v)[j].key, src[i].key) == 0)
				dst = &(*v)[j];
		if (!dst) {
			*v = xreallocarray(*v, *n + 1, sizeof(**v));
			dst = &(*v)[(*n)++];
			dst->key = xstrdup(src[i].key);
		} else {
			free(dst->value);
			loc_free(&dst->loc);
		}
		dst->value = xstrdup(src[i].value);
		loc_copy(&dst->loc, &src[i].loc);
	}
}

static void mounts_append(struct edf *base, const struct edf *child)
{
	base->mounts = xreallocarray(base->mounts, base->nmounts + child->nmounts + 1,
				     sizeof(*base->mounts));
	for (size_t i = 0; i < child->nmounts; i++) {
		struct edf_mount *m = &base->mounts[base->nmounts++];
		m->src = xstrdup(child->mounts[i].src);
		m->dst = xstrdup(child->mounts[i].dst);
		m->flags = child->mounts[i].flags;
		m->flags_text = child->mounts[i].flags_text ? xstrdup(child->mounts[i].flags_text)
							    : NULL;
		m->same_path = child->mounts[i].same_path;
		loc_copy(&m->loc, &child->mounts[i].loc);
	}
}

static void devices_append(struct edf *base, const struct edf *child)
{
	base->devices = xreallocarray(base->devices, base->ndevices + child->ndevices + 1,
				      sizeof(*base->devices));
	for (size_t i = 0; i < child->ndevices; i++) {
		struct edf_string *d = &base->devices[base->ndevices++];
		d->value = xstrdup(child->devices[i].value);
		loc_copy(&d->loc, &child->devices[i].loc);
	}
}

static void bases_copy(struct edf *base, const struct edf *child)
{
	bases_free(base);
	base->bases = xcalloc(child->nbases + 1, sizeof(*base->bases));
	for (size_t i = 0; i < child->nbases; i++) {
		base->bases[i].name = xstrdup(child->bases[i].name);
		loc_copy(&base->bases[i].loc, &child->bases[i].loc);
	}
	base->nbases = child->nbases;
}

static void files_append(struct edf *base, const struct edf *child)
{
	base->files = xreallocarray(base->files, base->nfiles + child->nfiles,
				    sizeof(*base->files));
	for (size_t i = 0; i < child->nfiles; i++) {
		struct edf_file *f = &base->files[base->nfiles++];
		f->name = xstrdup(child->files[i].name);
		f->path = child->files[i].path ? xstrdup(child->files[i].path) : NULL;
	}
	for (size_t i = 0; i < child->nnotes; i++)
		strv_push(&base->notes, &base->nnotes, xstrdup(child->notes[i]));
}

int edf_merge(struct edf *base, const struct edf *child, alps_error **err)
{
	if (base->expanded || child->expanded)
		return alps_fail(err, ALPS_E_INTERNAL, "EDFs are merged before they are expanded");
	/* Limits first, so that a failure changes nothing. */
	if (base->nmounts + child->nmounts > EDF_MAX_MOUNTS ||
	    base->ndevices + child->ndevices > EDF_MAX_MOUNTS)
		return alps_fail(err, ALPS_E_LIMIT, "%s: more than %d mounts with its bases",
				 child->name, EDF_MAX_MOUNTS);
	if (base->nenv + child->nenv > EDF_MAX_VARS ||
	    base->nannotations + child->nannotations > EDF_MAX_VARS)
		return alps_fail(err, ALPS_E_LIMIT, "%s: more than %d env entries or annotations "
				 "with its bases", child->name, EDF_MAX_VARS);
	image_override(base, child);
	string_override(&base->workdir, &child->workdir);
	flag_override(&base->entrypoint, &child->entrypoint);
	flag_override(&base->writable, &child->writable);
	bases_copy(base, child);
	vars_merge(&base->env, &base->nenv, child->env, child->nenv);
	vars_merge(&base->annotations, &base->nannotations, child->annotations,
		   child->nannotations);
	files_append(base, child);
	free(base->name);
	base->name = xstrdup(child->name);
	mounts_append(base, child);
	devices_append(base, child);
	/* Cannot fail: base's and child's mounts come from different files,
	 * which settle compares no more, and each was settled when parsed. */
	return mounts_settle(base, err);
}

/* ---- Expansion ------------------------------------------------------- */

/* Every name is looked up in one place, the job's environment on the
 * host (edf.h): the image is not known when the file is expanded (prepare
 * expands before it pulls, check has no image), and one rule for every
 * value gives check and prepare the same answer. */
static const char *lookup_get(void *arg, const char *name)
{
	return expand_envv_get(arg, name);
}

static void expand_value(const struct expand_vars *vars, char **value,
			 const struct edf_loc *loc, struct edf_errors *errs)
{
	if (!*value)
		return;
	char *out;
	alps_error *e1 = NULL;
	if (expand(*value, vars, &out, &e1) < 0) {
		prefix_loc(&e1, loc);
		errors_keep(errs, &e1);
		return;
	}
	free(*value);
	*value = out;
}

/* "This capability applies across all configuration parameters in the
 * EDF": every string value, mount flags, annotations and devices too.
 * Every failure is kept, so that one run shows them all. */
static void expand_all(struct edf *e, const struct expand_vars *vars, struct edf_errors *errs)
{
	expand_value(vars, &e->image.value, &e->image.loc, errs);
	expand_value(vars, &e->workdir.value, &e->workdir.loc, errs);
	for (size_t i = 0; i < e->nmounts; i++) {
		struct edf_mount *m = &e->mounts[i];
		expand_value(vars, &m->src, &m->loc, errs);
		expand_value(vars, &m->dst, &m->loc, errs);
		expand_value(vars, &m->flags_text, &m->loc, errs);
	}
	for (size_t i = 0; i < e->nenv; i++)
		expand_value(vars, &e->env[i].value, &e->env[i].loc, errs);
	for (size_t i = 0; i < e->nannotations; i++)
		expand_value(vars, &e->annotations[i].value, &e->annotations[i].loc, errs);
	for (size_t i = 0; i < e->ndevices; i++)
		expand_value(vars, &e->devices[i].value, &e->devices[i].loc, errs);
}

/* "Relative filesystem paths ... are interpreted as relative to the
 * working directory of the process calling the CE". */
static void mounts_resolve(struct edf *e, const char *cwd)
{
	for (size_t i = 0; cwd && i < e->nmounts; i++) {
		struct edf_mount *m = &e->mounts[i];
		if (m->src[0] != '.')
			continue;
		char *abs = path_from(cwd, m->src);
		free(m->src);
		m->src = abs;
	}
}

/* A relative workdir has nothing to be relative to in a container that
 * does not exist yet: prepare refuses it, and so does check (same code). */
int workdir_check(const struct edf *e, alps_error **err)
{
	const char *w = e->workdir.value;
	if (!w || !*w || w[0] == '/')
		return 0;
	_cleanup_free_ char *esc = log_escape(w, 200);
	return fail_loc(err, &e->workdir.loc, "\"%s\" is not an absolute path (it is a path "
			"inside the container)", esc);
}

static void keep_rc(struct edf_errors *errs, int rc, alps_error **e1)
{
	if (rc < 0)
		errors_keep(errs, e1);
}

int edf_expand(struct edf *e, const struct edf_context *ctx, alps_error **err)
{
	static const struct edf_context none;
	if (e->expanded)
		return 0;
	if (!ctx)
		ctx = &none;
	struct expand_vars vars = { .lookup = lookup_get, .arg = (void *)ctx->caller_env };
	struct edf_errors errs = { 0 };
	expand_all(e, &vars, &errs);
	if (errors_finish(&errs, err) < 0)
		return -1;
	e->expanded = true;
	mounts_resolve(e, ctx->cwd);
	alps_error *e1 = NULL;
	keep_rc(&errs, image_classify(e, ctx->cwd, &e1), &e1);
	keep_rc(&errs, workdir_check(e, &e1), &e1);
	for (size_t i = 0; i < e->nmounts; i++)
		keep_rc(&errs, mount_check(e, &e->mounts[i], &e1), &e1);
	for (size_t i = 0; i < e->ndevices; i++)
		keep_rc(&errs, device_check(e, &e->devices[i], &e1), &e1);
	if (errs.n == 0)
		keep_rc(&errs, mounts_settle(e, &e1), &e1);
	return errors_finish(&errs, err);
}

/* ---- Accessors ------------------------------------------------------- */

bool edf_entrypoint(const struct edf *e)
{
	return e->entrypoint.value == 1;
}

bool edf_writable(const struct edf *e)
{
	return e->writable.value != 0;
}

const char *edf_image(const struct edf *e)
{
	return e->image.value ? e->image.value : "";
}

static const char *vars_get(const struct edf_var *v, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].key, key) == 0)
			return v[i].value;
	return NULL;
}

const char *edf_env_get(const struct edf *e, const char *key)
{
	return vars_get(e->env, e->nenv, key);
}

const char *edf_annotation_get(const struct edf *e, const char *key)
{
	return vars_get(e->annotations, e->nannotations, key);
}

