/* sdnotify.h: the systemd notification and socket-activation protocols,
 * spoken directly (a datagram to $NOTIFY_SOCKET, fds from $LISTEN_FDS), so
 * alpsd needs no libsystemd. */
#ifndef ALPS_SDNOTIFY_H
#define ALPS_SDNOTIFY_H

/* Send state (e.g. "READY=1") if run under systemd; 0 when sent or not
 * under systemd, -1 with errno on failure. */
int sd_notify_state(const char *state);
/* The first socket passed by systemd (fd 3) if LISTEN_PID is us and
 * LISTEN_FDS >= 1, else -1.  Clears the variables so children don't see
 * them. */
int sd_listen_fd(void);

#endif
