/* config.c: the option table and the TOML loader (see config.h). */
#include <config.h>
#include "daemon/settings.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/log.h"
#include "common/toml.h"
#include "common/util.h"
#include "daemon/job/plan.h"
#include "daemon/server/metrics_http.h"
#include "daemon/squash/squash.h"

enum opt_type {
	OPT_STRING,
	OPT_PATH,       /* absolute path */
	OPT_INT,
	OPT_SIZE,       /* integer bytes or "10G" */
	OPT_SIZE_PCT,   /* OPT_SIZE, or "N%" of a file system: stored as -N */
	OPT_BOOL,
	OPT_ENUM,       /* one of choices */
	OPT_LIST,       /* array of strings */
};

struct option_def {
	const char *key;                /* "section.name" */
	enum opt_type type;
	size_t offset;                  /* into struct config */
	const char *def;                /* default, as text (lists: ',' separated) */
	int64_t min, max;               /* OPT_INT, OPT_SIZE */
	const char *const *choices;     /* OPT_ENUM, NULL-terminated */
	const char *help;
};

#define OFF(f) offsetof(struct config, f)
#define MAXI INT64_MAX

static const char *const log_levels[] = { "error", "warn", "notice", "info", "debug", NULL };
static const char *const compressors[] = { "zstd", "gzip", "xz", "lz4", "lzo", NULL };
static const char *const hw_thread_modes[] = { "all", "first", NULL };

