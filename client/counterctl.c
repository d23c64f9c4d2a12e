/*
 * counterctl.c: the command-line client of counterd.
 *
 * Speaks HTTP/1.1 over counterd's Unix socket with plain blocking sockets,
 * one keep-alive connection per worker thread for `next -c N`.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "util.h"

/* Where the shipped counterd.socket unit puts the socket. */
#define COUNTERCTL_SYSTEM_SOCKET "/run/lockstep/counterd.sock"

/* Exit codes, documented in --help. */
#define EX_OK 0
#define EX_FAILED 1	 /* counterd answered with an error */
#define EX_USAGE 2	 /* bad command line */
#define EX_UNREACHABLE 3 /* counterd not reachable, or not speaking HTTP */

/*
 * Largest answer read. counterd's /stats for its 10,000 counters with
 * 64-character names can pass 4 MiB; it stays well under this.
 */
#define MAX_ANSWER (64 * 1024 * 1024)

static const char *sock_path;
static uint64_t timeout_ms = 120000;     /* per call (connect, send, answer); 0: none */

/* An answer from counterd. */
struct answer {
	int status;
	char *body; /* NUL-terminated */
	size_t len;
};

/* One connection to counterd. */
struct conn {
	int fd;
	char buf[8192];
	size_t have;
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: counterctl [--socket PATH] [--timeout DUR] COMMAND "
		   "[ARGS]\n"
		   "Talk to counterd over its Unix socket.\n"
		   "\n"
		   "Commands:\n"
		   "  next [NAME] [-n COUNT] [-c CONCURRENCY]\n"
		   "                 take COUNT numbers (-n, --count: 1 to "
		   "100000000, default 1)\n"
		   "                 from counter NAME (default: the counter "
		   "named default),\n"
		   "                 CONCURRENCY calls at a time (-c, "
		   "--concurrency: 1 to 1024,\n"
		   "                 default 1); prints one number per line, "
		   "in the order they arrive\n"
		   "  get NAME       print the counter's last value (NAME: 1 to "
		   "64 of A-Z a-z 0-9 . _ -)\n"
		   "  list           print each counter as NAME COUNT, sorted by "
		   "name\n"
		   "  stats          print counterd's statistics (JSON)\n"
		   "  health         print counterd's health (JSON); fails if "
		   "record-countd is unreachable\n"
		   "\n"
		   "Options:\n"
		   "  -s, --socket PATH  counterd's socket (default "
		   "$COUNTERD_SOCKET, else\n"
		   "                     $RUNTIME_DIRECTORY/counterd.sock, "
		   "else ./counterd.sock,\n"
		   "                     else " COUNTERCTL_SYSTEM_SOCKET
		   " (systemd's counterd.socket))\n"
		   "  -t, --timeout DUR  give up on a counterd that does not "
		   "answer within DUR\n"
		   "                     (default 120s, longer than counterd's "
		   "own bounds; 0: never;\n"
		   "                     ms, s or m, at most 86400s)\n"
		   "  -h, --help         this text\n"
		   "  -V, --version      the version\n"
		   "\n"
		   "Exit status: 0 success; 1 counterd answered with an error "
		   "(e.g. 503 backlog full,\n"
		   "record-countd unreachable), or the output could not be "
		   "written (next then stops);\n"
		   "2 usage error; 3 counterd is not reachable.\n");
}

/* Print "counterctl: ..." to stderr. */
static void warnmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
warnmsg(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "counterctl: %s\n", line);
}

