/*
 * consumer.cc: a C++ user of the installed libdfr, built by tests/abi/libdfr.sh
 * with "pkg-config --cflags --libs libdfr" only. It checks that dfr.h is
 * usable from C++ (extern "C", no C-only constructs) and that the library
 * links and behaves: a lock handing off to a waiter, a queue, gather, a
 * failure and its errback. Prints "ok" and exits 0, else says what differed.
 */
#include <dfr.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace
{

int failures;

void
expect(bool cond, const char *what)
{
	if (!cond) {
		std::fprintf(stderr, "consumer: %s\n", what);
		failures++;
	}
}

} // namespace

extern "C" {

/* Work run under the lock: the deferred the test fires later. */
static struct dfr *
hold(void *arg)
{
	return dfr_ref(static_cast<struct dfr *>(arg));
}

/* Errback that handles the failure and recovers with its code. */
static void
recover(struct dfr *d, void *arg)
{
	struct dfr_failure *f = dfr_take_failure(d);

	*static_cast<int *>(arg) = f->code;
	dfr_failure_free(f);
}

static void
count_unhandled(const struct dfr_failure *f, void *arg)
{
	(void)f;
	++*static_cast<int *>(arg);
}

} // extern "C"

int
main()
{
	int unhandled = 0, code = 0;
	dfr_set_unhandled_cb(count_unhandled, &unhandled);

	/* Lock: the second run waits until the first one's work fires. */
	struct dfr_lock *l = dfr_lock_new();
	struct dfr *work = dfr_new(nullptr, nullptr);
	struct dfr *r1 = dfr_lock_run(l, hold, work);
	struct dfr *r2 = dfr_lock_acquire(l);
	expect(dfr_lock_locked(l) && dfr_lock_waiting(l) == 1,
	       "the second acquire does not wait");
	expect(!dfr_fired(r2),
	       "the second acquire fired while the lock was held");
	dfr_callback(work, reinterpret_cast<void *>(std::intptr_t{7}), nullptr);
	dfr_unref(work);
	expect(dfr_fired(r1) && dfr_value(r1) == reinterpret_cast<void *>(7),
	       "run does not carry its work's value");
	expect(dfr_fired(r2) && dfr_lock_locked(l),
	       "the lock was not handed over");
	expect(dfr_lock_release(l) == 0 && !dfr_lock_locked(l),
	       "release does not unlock");
	struct dfr_stats st;
	dfr_lock_stats(l, &st);
	expect(st.acquisitions == 2 && st.contended == 1,
	       "wrong lock statistics");
	dfr_unref(r1);
	dfr_unref(r2);
	dfr_lock_free(l);

	/* Queue and gather: two gets, fed by two puts, gathered in order. */
	struct dfr_queue *q = dfr_queue_new(DFR_UNBOUNDED, DFR_UNBOUNDED);
	struct dfr *gets[2] = {dfr_queue_get(q), dfr_queue_get(q)};
	struct dfr *all = dfr_gather(gets, 2, DFR_GATHER_CONSUME_ERRORS);
	static char a[] = "a", b[] = "b";
	expect(dfr_queue_put(q, a, nullptr) == 0 &&
		   dfr_queue_put(q, b, nullptr) == 0,
	       "put fails");
	auto *res = static_cast<struct dfr_gather_result *>(dfr_value(all));
	expect(res != nullptr && res->n == 2 && res->values[0] == a &&
		   res->values[1] == b,
	       "gather does not give the items in order");
	dfr_unref(all);
	dfr_queue_free(q);

	/* A failure, handled by an errback. */
	struct dfr *f = dfr_fail(DFR_ECLOSED, "closed %d", 1);
	dfr_add_errback(f, recover, &code);
	expect(code == DFR_ECLOSED && !dfr_failed(f),
	       "the errback did not run");
	dfr_unref(f);
	expect(unhandled == 0 && dfr_unhandled_count() == 0,
	       "a handled failure was reported");

	if (failures != 0)
		return EXIT_FAILURE;
	std::puts("ok");
	return EXIT_SUCCESS;
}
