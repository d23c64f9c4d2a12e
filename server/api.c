/*
 * api.c: the HTTP API, one handler per route; the table at the end is the
 * whole routing (adding a route is adding a row).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "server.h"
#include "store.h"
#include "util.h"

/*
 * A /records or /clients/ID read on its way through one of the store's
 * reader threads, its connection suspended meanwhile. It outlives the request if the
 * client hangs up first: the store owns it until it comes back.
 */
struct api_read {
	struct store_read sr;         /* first: the store hands this back */
	struct req *r;                /* NULL once the request is gone */
	json_t *recs;                 /* a page's records, built on a reader thread */
	int incomplete;               /* a record of the page could not be built (out of memory) */
	char client[LIMIT_CLIENT + 1];
};

static struct event *api_read_ev;
static uint64_t api_reads_out;    /* handed to the store, not yet collected */
uint64_t api_reads_waiting;

/* Answer r's input error: 400, or 503 when memory ran out parsing it. */
static void
api_input_error(struct req *r, const struct input_error *err)
{
	if (strcmp(err->code, "out_of_memory") == 0)
		http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, err->code, "%s", err->message);
	else
		http_error(r, MHD_HTTP_BAD_REQUEST, err->code, "%s", err->message);
}

/* Start a /record-count request of r->client: count it in flight, then record and delay it. */
static void
api_record_start(struct req *r)
{
	if (r->nvalues == 1) {
		r->seqs = &r->seq1;
		r->dups = &r->dup1;
	} else if ((r->seqs = calloc(r->nvalues, sizeof *r->seqs)) == NULL ||
	    (r->dups = calloc(r->nvalues, sizeof *r->dups)) == NULL) {
		http_nomem(r, "for a request's records (nothing was recorded)");
		return;
	}
	if ((r->cs = metrics_client(r->client)) == NULL) {
		http_nomem(r, "for a new client's statistics (nothing was recorded)");
		return;
	}
	metrics_request_start(r->cs);
	r->counted = 1;
	delay_record(r);
}

/* GET /record-count?value=N[&client=ID] */
static void
api_record_get(struct req *r)
{
	struct input_error err;
	uint64_t value;

	if (input_record_query(r->query, strlen(r->query), r->client, &value, &err) != 0) {
		r->client[0] = '\0';
		api_input_error(r, &err);
		return;
	}
	r->value1 = value;
	r->values = &r->value1;
	r->nvalues = 1;
	api_record_start(r);
}

/* POST /record-count with {"client": "ID", "values": [N, ...]} */
static void
api_record_post(struct req *r)
{
	struct input_error err;

	r->is_post = 1;
	if (r->query[0] != '\0') {
		http_error(r, MHD_HTTP_BAD_REQUEST, "unknown_parameter",
		    "POST /record-count takes its values in a JSON body, not in the query");
		return;
	}
	if (input_record_body(r->body ? r->body : "", r->body_len, r->client, &r->values, &r->nvalues,
	    &err) != 0) {
		r->client[0] = '\0';
		api_input_error(r, &err);
		return;
	}
	api_record_start(r);
}

