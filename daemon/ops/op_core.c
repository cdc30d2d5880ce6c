/* op_core.c: Hello and Status (its store figures read on a worker). */
#include <config.h>

#include <sys/resource.h>
#include <unistd.h>

#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/ops/ops.h"
#include "daemon/server/handlers.h"
#include "daemon/server/metrics.h"
#include "daemon/server/server.h"

static int op_hello(struct request *rq, const Alps__Request *req, alps_error **err)
{
	/* The version was checked by the server before dispatch. */
	Alps__HelloReply hello = ALPS__HELLO_REPLY__INIT;
	hello.protocol_version = ALPS__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT;
	hello.server = (char *)"alpsd " PACKAGE_VERSION;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_HELLO;
	resp.hello = &hello;
	request_finish(rq, &resp);
	return 0;
}

const struct handler handler_hello = {
	ALPS__REQUEST__OP_HELLO, "hello", PRIV_USER, op_hello,
};

/* The loop's figures now; the store's come from ops_gauges() (a worker). */
static void status_answer(void *arg, const struct metrics_gauges *g, const char *store_error)
{
	struct request *rq = arg;
	struct daemon *d = request_daemon(rq);
	if (!request_connected(rq)) {   /* gone, or the server freed at stop */
		request_unref(rq);
		return;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);

	Alps__StatusReply st = ALPS__STATUS_REPLY__INIT;
	st.version = (char *)PACKAGE_VERSION;
	st.uptime_ms = now_monotonic_ms() - d->start_ms;
	st.pid = (int32_t)d->pid;
	st.store_path = d->cfg->state_dir;
	st.socket_path = d->cfg->socket_path;
	st.run_dir = d->cfg->run_dir;
	st.clients = (uint32_t)server_connections(d->server);
	st.requests_served = server_requests_served(d->server);
	st.peak_rss_kb = (uint64_t)ru.ru_maxrss;
	st.protocol_version = ALPS__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT;
	st.store_bytes = g->store_bytes;
	st.fs_size = g->fs_size;
	st.fs_free = g->fs_free;
	st.images = g->images;
	st.layers = g->layers;
	st.jobs = g->jobs;
	st.pulls_in_flight = (uint32_t)g->pulls_in_flight;
	st.reload_failed = d->reload_error != NULL;
	st.reload_error = d->reload_error ? d->reload_error : (char *)"";
	st.store_error = store_error ? (char *)store_error : (char *)"";

	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_STATUS_REPLY;
	resp.status_reply = &st;
	request_finish(rq, &resp);
	request_unref(rq);
}

static int op_status(struct request *rq, const Alps__Request *req, alps_error **err)
{
	(void)req;
	(void)err;
	ops_gauges(request_daemon(rq), status_answer, request_ref(rq));
	return 0;
}

const struct handler handler_status = {
	ALPS__REQUEST__OP_STATUS, "status", PRIV_USER, op_status,
};
