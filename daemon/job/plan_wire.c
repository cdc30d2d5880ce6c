/* plan_wire.c: encode, decode and carry a mount plan (see plan_wire.h). */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/job/ipc.h"
#include "daemon/job/plan_wire.h"

/* The smallest operation: two u32, four NULL strings, a u64, two u8. */
#define OP_MIN_BYTES (4 + 4 + 4 * 4 + 8 + 1 + 1)

/* ---- encoding ---- */

struct wbuf {
	uint8_t *p;             /* owned */
	size_t len, cap;
};

static void put(struct wbuf *b, const void *v, size_t n)
{
	if (b->cap - b->len < n) {
		while (b->cap - b->len < n)
			b->cap = b->cap ? b->cap * 2 : 4096;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, v, n);
	b->len += n;
}

static void put_u32(struct wbuf *b, uint32_t v)
{
	put(b, &v, sizeof(v));
}

static void put_u8(struct wbuf *b, uint8_t v)
{
	put(b, &v, sizeof(v));
}

/* A string longer than the whole wire limit cannot be in a validated
 * plan; its length is capped so the u32 cannot wrap, and the total then
 * exceeds PLAN_WIRE_MAX, which the sender refuses. */
static void put_str(struct wbuf *b, const char *s)
{
	if (!s) {
		put_u32(b, PLAN_WIRE_NULL);
		return;
	}
	size_t n = strlen(s);
	if (n > PLAN_WIRE_MAX)
		n = PLAN_WIRE_MAX + 1;
	put_u32(b, (uint32_t)n);
	put(b, s, n);
	put_u8(b, 0);
}

static void put_op(struct wbuf *b, const struct mount_op *op)
{
	uint64_t flags = op->flags;
	put_u32(b, (uint32_t)op->kind);
	put_u32(b, (uint32_t)op->origin);
	put_str(b, op->src);
	put_str(b, op->dst);
	put_str(b, op->id);
	put(b, &flags, sizeof(flags));
	put_str(b, op->data);
	put_u8(b, op->as_user);
	put_u8(b, op->optional);
}

void plan_wire_encode(const struct ns_plan *plan, uint8_t **buf, size_t *len)
{
	struct wbuf b = { 0 };
	put_u32(&b, PLAN_WIRE_MAGIC);
	put_u32(&b, PLAN_WIRE_VERSION);
	put_str(&b, plan->run_dir);
	put_str(&b, plan->job);
	put_u32(&b, (uint32_t)plan->uid);
	put_u32(&b, (uint32_t)plan->gid);
	put_u32(&b, (uint32_t)plan->ngroups);
	for (size_t i = 0; i < plan->ngroups; i++)
		put_u32(&b, (uint32_t)plan->groups[i]);
	put_u8(&b, plan->writable);
	put_u32(&b, (uint32_t)plan->nops);
	for (size_t i = 0; i < plan->nops; i++)
		put_op(&b, &plan->ops[i]);
	*buf = b.p;
	*len = b.len;
}

/* ---- decoding ---- */

struct rbuf {
	const uint8_t *p;
	size_t left;
	alps_error **err;
};

static int bad(struct rbuf *r, const char *what, const char *why)
{
	return alps_fail(r->err, ALPS_E_PROTOCOL, "malformed plan: %s: %s", what, why);
}

static int get(struct rbuf *r, void *v, size_t n, const char *what)
{
	memset(v, 0, n);
	if (n > r->left)
		return bad(r, what, "truncated");
	memcpy(v, r->p, n);
	r->p += n;
	r->left -= n;
	return 0;
}

static int get_u32(struct rbuf *r, uint32_t *v, const char *what)
{
	return get(r, v, sizeof(*v), what);
}

static int get_bool(struct rbuf *r, bool *v, const char *what)
{
	uint8_t b;
	if (get(r, &b, 1, what) < 0)
		return -1;
	if (b > 1)
		return bad(r, what, "not 0 or 1");
	*v = b;
	return 0;
}

/* One string: its bytes, then exactly one NUL, at the end. */
static int get_str(struct rbuf *r, char **out, const char *what)
{
	uint32_t n;
	*out = NULL;
	if (get_u32(r, &n, what) < 0)
		return -1;
	if (n == PLAN_WIRE_NULL)
		return 0;
	if ((size_t)n >= r->left)
		return bad(r, what, "truncated");
	if (memchr(r->p, '\0', n))
		return bad(r, what, "a NUL inside the string");
	if (r->p[n] != '\0')
		return bad(r, what, "not NUL-terminated");
	*out = xstrndup((const char *)r->p, n);
	r->p += (size_t)n + 1;
	r->left -= (size_t)n + 1;
	return 0;
}

