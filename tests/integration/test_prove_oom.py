"""record-countd, counterd and counterctl when memory runs out.

The daemons run under an LD_PRELOAD shim, tests/lib/failmalloc.c, that makes malloc and its kin fail: with a seeded
probability while a trigger file exists (start-up completes, then failures start under real load over real HTTP
into a real SQLite file), or every allocation after the first N (start-up at each point), or only those of at
least a size (one buffer's growth, whatever the order of the allocations around it). What users rely on:

- the daemon never crashes (no signal, a clean exit on SIGTERM) and never hangs (it answers /healthz once memory
  is back);
- every request gets an answer: 200, or a 5xx with a JSON error body naming the problem (never a 4xx: the request
  was fine); a connection closed unanswered only when libmicrohttpd's own allocation failed, which it logs;
- every record acknowledged with a 200 is in the database after a clean stop and after a restart; a POST answered
  with an error is stored whole or not at all; /stats agrees with the database, and a streamed /stats (above 4096
  clients) that runs out of memory once begun is cut short, its connection closed, never complete and wrong;
- counterd, whatever its strategy, hands out only numbers recorded at record-countd, each once (but for unsafe's
  documented race, see counterd(8));
- the daemon logs a line saying memory ran out;
- start-up with allocations failing ends with a clear error line and a non-zero exit, no crash (never serving a
  /stats that lacks clients of its database); so does counterctl.
"""
import http.client
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

import harness
from test_client_helpers import poll

SHIM = os.path.join(os.environ.get("TOP_BUILDDIR", "."), "tests", "lib", ".libs", "libfailmalloc.so")
SEED = 20261130
PPM = 30000                    # 3% of allocations fail while the trigger file exists
THREADS = 4
ROUNDS = 60                     # per thread; each round is a few requests
LOAD_CLIENTS = 3000              # clients in the database a start-up loads
START_PPM = 100                 # one allocation in 10000 fails: about every other start-up meets one
HANG_S = 10                     # an answer later than this is a hang (they take milliseconds)


def shim_env(**kw):
    """The environment that preloads the shim with FAILMALLOC_* settings from kw (see failmalloc.c)."""
    assert os.path.exists(SHIM), "the failmalloc shim is not built (%s)" % SHIM
    env = {"LD_PRELOAD": SHIM, "FAILMALLOC_SEED": str(SEED), "FAILMALLOC_SPARE": "",
           "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")}
    env.update({"FAILMALLOC_" + k.upper(): str(v) for k, v in kw.items()})
    return env


def real_binary(path):
    """The program itself, not libtool's wrapper script (whose shell the shim would starve first), and the
    environment it needs: a wrapper finds the libraries of the build tree through LD_LIBRARY_PATH."""
    with open(path, "rb") as f:
        if f.read(2) != b"#!":
            return path, {}
    real = os.path.join(os.path.dirname(path), ".libs", os.path.basename(path))
    top = os.environ.get("TOP_BUILDDIR", ".")
    return real, {"LD_LIBRARY_PATH": os.path.join(top, "common", ".libs")}


@pytest.fixture(autouse=True)
def unwrapped(monkeypatch):
    """The daemons and counterctl as real programs, so the shim sees their allocations only; the test is
    skipped, saying why, where the shim cannot take malloc's place."""
    for name in ("RECORD_COUNTD", "COUNTERD", "COUNTERCTL"):
        path, env = real_binary(getattr(harness, name))
        monkeypatch.setattr(harness, name, path)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        why = shim_unusable(path, env)
        if why:
            pytest.skip(why)


SHIM_PROBED = {}


def shim_unusable(path, env):
    """Why the shim does not see path's allocations, or None. A sanitizer's runtime (ASan, TSan) defines malloc
    in the program itself or ahead of LD_PRELOAD, so the shim's is never called: the program then runs its
    --version without the shim counting one allocation."""
    if path not in SHIM_PROBED:
        e = dict(os.environ)
        e.update(env)
        e.update(shim_env(ppm=0))
        p = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, env=e)
        got = injected(p.stderr)
        SHIM_PROBED[path] = None if got is not None and got[1] > 0 else (
            "the failmalloc shim cannot take malloc's place in %s (built with a sanitizer, whose runtime "
            "intercepts malloc ahead of LD_PRELOAD): the out-of-memory tests run in a build without "
            "--enable-sanitizers" % os.path.basename(path))
    return SHIM_PROBED[path]


