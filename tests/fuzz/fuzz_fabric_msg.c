/* fuzz_fabric_msg.c: libFuzzer target for the fabric message decoder.
 *
 * Whatever bytes arrive, decoding must not crash, read out of bounds or
 * allocate; a datagram it accepts must re-encode to the same bytes (one
 * encoding per message, so nothing is silently dropped or reinterpreted),
 * and every string it hands out must be terminated inside its field. */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/node/fabric_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fabric_msg m;
	uint8_t again[FABRIC_MSG_MAX];
	const char *why = NULL;
	if (fabric_msg_decode(data, size, &m, &why) < 0) {
		if (!why)
			abort();
		return 0;
	}
	if (!memchr(m.node, '\0', sizeof(m.node)) || !memchr(m.job, '\0', sizeof(m.job)) ||
	    !memchr(m.reference, '\0', sizeof(m.reference)) || !memchr(m.digest, '\0', sizeof(m.digest)))
		abort();
	ssize_t n = fabric_msg_encode(&m, again, sizeof(again), NULL);
	if (n < 0 || (size_t)n != size || memcmp(again, data, size) != 0)
		abort();
	return 0;
}
