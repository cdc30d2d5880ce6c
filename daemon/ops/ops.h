/* ops.h: what the request handlers (daemon/ops/) share among themselves. */
#ifndef ALPS_OPS_H
#define ALPS_OPS_H

#include <stdbool.h>

#include "common/error.h"

struct pull_status;
struct request;

/* Send a pull's progress to rq (a PullProgress response), with each
 * layer's state when layers is set (alps pull), else the totals only
 * (a prepare that pulls). */
void ops_send_pull_progress(struct request *rq, const struct pull_status *st, bool layers);

/* The figures status and metrics show: the store's, read on a worker,
 * and the loop's, read now; then done(arg, g, store_error) on the loop
 * (store_error: why the store's are missing, or NULL).  -1 with err when
 * the work cannot be submitted (stopping). */
struct daemon;
struct metrics_gauges;
typedef void (*ops_gauges_fn)(void *arg, const struct metrics_gauges *g, const char *store_error);
int ops_gauges(struct daemon *d, ops_gauges_fn done, void *arg, alps_error **err);

#endif
