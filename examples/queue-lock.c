/*
 * queue-lock.c: a DeferredQueue feeding a DeferredLock.
 *
 * A consumer takes jobs from a queue, one at a time, and runs each inside a
 * lock (here: record the job with the fake server). Another user of the same
 * lock - a "snapshot" - asks for it while job 1 is being recorded: the lock
 * keeps the two apart (the snapshot runs between jobs, never during one) and
 * hands over strictly in arrival order. The queue keeps the jobs in order
 * and never loses one; closing it lets the consumer drain what is stored and
 * then stop.
 *
 *   $ ./queue-lock
 *   job 1: recording
 *   job 1: recorded
 *   snapshot: 1 job(s) recorded, none in progress
 *   job 2: recording
 *   ...
 */

#include <stdint.h>
#include <stdio.h>

#include "fake-record.h"

struct app {
	struct event_base *base;
	struct dfr_queue *jobs;
	struct dfr_lock *lock;
	int recorded;
	int in_progress;
};

static struct app app;

static void consume_next(void);

/* The critical section for one job: record it; the lock is held until done. */
static struct dfr *
record_job(void *arg)
{
	int job = (int)(intptr_t)arg;

	printf("job %d: recording\n", job);
	app.in_progress = 1;
	return fake_record(app.base, job);
}

/* The job's record completed (we are past the lock): take the next job. */
static void
job_done(struct dfr *d, void *arg)
{
	app.in_progress = 0;
	app.recorded++;
	printf("job %d: recorded\n", (int)(intptr_t)arg);
	dfr_unref(d);
	consume_next();
}

/* The queue gave us a job: run it inside the lock. */
static void
got_job(struct dfr *d, void *arg)
{
	void *job = dfr_value(d);
	struct dfr *r = dfr_lock_run(app.lock, record_job, job);

	dfr_add_callback(r, job_done, job);
	(void)arg;
}

/* The queue is closed and empty: the consumer stops. */
static void
no_more_jobs(struct dfr *d, void *arg)
{
	if (dfr_failure_code(d) == DFR_ECLOSED)
		printf("queue closed and drained: consumer stops\n");
	dfr_failure_free(dfr_take_failure(d)); /* handled */
	(void)arg;
}

/* One step of the consumer loop: get -> got_job -> lock.run -> job_done. */
static void
consume_next(void)
{
	struct dfr *d = dfr_queue_get(app.jobs);

	/* Callbacks run at once if a job is stored (the runner keeps the stack
	 * flat). */
	dfr_add_callbacks(d, got_job, no_more_jobs, NULL);
	dfr_unref(
	    d); /* the queue, or the runner, keeps d until its callbacks ran */
}

/* Another user of the lock: it must never see a job half-done. */
static struct dfr *
take_snapshot(void *arg)
{
	(void)arg;
	printf("snapshot: %d job(s) recorded, %s\n", app.recorded,
	       app.in_progress ? "one IN PROGRESS (broken exclusion!)"
			       : "none in progress");
	return dfr_succeed(NULL, NULL);
}

int
main(void)
{
	int job;

	app.base = event_base_new();
	app.jobs = dfr_queue_new(DFR_UNBOUNDED, 1);
	app.lock = dfr_lock_new();
	for (job = 1; job <= 4; job++)
		dfr_queue_put(app.jobs, (void *)(intptr_t)job, NULL);
	dfr_queue_close(app.jobs); /* no more puts; stored jobs still drain */

	consume_next(); /* job 1 takes the lock now */
	dfr_unref(
	    dfr_lock_run(app.lock, take_snapshot, NULL)); /* waits for job 1 */

	event_base_dispatch(app.base);
	dfr_queue_free(app.jobs);
	dfr_lock_free(app.lock);
	event_base_free(app.base);
	return 0;
}
