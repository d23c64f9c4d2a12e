"""What an operator reads: the log of record-countd and counterd (stderr, or the journal under systemd).

Each test drives a real daemon on 127.0.0.1 and a temp dir and reads what it printed: one line per event, no
raw control byte a request or a peer sent, a bounded number of lines however many requests a client sends, the
levels --log-level filters and the journal's priorities, and the lines an operator acts on (the configuration
at start, what the shutdown answered, failures that would otherwise show only in /stats).
"""
import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness
from harness import COUNTERD, RECORD_COUNTD, free_port, http_unix
from test_client_helpers import dead_url, poll

CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def log_bytes(d):
    with open(d.log_path, "rb") as f:
        return f.read()


def log_lines(d):
    return [l for l in log_bytes(d).split(b"\n") if l]


def assert_one_line_per_event(d, prefix):
    """Every line of d's log is a line of the daemon's (its name first) with no control byte in it."""
    for line in log_lines(d):
        assert line.startswith(prefix + b": "), "a line that is not the daemon's: %r" % line
        assert not CONTROL.search(line) and b"\t" not in line, "control byte in a log line: %r" % line


def bound(burst, started):
    """Lines a limiter of burst per 10 s window may let through since started (monotonic)."""
    return burst * (int((time.monotonic() - started) / 10) + 1)


def run(argv, env=None, timeout=20):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(argv, capture_output=True, timeout=timeout, env=e)


# ---------------------------------------------------------------- record-countd

def test_failed_commits_cannot_flood_the_log(record_countd):
    """Once the database is removed every commit fails, and each is a client's request: 40 of them make at most
    5 lines per 10 s (the first says why and what the requests were answered), not 40."""
    d = record_countd("--latency", "0")
    assert d.get("/record-count?value=1&client=f").status == 200
    os.unlink(d.db)
    poll(lambda: b"was removed while record-countd ran" in log_bytes(d), what="the removal to be noticed")
    started = time.monotonic()
    for v in range(2, 42):
        r = d.get("/record-count?value=%d&client=f" % v)
        assert r.status == 503 and r.json()["error"] == "storage_error", r
    lines = [l for l in log_lines(d) if b"commit of 1 record failed" in l]
    assert 1 <= len(lines) <= bound(5, started) < 40, "%d lines, the first: %r" % (len(lines), lines[:1])
    assert b"its requests answer 503 storage_error" in lines[0], lines[0]
    assert b"restart record-countd" in lines[0], lines[0]
    assert d.stop() == 0
    assert_one_line_per_event(d, b"record-countd")


def test_libmicrohttpd_lines_are_bounded_and_clean(record_countd):
    """300 malformed requests carrying escapes, CRs and bells (each makes libmicrohttpd say something):
    at most 20 of its lines per 10 s, each one line of printable text, and the daemon serves on."""
    d = record_countd("--latency", "0")
    bad = [b"GET /a\x1b[31m\x07 HTTP/9.9\r\n\r\n", b"GET /a\x1b]0;t\x07 X\r\n\r\n",
           b"POST /record-count HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\x1b\r\n"]
    started = time.monotonic()
    for i in range(100):
        for b in bad:
            with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
                s.sendall(b)
                try:
                    s.recv(4096)
                except OSError:
                    pass
    assert d.get("/healthz").status == 200
    lines = [l for l in log_lines(d) if b"libmicrohttpd:" in l]
    assert 1 <= len(lines) <= bound(20, started) < 300, len(lines)
    assert d.stop() == 0
    assert_one_line_per_event(d, b"record-countd")


def test_access_log_is_one_escaped_line_per_request(record_countd):
    """--access-log: one line per request, the client's method and path with no raw control byte."""
    d = record_countd("--latency", "0", "--access-log")
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"GET /no\x1b[2Jwhere\x07?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        while s.recv(4096):
            pass
    assert d.get("/record-count?value=1&client=acc").status == 200
    assert d.stop() == 0
    access = [l for l in log_lines(d) if b": access method=" in l and b"path=/healthz" not in l]
    assert len(access) == 2, access
    assert b"path=/no?[2Jwhere?" in access[0], access[0]
    assert b"client=acc values=1 " in access[1], access[1]
    assert_one_line_per_event(d, b"record-countd")


def journal_env(d):
    """JOURNAL_STREAM naming d's log file, as systemd names the journal's stream on stderr."""
    open(d.log_path, "ab").close()
    st = os.stat(d.log_path)
    return {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}


def test_journal_priorities_include_the_access_log(tmp_path):
    """Under the journal every line carries its priority, the access log's included (<6>, info), so
    journalctl -p filters it with the rest; a warning is <4>."""
    d = harness.RecordCountd(str(tmp_path), ["--latency", "0", "--access-log"])
    d.env = journal_env(d)
    d.start()
    try:
        assert d.get("/record-count?value=1&client=j").status == 200
        os.unlink(d.db)
        poll(lambda: b"was removed" in log_bytes(d), what="the removal warning")
    finally:
        assert d.stop() == 0
    lines = log_lines(d)
    assert all(re.match(rb"^<[3467]>record-countd: ", l) for l in lines), lines
    assert any(l.startswith(b"<6>record-countd: access method=GET ") for l in lines), lines
    assert any(l.startswith(b"<4>record-countd: the database ") for l in lines), lines
    assert any(l.startswith(b"<6>record-countd: listening on ") for l in lines), lines


