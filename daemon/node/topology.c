/* topology.c: load the node's topology with hwloc and build the model
 * (see topology.h). */
#include <config.h>

#include <dlfcn.h>

#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/settings.h"
#include "daemon/node/place.h"
#include "daemon/node/topology.h"

/* Used when the configuration names no pattern: the interfaces of
 * Slingshot (hsn, and hsi as LLNL renames them; cxi with hwloc >= 2.10)
 * and InfiniBand. */
static const char *const default_nic_patterns[] = { "hsn*", "hsi*", "cxi*", "mlx5_*", "ib*" };

/* Discovery components that must not run inside the daemon: "gl" opens
 * an X display and can block forever (Debian's hwloc 2.9 builds it);
 * "opencl", "cuda" and "levelzero" initialise a GPU runtime, which is slow,
 * allocates device memory and can hang on a sick GPU; "nvml" and "rsmi" talk
 * to the driver and hang with it (the well-known nvidia-smi hang).  The
 * PCI and sysfs discovery that stays is enough to find and locate GPUs. */
static const char *const blacklisted_components[] = {
	"gl", "opencl", "cuda", "levelzero", "nvml", "rsmi",
};

#define PCI_VENDOR_NVIDIA 0x10de
#define PCI_VENDOR_AMD 0x1002
#define PCI_VENDOR_INTEL 0x8086
#define PCI_BASE_CLASS_DISPLAY 0x03

struct topology_opts topology_opts_from_config(const struct config *cfg)
{
	struct topology_opts o = {
		.xml_path = cfg->topology_xml,
		/* strlist holds char **; the options only read. */
		.nic_patterns = (const char *const *)cfg->nic_patterns.v,
		.n_nic_patterns = cfg->nic_patterns.n,
		.reserved_cores = cfg->reserved_cores,
		.hw_threads = cfg->hw_threads,
		.nic_env = (const char *const *)cfg->nic_env.v,
		.n_nic_env = cfg->nic_env.n,
	};
	return o;
}

const char *topology_vendor_name(enum topology_vendor vendor)
{
	switch (vendor) {
	case TOPOLOGY_VENDOR_NVIDIA: return "nvidia";
	case TOPOLOGY_VENDOR_AMD: return "amd";
	case TOPOLOGY_VENDOR_INTEL: return "intel";
	}
	return "unknown";
}

char *topology_cpulist(hwloc_const_bitmap_t set)
{
	char *s = NULL;
	if (hwloc_bitmap_list_asprintf(&s, set) < 0 || !s)
		abort();    /* only fails when malloc does */
	/* Hand the caller memory from our allocator family. */
	char *copy = xstrdup(s);
	free(s);
	return copy;
}

/* ---- distances in the tree ---- */

/* Number of ancestors up to the root.  hwloc's own depth is negative for
 * I/O objects, so it cannot be compared across the I/O tree. */
static unsigned obj_level(hwloc_obj_t o)
{
	unsigned n = 0;
	for (; o->parent; o = o->parent)
		n++;
	return n;
}

/* Level of the deepest common ancestor of a and b: larger is nearer. */
static unsigned closeness(hwloc_obj_t a, hwloc_obj_t b)
{
	unsigned la = obj_level(a), lb = obj_level(b);
	for (; la > lb; la--)
		a = a->parent;
	for (; lb > la; lb--)
		b = b->parent;
	while (a != b) {
		a = a->parent;
		b = b->parent;
		la--;
	}
	return la;
}

/* The OS index of the NUMA node nearest to o: the first NUMA node among the
 * memory children of o or of its nearest ancestor that has some. */
static int numa_of(hwloc_obj_t o)
{
	for (; o; o = o->parent) {
		for (hwloc_obj_t m = o->memory_first_child; m;) {
			if (m->type == HWLOC_OBJ_NUMANODE)
				return (int)m->os_index;
			/* A memory-side cache sits above its NUMA node. */
			m = m->memory_first_child ? m->memory_first_child : m->next_sibling;
		}
	}
	return -1;
}

size_t topology_nearest_nics(const struct topology *topo, hwloc_obj_t obj, size_t *out)
{
	size_t n = 0;
	unsigned best = 0;
	for (size_t i = 0; i < topo->nnics; i++) {
		if (!topo->nics[i].high_speed)
			continue;
		unsigned c = closeness(obj, topo->nics[i].obj);
		if (n > 0 && c < best)
			continue;
		if (n == 0 || c > best) {
			best = c;
			n = 0;
		}
		out[n++] = i;
	}
	return n;
}

