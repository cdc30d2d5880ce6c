/* fabric.c: warm libfabric endpoints, the peer table, liveness and pins
 * (see fabric.h). */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/config.h"
#include "daemon/node/fabric.h"
#include "daemon/node/fabric_msg.h"

#define FABRIC_API_VERSION FI_VERSION(1, 9)
#define FABRIC_CONTROL_PROVIDER "tcp;ofi_rxm"
#define FABRIC_EPS_MAX 8                /* control + up to 7 NIC endpoints */
#define FABRIC_RX_BUFS 32               /* receives kept posted on the control endpoint */
#define FABRIC_TX_MAX 4096              /* messages queued or in flight */
#define FABRIC_TX_TRIES 6               /* fi_send attempts while RxM connects */
#define FABRIC_TX_TRIES_FAILING 2       /* ... to a peer whose last pings failed */
#define FABRIC_SKIP_MAX_SHIFT 3         /* a failing peer is pinged every 2, 4, 8 intervals */
#define FABRIC_CQ_BATCH 16
#define FABRIC_PROGRESS_BUDGET 256      /* completions handled per wake-up */
#define FABRIC_KICK_MIN_MS 1            /* progress retry while the provider is busy */
#define FABRIC_KICK_MAX_MS 64
#define FABRIC_POLL_MS 250              /* progress even without a wake-up (manual progress) */
#define FABRIC_TICK_MIN_MS 100          /* liveness timer granularity */
#define FABRIC_REOPEN_MIN_MS 1000
#define FABRIC_REOPEN_MAX_MS 60000
#define FABRIC_STABLE_MS 60000          /* up this long: the backoff starts over */
#define FABRIC_PIN_TTL_MS (3600 * 1000)
#define FABRIC_PINS_MAX 4096
#define FABRIC_PEERS_MAX 100000
#define FABRIC_LOG_EVERY_MS 10000       /* rate limit of logs about hostile input */
#define FABRIC_RAW_MAX (64 * 1024)      /* fabric_send_raw(), for tests */

/* Operation contexts.  libfabric hands back the pointer given to fi_send/
 * fi_recv; with FI_CONTEXT the provider may use the fi_context2 as scratch
 * space.  Both kinds start with this header, so the pointer is the object
 * and the tag tells receives from sends. */
enum ctx_kind { CTX_RX = 1, CTX_TX = 2 };

struct op_ctx {
	struct fi_context2 fctx;
	enum ctx_kind kind;
};

struct fabric_rx {
	struct op_ctx op;               /* first */
	uint8_t buf[FABRIC_MSG_MAX];
};

struct fabric_tx {
	struct op_ctx op;               /* first */
	struct fabric_tx *prev, *next;  /* in fabric.queued or fabric.posted */
	bool posted;
	bool is_ping;
	fi_addr_t dest;
	char peer[FABRIC_NODE_MAX + 1];
	unsigned tries;                 /* fi_send attempts so far */
	unsigned max_tries;
	uint64_t next_try_ms;           /* monotonic */
	size_t len;
	uint8_t buf[];                  /* len bytes */
};

struct tx_list {
	struct fabric_tx *head, *tail;
	size_t n;
};

struct fabric_ep {
	bool control;                   /* the daemons talk on this one */
	struct fi_info *info;           /* owned */
	char *info_text;                /* owned: fi_tostr(info) */
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_ep *ep;
	int wait_fd;                    /* -1: no FI_WAIT_FD, progress by timer only */
	struct event *ev_wait;          /* owned */
	uint8_t addr[FABRIC_ADDR_MAX];
	size_t addrlen;
	char addr_text[128];
	struct fabric_rx *rx;           /* owned: FABRIC_RX_BUFS, control only */
};

struct fabric_peer {
	char *name;                     /* owned: the host as listed */
	uint16_t port;
	bool resolved;
	struct sockaddr_in sin;
	fi_addr_t fi_addr;              /* FI_ADDR_NOTAVAIL until in the AV */
	uint64_t added_ms;              /* monotonic */
	uint64_t last_seen_ms;          /* monotonic, 0 = never */
	uint64_t last_seen_wall_ms;
	uint64_t rtt_us;
	uint64_t incarnation;
	uint64_t seq;
	uint64_t last_pong_ms;
	bool ping_outstanding;          /* one ping per peer at a time */
	unsigned fail_streak;           /* pings in a row that could not be sent */
	unsigned skip;                  /* intervals to skip before the next ping */
	bool reported_up;               /* for logging transitions */
	uint32_t send_errors;
	uint8_t naddrs;                 /* what the peer advertises */
	struct fabric_msg_addr addrs[FABRIC_MSG_ADDRS_MAX];
};

struct fabric_pin {
	char job[FABRIC_JOB_MAX + 1];
	char reference[FABRIC_REF_MAX + 1];
	char digest[DIGEST_STRLEN_MAX];
	char from[FABRIC_NODE_MAX + 1];
	uint64_t at_ms;
};

enum fabric_state {
	FABRIC_UP,
	FABRIC_FAILING,                 /* tear-down scheduled */
	FABRIC_RETRYING,                /* closed, re-open scheduled */
};

struct fabric {
	struct event_base *base;
	char *node;                     /* owned */
	char *provider_req;             /* owned: configured, "" = best */
	char *bind_addr;                /* owned: numeric IPv4 */
	uint16_t port;
	uint64_t interval_ms;
	uint64_t down_after_ms;
	uint64_t incarnation;
	uint64_t start_ms;

	enum fabric_state state;
	char *last_error;               /* owned */
	unsigned failures;
	uint64_t up_since_ms;
	uint64_t retry_at_ms;
	struct fabric_ep eps[FABRIC_EPS_MAX];
	size_t neps;
	struct fabric_ep *ctl;          /* eps[0] when open */

	struct event *ev_tick;          /* owned: liveness */
	struct event *ev_kick;          /* owned: progress soon */
	struct event *ev_poll;          /* owned: progress regularly */
	struct event *ev_reopen;        /* owned */
	unsigned kick_ms;               /* busy backoff */
	uint64_t kick_at_ms;
	size_t tick_no;
	size_t ticks;                   /* per interval */

	struct fabric_peer *peers;      /* owned, sorted by name */
	size_t npeers;
	struct tx_list queued;
	struct tx_list posted;
	struct fabric_pin *pins;        /* owned */
	size_t npins;

