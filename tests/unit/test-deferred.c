/*
 * test-deferred.c: Deferred results, callbacks, chaining, cancellation,
 * re-entrancy, ownership and unhandled-failure reporting.
 */
#include "config.h"

#include <unistd.h>

#include "unit.h"

static void
add_one(struct dfr *d, void *arg)
{
	int *v = dfr_value(d);

	(void)arg;
	*v += 1;
}

static void
fail_cb(struct dfr *d, void *arg)
{
	(void)arg;
	dfr_set_failure(d, EIO, "broken %d", 7);
}

static void
recover_eb(struct dfr *d, void *arg)
{
	struct dfr_failure *f = dfr_take_failure(d);

	assert_non_null(f);
	assert_int_equal(f->code, EIO);
	assert_string_equal(f->message, "broken 7");
	assert_int_equal(f->index, -1);
	dfr_failure_free(f);
	dfr_set_value(d, arg, NULL);
}

/* Callbacks run in order, each sees the result the previous left. */
static void
test_callbacks_in_order(void **state)
{
	struct dfr *d = dfr_new(NULL, NULL);

	(void)state;
	unit_lg.n = 0;
	assert_false(dfr_fired(d));
	assert_null(dfr_value(d));
	assert_int_equal(dfr_add_callback(d, add_one, NULL), 0);
	assert_int_equal(dfr_add_callback(d, unit_log_cb, (void *)1), 0);
	assert_int_equal(dfr_add_callback(d, add_one, NULL), 0);
	assert_int_equal(unit_lg.n, 0); /* nothing runs before the fire */
	assert_int_equal(dfr_callback(d, unit_int(40), unit_free_cb), 0);
	assert_int_equal(unit_lg.n, 1); /* ran synchronously inside dfr_callback */
	assert_true(dfr_fired(d));
	assert_false(dfr_failed(d));
	assert_int_equal(*(int *)dfr_value(d), 42);
	/* Added after firing: runs at once. */
	assert_int_equal(dfr_add_callback(d, unit_log_cb, (void *)2), 0);
	assert_int_equal(unit_lg.n, 2);
	assert_int_equal(unit_lg.v[1], 2);
	dfr_unref(d);
	assert_int_equal(unit_freed, 1);
}

/* Errors go to the next errback; an errback that recovers returns to callbacks.
 */
static void
test_errback_alternation(void **state)
{
	static int recovered = 5;
	struct dfr *d = dfr_succeed(NULL, NULL);

	(void)state;
	unit_lg.n = 0;
	dfr_add_callbacks(d, fail_cb, NULL, NULL);
	dfr_add_callbacks(d, unit_log_cb, unit_log_eb, (void *)1); /* errback: -1 */
	dfr_add_callback(d, unit_log_cb, (void *)2);		 /* skipped */
	dfr_add_errback(d, recover_eb, &recovered);
	dfr_add_errback(d, unit_log_eb, (void *)3); /* skipped */
	dfr_add_both(d, unit_log_cb, (void *)4);
	assert_int_equal(unit_lg.n, 2);
	assert_int_equal(unit_lg.v[0], -1);
	assert_int_equal(unit_lg.v[1], 4);
	assert_false(dfr_failed(d));
	assert_ptr_equal(dfr_value(d), &recovered);
	dfr_unref(d);
	assert_int_equal(unit_unhandled, 0);
}

/* Firing twice is an error the API returns; the caller keeps the value. */
static void
test_fire_twice(void **state)
{
	struct dfr *d = dfr_new(NULL, NULL);
	int *v = unit_int(1);
	struct dfr_failure *f;

	(void)state;
	assert_int_equal(dfr_callback(d, unit_int(0), unit_free_cb), 0);
	assert_int_equal(dfr_callback(d, v, unit_free_cb), -EALREADY);
	assert_int_equal(dfr_errback(d, EIO, "x"), -EALREADY);
	f = dfr_failure_new(EIO, "y");
	assert_int_equal(dfr_errback_failure(d, f), -EALREADY); /* f freed */
	assert_int_equal(unit_freed, 0);
	free(v);
	assert_int_equal(*(int *)dfr_value(d), 0);
	dfr_unref(d);
	assert_int_equal(unit_freed, 1);
}

/* dfr_succeed and dfr_fail; a failure nobody handled is reported at free. */
static void
test_unhandled_reported(void **state)
{
	struct dfr *d = dfr_fail(EPIPE, "pipe %s", "gone");

	(void)state;
	assert_true(dfr_fired(d));
	assert_true(dfr_failed(d));
	assert_int_equal(dfr_failure_code(d), EPIPE);
	assert_string_equal(dfr_failure(d)->message, "pipe gone");
	assert_null(dfr_value(d));
	dfr_unref(d);
	assert_int_equal(unit_unhandled, 1);
	assert_int_equal(unit_unhandled_code, EPIPE);

	/* An errback that passes the failure on does not handle it. */
	d = dfr_new(NULL, NULL);
	dfr_add_errback(d, unit_log_eb, (void *)1);
	dfr_errback(d, EIO, "late");
	dfr_unref(d);
	assert_int_equal(unit_unhandled, 2);

	/* A taken failure is not reported. */
	d = dfr_fail(EIO, "taken");
	dfr_failure_free(dfr_take_failure(d));
	assert_false(dfr_failed(d));
	dfr_unref(d);
	assert_int_equal(unit_unhandled, 2);
}

