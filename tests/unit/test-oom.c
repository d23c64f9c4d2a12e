/*
 * test-oom.c: libdfr when memory runs out.
 *
 * libdfr's sources are built into this program, linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free: their calls
 * come to the __wrap_ functions below (ASan and valgrind, which replace the
 * C library's malloc, are behind __real_malloc). libevent's allocations come
 * here too, through event_set_mem_functions(). Each scenario drives a module
 * as a user would and is run with its k-th allocation failing, then with
 * every allocation from the k-th on failing, for k = 1, 2, ... until a run
 * meets no injected failure. Every run must report each failure as dfr.h
 * says, leave nothing allocated (counted here, per run; ASan and valgrind
 * check the rest) and leave the primitive usable once memory is back.
 *
 * The test's own memory comes from __real_malloc, never from the counter.
 */
#include "config.h"

#include <event2/event.h>

#include "dfr-int.h"
#include "unit.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

/* The allocation counter and what to fail. */
static struct {
	int armed;    /* count (and fail) allocations */
	int sticky;   /* fail every allocation from fail_at on */
	long fail_at; /* the allocation to fail, 1-based; 0: none */
	long calls;   /* allocations seen while armed */
	long failed;  /* allocations failed in this run */
	long live;    /* blocks allocated and not yet freed */
} oom;

/* Whether this allocation fails. */
static int
oom_fail(void)
{
	if (!oom.armed)
		return 0;
	oom.calls++;
	if (oom.fail_at == 0 || oom.calls < oom.fail_at ||
	    (oom.calls > oom.fail_at && !oom.sticky))
		return 0;
	/* errno is left alone: libdfr must set ENOMEM itself. */
	oom.failed++;
	return 1;
}

void *
__wrap_malloc(size_t n)
{
	void *p = oom_fail() ? NULL : __real_malloc(n);

	if (p != NULL)
		oom.live++;
	return p;
}

void *
__wrap_calloc(size_t n, size_t size)
{
	void *p = oom_fail() ? NULL : __real_calloc(n, size);

	if (p != NULL)
		oom.live++;
	return p;
}

void *
__wrap_realloc(void *p, size_t n)
{
	void *q = oom_fail() ? NULL : __real_realloc(p, n);

	if (q != NULL && p == NULL)
		oom.live++;
	return q;
}

void
__wrap_free(void *p)
{
	if (p != NULL)
		oom.live--;
	__real_free(p);
}

/* Start failing as set up by sweep(). */
static void
oom_arm(void)
{
	oom.armed = 1;
}

/* Memory is back: what follows must succeed. */
static void
oom_disarm(void)
{
	oom.armed = 0;
}

/*
 * A pointer a call returned (errno cleared before the call): NULL only with
 * errno ENOMEM, and only when an allocation has failed. Returns p != NULL.
 */
static int
got(const void *p)
{
	int e = errno;

	if (p != NULL)
		return 1;
	assert_int_equal(e, ENOMEM);
	assert_true(oom.failed > 0);
	return 0;
}

/* A return code: 0, or -ENOMEM only when an allocation has failed. */
static int
ok(int rc)
{
	if (rc == 0)
		return 1;
	assert_int_equal(rc, -ENOMEM);
	assert_true(oom.failed > 0);
	return 0;
}

/*
 * A failure the library made with code and message: the same code with a
 * fixed message when memory ran out (the library's own codes keep theirs).
 */
static void
check_failure(const struct dfr_failure *f, int code, const char *msg)
{
	assert_non_null(f);
	assert_int_equal(f->code, code);
	if (strcmp(f->message, msg) != 0)
		assert_true(oom.failed > 0);
}

/*
 * A failure made from the caller's code and message: as given, or ENOMEM
 * "out of memory" when memory ran out.
 */
static void
check_user_failure(const struct dfr_failure *f, int code, const char *msg)
{
	assert_non_null(f);
	if (f->code == code && strcmp(f->message, msg) == 0)
		return;
	assert_true(oom.failed > 0);
	assert_int_equal(f->code, ENOMEM);
	assert_string_equal(f->message, "out of memory");
}

/* The test's values: counted when released. */
static int values_freed;

static int *
value_new(int v)
{
	int *p = __real_malloc(sizeof *p);

	assert_non_null(p);
	*p = v;
	return p;
}

static void
value_free(void *p)
{
	values_freed++;
	__real_free(p);
}

/* An errback that handles the failure (takes and frees it). */
static void
handle_eb(struct dfr *d, void *arg)
{
	unit_log_add(&unit_lg, -(int)(intptr_t)arg);
	dfr_failure_free(dfr_take_failure(d));
}

/* Drop d after checking it failed with code; handles the failure. */
static void
drop_failed(struct dfr *d, int code, const char *msg)
{
	assert_true(dfr_failed(d));
	check_failure(dfr_failure(d), code, msg);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
}

/*
 * Run scenario with the k-th allocation failing (then every one from the
 * k-th), k = 1, 2, ... until a run meets no failure: that k must be one past
 * the allocations of the run where none fails.
 */
/*
 * One run of scenario failing allocation k (0: none), and all after it if
 * sticky. Returns the allocations failed, or, with k 0, those made.
 */
static long
sweep_run(void (*scenario)(void), long k, int sticky)
{
	long live = oom.live;

	oom.sticky = sticky;
	oom.fail_at = k;
	oom.calls = 0;
	oom.failed = 0;
	values_freed = 0;
	unit_lg.n = 0;
	scenario();
	oom_disarm();
	if (oom.live != live)
		fail_msg("leak: %ld blocks, failing allocation %ld%s",
			 oom.live - live, k, sticky ? " and on" : "");
	return k == 0 ? oom.calls : oom.failed;
}

