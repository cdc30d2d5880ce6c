/* work.c: see work.h. */
#include <config.h>

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/node/topology.h"
#include "daemon/server/work.h"

struct task {
	struct task *next;
	work_fn fn, done;               /* done NULL: no completion on the loop */
	void *arg;
	bool heavy;                     /* work_pool_run(): a layer conversion */
};

/* A FIFO of tasks. */
struct queue {
	struct task *head, **tail;
};

struct thread_budget {
	pthread_mutex_t lock;
	pthread_cond_t returned;
	unsigned free;                  /* under lock */
};

struct work_pool {
	pthread_t *threads;
	unsigned nthreads;              /* started: size + 1 */
	unsigned size;                  /* as configured */
	struct event *ev_done;          /* activated when tasks move to done */
	struct thread_budget budget;

	pthread_mutex_t lock;           /* guards what follows */
	pthread_cond_t more;            /* a task may start, or stopping */
	pthread_cond_t idle;            /* a task ended */
	struct queue light, heavy;      /* queued: requests' steps; conversions */
	struct task *done;              /* ended, their done() still to run */
	size_t queued, running;
	unsigned heavy_running, heavy_max;
	bool stopping;
};

/* ---- the threads ---- */

static struct task *queue_pop(struct queue *q)
{
	struct task *t = q->head;
	if (t) {
		q->head = t->next;
		if (!q->head)
			q->tail = &q->head;
	}
	return t;
}

/* The next task a thread may start: requests' steps first; a conversion
 * only while fewer than heavy_max (the pool's size) run: the one thread
 * more is for requests' steps.  NULL once stopping and nothing is left. */
static struct task *pool_next(struct work_pool *p)
{
	for (;;) {
		struct task *t = queue_pop(&p->light);
		if (!t && p->heavy_running < p->heavy_max && (t = queue_pop(&p->heavy)))
			p->heavy_running++;
		if (t) {
			p->queued--;
			p->running++;
			if (p->stopping && p->queued == 0)
				pthread_cond_broadcast(&p->more);       /* the rest end */
			return t;
		}
		if (p->stopping && p->queued == 0)
			return NULL;
		pthread_cond_wait(&p->more, &p->lock);
	}
}

