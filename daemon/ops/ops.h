/* ops.h: what the request handlers (daemon/ops/) share among themselves. */
#ifndef ALPS_OPS_H
#define ALPS_OPS_H

#include <stdbool.h>

struct pull_status;
struct request;

/* Send a pull's progress to rq (a PullProgress response), with each
 * layer's state when layers is set (alps pull), else the totals only
 * (a prepare that pulls). */
void ops_send_pull_progress(struct request *rq, const struct pull_status *st, bool layers);

#endif
