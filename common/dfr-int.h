/*
 * dfr-int.h: libdfr internals shared by its modules (not installed).
 */
#ifndef DFR_INT_H
#define DFR_INT_H

#include <sys/queue.h>

#include <stdint.h>
#include <time.h>

#include "dfr.h"

/* One (callback, errback) pair of a chain. */
struct dfr_cbent {
	dfr_cb cb;
	dfr_cb eb;
	void *arg;
};

/* Deferred flags. */
#define DFR_F_FIRED 0x0001     /* has a result */
#define DFR_F_FAILED 0x0002    /* the result is a failure */
#define DFR_F_CANCELLED 0x0004 /* dfr_cancel() was called while unfired */
#define DFR_F_SWALLOW 0x0008   /* failed by cancel: eat one late fire */
#define DFR_F_CANCELLER_CALLED 0x0010 /* the canceller ran (at most once) */
#define DFR_F_QUEUED 0x0020	      /* on this thread's run queue */
#define DFR_F_WAITER 0x0040  /* in a waiter list (which holds a reference) */
#define DFR_F_CANCELQ 0x0080 /* cancelled while its chain was queued */
#define DFR_F_SOFTFWD 0x0100 /* forward cancel to inner's canceller only */
#define DFR_F_TIMEOUT 0x0200 /* a timeout is armed */
#define DFR_F_HANDLED 0x0400 /* the failure is not reported at free */
#define DFR_F_NOFIAT 0x0800  /* canceller promised to fire d later */
#define DFR_F_CANCELQSOFT 0x1000 /* that cancel came through a SOFTFWD */
#define DFR_F_CANCELPATH 0x2000 /* on the way down to a CANCELQ: pass it back up */
#define DFR_F_RESUMEMARK 0x4000 /* chain holds outer's resume point */
#define DFR_F_LATER 0x8000	/* stopped there: on the later stack */

/*
 * A deferred. 112 bytes on LP64, so that a waiting acquire costs one
 * 120-byte malloc chunk including its first callback pair.
 */
struct dfr {
	/* Run queue link, or a waiter list's link: a waiter is never queued. */
	TAILQ_ENTRY(dfr) link;
	uint32_t refs;
	uint16_t flags;
	uint8_t caplog; /* capacity of cbs is 1 << caplog when not cb0 */
	uint8_t unused;
	union {
		struct {
			void *value;
			dfr_free_cb free_cb;
		} v;			     /* fired with a value */
		struct dfr_failure *failure; /* fired with a failure */
		struct {
			uint64_t since_ns; /* when the wait began */
			unsigned int n;	   /* tokens wanted */
		} w; /* unfired waiter (lock, sem, queue) */
	} r;
	dfr_canceller_cb canceller;
	void *carg;
	struct dfr_cbent *cbs; /* &cb0 or a heap array */
	uint32_t ncbs;	       /* pairs in cbs */
	uint32_t pos;	       /* next pair to run */
	struct dfr *inner;     /* paused: waiting for this one */
	struct dfr *outer;     /* this one waits for us */
	struct dfr_cbent cb0;  /* storage for the first pair */
};

TAILQ_HEAD(dfr_list, dfr);

#if defined(__SANITIZE_ADDRESS__)
#define DFR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DFR_ASAN 1
#endif
#endif
#ifdef DFR_ASAN
#include <sanitizer/asan_interface.h>
#endif

/*
 * Per-thread state is reached through the initial-exec TLS model: the
 * default for a shared library (general dynamic) costs a __tls_get_addr
 * call on every access, which showed in every get, put and run.
 */
#define DFR_TLS __thread __attribute__((tls_model("initial-exec")))

/* This thread's cache of freed deferreds (deferred.c). */
struct dfr_cache {
	struct dfr *head;
	unsigned int room; /* free slots; 0 until the thread's key is set */
	int state;	   /* 0: no key set yet, 1: key set, -1: do not cache */
};
extern DFR_TLS struct dfr_cache dfr__cache
    __attribute__((visibility("hidden")));
struct dfr *dfr__alloc_heap(void);

/* Memory for a deferred: a cached one, else malloc (errno set on failure). */
static inline struct dfr *
dfr__alloc(void)
{
	struct dfr *d = dfr__cache.head;

	if (d == NULL)
		return dfr__alloc_heap();
#ifdef DFR_ASAN
	ASAN_UNPOISON_MEMORY_REGION(d, sizeof *d);
#endif
	dfr__cache.head = d->link.tqe_next;
	dfr__cache.room++;
	return d;
}

/* Fill a fresh deferred. */
static inline void
dfr__init(struct dfr *d, uint16_t flags, dfr_canceller_cb canceller, void *arg)
{
	d->refs = 1;
	d->flags = flags;
	d->caplog = 0;
	d->unused = 0;
	d->canceller = canceller;
	d->carg = arg;
	d->cbs = &d->cb0;
	d->ncbs = 0;
	d->pos = 0;
	d->inner = NULL;
	d->outer = NULL;
}

/*
 * A deferred already fired with a value: made fired, with no chain, so
 * nothing goes through the fire path.
 */
static inline struct dfr *
dfr__fired(void *value, dfr_free_cb free_cb)
{
	struct dfr *d = dfr__alloc();

	if (d == NULL)
		return NULL;
	dfr__init(d, DFR_F_FIRED, NULL, NULL);
	d->r.v.value = value;
	d->r.v.free_cb = free_cb;
	return d;
}

/* A semaphore; a lock is one with a single token (lock.c). */
struct dfr_sem {
	struct dfr_list waiters;
	unsigned int limit;
	unsigned int tokens; /* free now */
	unsigned int runs;   /* run() states alive (they point here) */
	int closed;
	int freed;		/* dfr_sem_free() called while runs > 0 */
	uint64_t tick_ns;	/* last change of held tokens (hold integral) */
	uint64_t hold_since_ns; /* when the last token was taken (lock) */
	struct dfr_stats st;
};

/* deferred.c: library-internal entry points (direct calls, no PLT). */
struct dfr *dfr__new(dfr_canceller_cb canceller, void *arg);
struct dfr *dfr__succeed(void *value, dfr_free_cb free_cb);
void dfr__unref(struct dfr *d);

/* Take a reference (dfr_ref without a call). */
static inline struct dfr *
dfr__ref(struct dfr *d)
{
	d->refs++;
	return d;
}

uint64_t dfr__now_ns(void);
void dfr__batch_begin(void);
void dfr__batch_end(void);
void dfr__fire_value(struct dfr *d, void *value, dfr_free_cb free_cb);
void dfr__fire_failure(struct dfr *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dfr__soft_cancel(struct dfr *d);
void dfr__cancelq_clear(struct dfr *d);
void *dfr__take_value(struct dfr *d, dfr_free_cb *free_cb);
void dfr__set_handled(struct dfr *d);
void dfr__cancel_later(struct dfr *d);
struct dfr_failure *dfr__failure_static(int code);

/* sem.c: what lock.c calls (direct calls, no PLT). */
struct dfr *dfr__sem_acquire_many(struct dfr_sem *s, unsigned int n);
int dfr__sem_release_many(struct dfr_sem *s, unsigned int n);
struct dfr *dfr__sem_run(struct dfr_sem *s, dfr_run_cb fn, void *arg);

/* evtimer.c */
void dfr__timeout_done(struct dfr *d, void *arg);
void dfr__timeout_discard(void *arg);

#endif /* DFR_INT_H */
