"""record-countd's documentation against record-countd: every claim of record-countd(8), `record-countd --help` and
README.md's record-countd parts that no other test asserts, and the three kept in step with each other and with the
code (option names, defaults, environment variables, metric families, example commands).

The man page is read from its roff source (man/record-countd.8) with a small reader of the few macros it uses, so
the test needs neither man(1) nor groff.
"""
import os
import re
import resource
import shutil
import signal
import subprocess
import time

import pytest

import harness
import roff
from harness import RECORD_COUNTD, TOP_SRCDIR, free_port, http_tcp

CURL = os.environ.get("CURL") or shutil.which("curl") or "curl"
MAN = os.path.join(TOP_SRCDIR, "man", "record-countd.8")
README = os.path.join(TOP_SRCDIR, "README.md")
MAIN_C = os.path.join(TOP_SRCDIR, "server", "record-countd.c")


# --- reading the documents -------------------------------------------------------------------------------------

def man_section(title):
    """The items of one .SH section of record-countd(8)."""
    return roff.section(MAN, title)


def man_options():
    """{long option: (short option, argument or None, the option's paragraph as one line)} from OPTIONS."""
    opts, cur = {}, None
    for kind, text in man_section("OPTIONS"):
        if kind == "TP":
            m = re.match(r"^-(\w), (--[\w-]+)(?: (\S+))?$", text.strip())
            assert m, "an OPTIONS tag of record-countd(8) is not -x, --name [ARG]: %r" % text
            cur = m.group(2)
            opts[cur] = [m.group(1), m.group(3), ""]
        elif cur is not None:
            opts[cur][2] += " " + text.strip()
    return {k: (v[0], v[1], re.sub(r"\s+", " ", v[2]).strip()) for k, v in opts.items()}


def help_text():
    p = subprocess.run([RECORD_COUNTD, "--help"], capture_output=True, text=True, timeout=10, env=clean_env())
    assert p.returncode == 0 and p.stderr == "", p
    return p.stdout


def help_options():
    """{long option: (short option, argument or None, its text with continuation lines, as one line)}."""
    opts, cur = {}, None
    for line in help_text().splitlines():
        m = re.match(r"^  -(\w), (--[\w-]+)(?: (\S+))?(?:\s+(.*))?$", line)
        if m:
            cur = m.group(2)
            opts[cur] = [m.group(1), m.group(3), m.group(4) or ""]
        elif cur is not None and line.startswith(" " * 30):
            opts[cur][2] += " " + line.strip()
        else:
            cur = None
    return {k: (v[0], v[1], re.sub(r"\s+", " ", v[2]).strip()) for k, v in opts.items()}


def default_of(text):
    """The default an option's text states, as written ("off" for a flag off by default), or None."""
    if "off by default" in text:
        return "off"
    for pat in (r"Default: (\S+?)[.,;)]?(?:\s|$)", r"\(default (\S+?)[;)\s]", r"(\S+) \((?:[^()]*, )?the default\)"):
        m = re.search(pat, text)
        if m:
            return m.group(1)
    return None


def code_options():
    """{long option: (short option, takes an argument)} from main_longopts in server/record-countd.c."""
    with open(MAIN_C) as f:
        src = f.read()
    found = re.findall(r'\{ "([\w-]+)", (required_argument|no_argument), NULL, \'(\w)\' \}', src)
    assert found, "main_longopts not found in server/record-countd.c"
    return {"--" + name: (short, kind == "required_argument") for name, kind, short in found}


