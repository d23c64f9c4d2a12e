/*
 * queue.c: DeferredQueue. Stored items sit in a ring buffer; waiting gets
 * are unfired deferreds in an intrusive list, so cancelling one is O(1).
 *
 * No item is ever lost: put hands an item to a getter by firing it there and
 * then, so a getter is either still in the list (and gets nothing) or owns
 * the item; a cancelled getter has left the list before the next put.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dfr-int.h"

struct dfr_qitem {
	void *item;
	dfr_free_cb free_cb;
};

struct dfr_queue {
	struct dfr_list getters;
	struct dfr_qitem *ring;
	size_t cap;   /* slots in ring (a power of two, or 0) */
	size_t head;  /* oldest item */
	size_t count; /* items stored */
	size_t size;
	size_t backlog;
	int closed;
	struct dfr_stats st;
};

/* Create a queue. */
struct dfr_queue *
dfr_queue_new(size_t size, size_t backlog)
{
	struct dfr_queue *q;

	q = calloc(1, sizeof *q);
	if (q == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	TAILQ_INIT(&q->getters);
	q->size = size;
	q->backlog = backlog;
	return q;
}

/* Free a queue: getters fail with DFR_ECLOSED, items are released. */
void
dfr_queue_free(struct dfr_queue *q)
{
	size_t i;

	if (q == NULL)
		return;
	dfr_queue_close(q);
	for (i = 0; i < q->count; i++) {
		struct dfr_qitem *it = &q->ring[(q->head + i) & (q->cap - 1)];

		if (it->free_cb != NULL)
			it->free_cb(it->item);
	}
	free(q->ring);
	free(q);
}

/* Unlink a getter. */
static void
queue_unlink(struct dfr_queue *q, struct dfr *d)
{
	TAILQ_REMOVE(&q->getters, d, link);
	d->flags &= (uint16_t)~DFR_F_WAITER;
	q->st.waiting--;
}

/* Canceller of a waiting get: leave the list (the cancel fails it). */
static void
queue_cancel_get(struct dfr *d, void *arg)
{
	struct dfr_queue *q = arg;

	if (!(d->flags & DFR_F_WAITER))
		return;
	queue_unlink(q, d);
	q->st.cancelled++;
	dfr__unref(d); /* the list's; dfr_cancel() holds one */
}

/* Make room for one more item. */
static int queue_grow(struct dfr_queue *q) __attribute__((noinline));
static int
queue_grow(struct dfr_queue *q)
{
	struct dfr_qitem *ring;
	size_t cap = q->cap != 0 ? q->cap * 2 : 16;
	size_t first;

	if (cap < q->cap || cap > SIZE_MAX / sizeof *ring)
		return -ENOMEM;
	ring = malloc(cap * sizeof *ring);
	if (ring == NULL)
		return -ENOMEM;
	/* Unwrap: the oldest item goes to slot 0. */
	first = q->cap - q->head < q->count ? q->cap - q->head : q->count;
	if (q->count > 0) {
		memcpy(ring, q->ring + q->head, first * sizeof *ring);
		memcpy(ring + first, q->ring,
		       (q->count - first) * sizeof *ring);
	}
	free(q->ring);
	q->ring = ring;
	q->cap = cap;
	q->head = 0;
	return 0;
}

/* Hand an item to the oldest getter d (kept out of put's storing path). */
static void queue_hand(struct dfr_queue *q, struct dfr *d, void *item,
		       dfr_free_cb free_cb) __attribute__((noinline));
static void
queue_hand(struct dfr_queue *q, struct dfr *d, void *item, dfr_free_cb free_cb)
{
	uint64_t waited;

	waited = dfr__now_ns() - d->r.w.since_ns;
	queue_unlink(q, d);
	q->st.acquisitions++;
	q->st.contended++;
	q->st.wait_total_ns += waited;
	if (waited > q->st.wait_max_ns)
		q->st.wait_max_ns = waited;
	dfr__fire_value(d, item, free_cb);
	dfr__unref(d); /* the list's reference */
}

/* Put an item: to the oldest getter, else into storage. */
int
dfr_queue_put(struct dfr_queue *q, void *item, dfr_free_cb free_cb)
{
	struct dfr_qitem *it;
	struct dfr *d;

	if (q->closed)
		return -DFR_ECLOSED;
	if ((d = TAILQ_FIRST(&q->getters)) != NULL) {
		queue_hand(q, d, item, free_cb);
		return 0;
	}
	if (q->count >= q->size)
		return -DFR_EOVERFLOW;
	if (q->count == q->cap && queue_grow(q) < 0)
		return -ENOMEM;
	it = &q->ring[(q->head + q->count) & (q->cap - 1)];
	it->item = item;
	it->free_cb = free_cb;
	q->count++;
	q->st.held = q->count;
	return 0;
}

static struct dfr *queue_wait(struct dfr_queue *q) __attribute__((noinline));

/* Get: the oldest item now, or a wait for the next put. */
struct dfr *
dfr_queue_get(struct dfr_queue *q)
{
	struct dfr_qitem *it;
	struct dfr *d;

	if (q->count == 0)
		return queue_wait(q);
	it = &q->ring[q->head];
	d = dfr__fired(it->item, it->free_cb);
	if (d == NULL)
		return NULL; /* the item stays stored */
	q->head = (q->head + 1) & (q->cap - 1);
	q->count--;
	q->st.held = q->count;
	q->st.acquisitions++;
	return d;
}

/* A get with nothing stored: wait for the next put (out of get's way). */
static struct dfr *
queue_wait(struct dfr_queue *q)
{
	struct dfr *d;

	if (q->closed)
		return dfr_fail(DFR_ECLOSED, "queue closed");
	if (q->st.waiting >= q->backlog)
		return dfr_fail(DFR_EUNDERFLOW,
				"queue underflow: %zu gets already waiting",
				(size_t)q->st.waiting);
	d = dfr__new(queue_cancel_get, q);
	if (d == NULL)
		return NULL;
	d->r.w.since_ns = dfr__now_ns();
	d->r.w.n = 1;
	d->flags |= DFR_F_WAITER;
	dfr__ref(d); /* the list's reference, until d fires */
	TAILQ_INSERT_TAIL(&q->getters, d, link);
	if (++q->st.waiting > q->st.max_waiting)
		q->st.max_waiting = q->st.waiting;
	return d;
}

/* Items stored. */
size_t
dfr_queue_size(const struct dfr_queue *q)
{
	return q->count;
}

/* Gets waiting. */
size_t
dfr_queue_waiting(const struct dfr_queue *q)
{
	return (size_t)q->st.waiting;
}

/* Fail waiting gets, refuse later puts; stored items can still be got. */
void
dfr_queue_close(struct dfr_queue *q)
{
	struct dfr *d;

	q->closed = 1;
	dfr__batch_begin();
	while ((d = TAILQ_FIRST(&q->getters)) != NULL) {
		queue_unlink(q, d);
		dfr__fire_failure(d, DFR_ECLOSED, "queue closed");
		dfr__unref(d);
	}
	dfr__batch_end();
}

/* Copy the statistics. */
void
dfr_queue_stats(const struct dfr_queue *q, struct dfr_stats *st)
{
	*st = q->st;
}
