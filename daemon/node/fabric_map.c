/* fabric_map.c: job-wide image pins, job maps and the JSON views
 * of the module. */
#include <config.h>

#include "daemon/node/fabric_int.h"

/* ---- pins ---- */

void pins_expire(struct fabric *f, uint64_t now)
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
void pin_store(struct fabric *f, const char *job, const char *reference, const char *digest,
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
	fabric_hex(b, len, hex, sizeof(hex));
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
	fabric_hex(e->addr, e->addrlen, hex, sizeof(hex));
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
		fabric_iso_time(p->last_seen_wall_ms, iso, sizeof(iso));
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
