"""record-countd: how options and their environment variables are read and checked, and what the log and metrics say
about commits, against the real binary, real files and real HTTP."""
import os
import re
import sqlite3
import subprocess
import time

import pytest

from harness import free_port, http_tcp
from test_server_helpers import RECORD_COUNTD

ENV_VARS = ("RECORD_COUNTD_LISTEN", "RECORD_COUNTD_LATENCY", "RECORD_COUNTD_JITTER", "RECORD_COUNTD_MAX_LATENCY",
            "RECORD_COUNTD_DB", "RECORD_COUNTD_DURABILITY", "RECORD_COUNTD_MAX_CONNECTIONS",
            "RECORD_COUNTD_CONNECTION_TIMEOUT", "RECORD_COUNTD_ACCESS_LOG", "RECORD_COUNTD_LOG_LEVEL")


def run(args, env=None, timeout=10):
    """Run record-countd to completion with only the RECORD_COUNTD_* variables given in env."""
    e = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    e.update(env or {})
    return subprocess.run([RECORD_COUNTD] + list(args), capture_output=True, text=True, timeout=timeout, env=e)


def refused(out, message):
    """out is a usage error (exit 2) whose stderr says message."""
    assert out.returncode == 2, out
    assert message in out.stderr, out.stderr


def metric(text, name):
    """The value of an unlabelled metric in a Prometheus text document."""
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, (name, text)
    return int(m.group(1))


def test_listen_port_is_parsed_strictly(tmp_path):
    """Digits only, 0..65535, no sign, space or wrap-around; checked before anything is opened or created."""
    for port in ("4294986301", "4294967297", "4294967296", "65536", "99999999999999999999999", "+80", "-1", " 80",
                 "80 ", "8o", "0x50", ""):
        try:
            out = run(["--listen", "127.0.0.1:" + port, "--db", str(tmp_path / "x.db")], timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("record-countd served on --listen 127.0.0.1:%s instead of refusing it" % port)
        refused(out, 'record-countd: --listen: "127.0.0.1:%s" has no valid port (0..65535' % port)
        assert not (tmp_path / "x.db").exists()


def test_listen_port_does_not_wrap_around(tmp_path):
    """A free port plus 2^32 is refused, not served on that free port (the old atoi check wrapped around)."""
    spec = "127.0.0.1:%d" % (free_port() + 2 ** 32)
    try:
        out = run(["--listen", spec, "--db", str(tmp_path / "x.db"), "--latency", "0"], timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("record-countd served on --listen %s instead of refusing it" % spec)
    refused(out, 'record-countd: --listen: "%s" has no valid port' % spec)
    out = run(["--db", str(tmp_path / "x.db")], env={"RECORD_COUNTD_LISTEN": spec}, timeout=5)
    refused(out, 'record-countd: RECORD_COUNTD_LISTEN: "%s" has no valid port' % spec)


def test_listen_on_port_0_says_which_port(tmp_path):
    """--listen ADDR:0 takes any free port: the start-up line names it (it said ":0", so nobody could connect)."""
    e = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    p = subprocess.Popen([RECORD_COUNTD, "--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.db"), "--latency", "0"],
                         stderr=subprocess.PIPE, text=True, env=e)
    try:
        line = p.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+), ", line)
        assert m and m.group(1) != "0", line
        assert http_tcp("127.0.0.1", int(m.group(1)), "GET", "/healthz").status == 200
    finally:
        p.terminate()
        assert p.wait(10) == 0


