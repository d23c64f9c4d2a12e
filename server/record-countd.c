/*
 * record-countd.c: main, options, signals, systemd integration.
 */
#include "config.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "server.h"
#include "store.h"
#include "util.h"

#define EXIT_USAGE 2

struct config cfg = {
	.listen = "127.0.0.1:8080",
	.latency_ms = 100,
	.jitter_ms = 0,
	.max_latency_ms = 0,
	.db = NULL,
	.durability_full = 1,
	.max_connections = 16384,
	.connection_timeout_ms = 60000,
	.access_log = 0,
};
struct event_base *ev_base;
struct store *db;
int shutting_down;

static struct event *main_watchdog_ev;
static struct event *main_status_ev;
static struct event *main_store_ev;
static const char *main_where;           /* where it listens, for logs and STATUS= */
static char *main_where_buf;
static char *main_db_default;

/* Wall-clock seconds. */
double
now_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Monotonic milliseconds. */
uint64_t
now_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Monotonic microseconds. */
uint64_t
now_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Print usage to f. */
static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: record-countd [options]\n"
	    "Record counter values over HTTP with artificial latency, durably and idempotently.\n"
	    "\n"
	    "Options (each also settable in the environment variable shown; options win).\n"
	    "Durations: 250ms, 1s, 1.5s, 2m (ms, s or m; a bare 0; at most 86400s).\n"
	    "  -l, --listen ADDR:PORT      listen address (default 127.0.0.1:8080; [::1]:8080 for IPv6);\n"
	    "                              ignored when systemd passes sockets   RECORD_COUNTD_LISTEN\n"
	    "  -L, --latency DURATION      delay before each /record-count answer, from its request line\n"
	    "                              (default 100ms; e.g. 0, 250ms, 1s, 1.5s)  RECORD_COUNTD_LATENCY\n"
	    "  -j, --jitter DURATION       uniform +/- jitter, at most the latency (default 0)\n"
	    "                              RECORD_COUNTD_JITTER\n"
	    "  -M, --max-latency DURATION  cap on latency plus jitter: 0 (none, the default) or at least\n"
	    "                              the latency  RECORD_COUNTD_MAX_LATENCY\n"
	    "  -d, --db PATH               SQLite database (default $STATE_DIRECTORY/records.db when\n"
	    "                              STATE_DIRECTORY is set, else ./record-countd.db)  RECORD_COUNTD_DB\n"
	    "  -D, --durability full|normal  full: a record is answered once it is synced to disk, so it\n"
	    "                              survives power loss; normal: it survives a crash (default full)\n"
	    "                              RECORD_COUNTD_DURABILITY\n"
	    "  -c, --max-connections N     concurrent connections per listening socket, 1..1000000\n"
	    "                              (default 16384)  RECORD_COUNTD_MAX_CONNECTIONS\n"
	    "  -t, --connection-timeout DURATION  close idle connections after this, in whole seconds\n"
	    "                              (default 60s; 0: never)  RECORD_COUNTD_CONNECTION_TIMEOUT\n"
	    "  -a, --access-log            one info line per request (off by default)  RECORD_COUNTD_ACCESS_LOG=1\n"
	    "  -v, --log-level LEVEL       error, warn, info or debug (default info)  RECORD_COUNTD_LOG_LEVEL\n"
	    "  -V, --version               print the version and exit\n"
	    "  -h, --help                  print this help and exit\n"
	    "\n"
	    "Limits (each answered with a JSON error):\n"
	    "  request target (path and query) %d bytes: 414; query parameters %d: 414; all headers\n"
	    "  %d bytes: 431; header fields %d: 431; body %d bytes: 413; a Content-Length that is not\n"
	    "  a number: 400; values per POST %d; client id 1..%d characters of [A-Za-z0-9._:-];\n"
	    "  values 1..9223372036854775807; /records limit 1..%d (default %d). A request's target,\n"
	    "  header lines and 64 bytes per header field and cookie must fit in %d bytes: near that\n"
	    "  431, past it libmicrohttpd answers 414/431 itself (HTML).\n"
	    "\n"
	    "API: GET /record-count?value=N[&client=ID], POST /record-count {\"client\":ID,\"values\":[...]},\n"
	    "GET /records?client=ID&after=SEQ&limit=L, GET /clients/ID, GET /stats[?client=ID],\n"
	    "GET /healthz, GET /metrics.\n"
	    "SIGTERM or SIGINT: stop accepting, close connections with no request in flight (a request body\n"
	    "still arriving gets %d ms), answer every request in flight, exit 0; a second one exits at once.\n",
	    LIMIT_URL, LIMIT_PARAMS, LIMIT_HEADERS, LIMIT_HEADER_FIELDS, LIMIT_BODY, LIMIT_VALUES, LIMIT_CLIENT,
	    LIMIT_RECORDS_PAGE, DEFAULT_RECORDS_PAGE, MHD_MEMORY_LIMIT, SHUTDOWN_UPLOAD_GRACE_MS);
}

