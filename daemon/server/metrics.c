/* metrics.c: see metrics.h. */
#include <config.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/server/metrics.h"

typedef atomic_uint_fast64_t counter;

#define MAX_OPS 48              /* handler names; more share "other" */
#define NCODES 18               /* enum alps_code, ALPS_OK to ALPS_E_INTEGRITY */

/* The label of each alps_code: the proto enum's name, lower case. */
static const char *const code_labels[NCODES] = {
	"ok", "invalid_argument", "not_found", "permission_denied", "already_exists",
	"unsupported", "not_implemented", "internal", "io_error", "unavailable",
	"protocol_error", "conflict", "busy", "limit_exceeded", "cancelled",
	"version_mismatch", "timeout", "integrity_error",
};

/* Handler names claim a row once, lock-free: a slot's name is set by the
 * first thread that wins its compare-and-swap, and never changes. */
static _Atomic(const char *) op_names[MAX_OPS];
static counter requests[MAX_OPS][NCODES];

static counter pulls_ok, pulls_failed;
static counter bytes_fetched, bytes_converted, layers_converted, conversion_ns;

/* Upper bounds, seconds; a last +Inf bucket is implicit. */
static const double bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
				 30, 60 };
#define NBUCKETS (ARRAY_SIZE(bounds) + 1)

struct hist {
	const char *name, *help;
	counter buckets[NBUCKETS];      /* not cumulative: summed when rendered */
	counter sum_ns, count;
};

static struct hist hists[METRICS_NHIST] = {
	[METRICS_PREPARE] = { "alps_prepare_duration_seconds",
			      "Prepare requests, from receipt to the answer (any result)" },
	[METRICS_EXEC] = { "alps_exec_duration_seconds",
			   "Exec requests, from receipt to the command's start (or failure)" },
};

static _Thread_local uint64_t conversion_start;