static void
sweep(void (*scenario)(void))
{
	long k, n;
	int sticky;

	n = sweep_run(scenario, 0, 0);
	assert_true(n > 0);
	print_message("# %ld allocations, each failed alone and onwards\n", n);
	for (sticky = 0; sticky <= 1; sticky++) {
		for (k = 1; sweep_run(scenario, k, sticky) > 0; k++)
			;
		assert_int_equal(k, n + 1);
	}
	oom.fail_at = 0;
	oom.sticky = 0;
}

/* ------------------------------------------------------------------------ */
/* Deferreds                                                                */

static void
scenario_constructors(void)
{
	struct dfr_failure *f;
	struct dfr_lock *l;
	struct dfr_sem *s;
	struct dfr_queue *q;
	struct dfr *d;
	int *v = value_new(7);

	oom_arm();
	errno = 0;
	if (got(d = dfr_new(NULL, NULL))) {
		assert_false(dfr_fired(d));
		dfr_unref(d);
	}
	errno = 0;
	if (got(d = dfr_succeed(v, value_free))) {
		assert_ptr_equal(dfr_value(d), v);
		dfr_unref(d);
		assert_int_equal(values_freed, 1);
	} else {
		assert_int_equal(values_freed, 0); /* the caller keeps v */
		value_free(v);
	}
	errno = 0;
	if (got(d = dfr_fail(EIO, "io %d", 5))) {
		assert_true(dfr_failed(d));
		check_user_failure(dfr_failure(d), EIO, "io 5");
		dfr_failure_free(dfr_take_failure(d));
		dfr_unref(d);
	}
	errno = 0;
	if (got(f = dfr_failure_new(EIO, "io %d", 6))) {
		assert_int_equal(f->code, EIO);
		assert_string_equal(f->message, "io 6");
		assert_int_equal(f->index, -1);
		dfr_failure_free(f);
	}
	errno = 0;
	if (got(l = dfr_lock_new())) {
		assert_false(dfr_lock_locked(l));
		dfr_lock_free(l);
	}
	errno = 0;
	if (got(s = dfr_sem_new(3))) {
		assert_int_equal(dfr_sem_tokens(s), 3);
		dfr_sem_free(s);
	}
	errno = 0;
	if (got(q = dfr_queue_new(4, DFR_UNBOUNDED))) {
		assert_int_equal(dfr_queue_size(q), 0);
		dfr_queue_free(q);
	}
	oom_disarm();
}

static void
test_constructors(void **state)
{
	(void)state;
	sweep(scenario_constructors);
}

/*
 * Callbacks added while memory runs out: each one either returns -ENOMEM and
 * never runs, or runs once, in order; the deferred stays usable.
 */
static void
scenario_callbacks(void)
{
	int added[12], i, j;
	struct dfr *d;
	int *v = value_new(1);

	oom_arm();
	errno = 0;
	if (!got(d = dfr_new(NULL, NULL))) {
		value_free(v);
		return;
	}
	for (i = 0; i < 10; i++)
		added[i] = ok(dfr_add_callback(d, unit_log_cb, (void *)(intptr_t)i));
	assert_int_equal(dfr_callback(d, v, value_free), 0);
	/* After it fired: runs inside the call, or not at all. */
	added[10] = ok(dfr_add_callback(d, unit_log_cb, (void *)(intptr_t)10));
	oom_disarm();
	added[11] = ok(dfr_add_callback(d, unit_log_cb, (void *)(intptr_t)11));
	assert_true(added[11]);
	for (i = 0, j = 0; i < 12; i++)
		if (added[i]) {
			assert_true(j < unit_lg.n);
			assert_int_equal(unit_lg.v[j], i);
			j++;
		}
	assert_int_equal(unit_lg.n, j);
	assert_ptr_equal(dfr_value(d), v);
	dfr_unref(d);
	assert_int_equal(values_freed, 1);
}

static void
test_callbacks(void **state)
{
	(void)state;
	sweep(scenario_callbacks);
}

/* Failing a deferred: dfr_errback, dfr_set_failure, dfr_errback_failure. */
static void
set_failure_cb(struct dfr *d, void *arg)
{
	(void)arg;
	check_user_failure(dfr_failure(d), EIO, "first");
	dfr_set_failure(d, EBADF, "second %d", 2);
}

static void
scenario_errback(void)
{
	struct dfr_failure *f;
	struct dfr *d, *e;

	oom_arm();
	errno = 0;
	if (got(d = dfr_new(NULL, NULL))) {
		ok(dfr_add_errback(d, set_failure_cb, NULL));
		assert_int_equal(dfr_errback(d, EIO, "first"), 0);
		check_user_failure(dfr_failure(d), EBADF, "second 2");
		dfr_failure_free(dfr_take_failure(d));
		dfr_unref(d);
	}
	errno = 0;
	f = dfr_failure_new(EIO, "obj");
	errno = 0;
	if (got(e = dfr_new(NULL, NULL))) {
		/* NULL: the deferred fails with ENOMEM. */
		assert_int_equal(dfr_errback_failure(e, f), 0);
		check_user_failure(dfr_failure(e), EIO, "obj");
		dfr_failure_free(dfr_take_failure(e));
		dfr_unref(e);
	} else {
		dfr_failure_free(f);
	}
	oom_disarm();
}

static void
test_errback(void **state)
{
	(void)state;
	sweep(scenario_errback);
}

