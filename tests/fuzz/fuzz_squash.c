/* fuzz_squash.c: libFuzzer target for the layer converter: the input is a
 * layer (a tar stream, gzip or zstd compressed if it starts like one, or
 * whatever the fuzzer makes of it) converted into a squashfs file under
 * small limits, then removed.  Any
 * outcome is fine but a crash, a sanitizer report, a leak or a hang; a
 * failed conversion must not leave its output behind. */
#include <config.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/error.h"
#include "daemon/squash/squash.h"
#include "daemon/image/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *out_path(void)
{
	static char path[128];
	if (!path[0]) {
		/* tmpfs when there is one: the fsync at the end is free there. */
		const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(path, sizeof(path), "%s/alps-fuzz-squash-%d.sqfs", dir, (int)getpid());
		unlink(path);
	}
	return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = out_path();
	struct squash_opts opts = {
		.compressor = "zstd",
		.level = 1,
		.block_size = 4096,
		/* Both the serial and the threaded block processor, which
		 * have separate error paths. */
		.threads = size % 3 == 0 ? 2 : 1,
		.max_entries = 4096,
		.max_tar_bytes = 16 << 20,
	};
	struct squash_result res;
	alps_error *err = NULL;
	/* Inputs that start like gzip or zstd go through that decoder. */
	enum layer_compression c = LAYER_COMPRESSION_NONE;
	if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b)
		c = LAYER_COMPRESSION_GZIP;
	else if (size >= 4 && data[0] == 0x28 && data[1] == 0xb5 && data[2] == 0x2f && data[3] == 0xfd)
		c = LAYER_COMPRESSION_ZSTD;
	struct stream *s = stream_decompress(stream_from_memory(data, size), c, &err);
	if (squash_convert(s, path, &opts, &res, &err) == 0) {
		unlink(path);
	} else {
		if (access(path, F_OK) == 0)
			abort();
		alps_error_free(err);
	}
	stream_close(s);
	return 0;
}
