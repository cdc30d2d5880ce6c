/* cdi.h: Container Device Interface specs (CDI 0.3.0 to 0.8.0).
 *
 * A spec file (JSON or YAML) names a kind "vendor.com/class" and its
 * devices; each device, and the spec as a whole, carries container edits:
 * device nodes, mounts, environment and hooks.  A job asks for devices by
 * their qualified names "vendor.com/class=name" (EDF `devices`).  Specs
 * come from root-owned directories (hooks.cdi_dirs), later directories
 * overriding earlier ones as the CDI specification says, and every field
 * is checked before anything of a spec is used: paths absolute, without
 * "..", bounded; names of the CDI grammar; counts bounded.
 *
 *	struct cdi_registry *reg = cdi_registry_load(dirs, ndirs);
 *	struct cdi_edits edits = { 0 };
 *	if (cdi_resolve(reg, "vendor.com/gpu=0", &edits, err) < 0) ...
 *	cdi_edits_clear(&edits); cdi_registry_free(reg);
 */
#ifndef ALPS_DAEMON_HOOKS_CDI_H
#define ALPS_DAEMON_HOOKS_CDI_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

#define CDI_MAX_FILE (1u << 20)         /* bytes of one spec file */
#define CDI_MAX_ITEMS 1024              /* devices, and entries of each edit list */
#define CDI_MAX_STRING 4096             /* bytes of any string */
#define CDI_MAX_FILES 256               /* spec files per directory */

struct cdi_node {
	char *path;             /* in the container, below /dev */
	char *host_path;        /* on the host; the path when the spec names none */
	char type;              /* 'c', 'b', or 0: whatever the host node is */
	long major, minor;      /* -1: not given */
	unsigned mode;          /* fileMode, 0: not given */
};

struct cdi_mount {
	char *host_path;
	char *container_path;
	bool ro;
};

struct cdi_hook {
	char *stage;            /* hookName: createRuntime, prestart... */
	char *path;
	char **args;            /* NULL-terminated, owned */
	char **env;             /* NULL-terminated, owned */
	int timeout;            /* seconds, 0: none given */
};

struct cdi_edits {
	char **env;             /* "KEY=VALUE", owned */
	size_t nenv;
	struct cdi_node *nodes;
	size_t nnodes;
	struct cdi_mount *mounts;
	size_t nmounts;
	struct cdi_hook *hooks;
	size_t nhooks;
};

struct cdi_device {
	char *name;
	struct cdi_edits edits;
};

struct cdi_spec {
	char *file;             /* where it was read */
	char *version;          /* cdiVersion */
	char *kind;             /* vendor.com/class */
	struct cdi_edits edits; /* applied once with any of its devices */
	struct cdi_device *devices;
	size_t ndevices;
};

/* Parse one spec; yaml selects the YAML reader (JSON is YAML too, but the
 * JSON reader is stricter and faster).  file only names the spec in
 * errors.  *out is the caller's (cdi_spec_free). */
int cdi_spec_parse(const char *text, size_t len, bool yaml, const char *file,
		   struct cdi_spec **out, alps_error **err);
void cdi_spec_free(struct cdi_spec *spec);

struct cdi_registry;
/* Every *.json, *.yaml and *.yml spec of dirs (regular files owned by
 * root, not writable by others); a missing directory holds none.  Specs
 * that do not parse are left out, their errors kept for cdi_resolve's
 * error and logged. */
struct cdi_registry *cdi_registry_load(const char *const *dirs, size_t ndirs);
void cdi_registry_free(struct cdi_registry *reg);
/* Add name's edits (the spec's own edits once per spec) to out.  "all"
 * is every device of the kind when the spec defines no device of that
 * name.  An unknown name fails naming the directories and files searched. */
int cdi_resolve(struct cdi_registry *reg, const char *name, struct cdi_edits *out,
		alps_error **err);
/* Whether name parses as vendor.com/class=device. */
bool cdi_name_valid(const char *name);
void cdi_edits_clear(struct cdi_edits *e);

/* YAML (one document, no aliases, bounded depth and size) as a jansson
 * value; parse_yaml.c.  Caller decrefs. */
struct json_t;
struct json_t *cdi_yaml_to_json(const char *text, size_t len, alps_error **err);

#endif
