/* config.h: alpsd's configuration.
 *
 * Every option is declared once, in the table in config.c, with its TOML
 * key ("section.name"), type, bounds, default and help.  A file is parsed
 * with the project's TOML parser; unknown keys and bad values are errors
 * that name the file, line and key.  Command-line options are applied on
 * top (config_set()).
 *
 * A loaded config is an immutable snapshot, shared by reference count:
 * the daemon holds the current one, each piece of work takes a reference
 * when it starts (config_ref) and drops it when it ends (config_unref); a
 * reload builds a new config and swaps the daemon's pointer, so work that
 * runs on other threads never sees one freed or changed under it.  Only
 * the thread that built a config writes to it, before sharing it. */
#ifndef ALPS_CONFIG_H
#define ALPS_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"

struct strlist {
	size_t n;
	char **v;       /* owned */
};

struct registry_conf {
	char *host;             /* "docker.io", "localhost:5000" */
	struct strlist mirrors; /* tried in order before host */
	bool insecure;          /* allow plain HTTP */
	char *ca_file;          /* extra CA bundle, or NULL */
};

struct config {
	atomic_uint refs;           /* see config_ref(); 1 when made */

	/* [daemon] */
	char *socket_path;
	char *state_dir;            /* alps.db, layers/, tmp/ */
	char *run_dir;              /* jobs/<job>/, lock */
	char *log_level;
	char *admin_group;          /* "" = root only */
	int64_t max_connections;
	int64_t max_connections_per_uid;    /* root is exempt */
	int64_t reserved_connections;       /* for root and admins, of max_connections */
	int64_t max_queued_output;          /* unread reply bytes per connection */
	int64_t max_queued_output_per_uid;  /* ... over all of one uid's connections */
	int64_t max_input_per_uid;          /* requests partly received, per uid */
	int64_t max_frame_size;
	int64_t idle_timeout_s;     /* no traffic */
	int64_t frame_timeout_s;    /* first frame, or the rest of a frame begun */
	int64_t shutdown_grace_s;   /* in-flight requests at SIGTERM */
	int64_t workers;            /* worker pool and compressor budget; 0 = CPUs */

	/* [store] */
	int64_t max_size;           /* bytes, 0 = unlimited, < 0: -percent of the file system */
	int64_t low_water_pct;      /* eviction goes down to this % of max_size */
	int64_t gc_interval_s;      /* collection timer; 0 = none */
	char *compression;          /* squashfs compressor */
	int64_t compression_level;
	int64_t max_layer_entries;
	int64_t max_layer_bytes;    /* uncompressed tar bytes */
	int64_t max_parallel_layers;

	/* [registry] */
	char *default_registry;
	char *platform;             /* "" = the node's */
	int64_t http_timeout_s;
	int64_t http_retries;
	int64_t connect_timeout_s;
	int64_t connect_retries;
	struct registry_conf *registries;   /* [[registry.host]] */
	size_t nregistries;

	/* [jobs] */
	bool allow_user_run;
	struct strlist default_mounts;      /* "SRC:DST[:FLAGS]" */
	struct strlist devices;             /* host devices bound into /dev */
	int64_t prepare_timeout_s;          /* a namespace helper taking longer is killed */
	char *tmp_size;                     /* tmpfs size= of /tmp: "25%", "4g" */
	char *shm_size;                     /* tmpfs size= of /dev/shm */
	char *upper_size;                   /* tmpfs size= of the overlay's upper layer */
	int64_t max_run_jobs_per_user;      /* 'alps run' jobs of one uid at once */
	int64_t run_ttl_s;                  /* an older 'alps run' job is released; 0: never */
	int64_t exec_timeout_s;             /* an exec not started by then is killed */
	int64_t release_grace_s;            /* SIGTERM to SIGKILL at release */

	/* [topology] */
	char *topology_xml;                 /* "" = the live machine */
	struct strlist nic_patterns;        /* fnmatch() on OS device names */
	char *reserved_cores;               /* "none", "first-per-l3", or a cpu list */
	char *hw_threads;                   /* "all" or "first" */
	struct strlist nic_env;             /* "VAR=template" for NIC variables */

