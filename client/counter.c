/*
 * counter.c: one named counter and its strategy.
 *
 * locked: every next() is put on the counter's DeferredQueue and waits
 * there (its wait is a deferred that a timeout or the caller's disconnect
 * may cancel). Whoever holds the counter's DeferredLock drains up to
 * --batch-max live waiters, gives them consecutive values, records them with
 * one POST /record-count and answers them when it is acknowledged; only then
 * is the lock released. So one request per counter is in flight, values are
 * recorded in order, and a value is consumed only when acknowledged: on
 * failure the same values are offered again to the next batch.
 *
 * stateless: each next() reserves a value at once and records it alone;
 * records overlap and a failed record leaves a gap. A caller that goes away
 * does not cancel its record: the value stays in flight (and counted) until
 * record-countd answers.
 *
 * unsafe: the seed's bug on purpose: the shared count is incremented,
 * recorded, and read again after the record completes, so concurrent
 * callers see the same number.
 *
 * The lock also guards resume: before the first value, the counter asks
 * record-countd for the last value recorded for ID:NAME.
 *
 * Conflicts: record-countd's answer says which values it already had. On a
 * retry that is expected (an earlier attempt may have recorded them), and
 * so is a locked batch offering again values sent before; but a value sent
 * for the first time, on the first attempt, that record-countd already had
 * was recorded by another writer under the same ID:NAME (another counterd
 * with the same --client-id). Handing it out would give two callers one
 * number, so those calls fail with CD_ECONFLICT and the counter resumes
 * again from record-countd's last value before its next value.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include "dfr.h"
#include "util.h"
#include "client.h"

#define COUNTER_BUCKETS 1024
#define COUNTER_MAX 10000

struct counter {
	char c_name[COUNTER_NAME_MAX + 1];
	char c_client[CLIENT_ID_MAX + 1];
	const struct counter_config *c_cf;
	struct dfr_lock *c_lock;
	struct dfr_queue *c_queue; /* locked: waiting next calls */
	int c_drain_pending;	   /* a batch run waits for the lock */
	struct event *c_retry; /* locked: start a batch again (out of memory) */
	int c_resumed;	/* the last value was read from record-countd */
	int c_refetch;	/* read it again before the next value (conflict) */
	int c_stopping;
	int64_t c_last; /* locked: last acknowledged; others: last reserved */
	int64_t c_sent; /* highest value ever sent to record-countd */
	size_t c_waiting;
	size_t c_in_flight;
	struct counter_stats c_st;
	TAILQ_ENTRY(counter) c_entry;
	struct counter *c_hnext;
};

enum next_state { NR_WAITING, NR_FLIGHT, NR_DONE, NR_CANCELLED };

/* One next() call on a locked counter. */
struct next_req {
	int nr_refs;
	struct counter *nr_c;
	struct dfr *nr_d;    /* the caller's result */
	struct dfr *nr_wait; /* the wait for a batch; fired when drained */
	enum next_state nr_state;
};

/* One batch of a locked counter, recorded with one request. */
struct batch {
	struct counter *b_c;
	int64_t b_first;
	int64_t b_sent; /* the counter's c_sent before this batch */
	size_t b_n;	/* calls given a value (those past INT64_MAX fail) */
	size_t b_total; /* calls drained into the batch */
	struct next_req *b_reqs[];
};

/* One next() call on a stateless or unsafe counter. */
struct solo_req {
	struct counter *s_c;
	int64_t s_value;
};

/* The record of a stateless or unsafe call; it may outlive the call. */
struct solo_rec {
	struct counter *sr_c;
	struct dfr *sr_d;   /* what the call waits for (our reference) */
	int64_t sr_sent;    /* the counter's c_sent before this record */
};

TAILQ_HEAD(counter_list, counter);
static struct counter_list counters = TAILQ_HEAD_INITIALIZER(counters);
static struct counter *buckets[COUNTER_BUCKETS];
static size_t ncounters;
static int counters_stopping;

static void counter_kick(struct counter *c);
static void counter_retry_cb(evutil_socket_t fd, short what, void *arg);
static void counter_retry(struct counter *c);

