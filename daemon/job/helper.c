/* helper.c: the helper's messages to the daemon (see helper.h). */
#include <config.h>

#include <stddef.h>
#include <string.h>

#include "daemon/job/helper.h"
#include "daemon/job/ipc.h"

/* Append s and its NUL to m->text, cutting what does not fit. */
static void text_add(struct helper_msg *m, const char *s)
{
	size_t room = sizeof(m->text) - m->text_len;
	if (room == 0)
		return;
	size_t n = strlen(s ? s : "");
	if (n >= room)
		n = room - 1;
	memcpy(m->text + m->text_len, s ? s : "", n);
	m->text[m->text_len + n] = '\0';
	m->text_len += (uint32_t)n + 1;
}

int helper_send(int sock, enum helper_msg_type type, uint64_t flags, const char *a,
		const char *b, const char *c, int fd)
{
	struct helper_msg m;
	memset(&m, 0, offsetof(struct helper_msg, text));
	m.type = type;
	m.flags = flags;
	text_add(&m, a);
	text_add(&m, b);
	text_add(&m, c);
	return ipc_send(sock, &m, offsetof(struct helper_msg, text) + m.text_len, fd);
}

int helper_send_error(int sock, const alps_error *err)
{
	struct helper_msg m;
	memset(&m, 0, offsetof(struct helper_msg, text));
	m.type = HELPER_ERROR;
	m.code = err ? err->code : ALPS_E_INTERNAL;
	m.errnum = err ? err->errnum : 0;
	text_add(&m, err ? err->msg : "unknown error");
	return ipc_send(sock, &m, offsetof(struct helper_msg, text) + m.text_len, -1);
}
