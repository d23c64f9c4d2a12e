/*
 * metrics.c: per-client statistics (/stats) and Prometheus metrics (/metrics).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "util.h"

static const double metrics_latency_bounds[] = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5,
	10 };
#define NLAT (sizeof metrics_latency_bounds / sizeof metrics_latency_bounds[0])
static const double metrics_commit_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1 };
#define NCOMMIT (sizeof metrics_commit_bounds / sizeof metrics_commit_bounds[0])

static struct {
	struct client_stats **table;
	size_t size;
	size_t count;
	struct client_stats **order;  /* every client in order of arrival, count of them; /stats walks it */
	size_t order_cap;
	uint64_t recorded;            /* records in the store */
	uint64_t recorded_here;       /* stored by this process */
	uint64_t duplicates;
	uint64_t rejected;
	uint64_t in_flight;
	uint64_t max_in_flight;
	uint64_t requests[ROUTE_COUNT][600];
	uint64_t lat_buckets[ROUTE_COUNT][NLAT + 1];
	double lat_sum[ROUTE_COUNT];
	uint64_t lat_count[ROUTE_COUNT];
	uint64_t commit_buckets[NCOMMIT + 1];
	double commit_sum;
	uint64_t commits;
	uint64_t committed_records;   /* new records, not duplicates */
	double start_wall;            /* process_start_time_seconds */
} m;

/* Note the time the process started. */
void
metrics_init(void)
{
	m.start_wall = now_wall();
}

/* FNV-1a of a string. */
static size_t
metrics_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return (size_t)h;
}

/* Double the table when it gets full; out of memory, it stays as it is (longer chains). */
static void
metrics_grow(void)
{
	struct client_stats **t, *cs, *next;
	size_t i, size = m.size ? m.size * 2 : 64, h;

	if ((t = calloc(size, sizeof *t)) == NULL)
		return;
	for (i = 0; i < m.size; i++) {
		for (cs = m.table[i]; cs != NULL; cs = next) {
			next = cs->next;
			h = metrics_hash(cs->id) & (size - 1);
			cs->next = t[h];
			t[h] = cs;
		}
	}
	free(m.table);
	m.table = t;
	m.size = size;
}

/* A client's stats if known. */
struct client_stats *
metrics_client_find(const char *id)
{
	struct client_stats *cs;

	if (m.size == 0)
		return NULL;
	for (cs = m.table[metrics_hash(id) & (m.size - 1)]; cs != NULL; cs = cs->next)
		if (strcmp(cs->id, id) == 0)
			return cs;
	return NULL;
}

/* A client's stats, created if new. */
struct client_stats *
metrics_client(const char *id)
{
	struct client_stats *cs, **order;
	size_t h;

	if ((cs = metrics_client_find(id)) != NULL)
		return cs;
	if (m.count >= m.size / 2 * 1 + m.size / 4)
		metrics_grow();
	if (m.size == 0)
		return NULL;
	if (m.count == m.order_cap) {
		order = realloc(m.order, (m.order_cap ? m.order_cap * 2 : 64) * sizeof *m.order);
		if (order == NULL)
			return NULL;
		m.order = order;
		m.order_cap = m.order_cap ? m.order_cap * 2 : 64;
	}
	if ((cs = calloc(1, sizeof *cs)) == NULL || (cs->id = strdup(id)) == NULL) {
		free(cs);
		return NULL;
	}
	m.order[m.count] = cs;
	h = metrics_hash(id) & (m.size - 1);
	cs->next = m.table[h];
	m.table[h] = cs;
	m.count++;
	return cs;
}

/* A /record-count request of cs entered the server. */
void
metrics_request_start(struct client_stats *cs)
{
	if (++m.in_flight > m.max_in_flight)
		m.max_in_flight = m.in_flight;
	if (++cs->in_flight > cs->max_in_flight)
		cs->max_in_flight = cs->in_flight;
}

/* A /record-count request of cs was answered. */
void
metrics_request_end(struct client_stats *cs)
{
	m.in_flight--;
	cs->in_flight--;
}

/* One new record. */
void
metrics_recorded(struct client_stats *cs, uint64_t value)
{
	m.recorded++;
	m.recorded_here++;
	cs->recorded++;
	if (value < cs->last_value)
		cs->out_of_order++;
	else
		cs->last_value = value;
}

/* A client's summary from the store; -1 out of memory. */
int
metrics_loaded(const char *id, uint64_t last_value, uint64_t recorded)
{
	struct client_stats *cs = metrics_client(id);

	if (cs == NULL)
		return -1;
	cs->last_value = last_value;
	cs->recorded = recorded;
	m.recorded += recorded;
	return 0;
}

