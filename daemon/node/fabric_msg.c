/* fabric_msg.c: encode and decode the daemons' fabric messages (see
 * fabric_msg.h).  Pure code: no allocation, no I/O. */
#include <config.h>

#include <string.h>

#include "daemon/node/fabric_msg.h"

/* A write cursor: once a put does not fit, every later put is a no-op and
 * the encoder reports the overflow once at the end. */
struct wcur {
	uint8_t *p;
	size_t size;
	size_t off;
	bool overflow;
};

/* A read cursor over an untrusted datagram: the first failure is sticky
 * and keeps its reason. */
struct rcur {
	const uint8_t *p;
	size_t len;
	size_t off;
	const char *why;
};

static void put_bytes(struct wcur *w, const void *b, size_t n)
{
	if (w->overflow || n > w->size - w->off) {
		w->overflow = true;
		return;
	}
	memcpy(w->p + w->off, b, n);
	w->off += n;
}

static void put_uint(struct wcur *w, uint64_t v, size_t n)
{
	uint8_t b[8];
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	put_bytes(w, b, n);
}

static void put_str(struct wcur *w, const char *s)
{
	size_t n = strlen(s) + 1;
	put_uint(w, n, 2);
	put_bytes(w, s, n);
}

static bool get_fail(struct rcur *r, const char *why)
{
	if (!r->why)
		r->why = why;
	return false;
}

static bool get_uint(struct rcur *r, uint64_t *v, size_t n)
{
	if (r->why)
		return false;
	if (n > r->len - r->off)
		return get_fail(r, "truncated field");
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++)
		x = (x << 8) | r->p[r->off + i];
	r->off += n;
	*v = x;
	return true;
}

/* A length-prefixed string into dst (capacity cap, NUL included): it must
 * hold at least one character and end in its only NUL. */
static bool get_str(struct rcur *r, char *dst, size_t cap, const char *what)
{
	uint64_t n;
	if (!get_uint(r, &n, 2))
		return false;
	if (n < 2 || n > cap)
		return get_fail(r, what);
	if (n > r->len - r->off)
		return get_fail(r, "string runs past the end");
	const uint8_t *s = r->p + r->off;
	if (s[n - 1] != '\0' || memchr(s, '\0', n - 1))
		return get_fail(r, "string not NUL-terminated");
	memcpy(dst, s, n);
	r->off += n;
	return true;
}

static bool name_char(char c, bool dot_ok)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || (dot_ok && c == '.');
}

static bool name_valid(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char(s[i], true))
			return false;
	return true;
}

bool fabric_msg_node_valid(const char *s)
{
	return name_valid(s, FABRIC_NODE_MAX);
}

/* Slurm job ids: "4242", array tasks "4242_7", het job parts "4242+1". */
bool fabric_msg_job_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > FABRIC_JOB_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char(s[i], true) && s[i] != '+')
			return false;
	return true;
}

/* An image reference as a user wrote it: printable ASCII, no spaces.  Its
 * grammar is checked again by whoever resolves it; here only what keeps
 * logs and JSON sane. */
bool fabric_msg_ref_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > FABRIC_REF_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7f)
			return false;
	return true;
}

const char *fabric_msg_type_name(int type)
{
	switch (type) {
	case FABRIC_MSG_PING: return "ping";
	case FABRIC_MSG_PONG: return "pong";
	case FABRIC_MSG_PIN: return "pin";
	default: return "unknown";
	}
}

static const char *check_fields(const struct fabric_msg *m)
{
	if (!memchr(m->node, '\0', sizeof(m->node)) || !fabric_msg_node_valid(m->node))
		return "bad node name";
	if (m->type == FABRIC_MSG_PING || m->type == FABRIC_MSG_PONG) {
		if (m->naddrs > FABRIC_MSG_ADDRS_MAX)
			return "too many addresses";
		for (size_t i = 0; i < m->naddrs; i++)
			if (m->addrs[i].len == 0 || m->addrs[i].len > FABRIC_ADDR_MAX)
				return "bad address length";
		return NULL;
	}
	if (m->type != FABRIC_MSG_PIN)
		return "unknown message type";
	if (!memchr(m->job, '\0', sizeof(m->job)) || !fabric_msg_job_valid(m->job))
		return "bad job id";
	if (!memchr(m->reference, '\0', sizeof(m->reference)) || !fabric_msg_ref_valid(m->reference))
		return "bad image reference";
	if (!memchr(m->digest, '\0', sizeof(m->digest)) || !digest_valid(m->digest))
		return "bad digest";
	return NULL;
}

