/* fabric_msg.h: the daemons' own small messages on the fabric.
 *
 * Every datagram is a fixed 12-byte header and a payload:
 *
 *	u32 magic "ALPF"   u8 version   u8 type   u16 reserved (0)   u32 length
 *
 * integers big-endian, length the exact payload size.  Payload fields are
 * u8/u32/u64 integers, strings as u16 length (NUL included) + bytes + NUL,
 * and endpoint addresses as u32 format + u8 length + bytes.
 *
 *	PING, PONG   u64 seq, u64 timestamp (ns; a pong echoes the ping's),
 *	             u64 incarnation, node, u8 n, n addresses
 *	PIN          job, reference, digest, node (the publisher)
 *
 * Anything on the fabric can send us bytes, so decoding trusts nothing:
 * the header must match exactly, every field must lie inside the datagram,
 * the payload must be consumed to the last byte, every string must end in
 * its own NUL and hold only the characters its field allows.  Decoding
 * fills a caller-owned struct of fixed-size arrays and allocates nothing,
 * so a hostile datagram costs a bounded amount of work and no memory.
 *
 * Encoding applies the same checks, so a daemon never sends what its peers
 * would reject.  This file is pure (no libfabric, no loop): the unit tests
 * and the fuzzer drive it directly. */
#ifndef ALPS_FABRIC_MSG_H
#define ALPS_FABRIC_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/digest.h"

#define FABRIC_MSG_MAGIC 0x414c5046u    /* "ALPF" */
#define FABRIC_MSG_VERSION 1
#define FABRIC_MSG_HEADER_SIZE 12
/* The largest datagram either side handles; receive buffers are this big. */
#define FABRIC_MSG_MAX 1024

#define FABRIC_NODE_MAX 63      /* a host name label sequence, as Slurm's */
#define FABRIC_JOB_MAX 63
#define FABRIC_REF_MAX 255
#define FABRIC_ADDR_MAX 56      /* bytes of one endpoint name (sockaddr_in6: 28, cxi: 8) */
#define FABRIC_MSG_ADDRS_MAX 4  /* warm endpoints a node advertises */

enum fabric_msg_type {
	FABRIC_MSG_PING = 1,
	FABRIC_MSG_PONG = 2,
	FABRIC_MSG_PIN = 3,
};

/* One endpoint address as fi_getname() gave it. */
struct fabric_msg_addr {
	uint32_t format;        /* FI_SOCKADDR_IN, FI_ADDR_CXI... */
	uint8_t len;
	uint8_t bytes[FABRIC_ADDR_MAX];
};

struct fabric_msg {
	uint8_t type;                   /* enum fabric_msg_type */
	char node[FABRIC_NODE_MAX + 1]; /* the sender */

	/* PING, PONG */
	uint64_t seq;
	uint64_t ts_ns;
	uint64_t incarnation;           /* random per daemon start: tells restarts */
	uint8_t naddrs;
	struct fabric_msg_addr addrs[FABRIC_MSG_ADDRS_MAX];

	/* PIN */
	char job[FABRIC_JOB_MAX + 1];
	char reference[FABRIC_REF_MAX + 1];
	char digest[DIGEST_STRLEN_MAX];
};

/* Encode m into buf.  Returns the datagram size, or -1 when a field is
 * invalid or buf is too small (*why, if not NULL, says which). */
ssize_t fabric_msg_encode(const struct fabric_msg *m, uint8_t *buf, size_t size, const char **why);

/* Decode a received datagram into *m.  0 on success; -1 with *why (a
 * static string, if why is not NULL) when anything is out of place. */
int fabric_msg_decode(const uint8_t *buf, size_t len, struct fabric_msg *m, const char **why);

/* Field checks shared with the callers that build messages. */
bool fabric_msg_node_valid(const char *s);
bool fabric_msg_job_valid(const char *s);
bool fabric_msg_ref_valid(const char *s);

/* "ping", "pong", "pin", or "unknown". */
const char *fabric_msg_type_name(int type);

#endif
