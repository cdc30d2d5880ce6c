/* mpi.c: the MPI hook (com.hooks.mpi.enabled): the host's MPICH-ABI
 * libraries (Cray MPICH) replace the image's, after the check the MPICH ABI
 * Compatibility Initiative's version numbers allow (as Sarus's MPI hook
 * does it): the numbers of the libraries' real file names, libmpi.so.12.1.1
 * -> 12.1.1 (missing ones are 0), must have the same major, and the host's
 * minor must be at least the image's - the image was linked against
 * symbols of that minor.  Anything else is refused naming both versions.
 *
 * A host library replaces the image's file its soname resolves to (in the
 * image's LD_LIBRARY_PATH, /etc/ld.so.conf.d and the standard directories,
 * in the order the loader searches them): the host file is bound over it,
 * so programs with an RPATH, setuid ones and those that clear
 * LD_LIBRARY_PATH get it too.  Dependencies go into hooks.lib_dir. */
#include <config.h>

#include <jansson.h>
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
#include "daemon/hooks/inject.h"

#if defined(__x86_64__)
#define TRIPLET "x86_64-linux-gnu"
#elif defined(__aarch64__)
#define TRIPLET "aarch64-linux-gnu"
#else
#define TRIPLET "unknown-linux-gnu"
#endif

static const char *const std_dirs[] = {
	"/usr/local/lib", "/usr/local/lib64", "/lib/" TRIPLET, "/usr/lib/" TRIPLET,
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
};

int hooks_mpi(const struct config *cfg, struct hook_job *hj, bool asked, alps_error **err)
{
	if (cfg->mpi_libraries.n == 0)
		return alps_fail(err, ALPS_E_NOT_FOUND, "the mpi hook is on but this node names no "
				 "host libraries (hooks.mpi.libraries)");
	for (size_t i = 0; i < cfg->mpi_env.n; i++) {
		const char *eq = strchr(cfg->mpi_env.v[i], '=');
		if (!eq || eq == cfg->mpi_env.v[i])
			return alps_fail(err, ALPS_E_INVALID, "hooks.mpi.env: \"%s\" is not VAR=value",
					 cfg->mpi_env.v[i]);
		hook_add_env(hj, cfg->mpi_env.v[i]);
	}
	hj->mpi = true;
	hj->mpi_asked = asked;
	if (!hj->lib_dir)
		hj->lib_dir = xstrdup(cfg->hook_lib_dir);
	hook_add_what(hj, "mpi");
	return 0;
}

void mpi_version(const char *name, unsigned v[3])
{
	v[0] = v[1] = v[2] = 0;
	const char *p = NULL;
	for (const char *q = name; (q = strstr(q, ".so.")); q++)
		p = q + 4;
	for (int i = 0; p && i < 3 && *p >= '0' && *p <= '9'; i++) {
		char *end;
		unsigned long n = strtoul(p, &end, 10);
		v[i] = n > 999999 ? 999999 : (unsigned)n;
		p = *end == '.' ? end + 1 : NULL;
	}
}

/* One configured entry: "/path" or "SONAME=/path". */
static int host_lib(const char *entry, bool dep, struct mpi_lib *out, alps_error **err)
{
	const char *eq = entry[0] == '/' ? NULL : strchr(entry, '=');
	const char *path = eq ? eq + 1 : entry;
	char real[PATH_MAX];
	struct stat st;
	const char *opt = dep ? "hooks.mpi.dependencies" : "hooks.mpi.libraries";
	if (path[0] != '/' || !realpath(path, real) || stat(real, &st) < 0 || !S_ISREG(st.st_mode))
		return alps_fail(err, ALPS_E_NOT_FOUND, "the mpi hook: the host library %s is "
				 "missing or not a file (%s)", path, opt);
	_cleanup_free_ char *copy = xstrdup(path);
	_cleanup_free_ char *name = eq ? xstrndup(entry, (size_t)(eq - entry))
				       : xstrdup(basename(copy));
	if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return alps_fail(err, ALPS_E_INVALID, "%s: \"%s\" is not SONAME=/path", opt, entry);
	*out = (struct mpi_lib){ .soname = steal_pointer(&name), .host = xstrdup(real),
				 .dependency = dep };
	return 0;
}

int mpi_host_libs(const struct config *cfg, struct mpi_lib **out, size_t *n, alps_error **err)
{
	size_t total = cfg->mpi_libraries.n + cfg->mpi_dependencies.n;
	struct mpi_lib *libs = xcalloc(total + 1, sizeof(*libs));
	*n = 0;
	for (size_t i = 0; i < total; i++) {
		bool dep = i >= cfg->mpi_libraries.n;
		const char *e = dep ? cfg->mpi_dependencies.v[i - cfg->mpi_libraries.n]
				    : cfg->mpi_libraries.v[i];
		if (host_lib(e, dep, &libs[i], err) < 0) {
			mpi_libs_free(libs, i);
			return -1;
		}
	}
	*out = libs;
	*n = total;
	return 0;
}

void mpi_libs_free(struct mpi_lib *libs, size_t n)
{
	for (size_t i = 0; libs && i < n; i++) {
		free(libs[i].soname);
		free(libs[i].host);
		free(libs[i].image_path);
	}
	free(libs);
}

/* ---- the image's side ---- */

