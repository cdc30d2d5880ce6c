/* pull_space.h: a pull and the store's room: admission under
 * store.max_size; fail before the download when the layers cannot fit, and say "no space left on device"
 * plainly when a write met a full disk anyway. */
#ifndef ALPS_DAEMON_IMAGE_PULL_SPACE_H
#define ALPS_DAEMON_IMAGE_PULL_SPACE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

struct cache_policy;
struct manifest;
struct store;

/* A pull's admission under store.max_size (the pull thread's). */
struct pull_admission {
	bool held;              /* every layer of the manifest held (store_layer_hold) */
	uint64_t reserved;      /* bytes reserved with store_admit */
	uint64_t need;          /* compressed bytes of the layers the store lacks */
};

/* Before any download: hold the manifest's layers (an eviction to make
 * room must not take one the pull reuses), count what the store lacks,
 * and make room under the limit or fail, saying how much the pull needs
 * and what stays.  pull_admit_end() undoes it, whatever the outcome. */
int pull_admit(struct store *st, const struct manifest *m, const struct cache_policy *policy,
	       struct pull_admission *a, alps_error **err);
void pull_admit_end(struct store *st, const struct manifest *m, struct pull_admission *a);

/* need (compressed bytes of the layers to fetch: a squashfs is about as
 * large as its blob) must fit in the store's free space; else ENOSPC,
 * "no space left on device in DIR: need 48 MiB, 12 MiB free". */
int pull_space_check(struct store *st, uint64_t need, alps_error **err);
/* If *err is a full disk (ENOSPC, sqlite's "disk is full"), replace it
 * by that message (the original is logged). */
void pull_space_explain(struct store *st, uint64_t need, alps_error **err);

#endif
