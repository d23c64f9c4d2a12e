/*
 * test-timeout.c: dfr_set_timeout on libevent timers.
 */
#include "config.h"

#include <event2/event.h>

#include "unit.h"

static const struct timeval short_tv = {0, 20000}; /* 20 ms */
static const struct timeval long_tv = {30, 0};	   /* never reached */

static int
timers(struct event_base *base)
{
	return event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);
}

static int seen_code[2];

static void
record_before(struct dfr *d, void *arg)
{
	seen_code[0] = dfr_failure_code(d);
	(void)arg;
}

/* An expired timeout cancels the deferred and fails it with DFR_ETIMEDOUT. */
static void
test_expires(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr *d = dfr_new(NULL, NULL);

	(void)state;
	dfr_add_errback(d, record_before, NULL);
	assert_int_equal(dfr_set_timeout(d, base, &short_tv, NULL, NULL), 0);
	assert_int_equal(dfr_set_timeout(d, base, &short_tv, NULL, NULL),
			 -EBUSY);
	assert_int_equal(timers(base), 1);
	event_base_dispatch(base);
	assert_int_equal(seen_code[0],
			 DFR_ECANCELED); /* added before the timeout */
	assert_int_equal(dfr_failure_code(d), DFR_ETIMEDOUT);
	assert_int_equal(timers(base), 0);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	event_base_free(base);
	assert_int_equal(unit_unhandled, 0);
}

/* A custom handler sets the result instead. */
static void
on_timeout(struct dfr *d, void *arg)
{
	dfr_set_value(d, arg, NULL);
}

static void
test_custom_handler(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr *d = dfr_new(NULL, NULL);
	int fallback = 3;

	(void)state;
	dfr_set_timeout(d, base, &short_tv, on_timeout, &fallback);
	event_base_dispatch(base);
	assert_false(dfr_failed(d));
	assert_ptr_equal(dfr_value(d), &fallback);
	dfr_unref(d);
	event_base_free(base);
}

/* Success or failure first removes the timer; fired deferreds refuse one. */
static void
test_fired_first(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr *d = dfr_new(NULL, NULL);
	int x = 1;

	(void)state;
	dfr_set_timeout(d, base, &long_tv, NULL, NULL);
	dfr_callback(d, &x, NULL);
	assert_int_equal(timers(base), 0);
	assert_ptr_equal(dfr_value(d), &x);
	assert_int_equal(dfr_set_timeout(d, base, &long_tv, NULL, NULL),
			 -EALREADY);
	dfr_unref(d);

	d = dfr_new(NULL, NULL);
	dfr_set_timeout(d, base, &long_tv, NULL, NULL);
	dfr_errback(d, EIO, "failed first");
	assert_int_equal(timers(base), 0);
	assert_int_equal(dfr_failure_code(d), EIO);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);

	/* A manual cancel before the timeout keeps the cancellation error. */
	d = dfr_new(NULL, NULL);
	dfr_set_timeout(d, base, &long_tv, NULL, NULL);
	dfr_cancel(d);
	assert_int_equal(timers(base), 0);
	assert_int_equal(dfr_failure_code(d), DFR_ECANCELED);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);

	/* Freed unfired: the timer goes with it. */
	d = dfr_new(NULL, NULL);
	dfr_set_timeout(d, base, &long_tv, NULL, NULL);
	dfr_unref(d);
	assert_int_equal(timers(base), 0);
	event_base_free(base);
}

/* A canceller's own success or other failure is kept. */
static void
canceller_value(struct dfr *d, void *arg)
{
	dfr_callback(d, arg, NULL);
}

static void
canceller_failure(struct dfr *d, void *arg)
{
	dfr_errback(d, EHOSTDOWN, "gave up");
	(void)arg;
}

