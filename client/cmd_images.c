/* cmd_images.c: alps images, the operator's and the user's view of the
 * store: a table, references only (--quiet), a template (--format), a
 * reference filter, and totals with the bytes images share.
 *
 * A row is one reference of an image (docker's habit: two tags, two
 * rows); spellings of one name (index.docker.io/x, docker.io/library/x)
 * are one reference, normalized with the parser the daemon uses. */
#include <config.h>

#include <fnmatch.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/client.h"
#include "common/ref.h"

struct images_args {
	bool quiet;
	const char *pattern;    /* fnmatch(3) pattern over references, or NULL */
	const char *format;     /* a {{.Field}} template, or NULL */
};

/* A reference as one spelling: docker.io for index.docker.io and
 * registry-1.docker.io, "library/" for official images.  Caller frees. */
static char *ref_normalize(const char *s)
{
	struct image_ref r = { 0 };
	alps_error *err = NULL;
	if (ref_parse(s, NULL, &r, &err) < 0) {
		alps_error_free(err);
		return xstrdup(s);
	}
	if (strcmp(r.registry, "registry-1.docker.io") == 0) {
		free(r.registry);
		r.registry = xstrdup(REF_DOCKER_HUB);
		if (!strchr(r.repository, '/')) {
			char *lib = xasprintf("library/%s", r.repository);
			free(r.repository);
			r.repository = lib;
		}
	}
	char *out = ref_format(&r);
	ref_free(&r);
	return out;
}