/* Chaining: a callback waits on an inner deferred. */
static struct dfr *inner_d;

static void
wait_cb(struct dfr *d, void *arg)
{
	(void)arg;
	errno = 0;
	if (got(inner_d = dfr_new(NULL, NULL)))
		dfr_wait(d, dfr_ref(inner_d));
	else
		dfr_set_failure(d, ENOMEM, "no inner");
}

static void
scenario_chain(void)
{
	struct dfr *d;
	int added, after;
	int *v = value_new(3);

	inner_d = NULL;
	oom_arm();
	errno = 0;
	if (!got(d = dfr_new(NULL, NULL))) {
		value_free(v);
		return;
	}
	ok(dfr_add_callback(d, wait_cb, NULL));
	after = ok(dfr_add_callbacks(d, unit_log_cb, handle_eb, (void *)1));
	assert_int_equal(dfr_callback(d, NULL, NULL), 0);
	if (inner_d == NULL) { /* wait_cb not added, or it failed */
		assert_false(dfr_paused(d));
		dfr_unref(d);
		value_free(v);
		oom_disarm();
		return;
	}
	assert_true(dfr_paused(d));
	/* Added to inner after the wait: runs after d took the result. */
	added = ok(dfr_add_callback(inner_d, unit_log_cb, (void *)2));
	assert_int_equal(dfr_callback(inner_d, v, value_free), 0);
	oom_disarm();
	assert_false(dfr_paused(d));
	if (after) {
		assert_int_equal(unit_lg.v[0], 1);
		assert_int_equal(unit_lg.n, 1 + added);
	} else {
		assert_int_equal(unit_lg.n, added);
	}
	assert_ptr_equal(dfr_value(d), v);
	assert_null(dfr_value(inner_d));
	dfr_unref(inner_d);
	dfr_unref(d);
	assert_int_equal(values_freed, 1);
}

static void
test_chain(void **state)
{
	(void)state;
	sweep(scenario_chain);
}

/* The inner deferred freed unfired: the waiting chain goes on with EPIPE. */
static void
scenario_chain_epipe(void)
{
	struct dfr *d;

	inner_d = NULL;
	oom_arm();
	errno = 0;
	if (!got(d = dfr_new(NULL, NULL)))
		return;
	if (!ok(dfr_add_callback(d, wait_cb, NULL))) {
		dfr_unref(d);
		return;
	}
	assert_int_equal(dfr_callback(d, NULL, NULL), 0);
	if (inner_d == NULL) {
		drop_failed(d, ENOMEM, "no inner");
		return;
	}
	dfr_unref(inner_d); /* the firer's: nothing will fire it */
	oom_disarm();
	assert_false(dfr_paused(d));
	drop_failed(d, EPIPE,
		    "the deferred this chain waited for was freed before it "
		    "fired");
}

static void
test_chain_epipe(void **state)
{
	(void)state;
	sweep(scenario_chain_epipe);
}

/* Cancel: the deferred fails with DFR_ECANCELED, memory or not. */
static void
scenario_cancel(void)
{
	struct dfr *d, *p;

	oom_arm();
	errno = 0;
	if (got(d = dfr_new(NULL, NULL))) {
		ok(dfr_add_errback(d, unit_log_cb, (void *)1));
		dfr_cancel(d);
		assert_true(dfr_failed(d));
		check_failure(dfr_failure(d), DFR_ECANCELED, "cancelled");
		/* The late fire is swallowed. */
		assert_int_equal(dfr_callback(d, value_new(1), value_free), 0);
		assert_int_equal(values_freed, 1);
		drop_failed(d, DFR_ECANCELED, "cancelled");
	}
	/* Paused on an inner deferred: the cancel goes to the inner one. */
	inner_d = NULL;
	errno = 0;
	if (got(p = dfr_new(NULL, NULL))) {
		if (ok(dfr_add_callback(p, wait_cb, NULL))) {
			assert_int_equal(dfr_callback(p, NULL, NULL), 0);
			dfr_cancel(p);
			if (inner_d != NULL) {
				/* Its failure moved up into p. */
				assert_false(dfr_failed(inner_d));
				dfr_unref(inner_d);
				drop_failed(p, DFR_ECANCELED, "cancelled");
			} else {
				drop_failed(p, ENOMEM, "no inner");
			}
		} else {
			dfr_cancel(p);
			drop_failed(p, DFR_ECANCELED, "cancelled");
		}
	}
	oom_disarm();
}

static void
test_cancel(void **state)
{
	(void)state;
	sweep(scenario_cancel);
}

/* ------------------------------------------------------------------------ */
/* Timeouts                                                                 */

static struct event_base *base;

static int
timers(void)
{
	return event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);
}

static void
on_timeout_cb(struct dfr *d, void *arg)
{
	(void)arg;
	check_failure(dfr_failure(d), DFR_ECANCELED, "cancelled");
	dfr_set_value(d, value_new(9), value_free);
}

