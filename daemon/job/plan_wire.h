/* plan_wire.h: a validated mount plan as bytes, daemon to namespace helper.
 *
 * The daemon builds and validates a job's plan (plan.h), then hands it to
 * alps-nshelper, a separate program, over their SOCK_SEQPACKET socketpair.
 * The encoding is native-endian (both ends run on one machine), flat and
 * versioned:
 *
 *	u32 magic "APLN", u32 version
 *	str run_dir, str job, u32 uid, u32 gid, u32 ngroups, ngroups x u32,
 *	u8 writable, u32 nops, then per operation:
 *	u32 kind, u32 origin, str src, str dst, str id, u64 flags, str data,
 *	u8 as_user, u8 optional
 *
 * where str is u32 length (PLAN_WIRE_NULL for a NULL pointer), the bytes,
 * and a NUL.  Decoding trusts nothing: every count and length is checked
 * against what is left, strings must end in their NUL and hold no other,
 * enums must be known, and nothing may follow the last operation.  The
 * helper validates the decoded plan again before it applies it.
 *
 * On the socket the bytes travel as a header message (struct
 * plan_wire_header) followed by chunks of at most PLAN_WIRE_CHUNK bytes. */
#ifndef ALPS_DAEMON_JOB_PLAN_WIRE_H
#define ALPS_DAEMON_JOB_PLAN_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "daemon/job/plan.h"

#define PLAN_WIRE_MAGIC 0x4e4c5041u     /* "APLN" */
#define PLAN_WIRE_VERSION 1u
#define PLAN_WIRE_NULL 0xffffffffu
/* Far above any real plan (500 layers, a few hundred mounts of 4 KiB
 * paths), low enough that a bad length cannot make the helper allocate
 * much. */
#define PLAN_WIRE_MAX (16u << 20)
#define PLAN_WIRE_MAX_OPS 65536u
#define PLAN_WIRE_MAX_GROUPS 65536u
#define PLAN_WIRE_CHUNK 32768u

struct plan_wire_header {
	uint32_t magic;
	uint32_t version;
	int32_t parent;         /* the daemon's pid: the helper's parent must be it */
	uint32_t len;           /* bytes of plan that follow in chunks */
	uint32_t flags;         /* PLAN_WIRE_F_* */
};

/* Test switches the daemon's process set that the helper must apply. */
#define PLAN_WIRE_F_OVERLAY_LEGACY 1u   /* apply_overlay_force_legacy(true) */
#define PLAN_WIRE_F_ALL PLAN_WIRE_F_OVERLAY_LEGACY

/* The plan's bytes; caller frees *buf. */
void plan_wire_encode(const struct ns_plan *plan, uint8_t **buf, size_t *len);
/* Parse len bytes into a new plan (ns_plan_free); a precise
 * ALPS_E_PROTOCOL error on anything malformed. */
int plan_wire_decode(const uint8_t *buf, size_t len, struct ns_plan **out, alps_error **err);

/* Send plan over sock, waiting at most until deadline_ms (monotonic) for
 * room in the socket: a helper that stops reading cannot hold the
 * caller. */
int plan_wire_send(int sock, const struct ns_plan *plan, uint32_t flags, uint64_t deadline_ms,
		   alps_error **err);
/* Receive a plan (blocking); *h gets the header (the sender's claimed
 * pid, the flags). */
int plan_wire_recv(int sock, struct ns_plan **out, struct plan_wire_header *h, alps_error **err);

#endif