static void *pool_main(void *arg)
{
	struct work_pool *p = arg;
	pthread_mutex_lock(&p->lock);
	/* Stopping still empties the queue: each task's owner waits for it. */
	for (struct task *t; (t = pool_next(p));) {
		pthread_mutex_unlock(&p->lock);
		t->fn(t->arg);
		pthread_mutex_lock(&p->lock);
		p->running--;
		if (t->heavy) {
			p->heavy_running--;
			pthread_cond_signal(&p->more);  /* a conversion may start */
		}
		bool tell_loop = t->done != NULL;
		if (tell_loop) {
			t->next = p->done;
			p->done = t;
		} else {
			free(t);
		}
		pthread_cond_broadcast(&p->idle);
		if (tell_loop) {
			/* Outside our lock, which the loop takes inside its
			 * own; thread-safe (evthread_use_pthreads()). */
			pthread_mutex_unlock(&p->lock);
			event_active(p->ev_done, EV_TIMEOUT, 0);
			pthread_mutex_lock(&p->lock);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* ---- on the loop ---- */

static void run_done(struct work_pool *p)
{
	pthread_mutex_lock(&p->lock);
	struct task *t = p->done;
	p->done = NULL;
	pthread_mutex_unlock(&p->lock);
	/* Oldest first: the list was built by pushing. */
	struct task *rev = NULL;
	while (t) {
		struct task *next = t->next;
		t->next = rev;
		rev = t;
		t = next;
	}
	while (rev) {
		struct task *next = rev->next;
		rev->done(rev->arg);
		free(rev);
		rev = next;
	}
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	run_done(arg);
}

/* size threads for any task and one more for requests' steps only:
 * those mostly wait (NSS, a namespace helper), and with it a prepare never
 * waits behind layer conversions that fill the pool for minutes. */
struct work_pool *work_pool_new(struct event_base *base, unsigned size, alps_error **err)
{
	struct work_pool *p = xzalloc(sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->more, NULL);
	pthread_cond_init(&p->idle, NULL);
	pthread_mutex_init(&p->budget.lock, NULL);
	pthread_cond_init(&p->budget.returned, NULL);
	p->size = size;
	p->budget.free = size;
	p->heavy_max = size;
	p->light.tail = &p->light.head;
	p->heavy.tail = &p->heavy.head;
	p->ev_done = event_new(base, -1, 0, on_done, p);
	p->threads = xcalloc(size + 1, sizeof(*p->threads));
	for (; p->nthreads < size + 1; p->nthreads++) {
		int rc = pthread_create(&p->threads[p->nthreads], NULL, pool_main, p);
		if (rc == 0)
			continue;
		if (p->nthreads > 0) {
			log_warn("worker pool: %u of %u threads (%s)", p->nthreads, size + 1,
				 strerror(rc));
			break;
		}
		work_pool_free(p);
		alps_fail_errnum(err, rc, "cannot start a worker thread");
		return NULL;
	}
	return p;
}

static void pool_push(struct work_pool *p, struct task *t)
{
	struct queue *q = t->heavy ? &p->heavy : &p->light;
	*q->tail = t;
	q->tail = &t->next;
	p->queued++;
	/* Every thread: the one woken must be one that may take it. */
	pthread_cond_broadcast(&p->more);
}

int work_submit(struct daemon *d, work_fn fn, work_fn done, void *arg, alps_error **err)
{
	struct work_pool *p = d->pool;
	pthread_mutex_lock(&p->lock);
	bool stopping = p->stopping;
	if (!stopping) {
		struct task *t = xzalloc(sizeof(*t));
		*t = (struct task){ .fn = fn, .done = done, .arg = arg };
		pool_push(p, t);
	}
	pthread_mutex_unlock(&p->lock);
	if (stopping)
		return alps_fail(err, ALPS_E_UNAVAILABLE, "alpsd is stopping");
	return 0;
}

void work_pool_run(struct work_pool *p, work_fn fn, void *arg)
{
	pthread_mutex_lock(&p->lock);
	bool stopping = p->stopping;
	if (!stopping) {
		struct task *t = xzalloc(sizeof(*t));
		*t = (struct task){ .fn = fn, .arg = arg, .heavy = true };
		pool_push(p, t);
	}
	pthread_mutex_unlock(&p->lock);
	if (stopping)
		fn(arg);
}

void work_drain(struct daemon *d)
{
	struct work_pool *p = d->pool;
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->more);
	while (p->queued || p->running)
		pthread_cond_wait(&p->idle, &p->lock);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	p->nthreads = 0;
	run_done(p);
}

void work_pool_free(struct work_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->more);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	/* Work submitted after work_drain() ran inline: nothing is left. */
	event_free(p->ev_done);
	free(p->threads);
	pthread_cond_destroy(&p->budget.returned);
	pthread_mutex_destroy(&p->budget.lock);
	pthread_cond_destroy(&p->idle);
	pthread_cond_destroy(&p->more);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

unsigned work_pool_size(const struct work_pool *p)
{
	return p->size;
}

/* ---- the compressor budget ---- */

struct thread_budget *work_pool_budget(struct work_pool *p)
{
	return &p->budget;
}

unsigned thread_budget_take(struct thread_budget *b, unsigned want)
{
	pthread_mutex_lock(&b->lock);
	while (want > 0 && b->free == 0)
		pthread_cond_wait(&b->returned, &b->lock);
	unsigned got = want < b->free ? want : b->free;
	b->free -= got;
	pthread_mutex_unlock(&b->lock);
	return got;
}

void thread_budget_give(struct thread_budget *b, unsigned n)
{
	pthread_mutex_lock(&b->lock);
	b->free += n;
	pthread_cond_broadcast(&b->returned);
	pthread_mutex_unlock(&b->lock);
}

/* ---- snapshots ---- */

void snapshot_take(const struct daemon *d, struct snapshot *s)
{
	s->cfg = config_ref(d->cfg);
	s->topology = topology_ref(d->topology);
}

void snapshot_drop(struct snapshot *s)
{
	config_unref(s->cfg);
	topology_unref(s->topology);
	s->cfg = NULL;
	s->topology = NULL;
}