	struct fabric_stats st;
	uint64_t unknown_senders;
	uint64_t tx_dropped;
	uint64_t next_retry_ms;         /* earliest queued retry, 0 = none */
	uint64_t bad_logged_ms;
};

static void fabric_kick(struct fabric *f, unsigned ms);
static void fabric_fail(struct fabric *f, const char *fmt, ...) ALPS_PRINTF(2, 3);
static struct fabric_peer *peer_find(struct fabric *f, const char *name);

/* ---- small helpers ---- */

static void hex_encode(const uint8_t *b, size_t n, char *out, size_t size)
{
	static const char digits[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < n && o + 2 < size; i++) {
		out[o++] = digits[b[i] >> 4];
		out[o++] = digits[b[i] & 15];
	}
	out[o] = '\0';
}

static struct timeval ms_to_tv(uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
	return tv;
}

static void iso_time(uint64_t wall_ms, char *buf, size_t size)
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

/* ---- message queue ---- */

static void tx_list_add(struct tx_list *l, struct fabric_tx *tx)
{
	tx->next = NULL;
	tx->prev = l->tail;
	if (l->tail)
		l->tail->next = tx;
	else
		l->head = tx;
	l->tail = tx;
	l->n++;
}

static void tx_list_del(struct tx_list *l, struct fabric_tx *tx)
{
	if (tx->prev)
		tx->prev->next = tx->next;
	else
		l->head = tx->next;
	if (tx->next)
		tx->next->prev = tx->prev;
	else
		l->tail = tx->prev;
	tx->prev = tx->next = NULL;
	l->n--;
}

/* A peer whose pings keep failing is pinged less and less often (down to
 * one ping every 2^FABRIC_SKIP_MAX_SHIFT intervals): a dead node must not
 * cost a connection attempt per interval forever.  When it comes back it
 * pings us, and that is enough to bring it up. */
static void peer_ping_failed(struct fabric_peer *p)
{
	if (p->fail_streak < FABRIC_SKIP_MAX_SHIFT)
		p->fail_streak++;
	p->skip = (1u << p->fail_streak) - 1;
}

/* A message leaves our hands: sent (ok), failed, or dropped. */
static void tx_done(struct fabric *f, struct fabric_tx *tx, bool ok)
{
	tx_list_del(tx->posted ? &f->posted : &f->queued, tx);
	struct fabric_peer *p = peer_find(f, tx->peer);
	if (p && tx->is_ping) {
		p->ping_outstanding = false;
		if (!ok)
			peer_ping_failed(p);
	}
	if (!ok) {
		f->st.send_errors++;
		if (p)
			p->send_errors++;
	}
	free(tx);
}

static void tx_free_all(struct fabric *f)
{
	while (f->queued.head)
		tx_done(f, f->queued.head, true);
	while (f->posted.head)
		tx_done(f, f->posted.head, true);
}

/* Queue len bytes for peer p; sent by the next flush. */
static int tx_queue_bytes(struct fabric *f, struct fabric_peer *p, const void *buf, size_t len,
			  bool is_ping)
{
	if (f->state != FABRIC_UP || p->fi_addr == FI_ADDR_NOTAVAIL)
		return -1;
	if (f->queued.n + f->posted.n >= FABRIC_TX_MAX) {
		f->tx_dropped++;
		return -1;
	}
	struct fabric_tx *tx = xzalloc(sizeof(*tx) + len);
	memcpy(tx->buf, buf, len);
	tx->op.kind = CTX_TX;
	tx->len = len;
	tx->dest = p->fi_addr;
	tx->is_ping = is_ping;
	tx->max_tries = p->fail_streak ? FABRIC_TX_TRIES_FAILING : FABRIC_TX_TRIES;
	snprintf(tx->peer, sizeof(tx->peer), "%s", p->name);
	tx_list_add(&f->queued, tx);
	return 0;
}

/* Encode m for peer p and queue it. */
static int tx_queue(struct fabric *f, struct fabric_peer *p, const struct fabric_msg *m)
{
	uint8_t buf[FABRIC_MSG_MAX];
	const char *why = NULL;
	ssize_t n = fabric_msg_encode(m, buf, sizeof(buf), &why);
	if (n < 0) {
		log_warn("fabric: not sending a %s to %s: %s", fabric_msg_type_name(m->type), p->name, why);
		return -1;
	}
	return tx_queue_bytes(f, p, buf, (size_t)n, m->type == FABRIC_MSG_PING);
}

int fabric_send_raw(struct fabric *f, const char *node, const void *buf, size_t len)
{
	struct fabric_peer *p = peer_find(f, node);
	if (!p || len > FABRIC_RAW_MAX || tx_queue_bytes(f, p, buf, len, false) < 0)
		return -1;
	fabric_kick(f, 0);
	return 0;
}

/* One fi_send attempt.  RxM connects on demand and answers -FI_EAGAIN
 * meanwhile; each attempt to a closed port is a new connect(), so retries
 * back off (1, 2, 4... ms) and stop after max_tries: the next ping is the
 * next attempt.  Returns true when tx left the queue. */
static bool tx_try(struct fabric *f, struct fabric_tx *tx, uint64_t now)
{
	struct fabric_peer *p = peer_find(f, tx->peer);
	if (!p || p->fi_addr != tx->dest) {
		f->tx_dropped++;
		tx_done(f, tx, true);
		return true;
	}
	ssize_t rc = fi_send(f->ctl->ep, tx->buf, tx->len, NULL, tx->dest, &tx->op.fctx);
	if (rc == -FI_EAGAIN) {
		if (++tx->tries >= tx->max_tries) {
			f->tx_dropped++;
			tx_done(f, tx, false);
			return true;
		}
		tx->next_try_ms = now + (1u << (tx->tries - 1));
		return false;
	}
	if (rc < 0) {
		log_debug("fabric: fi_send to %s: %s", tx->peer, fi_strerror((int)-rc));
		tx_done(f, tx, false);
		return true;
	}
	tx_list_del(&f->queued, tx);
	tx->posted = true;
	tx_list_add(&f->posted, tx);
	return true;
}

