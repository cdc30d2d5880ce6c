/* manifest.c: see manifest.h. */
#include <config.h>

#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>

#include "common/log.h"
#include "manifest.h"

/* ---- media types ---- */

static const struct {
	const char *type;
	enum layer_compression compression;
	bool foreign;
} layer_types[] = {
	{ "application/vnd.oci.image.layer.v1.tar", LAYER_COMPRESSION_NONE, false },
	{ "application/vnd.oci.image.layer.v1.tar+gzip", LAYER_COMPRESSION_GZIP, false },
	{ "application/vnd.oci.image.layer.v1.tar+zstd", LAYER_COMPRESSION_ZSTD, false },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar", LAYER_COMPRESSION_NONE, true },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", LAYER_COMPRESSION_GZIP, true },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", LAYER_COMPRESSION_ZSTD, true },
	{ "application/vnd.docker.image.rootfs.diff.tar", LAYER_COMPRESSION_NONE, false },
	{ "application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_COMPRESSION_GZIP, false },
	{ "application/vnd.docker.image.rootfs.diff.tar.zstd", LAYER_COMPRESSION_ZSTD, false },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar", LAYER_COMPRESSION_NONE, true },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", LAYER_COMPRESSION_GZIP, true },
};

static const struct {
	const char *type;
	enum manifest_kind kind;
} manifest_types[] = {
	{ MT_OCI_INDEX, MANIFEST_OCI_INDEX },
	{ MT_DOCKER_LIST, MANIFEST_DOCKER_LIST },
	{ MT_OCI_MANIFEST, MANIFEST_OCI },
	{ MT_DOCKER_MANIFEST, MANIFEST_DOCKER_V2 },
	{ MT_DOCKER_SCHEMA1, MANIFEST_DOCKER_V1 },
	{ MT_DOCKER_SCHEMA1_SIGNED, MANIFEST_DOCKER_V1 },
};

const char *manifest_accept(void)
{
	return MT_OCI_INDEX ", " MT_DOCKER_LIST ", " MT_OCI_MANIFEST ", " MT_DOCKER_MANIFEST;
}

enum manifest_kind manifest_kind_of(const char *media_type)
{
	if (!media_type)
		return MANIFEST_UNKNOWN;
	/* A Content-Type may carry parameters ("; charset=utf-8"). */
	size_t len = strcspn(media_type, "; \t");
	for (size_t i = 0; i < ARRAY_SIZE(manifest_types); i++)
		if (strlen(manifest_types[i].type) == len &&
		    strncasecmp(manifest_types[i].type, media_type, len) == 0)
			return manifest_types[i].kind;
	return MANIFEST_UNKNOWN;
}

bool manifest_kind_is_index(enum manifest_kind kind)
{
	return kind == MANIFEST_OCI_INDEX || kind == MANIFEST_DOCKER_LIST;
}

/* RFC 6838 restricted-name "/" restricted-name, with "+" suffixes. */
static bool media_type_valid(const char *s)
{
	const char *slash = strchr(s, '/');
	if (!slash || slash == s || slash[1] == '\0' || strchr(slash + 1, '/'))
		return false;
	if (strlen(s) > 255)
		return false;
	for (const char *p = s; *p; p++) {
		bool alnum = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9');
		if (!alnum && *p != '/' && !strchr("!#$&^_.+-", *p))
			return false;
	}
	return true;
}

/* ---- JSON field access with messages that say which field ---- */

static int fail_field(alps_error **err, const char *what, const char *path, const char *why)
{
	return alps_fail(err, ALPS_E_INVALID, "%s: field \"%s\" %s", what, path, why);
}

static json_t *json_load_bounded(const void *buf, size_t len, size_t max, const char *what,
				 alps_error **err)
{
	json_error_t jerr;
	if (len > max) {
		alps_fail(err, ALPS_E_LIMIT, "%s is %zu bytes, more than the limit of %zu",
			  what, len, max);
		return NULL;
	}
	/* Duplicate keys are refused: two parsers reading the same document
	 * differently is how signed content gets swapped. */
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		_cleanup_free_ char *esc = log_escape(jerr.text, 200);
		alps_fail(err, ALPS_E_INVALID, "%s is not valid JSON: line %d column %d: %s",
			  what, jerr.line, jerr.column, esc);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		alps_fail(err, ALPS_E_INVALID, "%s is not a JSON object", what);
		return NULL;
	}
	return root;
}

