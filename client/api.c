/*
 * api.c: counterd's HTTP+JSON API on its Unix socket (libevent evhttp).
 *
 * Routes are rows of a table {method, path pattern, handler}; "*" in a
 * pattern is one counter name. A path that matches with another method is
 * answered 405 with Allow; a malformed name 400; anything else 404. Every
 * answer, errors included, is JSON (except /metrics, Prometheus text), save
 * for the hard limits libevent enforces itself before we see a request.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>

#include "dfr.h"
#include "util.h"
#include "client.h"

/* Libevent's own hard limits, above ours (it answers those in HTML). */
#define API_HARD_HEADERS (64 * 1024)
#define API_HARD_BODY (1024 * 1024)
/* Pause of the listener after accept() failed (out of file descriptors). */
#define API_ACCEPT_PAUSE_MS 100
/* At most one log line per this many seconds about failing accepts. */
#define API_ACCEPT_LOG_S 10

typedef void (*api_handler)(struct evhttp_request *req, const char *name);

struct api_route {
	enum evhttp_cmd_type ar_method;
	const char *ar_method_name;
	const char *ar_pattern;
	api_handler ar_handler;
};

/* A next call waiting for its number. */
struct api_wait {
	struct evhttp_request *aw_req;
	struct evhttp_connection *aw_evcon;
	struct dfr *aw_d;
	struct event *aw_ev; /* watches the caller's socket for a hang-up */
	int aw_gone;	     /* libevent freed the caller's connection */
	char aw_name[COUNTER_NAME_MAX + 1];
};

static struct api_config *api_cf;
static struct evhttp *api_http;
static struct evhttp_bound_socket *api_socket;
static struct event *api_accept_ev; /* ends the pause after a failed accept */
static struct log_limit api_accept_ll;
static size_t api_npending;
static int api_closed;
static uint64_t api_requests, api_errors4xx;
static struct timespec api_started; /* process_start_time_seconds */

static void api_next(struct evhttp_request *, const char *);
static void api_list(struct evhttp_request *, const char *);
static void api_counter(struct evhttp_request *, const char *);
static void api_stats(struct evhttp_request *, const char *);
static void api_healthz(struct evhttp_request *, const char *);
static void api_metrics(struct evhttp_request *, const char *);

static const struct api_route api_routes[] = {
    {EVHTTP_REQ_POST, "POST", "/next", api_next},
    {EVHTTP_REQ_POST, "POST", "/counters/*/next", api_next},
    {EVHTTP_REQ_GET, "GET", "/counters", api_list},
    {EVHTTP_REQ_GET, "GET", "/counters/*", api_counter},
    {EVHTTP_REQ_GET, "GET", "/stats", api_stats},
    {EVHTTP_REQ_GET, "GET", "/healthz", api_healthz},
    {EVHTTP_REQ_GET, "GET", "/metrics", api_metrics},
};

/* Whether the client's Connection header lists the token "close". */
static int
api_wants_close(struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct evkeyval *kv;
	const char *p;
	size_t n;

	TAILQ_FOREACH(kv, h, next) {
		if (strcasecmp(kv->key, "Connection") != 0)
			continue;
		for (p = kv->value; *p != '\0'; p += n) {
			p += strspn(p, " \t,");
			n = strcspn(p, " \t,");
			if (n == 5 && strncasecmp(p, "close", 5) == 0)
				return 1;
		}
	}
	return 0;
}

/*
 * Whether the request target is in absolute form ("http://host/path"): libevent
 * takes it for a request to a proxy and closes the connection after the answer
 * whatever the client asked (it would keep it only for a Proxy-Connection:
 * keep-alive in the answer's headers as well as the request's), so the answer
 * must say Connection: close (api_send).
 */
static int
api_absolute(struct evhttp_request *req)
{
	const char *uri = evhttp_request_get_uri(req);

	return uri != NULL && (strncasecmp(uri, "http://", 7) == 0 ||
			       strncasecmp(uri, "https://", 8) == 0);
}

/*
 * Send b (NULL for none; drained, still the caller's) as the answer with
 * status. libevent leaves Content-Length out of an answer to HTTP/1.0
 * without keep-alive, sends the body of an answer to HEAD, and keeps the
 * connection open when Connection lists "close" among other tokens: every
 * answer has its Content-Length here (for HEAD, the one GET would have),
 * HEAD no body, and such a connection is closed.
 */
