/* imgtree.c: an image's merged tree read from its layers (inject.h).
 *
 * The MPI check needs the image's own libraries before any job of it
 * exists; a job's tree would not do anyway (it holds the user's mounts).
 * The layers are the node's shared read-only mounts (layers.h), taken for
 * the time of the check.  Everything in them is the image's word: paths
 * are opened with openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH) below a
 * layer's root and symlinks are followed here, inside the image, as the
 * kernel's overlay would show them: the top layer that has a name wins,
 * a whiteout (a 0/0 character device) hides it. */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/edf.h"
#include "common/util.h"
#include "daemon/hooks/inject.h"
#include "daemon/job/layers.h"
#include "daemon/job/rundir.h"
#include "daemon/job/sys.h"

#define MAX_LINKS 40

int imgtree_open(struct imgtree *t, const char *run_dir, const struct inject_image *img,
		 alps_error **err)
{
	memset(t, 0, sizeof(*t));
	t->run_dir = run_dir;
	t->ids = img->layer_ids;
	t->fds = xcalloc(img->nlayers + 1, sizeof(int));
	if (ns_run_dir_init(run_dir, err) < 0) {
		imgtree_close(t);
		return -1;
	}
	for (size_t i = 0; i < img->nlayers; i++) {
		_cleanup_free_ char *mnt = NULL;
		if (layer_mount_acquire(run_dir, img->layer_ids[i], img->layer_files[i], &mnt,
					err) < 0) {
			imgtree_close(t);
			return -1;
		}
		t->nacquired++;
		int fd = open(mnt, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			alps_fail_errno(err, "cannot open the layer %s", mnt);
			imgtree_close(t);
			return -1;
		}
		/* top first */
		memmove(t->fds + 1, t->fds, t->n * sizeof(int));
		t->fds[0] = fd;
		t->n++;
	}
	return 0;
}

void imgtree_close(struct imgtree *t)
{
	for (size_t i = 0; i < t->n; i++)
		close(t->fds[i]);
	for (size_t i = 0; i < t->nacquired; i++) {
		alps_error *e = NULL;
		if (layer_mount_release(t->run_dir, t->ids[i], &e) < 0)
			alps_error_free(e);
	}
	free(t->fds);
	memset(t, 0, sizeof(*t));
}

/* rel (no leading '/', no symlink in it) in layer fd. */
static int layer_open(int fd, const char *rel, int flags)
{
	return sys_openat2(fd, *rel ? rel : ".", (uint64_t)(flags | O_CLOEXEC), 0,
			   RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
}

/* The top layer where canonical path rel exists: its index and lstat, or
 * -1 (absent or whited out). */
static int top_layer(const struct imgtree *t, const char *rel, struct stat *st)
{
	for (size_t i = 0; i < t->n; i++) {
		int fd = layer_open(t->fds[i], rel, O_PATH | O_NOFOLLOW);
		if (fd < 0)
			continue;
		int rc = fstat(fd, st);
		close(fd);
		if (rc < 0)
			continue;
		if (S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0))
			return -1;
		return (int)i;
	}
	return -1;
}

/* The target of the link rel of layer i, or NULL. */
static char *read_link(const struct imgtree *t, size_t i, const char *rel)
{
	char buf[PATH_MAX];
	int fd = layer_open(t->fds[i], rel, O_PATH | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	ssize_t n = readlinkat(fd, "", buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	return xstrdup(buf);
}

/* Walk the components of todo onto cur ("" or "a/b", canonical). */
char *imgtree_resolve(const struct imgtree *t, const char *path, size_t *layer)
{
	_cleanup_free_ char *todo = xstrdup(path);
	char cur[PATH_MAX] = "";
	int links = 0, at = -1;
	while (*todo) {
		char *p = todo;
		while (*p == '/')
			p++;
		size_t len = strcspn(p, "/");
		_cleanup_free_ char *comp = xstrndup(p, len);
		char *rest = xstrdup(p + len);
		free(todo);
		todo = rest;
		if (!*comp || strcmp(comp, ".") == 0)
			continue;
		if (strcmp(comp, "..") == 0) {
			char *slash = strrchr(cur, '/');
			*(slash ? slash : cur) = '\0';
			continue;
		}
		char next[PATH_MAX];
		if (xsnprintf(next, sizeof(next), "%s%s%s", cur, *cur ? "/" : "", comp) < 0)
			return NULL;
		struct stat st;
		if ((at = top_layer(t, next, &st)) < 0)
			return NULL;
		if (!S_ISLNK(st.st_mode)) {
			memcpy(cur, next, sizeof(cur));
			continue;
		}
		_cleanup_free_ char *target = read_link(t, (size_t)at, next);
		if (!target || ++links > MAX_LINKS)
			return NULL;
		if (target[0] == '/')
			cur[0] = '\0';
		char *nt = xasprintf("%s/%s", target, todo);
		free(todo);
		todo = nt;
	}
	if (layer)
		*layer = at < 0 ? 0 : (size_t)at;
	return xasprintf("/%s", cur);
}

char *imgtree_read(const struct imgtree *t, const char *path, size_t max)
{
	size_t i;
	_cleanup_free_ char *real = imgtree_resolve(t, path, &i);
	if (!real || !real[1])
		return NULL;
	_cleanup_close_ int fd = layer_open(t->fds[i], real + 1, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return NULL;
	char *buf = xmalloc(max + 1);
	size_t got = 0;
	ssize_t n;
	while (got < max && (n = read(fd, buf + got, max - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	return buf;
}

bool imgtree_is_file(const struct imgtree *t, const char *real)
{
	struct stat st;
	return real[0] == '/' && real[1] && top_layer(t, real + 1, &st) >= 0 &&
	       S_ISREG(st.st_mode);
}

static void add_name(char ***v, size_t *n, const char *name)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp((*v)[i], name) == 0)
			return;
	*v = xreallocarray(*v, *n + 2, sizeof(char *));
	(*v)[(*n)++] = xstrdup(name);
	(*v)[*n] = NULL;
}

char **imgtree_list(const struct imgtree *t, const char *path)
{
	_cleanup_free_ char *real = imgtree_resolve(t, path, NULL);
	char **v = xcalloc(1, sizeof(char *));
	size_t n = 0;
	for (size_t i = 0; real && i < t->n; i++) {
		int fd = layer_open(t->fds[i], real + 1, O_RDONLY | O_DIRECTORY);
		DIR *d = fd < 0 ? NULL : fdopendir(fd);
		if (!d) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		struct dirent *e;
		while ((e = readdir(d)) && n < 4096)
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
				add_name(&v, &n, e->d_name);
		closedir(d);
	}
	return v;
}