/* One duplicate record. */
void
metrics_duplicate(void)
{
	m.duplicates++;
}

/* One rejected request (4xx). */
void
metrics_rejected(void)
{
	m.rejected++;
}

/* Put x in the right bucket of a histogram. */
static void
metrics_observe(uint64_t *buckets, const double *bounds, size_t n, double x)
{
	size_t i;

	for (i = 0; i < n && x > bounds[i]; i++)
		;
	buckets[i]++;
}

/* One response queued. */
void
metrics_response(int route, unsigned status, double seconds)
{
	if (status < 600)
		m.requests[route][status]++;
	metrics_observe(m.lat_buckets[route], metrics_latency_bounds, NLAT, seconds);
	m.lat_sum[route] += seconds;
	m.lat_count[route]++;
}

/* One group commit: how long it took, and how many new records it wrote (duplicates write nothing). */
void
metrics_commit(double seconds, size_t records)
{
	metrics_observe(m.commit_buckets, metrics_commit_bounds, NCOMMIT, seconds);
	m.commit_sum += seconds;
	m.commits++;
	m.committed_records += records;
}

/* A document being written; s is NULL once memory ran out (then nothing more is written). */
struct metrics_buf {
	char *s;
	size_t len;
	size_t cap;
};

/* Make room for need more bytes and the NUL; 0, or -1 (b->s freed and NULL) out of memory. */
static int
metrics_room(struct metrics_buf *b, size_t need)
{
	char *s;

	if (b->s == NULL)
		return -1;
	if (b->cap - b->len > need)
		return 0;
	b->cap = b->cap * 2 + need + 64;
	if ((s = realloc(b->s, b->cap)) == NULL) {
		free(b->s);
		b->s = NULL;
		return -1;
	}
	b->s = s;
	return 0;
}

/* Append formatted text. */
static void __attribute__((format(printf, 2, 3)))
metrics_printf(struct metrics_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	while (b->s != NULL) {
		va_start(ap, fmt);
		n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		metrics_room(b, (size_t)n);
	}
}

/* Append n bytes of p. */
static void
metrics_put(struct metrics_buf *b, const char *p, size_t n)
{
	if (metrics_room(b, n) != 0)
		return;
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
}

/* Append v in decimal. */
static void
metrics_put_u64(struct metrics_buf *b, uint64_t v)
{
	char d[20], *p = d + sizeof d;

	do
		*--p = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	metrics_put(b, p, (size_t)(d + sizeof d - p));
}

/*
 * Append id as a JSON string. Ids the API takes need no escaping; one from a
 * database written by other means may hold anything: quotes, backslashes and
 * control bytes are escaped, valid UTF-8 is kept and any other byte becomes
 * U+FFFD.
 */
static void
metrics_put_id(struct metrics_buf *b, const char *id)
{
	const unsigned char *p;
	char esc[8];
	size_t n;

	metrics_put(b, "\"", 1);
	for (p = (const unsigned char *)id; *p != '\0'; p += n) {
		n = 1;
		if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
			metrics_put(b, (const char *)p, 1);
		else if (*p < 0x80) {
			snprintf(esc, sizeof esc, "\\u%04x", *p);
			metrics_put(b, esc, 6);
		} else if ((n = parse_utf8_len(p)) != 0)
			metrics_put(b, (const char *)p, n);
		else {
			metrics_put(b, "\\ufffd", 6);
			n = 1;
		}
	}
	metrics_put(b, "\"", 1);
}

/* Append one client's entry of the /stats document. */
static void
metrics_put_client(struct metrics_buf *b, const struct client_stats *cs, int first)
{
	static const char *const names[] = { "{\"recorded\":", ",\"last_value\":", ",\"in_flight\":",
		",\"max_in_flight\":", ",\"out_of_order\":" };
	const uint64_t values[] = { cs->recorded, cs->last_value, cs->in_flight, cs->max_in_flight,
		cs->out_of_order };
	size_t i;

	if (!first)
		metrics_put(b, ",", 1);
	metrics_put_id(b, cs->id);
	metrics_put(b, ":", 1);
	for (i = 0; i < sizeof values / sizeof values[0]; i++) {
		metrics_put(b, names[i], strlen(names[i]));
		metrics_put_u64(b, values[i]);
	}
	metrics_put(b, "}", 1);
}

