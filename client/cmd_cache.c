/* cmd_cache.c: alps gc, pin, unpin, df, verify: the administrator's hold on
 * the node's image cache; alps squash / unsquash: a directory into a squashfs
 * file and back, as the user. */
#include <config.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client/client.h"
#include <sqfs/compressor.h>
#include <sqfs/data_reader.h>
#include <sqfs/dir_reader.h>
#include <sqfs/id_table.h>
#include <sqfs/inode.h>
#include <sqfs/io.h>
#include <sqfs/super.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/squash/squash.h"
#include "daemon/image/stream.h"

/* "90", "90s", "30m", "12h", "7d", "2w" in seconds; -1 if malformed. */
static int parse_age(const char *s, uint64_t *out)
{
	static const struct {
		char unit;
		uint64_t secs;
	} units[] = { { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 }, { 'w', 604800 } };
	char *end;
	if (!s || !*s || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	uint64_t mul = 1;
	if (*end) {
		size_t i = 0;
		while (i < ARRAY_SIZE(units) && units[i].unit != *end)
			i++;
		if (i == ARRAY_SIZE(units) || end[1])
			return -1;
		mul = units[i].secs;
	}
	if (n > UINT64_MAX / 1000 / mul)
		return -1;
	*out = n * mul;
	return 0;
}

/* ---- gc ---- */

static void when(uint64_t ms, char *buf, size_t size)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (ms == 0 || !localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M", &tm) == 0)
		snprintf(buf, size, "-");
}

static void gc_print(const Alps__GcReply *r)
{
	char a[32], b[32], c[32];
	for (size_t i = 0; i < r->n_images; i++) {
		const Alps__GcImage *im = r->images[i];
		char used[32];
		when(im->last_used_ms, used, sizeof(used));
		printf("%s %s (%.19s, last used %s, frees %s)\n",
		       r->dry_run ? "would remove" : "removed", im->name, im->digest, used,
		       format_size(im->bytes_freed, a, sizeof(a)));
	}
	printf("%s %u image(s) and %u layer(s), %s; layers take %s, %s before\n",
	       r->dry_run ? "would collect" : "collected", r->images_removed, r->layers_removed,
	       format_size(r->bytes_freed, a, sizeof(a)), format_size(r->used_after, b, sizeof(b)),
	       format_size(r->used_before, c, sizeof(c)));
	if (r->kept && *r->kept)
		printf("still over the target of %s: %s\n", format_size(r->target, a, sizeof(a)),
		       r->kept);
}

static json_t *gc_json(const Alps__GcReply *r)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < r->n_images; i++)
		json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I}", "name", r->images[i]->name,
						     "digest", r->images[i]->digest, "last_used_ms",
						     (json_int_t)r->images[i]->last_used_ms,
						     "bytes_freed",
						     (json_int_t)r->images[i]->bytes_freed));
	return json_pack("{s:b, s:b, s:I, s:I, s:I, s:i, s:i, s:I, s:o, s:s}", "ok", 1, "dry_run",
			 (int)r->dry_run, "used_before", (json_int_t)r->used_before, "used_after",
			 (json_int_t)r->used_after, "target", (json_int_t)r->target,
			 "images_removed", (int)r->images_removed, "layers_removed",
			 (int)r->layers_removed, "bytes_freed", (json_int_t)r->bytes_freed, "images",
			 arr, "kept", r->kept ? r->kept : "");
}

/* -1 to go on, else the exit code (usage reported). */
static int gc_options(struct client *cl, int argc, char **argv, Alps__GcRequest *g)
{
	static const struct option opts[] = {
		{ "dry-run", no_argument, NULL, 'n' },
		{ "max-size", required_argument, NULL, 'm' },
		{ "older-than", required_argument, NULL, 'o' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;
	while ((opt = command_getopt(cl, argc, argv, "nm:o:", opts)) != -1) {
		if (opt == 'n') {
			g->dry_run = true;
		} else if (opt == 'm') {
			if (parse_size(optarg, &g->max_size) < 0)
				return usage_error(cl, "--max-size wants a size such as 0, 512M or "
						   "10G, not '%s'", optarg);
			g->has_max_size = true;
		} else if (opt == 'o') {
			if (parse_age(optarg, &g->older_than_s) < 0 || g->older_than_s == 0)
				return usage_error(cl, "--older-than wants an age such as 3600, 90m, "
						   "12h or 7d, not '%s'", optarg);
		} else {
			return command_opt_exit(opt);
		}
	}
	if (optind != argc)
		return usage_error(cl, "unexpected argument '%s'", argv[optind]);
	return -1;
}

static int run_gc(struct client *cl, int argc, char **argv)
{
	Alps__GcRequest g = ALPS__GC_REQUEST__INIT;
	int orc = gc_options(cl, argc, argv, &g);
	if (orc >= 0)
		return orc;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_GC;
	req.gc = &g;
	int rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "gc", NULL, NULL, &rc);
	if (!resp)
		return rc;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_GC_REPLY) {
		alps__response__free_unpacked(resp, NULL);
		fprintf(stderr, "alps gc: the daemon sent no gc reply\n");
		return EXIT_FAILED;
	}
	if (cl->json)
		client_print_json(gc_json(resp->gc_reply));
	else
		gc_print(resp->gc_reply);
	alps__response__free_unpacked(resp, NULL);
	return EXIT_OK;
}

