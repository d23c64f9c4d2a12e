/*
 * test-queue.c: DeferredQueue: size and backlog, FIFO feeding, overflow and
 * underflow, cancellation without losing items, close, and a consumer loop
 * over a million stored items.
 */
#include "config.h"

#include "unit.h"

static void
expect_code(struct dfr *d, int code)
{
	assert_true(dfr_fired(d));
	assert_int_equal(dfr_failure_code(d), code);
	dfr_failure_free(dfr_take_failure(d));
	dfr_unref(d);
}

/* Size 2, backlog 2: two gets wait, a third fails with underflow. */
static void
test_backlog(void **state)
{
	struct dfr_queue *q = dfr_queue_new(2, 2);
	struct dfr *g[3];
	int *v;

	(void)state;
	g[0] = dfr_queue_get(q);
	g[1] = dfr_queue_get(q);
	assert_false(dfr_fired(g[0]));
	assert_int_equal(dfr_queue_waiting(q), 2);
	g[2] = dfr_queue_get(q);
	expect_code(g[2], DFR_EUNDERFLOW);
	/* Puts feed the waiting gets in FIFO order, synchronously. */
	assert_int_equal(dfr_queue_put(q, unit_int(1), unit_free_cb), 0);
	assert_true(dfr_fired(g[0]));
	assert_false(dfr_fired(g[1]));
	assert_int_equal(dfr_queue_put(q, unit_int(2), unit_free_cb), 0);
	assert_int_equal(*(int *)dfr_value(g[0]), 1);
	assert_int_equal(*(int *)dfr_value(g[1]), 2);
	/* Further puts are stored; beyond size they fail, the caller keeps the
	 * item. */
	assert_int_equal(dfr_queue_put(q, unit_int(3), unit_free_cb), 0);
	assert_int_equal(dfr_queue_put(q, unit_int(4), unit_free_cb), 0);
	v = unit_int(5);
	assert_int_equal(dfr_queue_put(q, v, unit_free_cb), -DFR_EOVERFLOW);
	free(v);
	assert_int_equal(dfr_queue_size(q), 2);
	/* Gets on stored items fire at once, in FIFO order; the get owns the
	 * item. */
	g[2] = dfr_queue_get(q);
	assert_int_equal(*(int *)dfr_value(g[2]), 3);
	dfr_unref(g[2]);
	g[2] = dfr_queue_get(q);
	assert_int_equal(*(int *)dfr_value(g[2]), 4);
	dfr_unref(g[2]);
	dfr_unref(g[0]);
	dfr_unref(g[1]);
	assert_int_equal(unit_freed, 4);
	dfr_queue_free(q);
	assert_int_equal(unit_unhandled, 0);
}

/* An unbounded queue; a queue freed with items stored releases them. */
static void
test_unbounded(void **state)
{
	struct dfr_queue *q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	struct dfr *d;
	int i;

	(void)state;
	for (i = 0; i < 1000; i++)
		assert_int_equal(dfr_queue_put(q, unit_int(i), unit_free_cb),
				 0);
	for (i = 0; i < 500; i++) {
		d = dfr_queue_get(q);
		assert_int_equal(*(int *)dfr_value(d), i);
		dfr_unref(d);
	}
	for (i = 1000; i < 1100; i++) /* wraps around the ring */
		assert_int_equal(dfr_queue_put(q, unit_int(i), unit_free_cb),
				 0);
	for (i = 500; i < 600; i++) {
		d = dfr_queue_get(q);
		assert_int_equal(*(int *)dfr_value(d), i);
		dfr_unref(d);
	}
	assert_int_equal(dfr_queue_size(q), 500);
	for (i = 1100; i < 1700; i++) /* the ring grows while it wraps */
		assert_int_equal(dfr_queue_put(q, unit_int(i), unit_free_cb),
				 0);
	for (i = 600; i < 1700; i++) { /* nothing lost or reordered */
		d = dfr_queue_get(q);
		assert_int_equal(*(int *)dfr_value(d), i);
		dfr_unref(d);
	}
	assert_int_equal(dfr_queue_size(q), 0);
	assert_int_equal(dfr_queue_put(q, unit_int(1700), unit_free_cb), 0);
	dfr_queue_free(q);
	assert_int_equal(unit_freed, 1701);
}