/* Optional string: *out stays NULL when absent or null. */
static int opt_string(json_t *obj, const char *key, const char *what, const char *path,
		      char **out, alps_error **err)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return fail_field(err, what, path, "is not a string");
	*out = xstrdup(json_string_value(v));
	return 0;
}

static int req_string(json_t *obj, const char *key, const char *what, const char *path,
		      char **out, alps_error **err)
{
	if (opt_string(obj, key, what, path, out, err) < 0)
		return -1;
	if (!*out || !**out) {
		free(*out);
		*out = NULL;
		return fail_field(err, what, path, "is missing");
	}
	return 0;
}

/* Optional array of strings (null is empty), at most max entries. */
static int opt_strings(json_t *obj, const char *key, const char *what, const char *path,
		       size_t max, char ***out, size_t *n, alps_error **err)
{
	json_t *arr = json_object_get(obj, key), *v;
	size_t i;
	*out = NULL;
	*n = 0;
	if (!arr || json_is_null(arr))
		return 0;
	if (!json_is_array(arr))
		return fail_field(err, what, path, "is not an array");
	if (json_array_size(arr) > max)
		return fail_field(err, what, path, "has too many entries");
	char **vec = xcalloc(json_array_size(arr), sizeof(*vec));
	json_array_foreach(arr, i, v) {
		if (!json_is_string(v)) {
			for (size_t j = 0; j < i; j++)
				free(vec[j]);
			free(vec);
			_cleanup_free_ char *p = xasprintf("%s[%zu]", path, i);
			return fail_field(err, what, p, "is not a string");
		}
		vec[i] = xstrdup(json_string_value(v));
	}
	*out = vec;
	*n = json_array_size(arr);
	return 0;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int schema_version_check(json_t *root, const char *what, alps_error **err)
{
	json_t *v = json_object_get(root, "schemaVersion");
	if (!json_is_integer(v))
		return fail_field(err, what, "schemaVersion", "is missing or not an integer");
	if (json_integer_value(v) == 1)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "%s is a Docker schema 1 manifest, "
				 "which alps does not pull: push the image again with a current "
				 "tool (it will be schema 2 or OCI)", what);
	if (json_integer_value(v) != 2)
		return fail_field(err, what, "schemaVersion", "is not 2");
	return 0;
}

/* ---- descriptors ---- */

static int descriptor_urls(json_t *obj, const char *what, const char *path,
			   struct descriptor *d, alps_error **err)
{
	_cleanup_free_ char *p = xasprintf("%s.urls", path);
	if (opt_strings(obj, "urls", what, p, MANIFEST_MAX_URLS, &d->urls, &d->nurls, err) < 0)
		return -1;
	for (size_t i = 0; i < d->nurls; i++)
		if (!str_has_prefix(d->urls[i], "https://") &&
		    !str_has_prefix(d->urls[i], "http://"))
			return fail_field(err, what, p, "has a URL that is not http(s)");
	return 0;
}

static int descriptor_parse(json_t *obj, const char *what, const char *path,
			    struct descriptor *d, alps_error **err)
{
	_cleanup_free_ char *p_mt = xasprintf("%s.mediaType", path);
	_cleanup_free_ char *p_dg = xasprintf("%s.digest", path);
	_cleanup_free_ char *p_sz = xasprintf("%s.size", path);
	memset(d, 0, sizeof(*d));
	if (!json_is_object(obj))
		return fail_field(err, what, path, "is not an object");
	if (req_string(obj, "mediaType", what, p_mt, &d->media_type, err) < 0)
		return -1;
	if (!media_type_valid(d->media_type))
		return fail_field(err, what, p_mt, "is not a media type");
	if (req_string(obj, "digest", what, p_dg, &d->digest, err) < 0)
		return -1;
	_cleanup_free_ char *dwhat = xasprintf("%s: field \"%s\"", what, p_dg);
	if (digest_parse(d->digest, dwhat, NULL, err) < 0)
		return -1;
	json_t *size = json_object_get(obj, "size");
	if (!json_is_integer(size) || json_integer_value(size) < 0)
		return fail_field(err, what, p_sz, "is missing or not a non-negative integer");
	d->size = (uint64_t)json_integer_value(size);
	return descriptor_urls(obj, what, path, d, err);
}

