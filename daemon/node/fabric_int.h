/* fabric_int.h: what the files of the fabric module share (fabric.h is its
 * public face).  fabric.c opens, reloads and closes the module;
 * fabric_ep.c holds the libfabric endpoints, the message queue and the
 * receive path; fabric_peer.c the peer table and liveness; fabric_map.c the
 * job-wide image pins, the job maps and the JSON views. */
#ifndef ALPS_DAEMON_NODE_FABRIC_INT_H
#define ALPS_DAEMON_NODE_FABRIC_INT_H


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
#include "daemon/settings.h"
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

enum peer_state { PEER_UNRESOLVED, PEER_UNKNOWN, PEER_UP, PEER_DOWN };

/* fabric.c */
void fabric_hex(const uint8_t *b, size_t n, char *out, size_t size);
struct timeval fabric_ms_to_tv(uint64_t ms);
void fabric_iso_time(uint64_t wall_ms, char *buf, size_t size);

/* fabric_ep.c */
int tx_queue(struct fabric *f, struct fabric_peer *p, const struct fabric_msg *m);
void eps_close(struct fabric *f);
int eps_open(struct fabric *f, alps_error **err);
void reopen_schedule(struct fabric *f);
void fabric_on_reopen(evutil_socket_t fd, short what, void *arg);
void msg_fill_self(struct fabric *f, struct fabric_msg *m, int type);
void fabric_progress(struct fabric *f);
void fabric_on_kick(evutil_socket_t fd, short what, void *arg);
void fabric_on_poll(evutil_socket_t fd, short what, void *arg);
void fabric_kick(struct fabric *f, unsigned ms);

/* fabric_peer.c */
struct fabric_peer *peer_find(struct fabric *f, const char *name);
void peers_free(struct fabric_peer *peers, size_t n);
const char *peer_state_name(enum peer_state s);
enum peer_state peer_state(const struct fabric *f, const struct fabric_peer *p, uint64_t now);
bool fabric_resolve_ipv4(const char *host, struct in_addr *out);
int peers_load(const struct fabric *f, const struct config *cfg, struct fabric_peer **out,
	       size_t *nout, alps_error **err);
void peer_av_insert(struct fabric *f, struct fabric_peer *p);
void tick_schedule(struct fabric *f);
void fabric_on_tick(evutil_socket_t fd, short what, void *arg);

/* fabric_map.c */
void pins_expire(struct fabric *f, uint64_t now);
void pin_store(struct fabric *f, const char *job, const char *reference, const char *digest,
	       const char *from);

#endif
