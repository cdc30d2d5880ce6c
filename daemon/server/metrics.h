/* metrics.h: the daemon's counters and histograms, for `alps metrics` and
 * the scrape listener (Prometheus text exposition format 0.0.4).
 *
 * Every counter is an atomic, updated with relaxed order from any thread
 * (the loop, pool workers, pull threads) without a lock: a scrape reads
 * each one on its own, so a sum may lag its buckets by an event, which the
 * format allows.  What the store knows (sizes, hits, evictions, jobs) is
 * read from it on a worker at scrape time (struct metrics_gauges), not
 * counted here: it survives restarts and cannot drift from the store. */
#ifndef ALPS_METRICS_H
#define ALPS_METRICS_H

#include <stdbool.h>
#include <stdint.h>

enum metrics_hist {
	METRICS_PREPARE,        /* a prepare request, received to answered */
	METRICS_EXEC,           /* an exec request, received to the pid sent */
	METRICS_NHIST,
};

/* Values read from the store and the loop at scrape time. */
struct metrics_gauges {
	uint64_t store_bytes, fs_size, fs_free;
	uint64_t images, layers, jobs;
	uint64_t pulls_in_flight;
	int64_t layer_hits, layer_misses, evictions;
	uint64_t uptime_ms;
	bool reload_failed;
};

/* A request ended: op is the handler's name ("unknown" for none), code
 * its alps_code. */
void metrics_request(const char *op, int code);
/* A pull (shared by all its waiters) ended. */
void metrics_pull(bool ok);
/* The calling thread starts converting a layer / has committed one:
 * fetched compressed bytes in, converted squashfs bytes out. */
void metrics_conversion_begin(void);
void metrics_conversion_end(uint64_t fetched, uint64_t converted);
/* Observe ns nanoseconds in histogram h. */
void metrics_observe(enum metrics_hist h, uint64_t ns);

/* The whole exposition text (caller frees). */
char *metrics_render(const struct metrics_gauges *g);

#endif