/* The default reporter writes one line to stderr. */
static void
test_default_reporter(void **state)
{
	char path[] = "/tmp/dfr-unit-XXXXXX";
	char buf[256] = "";
	uint64_t before = dfr_unhandled_count();
	int fd = mkstemp(path), saved;
	FILE *fp;

	(void)state;
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);
	dfr_set_unhandled_cb(NULL, NULL);
	dfr_unref(dfr_fail(ENOENT, "no such counter"));
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(fd);
	fp = fopen(path, "r");
	assert_non_null(fp);
	assert_non_null(fgets(buf, sizeof buf, fp));
	fclose(fp);
	unlink(path);
	assert_non_null(strstr(buf, "no such counter"));
	assert_int_equal(dfr_unhandled_count(), before + 1);
}

/* Taking and replacing values releases them exactly once. */
static void
test_value_ownership(void **state)
{
	struct dfr *d = dfr_succeed(unit_int(1), unit_free_cb);
	int *v;

	(void)state;
	dfr_set_value(d, unit_int(2), unit_free_cb); /* releases 1 */
	assert_int_equal(unit_freed, 1);
	v = dfr_take_value(d);
	assert_int_equal(*v, 2);
	assert_null(dfr_value(d));
	free(v);
	dfr_set_failure(d, EIO, "x");
	dfr_set_failure_obj(d, dfr_failure_new(EBADF, "y")); /* frees x */
	assert_int_equal(dfr_failure_code(d), EBADF);
	dfr_set_value(d, unit_int(3), unit_free_cb); /* recovers */
	dfr_unref(d);
	assert_int_equal(unit_freed, 2);
	assert_int_equal(unit_unhandled, 0);

	/* A never fired deferred with callbacks, freed: they never run. */
	unit_lg.n = 0;
	d = dfr_new(NULL, NULL);
	dfr_add_both(d, unit_log_cb, (void *)1);
	dfr_unref(d);
	assert_int_equal(unit_lg.n, 0);
}

/* A callback added from inside a running callback runs after it returns. */
static void
adds_more(struct dfr *d, void *arg)
{
	unit_log_add(&unit_lg, 1);
	dfr_add_callback(d, unit_log_cb, (void *)3);
	unit_log_add(&unit_lg, 2); /* the added one has not run yet */
	(void)arg;
}

static void
test_add_from_callback(void **state)
{
	struct dfr *d = dfr_new(NULL, NULL);

	(void)state;
	unit_lg.n = 0;
	dfr_add_callback(d, adds_more, NULL);
	dfr_add_callback(d, unit_log_cb, (void *)4);
	dfr_callback(d, NULL, NULL);
	assert_int_equal(unit_lg.n, 4);
	assert_int_equal(unit_lg.v[0], 1);
	assert_int_equal(unit_lg.v[1], 2);
	assert_int_equal(unit_lg.v[2], 4); /* already in the chain before */
	assert_int_equal(unit_lg.v[3], 3); /* went to the end */
	dfr_unref(d);
}

/* Firing another deferred inside a callback: it runs after the callback. */
static struct dfr *other;

static void
fires_other(struct dfr *d, void *arg)
{
	unit_log_add(&unit_lg, 1);
	dfr_callback(other, NULL, NULL);
	unit_log_add(&unit_lg, 2); /* other's chain has not run yet */
	(void)d;
	(void)arg;
}

static void
test_trampoline(void **state)
{
	struct dfr *d = dfr_new(NULL, NULL);

	(void)state;
	unit_lg.n = 0;
	other = dfr_new(NULL, NULL);
	dfr_add_callback(other, unit_log_cb, (void *)3);
	dfr_add_callback(d, fires_other, NULL);
	dfr_callback(d, NULL, NULL);
	/* ... but before the outermost call returned. */
	assert_int_equal(unit_lg.n, 3);
	assert_int_equal(unit_lg.v[1], 2);
	assert_int_equal(unit_lg.v[2], 3);
	dfr_unref(d);
	dfr_unref(other);
}

/* Freeing a deferred inside its own callback: freed on the way out. */
static void
drops_self(struct dfr *d, void *arg)
{
	dfr_unref(d); /* the caller's last reference */
	/* d is still valid until the runner lets go of it. */
	assert_int_equal(*(int *)dfr_value(d), 9);
	(void)arg;
}

static void
test_free_in_own_callback(void **state)
{
	struct dfr *d = dfr_new(NULL, NULL);

	(void)state;
	unit_lg.n = 0;
	dfr_add_callback(d, drops_self, NULL);
	dfr_add_callback(d, unit_log_cb, (void *)1); /* still runs */
	dfr_callback(d, unit_int(9), unit_free_cb);
	assert_int_equal(unit_lg.n, 1);
	assert_int_equal(unit_freed, 1); /* freed by the runner */
	/* Also when the callbacks run at add time. */
	d = dfr_succeed(unit_int(9), unit_free_cb);
	dfr_add_callback(d, drops_self, NULL);
	assert_int_equal(unit_freed, 2);
}