const struct command cmd_gc = {
	.name = "gc",
	.summary = "Evict least recently used images from the store (admin).",
	.usage = "[--dry-run] [--max-size SIZE] [--older-than AGE]",
	.help = "  -n, --dry-run          say what would go, remove nothing\n"
		"  -m, --max-size SIZE    collect until the layers take at most SIZE\n"
		"                         (default: store.low_water of store.max_size)\n"
		"  -o, --older-than AGE   also every image unused for AGE (90m, 12h, 7d)\n"
		"Pinned images and images a job uses stay; so do layers other images use.",
	.run = run_gc,
};

/* ---- pin, unpin ---- */

/* One image's result: {"ok", "image", "digest", "pinned"} or an error
 * object with "image". */
static json_t *pin_one(struct client *cl, const char *what, bool pinned)
{
	Alps__PinRequest pr = ALPS__PIN_REQUEST__INIT;
	pr.reference = (char *)what;
	pr.pinned = pinned;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_PIN;
	req.pin = &pr;
	alps_error *err = NULL;
	Alps__Response *resp = client_call(cl, &req, NULL, NULL, &err);
	json_t *j;
	if (!resp) {
		j = client_error_json(err->code, err->msg);
		alps_error_free(err);
	} else if (resp->status != ALPS__STATUS__OK) {
		j = client_error_json((int)resp->status, resp->message);
	} else {
		const char *digest = resp->payload_case == ALPS__RESPONSE__PAYLOAD_PIN_REPLY
					     ? resp->pin_reply->digest : "";
		j = json_pack("{s:b, s:s, s:b}", "ok", 1, "digest", digest, "pinned", (int)pinned);
	}
	json_object_set_new(j, "image", json_string(what));
	if (resp)
		alps__response__free_unpacked(resp, NULL);
	return j;
}

static void pin_print(const json_t *j, bool pinned)
{
	const char *what = json_string_value(json_object_get(j, "image"));
	if (json_is_true(json_object_get(j, "ok")))
		printf("%s %s (%s)\n", pinned ? "pinned" : "unpinned", what,
		       json_string_value(json_object_get(j, "digest")));
	else
		fprintf(stderr, "alps %s: %s: %s\n", pinned ? "pin" : "unpin", what,
			json_string_value(json_object_get(j, "message")));
}

/* One document for all the operands, as rm prints. */
static json_t *pin_document(json_t *results, bool pinned)
{
	size_t i, failed = 0;
	json_t *r, *first = NULL;
	json_array_foreach(results, i, r) {
		if (!json_is_true(json_object_get(r, "ok"))) {
			failed++;
			first = first ? first : r;
		}
	}
	json_t *doc = json_pack("{s:b, s:o}", "ok", failed == 0, "results", results);
	if (first) {
		json_object_set(doc, "code", json_object_get(first, "code"));
		json_object_set_new(doc, "message", json_sprintf("%zu of %zu images not %s", failed,
								 json_array_size(results),
								 pinned ? "pinned" : "unpinned"));
	}
	return doc;
}

static int run_pin_common(struct client *cl, int argc, char **argv, bool pinned)
{
	int status = command_operands(cl, argc, argv, 1, INT_MAX,
				      "give one or more images (reference or digest)");
	if (status >= 0)
		return status;
	status = EXIT_OK;
	json_t *results = json_array();
	for (int i = optind; i < argc; i++) {
		json_t *j = pin_one(cl, argv[i], pinned);
		if (!json_is_true(json_object_get(j, "ok"))) {
			const char *code = json_string_value(json_object_get(j, "code"));
			status = status == EXIT_UNREACHABLE || strcmp(code, "unavailable") == 0
					 ? EXIT_UNREACHABLE : EXIT_FAILED;
		}
		if (!cl->json)
			pin_print(j, pinned);
		json_array_append_new(results, j);
	}
	if (cl->json)
		client_print_json(pin_document(results, pinned));
	else
		json_decref(results);
	return status;
}