/* The name of a strategy. */
const char *
strategy_name(enum strategy s)
{
	switch (s) {
	case STRATEGY_LOCKED:
		return "locked";
	case STRATEGY_STATELESS:
		return "stateless";
	case STRATEGY_UNSAFE:
		return "unsafe";
	}
	return "?";
}

/* FNV-1a hash of a name. */
static unsigned
counter_hash(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % COUNTER_BUCKETS;
}

/* Look a counter up by name, creating it if asked. */
struct counter *
counter_get(const struct counter_config *cf, const char *name, int create)
{
	unsigned h = counter_hash(name);
	struct counter *c;

	for (c = buckets[h]; c != NULL; c = c->c_hnext) {
		if (strcmp(c->c_name, name) == 0)
			return c;
	}
	if (!create) {
		errno = ENOENT;
		return NULL;
	}
	if (ncounters >= COUNTER_MAX) {
		errno = ENOSPC;
		return NULL;
	}
	if ((c = calloc(1, sizeof *c)) == NULL)
		return NULL;
	c->c_lock = dfr_lock_new();
	c->c_queue = dfr_queue_new(DFR_UNBOUNDED, 0);
	/* Made now: when memory runs out, a batch that cannot start needs it. */
	if (cf->strategy == STRATEGY_LOCKED && cf->base != NULL)
		c->c_retry = evtimer_new(cf->base, counter_retry_cb, c);
	if (c->c_lock == NULL || c->c_queue == NULL ||
	    (c->c_retry == NULL && cf->strategy == STRATEGY_LOCKED &&
	     cf->base != NULL)) {
		if (c->c_lock != NULL)
			dfr_lock_free(c->c_lock);
		if (c->c_queue != NULL)
			dfr_queue_free(c->c_queue);
		if (c->c_retry != NULL)
			event_free(c->c_retry);
		free(c);
		errno = ENOMEM;
		return NULL;
	}
	snprintf(c->c_name, sizeof c->c_name, "%s", name);
	snprintf(c->c_client, sizeof c->c_client, "%s:%s", cf->client_id, name);
	c->c_cf = cf;
	c->c_hnext = buckets[h];
	buckets[h] = c;
	TAILQ_INSERT_TAIL(&counters, c, c_entry);
	ncounters++;
	log_debug("counter %s created (recorded as %s)", c->c_name,
		  c->c_client);
	return c;
}

/* The first counter created. */
struct counter *
counter_first(void)
{
	return TAILQ_FIRST(&counters);
}

/* The counter created after c. */
struct counter *
counter_after(const struct counter *c)
{
	return TAILQ_NEXT(c, c_entry);
}

/* How many counters exist. */
size_t
counter_count(void)
{
	return ncounters;
}

/* The counter's name. */
const char *
counter_name(const struct counter *c)
{
	return c->c_name;
}

/* Copy the counter's statistics. */
void
counter_get_stats(const struct counter *c, struct counter_stats *st)
{
	*st = c->c_st;
	st->count = c->c_last;
	st->resumed = c->c_resumed;
	st->waiting = c->c_cf->strategy == STRATEGY_LOCKED
			  ? c->c_waiting
			  : dfr_lock_waiting(c->c_lock);
	st->in_flight = c->c_in_flight;
}

/* Copy the counter's lock statistics. */
void
counter_lock_stats(const struct counter *c, struct dfr_stats *st)
{
	dfr_lock_stats(c->c_lock, st);
}

/* A malloc'd copy of v for a deferred's value; NULL on ENOMEM. */
static int64_t *
counter_boxed(int64_t v)
{
	int64_t *p = malloc(sizeof *p);

	if (p != NULL)
		*p = v;
	return p;
}

/* Fire d with value v (or an ENOMEM failure). */
static void
counter_answer(struct dfr *d, int64_t v)
{
	int64_t *p = counter_boxed(v);

	if (p == NULL)
		dfr_errback(d, ENOMEM, "out of memory");
	else
		dfr_callback(d, p, free);
}

