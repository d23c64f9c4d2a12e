/*
 * test-lock.c: DeferredLock: acquire/release, FIFO hand-off, run(),
 * cancellation, close, statistics, a million synchronous waiters, and the
 * memory one waiting acquire costs.
 */
#include "config.h"

#include <malloc.h>

#include "unit.h"

/* Acquiring a free lock fires at once; a second acquire waits. */
static void
test_acquire_release(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *a, *b;

	(void)state;
	assert_false(dfr_lock_locked(l));
	a = dfr_lock_acquire(l);
	assert_true(dfr_fired(a));
	assert_ptr_equal(dfr_value(a), l);
	assert_true(dfr_lock_locked(l));
	b = dfr_lock_acquire(l);
	assert_false(dfr_fired(b));
	assert_int_equal(dfr_lock_waiting(l), 1);
	assert_int_equal(dfr_callback(b, NULL, NULL),
			 -EBUSY); /* only the lock fires it */
	assert_int_equal(dfr_errback(b, EIO, "no"), -EBUSY);
	assert_int_equal(dfr_errback_failure(b, dfr_failure_new(EIO, "no")),
			 -EBUSY);
	/* Nor does setting a result: the value is released, b still waits. */
	dfr_set_value(b, unit_int(1), unit_free_cb);
	assert_int_equal(unit_freed, 1);
	dfr_set_failure(b, EIO, "no");
	assert_false(dfr_fired(b));
	assert_int_equal(dfr_lock_waiting(l), 1);
	/* Release with a waiter hands over: still locked. */
	assert_int_equal(dfr_lock_release(l), 0);
	assert_true(dfr_fired(b));
	assert_true(dfr_lock_locked(l));
	assert_int_equal(dfr_lock_waiting(l), 0);
	/* The last release unlocks; one more is an error, also in release
	 * builds. */
	assert_int_equal(dfr_lock_release(l), 0);
	assert_false(dfr_lock_locked(l));
	assert_int_equal(dfr_lock_release(l), -EPERM);
	assert_false(dfr_lock_locked(l));
	dfr_unref(a);
	dfr_unref(b);
	dfr_lock_free(l);
}

/* Waiters are served strictly first in, first out. */
static void
test_fifo(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *ds[6];
	int i;

	(void)state;
	unit_lg.n = 0;
	for (i = 0; i < 6; i++) {
		ds[i] = dfr_lock_acquire(l);
		dfr_add_callback(ds[i], unit_log_cb, (void *)(intptr_t)i);
	}
	for (i = 0; i < 6; i++)
		assert_int_equal(dfr_lock_release(l), 0);
	assert_int_equal(unit_lg.n, 6);
	for (i = 0; i < 6; i++) {
		assert_int_equal(unit_lg.v[i], i);
		dfr_unref(ds[i]);
	}
	assert_false(dfr_lock_locked(l));
	dfr_lock_free(l);
}

/* Cancelling a waiting acquire removes it; cancelling a fired one does nothing.
 */
static void
test_cancel_acquire(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *a = dfr_lock_acquire(l), *b = dfr_lock_acquire(l),
		   *c = dfr_lock_acquire(l);
	struct dfr_stats st;

	(void)state;
	unit_lg.n = 0;
	dfr_add_callbacks(b, unit_log_cb, unit_log_eb, (void *)2);
	dfr_cancel(b);
	assert_int_equal(unit_lg.n, 1);
	assert_int_equal(unit_lg.v[0], -2);
	assert_int_equal(dfr_failure_code(b), DFR_ECANCELED);
	assert_int_equal(dfr_lock_waiting(l), 1);
	assert_true(dfr_lock_locked(l));
	dfr_cancel(a); /* fired: nothing happens */
	assert_false(dfr_failed(a));
	assert_true(dfr_lock_locked(l));
	/* The release skips the cancelled waiter. */
	assert_int_equal(dfr_lock_release(l), 0);
	assert_true(dfr_fired(c));
	assert_false(dfr_failed(c));
	dfr_lock_stats(l, &st);
	assert_int_equal(st.cancelled, 1);
	assert_int_equal(st.acquisitions, 2);
	assert_int_equal(st.contended, 1);
	assert_int_equal(st.max_waiting, 2);
	assert_int_equal(st.held, 1);
	assert_int_equal(dfr_lock_release(l), 0);
	dfr_failure_free(dfr_take_failure(b));
	dfr_unref(a);
	dfr_unref(b);
	dfr_unref(c);
	/* A waiting acquire dropped by its caller stays queued; its callbacks
	 * run. */
	unit_lg.n = 0;
	a = dfr_lock_acquire(l);
	b = dfr_lock_acquire(l);
	dfr_add_callback(b, unit_log_cb, (void *)3);
	dfr_unref(b);
	assert_int_equal(dfr_lock_waiting(l), 1);
	assert_int_equal(dfr_lock_release(l), 0);
	assert_int_equal(unit_lg.n, 1);
	assert_int_equal(unit_lg.v[0], 3);
	assert_true(dfr_lock_locked(l));
	assert_int_equal(dfr_lock_release(l), 0);
	assert_false(dfr_lock_locked(l));
	dfr_unref(a);
	dfr_lock_free(l);
	assert_int_equal(unit_unhandled, 0);
}

/* A waiter whose callback releases and re-acquires goes to the back. */
static struct dfr_lock *lk;
static struct dfr *again;