/* The answer of a /record-count request whose records are committed (or failed). */
void
api_record_answer(struct req *r)
{
	json_t *recs;
	char *text;
	size_t i;
	int len;

	char why[256];

	if (r->failed && store_failed(db, why, sizeof why)) {
		http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "storage_error",
		    "the record may or may not be stored (%s); retry it after the restart: if it was stored, "
		    "the answer says duplicate", why);
		return;
	}
	if (r->failed && r->full) {
		http_error(r, MHD_HTTP_INSUFFICIENT_STORAGE, "storage_full",
		    "the disk holding the database is full: nothing of this request was recorded (records acknowledged "
		    "before are safe); retry once space is freed");
		return;
	}
	if (r->failed && r->oom) {
		http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out_of_memory",
		    "record-countd is out of memory: nothing of this request was recorded; retry later");
		return;
	}
	if (r->failed) {
		http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "storage_error",
		    "the record could not be stored; nothing was recorded, retry later");
		return;
	}
	if (!r->is_post) {
		/*
		 * The one answer on the hot path, built without jansson: its shape
		 * is fixed and a client id needs no escaping ([A-Za-z0-9._:-]).
		 */
		if ((text = malloc(96 + LIMIT_CLIENT)) == NULL) {
			http_nomem(r, "building an answer");
			return;
		}
		len = snprintf(text, 96 + LIMIT_CLIENT, "{\"value\":%llu,\"client\":\"%s\",\"seq\":%lld,\"duplicate\":%s}\n",
		    (unsigned long long)r->values[0], r->client, (long long)r->seqs[0], r->dups[0] ? "true" : "false");
		http_answer_text(r, MHD_HTTP_OK, "application/json", text, (size_t)len);
		return;
	}
	/* Every record or none: an answer missing one would tell the client it was not stored. */
	if ((recs = json_array()) == NULL) {
		http_nomem(r, "building an answer");
		return;
	}
	for (i = 0; i < r->nvalues; i++)
		if (json_array_append_new(recs, json_pack("{sI sI sb}", "value", (json_int_t)r->values[i], "seq",
		    (json_int_t)r->seqs[i], "duplicate", r->dups[i])) != 0) {
			json_decref(recs);
			http_nomem(r, "building an answer");
			return;
		}
	http_answer(r, MHD_HTTP_OK, json_pack("{ss so}", "client", r->client, "records", recs));
}

/*
 * Add one record to a /records page (on one of the store's reader threads). A client
 * id or time written into the database by other means may not fit JSON: the
 * id's stray bytes become U+FFFD, a time that is not finite is null. Such an
 * id may be of any length, so it is copied whole (each byte may take three).
 */
static void
api_records_cb(int64_t seq, const char *client, int64_t value, double at, void *arg)
{
	struct api_read *ar = arg;
	char buf[4 * LIMIT_CLIENT + 1], *id = buf;
	size_t need;
	json_t *rec;

	if (client == NULL)
		client = "";
	if ((need = 3 * strlen(client) + 1) > sizeof buf && (id = malloc(need)) == NULL) {
		ar->incomplete = 1;
		return;
	}
	rec = json_pack("{sI ss sI so}", "seq", (json_int_t)seq, "client",
	    parse_utf8_fix(client, id, id == buf ? sizeof buf : need), "value", (json_int_t)value, "at",
	    isfinite(at) ? json_real(at) : json_null());
	if (id != buf)
		free(id);
	if (rec == NULL || json_array_append_new(ar->recs, rec) != 0)
		ar->incomplete = 1;
}

/*
 * Hand r's read to the store's reader threads and suspend r until it is back:
 * with limit 0, client's summary; else a page of records after after.
 */
static void
api_read(struct req *r, const char *client, int64_t after, unsigned limit)
{
	struct api_read *ar;

	if ((ar = calloc(1, sizeof *ar)) == NULL || (limit != 0 && (ar->recs = json_array()) == NULL)) {
		free(ar);
		http_nomem(r, "for a read");
		return;
	}
	if (client != NULL) {
		snprintf(ar->client, sizeof ar->client, "%s", client);
		ar->sr.client = ar->client;
	}
	ar->sr.after = after;
	ar->sr.limit = limit;
	ar->sr.cb = api_records_cb;
	ar->sr.arg = ar;
	ar->r = r;
	r->read = ar;
	MHD_suspend_connection(r->conn);
	api_reads_out++;
	api_reads_waiting++;
	store_read(db, &ar->sr);
}

/*
 * A read of the database failed and its request answers 503: say so (else
 * only /metrics would show it), at most API_READ_LOG_BURST lines per
 * API_READ_LOG_S seconds, since each is a client's request.
 */