static void
test_canceller_kept(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr *d;
	int x = 1;

	(void)state;
	d = dfr_new(canceller_value, &x);
	dfr_set_timeout(d, base, &short_tv, NULL, NULL);
	event_base_dispatch(base);
	assert_ptr_equal(dfr_value(d), &x);
	dfr_unref(d);

	d = dfr_new(canceller_failure, NULL);
	dfr_set_timeout(d, base, &short_tv, NULL, NULL);
	event_base_dispatch(base);
	assert_int_equal(dfr_failure_code(d), EHOSTDOWN);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	event_base_free(base);
}

/* A timeout on a lock waiter removes it from the queue. */
static void
test_lock_wait_timeout(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *a = dfr_lock_acquire(l), *b = dfr_lock_acquire(l);

	(void)state;
	dfr_set_timeout(b, base, &short_tv, NULL, NULL);
	event_base_dispatch(base);
	assert_int_equal(dfr_failure_code(b), DFR_ETIMEDOUT);
	assert_int_equal(dfr_lock_waiting(l), 0);
	assert_int_equal(dfr_lock_release(l), 0);
	assert_false(dfr_lock_locked(l));
	dfr_failure_free(dfr_take_failure(b));
	dfr_unref(a);
	dfr_unref(b);
	dfr_lock_free(l);
	event_base_free(base);
}

/*
 * A timeout on run() whose work is pending: the work is asked to stop; the
 * lock is held until the work's deferred fires; then the caller sees the
 * timeout.
 */
static struct dfr *work;
static struct event *stop_ev;

static void
stop_now(evutil_socket_t fd, short what, void *arg)
{
	dfr_errback(work, DFR_ECANCELED, "stopped");
	(void)fd;
	(void)what;
	(void)arg;
}

static void
work_canceller(struct dfr *d, void *arg)
{
	static const struct timeval later = {0, 10000};

	/* The work stops a little later, as real I/O would. */
	evtimer_add(stop_ev, &later);
	(void)d;
	(void)arg;
}

static struct dfr *
start_work(void *arg)
{
	(void)arg;
	return dfr_ref(work);
}

