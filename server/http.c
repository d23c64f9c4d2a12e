/*
 * http.c: libmicrohttpd glued to the libevent loop, request lifetimes, routing
 * through the table in api.c, limits and the access log.
 *
 * libmicrohttpd runs in external epoll mode: its epoll fd is one libevent read
 * event and MHD_get_timeout() drives one libevent timer, so no thread is parked
 * per request. Delayed requests are suspended connections (delay.c).
 *
 * Every connection is listed with its current request, so that shutdown can
 * close the ones with nothing in flight: libmicrohttpd has no call to close a
 * connection, so we shut its socket down and it closes it on seeing that.
 */
#include "config.h"

#include <sys/socket.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "server.h"
#include "util.h"

const char *const route_names[ROUTE_COUNT] = { "/record-count", "/records", "/clients", "/stats", "/healthz",
	"/metrics", "other" };

uint64_t http_requests_open;

/* One libmicrohttpd daemon per listening socket, each hooked into the loop. */
struct http_listener {
	struct MHD_Daemon *daemon;
	struct event *epoll_ev;
	struct event *timer_ev;
	struct event *pause_ev;       /* ends a pause after accept() failed with no connection open */
	int starved;                  /* accept() failed with no connection open (see http_run_one) */
};
/* The pause of a listener whose accept() fails with no connection open. */
#define HTTP_ACCEPT_PAUSE_MS 100
/* At most one log line per this many seconds about failing accepts. */
#define HTTP_ACCEPT_LOG_S 10
static struct log_limit http_accept_ll;
/* An answer is ready to queue: built, or out of memory (the prebuilt 503 goes). */
#define HTTP_PREPARED(r) ((r)->resp != NULL || (r)->nomem)
/* The answer of a request whose own could not be built: made at start, so it needs no memory then. */
static struct MHD_Response *http_nomem_resp;
/* The state of every request that had no memory for its own (never written). */
static struct req http_nomem_req;
static const char http_nomem_body[] = "{\"error\":\"out_of_memory\",\"message\":\"record-countd is out of memory: "
    "this answer could not be built. A record sent with the request may or may not be stored: retry it (if it was "
    "stored, the answer says duplicate)\"}\n";
static struct http_listener *http_listeners;
static size_t http_nlisteners;
static int http_quiesced;
static int http_kick;
/* Since the signal to stop: answers queued, answers their clients did not read, bodies cut off. */
static uint64_t http_stop_answered, http_unread, http_stop_cut;

/* One connection (libmicrohttpd's socket context) and the request it is on. */
struct http_conn {
	struct MHD_Connection *conn;
	int fd;
	struct req *req;              /* from its request line to its last callback, else NULL */
	int shut;                     /* its socket is shut down: libmicrohttpd is closing it */
	uint64_t due_us;              /* its request line is due from then (opened, or last answer), or its
	                                 request whole from then (its request line) */
	LIST_ENTRY(http_conn) entry;
};
static LIST_HEAD(, http_conn) http_conns = LIST_HEAD_INITIALIZER(http_conns);
static struct event *http_grace_ev;
/*
 * libmicrohttpd's timeout counts from a connection's last byte, so a client
 * trickling one byte at a time keeps a connection forever: every
 * HTTP_DUE_SWEEP_MS, requests still arriving --connection-timeout after
 * they were due are cut (see http_due_cb).
 */
#define HTTP_DUE_SWEEP_MS 250
static struct event *http_due_ev;
static struct log_limit http_due_ll;

/*
 * libmicrohttpd keeps a request's target and header lines in its per-connection
 * pool (MHD_MEMORY_LIMIT), with a record of about this many bytes for each
 * header field and cookie, and builds the head of the answer in what is left.
 */
#define HTTP_POOL_RECORD 64
#define HTTP_POOL_SPARE 512       /* left for the answer's head, with a margin */
/* libmicrohttpd's buffer for a streamed answer's pieces. */
#define HTTP_STREAM_BLOCK 4096

/* Re-arm l's timer from libmicrohttpd's next timeout. */
static void
http_reschedule(struct http_listener *l)
{
	MHD_UNSIGNED_LONG_LONG ms;
	struct timeval tv;

	if (MHD_get_timeout(l->daemon, &ms) == MHD_YES) {
		tv.tv_sec = (time_t)(ms / 1000);
		tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
		evtimer_add(l->timer_ev, &tv);
	} else
		evtimer_del(l->timer_ev);
}

/* Connections open in one daemon now. */
static unsigned int
http_connections(struct MHD_Daemon *d)
{
	const union MHD_DaemonInfo *info;

	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	return info ? info->num_connections : 0;
}

/* Run one daemon and re-arm its timer. */
static void
http_run_one(struct http_listener *l)
{
	unsigned int before;
	int i;

	/*
	 * When libmicrohttpd gives up on a request by itself (it logs then),
	 * it closes the connection only on its next run, which in epoll mode
	 * may never come: run it again at once.
	 */
	/*
	 * Likewise, when connections close while it is at --max-connections,
	 * it puts the listening socket back into its epoll set only on the
	 * next run; without one nothing would wake the loop to accept again.
	 */
	for (i = 0; i < 4; i++) {
		http_kick = 0;
		before = http_connections(l->daemon);
		MHD_run(l->daemon);
		if (l->starved || (!http_kick && http_connections(l->daemon) >= before))
			break;
	}
	/*
	 * accept() failed for want of descriptors with no connection open
	 * in this daemon: libmicrohttpd then keeps the listening socket in
	 * its epoll set (it stops accepting only until one of its own
	 * connections closes, and there is none), so its epoll fd stays
	 * readable and the loop would spin on accept(). Nothing else is in
	 * that set: stop watching it for a while.
	 */
	if (l->starved) {
		l->starved = 0;
		if (http_connections(l->daemon) == 0) {
			struct timeval tv = { 0, HTTP_ACCEPT_PAUSE_MS * 1000 };

			event_del(l->epoll_ev);
			evtimer_add(l->pause_ev, &tv);
		}
	}
	http_reschedule(l);
}

/* The pause after a failed accept() is over: watch the daemon again. */
static void
http_pause_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_listener *l = arg;

	if (http_quiesced)
		return;
	event_add(l->epoll_ev, NULL);
	http_run_one(l);
}

/* Run every daemon once (after resuming connections, which may belong to any). */
void
http_run(void)
{
	size_t i;

	for (i = 0; i < http_nlisteners; i++)
		http_run_one(&http_listeners[i]);
}

/* A daemon's epoll fd is readable, or its timer expired. */
static void
http_event_cb(evutil_socket_t fd, short what, void *arg)
{
	http_run_one(arg);
}