/* Post what is queued and due; note when the next retry is due. */
static void tx_flush(struct fabric *f)
{
	uint64_t now = now_monotonic_ms();
	struct fabric_tx *next;
	f->next_retry_ms = 0;
	for (struct fabric_tx *tx = f->queued.head; tx && f->state == FABRIC_UP; tx = next) {
		next = tx->next;
		if (tx->next_try_ms > now || !tx_try(f, tx, now)) {
			if (!f->next_retry_ms || tx->next_try_ms < f->next_retry_ms)
				f->next_retry_ms = tx->next_try_ms;
		}
	}
}

/* ---- the peer table ---- */

static int peer_cmp(const void *a, const void *b)
{
	return strcmp(((const struct fabric_peer *)a)->name, ((const struct fabric_peer *)b)->name);
}

static struct fabric_peer *peer_find(struct fabric *f, const char *name)
{
	struct fabric_peer key = { .name = (char *)name };
	return bsearch(&key, f->peers, f->npeers, sizeof(*f->peers), peer_cmp);
}

static void peers_free(struct fabric_peer *peers, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(peers[i].name);
	free(peers);
}

enum peer_state { PEER_UNRESOLVED, PEER_UNKNOWN, PEER_UP, PEER_DOWN };

static const char *peer_state_name(enum peer_state s)
{
	static const char *const names[] = { "unresolved", "unknown", "up", "down" };
	return names[s];
}

/* Computed when asked, so the answer is never staler than the clock. */
static enum peer_state peer_state(const struct fabric *f, const struct fabric_peer *p, uint64_t now)
{
	if (!p->resolved)
		return PEER_UNRESOLVED;
	if (p->last_seen_ms == 0)
		return now - p->added_ms < f->down_after_ms ? PEER_UNKNOWN : PEER_DOWN;
	return now - p->last_seen_ms <= f->down_after_ms ? PEER_UP : PEER_DOWN;
}