static const struct option_def options[] = {
	{ "daemon.socket", OPT_PATH, OFF(socket_path), ALPS_RUNDIR "/alpsd.sock", 0, 0, NULL,
	  "Unix socket the daemon listens on (mode 0666; every request is authorized)" },
	{ "daemon.state_dir", OPT_PATH, OFF(state_dir), ALPS_STATEDIR, 0, 0, NULL,
	  "the image store: alps.db, layers/, tmp/" },
	{ "daemon.run_dir", OPT_PATH, OFF(run_dir), ALPS_RUNDIR, 0, 0, NULL,
	  "job state: jobs/<job>/ with pinned namespaces" },
	{ "daemon.log_level", OPT_ENUM, OFF(log_level), "info", 0, 0, log_levels,
	  "error, warn, notice, info or debug" },
	{ "daemon.admin_group", OPT_STRING, OFF(admin_group), "", 0, 0, NULL,
	  "members of this group may use admin operations (root always may)" },
	{ "daemon.max_connections", OPT_INT, OFF(max_connections), "4096", 1, 1000000, NULL,
	  "connections beyond this are closed at once" },
	{ "daemon.max_connections_per_uid", OPT_INT, OFF(max_connections_per_uid), "128", 1, 1000000,
	  NULL, "connections one user other than root may have open; more are refused" },
	{ "daemon.reserved_connections", OPT_INT, OFF(reserved_connections), "64", 0, 1000000, NULL,
	  "of max_connections, slots only root and the admin group may use (at most half)" },
	{ "daemon.max_queued_output", OPT_SIZE, OFF(max_queued_output), "4M", 64 << 10, 1LL << 30,
	  NULL, "unread reply bytes past which a connection's requests are not read" },
	{ "daemon.max_queued_output_per_uid", OPT_SIZE, OFF(max_queued_output_per_uid), "16M",
	  64 << 10, 16LL << 30, NULL,
	  "unread reply bytes over all of a user's connections past which none is read" },
	{ "daemon.max_input_per_uid", OPT_SIZE, OFF(max_input_per_uid), "16M", 64 << 10, 16LL << 30,
	  NULL, "bytes of requests partly received over a user's connections; the one that "
	  "grows past this is cut (at least max_frame_size)" },
	{ "daemon.frame_timeout", OPT_INT, OFF(frame_timeout_s), "10", 1, 3600, NULL,
	  "seconds to send the first request after connecting, or the rest of one begun "
	  "(at most idle_timeout)" },
	{ "daemon.max_frame_size", OPT_SIZE, OFF(max_frame_size), "4M", 4096, 256LL << 20, NULL,
	  "largest protocol frame accepted; a larger one closes the connection" },
	{ "daemon.idle_timeout", OPT_INT, OFF(idle_timeout_s), "300", 1, 86400, NULL,
	  "seconds a connection without traffic is kept (half-sent requests: frame_timeout)" },
	{ "daemon.shutdown_grace", OPT_INT, OFF(shutdown_grace_s), "10", 0, 3600, NULL,
	  "seconds in-flight requests get to finish at SIGTERM" },
	{ "daemon.workers", OPT_INT, OFF(workers), "0", 0, 256, NULL,
	  "worker pool threads for prepares, layer conversions and other heavy work, and "
	  "the squashfs compressor threads of all conversions together (0: one per CPU; "
	  "read at start)" },

	{ "store.max_size", OPT_SIZE_PCT, OFF(max_size), "0", 0, MAXI, NULL,
	  "size limit of the layer store: bytes, \"200G\" or \"80%\" of its file system (0: none)" },
	{ "store.low_water", OPT_INT, OFF(low_water_pct), "90", 1, 100, NULL,
	  "eviction goes down to this percentage of max_size" },
	{ "store.gc_interval", OPT_INT, OFF(gc_interval_s), "600", 0, 604800, NULL,
	  "seconds between collections of the store on a timer (0: none)" },
	{ "store.compression", OPT_ENUM, OFF(compression), "zstd", 0, 0, compressors,
	  "squashfs compressor of converted layers" },
	{ "store.compression_level", OPT_INT, OFF(compression_level), "3", 0, 22, NULL,
	  "compressor level (0: the compressor's default)" },
	{ "store.max_layer_entries", OPT_INT, OFF(max_layer_entries), "2000000", 1, MAXI, NULL,
	  "a layer with more tar entries is rejected" },
	{ "store.max_layer_bytes", OPT_SIZE, OFF(max_layer_bytes), "256G", 1, MAXI, NULL,
	  "a layer whose uncompressed tar is larger is rejected (decompression bombs)" },
	{ "store.max_parallel_layers", OPT_INT, OFF(max_parallel_layers), "4", 1, 64, NULL,
	  "layers downloaded and converted at once" },

	{ "registry.default", OPT_STRING, OFF(default_registry), "docker.io", 0, 0, NULL,
	  "registry of references that name none" },
	{ "registry.platform", OPT_STRING, OFF(platform), "", 0, 0, NULL,
	  "os/arch[/variant] chosen from image indexes (empty: this node's)" },
	{ "registry.timeout", OPT_INT, OFF(http_timeout_s), "30", 1, 3600, NULL,
	  "seconds without an answer or progress before a registry request is abandoned "
	  "(alps pull --timeout overrides it)" },
	{ "registry.retries", OPT_INT, OFF(http_retries), "5", 0, 100, NULL,
	  "retries of a failed HTTP request (5xx, 429, reset)" },
	{ "registry.connect_timeout", OPT_INT, OFF(connect_timeout_s), "10", 1, 600, NULL,
	  "seconds to connect to a registry (TCP and TLS), at most registry.timeout" },
	{ "registry.connect_retries", OPT_INT, OFF(connect_retries), "2", 0, 100, NULL,
	  "retries, a second apart at most, of a connection the registry refused" },

	{ "jobs.allow_user_run", OPT_BOOL, OFF(allow_user_run), "true", 0, 0, NULL,
	  "whether ordinary users may use 'alps run'" },
	{ "jobs.default_mounts", OPT_LIST, OFF(default_mounts), "", 0, 0, NULL,
	  "mounts added to every job: EDF mounts, with the job user's ${USER}, ${HOME}..." },
	{ "jobs.devices", OPT_LIST, OFF(devices), "", 0, 0, NULL,
	  "host devices bound into every job's /dev (e.g. /dev/fuse)" },
	{ "jobs.prepare_timeout", OPT_INT, OFF(prepare_timeout_s), "30", 1, 3600, NULL,
	  "seconds a job's namespace may take to build before the attempt is killed" },
	{ "jobs.tmp_size", OPT_STRING, OFF(tmp_size), "25%", 0, 0, NULL,
	  "size of each job's /tmp tmpfs: bytes with k, m, g or t, or a share of memory (\"25%\")" },
	{ "jobs.shm_size", OPT_STRING, OFF(shm_size), "50%", 0, 0, NULL,
	  "size of each job's /dev/shm tmpfs, as jobs.tmp_size" },
	{ "jobs.upper_size", OPT_STRING, OFF(upper_size), "25%", 0, 0, NULL,
	  "size of the tmpfs a job's root writes to (writable jobs), as jobs.tmp_size" },
	{ "jobs.max_run_jobs_per_user", OPT_INT, OFF(max_run_jobs_per_user), "16", 1, 100000, NULL,
	  "'alps run' jobs one uid may have on the node at once (prepared or preparing)" },
	{ "jobs.run_ttl", OPT_INT, OFF(run_ttl_s), "86400", 0, 31536000, NULL,
	  "seconds after which an 'alps run' job is released whatever runs in it (0: never)" },
	{ "jobs.exec_timeout", OPT_INT, OFF(exec_timeout_s), "30", 1, 3600, NULL,
	  "seconds an exec'd command may take to start before it is killed" },
	{ "jobs.release_grace", OPT_INT, OFF(release_grace_s), "10", 0, 3600, NULL,
	  "seconds between SIGTERM and SIGKILL for a job's processes at release" },

	{ "topology.xml", OPT_STRING, OFF(topology_xml), "", 0, 0, NULL,
	  "hwloc XML file to load instead of the live machine" },
	{ "topology.nic_patterns", OPT_LIST, OFF(nic_patterns), "hsn*,hsi*,cxi*,mlx5_*,ib*", 0, 0, NULL,
	  "names of high-speed NICs (shell patterns); other NICs are never chosen" },
	{ "topology.reserved_cores", OPT_STRING, OFF(reserved_cores), "none", 0, 0, NULL,
	  "cores kept from jobs: none, first-per-l3, or a list such as 0,8,16-17" },
	{ "topology.hw_threads", OPT_ENUM, OFF(hw_threads), "all", 0, 0, hw_thread_modes,
	  "give tasks all hardware threads of a core, or only the first" },
	{ "topology.nic_env", OPT_LIST, OFF(nic_env), "", 0, 0, NULL,
	  "per-task NIC variables, VAR=template (see doc/alps-topology.md)" },

	{ "fabric.enabled", OPT_BOOL, OFF(fabric_enabled), "false", 0, 0, NULL,
	  "open warm libfabric endpoints and track peers" },
	{ "fabric.node", OPT_STRING, OFF(fabric_node), "", 0, 0, NULL,
	  "this node's name in peer lists and job maps (empty: the host name)" },
	{ "fabric.provider", OPT_STRING, OFF(fabric_provider), "", 0, 0, NULL,
	  "libfabric provider (empty: best of cxi, verbs;ofi_rxm, tcp;ofi_rxm)" },
	{ "fabric.address", OPT_STRING, OFF(fabric_address), "", 0, 0, NULL,
	  "tcp provider: local address to bind" },
	{ "fabric.port", OPT_INT, OFF(fabric_port), "7771", 1, 65535, NULL,
	  "tcp provider: service port of every node's daemon" },
	{ "fabric.peers", OPT_LIST, OFF(peers), "", 0, 0, NULL,
	  "the cluster's nodes, host[:port]" },
	{ "fabric.peers_file", OPT_STRING, OFF(peers_file), "", 0, 0, NULL,
	  "file with one peer per line, read at start and on SIGHUP" },
	{ "fabric.liveness_interval_ms", OPT_INT, OFF(liveness_interval_ms), "5000", 100, 3600000, NULL,
	  "how often each peer is checked" },
	{ "fabric.peer_down_after_ms", OPT_INT, OFF(peer_down_after_ms), "15000", 100, 86400000, NULL,
	  "a peer silent this long is reported down" },

	{ "slurm.rank_env", OPT_BOOL, OFF(slurm_rank_env), "true", 0, 0, NULL,
	  "Slurm tasks get RANK, LOCAL_RANK and WORLD_SIZE" },
	{ "slurm.master_env", OPT_BOOL, OFF(slurm_master_env), "true", 0, 0, NULL,
	  "Slurm tasks get MASTER_ADDR (the step's first node) and MASTER_PORT (one per job)" },
	{ "slurm.placement_env", OPT_BOOL, OFF(slurm_placement_env), "true", 0, 0, NULL,
	  "Slurm tasks get the placement plan's GPU and NIC variables for their local rank" },
	{ "slurm.master_port_min", OPT_INT, OFF(slurm_master_port_min), "29500", 1024, 65535, NULL,
	  "lowest MASTER_PORT" },
	{ "slurm.master_port_max", OPT_INT, OFF(slurm_master_port_max), "29999", 1024, 65535, NULL,
	  "highest MASTER_PORT" },
	{ "slurm.apply_affinity", OPT_BOOL, OFF(slurm_apply_affinity), "false", 0, 0, NULL,
	  "Slurm tasks run on the placement plan's CPUs for their local rank instead of "
	  "Slurm's binding" },

	{ "hooks.cdi_dirs", OPT_LIST, OFF(cdi_dirs), "/etc/cdi,/var/run/cdi", 0, 0, NULL,
	  "directories of CDI specs (JSON, YAML); a later one overrides an earlier one" },
	{ "hooks.oci_dirs", OPT_LIST, OFF(oci_hook_dirs),
	  "/usr/share/containers/oci/hooks.d,/etc/containers/oci/hooks.d", 0, 0, NULL,
	  "directories of OCI hooks (podman's JSON format); a later one overrides by file name" },
	{ "hooks.oci_timeout", OPT_INT, OFF(oci_hook_timeout_s), "30", 1, 3600, NULL,
	  "seconds an OCI hook that names no timeout may run" },
	{ "hooks.lib_dir", OPT_PATH, OFF(hook_lib_dir), "/opt/alps/lib", 0, 0, NULL,
	  "directory in the container of injected host libraries, first on LD_LIBRARY_PATH" },
	{ "hooks.ldconfig_timeout", OPT_INT, OFF(ldconfig_timeout_s), "30", 1, 600, NULL,
	  "seconds the image's ldconfig may run when injected libraries are cached" },
	{ "hooks.mpi.enabled", OPT_BOOL, OFF(mpi_enabled), "false", 0, 0, NULL,
	  "the MPI hook's default when an EDF does not set com.hooks.mpi.enabled" },
	{ "hooks.mpi.libraries", OPT_LIST, OFF(mpi_libraries), "", 0, 0, NULL,
	  "host MPICH-ABI libraries (/path or SONAME=/path) bound over the image's" },
	{ "hooks.mpi.dependencies", OPT_LIST, OFF(mpi_dependencies), "", 0, 0, NULL,
	  "host libraries the MPI libraries need, put into hooks.lib_dir" },
	{ "hooks.mpi.env", OPT_LIST, OFF(mpi_env), "", 0, 0, NULL,
	  "VAR=value set by the MPI hook" },
	{ "hooks.cxi.enabled", OPT_BOOL, OFF(cxi_enabled), "false", 0, 0, NULL,
	  "the CXI hook's default when an EDF does not set com.hooks.cxi.enabled" },
	{ "hooks.cxi.libraries", OPT_LIST, OFF(cxi_libraries), "", 0, 0, NULL,
	  "host libraries the CXI hook binds: libfabric.so.1 and what it needs" },
	{ "hooks.cxi.devices", OPT_LIST, OFF(cxi_devices), "/dev/cxi*", 0, 0, NULL,
	  "host device nodes (glob patterns) of the CXI hook" },
	{ "hooks.cxi.env", OPT_LIST, OFF(cxi_env), "FI_PROVIDER=cxi", 0, 0, NULL,
	  "VAR=value set by the CXI hook" },
	{ "hooks.aws_ofi_nccl.enabled", OPT_BOOL, OFF(nccl_enabled), "false", 0, 0, NULL,
	  "the NCCL/RCCL plugin hook's default (it implies the CXI hook)" },
	{ "hooks.aws_ofi_nccl.variants", OPT_LIST, OFF(nccl_variants), "", 0, 0, NULL,
	  "VARIANT=/host/library of each plugin variant (cuda12, rocm6...), several per variant" },
	{ "hooks.aws_ofi_nccl.default_variant", OPT_STRING, OFF(nccl_default_variant), "", 0, 0,
	  NULL, "variant when com.hooks.aws_ofi_nccl.variant is not set (empty: required)" },
	{ "hooks.aws_ofi_nccl.env", OPT_LIST, OFF(nccl_env), "", 0, 0, NULL,
	  "VAR=value set by the NCCL plugin hook" },
	{ "hooks.amd.enabled", OPT_BOOL, OFF(amd_enabled), "false", 0, 0, NULL,
	  "bind AMD GPU nodes into jobs unless com.hooks.amd.enabled is \"false\"" },
	{ "hooks.amd.devices", OPT_LIST, OFF(amd_devices), "/dev/kfd,/dev/dri/renderD*", 0, 0, NULL,
	  "host device nodes (glob patterns) of the AMD GPU hook" },
	{ "hooks.amd.env", OPT_LIST, OFF(amd_env), "", 0, 0, NULL,
	  "VAR=value set by the AMD GPU hook" },
	{ "hooks.pmix.enabled", OPT_BOOL, OFF(pmix_enabled), "false", 0, 0, NULL,
	  "the PMIx hook's default when an EDF does not set com.hooks.pmix.enabled" },
	{ "hooks.pmix.directories", OPT_LIST, OFF(pmix_dirs), "/var/spool/slurmd", 0, 0, NULL,
	  "host directories bound (same path, writable) for srun --mpi=pmix: SlurmdSpoolDir, "
	  "PMIxCliTmpDirBase" },
	{ "hooks.pmix.env", OPT_LIST, OFF(pmix_env), "", 0, 0, NULL,
	  "VAR=value set by the PMIx hook" },

	{ "metrics.listen", OPT_STRING, OFF(metrics_listen), "", 0, 0, NULL,
	  "serve GET /metrics (Prometheus text) on a loopback HOST:PORT such as 127.0.0.1:9464, "
	  "or on unix:/path (empty: no listener; read at start)" },
	{ "log.target", OPT_STRING, OFF(log_target), "auto", 0, 0, NULL,
	  "where the daemon logs: stderr, syslog (facility daemon), file:/path (reopened on "
	  "SIGHUP), or auto: syslog when detached, else stderr" },
};

