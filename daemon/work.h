/* work.h: blocking work off the event loop.
 *
 * work_submit() runs fn(arg) on a thread of its own and then done(arg) on
 * the loop's thread.  For the slow, privileged or blocking parts of a
 * request (building a namespace, NSS lookups, unmounting) so that the loop
 * keeps serving everyone else meanwhile.  At stop, work_drain() waits for
 * what is running (their done() still runs). */
#ifndef ALPS_WORK_H
#define ALPS_WORK_H

#include "common/error.h"

struct daemon;

typedef void (*work_fn)(void *arg);

int work_submit(struct daemon *d, work_fn fn, work_fn done, void *arg, alps_error **err);
/* Wait for every submitted work item and run its done() (at stop). */
void work_drain(struct daemon *d);
size_t work_running(void);

#endif
