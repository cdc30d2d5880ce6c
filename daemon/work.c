/* work.c: see work.h. */
#include <config.h>

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>

#include "common/util.h"
#include "daemon/daemon.h"
#include "daemon/work.h"

struct work {
	struct work *next;
	work_fn fn, done;
	void *arg;
	pthread_t thread;
	struct event *ev;       /* activated by the thread when fn returns */
};

/* Loop thread only. */
static struct work *works;
static size_t nworks;

static void work_unlink(struct work *w)
{
	for (struct work **pp = &works; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			nworks--;
			return;
		}
	}
}

static void work_finish(struct work *w)
{
	pthread_join(w->thread, NULL);
	work_unlink(w);
	event_free(w->ev);
	w->done(w->arg);
	free(w);
}

static void on_work_done(evutil_socket_t fd, short what, void *arg)
{
	work_finish(arg);
}

static void *work_main(void *arg)
{
	struct work *w = arg;
	w->fn(w->arg);
	/* Thread-safe: the base was made after evthread_use_pthreads(). */
	event_active(w->ev, EV_TIMEOUT, 0);
	return NULL;
}

int work_submit(struct daemon *d, work_fn fn, work_fn done, void *arg, alps_error **err)
{
	struct work *w = xzalloc(sizeof(*w));
	w->fn = fn;
	w->done = done;
	w->arg = arg;
	w->ev = event_new(d->base, -1, 0, on_work_done, w);
	int rc = pthread_create(&w->thread, NULL, work_main, w);
	if (rc != 0) {
		event_free(w->ev);
		free(w);
		return alps_fail_errnum(err, rc, "cannot start a worker thread");
	}
	w->next = works;
	works = w;
	nworks++;
	return 0;
}

void work_drain(struct daemon *d)
{
	(void)d;
	while (works) {
		struct work *w = works;
		/* The thread may have activated its event already; finishing
		 * here instead is the same, and event_free() drops it. */
		work_finish(w);
	}
}

size_t work_running(void)
{
	return nworks;
}
