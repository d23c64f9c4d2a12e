/*
 * dfr.h: libdfr, Twisted-style asynchronous primitives for libevent programs.
 *
 * Deferred (a result that arrives later, with a chain of callbacks and
 * errbacks), DeferredLock, DeferredSemaphore, DeferredQueue and gather.
 *
 * Threading: every object, and the chain runner behind them, belongs to the
 * thread that uses it; nothing here is thread-safe. Different threads may use
 * libdfr independently (the runner's state is per thread).
 *
 * Errors: functions return 0 or a negative errno value; constructors return
 * NULL and set errno. The library never exits and never prints, except the
 * default unhandled-failure reporter (see dfr_set_unhandled_cb).
 *
 * Out of memory: a call that cannot allocate returns NULL with errno ENOMEM
 * or -ENOMEM and has no effect (a callback it was given is never called, an
 * item stays the caller's, no lock or token is taken, nothing is left
 * waiting), unless its comment says otherwise; once memory is back, every
 * object works as before. A failure the library cannot allocate (to fail a
 * deferred) is replaced by a shared static one, which dfr_failure_free()
 * ignores and which must not be modified: DFR_ECANCELED, DFR_ETIMEDOUT,
 * DFR_ECLOSED and EPIPE keep their code, with a fixed message; any other
 * code becomes ENOMEM "out of memory".
 *
 * When callbacks run (the "trampoline" rule): firing a deferred, or adding a
 * callback to one that has already fired, runs its chain synchronously inside
 * that call, unless a chain is already running on this thread (that is, the
 * call is made from inside a callback). Then the work is queued and runs right
 * after the current callback returns, before the outermost call returns. So
 * stack depth is constant whatever the number of chained deferreds or queued
 * waiters, and a callback never runs re-entrantly inside another callback.
 */
#ifndef DFR_H
#define DFR_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

/* printf-style format checking where the compiler has it (GCC, clang). */
#if defined(__GNUC__)
#define DFR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define DFR_PRINTF(fmt, args)
#endif

/* Failure codes used by the library (positive errno values). */
#define DFR_ECANCELED ECANCELED /* the deferred was cancelled */
#define DFR_ETIMEDOUT ETIMEDOUT /* a timeout expired */
#define DFR_ECLOSED ESHUTDOWN	/* the lock, semaphore or queue was closed */
#define DFR_EOVERFLOW ENOBUFS	/* queue full: put had nowhere to go */
#define DFR_EUNDERFLOW EAGAIN	/* queue backlog full: get cannot wait */
#define DFR_ECYCLE ELOOP	/* a callback chained a deferred to itself */

/* Release function for a value held by a deferred; NULL means "not owned". */
typedef void (*dfr_free_cb)(void *value);

/* ------------------------------------------------------------------------ */
/* Failures                                                                  */

/*
 * A failure: an error code (a positive errno value or the application's own)
 * and a human message. Owned by exactly one deferred at a time, or by
 * whoever took it with dfr_take_failure(); one the library made without
 * memory is shared and static (see "Out of memory" above).
 */
struct dfr_failure {
	int code;
	char *message; /* never NULL; freed with the failure */
	long index;    /* dfr_gather: index of the failed member, else -1 */
};

/* Create a failure with a printf-style message; NULL and errno on ENOMEM. */
struct dfr_failure *dfr_failure_new(int code, const char *fmt, ...)
    DFR_PRINTF(2, 3);

/* Free a failure taken with dfr_take_failure(); NULL is ignored. */
void dfr_failure_free(struct dfr_failure *f);

/*
 * Called when a deferred whose final result is an unhandled failure is
 * freed (Twisted's "Unhandled error in Deferred"). A failure is handled when
 * a callback takes it away (dfr_take_failure() then dfr_failure_free(), or
 * dfr_set_value() to recover) or by DFR_GATHER_CONSUME_ERRORS; an errback
 * that only reads it leaves it unhandled. This includes the DFR_ECANCELED of
 * a cancelled deferred and the DFR_ECLOSED of a closed waiter. The failure
 * is owned by the library and valid only during the call. The default reporter
 * writes one line to stderr; set NULL to restore it. dfr_unhandled_count()
 * counts every report since the process started.
 */