/* Report a bad option value and exit with the usage status. */
static void __attribute__((noreturn))
usage_error(const char *what, const char *value, const char *why)
{
	log_errx("%s: \"%s\" %s", what, value, why);
	exit(EXIT_USAGE);
}

/*
 * Every option that takes a setting, with its environment variable, and
 * where the setting in effect came from (for errors that involve it later).
 */
static struct main_opt {
	int ch;
	const char *flag;             /* "--latency" */
	const char *env;              /* "RECORD_COUNTD_LATENCY" */
	int given;                    /* on the command line: the variable is not read */
	const char *what;             /* flag or env, whichever set it; NULL: the default */
	const char *arg;              /* the value as given there */
} main_opts[] = {
	{ 'l', "--listen", "RECORD_COUNTD_LISTEN", 0, NULL, NULL },
	{ 'L', "--latency", "RECORD_COUNTD_LATENCY", 0, NULL, NULL },
	{ 'j', "--jitter", "RECORD_COUNTD_JITTER", 0, NULL, NULL },
	{ 'M', "--max-latency", "RECORD_COUNTD_MAX_LATENCY", 0, NULL, NULL },
	{ 'd', "--db", "RECORD_COUNTD_DB", 0, NULL, NULL },
	{ 'D', "--durability", "RECORD_COUNTD_DURABILITY", 0, NULL, NULL },
	{ 'c', "--max-connections", "RECORD_COUNTD_MAX_CONNECTIONS", 0, NULL, NULL },
	{ 't', "--connection-timeout", "RECORD_COUNTD_CONNECTION_TIMEOUT", 0, NULL, NULL },
	{ 'a', "--access-log", "RECORD_COUNTD_ACCESS_LOG", 0, NULL, NULL },
	{ 'v', "--log-level", "RECORD_COUNTD_LOG_LEVEL", 0, NULL, NULL },
	{ 0, NULL, NULL, 0, NULL, NULL },
};

/* The entry of option ch. */
static struct main_opt *
main_opt_find(int ch)
{
	struct main_opt *o;

	for (o = main_opts; o->ch != 0 && o->ch != ch; o++)
		;
	if (o->ch == 0)
		fatalx("option '%c' is not in the table", ch);
	return o;
}

/* Where option ch's setting came from, for errors: its variable if that set it, else its flag. */
static const char *
main_opt_what(int ch)
{
	struct main_opt *o = main_opt_find(ch);

	return o->what != NULL ? o->what : o->flag;
}

/* Parse a duration option into whole milliseconds; exits on a bad one. */
static void
main_duration(const char *what, const char *arg, uint64_t *ms)
{
	const char *why;

	if (parse_duration_ms(arg, ms, &why) != 0)
		usage_error(what, arg, why);
}

