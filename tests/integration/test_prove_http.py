"""HTTP/1.x as real clients speak it, against both daemons: Expect: 100-continue, HTTP/1.0 and keep-alive, HEAD,
OPTIONS and unknown methods, Connection: close, pipelining (with delayed requests), chunked bodies, query details, and
curl, http.client and urllib with their defaults.

Every answer is checked for the framing a client relies on (status line, Content-Length, body or none, keep-alive or
close) and, where it comes from the daemon's routes, for a JSON body. What libevent or libmicrohttpd do that the
daemons cannot change is asserted as it is (and documented in the man pages), not skipped.
"""
import http.client
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import harness

CURL = os.environ.get("CURL", "curl")


# ---------------------------------------------------------------- raw HTTP with framing

def connect(addr, timeout=10):
    """A socket connected to addr: (host, port) for TCP, a str path for a Unix socket."""
    s = socket.socket(socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


class Answer:
    """One response: version, status, headers (lower-case names), body."""

    def __init__(self, version, status, headers, body):
        self.version, self.status, self.headers, self.body = version, status, headers, body

    def json(self):
        return json.loads(self.body)

    def is_json_error(self, status, code=None):
        assert self.status == status, self
        assert self.headers.get("content-type", "").startswith("application/json"), self
        doc = self.json()
        assert set(doc) == {"error", "message"} and doc["message"], doc
        if code is not None:
            assert doc["error"] == code, doc
        return doc

    def __repr__(self):
        return "<Answer %s %s %r %r>" % (self.version, self.status, self.headers, self.body[:300])


def parse_one(buf, method, closed):
    """Parse one response from the front of buf; returns (Answer, rest) or None if it is not all there yet.

    An interim (1xx) answer is returned like any other. A HEAD answer has no body; one without Content-Length
    runs to the close (so it is complete only once closed)."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    status = int(status)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        assert k not in headers, "header %s twice in %r" % (k, head)
        headers[k] = v.strip()
    if status < 200 or method == "HEAD":
        return Answer(version, status, headers, b""), rest
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(rest) < n:
            return None
        return Answer(version, status, headers, rest[:n]), rest[n:]
    if not closed:
        return None
    return Answer(version, status, headers, rest), b""


class Conn:
    """One client connection that sends raw bytes and reads framed answers, interim ones included."""

    def __init__(self, addr, timeout=10):
        self.s = connect(addr, timeout)
        self.buf = b""
        self.closed = False

    def send(self, data):
        self.s.sendall(data)

    def _fill(self, deadline):
        if self.closed:
            return False
        self.s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            b = self.s.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            b = b""
        if not b:
            self.closed = True
            return True
        self.buf += b
        return True

    def answer(self, method="GET", timeout=10):
        """The next answer (an interim 1xx one too); None if none came in time or the server closed first."""
        deadline = time.monotonic() + timeout
        while True:
            got = parse_one(self.buf, method, self.closed)
            if got is not None:
                a, self.buf = got
                return a
            if time.monotonic() >= deadline or not self._fill(deadline):
                if self.closed:
                    got = parse_one(self.buf, method, True)
                    if got is not None:
                        a, self.buf = got
                        return a
                return None

    def final(self, method="GET", timeout=10):
        """The next final answer, skipping interim ones; returns (answer, interim statuses)."""
        interim = []
        while True:
            a = self.answer(method, timeout)
            if a is None or a.status >= 200:
                return a, interim
            interim.append(a.status)

    def quiet(self, seconds=0.3):
        """True if nothing arrives for seconds and the server does not close (the connection is open and idle)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._fill(deadline):
                return False
        return not self.buf and not self.closed

    def wait_closed(self, timeout=5):
        """True once the server closes (anything it sends meanwhile is kept in buf)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._fill(deadline)
        return self.closed

    def close(self):
        self.s.close()


def request(method, target, body=b"", headers=(), version="HTTP/1.1", host=True):
    """A request's bytes; headers is a list of (name, value), sent in that order after Host."""
    lines = ["%s %s %s" % (method, target, version)]
    if host:
        lines.append("Host: localhost")
    lines += ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def length(body):
    return [("Content-Length", str(len(body)))]


def exchange(addr, data, methods=("GET",), timeout=10):
    """Send data on a new connection and read one final answer per method; returns (answers, Conn)."""
    c = Conn(addr, timeout)
    c.send(data)
    out = []
    for m in methods:
        a, _ = c.final(m, timeout)
        out.append(a)
    return out, c


# ---------------------------------------------------------------- daemons shared by the module

class Daemons:
    """record-countd at latency 0 and counterd recording to it."""

    def __init__(self, workdir):
        self.rc = harness.RecordCountd(workdir, ["--latency", "0"])
        self.rc.start()
        self.cd = harness.Counterd(workdir, self.rc.url, [], client_id="http")
        self.cd.start()

    def addr(self, which):
        return ("127.0.0.1", self.rc.port) if which == "record-countd" else self.cd.socket

    def recorded(self, client):
        return self.rc.get("/clients/" + client).json()["recorded"]

    def count(self, name):
        """A counterd counter's count, or None if it does not exist."""
        r = self.cd.get("/counters/" + name)
        return r.json()["count"] if r.status == 200 else None

    def still_serving(self):
        for d in (self.rc, self.cd):
            assert d.proc.poll() is None, "%s died:\n%s" % (d.name, d.read_log()[-3000:])
        assert self.rc.get("/healthz").status == 200
        assert self.cd.get("/healthz").status == 200

    def stop(self):
        """Stop both; returns {name: (exit status, log)}."""
        out = {}
        for d in (self.cd, self.rc):
            try:
                out[d.name] = (d.stop(), d.read_log())
            except Exception as e:
                out[d.name] = (None, str(e))
        return out


@pytest.fixture(scope="module")
def dd(tmp_path_factory):
    d = None
    try:
        d = Daemons(str(tmp_path_factory.mktemp("http")))
        yield d
        d.still_serving()
        # After all of it both exit cleanly on SIGTERM (in a sanitizer build: with no error or leak report).
        for name, (code, log) in d.stop().items():
            assert code == 0 and "Sanitizer" not in log, "%s exited %s:\n%s" % (name, code, log[-3000:])
        d = None
    finally:
        if d:
            d.stop()


BOTH = ["record-countd", "counterd"]
# A GET route of each daemon whose answer does not change from one request to the next, and the other GET routes.
STABLE_GETS = {"record-countd": ["/healthz", "/clients/h1", "/records?client=h1", "/stats?client=h1"],
               "counterd": ["/healthz", "/counters", "/counters/h1"]}
OTHER_GETS = {"record-countd": ["/stats", "/metrics"], "counterd": ["/stats", "/metrics"]}


def seed(dd):
    """Something for the GET routes to show: one record, one counter."""
    if dd.recorded("h1") == 0:
        assert dd.rc.get("/record-count?value=1&client=h1").status == 200
    if dd.count("h1") is None:
        assert dd.cd.next("h1").status == 200


def curl(*args, timeout=30):
    return subprocess.run([CURL, "-sS"] + list(args), capture_output=True, timeout=timeout)


def curl_status(*args):
    """Run curl with -o - -w '\\n%{http_code}'; returns (status, body bytes)."""
    p = curl("-o", "-", "-w", "\n%{http_code}", *args)
    assert p.returncode == 0, p.stderr
    body, _, code = p.stdout.rpartition(b"\n")
    return int(code), body


# ---------------------------------------------------------------- Expect: 100-continue

def values_json(client, n=1000):
    return json.dumps({"client": client, "values": list(range(1, n + 1))}).encode()


def test_curl_posts_1000_values_with_expect_100_continue(dd, tmp_path):
    """curl --data @values.json with 1000 values (4.9 kB): curl 7.x/8.x sends Expect: 100-continue by itself only
    past 1 MiB, so it is asked for here as older curls (and -H) do; both ways every value is recorded once."""
    f = tmp_path / "values.json"
    f.write_bytes(values_json("curl-expect"))
    for extra in ([], ["-H", "Expect: 100-continue"]):
        p = curl("-v", "-o", "-", "-w", "\n%{http_code}", "--data", "@" + str(f), "-H", "Content-Type: application/json",
                 *extra, dd.rc.url + "/record-count")
        assert p.returncode == 0, p.stderr
        body, _, code = p.stdout.rpartition(b"\n")
        assert int(code) == 200, p.stdout[-300:]
        recs = json.loads(body)["records"]
        assert [r["value"] for r in recs] == list(range(1, 1001))
        if extra:
            assert b"HTTP/1.1 100 Continue" in p.stderr, p.stderr[-2000:]
    assert dd.rc.get("/clients/curl-expect").json() == {"client": "curl-expect", "last_value": 1000, "recorded": 1000}


def test_curl_expect_past_1mib_gets_413_before_sending_the_body(dd, tmp_path):
    """curl's own Expect (a 2 MB body): record-countd answers 413 JSON instead of 100, so the body is never sent;
    counterd's 1 MiB limit is libevent's, which answers 413 in HTML (documented)."""
    f = tmp_path / "big.json"
    f.write_bytes(b'{"client": "curl-big", "values": [1], "pad": "' + b"x" * 2000000 + b'"}')
    p = curl("-v", "-o", "-", "-w", "\n%{http_code} %{size_upload}", "--data-binary", "@" + str(f),
             dd.rc.url + "/record-count")
    assert p.returncode == 0, p.stderr
    body, _, tail = p.stdout.rpartition(b"\n")
    code, uploaded = tail.split()
    assert b"Expect: 100-continue" in p.stderr
    assert int(code) == 413 and json.loads(body)["error"] == "body_too_large", p.stdout[-300:]
    assert b"100 Continue" not in p.stderr and int(uploaded) < 65536, (uploaded, p.stderr[-1500:])
    p = curl("-v", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", dd.cd.socket, "--data-binary", "@" + str(f),
             "http://localhost/counters/curl-big/next")
    body, _, code = p.stdout.rpartition(b"\n")
    assert int(code) == 413 and b"<HTML>" in body, p.stdout[-300:]       # libevent's own, past its 1 MiB
    assert dd.recorded("curl-big") == 0 and dd.count("curl-big") is None


def test_curl_unix_socket_expect_100_continue_to_counterd(dd, tmp_path):
    """curl --unix-socket with Expect: 100-continue: under counterd's 4096-byte limit the call is served; over it
    libevent has already said 100 Continue, so the body goes and the answer is counterd's JSON 413, no number used."""
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"{" + b" " * 2000 + b"}")
    big.write_bytes(b"{" + b" " * 5000 + b"}")
    args = ["-v", "--unix-socket", dd.cd.socket, "-H", "Expect: 100-continue"]
    p = curl("-o", "-", "-w", "\n%{http_code}", *args, "--data-binary", "@" + str(small),
             "http://localhost/counters/curl-exp/next")
    body, _, code = p.stdout.rpartition(b"\n")
    assert int(code) == 200 and json.loads(body) == {"counter": "curl-exp", "count": 1}, p.stdout
    assert b"HTTP/1.1 100 Continue" in p.stderr
    p = curl("-o", "-", "-w", "\n%{http_code}", *args, "--data-binary", "@" + str(big),
             "http://localhost/counters/curl-exp/next")
    body, _, code = p.stdout.rpartition(b"\n")
    assert int(code) == 413 and json.loads(body)["error"] == "body_too_large", p.stdout
    assert dd.count("curl-exp") == 1