/* ---- loading ---- */

static void blacklist_components(hwloc_topology_t hw)
{
	for (size_t i = 0; i < ARRAY_SIZE(blacklisted_components); i++)
		/* Fails with ENOENT when this hwloc was built without the
		 * component, which is what we want anyway. */
		if (hwloc_topology_set_components(hw, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST,
						  blacklisted_components[i]) < 0)
			log_debug("topology: component %s not blacklisted: %s",
				  blacklisted_components[i], strerror(errno));
}

static int load_hw(const char *xml, hwloc_topology_t *out, alps_error **err)
{
	hwloc_topology_t hw;
	if (hwloc_topology_init(&hw) < 0)
		return alps_fail_errno(err, "hwloc_topology_init");
	/* PCI devices and bridges are dropped by default; keep those that
	 * matter (GPUs, NICs and the bridges above them).  OS devices are kept
	 * whole: "important" would drop the cuda* names of saved XML files. */
	hwloc_topology_set_io_types_filter(hw, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
	hwloc_topology_set_type_filter(hw, HWLOC_OBJ_OS_DEVICE, HWLOC_TYPE_FILTER_KEEP_ALL);
	blacklist_components(hw);
	if (xml && hwloc_topology_set_xml(hw, xml) < 0) {
		int e = errno;
		hwloc_topology_destroy(hw);
		return alps_fail_errnum(err, e, "reading topology XML '%s'", xml);
	}
	if (hwloc_topology_load(hw) < 0) {
		int e = errno;
		hwloc_topology_destroy(hw);
		if (xml)
			return alps_fail_errnum(err, e, "loading topology XML '%s'", xml);
		return alps_fail_errnum(err, e, "discovering the node topology");
	}
	*out = hw;
	return 0;
}

/* ---- CPU side ---- */

/* The objects of a type in logical order (caller frees *objs). */
static size_t objs_of_type(hwloc_topology_t hw, hwloc_obj_type_t type, hwloc_obj_t **objs)
{
	int n = hwloc_get_nbobjs_by_type(hw, type);
	size_t cap = n > 0 ? (size_t)n : 0, k = 0;
	*objs = xcalloc(cap, sizeof(**objs));
	for (hwloc_obj_t o = NULL; k < cap && (o = hwloc_get_next_obj_by_type(hw, type, o));)
		(*objs)[k++] = o;
	return k;
}

static void build_packages(struct topology *t)
{
	hwloc_obj_t *objs;
	t->npackages = objs_of_type(t->hw, HWLOC_OBJ_PACKAGE, &objs);
	t->packages = xcalloc(t->npackages, sizeof(*t->packages));
	for (size_t i = 0; i < t->npackages; i++) {
		t->packages[i].os_index = objs[i]->os_index;
		t->packages[i].cpuset = hwloc_bitmap_dup(objs[i]->cpuset);
	}
	free(objs);
}

static void build_numas(struct topology *t)
{
	hwloc_obj_t *objs;
	t->nnumas = objs_of_type(t->hw, HWLOC_OBJ_NUMANODE, &objs);
	t->numas = xcalloc(t->nnumas, sizeof(*t->numas));
	for (size_t i = 0; i < t->nnumas; i++) {
		t->numas[i].os_index = objs[i]->os_index;
		t->numas[i].memory = objs[i]->attr->numanode.local_memory;
		t->numas[i].cpuset = hwloc_bitmap_dup(objs[i]->cpuset);
	}
	free(objs);
}

static void build_l3s(struct topology *t)
{
	hwloc_obj_t *objs;
	t->nl3s = objs_of_type(t->hw, HWLOC_OBJ_L3CACHE, &objs);
	t->l3s = xcalloc(t->nl3s, sizeof(*t->l3s));
	for (size_t i = 0; i < t->nl3s; i++) {
		t->l3s[i].index = objs[i]->logical_index;
		t->l3s[i].cpuset = hwloc_bitmap_dup(objs[i]->cpuset);
	}
	free(objs);
}

/* Cores in logical order; a machine without a core level (some VMs and
 * hand-written XML) gets one core per hardware thread. */
static void build_cores(struct topology *t)
{
	hwloc_obj_t *objs;
	t->ncores = objs_of_type(t->hw, HWLOC_OBJ_CORE, &objs);
	if (t->ncores == 0) {
		free(objs);
		t->ncores = objs_of_type(t->hw, HWLOC_OBJ_PU, &objs);
	}
	t->cores = xcalloc(t->ncores, sizeof(*t->cores));
	for (size_t i = 0; i < t->ncores; i++) {
		hwloc_obj_t o = objs[i];
		hwloc_obj_t l3 = hwloc_get_ancestor_obj_by_type(t->hw, HWLOC_OBJ_L3CACHE, o);
		struct topology_core *c = &t->cores[i];
		c->os_index = o->os_index;
		c->first_pu = (unsigned)hwloc_bitmap_first(o->cpuset);
		c->l3 = l3 ? (int)l3->logical_index : -1;
		c->numa = numa_of(o);
		c->cpuset = hwloc_bitmap_dup(o->cpuset);
	}
	free(objs);
}

/* reserved_cores = "first-per-l3": the lowest core of each L3 group, as
 * LUMI and Frontier keep for the OS in their low-noise mode. */
static int reserve_first_per_l3(struct topology *t, alps_error **err)
{
	if (t->nl3s == 0)
		return alps_fail(err, ALPS_E_INVALID,
				 "topology.reserved_cores = first-per-l3, but this node has no L3 cache");
	for (size_t l = 0; l < t->nl3s; l++)
		for (size_t i = 0; i < t->ncores; i++)
			if (t->cores[i].l3 == (int)t->l3s[l].index) {
				t->cores[i].reserved = true;
				break;
			}
	return 0;
}

/* reserved_cores = a CPU list ("0,8,16-17"): numbers of hardware threads,
 * as the kernel counts them; a core is reserved whole if any of its
 * threads is listed.  Every listed CPU must exist, to catch typos. */
static int reserve_cpu_list(struct topology *t, const char *spec, alps_error **err)
{
	if (!*spec || strspn(spec, "0123456789,-") != strlen(spec))
		return alps_fail(err, ALPS_E_INVALID,
				 "topology.reserved_cores must be none, first-per-l3 or a cpu list, not '%s'",
				 spec);
	hwloc_bitmap_t set = hwloc_bitmap_alloc();
	int rc = 0;
	hwloc_const_bitmap_t all = hwloc_topology_get_topology_cpuset(t->hw);
	if (hwloc_bitmap_list_sscanf(set, spec) < 0 || hwloc_bitmap_weight(set) < 0) {
		rc = alps_fail(err, ALPS_E_INVALID, "topology.reserved_cores: bad cpu list '%s'", spec);
	} else if (!hwloc_bitmap_isincluded(set, all)) {
		hwloc_bitmap_andnot(set, set, all);
		_cleanup_free_ char *extra = topology_cpulist(set);
		rc = alps_fail(err, ALPS_E_INVALID,
			       "topology.reserved_cores: CPU %s not on this node", extra);
	} else {
		for (size_t i = 0; i < t->ncores; i++)
			t->cores[i].reserved = hwloc_bitmap_intersects(t->cores[i].cpuset, set);
	}
	hwloc_bitmap_free(set);
	return rc;
}

static int apply_reserved(struct topology *t, const char *spec, alps_error **err)
{
	if (!spec || !*spec || strcmp(spec, "none") == 0)
		return 0;
	if (strcmp(spec, "first-per-l3") == 0)
		return reserve_first_per_l3(t, err);
	return reserve_cpu_list(t, spec, err);
}

size_t topology_usable_cores(const struct topology *topo)
{
	size_t n = 0;
	for (size_t i = 0; i < topo->ncores; i++)
		n += !topo->cores[i].reserved;
	return n;
}

/* ---- PCI helpers ---- */

static void format_busid(hwloc_obj_t pci, char *buf, size_t size)
{
	const struct hwloc_pcidev_attr_s *p = &pci->attr->pcidev;
	if (xsnprintf(buf, size, "%04x:%02x:%02x.%01x", (unsigned)p->domain, (unsigned)p->bus,
		      (unsigned)p->dev, (unsigned)p->func) < 0)
		buf[0] = '\0';   /* cannot happen: 12 characters */
}

static int cmp_pci(hwloc_obj_t a, hwloc_obj_t b)
{
	const struct hwloc_pcidev_attr_s *x = &a->attr->pcidev, *y = &b->attr->pcidev;
	if (x->domain != y->domain)
		return x->domain < y->domain ? -1 : 1;
	if (x->bus != y->bus)
		return x->bus < y->bus ? -1 : 1;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return (int)x->func - (int)y->func;
}

static hwloc_bitmap_t local_cpuset(hwloc_topology_t hw, hwloc_obj_t o)
{
	hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(hw, o);
	return hwloc_bitmap_dup(anc ? anc->cpuset : hwloc_topology_get_topology_cpuset(hw));
}

/* ---- GPUs ---- */

/* GPU OS device names, best first.  Those with an index carry the
 * vendor's own device order, which the visible-device variables use. */
struct gpu_name_kind {
	const char *prefix;
	int vendor;         /* enum topology_vendor, or -1 for any */
	bool indexed;
};

static const struct gpu_name_kind gpu_names[] = {
	{ "nvml", TOPOLOGY_VENDOR_NVIDIA, true },
	{ "cuda", TOPOLOGY_VENDOR_NVIDIA, true },
	{ "rsmi", TOPOLOGY_VENDOR_AMD, true },
	{ "ze", TOPOLOGY_VENDOR_INTEL, true },
	{ "card", -1, false },          /* DRM */
	{ "renderD", -1, false },
	{ "opencl", -1, false },
};

/* Rank of an OS device name (lower is better), ARRAY_SIZE when unknown;
 * *index gets the number after an indexed prefix, or -1. */
static size_t gpu_name_rank(const char *name, enum topology_vendor vendor, long *index)
{
	*index = -1;
	for (size_t i = 0; i < ARRAY_SIZE(gpu_names); i++) {
		const struct gpu_name_kind *k = &gpu_names[i];
		if ((k->vendor >= 0 && k->vendor != (int)vendor) || !str_has_prefix(name, k->prefix))
			continue;
		const char *num = name + strlen(k->prefix);
		char *end;
		errno = 0;
		long v = strtol(num, &end, 10);
		if (k->indexed && *num >= '0' && *num <= '9' && !*end && !errno && v <= 65535)
			*index = v;
		return i;
	}
	return ARRAY_SIZE(gpu_names);
}

static bool gpu_vendor_of(hwloc_obj_t pci, enum topology_vendor *vendor)
{
	const struct hwloc_pcidev_attr_s *p = &pci->attr->pcidev;
	/* Display class only: keeps out NVSwitches (class 0680), audio
	 * functions of GPUs and the BMC's VGA (ASPEED, Matrox vendors). */
	if ((p->class_id >> 8) != PCI_BASE_CLASS_DISPLAY)
		return false;
	switch (p->vendor_id) {
	case PCI_VENDOR_NVIDIA: *vendor = TOPOLOGY_VENDOR_NVIDIA; return true;
	case PCI_VENDOR_AMD: *vendor = TOPOLOGY_VENDOR_AMD; return true;
	case PCI_VENDOR_INTEL: *vendor = TOPOLOGY_VENDOR_INTEL; return true;
	}
	return false;
}

/* One GPU per PCI device: its several OS devices (nvml0, cuda0, card1,
 * opencl0d0...) are names of the same thing. */
static void gpu_init(struct topology *t, struct topology_gpu *g, hwloc_obj_t pci,
		     enum topology_vendor vendor, long *vendor_index)
{
	size_t best = ARRAY_SIZE(gpu_names);
	const char *name = NULL;
	*vendor_index = -1;
	/* Indexed names rank first, so the index is the best name's. */
	for (hwloc_obj_t c = pci->io_first_child; c; c = c->next_sibling) {
		if (c->type != HWLOC_OBJ_OS_DEVICE || !c->name)
			continue;
		long idx;
		size_t r = gpu_name_rank(c->name, vendor, &idx);
		if (!name || r < best) {
			best = r;
			name = c->name;
			*vendor_index = idx;
		}
	}
	g->vendor = vendor;
	g->obj = pci;
	format_busid(pci, g->pci_busid, sizeof(g->pci_busid));
	g->name = xstrdup(name ? name : g->pci_busid);
	g->numa = numa_of(hwloc_get_non_io_ancestor_obj(t->hw, pci));
	g->cpuset = local_cpuset(t->hw, pci);
}

/* The PCI addresses of AMD GPUs in KFD topology order, the order in which
 * the ROCm runtime numbers them for ROCR_VISIBLE_DEVICES (it is not always
 * the PCI bus order).  Only meaningful on the live machine. */
static size_t kfd_gpu_order(unsigned *domains, unsigned *bdfs, size_t max)
{
	size_t n = 0;
	for (unsigned node = 0; n < max; node++) {
		char path[96];
		if (xsnprintf(path, sizeof(path), "/sys/class/kfd/kfd/topology/nodes/%u/properties",
			      node) < 0)
			break;
		_cleanup_fclose_ FILE *f = fopen(path, "re");
		if (!f)
			break;
		char key[64];
		unsigned long long val;
		unsigned long long simd = 0, loc = 0, dom = 0;
		while (fscanf(f, "%63s %llu", key, &val) == 2) {
			if (strcmp(key, "simd_count") == 0)
				simd = val;
			else if (strcmp(key, "location_id") == 0)
				loc = val;
			else if (strcmp(key, "domain") == 0)
				dom = val;
		}
		if (simd == 0)
			continue;   /* a CPU node */
		domains[n] = (unsigned)dom;
		bdfs[n++] = (unsigned)loc;
	}
	return n;
}

/* Index AMD GPUs by KFD order; false when that order does not cover them. */
static bool index_by_kfd(struct topology *t)
{
	unsigned domains[64], bdfs[64];
	size_t n = kfd_gpu_order(domains, bdfs, ARRAY_SIZE(domains));
	size_t found = 0;
	for (size_t i = 0; i < t->ngpus; i++) {
		struct topology_gpu *g = &t->gpus[i];
		if (g->vendor != TOPOLOGY_VENDOR_AMD)
			continue;
		const struct hwloc_pcidev_attr_s *p = &g->obj->attr->pcidev;
		unsigned bdf = ((unsigned)p->bus << 8) | ((unsigned)p->dev << 3) | p->func;
		size_t k = 0;
		while (k < n && !(bdfs[k] == bdf && domains[k] == (unsigned)p->domain))
			k++;
		if (k == n)
			return false;
		g->index = (unsigned)k;
		found++;
	}
	return found > 0;
}

static int cmp_gpu_by_pci(const void *a, const void *b)
{
	const struct topology_gpu *x = a, *y = b;
	if (x->vendor != y->vendor)
		return (int)x->vendor - (int)y->vendor;
	return cmp_pci(x->obj, y->obj);
}

static int cmp_gpu_by_index(const void *a, const void *b)
{
	const struct topology_gpu *x = a, *y = b;
	if (x->vendor != y->vendor)
		return (int)x->vendor - (int)y->vendor;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* Whether every GPU of vendor has a vendor index, each one different. */
static bool vendor_indexes_usable(const struct topology *t, const long *idx, enum topology_vendor v)
{
	for (size_t i = 0; i < t->ngpus; i++) {
		if (t->gpus[i].vendor != v)
			continue;
		if (idx[i] < 0)
			return false;
		for (size_t j = 0; j < i; j++)
			if (t->gpus[j].vendor == v && idx[j] == idx[i])
				return false;
	}
	return true;
}

/* Number GPUs in each vendor's order: the index in their nvmlN/cudaN/
 * rsmiN/zeN name when every GPU has one (XML files of real machines),
 * else (live, those components being blacklisted) the KFD order for AMD
 * and the PCI bus order otherwise, which is NVIDIA's with
 * CUDA_DEVICE_ORDER=PCI_BUS_ID and Level Zero's with
 * ZE_ENABLE_PCI_ID_DEVICE_ORDER=1. */
static void index_gpus(struct topology *t, long *idx, bool live)
{
	bool kfd_done = live && index_by_kfd(t);
	unsigned next[3] = { 0, 0, 0 };
	bool use[3];
	for (int v = 0; v < 3; v++)
		use[v] = vendor_indexes_usable(t, idx, (enum topology_vendor)v);
	/* t->gpus is in PCI order here (see collect_gpus). */
	for (size_t i = 0; i < t->ngpus; i++) {
		struct topology_gpu *g = &t->gpus[i];
		if (use[g->vendor])
			g->index = (unsigned)idx[i];
		else if (!(kfd_done && g->vendor == TOPOLOGY_VENDOR_AMD))
			g->index = next[g->vendor]++;
	}
	if (t->ngpus > 1)
		qsort(t->gpus, t->ngpus, sizeof(*t->gpus), cmp_gpu_by_index);
}

static void collect_gpus(struct topology *t, bool live)
{
	size_t cap = 0;
	long *idx = NULL;
	for (hwloc_obj_t pci = NULL; (pci = hwloc_get_next_pcidev(t->hw, pci));) {
		enum topology_vendor v;
		if (!gpu_vendor_of(pci, &v))
			continue;
		if (t->ngpus == cap) {
			cap = cap ? 2 * cap : 8;
			t->gpus = xreallocarray(t->gpus, cap, sizeof(*t->gpus));
			idx = xreallocarray(idx, cap, sizeof(*idx));
		}
		memset(&t->gpus[t->ngpus], 0, sizeof(t->gpus[0]));
		gpu_init(t, &t->gpus[t->ngpus], pci, v, &idx[t->ngpus]);
		t->ngpus++;
	}
	/* Sort by PCI address, carrying the parsed indexes along. */
	for (size_t i = 1; i < t->ngpus; i++)
		for (size_t j = i; j > 0 && cmp_gpu_by_pci(&t->gpus[j - 1], &t->gpus[j]) > 0; j--) {
			struct topology_gpu g = t->gpus[j];
			long l = idx[j];
			t->gpus[j] = t->gpus[j - 1];
			idx[j] = idx[j - 1];
			t->gpus[j - 1] = g;
			idx[j - 1] = l;
		}
	index_gpus(t, idx, live);
	free(idx);
}

/* ---- NICs ---- */

static bool name_matches(const struct topology_opts *o, const char *name)
{
	const char *const *pats = o->n_nic_patterns ? o->nic_patterns : default_nic_patterns;
	size_t n = o->n_nic_patterns ? o->n_nic_patterns : ARRAY_SIZE(default_nic_patterns);
	for (size_t i = 0; i < n; i++)
		if (fnmatch(pats[i], name, 0) == 0)
			return true;
	return false;
}

static struct topology_nic *nic_for(struct topology *t, hwloc_obj_t key, size_t *cap)
{
	for (size_t i = 0; i < t->nnics; i++)
		if (t->nics[i].obj == key)
			return &t->nics[i];
	if (t->nnics == *cap) {
		*cap = *cap ? 2 * *cap : 8;
		t->nics = xreallocarray(t->nics, *cap, sizeof(*t->nics));
	}
	struct topology_nic *nic = &t->nics[t->nnics++];
	memset(nic, 0, sizeof(*nic));
	nic->obj = key;
	nic->numa = numa_of(hwloc_get_non_io_ancestor_obj(t->hw, key));
	nic->cpuset = local_cpuset(t->hw, key);
	if (key->type == HWLOC_OBJ_PCI_DEVICE)
		format_busid(key, nic->pci_busid, sizeof(nic->pci_busid));
	return nic;
}

static int cmp_nic(const void *a, const void *b)
{
	const struct topology_nic *x = a, *y = b;
	return strverscmp(x->name, y->name);
}

/* One NIC per PCI function: ib0 and mlx5_0 (or hsn0 and cxi0) are the
 * same port seen by the network stack and by the RDMA stack. */
static void collect_nics(struct topology *t, const struct topology_opts *o)
{
	size_t cap = 0;
	for (hwloc_obj_t os = NULL; (os = hwloc_get_next_osdev(t->hw, os));) {
		hwloc_obj_osdev_type_t type = os->attr->osdev.type;
		if ((type != HWLOC_OBJ_OSDEV_NETWORK && type != HWLOC_OBJ_OSDEV_OPENFABRICS) || !os->name)
			continue;
		hwloc_obj_t key = os->parent && os->parent->type == HWLOC_OBJ_PCI_DEVICE ? os->parent : os;
		struct topology_nic *nic = nic_for(t, key, &cap);
		char **slot = type == HWLOC_OBJ_OSDEV_NETWORK ? &nic->netdev : &nic->rdma;
		if (!*slot)
			*slot = xstrdup(os->name);
		nic->high_speed |= name_matches(o, os->name);
	}
	for (size_t i = 0; i < t->nnics; i++) {
		struct topology_nic *nic = &t->nics[i];
		nic->kind = nic->netdev ? TOPOLOGY_NIC_NET : TOPOLOGY_NIC_OPENFABRICS;
		nic->name = xstrdup(nic->netdev ? nic->netdev : nic->rdma);
	}
	if (t->nnics > 1)
		qsort(t->nics, t->nnics, sizeof(*t->nics), cmp_nic);
}

static void link_gpus_to_nics(struct topology *t)
{
	for (size_t i = 0; i < t->ngpus; i++) {
		struct topology_gpu *g = &t->gpus[i];
		g->near_nics = xcalloc(t->nnics, sizeof(*g->near_nics));
		g->n_near_nics = topology_nearest_nics(t, g->obj, g->near_nics);
	}
}

/* ---- options kept ---- */

static int keep_options(struct topology *t, const struct topology_opts *o, alps_error **err)
{
	if (!o->hw_threads || !*o->hw_threads || strcmp(o->hw_threads, "all") == 0)
		t->first_thread_only = false;
	else if (strcmp(o->hw_threads, "first") == 0)
		t->first_thread_only = true;
	else
		return alps_fail(err, ALPS_E_INVALID,
				 "topology.hw_threads must be all or first, not '%s'", o->hw_threads);
	t->reserved_spec = xstrdup(o->reserved_cores && *o->reserved_cores ? o->reserved_cores : "none");
	t->nic_env = xcalloc(o->n_nic_env + 1, sizeof(*t->nic_env));
	for (size_t i = 0; i < o->n_nic_env; i++) {
		if (place_env_check(o->nic_env[i], err) < 0)
			return alps_error_prefix(err, "topology.nic_env");
		t->nic_env[i] = xstrdup(o->nic_env[i]);
	}
	return 0;
}

/* hwloc's pci plugin is dlclose()d with each topology, but the
 * libpciaccess under it keeps its state in globals that nothing frees: a
 * leak per live load (and a LeakSanitizer report).  Pinning the library
 * makes that state load once and stay. */
static void pin_pciaccess(void)
{
	static bool done;
	if (!done) {
		done = true;
		(void)dlopen("libpciaccess.so.0", RTLD_NOW | RTLD_NODELETE);
	}
}

int topology_load(const struct topology_opts *opts, struct topology **out, alps_error **err)
{
	bool live = !opts->xml_path || !*opts->xml_path;
	if (live)
		pin_pciaccess();
	struct topology *t = xzalloc(sizeof(*t));
	atomic_init(&t->refs, 1);
	t->source = xstrdup(live ? "live" : opts->xml_path);
	if (keep_options(t, opts, err) < 0 || load_hw(live ? NULL : opts->xml_path, &t->hw, err) < 0)
		goto fail;
	build_packages(t);
	build_numas(t);
	build_l3s(t);
	build_cores(t);
	if (apply_reserved(t, opts->reserved_cores, err) < 0)
		goto fail;
	if (t->ncores == 0 || topology_usable_cores(t) == 0) {
		alps_fail(err, ALPS_E_INVALID, "no usable core on this node (%zu cores, all reserved)",
			  t->ncores);
		goto fail;
	}
	collect_gpus(t, live);
	collect_nics(t, opts);
	link_gpus_to_nics(t);
	log_info("topology (%s): %zu packages, %zu NUMA nodes, %zu cores (%zu usable), %zu GPUs, %zu NICs",
		 t->source, t->npackages, t->nnumas, t->ncores, topology_usable_cores(t), t->ngpus,
		 t->nnics);
	*out = t;
	return 0;
fail:
	topology_free(t);
	return -1;
}

static void topology_destroy(struct topology *t);

struct topology *topology_ref(struct topology *t)
{
	if (t)
		atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
	return t;
}

void topology_unref(struct topology *t)
{
	if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
		topology_destroy(t);
}

void topology_free(struct topology *t)
{
	topology_unref(t);
}

static void topology_destroy(struct topology *t)
{
	for (size_t i = 0; i < t->npackages; i++)
		hwloc_bitmap_free(t->packages[i].cpuset);
	for (size_t i = 0; i < t->nnumas; i++)
		hwloc_bitmap_free(t->numas[i].cpuset);
	for (size_t i = 0; i < t->nl3s; i++)
		hwloc_bitmap_free(t->l3s[i].cpuset);
	for (size_t i = 0; i < t->ncores; i++)
		hwloc_bitmap_free(t->cores[i].cpuset);
	for (size_t i = 0; i < t->ngpus; i++) {
		free(t->gpus[i].name);
		free(t->gpus[i].near_nics);
		hwloc_bitmap_free(t->gpus[i].cpuset);
	}
	for (size_t i = 0; i < t->nnics; i++) {
		free(t->nics[i].name);
		free(t->nics[i].netdev);
		free(t->nics[i].rdma);
		hwloc_bitmap_free(t->nics[i].cpuset);
	}
	for (char **e = t->nic_env; e && *e; e++)
		free(*e);
	free(t->nic_env);
	free(t->packages);
	free(t->numas);
	free(t->l3s);
	free(t->cores);
	free(t->gpus);
	free(t->nics);
	free(t->reserved_spec);
	free(t->source);
	if (t->hw)
		hwloc_topology_destroy(t->hw);
	free(t);
}

const struct topology_gpu *topology_gpu_by_index(const struct topology *topo,
						 enum topology_vendor vendor, unsigned index)
{
	for (size_t i = 0; i < topo->ngpus; i++)
		if (topo->gpus[i].vendor == vendor && topo->gpus[i].index == index)
			return &topo->gpus[i];
	return NULL;
}

const struct topology_nic *topology_nic_by_name(const struct topology *topo, const char *name)
{
	for (size_t i = 0; i < topo->nnics; i++) {
		const struct topology_nic *n = &topo->nics[i];
		if (strcmp(n->name, name) == 0 || (n->rdma && strcmp(n->rdma, name) == 0))
			return n;
	}
	return NULL;
}

/* ---- JSON ---- */

static json_t *json_cpus(hwloc_const_bitmap_t set)
{
	_cleanup_free_ char *s = topology_cpulist(set);
	return json_string(s);
}

static json_t *json_numa(int numa)
{
	return numa >= 0 ? json_integer(numa) : json_null();
}

static json_t *json_str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *packages_json(const struct topology *t)
{
	json_t *a = json_array();
	for (size_t i = 0; i < t->npackages; i++)
		json_array_append_new(a, json_pack("{s:I, s:o}", "os_index",
						   (json_int_t)t->packages[i].os_index, "cpus",
						   json_cpus(t->packages[i].cpuset)));
	return a;
}

static json_t *numas_json(const struct topology *t)
{
	json_t *a = json_array();
	for (size_t i = 0; i < t->nnumas; i++)
		json_array_append_new(a, json_pack("{s:I, s:I, s:o}", "os_index",
						   (json_int_t)t->numas[i].os_index, "memory",
						   (json_int_t)t->numas[i].memory, "cpus",
						   json_cpus(t->numas[i].cpuset)));
	return a;
}

static json_t *l3s_json(const struct topology *t)
{
	json_t *a = json_array();
	for (size_t i = 0; i < t->nl3s; i++)
		json_array_append_new(a, json_pack("{s:I, s:o}", "index", (json_int_t)t->l3s[i].index,
						   "cpus", json_cpus(t->l3s[i].cpuset)));
	return a;
}

static json_t *reserved_json(const struct topology *t)
{
	hwloc_bitmap_t set = hwloc_bitmap_alloc();
	size_t n = 0;
	for (size_t i = 0; i < t->ncores; i++)
		if (t->cores[i].reserved) {
			hwloc_bitmap_or(set, set, t->cores[i].cpuset);
			n++;
		}
	json_t *j = json_pack("{s:s, s:I, s:o}", "setting", t->reserved_spec, "cores", (json_int_t)n,
			      "cpus", json_cpus(set));
	hwloc_bitmap_free(set);
	return j;
}

static json_t *gpus_json(const struct topology *t)
{
	json_t *a = json_array();
	for (size_t i = 0; i < t->ngpus; i++) {
		const struct topology_gpu *g = &t->gpus[i];
		json_t *near = json_array();
		for (size_t k = 0; k < g->n_near_nics; k++)
			json_array_append_new(near, json_string(t->nics[g->near_nics[k]].name));
		json_array_append_new(
			a, json_pack("{s:s, s:I, s:s, s:s, s:o, s:o, s:o}", "vendor",
				     topology_vendor_name(g->vendor), "index", (json_int_t)g->index,
				     "name", g->name, "pci", g->pci_busid, "numa", json_numa(g->numa),
				     "cpus", json_cpus(g->cpuset), "nearest_nics", near));
	}
	return a;
}

static json_t *nics_json(const struct topology *t)
{
	json_t *a = json_array();
	for (size_t i = 0; i < t->nnics; i++) {
		const struct topology_nic *n = &t->nics[i];
		json_array_append_new(
			a, json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:b}", "name", n->name, "kind",
				     n->kind == TOPOLOGY_NIC_NET ? "net" : "openfabrics", "netdev",
				     json_str_or_null(n->netdev), "rdma", json_str_or_null(n->rdma), "pci",
				     json_str_or_null(n->pci_busid[0] ? n->pci_busid : NULL), "numa",
				     json_numa(n->numa), "cpus", json_cpus(n->cpuset), "high_speed",
				     (int)n->high_speed));
	}
	return a;
}

json_t *topology_to_json(const struct topology *t)
{
	hwloc_const_bitmap_t all = hwloc_topology_get_topology_cpuset(t->hw);
	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "source",
			 t->source, "hw_threads", t->first_thread_only ? "first" : "all", "cores",
			 (json_int_t)t->ncores, "usable_cores", (json_int_t)topology_usable_cores(t),
			 "pus", (json_int_t)hwloc_bitmap_weight(all), "cpus", json_cpus(all),
			 "reserved", reserved_json(t), "packages", packages_json(t), "numa_nodes",
			 numas_json(t), "l3_groups", l3s_json(t), "gpus", gpus_json(t), "nics",
			 nics_json(t));
}
