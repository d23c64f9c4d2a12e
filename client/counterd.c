/*
 * counterd.c: main and options of counterd, the counter daemon.
 *
 * Sets up the Unix socket (made here, or passed by systemd socket
 * activation), the recorder for record-countd, the API, signals, readiness
 * and the watchdog, and runs the event loop until SIGTERM; then it stops
 * accepting, fails the calls still waiting, lets in-flight records finish
 * and exits 0 (1 if the shutdown grace ran out with calls unanswered).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "dfr.h"
#include "util.h"
#include "client.h"

/* Default of --shutdown-grace: how long shutdown waits for records. */
#define SHUTDOWN_GRACE_MS 30000

volatile int counterd_stopping;

static struct event_base *base;
static struct recorder *recorder;
static char *socket_path; /* the file we made, to unlink on exit */
static dev_t socket_dev;  /* and its identity, so we unlink only ours */
static ino_t socket_ino;
static struct timespec started;
static struct event *ev_check, *ev_watchdog, *ev_health, *ev_sigterm,
    *ev_sigint, *ev_sighup;
static uint64_t shutdown_grace_ms = SHUTDOWN_GRACE_MS;
static int exit_status;
static int probe_in_flight;
static int last_reach = -1;
static uint64_t last_outages;
static time_t last_probe;
static struct timespec stop_started;
static size_t stop_pending; /* calls waiting for an answer at the signal */

/* Seconds since start. */
int
counterd_uptime_s(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int)(now.tv_sec - started.tv_sec);
}

/* Print --help. */
static void
usage(FILE *f)
{
	fprintf(f,
		"usage: counterd [options]\n"
		"Hand out numbers from named counters over HTTP on a Unix "
		"socket, recording\n"
		"each number with record-countd before it is handed out.\n"
		"\n"
		"  --server URL          record-countd to record with (default "
		"http://127.0.0.1:8080;\n"
		"                        HOST is an IPv4/[IPv6] address or a "
		"name, resolved without blocking)\n"
		"  --socket PATH         Unix socket to serve on (default "
		"$RUNTIME_DIRECTORY/counterd.sock,\n"
		"                        else ./counterd.sock; a socket passed "
		"by systemd wins)\n"
		"  --client-id ID        recorded as client ID:NAME for "
		"counter NAME (default: host name)\n"
		"  --strategy S          locked (default): one record in "
		"flight per counter, values in\n"
		"                          order, each handed out once, only "
		"after it is recorded;\n"
		"                        stateless: records overlap; unique "
		"values, gaps on failure;\n"
		"                        unsafe: the seed's bug ON PURPOSE: "
		"returns the shared count read\n"
		"                          after the record completes, so "
		"concurrent calls get the same\n"
		"                          number. For demonstrations and "
		"tests only.\n"
		"  --batch-max N         locked: record up to N (1..1000) waiting "
		"calls in one request\n"
		"                        (default 64; 1 records each value "
		"alone, as the seed did)\n"
		"  --backlog N           waiting calls per counter (0..10000000) "
		"before next fails\n"
		"                        with 503 (default 10000; 0 refuses "
		"every call)\n"
		"  --wait-timeout DUR    a next that waits longer for its turn "
		"fails with 503 (default 30s;\n"
		"                        0: no limit)\n"
		"  --record-timeout DUR  timeout of each request to "
		"record-countd (default 5s)\n"
		"  --retries N           retries (0..100) of a failed record, "
		"with exponential backoff and jitter\n"
		"                        (default 3; then 503, or 504 if it "
		"timed out)\n"
		"  --backoff DUR         first backoff (default 50ms, "
		"doubling up to 2s or to itself if larger)\n"
		"  --connections N       keep-alive connections to "
		"record-countd, 1..10000 (default: 64 for locked,\n"
		"                        which needs one per busy counter; "
		"1024 for stateless and unsafe,\n"
		"                        whose records overlap; more calls "
		"queue for a free connection)\n"
		"  --shutdown-grace DUR  after SIGTERM, how long in-flight "
		"records may take (default 30s;\n"
		"                        then their calls get 503 and counterd "
		"exits 1)\n"
		"  --log-level LEVEL     error, warn, info (default) or debug\n"
		"  --version, --help\n"
		"\n"
		"Durations: 250ms, 1s, 1.5s, 2m (ms, s or m; at most 86400s).\n"
		"API (curl --unix-socket PATH http://localhost/...):\n"
		"  POST /counters/NAME/next, POST /next, GET /counters, GET "
		"/counters/NAME,\n"
		"  GET /stats, GET /healthz, GET /metrics. See counterd(8).\n");
}

