/* fuzz_frame.c: libFuzzer target for what alpsd reads from its socket:
 * the frame decoder, then protobuf unpacking of each frame as a Request. */
#include <config.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto/alps.pb-c.h"
#include "proto/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		const uint8_t *payload;
		size_t len, used;
		int rc = frame_decode(data + off, size - off, 1 << 16, &payload, &len, &used);
		if (rc != FRAME_COMPLETE)
			break;
		Alps__Request *req = alps__request__unpack(NULL, len, payload);
		if (req) {
			/* What unpacks must pack again without trouble. */
			size_t n = alps__request__get_packed_size(req);
			uint8_t *buf = malloc(n ? n : 1);
			if (buf) {
				alps__request__pack(req, buf);
				free(buf);
			}
			alps__request__free_unpacked(req, NULL);
		}
		off += used;
	}
	return 0;
}
