/* job.h: what alps prepare, exec, release, run and edf check share. */
#ifndef ALPS_CLIENT_JOB_H
#define ALPS_CLIENT_JOB_H

#include "client/client.h"
#include "common/edf.h"

/* The job user's world (alps-edf(5)): with --user, ~/.edf is that user's
 * and ${USER}, ${LOGNAME}, ${HOME}, ${UID} are that user's, whoever runs
 * the client (a root prolog); the daemon builds the same context. */
struct user_world {
	char *name, *home;      /* owned; home NULL: not known */
	unsigned long uid;
	bool set;               /* a --user was given */
};

/* Load, expand and check path (and its bases) as the reader: what the
 * daemon will do, so that mistakes show with the reader's rights. */
int load_checked(const char *path, const struct user_world *w, struct edf **out,
		 struct edf_source **src, size_t *n, alps_error **err);

struct prepare_args {
	const char *job, *user, *edf, *image;
	unsigned tasks;
	bool run;
	char **nodes;           /* owned, from --nodes a,b,c */
	size_t nnodes;
};

/* Send a Prepare; on success *reply holds the response (caller frees);
 * else the exit code after the error was reported. */
int do_prepare(struct client *cl, const struct prepare_args *a, Alps__Response **reply);
/* Send pr as it is; the same results as do_prepare. */
int prepare_send(struct client *cl, Alps__PrepareRequest *pr, Alps__Response **reply);
/* Run argv in job; returns the exit code to leave with (exec's rules). */
int do_exec(struct client *cl, const char *job, unsigned rank, int argc, char **argv);
int do_release(struct client *cl, const char *job, bool quiet);

#endif