/* The image's references, normalized, each once: a NULL-terminated array. */
static char **image_refs(const Alps__ImageInfo *im)
{
	char **refs = xcalloc(im->n_references + 1, sizeof(char *));
	size_t n = 0;
	for (size_t i = 0; i < im->n_references; i++) {
		char *r = ref_normalize(im->references[i]);
		bool dup = false;
		for (size_t k = 0; k < n && !dup; k++)
			dup = strcmp(refs[k], r) == 0;
		if (dup)
			free(r);
		else
			refs[n++] = r;
	}
	return refs;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* docker's familiar form: "ubuntu:22.04" for docker.io/library/ubuntu:22.04. */
static const char *familiar(const char *ref)
{
	if (strncmp(ref, "docker.io/", 10) != 0)
		return ref;
	ref += 10;
	return strncmp(ref, "library/", 8) == 0 ? ref + 8 : ref;
}

/* The pattern matches the reference, its familiar form, or either
 * without the tag (so 'ubuntu' finds ubuntu:22.04, like docker's filter). */
static bool ref_matches(const char *pattern, const char *ref)
{
	const char *forms[] = { ref, familiar(ref) };
	for (size_t i = 0; i < ARRAY_SIZE(forms); i++) {
		if (fnmatch(pattern, forms[i], 0) == 0)
			return true;
		_cleanup_free_ char *name = xstrdup(forms[i]);
		char *at = strchr(name, '@');
		if (at)
			*at = '\0';
		char *colon = strrchr(name, ':');
		if (colon && !strchr(colon, '/'))
			*colon = '\0';
		if (fnmatch(pattern, name, 0) == 0)
			return true;
	}
	return false;
}

/* ---- one row's fields, for the table and the template ---- */

struct row {
	const Alps__ImageInfo *im;
	const char *ref;        /* NULL: untagged */
};

static void format_time(uint64_t ms, char *buf, size_t size)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (ms == 0 || !localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M", &tm) == 0)
		snprintf(buf, size, "-");
}

/* Repository and tag of a reference: "reg/repo" and "tag" ("<none>"). */
static void split_ref(const char *ref, char **repo, char **tag)
{
	_cleanup_free_ char *name = xstrdup(ref ? ref : "<none>");
	char *at = strchr(name, '@');
	if (at)
		*at = '\0';
	char *colon = strrchr(name, ':');
	if (colon && !strchr(colon, '/')) {
		*colon = '\0';
		*tag = xstrdup(colon + 1);
	} else {
		*tag = xstrdup("<none>");
	}
	*repo = xstrdup(name);
}

static const char *const FIELDS =
	"Reference Repository Tag Digest ID Size Layers Created LastUsed Pinned Platform";

/* The value of a template field; NULL if there is no such field. */
static char *field_value(const struct row *w, const char *f)
{
	char buf[64];
	_cleanup_free_ char *repo = NULL, *tag = NULL;
	split_ref(w->ref, &repo, &tag);
	if (strcmp(f, "Reference") == 0)
		return xstrdup(w->ref ? w->ref : "<none>");
	if (strcmp(f, "Repository") == 0)
		return xstrdup(repo);
	if (strcmp(f, "Tag") == 0)
		return xstrdup(tag);
	if (strcmp(f, "Digest") == 0)
		return xstrdup(w->im->digest);
	if (strcmp(f, "ID") == 0)
		return xstrndup(w->im->digest + (strncmp(w->im->digest, "sha256:", 7) ? 0 : 7), 12);
	if (strcmp(f, "Size") == 0)
		return xstrdup(format_size(w->im->size, buf, sizeof(buf)));
	if (strcmp(f, "Layers") == 0)
		return xasprintf("%u", w->im->layers);
	if (strcmp(f, "Created") == 0 || strcmp(f, "LastUsed") == 0) {
		format_time(f[0] == 'C' ? w->im->created_ms : w->im->last_used_ms, buf, sizeof(buf));
		return xstrdup(buf);
	}
	if (strcmp(f, "Pinned") == 0)
		return xstrdup(w->im->pinned ? "yes" : "no");
	if (strcmp(f, "Platform") == 0)
		return xstrdup(w->im->platform);
	return NULL;
}

/* The FIELD of "{{ .FIELD }}" at p (caller frees), *end at the "}}";
 * NULL when p holds no well-formed one. */
static char *template_field(const char *p, const char **end)
{
	*end = strstr(p, "}}");
	if (!*end)
		return NULL;
	const char *f = p + 2;
	while (f < *end && *f == ' ')
		f++;
	size_t len = (size_t)(*end - f);
	while (len && f[len - 1] == ' ')
		len--;
	return len > 1 && f[0] == '.' ? xstrndup(f + 1, len - 1) : NULL;
}

/* One {{...}} at p: its value (caller frees), or NULL with *bad set.
 * Without a row (checking the template), fields of an empty image. */
static char *template_value(const char *p, const struct row *w, const char **end, char **bad)
{
	static const Alps__ImageInfo empty = ALPS__IMAGE_INFO__INIT;
	_cleanup_free_ char *name = template_field(p, end);
	struct row probe = { w ? w->im : &empty, w ? w->ref : NULL };
	char *v = name ? field_value(&probe, name) : NULL;
	if (!v)
		*bad = *end ? xstrndup(p, (size_t)(*end + 2 - p)) : xstrdup(p);
	return v;
}

/* Expand "{{.Field}}", "\t" and "\n" into out (or only check the
 * template when out is NULL).  -1 with *bad the offending part. */
static int expand_template(const char *tpl, const struct row *w, FILE *out, char **bad)
{
	for (const char *p = tpl; *p; p++) {
		int c = *p;
		if (p[0] == '\\' && (p[1] == 't' || p[1] == 'n'))
			c = *++p == 't' ? '\t' : '\n';
		if (c != '{' || p[1] != '{') {
			if (out)
				fputc(c, out);
			continue;
		}
		const char *end;
		char *v = template_value(p, w, &end, bad);
		if (!v)
			return -1;
		if (out)
			fputs(v, out);
		free(v);
		p = end + 1;
	}
	if (out)
		fputc('\n', out);
	return 0;
}

/* ---- totals: layers each counted once, and those images share ---- */

struct totals {
	size_t images;
	uint64_t bytes;         /* squashfs bytes of their layers, each once */
	uint64_t shared;        /* of which in layers more than one of them uses */
};

static int layer_ref_cmp(const void *a, const void *b)
{
	const Alps__ImageLayerRef *x = *(const Alps__ImageLayerRef *const *)a;
	const Alps__ImageLayerRef *y = *(const Alps__ImageLayerRef *const *)b;
	return strcmp(x->digest, y->digest);
}

/* The listing carries each image's layers: sorted by digest, a run of one
 * digest is one layer, shared when the run is longer than one (an image
 * lists a layer once). */
static struct totals image_totals(const Alps__ImageInfo **ims, size_t n)
{
	struct totals t = { .images = n };
	size_t nl = 0;
	for (size_t i = 0; i < n; i++)
		nl += ims[i]->n_layer_refs;
	const Alps__ImageLayerRef **l = xcalloc(nl ? nl : 1, sizeof(*l));
	for (size_t i = 0, at = 0; i < n; i++)
		for (size_t k = 0; k < ims[i]->n_layer_refs; k++)
			l[at++] = ims[i]->layer_refs[k];
	qsort(l, nl, sizeof(*l), layer_ref_cmp);
	for (size_t k = 0; k < nl;) {
		size_t run = 1;
		while (k + run < nl && strcmp(l[k + run]->digest, l[k]->digest) == 0)
			run++;
		t.bytes += l[k]->squashfs_size;
		t.shared += run > 1 ? l[k]->squashfs_size : 0;
		k += run;
	}
	free(l);
	return t;
}

/* ---- output ---- */

static json_t *image_json(const Alps__ImageInfo *im, char **refs)
{
	json_t *arr = json_array();
	for (size_t i = 0; refs[i]; i++)
		json_array_append_new(arr, json_string(refs[i]));
	return json_pack("{s:o, s:s, s:I, s:i, s:I, s:I, s:b, s:s}", "references", arr, "digest",
			 im->digest, "squashfs_size", (json_int_t)im->size, "layer_count", (int)im->layers,
			 "created_ms", (json_int_t)im->created_ms, "last_used_ms",
			 (json_int_t)im->last_used_ms, "pinned", (int)im->pinned, "platform",
			 im->platform);
}

static void print_table_row(const struct row *w)
{
	char size[32], used[32];
	format_size(w->im->size, size, sizeof(size));
	format_time(w->im->last_used_ms, used, sizeof(used));
	printf("%-50s %-19.19s %10s %6u %-16s %s\n", w->ref ? w->ref : "<untagged>",
	       w->im->digest, size, w->im->layers, used, w->im->pinned ? "yes" : "no");
}

static void print_totals(const struct totals *t)
{
	char all[32], shared[32];
	format_size(t->bytes, all, sizeof(all));
	format_size(t->shared, shared, sizeof(shared));
	printf("%zu image%s, %s in layers, %s of it shared between images\n", t->images,
	       t->images == 1 ? "" : "s", all, shared);
}

/* One row per distinct reference (or one for an untagged image). */
static void print_rows(const struct images_args *a, const Alps__ImageInfo *im, char **refs)
{
	size_t n = 0;
	while (refs[n])
		n++;
	for (size_t k = 0; k < (n ? n : 1); k++) {
		struct row w = { im, n ? refs[k] : NULL };
		if (a->pattern && (!w.ref || !ref_matches(a->pattern, w.ref)))
			continue;
		if (a->quiet)
			puts(w.ref ? w.ref : im->digest);
		else if (a->format) {
			char *bad = NULL;
			expand_template(a->format, &w, stdout, &bad);
			free(bad);
		} else {
			print_table_row(&w);
		}
	}
}

/* Does any of the image's references pass the filter? */
static bool image_selected(const struct images_args *a, char **refs)
{
	if (!a->pattern)
		return true;
	for (size_t i = 0; refs[i]; i++)
		if (ref_matches(a->pattern, refs[i]))
			return true;
	return false;
}

static void print_json(const Alps__ImageInfo **sel, char ***refs, size_t n)
{
	struct totals t = image_totals(sel, n);
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, image_json(sel[i], refs[i]));
	client_print_json(json_pack("{s:b, s:o, s:{s:I, s:I, s:I}}", "ok", 1, "images", arr,
				    "totals", "image_count", (json_int_t)t.images, "squashfs_size",
				    (json_int_t)t.bytes, "squashfs_shared", (json_int_t)t.shared));
}