/* Whether the counter must read its last value from record-countd first. */
static int
counter_stale(const struct counter *c)
{
	return !c->c_resumed || c->c_refetch;
}

/* Take the last value record-countd reported: never go back. */
static void
counter_resume(struct counter *c, int64_t last)
{
	if (last > c->c_last)
		c->c_last = last;
	c->c_resumed = 1;
	c->c_refetch = 0;
	log_info("counter %s resumes after %" PRId64, c->c_name, c->c_last);
}

/*
 * Whether ack shows that another writer recorded a value this counter sent
 * for the first time (above sent, the highest sent before): if so, log it,
 * make the counter resume again and set a CD_ECONFLICT failure on d.
 */
static int
counter_conflict(struct counter *c, const struct record_ack *ack,
		 int64_t sent, struct dfr *d)
{
	static struct log_limit conflict_ll;
	unsigned long skipped;

	if (ack == NULL || ack->resent || ack->max_dup <= sent)
		return 0;
	c->c_refetch = 1;
	if (log_limit_due(&conflict_ll, 10, &skipped))
		log_warnx("counter %s: record-countd already had %" PRId64
			  " for %s, recorded by another writer (another "
			  "counterd with --client-id %s?); reading its last "
			  "value again (%lu more conflicts since the last such "
			  "line)",
			  c->c_name, ack->max_dup, c->c_client,
			  c->c_cf->client_id, skipped);
	dfr_set_failure(d, CD_ECONFLICT,
			"record-countd already had value %" PRId64
			" of counter %s for client %s, recorded by another "
			"writer (is another counterd using --client-id %s?)",
			ack->max_dup, c->c_name, c->c_client,
			c->c_cf->client_id);
	return 1;
}

/* Drop a reference to a next request. */
static void
next_req_unref(struct next_req *nr)
{
	if (--nr->nr_refs > 0)
		return;
	if (nr->nr_wait != NULL)
		dfr_unref(nr->nr_wait);
	dfr_unref(nr->nr_d);
	free(nr);
}

/* The caller's deferred fired: its canceller can no longer run. */
static void
next_req_fired_cb(struct dfr *d, void *arg)
{
	next_req_unref(arg);
}

/* The caller cancelled (disconnect): leave the queue if still waiting. */
static void
next_req_cancel(struct dfr *d, void *arg)
{
	struct next_req *nr = arg;

	if (nr->nr_state == NR_WAITING)
		dfr_cancel(nr->nr_wait);
	/* In flight: the value is being recorded; the caller just goes away. */
}

/* The wait ended without a batch: timeout, cancel or shutdown. */
static void
next_req_wait_failed_cb(struct dfr *wait, void *arg)
{
	struct next_req *nr = arg;
	struct counter *c = nr->nr_c;
	int code = dfr_failure_code(wait);

	if (nr->nr_state == NR_WAITING) {
		nr->nr_state = NR_CANCELLED;
		c->c_waiting--;
		c->c_st.errors++;
		switch (code) {
		case DFR_ETIMEDOUT:
			c->c_st.timeouts++;
			dfr_errback(
			    nr->nr_d, CD_EWAIT,
			    "waited longer than --wait-timeout (%" PRIu64
			    "ms) for counter %s",
			    c->c_cf->wait_timeout_ms, c->c_name);
			break;
		case DFR_ECANCELED:
			c->c_st.cancelled++;
			dfr_errback(nr->nr_d, DFR_ECANCELED, "cancelled");
			break;
		default:
			dfr_errback(nr->nr_d, code, "%s",
				    dfr_failure(wait)->message);
			break;
		}
	}
	/* Handled: the wait's failure is not reported as unhandled. */
	dfr_failure_free(dfr_take_failure(wait));
}

/* The batch was acknowledged: fail it if another writer had its values. */
static void
batch_check_cb(struct dfr *d, void *arg)
{
	struct batch *b = arg;

	counter_conflict(b->b_c, dfr_value(d), b->b_sent, d);
}

