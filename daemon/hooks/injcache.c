/* injcache.c: the node's cache of injected libraries (inject.h).
 *
 * A job's libraries and the image's ld.so.cache made for them are built
 * once per image and host stack; the next job binds the same entry, so it
 * copies nothing and runs no ldconfig.  An entry is built in a directory
 * of its own and renamed into place when complete: a crash leaves a
 * ".build-" directory (removed with the image), never a half entry, and
 * two prepares building the same entry at once both succeed (the loser's
 * copy goes).  Entries are root's, read-only to jobs (bound ro). */
#include <config.h>

#define _XOPEN_SOURCE_EXTENDED 1
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/digest.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/image/manifest.h"
#include "daemon/settings.h"
#include "daemon/hooks/hooks.h"
#include "daemon/hooks/inject.h"

#define ENTRY_FORMAT 1
#define ENTRY_MAX_JSON (1 << 20)

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
		log_warn("injection cache: cannot remove %s: %s", path, strerror(errno));
	return 0;
}

void inject_rm_tree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static char *image_dir(const char *state_dir, const char *digest)
{
	return xasprintf("%s/injcache/%s", state_dir, digest_hex(digest));
}

void injcache_drop_image(const char *state_dir, const char *digest)
{
	if (!digest_valid(digest))
		return;
	_cleanup_free_ char *dir = image_dir(state_dir, digest);
	if (access(dir, F_OK) == 0) {
		inject_rm_tree(dir);
		log_info("injection cache: the entries of image %s are gone with it", digest);
	}
}

/* ---- the key ---- */

static json_t *file_fp(const char *name, const char *host)
{
	struct stat st;
	if (stat(host, &st) < 0)
		memset(&st, 0, sizeof(st));
	unsigned v[3];
	mpi_version(host, v);
	char ver[64];
	snprintf(ver, sizeof(ver), "%u.%u.%u", v[0], v[1], v[2]);
	return json_pack("[s, s, I, I, I, s]", name, host, (json_int_t)st.st_size,
			 (json_int_t)st.st_mtim.tv_sec, (json_int_t)st.st_mtim.tv_nsec, ver);
}

/* Hex of a hash of the hooks, lib_dir and the host files' paths, sizes,
 * mtimes and versions (in the real names): another host stack, another
 * entry. */
static char *entry_key(const struct hook_job *hj, const struct inject_image *img,
		       const struct mpi_lib *mpi, size_t nmpi)
{
	json_t *what = json_array(), *libs = json_array(), *m = json_array();
	static const char *const injecting[] = { "cxi", "aws_ofi_nccl", "mpi" };
	for (size_t i = 0; i < hj->nwhat; i++)
		for (size_t j = 0; j < ARRAY_SIZE(injecting); j++)
			if (str_has_prefix(hj->what[i], injecting[j]))
				json_array_append_new(what, json_string(hj->what[i]));
	for (size_t i = 0; i < hj->nlibs; i++)
		json_array_append_new(libs, file_fp(hj->libs[i].name, hj->libs[i].host));
	for (size_t i = 0; i < nmpi; i++) {
		json_t *f = file_fp(mpi[i].soname, mpi[i].host);
		json_array_append_new(f, json_boolean(mpi[i].dependency));
		json_array_append_new(m, f);
	}
	json_t *k = json_pack("{s:i, s:s, s:s, s:o, s:o, s:o}", "format", ENTRY_FORMAT, "image",
			      img->digest, "lib_dir", hj->lib_dir ? hj->lib_dir : "", "hooks", what,
			      "libs", libs, "mpi", m);
	char *text = json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(k);
	char d[DIGEST_STRLEN_MAX];
	digest_sha256(text, strlen(text), d);
	free(text);
	return xstrndup(digest_hex(d), 32);
}

/* ---- building ---- */

/* Copy host (as fingerprinted) to dst; a file that changed since is an
 * error rather than an entry that lies about its key. */
static int copy_lib(const char *host, const char *dst, alps_error **err)
{
	_cleanup_close_ int in = open(host, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	if (in < 0 || fstat(in, &st) < 0)
		return alps_fail_errno(err, "cannot open the host library %s", host);
	_cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
	if (out < 0)
		return alps_fail_errno(err, "cannot create %s", dst);
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write_all(out, buf, (size_t)n) < 0)
			return alps_fail_errno(err, "cannot write %s", dst);
	if (n < 0)
		return alps_fail_errno(err, "cannot read the host library %s", host);
	/* The entry outlives a crash (STATE_DIR): its files are whole when
	 * the rename publishes it. */
	if (fchmod(out, 0755) < 0 || fdatasync(out) < 0)
		return alps_fail_errno(err, "cannot write %s", dst);
	return 0;
}

