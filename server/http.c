/*
 * http.c: libmicrohttpd glued to the libevent loop, request lifetimes, routing
 * through the table in api.c, limits and the access log.
 *
 * libmicrohttpd runs in external epoll mode: its epoll fd is one libevent read
 * event and MHD_get_timeout() drives one libevent timer, so no thread is parked
 * per request. Delayed requests are suspended connections (delay.c).
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
};
static struct http_listener *http_listeners;
static size_t http_nlisteners;
static int http_quiesced;
static int http_kick;

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
		if (!http_kick && http_connections(l->daemon) >= before)
			break;
	}
	http_reschedule(l);
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

/*
 * libmicrohttpd's own messages go into our log (without their newline), at
 * info level: nearly all are about one client's connection, and a flood of
 * them at warn would drown the journal.
 */
static void
http_log_cb(void *arg, const char *fmt, va_list ap)
{
	char buf[1024];
	size_t n;

	vsnprintf(buf, sizeof buf, fmt, ap);
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	http_kick = 1;
	log_info("libmicrohttpd: %s", buf);
}

static void http_req_free(struct req *r);

/* A request line arrived: allocate its state and note its arrival time. */
static void *
http_uri_cb(void *arg, const char *uri, struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info;
	struct req *r, **slot;
	const char *q;
	size_t plen, ulen;

	ulen = strlen(uri);
	q = strchr(uri, '?');
	plen = q ? (size_t)(q - uri) : ulen;
	/* One allocation per request: the state, then the target and its path. */
	if ((r = calloc(1, sizeof *r + ulen + 1 + plen + 1)) == NULL)
		return NULL;
	r->conn = conn;
	r->arrival_us = now_mono_us();
	r->arrival_wall = now_wall();
	r->route = ROUTE_OTHER;
	r->uri_len = ulen;
	r->uri = (char *)(r + 1);
	memcpy(r->uri, uri, ulen + 1);
	r->path = r->uri + ulen + 1;
	memcpy(r->path, uri, plen);
	r->path[plen] = '\0';
	r->query = q ? r->uri + plen + 1 : "";
	http_requests_open++;
	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (info != NULL && info->socket_context != NULL) {
		slot = info->socket_context;
		if (*slot != NULL)
			http_req_free(*slot);   /* the previous request was dropped by libmicrohttpd */
		*slot = r;
	}
	return r;
}

