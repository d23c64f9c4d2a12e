"""record-countd: the --db file as an operator meets it (paths), against the real binary, real files and real HTTP."""
import os
import shutil
import sqlite3
import subprocess
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