/* The batch was acknowledged: hand the values out. */
static void
batch_ok_cb(struct dfr *d, void *arg)
{
	struct batch *b = arg;
	struct counter *c = b->b_c;
	int64_t last = b->b_first + (int64_t)(b->b_n - 1); /* <= INT64_MAX */
	size_t i;

	if (last > c->c_last)
		c->c_last = last;
	c->c_st.batches++;
	if (b->b_n > c->c_st.max_batch)
		c->c_st.max_batch = b->b_n;
	c->c_in_flight = 0;
	for (i = 0; i < b->b_n; i++) {
		b->b_reqs[i]->nr_state = NR_DONE;
		c->c_st.handed++;
		counter_answer(b->b_reqs[i]->nr_d, b->b_first + (int64_t)i);
	}
}

/* The batch failed after the retries: its values stay unconsumed. */
static void
batch_fail_cb(struct dfr *d, void *arg)
{
	struct batch *b = arg;
	struct counter *c = b->b_c;
	static struct log_limit batch_ll;
	struct dfr_failure *f = d != NULL ? dfr_take_failure(d) : NULL;
	unsigned long skipped;
	size_t i;

	/* One line per 10 s at most: with the server down, every call can be a batch that fails at once. */
	if (b->b_n > 0 && (f == NULL || f->code != CD_ECONFLICT) &&
	    log_limit_due(&batch_ll, 10, &skipped))
		log_warnx("counter %s: recording %zu value(s) failed: %s (%lu "
			  "more batches failed since the last such line)",
			  c->c_name, b->b_n, f != NULL ? f->message : "?",
			  skipped);
	c->c_in_flight = 0;
	if (f != NULL && f->code == CD_ECONFLICT)
		c->c_st.conflicts += b->b_n;
	for (i = 0; i < b->b_n; i++) {
		b->b_reqs[i]->nr_state = NR_DONE;
		c->c_st.errors++;
		dfr_errback(b->b_reqs[i]->nr_d,
			    f != NULL ? f->code : CD_EUNAVAILABLE, "%s",
			    f != NULL ? f->message : "recording failed");
	}
	dfr_failure_free(f);
}

/* Free a batch after it was answered. */
static void
batch_free_cb(struct dfr *d, void *arg)
{
	struct batch *b = arg;
	size_t i;

	for (i = 0; i < b->b_total; i++)
		next_req_unref(b->b_reqs[i]);
	free(b);
}

/* Why a counter at INT64_MAX gives no more numbers (static storage). */
static const char *
counter_exhausted(const struct counter *c)
{
	static char msg[160];

	snprintf(msg, sizeof msg,
		 "counter %s has handed out its last number, %" PRId64,
		 c->c_name, INT64_MAX);
	return msg;
}

/* Fail the calls of a batch past the first keep: no number is left. */
static void
batch_exhaust(struct batch *b, size_t keep)
{
	struct counter *c = b->b_c;
	size_t i;

	for (i = keep; i < b->b_n; i++) {
		b->b_reqs[i]->nr_state = NR_DONE;
		c->c_st.errors++;
		dfr_errback(b->b_reqs[i]->nr_d, CD_EEXHAUSTED, "%s",
			    counter_exhausted(c));
	}
	b->b_n = keep;
}

/* First in a batch's chain when the counter must resume: read its last value from record-countd. */
static void
batch_resume_cb(struct dfr *d, void *arg)
{
	struct batch *b = arg;
	struct counter *c = b->b_c;
	struct dfr *rd;

	if (!counter_stale(c))
		return;
	if ((rd = recorder_last_value(c->c_cf->recorder, c->c_client)) == NULL)
		dfr_set_failure(d, ENOMEM, "out of memory");
	else
		dfr_wait(d, rd);
}

