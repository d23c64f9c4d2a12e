"""counterd's socket API against bad input: every answer is a 4xx and the daemon keeps serving."""
import json
import re

import pytest

from test_client_helpers import poll, raw_bytes, raw_http


@pytest.fixture
def cd(record_countd, counterd):
    rc = record_countd("--latency", "0")
    d = counterd(rc.url)
    yield d
    # Whatever came before, the daemon still serves and still counts.
    poll(lambda: d.get("/healthz").status == 200)
    assert d.next("after").status == 200
    assert d.proc.poll() is None


def assert_json_error(r, status, word=None):
    assert r.status == status, r
    j = r.json() if hasattr(r, "json") else json.loads(r[2])
    assert set(j) == {"error", "message"} and j["message"], j
    if word:
        assert j["error"] == word


@pytest.mark.parametrize("path", [
    "/counters/b@d/next", "/counters/%s/next" % ("a" * 65), "/counters/sp%20ace/next",
    "/counters/%2e%2e/next", "/counters/b@d", "/counters/caf%C3%A9/next",
])
def test_bad_names_are_400(cd, path):
    assert_json_error(cd.post(path), 400, "bad_name")


def test_longest_name_is_fine(cd):
    name = "A-z_0.9" + "x" * 57
    assert len(name) == 64
    assert cd.next(name).json() == {"counter": name, "count": 1}


@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/next", "POST"), ("GET", "/counters/x/next", "POST"), ("DELETE", "/counters/x", "GET, HEAD"),
    ("POST", "/stats", "GET, HEAD"), ("PUT", "/healthz", "GET, HEAD"), ("POST", "/metrics", "GET, HEAD"),
    ("PATCH", "/counters", "GET, HEAD"),
])
def test_wrong_method_is_405_with_allow(cd, method, path, allow):
    st, hd, body = raw_http(cd.socket, method, path)
    assert st == 405 and hd["allow"] == allow
    assert json.loads(body)["error"] == "method_not_allowed"


def test_4xx_answers_are_counted_in_metrics(cd):
    def errors():
        text = cd.get("/metrics").body.decode()
        return int(re.search(r"^counterd_http_client_errors_total (\d+)$", text, re.M).group(1))
    before = errors()
    assert_json_error(cd.get("/counters/never"), 404, "not_found")
    assert_json_error(cd.post("/counters/b@d/next"), 400, "bad_name")
    assert raw_http(cd.socket, "DELETE", "/stats")[0] == 405
    assert errors() == before + 3


@pytest.mark.parametrize("path", ["/", "/nope", "/counters/x/next/more", "/counters//next", "/nextx", "/counters/x/nex"])
def test_unknown_path_is_404(cd, path):
    assert_json_error(cd.post(path), 404, "not_found")


def test_unknown_counter_is_404(cd):
    assert_json_error(cd.get("/counters/never"), 404, "not_found")


def test_oversized_target_is_414(cd):
    st, _, body = raw_http(cd.socket, "GET", "/stats?" + "x" * 2000)
    assert st == 414 and json.loads(body)["error"] == "uri_too_long"


def test_oversized_headers_are_431(cd):
    st, _, body = raw_http(cd.socket, "GET", "/stats", headers={"X-Big": "y" * 9000})
    assert st == 431 and json.loads(body)["error"] == "headers_too_large"


def test_oversized_body_is_413(cd):
    st, _, body = raw_http(cd.socket, "POST", "/next", body=b"z" * 5000)
    assert st == 413 and json.loads(body)["error"] == "body_too_large"
    assert cd.get("/counters/default").status == 404, "nothing was counted"


