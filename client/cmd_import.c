/* cmd_import.c: alps import FILE [--tag REF].
 *
 * The client opens FILE with the user's rights and passes the open file to
 * the daemon (SCM_RIGHTS): what the user cannot read fails here, and the
 * daemon never opens a path of the user's.  A directory (an OCI image
 * layout) is read here too, as the user, and streamed to the daemon as a
 * tar through a pipe; symbolic links are sent as links, never followed. */
#include <config.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/client.h"
#include "client/progress.h"

/* ---- a directory as a tar ---- */

struct dir_tar {
	char *root;             /* owned: DIR without trailing '/' */
	int fd;                 /* the pipe's write end; closed by the thread */
	bool gone;              /* the daemon stopped reading */
	char *error;            /* owned: why the tree could not be read */
};

static la_ssize_t dt_write(struct archive *a, void *arg, const void *buf, size_t len)
{
	struct dir_tar *t = arg;
	(void)a;
	/* A failed write would leave libarchive fatal: drop the rest. */
	if (!t->gone && write_all(t->fd, buf, len) < 0)
		t->gone = true;
	return (la_ssize_t)len;
}

static int dt_entry(struct dir_tar *t, struct archive *disk, struct archive *tar,
		    struct archive_entry *e)
{
	const char *path = archive_entry_pathname(e);
	size_t n = strlen(t->root);
	if (strncmp(path, t->root, n) != 0)
		return 0;
	path += n;
	while (*path == '/')
		path++;
	if (!*path)
		return 0;
	_cleanup_free_ char *rel = xstrdup(path);
	archive_entry_set_pathname(e, rel);
	if (archive_write_header(tar, e) < ARCHIVE_WARN)
		return -1;
	const void *buf;
	size_t len;
	la_int64_t off;
	int r = ARCHIVE_EOF;
	if (archive_entry_filetype(e) == AE_IFREG)
		while ((r = archive_read_data_block(disk, &buf, &len, &off)) == ARCHIVE_OK)
			if (archive_write_data(tar, buf, len) < 0)
				return -1;
	return r == ARCHIVE_EOF ? 0 : -1;
}

static void *dt_main(void *arg)
{
	struct dir_tar *t = arg;
	struct archive *disk = archive_read_disk_new(), *tar = archive_write_new();
	struct archive_entry *e = archive_entry_new();
	archive_read_disk_set_symlink_physical(disk);
	struct archive *bad = archive_write_set_format_pax_restricted(tar) != ARCHIVE_OK ||
					      archive_write_open(tar, t, NULL, dt_write, NULL) !=
						      ARCHIVE_OK
				      ? tar : NULL;
	if (!bad && archive_read_disk_open(disk, t->root) != ARCHIVE_OK)
		bad = disk;
	while (!bad && !t->gone) {
		int r = archive_read_next_header2(disk, e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN || archive_read_disk_descend(disk) < ARCHIVE_WARN)
			bad = disk;
		else if (dt_entry(t, disk, tar, e) < 0)
			bad = archive_errno(disk) ? disk : tar;
	}
	if (bad)
		t->error = xstrdup(archive_error_string(bad) ? archive_error_string(bad)
							     : "cannot read the directory");
	archive_write_close(tar);
	archive_entry_free(e);
	archive_read_free(disk);
	archive_write_free(tar);
	close(t->fd);
	return NULL;
}

/* ---- the request ---- */

struct import_view {
	struct client *cl;
	struct progress progress;
};

static void on_import_progress(const Alps__Response *resp, void *arg)
{
	struct import_view *v = arg;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_PULL_PROGRESS || v->cl->quiet)
		return;
	const Alps__PullProgress *pp = resp->pull_progress;
	if (v->cl->json)
		client_print_json_line(json_pack("{s:b, s:s, s:s, s:I, s:I}", "ok", 1, "event",
						 "progress", "phase", pp->phase, "bytes_done",
						 (json_int_t)pp->bytes_done, "bytes_total",
						 (json_int_t)pp->bytes_total));
	else
		progress_update(&v->progress, pp);
}

static int import_result(struct client *cl, const Alps__Response *resp)
{
	if (resp->status != ALPS__STATUS__OK)
		return client_report_response(cl, "import", resp);
	const Alps__ImportReply *r = resp->payload_case == ALPS__RESPONSE__PAYLOAD_IMPORT_REPLY
					     ? resp->import_reply : NULL;
	if (!r) {
		alps_error e = { ALPS_E_PROTOCOL, 0, (char *)"alpsd answered import without a result" };
		return client_report_error(cl, "import", &e);
	}
	if (cl->json) {
		client_print_json_line(json_pack("{s:s, s:b, s:s, s:s, s:s, s:i, s:I, s:b}", "event",
						 "done", "ok", 1, "reference", r->reference,
						 "digest", r->digest, "format", r->format,
						 "layer_count", (int)r->layers, "size",
						 (json_int_t)r->size, "private", r->private_));
	} else {
		char size[32];
		format_size(r->size, size, sizeof(size));
		printf("%s\n  digest %s, %s, %u layer%s, %s%s\n", r->reference, r->digest, r->format,
		       r->layers, r->layers == 1 ? "" : "s", size,
		       r->private_ ? ", private to you" : "");
	}
	return EXIT_OK;
}