def test_listen_ipv6_needs_brackets(tmp_path):
    """An IPv6 address is written in brackets: ::1:PORT is refused as not ADDR:PORT, not taken as host ::1."""
    spec = "::1:%d" % free_port()
    try:
        out = run(["--listen", spec, "--db", str(tmp_path / "x.db")], timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("record-countd served on --listen %s instead of refusing it" % spec)
    refused(out, 'record-countd: --listen: "%s" is not ADDR:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)' % spec)
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("opt", ["--version", "--help"])
def test_help_and_version_ignore_a_bad_environment(opt):
    env = {v: "bogus" for v in ENV_VARS}
    out = run([opt], env=env)
    assert out.returncode == 0, out
    assert out.stderr == ""
    assert out.stdout.startswith("record-countd (lockstep) " if opt == "--version" else "usage: record-countd")


def test_command_line_overrides_a_bad_environment(record_countd):
    """Every variable is bogus and every option is given: the variables are not even checked."""
    env = {v: "bogus" for v in ENV_VARS}
    d = record_countd("--latency", "0", "--jitter", "0", "--max-latency", "0", "--durability", "normal",
                      "--max-connections", "100", "--connection-timeout", "5s", "--access-log", "--log-level", "info",
                      env=env)
    t0 = time.monotonic()
    r = d.get("/record-count?value=1&client=cli")
    assert r.status == 200 and r.json()["seq"] == 1
    assert time.monotonic() - t0 < 1
    d.stop()
    assert os.path.exists(d.db)
    assert "access method=GET path=/record-count status=200 client=cli values=1" in d.read_log()


def test_command_line_overrides_one_bad_variable(record_countd):
    d = record_countd("--latency", "0", env={"RECORD_COUNTD_LATENCY": "bogus"})
    assert d.get("/record-count?value=1").status == 200


@pytest.mark.parametrize("value", ["0", "no", "false"])
def test_access_log_variable_turns_it_off(record_countd, value):
    """RECORD_COUNTD_ACCESS_LOG takes 0 (and no, false) as off: the server starts and logs no access line."""
    d = record_countd("--latency", "0", env={"RECORD_COUNTD_ACCESS_LOG": value})
    assert d.get("/record-count?value=1&client=quiet").status == 200
    d.stop()
    assert " access method=" not in d.read_log()
    d = record_countd("--latency", "0", env={"RECORD_COUNTD_ACCESS_LOG": "1"})
    assert d.get("/record-count?value=2&client=loud").status == 200
    d.stop()
    assert "access method=GET path=/record-count status=200 client=loud values=2" in d.read_log()


@pytest.mark.parametrize("args,env", [(["--log-level", "error"], {}), (["-v", "warn"], {}),
                                      ([], {"RECORD_COUNTD_LOG_LEVEL": "warn"})])
def test_log_level_above_info_hides_info_lines(record_countd, args, env):
    """--log-level error or warn (or its variable) leaves out the info lines: the start-up line and the access log."""
    d = record_countd("--latency", "0", "--access-log", *args, env=env)
    assert d.get("/record-count?value=1&client=lvl").status == 200
    d.stop()
    log = d.read_log()
    assert "listening on" not in log and " access method=" not in log, log
    d = record_countd("--latency", "0", "--access-log", "--log-level", "info")
    assert d.get("/record-count?value=2&client=lvl").status == 200
    d.stop()
    log = d.read_log()
    assert "listening on" in log and "access method=GET path=/record-count status=200 client=lvl" in log, log


def test_bad_variable_not_overridden_is_named(tmp_path):
    """Another option on the command line does not hide a bad variable of its own."""
    out = run(["--db", str(tmp_path / "x.db"), "--latency", "0"], env={"RECORD_COUNTD_MAX_CONNECTIONS": "0",
                                                                       "RECORD_COUNTD_LATENCY": "bogus"})
    refused(out, 'record-countd: RECORD_COUNTD_MAX_CONNECTIONS: "0" is not a number of connections')
    assert "RECORD_COUNTD_LATENCY" not in out.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("args,env,message", [
    (["--latency", "100ms", "--jitter", "500ms"], {},
     'record-countd: --jitter "500ms" is larger than --latency "100ms"; the jitter must be at most the latency'),
    (["--jitter", "500ms", "--latency", "100ms"], {},
     'record-countd: --jitter "500ms" is larger than --latency "100ms"'),
    (["--jitter", "101ms"], {}, 'record-countd: --jitter "101ms" is larger than --latency (default 100ms)'),
    (["--latency", "0", "--jitter", "1ms"], {}, 'record-countd: --jitter "1ms" is larger than --latency "0"'),
    (["--latency", "100ms"], {"RECORD_COUNTD_JITTER": "0.5s"},
     'record-countd: RECORD_COUNTD_JITTER "0.5s" is larger than --latency "100ms"'),
    (["--latency", "1s", "--max-latency", "10ms"], {},
     'record-countd: --max-latency "10ms" is smaller than --latency "1s"; the cap must be at least the latency'
     ' (or 0 for no cap)'),
    (["--max-latency", "99ms"], {}, 'record-countd: --max-latency "99ms" is smaller than --latency (default 100ms)'),
    (["--max-latency", "10ms"], {"RECORD_COUNTD_LATENCY": "1s"},
     'record-countd: --max-latency "10ms" is smaller than RECORD_COUNTD_LATENCY "1s"'),
])
def test_contradictory_latency_is_refused(args, env, message, tmp_path):
    out = run(["--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.db")] + args, env=env)
    refused(out, message)
    assert not (tmp_path / "x.db").exists()


