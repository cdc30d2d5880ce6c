/* test_topology.c: the topology model and placement, on real machines'
 * layouts (hwloc XML in tests/data/topologies, see SOURCES.md there).
 *
 * Every expected value below was worked out by hand from the XML (which
 * PCI bus a device is on, which L3/NUMA/package its host bridge hangs
 * from) and from what sites document for those nodes; none was pasted
 * from the program's output. */
#include <config.h>

#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "daemon/settings.h"
#include "daemon/node/place.h"
#include "daemon/node/topology.h"

#define TIOGA "mpibind-eas-tioga.xml"
#define LASSEN "mpibind-coral-lassen.xml"
#define G4DN "mpibind-g4dnmetal.xml"
#define PASCAL "mpibind-cts1-pascal.xml"
#define CORONA "mpibind-epyc-corona-p2.xml"
#define EM64T "hwloc-32em64t-2n8c2t-pci-normalio.xml"
#define POWER8 "hwloc-power8gpudistances.xml"
#define DGX2 "hwloc-nvidiaDGX2.xml"

/* alpsd's default topology.nic_patterns. */
static const char *const default_patterns[] = { "hsn*", "hsi*", "cxi*", "mlx5_*", "ib*" };
static const char *const all_patterns[] = { "*" };
static const char *const efa_patterns[] = { "rdmap*" };

static const char *const test_env[] = {
	"NCCL_SOCKET_IFNAME={nic_net}",
	"FI_CXI_DEVICE=cxi{nic_num}",
	"NCCL_IB_HCA={nic_rdma}",
	"ALPS_NICS={nics}",
	"ALPS_LOCAL={index}:{gpu}",
	"BRACES={{{index}}}",
};

static char *data_path(const char *file)
{
	const char *src = getenv("ALPS_SRCDIR");
	return xasprintf("%s/tests/data/topologies/%s", src && *src ? src : ".", file);
}

static struct topology *try_load(const char *file, struct topology_opts o, alps_error **err)
{
	_cleanup_free_ char *path = file ? data_path(file) : NULL;
	struct topology *t = NULL;
	o.xml_path = path;
	if (!o.nic_patterns) {
		o.nic_patterns = default_patterns;
		o.n_nic_patterns = ARRAY_SIZE(default_patterns);
	}
	if (topology_load(&o, &t, err) < 0)
		return NULL;
	return t;
}

static struct topology *load(const char *file, struct topology_opts o)
{
	_cleanup_error_ alps_error *err = NULL;
	struct topology *t = try_load(file, o, &err);
	if (!t)
		fail_msg("loading %s: %s", file ? file : "live", err->msg);
	return t;
}

/* Every rank's CPUs are its own. */
static void assert_disjoint(const struct place_plan *p)
{
	hwloc_bitmap_t seen = hwloc_bitmap_alloc();
	for (unsigned r = 0; r < p->tasks; r++) {
		assert_false(hwloc_bitmap_intersects(seen, p->ranks[r].cpuset));
		assert_false(hwloc_bitmap_iszero(p->ranks[r].cpuset));
		hwloc_bitmap_or(seen, seen, p->ranks[r].cpuset);
	}
	hwloc_bitmap_free(seen);
}

static struct place_plan *plan(const struct topology *t, unsigned tasks, unsigned g)
{
	_cleanup_error_ alps_error *err = NULL;
	struct place_plan *p = NULL;
	if (place_plan_new(t, tasks, g, &p, &err) < 0)
		fail_msg("plan %u tasks x %u GPUs: %s", tasks, g, err->msg);
	assert_int_equal(p->tasks, tasks);
	assert_disjoint(p);
	return p;
}

static void assert_plan_fails(const struct topology *t, unsigned tasks, unsigned g,
			      const char *msg)
{
	_cleanup_error_ alps_error *err = NULL;
	struct place_plan *p = NULL;
	assert_int_equal(place_plan_new(t, tasks, g, &p, &err), -1);
	assert_null(p);
	assert_int_equal(err->code, ALPS_E_INVALID);
	assert_string_equal(err->msg, msg);
}

static void assert_cpus(const struct place_plan *p, unsigned rank, const char *expect)
{
	_cleanup_free_ char *s = topology_cpulist(p->ranks[rank].cpuset);
	assert_string_equal(s, expect);
}

/* The rank's NICs by name, comma-separated ("" for none). */
static void assert_nics(const struct place_plan *p, unsigned rank, const char *expect)
{
	char buf[256] = "";
	size_t len = 0;
	for (size_t i = 0; i < p->ranks[rank].nnics; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "",
					p->topo->nics[p->ranks[rank].nics[i]].name);
	assert_string_equal(buf, expect);
}

/* The visible indexes of the rank's GPUs, comma-separated. */
static void assert_gpus(const struct place_plan *p, unsigned rank, const char *expect)
{
	char buf[256] = "";
	size_t len = 0;
	for (size_t i = 0; i < p->ranks[rank].ngpus; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%u", i ? "," : "",
					p->topo->gpus[p->ranks[rank].gpus[i]].index);
	assert_string_equal(buf, expect);
}

static void assert_env(const struct place_plan *p, unsigned rank, const char *const *expect,
		       size_t n)
{
	char **env = place_plan_env(p, rank);
	assert_non_null(env);
	size_t i = 0;
	for (; env[i]; i++) {
		assert_true(i < n);
		assert_string_equal(env[i], expect[i]);
	}
	assert_int_equal(i, n);
	place_env_free(env);
}

static void assert_near(const struct topology *t, unsigned gpu, const char *expect)
{
	const struct topology_gpu *g = topology_gpu_by_index(t, t->gpus[0].vendor, gpu);
	char buf[256] = "";
	size_t len = 0;
	assert_non_null(g);
	for (size_t i = 0; i < g->n_near_nics; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "",
					t->nics[g->near_nics[i]].name);
	assert_string_equal(buf, expect);
}

