/*
 * test-sem.c: DeferredSemaphore: tokens, hand-off, over-release,
 * acquire_many, run(), close, and a million synchronous waiters.
 */
#include "config.h"

#include <time.h>

#include "unit.h"

static struct unit_log lg;

static void
log_cb(struct dfr *d, void *arg)
{
	unit_log_add(&lg, (int)(intptr_t)arg);
	(void)d;
}

/* Fewer than one token is an error. */
static void
test_new_invalid(void **state)
{
	(void)state;
	errno = 0;
	assert_null(dfr_sem_new(0));
	assert_int_equal(errno, EINVAL);
}

/* N acquires fire at once; the next waits; cancel; release to the oldest. */
static void
test_tokens(void **state)
{
	struct dfr_sem *s = dfr_sem_new(3);
	struct dfr *ds[6];
	int i;

	(void)state;
	lg.n = 0;
	assert_int_equal(dfr_sem_limit(s), 3);
	for (i = 0; i < 3; i++) {
		ds[i] = dfr_sem_acquire(s);
		assert_true(dfr_fired(ds[i]));
		assert_ptr_equal(dfr_value(ds[i]), s);
	}
	assert_int_equal(dfr_sem_tokens(s), 0);
	for (i = 3; i < 6; i++) {
		ds[i] = dfr_sem_acquire(s);
		dfr_add_callback(ds[i], log_cb, (void *)(intptr_t)i);
		assert_false(dfr_fired(ds[i]));
	}
	assert_int_equal(dfr_sem_waiting(s), 3);
	dfr_cancel(ds[3]);
	assert_int_equal(dfr_failure_code(ds[3]), DFR_ECANCELED);
	assert_int_equal(dfr_sem_waiting(s), 2);
	assert_int_equal(dfr_sem_release(s), 0); /* to ds[4], the oldest left */
	assert_int_equal(lg.n, 1);
	assert_int_equal(lg.v[0], 4);
	assert_int_equal(dfr_sem_tokens(s), 0);
	assert_int_equal(dfr_sem_release(s), 0);
	assert_int_equal(lg.v[1], 5);
	for (i = 0; i < 3; i++)
		assert_int_equal(dfr_sem_release(s), 0);
	assert_int_equal(dfr_sem_tokens(s), 3);
	/* Over-release is an error. */
	assert_int_equal(dfr_sem_release(s), -EPERM);
	assert_int_equal(dfr_sem_tokens(s), 3);
	dfr_failure_free(dfr_take_failure(ds[3]));
	for (i = 0; i < 6; i++)
		dfr_unref(ds[i]);
	dfr_sem_free(s);
	assert_int_equal(unit_unhandled, 0);
}

/* acquire_many: bounds, strict FIFO (a large head blocks later small ones). */
static void
test_acquire_many(void **state)
{
	struct dfr_sem *s = dfr_sem_new(4);
	struct dfr *a, *big, *small, *bad;
	struct dfr_stats st;

	(void)state;
	bad = dfr_sem_acquire_many(s, 5);
	assert_int_equal(dfr_failure_code(bad), EINVAL);
	dfr_failure_free(dfr_take_failure(bad));
	dfr_unref(bad);
	bad = dfr_sem_acquire_many(s, 0);
	assert_int_equal(dfr_failure_code(bad), EINVAL);
	dfr_failure_free(dfr_take_failure(bad));
	dfr_unref(bad);

	a = dfr_sem_acquire_many(s, 3);
	assert_true(dfr_fired(a));
	assert_int_equal(dfr_sem_tokens(s), 1);
	big = dfr_sem_acquire_many(s, 2);
	small = dfr_sem_acquire(s); /* one token is free, but big is first */
	assert_false(dfr_fired(big));
	assert_false(dfr_fired(small));
	assert_int_equal(dfr_sem_release_many(s, 4),
			 -EPERM); /* nothing released */
	assert_int_equal(dfr_sem_tokens(s), 1);
	assert_int_equal(dfr_sem_release_many(s, 3), 0); /* both fit now */
	assert_true(dfr_fired(big));
	assert_true(dfr_fired(small));
	assert_int_equal(dfr_sem_tokens(s), 1);
	dfr_sem_stats(s, &st);
	assert_int_equal(st.held, 3);
	assert_int_equal(st.contended, 2);
	assert_int_equal(dfr_sem_release_many(s, 3), 0);
	assert_int_equal(dfr_sem_tokens(s), 4);
	dfr_unref(a);
	dfr_unref(big);
	dfr_unref(small);
	dfr_sem_free(s);
}

