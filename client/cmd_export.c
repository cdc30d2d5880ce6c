/* cmd_export.c: alps export, an image of the node's store as one squashfs
 * file (for enroot, Apptainer, uenv tools).
 *
 * The file is created here, as the user (O_EXCL: an existing file is never
 * overwritten), and passed open to alpsd, which writes it: the daemon never
 * opens a path for the user.  When the export fails or is interrupted, the
 * file is removed. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client.h"

/* The file this run created, for the signal handler to remove. */
static const char *partial;

static void on_signal(int sig)
{
	if (partial)
		unlink(partial);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void catch_signals(const char *path)
{
	partial = path;
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE };
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		signal(sigs[i], path ? on_signal : SIG_DFL);
}

struct export_view {
	struct client *cl;
	bool shown;             /* a progress line is on stderr */
};

static void on_export_progress(const Alps__Response *resp, void *arg)
{
	struct export_view *v = arg;
	if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_EXPORT_REPLY || v->cl->quiet ||
	    v->cl->json || !isatty(STDERR_FILENO))
		return;
	const Alps__ExportReply *r = resp->export_reply;
	char a[32], b[32];
	unsigned pct = r->bytes_total ? (unsigned)(r->bytes_done * 100 / r->bytes_total) : 0;
	fprintf(stderr, "\rexporting: %s of %s (%u%%)   ", format_size(r->bytes_done, a, sizeof(a)),
		format_size(r->bytes_total, b, sizeof(b)), pct);
	v->shown = true;
}

static void export_print(struct client *cl, const char *file, const Alps__ExportReply *r)
{
	if (cl->json) {
		client_print_json(json_pack(
			"{s:b, s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:i}", "ok", 1,
			"file", file, "digest", r->digest, "layer_count", (int)r->layers, "entries",
			(json_int_t)r->entries, "files", (json_int_t)r->files, "file_bytes",
			(json_int_t)r->bytes_total, "blocks_copied", (json_int_t)r->blocks_copied,
			"blocks_recompressed", (json_int_t)r->blocks_recompressed, "bytes",
			(json_int_t)r->size, "compressor", r->compressor, "block_size",
			(int)r->block_size));
		return;
	}
	if (cl->quiet)
		return;
	char a[32];
	printf("%s: %s, %u layers, %llu entries, %s (%s, %u KiB blocks; %llu blocks copied, "
	       "%llu recompressed)\n", file, r->digest, r->layers, (unsigned long long)r->entries,
	       format_size(r->size, a, sizeof(a)), r->compressor, r->block_size / 1024,
	       (unsigned long long)r->blocks_copied, (unsigned long long)r->blocks_recompressed);
}

static int export_call(struct client *cl, Alps__ExportRequest *x, int fd, const char *file)
{
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_EXPORT;
	req.export = x;
	alps_error *err = NULL;
	if (client_connect(cl, &err) < 0)
		return client_fail(cl, "export", err);
	struct export_view v = { .cl = cl };
	Alps__Response *resp = wire_call(&cl->wire, &req, &fd, 1, on_export_progress, &v, -1, &err);
	if (v.shown)
		fprintf(stderr, "\n");
	if (!resp)
		return client_fail(cl, "export", err);
	int rc;
	if (resp->status != ALPS__STATUS__OK) {
		rc = client_report_response(cl, "export", resp);
	} else if (resp->payload_case != ALPS__RESPONSE__PAYLOAD_EXPORT_REPLY) {
		alps_error e = { ALPS_E_PROTOCOL, 0, (char *)"alpsd answered export without a result" };
		rc = client_report_error(cl, "export", &e);
	} else {
		export_print(cl, file, resp->export_reply);
		rc = EXIT_OK;
	}
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

/* Read and write: libsquashfs reads back what it wrote to deduplicate. */
static int export_to(struct client *cl, Alps__ExportRequest *x, const char *file)
{
	int fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0644);
	if (fd < 0) {
		alps_error *err = NULL;
		alps_fail_errno(&err, "cannot create %s", file);
		return client_fail(cl, "export", err);
	}
	catch_signals(file);
	int rc = export_call(cl, x, fd, file);
	close(fd);
	if (rc != EXIT_OK && unlink(file) < 0)
		fprintf(stderr, "alps export: cannot remove %s: %s\n", file, strerror(errno));
	catch_signals(NULL);
	return rc;
}

static int run_export(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "compressor", required_argument, NULL, 'c' },
		{ "recompress", no_argument, NULL, 'R' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	Alps__ExportRequest x = ALPS__EXPORT_REQUEST__INIT;
	int opt;
	while ((opt = command_getopt(cl, argc, argv, "c:q", opts)) != -1) {
		switch (opt) {
		case 'c': x.compressor = optarg; break;
		case 'R': x.recompress = true; break;
		case 'q': cl->quiet = true; break;
		default: return command_opt_exit(opt);
		}
	}
	if (optind + 2 != argc)
		return usage_error(cl, "give an image and the squashfs file to write");
	int rc = EXIT_OK;
	_cleanup_free_ char *ref = client_image_ref(cl, argv[optind], &rc);
	if (!ref)
		return rc;
	x.reference = ref;
	return export_to(cl, &x, argv[optind + 1]);
}

const struct command cmd_export = {
	.name = "export",
	.summary = "Write an image of the node's store as one squashfs file.",
	.usage = "[--compressor NAME] [--recompress] [--quiet] IMAGE FILE.sqsh",
	.help = "  -c, --compressor NAME  zstd, gzip, xz or lz4 (default: the layers')\n"
		"      --recompress       compress every block again, even where the layers'\n"
		"                         compressed blocks could be copied (for benchmarks)\n"
		"  -q, --quiet            no progress, no summary\n"
		"The layers are merged as a job sees them (whiteouts applied) into FILE.sqsh,\n"
		"which must not exist; it is created as you, and removed if the export fails.\n"
		"For enroot create, apptainer, squashfuse or an EDF.\n",
	.run = run_export,
};
