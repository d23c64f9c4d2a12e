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
