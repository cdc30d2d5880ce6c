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
	&cmd_pull,
	&cmd_images,
	&cmd_inspect,
	&cmd_rm,
	&cmd_gc, &cmd_pin, &cmd_unpin, &cmd_df, &cmd_verify, &cmd_squash, &cmd_unsquash,
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
};

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: alps [--socket PATH] [--json] COMMAND [ARGS]...\n"
		"Client of alpsd, the alps node daemon (container images and job containers).\n\n"
		"Options:\n"
		"  -s, --socket PATH   daemon socket (default $ALPS_SOCKET or %s)\n"
		"  -j, --json          machine-readable output\n"
		"  -q, --quiet         no progress output\n"
		"  -h, --help          this help; 'alps COMMAND --help' for a command\n"
		"  -V, --version       print the version\n\n"
		"Commands:\n",
		ALPS_RUNDIR "/alpsd.sock");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(out, "  %-12s %s\n", commands[i]->name, commands[i]->summary);
	fprintf(out, "\nExit status: 0 ok, 1 the operation failed, 2 usage error, "
		"3 daemon unreachable.\n");
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct client cl = { 0 };
	cl.socket_path = getenv("ALPS_SOCKET");
	if (!cl.socket_path || !*cl.socket_path)
		cl.socket_path = ALPS_RUNDIR "/alpsd.sock";
	log_init("alps", LOG_LVL_WARN, false);

	int opt;
	/* '+': stop at the subcommand; its options are its own. */
	while ((opt = getopt_long(argc, argv, "+s:jqhV", longopts, NULL)) != -1) {
		switch (opt) {
		case 's': cl.socket_path = optarg; break;
		case 'j': cl.json = true; break;
		case 'q': cl.quiet = true; break;
		case 'h': usage(stdout); return EXIT_OK;
		case 'V': printf("alps %s\n", PACKAGE_VERSION); return EXIT_OK;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const struct command *cmd = find_command(argv[optind]);
	if (!cmd) {
		fprintf(stderr, "alps: unknown command '%s' (see 'alps --help')\n", argv[optind]);
		return EXIT_USAGE;
	}
	int sub_argc = argc - optind;
	char **sub_argv = argv + optind;
	if (command_wants_help(cmd, sub_argc, sub_argv))
		return EXIT_OK;
	optind = 1;     /* subcommands parse their own options with getopt */
	int rc = cmd->run(&cl, sub_argc, sub_argv);
	if (cl.connected)
		wire_close(&cl.wire);
	return rc;
}