static void
scenario_timeout(void)
{
	static const struct timeval tv = {0, 1000};
	static const struct timeval long_tv = {30, 0};
	struct dfr *d, *e, *f;
	int set_d, set_e, set_f;

	base = event_base_new();
	assert_non_null(base);
	oom_arm();
	errno = 0;
	if (!got(d = dfr_new(NULL, NULL))) {
		oom_disarm();
		event_base_free(base);
		return;
	}
	errno = 0;
	if (!got(e = dfr_new(NULL, NULL))) {
		dfr_unref(d);
		oom_disarm();
		event_base_free(base);
		return;
	}
	errno = 0;
	if (!got(f = dfr_new(NULL, NULL))) {
		dfr_unref(d);
		dfr_unref(e);
		oom_disarm();
		event_base_free(base);
		return;
	}
	set_d = ok(dfr_set_timeout(d, base, &tv, NULL, NULL));
	set_e = ok(dfr_set_timeout(e, base, &tv, on_timeout_cb, NULL));
	set_f = ok(dfr_set_timeout(f, base, &long_tv, NULL, NULL));
	assert_int_equal(timers(), set_d + set_e + set_f);
	/* f fires first: its timer goes. */
	assert_int_equal(dfr_callback(f, NULL, NULL), 0);
	assert_int_equal(timers(), set_d + set_e);
	oom_disarm();
	/* A failed dfr_set_timeout leaves no timeout behind: set it now. */
	if (!set_d)
		assert_int_equal(dfr_set_timeout(d, base, &tv, NULL, NULL), 0);
	if (!set_e)
		assert_int_equal(
		    dfr_set_timeout(e, base, &tv, on_timeout_cb, NULL), 0);
	oom_arm();
	assert_int_equal(event_base_dispatch(base), 1); /* no events left */
	oom_disarm();
	drop_failed(d, DFR_ETIMEDOUT, "timed out");
	assert_false(dfr_failed(e));
	assert_int_equal(*(int *)dfr_value(e), 9);
	dfr_unref(e);
	dfr_unref(f);
	event_base_free(base);
}

static void
test_timeout(void **state)
{
	(void)state;
	sweep(scenario_timeout);
}

/* ------------------------------------------------------------------------ */
/* Lock and semaphore                                                       */

/*
 * Acquires, contended and not, a cancel and a close: the lock is held
 * exactly by the acquires that returned a deferred, waiters get it in order.
 */
static void
scenario_lock(void)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *a[4], *c;
	struct dfr_stats st;
	int i, n = 0;

	assert_non_null(l);
	oom_arm();
	for (i = 0; i < 4; i++) {
		errno = 0;
		if (got(a[i] = dfr_lock_acquire(l))) {
			n++;
			ok(dfr_add_callback(a[i], unit_log_cb, (void *)(intptr_t)i));
		}
		/* Held exactly when an acquire has succeeded. */
		assert_int_equal(dfr_lock_locked(l), n > 0);
		assert_int_equal(dfr_lock_waiting(l), n > 0 ? n - 1 : 0);
	}
	/* A waiter cancelled, another added, then a close. */
	errno = 0;
	if (got(c = dfr_lock_acquire(l))) {
		assert_int_equal(dfr_lock_waiting(l), n > 0 ? n : 0);
		if (n == 0) { /* it got the lock */
			assert_int_equal(dfr_lock_release(l), 0);
			dfr_unref(c);
		} else {
			dfr_cancel(c);
			drop_failed(c, DFR_ECANCELED, "cancelled");
		}
	}
	dfr_lock_stats(l, &st);
	assert_int_equal(st.waiting, n > 0 ? n - 1 : 0);
	/* Hand-offs in order, to every waiter that was queued. */
	for (i = 0; i < 4; i++) {
		if (a[i] == NULL)
			continue;
		assert_true(dfr_lock_locked(l));
		if (dfr_fired(a[i]))
			assert_int_equal(dfr_lock_release(l), 0);
	}
	assert_false(dfr_lock_locked(l));
	assert_int_equal(dfr_lock_waiting(l), 0);
	oom_disarm();
	dfr_lock_stats(l, &st);
	assert_int_equal(st.acquisitions, (uint64_t)n + (c != NULL && n == 0));
	assert_int_equal(st.held, 0);
	assert_int_equal(st.waiting, 0);
	for (i = 0; i < 4; i++)
		if (a[i] != NULL) {
			assert_ptr_equal(dfr_value(a[i]), l);
			dfr_unref(a[i]);
		}
	/* Memory is back: the lock works, and close fails a waiter. */
	a[0] = dfr_lock_acquire(l);
	a[1] = dfr_lock_acquire(l);
	assert_true(dfr_fired(a[0]));
	assert_false(dfr_fired(a[1]));
	oom_arm();
	dfr_lock_close(l);
	oom_disarm();
	drop_failed(a[1], DFR_ECLOSED, "closed");
	assert_int_equal(dfr_lock_release(l), 0);
	dfr_unref(a[0]);
	dfr_lock_free(l);
}

static void
test_lock(void **state)
{
	(void)state;
	sweep(scenario_lock);
}

/* run(): fn's work, kept by the test until it fires it. */
static struct dfr *work;
static int runs;

static struct dfr *
work_fn(void *arg)
{
	(void)arg;
	runs++;
	errno = 0;
	if (!got(work = dfr_new(NULL, NULL)))
		return NULL; /* errno is ENOMEM */
	return dfr_ref(work);
}

static struct dfr *
done_fn(void *arg)
{
	(void)arg;
	runs++;
	errno = 0;
	return dfr_succeed(NULL, NULL); /* NULL: errno is ENOMEM */
}

/* The deferred of a run(): NULL (ENOMEM), or fn's result or failure. */
static void
check_run(struct dfr *r, int *v)
{
	if (dfr_failed(r)) {
		check_failure(dfr_failure(r), ENOMEM,
			      "run: the function returned no deferred");
		dfr_failure_free(dfr_take_failure(r));
	} else {
		assert_ptr_equal(dfr_value(r), v);
	}
}