static int run_pin(struct client *cl, int argc, char **argv)
{
	return run_pin_common(cl, argc, argv, true);
}

static int run_unpin(struct client *cl, int argc, char **argv)
{
	return run_pin_common(cl, argc, argv, false);
}

const struct command cmd_pin = {
	.name = "pin",
	.summary = "Keep images in the store: gc never evicts them (admin).",
	.usage = "REFERENCE|DIGEST...",
	.help = "",
	.run = run_pin,
};

const struct command cmd_unpin = {
	.name = "unpin",
	.summary = "Let gc evict pinned images again (admin).",
	.usage = "REFERENCE|DIGEST...",
	.help = "",
	.run = run_unpin,
};

/* ---- df ---- */

static json_t *df_json(const Alps__DfReply *r)
{
	json_t *j = json_pack("{s:b, s:s, s:I, s:I, s:I, s:I, s:I}", "ok", 1, "store_path",
			      r->store_path, "store_bytes", (json_int_t)r->store_bytes, "limit",
			      (json_int_t)r->limit, "low_water", (json_int_t)r->low_water, "fs_size",
			      (json_int_t)r->fs_size, "fs_avail", (json_int_t)r->fs_avail);
	json_object_update_new(j, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "images",
					    (json_int_t)r->images, "pinned_images",
					    (json_int_t)r->pinned_images, "tags", (json_int_t)r->tags,
					    "layers", (json_int_t)r->layers, "orphan_layers",
					    (json_int_t)r->orphan_layers, "orphan_bytes",
					    (json_int_t)r->orphan_bytes));
	json_object_update_new(j, json_pack("{s:I, s:I, s:I, s:I, s:I, s:i, s:I, s:I}",
					    "shared_bytes", (json_int_t)r->shared_bytes,
					    "reclaimable_bytes", (json_int_t)r->reclaimable_bytes,
					    "layer_hits", (json_int_t)r->layer_hits, "layer_misses",
					    (json_int_t)r->layer_misses, "layers_deduplicated",
					    (json_int_t)r->layers_deduplicated, "pulls_in_flight",
					    (int)r->pulls_in_flight, "reserved_bytes",
					    (json_int_t)r->reserved_bytes, "jobs",
					    (json_int_t)r->jobs));
	return j;
}

static void df_print(const Alps__DfReply *r)
{
	char a[32], b[32], c[32];
	printf("store        %s\n", r->store_path);
	if (r->limit)
		printf("size         %s of a limit of %s (eviction down to %s)\n",
		       format_size(r->store_bytes, a, sizeof(a)), format_size(r->limit, b, sizeof(b)),
		       format_size(r->low_water, c, sizeof(c)));
	else
		printf("size         %s (no limit)\n", format_size(r->store_bytes, a, sizeof(a)));
	printf("file system  %s, %s free\n", format_size(r->fs_size, a, sizeof(a)),
	       format_size(r->fs_avail, b, sizeof(b)));
	printf("images       %" PRIu64 " (%" PRIu64 " pinned), %" PRIu64 " tags, %" PRIu64
	       " jobs\n", r->images, r->pinned_images, r->tags, r->jobs);
	printf("layers       %" PRIu64 " (%" PRIu64 " of no image: %s), %" PRIu64
	       " more stored once by content\n", r->layers, r->orphan_layers,
	       format_size(r->orphan_bytes, a, sizeof(a)), r->layers_deduplicated);
	printf("shared       %s in layers more than one image uses\n",
	       format_size(r->shared_bytes, a, sizeof(a)));
	printf("reclaimable  %s (alps gc --max-size 0; pinned and in-use images stay)\n",
	       format_size(r->reclaimable_bytes, a, sizeof(a)));
	printf("layer cache  %" PRIu64 " hits, %" PRIu64 " misses\n", r->layer_hits,
	       r->layer_misses);
	printf("pulls        %u in flight, %s reserved\n", r->pulls_in_flight,
	       format_size(r->reserved_bytes, a, sizeof(a)));
}