static void
release_reacquire(struct dfr *d, void *arg)
{
	unit_log_add(&unit_lg, (int)(intptr_t)arg);
	assert_int_equal(dfr_lock_release(lk), 0);
	if (again == NULL) {
		again = dfr_lock_acquire(lk);
		dfr_add_callback(again, unit_log_cb, (void *)9);
	}
	(void)d;
}

static void
test_release_reacquire(void **state)
{
	struct dfr *a, *b, *c;

	(void)state;
	unit_lg.n = 0;
	again = NULL;
	lk = dfr_lock_new();
	a = dfr_lock_acquire(lk);
	b = dfr_lock_acquire(lk);
	c = dfr_lock_acquire(lk);
	dfr_add_callback(b, release_reacquire, (void *)1);
	dfr_add_callback(c, unit_log_cb, (void *)2);
	assert_int_equal(dfr_lock_release(lk),
			 0); /* to b, which releases to c */
	assert_int_equal(unit_lg.n, 2);
	assert_int_equal(unit_lg.v[0], 1);
	assert_int_equal(unit_lg.v[1], 2);
	assert_false(dfr_fired(again)); /* behind c: no queue jumping */
	assert_int_equal(dfr_lock_release(lk), 0);
	assert_int_equal(unit_lg.n, 3);
	assert_int_equal(unit_lg.v[2], 9);
	assert_int_equal(dfr_lock_release(lk), 0);
	assert_false(dfr_lock_locked(lk));
	dfr_unref(a);
	dfr_unref(b);
	dfr_unref(c);
	dfr_unref(again);
	dfr_lock_free(lk);
}

/* A holder's callback cancels the next waiter. */
static void
cancel_next(struct dfr *d, void *arg)
{
	dfr_cancel(arg);
	assert_int_equal(dfr_lock_release(lk), 0);
	(void)d;
}

static void
test_cancel_from_callback(void **state)
{
	struct dfr *a, *b, *c;

	(void)state;
	lk = dfr_lock_new();
	a = dfr_lock_acquire(lk);
	b = dfr_lock_acquire(lk);
	c = dfr_lock_acquire(lk);
	dfr_add_callback(a, cancel_next, b); /* runs now: a fired */
	assert_int_equal(dfr_failure_code(b), DFR_ECANCELED);
	assert_true(dfr_fired(c));
	assert_false(dfr_failed(c));
	assert_true(dfr_lock_locked(lk));
	assert_int_equal(dfr_lock_release(lk), 0);
	dfr_failure_free(dfr_take_failure(b));
	dfr_unref(a);
	dfr_unref(b);
	dfr_unref(c);
	dfr_lock_free(lk);
}

/* run(f): f runs at once when free; the lock is held until f's result fires. */
static struct dfr *work;
static int calls;

static struct dfr *
pending_work(void *arg)
{
	calls++;
	(void)arg;
	return dfr_ref(work);
}

static struct dfr *
done_work(void *arg)
{
	calls++;
	return dfr_succeed(arg, NULL);
}

static struct dfr *
failed_work(void *arg)
{
	calls++;
	(void)arg;
	return dfr_fail(EIO, "work failed");
}

static struct dfr *
null_work(void *arg)
{
	calls++;
	(void)arg;
	errno = EMFILE;
	return NULL;
}

static void
test_run(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r, *r2;
	int x = 1, y = 2;

	(void)state;
	calls = 0;
	/* f's result already fired: the lock is free again at once. */
	r = dfr_lock_run(l, done_work, &x);
	assert_int_equal(calls, 1);
	assert_ptr_equal(dfr_value(r), &x);
	assert_false(dfr_lock_locked(l));
	dfr_unref(r);

	/* f's result pending: held until it fires; run's deferred carries it.
	 */
	work = dfr_new(NULL, NULL);
	r = dfr_lock_run(l, pending_work, NULL);
	assert_int_equal(calls, 2);
	assert_true(dfr_lock_locked(l));
	assert_false(dfr_fired(r) && !dfr_paused(r));
	r2 = dfr_lock_run(l, done_work, &y); /* waits */
	assert_int_equal(calls, 2);
	assert_int_equal(dfr_lock_waiting(l), 1);
	dfr_callback(work, &x, NULL);
	assert_ptr_equal(dfr_value(r), &x);
	assert_int_equal(calls, 3); /* then the next run went */
	assert_ptr_equal(dfr_value(r2), &y);
	assert_false(dfr_lock_locked(l));
	dfr_unref(work);
	dfr_unref(r);
	dfr_unref(r2);
	dfr_lock_free(l);
}

/* The lock that free_lock_work frees while it runs under it. */
static struct dfr_lock *free_lock;

/* Work that frees its own lock, then returns arg's deferred or a fired one. */
static struct dfr *
free_lock_work(void *arg)
{
	calls++;
	dfr_lock_free(free_lock);
	return arg != NULL ? dfr_ref(arg) : dfr_succeed(&calls, NULL);
}

/*
 * run(f) where f frees the lock: the run still completes and the lock's
 * memory goes after it, whether the lock was free (f called inside run())
 * or handed over (f called from the release).
 */
