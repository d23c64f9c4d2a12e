/*
 * test-sem.c: DeferredSemaphore: tokens, hand-off, over-release,
 * acquire_many, run(), close, a million synchronous waiters, and random
 * operations mixed as a user program mixes them.
 */
#include "config.h"

#include <time.h>

#include "unit.h"

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
	unit_lg.n = 0;
	assert_int_equal(dfr_sem_limit(s), 3);
	for (i = 0; i < 3; i++) {
		ds[i] = dfr_sem_acquire(s);
		assert_true(dfr_fired(ds[i]));
		assert_ptr_equal(dfr_value(ds[i]), s);
	}
	assert_int_equal(dfr_sem_tokens(s), 0);
	for (i = 3; i < 6; i++) {
		ds[i] = dfr_sem_acquire(s);
		dfr_add_callback(ds[i], unit_log_cb, (void *)(intptr_t)i);
		assert_false(dfr_fired(ds[i]));
	}
	assert_int_equal(dfr_sem_waiting(s), 3);
	dfr_cancel(ds[3]);
	assert_int_equal(dfr_failure_code(ds[3]), DFR_ECANCELED);
	assert_int_equal(dfr_sem_waiting(s), 2);
	assert_int_equal(dfr_sem_release(s), 0); /* to ds[4], the oldest left */
	assert_int_equal(unit_lg.n, 1);
	assert_int_equal(unit_lg.v[0], 4);
	assert_int_equal(dfr_sem_tokens(s), 0);
	assert_int_equal(dfr_sem_release(s), 0);
	assert_int_equal(unit_lg.v[1], 5);
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

/*
 * Random operations, as a user program mixes them: runs whose work fires
 * later, at once or never (its canceller asks, fires it or stops it and
 * drops its firer's reference), acquire_many, releases, cancels of anything
 * at any moment, gathers of runs, chains whose callback waits on a run, a
 * close, and any of these made again from inside the callbacks. Checked for
 * each seed: the tokens held never exceed the limit, every callback runs
 * exactly once (the work's own included), everything is given back at the
 * end, and no failure is left unhandled.
 */
#define RND_MAX 1024

struct rnd_work {
	struct dfr *d; /* the firer's reference, while in rw_pending */
	int mode;
};

struct rnd_obj {
	struct dfr *d; /* our reference */
	int kind;      /* 0 run, 1 acquire, 2 gather, 3 chain */
	unsigned int n;
	int in_gather;
	int done;
};

static struct {
	uint64_t x;
	struct dfr_sem *s;
	unsigned int limit, holding;
	int nest;
	struct rnd_work *pending[RND_MAX];
	int npending;
	struct dfr *sources[RND_MAX]; /* unfired heads of chains */
	int nsources;
	unsigned int held[RND_MAX]; /* tokens of each plain acquire held */
	int nheld;
	struct rnd_obj objs[RND_MAX];
	int nobjs;
	long works, works_ended, ends;
} R;

static unsigned int
rnd(unsigned int n)
{
	R.x ^= R.x << 13;
	R.x ^= R.x >> 7;
	R.x ^= R.x << 17;
	return (unsigned int)(R.x % n);
}

static void rnd_op(void);

/* Now and then, make another operation from inside a callback. */
static void
rnd_nested(void)
{
	if (R.nest < 3 && rnd(100) < 30) {
		R.nest++;
		rnd_op();
		R.nest--;
	}
}

static int
rnd_unpend(struct rnd_work *w)
{
	int i;

	for (i = 0; i < R.npending; i++)
		if (R.pending[i] == w) {
			R.pending[i] = R.pending[--R.npending];
			return 1;
		}
	return 0;
}

static void
rnd_work_end(struct dfr *d, void *arg)
{
	struct rnd_work *w = arg;

	assert_true(R.holding >= 1);
	R.holding--;
	R.works_ended++;
	if (rnd_unpend(w))
		dfr_unref(d); /* failed by a cancel: nobody fires it now */
	free(w);
	rnd_nested();
}

static void
rnd_work_cancel(struct dfr *d, void *arg)
{
	struct rnd_work *w = arg;

	if (w->mode == 0)
		return; /* only asks: fired later */
	assert_true(rnd_unpend(w));
	if (w->mode == 1)
		dfr_errback(d, EIO, "stopped");
	else if (w->mode == 2)
		dfr_callback(d, NULL, NULL);
	dfr_unref(d); /* mode 3: stopped, without firing */
}

static struct dfr *
rnd_fn(void *arg)
{
	struct rnd_work *w;
	struct dfr *d;

	(void)arg;
	assert_true(R.holding < R.limit);
	switch (rnd(10)) {
	case 0:
		return dfr_succeed(NULL, NULL);
	case 1:
		return dfr_fail(EIO, "failed at once");
	case 2:
		errno = EIO;
		return NULL;
	}
	R.holding++;
	w = malloc(sizeof *w);
	assert_non_null(w);
	w->mode = (int)rnd(4);
	w->d = dfr_new(rnd_work_cancel, w);
	dfr_add_both(w->d, rnd_work_end, w);
	R.works++;
	R.pending[R.npending++] = w;
	d = dfr_ref(w->d);
	rnd_nested();
	return d;
}