/* Fire the work fn left pending, with v. */
static void
work_fire(void *v, dfr_free_cb free_cb)
{
	struct dfr *w = work;

	work = NULL;
	assert_int_equal(dfr_callback(w, v, free_cb), 0);
	dfr_unref(w);
}

/*
 * A run whose work is pending holds the lock until the work fires, whatever
 * memory there was; a run that fails to start never calls fn.
 */
static void
scenario_lock_run(void)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r1, *r2;
	int *v = value_new(5);

	assert_non_null(l);
	runs = 0;
	work = NULL;
	oom_arm();
	/* Uncontended, work already done: the lock is free again. */
	errno = 0;
	if (got(r1 = dfr_lock_run(l, done_fn, NULL))) {
		assert_true(dfr_fired(r1));
		if (dfr_failed(r1))
			check_run(r1, NULL);
		dfr_unref(r1);
	}
	assert_int_equal(runs, 1);
	assert_false(dfr_lock_locked(l));
	/* Uncontended, work pending: held until the work fires. */
	runs = 0;
	errno = 0;
	r1 = dfr_lock_run(l, work_fn, NULL);
	assert_int_equal(runs, 1);
	if (got(r1) && work == NULL) {
		assert_true(dfr_failed(r1)); /* fn had no memory */
		check_run(r1, NULL);
	}
	assert_int_equal(dfr_lock_locked(l), work != NULL);
	if (work == NULL) {
		dfr_unref(r1);
		oom_disarm();
		value_free(v);
		dfr_lock_free(l);
		return;
	}
	/* Contended: waits, or fails without calling fn. */
	errno = 0;
	r2 = dfr_lock_run(l, work_fn, NULL);
	assert_int_equal(runs, 1);
	assert_int_equal(dfr_lock_waiting(l), got(r2));
	assert_true(dfr_lock_locked(l));
	work_fire(v, value_free);
	if (r1 != NULL) {
		assert_true(dfr_fired(r1));
		assert_ptr_equal(dfr_value(r1), v);
		dfr_unref(r1);
	}
	assert_int_equal(values_freed, 1);
	/* r2's fn ran with the lock: held while its work is pending. */
	assert_int_equal(runs, 1 + (r2 != NULL));
	assert_int_equal(dfr_lock_locked(l), work != NULL);
	assert_int_equal(dfr_lock_waiting(l), 0);
	if (work != NULL)
		work_fire(NULL, NULL);
	assert_false(dfr_lock_locked(l));
	if (r2 != NULL) {
		assert_true(dfr_fired(r2));
		check_run(r2, NULL);
		dfr_unref(r2);
	}
	oom_disarm();
	/* Memory is back: run works. */
	r1 = dfr_lock_run(l, work_fn, NULL);
	assert_true(dfr_lock_locked(l));
	work_fire(NULL, NULL);
	assert_false(dfr_lock_locked(l));
	assert_true(dfr_fired(r1));
	assert_false(dfr_failed(r1));
	dfr_unref(r1);
	dfr_lock_free(l);
}

static void
test_lock_run(void **state)
{
	(void)state;
	sweep(scenario_lock_run);
}

/* fn's work comes with a callback of its own already. */
static struct dfr *
busy_work_fn(void *arg)
{
	struct dfr *w = work_fn(arg);

	if (w != NULL)
		ok(dfr_add_callback(w, unit_log_cb, (void *)1));
	return w;
}

/*
 * A run whose work has a callback already, with no memory for the run's
 * state: the caller may then get fn's own deferred (and only then may the
 * lock be given back before the work is done); the result arrives.
 */
static void
scenario_lock_run_busy(void)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r, *w;
	int *v = value_new(6);

	assert_non_null(l);
	runs = 0;
	work = NULL;
	oom_arm();
	errno = 0;
	r = dfr_lock_run(l, busy_work_fn, NULL);
	assert_int_equal(runs, 1);
	if (work == NULL) {
		if (got(r))
			check_run(r, NULL);
		dfr_unref(r);
		assert_false(dfr_lock_locked(l));
		oom_disarm();
		value_free(v);
		dfr_lock_free(l);
		return;
	}
	assert_non_null(r);
	if (r != work)
		assert_true(dfr_lock_locked(l));
	w = work;
	work_fire(v, value_free);
	oom_disarm();
	assert_false(dfr_lock_locked(l));
	assert_true(dfr_fired(r));
	if (r == w)
		dfr_take_value(r); /* both hold v: the run's result is v */
	else
		assert_ptr_equal(dfr_value(r), v);
	dfr_unref(r);
	if (r == w)
		value_free(v);
	assert_int_equal(values_freed, 1);
	dfr_lock_free(l);
}

static void
test_lock_run_busy(void **state)
{
	(void)state;
	sweep(scenario_lock_run_busy);
}

/*
 * The lock freed while a run's work is pending: the work ends, its result
 * arrives and the lock's memory goes then, whatever memory the run had.
 */
static void
scenario_lock_run_freed(void)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r;
	int *v = value_new(8);

	assert_non_null(l);
	runs = 0;
	work = NULL;
	oom_arm();
	errno = 0;
	r = dfr_lock_run(l, work_fn, NULL);
	dfr_lock_free(l);
	if (work == NULL) {
		if (got(r))
			check_run(r, NULL);
		dfr_unref(r);
		oom_disarm();
		value_free(v);
		return;
	}
	assert_non_null(r);
	work_fire(v, value_free);
	oom_disarm();
	assert_true(dfr_fired(r));
	assert_ptr_equal(dfr_value(r), v);
	dfr_unref(r);
	assert_int_equal(values_freed, 1);
}

