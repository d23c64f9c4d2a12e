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
 *
 * -w GRACE (default 15 s): how long to wait for answers after the closed-loop
 * deadline (a burst waits GRACE + 60 s); what is still unanswered then is
 * reported as "unanswered" instead of hanging.
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
static double grace = 15; /* seconds to wait for answers after the deadline */
static uint64_t unanswered;
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

/*
 * Length of a complete chunked body starting at p (n bytes available), or
 * -1 if more input is needed. The decoded body is copied to out (size n).
 */
static long
chunked_length(const char *p, size_t n, char *out, size_t *outlen)
{
	size_t off = 0;

	*outlen = 0;
	for (;;) {
		const char *eol = memmem(p + off, n - off, "\r\n", 2);
		unsigned long sz;

		if (eol == NULL)
			return -1;
		sz = strtoul(p + off, NULL, 16);
		off = eol - p + 2;
		if (sz == 0) {
			/* No trailers expected: the last chunk ends with an empty line. */
			if (n - off < 2)
				return -1;
			return off + 2;
		}
		if (n - off < sz + 2)
			return -1;
		memcpy(out + *outlen, p + off, sz);
		*outlen += sz;
		off += sz + 2;
	}
}

/* Parse as many complete answers as the input holds. */
static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {
		struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		size_t hlen, blen = 0, total, avail;
		char *head, *p;
		int status, chunked = 0;

		if (end.pos == -1)
			return;
		hlen = end.pos + 4;
		head = (char *)evbuffer_pullup(in, hlen);
		if (sscanf(head, "HTTP/1.%*d %d", &status) != 1) {
			fprintf(stderr, "unixload: not an HTTP answer\n");
			exit(1);
		}
		for (p = head; p < head + hlen; p++) {
			if (p != head && p[-1] != '\n')
				continue;
			if (strncasecmp(p, "content-length:", 15) == 0)
				blen = strtoul(p + 15, NULL, 10);
			else if (strncasecmp(p, "transfer-encoding:", 18) == 0 &&
			    memmem(p, head + hlen - p, "chunked", 7) != NULL)
				chunked = 1;
		}
		avail = evbuffer_get_length(in);
		if (chunked) {
			char *body;
			long clen;

			head = (char *)evbuffer_pullup(in, -1);
			if ((body = malloc(avail)) == NULL)
				die("malloc");
			clen = chunked_length(head + hlen, avail - hlen, body, &blen);
			if (clen < 0) {
				free(body);
				return;
			}
			answered(c, status, body, blen);
			free(body);
			evbuffer_drain(in, hlen + clen);
			continue;
		}
		total = hlen + blen;
		if (avail < total)
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

/* Stop the loop when answers are overdue: they are counted as unanswered. */
static void
giveup_cb(evutil_socket_t fd, short what, void *arg)
{
	unanswered = outstanding;
	event_base_loopbreak(base);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct event *giveup = arg;
	struct timeval tv = { (time_t)grace, 0 };

	stopping = 1;
	if (outstanding == 0)
		event_base_loopbreak(base);
	else
		evtimer_add(giveup, &tv);
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
	fprintf(stderr, "usage: unixload -s SOCKET [-p PATH] [-w GRACE] -c CONCURRENCY (-d SECONDS | -b)\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct conn *conns;
	struct event *deadline = NULL, *giveup;
	struct timeval tv;
	uint64_t dups = 0;
	double elapsed;
	long conc = 64;
	size_t i;
	int ch;

	while ((ch = getopt(argc, argv, "s:p:c:d:bw:")) != -1) {
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
		case 'w':
			grace = atof(optarg);
			break;
		default:
			usage();
		}
	}
	if (sock_path == NULL || conc < 1 || duration <= 0 || grace < 1)
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
	giveup = evtimer_new(base, giveup_cb, NULL);
	if (!burst) {
		tv.tv_sec = (time_t)duration;
		tv.tv_usec = (suseconds_t)((duration - tv.tv_sec) * 1e6);
		deadline = evtimer_new(base, deadline_cb, giveup);
		evtimer_add(deadline, &tv);
	} else {
		/* A burst gets the grace period plus a minute to be answered. */
		tv.tv_sec = (time_t)grace + 60;
		tv.tv_usec = 0;
		evtimer_add(giveup, &tv);
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
	       "\"duplicates\": %" PRIu64 ", \"no_count\": %" PRIu64 ", \"unanswered\": %" PRIu64 ", "
	       "\"min_count\": %" PRId64 ", \"max_count\": %" PRId64 "}\n",
	    burst ? "burst" : "closed-loop", conc, elapsed, ok, bad_status, conn_errors,
	    ok / elapsed, ok ? lat_total / ok * 1e3 : 0.0, lat_max * 1e3, dups, no_count, unanswered,
	    ncounts ? counts[0] : 0, ncounts ? counts[ncounts - 1] : 0);
	for (i = 0; i < (size_t)conc; i++)
		if (conns[i].bev != NULL)
			bufferevent_free(conns[i].bev);
	if (deadline != NULL)
		event_free(deadline);
	event_free(giveup);
	event_base_free(base);
	free(conns);
	free(counts);
	return 0;
}