def test_durations_stop_at_one_day(tmp_path):
    """Every duration option takes 86400s (1440m) and refuses a millisecond more, fractions included ("86400.5s"
    was once taken, since the fraction was added after the range check)."""
    for opt in ("--latency", "--jitter", "--max-latency", "--connection-timeout"):
        for over in ("86400001ms", "86400.001s", "86400.5s", "1440.01m", "1441m"):
            out = run(["--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.db"), opt, over])
            refused(out, 'record-countd: %s: "%s" is out of range (at most 86400s, one day)' % (opt, over))
    for ok in ("86400s", "1440m", "86400000ms", "86399.999s", "0.001s", "0.0s", "0"):
        out = run(["--latency", ok, "--help"])
        assert out.returncode == 0, (ok, out.stderr)
    # Below a millisecond is not 0, which means none, never or no cap for some options.
    for opt in ("--latency", "--max-latency", "--connection-timeout"):
        for under in ("0.5ms", "0.0004s", "0.00001m"):
            out = run(["--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.db"), opt, under])
            refused(out, 'record-countd: %s: "%s" is less than 1ms' % (opt, under))
    assert "at most 86400s" in run(["--help"]).stdout
    assert not (tmp_path / "x.db").exists()


def test_latency_bounds_that_agree_are_served(record_countd, tmp_path):
    """Jitter equal to the latency and a cap equal to it are fine; a long latency alone has no default cap."""
    d = record_countd("--latency", "100ms", "--jitter", "100ms", "--max-latency", "100ms")
    t0 = time.monotonic()
    assert d.get("/record-count?value=1").status == 200
    assert time.monotonic() - t0 < 0.1 + 0.5
    d2 = record_countd("--latency", "30s", db=str(tmp_path / "second.db"))   # one daemon per database
    assert d2.get("/healthz").status == 200
    d.stop()
    d2.stop()
    assert "latency 100ms jitter 100ms max-latency 100ms" in d.read_log()
    assert "latency 30000ms jitter 0ms max-latency 0ms (no cap)" in d2.read_log()


def test_connection_timeout_must_be_whole_seconds(record_countd, tmp_path):
    """libmicrohttpd counts whole seconds: anything else is refused, not rounded up; 0 is no timeout."""
    for value in ("100ms", "500ms", "1500ms", "1.5s", "0.1s", "999ms", "1001ms"):
        out = run(["--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.db"), "--connection-timeout", value])
        refused(out, 'record-countd: --connection-timeout: "%s" is not a whole number of seconds (libmicrohttpd'
                     ' counts whole seconds; use 1s or more, or 0 for none)' % value)
        out = run(["--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.db")],
                  env={"RECORD_COUNTD_CONNECTION_TIMEOUT": value})
        refused(out, 'record-countd: RECORD_COUNTD_CONNECTION_TIMEOUT: "%s" is not a whole number of seconds' % value)
        assert not (tmp_path / "x.db").exists()
    for value in ("0", "1s", "1000ms", "2m"):
        d = record_countd("--latency", "0", "--connection-timeout", value)
        assert d.get("/record-count?value=1").status == 200
        d.stop()