def clean_env(**extra):
    """This environment without any RECORD_COUNTD_* or STATE_DIRECTORY, plus extra."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("RECORD_COUNTD_") and k != "STATE_DIRECTORY"}
    e.update(extra)
    return e


def to_ms(d):
    """A documented duration ("100ms", "60s", "0") in milliseconds."""
    m = re.match(r"^(\d+(?:\.\d+)?)(ms|s|m)?$", d)
    assert m, d
    return round(float(m.group(1)) * {"ms": 1, "s": 1000, "m": 60000, None: 1}[m.group(2)])


def start(tmp_path, args, env=None, preexec=None, name="d"):
    """record-countd on a free port with a database in tmp_path; returns (Daemon, port)."""
    port = free_port()
    d = harness.Daemon(str(tmp_path), "record-countd")
    d.log = open(d.log_path, "ab")
    argv = [RECORD_COUNTD, "--listen", "127.0.0.1:%d" % port, "--db", str(tmp_path / ("%s.db" % name))] + args
    d.proc = subprocess.Popen(argv, stdout=d.log, stderr=subprocess.STDOUT, cwd=str(tmp_path),
                              env=env if env is not None else clean_env(), start_new_session=True,
                              preexec_fn=preexec)
    harness.SPAWNED.append(d)
    d.wait_ready(lambda: http_tcp("127.0.0.1", port, "GET", "/healthz").status == 200)
    return d, port


# --- the three documents agree with each other and with the code -----------------------------------------------

def test_man_help_and_code_have_the_same_options():
    man, hlp, code = man_options(), help_options(), code_options()
    assert set(man) == set(code), "record-countd(8) OPTIONS vs main_longopts: %s" % (set(man) ^ set(code))
    assert set(hlp) == set(code), "--help vs main_longopts: %s" % (set(hlp) ^ set(code))
    for name, (short, takes_arg) in code.items():
        assert man[name][0] == short and hlp[name][0] == short, name
        assert (man[name][1] is not None) == takes_arg, "%s: record-countd(8) says argument %r" % (name, man[name][1])
        assert (hlp[name][1] is not None) == takes_arg, "%s: --help says argument %r" % (name, hlp[name][1])
        assert man[name][1] == hlp[name][1], (name, man[name][1], hlp[name][1])
    # SYNOPSIS: [--name ARG] for some of them, with the same arguments.
    synopsis = " ".join(t for k, t in man_section("SYNOPSIS"))
    shown = re.findall(r"\[(--[\w-]+)(?: ([^\]]*?))? ?\]", synopsis)
    assert len(shown) >= 5, synopsis
    for name, arg in shown:
        assert name in code and man[name][1] == (arg or None), (name, arg, man.get(name))


def test_man_and_help_state_the_same_defaults():
    man, hlp = man_options(), help_options()
    stated = 0
    for name in man:
        m, h = default_of(man[name][2]), default_of(hlp[name][2])
        assert m == h, "%s: record-countd(8) says default %r, --help says %r" % (name, m, h)
        stated += m is not None
    assert stated == 10, "every option but --version and --help states its default"
    for name, value in (("--listen", "127.0.0.1:8080"), ("--latency", "100ms"), ("--jitter", "0"),
                        ("--max-latency", "0"), ("--db", "$STATE_DIRECTORY/records.db"), ("--durability", "full"),
                        ("--max-connections", "16384"), ("--connection-timeout", "60s"), ("--access-log", "off"),
                        ("--log-level", "info")):
        assert default_of(man[name][2]) == value, name


def test_readme_states_the_same_defaults():
    with open(README) as f:
        readme = f.read()
    part = readme[readme.index("Options (`record-countd --help`"):]
    part = re.sub(r"\s+", " ", part[:part.index("\n\n")])
    man = man_options()
    for name, pat in (("--listen", r"`--listen ADDR:PORT` \(default `([^`]+)`"), ("--latency", r"`--latency` \((\S+?)\)"),
                      ("--jitter", r"`--jitter` \((\S+?),"), ("--max-latency", r"`--max-latency` \((\S+?):"),
                      ("--max-connections", r"`--max-connections` \((\d+) "),
                      ("--connection-timeout", r"`--connection-timeout` \((\S+?),")):
        m = re.search(pat, part)
        assert m, "README.md's options paragraph no longer states %s's default (%s)" % (name, pat)
        assert m.group(1) == default_of(man[name][2]), (name, m.group(1), default_of(man[name][2]))


def test_environment_variables_are_the_same_in_man_help_and_code():
    env_items = man_section("ENVIRONMENT")
    man_vars = set()
    for kind, text in env_items:
        if kind == "TP":
            man_vars |= set(re.findall(r"RECORD_COUNTD_\w+", text))
    help_vars = set(re.findall(r"RECORD_COUNTD_[A-Z_]+", help_text()))
    with open(MAIN_C) as f:
        code_vars = set(re.findall(r'"(RECORD_COUNTD_\w+)"', f.read()))
    assert man_vars == code_vars, man_vars ^ code_vars
    assert help_vars == code_vars, help_vars ^ code_vars
    # "Defaults for the options of the same name": each variable is its option's name.
    opts = set(man_options()) - {"--version", "--help"}
    assert {"RECORD_COUNTD_" + o[2:].upper().replace("-", "_") for o in opts} == man_vars


def test_metric_families_are_those_the_man_page_lists(record_countd):
    listed = set()
    for kind, text in man_section("METRICS"):
        if kind == "TP":
            listed |= set(re.findall(r"[a-z_]+_[a-z_]+", text.replace("\u2010", "")))
    d = record_countd("--latency", "0")
    assert d.get("/record-count?value=1&client=m").status == 200
    served = set(re.findall(r"^# TYPE (\S+) ", d.get("/metrics").body.decode(), re.M))
    assert listed == served, "in record-countd(8) only: %s; served only: %s" % (listed - served, served - listed)


# --- defaults and environment variables, in effect -------------------------------------------------------------

def test_documented_duration_defaults_are_in_effect(tmp_path):
    man = man_options()
    d, port = start(tmp_path, [])
    try:
        line = next(l for l in d.read_log().splitlines() if "listening on" in l)
    finally:
        assert d.stop() == 0
    assert "durability %s" % default_of(man["--durability"][2]) in line, line
    for opt, word in (("--latency", "latency"), ("--jitter", "jitter"), ("--max-latency", "max-latency")):
        assert " %s %dms" % (word, to_ms(default_of(man[opt][2]))) in line, (opt, line)


@pytest.mark.parametrize("var,value,code", [
    ("RECORD_COUNTD_LISTEN", "nohostport", 2),
    ("RECORD_COUNTD_LATENCY", "soon", 2),
    ("RECORD_COUNTD_JITTER", "soon", 2),
    ("RECORD_COUNTD_MAX_LATENCY", "soon", 2),
    ("RECORD_COUNTD_DB", "%(tmp)s/missing/x.db", 1),
    ("RECORD_COUNTD_DURABILITY", "maybe", 2),
    ("RECORD_COUNTD_MAX_CONNECTIONS", "0", 2),
    ("RECORD_COUNTD_CONNECTION_TIMEOUT", "1500ms", 2),
    ("RECORD_COUNTD_ACCESS_LOG", "maybe", 2),
    ("RECORD_COUNTD_LOG_LEVEL", "loud", 2),
])
def test_every_documented_variable_is_read(var, value, code, tmp_path):
    """A bad value in each variable of ENVIRONMENT stops record-countd with the status EXIT STATUS gives, naming the
    variable (so the variable is read, and is the option the man page says)."""
    value = value % {"tmp": tmp_path}
    argv = [RECORD_COUNTD]
    if var != "RECORD_COUNTD_LISTEN":
        argv += ["--listen", "127.0.0.1:%d" % free_port()]
    if var != "RECORD_COUNTD_DB":
        argv += ["--db", str(tmp_path / "x.db")]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=clean_env(**{var: value}), cwd=str(tmp_path))
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail("%s=%s was not read: record-countd started\n%s" % (var, value, err))
    assert p.returncode == code, (p.returncode, err)
    assert var in err, err


def test_variables_set_their_options(tmp_path):
    port = free_port()
    db = tmp_path / "env.db"
    env = clean_env(RECORD_COUNTD_LISTEN="127.0.0.1:%d" % port, RECORD_COUNTD_LATENCY="250ms",
                    RECORD_COUNTD_JITTER="50ms", RECORD_COUNTD_MAX_LATENCY="280ms", RECORD_COUNTD_DB=str(db),
                    RECORD_COUNTD_DURABILITY="normal", RECORD_COUNTD_CONNECTION_TIMEOUT="1s")
    d = harness.Daemon(str(tmp_path), "record-countd")
    d.spawn([RECORD_COUNTD], env)
    try:
        d.wait_ready(lambda: http_tcp("127.0.0.1", port, "GET", "/healthz").status == 200)
        assert db.exists()
        line = next(l for l in d.read_log().splitlines() if "listening on" in l)
        assert ("listening on 127.0.0.1:%d, db %s (durability normal), latency 250ms jitter 50ms max-latency 280ms"
                % (port, db)) in line, line
        # RECORD_COUNTD_CONNECTION_TIMEOUT=1s: an idle connection is closed after about a second, not 60.
        import socket
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            t0 = time.monotonic()
            assert s.recv(1) == b""
            assert time.monotonic() - t0 < 5
    finally:
        assert d.stop() == 0


# --- durations and ranges --------------------------------------------------------------------------------------

@pytest.mark.parametrize("opt", ["--latency", "--jitter", "--max-latency", "--connection-timeout"])
def test_a_fraction_of_a_millisecond_is_refused_not_taken_as_0(opt):
    """record-countd(8): "other than 0, a duration is at least 1ms (a fraction of a millisecond is refused, not taken
    as 0)". Fractions with more than six digits used to lose their digits past the sixth and became 0: none, or
    never, for these options."""
    for bad in ("0.0001s", "0.5ms", "0.0000001s", "0.0000009ms", "0.00000001m", "0.0000000000000000001s"):
        p = subprocess.run([RECORD_COUNTD, opt, bad, "--help"], capture_output=True, text=True, timeout=10,
                           env=clean_env())
        assert p.returncode == 2, (opt, bad, p)
        assert 'record-countd: %s: "%s" is less than 1ms' % (opt, bad) in p.stderr, p.stderr
    for zero in ("0", "0ms", "0s", "0.0s", "0.000000000m"):
        p = subprocess.run([RECORD_COUNTD, opt, zero, "--help"], capture_output=True, text=True, timeout=10,
                           env=clean_env())
        assert p.returncode == 0, (opt, zero, p)


def test_max_connections_range_is_documented_and_enforced():
    man, hlp = man_options(), help_options()
    assert "1 to 1000000" in man["--max-connections"][2], man["--max-connections"][2]
    assert "1..1000000" in hlp["--max-connections"][2], hlp["--max-connections"][2]
    for ok in ("1", "1000000"):
        p = subprocess.run([RECORD_COUNTD, "--max-connections", ok, "--help"], capture_output=True, text=True,
                           timeout=10, env=clean_env())
        assert p.returncode == 0, (ok, p)
    for bad in ("0", "1000001", "-1", "1e3", "16k"):
        p = subprocess.run([RECORD_COUNTD, "--max-connections", bad, "--help"], capture_output=True, text=True,
                           timeout=10, env=clean_env())
        assert p.returncode == 2, (bad, p)
        assert "1..1000000" in p.stderr, p.stderr


# --- open files, log levels, the lock ---------------------------------------------------------------------------

def limits(soft, hard):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def nofile_of(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return tuple(int(x) for x in line.split()[3:5])
    raise AssertionError("no Max open files in /proc/%d/limits" % pid)


def test_open_files_limit_is_raised_and_a_low_one_is_warned_of(tmp_path):
    """-c: "The soft limit on open files is raised to the hard limit at start; a warning says so if it is still too
    low." The warning names the default --max-connections, 16384."""
    default = default_of(man_options()["--max-connections"][2])
    d, port = start(tmp_path, [], preexec=limits(128, 512), name="a")
    try:
        assert nofile_of(d.proc.pid) == (512, 512)
        assert ("open files limit 512 is below --max-connections %s" % default) in d.read_log(), d.read_log()
    finally:
        assert d.stop() == 0
    # With room for the connections (and a few files more), no warning.
    d, port = start(tmp_path, ["--max-connections", "100"], preexec=limits(128, 512), name="b")
    try:
        assert nofile_of(d.proc.pid) == (512, 512)
    finally:
        assert d.stop() == 0
    assert "open files limit" not in d.read_log(), d.read_log()


