/*
 * util.h: what both daemons share: OpenBSD-style logging and option parsing.
 * Private to lockstep's daemons (not installed).
 */
#ifndef UTIL_H
#define UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* log.c */
enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
/*
 * Start logging to stderr as name (the program name, used as prefix); when
 * stderr is journald's stream (JOURNAL_STREAM), lines carry their priority.
 */
void log_init(const char *name, enum log_level level);
/* Set the level from a word (error, warn, info, debug); -1 if unknown. */
int log_set_level_name(const char *word);
enum log_level log_get_level(void);
/* What starts a line at level: the journal's priority ("<4>") or "" (static text); for lines written by hand. */
const char *log_prefix(enum log_level level);
/* The word of a level, as log_set_level_name() takes it (static text). */
const char *log_level_name(enum log_level level);
/* Route libevent's own messages into this log. */
void log_route_libevent(void);
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_vlog(enum log_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/*
 * Log text at level as one line, however long (the functions above cut a
 * message at 2 KB); its control bytes become '?' in place.
 */
void log_line(enum log_level level, char *text);
/*
 * A message logged at most once per interval: log_limit_due() says whether
 * it is due now (first time, or interval_s seconds after the last), and
 * counts in *skipped the calls suppressed since the last one it let through.
 * log_limit_burst_due() lets burst lines through per interval_s window
 * instead of one.
 */
struct log_limit {
	double ll_last;               /* monotonic seconds its window began, 0 never */
	unsigned int ll_lines;        /* lines let through in that window */
	unsigned long ll_skipped;     /* suppressed since the last line */
};
int log_limit_due(struct log_limit *ll, double interval_s, unsigned long *skipped);
int log_limit_burst_due(struct log_limit *ll, double interval_s, unsigned int burst, unsigned long *skipped);
/* Log an error (and go on: the caller decides how to exit). */
void log_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log an error with strerror(errno) appended, and exit 1. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Log an error and exit 1. */
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* jmem.c */
/*
 * Route jansson's allocations through jmem.c (first thing in main), so that
 * a failed one is known: jansson does not always say so.
 */
void jmem_init(void);
/* Forget, on this thread, that an allocation of jansson's failed. */
void jmem_clear(void);
/* Has one failed on this thread since jmem_clear()? */
int jmem_failed(void);
/*
 * json_dumps, or NULL out of memory; where json_dumps would return a
 * document missing what it had no memory for, too. The caller frees it.
 */
struct json_t;
char *jmem_dumps(const struct json_t *json, size_t flags);

/* parse.c */
/*
 * Parse a duration such as "250ms", "1s", "1.5s", "2m" or "0" into
 * milliseconds. Returns 0, or -1 with a reason in *why (static text).
 */
int parse_duration_ms(const char *s, uint64_t *ms, const char **why);
/* Parse a decimal integer in [min, max]; 0 or -1 with *why set. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out, const char **why);
/* The length of the valid UTF-8 sequence of 2 to 4 bytes at p, or 0 if there is none. */
size_t parse_utf8_len(const unsigned char *p);
/*
 * Copy s to out (len bytes, the NUL included; nothing if 0) as valid UTF-8:
 * each byte that is not part of a valid sequence becomes U+FFFD.
 */
char *parse_utf8_fix(const char *s, char *out, size_t len);

#endif /* UTIL_H */
