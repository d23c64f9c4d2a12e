/*
 * server.h: record-countd's private header, one section per module.
 *
 * One libevent loop drives everything: libmicrohttpd runs in external epoll
 * mode, delayed requests are suspended connections resumed from timers, and
 * records are written by group commit before any of their answers go out.
 */
#ifndef SERVER_H
#define SERVER_H

#include <sys/queue.h>
#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

struct MHD_Connection;
struct MHD_Response;

/* Limits, documented in --help; each has a JSON error. */
#define LIMIT_URL 4096            /* request target (path and query), bytes: 414 */
#define LIMIT_HEADERS 8192        /* all header lines together, bytes: 431 */
#define LIMIT_HEADER_FIELDS 50    /* header lines: 431 (each takes ~64 bytes of the pool below) */
#define LIMIT_PARAMS 128          /* '&'-separated query parameters: 414 */
#define LIMIT_BODY 65536          /* request body, bytes: 413 */
#define LIMIT_VALUES 1000         /* values in one POST: 400 */
#define LIMIT_CLIENT 128          /* client id length: 400 */
#define LIMIT_RECORDS_PAGE 1000   /* /records?limit=: 400 above it */
#define DEFAULT_RECORDS_PAGE 100
#define MHD_MEMORY_LIMIT 16384    /* libmicrohttpd's per-connection pool (it clears it per request) */
#define SHUTDOWN_UPLOAD_GRACE_MS 1000     /* at shutdown, a request body still arriving gets this long */
#define SHUTDOWN_SEND_STALL_S 5           /* at shutdown, an answer no client reads for this long is dropped */

/* record-countd.c */
struct config {
	const char *listen;
	uint64_t latency_ms;
	uint64_t jitter_ms;
	uint64_t max_latency_ms;      /* 0: no cap */
	const char *db;
	int durability_full;
	uint64_t max_connections;
	uint64_t connection_timeout_ms;
	int access_log;
};
extern struct config cfg;
extern struct event_base *ev_base;
/* Wall-clock time in seconds, microsecond precision. */
double now_wall(void);
/* Monotonic time in milliseconds, and in microseconds. */
uint64_t now_mono_ms(void);
uint64_t now_mono_us(void);
/* Called when the last in-flight request is answered during shutdown. */
void main_maybe_exit(void);
extern int shutting_down;
struct store;
/* The record store, open for the daemon's lifetime. */
extern struct store *db;

/* input.c: strict parsing of what clients send; no I/O, fuzzed. */
#define INPUT_MAX_KV LIMIT_PARAMS     /* every parameter the limit lets through is parsed */
struct input_kv {
	char *key;
	char *value;
};
struct input_query {
	char *buf;                    /* owned: decoded keys and values */
	struct input_kv kv[INPUT_MAX_KV];
	size_t n;
};
struct input_error {
	const char *code;             /* e.g. "invalid_value" (static) */
	char message[256];
};
/* Split and percent-decode a query string (without '?'); q->buf is freed by input_query_free. */
int input_query_parse(const char *qs, size_t len, struct input_query *q, struct input_error *err);
void input_query_free(struct input_query *q);
/* The value of key, or NULL; -1 via err if key is not in allowed (NULL-terminated) list or repeated. */
int input_query_check(const struct input_query *q, const char *const *allowed, struct input_error *err);
const char *input_query_get(const struct input_query *q, const char *key);
/* A record value: decimal 1..9223372036854775807, no sign, spaces or leading zeros. */
int input_value(const char *s, uint64_t *out);
/* A client id: 1..128 of [A-Za-z0-9._:-]. */
int input_client(const char *s);
/* A client id from a path segment (/clients/ID), percent-decoded into id (LIMIT_CLIENT + 1 bytes). */
int input_path_client(const char *seg, char *id);
/* GET /record-count's query: fills client (LIMIT_CLIENT + 1 bytes) and value. */
int input_record_query(const char *qs, size_t len, char *client, uint64_t *value, struct input_error *err);
/*
 * GET /records' query: fills client (LIMIT_CLIENT + 1 bytes; "" for every
 * client), after (default 0) and limit (default DEFAULT_RECORDS_PAGE).
 */