static const struct option_def *option_find(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(options); i++)
		if (strcmp(options[i].key, key) == 0)
			return &options[i];
	return NULL;
}

static void strlist_clear(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static void strlist_add(struct strlist *l, const char *s)
{
	l->v = xreallocarray(l->v, l->n + 1, sizeof(char *));
	l->v[l->n++] = xstrdup(s);
}

static int check_int(const struct option_def *o, int64_t v, alps_error **err)
{
	if (v < o->min || v > o->max)
		return alps_fail(err, ALPS_E_INVALID, "%s: %" PRId64 " is out of range [%" PRId64
				 ", %" PRId64 "]", o->key, v, o->min, o->max);
	return 0;
}

/* "key: 'v' is not one of: a, b, c". */
static int enum_error(const struct option_def *o, const char *v, alps_error **err)
{
	_cleanup_free_ char *list = xstrdup("");
	for (const char *const *ch = o->choices; *ch; ch++) {
		char *next = xasprintf("%s%s%s", list, *list ? ", " : "", *ch);
		free(list);
		list = next;
	}
	return alps_fail(err, ALPS_E_INVALID, "%s: '%s' is not one of: %s", o->key, v, list);
}

/* Edit distance (insertions, deletions, substitutions; case-blind) of
 * two short names; large for long ones. */
static size_t distance(const char *a, const char *b)
{
	size_t n = strlen(a), m = strlen(b);
	size_t prev[64], cur[64];
	if (n >= ARRAY_SIZE(prev) || m >= ARRAY_SIZE(prev))
		return SIZE_MAX / 2;
	for (size_t j = 0; j <= m; j++)
		prev[j] = j;
	for (size_t i = 1; i <= n; i++) {
		cur[0] = i;
		for (size_t j = 1; j <= m; j++) {
			size_t best = prev[j - 1] + (tolower((unsigned char)a[i - 1]) !=
						     tolower((unsigned char)b[j - 1]));
			if (prev[j] + 1 < best)
				best = prev[j] + 1;
			if (cur[j - 1] + 1 < best)
				best = cur[j - 1] + 1;
			cur[j] = best;
		}
		memcpy(prev, cur, (m + 1) * sizeof(size_t));
	}
	return prev[m];
}

static size_t near_enough(const char *word)
{
	size_t len = strlen(word);
	return len < 5 ? 1 : len < 10 ? 2 : 3;
}

/* The option an unknown "section.key" most likely meant: a near spelling,
 * or the same key in another section.  NULL when none is close. */
static const char *key_suggest(const char *key)
{
	const char *dot = strchr(key, '.');
	const char *name = dot ? dot + 1 : key;
	size_t best = near_enough(key) + 1;
	const char *pick = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
		const char *oname = strchr(options[i].key, '.') + 1;
		size_t d = distance(key, options[i].key);
		if (strcmp(name, oname) == 0 && d > 1)
			d = 1;
		if (d < best) {
			best = d;
			pick = options[i].key;
		}
	}
	return pick;
}