/* size 0: put fails unless a getter waits; backlog 0: get fails unless stored.
 */
static void
test_zero(void **state)
{
	struct dfr_queue *q = dfr_queue_new(0, 1), *q2 = dfr_queue_new(1, 0);
	struct dfr *g;
	int x = 1;

	(void)state;
	assert_int_equal(dfr_queue_put(q, &x, NULL), -DFR_EOVERFLOW);
	g = dfr_queue_get(q);
	assert_int_equal(dfr_queue_put(q, &x, NULL), 0);
	assert_ptr_equal(dfr_value(g), &x);
	dfr_unref(g);
	expect_code(dfr_queue_get(q2), DFR_EUNDERFLOW);
	assert_int_equal(dfr_queue_put(q2, &x, NULL), 0);
	g = dfr_queue_get(q2);
	assert_ptr_equal(dfr_value(g), &x);
	dfr_unref(g);
	dfr_queue_free(q);
	dfr_queue_free(q2);
}

/* Cancelling a fired get does nothing; a waiting one fails; no double fire. */
static void
test_cancel(void **state)
{
	struct dfr_queue *q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	struct dfr *a, *b, *c;
	struct dfr_stats st;

	(void)state;
	dfr_queue_put(q, unit_int(1), unit_free_cb);
	a = dfr_queue_get(q);
	dfr_cancel(a);
	assert_int_equal(*(int *)dfr_value(a), 1);
	b = dfr_queue_get(q);
	c = dfr_queue_get(q);
	dfr_cancel(b);
	assert_int_equal(dfr_failure_code(b), DFR_ECANCELED);
	assert_int_equal(dfr_queue_waiting(q), 1);
	assert_int_equal(dfr_queue_put(q, unit_int(2), unit_free_cb), 0);
	assert_int_equal(*(int *)dfr_value(c), 2); /* the next getter has it */
	assert_int_equal(dfr_queue_put(q, unit_int(3), unit_free_cb), 0);
	assert_int_equal(dfr_queue_size(q), 1); /* stored, not given to b */
	assert_int_equal(dfr_failure_code(b), DFR_ECANCELED);
	dfr_queue_stats(q, &st);
	assert_int_equal(st.cancelled, 1);
	assert_int_equal(st.acquisitions, 2);
	assert_int_equal(st.contended, 1);
	assert_int_equal(st.max_waiting, 2);
	assert_int_equal(st.held, 1);
	dfr_failure_free(dfr_take_failure(b));
	dfr_unref(a);
	dfr_unref(b);
	dfr_unref(c);
	assert_int_equal(unit_freed,
			 2); /* items 1 and 2, released with a and c */
	a = dfr_queue_get(q);
	assert_int_equal(*(int *)dfr_value(a), 3);
	dfr_unref(a);
	assert_int_equal(unit_freed, 3);
	/* A waiting get dropped by its caller stays queued: it takes the next
	 * item. */
	a = dfr_queue_get(q);
	dfr_unref(a);
	assert_int_equal(dfr_queue_waiting(q), 1);
	assert_int_equal(dfr_queue_put(q, unit_int(4), unit_free_cb), 0);
	assert_int_equal(dfr_queue_size(q), 0);
	assert_int_equal(unit_freed,
			 4); /* given to the dropped get, released with it */
	dfr_queue_free(q);
}

/*
 * An item put while a getter is being cancelled (from the cancelled get's
 * errback) goes to the next getter: never lost.
 */
static struct dfr_queue *qq;

