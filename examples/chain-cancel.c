/*
 * chain-cancel.c: one request made of three calls, each started by the
 * previous call's callback: look up a user, then the user's profile, then
 * the profile's picture. The callback pauses the request's chain with
 * dfr_wait() until the next call fires (Twisted's "return a Deferred from a
 * callback"); an errback falls back to a default picture; cancelling the
 * request while a call is in flight reaches that call and stops it.
 *
 * What the other examples do not show: dfr_wait() chaining, an errback that
 * recovers, and a cancel going down a chain to the call it waits on.
 *
 *   $ ./chain-cancel
 *   request 1: user alice
 *   request 1: profile of alice
 *   request 1: picture alice.png
 *   request 1: done (alice, profile of alice, alice.png)
 *   request 2: user bob
 *   request 2: profile of bob
 *   request 2: no picture (picture server down): default.png
 *   request 2: done (bob, profile of bob, default.png)
 *   request 3: user carol
 *   request 3: cancelling
 *   request 3: call "profile of carol" stopped
 *   request 3: failed: cancelled
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "dfr.h"

#define CALL_MS 20

static struct event_base *base;

/* A fake remote call: fires with a copy of answer after CALL_MS. */
struct call {
	struct event *ev;
	struct dfr *d; /* the timer's reference */
	char answer[64];
	int fail;
	int request;
};

static void
call_done(evutil_socket_t fd, short what, void *arg)
{
	struct call *c = arg;
	char *v;

	(void)fd;
	(void)what;
	if (c->fail)
		dfr_errback(c->d, EIO, "%s", c->answer);
	else if ((v = malloc(strlen(c->answer) + 1)) != NULL) {
		strcpy(v, c->answer);
		dfr_callback(c->d, v, free); /* the deferred owns v */
	} else
		dfr_errback(c->d, ENOMEM, "out of memory");
	dfr_unref(c->d);
	event_free(c->ev);
	free(c);
}

/* Stop the call: its timer goes, and with it the timer's reference. */
static void
call_cancel(struct dfr *d, void *arg)
{
	struct call *c = arg;

	printf("request %d: call \"%s\" stopped\n", c->request, c->answer);
	event_free(c->ev);
	free(c);
	dfr_unref(d); /* d then fails with DFR_ECANCELED */
}

static struct dfr *
call(int request, const char *answer, int fail)
{
	static const struct timeval latency = {0, CALL_MS * 1000};
	struct call *c = malloc(sizeof *c);

	if (c == NULL)
		abort();
	snprintf(c->answer, sizeof c->answer, "%s", answer);
	c->fail = fail;
	c->request = request;
	c->d = dfr_new(call_cancel, c);
	c->ev = evtimer_new(base, call_done, c);
	if (c->d == NULL || c->ev == NULL || evtimer_add(c->ev, &latency) < 0)
		abort();
	return dfr_ref(c->d);
}

/* One request and what its calls have answered so far. */
struct request {
	int id;
	int picture_fails;
	char *user, *profile, *picture;
};

/* Each step takes the previous call's answer, then waits on the next call. */
static void
got_user(struct dfr *d, void *arg)
{
	struct request *r = arg;
	char q[64];

	r->user = dfr_take_value(d); /* ours now: freed with the request */
	printf("request %d: user %s\n", r->id, r->user);
	snprintf(q, sizeof q, "profile of %s", r->user);
	dfr_wait(d, call(r->id, q, 0)); /* d's chain pauses until it fires */
}

static void
got_profile(struct dfr *d, void *arg)
{
	struct request *r = arg;
	char q[64];

	r->profile = dfr_take_value(d);
	printf("request %d: %s\n", r->id, r->profile);
	if (r->picture_fails)
		dfr_wait(d, call(r->id, "picture server down", 1));
	else {
		snprintf(q, sizeof q, "%s.png", r->user);
		dfr_wait(d, call(r->id, q, 0));
	}
}

static void
got_picture(struct dfr *d, void *arg)
{
	struct request *r = arg;

	r->picture = dfr_take_value(d);
	printf("request %d: picture %s\n", r->id, r->picture);
}

/* Only the picture has a fallback: the errback recovers with a default. */
static void
no_picture(struct dfr *d, void *arg)
{
	struct request *r = arg;
	char *fallback;

	if (r->profile == NULL || dfr_failure_code(d) == DFR_ECANCELED)
		return; /* an earlier step failed: pass the failure on */
	fallback = malloc(sizeof "default.png");
	if (fallback == NULL)
		return;
	strcpy(fallback, "default.png");
	printf("request %d: no picture (%s): %s\n", r->id,
	       dfr_failure(d)->message, fallback);
	r->picture = fallback;
	dfr_set_value(d, NULL, NULL); /* recovered: back to the callbacks */
}

static void
finished(struct dfr *d, void *arg)
{
	struct request *r = arg;

	if (dfr_failed(d)) {
		printf("request %d: failed: %s\n", r->id,
		       dfr_failure(d)->message);
		dfr_failure_free(dfr_take_failure(d)); /* handled */
	} else
		printf("request %d: done (%s, %s, %s)\n", r->id, r->user,
		       r->profile, r->picture);
}

/* The whole request: a deferred whose chain makes the three calls. */
static struct dfr *
request_start(struct request *r, const char *user)
{
	struct dfr *d = call(r->id, user, 0);

	dfr_add_callback(d, got_user, r);
	dfr_add_callback(d, got_profile, r);
	dfr_add_callbacks(d, got_picture, no_picture, r);
	dfr_add_both(d, finished, r);
	return d;
}

static void
cancel_request(evutil_socket_t fd, short what, void *arg)
{
	struct dfr *d = arg;

	(void)fd;
	(void)what;
	printf("request 3: cancelling\n");
	dfr_cancel(d); /* d waits on the profile call: that one is stopped */
}

int
main(void)
{
	/* Half way through the second call of request 3. */
	static const struct timeval cancel_at = {0, CALL_MS * 1500};
	struct request rs[3] = {{1, 0, NULL, NULL, NULL},
				{2, 1, NULL, NULL, NULL},
				{3, 0, NULL, NULL, NULL}};
	const char *users[3] = {"alice", "bob", "carol"};
	struct event *ev;
	struct dfr *d;
	int i;

	base = event_base_new();
	if (base == NULL)
		abort();
	for (i = 0; i < 3; i++) {
		d = request_start(&rs[i], users[i]);
		if (i < 2) {
			event_base_dispatch(base);
			dfr_unref(d);
			continue;
		}
		ev = evtimer_new(base, cancel_request, d);
		if (ev == NULL || evtimer_add(ev, &cancel_at) < 0)
			abort();
		event_base_dispatch(base);
		event_free(ev);
		dfr_unref(d);
	}
	for (i = 0; i < 3; i++) {
		free(rs[i].user);
		free(rs[i].profile);
		free(rs[i].picture);
	}
	event_base_free(base);
	return 0;
}