static void
test_lock_run_freed(void **state)
{
	(void)state;
	sweep(scenario_lock_run_freed);
}

/* Work that stops when cancelled: its canceller fires it. */
static void
stop_work(struct dfr *d, void *arg)
{
	(void)arg;
	dfr_errback(d, DFR_ECANCELED, "stopped");
}

static struct dfr *
stoppable_fn(void *arg)
{
	(void)arg;
	runs++;
	errno = 0;
	if (!got(work = dfr_new(stop_work, NULL)))
		return NULL;
	return dfr_ref(work);
}

/*
 * A run and an acquire with timeouts: the run's work is stopped and the
 * lock released when it fires; the waiting acquire leaves the queue.
 */
static void
scenario_lock_timeout(void)
{
	static const struct timeval tv_a = {0, 1000};
	static const struct timeval tv_r = {0, 5000};
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *r, *a;
	int set_r = 0, set_a = 0;

	assert_non_null(l);
	base = event_base_new();
	assert_non_null(base);
	runs = 0;
	work = NULL;
	oom_arm();
	errno = 0;
	r = dfr_lock_run(l, stoppable_fn, NULL);
	if (work == NULL) {
		if (got(r))
			check_run(r, NULL);
		dfr_unref(r);
		oom_disarm();
		event_base_free(base);
		dfr_lock_free(l);
		return;
	}
	set_r = ok(dfr_set_timeout(r, base, &tv_r, NULL, NULL));
	errno = 0;
	if (got(a = dfr_lock_acquire(l)))
		set_a = ok(dfr_set_timeout(a, base, &tv_a, NULL, NULL));
	assert_int_equal(dfr_lock_waiting(l), a != NULL);
	event_base_dispatch(base);
	oom_disarm();
	/* Timed out, or still waiting where the timeout could not be set. */
	if (set_r) {
		assert_true(dfr_fired(work)); /* stopped by its canceller */
		assert_true(dfr_failed(r));
		check_failure(dfr_failure(r), DFR_ETIMEDOUT, "timed out");
		dfr_failure_free(dfr_take_failure(r));
	} else {
		assert_true(dfr_lock_locked(l));
		dfr_cancel(r);
		drop_failed(r, DFR_ECANCELED, "stopped"), r = NULL;
	}
	dfr_unref(r);
	dfr_unref(work);
	work = NULL;
	if (a != NULL) {
		/* Timed out waiting (first), or given the lock at r's end. */
		if (set_a) {
			drop_failed(a, DFR_ETIMEDOUT, "timed out");
		} else {
			assert_true(dfr_fired(a));
			assert_int_equal(dfr_lock_release(l), 0);
			dfr_unref(a);
		}
	}
	assert_false(dfr_lock_locked(l));
	assert_int_equal(dfr_lock_waiting(l), 0);
	event_base_free(base);
	dfr_lock_free(l);
}

static void
test_lock_timeout(void **state)
{
	(void)state;
	sweep(scenario_lock_timeout);
}

/* A closed semaphore, and a request it can never grant. */
static void
scenario_sem_refused(void)
{
	struct dfr_sem *s = dfr_sem_new(2);
	struct dfr *d;

	assert_non_null(s);
	oom_arm();
	errno = 0;
	if (got(d = dfr_sem_acquire_many(s, 3))) {
		assert_true(dfr_failed(d));
		check_user_failure(dfr_failure(d), EINVAL,
				   "cannot acquire 3 of 2 tokens");
		dfr_failure_free(dfr_take_failure(d));
		dfr_unref(d);
	}
	dfr_sem_close(s);
	errno = 0;
	if (got(d = dfr_sem_acquire(s)))
		drop_failed(d, DFR_ECLOSED, "closed");
	errno = 0;
	if (got(d = dfr_sem_run(s, work_fn, NULL)))
		drop_failed(d, DFR_ECLOSED, "closed");
	oom_disarm();
	assert_int_equal(dfr_sem_tokens(s), 2);
	dfr_sem_free(s);
}

static void
test_sem_refused(void **state)
{
	(void)state;
	sweep(scenario_sem_refused);
}

/* A semaphore of 3: acquire_many, run, release_many. */
static void
scenario_sem(void)
{
	struct dfr_sem *s = dfr_sem_new(3);
	struct dfr *a, *b, *c, *r;
	struct dfr_stats st;
	unsigned int held = 0;

	assert_non_null(s);
	runs = 0;
	work = NULL;
	oom_arm();
	errno = 0;
	if (got(a = dfr_sem_acquire_many(s, 2)))
		held += 2;
	assert_int_equal(dfr_sem_tokens(s), 3 - held);
	errno = 0;
	b = dfr_sem_acquire_many(s, 2); /* waits if a holds 2 */
	if (got(b) && !dfr_fired(b))
		assert_int_equal(dfr_sem_waiting(s), 1);
	else if (b != NULL)
		held += 2;
	assert_int_equal(dfr_sem_tokens(s), 3 - held);
	errno = 0;
	r = dfr_sem_run(s, work_fn, NULL);
	if (work == NULL && r != NULL && !dfr_fired(r))
		assert_int_equal(runs, 0); /* waits behind b */
	errno = 0;
	if (got(c = dfr_sem_acquire(s)) && !dfr_fired(c)) {
		dfr_cancel(c);
		drop_failed(c, DFR_ECANCELED, "cancelled");
		c = NULL;
	}
	/* Give everything back; waiters' tokens as they come. */
	if (c != NULL)
		assert_int_equal(dfr_sem_release(s), 0);
	if (a != NULL)
		assert_int_equal(dfr_sem_release_many(s, 2), 0);
	if (b != NULL) {
		assert_true(dfr_fired(b));
		assert_int_equal(dfr_sem_release_many(s, 2), 0);
	}
	if (work != NULL)
		work_fire(NULL, NULL);
	oom_disarm();
	assert_int_equal(dfr_sem_tokens(s), 3);
	assert_int_equal(dfr_sem_waiting(s), 0);
	dfr_sem_stats(s, &st);
	assert_int_equal(st.held, 0);
	assert_int_equal(st.waiting, 0);
	if (r != NULL) {
		assert_true(dfr_fired(r));
		check_run(r, NULL);
		dfr_unref(r);
	}
	dfr_unref(a);
	dfr_unref(b);
	dfr_unref(c);
	/* Memory is back. */
	a = dfr_sem_acquire_many(s, 3);
	assert_true(dfr_fired(a));
	assert_int_equal(dfr_sem_release_many(s, 3), 0);
	dfr_unref(a);
	dfr_sem_free(s);
}