static void assert_cpu_bind(const struct place_plan *p, const char *expect)
{
	_cleanup_free_ char *s = place_plan_cpu_bind(p);
	assert_string_equal(s, expect);
}

/* ---- HPE Cray EX235a (Tioga; same node as LUMI-G and Frontier) ----
 *
 * From the XML: each GCD's host bridge hangs from one L3 (CCD); the four
 * NUMA nodes are Group objects of two CCDs each.  GCD (rsmiN) -> bus,
 * L3, NUMA: 0 c1 L3#6 N3, 1 c6 L3#7 N3, 2 c9 L3#2 N1, 3 ce L3#3 N1,
 * 4 d1 L3#0 N0, 5 d6 L3#1 N0, 6 d9 L3#4 N2, 7 de L3#5 N2.  This is the
 * mapping LUMI documents (GCD 0,1 on NUMA 3, cores 48-63; GCD 2,3 on
 * NUMA 1; GCD 4,5 on NUMA 0; GCD 6,7 on NUMA 2).  The Slingshot NICs:
 * hsi0 c5 (host bridge of GCD1, NUMA 3), hsi1 cd (NUMA 1), hsi2 d5 (NUMA 0),
 * hsi3 dd (NUMA 2): one NIC per MI250X on the NUMA node of its two GCDs,
 * so GCD 0,1 pair with NUMA 3's NIC (hsi0; hsn0 on LUMI/Frontier, where
 * MPICH_OFI_NIC_POLICY=GPU makes the same choice).  ens2 (94:00.0) is the
 * management port, on NUMA 0. */

static void test_tioga_model(void **state ALPS_UNUSED)
{
	struct topology *t = load(TIOGA, (struct topology_opts){ 0 });
	static const char *const bus[] = { "0000:c1:00.0", "0000:c6:00.0", "0000:c9:00.0",
					   "0000:ce:00.0", "0000:d1:00.0", "0000:d6:00.0",
					   "0000:d9:00.0", "0000:de:00.0" };
	static const int numa[] = { 3, 3, 1, 1, 0, 0, 2, 2 };
	static const char *const cpus[] = { "48-55,112-119", "56-63,120-127", "16-23,80-87",
					    "24-31,88-95",   "0-7,64-71",     "8-15,72-79",
					    "32-39,96-103",  "40-47,104-111" };
	static const char *const near[] = { "hsi0", "hsi0", "hsi1", "hsi1",
					    "hsi2", "hsi2", "hsi3", "hsi3" };

	assert_int_equal(t->npackages, 1);
	assert_int_equal(t->nnumas, 4);
	assert_int_equal(t->nl3s, 8);
	assert_int_equal(t->ncores, 64);
	assert_int_equal(t->ngpus, 8);
	for (unsigned i = 0; i < 8; i++) {
		const struct topology_gpu *g = &t->gpus[i];
		_cleanup_free_ char *c = topology_cpulist(g->cpuset);
		_cleanup_free_ char *name = xasprintf("rsmi%u", i);
		assert_int_equal(g->vendor, TOPOLOGY_VENDOR_AMD);
		assert_int_equal(g->index, i);
		assert_string_equal(g->name, name);
		assert_string_equal(g->pci_busid, bus[i]);
		assert_int_equal(g->numa, numa[i]);
		assert_string_equal(c, cpus[i]);
		assert_near(t, i, near[i]);
	}

	/* NICs by name; the management port is not high speed. */
	assert_int_equal(t->nnics, 5);
	assert_string_equal(t->nics[0].name, "ens2");
	assert_false(t->nics[0].high_speed);
	assert_int_equal(t->nics[0].numa, 0);
	static const char *const nic_bus[] = { "0000:c5:00.0", "0000:cd:00.0", "0000:d5:00.0",
					       "0000:dd:00.0" };
	static const int nic_numa[] = { 3, 1, 0, 2 };
	for (unsigned i = 0; i < 4; i++) {
		const struct topology_nic *n = &t->nics[i + 1];
		_cleanup_free_ char *name = xasprintf("hsi%u", i);
		assert_string_equal(n->name, name);
		assert_int_equal(n->kind, TOPOLOGY_NIC_NET);
		assert_null(n->rdma);
		assert_true(n->high_speed);
		assert_string_equal(n->pci_busid, nic_bus[i]);
		assert_int_equal(n->numa, nic_numa[i]);
	}
	topology_free(t);
}

/* The pitfall: ens2 hangs from NUMA 0's Group, so it is exactly as near to
 * GCD 4 (on L3#0 of that NUMA node) as hsi2 (on L3#1).  Were every NIC a
 * candidate, GCD 4's rank would be given the management port. */
static void test_tioga_management_nic(void **state ALPS_UNUSED)
{
	struct topology *t = load(TIOGA, (struct topology_opts){
		.nic_patterns = all_patterns, .n_nic_patterns = 1 });
	assert_near(t, 4, "ens2,hsi2");
	assert_near(t, 5, "hsi2");  /* shares hsi2's host bridge: nearer */
	struct place_plan *p = plan(t, 8, 1);
	assert_nics(p, 4, "ens2");
	place_plan_free(p);
	topology_free(t);

	t = load(TIOGA, (struct topology_opts){ 0 });
	p = plan(t, 8, 1);
	assert_nics(p, 4, "hsi2");
	place_plan_free(p);
	topology_free(t);
}

/* LUMI's documented binding for 8 tasks, one GCD each, with
 * ROCR_VISIBLE_DEVICES=$SLURM_LOCALID and the first core of each CCD kept
 * for the OS (docs.lumi-supercomputer.eu, distribution-binding):
 * mask_cpu:fe000000000000,fe00000000000000,fe0000,fe000000,fe,fe00,
 * fe00000000,fe0000000000 (GCD 0 -> cores 49-55, GCD 1 -> 57-63, ...).
 * alps writes each mask with a 0x prefix, which Slurm accepts. */
