/* slurmjob.c: the job description that travels from srun to the nodes
 * (see slurmjob.h). */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/creds.h"
#include "client/slurmjob.h"
#include "common/base64.h"
#include "common/util.h"

#define OPTIONS_EDF_NAME "container-options.toml"
#define MAX_CALLER_ENV 1024

bool container_opts_given(const struct container_opts *o)
{
	return o->image || o->mounts || o->workdir || o->writable >= 0 || o->env_names ||
	       o->mount_home >= 0 || o->entrypoint >= 0;
}

static const char *env_lookup(const char *const *env, const char *name, size_t len)
{
	for (size_t i = 0; env && env[i]; i++)
		if (strncmp(env[i], name, len) == 0 && env[i][len] == '=')
			return env[i] + len + 1;
	return NULL;
}

/* A TOML basic string. */
static void toml_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static bool var_name_ok(const char *s, size_t len)
{
	if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_'))
			return false;
	}
	return true;
}

static void write_mounts(FILE *f, const struct container_opts *o, const char *home)
{
	fputs("mounts = [", f);
	bool first = true;
	if (o->mounts) {
		_cleanup_free_ char *copy = xstrdup(o->mounts);
		char *save = NULL;
		for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
			fputs(first ? "" : ", ", f);
			toml_str(f, m);
			first = false;
		}
	}
	if (o->mount_home == 1 && home) {
		fputs(first ? "" : ", ", f);
		toml_str(f, home);
	}
	fputs("]\n", f);
}

static int write_env(FILE *f, const char *names, const char *const *caller_env, alps_error **err)
{
	fputs("[env]\n", f);
	_cleanup_free_ char *copy = xstrdup(names);
	char *save = NULL;
	for (char *n = strtok_r(copy, ",", &save); n; n = strtok_r(NULL, ",", &save)) {
		if (!var_name_ok(n, strlen(n)))
			return alps_fail(err, ALPS_E_INVALID, "--container-env: '%s' is not a "
					 "variable name", n);
		const char *v = env_lookup(caller_env, n, strlen(n));
		if (!v)
			return alps_fail(err, ALPS_E_INVALID, "--container-env: %s is not set", n);
		fprintf(f, "%s = ", n);
		toml_str(f, v);
		fputc('\n', f);
	}
	return 0;
}

int slurmjob_options_edf(const struct container_opts *o, const char *base,
			 const char *const *caller_env, char **toml, alps_error **err)
{
	*toml = NULL;
	const char *home = env_lookup(caller_env, "HOME", 4);
	if (o->mount_home == 1 && (!home || home[0] != '/'))
		return alps_fail(err, ALPS_E_INVALID, "--container-mount-home: HOME is not an "
				 "absolute path");
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);
	if (!f)
		return alps_fail_errno(err, "open_memstream");
	fputs("# from srun's --container-* options\n", f);
	if (base) {
		fputs("base_environment = ", f);
		toml_str(f, base);
		fputc('\n', f);
	}
	if (o->image) {
		fputs("image = ", f);
		toml_str(f, o->image);
		fputc('\n', f);
	}
	if (o->workdir) {
		fputs("workdir = ", f);
		toml_str(f, o->workdir);
		fputc('\n', f);
	}
	if (o->writable >= 0)
		fprintf(f, "writable = %s\n", o->writable ? "true" : "false");
	if (o->entrypoint >= 0)
		fprintf(f, "entrypoint = %s\n", o->entrypoint ? "true" : "false");
	if (o->mounts || o->mount_home == 1)
		write_mounts(f, o, home);
	int rc = o->env_names ? write_env(f, o->env_names, caller_env, err) : 0;
	fclose(f);
	if (rc < 0) {
		free(text);
		return -1;
	}
	*toml = text;
	return 0;
}

/* ---- loading: the options' EDF served by name, the rest from files ---- */

struct opts_loader {
	const char *text;       /* the options' EDF, or NULL */
};

static int opts_load(void *arg, const char *name, char **resolved_path, char **content,
		     size_t *len, alps_error **err)
{
	struct opts_loader *l = arg;
	if (l->text && strcmp(name, OPTIONS_EDF_NAME) == 0) {
		*resolved_path = xstrdup("(srun options)");
		*content = xstrdup(l->text);
		*len = strlen(l->text);
		return 0;
	}
	return edf_file_loader.load(edf_file_loader.arg, name, resolved_path, content, len, err);
}

