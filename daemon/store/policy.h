/* policy.h: the cache policy of the store as the daemon applies it: the
 * limit store.max_size (bytes, or a percentage of the store's file system)
 * and the low-water mark store.low_water that an eviction goes down to,
 * applied before a pull that would cross the limit (image/pull.c), on a
 * timer (store.gc_interval) and by `alps gc` (ops/op_cache.c). */
#ifndef ALPS_STORE_POLICY_H
#define ALPS_STORE_POLICY_H

#include <stdint.h>

#include "common/error.h"

struct config;
struct store;

/* What the policy needs from the configuration, copied on the loop: a
 * reload frees the config a worker would otherwise read. */
struct cache_policy {
	int64_t max_size;       /* as config.h has it */
	int64_t low_water_pct;
};

void cache_policy_from(struct cache_policy *p, const struct config *c);
/* The limit in bytes (0: none) and the low-water mark.  Blocking
 * (statvfs for a percentage): workers and pull threads only. */
int cache_limits(struct store *s, const struct cache_policy *p, uint64_t *limit,
		 uint64_t *low_water, alps_error **err);

#endif
