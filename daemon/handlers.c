/* handlers.c: the table of operations (see handlers.h). */
#include <config.h>

#include "daemon/handlers.h"

static const struct handler handler_table[] = {
	{ ALPS__REQUEST__OP_HELLO, "hello", PRIV_USER, op_hello },
	{ ALPS__REQUEST__OP_STATUS, "status", PRIV_USER, op_status },
	{ ALPS__REQUEST__OP_PULL, "pull", PRIV_USER, op_pull },
	{ ALPS__REQUEST__OP_IMAGES, "images", PRIV_USER, op_images },
	{ ALPS__REQUEST__OP_INSPECT, "inspect", PRIV_USER, op_inspect },
	{ ALPS__REQUEST__OP_REMOVE, "rm", PRIV_ADMIN, op_remove },
	{ ALPS__REQUEST__OP_GC, "gc", PRIV_ADMIN, op_gc },
	{ ALPS__REQUEST__OP_PIN, "pin", PRIV_ADMIN, op_pin },
	{ ALPS__REQUEST__OP_DF, "df", PRIV_USER, op_df },
	/* Reads every layer: an admin's decision. */
	{ ALPS__REQUEST__OP_VERIFY, "verify", PRIV_ADMIN, op_verify },
	/* prepare and release check inside: users may 'alps run' their own. */
	{ ALPS__REQUEST__OP_PREPARE, "prepare", PRIV_USER, op_prepare },
	{ ALPS__REQUEST__OP_EXEC, "exec", PRIV_USER, op_exec },
	{ ALPS__REQUEST__OP_RELEASE, "release", PRIV_USER, op_release },
	{ ALPS__REQUEST__OP_JOBS, "jobs", PRIV_USER, op_jobs },
	/* The SPANK plugin in slurmstepd (root): a namespace fd for a task. */
	{ ALPS__REQUEST__OP_ATTACH, "attach", PRIV_ADMIN, op_attach },
	{ ALPS__REQUEST__OP_TOPOLOGY, "topology", PRIV_USER, op_topology },
	{ ALPS__REQUEST__OP_PLACE, "place", PRIV_USER, op_place },
	{ ALPS__REQUEST__OP_ENDPOINTS, "endpoints", PRIV_USER, op_endpoints },
};

const struct handler *handler_find(Alps__Request__OpCase op)
{
	for (size_t i = 0; i < ARRAY_SIZE(handler_table); i++)
		if (handler_table[i].op == op)
			return &handler_table[i];
	return NULL;
}