/* Cancel with no canceller; late fires; repeated cancels. */
static void
test_cancel_no_canceller(void **state)
{
	struct dfr *d = dfr_new(NULL, NULL);

	(void)state;
	unit_lg.n = 0;
	dfr_add_callbacks(d, unit_log_cb, unit_log_eb, (void *)1);
	dfr_cancel(d);
	assert_int_equal(unit_lg.n, 1);
	assert_int_equal(unit_lg.v[0], -1);
	assert_int_equal(dfr_failure_code(d), DFR_ECANCELED);
	dfr_cancel(d); /* nothing more */
	assert_int_equal(unit_lg.n, 1);
	/* One late fire is swallowed (and its value released), a second is an
	 * error. */
	assert_int_equal(dfr_callback(d, unit_int(1), unit_free_cb), 0);
	assert_int_equal(unit_freed, 1);
	assert_int_equal(dfr_errback(d, EIO, "late"), -EALREADY);
	assert_int_equal(dfr_failure_code(d), DFR_ECANCELED);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	assert_int_equal(unit_unhandled, 0);
}

/* A canceller runs exactly once, receives the deferred, and may fire it. */
static int cancels;
static struct dfr *cancelled_d;

static void
canceller_nothing(struct dfr *d, void *arg)
{
	cancels++;
	cancelled_d = d;
	(void)arg;
}

static void
canceller_value(struct dfr *d, void *arg)
{
	cancels++;
	dfr_callback(d, arg, NULL);
}

static void
canceller_failure(struct dfr *d, void *arg)
{
	cancels++;
	dfr_errback(d, ETIME, "stopped by canceller");
	(void)arg;
}

static void
test_canceller(void **state)
{
	static int won = 3;
	struct dfr *d;

	(void)state;
	cancels = 0;
	d = dfr_new(canceller_nothing, NULL);
	dfr_cancel(d);
	dfr_cancel(d);
	assert_int_equal(cancels, 1);
	assert_ptr_equal(cancelled_d, d);
	assert_int_equal(dfr_failure_code(d), DFR_ECANCELED);
	/*
	 * A canceller that left d unfired: one late fire is still swallowed
	 * (unlike Twisted, which does that only without a canceller).
	 */
	assert_int_equal(dfr_callback(d, unit_int(1), unit_free_cb), 0);
	assert_int_equal(unit_freed, 1);
	assert_int_equal(dfr_callback(d, NULL, NULL), -EALREADY);
	assert_int_equal(dfr_failure_code(d), DFR_ECANCELED);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);

	d = dfr_new(canceller_value, &won); /* success wins */
	dfr_cancel(d);
	assert_false(dfr_failed(d));
	assert_ptr_equal(dfr_value(d), &won);
	assert_int_equal(dfr_callback(d, NULL, NULL), -EALREADY);
	dfr_unref(d);

	d = dfr_new(canceller_failure, NULL); /* another failure wins */
	dfr_cancel(d);
	assert_int_equal(dfr_failure_code(d), ETIME);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	assert_int_equal(cancels, 3);

	/* Cancel after the fire: no effect, the canceller is not called. */
	d = dfr_new(canceller_nothing, NULL);
	dfr_callback(d, &won, NULL);
	dfr_cancel(d);
	assert_int_equal(cancels, 3);
	assert_ptr_equal(dfr_value(d), &won);
	dfr_unref(d);
}

/* A canceller that cancels again (re-entrant): still called once. */
static void
canceller_recancel(struct dfr *d, void *arg)
{
	cancels++;
	dfr_cancel(d);
	assert_false(dfr_fired(d)); /* the inner cancel did nothing */
	(void)arg;
}

static void
test_cancel_reentrant(void **state)
{
	struct dfr *d = dfr_new(canceller_recancel, NULL);

	(void)state;
	cancels = 0;
	dfr_cancel(d);
	assert_int_equal(cancels, 1);
	assert_int_equal(dfr_failure_code(d), DFR_ECANCELED);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
}

/* Cancelling from inside a callback of another deferred. */
static void
cancels_other(struct dfr *d, void *arg)
{
	dfr_cancel(arg);
	unit_log_add(&unit_lg, 1); /* the cancelled one's callbacks wait for us */
	(void)d;
}

static void
test_cancel_from_callback(void **state)
{
	struct dfr *a = dfr_new(NULL, NULL), *b = dfr_new(NULL, NULL);

	(void)state;
	unit_lg.n = 0;
	dfr_add_callback(a, cancels_other, b);
	dfr_add_errback(b, unit_log_eb, (void *)2);
	dfr_callback(a, NULL, NULL);
	assert_int_equal(unit_lg.n, 2);
	assert_int_equal(unit_lg.v[0], 1);
	assert_int_equal(unit_lg.v[1], -2);
	dfr_failure_free(dfr_take_failure(b));
	dfr_unref(a);
	dfr_unref(b);
}

/* Chaining: a callback waits for an inner deferred. */
static struct dfr *inner;

static void
wait_inner(struct dfr *d, void *arg)
{
	dfr_wait(d, dfr_ref(inner));
	(void)arg;
}

