/* log.h: the one logging module.
 *
 * Levels as syslog's.  Output goes to stderr (under systemd, JOURNAL_STREAM
 * set, each line carries a "<N>" priority prefix that journald
 * understands), to syslog or to a file: see log_set_target().  Strings that come from outside (paths,
 * references, registry messages) are passed through log_escape() or the %S
 * helpers so that a hostile peer cannot forge log lines. */
#ifndef ALPS_LOG_H
#define ALPS_LOG_H

#include "util.h"

enum log_level {
	LOG_LVL_ERROR = 3,
	LOG_LVL_WARN = 4,
	LOG_LVL_NOTICE = 5,
	LOG_LVL_INFO = 6,
	LOG_LVL_DEBUG = 7,
};

void log_init(const char *ident, enum log_level level, bool journal);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* "error", "warn", "notice", "info", "debug" -> level; -1 if unknown. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) ALPS_PRINTF(2, 3);
ALPS_NORETURN void log_fatal(const char *fmt, ...) ALPS_PRINTF(1, 2);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                          \
	do {                                                    \
		if (log_get_level() >= LOG_LVL_DEBUG)           \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__);    \
	} while (0)

/* Where lines go: "stderr" (the default), "syslog" (LOG_DAEMON),
 * "file:/path" (appended; reopened by each call, so a reload follows
 * logrotate), or "auto": syslog when detached, else stderr.  -1 with errno
 * when the file cannot be opened (or EINVAL for a bad spec); the target
 * is unchanged then. */
int log_set_target(const char *spec, bool detached);
/* 0 when spec is a target log_set_target() takes, else -1. */
int log_target_check(const char *spec);
/* Messages written at level since start (any target). */
uint64_t log_count(enum log_level level);

/* A structured line "event=NAME key=value ...": the variable arguments
 * are pairs of strings (key, value) ended by a NULL key; a NULL value
 * leaves its pair out.  Values are log_escape()d and quoted when they need
 * it.  Numbers: LOG_U64(n), LOG_SECONDS(ns) (valid for the call). */
void log_event(enum log_level level, const char *event, ...);
const char *log_u64(char buf[24], uint64_t v);
const char *log_seconds(char buf[24], uint64_t ns);
#define LOG_U64(v) log_u64((char[24]){ 0 }, (uint64_t)(v))
#define LOG_SECONDS(ns) log_seconds((char[24]){ 0 }, (uint64_t)(ns))

/* Escape control characters, backslashes and non-ASCII bytes as \xNN and
 * cut at max bytes of input (0: no cut).  Caller frees. */
char *log_escape(const char *s, size_t max);

#endif