static void
api_send(struct evhttp_request *req, int status, struct evbuffer *b)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	char len[32];

	snprintf(len, sizeof len, "%zu",
		 b != NULL ? evbuffer_get_length(b) : 0);
	evhttp_remove_header(out, "Content-Length");
	evhttp_add_header(out, "Content-Length", len);
	if (api_absolute(req)) {
		struct evkeyvalq *in = evhttp_request_get_input_headers(req);

		/*
		 * libevent removes the Connection header of an answer to a
		 * proxy request unless the request has Proxy-Connection:
		 * keep-alive, and adds Connection: keep-alive to an answer to
		 * HTTP/1.0 that asked for it: with these request headers set
		 * so, it keeps our Connection: close, and still closes (the
		 * answer has no Proxy-Connection).
		 */
		while (evhttp_remove_header(in, "Connection") == 0)
			;
		while (evhttp_remove_header(in, "Proxy-Connection") == 0)
			;
		evhttp_add_header(in, "Proxy-Connection", "keep-alive");
		evhttp_remove_header(out, "Proxy-Connection");
		evhttp_remove_header(out, "Connection");
	}
	if ((api_closed || api_wants_close(req) || api_absolute(req)) &&
	    evhttp_find_header(out, "Connection") == NULL)
		evhttp_add_header(out, "Connection", "close");
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)
		b = NULL;
	evhttp_send_reply(req, status, NULL, b);
}

static void api_nomem(const char *what);

/*
 * Send a JSON body (taken over) with status; a NULL body (out of memory),
 * or one that cannot be written out, answers 503 out_of_memory instead.
 */
static void
api_reply_json(struct evhttp_request *req, int status, json_t *body)
{
	struct evbuffer *b = evbuffer_new();
	char *text = body != NULL ? jmem_dumps(body, JSON_COMPACT) : NULL;

	json_decref(body);
	if (text == NULL || b == NULL ||
	    evbuffer_add_printf(b, "%s\n", text) < 0) {
		status = 503;
		api_nomem("building an answer");
		if (b != NULL) {
			evbuffer_drain(b, evbuffer_get_length(b));
			evbuffer_add_printf(
			    b, "{\"error\": \"out_of_memory\", \"message\": "
			       "\"counterd is out of memory: this answer could "
			       "not be built; retry later\"}\n");
		}
	}
	free(text);
	if (status >= 400 && status < 500)
		api_errors4xx++;
	evhttp_add_header(evhttp_request_get_output_headers(req),
			  "Content-Type", "application/json");
	api_send(req, status, b);
	if (b != NULL)
		evbuffer_free(b);
}

/*
 * Memory ran out doing what, and a request answers 503 out_of_memory: a
 * line at most API_NOMEM_LOG_BURST per API_NOMEM_LOG_S seconds.
 */
#define API_NOMEM_LOG_S 10
#define API_NOMEM_LOG_BURST 3
static void
api_nomem(const char *what)
{
	static struct log_limit ll;
	unsigned long skipped;
	char more[64] = "";

	if (!log_limit_burst_due(&ll, API_NOMEM_LOG_S, API_NOMEM_LOG_BURST,
				 &skipped))
		return;
	if (skipped > 0)
		snprintf(more, sizeof more,
			 " (%lu more since the last such line)", skipped);
	log_warnx("out of memory %s: answered 503 out_of_memory%s", what,
		  more);
}