static void
test_chaining(void **state)
{
	struct dfr *d = dfr_new(NULL, NULL);

	(void)state;
	unit_lg.n = 0;
	inner = dfr_new(NULL, NULL);
	dfr_add_callback(d, wait_inner, NULL);
	dfr_callback(d, unit_int(1), unit_free_cb);
	assert_int_equal(unit_freed, 1); /* replaced by the wait */
	assert_true(dfr_paused(d));
	assert_true(dfr_fired(d));
	/* Added to the middle deferred after chaining: run after inner fires.
	 */
	dfr_add_callback(d, unit_log_cb, (void *)1);
	dfr_add_callback(d, add_one, NULL);
	dfr_add_callback(d, unit_log_cb, (void *)2);
	assert_int_equal(unit_lg.n, 0);
	dfr_callback(inner, unit_int(10), unit_free_cb);
	assert_false(dfr_paused(d));
	assert_int_equal(unit_lg.n, 2);
	assert_int_equal(unit_lg.v[0], 1);
	assert_int_equal(unit_lg.v[1], 2);
	assert_int_equal(*(int *)dfr_value(d), 11);
	assert_null(dfr_value(inner)); /* the value moved */
	dfr_unref(inner);
	dfr_unref(d);
	assert_int_equal(unit_freed, 2);

	/* An inner that fired already, and a failing one. */
	inner = dfr_fail(EIO, "inner failed");
	d = dfr_succeed(NULL, NULL);
	dfr_add_callback(d, wait_inner, NULL);
	assert_int_equal(dfr_failure_code(d), EIO);
	assert_false(dfr_failed(inner));
	dfr_unref(inner);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	assert_int_equal(unit_unhandled, 0);
}

static void wait_next(struct dfr *d, void *arg);

/* A callback that logs the value it sees (an int, -1 for none). */
static void
log_value_cb(struct dfr *d, void *arg)
{
	int *v = dfr_value(d);

	(void)arg;
	unit_log_add(&unit_lg, v != NULL ? *v : -1);
}

/* A callback that replaces the value with a new int 99. */
static void
set_99(struct dfr *d, void *arg)
{
	(void)arg;
	dfr_set_value(d, unit_int(99), unit_free_cb);
}

/* A callback that logs 1 and adds one that logs 4 to its own deferred. */
static void
add_log_4(struct dfr *d, void *arg)
{
	(void)arg;
	unit_log_add(&unit_lg, 1);
	dfr_add_callback(d, unit_log_cb, (void *)4);
}

/*
 * As in Twisted, d takes inner's result as it is when the pairs inner had
 * when d began to wait have run: pairs added to inner after that run once
 * d has gone on, and see a NULL value; they cannot change d's result.
 */
static void
test_chaining_resume_point(void **state)
{
	struct dfr *d = dfr_succeed(NULL, NULL), *x;

	(void)state;
	unit_lg.n = 0;
	inner = dfr_new(NULL, NULL);
	dfr_add_callback(inner, add_one, NULL); /* before the wait */
	dfr_add_callback(d, wait_inner, NULL);
	assert_true(dfr_paused(d));
	dfr_add_callback(inner, log_value_cb, NULL); /* after the wait */
	dfr_add_callback(inner, set_99, NULL);
	dfr_add_callback(d, log_value_cb, NULL);
	dfr_callback(inner, unit_int(5), unit_free_cb);
	assert_false(dfr_paused(d));
	/* d went on first with 6, then inner's later pairs saw nothing. */
	assert_int_equal(unit_lg.n, 2);
	assert_int_equal(unit_lg.v[0], 6);
	assert_int_equal(unit_lg.v[1], -1);
	assert_int_equal(*(int *)dfr_value(d), 6);
	assert_int_equal(*(int *)dfr_value(inner), 99);
	dfr_unref(inner);
	dfr_unref(d);
	assert_int_equal(unit_freed, 2);

	/*
	 * The same when inner's own chain pauses first: d resumes where inner
	 * stood at the wait, after inner's wait on x is over.
	 */
	unit_lg.n = 0;
	x = dfr_new(NULL, NULL);
	inner = dfr_new(NULL, NULL);
	dfr_add_callback(inner, wait_next, x);
	d = dfr_succeed(NULL, NULL);
	dfr_add_callback(d, wait_inner, NULL);
	dfr_add_callback(d, log_value_cb, NULL);
	dfr_callback(inner, NULL, NULL);
	assert_true(dfr_paused(inner));
	dfr_add_callback(inner, set_99, NULL);
	dfr_add_callback(inner, log_value_cb, NULL);
	dfr_callback(x, unit_int(3), unit_free_cb);
	assert_false(dfr_paused(d));
	assert_int_equal(unit_lg.n, 2);
	assert_int_equal(unit_lg.v[0], 3);
	assert_int_equal(unit_lg.v[1], 99);
	assert_int_equal(*(int *)dfr_value(d), 3);
	dfr_unref(x);
	dfr_unref(inner);
	dfr_unref(d);
	assert_int_equal(unit_freed, 4);

	/*
	 * Depth first, as in Twisted: d resumes inner, inner's end resumes e,
	 * and only then do the pairs added to x after inner began to wait run.
	 */
	unit_lg.n = 0;
	x = dfr_new(NULL, NULL);
	inner = dfr_succeed(NULL, NULL);
	dfr_add_callback(inner, wait_next, x);
	dfr_add_callback(inner, unit_log_cb, (void *)1);
	dfr_add_callback(x, unit_log_cb, (void *)3); /* after inner's wait */
	d = dfr_new(NULL, NULL);
	dfr_add_callback(d, wait_inner, NULL);
	dfr_add_callback(d, unit_log_cb, (void *)2);
	dfr_callback(d, NULL, NULL);
	dfr_callback(x, NULL, NULL);
	assert_int_equal(unit_lg.n, 3);
	assert_int_equal(unit_lg.v[0], 1);
	assert_int_equal(unit_lg.v[1], 2);
	assert_int_equal(unit_lg.v[2], 3);
	dfr_unref(x);
	dfr_unref(inner);
	dfr_unref(d);

	/*
	 * A pair that one of inner's own callbacks adds, before the resume
	 * point is reached, still runs after d has gone on.
	 */
	unit_lg.n = 0;
	inner = dfr_new(NULL, NULL);
	dfr_add_callback(inner, add_log_4, NULL); /* before the wait */
	d = dfr_new(NULL, NULL);
	dfr_add_callback(d, wait_inner, NULL);
	dfr_add_callback(d, unit_log_cb, (void *)2);
	dfr_callback(d, NULL, NULL);
	dfr_add_callback(inner, unit_log_cb, (void *)3); /* after the wait */
	dfr_callback(inner, NULL, NULL);
	assert_int_equal(unit_lg.n, 4);
	assert_int_equal(unit_lg.v[0], 1);
	assert_int_equal(unit_lg.v[1], 2);
	assert_int_equal(unit_lg.v[2], 3);
	assert_int_equal(unit_lg.v[3], 4);
	dfr_unref(inner);
	dfr_unref(d);
	assert_int_equal(unit_unhandled, 0);
}

