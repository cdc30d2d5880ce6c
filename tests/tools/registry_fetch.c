/* registry_fetch: resolve a reference and fetch its manifest, config and
 * every layer through the registry client, as the daemon would, and write
 * them into OUTDIR/blobs/<algo>/<hex> (an OCI layout's blob names).  Prints
 * a JSON summary on stdout; on failure {"error": {...}} and exit status 1.
 * The integration tests drive the client with it. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dockercfg.h"
#include "common/log.h"
#include "common/ref.h"
#include "daemon/settings.h"
#include "daemon/image/registry.h"

struct options {
	const char *reference, *outdir, *platform, *default_registry;
	bool enroot;
	int jobs;
	struct config cfg;              /* only the [registry] part is used */
	struct registry_cred *creds;
	size_t ncreds;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: registry_fetch [options] REFERENCE OUTDIR\n"
		"  --platform OS/ARCH[/VARIANT]  platform to choose from an index\n"
		"  --cred [HOST=]USER:PASS       credentials (HOST: the reference's registry)\n"
		"  --docker-config FILE          credentials from a docker config.json\n"
		"  --insecure HOST               allow plain HTTP to HOST\n"
		"  --ca HOST=FILE                extra CA bundle for HOST\n"
		"  --mirror HOST=MIRROR          try MIRROR before HOST\n"
		"  --default-registry HOST       registry of names without one\n"
		"  --retries N --timeout S       HTTP retries and timeout (3, 10)\n"
		"  --jobs N                      blobs fetched in parallel (1)\n"
		"  --enroot                      REFERENCE is [USER@][REGISTRY#]IMAGE[:TAG]\n");
}

static struct registry_conf *conf_get(struct config *c, const char *host)
{
	for (size_t i = 0; i < c->nregistries; i++)
		if (strcmp(c->registries[i].host, host) == 0)
			return &c->registries[i];
	c->registries = xreallocarray(c->registries, c->nregistries + 1, sizeof(*c->registries));
	struct registry_conf *r = &c->registries[c->nregistries++];
	memset(r, 0, sizeof(*r));
	r->host = xstrdup(host);
	return r;
}

/* "KEY=VALUE" -> key (caller frees), *value points into s. */
static char *split_eq(const char *s, const char **value)
{
	const char *eq = strchr(s, '=');
	if (!eq) {
		fprintf(stderr, "registry_fetch: expected HOST=VALUE, got \"%s\"\n", s);
		exit(2);
	}
	*value = eq + 1;
	return xstrndup(s, (size_t)(eq - s));
}

static void add_cred(struct options *o, const char *arg)
{
	const char *colon = strchr(arg, ':'), *eq = strchr(arg, '=');
	const char *userpass = eq && (!colon || eq < colon) ? eq + 1 : arg;
	const char *sep = strchr(userpass, ':');
	if (!sep) {
		fprintf(stderr, "registry_fetch: --cred wants [HOST=]USER:PASS\n");
		exit(2);
	}
	o->creds = xreallocarray(o->creds, o->ncreds + 1, sizeof(*o->creds));
	struct registry_cred *c = &o->creds[o->ncreds++];
	memset(c, 0, sizeof(*c));
	c->host = userpass == arg ? NULL : xstrndup(arg, (size_t)(eq - arg));
	c->username = xstrndup(userpass, (size_t)(sep - userpass));
	c->password = xstrdup(sep + 1);
}

static void load_docker_config(struct options *o, const char *path)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char buf[65536];
	if (!f) {
		fprintf(stderr, "registry_fetch: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	size_t n = fread(buf, 1, sizeof(buf), f);
	alps_error *err = NULL;
	struct registry_cred *c;
	size_t nc;
	if (dockercfg_parse(buf, n, &c, &nc, &err) < 0) {
		fprintf(stderr, "registry_fetch: %s: %s\n", path, err->msg);
		exit(2);
	}
	o->creds = xreallocarray(o->creds, o->ncreds + nc, sizeof(*o->creds));
	memcpy(o->creds + o->ncreds, c, nc * sizeof(*c));
	o->ncreds += nc;
	free(c);
}

static void strlist_add(struct strlist *l, const char *s)
{
	l->v = xreallocarray(l->v, l->n + 1, sizeof(char *));
	l->v[l->n++] = xstrdup(s);
}

static void parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "platform", required_argument, NULL, 'p' },
		{ "cred", required_argument, NULL, 'u' },
		{ "docker-config", required_argument, NULL, 'd' },
		{ "insecure", required_argument, NULL, 'k' },
		{ "ca", required_argument, NULL, 'c' },
		{ "mirror", required_argument, NULL, 'm' },
		{ "default-registry", required_argument, NULL, 'r' },
		{ "retries", required_argument, NULL, 'R' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "jobs", required_argument, NULL, 'j' },
		{ "enroot", no_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *v;
	int c;
	o->cfg.http_retries = 3;
	o->cfg.http_timeout_s = 10;
	o->jobs = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		_cleanup_free_ char *key = NULL;
		switch (c) {
		case 'p': o->platform = optarg; break;
		case 'u': add_cred(o, optarg); break;
		case 'd': load_docker_config(o, optarg); break;
		case 'k': conf_get(&o->cfg, optarg)->insecure = true; break;
		case 'c':
			key = split_eq(optarg, &v);
			conf_get(&o->cfg, key)->ca_file = xstrdup(v);
			break;
		case 'm':
			key = split_eq(optarg, &v);
			strlist_add(&conf_get(&o->cfg, key)->mirrors, v);
			break;
		case 'r': o->default_registry = optarg; break;
		case 'R': o->cfg.http_retries = atoi(optarg); break;
		case 'T': o->cfg.http_timeout_s = atoi(optarg); break;
		case 'j': o->jobs = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
		case 'e': o->enroot = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		exit(2);
	}
	o->reference = argv[optind];
	o->outdir = argv[optind + 1];
}