@pytest.mark.parametrize("which", BOTH)
def test_client_waiting_for_100_continue_gets_it_then_its_answer(dd, which):
    """A client that sends the headers with Expect: 100-continue and waits for 100 before the body (as the RFC
    lets it) gets 100 Continue, then, once the body is sent, its answer; the connection stays usable."""
    if which == "record-countd":
        target, body = "/record-count", json.dumps({"client": "wait100", "values": [5, 6]}).encode()
    else:
        target, body = "/counters/wait100/next", b"{}"
    c = Conn(dd.addr(which))
    try:
        c.send(request("POST", target, headers=[("Expect", "100-continue"), ("Content-Type", "application/json")] +
                       length(body)))
        a = c.answer(timeout=5)
        assert a is not None and a.status == 100 and a.body == b"", "no 100 Continue within 5 s: %r" % a
        assert c.quiet(0.2), "an answer came before the body was sent"
        c.send(body + request("GET", "/healthz"))
        a, interim = c.final()
        assert a.status == 200 and not interim, (a, interim)
        assert a.json().get("records" if which == "record-countd" else "count"), a
        assert c.final()[0].status == 200
    finally:
        c.close()
    if which == "record-countd":
        assert dd.recorded("wait100") == 2
    else:
        assert dd.count("wait100") == 1