def test_log_levels_filter_as_documented(tmp_path):
    """--log-level: error hides warnings; warn shows them but hides info lines; debug shows what info does."""
    runs = {}
    for level in ("error", "warn", "info", "debug"):
        d, port = start(tmp_path, ["--log-level", level], preexec=limits(512, 512), name=level)
        assert d.stop() == 0
        runs[level] = d.read_log()
    assert "open files limit" not in runs["error"] and "listening on" not in runs["error"], runs["error"]
    assert "open files limit" in runs["warn"] and "listening on" not in runs["warn"], runs["warn"]
    for level in ("info", "debug"):
        assert "open files limit" in runs[level] and "listening on" in runs[level] and "stopped" in runs[level]


def test_flock_on_the_database_fails_while_record_countd_has_it(tmp_path):
    """FILES: "flock -n records.db true fails while a record-countd has the file open" (and works once it is gone)."""
    flock = shutil.which("flock")
    if flock is None:
        pytest.skip("no flock(1) here")
    d, port = start(tmp_path, ["--latency", "0"], name="records")
    try:
        assert subprocess.run([flock, "-n", "records.db", "true"], cwd=str(tmp_path), timeout=10).returncode != 0
    finally:
        assert d.stop() == 0
    assert subprocess.run([flock, "-n", "records.db", "true"], cwd=str(tmp_path), timeout=10).returncode == 0