static void test_tioga_8_tasks(void **state ALPS_UNUSED)
{
	struct topology *t = load(TIOGA, (struct topology_opts){
		.reserved_cores = "first-per-l3", .hw_threads = "first",
		.nic_env = test_env, .n_nic_env = ARRAY_SIZE(test_env) });
	assert_int_equal(topology_usable_cores(t), 56);
	struct place_plan *p = plan(t, 8, 1);
	assert_cpu_bind(p, "mask_cpu:0xfe000000000000,0xfe00000000000000,0xfe0000,0xfe000000,"
			   "0xfe,0xfe00,0xfe00000000,0xfe0000000000");
	static const char *const nics[] = { "hsi0", "hsi0", "hsi1", "hsi1",
					    "hsi2", "hsi2", "hsi3", "hsi3" };
	for (unsigned r = 0; r < 8; r++) {
		char gpu[4];
		snprintf(gpu, sizeof(gpu), "%u", r);
		assert_gpus(p, r, gpu);
		assert_nics(p, r, nics[r]);
		assert_int_equal(p->ranks[r].ncores, 7);
	}
	assert_cpus(p, 0, "49-55");
	assert_cpus(p, 4, "1-7");

	/* No RDMA name on Slingshot with hwloc 2.9: NCCL_IB_HCA is left out. */
	static const char *const env0[] = { "ROCR_VISIBLE_DEVICES=0", "NCCL_SOCKET_IFNAME=hsi0",
					    "FI_CXI_DEVICE=cxi0", "ALPS_NICS=hsi0",
					    "ALPS_LOCAL=0:0", "BRACES={0}" };
	static const char *const env5[] = { "ROCR_VISIBLE_DEVICES=5", "NCCL_SOCKET_IFNAME=hsi2",
					    "FI_CXI_DEVICE=cxi2", "ALPS_NICS=hsi2",
					    "ALPS_LOCAL=5:5", "BRACES={5}" };
	assert_env(p, 0, env0, ARRAY_SIZE(env0));
	assert_env(p, 5, env5, ARRAY_SIZE(env5));
	assert_null(place_plan_env(p, 8));
	place_plan_free(p);
	topology_free(t);

	/* All hardware threads: the SMT siblings are CPU n + 64. */
	t = load(TIOGA, (struct topology_opts){ .reserved_cores = "first-per-l3" });
	p = plan(t, 8, 0);
	assert_cpus(p, 0, "49-55,113-119");
	assert_cpus(p, 7, "41-47,105-111");
	place_plan_free(p);
	topology_free(t);
}

/* 1, 2 and 4 tasks: a rank gets consecutive GCDs (the two GCDs of one
 * MI250X for 4 tasks), all their CCDs' cores and one NIC per MI250X. */
static void test_tioga_1_2_4_tasks(void **state ALPS_UNUSED)
{
	struct topology *t = load(TIOGA, (struct topology_opts){
		.reserved_cores = "first-per-l3", .hw_threads = "first",
		.nic_env = test_env, .n_nic_env = ARRAY_SIZE(test_env) });

	for (unsigned g = 0; g <= 2; g += 2) {   /* automatic and explicit */
		struct place_plan *p = plan(t, 4, g);
		assert_int_equal(p->gpus_per_task, 2);
		assert_cpu_bind(p, "mask_cpu:0xfefe000000000000,0xfefe0000,0xfefe,0xfefe00000000");
		assert_gpus(p, 0, "0,1");
		assert_gpus(p, 3, "6,7");
		assert_cpus(p, 0, "49-55,57-63");
		assert_nics(p, 0, "hsi0");
		assert_nics(p, 1, "hsi1");
		assert_nics(p, 2, "hsi2");
		assert_nics(p, 3, "hsi3");
		place_plan_free(p);
	}

	struct place_plan *p = plan(t, 2, 0);
	assert_int_equal(p->gpus_per_task, 4);
	assert_gpus(p, 0, "0,1,2,3");
	assert_cpus(p, 0, "17-23,25-31,49-55,57-63");
	assert_nics(p, 0, "hsi0,hsi1");
	assert_gpus(p, 1, "4,5,6,7");
	assert_cpus(p, 1, "1-7,9-15,33-39,41-47");
	assert_nics(p, 1, "hsi2,hsi3");
	assert_cpu_bind(p, "mask_cpu:0xfefe0000fefe0000,0xfefe0000fefe");
	place_plan_free(p);

	p = plan(t, 1, 0);
	assert_int_equal(p->gpus_per_task, 8);
	assert_int_equal(p->ranks[0].ncores, 56);
	assert_cpus(p, 0, "1-7,9-15,17-23,25-31,33-39,41-47,49-55,57-63");
	assert_nics(p, 0, "hsi0,hsi1,hsi2,hsi3");
	static const char *const env[] = { "ROCR_VISIBLE_DEVICES=0,1,2,3,4,5,6,7",
					   "NCCL_SOCKET_IFNAME=hsi0", "FI_CXI_DEVICE=cxi0",
					   "ALPS_NICS=hsi0,hsi1,hsi2,hsi3",
					   "ALPS_LOCAL=0:0,1,2,3,4,5,6,7", "BRACES={0}" };
	assert_env(p, 0, env, ARRAY_SIZE(env));
	place_plan_free(p);

	/* One GCD asked for explicitly: only its CCD. */
	p = plan(t, 1, 1);
	assert_cpus(p, 0, "49-55");
	place_plan_free(p);
	topology_free(t);
}

/* More tasks than GCDs: consecutive ranks share one (rank r -> GCD r/2 for
 * 16 tasks) and split its CCD's 7 free cores, the first rank taking the odd
 * one; up to one core per task (56), and no further. */