/* Connect to counterd; -1 with a message on failure. */
static int
conn_open(struct conn *c)
{
	struct sockaddr_un sun;
	struct timeval tv;
	struct stat sb;
	const char *hint;

	c->have = 0;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(sock_path) >= sizeof sun.sun_path) {
		warnmsg("socket path %s is too long", sock_path);
		return -1;
	}
	strcpy(sun.sun_path, sock_path);
	if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		warnmsg("socket: %s", strerror(errno));
		return -1;
	}
	/*
	 * Set before connect(): a counterd too busy or hung to accept leaves
	 * its listen queue full, and connect() then waits for room for as
	 * long as SO_SNDTIMEO allows.
	 */
	if (timeout_ms > 0) {
		tv.tv_sec = (time_t)(timeout_ms / 1000);
		tv.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	}
	if (connect(c->fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		if (errno == EAGAIN || errno == EINPROGRESS)
			warnmsg("counterd at %s did not accept the connection "
				"within %" PRIu64 " ms (--timeout)",
				sock_path, timeout_ms);
		else if (errno == ECONNREFUSED &&
		    stat(sock_path, &sb) == 0 && !S_ISSOCK(sb.st_mode))
			warnmsg("cannot connect to %s: it is not a socket "
				"(is the path right?)", sock_path);
		else {
			/* systemd's socket is for the lockstep group. */
			hint = errno == EACCES ? "is your user in the socket's "
			    "group? systemd's socket is for group lockstep" :
			    "is counterd running?";
			warnmsg("cannot connect to %s: %s (%s)", sock_path,
				strerror(errno), hint);
		}
		close(c->fd);
		c->fd = -1;
		return -1;
	}
	return 0;
}

static void
conn_close(struct conn *c)
{
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	c->have = 0;
}

/* Milliseconds on the monotonic clock. */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Wait until c can be read (or written, with POLLOUT) or the call's deadline
 * (0: none) passes; 0, or -1 with errno EAGAIN once it has passed.
 */
static int
conn_wait(struct conn *c, short events, uint64_t deadline)
{
	struct pollfd pfd = {.fd = c->fd, .events = events};
	uint64_t now;
	int n;

	if (deadline == 0)
		return 0;
	do {
		if ((now = now_ms()) >= deadline) {
			errno = EAGAIN;
			return -1;
		}
		n = poll(&pfd, 1, deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now));
	} while (n == 0 || (n == -1 && errno == EINTR));
	return n == -1 ? -1 : 0;
}

/* Read more bytes into c->buf before the deadline; 0 on EOF, -1 on error. */
static ssize_t
conn_fill(struct conn *c, uint64_t deadline)
{
	ssize_t n;

	if (c->have == sizeof c->buf)
		return -1;
	if (conn_wait(c, POLLIN, deadline) != 0)
		return -1;
	do
		n = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
	while (n == -1 && errno == EINTR);
	if (n > 0)
		c->have += (size_t)n;
	return n;
}

/* Say why a read returned n (0 or -1): the connection closed, or --timeout. */
static void
conn_lost(ssize_t n, const char *when)
{
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
		warnmsg("counterd at %s did not answer within %" PRIu64
			" ms (--timeout)", sock_path, timeout_ms);
	else
		warnmsg("counterd at %s closed the connection %s", sock_path,
			when);
}

/*
 * Send one request and read the answer, all within --timeout. Returns 0, or
 * -1 (message printed) when counterd cannot be reached, does not answer in
 * time or does not speak HTTP.
 */
static int
conn_call(struct conn *c, const char *method, const char *path,
	  struct answer *a)
{
	char req[1024], *end, *p;
	size_t reqlen, hdrlen, clen = 0, off;
	int retried = 0, close_after = 0;
	uint64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
	ssize_t n;