/* Resolve host to an IPv4 address (numeric first: no resolver involved). */
static bool resolve_ipv4(const char *host, struct in_addr *out)
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
	p->resolved = resolve_ipv4(p->name, &p->sin.sin_addr);
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
static int peers_load(const struct fabric *f, const struct config *cfg, struct fabric_peer **out,
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

static void peer_av_insert(struct fabric *f, struct fabric_peer *p)
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
static void tick_schedule(struct fabric *f)
{
	size_t ticks = (size_t)(f->interval_ms / FABRIC_TICK_MIN_MS);
	if (ticks > f->npeers)
		ticks = f->npeers;
	f->ticks = ticks ? ticks : 1;
	struct timeval tv = ms_to_tv(f->interval_ms / f->ticks);
	event_add(f->ev_tick, &tv);
}

/* ---- endpoints ---- */

static struct fi_info *hints_new(const char *provider, bool sockaddr)
{
	struct fi_info *h = fi_allocinfo();
	if (!h)
		log_fatal("fabric: out of memory");
	h->caps = FI_MSG;
	h->mode = FI_CONTEXT | FI_CONTEXT2;
	h->ep_attr->type = FI_EP_RDM;
	/* Only small sends and receives are used: no FI_MR_LOCAL, so no
	 * registration; the other modes concern RMA and cost nothing. */
	h->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
	h->fabric_attr->prov_name = xstrdup(provider);
	if (sockaddr)
		h->addr_format = FI_SOCKADDR_IN;
	return h;
}

/* Infos for provider bound to our control address, or NULL. */
static struct fi_info *getinfo_bound(const struct fabric *f, const char *provider, int *rc)
{
	struct fi_info *hints = hints_new(provider, true), *info = NULL;
	char service[8];
	snprintf(service, sizeof(service), "%u", f->port);
	*rc = fi_getinfo(FABRIC_API_VERSION, f->bind_addr, service, FI_SOURCE, hints, &info);
	fi_freeinfo(hints);
	return *rc == 0 ? info : NULL;
}

/* Infos for every domain of provider, addressed as it likes. */
static struct fi_info *getinfo_any(const char *provider, int *rc)
{
	struct fi_info *hints = hints_new(provider, false), *info = NULL;
	*rc = fi_getinfo(FABRIC_API_VERSION, NULL, NULL, 0, hints, &info);
	fi_freeinfo(hints);
	return *rc == 0 ? info : NULL;
}

/* Choose the provider and the infos to open: *ctl for the control
 * endpoint, *nic for the other NIC endpoints (NULL when the control
 * endpoint is the provider's own, as with tcp). */
static int select_infos(const struct fabric *f, struct fi_info **ctl, struct fi_info **nic,
			alps_error **err)
{
	static const char *const best[] = { "cxi", "verbs;ofi_rxm", FABRIC_CONTROL_PROVIDER };
	const char *one[] = { f->provider_req };
	bool configured = f->provider_req[0] != '\0';
	const char *const *cands = configured ? one : best;
	size_t ncands = configured ? 1 : ARRAY_SIZE(best);
	int rc = -FI_ENODATA;
	for (size_t i = 0; i < ncands; i++) {
		*ctl = getinfo_bound(f, cands[i], &rc);
		if (*ctl) {
			*nic = NULL;
			return 0;
		}
		*nic = getinfo_any(cands[i], &rc);
		if (!*nic)
			continue;
		*ctl = getinfo_bound(f, FABRIC_CONTROL_PROVIDER, &rc);
		if (*ctl)
			return 0;
		fi_freeinfo(*nic);
		return alps_fail(err, ALPS_E_UNAVAILABLE, "%s for the control endpoint on %s:%u: %s",
				 FABRIC_CONTROL_PROVIDER, f->bind_addr, f->port, fi_strerror(-rc));
	}
	return alps_fail(err, ALPS_E_UNAVAILABLE, "no libfabric provider (%s%s) on %s:%u: %s",
			 configured ? "" : "tried cxi, verbs;ofi_rxm, ",
			 configured ? f->provider_req : FABRIC_CONTROL_PROVIDER, f->bind_addr, f->port,
			 fi_strerror(-rc));
}

static int fi_check(int rc, const char *what, alps_error **err)
{
	if (rc == 0)
		return 0;
	return alps_fail(err, ALPS_E_UNAVAILABLE, "%s: %s", what, fi_strerror(rc < 0 ? -rc : rc));
}

/* A CQ that wakes the loop through a file descriptor when the provider can
 * give one; otherwise a plain CQ, progressed by the poll timer. */
static int ep_open_cq(struct fabric_ep *e, alps_error **err)
{
	struct fi_cq_attr attr = { .format = FI_CQ_FORMAT_MSG, .wait_obj = FI_WAIT_FD, .size = 1024 };
	e->wait_fd = -1;
	if (fi_cq_open(e->domain, &attr, &e->cq, NULL) == 0) {
		if (fi_control(&e->cq->fid, FI_GETWAIT, &e->wait_fd) != 0)
			e->wait_fd = -1;
		return 0;
	}
	attr.wait_obj = FI_WAIT_NONE;
	return fi_check(fi_cq_open(e->domain, &attr, &e->cq, NULL), "fi_cq_open", err);
}

static int ep_open_objects(struct fabric_ep *e, size_t av_count, alps_error **err)
{
	struct fi_av_attr av_attr = { .type = FI_AV_UNSPEC, .count = av_count };
	if (fi_check(fi_fabric(e->info->fabric_attr, &e->fabric, NULL), "fi_fabric", err) < 0 ||
	    fi_check(fi_domain(e->fabric, e->info, &e->domain, NULL), "fi_domain", err) < 0 ||
	    ep_open_cq(e, err) < 0 ||
	    fi_check(fi_av_open(e->domain, &av_attr, &e->av, NULL), "fi_av_open", err) < 0 ||
	    fi_check(fi_endpoint(e->domain, e->info, &e->ep, NULL), "fi_endpoint", err) < 0 ||
	    fi_check(fi_ep_bind(e->ep, &e->cq->fid, FI_TRANSMIT | FI_RECV), "binding the CQ", err) < 0 ||
	    fi_check(fi_ep_bind(e->ep, &e->av->fid, 0), "binding the AV", err) < 0 ||
	    fi_check(fi_enable(e->ep), "fi_enable", err) < 0)
		return -1;
	e->addrlen = sizeof(e->addr);
	if (fi_check(fi_getname(&e->ep->fid, e->addr, &e->addrlen), "fi_getname", err) < 0)
		return -1;
	size_t tl = sizeof(e->addr_text);
	fi_av_straddr(e->av, e->addr, e->addr_text, &tl);
	return 0;
}

static void ep_close(struct fabric_ep *e)
{
	if (e->ev_wait)
		event_free(e->ev_wait);
	/* The endpoint first: nothing may complete into buffers freed below. */
	struct fid *fids[] = { e->ep ? &e->ep->fid : NULL, e->av ? &e->av->fid : NULL,
			       e->cq ? &e->cq->fid : NULL, e->domain ? &e->domain->fid : NULL,
			       e->fabric ? &e->fabric->fid : NULL };
	for (size_t i = 0; i < ARRAY_SIZE(fids); i++)
		if (fids[i])
			fi_close(fids[i]);
	free(e->rx);
	free(e->info_text);
	fi_freeinfo(e->info);
	memset(e, 0, sizeof(*e));
	e->wait_fd = -1;
}

/* Hand a receive buffer to the provider.  Its receive queue is far deeper
 * than FABRIC_RX_BUFS, so even -FI_EAGAIN means the endpoint is unwell. */
static int rx_post(struct fabric *f, struct fabric_rx *rx)
{
	ssize_t rc = fi_recv(f->ctl->ep, rx->buf, sizeof(rx->buf), NULL, FI_ADDR_UNSPEC, &rx->op.fctx);
	return rc < 0 ? (int)rc : 0;
}

static void on_wait(evutil_socket_t fd, short what, void *arg);

static int ep_open(struct fabric *f, struct fabric_ep *e, const struct fi_info *info, bool control,
		   alps_error **err)
{
	e->control = control;
	e->wait_fd = -1;
	e->info = fi_dupinfo(info);
	if (!e->info)
		log_fatal("fabric: out of memory");
	e->info_text = xstrdup(fi_tostr(info, FI_TYPE_INFO));
	if (ep_open_objects(e, f->npeers + 64, err) < 0) {
		alps_error_prefix(err, "%s on %s", info->fabric_attr->prov_name, info->domain_attr->name);
		ep_close(e);    /* not counted in f->neps yet */
		return -1;
	}
	if (!control)
		return 0;
	if (e->wait_fd >= 0) {
		e->ev_wait = event_new(f->base, e->wait_fd, EV_READ | EV_PERSIST, on_wait, f);
		event_add(e->ev_wait, NULL);
	}
	return 0;
}

static void eps_close(struct fabric *f)
{
	/* Closing the endpoint cancels what is posted: the buffers go after. */
	for (size_t i = 0; i < f->neps; i++)
		ep_close(&f->eps[i]);
	tx_free_all(f);
	f->neps = 0;
	f->ctl = NULL;
	for (size_t i = 0; i < f->npeers; i++)
		f->peers[i].fi_addr = FI_ADDR_NOTAVAIL;
}

static bool domain_seen(const struct fabric *f, const char *prov, const char *domain)
{
	for (size_t i = 0; i < f->neps; i++)
		if (strcmp(f->eps[i].info->fabric_attr->prov_name, prov) == 0 &&
		    strcmp(f->eps[i].info->domain_attr->name, domain) == 0)
			return true;
	return false;
}

/* The control endpoint, then one endpoint per NIC domain of the provider. */
static int eps_open_all(struct fabric *f, const struct fi_info *ctl, const struct fi_info *nic,
			alps_error **err)
{
	if (ep_open(f, &f->eps[0], ctl, true, err) < 0)
		return -1;
	f->neps = 1;
	f->ctl = &f->eps[0];
	for (const struct fi_info *i = nic; i && f->neps < FABRIC_EPS_MAX; i = i->next) {
		if (domain_seen(f, i->fabric_attr->prov_name, i->domain_attr->name))
			continue;
		if (ep_open(f, &f->eps[f->neps], i, false, err) < 0)
			return -1;
		f->neps++;
	}
	f->ctl->rx = xcalloc(FABRIC_RX_BUFS, sizeof(*f->ctl->rx));
	for (size_t i = 0; i < FABRIC_RX_BUFS; i++) {
		f->ctl->rx[i].op.kind = CTX_RX;
		int rc = rx_post(f, &f->ctl->rx[i]);
		if (rc < 0)
			return alps_fail(err, ALPS_E_UNAVAILABLE, "fi_recv: %s", fi_strerror(-rc));
	}
	return 0;
}

static int eps_open(struct fabric *f, alps_error **err)
{
	struct fi_info *ctl = NULL, *nic = NULL;
	if (select_infos(f, &ctl, &nic, err) < 0)
		return -1;
	int rc = eps_open_all(f, ctl, nic, err);
	fi_freeinfo(ctl);
	fi_freeinfo(nic);
	if (rc < 0) {
		eps_close(f);
		return -1;
	}
	for (size_t i = 0; i < f->npeers; i++)
		peer_av_insert(f, &f->peers[i]);
	f->state = FABRIC_UP;
	f->up_since_ms = now_monotonic_ms();
	free(f->last_error);
	f->last_error = NULL;
	log_info("fabric: %zu endpoint(s) open, control %s (%s), %zu peers", f->neps,
		 f->ctl->addr_text, f->ctl->info->fabric_attr->prov_name, f->npeers);
	return 0;
}

/* Something went wrong with the endpoints: close them (not from inside a
 * completion handler: from the reopen timer, at once) and try again with
 * exponential backoff. */
static void fabric_fail(struct fabric *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	log_error("fabric: %s; re-opening the endpoints", msg);
	free(f->last_error);
	f->last_error = msg;
	if (f->state != FABRIC_UP)
		return;
	f->state = FABRIC_FAILING;
	if (f->ctl && f->ctl->ev_wait)
		event_del(f->ctl->ev_wait);
	struct timeval zero = { 0, 0 };
	event_add(f->ev_reopen, &zero);
}

static void reopen_schedule(struct fabric *f)
{
	uint64_t now = now_monotonic_ms();
	if (f->up_since_ms && now - f->up_since_ms > FABRIC_STABLE_MS)
		f->failures = 0;
	f->up_since_ms = 0;
	unsigned shift = f->failures < 6 ? f->failures : 6;
	uint64_t delay = (uint64_t)FABRIC_REOPEN_MIN_MS << shift;
	if (delay > FABRIC_REOPEN_MAX_MS)
		delay = FABRIC_REOPEN_MAX_MS;
	f->failures++;
	f->state = FABRIC_RETRYING;
	f->retry_at_ms = now + delay;
	struct timeval tv = ms_to_tv(delay);
	event_add(f->ev_reopen, &tv);
}

static void on_reopen(evutil_socket_t fd, short what, void *arg)
{
	struct fabric *f = arg;
	if (f->state == FABRIC_FAILING) {
		eps_close(f);
		reopen_schedule(f);
		return;
	}
	alps_error *err = NULL;
	if (eps_open(f, &err) < 0) {
		log_warn("fabric: re-opening failed: %s", err->msg);
		free(f->last_error);
		f->last_error = xstrdup(err->msg);
		alps_error_free(err);
		reopen_schedule(f);
		return;
	}
	f->st.endpoint_reopens++;
	fabric_kick(f, 0);
}

/* ---- receiving ---- */

/* Log hostile or broken input at most every FABRIC_LOG_EVERY_MS. */
static void log_rejected(struct fabric *f, const char *why)
{
	uint64_t now = now_monotonic_ms();
	if (f->bad_logged_ms && now - f->bad_logged_ms < FABRIC_LOG_EVERY_MS)
		return;
	f->bad_logged_ms = now;
	log_warn("fabric: rejected a message: %s (%" PRIu64 " rejected so far)", why,
		 f->st.messages_rejected);
}

/* A message from p: it is alive, and says where its endpoints are. */
static void peer_heard(struct fabric *f, struct fabric_peer *p, const struct fabric_msg *m)
{
	if (p->incarnation && m->incarnation != p->incarnation)
		log_notice("fabric: peer %s restarted", p->name);
	p->incarnation = m->incarnation;
	p->fail_streak = 0;
	p->skip = 0;
	p->last_seen_ms = now_monotonic_ms();
	p->last_seen_wall_ms = now_realtime_ms();
	p->naddrs = m->naddrs;
	memcpy(p->addrs, m->addrs, sizeof(p->addrs));
	if (!p->reported_up) {
		p->reported_up = true;
		log_info("fabric: peer %s is up", p->name);
	}
}

static void msg_fill_self(struct fabric *f, struct fabric_msg *m, int type)
{
	memset(m, 0, sizeof(*m));
	m->type = (uint8_t)type;
	snprintf(m->node, sizeof(m->node), "%s", f->node);
	m->incarnation = f->incarnation;
	for (size_t i = 0; i < f->neps && m->naddrs < FABRIC_MSG_ADDRS_MAX; i++) {
		const struct fabric_ep *e = &f->eps[i];
		/* The control endpoint is advertised only when it is the
		 * provider's own (tcp); a separate one is not a NIC. */
		if (e->control && f->neps > 1)
			continue;
		if (e->addrlen == 0 || e->addrlen > FABRIC_ADDR_MAX)
			continue;
		struct fabric_msg_addr *a = &m->addrs[m->naddrs++];
		a->format = e->info->addr_format;
		a->len = (uint8_t)e->addrlen;
		memcpy(a->bytes, e->addr, e->addrlen);
	}
}

static void handle_ping(struct fabric *f, struct fabric_peer *p, const struct fabric_msg *m)
{
	peer_heard(f, p, m);
	/* A pong per ping, but no faster than four a peer's interval: a
	 * flood of pings cannot turn us into an amplifier. */
	uint64_t now = now_monotonic_ms();
	if (p->last_pong_ms && now - p->last_pong_ms < f->interval_ms / 4)
		return;
	p->last_pong_ms = now;
	struct fabric_msg pong;
	msg_fill_self(f, &pong, FABRIC_MSG_PONG);
	pong.seq = m->seq;
	pong.ts_ns = m->ts_ns;
	tx_queue(f, p, &pong);
}

static void handle_pong(struct fabric *f, struct fabric_peer *p, const struct fabric_msg *m)
{
	peer_heard(f, p, m);
	f->st.pongs_received++;
	uint64_t now_ns = now_monotonic_ns();
	/* The timestamp is ours, echoed: trust it only if it is plausible. */
	if (m->ts_ns <= now_ns && now_ns - m->ts_ns < 3600ull * 1000000000ull)
		p->rtt_us = (now_ns - m->ts_ns) / 1000;
}

static void pin_store(struct fabric *f, const char *job, const char *reference, const char *digest,
		      const char *from);

static void handle_pin(struct fabric *f, struct fabric_peer *p, const struct fabric_msg *m)
{
	p->last_seen_ms = now_monotonic_ms();
	p->last_seen_wall_ms = now_realtime_ms();
	pin_store(f, m->job, m->reference, m->digest, p->name);
	log_info("fabric: job %s pins %s to %s (from %s)", m->job, m->reference, m->digest, p->name);
}

static void handle_rx(struct fabric *f, const uint8_t *buf, size_t len)
{
	struct fabric_msg m;
	const char *why = NULL;
	f->st.messages_received++;
	if (fabric_msg_decode(buf, len, &m, &why) < 0) {
		f->st.messages_rejected++;
		log_rejected(f, why);
		return;
	}
	struct fabric_peer *p = peer_find(f, m.node);
	if (!p) {
		/* Not in our list: a node outside the configured cluster, or
		 * a name that differs from the one we resolve. */
		f->unknown_senders++;
		f->st.messages_rejected++;
		log_rejected(f, "sender is not a known peer");
		return;
	}
	switch (m.type) {
	case FABRIC_MSG_PING: handle_ping(f, p, &m); break;
	case FABRIC_MSG_PONG: handle_pong(f, p, &m); break;
	case FABRIC_MSG_PIN: handle_pin(f, p, &m); break;
	}
}

/* One completion (or error, ok false).  A receive buffer goes back to the
 * provider whatever it held. */
static void complete(struct fabric *f, void *ctx, size_t len, bool ok)
{
	struct op_ctx *op = ctx;
	if (!op)
		return;
	if (op->kind == CTX_TX) {
		tx_done(f, (struct fabric_tx *)op, ok);
		return;
	}
	struct fabric_rx *rx = (struct fabric_rx *)op;
	if (ok)
		handle_rx(f, rx->buf, len < sizeof(rx->buf) ? len : sizeof(rx->buf));
	else
		f->st.messages_rejected++;      /* truncated: larger than any valid message */
	int rc = f->state == FABRIC_UP ? rx_post(f, rx) : 0;
	if (rc < 0)
		fabric_fail(f, "fi_recv: %s", fi_strerror(-rc));
}

static void cq_error(struct fabric *f)
{
	struct fi_cq_err_entry e = { 0 };
	ssize_t rc = fi_cq_readerr(f->ctl->cq, &e, 0);
	if (rc < 0) {
		if (rc != -FI_EAGAIN)
			fabric_fail(f, "fi_cq_readerr: %s", fi_strerror((int)-rc));
		return;
	}
	log_debug("fabric: completion error: %s", fi_strerror(e.err));
	complete(f, e.op_context, e.len, false);
}

/* Read up to budget completions; returns how many were handled. */
static size_t cq_drain(struct fabric *f, size_t budget)
{
	size_t done = 0;
	while (done < budget && f->state == FABRIC_UP) {
		struct fi_cq_msg_entry ent[FABRIC_CQ_BATCH];
		ssize_t n = fi_cq_read(f->ctl->cq, ent, FABRIC_CQ_BATCH);
		if (n == -FI_EAGAIN)
			break;
		if (n == -FI_EAVAIL) {
			cq_error(f);
			done++;
			continue;
		}
		if (n < 0) {
			fabric_fail(f, "fi_cq_read: %s", fi_strerror((int)-n));
			break;
		}
		for (ssize_t i = 0; i < n && f->state == FABRIC_UP; i++)
			complete(f, ent[i].op_context, ent[i].len, true);
		done += (size_t)n;
	}
	return done;
}

/* Come back when the earliest queued retry is due. */
static void retry_schedule(struct fabric *f)
{
	if (!f->next_retry_ms)
		return;
	uint64_t now = now_monotonic_ms();
	fabric_kick(f, f->next_retry_ms > now ? (unsigned)(f->next_retry_ms - now) : 0);
}

/* Drive the control endpoint: read completions, post what is queued, and
 * leave the wait fd armed.  The libfabric rule: only after fi_trywait()
 * says FI_SUCCESS may we sleep on the fd; -FI_EAGAIN means more work is
 * pending, so we come back from a short timer instead of spinning here. */
static void progress(struct fabric *f)
{
	if (f->state != FABRIC_UP)
		return;
	size_t done = 0;
	for (int round = 0; round < 4 && f->state == FABRIC_UP; round++) {
		done += cq_drain(f, FABRIC_PROGRESS_BUDGET - done);
		tx_flush(f);
		if (f->state != FABRIC_UP || done >= FABRIC_PROGRESS_BUDGET)
			break;
		struct fid *fids[] = { &f->ctl->cq->fid };
		int rc = f->ctl->wait_fd >= 0 ? fi_trywait(f->ctl->fabric, fids, 1) : 0;
		if (rc == FI_SUCCESS) {
			f->kick_ms = 0;
			retry_schedule(f);
			return;
		}
		if (rc != -FI_EAGAIN) {
			fabric_fail(f, "fi_trywait: %s", fi_strerror(-rc));
			return;
		}
	}
	if (f->state != FABRIC_UP)
		return;
	retry_schedule(f);
	/* Busy: back off from 1 ms while nothing completes. */
	unsigned ms = done ? FABRIC_KICK_MIN_MS : (f->kick_ms ? f->kick_ms * 2 : FABRIC_KICK_MIN_MS);
	f->kick_ms = ms > FABRIC_KICK_MAX_MS ? FABRIC_KICK_MAX_MS : ms;
	fabric_kick(f, f->kick_ms);
}

static void on_wait(evutil_socket_t fd, short what, void *arg)
{
	progress(arg);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	progress(arg);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	progress(arg);
}

/* Progress again in ms, unless it is already due sooner. */
static void fabric_kick(struct fabric *f, unsigned ms)
{
	uint64_t at = now_monotonic_ms() + ms;
	if (evtimer_pending(f->ev_kick, NULL)) {
		if (f->kick_at_ms <= at)
			return;
		evtimer_del(f->ev_kick);
	}
	f->kick_at_ms = at;
	struct timeval tv = ms_to_tv(ms);
	evtimer_add(f->ev_kick, &tv);
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

static void pins_expire(struct fabric *f, uint64_t now);

/* One tick: the next slice of peers gets its ping. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
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
	progress(f);
}

/* ---- pins ---- */

static void pins_expire(struct fabric *f, uint64_t now)
{
	size_t k = 0;
	for (size_t i = 0; i < f->npins; i++)
		if (now - f->pins[i].at_ms < FABRIC_PIN_TTL_MS)
			f->pins[k++] = f->pins[i];
	f->npins = k;
}

static struct fabric_pin *pin_find(struct fabric *f, const char *job, const char *reference)
{
	for (size_t i = 0; i < f->npins; i++)
		if (strcmp(f->pins[i].job, job) == 0 && strcmp(f->pins[i].reference, reference) == 0)
			return &f->pins[i];
	return NULL;
}

/* Record a pin; a full table makes room by dropping its oldest entry. */
static void pin_store(struct fabric *f, const char *job, const char *reference, const char *digest,
		      const char *from)
{
	uint64_t now = now_monotonic_ms();
	pins_expire(f, now);
	struct fabric_pin *p = pin_find(f, job, reference);
	if (!p && f->npins == FABRIC_PINS_MAX) {
		memmove(&f->pins[0], &f->pins[1], (f->npins - 1) * sizeof(*f->pins));
		p = &f->pins[f->npins - 1];
	} else if (!p) {
		f->pins = xreallocarray(f->pins, f->npins + 1, sizeof(*f->pins));
		p = &f->pins[f->npins++];
	}
	snprintf(p->job, sizeof(p->job), "%s", job);
	snprintf(p->reference, sizeof(p->reference), "%s", reference);
	snprintf(p->digest, sizeof(p->digest), "%s", digest);
	snprintf(p->from, sizeof(p->from), "%s", from);
	p->at_ms = now;
}

int fabric_publish_pin(struct fabric *f, const char *job, const char *reference,
		       const char *digest, const char *const *nodes, size_t n, alps_error **err)
{
	struct fabric_msg m;
	msg_fill_self(f, &m, FABRIC_MSG_PIN);
	m.naddrs = 0;
	if (!fabric_msg_job_valid(job) || !fabric_msg_ref_valid(reference) || !digest_valid(digest))
		return alps_fail(err, ALPS_E_INVALID, "pin: bad job id, reference or digest");
	snprintf(m.job, sizeof(m.job), "%s", job);
	snprintf(m.reference, sizeof(m.reference), "%s", reference);
	snprintf(m.digest, sizeof(m.digest), "%s", digest);
	pin_store(f, job, reference, digest, f->node);
	int sent = 0;
	for (size_t i = 0; i < n; i++) {
		struct fabric_peer *p = peer_find(f, nodes[i]);
		if (!p) {
			if (strcmp(nodes[i], f->node) != 0)
				log_warn("fabric: pin for job %s: %s is not a known peer", job, nodes[i]);
			continue;
		}
		if (tx_queue(f, p, &m) == 0)
			sent++;
	}
	fabric_kick(f, 0);
	return sent;
}

char *fabric_lookup_pin(struct fabric *f, const char *job, const char *reference)
{
	pins_expire(f, now_monotonic_ms());
	struct fabric_pin *p = pin_find(f, job, reference);
	return p ? xstrdup(p->digest) : NULL;
}

/* ---- JSON ---- */

/* An address as text: via an open endpoint of the same format (its AV
 * knows how to print it), else NULL. */
static json_t *addr_json(struct fabric *f, uint32_t format, const uint8_t *b, size_t len)
{
	char hex[2 * FABRIC_ADDR_MAX + 1];
	hex_encode(b, len, hex, sizeof(hex));
	json_t *o = json_pack("{s:s}", "hex", hex);
	for (size_t i = 0; i < f->neps; i++) {
		struct fabric_ep *e = &f->eps[i];
		if (e->info->addr_format != format)
			continue;
		char text[128];
		size_t tl = sizeof(text);
		fi_av_straddr(e->av, b, text, &tl);
		json_object_set_new(o, "address", json_string(text));
		json_object_set_new(o, "provider", json_string(e->info->fabric_attr->prov_name));
		break;
	}
	return o;
}

static json_t *ep_json(const struct fabric_ep *e, unsigned flags)
{
	char hex[2 * FABRIC_ADDR_MAX + 1];
	hex_encode(e->addr, e->addrlen, hex, sizeof(hex));
	const struct fi_info *i = e->info;
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:s, s:s}",
			      "provider", i->fabric_attr->prov_name,
			      "fabric", i->fabric_attr->name ? i->fabric_attr->name : "",
			      "domain", i->domain_attr->name ? i->domain_attr->name : "",
			      "address", e->addr_text, "hex", hex, "control", e->control,
			      "progress", i->domain_attr->data_progress == FI_PROGRESS_AUTO ? "auto" : "manual",
			      "wait", e->wait_fd >= 0 ? "fd" : "poll");
	json_object_set_new(o, "state", json_string("open"));
	if (flags & FABRIC_JSON_INFO)
		json_object_set_new(o, "fi_info", json_string(e->info_text));
	return o;
}

