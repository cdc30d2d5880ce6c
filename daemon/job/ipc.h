/* ipc.h: messages with an optional fd over a SOCK_SEQPACKET socketpair.
 *
 * Helpers report typed results to their parent this way: one message per
 * send, an fd (an O_PATH fd opened as the user, a pidfd) riding along as
 * SCM_RIGHTS.  Received fds are O_CLOEXEC; fds nobody asked for are closed. */
#ifndef ALPS_DAEMON_JOB_IPC_H
#define ALPS_DAEMON_JOB_IPC_H

#include <stddef.h>
#include <sys/types.h>

/* Send len bytes and fd (-1: none).  Async-signal-safe.  -1 with errno. */
int ipc_send(int sock, const void *buf, size_t len, int fd);
/* Receive one message into buf: its length (0 at EOF), -1 with errno
 * (EMSGSIZE: truncated).  *fd gets the fd that came along or -1; with fd
 * NULL, any fd is closed. */
ssize_t ipc_recv(int sock, void *buf, size_t len, int *fd);
/* A SOCK_SEQPACKET | SOCK_CLOEXEC socketpair; -1 with errno. */
int ipc_pair(int sv[2]);

#endif
