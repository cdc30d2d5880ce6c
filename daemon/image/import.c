/* import.c: alps import (see import.h): the input's format, its layers
 * through the converter, the image's commit, and the undoing of a failed
 * import. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/ref.h"
#include "common/util.h"
#include "daemon/image/import_int.h"
#include "daemon/image/import_sif.h"
#include "daemon/image/manifest.h"
#include "daemon/image/pull.h"
#include "daemon/store/store.h"

#define SNIFF_BYTES 512
#define SPOOL_BUF (1u << 20)
#define SPOOL_IDLE_MS 60000
#define SPOOL_POLL_MS 1000

static atomic_bool stopping;

void import_stop(void)
{
	atomic_store(&stopping, true);
}

bool imp_stopping(alps_error **err)
{
	if (!atomic_load(&stopping))
		return false;
	alps_fail(err, ALPS_E_CANCELLED, "alpsd is stopping");
	return true;
}

/* ---- streams: counting, hashing ---- */

struct count_stream {
	struct stream base;
	struct imp *im;
	struct digester *dig;           /* owned, or NULL */
};

static ssize_t count_read(struct stream *s, void *buf, size_t len, alps_error **err)
{
	struct count_stream *c = (struct count_stream *)s;
	if (imp_stopping(err))
		return -1;
	ssize_t n = stream_read(s->inner, buf, len, err);
	if (n > 0) {
		atomic_fetch_add(&c->im->rq->progress->done, (uint64_t)n);
		if (c->dig)
			digester_update(c->dig, buf, (size_t)n);
	}
	return n;
}

static void count_close(struct stream *s)
{
	struct count_stream *c = (struct count_stream *)s;
	stream_close(s->inner);
	if (c->dig)
		digester_free(c->dig);
	free(c);
}

static struct count_stream *count_new(struct imp *im, struct stream *inner, bool hash)
{
	struct count_stream *c = xzalloc(sizeof(*c));
	c->base.read = count_read;
	c->base.close = count_close;
	c->base.inner = inner;
	c->im = im;
	c->dig = hash ? digester_new(DIGEST_SHA256) : NULL;
	return c;
}

struct stream *imp_counting(struct imp *im, struct stream *inner)
{
	return &count_new(im, inner, false)->base;
}

/* ---- layers ---- */

static void record(char ***v, size_t *n, const char *s)
{
	*v = xreallocarray(*v, *n + 1, sizeof(**v));
	(*v)[(*n)++] = xstrdup(s);
}

static int convert(struct imp *im, struct stream *s, const char *tmp, struct squash_result *res,
		   alps_error **err)
{
	struct squash_opts so = im->rq->squash;
	return squash_convert(s, tmp, &so, res, err);
}

static int check_digests(const char *got, const char *want_digest, const struct squash_result *res,
			 const char *want_diff_id, alps_error **err)
{
	if (want_digest && strcmp(got, want_digest) != 0)
		return alps_fail(err, ALPS_E_INTEGRITY, "the archive's blob has digest %s, not "
				 "the %s its manifest names", got, want_digest);
	if (want_diff_id && strcmp(res->diff_id, want_diff_id) != 0)
		return alps_fail(err, ALPS_E_INTEGRITY, "its tar has digest %s, not the diff_id "
				 "%s of the image config", res->diff_id, want_diff_id);
	return 0;
}

static int commit_layer(struct imp *im, const char *tmp, const char *digest, const char *diff_id,
			const char *media_type, uint64_t size, alps_error **err)
{
	struct store *st = im->rq->store;
	struct store_layer_info info = {
		.digest = digest, .diff_id = diff_id, .media_type = media_type,
		.compressed_size = size,
	};
	if (store_layer_commit(st, tmp, &info, NULL, err) < 0)
		return -1;
	/* Held until the image is committed: a collection meanwhile (or the
	 * undoing of a concurrent failed import) must not drop it. */
	if (store_layer_hold(st, digest, err) < 0)
		return -1;
	record(&im->committed, &im->ncommitted, digest);
	/* The user gave the bytes: they may use the layer, as a puller who
	 * fetched it may; an admin's import is anyone's. */
	return store_layer_allow(st, digest, im->rq->admin ? STORE_PUBLIC : (int64_t)im->rq->uid,
				 err);
}

/* The conversion of a blob failed: if its bytes are not those its manifest
 * names, say that, the cause, rather than what the converter saw. */