typedef void (*dfr_unhandled_cb)(const struct dfr_failure *f, void *arg);
void dfr_set_unhandled_cb(dfr_unhandled_cb cb, void *arg);
uint64_t dfr_unhandled_count(void);

/* ------------------------------------------------------------------------ */
/* Deferred                                                                  */

struct dfr;

/*
 * A callback or errback. It sees the current result of d through
 * dfr_failed(), dfr_value() and dfr_failure(), and may change it:
 * dfr_set_value() (an errback that does this recovers), dfr_set_failure(),
 * dfr_take_value()/dfr_take_failure(), or dfr_wait() to pause the chain until
 * another deferred fires. Doing nothing passes the result on unchanged.
 * The chain runner holds a reference on d while the callback runs, so the
 * callback may drop the caller's last reference.
 */
typedef void (*dfr_cb)(struct dfr *d, void *arg);

/*
 * A canceller: called at most once, when an unfired deferred is cancelled.
 * It may fire d (a value or a failure), which then wins over the
 * cancellation error; if it leaves d unfired, d fails with DFR_ECANCELED.
 * It may drop the reference of whoever was to fire d (a stopped timer's):
 * the cancel holds its own until d has failed and its callbacks have run.
 */
typedef void (*dfr_canceller_cb)(struct dfr *d, void *arg);

/*
 * Create an unfired deferred with an optional canceller. The caller holds
 * one reference. NULL and errno=ENOMEM on failure.
 */
struct dfr *dfr_new(dfr_canceller_cb canceller, void *arg);

/*
 * A deferred already fired with value (owned by it, released with free_cb).
 * NULL and errno=ENOMEM on failure: the caller keeps value.
 */
struct dfr *dfr_succeed(void *value, dfr_free_cb free_cb);

/*
 * A deferred already failed with code and a printf-style message (no memory
 * for the failure: see "Out of memory" above). NULL and errno=ENOMEM.
 */
struct dfr *dfr_fail(int code, const char *fmt, ...) DFR_PRINTF(2, 3);

/* Take another reference to d; returns d. */
struct dfr *dfr_ref(struct dfr *d);

/*
 * Drop a reference. The last one frees d, its value (through its free
 * callback) and its failure; an unhandled failure is reported first. While
 * d's chain runs, or is paused waiting for another deferred (dfr_wait),
 * that runner or that deferred holds its own reference, so dropping yours
 * never stops the chain. An unfired deferred with pending callbacks freed
 * this way never fires them; if another deferred waited for it, that one
 * goes on with an EPIPE failure. A timeout (dfr_set_timeout) holds no
 * reference. Whoever will fire a deferred must hold a reference until it
 * has: a function that creates one and fires it later returns
 * dfr_ref(d) and keeps d, then calls dfr_callback(d, ...); dfr_unref(d).
 */
void dfr_unref(struct dfr *d);

/*
 * Fire d with a value, which d owns from then on (free_cb releases it; NULL
 * if d should not own it). Returns 0, or -EALREADY if d has already fired (the
 * caller keeps value). After a cancel that failed d with DFR_ECANCELED, the
 * first late dfr_callback() or dfr_errback() is accepted and discarded (value
 * released) and returns 0, also when d has a canceller (Twisted swallows one
 * only when there is none, and raises AlreadyCalledError otherwise: here the
 * source that fires late need not know d was cancelled, nor lose its value).
 * -EBUSY if d is a waiting acquire or get: only its lock, semaphore or queue
 * fires it (cancel it instead).
 */
int dfr_callback(struct dfr *d, void *value, dfr_free_cb free_cb);

/*
 * Fail d with code and a printf-style message (no memory for the failure:
 * see "Out of memory" above); returns as dfr_callback().
 */
int dfr_errback(struct dfr *d, int code, const char *fmt, ...) DFR_PRINTF(3, 4);

