/*
 * unit.h: helpers shared by libdfr's unit tests (cmocka programs).
 */
#ifndef UNIT_H
#define UNIT_H

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dfr.h"

/* Size of the big tests: DFR_TEST_N, default 1,000,000 (smaller under
 * valgrind). */
static inline size_t
unit_n(void)
{
	const char *s = getenv("DFR_TEST_N");
	long v = s != NULL ? atol(s) : 0;

	return v > 0 ? (size_t)v : 1000000;
}

/* A heap value whose release is counted. */
static int unit_freed;
static inline void
unit_free_cb(void *v)
{
	unit_freed++;
	free(v);
}

static inline int *
unit_int(int v)
{
	int *p = malloc(sizeof *p);

	assert_non_null(p);
	*p = v;
	return p;
}

/* Unhandled failures seen by the test's reporter. */
static int unit_unhandled;
static int unit_unhandled_code;
static inline void
unit_unhandled_cb(const struct dfr_failure *f, void *arg)
{
	(void)arg;
	unit_unhandled++;
	unit_unhandled_code = f->code;
}

/* Per-test setup: count unhandled failures; teardown: none may be left. */
static inline int
unit_setup(void **state)
{
	(void)state;
	unit_freed = 0;
	unit_unhandled = 0;
	unit_unhandled_code = 0;
	dfr_set_unhandled_cb(unit_unhandled_cb, NULL);
	return 0;
}

static inline int
unit_teardown(void **state)
{
	(void)state;
	dfr_set_unhandled_cb(NULL, NULL);
	return 0;
}

/* A log of small integers, to check what ran and in which order. */
struct unit_log {
	int v[64];
	int n;
};
static inline void
unit_log_add(struct unit_log *l, int v)
{
	if (l->n < 64)
		l->v[l->n] = v;
	l->n++;
}

/* The log the callbacks below write to; each test empties it (unit_lg.n = 0) when it starts. */
static struct unit_log unit_lg __attribute__((unused));

/* A callback that logs its argument (an int). */
static inline void
unit_log_cb(struct dfr *d, void *arg)
{
	unit_log_add(&unit_lg, (int)(intptr_t)arg);
	(void)d;
}

/* An errback that logs minus its argument, leaving the failure in place. */
static inline void
unit_log_eb(struct dfr *d, void *arg)
{
	unit_log_add(&unit_lg, -(int)(intptr_t)arg);
	(void)d;
}

/* Lowest stack address seen by unit_stack_note() (stack grows down). */
static __thread uintptr_t unit_stack_low;
static void __attribute__((noinline, unused)) unit_stack_note(void)
{
	volatile char c = 0;
	uintptr_t p = (uintptr_t)&c;

	if (unit_stack_low == 0 || p < unit_stack_low)
		unit_stack_low = p;
	(void)c;
}

/* Run fn(arg) on a thread with a 256 KiB stack; returns the stack depth seen.
 */
struct unit_small {
	void (*fn)(void *);
	void *arg;
	uintptr_t top;
	size_t depth;
};

static inline void *
unit_small_main(void *p)
{
	struct unit_small *s = p;
	volatile char c = 0;

	s->top = (uintptr_t)&c;
	unit_stack_low = 0;
	s->fn(s->arg);
	s->depth = unit_stack_low != 0 ? s->top - unit_stack_low : 0;
	(void)c;
	return NULL;
}

static inline size_t
unit_run_small_stack(void (*fn)(void *), void *arg)
{
	struct unit_small s = {fn, arg, 0, 0};
	pthread_attr_t attr;
	pthread_t t;

	assert_int_equal(pthread_attr_init(&attr), 0);
	assert_int_equal(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
	assert_int_equal(pthread_create(&t, &attr, unit_small_main, &s), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	pthread_attr_destroy(&attr);
	return s.depth;
}

#endif /* UNIT_H */