def test_record_countd_start_line_states_the_configuration(tmp_path):
    """The start line holds every setting in effect, so the log alone says how the server ran."""
    d = harness.RecordCountd(str(tmp_path), ["--latency", "0", "--max-connections", "321",
                                              "--connection-timeout", "7s", "--access-log"])
    d.start()
    assert d.stop() == 0
    line = [l for l in log_lines(d) if b"listening on " in l]
    assert len(line) == 1, line
    assert line[0].endswith(b"latency 0ms jitter 0ms max-latency 0ms (no cap), max-connections 321, "
                            b"connection-timeout 7000ms, access log on, log level info"), line


def test_record_countd_log_levels(tmp_path):
    """--log-level (and RECORD_COUNTD_LOG_LEVEL): error shows no warning, warn shows warnings but no info line,
    info (the default) both; the access log is info."""
    logs = {}
    for level in ("error", "warn", "info", "env-warn"):
        args = ["--latency", "0", "--access-log"]
        env = {}
        if level == "env-warn":
            env["RECORD_COUNTD_LOG_LEVEL"] = "warn"
        else:
            args += ["--log-level", level]
        d = harness.RecordCountd(str(tmp_path), args, db=str(tmp_path / ("%s.db" % level)), env=env)
        d.start()
        try:
            assert d.get("/record-count?value=1&client=lv").status == 200
            os.unlink(d.db)
            poll(lambda: d.get("/healthz").status == 503, what="the removal to be noticed")
        finally:
            assert d.stop() == 0
        logs[level] = log_bytes(d).decode()
    warn, info, access = "was removed while record-countd ran", "listening on ", " access method="
    assert logs["error"] == "", logs["error"]
    for level in ("warn", "env-warn"):
        assert warn in logs[level] and info not in logs[level] and access not in logs[level], logs[level]
    assert warn in logs["info"] and info in logs["info"] and access in logs["info"], logs["info"]


def test_option_value_with_control_bytes_is_one_line(tmp_path):
    """A bad option value is quoted in the error: a newline or escape in it must not split or colour the line."""
    out = run([RECORD_COUNTD, "--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.db"),
               "--latency", "1\nrecord-countd: forged\x1b[31m"])
    assert out.returncode == 2, out
    lines = out.stderr.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 2, out.stderr
    assert not CONTROL.search(lines[0]), lines[0]
    assert lines[0].startswith(b"record-countd: --latency: "), lines[0]


def test_shutdown_says_what_it_answered(record_countd):
    """SIGTERM with a request waiting for its latency: the shutdown lines say it is answered, and the last
    one before "stopped" how many answers went out since the signal and how many were lost."""
    d = record_countd("--latency", "1500ms")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=d.get("/record-count?value=1&client=sd", timeout=30)))
    t.start()
    poll(lambda: d.get("/stats").json()["in_flight"] == 1, what="the request to be in flight")
    d.signal(signal.SIGTERM)
    t.join(30)
    assert result["r"].status == 200, result
    assert d.proc.wait(30) == 0
    d.stop()
    log = log_bytes(d).decode()
    assert "answering 1 requests in flight" in log, log
    assert ("answered 1 request since the signal to stop; 0 answers not read by their clients and 0 request "
            "bodies cut off (connections closed)") in log, log
    assert log.rstrip("\n").endswith("record-countd: stopped"), log


# ---------------------------------------------------------------- counterd

class _Evil(http.server.BaseHTTPRequestHandler):
    """A server at --server answering 503 with escapes, a CR and a bell in its body."""
    body = b'{"error":"x\x1b[31mred\rcounterd: forged\x07"}'

    def do_GET(self):
        self.send_response(503)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def evil_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Evil)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_counterd_quotes_no_control_byte_of_the_servers_answer(counterd, evil_server):
    """record-countd's 5xx body is quoted in "record-countd is unreachable: ...", in the failed calls' messages
    and in /healthz: its control bytes are shown as ?, so the log keeps one line per event."""
    d = counterd(evil_server, "--retries", "0")
    poll(lambda: b"record-countd is unreachable" in log_bytes(d), what="the unreachable line")
    r = d.next("a")
    assert r.status == 503, r
    assert not re.search(r"[\x00-\x1f\x7f]", r.json()["message"]), r.json()
    h = d.get("/healthz").json()
    assert "x?[31mred?counterd: forged?" in h["last_error"], h
    assert d.stop() == 0
    assert b"x?[31mred?counterd: forged?" in log_bytes(d), log_bytes(d)
    assert_one_line_per_event(d, b"counterd")


