"""counterd under faults: server down at start, record-countd killed mid-run, counterd restarts, SIGTERM."""
import http.client
import http.server
import json
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness
from test_client_helpers import dead_url, many_next, poll, server_client_stats, server_records


def test_server_down_at_start_then_up(record_countd, counterd):
    url = dead_url()
    cd = counterd(url, "--retries", "1", "--backoff", "10ms")
    h = poll(lambda: (lambda r: r if r.json()["server_state"] == "unreachable" else None)(cd.get("/healthz")))
    assert h.status == 503 and h.json()["status"] == "degraded"
    t0 = time.monotonic()
    r = cd.next("s")
    assert r.status == 503 and r.json()["error"] == "server_unreachable", r
    assert "record-countd" in r.json()["message"]
    assert time.monotonic() - t0 < 2
    rc = record_countd("--latency", "0", port=int(url.rsplit(":", 1)[1]))
    poll(lambda: cd.get("/healthz").status == 200, timeout=15)
    assert cd.next("s").json()["count"] == 1, "the failed call consumed no number"
    assert server_records(rc, "test:s") == [1]


def test_health_is_not_ok_before_record_countd_answered(counterd):
    """Until record-countd has answered once, counterd cannot know it is reachable: /healthz is 503 degraded with
    server_state unknown (a record-countd that accepts connections but never answers), not ok."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        cd = counterd("http://127.0.0.1:%d" % silent.getsockname()[1], "--record-timeout", "30s")
        h = cd.get("/healthz")
        assert h.status == 503, h
        assert h.json()["status"] == "degraded" and h.json()["server_state"] == "unknown", h.json()


def test_record_countd_kill9_and_restart_mid_run(record_countd, counterd):
    rc = record_countd("--latency", "10ms")
    cd = counterd(rc.url, "--batch-max", "8", "--retries", "2", "--backoff", "20ms", "--record-timeout", "500ms")
    got, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            got.extend(many_next(cd.socket, "k", 10))

    t = threading.Thread(target=load)
    t.start()
    try:
        poll(lambda: len(got) >= 50)
        rc.kill()
        time.sleep(0.3)  # the outage (fault injection, not a readiness wait)
        rc.start()
        n = len(got)
        poll(lambda: len(got) >= n + 50 and any(s == 200 for s, _ in got[n:]))
    finally:
        stop.set()
        t.join(30)
    ok = [j["count"] for s, j in got if s == 200]
    failed = [j for s, j in got if s != 200]
    assert len(ok) == len(set(ok)), "no number handed out twice"
    assert all(j["error"] in ("server_unreachable", "record_timeout") for j in failed), failed[:3]
    recs = server_records(rc, "test:k")
    assert recs == list(range(1, len(recs) + 1)), "records are exactly 1..M, no gap, no duplicate, in order"
    assert set(ok) <= set(recs), "every number handed out was recorded"
    st = server_client_stats(rc, "test:k")
    assert st["max_in_flight"] == 1 and st["out_of_order"] == 0


def test_counterd_restart_resumes(record_countd, counterd):
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    assert [cd.next("r").json()["count"] for _ in range(3)] == [1, 2, 3]
    cd.restart()
    assert cd.next("r").json()["count"] == 4
    cd.kill()  # a crash leaves the socket file behind
    assert os.path.exists(cd.socket)
    cd.start()
    assert cd.next("r").json()["count"] == 5
    assert server_records(rc, "test:r") == [1, 2, 3, 4, 5]


def test_counter_not_resumed_is_not_shown_as_0(record_countd, counterd):
    # After a restart, a counter whose last value record-countd has not told yet has no known count: get and list
    # must not show it (they showed 0 while the true count was 5).
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url, "--retries", "0")
    assert [cd.next("r").json()["count"] for _ in range(5)] == [1, 2, 3, 4, 5]
    cd.stop()
    rc.stop()
    cd.start()
    assert cd.next("r").status == 503
    r = cd.get("/counters/r")
    assert r.status == 404 and r.json()["error"] == "not_found" and "not known" in r.json()["message"], r
    assert cd.get("/counters").json() == {"counters": []}
    p = cd.ctl("get", "r")
    assert p.returncode == 1 and p.stdout == "" and "404 not_found" in p.stderr, p
    assert cd.ctl("list").stdout == ""
    rc.start()
    poll(lambda: cd.get("/healthz").status == 200, timeout=15)
    assert cd.next("r").json()["count"] == 6
    assert cd.ctl("get", "r").stdout == "6\n" and cd.ctl("list").stdout == "r 6\n"


def test_stateless_restart_resumes(record_countd, counterd):
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url, "--strategy", "stateless")
    assert sorted(j["count"] for _, j in many_next(cd.socket, "x", 5)) == [1, 2, 3, 4, 5]
    cd.restart()
    assert cd.next("x").json()["count"] == 6


def test_refuses_a_live_socket(record_countd, counterd, tmp_path):
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    p = subprocess.run([harness.COUNTERD, "--server", rc.url, "--socket", cd.socket, "--client-id", "x"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 1
    assert "another counterd is already listening" in p.stderr
    assert cd.get("/healthz").status == 200, "the live daemon keeps its socket"


def many_in_background(cd, name, n):
    """n concurrent next calls in a thread; returns (thread, box): box["r"] is many_next's result once it ends."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", many_next(cd.socket, name, n)))
    t.start()
    return t, box