static int get_enum(struct rbuf *r, uint32_t lo, uint32_t hi, uint32_t *v, const char *what)
{
	if (get_u32(r, v, what) < 0)
		return -1;
	if (*v < lo || *v > hi)
		return bad(r, what, "unknown value");
	return 0;
}

static int get_op(struct rbuf *r, struct mount_op *op)
{
	uint32_t kind, origin;
	uint64_t flags;
	if (get_enum(r, MOUNT_LAYER, MOUNT_WORKDIR, &kind, "operation kind") < 0 ||
	    get_enum(r, ORIGIN_SYSTEM, ORIGIN_USER, &origin, "operation origin") < 0)
		return -1;
	op->kind = (enum mount_kind)kind;
	op->origin = (enum mount_origin)origin;
	if (get_str(r, &op->src, "source") < 0 || get_str(r, &op->dst, "destination") < 0 ||
	    get_str(r, &op->id, "layer id") < 0 || get(r, &flags, sizeof(flags), "flags") < 0)
		return -1;
	if (flags > ULONG_MAX)
		return bad(r, "flags", "out of range");
	op->flags = (unsigned long)flags;
	if (get_str(r, &op->data, "data") < 0 || get_bool(r, &op->as_user, "as_user") < 0 ||
	    get_bool(r, &op->optional, "optional") < 0)
		return -1;
	return 0;
}

/* A count of items of at least min bytes each, that fit in what is left. */
static int get_count(struct rbuf *r, uint32_t max, size_t min, size_t *n, const char *what)
{
	uint32_t v;
	if (get_u32(r, &v, what) < 0)
		return -1;
	if (v > max || (size_t)v > r->left / min)
		return bad(r, what, "more than the message holds");
	*n = v;
	return 0;
}

static int get_head(struct rbuf *r, struct ns_plan *plan)
{
	uint32_t magic, version, uid, gid;
	if (get_u32(r, &magic, "magic") < 0 || get_u32(r, &version, "version") < 0)
		return -1;
	if (magic != PLAN_WIRE_MAGIC)
		return bad(r, "magic", "not a plan");
	if (version != PLAN_WIRE_VERSION)
		return bad(r, "version", "not the helper's version");
	if (get_str(r, &plan->run_dir, "run directory") < 0 || get_str(r, &plan->job, "job") < 0 ||
	    get_u32(r, &uid, "uid") < 0 || get_u32(r, &gid, "gid") < 0)
		return -1;
	if (!plan->run_dir || !plan->job)
		return bad(r, plan->job ? "run directory" : "job", "missing");
	plan->uid = (uid_t)uid;
	plan->gid = (gid_t)gid;
	return 0;
}

static int get_groups(struct rbuf *r, struct ns_plan *plan)
{
	size_t n;
	if (get_count(r, PLAN_WIRE_MAX_GROUPS, sizeof(uint32_t), &n, "group count") < 0)
		return -1;
	plan->groups = n ? xcalloc(n, sizeof(gid_t)) : NULL;
	plan->ngroups = n;
	for (size_t i = 0; i < n; i++) {
		uint32_t g;
		if (get_u32(r, &g, "group") < 0)
			return -1;
		plan->groups[i] = (gid_t)g;
	}
	return 0;
}

int plan_wire_decode(const uint8_t *buf, size_t len, struct ns_plan **out, alps_error **err)
{
	struct rbuf r = { .p = buf, .left = len, .err = err };
	_cleanup_ns_plan_ struct ns_plan *plan = xzalloc(sizeof(*plan));
	size_t nops;
	*out = NULL;
	if (len > PLAN_WIRE_MAX)
		return bad(&r, "plan", "over the size limit");
	if (get_head(&r, plan) < 0 || get_groups(&r, plan) < 0 ||
	    get_bool(&r, &plan->writable, "writable") < 0 ||
	    get_count(&r, PLAN_WIRE_MAX_OPS, OP_MIN_BYTES, &nops, "operation count") < 0)
		return -1;
	plan->ops = xcalloc(nops ? nops : 1, sizeof(*plan->ops));
	/* Counted as they come, so a failure frees exactly what was made. */
	for (size_t i = 0; i < nops; i++) {
		plan->nops++;
		if (get_op(&r, &plan->ops[i]) < 0)
			return alps_error_prefix(err, "operation %zu", i);
	}
	if (r.left)
		return bad(&r, "plan", "bytes after the last operation");
	*out = steal_pointer(&plan);
	return 0;
}