static void encode_payload(struct wcur *w, const struct fabric_msg *m)
{
	if (m->type == FABRIC_MSG_PIN) {
		put_str(w, m->job);
		put_str(w, m->reference);
		put_str(w, m->digest);
		put_str(w, m->node);
		return;
	}
	put_uint(w, m->seq, 8);
	put_uint(w, m->ts_ns, 8);
	put_uint(w, m->incarnation, 8);
	put_str(w, m->node);
	put_uint(w, m->naddrs, 1);
	for (size_t i = 0; i < m->naddrs; i++) {
		put_uint(w, m->addrs[i].format, 4);
		put_uint(w, m->addrs[i].len, 1);
		put_bytes(w, m->addrs[i].bytes, m->addrs[i].len);
	}
}

ssize_t fabric_msg_encode(const struct fabric_msg *m, uint8_t *buf, size_t size, const char **why)
{
	const char *bad = check_fields(m);
	if (bad) {
		if (why)
			*why = bad;
		return -1;
	}
	struct wcur w = { .p = buf, .size = size > FABRIC_MSG_MAX ? FABRIC_MSG_MAX : size };
	put_uint(&w, FABRIC_MSG_MAGIC, 4);
	put_uint(&w, FABRIC_MSG_VERSION, 1);
	put_uint(&w, m->type, 1);
	put_uint(&w, 0, 2);
	put_uint(&w, 0, 4);         /* length, patched below */
	encode_payload(&w, m);
	if (w.overflow) {
		if (why)
			*why = "message does not fit";
		return -1;
	}
	size_t payload = w.off - FABRIC_MSG_HEADER_SIZE;
	for (size_t i = 0; i < 4; i++)
		buf[8 + i] = (uint8_t)(payload >> (8 * (3 - i)));
	return (ssize_t)w.off;
}

/* The header: everything fixed must be exactly as we send it. */
static bool decode_header(struct rcur *r, struct fabric_msg *m)
{
	uint64_t magic, version, type, reserved, length;
	if (r->len > FABRIC_MSG_MAX)
		return get_fail(r, "datagram too long");
	if (!get_uint(r, &magic, 4) || !get_uint(r, &version, 1) || !get_uint(r, &type, 1) ||
	    !get_uint(r, &reserved, 2) || !get_uint(r, &length, 4))
		return get_fail(r, "short header");
	if (magic != FABRIC_MSG_MAGIC)
		return get_fail(r, "bad magic");
	if (version != FABRIC_MSG_VERSION)
		return get_fail(r, "unsupported version");
	if (reserved != 0)
		return get_fail(r, "reserved bits set");
	if (length != r->len - FABRIC_MSG_HEADER_SIZE)
		return get_fail(r, "length does not match the datagram");
	m->type = (uint8_t)type;
	return true;
}

static bool decode_addr(struct rcur *r, struct fabric_msg_addr *a)
{
	uint64_t format, len;
	if (!get_uint(r, &format, 4) || !get_uint(r, &len, 1))
		return false;
	if (len == 0 || len > FABRIC_ADDR_MAX)
		return get_fail(r, "bad address length");
	if (len > r->len - r->off)
		return get_fail(r, "address runs past the end");
	a->format = (uint32_t)format;
	a->len = (uint8_t)len;
	memcpy(a->bytes, r->p + r->off, len);
	r->off += len;
	return true;
}

static bool decode_liveness(struct rcur *r, struct fabric_msg *m)
{
	uint64_t naddrs;
	if (!get_uint(r, &m->seq, 8) || !get_uint(r, &m->ts_ns, 8) ||
	    !get_uint(r, &m->incarnation, 8) ||
	    !get_str(r, m->node, sizeof(m->node), "bad node name length") ||
	    !get_uint(r, &naddrs, 1))
		return false;
	if (naddrs > FABRIC_MSG_ADDRS_MAX)
		return get_fail(r, "too many addresses");
	m->naddrs = (uint8_t)naddrs;
	for (size_t i = 0; i < m->naddrs; i++)
		if (!decode_addr(r, &m->addrs[i]))
			return false;
	return true;
}

static bool decode_pin(struct rcur *r, struct fabric_msg *m)
{
	return get_str(r, m->job, sizeof(m->job), "bad job id length") &&
	       get_str(r, m->reference, sizeof(m->reference), "bad reference length") &&
	       get_str(r, m->digest, sizeof(m->digest), "bad digest length") &&
	       get_str(r, m->node, sizeof(m->node), "bad node name length");
}

int fabric_msg_decode(const uint8_t *buf, size_t len, struct fabric_msg *m, const char **why)
{
	struct rcur r = { .p = buf, .len = len };
	memset(m, 0, sizeof(*m));
	if (decode_header(&r, m)) {
		if (m->type == FABRIC_MSG_PING || m->type == FABRIC_MSG_PONG)
			decode_liveness(&r, m);
		else if (m->type == FABRIC_MSG_PIN)
			decode_pin(&r, m);
		else
			get_fail(&r, "unknown message type");
	}
	if (!r.why && r.off != r.len)
		r.why = "trailing bytes";
	if (!r.why)
		r.why = check_fields(m);
	if (r.why) {
		if (why)
			*why = r.why;
		memset(m, 0, sizeof(*m));
		return -1;
	}
	return 0;
}