def test_record_countd_refuses_on_the_headers_instead_of_100(dd):
    """Expect: 100-continue with a body record-countd would refuse: the final answer comes instead of 100 Continue
    and the connection closes (the body was never sent, so nothing can be misread as the next request)."""
    addr = dd.addr("record-countd")
    for req, status, code in (
            (request("POST", "/record-count", headers=[("Expect", "100-continue"), ("Content-Length", "70000")]),
             413, "body_too_large"),
            (request("POST", "/stats", headers=[("Expect", "100-continue"), ("Content-Length", "20")]),
             405, "method_not_allowed"),
            (request("POST", "/nope", headers=[("Expect", "100-continue"), ("Content-Length", "20")]),
             404, "not_found")):
        (a,), c = exchange(addr, req)
        try:
            assert a is not None and a.status == status, (req, a)
            a.is_json_error(status, code)
            assert c.wait_closed(), "record-countd kept the connection open waiting for a body it refused"
        finally:
            c.close()


def test_counterd_sends_100_before_it_routes(dd):
    """libevent answers Expect: 100-continue before counterd sees the request (documented): a POST to a GET route
    gets 100 Continue, then its JSON 405 once the body is in, and the connection stays in step."""
    c = Conn(dd.cd.socket)
    try:
        c.send(request("POST", "/stats", headers=[("Expect", "100-continue"), ("Content-Length", "2")]))
        a = c.answer(timeout=5)
        assert a is not None and a.status == 100, a
        c.send(b"{}" + request("GET", "/healthz"))
        a, _ = c.final()
        a.is_json_error(405, "method_not_allowed")
        assert c.final()[0].status == 200
    finally:
        c.close()


@pytest.mark.parametrize("which", BOTH)
def test_expectation_other_than_100_continue_is_417(dd, which):
    """RFC 9110 10.1.1: an expectation the server cannot meet is answered 417, and nothing is done. Both daemons
    ignored it (record-countd always; counterd for a request without a body) and served the request."""
    addr = dd.addr(which)
    if which == "record-countd":
        body = json.dumps({"client": "expect417", "values": [1]}).encode()
        target = "/record-count"
    else:
        body, target = b"", "/counters/expect417/next"
    for req in (request("POST", target, body, [("Expect", "fly-me-to-the-moon")] + length(body)),
                request("GET", "/healthz", headers=[("Expect", "200-ok")]),
                request("POST", target, body, [("Expect", "100-continue, x")] + length(body), version="HTTP/1.0")):
        (a,), c = exchange(addr, req)
        c.close()
        assert a is not None, req
        a.is_json_error(417, "expectation_failed")
    assert (dd.recorded("expect417") if which == "record-countd" else dd.count("expect417")) in (0, None)
    # Without a body to come, the connection stays open after the 417.
    (a, b), c = exchange(addr, request("GET", "/healthz", headers=[("Expect", "x")]) + request("GET", "/healthz"),
                         ("GET", "GET"))
    c.close()
    assert a.status == 417 and b is not None and b.status == 200, (a, b)


