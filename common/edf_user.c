/* edf_user.c: the job user's world an EDF is read and expanded in, and
 * what an image file holds (see edf.h). */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edf.h"
#include "edf_impl.h"
#include "log.h"

/* The names the user database decides: a root prolog's own USER or HOME
 * must never stand for the job user's. */
static const char *const user_names[] = { "USER", "LOGNAME", "HOME", "UID" };

static bool is_user_name(const char *entry)
{
	for (size_t i = 0; i < ARRAY_SIZE(user_names); i++) {
		size_t n = strlen(user_names[i]);
		if (strncmp(entry, user_names[i], n) == 0 && entry[n] == '=')
			return true;
	}
	return false;
}

char **edf_user_env(const char *const *caller_env, const char *name, unsigned long uid,
		    const char *home)
{
	size_t n = 0;
	while (caller_env && caller_env[n])
		n++;
	char **v = xcalloc(n + ARRAY_SIZE(user_names) + 1, sizeof(char *));
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (!is_user_name(caller_env[i]))
			v[k++] = xstrdup(caller_env[i]);
	v[k++] = xasprintf("USER=%s", name);
	v[k++] = xasprintf("LOGNAME=%s", name);
	v[k++] = xasprintf("UID=%lu", uid);
	if (home)
		v[k++] = xasprintf("HOME=%s", home);
	v[k] = NULL;
	return v;
}

/* The first bytes of the kinds of files people name as an image. */
static const char *file_kind(const unsigned char *b, size_t n)
{
	if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b)
		return "a gzip file (an image archive must be imported first)";
	if (n >= 262 && memcmp(b + 257, "ustar", 5) == 0)
		return "a tar archive (an image archive must be imported first)";
	if (n >= 4 && memcmp(b, "\x28\xb5\x2f\xfd", 4) == 0)
		return "a zstd file (an image archive must be imported first)";
	if (n >= 4 && memcmp(b, "\x7f" "ELF", 4) == 0)
		return "an executable";
	if (n >= 4 && memcmp(b, "sqsh", 4) == 0)
		return "a big-endian squashfs image (not supported)";
	return n < 4 ? "too short to be a squashfs image" : "not a squashfs image";
}

int edf_image_file_check(int fd, const char *display, alps_error **err)
{
	_cleanup_free_ char *esc = log_escape(display, 300);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return alps_fail_errno(err, "%s", esc);
	if (S_ISDIR(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "image %s is a directory, not a squashfs "
				 "image", esc);
	if (!S_ISREG(st.st_mode))
		return alps_fail(err, ALPS_E_INVALID, "image %s is not a regular file", esc);
	unsigned char b[512];
	ssize_t r;
	do
		r = pread(fd, b, sizeof(b), 0);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return alps_fail_errno(err, "reading %s", esc);
	/* The squashfs superblock starts with "hsqs" (0x73717368, little
	 * endian), version 4.0 at byte 28. */
	if (r >= 32 && memcmp(b, "hsqs", 4) == 0 && b[28] == 4 && b[29] == 0)
		return 0;
	return alps_fail(err, ALPS_E_INVALID, "image %s: %s", esc, file_kind(b, (size_t)r));
}

/* What prepare refuses in an expanded EDF beyond its values: `alps edf
 * check` calls it too, so that both say the same words.  Devices are CDI
 * names; a /dev path would let a user pick any node of the host. */
int edf_job_check(const struct edf *e, alps_error **err)
{
	for (size_t i = 0; i < e->ndevices; i++) {
		const struct edf_loc *l = &e->devices[i].loc;
		if (e->devices[i].value && e->devices[i].value[0] == '/')
			return alps_fail(err, ALPS_E_INVALID, "%s:%d:%d: %s: device paths are not "
					 "accepted; name a CDI device (vendor.com/class=name)",
					 l->file, l->line, l->col, l->key);
	}
	return 0;
}

/* ---- jobs.default_mounts ---------------------------------------------- */

static const char *const site_sample_env[] = {
	"USER=user", "LOGNAME=user", "HOME=/home/user", "UID=1000", NULL,
};

/* Only the user database's names: site mounts are opened as root, so no
 * variable a user sets may steer them. */
static char **site_env(const char *const *user_env)
{
	char **v = xcalloc(ARRAY_SIZE(user_names) + 1, sizeof(char *));
	size_t k = 0;
	for (size_t i = 0; user_env && user_env[i]; i++)
		if (is_user_name(user_env[i]))
			v[k++] = xstrdup(user_env[i]);
	return v;
}

/* "SRC:DST[:ro|rw][+rbind]", the form jobenv reads. */
static char *site_text(const struct edf_mount *m)
{
	const char *mode = (m->flags & EDF_MOUNT_RO) ? "ro" : "rw";
	return xasprintf("%s:%s:%s%s", m->src, m->dst, mode,
			 (m->flags & EDF_MOUNT_RECURSIVE) ? "+rbind" : "");
}

int edf_site_mount(const char *spec, size_t idx, const char *const *user_env, char **out,
		   alps_error **err)
{
	*out = NULL;
	_cleanup_free_ char *key = xasprintf("jobs.default_mounts[%zu]", idx);
	_cleanup_edf_ struct edf *e = edf_new("alpsd.conf");
	struct pctx p = { .e = e, .file = "alpsd.conf" };
	toml_value v = { .type = TOML_STRING, .u.str = { (char *)spec, strlen(spec) } };
	if (mount_parse_key(&p, &v, key, err) < 0)
		return -1;
	char **env = site_env(user_env ? user_env : site_sample_env);
	struct edf_context ctx = { .caller_env = (const char *const *)env };
	int rc = edf_expand(e, &ctx, err);
	edf_strv_free(env);
	if (rc < 0)
		return -1;
	if (e->mounts[0].flags & EDF_MOUNT_SQSH)
		return alps_fail(err, ALPS_E_INVALID, "%s: 'sqsh' is not supported in site "
				 "mounts", key);
	*out = site_text(&e->mounts[0]);
	return 0;
}
