/*
 * test-gather.c: gather (Twisted's gatherResults): order, first failure with
 * its index, consume-errors, cancellation of every member.
 */
#include "config.h"

#include "unit.h"

/* An empty set fires at once with an empty result. */
static void
test_empty(void **state)
{
	struct dfr *g = dfr_gather(NULL, 0, 0);
	struct dfr_gather_result *res;

	(void)state;
	assert_true(dfr_fired(g));
	res = dfr_value(g);
	assert_non_null(res);
	assert_int_equal(res->n, 0);
	dfr_unref(g);
}

/* Results in input order, whatever the firing order; fired inputs count. */
static void
test_order(void **state)
{
	struct dfr *ds[3], *g;
	struct dfr_gather_result *res;

	(void)state;
	ds[0] = dfr_new(NULL, NULL);
	ds[1] = dfr_succeed(unit_int(1), unit_free_cb);
	ds[2] = dfr_new(NULL, NULL);
	g = dfr_gather(ds, 3, 0);
	assert_false(dfr_fired(g));
	dfr_callback(ds[2], unit_int(2), unit_free_cb);
	assert_false(dfr_fired(g));
	dfr_callback(ds[0], unit_int(0), unit_free_cb);
	assert_true(dfr_fired(g));
	res = dfr_value(g);
	assert_int_equal(res->n, 3);
	assert_int_equal(*(int *)res->values[0], 0);
	assert_int_equal(*(int *)res->values[1], 1);
	assert_int_equal(*(int *)res->values[2], 2);
	assert_int_equal(unit_freed, 0);
	dfr_unref(g); /* owns the values now */
	assert_int_equal(unit_freed, 3);
}

/* A result taken from the gather is the caller's; dfr_gather_result_free()
 * releases it and its values. */
static void
test_take_result(void **state)
{
	struct dfr *ds[2], *g;
	struct dfr_gather_result *res;

	(void)state;
	ds[0] = dfr_succeed(unit_int(5), unit_free_cb);
	ds[1] = dfr_succeed(unit_int(6), unit_free_cb);
	g = dfr_gather(ds, 2, 0);
	res = dfr_take_value(g);
	assert_non_null(res);
	dfr_unref(g);
	assert_int_equal(unit_freed, 0); /* the caller's now */
	assert_int_equal(*(int *)res->values[1], 6);
	dfr_gather_result_free(res);
	assert_int_equal(unit_freed, 2);
	dfr_gather_result_free(NULL);
}

/* First failure: fails with the member's code and index; others are reported.
 */
static void
test_first_failure(void **state)
{
	struct dfr *ds[3], *g;
	const struct dfr_failure *f;

	(void)state;
	ds[0] = dfr_new(NULL, NULL);
	ds[1] = dfr_new(NULL, NULL);
	ds[2] = dfr_new(NULL, NULL);
	g = dfr_gather(ds, 3, 0);
	dfr_callback(ds[0], unit_int(0), unit_free_cb);
	dfr_errback(ds[2], EIO, "disk");
	assert_true(dfr_failed(g));
	f = dfr_failure(g);
	assert_int_equal(f->code, EIO);
	assert_int_equal(f->index, 2);
	assert_string_equal(f->message, "member 2: disk");
	assert_int_equal(unit_unhandled, 1); /* the member's own failure */
	dfr_errback(ds[1], EPIPE, "later");  /* after the gather fired */
	assert_int_equal(unit_unhandled, 2);
	dfr_failure_free(dfr_take_failure(g));
	dfr_unref(g);
	assert_int_equal(unit_freed, 1);
}

/* With consume-errors, members' failures are handled (not reported). */
static void
test_consume_errors(void **state)
{
	struct dfr *ds[2], *g;

	(void)state;
	ds[0] = dfr_new(NULL, NULL);
	ds[1] = dfr_fail(ENOENT, "missing"); /* already failed */
	g = dfr_gather(ds, 2, DFR_GATHER_CONSUME_ERRORS);
	assert_int_equal(dfr_failure_code(g), ENOENT);
	assert_int_equal(dfr_failure(g)->index, 1);
	dfr_errback(ds[0], EIO, "also");
	assert_int_equal(unit_unhandled, 0);
	/* The gather's own failure is still reported if nobody handles it. */
	dfr_unref(g);
	assert_int_equal(unit_unhandled, 1);
}