static void blame_digest(struct count_stream *cs, const char *want, alps_error **err)
{
	char buf[1 << 16], got[DIGEST_STRLEN_MAX];
	alps_error *e = NULL;
	ssize_t n;
	while ((n = stream_read(&cs->base, buf, sizeof(buf), &e)) > 0)
		;
	alps_error_free(e);
	if (n < 0)
		return;
	digester_final(cs->dig, got);
	if (strcmp(got, want) == 0)
		return;
	alps_error_free(*err);
	*err = NULL;
	alps_fail(err, ALPS_E_INTEGRITY, "the archive's blob has digest %s, not the %s its "
		  "manifest names", got, want);
}

int imp_layer_from_tar(struct imp *im, struct stream *raw, enum layer_compression c,
		       const char *media_type, const char *want_digest, const char *want_diff_id,
		       char **digest, char **diff_id, alps_error **err)
{
	struct count_stream *cs = count_new(im, raw, true);
	struct digester *dig = cs->dig;
	_cleanup_free_ char *tmp = store_tmp_path(im->rq->store);
	struct squash_result res;
	char got[DIGEST_STRLEN_MAX];
	struct stream *s = stream_decompress(&cs->base, c, err);
	int r = s ? convert(im, s, tmp, &res, err) : -1;
	if (r == 0) {
		digester_final(dig, got);
		r = check_digests(got, want_digest, &res, want_diff_id, err);
		if (r < 0)
			unlink(tmp);
	} else if (s && want_digest) {
		blame_digest(cs, want_digest, err);
	}
	uint64_t size = s ? cs->base.bytes : 0;     /* s owns cs */
	stream_close(s);
	if (r == 0)
		r = commit_layer(im, tmp, got, res.diff_id, media_type, size, err);
	if (r < 0)
		return -1;
	*digest = xstrdup(got);
	if (diff_id)
		*diff_id = xstrdup(res.diff_id);
	return 0;
}

/* ---- the image ---- */

static char *json_text(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (!s)
		abort();
	return s;
}

int imp_make_manifest(struct imp *im, const char *const *media_types, const uint64_t *sizes,
		      alps_error **err)
{
	char cdigest[DIGEST_STRLEN_MAX];
	(void)err;
	digest_sha256(im->config_json, strlen(im->config_json), cdigest);
	json_t *layers = json_array();
	for (size_t i = 0; i < im->nlayers; i++)
		json_array_append_new(layers, json_pack("{s:s, s:s, s:I}", "mediaType",
							media_types[i], "digest", im->layers[i],
							"size", (json_int_t)sizes[i]));
	json_t *m = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2,
			      "mediaType", MT_OCI_MANIFEST, "config", "mediaType", MT_OCI_CONFIG,
			      "digest", cdigest, "size", (json_int_t)strlen(im->config_json),
			      "layers", layers);
	im->manifest_json = json_text(m);
	return 0;
}

/* The tag: the user's, or the archive's own name, canonical. */
static int pick_tag(struct imp *im, char **tag, alps_error **err)
{
	if (im->rq->tag) {
		*tag = xstrdup(im->rq->tag);
		return 0;
	}
	if (!im->own_name)
		return alps_fail(err, ALPS_E_INVALID, "the %s names no image (no %s): give "
				 "--tag REF", im->format, strcmp(im->format, "docker-archive") == 0
				 ? "RepoTags" : "org.opencontainers.image.ref.name annotation");
	struct image_ref ref;
	if (ref_parse(im->own_name, im->rq->default_registry, &ref, err) < 0)
		return alps_error_prefix(err, "the archive's image name (give --tag REF)");
	*tag = ref_format(&ref);
	ref_free(&ref);
	return 0;
}

static int commit_image(struct imp *im, struct import_result *res, alps_error **err)
{
	struct store *st = im->rq->store;
	_cleanup_free_ char *tag = NULL;
	char mdigest[DIGEST_STRLEN_MAX], cdigest[DIGEST_STRLEN_MAX];
	if (pick_tag(im, &tag, err) < 0)
		return -1;
	digest_sha256(im->manifest_json, strlen(im->manifest_json), mdigest);
	digest_sha256(im->config_json, strlen(im->config_json), cdigest);
	int64_t who = im->rq->admin ? STORE_UID_ANY : (int64_t)im->rq->uid;
	if (store_tag_claimable(st, tag, mdigest, who, err) < 0)
		return -1;
	struct store_image_rec rec = {
		.digest = mdigest, .config_digest = cdigest, .platform = im->platform,
		.manifest_json = im->manifest_json, .config_json = im->config_json,
	};
	struct store_origin from = {
		.origin = STORE_ORIGIN_IMPORT,
		.uid = im->rq->admin ? STORE_PUBLIC : (int64_t)im->rq->uid,
		.private = !im->rq->admin,
	};
	if (store_image_commit(st, &rec, (const char *const *)im->layers, im->nlayers, tag, &from,
			       err) < 0)
		return -1;
	res->reference = steal_pointer(&tag);
	res->digest = xstrdup(mdigest);
	res->layers = (uint32_t)im->nlayers;
	res->private = !im->rq->admin;
	return 0;
}