/* Resumed (if needed): record the batch and wait for the answer. */
static void
batch_record_cb(struct dfr *d, void *arg)
{
	struct batch *b = arg;
	struct counter *c = b->b_c;
	int64_t *last = dfr_value(d);
	struct dfr *rd;

	if (counter_stale(c) && last != NULL)
		counter_resume(c, *last);
	if ((uint64_t)(INT64_MAX - c->c_last) < b->b_n)
		batch_exhaust(b, (size_t)(INT64_MAX - c->c_last));
	if (b->b_n == 0) {
		dfr_set_failure(d, CD_EEXHAUSTED, "%s", counter_exhausted(c));
		return;
	}
	c->c_in_flight = b->b_n;
	b->b_first = c->c_last + 1;
	b->b_sent = c->c_sent;
	if (b->b_first + (int64_t)(b->b_n - 1) > c->c_sent)
		c->c_sent = b->b_first + (int64_t)(b->b_n - 1);
	rd =
	    recorder_record(c->c_cf->recorder, c->c_client, b->b_first, b->b_n);
	if (rd == NULL) {
		dfr_set_failure(d, ENOMEM, "out of memory");
		return;
	}
	dfr_wait(d, rd);
}

/* Take the oldest stored call with the queue's reference, or NULL if none. */
static struct next_req *
counter_pop(struct counter *c)
{
	struct next_req *nr;
	struct dfr *g;

	while (dfr_queue_size(c->c_queue) > 0) {
		if ((g = dfr_queue_get(c->c_queue)) == NULL)
			return NULL;
		nr = dfr_value(g);
		dfr_unref(g);
		if (nr != NULL)
			return nr;
	}
	return NULL;
}

/* Holding the lock: drain waiting calls into one batch and record it. */
static struct dfr *
counter_batch_run(void *arg)
{
	struct counter *c = arg;
	size_t max = c->c_cf->batch_max;
	struct next_req *nr;
	struct batch *b;
	struct dfr *d;

	c->c_drain_pending = 0;
	if ((b = calloc(1, sizeof *b + max * sizeof b->b_reqs[0])) == NULL)
		return dfr_fail(ENOMEM, "out of memory");
	b->b_c = c;
	while (b->b_n < max && (nr = counter_pop(c)) != NULL) {
		if (nr->nr_state != NR_WAITING) {
			/* A cancelled call: dropped here, it never got a value.
			 */
			next_req_unref(nr);
			continue;
		}
		nr->nr_state = NR_FLIGHT;
		c->c_waiting--;
		b->b_reqs[b->b_n++] = nr; /* takes over the queue's reference */
		b->b_total = b->b_n;
		dfr_callback(nr->nr_wait, NULL, NULL);
	}
	if (c->c_waiting > 0)
		counter_kick(c);
	if (b->b_n == 0) {
		free(b);
		return dfr_succeed(NULL, NULL);
	}
	c->c_in_flight = b->b_n;
	/*
	 * The whole chain is built before it runs: adding a pair can fail
	 * for want of memory, and a chain missing one would leave its calls
	 * unanswered. An unfired deferred freed never runs its callbacks.
	 * (Four pairs take one allocation, as on the deferred of
	 * dfr_succeed() before; the resume is a fifth only when needed.)
	 */
	if ((d = dfr_new(NULL, NULL)) == NULL ||
	    (counter_stale(c) &&
	     dfr_add_callback(d, batch_resume_cb, b) != 0) ||
	    dfr_add_callback(d, batch_record_cb, b) != 0 ||
	    dfr_add_callback(d, batch_check_cb, b) != 0 ||
	    dfr_add_callbacks(d, batch_ok_cb, batch_fail_cb, b) != 0 ||
	    dfr_add_both(d, batch_free_cb, b) != 0) {
		if (d != NULL)
			dfr_unref(d);
		batch_fail_cb(NULL, b);
		batch_free_cb(NULL, b);
		return dfr_fail(ENOMEM, "out of memory");
	}
	dfr_callback(d, NULL, NULL);
	return d;
}

/* A batch run ended (or its wait for the lock failed at shutdown). */
static void
counter_batch_done_cb(struct dfr *d, void *arg)
{
	struct counter *c = arg;
	struct dfr_failure *f = dfr_take_failure(d);

	if (f != NULL) {
		if (f->code != DFR_ECLOSED)
			log_warnx("counter %s: batch: %s", c->c_name,
				  f->message);
		c->c_drain_pending = 0;
		if (f->code == ENOMEM)
			counter_retry(c);
		dfr_failure_free(f);
	}
}