/*
 * Fail d with failure f, which d takes in every case (on -EALREADY it is
 * freed). A NULL f (a dfr_failure_new() that had no memory) fails d with
 * ENOMEM "out of memory". Returns as dfr_callback().
 */
int dfr_errback_failure(struct dfr *d, struct dfr_failure *f);

/*
 * Append a (callback, errback) pair to d's chain; either may be NULL (the
 * result passes through). If d has fired, the pair runs synchronously inside
 * this call (see the trampoline rule). Returns 0 or -ENOMEM (the callbacks
 * will never be called).
 */
int dfr_add_callbacks(struct dfr *d, dfr_cb cb, dfr_cb eb, void *arg);
int dfr_add_callback(struct dfr *d, dfr_cb cb, void *arg);
int dfr_add_errback(struct dfr *d, dfr_cb eb, void *arg);
/* Same function as callback and errback (Twisted's addBoth). */
int dfr_add_both(struct dfr *d, dfr_cb fn, void *arg);

/*
 * Cancel d. Unfired: its canceller runs (at most once in d's life), and if
 * d is still unfired afterwards it fails with DFR_ECANCELED. If d's chain is
 * paused on an inner deferred (dfr_wait), the cancel goes to the inner one
 * (for the deferred of a lock or semaphore run(), see dfr_lock_run()).
 * Fired: nothing happens, unless d's chain is queued behind the running
 * callback (d fired or resumed inside a callback, see the trampoline rule):
 * the cancel then waits for that chain to run, as in Twisted it would have
 * already, and goes to what the chain pauses on, if it pauses (a run() not
 * yet started is stopped instead, see dfr_lock_run()); if the chain ends, it
 * goes back up to the deferred it was made on when that one waits on it.
 * Repeated cancels do nothing more.
 */
void dfr_cancel(struct dfr *d);

/*
 * Cancel d after tv unless it fires first; when it does fire first the timer
 * is removed. On expiry d is cancelled; if that leaves a DFR_ECANCELED
 * failure it becomes DFR_ETIMEDOUT, or, if on_timeout is not NULL, on_timeout
 * runs instead of that conversion: it sees the DFR_ECANCELED failure and may
 * set any result (doing nothing leaves DFR_ECANCELED). A canceller's own
 * value or other failure is kept, and on_timeout is then not called. The
 * timer runs on base. As in Twisted, this adds a pair to d's chain:
 * callbacks added before dfr_set_timeout() see DFR_ECANCELED, those added
 * after see DFR_ETIMEDOUT (a deferred already waiting on d with dfr_wait()
 * is one added before). d may also be paused on an inner deferred (a run()
 * whose work is pending), or be a waiting acquire or get (the timeout bounds
 * the wait). The timer holds no reference to d (unlike Twisted's reactor):
 * if d's last reference goes first, d is freed with its timer and its
 * callbacks never run. Returns 0, -EALREADY if d has fired (and is not
 * paused), -EBUSY if d has a timeout already, or -ENOMEM (also when libevent
 * has no memory to add the timer); on error no timeout is set, and a later
 * dfr_set_timeout() may try again.
 */
int dfr_set_timeout(struct dfr *d, struct event_base *base,
		    const struct timeval *tv, dfr_cb on_timeout, void *arg);

/*
 * Whether d has fired (with a value or a failure), also while its chain is
 * paused (Twisted's "called"): the result is there if !dfr_paused(d) too.
 */
int dfr_fired(const struct dfr *d);

/* Whether d's current result is a failure (0 if unfired). */
int dfr_failed(const struct dfr *d);

/* Whether d's chain is paused waiting for an inner deferred. */
int dfr_paused(const struct dfr *d);

/* d's current value (NULL if unfired or failed); d keeps ownership. */
void *dfr_value(const struct dfr *d);

/* d's current failure (NULL if none); d keeps ownership. */
const struct dfr_failure *dfr_failure(const struct dfr *d);

/* The failure's code, or 0 if d has no failure (so use nonzero codes). */
int dfr_failure_code(const struct dfr *d);