def injected(log):
    """(failed, total) allocations the shim reported at exit, or None."""
    m = re.findall(r"^failmalloc: (\d+) of (\d+) allocations failed", log, re.M)
    return (int(m[-1][0]), int(m[-1][1])) if m else None


def crashed(code):
    """A signal, or a sanitizer's exit."""
    return code is None or code < 0 or code in (66, 134, 139)


def call(fn, *args, **kw):
    """One request; ("dropped", error) when the connection closed or reset unanswered. No answer within
    HANG_S fails the test: the daemon hung that request."""
    try:
        return fn(*args, timeout=HANG_S, **kw)
    except socket.timeout:
        raise AssertionError("no answer within %ds: %r %r" % (HANG_S, fn, args))
    except (ConnectionError, http.client.HTTPException) as e:
        return ("dropped", repr(e))


def healthy(d):
    r = call(d.get, "/healthz")
    return not isinstance(r, tuple) and r.status == 200


def check_answer(r, what):
    """A 200, or a 5xx JSON error naming the problem; returns the parsed body (None: Prometheus text)."""
    assert r.status == 200 or 500 <= r.status < 600, "%s: %r" % (what, r)
    if r.status == 200 and r.headers.get("content-type", "").startswith("text/plain"):
        return None
    body = json.loads(r.body)
    if r.status != 200:
        assert isinstance(body.get("error"), str) and body["error"] and body.get("message"), "%s: %r" % (what, r)
    return body


def db_records(path):
    """{(client, value): seq} in the database file, read with sqlite3; and its integrity_check."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        ok = [r[0] for r in db.execute("PRAGMA integrity_check")]
        rows = db.execute("SELECT client, value, seq FROM records").fetchall()
    finally:
        db.close()
    assert ok == ["ok"], ok
    return {(c, v): s for c, v, s in rows}


def post_in_parts(d, path, body, parts=3, timeout=HANG_S):
    """A POST whose body arrives in parts, a moment apart (each part is one more read, the body grows)."""
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        step = len(body) // parts + 1
        for i in range(0, len(body), step):
            conn.send(body[i:i + step])
            time.sleep(0.002)
        r = conn.getresponse()
        return harness.Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def record_load(d, tid, out):
    """One thread's load on record-countd: GET and POST records, reads, stats; every outcome into out."""
    rnd = random.Random(SEED + tid)
    client = "oom%d" % tid
    value = 0
    for i in range(ROUNDS):
        value += 1
        r = call(d.get, "/record-count?value=%d&client=%s" % (value, client))
        out.append(("get", client, [value], r))
        vals = [value + k for k in range(1, rnd.randint(2, 6))]
        value = vals[-1]
        if i % 4 == 3:
            # Padded, in parts: the body is read in several steps, each may need more memory.
            body = ('{"client": "%s", %s"values": %s}' % (client, " " * 3000, json.dumps(vals))).encode()
            r = call(post_in_parts, d, "/record-count", body)
        else:
            r = call(d.post, "/record-count", {"client": client, "values": vals})
        out.append(("post", client, vals, r))
        path = rnd.choice(["/stats", "/stats?client=%s" % client, "/records?client=%s&limit=50" % client,
                           "/records?limit=20", "/clients/%s" % client, "/metrics", "/healthz"])
        out.append(("read", path, [], call(d.get, path)))


def run_threads(target, *args):
    """target(*args, i, out) on THREADS threads at once; their outcomes. A thread's exception fails the test."""
    outs = [[] for _ in range(THREADS)]
    failures = []

    def run(i):
        try:
            target(*args + (i, outs[i]))
        except BaseException as e:      # noqa: B902 (reported below, on the test's thread)
            failures.append(e)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
        assert not t.is_alive(), "a request hung"
    if failures:
        raise failures[0]
    return [o for out in outs for o in out]