static const char *const sections[] = { "daemon", "store", "registry", "jobs", "topology",
					"fabric", "slurm", "hooks", "metrics", "log" };

static const char *section_suggest(const char *name)
{
	size_t best = near_enough(name) + 1;
	const char *pick = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(sections); i++) {
		size_t d = distance(name, sections[i]);
		if (d < best) {
			best = d;
			pick = sections[i];
		}
	}
	return pick;
}

static bool section_known(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(sections); i++)
		if (strcmp(sections[i], name) == 0)
			return true;
	return false;
}

static int unknown_key(const char *key, alps_error **err)
{
	const char *hint = key_suggest(key);
	if (hint)
		return alps_fail(err, ALPS_E_INVALID, "%s: unknown key (did you mean '%s'?)", key,
				 hint);
	return alps_fail(err, ALPS_E_INVALID, "%s: unknown key (alpsd --print-config lists "
			 "every key)", key);
}

/* Parse a text value of option o and store it into c. */
static int option_set_text(struct config *c, const struct option_def *o, const char *v,
			   alps_error **err)
{
	void *field = (char *)c + o->offset;
	switch (o->type) {
	case OPT_PATH:
		if (v[0] != '/')
			return alps_fail(err, ALPS_E_INVALID, "%s: must be an absolute path, not '%s'",
					 o->key, v);
		/* fallthrough */
	case OPT_STRING:
		free(*(char **)field);
		*(char **)field = xstrdup(v);
		return 0;
	case OPT_ENUM:
		for (const char *const *ch = o->choices; *ch; ch++) {
			if (strcmp(*ch, v) == 0) {
				free(*(char **)field);
				*(char **)field = xstrdup(v);
				return 0;
			}
		}
		return enum_error(o, v, err);
	case OPT_BOOL:
		if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "1") == 0)
			*(bool *)field = true;
		else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "0") == 0)
			*(bool *)field = false;
		else
			return alps_fail(err, ALPS_E_INVALID, "%s: must be true or false, not '%s'",
					 o->key, v);
		return 0;
	case OPT_INT: {
		char *end;
		errno = 0;
		long long n = strtoll(v, &end, 10);
		if (errno || end == v || *end)
			return alps_fail(err, ALPS_E_INVALID, "%s: must be an integer, not '%s'", o->key,
					 v);
		if (check_int(o, n, err) < 0)
			return -1;
		*(int64_t *)field = n;
		return 0;
	}
	case OPT_SIZE_PCT: {
		size_t len = strlen(v);
		if (len > 1 && v[len - 1] == '%') {
			char *end;
			errno = 0;
			long pct = strtol(v, &end, 10);
			if (errno || end != v + len - 1 || pct < 1 || pct > 100)
				return alps_fail(err, ALPS_E_INVALID, "%s must be 1%% to 100%%, not '%s'",
						 o->key, v);
			*(int64_t *)field = -pct;
			return 0;
		}
	}
		/* fallthrough */
	case OPT_SIZE: {
		uint64_t n;
		if (parse_size(v, &n) < 0 || n > INT64_MAX)
			return alps_fail(err, ALPS_E_INVALID,
					 "%s: must be a size such as 4096, 512M or 10G, not '%s'", o->key,
					 v);
		if (check_int(o, (int64_t)n, err) < 0)
			return -1;
		*(int64_t *)field = (int64_t)n;
		return 0;
	}
	case OPT_LIST: {
		struct strlist *l = field;
		strlist_clear(l);
		_cleanup_free_ char *copy = xstrdup(v);
		char *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
			strlist_add(l, t);
		return 0;
	}
	}
	return alps_fail(err, ALPS_E_INTERNAL, "option %s has an unknown type", o->key);
}