/* Send {"error": word, "message": ...} with status. */
static void api_error(struct evhttp_request *req, int status, const char *word,
		      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void
api_error(struct evhttp_request *req, int status, const char *word,
	  const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	api_reply_json(req, status,
		       json_pack("{s:s, s:s}", "error", word, "message", msg));
}

/* Map a failure code to an HTTP status and an error word. */
static int
api_failure_status(int code, const char **word)
{
	switch (code) {
	case CD_EBACKLOG:
		*word = "backlog_full";
		return 503;
	case CD_EWAIT:
		*word = "wait_timeout";
		return 503;
	case CD_ESHUTDOWN:
	case DFR_ECLOSED:
		*word = "shutting_down";
		return 503;
	case CD_EUNAVAILABLE:
		*word = "server_unreachable";
		return 503;
	case CD_ENOFD:
		*word = "out_of_file_descriptors";
		return 503;
	case CD_ETIMEOUT:
		*word = "record_timeout";
		return 504;
	case CD_EBADGATEWAY:
		*word = "bad_gateway";
		return 502;
	case CD_ETOOMANY:
		*word = "too_many_counters";
		return 503;
	case CD_EEXHAUSTED:
		*word = "counter_exhausted";
		return 409;
	case CD_ECONFLICT:
		*word = "conflict";
		return 409;
	case DFR_ECANCELED:
		*word = "cancelled";
		return 503;
	case ENOMEM:
		*word = "out_of_memory";
		return 503;
	default:
		*word = "internal";
		return 500;
	}
}

/*
 * A next call refused for want of room: the backlog of a counter is full,
 * a call waited past --wait-timeout, or there are too many counters. Each
 * is a caller's request, so the operator gets one line per
 * API_REFUSED_LOG_S seconds of each kind, saying how many more, and what
 * to do; anything else a call fails with is record-countd's (counter.c logs
 * it) or the caller's.
 */
#define API_REFUSED_LOG_S 10
static void
api_refused(int code, const char *name)
{
	static struct log_limit backlog_ll, wait_ll, many_ll;
	struct log_limit *ll;
	unsigned long skipped;
	char more[64] = "";

	switch (code) {
	case CD_EBACKLOG:
		ll = &backlog_ll;
		break;
	case CD_EWAIT:
		ll = &wait_ll;
		break;
	case CD_ETOOMANY:
		ll = &many_ll;
		break;
	default:
		return;
	}
	if (!log_limit_due(ll, API_REFUSED_LOG_S, &skipped))
		return;
	if (skipped > 0)
		snprintf(more, sizeof more, " (%lu more since the last such line)",
			 skipped);
	if (code == CD_EBACKLOG)
		log_warnx("counter %s: %zu calls waiting, the --backlog "
			  "limit: calls refused with 503 backlog_full%s; "
			  "record-countd answers slower than calls arrive "
			  "(raise --backlog, or look at its latency)",
			  name, api_cf->counters->backlog, more);
	else if (code == CD_EWAIT)
		log_warnx("counter %s: a call waited longer than "
			  "--wait-timeout (%" PRIu64 "ms) for its turn and "
			  "failed with 503 wait_timeout%s; record-countd "
			  "answers slower than calls arrive (raise "
			  "--wait-timeout or --batch-max, or look at its "
			  "latency)",
			  name, api_cf->counters->wait_timeout_ms, more);
	else
		log_warnx("too many counters (at most %d): a call to new "
			  "counter %s refused with 503 too_many_counters%s; "
			  "counters are kept until counterd restarts",
			  10000, name, more);
}

/* The caller's connection closed while its next call waited. */
static void
api_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct api_wait *aw = arg;

	aw->aw_gone = 1;
	if (aw->aw_ev != NULL) {
		/* libevent closes the socket after this callback. */
		event_free(aw->aw_ev);
		aw->aw_ev = NULL;
	}
	log_debug("caller of counter %s went away; cancelling", aw->aw_name);
	dfr_cancel(aw->aw_d);
}

/*
 * The caller hung up while its call waits. libevent 2.1 stops reading a
 * connection while its request is handled, so we watch the socket for a
 * hang-up ourselves (EV_CLOSED: EPOLLRDHUP), without reading from it.
 */
static void
api_hangup_cb(evutil_socket_t fd, short what, void *arg)
{
	struct api_wait *aw = arg;

	log_debug("caller of counter %s hung up; cancelling", aw->aw_name);
	dfr_cancel(aw->aw_d);
}

/* A next call has its number or its failure: answer it. */
static void
api_next_done_cb(struct dfr *d, void *arg)
{
	struct api_wait *aw = arg;
	struct evhttp_request *req = aw->aw_req;

	api_npending--;
	if (aw->aw_ev != NULL)
		event_free(aw->aw_ev);
	if (!aw->aw_gone)
		evhttp_connection_set_closecb(aw->aw_evcon, NULL, NULL);
	if (dfr_failed(d)) {
		struct dfr_failure *f = dfr_take_failure(d);
		const char *word;
		int status = api_failure_status(f->code, &word);

		api_refused(f->code, aw->aw_name);
		if (f->code == ENOMEM)
			api_nomem("for a next call");
		api_error(req, status, word, "%s", f->message);
		dfr_failure_free(f);
	} else {
		int64_t *v = dfr_value(d);

		api_reply_json(req, 200,
			       json_pack("{s:s, s:I}", "counter", aw->aw_name,
					 "count", (json_int_t)*v));
	}
	/* With the caller gone the request is detached: the reply just frees
	 * it. */
	dfr_unref(aw->aw_d);
	free(aw);
}