/*
 * A consumed failure stays handled where it goes next: a member that another
 * chain waits on hands that chain its failure, which is not reported again.
 */
static struct dfr *waited_member;

static void
wait_member(struct dfr *d, void *arg)
{
	(void)arg;
	dfr_wait(d, waited_member);
}

static void
test_consume_errors_waited_on(void **state)
{
	struct dfr *m, *outer, *g;

	(void)state;
	m = dfr_new(NULL, NULL);
	waited_member = dfr_ref(m); /* the reference dfr_wait takes over */
	g = dfr_gather(&m, 1, DFR_GATHER_CONSUME_ERRORS);
	outer = dfr_new(NULL, NULL);
	dfr_add_callback(outer, wait_member, NULL);
	dfr_callback(outer, NULL, NULL);
	assert_true(dfr_paused(outer));
	dfr_errback(m, EIO, "failed");
	assert_int_equal(dfr_failure_code(g), EIO);
	assert_int_equal(dfr_failure_code(outer), EIO);
	dfr_failure_free(dfr_take_failure(g));
	dfr_unref(g);
	dfr_unref(outer);
	assert_int_equal(unit_unhandled, 0);
}

/* Cancelling the gather cancels every member, even past a failing canceller. */
static int cancels;

static void
canceller_fails(struct dfr *d, void *arg)
{
	cancels++;
	dfr_errback(d, EBUSY, "cannot stop");
	(void)arg;
}

static void
canceller_plain(struct dfr *d, void *arg)
{
	cancels++;
	(void)d;
	(void)arg;
}

/* Errback of a member: how many cancellers had run when it ran. */
static int cancels_seen[3];

static void
note_cancels(struct dfr *d, void *arg)
{
	cancels_seen[(intptr_t)arg] = cancels;
	(void)d;
}

static void
test_cancel(void **state)
{
	struct dfr *ds[3], *keep[3], *g;
	int i;

	(void)state;
	cancels = 0;
	ds[0] = dfr_new(canceller_fails, NULL);
	ds[1] = dfr_new(canceller_plain, NULL);
	ds[2] = dfr_new(canceller_plain, NULL);
	for (i = 0; i < 3; i++) {
		keep[i] = dfr_ref(ds[i]);
		dfr_add_errback(ds[i], note_cancels, (void *)(intptr_t)i);
	}
	g = dfr_gather(ds, 3, DFR_GATHER_CONSUME_ERRORS);
	dfr_cancel(g);
	assert_int_equal(cancels, 3);
	/* Every member is cancelled before any member's callbacks run. */
	for (i = 0; i < 3; i++)
		assert_int_equal(cancels_seen[i], 3);
	assert_int_equal(dfr_failure_code(keep[0]), EBUSY);
	assert_int_equal(dfr_failure_code(keep[1]), DFR_ECANCELED);
	assert_int_equal(dfr_failure_code(keep[2]), DFR_ECANCELED);
	/* The first member's failure decides the gather's. */
	assert_int_equal(dfr_failure_code(g), EBUSY);
	assert_int_equal(dfr_failure(g)->index, 0);
	dfr_failure_free(dfr_take_failure(g));
	dfr_unref(g);
	for (i = 0; i < 3; i++)
		dfr_unref(keep[i]);
	assert_int_equal(unit_unhandled, 0);

	/* Cancelling a gather that has fired does nothing. */
	ds[0] = dfr_new(canceller_plain, NULL);
	keep[0] = dfr_ref(ds[0]);
	g = dfr_gather(ds, 1, 0);
	dfr_callback(keep[0], NULL, NULL);
	dfr_cancel(g);
	assert_false(dfr_failed(g));
	assert_int_equal(cancels, 3);
	dfr_unref(g);
	dfr_unref(keep[0]);
}

