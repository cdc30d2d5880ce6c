/* op_node.c: Topology and Place, the node's hardware and a job step's
 * placement on it.  Both only read the topology loaded at start-up (or
 * last SIGHUP); a node whose topology failed to load answers
 * ALPS_E_UNAVAILABLE and goes on serving everything else. */
#include <config.h>

#include <jansson.h>
#include <stdlib.h>

#include "daemon/daemon.h"
#include "daemon/server/handlers.h"
#include "daemon/node/place.h"
#include "daemon/node/topology.h"

static int need_topology(struct daemon *d, alps_error **err)
{
	if (d->topology)
		return 0;
	return alps_fail(err, ALPS_E_UNAVAILABLE,
			 "the node topology is not available: it failed to load at start-up "
			 "(see alpsd's log; fix [topology] and send SIGHUP)");
}

/* Compact JSON text, or NULL with *err set; caller frees.  Takes j, which
 * is NULL when a name from the hardware was not valid UTF-8. */
static char *dump_json(json_t *j, const char *what, alps_error **err)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!s)
		alps_fail(err, ALPS_E_INTERNAL, "cannot write the %s as JSON", what);
	return s;
}

static int op_topology(struct request *rq, const Alps__Request *req ALPS_UNUSED, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	if (need_topology(d, err) < 0)
		return -1;
	char *text = dump_json(topology_to_json(d->topology), "topology", err);
	if (!text)
		return -1;
	Alps__TopologyReply reply = ALPS__TOPOLOGY_REPLY__INIT;
	reply.topology_json = text;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_TOPOLOGY_REPLY;
	resp.topology_reply = &reply;
	request_finish(rq, &resp);
	free(text);
	return 0;
}

const struct handler handler_topology = {
	ALPS__REQUEST__OP_TOPOLOGY, "topology", PRIV_USER, op_topology,
};

static int op_place(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	const Alps__PlaceRequest *pr = req->place;
	if (!pr)
		return alps_fail(err, ALPS_E_PROTOCOL, "place request without its body");
	if (need_topology(d, err) < 0)
		return -1;
	struct place_plan *plan = NULL;
	/* The planner's messages already say what does not fit. */
	if (place_plan_new(d->topology, pr->tasks, pr->gpus_per_task, &plan, err) < 0)
		return -1;
	char *text = dump_json(place_plan_to_json(plan), "placement plan", err);
	place_plan_free(plan);
	if (!text)
		return -1;
	Alps__PlaceReply reply = ALPS__PLACE_REPLY__INIT;
	reply.plan_json = text;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_PLACE_REPLY;
	resp.place_reply = &reply;
	request_finish(rq, &resp);
	free(text);
	return 0;
}

const struct handler handler_place = {
	ALPS__REQUEST__OP_PLACE, "place", PRIV_USER, op_place,
};