static int run_df(struct client *cl, int argc, char **argv)
{
	int orc = command_operands(cl, argc, argv, 0, 0, "");
	if (orc >= 0)
		return orc;
	Alps__DfRequest dq = ALPS__DF_REQUEST__INIT;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_DF;
	req.df = &dq;
	int rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "df", NULL, NULL, &rc);
	if (!resp)
		return rc;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_DF_REPLY) {
		alps__response__free_unpacked(resp, NULL);
		fprintf(stderr, "alps df: the daemon sent no df reply\n");
		return EXIT_FAILED;
	}
	if (cl->json)
		client_print_json(df_json(resp->df_reply));
	else
		df_print(resp->df_reply);
	alps__response__free_unpacked(resp, NULL);
	return EXIT_OK;
}

const struct command cmd_df = {
	.name = "df",
	.summary = "Show the store's size, limit, free space, sharing and cache counters.",
	.usage = "",
	.help = "",
	.run = run_df,
};

/* ---- verify ---- */

static void verify_output(struct client *cl, const Alps__VerifyReply *r)
{
	char a[32];
	if (cl->json) {
		json_t *bad = json_array();
		for (size_t i = 0; i < r->n_damaged; i++)
			json_array_append_new(bad, json_pack("{s:s, s:s}", "digest",
							     r->damaged[i]->digest, "problem",
							     r->damaged[i]->problem));
		json_t *doc = json_pack("{s:b, s:I, s:I, s:I, s:o}", "ok", r->n_damaged == 0,
					"layers_checked", (json_int_t)r->layers_checked,
					"bytes_checked", (json_int_t)r->bytes_checked,
					"checksums_recorded", (json_int_t)r->checksums_recorded,
					"damaged", bad);
		if (r->n_damaged) {     /* every ok:false object has code and message */
			json_object_set_new(doc, "code",
					    json_string(client_code_name(ALPS_E_INTEGRITY)));
			json_object_set_new(doc, "message", json_sprintf("%zu damaged layer(s)",
									 r->n_damaged));
		}
		client_print_json(doc);
		return;
	}
	for (size_t i = 0; i < r->n_damaged; i++)
		printf("damaged %s: %s\n", r->damaged[i]->digest, r->damaged[i]->problem);
	printf("%" PRIu64 " layer(s), %s checked: %zu damaged", r->layers_checked,
	       format_size(r->bytes_checked, a, sizeof(a)), r->n_damaged);
	if (r->checksums_recorded)
		printf(", %" PRIu64 " checksum(s) recorded for the first time",
		       r->checksums_recorded);
	printf("\n%s", r->n_damaged ? "damaged layers are fetched again by the next pull or "
				      "prepare of an image using them\n" : "");
}

static int run_verify(struct client *cl, int argc, char **argv)
{
	int orc = command_operands(cl, argc, argv, 0, 1, "give at most one image");
	if (orc >= 0)
		return orc;
	Alps__VerifyRequest vq = ALPS__VERIFY_REQUEST__INIT;
	vq.reference = optind < argc ? argv[optind] : (char *)"";
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_VERIFY;
	req.verify = &vq;
	int rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "verify", NULL, NULL, &rc);
	if (!resp)
		return rc;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_VERIFY_REPLY) {
		alps__response__free_unpacked(resp, NULL);
		fprintf(stderr, "alps verify: the daemon sent no verify reply\n");
		return EXIT_FAILED;
	}
	verify_output(cl, resp->verify_reply);
	rc = resp->verify_reply->n_damaged ? EXIT_FAILED : EXIT_OK;
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

const struct command cmd_verify = {
	.name = "verify",
	.summary = "Re-check the store's layer files against their checksums (admin).",
	.usage = "[REFERENCE|DIGEST]",
	.help = "  Every layer (or the layers of one image): size, squashfs superblock and\n"
		"  the sha256 recorded at conversion.  Damaged layers are marked; the next\n"
		"  pull or prepare of an image using them fetches them again.  Exit status 1\n"
		"  when one is damaged.",
	.run = run_verify,
};

/* ---- squash ----
 *
 * A directory into one squashfs file with the daemon's own writer
 * (daemon/image/squash.c), as the user and without the daemon: a thread
 * reads the tree with libarchive as a tar stream into a pipe, the writer
 * converts the stream as it comes.  What the user cannot read fails the
 * run, naming the path. */

struct tar_writer {
	char *root;             /* DIR without trailing '/' */
	int fd;                 /* the pipe's write end; closed by the thread */
	bool gone;              /* the writer stopped reading: stop too */
	char *error;            /* owned: why the tree could not be read */
};