/* A large waiter cancelled at the head lets the smaller ones behind it that fit go on at once. */
static void
test_cancel_head_grants_behind(void **state)
{
	struct dfr_sem *s = dfr_sem_new(3);
	struct dfr *a, *big, *small, *other;

	(void)state;
	a = dfr_sem_acquire_many(s, 2);
	big = dfr_sem_acquire_many(s, 2);   /* waits: one token free */
	small = dfr_sem_acquire(s);         /* fits, but waits behind big */
	other = dfr_sem_acquire(s);         /* does not fit once small has it */
	assert_false(dfr_fired(small));
	dfr_cancel(big);
	assert_int_equal(dfr_failure_code(big), ECANCELED);
	dfr_failure_free(dfr_take_failure(big));
	assert_true(dfr_fired(small));
	assert_false(dfr_fired(other));
	assert_int_equal(dfr_sem_tokens(s), 0);
	assert_int_equal(dfr_sem_waiting(s), 1);
	assert_int_equal(dfr_sem_release_many(s, 2), 0);
	assert_true(dfr_fired(other));
	assert_int_equal(dfr_sem_release_many(s, 2), 0);
	assert_int_equal(dfr_sem_tokens(s), 3);
	dfr_unref(a);
	dfr_unref(big);
	dfr_unref(small);
	dfr_unref(other);
	dfr_sem_free(s);
}

/* run() on a semaphore: up to N at once, the rest wait, results carried. */
static struct dfr *works[4];
static int nstarted;

static struct dfr *
start_work(void *arg)
{
	(void)arg;
	works[nstarted] = dfr_new(NULL, NULL);
	return dfr_ref(works[nstarted++]);
}