/* Parse a duration option or exit with a clear message. */
static uint64_t
opt_duration(const char *opt, const char *arg)
{
	const char *why = "";
	uint64_t ms;

	if (parse_duration_ms(arg, &ms, &why) != 0)
		fatalx("%s: \"%s\" %s", opt, arg, why);
	return ms;
}

/* Parse a number option or exit with a clear message. */
static uint64_t
opt_uint(const char *opt, const char *arg, uint64_t min, uint64_t max)
{
	const char *why = "";
	uint64_t v;

	if (parse_uint(arg, min, max, &v, &why) != 0)
		fatalx("%s: \"%s\": %s (%" PRIu64 "..%" PRIu64 ")", opt, arg,
		       why, min, max);
	return v;
}

/* Make fd non-blocking and close-on-exec. */
static void
set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		fatal("fcntl");
	fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/*
 * Create, bind and listen on the Unix socket at path. A socket file left by
 * a crash (nothing answers: ECONNREFUSED) is removed; a live one means
 * another counterd runs there, and we refuse to start. Anything that is not
 * a socket is left alone: connect() is refused by a regular file too, so
 * ECONNREFUSED alone does not prove the file is a stale socket.
 */
static int
socket_open(const char *path)
{
	struct sockaddr_un sun;
	struct stat sb;
	int fd, probe;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun.sun_path)
		fatalx("--socket: %s is longer than %zu bytes", path,
		       sizeof sun.sun_path - 1);
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			 0)) == -1)
		fatal("socket");
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		if (errno != EADDRINUSE)
			fatal("cannot bind %s", path);
		if (lstat(path, &sb) == -1)
			fatal("cannot bind %s", path);
		if (!S_ISSOCK(sb.st_mode))
			fatalx(
			    "--socket: %s exists and is not a socket; remove "
			    "it or choose another path",
			    path);
		if ((probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) ==
		    -1)
			fatal("socket");
		if (connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0)
			fatalx(
			    "%s: another counterd is already listening there",
			    path);
		if (errno != ECONNREFUSED)
			fatal("%s: cannot tell whether the socket is stale",
			      path);
		close(probe);
		log_info("removing stale socket %s", path);
		if (unlink(path) == -1)
			fatal("cannot remove stale socket %s", path);
		if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1)
			fatal("cannot bind %s", path);
	}
	if (listen(fd, 4096) == -1)
		fatal("listen on %s", path);
	if (lstat(path, &sb) == -1)
		fatal("%s", path);
	socket_dev = sb.st_dev;
	socket_ino = sb.st_ino;
	return fd;
}

/* Remove our socket file, unless something else has taken its place. */
static void
socket_remove(void)
{
	struct stat sb;

	if (socket_path == NULL)
		return;
	if (lstat(socket_path, &sb) == 0 && S_ISSOCK(sb.st_mode) &&
	    sb.st_dev == socket_dev && sb.st_ino == socket_ino)
		unlink(socket_path);
	free(socket_path);
	socket_path = NULL;
}

