/*
 * counter-locked.c: the seed's NetworkCounter with a DeferredLock. The whole
 * "increment, record, answer" runs under the lock, so the second caller
 * waits for the first record to complete: 1 for d1, 2 for d2. Each caller
 * waits one round trip more than the one before it.
 *
 *   $ ./counter-locked
 *   1 d1
 *   2 d2
 */

#include <stdint.h>
#include <stdio.h>

#include "fake-record.h"

struct counter {
	struct event_base *base;
	struct dfr_lock *lock;
	int count;
};

static void
answer_count(struct dfr *d, void *arg)
{
	struct counter *c = arg;

	dfr_set_value(d, (void *)(intptr_t)c->count, NULL);
}

/* The critical section: only one runs at a time, until its record fires. */
static struct dfr *
increment_and_record(void *arg)
{
	struct counter *c = arg;
	struct dfr *d;

	c->count++;
	d = fake_record(c->base, c->count);
	dfr_add_callback(d, answer_count, c);
	return d; /* the lock is released when d fires */
}

/* next(): lock.run(increment_and_record). */
static struct dfr *
counter_next(struct counter *c)
{
	return dfr_lock_run(c->lock, increment_and_record, c);
}

static void
print_result(struct dfr *d, void *arg)
{
	printf("%d %s\n", (int)(intptr_t)dfr_value(d), (const char *)arg);
}

int
main(void)
{
	struct counter c = {event_base_new(), dfr_lock_new(), 0};
	struct dfr *d1, *d2;

	d1 = counter_next(&c);
	d2 = counter_next(&c); /* waits for the lock */
	dfr_add_callback(d1, print_result, "d1");
	dfr_add_callback(d2, print_result, "d2");
	event_base_dispatch(c.base);
	dfr_unref(d1);
	dfr_unref(d2);
	dfr_lock_free(c.lock);
	event_base_free(c.base);
	return 0;
}
