/* helper.h: what the namespace helper tells the daemon.
 *
 * ns_prepare() starts alps-nshelper (libexec/) per job and sends it the
 * plan (plan_wire.h); the helper applies the plan and reports over their
 * SOCK_SEQPACKET socketpair, one typed message per event: the steps it
 * passes, each mount it made (for `alps jobs`), each process it leaves in
 * the namespace (a pidfd rides along, so the daemon can kill it if the
 * prepare fails), then READY or ERROR.  After READY the daemon pins the
 * namespace (open_tree of /proc/<helper>/ns/mnt) and sends one byte; the
 * helper exits. */
#ifndef ALPS_DAEMON_JOB_HELPER_H
#define ALPS_DAEMON_JOB_HELPER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

enum helper_msg_type {
	HELPER_MOUNT = 1,       /* flags; text: "dst\0kind\0source\0" */
	HELPER_PIDFD = 2,       /* a pidfd of a process left in the namespace */
	HELPER_ERROR = 3,       /* code, errnum; text: the message */
	HELPER_READY = 4,       /* built; waiting to be pinned */
	HELPER_STEP = 5,        /* text: the step begun ("plan received") */
};

#define HELPER_TEXT_MAX 8192

struct helper_msg {
	uint32_t type;          /* enum helper_msg_type */
	int32_t code;           /* HELPER_ERROR: enum alps_code */
	int32_t errnum;         /* HELPER_ERROR: errno or 0 */
	uint32_t text_len;      /* bytes of text used */
	uint64_t flags;         /* HELPER_MOUNT: MS_* */
	char text[HELPER_TEXT_MAX];
};

/* Send a message with up to three strings, NUL-separated (NULL: ""). */
int helper_send(int sock, enum helper_msg_type type, uint64_t flags, const char *a,
		const char *b, const char *c, int fd);
/* Send err as HELPER_ERROR. */
int helper_send_error(int sock, const alps_error *err);

#endif
