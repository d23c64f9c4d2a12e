/*
 * delay.c: holding /record-count answers until their latency has passed and
 * their records are committed.
 *
 * Each request's values become a store job; the jobs of one loop pass are
 * handed to the store together once its I/O is processed, and the store's
 * writer thread commits whatever arrived while it was busy as one batch
 * (group commit), handing it back, once durable, through a pipe that is one
 * more event in the loop. Each request is a suspended connection with a timer
 * counted from its arrival; requests that are both due and committed are
 * resumed together once per loop pass, since libmicrohttpd walks its
 * suspended list on every resume.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "server.h"
#include "store.h"
#include "util.h"

uint64_t delay_suspended;

/*
 * A request's values on their way through the store. It outlives the
 * request if the client hangs up first: the store owns it until the batch
 * comes back, and the records are stored (and counted) all the same.
 */
struct delay_job {
	struct store_job sj;          /* first: the store hands this back */
	struct req *r;                /* NULL once the request is gone */
	struct client_stats *cs;
	char client[LIMIT_CLIENT + 1];
};

static uint64_t delay_jobs_out;   /* submitted, not yet collected */
static struct store_job *delay_jobs;      /* arrived in this loop pass, not yet submitted */
static struct store_job **delay_jobs_tail = &delay_jobs;
static struct event *delay_submit_ev;
static struct event *delay_done_ev;
static TAILQ_HEAD(reqs, req) delay_ready = TAILQ_HEAD_INITIALIZER(delay_ready);
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

/* Account for one job of a collected batch and release its request, if it is still there. */
static void
delay_job_done(struct delay_job *dj, int ok, int full)
{
	struct store_job *sj = &dj->sj;
	struct req *r = dj->r;
	size_t i;

	delay_jobs_out--;
	for (i = 0; ok && i < sj->n; i++) {
		if (sj->dups[i])
			metrics_duplicate();
		else
			metrics_recorded(dj->cs, sj->values[i]);
	}
	if (r != NULL) {
		r->job = NULL;
		if (ok) {
			memcpy(r->seqs, sj->seqs, sj->n * sizeof *r->seqs);
			memcpy(r->dups, sj->dups, sj->n * sizeof *r->dups);
		} else {
			r->failed = 1;
			r->full = full;
		}
		r->committed = 1;
		delay_check(r);
	}
	free(dj);
}

/*
 * Failed commits are logged at most DELAY_FAIL_LOG_BURST per DELAY_FAIL_LOG_S
 * seconds (disk full: one), the next line saying how many were not: after a
 * failed sync, or once the database is gone from its path, every commit
 * fails, and each is made by a client's request.
 */
#define DELAY_FAIL_LOG_S 10
#define DELAY_FAIL_LOG_BURST 5

/* Log the failed commit b, if a line is due. */
static void
delay_commit_failed(const struct store_batch *b)
{
	static struct log_limit full_ll, fail_ll;
	unsigned long skipped;
	char more[96] = "";

	if (b->full ? !log_limit_due(&full_ll, DELAY_FAIL_LOG_S, &skipped) :
	    !log_limit_burst_due(&fail_ll, DELAY_FAIL_LOG_S, DELAY_FAIL_LOG_BURST, &skipped))
		return;
	if (skipped > 0)
		snprintf(more, sizeof more, " (%lu more commit%s failed since the last such line)", skipped,
		    skipped == 1 ? "" : "s");
	if (b->full)
		log_warnx("commit of %zu record%s failed: %s (the disk holding the database is full); its "
		    "requests answer 507 storage_full until space is freed%s", b->records, b->records == 1 ? "" : "s",
		    b->error, more);
	else
		log_warnx("commit of %zu record%s failed: %s; its requests answer 503 storage_error%s", b->records,
		    b->records == 1 ? "" : "s", b->error, more);
}

/* The writer thread committed (or rolled back) batches: release their requests. */
static void
delay_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_batch *b, *nb;
	struct store_job *sj, *nj;

	for (b = store_collect(db); b != NULL; b = nb) {
		nb = b->next;
		if (b->ok)
			metrics_commit(b->seconds, b->added);
		else
			delay_commit_failed(b);
		for (sj = b->jobs; sj != NULL; sj = nj) {
			nj = sj->next;
			delay_job_done((struct delay_job *)sj, b->ok, b->full);
		}
		store_batch_free(b);
	}
}

