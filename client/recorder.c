/*
 * recorder.c: counterd's HTTP client for record-countd.
 *
 * A pool of keep-alive evhttp connections, each carrying one request at a
 * time; operations beyond the pool wait in FIFO order for a free
 * connection. Every request has a timeout. A request that fails with EOF on
 * a connection that had served requests before (the server closed an idle
 * keep-alive connection as we sent) is retried once at once and silently;
 * other failures are retried up to --retries times with exponential backoff
 * and jitter. record-countd's idempotency makes retrying an ambiguous
 * failure (a timeout after the server may have recorded) safe.
 */
#include "config.h"

#include <sys/socket.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "dfr.h"
#include "util.h"
#include "client.h"

/* Longest pause between two attempts. */
#define RECORDER_BACKOFF_CAP_MS 2000
/* Largest answer body we read. */
#define RECORDER_MAX_ANSWER (1024 * 1024)

struct rec_conn {
	struct recorder *rc_r;
	struct evhttp_connection *rc_evcon;
	uint64_t rc_used; /* answers received since the last reset */
	int rc_busy;
	TAILQ_ENTRY(rec_conn) rc_idle;
	TAILQ_ENTRY(rec_conn) rc_all;
};
TAILQ_HEAD(rec_conn_list, rec_conn);

enum rec_kind { REC_RECORD, REC_CLIENT, REC_PROBE };

struct rec_op {
	struct recorder *ro_r;
	enum rec_kind ro_kind;
	struct dfr *ro_d; /* our reference; fired at the end */
	char *ro_client;
	int64_t ro_first;
	size_t ro_n;
	char *ro_path;
	char *ro_body;	     /* NULL for GET */
	unsigned ro_attempt; /* attempts made */
	unsigned ro_sent;    /* requests handed to libevent */
	int ro_eof_retried;  /* the silent stale-connection retry is used */
	int ro_error;	     /* libevent's error for the current attempt */
	int ro_last_code;    /* failure code if we give up now */
	char ro_why[512];    /* reason if we give up now */
	struct rec_conn *ro_conn;
	struct event *ro_timer;	      /* backoff */
	TAILQ_ENTRY(rec_op) ro_entry; /* r_waitq */
	TAILQ_ENTRY(rec_op) ro_all;   /* r_ops */
};
TAILQ_HEAD(rec_op_list, rec_op);

struct recorder {
	struct event_base *r_base;
	struct evdns_base *r_dns;
	struct server_url r_url;
	char r_hosthdr[200];
	struct timeval r_timeout;
	unsigned r_retries;
	uint64_t r_backoff_ms;
	size_t r_pool;
	struct rec_conn_list r_conns;
	struct rec_conn_list r_idle;
	size_t r_nconns;
	struct rec_op_list r_waitq;
	size_t r_nwait;
	struct rec_op_list r_ops; /* every operation not yet finished */
	size_t r_active;
	int r_aborted; /* recorder_abort ran: new operations fail at once */
	int r_reachable;
	char r_last_error[512];
	uint64_t r_outages;	  /* times r_reachable became 0 */
	char r_outage_error[512]; /* the reason it last became 0 */
	struct recorder_stats r_st;
};

static void recorder_send(struct rec_op *op, struct rec_conn *conn);
static void recorder_dispatch(struct rec_op *op);
static void recorder_op_fail(struct rec_op *op);
static void recorder_attempt_failed(struct rec_op *op);

/* Create the recorder; see client.h. */
struct recorder *
recorder_new(struct event_base *base, const struct server_url *url,
	     uint64_t timeout_ms, unsigned retries, uint64_t backoff_ms,
	     size_t pool)
{
	struct recorder *r;

	if ((r = calloc(1, sizeof *r)) == NULL) {
		log_warn("cannot set up the connection to record-countd");
		return NULL;
	}
	r->r_base = base;
	r->r_url = *url;
	if (!url->numeric) {
		/* Names go through evdns: getaddrinfo would block the loop. */
		r->r_dns =
		    evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
					     EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (r->r_dns == NULL) {
			log_warnx("cannot set up the DNS resolver for %s",
				  url->host);
			free(r);
			return NULL;
		}
	}
	if (url->ipv6)
		snprintf(r->r_hosthdr, sizeof r->r_hosthdr, "[%s]:%u",
			 url->host, url->port);
	else
		snprintf(r->r_hosthdr, sizeof r->r_hosthdr, "%s:%u", url->host,
			 url->port);
	r->r_timeout.tv_sec = (time_t)(timeout_ms / 1000);
	r->r_timeout.tv_usec = (suseconds_t)((timeout_ms % 1000) * 1000);
	r->r_retries = retries;
	r->r_backoff_ms = backoff_ms;
	r->r_pool = pool < 1 ? 1 : pool;
	r->r_reachable = -1;
	TAILQ_INIT(&r->r_conns);
	TAILQ_INIT(&r->r_idle);
	TAILQ_INIT(&r->r_waitq);
	TAILQ_INIT(&r->r_ops);
	return r;
}