def test_counterd_417_for_a_body_is_libevents_html(dd):
    """An HTTP/1.1 request with a body and an unknown expectation is answered by libevent itself: 417 in HTML and
    the connection closed (documented in counterd(8)); no number is used."""
    (a,), c = exchange(dd.cd.socket, request("POST", "/counters/expect-html/next", b"{}",
                                             [("Expect", "x")] + length(b"{}")))
    try:
        assert a is not None and a.status == 417, a
        assert a.headers.get("content-type") == "text/html", a
        assert c.wait_closed()
    finally:
        c.close()
    assert dd.count("expect-html") is None


@pytest.mark.parametrize("which", BOTH)
def test_no_100_continue_to_http_1_0(dd, which):
    """RFC 9110 10.1.1: a server must ignore 100-continue from an HTTP/1.0 client (which cannot parse a 1xx)."""
    body = json.dumps({"client": "ten", "values": [3]}).encode() if which == "record-countd" else b"{}"
    target = "/record-count" if which == "record-countd" else "/counters/ten/next"
    (a,), c = exchange(dd.addr(which), request("POST", target, body, [("Expect", "100-continue")] + length(body),
                                                version="HTTP/1.0"))
    c.close()
    assert a is not None and a.status == 200, a
    assert b"100 Continue" not in c.buf


# ---------------------------------------------------------------- HTTP/1.0

@pytest.mark.parametrize("which", BOTH)
def test_http_1_0_without_keep_alive(dd, which):
    """ApacheBench-style HTTP/1.0 (Host, User-Agent, Accept, no keep-alive): one answer with Content-Length that
    matches its body, then the server closes. counterd's answer had no Content-Length (libevent leaves it out)."""
    seed(dd)
    for target in STABLE_GETS[which] + OTHER_GETS[which]:
        (a,), c = exchange(dd.addr(which), request("GET", target, headers=[("User-Agent", "ApacheBench/2.3"),
                                                                            ("Accept", "*/*")], version="HTTP/1.0"))
        try:
            assert a is not None and a.status == 200, (target, a)
            assert a.version in ("HTTP/1.0", "HTTP/1.1"), a
            assert int(a.headers["content-length"]) == len(a.body) > 0, (target, a)
            assert a.headers.get("connection", "close").lower() == "close", a
            assert c.wait_closed(), "%s kept an HTTP/1.0 connection without keep-alive open" % which
            assert c.buf == b"", "bytes after the answer: %r" % c.buf[:200]
        finally:
            c.close()


@pytest.mark.parametrize("which", BOTH)
def test_http_1_0_keep_alive(dd, which):
    """ab -k: HTTP/1.0 with Connection: keep-alive gets Connection: keep-alive and Content-Length, and the
    connection serves the next request; a request without keep-alive then ends it."""
    seed(dd)
    target = STABLE_GETS[which][1]
    ka = request("GET", target, headers=[("Connection", "Keep-Alive")], version="HTTP/1.0")
    c = Conn(dd.addr(which))
    try:
        for _ in range(3):
            c.send(ka)
            a, _ = c.final()
            assert a is not None and a.status == 200, a
            assert a.headers.get("connection", "").lower() == "keep-alive", a
            assert int(a.headers["content-length"]) == len(a.body), a
            assert c.quiet(0.1)
        c.send(request("GET", target, version="HTTP/1.0"))
        a, _ = c.final()
        assert a is not None and a.status == 200 and int(a.headers["content-length"]) == len(a.body), a
        assert c.wait_closed()
    finally:
        c.close()


def test_http_1_0_post_records(dd):
    """ab -p values.json -T application/json: an HTTP/1.0 POST with Content-Length records its values."""
    body = json.dumps({"client": "ab-post", "values": [1, 2, 3]}).encode()
    (a,), c = exchange(dd.addr("record-countd"), request("POST", "/record-count", body,
                                                         [("Content-Type", "application/json")] + length(body),
                                                         version="HTTP/1.0"))
    c.close()
    assert a.status == 200 and len(a.json()["records"]) == 3, a
    assert dd.recorded("ab-post") == 3


@pytest.mark.parametrize("which", BOTH)
def test_http_1_1_without_host_is_served(dd, which):
    """RFC 9112 3.2 has a server answer 400 to HTTP/1.1 without Host; neither libmicrohttpd nor libevent does, and
    the daemons serve it (record-countd(8) says so). Expected behaviour, asserted as it is: a fix would change it."""
    (a,), c = exchange(dd.addr(which), request("GET", "/healthz", headers=[("Connection", "close")], host=False))
    c.close()
    assert a is not None and a.status == 200 and a.json()["status"] == "ok", a


# ---------------------------------------------------------------- HEAD

