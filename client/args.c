/* args.c: a command's options, the global ones wherever they appear,
 * usage errors and help.
 *
 * The global long options (--json, --quiet, --socket, --help) are accepted
 * before the command and among its options, so `alps images --json` and
 * `alps place --tasks 8 --json` work like `alps --json images`.  Their
 * short forms are global only before the command: after it, -j and -q may
 * be the command's own (--job, pull's --quiet). */
#include <config.h>

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

enum {
	OPT_JSON = 0x1000,
	OPT_QUIET,
	OPT_SOCKET,
	OPT_HELP,
};

static const struct option global_longopts[] = {
	{ "json", no_argument, NULL, OPT_JSON },
	{ "quiet", no_argument, NULL, OPT_QUIET },
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "help", no_argument, NULL, OPT_HELP },
};

/* The command's long options, then the global ones it does not define. */
static struct option *merged_options(const struct option *own)
{
	size_t n = 0;
	while (own && own[n].name)
		n++;
	struct option *all = xcalloc(n + ARRAY_SIZE(global_longopts) + 1, sizeof(*all));
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		all[k++] = own[i];
	for (size_t g = 0; g < ARRAY_SIZE(global_longopts); g++) {
		bool taken = false;
		for (size_t i = 0; i < n; i++)
			taken = taken || strcmp(own[i].name, global_longopts[g].name) == 0;
		if (!taken)
			all[k++] = global_longopts[g];
	}
	return all;
}

int usage_error(struct client *cl, const char *fmt, ...)
{
	const char *name = cl->cmd ? cl->cmd->name : NULL;
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *msg = NULL;
	if (vasprintf(&msg, fmt, ap) < 0)
		abort();
	va_end(ap);
	if (cl->json) {
		json_t *j = client_error_json(CLIENT_E_USAGE, msg);
		if (name)
			json_object_set_new(j, "command", json_string(name));
		if (cl->stream) {
			json_object_set_new(j, "event", json_string("error"));
			client_print_json_line(j);
		} else {
			client_print_json(j);
		}
		return EXIT_USAGE;
	}
	if (!name) {
		fprintf(stderr, "alps: %s\nSee 'alps --help'.\n", msg);
		return EXIT_USAGE;
	}
	fprintf(stderr, "alps %s: %s\nUsage: alps %s%s%s\nSee 'alps %s --help'.\n", name, msg,
		name, *cl->cmd->usage ? " " : "", cl->cmd->usage, name);
	return EXIT_USAGE;
}

/* What getopt refused, in words: argv[optind - 1] is the offending word. */
static int option_error(struct client *cl, int opt, int argc, char **argv)
{
	const char *word = optind - 1 < argc && optind >= 1 ? argv[optind - 1] : "?";
	if (opt == ':')
		return usage_error(cl, "option '%s' needs a value", word);
	if (optopt && strncmp(word, "--", 2) != 0)
		return usage_error(cl, "unknown option '-%c'", optopt);
	return usage_error(cl, "unknown option '%s'", word);
}

int command_getopt(struct client *cl, int argc, char **argv, const char *shortopts,
		   const struct option *longopts)
{
	_cleanup_free_ struct option *all = merged_options(longopts);
	bool stop_at_operand = shortopts[0] == '+';
	bool own_h = strchr(shortopts, 'h') != NULL;    /* else -h is --help */
	_cleanup_free_ char *spec = xasprintf("%s:%s%s", stop_at_operand ? "+" : "",
					      shortopts + stop_at_operand, own_h ? "" : "h");
	opterr = 0;
	for (;;) {
		int opt = getopt_long(argc, argv, spec, all, NULL);
		switch (opt) {
		case OPT_JSON: cl->json = true; continue;
		case OPT_QUIET: cl->quiet = true; continue;
		case OPT_SOCKET: cl->socket_path = optarg; continue;
		case 'h':
			if (own_h)
				return opt;
			/* fallthrough */
		case OPT_HELP:
			command_usage(cl->cmd, stdout);
			return OPT_EXIT_HELP;
		case '?':
		case ':':
			option_error(cl, opt, argc, argv);
			return OPT_EXIT_USAGE;
		default:
			return opt;
		}
	}
}

int command_opt_exit(int opt)
{
	return opt == OPT_EXIT_HELP ? EXIT_OK : EXIT_USAGE;
}

int command_operands(struct client *cl, int argc, char **argv, int min, int max,
		     const char *what)
{
	int opt = command_getopt(cl, argc, argv, "", NULL);
	if (opt != -1)
		return command_opt_exit(opt);
	int n = argc - optind;
	if (n > max && max == 0)
		return usage_error(cl, "unexpected argument '%s'", argv[optind]);
	if (n < min || n > max)
		return usage_error(cl, "%s", what);
	return -1;
}

void command_usage(const struct command *c, FILE *out)
{
	fprintf(out, "Usage: alps %s%s%s\n%s\n", c->name, *c->usage ? " " : "", c->usage,
		c->summary);
	if (c->help && *c->help)
		fprintf(out, "\n%s", c->help);
	fprintf(out, "\nGlobal options (before or after the command): --json, --quiet, "
		"--socket PATH.\n");
}

/* Before the command's own parsing: a --json anywhere among its
 * arguments (up to "--") makes even a usage error found first JSON. */
void command_prescan(struct client *cl, int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--json") == 0)
			cl->json = true;
}
