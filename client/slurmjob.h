/* slurmjob.h: what travels from `srun`/`sbatch` (the SPANK plugin's local
 * side, as the user) to the nodes (the plugin in slurmstepd and `alps
 * prolog`, as root), and the calls both ends make to alpsd.
 *
 * The local side reads the user's EDF (and its bases) with the user's
 * rights, turns pyxis-style --container-* options into one more EDF on
 * top, validates the whole, and packs the files' content, the user's
 * variables the files reference and the working directory into one
 * PrepareRequest, carried base64-encoded in the job's environment
 * (ALPS_SPANK_JOB for steps) and its control environment
 * (SPANK_ALPS_SPANK_JOB for the prolog).  The nodes never open a user's
 * EDF path: they prepare from that content, so every node of the job
 * prepares exactly what srun validated. */
#ifndef ALPS_CLIENT_SLURMJOB_H
#define ALPS_CLIENT_SLURMJOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/edf.h"
#include "common/error.h"
#include "proto/alps.pb-c.h"
#include "proto/wire.h"

#define SLURMJOB_ENV "ALPS_SPANK_JOB"
/* Most bytes of the encoded form (a job's environment carries it). */
#define SLURMJOB_MAX_ENCODED (2u << 20)

/* pyxis's options, as given (NULL/-1: not given). */
struct container_opts {
	const char *image;
	const char *mounts;             /* "SRC:DST[:FLAGS],..." */
	const char *workdir;
	int writable;                   /* -1, 0 (--container-readonly), 1 */
	const char *env_names;          /* "NAME,...": taken from the caller */
	int mount_home;                 /* -1, 0, 1 */
	int entrypoint;                 /* -1, 0, 1 */
};

bool container_opts_given(const struct container_opts *o);

/* The EDF text the options stand for, with base_environment = base when
 * base is not NULL (the --environment file under them).  caller_env gives
 * the values of --container-env names and HOME.  Caller frees. */
int slurmjob_options_edf(const struct container_opts *o, const char *base,
			 const char *const *caller_env, char **toml, alps_error **err);

/* Load (as the calling process), merge, expand and validate: edf (a path
 * or a name, or NULL) under the options' EDF (or NULL when no option was
 * given).  On success *req is a PrepareRequest with environment (the
 * files, top first), caller_env (the variables the files reference) and
 * cwd set; free with slurmjob_request_free().  Errors name file, line and
 * key. */
int slurmjob_build(const char *edf, const struct container_opts *o,
		   const char *const *caller_env, const char *cwd, Alps__PrepareRequest **req,
		   alps_error **err);
void slurmjob_request_free(Alps__PrepareRequest *req);
/* The same; *tag: the image's canonical reference when it is a registry
 * tag (no digest) that could be pinned, else NULL.  Caller frees.
 * defaults (NULL-terminated "KEY=VALUE", or NULL): the site's default
 * annotations (plugstack.conf), for each KEY the merged environment sets
 * no value for, as one more EDF file on top (SLURMJOB_DEFAULTS_EDF). */
int slurmjob_build_ref(const char *edf, const struct container_opts *o,
		       const char *const *caller_env, const char *cwd,
		       const char *const *defaults, Alps__PrepareRequest **req, char **tag,
		       alps_error **err);
#define SLURMJOB_DEFAULTS_EDF "alps-site-annotations.toml"
/* A default annotation as plugstack.conf gives it: KEY=VALUE, KEY of
 * [A-Za-z0-9._-] (at most 128 bytes), VALUE printable, no quote or
 * backslash (at most 256 bytes). */
bool slurmjob_default_ok(const char *kv);

/* Pinning the image at submission, so every node of the job runs the same
 * image even if the tag moves while the job waits: the local alpsd (at
 * socket) asks the registry what tag points to now; the answer,
 * "TAG@DIGEST", goes on top of the request as one more EDF file
 * (SLURMJOB_PIN_EDF: base_environment = the user's, image = TAG@DIGEST),
 * so the prolog and the steps prepare exactly that.  NULL with err when
 * no alpsd answers or the registry cannot be reached. */
#define SLURMJOB_PIN_EDF "alps-pinned-image.toml"
/* The job's pin, "TAG@DIGEST", for the sruns inside an sbatch/salloc job. */
#define SLURMJOB_PIN_ENV "ALPS_SPANK_PIN"
char *slurmjob_resolve(const char *socket, const char *tag, int timeout_ms, alps_error **err);
/* Is pinned "TAG@sha..." for this tag (and nothing a TOML string needs escaped)? */
bool slurmjob_pin_matches(const char *pinned, const char *tag);
int slurmjob_pin(Alps__PrepareRequest *req, const char *pinned, alps_error **err);

/* Replace a string field of a request this module handed out (unset
 * fields point to protobuf-c's shared empty string, never freed). */
void slurmjob_set_string(char **field, const char *value);

/* The encoded form (base64 of the packed request).  Caller frees. */
char *slurmjob_encode(const Alps__PrepareRequest *req);
/* Decode and check; ALPS_E_INVALID naming what is wrong. */
int slurmjob_decode(const char *text, Alps__PrepareRequest **req, alps_error **err);

/* The container id of a Slurm job: "JOBID", or "JOBID.NAME" for
 * --container-name.  NAME: [A-Za-z0-9_-], at most 64.  Caller frees. */
char *slurmjob_container_id(uint32_t job_id, const char *name, alps_error **err);

#endif