/* Cancelling a deferred paused on an inner one cancels the inner one. */
static void
test_cancel_forwarded(void **state)
{
	struct dfr *d = dfr_succeed(NULL, NULL);

	(void)state;
	cancels = 0;
	inner = dfr_new(canceller_nothing, NULL);
	dfr_add_callback(d, wait_inner, NULL);
	assert_true(dfr_paused(d));
	dfr_cancel(d);
	assert_int_equal(cancels, 1);
	assert_ptr_equal(cancelled_d, inner);
	assert_false(dfr_paused(d));
	assert_int_equal(dfr_failure_code(d), DFR_ECANCELED);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	dfr_unref(inner);
	assert_int_equal(unit_unhandled, 0);
}

/* A deferred chained to itself, or chained twice, is an error, not a hang. */
static void
wait_self(struct dfr *d, void *arg)
{
	dfr_wait(d, dfr_ref(d));
	(void)arg;
}

/* Waits on what a failed constructor returned. */
static void
wait_null(struct dfr *d, void *arg)
{
	dfr_wait(d, NULL);
	(void)arg;
}

static void
test_cycle(void **state)
{
	struct dfr *d = dfr_new(NULL, NULL), *e;

	(void)state;
	dfr_add_callback(d, wait_self, NULL);
	dfr_callback(d, NULL, NULL);
	assert_int_equal(dfr_failure_code(d), DFR_ECYCLE);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);

	/* Nothing to wait for: the chain fails with EINVAL, not paused. */
	d = dfr_succeed(NULL, NULL);
	dfr_add_callback(d, wait_null, NULL);
	assert_false(dfr_paused(d));
	assert_int_equal(dfr_failure_code(d), EINVAL);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);

	/* inner already waited on by d: e cannot wait on it too. */
	inner = dfr_new(NULL, NULL);
	d = dfr_succeed(NULL, NULL);
	dfr_add_callback(d, wait_inner, NULL);
	e = dfr_succeed(NULL, NULL);
	dfr_add_callback(e, wait_inner, NULL);
	assert_int_equal(dfr_failure_code(e), DFR_ECYCLE);
	dfr_failure_free(dfr_take_failure(e));
	dfr_unref(e);
	dfr_callback(inner, NULL, NULL);
	dfr_unref(d);
	dfr_unref(inner);

	/*
	 * d waits on inner; inner waiting on d would be a cycle. (The pair is
	 * added before d waits: one added after runs once d has resumed, when
	 * waiting on d is no cycle.)
	 */
	inner = dfr_new(NULL, NULL);
	d = dfr_succeed(NULL, NULL);
	dfr_add_callback(inner, wait_next, d);
	dfr_add_callback(d, wait_inner, NULL);
	dfr_callback(inner, NULL, NULL);
	assert_false(dfr_paused(d));
	assert_int_equal(dfr_failure_code(d), DFR_ECYCLE);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	dfr_unref(inner);

	/* A paused deferred dropped by its caller: its chain still goes on. */
	unit_lg.n = 0;
	inner = dfr_new(NULL, NULL);
	d = dfr_succeed(NULL, NULL);
	dfr_add_callback(d, wait_inner, NULL);
	dfr_add_callback(d, unit_log_cb, (void *)5);
	dfr_unref(d);
	assert_int_equal(unit_lg.n, 0);
	assert_int_equal(dfr_callback(inner, unit_int(1), unit_free_cb), 0);
	assert_int_equal(unit_lg.n, 1);
	assert_int_equal(unit_freed, 1); /* moved into d, released with it */
	dfr_unref(inner);

	/* The inner one freed unfired: the waiting chain goes on with EPIPE. */
	inner = dfr_new(NULL, NULL);
	d = dfr_succeed(NULL, NULL);
	dfr_add_callback(d, wait_inner, NULL);
	assert_true(dfr_paused(d));
	dfr_unref(inner);
	assert_false(dfr_paused(d));
	assert_int_equal(dfr_failure_code(d), EPIPE);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A callback that waits twice: the second wait fails the chain with
 * DFR_ECYCLE, and the first inner no longer resumes it (nor overwrites, and
 * leaks, that failure). A result set while paused gives way to inner's.
 */
static struct dfr *inner2;
static int twice_paused;

static void
wait_twice(struct dfr *d, void *arg)
{
	dfr_wait(d, dfr_ref(inner));
	dfr_wait(d, dfr_ref(arg != NULL ? inner : inner2));
	twice_paused = dfr_paused(d);
}

