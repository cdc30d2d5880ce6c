/* creds.c: see creds.h. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/creds.h"
#include "common/util.h"

static char *docker_config_path(void)
{
	const char *dir = getenv("DOCKER_CONFIG");
	const char *home = getenv("HOME");
	return dir && *dir ? xasprintf("%s/config.json", dir)
	     : home && *home ? xasprintf("%s/.docker/config.json", home) : NULL;
}

static int read_docker_config(const char *path, struct registry_cred **creds, size_t *n,
			      alps_error **err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? 0 : alps_fail_errno(err, "%s", path);
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > DOCKERCFG_MAX_SIZE)
		return alps_fail(err, ALPS_E_INVALID, "%s: not a regular file of at most 1 MiB", path);
	_cleanup_free_ char *buf = xmalloc((size_t)st.st_size + 1);
	ssize_t got = read(fd, buf, (size_t)st.st_size);
	if (got != st.st_size)
		return alps_fail_errno(err, "cannot read %s", path);
	buf[got] = '\0';
	if (dockercfg_parse(buf, (size_t)got, creds, n, err) < 0)
		return alps_error_prefix(err, "%s", path);
	return 0;
}

static void creds_to_msgs(struct client_creds *c)
{
	size_t n = c->n ? c->n : 1;
	c->msgs = xcalloc(n, sizeof(*c->msgs));
	c->ptrs = xcalloc(n, sizeof(*c->ptrs));
	for (size_t i = 0; i < c->n; i++) {
		const struct registry_cred *r = &c->creds[i];
		alps__registry_credential__init(&c->msgs[i]);
		c->msgs[i].registry = r->host;
		c->msgs[i].username = r->username ? r->username : (char *)"";
		c->msgs[i].password = r->password ? r->password : (char *)"";
		c->msgs[i].identity_token = r->identity_token ? r->identity_token : (char *)"";
		c->ptrs[i] = &c->msgs[i];
	}
}

int client_creds_load(struct client_creds *out, alps_error **err)
{
	_cleanup_free_ char *path = docker_config_path();
	memset(out, 0, sizeof(*out));
	int rc = path ? read_docker_config(path, &out->creds, &out->n, err) : 0;
	if (rc < 0) {
		out->creds = NULL;
		out->n = 0;
	}
	creds_to_msgs(out);
	return rc;
}

void client_creds_free(struct client_creds *c)
{
	dockercfg_creds_free(c->creds, c->n);
	free(c->msgs);
	free(c->ptrs);
	memset(c, 0, sizeof(*c));
}
