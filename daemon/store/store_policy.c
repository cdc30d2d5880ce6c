/* store_policy.c: see policy.h. */
#include <config.h>

#include "daemon/settings.h"
#include "daemon/store/policy.h"
#include "daemon/store/store.h"

int cache_limits(struct store *s, const struct cache_policy *p, uint64_t *limit,
		 uint64_t *low_water, alps_error **err)
{
	if (store_limit_bytes(s, p->max_size, limit, err) < 0)
		return -1;
	*low_water = *limit / 100 * (uint64_t)p->low_water_pct +
		     *limit % 100 * (uint64_t)p->low_water_pct / 100;
	return 0;
}

void cache_policy_from(struct cache_policy *p, const struct config *c)
{
	p->max_size = c->max_size;
	p->low_water_pct = c->low_water_pct;
}
