"""Interop with implementations we did not design (issue 6, part 3).

- The seed's three NetworkCounters, written with real Twisted (tests/interop/seed_counters.py), against record-countd:
  unsafe [2, 2], locked [1, 2], stateless [1, 2], and record-countd's /stats shows the race (max_in_flight) or its absence.
- counterd against a record-count server written with Twisted (tests/interop/twisted_record_server.py): unique numbers,
  the Twisted server sees exactly 1..M in order, one request at a time per counter, and counterd resumes after a restart.
- Every example command of README.md runs: lines starting with `curl ` or `counterctl ` inside ```sh fenced blocks
  (the README's "tested examples" marker) are run against real daemons and must succeed.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
INTEROP = os.path.join(HERE, "..", "interop")
sys.path.insert(0, INTEROP)
import provelib as pl  # noqa: E402

PYTHON3 = os.environ.get("PYTHON3", "/usr/bin/python3")
CURL = os.environ.get("CURL", "curl")
TOP_SRCDIR = os.environ.get("TOP_SRCDIR", os.path.join(HERE, "..", ".."))


def run_seed(server_url, n=2, prefix="seed", timeout=60):
    p = subprocess.run([PYTHON3, os.path.join(INTEROP, "seed_counters.py"), "--server", server_url, "-n", str(n),
                        "--client-prefix", prefix], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "seed_counters.py failed (%d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_seed_counters_against_record_countd(record_countd):
    """The seed's scenario with real Twisted: the bug and both fixes, seen by callers and by the server."""
    rc = record_countd("--latency", "100ms")
    out = run_seed(rc.url)
    assert out["unsafe"]["results"] == [2, 2], out
    assert out["locked"]["results"] == [1, 2], out
    assert out["stateless"]["results"] == [1, 2], out
    assert out["unsafe"]["seconds"] >= 0.1 and out["locked"]["seconds"] >= 0.2, ("latency not applied", out)
    st = pl.get_json(("127.0.0.1", rc.port), "/stats")["clients"]
    assert st["seed-unsafe"]["max_in_flight"] == 2, st
    assert st["seed-locked"]["max_in_flight"] == 1 and st["seed-locked"]["out_of_order"] == 0, st
    assert st["seed-stateless"]["max_in_flight"] == 2, st
    for strategy in ("unsafe", "locked", "stateless"):
        recs = pl.fetch_records(("127.0.0.1", rc.port), "seed-" + strategy)
        assert sorted(r["value"] for r in recs) == [1, 2], (strategy, recs)
    assert [r["value"] for r in pl.fetch_records(("127.0.0.1", rc.port), "seed-locked")] == [1, 2]


def test_seed_locked_200_concurrent_one_at_a_time(record_countd):
    """200 concurrent next() on the Twisted locked counter: 1..200, the server never sees two at once."""
    rc = record_countd("--latency", "5ms")
    out = run_seed(rc.url, n=200, prefix="seed200")
    assert out["locked"]["results"] == list(range(1, 201))
    assert out["stateless"]["results"] == list(range(1, 201))
    st = pl.get_json(("127.0.0.1", rc.port), "/stats")["clients"]
    assert st["seed200-locked"]["max_in_flight"] == 1 and st["seed200-locked"]["out_of_order"] == 0, st
    assert [r["value"] for r in pl.fetch_records(("127.0.0.1", rc.port), "seed200-locked")] == list(range(1, 201))


