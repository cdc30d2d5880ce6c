/* store_gc.c: time the store's collection of many images.
 *
 *	tests/bench/store_gc [IMAGES]       (default 1000)
 *
 * Builds a store in a temp directory with IMAGES images of 4 layers each:
 * a base layer shared by all, one shared by groups of ten, two of their
 * own (4 KiB files), every image with its own last use.  Then times a dry
 * run to nothing, an eviction down to half the store (least recently used
 * first), and a collection of the rest, and prints one line per step.
 * Built with the tests (make tests/bench/store_gc), not run by them. */
#include <config.h>

#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/store/store.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, alps_error *err)
{
	fprintf(stderr, "store_gc: %s: %s\n", what, err ? err->msg : "failed");
	exit(1);
}

static void mkdigest(char out[80], unsigned seed)
{
	snprintf(out, 80, "sha256:%08x%056x", seed, 0u);
}

static void add_layer(struct store *s, unsigned seed)
{
	char digest[80], buf[4096];
	alps_error *err = NULL;
	mkdigest(digest, seed);
	_cleanup_free_ char *tmp = store_tmp_path(s);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	memset(buf, 0, sizeof(buf));
	memcpy(buf, &seed, sizeof(seed));
	if (fd < 0 || write_all(fd, buf, sizeof(buf)) < 0 || close(fd) < 0)
		die("writing a layer", NULL);
	struct store_layer_info info = { .digest = digest, .media_type = "x", .compressed_size = 1 };
	if (store_layer_commit(s, tmp, &info, NULL, &err) < 0)
		die("committing a layer", err);
}

static void add_image(struct store *s, unsigned i)
{
	char digest[80], config[80], l[4][80], tag[64];
	const char *lp[4] = { l[0], l[1], l[2], l[3] };
	alps_error *err = NULL;
	mkdigest(digest, 0x10000000u + i);
	mkdigest(config, 0x20000000u + i);
	mkdigest(l[0], 1);
	mkdigest(l[1], 0x100 + i / 10);
	mkdigest(l[2], 0x40000000u + 2 * i);
	mkdigest(l[3], 0x40000000u + 2 * i + 1);
	snprintf(tag, sizeof(tag), "bench.example/img%u:1", i);
	struct store_image_rec rec = { .digest = digest, .config_digest = config,
				       .platform = "linux/amd64", .manifest_json = "{}",
				       .config_json = "{}" };
	struct store_origin from = { .origin = "bench.example/x", .uid = STORE_PUBLIC };
	if (store_image_commit(s, &rec, lp, 4, tag, &from, &err) < 0)
		die("committing an image", err);
	if (store_image_touch(s, digest, &err) < 0)
		die("touching an image", err);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void step(struct store *s, const char *what, const struct store_gc_opts *o)
{
	struct store_gc_report rep;
	alps_error *err = NULL;
	double t0 = now_s();
	if (store_collect_images(s, o, &rep, &err) < 0)
		die(what, err);
	double t = now_s() - t0;
	printf("%-28s %8.1f ms  %5u images %6u layers  %8" PRIu64 " -> %8" PRIu64 " bytes\n",
	       what, t * 1e3, rep.removed.images, rep.removed.layers, rep.used_before,
	       rep.used_after);
	store_gc_report_clear(&rep);
}

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 1000;
	char dir[] = "/tmp/alps-bench-gc-XXXXXX";
	struct store *s = NULL;
	alps_error *err = NULL;
	log_init("store_gc", LOG_LVL_ERROR, false);
	if (n == 0 || !mkdtemp(dir) || store_open(dir, &s, &err) < 0)
		die("opening a store", err);
	double t0 = now_s();
	add_layer(s, 1);
	for (unsigned i = 0; i < n; i++) {
		if (i % 10 == 0)
			add_layer(s, 0x100 + i / 10);
		add_layer(s, 0x40000000u + 2 * i);
		add_layer(s, 0x40000000u + 2 * i + 1);
		add_image(s, i);
	}
	printf("%-28s %8.1f ms  %5u images\n", "filling", (now_s() - t0) * 1e3, n);
	struct store_usage u;
	if (store_df(s, &u, &err) < 0)
		die("df", err);
	struct store_gc_opts dry = { .target = 0, .dry_run = true };
	struct store_gc_opts half = { .target = u.total_bytes / 2 };
	struct store_gc_opts all = { .target = 0 };
	step(s, "dry run to nothing", &dry);
	step(s, "evict down to half", &half);
	step(s, "collect everything", &all);
	store_close(s);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