void manifest_descriptor_free(struct descriptor *d)
{
	free(d->media_type);
	free(d->digest);
	strv_free(d->urls, d->nurls);
	memset(d, 0, sizeof(*d));
}

void manifest_descriptor_copy(struct descriptor *dst, const struct descriptor *src)
{
	dst->media_type = xstrdup(src->media_type);
	dst->digest = xstrdup(src->digest);
	dst->size = src->size;
	dst->nurls = src->nurls;
	dst->urls = xcalloc(src->nurls, sizeof(char *));
	for (size_t i = 0; i < src->nurls; i++)
		dst->urls[i] = xstrdup(src->urls[i]);
}

/* ---- detection ---- */

static int kind_supported(enum manifest_kind kind, const char *what, const char *type,
			  alps_error **err)
{
	if (kind == MANIFEST_DOCKER_V1)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "%s is a Docker schema 1 manifest, "
				 "which alps does not pull: push the image again with a current "
				 "tool (it will be schema 2 or OCI)", what);
	if (kind == MANIFEST_UNKNOWN) {
		_cleanup_free_ char *esc = log_escape(type, 120);
		return alps_fail(err, ALPS_E_UNSUPPORTED, "%s has media type \"%s\", which is "
				 "not an image manifest or index", what, esc);
	}
	return 0;
}

/* OCI made mediaType optional at first: tell by the fields present. */
static enum manifest_kind kind_from_shape(json_t *root)
{
	json_t *sv = json_object_get(root, "schemaVersion");
	if (json_is_integer(sv) && json_integer_value(sv) == 1)
		return MANIFEST_DOCKER_V1;
	if (json_is_array(json_object_get(root, "manifests")))
		return MANIFEST_OCI_INDEX;
	if (json_is_object(json_object_get(root, "config")))
		return MANIFEST_OCI;
	return MANIFEST_UNKNOWN;
}

int manifest_detect(const void *buf, size_t len, const char *content_type,
		    enum manifest_kind *kind, alps_error **err)
{
	json_t *root = json_load_bounded(buf, len, MANIFEST_MAX_SIZE, "manifest", err);
	if (!root)
		return -1;
	json_t *mt = json_object_get(root, "mediaType");
	const char *type = json_is_string(mt) ? json_string_value(mt) : NULL;
	enum manifest_kind k;
	if (type)
		k = manifest_kind_of(type);
	else if (manifest_kind_of(content_type) != MANIFEST_UNKNOWN)
		k = manifest_kind_of(content_type);
	else
		k = kind_from_shape(root);
	if (k != MANIFEST_DOCKER_V1 && kind_from_shape(root) == MANIFEST_DOCKER_V1)
		k = MANIFEST_DOCKER_V1;
	int rc = kind_supported(k, "manifest", type ? type : content_type ? content_type : "",
				err);
	json_decref(root);
	*kind = k;
	return rc;
}

/* The mediaType field, when present, must agree with what we parse. */
static int media_type_agrees(json_t *root, const char *what, bool want_index,
			     enum manifest_kind *kind, alps_error **err)
{
	json_t *mt = json_object_get(root, "mediaType");
	if (mt && !json_is_string(mt))
		return fail_field(err, what, "mediaType", "is not a string");
	const char *type = mt ? json_string_value(mt) : NULL;
	enum manifest_kind k = type ? manifest_kind_of(type)
				    : want_index ? MANIFEST_OCI_INDEX : MANIFEST_OCI;
	if (kind_supported(k, what, type, err) < 0)
		return -1;
	if (manifest_kind_is_index(k) != want_index)
		return fail_field(err, what, "mediaType",
				  want_index ? "is not an index type" : "is not a manifest type");
	*kind = k;
	return 0;
}

/* ---- index ---- */

