/* cmd_slurm.c: alps prolog, alps epilog: slurm.conf's Prolog= and Epilog=
 * (with PrologFlags=Alloc) for jobs submitted with the SPANK plugin's
 * options.
 *
 * The prolog prepares the job's container on every node before the first
 * step starts, from what srun/sbatch packed into the job's control
 * environment (SPANK_ALPS_SPANK_JOB; client/slurmjob.h).  A job without
 * it is not an alps job: nothing to do.  A failure is one line on stderr
 * and in syslog (where an admin looks: slurmd's log shows the prolog
 * failed and drains the node), and the prolog is bounded in time so that
 * a stuck registry cannot hang an allocation.  The epilog releases the
 * job's containers ("JOB" and "JOB.*"): idempotent, and a no-op for a job
 * that never prepared. */
#include <config.h>

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "client/client.h"
#include "client/slurmjob.h"
#include "common/util.h"

#define CONTROL_ENV "SPANK_" SLURMJOB_ENV

static unsigned timeout_s = 300;

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "alps prolog: timed out (--timeout); nothing is left prepared "
				  "that the epilog would not release\n";
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to do */
	}
	_exit(EXIT_FAILED);
}

/* One line for the admin: stderr and syslog. */
static int fail_line(struct client *cl, int code, const char *what, const char *job,
		     const char *msg)
{
	fprintf(stderr, "alps %s: job %s: %s\n", what, job ? job : "?", msg);
	if (cl->json) {
		json_t *j = client_error_json(code, msg);
		json_object_set_new(j, "command", json_string(what));
		json_object_set_new(j, "job", json_string(job ? job : ""));
		client_print_json(j);
	}
	openlog("alps", LOG_PID, LOG_DAEMON);
	syslog(LOG_ERR, "%s: job %s: %s", what, job ? job : "?", msg);
	closelog();
	return EXIT_FAILED;
}

static int parse_opts(struct client *cl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;
	while ((opt = command_getopt(cl, argc, argv, "t:", opts)) != -1) {
		if (opt != 't')
			return command_opt_exit(opt);
		if (client_parse_uint(cl, optarg, "--timeout", 86400, &timeout_s) < 0)
			return EXIT_USAGE;
	}
	if (optind < argc)
		return usage_error(cl, "unexpected argument '%s'", argv[optind]);
	return -1;
}

static int job_id(struct client *cl, const char *what, uint32_t *out)
{
	const char *s = getenv("SLURM_JOB_ID");
	unsigned v;
	if (!s) {
		usage_error(cl, "SLURM_JOB_ID is not set (run from slurm.conf's %s=)",
			    strcmp(what, "prolog") == 0 ? "Prolog" : "Epilog");
		return -1;
	}
	if (client_parse_uint(cl, s, "SLURM_JOB_ID", UINT32_MAX - 1, &v) < 0)
		return -1;
	*out = v;
	return 0;
}

/* Prepare; while the job is being prepared by another caller (a second
 * prolog of the job on this node: several slurmd on one host), wait for
 * it: the answer is then "already prepared".  The alarm bounds it. */
static Alps__Response *prepare_call(struct client *cl, Alps__Request *r, alps_error **err)
{
	for (;;) {
		Alps__Response *resp = client_call(cl, r, NULL, NULL, err);
		if (!resp || resp->status != ALPS__STATUS__BUSY)
			return resp;
		alps__response__free_unpacked(resp, NULL);
		usleep(200 * 1000);
	}
}

static int run_prolog(struct client *cl, int argc, char **argv)
{
	uint32_t job;
	int prc = parse_opts(cl, argc, argv);
	if (prc >= 0)
		return prc;
	if (job_id(cl, "prolog", &job) < 0)
		return EXIT_USAGE;
	const char *enc = getenv(CONTROL_ENV);
	char jobs[16];
	snprintf(jobs, sizeof(jobs), "%u", (unsigned)job);
	if (!enc) {                     /* not an alps job */
		if (cl->json)
			client_print_json(json_pack("{s:b, s:s, s:b}", "ok", 1, "job", jobs,
						    "prepared", 0));
		return EXIT_OK;
	}
	const char *user = getenv("SLURM_JOB_UID");
	if (!user || !*user)
		user = getenv("SLURM_JOB_USER");
	if (!user || !*user)
		return fail_line(cl, ALPS_E_INVALID, "prolog", jobs, "SLURM_JOB_UID and SLURM_JOB_USER are not set");
	alps_error *err = NULL;
	Alps__PrepareRequest *req = NULL;
	if (slurmjob_decode(enc, &req, &err) < 0) {
		int rc = fail_line(cl, err->code, "prolog", jobs, err->msg);
		alps_error_free(err);
		return rc;
	}
	_cleanup_free_ char *container = slurmjob_container_id(job, req->job, &err);
	slurmjob_set_string(&req->job, container);
	slurmjob_set_string(&req->user, user);
	if (timeout_s > 0) {
		signal(SIGALRM, on_alarm);
		alarm(timeout_s);
	}
	Alps__Request r = ALPS__REQUEST__INIT;
	r.op_case = ALPS__REQUEST__OP_PREPARE;
	r.prepare = req;
	Alps__Response *resp = container ? prepare_call(cl, &r, &err) : NULL;
	alarm(0);
	slurmjob_request_free(req);
	int rc = EXIT_OK;
	if (!resp)
		rc = fail_line(cl, err ? err->code : ALPS_E_UNAVAILABLE, "prolog", jobs,
			       err ? err->msg : "no answer");
	else if (resp->status != ALPS__STATUS__OK)
		rc = fail_line(cl, (int)resp->status, "prolog", jobs,
			       resp->message ? resp->message : "prepare failed");
	else if (cl->json)
		client_print_json(json_pack("{s:b, s:s, s:b}", "ok", 1, "job", container,
					    "prepared", 1));
	else if (!cl->quiet)
		printf("alps prolog: job %s prepared\n", container);
	alps_error_free(err);
	if (resp)
		alps__response__free_unpacked(resp, NULL);
	return rc;
}