static int copy_all(const struct hook_job *hj, const char *tmp, const struct mpi_lib *mpi,
		    size_t nmpi, alps_error **err)
{
	for (size_t i = 0; i < hj->nlibs; i++) {
		_cleanup_free_ char *dst = xasprintf("%s/lib/%s", tmp, hj->libs[i].name);
		if (copy_lib(hj->libs[i].host, dst, err) < 0)
			return -1;
	}
	for (size_t i = 0; i < nmpi; i++) {
		_cleanup_free_ char *dst = xasprintf("%s/%s/%s", tmp, mpi[i].dependency ? "lib" : "mpi",
						     mpi[i].soname);
		if (access(dst, F_OK) == 0)
			continue;       /* a dependency the CXI hook brings too */
		if (copy_lib(mpi[i].host, dst, err) < 0)
			return -1;
	}
	return 0;
}

static int write_entry_json(const char *tmp, const struct mpi_lib *mpi, size_t nmpi,
			    bool mpi_none, bool ldcache, const char *why, alps_error **err)
{
	json_t *m = json_array();
	for (size_t i = 0; i < nmpi; i++)
		if (!mpi[i].dependency)
			json_array_append_new(m, json_pack("[s, s]", mpi[i].soname,
							   mpi[i].image_path));
	json_t *e = json_pack("{s:i, s:o, s:b, s:b, s:s?}", "format", ENTRY_FORMAT, "mpi", m,
			      "mpi_none", mpi_none, "ldcache", ldcache, "why", why);
	_cleanup_free_ char *path = xasprintf("%s/entry.json", tmp);
	int rc = json_dump_file(e, path, JSON_COMPACT);
	json_decref(e);
	return rc < 0 ? alps_fail(err, ALPS_E_IO, "cannot write %s", path) : 0;
}

static int build_in(const struct config *cfg, const struct hook_job *hj,
		    const struct inject_image *img, const char *tmp, const struct mpi_lib *mpi,
		    size_t nmpi, alps_error **err)
{
	_cleanup_free_ char *lib = xasprintf("%s/lib", tmp), *mp = xasprintf("%s/mpi", tmp);
	if (mkdir(tmp, 0755) < 0 || mkdir(lib, 0755) < 0 || mkdir(mp, 0755) < 0)
		return alps_fail_errno(err, "cannot create %s", tmp);
	if (copy_all(hj, tmp, mpi, nmpi, err) < 0)
		return -1;
	struct ldcache_run run = { .cfg = cfg, .img = img, .entry = tmp, .lib_dir = hj->lib_dir };
	_cleanup_free_ char *why = NULL;
	int rc = ldcache_build(&run, &why, err);
	if (rc < 0)
		return -1;
	bool mpi_none = hj->mpi;
	for (size_t i = 0; i < nmpi; i++)
		mpi_none = mpi_none && mpi[i].dependency;
	return write_entry_json(tmp, mpi, nmpi, mpi_none, rc == 1, why, err);
}

/* Build the entry dir; an entry another prepare finished first wins. */
static int build_dir(const struct config *cfg, const struct hook_job *hj,
		     const struct inject_image *img, const char *dir, const struct mpi_lib *mpi,
		     size_t nmpi, alps_error **err)
{
	static atomic_uint counter;
	_cleanup_free_ char *parent = xstrdup(dir);
	*strrchr(parent, '/') = '\0';
	if (mkdir_p(parent, 0755) < 0)
		return alps_fail_errno(err, "cannot create %s", parent);
	_cleanup_free_ char *tmp = xasprintf("%s/.build-%s-%d-%u", parent, strrchr(dir, '/') + 1,
					     (int)getpid(), atomic_fetch_add(&counter, 1));
	uint64_t t0 = now_monotonic_ms();
	if (build_in(cfg, hj, img, tmp, mpi, nmpi, err) < 0) {
		inject_rm_tree(tmp);
		return alps_error_prefix(err, "the injection cache");
	}
	if (rename(tmp, dir) < 0) {
		int e = errno;
		inject_rm_tree(tmp);
		if (e != EEXIST && e != ENOTEMPTY)
			return alps_fail(err, ALPS_E_IO, "cannot rename %s: %s", tmp, strerror(e));
	}
	log_notice("injection cache: built %s in %llu ms", dir,
		   (unsigned long long)(now_monotonic_ms() - t0));
	return 0;
}

