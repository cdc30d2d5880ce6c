/* import_archive.c: a docker save archive or an OCI image layout (as a tar)
 * into the store.
 *
 * The archive is read twice with libarchive, through pread() on the fd (a
 * regular file: the client's, or the spooled stream of a directory).  The
 * first pass indexes the entries: names normalised and checked (no
 * absolute names, no '..'), one entry per name, small regular files kept
 * in memory (manifests, configs, small layers).  The image is then worked
 * out from the JSON; blobs must be regular entries of the archive (a
 * symbolic or hard link is refused: it could name anything).  A second
 * pass streams the layers not in memory into the converter, in archive
 * order, each checked against its digest and diff_id. */
#include <config.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/image/import_int.h"
#include "daemon/image/manifest.h"
#include "daemon/image/pull.h"

#define READ_BLOCK (1u << 20)
#define CACHE_ENTRY_MAX (4u << 20)
#define CACHE_TOTAL_MAX (64u << 20)
#define ENTRIES_MAX 100000
#define MAGIC_LEN 4

enum kind { K_FILE, K_SYMLINK, K_HARDLINK, K_OTHER };

struct aentry {
	char *name;             /* owned, normalised */
	enum kind kind;
	uint64_t size;
	uint8_t *data;          /* owned: the content, when small enough */
	uint8_t magic[MAGIC_LEN];       /* the first bytes of a regular file */
};

/* A reader of im->fd from offset 0 with pread (the fd's offset is shared
 * with the client's copy). */
struct areader {
	int fd;
	uint64_t off;
	uint8_t *buf;           /* owned */
};

struct arc {
	struct imp *im;
	struct aentry *v;       /* owned */
	size_t n;
	uint64_t cached;
	/* The image, worked out from the JSON. */
	size_t nlayers;
	struct aentry **lent;   /* owned array: each layer's entry */
	char **want_digest;     /* owned: NULL when the archive does not say */
	char **want_diff;       /* owned: the config's diff_ids */
	char **media;           /* owned */
	enum layer_compression *comp;   /* owned */
};

static la_ssize_t ar_read(struct archive *a, void *arg, const void **out)
{
	struct areader *r = arg;
	ssize_t n;
	alps_error *e = NULL;
	if (imp_stopping(&e)) {
		alps_error_free(e);
		archive_set_error(a, ECANCELED, "alpsd is stopping");
		return -1;
	}
	do
		n = pread(r->fd, r->buf, READ_BLOCK, (off_t)r->off);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		archive_set_error(a, errno, "read failed");
		return -1;
	}
	r->off += (uint64_t)n;
	*out = r->buf;
	return n;
}

static struct archive *ar_open(struct areader *r, int fd, alps_error **err)
{
	struct archive *a = archive_read_new();
	r->fd = fd;
	r->off = 0;
	r->buf = xmalloc(READ_BLOCK);
	archive_read_support_format_tar(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	if (archive_read_open(a, r, NULL, ar_read, NULL) != ARCHIVE_OK) {
		alps_fail(err, ALPS_E_INVALID, "not a tar archive: %s", archive_error_string(a));
		archive_read_free(a);
		free(r->buf);
		return NULL;
	}
	return a;
}

static void ar_close(struct archive *a, struct areader *r)
{
	archive_read_free(a);
	free(r->buf);
}

/* ---- pass 1: the index ---- */

/* The entry's name without "./" prefixes; NULL if absolute or with a ".."
 * component. */
static const char *normalise(const char *raw)
{
	const char *p = raw;
	while (p[0] == '.' && p[1] == '/')
		p += 2;
	if (strcmp(p, ".") == 0)
		return "";
	if (*p == '/')
		return NULL;
	for (const char *c = p; c; c = strchr(c, '/')) {
		if (*c == '/')
			c++;
		if (c[0] == '.' && c[1] == '.' && (c[2] == '/' || c[2] == '\0'))
			return NULL;
	}
	return p;
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct aentry *)a)->name, ((const struct aentry *)b)->name);
}

/* After the first pass (the index sorted by name). */
static struct aentry *find(struct arc *x, const char *name)
{
	struct aentry key = { .name = (char *)name };
	return x->n ? bsearch(&key, x->v, x->n, sizeof(*x->v), entry_cmp) : NULL;
}

/* Sort the index; two entries of one name are refused (which one would a
 * reader take?). */