@pytest.mark.parametrize("which", BOTH)
def test_head_on_every_get_route(dd, which):
    """HEAD on each GET route: the GET's status and Content-Type, Content-Length as GET's (equal where the body
    does not change between requests), no body: the next answer on the connection starts right after the head.
    counterd answered 405 with its JSON body, which desynchronised the connection."""
    seed(dd)
    addr = dd.addr(which)
    for target in STABLE_GETS[which] + OTHER_GETS[which]:
        (g,), c = exchange(addr, request("GET", target, headers=[("Connection", "close")]))
        c.close()
        (h, after), c = exchange(addr, request("HEAD", target) + request("GET", "/healthz"), ("HEAD", "GET"))
        c.close()
        assert h is not None and h.status == g.status == 200, (target, h, g)
        assert h.headers["content-type"] == g.headers["content-type"], (h, g)
        assert "content-length" in h.headers, h
        if target in STABLE_GETS[which]:
            assert int(h.headers["content-length"]) == len(g.body), (target, h, g)
        assert after is not None and after.status == 200 and after.json()["status"] == "ok", \
            "%s HEAD %s: the next answer is out of step: %r" % (which, target, after)


@pytest.mark.parametrize("which", BOTH)
def test_head_where_get_is_not_allowed(dd, which):
    """HEAD on /record-count (GET there records) and on counterd's POST routes: 405 with Allow, no body."""
    target = "/record-count?value=77&client=headrc" if which == "record-countd" else "/counters/headcd/next"
    (h, after), c = exchange(dd.addr(which), request("HEAD", target) + request("GET", "/healthz"), ("HEAD", "GET"))
    c.close()
    assert h.status == 405 and h.headers.get("allow") and "HEAD" not in h.headers["allow"], h
    assert after is not None and after.status == 200, after
    assert (dd.recorded("headrc") if which == "record-countd" else dd.count("headcd")) in (0, None)


@pytest.mark.parametrize("which", BOTH)
def test_http_client_head_then_get_on_one_connection(dd, which):
    """Python's http.client, one keep-alive connection: HEAD, GET, an error, HEAD, GET all read in step."""
    seed(dd)
    if which == "record-countd":
        conn = http.client.HTTPConnection("127.0.0.1", dd.rc.port, timeout=10)
    else:
        conn = harness.UnixHTTPConnection(dd.cd.socket, timeout=10)
    try:
        got = []
        for method, target in (("HEAD", "/healthz"), ("GET", "/healthz"), ("GET", "/nope"), ("HEAD", "/stats"),
                               ("GET", "/stats")):
            conn.request(method, target)
            r = conn.getresponse()
            body = r.read()
            got.append((method, r.status, body[:1] if method == "HEAD" else json.loads(body) and True))
        assert got == [("HEAD", 200, b""), ("GET", 200, True), ("GET", 404, True), ("HEAD", 200, b""),
                       ("GET", 200, True)], got
    finally:
        conn.close()


# ---------------------------------------------------------------- OPTIONS and unknown methods

@pytest.mark.parametrize("which", BOTH)
def test_options_and_unknown_methods_are_405_with_allow(dd, which):
    """OPTIONS, TRACE, PROPFIND and made-up methods on a GET route: 405 JSON with Allow: GET, HEAD; the
    keep-alive connection goes on. OPTIONS * (no route) is a JSON 404."""
    addr = dd.addr(which)
    for method in ("OPTIONS", "TRACE", "PROPFIND", "BREW", "PATCH"):
        (a, b), c = exchange(addr, request(method, "/healthz") + request("GET", "/healthz"), (method, "GET"))
        c.close()
        a.is_json_error(405, "method_not_allowed")
        assert [x.strip() for x in a.headers["allow"].split(",")] == ["GET", "HEAD"], a
        assert b is not None and b.status == 200, (method, b)
    (a,), c = exchange(addr, request("OPTIONS", "*", headers=[("Connection", "close")]))
    c.close()
    a.is_json_error(404, "not_found")


# ---------------------------------------------------------------- Connection: close and pipelining

@pytest.mark.parametrize("which", BOTH)
@pytest.mark.parametrize("value", ["close", "Close", "TE, close", "keep-alive, close"])
def test_connection_close_is_honoured(dd, which, value):
    """Connection: close (also as one token of a list, RFC 9110 7.6.1): the answer says close, the server closes
    and does not answer what was pipelined behind it. counterd kept "TE, close" open."""
    seed(dd)
    (a,), c = exchange(dd.addr(which), request("GET", "/healthz", headers=[("Connection", value)]) +
                       request("GET", "/healthz"))
    try:
        assert a.status == 200 and a.headers.get("connection", "").lower() == "close", a
        assert c.wait_closed(), "%s kept the connection open after Connection: %s" % (which, value)
        assert c.buf == b"", "the request after Connection: close was answered: %r" % c.buf[:200]
    finally:
        c.close()


@pytest.mark.parametrize("which", BOTH)
def test_keep_alive_is_the_http_1_1_default(dd, which):
    (a,), c = exchange(dd.addr(which), request("GET", "/healthz"))
    try:
        assert a.status == 200 and a.headers.get("connection", "").lower() != "close", a
        assert c.quiet(0.3), "%s closed an HTTP/1.1 connection that did not ask for it" % which
    finally:
        c.close()