class TwistedServer:
    """tests/interop/twisted_record_server.py on a free port."""

    def __init__(self, workdir, latency):
        self.port_file = os.path.join(workdir, "twisted.port")
        self.log = open(os.path.join(workdir, "twisted.log"), "wb")
        self.proc = subprocess.Popen([PYTHON3, os.path.join(INTEROP, "twisted_record_server.py"), "--port-file",
                                      self.port_file, "--latency", latency], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        pl.wait_until(lambda: os.path.exists(self.port_file) or self.proc.poll() is not None, 20,
                      "the Twisted record server to listen")
        assert self.proc.poll() is None, "twisted_record_server.py exited"
        with open(self.port_file) as f:
            self.port = int(f.read())
        self.url = "http://127.0.0.1:%d" % self.port
        self.addr = ("127.0.0.1", self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def twisted_server(tmp_path):
    servers = []

    def start(latency="20ms"):
        s = TwistedServer(str(tmp_path), latency)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def _check_unique_and_recorded(outs, tw, client_id):
    problems = []
    by_counter = {}
    for o in outs:
        if o.status != 200:
            problems.append("call failed: %r" % o)
        else:
            by_counter.setdefault(o.counter, []).append(o.count)
    for name, got in by_counter.items():
        recs = pl.fetch_records(tw.addr, "%s:%s" % (client_id, name))
        problems += pl.check_locked(recs, got, name)
        if sorted(got) != list(range(1, len(got) + 1)):
            problems.append("%s: callers did not get exactly 1..%d: %r" % (name, len(got), sorted(got)[:20]))
    return problems, by_counter


def test_counterd_locked_against_twisted_server(twisted_server, counterd):
    """counterd (locked, coalescing) recording to a Twisted server: unique numbers, 1..M in order, one at a time."""
    tw = twisted_server("20ms")
    cd = counterd(tw.url, "--strategy", "locked", client_id="twi")
    outs = pl.burst(cd.socket, ["x", "y"], 600, concurrency=100)
    problems, by_counter = _check_unique_and_recorded(outs, tw, "twi")
    assert not problems, "\n".join(problems[:20])
    st = pl.get_json(tw.addr, "/stats")["clients"]
    for name in ("x", "y"):
        c = st["twi:%s" % name]
        assert c["max_in_flight"] == 1 and c["out_of_order"] == 0, ("locked counterd overlapped requests", name, c)
    # Restart: counterd asks the Twisted server for the last value and continues after it.
    cd.restart()
    r = cd.next("x")
    assert r.status == 200 and r.json()["count"] == len(by_counter["x"]) + 1, r


def test_counterd_batch1_and_stateless_against_twisted_server(twisted_server, counterd):
    """--batch-max 1 (one request per value) and stateless, against the Twisted server: unique numbers, all recorded."""
    tw = twisted_server("10ms")
    one = counterd(tw.url, "--strategy", "locked", "--batch-max", "1", client_id="tw1")
    outs = pl.burst(one.socket, ["z"], 40, concurrency=40)
    problems, _ = _check_unique_and_recorded(outs, tw, "tw1")
    assert not problems, "\n".join(problems[:20])
    assert pl.get_json(tw.addr, "/stats")["clients"]["tw1:z"]["max_in_flight"] == 1
    sl = counterd(tw.url, "--strategy", "stateless", client_id="tws")
    outs = pl.burst(sl.socket, ["z"], 200, concurrency=100)
    got = [o.count for o in outs if o.status == 200]
    assert len(got) == 200, [o for o in outs if o.status != 200][:5]
    problems = pl.check_stateless(pl.fetch_records(tw.addr, "tws:z"), got, "stateless z")
    assert not problems, problems


# ---------------------------------------------------------------- README examples

def readme_commands():
    """(line number, command) for every tested example: `curl `/`counterctl ` lines in ```sh blocks of README.md."""
    path = os.path.join(TOP_SRCDIR, "README.md")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    cmds = []
    in_sh = False
    pending = None
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if s.startswith("```"):
            in_sh = (not in_sh) and s[3:].strip() == "sh"
            pending = None
            continue
        if not in_sh:
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + s.rstrip("\\").strip())
            if not s.endswith("\\"):
                cmds.append(pending)
                pending = None
            continue
        if s.startswith("$ "):
            s = s[2:]
        if s.startswith("curl ") or s.startswith("counterctl "):
            if s.endswith("\\"):
                pending = (i, s.rstrip("\\").strip())
            else:
                cmds.append((i, s))
    return cmds


README_CMDS = readme_commands()


def rewrite(cmd, rc_port, sock):
    """Point an example at the test's daemons: any loopback host:port -> record-countd's port, any socket path ->
    counterd's socket, `curl`/`counterctl` -> the built ones."""
    cmd = re.sub(r"(?:localhost|127\.0\.0\.1|\[::1\]):\d+", "127.0.0.1:%d" % rc_port, cmd)
    cmd = re.sub(r"--unix-socket[ =]\S+", "--unix-socket %s" % shlex.quote(sock), cmd)
    if cmd.startswith("counterctl "):
        if re.search(r"--socket[ =]\S+", cmd):
            cmd = re.sub(r"--socket[ =]\S+", "--socket %s" % shlex.quote(sock), cmd)
        else:
            cmd = "counterctl --socket %s %s" % (shlex.quote(sock), cmd[len("counterctl "):])
        cmd = shlex.quote(harness.COUNTERCTL) + cmd[len("counterctl"):]
    elif cmd.startswith("curl "):
        cmd = shlex.quote(CURL) + " --max-time 20 " + cmd[len("curl "):]
    return cmd


@pytest.fixture(scope="module")
def readme_daemons(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("readme"))
    rc = harness.RecordCountd(wd, ["--latency", "10ms"])
    cd = None
    try:
        rc.start()
        cd = harness.Counterd(wd, rc.url, [], socket_path=os.path.join(wd, "counterd.sock"), client_id="readme")
        cd.start()
        yield wd, rc, cd
    finally:
        for d in (cd, rc):
            if d:
                d.stop()


@pytest.mark.parametrize("example", README_CMDS or [None],
                         ids=["README.md:%d" % n for n, _ in README_CMDS] or ["README.md-has-no-tested-examples"])
def test_readme_example(readme_daemons, example):
    if example is None:
        pytest.fail("README.md has no tested examples: put every example command on its own line, starting with "
                    "`curl ` or `counterctl `, inside a ```sh fenced block; this test runs each of them")
    wd, rc, cd = readme_daemons
    lineno, cmd = example
    real = rewrite(cmd, rc.port, cd.socket)
    env = dict(os.environ, RUNTIME_DIRECTORY=wd)
    p = subprocess.run(["bash", "-o", "pipefail", "-c", real], cwd=wd, capture_output=True, text=True, timeout=60,
                       env=env)
    assert p.returncode == 0, "README.md:%d `%s` exited %d\nran: %s\nstdout: %s\nstderr: %s" % (
        lineno, cmd, p.returncode, real, p.stdout[-2000:], p.stderr[-2000:])
    assert p.stdout.strip() or "-o " in cmd or ">" in cmd, "README.md:%d `%s` printed nothing" % (lineno, cmd)
    assert rc.proc.poll() is None and cd.proc.poll() is None, "a daemon died running README.md:%d" % lineno
    # An example that answers an error must be one the README shows as an error (its code in an output block).
    for line in p.stdout.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "error" in doc:
            with open(os.path.join(TOP_SRCDIR, "README.md")) as f:
                shown = f.read()
            assert '"error":"%s"' % doc["error"] in shown.replace('": "', '":"'), (
                "README.md:%d `%s` answered an error the README does not show: %s" % (lineno, cmd, line))


def readme_shown_outputs():
    """(line number, JSON document) for every JSON line of a plain ``` block that follows a ```sh block in README.md:
    the output the README says its commands print."""
    with open(os.path.join(TOP_SRCDIR, "README.md")) as f:
        lines = f.read().splitlines()
    shown, lang, after_sh = [], None, False
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if s.startswith("```"):
            if lang is None:
                lang = s[3:].strip()
                if lang == "" and not after_sh:
                    lang = "-"              # a plain block that is not output
            else:
                after_sh, lang = lang == "sh", None
            continue
        if lang == "":
            try:
                shown.append((i, json.loads(s)))
            except ValueError:
                pass
    return shown


def test_readme_outputs_are_what_its_commands_print(tmp_path):
    """The tour's commands, run in order on fresh daemons as a reader would, print every JSON line the README shows
    (a count or seq that drifted from the commands is caught here)."""
    shown = readme_shown_outputs()
    assert shown, "README.md shows no JSON output after its ```sh blocks"
    wd = str(tmp_path)
    rc = harness.RecordCountd(wd, ["--latency", "10ms"])
    cd = None
    printed = []
    try:
        rc.start()
        cd = harness.Counterd(wd, rc.url, [], socket_path=os.path.join(wd, "counterd.sock"), client_id="demo")
        cd.start()
        for lineno, cmd in README_CMDS:
            p = subprocess.run(["bash", "-o", "pipefail", "-c", rewrite(cmd, rc.port, cd.socket)], cwd=wd,
                               capture_output=True, text=True, timeout=60, env=dict(os.environ, RUNTIME_DIRECTORY=wd))
            for line in p.stdout.splitlines():
                try:
                    printed.append(json.loads(line))
                except ValueError:
                    pass
    finally:
        for d in (cd, rc):
            if d:
                d.stop()
    for lineno, doc in shown:
        assert doc in printed, "README.md:%d shows %s, which no command printed" % (lineno, json.dumps(doc))