/* Apply one option (from the command line or the environment variable what). */
static void
main_option(int ch, const char *what, const char *arg)
{
	struct main_opt *o = main_opt_find(ch);
	const char *why;
	uint64_t v;

	o->what = what;
	o->arg = arg;
	switch (ch) {
	case 'l':
		cfg.listen = arg;       /* checked by main_listen(), unless systemd passes sockets */
		break;
	case 'L':
		main_duration(what, arg, &cfg.latency_ms);
		break;
	case 'j':
		main_duration(what, arg, &cfg.jitter_ms);
		break;
	case 'M':
		main_duration(what, arg, &cfg.max_latency_ms);
		break;
	case 'd':
		if (arg[0] == '\0')
			usage_error(what, arg, "is not a path");
		cfg.db = arg;
		break;
	case 'D':
		if (strcmp(arg, "full") == 0)
			cfg.durability_full = 1;
		else if (strcmp(arg, "normal") == 0)
			cfg.durability_full = 0;
		else
			usage_error(what, arg, "is not a durability (full or normal)");
		break;
	case 'c':
		if (parse_uint(arg, 1, 1000000, &v, &why) != 0)
			usage_error(what, arg, "is not a number of connections (1..1000000)");
		cfg.max_connections = v;
		break;
	case 't':
		main_duration(what, arg, &cfg.connection_timeout_ms);
		/* libmicrohttpd's timeout is whole seconds: say so rather than round. */
		if (cfg.connection_timeout_ms % 1000 != 0)
			usage_error(what, arg, "is not a whole number of seconds (libmicrohttpd counts whole seconds;"
			    " use 1s or more, or 0 for none)");
		break;
	case 'a':
		if (arg == NULL || strcmp(arg, "1") == 0 || strcmp(arg, "yes") == 0 || strcmp(arg, "true") == 0)
			cfg.access_log = 1;
		else if (strcmp(arg, "0") == 0 || strcmp(arg, "no") == 0 || strcmp(arg, "false") == 0)
			cfg.access_log = 0;
		else
			usage_error(what, arg, "is not a boolean (1 or 0)");
		break;
	case 'v':
		if (log_set_level_name(arg) != 0)
			usage_error(what, arg, "is not a log level (error, warn, info, debug)");
		break;
	}
}

/* Name duration option ch, now ms, in an error: where it was set and how, or that it is the default. */
static const char *
main_opt_name(int ch, uint64_t ms, char *buf, size_t len)
{
	struct main_opt *o = main_opt_find(ch);

	if (o->what == NULL)
		snprintf(buf, len, "%s (default %llums)", o->flag, (unsigned long long)ms);
	else
		snprintf(buf, len, "%s \"%s\"", o->what, o->arg);
	return buf;
}

/* Refuse latency settings that contradict each other, naming both. */
static void
main_check_latency(void)
{
	char a[128], b[128];

	if (cfg.jitter_ms > cfg.latency_ms) {
		log_errx("%s is larger than %s; the jitter must be at most the latency,"
		    " as a delay cannot go below 0", main_opt_name('j', cfg.jitter_ms, a, sizeof a),
		    main_opt_name('L', cfg.latency_ms, b, sizeof b));
		exit(EXIT_USAGE);
	}
	if (cfg.max_latency_ms > 0 && cfg.max_latency_ms < cfg.latency_ms) {
		log_errx("%s is smaller than %s; the cap must be at least the latency"
		    " (or 0 for no cap)", main_opt_name('M', cfg.max_latency_ms, a, sizeof a),
		    main_opt_name('L', cfg.latency_ms, b, sizeof b));
		exit(EXIT_USAGE);
	}
}

