/* place.c: placement of a job step's local tasks (see place.h). */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "daemon/node/place.h"

/* ---- a small growing string ---- */

struct sbuf {
	char *s;
	size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = xrealloc(b->s, b->cap);
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static char *sb_steal(struct sbuf *b)
{
	if (!b->s)
		sb_add(b, "", 0);
	return steal_pointer(&b->s);
}

/* ---- checks ---- */

static int check_request(const struct topology *t, unsigned tasks, unsigned g, alps_error **err)
{
	if (tasks == 0)
		return alps_fail(err, ALPS_E_INVALID, "the number of tasks must be at least 1");
	unsigned long long need = (unsigned long long)tasks * g;
	if (g > 0 && need > t->ngpus)
		return alps_fail(err, ALPS_E_INVALID,
				 "%u tasks with %u GPU%s each need %llu GPUs; this node has %zu", tasks,
				 g, g == 1 ? "" : "s", need, t->ngpus);
	size_t usable = topology_usable_cores(t);
	/* A rank gets at least one whole core: threads of one core are not
	 * independent enough to give to different tasks. */
	if (tasks > usable)
		return alps_fail(err, ALPS_E_INVALID,
				 "%u tasks need %u cores; this node has %zu usable (%zu cores, %zu reserved)",
				 tasks, tasks, usable, t->ncores, t->ncores - usable);
	return 0;
}

/* ---- GPUs ---- */

static void give_gpus(struct place_rank *r, size_t first, size_t n)
{
	r->gpus = xcalloc(n, sizeof(*r->gpus));
	for (size_t i = 0; i < n; i++)
		r->gpus[i] = first + i;
	r->ngpus = n;
}

static void assign_gpus(struct place_plan *p, unsigned g)
{
	size_t ngpus = p->topo->ngpus;
	if (ngpus == 0)
		return;
	if (g == 0 && p->tasks > ngpus) {
		/* Consecutive ranks share a GPU, as Slurm's block distribution
		 * would lay them out. */
		p->gpus_shared = true;
		for (unsigned r = 0; r < p->tasks; r++)
			give_gpus(&p->ranks[r], (size_t)r * ngpus / p->tasks, 1);
		return;
	}
	if (g == 0)
		g = (unsigned)(ngpus / p->tasks);
	p->gpus_per_task = g;
	for (unsigned r = 0; r < p->tasks; r++)
		give_gpus(&p->ranks[r], (size_t)r * g, g);
}

/* ---- CPUs ---- */

/* Ranks whose GPUs have the same local CPUs share them: a domain. */
struct domain {
	hwloc_bitmap_t set;     /* owned */
	size_t nranks;
	size_t usable;          /* unreserved cores inside */
};

static hwloc_bitmap_t rank_locality(const struct place_plan *p, const struct place_rank *r)
{
	const struct topology *t = p->topo;
	if (r->ngpus == 0)
		return hwloc_bitmap_dup(hwloc_topology_get_topology_cpuset(t->hw));
	hwloc_bitmap_t set = hwloc_bitmap_alloc();
	for (size_t i = 0; i < r->ngpus; i++)
		hwloc_bitmap_or(set, set, t->gpus[r->gpus[i]].cpuset);
	return set;
}

static size_t build_domains(const struct place_plan *p, struct domain *doms, size_t *dom_of)
{
	const struct topology *t = p->topo;
	size_t n = 0;
	for (unsigned r = 0; r < p->tasks; r++) {
		hwloc_bitmap_t set = rank_locality(p, &p->ranks[r]);
		size_t d = 0;
		while (d < n && !hwloc_bitmap_isequal(doms[d].set, set))
			d++;
		if (d == n) {
			doms[n].set = steal_pointer(&set);
			for (size_t c = 0; c < t->ncores; c++)
				doms[n].usable += !t->cores[c].reserved &&
						  hwloc_bitmap_isincluded(t->cores[c].cpuset, doms[n].set);
			n++;
		}
		hwloc_bitmap_free(set);
		doms[d].nranks++;
		dom_of[r] = d;
	}
	return n;
}

/* The visible indexes of the GPUs of domain d's ranks, for messages. */
static char *domain_gpus(const struct place_plan *p, const size_t *dom_of, size_t d)
{
	struct sbuf b = { 0 };
	bool *seen = xcalloc(p->topo->ngpus + 1, sizeof(*seen));
	for (unsigned r = 0; r < p->tasks; r++) {
		if (dom_of[r] != d)
			continue;
		for (size_t i = 0; i < p->ranks[r].ngpus; i++) {
			size_t g = p->ranks[r].gpus[i];
			if (seen[g])
				continue;
			seen[g] = true;
			char num[16];
			if (xsnprintf(num, sizeof(num), "%s%u", b.len ? "," : "",
				      p->topo->gpus[g].index) == 0)
				sb_puts(&b, num);
		}
	}
	free(seen);
	return sb_steal(&b);
}

static void give_core(const struct place_plan *p, struct place_rank *r, size_t c)
{
	const struct topology_core *core = &p->topo->cores[c];
	if (p->topo->first_thread_only)
		hwloc_bitmap_set(r->cpuset, core->first_pu);
	else
		hwloc_bitmap_or(r->cpuset, r->cpuset, core->cpuset);
	r->ncores++;
}

/* Split the free cores of domain d between its ranks, in rank order, in
 * blocks of consecutive cores; the first ranks get one more when the
 * split is uneven. */
static int fill_domain(struct place_plan *p, const struct domain *dom, size_t d,
		       const size_t *dom_of, bool *taken, alps_error **err)
{
	const struct topology *t = p->topo;
	size_t *free_cores = xcalloc(t->ncores, sizeof(*free_cores));
	size_t nfree = 0;
	for (size_t c = 0; c < t->ncores; c++)
		if (!t->cores[c].reserved && !taken[c] &&
		    hwloc_bitmap_isincluded(t->cores[c].cpuset, dom->set))
			free_cores[nfree++] = c;
	if (nfree < dom->nranks) {
		_cleanup_free_ char *gpus = domain_gpus(p, dom_of, d);
		_cleanup_free_ char *cpus = topology_cpulist(dom->set);
		free(free_cores);
		return alps_fail(err, ALPS_E_INVALID,
				 "the CPUs local to %s%s (%s) have %zu free core%s, too few for %zu task%s",
				 *gpus ? "GPU " : "the node", gpus, cpus, nfree, nfree == 1 ? "" : "s",
				 dom->nranks, dom->nranks == 1 ? "" : "s");
	}
	size_t base = nfree / dom->nranks, extra = nfree % dom->nranks, next = 0, k = 0;
	for (unsigned r = 0; r < p->tasks; r++) {
		if (dom_of[r] != d)
			continue;
		size_t take = base + (k++ < extra);
		for (size_t i = 0; i < take; i++, next++) {
			taken[free_cores[next]] = true;
			give_core(p, &p->ranks[r], free_cores[next]);
		}
	}
	free(free_cores);
	return 0;
}

/* Domains with the fewest cores go first, so that a small locality (one
 * L3) is not eaten by a larger one that contains it (a package). */
static void order_domains(const struct domain *doms, size_t n, size_t *order)
{
	for (size_t i = 0; i < n; i++) {
		size_t j = i;
		for (; j > 0 && doms[order[j - 1]].usable > doms[i].usable; j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
}

static int assign_cpus(struct place_plan *p, alps_error **err)
{
	size_t *dom_of = xcalloc(p->tasks, sizeof(*dom_of));
	struct domain *doms = xcalloc(p->tasks, sizeof(*doms));
	size_t *order = xcalloc(p->tasks, sizeof(*order));
	bool *taken = xcalloc(p->topo->ncores, sizeof(*taken));
	size_t ndoms = build_domains(p, doms, dom_of);
	int rc = 0;
	order_domains(doms, ndoms, order);
	for (size_t i = 0; i < ndoms && rc == 0; i++)
		rc = fill_domain(p, &doms[order[i]], order[i], dom_of, taken, err);
	for (size_t i = 0; i < ndoms; i++)
		hwloc_bitmap_free(doms[i].set);
	free(taken);
	free(order);
	free(doms);
	free(dom_of);
	return rc;
}

/* ---- NICs ---- */

/* Take the least used of the candidates (the first on a tie) and count it,
 * so that ranks at equal distance from several NICs spread over them. */
static void pick_nic(struct place_rank *r, const size_t *cands, size_t n, unsigned *used)
{
	if (n == 0)
		return;
	size_t best = cands[0];
	for (size_t i = 1; i < n; i++)
		if (used[cands[i]] < used[best])
			best = cands[i];
	used[best]++;
	for (size_t i = 0; i < r->nnics; i++)
		if (r->nics[i] == best)
			return;
	r->nics[r->nnics++] = best;
}

static void assign_nics(struct place_plan *p)
{
	const struct topology *t = p->topo;
	if (t->nnics == 0)
		return;
	unsigned *used = xcalloc(t->nnics, sizeof(*used));
	size_t *cands = xcalloc(t->nnics, sizeof(*cands));
	for (unsigned i = 0; i < p->tasks; i++) {
		struct place_rank *r = &p->ranks[i];
		r->nics = xcalloc(r->ngpus ? r->ngpus : 1, sizeof(*r->nics));
		for (size_t k = 0; k < r->ngpus; k++) {
			const struct topology_gpu *g = &t->gpus[r->gpus[k]];
			pick_nic(r, g->near_nics, g->n_near_nics, used);
		}
		if (r->ngpus == 0) {
			/* No GPU: the NIC nearest to the rank's cores. */
			hwloc_obj_t o = hwloc_get_obj_covering_cpuset(t->hw, r->cpuset);
			size_t n = topology_nearest_nics(t, o ? o : hwloc_get_root_obj(t->hw), cands);
			pick_nic(r, cands, n, used);
		}
	}
	free(cands);
	free(used);
}

/* ---- the plan ---- */

int place_plan_new(const struct topology *topo, unsigned tasks, unsigned gpus_per_task,
		   struct place_plan **out, alps_error **err)
{
	if (check_request(topo, tasks, gpus_per_task, err) < 0)
		return -1;
	struct place_plan *p = xzalloc(sizeof(*p));
	p->topo = topo;
	p->tasks = tasks;
	p->ranks = xcalloc(tasks, sizeof(*p->ranks));
	for (unsigned r = 0; r < tasks; r++) {
		p->ranks[r].rank = r;
		p->ranks[r].cpuset = hwloc_bitmap_alloc();
	}
	assign_gpus(p, gpus_per_task);
	if (assign_cpus(p, err) < 0) {
		place_plan_free(p);
		return -1;
	}
	assign_nics(p);
	*out = p;
	return 0;
}

void place_plan_free(struct place_plan *p)
{
	if (!p)
		return;
	for (unsigned r = 0; r < p->tasks; r++) {
		free(p->ranks[r].gpus);
		free(p->ranks[r].nics);
		hwloc_bitmap_free(p->ranks[r].cpuset);
	}
	free(p->ranks);
	free(p);
}

static char *taskset_mask(hwloc_const_bitmap_t set)
{
	char *s = NULL;
	if (hwloc_bitmap_taskset_asprintf(&s, set) < 0 || !s)
		abort();    /* only fails when malloc does */
	char *copy = xstrdup(s);
	free(s);
	return copy;
}

char *place_plan_cpu_bind(const struct place_plan *p)
{
	struct sbuf b = { 0 };
	sb_puts(&b, "mask_cpu:");
	for (unsigned r = 0; r < p->tasks; r++) {
		_cleanup_free_ char *mask = taskset_mask(p->ranks[r].cpuset);
		if (r > 0)
			sb_puts(&b, ",");
		sb_puts(&b, mask);
	}
	return sb_steal(&b);
}

/* ---- environment ---- */

enum tvar { V_INDEX, V_GPU, V_NIC, V_NICS, V_NIC_NET, V_NIC_RDMA, V_NIC_NUM, NVARS };

static const char *const tvar_names[NVARS] = {
	[V_INDEX] = "index", [V_GPU] = "gpu", [V_NIC] = "nic", [V_NICS] = "nics",
	[V_NIC_NET] = "nic_net", [V_NIC_RDMA] = "nic_rdma", [V_NIC_NUM] = "nic_num",
};

struct tvars {
	char *v[NVARS];     /* owned; NULL: no value for this rank */
};

static int find_tvar(const char *name, size_t len)
{
	for (int i = 0; i < NVARS; i++)
		if (strlen(tvar_names[i]) == len && strncmp(tvar_names[i], name, len) == 0)
			return i;
	return -1;
}

/* Expand tmpl into out (both NULL when only checking).  Sets *missing
 * when a placeholder has no value.  entry names the setting in errors. */
static int expand(const char *tmpl, const struct tvars *vars, struct sbuf *out, bool *missing,
		  const char *entry, alps_error **err)
{
	for (const char *s = tmpl; *s;) {
		size_t lit = strcspn(s, "{}");
		if (out)
			sb_add(out, s, lit);
		s += lit;
		if (!*s)
			break;
		if (s[0] == s[1]) {     /* "{{" or "}}" */
			if (out)
				sb_add(out, s, 1);
			s += 2;
			continue;
		}
		const char *close = s[0] == '{' ? strchr(s, '}') : NULL;
		if (!close)
			return alps_fail(err, ALPS_E_INVALID, "'%s': unmatched '%c' (write %c%c for a literal one)",
					 entry, s[0], s[0], s[0]);
		int v = find_tvar(s + 1, (size_t)(close - s - 1));
		if (v < 0)
			return alps_fail(err, ALPS_E_INVALID, "'%s': unknown placeholder %.*s", entry,
					 (int)(close - s + 1), s);
		if (vars && !vars->v[v])
			*missing = true;
		else if (out && vars)
			sb_puts(out, vars->v[v]);
		s = close + 1;
	}
	return 0;
}

/* Split "VAR=template"; checks VAR. */
static int split_entry(const char *entry, size_t *name_len, alps_error **err)
{
	const char *eq = strchr(entry, '=');
	size_t n = eq ? (size_t)(eq - entry) : 0;
	bool ok = n > 0 && !(entry[0] >= '0' && entry[0] <= '9') &&
		  strspn(entry, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == n;
	if (!ok)
		return alps_fail(err, ALPS_E_INVALID,
				 "'%s' is not VAR=template with VAR a variable name", entry);
	*name_len = n;
	return 0;
}

int place_env_check(const char *entry, alps_error **err)
{
	size_t n;
	if (split_entry(entry, &n, err) < 0)
		return -1;
	return expand(entry + n + 1, NULL, NULL, NULL, entry, err);
}

/* The number at the end of a name ("hsn2" -> "2"), or NULL. */
static char *trailing_number(const char *name)
{
	size_t len = strlen(name), i = len;
	while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9')
		i--;
	return i < len ? xstrdup(name + i) : NULL;
}

static void fill_tvars(const struct place_plan *p, const struct place_rank *r, struct tvars *tv)
{
	const struct topology *t = p->topo;
	struct sbuf gpus = { 0 }, nics = { 0 };
	tv->v[V_INDEX] = xasprintf("%u", r->rank);
	for (size_t i = 0; i < r->ngpus; i++) {
		_cleanup_free_ char *num = xasprintf("%s%u", i ? "," : "", t->gpus[r->gpus[i]].index);
		sb_puts(&gpus, num);
	}
	tv->v[V_GPU] = r->ngpus ? sb_steal(&gpus) : NULL;
	if (r->nnics == 0)
		return;
	for (size_t i = 0; i < r->nnics; i++) {
		if (i)
			sb_puts(&nics, ",");
		sb_puts(&nics, t->nics[r->nics[i]].name);
	}
	const struct topology_nic *nic = &t->nics[r->nics[0]];
	tv->v[V_NICS] = sb_steal(&nics);
	tv->v[V_NIC] = xstrdup(nic->name);
	tv->v[V_NIC_NET] = nic->netdev ? xstrdup(nic->netdev) : NULL;
	tv->v[V_NIC_RDMA] = nic->rdma ? xstrdup(nic->rdma) : NULL;
	tv->v[V_NIC_NUM] = trailing_number(nic->name);
}

static void free_tvars(struct tvars *tv)
{
	for (int i = 0; i < NVARS; i++)
		free(tv->v[i]);
}

/* The variable each vendor's runtime reads to select devices. */
static const char *const visible_var[] = {
	[TOPOLOGY_VENDOR_NVIDIA] = "CUDA_VISIBLE_DEVICES",
	[TOPOLOGY_VENDOR_AMD] = "ROCR_VISIBLE_DEVICES",
	[TOPOLOGY_VENDOR_INTEL] = "ZE_AFFINITY_MASK",
};

static size_t add_visible_devices(const struct place_plan *p, const struct place_rank *r,
				  char **env, size_t n)
{
	for (size_t v = 0; v < ARRAY_SIZE(visible_var); v++) {
		struct sbuf list = { 0 };
		for (size_t i = 0; i < r->ngpus; i++) {
			const struct topology_gpu *g = &p->topo->gpus[r->gpus[i]];
			char num[16];
			if ((size_t)g->vendor == v &&
			    xsnprintf(num, sizeof(num), "%s%u", list.len ? "," : "", g->index) == 0)
				sb_puts(&list, num);
		}
		if (list.len)
			env[n++] = xasprintf("%s=%s", visible_var[v], list.s);
		free(list.s);
	}
	return n;
}

char **place_plan_env(const struct place_plan *p, unsigned rank)
{
	if (rank >= p->tasks)
		return NULL;
	const struct place_rank *r = &p->ranks[rank];
	size_t ntmpl = 0;
	while (p->topo->nic_env && p->topo->nic_env[ntmpl])
		ntmpl++;
	char **env = xcalloc(ARRAY_SIZE(visible_var) + ntmpl + 1, sizeof(*env));
	size_t n = add_visible_devices(p, r, env, 0);
	struct tvars tv = { { NULL } };
	fill_tvars(p, r, &tv);
	for (size_t i = 0; i < ntmpl; i++) {
		const char *entry = p->topo->nic_env[i];
		size_t name_len;
		bool missing = false;
		struct sbuf b = { 0 };
		/* Checked when the topology was loaded: cannot fail here. */
		if (split_entry(entry, &name_len, NULL) < 0)
			continue;
		sb_add(&b, entry, name_len + 1);
		if (expand(entry + name_len + 1, &tv, &b, &missing, entry, NULL) < 0 || missing) {
			free(b.s);
			continue;
		}
		env[n++] = sb_steal(&b);
	}
	free_tvars(&tv);
	return env;
}

void place_env_free(char **env)
{
	for (char **e = env; e && *e; e++)
		free(*e);
	free(env);
}

/* ---- JSON ---- */

static json_t *rank_json(const struct place_plan *p, const struct place_rank *r)
{
	const struct topology *t = p->topo;
	json_t *gpus = json_array(), *pci = json_array(), *nics = json_array(), *env = json_array();
	for (size_t i = 0; i < r->ngpus; i++) {
		json_array_append_new(gpus, json_integer(t->gpus[r->gpus[i]].index));
		json_array_append_new(pci, json_string(t->gpus[r->gpus[i]].pci_busid));
	}
	for (size_t i = 0; i < r->nnics; i++)
		json_array_append_new(nics, json_string(t->nics[r->nics[i]].name));
	char **e = place_plan_env(p, r->rank);
	for (size_t i = 0; e[i]; i++)
		json_array_append_new(env, json_string(e[i]));
	place_env_free(e);
	_cleanup_free_ char *cpus = topology_cpulist(r->cpuset);
	_cleanup_free_ char *mask = taskset_mask(r->cpuset);
	return json_pack("{s:I, s:o, s:o, s:o, s:s, s:s, s:I, s:o}", "rank", (json_int_t)r->rank,
			 "gpus", gpus, "gpu_pci", pci, "nics", nics, "cpus", cpus, "mask", mask,
			 "cores", (json_int_t)r->ncores, "env", env);
}

json_t *place_plan_to_json(const struct place_plan *p)
{
	json_t *ranks = json_array();
	for (unsigned r = 0; r < p->tasks; r++)
		json_array_append_new(ranks, rank_json(p, &p->ranks[r]));
	_cleanup_free_ char *bind = place_plan_cpu_bind(p);
	return json_pack("{s:I, s:I, s:b, s:s, s:s, s:o}", "tasks", (json_int_t)p->tasks,
			 "gpus_per_task", (json_int_t)p->gpus_per_task, "gpus_shared",
			 (int)p->gpus_shared, "hw_threads",
			 p->topo->first_thread_only ? "first" : "all", "cpu_bind", bind, "ranks", ranks);
}