@pytest.mark.parametrize("spare", ["libmicrohttpd", ""], ids=["ours", "with-libmicrohttpd"])
def test_record_countd_under_oom_load(record_countd, tmp_path, spare):
    """Real load with 3% of allocations failing. "ours": libmicrohttpd's own allocations are spared (when one of
    them fails it may close the connection, and logs "Error allocating memory"): then every request is answered.
    "with-libmicrohttpd": every allocation may fail; connections may close, nothing else changes."""
    trigger = str(tmp_path / "fail-now")
    # A latency, so that each record request has a timer to allocate too.
    d = record_countd("--latency", "2ms", "--jitter", "1ms",
                      env=shim_env(file=trigger, ppm=PPM, spare=spare))
    open(trigger, "w").close()
    try:
        outcomes = run_threads(record_load, d)
    finally:
        os.unlink(trigger)
    # Memory is back: the daemon answers again (it did not hang or die).
    poll(lambda: d.proc.poll() is not None or healthy(d), timeout=10,
         what="/healthz 200 once allocations succeed again")
    assert d.proc.poll() is None, "record-countd exited under memory pressure:\n" + d.read_log()[-3000:]

    acked, failed_posts, dropped, errors = {}, [], [], 0
    for kind, who, vals, r in outcomes:
        if isinstance(r, tuple):
            dropped.append((kind, who, r[1]))
            continue
        body = check_answer(r, "%s %s %s" % (kind, who, vals))
        if r.status != 200:
            errors += 1
            if kind == "post":
                failed_posts.append((who, vals))
            continue
        if kind == "get":
            assert body["value"] == vals[0] and body["client"] == who, body
            acked[(who, vals[0])] = body["seq"]
        elif kind == "post":
            assert [x["value"] for x in body["records"]] == vals, body
            for x in body["records"]:
                acked[(who, x["value"])] = x["seq"]
    log = d.read_log()
    if spare:
        assert not dropped, "connections closed unanswered: %r\n%s" % (dropped[:5], log[-3000:])
    assert errors > 0, "no request met a failed allocation: the test proves nothing"
    assert acked, "no request succeeded"
    assert re.search(r"^record-countd: .*out of memory", log, re.M), "no log line says memory ran out:\n" + log[-3000:]

    # /stats agrees with the database it serves (read through the daemon, then the file).
    stats = d.get("/stats").json()
    code = d.stop()
    assert code == 0, "record-countd did not stop cleanly (%r):\n%s" % (code, d.read_log()[-3000:])
    n_failed, _ = injected(d.read_log()) or (0, 0)
    assert n_failed > 0, "the shim failed no allocation"
    rows = db_records(d.db)
    lost = {k: s for k, s in acked.items() if rows.get(k) != s}
    assert not lost, "acknowledged records missing or with another seq: %r" % list(lost.items())[:10]
    for who, vals in failed_posts:
        stored = [v for v in vals if (who, v) in rows]
        assert stored in ([], vals), "POST %s %r answered an error but half stored: %r" % (who, vals, stored)
    assert stats["recorded"] == len(rows), (stats["recorded"], len(rows))
    for t in range(THREADS):
        c = "oom%d" % t
        mine = [v for (cl, v) in rows if cl == c]
        assert stats["clients"][c]["recorded"] == len(mine), (c, stats["clients"][c], len(mine))
        assert stats["clients"][c]["last_value"] == max(mine), (c, stats["clients"][c], max(mine))
    # After a restart (no failures): the same records, the same summaries.
    d.env = None
    d.start()
    assert d.get("/stats").json()["recorded"] == len(rows)
    for t in range(THREADS):
        c = "oom%d" % t
        r = d.get("/clients/%s" % c).json()
        assert r["recorded"] == len([1 for (cl, v) in rows if cl == c]), r
    assert d.stop() == 0
    assert db_records(d.db) == rows