struct config *config_new_defaults(void)
{
	struct config *c = xzalloc(sizeof(*c));
	atomic_init(&c->refs, 1);
	for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
		alps_error *err = NULL;
		if (option_set_text(c, &options[i], options[i].def, &err) < 0)
			log_fatal("built-in default of %s is invalid: %s", options[i].key, err->msg);
	}
	return c;
}

static void registry_conf_clear(struct registry_conf *r)
{
	free(r->host);
	free(r->ca_file);
	strlist_clear(&r->mirrors);
}

struct config *config_ref(struct config *c)
{
	if (c)
		atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

/* Every field, once no one refers to c. */
static void config_destroy(struct config *c)
{
	for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
		void *field = (char *)c + options[i].offset;
		switch (options[i].type) {
		case OPT_STRING:
		case OPT_PATH:
		case OPT_ENUM:
			free(*(char **)field);
			break;
		case OPT_LIST:
			strlist_clear(field);
			break;
		default:
			break;
		}
	}
	for (size_t i = 0; i < c->nregistries; i++)
		registry_conf_clear(&c->registries[i]);
	free(c->registries);
	free(c);
}

static int option_set_toml(struct config *c, const struct option_def *o, const toml_value *v,
			   alps_error **err);

static int config_set_value(struct config *c, const struct option_def *o, const char *value,
			    alps_error **err);

/* A TOML value ("[\"/a:/b\"]", 6, true, "\"x\"") when value is one, else
 * the text as before (an unquoted path, 1 for true, "a,b" for a list). */
void config_unref(struct config *c)
{
	/* acq_rel: the last holder sees every other holder's reads done
	 * before it frees (the same as any reference count). */
	if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
		config_destroy(c);
}

void config_free(struct config *c)
{
	config_unref(c);
}

int config_set(struct config *c, const char *key, const char *value, alps_error **err)
{
	const struct option_def *o = option_find(key);
	if (!o)
		return unknown_key(key, err);
	if (config_set_value(c, o, value, err) < 0)
		return -1;
	/* A topology file named on the command line (--topology-xml) that
	 * cannot be read stops the daemon: the admin asked for that file.
	 * One named in the file is reported and the daemon serves the rest. */
	if (o->offset == OFF(topology_xml) && *c->topology_xml && access(c->topology_xml, R_OK) < 0)
		return alps_fail_errno(err, "topology.xml: cannot read %s", c->topology_xml);
	return 0;
}

