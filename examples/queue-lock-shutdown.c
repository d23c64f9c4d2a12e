/*
 * queue-lock-shutdown.c: a producer on a timer feeds a DeferredQueue; a
 * consumer that never waits for a job to finish hands each one to a
 * DeferredLock, which alone keeps the jobs' critical sections apart; at the
 * end the consumer's waiting get is cancelled and the queue and lock closed.
 *
 * What queue-lock.c does not show: items that the queue owns (malloc'd,
 * released with free) and how a getter takes them over, jobs that contend for
 * the lock (so the lock, not the consumer loop, serialises them), and a
 * consumer that keeps its own reference to its waiting get so that it can
 * cancel it, dropping that reference in the callback and in the errback.
 *
 *   $ ./queue-lock-shutdown
 *   job 1: recording
 *   job 1: recorded
 *   job 2: recording
 *   ...
 *   consumer: waiting get cancelled
 *   4 job(s) recorded, at most 1 at once; 3 waited for the lock
 */

#include <stdio.h>
#include <stdlib.h>

#include "fake-record.h"

#define NJOBS 4
/* Faster than FAKE_RECORD_MS, so jobs wait for the lock. */
#define PUT_EVERY_MS 20

struct job {
	int id;
};

struct app {
	struct event_base *base;
	struct event *producer;
	struct dfr_queue *jobs;
	struct dfr_lock *lock;
	struct dfr *waiting_get; /* our reference, to cancel it at shutdown */
	int produced;
	int recorded;
	int in_progress;
	int max_in_progress;
};

static struct app app;

static void consume_next(void);

/* The record came back: the end of the job's critical section. */
static void
recorded(struct dfr *d, void *arg)
{
	struct job *job = arg;

	(void)d;
	app.in_progress--;
	printf("job %d: recorded\n", job->id);
}

/* The critical section: at most one job between "recording" and "recorded". */
static struct dfr *
record_job(void *arg)
{
	struct job *job = arg;
	struct dfr *d;

	if (++app.in_progress > app.max_in_progress)
		app.max_in_progress = app.in_progress;
	printf("job %d: recording\n", job->id);
	d = fake_record(app.base, job->id);
	if (d != NULL)
		dfr_add_callback(d, recorded, job);
	return d; /* the lock is released when d has fired */
}

/* The last job is recorded: stop the consumer, then close everything. */
static void
shut_down(void)
{
	dfr_cancel(app.waiting_get); /* get_failed runs inside this call */
	dfr_queue_close(app.jobs);
	dfr_lock_close(app.lock);
}

/* A job's run under the lock is over (the lock is already released). */
static void
job_done(struct dfr *d, void *arg)
{
	struct job *job = arg;

	if (dfr_failed(d)) {
		printf("job %d: %s\n", job->id, dfr_failure(d)->message);
		dfr_failure_free(dfr_take_failure(d)); /* handled */
	} else
		app.recorded++;
	free(job); /* ours since got_job took it from the get */
	if (app.recorded == NJOBS)
		shut_down();
}

/* The queue gave us a job: run it under the lock, and get the next one. */
static void
got_job(struct dfr *d, void *arg)
{
	struct job *job = dfr_take_value(d); /* the get no longer frees it */
	struct dfr *run;

	(void)arg;
	app.waiting_get = NULL;
	dfr_unref(d); /* our reference; the runner keeps d until we return */
	run = dfr_lock_run(app.lock, record_job, job);
	dfr_add_both(run, job_done, job);
	dfr_unref(run); /* the lock, then the record, keep it until it ends */
	consume_next(); /* do not wait: the lock keeps the jobs apart */
}

/* The get failed: cancelled at shutdown (or the queue was closed). */
static void
get_failed(struct dfr *d, void *arg)
{
	(void)arg;
	printf("consumer: waiting get %s\n",
	       dfr_failure_code(d) == DFR_ECANCELED ? "cancelled" : "closed");
	dfr_failure_free(dfr_take_failure(d)); /* else reported as unhandled */
	app.waiting_get = NULL;
	dfr_unref(d);
}

/* One step of the consumer: a get, kept so that shut_down() can cancel it. */
static void
consume_next(void)
{
	struct dfr *d = dfr_queue_get(app.jobs);

	if (d == NULL)
		abort();
	app.waiting_get = d;
	/* Runs at once if a job is stored, else when one is put. */
	dfr_add_callbacks(d, got_job, get_failed, NULL);
}

/* The producer's timer: put one job; the queue owns it until a get takes it. */
static void
produce(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval every = {0, PUT_EVERY_MS * 1000};
	struct job *job = malloc(sizeof *job);

	(void)fd;
	(void)what;
	(void)arg;
	if (job == NULL)
		abort();
	job->id = ++app.produced;
	if (dfr_queue_put(app.jobs, job, free) < 0)
		free(job); /* on error the item stays ours */
	if (app.produced < NJOBS)
		evtimer_add(app.producer, &every);
}

int
main(void)
{
	static const struct timeval now = {0, 0};
	struct dfr_stats st;

	app.base = event_base_new();
	app.jobs = dfr_queue_new(DFR_UNBOUNDED, 1);
	app.lock = dfr_lock_new();
	app.producer = evtimer_new(app.base, produce, NULL);
	if (app.base == NULL || app.jobs == NULL || app.lock == NULL ||
	    app.producer == NULL)
		abort();
	evtimer_add(app.producer, &now);
	consume_next();

	event_base_dispatch(app.base);
	dfr_lock_stats(app.lock, &st);
	printf("%d job(s) recorded, at most %d at once; %llu waited for the "
	       "lock\n",
	       app.recorded, app.max_in_progress,
	       (unsigned long long)st.contended);
	event_free(app.producer);
	dfr_queue_free(app.jobs);
	dfr_lock_free(app.lock);
	event_base_free(app.base);
	return 0;
}
