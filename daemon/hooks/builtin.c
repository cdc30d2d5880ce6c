/* builtin.c: the hooks alps has built in, each selected by an EDF
 * annotation with a site default from alpsd.conf (hooks_builtin in
 * hooks.h):
 *
 *   com.hooks.cxi.enabled           the host's libfabric and its
 *                                   dependencies, /dev/cxi*, FI_PROVIDER
 *   com.hooks.aws_ofi_nccl.enabled  the NCCL/RCCL network plugin of
 *   com.hooks.aws_ofi_nccl.variant  a variant; implies CXI
 *   com.hooks.amd.enabled           /dev/kfd and the render nodes
 *   com.hooks.mpi.enabled           the host's MPICH (mpi.c)
 *   com.hooks.ssh.enabled           refused: not implemented
 *
 * Libraries go into hooks.lib_dir (a node cache entry, inject.h), which
 * the job's environment puts first on LD_LIBRARY_PATH and the image's own
 * ldconfig first in its ld.so.cache.  Everything the site configured must
 * exist: a missing library or no matching device fails the prepare naming
 * it. */
#include <config.h>

#include <glob.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/edf.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/hooks/hooks.h"

/* An annotation "true" or "false"; dflt when absent. */
static int flag(const struct edf *edf, const char *key, bool dflt, bool *on, alps_error **err)
{
	const char *v = edf ? edf_annotation_get(edf, key) : NULL;
	*on = dflt;
	if (!v)
		return 0;
	if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
		*on = v[0] == 't';
		return 0;
	}
	_cleanup_free_ char *esc = log_escape(v, 100);
	return alps_fail(err, ALPS_E_INVALID, "annotation %s = \"%s\": \"true\" or \"false\"", key,
			 esc);
}

int hook_annotation_flag(const struct edf *edf, const char *key, bool dflt, bool *on,
			 alps_error **err)
{
	return flag(edf, key, dflt, on, err);
}

static int add_env_list(struct hook_job *hj, const struct strlist *env, const char *opt,
			alps_error **err)
{
	for (size_t i = 0; i < env->n; i++) {
		const char *eq = strchr(env->v[i], '=');
		if (!eq || eq == env->v[i])
			return alps_fail(err, ALPS_E_INVALID, "%s: \"%s\" is not VAR=value", opt,
					 env->v[i]);
		hook_add_env(hj, env->v[i]);
	}
	return 0;
}

/* A host library into lib_dir/<its configured name> (hooks_job_inject); a
 * link is followed on the host, so the container sees the file itself. */
static int add_library(struct hook_job *hj, const struct config *cfg, const char *lib,
		       const char *hook, alps_error **err)
{
	char real[PATH_MAX];
	struct stat st;
	if (lib[0] != '/' || !realpath(lib, real) || stat(real, &st) < 0 || !S_ISREG(st.st_mode))
		return alps_fail(err, ALPS_E_NOT_FOUND, "the %s hook: the host library %s is missing "
				 "or not a file (hooks.%s)", hook, lib, hook);
	_cleanup_free_ char *copy = xstrdup(lib);
	if (!hj->lib_dir)
		hj->lib_dir = xstrdup(cfg->hook_lib_dir);
	return hook_add_lib(hj, real, basename(copy), err);
}

/* Where a host node lands: the part from its path's last "/dev/" on
 * (/dev/dri/renderD128 stays, /srv/fake/dev/cxi0 is /dev/cxi0), else
 * /dev/NAME.  Caller frees. */
static char *container_dev_path(const char *host)
{
	const char *at = NULL;
	for (const char *p = host; (p = strstr(p, "/dev/")); p++)
		at = p;
	if (at && at[5])
		return xstrdup(at);
	_cleanup_free_ char *copy = xstrdup(host);
	return xasprintf("/dev/%s", basename(copy));
}

