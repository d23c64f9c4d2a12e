"""Two counterd sharing one --client-id at one record-countd (a misconfiguration: the default client id is the host
name, so two counterd on one host have it): both keep counters recorded as ID:NAME. record-countd's answers say
which values it already had; counterd must never hand out a number the other one handed out."""
import threading

import pytest

from test_client_helpers import many_next, poll, server_records


def counterd_pair(record_countd, counterd, strategy):
    rc = record_countd("--latency", "0")
    a = counterd(rc.url, "--strategy", strategy)
    b = counterd(rc.url, "--strategy", strategy)
    return rc, a, b


@pytest.mark.parametrize("strategy", ["locked", "stateless", "unsafe"])
def test_taking_turns(record_countd, counterd, strategy):
    """a and b take turns: each time one learns that the other went on, its call fails 409 conflict (which names
    the client id to change) and its counter reads record-countd's last value again; no number is given twice."""
    rc, a, b = counterd_pair(record_countd, counterd, strategy)
    assert a.next("x").json()["count"] == 1
    assert b.next("x").json()["count"] == 2, "b resumes after a's 1"
    r = a.next("x")
    assert r.status == 409 and r.json()["error"] == "conflict", r
    assert "--client-id test" in r.json()["message"], r.json()
    g = a.get("/counters/x")
    # count: locked shows the last value acknowledged, the others the last one reserved (the conflicting 2)
    assert g.status == 200 and g.json()["count"] == (1 if strategy == "locked" else 2), \
        "the counter stays listed while it waits to read again"
    assert a.next("x").json()["count"] == 3
    r = b.next("x")
    assert r.status == 409 and r.json()["error"] == "conflict", r
    assert b.next("x").json()["count"] == 4
    assert server_records(rc, "test:x") == [1, 2, 3, 4]
    for d in (a, b):
        assert d.get("/stats").json()["counters"]["x"]["conflicts"] == 1
        assert "recorded by another writer (another counterd with --client-id test?)" in d.read_log()


@pytest.mark.parametrize("strategy", ["locked", "stateless"])
def test_concurrent_load_hands_out_each_number_once(record_countd, counterd, strategy):
    """Both hammer one counter at once: every number a caller gets is unique across both and recorded, every
    failure is a conflict, and both keep handing out numbers."""
    rc, a, b = counterd_pair(record_countd, counterd, strategy)
    got = {a: [], b: []}
    stop = threading.Event()

    def load(d):
        while not stop.is_set():
            got[d].extend(many_next(d.socket, "y", 20))

    threads = [threading.Thread(target=load, args=(d,)) for d in (a, b)]
    for t in threads:
        t.start()
    try:
        poll(lambda: all(sum(s == 200 for s, _ in got[d]) >= 100 for d in (a, b)), timeout=60)
        poll(lambda: sum(d.get("/stats").json()["counters"]["y"]["conflicts"] for d in (a, b)) > 0, timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    ok = [j["count"] for d in (a, b) for s, j in got[d] if s == 200]
    failed = [j for d in (a, b) for s, j in got[d] if s != 200]
    assert len(ok) == len(set(ok)), "a number was handed out twice"
    assert all(j["error"] == "conflict" for j in failed), failed[:3]
    recs = server_records(rc, "test:y")
    assert len(recs) == len(set(recs))
    assert set(ok) <= set(recs), "every number handed out was recorded"
    assert sum(d.get("/stats").json()["counters"]["y"]["conflicts"] for d in (a, b)) == len(failed)


def test_distinct_client_ids_do_not_conflict(record_countd, counterd):
    """The fix the message names: with their own --client-id, the two keep separate counters at record-countd."""
    rc = record_countd("--latency", "0")
    a = counterd(rc.url, client_id="web1")
    b = counterd(rc.url, client_id="web2")
    for i in range(1, 4):
        assert a.next("x").json()["count"] == i
        assert b.next("x").json()["count"] == i
    assert server_records(rc, "web1:x") == [1, 2, 3] and server_records(rc, "web2:x") == [1, 2, 3]
    assert a.get("/stats").json()["counters"]["x"]["conflicts"] == 0
