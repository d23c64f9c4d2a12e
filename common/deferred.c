/*
 * deferred.c: the Deferred, its failures, and the per-thread chain runner.
 *
 * The runner is a trampoline: a deferred whose chain has work to do is put on
 * this thread's run queue, and only the outermost caller drains the queue, in
 * a loop. A callback that fires another deferred, chains one (dfr_wait) or
 * hands a lock over therefore never grows the stack: the new work waits in
 * the queue until the current callback returns.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dfr-int.h"

/* This thread's run queue. */
struct dfr_runq {
	struct dfr *head;
	struct dfr *tail;
	struct dfr *current; /* whose chain runs now */
	struct dfr *later;   /* chains stopped at a resume point (a stack) */
	unsigned int depth;  /* > 0: someone up the stack drains the queue */
};
static DFR_TLS struct dfr_runq runq;

/*
 * A small per-thread cache of freed deferreds, linked through their run
 * queue link, so that a get or an acquire does not call malloc and free
 * each time. Bounded; freed at thread exit by a key destructor (and for the
 * thread that calls exit() by the library destructor), so that nothing is
 * left unreachable.
 */
#define DFR_CACHE_MAX 64
DFR_TLS struct dfr_cache dfr__cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_ok;

static dfr_unhandled_cb unhandled_cb;
static void *unhandled_arg;
static uint64_t unhandled_count;

/*
 * The failures used when there is no memory for a real one: the codes a
 * user acts on (a cancel, a timeout, a close, a lost inner deferred) keep
 * their meaning; any other becomes ENOMEM. Shared, never freed.
 */
static struct dfr_failure static_failures[] = {
    {ENOMEM, (char *)"out of memory", -1},
    {DFR_ECANCELED, (char *)"cancelled", -1},
    {DFR_ETIMEDOUT, (char *)"timed out", -1},
    {DFR_ECLOSED, (char *)"closed", -1},
    {EPIPE,
     (char *)"the deferred this chain waited for was freed before it fired",
     -1},
};
#define NSTATIC (sizeof static_failures / sizeof static_failures[0])

static void drain(void);
static void schedule(struct dfr *d);
static void cancel_walk(struct dfr *d, int soft);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t
dfr__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* Failures                                                                  */