def test_sigterm_finishes_in_flight_and_answers_waiters(record_countd, counterd):
    rc = record_countd("--latency", "800ms")
    cd = counterd(rc.url, "--batch-max", "1")
    t, box = many_in_background(cd, "t", 4)
    poll(lambda: cd.get("/counters/t").status == 200 and cd.get("/counters/t").json()["waiting"] == 3)
    cd.signal(signal.SIGTERM)
    assert cd.proc.wait(10) == 0
    t.join(10)
    got = box["r"]
    ok = [j["count"] for s, j in got if s == 200]
    assert ok == [1], got
    assert sorted(j["error"] for s, j in got if s != 200) == ["shutting_down"] * 3
    assert server_records(rc, "test:t") == [1]
    assert not os.path.exists(cd.socket), "the socket file is removed on exit"
    assert "stopping" in cd.read_log()


def test_server_closing_idle_keepalive_connections_is_harmless(record_countd, counterd):
    rc = record_countd("--latency", "0", "--connection-timeout", "1s")
    cd = counterd(rc.url, "--retries", "0")
    got = []
    for delay in (0.99, 1.0, 1.01, 1.02, 1.05, 1.0, 1.0, 1.01):
        time.sleep(delay)  # let record-countd close the idle connection around now (fault injection)
        got.append(cd.next("idle"))
    assert [r.status for r in got] == [200] * 8, [r for r in got if r.status != 200]
    assert [r.json()["count"] for r in got] == list(range(1, 9))
    st = cd.get("/stats").json()["recorder"]
    assert st["failed"] == 0 and st["retries"] == 0, st


def next_in_background(cd, name):
    """One next call in a thread; returns (thread, box): box["r"] is the Response or the connection error."""
    box = {}

    def call():
        try:
            box["r"] = cd.next(name)
        except (OSError, http.client.HTTPException) as e:
            box["r"] = e

    t = threading.Thread(target=call, daemon=True)
    t.start()
    return t, box


