/* client.h: the alps command-line client.  Subcommands are small files,
 * each with a const descriptor gathered in the table in main.c. */
#ifndef ALPS_CLIENT_H
#define ALPS_CLIENT_H

#include <jansson.h>
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

struct client {
	const char *socket_path;
	bool json;
	bool quiet;
	struct wire_client wire;
	bool connected;
};

struct command {
	const char *name;
	const char *summary;
	const char *usage;      /* after "alps NAME " */
	const char *help;       /* options, one per line */
	int (*run)(struct client *cl, int argc, char **argv);
};

extern const struct command cmd_status;
extern const struct command cmd_topology;
extern const struct command cmd_pull;
extern const struct command cmd_images;
extern const struct command cmd_inspect;
extern const struct command cmd_rm;
extern const struct command cmd_gc, cmd_pin, cmd_unpin, cmd_df, cmd_verify, cmd_squash,
	cmd_unsquash;
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
int client_parse_uint(const char *s, const char *what, unsigned max, unsigned *out);
/* Report err on stderr (or as JSON on stdout with --json) and map it to
 * an exit code. */
int client_report_error(struct client *cl, const char *what, const alps_error *err);
/* The same for a final response whose status is not OK. */
int client_report_response(struct client *cl, const char *what, const Alps__Response *resp);
/* Print j (stolen) as JSON on stdout. */
void client_print_json(json_t *j);
/* The same on one line (event streams). */
void client_print_json_line(json_t *j);
/* Print a command's usage to out. */
void command_usage(const struct command *c, FILE *out);
/* Standard option handling for a subcommand: --help / -h.  Returns -1 and
 * prints usage on stdout when help was asked for. */
bool command_wants_help(const struct command *c, int argc, char **argv);

#endif