static void
put_on_cancel(struct dfr *d, void *arg)
{
	assert_int_equal(dfr_queue_put(qq, arg, unit_free_cb), 0);
	(void)d;
}

static void
test_put_during_cancel(void **state)
{
	struct dfr *a, *b;

	(void)state;
	qq = dfr_queue_new(0, 2); /* nowhere to store: must go to b */
	a = dfr_queue_get(qq);
	b = dfr_queue_get(qq);
	dfr_add_errback(a, put_on_cancel, unit_int(42));
	dfr_cancel(a);
	assert_int_equal(dfr_failure_code(a), DFR_ECANCELED);
	assert_int_equal(*(int *)dfr_value(b), 42);
	dfr_failure_free(dfr_take_failure(a));
	dfr_unref(a);
	dfr_unref(b);
	assert_int_equal(unit_freed, 1);
	dfr_queue_free(qq);
}

/* A getter whose callback puts again, and gets again. */
static int seen[4];
static int nseen;

static void
put_again(struct dfr *d, void *arg)
{
	int v = *(int *)dfr_value(d);

	seen[nseen++] = v;
	if (v < 3) {
		struct dfr *g;

		dfr_queue_put(qq, unit_int(v + 10), unit_free_cb); /* stored */
		g = dfr_queue_get(qq); /* takes it back at once */
		seen[nseen++] = *(int *)dfr_value(g);
		dfr_unref(g);
	}
	(void)arg;
}

static void
test_getter_puts(void **state)
{
	struct dfr *a;

	(void)state;
	nseen = 0;
	qq = dfr_queue_new(DFR_UNBOUNDED, 1);
	a = dfr_queue_get(qq);
	dfr_add_callback(a, put_again, NULL);
	dfr_queue_put(qq, unit_int(1), unit_free_cb);
	assert_int_equal(nseen, 2);
	assert_int_equal(seen[0], 1);
	assert_int_equal(seen[1], 11);
	assert_int_equal(dfr_queue_size(qq), 0);
	dfr_unref(a);
	dfr_queue_free(qq);
	assert_int_equal(unit_freed, 2);
}

/*
 * A getter's callback, run inside the put that fed it, cancels the next
 * getter, puts an item back and closes the queue: the item goes to the
 * getter after the cancelled one, the last one fails, the counts agree.
 */
static struct dfr *getters[4];
static struct unit_log glog;

static void
log_item(struct dfr *d, void *arg)
{
	int *v;

	(void)arg;
	if (dfr_failed(d)) {
		unit_log_add(&glog, -dfr_failure_code(d));
		dfr_failure_free(dfr_take_failure(d));
		return;
	}
	v = dfr_take_value(d);
	unit_log_add(&glog, *v);
	free(v);
}

static void
cancel_put_close(struct dfr *d, void *arg)
{
	log_item(d, arg);
	dfr_cancel(getters[1]);
	assert_int_equal(dfr_queue_put(qq, unit_int(100), free), 0);
	dfr_queue_close(qq);
}

static void
free_queue(struct dfr *d, void *arg)
{
	log_item(d, arg);
	dfr_queue_free(qq);
	qq = NULL;
}

