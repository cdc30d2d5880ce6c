/* etcfiles.h: the job user in the container's /etc/passwd and /etc/group.
 *
 * The image's files are kept; the lines of the user and of the user's
 * groups, as the host knows them, replace the image's lines with the same
 * name or the same id, so that `id` and `ls -l` inside agree with the host.
 * The lines are computed before the helper forks (NSS is not safe after
 * fork in a threaded process) and carried in the plan as data. */
#ifndef ALPS_DAEMON_JOB_ETCFILES_H
#define ALPS_DAEMON_JOB_ETCFILES_H

#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"

/* "name:x:uid:gid:gecos:home:shell\n" from the host's passwd database;
 * user_name (if not NULL) overrides the name.  A uid the host does not know
 * needs user_name and gets home "/" and shell "/bin/sh".  Caller frees. */
char *etc_passwd_line(uid_t uid, gid_t gid, const char *user_name, alps_error **err);
/* "name:x:gid:user\n" for gid and each of groups the host can name
 * (unnamed ones are skipped; they still work by number).  Caller frees. */
char *etc_group_lines(gid_t gid, const gid_t *groups, size_t ngroups, const char *user_name);
/* The image's text (len bytes, may lack a final newline) minus its lines
 * whose first (name) or third (id) field equals one of add's lines', then
 * add.  Caller frees. */
char *etc_merge(const char *image, size_t len, const char *add);

#endif