/* Hand the jobs of this loop pass to the store at once, so they are written as one batch. */
static void
delay_submit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_job *jobs = delay_jobs;

	delay_jobs = NULL;
	delay_jobs_tail = &delay_jobs;
	store_submit(db, jobs);
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
	delay_resume_ev = event_new(ev_base, -1, 0, delay_resume_cb, NULL);
	delay_submit_ev = event_new(ev_base, -1, 0, delay_submit_cb, NULL);
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
	return delay_resume_ev != NULL && delay_submit_ev != NULL ? 0 : -1;
}

/* Free the loop events. */
void
delay_free(void)
{
	if (delay_resume_ev != NULL)
		event_free(delay_resume_ev);
	if (delay_done_ev != NULL)
		event_free(delay_done_ev);
	if (delay_submit_ev != NULL)
		event_free(delay_submit_ev);
	delay_resume_ev = delay_done_ev = delay_submit_ev = NULL;
}

/* Hand r's values to the store as one job, behind every request that arrived before it. */
static void
delay_submit(struct req *r)
{
	struct delay_job *dj;
	struct store_job *sj;
	size_t n = r->nvalues;

	/* The job and its values, seqs and dups in one allocation. */
	if ((dj = malloc(sizeof *dj + n * (sizeof *sj->values + sizeof *sj->seqs + 1))) == NULL) {
		r->failed = 1;
		r->oom = 1;
		http_nomem_log("for a request's records (nothing was recorded)");
		r->committed = 1;
		delay_check(r);
		return;
	}
	sj = &dj->sj;
	dj->r = r;
	dj->cs = r->cs;
	memcpy(dj->client, r->client, sizeof dj->client);
	sj->client = dj->client;
	sj->values = memcpy(dj + 1, r->values, n * sizeof *sj->values);
	sj->seqs = (int64_t *)((uint64_t *)(dj + 1) + n);
	sj->dups = (unsigned char *)(sj->seqs + n);
	sj->n = n;
	sj->at = r->arrival_wall;
	sj->next = NULL;
	r->job = dj;
	delay_jobs_out++;
	*delay_jobs_tail = sj;
	delay_jobs_tail = &sj->next;
	/* Runs once the I/O being processed is done: this pass's requests go as one batch. */
	if (!event_pending(delay_submit_ev, EV_TIMEOUT, NULL))
		event_active(delay_submit_ev, EV_TIMEOUT, 0);
}

/* Suspend r's connection, arm its timer, and record its values (now, or after the running commit). */
void
delay_record(struct req *r)
{
	struct timeval tv;
	uint64_t lat, now, due;

	lat = delay_latency();
	now = now_mono_us();
	due = r->due_us = r->arrival_us + lat * 1000;
	if (due > now && (r->timer = evtimer_new(ev_base, delay_timer_cb, r)) == NULL) {
		http_nomem(r, "for a request's timer (nothing was recorded)");
		return;
	}
	MHD_suspend_connection(r->conn);
	r->suspended = 1;
	delay_suspended++;
	if (due <= now)
		r->due = 1;
	else {
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
	delay_submit(r);
}

/* r is going away: drop its timer and list entries. */
void
delay_forget(struct req *r)
{
	if (r->timer != NULL) {
		event_free(r->timer);
		r->timer = NULL;
	}
	if (r->job != NULL) {
		r->job->r = NULL;       /* the store still owns it; its records count when it comes back */
		r->job = NULL;
	}
	if (r->in_ready) {
		TAILQ_REMOVE(&delay_ready, r, ready_entry);
		r->in_ready = 0;
	}
	if (r->suspended) {
		r->suspended = 0;
		delay_suspended--;
	}
}

/* Wait until the store has handed back every job (shutdown: nothing is left behind unaccounted). */
void
delay_drain(void)
{
	struct pollfd pfd;

	delay_submit_cb(-1, 0, NULL);
	pfd.fd = store_notify_fd(db);
	pfd.events = POLLIN;
	while (delay_jobs_out > 0) {
		if (poll(&pfd, 1, -1) == -1 && errno != EINTR) {
			log_warn("poll");
			return;
		}
		delay_done_cb(-1, 0, NULL);
	}
}
