/* op_metrics.c: Metrics, and the figures it shares with Status and the
 * scrape listener (ops_gauges).  The store's figures are sqlite and
 * statvfs calls: read on a worker, never on the loop, and never waited
 * for long. */
#include <config.h>

#include <event2/event.h>
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

/* One read of the store at a time, shared by every request that asks
 * meanwhile.  A request waits for it at most GAUGES_WAIT_MS: a store that
 * an admin's sqlite3 shell holds locked must not stall status or a
 * scrape, which then get the figures of the last read, saying so.  Loop
 * thread only. */
#define GAUGES_WAIT_MS 500

struct gauges_waiter {
	struct gauges_waiter *next;
	struct event *timer;
	ops_gauges_fn done;
	void *arg;
};

struct gauges_read {
	struct store *store;
	struct metrics_gauges g;        /* the store's part */
	alps_error *err;
};

static struct {
	struct daemon *d;
	bool reading;
	struct gauges_waiter *waiters;
	struct metrics_gauges last;     /* the last read's store figures */
	bool have_last;
	uint64_t last_ms;
	char *last_error;               /* why the last read failed, or NULL */
} cache;

static void gauges_read(void *arg)
{
	struct gauges_read *r = arg;
	struct store_usage u = { 0 };
	r->g.layer_hits = r->g.layer_misses = r->g.evictions = -1;
	if (store_df(r->store, &u, &r->err) < 0 ||
	    store_fs_usage(r->store, &r->g.fs_size, &r->g.fs_free, &r->err) < 0 ||
	    store_stat_get(r->store, "layer_hits", &r->g.layer_hits, &r->err) < 0 ||
	    store_stat_get(r->store, "layer_misses", &r->g.layer_misses, &r->err) < 0 ||
	    store_stat_get(r->store, "images_evicted", &r->g.evictions, &r->err) < 0)
		return;
	r->g.store_bytes = u.total_bytes;
	r->g.images = u.images;
	r->g.layers = u.layers;
	r->g.jobs = u.jobs;
}

/* The last figures of the store and the loop's now, to w's callback. */
static void waiter_answer(struct gauges_waiter *w, const char *note)
{
	struct daemon *d = cache.d;
	struct metrics_gauges g = cache.last;
	if (!cache.have_last)
		g.layer_hits = g.layer_misses = g.evictions = -1;   /* left out, never 0 */
	g.pulls_in_flight = puller_active(d->puller);
	g.uptime_ms = now_monotonic_ms() - d->start_ms;
	g.reload_failed = d->reload_error != NULL;
	if (w->timer)
		event_free(w->timer);
	w->done(w->arg, &g, note);
	free(w);
}

static void waiter_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct gauges_waiter *w = arg;
	(void)fd;
	(void)what;
	for (struct gauges_waiter **pp = &cache.waiters; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	_cleanup_free_ char *note = cache.have_last ?
		xasprintf("the store is busy: its figures are %llu ms old",
			  (unsigned long long)(now_monotonic_ms() - cache.last_ms)) :
		xstrdup("the store is busy: its figures are not read yet");
	waiter_answer(w, note);
}

static void gauges_done(void *arg)
{
	struct gauges_read *r = arg;
	cache.reading = false;
	free(cache.last_error);
	cache.last_error = NULL;
	if (r->err) {
		log_warn("store figures: %s", r->err->msg);
		cache.last_error = xstrdup(r->err->msg);
		alps_error_free(r->err);
	} else {
		cache.last = r->g;
		cache.have_last = true;
		cache.last_ms = now_monotonic_ms();
	}
	free(r);
	while (cache.waiters) {
		struct gauges_waiter *w = cache.waiters;
		cache.waiters = w->next;
		waiter_answer(w, cache.last_error);
	}
}

void ops_gauges(struct daemon *d, ops_gauges_fn done, void *arg)
{
	cache.d = d;
	struct gauges_waiter *w = xzalloc(sizeof(*w));
	w->done = done;
	w->arg = arg;
	if (!cache.reading) {
		struct gauges_read *r = xzalloc(sizeof(*r));
		r->store = d->store;
		alps_error *err = NULL;
		if (work_submit(d, gauges_read, gauges_done, r, &err) < 0) {
			/* Stopping: the last figures, and why there are no newer. */
			free(r);
			waiter_answer(w, err->msg);
			alps_error_free(err);
			return;
		}
		cache.reading = true;
	}
	struct timeval tv = { .tv_sec = 0, .tv_usec = GAUGES_WAIT_MS * 1000 };
	w->timer = evtimer_new(d->base, waiter_timeout, w);
	evtimer_add(w->timer, &tv);
	w->next = cache.waiters;
	cache.waiters = w;
}

void ops_gauges_free(void)
{
	free(cache.last_error);
	cache.last_error = NULL;
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
	(void)err;
	ops_gauges(request_daemon(rq), metrics_answer, request_ref(rq));
	return 0;
}

const struct handler handler_metrics = {
	ALPS__REQUEST__OP_METRICS, "metrics", PRIV_USER, op_metrics,
};