static json_t *peer_json(struct fabric *f, const struct fabric_peer *p, uint64_t now)
{
	char ip[INET_ADDRSTRLEN] = "", addr[INET_ADDRSTRLEN + 8] = "";
	if (p->resolved && inet_ntop(AF_INET, &p->sin.sin_addr, ip, sizeof(ip)))
		snprintf(addr, sizeof(addr), "%s:%u", ip, p->port);
	json_t *o = json_pack("{s:s, s:s, s:s}", "name", p->name, "address", addr,
			      "state", peer_state_name(peer_state(f, p, now)));
	if (p->last_seen_ms) {
		char iso[32];
		iso_time(p->last_seen_wall_ms, iso, sizeof(iso));
		json_object_set_new(o, "last_seen", json_string(iso));
		json_object_set_new(o, "last_seen_ms_ago", json_integer((json_int_t)(now - p->last_seen_ms)));
	} else {
		json_object_set_new(o, "last_seen", json_null());
	}
	json_object_set_new(o, "rtt_us", p->rtt_us ? json_integer((json_int_t)p->rtt_us) : json_null());
	if (p->send_errors)
		json_object_set_new(o, "send_errors", json_integer(p->send_errors));
	return o;
}

static const char *fabric_state_name(const struct fabric *f)
{
	switch (f->state) {
	case FABRIC_UP: return "open";
	case FABRIC_FAILING: return "failing";
	default: return "retrying";
	}
}