/* ---- the input ---- */

/* A pipe (a directory the client streams) into an unlinked file under the
 * store's tmp/: an archive is read twice.  At most limit bytes. */
/* Wait for the client's stream: 1 when readable, -1 on a stall (a client
 * that stops writing would hold a pool thread: not for long) or at stop. */
static int spool_wait(struct imp *im, alps_error **err)
{
	for (int idle = 0; idle < SPOOL_IDLE_MS; idle += SPOOL_POLL_MS) {
		struct pollfd pfd = { .fd = im->rq->fd, .events = POLLIN };
		if (imp_stopping(err))
			return -1;
		int r = poll(&pfd, 1, SPOOL_POLL_MS);
		if (r > 0 || (r < 0 && errno != EINTR))
			return 1;
	}
	return alps_fail(err, ALPS_E_TIMEOUT, "the client's stream stalled for %d s",
			 SPOOL_IDLE_MS / 1000);
}

static int spool(struct imp *im, uint64_t limit, alps_error **err)
{
	_cleanup_free_ char *path = store_tmp_path(im->rq->store);
	_cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return alps_fail_errno(err, "creating %s", path);
	unlink(path);
	_cleanup_free_ char *buf = xmalloc(SPOOL_BUF);
	uint64_t total = 0;
	for (;;) {
		ssize_t n = spool_wait(im, err) < 0 ? -2 : read(im->rq->fd, buf, SPOOL_BUF);
		if (n == -2)
			return -1;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return alps_fail_errno(err, "reading the client's stream");
		if (n == 0)
			break;
		if ((total += (uint64_t)n) > limit)
			return alps_fail(err, ALPS_E_LIMIT, "the stream is over %llu bytes (the "
					 "store's limit, half its free space or the layer limit)",
					 (unsigned long long)limit);
		if (write_all(fd, buf, (size_t)n) < 0)
			return alps_fail_errno(err, "writing %s", path);
		atomic_store(&im->rq->progress->done, total);
	}
	atomic_store(&im->rq->progress->done, 0);
	im->fd = steal_fd(&fd);
	im->own_fd = true;
	im->size = total;
	return 0;
}

/* A stream of unknown length may fill the store's file system: at most
 * store.max_size (when set), half the free space, and the converter's
 * limit of tar bytes. */
static int spool_limit(struct imp *im, uint64_t *max, alps_error **err)
{
	uint64_t limit = 0, low, size, avail;
	if (cache_limits(im->rq->store, &im->rq->policy, &limit, &low, err) < 0 ||
	    store_fs_usage(im->rq->store, &size, &avail, err) < 0)
		return -1;
	*max = im->rq->squash.max_tar_bytes ? im->rq->squash.max_tar_bytes
					    : SQUASH_DEFAULT_MAX_TAR_BYTES;
	if (limit && limit < *max)
		*max = limit;
	if (avail / 2 < *max)
		*max = avail / 2;
	return 0;
}

