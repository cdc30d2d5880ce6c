/* log.c: see log.h. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_ident = "alps";
/* Atomic: a reload sets it on the loop while every thread logs. */
static _Atomic enum log_level log_level = LOG_LVL_INFO;
static bool log_journal;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
/* Where lines go (log_lock guards both); file_fd is ours when >= 0. */
static enum { TO_STDERR, TO_SYSLOG, TO_FILE } log_to = TO_STDERR;
static int file_fd = -1;
/* Messages written per level, for the metrics. */
static atomic_uint_fast64_t log_counts[LOG_LVL_DEBUG + 1];

static const char *level_names[] = {
	[LOG_LVL_ERROR] = "error", [LOG_LVL_WARN] = "warn",
	[LOG_LVL_NOTICE] = "notice", [LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug",
};

void log_init(const char *ident, enum log_level level, bool journal)
{
	log_ident = ident;
	log_level = level;
	log_journal = journal;
}

void log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level log_get_level(void)
{
	return log_level;
}

int log_level_parse(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(level_names); i++)
		if (level_names[i] && strcmp(level_names[i], name) == 0)
			return (int)i;
	if (strcmp(name, "warning") == 0)
		return LOG_LVL_WARN;
	return -1;
}

const char *log_level_name(enum log_level level)
{
	if ((size_t)level < ARRAY_SIZE(level_names) && level_names[level])
		return level_names[level];
	return "?";
}

/* One line: stamp, ident, pid, level, message. */
static void log_format_line(int fd, enum log_level level, const char *msg)
{
	struct timespec ts;
	struct tm tm;
	char stamp[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One write per line: lines of several processes appending to one
	 * file never interleave. */
	dprintf(fd, "%s.%03ld %s[%d] %s: %s\n", stamp, ts.tv_nsec / 1000000L, log_ident,
		(int)getpid(), log_level_name(level), msg);
}

static void log_write(enum log_level level, const char *msg)
{
	int saved = errno;
	if ((size_t)level < ARRAY_SIZE(log_counts))
		atomic_fetch_add_explicit(&log_counts[level], 1, memory_order_relaxed);
	pthread_mutex_lock(&log_lock);
	if (log_to == TO_SYSLOG) {
		syslog((int)level, "%s", msg);         /* our levels are syslog's */
	} else if (log_to == TO_FILE) {
		log_format_line(file_fd, level, msg);
	} else if (log_journal) {
		fprintf(stderr, "<%d>%s\n", (int)level, msg);
		fflush(stderr);
	} else {
		fflush(stderr);
		log_format_line(STDERR_FILENO, level, msg);
	}
	pthread_mutex_unlock(&log_lock);
	errno = saved;
}

uint64_t log_count(enum log_level level)
{
	if ((size_t)level >= ARRAY_SIZE(log_counts))
		return 0;
	return atomic_load_explicit(&log_counts[level], memory_order_relaxed);
}

int log_target_check(const char *spec)
{
	if (strcmp(spec, "stderr") == 0 || strcmp(spec, "syslog") == 0 ||
	    strcmp(spec, "auto") == 0)
		return 0;
	return strncmp(spec, "file:/", 6) == 0 ? 0 : -1;
}

int log_set_target(const char *spec, bool detached)
{
	if (log_target_check(spec) < 0) {
		errno = EINVAL;
		return -1;
	}
	int fd = -1;
	if (strncmp(spec, "file:", 5) == 0) {
		fd = open(spec + 5, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
			  0640);
		if (fd < 0)
			return -1;
	}
	bool to_syslog = strcmp(spec, "syslog") == 0 || (strcmp(spec, "auto") == 0 && detached);
	pthread_mutex_lock(&log_lock);
	if (file_fd >= 0)
		close(file_fd);
	file_fd = fd;
	if (to_syslog && log_to != TO_SYSLOG)
		openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	else if (!to_syslog && log_to == TO_SYSLOG)
		closelog();
	log_to = fd >= 0 ? TO_FILE : to_syslog ? TO_SYSLOG : TO_STDERR;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (level > log_level)
		return;
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	/* Messages are built by us, but may embed untrusted text that was not
	 * escaped by mistake: a newline must never start a forged line. */
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	log_write(level, msg);
}

void log_fatal(const char *fmt, ...)
{
	/* On the stack: exit() does not run cleanup attributes. */
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_write(LOG_LVL_ERROR, msg);
	exit(1);
}

char *log_escape(const char *s, size_t max)
{
	if (!s)
		return xstrdup("(null)");
	size_t n = strlen(s);
	bool cut = max && n > max;
	if (cut)
		n = max;
	char *out = xmalloc(n * 4 + 4);
	char *o = out;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\\') {
			*o++ = '\\';
			*o++ = '\\';
		} else if (c < 0x20 || c >= 0x7f) {
			static const char hex[] = "0123456789abcdef";
			*o++ = '\\';
			*o++ = 'x';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		} else {
			*o++ = (char)c;
		}
	}
	if (cut) {
		memcpy(o, "...", 3);
		o += 3;
	}
	*o = '\0';
	return out;
}

/* ---- key=value events ---- */

/* A value as it goes in a line: log_escape()d, and quoted (with \"
 * for a quote) when empty or when it holds a space, a quote or '='. */
static void event_value(FILE *f, const char *v)
{
	_cleanup_free_ char *esc = log_escape(v, 1024);
	if (*esc && !strpbrk(esc, " \"=")) {
		fputs(esc, f);
		return;
	}
	fputc('"', f);
	for (const char *p = esc; *p; p++) {
		if (*p == '"')
			fputc('\\', f);
		fputc(*p, f);
	}
	fputc('"', f);
}

void log_event(enum log_level level, const char *event, ...)
{
	if (level > log_level)
		return;
	char *line = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&line, &len);
	if (!f)
		abort();
	fprintf(f, "event=%s", event);
	va_list ap;
	va_start(ap, event);
	for (const char *key = va_arg(ap, const char *); key; key = va_arg(ap, const char *)) {
		const char *value = va_arg(ap, const char *);
		if (!value)
			continue;
		fprintf(f, " %s=", key);
		event_value(f, value);
	}
	va_end(ap);
	fclose(f);
	log_write(level, line);
	free(line);
}

const char *log_u64(char buf[24], uint64_t v)
{
	snprintf(buf, 24, "%llu", (unsigned long long)v);
	return buf;
}

const char *log_seconds(char buf[24], uint64_t ns)
{
	snprintf(buf, 24, "%.3f", (double)ns / 1e9);
	return buf;
}
