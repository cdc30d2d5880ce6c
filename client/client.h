/* client.h: the alps command-line client.  Subcommands are small files,
 * each with a const descriptor gathered in the table in main.c. */
#ifndef ALPS_CLIENT_H
#define ALPS_CLIENT_H

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdbool.h>

#include "common/error.h"
#include "proto/wire.h"

/* Exit codes, documented in alps(1). */
enum {
	EXIT_OK = 0,
	EXIT_FAILED = 1,
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3,
};

/* Client-side error codes beyond enum alps_code (JSON "code"). */
enum {
	CLIENT_E_USAGE = 1000,
};

/* command_getopt's returns besides an option and -1. */
enum {
	OPT_EXIT_HELP = -2,     /* help was printed */
	OPT_EXIT_USAGE = -3,    /* a usage error was reported */
};

struct command;

struct client {
	const char *socket_path;
	bool json;
	bool quiet;
	bool stream;            /* --json output is JSON lines (pull) */
	const struct command *cmd;
	struct wire_client wire;
	bool connected;
};

struct command {
	const char *name;
	const char *summary;
	const char *usage;      /* after "alps NAME " */
	const char *help;       /* options, one per line */
	bool operand_stops;     /* options end at the first operand (exec, run) */
	int (*run)(struct client *cl, int argc, char **argv);
};

extern const struct command cmd_status, cmd_metrics;
extern const struct command cmd_topology;
extern const struct command cmd_pull;
extern const struct command cmd_outdated;
extern const struct command cmd_images;
extern const struct command cmd_inspect;
extern const struct command cmd_rm;
extern const struct command cmd_gc, cmd_pin, cmd_unpin, cmd_df, cmd_verify, cmd_squash,
	cmd_unsquash, cmd_import;
extern const struct command cmd_prepare;
extern const struct command cmd_exec;
extern const struct command cmd_release;
extern const struct command cmd_jobs;
extern const struct command cmd_run;
extern const struct command cmd_edf;
extern const struct command cmd_place;
extern const struct command cmd_endpoints;
extern const struct command cmd_prolog;
extern const struct command cmd_epilog;
extern const struct command cmd_export;
extern const struct command cmd_resolve;

/* Connect (once) to the daemon. */
int client_connect(struct client *cl, alps_error **err);
/* Call and wait for the final response; progress goes to on_progress. */
Alps__Response *client_call(struct client *cl, Alps__Request *req,
			    void (*on_progress)(const Alps__Response *, void *), void *arg,
			    alps_error **err);
/* Call and return the response only when its status is OK; otherwise
 * report the failure (as client_report_*), set *rc to the exit code and
 * return NULL.  Caller frees the response. */
Alps__Response *client_call_ok(struct client *cl, Alps__Request *req, const char *what,
			       void (*on_progress)(const Alps__Response *, void *), void *arg,
			       int *rc);
/* Report err (and free it); returns the exit code. */
int client_fail(struct client *cl, const char *what, alps_error *err);
/* A number in [0, max] from an option or variable; a message and -1 if not. */
int client_parse_uint(struct client *cl, const char *s, const char *what, unsigned max,
		      unsigned *out);
/* Report err on stderr (or as JSON on stdout with --json) and map it to
 * an exit code. */
int client_report_error(struct client *cl, const char *what, const alps_error *err);
/* The same for a final response whose status is not OK. */
int client_report_response(struct client *cl, const char *what, const Alps__Response *resp);
/* {"ok": false, "code": NAME, "message": msg} for an alps_code or
 * CLIENT_E_*; the names are documented in doc/json.md. */
json_t *client_error_json(int code, const char *msg);
const char *client_code_name(int code);
/* Print j (stolen) as JSON on stdout. */
void client_print_json(json_t *j);
/* The same on one line (event streams). */
void client_print_json_line(json_t *j);
/* The image's Entrypoint then Cmd (its config) as a NULL-terminated argv
 * (caller frees each and the array); reports and returns -1 when the
 * image has none or cannot be inspected. */
int image_default_argv(struct client *cl, const char *image, char ***argv, int *argc);
/* An image operand as the daemon takes it: enroot's REGISTRY#IMAGE (the
 * form EDFs accept) rewritten as REGISTRY/IMAGE, others as they are.
 * Caller frees; NULL after reporting a malformed one (*rc: exit code). */
char *client_image_ref(struct client *cl, const char *arg, int *rc);
char *image_ref_norm(const char *arg, alps_error **err);
/* Print a command's usage to out. */
void command_usage(const struct command *c, FILE *out);
/* "alps CMD: message", the one-line usage and where help is (or a JSON
 * error under --json); returns EXIT_USAGE. */
int usage_error(struct client *cl, const char *fmt, ...) ALPS_PRINTF(2, 3);
/* getopt_long over a command's options (shortopts may start with '+')
 * plus the global long ones, handled here.  Returns the next command
 * option, -1 at the end, or OPT_EXIT_* (help printed, usage reported). */
int command_getopt(struct client *cl, int argc, char **argv, const char *shortopts,
		   const struct option *longopts);
/* The exit code for an OPT_EXIT_* (or any unexpected option). */
int command_opt_exit(int opt);
/* For a command without options of its own: globals, then between min
 * and max operands (what: the message when not).  -1 to go on, else the
 * exit code. */
int command_operands(struct client *cl, int argc, char **argv, int min, int max,
		     const char *what);
/* Sets --json early when it is among argv, for errors found first. */
void command_prescan(struct client *cl, int argc, char **argv);

#endif
