/* fresh.h: is a cached tag still what its registry serves?  Shared by a
 * pull of a cached tag (re-checked unless --no-refresh) and alps outdated.
 * Calls block (store, network): never on the event loop. */
#ifndef ALPS_DAEMON_IMAGE_FRESH_H
#define ALPS_DAEMON_IMAGE_FRESH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

struct registry_session;
struct store;

/* The image the store has for a tag.  Owned strings. */
struct image_fresh {
	char *digest;           /* manifest digest */
	char *platform;         /* "linux/amd64" */
	uint32_t layers;
	uint64_t size;          /* compressed bytes of its layers */
	bool damaged;           /* a layer alps verify found damaged: pull it again */
};

/* 1 with *f filled when the store has tag reference (canonical) for an
 * image uid may see; 0 when not; -1 on a store error. */
int fresh_cached(struct store *st, const char *reference, int64_t uid, struct image_fresh *f,
		 alps_error **err);

/* *now (caller frees): the manifest digest the session's registry serves
 * for the tag, on f's platform (a HEAD of the manifest where it says
 * enough).  Registry errors name the registry. */
int fresh_current(struct registry_session *s, const struct image_fresh *f, char **now,
		  alps_error **err);

void fresh_clear(struct image_fresh *f);

#endif