/* POST /next and POST /counters/NAME/next. */
static void
api_next(struct evhttp_request *req, const char *name)
{
	struct counter *c;
	struct api_wait *aw;
	struct dfr *d;

	if (name[0] == '\0')
		name = "default";
	if ((c = counter_get(api_cf->counters, name, 1)) == NULL) {
		if (errno == ENOSPC) {
			api_refused(CD_ETOOMANY, name);
			api_error(req, 503, "too_many_counters",
				  "too many counters (at most 10000)");
		}
		else
			api_error(req, 503, "out_of_memory",
				  "counterd is out of memory; retry later");
		return;
	}
	if ((aw = calloc(1, sizeof *aw)) == NULL ||
	    (d = counter_next(c)) == NULL) {
		free(aw);
		api_error(req, 503, "out_of_memory",
				  "counterd is out of memory; retry later");
		return;
	}
	aw->aw_req = req;
	aw->aw_evcon = evhttp_request_get_connection(req);
	aw->aw_d = d;
	snprintf(aw->aw_name, sizeof aw->aw_name, "%s", name);
	api_npending++;
	evhttp_connection_set_closecb(aw->aw_evcon, api_close_cb, aw);
	if (!dfr_fired(d) &&
	    (event_base_get_features(api_cf->base) & EV_FEATURE_EARLY_CLOSE)) {
		evutil_socket_t fd = bufferevent_getfd(
		    evhttp_connection_get_bufferevent(aw->aw_evcon));

		aw->aw_ev = fd != -1 ? event_new(api_cf->base, fd, EV_CLOSED,
						 api_hangup_cb, aw)
				     : NULL;
		if (aw->aw_ev != NULL && event_add(aw->aw_ev, NULL) != 0) {
			event_free(aw->aw_ev);
			aw->aw_ev = NULL;
		}
	}
	if (dfr_add_both(d, api_next_done_cb, aw) != 0) {
		if (aw->aw_ev != NULL)
			event_free(aw->aw_ev);
		api_npending--;
		evhttp_connection_set_closecb(aw->aw_evcon, NULL, NULL);
		dfr_cancel(d);
		/* Handled here: not logged as an unhandled failure. */
		dfr_failure_free(dfr_take_failure(d));
		dfr_unref(d);
		free(aw);
		api_error(req, 503, "out_of_memory",
				  "counterd is out of memory; retry later");
	}
}

/* One counter as JSON. */
static json_t *
api_counter_json(const struct counter *c)
{
	struct counter_stats st;

	counter_get_stats(c, &st);
	return json_pack("{s:s, s:I, s:I, s:I, s:b}", "counter",
			 counter_name(c), "count", (json_int_t)st.count,
			 "waiting", (json_int_t)st.waiting, "in_flight",
			 (json_int_t)st.in_flight, "resumed", st.resumed);
}

/*
 * Whether c's count is known: it has read its last value from record-countd
 * (before that, its count of 0 would be a lie after a restart).
 */
static int
api_counter_known(const struct counter *c)
{
	struct counter_stats st;

	counter_get_stats(c, &st);
	return st.resumed;
}

/* GET /counters/NAME. */
static void
api_counter(struct evhttp_request *req, const char *name)
{
	struct counter *c = counter_get(api_cf->counters, name, 0);

	if (c == NULL) {
		api_error(req, 404, "not_found",
			  "no counter named %s (counters exist once used)",
			  name);
		return;
	}
	if (!api_counter_known(c)) {
		api_error(req, 404, "not_found",
			  "counter %s has not read its last value from "
			  "record-countd yet, so its count is not known",
			  name);
		return;
	}
	api_reply_json(req, 200, api_counter_json(c));
}