static const struct option main_longopts[] = {
	{ "listen", required_argument, NULL, 'l' },
	{ "latency", required_argument, NULL, 'L' },
	{ "jitter", required_argument, NULL, 'j' },
	{ "max-latency", required_argument, NULL, 'M' },
	{ "db", required_argument, NULL, 'd' },
	{ "durability", required_argument, NULL, 'D' },
	{ "max-connections", required_argument, NULL, 'c' },
	{ "connection-timeout", required_argument, NULL, 't' },
	{ "access-log", no_argument, NULL, 'a' },
	{ "log-level", required_argument, NULL, 'v' },
	{ "version", no_argument, NULL, 'V' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Say which option is unknown (arg is the argument getopt stopped at). */
static void
main_unknown_option(const char *arg)
{
	if (optopt != 0 && arg[0] == '-' && arg[1] != '-')
		log_errx("unknown option -%c; see --help for the options", optopt);
	else
		log_errx("unknown option \"%s\"; see --help for the options", arg);
}

/*
 * Read options from the command line, then the environment. --help and
 * --version never read the environment, and a variable whose option is on
 * the command line is not read at all: options win.
 */
static void
main_options(int argc, char **argv)
{
	struct main_opt *o;
	const char *v;
	int ch;

	opterr = 0;	/* getopt's own messages would carry no log priority */
	while ((ch = getopt_long(argc, argv, ":l:L:j:M:d:D:c:t:av:Vh", main_longopts, NULL)) != -1) {
		switch (ch) {
		case 'V':
			printf("record-countd (lockstep) %s\n", PACKAGE_VERSION);
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			log_errx("%s needs a value; see --help", argv[optind - 1]);
			exit(EXIT_USAGE);
		case '?':
			main_unknown_option(argv[optind - 1]);
			exit(EXIT_USAGE);
		default:
			o = main_opt_find(ch);
			o->given = 1;
			main_option(ch, o->flag, optarg);
		}
	}
	if (optind < argc) {
		log_errx("unexpected argument \"%s\"; see --help", argv[optind]);
		exit(EXIT_USAGE);
	}
	for (o = main_opts; o->ch != 0; o++)
		if (!o->given && (v = getenv(o->env)) != NULL && v[0] != '\0')
			main_option(o->ch, o->env, v);
	main_check_latency();
	if (cfg.db == NULL) {
		if ((v = getenv("STATE_DIRECTORY")) != NULL && v[0] != '\0') {
			/* systemd may pass several directories separated by ':'; use the first. */
			size_t n = strcspn(v, ":");
			if (asprintf(&main_db_default, "%.*s/records.db", (int)n, v) < 0)
				fatal("asprintf");
			cfg.db = main_db_default;
		} else
			cfg.db = "./record-countd.db";
	}
}

/* The address fd is bound to, as ADDR:PORT or [v6]:PORT (malloc'd), or NULL. */
static char *
main_bound(int fd)
{
	struct sockaddr_storage ss = { 0 };	/* for clang --analyze: it misses getsockname() filling it */
	socklen_t len = sizeof ss;
	char host[NI_MAXHOST], port[NI_MAXSERV], *out;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
	    getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, port, sizeof port,
	    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return NULL;
	if (asprintf(&out, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port) < 0)
		return NULL;
	return out;
}

/*
 * Open a listening socket on ADDR:PORT ([v6]:PORT); exits with a clear
 * error. With port 0, main_where_buf names the port taken.
 */
static int
main_listen(const char *spec)
{
	struct addrinfo hints, *res;
	char host[256];
	const char *port, *colon, *what, *why;
	size_t hlen;
	uint64_t pnum;
	int fd, one = 1, rc;

	what = main_opt_what('l');
	if (spec[0] == '[') {
		colon = strstr(spec, "]:");
		if (colon == NULL)
			usage_error(what, spec, "is not ADDR:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)");
		hlen = (size_t)(colon - spec - 1);
		port = colon + 2;
		if (hlen >= sizeof host)
			usage_error(what, spec, "has too long a host");
		memcpy(host, spec + 1, hlen);
	} else {
		colon = strrchr(spec, ':');
		if (colon == NULL || strchr(spec, ':') != colon)
			usage_error(what, spec, "is not ADDR:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)");
		hlen = (size_t)(colon - spec);
		port = colon + 1;
		if (hlen >= sizeof host)
			usage_error(what, spec, "has too long a host");
		memcpy(host, spec, hlen);
	}
	host[hlen] = '\0';
	/* Digits only and no wrap-around: 4294967297 is not port 1. */
	if (parse_uint(port, 0, 65535, &pnum, &why) != 0)
		usage_error(what, spec, "has no valid port (0..65535; 0: any free port)");
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(hlen == 0 || strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res);
	if (rc != 0)
		usage_error(what, spec, gai_strerror(rc));
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		fatal("%s %s: socket", what, spec);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, res->ai_addr, res->ai_addrlen) != 0)
		fatal("%s %s: bind", what, spec);
	if (listen(fd, 4096) != 0)
		fatal("%s %s: listen", what, spec);
	freeaddrinfo(res);
	if (pnum == 0)
		main_where_buf = main_bound(fd);
	return fd;
}

