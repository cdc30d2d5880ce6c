/* main.c: alps, the client of alpsd.  git-style: global options, then a
 * subcommand from the table below. */
#include <config.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "common/log.h"

static const struct command *const commands[] = {
	&cmd_status,
	&cmd_metrics,
	&cmd_pull,
	&cmd_outdated,
	&cmd_images,
	&cmd_inspect,
	&cmd_rm,
	&cmd_gc, &cmd_pin, &cmd_unpin, &cmd_df, &cmd_verify, &cmd_squash, &cmd_unsquash,
	&cmd_import,
	&cmd_export,
	&cmd_prepare,
	&cmd_exec,
	&cmd_run,
	&cmd_release,
	&cmd_jobs,
	&cmd_edf,
	&cmd_topology,
	&cmd_place,
	&cmd_endpoints,
	&cmd_prolog,
	&cmd_epilog,
	&cmd_resolve,
};

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: alps [--socket PATH] [--json] [--quiet] COMMAND [ARGS]...\n"
		"Client of alpsd, the alps node daemon (container images and job containers).\n\n"
		"Options (before or, in their long form, after the command):\n"
		"  -s, --socket PATH   daemon socket (default $ALPS_SOCKET or %s)\n"
		"  -j, --json          machine-readable output (doc/json.md)\n"
		"  -q, --quiet         no progress output\n"
		"  -h, --help          this help; 'alps help COMMAND' for a command\n"
		"  -V, --version       print the version\n\n"
		"Commands:\n",
		ALPS_RUNDIR "/alpsd.sock");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(out, "  %-12s %s\n", commands[i]->name, commands[i]->summary);
	fprintf(out, "  %-12s %s\n", "help", "Show this help, or a command's.");
	fprintf(out, "\nExit status: 0 ok, 1 the operation failed, 2 usage error, "
		"3 daemon unreachable;\nexec and run: see 'alps help exec'.\n");
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

/* alps help [COMMAND] */
static int run_help(struct client *cl, int argc, char **argv)
{
	if (argc < 2 || (argc == 2 && strcmp(argv[1], "help") == 0)) {
		usage(stdout);
		return EXIT_OK;
	}
	const struct command *cmd = find_command(argv[1]);
	if (!cmd)
		return usage_error(cl, "unknown command '%s'", argv[1]);
	if (argc > 2)
		return usage_error(cl, "unexpected argument '%s'", argv[2]);
	command_usage(cmd, stdout);
	return EXIT_OK;
}

/* The global options before the command; the index of the command, or
 * -1 with *rc set. */
static int global_options(struct client *cl, int argc, char **argv, int *rc)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;
	opterr = 0;
	/* '+': stop at the subcommand; its options are its own. */
	while ((opt = getopt_long(argc, argv, "+:s:jqhV", longopts, NULL)) != -1) {
		switch (opt) {
		case 's': cl->socket_path = optarg; break;
		case 'j': cl->json = true; break;
		case 'q': cl->quiet = true; break;
		case 'h': usage(stdout); *rc = EXIT_OK; return -1;
		case 'V': printf("alps %s\n", PACKAGE_VERSION); *rc = EXIT_OK; return -1;
		case ':':
			*rc = usage_error(cl, "option '%s' needs a value", argv[optind - 1]);
			return -1;
		default:
			*rc = usage_error(cl, "unknown option '%s'", argv[optind - 1]);
			return -1;
		}
	}
	if (optind >= argc) {
		*rc = usage_error(cl, "a command is required");
		return -1;
	}
	return optind;
}

int main(int argc, char **argv)
{
	struct client cl = { 0 };
	cl.socket_path = getenv("ALPS_SOCKET");
	if (!cl.socket_path || !*cl.socket_path)
		cl.socket_path = ALPS_RUNDIR "/alpsd.sock";
	log_init("alps", LOG_LVL_WARN, false);

	int rc = EXIT_OK;
	int first = global_options(&cl, argc, argv, &rc);
	if (first < 0)
		return rc;
	int sub_argc = argc - first;
	char **sub_argv = argv + first;
	if (strcmp(sub_argv[0], "help") == 0)
		return run_help(&cl, sub_argc, sub_argv);
	const struct command *cmd = find_command(sub_argv[0]);
	if (!cmd)
		return usage_error(&cl, "unknown command '%s'", sub_argv[0]);
	cl.cmd = cmd;
	if (!cmd->operand_stops)
		command_prescan(&cl, sub_argc, sub_argv);
	optind = 0;     /* subcommands parse their own options: start afresh */
	rc = cmd->run(&cl, sub_argc, sub_argv);
	if (cl.connected)
		wire_close(&cl.wire);
	return rc;
}