static void http_req_free(struct req *r);
static void http_log_cb(void *, const char *, va_list) __attribute__((format(printf, 2, 0)));
static void http_error_raw(struct req *, unsigned, const char *, const char *, ...)
    __attribute__((format(printf, 4, 5)));
static void http_access_log(struct req *r, double end);

/* Shut hc's socket down; libmicrohttpd sees the end of it and closes the connection. */
static void
http_conn_shut(struct http_conn *hc)
{
	if (hc->shut || hc->fd == -1)
		return;
	hc->shut = 1;
	shutdown(hc->fd, SHUT_RDWR);
}

/*
 * The connection whose headers libmicrohttpd is rejecting right now: the
 * only one with a request whose headers are all in, no handler run yet and
 * no answer queued. NULL if there is not exactly one.
 */
static struct http_conn *
http_rejected_conn(void)
{
	struct http_conn *hc, *found = NULL;

	LIST_FOREACH(hc, &http_conns, entry) {
		if (hc->req == NULL || hc->req->started || hc->req->answered || hc->shut)
			continue;
		if (MHD_get_connection_info(hc->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE) == NULL ||
		    MHD_get_connection_info(hc->conn, MHD_CONNECTION_INFO_HTTP_STATUS) != NULL)
			continue;
		if (found != NULL)
			return NULL;
		found = hc;
	}
	return found;
}

/*
 * The connection whose chunked body libmicrohttpd is rejecting right now:
 * the only one with a chunked body arriving (its handler ran for the
 * headers, not yet for the end). NULL if there is not exactly one.
 */
