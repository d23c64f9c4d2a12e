/*
 * client.h: counterd's private header, one section per module.
 *
 * counterd hands out numbers from named counters over HTTP on a Unix socket,
 * recording each number with record-countd before it is handed out.
 */
#ifndef CLIENT_H
#define CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

struct event_base;
struct evdns_base;
struct evhttp;
struct evhttp_request;
struct dfr;
struct dfr_lock;
struct dfr_queue;
struct dfr_stats;

/* Counter names: 1..64 of [A-Za-z0-9._-]. */
#define COUNTER_NAME_MAX 64
/* Client IDs at record-countd: 1..128 of [A-Za-z0-9._:-]. */
#define CLIENT_ID_MAX 128

/*
 * Failure codes of counterd's deferreds (besides libdfr's errno codes).
 * api.c turns each into an HTTP status and an error word.
 */
#define CD_EUNAVAILABLE 10503 /* record-countd unreachable after retries: 503  \
			       */
#define CD_ETIMEOUT 10504     /* record-countd did not answer in time: 504 */
#define CD_EBADGATEWAY                                                         \
	10502		  /* record-countd answered something unexpected: 502 */
#define CD_EBACKLOG 10001 /* too many waiting calls: 503 */
#define CD_EWAIT 10002	  /* waited longer than --wait-timeout: 503 */
#define CD_ESHUTDOWN 10003 /* counterd is stopping: 503 */
#define CD_ETOOMANY 10004  /* too many counters: 503 */
#define CD_EEXHAUSTED 10005 /* the counter handed out INT64_MAX: 409 */
#define CD_ENOFD 10006	    /* no file descriptor for a connection: 503 */
#define CD_ECONFLICT 10007  /* another writer recorded the value: 409 */

/* parse.c: pure parsers (no libevent), shared with the fuzz targets. */

/* Whether s (length len) is a valid counter name. */
int name_valid(const char *s, size_t len);
/* Whether s is a valid client id (the part before ':NAME'). */
int client_id_valid(const char *s);

/* The result of matching a request target against a route pattern. */
enum route_match { ROUTE_NO = 0, ROUTE_YES = 1, ROUTE_BADNAME = 2 };

/*
 * Match the path of a request target (query ignored) against pattern, in
 * which the segment "*" stands for one counter name. On ROUTE_YES the name
 * (if any) is copied into name (COUNTER_NAME_MAX + 1 bytes). ROUTE_BADNAME:
 * the shape matches but the name is invalid.
 */
enum route_match route_match(const char *target, const char *pattern,
			     char *name);

/* A parsed --server URL. */
struct server_url {
	char host[128]; /* without brackets for IPv6 */
	uint16_t port;
	int numeric; /* host is an IP literal: no resolver needed */
	int ipv6;
};
/* Parse http://HOST[:PORT][/]; 0, or -1 with *why set (static text). */
int server_url_parse(const char *url, struct server_url *u, const char **why);

/*
 * Check record-countd's answer to POST /record-count: it must name client
 * and acknowledge values first..first+n-1 in order, each saying whether it
 * was a duplicate. 0 with *max_dup set to the highest value acknowledged as
 * a duplicate (0 if none), or -1 with a reason written to why (and errno
 * ENOMEM if memory ran out reading it).
 */
int answer_parse_record(const char *body, size_t len, const char *client,
			int64_t first, size_t n, int64_t *max_dup, char *why,
			size_t whylen);
/* Read last_value from a GET /clients/ID answer; 0 or -1 (why, errno set). */
int answer_parse_client(const char *body, size_t len, const char *client,
			int64_t *last, char *why, size_t whylen);

/* recorder.c: HTTP client for record-countd. */
struct recorder_stats {
	uint64_t requests; /* attempts sent */
	uint64_t ok;	   /* operations that succeeded */
	uint64_t failed;   /* operations that failed after all retries */
	uint64_t retries;  /* attempts beyond the first (backoff) */
	uint64_t
	    eof_retries;    /* silent retries of stale keep-alive connections */
	uint64_t timeouts;  /* attempts that timed out */
	uint64_t values;    /* values acknowledged */
	size_t connections; /* connections open in the pool */
	size_t queued;	    /* operations waiting for a free connection */
	size_t active;	    /* operations in flight */
};

/* What record-countd said of a record operation (recorder_record's value). */
struct record_ack {
	int64_t max_dup; /* highest value it already had, 0 if none */
	int resent;	 /* the request was sent more than once, so an
			    earlier attempt may have recorded the values */
};

struct recorder;
/*
 * Create the recorder for url with a pool of at most pool connections, a
 * timeout on every request and retries (exponential backoff with jitter
 * from backoff_ms). NULL on error (logged).
 */
struct recorder *recorder_new(struct event_base *base,
			      const struct server_url *url, uint64_t timeout_ms,
			      unsigned retries, uint64_t backoff_ms,
			      size_t pool);
/* Free the recorder; operations still unfinished fail as in recorder_abort. */
void recorder_free(struct recorder *r);
/*
 * Give up on record-countd (the shutdown grace expired): every operation
 * in flight or queued fails now with CD_ESHUTDOWN and the message why (its
 * callbacks run inside this call), and later operations fail at once.
 */