static int index_sort(struct arc *x, alps_error **err)
{
	if (x->n)
		qsort(x->v, x->n, sizeof(*x->v), entry_cmp);
	for (size_t i = 1; i < x->n; i++)
		if (strcmp(x->v[i - 1].name, x->v[i].name) == 0) {
			_cleanup_free_ char *esc = log_escape(x->v[i].name, 300);
			return alps_fail(err, ALPS_E_INVALID, "archive entry '%s' appears twice", esc);
		}
	return 0;
}

static int read_all(struct archive *a, uint8_t *buf, uint64_t size, alps_error **err)
{
	uint64_t got = 0;
	while (got < size) {
		la_ssize_t n = archive_read_data(a, buf + got, (size_t)(size - got));
		if (n <= 0)
			return alps_fail(err, ALPS_E_INVALID, "the archive is truncated or damaged%s%s",
					 n < 0 ? ": " : "", n < 0 ? archive_error_string(a) : "");
		got += (uint64_t)n;
	}
	return 0;
}

static int keep_data(struct arc *x, struct archive *a, struct aentry *e, alps_error **err)
{
	if (e->size <= CACHE_ENTRY_MAX && x->cached + e->size <= CACHE_TOTAL_MAX) {
		e->data = xmalloc(e->size ? e->size : 1);
		x->cached += e->size;
		if (read_all(a, e->data, e->size, err) < 0)
			return -1;
		memcpy(e->magic, e->data, e->size < MAGIC_LEN ? e->size : MAGIC_LEN);
		return 0;
	}
	return read_all(a, e->magic, MAGIC_LEN, err);
}

static enum kind kind_of(struct archive_entry *ae)
{
	if (archive_entry_hardlink(ae))
		return K_HARDLINK;
	switch (archive_entry_filetype(ae)) {
	case AE_IFREG:
		return K_FILE;
	case AE_IFLNK:
		return K_SYMLINK;
	default:
		return K_OTHER;
	}
}

static int index_entry(struct arc *x, struct archive *a, struct archive_entry *ae,
		       alps_error **err)
{
	const char *raw = archive_entry_pathname(ae);
	const char *name = raw ? normalise(raw) : NULL;
	if (!name) {
		_cleanup_free_ char *esc = log_escape(raw ? raw : "", 300);
		return alps_fail(err, ALPS_E_INVALID, "archive entry '%s': an absolute name or "
				 "a '..' component: refused", esc);
	}
	if (!*name || (archive_entry_filetype(ae) == AE_IFDIR && !archive_entry_hardlink(ae)))
		return 0;
	if (x->n >= ENTRIES_MAX)
		return alps_fail(err, ALPS_E_LIMIT, "the archive has over %d entries", ENTRIES_MAX);
	x->v = xreallocarray(x->v, x->n + 1, sizeof(*x->v));
	struct aentry *e = &x->v[x->n++];
	*e = (struct aentry){ .name = xstrdup(name), .kind = kind_of(ae) };
	if (e->kind != K_FILE)
		return 0;
	e->size = archive_entry_size(ae) > 0 ? (uint64_t)archive_entry_size(ae) : 0;
	return keep_data(x, a, e, err);
}

static int build_index(struct arc *x, alps_error **err)
{
	struct areader r;
	struct archive *a = ar_open(&r, x->im->fd, err);
	if (!a)
		return -1;
	struct archive_entry *ae;
	int rc, res = 0;
	while (res == 0 && (rc = archive_read_next_header(a, &ae)) != ARCHIVE_EOF) {
		if (rc < ARCHIVE_WARN)
			res = alps_fail(err, ALPS_E_INVALID, "the archive is truncated or damaged: %s",
					archive_error_string(a));
		else
			res = index_entry(x, a, ae, err);
	}
	ar_close(a, &r);
	return res < 0 ? -1 : index_sort(x, err);
}

/* ---- blobs and JSON ---- */

/* The entry name of a blob, which must be a regular file. */
static struct aentry *blob_entry(struct arc *x, const char *name, alps_error **err)
{
	struct aentry *e = find(x, name);
	_cleanup_free_ char *esc = log_escape(name, 300);
	if (!e)
		alps_fail(err, ALPS_E_INVALID, "the archive has no %s", esc);
	else if (e->kind != K_FILE)
		alps_fail(err, ALPS_E_INVALID, "%s is %s in the archive, not a file: refused", esc,
			  e->kind == K_SYMLINK ? "a symbolic link" : e->kind == K_HARDLINK
			  ? "a hard link" : "a special file");
	return e && e->kind == K_FILE ? e : NULL;
}