static struct http_conn *
http_chunked_conn(void)
{
	struct http_conn *hc, *found = NULL;
	const char *te;

	LIST_FOREACH(hc, &http_conns, entry) {
		if (hc->req == NULL || hc->req->started != 1 || hc->req->answered || hc->shut)
			continue;
		te = MHD_lookup_connection_value(hc->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
		if (te == NULL || strcasecmp(te, "chunked") != 0)
			continue;
		if (found != NULL)
			return NULL;
		found = hc;
	}
	return found;
}

/* Whether s is a decimal number (that may be too large to fit). */
static int
http_is_decimal(const char *s)
{
	return s[0] != '\0' && strspn(s, "0123456789") == strlen(s);
}

/*
 * Make an error message safe for JSON in place: bytes a client sent (a
 * method, a header value) may be invalid UTF-8, which jansson refuses, and
 * a message cut at its buffer's end may split a character. Control and
 * non-ASCII bytes become '?'.
 */
static const char *
http_printable(char *s)
{
	char *p;

	for (p = s; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	return s;
}

/*
 * Write r's JSON error straight to hc's socket (Connection: close) and shut
 * it down; r is answered. For requests whose answer libmicrohttpd would not
 * send right: it has nothing else to send on the connection then, and the
 * answer is small, so the socket's buffer takes it at once.
 */
static void
http_answer_raw(struct http_conn *hc, struct req *r, unsigned status, const char *code, const char *text)
{
	char date[64], msg[512], out[4096], *body = NULL;
	const char *text_out;
	json_t *doc;
	struct tm tm;
	time_t now;
	int len;

	snprintf(msg, sizeof msg, "%s", text);
	if ((doc = json_pack("{ss ss}", "error", code, "message", http_printable(msg))) != NULL) {
		body = jmem_dumps(doc, JSON_COMPACT);
		json_decref(doc);
	}
	/* Out of memory: the prebuilt answer instead (the head is built on the stack). */
	if (body == NULL) {
		http_nomem_log("building an error answer");
		status = MHD_HTTP_SERVICE_UNAVAILABLE;
	}
	text_out = body != NULL ? body : http_nomem_body;
	now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	len = snprintf(out, sizeof out, "HTTP/1.1 %u %s\r\nDate: %s\r\nConnection: close\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\n\r\n%s%s", status, MHD_get_reason_phrase_for(status), date,
	    strlen(text_out) + (body != NULL), text_out, body != NULL ? "\n" : "");
	free(body);
	if (len > 0 && (size_t)len < sizeof out)
		send(hc->fd, out, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
	http_conn_shut(hc);
	r->answered = 1;
	if (http_quiesced)
		http_stop_answered++;
	r->status = status;
	if (status >= 400 && status < 500)
		metrics_rejected();
	metrics_response(r->route, status, (double)(now_mono_us() - r->arrival_us) / 1e6);
	if (cfg.access_log && log_get_level() >= LOG_LEVEL_INFO)
		http_access_log(r, now_wall());
}

/*
 * libmicrohttpd 0.9.75 rejects some requests itself once their headers are
 * in (a Content-Length that is not a number, or is past 2^64; cookies that
 * overflow its pool) and then sends its HTML error with the status line and
 * headers twice: its header step queues the answer and builds its head,
 * then the next step builds the head again. Our handler never runs for such
 * a request and there is no hook in between, so we answer it here, while it
 * logs the error: the JSON answer goes straight to the socket, which is then
 * shut down, so libmicrohttpd's copy goes nowhere and it closes the
 * connection when its write fails. Any other rejection is left to it.
 */
static void
http_rejected(unsigned status, const char *text)
{
	struct http_conn *hc;
	const char *cl;
	char msg[256];

	/* A malformed chunked body, or a chunk size past 2^64: the handler ran for the headers, so likewise. */
	if (strstr(text, "chunk") != NULL) {
		if ((hc = http_chunked_conn()) == NULL)
			return;
		if (status == MHD_HTTP_CONTENT_TOO_LARGE) {
			snprintf(msg, sizeof msg, "a chunk size of the request body is too large; the body limit is %d bytes",
			    LIMIT_BODY);
			http_answer_raw(hc, hc->req, status, "body_too_large", msg);
		} else
			http_answer_raw(hc, hc->req, MHD_HTTP_BAD_REQUEST, "invalid_chunked_body",
			    "the request body is not valid chunked encoding (hex size, CRLF, data, CRLF; a last chunk of 0)");
		return;
	}
	if ((hc = http_rejected_conn()) == NULL)
		return;
	cl = MHD_lookup_connection_value(hc->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if ((status == MHD_HTTP_BAD_REQUEST || status == MHD_HTTP_CONTENT_TOO_LARGE) && cl != NULL) {
		/* It cannot parse it, or it is past 2^64 - 1. */
		if (http_is_decimal(cl)) {
			snprintf(msg, sizeof msg, "Content-Length %.40s is over the limit of %d bytes", cl, LIMIT_BODY);
			http_answer_raw(hc, hc->req, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large", msg);
		} else {
			snprintf(msg, sizeof msg, "Content-Length \"%.40s\" is not a number of bytes (0..%d)", cl,
			    LIMIT_BODY);
			http_answer_raw(hc, hc->req, MHD_HTTP_BAD_REQUEST, "invalid_content_length", msg);
		}
	} else if (status == MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE &&
	    MHD_lookup_connection_value(hc->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_COOKIE) != NULL) {
		snprintf(msg, sizeof msg, "the request's cookies do not fit in the %d bytes a request may use; "
		    "send fewer (this API reads none)", MHD_MEMORY_LIMIT);
		http_answer_raw(hc, hc->req, status, "headers_too_large", msg);
	}
}

/*
 * libmicrohttpd's own messages go into our log (without their newline), at
 * info level: nearly all are about one client's connection, and a flood of
 * them at warn would drown the journal.
 */
/*
 * libmicrohttpd's accept() on l failed (why: strerror's text): say so at
 * most every HTTP_ACCEPT_LOG_S seconds, not once per try. Out of
 * descriptors, it stops accepting until one of l's connections closes
 * (with none open, http_run_one() pauses l instead); the connections
 * wait in the listening socket's backlog meanwhile.
 */
static void
http_accept_failed(struct http_listener *l, const char *why)
{
	unsigned long skipped;
	char more[64] = "";

	if (!log_limit_due(&http_accept_ll, HTTP_ACCEPT_LOG_S, &skipped))
		return;
	if (skipped > 0)
		snprintf(more, sizeof more, " (%lu more since the last)", skipped);
	if (strcmp(why, strerror(EMFILE)) == 0 || strcmp(why, strerror(ENFILE)) == 0)
		log_warnx("cannot accept connections: %s%s: no file descriptor left, with %u connections open; new "
		    "connections wait and are accepted when one is free (raise the open-files limit: LimitNOFILE=, "
		    "ulimit -n; or lower --max-connections)", why, more, http_connections(l->daemon));
	else
		log_warnx("cannot accept connections: %s%s", why, more);
}

/*
 * libmicrohttpd says something about most connections a client drops in the
 * middle of a request, so a client could fill the log (and journald's rate
 * limit, which would drop our own warnings): at most HTTP_MHD_LOG_BURST of
 * its messages per HTTP_MHD_LOG_S seconds, the next saying how many were not.
 */
#define HTTP_MHD_LOG_BURST 20
#define HTTP_MHD_LOG_S 10
static struct log_limit http_mhd_ll;

static void
http_log_cb(void *arg, const char *fmt, va_list ap)
{
	struct http_listener *l = arg;
	char buf[1024];
	unsigned status;
	unsigned long dropped;
	size_t n;

	vsnprintf(buf, sizeof buf, fmt, ap);
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (strncmp(buf, "Error accepting connection: ", 28) == 0) {
		http_accept_failed(l, buf + 28);
		return;
	}
	if (strncmp(buf, "Hit process or system resource limit", 36) == 0) {
		/* Said after each failed accept of too few descriptors: http_accept_failed() said it better. */
		if (strstr(buf, "FIRST connection") != NULL)
			l->starved = 1;
		return;
	}
	http_kick = 1;
	status = 0;
	sscanf(buf, "Error processing request (HTTP response code is %u", &status);
	/* Some of its messages quote the request target as the client sent it (escapes, bare CRs, any byte). */
	if (log_limit_burst_due(&http_mhd_ll, HTTP_MHD_LOG_S, HTTP_MHD_LOG_BURST, &dropped)) {
		if (dropped > 0)
			log_info("libmicrohttpd: %s (and %lu more of its messages not logged)", http_printable(buf),
			    dropped);
		else
			log_info("libmicrohttpd: %s", http_printable(buf));
	}
	if (status != 0)
		http_rejected(status, buf);
}

/*
 * A request line arrived: allocate its state and note its arrival time.
 *
 * libmicrohttpd would then split the query into its per-connection pool,
 * one ~64-byte record per parameter, and a few hundred parameters exhaust it
 * before our handler could refuse them. We parse the query ourselves (from
 * r->query), so we end it where libmicrohttpd looks for it: uri points into
 * its writable request-line buffer, and 0.9.75 splits the query only after
 * this callback returns. Nothing may read MHD_GET_ARGUMENT_KIND values.
 */
static void *
http_uri_cb(void *arg, const char *uri, struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info;
	struct http_conn *hc;
	struct req *r;
	const char *q, *p = NULL;
	size_t plen, ulen;
	int end_known;

	end_known = uri != NULL;
	if (uri == NULL)
		uri = "";
	ulen = strlen(uri);
	q = strchr(uri, '?');
	/* The absolute form (RFC 9112 3.2.2: a server must accept it): the path follows the authority. */
	if (strncasecmp(uri, "http://", 7) == 0)
		p = uri + 7;
	else if (strncasecmp(uri, "https://", 8) == 0)
		p = uri + 8;
	p = p != NULL ? p + strcspn(p, "/?") : uri;
	plen = (size_t)((q ? q : uri + ulen) - p);
	/* One allocation per request: the state, then the target and its path ("/" at least). */
	if ((r = calloc(1, sizeof *r + ulen + 1 + plen + 2)) == NULL)
		return NULL;
	r->conn = conn;
	r->arrival_us = now_mono_us();
	r->arrival_wall = now_wall();
	r->route = ROUTE_OTHER;
	r->uri_len = ulen;
	r->uri_end = end_known ? uri + ulen : NULL;
	r->uri = (char *)(r + 1);
	memcpy(r->uri, uri, ulen + 1);
	r->path = r->uri + ulen + 1;
	memcpy(r->path, p, plen);
	r->path[plen] = '\0';
	if (plen == 0 && p != uri)
		strcpy(r->path, "/");
	r->query = q ? r->uri + (q - uri) + 1 : "";
	if (q != NULL)
		((char *)q)[1] = '\0';
	http_requests_open++;
	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (info != NULL && (hc = info->socket_context) != NULL) {
		if (hc->req != NULL)
			http_req_free(hc->req);         /* the previous request was dropped by libmicrohttpd */
		hc->req = r;
		hc->due_us = r->arrival_us;
	}
	return r;
}

/*
 * Out of memory building answers: a line at most HTTP_NOMEM_LOG_BURST per
 * HTTP_NOMEM_LOG_S seconds, the next saying how many were not logged.
 */
#define HTTP_NOMEM_LOG_S 10
#define HTTP_NOMEM_LOG_BURST 3
void
http_nomem(struct req *r, const char *what)
{
	if (r->resp != NULL) {
		MHD_destroy_response(r->resp);
		r->resp = NULL;
	}
	r->nomem = 1;
	http_nomem_log(what);
}

/* Log that memory ran out doing what, and then what came of it, if a line is due. */
static void
http_nomem_say(const char *what, const char *then)
{
	static struct log_limit ll;
	unsigned long skipped;
	char more[64] = "";

	if (!log_limit_burst_due(&ll, HTTP_NOMEM_LOG_S, HTTP_NOMEM_LOG_BURST, &skipped))
		return;
	if (skipped > 0)
		snprintf(more, sizeof more, " (%lu more since the last such line)", skipped);
	log_warnx("out of memory %s: %s%s", what, then, more);
}

/* Log that memory ran out doing what and a request answers 503, if a line is due. */
void
http_nomem_log(const char *what)
{
	http_nomem_say(what, "answered 503 out_of_memory");
}

/* Give r's response its Content-Type (and Connection: close when stopping); 0, or -1 answering 503. */
static int
http_set_headers(struct req *r, const char *type)
{
	if (MHD_add_response_header(r->resp, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES ||
	    (shutting_down && MHD_add_response_header(r->resp, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES)) {
		http_nomem(r, "building an answer");
		return -1;
	}
	return 0;
}

/* Build a response from a malloc'd buffer (NULL: out of memory) with Content-Type. */
static void
http_set(struct req *r, unsigned status, const char *type, char *text, size_t len)
{
	if (r->resp != NULL)
		MHD_destroy_response(r->resp);
	r->resp = text != NULL ? MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE) : NULL;
	if (r->resp == NULL) {
		free(text);
		http_nomem(r, "building an answer");
		return;
	}
	if (http_set_headers(r, type) != 0)
		return;
	r->status = status;
}

/* Prepare a JSON answer; the reference to body is stolen. */
void
http_answer(struct req *r, unsigned status, json_t *body)
{
	char *text, *grown;
	size_t len;

	text = body ? jmem_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (text == NULL) {
		http_nomem(r, "building an answer");
		return;
	}
	len = strlen(text);
	if ((grown = realloc(text, len + 2)) == NULL) {
		free(text);
		http_nomem(r, "building an answer");
		return;
	}
	text = grown;
	text[len++] = '\n';
	text[len] = '\0';
	http_set(r, status, "application/json", text, len);
}

/* Prepare a JSON error answer. */
void
http_error(struct req *r, unsigned status, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (status >= 400 && status < 500)
		metrics_rejected();
	http_answer(r, status, json_pack("{ss ss}", "error", code, "message", http_printable(msg)));
}

/* A streamed answer's source (see http_answer_stream()). */
struct http_stream {
	ssize_t (*read)(void *, char *, size_t);
	void (*done)(void *);
	void *arg;
};

/* libmicrohttpd wants more of a streamed answer. */
static ssize_t
http_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct http_stream *hs = cls;
	ssize_t n;

	if ((n = hs->read(hs->arg, buf, max)) == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (n < 0) {
		/* The status and part of the body are sent: a 503 cannot be. */
		http_nomem_say("writing a streamed answer", "its connection closed, the answer cut short");
		return MHD_CONTENT_READER_END_WITH_ERROR;
	}
	return n;
}

/* A streamed answer is over, sent or not. */
static void
http_stream_free(void *cls)
{
	struct http_stream *hs = cls;

	hs->done(hs->arg);
	free(hs);
}

/*
 * Prepare an answer of unknown length (chunked in HTTP/1.1), which read(arg,
 * buf, max) writes piece by piece as the connection takes it, returning
 * bytes written, never 0 before the end, or -1 if it cannot go on (the
 * connection is then closed); done(arg) is called once it is over (sent,
 * failed or never queued), and at once if out of memory (a 503).
 */
void
http_answer_stream(struct req *r, unsigned status, const char *type, ssize_t (*read)(void *, char *, size_t),
    void (*done)(void *), void *arg)
{
	struct http_stream *hs;

	if (r->resp != NULL) {
		MHD_destroy_response(r->resp);
		r->resp = NULL;
	}
	if ((hs = malloc(sizeof *hs)) == NULL) {
		done(arg);
		http_nomem(r, "building an answer");
		return;
	}
	hs->read = read;
	hs->done = done;
	hs->arg = arg;
	r->resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK, http_stream_read, hs,
	    http_stream_free);
	if (r->resp == NULL) {
		http_stream_free(hs);
		http_nomem(r, "building an answer");
		return;
	}
	if (http_set_headers(r, type) != 0)
		return;
	/*
	 * libmicrohttpd 0.9.75 ends a chunked answer to HEAD with the last chunk
	 * ("0" and a blank line), which the client would read as the start of
	 * its next answer: HEAD gets one delimited by closing the connection.
	 */
	if (strcmp(r->method, MHD_HTTP_METHOD_HEAD) == 0)
		MHD_set_response_options(r->resp, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT, MHD_RO_END);
	r->status = status;
}

/* Prepare a plain-text answer; NULL text (out of memory) answers 503. */
void
http_answer_text(struct req *r, unsigned status, const char *type, char *text, size_t len)
{
	http_set(r, status, type, text, len);
}

/* Copy s to p as one word of the access log ("-" if empty), each space, control or non-ASCII byte as '?'. */
static char *
http_log_word(char *p, const char *s)
{
	if (s == NULL || *s == '\0')
		*p++ = '-';
	for (; s != NULL && *s != '\0'; s++)
		*p++ = (unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f ? '?' : *s;
	return p;
}

/* Write the access-log line of r (one line, values listed). */
static void
http_access_log(struct req *r, double end)
{
	char *line, *p;
	size_t i, cap;

	/* The method and path are the client's, of any length its request line fits in. */
	cap = 256 + (r->method ? strlen(r->method) : 0) + strlen(r->path) + r->nvalues * 21;
	if ((line = malloc(cap)) == NULL)
		return;
	p = line + snprintf(line, cap, "access method=");
	p = http_log_word(p, r->method);
	p += snprintf(p, cap - (size_t)(p - line), " path=");
	p = http_log_word(p, r->path);
	p += snprintf(p, cap - (size_t)(p - line), " status=%u client=%s values=", r->status,
	    r->client[0] ? r->client : "-");
	for (i = 0; i < r->nvalues; i++)
		p += snprintf(p, cap - (size_t)(p - line), "%s%llu", i ? "," : "", (unsigned long long)r->values[i]);
	if (r->nvalues == 0)
		*p++ = '-';
	snprintf(p, cap - (size_t)(p - line), " start=%.6f end=%.6f", r->arrival_wall, end);
	/* Not through log_info(): its buffer would cut a long list of values. */
	log_line(LOG_LEVEL_INFO, line);
	free(line);
}

/* Leave the in-flight count once (answered, or the connection went away). */
static void
http_leave(struct req *r)
{
	if (r->counted) {
		r->counted = 0;
		metrics_request_end(r->cs);
	}
}

/*
 * While shutting down, bound how long an answer may sit unread: a client
 * that stops reading would otherwise hold the exit for --connection-timeout,
 * or forever with 0. Any progress restarts libmicrohttpd's timer.
 */
static void
http_bound_send(struct MHD_Connection *conn)
{
	if (cfg.connection_timeout_ms == 0 || cfg.connection_timeout_ms > SHUTDOWN_SEND_STALL_S * 1000)
		MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned int)SHUTDOWN_SEND_STALL_S);
}

/* Queue r's prepared response now; the request is answered. */
static enum MHD_Result
http_send(struct req *r)
{
	enum MHD_Result ret;
	double end;

	if (r->resp == NULL && r->nomem) {
		/* Shared, made at start: queued, never destroyed here. */
		r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
		ret = MHD_queue_response(r->conn, r->status, http_nomem_resp);
	} else if (r->resp == NULL) {
		r->answered = 1;
		http_leave(r);
		return MHD_NO;
	} else {
		ret = MHD_queue_response(r->conn, r->status, r->resp);
		MHD_destroy_response(r->resp);
		r->resp = NULL;
	}
	if (http_quiesced)
		http_bound_send(r->conn);
	r->answered = 1;
	if (http_quiesced)
		http_stop_answered++;
	end = now_wall();
	metrics_response(r->route, r->status, (double)(now_mono_us() - r->arrival_us) / 1e6);
	http_leave(r);
	if (cfg.access_log && log_get_level() >= LOG_LEVEL_INFO)
		http_access_log(r, end);
	return ret;
}

/*
 * Answer r with a JSON error on its socket, not through libmicrohttpd: a
 * request with many or long header lines may leave its pool no room to
 * build the answer's head, and it would close the connection unanswered.
 */
static void
http_error_raw(struct req *r, unsigned status, const char *code, const char *fmt, ...)
{
	const union MHD_ConnectionInfo *info;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	info = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (info == NULL || info->socket_context == NULL)
		http_error(r, status, code, "%s", msg);
	else
		http_answer_raw(info->socket_context, r, status, code, msg);
}

/* Query parameters: '&'-separated fields, empty ones included, a trailing '&' adding none. */
static size_t
http_params(const char *q)
{
	size_t n = 0;

	if (*q == '\0')
		return 0;
	for (; *q != '\0'; q++)
		if (*q == '&')
			n++;
	return q[-1] == '&' ? n : n + 1;
}

/* What a request's headers take: their lines' bytes, and how many fields and cookies. */
struct http_headers {
	size_t bytes;
	int fields;
	int cookies;
	const char *length;           /* the first Content-Length */
	int lengths_differ;           /* another Content-Length says something else */
	const char *coding;           /* the first Transfer-Encoding (the one libmicrohttpd reads), if any */
	int codings;                  /* Transfer-Encoding fields */
	const char *expect;           /* the first Expect other than 100-continue, if any */
	const char *bad_name;         /* the first field name that is not a token, if any */
};

/* Whether s is an RFC 9110 token (a field name): no space, tab, control, separator or non-ASCII byte. */
static int
http_is_token(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		    strchr("!#$%&'*+-.^_`|~", *s) != NULL))
			return 0;
	return 1;
}

/* Add one header field or cookie to the request's struct http_headers. */
static enum MHD_Result
http_header_size_cb(void *arg, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct http_headers *h = arg;

	if (kind == MHD_COOKIE_KIND) {
		h->cookies++;
		return MHD_YES;
	}
	h->bytes += strlen(key) + (value ? strlen(value) : 0) + 4;
	h->fields++;
	if (h->bad_name == NULL && !http_is_token(key))
		h->bad_name = key;
	if (value == NULL)
		return MHD_YES;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		if (h->length == NULL)
			h->length = value;
		else if (strcmp(h->length, value) != 0)
			h->lengths_differ = 1;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0 && h->codings++ == 0)
		h->coding = value;
	else if (strcasecmp(key, MHD_HTTP_HEADER_EXPECT) == 0 && strcasecmp(value, "100-continue") != 0 &&
	    h->expect == NULL)
		h->expect = value;
	return MHD_YES;
}

/* HEAD is a GET without a body, except where GET records something. */
static int
http_head_ok(const struct route_entry *e)
{
	return strcmp(e->method, "GET") == 0 && e->route != ROUTE_RECORD_COUNT;
}

/* Find r's route; answer 404 or 405 (with Allow) if there is none. */
static const struct route_entry *
http_route(struct req *r)
{
	const struct route_entry *e, *found = NULL;
	char allow[64] = "";
	size_t i;
	int path_ok = 0;

	for (i = 0; i < api_nroutes; i++) {
		e = &api_routes[i];
		if (e->prefix ? strncmp(r->path, e->path, strlen(e->path)) != 0 : strcmp(r->path, e->path) != 0)
			continue;
		path_ok = 1;
		r->route = e->route;
		if (strcmp(r->method, e->method) == 0 || (strcmp(r->method, "HEAD") == 0 && http_head_ok(e))) {
			found = e;
			break;
		}
		if (strstr(allow, e->method) == NULL) {
			if (allow[0] != '\0')
				strcat(allow, ", ");
			strcat(allow, e->method);
			if (http_head_ok(e))
				strcat(allow, ", HEAD");
		}
	}
	if (found != NULL)
		return found;
	if (!path_ok)
		http_error(r, MHD_HTTP_NOT_FOUND, "not_found",
		    "no such path; try /record-count, /records, /clients/ID, /stats, /healthz or /metrics");
	else {
		http_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", "%s is not allowed here (allowed: %s)",
		    r->method, allow);
		if (r->resp != NULL)
			MHD_add_response_header(r->resp, MHD_HTTP_HEADER_ALLOW, allow);
	}
	return NULL;
}