/*
 * For callbacks: replace d's result with a value (the previous value is
 * released, a previous failure freed: an errback recovers this way).
 */
void dfr_set_value(struct dfr *d, void *value, dfr_free_cb free_cb);

/*
 * For callbacks: replace d's result with a new failure (no memory for it:
 * see "Out of memory" above; it never fails).
 */
void dfr_set_failure(struct dfr *d, int code, const char *fmt, ...)
    DFR_PRINTF(3, 4);

/*
 * For callbacks: as dfr_set_failure() with a failure d takes over; NULL (a
 * dfr_failure_new() that had no memory) sets ENOMEM "out of memory".
 */
void dfr_set_failure_obj(struct dfr *d, struct dfr_failure *f);

/*
 * For callbacks: take d's value; the caller owns it and must release it
 * (the free_cb it was given with is not returned: the caller must know how
 * the value was made). d's result becomes NULL (not owned).
 */
void *dfr_take_value(struct dfr *d);

/*
 * For callbacks: take d's failure (the caller frees it with
 * dfr_failure_free()); d recovers with a NULL value.
 */
struct dfr_failure *dfr_take_failure(struct dfr *d);

/*
 * For callbacks (chaining, Twisted's "return a Deferred"): pause d's chain
 * until inner fires, then continue with inner's result, which moves into d
 * (inner is left with a NULL value). d's current result is released first
 * (its value through its free_cb): take it before if it is still needed. Takes
 * over the caller's reference to inner; from then on inner holds a reference to
 * d until it resumes it (so whoever will fire inner must hold inner: if inner
 * is freed unfired, d goes on with an EPIPE failure). Waiting on d itself, or
 * on a deferred already waited on, fails d's chain with DFR_ECYCLE; so does
 * a second dfr_wait() while d is paused, and d then gives up its first wait
 * too. A NULL inner fails d's chain with EINVAL. A result set on d while it is
 * paused is released when inner's arrives. As in Twisted, d takes inner's
 * result as the pairs inner had when d began to wait leave it: pairs added to
 * inner after that run once d's chain, and those it resumes in turn, have run
 * or paused (they see a NULL value and cannot change d's result). The result
 * moves once: a wait made from a chain that one of inner's own callbacks fired
 * runs, by the trampoline rule, after that callback has returned, where Twisted
 * runs it nested, and the callback's return then puts the result back on inner
 * (both hold it; a failure is reported twice). Depth of chaining has no stack
 * cost.
 */
void dfr_wait(struct dfr *d, struct dfr *inner);

/* ------------------------------------------------------------------------ */
/* Statistics for lock, semaphore and queue (always on, O(1) to keep)       */

/*
 * Waits are counted when a waiter gets what it waited for: one cancelled or
 * timed out counts in cancelled, one failed by a close nowhere, and neither
 * in the wait times. For a lock or semaphore, "hold" is the time tokens are
 * held (hold_total_ns sums over all holders; hold_max_ns counts every hold of
 * a lock, and the run()s of a semaphore with more tokens, whose plain
 * releases cannot be matched to their acquires). For a queue, waiters are gets
 * (wait times are theirs), held is the items stored now, and hold times are not
 * kept: that would cost two clock reads per item, more than the put and get
 * themselves.
 */
struct dfr_stats {
	uint64_t waiting;	/* waiters now */
	uint64_t max_waiting;	/* most waiters at once */
	uint64_t acquisitions;	/* acquires (or gets) that fired with success */
	uint64_t contended;	/* of those, how many had to wait */
	uint64_t cancelled;	/* waiters removed by cancel or timeout */
	uint64_t wait_total_ns; /* total wait of the contended ones */
	uint64_t wait_max_ns;	/* longest of those waits */
	uint64_t hold_total_ns; /* total time between acquire and release */
	uint64_t hold_max_ns;	/* longest hold */
	uint64_t held;		/* tokens held now (lock: 0 or 1) */
};

/* ------------------------------------------------------------------------ */
/* Lock and semaphore                                                        */

