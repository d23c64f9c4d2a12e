"""counterd: the seed's scenario for each strategy, seen by the callers and by record-countd."""
import subprocess
import threading

import pytest

import harness
from test_client_helpers import server_client_stats, server_records


def two_concurrent(cd, name="default"):
    """Two next calls at the same moment, as the seed's d1 and d2; returns their answers in call order."""
    out = [None, None]
    go = threading.Barrier(2)

    def call(i):
        go.wait()
        out[i] = cd.next(name)

    ts = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out


def test_unsafe_reproduces_the_race(record_countd, counterd):
    rc = record_countd("--latency", "200ms")
    cd = counterd(rc.url, "--strategy", "unsafe")
    got = two_concurrent(cd)
    assert [r.status for r in got] == [200, 200]
    assert [r.json()["count"] for r in got] == [2, 2], "unsafe must hand the same number to both (the seed's bug)"
    assert sorted(server_records(rc, "test:default")) == [1, 2]
    assert server_client_stats(rc, "test:default")["max_in_flight"] == 2
    assert "unsafe" in cd.read_log() and "ON PURPOSE" in cd.read_log()


def test_locked_one_at_a_time(record_countd, counterd):
    rc = record_countd("--latency", "100ms")
    cd = counterd(rc.url, "--strategy", "locked", "--batch-max", "1")
    got = two_concurrent(cd)
    assert all(r.status == 200 for r in got), got
    assert sorted(r.json()["count"] for r in got) == [1, 2]
    assert server_records(rc, "test:default") == [1, 2]
    st = server_client_stats(rc, "test:default")
    assert st["max_in_flight"] == 1 and st["out_of_order"] == 0 and st["recorded"] == 2


def test_locked_default_batches(record_countd, counterd):
    rc = record_countd("--latency", "100ms")
    cd = counterd(rc.url)
    got = two_concurrent(cd, "seed")
    assert sorted(r.json()["count"] for r in got) == [1, 2]
    assert server_records(rc, "test:seed") == [1, 2]
    st = server_client_stats(rc, "test:seed")
    assert st["max_in_flight"] == 1 and st["out_of_order"] == 0


def test_stateless_overlaps_but_stays_unique(record_countd, counterd):
    rc = record_countd("--latency", "200ms")
    cd = counterd(rc.url, "--strategy", "stateless")
    got = two_concurrent(cd)
    assert sorted(r.json()["count"] for r in got) == [1, 2]
    assert sorted(server_records(rc, "test:default")) == [1, 2]
    assert server_client_stats(rc, "test:default")["max_in_flight"] == 2, "stateless records overlap"


@pytest.mark.parametrize("strategy", ["stateless", "unsafe"])
def test_batch_max_refused_without_locked(tmp_path, strategy):
    p = subprocess.run([harness.COUNTERD, "--strategy", strategy, "--batch-max", "8", "--socket",
                        str(tmp_path / "x.sock"), "--server", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert "--batch-max applies to --strategy locked only" in p.stderr
    assert not (tmp_path / "x.sock").exists()


def test_counters_are_independent(record_countd, counterd):
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    assert [cd.next("a").json()["count"] for _ in range(3)] == [1, 2, 3]
    assert cd.next("b").json() == {"counter": "b", "count": 1}
    assert cd.post("/next").json() == {"counter": "default", "count": 1}
    assert server_records(rc, "test:a") == [1, 2, 3]
    assert server_records(rc, "test:b") == [1]
    c = cd.get("/counters/a").json()
    assert c["counter"] == "a" and c["count"] == 3 and c["waiting"] == 0 and c["in_flight"] == 0
    names = [x["counter"] for x in cd.get("/counters").json()["counters"]]
    assert names == ["a", "b", "default"]
