/* cmd_edf.c: alps edf check: validate an EDF as prepare would, with the
 * reader's rights, and show the merged result. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "client/edf_hostcheck.h"
#include "client/job.h"

struct check_out {
	json_t *warnings;       /* strings */
	json_t *errors;
};

static void check_lines(json_t *a, const char *text)
{
	_cleanup_free_ char *copy = xstrdup(text);
	for (char *p = copy, *line; (line = strsep(&p, "\n"));)
		if (*line)
			json_array_append_new(a, json_string(line));
}

/* --image: does the image resolve and do the mount sources exist for the
 * reader?  Only warnings: the node that runs the job may differ. */
static void check_sources(const struct edf *e, struct check_out *o)
{
	for (size_t i = 0; i < e->nmounts; i++) {
		const struct edf_mount *m = &e->mounts[i];
		struct stat st;
		char *w = NULL;
		if (stat(m->src, &st) < 0)
			w = xasprintf("%s:%d:%d: %s: source %s: %s", m->loc.file, m->loc.line,
				      m->loc.col, m->loc.key, m->src, strerror(errno));
		else if ((m->flags & EDF_MOUNT_SQSH) && !S_ISREG(st.st_mode))
			w = xasprintf("%s:%d:%d: %s: source %s is not a file: 'sqsh' mounts a "
				      "squashfs file", m->loc.file, m->loc.line, m->loc.col,
				      m->loc.key, m->src);
		if (w)
			json_array_append_new(o->warnings, json_string(w));
		free(w);
	}
}

static void check_image_ref(struct client *cl, const struct edf *e, struct check_out *o)
{
	if (e->image_kind != EDF_IMAGE_REF)
		return;
	_cleanup_free_ char *ref = ref_format(&e->ref);
	Alps__InspectRequest ir = ALPS__INSPECT_REQUEST__INIT;
	ir.reference = ref;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_INSPECT;
	req.inspect = &ir;
	alps_error *err = NULL;
	Alps__Response *resp = client_call(cl, &req, NULL, NULL, &err);
	char *w = NULL;
	if (!resp)
		w = xasprintf("%s:%d:%d: image: %s not checked: %s", e->image.loc.file,
			      e->image.loc.line, e->image.loc.col, ref, err->msg);
	else if (resp->status != ALPS__STATUS__OK)
		w = xasprintf("%s:%d:%d: image: %s is not in this node's store (%s); prepare "
			      "pulls it", e->image.loc.file, e->image.loc.line, e->image.loc.col,
			      ref, resp->message ? resp->message : "not found");
	else if (resp->payload_case == ALPS__RESPONSE__PAYLOAD_INSPECT_REPLY)
		edf_check_nccl_image(e, resp->inspect_reply->config_json, o->warnings);
	if (w)
		json_array_append_new(o->warnings, json_string(w));
	free(w);
	alps_error_free(err);
	if (resp)
		alps__response__free_unpacked(resp, NULL);
}

static void check_print_text(const char *file, const struct edf *e, const struct check_out *o)
{
	size_t i;
	json_t *v;
	json_array_foreach(o->errors, i, v)
		fprintf(stderr, "error: %s\n", json_string_value(v));
	json_array_foreach(o->warnings, i, v)
		fprintf(stderr, "warning: %s\n", json_string_value(v));
	if (!e) {
		fprintf(stderr, "%s: %zu error%s\n", file, json_array_size(o->errors),
			json_array_size(o->errors) == 1 ? "" : "s");
		return;
	}
	printf("%s: valid\n  image:      %s\n", file, *edf_image(e) ? edf_image(e) : "(none)");
	if (e->workdir.value && *e->workdir.value)
		printf("  workdir:    %s\n", e->workdir.value);
	printf("  writable:   %s\n  entrypoint: %s\n", edf_writable(e) ? "yes" : "no",
	       edf_entrypoint(e) ? "yes" : "no");
	for (i = 0; i < e->nmounts; i++) {
		_cleanup_free_ char *f = edf_mount_flags_format(e->mounts[i].flags);
		printf("  mount:      %s -> %s (%s)\n", e->mounts[i].src, e->mounts[i].dst, f);
	}
	for (i = 0; i < e->nenv; i++)
		printf("  env:        %s=%s\n", e->env[i].key, e->env[i].value);
	for (i = 0; i < e->nannotations; i++)
		printf("  annotation: %s=%s\n", e->annotations[i].key, e->annotations[i].value);
}