/* ---- transport ---- */

/* One message, waiting for room until the deadline. */
static int send_by(int sock, const void *buf, size_t len, uint64_t deadline_ms,
		   alps_error **err)
{
	for (;;) {
		if (send(sock, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return alps_fail_errno(err, "sending the plan to the namespace helper");
		uint64_t now = now_monotonic_ms();
		if (now >= deadline_ms)
			return alps_fail(err, ALPS_E_TIMEOUT,
					 "the namespace helper does not read its plan");
		struct pollfd pfd = { .fd = sock, .events = POLLOUT };
		uint64_t wait = deadline_ms - now;
		if (poll(&pfd, 1, wait > INT_MAX ? INT_MAX : (int)wait) < 0 && errno != EINTR)
			return alps_fail_errno(err, "poll() on the namespace helper");
	}
}

int plan_wire_send(int sock, const struct ns_plan *plan, uint32_t flags, uint64_t deadline_ms,
		   alps_error **err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	plan_wire_encode(plan, &buf, &len);
	if (len > PLAN_WIRE_MAX)
		return alps_fail(err, ALPS_E_LIMIT, "the mount plan takes %zu bytes, over %u", len,
				 PLAN_WIRE_MAX);
	struct plan_wire_header h = { .magic = PLAN_WIRE_MAGIC, .version = PLAN_WIRE_VERSION,
				      .parent = (int32_t)getpid(), .len = (uint32_t)len,
				      .flags = flags };
	if (send_by(sock, &h, sizeof(h), deadline_ms, err) < 0)
		return -1;
	for (size_t off = 0; off < len; off += PLAN_WIRE_CHUNK) {
		size_t n = len - off < PLAN_WIRE_CHUNK ? len - off : PLAN_WIRE_CHUNK;
		if (send_by(sock, buf + off, n, deadline_ms, err) < 0)
			return -1;
	}
	return 0;
}

static int recv_header(int sock, struct plan_wire_header *h, alps_error **err)
{
	ssize_t n = ipc_recv(sock, h, sizeof(*h), NULL);
	if (n < 0)
		return alps_fail_errno(err, "reading the plan's header");
	if (n == 0)
		return alps_fail(err, ALPS_E_PROTOCOL, "no plan came");
	if ((size_t)n != sizeof(*h) || h->magic != PLAN_WIRE_MAGIC ||
	    h->version != PLAN_WIRE_VERSION)
		return alps_fail(err, ALPS_E_PROTOCOL, "malformed plan header");
	if (h->len < 8 || h->len > PLAN_WIRE_MAX)
		return alps_fail(err, ALPS_E_PROTOCOL, "a plan of %u bytes", (unsigned)h->len);
	if (h->flags & ~PLAN_WIRE_F_ALL)
		return alps_fail(err, ALPS_E_PROTOCOL, "unknown plan flags 0x%x", (unsigned)h->flags);
	return 0;
}

int plan_wire_recv(int sock, struct ns_plan **out, struct plan_wire_header *hp,
		   alps_error **err)
{
	struct plan_wire_header h;
	*out = NULL;
	if (recv_header(sock, &h, err) < 0)
		return -1;
	_cleanup_free_ uint8_t *buf = xmalloc(h.len);
	for (size_t got = 0; got < h.len;) {
		size_t want = h.len - got < PLAN_WIRE_CHUNK ? h.len - got : PLAN_WIRE_CHUNK;
		ssize_t n = ipc_recv(sock, buf + got, want, NULL);
		if (n < 0)
			return alps_fail_errno(err, "reading the plan");
		if (n == 0)
			return alps_fail(err, ALPS_E_PROTOCOL, "the plan ended after %zu of %u bytes",
					 got, (unsigned)h.len);
		got += (size_t)n;
	}
	*hp = h;
	return plan_wire_decode(buf, h.len, out, err);
}
