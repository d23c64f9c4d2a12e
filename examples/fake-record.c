/*
 * fake-record.c: the examples' fake record call: a deferred fired by a
 * one-shot libevent timer, as a real HTTP request would fire it.
 */

#include <stdlib.h>

#include "fake-record.h"

struct fake_call {
	struct event *ev;
	struct dfr *d;
};

/* The "response" arrives: fire the deferred, drop our reference. */
static void
fake_record_done(evutil_socket_t fd, short what, void *arg)
{
	struct fake_call *c = arg;

	(void)fd;
	(void)what;
	dfr_callback(c->d, NULL, NULL);
	dfr_unref(c->d);
	event_free(c->ev);
	free(c);
}

struct dfr *
fake_record(struct event_base *base, int value)
{
	static const struct timeval latency = {0, FAKE_RECORD_MS * 1000};
	struct fake_call *c = malloc(sizeof *c);

	(void)value; /* a real server would store it */
	if (c == NULL)
		return NULL;
	c->d = dfr_new(NULL, NULL);
	c->ev = evtimer_new(base, fake_record_done, c);
	if (c->d == NULL || c->ev == NULL || evtimer_add(c->ev, &latency) < 0)
		abort();
	return dfr_ref(c->d); /* one reference for us, one for the caller */
}