/* Free the recorder and its connections (nothing should be in flight). */
void
recorder_free(struct recorder *r)
{
	if (r == NULL)
		return;
	recorder_abort(r, "counterd is exiting");
	if (r->r_dns != NULL)
		evdns_base_free(r->r_dns, 0);
	free(r);
}

/*
 * Fail every operation with CD_ESHUTDOWN and why, dropping the requests in
 * flight; operations started later fail at once.
 */
void
recorder_abort(struct recorder *r, const char *why)
{
	struct rec_conn *conn;
	struct rec_op *op;

	r->r_aborted = 1;
	/* Freeing a connection drops its request without calling back. */
	while ((conn = TAILQ_FIRST(&r->r_conns)) != NULL) {
		TAILQ_REMOVE(&r->r_conns, conn, rc_all);
		evhttp_connection_free(conn->rc_evcon);
		free(conn);
	}
	TAILQ_INIT(&r->r_idle);
	r->r_nconns = 0;
	while ((op = TAILQ_FIRST(&r->r_waitq)) != NULL)
		TAILQ_REMOVE(&r->r_waitq, op, ro_entry);
	r->r_nwait = 0;
	/* The failures' callbacks may start operations: they fail at once. */
	while ((op = TAILQ_FIRST(&r->r_ops)) != NULL) {
		op->ro_conn = NULL;
		op->ro_last_code = CD_ESHUTDOWN;
		snprintf(op->ro_why, sizeof op->ro_why, "%s", why);
		recorder_op_fail(op);
	}
}

/* Whether the last finished exchange succeeded; -1 before the first. */
int
recorder_reachable(const struct recorder *r)
{
	return r->r_reachable;
}

/* The reason of the last failure. */
const char *
recorder_last_error(const struct recorder *r)
{
	return r->r_last_error;
}

/* How many times record-countd became unreachable, and why the last time. */
uint64_t
recorder_outages(const struct recorder *r, const char **why)
{
	*why = r->r_outage_error;
	return r->r_outages;
}

/* Copy the statistics. */
void
recorder_get_stats(const struct recorder *r, struct recorder_stats *st)
{
	*st = r->r_st;
	st->connections = r->r_nconns;
	st->queued = r->r_nwait;
	st->active = r->r_active;
}

/* Operations in flight or queued. */
size_t
recorder_busy(const struct recorder *r)
{
	return r->r_active;
}

/* Free an operation (its deferred has fired). */
static void
recorder_op_free(struct rec_op *op)
{
	TAILQ_REMOVE(&op->ro_r->r_ops, op, ro_all);
	if (op->ro_timer != NULL)
		event_free(op->ro_timer);
	dfr_unref(op->ro_d);
	free(op->ro_client);
	free(op->ro_path);
	free(op->ro_body);
	free(op);
}

/*
 * Whether a request can go out on conn now: 0, or the errno of a socket of
 * our own when conn is not connected (libevent would open one) and no file
 * descriptor is left. libevent would fail the request as if record-countd
 * had refused it, sending the operator to look at the wrong daemon.
 */
static int
recorder_fd_check(struct recorder *r, struct rec_conn *conn)
{
	int fd, e;

	if (bufferevent_getfd(evhttp_connection_get_bufferevent(
		conn->rc_evcon)) != -1)
		return 0;
	fd = socket(r->r_url.ipv6 ? AF_INET6 : AF_INET,
		    SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		e = errno;
		if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
			return e;
		return 0;
	}
	close(fd);
	return 0;
}