struct dfr_lock;
struct dfr_sem;

/*
 * The work run under a lock or semaphore: returns a deferred carrying its
 * result (the caller of run gets that result); the library takes the
 * reference, so whoever will fire the deferred keeps one of its own (return
 * dfr_ref(d)). Its result moves into run's deferred: return a deferred that
 * no other chain waits on (one that is waited on already fails the run with
 * DFR_ECYCLE). Returning NULL counts as a failure with errno's code.
 */
typedef struct dfr *(*dfr_run_cb)(void *arg);

/* Create an unlocked lock; NULL and errno=ENOMEM on failure. */
struct dfr_lock *dfr_lock_new(void);

/*
 * Free a lock. Waiters still queued fail with DFR_ECLOSED first (as by
 * dfr_lock_close). The lock must not be used afterwards; deferreds already
 * handed out stay valid, and a run() whose work is still pending finishes
 * (the lock's memory goes when it has). It may be called from a callback,
 * or from a run()'s fn while it runs under this lock. Called from a callback,
 * it returns before the waiters' callbacks run (the trampoline rule): they
 * see DFR_ECLOSED and must not use the lock, which is gone by then.
 */
void dfr_lock_free(struct dfr_lock *l);

/*
 * Acquire: a deferred (caller's reference) that fires with the lock pointer
 * as its (unowned) value once the caller holds the lock: at once if free,
 * else after every earlier waiter (strict FIFO, no queue jumping).
 * Cancelling a waiting acquire removes it in O(1) and fails it with
 * DFR_ECANCELED. The lock keeps a reference to a waiting acquire until it
 * fires: dropping the caller's reference does not cancel the wait (its
 * callbacks still run; use dfr_cancel()). After close, fails with
 * DFR_ECLOSED. NULL and errno=ENOMEM if there is no memory: the lock is then
 * not taken and nothing waits.
 */
struct dfr *dfr_lock_acquire(struct dfr_lock *l);

/*
 * Release: hand the lock to the oldest waiter (it stays locked), or unlock.
 * Returns 0, or -EPERM if the lock is not held (also in release builds).
 */
int dfr_lock_release(struct dfr_lock *l);

/*
 * Run fn(arg) holding the lock and release it when fn's deferred fires,
 * with a value or a failure. The returned deferred (caller's reference)
 * carries fn's result or failure. If the lock is free, fn runs inside this
 * call, and if its deferred has already fired (with no callbacks pending),
 * the lock is released at once and that very deferred is returned.
 *
 * Cancelling it while waiting for the lock removes the waiter; fn never
 * runs. So too if it is cancelled after the lock was handed to it but
 * before fn was called (a hand-off made inside a callback starts fn only
 * when that callback returns): the lock goes on to the next waiter and the
 * run fails with DFR_ECANCELED. Cancelling it (or its timeout expiring) while
 * fn's work is pending calls the canceller of fn's deferred, if it has one, but
 * never fails that deferred by fiat: the lock is released only when fn's
 * deferred actually fires, by its canceller or when the work ends (unlike
 * Twisted, which releases at once and lets the next waiter overlap work still
 * running). A canceller that stops the work should fire fn's deferred; one
 * that drops the last reference to it instead (the firer's) leaves nothing to
 * fire it: it then fails with DFR_ECANCELED, its callbacks run and the lock
 * is released (while another reference is held, it stays unfired). fn's
 * deferred that is itself a waiting acquire, get or run (of any lock,
 * semaphore or queue) is the exception: nothing else would ever fire it, so it
 * is cancelled as by dfr_cancel() and fails with DFR_ECANCELED. The caller's
 * deferred fires at that same moment, with whatever fn's deferred ended with.
 * Work whose deferred has no canceller simply runs to its end. The caller's
 * callbacks run after the lock has been released (or handed to the next
 * waiter, whose fn runs after them).
 *
 * Out of memory: NULL and errno=ENOMEM before fn is called (fn is then never
 * called and nothing waits), or when fn's deferred was refused (NULL, or
 * waited on already) and no failed deferred could be made. If memory runs
 * out once fn's work is pending, the deferred returned is fn's own: it
 * carries fn's result and gives the lock back when it fires, before the
 * callbacks added to it after this call; dfr_cancel() on it cancels fn's
 * deferred itself. Only if that deferred's chain cannot grow (it had
 * callbacks already) is the lock given back at once.
 */