def test_pipelined_requests_to_counterd_are_answered_in_order(dd):
    names = ["pipe%d" % i for i in range(6)]
    reqs = b"".join(request("POST", "/counters/%s/next" % n, headers=length(b"")) for n in names)
    reqs += request("GET", "/counters/pipe0") + request("HEAD", "/stats") + request("GET", "/nope")
    answers, c = exchange(dd.cd.socket, reqs, ["POST"] * 6 + ["GET", "HEAD", "GET"])
    c.close()
    assert [a.json()["counter"] for a in answers[:6]] == names, answers
    assert answers[6].json()["counter"] == "pipe0" and answers[6].json()["count"] == 1
    assert answers[7].status == 200 and answers[8].status == 404, answers[7:]


def test_pipelined_delayed_and_immediate_requests_to_record_countd(record_countd):
    """One connection, one write: /record-count answers wait --latency 300ms, the others are immediate. Answers
    come in request order (an immediate one waits for the delayed one ahead of it: one request at a time per
    connection), records in that order; another connection meanwhile is answered at once."""
    d = record_countd("--latency", "300ms")
    addr = ("127.0.0.1", d.port)
    body = json.dumps({"client": "pl", "values": [3, 4]}).encode()
    reqs = [("GET", request("GET", "/record-count?value=1&client=pl")),
            ("GET", request("GET", "/healthz")),
            ("GET", request("GET", "/record-count?value=2&client=pl")),
            ("POST", request("POST", "/record-count", body, [("Content-Type", "application/json")] + length(body))),
            ("GET", request("GET", "/clients/pl")),
            ("HEAD", request("HEAD", "/stats")),
            ("GET", request("GET", "/records?client=pl", headers=[("Connection", "close")]))]
    c = Conn(addr, 15)
    t0 = time.monotonic()
    c.send(b"".join(r for _, r in reqs))
    first, _ = c.final()
    t_first = time.monotonic() - t0
    # Another connection is not held up by this one's delayed requests.
    t = time.monotonic()
    assert harness.http_tcp("127.0.0.1", d.port, "GET", "/healthz").status == 200
    assert time.monotonic() - t < 0.25
    answers = [first] + [c.final(m)[0] for m, _ in reqs[1:]]
    took = time.monotonic() - t0
    assert c.wait_closed()
    c.close()
    assert all(a is not None for a in answers), answers
    assert [a.status for a in answers] == [200] * 7, answers
    assert answers[0].json()["value"] == 1 and answers[1].json() == {"status": "ok"}
    assert answers[2].json()["value"] == 2
    assert [r["value"] for r in answers[3].json()["records"]] == [3, 4]
    assert answers[4].json() == {"client": "pl", "last_value": 4, "recorded": 4}
    assert [r["value"] for r in answers[6].json()["records"]] == [1, 2, 3, 4]
    seqs = [r["seq"] for r in answers[6].json()["records"]]
    assert seqs == sorted(seqs)
    assert t_first >= 0.29, t_first
    assert took >= 0.85, "three delayed requests on one connection took %.2fs" % took


# ---------------------------------------------------------------- chunked request bodies

def chunked(body, size):
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def test_chunked_bodies_as_clients_send_them(dd):
    """Chunked POST /record-count: one chunk, 1-byte chunks, a chunk extension, upper-case hex with leading zeros,
    a trailer field; each recorded, the keep-alive connection in step."""
    addr = dd.addr("record-countd")
    body = json.dumps({"client": "chunky", "values": [1, 2]}).encode()
    te = [("Transfer-Encoding", "chunked"), ("Content-Type", "application/json")]
    variants = [chunked(body, 4096), chunked(body, 1),
                b"%x;name=value\r\n%s\r\n0\r\n\r\n" % (len(body), body),
                b"%04X\r\n%s\r\n0\r\n\r\n" % (len(body), body),
                b"%x\r\n%s\r\n0\r\nX-Checksum: 1\r\n\r\n" % (len(body), body)]
    data = b"".join(request("POST", "/record-count", v, te) for v in variants) + request("GET", "/clients/chunky")
    answers, c = exchange(addr, data, ["POST"] * len(variants) + ["GET"])
    c.close()
    for a in answers[:-1]:
        assert a is not None and a.status == 200 and [r["value"] for r in a.json()["records"]] == [1, 2], a
    assert answers[-1].json()["recorded"] == 2


