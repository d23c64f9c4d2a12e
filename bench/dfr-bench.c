/*
 * dfr-bench.c: libdfr's performance figures for issue 2, printed as JSON.
 *
 * Each throughput figure is the median of several timed runs; the
 * contended and cancel figures use one million waiters. Nothing here is a
 * test: it measures, and says when something did not complete.
 *
 * Usage: dfr-bench [-r RUNS] [-n WAITERS] [-m MEM_WAITERS] [-t SECONDS]
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dfr.h"

static int runs = 5;
static size_t waiters = 1000000;
static size_t mem_waiters = 100000;
static double slice = 0.3; /* seconds per throughput run */

static uint64_t done_count;
static uint64_t order_errors;
static uint64_t failures;

/* Monotonic time in seconds. */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of n values (sorts them in place). */
static double
median(double *v, int n)
{
	qsort(v, n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The work under the lock: a result that has already fired. */
static struct dfr *
work_fired(void *arg)
{
	return dfr_succeed(NULL, NULL);
}

/* Work for the contended drain: checks FIFO order, completes at once. */
static struct dfr *
work_ordered(void *arg)
{
	uint64_t want = (uint64_t)(uintptr_t)arg;

	if (want != done_count)
		order_errors++;
	done_count++;
	return dfr_succeed(NULL, NULL);
}

/* Errback that consumes a failure so nothing is reported unhandled. */
static void
eat_failure(struct dfr *d, void *arg)
{
	dfr_failure_free(dfr_take_failure(d));
}

/* Count failures reported as unhandled (should stay 0 on the fast paths). */
static void
count_unhandled(const struct dfr_failure *f, void *arg)
{
	failures++;
}

typedef uint64_t (*op_fn)(void *ctx, uint64_t batch);

/* Ops per second of fn: median over runs, each running for about slice s. */
static double
rate(op_fn fn, void *ctx)
{
	double r[64];
	int i;

	for (i = 0; i < runs && i < 64; i++) {
		uint64_t n = 0, batch = 10000;
		double t0 = now(), t;

		do {
			n += fn(ctx, batch);
			t = now() - t0;
		} while (t < slice);
		r[i] = n / t;
	}
	return median(r, i);
}

static uint64_t
op_lock_run(void *ctx, uint64_t batch)
{
	struct dfr_lock *l = ctx;
	uint64_t i;

	for (i = 0; i < batch; i++) {
		struct dfr *d = dfr_lock_run(l, work_fired, NULL);

		if (d == NULL || !dfr_fired(d) || dfr_failed(d))
			failures++;
		dfr_unref(d);
	}
	return batch;
}

static uint64_t
op_sem_run(void *ctx, uint64_t batch)
{
	struct dfr_sem *s = ctx;
	uint64_t i;

	for (i = 0; i < batch; i++) {
		struct dfr *d = dfr_sem_run(s, work_fired, NULL);

		if (d == NULL || !dfr_fired(d) || dfr_failed(d))
			failures++;
		dfr_unref(d);
	}
	return batch;
}

static int item;

/* put then get: the get finds a stored item (Twisted's put(); get()). */
static uint64_t
op_queue_put_get(void *ctx, uint64_t batch)
{
	struct dfr_queue *q = ctx;
	uint64_t i;

	for (i = 0; i < batch; i++) {
		struct dfr *d;

		if (dfr_queue_put(q, &item, NULL) != 0)
			failures++;
		d = dfr_queue_get(q);
		if (d == NULL || dfr_value(d) != &item)
			failures++;
		dfr_unref(d);
	}
	return batch;
}

static uint64_t consumed;

/* A consumer's callback: takes the item. */
static void
consume_item(struct dfr *d, void *arg)
{
	if (dfr_take_value(d) == &item)
		consumed++;
}

/* put, get, and a callback that consumes the item (what a consumer does). */
static uint64_t
op_queue_put_get_cb(void *ctx, uint64_t batch)
{
	struct dfr_queue *q = ctx;
	uint64_t i, before = consumed;

	for (i = 0; i < batch; i++) {
		struct dfr *d;

		if (dfr_queue_put(q, &item, NULL) != 0)
			failures++;
		d = dfr_queue_get(q);
		if (d == NULL || dfr_add_callback(d, consume_item, NULL) != 0)
			failures++;
		dfr_unref(d);
	}
	if (consumed - before != batch)
		failures++;
	return batch;
}

/* get then put: the put feeds a waiting getter. */
static uint64_t
op_queue_get_put(void *ctx, uint64_t batch)
{
	struct dfr_queue *q = ctx;
	uint64_t i;

	for (i = 0; i < batch; i++) {
		struct dfr *d = dfr_queue_get(q);

		if (d == NULL || dfr_queue_put(q, &item, NULL) != 0 ||
		    dfr_value(d) != &item)
			failures++;
		dfr_unref(d);
	}
	return batch;
}

/*
 * n waiters queued behind a held lock, each running work that completes
 * synchronously; releasing the first hold drains them all. Returns the
 * drain time; *completed gets how many ran.
 */
static double
contended(size_t n, uint64_t *completed, double *queue_s)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr **ds = calloc(n, sizeof *ds);
	struct dfr *hold;
	double t0, t1;
	size_t i;

	if (l == NULL || ds == NULL) {
		perror("dfr-bench");
		exit(1);
	}
	done_count = order_errors = 0;
	hold = dfr_lock_acquire(l);
	t0 = now();
	for (i = 0; i < n; i++) {
		ds[i] = dfr_lock_run(l, work_ordered, (void *)(uintptr_t)i);
		if (ds[i] == NULL)
			failures++;
	}
	*queue_s = now() - t0;
	t0 = now();
	if (dfr_lock_release(l) != 0)
		failures++;
	t1 = now() - t0;
	*completed = done_count;
	for (i = 0; i < n; i++) {
		if (ds[i] != NULL && (!dfr_fired(ds[i]) || dfr_failed(ds[i])))
			failures++;
		dfr_unref(ds[i]);
	}
	if (dfr_lock_locked(l))
		failures++;
	dfr_unref(hold);
	dfr_lock_free(l);
	free(ds);
	return t1;
}

/* n waiting acquires cancelled from the last to the first; returns seconds. */
static double
cancel_last_to_first(size_t n, uint64_t *cancelled)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr **ds = calloc(n, sizeof *ds);
	struct dfr *hold;
	struct dfr_stats st;
	double t0, t;
	size_t i;

	if (l == NULL || ds == NULL) {
		perror("dfr-bench");
		exit(1);
	}
	hold = dfr_lock_acquire(l);
	for (i = 0; i < n; i++) {
		ds[i] = dfr_lock_acquire(l);
		if (ds[i] == NULL || dfr_add_errback(ds[i], eat_failure, NULL) != 0)
			failures++;
	}
	t0 = now();
	for (i = n; i-- > 0;)
		dfr_cancel(ds[i]);
	t = now() - t0;
	dfr_lock_stats(l, &st);
	*cancelled = st.cancelled;
	if (dfr_lock_waiting(l) != 0)
		failures++;
	for (i = 0; i < n; i++)
		dfr_unref(ds[i]);
	dfr_lock_release(l);
	dfr_unref(hold);
	dfr_lock_free(l);
	free(ds);
	return t;
}