/* op's attempt failed for want of a file descriptor (errno e). */
static void
recorder_no_fd(struct rec_op *op, int e)
{
	struct recorder *r = op->ro_r;

	op->ro_attempt++;
	r->r_st.requests++;
	op->ro_last_code = CD_ENOFD;
	snprintf(op->ro_why, sizeof op->ro_why,
		 "counterd cannot open a connection to record-countd at %s: "
		 "%s (raise its open-files limit: LimitNOFILE=, ulimit -n)",
		 r->r_hosthdr, strerror(e));
	recorder_attempt_failed(op);
}

/* Give a connection back: to the oldest waiting operation, else idle. */
static void
recorder_conn_release(struct rec_conn *conn)
{
	struct recorder *r = conn->rc_r;
	struct rec_op *op;
	int e;

	conn->rc_busy = 0;
	while ((op = TAILQ_FIRST(&r->r_waitq)) != NULL) {
		TAILQ_REMOVE(&r->r_waitq, op, ro_entry);
		r->r_nwait--;
		if ((e = recorder_fd_check(r, conn)) != 0) {
			recorder_no_fd(op, e);
			continue;
		}
		recorder_send(op, conn);
		return;
	}
	TAILQ_INSERT_HEAD(&r->r_idle, conn, rc_idle);
}

/* Finish op with success; value is owned by the deferred from now on. */
static void
recorder_op_succeed(struct rec_op *op, void *value, dfr_free_cb free_cb)
{
	struct recorder *r = op->ro_r;

	r->r_active--;
	r->r_st.ok++;
	if (op->ro_kind == REC_RECORD)
		r->r_st.values += op->ro_n;
	dfr_callback(op->ro_d, value, free_cb);
	recorder_op_free(op);
}

/*
 * Make why printable in place: it may quote record-countd's answer (or what
 * answers at --server), and goes to the log, to the callers' error
 * messages and to systemd's STATUS=, where a control byte, a newline above
 * all, must not pass. Each control or non-ASCII byte becomes '?'.
 */
static char *
recorder_printable(char *why)
{
	char *p;

	for (p = why; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	return why;
}

/* Finish op with its recorded failure. */
static void
recorder_op_fail(struct rec_op *op)
{
	struct recorder *r = op->ro_r;

	recorder_printable(op->ro_why);
	r->r_active--;
	r->r_st.failed++;
	snprintf(r->r_last_error, sizeof r->r_last_error, "%s", op->ro_why);
	log_debug("%s %s failed: %s", op->ro_body ? "POST" : "GET", op->ro_path,
		  op->ro_why);
	dfr_errback(op->ro_d, op->ro_last_code, "%s", op->ro_why);
	recorder_op_free(op);
}

/* Backoff expired: try again. */
static void
recorder_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	recorder_dispatch(arg);
}

/* The current attempt failed; retry after a backoff or give up. */
static void
recorder_attempt_failed(struct rec_op *op)
{
	struct recorder *r = op->ro_r;
	uint64_t delay, shift, cap;
	struct timeval tv;

	if (op->ro_attempt > r->r_retries || op->ro_kind == REC_PROBE) {
		recorder_op_fail(op);
		return;
	}
	/* Doubling up to 2 s, or not at all from a first backoff above that. */
	cap = r->r_backoff_ms > RECORDER_BACKOFF_CAP_MS ? r->r_backoff_ms
							: RECORDER_BACKOFF_CAP_MS;
	shift = op->ro_attempt - 1 > 16 ? 16 : op->ro_attempt - 1;
	delay = r->r_backoff_ms << shift;
	if (delay > cap)
		delay = cap;
	/* Jitter: a random point in the upper half, so clients spread out. */
	delay = delay / 2 +
		(delay > 1 ? (uint64_t)random() % (delay - delay / 2 + 1) : 0);
	r->r_st.retries++;
	log_debug("%s: %s; retry %u in %" PRIu64 "ms", op->ro_path, op->ro_why,
		  op->ro_attempt, delay);
	if (op->ro_timer == NULL) {
		op->ro_timer = evtimer_new(r->r_base, recorder_retry_cb, op);
		if (op->ro_timer == NULL) {
			recorder_op_fail(op);
			return;
		}
	}
	tv.tv_sec = (time_t)(delay / 1000);
	tv.tv_usec = (suseconds_t)((delay % 1000) * 1000);
	evtimer_add(op->ro_timer, &tv);
}

/* libevent tells why a request failed, just before its callback. */
static void
recorder_error_cb(enum evhttp_request_error error, void *arg)
{
	struct rec_op *op = arg;

	op->ro_error = (int)error;
}

