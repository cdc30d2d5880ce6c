/* test_work.c: the worker pool, its compressor budget, and snapshots. */
#include <config.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/util.h"
#include "daemon/settings.h"
#include "daemon/daemon.h"
#include "daemon/server/work.h"

struct counters {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	int ran, done, heavy_now, heavy_most;
	bool release;           /* heavy tasks may end */
	pthread_t loop_thread;
	struct daemon *d;
};

static struct daemon *daemon_new(unsigned size)
{
	struct daemon *d = xzalloc(sizeof(*d));
	d->base = event_base_new();
	alps_error *err = NULL;
	d->pool = work_pool_new(d->base, size, &err);
	assert_non_null(d->pool);
	return d;
}

static void daemon_free(struct daemon *d)
{
	work_pool_free(d->pool);
	event_base_free(d->base);
	free(d);
}

static void count_run(void *arg)
{
	struct counters *c = arg;
	pthread_mutex_lock(&c->lock);
	c->ran++;
	pthread_mutex_unlock(&c->lock);
}

static void count_done(void *arg)
{
	struct counters *c = arg;
	/* done() runs on the loop's thread, after fn. */
	assert_true(pthread_equal(pthread_self(), c->loop_thread));
	pthread_mutex_lock(&c->lock);
	int ran = c->ran;
	pthread_mutex_unlock(&c->lock);
	assert_true(c->done < ran);
	if (++c->done == 50)
		event_base_loopbreak(c->d->base);
}

static void test_submit_and_done_on_loop(void **state)
{
	struct daemon *d = daemon_new(3);
	struct counters c = { .loop_thread = pthread_self(), .d = d };
	pthread_mutex_init(&c.lock, NULL);
	for (int i = 0; i < 50; i++)
		assert_int_equal(work_submit(d, count_run, count_done, &c, NULL), 0);
	event_base_loop(d->base, EVLOOP_NO_EXIT_ON_EMPTY);
	assert_int_equal(c.done, 50);
	work_drain(d);
	/* Stopped: new work is refused, never lost. */
	alps_error *err = NULL;
	assert_int_equal(work_submit(d, count_run, count_done, &c, &err), -1);
	assert_int_equal(err->code, ALPS_E_UNAVAILABLE);
	alps_error_free(err);
	daemon_free(d);
	pthread_mutex_destroy(&c.lock);
}

static void heavy(void *arg)
{
	struct counters *c = arg;
	pthread_mutex_lock(&c->lock);
	if (++c->heavy_now > c->heavy_most)
		c->heavy_most = c->heavy_now;
	pthread_cond_broadcast(&c->changed);
	while (!c->release)
		pthread_cond_wait(&c->changed, &c->lock);
	c->heavy_now--;
	c->ran++;
	pthread_mutex_unlock(&c->lock);
}

/* A request's step that runs only while two conversions fill the pool. */
static void light_beside_heavy(void *arg)
{
	struct counters *c = arg;
	pthread_mutex_lock(&c->lock);
	while (c->heavy_now < 2)
		pthread_cond_wait(&c->changed, &c->lock);
	c->ran++;
	pthread_mutex_unlock(&c->lock);
}

static void light_done(void *arg)
{
	struct counters *c = arg;
	/* A request's step ran while conversions filled the pool: let them go. */
	pthread_mutex_lock(&c->lock);
	c->release = true;
	pthread_cond_broadcast(&c->changed);
	pthread_mutex_unlock(&c->lock);
	event_base_loopbreak(c->d->base);
}

static void test_heavy_bounded_and_light_not_behind(void **state)
{
	struct daemon *d = daemon_new(2);
	struct counters c = { .loop_thread = pthread_self(), .d = d };
	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.changed, NULL);
	for (int i = 0; i < 6; i++)
		work_pool_run(d->pool, heavy, &c);
	assert_int_equal(work_submit(d, light_beside_heavy, light_done, &c, NULL), 0);
	event_base_loop(d->base, EVLOOP_NO_EXIT_ON_EMPTY);   /* ends when the light one ran */
	work_drain(d);
	assert_int_equal(c.ran, 7);
	assert_int_equal(c.heavy_most, 2);
	/* After stop, heavy work runs on the caller's thread. */
	work_pool_run(d->pool, heavy, &c);
	assert_int_equal(c.ran, 8);
	daemon_free(d);
	pthread_cond_destroy(&c.changed);
	pthread_mutex_destroy(&c.lock);
}

struct taker {
	struct thread_budget *b;
	unsigned got;
};

static void *take_one(void *arg)
{
	struct taker *t = arg;
	t->got = thread_budget_take(t->b, 3);
	return NULL;
}

static void test_budget(void **state)
{
	struct daemon *d = daemon_new(4);
	struct thread_budget *b = work_pool_budget(d->pool);
	assert_int_equal(thread_budget_take(b, 3), 3);
	assert_int_equal(thread_budget_take(b, 3), 1);  /* what is left */
	struct taker t = { .b = b };
	pthread_t th;
	pthread_create(&th, NULL, take_one, &t);
	usleep(50000);
	assert_int_equal(t.got, 0);                     /* waits: none left */
	thread_budget_give(b, 2);
	pthread_join(th, NULL);
	assert_int_equal(t.got, 2);
	thread_budget_give(b, 3);
	thread_budget_give(b, 1);
	assert_int_equal(thread_budget_take(b, 8), 4);  /* all back */
	thread_budget_give(b, 4);
	work_drain(d);
	daemon_free(d);
}

static void test_snapshot_outlives_swap(void **state)
{
	struct daemon d = { .cfg = config_new_defaults() };
	alps_error *err = NULL;
	assert_int_equal(config_set(d.cfg, "registry.default", "one.example", &err), 0);
	struct snapshot s;
	snapshot_take(&d, &s);
	/* A reload: a new config, the daemon's reference dropped. */
	struct config *old = d.cfg;
	d.cfg = config_new_defaults();
	config_unref(old);
	assert_string_equal(s.cfg->default_registry, "one.example");
	assert_null(s.topology);
	snapshot_drop(&s);
	assert_null(s.cfg);
	config_unref(d.cfg);
}

int main(void)
{
	evthread_use_pthreads();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_submit_and_done_on_loop),
		cmocka_unit_test(test_heavy_bounded_and_light_not_behind),
		cmocka_unit_test(test_budget),
		cmocka_unit_test(test_snapshot_outlives_swap),
	};
	return cmocka_run_group_tests_name("work", tests, NULL, NULL);
}
