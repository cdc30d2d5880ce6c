/* slurmenv.h: the per-task variables a Slurm task gets in its container.
 *
 * Frameworks (PyTorch's torchrun-less launch, DeepSpeed, Lightning) read
 * RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; under Slurm
 * they are derived from what slurmstepd knows about the task (its ids come
 * from Slurm, not from the task's environment, which the user controls).
 *
 * MASTER_ADDR is the first host of the step's node list (rank 0 runs
 * there under every distribution Slurm offers for block and cyclic).
 * MASTER_PORT is a function of the job id alone, so every node of a job
 * computes the same port without talking to the others, and two jobs on a
 * node get different ports unless their ids are equal modulo the range's
 * size. */
#ifndef ALPS_SLURMENV_H
#define ALPS_SLURMENV_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

struct slurm_task {
	uint32_t job_id;
	uint32_t local_rank;
	uint32_t global_rank;
	uint32_t ntasks;
	const char *nodelist;   /* the step's (or job's) hostlist expression */
};

struct slurmenv_conf {
	bool ranks;             /* RANK, LOCAL_RANK, WORLD_SIZE */
	bool master;            /* MASTER_ADDR, MASTER_PORT */
	uint32_t port_min, port_max;
};

/* The port of a job: port_min + job_id mod the range's size. */
uint32_t slurmenv_master_port(uint32_t job_id, uint32_t port_min, uint32_t port_max);

/* The variables as "KEY=VALUE", NULL-terminated (edf_strv_free).  A task
 * whose ranks do not fit (global_rank >= ntasks) or whose node list does
 * not parse is an error naming what. */
int slurmenv_task_env(const struct slurm_task *t, const struct slurmenv_conf *c, char ***out,
		      alps_error **err);

#endif