struct dfr *dfr_lock_run(struct dfr_lock *l, dfr_run_cb fn, void *arg);

/* Whether the lock is held. */
int dfr_lock_locked(const struct dfr_lock *l);

/* Number of waiting acquires. */
size_t dfr_lock_waiting(const struct dfr_lock *l);

/*
 * Close: every waiter fails with DFR_ECLOSED, as does every later acquire
 * or run. The holder may still release. Idempotent.
 */
void dfr_lock_close(struct dfr_lock *l);

/* Copy the lock's statistics into st. */
void dfr_lock_stats(const struct dfr_lock *l, struct dfr_stats *st);

/* Create a semaphore with tokens >= 1; NULL and errno=EINVAL or ENOMEM. */
struct dfr_sem *dfr_sem_new(unsigned int tokens);

/* Free a semaphore, failing its waiters with DFR_ECLOSED (as dfr_lock_free). */
void dfr_sem_free(struct dfr_sem *s);

/* Acquire one token (as dfr_lock_acquire; fires with the sem pointer). */
struct dfr *dfr_sem_acquire(struct dfr_sem *s);

/*
 * Acquire n tokens at once (1 <= n <= limit, else a failed deferred with
 * EINVAL). FIFO: a large request at the head blocks later small ones.
 */
struct dfr *dfr_sem_acquire_many(struct dfr_sem *s, unsigned int n);

/* Release one token; -EPERM if that would exceed the limit. */
int dfr_sem_release(struct dfr_sem *s);

/* Release n tokens; -EPERM (nothing released) if that exceeds the limit. */
int dfr_sem_release_many(struct dfr_sem *s, unsigned int n);

/* Run fn holding one token (as dfr_lock_run). */
struct dfr *dfr_sem_run(struct dfr_sem *s, dfr_run_cb fn, void *arg);

/* Tokens free now, the limit, and waiting acquires. */
unsigned int dfr_sem_tokens(const struct dfr_sem *s);
unsigned int dfr_sem_limit(const struct dfr_sem *s);
size_t dfr_sem_waiting(const struct dfr_sem *s);

/* Close, as dfr_lock_close(). */
void dfr_sem_close(struct dfr_sem *s);

/* Copy the semaphore's statistics into st. */
void dfr_sem_stats(const struct dfr_sem *s, struct dfr_stats *st);

/* ------------------------------------------------------------------------ */
/* Queue                                                                     */

struct dfr_queue;

/* Unbounded size or backlog. */
#define DFR_UNBOUNDED ((size_t)-1)

/*
 * Create a queue holding at most size items and at most backlog waiting
 * gets (DFR_UNBOUNDED for no limit; 0 is allowed for both). NULL/ENOMEM.
 */
struct dfr_queue *dfr_queue_new(size_t size, size_t backlog);

/*
 * Free a queue: waiting gets fail with DFR_ECLOSED, stored items are
 * released with their free callbacks. It may be called from a callback,
 * a get's own included; it then returns before the failed gets' callbacks
 * run (the trampoline rule), so those must not use the queue.
 */
void dfr_queue_free(struct dfr_queue *q);

/*
 * Put an item: to the oldest waiting get (its callbacks run synchronously,
 * see the trampoline rule), else stored if size allows. Returns 0 (the queue
 * or the getter owns item), -DFR_EOVERFLOW if full, -DFR_ECLOSED after close
 * (the caller keeps item on error), or -ENOMEM.
 */
int dfr_queue_put(struct dfr_queue *q, void *item, dfr_free_cb free_cb);