/* The socket systemd passed, or -1 if none. */
static int
socket_activated(void)
{
	char **names = NULL;
	int n, i, fd;

	n = sd_listen_fds_with_names(1, &names);
	if (n < 0)
		fatalx("socket activation: %s", strerror(-n));
	if (names != NULL) {
		for (i = 0; i < n; i++)
			free(names[i]);
		free(names);
	}
	if (n == 0)
		return -1;
	if (n > 1)
		fatalx("socket activation: got %d sockets, expected one Unix "
		       "stream socket",
		       n);
	fd = SD_LISTEN_FDS_START;
	if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
		fatalx("socket activation: the passed socket is not a "
		       "listening Unix stream socket");
	set_nonblock(fd);
	return fd;
}

/* Leave the event loop once nothing is in flight (or the grace expired). */
static void
shutdown_check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct timespec now;
	int64_t elapsed_ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (api_pending() == 0 && recorder_busy(recorder) == 0) {
		/* The last answers sit in output buffers: give the loop time to
		 * write them. */
		struct timeval flush = {0, 100 * 1000};

		event_del(ev_check);
		event_base_loopexit(base, &flush);
		return;
	}
	elapsed_ms = (int64_t)(now.tv_sec - stop_started.tv_sec) * 1000 +
		     (now.tv_nsec - stop_started.tv_nsec) / 1000000;
	if (elapsed_ms >= (int64_t)shutdown_grace_ms) {
		struct timeval flush = {0, 100 * 1000};

		/*
		 * Calls cut off here get no number, and their values may or
		 * may not be recorded (a gap): not a clean stop, so exit 1 and
		 * let systemd show it.
		 */
		if (api_pending() > 0)
			exit_status = 1;
		log_warnx("--shutdown-grace (%" PRIu64 "ms) expired with %zu "
			  "call(s) unanswered and %zu record(s) unfinished; "
			  "failing them and exiting with status %d",
			  shutdown_grace_ms, api_pending(),
			  recorder_busy(recorder), exit_status);
		event_del(ev_check);
		recorder_abort(recorder, "counterd is shutting down: "
					 "--shutdown-grace expired before "
					 "record-countd answered");
		if (api_pending() > 0)
			log_warnx("%zu call(s) still unanswered; closing their "
				  "connections",
				  api_pending());
		event_base_loopexit(base, &flush);
	}
}

/* SIGTERM/SIGINT: stop gracefully; a second signal exits at once. */
static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct timeval tv = {0, 10 * 1000};

	if (counterd_stopping) {
		log_warnx("%s again: exiting now with status 1, %zu call(s) "
			  "left unanswered",
			  strsignal((int)sig), api_pending());
		socket_remove();
		_exit(1);
	}
	counterd_stopping = 1;
	clock_gettime(CLOCK_MONOTONIC, &stop_started);
	sd_notify(0,
		  "STOPPING=1\nSTATUS=stopping: finishing in-flight records");
	stop_pending = api_pending();
	log_info("%s: stopping (%zu call(s) pending)", strsignal((int)sig),
		 stop_pending);
	api_stop_accepting();
	socket_remove();
	counter_shutdown_all();
	ev_check = event_new(base, -1, EV_PERSIST, shutdown_check_cb, NULL);
	if (ev_check == NULL)
		event_base_loopexit(base, NULL);
	else
		event_add(ev_check, &tv);
}

/*
 * SIGHUP: counterd has no configuration file to reload; say so and carry on
 * (by default the signal would kill it and drop every call in flight).
 */
static void
sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	log_info("SIGHUP: nothing to reload (counterd has no configuration "
		 "file); ignored");
}

/* The watchdog: alive as long as the loop runs. */
static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	sd_notify(0, "WATCHDOG=1");
}

/* A health probe ended. */
static void
health_done_cb(struct dfr *d, void *arg)
{
	probe_in_flight = 0;
	dfr_failure_free(dfr_take_failure(d));
}