static void test_tioga_more_tasks_than_gpus(void **state ALPS_UNUSED)
{
	struct topology *t = load(TIOGA, (struct topology_opts){
		.reserved_cores = "first-per-l3", .hw_threads = "first" });
	struct place_plan *p = plan(t, 16, 0);
	assert_true(p->gpus_shared);
	assert_int_equal(p->gpus_per_task, 0);
	assert_gpus(p, 0, "0");
	assert_gpus(p, 1, "0");
	assert_gpus(p, 15, "7");
	assert_cpus(p, 0, "49-52");
	assert_cpus(p, 1, "53-55");
	assert_cpus(p, 2, "57-60");
	assert_cpus(p, 3, "61-63");
	assert_cpus(p, 4, "17-20");
	for (unsigned r = 0; r < 4; r++)
		assert_nics(p, r, "hsi0");
	place_plan_free(p);

	p = plan(t, 56, 0);
	assert_cpus(p, 0, "49");
	assert_cpus(p, 6, "55");
	assert_cpus(p, 7, "57");
	place_plan_free(p);

	assert_plan_fails(t, 57, 0, "57 tasks need 57 cores; this node has 56 usable (64 cores, 8 reserved)");
	assert_plan_fails(t, 16, 1, "16 tasks with 1 GPU each need 16 GPUs; this node has 8");
	assert_plan_fails(t, 8, 2, "8 tasks with 2 GPUs each need 16 GPUs; this node has 8");
	assert_plan_fails(t, 0, 0, "the number of tasks must be at least 1");
	assert_plan_fails(t, 4000000000u, 4000000000u,
			  "4000000000 tasks with 4000000000 GPUs each need 16000000000000000000 GPUs; this node has 8");
	topology_free(t);

	/* Nothing reserved: 8 ranks per CCD, one core each. */
	t = load(TIOGA, (struct topology_opts){ 0 });
	p = plan(t, 64, 0);
	assert_cpus(p, 0, "48,112");
	assert_cpus(p, 63, "47,111");
	place_plan_free(p);
	assert_plan_fails(t, 65, 0, "65 tasks need 65 cores; this node has 64 usable (64 cores, 0 reserved)");
	topology_free(t);
}

static void test_tioga_reserved_list(void **state ALPS_UNUSED)
{
	struct topology *t = load(TIOGA, (struct topology_opts){ .reserved_cores = "0,8,16-17" });
	assert_int_equal(topology_usable_cores(t), 60);
	assert_true(t->cores[0].reserved);
	assert_true(t->cores[17].reserved);
	assert_false(t->cores[18].reserved);
	json_t *j = topology_to_json(t);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "reserved"), "cpus")),
			    "0,8,16-17,64,72,80-81");
	json_decref(j);
	/* GCD 2 is on CCD 2 (cores 16-23): two of them reserved. */
	struct place_plan *p = plan(t, 8, 1);
	assert_cpus(p, 2, "18-23,82-87");
	place_plan_free(p);
	topology_free(t);

	/* A second thread names its core: CPU 64 is core 0's sibling. */
	t = load(TIOGA, (struct topology_opts){ .reserved_cores = "64" });
	assert_true(t->cores[0].reserved);
	assert_int_equal(topology_usable_cores(t), 63);
	topology_free(t);
}

static void assert_load_fails(const char *file, struct topology_opts o, const char *msg)
{
	_cleanup_error_ alps_error *err = NULL;
	assert_null(try_load(file, o, &err));
	assert_non_null(err);
	assert_int_equal(err->code, ALPS_E_INVALID);
	assert_string_equal(err->msg, msg);
}

static void test_bad_options(void **state ALPS_UNUSED)
{
	assert_load_fails(TIOGA, (struct topology_opts){ .reserved_cores = "200" },
			  "topology.reserved_cores: CPU 200 not on this node");
	assert_load_fails(TIOGA, (struct topology_opts){ .reserved_cores = "all" },
			  "topology.reserved_cores must be none, first-per-l3 or a cpu list, not 'all'");
	assert_load_fails(TIOGA, (struct topology_opts){ .reserved_cores = "0-127" },
			  "no usable core on this node (64 cores, all reserved)");
	assert_load_fails(TIOGA, (struct topology_opts){ .hw_threads = "some" },
			  "topology.hw_threads must be all or first, not 'some'");

	static const struct {
		const char *entry, *msg;
	} bad[] = {
		{ "X={foo}", "topology.nic_env: 'X={foo}': unknown placeholder {foo}" },
		{ "X={nic", "topology.nic_env: 'X={nic': unmatched '{' (write {{ for a literal one)" },
		{ "X=a}b", "topology.nic_env: 'X=a}b': unmatched '}' (write }} for a literal one)" },
		{ "1X=a", "topology.nic_env: '1X=a' is not VAR=template with VAR a variable name" },
		{ "NOEQUALS", "topology.nic_env: 'NOEQUALS' is not VAR=template with VAR a variable name" },
		{ "=x", "topology.nic_env: '=x' is not VAR=template with VAR a variable name" },
		{ "A-B=x", "topology.nic_env: 'A-B=x' is not VAR=template with VAR a variable name" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_load_fails(TIOGA, (struct topology_opts){ .nic_env = &bad[i].entry, .n_nic_env = 1 },
				  bad[i].msg);

	_cleanup_error_ alps_error *err = NULL;
	assert_null(try_load("no-such-file.xml", (struct topology_opts){ 0 }, &err));
	assert_non_null(err);
}

static void test_tioga_json(void **state ALPS_UNUSED)
{
	struct topology *t = load(TIOGA, (struct topology_opts){
		.reserved_cores = "first-per-l3", .hw_threads = "first" });
	json_t *j = topology_to_json(t);
	json_t *gpus = json_object_get(j, "gpus");
	assert_int_equal(json_array_size(gpus), 8);
	json_t *g0 = json_array_get(gpus, 0);
	assert_string_equal(json_string_value(json_object_get(g0, "vendor")), "amd");
	assert_string_equal(json_string_value(json_object_get(g0, "name")), "rsmi0");
	assert_string_equal(json_string_value(json_object_get(g0, "pci")), "0000:c1:00.0");
	assert_int_equal(json_integer_value(json_object_get(g0, "numa")), 3);
	assert_string_equal(json_string_value(json_object_get(g0, "cpus")), "48-55,112-119");
	json_t *near = json_object_get(g0, "nearest_nics");
	assert_int_equal(json_array_size(near), 1);
	assert_string_equal(json_string_value(json_array_get(near, 0)), "hsi0");
	json_t *nic0 = json_array_get(json_object_get(j, "nics"), 0);
	assert_string_equal(json_string_value(json_object_get(nic0, "name")), "ens2");
	assert_false(json_boolean_value(json_object_get(nic0, "high_speed")));
	assert_true(json_is_null(json_object_get(nic0, "rdma")));
	json_t *res = json_object_get(j, "reserved");
	assert_int_equal(json_integer_value(json_object_get(res, "cores")), 8);
	assert_string_equal(json_string_value(json_object_get(res, "cpus")),
			    "0,8,16,24,32,40,48,56,64,72,80,88,96,104,112,120");
	assert_int_equal(json_integer_value(json_object_get(j, "usable_cores")), 56);
	assert_int_equal(json_array_size(json_object_get(j, "numa_nodes")), 4);
	assert_int_equal(json_array_size(json_object_get(j, "l3_groups")), 8);
	json_decref(j);

	struct place_plan *p = plan(t, 8, 1);
	j = place_plan_to_json(p);
	assert_int_equal(json_integer_value(json_object_get(j, "tasks")), 8);
	assert_string_equal(json_string_value(json_object_get(j, "hw_threads")), "first");
	json_t *r1 = json_array_get(json_object_get(j, "ranks"), 1);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(r1, "gpus"), 0)), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(r1, "gpu_pci"), 0)),
			    "0000:c6:00.0");
	assert_string_equal(json_string_value(json_array_get(json_object_get(r1, "nics"), 0)), "hsi0");
	assert_string_equal(json_string_value(json_object_get(r1, "cpus")), "57-63");
	assert_string_equal(json_string_value(json_object_get(r1, "mask")), "0xfe00000000000000");
	assert_string_equal(json_string_value(json_array_get(json_object_get(r1, "env"), 0)),
			    "ROCR_VISIBLE_DEVICES=1");
	json_decref(j);
	place_plan_free(p);
	topology_free(t);
}

