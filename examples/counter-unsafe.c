/*
 * counter-unsafe.c: the seed's NetworkCounter without a lock, to show the
 * bug. next() increments, records the new count, and answers with the count
 * *when the record completes*: two concurrent calls both answer 2.
 *
 *   $ ./counter-unsafe
 *   2 d1
 *   2 d2
 */

#include <stdint.h>
#include <stdio.h>

#include "fake-record.h"

struct counter {
	struct event_base *base;
	int count;
};

/* The record is done: answer with the shared count, whatever it is now. */
static void
answer_count(struct dfr *d, void *arg)
{
	struct counter *c = arg;

	dfr_set_value(d, (void *)(intptr_t)c->count, NULL);
}

/* next(): count += 1; record(count); then answer count (the bug). */
static struct dfr *
counter_next(struct counter *c)
{
	struct dfr *d;

	c->count++;
	d = fake_record(c->base, c->count);
	dfr_add_callback(d, answer_count, c);
	return d;
}

static void
print_result(struct dfr *d, void *arg)
{
	printf("%d %s\n", (int)(intptr_t)dfr_value(d), (const char *)arg);
}

int
main(void)
{
	struct counter c = {event_base_new(), 0};
	struct dfr *d1, *d2;

	/* Two callers ask before either record has completed. */
	d1 = counter_next(&c);
	d2 = counter_next(&c);
	dfr_add_callback(d1, print_result, "d1");
	dfr_add_callback(d2, print_result, "d2");
	event_base_dispatch(c.base); /* runs until both records completed */
	dfr_unref(d1);
	dfr_unref(d2);
	event_base_free(c.base);
	return 0;
}