	memset(a, 0, sizeof *a);
again:
	if (c->fd == -1 && conn_open(c) != 0)
		return -1;
	reqlen = (size_t)snprintf(
	    req, sizeof req,
	    "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nAccept: "
	    "application/json\r\n\r\n",
	    method, path);
	for (off = 0; off < reqlen; off += (size_t)n) {
		if (conn_wait(c, POLLOUT, deadline) != 0) {
			conn_lost(-1, "while it was sent a request");
			conn_close(c);
			return -1;
		}
		n = send(c->fd, req + off, reqlen - off, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n == -1) {
			conn_close(c);
			if (!retried++)
				goto again; /* an idle keep-alive connection
					       closed */
			warnmsg("cannot send to %s: %s", sock_path,
				strerror(errno));
			return -1;
		}
	}
	/* Headers. */
	for (;;) {
		/*
		 * No NUL is written into buf here: a full buf holds the start
		 * of the body, whose last byte it would overwrite.
		 */
		if (c->have > 0 &&
		    memmem(c->buf, c->have, "\r\n\r\n", 4) != NULL)
			break;
		if (c->have == sizeof c->buf) {
			warnmsg("counterd at %s sent headers over %zu bytes",
				sock_path, sizeof c->buf);
			conn_close(c);
			return -1;
		}
		n = conn_fill(c, deadline);
		if (n <= 0) {
			int fresh = c->have == 0 && n == 0, err = errno;

			conn_close(c);
			errno = err;
			if (fresh && !retried++)
				goto again;
			conn_lost(n, "without an answer");
			return -1;
		}
	}
	end = memmem(c->buf, c->have, "\r\n\r\n", 4);
	hdrlen = (size_t)(end - c->buf) + 4;
	*end = '\0';
	if (sscanf(c->buf, "HTTP/1.%*d %d", &a->status) != 1) {
		warnmsg("counterd at %s does not speak HTTP", sock_path);
		conn_close(c);
		return -1;
	}
	for (p = strstr(c->buf, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n")) {
		if (strncasecmp(p + 2, "Content-Length:", 15) == 0)
			clen = strtoul(p + 17, NULL, 10);
		else if (strncasecmp(p + 2, "Connection: close", 17) == 0)
			close_after = 1;
	}
	if (clen > MAX_ANSWER) {
		warnmsg("counterd at %s sent an answer of %zu bytes, over "
			"counterctl's limit of %d",
			sock_path, clen, MAX_ANSWER);
		conn_close(c);
		return -1;
	}
	if ((a->body = malloc(clen + 1)) == NULL) {
		warnmsg("out of memory");
		exit(EX_FAILED);
	}
	off = c->have - hdrlen < clen ? c->have - hdrlen : clen;
	memcpy(a->body, c->buf + hdrlen, off);
	memmove(c->buf, c->buf + hdrlen + off, c->have - hdrlen - off);
	c->have -= hdrlen + off;
	while (off < clen) {
		n = -1;
		if (conn_wait(c, POLLIN, deadline) == 0)
			do
				n = read(c->fd, a->body + off, clen - off);
			while (n == -1 && errno == EINTR);
		if (n <= 0) {
			conn_lost(n, "mid-answer");
			free(a->body);
			a->body = NULL;
			conn_close(c);
			return -1;
		}
		off += (size_t)n;
	}
	a->body[clen] = '\0';
	a->len = clen;
	if (close_after)
		conn_close(c);
	return 0;
}

/* Print counterd's error answer as one line. */
static void
report_error(const char *what, const struct answer *a)
{
	json_t *j;
	const char *word, *msg;

	jmem_clear();
	j = json_loads(a->body, 0, NULL);
	word = json_string_value(json_object_get(j, "error"));
	msg = json_string_value(json_object_get(j, "message"));
	if (word == NULL && jmem_failed())
		warnmsg("%s: counterd answered %d (out of memory reading its "
			"message)",
			what, a->status);
	else if (word != NULL)
		warnmsg("%s: %d %s: %s", what, a->status, word,
			msg != NULL ? msg : "");
	else
		warnmsg("%s: counterd answered %d", what, a->status);
	json_decref(j);
}

/* Call once; on success return the parsed JSON body, else exit. */
static json_t *
call_json(const char *what, const char *method, const char *path, int *status)
{
	struct conn c = {.fd = -1};
	struct answer a;
	json_t *j;

	if (conn_call(&c, method, path, &a) != 0)
		exit(EX_UNREACHABLE);
	conn_close(&c);
	*status = a.status;
	if (a.status < 200 || a.status > 299) {
		report_error(what, &a);
		if (strcmp(what, "health") != 0) {
			free(a.body);
			exit(EX_FAILED);
		}
	}
	jmem_clear();
	if ((j = json_loads(a.body, 0, NULL)) == NULL && jmem_failed()) {
		warnmsg("%s: out of memory reading counterd's answer", what);
		free(a.body);
		exit(EX_FAILED);
	}
	if (j == NULL) {
		warnmsg("%s: counterd's answer is not JSON", what);
		free(a.body);
		exit(EX_UNREACHABLE);
	}
	free(a.body);
	return j;
}

/* State shared by the workers of `next`. */
struct next_job {
	char path[128];
	long count;
	long taken;
	int failed;	 /* counterd answered an error */
	int unreachable; /* counterd could not be reached */
	int unwritable;	 /* standard output failed (e.g. a closed pipe) */
	pthread_mutex_t mu;
};

/* One worker: take numbers until the job is done or something failed. */
static void *
next_worker(void *arg)
{
	struct next_job *job = arg;
	struct conn c = {.fd = -1};
	struct answer a;

	for (;;) {
		json_t *j;

		pthread_mutex_lock(&job->mu);
		if (job->taken >= job->count || job->failed ||
		    job->unreachable || job->unwritable) {
			pthread_mutex_unlock(&job->mu);
			break;
		}
		job->taken++;
		pthread_mutex_unlock(&job->mu);
		if (conn_call(&c, "POST", job->path, &a) != 0) {
			pthread_mutex_lock(&job->mu);
			job->unreachable = 1;
			pthread_mutex_unlock(&job->mu);
			break;
		}
		jmem_clear();
		j = a.status == 200 ? json_loads(a.body, 0, NULL) : NULL;
		pthread_mutex_lock(&job->mu);
		if (a.status != 200) {
			if (!job->failed)
				report_error("next", &a);
			job->failed = 1;
		} else if (j == NULL && jmem_failed()) {
			if (!job->failed)
				warnmsg("next: out of memory reading counterd's "
					"answer (the number it handed out is "
					"used up)");
			job->failed = 1;
		} else if (!json_is_integer(json_object_get(j, "count"))) {
			warnmsg("next: counterd's answer lacks a count");
			job->unreachable = 1;
		} else {
			printf("%" JSON_INTEGER_FORMAT "\n",
			       json_integer_value(json_object_get(j, "count")));
			/* A reader that went away stops us taking numbers. */
			if (fflush(stdout) != 0 && !job->unwritable) {
				warnmsg("next: cannot write the numbers: %s",
					strerror(errno));
				job->unwritable = 1;
			}
		}
		pthread_mutex_unlock(&job->mu);
		json_decref(j);
		free(a.body);
	}
	conn_close(&c);
	return NULL;
}

/* Whether all that was printed reached standard output; else say so. */
static int
output_ok(const char *what)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 1;
	warnmsg("%s: cannot write the answer: %s", what, strerror(errno));
	return 0;
}