/* The sockets passed by systemd, made non-blocking, into *fds (malloc'd); their number, 0 if none. */
static int
main_systemd_sockets(int **fds)
{
	char **names = NULL;
	int n, fd, flags, i;

	n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		errno = -n;
		log_warn("cannot take the sockets systemd passed (LISTEN_FDS); listening on --listen instead");
		return 0;
	}
	if (n == 0)
		return 0;
	if ((*fds = calloc((size_t)n, sizeof **fds)) == NULL)
		fatal("calloc");
	for (i = 0; i < n; i++) {
		fd = (*fds)[i] = SD_LISTEN_FDS_START + i;
		if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0)
			fatalx("socket %d (%s) from systemd is not a listening stream socket (ListenStream=)", fd,
			    names ? names[i] : "?");
		if ((flags = fcntl(fd, F_GETFL)) == -1 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1)
			fatal("socket %d (%s) from systemd: fcntl", fd, names ? names[i] : "?");
		log_debug("serving on socket %d (%s) from systemd", fd, names ? names[i] : "?");
	}
	if (names != NULL) {
		for (i = 0; i < n; i++)
			free(names[i]);
		free(names);
	}
	return n;
}

/* Raise the soft limit on open files to the hard limit, so many connections fit. */
static void
main_rlimit(void)
{
	struct rlimit rl;
	rlim_t cur;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		cur = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_warn("cannot raise the open files limit from %llu to its hard limit %llu",
			    (unsigned long long)cur, (unsigned long long)rl.rlim_max);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < cfg.max_connections + 64)
		log_warnx("open files limit %llu is below --max-connections %llu; connections beyond it will fail",
		    (unsigned long long)rl.rlim_cur, (unsigned long long)cfg.max_connections);
}

/*
 * Loading the clients' summaries at start reads the whole (client, value)
 * index: about 0.1 s a million records with the file in the page cache,
 * more from disk, so a database of some hundred million records takes
 * longer than systemd's default start timeout (90 s). Once it has run a
 * second, systemd is told every second how far it got and to wait this much
 * longer (EXTEND_TIMEOUT_USEC): a scan that advances is never killed, one
 * stuck is after this long. A short one says nothing (READY=1 comes first).
 */
#define MAIN_LOAD_EXTEND_USEC 30000000ULL

/* What the start-up load has read so far, for the progress reports. */
struct main_load {
	uint64_t bad[2];              /* records with values the API never takes, and their clients */
	uint64_t clients;
	uint64_t records;
	uint64_t began;               /* monotonic microseconds */
	uint64_t reported;
	int nomem;                    /* a client's stats could not be made */
};

/* Load one client's stored summary into the stats, counting records with values the API never takes. */
static void
main_load_cb(const char *client, uint64_t last_value, uint64_t recorded, uint64_t out_of_range, void *arg)
{
	struct main_load *ld = arg;

	/* Once one is lost, start-up fails: the others need no memory. */
	if (ld->nomem || metrics_loaded(client, last_value, recorded) != 0)
		ld->nomem = 1;
	ld->clients++;
	ld->records += recorded;
	if (out_of_range != 0) {
		ld->bad[0] += out_of_range;
		ld->bad[1]++;
	}
}

/* Every few milliseconds of the start-up load: once a second, tell systemd how far it got and to wait on. */
static void
main_load_progress_cb(void *arg)
{
	struct main_load *ld = arg;
	uint64_t now = now_mono_us();

	if (now - ld->reported < 1000000)
		return;
	ld->reported = now;
	sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu\nSTATUS=loading client summaries from %s: %llu clients, %llu records "
	    "so far (%.0f s)", MAIN_LOAD_EXTEND_USEC, cfg.db, (unsigned long long)ld->clients,
	    (unsigned long long)ld->records, (double)(now - ld->began) / 1e6);
}

/* Load per-client stats from the store. */
static void
main_load_stats(void)
{
	struct main_load ld;
	char why[256];
	double took;

	memset(&ld, 0, sizeof ld);
	ld.began = ld.reported = now_mono_us();
	/* Started without them, /stats would disagree with the database. */
	if (store_clients(db, main_load_cb, main_load_progress_cb, &ld, why) != 0)
		fatalx("cannot read client summaries from %s: %s", cfg.db, why);
	if (ld.nomem)
		fatalx("out of memory loading the summaries of %llu clients", (unsigned long long)ld.clients);
	if (ld.reported != ld.began) {
		took = (double)(now_mono_us() - ld.began) / 1e6;
		sd_notifyf(0, "STATUS=loaded the summaries of %llu clients, %llu records, in %.1f s",
		    (unsigned long long)ld.clients, (unsigned long long)ld.records, took);
		log_info("loaded the summaries of %llu clients, %llu records, in %.1f s", (unsigned long long)ld.clients,
		    (unsigned long long)ld.records, took);
	}
	if (ld.bad[0] > 0)
		log_warnx("%llu records of %llu clients have values outside 1..9223372036854775807, written by other "
		    "means: /records lists them as stored, but none is a client's last_value (find them with "
		    "SELECT * FROM records WHERE typeof(value) != 'integer' OR value < 1)",
		    (unsigned long long)ld.bad[0], (unsigned long long)ld.bad[1]);
}