/* The gather dropped by its caller before its members fire: no leak. */
static void
test_dropped(void **state)
{
	struct dfr *ds[2], *keep;

	(void)state;
	ds[0] = dfr_new(NULL, NULL);
	ds[1] = dfr_succeed(unit_int(1), unit_free_cb);
	keep = dfr_ref(ds[0]);
	dfr_unref(dfr_gather(ds, 2, 0));
	dfr_callback(keep, unit_int(2), unit_free_cb);
	assert_int_equal(unit_freed, 2);
	dfr_unref(keep);
}

/*
 * A member's own callback (added before the gather) cancels the gather while
 * that member's chain runs: the others are cancelled, the first of them
 * decides the failure, and the member that fired keeps its value for the
 * result that is then released.
 */
static struct dfr *inner_g;

static void
cancel_gather(struct dfr *d, void *arg)
{
	dfr_cancel(inner_g);
	(void)d;
	(void)arg;
}

static void
test_cancel_from_member(void **state)
{
	struct dfr *ds[3], *keep[3];
	int i;

	(void)state;
	for (i = 0; i < 3; i++) {
		ds[i] = dfr_new(NULL, NULL);
		keep[i] = dfr_ref(ds[i]);
	}
	dfr_add_callback(ds[0], cancel_gather, NULL);
	inner_g = dfr_gather(ds, 3, DFR_GATHER_CONSUME_ERRORS);
	assert_int_equal(dfr_callback(keep[0], unit_int(0), unit_free_cb), 0);
	assert_int_equal(dfr_failure_code(inner_g), DFR_ECANCELED);
	assert_int_equal(dfr_failure(inner_g)->index, 1);
	assert_int_equal(dfr_failure_code(keep[2]), DFR_ECANCELED);
	assert_int_equal(unit_freed, 1); /* member 0's value, with the result */
	dfr_failure_free(dfr_take_failure(inner_g));
	dfr_unref(inner_g);
	for (i = 0; i < 3; i++)
		dfr_unref(keep[i]);
	assert_int_equal(unit_unhandled, 0);
}

/*
 * The gather's deferred fired by its caller first (as Twisted's DeferredList
 * allows): the members' later results are released, not leaked, and do not
 * fire it again.
 */
static void
test_fired_by_caller(void **state)
{
	struct dfr *ds[2], *keep, *g;
	static int mine = 7;

	(void)state;
	ds[0] = dfr_succeed(unit_int(1), unit_free_cb);
	ds[1] = dfr_new(NULL, NULL);
	keep = dfr_ref(ds[1]);
	g = dfr_gather(ds, 2, 0);
	assert_int_equal(dfr_callback(g, &mine, NULL), 0);
	assert_int_equal(dfr_callback(keep, unit_int(2), unit_free_cb), 0);
	assert_ptr_equal(dfr_value(g), &mine);
	dfr_unref(keep);
	assert_int_equal(unit_freed, 2);
	dfr_unref(g);

	/* Same with a member's failure after the caller's own. */
	ds[0] = dfr_new(NULL, NULL);
	keep = dfr_ref(ds[0]);
	g = dfr_gather(ds, 1, DFR_GATHER_CONSUME_ERRORS);
	assert_int_equal(dfr_errback(g, EIO, "mine"), 0);
	assert_int_equal(dfr_errback(keep, EPERM, "member"), 0);
	assert_int_equal(dfr_failure_code(g), EIO);
	dfr_failure_free(dfr_take_failure(g));
	dfr_unref(g);
	dfr_unref(keep);
	assert_int_equal(unit_unhandled, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_empty, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_order, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_take_result, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_first_failure, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_consume_errors, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_consume_errors_waited_on,
					    unit_setup, unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_dropped, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_from_member, unit_setup,
					    unit_teardown),
	    cmocka_unit_test_setup_teardown(test_fired_by_caller, unit_setup,
					    unit_teardown),
	};

	return cmocka_run_group_tests_name("gather", tests, NULL, NULL);
}