def test_chunked_body_over_the_limit_streamed_keeps_the_connection(dd):
    """A chunked body passing 65536 bytes, sent chunk by chunk as a streaming client does: 413 body_too_large in
    JSON once it ends (libmicrohttpd reads a chunked body to its end before anything can be answered; documented),
    nothing recorded, and the same connection serves the next request."""
    c = Conn(dd.addr("record-countd"), 15)
    try:
        c.send(request("POST", "/record-count", headers=[("Transfer-Encoding", "chunked")]))
        head = b'{"client": "chunk-big", "values": [1], "pad": "'
        c.send(b"%x\r\n%s\r\n" % (len(head), head))
        for _ in range(20):
            c.send(b"1000\r\n" + b"x" * 4096 + b"\r\n")
        c.send(b'2\r\n"}\r\n0\r\n\r\n' + request("GET", "/clients/chunk-big"))
        a, _ = c.final("POST")
        a.is_json_error(413, "body_too_large")
        b, _ = c.final()
        assert b is not None and b.json()["recorded"] == 0, b
    finally:
        c.close()
    # One chunk declared past the limit: the same.
    (a, b), c = exchange(dd.addr("record-countd"), request("POST", "/record-count", b"%x\r\n" % 70000 + b" " * 70000 +
                                                            b"\r\n0\r\n\r\n", [("Transfer-Encoding", "chunked")]) +
                         request("GET", "/healthz"), ("POST", "GET"))
    c.close()
    a.is_json_error(413, "body_too_large")
    assert b is not None and b.status == 200


def test_counterd_chunked_bodies(dd):
    """counterd reads a chunked body like any other: within 4096 bytes served, past it a JSON 413, in step."""
    te = [("Transfer-Encoding", "chunked")]
    data = (request("POST", "/counters/chunkcd/next", chunked(b"{}", 1), te) +
            request("POST", "/counters/chunkcd/next", chunked(b"x" * 5000, 1000), te) +
            request("GET", "/counters/chunkcd"))
    (a, b, g), c = exchange(dd.cd.socket, data, ("POST", "POST", "GET"))
    c.close()
    assert a.status == 200 and a.json() == {"counter": "chunkcd", "count": 1}, a
    b.is_json_error(413, "body_too_large")
    assert g.json()["count"] == 1


