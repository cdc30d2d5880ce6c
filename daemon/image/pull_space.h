/* pull_space.h: a pull and the store's file system: fail before the
 * download when the layers cannot fit, and say "no space left on device"
 * plainly when a write met a full disk anyway. */
#ifndef ALPS_DAEMON_IMAGE_PULL_SPACE_H
#define ALPS_DAEMON_IMAGE_PULL_SPACE_H

#include <stdint.h>

#include "common/error.h"

struct store;

/* need (compressed bytes of the layers to fetch: a squashfs is about as
 * large as its blob) must fit in the store's free space; else ENOSPC,
 * "no space left on device in DIR: need 48 MiB, 12 MiB free". */
int pull_space_check(struct store *st, uint64_t need, alps_error **err);
/* If *err is a full disk (ENOSPC, sqlite's "disk is full"), replace it
 * by that message (the original is logged). */
void pull_space_explain(struct store *st, uint64_t need, alps_error **err);

#endif