static void
test_run_frees_lock(void **state)
{
	struct dfr *r, *w, *a;

	(void)state;
	calls = 0;
	free_lock = dfr_lock_new();
	r = dfr_lock_run(free_lock, free_lock_work, NULL);
	assert_int_equal(calls, 1);
	assert_ptr_equal(dfr_value(r), &calls);
	dfr_unref(r);

	free_lock = dfr_lock_new();
	w = dfr_new(NULL, NULL);
	r = dfr_lock_run(free_lock, free_lock_work, w);
	assert_int_equal(calls, 2);
	assert_false(dfr_fired(r) && !dfr_paused(r));
	dfr_callback(w, &calls, NULL);
	assert_ptr_equal(dfr_value(r), &calls);
	dfr_unref(w);
	dfr_unref(r);

	free_lock = dfr_lock_new();
	a = dfr_lock_acquire(free_lock);
	r = dfr_lock_run(free_lock, free_lock_work, NULL);
	assert_int_equal(calls, 2);
	assert_int_equal(dfr_lock_release(free_lock), 0);
	assert_int_equal(calls, 3);
	assert_ptr_equal(dfr_value(r), &calls);
	dfr_unref(a);
	dfr_unref(r);
}

/* run(f) where f fails, synchronously or later: released exactly once. */
static void
test_run_failure(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r, *a;
	struct dfr_stats st;

	(void)state;
	r = dfr_lock_run(l, failed_work, NULL);
	assert_int_equal(dfr_failure_code(r), EIO);
	assert_false(dfr_lock_locked(l));
	assert_int_equal(dfr_lock_release(l), -EPERM); /* not released twice */
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);

	r = dfr_lock_run(l, null_work, NULL);
	assert_int_equal(dfr_failure_code(r), EMFILE);
	assert_false(dfr_lock_locked(l));
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);

	a = dfr_lock_acquire(l);
	work = dfr_new(NULL, NULL);
	r = dfr_lock_run(l, pending_work, NULL); /* waits for a */
	assert_int_equal(dfr_lock_release(l), 0);
	assert_true(dfr_lock_locked(l));
	dfr_errback(work, ENOSPC, "later");
	assert_int_equal(dfr_failure_code(r), ENOSPC);
	assert_false(dfr_lock_locked(l));
	assert_int_equal(dfr_lock_release(l), -EPERM);
	dfr_lock_stats(l, &st);
	assert_int_equal(st.acquisitions, 4);
	assert_int_equal(st.held, 0);
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);
	dfr_unref(a);

	/* A run that waited for the lock: fn's NULL fails it with errno too. */
	a = dfr_lock_acquire(l);
	r = dfr_lock_run(l, null_work, NULL);
	assert_int_equal(dfr_lock_release(l), 0);
	assert_int_equal(dfr_failure_code(r), EMFILE);
	assert_false(dfr_lock_locked(l));
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);
	dfr_unref(a);
	dfr_unref(work);
	dfr_lock_free(l);
	assert_int_equal(unit_unhandled, 0);
}

/* Cancelling a run that waits for the lock: f never runs. Dropping it does not
 * cancel. */
static void
test_run_cancel_waiting(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *a = dfr_lock_acquire(l), *r;

	(void)state;
	calls = 0;
	r = dfr_lock_run(l, done_work, NULL);
	dfr_cancel(r);
	assert_int_equal(dfr_failure_code(r), DFR_ECANCELED);
	assert_int_equal(dfr_lock_waiting(l), 0);
	assert_int_equal(dfr_lock_release(l), 0);
	assert_int_equal(calls, 0);
	assert_false(dfr_lock_locked(l));
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);
	dfr_unref(a);
	/* Dropped by its caller while waiting: it still runs in its turn. */
	a = dfr_lock_acquire(l);
	dfr_unref(dfr_lock_run(l, done_work, NULL));
	assert_int_equal(dfr_lock_waiting(l), 1);
	assert_int_equal(dfr_lock_release(l), 0);
	assert_int_equal(calls, 1);
	assert_false(dfr_lock_locked(l));
	dfr_unref(a);
	dfr_lock_free(l);
}

/*
 * Differ from Twisted: cancelling run() while f's work is pending never lets
 * the next waiter in before that work has fired. The cancel reaches the
 * work's canceller; the caller's deferred fires with the work's result.
 */
static int work_cancels;

static void
work_canceller(struct dfr *d, void *arg)
{
	work_cancels++; /* asks the work to stop; it stops later */
	(void)d;
	(void)arg;
}

static void
test_run_cancel_pending(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r, *next;
	int x = 5;

	(void)state;
	/* Work with a canceller that stops it later. */
	work_cancels = 0;
	work = dfr_new(work_canceller, NULL);
	r = dfr_lock_run(l, pending_work, NULL);
	next = dfr_lock_acquire(l);
	dfr_cancel(r);
	assert_int_equal(work_cancels, 1);
	assert_true(dfr_paused(r));    /* no result yet */
	assert_false(dfr_fired(next)); /* the work still runs: no entry */
	assert_true(dfr_lock_locked(l));
	dfr_errback(work, DFR_ECANCELED, "stopped");
	assert_int_equal(dfr_failure_code(r), DFR_ECANCELED);
	assert_true(dfr_fired(next));
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);
	dfr_unref(work);
	assert_int_equal(dfr_lock_release(l), 0);
	dfr_unref(next);

	/* Work without a canceller: it finishes, and its result wins. */
	work = dfr_new(NULL, NULL);
	r = dfr_lock_run(l, pending_work, NULL);
	next = dfr_lock_acquire(l);
	dfr_cancel(r);
	dfr_cancel(r);
	assert_false(dfr_fired(work));
	assert_false(dfr_fired(next));
	dfr_unref(r); /* the caller even drops it: the lock still waits */
	assert_true(dfr_lock_locked(l));
	assert_int_equal(dfr_callback(work, &x, NULL), 0);
	assert_true(dfr_fired(next));
	assert_int_equal(dfr_lock_release(l), 0);
	assert_false(dfr_lock_locked(l));
	dfr_unref(next);
	dfr_unref(work);
	dfr_lock_free(l);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * The usual canceller of a timer-driven call stops the timer and drops the
 * reference the timer held, as it would under dfr_cancel(). Under a run() it
 * then leaves the work's deferred held by nobody: nothing can fire it any
 * more, so the cancel fails it with DFR_ECANCELED (as Twisted does), its own
 * callbacks run, and the run fails with DFR_ECANCELED, not with the EPIPE of
 * a deferred freed unfired.
 */
