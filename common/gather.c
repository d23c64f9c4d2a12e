/*
 * gather.c: fire when every member of a set has fired (Twisted's
 * gatherResults): values in input order, or the first failure with its
 * member's index.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "dfr-int.h"

struct gather;

/* What a member's callback needs: the gather and the member's index. */
struct gather_member {
	struct gather *g;
	size_t index;
	struct dfr *d;
};

struct gather {
	struct dfr *out; /* the gather's deferred, referenced until it fires */
	struct dfr_gather_result *res;
	dfr_free_cb *free_cbs; /* release functions of res->values */
	size_t pending;	       /* members whose callback has not run */
	size_t left;	       /* members still needed for success */
	size_t n;	       /* members */
	int flags;
	int failed;
	struct gather_member m[]; /* one per member */
};

/* Release a gather result and the values it owns. */
static void
gather_result_free(void *value)
{
	dfr_gather_result_free(value);
}

/* Release a gather result taken from its deferred, and the values it owns. */
void
dfr_gather_result_free(struct dfr_gather_result *res)
{
	dfr_free_cb *fcbs;
	size_t i;

	if (res == NULL)
		return;
	fcbs = (dfr_free_cb *)(res->values + res->n);
	for (i = 0; i < res->n; i++)
		if (fcbs[i] != NULL)
			fcbs[i](res->values[i]);
	free(res);
}

/* A result of n values and their release functions, in one block. */
static struct dfr_gather_result *
gather_result_new(size_t n)
{
	struct dfr_gather_result *res;

	if (n >
	    (SIZE_MAX - sizeof *res) / (sizeof(void *) + sizeof(dfr_free_cb)))
		return NULL;
	res =
	    calloc(1, sizeof *res + n * (sizeof(void *) + sizeof(dfr_free_cb)));
	if (res == NULL)
		return NULL;
	res->n = n;
	res->values = (void **)(res + 1);
	return res;
}

/* The gather's deferred fires: drop our hold on it. */
static void
gather_fire_done(struct gather *g)
{
	struct dfr *out = g->out;

	g->out = NULL;
	dfr__unref(out);
}

/* The gather state goes once every member has reported. */
static void
gather_put(struct gather *g)
{
	if (--g->pending > 0)
		return;
	if (g->res != NULL)
		gather_result_free(g->res);
	if (g->out != NULL) /* cannot happen: the last member fires out */
		gather_fire_done(g);
	free(g);
}

/* A member fired. */
static void
gather_member_cb(struct dfr *d, void *arg)
{
	struct gather_member *m = arg;
	struct gather *g = m->g;
	struct dfr_failure *f;
	struct dfr_gather_result *res;

	m->d = NULL;
	/* Fired by its holder first (Twisted allows it): ours is not needed. */
	if (g->out != NULL && (g->out->flags & DFR_F_FIRED))
		gather_fire_done(g);
	if (dfr_failed(d)) {
		if (g->flags & DFR_GATHER_CONSUME_ERRORS)
			dfr__set_handled(d);
		if (!g->failed && g->out != NULL) {
			g->failed = 1;
			f = dfr_failure_new(dfr_failure(d)->code,
					    "member %zu: %s", m->index,
					    dfr_failure(d)->message);
			if (f != NULL)
				f->index = (long)m->index;
			else
				f = dfr__failure_static(dfr_failure(d)->code);
			dfr_errback_failure(g->out, f);
			gather_fire_done(g);
		}
	} else if (!g->failed && g->out != NULL) {
		g->res->values[m->index] =
		    dfr__take_value(d, &g->free_cbs[m->index]);
		if (--g->left == 0) {
			res = g->res;
			g->res = NULL;
			dfr_callback(g->out, res, gather_result_free);
			gather_fire_done(g);
		}
	}
	dfr__unref(d); /* the caller's reference, which we took over */
	gather_put(g);
}

/* Cancelling the gather cancels every member that has not reported. */
static void
gather_cancel(struct dfr *out, void *arg)
{
	struct gather *g = arg;
	size_t i;

	/* The members' failures decide the result: no cancel by fiat. */
	dfr__cancel_later(out);
	g->pending++; /* keep g while we walk it */
	dfr__batch_begin();
	for (i = 0; i < g->n; i++)
		if (g->m[i].d != NULL)
			dfr_cancel(g->m[i].d);
	dfr__batch_end();
	gather_put(g);
}

/* Fire when all of ds[0..n-1] have fired. */
struct dfr *
dfr_gather(struct dfr **ds, size_t n, int flags)
{
	struct gather *g;
	struct dfr *out;
	size_t i;

	if (n == 0) {
		struct dfr_gather_result *res = gather_result_new(0);

		out =
		    res != NULL ? dfr__succeed(res, gather_result_free) : NULL;
		if (out == NULL) {
			free(res);
			errno = ENOMEM;
		}
		return out;
	}
	if (n > (SIZE_MAX - sizeof *g) / sizeof g->m[0])
		goto nomem;
	g = malloc(sizeof *g + n * sizeof g->m[0]);
	if (g == NULL)
		goto nomem;
	g->res = gather_result_new(n);
	out = g->res != NULL ? dfr__new(gather_cancel, g) : NULL;
	if (out == NULL) {
		free(g->res);
		free(g);
		goto nomem;
	}
	g->free_cbs = (dfr_free_cb *)(g->res->values + n);
	g->out = dfr__ref(out);
	g->pending = n + 1; /* + 1 while we add callbacks */
	g->left = n;
	g->n = n;
	g->flags = flags;
	g->failed = 0;
	for (i = 0; i < n; i++) {
		g->m[i].g = g;
		g->m[i].index = i;
		g->m[i].d = ds[i];
	}
	/* Members that fired already report at batch end, in input order. */
	dfr__batch_begin();
	for (i = 0; i < n; i++) {
		if (dfr_add_both(ds[i], gather_member_cb, &g->m[i]) < 0) {
			/* Out of memory: this member counts as failed. */
			g->m[i].d = NULL;
			if (!g->failed) {
				struct dfr_failure *f;

				g->failed = 1;
				f = dfr_failure_new(
				    ENOMEM, "member %zu: out of memory", i);
				if (f != NULL)
					f->index = (long)i;
				dfr_errback_failure(out, f);
				gather_fire_done(g);
			}
			dfr__unref(ds[i]);
			g->pending--;
		}
	}
	gather_put(g);
	dfr__batch_end();
	return out;

nomem:
	for (i = 0; i < n; i++)
		dfr__unref(ds[i]);
	errno = ENOMEM;
	return NULL;
}