/* Whether s is a valid counter name. */
static int
name_ok(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= 64 &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0"
			 "123456789._-") == n;
}

/* Parse a count option: decimal digits only, from 1 to max. */
static long
count_arg(const char *opt, const char *s, long max)
{
	const char *why;
	uint64_t v;

	if (parse_uint(s, 1, (uint64_t)max, &v, &why) != 0) {
		warnmsg("%s: \"%s\" is not a number from 1 to %ld", opt, s,
			max);
		exit(EX_USAGE);
	}
	return (long)v;
}

/* Report a getopt error for command cmd ("" for the global options) and give the usage exit code. */
static int
opt_error(const char *cmd, int ch, char **argv)
{
	const char *sep = *cmd != '\0' ? ": " : "";
	const char *opt = argv[optind - 1], *what = "an argument";

	if (ch == ':') {
		if (optopt == 'n')
			what = "a COUNT";
		else if (optopt == 'c')
			what = "a CONCURRENCY";
		else if (optopt == 's')
			what = "a PATH";
		else if (optopt == 't')
			what = "a DURATION";
		warnmsg("%s%s%s needs %s", cmd, sep, opt, what);
	} else if (optopt != 0)
		warnmsg("%s%sunknown option -%c (see counterctl --help)", cmd,
			sep, optopt);
	else
		warnmsg("%s%sunknown option %s (see counterctl --help)", cmd,
			sep, opt);
	return EX_USAGE;
}