/* The head of the /stats document, up to the first client's entry. */
static void
metrics_put_head(struct metrics_buf *b)
{
	metrics_printf(b, "{\"recorded\":%llu,\"duplicates\":%llu,\"rejected\":%llu,\"in_flight\":%llu,"
	    "\"max_in_flight\":%llu,\"clients\":{", (unsigned long long)m.recorded, (unsigned long long)m.duplicates,
	    (unsigned long long)m.rejected, (unsigned long long)m.in_flight, (unsigned long long)m.max_in_flight);
}

/*
 * The /stats document, written directly rather than built in jansson: of
 * every client (for a few; see metrics_stats_open() for many), or only of
 * client only (its entry if known) when only is not NULL.
 */
char *
metrics_stats(const char *only, size_t *len)
{
	struct metrics_buf b = { NULL, 0, 0 };
	struct client_stats *cs;
	size_t i;

	b.cap = 256 + (only != NULL ? 0 : m.count * (48 + 5 * 20));
	if ((b.s = malloc(b.cap)) == NULL)
		return NULL;
	metrics_put_head(&b);
	if (only != NULL) {
		if ((cs = metrics_client_find(only)) != NULL)
			metrics_put_client(&b, cs, 1);
	} else {
		for (i = 0; i < m.count; i++)
			metrics_put_client(&b, m.order[i], i == 0);
	}
	metrics_put(&b, "}}\n", 3);
	*len = b.len;
	return b.s;
}

/* Clients known. */
size_t
metrics_clients(void)
{
	return m.count;
}

/*
 * The whole /stats document, written a few clients at a time as its
 * connection takes it, so that a million clients neither hold the loop for
 * the whole document nor take its size in memory per request.
 */
struct metrics_stream {
	struct metrics_buf b;         /* entries written and not yet taken */
	size_t off;                   /* of b, bytes taken */
	size_t next;                  /* the next client, an index in m.order */
	size_t end;                   /* the clients known when the request came */
	int tail;                     /* the closing braces are in b */
};

/* Bytes of entries written at a time. */
#define METRICS_STREAM_PIECE 16384

/* Start a /stats document of every client known now; NULL if out of memory. */
struct metrics_stream *
metrics_stats_open(void)
{
	struct metrics_stream *s;

	if ((s = calloc(1, sizeof *s)) == NULL)
		return NULL;
	s->b.cap = METRICS_STREAM_PIECE + 1024;
	if ((s->b.s = malloc(s->b.cap)) != NULL)
		metrics_put_head(&s->b);
	if (s->b.s == NULL) {
		free(s);
		return NULL;
	}
	s->end = m.count;
	return s;
}

/*
 * Copy up to max bytes of the document to buf: the number copied, 0 once it
 * is all taken, -1 if memory ran out writing it (the rest cannot be sent).
 * Each client's figures are those of when its piece is written.
 */
ssize_t
metrics_stats_read(struct metrics_stream *s, char *buf, size_t max)
{
	size_t n = 0, k;

	while (n < max) {
		if (s->off == s->b.len) {
			if (s->tail)
				break;
			s->b.len = s->off = 0;
			for (; s->next < s->end && s->b.len < METRICS_STREAM_PIECE; s->next++)
				metrics_put_client(&s->b, m.order[s->next], s->next == 0);
			if (s->next == s->end) {
				metrics_put(&s->b, "}}\n", 3);
				s->tail = 1;
			}
			if (s->b.s == NULL)
				return -1;
		}
		k = s->b.len - s->off < max - n ? s->b.len - s->off : max - n;
		memcpy(buf + n, s->b.s + s->off, k);
		s->off += k;
		n += k;
	}
	return (ssize_t)n;
}

/* Free a /stats document, taken or not. */
void
metrics_stats_close(struct metrics_stream *s)
{
	free(s->b.s);
	free(s);
}

