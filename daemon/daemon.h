/* daemon.h: the state of one alpsd, passed to every module and handler.
 * Modules hang their own opaque state here; main.c creates and frees them
 * in order. */
#ifndef ALPS_DAEMON_H
#define ALPS_DAEMON_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct config;
struct server;
struct topology;
struct fabric;
struct store;
struct puller;
struct cmdline;
struct work_pool;
struct metrics_http;

struct daemon {
	struct event_base *base;
	/* The current snapshots (one reference each, see work.h).  Read on
	 * the loop thread only: work elsewhere reads its own snapshot. */
	struct config *cfg;          /* replaced on reload */
	char *config_path;           /* owned; NULL when none */
	struct server *server;       /* owned */
	struct topology *topology;   /* NULL if it failed to load; replaced on reload */
	struct fabric *fabric;       /* owned; NULL when disabled */
	char *node_name;             /* owned; fabric.node, else the host name */
	struct store *store;         /* owned */
	struct puller *puller;       /* owned */
	struct work_pool *pool;      /* owned */
	uint64_t start_ms;           /* monotonic */
	pid_t pid;
	int lock_fd;                 /* flock()ed state-dir lock */
	const struct cmdline *cmdline;   /* for reloads */
	bool reloading;              /* a reload is loading on the pool */
	bool reload_again;           /* a SIGHUP came meanwhile */
	bool stopping;               /* SIGTERM or SIGINT came */
	uint64_t stop_ms;            /* monotonic time it came */
	char *reload_error;          /* owned: why the last reload failed; NULL if it did not */
	struct metrics_http *metrics_http;   /* owned; NULL without metrics.listen */
};

#endif