/* Into the pipe.  When the writer has given up (its error is the cause),
 * the rest is dropped: a failed write would leave libarchive fatal, and
 * some of its buffers are then never freed. */
static la_ssize_t tar_write(struct archive *a, void *arg, const void *buf, size_t len)
{
	struct tar_writer *t = arg;
	(void)a;
	if (!t->gone && write_all(t->fd, buf, len) < 0)
		t->gone = true;
	return (la_ssize_t)len;
}

/* The name inside the image of a path under root; NULL for root itself. */
static const char *tar_name(const struct tar_writer *t, const char *path)
{
	size_t n = strlen(t->root);
	if (strncmp(path, t->root, n) != 0)
		return path;
	path += n;
	while (*path == '/')
		path++;
	return *path ? path : NULL;
}

static int tar_copy_data(struct archive *disk, struct archive *tar)
{
	const void *buf;
	size_t len;
	la_int64_t off;
	int r;
	while ((r = archive_read_data_block(disk, &buf, &len, &off)) == ARCHIVE_OK)
		if (archive_write_data(tar, buf, len) < 0)
			return -1;
	return r == ARCHIVE_EOF ? 0 : -1;
}

static int tar_entry(struct tar_writer *t, struct archive *disk, struct archive *tar,
		     struct archive_entry_linkresolver *links, struct archive_entry *e)
{
	const char *name = tar_name(t, archive_entry_pathname(e));
	if (!name)
		return 0;
	_cleanup_free_ char *rel = xstrdup(name);
	archive_entry_set_pathname(e, rel);
	struct archive_entry *spare = NULL;
	archive_entry_linkify(links, &e, &spare);
	if (e && archive_write_header(tar, e) < ARCHIVE_WARN)
		return -1;
	if (e && archive_entry_size(e) > 0 && !archive_entry_hardlink(e) &&
	    tar_copy_data(disk, tar) < 0)
		return -1;
	return 0;
}

