"""The default time limits, each waited out once with a real record-countd and counterd: record-countd's
--connection-timeout (60 s), counterd's --record-timeout (5 s) with --retries (3) and --backoff (50 ms),
--wait-timeout (30 s) and --shutdown-grace (30 s), and counterctl's --timeout (120 s).

Waiting them out one after another would take five minutes, so every scenario starts in its own thread when the
module starts and each test joins its own: the module takes about as long as the longest default, counterctl's.
The slow record-countd (--latency 50s, longer than every default but the connection timeout) holds the records."""
import http.client
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness
from test_client_helpers import counterctl, poll

LATENCY = 50.0  # record-countd's --latency here: every record outlasts counterd's defaults
SLACK = 6.0     # how late a limit may fire on a loaded machine or in the sanitizer build


def is_open(s):
    """True while the peer has not closed s (nothing to read yet)."""
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False


def idle_connection(rc):
    """record-countd closes a keep-alive connection idle for 60 s, and not before."""
    conn = http.client.HTTPConnection("127.0.0.1", rc.port, timeout=10)
    conn.request("GET", "/healthz")
    r = conn.getresponse()
    assert r.status == 200 and not r.will_close, (r.status, r.getheaders())
    r.read()
    t0 = time.monotonic()
    s = conn.sock
    s.setblocking(False)
    try:
        while is_open(s) and time.monotonic() - t0 < 60 + SLACK:
            time.sleep(0.2)
        took = time.monotonic() - t0
        assert not is_open(s), "still open %.1f s after its answer (default --connection-timeout 60s)" % took
        assert took >= 59.5, "closed after %.1f s idle, before the 60 s default" % took
        return took
    finally:
        s.close()


def retries_then_504(rc, cd):
    """A record that record-countd does not answer: 4 attempts (1 + 3 retries), each cut at 5 s, then 504."""
    t0 = time.monotonic()
    r = cd.next("r", timeout=60)
    took = time.monotonic() - t0
    assert r.status == 504 and r.json()["error"] == "record_timeout", r
    stats = rc.get("/stats").json()
    assert stats["clients"]["retry:r"]["recorded"] == 1 and stats["duplicates"] == 3, \
        "record-countd saw %d retries, not 3: %r" % (stats["duplicates"], stats)
    # 4 x 5 s, plus backoffs in the upper half of 50, 100 and 200 ms.
    assert 20.175 <= took <= 20.35 + SLACK, "504 after %.2f s" % took
    return took


def wait_timeout(cd):
    """A call waiting for its turn behind a record in flight fails with 503 wait_timeout after 30 s."""
    first = threading.Thread(target=lambda: cd.next("w", timeout=LATENCY + 30), daemon=True)
    first.start()
    poll(lambda: cd.get("/counters/w").status == 200 and cd.get("/counters/w").json()["in_flight"] == 1,
         timeout=15)
    t0 = time.monotonic()
    r = cd.next("w", timeout=60)
    took = time.monotonic() - t0
    assert r.status == 503 and r.json()["error"] == "wait_timeout", r
    assert 29.9 <= took <= 30 + SLACK, "wait_timeout after %.2f s" % took
    return took


def shutdown_grace(cd):
    """SIGTERM with a record in flight: counterd waits 30 s for it, then answers 503 and exits 1."""
    box = {}

    def call():
        try:
            box["r"] = cd.next("g", timeout=LATENCY + 30)
        except (OSError, http.client.HTTPException) as e:
            box["r"] = e

    t = threading.Thread(target=call, daemon=True)
    t.start()
    poll(lambda: cd.get("/counters/g").status == 200 and cd.get("/counters/g").json()["in_flight"] == 1,
         timeout=15)
    t0 = time.monotonic()
    cd.signal(signal.SIGTERM)
    rc = cd.proc.wait(30 + SLACK + 5)
    took = time.monotonic() - t0
    assert rc == 1, cd.read_log()
    assert 29.9 <= took <= 30 + SLACK, "exited %.2f s after SIGTERM" % took
    t.join(10)
    r = box.get("r")
    assert isinstance(r, harness.Response) and r.status == 503 and r.json()["error"] == "shutting_down", r
    return took


def ctl_timeout(workdir):
    """counterctl against a counterd that accepts and never answers gives up after 120 s with exit 3."""
    path = os.path.join(workdir, "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(path)
        silent.listen(4)
        t0 = time.monotonic()
        p = subprocess.run([counterctl(), "--socket", path, "next", "c"], capture_output=True, text=True,
                           timeout=120 + SLACK + 30)
        took = time.monotonic() - t0
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert "120000 ms (--timeout)" in p.stderr, p.stderr
    assert 119.9 <= took <= 120 + SLACK, "gave up after %.2f s" % took
    return took


class Scenarios:
    """Each scenario in its own thread, started at once; result(name) joins one and re-raises its failure."""

    def __init__(self):
        self.threads, self.results = {}, {}

    def start(self, name, fn, *args):
        def run():
            try:
                self.results[name] = ("ok", fn(*args))
            except BaseException as e:  # noqa: B902 -- handed to the test that joins this scenario
                self.results[name] = ("failed", e)
        t = threading.Thread(target=run, name=name, daemon=True)
        self.threads[name] = t
        t.start()

    def result(self, name):
        self.threads[name].join(200)
        assert name in self.results, "scenario %s did not finish in 200 s" % name
        kind, v = self.results[name]
        if kind == "failed":
            raise v
        return v


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("defaults"))
    rc = harness.RecordCountd(workdir, ["--latency", "%ds" % LATENCY]).start()
    cds = [harness.Counterd(workdir, rc.url, ["--record-timeout", "%ds" % (LATENCY + 20)], client_id=cid).start()
           for cid in ("wait", "grace")]
    retry = harness.Counterd(workdir, rc.url, [], client_id="retry").start()
    sc = Scenarios()
    sc.start("connection", idle_connection, rc)
    sc.start("retries", retries_then_504, rc, retry)
    sc.start("wait", wait_timeout, cds[0])
    sc.start("grace", shutdown_grace, cds[1])
    sc.start("ctl", ctl_timeout, workdir)
    yield sc
    for d in cds + [retry]:
        d.stop()
    rc.kill()  # its held records would take the latency to answer
    rc.stop()


def test_record_countd_closes_idle_connections_after_60s_by_default(scenarios):
    scenarios.result("connection")


def test_counterd_retries_3_times_with_5s_record_timeout_by_default(scenarios):
    scenarios.result("retries")


def test_counterd_wait_timeout_is_30s_by_default(scenarios):
    scenarios.result("wait")


def test_counterd_shutdown_grace_is_30s_by_default(scenarios):
    scenarios.result("grace")


def test_counterctl_gives_up_after_120s_by_default(scenarios):
    scenarios.result("ctl")