static void
test_getter_reenters(void **state)
{
	struct dfr_stats st;
	int i;

	(void)state;
	glog.n = 0;
	qq = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	for (i = 0; i < 4; i++)
		getters[i] = dfr_queue_get(qq);
	dfr_add_both(getters[0], cancel_put_close, NULL);
	for (i = 1; i < 4; i++)
		dfr_add_both(getters[i], log_item, NULL);
	assert_int_equal(dfr_queue_put(qq, unit_int(1), free), 0);
	assert_int_equal(glog.n, 4);
	assert_int_equal(glog.v[0], 1);
	assert_int_equal(glog.v[1], -DFR_ECANCELED);
	assert_int_equal(glog.v[2], 100);
	assert_int_equal(glog.v[3], -DFR_ECLOSED);
	dfr_queue_stats(qq, &st);
	assert_int_equal(st.waiting, 0);
	assert_int_equal(st.cancelled, 1);
	assert_int_equal(st.acquisitions, 2);
	assert_int_equal(st.held, 0);
	for (i = 0; i < 4; i++)
		dfr_unref(getters[i]);
	dfr_queue_free(qq);

	/* Freed from a getter's callback inside put: the rest fail closed. */
	glog.n = 0;
	qq = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	for (i = 0; i < 3; i++)
		getters[i] = dfr_queue_get(qq);
	dfr_add_both(getters[0], free_queue, NULL);
	for (i = 1; i < 3; i++)
		dfr_add_both(getters[i], log_item, NULL);
	assert_int_equal(dfr_queue_put(qq, unit_int(1), free), 0);
	assert_null(qq);
	assert_int_equal(glog.n, 3);
	assert_int_equal(glog.v[1], -DFR_ECLOSED);
	assert_int_equal(glog.v[2], -DFR_ECLOSED);
	for (i = 0; i < 3; i++)
		dfr_unref(getters[i]);
	assert_int_equal(unit_unhandled, 0);
}

static struct dfr_queue *close_q;
static int close_seen;

/* Errback of a closed get: the first one frees the queue. */
static void
free_on_close(struct dfr *d, void *arg)
{
	(void)arg;
	assert_int_equal(dfr_failure_code(d), DFR_ECLOSED);
	dfr_failure_free(dfr_take_failure(d));
	close_seen++;
	if (close_q != NULL) {
		assert_int_equal(dfr_queue_waiting(close_q), 0);
		dfr_queue_free(close_q);
		close_q = NULL;
	}
}