/* FILE opened as the user: a file's fd, or a pipe a thread fills with
 * a tar of a directory (*th started). */
static int open_source(const char *path, int *fd, struct dir_tar *t, bool *dir, pthread_t *th,
		       alps_error **err)
{
	struct stat st;
	*fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (*fd < 0)
		return alps_fail_errno(err, "%s", path);
	if (fstat(*fd, &st) < 0)
		return alps_fail_errno(err, "%s", path);
	*dir = S_ISDIR(st.st_mode);
	if (!*dir)
		return S_ISREG(st.st_mode) ? 0 : alps_fail(err, ALPS_E_INVALID, "%s: not a file "
							    "or a directory", path);
	close(*fd);
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return alps_fail_errno(err, "pipe");
	*t = (struct dir_tar){ .root = xstrdup(path), .fd = p[1] };
	size_t n = strlen(t->root);
	while (n > 1 && t->root[n - 1] == '/')
		t->root[--n] = '\0';
	*fd = p[0];
	if (pthread_create(th, NULL, dt_main, t) != 0) {
		close(p[1]);
		free(t->root);
		t->root = NULL;
		return alps_fail(err, ALPS_E_INTERNAL, "cannot start a thread");
	}
	return 0;
}

static int do_import(struct client *cl, const char *path, const char *tag)
{
	alps_error *err = NULL;
	struct dir_tar t = { 0 };
	pthread_t th;
	bool dir = false;
	int fd = -1;
	/* The daemon may stop reading early (a bad archive): EPIPE, not death. */
	signal(SIGPIPE, SIG_IGN);
	if (open_source(path, &fd, &t, &dir, &th, &err) < 0 || client_connect(cl, &err) < 0) {
		if (fd >= 0)
			close(fd);
		if (dir && t.root) {
			pthread_join(th, NULL);
			free(t.error);
			free(t.root);
		}
		return client_fail(cl, "import", err);
	}
	Alps__ImportRequest ir = ALPS__IMPORT_REQUEST__INIT;
	ir.tag = (char *)(tag ? tag : "");
	ir.source = (char *)path;
	ir.from_directory = dir;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_IMPORT_IMAGE;
	req.import_image = &ir;
	struct import_view view = { .cl = cl };
	progress_init(&view.progress, !cl->json && !cl->quiet);
	Alps__Response *resp = wire_call(&cl->wire, &req, &fd, 1, on_import_progress, &view, -1,
					 &err);
	close(fd);              /* a writer still going gets EPIPE and stops */
	progress_finish(&view.progress);
	if (dir) {
		pthread_join(th, NULL);
		if (t.error && !t.gone && resp && resp->status != ALPS__STATUS__OK)
			fprintf(stderr, "alps import: reading %s: %s\n", path, t.error);
		free(t.error);
		free(t.root);
	}
	if (!resp)
		return client_fail(cl, "import", err);
	int rc = import_result(cl, resp);
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

static int run_import(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tag", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *tag = NULL;
	int opt;
	cl->stream = cl->json;
	while ((opt = command_getopt(cl, argc, argv, "t:q", opts)) != -1) {
		switch (opt) {
		case 't': tag = optarg; break;
		case 'q': cl->quiet = true; break;
		default: return command_opt_exit(opt);
		}
	}
	cl->stream = cl->json;
	if (optind + 1 != argc)
		return usage_error(cl, "give exactly one file or directory to import");
	int rc = EXIT_OK;
	_cleanup_free_ char *ref = tag ? client_image_ref(cl, tag, &rc) : NULL;
	if (tag && !ref)
		return rc;
	return do_import(cl, argv[optind], ref);
}

const struct command cmd_import = {
	.name = "import",
	.summary = "Import an image from a file: docker save, OCI layout, SIF or squashfs.",
	.usage = "[--tag REF] [--quiet] FILE|DIR",
	.help = "  -t, --tag REF   the image's name (default: the archive's own name, if any)\n"
		"  -q, --quiet     no progress\n"
		"FILE is a 'docker save' archive, an OCI image layout (a directory or a tar of\n"
		"one), a Singularity/Apptainer SIF file (its primary squashfs partition) or a\n"
		"squashfs file.  It is read with your rights; the image is yours only unless\n"
		"an admin imports it.\n",
	.run = run_import,
};