static int platform_from_json(json_t *obj, const char *what, const char *path,
			      struct platform *p, alps_error **err)
{
	if (!obj || json_is_null(obj))
		return 0;
	if (!json_is_object(obj))
		return fail_field(err, what, path, "is not an object");
	_cleanup_free_ char *p_os = xasprintf("%s.os", path);
	_cleanup_free_ char *p_arch = xasprintf("%s.architecture", path);
	_cleanup_free_ char *p_var = xasprintf("%s.variant", path);
	_cleanup_free_ char *os = NULL, *arch = NULL, *variant = NULL;
	if (req_string(obj, "os", what, p_os, &os, err) < 0 ||
	    req_string(obj, "architecture", what, p_arch, &arch, err) < 0 ||
	    opt_string(obj, "variant", what, p_var, &variant, err) < 0)
		return -1;
	_cleanup_free_ char *s = variant && *variant ? xasprintf("%s/%s/%s", os, arch, variant)
						     : xasprintf("%s/%s", os, arch);
	return manifest_platform_parse(s, p, err);
}

static int index_entry_parse(json_t *obj, size_t i, struct index_entry *e, alps_error **err)
{
	_cleanup_free_ char *path = xasprintf("manifests[%zu]", i);
	_cleanup_free_ char *ppath = xasprintf("manifests[%zu].platform", i);
	if (descriptor_parse(obj, "image index", path, &e->desc, err) < 0)
		return -1;
	return platform_from_json(json_object_get(obj, "platform"), "image index", ppath,
				  &e->platform, err);
}

int manifest_index_parse(const void *buf, size_t len, struct manifest_index *out,
			 alps_error **err)
{
	memset(out, 0, sizeof(*out));
	json_t *root = json_load_bounded(buf, len, MANIFEST_MAX_SIZE, "image index", err);
	if (!root)
		return -1;
	json_t *arr = json_object_get(root, "manifests"), *v;
	size_t i;
	int rc = -1;
	if (schema_version_check(root, "image index", err) < 0 ||
	    media_type_agrees(root, "image index", true, &out->kind, err) < 0)
		goto out;
	if (!json_is_array(arr)) {
		fail_field(err, "image index", "manifests", "is missing or not an array");
		goto out;
	}
	if (json_array_size(arr) > MANIFEST_MAX_INDEX_ENTRIES) {
		alps_fail(err, ALPS_E_LIMIT, "image index has more than %d entries",
			  MANIFEST_MAX_INDEX_ENTRIES);
		goto out;
	}
	out->entries = xcalloc(json_array_size(arr), sizeof(*out->entries));
	json_array_foreach(arr, i, v) {
		out->nentries = i + 1;
		if (index_entry_parse(v, i, &out->entries[i], err) < 0)
			goto out;
	}
	rc = 0;
out:
	json_decref(root);
	if (rc < 0)
		manifest_index_free(out);
	return rc;
}

void manifest_index_free(struct manifest_index *idx)
{
	for (size_t i = 0; i < idx->nentries; i++) {
		manifest_descriptor_free(&idx->entries[i].desc);
		manifest_platform_free(&idx->entries[i].platform);
	}
	free(idx->entries);
	memset(idx, 0, sizeof(*idx));
}

/* ---- manifest ---- */

static int config_type_check(const struct descriptor *d, alps_error **err)
{
	if (strcmp(d->media_type, MT_OCI_CONFIG) == 0 || strcmp(d->media_type, MT_DOCKER_CONFIG) == 0)
		return 0;
	_cleanup_free_ char *esc = log_escape(d->media_type, 120);
	return alps_fail(err, ALPS_E_UNSUPPORTED, "manifest: config media type \"%s\" is not "
			 "a container image config (is this an artifact?)", esc);
}

static int layer_type(struct layer *l, size_t i, alps_error **err)
{
	for (size_t t = 0; t < ARRAY_SIZE(layer_types); t++) {
		if (strcmp(layer_types[t].type, l->desc.media_type) == 0) {
			l->compression = layer_types[t].compression;
			l->foreign = layer_types[t].foreign;
			return 0;
		}
	}
	_cleanup_free_ char *esc = log_escape(l->desc.media_type, 120);
	return alps_fail(err, ALPS_E_UNSUPPORTED, "manifest: layers[%zu] has media type \"%s\", "
			 "which alps cannot unpack (tar, tar+gzip and tar+zstd are supported)",
			 i, esc);
}

