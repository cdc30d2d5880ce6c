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
	size_t input;           /* bytes of input buffers past what each may keep */
	bool over;              /* past the per-uid cap on queued bytes */
	uint64_t turn;          /* the loop turn `frames` counts in */
	unsigned frames;        /* frames dispatched in that turn */
};

struct peer_table {
	struct peer_uid *uids;  /* owned; one per uid with connections */
	size_t nconns;          /* connections counted, over every uid */
	uint64_t refusal_logged_ns;
	unsigned refusals_unlogged;
};

struct ucred;

/* Why a new connection of uid is refused, or NULL; caller frees. */
char *peer_refusal(const struct peer_table *t, const struct config *cfg, uid_t uid, bool admin);
/* Log a refusal, at most one line per 10 s: a user may have himself
 * refused as fast as he can connect. */
void peer_log_refusal(struct peer_table *t, const struct ucred *peer, const char *why);
/* Count one more connection of uid; returns its entry. */
struct peer_uid *peer_add(struct peer_table *t, uid_t uid);
/* Uncount a connection of u's; u is freed with its last one. */
void peer_remove(struct peer_table *t, struct peer_uid *u);
/* A connection of u's went from `before` to `after` bytes queued.  True
 * when u just went back under its cap: its connections may be read. */
bool peer_queued(struct peer_uid *u, size_t before, size_t after, size_t cap);
/* A connection of u's input buffer went from `before` to `after` bytes
 * (counted past what each may keep).  True when it grew and u is over
 * max_input_per_uid (at least one max_frame_size) of cfg: the connection
 * that grew is to be cut. */
bool peer_input(struct peer_uid *u, size_t before, size_t after, const struct config *cfg);
/* That cap: max_input_per_uid, or one max_frame_size if larger. */
size_t peer_input_cap(const struct config *cfg);
/* Recompute `over` for a new cap (after a reload). */
void peer_recheck(struct peer_table *t, size_t cap);
/* Whether u may have one more frame dispatched in turn (counts it). */
bool peer_take_frame(struct peer_uid *u, uint64_t turn, unsigned per_turn);

#endif