/* The names a text references as $NAME or ${NAME...} ($$ escapes). */
static void add_referenced(const char *text, const char *const *caller_env, char ***vars,
			   size_t *n)
{
	for (const char *p = text; (p = strchr(p, '$')); ) {
		p++;
		if (*p == '$') {
			p++;
			continue;
		}
		if (*p == '{')
			p++;
		size_t len = 0;
		while (var_name_ok(p, len + 1))
			len++;
		const char *v = len ? env_lookup(caller_env, p, len) : NULL;
		bool seen = false;
		for (size_t i = 0; v && i < *n; i++)
			seen = seen || (strncmp((*vars)[i], p, len) == 0 && (*vars)[i][len] == '=');
		if (v && !seen && *n < MAX_CALLER_ENV) {
			*vars = xreallocarray(*vars, *n + 1, sizeof(char *));
			(*vars)[(*n)++] = xasprintf("%.*s=%s", (int)len, p, v);
		}
		p += len;
	}
}

/* Load, merge and expand what first names; *sources on success. */
static int load_checked(const char *first, const char *opts_text, const char *const *caller_env,
			const char *cwd, struct edf **merged, struct edf_source **src, size_t *n,
			alps_error **err)
{
	struct opts_loader ol = { .text = opts_text };
	struct edf_loader loader = { .load = opts_load, .arg = &ol };
	if (edf_load_all(first, &loader, merged, src, n, err) < 0)
		return -1;
	struct edf_context ctx = { .caller_env = caller_env, .cwd = cwd };
	if (edf_expand(*merged, &ctx, err) < 0) {
		edf_free(*merged);
		*merged = NULL;
		edf_sources_free(*src, *n);
		*src = NULL;
		return -1;
	}
	return 0;
}

/* Pack and unpack, so that every request this module hands out is freed
 * the same way (alps__prepare_request__free_unpacked). */
static Alps__PrepareRequest *request_copy(const Alps__PrepareRequest *r)
{
	size_t len = alps__prepare_request__get_packed_size(r);
	_cleanup_free_ uint8_t *buf = xmalloc(len ? len : 1);
	alps__prepare_request__pack(r, buf);
	return alps__prepare_request__unpack(NULL, len, buf);
}

static Alps__PrepareRequest *request_from(const struct edf_source *src, size_t n,
					  const char *const *caller_env, const char *cwd)
{
	Alps__EdfSource *es = xcalloc(n ? n : 1, sizeof(*es));
	Alps__EdfSource **esv = xcalloc(n ? n : 1, sizeof(*esv));
	char **vars = NULL;
	size_t nvars = 0;
	for (size_t i = 0; i < n; i++) {
		alps__edf_source__init(&es[i]);
		es[i].path = src[i].name;
		es[i].content = src[i].content;
		esv[i] = &es[i];
		add_referenced(src[i].content, caller_env, &vars, &nvars);
	}
	Alps__PrepareRequest pr = ALPS__PREPARE_REQUEST__INIT;
	pr.environment = esv;
	pr.n_environment = n;
	pr.caller_env = vars;
	pr.n_caller_env = nvars;
	pr.cwd = (char *)(cwd ? cwd : "");
	Alps__PrepareRequest *out = request_copy(&pr);
	for (size_t i = 0; i < nvars; i++)
		free(vars[i]);
	free(vars);
	free(esv);
	free(es);
	return out;
}

/* A registry reference without a digest (a tag to pin), canonical, or NULL. */
static char *tag_ref(const struct edf *e)
{
	if (e->image_kind != EDF_IMAGE_REF || e->ref.digest || e->image_user)
		return NULL;
	return ref_format(&e->ref);
}

int slurmjob_build(const char *edf, const struct container_opts *o,
		   const char *const *caller_env, const char *cwd, Alps__PrepareRequest **req,
		   alps_error **err)
{
	return slurmjob_build_ref(edf, o, caller_env, cwd, NULL, req, NULL, err);
}

bool slurmjob_default_ok(const char *kv)
{
	const char *eq = strchr(kv, '=');
	if (!eq || eq == kv || eq - kv > 128 || strlen(eq + 1) > 256 ||
	    strspn(kv, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
		    (size_t)(eq - kv))
		return false;
	for (const char *c = eq + 1; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f || *c == '"' || *c == '\\')
			return false;
	return true;
}

/* One more EDF file on top of req's: base_environment = the top one, then
 * body.  Takes body. */
static int add_top_layer(Alps__PrepareRequest *req, const char *name, char *body,
			 alps_error **err)
{
	if (req->n_environment == 0 || req->n_environment >= EDF_MAX_FILES) {
		free(body);
		return alps_fail(err, ALPS_E_LIMIT, "no room for %s", name);
	}
	Alps__EdfSource *top = xmalloc(sizeof(*top));
	alps__edf_source__init(top);
	top->path = xstrdup(name);
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f) {
		free(body);
		free(top->path);
		free(top);
		return alps_fail_errno(err, "open_memstream");
	}
	fputs("base_environment = ", f);
	toml_str(f, req->environment[0]->path);
	fputc('\n', f);
	fputs(body, f);
	free(body);
	fclose(f);
	top->content = text;
	req->environment = xreallocarray(req->environment, req->n_environment + 1,
					 sizeof(*req->environment));
	memmove(req->environment + 1, req->environment,
		req->n_environment * sizeof(*req->environment));
	req->environment[0] = top;
	req->n_environment++;
	return 0;
}

