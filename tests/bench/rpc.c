/* rpc.c: K concurrent clients sending Status to alpsd for a fixed time;
 * reports requests/s and latency percentiles.
 *   tests/bench/rpc SOCKET [CLIENTS [SECONDS]] [--json] */
#include <config.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "proto/wire.h"

struct worker {
	pthread_t thread;
	const char *socket;
	uint64_t deadline_ns;
	uint64_t *lat_ns;       /* owned */
	size_t n, cap;
	int failed;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct wire_client c;
	alps_error *err = NULL;
	if (wire_connect(&c, w->socket, "bench", &err) < 0) {
		fprintf(stderr, "connect: %s\n", err->msg);
		alps_error_free(err);
		wire_close(&c);
		w->failed = 1;
		return NULL;
	}
	Alps__StatusRequest sr = ALPS__STATUS_REQUEST__INIT;
	Alps__Request req = ALPS__REQUEST__INIT;
	req.op_case = ALPS__REQUEST__OP_STATUS;
	req.status = &sr;
	while (now_monotonic_ns() < w->deadline_ns) {
		uint64_t t0 = now_monotonic_ns();
		Alps__Response *resp = wire_call(&c, &req, NULL, 0, NULL, NULL, 10000, &err);
		if (!resp || resp->status != ALPS__STATUS__OK) {
			w->failed = 1;
			if (resp)
				alps__response__free_unpacked(resp, NULL);
			break;
		}
		alps__response__free_unpacked(resp, NULL);
		if (w->n == w->cap) {
			w->cap = w->cap ? w->cap * 2 : 4096;
			w->lat_ns = xreallocarray(w->lat_ns, w->cap, sizeof(uint64_t));
		}
		w->lat_ns[w->n++] = now_monotonic_ns() - t0;
	}
	alps_error_free(err);
	wire_close(&c);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s SOCKET [CLIENTS [SECONDS]] [--json]\n", argv[0]);
		return 2;
	}
	int clients = argc > 2 ? atoi(argv[2]) : 64;
	int seconds = argc > 3 ? atoi(argv[3]) : 10;
	bool json = argc > 4 && strcmp(argv[4], "--json") == 0;
	if (clients < 1 || clients > 4096 || seconds < 1 || seconds > 3600) {
		fprintf(stderr, "clients 1..4096, seconds 1..3600\n");
		return 2;
	}
	struct worker *w = xcalloc((size_t)clients, sizeof(*w));
	uint64_t start = now_monotonic_ns();
	for (int i = 0; i < clients; i++) {
		w[i].socket = argv[1];
		w[i].deadline_ns = start + (uint64_t)seconds * 1000000000ull;
		pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
	}
	size_t total = 0;
	int failed = 0;
	for (int i = 0; i < clients; i++) {
		pthread_join(w[i].thread, NULL);
		total += w[i].n;
		failed |= w[i].failed;
	}
	double elapsed = (double)(now_monotonic_ns() - start) / 1e9;
	uint64_t *all = xcalloc(total ? total : 1, sizeof(uint64_t));
	size_t k = 0;
	for (int i = 0; i < clients; i++) {
		memcpy(all + k, w[i].lat_ns, w[i].n * sizeof(uint64_t));
		k += w[i].n;
		free(w[i].lat_ns);
	}
	qsort(all, total, sizeof(uint64_t), cmp_u64);
	double p50 = total ? (double)all[total / 2] / 1e3 : 0;
	double p99 = total ? (double)all[(size_t)((double)total * 0.99)] / 1e3 : 0;
	double rps = (double)total / elapsed;
	if (json)
		printf("{\"clients\": %d, \"seconds\": %.2f, \"requests\": %zu, \"rps\": %.0f, "
		       "\"p50_us\": %.1f, \"p99_us\": %.1f, \"errors\": %d}\n",
		       clients, elapsed, total, rps, p50, p99, failed);
	else
		printf("%d clients, %.1f s: %zu requests, %.0f req/s, p50 %.1f us, p99 %.1f us%s\n",
		       clients, elapsed, total, rps, p50, p99, failed ? " (with errors)" : "");
	free(all);
	free(w);
	return failed ? 1 : 0;
}
