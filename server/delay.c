/*
 * delay.c: holding /record-count answers until their latency has passed and
 * their records are committed.
 *
 * Records are written into one open transaction as they arrive; a commit
 * event, activated behind the I/O being processed, hands everything that
 * arrived in this loop pass to the store's writer thread at once (group
 * commit). While that commit syncs, new requests wait in a pending list and
 * are written, in arrival order, as the next batch when it is over. Each request is a
 * suspended connection with a timer counted from its arrival; requests that
 * are both due and committed are resumed together once per loop pass, since
 * libmicrohttpd walks its suspended list on every resume.
 */
#include "config.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "server.h"
#include "store.h"
#include "util.h"

uint64_t delay_suspended;

enum { DELAY_NONE, DELAY_BATCH, DELAY_COMMITTING, DELAY_PENDING };
static TAILQ_HEAD(reqs, req) delay_batch = TAILQ_HEAD_INITIALIZER(delay_batch);
static struct reqs delay_committing = TAILQ_HEAD_INITIALIZER(delay_committing);
static struct reqs delay_pending = TAILQ_HEAD_INITIALIZER(delay_pending);
static size_t delay_committing_records;
static uint64_t delay_commit_t0;
static struct event *delay_done_ev;
static struct reqs delay_ready = TAILQ_HEAD_INITIALIZER(delay_ready);
static size_t delay_batch_records;
static struct event *delay_commit_ev;
static struct event *delay_resume_ev;
static uint64_t delay_rng;
static const struct timeval *delay_common_tv;   /* libevent's O(1) FIFO timer queue for the fixed latency */
static uint64_t delay_common_us;

/* Queue r to be resumed in this loop pass if it is both due and committed. */
static void
delay_check(struct req *r)
{
	if (!r->due || !r->committed || r->in_ready)
		return;
	TAILQ_INSERT_TAIL(&delay_ready, r, ready_entry);
	r->in_ready = 1;
	event_active(delay_resume_ev, EV_TIMEOUT, 0);
}

static void delay_insert(struct req *r);

/* Hand the open batch to the writer thread (unless a commit is running: then it follows that one). */
static void
delay_commit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct req *r;

	if (store_commit_busy(db) || !store_in_batch(db))
		return;
	TAILQ_CONCAT(&delay_committing, &delay_batch, batch_entry);
	TAILQ_FOREACH(r, &delay_committing, batch_entry)
		r->in_batch = DELAY_COMMITTING;
	delay_committing_records = delay_batch_records;
	delay_batch_records = 0;
	delay_commit_t0 = now_mono_us();
	store_commit_start(db);
}

/* The writer thread's commit is over: release its requests, then write the pending ones as the next batch. */
static void
delay_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct req *r;
	int ok;

	struct pollfd pfd;

	if (!store_commit_busy(db))
		return;
	if (fd != -1) {
		/* Woken for a commit that delay_flush() already collected: do not wait for the next one here. */
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 0) != 1)
			return;
	}
	ok = store_commit_finish(db) == 0;
	if (ok)
		metrics_commit((double)(now_mono_us() - delay_commit_t0) / 1e6, delay_committing_records);
	else {
		log_warnx("commit of %zu records failed: %s", delay_committing_records, store_error(db));
		main_load_stats();
	}
	while ((r = TAILQ_FIRST(&delay_committing)) != NULL) {
		TAILQ_REMOVE(&delay_committing, r, batch_entry);
		r->in_batch = DELAY_NONE;
		r->committed = 1;
		if (!ok)
			r->failed = 1;
		delay_check(r);
	}
	while ((r = TAILQ_FIRST(&delay_pending)) != NULL) {
		TAILQ_REMOVE(&delay_pending, r, batch_entry);
		r->in_batch = DELAY_NONE;
		delay_insert(r);
	}
}

/* A request's latency has passed. */
static void
delay_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct req *r = arg;
	struct timeval tv;
	uint64_t now = now_mono_us();

	/* libevent counts from its cached loop time, so a timer may fire a little early. */
	if (now < r->due_us) {
		tv.tv_sec = (time_t)((r->due_us - now) / 1000000);
		tv.tv_usec = (suseconds_t)((r->due_us - now) % 1000000);
		evtimer_add(r->timer, &tv);
		return;
	}
	r->due = 1;
	delay_check(r);
}

/* Resume every request that is ready, then let libmicrohttpd send them. */
static void
delay_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct req *r;

	while ((r = TAILQ_FIRST(&delay_ready)) != NULL) {
		TAILQ_REMOVE(&delay_ready, r, ready_entry);
		r->in_ready = 0;
		api_record_answer(r);
		if (r->suspended) {
			r->suspended = 0;
			delay_suspended--;
			MHD_resume_connection(r->conn);
		}
	}
	http_run();
}

/* The next pseudo-random number (xorshift64*), for jitter. */
static uint64_t
delay_random(void)
{
	delay_rng ^= delay_rng >> 12;
	delay_rng ^= delay_rng << 25;
	delay_rng ^= delay_rng >> 27;
	return delay_rng * 2685821657736338717ULL;
}

/* This request's latency in ms: the configured one, +/- jitter, capped. */
static uint64_t
delay_latency(void)
{
	int64_t ms = (int64_t)cfg.latency_ms;

	if (cfg.jitter_ms > 0)
		ms += (int64_t)(delay_random() % (2 * cfg.jitter_ms + 1)) - (int64_t)cfg.jitter_ms;
	if (ms < 0)
		ms = 0;
	if (cfg.max_latency_ms > 0 && (uint64_t)ms > cfg.max_latency_ms)
		ms = (int64_t)cfg.max_latency_ms;
	return (uint64_t)ms;
}

