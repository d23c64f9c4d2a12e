/*
 * log.c: OpenBSD-style logging to stderr (journald picks it up under systemd).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "util.h"

static const char *log_name = "lockstep";
static enum log_level log_level = LOG_LEVEL_INFO;
static const char *const log_words[] = { "error", "warn", "info", "debug" };

/* Start logging to stderr under name at level. */
void
log_init(const char *name, enum log_level level)
{
	log_name = name;
	log_level = level;
	setvbuf(stderr, NULL, _IOLBF, 0);
}

/* Set the level from its name; -1 if the name is unknown. */
int
log_set_level_name(const char *word)
{
	size_t i;

	for (i = 0; i < sizeof log_words / sizeof log_words[0]; i++) {
		if (strcasecmp(word, log_words[i]) == 0) {
			log_level = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

/* The current level. */
enum log_level
log_get_level(void)
{
	return log_level;
}

/* Write one line: "name: message" with an optional strerror suffix. */
static void
log_emit(enum log_level level, const char *suffix, const char *fmt, va_list ap)
{
	char buf[2048];

	if (level > log_level)
		return;
	vsnprintf(buf, sizeof buf, fmt, ap);
	if (suffix != NULL)
		fprintf(stderr, "%s: %s: %s\n", log_name, buf, suffix);
	else
		fprintf(stderr, "%s: %s\n", log_name, buf);
}

/* Log at level. */
void
log_vlog(enum log_level level, const char *fmt, va_list ap)
{
	log_emit(level, NULL, fmt, ap);
}

/* Log a warning with strerror(errno) appended. */
void
log_warn(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_WARN, strerror(saved), fmt, ap);
	va_end(ap);
	errno = saved;
}

/* Log a warning. */
void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_WARN, NULL, fmt, ap);
	va_end(ap);
}

/* Log at info level. */
void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_INFO, NULL, fmt, ap);
	va_end(ap);
}

/* Log at debug level. */
void
log_debug(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_DEBUG, NULL, fmt, ap);
	va_end(ap);
}

/* Log an error with strerror(errno) and exit 1. */
void
fatal(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, strerror(saved), fmt, ap);
	va_end(ap);
	exit(1);
}

/* Log an error and exit 1. */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

/* libevent's log callback: its warnings and errors become ours. */
static void
log_libevent_cb(int severity, const char *msg)
{
	switch (severity) {
	case EVENT_LOG_DEBUG:
		log_debug("libevent: %s", msg);
		break;
	case EVENT_LOG_MSG:
		log_info("libevent: %s", msg);
		break;
	default:
		log_warnx("libevent: %s", msg);
		break;
	}
}

/* Route libevent's messages into this log. */
void
log_route_libevent(void)
{
	event_set_log_callback(log_libevent_cb);
}