/* The table with its totals, or only the lines --quiet or --format ask for. */
static void print_text(const struct images_args *a,
		       const Alps__ImageInfo **sel, char ***refs, size_t n)
{
	bool table = !a->quiet && !a->format;
	if (table)
		printf("%-50s %-19s %10s %6s %-16s %s\n", "REFERENCE", "DIGEST", "SIZE", "LAYERS",
		       "LAST USED", "PINNED");
	for (size_t i = 0; i < n; i++)
		print_rows(a, sel[i], refs[i]);
	if (table) {
		struct totals t = image_totals(sel, n);
		print_totals(&t);
	}
}

static void print_images(struct client *cl, const struct images_args *a,
			 const Alps__ImagesReply *r)
{
	size_t n = r ? r->n_images : 0;
	const Alps__ImageInfo **sel = xcalloc(n + 1, sizeof(*sel));
	char ***refs = xcalloc(n + 1, sizeof(*refs));
	size_t ns = 0;
	for (size_t i = 0; i < n; i++) {
		char **v = image_refs(r->images[i]);
		if (!image_selected(a, v)) {
			strv_free(v);
			continue;
		}
		sel[ns] = r->images[i];
		refs[ns++] = v;
	}
	if (cl->json)
		print_json(sel, refs, ns);
	else
		print_text(a, sel, refs, ns);
	for (size_t i = 0; i < ns; i++)
		strv_free(refs[i]);
	free(refs);
	free(sel);
}

