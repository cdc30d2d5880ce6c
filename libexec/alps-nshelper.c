/* alps-nshelper: build one job's mount namespace for alpsd, then exit.
 *
 * alpsd (daemon/job/ns.c) starts one per prepare with posix_spawn, from
 * the worker thread that waits for it, with a fixed minimal environment:
 *
 *	fd 0  /dev/null
 *	fd 1, 2  the daemon's log
 *	fd 3  a SOCK_SEQPACKET socket to that worker thread
 *
 * A program of its own rather than a fork of the daemon: alpsd runs curl,
 * sqlite and libsquashfs threads, and a child forked from a threaded
 * process inherits whatever locks those threads held (the AddressSanitizer
 * allocator is not fork-safe, and a helper forked that way hung).  This
 * process is single-threaded from its first instruction, so it may fork
 * (squashfuse, work as the user) and allocate freely.
 *
 * The protocol: the daemon sends the validated plan (plan_wire.h); the
 * helper checks that its parent is the daemon that sent it, validates the
 * plan again, applies it (apply.h) reporting each step and mount
 * (helper.h), sends READY or ERROR, and after READY waits for the one byte
 * that says the daemon pinned its namespace. */
#include <config.h>

#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/job/apply.h"
#include "daemon/job/creds.h"
#include "daemon/job/helper.h"
#include "daemon/job/ipc.h"
#include "daemon/job/plan.h"
#include "daemon/job/plan_wire.h"

#define SOCK 3

static void step(const char *what)
{
	helper_send(SOCK, HELPER_STEP, 0, what, NULL, NULL, -1);
}

/* fd 3 is the daemon's socket, or this was not started by the daemon. */
static bool started_by_daemon(void)
{
	int type = 0;
	socklen_t len = sizeof(type);
	return getsockopt(SOCK, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET;
}

/* The plan, from our parent and no one else, checked whole again: it
 * crossed a process boundary. */
static int receive_plan(struct ns_plan **plan, alps_error **err)
{
	struct plan_wire_header h;
	if (plan_wire_recv(SOCK, plan, &h, err) < 0)
		return alps_error_prefix(err, "receiving the plan");
	if (getppid() != (pid_t)h.parent)
		return alps_fail(err, ALPS_E_PERMISSION, "the plan came from pid %d, not from "
				 "the helper's parent", (int)h.parent);
	if (h.flags & PLAN_WIRE_F_OVERLAY_LEGACY)
		apply_overlay_force_legacy(true);
	step("plan received");
	return ns_plan_validate(*plan, err);
}

static int build(const struct ns_plan *plan, alps_error **err)
{
	struct apply_ctx ctx = {
		.plan = plan,
		.creds = { plan->uid, plan->gid, plan->groups, plan->ngroups },
		.job_dir = xasprintf("%s/jobs/%s", plan->run_dir, plan->job),
		.rootfd = -1,
		.report = SOCK,
	};
	step("applying the plan");
	int rc = apply_plan(&ctx, err);
	apply_ctx_free(&ctx);
	return rc;
}

int main(int argc, char **argv)
{
	(void)argv;
	/* The worker thread that started us waits for us; if it is gone,
	 * so is the prepare. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (argc != 1 || !started_by_daemon()) {
		fputs("alps-nshelper: alpsd starts this program, with its socket as fd 3\n", stderr);
		return 2;
	}
	int keep[] = { SOCK };
	close_fds_except(keep, 1);
	umask(022);
	log_init("alps-nshelper", LOG_LVL_NOTICE, false);
	alps_error *err = NULL;
	struct ns_plan *plan = NULL;
	int rc = receive_plan(&plan, &err);
	if (rc == 0)
		rc = build(plan, &err);
	ns_plan_free(plan);
	if (rc < 0) {
		helper_send_error(SOCK, err);
		alps_error_free(err);
		return 1;
	}
	helper_send(SOCK, HELPER_READY, 0, NULL, NULL, NULL, -1);
	/* Our namespace must exist until the daemon has bound it to the pin. */
	char go;
	return ipc_recv(SOCK, &go, sizeof(go), NULL) == 1 ? 0 : 1;
}