/* counterctl next [NAME] [-n COUNT] [-c CONCURRENCY] */
static int
cmd_next(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"count", required_argument, NULL, 'n'},
		{"concurrency", required_argument, NULL, 'c'},
		{NULL, 0, NULL, 0},
	};
	struct next_job job;
	const char *name = NULL;
	long conc = 1, i;
	pthread_t *th;
	int ch;

	memset(&job, 0, sizeof job);
	job.count = 1;
	optind = 0; /* restart getopt on the command's own arguments */
	/*
	 * "-": NAME comes back as option 1, so -n and -c may follow it even
	 * when POSIXLY_CORRECT would stop getopt at the first non-option.
	 */
	while ((ch = getopt_long(argc, argv, "-:n:c:", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 1:
			if (name != NULL) {
				warnmsg("next: unexpected argument %s", optarg);
				return EX_USAGE;
			}
			name = optarg;
			break;
		case 'n':
			job.count = count_arg("-n", optarg, 100000000L);
			break;
		case 'c':
			conc = count_arg("-c", optarg, 1024);
			break;
		default:
			return opt_error("next", ch, argv);
		}
	}
	if (name == NULL && optind < argc)
		name = argv[optind++];
	if (optind < argc) {
		warnmsg("next: unexpected argument %s", argv[optind]);
		return EX_USAGE;
	}
	if (name != NULL && !name_ok(name)) {
		warnmsg("next: \"%s\" is not a counter name (1 to 64 of A-Z "
			"a-z 0-9 . _ -)",
			name);
		return EX_USAGE;
	}
	if (name == NULL)
		snprintf(job.path, sizeof job.path, "/next");
	else
		snprintf(job.path, sizeof job.path, "/counters/%s/next", name);
	if (conc > job.count)
		conc = job.count;
	pthread_mutex_init(&job.mu, NULL);
	if (conc == 1) {
		next_worker(&job);
	} else {
		if ((th = calloc((size_t)conc, sizeof *th)) == NULL) {
			warnmsg("out of memory");
			return EX_FAILED;
		}
		for (i = 0; i < conc; i++) {
			if (pthread_create(&th[i], NULL, next_worker, &job) !=
			    0) {
				warnmsg("cannot start a thread");
				exit(EX_FAILED);
			}
		}
		for (i = 0; i < conc; i++)
			pthread_join(th[i], NULL);
		free(th);
	}
	pthread_mutex_destroy(&job.mu);
	if (job.unreachable)
		return EX_UNREACHABLE;
	return job.failed || job.unwritable ? EX_FAILED : EX_OK;
}

/* Order counters by name, byte by byte. */
static int
list_cmp(const void *a, const void *b)
{
	json_t *const *x = a, *const *y = b;

	return strcmp(json_string_value(json_object_get(*x, "counter")),
		      json_string_value(json_object_get(*y, "counter")));
}

