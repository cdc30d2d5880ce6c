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

/* The figures status and metrics show: the store's, read on a worker
 * (one read at a time, shared), and the loop's, read when answering; then
 * done(arg, g, note) on the loop, within half a second: when the store is
 * slower (locked), with the last figures read and a note saying how old
 * they are.  note is NULL when the figures are fresh.  done may run
 * before ops_gauges() returns (the daemon stopping). */
struct daemon;
struct metrics_gauges;
typedef void (*ops_gauges_fn)(void *arg, const struct metrics_gauges *g, const char *note);
void ops_gauges(struct daemon *d, ops_gauges_fn done, void *arg);
/* At stop, after the pool has drained. */
void ops_gauges_free(void);

/* A job id alps accepts: [A-Za-z0-9_.+-], not starting with '.' or '-',
 * at most STORE_JOB_ID_MAX bytes (op_job.c). */
bool job_id_valid(const char *s);

#endif