/*
 * No memory to start a batch: its calls stay queued, so try again in
 * COUNTER_RETRY_MS (each call still ends at --wait-timeout).
 */
#define COUNTER_RETRY_MS 20
static void
counter_retry(struct counter *c)
{
	struct timeval tv = {0, COUNTER_RETRY_MS * 1000};

	if (c->c_retry != NULL && c->c_waiting > 0 && !c->c_stopping)
		evtimer_add(c->c_retry, &tv);
}

/* The retry timer: start the batch of the calls still waiting. */
static void
counter_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct counter *c = arg;

	if (c->c_waiting > 0)
		counter_kick(c);
}

/* Make sure a batch run is on its way to the lock. */
static void
counter_kick(struct counter *c)
{
	struct dfr *rd;

	if (c->c_drain_pending || c->c_stopping)
		return;
	c->c_drain_pending = 1;
	rd = dfr_lock_run(c->c_lock, counter_batch_run, c);
	if (rd == NULL) {
		c->c_drain_pending = 0;
		log_warnx("counter %s: out of memory", c->c_name);
		counter_retry(c);
		return;
	}
	dfr_add_both(rd, counter_batch_done_cb, c);
	dfr_unref(rd);
}

/* locked: queue a call for the next batch. */
static struct dfr *
counter_next_locked(struct counter *c)
{
	const struct counter_config *cf = c->c_cf;
	struct next_req *nr;
	struct timeval tv;
	struct dfr *d;

	if (c->c_waiting >= cf->backlog) {
		c->c_st.errors++;
		c->c_st.rejected++;
		return dfr_fail(CD_EBACKLOG,
				"counter %s has %zu calls waiting (--backlog)",
				c->c_name, c->c_waiting);
	}
	if ((nr = calloc(1, sizeof *nr)) == NULL)
		return NULL;
	nr->nr_c = c;
	nr->nr_refs =
	    2; /* the queue's and the caller's deferred's until it fires */
	nr->nr_d = dfr_new(next_req_cancel, nr);
	nr->nr_wait = dfr_new(NULL, NULL);
	if (nr->nr_d == NULL || nr->nr_wait == NULL ||
	    dfr_add_both(nr->nr_d, next_req_fired_cb, nr) != 0)
		goto fail;
	if (cf->wait_timeout_ms > 0) {
		tv.tv_sec = (time_t)(cf->wait_timeout_ms / 1000);
		tv.tv_usec = (suseconds_t)((cf->wait_timeout_ms % 1000) * 1000);
		if (dfr_set_timeout(nr->nr_wait, cf->base, &tv, NULL, NULL) !=
		    0)
			goto fail;
	}
	/* After the timeout, so that an expiry is seen as DFR_ETIMEDOUT. */
	if (dfr_add_errback(nr->nr_wait, next_req_wait_failed_cb, nr) != 0)
		goto fail;
	if (dfr_queue_put(c->c_queue, nr, NULL) != 0)
		goto fail;
	c->c_waiting++;
	d = dfr_ref(nr->nr_d);
	counter_kick(c);
	return d;
fail:
	/* Nothing was queued; unfired deferreds freed never run their
	 * callbacks. */
	if (nr->nr_wait != NULL)
		dfr_unref(nr->nr_wait);
	if (nr->nr_d != NULL)
		dfr_unref(nr->nr_d);
	free(nr);
	errno = ENOMEM;
	return NULL;
}

/* Under the lock: make sure the counter knows its last value. */
static void
counter_resumed_cb(struct dfr *d, void *arg)
{
	struct counter *c = arg;
	int64_t *last = dfr_value(d);

	if (counter_stale(c) && last != NULL)
		counter_resume(c, *last);
}

/* The work run under the lock to resume a stateless or unsafe counter. */
static struct dfr *
counter_resume_run(void *arg)
{
	struct counter *c = arg;
	struct dfr *d;

	if (!counter_stale(c))
		return dfr_succeed(NULL, NULL);
	if ((d = recorder_last_value(c->c_cf->recorder, c->c_client)) == NULL)
		return NULL;
	dfr_add_callback(d, counter_resumed_cb, c);
	return d;
}

