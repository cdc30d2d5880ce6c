/* daemon.h: the state of one alpsd, passed to every module and handler.
 * Modules hang their own opaque state here; main.c creates and frees them
 * in order. */
#ifndef ALPS_DAEMON_H
#define ALPS_DAEMON_H

#include <event2/event.h>
#include <stdint.h>
#include <sys/types.h>

struct config;
struct server;
struct topology;
struct fabric;
struct store;
struct puller;
struct cmdline;

struct daemon {
	struct event_base *base;
	struct config *cfg;          /* owned; replaced on reload */
	char *config_path;           /* owned; NULL when none */
	struct server *server;       /* owned */
	struct topology *topology;   /* owned; NULL if it failed to load */
	struct fabric *fabric;       /* owned; NULL when disabled */
	char *node_name;             /* owned; fabric.node, else the host name */
	struct store *store;         /* owned */
	struct puller *puller;       /* owned */
	uint64_t start_ms;           /* monotonic */
	pid_t pid;
	int lock_fd;                 /* flock()ed state-dir lock */
	const struct cmdline *cmdline;   /* for reloads */
	uint64_t stop_ms;            /* monotonic time of SIGTERM; 0 while running */
};

#endif