static void
wait_then_set(struct dfr *d, void *arg)
{
	dfr_wait(d, dfr_ref(inner));
	if (arg != NULL)
		dfr_set_value(d, unit_int(5), unit_free_cb);
	else
		dfr_set_failure(d, EIO, "set while paused");
}

static void
test_wait_while_paused(void **state)
{
	struct dfr *d;
	int same;

	(void)state;
	for (same = 0; same < 2; same++) {
		unit_lg.n = 0;
		inner = dfr_new(NULL, NULL);
		inner2 = dfr_new(NULL, NULL);
		d = dfr_new(NULL, NULL);
		dfr_add_callback(d, wait_twice, same ? &same : NULL);
		dfr_add_errback(d, unit_log_eb, (void *)1);
		assert_int_equal(dfr_callback(d, NULL, NULL), 0);
		assert_false(twice_paused);
		assert_int_equal(unit_lg.n, 1);
		assert_int_equal(dfr_failure_code(d), DFR_ECYCLE);
		/* inner is free again: it fires on its own, d is untouched. */
		assert_int_equal(dfr_callback(inner, unit_int(1), unit_free_cb),
				 0);
		assert_int_equal(unit_lg.n, 1);
		assert_int_equal(dfr_failure_code(d), DFR_ECYCLE);
		assert_int_equal(*(int *)dfr_value(inner), 1);
		dfr_unref(inner);
		dfr_unref(inner2);
		dfr_failure_free(dfr_take_failure(d));
		dfr_unref(d);
	}
	assert_int_equal(unit_freed, 2);

	/* A value, then a failure, set on d while it waits. */
	for (same = 0; same < 2; same++) {
		inner = dfr_new(NULL, NULL);
		d = dfr_succeed(NULL, NULL);
		dfr_add_callback(d, wait_then_set, same ? &same : NULL);
		assert_true(dfr_paused(d));
		assert_int_equal(dfr_callback(inner, unit_int(2), unit_free_cb),
				 0);
		assert_false(dfr_failed(d));
		assert_int_equal(*(int *)dfr_value(d), 2);
		dfr_unref(d);
		dfr_unref(inner);
	}
	assert_int_equal(unit_freed, 5);
	/* Also when inner is freed unfired (EPIPE). */
	inner = dfr_new(NULL, NULL);
	d = dfr_succeed(NULL, NULL);
	dfr_add_callback(d, wait_then_set, &same);
	dfr_unref(inner);
	assert_int_equal(dfr_failure_code(d), EPIPE);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
	assert_int_equal(unit_freed, 6);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A cancel made while d's chain is queued to run (d fired or resumed inside
 * a callback) acts as it would in Twisted, where that chain would have run
 * already: if the chain then pauses, the cancel goes to what it waits for;
 * if it ends, the cancel did nothing, and a later pause is not cancelled.
 */
static struct dfr *queued_d;

static void
fire_then_cancel(struct dfr *d, void *arg)
{
	assert_int_equal(dfr_callback(queued_d, arg, NULL), 0);
	dfr_cancel(queued_d); /* its chain has not run yet */
	assert_false(dfr_paused(queued_d));
	(void)d;
}

static void
wait_inner2(struct dfr *d, void *arg)
{
	dfr_wait(d, dfr_ref(inner2));
	(void)arg;
}

static void
add_wait_inner(struct dfr *d, void *arg)
{
	dfr_add_callback(queued_d, wait_inner, NULL);
	(void)d;
	(void)arg;
}

static void
fire_inner_then_cancel(struct dfr *d, void *arg)
{
	assert_int_equal(dfr_callback(inner, NULL, NULL), 0);
	dfr_cancel(queued_d); /* paused on inner, whose chain is queued */
	(void)d;
	(void)arg;
}

static void
fire_inner_then_cancel_it(struct dfr *d, void *arg)
{
	assert_int_equal(dfr_callback(inner, NULL, NULL), 0);
	dfr_cancel(inner); /* fired, its chain queued: a cancel of inner only */
	(void)d;
	(void)arg;
}

/* queued_d paused on inner, a wait on inner2 next; then x runs fn. */
static struct dfr *
paused_then(dfr_cb fn)
{
	struct dfr *x;

	inner = dfr_new(NULL, NULL);
	inner2 = dfr_new(canceller_nothing, NULL);
	queued_d = dfr_succeed(NULL, NULL);
	dfr_add_callback(queued_d, wait_inner, NULL);
	dfr_add_callback(queued_d, wait_inner2, NULL);
	assert_true(dfr_paused(queued_d));
	x = dfr_new(NULL, NULL);
	dfr_add_callback(x, fn, NULL);
	assert_int_equal(dfr_callback(x, NULL, NULL), 0);
	return x;
}