static int config_set_value(struct config *c, const struct option_def *o, const char *value,
			    alps_error **err)
{
	_cleanup_free_ char *doc = xasprintf("v = %s\n", value);
	toml_value *root = NULL;
	struct toml_error terr;
	if (toml_parse(doc, strlen(doc), &root, &terr) < 0 || root->u.tab.n != 1) {
		toml_free(root);
		/* Meant as TOML (an array, a quoted string) but broken: say so,
		 * rather than take '["/a"' for a path. */
		if (strchr("[{\"'", value[0]))
			return alps_fail(err, ALPS_E_INVALID, "%s: not a TOML value: %s", o->key,
					 terr.msg);
		return option_set_text(c, o, value, err);
	}
	alps_error *toml_err = NULL;
	int rc = option_set_toml(c, o, root->u.tab.vals[0], &toml_err);
	toml_free(root);
	if (rc == 0)
		return 0;
	if (option_set_text(c, o, value, err) == 0) {
		alps_error_free(toml_err);
		return 0;
	}
	alps_error_free(*err);
	*err = toml_err;
	return -1;
}

/* Store one TOML value v into option o. */
static int option_set_toml(struct config *c, const struct option_def *o, const toml_value *v,
			   alps_error **err)
{
	switch (v->type) {
	case TOML_STRING:
		if (memchr(v->u.str.ptr, '\0', v->u.str.len))
			return alps_fail(err, ALPS_E_INVALID, "%s: must not contain NUL", o->key);
		if (o->type == OPT_LIST) {
			/* A single string for a list is a list of one: no splitting. */
			struct strlist *l = (void *)((char *)c + o->offset);
			strlist_clear(l);
			strlist_add(l, v->u.str.ptr);
			return 0;
		}
		if (o->type == OPT_INT || o->type == OPT_BOOL)
			break;
		return option_set_text(c, o, v->u.str.ptr, err);
	case TOML_INTEGER:
		if (o->type != OPT_INT && o->type != OPT_SIZE && o->type != OPT_SIZE_PCT)
			break;
		if (check_int(o, v->u.i, err) < 0)
			return -1;
		*(int64_t *)((char *)c + o->offset) = v->u.i;
		return 0;
	case TOML_BOOL:
		if (o->type != OPT_BOOL)
			break;
		*(bool *)((char *)c + o->offset) = v->u.b;
		return 0;
	case TOML_ARRAY: {
		if (o->type != OPT_LIST)
			break;
		struct strlist *l = (void *)((char *)c + o->offset);
		strlist_clear(l);
		for (size_t i = 0; i < v->u.arr.n; i++) {
			const toml_value *it = v->u.arr.items[i];
			if (it->type != TOML_STRING || memchr(it->u.str.ptr, '\0', it->u.str.len))
				return alps_fail(err, ALPS_E_INVALID, "%s[%zu]: must be a string", o->key, i);
			strlist_add(l, it->u.str.ptr);
		}
		return 0;
	}
	default:
		break;
	}
	static const char *want[] = {
		[OPT_STRING] = "a string", [OPT_PATH] = "a path string", [OPT_INT] = "an integer",
		[OPT_SIZE] = "an integer or a size string",
		[OPT_SIZE_PCT] = "an integer, a size string or a percentage", [OPT_BOOL] = "true or false",
		[OPT_ENUM] = "a string", [OPT_LIST] = "an array of strings",
	};
	return alps_fail(err, ALPS_E_INVALID, "%s: must be %s, not %s", o->key, want[o->type],
			 toml_type_name(v->type));
}

/* [[registry.host]] entries: host = "...", mirrors = [...], insecure, ca_file. */
static int load_registry_host(struct config *c, const char *path, const toml_value *t,
			      alps_error **err)
{
	if (t->type != TOML_TABLE)
		return alps_fail(err, ALPS_E_INVALID, "%s:%d:%d: registry.host: entries must be "
				 "tables", path, t->line, t->col);
	struct registry_conf r = { 0 };
	for (size_t i = 0; i < t->u.tab.n; i++) {
		const char *k = t->u.tab.keys[i];
		const toml_value *v = t->u.tab.vals[i];
		if (strcmp(k, "host") == 0 && v->type == TOML_STRING) {
			free(r.host);
			r.host = xstrdup(v->u.str.ptr);
		} else if (strcmp(k, "ca_file") == 0 && v->type == TOML_STRING && v->u.str.ptr[0] == '/') {
			free(r.ca_file);
			r.ca_file = xstrdup(v->u.str.ptr);
		} else if (strcmp(k, "insecure") == 0 && v->type == TOML_BOOL) {
			r.insecure = v->u.b;
		} else if (strcmp(k, "mirrors") == 0 && v->type == TOML_ARRAY) {
			for (size_t j = 0; j < v->u.arr.n; j++) {
				if (v->u.arr.items[j]->type != TOML_STRING) {
					registry_conf_clear(&r);
					return alps_fail(err, ALPS_E_INVALID,
							 "%s:%d:%d: registry.host.mirrors: must be "
							 "strings", path, v->line, v->col);
				}
				strlist_add(&r.mirrors, v->u.arr.items[j]->u.str.ptr);
			}
		} else {
			int line = t->u.tab.key_line[i], col = t->u.tab.key_col[i];
			registry_conf_clear(&r);
			return alps_fail(err, ALPS_E_INVALID,
					 "%s:%d:%d: registry.host.%s: unknown key or wrong type "
					 "(host: string, mirrors: array, insecure: bool, ca_file: absolute path)",
					 path, line, col, k);
		}
	}
	if (!r.host) {
		registry_conf_clear(&r);
		return alps_fail(err, ALPS_E_INVALID, "%s:%d:%d: registry.host: an entry without "
				 "'host'", path, t->line, t->col);
	}
	c->registries = xreallocarray(c->registries, c->nregistries + 1, sizeof(*c->registries));
	c->registries[c->nregistries++] = r;
	return 0;
}