	/* [fabric] */
	bool fabric_enabled;
	char *fabric_node;                  /* this node's name among peers; "" = hostname */
	char *fabric_provider;              /* "" = best of cxi, verbs;ofi_rxm, tcp;ofi_rxm */
	char *fabric_address;               /* tcp: local address to bind */
	int64_t fabric_port;                /* tcp: service port */
	struct strlist peers;               /* "host[:port]" or addresses */
	char *peers_file;
	int64_t liveness_interval_ms;
	int64_t peer_down_after_ms;

	/* [slurm] */
	bool slurm_rank_env;                /* RANK, LOCAL_RANK, WORLD_SIZE */
	bool slurm_master_env;              /* MASTER_ADDR, MASTER_PORT */
	bool slurm_placement_env;           /* the placement plan's variables */
	int64_t slurm_master_port_min;
	int64_t slurm_master_port_max;
	bool slurm_apply_affinity;          /* the plan's CPU mask over Slurm's binding */

	/* [hooks] (daemon/hooks/, doc/hooks.md) */
	struct strlist cdi_dirs;            /* CDI spec directories, later ones win */
	struct strlist oci_hook_dirs;       /* hooks.d directories of OCI hooks */
	int64_t oci_hook_timeout_s;         /* a hook that names no timeout gets this */
	char *hook_lib_dir;                 /* where injected libraries land in the container */
	int64_t ldconfig_timeout_s;         /* the image's ldconfig (inject.h) */
	bool mpi_enabled;                   /* [hooks.mpi] */
	struct strlist mpi_libraries;       /* "/path" or "SONAME=/path" */
	struct strlist mpi_dependencies;
	struct strlist mpi_env;
	bool cxi_enabled;                   /* [hooks.cxi]: the site default */
	struct strlist cxi_libraries;       /* host libfabric and what it needs */
	struct strlist cxi_devices;         /* glob()s of host device nodes */
	struct strlist cxi_env;             /* "VAR=value" */
	bool nccl_enabled;                  /* [hooks.aws_ofi_nccl] */
	struct strlist nccl_variants;       /* "VARIANT=/host/lib.so" */
	char *nccl_default_variant;
	struct strlist nccl_env;
	bool amd_enabled;                   /* [hooks.amd] */
	struct strlist amd_devices;
	struct strlist amd_env;
	bool pmix_enabled;                  /* [hooks.pmix] (hooks/pmix.c) */
	struct strlist pmix_dirs;           /* host dirs of Slurm's PMIx servers */
	struct strlist pmix_env;

	/* [metrics], [log] (daemon/server/metrics_http.h, common/log.h) */
	char *metrics_listen;               /* "" none, loopback HOST:PORT or unix:/path */
	char *log_target;                   /* auto, stderr, syslog or file:/path */
};

/* A config with every default, holding one reference (the caller's). */
struct config *config_new_defaults(void);
/* Another reference to c (NULL-safe); any thread. */
struct config *config_ref(struct config *c);
/* Drop a reference (NULL-safe); the last one frees c.  Any thread. */
void config_unref(struct config *c);
/* The same as config_unref(): for the maker of a config never shared. */
void config_free(struct config *c);
/* Load path on top of c.  A missing file is an error only if required. */
int config_load_file(struct config *c, const char *path, bool required, alps_error **err);
/* Set one option by key from a string (command line: --set, --socket...):
 * a TOML value (6, true, "x", ["/a:/b"]) or the plain text form (/x, 1, a,b).
 * A --topology-xml file that cannot be read is an error here. */
int config_set(struct config *c, const char *key, const char *value, alps_error **err);
/* Cross-option checks after everything is applied. */
int config_validate(const struct config *c, alps_error **err);
/* Print the effective config as TOML, with help comments. */
void config_print(const struct config *c, FILE *out);
/* Option i of the table, for the generated alpsd.conf(5) page; false past
 * the last.  type is "string", "path", "integer", "size", "size or
 * percentage", "boolean", "choice", "list of strings"; choices is NULL
 * or NULL-terminated; min and max bound integers and sizes. */
struct config_option_info {
	const char *key, *type, *def, *help;
	const char *const *choices;
	int64_t min, max;
	bool bounded;
};
bool config_option_info(size_t i, struct config_option_info *out);
/* alpsd.conf(5) in roff (settings_man.c). */
void config_print_man(FILE *out);

/* The registry entry for host, or NULL. */
const struct registry_conf *config_registry(const struct config *c, const char *host);

#endif