static void
test_sem(void **state)
{
	(void)state;
	sweep(scenario_sem);
}

/* ------------------------------------------------------------------------ */
/* Queue                                                                    */

/*
 * Puts and gets both ways, a full queue, a full backlog, a close: every item
 * put is got exactly once, in order, or is still the caller's.
 */
static void
take_item_cb(struct dfr *d, void *arg)
{
	int *p = dfr_take_value(d);

	(void)arg;
	unit_log_add(&unit_lg, *p);
	value_free(p);
}

static void
scenario_queue(void)
{
	struct dfr_queue *q = dfr_queue_new(3, 2);
	struct dfr *g[3], *d;
	struct dfr_stats st;
	int next = 1, expect = 1, i, rc, getters = 0, stored = 0;
	int *v;

	assert_non_null(q);
	oom_arm();
	/* Two gets wait; a third is refused (backlog 2). */
	for (i = 0; i < 3; i++) {
		errno = 0;
		if (got(g[i] = dfr_queue_get(q))) {
			if (getters == 2) {
				assert_true(dfr_failed(g[i]));
				check_user_failure(dfr_failure(g[i]),
						   DFR_EUNDERFLOW,
						   "queue underflow: 2 gets "
						   "already waiting");
				dfr_failure_free(dfr_take_failure(g[i]));
				dfr_unref(g[i]);
				g[i] = NULL;
				continue;
			}
			getters++;
			if (!ok(dfr_add_callback(g[i], take_item_cb, NULL))) {
				dfr_cancel(g[i]);
				drop_failed(g[i], DFR_ECANCELED, "cancelled");
				g[i] = NULL;
				getters--;
			}
		}
		assert_int_equal(dfr_queue_waiting(q), getters);
	}
	/* Six puts: to the getters, then stored up to 3, then refused. */
	for (i = 0; i < 6; i++) {
		v = value_new(next);
		rc = dfr_queue_put(q, v, value_free);
		if (rc == 0) {
			next++;
			if (getters > 0)
				getters--;
			else
				stored++;
		} else {
			/* The caller keeps v. */
			if (stored == 3)
				assert_int_equal(rc, -DFR_EOVERFLOW);
			else
				assert_true(!ok(rc));
			value_free(v);
		}
		assert_int_equal(dfr_queue_size(q), stored);
		assert_int_equal(dfr_queue_waiting(q), getters);
	}
	/* The getters got the first items, in order. */
	for (i = 0; i < unit_lg.n; i++)
		assert_int_equal(unit_lg.v[i], expect++);
	dfr_queue_stats(q, &st);
	assert_int_equal(st.held, stored);
	/* Gets of stored items: failed ones leave the item stored. */
	for (i = 0; i < 2; i++) {
		errno = 0;
		if (got(d = dfr_queue_get(q))) {
			assert_true(dfr_fired(d));
			assert_int_equal(*(int *)dfr_value(d), expect++);
			stored--;
			dfr_unref(d);
		}
		assert_int_equal(dfr_queue_size(q), stored);
	}
	oom_disarm();
	for (i = 0; i < 3; i++)
		dfr_unref(g[i]);
	/* Memory is back: the rest comes out in order, then close. */
	while (stored > 0) {
		d = dfr_queue_get(q);
		assert_int_equal(*(int *)dfr_value(d), expect++);
		stored--;
		dfr_unref(d);
	}
	assert_int_equal(expect, next);
	assert_int_equal(dfr_queue_size(q), 0);
	/* Each item counted once, as it was got. */
	dfr_queue_stats(q, &st);
	assert_int_equal(st.acquisitions, next - 1);
	assert_int_equal(st.held, 0);
	assert_int_equal(st.waiting, 0);
	d = dfr_queue_get(q);
	oom_arm();
	dfr_queue_close(q);
	assert_int_equal(dfr_queue_put(q, &next, NULL), -DFR_ECLOSED);
	oom_disarm();
	drop_failed(d, DFR_ECLOSED, "queue closed");
	dfr_queue_free(q);
}

static void
test_queue(void **state)
{
	(void)state;
	sweep(scenario_queue);
}

/* ------------------------------------------------------------------------ */
/* gather                                                                   */

#define NMEMBERS 5

/*
 * A gather of five: one fired before, the others fired after, two with
 * callbacks of their own. It fails only with ENOMEM (or its member's), and
 * otherwise carries every value in order.
 */
