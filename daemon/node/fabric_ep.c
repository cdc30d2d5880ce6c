/* fabric_ep.c: the libfabric endpoints: opening them (and re-opening
 * after a failure), the queue of messages to send, and the receive path. */
#include <config.h>

#include "daemon/node/fabric_int.h"

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
int tx_queue(struct fabric *f, struct fabric_peer *p, const struct fabric_msg *m)
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

void eps_close(struct fabric *f)
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

int eps_open(struct fabric *f, alps_error **err)
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
ALPS_PRINTF(2, 3)
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

void reopen_schedule(struct fabric *f)
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
	struct timeval tv = fabric_ms_to_tv(delay);
	event_add(f->ev_reopen, &tv);
}

void fabric_on_reopen(evutil_socket_t fd, short what, void *arg)
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

void msg_fill_self(struct fabric *f, struct fabric_msg *m, int type)
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
void fabric_progress(struct fabric *f)
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
	fabric_progress(arg);
}

void fabric_on_kick(evutil_socket_t fd, short what, void *arg)
{
	fabric_progress(arg);
}

void fabric_on_poll(evutil_socket_t fd, short what, void *arg)
{
	fabric_progress(arg);
}

/* Progress again in ms, unless it is already due sooner. */
void fabric_kick(struct fabric *f, unsigned ms)
{
	uint64_t at = now_monotonic_ms() + ms;
	if (evtimer_pending(f->ev_kick, NULL)) {
		if (f->kick_at_ms <= at)
			return;
		evtimer_del(f->ev_kick);
	}
	f->kick_at_ms = at;
	struct timeval tv = fabric_ms_to_tv(ms);
	evtimer_add(f->ev_kick, &tv);
}