/*
 * Did the request target have a raw NUL byte? libmicrohttpd 0.9.75 takes the
 * target up to the last space of the request line but hands it on as a C
 * string, so "/record-count?value=1<NUL>&client=x" would be served as
 * "/record-count?value=1". The line is parsed in place: the version string
 * follows the target and the space it replaced with a NUL, so a version that
 * starts later than right after the string's end means the string was cut.
 */
static int
http_target_nul(const struct req *r)
{
	if (r->uri_end == NULL || r->version == NULL || r->version <= r->uri_end + 1)
		return 0;
	return r->version - r->uri_end < MHD_MEMORY_LIMIT && r->version[-1] == '\0';
}

/* Checks made once the headers are in: size limits and routing. */
static const struct route_entry *
http_first(struct req *r)
{
	struct http_headers h = { 0, 0, 0, NULL, 0, NULL, 0, NULL, NULL };
	const struct route_entry *e;
	const char *cl;
	size_t np, pool;
	unsigned long long n;
	char *end;

	MHD_get_connection_values(r->conn, MHD_HEADER_KIND | MHD_COOKIE_KIND, http_header_size_cb, &h);
	r->no_body = h.coding == NULL &&
	    (h.length == NULL || (http_is_decimal(h.length) && strspn(h.length, "0") == strlen(h.length)));
	if (r->uri_len > LIMIT_URL) {
		http_error(r, MHD_HTTP_URI_TOO_LONG, "uri_too_long", "the request target is %zu bytes; the limit is %d",
		    r->uri_len, LIMIT_URL);
		return NULL;
	}
	if (http_target_nul(r)) {
		http_error(r, MHD_HTTP_BAD_REQUEST, "invalid_target",
		    "the request target has a NUL byte after \"%.40s\"", r->uri);
		return NULL;
	}
	if ((np = http_params(r->query)) > LIMIT_PARAMS) {
		http_error(r, MHD_HTTP_URI_TOO_LONG, "too_many_parameters",
		    "the query has %zu parameters; the limit is %d", np, LIMIT_PARAMS);
		return NULL;
	}
	if (h.bytes > LIMIT_HEADERS) {
		http_error_raw(r, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large",
		    "the request headers are %zu bytes; the limit is %d", h.bytes, LIMIT_HEADERS);
		return NULL;
	}
	if (h.fields > LIMIT_HEADER_FIELDS) {
		http_error_raw(r, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "too_many_headers",
		    "the request has %d header fields; the limit is %d", h.fields, LIMIT_HEADER_FIELDS);
		return NULL;
	}
	/* Within the limits above this can only fail with many cookies too, which this API never reads. */
	pool = r->uri_len + h.bytes + (size_t)(h.fields + h.cookies) * HTTP_POOL_RECORD;
	if (pool > MHD_MEMORY_LIMIT - HTTP_POOL_SPARE) {
		http_error_raw(r, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large",
		    "the request's target, header lines, %d fields and %d cookies need about %zu of the %d bytes "
		    "a request may use; send fewer cookies or shorter headers", h.fields, h.cookies, pool,
		    MHD_MEMORY_LIMIT);
		return NULL;
	}
	/*
	 * Where the body ends must be beyond doubt (RFC 9112 6.3), or a proxy in
	 * front and this server could disagree on where the next request starts:
	 * such a request is answered and its connection closed. libmicrohttpd
	 * keeps "Content-Length :" as a field of another name, which a proxy may
	 * have read as the length (RFC 9112 5.1: a server must answer 400).
	 */
	if (h.bad_name != NULL) {
		http_error_raw(r, MHD_HTTP_BAD_REQUEST, "invalid_header",
		    "header field name \"%.40s\" is not a token (no space or tab before its colon, no control or "
		    "non-ASCII byte)", h.bad_name);
		return NULL;
	}
	if (h.lengths_differ) {
		http_error_raw(r, MHD_HTTP_BAD_REQUEST, "invalid_content_length",
		    "the request has Content-Length headers that disagree");
		return NULL;
	}
	if (h.codings > 1) {
		http_error_raw(r, MHD_HTTP_NOT_IMPLEMENTED, "unsupported_transfer_encoding",
		    "the request has %d Transfer-Encoding fields; send the body with Content-Length or with one "
		    "Transfer-Encoding: chunked", h.codings);
		return NULL;
	}
	if (h.coding != NULL && strcasecmp(h.coding, "chunked") != 0) {
		http_error_raw(r, MHD_HTTP_NOT_IMPLEMENTED, "unsupported_transfer_encoding",
		    "Transfer-Encoding \"%.40s\" is not supported; send the body with Content-Length or chunked",
		    h.coding);
		return NULL;
	}
	/* RFC 9112 6.1: chunked would win, but the connection must close, and a proxy may have used the length. */
	if (h.coding != NULL && h.length != NULL) {
		http_error_raw(r, MHD_HTTP_BAD_REQUEST, "invalid_content_length",
		    "the request has both Content-Length and Transfer-Encoding; send one of them");
		return NULL;
	}
	cl = h.length;
	if (cl != NULL) {
		errno = 0;
		n = strtoull(cl, &end, 10);
		if (errno == 0 && *end == '\0' && n > LIMIT_BODY) {
			http_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
			    "the request body is %llu bytes; the limit is %d", n, LIMIT_BODY);
			return NULL;
		}
	}
	/*
	 * RFC 9110 10.1.1: an expectation the server cannot meet is a 417.
	 * libmicrohttpd answers 100-continue and ignores any other, so the
	 * body would be taken as if the client had not asked.
	 */
	if (h.expect != NULL) {
		http_error(r, MHD_HTTP_EXPECTATION_FAILED, "expectation_failed",
		    "Expect: \"%.40s\" cannot be met; the only expectation served is 100-continue", h.expect);
		return NULL;
	}
	if ((e = http_route(r)) == NULL)
		return NULL;
	return e;
}