def test_limits_are_exact(cd):
    # counterd(8): request target 1024 bytes (414 past it), headers 8192 bytes (431), body 4096 bytes (413).
    st, _, body = raw_http(cd.socket, "GET", "/stats?" + "x" * (1024 - 7))
    assert st == 200, body
    st, _, body = raw_http(cd.socket, "GET", "/stats?" + "x" * (1025 - 7))
    assert st == 414 and json.loads(body)["error"] == "uri_too_long", (st, body)
    # Each header counts as name + value + 4 (": " and CRLF); raw_http adds Host: localhost and Content-Length: 0.
    fixed = len("Host") + len("localhost") + 4 + len("Content-Length") + len("0") + 4 + len("X-Big") + 4
    st, _, body = raw_http(cd.socket, "GET", "/stats", headers={"X-Big": "y" * (8192 - fixed)})
    assert st == 200, body
    st, _, body = raw_http(cd.socket, "GET", "/stats", headers={"X-Big": "y" * (8193 - fixed)})
    assert st == 431 and json.loads(body)["error"] == "headers_too_large", (st, body)
    st, _, body = raw_http(cd.socket, "POST", "/next", body=b"z" * 4096)
    assert st == 200 and json.loads(body)["count"] == 1, body
    st, _, body = raw_http(cd.socket, "POST", "/next", body=b"z" * 4097)
    assert st == 413 and json.loads(body)["error"] == "body_too_large", (st, body)
    assert cd.get("/counters/default").json()["count"] == 1, "the refused body counted nothing"


def test_huge_headers_beyond_libevent_limit_are_4xx(cd):
    r = raw_http(cd.socket, "GET", "/stats", headers={"X-Huge": "h" * 70000})
    assert r is None or 400 <= r[0] < 500


def test_huge_body_beyond_libevent_limit_is_4xx(cd):
    r = raw_http(cd.socket, "POST", "/next", body=b"b" * (2 * 1024 * 1024))
    assert r is None or 400 <= r[0] < 500
    assert cd.get("/counters/default").status == 404


@pytest.mark.parametrize("data", [
    b"\x00\xff\x13garbage\r\n\r\n", b"GET\r\n\r\n", b"FOO /next HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /next HTTP/9.9\r\n\r\n", b"POST /next HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /next HTTP/1.1\r\nBad Header Line\r\n\r\n", b"\r\n" * 1000, b"A" * 100000,
])
def test_garbage_bytes_get_4xx_or_close(cd, data):
    r = raw_bytes(cd.socket, data, timeout=10)
    assert r is None or 400 <= r[0] < 500, r
    assert cd.get("/counters/default").status == 404, "garbage never counts"


@pytest.mark.parametrize("head,status,word", [
    (b"Content-Length: 0\r\nContent-Length: 40\r\n", 400, "bad_framing"),
    (b"Content-Length: 5\r\nContent-Length: 6\r\n", 400, "bad_framing"),
    (b"Transfer-Encoding: gzip\r\n", 501, "unsupported_transfer_encoding"),
])
def test_ambiguous_framing_is_refused_and_closed(cd, head, status, word):
    """Where a body ends must be beyond doubt, or what follows it could be read as a request (smuggling)."""
    smuggled = b"POST /counters/smuggled/next HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    r = raw_bytes(cd.socket, b"POST /counters/framed/next HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + b"x" * 40 +
                  smuggled, timeout=10)
    assert r is not None and r[0] == status, r
    assert json.loads(r[2])["error"] == word
    assert {k.lower(): v for k, v in r[1].items()}.get("connection", "").lower() == "close", r
    for name in ("framed", "smuggled"):
        assert cd.get("/counters/" + name).status == 404, "a refused request used a number"


def test_client_hangs_up_mid_request(cd):
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(cd.socket)
    s.sendall(b"POST /counters/h/next HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    s.close()
    assert cd.get("/counters/h").status == 404


def test_counter_limit_is_10000(record_countd, counterd):
    # The limit on counters (each holds a lock, a queue and a hash entry): the 10,000th is made, the next is refused
    # with a JSON 503 that names the limit, and the counters that exist keep counting.
    import http.client
    import socket

    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    conn = http.client.HTTPConnection("localhost", timeout=30)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.connect(cd.socket)
    for i in range(10000):
        conn.request("POST", "/counters/n%d/next" % i)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, (i, body)
    conn.close()
    assert cd.get("/stats").json()["counters"].keys() == {"n%d" % i for i in range(10000)}
    r = cd.next("one-too-many")
    assert_json_error(r, 503, "too_many_counters")
    assert "10000" in r.json()["message"]
    assert cd.get("/counters/one-too-many").status == 404
    assert cd.next("n9999").json() == {"counter": "n9999", "count": 2}
    assert cd.next("n0").json() == {"counter": "n0", "count": 2}
