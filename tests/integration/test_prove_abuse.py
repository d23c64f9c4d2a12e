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
from test_client_helpers import poll
from test_server_helpers import raw_request


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


def test_libmicrohttpd_messages_cannot_flood_the_log(record_countd):
    """Each connection a client closes in the middle of a request makes libmicrohttpd say so, at level info,
    which is on by default: 300 of them (a fraction of a second's work for a client) must not make 300 log
    lines: at most 20 of its messages go out per 10 s."""
    d = record_countd("--latency", "0")
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        s.sendall(b"GET /stats HTTP/1.1\r\nHost")
        if i % 2:
            reset_close(s)
        else:
            s.close()
    assert d.get("/healthz").status == 200
    poll(lambda: log_bytes(d).count(b"libmicrohttpd:") >= 20, what="libmicrohttpd's messages")
    time.sleep(0.5)     # the rest of the 300 would have come by now
    lines = [l for l in log_bytes(d).split(b"\n") if b"libmicrohttpd:" in l]
    assert len(lines) <= 21, "%d libmicrohttpd lines for 300 aborted requests:\n%s" % (
        len(lines), b"\n".join(lines[:5]).decode())


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


# ---------------------------------------------------------------- what a client's bytes may do to outputs

def post(body):
    """A raw POST /record-count of body."""
    return b"POST /record-count HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


NASTY = [
    b"GET /st\x1b[31mats HTTP/1.1\r\nHost: t\r\n\r\n",
    b"G\x1bET /stats HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /stats\xff\xfe\r HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /record-count?value=1&client=a%0D%0Arecord-countd:%20forged HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /record-count?value=1&client=a%1B%5B2J HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /record-count?va%0Alue=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /record-count?value=1%00 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /record-count?value=1&client=%C3%28 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /clients/a%0Ab HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /clients/%2F HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /stats HTTP/1.1\r\nHost: t\r\nExpect: \x1b[31m\xff\r\n\r\n",
    b"GET /stats HTTP/1.1\r\nHost: t\r\nX-\x1b: y\r\n\r\n",
    b"GET /stats HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x1b[2J\xc3\x28\r\n\r\n",
    b"GET /stats HTTP/1.1\r\nHost: t\r\nContent-Length: 1\x1b\r\n\r\n",
    b"GET http://\x1b[31m\xffhost/stats HTTP/1.1\r\nHost: t\r\n\r\n",
    post(b"{\"cli\\u001b[2J\\n\":\"a\",\"values\":[1]}"),
    post(b"{\"client\":\"a\xff\",\"values\":[1]}"),
    post(b"{\"client\":\"a\\u0000\",\"values\":[1]}"),
    post(b"[\x1b\n]\x00"),
]


def test_hostile_bytes_leave_answers_logs_and_metrics_well_formed(record_countd):
    """Control characters, ANSI escapes, CR/LF (raw or %-encoded), NUL escapes and invalid UTF-8 in the target,
    method, headers, client IDs and JSON bodies: each gets a JSON error that parses and is ASCII, nothing is
    recorded, every access-log and warning line stays one printable line, and /metrics stays parseable with
    only the route table's labels."""
    import json
    import re
    d = record_countd("--latency", "0", "--access-log")
    for req in NASTY:
        status, headers, body = raw_request(d.port, req)
        assert status is not None, (req, body)
        # the authority of an absolute-form target is ignored: that /stats is served
        assert 400 <= status < 600 or req.startswith(b"GET http://"), (req, status, body)
        if status >= 400 and headers.get("content-type", "").startswith("application/json"):
            doc = json.loads(body)
            assert set(doc) == {"error", "message"}, (req, doc)
            assert all(0x20 <= c < 0x7f for c in body.rstrip(b"\n")), (req, body)
    assert d.get("/stats").json()["recorded"] == 0
    assert_clean_log(d)
    assert log_bytes(d).count(b" access method=") >= len(NASTY) - 1   # each answered one is one line
    text = d.get("/metrics").body.decode("utf-8")
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*",?)*\})? \S+$')
    routes = {"/record-count", "/records", "/clients", "/stats", "/healthz", "/metrics", "other"}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        assert sample.match(line), "malformed Prometheus line: %r" % line
        for r in re.findall(r'route="([^"]*)"', line):
            assert r in routes, line