def counter_load(cd, tid, out):
    for i in range(ROUNDS):
        name = "c%d" % (tid // 2)      # two threads per counter: calls overlap
        out.append(("next", name, call(cd.post, "/counters/%s/next" % name)))
        if i % 5 == 0:
            out.append(("read", name, call(cd.get, random.Random(SEED + i).choice(
                ["/counters", "/counters/%s" % name, "/stats", "/metrics", "/healthz"]))))


@pytest.mark.parametrize("strategy", ["locked", "stateless", "unsafe"])
def test_counterd_under_oom_load(record_countd, counterd, tmp_path, strategy):
    """Each strategy under real load (two threads per counter) with 3% of allocations failing: every call
    answered (200 or a 5xx JSON error), within HANG_S, no crash; every number handed out is recorded at
    record-countd and handed out once. unsafe keeps its documented bug (counterd(8)): duplicates, and a number
    read after the call's own record that another call reserved and failed to record."""
    rc = record_countd("--latency", "0")
    trigger = str(tmp_path / "fail-now")
    cd = counterd(rc.url, "--strategy", strategy, env=shim_env(file=trigger, ppm=PPM))
    open(trigger, "w").close()
    try:
        outcomes = run_threads(counter_load, cd)
    finally:
        os.unlink(trigger)
    assert cd.proc.poll() is None, "counterd exited under memory pressure:\n" + cd.read_log()[-3000:]
    poll(lambda: cd.proc.poll() is not None or healthy(cd), timeout=10,
         what="counterd's /healthz 200 once allocations succeed again")
    acked, failed_calls, dropped, errors = {}, {}, [], 0
    for kind, name, r in outcomes:
        if isinstance(r, tuple):
            dropped.append((kind, name, r[1]))
            continue
        if r.status == 404 and kind == "read" and json.loads(r.body)["error"] == "not_found":
            continue            # a counter whose last value could not be read yet: documented
        body = check_answer(r, "%s %s" % (kind, name))
        if r.status != 200:
            errors += 1
            # Memory counterd lacked is its own trouble, not record-countd's (never 502 bad_gateway).
            assert "out of memory" not in body["message"] or (r.status, body["error"]) == (503, "out_of_memory"), \
                "%s %s: %r" % (kind, name, r)
            if kind == "next":
                failed_calls[name] = failed_calls.get(name, 0) + 1
        elif kind == "next":
            assert "count" in body, "%s %s: %r" % (kind, name, r)
            acked.setdefault(name, []).append(body["count"])
    log = cd.read_log()
    assert not dropped, "connections closed unanswered: %r\n%s" % (dropped[:5], log[-3000:])
    assert errors > 0, "no request met a failed allocation: the test proves nothing"
    assert re.search(r"out of memory", log), "no log line says memory ran out:\n" + log[-3000:]
    # Every number counterd answered is recorded, each once.
    assert cd.stop() == 0, "counterd did not stop cleanly:\n" + cd.read_log()[-3000:]
    assert (injected(cd.read_log()) or (0, 0))[0] > 0
    assert rc.stop() == 0
    rows = db_records(rc.db)
    assert acked, "no call succeeded"
    for name, counts in acked.items():
        assert strategy == "unsafe" or len(set(counts)) == len(counts), "a number was handed out twice: %r" % counts
        missing = sorted(set(c for c in counts if ("test:%s" % name, c) not in rows))
        if strategy == "unsafe":
            # The count it reads after its record may be another call's, still recording; if that record then
            # fails, the number was handed out and never recorded (counterd(8)): one such per failed call at most.
            assert len(missing) <= failed_calls.get(name, 0), \
                "numbers of %s handed out, not recorded, and more than the calls that failed (%d): %r" % (
                    name, failed_calls.get(name, 0), missing)
        else:
            assert not missing, "acknowledged numbers of %s not recorded: %r" % (name, missing)


def startup_allocations(make):
    """How many allocations a daemon makes from exec until ready and stopped (the shim counts, fails none)."""
    d = make(ppm=0)
    d.start()
    assert d.stop() == 0
    got = injected(d.read_log())
    assert got is not None and got[0] == 0, d.read_log()
    return got[1]


def start_out_of_memory(make, name):
    """At points all through start-up, every allocation fails from there: a clear line, exit 1, no crash."""
    total = startup_allocations(make)
    rnd = random.Random(SEED)
    failed = 0
    for after in sorted(rnd.sample(range(0, total), min(total, 30))):
        d = make(after=after)
        try:
            d.start()
        except RuntimeError:
            pass
        code = d.proc.wait(20) if d.proc.poll() is not None else d.stop()
        log = d.read_log()
        assert not crashed(code), "start-up with allocations failing after %d: exit %r\n%s" % (after, code, log)
        assert harness.sanitizer_report(log) is None, log
        if code == 0:
            continue
        failed += 1
        assert code == 1, (after, code, log)
        lines = [l for l in log.splitlines() if l.startswith(name + ": ")]
        assert lines, "no error line (after %d):\n%s" % (after, log)
        assert re.search(r"memory|cannot", lines[-1], re.I), (after, lines[-1])
    assert failed > 0


def test_record_countd_start_out_of_memory(record_countd, tmp_path):
    """Start-up loads the clients of an existing database too: each run starts on a copy of one."""
    seed = record_countd("--latency", "0", db=str(tmp_path / "seed.db"))
    for i in range(20):
        assert seed.get("/record-count?value=%d&client=c%d" % (i + 1, i % 7)).status == 200
    assert seed.stop() == 0
    # Many more clients, written straight into the file: loading them is a good part of a start-up's allocations.
    db = sqlite3.connect(seed.db)
    with db:
        db.executemany("INSERT INTO records (client, value, at) VALUES (?, ?, 0)",
                       [("m%d" % i, i + 1) for i in range(LOAD_CLIENTS)])
    db.close()
    n = [0]

    def make(**kw):
        n[0] += 1
        db = str(tmp_path / ("s%d.db" % n[0]))
        shutil.copyfile(seed.db, db)
        return harness.RecordCountd(str(tmp_path), ["--latency", "0"], db=db, env=shim_env(**kw))
    start_out_of_memory(make, "record-countd")

    # Some allocations failing all through start-up, none after: one that starts has every client's summary.
    trigger = str(tmp_path / "fail-now")
    started = 0
    for k in range(1, 16):
        open(trigger, "w").close()
        d = make(file=trigger, ppm=START_PPM, seed=k)
        try:
            d.start()
        except RuntimeError:
            pass
        finally:
            os.unlink(trigger)
        if d.proc.poll() is not None:
            code, log = d.proc.wait(), d.read_log()
            assert code == 1 and re.search(r"^record-countd: .*(memory|cannot)", log, re.M), (k, code, log)
            continue
        started += 1
        poll(lambda: healthy(d), what="/healthz 200 once allocations succeed again")
        stats = d.get("/stats").json()
        assert d.stop() == 0
        assert stats["recorded"] == 20 + LOAD_CLIENTS and len(stats["clients"]) == 7 + LOAD_CLIENTS, \
            (k, stats["recorded"], len(stats["clients"]), d.read_log())
    assert started > 0


def test_counterd_start_out_of_memory(record_countd, tmp_path):
    rc = record_countd("--latency", "0")

    def make(**kw):
        return harness.Counterd(str(tmp_path), rc.url, [], env=shim_env(**kw))
    start_out_of_memory(make, "counterd")


def test_counterctl_out_of_memory(record_countd, counterd, tmp_path):
    """counterctl with every allocation failing after N: a message naming the problem and a non-zero exit."""
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    base = [harness.COUNTERCTL, "--socket", cd.socket]
    ok = subprocess.run(base + ["next", "x"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok
    rnd = random.Random(SEED)
    failed = 0
    for after in sorted(rnd.sample(range(0, 600), 25)):
        e = dict(os.environ)
        e.update(shim_env(after=after))
        p = subprocess.run(base + ["next", "x"], capture_output=True, text=True, timeout=30, env=e)
        assert not crashed(p.returncode), "counterctl crashed (after %d): %r" % (after, p)
        if p.returncode == 0:
            continue
        failed += 1
        err = [l for l in p.stderr.splitlines() if not l.startswith("failmalloc:")]
        assert err and re.search(r"counterctl: .*(memory|cannot)", err[-1], re.I), (after, p.stderr)
    assert failed > 0


STREAM_CLIENTS = 5000           # above api.c's API_STATS_WHOLE (4096): /stats is streamed
LONG_ID = "z" * 40000           # an entry longer than a streamed piece: its buffer grows
GROW_FAIL = 32768               # FAILMALLOC_MIN_SIZE: that growth fails, the small allocations around it do not


def many_clients_db(record_countd, path, n):
    """A database of n clients, the last (in key order, the order /stats lists them) with LONG_ID, written by
    other means as such ids are; {client: value} it holds."""
    seed = record_countd("--latency", "0", db=path)
    assert seed.get("/record-count?value=1&client=a").status == 200
    assert seed.stop() == 0
    clients = {"m%05d" % i: i + 1 for i in range(n)}
    clients[LONG_ID] = 7
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO records (client, value, at) VALUES (?, ?, 0)", list(clients.items()))
    db.close()
    clients["a"] = 1
    return clients


def stats_agree(stats, clients):
    """/stats lists every client of the database, with its last value."""
    assert stats["recorded"] == len(clients), (stats["recorded"], len(clients))
    assert {c: s["last_value"] for c, s in stats["clients"].items()} == clients


def get_raw(d, path):
    """GET path: (status, headers, the body as far as it came, whether it came whole)."""
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=HANG_S)
    got, whole = b"", False
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        try:
            while True:
                piece = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
                if not piece:
                    break
                got += piece
            whole = True
        except (http.client.IncompleteRead, ConnectionError) as e:
            got += getattr(e, "partial", b"") or b""
        return r.status, {k.lower(): v for k, v in r.getheaders()}, got, whole
    except socket.timeout:
        raise AssertionError("no answer within %ds: GET %s" % (HANG_S, path))
    finally:
        conn.close()


@pytest.mark.parametrize("n", [100, STREAM_CLIENTS], ids=["whole", "streamed"])
def test_record_countd_stats_out_of_memory(record_countd, tmp_path, n):
    """/stats when its buffer cannot grow (every allocation of GROW_FAIL bytes or more fails while the trigger
    file exists; libmicrohttpd's own are spared). Built whole (up to 4096 clients): a 503 with a JSON error.
    Streamed (above): the answer has begun (200, chunked) when memory runs out, so the connection is closed
    and the client sees a cut answer, never a complete wrong one. Either way the daemon logs it, goes on, and
    once memory is back its /stats is whole and agrees with the database."""
    clients = many_clients_db(record_countd, str(tmp_path / "many.db"), n)
    trigger = str(tmp_path / "fail-now")
    d = record_countd("--latency", "0", db=str(tmp_path / "many.db"),
                      env=shim_env(file=trigger, min_size=GROW_FAIL, spare="libmicrohttpd"))
    stats_agree(d.get("/stats").json(), clients)
    open(trigger, "w").close()
    time.sleep(0.05)                    # the shim looks at the trigger every 2 ms
    try:
        status, headers, body, whole = get_raw(d, "/stats")
        healthz = call(d.get, "/healthz")
    finally:
        os.unlink(trigger)
    time.sleep(0.05)
    if n <= 4096:
        assert whole and status == 503, (status, body[:300])
        r = harness.Response(status, headers, body)
        assert check_answer(r, "/stats")["error"], body
    else:
        assert status == 200 and headers.get("transfer-encoding") == "chunked", (status, headers)
        assert not whole, "a /stats cut short by memory running out ended as if complete (%d bytes)" % len(body)
        assert len(body) > 16384, "cut before its first pieces (%d bytes): not mid-way" % len(body)
    assert not isinstance(healthz, tuple) and healthz.status == 200, healthz
    log = d.read_log()
    said = (r"^record-countd: out of memory building an answer: answered 503 out_of_memory$" if n <= 4096 else
            r"^record-countd: out of memory writing a streamed answer: its connection closed, the answer cut short$")
    assert re.search(said, log, re.M), "no log line says memory ran out as it did:\n" + log[-3000:]
    # Memory is back: the same daemon answers /stats whole, as the database has it.
    assert d.proc.poll() is None, "record-countd exited:\n" + log[-3000:]
    stats_agree(d.get("/stats").json(), clients)
    assert d.stop() == 0
    assert (injected(d.read_log()) or (0, 0))[0] > 0, "the shim failed no allocation"


def test_record_countd_load_out_of_memory(record_countd, tmp_path):
    """A client's summary that cannot be stored while start-up loads them (its table outgrows GROW_FAIL; the
    SQLite library's own allocations are spared, so the scan itself goes on): exit 1 with a line saying so,
    never a daemon whose /stats lacks clients of its database."""
    many_clients_db(record_countd, str(tmp_path / "many.db"), STREAM_CLIENTS)
    d = harness.RecordCountd(str(tmp_path), ["--latency", "0"], db=str(tmp_path / "many.db"),
                             env=shim_env(min_size=GROW_FAIL, spare="libsqlite3"))
    try:
        d.start()
    except RuntimeError:
        pass
    code = d.proc.wait(20) if d.proc.poll() is not None else d.stop()
    log = d.read_log()
    assert code == 1, "start-up with client summaries out of memory: exit %r\n%s" % (code, log[-3000:])
    assert re.search(r"^record-countd: out of memory loading the summaries of \d+ clients$", log, re.M), log[-3000:]