#define API_READ_LOG_S 10
#define API_READ_LOG_BURST 5
static void
api_read_failed(const struct api_read *ar)
{
	static struct log_limit ll;
	unsigned long skipped;
	char more[64] = "";

	if (!log_limit_burst_due(&ll, API_READ_LOG_S, API_READ_LOG_BURST, &skipped))
		return;
	if (skipped > 0)
		snprintf(more, sizeof more, " (%lu more since the last such line)", skipped);
	if (ar->sr.limit == 0)
		log_warnx("cannot read client %s from the database: %s; answered 503 storage_error%s", ar->client,
		    ar->incomplete ? "out of memory" : ar->sr.error, more);
	else
		log_warnx("cannot read records from the database: %s; answered 503 storage_error%s",
		    ar->incomplete ? "out of memory" : ar->sr.error, more);
}

/* The answer of r, whose read ar is back. */
static void
api_read_answer(struct req *r, struct api_read *ar)
{
	json_t *next;

	if (!ar->sr.ok || ar->incomplete) {
		api_read_failed(ar);
		http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "storage_error", "cannot read %s: %s",
		    ar->sr.limit == 0 ? "client" : "records", ar->incomplete ? "out of memory" : ar->sr.error);
		return;
	}
	if (ar->sr.limit == 0) {
		http_answer(r, MHD_HTTP_OK, json_pack("{ss sI sI}", "client", ar->client, "last_value",
		    (json_int_t)ar->sr.last_value, "recorded", (json_int_t)ar->sr.recorded));
		return;
	}
	next = ar->sr.rows == ar->sr.limit ? json_integer((json_int_t)ar->sr.last_seq) : json_null();
	http_answer(r, MHD_HTTP_OK, json_pack("{sO so}", "records", ar->recs, "next_after", next));
}

/* The reader threads are done with reads: answer and resume their requests. */
static void
api_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_read *sr, *next;
	struct api_read *ar;
	struct req *r;
	int resumed = 0;

	for (sr = store_read_collect(db); sr != NULL; sr = next) {
		next = sr->next;
		ar = (struct api_read *)sr;
		api_reads_out--;
		if ((r = ar->r) != NULL) {
			r->read = NULL;
			api_reads_waiting--;
			api_read_answer(r, ar);
			MHD_resume_connection(r->conn);
			resumed = 1;
		}
		json_decref(ar->recs);
		free(ar);
	}
	if (resumed)
		http_run();
}

/* Watch the store's read pipe. */
int
api_init(void)
{
	api_read_ev = event_new(ev_base, store_read_fd(db), EV_READ | EV_PERSIST, api_read_cb, NULL);
	if (api_read_ev == NULL || event_add(api_read_ev, NULL) != 0) {
		log_warnx("cannot watch the store's reads");
		return -1;
	}
	return 0;
}

void
api_free(void)
{
	if (api_read_ev != NULL)
		event_free(api_read_ev);
	api_read_ev = NULL;
}

/* r is going away; its read, if any, is freed when it comes back. */
void
api_forget(struct req *r)
{
	if (r->read != NULL) {
		r->read->r = NULL;
		r->read = NULL;
		api_reads_waiting--;
	}
}

/* Wait until the store has handed back every read. */
void
api_drain(void)
{
	struct pollfd pfd;

	pfd.fd = store_read_fd(db);
	pfd.events = POLLIN;
	while (api_reads_out > 0) {
		if (poll(&pfd, 1, -1) == -1 && errno != EINTR) {
			log_warn("poll");
			return;
		}
		api_read_cb(-1, 0, NULL);
	}
}

/*
 * Parse r's query, allowing only the parameters in allowed, and check its
 * client id if it has one; a bad query is answered 400 and gives -1. The
 * caller frees q either way.
 */
static int
api_query(struct req *r, const char *const *allowed, struct input_query *q, const char **client)
{
	struct input_error err;

	if (input_query_parse(r->query, strlen(r->query), q, &err) != 0 ||
	    input_query_check(q, allowed, &err) != 0) {
		api_input_error(r, &err);
		return -1;
	}
	*client = input_query_get(q, "client");
	if (*client != NULL && input_client(*client) != 0) {
		http_error(r, MHD_HTTP_BAD_REQUEST, "invalid_client",
		    "client: must be 1..128 characters of [A-Za-z0-9._:-]");
		return -1;
	}
	return 0;
}

