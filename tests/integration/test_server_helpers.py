"""Helpers for the record-countd tests (not a test file itself: listed in EXTRA_DIST only)."""
import json
import os
import resource
import selectors
import socket
import time

RECORD_COUNTD = os.environ.get("RECORD_COUNTD", "server/record-countd")
INT64_MAX = 9223372036854775807


def raise_nofile(n):
    """Let this process open n sockets (soft limit up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard) if hard != resource.RLIM_INFINITY else max(soft, n)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def raw_request(port, data, timeout=10):
    """Send raw bytes on a new connection and return everything read until the server closes or answers once."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_response(s)


def read_response(s):
    """Read one HTTP/1.1 response (Content-Length framed) from socket s; returns (status, headers, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    if b"\r\n\r\n" not in buf:
        return None, {}, buf
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def read_answers(s, n):
    """Yield up to n HTTP/1.1 answers (Content-Length framed) from socket s, several perhaps in one recv, as
    (status, headers, body); stops early when the server closes the connection."""
    buf = b""
    for _ in range(n):
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                length = int(headers.get("content-length", "0"))
                if len(rest) >= length:
                    break
            chunk = s.recv(65536)
            if not chunk:
                return
            buf += chunk
        buf = rest[length:]
        yield int(lines[0].split()[1]), headers, rest[:length]


def concurrent_gets(port, paths, timeout=30):
    """Open one connection per path at once, send all requests, then collect every answer.

    Returns a list of (status, body_json_or_None, seconds_from_send_to_answer) in the order of paths.
    """
    sel = selectors.DefaultSelector()
    conns = []
    try:
        for i, path in enumerate(paths):
            s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            conns.append(s)
        start = []
        for i, path in enumerate(paths):
            start.append(time.monotonic())
            conns[i].sendall(("GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path).encode())
        bufs = [b""] * len(paths)
        done = [None] * len(paths)
        for i, s in enumerate(conns):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        deadline = time.monotonic() + timeout
        left = len(paths)
        while left and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                i = key.data
                try:
                    chunk = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if chunk:
                    bufs[i] += chunk
                    continue
                sel.unregister(key.fileobj)
                done[i] = time.monotonic() - start[i]
                left -= 1
        out = []
        for i in range(len(paths)):
            head, _, body = bufs[i].partition(b"\r\n\r\n")
            status = int(head.split()[1]) if head else None
            try:
                doc = json.loads(body) if body else None
            except ValueError:
                doc = None
            out.append((status, doc, done[i]))
        return out
    finally:
        sel.close()
        for s in conns:
            s.close()


def wait_exit(proc, timeout):
    """Wait for proc to exit; returns its code, or None if it is still running after timeout."""
    try:
        return proc.wait(timeout)
    except Exception:
        return None