/*
 * stateless/unsafe: record-countd answered (or the recorder gave up): the
 * value is no longer in flight. Pass the result on to the call, which drops
 * it if its caller went away.
 */
static void
solo_recorded_cb(struct dfr *rd, void *arg)
{
	struct solo_rec *sr = arg;
	struct counter *c = sr->sr_c;

	c->c_in_flight--;
	if (!dfr_failed(rd) &&
	    counter_conflict(c, dfr_value(rd), sr->sr_sent, rd))
		c->c_st.conflicts++;
	if (dfr_failed(rd))
		dfr_errback_failure(sr->sr_d, dfr_take_failure(rd));
	else {
		c->c_st.batches++;
		c->c_st.max_batch = 1;
		dfr_callback(sr->sr_d, NULL, NULL);
	}
	dfr_unref(sr->sr_d);
	free(sr);
}

/*
 * stateless/unsafe: reserve a value and record it alone. The call waits for
 * a deferred of its own, not for the recorder's: cancelling the call (its
 * caller hung up) fails only that one, and the record goes on, counted in
 * in_flight until it ends.
 */
static void
solo_go_cb(struct dfr *d, void *arg)
{
	struct solo_req *s = arg;
	struct counter *c = s->s_c;
	struct solo_rec *sr;
	struct dfr *rd, *w;

	if (c->c_last == INT64_MAX) {
		dfr_set_failure(d, CD_EEXHAUSTED, "%s", counter_exhausted(c));
		return;
	}
	if ((sr = malloc(sizeof *sr)) == NULL ||
	    (w = dfr_new(NULL, NULL)) == NULL) {
		free(sr);
		dfr_set_failure(d, ENOMEM, "out of memory");
		return;
	}
	s->s_value = ++c->c_last;
	sr->sr_sent = c->c_sent;
	if (s->s_value > c->c_sent)
		c->c_sent = s->s_value;
	if ((rd = recorder_record(c->c_cf->recorder, c->c_client, s->s_value,
				  1)) == NULL) {
		dfr_unref(w);
		free(sr);
		dfr_set_failure(d, ENOMEM, "out of memory");
		return;
	}
	sr->sr_c = c;
	sr->sr_d = dfr_ref(w);
	c->c_in_flight++;
	if (dfr_add_both(rd, solo_recorded_cb, sr) != 0) {
		/* rd's own reference keeps the record going, uncounted. */
		c->c_in_flight--;
		dfr_unref(sr->sr_d);
		free(sr);
		dfr_unref(w);
		dfr_unref(rd);
		dfr_set_failure(d, ENOMEM, "out of memory");
		return;
	}
	/* The recorder holds rd until it fires it. */
	dfr_unref(rd);
	dfr_wait(d, w);
}

/* stateless/unsafe: the record was acknowledged. */
static void
solo_ok_cb(struct dfr *d, void *arg)
{
	struct solo_req *s = arg;
	struct counter *c = s->s_c;
	/* unsafe reads the shared count now, after the record: the seed's bug.
	 */
	int64_t v =
	    c->c_cf->strategy == STRATEGY_UNSAFE ? c->c_last : s->s_value;
	int64_t *p = counter_boxed(v);

	c->c_st.handed++;
	if (p == NULL)
		dfr_set_failure(d, ENOMEM, "out of memory");
	else
		dfr_set_value(d, p, free);
}

/* stateless/unsafe: resume or record failed (a reserved value is a gap). */
static void
solo_fail_cb(struct dfr *d, void *arg)
{
	static struct log_limit solo_ll;
	struct solo_req *s = arg;
	struct counter *c = s->s_c;
	int code = dfr_failure_code(d);
	unsigned long skipped;

	c->c_st.errors++;
	if (code == DFR_ECLOSED)
		dfr_set_failure(d, CD_ESHUTDOWN, "counterd is shutting down");
	/*
	 * A record that failed (as locked logs its failed batches), but one
	 * line per 10 s at most: every call of these strategies is a record.
	 */
	if ((code == CD_EUNAVAILABLE || code == CD_ETIMEOUT ||
	     code == CD_EBADGATEWAY || code == CD_ENOFD) &&
	    log_limit_due(&solo_ll, 10, &skipped))
		log_warnx("counter %s: recording %" PRId64 " failed: %s (%lu "
			  "more failed since the last such line)",
			  c->c_name, s->s_value, dfr_failure(d)->message,
			  skipped);
}

