"""GET /metrics of both daemons against the Prometheus text exposition format (0.0.4) and its naming practice, and
against what the daemons did: request counts by route and status, the in-flight gauge, the latency and commit
histograms, counterd's per-counter outcomes, and counters that never go down between two scrapes.

The text is read with prometheus_client's parser (python3-prometheus-client) and with a small line checker of our
own, since the parser forgives things Prometheus itself, or promtool's lint, does not.
"""
import re
import socket
import time

import pytest

from test_client_helpers import dead_url, poll
from test_server_helpers import raw_request

parser = pytest.importorskip("prometheus_client.parser")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$')
SUFFIXES = ("_bucket", "_sum", "_count")


def scrape(d):
    """One GET /metrics: (text, {family name: family}, {(sample name, labels): value}), format checked."""
    r = d.get("/metrics")
    assert r.status == 200, r
    assert r.headers.get("content-type") == CONTENT_TYPE
    text = r.body.decode("utf-8")
    check_lines(text)
    fams = {}
    samples = {}
    for f in parser.text_string_to_metric_families(text):
        key = (f.name, f.type)
        assert f.name not in fams, "two families parse to the name %s: %s and %s" % (f.name, fams[f.name].type,
                                                                                       f.type)
        fams[f.name] = f
        for s in f.samples:
            k = (s.name, tuple(sorted(s.labels.items())))
            assert k not in samples, "duplicate series %s" % (k,)
            samples[k] = s.value
        if f.type == "histogram":
            check_histogram(f)
        del key
    return text, fams, samples


def check_lines(text):
    """Every line is a HELP, a TYPE or a sample of a family announced by both; names follow the practice."""
    assert text.endswith("\n")
    helps, types = set(), {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, "second HELP for %s" % name
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name not in types, "second TYPE for %s" % name
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped")
            assert NAME.match(name)
            if typ == "counter":
                assert name.endswith("_total"), "counter %s without _total" % name
            else:
                assert not name.endswith("_total"), "%s %s ends in _total" % (typ, name)
            if typ not in ("histogram", "summary"):
                # promtool: "non-histogram and non-summary metrics should not have "_count" suffix".
                assert not name.endswith(SUFFIXES), "%s %s ends in a histogram suffix" % (typ, name)
            for t in ("counter", "gauge", "histogram", "summary"):
                # promtool: "metric name should not include type".
                assert "_%s_" % t not in name and not name.endswith("_" + t), "%s names a type" % name
            types[name] = typ
        else:
            m = SAMPLE.match(line)
            assert m, "not a sample line: %r" % line
            name = m.group(1)
            fam = name
            if name not in types:
                fam = next((name[:-len(s)] for s in SUFFIXES if name.endswith(s) and name[:-len(s)] in types), None)
            assert fam in types and fam in helps, "sample %s without HELP and TYPE" % name
            float(m.group(3))
    assert set(helps) == set(types)
    for a in types:
        for b in types:
            if a != b and types[b] in ("histogram", "summary"):
                assert a not in (b + s for s in SUFFIXES), "%s collides with histogram %s" % (a, b)


def check_histogram(f):
    """Buckets sorted and cumulative, le="+Inf" equal to _count, _sum present, per label set."""
    series = {}
    for s in f.samples:
        labels = dict(s.labels)
        le = labels.pop("le", None)
        key = tuple(sorted(labels.items()))
        h = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if s.name.endswith("_bucket"):
            h["buckets"].append((float(le), s.value))
        elif s.name.endswith("_sum"):
            h["sum"] = s.value
        else:
            h["count"] = s.value
    for key, h in series.items():
        b = h["buckets"]
        assert b and b == sorted(b, key=lambda x: x[0]), "%s %s: buckets out of order" % (f.name, key)
        assert b[-1][0] == float("inf"), "%s %s: no +Inf bucket" % (f.name, key)
        assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), "%s %s: not cumulative" % (f.name, key)
        assert h["count"] == b[-1][1], "%s %s: +Inf bucket is not _count" % (f.name, key)
        assert h["sum"] is not None and h["sum"] >= 0
        if h["count"] == 0:
            assert h["sum"] == 0


def check_monotonic(before, after, fams):
    """Every counter series (and histogram bucket, sum and count) of before is in after and not lower."""
    kinds = {}
    for f in fams.values():
        for s in f.samples:
            kinds[s.name] = f.type
    for (name, labels), v in before.items():
        if kinds.get(name) in ("counter", "histogram"):
            assert (name, labels) in after, "series %s%s went away" % (name, labels)
            assert after[(name, labels)] >= v, "%s%s went down: %s -> %s" % (name, labels, v, after[(name, labels)])


