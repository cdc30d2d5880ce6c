/* cache.h: the store's collection timer (op_cache.c), armed by main.c;
 * the policy it applies is daemon/store/policy.h. */
#ifndef ALPS_DAEMON_CACHE_H
#define ALPS_DAEMON_CACHE_H

struct daemon;

/* Arm the collection timer / drop it (loop thread). */
void cache_start(struct daemon *d);
void cache_stop(void);

#endif