/* Name libevent's request error. */
static const char *
recorder_error_name(int error)
{
	switch (error) {
	case EVREQ_HTTP_TIMEOUT:
		return "timed out";
	case EVREQ_HTTP_EOF:
		return "connection closed or refused";
	case EVREQ_HTTP_INVALID_HEADER:
		return "invalid answer header";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "connection error";
	case EVREQ_HTTP_REQUEST_CANCEL:
		return "request cancelled";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "answer too long";
	default:
		return "connection refused or failed";
	}
}

/*
 * Handle a 200 answer: check it and finish op. Returns 0, or -1 with
 * ro_last_code set: ENOMEM if memory ran out reading it (counterd's
 * trouble, not record-countd's), else CD_EBADGATEWAY.
 */
static int
recorder_answer(struct rec_op *op, const char *body, size_t len)
{
	struct record_ack *ack;
	int64_t last, dup, *lp;

	errno = 0;
	switch (op->ro_kind) {
	case REC_RECORD:
		if (answer_parse_record(body, len, op->ro_client, op->ro_first,
					op->ro_n, &dup, op->ro_why,
					sizeof op->ro_why) != 0)
			goto bad;
		if ((ack = malloc(sizeof *ack)) == NULL)
			goto nomem;
		ack->max_dup = dup;
		ack->resent = op->ro_sent > 1;
		recorder_op_succeed(op, ack, free);
		return 0;
	case REC_CLIENT:
		if (answer_parse_client(body, len, op->ro_client, &last,
					op->ro_why, sizeof op->ro_why) != 0)
			goto bad;
		if ((lp = malloc(sizeof *lp)) == NULL)
			goto nomem;
		*lp = last;
		recorder_op_succeed(op, lp, free);
		return 0;
	case REC_PROBE:
		recorder_op_succeed(op, NULL, NULL);
		return 0;
	}
	errno = EINVAL;
bad:
	op->ro_last_code = errno == ENOMEM ? ENOMEM : CD_EBADGATEWAY;
	return -1;
nomem:
	snprintf(op->ro_why, sizeof op->ro_why, "out of memory");
	op->ro_last_code = ENOMEM;
	return -1;
}

/*
 * Mark record-countd unusable for why. The flag and its reason change
 * together: whoever reads one (health, the log, sd_notify) must not see the
 * reason of an older failure, or none.
 */
static void
recorder_unreachable(struct recorder *r, const char *why)
{
	if (r->r_reachable != 0) {
		r->r_outages++;
		snprintf(r->r_outage_error, sizeof r->r_outage_error, "%s",
			 why);
	}
	r->r_reachable = 0;
	snprintf(r->r_last_error, sizeof r->r_last_error, "%s", why);
}