def test_socket_path_that_is_not_a_socket_is_left_alone(tmp_path):
    url = dead_url()
    for kind in ("file", "dir"):
        path = tmp_path / ("taken-" + kind)
        if kind == "file":
            path.write_text("important\n")
        else:
            path.mkdir()
        p = subprocess.run([harness.COUNTERD, "--server", url, "--socket", str(path), "--client-id", "v"],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 1, (kind, p.stderr)
        assert "exists and is not a socket" in p.stderr, p.stderr
        assert "removing" not in p.stderr
        if kind == "file":
            assert path.read_text() == "important\n", "the file is not removed"
        else:
            assert path.is_dir()


def test_exit_leaves_a_file_that_replaced_the_socket(record_countd, counterd):
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    os.unlink(cd.socket)
    with open(cd.socket, "w") as f:
        f.write("not ours\n")
    assert cd.stop() == 0
    with open(cd.socket) as f:
        assert f.read() == "not ours\n", "counterd removes only the socket it made"


def test_sighup_is_logged_and_ignored(record_countd, counterd):
    rc = record_countd("--latency", "500ms")
    cd = counterd(rc.url, "--batch-max", "1")
    t, box = many_in_background(cd, "h", 2)
    poll(lambda: cd.get("/counters/h").status == 200 and cd.get("/counters/h").json()["in_flight"] == 1)
    cd.signal(signal.SIGHUP)
    poll(lambda: "SIGHUP" in cd.read_log())
    t.join(30)
    assert sorted(j["count"] for s, j in box["r"] if s == 200) == [1, 2], "calls in flight are answered"
    assert cd.proc.poll() is None, "counterd keeps running"
    assert cd.next("h").json()["count"] == 3
    assert os.path.exists(cd.socket)
    assert "SIGHUP: nothing to reload" in cd.read_log()
    assert cd.stop() == 0


def test_unreachable_reason_is_the_current_one(record_countd, counterd):
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url, "--record-timeout", "500ms", "--retries", "1", "--backoff", "10ms")
    assert cd.next("u").json()["count"] == 1
    poll(lambda: "record-countd is reachable" in cd.read_log())
    rc.stop()
    r = cd.next("u")
    assert r.status == 503 and "refused" in r.json()["message"], r
    poll(lambda: "refused" in cd.read_log())
    rc.start()
    poll(lambda: cd.get("/healthz").status == 200, timeout=15)
    poll(lambda: cd.read_log().count("record-countd is reachable") >= 2)
    mark = len(cd.read_log())
    rc.signal(signal.SIGSTOP)  # record-countd hangs: requests time out (fault injection)
    try:
        r = cd.next("u")
        assert r.status == 504 and r.json()["error"] == "record_timeout", r
        lines = [l for l in cd.read_log()[mark:].splitlines() if "is unreachable" in l]
        assert lines, cd.read_log()[mark:]
        assert all("timed out" in l for l in lines), lines
        h = cd.get("/healthz").json()
        assert h["server_state"] == "unreachable" and "timed out" in h["last_error"], h
    finally:
        rc.signal(signal.SIGCONT)


def test_server_whose_storage_failed_makes_counterd_degraded(record_countd, counterd, tmp_path):
    """record-countd answering 5xx (here its disk failed a sync: it answers but records nothing) is as unusable as
    one that is down: counterd's health says degraded, naming the answer, rather than ok."""
    lib = os.environ.get("FAILSYNC_LIB", "")
    assert os.path.exists(lib), "the fault shim is not built (FAILSYNC_LIB=%r)" % lib
    flag = tmp_path / "disk-fails-now"
    asan = (os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    rc = record_countd("--latency", "0", env={"LD_PRELOAD": lib, "FAILSYNC_FILE": str(flag), "ASAN_OPTIONS": asan})
    cd = counterd(rc.url, "--retries", "1", "--backoff", "10ms")
    assert cd.next("d").json()["count"] == 1
    flag.touch()
    r = cd.next("d")
    assert r.status == 503 and r.json()["error"] == "server_unreachable", r
    h = poll(lambda: (lambda r: r if r.status == 503 else None)(cd.get("/healthz")))
    assert h.json()["status"] == "degraded" and h.json()["server_state"] == "unreachable", h.json()
    assert "answered 503" in h.json()["last_error"] and "storage_" in h.json()["last_error"], h.json()


def test_first_failure_has_a_reason(record_countd, counterd):
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url, "--record-timeout", "500ms", "--retries", "1", "--backoff", "10ms")
    poll(lambda: cd.get("/healthz").status == 200)
    mark = len(cd.read_log())
    rc.signal(signal.SIGSTOP)
    try:
        assert cd.next("f").status == 504
        lines = [l for l in cd.read_log()[mark:].splitlines() if "is unreachable" in l]
        assert lines and all("timed out" in l for l in lines), lines
    finally:
        rc.signal(signal.SIGCONT)