/* The content of a small file of the archive (JSON), checked against
 * digest if not NULL, NUL-terminated. */
static int small_file(struct arc *x, const char *name, const char *digest, char **out,
		      size_t *len, alps_error **err)
{
	struct aentry *e = blob_entry(x, name, err);
	if (!e)
		return -1;
	_cleanup_free_ char *esc = log_escape(name, 300);
	if (!e->data)
		return alps_fail(err, ALPS_E_LIMIT, "%s is too big (%llu bytes)", esc,
				 (unsigned long long)e->size);
	if (memchr(e->data, '\0', e->size))
		return alps_fail(err, ALPS_E_INVALID, "%s is not JSON (a NUL byte)", esc);
	char got[DIGEST_STRLEN_MAX];
	if (digest && digest_verify(esc, digest, e->data, e->size, got, err) < 0)
		return -1;
	*out = xstrndup((const char *)e->data, e->size);
	*len = e->size;
	return 0;
}

static char *blob_name(const char *digest)
{
	const char *colon = strchr(digest, ':');
	return xasprintf("blobs/%.*s/%s", (int)(colon - digest), digest, colon + 1);
}

static void arc_alloc_layers(struct arc *x, size_t n)
{
	x->nlayers = n;
	x->lent = xcalloc(n ? n : 1, sizeof(*x->lent));
	x->want_digest = xcalloc(n ? n : 1, sizeof(char *));
	x->want_diff = xcalloc(n ? n : 1, sizeof(char *));
	x->media = xcalloc(n ? n : 1, sizeof(char *));
	x->comp = xcalloc(n ? n : 1, sizeof(*x->comp));
}

static void arc_clear(struct arc *x)
{
	for (size_t i = 0; i < x->n; i++) {
		free(x->v[i].name);
		free(x->v[i].data);
	}
	free(x->v);
	for (size_t i = 0; i < x->nlayers; i++) {
		free(x->want_digest[i]);
		free(x->want_diff[i]);
		free(x->media[i]);
	}
	free(x->lent);
	free(x->want_digest);
	free(x->want_diff);
	free(x->media);
	free(x->comp);
}

/* ---- the image config, shared by both kinds ---- */

static int take_config(struct arc *x, const char *name, const char *digest, size_t nlayers,
		       alps_error **err)
{
	struct imp *im = x->im;
	struct image_config cfg = { 0 };
	size_t len;
	if (small_file(x, name, digest, &im->config_json, &len, err) < 0)
		return -1;
	if (manifest_config_parse(im->config_json, len, &cfg, err) < 0) {
		_cleanup_free_ char *esc = log_escape(name, 300);
		return alps_error_prefix(err, "the image config %s", esc);
	}
	int r = 0;
	if (cfg.ndiff_ids != nlayers)
		r = alps_fail(err, ALPS_E_INVALID, "the image config lists %zu diff_ids for %zu "
			      "layers", cfg.ndiff_ids, nlayers);
	for (size_t i = 0; r == 0 && i < nlayers; i++)
		x->want_diff[i] = xstrdup(cfg.diff_ids[i]);
	struct platform p = { cfg.os, cfg.architecture, cfg.variant };
	if (r == 0)
		im->platform = manifest_platform_format(&p);
	manifest_config_free(&cfg);
	return r;
}

/* ---- OCI layout ---- */

/* The annotation key of the index entry for digest, or NULL. */
static char *index_annotation(const char *index_json, const char *digest, const char *key)
{
	json_t *j = json_loads(index_json, 0, NULL), *m, *e;
	size_t i;
	char *out = NULL;
	json_array_foreach(json_object_get(j, "manifests"), i, e) {
		const char *d = json_string_value(json_object_get(e, "digest"));
		m = json_object_get(json_object_get(e, "annotations"), key);
		if (!out && d && strcmp(d, digest) == 0 && json_string_value(m))
			out = xstrdup(json_string_value(m));
	}
	json_decref(j);
	return out;
}

