"""record-countd: the --db file as an operator meets it (a second daemon on it, paths, a file removed or replaced
while running, a read-only filesystem), against the real binary, real files and real HTTP."""
import os
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest

from harness import free_port, http_tcp
from test_server_helpers import RECORD_COUNTD

RC_APPLICATION_ID = 0x6C6B7374  # "lkst" in the database header: record-countd's


def run(args, cwd=None, timeout=10):
    """Run record-countd to completion on a free port, without RECORD_COUNTD_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECORD_COUNTD_") and k != "STATE_DIRECTORY"}
    return subprocess.run([RECORD_COUNTD, "--listen", "127.0.0.1:%d" % free_port(), "--latency", "0"] + list(args),
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def records(path):
    """Every (seq, client, value) in the database at path, read as any other program would."""
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT seq, client, value FROM records ORDER BY seq").fetchall()
    finally:
        con.close()


def wait_for(probe, timeout=5):
    """Poll probe() until it returns something true; that value, or None after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = probe()
        if v:
            return v
        time.sleep(0.05)
    return None


def test_second_daemon_on_the_same_database_is_refused(record_countd, tmp_path):
    # Two daemons on one file each answered: duplicates and seqs were right (one table), but each /stats and
    # /metrics counted only its own records, so /stats and /clients disagreed. The second is now refused at start,
    # by any path to the same file, and touches nothing.
    a = record_countd("--latency", "0")
    assert a.get("/record-count?client=c&value=5").status == 200
    os.symlink(a.db, str(tmp_path / "link.db"))
    os.link(a.db, str(tmp_path / "hard.db"))
    for path, cwd in ((a.db, None), ("records.db", str(tmp_path)), (str(tmp_path / "link.db"), None),
                      (str(tmp_path / "hard.db"), None)):
        out = run(["--db", path], cwd=cwd)
        assert out.returncode == 1, out
        assert ("--db %s: is in use by another process (pid %d; a record-countd serving it?): stop that one first"
                % (path, a.proc.pid)) in out.stderr, out.stderr
    # The first goes on, and its view agrees with the database.
    assert a.get("/record-count?client=c&value=6").json()["seq"] == 2
    assert a.get("/stats?client=c").json()["clients"]["c"]["last_value"] == 6
    assert a.get("/clients/c").json() == {"client": "c", "last_value": 6, "recorded": 2}
    a.stop()
    assert records(a.db) == [(1, "c", 5), (2, "c", 6)]


def test_lock_is_released_however_the_first_ends(record_countd):
    a = record_countd("--latency", "0")
    assert a.get("/record-count?client=c&value=1").status == 200
    a.kill()
    b = record_countd("--latency", "0", db=a.db)
    assert b.get("/record-count?client=c&value=1").json()["duplicate"] is True
    assert b.stop() == 0
    c = record_countd("--latency", "0", db=a.db)
    assert c.get("/clients/c").json()["recorded"] == 1


def test_restart_overlap_waits_for_the_old_one_to_drain(record_countd):
    # A new daemon started while the old one still answers requests in flight after SIGTERM (their commits are
    # still to come) is refused; once the old one exits, the new one starts and sees every record.
    a = record_countd("--latency", "1500ms")
    got = {}

    def slow():
        got["r"] = a.get("/record-count?client=d&value=9")

    t = threading.Thread(target=slow)
    t.start()
    assert wait_for(lambda: "in_flight\":1" in a.get("/stats").body.decode())
    a.signal(15)
    assert wait_for(lambda: "stopping" in a.read_log())
    out = run(["--db", a.db])
    assert out.returncode == 1 and "is in use by another process" in out.stderr, out.stderr
    t.join()
    assert got["r"].json()["seq"] == 1
    assert a.proc.wait(10) == 0
    b = record_countd("--latency", "0", db=a.db)
    assert b.get("/record-count?client=d&value=9").json() == {"value": 9, "client": "d", "seq": 1, "duplicate": True}


def test_two_started_at_once_on_a_new_file_one_serves(tmp_path):
    db = str(tmp_path / "new.db")
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([RECORD_COUNTD, "--listen", "127.0.0.1:%d" % p, "--latency", "0", "--db", db],
                              stderr=subprocess.PIPE, text=True) for p in ports]
    try:
        loser = wait_for(lambda: [p for p in procs if p.poll() is not None], timeout=10)
        assert loser and len(loser) == 1, [p.poll() for p in procs]
        assert loser[0].returncode == 1 and "is in use by another process" in loser[0].stderr.read()
        port = ports[1 - procs.index(loser[0])]
        assert wait_for(lambda: _status(port, "/healthz") == 200)
        assert _status(port, "/record-count?client=e&value=1") == 200
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
            p.stderr.close()
    assert records(db) == [(1, "e", 1)]


def _status(port, path):
    try:
        return http_tcp("127.0.0.1", port, "GET", path, timeout=5).status
    except OSError:
        return None


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_database_behind_a_symlink(record_countd, tmp_path, durability):
    # The WAL is next to the file SQLite opens, the link followed; record-countd looked for it next to the link,
    # and with --durability full (the default) refused to start: "link.db-wal: No such file or directory".
    (tmp_path / "disk").mkdir()
    os.symlink("disk/real.db", str(tmp_path / "link.db"))
    d = record_countd("--latency", "0", "--durability", durability, db=str(tmp_path / "link.db"))
    assert d.get("/record-count?client=s&value=1").status == 200
    assert os.path.exists(str(tmp_path / "disk" / "real.db-wal"))
    assert not os.path.exists(str(tmp_path / "link.db-wal"))
    d.kill()
    assert records(str(tmp_path / "disk" / "real.db")) == [(1, "s", 1)]