static void bump(counter *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t get(counter *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* The row of op, claimed if new; the last row takes every name past it. */
static size_t op_row(const char *op)
{
	for (size_t i = 0; i < MAX_OPS - 1; i++) {
		const char *have = atomic_load_explicit(&op_names[i], memory_order_acquire);
		if (!have) {
			const char *expect = NULL;
			if (atomic_compare_exchange_strong(&op_names[i], &expect, op))
				return i;
			have = expect;
		}
		if (strcmp(have, op) == 0)
			return i;
	}
	const char *expect = NULL;
	atomic_compare_exchange_strong(&op_names[MAX_OPS - 1], &expect, "other");
	return MAX_OPS - 1;
}

void metrics_request(const char *op, int code)
{
	/* op is a handler's static name or a literal: kept by pointer. */
	size_t c = code >= 0 && code < NCODES ? (size_t)code : ALPS_E_INTERNAL;
	bump(&requests[op_row(op)][c], 1);
}

void metrics_pull(bool ok)
{
	bump(ok ? &pulls_ok : &pulls_failed, 1);
}

void metrics_conversion_begin(void)
{
	conversion_start = now_monotonic_ns();
}

void metrics_conversion_end(uint64_t fetched, uint64_t converted)
{
	bump(&bytes_fetched, fetched);
	bump(&bytes_converted, converted);
	bump(&layers_converted, 1);
	if (conversion_start)
		bump(&conversion_ns, now_monotonic_ns() - conversion_start);
	conversion_start = 0;
}

void metrics_observe(enum metrics_hist h, uint64_t ns)
{
	struct hist *x = &hists[h];
	double s = (double)ns / 1e9;
	size_t b = 0;
	while (b < ARRAY_SIZE(bounds) && s > bounds[b])
		b++;
	bump(&x->buckets[b], 1);
	bump(&x->sum_ns, ns);
	bump(&x->count, 1);
}

/* ---- the exposition text ---- */

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
	family(f, name, type, help);
	fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

static void render_requests(FILE *f)
{
	family(f, "alps_requests_total", "counter", "Requests answered, by operation and status");
	for (size_t i = 0; i < MAX_OPS; i++) {
		const char *op = atomic_load_explicit(&op_names[i], memory_order_acquire);
		for (size_t c = 0; op && c < NCODES; c++)
			if (get(&requests[i][c]))
				fprintf(f, "alps_requests_total{op=\"%s\",status=\"%s\"} %llu\n", op,
					code_labels[c], (unsigned long long)get(&requests[i][c]));
	}
	family(f, "alps_errors_total", "counter", "Requests answered with an error, by operation");
	for (size_t i = 0; i < MAX_OPS; i++) {
		const char *op = atomic_load_explicit(&op_names[i], memory_order_acquire);
		uint64_t n = 0;
		for (size_t c = 1; op && c < NCODES; c++)
			n += get(&requests[i][c]);
		if (op)
			fprintf(f, "alps_errors_total{op=\"%s\"} %llu\n", op, (unsigned long long)n);
	}
	family(f, "alps_log_messages_total", "counter", "Log messages written, by level");
	for (int l = LOG_LVL_ERROR; l <= LOG_LVL_WARN; l++)
		fprintf(f, "alps_log_messages_total{level=\"%s\"} %llu\n",
			log_level_name((enum log_level)l),
			(unsigned long long)log_count((enum log_level)l));
}

static void render_pulls(FILE *f)
{
	family(f, "alps_pulls_total", "counter", "Image pulls ended (one per pull, however many "
	       "requests shared it), by result");
	fprintf(f, "alps_pulls_total{result=\"ok\"} %llu\n", (unsigned long long)get(&pulls_ok));
	fprintf(f, "alps_pulls_total{result=\"error\"} %llu\n",
		(unsigned long long)get(&pulls_failed));
	scalar(f, "alps_fetched_bytes_total", "counter",
	       "Compressed layer bytes downloaded and converted", get(&bytes_fetched));
	scalar(f, "alps_converted_bytes_total", "counter",
	       "Squashfs bytes written by layer conversions", get(&bytes_converted));
	scalar(f, "alps_layers_converted_total", "counter", "Layers downloaded and converted",
	       get(&layers_converted));
	family(f, "alps_conversion_seconds_total", "counter",
	       "Seconds spent downloading and converting layers (summed over parallel layers)");
	fprintf(f, "alps_conversion_seconds_total %.6f\n", (double)get(&conversion_ns) / 1e9);
}

static void store_counter(FILE *f, const char *name, const char *help, int64_t v)
{
	if (v >= 0)     /* -1: the store could not say */
		scalar(f, name, "counter", help, (uint64_t)v);
}

static void render_store(FILE *f, const struct metrics_gauges *g)
{
	store_counter(f, "alps_cache_hits_total", "Layers a pull found in the store", g->layer_hits);
	store_counter(f, "alps_cache_misses_total", "Layers a pull had to fetch", g->layer_misses);
	store_counter(f, "alps_evictions_total", "Images evicted by the cache policy",
		      g->evictions);
	scalar(f, "alps_jobs_prepared", "gauge", "Jobs prepared on the node", g->jobs);
	scalar(f, "alps_pulls_in_flight", "gauge", "Pulls running now", g->pulls_in_flight);
	scalar(f, "alps_store_bytes", "gauge", "Squashfs bytes of every layer in the store",
	       g->store_bytes);
	scalar(f, "alps_store_fs_size_bytes", "gauge", "Size of the store's file system",
	       g->fs_size);
	scalar(f, "alps_store_fs_free_bytes", "gauge",
	       "Bytes free for alpsd on the store's file system", g->fs_free);
	scalar(f, "alps_images", "gauge", "Images in the store", g->images);
	scalar(f, "alps_layers", "gauge", "Layers in the store", g->layers);
	scalar(f, "alps_reload_failed", "gauge",
	       "1 when the last configuration reload failed (see alps status)", g->reload_failed);
	family(f, "alps_uptime_seconds", "gauge", "Seconds since alpsd started");
	fprintf(f, "alps_uptime_seconds %.3f\n", (double)g->uptime_ms / 1000);
}

static void render_hist(FILE *f, struct hist *x)
{
	family(f, x->name, "histogram", x->help);
	uint64_t cum = 0;
	for (size_t b = 0; b < NBUCKETS; b++) {
		cum += get(&x->buckets[b]);
		if (b < ARRAY_SIZE(bounds))
			fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", x->name, bounds[b],
				(unsigned long long)cum);
		else
			fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", x->name, (unsigned long long)cum);
	}
	/* The count is the +Inf bucket's, read once: they must agree. */
	fprintf(f, "%s_sum %.6f\n%s_count %llu\n", x->name, (double)get(&x->sum_ns) / 1e9,
		x->name, (unsigned long long)cum);
}

char *metrics_render(const struct metrics_gauges *g)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		abort();        /* out of memory, as xmalloc */
	render_requests(f);
	render_pulls(f);
	render_store(f, g);
	for (size_t h = 0; h < METRICS_NHIST; h++)
		render_hist(f, &hists[h]);
	fclose(f);
	return text;
}