static struct dfr *dropped_timer_ref;

static void
stop_and_drop(struct dfr *d, void *arg)
{
	(void)arg;
	work_cancels++;
	assert_ptr_equal(d, dropped_timer_ref);
	dropped_timer_ref = NULL;
	dfr_unref(d); /* the timer is gone: so is its reference */
}

static struct dfr *
timer_work(void *arg)
{
	struct dfr *d = dfr_new(stop_and_drop, NULL);

	calls++;
	dropped_timer_ref = d; /* the "timer's" reference */
	dfr_add_both(d, unit_log_cb, arg);
	return dfr_ref(d);
}

static void
test_run_cancel_work_dropped(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r, *next;

	(void)state;
	unit_lg.n = 0;
	calls = 0;
	work_cancels = 0;
	r = dfr_lock_run(l, timer_work, (void *)(intptr_t)1);
	assert_int_equal(calls, 1);
	dfr_add_both(r, unit_log_cb, (void *)(intptr_t)2);
	next = dfr_lock_acquire(l);
	assert_false(dfr_fired(next));
	dfr_cancel(r);
	assert_int_equal(work_cancels, 1);
	assert_null(dropped_timer_ref);
	/* The work's own callback saw the cancel, then the run's. */
	assert_int_equal(unit_lg.n, 2);
	assert_int_equal(unit_lg.v[0], 1);
	assert_int_equal(unit_lg.v[1], 2);
	assert_int_equal(dfr_failure_code(r), DFR_ECANCELED);
	/* The work is over: the next one enters. */
	assert_true(dfr_fired(next));
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);
	assert_int_equal(dfr_lock_release(l), 0);
	assert_false(dfr_lock_locked(l));
	dfr_unref(next);
	dfr_lock_free(l);
	/* The work's DFR_ECANCELED was left in place by unit_log_cb. */
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A canceller runs at most once in its deferred's life: cancelling a run()
 * asked the work's canceller already, so a later cancel of the work itself
 * does not call it again; it fails the work by fiat, and the run with it.
 */
static void
test_run_cancel_then_cancel_work(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r;

	(void)state;
	work_cancels = 0;
	work = dfr_new(work_canceller, NULL);
	r = dfr_lock_run(l, pending_work, NULL);
	dfr_cancel(r);
	assert_int_equal(work_cancels, 1);
	assert_false(dfr_fired(work));
	dfr_cancel(work);
	assert_int_equal(work_cancels, 1);
	assert_int_equal(dfr_failure_code(r), DFR_ECANCELED);
	assert_false(dfr_lock_locked(l));
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);
	dfr_unref(work);
	dfr_lock_free(l);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A run that ends hands the lock on: the next run's fn is called after the
 * ended run's own callbacks, and before a chain those callbacks fire (as a
 * gather's), so cancelling the next run from such a chain comes too late,
 * while cancelling it from the ended run's callback stops its fn.
 */
static struct dfr *ho_other, *ho_next;
static int ho_cancel;

static struct dfr *
logged_work(void *arg)
{
	unit_log_add(&unit_lg, (int)(intptr_t)arg);
	return dfr_ref(work);
}

static void
ho_first_cb(struct dfr *d, void *arg)
{
	(void)d;
	(void)arg;
	unit_log_add(&unit_lg, 2);
	if (ho_cancel)
		dfr_cancel(ho_next);
	assert_int_equal(dfr_callback(ho_other, NULL, NULL), 0);
}

static void
ho_other_cb(struct dfr *d, void *arg)
{
	(void)d;
	(void)arg;
	unit_log_add(&unit_lg, 4);
}