/* stateless/unsafe: free the call's state. */
static void
solo_free_cb(struct dfr *d, void *arg)
{
	free(arg);
}

/* stateless/unsafe next(). */
static struct dfr *
counter_next_solo(struct counter *c)
{
	struct solo_req *s;
	struct dfr *d;
	int stale;

	if (c->c_in_flight + dfr_lock_waiting(c->c_lock) >= c->c_cf->backlog) {
		c->c_st.errors++;
		c->c_st.rejected++;
		return dfr_fail(
		    CD_EBACKLOG,
		    "counter %s has %zu calls in flight (--backlog)", c->c_name,
		    c->c_in_flight);
	}
	if ((s = calloc(1, sizeof *s)) == NULL)
		return NULL;
	s->s_c = c;
	/*
	 * A chain missing a pair (none could be added for want of memory)
	 * would leave the call unanswered: it is built whole before it runs,
	 * on a deferred that has not fired (an unfired deferred freed never
	 * runs its callbacks), or, on the resume's, cancelled if it cannot be
	 * (solo_go_cb is a callback: it does not run then).
	 */
	if (!(stale = counter_stale(c)))
		d = dfr_new(NULL, NULL);
	else
		d = dfr_lock_run(c->c_lock, counter_resume_run, c);
	if (d == NULL) {
		free(s);
		return NULL;
	}
	if (dfr_add_callback(d, solo_go_cb, s) != 0 ||
	    dfr_add_callbacks(d, solo_ok_cb, solo_fail_cb, s) != 0 ||
	    dfr_add_both(d, solo_free_cb, s) != 0) {
		if (stale) {
			dfr_cancel(d);
			dfr_failure_free(dfr_take_failure(d));
		}
		dfr_unref(d);
		free(s);
		return NULL;
	}
	if (!stale)
		dfr_callback(d, NULL, NULL);
	return d;
}

/* Ask for the next number; see client.h. */
struct dfr *
counter_next(struct counter *c)
{
	if (counters_stopping || c->c_stopping)
		return dfr_fail(CD_ESHUTDOWN, "counterd is shutting down");
	if (c->c_cf->strategy == STRATEGY_LOCKED)
		return counter_next_locked(c);
	return counter_next_solo(c);
}

/* Shutdown: fail every waiting call; in-flight records finish. */
void
counter_shutdown_all(void)
{
	struct next_req *nr;
	struct counter *c;

	counters_stopping = 1;
	TAILQ_FOREACH(c, &counters, c_entry)
	{
		c->c_stopping = 1;
		while ((nr = counter_pop(c)) != NULL) {
			if (nr->nr_state == NR_WAITING)
				dfr_errback(nr->nr_wait, CD_ESHUTDOWN,
					    "counterd is shutting down");
			next_req_unref(nr);
		}
		dfr_queue_close(c->c_queue);
		dfr_lock_close(c->c_lock);
	}
}

/* Values in flight and calls waiting, over every counter. */
size_t
counter_busy(void)
{
	struct counter *c;
	size_t n = 0;

	TAILQ_FOREACH(c, &counters, c_entry)
	n += c->c_in_flight + c->c_waiting;
	return n;
}

/* Free every counter. */
void
counter_free_all(void)
{
	struct counter *c;

	while ((c = TAILQ_FIRST(&counters)) != NULL) {
		TAILQ_REMOVE(&counters, c, c_entry);
		dfr_queue_free(c->c_queue);
		dfr_lock_free(c->c_lock);
		if (c->c_retry != NULL)
			event_free(c->c_retry);
		free(c);
	}
	memset(buckets, 0, sizeof buckets);
	ncounters = 0;
}