def test_failed_commit_logs_its_record_count(record_countd):
    """Another connection holds the write lock: BEGIN fails, the answer is 503, and the log counts the records."""
    d = record_countd("--latency", "0")
    assert d.get("/record-count?value=1&client=lk").status == 200
    holder = sqlite3.connect(d.db, isolation_level=None, timeout=10)
    try:
        holder.execute("BEGIN IMMEDIATE")
        r = d.get("/record-count?value=2&client=lk", timeout=30)
        assert r.status == 503, r
        assert r.json()["error"] == "storage_error"
        r = d.post("/record-count", {"client": "lk", "values": [3, 4, 1]}, timeout=30)
        assert r.status == 503, r
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
    assert d.get("/record-count?value=2&client=lk").json()["duplicate"] is False
    assert d.get("/clients/lk").json() == {"client": "lk", "last_value": 2, "recorded": 2}
    # The failed records are no records nor duplicates in /stats either: it agrees with /clients/ID.
    stats = d.get("/stats").json()
    assert stats["recorded"] == 2 and stats["duplicates"] == 0, stats
    assert stats["clients"]["lk"]["recorded"] == 2 and stats["clients"]["lk"]["last_value"] == 2, stats
    assert d.stop() == 0
    log = d.read_log()
    assert "commit of 1 record failed: database is locked" in log, log
    assert "commit of 3 records failed: database is locked" in log, log
    assert "commit of 0 records" not in log, log


def test_committed_records_metric_counts_new_records_only(record_countd):
    d = record_countd("--latency", "0")
    assert d.post("/record-count", {"client": "m", "values": list(range(1, 21))}).status == 200
    assert [x["duplicate"] for x in d.post("/record-count", {"client": "m", "values": [5, 6]}).json()["records"]] \
        == [True, True]
    assert d.get("/record-count?value=7&client=m").json()["duplicate"] is True
    assert d.get("/record-count?value=20&client=m").json()["duplicate"] is True
    stats = d.get("/stats").json()
    assert stats["recorded"] == 20 and stats["duplicates"] == 4
    text = d.get("/metrics").body.decode()
    assert metric(text, "record_countd_db_committed_records_total") == 20
    assert metric(text, "record_countd_records_total") == 20
    assert metric(text, "record_countd_duplicates_total") == 4
    # One request mixing a new value with duplicates of it and of an older one.
    assert [x["duplicate"] for x in d.post("/record-count", {"client": "m", "values": [21, 21, 1]}).json()["records"]] \
        == [False, True, True]
    text = d.get("/metrics").body.decode()
    assert metric(text, "record_countd_db_committed_records_total") == 21
    assert metric(text, "record_countd_duplicates_total") == 6
    assert "# HELP record_countd_db_committed_records_total New records written by group commits" in text


def test_db_that_is_not_sqlite_is_named(tmp_path):
    for i, content in enumerate((b"hi\n", b"this is a text file, not a database\n" * 20)):
        path = tmp_path / ("notes%d.txt" % i)
        path.write_bytes(content)
        out = run(["--listen", "127.0.0.1:0", "--db", str(path)])
        assert out.returncode == 1, out
        assert "--db %s: is not an SQLite database" % path in out.stderr, out.stderr
        assert "WAL" not in out.stderr and "shared memory" not in out.stderr, out.stderr
        assert path.read_bytes() == content


RC_APPLICATION_ID = 0x6C6B7374  # "lkst" in the database header: record-countd's


def db_header(path):
    """(application_id, user_version, journal_mode) of the SQLite file at path."""
    con = sqlite3.connect(path)
    try:
        return tuple(con.execute("PRAGMA %s" % p).fetchone()[0] for p in ("application_id", "user_version",
                                                                         "journal_mode"))
    finally:
        con.close()


def test_new_database_carries_record_countds_identity(record_countd):
    d = record_countd("--latency", "0")
    assert d.get("/record-count?value=1&client=i").status == 200
    d.stop()
    assert db_header(d.db) == (RC_APPLICATION_ID, 1, "wal")


