/* peers.c: see peers.h. */
#include <config.h>

#include <stdlib.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/server/peers.h"

static struct peer_uid *peer_find(const struct peer_table *t, uid_t uid)
{
	for (struct peer_uid *u = t->uids; u; u = u->next)
		if (u->uid == uid)
			return u;
	return NULL;
}

/* Users other than root have a share each, and none of the slots kept for
 * root and the admin group: one user cannot lock out the others, nor the
 * node's administration (a Slurm prolog runs as root). */
char *peer_refusal(const struct peer_table *t, const struct config *cfg, uid_t uid, bool admin)
{
	size_t max = (size_t)cfg->max_connections;
	size_t reserve = (size_t)cfg->reserved_connections;
	if (reserve > max / 2)
		reserve = max / 2;
	if (t->nconns >= max)
		return xstrdup("too many connections to alpsd; try again later");
	if (!admin && t->nconns >= max - reserve)
		return xasprintf("too many connections to alpsd (the last %zu of %zu are kept for "
				 "root and administrators); try again later", reserve, max);
	const struct peer_uid *u = peer_find(t, uid);
	if (uid != 0 && u && u->nconns >= (size_t)cfg->max_connections_per_uid)
		return xasprintf("uid %u already has %zu connections to alpsd open, its limit "
				 "(daemon.max_connections_per_uid); close some and try again",
				 (unsigned)uid, u->nconns);
	return NULL;
}

void peer_log_refusal(struct peer_table *t, const struct ucred *peer, const char *why)
{
	uint64_t now = now_monotonic_ns();
	if (t->refusal_logged_ns && now - t->refusal_logged_ns < 10ull * 1000000000ull) {
		t->refusals_unlogged++;
		return;
	}
	log_info("refused a connection of uid %u pid %d: %s (and %u more since the last such "
		 "line)", (unsigned)peer->uid, (int)peer->pid, why, t->refusals_unlogged);
	t->refusal_logged_ns = now;
	t->refusals_unlogged = 0;
}

struct peer_uid *peer_add(struct peer_table *t, uid_t uid)
{
	struct peer_uid *u = peer_find(t, uid);
	if (!u) {
		u = xzalloc(sizeof(*u));
		u->uid = uid;
		u->next = t->uids;
		t->uids = u;
	}
	u->nconns++;
	t->nconns++;
	return u;
}

void peer_remove(struct peer_table *t, struct peer_uid *u)
{
	t->nconns--;
	if (--u->nconns > 0)
		return;
	for (struct peer_uid **p = &t->uids; *p; p = &(*p)->next) {
		if (*p == u) {
			*p = u->next;
			break;
		}
	}
	free(u);
}

/* Root is never over: a stuck client of root's must not stall root's
 * others (the Slurm prologs); the per-connection cap holds it. */
bool peer_queued(struct peer_uid *u, size_t before, size_t after, size_t cap)
{
	u->queued = u->queued - before + after;
	if (!u->over && u->queued > cap && u->uid != 0) {
		u->over = true;
		log_debug("uid %u: %zu reply bytes unread over its connections; stop reading them",
			  (unsigned)u->uid, u->queued);
		return false;
	}
	/* Back only well below the cap, so that a client reading in small
	 * steps does not make every step walk the connections. */
	if (u->over && u->queued <= cap / 2) {
		u->over = false;
		return true;
	}
	return false;
}

bool peer_input(struct peer_uid *u, size_t before, size_t after, const struct config *cfg)
{
	u->input = u->input - before + after;
	return after > before && u->input > peer_input_cap(cfg);
}

size_t peer_input_cap(const struct config *cfg)
{
	int64_t cap = cfg->max_input_per_uid > cfg->max_frame_size ? cfg->max_input_per_uid
								   : cfg->max_frame_size;
	return (size_t)cap;
}

void peer_recheck(struct peer_table *t, size_t cap)
{
	for (struct peer_uid *u = t->uids; u; u = u->next)
		u->over = u->queued > cap && u->uid != 0;
}

bool peer_take_frame(struct peer_uid *u, uint64_t turn, unsigned per_turn)
{
	if (u->turn != turn) {
		u->turn = turn;
		u->frames = 0;
	}
	if (u->frames >= per_turn)
		return false;
	u->frames++;
	return true;
}