/* Probe record-countd now and then; say changes in the log and to systemd. */
static void
health_cb(evutil_socket_t fd, short what, void *arg)
{
	int reach = recorder_reachable(recorder);
	time_t now = time(NULL);
	uint64_t outages;
	const char *why;
	struct dfr *d;

	outages = recorder_outages(recorder, &why);
	if (outages != last_outages && reach != 0) {
		/*
		 * An outage began and ended since the last look (a sample
		 * every 200 ms would miss it): its failed calls deserve a
		 * line all the same, then the recovery is logged below.
		 */
		log_warnx("record-countd is unreachable: %s", why);
		last_reach = 0;
	}
	last_outages = outages;
	if (reach != last_reach) {
		if (reach == 1) {
			log_info("record-countd is reachable");
			sd_notify(0, "STATUS=serving; record-countd reachable");
		} else if (reach == 0) {
			log_warnx("record-countd is unreachable: %s",
				  recorder_last_error(recorder));
			sd_notifyf(
			    0, "STATUS=serving; record-countd unreachable: %s",
			    recorder_last_error(recorder));
		}
		last_reach = reach;
	}
	if (probe_in_flight || counterd_stopping ||
	    (reach == 1 && now - last_probe < 5))
		return;
	last_probe = now;
	if ((d = recorder_probe(recorder)) != NULL) {
		probe_in_flight = 1;
		dfr_add_both(d, health_done_cb, NULL);
		dfr_unref(d);
	}
}