static void
test_run_handoff_order(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *first, *first_work;

	(void)state;
	for (ho_cancel = 0; ho_cancel <= 1; ho_cancel++) {
		unit_lg.n = 0;
		ho_other = dfr_new(NULL, NULL);
		dfr_add_callback(ho_other, ho_other_cb, NULL);
		work = first_work = dfr_new(NULL, NULL);
		first = dfr_lock_run(l, logged_work, (void *)(intptr_t)1);
		dfr_add_callback(first, ho_first_cb, NULL);
		work = dfr_succeed(NULL, NULL);
		ho_next = dfr_lock_run(l, logged_work, (void *)(intptr_t)3);
		assert_int_equal(dfr_callback(first_work, NULL, NULL), 0);
		if (!ho_cancel) {
			/* fn 1, first's callback, fn 3, the other chain. */
			assert_int_equal(unit_lg.n, 4);
			assert_int_equal(unit_lg.v[0], 1);
			assert_int_equal(unit_lg.v[1], 2);
			assert_int_equal(unit_lg.v[2], 3);
			assert_int_equal(unit_lg.v[3], 4);
			assert_false(dfr_failed(ho_next));
		} else {
			/* Cancelled from first's callback: fn 3 never runs. */
			assert_int_equal(unit_lg.n, 3);
			assert_int_equal(unit_lg.v[0], 1);
			assert_int_equal(unit_lg.v[1], 2);
			assert_int_equal(unit_lg.v[2], 4);
			assert_int_equal(dfr_failure_code(ho_next),
					 DFR_ECANCELED);
			dfr_failure_free(dfr_take_failure(ho_next));
		}
		assert_false(dfr_lock_locked(l));
		dfr_unref(work);
		dfr_unref(first_work);
		dfr_unref(first);
		dfr_unref(ho_next);
		dfr_unref(ho_other);
	}
	dfr_lock_free(l);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A run handed the lock from inside a callback starts only once that callback
 * returns; cancelled in between (release, then cancel everything), its fn
 * never runs and the lock goes on to the next waiter.
 */
static struct dfr_lock *rc_lock;
static struct dfr *rc_run;

static struct dfr *further;

static void
wait_further(struct dfr *d, void *arg)
{
	dfr_wait(d, dfr_ref(further));
	(void)arg;
}

static void
recover_wait(struct dfr *d, void *arg)
{
	dfr_failure_free(dfr_take_failure(d));
	wait_further(d, arg);
}

static void
release_then_cancel(struct dfr *d, void *arg)
{
	assert_int_equal(dfr_lock_release(rc_lock), 0);
	dfr_cancel(rc_run);
	(void)d;
	(void)arg;
}

static void
test_run_cancel_granted(void **state)
{
	struct dfr *h, *x, *next;

	(void)state;
	calls = 0;
	unit_lg.n = 0;
	rc_lock = dfr_lock_new();
	h = dfr_lock_acquire(rc_lock);
	rc_run = dfr_lock_run(rc_lock, done_work, NULL);
	dfr_add_callbacks(rc_run, unit_log_cb, unit_log_eb, (void *)1);
	next = dfr_lock_acquire(rc_lock);
	x = dfr_new(NULL, NULL);
	dfr_add_callback(x, release_then_cancel, NULL);
	assert_int_equal(dfr_callback(x, NULL, NULL), 0);
	assert_int_equal(calls, 0);
	assert_int_equal(dfr_failure_code(rc_run), DFR_ECANCELED);
	assert_int_equal(unit_lg.n, 1);
	assert_int_equal(unit_lg.v[0], -1);
	assert_true(dfr_fired(next)); /* the lock went on */
	assert_int_equal(dfr_lock_release(rc_lock), 0);
	assert_false(dfr_lock_locked(rc_lock));
	dfr_failure_free(dfr_take_failure(rc_run));
	dfr_unref(rc_run);
	dfr_unref(next);
	dfr_unref(x);
	dfr_unref(h);

	/* That cancel is spent: an errback of the run that waits is not. */
	work_cancels = 0;
	h = dfr_lock_acquire(rc_lock);
	rc_run = dfr_lock_run(rc_lock, done_work, NULL);
	further = dfr_new(work_canceller, NULL);
	dfr_add_errback(rc_run, recover_wait, NULL);
	x = dfr_new(NULL, NULL);
	dfr_add_callback(x, release_then_cancel, NULL);
	assert_int_equal(dfr_callback(x, NULL, NULL), 0);
	assert_int_equal(calls, 0);
	assert_true(dfr_paused(rc_run));
	assert_int_equal(work_cancels, 0);
	assert_int_equal(dfr_callback(further, NULL, NULL), 0);
	assert_false(dfr_failed(rc_run));
	dfr_unref(further);
	dfr_unref(rc_run);
	dfr_unref(x);
	dfr_unref(h);
	dfr_lock_free(rc_lock);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * The same for a run whose work fired inside a callback but whose chain,
 * queued, will pause on further work: the cancel made in between still only
 * asks that further work to stop, and the lock waits for it.
 */
static struct dfr *
chained_work(void *arg)
{
	work = dfr_new(NULL, NULL);
	dfr_add_callback(work, wait_further, NULL);
	(void)arg;
	return dfr_ref(work);
}

static void
fire_work_then_cancel(struct dfr *d, void *arg)
{
	assert_int_equal(dfr_callback(work, NULL, NULL), 0);
	dfr_cancel(rc_run);
	(void)d;
	(void)arg;
}

static void
test_run_cancel_queued_work(void **state)
{
	struct dfr *x;
	int v = 3;

	(void)state;
	work_cancels = 0;
	rc_lock = dfr_lock_new();
	further = dfr_new(work_canceller, NULL);
	rc_run = dfr_lock_run(rc_lock, chained_work, NULL);
	assert_true(dfr_paused(rc_run));
	x = dfr_new(NULL, NULL);
	dfr_add_callback(x, fire_work_then_cancel, NULL);
	assert_int_equal(dfr_callback(x, NULL, NULL), 0);
	assert_int_equal(work_cancels, 1); /* asked to stop */
	assert_false(dfr_fired(further));  /* not failed by fiat */
	assert_true(dfr_paused(rc_run));
	assert_true(dfr_lock_locked(rc_lock));
	assert_int_equal(dfr_callback(further, &v, NULL), 0);
	assert_ptr_equal(dfr_value(rc_run), &v);
	assert_false(dfr_lock_locked(rc_lock));
	dfr_unref(rc_run);
	dfr_unref(further);
	dfr_unref(work);
	dfr_unref(x);
	dfr_lock_free(rc_lock);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * Work that is itself a wait (a get, an acquire, a run on another lock):
 * cancelling the run cancels that wait outright, since nothing else would
 * ever fire it; the run fails with DFR_ECANCELED and the lock is released.
 */
static struct dfr_queue *work_q;
static struct dfr_lock *work_l;
static struct dfr *work_get;

static struct dfr *
get_work(void *arg)
{
	work_get = dfr_queue_get(work_q);
	return arg != NULL ? dfr_ref(work_get) : work_get;
}

static struct dfr *
run_work(void *arg)
{
	(void)arg;
	return dfr_lock_run(work_l, done_work, NULL);
}

static void
test_run_cancel_waiting_work(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r, *h;
	struct dfr_stats st;
	int keep;

	(void)state;
	work_q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	for (keep = 0; keep < 2; keep++) {
		/* The get is the library's alone, then also the caller's. */
		r = dfr_lock_run(l, get_work, keep ? &keep : NULL);
		assert_true(dfr_paused(r));
		assert_int_equal(dfr_queue_waiting(work_q), 1);
		dfr_cancel(r);
		assert_false(dfr_paused(r));
		assert_int_equal(dfr_failure_code(r), DFR_ECANCELED);
		assert_false(dfr_lock_locked(l));
		assert_int_equal(dfr_queue_waiting(work_q), 0);
		if (keep) {
			assert_true(dfr_fired(work_get));
			dfr_unref(work_get);
		}
		dfr_failure_free(dfr_take_failure(r));
		dfr_unref(r);
	}
	dfr_queue_stats(work_q, &st);
	assert_int_equal(st.cancelled, 2);
	/* A later put is stored, not lost to a cancelled get. */
	assert_int_equal(dfr_queue_put(work_q, unit_int(1), unit_free_cb), 0);
	assert_int_equal(dfr_queue_size(work_q), 1);
	dfr_queue_free(work_q);
	assert_int_equal(unit_freed, 1);

	/* A run on another lock that waits for it: its state goes too. */
	calls = 0;
	work_l = dfr_lock_new();
	h = dfr_lock_acquire(work_l);
	r = dfr_lock_run(l, run_work, NULL);
	assert_int_equal(dfr_lock_waiting(work_l), 1);
	dfr_cancel(r);
	assert_int_equal(dfr_failure_code(r), DFR_ECANCELED);
	assert_false(dfr_lock_locked(l));
	assert_int_equal(dfr_lock_waiting(work_l), 0);
	assert_int_equal(dfr_lock_release(work_l), 0);
	assert_int_equal(calls, 0);
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);
	dfr_unref(h);
	dfr_lock_free(work_l);
	dfr_lock_free(l);
	assert_int_equal(unit_unhandled, 0);
}

/* Close fails every waiter and every later acquire; the holder may release. */
static void
test_close(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *a = dfr_lock_acquire(l), *b = dfr_lock_acquire(l), *r, *c;

	(void)state;
	calls = 0;
	r = dfr_lock_run(l, done_work, NULL);
	dfr_lock_close(l);
	dfr_lock_close(l); /* idempotent */
	assert_int_equal(dfr_failure_code(b), DFR_ECLOSED);
	assert_int_equal(dfr_failure_code(r), DFR_ECLOSED);
	assert_int_equal(calls, 0);
	c = dfr_lock_acquire(l);
	assert_int_equal(dfr_failure_code(c), DFR_ECLOSED);
	dfr_failure_free(dfr_take_failure(c));
	dfr_unref(c);
	c = dfr_lock_run(l, done_work, NULL);
	assert_int_equal(dfr_failure_code(c), DFR_ECLOSED);
	assert_int_equal(dfr_lock_release(l), 0);
	assert_int_equal(dfr_lock_waiting(l), 0);
	dfr_failure_free(dfr_take_failure(b));
	dfr_failure_free(dfr_take_failure(r));
	dfr_failure_free(dfr_take_failure(c));
	dfr_unref(a);
	dfr_unref(b);
	dfr_unref(r);
	dfr_unref(c);
	/* Free with waiters fails them first. */
	dfr_lock_free(l);
	l = dfr_lock_new();
	a = dfr_lock_acquire(l);
	b = dfr_lock_acquire(l);
	dfr_lock_free(l);
	assert_int_equal(dfr_failure_code(b), DFR_ECLOSED);
	dfr_failure_free(dfr_take_failure(b));
	dfr_unref(a);
	dfr_unref(b);
	/* Free while a run's work is pending: released safely when it fires. */
	l = dfr_lock_new();
	work = dfr_new(NULL, NULL);
	r = dfr_lock_run(l, pending_work, NULL);
	dfr_lock_free(l);
	dfr_callback(work, NULL, NULL);
	assert_true(dfr_fired(r) && !dfr_paused(r));
	dfr_unref(r);
	dfr_unref(work);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * With many waiters handed the lock in turn (the trampoline at work), one
 * waiter's callback closes or frees the lock: every later waiter fails
 * closed, none is lost or run twice, and the counts agree.
 */
static struct dfr_lock *turn_lock;
static size_t turn_ok, turn_closed;

static void
take_turn(struct dfr *d, void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;

	if (dfr_failed(d)) {
		turn_closed++;
		dfr_failure_free(dfr_take_failure(d));
		return;
	}
	turn_ok++;
	if (i == 500)
		dfr_lock_close(turn_lock);
	if (i == 700) {
		dfr_lock_free(turn_lock); /* still held: nothing to release */
		turn_lock = NULL;
		return;
	}
	assert_int_equal(dfr_lock_release(turn_lock), 0);
}

static void
test_close_in_turn(void **state)
{
	struct dfr_stats st;
	struct dfr *d;
	size_t i, n = 1000;
	int freeing;

	(void)state;
	for (freeing = 0; freeing < 2; freeing++) {
		turn_ok = turn_closed = 0;
		turn_lock = dfr_lock_new();
		dfr_unref(dfr_lock_acquire(turn_lock));
		for (i = 0; i < n; i++) {
			d = dfr_lock_acquire(turn_lock);
			/* The one that closes, or the one that frees. */
			dfr_add_both(
			    d, take_turn,
			    (void *)(uintptr_t)(i == 500 && freeing ? 700 : i));
			dfr_unref(d);
		}
		assert_int_equal(dfr_lock_release(turn_lock), 0);
		assert_int_equal(turn_ok, 501);
		assert_int_equal(turn_closed, n - 501);
		if (freeing) {
			assert_null(turn_lock);
			continue;
		}
		dfr_lock_stats(turn_lock, &st);
		assert_int_equal(st.waiting, 0);
		assert_int_equal(st.held, 0);
		assert_int_equal(st.acquisitions, 502);
		assert_int_equal(st.contended, 501);
		assert_false(dfr_lock_locked(turn_lock));
		dfr_lock_free(turn_lock);
	}
	assert_int_equal(unit_unhandled, 0);
}

/*
 * Closed from outside any callback, the waiters fail only once all of them
 * have left the list: the first one's errback may free the lock (as a last
 * user does), and the rest still fail closed.
 */
static struct dfr_lock *close_lock;
static int close_seen;

static void
free_on_close(struct dfr *d, void *arg)
{
	(void)arg;
	assert_int_equal(dfr_failure_code(d), DFR_ECLOSED);
	dfr_failure_free(dfr_take_failure(d));
	close_seen++;
	if (close_lock != NULL) {
		assert_int_equal(dfr_lock_waiting(close_lock), 0);
		dfr_lock_free(close_lock);
		close_lock = NULL;
	}
}

static void
test_close_waiter_frees(void **state)
{
	struct dfr *a, *ds[3];
	int i;

	(void)state;
	close_seen = 0;
	close_lock = dfr_lock_new();
	a = dfr_lock_acquire(close_lock);
	for (i = 0; i < 3; i++) {
		ds[i] = dfr_lock_acquire(close_lock);
		dfr_add_errback(ds[i], free_on_close, NULL);
	}
	dfr_lock_close(close_lock);
	assert_null(close_lock);
	assert_int_equal(close_seen, 3);
	for (i = 0; i < 3; i++)
		dfr_unref(ds[i]);
	dfr_unref(a);
	assert_int_equal(unit_unhandled, 0);
}

/* Statistics: counts, and wait and hold times on CLOCK_MONOTONIC. */
static void
test_stats(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *a = dfr_lock_acquire(l), *b = dfr_lock_acquire(l);
	struct dfr_stats st;
	struct timespec ts = {0, 2000000};

	(void)state;
	nanosleep(&ts, NULL); /* measured: this is what the stats must show */
	dfr_lock_stats(l, &st);
	assert_int_equal(st.waiting, 1);
	assert_int_equal(st.held, 1);
	assert_true(st.hold_total_ns >= 2000000);
	dfr_lock_release(l);
	dfr_lock_release(l);
	dfr_lock_stats(l, &st);
	assert_int_equal(st.waiting, 0);
	assert_int_equal(st.max_waiting, 1);
	assert_int_equal(st.acquisitions, 2);
	assert_int_equal(st.contended, 1);
	assert_int_equal(st.held, 0);
	assert_true(st.wait_total_ns >= 2000000);
	assert_true(st.wait_max_ns >= 2000000);
	assert_true(st.hold_max_ns >= 2000000);
	assert_true(st.hold_total_ns >= st.hold_max_ns);
	dfr_unref(a);
	dfr_unref(b);

	/* A waiter that gives up counts as cancelled, not in the waits. */
	a = dfr_lock_acquire(l);
	b = dfr_lock_acquire(l);
	nanosleep(&ts, NULL);
	dfr_cancel(b);
	dfr_failure_free(dfr_take_failure(b));
	dfr_lock_release(l);
	dfr_lock_stats(l, &st);
	assert_int_equal(st.cancelled, 1);
	assert_int_equal(st.acquisitions, 3);
	assert_int_equal(st.contended, 1);
	/* The one contended acquire's wait is all there is. */
	assert_int_equal(st.wait_total_ns, st.wait_max_ns);
	dfr_unref(a);
	dfr_unref(b);
	dfr_lock_free(l);
}

/*
 * Differ from Twisted (which fails at ~110): a million waiters whose
 * critical sections complete synchronously all run, in order, with a
 * 256 KiB stack.
 */
struct many {
	size_t n;
	size_t next; /* order check */
	size_t bad;  /* out of order */
	int use_run;
	struct dfr_lock *l;
};

static void
sync_section(struct dfr *d, void *arg)
{
	struct many *m = arg;

	unit_stack_note();
	m->next++;
	dfr_lock_release(m->l);
	dfr_unref(d);
}

static struct dfr *
sync_work(void *arg)
{
	struct many *m = arg;

	unit_stack_note();
	return dfr_succeed((void *)(uintptr_t)m->next++, NULL);
}

static void
check_order(struct dfr *d, void *arg)
{
	struct many *m = arg;

	(void)m;
	dfr_unref(d);
}

static void
many_body(void *arg)
{
	struct many *m = arg;
	struct dfr *first, *d;
	size_t i;

	m->l = dfr_lock_new();
	first = dfr_lock_acquire(m->l);
	for (i = 0; i < m->n; i++) {
		if (m->use_run) {
			d = dfr_lock_run(m->l, sync_work, m);
			dfr_add_callback(d, check_order, m);
		} else {
			d = dfr_lock_acquire(m->l);
			dfr_add_callback(d, sync_section, m);
		}
	}
	dfr_lock_release(m->l);
	dfr_unref(first);
	m->bad = dfr_lock_locked(m->l) || dfr_lock_waiting(m->l) != 0;
	dfr_lock_free(m->l);
}

static void
test_million_waiters(void **state)
{
	struct many m = {unit_n(), 0, 0, 0, NULL}, one = {1, 0, 0, 0, NULL};
	size_t d1, dn;

	(void)state;
	d1 = unit_run_small_stack(many_body, &one);
	dn = unit_run_small_stack(many_body, &m);
	assert_int_equal(m.next, m.n);
	assert_int_equal(m.bad, 0);
	assert_true(dn <= d1 + 256);
	m.use_run = 1;
	m.next = 0;
	one.use_run = 1;
	one.next = 0;
	d1 = unit_run_small_stack(many_body, &one);
	dn = unit_run_small_stack(many_body, &m);
	print_message(
	    "# stack used by run(): %zu bytes with 1 waiter, %zu with %zu\n",
	    d1, dn, m.n);
	assert_int_equal(m.next, m.n);
	assert_int_equal(m.bad, 0);
	assert_true(dn <= d1 + 256);
}

/* FIFO order of a million runs, checked value by value. */
static size_t expect;
static size_t out_of_order;

static void
check_value(struct dfr *d, void *arg)
{
	if ((size_t)(uintptr_t)dfr_value(d) != expect++)
		out_of_order++;
	(void)arg;
	dfr_unref(d);
}

static void
order_body(void *arg)
{
	struct many *m = arg;
	struct dfr *first, *d;
	size_t i;

	m->l = dfr_lock_new();
	first = dfr_lock_acquire(m->l);
	for (i = 0; i < m->n; i++) {
		d = dfr_lock_run(m->l, sync_work, m);
		dfr_add_callback(d, check_value, m);
	}
	dfr_lock_release(m->l);
	dfr_unref(first);
	dfr_lock_free(m->l);
}

static void
test_million_fifo(void **state)
{
	struct many m = {unit_n(), 0, 0, 1, NULL};

	(void)state;
	expect = 0;
	out_of_order = 0;
	unit_run_small_stack(order_body, &m);
	assert_int_equal(expect, m.n);
	assert_int_equal(out_of_order, 0);
}

/* O(1) cancellation: a million waiters cancelled last to first. */
static void
test_cancel_million(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	size_t i, n = unit_n();
	struct dfr **ds = malloc(n * sizeof *ds);
	struct dfr *a = dfr_lock_acquire(l);
	uint64_t t0, t1;
	struct timespec ts;
	struct dfr_stats st;

	(void)state;
	for (i = 0; i < n; i++)
		ds[i] = dfr_lock_acquire(l);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t0 = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	for (i = n; i-- > 0;) {
		dfr_cancel(ds[i]);
		dfr_failure_free(dfr_take_failure(ds[i]));
		dfr_unref(ds[i]);
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t1 = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	print_message("# cancelled %zu waiters last-to-first in %.3f s\n", n,
		      (double)(t1 - t0) / 1e9);
	dfr_lock_stats(l, &st);
	assert_int_equal(st.cancelled, n);
	assert_int_equal(dfr_lock_waiting(l), 0);
	assert_int_equal(dfr_lock_release(l), 0);
	assert_false(dfr_lock_locked(l));
	free(ds);
	dfr_unref(a);
	dfr_lock_free(l);
}

/* Heap cost of one waiting acquire, with its first callback: at most 128 bytes.
 */
static void
test_waiter_memory(void **state)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *a = dfr_lock_acquire(l), *w;
	size_t bytes;

	(void)state;
	w = dfr_lock_acquire(l);
	dfr_add_callback(w, unit_log_cb, NULL); /* stored inline: no allocation */
	bytes = malloc_usable_size(w);
	print_message("# one waiting acquire: %zu bytes of heap\n", bytes);
	assert_true(bytes <= 128);
	dfr_unref(w);
	dfr_unref(a);
	dfr_lock_release(l);
	dfr_lock_free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_acquire_release, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_fifo, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_acquire, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_release_reacquire, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_from_callback,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_frees_lock, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_failure, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_cancel_waiting, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_cancel_pending, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_cancel_work_dropped,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_cancel_then_cancel_work,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_handoff_order, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_cancel_granted, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_cancel_queued_work,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_cancel_waiting_work,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_close, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_close_in_turn, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_close_waiter_frees, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_stats, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_million_waiters, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_million_fifo, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_million, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_waiter_memory, unit_setup,
					    unit_teardown),
	};

	return cmocka_run_group_tests_name("lock", tests, NULL, NULL);
}