/* A request finished (req NULL or code 0: it failed). */
static void
recorder_done_cb(struct evhttp_request *req, void *arg)
{
	struct rec_op *op = arg;
	struct recorder *r = op->ro_r;
	struct rec_conn *conn = op->ro_conn;
	int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
	char body[4096];
	struct evbuffer *in;
	size_t len = 0;

	op->ro_conn = NULL;
	if (code == 0 && op->ro_error == EVREQ_HTTP_DATA_TOO_LONG) {
		/*
		 * record-countd answered, but more than we read: a malformed
		 * answer like any other, not an outage, and a retry would get
		 * the same.
		 */
		conn->rc_used = 0;
		recorder_conn_release(conn);
		op->ro_last_code = CD_EBADGATEWAY;
		snprintf(op->ro_why, sizeof op->ro_why,
			 "record-countd at %s: answer to %s larger than "
			 "counterd's limit of 1 MiB (%d bytes)",
			 r->r_hosthdr, op->ro_path, RECORDER_MAX_ANSWER);
		recorder_op_fail(op);
		return;
	}
	if (code == 0) {
		int stale = op->ro_error == EVREQ_HTTP_EOF &&
			    conn->rc_used > 0 && !op->ro_eof_retried;

		conn->rc_used = 0;
		if (op->ro_error == EVREQ_HTTP_TIMEOUT)
			r->r_st.timeouts++;
		recorder_conn_release(conn);
		if (stale) {
			/* The server closed an idle keep-alive connection as we
			 * sent. */
			op->ro_eof_retried = 1;
			r->r_st.eof_retries++;
			op->ro_attempt--;
			recorder_dispatch(op);
			return;
		}
		op->ro_last_code = op->ro_error == EVREQ_HTTP_TIMEOUT
				       ? CD_ETIMEOUT
				       : CD_EUNAVAILABLE;
		snprintf(op->ro_why, sizeof op->ro_why,
			 "record-countd at %s: %s%s", r->r_hosthdr,
			 recorder_error_name(op->ro_error),
			 r->r_url.numeric || op->ro_error != -1
			     ? ""
			     : " (or the name did not resolve)");
		recorder_unreachable(r, op->ro_why);
		recorder_attempt_failed(op);
		return;
	}
	conn->rc_used++;
	/* An answer of 5xx (storage failing, stopping) counts as unusable below. */
	if (code < 500)
		r->r_reachable = 1;
	in = evhttp_request_get_input_buffer(req);
	len = evbuffer_get_length(in);
	if (len >= sizeof body && op->ro_kind == REC_RECORD) {
		/* Batches of up to 1000 records need more room (libevent
		 * refused answers over RECORDER_MAX_ANSWER already). */
		char *big = malloc(len + 1);

		recorder_conn_release(conn);
		if (big == NULL) {
			op->ro_last_code = ENOMEM;
			snprintf(op->ro_why, sizeof op->ro_why,
				 "out of memory reading a %zu-byte answer",
				 len);
			recorder_op_fail(op);
			return;
		}
		evbuffer_remove(in, big, len);
		big[len] = '\0';
		if (code == 200 && recorder_answer(op, big, len) == 0) {
			free(big);
			return;
		}
		free(big);
	} else {
		if (len >= sizeof body)
			len = sizeof body - 1;
		evbuffer_remove(in, body, len);
		body[len] = '\0';
		recorder_conn_release(conn);
		if (code == 200 && recorder_answer(op, body, len) == 0)
			return;
	}
	if (code == 200) {
		/* recorder_answer() set ro_last_code. */
		recorder_op_fail(op);
		return;
	}
	snprintf(op->ro_why, sizeof op->ro_why,
		 "record-countd answered %d to %s", code, op->ro_path);
	if (code >= 500) {
		/* The server is shutting down or in trouble: worth a retry. */
		while (len > 0 && len < sizeof body &&
		       (body[len - 1] == '\n' || body[len - 1] == '\r'))
			body[--len] = '\0';
		if (len > 0 && len < 400 && strchr(body, '\n') == NULL)
			snprintf(op->ro_why, sizeof op->ro_why,
				 "record-countd answered %d to %s: %.*s", code,
				 op->ro_path, (int)len, body);
		recorder_printable(op->ro_why);
		recorder_unreachable(r, op->ro_why);
		op->ro_last_code = CD_EUNAVAILABLE;
		recorder_attempt_failed(op);
	} else {
		op->ro_last_code = CD_EBADGATEWAY;
		recorder_op_fail(op);
	}
}

/* Send op's request on conn. */
static void
recorder_send(struct rec_op *op, struct rec_conn *conn)
{
	struct recorder *r = op->ro_r;
	struct evhttp_request *req;
	struct evkeyvalq *h;

	conn->rc_busy = 1;
	op->ro_conn = conn;
	op->ro_error =
	    -1; /* libevent reports a refused connect without an error */
	op->ro_attempt++;
	r->r_st.requests++;
	if ((req = evhttp_request_new(recorder_done_cb, op)) == NULL)
		goto fail;
	evhttp_request_set_error_cb(req, recorder_error_cb);
	h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", r->r_hosthdr);
	evhttp_add_header(h, "Accept", "application/json");
	if (op->ro_body != NULL) {
		evhttp_add_header(h, "Content-Type", "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(req), op->ro_body,
			     strlen(op->ro_body));
	}
	if (evhttp_make_request(conn->rc_evcon, req,
				op->ro_body != NULL ? EVHTTP_REQ_POST
						    : EVHTTP_REQ_GET,
				op->ro_path) != 0)
		goto fail;
	op->ro_sent++;
	return;
fail:
	op->ro_conn = NULL;
	conn->rc_used = 0;
	recorder_conn_release(conn);
	op->ro_last_code = CD_EUNAVAILABLE;
	snprintf(op->ro_why, sizeof op->ro_why, "cannot send a request to %s",
		 r->r_hosthdr);
	recorder_attempt_failed(op);
}