static void *tar_main(void *arg)
{
	struct tar_writer *t = arg;
	struct archive *disk = archive_read_disk_new(), *tar = archive_write_new();
	struct archive_entry_linkresolver *links = archive_entry_linkresolver_new();
	struct archive_entry *e = archive_entry_new();
	archive_entry_linkresolver_set_strategy(links, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
	archive_read_disk_set_symlink_physical(disk);
	int r = archive_write_set_format_pax_restricted(tar);
	if (r == ARCHIVE_OK)
		r = archive_write_open(tar, t, NULL, tar_write, NULL);
	struct archive *bad = r == ARCHIVE_OK ? NULL : tar;
	if (!bad && archive_read_disk_open(disk, t->root) != ARCHIVE_OK)
		bad = disk;
	while (!bad && !t->gone) {
		r = archive_read_next_header2(disk, e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			bad = disk;
		else if (archive_read_disk_descend(disk) < ARCHIVE_WARN)
			bad = disk;
		else if (tar_entry(t, disk, tar, links, e) < 0)
			bad = archive_errno(disk) ? disk : tar;
	}
	if (bad)
		t->error = xstrdup(archive_error_string(bad) ? archive_error_string(bad)
							     : "cannot read the directory");
	if (archive_write_close(tar) != ARCHIVE_OK && !t->error)
		t->error = xstrdup(archive_error_string(tar));
	archive_entry_free(e);
	archive_entry_linkresolver_free(links);
	archive_read_free(disk);
	archive_write_free(tar);
	close(t->fd);
	return NULL;
}

static int squash_dir(const char *dir, const char *out, struct squash_result *res,
		      alps_error **err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return alps_fail_errno(err, "pipe");
	struct tar_writer t = { .root = xstrdup(dir), .fd = p[1] };
	size_t n = strlen(t.root);
	while (n > 1 && t.root[n - 1] == '/')
		t.root[--n] = '\0';
	pthread_t th;
	if (pthread_create(&th, NULL, tar_main, &t) != 0) {
		close(p[0]);
		close(p[1]);
		free(t.root);
		return alps_fail(err, ALPS_E_INTERNAL, "cannot start a thread");
	}
	struct stream *s = stream_from_fd(p[0]);
	int r = squash_convert(s, out, NULL, res, err);
	stream_close(s);        /* closes p[0]: a writer still going stops */
	pthread_join(th, NULL);
	if (t.error && !t.gone) {
		/* The tree's failure is the cause; the writer saw a short tar.
		 * (gone: the writer failed first, its error is the cause.) */
		if (r == 0)
			unlink(out);
		alps_error_free(*err);
		*err = NULL;
		r = alps_fail(err, ALPS_E_IO, "%s", t.error);
	}
	free(t.error);
	free(t.root);
	return r;
}

static int run_squash(struct client *cl, int argc, char **argv)
{
	int orc = command_operands(cl, argc, argv, 2, 2,
				   "give a directory and the squashfs file to write");
	if (orc >= 0)
		return orc;
	argv += optind - 1;     /* the operands as argv[1] and argv[2] */
	struct stat st;
	if (stat(argv[1], &st) < 0 || !S_ISDIR(st.st_mode))
		return usage_error(cl, "%s is not a directory", argv[1]);
	struct squash_result res;
	alps_error *err = NULL;
	/* The writer may give up early (the output exists): the tar thread
	 * then gets EPIPE, not a signal that kills the client. */
	signal(SIGPIPE, SIG_IGN);
	if (squash_dir(argv[1], argv[2], &res, &err) < 0)
		return client_fail(cl, "squash", err);
	char a[32], b[32];
	if (cl->json)
		client_print_json(json_pack("{s:b, s:s, s:I, s:I, s:I}", "ok", 1, "file", argv[2],
					    "entries", (json_int_t)res.entries, "input_bytes",
					    (json_int_t)res.tar_bytes, "bytes",
					    (json_int_t)res.out_bytes));
	else
		printf("%s: %llu entries, %s of files and metadata into %s\n", argv[2],
		       (unsigned long long)res.entries, format_size(res.tar_bytes, a, sizeof(a)),
		       format_size(res.out_bytes, b, sizeof(b)));
	return EXIT_OK;
}

const struct command cmd_squash = {
	.name = "squash",
	.summary = "Pack a directory into one squashfs file (no daemon needed).",
	.usage = "DIR FILE.sqsh",
	.help = "  As you, with your rights: a Python venv, a conda installation or a dataset\n"
		"  of many small files becomes one file for an EDF :sqsh mount.  zstd level 3,\n"
		"  128 KiB blocks; FILE.sqsh must not exist.",
	.run = run_squash,
};

/* ---- unsquash ----
 *
 * A squashfs file into a new directory, as the user, with libsquashfs's
 * reader.  The file may be anyone's: every name is checked (no '/', '.' or
 * '..'), every entry is created below a directory this run made and opened
 * with O_NOFOLLOW, new files with O_EXCL, and no symbolic link is ever
 * followed, so nothing lands outside DIR.  Owners are not restored (the
 * user owns what they unpack), nor set-id bits; device nodes, fifos and
 * sockets are skipped and counted. */

struct unsq {
	sqfs_data_reader_t *data;
	uint64_t files, bytes, skipped;
	struct {
		uint32_t ino;
		int dirfd;      /* borrowed: open while its directory is walked */
		char *name;
	} *links;               /* regular files with more than one link */
	size_t nlinks;
};

static bool unsq_name_ok(const char *n)
{
	return *n && !strchr(n, '/') && strcmp(n, ".") != 0 && strcmp(n, "..") != 0;
}

static int unsq_file(struct unsq *u, int dirfd, const sqfs_tree_node_t *n, alps_error **err)
{
	const char *name = (const char *)n->name;
	_cleanup_close_ int fd = openat(dirfd, name,
					O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return alps_fail_errno(err, "cannot create %s", name);
	sqfs_u64 size = 0, off = 0;
	sqfs_inode_get_file_size(n->inode, &size);
	char buf[1 << 16];
	while (off < size) {
		sqfs_s32 r = sqfs_data_reader_read(u->data, n->inode, off, buf, sizeof(buf));
		if (r <= 0)
			return alps_fail(err, ALPS_E_INTEGRITY, "cannot read the data of %s (%d)",
					 name, (int)r);
		if (write_all(fd, buf, (size_t)r) < 0)
			return alps_fail_errno(err, "cannot write %s", name);
		off += (sqfs_u64)r;
	}
	u->files++;
	u->bytes += size;
	struct timespec t[2] = { { .tv_sec = n->inode->base.mod_time },
				 { .tv_sec = n->inode->base.mod_time } };
	if (fchmod(fd, n->inode->base.mode & 0777) < 0 || futimens(fd, t) < 0)
		return alps_fail_errno(err, "cannot set the mode of %s", name);
	return 0;
}

static int unsq_link(const sqfs_tree_node_t *n, int dirfd, alps_error **err)
{
	const sqfs_inode_generic_t *ino = n->inode;
	size_t len = ino->base.type == SQFS_INODE_EXT_SLINK ? ino->data.slink_ext.target_size
							     : ino->data.slink.target_size;
	if (len > ino->payload_bytes_used)
		return alps_fail(err, ALPS_E_INTEGRITY, "symbolic link %s is malformed",
				 (const char *)n->name);
	_cleanup_free_ char *target = xstrndup((const char *)ino->extra, len);
	struct timespec t[2] = { { .tv_sec = ino->base.mod_time }, { .tv_sec = ino->base.mod_time } };
	if (symlinkat(target, dirfd, (const char *)n->name) < 0 ||
	    utimensat(dirfd, (const char *)n->name, t, AT_SYMLINK_NOFOLLOW) < 0)
		return alps_fail_errno(err, "cannot create %s", (const char *)n->name);
	return 0;
}

static int unsq_dir(struct unsq *u, int dirfd, const sqfs_tree_node_t *dir, int depth,
		    alps_error **err);

/* A regular file seen before (same inode number): a hard link to it. */
static int unsq_hardlink(struct unsq *u, int dirfd, const sqfs_tree_node_t *n, bool *done,
			 alps_error **err)
{
	*done = false;
	uint32_t ino = n->inode->base.inode_number;
	for (size_t i = 0; i < u->nlinks; i++) {
		if (u->links[i].ino != ino)
			continue;
		*done = true;
		if (linkat(u->links[i].dirfd, u->links[i].name, dirfd, (const char *)n->name, 0) < 0)
			return alps_fail_errno(err, "cannot link %s", (const char *)n->name);
		return 0;
	}
	return 0;
}

static int unsq_entry(struct unsq *u, int dirfd, const sqfs_tree_node_t *n, int depth,
		      alps_error **err)
{
	const char *name = (const char *)n->name;
	mode_t mode = n->inode->base.mode;
	bool done = false;
	if (!unsq_name_ok(name)) {
		_cleanup_free_ char *esc = log_escape(name, 300);
		return alps_fail(err, ALPS_E_INVALID, "refusing the entry named '%s'", esc);
	}
	if (S_ISDIR(mode)) {
		if (mkdirat(dirfd, name, 0700) < 0)
			return alps_fail_errno(err, "cannot create %s", name);
		_cleanup_close_ int fd = openat(dirfd, name,
						O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || unsq_dir(u, fd, n, depth + 1, err) < 0)
			return fd < 0 ? alps_fail_errno(err, "cannot open %s", name) : -1;
		struct timespec t[2] = { { .tv_sec = n->inode->base.mod_time },
					 { .tv_sec = n->inode->base.mod_time } };
		if (fchmod(fd, mode & 01777) < 0 || futimens(fd, t) < 0)
			return alps_fail_errno(err, "cannot set the mode of %s", name);
		return 0;
	}
	if (S_ISLNK(mode))
		return unsq_link(n, dirfd, err);
	if (!S_ISREG(mode)) {
		u->skipped++;
		return 0;
	}
	if (unsq_hardlink(u, dirfd, n, &done, err) < 0 || done)
		return done ? 0 : -1;
	return unsq_file(u, dirfd, n, err);
}

static int unsq_dir(struct unsq *u, int dirfd, const sqfs_tree_node_t *dir, int depth,
		    alps_error **err)
{
	if (depth > 256)
		return alps_fail(err, ALPS_E_LIMIT, "directories nested deeper than 256");
	size_t first = u->nlinks;
	int r = 0;
	for (const sqfs_tree_node_t *n = dir->children; r == 0 && n; n = n->next) {
		r = unsq_entry(u, dirfd, n, depth, err);
		if (r == 0 && S_ISREG(n->inode->base.mode)) {
			u->links = xreallocarray(u->links, u->nlinks + 1, sizeof(*u->links));
			u->links[u->nlinks].ino = n->inode->base.inode_number;
			u->links[u->nlinks].dirfd = dirfd;
			u->links[u->nlinks++].name = xstrdup((const char *)n->name);
		}
	}
	/* Links across directories are made while both are open: forget this
	 * directory's files as it closes. */
	while (u->nlinks > first)
		free(u->links[--u->nlinks].name);
	return r;
}

struct unsq_fs {
	sqfs_file_t *file;
	sqfs_compressor_t *cmp;
	sqfs_id_table_t *ids;
	sqfs_dir_reader_t *dir;
	sqfs_tree_node_t *root;
};

static void unsq_fs_close(struct unsq_fs *fs, struct unsq *u)
{
	sqfs_dir_tree_destroy(fs->root);
	if (u->data)
		sqfs_destroy(u->data);
	if (fs->dir)
		sqfs_destroy(fs->dir);
	if (fs->ids)
		sqfs_destroy(fs->ids);
	if (fs->cmp)
		sqfs_destroy(fs->cmp);
	if (fs->file)
		sqfs_destroy(fs->file);
}

static int unsq_open(const char *path, struct unsq_fs *fs, struct unsq *u, alps_error **err)
{
	sqfs_super_t super;
	sqfs_compressor_config_t cfg;
	int r;
	fs->file = sqfs_open_file(path, SQFS_FILE_OPEN_READ_ONLY);
	if (!fs->file)
		return alps_fail_errno(err, "cannot open %s", path);
	if ((r = sqfs_super_read(&super, fs->file)) != 0)
		return alps_fail(err, ALPS_E_INVALID, "%s is not a squashfs file (%d)", path, r);
	if (sqfs_compressor_config_init(&cfg, super.compression_id, super.block_size,
					SQFS_COMP_FLAG_UNCOMPRESS) != 0 ||
	    sqfs_compressor_create(&cfg, &fs->cmp) != 0)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "%s: its compressor is not supported", path);
	if ((super.flags & SQFS_FLAG_COMPRESSOR_OPTIONS) &&
	    fs->cmp->read_options(fs->cmp, fs->file) != 0)
		return alps_fail(err, ALPS_E_INTEGRITY, "%s: bad compressor options", path);
	fs->ids = sqfs_id_table_create(0);
	fs->dir = sqfs_dir_reader_create(&super, fs->cmp, fs->file, 0);
	u->data = sqfs_data_reader_create(fs->file, super.block_size, fs->cmp, 0);
	if (!fs->ids || !fs->dir || !u->data)
		return alps_fail(err, ALPS_E_INTERNAL, "out of memory");
	if (sqfs_id_table_read(fs->ids, fs->file, &super, fs->cmp) != 0 ||
	    sqfs_data_reader_load_fragment_table(u->data, &super) != 0 ||
	    sqfs_dir_reader_get_full_hierarchy(fs->dir, fs->ids, NULL, 0, &fs->root) != 0)
		return alps_fail(err, ALPS_E_INTEGRITY, "%s: cannot read its tables", path);
	return 0;
}

static int run_unsquash(struct client *cl, int argc, char **argv)
{
	int orc = command_operands(cl, argc, argv, 2, 2,
				   "give a squashfs file and a new directory");
	if (orc >= 0)
		return orc;
	argv += optind - 1;     /* the operands as argv[1] and argv[2] */
	struct unsq_fs fs = { 0 };
	struct unsq u = { 0 };
	alps_error *err = NULL;
	int r = unsq_open(argv[1], &fs, &u, &err);
	if (r == 0 && mkdir(argv[2], 0700) < 0)
		r = alps_fail_errno(&err, "cannot create %s", argv[2]);
	_cleanup_close_ int top = r == 0 ? open(argv[2], O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
						O_CLOEXEC) : -1;
	if (r == 0 && top < 0)
		r = alps_fail_errno(&err, "cannot open %s", argv[2]);
	if (r == 0)
		r = unsq_dir(&u, top, fs.root, 0, &err);
	if (r == 0 && fchmod(top, fs.root->inode->base.mode & 01777) < 0)
		r = alps_fail_errno(&err, "cannot set the mode of %s", argv[2]);
	unsq_fs_close(&fs, &u);
	free(u.links);
	if (r < 0)
		return client_fail(cl, "unsquash", err);
	char a[32];
	if (cl->json)
		client_print_json(json_pack("{s:b, s:s, s:I, s:I, s:I}", "ok", 1, "dir", argv[2],
					    "files", (json_int_t)u.files, "bytes",
					    (json_int_t)u.bytes, "skipped", (json_int_t)u.skipped));
	else
		printf("%s: %llu files, %s%s\n", argv[2], (unsigned long long)u.files,
		       format_size(u.bytes, a, sizeof(a)),
		       u.skipped ? " (device nodes, fifos and sockets skipped)" : "");
	return EXIT_OK;
}

const struct command cmd_unsquash = {
	.name = "unsquash",
	.summary = "Unpack a squashfs file into a new directory (no daemon needed).",
	.usage = "FILE.sqsh DIR",
	.help = "  As you: owners and set-id bits are not restored; device nodes, fifos and\n"
		"  sockets are skipped; names with '/', '.' or '..' are refused.",
	.run = run_unsquash,
};