/*
 * Get: a deferred (caller's reference) that fires with the oldest item,
 * which it then owns (a callback keeps it with dfr_take_value() and releases
 * it itself): at once if one is stored, else when put. If the
 * backlog is full it fails at once with DFR_EUNDERFLOW; after close (with
 * nothing stored) with DFR_ECLOSED. Cancelling a waiting get removes it in
 * O(1); an item is never lost to a cancelled get. As with locks, the queue
 * keeps a reference to a waiting get until it fires. NULL and errno=ENOMEM if
 * there is no memory: a stored item stays stored and nothing waits.
 */
struct dfr *dfr_queue_get(struct dfr_queue *q);

/* Items stored, and gets waiting. */
size_t dfr_queue_size(const struct dfr_queue *q);
size_t dfr_queue_waiting(const struct dfr_queue *q);

/*
 * Close: waiting gets fail with DFR_ECLOSED; later puts fail; later gets
 * still drain stored items, then fail with DFR_ECLOSED. Idempotent.
 */
void dfr_queue_close(struct dfr_queue *q);

/* Statistics: waiting gets and their waits, items stored (see dfr_stats). */
void dfr_queue_stats(const struct dfr_queue *q, struct dfr_stats *st);

/* ------------------------------------------------------------------------ */
/* gather (Twisted's gatherResults / DeferredList)                          */

/*
 * The value of a successful gather: n values in the order of the inputs.
 * It and the values belong to the gather's deferred: read them in place, or
 * take the result with dfr_take_value() and release it with
 * dfr_gather_result_free().
 */
struct dfr_gather_result {
	size_t n;
	void **values; /* values[i] is member i's value, owned by the result */
};

/* gather flags */
#define DFR_GATHER_CONSUME_ERRORS 0x1 /* members' failures are handled */

/*
 * Fire when all of ds[0..n-1] have fired. Success: the value is a struct
 * dfr_gather_result (owned by the deferred; members' values are moved into it,
 * with their free callbacks, so a deferred given twice fills only its first
 * place and the second is NULL, where Twisted repeats the value). First
 * failure: the deferred fails at once with that failure's code, its message
 * prefixed by the member's index ("member I: message"), and failure->index set
 * to that index. With DFR_GATHER_CONSUME_ERRORS, members' failures are marked
 * handled (not reported when freed); without it, each failed member (each
 * cancelled one too) is reported as unhandled when the gather drops it, even
 * if the gather's own failure is handled, as with Twisted's
 * consumeErrors=False. Cancelling the gather cancels every unfired member (all
 * of them, whatever their cancellers do, and all before any member's callbacks
 * run, where Twisted runs each member's as it cancels it); the gather then
 * ends as its members do: normally with the first member's DFR_ECANCELED,
 * which a timeout on the gather turns into DFR_ETIMEDOUT as on any deferred
 * (Twisted wraps it in a FirstError that its timeout leaves as it is). Takes
 * over the caller's reference to each member. n == 0 fires at once with an
 * empty result. The gather keeps its members, and its own state, until every
 * member has fired, even after it has failed or been freed: a member that may
 * never fire must be fired or cancelled (cancelling the gather does it for
 * all), as with a lock's waiters. Cancelling a gather that has failed does
 * nothing (it has fired): to stop the other members then, keep references of
 * your own to them and cancel those. If whoever holds the gather's deferred
 * fires it first, the members' later results are released with them and do not
 * fire it again.
 *
 * Out of memory: NULL and errno=ENOMEM, and the members' references are
 * dropped all the same (keep references of your own to fire or cancel them).
 * A member to which the gather cannot add its callback is dropped and counts
 * as failed with ENOMEM ("member I: out of memory", index I). A gather
 * failure that cannot be allocated is the shared one for the member's code
 * (see "Out of memory" above), with index -1.
 */
struct dfr *dfr_gather(struct dfr **ds, size_t n, int flags);

/*
 * Release a gather result taken with dfr_take_value(), and every value in it
 * with its member's free callback. NULL is a no-op.
 */
void dfr_gather_result_free(struct dfr_gather_result *res);

#ifdef __cplusplus
}
#endif
#endif /* DFR_H */