/* GET /counters. */
static void
api_list(struct evhttp_request *req, const char *name)
{
	json_t *arr = json_array();
	struct counter *c;

	/* Every counter or none: a list missing one would be wrong. */
	for (c = counter_first(); arr != NULL && c != NULL; c = counter_after(c))
		if (api_counter_known(c) &&
		    json_array_append_new(arr, api_counter_json(c)) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	api_reply_json(req, 200,
		       arr != NULL ? json_pack("{s:o}", "counters", arr) : NULL);
}

/* Milliseconds from nanoseconds, as a JSON real. */
static double
api_ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

/* GET /stats. */
static void
api_stats(struct evhttp_request *req, const char *name)
{
	json_t *cs, *root;
	struct recorder_stats rs;
	struct counter *c;

	/* A counter missing for want of memory would be wrong: 503 instead. */
	jmem_clear();
	cs = json_object();
	for (c = counter_first(); c != NULL; c = counter_after(c)) {
		struct counter_stats st;
		struct dfr_stats ls;

		counter_get_stats(c, &st);
		counter_lock_stats(c, &ls);
		json_object_set_new(
		    cs, counter_name(c),
		    json_pack("{s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
			      "s:I, s:I, s:I, s:{s:I, s:I, s:I, "
			      "s:I, s:f, s:f, s:f, s:f}}",
			      "count", (json_int_t)st.count, "resumed",
			      st.resumed, "waiting", (json_int_t)st.waiting,
			      "in_flight", (json_int_t)st.in_flight,
			      "handed_out", (json_int_t)st.handed, "errors",
			      (json_int_t)st.errors, "rejected",
			      (json_int_t)st.rejected, "wait_timeouts",
			      (json_int_t)st.timeouts, "cancelled",
			      (json_int_t)st.cancelled, "batches",
			      (json_int_t)st.batches, "max_batch",
			      (json_int_t)st.max_batch, "conflicts",
			      (json_int_t)st.conflicts, "lock", "acquisitions",
			      (json_int_t)ls.acquisitions, "contended",
			      (json_int_t)ls.contended, "max_waiting",
			      (json_int_t)ls.max_waiting, "cancelled",
			      (json_int_t)ls.cancelled, "wait_total_ms",
			      api_ms(ls.wait_total_ns), "wait_max_ms",
			      api_ms(ls.wait_max_ns), "hold_total_ms",
			      api_ms(ls.hold_total_ns), "hold_max_ms",
			      api_ms(ls.hold_max_ns)));
	}
	recorder_get_stats(api_cf->recorder, &rs);
	root = json_pack(
	    "{s:s, s:s, s:s, s:I, s:I, s:i, s:o, s:{s:I, s:I, s:I, s:I, s:I, "
	    "s:I, s:I, "
	    "s:I, s:I, s:I}}",
	    "strategy", strategy_name(api_cf->counters->strategy), "client_id",
	    api_cf->counters->client_id, "server", api_cf->server_url,
	    "batch_max", (json_int_t)api_cf->counters->batch_max, "backlog",
	    (json_int_t)api_cf->counters->backlog, "uptime_s",
	    counterd_uptime_s(), "counters", cs, "recorder", "requests",
	    (json_int_t)rs.requests, "ok", (json_int_t)rs.ok, "failed",
	    (json_int_t)rs.failed, "retries", (json_int_t)rs.retries,
	    "eof_retries", (json_int_t)rs.eof_retries, "timeouts",
	    (json_int_t)rs.timeouts, "values", (json_int_t)rs.values,
	    "connections", (json_int_t)rs.connections, "queued",
	    (json_int_t)rs.queued, "active", (json_int_t)rs.active);
	if (jmem_failed()) {
		json_decref(root);
		root = NULL;
	}
	api_reply_json(req, 200, root);
}

/* GET /healthz: 200 when record-countd answers, else 503 saying why. */
static void
api_healthz(struct evhttp_request *req, const char *name)
{
	int reach = recorder_reachable(api_cf->recorder);
	const char *state = reach == 1	 ? "reachable"
			    : reach == 0 ? "unreachable"
					 : "unknown";
	int ok = reach == 1 && !counterd_stopping;

	api_reply_json(req, ok ? 200 : 503,
		       json_pack("{s:s, s:s, s:s, s:s, s:b}", "status",
				 counterd_stopping ? "stopping"
				 : ok		   ? "ok"
						   : "degraded",
				 "server", api_cf->server_url, "server_state",
				 state, "last_error",
				 recorder_last_error(api_cf->recorder),
				 "stopping", counterd_stopping));
}

/*
 * Write one sample exactly: v, or v nanoseconds in seconds if ns. The label
 * value is a counter name, whose characters need no escaping.
 */
static void
api_metric(struct evbuffer *b, const char *metric, const char *counter,
	   uint64_t v, int ns)
{
	if (counter != NULL)
		evbuffer_add_printf(b, "%s{counter=\"%s\"} ", metric, counter);
	else
		evbuffer_add_printf(b, "%s ", metric);
	if (ns)
		evbuffer_add_printf(b, "%" PRIu64 ".%09" PRIu64 "\n",
				    v / 1000000000, v % 1000000000);
	else
		evbuffer_add_printf(b, "%" PRIu64 "\n", v);
}

/* Write a metric's HELP and TYPE lines. */
static void
api_metric_head(struct evbuffer *b, const char *metric, const char *type,
		const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", metric, help,
			    metric, type);
}