int input_records_query(const char *qs, size_t len, char *client, uint64_t *after, unsigned *limit,
    struct input_error *err);
/* POST /record-count's body; *values is malloc'd (caller frees) with *n entries. */
int input_record_body(const char *body, size_t len, char *client, uint64_t **values, size_t *n,
    struct input_error *err);

/* store-sqlite.c (see store.h) */

/* metrics.c */
/* Note the process's start time (process_start_time_seconds); first thing in main. */
void metrics_init(void);
struct client_stats {
	char *id;
	uint64_t recorded;
	uint64_t last_value;
	uint64_t in_flight;
	uint64_t max_in_flight;
	uint64_t out_of_order;
	struct client_stats *next;    /* hash chain */
};
/* The stats of client id, created if new (never freed before exit); NULL out of memory. */
struct client_stats *metrics_client(const char *id);
/* A client's stats if known, else NULL. */
struct client_stats *metrics_client_find(const char *id);
void metrics_request_start(struct client_stats *cs);
void metrics_request_end(struct client_stats *cs);
/* One record was stored (not a duplicate). */
void metrics_recorded(struct client_stats *cs, uint64_t value);
/* A client's stored summary, loaded at start; 0, or -1 out of memory. */
int metrics_loaded(const char *id, uint64_t last_value, uint64_t recorded);
void metrics_duplicate(void);
void metrics_rejected(void);
/* One response queued: route index, status, seconds since arrival. */
void metrics_response(int route, unsigned status, double seconds);
void metrics_commit(double seconds, size_t records);
/* The /stats JSON document (all clients, or only client only if known); malloc'd, caller frees; NULL out of memory. */
char *metrics_stats(const char *only, size_t *len);
size_t metrics_clients(void);
/*
 * The /stats document of every client, taken piece by piece: open it when
 * the request comes (the clients known then are listed), read it as the
 * connection takes it (0 at the end, -1 out of memory), close it; NULL if
 * out of memory.
 */
struct metrics_stream;
struct metrics_stream *metrics_stats_open(void);
ssize_t metrics_stats_read(struct metrics_stream *s, char *buf, size_t max);
void metrics_stats_close(struct metrics_stream *s);
/* Prometheus text; malloc'd, caller frees; NULL out of memory. */
char *metrics_prometheus(size_t *len);
void metrics_free(void);

/* http.c */
enum route_id {
	ROUTE_RECORD_COUNT,
	ROUTE_RECORDS,
	ROUTE_CLIENTS,
	ROUTE_STATS,
	ROUTE_HEALTHZ,
	ROUTE_METRICS,
	ROUTE_OTHER,                  /* unknown path, errors before routing */
	ROUTE_COUNT
};
extern const char *const route_names[ROUTE_COUNT];

/* One request from arrival (URI seen) to completion; owned by http.c. */
struct req {
	struct MHD_Connection *conn;
	char *uri;                    /* raw request target, copied (in the same allocation as the req) */
	size_t uri_len;
	const char *uri_end;          /* in libmicrohttpd's request-line buffer: where the target's string ended */
	const char *version;          /* libmicrohttpd's, from the same buffer */
	char *path;                   /* the part before '?' (likewise) */
	const char *query;            /* inside uri, after '?', or "" (libmicrohttpd is not given it: no GET args) */
	const char *method;
	double arrival_wall;
	uint64_t arrival_us;
	int route;
	int started;
	int no_body;                  /* neither Content-Length (but 0) nor Transfer-Encoding: nothing follows the headers */
	int handled;                  /* its route's handler ran (once) */
	int answered;                 /* a response is queued or failed */
	int counted;                  /* counted as in flight */

	char *body;
	size_t body_len;
	size_t body_cap;