# --- examples, run as written ----------------------------------------------------------------------------------

def man_examples():
    """The commands of EXAMPLES, in order: (prompt, command) with continuation lines joined."""
    cmds = []
    for kind, text in man_section("EXAMPLES"):
        if kind != "nf":
            continue
        if text.startswith(("$ ", "# ")):
            cmds.append([text[0], text[2:]])
        else:
            assert cmds and cmds[-1][1].endswith("\\"), "a no-fill line of EXAMPLES that is no command: %r" % text
            cmds[-1][1] = cmds[-1][1][:-1] + " " + text.strip()
    return [tuple(c) for c in cmds]


def test_man_page_examples_do_what_they_say(tmp_path):
    """Each command of EXAMPLES as written (8080 changed to a free port: the port comes from RECORD_COUNTD_LISTEN, and
    curl's URLs name it), in one shell, in a fresh directory; the systemd ones need root and systemd and are only
    checked to name the shipped units."""
    port = free_port()
    cmds = man_examples()
    user = [c for p, c in cmds if p == "$"]
    root = [c for p, c in cmds if p == "#"]
    assert user and user[0].startswith("record-countd ") and user[0].endswith("&"), user
    assert root == ["systemctl enable --now record-countd.socket", "journalctl -u record-countd.service"], root
    for unit in ("record-countd.service.in", "record-countd.socket.in"):
        assert os.path.exists(os.path.join(TOP_SRCDIR, "systemd", unit)), unit
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(RECORD_COUNTD, str(bindir / "record-countd"))
    os.symlink(CURL, str(bindir / "curl"))
    script = ["set -e", "trap 'kill $daemon 2>/dev/null' EXIT", "pids="]
    script.append(user[0] + " daemon=$!")
    script.append("for i in $(seq 200); do curl -s http://127.0.0.1:%d/healthz >/dev/null && break; sleep 0.05; done"
                  % port)
    for c in user[1:]:
        c = c.replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
        assert "8080" not in c, c
        # The command as written; an echo after it puts each answer on a line of its own.
        if c.endswith("&"):
            script.append("{ %s; echo; } & pids=\"$pids $!\"" % c[:-1].strip())
        else:
            script.append("%s; echo" % c)
    script.append("wait $pids")
    env = clean_env(PATH="%s:%s" % (bindir, os.environ.get("PATH", "")),
                    RECORD_COUNTD_LISTEN="127.0.0.1:%d" % port)
    p = subprocess.run(["bash", "-c", "\n".join(script)], cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 0, p
    import json
    docs = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    # "record two values the way the racy counter does": both in flight at once, recorded for demo (in either
    # order: the one sent first in the background may well arrive second, which is the race shown).
    recs = [d for d in docs if "seq" in d]
    assert sorted((d["value"], d["client"], d["duplicate"]) for d in recs) == [(1, "demo", False),
                                                                               (2, "demo", False)], docs
    assert sorted(d["seq"] for d in recs) == [1, 2], docs
    stats = next(d for d in docs if "clients" in d)
    assert stats["clients"]["demo"]["recorded"] == 2 and stats["clients"]["demo"]["last_value"] == 2, stats
    assert stats["clients"]["demo"]["max_in_flight"] == 2, stats
    batch = next(d for d in docs if "records" in d)
    assert batch["client"] == "demo"
    assert [(r["value"], r["duplicate"]) for r in batch["records"]] == [(3, False), (4, False), (5, False)], batch
    # "in the current directory": the database is ./record-countd.db.
    assert (tmp_path / "record-countd.db").exists()
    assert "latency 100ms" in p.stderr, p.stderr


def test_readme_tour_start_command_starts_the_documented_server(tmp_path):
    """README's tour starts record-countd with --listen, --latency and --db (its curl commands are run by
    test_prove_interop.py); the same command, with its port and path moved into the test's own, serves."""
    with open(README) as f:
        line = next(l.strip() for l in f if l.startswith("record-countd "))
    assert line == "record-countd --listen 127.0.0.1:8080 --latency 100ms --db /tmp/records.db &", line
    port = free_port()
    args = line.rstrip("& ").split()[1:]
    args = [a.replace("127.0.0.1:8080", "127.0.0.1:%d" % port).replace("/tmp/records.db", str(tmp_path / "r.db"))
            for a in args]
    d = harness.Daemon(str(tmp_path), "record-countd")
    d.spawn([RECORD_COUNTD] + args, clean_env())
    try:
        d.wait_ready(lambda: http_tcp("127.0.0.1", port, "GET", "/healthz").status == 200)
        t0 = time.monotonic()
        r = http_tcp("127.0.0.1", port, "GET", "/record-count?value=1&client=alice")
        assert r.status == 200 and time.monotonic() - t0 >= 0.1, r
    finally:
        assert d.stop() == 0
    assert (tmp_path / "r.db").exists()


# --- answers' fields --------------------------------------------------------------------------------------------

def test_records_and_stats_fields_are_the_documented_ones(record_countd):
    d = record_countd("--latency", "0")
    before = time.time()
    assert d.post("/record-count", {"client": "f", "values": [5, 3]}).status == 200
    after = time.time()
    page = d.get("/records?client=f&limit=2").json()
    assert set(page) == {"records", "next_after"}
    assert [set(r) for r in page["records"]] == [{"seq", "client", "value", "at"}] * 2, page
    assert [r["value"] for r in page["records"]] == [5, 3] and page["next_after"] == page["records"][1]["seq"]
    for r in page["records"]:
        assert before - 0.01 <= r["at"] <= after + 0.01, (before, r, after)
    stats = d.get("/stats").json()
    assert set(stats) == {"recorded", "duplicates", "rejected", "in_flight", "max_in_flight", "clients"}, stats
    assert set(stats["clients"]["f"]) == {"recorded", "last_value", "in_flight", "max_in_flight", "out_of_order"}
    assert stats["clients"]["f"]["out_of_order"] == 1
    # /stats: "recorded (the records in the database), duplicates and rejected (answers with a 4xx status) since
    # start".
    assert d.get("/record-count?value=5&client=f").json()["duplicate"] is True
    assert d.get("/record-count?value=05&client=f").status == 400
    assert d.get("/nope").status == 404
    stats = d.get("/stats").json()
    assert (stats["recorded"], stats["duplicates"], stats["rejected"]) == (2, 1, 2), stats
    d.restart()
    stats = d.get("/stats").json()
    assert (stats["recorded"], stats["duplicates"], stats["rejected"]) == (2, 0, 0), stats
    assert (stats["in_flight"], stats["max_in_flight"]) == (0, 0), stats


def test_man_page_names_the_version_the_program_prints():
    with open(MAN) as f:
        th = f.readline()
    m = re.match(r'^\.TH RECORD-COUNTD 8 \S+ "lockstep (\S+)"', th)
    assert m, th
    p = subprocess.run([RECORD_COUNTD, "--version"], capture_output=True, text=True, timeout=10, env=clean_env())
    assert p.returncode == 0 and p.stdout == "record-countd (lockstep) %s\n" % m.group(1), p


def test_access_log_lines_are_at_level_info(tmp_path):
    """-a: "Log one line per request at level info": --log-level warn hides them, info shows them."""
    for level, shown in (("warn", False), ("info", True)):
        d, port = start(tmp_path, ["--access-log", "--latency", "0", "--log-level", level], name=level)
        assert http_tcp("127.0.0.1", port, "GET", "/record-count?value=7&client=lv").status == 200
        assert d.stop() == 0
        assert ("access method=GET path=/record-count status=200 client=lv values=7" in d.read_log()) == shown, level


# --- FILES: the database's companions, backup and restore -------------------------------------------------------

def test_a_wal_left_behind_by_a_removed_database_is_dropped(tmp_path):
    """FILES: "A -wal file left behind by a database removed is dropped by SQLite when a new, empty database is created
    in its place" (its records do not come back into the new one)."""
    d, port = start(tmp_path, ["--latency", "0"], name="records")
    assert http_tcp("127.0.0.1", port, "POST", "/record-count", {"client": "old", "values": [1, 2, 3]}).status == 200
    d.kill()                                    # no clean close: the records are in the -wal file only
    wal = tmp_path / "records.db-wal"
    assert wal.exists() and wal.stat().st_size > 0
    os.unlink(str(tmp_path / "records.db"))
    d, port = start(tmp_path, ["--latency", "0"], name="records")
    try:
        assert http_tcp("127.0.0.1", port, "GET", "/records").json() == {"records": [], "next_after": None}
        assert http_tcp("127.0.0.1", port, "GET", "/stats").json()["clients"] == {}
        assert http_tcp("127.0.0.1", port, "GET", "/clients/old").json()["recorded"] == 0
        r = http_tcp("127.0.0.1", port, "GET", "/record-count?value=1&client=old").json()
        assert r["seq"] == 1 and r["duplicate"] is False, r
    finally:
        assert d.stop() == 0


def test_backup_and_restore_as_the_man_page_says(tmp_path):
    """FILES: back up with sqlite3's .backup while record-countd runs; to restore, stop it, put the copy in place of
    records.db, remove the old -wal and -shm files, start it: the records of the backup are served, and /stats counts
    them."""
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        pytest.skip("no sqlite3(1) here")
    line = next(t for k, t in man_section("FILES") if k == "nf" and t.startswith("sqlite3 "))
    assert line == 'sqlite3 /var/lib/record-countd/records.db ".backup /srv/backup/records.db"', line
    (tmp_path / "backup").mkdir()
    d, port = start(tmp_path, ["--latency", "0"], name="records")
    assert http_tcp("127.0.0.1", port, "POST", "/record-count", {"client": "b", "values": [1, 2, 3]}).status == 200
    cmd = line.replace("/var/lib/record-countd/records.db", str(tmp_path / "records.db")).replace(
        "/srv/backup/records.db", str(tmp_path / "backup" / "records.db"))
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p
    # Recorded after the backup: gone once it is restored.
    assert http_tcp("127.0.0.1", port, "GET", "/record-count?value=4&client=b").status == 200
    assert d.stop() == 0
    shutil.copy(str(tmp_path / "backup" / "records.db"), str(tmp_path / "records.db"))
    for ext in ("-wal", "-shm"):
        if (tmp_path / ("records.db" + ext)).exists():
            os.unlink(str(tmp_path / ("records.db" + ext)))
    d, port = start(tmp_path, ["--latency", "0"], name="records")
    try:
        recs = http_tcp("127.0.0.1", port, "GET", "/records?client=b").json()["records"]
        assert [r["value"] for r in recs] == [1, 2, 3], recs
        assert http_tcp("127.0.0.1", port, "GET", "/clients/b").json() == {"client": "b", "last_value": 3,
                                                                           "recorded": 3}
        assert http_tcp("127.0.0.1", port, "GET", "/stats?client=b").json()["clients"]["b"]["recorded"] == 3
    finally:
        assert d.stop() == 0


# --- "arrival": seq order is the end of a request, the latency and times count from its request line -------------

def test_latency_and_at_count_from_the_request_line(record_countd):
    """-L: the latency is "counted from its request line" (it used to say "from its arrival", which HTTP API defines
    as the end of a request); /records: "at" is when the request line was read, so a slow POST's record may have a
    later seq and an earlier at than another's."""
    import json
    import socket
    from test_server_helpers import read_response
    assert "counted from its request line" in man_options()["--latency"][2]
    assert "from its request line" in help_options()["--latency"][2]
    d = record_countd("--latency", "500ms")
    body = b'{"client": "at", "values": [2]}'
    head = b"POST /record-count HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(head + body[:5])
        # Meanwhile a whole request: it arrives, and takes its seq, first.
        assert d.get("/record-count?value=1&client=at").json()["seq"] == 1
        s.sendall(body[5:])
        status, _, resp = read_response(s)
        took = time.monotonic() - t0
    assert status == 200 and json.loads(resp)["records"][0]["seq"] == 2, resp
    assert 0.5 <= took < 0.5 + 0.4, took        # from the end of its body, about 1 s
    recs = d.get("/records?client=at").json()["records"]
    assert [(r["seq"], r["value"]) for r in recs] == [(1, 1), (2, 2)], recs
    assert recs[1]["at"] < recs[0]["at"], recs


def test_answers_before_the_body_close_the_connection_as_listed(record_countd):
    """LIMITS: "Other errors keep a keep-alive connection open, except a 431 and an answer given before a request body
    was read (a 413 for its Content-Length, or a 404, 405, 414 or 417 to a request with a body), which close it." The
    list lacked 417, which closes as well. The body is a request of its own: read as one, it would record."""
    import socket
    from test_server_helpers import read_response
    man = " ".join(t for k, t in man_section("LIMITS"))
    m = re.search(r"or a ((?:\d{3}, )*\d{3}(?:,? or \d{3})?) to a request with a body", man)
    assert m, man
    listed = set(int(x) for x in re.findall(r"\d{3}", m.group(1)))
    d = record_countd("--latency", "0")
    smuggled = b"GET /record-count?value=9&client=smuggle HTTP/1.1\r\nHost: t\r\n\r\n"
    cases = {404: (b"POST /nope", []), 405: (b"POST /stats", []),
             414: (b"POST /record-count?" + b"&".join([b"a"] * 130), []),
             417: (b"POST /record-count", [b"Expect: x"]),
             400: (b"POST /record-count?value=1", [])}
    closing = set()
    for status, (line, extra) in cases.items():
        head = b"\r\n".join([line + b" HTTP/1.1", b"Host: t", b"Content-Length: %d" % len(smuggled)] + extra)
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
            s.sendall(head + b"\r\n\r\n" + smuggled)
            got, headers, _ = read_response(s)
            assert got == status, (status, got)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                nxt, _, _ = read_response(s)
            except OSError:
                nxt = None
        if nxt is None:
            closing.add(status)
            assert headers.get("connection") == "close", (status, headers)
        else:
            assert nxt == 200, (status, nxt)
    assert closing == listed, "closing: %s; record-countd(8) lists %s" % (sorted(closing), sorted(listed))
    assert d.get("/stats?client=smuggle").json()["clients"] == {}


def unit(name):
    """{key: [values]} of a unit template in systemd/."""
    keys = {}
    with open(os.path.join(TOP_SRCDIR, "systemd", name + ".in")) as f:
        for line in f:
            if "=" in line and not line.startswith(("#", "[")):
                k, _, v = line.strip().partition("=")
                keys.setdefault(k, []).append(v)
    return keys


def test_units_and_their_drop_in_examples_do_what_files_says(tmp_path):
    """FILES: the units listen on 127.0.0.1:8080, run as a dynamic user with the database in
    /var/lib/record-countd/records.db; a drop-in's Environment= assignments set the options, and
    RECORD_COUNTD_OPTIONS is appended to the command line."""
    items = man_section("FILES")
    assert ("TP", "/var/lib/record-countd/records.db") in items
    svc, sock = unit("record-countd.service"), unit("record-countd.socket")
    assert sock["ListenStream"] == ["127.0.0.1:8080"], sock
    assert svc["DynamicUser"] == ["yes"] and svc["StateDirectory"] == ["record-countd"], svc
    assert svc["ExecStart"] == ["@sbindir@/record-countd $RECORD_COUNTD_OPTIONS"], svc
    text = [t for k, t in items if k == "nf"]
    env_line = next(t for t in text if t.startswith("Environment="))
    assignments = dict(a.split("=", 1) for a in env_line[len("Environment="):].split())
    assert assignments == {"RECORD_COUNTD_LATENCY": "250ms", "RECORD_COUNTD_JITTER": "50ms"}, env_line
    opts = " ".join(t for k, t in items if k == "text")
    m = re.search(r"Environment=RECORD_COUNTD_OPTIONS=(\S+),", opts)
    assert m, opts
    # As systemd would run it: StateDirectory= sets STATE_DIRECTORY, the drop-in the variables, and
    # $RECORD_COUNTD_OPTIONS (unquoted) becomes words of the command line.
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    env = clean_env(STATE_DIRECTORY=str(state), RECORD_COUNTD_LISTEN="127.0.0.1:%d" % port, **assignments)
    d = harness.Daemon(str(tmp_path), "record-countd")
    d.spawn([RECORD_COUNTD] + m.group(1).split(), env)
    try:
        d.wait_ready(lambda: http_tcp("127.0.0.1", port, "GET", "/healthz").status == 200)
        assert http_tcp("127.0.0.1", port, "GET", "/record-count?value=1&client=unit").status == 200
    finally:
        assert d.stop() == 0
    log = d.read_log()
    assert "db %s/records.db" % state in log and "latency 250ms jitter 50ms" in log, log
    assert "access method=GET path=/record-count status=200 client=unit values=1" in log, log
    assert (state / "records.db").exists()


def test_empty_variables_are_ignored(tmp_path):
    """ENVIRONMENT: "a variable set to the empty string is ignored": each option keeps its default."""
    assert "a variable set to the empty string is ignored" in " ".join(t for k, t in man_section("ENVIRONMENT"))
    empty = {v: "" for v in ("RECORD_COUNTD_LATENCY", "RECORD_COUNTD_JITTER", "RECORD_COUNTD_MAX_LATENCY",
                             "RECORD_COUNTD_DURABILITY", "RECORD_COUNTD_MAX_CONNECTIONS",
                             "RECORD_COUNTD_CONNECTION_TIMEOUT", "RECORD_COUNTD_ACCESS_LOG", "RECORD_COUNTD_LOG_LEVEL")}
    d, port = start(tmp_path, [], env=clean_env(**empty))
    assert http_tcp("127.0.0.1", port, "GET", "/healthz").status == 200
    assert d.stop() == 0
    log = d.read_log()
    assert "(durability full), latency 100ms jitter 0ms max-latency 0ms (no cap)" in log, log
    assert "access method=" not in log


def test_a_fraction_of_a_millisecond_past_1ms_is_dropped(tmp_path):
    """OPTIONS: "a fraction of a millisecond past that is dropped (1.5ms is 1ms)"; so it is at the one-day limit.
    Only a fraction of a millisecond: every digit counts, where the seventh and later were dropped, so 0.0000334m
    (2.004ms) was 1ms, and 0.0000167m (1.002ms) was refused as less than 1ms."""
    text = " ".join(t for k, t in man_section("OPTIONS"))
    assert "a fraction of a millisecond past that is dropped (1.5ms is 1ms)" in text
    d, port = start(tmp_path, ["--latency", "1.5ms", "--jitter", "0.0019s", "--max-latency", "0.0000334m"])
    assert d.stop() == 0
    assert "latency 1ms jitter 1ms max-latency 2ms" in d.read_log(), d.read_log()
    d, port = start(tmp_path, ["--latency", "0.0000167m", "--jitter", "0.0000166666666666666666666666667m",
                               "--max-latency", "0.016666666666666666666666666666666666666666666666666666666667m"],
                    name="e")
    assert d.stop() == 0
    assert "latency 1ms jitter 1ms max-latency 1000ms" in d.read_log(), d.read_log()
    p = subprocess.run([RECORD_COUNTD, "--latency", "86400.0009s", "--help"], capture_output=True, text=True,
                       timeout=10, env=clean_env())
    assert p.returncode == 0, p


def test_limits_in_the_man_page_and_readme_are_the_codes(record_countd):
    """Each number of LIMITS (and README's) is the constant in server/server.h, whose values --help prints."""
    with open(os.path.join(TOP_SRCDIR, "server", "server.h")) as f:
        consts = {k: int(v) for k, v in re.findall(r"^#define (\w+) (\d+)\b", f.read(), re.M)}
    man = re.sub(r"\s+", " ", " ".join(t for k, t in man_section("LIMITS")))
    api = re.sub(r"\s+", " ", " ".join(t for k, t in man_section("HTTP API")))
    for phrase in ("request target (path and query) %(LIMIT_URL)d bytes, 414",
                   "at most %(LIMIT_PARAMS)d query parameters (separated by &), 414",
                   "all headers %(LIMIT_HEADERS)d bytes, 431", "at most %(LIMIT_HEADER_FIELDS)d header fields, 431",
                   "body %(LIMIT_BODY)d bytes, 413", "at most %(LIMIT_VALUES)d values per POST",
                   "a /records limit of 1 to %(LIMIT_RECORDS_PAGE)d", "in a %(MHD_MEMORY_LIMIT)d-byte buffer"):
        assert phrase % consts in man, phrase % consts
    for phrase in ("a client ID is 1 to %(LIMIT_CLIENT)d characters of [A-Za-z0-9._:-]",
                   "at most L (default %(DEFAULT_RECORDS_PAGE)d, at most %(LIMIT_RECORDS_PAGE)d)",
                   "1 to %(LIMIT_VALUES)d values"):
        assert phrase % consts in api, phrase % consts
    with open(README) as f:
        readme = re.sub(r"\s+", " ", f.read())
    for phrase in ("limit 1..%(LIMIT_RECORDS_PAGE)d, default %(DEFAULT_RECORDS_PAGE)d",
                   "1..%(LIMIT_VALUES)d values in one transaction", "client ids are 1..%(LIMIT_CLIENT)d characters",
                   "413 body (or `Content-Length`) over %(LIMIT_BODY),d bytes",
                   "414 request target over %(LIMIT_URL),d bytes or over %(LIMIT_PARAMS)d query parameters",
                   "431 headers over %(LIMIT_HEADERS),d bytes or over %(LIMIT_HEADER_FIELDS)d fields"):
        assert phrase.replace("%(", "{").replace(")d", "}").replace("),d", ":,}").format(**consts) in readme, phrase
    # And the daemon keeps them: the first value past each of the simplest is refused with its status.
    d = record_countd("--latency", "0")
    assert d.get("/records?limit=%d" % consts["LIMIT_RECORDS_PAGE"]).status == 200
    assert d.get("/records?limit=%d" % (consts["LIMIT_RECORDS_PAGE"] + 1)).status == 400
    assert d.get("/clients/" + "c" * consts["LIMIT_CLIENT"]).status == 200
    assert d.get("/clients/" + "c" * (consts["LIMIT_CLIENT"] + 1)).status == 400
    assert d.post("/record-count", {"values": list(range(1, consts["LIMIT_VALUES"] + 2))}).status == 400
    assert d.post("/record-count", b"x" * (consts["LIMIT_BODY"] + 1)).status == 413


def test_help_and_man_say_the_same_of_durability():
    """--help said "fsync per group commit", but no commit syncs: syncer threads fdatasync the WAL behind the commits,
    several commits to one sync, and a record is answered once a sync that began after its commit is over
    (record-countd(8): "answers a record only after the write-ahead log holding it has been synced to disk")."""
    man, hlp = man_options()["--durability"][2], help_options()["--durability"][2]
    assert "has been synced to disk" in man, man
    assert "answered once it is synced to disk" in hlp and "per group commit" not in hlp, hlp
    for text in (man, hlp):
        assert "power loss" in text and "crash" in text, text
