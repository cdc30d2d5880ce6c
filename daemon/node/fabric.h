/* fabric.h: warm libfabric endpoints and the table of peer daemons.
 *
 * At start alpsd opens, for the configured provider (default: the best of
 * cxi, verbs;ofi_rxm, tcp;ofi_rxm), one RDM endpoint per domain (NIC) with
 * its fabric, domain, completion queue and address vector, and keeps them
 * open: a job then gets every node's addresses without anyone opening a
 * fabric.  An endpoint that fails is closed and re-opened with backoff.
 *
 * The daemons talk among themselves over one "control" endpoint whose
 * address can be computed from a host name: the configured provider's own
 * when it addresses by sockaddr (tcp, verbs), else an extra tcp;ofi_rxm
 * endpoint.  It is bound to fabric.address:fabric.port on every node, so a
 * peer's address is its resolved host name and the common port, inserted
 * in the address vector with no out-of-band exchange.
 *
 * Liveness: each peer gets one small ping per liveness interval, the pings
 * spread evenly over the interval; a peer answers with a pong that echoes
 * the ping's timestamp (round-trip time).  Pings and pongs carry the
 * sender's node name and the addresses of all its warm endpoints, so every
 * daemon holds every node's NIC addresses: a job's address table is read
 * from memory ("instant on").  A peer not heard from for peer_down_after_ms
 * is down; it is up again with the next message it sends.
 *
 * Everything runs on the daemon's libevent loop: the completion queue's
 * file descriptor (FI_WAIT_FD) wakes the loop, timers send pings and drive
 * progress (tcp;ofi_rxm progresses manually: reading the CQ is what moves
 * data and connections).  Nothing here blocks, except resolving host names
 * when the peer list is (re)loaded.
 *
 * Only IPv4 control addresses are supported. */
#ifndef ALPS_FABRIC_H
#define ALPS_FABRIC_H

#include <event2/event.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct config;
struct fabric;

/* Open the endpoints and load the peer list (config fabric.peers, else the
 * file fabric.peers_file).  Fails for a bad configuration (a peer that does
 * not parse or resolve, no provider at all); a provider that fails to open
 * later is retried with backoff and reported in fabric_to_json().  The
 * fabric lives on base until fabric_close().  Call it at start-up, before
 * the daemon starts threads: it may set FI_OFI_RXM_BUFFER_SIZE in the
 * environment (unless set) for libfabric to read. */
int fabric_open(struct event_base *base, const struct config *cfg, const char *node_name,
		struct fabric **out, alps_error **err);
void fabric_close(struct fabric *f);

/* Re-read the peer list from cfg (SIGHUP).  Peers that stay keep their
 * state; new ones start unknown; on error the old list is kept. */
int fabric_reload_peers(struct fabric *f, const struct config *cfg, alps_error **err);

enum {
	FABRIC_JSON_INFO = 1 << 0,      /* include each endpoint's fi_info (fi_tostr) */
	FABRIC_JSON_NO_PEERS = 1 << 1,  /* counts only, no per-peer array */
};

/* Local endpoints (provider, domain, address, state) and peers (name,
 * address, state, last seen, round-trip time), for `alps endpoints`.
 * Caller owns the reference. */
json_t *fabric_to_json(struct fabric *f, unsigned flags);

/* The fabric map of a job running on nodes[0..n): for each node its NIC
 * addresses (hex and fi_av_straddr text), provider, state, last seen and
 * round-trip time, read from the warm table (no traffic).  The nodes that
 * are down or unknown are returned in *down (a NULL-terminated array of
 * *ndown strings; caller frees with fabric_strv_free()) so that prepare can
 * report them.  -1 only for invalid input (a bad node name). */
int fabric_job_map(struct fabric *f, const char *const *nodes, size_t n, json_t **out,
		   char ***down, size_t *ndown, alps_error **err);
void fabric_strv_free(char **v);

/* Job-wide image pinning.  The first node of a job resolves reference to
 * digest and sends it to the daemons of the job's other nodes, so that all
 * of them run the same image.  Returns how many peers the message was
 * queued for (unknown nodes and this node are skipped); the pin is also
 * recorded locally.  Delivery is best effort: a node that misses it
 * resolves the tag itself. */
int fabric_publish_pin(struct fabric *f, const char *job, const char *reference,
		       const char *digest, const char *const *nodes, size_t n, alps_error **err);
/* The digest pinned for (job, reference) by a message received (or
 * published here) within the last hour, or NULL.  Caller frees. */
char *fabric_lookup_pin(struct fabric *f, const char *job, const char *reference);

/* For tests: queue len bytes (up to 64 KiB), unchecked, for peer node,
 * as a broken or hostile sender would.  -1 if node is not a peer. */
int fabric_send_raw(struct fabric *f, const char *node, const void *buf, size_t len);

/* Counters of a fabric instance, for tests and benchmarks. */
struct fabric_stats {
	size_t peers;
	size_t peers_up;
	size_t peers_down;
	uint64_t pings_sent;
	uint64_t pongs_received;
	uint64_t messages_received;
	uint64_t messages_rejected;     /* failed validation */
	uint64_t send_errors;
	uint64_t endpoint_reopens;
};
void fabric_get_stats(struct fabric *f, struct fabric_stats *st);

#endif