def test_shutdown_grace_expiry_answers_503_and_exits_1(record_countd, counterd):
    rc = record_countd("--latency", "5s")
    cd = counterd(rc.url, "--record-timeout", "10s", "--shutdown-grace", "500ms")
    t, box = next_in_background(cd, "g")
    poll(lambda: cd.get("/counters/g").status == 200 and cd.get("/counters/g").json()["in_flight"] == 1)
    t0 = time.monotonic()
    cd.signal(signal.SIGTERM)
    assert cd.proc.wait(10) == 1, cd.read_log()
    assert time.monotonic() - t0 < 3
    log = cd.read_log()
    assert "expired with 1 call(s) unanswered" in log, log
    assert not os.path.exists(cd.socket)
    t.join(10)
    r = box["r"]
    assert isinstance(r, harness.Response) and r.status == 503, "the caller is told, not cut off: %r" % (r,)
    assert r.json()["error"] == "shutting_down" and "--shutdown-grace" in r.json()["message"], r


def test_second_sigterm_exits_1_at_once(record_countd, counterd):
    rc = record_countd("--latency", "5s")
    cd = counterd(rc.url, "--record-timeout", "10s")
    t, box = next_in_background(cd, "s2")
    poll(lambda: cd.get("/counters/s2").status == 200 and cd.get("/counters/s2").json()["in_flight"] == 1)
    cd.signal(signal.SIGTERM)
    poll(lambda: "stopping" in cd.read_log())
    cd.signal(signal.SIGTERM)
    assert cd.proc.wait(5) == 1
    assert "exiting now" in cd.read_log()
    assert not os.path.exists(cd.socket)
    t.join(10)
    assert isinstance(box["r"], (OSError, http.client.HTTPException)), box["r"]