const struct command cmd_prolog = {
	.name = "prolog",
	.summary = "Slurm prolog: prepare the job's container (slurm.conf Prolog=, PrologFlags=Alloc).",
	.usage = "[--timeout SECONDS]",
	.help = "  -t, --timeout S   give up after S seconds (default 300; 0: no bound)\n"
		"Reads SLURM_JOB_ID, SLURM_JOB_UID and what the SPANK plugin put in the job's\n"
		"control environment; a job without it is left alone.  See doc/slurm.md.\n",
	.run = run_prolog,
};

/* The job's containers: "JOB" and "JOB.*". */
static bool is_jobs(const char *id, const char *job)
{
	size_t n = strlen(job);
	return strncmp(id, job, n) == 0 && (id[n] == '\0' || id[n] == '.');
}

static int release_one(struct client *cl, const char *id, alps_error **err)
{
	Alps__ReleaseRequest rr = ALPS__RELEASE_REQUEST__INIT;
	rr.job = (char *)id;
	Alps__Request r = ALPS__REQUEST__INIT;
	r.op_case = ALPS__REQUEST__OP_RELEASE;
	r.release = &rr;
	Alps__Response *resp = client_call(cl, &r, NULL, NULL, err);
	if (!resp)
		return -1;
	int rc = 0;
	if (resp->status != ALPS__STATUS__OK)
		rc = alps_fail(err, (int)resp->status, "releasing %s: %s", id, resp->message);
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

/* A job submitted without the plugin's options and no alpsd here: not an
 * error (a failed epilog drains the node, and plain jobs must not depend
 * on alpsd).  A step with its own --environment in such a job would have
 * needed alpsd to run at all. */
static int epilog_no_daemon(struct client *cl, const char *job, alps_error *err)
{
	if (cl->json)
		client_print_json(json_pack("{s:b, s:s, s:[]}", "ok", 1, "job", job, "released"));
	else if (!cl->quiet)
		printf("alps epilog: job %s: not an alps job and %s: nothing to release\n", job,
		       err->msg);
	alps_error_free(err);
	return EXIT_OK;
}

static int run_epilog(struct client *cl, int argc, char **argv)
{
	uint32_t job;
	int prc = parse_opts(cl, argc, argv);
	if (prc >= 0)
		return prc;
	if (job_id(cl, "epilog", &job) < 0)
		return EXIT_USAGE;
	char jobs[16];
	snprintf(jobs, sizeof(jobs), "%u", (unsigned)job);
	Alps__JobsRequest jr = ALPS__JOBS_REQUEST__INIT;
	Alps__Request r = ALPS__REQUEST__INIT;
	r.op_case = ALPS__REQUEST__OP_JOBS;
	r.jobs = &jr;
	alps_error *err = NULL;
	Alps__Response *resp = client_call(cl, &r, NULL, NULL, &err);
	if (!resp && err->code == ALPS_E_UNAVAILABLE && !getenv(CONTROL_ENV))
		return epilog_no_daemon(cl, jobs, err);
	if (!resp || resp->status != ALPS__STATUS__OK || !resp->jobs_reply) {
		int rc = fail_line(cl, err ? err->code : resp ? (int)resp->status : ALPS_E_INTERNAL,
				   "epilog", jobs, err ? err->msg : resp ? resp->message : "?");
		alps_error_free(err);
		if (resp)
			alps__response__free_unpacked(resp, NULL);
		return rc;
	}
	int rc = EXIT_OK;
	json_t *released = json_array();
	for (size_t i = 0; i < resp->jobs_reply->n_jobs && rc == EXIT_OK; i++) {
		const char *id = resp->jobs_reply->jobs[i]->job;
		if (!is_jobs(id, jobs))
			continue;
		if (release_one(cl, id, &err) < 0)
			rc = fail_line(cl, err->code, "epilog", jobs, err->msg);
		else if (cl->json)
			json_array_append_new(released, json_string(id));
		else if (!cl->quiet)
			printf("alps epilog: %s released\n", id);
		alps_error_free(err);
		err = NULL;
	}
	if (cl->json && rc == EXIT_OK)
		client_print_json(json_pack("{s:b, s:s, s:O}", "ok", 1, "job", jobs, "released",
					    released));
	json_decref(released);
	alps__response__free_unpacked(resp, NULL);
	return rc;
}

const struct command cmd_epilog = {
	.name = "epilog",
	.summary = "Slurm epilog: release the job's containers (slurm.conf Epilog=).",
	.usage = "",
	.help = "Releases JOB and JOB.* (named and step containers) for SLURM_JOB_ID.\n"
		"Idempotent; a job that never prepared is not an error.\n",
	.run = run_epilog,
};
