/* fabric_peer.c: the peer table (parsing, resolving, the peers file)
 * and liveness (pings on a timer, peer states). */
#include <config.h>

#include "daemon/node/fabric_int.h"

/* ---- the peer table ---- */

static int peer_cmp(const void *a, const void *b)
{
	return strcmp(((const struct fabric_peer *)a)->name, ((const struct fabric_peer *)b)->name);
}

struct fabric_peer *peer_find(struct fabric *f, const char *name)
{
	struct fabric_peer key = { .name = (char *)name };
	return bsearch(&key, f->peers, f->npeers, sizeof(*f->peers), peer_cmp);
}

void peers_free(struct fabric_peer *peers, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(peers[i].name);
	free(peers);
}

const char *peer_state_name(enum peer_state s)
{
	static const char *const names[] = { "unresolved", "unknown", "up", "down" };
	return names[s];
}

/* Computed when asked, so the answer is never staler than the clock. */
enum peer_state peer_state(const struct fabric *f, const struct fabric_peer *p, uint64_t now)
{
	if (!p->resolved)
		return PEER_UNRESOLVED;
	if (p->last_seen_ms == 0)
		return now - p->added_ms < f->down_after_ms ? PEER_UNKNOWN : PEER_DOWN;
	return now - p->last_seen_ms <= f->down_after_ms ? PEER_UP : PEER_DOWN;
}

/* Resolve host to an IPv4 address (numeric first: no resolver involved). */
bool fabric_resolve_ipv4(const char *host, struct in_addr *out)
{
	if (inet_pton(AF_INET, host, out) == 1)
		return true;
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		return false;
	*out = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
	freeaddrinfo(res);
	return true;
}

/* "host" or "host:port" into p (name owned). */
static int peer_parse(const char *spec, uint16_t def_port, struct fabric_peer *p, alps_error **err)
{
	_cleanup_free_ char *host = xstrdup(spec);
	char *colon = strchr(host, ':');
	unsigned long port = def_port;
	if (colon) {
		char *end = NULL;
		errno = 0;
		port = strtoul(colon + 1, &end, 10);
		if (strchr(colon + 1, ':'))
			return alps_fail(err, ALPS_E_UNSUPPORTED, "peer '%s': only IPv4 peers are supported", spec);
		if (errno || !end || *end || colon[1] == '\0' || port == 0 || port > 65535)
			return alps_fail(err, ALPS_E_INVALID, "peer '%s': bad port", spec);
		*colon = '\0';
	}
	if (!fabric_msg_node_valid(host))
		return alps_fail(err, ALPS_E_INVALID,
				 "peer '%s': a node name is 1-%d letters, digits, '.', '-' or '_'",
				 spec, FABRIC_NODE_MAX);
	memset(p, 0, sizeof(*p));
	p->name = steal_pointer(&host);
	p->port = (uint16_t)port;
	p->fi_addr = FI_ADDR_NOTAVAIL;
	return 0;
}

static void peer_resolve(struct fabric_peer *p)
{
	p->sin.sin_family = AF_INET;
	p->sin.sin_port = htons(p->port);
	p->resolved = fabric_resolve_ipv4(p->name, &p->sin.sin_addr);
	if (!p->resolved)
		log_warn("fabric: peer %s does not resolve to an IPv4 address; it stays down", p->name);
}

/* Read a peers file: one "host[:port]" a line, '#' comments. */
static int peers_file_read(const char *path, struct strlist *out, alps_error **err)
{
	_cleanup_fclose_ FILE *fp = fopen(path, "re");
	if (!fp)
		return alps_fail_errno(err, "opening peers file %s", path);
	char line[1024];
	unsigned lineno = 0;
	while (fgets(line, sizeof(line), fp)) {
		lineno++;
		if (!strchr(line, '\n') && !feof(fp))
			return alps_fail(err, ALPS_E_INVALID, "%s:%u: line too long", path, lineno);
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *s = line + strspn(line, " \t\r\n");
		s[strcspn(s, " \t\r\n")] = '\0';
		if (*s == '\0')
			continue;
		if (out->n >= FABRIC_PEERS_MAX)
			return alps_fail(err, ALPS_E_LIMIT, "%s: more than %d peers", path, FABRIC_PEERS_MAX);
		out->v = xreallocarray(out->v, out->n + 1, sizeof(*out->v));
		out->v[out->n++] = xstrdup(s);
	}
	if (ferror(fp))
		return alps_fail_errno(err, "reading peers file %s", path);
	return 0;
}