void fabric_get_stats(struct fabric *f, struct fabric_stats *st)
{
	uint64_t now = now_monotonic_ms();
	*st = f->st;
	st->peers = f->npeers;
	st->peers_up = st->peers_down = 0;
	for (size_t i = 0; i < f->npeers; i++) {
		enum peer_state s = peer_state(f, &f->peers[i], now);
		if (s == PEER_UP)
			st->peers_up++;
		else if (s != PEER_UNKNOWN)
			st->peers_down++;
	}
}

json_t *fabric_to_json(struct fabric *f, unsigned flags)
{
	uint64_t now = now_monotonic_ms();
	struct fabric_stats st;
	fabric_get_stats(f, &st);
	json_t *eps = json_array();
	for (size_t i = 0; i < f->neps; i++)
		json_array_append_new(eps, ep_json(&f->eps[i], flags));
	json_t *o = json_pack("{s:b, s:s, s:s, s:s, s:o}", "enabled", 1, "node", f->node, "state",
			      fabric_state_name(f), "provider",
			      f->provider_req[0] ? f->provider_req : "auto", "endpoints", eps);
	if (f->last_error)
		json_object_set_new(o, "last_error", json_string(f->last_error));
	if (f->state == FABRIC_RETRYING)
		json_object_set_new(o, "retry_in_ms", json_integer((json_int_t)(f->retry_at_ms > now ? f->retry_at_ms - now : 0)));
	json_object_set_new(o, "counters", json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		"peers", (json_int_t)st.peers, "peers_up", (json_int_t)st.peers_up,
		"peers_down", (json_int_t)st.peers_down, "pings_sent", (json_int_t)st.pings_sent,
		"pongs_received", (json_int_t)st.pongs_received,
		"messages_received", (json_int_t)st.messages_received,
		"messages_rejected", (json_int_t)st.messages_rejected,
		"send_errors", (json_int_t)st.send_errors, "tx_dropped", (json_int_t)f->tx_dropped,
		"endpoint_reopens", (json_int_t)st.endpoint_reopens, "pins", (json_int_t)f->npins));
	if (!(flags & FABRIC_JSON_NO_PEERS)) {
		json_t *peers = json_array();
		for (size_t i = 0; i < f->npeers; i++)
			json_array_append_new(peers, peer_json(f, &f->peers[i], now));
		json_object_set_new(o, "peers", peers);
	}
	return o;
}

