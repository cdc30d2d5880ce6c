/* edf_hostcheck.c: what `alps edf check` says about host integration
 * (edf_hostcheck.h): requested CDI devices that no spec defines, and an
 * NCCL/RCCL plugin variant that does not match the image's CUDA or ROCm.
 *
 * The check runs as the user, without the daemon's configuration: it reads
 * the CDI specs of hooks.cdi_dirs' default (or --cdi-dir), with the rules
 * prepare applies (root's files only), and says which directories it
 * searched, since the node's alpsd.conf may name others. */
#include <config.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/edf_hostcheck.h"
#include "common/edf.h"
#include "common/util.h"
#include "daemon/hooks/cdi.h"
#include "daemon/settings.h"

static void warn(json_t *warnings, char *msg)
{
	json_array_append_new(warnings, json_string(msg));
	free(msg);
}

void edf_check_cdi(const struct edf *e, const char *const *dirs, size_t ndirs,
		   json_t *warnings)
{
	if (e->ndevices == 0)
		return;
	/* None given: hooks.cdi_dirs' default, as alpsd has it. */
	struct config *defaults = ndirs ? NULL : config_new_defaults();
	if (defaults) {
		dirs = (const char *const *)defaults->cdi_dirs.v;
		ndirs = defaults->cdi_dirs.n;
	}
	struct cdi_registry *reg = cdi_registry_load(dirs, ndirs);
	for (size_t i = 0; i < e->ndevices; i++) {
		const struct edf_string *d = &e->devices[i];
		struct cdi_edits ed = { 0 };
		alps_error *err = NULL;
		if (d->value && d->value[0] != '/' && cdi_resolve(reg, d->value, &ed, &err) < 0)
			warn(warnings, xasprintf("%s:%d:%d: %s: %s; prepare fails unless the node's "
						 "hooks.cdi_dirs hold it", d->loc.file, d->loc.line,
						 d->loc.col, d->loc.key, err->msg));
		alps_error_free(err);
		cdi_edits_clear(&ed);
	}
	cdi_registry_free(reg);
	config_unref(defaults);
}

/* ---- the NCCL plugin's variant and the image ---- */

/* "cuda12" -> "cuda", 12; false when the name is not LETTERS+DIGITS. */
static bool split_variant(const char *v, char *family, size_t fsize, long *major)
{
	size_t n = strspn(v, "abcdefghijklmnopqrstuvwxyz");
	if (n == 0 || n >= fsize || !v[n])
		return false;
	char *end;
	*major = strtol(v + n, &end, 10);
	if (*end || *major < 0)
		return false;
	memcpy(family, v, n);
	family[n] = '\0';
	return true;
}

static const char *env_value(json_t *env, const char *key)
{
	size_t i, klen = strlen(key);
	json_t *s;
	json_array_foreach(env, i, s) {
		const char *kv = json_string_value(s);
		if (kv && strncmp(kv, key, klen) == 0 && kv[klen] == '=')
			return kv + klen + 1;
	}
	return NULL;
}

/* The image's CUDA or ROCm version and where it was read, from its
 * config: the label NVIDIA's CUDA images carry, else the variable they
 * (CUDA_VERSION) and AMD's ROCm images (ROCM_VERSION) set. */
static const char *image_stack(json_t *config, const char *family, const char **from)
{
	json_t *c = json_object_get(config, "config");
	json_t *env = json_object_get(c, "Env");
	const char *v = NULL;
	if (strcmp(family, "cuda") == 0) {
		*from = "label com.nvidia.cuda.version";
		v = json_string_value(json_object_get(json_object_get(c, "Labels"),
						      "com.nvidia.cuda.version"));
		if (!v) {
			*from = "env CUDA_VERSION";
			v = env_value(env, "CUDA_VERSION");
		}
	} else if (strcmp(family, "rocm") == 0) {
		*from = "env ROCM_VERSION";
		v = env_value(env, "ROCM_VERSION");
	}
	return v;
}

void edf_check_nccl_image(const struct edf *e, const char *config_json, json_t *warnings)
{
	const char *variant = edf_annotation_get(e, "com.hooks.aws_ofi_nccl.variant");
	const char *on = edf_annotation_get(e, "com.hooks.aws_ofi_nccl.enabled");
	char family[16];
	long major;
	if (!variant || (on && strcmp(on, "false") == 0) || !config_json ||
	    !split_variant(variant, family, sizeof(family), &major))
		return;
	json_t *config = json_loads(config_json, 0, NULL);
	const char *other = strcmp(family, "cuda") == 0 ? "rocm" : "cuda";
	const char *from = NULL, *ofrom = NULL;
	const char *have = image_stack(config, family, &from);
	const char *ohave = image_stack(config, other, &ofrom);
	if (have && strtol(have, NULL, 10) != major)
		warn(warnings, xasprintf("annotation com.hooks.aws_ofi_nccl.variant = \"%s\": the "
					 "image has %s %s (%s); use the variant of that major "
					 "version", variant, family, have, from));
	else if (!have && ohave)
		warn(warnings, xasprintf("annotation com.hooks.aws_ofi_nccl.variant = \"%s\": the "
					 "image has %s %s (%s), not %s", variant, other, ohave, ofrom,
					 family));
	json_decref(config);
}