def test_counterd_start_line_states_the_configuration(record_countd, counterd):
    """The start line gives every setting in effect, defaults included, so the operator need not guess them."""
    rc = record_countd("--latency", "0")
    d = counterd(rc.url, "--backlog", "7", "--wait-timeout", "1500ms", "--record-timeout", "2s", "--retries", "2",
                 "--backoff", "20ms", "--connections", "5", "--shutdown-grace", "9s", "--batch-max", "3")
    assert d.stop() == 0
    line = [l for l in log_bytes(d).decode().splitlines() if "serving on " in l]
    assert line == ["counterd: serving on %s (strategy locked, batch-max 3), recording to %s as test:NAME; "
                    "backlog 7, wait-timeout 1500ms, record-timeout 2000ms, retries 2, backoff 20ms, "
                    "connections 5, shutdown-grace 9000ms, log-level info" % (d.socket, rc.url)], line
    d = counterd(rc.url, "--strategy", "stateless", "--wait-timeout", "0")
    assert d.stop() == 0
    line = [l for l in log_bytes(d).decode().splitlines() if "serving on " in l]
    assert len(line) == 1 and "(strategy stateless)," in line[0] and "batch-max" not in line[0], line
    assert "wait-timeout 0ms (none)" in line[0] and "connections 1024," in line[0], line


def test_counterd_refused_calls_are_logged_once_per_window(counterd):
    """A call refused for want of room (backlog full) is visible in the log, not only in /stats, and 50 of
    them make one line per 10 s, naming the option to raise."""
    d = counterd(dead_url(), "--backlog", "0")
    started = time.monotonic()
    for _ in range(50):
        r = d.next("full")
        assert r.status == 503 and r.json()["error"] == "backlog_full", r
    assert d.stop() == 0
    lines = [l for l in log_lines(d) if b"backlog_full" in l]
    assert 1 <= len(lines) <= bound(1, started) < 50, lines
    assert b"counter full: 0 calls waiting, the --backlog limit" in lines[0], lines[0]
    assert_one_line_per_event(d, b"counterd")


def test_counterd_failed_batches_cannot_flood_the_log(counterd):
    """locked with record-countd down: every call is a batch that fails at once, and 40 of them make one line per
    10 s, saying how many more failed since."""
    d = counterd(dead_url(), "--retries", "0")
    started = time.monotonic()
    for _ in range(40):
        r = d.next("down")
        assert r.status == 503, r
    assert d.stop() == 0
    lines = [l for l in log_lines(d) if b"counter down: recording" in l]
    assert 1 <= len(lines) <= bound(1, started) < 40, lines
    assert b"counter down: recording 1 value(s) failed: " in lines[0], lines[0]
    assert_one_line_per_event(d, b"counterd")


def test_counterd_stopped_line_counts_the_calls_pending(record_countd, counterd):
    """SIGTERM while a call waits for record-countd: the last line says it was answered, and the exit status."""
    rc = record_countd("--latency", "1500ms")
    d = counterd(rc.url)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=d.next("sd", timeout=30)))
    t.start()
    poll(lambda: rc.get("/stats").json()["in_flight"] == 1, what="the call's record to be in flight")
    d.signal(signal.SIGTERM)
    t.join(30)
    assert result["r"].status == 200, result
    assert d.proc.wait(30) == 0
    d.stop()
    log = log_bytes(d).decode()
    assert "stopping (1 call(s) pending)" in log, log
    assert ("counterd: stopped: of the 1 call(s) pending at the signal, 1 answered and 0 left unanswered; "
            "exit status 0") in log, log


def test_counterd_log_levels_and_journal(tmp_path, record_countd):
    """counterd --log-level debug shows debug lines (<7> under the journal), warn hides the info ones."""
    rc = record_countd("--latency", "0")
    logs = {}
    for level in ("warn", "debug"):
        sock = str(tmp_path / ("%s.sock" % level))
        d = harness.Counterd(str(tmp_path), rc.url, ["--log-level", level, "--strategy", "unsafe"], socket_path=sock)
        d.env = journal_env(d)
        d.start()
        assert d.next("lv").status == 200
        assert d.stop() == 0
        logs[level] = log_lines(d)
    assert all(re.match(rb"^<[3467]>counterd: ", l) for l in logs["warn"] + logs["debug"]), logs
    assert any(l.startswith(b"<4>counterd: --strategy unsafe") for l in logs["warn"]), logs["warn"]
    assert not any(l.startswith(b"<6>") or l.startswith(b"<7>") for l in logs["warn"]), logs["warn"]
    assert any(l.startswith(b"<7>counterd: counter lv created") for l in logs["debug"]), logs["debug"]
    assert any(l.startswith(b"<6>counterd: serving on ") for l in logs["debug"]), logs["debug"]


def test_counterd_client_id_with_control_bytes_is_one_line(tmp_path):
    """A refused --client-id is quoted: its newline or escape must not split or colour the line."""
    out = run([COUNTERD, "--socket", str(tmp_path / "x.sock"), "--client-id", "a\ncounterd: forged\x1b[31m"])
    assert out.returncode == 1, out
    lines = out.stderr.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 2, out.stderr
    assert not CONTROL.search(lines[0]) and lines[0].startswith(b"counterd: --client-id: "), lines[0]