/* ---- LLNL Lassen (IBM AC922-like: 2 POWER9, 4 V100, 2 dual-port EDR) ----
 *
 * From the XML: package 0 has CPUs 8-87 (20 SMT4 cores: LLNL keeps the rest
 * from users), package 1 CPUs 96-175 (NUMA node P#8).  V100s nvml0,1 are
 * behind a PLX switch on host bridge 0004 and nvml2,3 on 0035, so GPUs 0,1
 * are on socket 0 and 2,3 on socket 1 (two GPUs per POWER9 socket, the
 * AC922 design).  The IB ports hsi0/mlx5_0 and hsi1/mlx5_1 are on socket 0 (host
 * bridge 0003), hsi2,3 on socket 1; the Broadcom management ports
 * enP5p1s0f0/1 are on socket 0 too, as near to GPUs 0,1 as the IB ports. */
static void test_lassen(void **state ALPS_UNUSED)
{
	struct topology *t = load(LASSEN, (struct topology_opts){
		.nic_env = test_env, .n_nic_env = ARRAY_SIZE(test_env) });
	assert_int_equal(t->ngpus, 4);
	static const int numa[] = { 0, 0, 8, 8 };
	static const char *const bus[] = { "0004:04:00.0", "0004:05:00.0", "0035:03:00.0",
					   "0035:04:00.0" };
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(t->gpus[i].vendor, TOPOLOGY_VENDOR_NVIDIA);
		assert_int_equal(t->gpus[i].index, i);
		assert_int_equal(t->gpus[i].numa, numa[i]);
		assert_string_equal(t->gpus[i].pci_busid, bus[i]);
	}
	assert_string_equal(t->gpus[0].name, "nvml0");     /* not cuda0 */
	assert_near(t, 0, "hsi0,hsi1");
	assert_near(t, 3, "hsi2,hsi3");
	const struct topology_nic *hsi1 = topology_nic_by_name(t, "mlx5_1");
	assert_non_null(hsi1);
	assert_string_equal(hsi1->name, "hsi1");
	assert_string_equal(hsi1->pci_busid, "0003:01:00.1");
	assert_false(topology_nic_by_name(t, "enP5p1s0f0")->high_speed);

	/* jsrun-style 4 resource sets: 10 cores (40 CPUs) and 1 GPU each. */
	struct place_plan *p = plan(t, 4, 0);
	assert_cpus(p, 0, "8-47");
	assert_cpus(p, 1, "48-87");
	assert_cpus(p, 2, "96-135");
	assert_cpus(p, 3, "136-175");
	for (unsigned r = 0; r < 4; r++) {
		char name[8];
		snprintf(name, sizeof(name), "hsi%u", r);
		assert_nics(p, r, name);
	}
	static const char *const env1[] = { "CUDA_VISIBLE_DEVICES=1", "NCCL_SOCKET_IFNAME=hsi1",
					    "FI_CXI_DEVICE=cxi1", "NCCL_IB_HCA=mlx5_1",
					    "ALPS_NICS=hsi1", "ALPS_LOCAL=1:1", "BRACES={1}" };
	assert_env(p, 1, env1, ARRAY_SIZE(env1));
	place_plan_free(p);

	/* 8 tasks, 2 per GPU: the four ranks of socket 0 alternate over its
	 * two IB ports. */
	p = plan(t, 8, 0);
	assert_cpus(p, 0, "8-27");
	assert_cpus(p, 3, "68-87");
	assert_nics(p, 0, "hsi0");
	assert_nics(p, 1, "hsi1");
	assert_nics(p, 2, "hsi0");
	assert_nics(p, 3, "hsi1");
	assert_nics(p, 4, "hsi2");
	place_plan_free(p);
	topology_free(t);

	/* Every NIC a candidate: the management ports tie with the IB ones. */
	t = load(LASSEN, (struct topology_opts){ .nic_patterns = all_patterns, .n_nic_patterns = 1 });
	assert_near(t, 0, "enP5p1s0f0,enP5p1s0f1,hsi0,hsi1");
	topology_free(t);
}

