/* fuzz_sif.c: libFuzzer target for the SIF parser (import_sif.c): the input
 * is a whole SIF file.  Any outcome is fine but a crash, a sanitizer
 * report or a found partition that does not lie inside the input. */
#include <config.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/error.h"
#include "daemon/image/import_sif.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sif_rootfs r;
	alps_error *err = NULL;
	if (sif_find_rootfs_mem(data, size, &r, &err) == 0) {
		if (r.size == 0 || r.offset > size || r.size > size - r.offset)
			abort();
	} else {
		alps_error_free(err);
	}
	return 0;
}
