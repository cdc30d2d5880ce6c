/* op_metrics.c: Metrics, and the figures it shares with Status and the
 * scrape listener (ops_gauges).  The store's figures are sqlite and
 * statvfs calls: read on a worker, never on the loop. */
#include <config.h>

#include <stdlib.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/daemon.h"
#include "daemon/image/pull.h"
#include "daemon/ops/ops.h"
#include "daemon/server/handlers.h"
#include "daemon/server/metrics.h"
#include "daemon/server/work.h"
#include "daemon/store/store.h"

struct gauges_work {
	struct store *store;
	struct metrics_gauges g;
	alps_error *err;
	ops_gauges_fn done;
	void *arg;
};

static void gauges_read(void *arg)
{
	struct gauges_work *w = arg;
	struct store_usage u = { 0 };
	if (store_df(w->store, &u, &w->err) < 0 ||
	    store_fs_usage(w->store, &w->g.fs_size, &w->g.fs_free, &w->err) < 0 ||
	    store_stat_get(w->store, "layer_hits", &w->g.layer_hits, &w->err) < 0 ||
	    store_stat_get(w->store, "layer_misses", &w->g.layer_misses, &w->err) < 0 ||
	    store_stat_get(w->store, "images_evicted", &w->g.evictions, &w->err) < 0)
		return;
	w->g.store_bytes = u.total_bytes;
	w->g.images = u.images;
	w->g.layers = u.layers;
	w->g.jobs = u.jobs;
}

static void gauges_done(void *arg)
{
	struct gauges_work *w = arg;
	if (w->err) {
		/* Counters the store could not give are left out, not shown as 0
		 * (a counter must never go back). */
		w->g.layer_hits = w->g.layer_misses = w->g.evictions = -1;
		log_warn("metrics: %s", w->err->msg);
	}
	w->done(w->arg, &w->g, w->err ? w->err->msg : NULL);
	alps_error_free(w->err);
	free(w);
}

int ops_gauges(struct daemon *d, ops_gauges_fn done, void *arg, alps_error **err)
{
	struct gauges_work *w = xzalloc(sizeof(*w));
	w->store = d->store;
	w->done = done;
	w->arg = arg;
	w->g.pulls_in_flight = puller_active(d->puller);
	w->g.uptime_ms = now_monotonic_ms() - d->start_ms;
	w->g.reload_failed = d->reload_error != NULL;
	if (work_submit(d, gauges_read, gauges_done, w, err) < 0) {
		free(w);
		return -1;
	}
	return 0;
}

static void metrics_answer(void *arg, const struct metrics_gauges *g, const char *store_error)
{
	struct request *rq = arg;
	(void)store_error;      /* logged; the counters of the daemon still go out */
	Alps__MetricsReply mr = ALPS__METRICS_REPLY__INIT;
	mr.text = metrics_render(g);
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_METRICS_REPLY;
	resp.metrics_reply = &mr;
	request_finish(rq, &resp);
	free(mr.text);
	request_unref(rq);
}

static int op_metrics(struct request *rq, const Alps__Request *req, alps_error **err)
{
	(void)req;
	if (ops_gauges(request_daemon(rq), metrics_answer, request_ref(rq), err) < 0) {
		request_unref(rq);
		return -1;
	}
	return 0;
}

const struct handler handler_metrics = {
	ALPS__REQUEST__OP_METRICS, "metrics", PRIV_USER, op_metrics,
};