/* GET /metrics in Prometheus text format. */
static void
api_metrics(struct evhttp_request *req, const char *name)
{
	/* Per counter; ns marks the times, kept in nanoseconds. */
	static const struct {
		const char *name, *type, *help;
		int ns;
	} m[] = {
	    {"counterd_next_total", "counter", "Numbers handed out.", 0},
	    {"counterd_next_errors_total", "counter",
	     "next calls that failed.", 0},
	    {"counterd_backlog_rejected_total", "counter",
	     "next calls refused: backlog full.", 0},
	    {"counterd_wait_timeouts_total", "counter",
	     "next calls that waited too long.", 0},
	    {"counterd_cancelled_total", "counter",
	     "next calls whose caller went away.", 0},
	    {"counterd_batches_total", "counter",
	     "Record requests acknowledged.", 0},
	    {"counterd_conflicts_total", "counter",
	     "next calls refused: another writer had recorded the value.", 0},
	    {"counterd_waiting", "gauge", "next calls waiting.", 0},
	    {"counterd_in_flight", "gauge", "Values being recorded.", 0},
	    {"counterd_last_value", "gauge",
	     "Last value of the counter.", 0},
	    {"counterd_lock_acquisitions_total", "counter",
	     "Lock acquisitions.", 0},
	    {"counterd_lock_contended_total", "counter",
	     "Lock acquisitions that waited.", 0},
	    {"counterd_lock_wait_seconds_total", "counter",
	     "Time spent waiting for the lock.", 1},
	    {"counterd_lock_wait_seconds_max", "gauge",
	     "Longest wait for the lock.", 1},
	    {"counterd_lock_hold_seconds_total", "counter",
	     "Time the lock was held.", 1},
	    {"counterd_lock_hold_seconds_max", "gauge",
	     "Longest hold of the lock.", 1},
	};
	enum { NM = sizeof m / sizeof m[0] };
	struct evbuffer *b = evbuffer_new();
	uint64_t(*vals)[NM] = calloc(counter_count() + 1, sizeof *vals);
	struct recorder_stats rs;
	struct counter *c;
	size_t i, k;

	if (b == NULL || vals == NULL) {
		if (b != NULL)
			evbuffer_free(b);
		free(vals);
		api_error(req, 503, "out_of_memory",
				  "counterd is out of memory; retry later");
		return;
	}
	/* Each counter's figures once, in the order of m. */
	for (c = counter_first(), k = 0; c != NULL; c = counter_after(c), k++) {
		struct counter_stats st;
		struct dfr_stats ls;
		uint64_t *v = vals[k];

		counter_get_stats(c, &st);
		counter_lock_stats(c, &ls);
		v[0] = st.handed;
		v[1] = st.errors;
		v[2] = st.rejected;
		v[3] = st.timeouts;
		v[4] = st.cancelled;
		v[5] = st.batches;
		v[6] = st.conflicts;
		v[7] = st.waiting;
		v[8] = st.in_flight;
		v[9] = (uint64_t)st.count;
		v[10] = ls.acquisitions;
		v[11] = ls.contended;
		v[12] = ls.wait_total_ns;
		v[13] = ls.wait_max_ns;
		v[14] = ls.hold_total_ns;
		v[15] = ls.hold_max_ns;
	}
	for (i = 0; i < NM; i++) {
		api_metric_head(b, m[i].name, m[i].type, m[i].help);
		for (c = counter_first(), k = 0; c != NULL;
		     c = counter_after(c), k++)
			api_metric(b, m[i].name, counter_name(c), vals[k][i],
				   m[i].ns);
	}
	free(vals);
	recorder_get_stats(api_cf->recorder, &rs);
	{
		const struct {
			const char *name, *type, *help;
			uint64_t v;
		} g[] = {
		    {"counterd_record_requests_total", "counter",
		     "HTTP requests sent to record-countd.", rs.requests},
		    {"counterd_record_retries_total", "counter",
		     "Requests to record-countd retried after a backoff.",
		     rs.retries},
		    {"counterd_record_failures_total", "counter",
		     "Operations that failed after every retry.", rs.failed},
		    {"counterd_record_timeouts_total", "counter",
		     "Requests to record-countd that timed out.", rs.timeouts},
		    {"counterd_record_connections", "gauge",
		     "Open connections to record-countd.", rs.connections},
		    {"counterd_server_up", "gauge",
		     "Whether record-countd answers.",
		     recorder_reachable(api_cf->recorder) == 1},
		    {"counterd_http_requests_total", "counter",
		     "Requests on the socket.", api_requests},
		    {"counterd_http_client_errors_total", "counter",
		     "Answers with 4xx.", api_errors4xx},
		};

		for (i = 0; i < sizeof g / sizeof g[0]; i++) {
			api_metric_head(b, g[i].name, g[i].type, g[i].help);
			api_metric(b, g[i].name, NULL, g[i].v, 0);
		}
	}
	api_metric_head(b, "process_start_time_seconds", "gauge",
			"Start time of the process since the Unix epoch.");
	evbuffer_add_printf(b, "process_start_time_seconds %lld.%09ld\n",
			    (long long)api_started.tv_sec,
			    (long)api_started.tv_nsec);
	evhttp_add_header(evhttp_request_get_output_headers(req),
			  "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	api_send(req, 200, b);
	evbuffer_free(b);
}

/* Total size of a request's headers. */
static size_t
api_headers_size(struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct evkeyval *kv;
	size_t n = 0;

	TAILQ_FOREACH(kv, h, next)
	n += strlen(kv->key) + strlen(kv->value) + 4;
	return n;
}

/*
 * Whether the request's body framing is in doubt (RFC 9112 6.3): two
 * Content-Lengths that disagree, or a Transfer-Encoding other than chunked,
 * which libevent would ignore and then read the body as the next request.
 */
static const char *
api_framing(struct evhttp_request *req, int *status, const char **word)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct evkeyval *kv;
	const char *length = NULL;

	TAILQ_FOREACH(kv, h, next) {
		if (strcasecmp(kv->key, "Content-Length") == 0) {
			if (length != NULL && strcmp(length, kv->value) != 0) {
				*status = 400;
				*word = "bad_framing";
				return "the request has Content-Length headers that disagree";
			}
			length = kv->value;
		} else if (strcasecmp(kv->key, "Transfer-Encoding") == 0 &&
		    strcasecmp(kv->value, "chunked") != 0) {
			*status = 501;
			*word = "unsupported_transfer_encoding";
			return "a Transfer-Encoding other than chunked is not supported";
		}
	}
	return NULL;
}