	struct MHD_Response *resp;    /* prepared answer */
	unsigned status;

	/* /record-count */
	char client[LIMIT_CLIENT + 1];
	struct client_stats *cs;
	uint64_t *values;             /* malloc'd, or value1 for one value */
	int64_t *seqs;                /* likewise seq1 */
	unsigned char *dups;          /* likewise dup1 */
	size_t nvalues;
	uint64_t value1;              /* inline storage of a GET's one value (no malloc per request) */
	int64_t seq1;
	unsigned char dup1;
	int is_post;
	struct event *timer;
	uint64_t due_us;               /* arrival + latency, monotonic */
	int suspended;
	int due;
	int committed;
	int failed;
	int full;                     /* failed: the disk is full */
	int oom;                      /* failed: no memory for its job, nothing was stored */
	int nomem;                    /* its answer could not be built: it gets the prebuilt 503 out_of_memory */
	struct delay_job *job;        /* delay.c's, while the store has the values */
	struct api_read *read;        /* api.c's, while the store runs the read */
	TAILQ_ENTRY(req) ready_entry;
	int in_ready;
};

/* Serve on n listening, non-blocking sockets (one libmicrohttpd daemon each); 0 or -1, logged. */
int http_start(const int *fds, size_t n);
/* Stop accepting new connections and close those with no request in flight (shutdown begins). */
void http_quiesce(void);
/* Stop the daemon (after every request is answered). */
void http_stop(void);
/* Run libmicrohttpd once and re-arm its timer. */
void http_run(void);
/* Prepare r's answer: status and a JSON body (reference stolen). */
void http_answer(struct req *r, unsigned status, json_t *body);
/* Prepare a JSON error answer {"error": code, "message": ...}. */
void http_error(struct req *r, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Prepare a plain-text answer (Prometheus); text is malloc'd and taken, NULL (out of memory) answers 503. */
void http_answer_text(struct req *r, unsigned status, const char *type, char *text, size_t len);
/* Prepare an answer of unknown length that read(arg, ...) writes as it is sent; done(arg) when over. */
void http_answer_stream(struct req *r, unsigned status, const char *type, ssize_t (*read)(void *, char *, size_t),
    void (*done)(void *), void *arg);
/*
 * r's answer cannot be built for want of memory: it gets a 503
 * out_of_memory made at start (no allocation), and a line is logged (a
 * few per minute at most).
 */
void http_nomem(struct req *r, const char *what);
/* Log that memory ran out doing what and a request answers 503 out_of_memory (limited likewise). */
void http_nomem_log(const char *what);
/* Requests between arrival and their last callback. */
extern uint64_t http_requests_open;

/* api.c */
typedef void (*api_handler_cb)(struct req *r);
struct route_entry {
	const char *method;           /* "GET", "POST" */
	const char *path;             /* exact, or prefix ending in '/' */
	int prefix;
	int route;
	api_handler_cb handler;
};
extern const struct route_entry api_routes[];
extern const size_t api_nroutes;
/* Build the answer of a /record-count request once its records are committed. */
void api_record_answer(struct req *r);
/* Initialise the reads' event on ev_base; 0 or -1. */
int api_init(void);
void api_free(void);
/* Forget r (its connection closed): its read, if any, is freed when the store hands it back. */
void api_forget(struct req *r);
/* Wait for every read handed to the store (shutdown). */
void api_drain(void);
/* Requests suspended while the store reads for them. */
extern uint64_t api_reads_waiting;

/* delay.c */
/* Initialise the delay machinery (events on ev_base). */
int delay_init(void);
void delay_free(void);
/* Suspend r, hand its values to the store, and answer it after its latency and their commit. */
void delay_record(struct req *r);
/* Forget r (its connection closed): cancel its timer and list entries. */
void delay_forget(struct req *r);
/* Requests suspended right now. */
extern uint64_t delay_suspended;
/* Wait for every job handed to the store (shutdown). */
void delay_drain(void);

#endif /* SERVER_H */
