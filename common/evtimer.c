/*
 * evtimer.c: timeouts on deferreds. The only file of libdfr that knows
 * libevent; the rest of the library needs no event loop.
 *
 * A timeout is a libevent timer plus a (callback, errback) pair appended to
 * the deferred's chain when the timeout is set (as Twisted's addTimeout): when
 * the chain reaches the pair, the timer is removed, and if the timer had
 * expired, a DFR_ECANCELED failure becomes DFR_ETIMEDOUT (or the caller's
 * on_timeout runs). Callbacks added before the timeout see DFR_ECANCELED.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include <event2/event.h>

#include "dfr-int.h"

struct dfr_timeout {
	struct event *ev;
	struct dfr *d; /* not a reference: d's free discards the timeout */
	dfr_cb on_timeout;
	void *arg;
	int expired;
};

/* The timer expired: cancel the deferred. */
static void
timeout_expire(evutil_socket_t fd, short what, void *arg)
{
	struct dfr_timeout *t = arg;
	struct dfr *d = dfr__ref(t->d);

	t->expired = 1;
	dfr_cancel(
	    d); /* may run the chain up to dfr__timeout_done, freeing t */
	dfr__unref(d);
}

/* The chain reached the timeout's pair: remove the timer, convert the cancel.
 */
void
dfr__timeout_done(struct dfr *d, void *arg)
{
	struct dfr_timeout *t = arg;
	int expired = t->expired;
	dfr_cb on_timeout = t->on_timeout;
	void *on_arg = t->arg;

	event_free(t->ev);
	free(t);
	d->flags &= (uint16_t)~DFR_F_TIMEOUT;
	if (!expired || dfr_failure_code(d) != DFR_ECANCELED)
		return;
	if (on_timeout != NULL)
		on_timeout(d, on_arg);
	else
		dfr_set_failure(d, DFR_ETIMEDOUT, "timed out");
}

/* d is freed before its chain reached the timeout's pair. */
void
dfr__timeout_discard(void *arg)
{
	struct dfr_timeout *t = arg;

	event_free(t->ev);
	free(t);
}

/* Cancel d after tv unless it fires first. */
int
dfr_set_timeout(struct dfr *d, struct event_base *base,
		const struct timeval *tv, dfr_cb on_timeout, void *arg)
{
	struct dfr_timeout *t;
	int rc;

	if (d->flags & DFR_F_TIMEOUT)
		return -EBUSY;
	if ((d->flags & DFR_F_FIRED) && d->inner == NULL)
		return -EALREADY;
	t = malloc(sizeof *t);
	if (t == NULL)
		return -ENOMEM;
	t->d = d;
	t->on_timeout = on_timeout;
	t->arg = arg;
	t->expired = 0;
	t->ev = evtimer_new(base, timeout_expire, t);
	if (t->ev == NULL) {
		free(t);
		return -ENOMEM;
	}
	rc = dfr_add_callbacks(d, dfr__timeout_done, dfr__timeout_done, t);
	if (rc < 0) {
		event_free(t->ev);
		free(t);
		return rc;
	}
	if (evtimer_add(t->ev, tv) < 0) {
		/*
		 * libevent adds a timer to its heap, which fails only for want
		 * of memory. The pair, just appended, has not run (d is unfired
		 * or paused): take it off, so nothing is left behind.
		 */
		d->ncbs--;
		event_free(t->ev);
		free(t);
		return -ENOMEM;
	}
	d->flags |= DFR_F_TIMEOUT;
	return 0;
}