/* libmicrohttpd's request handler: called for the headers, each body chunk, the end, and after a resume. */
static enum MHD_Result
http_access_cb(void *arg, struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct req *r = *con_cls;
	const struct route_entry *e;
	char *grown;
	size_t i, cap;

	/*
	 * No memory for its state (http_uri_cb): the body is read and dropped
	 * and the prebuilt answer goes at its end (one queued earlier makes
	 * libmicrohttpd close the connection while the client still sends).
	 */
	if (r == NULL) {
		*con_cls = &http_nomem_req;
		return MHD_YES;
	}
	if (r == &http_nomem_req) {
		if (*upload_data_size != 0) {
			*upload_data_size = 0;
			return MHD_YES;
		}
		http_nomem_log("for a request's state");
		return MHD_queue_response(conn, MHD_HTTP_SERVICE_UNAVAILABLE, http_nomem_resp);
	}
	if (r->answered)
		return MHD_NO;
	/* Resumed, or answered before the body; resumed with no answer (out of memory), closed. */
	if (r->started == 2 && (HTTP_PREPARED(r) || r->handled))
		return http_send(r);
	if (!r->started) {
		r->started = 1;
		r->method = method;
		r->version = version;
		if (http_first(r) == NULL) {
			r->started = 2;
			/*
			 * An answer queued now, before the end of the request, makes
			 * libmicrohttpd close the connection. With no body to come, the
			 * end is next: the answer waits for it and keep-alive survives.
			 */
			if (HTTP_PREPARED(r) && r->no_body)
				return MHD_YES;
			return http_send(r);
		}
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		if (r->body_len + *upload_data_size > LIMIT_BODY) {
			if (!HTTP_PREPARED(r))
				http_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
				    "the request body is over the limit of %d bytes", LIMIT_BODY);
			*upload_data_size = 0;
			return MHD_YES;
		}
		/* Out of memory for the body so far: the rest is read and dropped, the answer says why. */
		if (r->nomem) {
			*upload_data_size = 0;
			return MHD_YES;
		}
		if (r->body_len + *upload_data_size + 1 > r->body_cap) {
			cap = (r->body_len + *upload_data_size + 1) * 2;
			if (cap > LIMIT_BODY + 1)
				cap = LIMIT_BODY + 1;
			if ((grown = realloc(r->body, cap)) == NULL) {
				http_nomem(r, "reading a request body");
				*upload_data_size = 0;
				return MHD_YES;
			}
			r->body = grown;
			r->body_cap = cap;
		}
		memcpy(r->body + r->body_len, upload_data, *upload_data_size);
		r->body_len += *upload_data_size;
		r->body[r->body_len] = '\0';
		*upload_data_size = 0;
		return MHD_YES;
	}
	r->started = 2;
	if (HTTP_PREPARED(r))
		return http_send(r);    /* the body was too large, or memory short */
	for (i = 0; i < api_nroutes; i++) {
		e = &api_routes[i];
		if (e->route == r->route && (strcmp(e->method, method) == 0 ||
		    (strcmp(method, "HEAD") == 0 && http_head_ok(e))))
			break;
	}
	if (i == api_nroutes)
		return MHD_NO;
	r->handled = 1;
	api_routes[i].handler(r);
	if (HTTP_PREPARED(r))
		return http_send(r);
	return MHD_YES;             /* suspended until its latency passes and its records are committed */
}