/* Heap bytes per waiting acquire (the deferred plus the library's waiter). */
static double
bytes_per_waiter(size_t n)
{
	struct dfr_lock *l = dfr_lock_new();
	struct dfr **ds = calloc(n, sizeof *ds);
	struct dfr *hold;
	struct mallinfo2 before, after;
	size_t i;

	if (l == NULL || ds == NULL) {
		perror("dfr-bench");
		exit(1);
	}
	hold = dfr_lock_acquire(l);
	/* Warm up any lazily allocated runner state before the baseline. */
	ds[0] = dfr_lock_acquire(l);
	dfr_add_errback(ds[0], eat_failure, NULL);
	dfr_cancel(ds[0]);
	dfr_unref(ds[0]);
	malloc_trim(0);
	before = mallinfo2();
	for (i = 0; i < n; i++)
		ds[i] = dfr_lock_acquire(l);
	after = mallinfo2();
	for (i = 0; i < n; i++)
		dfr_add_errback(ds[i], eat_failure, NULL);
	dfr_lock_close(l); /* fails every waiter with DFR_ECLOSED */
	for (i = 0; i < n; i++)
		dfr_unref(ds[i]);
	dfr_lock_release(l);
	dfr_unref(hold);
	dfr_lock_free(l);
	free(ds);
	return ((double)after.uordblks - (double)before.uordblks) / n;
}