/* Print counterd's GET /counters answer j as NAME COUNT lines sorted by name; frees j. */
static int
cmd_list(json_t *j)
{
	json_t *arr = json_object_get(j, "counters"), *c, **v;
	size_t i, n = json_array_size(arr);

	if (!json_is_array(arr)) {
		warnmsg("list: counterd's answer lacks the counters");
		json_decref(j);
		return EX_UNREACHABLE;
	}
	if ((v = calloc(n + 1, sizeof *v)) == NULL) {
		warnmsg("out of memory");
		exit(EX_FAILED);
	}
	json_array_foreach(arr, i, c) {
		if (!json_is_string(json_object_get(c, "counter")) ||
		    !json_is_integer(json_object_get(c, "count"))) {
			warnmsg("list: counterd's answer lacks a counter's "
				"name or count");
			free(v);
			json_decref(j);
			return EX_UNREACHABLE;
		}
		v[i] = c;
	}
	qsort(v, n, sizeof *v, list_cmp);
	for (i = 0; i < n; i++)
		printf("%s %" JSON_INTEGER_FORMAT "\n",
		       json_string_value(json_object_get(v[i], "counter")),
		       json_integer_value(json_object_get(v[i], "count")));
	free(v);
	json_decref(j);
	return output_ok("list") ? EX_OK : EX_FAILED;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{"socket", required_argument, NULL, 's'},
		{"timeout", required_argument, NULL, 't'},
		{NULL, 0, NULL, 0},
	};
	char defsock[4096];
	const char *env, *why;
	json_t *j;
	int ch, k, status;

	signal(SIGPIPE, SIG_IGN);
	jmem_init();
	/* "+": the global options end at the command's name. */
	while ((ch = getopt_long(argc, argv, "+:hVs:t:", longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case 'h':
			usage(stdout);
			return EX_OK;
		case 'V':
			printf("counterctl %s\n", PACKAGE_VERSION);
			return EX_OK;
		case 's':
			if (*optarg == '\0') {
				warnmsg("--socket: the path is empty");
				return EX_USAGE;
			}
			sock_path = optarg;
			break;
		case 't':
			if (parse_duration_ms(optarg, &timeout_ms, &why) != 0) {
				warnmsg("--timeout: \"%s\" %s", optarg, why);
				return EX_USAGE;
			}
			break;
		default:
			return opt_error("", ch, argv);
		}
	}
	k = optind;
	if (k == argc) {
		usage(stderr);
		return EX_USAGE;
	}
	if (sock_path == NULL) {
		if ((env = getenv("COUNTERD_SOCKET")) != NULL && *env != '\0')
			sock_path = env;
		else if ((env = getenv("RUNTIME_DIRECTORY")) != NULL &&
			 *env != '\0') {
			snprintf(defsock, sizeof defsock, "%.*s/counterd.sock",
				 (int)strcspn(env, ":"), env);
			sock_path = defsock;
		} else if (access("./counterd.sock", F_OK) != 0 &&
		    access(COUNTERCTL_SYSTEM_SOCKET, F_OK) == 0)
			sock_path = COUNTERCTL_SYSTEM_SOCKET;
		else
			sock_path = "./counterd.sock";
	}
	argc -= k;
	argv += k;
	if (strcmp(argv[0], "next") == 0)
		return cmd_next(argc, argv);
	if (strcmp(argv[0], "get") == 0) {
		char path[128];

		if (argc != 2) {
			warnmsg("usage: counterctl get NAME");
			return EX_USAGE;
		}
		if (!name_ok(argv[1])) {
			warnmsg("get: \"%s\" is not a counter name (1 to 64 of "
				"A-Z a-z 0-9 . _ -)",
				argv[1]);
			return EX_USAGE;
		}
		snprintf(path, sizeof path, "/counters/%s", argv[1]);
		j = call_json("get", "GET", path, &status);
		if (!json_is_integer(json_object_get(j, "count"))) {
			warnmsg("get: counterd's answer lacks a count");
			json_decref(j);
			return EX_UNREACHABLE;
		}
		printf("%" JSON_INTEGER_FORMAT "\n",
		       json_integer_value(json_object_get(j, "count")));
		json_decref(j);
		return output_ok("get") ? EX_OK : EX_FAILED;
	}
	if (strcmp(argv[0], "list") == 0) {
		if (argc != 1) {
			warnmsg("usage: counterctl list");
			return EX_USAGE;
		}
		j = call_json("list", "GET", "/counters", &status);
		return cmd_list(j);
	}
	if (strcmp(argv[0], "stats") == 0 || strcmp(argv[0], "health") == 0) {
		const char *path = argv[0][0] == 's' ? "/stats" : "/healthz";
		char *text;

		if (argc != 1) {
			warnmsg("usage: counterctl %s", argv[0]);
			return EX_USAGE;
		}
		j = call_json(argv[0], "GET", path, &status);
		text = jmem_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		json_decref(j);
		if (text == NULL) {
			warnmsg("%s: out of memory printing counterd's answer",
				argv[0]);
			return EX_FAILED;
		}
		printf("%s\n", text);
		free(text);
		if (!output_ok(argv[0]))
			return EX_FAILED;
		return status == 200 ? EX_OK : EX_FAILED;
	}
	warnmsg("unknown command \"%s\" (use next, get, list, stats or health)",
		argv[0]);
	return EX_USAGE;
}