/* libdfr's unhandled failures go to our log. */
static void
unhandled_cb(const struct dfr_failure *f, void *arg)
{
	log_warnx("unhandled failure in a deferred: %s", f->message);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"server", required_argument, NULL, 's'},
	    {"socket", required_argument, NULL, 'S'},
	    {"client-id", required_argument, NULL, 'i'},
	    {"strategy", required_argument, NULL, 'y'},
	    {"batch-max", required_argument, NULL, 'b'},
	    {"backlog", required_argument, NULL, 'B'},
	    {"wait-timeout", required_argument, NULL, 'w'},
	    {"record-timeout", required_argument, NULL, 't'},
	    {"retries", required_argument, NULL, 'r'},
	    {"backoff", required_argument, NULL, 'k'},
	    {"connections", required_argument, NULL, 'c'},
	    {"shutdown-grace", required_argument, NULL, 'g'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *server = "http://127.0.0.1:8080", *sock = NULL, *why = "";
	char hostname[256], defsock[4096], batch[32] = "";
	uint64_t record_timeout = 5000, backoff = 50, retries = 3, pool = 0;
	int batch_given = 0, ch, fd;
	struct counter_config cc;
	struct api_config ac;
	struct server_url url;
	struct timeval tv;
	struct rlimit rl;
	uint64_t wd_usec;
	const char *rd;

	log_init("counterd", LOG_LEVEL_INFO);
	memset(&cc, 0, sizeof cc);
	cc.strategy = STRATEGY_LOCKED;
	cc.batch_max = 64;
	cc.backlog = 10000;
	cc.wait_timeout_ms = 30000;
	opterr = 0; /* getopt's own messages would carry no log priority */
	while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			server = optarg;
			break;
		case 'S':
			if (*optarg == '\0')
				fatalx("--socket: the path is empty");
			sock = optarg;
			break;
		case 'i':
			cc.client_id = optarg;
			break;
		case 'y':
			if (strcmp(optarg, "locked") == 0)
				cc.strategy = STRATEGY_LOCKED;
			else if (strcmp(optarg, "stateless") == 0)
				cc.strategy = STRATEGY_STATELESS;
			else if (strcmp(optarg, "unsafe") == 0)
				cc.strategy = STRATEGY_UNSAFE;
			else
				fatalx("--strategy: \"%s\": use locked, "
				       "stateless or unsafe",
				       optarg);
			break;
		case 'b':
			cc.batch_max = opt_uint("--batch-max", optarg, 1, 1000);
			batch_given = 1;
			break;
		case 'B':
			cc.backlog = opt_uint("--backlog", optarg, 0, 10000000);
			break;
		case 'w':
			cc.wait_timeout_ms =
			    opt_duration("--wait-timeout", optarg);
			break;
		case 't':
			record_timeout =
			    opt_duration("--record-timeout", optarg);
			if (record_timeout == 0)
				fatalx("--record-timeout: must be more than 0");
			break;
		case 'r':
			retries = opt_uint("--retries", optarg, 0, 100);
			break;
		case 'k':
			backoff = opt_duration("--backoff", optarg);
			break;
		case 'c':
			pool = opt_uint("--connections", optarg, 1, 10000);
			break;
		case 'g':
			shutdown_grace_ms =
			    opt_duration("--shutdown-grace", optarg);
			if (shutdown_grace_ms == 0)
				fatalx("--shutdown-grace: must be more than 0");
			break;
		case 'l':
			if (log_set_level_name(optarg) != 0)
				fatalx("--log-level: \"%s\": use error, warn, "
				       "info or debug",
				       optarg);
			break;
		case 'V':
			printf("counterd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			log_errx("%s needs a value; see --help",
				 argv[optind - 1]);
			return 2;
		default:
			log_errx("unknown option \"%s\"; see --help for the "
				 "options",
				 argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		log_errx("unexpected argument \"%s\"; see --help",
			 argv[optind]);
		return 2;
	}
	if (batch_given && cc.strategy != STRATEGY_LOCKED)
		fatalx("--batch-max applies to --strategy locked only (%s "
		       "records each value alone)",
		       strategy_name(cc.strategy));
	if (pool == 0)
		pool = cc.strategy == STRATEGY_LOCKED ? 64 : 1024;
	if (server_url_parse(server, &url, &why) != 0)
		fatalx("--server: \"%s\": %s", server, why);
	if (cc.client_id == NULL) {
		if (gethostname(hostname, sizeof hostname) != 0)
			fatal("gethostname");
		hostname[sizeof hostname - 1] = '\0';
		cc.client_id = hostname;
		if (!client_id_valid(cc.client_id))
			fatalx("the host name \"%s\" is not a usable client "
			       "id; give --client-id",
			       hostname);
	} else if (!client_id_valid(cc.client_id))
		fatalx("--client-id: \"%s\": use 1..%d of A-Z a-z 0-9 . _ : -",
		       cc.client_id, CLIENT_ID_MAX - 1 - COUNTER_NAME_MAX);

	clock_gettime(CLOCK_MONOTONIC, &started);
	srandom((unsigned)(getpid() ^ started.tv_nsec));
	signal(SIGPIPE, SIG_IGN);
	/* Every waiting caller holds a socket: allow as many as we may. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	jmem_init();
	if (reserve_init() != 0)
		fatalx("out of memory starting up");
	log_route_libevent();
	dfr_set_unhandled_cb(unhandled_cb, NULL);
	if ((base = event_base_new()) == NULL)
		fatalx("cannot create the event loop");

	if ((fd = socket_activated()) != -1) {
		log_info("serving on the socket passed by systemd");
	} else {
		if (sock == NULL) {
			rd = getenv("RUNTIME_DIRECTORY");
			if (rd != NULL && *rd != '\0') {
				/* RuntimeDirectory= may list several; use the
				 * first. */
				snprintf(defsock, sizeof defsock,
					 "%.*s/counterd.sock",
					 (int)strcspn(rd, ":"), rd);
				sock = defsock;
			} else
				sock = "./counterd.sock";
		}
		fd = socket_open(sock);
		if ((socket_path = strdup(sock)) == NULL)
			fatal("strdup");
	}

	if ((recorder =
		 recorder_new(base, &url, record_timeout, (unsigned)retries,
			      backoff, (size_t)pool)) == NULL)
		fatalx("cannot set up the connection to %s", server);
	cc.base = base;
	cc.recorder = recorder;
	memset(&ac, 0, sizeof ac);
	ac.base = base;
	ac.counters = &cc;
	ac.recorder = recorder;
	ac.server_url = server;
	ac.max_body = 4096;
	ac.max_headers = 8192;
	ac.max_uri = 1024;
	if (api_start(&ac, fd) != 0)
		fatalx("cannot serve the API");

	ev_sigterm = evsignal_new(base, SIGTERM, signal_cb, NULL);
	ev_sigint = evsignal_new(base, SIGINT, signal_cb, NULL);
	ev_sighup = evsignal_new(base, SIGHUP, sighup_cb, NULL);
	if (ev_sigterm == NULL || ev_sigint == NULL || ev_sighup == NULL ||
	    evsignal_add(ev_sigterm, NULL) != 0 ||
	    evsignal_add(ev_sigint, NULL) != 0 ||
	    evsignal_add(ev_sighup, NULL) != 0)
		fatalx("cannot set up signal handling");
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
		tv.tv_sec = (time_t)(wd_usec / 2 / 1000000);
		tv.tv_usec = (suseconds_t)(wd_usec / 2 % 1000000);
		ev_watchdog =
		    event_new(base, -1, EV_PERSIST, watchdog_cb, NULL);
		if (ev_watchdog == NULL || event_add(ev_watchdog, &tv) != 0)
			fatalx("cannot set up the watchdog timer");
	}
	ev_health = event_new(base, -1, EV_PERSIST, health_cb, NULL);
	tv.tv_sec = 0;
	tv.tv_usec = 200 * 1000;
	if (ev_health == NULL || event_add(ev_health, &tv) != 0)
		fatalx("cannot set up the health timer");
	health_cb(-1, 0, NULL);

	if (cc.strategy == STRATEGY_UNSAFE)
		log_warnx("--strategy unsafe: reproducing the seed's race ON "
			  "PURPOSE: concurrent "
			  "calls may get the same number; never use it for "
			  "real work");
	/* The effective configuration, defaults included: what the operator
	 * reads first when the daemon misbehaves. */
	if (cc.strategy == STRATEGY_LOCKED)
		snprintf(batch, sizeof batch, ", batch-max %zu", cc.batch_max);
	log_info("serving on %s (strategy %s%s), recording to %s as %s:NAME; "
		 "backlog %zu, wait-timeout %" PRIu64 "ms%s, record-timeout "
		 "%" PRIu64 "ms, retries %" PRIu64 ", backoff %" PRIu64
		 "ms, connections %" PRIu64 ", shutdown-grace %" PRIu64
		 "ms, log-level %s",
		 socket_path != NULL ? socket_path : "the systemd socket",
		 strategy_name(cc.strategy), batch, server, cc.client_id,
		 cc.backlog, cc.wait_timeout_ms,
		 cc.wait_timeout_ms == 0 ? " (none)" : "", record_timeout,
		 retries, backoff, pool, shutdown_grace_ms,
		 log_level_name(log_get_level()));
	sd_notifyf(0, "READY=1\nSTATUS=serving on %s, recording to %s",
		   socket_path != NULL ? socket_path : "the systemd socket",
		   server);

	event_base_dispatch(base);

	if (counterd_stopping)
		log_info("stopped: of the %zu call(s) pending at the signal, "
			 "%zu answered and %zu left unanswered; exit status %d",
			 stop_pending,
			 stop_pending > api_pending() ? stop_pending - api_pending()
						      : 0,
			 api_pending(), exit_status);
	else
		log_info("stopped");
	socket_remove();
	/* Fail what is left (only if the loop ended early) while counters and calls still exist. */
	recorder_abort(recorder, "counterd is exiting");
	api_free();
	counter_free_all();
	recorder_free(recorder);
	if (ev_check != NULL)
		event_free(ev_check);
	if (ev_watchdog != NULL)
		event_free(ev_watchdog);
	event_free(ev_health);
	event_free(ev_sigterm);
	event_free(ev_sigint);
	event_free(ev_sighup);
	event_base_free(base);
	return exit_status;
}