/* Host nodes matching patterns, each where container_dev_path says. */
static int add_devices(struct hook_job *hj, const struct strlist *patterns, const char *hook,
		       alps_error **err)
{
	for (size_t i = 0; i < patterns->n; i++) {
		glob_t g;
		int rc = glob(patterns->v[i], 0, NULL, &g);
		if (rc != 0) {
			globfree(&g);
			return alps_fail(err, ALPS_E_NOT_FOUND, "the %s hook: no host device matches "
					 "%s (hooks.%s.devices)", hook, patterns->v[i], hook);
		}
		for (size_t j = 0; j < g.gl_pathc && rc == 0; j++) {
			const char *host = g.gl_pathv[j];
			struct stat st;
			_cleanup_free_ char *path = container_dev_path(host);
			if (stat(host, &st) < 0 || (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)))
				rc = alps_fail(err, ALPS_E_INVALID, "the %s hook: %s is not a device "
					       "node", hook, host);
			else
				rc = hook_add_device(hj, host, path, err);
		}
		globfree(&g);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int cxi(const struct config *cfg, struct hook_job *hj, alps_error **err)
{
	if (cfg->cxi_libraries.n == 0)
		return alps_fail(err, ALPS_E_NOT_FOUND, "the cxi hook is on but this node names no "
				 "host libraries (hooks.cxi.libraries)");
	for (size_t i = 0; i < cfg->cxi_libraries.n; i++)
		if (add_library(hj, cfg, cfg->cxi_libraries.v[i], "cxi", err) < 0)
			return -1;
	if (add_devices(hj, &cfg->cxi_devices, "cxi", err) < 0 ||
	    add_env_list(hj, &cfg->cxi_env, "hooks.cxi.env", err) < 0)
		return -1;
	hook_add_what(hj, "cxi");
	return 0;
}

/* The variant's libraries: entries "VARIANT=/path" of hooks.aws_ofi_nccl.variants. */
static int nccl(const struct config *cfg, const struct edf *edf, struct hook_job *hj,
		alps_error **err)
{
	const char *v = edf ? edf_annotation_get(edf, "com.hooks.aws_ofi_nccl.variant") : NULL;
	if (!v || !*v)
		v = cfg->nccl_default_variant;
	if (!v || !*v)
		return alps_fail(err, ALPS_E_INVALID, "the aws_ofi_nccl hook needs "
				 "com.hooks.aws_ofi_nccl.variant (this node has no default)");
	size_t vlen = strlen(v), found = 0;
	_cleanup_free_ char *known = xstrdup("");
	for (size_t i = 0; i < cfg->nccl_variants.n; i++) {
		const char *e = cfg->nccl_variants.v[i], *eq = strchr(e, '=');
		if (!eq)
			return alps_fail(err, ALPS_E_INVALID, "hooks.aws_ofi_nccl.variants: \"%s\" is "
					 "not VARIANT=/path", e);
		char *next = xasprintf("%s%s%.*s", known, *known ? " " : "", (int)(eq - e), e);
		free(known);
		known = next;
		if ((size_t)(eq - e) != vlen || strncmp(e, v, vlen) != 0)
			continue;
		if (add_library(hj, cfg, eq + 1, "aws_ofi_nccl", err) < 0)
			return -1;
		found++;
	}
	if (!found) {
		_cleanup_free_ char *esc = log_escape(v, 100);
		return alps_fail(err, ALPS_E_NOT_FOUND, "the aws_ofi_nccl hook has no variant \"%s\" "
				 "on this node (it has: %s)", esc, *known ? known : "none");
	}
	if (add_env_list(hj, &cfg->nccl_env, "hooks.aws_ofi_nccl.env", err) < 0)
		return -1;
	_cleanup_free_ char *what = xasprintf("aws_ofi_nccl %s", v);
	hook_add_what(hj, what);
	return 0;
}

static int amd(const struct config *cfg, struct hook_job *hj, alps_error **err)
{
	if (add_devices(hj, &cfg->amd_devices, "amd", err) < 0 ||
	    add_env_list(hj, &cfg->amd_env, "hooks.amd.env", err) < 0)
		return -1;
	hook_add_what(hj, "amd");
	return 0;
}

int hooks_builtin(const struct config *cfg, const struct edf *edf, struct hook_job *hj,
		  alps_error **err)
{
	bool on_cxi, on_nccl, on_amd, on_ssh, on_mpi;
	if (flag(edf, "com.hooks.ssh.enabled", false, &on_ssh, err) < 0 ||
	    flag(edf, "com.hooks.mpi.enabled", cfg->mpi_enabled, &on_mpi, err) < 0 ||
	    flag(edf, "com.hooks.cxi.enabled", cfg->cxi_enabled, &on_cxi, err) < 0 ||
	    flag(edf, "com.hooks.aws_ofi_nccl.enabled", cfg->nccl_enabled, &on_nccl, err) < 0 ||
	    flag(edf, "com.hooks.amd.enabled", cfg->amd_enabled, &on_amd, err) < 0)
		return -1;
	if (on_ssh)
		return alps_fail(err, ALPS_E_NOT_IMPLEMENTED, "com.hooks.ssh.enabled: the SSH hook "
				 "is not implemented");
	const char *cxi_set = edf ? edf_annotation_get(edf, "com.hooks.cxi.enabled") : NULL;
	if (on_nccl && cxi_set && strcmp(cxi_set, "false") == 0)
		return alps_fail(err, ALPS_E_INVALID, "com.hooks.aws_ofi_nccl.enabled needs the CXI "
				 "hook, which com.hooks.cxi.enabled = \"false\" turns off");
	if ((on_cxi || on_nccl) && cxi(cfg, hj, err) < 0)
		return -1;
	if (on_nccl && nccl(cfg, edf, hj, err) < 0)
		return -1;
	if (on_amd && amd(cfg, hj, err) < 0)
		return -1;
	if (on_mpi && hooks_mpi(cfg, hj, edf && edf_annotation_get(edf, "com.hooks.mpi.enabled"),
				err) < 0)
		return -1;
	return hooks_pmix(cfg, edf, hj, err);
}