/*
 * The path and query of a request target: a target in absolute form
 * ("http://host/path", as sent to a proxy; RFC 9112 3.2.2 has servers
 * accept it) without its scheme and authority.
 */
static const char *
api_origin(const char *uri)
{
	const char *p;

	if (strncasecmp(uri, "http://", 7) == 0)
		p = uri + 7;
	else if (strncasecmp(uri, "https://", 8) == 0)
		p = uri + 8;
	else
		return uri;
	return p + strcspn(p, "/?");
}

/* Every request: check the limits, then route it. */
static void
api_request_cb(struct evhttp_request *req, void *arg)
{
	const char *uri = evhttp_request_get_uri(req);
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	char name[COUNTER_NAME_MAX + 1], allow[64] = "";
	const struct api_route *hit = NULL;
	const char *why, *word, *expect;
	int badname = 0, status;
	size_t i;

	api_requests++;
	/*
	 * libevent takes any HTTP/0.x or 1.x request and answers in its
	 * version. A later 1.x is served as HTTP/1.1, with which it is
	 * compatible (RFC 9110 2.5), and answered as 1.1; HTTP/0.x is no
	 * HTTP/1: libevent's own 400, as for HTTP/2.0, closing the connection.
	 */
	if (req->major == 1 && req->minor > 1)
		req->minor = 1;
	else if (req->major != 1 || req->minor < 0) {
		req->major = 1;
		req->minor = 1;
		evhttp_send_error(req, HTTP_BADREQUEST, NULL);
		return;
	}
	if (api_closed) {
		api_error(req, 503, "shutting_down",
			  "counterd is shutting down");
		return;
	}
	if (uri == NULL || strlen(uri) > api_cf->max_uri) {
		api_error(req, 414, "uri_too_long",
			  "request target longer than %zu bytes",
			  api_cf->max_uri);
		return;
	}
	if (api_headers_size(req) > api_cf->max_headers) {
		api_error(req, 431, "headers_too_large",
			  "request headers larger than %zu bytes",
			  api_cf->max_headers);
		return;
	}
	if ((why = api_framing(req, &status, &word)) != NULL) {
		/* Closing the connection drops whatever follows on it. */
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Connection", "close");
		api_error(req, status, word, "%s", why);
		return;
	}
	/*
	 * RFC 9110 10.1.1: an expectation that cannot be met is a 417. For a
	 * request with a body libevent answers it itself (in HTML); it lets
	 * the others through as if the client had not asked.
	 */
	if ((expect = evhttp_find_header(evhttp_request_get_input_headers(req),
					 "Expect")) != NULL &&
	    strcasecmp(expect, "100-continue") != 0) {
		api_error(req, 417, "expectation_failed",
			  "the Expect header cannot be met; the only "
			  "expectation served is 100-continue");
		return;
	}
	if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) >
	    api_cf->max_body) {
		api_error(req, 413, "body_too_large",
			  "request body larger than %zu bytes",
			  api_cf->max_body);
		return;
	}
	for (i = 0; i < sizeof api_routes / sizeof api_routes[0]; i++) {
		const struct api_route *r = &api_routes[i];

		name[0] = '\0';
		switch (route_match(api_origin(uri), r->ar_pattern, name)) {
		case ROUTE_NO:
			continue;
		case ROUTE_BADNAME:
			badname = 1;
			continue;
		case ROUTE_YES:
			break;
		}
		/* HEAD is GET without the body (api_send leaves it out). */
		if (r->ar_method == method ||
		    (method == EVHTTP_REQ_HEAD &&
		     r->ar_method == EVHTTP_REQ_GET)) {
			hit = r;
			break;
		}
		if (strstr(allow, r->ar_method_name) == NULL)
			snprintf(
			    allow + strlen(allow), sizeof allow - strlen(allow),
			    "%s%s%s", allow[0] ? ", " : "", r->ar_method_name,
			    r->ar_method == EVHTTP_REQ_GET ? ", HEAD" : "");
	}
	if (hit != NULL) {
		hit->ar_handler(req, name);
		return;
	}
	if (badname) {
		api_error(
		    req, 400, "bad_name",
		    "a counter name is 1 to %d characters of A-Z a-z 0-9 . _ -",
		    COUNTER_NAME_MAX);
		return;
	}
	if (allow[0] != '\0') {
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Allow", allow);
		api_error(req, 405, "method_not_allowed", "use %s here", allow);
		return;
	}
	api_error(req, 404, "not_found", "no such endpoint");
}

