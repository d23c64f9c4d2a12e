/*
 * sem.c: DeferredSemaphore, and the code the lock shares (a lock is a
 * semaphore with one token, see lock.c).
 *
 * Waiters are unfired deferreds in an intrusive list (through their run-queue
 * link, unused while they wait), so cancelling any of them is O(1). Hand-off
 * fires waiters inside a batch: their callbacks run from the chain runner's
 * loop, never from inside release(), so a million waiters whose work
 * completes synchronously cost no stack.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dfr-int.h"

/* State of one run(): what to call, and whether it holds its token. */
struct sem_run {
	struct dfr_sem *s;
	dfr_run_cb fn;
	void *arg;
	uint64_t since_ns; /* when the token was taken */
	int started;
};

/* Account for held tokens changing (hold time as an integral, exact in sum). */
static void
sem_hold_tick(struct dfr_sem *s, uint64_t now)
{
	s->st.hold_total_ns +=
	    (uint64_t)(s->limit - s->tokens) * (now - s->tick_ns);
	s->tick_ns = now;
}

/* Take n tokens now. */
static void
sem_take(struct dfr_sem *s, unsigned int n, uint64_t now)
{
	sem_hold_tick(s, now);
	s->tokens -= n;
	s->st.held = s->limit - s->tokens;
	s->st.acquisitions++;
	s->hold_since_ns = now;
}