/* The MPI check, then the entry dir. */
static int build(const struct config *cfg, struct hook_job *hj, const struct inject_image *img,
		 const char *dir, struct mpi_lib **mpi, size_t *nmpi, alps_error **err)
{
	/* The layers stay mounted for the ldconfig namespace too. */
	struct imgtree t;
	if (imgtree_open(&t, cfg->run_dir, img, err) < 0)
		return -1;
	int rc = hj->mpi ? mpi_image_check(&t, img->config_json, hj->mpi_asked, mpi, nmpi, err)
			 : 0;
	if (rc == 0)
		rc = build_dir(cfg, hj, img, dir, *mpi, *nmpi, err);
	imgtree_close(&t);
	return rc;
}

/* ---- using an entry ---- */

static void add_warning(struct hook_job *hj, const char *text)
{
	hj->warnings = xreallocarray(hj->warnings, hj->nwarnings + 1, sizeof(char *));
	hj->warnings[hj->nwarnings++] = xstrdup(text);
}

static int add_entry_mounts(struct hook_job *hj, const char *dir, alps_error **err)
{
	_cleanup_free_ char *path = xasprintf("%s/entry.json", dir);
	json_error_t jerr;
	json_t *e = json_load_file(path, 0, &jerr);
	if (!e || json_integer_value(json_object_get(e, "format")) != ENTRY_FORMAT) {
		json_decref(e);
		return alps_fail(err, ALPS_E_IO, "the injection cache entry %s is unreadable", path);
	}
	_cleanup_free_ char *lib = xasprintf("%s/lib", dir), *cache = xasprintf("%s/ld.so.cache", dir);
	if (json_is_true(json_object_get(e, "mpi_none")))
		add_warning(hj, "the mpi hook (on by this node's default) found no MPICH-ABI library "
			    "in the image: nothing replaced");
	int rc = hook_add_mount(hj, lib, hj->lib_dir, true, err);
	if (rc == 0 && json_is_true(json_object_get(e, "ldcache")))
		rc = hook_add_mount(hj, cache, "/etc/ld.so.cache", true, err);
	size_t i;
	json_t *m;
	json_array_foreach(json_object_get(e, "mpi"), i, m) {
		const char *so = json_string_value(json_array_get(m, 0));
		const char *at = json_string_value(json_array_get(m, 1));
		if (rc < 0 || !so || !at)
			break;
		_cleanup_free_ char *src = xasprintf("%s/mpi/%s", dir, so);
		rc = hook_add_mount(hj, src, at, true, err);
	}
	json_decref(e);
	return rc;
}

/* A squashfs file the user named: no digest to key a cache on; the
 * libraries are bound one by one, no ldconfig. */
static int bind_each(struct hook_job *hj, alps_error **err)
{
	if (hj->mpi)
		return alps_fail(err, ALPS_E_NOT_IMPLEMENTED, "the mpi hook: not implemented for an "
				 "image given as a squashfs file");
	for (size_t i = 0; i < hj->nlibs; i++) {
		_cleanup_free_ char *dst = xasprintf("%s/%s", hj->lib_dir, hj->libs[i].name);
		if (hook_add_mount(hj, hj->libs[i].host, dst, true, err) < 0)
			return -1;
	}
	return 0;
}

int hooks_job_inject(const struct config *cfg, struct hook_job *hj,
		     const struct inject_image *img, alps_error **err)
{
	if (!hj || (!hj->nlibs && !hj->mpi))
		return 0;
	if (!img->digest || !digest_valid(img->digest))
		return bind_each(hj, err);
	struct mpi_lib *mpi = NULL;
	size_t nmpi = 0;
	if (hj->mpi && mpi_host_libs(cfg, &mpi, &nmpi, err) < 0)
		return -1;
	_cleanup_free_ char *key = entry_key(hj, img, mpi, nmpi);
	_cleanup_free_ char *idir = image_dir(cfg->state_dir, img->digest);
	_cleanup_free_ char *dir = xasprintf("%s/%s", idir, key);
	alps_error *e = NULL;
	if (access(dir, F_OK) == 0) {
		if (add_entry_mounts(hj, dir, &e) == 0) {
			log_notice("injection cache: reusing %s", dir);
			mpi_libs_free(mpi, nmpi);
			return 0;
		}
		if (e->code != ALPS_E_IO) {     /* a conflict with another mount */
			mpi_libs_free(mpi, nmpi);
			*err = e;
			return -1;
		}
		/* A crash between the copies and the rename's reaching the disk. */
		log_warn("%s: built again", e->msg);
		alps_error_free(e);
		inject_rm_tree(dir);
	}
	int rc = build(cfg, hj, img, dir, &mpi, &nmpi, err);
	mpi_libs_free(mpi, nmpi);
	if (rc < 0)
		return -1;
	return add_entry_mounts(hj, dir, err);
}