@pytest.mark.parametrize("make,message", [
    (["CREATE TABLE users (id INTEGER, name TEXT)", "INSERT INTO users VALUES (1, 'ann')"],
     "holds tables of another program, not record-countd's records"),
    (["CREATE TABLE records (id INTEGER, note TEXT)"], "holds tables of another program"),
    (["PRAGMA application_id = 42", "CREATE TABLE t (x)"],
     "is the database of another program (application_id 0x0000002a)"),
    (["PRAGMA application_id = %d" % RC_APPLICATION_ID, "PRAGMA user_version = 2"],
     "was written by a newer record-countd (schema version 2; this one knows 1)"),
])
def test_database_of_another_program_is_refused_untouched(make, message, tmp_path):
    # --db naming another program's database (a typo, a wrong $STATE_DIRECTORY) was switched to WAL mode and given a
    # records table: it is refused before anything is written, and named.
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    for sql in make:
        con.execute(sql)
    con.commit()
    con.close()
    before = path.read_bytes()
    out = run(["--listen", "127.0.0.1:0", "--db", str(path)])
    assert out.returncode == 1, out
    assert "--db %s: %s" % (path, message) in out.stderr, out.stderr
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["other.db"], "no -wal or -shm file"


def test_database_of_an_older_record_countd_is_taken_and_stamped(record_countd, tmp_path):
    # Databases written before the identity was stamped (our records table, no application_id) are ours.
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, client TEXT NOT NULL, value INTEGER NOT NULL,"
                " at REAL NOT NULL, UNIQUE (client, value))")
    con.execute("INSERT INTO records (client, value, at) VALUES ('old', 1, 0), ('old', 2, 0)")
    con.commit()
    con.close()
    d = record_countd("--latency", "0", db=str(path))
    assert d.get("/clients/old").json() == {"client": "old", "last_value": 2, "recorded": 2}
    assert d.get("/record-count?value=2&client=old").json()["duplicate"] is True
    d.stop()
    assert db_header(str(path))[:2] == (RC_APPLICATION_ID, 1)


def as_nobody(args):
    """args run as user nobody when we are root (root writes any file), else as ourselves."""
    if os.geteuid() != 0:
        return args
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + args


def nobody_dir():
    """A fresh directory user nobody owns, outside pytest's root-only tmp_path."""
    import tempfile
    d = tempfile.mkdtemp(prefix="rc-nobody-")
    os.chmod(d, 0o755)
    if os.geteuid() == 0:
        import pwd
        os.chown(d, pwd.getpwnam("nobody").pw_uid, -1)
    return d


def test_db_that_cannot_be_written_is_refused():
    """SQLite opens a file it cannot write read-only: record-countd must refuse it at start (exit 1, before systemd
    hears READY=1), not serve and fail every record with 503."""
    import shutil
    d = nobody_dir()
    try:
        db = os.path.join(d, "r.db")
        sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
        if os.geteuid() == 0:
            import pwd
            os.chown(db, pwd.getpwnam("nobody").pw_uid, -1)
        os.chmod(db, 0o444)
        out = subprocess.run(as_nobody([RECORD_COUNTD, "--listen", "127.0.0.1:%d" % free_port(), "--db", db]),
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 1, out
        assert "--db %s: cannot be written (check the owner and mode" % db in out.stderr, out.stderr
    finally:
        shutil.rmtree(d)


def test_database_errors_say_where_the_path_came_from_and_why(tmp_path):
    import shutil
    missing = str(tmp_path / "missing")
    out = run(["--listen", "127.0.0.1:%d" % free_port()], env={"STATE_DIRECTORY": missing})
    assert out.returncode == 1
    assert ("database %s/records.db (the default under $STATE_DIRECTORY): unable to open database file "
            "(No such file or directory)" % missing) in out.stderr, out.stderr
    out = run(["--listen", "127.0.0.1:%d" % free_port(), "--db", str(tmp_path)])
    assert out.returncode == 1 and "--db %s: unable to open database file (Is a directory)" % tmp_path in out.stderr
    d = nobody_dir()
    try:
        os.chmod(d, 0o555)
        out = subprocess.run(as_nobody([RECORD_COUNTD, "--listen", "127.0.0.1:%d" % free_port()]), cwd=d,
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 1
        assert ("database ./record-countd.db (the default in the working directory; see --db): cannot create it: "
                "directory . is not writable (Permission denied)") in out.stderr, out.stderr
    finally:
        shutil.rmtree(d)