static void
usage(void)
{
	fprintf(stderr, "usage: dfr-bench [-r RUNS] [-n WAITERS] [-m MEM_WAITERS] [-t SECONDS]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct dfr_lock *l;
	struct dfr_sem *s;
	struct dfr_queue *q;
	double lock_rate, sem_rate, qpg_rate, qgp_rate, qcb_rate, drain, queue_s, cancel_s, mem;
	double dr[64], qs[64], cs[64];
	uint64_t completed = 0, cancelled = 0, order = 0;
	int c, i;

	while ((c = getopt(argc, argv, "r:n:m:t:")) != -1) {
		switch (c) {
		case 'r':
			runs = atoi(optarg);
			break;
		case 'n':
			waiters = strtoull(optarg, NULL, 10);
			break;
		case 'm':
			mem_waiters = strtoull(optarg, NULL, 10);
			break;
		case 't':
			slice = atof(optarg);
			break;
		default:
			usage();
		}
	}
	if (runs < 1 || runs > 64 || waiters < 1 || mem_waiters < 1 || slice <= 0)
		usage();
	dfr_set_unhandled_cb(count_unhandled, NULL);

	if ((l = dfr_lock_new()) == NULL || (s = dfr_sem_new(10)) == NULL ||
	    (q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED)) == NULL) {
		perror("dfr-bench");
		return 1;
	}
	lock_rate = rate(op_lock_run, l);
	sem_rate = rate(op_sem_run, s);
	qpg_rate = rate(op_queue_put_get, q);
	qgp_rate = rate(op_queue_get_put, q);
	qcb_rate = rate(op_queue_put_get_cb, q);
	dfr_lock_free(l);
	dfr_sem_free(s);
	dfr_queue_free(q);

	/* The million-waiter figures are slower: at most 3 runs each. */
	for (i = 0; i < runs && i < 3; i++) {
		uint64_t got;

		dr[i] = contended(waiters, &got, &qs[i]);
		if (i == 0 || got < completed)
			completed = got;
		order += order_errors;
		cs[i] = cancel_last_to_first(waiters, &got);
		if (i == 0 || got < cancelled)
			cancelled = got;
	}
	drain = median(dr, i);
	queue_s = median(qs, i);
	cancel_s = median(cs, i);
	mem = bytes_per_waiter(mem_waiters);

	printf("{\n");
	printf("  \"lock_run_per_s\": %.0f,\n", lock_rate);
	printf("  \"sem10_run_per_s\": %.0f,\n", sem_rate);
	printf("  \"queue_put_get_per_s\": %.0f,\n", qpg_rate);
	printf("  \"queue_get_put_per_s\": %.0f,\n", qgp_rate);
	printf("  \"queue_put_get_cb_per_s\": %.0f,\n", qcb_rate);
	printf("  \"contended_waiters\": %zu,\n", waiters);
	printf("  \"contended_completed\": %llu,\n", (unsigned long long)completed);
	printf("  \"contended_order_errors\": %llu,\n", (unsigned long long)order);
	printf("  \"contended_queue_s\": %.4f,\n", queue_s);
	printf("  \"contended_drain_s\": %.4f,\n", drain);
	printf("  \"handoffs_per_s\": %.0f,\n", waiters / drain);
	printf("  \"cancel_waiters\": %zu,\n", waiters);
	printf("  \"cancel_done\": %llu,\n", (unsigned long long)cancelled);
	printf("  \"cancel_s\": %.4f,\n", cancel_s);
	printf("  \"mem_waiters\": %zu,\n", mem_waiters);
	printf("  \"bytes_per_waiter\": %.1f,\n", mem);
	printf("  \"failures\": %llu,\n", (unsigned long long)failures);
	printf("  \"runs\": %d\n", runs);
	printf("}\n");
	return failures != 0 || order != 0 || completed != waiters;
}
