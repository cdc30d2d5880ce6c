/* progress.h: alps pull's progress view (see progress.c). */
#ifndef ALPS_CLIENT_PROGRESS_H
#define ALPS_CLIENT_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"
#include "proto/alps.pb-c.h"

struct progress {
	bool enabled;           /* false: --quiet or --json */
	bool redraw;            /* a terminal that takes escape sequences */
	size_t drawn;           /* lines the last redraw wrote */
	char **states;          /* plain output: last state per layer (owned) */
	size_t nstates;
};

void progress_init(struct progress *p, bool enabled);
void progress_update(struct progress *p, const Alps__PullProgress *pp);
/* Erase the block (a terminal) and free; before the summary or error. */
void progress_finish(struct progress *p);

#endif