static json_t *self_map_json(struct fabric *f)
{
	struct fabric_msg m;
	msg_fill_self(f, &m, FABRIC_MSG_PING);
	json_t *addrs = json_array();
	for (size_t i = 0; i < m.naddrs; i++)
		json_array_append_new(addrs, addr_json(f, m.addrs[i].format, m.addrs[i].bytes, m.addrs[i].len));
	return json_pack("{s:s, s:s, s:b, s:o}", "name", f->node, "state",
			 f->state == FABRIC_UP ? "up" : "down", "self", 1, "addresses", addrs);
}

static json_t *peer_map_json(struct fabric *f, const struct fabric_peer *p, uint64_t now)
{
	json_t *o = peer_json(f, p, now);
	json_t *addrs = json_array();
	for (size_t i = 0; i < p->naddrs; i++)
		json_array_append_new(addrs, addr_json(f, p->addrs[i].format, p->addrs[i].bytes, p->addrs[i].len));
	/* Not heard from yet: its control address is all we know. */
	if (p->naddrs == 0 && p->resolved && f->ctl && f->neps == 1)
		json_array_append_new(addrs, addr_json(f, FI_SOCKADDR_IN, (const uint8_t *)&p->sin, sizeof(p->sin)));
	json_object_set_new(o, "addresses", addrs);
	return o;
}

