"""record-countd: every endpoint, its answers and its errors, over real HTTP with a real SQLite file."""
import os
import socket
import subprocess
import time

import pytest

from test_server_helpers import INT64_MAX, RECORD_COUNTD, read_answers


def is_error(r, status, code):
    """r is a JSON error with this status and code, naming the problem in a message."""
    assert r.status == status, r
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["error"] == code, doc
    assert isinstance(doc["message"], str) and doc["message"]
    return doc


def test_get_records_a_value(record_countd):
    d = record_countd("--latency", "0")
    r = d.get("/record-count?value=1&client=alice")
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"value": 1, "client": "alice", "seq": 1, "duplicate": False}


def test_default_client_is_anonymous(record_countd):
    d = record_countd("--latency", "0")
    assert d.get("/record-count?value=7").json()["client"] == "anonymous"
    assert d.get("/clients/anonymous").json() == {"client": "anonymous", "last_value": 7, "recorded": 1}


def test_retry_is_idempotent(record_countd):
    d = record_countd("--latency", "0")
    first = d.get("/record-count?value=5&client=c").json()
    again = d.get("/record-count?value=5&client=c").json()
    assert first["duplicate"] is False
    assert again == dict(first, duplicate=True)
    other = d.get("/record-count?value=5&client=other").json()
    assert other["duplicate"] is False and other["seq"] != first["seq"]
    stats = d.get("/stats").json()
    assert stats["recorded"] == 2 and stats["duplicates"] == 1
    assert d.get("/clients/c").json()["recorded"] == 1