static void
rnd_end(struct dfr *d, void *arg)
{
	struct rnd_obj *o = arg;

	assert_false(o->done);
	o->done = 1;
	R.ends++;
	if (dfr_failed(d))
		dfr_failure_free(dfr_take_failure(d));
	else if (o->kind == 1) {
		assert_true(R.holding + o->n <= R.limit);
		R.holding += o->n;
		R.held[R.nheld++] = o->n;
	}
	rnd_nested();
}

static void
rnd_chain_wait(struct dfr *d, void *arg)
{
	(void)arg;
	dfr_wait(d, dfr_sem_run(R.s, rnd_fn, NULL));
	rnd_nested();
}

static void
rnd_obj(struct dfr *d, int kind, unsigned int n)
{
	struct rnd_obj *o = &R.objs[R.nobjs++];

	o->d = d;
	o->kind = kind;
	o->n = n;
	dfr_add_both(d, rnd_end, o); /* may run at once */
}

static void
rnd_release(int i)
{
	unsigned int n = R.held[i];

	R.held[i] = R.held[--R.nheld];
	R.holding -= n;
	assert_int_equal(dfr_sem_release_many(R.s, n), 0);
}

static void
rnd_fire(struct rnd_work *w)
{
	struct dfr *d = w->d;

	rnd_unpend(w);
	if (rnd(2))
		assert_int_equal(dfr_callback(d, NULL, NULL), 0);
	else
		assert_int_equal(dfr_errback(d, EIO, "work failed"), 0);
	dfr_unref(d);
}

static void
rnd_op(void)
{
	unsigned int op = rnd(100);
	struct dfr *ds[3], *d;
	int i, n;

	if (R.nobjs > RND_MAX - 16)
		return;
	if (op < 25) {
		rnd_obj(dfr_sem_run(R.s, rnd_fn, NULL), 0, 0);
	} else if (op < 35) {
		n = (int)rnd(R.limit) + 1;
		rnd_obj(dfr_sem_acquire_many(R.s, (unsigned int)n), 1,
			(unsigned int)n);
	} else if (op < 50) {
		if (R.nheld > 0)
			rnd_release((int)rnd((unsigned int)R.nheld));
	} else if (op < 70) {
		if (R.npending > 0)
			rnd_fire(R.pending[rnd((unsigned int)R.npending)]);
	} else if (op < 88) {
		if (R.nobjs > 0)
			dfr_cancel(R.objs[rnd((unsigned int)R.nobjs)].d);
	} else if (op < 91) {
		if (R.npending > 0)
			dfr_cancel(R.pending[rnd((unsigned int)R.npending)]->d);
	} else if (op < 94) {
		d = dfr_new(NULL, NULL);
		dfr_add_callback(d, rnd_chain_wait, NULL);
		rnd_obj(d, 3, 0);
		R.sources[R.nsources++] = dfr_ref(d);
	} else if (op < 96) {
		if (R.nsources > 0) {
			i = (int)rnd((unsigned int)R.nsources);
			d = R.sources[i];
			R.sources[i] = R.sources[--R.nsources];
			dfr_callback(d, NULL, NULL);
			dfr_unref(d);
		}
	} else if (op < 97) {
		if (rnd(10) == 0)
			dfr_sem_close(R.s);
	} else {
		for (n = 0, i = 0; i < 6 && n < 3 && R.nobjs > 0; i++) {
			struct rnd_obj *o = &R.objs[rnd((unsigned int)R.nobjs)];

			if (o->kind == 0 && !o->in_gather) {
				o->in_gather = 1;
				ds[n++] = dfr_ref(o->d);
			}
		}
		d = dfr_gather(ds, (size_t)n, DFR_GATHER_CONSUME_ERRORS);
		rnd_obj(d, 2, 0);
	}
}

static void
test_random_ops(void **state)
{
	long seed, seeds = (long)(unit_n() / 500);
	int i, ops;

	(void)state;
	for (seed = 1; seed <= seeds; seed++) {
		memset(&R, 0, sizeof R);
		R.x = (uint64_t)seed * 0x9E3779B97F4A7C15ull + 1;
		R.limit = 1 + rnd(3);
		R.s = dfr_sem_new(R.limit);
		for (ops = 50 + (int)rnd(400), i = 0; i < ops; i++)
			rnd_op();
		/* Fire sources and works, release holds, until quiet. */
		while (R.nsources > 0 || R.npending > 0 || R.nheld > 0) {
			if (R.nsources > 0) {
				struct dfr *d = R.sources[--R.nsources];

				dfr_callback(d, NULL, NULL);
				dfr_unref(d);
			} else if (R.npending > 0)
				rnd_fire(R.pending[0]);
			else
				rnd_release(0);
		}
		if (R.ends != R.nobjs || R.works_ended != R.works ||
		    R.holding != 0 || dfr_sem_tokens(R.s) != R.limit)
			fail_msg("seed %ld: %ld of %d ends, %ld of %ld works",
				 seed, R.ends, R.nobjs, R.works_ended, R.works);
		for (i = 0; i < R.nobjs; i++)
			dfr_unref(R.objs[i].d);
		dfr_sem_free(R.s);
		assert_int_equal(unit_unhandled, 0);
	}
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
	    cmocka_unit_test_setup_teardown(test_random_ops, unit_setup,
					    unit_teardown),
	};

	return cmocka_run_group_tests_name("sem", tests, NULL, NULL);
}
