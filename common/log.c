/* log.c: see log.h. */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_ident = "alps";
/* Atomic: a reload sets it on the loop while every thread logs. */
static _Atomic enum log_level log_level = LOG_LVL_INFO;
static bool log_journal;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

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

static void log_write(enum log_level level, const char *msg)
{
	int saved = errno;
	pthread_mutex_lock(&log_lock);
	if (log_journal) {
		fprintf(stderr, "<%d>%s\n", (int)level, msg);
	} else {
		struct timespec ts;
		struct tm tm;
		char stamp[32];
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ld %s[%d] %s: %s\n", stamp, ts.tv_nsec / 1000000L,
			log_ident, (int)getpid(), log_level_name(level), msg);
	}
	fflush(stderr);
	pthread_mutex_unlock(&log_lock);
	errno = saved;
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