static void
test_cancel_queued(void **state)
{
	static int v = 1;
	struct dfr *x;

	(void)state;
	/* The chain pauses: the cancel reaches the inner deferred. */
	cancels = 0;
	unit_lg.n = 0;
	inner = dfr_new(canceller_nothing, NULL);
	queued_d = dfr_new(NULL, NULL);
	dfr_add_callback(queued_d, wait_inner, NULL);
	dfr_add_errback(queued_d, unit_log_eb, (void *)1);
	x = dfr_new(NULL, NULL);
	dfr_add_callback(x, fire_then_cancel, &v);
	assert_int_equal(dfr_callback(x, NULL, NULL), 0);
	assert_int_equal(cancels, 1);
	assert_ptr_equal(cancelled_d, inner);
	assert_false(dfr_paused(queued_d));
	assert_int_equal(unit_lg.n, 1);
	assert_int_equal(dfr_failure_code(queued_d), DFR_ECANCELED);
	dfr_failure_free(dfr_take_failure(queued_d));
	dfr_unref(queued_d);
	dfr_unref(inner);
	dfr_unref(x);

	/* The chain ends: nothing; a wait added later is not cancelled. */
	queued_d = dfr_new(NULL, NULL);
	dfr_add_callback(queued_d, unit_log_cb, (void *)2);
	x = dfr_new(NULL, NULL);
	dfr_add_callback(x, fire_then_cancel, &v);
	assert_int_equal(dfr_callback(x, NULL, NULL), 0);
	assert_ptr_equal(dfr_value(queued_d), &v);
	inner = dfr_new(canceller_nothing, NULL);
	dfr_add_callback(queued_d, wait_inner, NULL);
	assert_true(dfr_paused(queued_d));
	assert_int_equal(cancels, 1);
	assert_int_equal(dfr_callback(inner, &v, NULL), 0);
	assert_false(dfr_paused(queued_d));
	dfr_unref(queued_d);
	dfr_unref(inner);
	dfr_unref(x);

	/*
	 * Paused on inner, which fires (queued) just before d is cancelled:
	 * d resumes, and its next pause is cancelled.
	 */
	x = paused_then(fire_inner_then_cancel);
	assert_int_equal(cancels, 2);
	assert_ptr_equal(cancelled_d, inner2);
	assert_int_equal(dfr_failure_code(queued_d), DFR_ECANCELED);
	dfr_failure_free(dfr_take_failure(queued_d));
	dfr_unref(queued_d);
	dfr_unref(inner);
	dfr_unref(inner2);
	dfr_unref(x);

	/*
	 * The same, but the cancel is made on inner, not on d: in Twisted it
	 * does nothing (inner's chain has ended), so d's next pause stays.
	 */
	x = paused_then(fire_inner_then_cancel_it);
	assert_int_equal(cancels, 2);
	assert_true(dfr_paused(queued_d));
	assert_int_equal(dfr_callback(inner2, &v, NULL), 0);
	assert_false(dfr_paused(queued_d));
	assert_ptr_equal(dfr_value(queued_d), &v);
	dfr_unref(queued_d);
	dfr_unref(inner);
	dfr_unref(inner2);
	dfr_unref(x);

	/*
	 * Fired inside a callback, but with no pairs: no chain is queued, so
	 * the cancel does nothing, and a pause added next is not cancelled.
	 */
	queued_d = dfr_new(NULL, NULL);
	inner = dfr_new(canceller_nothing, NULL);
	x = dfr_new(NULL, NULL);
	dfr_add_callback(x, fire_then_cancel, &v);
	dfr_add_callback(x, add_wait_inner, NULL);
	assert_int_equal(dfr_callback(x, NULL, NULL), 0);
	assert_true(dfr_paused(queued_d));
	assert_int_equal(cancels, 2);
	assert_int_equal(dfr_callback(inner, &v, NULL), 0);
	assert_ptr_equal(dfr_value(queued_d), &v);
	dfr_unref(queued_d);
	dfr_unref(inner);
	dfr_unref(x);

	/*
	 * Fired, its chain not queued (no callback running): the cancel does
	 * nothing, and a pause added later is not cancelled.
	 */
	queued_d = dfr_succeed(NULL, NULL);
	dfr_cancel(queued_d);
	inner = dfr_new(canceller_nothing, NULL);
	dfr_add_callback(queued_d, wait_inner, NULL);
	assert_true(dfr_paused(queued_d));
	assert_int_equal(cancels, 2);
	assert_int_equal(dfr_callback(inner, &v, NULL), 0);
	assert_ptr_equal(dfr_value(queued_d), &v);
	dfr_unref(queued_d);
	dfr_unref(inner);
	assert_int_equal(unit_unhandled, 0);
}

/* Long chains: N deferreds each paused on the next, resolved from the end. */
struct chain {
	size_t n;
	size_t ran;
	int cancel;
	int drop;
	struct dfr **ds;
	int code; /* d0's final failure */
};

static void
wait_next(struct dfr *d, void *arg)
{
	struct dfr *next = arg;

	unit_stack_note();
	dfr_wait(d, dfr_ref(next));
}

static void
count_end(struct dfr *d, void *arg)
{
	struct chain *c = arg;

	unit_stack_note();
	c->ran++;
	c->code = dfr_failure_code(d);
	dfr_failure_free(dfr_take_failure(d));
}

static void
chain_body(void *arg)
{
	struct chain *c = arg;
	size_t i;

	c->ds = malloc((c->n + 1) * sizeof *c->ds);
	for (i = 0; i <= c->n; i++)
		c->ds[i] = dfr_new(NULL, NULL);
	for (i = 0; i < c->n; i++)
		dfr_add_callback(c->ds[i], wait_next, c->ds[i + 1]);
	dfr_add_both(c->ds[0], count_end, c);
	/* d0 waits on d1, which waits on d2, ...: a pause chain n deep. */
	for (i = 0; i < c->n; i++)
		dfr_callback(c->ds[i], NULL, NULL);
	if (c->drop) {
		/*
		 * Drop every reference while paused: each deferred is held by
		 * the next; when the last, unfired, goes, the whole chain goes
		 * on with EPIPE (through the runner, no depth) and is freed.
		 */
		for (i = 0; i <= c->n; i++)
			dfr_unref(c->ds[i]);
		free(c->ds);
		return;
	}
	if (c->cancel)
		dfr_cancel(c->ds[0]); /* forwarded down to d_n */
	else
		dfr_callback(c->ds[c->n], NULL, NULL);
	for (i = 0; i <= c->n; i++) {
		if (i == 0 && c->cancel)
			dfr_failure_free(dfr_take_failure(c->ds[0]));
		dfr_unref(c->ds[i]);
	}
	free(c->ds);
}

