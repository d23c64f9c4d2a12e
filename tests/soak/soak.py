#!/usr/bin/env python3
"""Soak: sustained load with a periodic fault, watching RSS and open fds of both daemons (issue 6, part 4).

record-countd + a locked and a stateless counterd, callers on several counters for SOAK_SECONDS (default 180). Every
SOAK_FAULT_EVERY seconds (default 15) a fault: record-countd is stalled with SIGSTOP for five record timeouts
(longer than counterd's three attempts, so calls fail meanwhile) (both
daemons keep their process, so their figures stay comparable); once, at a third of the run, record-countd is SIGKILLed and
restarted. Every second it samples VmRSS (/proc/PID/status) and the number of open fds (/proc/PID/fd).

"Flat" means, comparing the idle baseline taken after the warm-up (load paused, every call finished) with the same idle
measure at the end:
  open fds:  end <= baseline + 4 for each daemon;
  RSS:       end <= baseline * 1.25 + 4 MiB for counterd, and for record-countd since its last restart
             (ASan and TSan builds keep freed memory in quarantine or history: there the RSS bound is reported, not enforced).
Then the invariants of the fault tests are checked on every counter. Prints TAP (one line per check) and the figures.
  SOAK_SECONDS=60 tests/soak/soak.py      (environment as make check gives it: RECORD_COUNTD, COUNTERD, ...)
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "interop"))
import harness  # noqa: E402
import provelib as pl  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
FAULT_EVERY = float(os.environ.get("SOAK_FAULT_EVERY", "15"))
RECORD_TIMEOUT_MS = 300
COUNTERS = ["s1", "s2", "s3", "s4"]
CD_ARGS = ["--record-timeout", "%dms" % RECORD_TIMEOUT_MS, "--retries", "2", "--wait-timeout", "3s"]


def asan_build(path):
    try:
        out = subprocess.run(["nm", "-D", path], capture_output=True, text=True).stdout
        return "__asan" in out or "__tsan" in out
    except OSError:
        return False


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        self.n += 1
        if not ok:
            self.failed += 1
        print("%s %d - %s" % ("ok" if ok else "not ok", self.n, what), flush=True)
        if detail:
            for line in str(detail).splitlines():
                print("# " + line, flush=True)


def idle_figures(load, daemons):
    """Pause the load, wait until every call is answered and fd counts settle; {name: (rss_kb, fds)}."""
    load.pause(True)
    time.sleep(0.5)
    prev = None
    for _ in range(50):
        cur = {k: pl.proc_fds(d.proc.pid) for k, d in daemons.items()}
        if cur == prev:
            break
        prev = cur
        time.sleep(0.2)
    figs = {k: (pl.proc_rss_kb(d.proc.pid), pl.proc_fds(d.proc.pid)) for k, d in daemons.items()}
    load.pause(False)
    return figs


def main():
    tap = Tap()
    wd = tempfile.mkdtemp(prefix="lockstep-soak.")
    rc = harness.RecordCountd(wd, ["--latency", "10ms"])
    cds = {}
    load = None
    asan = asan_build(harness.RECORD_COUNTD)
    print("# soak %.0fs, fault every %.0fs, workdir %s%s" % (SECONDS, FAULT_EVERY, wd, ", ASan or TSan build" if asan else ""))
    try:
        rc.start()
        cds["locked"] = harness.Counterd(wd, rc.url, ["--strategy", "locked"] + CD_ARGS, client_id="soakl").start()
        cds["stateless"] = harness.Counterd(wd, rc.url, ["--strategy", "stateless"] + CD_ARGS,
                                            client_id="soaks").start()
        load = pl.Load({k: d.socket for k, d in cds.items()}, COUNTERS, concurrency=16, pace=0.02, timeout=20).start()
        t_start = time.monotonic()
        warm = min(15.0, SECONDS * 0.1)
        time.sleep(warm)
        daemons = {"record-countd": rc, "counterd locked": cds["locked"], "counterd stateless": cds["stateless"]}
        base = idle_figures(load, daemons)
        rc_base_after_restart = None
        killed = False
        samples = []
        next_fault = time.monotonic() + FAULT_EVERY
        faults = 0
        while time.monotonic() - t_start < SECONDS:
            time.sleep(1.0)
            samples.append({k: (pl.proc_rss_kb(d.proc.pid), pl.proc_fds(d.proc.pid)) for k, d in daemons.items()
                            if d.proc.poll() is None})
            if not killed and time.monotonic() - t_start > SECONDS / 3:
                rc.kill()
                rc.start()
                killed = True
                faults += 1
                time.sleep(2.0)
                rc_base_after_restart = idle_figures(load, {"record-countd": rc})["record-countd"]
            elif time.monotonic() >= next_fault:
                rc.signal(signal.SIGSTOP)
                time.sleep(5 * RECORD_TIMEOUT_MS / 1000.0)
                rc.signal(signal.SIGCONT)
                faults += 1
                next_fault = time.monotonic() + FAULT_EVERY
        end = idle_figures(load, daemons)
        load.stop()

        print("# figures (RSS KiB, open fds) idle after warm-up -> idle at end:")
        for k in daemons:
            b = rc_base_after_restart if (k == "record-countd" and rc_base_after_restart) else base[k]
            print("#   %-20s rss %7d -> %7d KiB   fds %4d -> %4d   peak rss %d KiB" % (
                k, b[0], end[k][0], b[1], end[k][1], max([s[k][0] for s in samples if k in s] or [0])))
        outcomes = load.outcomes
        ok_calls = sum(1 for o in outcomes if o.status == 200)
        print("# %d calls, %d succeeded, %d failed, %d faults, %.0f calls/s" % (len(outcomes), ok_calls,
                                                                                len(outcomes) - ok_calls, faults,
                                                                     len(outcomes) / max(1.0, SECONDS)))
        for k, d in daemons.items():
            tap.check(d.proc.poll() is None, "%s alive at the end" % k, d.read_log()[-2000:] if d.proc.poll()
                      is not None else "")
            rep = pl.sanitizer_report(d.read_log())
            tap.check(rep is None, "%s: no sanitizer report" % k, rep or "")
        for k in daemons:
            b = rc_base_after_restart if (k == "record-countd" and rc_base_after_restart) else base[k]
            tap.check(end[k][1] <= b[1] + 4, "%s open fds flat (%d -> %d, bound +4)" % (k, b[1], end[k][1]))
            bound = b[0] * 1.25 + 4096
            if asan:
                print("# %s RSS %d -> %d KiB (bound %.0f not enforced under ASan or TSan)" % (k, b[0], end[k][0], bound))
            else:
                tap.check(end[k][0] <= bound, "%s RSS flat (%d -> %d KiB, bound %.0f)" % (k, b[0], end[k][0], bound))
        tap.check(ok_calls >= 1000, "sustained load: %d successful calls" % ok_calls)
        probs = pl.check_error_bodies(outcomes)
        tap.check(not probs, "every failed call got a JSON 503/504", "\n".join(probs[:20]))
        received = load.received()
        for strategy, cid in (("locked", "soakl"), ("stateless", "soaks")):
            for c in COUNTERS:
                recs = pl.fetch_records(("127.0.0.1", rc.port), "%s:%s" % (cid, c))
                got = received.get((strategy, c), [])
                check = pl.check_locked if strategy == "locked" else pl.check_stateless
                p = check(recs, got, "%s/%s" % (strategy, c))
                tap.check(not p, "%s counter %s: invariants hold (%d handed out, %d recorded)" % (
                    strategy, c, len(got), len(recs)), "\n".join(p))
        # A graceful stop after the soak: exit 0 and no sanitizer or leak report on the way out.
        for k, d in daemons.items():
            code = d.stop()
            rep = pl.sanitizer_report(d.read_log())
            tap.check(code == 0 and rep is None, "%s stops with exit 0 and no sanitizer report (exit %s)" % (k, code),
                      rep or "")
    except Exception as e:  # a setup failure is one failing TAP line, with the reason
        tap.check(False, "soak ran", "%s: %s" % (type(e).__name__, e))
    finally:
        if load and load._thread and load._thread.is_alive():
            load._stop.set()
            load._thread.join(30)
        for d in list(cds.values()) + [rc]:
            try:
                d.stop()
            except Exception:
                pass
    print("1..%d" % tap.n)
    if tap.failed:
        print("# logs kept in %s" % wd)
    else:
        shutil.rmtree(wd, ignore_errors=True)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
