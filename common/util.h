/* util.h: allocation that aborts, scoped cleanup, small string helpers.
 *
 * Allocation failure aborts the process (xmalloc and friends), so NULL from
 * an allocator is never an error path.  Cleanup attributes free what a scope
 * owns; steal_pointer()/steal_fd() hand ownership over explicitly. */
#ifndef ALPS_UTIL_H
#define ALPS_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <dirent.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALPS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define ALPS_NORETURN __attribute__((noreturn))
#define ALPS_UNUSED __attribute__((unused))

void *xmalloc(size_t size);
void *xzalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);
/* Formatted allocation; caller frees. */
char *xasprintf(const char *fmt, ...) ALPS_PRINTF(1, 2);
char *xvasprintf(const char *fmt, va_list ap) ALPS_PRINTF(1, 0);

/* snprintf that reports truncation: 0 when it fit, -1 otherwise. */
int xsnprintf(char *buf, size_t size, const char *fmt, ...) ALPS_PRINTF(3, 4);

/* Cleanup helpers for __attribute__((cleanup)). */
void cleanup_freep(void *p);
void cleanup_closep(int *fd);
void cleanup_fclosep(FILE **f);
void cleanup_closedirp(DIR **d);

#define _cleanup_free_ __attribute__((cleanup(cleanup_freep)))
#define _cleanup_close_ __attribute__((cleanup(cleanup_closep)))
#define _cleanup_fclose_ __attribute__((cleanup(cleanup_fclosep)))
#define _cleanup_closedir_ __attribute__((cleanup(cleanup_closedirp)))

static inline void *steal_pointer_impl(void *pp)
{
	void **p = pp;
	void *v = *p;
	*p = NULL;
	return v;
}
#define steal_pointer(pp) steal_pointer_impl(pp)

static inline int steal_fd(int *fd)
{
	int v = *fd;
	*fd = -1;
	return v;
}

/* close() that keeps errno, for cleanup paths. */
void close_keep_errno(int fd);

/* Monotonic and wall clock in milliseconds / nanoseconds. */
uint64_t now_monotonic_ms(void);
uint64_t now_monotonic_ns(void);
uint64_t now_realtime_ms(void);

bool str_has_prefix(const char *s, const char *prefix);
bool str_has_suffix(const char *s, const char *suffix);

/* Parse a size with an optional K/M/G/T suffix (powers of 1024). */
int parse_size(const char *s, uint64_t *out);
/* Format bytes as "1.5 GiB"; writes into buf, returns buf. */
char *format_size(uint64_t bytes, char *buf, size_t size);

/* Write all of buf / read exactly len, retrying on EINTR; -1 with errno. */
int write_all(int fd, const void *buf, size_t len);
/* mkdir -p with the given mode for created components; -1 with errno. */
int mkdir_p(const char *path, unsigned mode);

#endif