def test_seq_follows_arrival_order(record_countd):
    d = record_countd("--latency", "0")
    seqs = [d.get("/record-count?value=%d&client=%s" % (v, c)).json()["seq"]
            for v, c in [(3, "a"), (1, "b"), (2, "a"), (10, "c")]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    recs = d.get("/records").json()["records"]
    assert [(x["client"], x["value"]) for x in recs] == [("a", 3), ("b", 1), ("a", 2), ("c", 10)]
    assert [x["seq"] for x in recs] == seqs


def test_post_records_in_order_with_duplicates(record_countd):
    d = record_countd("--latency", "0")
    d.get("/record-count?value=2&client=p")
    r = d.post("/record-count", {"client": "p", "values": [1, 2, 3, 3]})
    assert r.status == 200, r
    doc = r.json()
    assert doc["client"] == "p"
    recs = doc["records"]
    assert [x["value"] for x in recs] == [1, 2, 3, 3]
    assert [x["duplicate"] for x in recs] == [False, True, False, True]
    assert recs[0]["seq"] < recs[2]["seq"] and recs[3]["seq"] == recs[2]["seq"]
    assert recs[1]["seq"] == 1
    assert d.get("/clients/p").json() == {"client": "p", "last_value": 3, "recorded": 3}


def test_post_default_client(record_countd):
    d = record_countd("--latency", "0")
    assert d.post("/record-count", {"values": [4]}).json()["client"] == "anonymous"


def test_clients_unknown_is_zero(record_countd):
    d = record_countd("--latency", "0")
    r = d.get("/clients/nobody")
    assert r.status == 200
    assert r.json() == {"client": "nobody", "last_value": 0, "recorded": 0}


def test_clients_last_value_is_highest(record_countd):
    d = record_countd("--latency", "0")
    for v in (5, 9, 7):
        d.get("/record-count?value=%d&client=k" % v)
    assert d.get("/clients/k").json() == {"client": "k", "last_value": 9, "recorded": 3}


def test_clients_bad_id(record_countd):
    d = record_countd("--latency", "0")
    is_error(d.get("/clients/bad%20id"), 400, "invalid_client")
    is_error(d.get("/clients/"), 400, "invalid_client")
    is_error(d.get("/clients/" + "x" * 129), 400, "invalid_client")
    assert d.get("/clients/" + "x" * 128).status == 200


def test_records_paging_and_filter(record_countd):
    d = record_countd("--latency", "0")
    d.post("/record-count", {"client": "a", "values": list(range(1, 8))})
    d.post("/record-count", {"client": "b", "values": [1, 2]})
    page = d.get("/records?limit=3").json()
    assert [x["value"] for x in page["records"]] == [1, 2, 3]
    assert page["next_after"] == page["records"][-1]["seq"]
    seen = list(page["records"])
    while page["next_after"] is not None:
        page = d.get("/records?limit=3&after=%d" % page["next_after"]).json()
        seen += page["records"]
    assert len(seen) == 9 and [x["seq"] for x in seen] == sorted(x["seq"] for x in seen)
    only_b = d.get("/records?client=b").json()
    assert [(x["client"], x["value"]) for x in only_b["records"]] == [("b", 1), ("b", 2)]
    assert only_b["next_after"] is None
    for rec in seen:
        assert set(rec) == {"seq", "client", "value", "at"}
    # One client's pages: the cursor is exclusive, and a page that is not full (even one short) ends the paging.
    page = d.get("/records?client=a&limit=4").json()
    assert [x["value"] for x in page["records"]] == [1, 2, 3, 4] and page["next_after"] == page["records"][-1]["seq"]
    page = d.get("/records?client=a&limit=4&after=%d" % page["next_after"]).json()
    assert [x["value"] for x in page["records"]] == [5, 6, 7] and page["next_after"] is None
    assert d.get("/records?client=b&limit=3").json()["next_after"] is None


def test_records_carry_their_arrival_time(record_countd):
    """Each record's at is when its request arrived, in seconds since the epoch: not its answer after the latency."""
    d = record_countd("--latency", "300ms")
    t0 = time.time()
    d.get("/record-count?value=1&client=t")
    d.post("/record-count", {"client": "t", "values": [2, 3]})
    t1 = time.time()
    recs = d.get("/records").json()["records"]
    assert [x["value"] for x in recs] == [1, 2, 3]
    assert all(t0 - 0.01 <= x["at"] <= t1 for x in recs), (t0, recs, t1)
    assert recs[0]["at"] < t0 + 0.2 and recs[1]["at"] >= t0 + 0.29, (t0, recs)
    assert recs[1]["at"] == recs[2]["at"]


def test_records_limits(record_countd):
    d = record_countd("--latency", "0")
    d.post("/record-count", {"client": "a", "values": list(range(1, 1001))})
    d.post("/record-count", {"client": "a", "values": [1001]})
    assert len(d.get("/records").json()["records"]) == 100
    assert len(d.get("/records?limit=1000").json()["records"]) == 1000
    assert len(d.get("/records?limit=1").json()["records"]) == 1
    is_error(d.get("/records?limit=1001"), 400, "invalid_limit")
    is_error(d.get("/records?limit=0"), 400, "invalid_limit")
    is_error(d.get("/records?limit=x"), 400, "invalid_limit")
    is_error(d.get("/records?after=-1"), 400, "invalid_after")
    # after takes any seq up to the largest SQLite gives, 9223372036854775807 (nothing is after it).
    assert d.get("/records?after=%d" % INT64_MAX).json() == {"records": [], "next_after": None}
    assert d.get("/records?client=a&after=%d" % INT64_MAX).json() == {"records": [], "next_after": None}
    is_error(d.get("/records?after=%d" % (INT64_MAX + 1)), 400, "invalid_after")
    is_error(d.get("/records?client=a%20b"), 400, "invalid_client")
    is_error(d.get("/records?page=2"), 400, "unknown_parameter")


def test_stats_shape(record_countd):
    d = record_countd("--latency", "0")
    d.get("/record-count?value=1&client=s")
    d.get("/record-count?value=1&client=s")
    d.get("/record-count?value=0&client=s")
    doc = d.get("/stats").json()
    assert set(doc) == {"recorded", "duplicates", "rejected", "in_flight", "max_in_flight", "clients"}
    assert doc["recorded"] == 1 and doc["duplicates"] == 1 and doc["rejected"] == 1 and doc["in_flight"] == 0
    assert doc["clients"]["s"] == {"recorded": 1, "last_value": 1, "in_flight": 0, "max_in_flight": 1,
                                   "out_of_order": 0}


def test_stats_of_one_client(record_countd):
    """?client=ID gives the totals and only that client, so a monitor need not fetch every client's entry."""
    d = record_countd("--latency", "0")
    d.get("/record-count?value=1&client=s")
    d.get("/record-count?value=2&client=t")
    doc = d.get("/stats?client=t").json()
    assert doc["recorded"] == 2 and list(doc["clients"]) == ["t"]
    assert doc["clients"]["t"]["last_value"] == 2
    assert d.get("/stats?client=nobody").json()["clients"] == {}
    assert d.get("/stats?client=s%3A").json()["clients"] == {}
    is_error(d.get("/stats?client=a%20b"), 400, "invalid_client")
    is_error(d.get("/stats?client="), 400, "invalid_client")
    is_error(d.get("/stats?client=s&client=t"), 400, "invalid_query")
    is_error(d.get("/stats?clients=s"), 400, "unknown_parameter")


def restarted_after_writing(record_countd, d, fill):
    """record-countd started again on d's database after fill(con) wrote into it by other means (Python's sqlite3,
    d stopped meanwhile)."""
    import sqlite3
    d.stop()
    con = sqlite3.connect(d.db)
    fill(con)
    con.commit()
    con.close()
    return record_countd("--latency", "0", db=d.db, port=d.port)


def test_stats_of_many_clients(record_countd):
    """Every client of a large database is listed, each entry exact, and ids written into the database by other
    means come out as valid JSON strings of the same text."""
    d = record_countd("--latency", "0")
    d.get("/record-count?value=1&client=first")
    odd = ['we"ird', "back\\slash", "tab\there", "caf\u00e9", "\U0001f600"]
    d2 = restarted_after_writing(record_countd, d, lambda con: con.executemany(
        "INSERT INTO records (client, value, at) VALUES (?, ?, 0)",
        [("c%d" % i, 1 + i % 7) for i in range(200000)] + [(c, 5) for c in odd]))
    d2.get("/record-count?value=9&client=c3")
    doc = d2.get("/stats").json()
    assert doc["recorded"] == 200000 + len(odd) + 2
    assert len(doc["clients"]) == 200000 + len(odd) + 1
    assert doc["clients"]["c3"] == {"recorded": 2, "last_value": 9, "in_flight": 0, "max_in_flight": 1,
                                    "out_of_order": 0}
    assert doc["clients"]["c199999"]["last_value"] == 1 + 199999 % 7
    for c in odd:
        assert doc["clients"][c]["last_value"] == 5, c
    # Bytes that are not UTF-8 (a BLOB written as text) become U+FFFD rather than invalid JSON.
    d3 = restarted_after_writing(record_countd, d2, lambda con: con.execute(
        "INSERT INTO records (client, value, at) VALUES (CAST(X'61FF62C3' AS TEXT), 1, 0)"))
    assert d3.get("/stats").json()["clients"]["a\ufffdb\ufffd"]["recorded"] == 1
    assert doc["clients"]["first"]["recorded"] == 1


def test_records_written_by_other_means_page_whole(record_countd):
    """A client id that is not UTF-8 or a time that is not finite, written into the database by other means, no
    longer drops its record from a /records page and ends the paging early (next_after was null)."""
    d2 = restarted_after_writing(record_countd, record_countd("--latency", "0"), lambda con: con.execute(
        "INSERT INTO records (client, value, at) VALUES ('a', 1, 0), (CAST(X'61FF' AS TEXT), 2, 0), "
        "('a', 3, 9e999), ('a', 4, 0)"))
    page = d2.get("/records?limit=2").json()
    assert [(x["seq"], x["client"]) for x in page["records"]] == [(1, "a"), (2, "a\ufffd")]
    assert page["next_after"] == 2
    page = d2.get("/records?after=2&limit=2").json()
    assert [(x["seq"], x["at"]) for x in page["records"]] == [(3, None), (4, 0.0)] and page["next_after"] == 4
    assert d2.get("/records?after=4").json() == {"records": [], "next_after": None}


def test_values_out_of_range_written_by_other_means(record_countd):
    """A value outside 1..9223372036854775807 (negative, 0, text) written into the database by other means is
    listed by /records as stored, but it is no client's last_value: /stats printed -5 as 18446744073709551611 and
    then counted every new value of the client out of order, and a text value hid the client's highest one. /stats
    and /clients/ID agree, and the start says how many such records there are."""
    d2 = restarted_after_writing(record_countd, record_countd("--latency", "0"), lambda con: con.execute(
        "INSERT INTO records (client, value, at) VALUES ('neg', -5, 0), ('mix', 3, 0), ('mix', -7, 0), "
        "('mix', 0, 0), ('mix', 'x', 0), ('ok', 2, 0)"))
    stats = d2.get("/stats").json()["clients"]
    for client, last, n in (("neg", 0, 1), ("mix", 3, 4), ("ok", 2, 1)):
        assert stats[client] == {"recorded": n, "last_value": last, "in_flight": 0, "max_in_flight": 0,
                                 "out_of_order": 0}, client
        assert d2.get("/clients/" + client).json() == {"client": client, "last_value": last, "recorded": n}
    page = d2.get("/records").json()
    assert [(x["client"], x["value"]) for x in page["records"][:4]] == [("neg", -5), ("mix", 3), ("mix", -7),
                                                                        ("mix", 0)]
    assert "4 records of 2 clients have values outside 1..9223372036854775807" in d2.read_log()
    assert d2.get("/record-count?value=1&client=neg").status == 200
    assert d2.get("/record-count?value=2&client=neg").status == 200
    assert d2.get("/stats?client=neg").json()["clients"]["neg"] == {"recorded": 3, "last_value": 2, "in_flight": 0,
                                                                    "max_in_flight": 1, "out_of_order": 0}
    assert d2.get("/clients/neg").json() == {"client": "neg", "last_value": 2, "recorded": 3}


def test_long_client_ids_written_by_other_means_are_whole(record_countd):
    """/records gives a client id written into the database by other means whole, however long: it was cut at 512
    bytes, at 170 bytes when they were not UTF-8 (each becomes U+FFFD, 3 bytes). /stats gives them whole too."""
    ids = ["L" * 600, "\U0001f600" * 300]

    def fill(con):
        con.executemany("INSERT INTO records (client, value, at) VALUES (?, 1, 0)", [(c,) for c in ids])
        con.execute("INSERT INTO records (client, value, at) VALUES (CAST(X'%s' AS TEXT), 1, 0)" % ("FF" * 200))
    d2 = restarted_after_writing(record_countd, record_countd("--latency", "0"), fill)
    ids.append("\ufffd" * 200)
    assert [x["client"] for x in d2.get("/records").json()["records"]] == ids
    stats = d2.get("/stats").json()["clients"]
    assert all(stats[c]["recorded"] == 1 for c in ids)


def test_out_of_order_counted(record_countd):
    d = record_countd("--latency", "0")
    for v in (1, 3, 2):
        d.get("/record-count?value=%d&client=o" % v)
    # A value arriving lower than the highest so far is out of order; it does not lower last_value.
    assert d.get("/stats").json()["clients"]["o"] == {"recorded": 3, "last_value": 3, "in_flight": 0,
                                                      "max_in_flight": 1, "out_of_order": 1}
    for v in (4, 1):
        d.get("/record-count?value=%d&client=o" % v)
    c = d.get("/stats").json()["clients"]["o"]
    # 2 arrived after 3; the second 1 is a duplicate, not a new out-of-order value.
    assert c["out_of_order"] == 1 and c["recorded"] == 4 and c["last_value"] == 4


def test_healthz(record_countd):
    d = record_countd("--latency", "0")
    r = d.get("/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}


def test_metrics_prometheus(record_countd):
    d = record_countd("--latency", "0")
    d.get("/record-count?value=1&client=m")
    d.get("/record-count?value=x&client=m")
    r = d.get("/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.body.decode()
    assert 'record_countd_requests_total{route="/record-count",status="200"} 1' in text
    assert 'record_countd_requests_total{route="/record-count",status="400"} 1' in text
    assert 'record_countd_request_duration_seconds_bucket{route="/record-count",le="+Inf"} 2' in text
    assert "record_countd_in_flight 0" in text
    assert "record_countd_db_records 1" in text
    # The counters of /stats, as Prometheus metrics: one client known, one record stored, one request refused.
    for metric in ("record_countd_clients 1", "record_countd_records_total 1", "record_countd_duplicates_total 0",
                   "record_countd_rejected_total 1"):
        assert "\n%s\n" % metric in text, metric
    assert "record_countd_db_commit_seconds_count " in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split()) == 2, line


def test_unknown_path_404(record_countd):
    d = record_countd("--latency", "0")
    for path in ("/", "/nope", "/record-count/", "/stats/x", "/clients"):
        is_error(d.get(path), 404, "not_found")


def test_wrong_method_405_with_allow(record_countd):
    d = record_countd("--latency", "0")
    r = d.post("/stats", b"")
    is_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD"
    from harness import http_tcp
    r = http_tcp("127.0.0.1", d.port, "DELETE", "/record-count")
    is_error(r, 405, "method_not_allowed")
    assert set(a.strip() for a in r.headers["allow"].split(",")) == {"GET", "POST"}
    # HEAD would record a value: not allowed on /record-count.
    r = http_tcp("127.0.0.1", d.port, "HEAD", "/record-count?value=1")
    assert r.status == 405
    assert d.get("/records").json()["records"] == []
    r = http_tcp("127.0.0.1", d.port, "PUT", "/clients/x", b"{}")
    assert r.headers["allow"] == "GET, HEAD"
    assert d.get("/stats").status == 200


def test_head_works(record_countd):
    from harness import http_tcp
    d = record_countd("--latency", "0")
    r = http_tcp("127.0.0.1", d.port, "HEAD", "/healthz")
    assert r.status == 200 and r.body == b""


def test_bad_query_values(record_countd):
    d = record_countd("--latency", "0")
    is_error(d.get("/record-count"), 400, "missing_value")
    is_error(d.get("/record-count?client=a"), 400, "missing_value")
    for bad in ("", "0", "-1", "+1", "01", "1.5", "1e3", "%201", "1%20", "abc", "9223372036854775808",
                "18446744073709551616", "99999999999999999999"):
        doc = is_error(d.get("/record-count?value=" + bad), 400, "invalid_value")
        assert "value" in doc["message"]
    is_error(d.get("/record-count?value=1&value=2"), 400, "invalid_query")
    is_error(d.get("/record-count?value=1&cleint=a"), 400, "unknown_parameter")
    is_error(d.get("/record-count?value=1&client=a%2"), 400, "invalid_query")
    is_error(d.get("/record-count?value=1&client=a%00b"), 400, "invalid_query")
    # Nothing of the above was stored.
    assert d.get("/records").json()["records"] == []
    assert d.get("/stats").json()["rejected"] == 19


def test_percent_encoded_client(record_countd):
    d = record_countd("--latency", "0")
    assert d.get("/record-count?value=1&client=a%3Ab").json()["client"] == "a:b"
    # The same id percent-encoded in a path, as urllib.parse.quote("a:b") writes it.
    assert d.get("/clients/a%3Ab").json() == {"client": "a:b", "last_value": 1, "recorded": 1}
    assert d.get("/clients/%61%3a%62").json()["recorded"] == 1
    for bad in ("a%3", "a%zzb", "a%00b", "a%20b", "a+b", "a%2Fb", "%41" * 129):
        is_error(d.get("/clients/" + bad), 400, "invalid_client")
    assert d.get("/clients/" + "%41" * 128).json()["client"] == "A" * 128


def test_too_big_value_is_named(record_countd):
    d = record_countd("--latency", "0")
    doc = is_error(d.post("/record-count", b'{"client": "a", "values": [1, 2, 99999999999999999999]}',
                          headers={"Content-Type": "application/json"}), 400, "invalid_value")
    assert doc["message"].startswith("values[2]: out of range")
    assert d.get("/clients/a").json()["recorded"] == 0


def test_bad_bodies(record_countd):
    d = record_countd("--latency", "0")
    cases = [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"client": "a", "values": [1]} x', "invalid_json"),
        (b'{"client": "a", "client": "b", "values": [1]}', "invalid_json"),
        (b'{"client": "a"}', "missing_value"),
        (b'{"client": "a", "values": 1}', "invalid_value"),
        (b'{"client": "a", "values": []}', "invalid_value"),
        (b'{"client": "a", "values": [0]}', "invalid_value"),
        (b'{"client": "a", "values": [-1]}', "invalid_value"),
        (b'{"client": "a", "values": [1.0]}', "invalid_value"),
        (b'{"client": "a", "values": ["1"]}', "invalid_value"),
        (b'{"client": "a", "values": [null]}', "invalid_value"),
        (b'{"client": "a", "values": [9223372036854775808]}', "invalid_value"),
        (b'{"client": "a", "values": [1, 2, 0]}', "invalid_value"),
        (b'{"client": "", "values": [1]}', "invalid_client"),
        (b'{"client": 5, "values": [1]}', "invalid_client"),
        (b'{"client": "a b", "values": [1]}', "invalid_client"),
        (b'{"client": "a\\u0000b", "values": [1]}', "invalid_json"),
        (b'{"client": "a", "values": [1], "extra": 1}', "unknown_field"),
        # An integer too big for jansson is blamed on the field that holds it.
        (b'{"client": 99999999999999999999, "values": [1]}', "invalid_client"),
        (b'{"client": "a", "values": [1], "extra": 99999999999999999999}', "unknown_field"),
        (b'{"client": "a", "values": [1, -99999999999999999999]}', "invalid_value"),
    ]
    for body, code in cases:
        doc = is_error(d.post("/record-count", body, headers={"Content-Type": "application/json"}), 400, code)
        assert body == b"" or doc["message"]
    is_error(d.post("/record-count?value=1", {"values": [1]}), 400, "unknown_parameter")
    assert d.get("/records").json()["records"] == []
    # A bad value in the middle stores nothing of the batch.
    assert d.get("/clients/a").json()["recorded"] == 0


def test_server_keeps_serving_after_errors(record_countd):
    d = record_countd("--latency", "0")
    d.post("/record-count", b"\xff\xfe garbage")
    d.get("/record-count?value=%ff")
    assert d.get("/record-count?value=1").status == 200


def test_keep_alive_survives_error_answers(record_countd):
    """404, 405 and 414 to requests without a body keep the connection: they used to close it (an answer queued
    before the end of the request), so pipelined requests behind them went unanswered."""
    d = record_countd("--latency", "0")
    reqs = [b"GET /nope", b"DELETE /stats", b"OPTIONS /record-count", b"GET /stats?" + b"a" * 5000,
            b"GET /record-count?value=7&client=ka"]
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"".join(r + b" HTTP/1.1\r\nHost: t\r\n\r\n" for r in reqs))
        answers = [(st, h) for st, h, _ in read_answers(s, len(reqs))]
    assert [a[0] for a in answers] == [404, 405, 405, 414, 200], answers
    for status, headers in answers:
        assert headers.get("connection", "").lower() != "close", (status, headers)
    assert answers[2][1]["allow"] == "GET, POST"
    assert d.get("/clients/ka").json()["last_value"] == 7


