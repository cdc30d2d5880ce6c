/* pull_space.c: see pull_space.h. */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/image/pull_space.h"
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