def test_relative_path_with_spaces(record_countd, tmp_path):
    (tmp_path / "my dir").mkdir()
    d = record_countd("--latency", "0", db="my dir/the records.db")
    assert d.get("/record-count?client=r&value=3").status == 200
    assert d.stop() == 0
    assert records(str(tmp_path / "my dir" / "the records.db")) == [(1, "r", 3)]
    d = record_countd("--latency", "0", db="./my dir/../my dir/the records.db")
    assert d.get("/clients/r").json()["last_value"] == 3


def test_empty_file_becomes_a_database(record_countd, tmp_path):
    # A 0-byte file (touch) is an empty SQLite database: taken and stamped as record-countd's.
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    d = record_countd("--latency", "0", db=str(path))
    assert d.get("/record-count?client=z&value=1").status == 200
    d.stop()
    con = sqlite3.connect(str(path))
    assert con.execute("PRAGMA application_id").fetchone()[0] == RC_APPLICATION_ID
    con.close()


def test_missing_directory_is_named(tmp_path):
    path = str(tmp_path / "no" / "such" / "r.db")
    out = run(["--db", path])
    assert out.returncode == 1
    assert "--db %s: unable to open database file (No such file or directory)" % path in out.stderr, out.stderr
    assert not os.path.exists(str(tmp_path / "no"))


def _swap_in_another_file(path):
    other = path + ".new"
    open(other, "wb").close()
    os.rename(other, path)


@pytest.mark.parametrize("what,change,message", [
    ("db", os.unlink, "the database %s was removed while record-countd ran"),
    ("db", _swap_in_another_file, "the database %s was replaced by another file while record-countd ran"),
    ("wal", os.unlink, "the database's WAL %s was removed while record-countd ran"),
], ids=["db-removed", "db-replaced", "wal-removed"])
def test_database_removed_or_replaced_while_running(record_countd, what, change, message):
    # The open file kept taking records after an `rm` (or a restore moved over it): acknowledged, and gone with
    # the old file at exit. Now, within a second or two, /healthz fails and records are refused unwritten.
    d = record_countd("--latency", "0")
    assert d.get("/record-count?client=w&value=1").status == 200
    path = d.db if what == "db" else d.db + "-wal"
    change(path)
    msg = message % path
    h = wait_for(lambda: (lambda r: r if r.status == 503 else None)(d.get("/healthz")), timeout=5)
    assert h is not None, d.read_log()
    assert h.json()["error"] == "storage_failed" and msg in h.json()["message"], h.json()
    r = d.get("/record-count?client=w&value=2")
    assert r.status == 503 and r.json()["error"] == "storage_error" and msg in r.json()["message"], r
    r = d.post("/record-count", {"client": "w", "values": [3, 4]})
    assert r.status == 503, r
    assert d.get("/records?client=w").json()["records"][0]["value"] == 1, "reads go on"
    assert d.read_log().count(msg) == 1 + 2, d.read_log()   # once from the check, once per failed commit
    assert d.stop() == 0


def test_database_check_costs_no_commits(record_countd):
    # The check is a timer on the loop: a database left alone is never reported, however long the daemon runs.
    d = record_countd("--latency", "0")
    for i in range(1, 4):
        assert d.get("/record-count?client=k&value=%d" % i).status == 200
        time.sleep(0.6)
    assert d.get("/healthz").status == 200
    assert "while record-countd ran" not in d.read_log()


def _can_bind_read_only():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro / /mnt"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_bind_read_only(), reason="needs root and mount namespaces (unshare -m)")
def test_read_only_filesystem_is_named(record_countd, tmp_path):
    d = record_countd("--latency", "0")
    assert d.get("/record-count?client=o&value=1").status == 200
    assert d.stop() == 0
    before = open(d.db, "rb").read()
    for path, message in ((d.db, "cannot be written: it is on a read-only filesystem (Read-only file system)"),
                          (str(tmp_path / "new.db"),
                           "cannot create it: directory %s is not writable (Read-only file system)" % tmp_path)):
        script = 'mount --bind -o ro "$1" "$1" && exec "$2" --listen 127.0.0.1:%d --latency 0 --db "$3"' % free_port()
        out = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(tmp_path), RECORD_COUNTD, path],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 1, out
        assert "--db %s: %s" % (path, message) in out.stderr, out.stderr
    assert open(d.db, "rb").read() == before


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to run as nobody")
def test_directory_without_room_for_the_wal_files_is_named():
    # The file may be written but its directory not: SQLite cannot create -wal and -shm, and said only "attempt to
    # write a readonly database".
    import pwd
    import tempfile
    d = tempfile.mkdtemp(prefix="rc-rodir-")
    try:
        os.chmod(d, 0o755)
        db = os.path.join(d, "r.db")
        open(db, "wb").close()
        os.chown(db, pwd.getpwnam("nobody").pw_uid, -1)
        out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", RECORD_COUNTD,
                              "--listen", "127.0.0.1:%d" % free_port(), "--latency", "0", "--db", db],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 1, out
        assert ("--db %s: cannot create its WAL files (-wal, -shm): directory %s is not writable (Permission denied)"
                % (db, d)) in out.stderr, out.stderr
        assert os.listdir(d) == ["r.db"] and os.path.getsize(db) == 0
    finally:
        shutil.rmtree(d)
