/* squash_bench: time squash_convert() on a layer file.
 *
 *	squash_bench [-z none|gzip|zstd] [-c zstd|gzip|xz|lz4] [-l level]
 *	             [-b block_size] [-t threads] [-n runs] LAYER OUT.sqfs
 *	squash_bench -d [-z none|gzip|zstd] LAYER
 *
 * Prints throughput against the compressed and the uncompressed size, the
 * output size and the diff_id.  OUT.sqfs is replaced on each run.  With -d,
 * only decompresses (the input side alone). */
#include <config.h>

#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "daemon/squash/squash.h"
#include "daemon/image/stream.h"

static ALPS_NORETURN void usage(void)
{
	fprintf(stderr, "usage: squash_bench [-z none|gzip|zstd] [-c compressor] [-l level] "
			"[-b block_size] [-t threads] [-n runs] LAYER OUT.sqfs\n"
			"       squash_bench -d [-z none|gzip|zstd] LAYER\n");
	exit(2);
}

static enum layer_compression parse_input(const char *s)
{
	if (strcmp(s, "gzip") == 0)
		return LAYER_COMPRESSION_GZIP;
	if (strcmp(s, "zstd") == 0)
		return LAYER_COMPRESSION_ZSTD;
	if (strcmp(s, "none") == 0)
		return LAYER_COMPRESSION_NONE;
	usage();
}

static int decompress_only(const char *in, enum layer_compression z)
{
	_cleanup_error_ alps_error *err = NULL;
	int fd = open(in, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(in);
		return -1;
	}
	_cleanup_stream_ struct stream *s = stream_decompress(stream_from_fd(fd), z, &err);
	_cleanup_free_ uint8_t *buf = xmalloc(1 << 20);
	uint64_t t0 = now_monotonic_ns();
	ssize_t n;
	while ((n = stream_read(s, buf, 1 << 20, &err)) > 0)
		;
	if (n < 0) {
		fprintf(stderr, "squash_bench: %s\n", err->msg);
		return -1;
	}
	double secs = (double)(now_monotonic_ns() - t0) / 1e9;
	printf("decompress %s: %.2f s, in %.1f MB/s, out %.1f MB/s\n", layer_compression_name(z),
	       secs, (double)stream_source_bytes(s) / secs / 1e6, (double)s->bytes / secs / 1e6);
	return 0;
}

static int run_once(const char *in, enum layer_compression z, const char *out,
		    const struct squash_opts *opts)
{
	_cleanup_error_ alps_error *err = NULL;
	int fd = open(in, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(in);
		return -1;
	}
	unlink(out);
	_cleanup_stream_ struct stream *s = stream_decompress(stream_from_fd(fd), z, &err);
	struct squash_result res;
	uint64_t t0 = now_monotonic_ns();
	if (!s || squash_convert(s, out, opts, &res, &err) < 0) {
		fprintf(stderr, "squash_bench: %s (%s)\n", err->msg, alps_code_name(err->code));
		return -1;
	}
	double secs = (double)(now_monotonic_ns() - t0) / 1e9;
	printf("%s level %d threads %u: %.2f s, in %.1f MB/s, tar %.1f MB/s, "
	       "in %llu tar %llu out %llu bytes, %llu entries %llu files, %s\n",
	       opts->compressor ? opts->compressor : "zstd", opts->level, opts->threads, secs,
	       (double)res.bytes_in / secs / 1e6, (double)res.tar_bytes / secs / 1e6,
	       (unsigned long long)res.bytes_in, (unsigned long long)res.tar_bytes,
	       (unsigned long long)res.out_bytes, (unsigned long long)res.entries,
	       (unsigned long long)res.files, res.diff_id);
	return 0;
}

int main(int argc, char **argv)
{
	struct squash_opts opts = { 0 };
	enum layer_compression z = LAYER_COMPRESSION_NONE;
	int runs = 1, c;
	bool only_decompress = false;
	while ((c = getopt(argc, argv, "dz:c:l:b:t:n:")) != -1) {
		switch (c) {
		case 'd': only_decompress = true; break;
		case 'z': z = parse_input(optarg); break;
		case 'c': opts.compressor = optarg; break;
		case 'l': opts.level = atoi(optarg); break;
		case 'b': opts.block_size = (unsigned)atoi(optarg); break;
		case 't': opts.threads = (unsigned)atoi(optarg); break;
		case 'n': runs = atoi(optarg); break;
		default: usage();
		}
	}
	if (only_decompress && argc - optind == 1)
		return decompress_only(argv[optind], z) < 0;
	if (argc - optind != 2)
		usage();
	for (int i = 0; i < runs; i++) {
		if (run_once(argv[optind], z, argv[optind + 1], &opts) < 0)
			return 1;
	}
	return 0;
}