static int layers_parse(json_t *arr, struct manifest *m, alps_error **err)
{
	json_t *v;
	size_t i;
	if (!json_is_array(arr))
		return fail_field(err, "manifest", "layers", "is missing or not an array");
	if (json_array_size(arr) > MANIFEST_MAX_LAYERS)
		return alps_fail(err, ALPS_E_LIMIT, "manifest has %zu layers, more than the "
				 "limit of %d", json_array_size(arr), MANIFEST_MAX_LAYERS);
	m->layers = xcalloc(json_array_size(arr), sizeof(*m->layers));
	json_array_foreach(arr, i, v) {
		_cleanup_free_ char *path = xasprintf("layers[%zu]", i);
		m->nlayers = i + 1;
		if (descriptor_parse(v, "manifest", path, &m->layers[i].desc, err) < 0 ||
		    layer_type(&m->layers[i], i, err) < 0)
			return -1;
	}
	return 0;
}

int manifest_parse(const void *buf, size_t len, struct manifest *out, alps_error **err)
{
	memset(out, 0, sizeof(*out));
	json_t *root = json_load_bounded(buf, len, MANIFEST_MAX_SIZE, "manifest", err);
	if (!root)
		return -1;
	int rc = -1;
	if (schema_version_check(root, "manifest", err) < 0 ||
	    media_type_agrees(root, "manifest", false, &out->kind, err) < 0 ||
	    descriptor_parse(json_object_get(root, "config"), "manifest", "config",
			     &out->config, err) < 0 ||
	    config_type_check(&out->config, err) < 0 ||
	    layers_parse(json_object_get(root, "layers"), out, err) < 0)
		goto out;
	if (out->config.size > MANIFEST_CONFIG_MAX_SIZE) {
		alps_fail(err, ALPS_E_LIMIT, "manifest: the image config is %" PRIu64 " bytes, "
			  "more than the limit of %u", out->config.size, MANIFEST_CONFIG_MAX_SIZE);
		goto out;
	}
	rc = 0;
out:
	json_decref(root);
	if (rc < 0)
		manifest_free(out);
	return rc;
}

void manifest_free(struct manifest *m)
{
	manifest_descriptor_free(&m->config);
	for (size_t i = 0; i < m->nlayers; i++)
		manifest_descriptor_free(&m->layers[i].desc);
	free(m->layers);
	memset(m, 0, sizeof(*m));
}

/* ---- image config ---- */

static int labels_parse(json_t *obj, struct image_config *c, alps_error **err)
{
	const char *key;
	json_t *v;
	if (!obj || json_is_null(obj))
		return 0;
	if (!json_is_object(obj))
		return fail_field(err, "image config", "config.Labels", "is not an object");
	c->labels = xcalloc(json_object_size(obj), sizeof(*c->labels));
	json_object_foreach(obj, key, v) {
		if (!json_is_string(v)) {
			_cleanup_free_ char *esc = log_escape(key, 80);
			_cleanup_free_ char *p = xasprintf("config.Labels.%s", esc);
			return fail_field(err, "image config", p, "is not a string");
		}
		c->labels[c->nlabels].key = xstrdup(key);
		c->labels[c->nlabels].value = xstrdup(json_string_value(v));
		c->nlabels++;
	}
	return 0;
}

static int exec_config_parse(json_t *obj, struct image_config *c, alps_error **err)
{
	const char *w = "image config";
	if (!obj || json_is_null(obj))
		return 0;
	if (!json_is_object(obj))
		return fail_field(err, w, "config", "is not an object");
	if (opt_strings(obj, "Env", w, "config.Env", 65536, &c->env, &c->nenv, err) < 0 ||
	    opt_strings(obj, "Entrypoint", w, "config.Entrypoint", 65536, &c->entrypoint,
			&c->nentrypoint, err) < 0 ||
	    opt_strings(obj, "Cmd", w, "config.Cmd", 65536, &c->cmd, &c->ncmd, err) < 0 ||
	    opt_string(obj, "WorkingDir", w, "config.WorkingDir", &c->working_dir, err) < 0 ||
	    opt_string(obj, "User", w, "config.User", &c->user, err) < 0 ||
	    labels_parse(json_object_get(obj, "Labels"), c, err) < 0)
		return -1;
	for (size_t i = 0; i < c->nenv; i++) {
		if (!strchr(c->env[i], '=') || c->env[i][0] == '=') {
			_cleanup_free_ char *p = xasprintf("config.Env[%zu]", i);
			return fail_field(err, w, p, "is not NAME=VALUE");
		}
	}
	return 0;
}