void recorder_abort(struct recorder *r, const char *why);
/*
 * Record values first..first+n-1 for client in one POST /record-count.
 * Returns a deferred (caller's reference) that fires with a struct
 * record_ack (owned by the deferred) once record-countd acknowledged them all,
 * or fails with CD_EUNAVAILABLE, CD_ETIMEOUT or CD_EBADGATEWAY after the
 * retries, ENOMEM if there was no memory to read the answer (CD_ESHUTDOWN
 * after recorder_abort). NULL on ENOMEM.
 */
struct dfr *recorder_record(struct recorder *r, const char *client,
			    int64_t first, size_t n);
/*
 * Ask GET /clients/ID: the deferred fires with a malloc'd int64_t (owned by
 * the deferred) holding the client's last recorded value.
 */
struct dfr *recorder_last_value(struct recorder *r, const char *client);
/* Probe GET /healthz once (no retries): fires with NULL or fails. */
struct dfr *recorder_probe(struct recorder *r);
/* Whether the last finished exchange with record-countd succeeded (-1 unknown).
 */
int recorder_reachable(const struct recorder *r);
/* The reason of the last failure ("" if none). */
const char *recorder_last_error(const struct recorder *r);
/*
 * How many times recorder_reachable() has turned to 0, with *why set to the
 * reason of the latest (recorder's storage, valid until the next call into
 * it): whoever samples the state now and then sees outages that began and
 * ended between two looks.
 */
uint64_t recorder_outages(const struct recorder *r, const char **why);
void recorder_get_stats(const struct recorder *r, struct recorder_stats *st);
/* Operations in flight or queued. */
size_t recorder_busy(const struct recorder *r);

/* counter.c: one named counter and its strategy. */
enum strategy { STRATEGY_LOCKED = 0, STRATEGY_STATELESS, STRATEGY_UNSAFE };
const char *strategy_name(enum strategy s);

/* Settings shared by every counter. */
struct counter_config {
	struct event_base *base;
	struct recorder *recorder;
	const char *client_id;
	enum strategy strategy;
	size_t batch_max;
	size_t backlog;
	uint64_t wait_timeout_ms; /* 0: wait without limit */
};

struct counter_stats {
	int64_t count;	   /* last value handed out (or resumed) */
	int resumed;	   /* whether the last value was read from the server */
	size_t waiting;	   /* next calls waiting for their turn */
	size_t in_flight;  /* values being recorded now */
	uint64_t handed;   /* values handed out */
	uint64_t errors;   /* next calls that failed */
	uint64_t rejected; /* of those, backlog full */
	uint64_t timeouts; /* of those, wait timeout */
	uint64_t cancelled; /* callers that went away while waiting */
	uint64_t batches;   /* record requests that succeeded */
	uint64_t max_batch; /* largest batch acknowledged */
	uint64_t conflicts; /* records another writer had made first */
};

struct counter;

/* Look a counter up by name, creating it if create is set; NULL if none. */
struct counter *counter_get(const struct counter_config *cf, const char *name,
			    int create);
/* Walk every counter in order of creation: first, then after(c) until NULL. */
struct counter *counter_first(void);
struct counter *counter_after(const struct counter *c);
size_t counter_count(void);
const char *counter_name(const struct counter *c);
void counter_get_stats(const struct counter *c, struct counter_stats *st);
/* The counter's lock statistics (the lock also guards resume). */
void counter_lock_stats(const struct counter *c, struct dfr_stats *st);
/*
 * Ask for the next number. Returns a deferred (caller's reference) that
 * fires with a malloc'd int64_t, or fails with an HTTP status as its code
 * (503 backlog full, wait timeout, unreachable; 504 record timeout). The
 * caller may cancel it: while it waits, it leaves the queue and no number is
 * consumed for it. NULL on ENOMEM.
 */
struct dfr *counter_next(struct counter *c);
/* Shutdown: waiting calls fail with 503, in-flight records finish. */
void counter_shutdown_all(void);
/* Values in flight and calls waiting, over every counter. */
size_t counter_busy(void);
/* Free every counter (at exit, when nothing is in flight). */
void counter_free_all(void);

/* api.c: the HTTP API on the Unix socket. */
struct api_config {
	struct event_base *base;
	struct counter_config *counters;
	struct recorder *recorder;
	const char *server_url;
	size_t max_body;
	size_t max_headers;
	size_t max_uri;
};
/* Serve the API on the listening Unix socket fd. 0 or -1 (logged). */
int api_start(struct api_config *cf, int fd);
/* Stop accepting; answer later requests on open connections with 503. */
void api_stop_accepting(void);
/* Requests waiting for an answer. */
size_t api_pending(void);
void api_free(void);

/* reserve.c */
/*
 * Make libevent allocate through counterd's allocator, which draws on a
 * reserve set aside now when malloc fails; before any other libevent call.
 * 0, or -1 (out of memory).
 */
int reserve_init(void);

/* counterd.c */
extern volatile int counterd_stopping;
/* Update the server health state shown by /healthz. */
int counterd_uptime_s(void);

#endif /* CLIENT_H */