static void strlist_release(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* The configured peer list, parsed, without this node and duplicates,
 * sorted by name.  Host names are resolved here (blocking; /etc/hosts on a
 * cluster). */
int peers_load(const struct fabric *f, const struct config *cfg, struct fabric_peer **out,
	       size_t *nout, alps_error **err)
{
	struct strlist file = { 0 };
	const struct strlist *specs = &cfg->peers;
	if (specs->n == 0 && cfg->peers_file && cfg->peers_file[0]) {
		if (peers_file_read(cfg->peers_file, &file, err) < 0) {
			strlist_release(&file);
			return -1;
		}
		specs = &file;
	}
	struct fabric_peer *peers = xcalloc(specs->n ? specs->n : 1, sizeof(*peers));
	size_t n = 0;
	int rc = 0;
	for (size_t i = 0; i < specs->n && rc == 0; i++) {
		rc = peer_parse(specs->v[i], f->port, &peers[n], err);
		if (rc == 0 && strcmp(peers[n].name, f->node) == 0)
			free(peers[n].name);            /* ourselves */
		else if (rc == 0)
			n++;
	}
	strlist_release(&file);
	if (rc < 0) {
		peers_free(peers, n);
		return -1;
	}
	qsort(peers, n, sizeof(*peers), peer_cmp);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (k > 0 && strcmp(peers[k - 1].name, peers[i].name) == 0) {
			log_warn("fabric: peer %s is listed twice; the first entry is used", peers[i].name);
			free(peers[i].name);
			continue;
		}
		peers[k++] = peers[i];
	}
	for (size_t i = 0; i < k; i++)
		peer_resolve(&peers[i]);
	*out = peers;
	*nout = k;
	return 0;
}

void peer_av_insert(struct fabric *f, struct fabric_peer *p)
{
	p->fi_addr = FI_ADDR_NOTAVAIL;
	if (!p->resolved || !f->ctl)
		return;
	int rc = fi_av_insert(f->ctl->av, &p->sin, 1, &p->fi_addr, 0, NULL);
	if (rc != 1) {
		p->fi_addr = FI_ADDR_NOTAVAIL;
		log_warn("fabric: cannot add peer %s to the address vector: %s", p->name,
			 fi_strerror(rc < 0 ? -rc : FI_EOTHER));
	}
}

/* Spread one ping per peer over an interval: a tick every interval/ticks,
 * with ticks as many as peers but no finer than FABRIC_TICK_MIN_MS. */
void tick_schedule(struct fabric *f)
{
	size_t ticks = (size_t)(f->interval_ms / FABRIC_TICK_MIN_MS);
	if (ticks > f->npeers)
		ticks = f->npeers;
	f->ticks = ticks ? ticks : 1;
	struct timeval tv = fabric_ms_to_tv(f->interval_ms / f->ticks);
	event_add(f->ev_tick, &tv);
}

/* ---- liveness ---- */

static void ping(struct fabric *f, struct fabric_peer *p)
{
	if (p->ping_outstanding || p->fi_addr == FI_ADDR_NOTAVAIL)
		return;
	if (p->skip > 0) {
		p->skip--;
		return;
	}
	struct fabric_msg m;
	msg_fill_self(f, &m, FABRIC_MSG_PING);
	m.seq = ++p->seq;
	m.ts_ns = now_monotonic_ns();
	if (tx_queue(f, p, &m) == 0) {
		p->ping_outstanding = true;
		f->st.pings_sent++;
	}
}

/* Log peers that went down since the last look. */
static void sweep(struct fabric *f, uint64_t now)
{
	for (size_t i = 0; i < f->npeers; i++) {
		struct fabric_peer *p = &f->peers[i];
		if (p->reported_up && peer_state(f, p, now) == PEER_DOWN) {
			p->reported_up = false;
			log_warn("fabric: peer %s is down (silent for %" PRIu64 " ms)", p->name,
				 now - p->last_seen_ms);
		}
	}
}

/* One tick: the next slice of peers gets its ping. */
void fabric_on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct fabric *f = arg;
	uint64_t now = now_monotonic_ms();
	size_t k = f->tick_no++ % f->ticks;
	size_t from = f->npeers * k / f->ticks, to = f->npeers * (k + 1) / f->ticks;
	if (f->state == FABRIC_UP)
		for (size_t i = from; i < to; i++)
			ping(f, &f->peers[i]);
	sweep(f, now);
	pins_expire(f, now);
	fabric_progress(f);
}