static void
test_run(void **state)
{
	struct dfr_sem *s = dfr_sem_new(2);
	struct dfr *r[3];
	int i, x = 7;

	(void)state;
	nstarted = 0;
	for (i = 0; i < 3; i++)
		r[i] = dfr_sem_run(s, start_work, NULL);
	assert_int_equal(nstarted, 2);
	assert_int_equal(dfr_sem_waiting(s), 1);
	dfr_errback(works[1], EIO, "second failed");
	assert_int_equal(dfr_failure_code(r[1]), EIO);
	assert_int_equal(nstarted, 3); /* its token went to the third */
	dfr_callback(works[0], &x, NULL);
	dfr_callback(works[2], &x, NULL);
	assert_ptr_equal(dfr_value(r[0]), &x);
	assert_ptr_equal(dfr_value(r[2]), &x);
	assert_int_equal(dfr_sem_tokens(s), 2);
	dfr_failure_free(dfr_take_failure(r[1]));
	for (i = 0; i < 3; i++) {
		dfr_unref(r[i]);
		dfr_unref(works[i]);
	}
	dfr_sem_free(s);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * A run() keeps the strict FIFO order too: with a large acquire waiting at
 * the head, a free token does not let a later run() start ahead of it.
 */
static void
test_run_waits_behind_many(void **state)
{
	struct dfr_sem *s = dfr_sem_new(2);
	struct dfr *a, *big, *r;
	int x = 3;

	(void)state;
	nstarted = 0;
	a = dfr_sem_acquire(s);
	big = dfr_sem_acquire_many(s, 2); /* waits: one token free */
	r = dfr_sem_run(s, start_work, NULL);
	assert_int_equal(nstarted, 0); /* the free token is not for it */
	assert_int_equal(dfr_sem_tokens(s), 1);
	assert_int_equal(dfr_sem_waiting(s), 2);
	assert_int_equal(dfr_sem_release(s), 0);
	assert_true(dfr_fired(big));
	assert_int_equal(nstarted, 0);
	assert_int_equal(dfr_sem_release_many(s, 2), 0);
	assert_int_equal(nstarted, 1);
	dfr_callback(works[0], &x, NULL);
	assert_ptr_equal(dfr_value(r), &x);
	assert_int_equal(dfr_sem_tokens(s), 2);
	dfr_unref(r);
	dfr_unref(works[0]);
	dfr_unref(big);
	dfr_unref(a);
	dfr_sem_free(s);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * hold_total_ns is the integral of tokens held over time: idle time adds
 * nothing, and two tokens held for a while count twice. hold_max_ns counts
 * only run()s on a semaphore with more than one token.
 */
static void
test_hold_total(void **state)
{
	struct dfr_sem *s = dfr_sem_new(2);
	struct dfr *a, *r;
	struct dfr_stats st;
	struct timespec idle = {0, 50000000}, held = {0, 20000000};

	(void)state;
	nanosleep(&idle, NULL); /* nothing held */
	a = dfr_sem_acquire_many(s, 2);
	assert_int_equal(dfr_sem_release_many(s, 2), 0);
	dfr_unref(a);
	nanosleep(&idle, NULL);
	dfr_sem_stats(s, &st);
	assert_true(st.hold_total_ns < 50000000);
	a = dfr_sem_acquire_many(s, 2);
	nanosleep(&held, NULL);
	assert_int_equal(dfr_sem_release_many(s, 2), 0);
	dfr_unref(a);
	dfr_sem_stats(s, &st);
	assert_true(st.hold_total_ns >= 2 * 20000000);
	/* hold_max_ns: plain releases are not matched to their acquires... */
	assert_int_equal(st.hold_max_ns, 0);
	/* ...but a run() is: from its start to its work's end. */
	nstarted = 0;
	r = dfr_sem_run(s, start_work, NULL);
	nanosleep(&held, NULL);
	dfr_callback(works[0], NULL, NULL);
	dfr_sem_stats(s, &st);
	assert_true(st.hold_max_ns >= 20000000);
	dfr_unref(r);
	dfr_unref(works[0]);
	dfr_sem_free(s);
}

/* Cancelling a semaphore run() whose work is pending: its token stays taken. */
static void
test_run_cancel_pending(void **state)
{
	struct dfr_sem *s = dfr_sem_new(1);
	struct dfr *r, *next;
	struct dfr_stats st;
	int x = 4;

	(void)state;
	nstarted = 0;
	r = dfr_sem_run(s, start_work, NULL);
	next = dfr_sem_acquire(s);
	dfr_cancel(r); /* no canceller on the work: it runs on */
	assert_false(dfr_fired(next));
	assert_int_equal(dfr_sem_tokens(s), 0);
	dfr_callback(works[0], &x, NULL);
	assert_ptr_equal(dfr_value(r), &x); /* the work's own result */
	assert_true(dfr_fired(next));
	dfr_sem_stats(s, &st);
	assert_int_equal(st.acquisitions, 2);
	assert_true(st.hold_max_ns > 0);
	assert_int_equal(dfr_sem_release(s), 0);
	dfr_unref(r);
	dfr_unref(next);
	dfr_unref(works[0]);
	dfr_sem_free(s);
}

/* fn returns works[0] again for a second run: a deferred another chain already waits on. */
static struct dfr *
again_work(void *arg)
{
	(void)arg;
	return dfr_ref(works[0]);
}

/*
 * A run whose fn returns a deferred already waited on fails with DFR_ECYCLE
 * and gives its token back at once, whether or not its caller adds
 * callbacks (with the token free, it kept the token and leaked the run).
 */
static void
test_run_cycle_gives_token_back(void **state)
{
	struct dfr_sem *s = dfr_sem_new(2);
	struct dfr *a, *b;
	int x = 1;

	(void)state;
	nstarted = 0;
	a = dfr_sem_run(s, start_work, NULL);
	assert_int_equal(dfr_sem_tokens(s), 1);
	b = dfr_sem_run(s, again_work, NULL);
	assert_true(dfr_fired(b));
	assert_int_equal(dfr_failure_code(b), DFR_ECYCLE);
	assert_int_equal(dfr_sem_tokens(s), 1);
	dfr_failure_free(dfr_take_failure(b));
	dfr_unref(b);
	dfr_callback(works[0], &x, NULL);
	assert_ptr_equal(dfr_value(a), &x);
	assert_int_equal(dfr_sem_tokens(s), 2);
	dfr_unref(a);
	dfr_unref(works[0]);
	dfr_sem_free(s);
	assert_int_equal(unit_unhandled, 0);
}

/* close(): every waiter fails, later acquires fail, holders may release. */
static void
test_close(void **state)
{
	struct dfr_sem *s = dfr_sem_new(1);
	struct dfr *a = dfr_sem_acquire(s), *b = dfr_sem_acquire_many(s, 1), *c;

	(void)state;
	dfr_sem_close(s);
	assert_int_equal(dfr_failure_code(b), DFR_ECLOSED);
	c = dfr_sem_acquire(s);
	assert_int_equal(dfr_failure_code(c), DFR_ECLOSED);
	assert_int_equal(dfr_sem_release(s), 0);
	dfr_failure_free(dfr_take_failure(b));
	dfr_failure_free(dfr_take_failure(c));
	dfr_unref(a);
	dfr_unref(b);
	dfr_unref(c);
	dfr_sem_free(s);
}

/* A million waiters on a 3-token semaphore, synchronous critical sections. */
struct many {
	size_t n;
	size_t ran;
	int bad;
	struct dfr_sem *s;
};

static void
sync_section(struct dfr *d, void *arg)
{
	struct many *m = arg;

	unit_stack_note();
	m->ran++;
	if (dfr_sem_release(m->s) != 0)
		m->bad = 1;
	dfr_unref(d);
}

static void
many_body(void *arg)
{
	struct many *m = arg;
	struct dfr *first[3], *d;
	size_t i;

	m->s = dfr_sem_new(3);
	for (i = 0; i < 3; i++)
		first[i] = dfr_sem_acquire(m->s);
	for (i = 0; i < m->n; i++) {
		d = dfr_sem_acquire(m->s);
		dfr_add_callback(d, sync_section, m);
	}
	for (i = 0; i < 3; i++) {
		dfr_sem_release(m->s);
		dfr_unref(first[i]);
	}
	if (dfr_sem_tokens(m->s) != 3 || dfr_sem_waiting(m->s) != 0)
		m->bad = 1;
	dfr_sem_free(m->s);
}

static void
test_million_waiters(void **state)
{
	struct many m = {unit_n(), 0, 0, NULL}, one = {1, 0, 0, NULL};
	size_t d1, dn;

	(void)state;
	d1 = unit_run_small_stack(many_body, &one);
	dn = unit_run_small_stack(many_body, &m);
	assert_int_equal(m.ran, m.n);
	assert_int_equal(m.bad, 0);
	assert_true(dn <= d1 + 256);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_new_invalid, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_tokens, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_acquire_many, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_head_grants_behind, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_cycle_gives_token_back, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_cancel_pending, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_run_waits_behind_many,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_hold_total, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_close, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_million_waiters, unit_setup,
					    unit_teardown),
	};

	return cmocka_run_group_tests_name("sem", tests, NULL, NULL);
}
