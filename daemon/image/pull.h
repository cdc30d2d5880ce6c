/* pull.h: pulling images into the store, once per image and per layer.
 *
 * A pull runs on its own thread: resolve the reference (manifest, config),
 * then fetch and convert the missing layers on up to
 * store.max_parallel_layers threads (HTTP -> SHA-256 -> inflate -> tar ->
 * squashfs, streamed through a bounded pipe, nothing staged on disk but the
 * squashfs), commit each layer, then the image and its tag.
 *
 * Single flight: concurrent pulls of the same reference (by the same
 * credentials' owner) share one pull; pulls of different images that share
 * a layer download and convert it once (the second waits for the first and
 * finds it in the store).  Everything a waiter sees - progress and result -
 * is delivered on the event loop's thread.  A waiter that goes away (a
 * client pressing Ctrl-C) does not stop the pull. */
#ifndef ALPS_PULL_H
#define ALPS_PULL_H

#include <stdint.h>
#include <sys/types.h>

#include "common/dockercfg.h"
#include "common/error.h"

struct config;
struct event_base;
struct puller;
struct store;
struct work_pool;

enum pull_layer_state {
	PULL_LAYER_WAITING = 0,
	PULL_LAYER_DOWNLOADING,
	PULL_LAYER_VERIFYING,   /* a cached layer fetched again to prove access */
	PULL_LAYER_CACHED,
	PULL_LAYER_DONE,
	PULL_LAYER_FAILED,
};

enum pull_phase {
	PULL_RESOLVING = 0,
	PULL_LAYERS,
	PULL_COMMITTING,
};

/* The words the protocol and logs use: "waiting", "downloading"...;
 * "resolving", "layers", "committing". */
const char *pull_layer_state_name(enum pull_layer_state s);
const char *pull_phase_name(enum pull_phase p);

struct pull_layer_status {
	char digest[80];
	uint64_t done, total;
	enum pull_layer_state state;
};

/* A snapshot, valid during the progress callback only. */
struct pull_status {
	const char *reference;
	enum pull_phase phase;
	struct pull_layer_status *layers;
	size_t nlayers;
	uint64_t done, total;   /* compressed bytes of layers to fetch */
	uint64_t rate_bps;
	uint64_t eta_ms;
	char **notices;         /* lines for the user since the last snapshot */
	size_t nnotices;
};

struct pull_result {
	const char *reference;  /* canonical */
	const char *digest;     /* manifest digest */
	uint32_t layers;
	uint32_t fetched;       /* layers downloaded by this pull */
	uint64_t size;          /* compressed bytes of the image's layers */
	const char *refresh;    /* "new", "unchanged", "changed", "not checked" */
	const char *previous;   /* "changed": the digest the tag had, else NULL */
};

struct pull_waiter_ops {
	void (*progress)(void *arg, const struct pull_status *st);
	/* Exactly once; err NULL on success (then res is set). */
	void (*done)(void *arg, const struct pull_result *res, const alps_error *err);
};

struct pull_request {
	const struct config *cfg;               /* the settings it starts with (copied) */
	const char *reference;
	const char *platform;                   /* "" or NULL: config / node */
	uid_t uid;                              /* who asks */
	const struct registry_cred *creds;      /* the user's, may be empty */
	size_t ncreds;
	long timeout_s;                         /* > 0: instead of registry.timeout */
	bool no_refresh;                        /* a cached tag: do not ask the registry */
};

/* Pulls run on pool (conversions) and threads of their own (downloads),
 * commit to store, and report on base's loop; at most max_parallel
 * layers convert at once over all pulls. */
struct puller *puller_new(struct event_base *base, struct store *store, struct work_pool *pool,
			  unsigned max_parallel);
/* At stop: running pulls give up soon (downloads end, layers not started
 * are skipped); nothing waits here. */
void puller_stop(struct puller *p);
/* Cancel what is running, wait for the threads, free.  Waiters still
 * attached get their done() with ALPS_E_CANCELLED. */
void puller_free(struct puller *p);
/* Start or join a pull.  ops->done is called later, on the loop. */
int puller_pull(struct puller *p, const struct pull_request *req,
		const struct pull_waiter_ops *ops, void *arg, alps_error **err);
size_t puller_active(const struct puller *p);

#endif
