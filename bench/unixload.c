/*
 * unixload.c: an HTTP/1.1 load generator for a Unix stream socket (counterd),
 * because wrk speaks only TCP and Python threads cannot keep 64 callers busy.
 *
 * One libevent loop, one keep-alive connection per concurrent caller. All
 * connections are opened before the clock starts, so the figures are the
 * daemon's answers, not connection set-up. Each answer's "count" is kept and
 * checked for duplicates at the end. Prints one JSON object.
 *
 *   unixload -s SOCKET [-p PATH] -c CONCURRENCY -d SECONDS   closed loop
 *   unixload -s SOCKET [-p PATH] -c N -b                     burst: N at once
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

struct conn {
	struct bufferevent *bev;
	double sent_at;
	int busy;
};

static struct event_base *base;
static const char *sock_path;
static const char *path = "/counters/bench/next";
static char request[512];
static size_t request_len;
static int burst;
static double duration = 5;
static double t_start, t_end, t_last;
static int stopping;
static int64_t *counts;
static size_t ncounts, counts_cap;
static uint64_t ok, bad_status, conn_errors, outstanding, no_count;
static double lat_total, lat_max;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
	fprintf(stderr, "unixload: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Connect to the socket (blocking, so a full backlog waits, not fails). */
static int
connect_unix(void)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(sock_path) >= sizeof sun.sun_path) {
		fprintf(stderr, "unixload: socket path too long\n");
		exit(1);
	}
	strcpy(sun.sun_path, sock_path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		die("socket");
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1)
		die(sock_path);
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1)
		die("fcntl");
	return fd;
}

static void conn_read_cb(struct bufferevent *, void *);
static void conn_event_cb(struct bufferevent *, short, void *);

static void
conn_open(struct conn *c)
{
	c->bev = bufferevent_socket_new(base, connect_unix(), BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL)
		die("bufferevent_socket_new");
	bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->busy = 0;
}

static void
conn_send(struct conn *c)
{
	c->sent_at = now();
	c->busy = 1;
	outstanding++;
	bufferevent_write(c->bev, request, request_len);
}

static void
keep_count(int64_t v)
{
	if (ncounts == counts_cap) {
		counts_cap = counts_cap ? counts_cap * 2 : 65536;
		if ((counts = realloc(counts, counts_cap * sizeof *counts)) == NULL)
			die("realloc");
	}
	counts[ncounts++] = v;
}

/* One answer is complete: account for it and send the next request. */
static void
answered(struct conn *c, int status, const char *body, size_t len)
{
	double t = now(), lat = t - c->sent_at;
	const char *p;

	c->busy = 0;
	outstanding--;
	if (!burst && t > t_end) {
		stopping = 1;
	} else {
		t_last = t;
		lat_total += lat;
		if (lat > lat_max)
			lat_max = lat;
		if (status == 200) {
			ok++;
			p = memmem(body, len, "\"count\"", 7);
			if (p != NULL && (p = memchr(p, ':', len - (p - body))) != NULL)
				keep_count(strtoll(p + 1, NULL, 10));
			else
				no_count++;
		} else
			bad_status++;
	}
	if (!burst && !stopping)
		conn_send(c);
	if (outstanding == 0 && (burst || stopping))
		event_base_loopbreak(base);
}

/* Parse as many complete answers as the input holds. */
static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {
		struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		size_t hlen, blen = 0, total;
		char *head, *p;
		int status;

		if (end.pos == -1)
			return;
		hlen = end.pos + 4;
		head = (char *)evbuffer_pullup(in, hlen);
		if (sscanf(head, "HTTP/1.%*d %d", &status) != 1) {
			fprintf(stderr, "unixload: not an HTTP answer\n");
			exit(1);
		}
		for (p = head; p < head + hlen; p++) {
			if ((p == head || p[-1] == '\n') &&
			    strncasecmp(p, "content-length:", 15) == 0) {
				blen = strtoul(p + 15, NULL, 10);
				break;
			}
		}
		total = hlen + blen;
		if (evbuffer_get_length(in) < total)
			return;
		head = (char *)evbuffer_pullup(in, total);
		answered(c, status, head + hlen, blen);
		evbuffer_drain(in, total);
	}
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	conn_errors++;
	bufferevent_free(c->bev);
	c->bev = NULL;
	if (c->busy) {
		c->busy = 0;
		outstanding--;
	}
	if (burst || stopping) {
		if (outstanding == 0)
			event_base_loopbreak(base);
		return;
	}
	conn_open(c);
	conn_send(c);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	stopping = 1;
	if (outstanding == 0)
		event_base_loopbreak(base);
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void
usage(void)
{
	fprintf(stderr, "usage: unixload -s SOCKET [-p PATH] -c CONCURRENCY (-d SECONDS | -b)\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct conn *conns;
	struct event *deadline = NULL;
	struct timeval tv;
	uint64_t dups = 0;
	double elapsed;
	long conc = 64;
	size_t i;
	int ch;

	while ((ch = getopt(argc, argv, "s:p:c:d:b")) != -1) {
		switch (ch) {
		case 's':
			sock_path = optarg;
			break;
		case 'p':
			path = optarg;
			break;
		case 'c':
			conc = atol(optarg);
			break;
		case 'd':
			duration = atof(optarg);
			break;
		case 'b':
			burst = 1;
			break;
		default:
			usage();
		}
	}
	if (sock_path == NULL || conc < 1 || duration <= 0)
		usage();
	request_len = snprintf(request, sizeof request,
	    "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n", path);
	if ((base = event_base_new()) == NULL)
		die("event_base_new");
	if ((conns = calloc(conc, sizeof *conns)) == NULL)
		die("calloc");
	for (i = 0; i < (size_t)conc; i++)
		conn_open(&conns[i]);

	t_start = t_last = now();
	t_end = t_start + duration;
	if (!burst) {
		tv.tv_sec = (time_t)duration;
		tv.tv_usec = (suseconds_t)((duration - tv.tv_sec) * 1e6);
		deadline = evtimer_new(base, deadline_cb, NULL);
		evtimer_add(deadline, &tv);
	}
	for (i = 0; i < (size_t)conc; i++)
		conn_send(&conns[i]);
	event_base_dispatch(base);
	elapsed = burst ? t_last - t_start : duration;

	qsort(counts, ncounts, sizeof *counts, cmp_i64);
	for (i = 1; i < ncounts; i++)
		if (counts[i] == counts[i - 1])
			dups++;
	printf("{\"mode\": \"%s\", \"concurrency\": %ld, \"seconds\": %.4f, "
	       "\"ok\": %" PRIu64 ", \"bad_status\": %" PRIu64 ", \"conn_errors\": %" PRIu64 ", "
	       "\"per_s\": %.1f, \"mean_latency_ms\": %.3f, \"max_latency_ms\": %.3f, "
	       "\"duplicates\": %" PRIu64 ", \"no_count\": %" PRIu64 ", "
	       "\"min_count\": %" PRId64 ", \"max_count\": %" PRId64 "}\n",
	    burst ? "burst" : "closed-loop", conc, elapsed, ok, bad_status, conn_errors,
	    ok / elapsed, ok ? lat_total / ok * 1e3 : 0.0, lat_max * 1e3, dups, no_count,
	    ncounts ? counts[0] : 0, ncounts ? counts[ncounts - 1] : 0);
	for (i = 0; i < (size_t)conc; i++)
		if (conns[i].bev != NULL)
			bufferevent_free(conns[i].bev);
	if (deadline != NULL)
		event_free(deadline);
	event_base_free(base);
	free(conns);
	free(counts);
	return 0;
}
