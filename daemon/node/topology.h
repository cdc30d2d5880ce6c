/* topology.h: the node's hardware as alps needs it for placement.
 *
 * Loaded once at start-up (the live machine, or an hwloc XML file named in
 * the configuration: that is how tests run other machines' layouts) and
 * again on SIGHUP: load a new one, swap it in, drop the old.  A loaded
 * topology is immutable and shared by reference count: work that reads it
 * off the loop takes a reference (topology_ref) and drops it at its end.  The model is
 * plain C structs: packages, NUMA nodes, L3 groups, cores, GPUs (NVIDIA, AMD,
 * Intel, told apart by PCI vendor and class) and NICs (network and
 * OpenFabrics devices, one per PCI function), each with its PCI locality.
 *
 * Only NICs whose name matches a configured pattern (hsn*, cxi*, mlx5_*...)
 * are "high speed"; only those are ever nearest to a GPU, so a management
 * Ethernet port that happens to sit on a GPU's PCI switch is never chosen.
 *
 * Nearness is measured in the hwloc tree: the deeper the common ancestor of
 * two objects (PCI switch, host bridge, L3, NUMA node, package, machine),
 * the nearer they are. */
#ifndef ALPS_TOPOLOGY_H
#define ALPS_TOPOLOGY_H

#include <hwloc.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

struct config;

enum topology_vendor {
	TOPOLOGY_VENDOR_NVIDIA,
	TOPOLOGY_VENDOR_AMD,
	TOPOLOGY_VENDOR_INTEL,
};

enum topology_nic_kind {
	TOPOLOGY_NIC_NET,           /* has a network interface (hsn0, ib0) */
	TOPOLOGY_NIC_OPENFABRICS,   /* only an RDMA device (rdmap197s0) */
};

/* What the configuration decides; strings are borrowed from it only for
 * the duration of topology_load(), which copies what it keeps. */
struct topology_opts {
	const char *xml_path;                   /* NULL or "": the live machine */
	const char *const *nic_patterns;        /* fnmatch() patterns; none: built-in */
	size_t n_nic_patterns;
	const char *reserved_cores;             /* NULL, "none", "first-per-l3", cpu list */
	const char *hw_threads;                 /* NULL, "all" or "first" */
	const char *const *nic_env;             /* "VAR=template", see place.h */
	size_t n_nic_env;
};

struct topology_package {
	unsigned os_index;
	hwloc_bitmap_t cpuset;      /* owned */
};

struct topology_numa {
	unsigned os_index;
	uint64_t memory;            /* bytes local to the node */
	hwloc_bitmap_t cpuset;      /* owned */
};

struct topology_l3 {
	unsigned index;             /* hwloc logical index */
	hwloc_bitmap_t cpuset;      /* owned */
};

struct topology_core {
	unsigned os_index;          /* hwloc's core number (not unique across packages) */
	unsigned first_pu;          /* OS number of its first hardware thread */
	int l3;                     /* index in topology.l3, or -1 */
	int numa;                   /* OS index of its NUMA node, or -1 */
	bool reserved;              /* kept from jobs by topology.reserved_cores */
	hwloc_bitmap_t cpuset;      /* owned: all its hardware threads */
};

struct topology_gpu {
	enum topology_vendor vendor;
	unsigned index;             /* the vendor's visible-device index */
	char *name;                 /* owned: "rsmi0", "nvml3", "card1", or the PCI id */
	char pci_busid[16];         /* "0000:c1:00.0" */
	int numa;                   /* OS index of the nearest NUMA node, or -1 */
	hwloc_bitmap_t cpuset;      /* owned: the CPUs local to it */
	size_t *near_nics;          /* owned: indexes in topology.nics, nearest first */
	size_t n_near_nics;         /* high-speed NICs at the smallest distance */
	hwloc_obj_t obj;            /* its PCI device in topology.hw */
};

struct topology_nic {
	char *name;                 /* owned: the netdev name if any, else the RDMA name */
	enum topology_nic_kind kind;
	char *netdev;               /* owned, or NULL: "hsn0", "ib0" */
	char *rdma;                 /* owned, or NULL: "mlx5_0", "cxi0" */
	char pci_busid[16];         /* "" when not a PCI device */
	int numa;                   /* OS index of the nearest NUMA node, or -1 */
	bool high_speed;            /* a name matches a configured pattern */
	hwloc_bitmap_t cpuset;      /* owned: the CPUs local to it */
	hwloc_obj_t obj;            /* its PCI device (or OS device) in topology.hw */
};

struct topology {
	atomic_uint refs;           /* see topology_ref(); 1 when loaded */
	hwloc_topology_t hw;        /* owned */
	char *source;               /* owned: "live" or the XML path */
	bool first_thread_only;     /* hw_threads = "first" */
	char *reserved_spec;        /* owned: the reserved_cores setting */
	char **nic_env;             /* owned, NULL-terminated: "VAR=template" */

	struct topology_package *packages;
	size_t npackages;
	struct topology_numa *numas;
	size_t nnumas;
	struct topology_l3 *l3s;
	size_t nl3s;
	struct topology_core *cores;    /* in hwloc logical order */
	size_t ncores;
	struct topology_gpu *gpus;      /* by vendor, then index */
	size_t ngpus;
	struct topology_nic *nics;      /* by name, natural order (hsn2 < hsn10) */
	size_t nnics;
};

/* Options from the [topology] section; pointers borrow from cfg. */
struct topology_opts topology_opts_from_config(const struct config *cfg);

/* Load the topology and build the model.  Errors: ALPS_E_IO or
 * ALPS_E_NOT_FOUND when hwloc cannot load, ALPS_E_INVALID for a bad
 * option (unknown CPU in reserved_cores, bad nic_env template...). */
int topology_load(const struct topology_opts *opts, struct topology **out, alps_error **err);
/* Another reference (NULL-safe); any thread. */
struct topology *topology_ref(struct topology *topo);
/* Drop a reference (NULL-safe); the last one frees.  topology_free() is
 * the same, for the loader of one never shared. */
void topology_unref(struct topology *topo);
void topology_free(struct topology *topo);

/* The GPU with this vendor's visible index, or NULL. */
const struct topology_gpu *topology_gpu_by_index(const struct topology *topo,
						 enum topology_vendor vendor, unsigned index);
/* The NIC with this name (netdev or RDMA name), or NULL. */
const struct topology_nic *topology_nic_by_name(const struct topology *topo, const char *name);

/* The high-speed NICs nearest to obj, written to out (room for
 * topo->nnics); returns how many.  obj may be any object of topo->hw. */
size_t topology_nearest_nics(const struct topology *topo, hwloc_obj_t obj, size_t *out);

/* Number of cores not reserved. */
size_t topology_usable_cores(const struct topology *topo);

/* "nvidia", "amd", "intel". */
const char *topology_vendor_name(enum topology_vendor vendor);

/* The model as JSON (documented in doc/alps-topology.md); caller decrefs. */
json_t *topology_to_json(const struct topology *topo);

/* A cpuset as a list ("0-7,64-71"); caller frees. */
char *topology_cpulist(hwloc_const_bitmap_t set);

#endif