static void options_free(struct options *o)
{
	for (size_t i = 0; i < o->cfg.nregistries; i++) {
		struct registry_conf *r = &o->cfg.registries[i];
		free(r->host);
		free(r->ca_file);
		for (size_t j = 0; j < r->mirrors.n; j++)
			free(r->mirrors.v[j]);
		free(r->mirrors.v);
	}
	free(o->cfg.registries);
	dockercfg_creds_free(o->creds, o->ncreds);
}

/* ---- output files ---- */

static char *blob_path(const char *outdir, const char *digest, bool tmp)
{
	const char *hex = digest_hex(digest);
	return xasprintf("%s/blobs/%.*s/%s%s", outdir, (int)(hex - digest - 1), digest,
			 tmp ? ".partial-" : "", hex);
}

static int blob_dir(const char *outdir, const char *digest, alps_error **err)
{
	const char *hex = digest_hex(digest);
	_cleanup_free_ char *dir = xasprintf("%s/blobs/%.*s", outdir, (int)(hex - digest - 1),
					     digest);
	if (mkdir_p(dir, 0755) < 0)
		return alps_fail_errno(err, "mkdir %s", dir);
	return 0;
}

static int write_blob(const char *outdir, const char *digest, const void *buf, size_t len,
		      alps_error **err)
{
	_cleanup_free_ char *path = blob_path(outdir, digest, false);
	if (blob_dir(outdir, digest, err) < 0)
		return -1;
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, buf, len) < 0)
		return alps_fail_errno(err, "writing %s", path);
	return 0;
}

static int fd_sink(void *arg, const void *data, size_t len)
{
	return write_all(*(int *)arg, data, len);
}

/* Stream one layer to a temporary file that becomes the blob only when the
 * client says the digest matched. */
static int fetch_layer(struct registry_session *s, const char *outdir,
		       const struct descriptor *d, alps_error **err)
{
	_cleanup_free_ char *tmp = blob_path(outdir, d->digest, true);
	_cleanup_free_ char *path = blob_path(outdir, d->digest, false);
	if (blob_dir(outdir, d->digest, err) < 0)
		return -1;
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return alps_fail_errno(err, "creating %s", tmp);
	if (registry_fetch_layer(s, d, fd_sink, &fd, err) < 0) {
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) < 0)
		return alps_fail_errno(err, "rename %s", tmp);
	return 0;
}

struct pool {
	struct registry_session *s;
	const struct resolved_image *img;
	const char *outdir;
	pthread_mutex_t lock;
	size_t next;
	alps_error *err;        /* the first failure */
};

static void *pool_worker(void *arg)
{
	struct pool *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		size_t i = p->err ? p->img->manifest.nlayers : p->next++;
		pthread_mutex_unlock(&p->lock);
		if (i >= p->img->manifest.nlayers)
			return NULL;
		alps_error *e = NULL;
		if (fetch_layer(p->s, p->outdir, &p->img->manifest.layers[i].desc, &e) < 0) {
			pthread_mutex_lock(&p->lock);
			if (!p->err)
				p->err = steal_pointer(&e);
			pthread_mutex_unlock(&p->lock);
			alps_error_free(e);
		}
	}
}