/* Run op on a free connection, a new one, or queue it. */
static void
recorder_dispatch(struct rec_op *op)
{
	struct recorder *r = op->ro_r;
	struct rec_conn *conn;
	int e;

	if (r->r_aborted) {
		op->ro_last_code = CD_ESHUTDOWN;
		snprintf(op->ro_why, sizeof op->ro_why,
			 "counterd is shutting down");
		recorder_op_fail(op);
		return;
	}
	if ((conn = TAILQ_FIRST(&r->r_idle)) != NULL) {
		if ((e = recorder_fd_check(r, conn)) != 0) {
			recorder_no_fd(op, e);
			return;
		}
		TAILQ_REMOVE(&r->r_idle, conn, rc_idle);
		recorder_send(op, conn);
		return;
	}
	if (r->r_nconns < r->r_pool &&
	    (conn = calloc(1, sizeof *conn)) != NULL) {
		conn->rc_r = r;
		conn->rc_evcon = evhttp_connection_base_new(
		    r->r_base, r->r_dns, r->r_url.host, r->r_url.port);
		if (conn->rc_evcon != NULL) {
			evhttp_connection_set_timeout_tv(conn->rc_evcon,
							 &r->r_timeout);
			evhttp_connection_set_max_body_size(
			    conn->rc_evcon, RECORDER_MAX_ANSWER);
			TAILQ_INSERT_TAIL(&r->r_conns, conn, rc_all);
			r->r_nconns++;
			if ((e = recorder_fd_check(r, conn)) != 0) {
				TAILQ_INSERT_HEAD(&r->r_idle, conn, rc_idle);
				recorder_no_fd(op, e);
				return;
			}
			recorder_send(op, conn);
			return;
		}
		free(conn);
	}
	TAILQ_INSERT_TAIL(&r->r_waitq, op, ro_entry);
	r->r_nwait++;
}

/* Create an operation and start it; returns the caller's deferred. */
static struct dfr *
recorder_start(struct recorder *r, enum rec_kind kind, const char *client,
	       int64_t first, size_t n, char *path, char *body)
{
	struct rec_op *op;
	struct dfr *d;

	op = calloc(1, sizeof *op);
	if (op == NULL || path == NULL || (kind == REC_RECORD && body == NULL))
		goto fail;
	if ((op->ro_d = dfr_new(NULL, NULL)) == NULL)
		goto fail;
	if (client != NULL && (op->ro_client = strdup(client)) == NULL)
		goto fail;
	op->ro_r = r;
	op->ro_kind = kind;
	op->ro_first = first;
	op->ro_n = n;
	op->ro_path = path;
	op->ro_body = body;
	d = dfr_ref(op->ro_d);
	r->r_active++;
	TAILQ_INSERT_TAIL(&r->r_ops, op, ro_all);
	recorder_dispatch(op);
	return d;
fail:
	if (op != NULL) {
		if (op->ro_d != NULL)
			dfr_unref(op->ro_d);
		free(op->ro_client);
		free(op);
	}
	free(path);
	free(body);
	errno = ENOMEM;
	return NULL;
}

/* Record first..first+n-1 for client in one POST /record-count. */
struct dfr *
recorder_record(struct recorder *r, const char *client, int64_t first, size_t n)
{
	struct evbuffer *b;
	char *body = NULL;
	size_t i, len;

	if ((b = evbuffer_new()) == NULL)
		return NULL;
	evbuffer_add_printf(b, "{\"client\": \"%s\", \"values\": [", client);
	for (i = 0; i < n; i++)
		evbuffer_add_printf(b, "%s%" PRId64, i ? ", " : "",
				    first + (int64_t)i);
	evbuffer_add(b, "]}", 3); /* with the terminating NUL */
	len = evbuffer_get_length(b);
	if ((body = malloc(len)) != NULL)
		evbuffer_remove(b, body, len);
	evbuffer_free(b);
	return recorder_start(r, REC_RECORD, client, first, n,
			      strdup("/record-count"), body);
}

/* Ask GET /clients/ID for the client's last value. */
struct dfr *
recorder_last_value(struct recorder *r, const char *client)
{
	char *path;

	if (asprintf(&path, "/clients/%s", client) < 0)
		path = NULL;
	return recorder_start(r, REC_CLIENT, client, 0, 0, path, NULL);
}

/* Probe GET /healthz once. */
struct dfr *
recorder_probe(struct recorder *r)
{
	return recorder_start(r, REC_PROBE, NULL, 0, 0, strdup("/healthz"),
			      NULL);
}