@pytest.mark.parametrize("target,status", [
    ("/clients/a%253A", 400),         # decoded once: "a%3A" is no ID, not the client "a:"
    ("/clients/a%3A", 200),
    ("/clients/a%2Fb", 400),
    ("/clients/a%00", 400),
    ("/clients/a/b", 400),
    ("/records?after=9223372036854775807&limit=1000", 200),
    ("/records?after=9223372036854775808", 400),
    ("/records?after=-1", 400),
    ("/records?limit=0", 400),
    ("/records?limit=1001", 400),
    ("/records?limit=18446744073709551617", 400),
    ("/record-count?value=9223372036854775808", 400),
    ("/record-count?value=1&value=1", 400),
])
def test_encoding_and_paging_edges(record_countd, target, status):
    """Percent-encoding is decoded once and never to NUL or '/'; paging and values at and past their limits."""
    d = record_countd("--latency", "0")
    r = d.get(target)
    assert r.status == status, r
    r.json()
    assert d.get("/stats").json()["recorded"] == 0


@pytest.mark.parametrize("name,body,code", [
    ("deep-array", b"[" * 3000 + b"]" * 3000, "invalid_json"),
    ("deep-values", b'{"client":"a","values":' + b"[" * 3000 + b"]" * 3000 + b"}", "invalid_json"),
    ("duplicate-key", b'{"client":"a","values":[1],"values":[2]}', "invalid_json"),
    ("nul-escape", b'{"client":"a\\u0000b","values":[1]}', "invalid_json"),
    ("invalid-utf8", b'{"client":"a\xc0\xaf","values":[1]}', "invalid_json"),
    ("lone-surrogate", b'{"client":"a\\ud800","values":[1]}', "invalid_json"),
    ("huge-string", b'{"client":"' + b"a" * 65000 + b'","values":[1]}', "invalid_client"),
    ("many-keys", b"{" + b",".join(b'"k%d":1' % i for i in range(6000)) + b"}", "unknown_field"),
    ("float", b'{"client":"a","values":[1.0]}', "invalid_value"),
    ("past-int64", b'{"client":"a","values":[9223372036854775808]}', "invalid_value"),
    ("trailing-nul", b'{"client":"a","values":[1]}\x00', "invalid_json"),
])
def test_pathological_json_is_refused_cleanly(record_countd, name, body, code):
    """Bodies under 64 KiB built to hurt a JSON parser: each is a 400 with the code that names it, at once,
    and the daemon goes on serving."""
    d = record_countd("--latency", "0")
    assert len(body) <= 65536
    t = time.monotonic()
    r = d.post("/record-count", body)
    assert r.status == 400 and r.json()["error"] == code, r
    assert time.monotonic() - t < 2
    assert d.get("/healthz").status == 200
    assert d.get("/stats").json()["recorded"] == 0