static int fetch_layers(struct registry_session *s, const struct resolved_image *img,
			const char *outdir, int jobs, alps_error **err)
{
	struct pool p = { .s = s, .img = img, .outdir = outdir };
	pthread_t tids[64];
	int n = jobs < 64 ? jobs : 64, started = 0;
	pthread_mutex_init(&p.lock, NULL);
	for (; started < n; started++)
		if (pthread_create(&tids[started], NULL, pool_worker, &p) != 0)
			break;
	if (started == 0)
		pool_worker(&p);
	for (int i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	pthread_mutex_destroy(&p.lock);
	if (p.err) {
		*err = p.err;
		return -1;
	}
	return 0;
}

/* ---- summary ---- */

static json_t *strv_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *config_json(const struct resolved_image *img)
{
	const struct image_config *c = &img->config;
	json_t *labels = json_object();
	for (size_t i = 0; i < c->nlabels; i++)
		json_object_set_new(labels, c->labels[i].key, json_string(c->labels[i].value));
	return json_pack("{s:s, s:I, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
			 "digest", img->manifest.config.digest,
			 "size", (json_int_t)img->manifest.config.size,
			 "os", c->os, "architecture", c->architecture,
			 "env", strv_json(c->env, c->nenv),
			 "entrypoint", strv_json(c->entrypoint, c->nentrypoint),
			 "cmd", strv_json(c->cmd, c->ncmd),
			 "working_dir", str_or_null(c->working_dir),
			 "user", str_or_null(c->user),
			 "labels", labels,
			 "diff_ids", strv_json(c->diff_ids, c->ndiff_ids));
}

static json_t *layers_json(const struct manifest *m)
{
	static const char *comp[] = { [LAYER_COMPRESSION_NONE] = "none", [LAYER_COMPRESSION_GZIP] = "gzip",
				      [LAYER_COMPRESSION_ZSTD] = "zstd" };
	json_t *a = json_array();
	for (size_t i = 0; i < m->nlayers; i++)
		json_array_append_new(a, json_pack("{s:s, s:I, s:s, s:s, s:b}",
			"digest", m->layers[i].desc.digest,
			"size", (json_int_t)m->layers[i].desc.size,
			"media_type", m->layers[i].desc.media_type,
			"compression", comp[m->layers[i].compression],
			"foreign", m->layers[i].foreign));
	return a;
}

static void print_summary(const struct image_ref *ref, const struct resolved_image *img,
			  struct registry_session *s)
{
	struct registry_stats st;
	registry_get_stats(s, &st);
	_cleanup_free_ char *canon = ref_format(ref);
	_cleanup_free_ char *plat = manifest_platform_format(&img->platform);
	json_t *out = json_pack("{s:s, s:s, s:o, s:s, s:s, s:I, s:s, s:o, s:o, s:{s:I, s:I, s:I, s:I}}",
		"reference", canon, "endpoint", img->endpoint,
		"index_digest", str_or_null(img->index_digest),
		"manifest_digest", img->manifest_digest,
		"manifest_media_type", img->manifest_media_type,
		"manifest_size", (json_int_t)img->manifest_len,
		"platform", plat,
		"config", config_json(img),
		"layers", layers_json(&img->manifest),
		"stats", "requests", (json_int_t)st.requests, "retries", (json_int_t)st.retries,
		"resumes", (json_int_t)st.resumes, "token_fetches", (json_int_t)st.token_fetches);
	json_dumpf(out, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
	fputc('\n', stdout);
	json_decref(out);
}

static int fail_out(alps_error *err)
{
	json_t *out = json_pack("{s:{s:s, s:i, s:s}}", "error", "code", alps_code_name(err->code),
				"code_num", err->code, "message", err->msg);
	json_dumpf(out, stdout, JSON_INDENT(2));
	fputc('\n', stdout);
	json_decref(out);
	fprintf(stderr, "registry_fetch: %s: %s\n", alps_code_name(err->code), err->msg);
	alps_error_free(err);
	return 1;
}

static int write_meta(const char *outdir, const struct resolved_image *img, alps_error **err)
{
	if (img->index_digest &&
	    write_blob(outdir, img->index_digest, img->index_bytes, img->index_len, err) < 0)
		return -1;
	if (write_blob(outdir, img->manifest_digest, img->manifest_bytes, img->manifest_len,
		       err) < 0)
		return -1;
	return write_blob(outdir, img->manifest.config.digest, img->config_bytes,
			  img->config_len, err);
}

static int parse_platform(const char *s, struct platform *p, alps_error **err)
{
	return s ? manifest_platform_parse(s, p, err) : 0;
}

static int run(struct options *o, struct image_ref *ref, alps_error **err)
{
	struct platform plat = { 0 };
	struct resolved_image img;
	int rc = -1;
	if (parse_platform(o->platform, &plat, err) < 0)
		return -1;
	struct registry_session *s = registry_session_new(&o->cfg, ref, o->creds, o->ncreds, err);
	if (!s)
		goto out;
	if (registry_resolve(s, o->platform ? &plat : NULL, &img, err) < 0)
		goto out;
	if (write_meta(o->outdir, &img, err) == 0 &&
	    fetch_layers(s, &img, o->outdir, o->jobs, err) == 0) {
		print_summary(ref, &img, s);
		rc = 0;
	}
	registry_resolved_free(&img);
out:
	registry_session_free(s);
	manifest_platform_free(&plat);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct image_ref ref;
	alps_error *err = NULL;
	log_init("registry_fetch", LOG_LVL_INFO, false);
	parse_options(argc, argv, &o);
	if (registry_global_init(&err) < 0)
		return fail_out(err);
	int rc = o.enroot ? ref_parse_enroot(o.reference, o.default_registry, &ref, NULL, &err)
			  : ref_parse(o.reference, o.default_registry, &ref, &err);
	if (rc < 0) {
		options_free(&o);
		return fail_out(err);
	}
	for (size_t i = 0; i < o.ncreds; i++)
		if (!o.creds[i].host)
			o.creds[i].host = xstrdup(ref.registry);
	rc = run(&o, &ref, &err);
	ref_free(&ref);
	options_free(&o);
	registry_global_cleanup();
	return rc < 0 ? fail_out(err) : 0;
}