static struct dfr_failure *failure_vnew(int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static struct dfr_failure *
failure_vnew(int code, const char *fmt, va_list ap)
{
	struct dfr_failure *f;
	va_list ap2;
	int len;

	va_copy(ap2, ap);
	len = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (len < 0)
		len = 0;
	f = malloc(sizeof *f + (size_t)len + 1);
	if (f == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	f->code = code;
	f->index = -1;
	f->message = (char *)(f + 1);
	vsnprintf(f->message, (size_t)len + 1, fmt, ap);
	return f;
}

/* Create a failure with a printf-style message. */
struct dfr_failure *
dfr_failure_new(int code, const char *fmt, ...)
{
	struct dfr_failure *f;
	va_list ap;

	va_start(ap, fmt);
	f = failure_vnew(code, fmt, ap);
	va_end(ap);
	return f;
}

/* Free a failure; the shared static ones are never freed. */
void
dfr_failure_free(struct dfr_failure *f)
{
	if (f != NULL &&
	    (f < static_failures || f >= static_failures + NSTATIC))
		free(f);
}

/* The shared failure for code when allocating one fails. */
struct dfr_failure *
dfr__failure_static(int code)
{
	size_t i;

	for (i = 1; i < NSTATIC; i++)
		if (static_failures[i].code == code)
			return &static_failures[i];
	return &static_failures[0];
}

/* A new failure, or the shared one for code if there is no memory. */
static struct dfr_failure *failure_vmake(int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static struct dfr_failure *
failure_vmake(int code, const char *fmt, va_list ap)
{
	struct dfr_failure *f = failure_vnew(code, fmt, ap);

	return f != NULL ? f : dfr__failure_static(code);
}

/* Install the unhandled-failure reporter (NULL: the default one). */
void
dfr_set_unhandled_cb(dfr_unhandled_cb cb, void *arg)
{
	unhandled_cb = cb;
	unhandled_arg = arg;
}

/* Number of unhandled failures reported so far. */
uint64_t
dfr_unhandled_count(void)
{
	return __atomic_load_n(&unhandled_count, __ATOMIC_RELAXED);
}

static void
report_unhandled(const struct dfr_failure *f)
{
	__atomic_fetch_add(&unhandled_count, 1, __ATOMIC_RELAXED);
	if (unhandled_cb != NULL)
		unhandled_cb(f, unhandled_arg);
	else
		fprintf(stderr,
			"libdfr: unhandled failure in deferred: %s (code %d)\n",
			f->message, f->code);
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                                */

/* Free this thread's cached deferreds (a key destructor: at thread exit). */
static void
cache_flush(void *arg)
{
	struct dfr *d;

	(void)arg;
	while ((d = dfr__cache.head) != NULL) {
#ifdef DFR_ASAN
		ASAN_UNPOISON_MEMORY_REGION(d, sizeof *d);
#endif
		dfr__cache.head = d->link.tqe_next;
		free(d);
	}
	dfr__cache.room = 0;
	dfr__cache.state = 0; /* a later free registers again */
}

/*
 * The thread that calls exit() runs no key destructor. On dlclose() the key
 * goes too, so no thread's exit calls into unmapped code (other threads'
 * cached deferreds, at most 64 each, are then left to the process).
 */
__attribute__((destructor)) static void
cache_fini(void)
{
	cache_flush(NULL);
	dfr__cache.state = -1;
	if (cache_key_ok) {
		pthread_key_delete(cache_key);
		cache_key_ok = 0;
	}
}

static void
cache_key_create(void)
{
	cache_key_ok = pthread_key_create(&cache_key, cache_flush) == 0;
}

/*
 * Let this thread cache, if its exit can free the cache: the (empty) cache
 * gets its room.
 */
static int cache_register(void) __attribute__((noinline));
static int
cache_register(void)
{
	pthread_once(&cache_once, cache_key_create);
	if (!cache_key_ok || pthread_setspecific(cache_key, &dfr__cache) != 0) {
		dfr__cache.state = -1;
		return 0;
	}
	dfr__cache.state = 1;
	dfr__cache.room = DFR_CACHE_MAX;
	return 1;
}

/* Memory for a deferred from malloc (out of line: the cache is the rule). */
struct dfr *
dfr__alloc_heap(void)
{
	struct dfr *d = malloc(sizeof *d);

	if (d == NULL)
		errno = ENOMEM;
	return d;
}

/* Cache d (room known to be there). */
static inline void
cache_push(struct dfr *d)
{
	d->link.tqe_next = dfr__cache.head;
	dfr__cache.head = d;
	dfr__cache.room--;
#ifdef DFR_ASAN
	/*
	 * A use after free still trips ASan while d is cached. The link
	 * stays readable: LeakSanitizer ignores pointers in poisoned memory,
	 * and it may look before the library's destructor frees the cache.
	 */
	ASAN_POISON_MEMORY_REGION((char *)d + sizeof d->link.tqe_next,
				  sizeof *d - sizeof d->link.tqe_next);
#endif
}

/* A full or not yet registered cache: register, else free. */
static void dfr_dealloc_slow(struct dfr *d) __attribute__((noinline));
static void
dfr_dealloc_slow(struct dfr *d)
{
	if (dfr__cache.state == 0 && cache_register())
		cache_push(d);
	else
		free(d);
}

/* Give back a deferred's memory: to the cache while it has room. */
static inline void
dfr_dealloc(struct dfr *d)
{
	if (dfr__cache.room > 0)
		cache_push(d);
	else
		dfr_dealloc_slow(d);
}

/* Create an unfired deferred (dfr_new for the library's own modules). */
struct dfr *
dfr__new(dfr_canceller_cb canceller, void *arg)
{
	struct dfr *d;

	d = dfr__alloc();
	if (d == NULL)
		return NULL;
	dfr__init(d, 0, canceller, arg);
	d->r.v.value = NULL;
	d->r.v.free_cb = NULL;
	return d;
}

/* Create an unfired deferred. */
struct dfr *dfr_new(dfr_canceller_cb canceller, void *arg)
    __attribute__((alias("dfr__new")));

/*
 * A deferred already fired with a value: made fired, with no chain, so
 * nothing goes through the fire path.
 */
struct dfr *
dfr__succeed(void *value, dfr_free_cb free_cb)
{
	return dfr__fired(value, free_cb);
}

/* A deferred already fired with a value. */
struct dfr *dfr_succeed(void *value, dfr_free_cb free_cb)
    __attribute__((alias("dfr__succeed")));

/* A deferred already failed. */
struct dfr *
dfr_fail(int code, const char *fmt, ...)
{
	struct dfr *d;
	va_list ap;

	d = dfr__new(NULL, NULL);
	if (d == NULL)
		return NULL;
	va_start(ap, fmt);
	d->r.failure = failure_vmake(code, fmt, ap);
	va_end(ap);
	d->flags = DFR_F_FIRED | DFR_F_FAILED;
	return d;
}

/* Take a reference. */
struct dfr *
dfr_ref(struct dfr *d)
{
	d->refs++;
	return d;
}

/* Drop the result held by d (value released, failure freed). */
static void
result_clear(struct dfr *d)
{
	if (!(d->flags & DFR_F_FIRED)) {
		d->r.v.value = NULL;
		d->r.v.free_cb = NULL;
		return;
	}
	if (d->flags & DFR_F_FAILED) {
		struct dfr_failure *f = d->r.failure;

		d->r.failure = NULL;
		d->flags &= (uint16_t) ~(DFR_F_FAILED | DFR_F_HANDLED);
		dfr_failure_free(f);
	} else if (d->r.v.free_cb != NULL) {
		dfr_free_cb fcb = d->r.v.free_cb;
		void *value = d->r.v.value;

		d->r.v.free_cb = NULL;
		fcb(value);
	}
	d->r.v.value = NULL;
	d->r.v.free_cb = NULL;
}

/* Free d, whose last reference is gone. */
static void destroy(struct dfr *d) __attribute__((noinline));
static void
destroy(struct dfr *d)
{
	struct dfr *o = d->outer;
	uint32_t i;

	/*
	 * Freed unfired while a deferred waits for it: nothing can fire it
	 * now, so the waiting one goes on with a failure instead of hanging.
	 */
	if (o != NULL) {
		struct dfr_failure *f =
		    dfr_failure_new(EPIPE, "the deferred this chain waited for "
					   "was freed before it fired");

		result_clear(o); /* anything set on o while it was paused */
		d->outer = NULL;
		o->inner = NULL;
		o->r.failure = f != NULL ? f : dfr__failure_static(EPIPE);
		o->flags =
		    (uint16_t)((o->flags & ~DFR_F_HANDLED) | DFR_F_FAILED);
		schedule(o);
		dfr__unref(o); /* the reference d held */
	}

	/* Timers armed by dfr_set_timeout live in the chain until they run. */
	if (d->flags & DFR_F_TIMEOUT) {
		for (i = d->pos; i < d->ncbs; i++)
			if (d->cbs[i].cb == dfr__timeout_done)
				dfr__timeout_discard(d->cbs[i].arg);
	}
	if ((d->flags & (DFR_F_FIRED | DFR_F_FAILED | DFR_F_HANDLED)) ==
	    (DFR_F_FIRED | DFR_F_FAILED))
		report_unhandled(d->r.failure);
	result_clear(d);
	if (d->cbs != &d->cb0)
		free(d->cbs);
	dfr_dealloc(d);
}

/*
 * Drop a reference. A paused deferred is never freed here: the deferred it
 * waits for holds a reference to it until it resumes it.
 */
void
dfr__unref(struct dfr *d)
{
	if (d == NULL || --d->refs != 0)
		return;
	/*
	 * The common end: no waiting chain, no timer, no failure, no chain
	 * storage on the heap and no value to release. Straight to memory.
	 */
	if (d->outer == NULL && d->cbs == &d->cb0 &&
	    !(d->flags & (DFR_F_TIMEOUT | DFR_F_FAILED)) &&
	    (!(d->flags & DFR_F_FIRED) || d->r.v.free_cb == NULL)) {
		dfr_dealloc(d);
		return;
	}
	destroy(d);
}

void dfr_unref(struct dfr *d) __attribute__((alias("dfr__unref")));

/* ------------------------------------------------------------------------ */
/* The runner                                                                */

/* Let go of a finished chain's storage. */
static void
chain_reset(struct dfr *d)
{
	d->pos = 0;
	d->ncbs = 0;
	if (d->cbs != &d->cb0) {
		free(d->cbs);
		d->cbs = &d->cb0;
		d->caplog = 0;
	}
}

/* Put d on the run queue if its chain has work; drain unless nested. */
static void
schedule(struct dfr *d)
{
	if (d->flags & (DFR_F_QUEUED | DFR_F_LATER) || d == runq.current ||
	    d->inner != NULL)
		return;
	if (d->pos == d->ncbs && d->outer == NULL)
		return;
	d->flags |= DFR_F_QUEUED;
	d->refs++;
	d->link.tqe_next = NULL;
	if (runq.tail != NULL)
		runq.tail->link.tqe_next = d;
	else
		runq.head = d;
	runq.tail = d;
	if (runq.depth == 0)
		drain();
}

/* inner's chain is done: its result moves into the deferred waiting on it. */
static void
resume_outer(struct dfr *inner)
{
	struct dfr *o = inner->outer;
	const uint16_t moved = DFR_F_FAILED | DFR_F_HANDLED;

	result_clear(o); /* anything set on o while it was paused */
	inner->outer = NULL;
	o->inner = NULL;
	o->flags = (uint16_t)((o->flags & ~moved) | (inner->flags & moved));
	o->r = inner->r;
	inner->flags &= (uint16_t)~moved;
	inner->r.v.value = NULL;
	inner->r.v.free_cb = NULL;
	schedule(o);
	dfr__unref(o); /* the reference inner held */
}

/*
 * A kept cancel that came down through d's outer goes back up to it, as d
 * hands its result over (in Twisted, the resumed chain would meet it).
 */
static void
cancelq_pass_up(struct dfr *d)
{
	struct dfr *o = d->outer;

	if (o != NULL && (o->flags & DFR_F_CANCELPATH)) {
		o->flags =
		    (uint16_t)((o->flags & ~DFR_F_CANCELPATH) | DFR_F_CANCELQ |
			       (d->flags & DFR_F_CANCELQSOFT));
		d->flags &= (uint16_t) ~(DFR_F_CANCELQ | DFR_F_CANCELQSOFT);
	}
}

/*
 * The point in a chain where the deferred waiting on it resumes, put there
 * when a pair is added after the wait began (dfr_add_callbacks): as in
 * Twisted, the waiting deferred takes the result as it is at that point, and
 * the pairs added later see a NULL value. Never called: run_chain acts on it.
 */
static void
resume_mark(struct dfr *d, void *arg)
{
	(void)d;
	(void)arg;
}

/* Run d's pending callbacks until the end of the chain or a pause. */
static void
run_chain(struct dfr *d)
{
	while (d->inner == NULL && d->pos < d->ncbs) {
		struct dfr_cbent *e = &d->cbs[d->pos++];
		dfr_cb fn = (d->flags & DFR_F_FAILED) ? e->eb : e->cb;
		void *arg = e->arg;

		if (fn == resume_mark) {
			/*
			 * The outer goes on first, then the rest of d's chain
			 * (drain keeps it on the later stack).
			 */
			d->flags &= (uint16_t)~DFR_F_RESUMEMARK;
			if (d->outer == NULL) /* that wait was given up */
				continue;
			if (d->flags & DFR_F_CANCELQ)
				cancelq_pass_up(d);
			resume_outer(d);
			return;
		}
		if (fn != NULL)
			fn(d, arg);
	}
	if (d->inner != NULL) {
		/* Cancelled while queued: now there is a wait to cancel. */
		if (d->flags & DFR_F_CANCELQ) {
			int soft = (d->flags & DFR_F_CANCELQSOFT) != 0;

			dfr__cancelq_clear(d);
			cancel_walk(d, soft);
		}
		return;
	}
	chain_reset(d);
	if (d->flags & DFR_F_CANCELQ) {
		/* Made on the outer (or above it): it goes back up. */
		cancelq_pass_up(d);
		if (d->flags & DFR_F_CANCELQ)
			dfr__cancelq_clear(d); /* made on d, which ended */
	}
	if (d->outer != NULL)
		resume_outer(d);
}

/*
 * Run queued chains until none is left. Only the outermost caller does. A
 * chain stopped at a resume point goes on a stack, whose top runs when the
 * queue is empty: so, as in Twisted, the resumed outer chain and all that
 * follows from it run before the rest of the inner one.
 */
static void
drain(void)
{
	struct dfr *d;

	runq.depth++;
	for (;;) {
		if ((d = runq.head) != NULL) {
			runq.head = d->link.tqe_next;
			if (runq.head == NULL)
				runq.tail = NULL;
			d->flags &= (uint16_t)~DFR_F_QUEUED;
		} else if ((d = runq.later) != NULL) {
			runq.later = d->link.tqe_next;
			d->flags &= (uint16_t)~DFR_F_LATER;
		} else
			break;
		runq.current = d;
		run_chain(d);
		runq.current = NULL;
		if (d->pos < d->ncbs && d->inner == NULL) {
			/* Stopped at a resume point: it keeps its reference. */
			d->flags |= DFR_F_LATER;
			d->link.tqe_next = runq.later;
			runq.later = d;
			continue;
		}
		dfr__unref(d);
	}
	runq.depth--;
}

/* Queue, rather than run, what is fired until dfr__batch_end(). */
void
dfr__batch_begin(void)
{
	runq.depth++;
}

/* End a batch; the outermost end runs what was queued. */
void
dfr__batch_end(void)
{
	if (--runq.depth == 0 && runq.head != NULL)
		drain();
}

/* ------------------------------------------------------------------------ */
/* Firing                                                                    */

/* Fire an unfired d with a value. */
void
dfr__fire_value(struct dfr *d, void *value, dfr_free_cb free_cb)
{
	d->r.v.value = value;
	d->r.v.free_cb = free_cb;
	d->flags = (uint16_t)((d->flags & ~(DFR_F_FAILED | DFR_F_HANDLED)) |
			      DFR_F_FIRED);
	schedule(d);
}

static void
fire_failure_obj(struct dfr *d, struct dfr_failure *f)
{
	d->r.failure = f != NULL ? f : &static_failures[0];
	d->flags = (uint16_t)((d->flags & ~DFR_F_HANDLED) | DFR_F_FIRED |
			      DFR_F_FAILED);
	schedule(d);
}

/* Fire an unfired d with a new failure. */
void
dfr__fire_failure(struct dfr *d, int code, const char *fmt, ...)
{
	struct dfr_failure *f;
	va_list ap;

	va_start(ap, fmt);
	f = failure_vmake(code, fmt, ap);
	va_end(ap);
	fire_failure_obj(d, f);
}

/* Whether a fire of an already fired d is swallowed (after a cancel). */
static int
late_fire(struct dfr *d)
{
	if (d->flags & DFR_F_SWALLOW) {
		d->flags &= (uint16_t)~DFR_F_SWALLOW;
		return 0;
	}
	return -EALREADY;
}

/* Fire d with a value. */
int
dfr_callback(struct dfr *d, void *value, dfr_free_cb free_cb)
{
	int rc;

	if (d->flags & DFR_F_WAITER)
		return -EBUSY;
	if (d->flags & DFR_F_FIRED) {
		rc = late_fire(d);
		if (rc == 0 && free_cb != NULL)
			free_cb(value);
		return rc;
	}
	dfr__fire_value(d, value, free_cb);
	return 0;
}

/* Fail d with a new failure. */
int
dfr_errback(struct dfr *d, int code, const char *fmt, ...)
{
	struct dfr_failure *f;
	va_list ap;

	if (d->flags & DFR_F_WAITER)
		return -EBUSY;
	if (d->flags & DFR_F_FIRED)
		return late_fire(d);
	va_start(ap, fmt);
	f = failure_vmake(code, fmt, ap);
	va_end(ap);
	fire_failure_obj(d, f);
	return 0;
}

/* Fail d with f, which d takes in every case. */
int
dfr_errback_failure(struct dfr *d, struct dfr_failure *f)
{
	if (d->flags & (DFR_F_FIRED | DFR_F_WAITER)) {
		if (d->flags & DFR_F_WAITER) {
			dfr_failure_free(f);
			return -EBUSY;
		}
		dfr_failure_free(f);
		return late_fire(d);
	}
	fire_failure_obj(d, f);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Callbacks                                                                 */

/* Append a pair to d's chain (storage only). */
static inline int
chain_append(struct dfr *d, dfr_cb cb, dfr_cb eb, void *arg)
{
	struct dfr_cbent *e;

	if (d->cbs == &d->cb0) {
		if (d->ncbs == 1) {
			e = malloc(4 * sizeof *e);
			if (e == NULL)
				return -ENOMEM;
			e[0] = d->cb0;
			d->cbs = e;
			d->caplog = 2;
		}
	} else if (d->ncbs == (uint32_t)1 << d->caplog) {
		if (d->caplog >= 31)
			return -ENOMEM;
		e = realloc(d->cbs, ((size_t)2 << d->caplog) * sizeof *e);
		if (e == NULL)
			return -ENOMEM;
		d->cbs = e;
		d->caplog++;
	}
	e = &d->cbs[d->ncbs++];
	e->cb = cb;
	e->eb = eb;
	e->arg = arg;
	return 0;
}

/* Append a pair to d's chain; runs it now if d has fired (trampoline rule). */
int
dfr_add_callbacks(struct dfr *d, dfr_cb cb, dfr_cb eb, void *arg)
{
	/* Waited on: the waiting deferred resumes before this pair runs. */
	if (d->outer != NULL && !(d->flags & DFR_F_RESUMEMARK)) {
		d->flags |= DFR_F_RESUMEMARK;
		if (chain_append(d, resume_mark, resume_mark, NULL) < 0) {
			d->flags &= (uint16_t)~DFR_F_RESUMEMARK;
			return -ENOMEM;
		}
	}
	if (chain_append(d, cb, eb, arg) < 0)
		return -ENOMEM;
	if (d->flags & DFR_F_FIRED)
		schedule(d);
	return 0;
}

int
dfr_add_callback(struct dfr *d, dfr_cb cb, void *arg)
{
	return dfr_add_callbacks(d, cb, NULL, arg);
}

int
dfr_add_errback(struct dfr *d, dfr_cb eb, void *arg)
{
	return dfr_add_callbacks(d, NULL, eb, arg);
}

int
dfr_add_both(struct dfr *d, dfr_cb fn, void *arg)
{
	return dfr_add_callbacks(d, fn, fn, arg);
}

/* ------------------------------------------------------------------------ */
/* Cancellation                                                              */

/*
 * Cancel d, or what its paused chain waits for (soft: only ask that one's
 * canceller, for a run()'s work).
 */
static void
cancel_walk(struct dfr *d, int soft)
{
	struct dfr *top = d, *x;

	/* Walk down to the deferred that is actually waited for, in a loop. */
	while ((d->flags & DFR_F_FIRED) && d->inner != NULL) {
		if (d->flags & DFR_F_SOFTFWD)
			soft = 1;
		d = d->inner;
	}
	if (d->flags & DFR_F_FIRED) {
		/*
		 * Fired, its chain queued behind the running callback: Twisted
		 * would have run that chain already. Keep the cancel for when
		 * it pauses (run_chain), or for a run() not started (sem.c).
		 */
		if (!(d->flags & DFR_F_QUEUED))
			return;
		/* Should d's chain end, the chains above it up to top get it. */
		for (x = top; x != d; x = x->inner)
			x->flags |= DFR_F_CANCELPATH;
		if (!(d->flags & DFR_F_CANCELQ) && soft)
			d->flags |= DFR_F_CANCELQSOFT;
		else if (!soft)
			d->flags &= (uint16_t)~DFR_F_CANCELQSOFT;
		d->flags |= DFR_F_CANCELQ;
		return;
	}
	if (d->flags & DFR_F_CANCELLED)
		return;
	/*
	 * A waiting acquire, get or run is work that ends when cancelled: its
	 * canceller only unlinks it, and nothing else would ever fire it.
	 */
	if (soft && !(d->flags & DFR_F_WAITER)) {
		dfr__soft_cancel(d);
		return;
	}
	d->refs++;
	d->flags |= DFR_F_CANCELLED;
	if (d->canceller != NULL && !(d->flags & DFR_F_CANCELLER_CALLED)) {
		d->flags |= DFR_F_CANCELLER_CALLED;
		d->canceller(d, d->carg);
	}
	if (!(d->flags & (DFR_F_FIRED | DFR_F_NOFIAT))) {
		d->flags |= DFR_F_SWALLOW;
		dfr__fire_failure(d, DFR_ECANCELED, "cancelled");
	}
	dfr__unref(d);
}

/* d's kept cancel is spent or dropped: forget it and the way it came down. */
void
dfr__cancelq_clear(struct dfr *d)
{
	struct dfr *o;

	d->flags &= (uint16_t) ~(DFR_F_CANCELQ | DFR_F_CANCELQSOFT);
	for (o = d->outer; o != NULL && (o->flags & DFR_F_CANCELPATH);
	    o = o->outer)
		o->flags &= (uint16_t)~DFR_F_CANCELPATH;
}

/* Cancel d (see dfr.h); a paused chain forwards the cancel to its inner. */
void
dfr_cancel(struct dfr *d)
{
	cancel_walk(d, 0);
}

/*
 * Ask d's canceller to stop the work, without failing d by fiat: d fires
 * when the work says so (used by run() so a lock is never released early).
 * A canceller that stopped the work and dropped the last reference to d
 * (its firer's) leaves nobody to fire it: then the cancel fails d, as
 * dfr_cancel() would, instead of freeing it unfired.
 */
void
dfr__soft_cancel(struct dfr *d)
{
	if (d->flags & (DFR_F_FIRED | DFR_F_CANCELLER_CALLED) ||
	    d->canceller == NULL)
		return;
	d->refs++;
	d->flags |= DFR_F_CANCELLER_CALLED;
	d->canceller(d, d->carg);
	if (d->refs == 1 && !(d->flags & (DFR_F_FIRED | DFR_F_NOFIAT))) {
		d->flags |= DFR_F_CANCELLED | DFR_F_SWALLOW;
		dfr__fire_failure(d, DFR_ECANCELED, "cancelled");
	}
	dfr__unref(d);
}

/* For cancellers: d will be fired later by its owner, not by the cancel. */
void
dfr__cancel_later(struct dfr *d)
{
	d->flags |= DFR_F_NOFIAT;
}

/* ------------------------------------------------------------------------ */
/* Results                                                                   */

int
dfr_fired(const struct dfr *d)
{
	return (d->flags & DFR_F_FIRED) != 0;
}

int
dfr_failed(const struct dfr *d)
{
	return (d->flags & (DFR_F_FIRED | DFR_F_FAILED)) ==
	       (DFR_F_FIRED | DFR_F_FAILED);
}

int
dfr_paused(const struct dfr *d)
{
	return d->inner != NULL;
}

void *
dfr_value(const struct dfr *d)
{
	if ((d->flags & (DFR_F_FIRED | DFR_F_FAILED)) != DFR_F_FIRED)
		return NULL;
	return d->r.v.value;
}

const struct dfr_failure *
dfr_failure(const struct dfr *d)
{
	return dfr_failed(d) ? d->r.failure : NULL;
}

int
dfr_failure_code(const struct dfr *d)
{
	return dfr_failed(d) ? d->r.failure->code : 0;
}

/* Replace d's result with a value (an errback recovers this way). */
void
dfr_set_value(struct dfr *d, void *value, dfr_free_cb free_cb)
{
	if (d->flags &
	    DFR_F_WAITER) { /* misuse: only its owner fires a waiter */
		if (free_cb != NULL)
			free_cb(value);
		return;
	}
	if (!(d->flags & DFR_F_FIRED)) {
		dfr__fire_value(d, value, free_cb);
		return;
	}
	result_clear(d);
	d->r.v.value = value;
	d->r.v.free_cb = free_cb;
}

/* Replace d's result with failure f (NULL: out of memory). */
void
dfr_set_failure_obj(struct dfr *d, struct dfr_failure *f)
{
	if (d->flags & DFR_F_WAITER) {
		dfr_failure_free(f);
		return;
	}
	if (!(d->flags & DFR_F_FIRED)) {
		fire_failure_obj(d, f);
		return;
	}
	result_clear(d);
	d->r.failure = f != NULL ? f : &static_failures[0];
	d->flags |= DFR_F_FAILED;
}

/* Replace d's result with a new failure. */
void
dfr_set_failure(struct dfr *d, int code, const char *fmt, ...)
{
	struct dfr_failure *f;
	va_list ap;

	va_start(ap, fmt);
	f = failure_vmake(code, fmt, ap);
	va_end(ap);
	dfr_set_failure_obj(d, f);
}

/* Take d's value and its release function; d is left with NULL. */
void *
dfr__take_value(struct dfr *d, dfr_free_cb *free_cb)
{
	void *value;

	if ((d->flags & (DFR_F_FIRED | DFR_F_FAILED)) != DFR_F_FIRED) {
		*free_cb = NULL;
		return NULL;
	}
	value = d->r.v.value;
	*free_cb = d->r.v.free_cb;
	d->r.v.value = NULL;
	d->r.v.free_cb = NULL;
	return value;
}

/* Take d's value; the caller releases it. */
void *
dfr_take_value(struct dfr *d)
{
	dfr_free_cb fcb;

	return dfr__take_value(d, &fcb);
}

/* Take d's failure; d recovers with NULL. */
struct dfr_failure *
dfr_take_failure(struct dfr *d)
{
	struct dfr_failure *f;

	if (!dfr_failed(d))
		return NULL;
	f = d->r.failure;
	d->r.v.value = NULL;
	d->r.v.free_cb = NULL;
	d->flags &= (uint16_t) ~(DFR_F_FAILED | DFR_F_HANDLED);
	return f;
}

/* Mark d's current failure as handled: it is not reported at free. */
void
dfr__set_handled(struct dfr *d)
{
	if (dfr_failed(d))
		d->flags |= DFR_F_HANDLED;
}

/* Pause d's chain until inner fires; d then continues with inner's result. */
void
dfr_wait(struct dfr *d, struct dfr *inner)
{
	struct dfr *x;

	if (inner == NULL) {
		dfr_set_failure(d, EINVAL, "dfr_wait: no deferred to wait for");
		return;
	}
	for (x = inner; x != NULL; x = x->inner)
		if (x == d)
			break;
	if (x != NULL || inner->outer != NULL || d->inner != NULL) {
		/*
		 * Already paused: give up that wait too, or its result would
		 * later overwrite (and leak) the failure.
		 */
		x = d->inner;
		if (x != NULL) {
			x->outer = NULL;
			d->inner = NULL;
		}
		dfr__unref(inner);
		dfr_set_failure(
		    d, DFR_ECYCLE,
		    "dfr_wait: deferred chained to itself or already chained");
		if (x != NULL) {
			schedule(d);
			dfr__unref(d); /* the reference the first inner held */
		}
		return;
	}
	/*
	 * Ownership runs from the event source up: whoever will fire inner
	 * holds it, and inner holds d until it resumes d. So a caller may drop
	 * a paused deferred and its chain still goes on.
	 */
	result_clear(d);
	d->inner = inner;
	inner->outer = dfr__ref(d);
	if (inner->flags & DFR_F_FIRED)
		schedule(inner);
	dfr__unref(inner); /* the caller's reference, taken over */
}