/* GET /records?client=ID&after=SEQ&limit=L */
static void
api_records(struct req *r)
{
	struct input_error err;
	char client[LIMIT_CLIENT + 1];
	uint64_t after;
	unsigned limit;

	if (input_records_query(r->query, strlen(r->query), client, &after, &limit, &err) != 0) {
		api_input_error(r, &err);
		return;
	}
	api_read(r, client[0] != '\0' ? client : NULL, (int64_t)after, limit);
}

/* GET /clients/ID */
static void
api_clients(struct req *r)
{
	char id[LIMIT_CLIENT + 1];

	if (input_path_client(r->path + strlen("/clients/"), id) != 0) {
		http_error(r, MHD_HTTP_BAD_REQUEST, "invalid_client",
		    "client: the id in /clients/ID must be 1..128 characters of [A-Za-z0-9._:-]");
		return;
	}
	api_read(r, id, 0, 0);
}

/* Clients up to which /stats is built whole (about 400 to 800 KB); above, it is streamed. */
#define API_STATS_WHOLE 4096

/* The whole /stats document's source for http_answer_stream(). */
static ssize_t
api_stats_read(void *arg, char *buf, size_t max)
{
	return metrics_stats_read(arg, buf, max);
}

/* The whole /stats document is sent or dropped. */
static void
api_stats_done(void *arg)
{
	metrics_stats_close(arg);
}

/*
 * GET /stats[?client=ID]: built whole (with a Content-Length) for one client
 * or up to API_STATS_WHOLE of them, else written as the connection takes it.
 */
static void
api_stats(struct req *r)
{
	static const char *const allowed[] = { "client", NULL };
	struct input_query q;
	struct metrics_stream *s;
	const char *client;
	char *text;
	size_t len;

	if (api_query(r, allowed, &q, &client) != 0)
		goto out;
	if (client != NULL || metrics_clients() <= API_STATS_WHOLE) {
		text = metrics_stats(client, &len);
		http_answer_text(r, MHD_HTTP_OK, "application/json", text, len);
	} else if ((s = metrics_stats_open()) != NULL)
		http_answer_stream(r, MHD_HTTP_OK, "application/json", api_stats_read, api_stats_done, s);
	else
		http_nomem(r, "building an answer");
out:
	input_query_free(&q);
}

/* GET /healthz */
static void
api_healthz(struct req *r)
{
	char why[256];

	if (shutting_down)
		http_answer(r, MHD_HTTP_SERVICE_UNAVAILABLE, json_pack("{ss}", "status", "stopping"));
	else if (store_failed(db, why, sizeof why))
		http_answer(r, MHD_HTTP_SERVICE_UNAVAILABLE, json_pack("{ss ss ss}", "status", "failed",
		    "error", "storage_failed", "message", why));
	else if (store_full(db, why, sizeof why))
		http_answer(r, MHD_HTTP_SERVICE_UNAVAILABLE, json_pack("{ss ss ss}", "status", "failed",
		    "error", "storage_full", "message", why));
	else
		http_answer(r, MHD_HTTP_OK, json_pack("{ss}", "status", "ok"));
}

/* GET /metrics */
static void
api_metrics(struct req *r)
{
	char *text;
	size_t len;

	text = metrics_prometheus(&len);
	http_answer_text(r, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

const struct route_entry api_routes[] = {
	{ "GET", "/record-count", 0, ROUTE_RECORD_COUNT, api_record_get },
	{ "POST", "/record-count", 0, ROUTE_RECORD_COUNT, api_record_post },
	{ "GET", "/records", 0, ROUTE_RECORDS, api_records },
	{ "GET", "/clients/", 1, ROUTE_CLIENTS, api_clients },
	{ "GET", "/stats", 0, ROUTE_STATS, api_stats },
	{ "GET", "/healthz", 0, ROUTE_HEALTHZ, api_healthz },
	{ "GET", "/metrics", 0, ROUTE_METRICS, api_metrics },
};
const size_t api_nroutes = sizeof api_routes / sizeof api_routes[0];