def value(samples, name, **labels):
    """The value of one series, 0 if absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def bucket(samples, name, le, **labels):
    """The count of one histogram bucket."""
    return value(samples, name + "_bucket", le=le, **labels)


# ---------------------------------------------------------------- record-countd

def test_record_countd_format_and_counts(record_countd):
    """Unknown paths, good, duplicate and bad records: each is counted once by route and status, the in-flight gauge
    is back at 0, the 200 ms latency shows in every /record-count observation, and commits grow the histogram."""
    rc = record_countd("--latency", "200ms")
    _, _, s0 = scrape(rc)
    for i in range(3):
        assert rc.get("/no-such-path-%d" % i).status == 404
    for v in (1, 2, 3):
        assert rc.get("/record-count?value=%d&client=m" % v).status == 200
    assert rc.get("/record-count?value=2&client=m").status == 200  # duplicate
    assert rc.post("/record-count", b'{"values": [4], "client": "m"}',
                   headers={"Content-Type": "application/json"}).status == 200
    _, fams, s1 = scrape(rc)
    check_monotonic(s0, s1, fams)
    rt = "record_countd_requests_total"
    assert value(s1, rt, route="other", status="404") == 3
    assert value(s1, rt, route="/record-count", status="200") == 5
    assert value(s1, "record_countd_duplicates_total") == 1
    assert value(s1, "record_countd_records_total") == 4
    assert value(s1, "record_countd_rejected_total") == 3
    assert value(s1, "record_countd_in_flight") == 0
    lat = "record_countd_request_duration_seconds"
    assert value(s1, lat + "_count", route="/record-count") == 5
    assert bucket(s1, lat, "0.15", route="/record-count") == 0
    assert bucket(s1, lat, "+Inf", route="/record-count") == 5
    assert value(s1, lat + "_sum", route="/record-count") >= 5 * 0.2
    commits = value(s1, "record_countd_db_commit_seconds_count")
    assert commits >= 1
    assert value(s1, "record_countd_db_committed_records_total") == 4
    assert rc.get("/record-count?value=5&client=m").status == 200
    assert rc.get("/record-count?value=oops&client=m").status == 400
    _, fams, s2 = scrape(rc)
    check_monotonic(s1, s2, fams)
    assert value(s2, "record_countd_db_commit_seconds_count") > commits
    assert value(s2, lat + "_count", route="/record-count") == 7
    assert bucket(s2, lat, "0.15", route="/record-count") == 1  # the 400, answered at once
    assert value(s2, rt, route="/record-count", status="400") == 1
    assert value(s2, "record_countd_rejected_total") == 4


def test_record_countd_no_family_name_clash(record_countd):
    """The gauge of records in the database and the counter of records stored must not parse to one family name:
    record_countd_records (gauge) and record_countd_records_total (counter) did."""
    rc = record_countd()
    assert rc.get("/record-count?value=1&client=m").status == 200
    _, fams, s = scrape(rc)
    assert fams["record_countd_db_records"].type == "gauge"
    assert value(s, "record_countd_db_records") == 1
    assert fams["record_countd_records"].type == "counter"


def test_record_countd_rejected_is_4xx_only(record_countd):
    """A 501 for an unsupported Transfer-Encoding is counted under its status but is not a 4xx rejection."""
    rc = record_countd()
    _, _, s0 = scrape(rc)
    st, _, _ = raw_request(rc.port, b"POST /record-count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n"
                                    b"Connection: close\r\n\r\n")
    assert st == 501
    _, _, s1 = scrape(rc)
    assert sum(v for (n, l), v in s1.items() if n == "record_countd_requests_total" and ("status", "501") in l) == 1
    assert value(s1, "record_countd_rejected_total") == value(s0, "record_countd_rejected_total")
    for req in (b"DELETE /stats HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET /stats HTTP/1.1\r\nHost: t\r\nExpect: foo\r\n\r\n",
                b"POST /record-count HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                b"POST /record-count HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n"):
        assert raw_request(rc.port, req)[0] in (400, 405, 413, 417)
    _, _, s2 = scrape(rc)
    fourxx = sum(v for (n, l), v in s2.items() if n == "record_countd_requests_total" and dict(l)["status"][0] == "4")
    assert fourxx == 4
    assert value(s2, "record_countd_rejected_total") == fourxx


def test_record_countd_in_flight_after_disconnect(record_countd):
    """A caller that hangs up while its record waits for --latency leaves the in-flight gauge at 0 again."""
    rc = record_countd("--latency", "2s")
    with socket.create_connection(("127.0.0.1", rc.port)) as s:
        s.sendall(b"GET /record-count?value=1&client=m HTTP/1.1\r\nHost: t\r\n\r\n")
        poll(lambda: value(scrape(rc)[2], "record_countd_in_flight") == 1)
    poll(lambda: value(scrape(rc)[2], "record_countd_in_flight") == 0)


def test_record_countd_process_start_time(record_countd):
    """process_start_time_seconds is there, a gauge near now, and moves on restart while counters start again."""
    before = time.time()
    rc = record_countd()
    assert rc.get("/record-count?value=1&client=m").status == 200
    _, fams, s = scrape(rc)
    assert fams["process_start_time_seconds"].type == "gauge"
    t0 = value(s, "process_start_time_seconds")
    assert before - 2 <= t0 <= time.time() + 1
    time.sleep(1.1)
    rc.restart()
    _, _, s = scrape(rc)
    assert value(s, "process_start_time_seconds") > t0
    assert value(s, "record_countd_records_total") == 0
    assert value(s, "record_countd_db_records") == 1


# ---------------------------------------------------------------- counterd

def test_counterd_format_and_counts(record_countd, counterd, tmp_path):
    """next calls by counter and outcome match the calls made, in every strategy; failures with record-countd down
    count as errors; counters never go down; gauges are back at 0."""
    rc = record_countd()
    for strategy in ("locked", "stateless", "unsafe"):
        cd = counterd(rc.url, "--strategy", strategy, "--retries", "0", client_id="m-" + strategy)
        _, _, s0 = scrape(cd)
        for _ in range(4):
            assert cd.next("a").status == 200
        assert cd.next("b").status == 200
        _, fams, s1 = scrape(cd)
        check_monotonic(s0, s1, fams)
        assert value(s1, "counterd_next_total", counter="a") == 4, strategy
        assert value(s1, "counterd_next_total", counter="b") == 1, strategy
        assert value(s1, "counterd_next_errors_total", counter="a") == 0, strategy
        assert value(s1, "counterd_batches_total", counter="a") == 4, strategy
        assert value(s1, "counterd_last_value", counter="a") == 4, strategy
        assert value(s1, "counterd_in_flight", counter="a") == 0, strategy
        assert value(s1, "counterd_waiting", counter="a") == 0, strategy
        assert value(s1, "counterd_server_up") == 1
        cd.stop()
    rc2 = record_countd(db=str(tmp_path / "down.db"))  # one record-countd per database
    cd = counterd(rc2.url, "--retries", "0", "--record-timeout", "2s", client_id="m-down")
    assert cd.next("a").status == 200
    _, _, s1 = scrape(cd)
    rc2.stop()
    for _ in range(2):
        assert cd.next("a").status >= 500
    _, fams, s2 = scrape(cd)
    check_monotonic(s1, s2, fams)
    assert value(s2, "counterd_next_total", counter="a") == 1
    assert value(s2, "counterd_next_errors_total", counter="a") == 2
    assert value(s2, "counterd_record_failures_total") >= 2
    assert value(s2, "counterd_server_up") == 0
    assert value(s2, "counterd_in_flight", counter="a") == 0


def test_counterd_large_values_exact(record_countd, counterd):
    """A counter past 10^9 is shown exactly, not rounded to nine digits (1.23456789e+09)."""
    rc = record_countd()
    big = 1234567891
    assert rc.get("/record-count?value=%d&client=big:a" % big).status == 200
    cd = counterd(rc.url, client_id="big")
    r = cd.next("a")
    assert r.status == 200 and r.json()["count"] == big + 1
    text, _, s = scrape(cd)
    assert 'counterd_last_value{counter="a"} %d\n' % (big + 1) in text
    assert value(s, "counterd_last_value", counter="a") == big + 1


def test_counterd_process_start_time(record_countd, counterd):
    """counterd has process_start_time_seconds too, a gauge near now."""
    before = time.time()
    cd = counterd(dead_url())
    _, fams, s = scrape(cd)
    assert fams["process_start_time_seconds"].type == "gauge"
    assert before - 2 <= value(s, "process_start_time_seconds") <= time.time() + 1


def test_counterd_content_type(counterd):
    """counterd's /metrics says charset=utf-8, as record-countd's does and the 0.0.4 format asks."""
    cd = counterd(dead_url())
    r = cd.get("/metrics")
    assert r.status == 200 and r.headers.get("content-type") == CONTENT_TYPE