@pytest.mark.parametrize("fields", [[("Transfer-Encoding", "chunked"), ("Content-Length", "7")],
                                    [("Content-Length", "7"), ("Transfer-Encoding", "chunked")],
                                    [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")]],
                         ids=["te-cl", "cl-te", "te-te"])
def test_counterd_length_and_chunked_together_close_without_desync(dd, fields):
    """Content-Length with Transfer-Encoding (or TE twice): libevent answers 400 in HTML and closes (documented);
    what was sent after it is never read as a request (RFC 9112 6.1). record-countd's JSON answer to the same is
    in test_server_limits.py."""
    smuggled = request("POST", "/counters/smuggled-cd/next", headers=length(b""))
    (a,), c = exchange(dd.cd.socket, request("POST", "/counters/framing-cd/next", chunked(b"{}", 2), fields) +
                       smuggled)
    try:
        assert a is not None and a.status == 400, a
        assert c.wait_closed()
        assert c.buf == b"", c.buf[:200]
    finally:
        c.close()
    assert dd.count("smuggled-cd") is None and dd.count("framing-cd") is None


# ---------------------------------------------------------------- query details

QUERY_CASES = [
    # (query, status, error code or None, client whose record it makes or None)
    ("value=11&client=q1&", 200, None, "q1"),            # a trailing & adds no parameter
    ("&&value=12&&client=q1", 200, None, "q1"),          # nor do empty ones
    ("value=13&client=%71%31", 200, None, "q1"),         # percent-encoded letters
    ("value=1%34&client=q1", 200, None, "q1"),           # percent-encoded digit
    ("value=15&client=a%2Bb", 400, "invalid_client", None),   # %2B is a literal + (not an id character)
    ("value=15&client=a+b", 400, "invalid_client", None),     # + is a space, as in a form
    ("value=15&client=a%20b", 400, "invalid_client", None),
    ("value=%2B15&client=q2", 400, "invalid_value", None),    # no sign
    ("value=+15&client=q2", 400, "invalid_value", None),      # " 15"
    ("value=&client=q2", 400, "invalid_value", None),
    ("value&client=q2", 400, "invalid_value", None),
    ("value=15&client", 400, "invalid_client", None),
    ("value=15&client=", 400, "invalid_client", None),
    ("value=15&client=q2&client=q2", 400, "invalid_query", None),
    ("value=15&value=15&client=q2", 400, "invalid_query", None),
    ("value=15&client=q2&=x", 400, "unknown_parameter", None),
    ("Value=15&client=q2", 400, "unknown_parameter", None),   # names are case-sensitive
    ("value=15&client=q2;x=1", 400, "invalid_client", None),  # ; is no separator
    ("value=15&client=q2#frag", 400, "invalid_client", None), # a raw fragment (clients strip it) is refused
    ("value=15#&client=q2", 400, "invalid_value", None),
]


@pytest.mark.parametrize("query,status,code,client", QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_query_details(dd, query, status, code, client):
    (a,), c = exchange(dd.addr("record-countd"), request("GET", "/record-count?" + query,
                                                         headers=[("Connection", "close")]))
    c.close()
    if code is None:
        assert a.status == 200 and a.json()["client"] == client, a
    else:
        doc = a.is_json_error(status, code)
        assert doc["message"]
    assert dd.recorded("q2") == 0


def test_fragment_and_query_on_other_routes(dd):
    """A raw # in a path is no route (404 JSON); counterd ignores a query on its routes."""
    (a,), c = exchange(dd.addr("record-countd"), request("GET", "/healthz#x", headers=[("Connection", "close")]))
    c.close()
    a.is_json_error(404, "not_found")
    (a,), c = exchange(dd.cd.socket, request("POST", "/counters/qcd/next?x=1&y", headers=length(b"")))
    c.close()
    assert a.status == 200 and a.json()["counter"] == "qcd", a
    (a,), c = exchange(dd.cd.socket, request("GET", "/counters/qcd#frag"))
    c.close()
    a.is_json_error(404, "not_found")


def test_counterd_absolute_form_target(dd):
    """RFC 9112 3.2.2: "POST http://localhost/counters/NAME/next" (what a client set to use a proxy sends) is
    served; it was a 404. libevent closes such a connection after the answer (documented)."""
    (a,), c = exchange(dd.cd.socket, request("POST", "http://localhost/counters/abscd/next", headers=length(b"")))
    c.close()
    assert a.status == 200 and a.json() == {"counter": "abscd", "count": 1}, a
    (a,), c = exchange(dd.cd.socket, request("GET", "HTTP://localhost/counters/abscd"))
    c.close()
    assert a.status == 200 and a.json()["count"] == 1, a
    (a,), c = exchange(dd.cd.socket, request("GET", "http://localhost"))
    c.close()
    a.is_json_error(404, "not_found")


# ---------------------------------------------------------------- real clients with their defaults

def test_urllib_with_its_defaults(dd):
    """urllib.request: Connection: close, User-Agent Python-urllib, a form Content-Type on a POST by default."""
    with urllib.request.urlopen(dd.rc.url + "/record-count?value=5&client=urllib", timeout=10) as r:
        assert r.status == 200 and json.load(r)["value"] == 5
    body = json.dumps({"client": "urllib", "values": [6, 7]}).encode()
    with urllib.request.urlopen(urllib.request.Request(dd.rc.url + "/record-count", data=body), timeout=10) as r:
        assert r.status == 200 and [x["value"] for x in json.load(r)["records"]] == [6, 7]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(dd.rc.url + "/record-count?value=0&client=urllib", timeout=10)
    assert e.value.code == 400 and json.load(e.value)["error"] == "invalid_value"
    with urllib.request.urlopen(urllib.request.Request(dd.rc.url + "/stats", method="HEAD"), timeout=10) as r:
        assert r.status == 200 and r.read() == b"" and int(r.headers["Content-Length"]) > 0
    assert dd.recorded("urllib") == 3


@pytest.mark.parametrize("which", BOTH)
def test_http_client_keep_alive_sequence(dd, which):
    """http.client on one connection: posts, gets, errors and 405s in a row, each read whole and in step."""
    if which == "record-countd":
        conn = http.client.HTTPConnection("127.0.0.1", dd.rc.port, timeout=10)
        calls = [("GET", "/record-count?value=1&client=hc", None, 200), ("POST", "/record-count",
                 json.dumps({"client": "hc", "values": [2, 3]}), 200), ("DELETE", "/stats", None, 405),
                 ("POST", "/record-count", "{", 400), ("GET", "/clients/hc", None, 200)]
    else:
        conn = harness.UnixHTTPConnection(dd.cd.socket, timeout=10)
        calls = [("POST", "/counters/hc/next", "", 200), ("POST", "/counters/hc/next", None, 200),
                 ("DELETE", "/counters/hc", None, 405), ("POST", "/counters/b@d/next", None, 400),
                 ("GET", "/counters/hc", None, 200)]
    try:
        for method, target, body, status in calls:
            conn.request(method, target, body=body)
            r = conn.getresponse()
            doc = json.loads(r.read())
            assert r.status == status and doc, (method, target, r.status, doc)
        assert conn.sock is not None, "the connection was closed on the way"
    finally:
        conn.close()
    if which == "record-countd":
        assert dd.recorded("hc") == 3
    else:
        assert dd.count("hc") == 2


@pytest.mark.parametrize("which", BOTH)
def test_curl_with_its_defaults(dd, which):
    """curl's defaults (Accept: */*, its User-Agent), -I (HEAD), --http1.0 and -X POST; over --unix-socket for
    counterd. Every answer is the JSON (or header) a script expects."""
    if which == "record-countd":
        base, pre = dd.rc.url, []
        post = ["-X", "POST", "--data", json.dumps({"client": "curl-def", "values": [9]}), base + "/record-count"]
    else:
        base, pre = "http://localhost", ["--unix-socket", dd.cd.socket]
        post = ["-X", "POST", base + "/counters/curl-def/next"]
    code, body = curl_status(*pre, base + "/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    code, body = curl_status(*pre, "--http1.0", base + "/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    code, body = curl_status(*pre, *post)
    assert code == 200, body
    p = curl(*pre, "-I", base + "/stats")
    assert p.returncode == 0, p.stderr
    head = p.stdout.decode("latin-1").lower()
    assert head.startswith("http/1.") and " 200 " in head.splitlines()[0] and "content-length:" in head, head
    code, body = curl_status(*pre, base + "/nope")
    assert code == 404 and json.loads(body)["error"] == "not_found"
    if which == "record-countd":
        assert dd.recorded("curl-def") == 1
    else:
        assert dd.count("curl-def") == 1