/* ---- LLNL Corona (2 EPYC 7402, 8 MI50, 1 IB) ----
 *
 * rsmiN is not the PCI order here: rsmi0 is 63:00.0, rsmi2 03:00.0.  GPUs
 * rsmi0-3 hang from package 0 (CPUs 0-23,48-71), rsmi4-7 from package 1.
 * The Intel I350 management ports eno1/2 share host bridge e0 with rsmi4,
 * strictly nearer than the one IB port (hsi0, host bridge c0, package 1). */
static void test_corona(void **state ALPS_UNUSED)
{
	struct topology *t = load(CORONA, (struct topology_opts){ 0 });
	static const char *const bus[] = { "0000:63:00.0", "0000:43:00.0", "0000:03:00.0",
					   "0000:27:00.0", "0000:e3:00.0", "0000:c3:00.0",
					   "0000:83:00.0", "0000:a3:00.0" };
	assert_int_equal(t->ngpus, 8);
	for (unsigned i = 0; i < 8; i++) {
		assert_string_equal(t->gpus[i].pci_busid, bus[i]);
		assert_int_equal(t->gpus[i].numa, i < 4 ? 0 : 1);
		assert_near(t, i, "hsi0");
	}
	struct place_plan *p = plan(t, 8, 1);
	assert_cpus(p, 0, "0-5,48-53");
	assert_cpus(p, 3, "18-23,66-71");
	assert_cpus(p, 4, "24-29,72-77");
	assert_cpus(p, 7, "42-47,90-95");
	assert_nics(p, 4, "hsi0");
	place_plan_free(p);
	topology_free(t);

	t = load(CORONA, (struct topology_opts){ .nic_patterns = all_patterns, .n_nic_patterns = 1 });
	assert_near(t, 4, "eno1,eno2");
	assert_near(t, 5, "hsi0");
	topology_free(t);
}

/* ---- AWS g4dn.metal (2 Xeon 8259CL, 8 T4, 1 EFA) ----
 *
 * T4s nvml0-3 on package 0 (CPUs 0-23,48-71), nvml4-7 on package 1.  The
 * EFA is an RDMA device only (rdmap197s0, no netdev), beside the ENA eth0
 * on package 1.  AWS names are not in the default patterns: sites add
 * rdmap*. */
static void test_g4dn(void **state ALPS_UNUSED)
{
	struct topology *t = load(G4DN, (struct topology_opts){
		.nic_env = test_env, .n_nic_env = ARRAY_SIZE(test_env) });
	assert_int_equal(t->ngpus, 8);
	assert_near(t, 0, "");
	struct place_plan *p = plan(t, 8, 0);
	assert_nics(p, 0, "");
	static const char *const env0[] = { "CUDA_VISIBLE_DEVICES=0", "ALPS_LOCAL=0:0",
					    "BRACES={0}" };
	assert_env(p, 0, env0, ARRAY_SIZE(env0));
	assert_cpus(p, 0, "0-5,48-53");
	assert_cpus(p, 3, "18-23,66-71");
	assert_cpus(p, 4, "24-29,72-77");
	place_plan_free(p);
	topology_free(t);

	t = load(G4DN, (struct topology_opts){ .nic_patterns = efa_patterns, .n_nic_patterns = 1,
					       .nic_env = test_env, .n_nic_env = ARRAY_SIZE(test_env) });
	const struct topology_nic *efa = topology_nic_by_name(t, "rdmap197s0");
	assert_non_null(efa);
	assert_int_equal(efa->kind, TOPOLOGY_NIC_OPENFABRICS);
	assert_null(efa->netdev);
	assert_int_equal(efa->numa, 1);
	assert_false(topology_nic_by_name(t, "eth0")->high_speed);
	for (unsigned i = 0; i < 8; i++)
		assert_near(t, i, "rdmap197s0");
	p = plan(t, 8, 0);
	/* No netdev: NCCL_SOCKET_IFNAME is left out, never set empty. */
	static const char *const env7[] = { "CUDA_VISIBLE_DEVICES=7", "FI_CXI_DEVICE=cxi0",
					    "NCCL_IB_HCA=rdmap197s0", "ALPS_NICS=rdmap197s0",
					    "ALPS_LOCAL=7:7", "BRACES={7}" };
	assert_env(p, 7, env7, ARRAY_SIZE(env7));
	place_plan_free(p);
	topology_free(t);
}

/* ---- LLNL cts1 pascal (2 Xeon E5-2695 v4, 2 P100, 1 IB) ----
 *
 * Both P100s and the IB port (hsi0/mlx5_0) are behind one PLX switch
 * (02:00.0) on socket 0 (CPUs 0-17,36-53); the I350 ports are on the same
 * host bridge but not behind the switch: farther.  Socket 1 has no GPU. */
static void test_pascal(void **state ALPS_UNUSED)
{
	struct topology *t = load(PASCAL, (struct topology_opts){ .nic_patterns = all_patterns,
								   .n_nic_patterns = 1 });
	assert_near(t, 0, "hsi0");
	assert_near(t, 1, "hsi0");
	topology_free(t);

	t = load(PASCAL, (struct topology_opts){ 0 });
	struct place_plan *p = plan(t, 2, 0);
	assert_cpus(p, 0, "0-8,36-44");
	assert_cpus(p, 1, "9-17,45-53");
	assert_nics(p, 0, "hsi0");
	assert_nics(p, 1, "hsi0");
	place_plan_free(p);

	/* 3 tasks on 2 GPUs: ranks 0,1 share GPU 0; all three split socket 0. */
	p = plan(t, 3, 0);
	assert_gpus(p, 0, "0");
	assert_gpus(p, 1, "0");
	assert_gpus(p, 2, "1");
	assert_cpus(p, 0, "0-5,36-41");
	assert_cpus(p, 1, "6-11,42-47");
	assert_cpus(p, 2, "12-17,48-53");
	place_plan_free(p);

	/* Enough cores on the node (36), not near the GPUs (18). */
	assert_plan_fails(t, 20, 0,
			  "the CPUs local to GPU 0,1 (0-17,36-53) have 18 free cores, too few for 20 tasks");
	topology_free(t);
}

