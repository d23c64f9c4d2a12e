#!/usr/bin/python3
"""The anchor for dfr-bench: the same operations with Twisted's defer module, printed as JSON.

Run it with Debian's /usr/bin/python3 and python3-twisted 22.4. Throughput figures are medians of
several timed runs. The contended figure finds the smallest number of queued synchronous waiters at
which DeferredLock stops handing off (RecursionError inside the hand-off chain, twisted#9304). The
cancel figure is quadratic in Twisted (list.remove per cancel), so it is measured at a few thousand
waiters and extrapolated to 100,000 and 1,000,000 by n^2; the output says so.
"""
import argparse
import json
import statistics
import sys
import time
import tracemalloc

import twisted
from twisted.internet import defer


def rate(op, runs, slice_s):
    """Median ops/s of op(batch) over runs of about slice_s seconds each."""
    results = []
    for _ in range(runs):
        n = 0
        t0 = time.perf_counter()
        while True:
            n += op(1000)
            t = time.perf_counter() - t0
            if t >= slice_s:
                break
        results.append(n / t)
    return statistics.median(results)


def fired(_=None):
    return defer.succeed(None)


def op_lock_run(lock):
    def op(batch):
        for _ in range(batch):
            d = lock.run(fired)
            if not d.called:
                raise AssertionError("lock.run did not fire")
        return batch
    return op


def op_sem_run(sem):
    def op(batch):
        for _ in range(batch):
            sem.run(fired)
        return batch
    return op


def op_queue_put_get(q):
    def op(batch):
        for i in range(batch):
            q.put(i)
            q.get()
        return batch
    return op


def op_queue_put_get_cb(q):
    got = []

    def consume(item):
        got.append(item)

    def op(batch):
        del got[:]
        for i in range(batch):
            q.put(i)
            q.get().addCallback(consume)
        if len(got) != batch:
            raise AssertionError("items lost")
        return batch
    return op


def op_queue_get_put(q):
    def op(batch):
        for i in range(batch):
            q.get()
            q.put(i)
        return batch
    return op


def contended(n):
    """Queue n synchronous lock.run waiters behind a held lock, release, count how many ran."""
    lock = defer.DeferredLock()
    done = []
    errors = []

    def work(i):
        done.append(i)
        return i

    lock.acquire()
    ds = []
    for i in range(n):
        d = lock.run(work, i)
        d.addErrback(lambda f: errors.append(f.type.__name__))
        ds.append(d)
    t0 = time.perf_counter()
    try:
        lock.release()
    except RecursionError:
        errors.append("RecursionError")
    t = time.perf_counter() - t0
    return len(done), lock.locked, errors, t


def first_failing(limit=4000):
    """Smallest n for which not all n contended waiters complete (None if all up to limit do)."""
    lo, hi = 1, None
    n = 16
    while n <= limit:
        ok = contended(n)[0] == n
        if not ok:
            hi = n
            break
        lo = n
        n *= 2
    if hi is None:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if contended(mid)[0] == mid:
            lo = mid
        else:
            hi = mid
    return hi


def cancel_last_to_first(n):
    lock = defer.DeferredLock()
    lock.acquire()
    ds = [lock.acquire() for _ in range(n)]
    for d in ds:
        d.addErrback(lambda f: f.trap(defer.CancelledError))
    t0 = time.perf_counter()
    for d in reversed(ds):
        d.cancel()
    t = time.perf_counter() - t0
    if lock.waiting:
        raise AssertionError("waiters left after cancel")
    return t


def bytes_per_waiter(n):
    lock = defer.DeferredLock()
    lock.acquire()
    ds = [None] * n
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        ds[i] = lock.acquire()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slice", type=float, default=0.3, help="seconds per throughput run")
    ap.add_argument("--cancel", type=int, default=10000, help="waiters cancelled (then extrapolated)")
    ap.add_argument("--mem", type=int, default=100000)
    ap.add_argument("--contended", type=int, default=10000, help="a large contended run to show what happens")
    a = ap.parse_args()

    out = {"twisted": twisted.__version__, "python": sys.version.split()[0],
           "recursionlimit": sys.getrecursionlimit()}
    out["lock_run_per_s"] = round(rate(op_lock_run(defer.DeferredLock()), a.runs, a.slice))
    out["sem10_run_per_s"] = round(rate(op_sem_run(defer.DeferredSemaphore(10)), a.runs, a.slice))
    out["queue_put_get_per_s"] = round(rate(op_queue_put_get(defer.DeferredQueue()), a.runs, a.slice))
    out["queue_get_put_per_s"] = round(rate(op_queue_get_put(defer.DeferredQueue()), a.runs, a.slice))
    out["queue_put_get_cb_per_s"] = round(rate(op_queue_put_get_cb(defer.DeferredQueue()), a.runs, a.slice))

    out["contended_fails_at"] = first_failing()
    done, locked, errors, t = contended(a.contended)
    out["contended_waiters"] = a.contended
    out["contended_completed"] = done
    out["contended_locked_after"] = locked
    out["contended_errors"] = sorted(set(errors))

    half = max(1, a.cancel // 2)
    t_half = statistics.median(cancel_last_to_first(half) for _ in range(3))
    t_full = statistics.median(cancel_last_to_first(a.cancel) for _ in range(3))
    out["cancel_measured"] = {str(half): round(t_half, 4), str(a.cancel): round(t_full, 4)}
    out["cancel_exponent"] = round(__import__("math").log(t_full / t_half, a.cancel / half), 2) if t_half > 0 else None
    out["cancel_100k_s_extrapolated"] = round(t_full * (100000 / a.cancel) ** 2, 1)
    out["cancel_1m_s_extrapolated"] = round(t_full * (1000000 / a.cancel) ** 2, 0)
    out["bytes_per_waiter"] = round(bytes_per_waiter(a.mem), 1)
    out["mem_waiters"] = a.mem
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