static int rootfs_parse(json_t *obj, struct image_config *c, alps_error **err)
{
	const char *w = "image config";
	_cleanup_free_ char *type = NULL;
	if (!json_is_object(obj))
		return fail_field(err, w, "rootfs", "is missing or not an object");
	if (req_string(obj, "type", w, "rootfs.type", &type, err) < 0)
		return -1;
	if (strcmp(type, "layers") != 0)
		return fail_field(err, w, "rootfs.type", "is not \"layers\"");
	if (opt_strings(obj, "diff_ids", w, "rootfs.diff_ids", MANIFEST_MAX_LAYERS,
			&c->diff_ids, &c->ndiff_ids, err) < 0)
		return -1;
	for (size_t i = 0; i < c->ndiff_ids; i++) {
		_cleanup_free_ char *p = xasprintf("%s: field \"rootfs.diff_ids[%zu]\"", w, i);
		if (digest_parse(c->diff_ids[i], p, NULL, err) < 0)
			return -1;
	}
	return 0;
}

int manifest_config_parse(const void *buf, size_t len, struct image_config *out,
			  alps_error **err)
{
	const char *w = "image config";
	memset(out, 0, sizeof(*out));
	json_t *root = json_load_bounded(buf, len, MANIFEST_CONFIG_MAX_SIZE, w, err);
	if (!root)
		return -1;
	int rc = -1;
	if (req_string(root, "os", w, "os", &out->os, err) < 0 ||
	    req_string(root, "architecture", w, "architecture", &out->architecture, err) < 0 ||
	    opt_string(root, "variant", w, "variant", &out->variant, err) < 0 ||
	    opt_string(root, "created", w, "created", &out->created, err) < 0 ||
	    exec_config_parse(json_object_get(root, "config"), out, err) < 0 ||
	    rootfs_parse(json_object_get(root, "rootfs"), out, err) < 0)
		goto out;
	rc = 0;
out:
	json_decref(root);
	if (rc < 0)
		manifest_config_free(out);
	return rc;
}

int manifest_check_config(const struct manifest *m, const struct image_config *c,
			  alps_error **err)
{
	if (m->nlayers != c->ndiff_ids)
		return alps_fail(err, ALPS_E_INVALID, "the manifest has %zu layers but the image "
				 "config lists %zu diff_ids", m->nlayers, c->ndiff_ids);
	return 0;
}

const char *manifest_config_label(const struct image_config *c, const char *key)
{
	for (size_t i = 0; i < c->nlabels; i++)
		if (strcmp(c->labels[i].key, key) == 0)
			return c->labels[i].value;
	return NULL;
}

void manifest_config_free(struct image_config *c)
{
	free(c->os);
	free(c->architecture);
	free(c->variant);
	free(c->created);
	strv_free(c->env, c->nenv);
	strv_free(c->entrypoint, c->nentrypoint);
	strv_free(c->cmd, c->ncmd);
	free(c->working_dir);
	free(c->user);
	for (size_t i = 0; i < c->nlabels; i++) {
		free(c->labels[i].key);
		free(c->labels[i].value);
	}
	free(c->labels);
	strv_free(c->diff_ids, c->ndiff_ids);
	memset(c, 0, sizeof(*c));
}

/* ---- platforms ---- */

/* Architecture spellings to GOARCH names, with the variant they imply. */
static const struct {
	const char *name, *arch, *variant;
} arch_aliases[] = {
	{ "x86_64", "amd64", NULL },
	{ "x86-64", "amd64", NULL },
	{ "amd64", "amd64", NULL },
	{ "aarch64", "arm64", "v8" },
	{ "arm64", "arm64", "v8" },
	{ "armhf", "arm", "v7" },
	{ "armel", "arm", "v6" },
	{ "armv7l", "arm", "v7" },
	{ "armv7", "arm", "v7" },
	{ "armv6l", "arm", "v6" },
	{ "armv6", "arm", "v6" },
	{ "armv5tel", "arm", "v5" },
	{ "arm", "arm", "v7" },
	{ "i386", "386", NULL },
	{ "i486", "386", NULL },
	{ "i586", "386", NULL },
	{ "i686", "386", NULL },
	{ "x86", "386", NULL },
	{ "386", "386", NULL },
};