/* Leave the loop once shutting down and nothing is in flight. */
void
main_maybe_exit(void)
{
	if (shutting_down && http_requests_open == 0)
		event_base_loopbreak(ev_base);
}

/* SIGTERM/SIGINT: the first stops accepting and drains, the second exits at once. */
static void
main_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	if (shutting_down) {
		log_warnx("second signal: exiting now, %llu requests unanswered",
		    (unsigned long long)http_requests_open);
		_exit(1);
	}
	shutting_down = 1;
	log_info("%s: stopping: no new connections", strsignal((int)sig));
	sd_notify(0, "STOPPING=1\nSTATUS=stopping, answering requests in flight");
	http_quiesce();
	main_maybe_exit();
}

/*
 * A second signal while the store drains after the loop has ended: libevent
 * no longer dispatches, so it is handled here (async-signal-safe).
 */
static char main_drain_msg[128];
static size_t main_drain_len;

static void
main_drain_signal(int sig)
{
	(void)!write(STDERR_FILENO, main_drain_msg, main_drain_len);
	_exit(1);
}

/* SIGHUP: there is no configuration file to read again, so it is logged and ignored. */
static void
main_sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	log_info("SIGHUP: nothing to reload (options come from the command line and environment); ignored");
}

/* Tell systemd's watchdog the loop is alive. */
static void
main_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	sd_notify(0, "WATCHDOG=1");
}

/* Once a second: is the database still the file at its path? Logged once when it is not (/healthz says so). */
static void
main_store_cb(evutil_socket_t fd, short what, void *arg)
{
	char why[512];

	if (store_check(db, why, sizeof why) != 0)
		log_warnx("%s", why);
}

/* Keep systemd's STATUS= line current (shown by systemctl status). */
static void
main_status_cb(evutil_socket_t fd, short what, void *arg)
{
	sd_notifyf(0, "STATUS=%s on %s: %llu requests open, %llu waiting for latency or commit, %llu for a read",
	    shutting_down ? "stopping, answering requests in flight" : "serving", main_where,
	    (unsigned long long)http_requests_open, (unsigned long long)delay_suspended,
	    (unsigned long long)api_reads_waiting);
}