/* ---- hwloc's 32em64t-2n8c2t-pci-normalio ----
 *
 * Three NVIDIA Tesla M2075: 03:00.0 (socket 0) and 83:00.0 without OS
 * devices, 84:00.0 with cuda0 and card0 (socket 1); an AMD Radeon 84:00.1
 * with only opencl0d1; the Matrox VGA (05:03.0) is not a GPU.  Not every
 * NVIDIA GPU has a vendor index, so they are numbered in PCI order. */
static void test_em64t_gpu_detection(void **state ALPS_UNUSED)
{
	struct topology *t = load(EM64T, (struct topology_opts){ 0 });
	assert_int_equal(t->ngpus, 4);
	static const struct {
		enum topology_vendor vendor;
		unsigned index;
		const char *name, *bus;
		int numa;
	} want[] = {
		{ TOPOLOGY_VENDOR_NVIDIA, 0, "0000:03:00.0", "0000:03:00.0", 0 },
		{ TOPOLOGY_VENDOR_NVIDIA, 1, "0000:83:00.0", "0000:83:00.0", 1 },
		{ TOPOLOGY_VENDOR_NVIDIA, 2, "cuda0", "0000:84:00.0", 1 },
		{ TOPOLOGY_VENDOR_AMD, 0, "opencl0d1", "0000:84:00.1", 1 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		assert_int_equal(t->gpus[i].vendor, want[i].vendor);
		assert_int_equal(t->gpus[i].index, want[i].index);
		assert_string_equal(t->gpus[i].name, want[i].name);
		assert_string_equal(t->gpus[i].pci_busid, want[i].bus);
		assert_int_equal(t->gpus[i].numa, want[i].numa);
	}
	/* ib0 and mlx5_0 are one port. */
	assert_int_equal(t->nnics, 3);
	const struct topology_nic *ib = topology_nic_by_name(t, "ib0");
	assert_non_null(ib);
	assert_string_equal(ib->rdma, "mlx5_0");
	assert_true(ib->high_speed);

	/* Rank 0 alone on socket 0's 8 cores; ranks 1-3 split socket 1's 8. */
	struct place_plan *p = plan(t, 4, 0);
	assert_cpus(p, 0, "0-7,16-23");
	assert_cpus(p, 1, "8-10,24-26");
	assert_cpus(p, 2, "11-13,27-29");
	assert_cpus(p, 3, "14-15,30-31");
	static const char *const env0[] = { "CUDA_VISIBLE_DEVICES=0" };
	static const char *const env3[] = { "ROCR_VISIBLE_DEVICES=0" };
	assert_env(p, 0, env0, 1);
	assert_env(p, 3, env3, 1);
	assert_nics(p, 0, "ib0");
	place_plan_free(p);
	topology_free(t);
}

/* ---- hwloc's power8gpudistances: 2 POWER8, 4 P100, no NIC ----
 *
 * Each package has 4 cores of 2 threads (0-1, 8-9, 16-17, 24-25 and
 * 80-81 ... 104-105); P100s 0,1 hang from package 0, 2,3 from package 1. */
static void test_power8_no_nic(void **state ALPS_UNUSED)
{
	struct topology *t = load(POWER8, (struct topology_opts){
		.nic_env = test_env, .n_nic_env = ARRAY_SIZE(test_env) });
	assert_int_equal(t->nnics, 0);
	assert_int_equal(t->ngpus, 4);
	assert_string_equal(t->gpus[0].name, "nvml0");
	struct place_plan *p = plan(t, 4, 0);
	assert_cpus(p, 0, "0-1,8-9");
	assert_cpus(p, 1, "16-17,24-25");
	assert_cpus(p, 2, "80-81,88-89");
	assert_cpus(p, 3, "96-97,104-105");
	assert_nics(p, 2, "");
	static const char *const env2[] = { "CUDA_VISIBLE_DEVICES=2", "ALPS_LOCAL=2:2",
					    "BRACES={2}" };
	assert_env(p, 2, env2, ARRAY_SIZE(env2));
	place_plan_free(p);
	topology_free(t);
}

/* ---- hwloc's nvidiaDGX2: 16 V100, CPU set reduced to 4 cores ----
 *
 * nvml0-7 hang from package 0 (cores 0, 1), nvml8-15 from package 1
 * (cores 24, 25); the NVSwitches (class 0680) are not GPUs. */
static void test_dgx2(void **state ALPS_UNUSED)
{
	struct topology *t = load(DGX2, (struct topology_opts){ 0 });
	assert_int_equal(t->ngpus, 16);
	assert_int_equal(t->ncores, 4);
	struct place_plan *p = plan(t, 4, 0);
	assert_gpus(p, 1, "4,5,6,7");
	assert_cpus(p, 0, "0");
	assert_cpus(p, 1, "1");
	assert_cpus(p, 2, "24");
	assert_cpus(p, 3, "25");
	static const char *const env1[] = { "CUDA_VISIBLE_DEVICES=4,5,6,7" };
	assert_env(p, 1, env1, 1);
	place_plan_free(p);

	p = plan(t, 2, 0);
	assert_gpus(p, 0, "0,1,2,3,4,5,6,7");
	assert_cpus(p, 1, "24-25");
	place_plan_free(p);

	assert_plan_fails(t, 8, 0, "8 tasks need 8 cores; this node has 4 usable (4 cores, 0 reserved)");
	assert_plan_fails(t, 8, 4, "8 tasks with 4 GPUs each need 32 GPUs; this node has 16");
	topology_free(t);
}

/* ---- a node with neither GPU nor NIC ----
 *
 * hwloc's synthetic 2 packages x 2 L3 x 4 cores x 2 threads, saved as XML
 * and loaded the way a real file is; threads are numbered in order, so
 * core n has CPUs 2n and 2n+1. */
static char *synthetic_xml(void)
{
	char *path = xstrdup("/tmp/alps-topo-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	hwloc_topology_t hw;
	assert_int_equal(hwloc_topology_init(&hw), 0);
	assert_int_equal(hwloc_topology_set_synthetic(hw, "pack:2 l3:2 core:4 pu:2"), 0);
	assert_int_equal(hwloc_topology_load(hw), 0);
	assert_int_equal(hwloc_topology_export_xml(hw, path, 0), 0);
	hwloc_topology_destroy(hw);
	return path;
}

static void test_no_gpu_no_nic(void **state ALPS_UNUSED)
{
	_cleanup_free_ char *path = synthetic_xml();
	struct topology_opts o = { .xml_path = path, .nic_env = test_env,
				   .n_nic_env = ARRAY_SIZE(test_env) };
	struct topology *t = NULL;
	_cleanup_error_ alps_error *err = NULL;
	assert_int_equal(topology_load(&o, &t, &err), 0);
	assert_int_equal(t->ngpus, 0);
	assert_int_equal(t->nnics, 0);
	assert_int_equal(t->ncores, 16);

	struct place_plan *p = plan(t, 4, 0);
	assert_cpu_bind(p, "mask_cpu:0xff,0xff00,0xff0000,0xff000000");
	assert_cpus(p, 0, "0-7");
	static const char *const env3[] = { "BRACES={3}" };
	/* {gpu} has no value: ALPS_LOCAL is left out. */
	assert_env(p, 3, env3, 1);
	place_plan_free(p);
	assert_plan_fails(t, 4, 1, "4 tasks with 1 GPU each need 4 GPUs; this node has 0");
	assert_plan_fails(t, 17, 0, "17 tasks need 17 cores; this node has 16 usable (16 cores, 0 reserved)");
	topology_free(t);

	/* First core of each L3 reserved, first threads only: 3 cores each. */
	o.reserved_cores = "first-per-l3";
	o.hw_threads = "first";
	assert_int_equal(topology_load(&o, &t, &err), 0);
	p = plan(t, 4, 0);
	assert_cpus(p, 0, "2,4,6");
	assert_cpus(p, 3, "26,28,30");
	place_plan_free(p);
	topology_free(t);
	unlink(path);
}

/* The [topology] section reaches the loader unchanged. */
static void test_opts_from_config(void **state ALPS_UNUSED)
{
	_cleanup_free_ char *path = data_path(TIOGA);
	char *patterns[] = { (char *)"hsi*" };
	char *env[] = { (char *)"NCCL_SOCKET_IFNAME={nic}" };
	struct config cfg = { 0 };
	cfg.topology_xml = path;
	cfg.nic_patterns = (struct strlist){ 1, patterns };
	cfg.reserved_cores = (char *)"first-per-l3";
	cfg.hw_threads = (char *)"first";
	cfg.nic_env = (struct strlist){ 1, env };

	struct topology_opts o = topology_opts_from_config(&cfg);
	assert_string_equal(o.xml_path, path);
	assert_int_equal(o.n_nic_patterns, 1);
	assert_string_equal(o.nic_patterns[0], "hsi*");
	struct topology *t = NULL;
	_cleanup_error_ alps_error *err = NULL;
	assert_int_equal(topology_load(&o, &t, &err), 0);
	assert_true(t->first_thread_only);
	assert_int_equal(topology_usable_cores(t), 56);
	struct place_plan *p = plan(t, 8, 1);
	static const char *const env3[] = { "ROCR_VISIBLE_DEVICES=3", "NCCL_SOCKET_IFNAME=hsi1" };
	assert_env(p, 3, env3, 2);
	place_plan_free(p);
	topology_free(t);
}

/* The live machine loads without hanging (gl and friends blacklisted). */
static void test_live(void **state ALPS_UNUSED)
{
	/* libpciaccess (under hwloc's pci plugin) keeps state in globals that
	 * LeakSanitizer reports as lost once hwloc unloads the plugin; keeping
	 * the library loaded keeps them reachable.  Not a leak of ours. */
	(void)dlopen("libpciaccess.so.0", RTLD_NOW | RTLD_NODELETE);
	struct topology *t = load(NULL, (struct topology_opts){ 0 });
	assert_string_equal(t->source, "live");
	assert_true(t->ncores > 0);
	struct place_plan *p = plan(t, 1, 0);
	place_plan_free(p);
	json_t *j = topology_to_json(t);
	assert_non_null(j);
	json_decref(j);
	topology_free(t);
}

int main(void)
{
	log_init("test_topology", LOG_LVL_WARN, false);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tioga_model),
		cmocka_unit_test(test_tioga_management_nic),
		cmocka_unit_test(test_tioga_8_tasks),
		cmocka_unit_test(test_tioga_1_2_4_tasks),
		cmocka_unit_test(test_tioga_more_tasks_than_gpus),
		cmocka_unit_test(test_tioga_reserved_list),
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test(test_tioga_json),
		cmocka_unit_test(test_lassen),
		cmocka_unit_test(test_corona),
		cmocka_unit_test(test_g4dn),
		cmocka_unit_test(test_pascal),
		cmocka_unit_test(test_em64t_gpu_detection),
		cmocka_unit_test(test_power8_no_nic),
		cmocka_unit_test(test_dgx2),
		cmocka_unit_test(test_no_gpu_no_nic),
		cmocka_unit_test(test_opts_from_config),
		cmocka_unit_test(test_live),
	};
	return cmocka_run_group_tests_name("topology", tests, NULL, NULL);
}
