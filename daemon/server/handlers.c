/* handlers.c: the table of operations (see handlers.h). */
#include <config.h>

#include "daemon/server/handlers.h"

static const struct handler *const handler_table[] = {
	&handler_hello,
	&handler_status,
	&handler_pull,
	&handler_images,
	&handler_inspect,
	&handler_remove,
	&handler_gc,
	&handler_pin,
	&handler_df,
	&handler_verify,
	&handler_prepare,
	&handler_exec,
	&handler_release,
	&handler_jobs,
	&handler_attach,
	&handler_topology,
	&handler_place,
	&handler_endpoints,
	&handler_import,
	&handler_export,
	&handler_metrics,
	&handler_outdated,
	&handler_resolve,
};

const struct handler *handler_find(Alps__Request__OpCase op)
{
	for (size_t i = 0; i < ARRAY_SIZE(handler_table); i++)
		if (handler_table[i]->op == op)
			return handler_table[i];
	return NULL;
}