int
main(int argc, char **argv)
{
	struct event *sigterm, *sigint, *sighup;
	struct event_config *evcfg;
	char why[256];
	uint64_t usec;
	struct timeval tv;
	int *fds = NULL, nfds;

	metrics_init();
	jmem_init();
	log_init("record-countd", LOG_LEVEL_INFO);
	main_options(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	log_route_libevent();
	main_rlimit();

	if ((nfds = main_systemd_sockets(&fds)) == 0) {
		if ((fds = malloc(sizeof *fds)) == NULL)
			fatalx("out of memory starting up");
		fds[0] = main_listen(cfg.listen);
		nfds = 1;
	} else {
		if (asprintf(&main_where_buf, "%d socket%s from systemd", nfds, nfds == 1 ? "" : "s") < 0)
			fatalx("out of memory starting up");
		if (main_opt_find('l')->what != NULL)
			log_info("%s %s not used: serving the sockets systemd passed", main_opt_what('l'), cfg.listen);
	}
	main_where = main_where_buf ? main_where_buf : cfg.listen;

	if ((db = store_open(cfg.db, cfg.durability_full, why)) == NULL) {
		if (main_opt_find('d')->what != NULL)
			fatalx("%s %s: %s", main_opt_what('d'), cfg.db, why);
		fatalx("database %s (the default%s): %s", cfg.db,
		    main_db_default != NULL ? " under $STATE_DIRECTORY" : " in the working directory; see --db", why);
	}
	main_load_stats();

	/*
	 * Precise timers (a timerfd, one more syscall per loop pass) when
	 * answers are delayed: otherwise epoll rounds every wait up to a whole
	 * millisecond, and each delayed answer would be late by that much.
	 */
	if ((evcfg = event_config_new()) == NULL ||
	    ((cfg.latency_ms > 0 || cfg.jitter_ms > 0) &&
	    event_config_set_flag(evcfg, EVENT_BASE_FLAG_PRECISE_TIMER) != 0) ||
	    (ev_base = event_base_new_with_config(evcfg)) == NULL)
		fatalx("cannot create the event loop");
	event_config_free(evcfg);
	if (delay_init() != 0 || api_init() != 0 || http_start(fds, (size_t)nfds) != 0)
		fatalx("cannot start serving");
	sigterm = evsignal_new(ev_base, SIGTERM, main_signal_cb, NULL);
	sigint = evsignal_new(ev_base, SIGINT, main_signal_cb, NULL);
	sighup = evsignal_new(ev_base, SIGHUP, main_sighup_cb, NULL);
	if (sigterm == NULL || sigint == NULL || sighup == NULL || evsignal_add(sigterm, NULL) != 0 ||
	    evsignal_add(sigint, NULL) != 0 || evsignal_add(sighup, NULL) != 0)
		fatalx("cannot handle signals");
	if (sd_watchdog_enabled(0, &usec) > 0) {
		main_watchdog_ev = event_new(ev_base, -1, EV_PERSIST, main_watchdog_cb, NULL);
		tv.tv_sec = (time_t)(usec / 2 / 1000000);
		tv.tv_usec = (suseconds_t)(usec / 2 % 1000000);
		event_add(main_watchdog_ev, &tv);
	}

	/* A stat(2) of the database and its WAL a second, on the loop: nothing on the commit path. */
	if ((main_store_ev = event_new(ev_base, -1, EV_PERSIST, main_store_cb, NULL)) == NULL)
		fatalx("cannot start the database check");
	tv.tv_sec = 1;
	tv.tv_usec = 0;
	event_add(main_store_ev, &tv);

	if (getenv("NOTIFY_SOCKET") != NULL) {
		main_status_ev = event_new(ev_base, -1, EV_PERSIST, main_status_cb, NULL);
		tv.tv_sec = 5;
		tv.tv_usec = 0;
		event_add(main_status_ev, &tv);
	}
	log_info("listening on %s, db %s (durability %s), latency %llums jitter %llums max-latency %llums%s, "
	    "max-connections %llu, connection-timeout %llums, access log %s, log level %s",
	    main_where, cfg.db, cfg.durability_full ? "full" : "normal",
	    (unsigned long long)cfg.latency_ms, (unsigned long long)cfg.jitter_ms,
	    (unsigned long long)cfg.max_latency_ms, cfg.max_latency_ms ? "" : " (no cap)",
	    (unsigned long long)cfg.max_connections, (unsigned long long)cfg.connection_timeout_ms,
	    cfg.access_log ? "on" : "off", log_level_name(log_get_level()));
	sd_notifyf(0, "READY=1\nSTATUS=serving on %s, latency %llums", main_where,
	    (unsigned long long)cfg.latency_ms);

	event_base_dispatch(ev_base);

	/* Written before the handler can run, with the journal's priority as log lines have it. */
	snprintf(main_drain_msg, sizeof main_drain_msg, "%srecord-countd: second signal: exiting now, while the store "
	    "drains\n", log_prefix(LOG_LEVEL_WARN));
	main_drain_len = strlen(main_drain_msg);
	signal(SIGTERM, main_drain_signal);
	signal(SIGINT, main_drain_signal);
	delay_drain();
	api_drain();
	http_stop();
	delay_free();
	api_free();
	store_close(db);
	metrics_free();
	if (main_watchdog_ev != NULL)
		event_free(main_watchdog_ev);
	if (main_status_ev != NULL)
		event_free(main_status_ev);
	event_free(main_store_ev);
	event_free(sigterm);
	event_free(sigint);
	event_free(sighup);
	event_base_free(ev_base);
	free(main_db_default);
	free(main_where_buf);
	free(fds);
	log_info("stopped");
	return 0;
}
