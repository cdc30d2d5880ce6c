/* exectty.h: a pseudo-terminal for `alps exec` when the caller is on one.
 *
 * The command gets the pty's other end as stdin, stdout and stderr and, in
 * alps-enter, as the controlling terminal of a session of its own: job
 * control, ^C, ^Z and the window size behave as in a local shell.  The
 * caller's terminal is put in raw mode and a thread copies both ways until
 * the command's side is closed; the window size follows SIGWINCH. */
#ifndef ALPS_CLIENT_EXECTTY_H
#define ALPS_CLIENT_EXECTTY_H

#include <stdbool.h>

#include "common/error.h"

/* Whether exec should make one: stdin and stdout are terminals. */
bool exectty_wanted(void);
/* Open the pty and start copying; *slave is the fd to hand the daemon. */
int exectty_start(int *slave, alps_error **err);
/* The caller's window size to the pty (from a SIGWINCH handler). */
void exectty_winch(void);
/* Close our copy of the command's side, copy what is left, put the
 * caller's terminal back. */
void exectty_stop(void);

#endif