/* The manifest the index (or an index it names) gives for this node. */
static int pick_manifest(struct arc *x, const char *index_json, size_t len, char **digest,
			 alps_error **err)
{
	struct manifest_index idx = { 0 };
	struct platform host = { 0 };
	int r = manifest_index_parse(index_json, len, &idx, err);
	if (r == 0 && idx.nentries == 1) {
		*digest = xstrdup(idx.entries[0].desc.digest);
	} else if (r == 0) {
		r = manifest_platform_host(&host, err);
		const struct index_entry *e = r == 0 ? manifest_index_select(&idx, &host, err) : NULL;
		r = e ? 0 : -1;
		if (e)
			*digest = xstrdup(e->desc.digest);
	}
	manifest_platform_free(&host);
	manifest_index_free(&idx);
	(void)x;
	return r;
}

static int oci_layers(struct arc *x, const struct manifest *m, alps_error **err)
{
	arc_alloc_layers(x, m->nlayers);
	for (size_t i = 0; i < m->nlayers; i++) {
		const struct layer *l = &m->layers[i];
		_cleanup_free_ char *name = blob_name(l->desc.digest);
		if (!(x->lent[i] = blob_entry(x, name, err)))
			return alps_error_prefix(err, "layer %s", l->desc.digest);
		if (x->lent[i]->size != l->desc.size)
			return alps_fail(err, ALPS_E_INTEGRITY, "layer %s: %llu bytes in the "
					 "archive, %llu in its manifest", l->desc.digest,
					 (unsigned long long)x->lent[i]->size,
					 (unsigned long long)l->desc.size);
		x->want_digest[i] = xstrdup(l->desc.digest);
		x->media[i] = xstrdup(l->desc.media_type);
		x->comp[i] = l->compression;
	}
	return 0;
}

static int oci_manifest(struct arc *x, const char *digest, alps_error **err)
{
	struct imp *im = x->im;
	struct manifest m = { 0 };
	_cleanup_free_ char *name = blob_name(digest);
	size_t len;
	if (small_file(x, name, digest, &im->manifest_json, &len, err) < 0)
		return -1;
	int r = manifest_parse(im->manifest_json, len, &m, err);
	if (r == 0 && m.kind != MANIFEST_OCI && m.kind != MANIFEST_DOCKER_V2)
		r = alps_fail(err, ALPS_E_UNSUPPORTED, "manifest %s is not an image manifest", digest);
	if (r == 0)
		r = oci_layers(x, &m, err);
	_cleanup_free_ char *cname = r == 0 ? blob_name(m.config.digest) : NULL;
	if (r == 0)
		r = take_config(x, cname, m.config.digest, m.nlayers, err);
	manifest_free(&m);
	return r;
}

static int oci_image(struct arc *x, alps_error **err)
{
	_cleanup_free_ char *layout = NULL, *index = NULL, *digest = NULL, *sub = NULL;
	size_t len;
	if (small_file(x, "oci-layout", NULL, &layout, &len, err) < 0 ||
	    small_file(x, "index.json", NULL, &index, &len, err) < 0 ||
	    pick_manifest(x, index, len, &digest, err) < 0)
		return alps_error_prefix(err, "OCI layout");
	x->im->own_name = index_annotation(index, digest, "io.containerd.image.name");
	if (!x->im->own_name)
		x->im->own_name = index_annotation(index, digest, "org.opencontainers.image.ref.name");
	/* An entry may be an index of its own (one per platform). */
	_cleanup_free_ char *name = blob_name(digest);
	struct aentry *e = blob_entry(x, name, err);
	enum manifest_kind kind = MANIFEST_UNKNOWN;
	if (!e || !e->data || manifest_detect(e->data, e->size, NULL, &kind, err) < 0)
		return e && !e->data ? alps_fail(err, ALPS_E_LIMIT, "%s is too big", name) : -1;
	if (manifest_kind_is_index(kind)) {
		_cleanup_free_ char *json = NULL;
		if (small_file(x, name, digest, &json, &len, err) < 0 ||
		    pick_manifest(x, json, len, &sub, err) < 0)
			return -1;
		return oci_manifest(x, sub, err);
	}
	return oci_manifest(x, digest, err);
}

/* ---- docker save ---- */

