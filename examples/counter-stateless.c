/*
 * counter-stateless.c: the seed's other fix. next() takes its number at
 * once and remembers it in the callback's argument, instead of reading the
 * shared count when the record completes. Records run concurrently, so two
 * callers wait one round trip, not two.
 *
 *   $ ./counter-stateless
 *   1 d1
 *   2 d2
 */

#include <stdint.h>
#include <stdio.h>

#include "fake-record.h"

struct counter {
	struct event_base *base;
	int count;
};

/* Answer with the number this call took, carried in arg. */
static void
answer_mine(struct dfr *d, void *arg)
{
	dfr_set_value(d, arg, NULL);
}

/* next(): n = ++count; record(n); then answer n. */
static struct dfr *
counter_next(struct counter *c)
{
	int n = ++c->count;
	struct dfr *d = fake_record(c->base, n);

	dfr_add_callback(d, answer_mine, (void *)(intptr_t)n);
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

	d1 = counter_next(&c);
	d2 = counter_next(&c);
	dfr_add_callback(d1, print_result, "d1");
	dfr_add_callback(d2, print_result, "d2");
	event_base_dispatch(c.base);
	dfr_unref(d1);
	dfr_unref(d2);
	event_base_free(c.base);
	return 0;
}