static int load_section(struct config *c, const char *path, const char *section,
			const toml_value *t, alps_error **err)
{
	for (size_t i = 0; i < t->u.tab.n; i++) {
		const char *k = t->u.tab.keys[i];
		const toml_value *v = t->u.tab.vals[i];
		int line = t->u.tab.key_line[i], col = t->u.tab.key_col[i];
		if (strcmp(section, "registry") == 0 && strcmp(k, "host") == 0 && v->type == TOML_ARRAY) {
			for (size_t j = 0; j < v->u.arr.n; j++)
				if (load_registry_host(c, path, v->u.arr.items[j], err) < 0)
					return -1;
			continue;
		}
		_cleanup_free_ char *key = xasprintf("%s.%s", section, k);
		/* [hooks.cxi] and other sub-tables: their keys are "hooks.cxi.x". */
		if (v->type == TOML_TABLE && strcmp(section, "hooks") == 0) {
			if (load_section(c, path, key, v, err) < 0)
				return -1;
			continue;
		}
		const struct option_def *o = option_find(key);
		if ((!o && unknown_key(key, err) < 0) || (o && option_set_toml(c, o, v, err) < 0))
			return alps_error_prefix(err, "%s:%d:%d", path, line, col);
	}
	return 0;
}

static int read_file(const char *path, char **out, size_t *len, alps_error **err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return alps_fail_errno(err, "cannot open %s", path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return alps_fail_errno(err, "cannot stat %s", path);
	if (!S_ISREG(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "%s is not a regular file", path);
	if (st.st_size > (1 << 20))
		return alps_fail(err, ALPS_E_LIMIT, "%s is larger than 1 MiB", path);
	char *buf = xmalloc((size_t)st.st_size + 1);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			return alps_fail_errno(err, "cannot read %s", path);
		}
		got += (size_t)n;
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	return 0;
}

int config_load_file(struct config *c, const char *path, bool required, alps_error **err)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (access(path, F_OK) < 0 && errno == ENOENT && !required)
		return 0;
	if (read_file(path, &text, &len, err) < 0)
		return -1;
	toml_value *root = NULL;
	struct toml_error terr;
	if (toml_parse(text, len, &root, &terr) < 0)
		return alps_fail(err, ALPS_E_INVALID, "%s:%d:%d: %s", path, terr.line, terr.col,
				 terr.msg);
	int rc = 0;
	for (size_t i = 0; i < root->u.tab.n && rc == 0; i++) {
		const char *section = root->u.tab.keys[i];
		const toml_value *v = root->u.tab.vals[i];
		if (v->type == TOML_TABLE && section_known(section)) {
			rc = load_section(c, path, section, v, err);
			continue;
		}
		const char *hint = v->type == TOML_TABLE ? section_suggest(section) : NULL;
		rc = alps_fail(err, ALPS_E_INVALID, "%s:%d:%d: %s: %s%s%s%s", path,
			       root->u.tab.key_line[i], root->u.tab.key_col[i], section,
			       v->type == TOML_TABLE ? "unknown section" :
			       "a key outside any section (keys go in [daemon], [store], ...)",
			       hint ? " (did you mean [" : "", hint ? hint : "", hint ? "]?)" : "");
	}
	toml_free(root);
	return rc;
}

/* The converter's own check, at load: a compressor it lacks or a level
 * outside that compressor's range stops the daemon (or a reload) now,
 * naming the key, rather than failing every pull later. */
static int check_compressor(const struct config *c, alps_error **err)
{
	struct squash_opts so = { .compressor = c->compression };
	if (squash_opts_check(&so, err) < 0)
		return alps_error_prefix(err, "store.compression = '%s'", c->compression);
	so.level = (int)c->compression_level;
	if (squash_opts_check(&so, err) < 0)
		return alps_error_prefix(err, "store.compression_level = %" PRId64, c->compression_level);
	return 0;
}