static int docker_compression(const struct aentry *e, enum layer_compression *c,
			      const char **media)
{
	if (e->size >= 2 && e->magic[0] == 0x1f && e->magic[1] == 0x8b) {
		*c = LAYER_COMPRESSION_GZIP;
		*media = "application/vnd.oci.image.layer.v1.tar+gzip";
	} else if (e->size >= 4 && memcmp(e->magic, "\x28\xb5\x2f\xfd", 4) == 0) {
		*c = LAYER_COMPRESSION_ZSTD;
		*media = "application/vnd.oci.image.layer.v1.tar+zstd";
	} else {
		*c = LAYER_COMPRESSION_NONE;
		*media = "application/vnd.oci.image.layer.v1.tar";
	}
	return 0;
}

/* "blobs/sha256/<hex>" or "<hex>.json", "<hex>/layer.tar": the digest the
 * name promises, or NULL. */
static char *digest_in_name(const char *name)
{
	char *d = NULL;
	if (str_has_prefix(name, "blobs/sha256/"))
		d = xasprintf("sha256:%s", name + strlen("blobs/sha256/"));
	else if (strlen(name) == 64 + 5 && str_has_suffix(name, ".json"))
		d = xasprintf("sha256:%.64s", name);
	if (d && !digest_valid(d)) {
		free(d);
		d = NULL;
	}
	return d;
}

static int docker_layers(struct arc *x, json_t *layers, alps_error **err)
{
	arc_alloc_layers(x, json_array_size(layers));
	if (x->nlayers == 0 || x->nlayers > MANIFEST_MAX_LAYERS)
		return alps_fail(err, ALPS_E_INVALID, "manifest.json: %zu layers (1 to %d)",
				 x->nlayers, MANIFEST_MAX_LAYERS);
	for (size_t i = 0; i < x->nlayers; i++) {
		const char *name = json_string_value(json_array_get(layers, i));
		const char *n = name ? normalise(name) : NULL;
		if (!n)
			return alps_fail(err, ALPS_E_INVALID, "manifest.json: layer %zu is not a "
					 "relative name", i);
		if (!(x->lent[i] = blob_entry(x, n, err)))
			return -1;
		const char *media;
		docker_compression(x->lent[i], &x->comp[i], &media);
		x->media[i] = xstrdup(media);
		x->want_digest[i] = digest_in_name(n);
	}
	return 0;
}

static int docker_image(struct arc *x, alps_error **err)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	json_error_t je;
	if (small_file(x, "manifest.json", NULL, &text, &len, err) < 0)
		return -1;
	json_t *j = json_loadb(text, len, 0, &je), *img = json_array_get(j, 0);
	int r = 0;
	if (!json_is_array(j) || json_array_size(j) != 1 || !json_is_object(img))
		r = alps_fail(err, ALPS_E_INVALID, "manifest.json: %s",
			      !j ? je.text : json_is_array(j) && json_array_size(j) > 1
			      ? "the archive holds several images: import one at a time"
			      : "not an array of one image");
	const char *cfg = r == 0 ? json_string_value(json_object_get(img, "Config")) : NULL;
	const char *cname = cfg ? normalise(cfg) : NULL;
	if (r == 0 && !cname)
		r = alps_fail(err, ALPS_E_INVALID, "manifest.json: no Config");
	if (r == 0)
		r = docker_layers(x, json_object_get(img, "Layers"), err);
	_cleanup_free_ char *cdigest = r == 0 ? digest_in_name(cname) : NULL;
	if (r == 0)
		r = take_config(x, cname, cdigest, x->nlayers, err);
	const char *tag = json_string_value(json_array_get(json_object_get(img, "RepoTags"), 0));
	if (r == 0 && tag)
		x->im->own_name = xstrdup(tag);
	json_decref(j);
	return r;
}

/* ---- the layers ---- */

struct entry_stream {
	struct stream base;
	struct archive *a;      /* borrowed */
};

static ssize_t entry_read(struct stream *s, void *buf, size_t len, alps_error **err)
{
	struct entry_stream *e = (struct entry_stream *)s;
	la_ssize_t n = archive_read_data(e->a, buf, len);
	if (n < 0)
		return alps_fail(err, ALPS_E_INVALID, "the archive is truncated or damaged: %s",
				 archive_error_string(e->a));
	return n;
}

static void entry_close(struct stream *s)
{
	free(s);
}

static struct stream *entry_stream(struct archive *a)
{
	struct entry_stream *e = xzalloc(sizeof(*e));
	e->base.read = entry_read;
	e->base.close = entry_close;
	e->a = a;
	return &e->base;
}