/* close: waiting gets fail, puts fail, stored items still drain. */
static void
test_close(void **state)
{
	struct dfr_queue *q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	struct dfr *a, *b;
	int x = 1, y = 2;

	(void)state;
	a = dfr_queue_get(q);
	dfr_queue_close(q);
	dfr_queue_close(q);
	expect_code(a, DFR_ECLOSED);
	assert_int_equal(dfr_queue_put(q, &x, NULL), -DFR_ECLOSED);
	dfr_queue_free(q);

	q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	dfr_queue_put(q, &x, NULL);
	dfr_queue_put(q, &y, NULL);
	dfr_queue_close(q);
	b = dfr_queue_get(q);
	assert_ptr_equal(dfr_value(b), &x);
	dfr_unref(b);
	b = dfr_queue_get(q);
	assert_ptr_equal(dfr_value(b), &y);
	dfr_unref(b);
	expect_code(dfr_queue_get(q), DFR_ECLOSED);
	dfr_queue_free(q);
	/* Free with waiting gets fails them. */
	q = dfr_queue_new(1, 1);
	a = dfr_queue_get(q);
	dfr_queue_free(q);
	expect_code(a, DFR_ECLOSED);

	/*
	 * The gets fail only once all of them have left the list: the first
	 * one's errback sees none waiting, and may free the queue.
	 */
	close_q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	close_seen = 0;
	a = dfr_queue_get(close_q);
	b = dfr_queue_get(close_q);
	dfr_add_errback(a, free_on_close, NULL);
	dfr_add_errback(b, free_on_close, NULL);
	dfr_queue_close(close_q);
	assert_null(close_q);
	assert_int_equal(close_seen, 2);
	dfr_unref(a);
	dfr_unref(b);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * Free from a callback: by the trampoline rule the failed gets' errbacks run
 * after dfr_queue_free() has returned (dfr.h: they must not use the queue);
 * outside any callback they run inside it.
 */
static struct unit_log flog;
static struct dfr_queue *fq;

static void
log_closed(struct dfr *d, void *arg)
{
	(void)arg;
	assert_int_equal(dfr_failure_code(d), DFR_ECLOSED);
	dfr_failure_free(dfr_take_failure(d));
	unit_log_add(&flog, 2);
}

static void
free_queue_cb(struct dfr *d, void *arg)
{
	(void)d;
	(void)arg;
	unit_log_add(&flog, 1);
	dfr_queue_free(fq);
	fq = NULL;
	unit_log_add(&flog, 3);
}

static void
test_free_from_callback(void **state)
{
	struct dfr *g, *s;

	(void)state;
	flog.n = 0;
	fq = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	g = dfr_queue_get(fq);
	dfr_add_errback(g, log_closed, NULL);
	dfr_queue_free(fq);
	assert_int_equal(flog.n, 1); /* inside the call */

	flog.n = 0;
	fq = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	dfr_unref(g);
	g = dfr_queue_get(fq);
	dfr_add_errback(g, log_closed, NULL);
	s = dfr_succeed(NULL, NULL);
	dfr_add_callback(s, free_queue_cb, NULL);
	assert_int_equal(flog.n, 3);
	assert_int_equal(flog.v[0], 1);
	assert_int_equal(flog.v[1], 3); /* free returned */
	assert_int_equal(flog.v[2], 2); /* then the get's errback ran */
	dfr_unref(s);
	dfr_unref(g);
	assert_int_equal(unit_unhandled, 0);
}

/* Statistics: getters' wait time, items stored. */
static void
test_stats(void **state)
{
	struct dfr_queue *q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	struct timespec ts = {0, 2000000};
	struct dfr_stats st;
	struct dfr *g;
	int x;

	(void)state;
	dfr_queue_put(q, &x, NULL);
	nanosleep(&ts, NULL);
	dfr_unref(dfr_queue_get(q));
	g = dfr_queue_get(q);
	nanosleep(&ts, NULL);
	dfr_queue_put(q, &x, NULL);
	dfr_unref(g);
	dfr_queue_stats(q, &st);
	assert_int_equal(st.acquisitions, 2);
	assert_int_equal(st.contended, 1);
	assert_true(st.wait_max_ns >= 2000000);
	assert_true(st.wait_total_ns >= st.wait_max_ns);
	assert_int_equal(st.waiting, 0);
	assert_int_equal(st.held, 0);
	dfr_queue_free(q);
}

/* Differ: a get -> callback -> get consumer loop over a million stored items.
 */
struct consumer {
	size_t n;
	size_t got;
	size_t bad;
	struct dfr_queue *q;
};

static void
consume(struct dfr *d, void *arg)
{
	struct consumer *c = arg;
	struct dfr *next;

	unit_stack_note();
	if ((size_t)(uintptr_t)dfr_value(d) != c->got)
		c->bad++;
	c->got++;
	dfr_unref(d);
	if (dfr_queue_size(c->q) == 0)
		return;
	next = dfr_queue_get(c->q);
	dfr_add_callback(next, consume, c); /* queued: runs after we return */
}

static void
consumer_body(void *arg)
{
	struct consumer *c = arg;
	size_t i;

	c->q = dfr_queue_new(DFR_UNBOUNDED, 1);
	for (i = 0; i < c->n; i++)
		dfr_queue_put(c->q, (void *)(uintptr_t)i, NULL);
	dfr_add_callback(dfr_queue_get(c->q), consume, c);
	dfr_queue_free(c->q);
}

static void
test_million_consumer(void **state)
{
	struct consumer c = {unit_n(), 0, 0, NULL}, one = {1, 0, 0, NULL};
	size_t d1, dn;

	(void)state;
	d1 = unit_run_small_stack(consumer_body, &one);
	dn = unit_run_small_stack(consumer_body, &c);
	assert_int_equal(c.got, c.n);
	assert_int_equal(c.bad, 0);
	assert_int_equal(one.got, 1);
	assert_true(dn <= d1 + 256);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_backlog, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_unbounded, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_zero, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_put_during_cancel, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_getter_puts, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_getter_reenters, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_close, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_free_from_callback, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_stats, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_million_consumer, unit_setup,
					    unit_teardown),
	};

	return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