/* Create the loop events. */
int
delay_init(void)
{
	delay_rng = now_mono_ms() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
	delay_commit_ev = event_new(ev_base, -1, 0, delay_commit_cb, NULL);
	delay_resume_ev = event_new(ev_base, -1, 0, delay_resume_cb, NULL);
	delay_done_ev = event_new(ev_base, store_notify_fd(db), EV_READ | EV_PERSIST, delay_done_cb, NULL);
	/*
	 * Without jitter every request waits the same latency, so deadlines
	 * come in arrival order: libevent keeps such timers in one FIFO behind
	 * a single heap entry instead of one heap entry per request.
	 */
	if (cfg.jitter_ms == 0 && (delay_common_us = delay_latency() * 1000) > 0) {
		struct timeval tv = { (time_t)(delay_common_us / 1000000), (suseconds_t)(delay_common_us % 1000000) };

		delay_common_tv = event_base_init_common_timeout(ev_base, &tv);
	}
	if (delay_done_ev == NULL || event_add(delay_done_ev, NULL) != 0)
		return -1;
	return delay_commit_ev && delay_resume_ev ? 0 : -1;
}

/* Free the loop events. */
void
delay_free(void)
{
	if (delay_commit_ev != NULL)
		event_free(delay_commit_ev);
	if (delay_resume_ev != NULL)
		event_free(delay_resume_ev);
	if (delay_done_ev != NULL)
		event_free(delay_done_ev);
	delay_commit_ev = delay_resume_ev = delay_done_ev = NULL;
}

/* Write r's values into the open batch and wait for its commit. */
static void
delay_insert(struct req *r)
{
	size_t i;
	int dup;

	for (i = 0; i < r->nvalues && !r->failed; i++) {
		if (store_record(db, r->client, r->values[i], &r->seqs[i], &dup) != 0) {
			log_warnx("cannot record %s=%llu: %s", r->client, (unsigned long long)r->values[i],
			    store_error(db));
			r->failed = 1;
			break;
		}
		r->dups[i] = (unsigned char)dup;
		if (dup)
			metrics_duplicate();
		else
			metrics_recorded(r->cs, r->values[i]);
	}
	delay_batch_records += i;
	if (store_in_batch(db)) {
		TAILQ_INSERT_TAIL(&delay_batch, r, batch_entry);
		r->in_batch = DELAY_BATCH;
		if (!event_pending(delay_commit_ev, EV_TIMEOUT, NULL))
			event_active(delay_commit_ev, EV_TIMEOUT, 0);
	} else {
		r->committed = 1;
		delay_check(r);
	}
}

/* Suspend r's connection, arm its timer, and record its values (now, or after the running commit). */
void
delay_record(struct req *r)
{
	struct timeval tv;
	uint64_t lat, now, due;

	MHD_suspend_connection(r->conn);
	r->suspended = 1;
	delay_suspended++;
	lat = delay_latency();
	now = now_mono_us();
	due = r->due_us = r->arrival_us + lat * 1000;
	if (due <= now)
		r->due = 1;
	else {
		if ((r->timer = evtimer_new(ev_base, delay_timer_cb, r)) == NULL)
			fatalx("out of memory for a timer");
		/* libevent counts timers from its cached loop time: make that now, so they do not fire early. */
		event_base_update_cache_time(ev_base);
		tv.tv_sec = (time_t)((due - now) / 1000000);
		tv.tv_usec = (suseconds_t)((due - now) % 1000000);
		/* The FIFO queue only when that is (nearly) the same deadline: a slow body arrived earlier. */
		if (delay_common_tv != NULL && due - now + 250 >= delay_common_us)
			evtimer_add(r->timer, delay_common_tv);
		else
			evtimer_add(r->timer, &tv);
	}
	if (store_commit_busy(db)) {
		TAILQ_INSERT_TAIL(&delay_pending, r, batch_entry);
		r->in_batch = DELAY_PENDING;
	} else
		delay_insert(r);
}

/* r is going away: drop its timer and list entries. */
void
delay_forget(struct req *r)
{
	if (r->timer != NULL) {
		event_free(r->timer);
		r->timer = NULL;
	}
	switch (r->in_batch) {
	case DELAY_BATCH:
		TAILQ_REMOVE(&delay_batch, r, batch_entry);
		break;
	case DELAY_COMMITTING:
		TAILQ_REMOVE(&delay_committing, r, batch_entry);
		break;
	case DELAY_PENDING:
		TAILQ_REMOVE(&delay_pending, r, batch_entry);
		break;
	}
	r->in_batch = DELAY_NONE;
	if (r->in_ready) {
		TAILQ_REMOVE(&delay_ready, r, ready_entry);
		r->in_ready = 0;
	}
	if (r->suspended) {
		r->suspended = 0;
		delay_suspended--;
	}
}

/* Commit everything recorded so far, waiting for the disk (reads and shutdown). */
void
delay_flush(void)
{
	int i;

	/* The running commit, then the batch written after it, then the pending ones written after that. */
	for (i = 0; i < 3; i++) {
		delay_done_cb(-1, 0, NULL);
		if (!store_in_batch(db))
			break;
		delay_commit_cb(-1, 0, NULL);
	}
	delay_done_cb(-1, 0, NULL);
}