static char *lowercase(const char *s, size_t len)
{
	char *out = xstrndup(s, len);
	for (char *p = out; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	return out;
}

/* "8" is "v8", as containerd writes it. */
static char *variant_normalize(const char *v)
{
	if (v[0] >= '0' && v[0] <= '9')
		return xasprintf("v%s", v);
	return xstrdup(v);
}

static void arch_normalize(struct platform *p, const char *variant)
{
	for (size_t i = 0; i < ARRAY_SIZE(arch_aliases); i++) {
		if (strcmp(p->architecture, arch_aliases[i].name) != 0)
			continue;
		free(p->architecture);
		p->architecture = xstrdup(arch_aliases[i].arch);
		if (!variant && arch_aliases[i].variant)
			p->variant = xstrdup(arch_aliases[i].variant);
		break;
	}
	if (variant)
		p->variant = variant_normalize(variant);
}

static bool platform_word_valid(const char *s)
{
	if (!*s || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || strchr("._-", *s)))
			return false;
	return true;
}

int manifest_platform_parse(const char *s, struct platform *out, alps_error **err)
{
	memset(out, 0, sizeof(*out));
	const char *a = strchr(s, '/');
	const char *v = a ? strchr(a + 1, '/') : NULL;
	_cleanup_free_ char *lower = lowercase(s, strlen(s));
	if (!a || (v && strchr(v + 1, '/')))
		goto bad;
	out->os = xstrndup(lower, (size_t)(a - s));
	out->architecture = xstrndup(lower + (a - s) + 1, v ? (size_t)(v - a - 1) : strlen(a + 1));
	if (!platform_word_valid(out->os) || !platform_word_valid(out->architecture) ||
	    (v && !platform_word_valid(lower + (v - s) + 1)))
		goto bad;
	arch_normalize(out, v ? lower + (v - s) + 1 : NULL);
	return 0;
bad:
	manifest_platform_free(out);
	_cleanup_free_ char *esc = log_escape(s, 80);
	return alps_fail(err, ALPS_E_INVALID, "platform \"%s\" is not os/arch[/variant]", esc);
}

int manifest_platform_host(struct platform *out, alps_error **err)
{
	struct utsname u;
	if (uname(&u) < 0)
		return alps_fail_errno(err, "uname");
	_cleanup_free_ char *s = xasprintf("linux/%s", u.machine);
	return manifest_platform_parse(s, out, err);
}

char *manifest_platform_format(const struct platform *p)
{
	if (!p->os)
		return xstrdup("(no platform)");
	if (p->variant)
		return xasprintf("%s/%s/%s", p->os, p->architecture, p->variant);
	return xasprintf("%s/%s", p->os, p->architecture);
}

void manifest_platform_copy(struct platform *dst, const struct platform *src)
{
	dst->os = src->os ? xstrdup(src->os) : NULL;
	dst->architecture = src->architecture ? xstrdup(src->architecture) : NULL;
	dst->variant = src->variant ? xstrdup(src->variant) : NULL;
}

void manifest_platform_free(struct platform *p)
{
	free(p->os);
	free(p->architecture);
	free(p->variant);
	memset(p, 0, sizeof(*p));
}

