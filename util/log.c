/*
 * log.c: OpenBSD-style logging to stderr (journald picks it up under systemd).
 *
 * When stderr is the journal's stream (JOURNAL_STREAM names its device and
 * inode), each line starts with its syslog priority ("<3>", see
 * sd-daemon(3)), so that "journalctl -p warning" finds the warnings; anywhere
 * else the lines are plain "name: message". Every message is one line: its
 * control bytes are shown as '?'.
 */
#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "util.h"

static const char *log_name = "lockstep";
static enum log_level log_level = LOG_LEVEL_INFO;
static int log_journal; /* stderr is journald's stream: prefix priorities */
static const char *const log_words[] = { "error", "warn", "info", "debug" };
static const char *const log_prio[] = { SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG };

/* Whether stderr is the stream JOURNAL_STREAM ("DEV:INO") names. */
static int
log_stderr_is_journal(void)
{
	const char *env;
	unsigned long long dev, ino;
	struct stat st;
	int n;

	if ((env = getenv("JOURNAL_STREAM")) == NULL)
		return 0;
	if (sscanf(env, "%llu:%llu%n", &dev, &ino, &n) != 2 || env[n] != '\0')
		return 0;
	if (fstat(STDERR_FILENO, &st) != 0)
		return 0;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

/* Start logging to stderr under name at level. */
void
log_init(const char *name, enum log_level level)
{
	log_name = name;
	log_level = level;
	log_journal = log_stderr_is_journal();
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

/* The name of a level (error, warn, info, debug). */
const char *
log_level_name(enum log_level level)
{
	return log_words[level];
}

/* What starts a line at level: its journal priority ("<4>"), or "" off the journal. */
const char *
log_prefix(enum log_level level)
{
	return log_journal ? log_prio[level] : "";
}

/* The current level. */
enum log_level
log_get_level(void)
{
	return log_level;
}

/*
 * Make a message one line of printable text in place: each control byte
 * (a newline, CR, escape, bell, ...) becomes '?', so that a value quoted from
 * a request or a peer can neither start a line of its own nor drive the
 * operator's terminal. Callers escape what they quote as well; this is the
 * last guard.
 */
static void
log_clean(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			*s = '?';
}

/* Write the line "name: text" (with the priority first for the journal). */
static void
log_put(enum log_level level, const char *text, const char *suffix)
{
	const char *prio = log_prefix(level);

	if (suffix != NULL)
		fprintf(stderr, "%s%s: %s: %s\n", prio, log_name, text, suffix);
	else
		fprintf(stderr, "%s%s: %s\n", prio, log_name, text);
}

/*
 * Write one line: "name: message" with an optional strerror suffix, and for
 * the journal the priority before it.
 */
static void log_emit(enum log_level, const char *, const char *, va_list)
    __attribute__((format(printf, 3, 0)));

static void
log_emit(enum log_level level, const char *suffix, const char *fmt, va_list ap)
{
	char buf[2048];

	if (level > log_level)
		return;
	vsnprintf(buf, sizeof buf, fmt, ap);
	log_clean(buf);
	log_put(level, buf, suffix);
}

/* Write text, of any length, as one line at level; see util.h. */
void
log_line(enum log_level level, char *text)
{
	if (level > log_level)
		return;
	log_clean(text);
	log_put(level, text, NULL);
}

/* Whether a rate-limited line is due; see util.h. */
int
log_limit_burst_due(struct log_limit *ll, double interval_s, unsigned int burst, unsigned long *skipped)
{
	struct timespec ts;
	double now;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (ll->ll_last == 0 || now - ll->ll_last >= interval_s) {
		ll->ll_last = now;
		ll->ll_lines = 0;
	}
	if (ll->ll_lines >= burst) {
		ll->ll_skipped++;
		return 0;
	}
	ll->ll_lines++;
	*skipped = ll->ll_skipped;
	ll->ll_skipped = 0;
	return 1;
}

/* Whether a line limited to one per interval is due; see util.h. */
int
log_limit_due(struct log_limit *ll, double interval_s, unsigned long *skipped)
{
	return log_limit_burst_due(ll, interval_s, 1, skipped);
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

/* Log an error. */
void
log_errx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, NULL, fmt, ap);
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
