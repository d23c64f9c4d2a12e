/*
 * lock.c: DeferredLock, a semaphore with one token (sem.c does the work).
 */
#include "config.h"

#include "dfr-int.h"

/* The lock is its semaphore: the same pointer, seen through another type. */
struct dfr_lock {
	struct dfr_sem s;
};

/* Create an unlocked lock. */
struct dfr_lock *
dfr_lock_new(void)
{
	return (struct dfr_lock *)dfr_sem_new(1);
}

/* Free a lock, failing its waiters with DFR_ECLOSED. */
void
dfr_lock_free(struct dfr_lock *l)
{
	dfr_sem_free(&l->s);
}

/* Acquire: fires with the lock once the caller holds it. */
struct dfr *
dfr_lock_acquire(struct dfr_lock *l)
{
	return dfr__sem_acquire_many(&l->s, 1);
}

/* Release: hand over to the oldest waiter, or unlock; -EPERM if not held. */
int
dfr_lock_release(struct dfr_lock *l)
{
	return dfr__sem_release_many(&l->s, 1);
}

/* Run fn holding the lock. */
struct dfr *
dfr_lock_run(struct dfr_lock *l, dfr_run_cb fn, void *arg)
{
	return dfr__sem_run(&l->s, fn, arg);
}

/* Whether the lock is held. */
int
dfr_lock_locked(const struct dfr_lock *l)
{
	return l->s.tokens == 0;
}

/* Waiting acquires. */
size_t
dfr_lock_waiting(const struct dfr_lock *l)
{
	return dfr_sem_waiting(&l->s);
}

/* Fail every waiter, and later acquires, with DFR_ECLOSED. */
void
dfr_lock_close(struct dfr_lock *l)
{
	dfr_sem_close(&l->s);
}

/* Copy the lock's statistics. */
void
dfr_lock_stats(const struct dfr_lock *l, struct dfr_stats *st)
{
	dfr_sem_stats(&l->s, st);
}