/* Free r and everything it holds. */
static void
http_req_free(struct req *r)
{
	const union MHD_ConnectionInfo *info;
	struct http_conn *hc;

	info = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (info != NULL && (hc = info->socket_context) != NULL && hc->req == r)
		hc->req = NULL;
	delay_forget(r);
	api_forget(r);
	http_leave(r);
	if (r->resp != NULL)
		MHD_destroy_response(r->resp);
	if (r->values != &r->value1)
		free(r->values);
	if (r->seqs != &r->seq1)
		free(r->seqs);
	if (r->dups != &r->dup1)
		free(r->dups);
	free(r->body);
	free(r);
	http_requests_open--;
	if (shutting_down)
		main_maybe_exit();
}

/*
 * While shutting down, a connection whose client stopped reading its answer
 * was closed: its client's doing, one line per HTTP_ACCEPT_LOG_S at most,
 * and counted for the line http_stop() writes.
 */
static void
http_unread_answer(void)
{
	static struct log_limit ll;
	unsigned long skipped;
	char more[64] = "";

	http_unread++;
	if (!log_limit_due(&ll, HTTP_ACCEPT_LOG_S, &skipped))
		return;
	if (skipped > 0)
		snprintf(more, sizeof more, " (%lu more since the last)", skipped);
	log_info("closing a connection whose client did not read its answer for %ds%s", SHUTDOWN_SEND_STALL_S,
	    more);
}