/* The site's default annotations that merged does not set, as an EDF
 * body, or NULL when there are none. */
static char *defaults_body(const struct edf *merged, const char *const *defaults)
{
	char *body = NULL;
	size_t len = 0;
	FILE *f = NULL;
	for (size_t i = 0; defaults && defaults[i]; i++) {
		const char *eq = strchr(defaults[i], '=');
		_cleanup_free_ char *key = xstrndup(defaults[i], (size_t)(eq - defaults[i]));
		if (edf_annotation_get(merged, key))
			continue;
		if (!f) {
			f = open_memstream(&body, &len);
			if (!f)
				return NULL;
			fputs("# the site's default annotations (plugstack.conf)\n[annotations]\n", f);
		}
		toml_str(f, key);
		fputs(" = ", f);
		toml_str(f, eq + 1);
		fputc('\n', f);
	}
	if (f)
		fclose(f);
	return body;
}

int slurmjob_build_ref(const char *edf, const struct container_opts *o,
		       const char *const *caller_env, const char *cwd,
		       const char *const *defaults, Alps__PrepareRequest **req, char **tag,
		       alps_error **err)
{
	*req = NULL;
	if (tag)
		*tag = NULL;
	bool opts = o && container_opts_given(o);
	if (!edf && !opts)
		return alps_fail(err, ALPS_E_INVALID, "no --environment and no --container-image");
	if (o && o->image && edf) {
		/* --container-image may only fill in an EDF without an image. */
		struct edf *probe = NULL;
		struct edf_source *ps = NULL;
		size_t pn = 0;
		if (load_checked(edf, NULL, caller_env, cwd, &probe, &ps, &pn, err) < 0)
			return -1;
		bool has = *edf_image(probe) != '\0';
		_cleanup_free_ char *img = has ? xstrdup(edf_image(probe)) : NULL;
		edf_free(probe);
		edf_sources_free(ps, pn);
		if (has)
			return alps_fail(err, ALPS_E_INVALID, "--container-image with --environment=%s, "
					 "which already names the image '%s'", edf, img);
	}
	_cleanup_free_ char *text = NULL;
	if (opts && slurmjob_options_edf(o, edf, caller_env, &text, err) < 0)
		return -1;
	struct edf *merged = NULL;
	struct edf_source *src = NULL;
	size_t n = 0;
	if (load_checked(opts ? OPTIONS_EDF_NAME : edf, text, caller_env, cwd, &merged, &src, &n,
			 err) < 0)
		return -1;
	bool no_image = *edf_image(merged) == '\0';
	if (tag)
		*tag = tag_ref(merged);
	char *site = no_image ? NULL : defaults_body(merged, defaults);
	edf_free(merged);
	if (no_image) {
		edf_sources_free(src, n);
		return alps_fail(err, ALPS_E_INVALID, "%s names no image (set image = ... or "
				 "--container-image)", edf ? edf : "the --container-* options");
	}
	*req = request_from(src, n, caller_env, cwd);
	edf_sources_free(src, n);
	if (!*req || (site && add_top_layer(*req, SLURMJOB_DEFAULTS_EDF,
					     steal_pointer(&site), err) < 0)) {
		free(site);
		if (tag) {
			free(*tag);
			*tag = NULL;
		}
		if (*req) {
			slurmjob_request_free(*req);
			*req = NULL;
			return -1;
		}
		return alps_fail(err, ALPS_E_INTERNAL, "cannot pack the job description");
	}
	return 0;
}

/* ---- pinning the image ---- */

char *slurmjob_resolve(const char *socket, const char *tag, int timeout_ms, alps_error **err)
{
	struct wire_client c;
	if (wire_connect(&c, socket, "alps-spank", err) < 0)
		return NULL;
	/* As the user: a private image is pinned too.  A broken config file
	 * means no credentials (the prepare on the nodes says more if needed). */
	struct client_creds creds;
	alps_error *cerr = NULL;
	client_creds_load(&creds, &cerr);
	alps_error_free(cerr);
	Alps__ResolveRequest rq = ALPS__RESOLVE_REQUEST__INIT;
	rq.reference = (char *)tag;
	rq.credentials = creds.ptrs;
	rq.n_credentials = creds.n;
	Alps__Request r = ALPS__REQUEST__INIT;
	r.op_case = ALPS__REQUEST__OP_RESOLVE;
	r.resolve = &rq;
	Alps__Response *resp = wire_call(&c, &r, NULL, 0, NULL, NULL, timeout_ms, err);
	wire_close(&c);
	client_creds_free(&creds);
	if (!resp)
		return NULL;
	char *pinned = NULL;
	if (resp->status != ALPS__STATUS__OK)
		alps_fail(err, (int)resp->status, "%s", resp->message ? resp->message : "failed");
	else if (!resp->resolve_reply || !resp->resolve_reply->pinned ||
		 !slurmjob_pin_matches(resp->resolve_reply->pinned, tag))
		alps_fail(err, ALPS_E_PROTOCOL, "alpsd answered no digest for %s", tag);
	else
		pinned = xstrdup(resp->resolve_reply->pinned);
	alps__response__free_unpacked(resp, NULL);
	return pinned;
}