static void add_dir(char ***v, size_t *n, const char *dir, size_t len)
{
	if (len == 0 || dir[0] != '/' || len >= PATH_MAX || *n >= 256)
		return;
	*v = xreallocarray(*v, *n + 2, sizeof(char *));
	(*v)[(*n)++] = xstrndup(dir, len);
	(*v)[*n] = NULL;
}

/* LD_LIBRARY_PATH of the image's config. */
static void env_dirs(const char *config_json, char ***v, size_t *n)
{
	json_error_t jerr;
	json_t *c = config_json ? json_loads(config_json, 0, &jerr) : NULL;
	json_t *env = json_object_get(json_object_get(c, "config"), "Env");
	size_t i;
	json_t *e;
	json_array_foreach(env, i, e) {
		const char *s = json_string_value(e);
		if (!s || !str_has_prefix(s, "LD_LIBRARY_PATH="))
			continue;
		for (const char *p = s + 16; *p; p += strcspn(p, ":") + (p[strcspn(p, ":")] != 0))
			add_dir(v, n, p, strcspn(p, ":"));
	}
	json_decref(c);
}

/* The directories of /etc/ld.so.conf.d/ *.conf (one per line). */
static void conf_dirs(const struct imgtree *t, char ***v, size_t *n)
{
	char **names = imgtree_list(t, "/etc/ld.so.conf.d");
	for (size_t i = 0; names[i]; i++) {
		if (!str_has_suffix(names[i], ".conf"))
			continue;
		_cleanup_free_ char *path = xasprintf("/etc/ld.so.conf.d/%s", names[i]);
		_cleanup_free_ char *text = imgtree_read(t, path, 65536);
		for (char *l = text; l && *l; l += strcspn(l, "\n") + (l[strcspn(l, "\n")] != 0)) {
			size_t len = strcspn(l, "\n#");
			while (len && (l[len - 1] == ' ' || l[len - 1] == '\t'))
				len--;
			add_dir(v, n, l, len);
		}
	}
	edf_strv_free(names);
}

static char **search_dirs(const struct imgtree *t, const char *config_json)
{
	char **v = xcalloc(1, sizeof(char *));
	size_t n = 0;
	env_dirs(config_json, &v, &n);
	conf_dirs(t, &v, &n);
	for (size_t i = 0; i < ARRAY_SIZE(std_dirs); i++)
		add_dir(&v, &n, std_dirs[i], strlen(std_dirs[i]));
	return v;
}

/* The image's file of soname: the real path of the first directory's. */
static char *image_lib(const struct imgtree *t, char **dirs, const char *soname)
{
	for (size_t i = 0; dirs[i]; i++) {
		_cleanup_free_ char *p = xasprintf("%s/%s", dirs[i], soname);
		char *real = imgtree_resolve(t, p, NULL);
		if (real && imgtree_is_file(t, real))
			return real;
		free(real);
	}
	return NULL;
}

static int abi_check(const struct mpi_lib *l, const char *image_path, alps_error **err)
{
	_cleanup_free_ char *hc = xstrdup(l->host), *ic = xstrdup(image_path);
	unsigned h[3], c[3];
	mpi_version(basename(hc), h);
	mpi_version(basename(ic), c);
	if (h[0] == c[0] && h[1] >= c[1])
		return 0;
	_cleanup_free_ char *esc = log_escape(image_path, 200);
	return alps_fail(err, ALPS_E_INVALID, "the mpi hook: the host's %s (version %u.%u.%u, %s) "
			 "is not ABI-compatible with the image's (version %u.%u.%u, %s): %s",
			 l->soname, h[0], h[1], h[2], l->host, c[0], c[1], c[2], esc,
			 h[0] != c[0] ? "the major versions differ"
				      : "the host's minor version is older than the image's");
}

int mpi_image_check(const struct imgtree *t, const char *config_json, bool asked,
		    struct mpi_lib **libs, size_t *n, alps_error **err)
{
	char **dirs = search_dirs(t, config_json);
	struct mpi_lib *keep = xcalloc(*n + 1, sizeof(*keep));
	size_t kept = 0, found = 0;
	int rc = 0;
	for (size_t i = 0; i < *n && rc == 0; i++) {
		struct mpi_lib *l = &(*libs)[i];
		if (!l->dependency && !(l->image_path = image_lib(t, dirs, l->soname)))
			continue;       /* nothing of the image to replace */
		if (!l->dependency && (rc = abi_check(l, l->image_path, err)) < 0)
			break;
		found += !l->dependency;
		keep[kept++] = *l;
		memset(l, 0, sizeof(*l));
	}
	if (rc == 0 && found == 0 && asked)
		rc = alps_fail(err, ALPS_E_NOT_FOUND, "the mpi hook: the image has no MPICH-ABI "
			       "library to replace (%s searched in its LD_LIBRARY_PATH, "
			       "/etc/ld.so.conf.d and the standard directories)", (*libs)[0].soname);
	if (rc == 0 && found == 0) {
		/* On by the site's default only: an image without MPI runs. */
		mpi_libs_free(keep, kept);
		keep = xcalloc(1, sizeof(*keep));
		kept = 0;
	}
	mpi_libs_free(*libs, *n);
	*libs = keep;
	*n = kept;
	edf_strv_free(dirs);
	return rc;
}
