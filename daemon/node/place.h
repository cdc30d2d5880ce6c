/* place.h: where the tasks of a job step run on this node.
 *
 * For N local tasks with G GPUs each, every local rank gets
 *   - its GPU(s), in the vendor's visible-device order: rank r has GPUs
 *     r*G .. r*G+G-1;
 *   - for each of its GPUs, the nearest high-speed NIC; NICs at the same
 *     distance are shared out so that ranks spread over them;
 *   - the cores local to its GPU(s), minus the reserved cores, split
 *     between the ranks that share that locality: masks never overlap;
 *     all hardware threads of each core, or only the first (hw_threads).
 *
 * G = 0 means "as many as fit": G = GPUs / N when N <= GPUs; with more
 * tasks than GPUs, consecutive ranks share a GPU (rank r uses GPU
 * r * GPUs / N); on a node without GPUs the ranks split all usable cores.
 *
 * Environment templates (topology.nic_env), one "VAR=template" each; the
 * template is text with placeholders:
 *   {index}     the local rank (0, 1, ...)
 *   {gpu}       the rank's GPU indexes, comma-separated ("0,1")
 *   {nic}       the rank's NIC: its network interface name if it has one
 *               (hsn0, ib0), else its RDMA device name (rdmap197s0)
 *   {nics}      all the rank's NICs (one per GPU, without repeats), by {nic}
 *   {nic_net}   the NIC's network interface name (for NCCL_SOCKET_IFNAME)
 *   {nic_rdma}  the NIC's RDMA device name (mlx5_0, for NCCL_IB_HCA)
 *   {nic_num}   the number that ends {nic} (hsn2 -> 2: FI_CXI_DEVICE=cxi{nic_num})
 *   {{ and }}   a literal brace
 * VAR is [A-Za-z_][A-Za-z0-9_]*.  A variable whose template uses a
 * placeholder without a value for that rank (no NIC, no GPU, a NIC without
 * RDMA name...) is left out rather than set empty, so a task never gets
 * NCCL_SOCKET_IFNAME="". */
#ifndef ALPS_PLACE_H
#define ALPS_PLACE_H

#include <hwloc.h>
#include <jansson.h>

#include "common/error.h"
#include "daemon/node/topology.h"

struct place_rank {
	unsigned rank;
	size_t *gpus;               /* owned: indexes in topology.gpus */
	size_t ngpus;
	size_t *nics;               /* owned: indexes in topology.nics, the rank's own first */
	size_t nnics;
	hwloc_bitmap_t cpuset;      /* owned: the CPUs it may run on */
	size_t ncores;
};

struct place_plan {
	const struct topology *topo;    /* borrowed: must outlive the plan */
	unsigned tasks;
	unsigned gpus_per_task;         /* as resolved; 0 when none or shared */
	bool gpus_shared;               /* more tasks than GPUs */
	struct place_rank *ranks;       /* owned: tasks of them */
};

/* Plan tasks ranks with gpus_per_task GPUs each (0: automatic, see
 * above).  Errors are ALPS_E_INVALID with a message that says what does
 * not fit, e.g. "8 tasks with 2 GPUs each need 16 GPUs; this node has 8". */
int place_plan_new(const struct topology *topo, unsigned tasks, unsigned gpus_per_task,
		   struct place_plan **out, alps_error **err);
void place_plan_free(struct place_plan *plan);

/* The plan as JSON (see doc/alps-topology.md); caller decrefs. */
json_t *place_plan_to_json(const struct place_plan *plan);

/* The environment of local rank `rank`: the vendor's visible-device
 * variable(s) and the expanded nic_env templates, as a NULL-terminated
 * array of "KEY=VALUE"; free with place_env_free().  NULL if rank is out
 * of range. */
char **place_plan_env(const struct place_plan *plan, unsigned rank);
void place_env_free(char **env);

/* Slurm's "mask_cpu:0x..,0x.." for --cpu-bind, ranks in order; caller frees. */
char *place_plan_cpu_bind(const struct place_plan *plan);

/* Check one "VAR=template" entry; ALPS_E_INVALID with a message if bad. */
int place_env_check(const char *entry, alps_error **err);

#endif