static bool str_eq_null(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool entry_is_image(const struct index_entry *e)
{
	enum manifest_kind k = manifest_kind_of(e->desc.media_type);
	return k == MANIFEST_OCI || k == MANIFEST_DOCKER_V2;
}

static const struct index_entry *find_exact(const struct manifest_index *idx,
					    const char *os, const char *arch, const char *variant)
{
	for (size_t i = 0; i < idx->nentries; i++) {
		const struct index_entry *e = &idx->entries[i];
		if (entry_is_image(e) && e->platform.os && strcmp(e->platform.os, os) == 0 &&
		    strcmp(e->platform.architecture, arch) == 0 &&
		    str_eq_null(e->platform.variant, variant))
			return e;
	}
	return NULL;
}

/* The only image entry of an index that gives no platforms at all. */
static const struct index_entry *sole_unlabelled(const struct manifest_index *idx)
{
	const struct index_entry *found = NULL;
	for (size_t i = 0; i < idx->nentries; i++) {
		if (!entry_is_image(&idx->entries[i]))
			continue;
		if (found || idx->entries[i].platform.os)
			return NULL;
		found = &idx->entries[i];
	}
	return found;
}

static int fail_no_platform(const struct manifest_index *idx, const struct platform *want,
			    alps_error **err)
{
	_cleanup_free_ char *w = manifest_platform_format(want);
	char list[512] = "";
	size_t used = 0;
	for (size_t i = 0; i < idx->nentries && used < sizeof(list) - 1; i++) {
		if (!entry_is_image(&idx->entries[i]) || !idx->entries[i].platform.os)
			continue;
		_cleanup_free_ char *p = manifest_platform_format(&idx->entries[i].platform);
		int n = snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", p);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	return alps_fail(err, ALPS_E_NOT_FOUND, "the image index has no image for %s "
			 "(it has: %s)", w, used ? list : "none");
}

const struct index_entry *manifest_index_select(const struct manifest_index *idx,
						const struct platform *want, alps_error **err)
{
	const struct index_entry *e = find_exact(idx, want->os, want->architecture, want->variant);
	if (e)
		return e;
	/* A v7 machine runs v6 and v5 code; nothing runs a newer variant. */
	if (strcmp(want->architecture, "arm") == 0 && want->variant &&
	    want->variant[0] == 'v') {
		int newest = atoi(want->variant + 1);
		for (int v = (newest > 9 ? 9 : newest) - 1; v >= 5 && !e; v--) {
			char variant[16];
			snprintf(variant, sizeof(variant), "v%d", v);
			e = find_exact(idx, want->os, want->architecture, variant);
		}
	}
	if (!e)
		e = sole_unlabelled(idx);
	if (!e)
		fail_no_platform(idx, want, err);
	return e;
}

/* ---- digests ---- */

struct digester {
	EVP_MD_CTX *ctx;
	enum digest_algo algo;
};

struct digester *digester_new(enum digest_algo algo)
{
	struct digester *d = xzalloc(sizeof(*d));
	d->algo = algo;
	d->ctx = EVP_MD_CTX_new();
	const EVP_MD *md = algo == DIGEST_SHA512 ? EVP_sha512() : EVP_sha256();
	/* Failures here are allocation failures inside OpenSSL: treat them as
	 * xmalloc does. */
	if (!d->ctx || EVP_DigestInit_ex(d->ctx, md, NULL) != 1)
		abort();
	return d;
}

void digester_update(struct digester *d, const void *buf, size_t len)
{
	if (len && EVP_DigestUpdate(d->ctx, buf, len) != 1)
		abort();
}

void digester_final(struct digester *d, char out[DIGEST_STRLEN_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_DigestFinal_ex(d->ctx, md, &mdlen) != 1)
		abort();
	size_t o = (size_t)snprintf(out, DIGEST_STRLEN_MAX, "%s:", digest_algo_name(d->algo));
	for (unsigned int i = 0; i < mdlen && o + 2 < DIGEST_STRLEN_MAX; i++, o += 2)
		snprintf(out + o, 3, "%02x", md[i]);
}

void digester_free(struct digester *d)
{
	if (!d)
		return;
	EVP_MD_CTX_free(d->ctx);
	free(d);
}

int digest_verify(const char *what, const char *expected, const void *buf, size_t len,
		  char actual[DIGEST_STRLEN_MAX], alps_error **err)
{
	enum digest_algo algo;
	char got[DIGEST_STRLEN_MAX];
	if (digest_parse(expected, what, &algo, err) < 0)
		return -1;
	struct digester *d = digester_new(algo);
	digester_update(d, buf, len);
	digester_final(d, got);
	digester_free(d);
	if (actual)
		memcpy(actual, got, sizeof(got));
	if (strcmp(got, expected) != 0)
		return alps_fail(err, ALPS_E_INTEGRITY, "%s %s does not match its digest: got %s",
				 what, expected, got);
	return 0;
}

void digest_sha256(const void *buf, size_t len, char out[DIGEST_STRLEN_MAX])
{
	struct digester *d = digester_new(DIGEST_SHA256);
	digester_update(d, buf, len);
	digester_final(d, out);
	digester_free(d);
}
