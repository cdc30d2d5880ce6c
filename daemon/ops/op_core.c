/* op_core.c: Hello and Status. */
#include <config.h>

#include <sys/resource.h>
#include <unistd.h>

#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
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

static int op_status(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
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

	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_STATUS_REPLY;
	resp.status_reply = &st;
	request_finish(rq, &resp);
	return 0;
}

const struct handler handler_status = {
	ALPS__REQUEST__OP_STATUS, "status", PRIV_USER, op_status,
};