def test_stats_answer_per_client_is_as_documented(record_countd):
    """record-countd(8): /stats is 82 bytes and the ID's length per client (small counters). Any client can
    add clients, so this is what an operator sizes the answer by."""
    d = record_countd("--latency", "0", "--durability", "normal")
    n, idlen = 300, 128
    with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
        s.sendall(b"".join(b"GET /record-count?value=1&client=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                           % (b"%d" % i).rjust(idlen, b"x") for i in range(n)))
        pipelined_ok(s, n)
    short = len(d.get("/stats").body)
    with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
        s.sendall(b"".join(b"GET /record-count?value=1&client=y%d HTTP/1.1\r\nHost: t\r\n\r\n" % i
                           for i in range(n)))
        pipelined_ok(s, n)
    per = (len(d.get("/stats").body) - short) / n
    assert abs((short - 90) / n - (82 + idlen)) < 1, short / n
    assert abs(per - (82 + len(b"y%d" % (n // 2)))) < 1, per


def pipelined_ok(s, n):
    """Read the answers to n pipelined requests on s; each must be a 200."""
    buf = b""
    while buf.count(b"HTTP/1.1 ") < n or not buf.endswith(b"}\n"):
        chunk = s.recv(1 << 20)
        assert chunk, "connection closed after %d answers" % buf.count(b"HTTP/1.1 ")
        buf += chunk
    assert buf.count(b"HTTP/1.1 200 ") == n, buf[:500]


# ---------------------------------------------------------------- files

def test_created_files_follow_the_umask(record_countd, tmp_path):
    """The database, -wal and -shm files are created 0644 less the umask (so 0600 under umask 077), and the
    -wal and -shm files of an existing database take its mode, as record-countd(8) says."""
    old = os.umask(0o077)
    try:
        d = record_countd("--latency", "0")
    finally:
        os.umask(old)
    assert d.get("/record-count?value=1").status == 200
    for suffix in ("", "-wal", "-shm"):
        mode = os.stat(d.db + suffix).st_mode & 0o777
        assert mode == 0o600, "%s%s: mode %o under umask 077" % (d.db, suffix, mode)
    d.stop()
    db = str(tmp_path / "existing.db")
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    old = os.umask(0o022)
    try:
        e = record_countd("--latency", "0", db=db)
    finally:
        os.umask(old)
    assert e.get("/record-count?value=1").status == 200
    for suffix in ("", "-wal", "-shm"):
        mode = os.stat(db + suffix).st_mode & 0o777
        assert mode == 0o600, "%s%s: mode %o for a 0600 database under umask 022" % (db, suffix, mode)


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket", "dangling-symlink-dir"])
def test_db_of_the_wrong_type_is_refused_at_once(tmp_path, kind):
    """--db naming a FIFO (which an open for reading would wait on forever), a directory, a socket, or a
    symlink into a missing directory: exit status 1 at once, naming the path, and nothing is created."""
    import subprocess
    path = str(tmp_path / "bad.db")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "socket":
        u = socket.socket(socket.AF_UNIX)
        u.bind(path)
        u.close()
    else:
        os.symlink(str(tmp_path / "missing" / "x.db"), path)
    before = sorted(os.listdir(str(tmp_path)))
    p = subprocess.run([harness.RECORD_COUNTD, "--listen", "127.0.0.1:0", "--db", path], capture_output=True,
                       text=True, timeout=10, cwd=str(tmp_path))
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "bad.db" in p.stderr, p.stderr
    assert sorted(os.listdir(str(tmp_path))) == before


# ---------------------------------------------------------------- request smuggling

SMUGGLED = b"GET /record-count?value=7&client=smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


def chunked(data):
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


SMUGGLING = {
    # A proxy in front that takes "Content-Length :" as Content-Length forwards SMUGGLED as the body; a server
    # that does not, and reads no body, takes it for the next request on the connection.
    "cl-space-before-colon": b"POST /record-count HTTP/1.1\r\nHost: t\r\nContent-Length : %d\r\n\r\n%s"
                             % (len(SMUGGLED), SMUGGLED),
    # A proxy that takes "Transfer-Encoding :" as chunked forwards the chunked body; a server that frames the
    # body by Content-Length (4: the chunk-size line) reads SMUGGLED from inside the chunk as the next request.
    "te-space-before-colon": b"POST /record-count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n"
                             b"Content-Length: 4\r\n\r\n%s" % chunked(SMUGGLED),
    "te-tab-before-colon": b"POST /record-count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding\t: chunked\r\n"
                           b"Content-Length: 4\r\n\r\n%s" % chunked(SMUGGLED),
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_whitespace_before_a_header_colon_is_refused(record_countd, name):
    """RFC 9112 5.1: a server must answer 400 to whitespace between a field name and its colon, since the
    field may be the framing header a proxy in front read. Answered 400 (invalid_header) and the connection
    closed, so nothing after it is read as another request: the request hidden in the body is not recorded."""
    d = record_countd("--latency", "0")
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(SMUGGLING[name])
        buf = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except socket.timeout:
            raise AssertionError("%s: connection left open after %r" % (name, buf[:300]))
    assert buf.count(b"HTTP/1.1 ") == 1, buf
    assert buf.startswith(b"HTTP/1.1 400 "), buf
    assert b'"error":"invalid_header"' in buf, buf
    assert d.get("/records?client=smuggled").json()["records"] == [], "%s: a request hidden in a body " \
        "was recorded" % name
