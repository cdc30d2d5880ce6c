/* work.h: the daemon's worker pool, thread budget and snapshots.
 *
 * One pool of daemon.workers threads (default: the online CPUs), owned by
 * the daemon, with a FIFO queue, runs the slow, privileged or blocking
 * parts of requests (NSS lookups, building a namespace, unmounting) and the
 * layer conversions of pulls, so that the loop keeps serving everyone else
 * and the CPU work of all requests together stays bounded.
 *
 * The rule that keeps the pool from deadlocking: a task never waits for a
 * task that is still queued (with every thread waiting so, the queued one
 * would never start).  It may wait for a running task, a child process or
 * an I/O thread.  Threads that mostly wait on the network (downloads, the
 * coordinator of a pull) are not pool tasks.
 *
 * Compressor threads that the squashfs writer starts for a layer come out
 * of one budget of the same size, shared by every conversion: a layer gets
 * what it asks for or what is left, at least one (libsquashfs always
 * starts one); with none left it waits for a running conversion to give
 * its threads back, which the rule allows: a conversion that holds them
 * waits only for its own download thread. */
#ifndef ALPS_WORK_H
#define ALPS_WORK_H

#include <stddef.h>

#include "common/error.h"

struct daemon;
struct event_base;
struct config;
struct topology;
struct work_pool;
struct thread_budget;

typedef void (*work_fn)(void *arg);

/* The pool of size threads (and one for requests' steps), started;
 * completions run on base's loop (made after evthread_use_pthreads()).
 * NULL with err if no thread can be had. */
struct work_pool *work_pool_new(struct event_base *base, unsigned size, alps_error **err);
/* Run fn(arg) on the pool and then done(arg) on the loop's thread.  Loop
 * thread only.  Fails once the pool is stopping. */
int work_submit(struct daemon *d, work_fn fn, work_fn done, void *arg, alps_error **err);
/* Run fn(arg), a long CPU-heavy task (a layer conversion), on the pool,
 * with no completion on the loop: the caller waits for it its own way.
 * Any thread but a pool thread (see the rule).  Such tasks run after the
 * queued steps of requests, at most the pool's size at once: the pool has
 * one thread more, for requests' steps only, so that a prepare never
 * waits behind a pull.  Once the pool is stopping fn runs at once on the
 * calling thread. */
void work_pool_run(struct work_pool *p, work_fn fn, void *arg);
/* At stop: no new work; wait for what is queued and running, then run
 * the done() of each on the calling (loop) thread and end the threads. */
void work_drain(struct daemon *d);
void work_pool_free(struct work_pool *p);
unsigned work_pool_size(const struct work_pool *p);

/* The compressor budget of the pool's size.  take returns how many of
 * want it got, at least one (waiting for one while none is left); give
 * returns them. */
struct thread_budget *work_pool_budget(struct work_pool *p);
unsigned thread_budget_take(struct thread_budget *b, unsigned want);
void thread_budget_give(struct thread_budget *b, unsigned n);

/* What a piece of work reads of the daemon's settings, taken when it
 * starts (on the loop thread) and dropped when it ends (any thread): a
 * reload swaps d->cfg and d->topology and never changes one in place, so
 * work on other threads reads these, never the daemon's pointers. */
struct snapshot {
	struct config *cfg;             /* a reference */
	struct topology *topology;      /* a reference, or NULL (none loaded) */
};

void snapshot_take(const struct daemon *d, struct snapshot *s);
void snapshot_drop(struct snapshot *s);

#endif