static void
scenario_gather(int fail_one)
{
	struct dfr *m[NMEMBERS], *g;
	struct dfr_gather_result *res;
	int i, j;
	int *v0 = value_new(0);

	oom_arm();
	for (i = 0; i < NMEMBERS; i++) {
		errno = 0;
		m[i] =
		    i == 0 ? dfr_succeed(v0, value_free) : dfr_new(NULL, NULL);
		if (!got(m[i])) {
			if (i == 0)
				value_free(v0); /* the caller's still */
			for (j = 0; j < i; j++)
				dfr_unref(m[j]);
			oom_disarm();
			return;
		}
		if (i >= 3)
			ok(dfr_add_callback(m[i], unit_log_cb, (void *)(intptr_t)i));
	}
	/* The gather takes the references it is given: keep ours. */
	for (i = 0; i < NMEMBERS; i++)
		dfr_ref(m[i]);
	errno = 0;
	g = dfr_gather(m, NMEMBERS, DFR_GATHER_CONSUME_ERRORS);
	if (!got(g)) {
		/* The gather dropped its references: ours are left. */
		for (i = 0; i < NMEMBERS; i++) {
			assert_int_equal(m[i]->refs, 1);
			dfr_unref(m[i]);
		}
		oom_disarm();
		return;
	}
	for (i = 1; i < NMEMBERS; i++) {
		if (fail_one && i == 2)
			assert_int_equal(dfr_errback(m[i], EIO, "io"), 0);
		else
			assert_int_equal(
			    dfr_callback(m[i], value_new(i), value_free), 0);
	}
	oom_disarm();
	assert_true(dfr_fired(g));
	if (dfr_failed(g)) {
		const struct dfr_failure *f = dfr_failure(g);

		if (f->code == EIO) {
			assert_true(fail_one);
			if (f->index != -1) {
				assert_int_equal(f->index, 2);
				assert_string_equal(f->message, "member 2: io");
			} else {
				assert_true(oom.failed > 0);
			}
		} else {
			assert_true(oom.failed > 0);
			assert_int_equal(f->code, ENOMEM);
		}
		dfr_failure_free(dfr_take_failure(g));
	} else {
		assert_false(fail_one);
		res = dfr_value(g);
		assert_int_equal(res->n, NMEMBERS);
		for (i = 0; i < NMEMBERS; i++)
			assert_int_equal(*(int *)res->values[i], i);
	}
	for (i = 0; i < NMEMBERS; i++)
		dfr_unref(m[i]);
	dfr_unref(g);
}

static void
scenario_gather_ok(void)
{
	scenario_gather(0);
}

static void
scenario_gather_fail(void)
{
	scenario_gather(1);
}

/* A gather of none: an empty result at once. */
static void
scenario_gather_empty(void)
{
	struct dfr *g;

	oom_arm();
	errno = 0;
	if (got(g = dfr_gather(NULL, 0, 0))) {
		assert_true(dfr_fired(g));
		assert_int_equal(((struct dfr_gather_result *)dfr_value(g))->n,
				 0);
		dfr_unref(g);
	}
	oom_disarm();
}

/* Cancelling a gather cancels its members, memory or not. */
static void
scenario_gather_cancel(void)
{
	struct dfr *m[3], *g;
	int i;

	oom_arm();
	for (i = 0; i < 3; i++) {
		errno = 0;
		if (!got(m[i] = dfr_new(NULL, NULL))) {
			while (i-- > 0) {
				dfr_unref(m[i]);
				dfr_unref(m[i]);
			}
			oom_disarm();
			return;
		}
		dfr_ref(m[i]);
	}
	errno = 0;
	if (!got(g = dfr_gather(m, 3, DFR_GATHER_CONSUME_ERRORS))) {
		for (i = 0; i < 3; i++)
			dfr_unref(m[i]);
		oom_disarm();
		return;
	}
	dfr_cancel(g);
	oom_disarm();
	for (i = 0; i < 3; i++)
		drop_failed(m[i], DFR_ECANCELED, "cancelled");
	assert_true(dfr_failed(g));
	assert_int_equal(dfr_failure_code(g), DFR_ECANCELED);
	dfr_failure_free(dfr_take_failure(g));
	dfr_unref(g);
}

static void
test_gather(void **state)
{
	(void)state;
	sweep(scenario_gather_empty);
	sweep(scenario_gather_ok);
	sweep(scenario_gather_fail);
	sweep(scenario_gather_cancel);
}

/* Each test starts with memory. */
static int
oom_setup(void **state)
{
	memset(&oom, 0, sizeof oom);
	return unit_setup(state);
}

/* Say which run a failed assertion was in. */
static int
oom_teardown(void **state)
{
	if (oom.armed || oom.fail_at != 0)
		print_message("# last run: allocation %ld%s failing\n",
			      oom.fail_at, oom.sticky ? " and on" : "");
	oom.armed = 0;
	return unit_teardown(state);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_constructors, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_callbacks, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_errback, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_chain, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_chain_epipe, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_lock, oom_setup, oom_teardown),
	    cmocka_unit_test_setup_teardown(test_lock_run, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_lock_run_busy, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_lock_run_freed, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_lock_timeout, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_sem, oom_setup, oom_teardown),
	    cmocka_unit_test_setup_teardown(test_sem_refused, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_queue, oom_setup,
					    oom_teardown),
	    cmocka_unit_test_setup_teardown(test_gather, oom_setup,
					    oom_teardown),
	};

	/* Every deferred from malloc, none from the cache: all can fail. */
	dfr__cache.state = -1;
	event_set_mem_functions(__wrap_malloc, __wrap_realloc, __wrap_free);
	return cmocka_run_group_tests_name("oom", tests, NULL, NULL);
}