/* Layer i from s (taken); the other layers of the same entry too. */
static int layer_from(struct arc *x, size_t i, struct stream *s, alps_error **err)
{
	struct imp *im = x->im;
	_cleanup_free_ char *digest = NULL, *diff = NULL;
	if (imp_layer_from_tar(im, s, x->comp[i], x->media[i], x->want_digest[i], x->want_diff[i],
			       &digest, &diff, err) < 0)
	{
		_cleanup_free_ char *esc = log_escape(x->lent[i]->name, 300);
		return alps_error_prefix(err, "layer %zu (%s)", i + 1, esc);
	}
	for (size_t j = i; j < x->nlayers; j++) {
		if (x->lent[j] != x->lent[i])
			continue;
		if (strcmp(x->want_diff[j], diff) != 0)
			return alps_fail(err, ALPS_E_INTEGRITY, "layer %zu: its tar has digest %s, "
					 "not the diff_id %s", j + 1, diff, x->want_diff[j]);
		im->layers[j] = xstrdup(digest);
	}
	return 0;
}

static bool layer_pending(struct arc *x, const struct aentry *e, size_t *i)
{
	for (*i = 0; *i < x->nlayers; (*i)++)
		if (x->lent[*i] == e && !x->im->layers[*i])
			return true;
	return false;
}

/* Layers the first pass did not keep, in archive order. */
static int stream_layers(struct arc *x, alps_error **err)
{
	struct areader r;
	struct archive *a = ar_open(&r, x->im->fd, err);
	if (!a)
		return -1;
	struct archive_entry *ae;
	int rc, res = 0;
	size_t i;
	while (res == 0 && (rc = archive_read_next_header(a, &ae)) != ARCHIVE_EOF) {
		const char *raw = rc < ARCHIVE_WARN ? NULL : archive_entry_pathname(ae);
		const char *name = raw ? normalise(raw) : NULL;
		if (rc < ARCHIVE_WARN || !name)
			res = alps_fail(err, ALPS_E_INVALID, "the archive changed while read");
		else if (archive_entry_filetype(ae) == AE_IFREG && !archive_entry_hardlink(ae) &&
			 layer_pending(x, find(x, name), &i))
			res = layer_from(x, i, entry_stream(a), err);
	}
	ar_close(a, &r);
	return res;
}

static int convert_layers(struct arc *x, alps_error **err)
{
	struct imp *im = x->im;
	uint64_t total = 0;
	size_t i;
	im->layers = xcalloc(x->nlayers, sizeof(*im->layers));
	im->nlayers = x->nlayers;
	for (i = 0; i < x->nlayers; i++)
		total += x->lent[i]->size;
	atomic_store(&im->rq->progress->total, total);
	atomic_store(&im->rq->progress->phase, PULL_LAYERS);
	for (i = 0; i < x->nlayers; i++)
		if (!im->layers[i] && x->lent[i]->data &&
		    layer_from(x, i, stream_from_memory(x->lent[i]->data, x->lent[i]->size), err) < 0)
			return -1;
	for (i = 0; i < x->nlayers && im->layers[i]; i++)
		;
	return i < x->nlayers ? stream_layers(x, err) : 0;
}

static int docker_manifest(struct arc *x, alps_error **err)
{
	const char **media = xcalloc(x->nlayers, sizeof(*media));
	uint64_t *sizes = xcalloc(x->nlayers, sizeof(*sizes));
	for (size_t i = 0; i < x->nlayers; i++) {
		media[i] = x->media[i];
		sizes[i] = x->lent[i]->size;
	}
	int r = imp_make_manifest(x->im, media, sizes, err);
	free(media);
	free(sizes);
	return r;
}

int imp_archive(struct imp *im, alps_error **err)
{
	struct arc x = { .im = im };
	int r = build_index(&x, err);
	bool oci = r == 0 && find(&x, "index.json") && find(&x, "oci-layout");
	if (r == 0 && !oci && !find(&x, "manifest.json"))
		r = alps_fail(err, ALPS_E_INVALID, "neither an OCI layout (oci-layout, index.json) "
			      "nor a docker archive (manifest.json)");
	if (r == 0) {
		if (!im->rq->from_directory)
			im->format = oci ? "oci-archive" : "docker-archive";
		r = oci ? oci_image(&x, err) : docker_image(&x, err);
	}
	if (r == 0)
		r = convert_layers(&x, err);
	if (r == 0 && !oci)
		r = docker_manifest(&x, err);
	arc_clear(&x);
	return r;
}
