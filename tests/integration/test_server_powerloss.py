"""record-countd across a power cut: with --durability full, every record it acknowledged is on disk.

A kill -9 cannot show a missing or misordered sync: the page cache outlives the process. So record-countd runs under
an LD_PRELOAD shim, powercut.c, that keeps beside each database file what a power cut at that instant would leave on
disk (what returned syncs made durable, nothing written since). The tests kill record-countd at a random moment of a
busy workload and open those contents as SQLite would after a reboot. The controls run the same oracle against
--durability normal, which acknowledges before any sync, and must see records lost.
"""
import http.client
import json
import os
import random
import re
import shutil
import sqlite3
import threading
import time

import pytest

from test_server_helpers import wait_exit

POWERCUT_LIB = os.environ.get("POWERCUT_LIB", "")
CHECKPOINT_WITHIN = 30      # seconds of workload in which a checkpoint must happen
SYNC_DELAY_US = 3000        # each sync as slow as a disk's, so a cut often lands while one runs


def start_under_powercut(record_countd, tmp_path, durability):
    """Start record-countd on a fresh database under the shim; returns it and the shim's shadow directory."""
    assert os.path.exists(POWERCUT_LIB), "the power-cut shim is not built (POWERCUT_LIB=%r)" % POWERCUT_LIB
    data = os.path.realpath(str(tmp_path / "data"))
    shadow = os.path.realpath(str(tmp_path / "shadow"))
    os.mkdir(data)
    os.mkdir(shadow)
    # The shim is built without sanitizers and preloaded in front of the ASan runtime, as the fault tests' is.
    asan = (os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    cut = os.path.join(os.path.realpath(str(tmp_path)), "cut-now")
    d = record_countd("--latency", "0", "--durability", durability, db=os.path.join(data, "records.db"),
                      env={"LD_PRELOAD": POWERCUT_LIB, "POWERCUT_DIR": data, "POWERCUT_SHADOW": shadow,
                           "POWERCUT_SYNC_DELAY_US": str(SYNC_DELAY_US), "POWERCUT_CUT_FILE": cut,
                           "ASAN_OPTIONS": asan})
    d.cut_file = cut
    return d, shadow


def shim_log(shadow):
    """The shim's log: what each sync made durable."""
    with open(os.path.join(shadow, "powercut.log")) as f:
        return f.read()


def checkpoints(shadow):
    """Syncs of the database file that made something durable since the WAL was created: checkpoints."""
    log = shim_log(shadow)
    after = log.partition("create records.db-wal ")[2]
    return len(re.findall(r"^sync records\.db [1-9]\d* durable", after, re.M))


def durable_state(shadow, into):
    """What a reboot finds: the durable database and WAL (no -shm) opened with SQLite in a fresh directory.

    Returns (integrity_check's answer, {(client, value): seq}); (None, {}) when the database has no durable name.
    """
    os.mkdir(into)
    for name in ("records.db", "records.db-wal"):
        if os.path.exists(os.path.join(shadow, name)):
            shutil.copyfile(os.path.join(shadow, name), os.path.join(into, name))
    if not os.path.exists(os.path.join(into, "records.db")):
        return None, {}
    db = sqlite3.connect(os.path.join(into, "records.db"), isolation_level=None)
    try:
        integrity = [r[0] for r in db.execute("PRAGMA integrity_check")]
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = db.execute("SELECT client, value, seq FROM records").fetchall() if "records" in tables else []
    finally:
        db.close()
    found = {(c, v): s for c, v, s in rows}
    assert len(set(found.values())) == len(rows), "a seq appears twice in the durable database"
    return integrity, found


class Workload:
    """Client threads recording on keep-alive connections (GETs of one value, POSTs of batches, retries of values
    already acknowledged) and one reading /records and /clients; every record acknowledged is remembered."""

    def __init__(self, d, seed, clients=4):
        self.d = d
        self.port = d.port
        self.acked = {}             # (client, value) -> seq, as acknowledged
        self.problems = []          # answers that are wrong before the cut
        self.lock = threading.Lock()
        self.cut = threading.Event()    # the power is being cut: errors are expected
        self.stop = threading.Event()
        self.armed = threading.Event()  # the next acknowledgement cuts the power
        self.threads = [threading.Thread(target=self.record, args=("pc%d" % i, random.Random(seed * 1000 + i)))
                        for i in range(clients)]
        self.threads.append(threading.Thread(target=self.read, args=(clients,)))

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "a client thread is stuck after the cut"

    def problem(self, what):
        if not self.cut.is_set():
            with self.lock:
                self.problems.append(what)

    def ack(self, client, value, seq):
        with self.lock:
            old = self.acked.setdefault((client, value), seq)
        if old != seq:
            self.problem("%s value %d acknowledged as seq %d, then %d" % (client, value, old, seq))

    def record(self, client, rng):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        v = 1
        mine = []
        try:
            while not self.stop.is_set():
                if mine and rng.random() < 0.1:
                    values, retry = [rng.choice(mine)], True
                    conn.request("GET", "/record-count?value=%d&client=%s" % (values[0], client))
                elif rng.random() < 0.3:
                    values, retry = [v], False
                    conn.request("GET", "/record-count?value=%d&client=%s" % (v, client))
                else:
                    values, retry = list(range(v, v + rng.randint(2, 60))), False
                    conn.request("POST", "/record-count", json.dumps({"client": client, "values": values}),
                                 {"Content-Type": "application/json"})
                r = conn.getresponse()
                body = r.read()
                if not retry:
                    v = values[-1] + 1
                if r.status != 200:
                    self.problem("%s: %d %r" % (client, r.status, body[:200]))
                    continue
                doc = json.loads(body)
                recs = doc["records"] if "records" in doc else [doc]
                if [rec["value"] for rec in recs] != values:
                    self.problem("%s: answered %r for %r" % (client, body[:200], values))
                    continue
                for value, rec in zip(values, recs):
                    self.ack(client, value, rec["seq"])
                    if rec["duplicate"] != retry:
                        self.problem("%s value %d: duplicate is %r" % (client, value, rec["duplicate"]))
                if not retry:
                    mine.extend(values)
                if self.armed.is_set():
                    self.cut_power()
        except (OSError, http.client.HTTPException) as e:
            self.problem("%s: %r" % (client, e))
        except Exception as e:     # a bug of the test's or a bad answer, cut or not
            with self.lock:
                self.problems.append("%s: %r" % (client, e))
        finally:
            conn.close()

    def cut_power(self):
        """Kill record-countd now."""
        self.cut.set()
        self.d.proc.kill()

    def read(self, clients):
        """Reads hold snapshots, so some checkpoints copy only part of the WAL."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = 0
        try:
            while not self.stop.is_set():
                client = "pc%d" % (i % clients)
                conn.request("GET", "/records?client=%s&limit=500" % client if i % 2 else "/clients/%s" % client)
                r = conn.getresponse()
                r.read()
                if r.status not in (200, 404):
                    self.problem("read %s: %d" % (client, r.status))
                i += 1
        except (OSError, http.client.HTTPException) as e:
            self.problem("reader: %r" % e)
        finally:
            conn.close()


def cut_power(record_countd, tmp_path, durability, seed):
    """Run the workload until a checkpoint has passed, then a random while longer, and kill -9 record-countd: at
    once, right after the next acknowledgement, or (the shim does it) in the middle of the next sync, by seed.

    Returns (workload, integrity_check's answer, durable records, shadow directory).
    """
    rng = random.Random(seed)
    d, shadow = start_under_powercut(record_countd, tmp_path, durability)
    w = Workload(d, seed)
    w.start()
    try:
        deadline = time.monotonic() + CHECKPOINT_WITHIN
        while checkpoints(shadow) == 0 and time.monotonic() < deadline and not w.problems:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 1.5))
        if seed % 3 == 1:
            w.armed.set()
            w.cut.wait(10)
        elif seed % 3 == 2:
            w.cut.set()
            open(d.cut_file, "w").close()
            wait_exit(d.proc, 10)   # without syncs (--durability normal) the next may be a while
    finally:
        w.cut_power()
        d.kill()
        w.stop.set()
        w.join()
    assert not w.problems, w.problems[:10]
    assert checkpoints(shadow) > 0, "no checkpoint in %ds of workload" % CHECKPOINT_WITHIN
    integrity, durable = durable_state(shadow, str(tmp_path / "reboot"))
    return w, integrity, durable, shadow


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_acknowledged_records_survive_a_power_cut(record_countd, tmp_path, seed):
    """With --durability full, a power cut at any moment keeps every acknowledged record, with its seq, in a
    database that passes integrity_check; a checkpoint (WAL copied into the database, then restarted) is always
    among what happened before the cut."""
    w, integrity, durable, shadow = cut_power(record_countd, tmp_path, "full", seed)
    assert len(w.acked) > 100, "too little was acknowledged to test anything: %d" % len(w.acked)
    assert integrity == ["ok"], integrity
    seqs = {}
    for key, seq in w.acked.items():
        assert seqs.setdefault(seq, key) == key, "seq %d acknowledged for %r and %r" % (seq, seqs[seq], key)
    lost = sorted((seq, c, v) for (c, v), seq in w.acked.items() if durable.get((c, v)) != seq)
    assert not lost, "%d of %d acknowledged records lost or moved by the power cut, first (seq, client, value): " \
        "%r; durable has %r; the shim's log ends:\n%s" % (
            len(lost), len(w.acked), lost[:5], [durable.get((c, v)) for _, c, v in lost[:5]],
            "\n".join(shim_log(shadow).splitlines()[-40:]))


def test_acknowledged_records_survive_a_power_cut_before_any_checkpoint(record_countd, tmp_path):
    """Before the first checkpoint every record is in the WAL alone, a file created at startup: a power cut then
    keeps every acknowledged record too, so the WAL's name must be durable (SQLite syncs the directory when it
    creates the WAL, and record-countd once more at startup) and its frames synced."""
    d, shadow = start_under_powercut(record_countd, tmp_path, "full")
    acked = {}
    for i in range(20):
        r = d.post("/record-count", {"client": "first", "values": list(range(5 * i + 1, 5 * i + 6))}).json()
        acked.update({("first", x["value"]): x["seq"] for x in r["records"]})
    d.kill()
    assert checkpoints(shadow) == 0
    integrity, durable = durable_state(shadow, str(tmp_path / "reboot"))
    assert integrity == ["ok"], integrity
    lost = sorted(seq for k, seq in acked.items() if durable.get(k) != seq)
    assert not lost, "acknowledged records lost: seqs %r; the shim's log ends:\n%s" % (
        lost[:10], "\n".join(shim_log(shadow).splitlines()[-20:]))


def test_power_cut_loses_records_acknowledged_without_durability_full(record_countd, tmp_path):
    """The control: the same workload and oracle with --durability normal (acknowledged before any sync) must find
    acknowledged records missing after the cut, or the test above could not fail."""
    lost = 0
    for seed in (11, 12, 13):
        (tmp_path / str(seed)).mkdir()
        w, integrity, durable, _ = cut_power(record_countd, tmp_path / str(seed), "normal", seed)
        assert integrity == ["ok"], integrity
        lost = sum(1 for k, seq in w.acked.items() if durable.get(k) != seq)
        if lost:
            break
    assert lost > 0, "the oracle saw no acknowledged record lost without syncs"


def test_unsynced_records_are_lost_and_checkpointed_ones_kept(record_countd, tmp_path):
    """The control made deterministic, with --durability normal: records acknowledged before a checkpoint (which
    syncs the WAL, then the database) are durable; a burst acknowledged after it, too small for another checkpoint,
    is lost entirely."""
    d, shadow = start_under_powercut(record_countd, tmp_path, "normal")
    early, late = {}, {}
    v = 1
    for attempt in range(200):
        for _ in range(10):
            r = d.post("/record-count", {"client": "early", "values": list(range(v, v + 40))}).json()
            early.update({("early", x["value"]): x["seq"] for x in r["records"]})
            v += 40
        probe = str(tmp_path / "probe")
        _, durable = durable_state(shadow, probe)
        shutil.rmtree(probe)
        if all(durable.get(k) == seq for k, seq in early.items()):
            break
    else:
        pytest.fail("no checkpoint made the early records durable")
    for i in range(20):
        r = d.post("/record-count", {"client": "late", "values": list(range(5 * i + 1, 5 * i + 6))}).json()
        late.update({("late", x["value"]): x["seq"] for x in r["records"]})
    d.kill()
    integrity, durable = durable_state(shadow, str(tmp_path / "reboot"))
    assert integrity == ["ok"], integrity
    assert all(durable.get(k) == seq for k, seq in early.items()), "records durable before the cut are gone"
    kept = [k for k in late if k in durable]
    assert not kept, "records never synced survived the power cut: %r" % kept[:5]
