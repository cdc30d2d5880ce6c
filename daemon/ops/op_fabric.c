/* op_fabric.c: Endpoints, the warm fabric endpoints and the peer table. */
#include <config.h>

#include <jansson.h>
#include <stdlib.h>

#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/node/fabric.h"

/* The reply is JSON (see fabric_to_json()); with the fabric disabled it
 * still is, so that `alps endpoints --json` always parses.  Admins also
 * get each endpoint's fi_info, which is long and only for diagnosis. */
static int op_endpoints(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	json_t *o;
	if (d->fabric)
		o = fabric_to_json(d->fabric, request_peer_is_admin(rq) ? FABRIC_JSON_INFO : 0);
	else
		o = json_pack("{s:b, s:s, s:[], s:[]}", "enabled", 0, "state", "disabled",
			      "endpoints", "peers");
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!text)
		return alps_fail(err, ALPS_E_INTERNAL, "endpoints: cannot encode the reply");

	Alps__EndpointsReply reply = ALPS__ENDPOINTS_REPLY__INIT;
	reply.endpoints_json = text;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_ENDPOINTS_REPLY;
	resp.endpoints_reply = &reply;
	request_finish(rq, &resp);
	free(text);
	return 0;
}

const struct handler handler_endpoints = {
	ALPS__REQUEST__OP_ENDPOINTS, "endpoints", PRIV_USER, op_endpoints,
};