static int open_input(struct imp *im, alps_error **err)
{
	struct stat st;
	if (fstat(im->rq->fd, &st) < 0)
		return alps_fail_errno(err, "fstat of the file");
	if (S_ISDIR(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "a directory fd: the client streams "
				 "directories as a tar");
	uint64_t max;
	if (!S_ISREG(st.st_mode) || im->rq->from_directory)
		return spool_limit(im, &max, err) < 0 ? -1 : spool(im, max, err);
	im->fd = im->rq->fd;
	im->size = (uint64_t)st.st_size;
	return 0;
}

static int sniff(struct imp *im, uint8_t *buf, size_t *len, alps_error **err)
{
	ssize_t n;
	do
		n = pread(im->fd, buf, SNIFF_BYTES, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return alps_fail_errno(err, "reading the file");
	*len = (size_t)n;
	return 0;
}

static bool looks_like_archive(const uint8_t *b, size_t n)
{
	return (n >= 262 && memcmp(b + 257, "ustar", 5) == 0) ||
	       (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) ||
	       (n >= 4 && memcmp(b, "\x28\xb5\x2f\xfd", 4) == 0);
}

static int admit(struct imp *im, uint64_t *need, alps_error **err);

/* What the input is, from its first bytes (im->format set); a SIF's
 * root file system found. */
static int detect(struct imp *im, struct sif_rootfs *sif, alps_error **err)
{
	uint8_t buf[SNIFF_BYTES];
	size_t n = 0;
	if (sniff(im, buf, &n, err) < 0)
		return -1;
	if (sif_is_sif(buf, n)) {
		im->format = "sif";
		return sif_find_rootfs(im->fd, im->size, sif, err);
	}
	if (n >= 4 && memcmp(buf, "hsqs", 4) == 0) {
		im->format = "squashfs";
		*sif = (struct sif_rootfs){ .offset = 0, .size = im->size };
		return 0;
	}
	if (looks_like_archive(buf, n)) {
		im->format = im->rq->from_directory ? "oci-dir" : "archive";
		return 0;
	}
	return alps_fail(err, ALPS_E_INVALID, "not a docker archive, an OCI layout, a SIF file "
			 "or a squashfs file");
}

/* Detect, admit under the store's limit, convert.  *need: as admit(). */
static int dispatch(struct imp *im, uint64_t *need, alps_error **err)
{
	struct sif_rootfs sq;
	if (detect(im, &sq, err) < 0)
		return -1;
	bool archive = strcmp(im->format, "sif") != 0 && strcmp(im->format, "squashfs") != 0;
	/* A file system has no name for its image: say so before the work. */
	if (!archive && !im->rq->tag)
		return alps_fail(err, ALPS_E_INVALID, "a %s file names no image: give --tag REF",
				 im->format);
	if (admit(im, need, err) < 0)
		return -1;
	atomic_store(&im->rq->progress->total, im->size);
	return archive ? imp_archive(im, err) : imp_squashfs(im, sq.offset, sq.size, sq.arch, err);
}

/* Release the holds; after a failure, drop the layers no image uses. */
static void imp_release(struct imp *im, bool failed)
{
	for (size_t i = 0; i < im->ncommitted; i++)
		store_layer_release(im->rq->store, im->committed[i]);
	for (size_t i = 0; failed && i < im->ncommitted; i++)
		store_layer_drop_unused(im->rq->store, im->committed[i]);
}

static void imp_clear(struct imp *im)
{
	for (size_t i = 0; i < im->ncommitted; i++)
		free(im->committed[i]);
	free(im->committed);
	for (size_t i = 0; i < im->nlayers; i++)
		free(im->layers[i]);
	free(im->layers);
	free(im->manifest_json);
	free(im->config_json);
	free(im->platform);
	free(im->own_name);
	if (im->own_fd)
		close(im->fd);
}

static void fill_size(struct imp *im, struct import_result *res)
{
	struct store_image *img = NULL;
	alps_error *e = NULL;
	if (store_image_find(im->rq->store, res->digest, STORE_UID_ANY, &img, &e) == 0)
		res->size = img->size;
	alps_error_free(e);
	store_image_free(img);
}

/* Room under store.max_size for about the input's size, as a pull gets
 * for its layers; *need is what to give back with store_admit_end(). */
static int admit(struct imp *im, uint64_t *need, alps_error **err)
{
	uint64_t limit = 0, low = 0;
	*need = 0;
	if (cache_limits(im->rq->store, &im->rq->policy, &limit, &low, err) < 0)
		return -1;
	if (limit == 0 || im->size == 0)
		return 0;
	if (store_admit(im->rq->store, im->size, limit, low, err) < 0)
		return alps_error_prefix(err, "import of %llu bytes",
					 (unsigned long long)im->size);
	*need = im->size;
	return 0;
}

int import_image(const struct import_request *rq, struct import_result *res, alps_error **err)
{
	struct imp im = { .rq = rq, .fd = -1, .format = "file" };
	uint64_t need = 0;
	memset(res, 0, sizeof(*res));
	atomic_store(&rq->progress->phase, PULL_RESOLVING);
	int r = open_input(&im, err);
	if (r == 0)
		r = dispatch(&im, &need, err);
	if (r == 0) {
		atomic_store(&rq->progress->phase, PULL_COMMITTING);
		r = commit_image(&im, res, err);
	}
	res->format = im.format;
	imp_release(&im, r < 0);
	store_admit_end(rq->store, need);
	if (r < 0) {
		import_result_clear(res);
		res->format = im.format;
	} else {
		fill_size(&im, res);
	}
	imp_clear(&im);
	return r;
}

void import_result_clear(struct import_result *res)
{
	free(res->reference);
	free(res->digest);
	memset(res, 0, sizeof(*res));
}
