"""record-countd: the edge of every limit, answered with JSON errors, leaving the server serving and the database untouched."""
import json

from harness import http_tcp
from test_server_helpers import INT64_MAX, raw_request


def error_of(status, headers, body, want_status, want_code):
    assert status == want_status, (status, body[:200])
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["error"] == want_code and doc["message"], doc


def still_serving_and_untouched(d, recorded):
    assert d.get("/healthz").status == 200
    assert d.get("/stats").json()["recorded"] == recorded


def test_value_edges(record_countd):
    d = record_countd("--latency", "0")
    assert d.get("/record-count?value=1&client=e").json()["value"] == 1
    assert d.get("/record-count?value=%d&client=e" % INT64_MAX).json()["value"] == INT64_MAX
    assert d.get("/record-count?value=0&client=e").status == 400
    assert d.get("/record-count?value=%d&client=e" % (INT64_MAX + 1)).status == 400
    r = d.post("/record-count", {"client": "e", "values": [1, INT64_MAX]})
    assert [x["duplicate"] for x in r.json()["records"]] == [True, True]
    assert d.post("/record-count", {"client": "e", "values": [0]}).status == 400
    assert d.post("/record-count", {"client": "e", "values": [INT64_MAX + 1]}).status == 400
    assert d.get("/clients/e").json() == {"client": "e", "last_value": INT64_MAX, "recorded": 2}


def test_client_length_edges(record_countd):
    d = record_countd("--latency", "0")
    ok = "A-z.0_9:" * 16
    assert len(ok) == 128
    assert d.get("/record-count?value=1&client=" + ok).json()["client"] == ok
    assert d.get("/record-count?value=1&client=" + ok + "x").json()["error"] == "invalid_client"
    assert d.get("/record-count?value=1&client=").json()["error"] == "invalid_client"
    assert d.post("/record-count", {"client": ok, "values": [2]}).status == 200
    assert d.post("/record-count", {"client": ok + "x", "values": [2]}).json()["error"] == "invalid_client"
    for bad in ("a/b", "a%20b", "a%2Fb", "%C3%A9", "a+b"):
        assert d.get("/record-count?value=1&client=" + bad).status == 400, bad
    still_serving_and_untouched(d, 2)


def test_values_per_post_edges(record_countd):
    d = record_countd("--latency", "0")
    big = [INT64_MAX - i for i in range(1000)]
    r = d.post("/record-count", {"client": "n", "values": big})
    assert r.status == 200, r
    recs = r.json()["records"]
    assert len(recs) == 1000 and [x["value"] for x in recs] == big
    assert [x["seq"] for x in recs] == list(range(1, 1001))
    r = d.post("/record-count", {"client": "n2", "values": list(range(1, 1002))})
    assert r.status == 400 and r.json()["error"] == "invalid_value" and "1001" in r.json()["message"]
    still_serving_and_untouched(d, 1000)


def test_url_length_edges(record_countd):
    d = record_countd("--latency", "0")
    path = "/stats?"
    ok = path + "a" * (4096 - len(path))
    assert d.get(ok).status == 200
    r = d.get(ok + "a")
    assert r.status == 414 and r.json()["error"] == "uri_too_long" and "4096" in r.json()["message"]
    # Far past the limit libmicrohttpd answers 414 by itself; the server goes on.
    status, _, _ = raw_request(d.port, b"GET /stats?" + b"a" * 200000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status in (414, None)
    still_serving_and_untouched(d, 0)


def test_header_size_edges(record_countd):
    d = record_countd("--latency", "0")

    def req(n):
        # Header bytes counted: name + value + 4 for each line ("Host: t" = 9, "X-Pad: ..." = 9 + n).
        return raw_request(d.port, b"GET /stats HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * n + b"\r\n\r\n")

    status, _, _ = req(8192 - 18)
    assert status == 200
    status, headers, body = req(8192 - 17)
    error_of(status, headers, body, 431, "headers_too_large")
    status, _, _ = raw_request(d.port, b"GET /stats HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * 300000 + b"\r\n\r\n")
    assert status in (431, 413, None)
    still_serving_and_untouched(d, 0)


def test_body_size_edges(record_countd):
    d = record_countd("--latency", "0")
    doc = b'{"client": "b", "values": [1]}'
    ok = doc + b" " * (65536 - len(doc))
    r = d.post("/record-count", ok, headers={"Content-Type": "application/json"})
    assert r.status == 200, r
    r = d.post("/record-count", ok + b" ", headers={"Content-Type": "application/json"})
    assert r.status == 413 and r.json()["error"] == "body_too_large"


def test_chunked_body_over_limit(record_countd):
    d = record_countd("--latency", "0")
    chunk = b" " * 4096
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17)) + b"0\r\n\r\n"
    status, headers, resp = raw_request(d.port, b"POST /record-count HTTP/1.1\r\nHost: t\r\n"
                                        b"Transfer-Encoding: chunked\r\n\r\n" + body)
    error_of(status, headers, resp, 413, "body_too_large")
    small = b'{"client":"c","values":[1,2]}'
    status, _, resp = raw_request(d.port, b"POST /record-count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  + b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
    assert status == 200 and len(json.loads(resp)["records"]) == 2
    still_serving_and_untouched(d, 2)


def test_many_query_parameters_do_not_wedge_the_server(record_countd):
    d = record_countd("--latency", "0")
    # More parameters than libmicrohttpd's per-connection pool holds: the connection is closed, nothing hangs.
    status, _, _ = raw_request(d.port, b"GET /stats?" + b"&" * 4000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", timeout=5)
    assert status in (None, 431, 414)
    # Up to a few hundred parameters fit (the documented limit is 128).
    assert http_tcp("127.0.0.1", d.port, "GET", "/stats?" + "a=1&" * 128).status == 200
    still_serving_and_untouched(d, 0)
    assert d.stop() == 0


def test_connection_limit_recovers(record_countd):
    """At --max-connections new connections wait; once idle ones time out it accepts and serves again."""
    import select
    import socket
    import time
    d = record_countd("--latency", "0", "--max-connections", "10", "--connection-timeout", "500ms")
    socks = [socket.create_connection(("127.0.0.1", d.port), timeout=2) for _ in range(30)]
    try:
        held = list(socks[:10])
        deadline = time.monotonic() + 5
        while held and time.monotonic() < deadline:
            for s in select.select(held, [], [], 0.1)[0]:
                try:
                    if not s.recv(1024):
                        held.remove(s)
                except OSError:
                    held.remove(s)
        assert not held, "idle connections not closed after --connection-timeout"
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            if http_tcp("127.0.0.1", d.port, "GET", "/healthz", timeout=1).status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "not serving again after the connection limit was reached"
    assert d.get("/record-count?value=1").status == 200