static int run_edf(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "image", no_argument, NULL, 'i' },
		{ "cdi-dir", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		command_usage(cl->cmd, stdout);
		return EXIT_OK;
	}
	if (argc < 2 || strcmp(argv[1], "check") != 0)
		return usage_error(cl, argc < 2 ? "give a subcommand: check"
					       : "unknown subcommand (only 'check')");
	bool image = false;
	int opt;
	_cleanup_free_ const char **cdi = xcalloc((size_t)argc + 1, sizeof(char *));
	size_t ncdi = 0;
	while ((opt = command_getopt(cl, argc - 1, argv + 1, "jic:", opts)) != -1) {
		if (opt == 'j')
			cl->json = true;
		else if (opt == 'i')
			image = true;
		else if (opt == 'c')
			cdi[ncdi++] = optarg;
		else
			return command_opt_exit(opt);
	}
	if (optind + 1 != argc - 1)
		return usage_error(cl, "give exactly one FILE");
	const char *file = argv[optind + 1];
	struct check_out o = { .warnings = json_array(), .errors = json_array() };
	struct user_world w = { 0 };
	alps_error *err = NULL;
	struct edf *e = NULL;
	struct edf_source *src = NULL;
	size_t n = 0;
	if (load_checked(file, &w, &e, &src, &n, &err) < 0 || edf_job_check(e, &err) < 0) {
		check_lines(o.errors, err->msg);
		alps_error_free(err);
		edf_free(e);
		e = NULL;
	}
	if (e) {
		char **warnings = edf_warnings(e, NULL);
		for (size_t i = 0; warnings[i]; i++)
			json_array_append_new(o.warnings, json_string(warnings[i]));
		edf_strv_free(warnings);
		edf_check_cdi(e, cdi, ncdi, o.warnings);
		if (image) {
			check_sources(e, &o);
			check_image_ref(cl, e, &o);
		}
	}
	int rc = e ? EXIT_OK : EXIT_FAILED;
	if (cl->json) {
		json_t *j = json_pack("{s:b, s:o, s:O, s:O}", "ok", e != NULL, "environment",
				      e ? edf_to_json(e, true) : json_null(), "warnings",
				      o.warnings, "errors", o.errors);
		if (!e) {       /* like every ok:false object: a code and a message */
			size_t nerr = json_array_size(o.errors);
			json_object_set_new(j, "code", json_string("invalid_argument"));
			json_object_set_new(j, "message", json_sprintf("%s: %zu error%s", file, nerr,
								       nerr == 1 ? "" : "s"));
		}
		client_print_json(j);
	} else {
		check_print_text(file, e, &o);
	}
	json_decref(o.warnings);
	json_decref(o.errors);
	edf_free(e);
	edf_sources_free(src, n);
	return rc;
}

const struct command cmd_edf = {
	.name = "edf",
	.summary = "Check an environment definition file and show the merged result.",
	.usage = "check [--json] [--image] [--cdi-dir DIR]... FILE",
	.help = "Validates FILE and its base_environment chain (read with your rights) as\n"
		"prepare would, in your environment and working directory: every error\n"
		"with FILE:LINE:COL and key, warnings for likely mistakes, then the merged\n"
		"environment as text (as JSON with --json).\n"
		"  -i, --image   also check that the image is in the node's store and that\n"
		"                mount sources exist, and the NCCL plugin's variant against\n"
		"                the image's CUDA/ROCm (warnings)\n"
		"  -c, --cdi-dir DIR  CDI spec directory for the devices' check (repeat;\n"
		"                default: hooks.cdi_dirs' default, /etc/cdi, /var/run/cdi)\n"
		"  -j, --json    machine-readable output\n"
		"See alps-edf(5).\n",
	.run = run_edf,
};
