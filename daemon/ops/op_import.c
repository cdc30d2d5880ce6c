/* op_import.c: Import.  The request carries one fd, opened by the client as
 * the user (a file, or a pipe with a tar of a directory): the daemon reads
 * what the user could read and nothing else.  The import runs on the pool;
 * the loop only sends progress (from counters the worker updates) and the
 * answer. */
#include <config.h>

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/ref.h"
#include "common/util.h"
#include "daemon/daemon.h"
#include "daemon/image/import.h"
#include "daemon/image/pull.h"
#include "daemon/ops/ops.h"
#include "daemon/server/handlers.h"
#include "daemon/server/work.h"
#include "daemon/settings.h"

#define TICK_MS 250

/* Imports in flight (loop thread only).  An import holds a pool thread for
 * as long as the user's file takes to read (a pipe, a slow or FUSE file
 * system), so imports get at most half the pool: prepares and execs of
 * everyone else never wait behind them. */
static unsigned imports_running;

struct import_work {
	struct request *rq;
	struct snapshot snap;
	struct event *tick;             /* owned: progress, on the loop */
	int fd;                         /* owned */
	char *tag;                      /* owned: canonical, or NULL */
	char *source;                   /* owned: FILE as the user named it, escaped */
	struct import_progress prog;
	struct import_request ireq;
	struct import_result res;
	alps_error *err;
};

static void import_work_free(struct import_work *w)
{
	imports_running--;
	if (w->tick)
		event_free(w->tick);
	if (w->fd >= 0)
		close(w->fd);
	free(w->tag);
	free(w->source);
	import_result_clear(&w->res);
	alps_error_free(w->err);
	snapshot_drop(&w->snap);
	request_unref(w->rq);
	free(w);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct import_work *w = arg;
	(void)fd, (void)what;
	if (!request_connected(w->rq))
		return;
	struct pull_status st = {
		.phase = (enum pull_phase)atomic_load(&w->prog.phase),
		.done = atomic_load(&w->prog.done),
		.total = atomic_load(&w->prog.total),
	};
	ops_send_pull_progress(w->rq, &st, false);
}

static void import_run(void *arg)
{
	struct import_work *w = arg;
	if (import_image(&w->ireq, &w->res, &w->err) == 0) {
		log_info("import of '%s' by uid %u: %s %s as %s (%u layers%s)", w->source,
			 (unsigned)w->ireq.uid, w->res.format, w->res.digest, w->res.reference,
			 w->res.layers, w->res.private ? ", private" : "");
	} else {
		/* The message quotes the user's file: escaped once more here. */
		_cleanup_free_ char *msg = log_escape(w->err->msg, 1000);
		log_info("import of '%s' by uid %u (%s) failed: %s", w->source,
			 (unsigned)w->ireq.uid, w->res.format ? w->res.format : "?", msg);
	}
	close(w->fd);
	w->fd = -1;
}

static void import_done(void *arg)
{
	struct import_work *w = arg;
	if (w->err) {
		request_fail(w->rq, w->err);
		w->err = NULL;
		return import_work_free(w);
	}
	Alps__ImportReply ir = ALPS__IMPORT_REPLY__INIT;
	ir.reference = w->res.reference;
	ir.digest = w->res.digest;
	ir.format = (char *)w->res.format;
	ir.layers = w->res.layers;
	ir.size = w->res.size;
	ir.private_ = w->res.private;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_IMPORT_REPLY;
	resp.import_reply = &ir;
	request_finish(w->rq, &resp);
	import_work_free(w);
}

static void squash_opts_from(struct squash_opts *o, const struct config *c, struct daemon *d)
{
	unsigned pool = work_pool_size(d->pool);
	memset(o, 0, sizeof(*o));
	o->compressor = c->compression;
	o->level = (int)c->compression_level;
	o->threads = pool > 8 ? 8 : pool ? pool : 1;
	o->budget = work_pool_budget(d->pool);
	o->max_entries = (uint64_t)c->max_layer_entries;
	o->max_tar_bytes = (uint64_t)c->max_layer_bytes;
}

/* The one fd the client passed, and the tag in canonical form. */
static int import_args(struct request *rq, const Alps__ImportRequest *ir, struct import_work *w,
		       alps_error **err)
{
	int fds[2];
	size_t n = request_take_fds(rq, fds, 2);
	for (size_t i = 1; i < n; i++)
		close(fds[i]);
	if (n != 1)
		return alps_fail(err, ALPS_E_INVALID, "import: expected the file as one fd, got %zu",
				 n);
	w->fd = fds[0];
	w->source = log_escape(ir->source ? ir->source : "", 300);
	if (!ir->tag || !*ir->tag)
		return 0;
	struct image_ref ref;
	if (ref_parse(ir->tag, request_daemon(rq)->cfg->default_registry, &ref, err) < 0)
		return alps_error_prefix(err, "import: --tag");
	w->tag = ref_format(&ref);
	ref_free(&ref);
	return 0;
}

static int op_import(struct request *rq, const Alps__Request *req, alps_error **err)
{
	struct daemon *d = request_daemon(rq);
	const Alps__ImportRequest *ir = req->import_image;
	if (!ir)
		return alps_fail(err, ALPS_E_INVALID, "import: empty request");
	unsigned cap = work_pool_size(d->pool) / 2;
	if (imports_running >= (cap ? cap : 1))
		return alps_fail(err, ALPS_E_BUSY, "import: %u imports are running, the most this "
				 "node takes at once: try again later", imports_running);
	imports_running++;
	struct import_work *w = xzalloc(sizeof(*w));
	w->fd = -1;
	w->rq = request_ref(rq);
	snapshot_take(d, &w->snap);
	if (import_args(rq, ir, w, err) < 0) {
		import_work_free(w);
		return -1;
	}
	w->ireq = (struct import_request){
		.store = d->store, .fd = w->fd, .from_directory = ir->from_directory,
		.tag = w->tag, .default_registry = w->snap.cfg->default_registry,
		.uid = request_peer(rq)->uid, .admin = request_peer_is_admin(rq),
		.progress = &w->prog,
	};
	squash_opts_from(&w->ireq.squash, w->snap.cfg, d);
	cache_policy_from(&w->ireq.policy, w->snap.cfg);
	w->tick = event_new(d->base, -1, EV_PERSIST, on_tick, w);
	struct timeval tv = { 0, TICK_MS * 1000 };
	event_add(w->tick, &tv);
	if (work_submit(d, import_run, import_done, w, err) < 0) {
		import_work_free(w);
		return -1;
	}
	return 0;
}

const struct handler handler_import = {
	ALPS__REQUEST__OP_IMPORT_IMAGE, "import", PRIV_USER, op_import,
};
