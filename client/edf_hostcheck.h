/* edf_hostcheck.h: `alps edf check`'s warnings about host integration
 * (doc/hooks.md "Checking an EDF"). */
#ifndef ALPS_CLIENT_EDF_HOSTCHECK_H
#define ALPS_CLIENT_EDF_HOSTCHECK_H

#include <stddef.h>

struct edf;
struct json_t;

/* A warning for each device of e that the CDI specs of dirs (none:
 * hooks.cdi_dirs' default) do not define, naming what was searched. */
void edf_check_cdi(const struct edf *e, const char *const *dirs, size_t ndirs,
		   struct json_t *warnings);
/* A warning when com.hooks.aws_ofi_nccl.variant ("cuda12", "rocm6")
 * does not match the CUDA or ROCm the image's config declares
 * (config_json: the image's, from the node's store; NULL: no check). */
void edf_check_nccl_image(const struct edf *e, const char *config_json,
			  struct json_t *warnings);

#endif
