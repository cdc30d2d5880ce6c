/* log.h: the one logging module.
 *
 * Levels as syslog's.  Output goes to stderr; under systemd (JOURNAL_STREAM
 * set, or --log-target=journal) each line carries a "<N>" priority prefix
 * that journald understands.  Strings that come from outside (paths,
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

/* Escape control characters, backslashes and non-ASCII bytes as \xNN and
 * cut at max bytes of input (0: no cut).  Caller frees. */
char *log_escape(const char *s, size_t max);

#endif
