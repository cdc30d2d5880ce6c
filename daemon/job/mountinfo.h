/* mountinfo.h: /proc/<pid>/mountinfo, parsed.
 *
 * Used to verify what a mount really is, to find the namespaces and layer
 * mounts that exist after a restart, and by the tests to find what they
 * left behind.  Paths come unescaped (the kernel writes space, tab, newline
 * and backslash as \ooo). */
#ifndef ALPS_DAEMON_JOB_MOUNTINFO_H
#define ALPS_DAEMON_JOB_MOUNTINFO_H

#include <stddef.h>

#include "common/error.h"

struct mountinfo_entry {
	int id;
	int parent;
	unsigned major, minor;
	char *root;            /* owned; the mounted subtree of the file system */
	char *mountpoint;      /* owned; relative to the reader's root */
	char *options;         /* owned; per-mount options ("ro,nosuid,...") */
	char *optional;        /* owned; propagation tags ("shared:1 master:2"), maybe "" */
	char *fstype;          /* owned */
	char *source;          /* owned */
	char *super_options;   /* owned */
};

struct mountinfo {
	struct mountinfo_entry *entries;   /* owned; in the kernel's order */
	size_t count;
};

/* Read and parse a mountinfo file (NULL: /proc/self/mountinfo). */
int mountinfo_read(const char *path, struct mountinfo *out, alps_error **err);
/* Parse mountinfo text (for the unit tests). */
int mountinfo_parse(const char *text, struct mountinfo *out, alps_error **err);
void mountinfo_free(struct mountinfo *mi);

/* The topmost mount at exactly mountpoint, or NULL. */
const struct mountinfo_entry *mountinfo_find(const struct mountinfo *mi, const char *mountpoint);
/* Whether a comma-separated option list holds opt ("nosuid" in "rw,nosuid"). */
int mountinfo_has_option(const char *options, const char *opt);
/* Whether path is dir itself or below it (both absolute, normalized). */
int path_is_under(const char *path, const char *dir);

#endif