static void
test_long_chain(void **state)
{
	struct chain small = {1, 0, 0, 0, NULL, 0},
		     big = {unit_n(), 0, 0, 0, NULL, 0};
	size_t d1, dn;

	(void)state;
	d1 = unit_run_small_stack(chain_body, &small);
	dn = unit_run_small_stack(chain_body, &big);
	assert_int_equal(small.ran, 1);
	assert_int_equal(big.ran, 1);
	print_message("# stack used: %zu bytes with 1 chained, %zu with %zu\n",
		      d1, dn, big.n);
	assert_true(dn <= d1 + 256);

	assert_int_equal(big.code, 0);
	big.cancel = 1;
	big.ran = 0;
	unit_run_small_stack(chain_body, &big);
	assert_int_equal(big.ran, 1);
	assert_int_equal(big.code, DFR_ECANCELED);
	big.cancel = 0;
	big.drop = 1;
	big.ran = 0;
	unit_run_small_stack(chain_body, &big);
	assert_int_equal(big.ran, 1);
	assert_int_equal(big.code, EPIPE);
	assert_int_equal(unit_unhandled, 0);
}

/* Many callbacks on one deferred, including ones returning fired deferreds. */
static void
wait_fired(struct dfr *d, void *arg)
{
	dfr_wait(d, dfr_succeed(arg, NULL));
}

static void
test_many_callbacks(void **state)
{
	struct dfr *d = dfr_new(NULL, NULL);
	size_t i, n = unit_n() / 10;
	int x = 0;

	(void)state;
	for (i = 0; i < n; i++)
		assert_int_equal(dfr_add_callback(d, wait_fired, &x), 0);
	dfr_callback(d, NULL, NULL);
	assert_ptr_equal(dfr_value(d), &x);
	dfr_unref(d);
}

/*
 * Freed deferreds are reused (a per-thread cache): a new one never shows
 * anything of the one before, whatever state that one died in.
 */
static void
test_reuse_is_fresh(void **state)
{
	struct dfr *ds[200];
	struct dfr *d;
	size_t i;
	int x = 0;

	(void)state;
	for (i = 0; i < 200; i++) {
		ds[i] = dfr_new(NULL, NULL);
		dfr_add_callback(ds[i], unit_log_cb, (void *)1);
		dfr_add_callback(ds[i], unit_log_cb, (void *)2); /* heap chain */
		if (i % 2)
			dfr_errback(ds[i], EIO, "boom %zu", i);
	}
	for (i = 0; i < 200; i++) {
		dfr_failure_free(dfr_take_failure(ds[i]));
		dfr_unref(ds[i]);
	}
	for (i = 0; i < 200; i++) {
		d = i % 2 ? dfr_new(NULL, NULL) : dfr_succeed(&x, NULL);
		assert_int_equal(dfr_fired(d), !(i % 2));
		assert_false(dfr_failed(d));
		assert_false(dfr_paused(d));
		assert_ptr_equal(dfr_value(d), i % 2 ? NULL : &x);
		unit_lg.n = 0;
		dfr_add_callback(d, unit_log_cb, (void *)3);
		if (i % 2)
			dfr_callback(d, &x, NULL);
		assert_int_equal(unit_lg.n, 1);
		assert_int_equal(unit_lg.v[0], 3);
		dfr_unref(d);
	}
	assert_int_equal(unit_unhandled, 0);
}

/* A thread's freed deferreds are released when it exits (valgrind: no leak). */
static void *
cache_thread(void *arg)
{
	struct dfr *ds[300];
	size_t i;

	(void)arg;
	for (i = 0; i < 300; i++)
		ds[i] = dfr_succeed(NULL, NULL);
	for (i = 0; i < 300; i++)
		dfr_unref(ds[i]);
	for (i = 0; i < 1000; i++)
		dfr_unref(dfr_new(NULL, NULL));
	return NULL;
}

static void
test_thread_exit_frees_cache(void **state)
{
	pthread_t t[4];
	int i;

	(void)state;
	for (i = 0; i < 4; i++)
		assert_int_equal(
		    pthread_create(&t[i], NULL, cache_thread, NULL), 0);
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_callbacks_in_order, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_errback_alternation,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_fire_twice, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_unhandled_reported, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_default_reporter, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_value_ownership, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_add_from_callback, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_trampoline, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_free_in_own_callback,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_no_canceller,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_canceller, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_reentrant, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_from_callback,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_chaining, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_chaining_resume_point,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_forwarded, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cycle, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_wait_while_paused, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_queued, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_long_chain, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_many_callbacks, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_reuse_is_fresh, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_thread_exit_frees_cache,
					    unit_setup, unit_teardown),
	};

	return cmocka_run_group_tests_name("deferred", tests, NULL, NULL);
}
