/* oci.h: OCI hooks - podman's and CRI-O's hooks.d JSON files, and the
 * hooks CDI specs carry - chosen for a job and run at the points of
 * prepare and release that match their stages.
 *
 * A hooks.d file (version "1.0.0"):
 *	{ "version": "1.0.0",
 *	  "hook": { "path": "/usr/bin/x", "args": ["x", "prestart"],
 *		    "env": ["K=V"], "timeout": 5 },
 *	  "when": { "always": true, "annotations": { "KEY-REGEX": "VALUE-REGEX" },
 *		    "commands": ["REGEX"], "hasBindMounts": true },
 *	  "stages": ["prestart", "poststop"] }
 * A hook applies when any "when" condition holds.  The stages map onto
 * alps's steps: prestart, createRuntime, createContainer, startContainer
 * and poststart run once the job's namespace is built (prepare fails if
 * one fails); poststop runs at release (a failure is logged).  Each hook
 * gets the OCI state JSON on stdin, runs as root with only its own env,
 * and is killed (with its process group) at its timeout. */
#ifndef ALPS_DAEMON_HOOKS_OCI_H
#define ALPS_DAEMON_HOOKS_OCI_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"

struct cdi_hook;
struct config;
struct edf;
struct hook_job;

#define OCI_HOOK_MAX_FILE (64u << 10)
#define OCI_HOOK_MAX_OUTPUT 4096        /* bytes of a hook's output kept for errors */

enum oci_stage {
	OCI_STAGE_CREATE = 1u << 0,     /* prestart ... poststart: after prepare */
	OCI_STAGE_POSTSTOP = 1u << 1,   /* at release */
};

struct oci_hook {
	char *name;             /* the hooks.d file, or "CDI hook PATH" */
	char *path;
	char **args;            /* NULL-terminated; args[0] may be NULL: path */
	char **env;             /* NULL-terminated */
	int timeout_s;
	unsigned stages;        /* enum oci_stage */
};

struct oci_hooks {
	struct oci_hook *v;
	size_t n;
};

/* Parse one hooks.d file; name names it in errors.  *out is filled (free
 * with oci_hook_clear); *when_matches says whether it applies to a job
 * with these annotations and bind mounts. */
struct oci_when_ctx {
	const struct edf *edf;
	bool has_binds;
};
int oci_hook_parse(const char *text, size_t len, const char *name, int default_timeout_s,
		   const struct oci_when_ctx *ctx, struct oci_hook *out, bool *when_matches,
		   alps_error **err);
void oci_hook_clear(struct oci_hook *h);

/* Add the hooks.d hooks that apply to a job (hooks.oci_dirs, later
 * directories overriding earlier ones by file name). */
int oci_hooks_select(const struct config *cfg, const struct edf *edf, const struct hook_job *hj,
		     struct oci_hooks **hooks, alps_error **err);
/* A hook of a CDI spec; default_timeout_s when it names none. */
int oci_hooks_add_cdi(struct oci_hooks **hooks, const struct cdi_hook *h, int default_timeout_s,
		      alps_error **err);
void oci_hooks_free(struct oci_hooks *hooks);

/* Run the hooks of stage in order with the OCI state of the job on
 * stdin (annotations: the EDF's, an object); the first failure stops and
 * names the hook. */
struct json_t;
int oci_hooks_run(const struct oci_hooks *hooks, enum oci_stage stage, const char *job,
		  const char *bundle, pid_t pid, struct json_t *annotations, alps_error **err);
/* The same, appending each hook's record (hook_record in hooks.h: name
 * "oci FILE", result, duration, last lines of output) to record. */
int oci_hooks_run_rec(const struct oci_hooks *hooks, enum oci_stage stage, const char *job,
		      const char *bundle, pid_t pid, struct json_t *annotations,
		      struct json_t *record, alps_error **err);
/* The EDF's annotations as an object.  Caller decrefs. */
struct json_t *oci_annotations(const struct edf *edf);

/* The hooks of stage as JSON (kept in the job's row until its release),
 * and back: what does not read as a hook is left out.  Callers decref and
 * free (oci_hooks_free). */
struct json_t *oci_hooks_to_json(const struct oci_hooks *hooks, enum oci_stage stage);
struct oci_hooks *oci_hooks_from_json(const struct json_t *array);

#endif
