"""record-countd as a hostile or careless client would use it: bytes that must not reach a log line or an answer
unescaped, limits met exactly, resources held under every per-request limit, and the files it creates.

Each test starts its own daemon on 127.0.0.1 and a temp dir, and asserts what an operator relies on.
"""
import os
import socket
import struct
import time

import pytest

import harness
from test_server_helpers import raw_request, read_response


def poll(pred, timeout=10.0, what="condition"):
    """Poll pred() every 20 ms until it returns a true value (returned); fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for %s" % what)


def log_bytes(d):
    with open(d.log_path, "rb") as f:
        return f.read()


def assert_clean_log(d):
    """Every line of d's log is printable ASCII: no escape, bell, bare CR or byte a terminal or journal would take."""
    for line in log_bytes(d).split(b"\n"):
        bad = [c for c in line if c < 0x20 or c >= 0x7f]
        assert not bad, "log line with control or non-ASCII bytes %r: %r" % (bytes(bad), line)


def reset_close(s):
    """Close s with a RST (SO_LINGER 0), as a client that crashed or gave up would."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


# ---------------------------------------------------------------- output injection

@pytest.mark.parametrize("authority", [b"\x1b[2J\x1b[31mevil\x07host", b"a\rrecord-countd: forged", b"h\xc3\x28\xff"])
def test_libmicrohttpd_messages_do_not_carry_raw_target_bytes(record_countd, authority):
    """libmicrohttpd's own messages (routed into the log) quote the request target as sent: a request whose
    answer cannot be sent (its client reset the connection during the latency) must not put an ANSI escape,
    a bell, a bare CR or invalid UTF-8 into the log. The absolute form lets any byte but space and LF into
    the authority while the path still routes to a delayed /record-count."""
    d = record_countd("--latency", "400ms")
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.sendall(b"GET http://" + authority + b"/record-count?value=1&client=a HTTP/1.1\r\nHost: t\r\n\r\n")
    poll(lambda: d.get("/stats").json()["in_flight"] == 1, what="the request to be in flight")
    reset_close(s)
    poll(lambda: b"Failed to send" in log_bytes(d), what="libmicrohttpd's message about the failed send")
    assert_clean_log(d)


# ---------------------------------------------------------------- resources held under every limit

def is_closed(s):
    """Whether the peer has closed s (EOF or reset); consumes what was sent meanwhile."""
    s.setblocking(False)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


TRICKLE = {
    # what is sent at once, then what is trickled a byte at a time
    "request-line": (b"", b"GET /stats?client=" + b"a" * 200 + b" HTTP/1.1\r\n"),
    "headers": (b"GET /stats HTTP/1.1\r\n", b"Host: t\r\n" + b"X-Slow: 1\r\n" * 20),
    "body": (b"POST /record-count HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n", b" " * 500),
}


@pytest.mark.parametrize("stage", sorted(TRICKLE))
def test_trickled_request_is_cut_after_connection_timeout(record_countd, stage):
    """A client sending one byte every 0.3 s is never idle for --connection-timeout 1s, so that alone would keep
    its connection (and its --max-connections slot) forever: 16384 such connections at 60 s lock every other
    client out for a few hundred bytes a second. A request must arrive whole within the timeout; one whose
    request line arrived is answered 408 (request_timeout) and its connection closed, and nothing is recorded."""
    d = record_countd("--latency", "0", "--connection-timeout", "1s")
    first, slow = TRICKLE[stage]
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    try:
        s.sendall(first)
        got = b""
        start = time.monotonic()
        closed_at = None
        for i, c in enumerate(slow):
            if time.monotonic() - start > 4:
                break
            try:
                s.sendall(bytes([c]))
            except OSError:
                closed_at = time.monotonic() - start
                break
            time.sleep(0.3)
            s.setblocking(False)
            try:
                chunk = s.recv(65536)
                got += chunk
                if not chunk:
                    closed_at = time.monotonic() - start
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed_at = time.monotonic() - start
                break
            finally:
                s.setblocking(True)
        assert closed_at is not None, "%s trickled a byte every 0.3 s: still open after %.1f s with " \
            "--connection-timeout 1s" % (stage, time.monotonic() - start)
        assert closed_at < 3.0, "%s: closed only after %.1f s" % (stage, closed_at)
        if stage != "request-line":
            assert got.startswith(b"HTTP/1.1 408 "), got
            assert b'"error":"request_timeout"' in got, got
    finally:
        s.close()
    assert d.get("/stats").json()["recorded"] == 0
    assert_clean_log(d)


def test_tricklers_at_max_connections_do_not_lock_others_out(record_countd):
    """--max-connections 4 held by four tricklers: a legitimate client is served once they are cut, within a
    few seconds of --connection-timeout 1s, though the tricklers never stop."""
    d = record_countd("--latency", "0", "--connection-timeout", "1s", "--max-connections", "4")
    socks = [socket.create_connection(("127.0.0.1", d.port), timeout=10) for _ in range(4)]
    try:
        for s in socks:
            s.sendall(b"GET /stats HTTP/1.1\r\n")
        start = time.monotonic()
        served = None
        legit = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        legit.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        legit.setblocking(False)
        buf = b""
        while time.monotonic() - start < 6 and served is None:
            for s in socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            time.sleep(0.2)
            try:
                buf += legit.recv(65536)
            except BlockingIOError:
                pass
            if b"\r\n\r\n" in buf:
                served = time.monotonic() - start
        legit.close()
        assert served is not None, "with 4 tricklers at --max-connections 4, a client waited 6 s unserved"
        assert buf.startswith(b"HTTP/1.1 200"), buf
    finally:
        for s in socks:
            s.close()