static void
test_run_timeout(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r, *next;

	(void)state;
	stop_ev = evtimer_new(base, stop_now, NULL);
	work = dfr_new(work_canceller, NULL);
	r = dfr_lock_run(l, start_work, NULL);
	next = dfr_lock_acquire(l);
	assert_int_equal(dfr_set_timeout(r, base, &short_tv, NULL, NULL), 0);
	event_base_loop(base, EVLOOP_ONCE); /* the timeout */
	assert_true(dfr_paused(r));
	assert_false(dfr_fired(next)); /* the work still runs */
	event_base_dispatch(base);     /* the work stops */
	assert_int_equal(dfr_failure_code(r), DFR_ETIMEDOUT);
	assert_true(dfr_fired(next));
	dfr_lock_release(l);
	dfr_failure_free(dfr_take_failure(r));
	dfr_unref(r);
	dfr_unref(next);
	dfr_unref(work);
	event_free(stop_ev);
	dfr_lock_free(l);
	event_base_free(base);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A timeout that expires while the deferred is paused on a chained one
 * cancels that inner deferred, whose owner's late fire is then swallowed.
 */
static struct dfr *chained;

static void
wait_chained(struct dfr *d, void *arg)
{
	dfr_wait(d, dfr_ref(chained));
	(void)arg;
}

static void
test_expires_paused(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr *d = dfr_new(NULL, NULL);

	(void)state;
	chained = dfr_new(NULL, NULL);
	dfr_add_callback(d, wait_chained, NULL);
	assert_int_equal(dfr_callback(d, NULL, NULL), 0);
	assert_true(dfr_paused(d));
	assert_int_equal(dfr_set_timeout(d, base, &short_tv, NULL, NULL), 0);
	event_base_dispatch(base);
	assert_false(dfr_paused(d));
	assert_int_equal(dfr_failure_code(d), DFR_ETIMEDOUT);
	assert_int_equal(timers(base), 0);
	/* The inner one's result moved to d; its owner fires it late. */
	assert_false(dfr_failed(chained));
	assert_int_equal(dfr_callback(chained, unit_int(1), unit_free_cb), 0);
	assert_int_equal(unit_freed, 1);
	dfr_unref(chained);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	event_base_free(base);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A timeout set on an inner deferred another already waits on: as in
 * Twisted, its pair comes after the point where the waiting one resumes, so
 * that one gets the plain DFR_ECANCELED.
 */
static void
test_expires_inner_waited_on(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr *d = dfr_new(NULL, NULL);

	(void)state;
	chained = dfr_new(NULL, NULL);
	dfr_add_callback(d, wait_chained, NULL);
	assert_int_equal(dfr_callback(d, NULL, NULL), 0);
	assert_int_equal(dfr_set_timeout(chained, base, &short_tv, NULL, NULL),
			 0);
	event_base_dispatch(base);
	assert_false(dfr_paused(d));
	assert_int_equal(dfr_failure_code(d), DFR_ECANCELED);
	assert_false(dfr_failed(chained)); /* its failure moved to d */
	assert_int_equal(timers(base), 0);
	dfr_unref(chained);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	event_base_free(base);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A timeout on a gather: the first cancelled member's DFR_ECANCELED becomes
 * DFR_ETIMEDOUT, as on any deferred (Twisted's FirstError escapes that).
 */
static void
test_gather_timeout(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr *ds[2], *first, *g;

	(void)state;
	first = ds[0] = dfr_new(NULL, NULL);
	dfr_ref(first);
	ds[1] = dfr_new(NULL, NULL);
	g = dfr_gather(ds, 2, DFR_GATHER_CONSUME_ERRORS);
	assert_int_equal(dfr_set_timeout(g, base, &short_tv, NULL, NULL), 0);
	assert_int_equal(dfr_callback(first, unit_int(1), unit_free_cb), 0);
	event_base_dispatch(base);
	assert_int_equal(dfr_failure_code(g), DFR_ETIMEDOUT);
	assert_int_equal(timers(base), 0);
	dfr_failure_free(dfr_take_failure(g));
	dfr_unref(g);
	dfr_unref(first);
	assert_int_equal(unit_freed, 1);
	event_base_free(base);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A run whose work waits for a queue item: the timeout cancels that get, the
 * lock is released and the run times out, also when the caller keeps the get.
 */
static struct dfr_queue *work_q;
static struct dfr *work_get;

static struct dfr *
start_get(void *arg)
{
	work_get = dfr_queue_get(work_q);
	return arg != NULL ? dfr_ref(work_get) : work_get;
}

static void
test_run_get_timeout(void **state)
{
	struct event_base *base = event_base_new();
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r;
	int keep;

	(void)state;
	work_q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	for (keep = 0; keep < 2; keep++) {
		r = dfr_lock_run(l, start_get, keep ? &keep : NULL);
		assert_int_equal(
		    dfr_set_timeout(r, base, &short_tv, NULL, NULL), 0);
		event_base_dispatch(base);
		assert_int_equal(dfr_failure_code(r), DFR_ETIMEDOUT);
		assert_false(dfr_lock_locked(l));
		assert_int_equal(dfr_queue_waiting(work_q), 0);
		assert_int_equal(timers(base), 0);
		if (keep)
			dfr_unref(work_get);
		dfr_failure_free(dfr_take_failure(r));
		dfr_unref(r);
	}
	dfr_queue_free(work_q);
	dfr_lock_free(l);
	event_base_free(base);
	assert_int_equal(unit_unhandled, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_expires, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_custom_handler, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_fired_first, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_canceller_kept, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_lock_wait_timeout, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_timeout, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_expires_paused, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_get_timeout, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_expires_inner_waited_on,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_gather_timeout, unit_setup,
					    unit_teardown),
	};

	return cmocka_run_group_tests_name("timeout", tests, NULL, NULL);
}