/* The /metrics document in Prometheus text format 0.0.4. */
char *
metrics_prometheus(size_t *len)
{
	struct metrics_buf b = { NULL, 0, 0 };
	size_t r, i;
	unsigned s;
	uint64_t cum;

	b.cap = 8192;
	if ((b.s = malloc(b.cap)) == NULL)
		return NULL;
	metrics_printf(&b, "# HELP record_countd_requests_total HTTP requests answered, by route and status.\n"
	    "# TYPE record_countd_requests_total counter\n");
	for (r = 0; r < ROUTE_COUNT; r++)
		for (s = 100; s < 600; s++)
			if (m.requests[r][s] != 0)
				metrics_printf(&b, "record_countd_requests_total{route=\"%s\",status=\"%u\"} %llu\n",
				    route_names[r], s, (unsigned long long)m.requests[r][s]);
	metrics_printf(&b, "# HELP record_countd_request_duration_seconds Time from arrival to response, by route.\n"
	    "# TYPE record_countd_request_duration_seconds histogram\n");
	for (r = 0; r < ROUTE_COUNT; r++) {
		if (m.lat_count[r] == 0)
			continue;
		for (i = 0, cum = 0; i < NLAT; i++) {
			cum += m.lat_buckets[r][i];
			metrics_printf(&b, "record_countd_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
			    route_names[r], metrics_latency_bounds[i], (unsigned long long)cum);
		}
		metrics_printf(&b, "record_countd_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
		    "record_countd_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
		    "record_countd_request_duration_seconds_count{route=\"%s\"} %llu\n", route_names[r],
		    (unsigned long long)m.lat_count[r], route_names[r], m.lat_sum[r], route_names[r],
		    (unsigned long long)m.lat_count[r]);
	}
	metrics_printf(&b, "# HELP record_countd_in_flight Record requests between arrival and response.\n"
	    "# TYPE record_countd_in_flight gauge\nrecord_countd_in_flight %llu\n"
	    "# HELP record_countd_max_in_flight Highest record_countd_in_flight since start.\n"
	    "# TYPE record_countd_max_in_flight gauge\nrecord_countd_max_in_flight %llu\n"
	    "# HELP record_countd_suspended_connections Connections waiting for their latency, commit or read.\n"
	    "# TYPE record_countd_suspended_connections gauge\nrecord_countd_suspended_connections %llu\n"
	    "# HELP record_countd_db_records Records in the database.\n"
	    "# TYPE record_countd_db_records gauge\nrecord_countd_db_records %llu\n"
	    "# HELP record_countd_records_total Records stored by this process.\n"
	    "# TYPE record_countd_records_total counter\nrecord_countd_records_total %llu\n"
	    "# HELP record_countd_duplicates_total Records already stored (idempotent retries).\n"
	    "# TYPE record_countd_duplicates_total counter\nrecord_countd_duplicates_total %llu\n"
	    "# HELP record_countd_rejected_total Requests answered with a 4xx error.\n"
	    "# TYPE record_countd_rejected_total counter\nrecord_countd_rejected_total %llu\n"
	    "# HELP record_countd_clients Clients known.\n"
	    "# TYPE record_countd_clients gauge\nrecord_countd_clients %llu\n",
	    (unsigned long long)m.in_flight, (unsigned long long)m.max_in_flight,
	    (unsigned long long)(delay_suspended + api_reads_waiting), (unsigned long long)m.recorded,
	    (unsigned long long)m.recorded_here, (unsigned long long)m.duplicates,
	    (unsigned long long)m.rejected, (unsigned long long)m.count);
	metrics_printf(&b, "# HELP record_countd_db_commit_seconds Time of one group commit, from BEGIN until durable.\n"
	    "# TYPE record_countd_db_commit_seconds histogram\n");
	for (i = 0, cum = 0; i < NCOMMIT; i++) {
		cum += m.commit_buckets[i];
		metrics_printf(&b, "record_countd_db_commit_seconds_bucket{le=\"%g\"} %llu\n", metrics_commit_bounds[i],
		    (unsigned long long)cum);
	}
	metrics_printf(&b, "record_countd_db_commit_seconds_bucket{le=\"+Inf\"} %llu\n"
	    "record_countd_db_commit_seconds_sum %.6f\nrecord_countd_db_commit_seconds_count %llu\n"
	    "# HELP record_countd_db_committed_records_total New records written by group commits"
	    " (duplicates are not written).\n"
	    "# TYPE record_countd_db_committed_records_total counter\nrecord_countd_db_committed_records_total %llu\n",
	    (unsigned long long)m.commits, m.commit_sum, (unsigned long long)m.commits,
	    (unsigned long long)m.committed_records);
	metrics_printf(&b, "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n"
	    "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n", m.start_wall);
	*len = b.len;
	return b.s;
}

/* Free every client entry. */
void
metrics_free(void)
{
	struct client_stats *cs, *next;
	size_t i;

	for (i = 0; i < m.size; i++) {
		for (cs = m.table[i]; cs != NULL; cs = next) {
			next = cs->next;
			free(cs->id);
			free(cs);
		}
	}
	free(m.table);
	free(m.order);
	m.table = NULL;
	m.order = NULL;
	m.size = m.count = m.order_cap = 0;
}
