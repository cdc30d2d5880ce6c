/* edf_site.c: the site's preset EDFs (edf.h, edf_site_dir).
 *
 * A site ships base environments ("lumi-ai": binds, NCCL_SOCKET_IFNAME,
 * MIOpen paths, annotations) in one directory that every user's lookup of
 * a bare name reaches after their own EDF_PATH.  What is found there is
 * merged into other users' jobs, so it is trusted as root's word only:
 * the directory and the file must be root's and writable by no one else
 * (the rule of CDI specs and OCI hooks), and the file is opened below the
 * checked directory, without following a link, and checked on its open
 * descriptor, so nothing can be swapped in between.  Anything else is left
 * out with the reason in the "not found" message. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edf.h"
#include "edf_impl.h"
#include "log.h"

static char *site_dir;          /* edf_set_site_dir's; set once at start */

void edf_set_site_dir(const char *dir)
{
	free(site_dir);
	site_dir = dir ? xstrdup(dir) : NULL;
}

const char *edf_site_dir(void)
{
	if (site_dir)
		return site_dir;
	const char *env = getenv(EDF_SITE_DIR_ENV);
	return env ? env : EDF_SITE_DIR;
}

/* Why fd (a directory or a file) is not root's word, or NULL. */
static const char *untrusted(int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return "cannot be examined";
	if (st.st_uid != 0)
		return "not owned by root";
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return "writable by others than root";
	return NULL;
}

static int left_out(char **note, const char *path, const char *why)
{
	*note = why ? xasprintf("%s (left out: %s)", path, why) : xstrdup(path);
	return 1;
}

int edf_site_search(const char *file, char **resolved, char **content, size_t *len,
		    char **note, alps_error **err)
{
	const char *dir = edf_site_dir();
	*note = NULL;
	if (!dir || !*dir)
		return 1;
	const char *sep = str_has_suffix(dir, "/") ? "" : "/";
	_cleanup_free_ char *path = xasprintf("%s%s%s", dir, sep, file);
	if (dir[0] != '/')
		return left_out(note, path, "the site directory is not an absolute path");
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 && errno == ENOENT)
		return 1;       /* no presets on this node: nothing to mention */
	if (dfd < 0)
		return left_out(note, path, strerror(errno));
	const char *why = untrusted(dfd);
	if (why) {
		_cleanup_free_ char *w = xasprintf("the directory %s is %s", dir, why);
		return left_out(note, path, w);
	}
	_cleanup_close_ int fd = openat(dfd, file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
					O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		return left_out(note, path, NULL);
	if (fd < 0)
		return left_out(note, path, errno == ELOOP ? "a symbolic link" : strerror(errno));
	if ((why = untrusted(fd)))
		return left_out(note, path, why);
	_cleanup_free_ char *esc = log_escape(path, 300);
	if (edf_read_fd(fd, esc, content, len, err) < 0)
		return -1;
	*resolved = steal_pointer(&path);
	return 0;
}