/* The request is over (response sent, or the connection failed); when shutting down, so is its connection. */
static void
http_completed_cb(void *arg, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	const union MHD_ConnectionInfo *info;
	struct req *r = *con_cls;

	*con_cls = NULL;
	if (r == NULL || r == &http_nomem_req)
		return;
	if (shutting_down && r->answered && toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
		http_unread_answer();
	http_req_free(r);
	if ((info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT)) == NULL ||
	    info->socket_context == NULL)
		return;
	((struct http_conn *)info->socket_context)->due_us = now_mono_us();
	/* Its answer is in the socket's buffer now; a keep-alive connection must not start another request. */
	if (shutting_down)
		http_conn_shut(info->socket_context);
}

/*
 * Connections are listed with their current request: libmicrohttpd does not
 * report the end of a request it rejected by itself before our handler ran
 * (say, a malformed header line), so such a request is freed when the next
 * one arrives or the connection closes.
 */
static void
http_connection_cb(void *arg, struct MHD_Connection *conn, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	const union MHD_ConnectionInfo *info;
	struct http_conn *hc;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		if ((hc = calloc(1, sizeof *hc)) == NULL)
			return;
		hc->conn = conn;
		hc->due_us = now_mono_us();
		info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		hc->fd = info != NULL ? info->connect_fd : -1;
		LIST_INSERT_HEAD(&http_conns, hc, entry);
		*socket_context = hc;
		return;
	}
	if ((hc = *socket_context) == NULL)
		return;
	if (hc->req != NULL)
		http_req_free(hc->req);
	LIST_REMOVE(hc, entry);
	free(hc);
	*socket_context = NULL;
}

/*
 * Cut the requests still arriving --connection-timeout after they were due:
 * a request line that many seconds after its connection opened or its last
 * answer was sent, or the rest of a request (headers, body) after its request
 * line. One past its request line is answered 408; a connection idle that
 * long, with no byte of a request, libmicrohttpd closes at the same time.
 */
static void
http_due_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_conn *hc;
	uint64_t now = now_mono_us(), limit = (uint64_t)cfg.connection_timeout_ms * 1000;
	unsigned long skipped;
	size_t n = 0, idle = 0;
	char more[64] = "";

	LIST_FOREACH(hc, &http_conns, entry) {
		if (hc->shut || now - hc->due_us < limit)
			continue;
		if (hc->req == NULL) {
			http_conn_shut(hc);
			idle++;
		} else if (hc->req->started != 2 && !hc->req->answered) {
			http_answer_raw(hc, hc->req, MHD_HTTP_REQUEST_TIMEOUT, "request_timeout",
			    "the request did not arrive whole within the connection timeout");
			n++;
		}
	}
	if (n > 0 && log_limit_due(&http_due_ll, HTTP_ACCEPT_LOG_S, &skipped)) {
		if (skipped > 0)
			snprintf(more, sizeof more, " (%lu more since the last)", skipped);
		log_info("closing %zu connection%s whose request did not arrive whole within %llums%s", n,
		    n == 1 ? "" : "s", (unsigned long long)cfg.connection_timeout_ms, more);
	}
	if (n + idle > 0)
		http_run();     /* libmicrohttpd closes them once it runs */
}