int config_validate(const struct config *c, alps_error **err)
{
	if (check_compressor(c, err) < 0)
		return -1;
	if (strcmp(c->reserved_cores, "none") != 0 && strcmp(c->reserved_cores, "first-per-l3") != 0 &&
	    strspn(c->reserved_cores, "0123456789,-") != strlen(c->reserved_cores))
		return alps_fail(err, ALPS_E_INVALID,
				 "topology.reserved_cores: must be none, first-per-l3 or a cpu list, not '%s'",
				 c->reserved_cores);
	const struct {
		const char *key, *value;
	} sizes[] = { { "jobs.tmp_size", c->tmp_size }, { "jobs.shm_size", c->shm_size },
		      { "jobs.upper_size", c->upper_size } };
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
		if (!tmpfs_size_valid(sizes[i].value))
			return alps_fail(err, ALPS_E_INVALID, "%s: must be bytes with k, m, g or t, or "
					 "1%% to 100%% of memory, not '%s'", sizes[i].key, sizes[i].value);
	for (size_t i = 0; i < c->nic_env.n; i++)
		if (!strchr(c->nic_env.v[i], '='))
			return alps_fail(err, ALPS_E_INVALID, "topology.nic_env: entry '%s' is not VAR=template",
					 c->nic_env.v[i]);
	/* Read and expanded as EDF mounts are, at start: a mistake stops the
	 * daemon here, naming the entry, not every job later. */
	for (size_t i = 0; i < c->default_mounts.n; i++) {
		_cleanup_free_ char *m = NULL;
		if (edf_site_mount(c->default_mounts.v[i], i, NULL, &m, err) < 0)
			return -1;
	}
	if (log_target_check(c->log_target) < 0)
		return alps_fail(err, ALPS_E_INVALID, "log.target: must be auto, stderr, syslog or "
				 "file:/absolute/path, not '%s'", c->log_target);
	if (metrics_listen_check(c->metrics_listen, err) < 0)
		return -1;
	if (c->slurm_master_port_min > c->slurm_master_port_max)
		return alps_fail(err, ALPS_E_INVALID,
				 "slurm.master_port_min: %lld is above slurm.master_port_max (%lld)",
				 (long long)c->slurm_master_port_min, (long long)c->slurm_master_port_max);
	return 0;
}

const struct registry_conf *config_registry(const struct config *c, const char *host)
{
	for (size_t i = 0; i < c->nregistries; i++)
		if (strcmp(c->registries[i].host, host) == 0)
			return &c->registries[i];
	return NULL;
}

bool config_option_info(size_t i, struct config_option_info *out)
{
	static const char *const types[] = {
		[OPT_STRING] = "string", [OPT_PATH] = "path", [OPT_INT] = "integer",
		[OPT_SIZE] = "size", [OPT_SIZE_PCT] = "size or percentage",
		[OPT_BOOL] = "boolean", [OPT_ENUM] = "choice", [OPT_LIST] = "list of strings",
	};
	if (i >= ARRAY_SIZE(options))
		return false;
	const struct option_def *o = &options[i];
	*out = (struct config_option_info){
		.key = o->key, .type = types[o->type], .def = o->def, .help = o->help,
		.choices = o->choices, .min = o->min, .max = o->max,
		.bounded = o->type == OPT_INT || o->type == OPT_SIZE || o->type == OPT_SIZE_PCT,
	};
	return true;
}

/* Print s as a TOML basic string. */
static void print_toml_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void print_option(FILE *out, const struct config *c, const struct option_def *o)
{
	const void *field = (const char *)c + o->offset;
	const char *dot = strchr(o->key, '.');
	fprintf(out, "# %s\n%s = ", o->help, dot + 1);
	switch (o->type) {
	case OPT_STRING:
	case OPT_PATH:
	case OPT_ENUM:
		print_toml_string(out, *(char *const *)field);
		break;
	case OPT_INT:
	case OPT_SIZE:
		fprintf(out, "%" PRId64, *(const int64_t *)field);
		break;
	case OPT_SIZE_PCT: {
		int64_t n = *(const int64_t *)field;
		if (n < 0)
			fprintf(out, "\"%" PRId64 "%%\"", -n);
		else
			fprintf(out, "%" PRId64, n);
		break;
	}
	case OPT_BOOL:
		fputs(*(const bool *)field ? "true" : "false", out);
		break;
	case OPT_LIST: {
		const struct strlist *l = field;
		fputc('[', out);
		for (size_t i = 0; i < l->n; i++) {
			if (i)
				fputs(", ", out);
			print_toml_string(out, l->v[i]);
		}
		fputc(']', out);
		break;
	}
	}
	fputc('\n', out);
}

static void print_registry_host(FILE *out, const struct registry_conf *rc)
{
	fprintf(out, "\n[[registry.host]]\nhost = ");
	print_toml_string(out, rc->host);
	fprintf(out, "\ninsecure = %s\nmirrors = [", rc->insecure ? "true" : "false");
	for (size_t m = 0; m < rc->mirrors.n; m++) {
		fputs(m ? ", " : "", out);
		print_toml_string(out, rc->mirrors.v[m]);
	}
	fputs("]\n", out);
	if (rc->ca_file) {
		fputs("ca_file = ", out);
		print_toml_string(out, rc->ca_file);
		fputc('\n', out);
	}
}

void config_print(const struct config *c, FILE *out)
{
	size_t prev_len = 0;
	const char *prev = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
		const struct option_def *o = &options[i];
		size_t seclen = (size_t)(strchr(o->key, '.') - o->key);
		if (!prev || seclen != prev_len || strncmp(prev, o->key, seclen) != 0) {
			fprintf(out, "%s[%.*s]\n", prev ? "\n" : "", (int)seclen, o->key);
			prev = o->key;
			prev_len = seclen;
		}
		print_option(out, c, o);
	}
	/* Arrays of tables go last: in TOML, keys after a [[...]] header
	 * would belong to its entry.  [registry] is defined above, so the
	 * entries still land in registry.host. */
	for (size_t r = 0; r < c->nregistries; r++)
		print_registry_host(out, &c->registries[r]);
	if (c->nregistries == 0)        /* none set: show that the section exists */
		fputs("\n# per-registry settings, one entry per registry (none set):\n"
		      "# [[registry.host]]\n# host = \"registry.example.org:5000\"\n"
		      "# mirrors = [\"mirror.example.org\"]\n# insecure = false\n"
		      "# ca_file = \"/etc/alps/registry-ca.pem\"\n", out);
}