class FakeRecordCountd:
    """A misbehaving record-countd on 127.0.0.1: /healthz and /clients/ID answer as the real one (last_value 0 by default);
    each POST /record-count is answered by record(client, values) -> (status, body bytes), by default the real
    answer (record may sleep first: requests are served each in its thread). GET /clients/ID waits get_delay s and
    answers last_value(client)."""

    def __init__(self, record=None, get_delay=0):
        self.record = record or self.ack
        self.get_delay = get_delay
        self.last_value = lambda client: 0  # what GET /clients/ID says
        self.posts = []  # the values of every POST /record-count, in arrival order
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as record-countd

            def log_message(self, *args):
                pass

            def answer(self, status, body):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # counterd stopped reading (it refuses the answer)

            def do_GET(self):
                if self.path.startswith("/clients/"):
                    time.sleep(fake.get_delay)
                    client = self.path[len("/clients/"):]
                    self.answer(200, json.dumps({"client": client, "last_value": fake.last_value(client)}).encode())
                else:
                    self.answer(200, b'{"status": "ok"}')

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.posts.append(req["values"])
                status, body = fake.record(req["client"], req["values"])
                self.answer(status, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def ack(client, values):
        """record-countd's answer: every value acknowledged."""
        recs = [{"value": v, "seq": v, "duplicate": False} for v in values]
        return 200, json.dumps({"client": client, "records": recs}).encode()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_record_countd():
    """Factory: start a FakeRecordCountd(record); every one started is closed after the test."""
    started = []

    def start(record=None, get_delay=0):
        f = FakeRecordCountd(record, get_delay)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


def test_answer_over_the_limit_is_a_bad_gateway_not_an_outage(fake_record_countd, counterd):
    # An answer body over counterd's 1 MiB limit was taken as "connection refused or failed": counterd retried it,
    # answered 503 server_unreachable and marked record-countd unreachable although it answered at once.
    fake = fake_record_countd(lambda client, values: (200, b" " * (2 * 1024 * 1024)))
    cd = counterd(fake.url, "--retries", "2", "--backoff", "10ms")
    poll(lambda: cd.get("/healthz").status == 200)
    r = cd.next("big")
    assert r.status == 502 and r.json()["error"] == "bad_gateway", r
    assert "1 MiB" in r.json()["message"] and "record-countd" in r.json()["message"], r
    h = cd.get("/healthz")
    assert h.status == 200 and h.json()["server_state"] == "reachable", h
    assert fake.posts == [[1]], "a malformed answer is not retried"
    assert cd.get("/stats").json()["recorder"]["retries"] == 0
    fake.record = FakeRecordCountd.ack
    assert cd.next("big").json()["count"] == 1, "the failed call consumed no number"


def test_answer_acknowledging_other_records_is_a_bad_gateway(fake_record_countd, counterd):
    """counterd hands a number out only when record-countd's answer acknowledges exactly the values it sent, for its
    client: an answer of 200 acknowledging other values, another client or fewer records (a proxy or another program
    on record-countd's port) is a 502 that consumes no number and is not retried."""
    def acked(client, values, shift=0, name=None, drop=0):
        recs = [{"value": v + shift, "seq": v, "duplicate": False} for v in values][drop:]
        return 200, json.dumps({"client": name or client, "records": recs}).encode()

    fake = fake_record_countd(lambda client, values: acked(client, values, shift=1))
    cd = counterd(fake.url, "--retries", "2", "--backoff", "10ms")
    poll(lambda: cd.get("/healthz").status == 200)
    for record, why in ((lambda c, v: acked(c, v, shift=1), "record 0 acknowledges 2, expected 1"),
                        (lambda c, v: acked(c, v, name="someone:else"), "answer names another client"),
                        (lambda c, v: acked(c, v, drop=1), "answer has 0 records, expected 1"),
                        (lambda c, v: (200, json.dumps({"client": c, "records": [{"value": x, "seq": x}
                                                                                 for x in v]}).encode()),
                         "record 0 lacks value, seq or duplicate")):
        fake.record = record
        fake.posts.clear()
        r = cd.next("ack")
        assert r.status == 502 and r.json()["error"] == "bad_gateway", r
        assert why in r.json()["message"], r.json()
        assert fake.posts == [[1]], "a wrong acknowledgement is not retried"
    fake.record = FakeRecordCountd.ack
    assert cd.next("ack").json()["count"] == 1, "the failed calls consumed no number"


def test_refusal_of_a_record_is_a_bad_gateway_not_an_outage(fake_record_countd, counterd):
    """A 4xx from record-countd (it refused the request: counterd and it disagree about the API) is answered 502
    bad_gateway at once: retrying the same request cannot help, and record-countd, which answered, is not taken for
    unreachable (only 5xx and failed connections are retried)."""
    body = json.dumps({"error": "invalid_value", "message": "values: no"}).encode()
    fake = fake_record_countd(lambda client, values: (400, body))
    cd = counterd(fake.url, "--retries", "2", "--backoff", "10ms")
    poll(lambda: cd.get("/healthz").status == 200)
    r = cd.next("refused")
    assert r.status == 502 and r.json()["error"] == "bad_gateway", r
    assert "400" in r.json()["message"], r.json()
    assert fake.posts == [[1]], "a refusal is not retried"
    assert cd.get("/stats").json()["recorder"]["retries"] == 0
    h = cd.get("/healthz")
    assert h.status == 200 and h.json()["server_state"] == "reachable", h
    fake.record = FakeRecordCountd.ack
    assert cd.next("refused").json()["count"] == 1, "the refused call consumed no number"


def test_retries_resend_the_same_values_backing_off_doubling(fake_record_countd, counterd):
    """A record that fails with a 5xx is sent again --retries times, each time the same values (record-countd makes
    the retry idempotent), after a backoff doubling from --backoff, each wait in the upper half of it (man counterd):
    with 100ms and 3 retries, 50..100 + 100..200 + 200..400 ms. Each retry is counted in /stats."""
    down = json.dumps({"error": "storage_error", "message": "down"}).encode()
    fake = fake_record_countd(lambda client, values: (503, down))
    cd = counterd(fake.url, "--retries", "3", "--backoff", "100ms")
    poll(lambda: cd.get("/healthz").status == 200)
    t0 = time.monotonic()
    r = cd.next("rt")
    took = time.monotonic() - t0
    assert r.status == 503 and r.json()["error"] == "server_unreachable", r
    assert fake.posts == [[1]] * 4, fake.posts
    assert 0.35 <= took < 0.7 + 0.5, took       # without doubling, at most 0.3 s
    assert cd.get("/stats").json()["recorder"]["retries"] == 3
    fake.record = FakeRecordCountd.ack
    poll(lambda: cd.get("/healthz").status == 200)
    assert cd.next("rt").json()["count"] == 1, "the failed call consumed no number"


@pytest.mark.parametrize("strategy", ["stateless", "unsafe"])
def test_hung_up_call_stays_in_flight_until_recorded(fake_record_countd, counterd, strategy):
    # A call that queued for the counter's lock while the counter resumed is watched for a hang-up; when its caller
    # hung up while its value was being recorded, the record's deferred was cancelled and in_flight dropped at once
    # although the POST to record-countd was still outstanding.
    def record(client, values):
        time.sleep(0.8)
        return FakeRecordCountd.ack(client, values)

    fake = fake_record_countd(record, get_delay=0.3)
    cd = counterd(fake.url, "--strategy", strategy, "--log-level", "debug")

    def in_flight():
        return cd.get("/stats").json()["counters"].get("hup", {}).get("in_flight")

    a = harness.UnixHTTPConnection(cd.socket)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        a.request("POST", "/counters/hup/next", body=b"")  # takes the lock and resumes (0.3 s)
        poll(lambda: in_flight() is not None)
        b.connect(cd.socket)
        b.sendall(b"POST /counters/hup/next HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        poll(lambda: in_flight() == 2)
        b.close()
        poll(lambda: "caller of counter hup hung up" in cd.read_log())
        assert in_flight() == 2, "the hung-up call's record is still outstanding"
        assert cd.get("/stats").json()["recorder"]["active"] == 2
        assert a.getresponse().status == 200
        poll(lambda: cd.get("/stats").json()["recorder"]["active"] == 0)
        assert in_flight() == 0, "and no longer once it finished"
        assert sorted(fake.posts) == [[1], [2]]
    finally:
        a.close()
        b.close()


def test_outage_shorter_than_the_health_check_is_logged(fake_record_countd, counterd):
    # counterd samples reachability every 200 ms: an outage that began and ended between two samples (here one 503
    # answer, then a good one) failed a call but left no line in the log.
    def record(client, values):
        if values == [1]:
            return 503, b'{"error": "storage_failed", "message": "the disk failed"}'
        return FakeRecordCountd.ack(client, values)

    fake = fake_record_countd(record)
    cd = counterd(fake.url, "--strategy", "stateless", "--retries", "0")
    poll(lambda: "record-countd is reachable" in cd.read_log())
    mark = len(cd.read_log())
    r = cd.next("flap")
    assert r.status == 503 and r.json()["error"] == "server_unreachable", r
    assert cd.next("flap").json()["count"] == 2
    poll(lambda: "record-countd is reachable" in cd.read_log()[mark:], timeout=3)
    lines = [l for l in cd.read_log()[mark:].splitlines() if "record-countd is" in l]
    assert len(lines) == 2 and "is unreachable" in lines[0] and "answered 503" in lines[0], lines
    assert "is reachable" in lines[1], lines


def test_backoff_above_the_doubling_cap_is_used_not_cut_to_2s(fake_record_countd, counterd):
    # --backoff took values up to a day but waited at most 2 s: the doubling stops at 2 s, a larger first backoff
    # is each wait's backoff (a random point in its upper half), as counterd(8) says.
    fake = fake_record_countd(lambda client, values: (503, b'{"error": "storage_failed", "message": "x"}'))
    cd = counterd(fake.url, "--retries", "1", "--backoff", "10s", "--log-level", "debug")
    poll(lambda: cd.get("/healthz").status == 200)
    next_in_background(cd, "b")
    poll(lambda: re.search(r"retry 1 in (\d+)ms", cd.read_log()))
    wait = int(re.search(r"retry 1 in (\d+)ms", cd.read_log()).group(1))
    assert 5000 <= wait <= 10000, wait


def cpu_seconds(pid):
    """User and system CPU time the process has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_file_descriptors_waits_without_spinning_and_recovers(record_countd, counterd):
    """With LimitNOFILE=64 and 100 callers connected: counterd stops accepting without a busy loop (libevent's
    listener retries accept() at once), logs it once rather than per try, serves the connections it has, and accepts
    the waiting ones once descriptors are free."""
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url, nofile=64)
    assert cd.next("fd").status == 200
    conns = []
    try:
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(cd.socket)
            conns.append(s)
        time.sleep(0.3)
        c0 = cpu_seconds(cd.proc.pid)
        time.sleep(1.5)
        assert cpu_seconds(cd.proc.pid) - c0 < 0.3
        s = conns[0]
        s.sendall(b"POST /counters/fd/next HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert b'"count":2' in s.recv(4096)
        last = conns[-1]
        for c in conns[:-1]:
            c.close()
        conns = [last]
        last.sendall(b"POST /counters/fd/next HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert b'"count":3' in last.recv(4096)
        assert cd.next("fd").json()["count"] == 4
    finally:
        for c in conns:
            c.close()
    log = cd.read_log()
    lines = [x for x in log.splitlines() if "cannot accept connections" in x]
    assert len(lines) == 1 and "Too many open files" in lines[0] and "LimitNOFILE" in lines[0], log[-3000:]
    assert "Error from accept" not in log, log[-3000:]


def test_no_file_descriptor_for_record_countd_is_a_clear_error(record_countd, counterd):
    """counterd has no descriptor left to connect to record-countd: calls fail fast with 503 out_of_file_descriptors
    naming counterd's limit, not "record-countd refused", and record-countd is not reported unreachable."""
    rc = record_countd("--latency", "300ms")
    cd = counterd(rc.url, "--retries", "1", "--backoff", "10ms", "--record-timeout", "5s")
    conns = []
    try:
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            s.connect(cd.socket)
            s.sendall(b"GET /counters HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 200 " in s.recv(4096)
            conns.append(s)
        n = len(os.listdir("/proc/%d/fd" % cd.proc.pid))
        hard = resource.prlimit(cd.proc.pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(cd.proc.pid, resource.RLIMIT_NOFILE, (n, hard))
        t0 = time.monotonic()
        for i, s in enumerate(conns):
            s.sendall(b"POST /counters/c%d/next HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % i)
        answers = [s.recv(4096).partition(b"\r\n\r\n") for s in conns]
        assert time.monotonic() - t0 < 10
        failed = [json.loads(body) for head, _, body in answers if b" 503 " in head.split(b"\r\n")[0] + b" "]
        assert failed, answers
        for doc in failed:
            assert doc["error"] == "out_of_file_descriptors", doc
            assert "counterd cannot open a connection" in doc["message"] and "Too many open files" in doc["message"]
        resource.prlimit(cd.proc.pid, resource.RLIMIT_NOFILE, (hard, hard))
        conns[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = conns[0].recv(4096).partition(b"\r\n\r\n")
        assert json.loads(body)["server_state"] != "unreachable", body
        for i in range(4):
            assert cd.next("c%d" % i).status == 200
    finally:
        for c in conns:
            c.close()
    assert "unreachable" not in cd.read_log()


@pytest.mark.parametrize("strategy", ["stateless", "unsafe"])
def test_failed_record_of_a_lone_call_is_logged_once_per_10s(fake_record_countd, counterd, strategy):
    # A stateless or unsafe call whose record failed with a bad answer (502) left no line at the default level
    # (locked logs its failed batches): it is a warning, at most one per 10 s as every such call is a record.
    fake = fake_record_countd(lambda client, values: (200, b"this is not JSON"))
    cd = counterd(fake.url, "--strategy", strategy, "--retries", "0")
    poll(lambda: cd.get("/healthz").status == 200)
    for _ in range(3):
        r = cd.next("lone")
        assert r.status == 502 and r.json()["error"] == "bad_gateway", r
    lines = [x for x in cd.read_log().splitlines() if "counter lone: recording" in x]
    assert len(lines) == 1 and "counter lone: recording 1 failed: invalid JSON" in lines[0], lines
    assert "more failed since the last such line" in lines[0], lines


def dup_ack(client, values, dups):
    """record-countd's answer with the values in dups acknowledged as duplicates (recorded before)."""
    recs = [{"value": v, "seq": v, "duplicate": v in dups} for v in values]
    return 200, json.dumps({"client": client, "records": recs}).encode()


@pytest.mark.parametrize("strategy", ["locked", "stateless", "unsafe"])
def test_first_attempt_duplicate_is_a_conflict(fake_record_countd, counterd, strategy):
    """record-countd answering duplicate: true to a value counterd sends for the first time, on the first attempt,
    means another writer recorded it under the same client id (another counterd with this --client-id): handing it
    out would give two callers one number. The call fails 409 conflict, and the counter reads its last value again
    before the next number (here record-countd says 5, so the next is 6)."""
    fake = fake_record_countd(lambda client, values: dup_ack(client, values, set(values)))
    cd = counterd(fake.url, "--strategy", strategy)
    poll(lambda: cd.get("/healthz").status == 200)
    r = cd.next("c")
    assert r.status == 409 and r.json()["error"] == "conflict", r
    assert "--client-id test" in r.json()["message"] and "test:c" in r.json()["message"], r.json()
    st = cd.get("/stats").json()["counters"]["c"]
    assert st["conflicts"] == 1 and st["handed_out"] == 0, st
    assert 'counterd_conflicts_total{counter="c"} 1' in cd.get("/metrics").body.decode()
    assert "recorded by another writer" in cd.read_log()
    fake.record = FakeRecordCountd.ack
    gets = []
    fake.last_value = lambda client: gets.append(client) or 5
    r = cd.next("c")
    assert r.status == 200 and r.json()["count"] == 6, (r, fake.posts)
    assert gets == ["test:c"], "the counter asked record-countd for its last value again"


@pytest.mark.parametrize("strategy", ["locked", "stateless"])
def test_duplicate_after_a_retry_is_ours(fake_record_countd, counterd, strategy):
    """A duplicate on a retry is expected: the first attempt timed out after record-countd had recorded the value.
    The value is handed out (it was recorded once, by this counterd), no conflict."""
    seen = []

    def slow_then_dup(client, values):
        seen.append(values)
        if len(seen) == 1:
            time.sleep(0.6)  # past --record-timeout: the answer comes too late for counterd
            return FakeRecordCountd.ack(client, values)
        return dup_ack(client, values, set(values))

    fake = fake_record_countd(slow_then_dup)
    cd = counterd(fake.url, "--strategy", strategy, "--record-timeout", "300ms", "--retries", "2",
                  "--backoff", "10ms")
    poll(lambda: cd.get("/healthz").status == 200)
    r = cd.next("r")
    assert r.status == 200 and r.json()["count"] == 1, (r, seen)
    assert seen == [[1], [1]], seen
    st = cd.get("/stats").json()["counters"]["r"]
    assert st["conflicts"] == 0, st


def test_locked_values_offered_again_may_be_duplicates(fake_record_countd, counterd):
    """locked offers the values of a failed batch again to the next one. If record-countd had in fact recorded them
    (it failed after its commit), the next batch's first attempt gets duplicate: true for those values: they were
    sent by this counterd before, so they are its own and are handed out; a new value in the same batch that comes
    back as a duplicate is still a conflict."""
    state = {"n": 0}

    def record(client, values):
        state["n"] += 1
        if state["n"] == 1:
            return 503, b'{"error": "storage_failed", "message": "after the commit"}'
        return dup_ack(client, values, {1})

    fake = fake_record_countd(record)
    cd = counterd(fake.url, "--retries", "0")
    poll(lambda: cd.get("/healthz").status == 200)
    r = cd.next("o")
    assert r.status == 503, r
    r = cd.next("o")
    assert r.status == 200 and r.json()["count"] == 1, (r, fake.posts)
    assert cd.get("/stats").json()["counters"]["o"]["conflicts"] == 0
    fake.record = lambda client, values: dup_ack(client, values, {2})
    r = cd.next("o")
    assert r.status == 409 and r.json()["error"] == "conflict", (r, fake.posts)
