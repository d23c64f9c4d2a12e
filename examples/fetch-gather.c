/*
 * fetch-gather.c: fetch six "pages" at most two at a time, each with its own
 * timeout, and gather the bodies in input order; at the first failure, stop
 * every fetch still running or waiting.
 *
 * What the other examples do not show: a DeferredSemaphore bounding
 * concurrency (dfr_sem_run), dfr_gather() with its values in input order,
 * dfr_set_timeout() on each call, a canceller that stops a libevent timer,
 * and stopping the rest of a set once the gather has failed. Cancelling the
 * gather itself would not do that then: it has fired, and cancelling a fired
 * deferred does nothing. So we keep a reference to every member of our own.
 *
 * In round 2, page 2 times out. Its token goes straight to the oldest waiter,
 * fetch 4, which starts before the gather's errback runs (as in Twisted,
 * where it would start inside the release): the errback stops fetches 3 and
 * 4 through their canceller, and fetch 5, still waiting, never starts.
 *
 *   $ ./fetch-gather
 *   round 1: every page arrives
 *   fetch 1: done
 *   ...
 *   gathered in input order: page-0 page-1 page-2 page-3 page-4 page-5
 *   at most 2 fetch(es) at once; 4 waited for a token, 0 cancelled while
 *   waiting
 *   round 2: page 2 never arrives
 *   ...
 *   fetch 2: timed out
 *   gather failed at member 2: member 2: timed out
 *   fetch 3: cancelled
 *   fetch 4: cancelled
 *   at most 2 fetch(es) at once; 3 waited for a token, 1 cancelled while
 *   waiting
 */

#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "dfr.h"

#define NPAGES 6
#define AT_ONCE 2
#define TIMEOUT_MS 150

/* A fake fetch: its "response" comes after ms on a libevent timer. */
struct fetch {
	struct event *ev;
	struct dfr *d; /* the timer's reference */
	int page;
};

/* The response arrived: fire the deferred with the body it now owns. */
static void
fetch_arrived(evutil_socket_t fd, short what, void *arg)
{
	struct fetch *f = arg;
	char *body = malloc(16);

	(void)fd;
	(void)what;
	if (body == NULL)
		abort();
	snprintf(body, 16, "page-%d", f->page);
	dfr_callback(f->d, body, free);
	dfr_unref(f->d); /* done firing */
	event_free(f->ev);
	free(f);
}

/*
 * The canceller: stop the timer and drop its reference. The deferred then
 * fails with DFR_ECANCELED (the cancel holds a reference of its own while
 * it does). A timeout cancels this way too, and turns that into
 * DFR_ETIMEDOUT.
 */
static void
fetch_cancel(struct dfr *d, void *arg)
{
	struct fetch *f = arg;

	event_free(f->ev);
	free(f);
	dfr_unref(d); /* the timer's reference: it will never fire d now */
}

/* Start a fetch of page; the deferred (caller's reference) fires with it. */
static struct dfr *
fake_fetch(struct event_base *base, int page, int ms)
{
	struct timeval tv;
	struct fetch *f = malloc(sizeof *f);

	if (f == NULL)
		return NULL;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	f->page = page;
	f->d = dfr_new(fetch_cancel, f);
	f->ev = evtimer_new(base, fetch_arrived, f);
	if (f->d == NULL || f->ev == NULL || evtimer_add(f->ev, &tv) < 0)
		abort();
	return dfr_ref(f->d); /* one for the caller, one for the timer */
}

struct job {
	struct event_base *base;
	int page;
	int ms; /* how long the fetch takes */
};

static int running, max_running;

/* The fetch of a job ended, one way or another. */
static void
job_ended(struct dfr *d, void *arg)
{
	struct job *job = arg;

	running--;
	if (dfr_failed(d))
		printf("fetch %d: %s\n", job->page, dfr_failure(d)->message);
	else
		printf("fetch %d: done\n", job->page);
	/* Leave a failure in place: it is the result the run passes on. */
}

/* The work run holding a token: one fetch, bounded by its own timeout. */
static struct dfr *
job_run(void *arg)
{
	static const struct timeval timeout = {0, TIMEOUT_MS * 1000};
	struct job *job = arg;
	struct dfr *d;

	if (++running > max_running)
		max_running = running;
	d = fake_fetch(job->base, job->page, job->ms);
	if (d == NULL)
		return NULL;
	dfr_set_timeout(d, job->base, &timeout, NULL, NULL);
	dfr_add_both(d, job_ended, job);
	return d; /* the token goes back when d has fired */
}

static struct dfr *members[NPAGES]; /* our own references */

/* Every page arrived: the values are in input order. */
static void
gathered(struct dfr *d, void *arg)
{
	struct dfr_gather_result *res = dfr_value(d); /* the gather owns it */
	size_t i;

	(void)arg;
	printf("gathered in input order:");
	for (i = 0; i < res->n; i++)
		printf(" %s", (char *)res->values[i]);
	printf("\n");
}

/* The first failure: take it (handled), then stop all the other fetches. */
static void
gather_failed(struct dfr *d, void *arg)
{
	struct dfr_failure *f = dfr_take_failure(d);
	int i;

	(void)arg;
	printf("gather failed at member %ld: %s\n", f->index, f->message);
	dfr_failure_free(f);
	/* Running ones are stopped by their canceller; waiting ones never
	 * start. */
	for (i = 0; i < NPAGES; i++)
		dfr_cancel(members[i]);
}

/* Fetch pages taking ms[i] each, AT_ONCE at a time, and gather them. */
static void
fetch_round(struct event_base *base, const char *title, const int *ms)
{
	struct job jobs[NPAGES];
	struct dfr *ds[NPAGES], *g;
	struct dfr_sem *sem = dfr_sem_new(AT_ONCE);
	struct dfr_stats st;
	int i;

	if (sem == NULL)
		abort();
	printf("%s\n", title);
	running = max_running = 0;
	for (i = 0; i < NPAGES; i++) {
		jobs[i].base = base;
		jobs[i].page = i;
		jobs[i].ms = ms[i];
		members[i] = dfr_sem_run(sem, job_run, &jobs[i]);
		if (members[i] == NULL)
			abort();
		/* One reference for the gather to take over, one we keep. */
		ds[i] = dfr_ref(members[i]);
	}
	/* Without CONSUME_ERRORS the cancelled members would be reported. */
	g = dfr_gather(ds, NPAGES, DFR_GATHER_CONSUME_ERRORS);
	if (g == NULL)
		abort();
	dfr_add_callbacks(g, gathered, gather_failed, NULL);
	event_base_dispatch(base);

	dfr_sem_stats(sem, &st);
	printf("at most %d fetch(es) at once; %llu waited for a token, %llu "
	       "cancelled while waiting\n",
	       max_running, (unsigned long long)st.contended,
	       (unsigned long long)st.cancelled);
	for (i = 0; i < NPAGES; i++)
		dfr_unref(members[i]);
	dfr_unref(g);
	dfr_sem_free(sem);
}

int
main(void)
{
	/* Finishing times never tie, so the output is the same on every run. */
	static const int fast[NPAGES] = {140, 40, 80, 120, 60, 100};
	static const int hang[NPAGES] = {140, 40, 10000, 120, 60, 100};
	struct event_base *base = event_base_new();

	if (base == NULL)
		abort();
	fetch_round(base, "round 1: every page arrives", fast);
	fetch_round(base, "round 2: page 2 never arrives", hang);
	event_base_free(base);
	return 0;
}