/* Build a response from a malloc'd buffer with Content-Type. */
static void
http_set(struct req *r, unsigned status, const char *type, char *text, size_t len)
{
	if (r->resp != NULL)
		MHD_destroy_response(r->resp);
	r->resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (r->resp == NULL) {
		free(text);
		return;
	}
	MHD_add_response_header(r->resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (shutting_down)
		MHD_add_response_header(r->resp, MHD_HTTP_HEADER_CONNECTION, "close");
	r->status = status;
}

/* Prepare a JSON answer; the reference to body is stolen. */
void
http_answer(struct req *r, unsigned status, json_t *body)
{
	char *text;
	size_t len;

	text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (text == NULL) {
		log_warnx("out of memory building a response");
		return;
	}
	len = strlen(text);
	if ((text = realloc(text, len + 2)) == NULL)
		return;
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
	http_answer(r, status, json_pack("{ss ss}", "error", code, "message", msg));
}

/* Prepare a plain-text answer. */
void
http_answer_text(struct req *r, unsigned status, const char *type, char *text, size_t len)
{
	http_set(r, status, type, text, len);
}

/* Write the access-log line of r (one line, values listed). */
static void
http_access_log(struct req *r, double end)
{
	char *line, *p;
	size_t i, cap;

	cap = 256 + strlen(r->path) + r->nvalues * 21;
	if ((line = malloc(cap)) == NULL)
		return;
	p = line;
	p += snprintf(p, cap, "access method=%s path=%s status=%u client=%s values=", r->method ? r->method : "-",
	    r->path, r->status, r->client[0] ? r->client : "-");
	for (i = 0; i < r->nvalues; i++)
		p += snprintf(p, cap - (size_t)(p - line), "%s%llu", i ? "," : "", (unsigned long long)r->values[i]);
	if (r->nvalues == 0)
		*p++ = '-';
	snprintf(p, cap - (size_t)(p - line), " start=%.6f end=%.6f", r->arrival_wall, end);
	/* Written directly: log.c's line buffer would cut a long list of values. */
	fprintf(stderr, "record-countd: %s\n", line);
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

/* Queue r's prepared response now; the request is answered. */
static enum MHD_Result
http_send(struct req *r)
{
	enum MHD_Result ret;
	double end;

	if (r->resp == NULL) {
		r->answered = 1;
		http_leave(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(r->conn, r->status, r->resp);
	MHD_destroy_response(r->resp);
	r->resp = NULL;
	r->answered = 1;
	end = now_wall();
	metrics_response(r->route, r->status, (double)(now_mono_us() - r->arrival_us) / 1e6);
	http_leave(r);
	if (cfg.access_log && log_get_level() >= LOG_LEVEL_INFO)
		http_access_log(r, end);
	return ret;
}

/* Sum the length of the request's header lines. */
static enum MHD_Result
http_header_size_cb(void *arg, enum MHD_ValueKind kind, const char *key, const char *value)
{
	size_t *sum = arg;

	*sum += strlen(key) + (value ? strlen(value) : 0) + 4;
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

/* Checks made once the headers are in: size limits and routing. */
static const struct route_entry *
http_first(struct req *r)
{
	const struct route_entry *e;
	const char *cl;
	size_t hsize = 0;
	unsigned long long n;
	char *end;

	if (r->uri_len > LIMIT_URL) {
		http_error(r, MHD_HTTP_URI_TOO_LONG, "uri_too_long", "the request target is %zu bytes; the limit is %d",
		    r->uri_len, LIMIT_URL);
		return NULL;
	}
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, http_header_size_cb, &hsize);
	if (hsize > LIMIT_HEADERS) {
		http_error(r, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large",
		    "the request headers are %zu bytes; the limit is %d", hsize, LIMIT_HEADERS);
		return NULL;
	}
	cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl != NULL) {
		errno = 0;
		n = strtoull(cl, &end, 10);
		if (errno == 0 && *end == '\0' && n > LIMIT_BODY) {
			http_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
			    "the request body is %llu bytes; the limit is %d", n, LIMIT_BODY);
			return NULL;
		}
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
	size_t i;

	if (r == NULL)
		return MHD_NO;
	if (r->answered)
		return MHD_NO;
	if (r->resp != NULL && r->started == 2)
		return http_send(r);    /* resumed, or answered before the body */
	if (!r->started) {
		r->started = 1;
		r->method = method;
		if (http_first(r) == NULL) {
			r->started = 2;
			return http_send(r);
		}
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		if (r->body_len + *upload_data_size > LIMIT_BODY) {
			if (r->resp == NULL)
				http_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
				    "the request body is over the limit of %d bytes", LIMIT_BODY);
			*upload_data_size = 0;
			return MHD_YES;
		}
		if (r->body_len + *upload_data_size + 1 > r->body_cap) {
			r->body_cap = (r->body_len + *upload_data_size + 1) * 2;
			if (r->body_cap > LIMIT_BODY + 1)
				r->body_cap = LIMIT_BODY + 1;
			if ((r->body = realloc(r->body, r->body_cap)) == NULL)
				return MHD_NO;
		}
		memcpy(r->body + r->body_len, upload_data, *upload_data_size);
		r->body_len += *upload_data_size;
		r->body[r->body_len] = '\0';
		*upload_data_size = 0;
		return MHD_YES;
	}
	r->started = 2;
	if (r->resp != NULL)
		return http_send(r);    /* the body was too large */
	for (i = 0; i < api_nroutes; i++) {
		e = &api_routes[i];
		if (e->route == r->route && (strcmp(e->method, method) == 0 ||
		    (strcmp(method, "HEAD") == 0 && http_head_ok(e))))
			break;
	}
	if (i == api_nroutes)
		return MHD_NO;
	api_routes[i].handler(r);
	if (r->resp != NULL)
		return http_send(r);
	return MHD_YES;             /* suspended until its latency passes and its records are committed */
}

/* Free r and everything it holds. */
static void
http_req_free(struct req *r)
{
	const union MHD_ConnectionInfo *info;
	struct req **slot;

	info = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (info != NULL && (slot = info->socket_context) != NULL && *slot == r)
		*slot = NULL;
	delay_forget(r);
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

/* The request is over (response sent, or the connection failed). */
static void
http_completed_cb(void *arg, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct req *r = *con_cls;

	if (r == NULL)
		return;
	*con_cls = NULL;
	http_req_free(r);
}

/*
 * Connections carry a slot with their current request: libmicrohttpd does
 * not report the end of a request it rejected by itself before our handler
 * ran (say, too many query parameters for its pool), so such a request is
 * freed when the next one arrives or the connection closes.
 */
static void
http_connection_cb(void *arg, struct MHD_Connection *conn, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	struct req **slot;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		*socket_context = calloc(1, sizeof(struct req *));
		return;
	}
	if ((slot = *socket_context) == NULL)
		return;
	if (*slot != NULL)
		http_req_free(*slot);
	free(slot);
	*socket_context = NULL;
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
	    MHD_OPTION_EXTERNAL_LOGGER, http_log_cb, NULL,
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
	if (l->epoll_ev == NULL || l->timer_ev == NULL || event_add(l->epoll_ev, NULL) != 0) {
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

	if ((http_listeners = calloc(n, sizeof *http_listeners)) == NULL) {
		log_warnx("out of memory");
		return -1;
	}
	for (i = 0; i < n; i++) {
		http_nlisteners = i + 1;
		if (http_start_one(&http_listeners[i], fds[i]) != 0)
			return -1;
	}
	return 0;
}

/* Stop accepting: the listening sockets leave libmicrohttpd and are closed. */
void
http_quiesce(void)
{
	MHD_socket fd;
	size_t i;

	if (http_quiesced)
		return;
	http_quiesced = 1;
	for (i = 0; i < http_nlisteners; i++) {
		if (http_listeners[i].daemon == NULL)
			continue;
		fd = MHD_quiesce_daemon(http_listeners[i].daemon);
		if (fd != MHD_INVALID_SOCKET)
			close(fd);
	}
	http_run();
}

/* Stop libmicrohttpd; every request must be answered (none suspended). */
void
http_stop(void)
{
	struct http_listener *l;
	size_t i;

	for (i = 0; i < http_nlisteners; i++) {
		l = &http_listeners[i];
		if (l->epoll_ev != NULL)
			event_free(l->epoll_ev);
		if (l->timer_ev != NULL)
			event_free(l->timer_ev);
		if (l->daemon != NULL)
			MHD_stop_daemon(l->daemon);
	}
	free(http_listeners);
	http_listeners = NULL;
	http_nlisteners = 0;
}