/* ---- the command ---- */

static int parse_images(struct client *cl, int argc, char **argv, struct images_args *a)
{
	static const struct option opts[] = {
		{ "quiet", no_argument, NULL, 'q' },
		{ "filter", required_argument, NULL, 'f' },
		{ "format", required_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;
	while ((opt = command_getopt(cl, argc, argv, "qf:", opts)) != -1) {
		switch (opt) {
		case 'q': a->quiet = true; break;
		case 'f':
			if (strncmp(optarg, "reference=", 10) != 0 || !optarg[10])
				return usage_error(cl, "--filter '%s': give reference=PATTERN", optarg);
			if (a->pattern)
				return usage_error(cl, "one reference pattern at most");
			a->pattern = optarg + 10;
			break;
		case 'F': a->format = optarg; break;
		default: return command_opt_exit(opt);
		}
	}
	a->quiet = a->quiet || cl->quiet;       /* alps --quiet images, too */
	if (optind < argc && a->pattern)
		return usage_error(cl, "one reference pattern at most");
	if (optind < argc)
		a->pattern = argv[optind++];
	if (optind < argc)
		return usage_error(cl, "unexpected argument '%s'", argv[optind]);
	char *bad = NULL;
	if (a->format && expand_template(a->format, NULL, NULL, &bad) < 0) {
		int rc = usage_error(cl, "--format: '%s' is not one of {{.FIELD}} with FIELD: %s",
				     bad, FIELDS);
		free(bad);
		return rc;
	}
	return -1;
}

static int run_images(struct client *cl, int argc, char **argv)
{
	struct images_args a = { 0 };
	int rc = parse_images(cl, argc, argv, &a);
	if (rc >= 0)
		return rc;
	Alps__ImagesRequest ir = ALPS__IMAGES_REQUEST__INIT;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_IMAGES;
	req.images = &ir;
	rc = EXIT_OK;
	Alps__Response *resp = client_call_ok(cl, &req, "images", NULL, NULL, &rc);
	if (!resp)
		return rc;
	print_images(cl, &a, resp->payload_case == ALPS__RESPONSE__PAYLOAD_IMAGES_REPLY
				     ? resp->images_reply : NULL);
	alps__response__free_unpacked(resp, NULL);
	return EXIT_OK;
}

const struct command cmd_images = {
	.name = "images",
	.summary = "List the images in the node's store that you may use.",
	.usage = "[-q|--quiet] [--format TEMPLATE] [PATTERN | --filter reference=PATTERN]",
	.help = "  -q, --quiet           references only, one per line (a digest if untagged)\n"
		"  PATTERN, -f, --filter reference=PATTERN\n"
		"                        only references that match the fnmatch(3) PATTERN\n"
		"                        ('docker.io/library/*', 'ubuntu*'; with or without\n"
		"                        the tag, in full or docker's short form)\n"
		"      --format TEMPLATE one line per reference: {{.FIELD}} replaced, \\t and\n"
		"                        \\n escapes, FIELD one of Reference Repository Tag\n"
		"                        Digest ID Size Layers Created LastUsed Pinned Platform\n"
		"A row per reference, spellings of one name (index.docker.io/x, x) as one;\n"
		"the last line totals the layers once each and the bytes images share.\n",
	.run = run_images,
};