/* Start libmicrohttpd on the listening socket fd and hook it into the loop. */
static int
http_start_one(struct http_listener *l, int fd)
{
	const union MHD_DaemonInfo *info;
	unsigned int timeout_s;

	timeout_s = (unsigned int)((cfg.connection_timeout_ms + 999) / 1000);
	l->daemon = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0,
	    NULL, NULL, http_access_cb, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, http_log_cb, l,
	    MHD_OPTION_LISTEN_SOCKET, fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg.max_connections,
	    MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MHD_MEMORY_LIMIT,
	    MHD_OPTION_URI_LOG_CALLBACK, http_uri_cb, NULL,
	    MHD_OPTION_NOTIFY_COMPLETED, http_completed_cb, NULL,
	    MHD_OPTION_NOTIFY_CONNECTION, http_connection_cb, NULL,
	    MHD_OPTION_END);
	if (l->daemon == NULL) {
		log_warnx("cannot start libmicrohttpd on listening socket %d", fd);
		return -1;
	}
	info = MHD_get_daemon_info(l->daemon, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL) {
		log_warnx("libmicrohttpd has no epoll fd");
		return -1;
	}
	l->epoll_ev = event_new(ev_base, info->epoll_fd, EV_READ | EV_PERSIST, http_event_cb, l);
	l->timer_ev = evtimer_new(ev_base, http_event_cb, l);
	l->pause_ev = evtimer_new(ev_base, http_pause_cb, l);
	if (l->epoll_ev == NULL || l->timer_ev == NULL || l->pause_ev == NULL || event_add(l->epoll_ev, NULL) != 0) {
		log_warnx("cannot add libmicrohttpd's events to the loop");
		return -1;
	}
	http_reschedule(l);
	return 0;
}

/* Serve on each of the n listening sockets in fds (non-blocking). */
int
http_start(const int *fds, size_t n)
{
	size_t i;

	if ((http_listeners = calloc(n, sizeof *http_listeners)) == NULL ||
	    (http_nomem_resp = MHD_create_response_from_buffer(sizeof http_nomem_body - 1, (void *)http_nomem_body,
	    MHD_RESPMEM_PERSISTENT)) == NULL ||
	    MHD_add_response_header(http_nomem_resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES) {
		log_warnx("out of memory");
		return -1;
	}
	for (i = 0; i < n; i++) {
		http_nlisteners = i + 1;
		if (http_start_one(&http_listeners[i], fds[i]) != 0)
			return -1;
	}
	if (cfg.connection_timeout_ms > 0) {
		struct timeval tv = { 0, HTTP_DUE_SWEEP_MS * 1000 };

		if ((http_due_ev = event_new(ev_base, -1, EV_PERSIST, http_due_cb, NULL)) == NULL ||
		    event_add(http_due_ev, &tv) != 0) {
			log_warnx("cannot add the request timer to the loop");
			return -1;
		}
	}
	return 0;
}

/*
 * Close the connections with no request in flight; their count. In flight
 * is a request that was completely received: its handler ran, and it is
 * answered or waits for its latency and commit. Not in flight: an idle
 * connection, a request line or headers still arriving, and, once the grace
 * is over, a body still arriving (the client has not finished sending it).
 */
static size_t
http_sweep(int grace_over, size_t *uploading)
{
	struct http_conn *hc;
	size_t n = 0;

	*uploading = 0;
	LIST_FOREACH(hc, &http_conns, entry) {
		if (hc->shut || (hc->req != NULL && hc->req->started == 2))
			continue;
		if (hc->req != NULL && hc->req->started == 1 && !grace_over) {
			(*uploading)++;
			continue;
		}
		http_conn_shut(hc);
		n++;
	}
	return n;
}

/* The shutdown grace for bodies still arriving is over: close those connections too. */
static void
http_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	size_t n, uploading;

	if ((n = http_sweep(1, &uploading)) > 0)
		log_info("closing %zu connection%s whose request body did not arrive within %dms: not answered", n,
		    n == 1 ? "" : "s", SHUTDOWN_UPLOAD_GRACE_MS);
	http_stop_cut += n;
	http_run();
}

/*
 * Stop accepting: the listening sockets leave libmicrohttpd and are closed.
 * Connections with no request in flight are closed now; a request body
 * still arriving gets SHUTDOWN_UPLOAD_GRACE_MS to complete.
 */
void
http_quiesce(void)
{
	struct http_conn *hc;
	struct timeval tv;
	MHD_socket fd;
	size_t i, n, uploading, kept;

	if (http_quiesced)
		return;
	http_quiesced = 1;
	for (i = 0; i < http_nlisteners; i++) {
		if (http_listeners[i].daemon == NULL)
			continue;
		fd = MHD_quiesce_daemon(http_listeners[i].daemon);
		if (fd != MHD_INVALID_SOCKET)
			close(fd);
		if (evtimer_pending(http_listeners[i].pause_ev, NULL)) {
			evtimer_del(http_listeners[i].pause_ev);
			event_add(http_listeners[i].epoll_ev, NULL);
		}
	}
	n = http_sweep(0, &uploading);
	kept = 0;
	LIST_FOREACH(hc, &http_conns, entry) {
		if (hc->shut)
			continue;
		kept++;
		if (hc->req != NULL && hc->req->answered)
			http_bound_send(hc->conn);
	}
	log_info("answering %zu requests in flight; closing %zu connections with none; %zu request bodies still "
	    "arriving get %dms", kept - uploading, n, uploading, SHUTDOWN_UPLOAD_GRACE_MS);
	if (uploading > 0) {
		tv.tv_sec = SHUTDOWN_UPLOAD_GRACE_MS / 1000;
		tv.tv_usec = (SHUTDOWN_UPLOAD_GRACE_MS % 1000) * 1000;
		if ((http_grace_ev = evtimer_new(ev_base, http_grace_cb, NULL)) == NULL ||
		    evtimer_add(http_grace_ev, &tv) != 0)
			http_sweep(1, &uploading);
	}
	http_run();
}

/* Stop libmicrohttpd; every request must be answered (none suspended). */
void
http_stop(void)
{
	struct http_listener *l;
	size_t i;

	if (http_quiesced)
		log_info("answered %llu request%s since the signal to stop; %llu answer%s not read by their "
		    "clients and %llu request bod%s cut off (connections closed)", (unsigned long long)http_stop_answered,
		    http_stop_answered == 1 ? "" : "s", (unsigned long long)http_unread, http_unread == 1 ? "" : "s",
		    (unsigned long long)http_stop_cut, http_stop_cut == 1 ? "y" : "ies");

	for (i = 0; i < http_nlisteners; i++) {
		l = &http_listeners[i];
		if (l->epoll_ev != NULL)
			event_free(l->epoll_ev);
		if (l->timer_ev != NULL)
			event_free(l->timer_ev);
		if (l->pause_ev != NULL)
			event_free(l->pause_ev);
		if (l->daemon != NULL)
			MHD_stop_daemon(l->daemon);
	}
	free(http_listeners);
	http_listeners = NULL;
	http_nlisteners = 0;
	if (http_grace_ev != NULL)
		event_free(http_grace_ev);
	http_grace_ev = NULL;
	if (http_due_ev != NULL)
		event_free(http_due_ev);
	http_due_ev = NULL;
	if (http_nomem_resp != NULL)
		MHD_destroy_response(http_nomem_resp);
	http_nomem_resp = NULL;
}
