/* slurmenv.c: per-task Slurm variables (see slurmenv.h). */
#include <config.h>

#include <stdlib.h>

#include "common/hostlist.h"
#include "common/util.h"
#include "daemon/job/slurmenv.h"

uint32_t slurmenv_master_port(uint32_t job_id, uint32_t port_min, uint32_t port_max)
{
	if (port_max < port_min)
		return port_min;
	uint32_t size = port_max - port_min + 1;
	return port_min + job_id % size;
}

static void push(char ***v, size_t *n, char *kv)
{
	*v = xreallocarray(*v, *n + 2, sizeof(char *));
	(*v)[(*n)++] = kv;
	(*v)[*n] = NULL;
}

int slurmenv_task_env(const struct slurm_task *t, const struct slurmenv_conf *c, char ***out,
		      alps_error **err)
{
	*out = NULL;
	if (c->ranks && (t->ntasks == 0 || t->global_rank >= t->ntasks))
		return alps_fail(err, ALPS_E_INVALID, "task rank %u is not below the step's %u tasks",
				 (unsigned)t->global_rank, (unsigned)t->ntasks);
	char *master = NULL;
	if (c->master) {
		if (!t->nodelist || !*t->nodelist)
			return alps_fail(err, ALPS_E_INVALID,
					 "no node list for MASTER_ADDR (SLURM_STEP_NODELIST and "
					 "SLURM_JOB_NODELIST are empty)");
		master = hostlist_first(t->nodelist, err);
		if (!master)
			return alps_error_prefix(err, "MASTER_ADDR");
	}
	char **v = xcalloc(1, sizeof(char *));
	size_t n = 0;
	if (c->ranks) {
		push(&v, &n, xasprintf("RANK=%u", (unsigned)t->global_rank));
		push(&v, &n, xasprintf("LOCAL_RANK=%u", (unsigned)t->local_rank));
		push(&v, &n, xasprintf("WORLD_SIZE=%u", (unsigned)t->ntasks));
	}
	if (master) {
		push(&v, &n, xasprintf("MASTER_ADDR=%s", master));
		push(&v, &n, xasprintf("MASTER_PORT=%u", (unsigned)slurmenv_master_port(
								   t->job_id, c->port_min, c->port_max)));
		free(master);
	}
	*out = v;
	return 0;
}