def test_absolute_form_target(record_countd):
    """RFC 9112 3.2.2: a server must accept "GET http://host/path" (what a client set to use a proxy sends).
    It was answered 404."""
    d = record_countd("--latency", "0")
    for target, status in ((b"http://127.0.0.1/record-count?value=9&client=abs", 200),
                           (b"HTTP://example.org/clients/abs", 200), (b"https://h/records?client=abs", 200),
                           (b"http://h", 404), (b"http://h/nope?value=1", 404)):
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
            s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
            answers = [(st, h) for st, h, _ in read_answers(s, 1)]
        assert answers and answers[0][0] == status, (target, answers)
    assert d.get("/clients/abs").json() == {"client": "abs", "last_value": 9, "recorded": 1}


def test_version_and_help():
    out = subprocess.run([RECORD_COUNTD, "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout == "record-countd (lockstep) 0.1.0\n"
    out = subprocess.run([RECORD_COUNTD, "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    for opt in ("--listen", "--latency", "--jitter", "--max-latency", "--db", "--durability", "--max-connections",
                "--connection-timeout", "--log-level", "--access-log", "--version", "--help", "4096", "8192",
                "65536", "1000", "RECORD_COUNTD_LATENCY", "16384", "60s", "100ms"):
        assert opt in out.stdout, opt


@pytest.mark.parametrize("args,message", [
    (["--latency", "10x"], 'record-countd: --latency: "10x" is not a duration'),
    (["--jitter", "-1s"], 'record-countd: --jitter: "-1s" is not a duration'),
    (["--max-latency", "soon"], 'record-countd: --max-latency: "soon" is not a duration'),
    (["--durability", "maybe"], 'record-countd: --durability: "maybe" is not a durability'),
    (["--max-connections", "0"], 'record-countd: --max-connections: "0"'),
    (["--connection-timeout", "1h5"], 'record-countd: --connection-timeout: "1h5"'),
    (["--log-level", "loud"], 'record-countd: --log-level: "loud" is not a log level'),
    (["--listen", "nohostport"], 'record-countd: --listen: "nohostport" is not ADDR:PORT'),
    (["--listen", "127.0.0.1:99999"], 'record-countd: --listen: "127.0.0.1:99999" has no valid port'),
    (["--bogus"], 'record-countd: unknown option "--bogus"; see --help'),
    (["-x"], "record-countd: unknown option -x; see --help"),
    (["--latency"], "record-countd: --latency needs a value; see --help"),
    (["extra"], 'record-countd: unexpected argument "extra"'),
])
def test_bad_options_exit_2(args, message, tmp_path):
    out = subprocess.run([RECORD_COUNTD, "--db", str(tmp_path / "x.db")] + args, capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 2, out
    assert message in out.stderr, out.stderr
    assert not (tmp_path / "x.db").exists()


def test_bad_option_from_environment(tmp_path):
    env = dict(os.environ, RECORD_COUNTD_LATENCY="fast")
    out = subprocess.run([RECORD_COUNTD, "--db", str(tmp_path / "x.db")], capture_output=True, text=True, timeout=10,
                         env=env)
    assert out.returncode == 2
    assert 'record-countd: RECORD_COUNTD_LATENCY: "fast" is not a duration' in out.stderr


def test_unwritable_db_is_a_clear_error(tmp_path):
    out = subprocess.run([RECORD_COUNTD, "--listen", "127.0.0.1:0", "--db", str(tmp_path / "no" / "dir" / "x.db")],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert "--db " in out.stderr and "x.db" in out.stderr


def test_listen_in_use_is_a_clear_error(record_countd, tmp_path):
    d = record_countd("--latency", "0")
    out = subprocess.run([RECORD_COUNTD, "--listen", "127.0.0.1:%d" % d.port, "--db", str(tmp_path / "y.db")],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert "--listen 127.0.0.1:%d: bind: Address already in use" % d.port in out.stderr


def test_options_from_environment(record_countd):
    d = record_countd(env={"RECORD_COUNTD_LATENCY": "0", "RECORD_COUNTD_ACCESS_LOG": "1"})
    d.get("/record-count?value=3&client=env")
    d.stop()
    assert "access method=GET path=/record-count status=200 client=env values=3" in d.read_log()


def test_default_db_in_state_directory(tmp_path):
    """Under systemd, STATE_DIRECTORY decides where records.db goes; by hand it is ./record-countd.db."""
    from harness import Daemon, free_port
    for env, expect in (({"STATE_DIRECTORY": str(tmp_path / "state")}, tmp_path / "state" / "records.db"),
                        ({}, tmp_path / "record-countd.db")):
        (tmp_path / "state").mkdir(exist_ok=True)
        port = free_port()
        d = Daemon(str(tmp_path), "record-countd")
        e = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
        e.update(env)
        d.log = open(d.log_path, "ab")
        d.proc = subprocess.Popen([RECORD_COUNTD, "--listen", "127.0.0.1:%d" % port, "--latency", "0"],
                                  stdout=d.log, stderr=subprocess.STDOUT, cwd=str(tmp_path), env=e)
        try:
            from harness import http_tcp
            d.wait_ready(lambda: http_tcp("127.0.0.1", port, "GET", "/healthz").status == 200)
            assert http_tcp("127.0.0.1", port, "GET", "/record-count?value=1").status == 200
        finally:
            assert d.stop() == 0
        assert expect.exists(), d.read_log()


def test_ipv6_listen(tmp_path):
    import socket
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        s.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    import http.client
    p = subprocess.Popen([RECORD_COUNTD, "--listen", "[::1]:%d" % port, "--db", str(tmp_path / "v6.db"),
                          "--latency", "0"], stderr=subprocess.PIPE)
    try:
        import time
        deadline = time.monotonic() + 10
        while True:
            try:
                c = http.client.HTTPConnection("::1", port, timeout=5)
                c.request("GET", "/record-count?value=6&client=v6")
                r = c.getresponse()
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
        assert r.status == 200 and b'"seq":1' in r.read()
    finally:
        p.terminate()
        assert p.wait(10) == 0
