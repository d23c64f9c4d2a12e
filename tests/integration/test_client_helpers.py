"""Helpers shared by counterd's integration tests (test_client_*.py); this module holds no tests."""
import asyncio
import json
import os
import resource
import socket
import time

import harness


def raw_http(sock_path, method, path, headers=None, body=b"", timeout=30):
    """One request over a fresh Unix connection, built by hand; returns (status, headers dict, body bytes)."""
    hdrs = {"Host": "localhost", "Content-Length": str(len(body))}
    hdrs.update(headers or {})
    head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in hdrs.items()) + "\r\n"
    return raw_bytes(sock_path, head.encode() + body, timeout=timeout)


def raw_bytes(sock_path, data, timeout=30):
    """Send bytes, read until the server closes or one full answer arrives; returns (status, headers, body) or None if closed silently."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            if b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                hd = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    hd[k.strip().lower()] = v.strip()
                n = int(hd.get("content-length", "-1"))
                if n >= 0 and len(rest) >= n:
                    return int(lines[0].split()[1]), hd, rest[:n]
        if not buf:
            return None
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        return int(lines[0].split()[1]), {}, rest
    finally:
        s.close()


async def _one_next(sock_path, path):
    reader, writer = await asyncio.open_unix_connection(sock_path)
    writer.write(("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % path).encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def many_next(sock_path, name, n, timeout=60):
    """n concurrent POST /counters/NAME/next, all connected at once; returns [(status, json)] in send order."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100 <= hard or (hard == resource.RLIM_INFINITY and soft < n + 100):
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, hard))
    async def run():
        path = "/counters/%s/next" % name
        return await asyncio.wait_for(asyncio.gather(*[_one_next(sock_path, path) for _ in range(n)]), timeout)
    return asyncio.run(run())


def server_records(rc, client):
    """Every value record-countd holds for client, in seq order."""
    values, after = [], 0
    while True:
        r = rc.get("/records?client=%s&after=%d&limit=1000" % (client, after))
        assert r.status == 200, r
        j = r.json()
        values += [rec["value"] for rec in j["records"]]
        if not j["records"] or j.get("next_after") in (None, after):
            return values
        after = j["next_after"]


def server_client_stats(rc, client):
    """record-countd's /stats entry for client."""
    r = rc.get("/stats")
    assert r.status == 200, r
    return r.json()["clients"][client]


def poll(fn, timeout=10.0, step=0.02, what="condition"):
    """Call fn until it returns a true value; return it, or fail after timeout saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("%s not met within %.1fs" % (what, timeout))
        time.sleep(step)


def dead_url():
    """A loopback URL where nothing listens (a port that was free a moment ago)."""
    return "http://127.0.0.1:%d" % harness.free_port()


def counterctl():
    return os.environ.get("COUNTERCTL", harness.COUNTERCTL)