bool slurmjob_pin_matches(const char *pinned, const char *tag)
{
	size_t n = strlen(tag);
	return pinned && strncmp(pinned, tag, n) == 0 && pinned[n] == '@' &&
	       strncmp(pinned + n + 1, "sha", 3) == 0 && !strpbrk(pinned, "\"\\ \n");
}

int slurmjob_pin(Alps__PrepareRequest *req, const char *pinned, alps_error **err)
{
	char *body = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&body, &len);
	if (!f)
		return alps_fail_errno(err, "open_memstream");
	fputs("# the image's tag, pinned to its digest when the job was submitted\nimage = ", f);
	toml_str(f, pinned);
	fputc('\n', f);
	fclose(f);
	return add_top_layer(req, SLURMJOB_PIN_EDF, body, err);
}

void slurmjob_request_free(Alps__PrepareRequest *req)
{
	if (req)
		alps__prepare_request__free_unpacked(req, NULL);
}

void slurmjob_set_string(char **field, const char *value)
{
	if (*field && *field != protobuf_c_empty_string)
		free(*field);
	*field = value ? xstrdup(value) : (char *)protobuf_c_empty_string;
}

char *slurmjob_encode(const Alps__PrepareRequest *req)
{
	size_t len = alps__prepare_request__get_packed_size(req);
	_cleanup_free_ uint8_t *buf = xmalloc(len ? len : 1);
	alps__prepare_request__pack(req, buf);
	return base64_encode(buf, len);
}

static int check_decoded(const Alps__PrepareRequest *r, alps_error **err)
{
	if (r->n_environment == 0 || r->n_environment > EDF_MAX_FILES)
		return alps_fail(err, ALPS_E_INVALID, "%s: %zu EDF files (1 to %d expected)",
				 SLURMJOB_ENV, r->n_environment, EDF_MAX_FILES);
	for (size_t i = 0; i < r->n_environment; i++) {
		const Alps__EdfSource *s = r->environment[i];
		if (!s->path || !*s->path || !s->content || strlen(s->content) > EDF_MAX_SIZE)
			return alps_fail(err, ALPS_E_INVALID, "%s: EDF file %zu has no name or is too "
					 "large", SLURMJOB_ENV, i);
	}
	if (r->n_caller_env > MAX_CALLER_ENV)
		return alps_fail(err, ALPS_E_INVALID, "%s: over %d variables", SLURMJOB_ENV,
				 MAX_CALLER_ENV);
	for (size_t i = 0; i < r->n_caller_env; i++)
		if (!strchr(r->caller_env[i], '=') || r->caller_env[i][0] == '=')
			return alps_fail(err, ALPS_E_INVALID, "%s: variable %zu is not NAME=VALUE",
					 SLURMJOB_ENV, i);
	return 0;
}

int slurmjob_decode(const char *text, Alps__PrepareRequest **req, alps_error **err)
{
	*req = NULL;
	if (!text || strlen(text) > SLURMJOB_MAX_ENCODED)
		return alps_fail(err, ALPS_E_INVALID, "%s is %s", SLURMJOB_ENV,
				 text ? "too large" : "not set");
	size_t len;
	_cleanup_free_ uint8_t *buf = base64_decode(text, &len);
	if (!buf)
		return alps_fail(err, ALPS_E_INVALID, "%s is not base64", SLURMJOB_ENV);
	Alps__PrepareRequest *r = alps__prepare_request__unpack(NULL, len, buf);
	if (!r)
		return alps_fail(err, ALPS_E_INVALID, "%s does not decode", SLURMJOB_ENV);
	if (check_decoded(r, err) < 0) {
		alps__prepare_request__free_unpacked(r, NULL);
		return -1;
	}
	*req = r;
	return 0;
}

char *slurmjob_container_id(uint32_t job_id, const char *name, alps_error **err)
{
	if (!name || !*name)
		return xasprintf("%u", (unsigned)job_id);
	size_t len = strlen(name);
	if (len > 64 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				     "0123456789_-") != len) {
		alps_fail(err, ALPS_E_INVALID, "--container-name '%.64s': use at most 64 letters, "
			  "digits, '_' or '-'", name);
		return NULL;
	}
	return xasprintf("%u.%s", (unsigned)job_id, name);
}
