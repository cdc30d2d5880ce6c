/* test_metrics.c: the counters' exposition text, the key=value event
 * lines (quoting, escaping: no value forges a line or a key) and the
 * metrics.listen address check (loopback only). */
#include <config.h>

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/server/metrics.h"
#include "daemon/server/metrics_http.h"

static void test_render_counts_and_buckets(void **state)
{
	(void)state;
	metrics_request("prepare", 0);
	metrics_request("prepare", 0);
	metrics_request("prepare", 2);
	metrics_request("exec", 99);            /* unknown code: internal */
	metrics_observe(METRICS_PREPARE, 3000000);              /* 3 ms */
	metrics_observe(METRICS_PREPARE, 2000000000ull);        /* 2 s */
	metrics_pull(true);
	metrics_conversion_begin();
	metrics_conversion_end(100, 40);
	struct metrics_gauges g = { .images = 3, .layer_hits = 5, .layer_misses = -1 };
	char *t = metrics_render(&g);
	assert_non_null(strstr(t, "alps_requests_total{op=\"prepare\",status=\"ok\"} 2\n"));
	assert_non_null(strstr(t, "alps_requests_total{op=\"prepare\",status=\"not_found\"} 1\n"));
	assert_non_null(strstr(t, "alps_requests_total{op=\"exec\",status=\"internal\"} 1\n"));
	assert_non_null(strstr(t, "alps_errors_total{op=\"prepare\"} 1\n"));
	assert_non_null(strstr(t, "alps_prepare_duration_seconds_bucket{le=\"0.005\"} 1\n"));
	assert_non_null(strstr(t, "alps_prepare_duration_seconds_bucket{le=\"1\"} 1\n"));
	assert_non_null(strstr(t, "alps_prepare_duration_seconds_bucket{le=\"2.5\"} 2\n"));
	assert_non_null(strstr(t, "alps_prepare_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
	assert_non_null(strstr(t, "alps_prepare_duration_seconds_sum 2.003000\n"));
	assert_non_null(strstr(t, "alps_prepare_duration_seconds_count 2\n"));
	assert_non_null(strstr(t, "alps_pulls_total{result=\"ok\"} 1\n"));
	assert_non_null(strstr(t, "alps_fetched_bytes_total 100\n"));
	assert_non_null(strstr(t, "alps_converted_bytes_total 40\n"));
	assert_non_null(strstr(t, "# TYPE alps_images gauge\nalps_images 3\n"));
	assert_non_null(strstr(t, "alps_cache_hits_total 5\n"));
	/* A counter the store could not give is left out, never shown as 0. */
	assert_null(strstr(t, "alps_cache_misses_total"));
	free(t);
}

static char *event_line(void (*emit)(void))
{
	char path[] = "/tmp/alps-test-log-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	_cleanup_free_ char *spec = xasprintf("file:%s", path);
	assert_int_equal(log_set_target(spec, false), 0);
	emit();
	assert_int_equal(log_set_target("stderr", false), 0);
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	close(fd);
	unlink(path);
	char *ev = strstr(buf, "event=");
	assert_non_null(ev);
	return xstrdup(ev);
}

static void emit_hostile(void)
{
	log_event(LOG_LVL_NOTICE, "pull", "ref", "reg/app:1", "msg", "two words",
		  "forge", "x\nevent=prepare job=1", "quote", "a\"b", "skipped", NULL,
		  "empty", "", "bytes", LOG_U64(1234), "seconds", LOG_SECONDS(1500000000ull), NULL);
}

static void test_event_quoting(void **state)
{
	(void)state;
	_cleanup_free_ char *line = event_line(emit_hostile);
	assert_string_equal(line, "event=pull ref=reg/app:1 msg=\"two words\" "
			    "forge=\"x\\x0aevent=prepare job=1\" quote=\"a\\\"b\" empty=\"\" "
			    "bytes=1234 seconds=1.500\n");
}

static void test_listen_check(void **state)
{
	(void)state;
	const char *good[] = { "", "127.0.0.1:9464", "127.1.2.3:1", "localhost:9464",
			       "[::1]:9464", "unix:/run/alps/metrics.sock" };
	const char *bad[] = { "0.0.0.0:9464", "192.168.1.10:80", "[::]:9464", "[fe80::1]:1",
			      "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:9x",
			      ":9464", "unix:relative", "host.example:80", "[::1]" };
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		alps_error *err = NULL;
		assert_int_equal(metrics_listen_check(good[i], &err), 0);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		alps_error *err = NULL;
		assert_int_equal(metrics_listen_check(bad[i], &err), -1);
		assert_non_null(strstr(err->msg, "metrics.listen: '"));
		alps_error_free(err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render_counts_and_buckets),
		cmocka_unit_test(test_event_quoting),
		cmocka_unit_test(test_listen_check),
	};
	return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
