/* hostlist.h: Slurm's host list expressions ("nid[001-004,010],gpu07").
 *
 * The grammar Slurm writes into SLURM_JOB_NODELIST: names separated by
 * commas at the top level; each name may hold bracket groups of
 * comma-separated numbers and ranges ("[001-004,010]"), the width of a
 * range's lower bound kept as zero padding; several groups in one name
 * expand as their product, left to right.  Used for MASTER_ADDR (the
 * first host) and per-node logic; the input comes from the job's
 * environment, so it is checked and bounded. */
#ifndef ALPS_HOSTLIST_H
#define ALPS_HOSTLIST_H

#include <stddef.h>

#include "common/error.h"

/* Most host names one expression may expand to. */
#define HOSTLIST_MAX_HOSTS 65536
/* Longest host name (HOST_NAME_MAX on Linux is 64; DNS allows 253). */
#define HOSTLIST_NAME_MAX 253

/* Expand expr into at most max names (0: HOSTLIST_MAX_HOSTS); more is an
 * error unless stop_at_max, which keeps the first max.  *hosts is a
 * NULL-terminated array the caller frees with hostlist_free(). */
int hostlist_expand(const char *expr, size_t max, int stop_at_max, char ***hosts, size_t *n,
		    alps_error **err);
/* The first host of expr.  Caller frees. */
char *hostlist_first(const char *expr, alps_error **err);
/* The number of hosts expr names (expanding nothing). */
int hostlist_count(const char *expr, size_t *n, alps_error **err);
void hostlist_free(char **hosts);

#endif