void fabric_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

int fabric_job_map(struct fabric *f, const char *const *nodes, size_t n, json_t **out,
		   char ***down, size_t *ndown, alps_error **err)
{
	for (size_t i = 0; i < n; i++)
		if (!fabric_msg_node_valid(nodes[i]))
			return alps_fail(err, ALPS_E_INVALID, "job map: bad node name");
	uint64_t now = now_monotonic_ms();
	json_t *list = json_array();
	char **dv = xcalloc(n + 1, sizeof(*dv));
	size_t nd = 0;
	for (size_t i = 0; i < n; i++) {
		struct fabric_peer *p = peer_find(f, nodes[i]);
		json_t *node;
		if (strcmp(nodes[i], f->node) == 0)
			node = self_map_json(f);
		else if (p)
			node = peer_map_json(f, p, now);
		else
			node = json_pack("{s:s, s:s, s:[]}", "name", nodes[i], "state", "not-a-peer", "addresses");
		const char *state = json_string_value(json_object_get(node, "state"));
		if (!state || strcmp(state, "up") != 0)
			dv[nd++] = xstrdup(nodes[i]);
		json_array_append_new(list, node);
	}
	const char *prov = f->neps ? f->eps[f->neps - 1].info->fabric_attr->prov_name : f->provider_req;
	*out = json_pack("{s:i, s:s, s:s, s:I, s:o}", "version", 1, "provider", prov, "from", f->node,
			 "generated_ms", (json_int_t)now_realtime_ms(), "nodes", list);
	*down = dv;
	*ndown = nd;
	return 0;
}

/* ---- open, reload, close ---- */

/* fabric.address, or the address node_name resolves to. */
static int bind_address(const struct config *cfg, const char *node_name, char **out, alps_error **err)
{
	const char *host = cfg->fabric_address && cfg->fabric_address[0] ? cfg->fabric_address : node_name;
	struct in_addr a;
	if (!resolve_ipv4(host, &a))
		return alps_fail(err, ALPS_E_INVALID, "fabric address '%s' does not resolve to IPv4", host);
	char buf[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a, buf, sizeof(buf));
	*out = xstrdup(buf);
	return 0;
}

static void timers_new(struct fabric *f)
{
	f->ev_tick = event_new(f->base, -1, EV_PERSIST, on_tick, f);
	f->ev_kick = evtimer_new(f->base, on_kick, f);
	f->ev_poll = event_new(f->base, -1, EV_PERSIST, on_poll, f);
	f->ev_reopen = evtimer_new(f->base, on_reopen, f);
	struct timeval poll = ms_to_tv(FABRIC_POLL_MS);
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
