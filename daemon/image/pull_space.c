/* pull_space.c: see pull_space.h. */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/image/manifest.h"
#include "daemon/image/pull_space.h"
#include "daemon/store/policy.h"
#include "daemon/store/store.h"

static int no_space(struct store *st, uint64_t need, uint64_t avail, alps_error **err)
{
	char n[32], a[32];
	format_size(need, n, sizeof(n));
	format_size(avail, a, sizeof(a));
	alps_error *e = NULL;
	alps_fail(&e, ALPS_E_IO, "no space left on device in %s: need %s, %s free",
		  store_dir(st), n, a);
	e->errnum = ENOSPC;     /* without strerror() appended: the message says it */
	if (err && !*err)
		*err = e;
	else
		alps_error_free(e);
	return -1;
}

int pull_space_check(struct store *st, uint64_t need, alps_error **err)
{
	uint64_t size = 0, avail = 0;
	if (store_fs_usage(st, &size, &avail, err) < 0)
		return -1;
	return need > avail ? no_space(st, need, avail, err) : 0;
}

void pull_space_explain(struct store *st, uint64_t need, alps_error **err)
{
	const alps_error *e = *err;
	uint64_t size = 0, avail = 0;
	if (!e || (e->errnum != ENOSPC && !strstr(e->msg, "No space left on device") &&
		   !strstr(e->msg, "disk is full")))
		return;
	if (store_fs_usage(st, &size, &avail, NULL) < 0)
		return;
	_cleanup_free_ char *cause = log_escape(e->msg, 300);
	log_warn("%s", cause);
	alps_error *plain = NULL;
	no_space(st, need, avail, &plain);
	alps_error_free(*err);
	*err = plain;
}

/* ---- admission under store.max_size ---- */

static bool layer_seen(const struct manifest *m, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (strcmp(m->layers[j].desc.digest, m->layers[i].desc.digest) == 0)
			return true;
	return false;
}

/* Bytes of the layers the store lacks, as the registry sizes them (the
 * squashfs is about as large as a compressed blob).  Every layer is held
 * first: an eviction to make room must not take one this pull reuses. */
static int admit_need(struct store *st, const struct manifest *m, struct pull_admission *a,
		      uint64_t *need, alps_error **err)
{
	int64_t hits = 0, misses = 0;
	*need = 0;
	for (size_t i = 0; i < m->nlayers; i++)
		if (store_layer_hold(st, m->layers[i].desc.digest, err) < 0) {
			while (i-- > 0)
				store_layer_release(st, m->layers[i].desc.digest);
			return -1;
		}
	a->held = true;
	for (size_t i = 0; i < m->nlayers; i++) {
		struct store_layer *have = NULL;
		if (layer_seen(m, i))
			continue;
		if (store_layer_get(st, m->layers[i].desc.digest, &have, err) == 0) {
			store_layer_free(have);
			hits++;
			continue;
		}
		if ((*err)->code != ALPS_E_NOT_FOUND)
			return -1;
		alps_error_free(*err);
		*err = NULL;
		*need += m->layers[i].desc.size;
		misses++;
	}
	/* For alps df; a counter that fails to count fails no pull. */
	alps_error *e = NULL;
	if (store_stat_bump(st, "layer_hits", hits, &e) < 0 ||
	    store_stat_bump(st, "layer_misses", misses, &e) < 0) {
		log_warn("%s", e->msg);
		alps_error_free(e);
	}
	return 0;
}

/* Before any download: make room under the limit or fail, saying how much
 * the pull needs and what stays. */
int pull_admit(struct store *st, const struct manifest *m, const struct cache_policy *policy,
	       struct pull_admission *a, alps_error **err)
{
	uint64_t limit = 0, low = 0, need = 0;
	if (cache_limits(st, policy, &limit, &low, err) < 0 || admit_need(st, m, a, &need, err) < 0)
		return -1;
	a->need = need;
	if (need > 0 && pull_space_check(st, need, err) < 0)
		return -1;
	if (limit == 0 || need == 0)
		return 0;
	if (store_admit(st, need, limit, low, err) < 0)
		return -1;
	a->reserved = need;
	return 0;
}

void pull_admit_end(struct store *st, const struct manifest *m, struct pull_admission *a)
{
	if (a->held)
		for (size_t i = 0; i < m->nlayers; i++)
			store_layer_release(st, m->layers[i].desc.digest);
	a->held = false;
	store_admit_end(st, a->reserved);
	a->reserved = 0;
}
