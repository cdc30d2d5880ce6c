/* peers.h: what each uid connected to alpsd holds, and the limits on it.
 *
 * The server counts, per uid, the connections open and the reply bytes
 * queued and not yet read over all of them, and the frames dispatched in
 * the current turn of the loop.  From these it refuses connections (a
 * share per user, slots kept for root and the admin group), stops reading
 * a user whose replies pile up unread, and keeps one user's many
 * pipelining connections from having more turns than one.  Pure
 * bookkeeping: no I/O, no libevent. */
#ifndef ALPS_PEERS_H
#define ALPS_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct config;

struct peer_uid {
	struct peer_uid *next;
	uid_t uid;
	size_t nconns;
	size_t queued;          /* reply bytes not yet written */
	bool over;              /* past the per-uid cap on queued bytes */
	uint64_t turn;          /* the loop turn `frames` counts in */
	unsigned frames;        /* frames dispatched in that turn */
};

struct peer_table {
	struct peer_uid *uids;  /* owned; one per uid with connections */
	size_t nconns;          /* connections counted, over every uid */
};

/* Why a new connection of uid is refused, or NULL; caller frees. */
char *peer_refusal(const struct peer_table *t, const struct config *cfg, uid_t uid, bool admin);
/* Count one more connection of uid; returns its entry. */
struct peer_uid *peer_add(struct peer_table *t, uid_t uid);
/* Uncount a connection of u's; u is freed with its last one. */
void peer_remove(struct peer_table *t, struct peer_uid *u);
/* A connection of u's went from `before` to `after` bytes queued.  True
 * when u just went back under its cap: its connections may be read. */
bool peer_queued(struct peer_uid *u, size_t before, size_t after, size_t cap);
/* Recompute `over` for a new cap (after a reload). */
void peer_recheck(struct peer_table *t, size_t cap);
/* Whether u may have one more frame dispatched in turn (counts it). */
bool peer_take_frame(struct peer_uid *u, uint64_t turn, unsigned per_turn);

#endif