/* Create a semaphore with tokens >= 1. */
struct dfr_sem *
dfr_sem_new(unsigned int tokens)
{
	struct dfr_sem *s;

	if (tokens < 1) {
		errno = EINVAL;
		return NULL;
	}
	s = calloc(1, sizeof *s);
	if (s == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	TAILQ_INIT(&s->waiters);
	s->limit = tokens;
	s->tokens = tokens;
	s->tick_ns = dfr__now_ns();
	return s;
}

/* Free a semaphore; runs still in progress keep it until they release. */
void
dfr_sem_free(struct dfr_sem *s)
{
	if (s == NULL)
		return;
	dfr_sem_close(s);
	if (s->runs > 0)
		s->freed = 1;
	else
		free(s);
}

/* Drop a hold on s taken with s->runs++; the last one frees a freed s. */
static void
sem_unhold(struct dfr_sem *s)
{
	if (--s->runs == 0 && s->freed)
		free(s);
}

/* A run() state is done with s. */
static void
run_free(struct sem_run *r)
{
	struct dfr_sem *s = r->s;

	free(r);
	sem_unhold(s);
}

/* Unlink a waiter (for cancel, close, grant and free). */
static void
sem_unlink(struct dfr_sem *s, struct dfr *d)
{
	TAILQ_REMOVE(&s->waiters, d, link);
	d->flags &= (uint16_t)~DFR_F_WAITER;
	s->st.waiting--;
}

/*
 * Canceller of a waiting acquire: leave the list (the cancel then fails d).
 * dfr_cancel() holds a reference, so dropping the list's is safe here.
 */
static void sem_grant(struct dfr_sem *s, uint64_t now);

static void
sem_cancel_acquire(struct dfr *d, void *arg)
{
	struct dfr_sem *s = arg;

	if (!(d->flags & DFR_F_WAITER))
		return;
	sem_unlink(s, d);
	s->st.cancelled++;
	dfr__unref(d);
	/* A large request leaving the head may let the smaller ones behind it fit. */
	if ((d = TAILQ_FIRST(&s->waiters)) != NULL && d->r.w.n <= s->tokens)
		sem_grant(s, dfr__now_ns());
}

/* Canceller of a run() that waits for its token (run_step frees r later). */
static void
sem_cancel_run(struct dfr *d, void *arg)
{
	struct sem_run *r = arg;

	sem_cancel_acquire(d, r->s);
}

/*
 * Queue d as a waiter for n tokens. The list holds a reference until d is
 * fired: a caller may drop its own and still have its callbacks run.
 */
static void
sem_enqueue(struct dfr_sem *s, struct dfr *d, unsigned int n, uint64_t now)
{
	dfr__ref(d);
	d->r.w.since_ns = now;
	d->r.w.n = n;
	d->flags |= DFR_F_WAITER;
	TAILQ_INSERT_TAIL(&s->waiters, d, link);
	if (++s->st.waiting > s->st.max_waiting)
		s->st.max_waiting = s->st.waiting;
}

/* Acquire n tokens. */
struct dfr *
dfr__sem_acquire_many(struct dfr_sem *s, unsigned int n)
{
	struct dfr *d;
	uint64_t now;

	if (s->closed)
		return dfr_fail(DFR_ECLOSED, "closed");
	if (n < 1 || n > s->limit)
		return dfr_fail(EINVAL, "cannot acquire %u of %u tokens", n,
				s->limit);
	now = dfr__now_ns();
	if (TAILQ_EMPTY(&s->waiters) && s->tokens >= n) {
		d = dfr__fired(s, NULL);
		if (d != NULL)
			sem_take(s, n, now);
		return d;
	}
	d = dfr__new(sem_cancel_acquire, s);
	if (d != NULL)
		sem_enqueue(s, d, n, now);
	return d;
}

struct dfr *dfr_sem_acquire_many(struct dfr_sem *s, unsigned int n)
    __attribute__((alias("dfr__sem_acquire_many")));

/* Acquire one token. */
struct dfr *
dfr_sem_acquire(struct dfr_sem *s)
{
	return dfr__sem_acquire_many(s, 1);
}

/* Hand free tokens to the oldest waiters that fit, strictly in order. */
static void
sem_grant(struct dfr_sem *s, uint64_t now)
{
	struct dfr *d;
	uint64_t waited;

	dfr__batch_begin();
	while ((d = TAILQ_FIRST(&s->waiters)) != NULL &&
	       d->r.w.n <= s->tokens) {
		waited = now - d->r.w.since_ns;
		sem_unlink(s, d);
		sem_take(s, d->r.w.n, now);
		s->st.contended++;
		s->st.wait_total_ns += waited;
		if (waited > s->st.wait_max_ns)
			s->st.wait_max_ns = waited;
		dfr__fire_value(d, s, NULL); /* its chain runs at batch end */
		dfr__unref(d);		     /* the list's reference */
	}
	dfr__batch_end();
}

/* Release n tokens and hand them on. */
int
dfr__sem_release_many(struct dfr_sem *s, unsigned int n)
{
	uint64_t now;

	if (n == 0 || n > s->limit - s->tokens)
		return -EPERM;
	now = dfr__now_ns();
	sem_hold_tick(s, now);
	if (s->limit == 1 && now - s->hold_since_ns > s->st.hold_max_ns)
		s->st.hold_max_ns = now - s->hold_since_ns;
	s->tokens += n;
	s->st.held = s->limit - s->tokens;
	if (!TAILQ_EMPTY(&s->waiters))
		sem_grant(s, now);
	return 0;
}

int dfr_sem_release_many(struct dfr_sem *s, unsigned int n)
    __attribute__((alias("dfr__sem_release_many")));

/* Release one token. */
int
dfr_sem_release(struct dfr_sem *s)
{
	return dfr__sem_release_many(s, 1);
}

/* run(): fn's deferred fired; release, then the caller's callbacks go on. */
static void
run_done(struct dfr *d, void *arg)
{
	struct sem_run *r = arg;
	uint64_t held;

	d->flags &= (uint16_t)~DFR_F_SOFTFWD;
	if (!r->started) { /* cancelled or closed while waiting */
		run_free(r);
		return;
	}
	held = dfr__now_ns() - r->since_ns;
	if (held > r->s->st.hold_max_ns)
		r->s->st.hold_max_ns = held;
	dfr__sem_release_many(r->s, 1);
	run_free(r);
	dfr__unref(d); /* run_follow's reference; the runner still holds d */
}

/* Make d, whose chain holds run_step, follow fn's deferred work. */
static void
run_follow(struct dfr *d, struct dfr *work)
{
	dfr__ref(d); /* kept until run_done: the token depends on d's chain */
	if (work == NULL) {
		dfr_set_failure(d, errno != 0 ? errno : EINVAL,
				"run: the function returned no deferred");
		return;
	}
	/* A cancel asks fn's work to stop; it does not fail it by fiat. */
	d->flags |= DFR_F_SOFTFWD;
	dfr_wait(d, work);
}

/*
 * run(): the only pair in the chain ahead of the caller's. First call (the
 * waiter got its token): call fn and run this pair again when fn's deferred
 * fires. Second call, or a failure before the start: give the token back.
 */
static void
run_step(struct dfr *d, void *arg)
{
	struct sem_run *r = arg;

	if (r->started || dfr_failed(d)) {
		run_done(d, r);
		return;
	}
	if (d->flags & DFR_F_CANCELQ) {
		/* Cancelled once granted but before its turn came: no fn. */
		dfr__cancelq_clear(d);
		dfr__sem_release_many(r->s, 1);
		run_free(r);
		dfr_set_failure(d, DFR_ECANCELED, "cancelled");
		return;
	}
	r->started = 1;
	r->since_ns = dfr__now_ns();
	d->pos--; /* come back here once fn's deferred has fired */
	errno = 0;
	run_follow(d, r->fn(r->arg));
}

/* The work of a run() that had no memory of its own fired: give back. */
static void
run_release(struct dfr *d, void *arg)
{
	struct dfr_sem *s = arg;

	(void)d;
	dfr__sem_release_many(s, 1);
	sem_unhold(s);
}

/*
 * No memory for a run() whose fn has started work: the caller gets fn's own
 * deferred, which gives the token back when it fires, so the token is not
 * released while the work goes on. Only if even that pair does not fit (fn's
 * deferred had a full chain already) is it given back now.
 */
static struct dfr *
run_unfollowed(struct dfr_sem *s, struct dfr *work)
{
	s->runs++; /* run_release's hold, taken before it can run */
	if (dfr_add_both(work, run_release, s) < 0) {
		s->runs--;
		dfr__sem_release_many(s, 1);
	}
	return work;
}

/*
 * run() that cannot finish at once: fn's work is still going on (work set,
 * token taken), or the token must be waited for (work NULL).
 */
static struct dfr *sem_run_later(struct dfr_sem *s, dfr_run_cb fn, void *arg,
				 struct dfr *work, uint64_t now)
    __attribute__((noinline));
static struct dfr *
sem_run_later(struct dfr_sem *s, dfr_run_cb fn, void *arg, struct dfr *work,
	      uint64_t now)
{
	struct sem_run *r;
	struct dfr *d;
	int uncontended = work != NULL;

	r = malloc(sizeof *r);
	d = r != NULL ? dfr__new(uncontended ? NULL : sem_cancel_run, r) : NULL;
	if (d == NULL || dfr_add_both(d, run_step, r) < 0) {
		free(r);
		dfr__unref(d);
		if (work != NULL)
			return run_unfollowed(s, work);
		errno = ENOMEM;
		return NULL;
	}
	r->s = s;
	r->fn = fn;
	r->arg = arg;
	r->since_ns = now;
	r->started = uncontended;
	s->runs++;
	if (uncontended) {
		d->flags |=
		    DFR_F_FIRED; /* with the token, as a fired acquire */
		run_follow(d, work);
	} else {
		sem_enqueue(s, d, 1, now);
	}
	return d;
}

/* Run fn holding one token. */
struct dfr *
dfr__sem_run(struct dfr_sem *s, dfr_run_cb fn, void *arg)
{
	struct dfr *work;
	uint64_t now;

	if (s->closed)
		return dfr_fail(DFR_ECLOSED, "closed");
	now = dfr__now_ns();
	if (!TAILQ_EMPTY(&s->waiters) || s->tokens < 1)
		return sem_run_later(s, fn, arg, NULL, now);
	/*
	 * Fast path: take the token and call fn now. If its deferred has
	 * fired already, release at once and hand that deferred back:
	 * nothing to allocate.
	 */
	sem_take(s, 1, now);
	s->runs++; /* fn may free s: its memory stays until we are done */
	errno = 0;
	work = fn(arg);
	if (work != NULL && (work->flags & DFR_F_FIRED) &&
	    work->inner == NULL && work->outer == NULL &&
	    work->pos == work->ncbs && !(work->flags & DFR_F_QUEUED)) {
		dfr__sem_release_many(s, 1);
	} else if (work == NULL) {
		int code = errno != 0 ? errno : EINVAL;

		dfr__sem_release_many(s, 1);
		work = dfr_fail(code, "run: the function returned no deferred");
	} else if (work->outer != NULL) {
		/* Nothing can follow it (dfr_wait refuses): no token kept. */
		dfr__sem_release_many(s, 1);
		dfr__unref(work);
		work = dfr_fail(DFR_ECYCLE,
				"run: the function returned a deferred another "
				"chain already waits on");
	} else
		work = sem_run_later(s, fn, arg, work, now);
	sem_unhold(s);
	return work;
}

struct dfr *dfr_sem_run(struct dfr_sem *s, dfr_run_cb fn, void *arg)
    __attribute__((alias("dfr__sem_run")));

/* Tokens free now. */
unsigned int
dfr_sem_tokens(const struct dfr_sem *s)
{
	return s->tokens;
}

/* The number of tokens the semaphore was created with. */
unsigned int
dfr_sem_limit(const struct dfr_sem *s)
{
	return s->limit;
}

/* Waiting acquires (and runs). */
size_t
dfr_sem_waiting(const struct dfr_sem *s)
{
	return (size_t)s->st.waiting;
}

/* Fail every waiter with DFR_ECLOSED, and every later acquire. */
void
dfr_sem_close(struct dfr_sem *s)
{
	struct dfr *d;

	s->closed = 1;
	dfr__batch_begin();
	while ((d = TAILQ_FIRST(&s->waiters)) != NULL) {
		sem_unlink(s, d);
		dfr__fire_failure(d, DFR_ECLOSED, "closed");
		dfr__unref(d);
	}
	dfr__batch_end();
}

/* Copy the statistics, bringing the hold integral up to now. */
void
dfr_sem_stats(const struct dfr_sem *s, struct dfr_stats *st)
{
	*st = s->st;
	st->hold_total_ns +=
	    (uint64_t)(s->limit - s->tokens) * (dfr__now_ns() - s->tick_ns);
}
