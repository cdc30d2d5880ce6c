/* fabric.c: warm libfabric endpoints, the peer table, liveness and pins
 * (see fabric.h): opening, reloading and closing the module, and small
 * helpers; the rest is in fabric_ep.c, fabric_peer.c and fabric_map.c. */
#include <config.h>

#include "daemon/node/fabric_int.h"

/* ---- small helpers ---- */

void fabric_hex(const uint8_t *b, size_t n, char *out, size_t size)
{
	static const char digits[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < n && o + 2 < size; i++) {
		out[o++] = digits[b[i] >> 4];
		out[o++] = digits[b[i] & 15];
	}
	out[o] = '\0';
}

struct timeval fabric_ms_to_tv(uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
	return tv;
}

void fabric_iso_time(uint64_t wall_ms, char *buf, size_t size)
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	if (strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		buf[0] = '\0';
}

static uint64_t random_u64(void)
{
	uint64_t v = 0;
	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
		v = now_monotonic_ns() ^ ((uint64_t)getpid() << 32);
	return v ? v : 1;
}

/* ---- open, reload, close ---- */

/* fabric.address, or the address node_name resolves to. */
static int bind_address(const struct config *cfg, const char *node_name, char **out, alps_error **err)
{
	const char *host = cfg->fabric_address && cfg->fabric_address[0] ? cfg->fabric_address : node_name;
	struct in_addr a;
	if (!fabric_resolve_ipv4(host, &a))
		return alps_fail(err, ALPS_E_INVALID, "fabric address '%s' does not resolve to IPv4", host);
	char buf[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a, buf, sizeof(buf));
	*out = xstrdup(buf);
	return 0;
}

static void timers_new(struct fabric *f)
{
	f->ev_tick = event_new(f->base, -1, EV_PERSIST, fabric_on_tick, f);
	f->ev_kick = evtimer_new(f->base, fabric_on_kick, f);
	f->ev_poll = event_new(f->base, -1, EV_PERSIST, fabric_on_poll, f);
	f->ev_reopen = evtimer_new(f->base, fabric_on_reopen, f);
	struct timeval poll = fabric_ms_to_tv(FABRIC_POLL_MS);
	event_add(f->ev_poll, &poll);
}

int fabric_open(struct event_base *base, const struct config *cfg, const char *node_name,
		struct fabric **out, alps_error **err)
{
	if (!fabric_msg_node_valid(node_name))
		return alps_fail(err, ALPS_E_INVALID, "fabric: node name '%s' is not a valid host name",
				 node_name);
	struct fabric *f = xzalloc(sizeof(*f));
	f->base = base;
	f->node = xstrdup(node_name);
	f->provider_req = xstrdup(cfg->fabric_provider ? cfg->fabric_provider : "");
	f->port = (uint16_t)cfg->fabric_port;
	f->interval_ms = (uint64_t)cfg->liveness_interval_ms;
	f->down_after_ms = (uint64_t)cfg->peer_down_after_ms;
	f->incarnation = random_u64();
	f->start_ms = now_monotonic_ms();
	if (bind_address(cfg, node_name, &f->bind_addr, err) < 0 ||
	    peers_load(f, cfg, &f->peers, &f->npeers, err) < 0) {
		fabric_close(f);
		return alps_error_prefix(err, "fabric");
	}
	for (size_t i = 0; i < f->npeers; i++)
		f->peers[i].added_ms = f->start_ms;
	timers_new(f);
	tick_schedule(f);
	/* RxM's eager buffers default to 16 KiB each, some 75 MB per endpoint
	 * in pools; our messages are under 1 KiB.  Unless the admin chose,
	 * take 2 KiB (17 MB).  libfabric reads it at its first fi_getinfo(),
	 * which is this one, at start-up, before the daemon has threads. */
	setenv("FI_OFI_RXM_BUFFER_SIZE", "2048", 0);
	alps_error *oerr = NULL;
	if (eps_open(f, &oerr) < 0) {
		/* Not fatal: the NIC or its driver may come later. */
		log_error("fabric: %s; retrying", oerr->msg);
		f->last_error = xstrdup(oerr->msg);
		alps_error_free(oerr);
		reopen_schedule(f);
	}
	*out = f;
	return 0;
}

/* Keep the state of peers present in both lists (same name and address). */
static void peers_merge(struct fabric *f, struct fabric_peer *np, size_t nn)
{
	uint64_t now = now_monotonic_ms();
	for (size_t i = 0; i < nn; i++) {
		struct fabric_peer *old = peer_find(f, np[i].name);
		bool same = old && old->resolved == np[i].resolved && old->port == np[i].port &&
			    memcmp(&old->sin, &np[i].sin, sizeof(old->sin)) == 0;
		if (same) {
			char *name = np[i].name;
			np[i] = *old;
			np[i].name = name;
			old->fi_addr = FI_ADDR_NOTAVAIL;        /* moved */
		} else {
			np[i].added_ms = now;
			if (f->state == FABRIC_UP)
				peer_av_insert(f, &np[i]);
		}
	}
	for (size_t i = 0; i < f->npeers; i++)
		if (f->peers[i].fi_addr != FI_ADDR_NOTAVAIL && f->state == FABRIC_UP)
			fi_av_remove(f->ctl->av, &f->peers[i].fi_addr, 1, 0);
}

int fabric_reload_peers(struct fabric *f, const struct config *cfg, alps_error **err)
{
	struct fabric_peer *np = NULL;
	size_t nn = 0;
	if (peers_load(f, cfg, &np, &nn, err) < 0)
		return alps_error_prefix(err, "fabric: reloading peers");
	peers_merge(f, np, nn);
	peers_free(f->peers, f->npeers);
	f->peers = np;
	f->npeers = nn;
	/* Queued messages name their peer; tx_flush drops those now gone. */
	tick_schedule(f);
	log_info("fabric: %zu peers after reload", f->npeers);
	return 0;
}

void fabric_close(struct fabric *f)
{
	if (!f)
		return;
	eps_close(f);
	struct event *evs[] = { f->ev_tick, f->ev_kick, f->ev_poll, f->ev_reopen };
	for (size_t i = 0; i < ARRAY_SIZE(evs); i++)
		if (evs[i])
			event_free(evs[i]);
	peers_free(f->peers, f->npeers);
	free(f->pins);
	free(f->node);
	free(f->provider_req);
	free(f->bind_addr);
	free(f->last_error);
	free(f);
}