/* The pause after a failed accept() is over: listen again. */
static void
api_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	if (api_socket != NULL)
		evconnlistener_enable(
		    evhttp_bound_socket_get_listener(api_socket));
}

/*
 * accept() failed for another reason than a client that went away: most
 * likely no file descriptor is left (EMFILE, ENFILE). The connection stays
 * in the socket's backlog, so the listener would be woken again at once and
 * spin on the same failure (libevent would also log each one): pause it for
 * API_ACCEPT_PAUSE_MS instead, and say so at most every API_ACCEPT_LOG_S.
 * Open connections are served meanwhile; the waiting ones are accepted once
 * descriptors are free again.
 */
static void
api_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();
	struct timeval tv = {0, API_ACCEPT_PAUSE_MS * 1000};
	unsigned long skipped;
	char more[64] = "";

	evconnlistener_disable(lev);
	evtimer_add(api_accept_ev, &tv);
	if (!log_limit_due(&api_accept_ll, API_ACCEPT_LOG_S, &skipped))
		return;
	if (skipped > 0)
		snprintf(more, sizeof more, " (%lu more since the last)",
			 skipped);
	if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
		log_warnx("cannot accept connections: %s%s: no file "
			  "descriptor left; new connections wait and are "
			  "accepted when one is free (raise the open-files "
			  "limit: LimitNOFILE=, ulimit -n)",
			  evutil_socket_error_to_string(e), more);
	else
		log_warnx("cannot accept connections: %s%s; retrying every "
			  "%dms",
			  evutil_socket_error_to_string(e), more,
			  API_ACCEPT_PAUSE_MS);
}

/* Serve the API on the listening socket fd. */
int
api_start(struct api_config *cf, int fd)
{
	api_cf = cf;
	clock_gettime(CLOCK_REALTIME, &api_started);
	if ((api_http = evhttp_new(cf->base)) == NULL) {
		log_warnx("cannot create the HTTP server");
		return -1;
	}
	evhttp_set_max_headers_size(api_http, API_HARD_HEADERS);
	evhttp_set_max_body_size(api_http, API_HARD_BODY);
	/*
	 * Every method reaches us, so that a wrong one is a 405, not a 501:
	 * all bits, which also admits the methods libevent does not know.
	 */
	evhttp_set_allowed_methods(api_http, 0xffff);
	/* Idle keep-alive connections are closed after a while. */
	evhttp_set_timeout(api_http, 300);
	evhttp_set_gencb(api_http, api_request_cb, NULL);
	if ((api_socket = evhttp_accept_socket_with_handle(api_http, fd)) ==
	    NULL) {
		log_warnx("cannot serve HTTP on the socket");
		return -1;
	}
	if ((api_accept_ev = evtimer_new(cf->base, api_accept_resume_cb,
					 NULL)) == NULL) {
		log_warnx("out of memory");
		return -1;
	}
	evconnlistener_set_error_cb(
	    evhttp_bound_socket_get_listener(api_socket), api_accept_error_cb);
	return 0;
}

/* Stop accepting connections; later requests are answered 503. */
void
api_stop_accepting(void)
{
	api_closed = 1;
	if (api_accept_ev != NULL)
		evtimer_del(api_accept_ev);
	if (api_socket != NULL) {
		evhttp_del_accept_socket(api_http, api_socket);
		api_socket = NULL;
	}
}

/* Requests waiting for an answer. */
size_t
api_pending(void)
{
	return api_npending;
}

/* Free the HTTP server (closes open connections). */
void
api_free(void)
{
	if (api_accept_ev != NULL)
		event_free(api_accept_ev);
	api_accept_ev = NULL;
	if (api_http != NULL)
		evhttp_free(api_http);
	api_http = NULL;
}
