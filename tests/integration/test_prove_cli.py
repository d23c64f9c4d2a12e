"""counterctl as a shell script uses it: pipes, signals, exit statuses, arguments and output formats (counterctl(1))."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import harness
from test_client_helpers import dead_url, poll, server_records


def run(*args, env=None, timeout=60, **kw):
    return subprocess.run([harness.COUNTERCTL] + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env, **kw)


def idle(cd, name):
    """Whether counterd has no call of counter name waiting or in flight."""
    c = cd.get("/stats").json()["counters"].get(name, {})
    return c.get("waiting", 0) == 0 and c.get("in_flight", 0) == 0


class StandIn:
    """A stand-in for counterd on a Unix socket: answers each request with the next of answers (status, body), keeping
    the connection open; after the last answer, repeats it."""

    def __init__(self, path, answers):
        self.path = path
        self.answers = list(answers)
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(16)
        self.lock = threading.Lock()
        self.done = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.done:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf.partition(b"\r\n\r\n")[2]
                with self.lock:
                    status, body = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
                body = body.encode()
                try:
                    c.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                              % (status, len(body)) + body)
                except OSError:
                    return

    def close(self):
        self.done = True
        self.srv.close()


# --- faults: each test failed before its fix -------------------------------------------------------------------------

def test_timeout_bounds_a_counterd_that_does_not_accept(tmp_path):
    # A counterd that is hung or swamped stops accepting; once its listen queue is full, connect() waits for room.
    # --timeout was set on the socket after connect(), so counterctl waited forever instead of giving up with 3.
    path = str(tmp_path / "full.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)
    held = []
    try:
        while True:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                c.close()
                break
            held.append(c)
            assert len(held) < 1000
        t0 = time.monotonic()
        try:
            p = run("--socket", path, "--timeout", "500ms", "get", "x", timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("counterctl --timeout 500ms still waiting to connect after 20 s")
        took = time.monotonic() - t0
        assert p.returncode == 3 and p.stdout == "", p
        assert p.stderr == ("counterctl: counterd at %s did not accept the connection within 500 ms (--timeout)\n"
                            % path), p
        assert 0.4 < took < 10, took
    finally:
        for c in held:
            c.close()
        srv.close()


def test_empty_socket_path_is_a_usage_error(tmp_path):
    # --socket '' connected to an abstract socket named by 108 NUL bytes and said "Connection refused (is counterd
    # running?)", status 3; an empty path is a mistake on the command line: status 2. An empty $COUNTERD_SOCKET is unset.
    for args in (["--socket", ""], ["--socket="], ["-s", ""]):
        p = run(*args, "list")
        assert p.returncode == 2 and p.stdout == "", (args, p)
        assert p.stderr == "counterctl: --socket: the path is empty\n", (args, p)
    env = dict(os.environ, COUNTERD_SOCKET="")
    env.pop("RUNTIME_DIRECTORY", None)
    p = run("list", env=env, cwd=str(tmp_path))
    assert p.returncode == 3 and "./counterd.sock" in p.stderr, p


def test_counterd_empty_socket_path_says_so(tmp_path):
    # counterd --socket '' said "counterd: : No such file or directory".
    p = subprocess.run([harness.COUNTERD, "--socket", "", "--server", dead_url()], capture_output=True, text=True,
                       timeout=10, cwd=str(tmp_path))
    assert p.returncode == 1 and p.stderr == "counterd: --socket: the path is empty\n", p


def test_unreachable_counterd_is_exit_3_with_the_reason(tmp_path):
    # Every way of not reaching counterd is status 3 with one line; a path that is not a socket (a regular file, a
    # directory: the database, a typo) was "Connection refused (is counterd running?)", which sends the user to the
    # wrong problem.
    plain, folder = tmp_path / "plain", tmp_path / "dir"
    plain.write_text("")
    folder.mkdir()
    for path in (plain, folder):
        p = run("--socket", str(path), "next")
        assert p.returncode == 3 and p.stdout == "", p
        assert p.stderr == "counterctl: cannot connect to %s: it is not a socket (is the path right?)\n" % path, p
    stale = str(tmp_path / "stale.sock")      # left by a counterd that was killed
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    p = run("--socket", stale, "next")
    assert p.returncode == 3
    assert p.stderr == "counterctl: cannot connect to %s: Connection refused (is counterd running?)\n" % stale, p
    p = run("--socket", "/" + "x" * 108, "next")
    assert p.returncode == 3 and p.stderr == "counterctl: socket path /%s is too long\n" % ("x" * 108), p


def test_unreachable_for_permission_is_exit_3_with_a_hint():
    # counterctl(1): permission denied on the socket (not in the socket's group) is 3, with a hint.
    d = tempfile.mkdtemp(prefix="lockstep-cli-")
    path = os.path.join(d, "c.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.chmod(d, 0o755)
        s.bind(path)
        s.listen(4)
        os.chmod(path, 0o600)
        argv = [harness.COUNTERCTL, "--socket", path, "list"]
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
        else:
            os.chmod(path, 0)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            pytest.skip("no setpriv to drop root")
        assert p.returncode == 3 and p.stdout == "", p
        assert p.stderr == ("counterctl: cannot connect to %s: Permission denied (is your user in the socket's "
                            "group? systemd's socket is for group lockstep)\n" % path), p
    finally:
        s.close()
        os.unlink(path)
        os.rmdir(d)


def test_counts_are_plain_decimal_numbers(record_countd, counterd):
    # -n and -c took " 5" and "+3" (strtol skips blanks and a sign) but refused "5 "; counterd's own number options
    # take digits only. Now both ends of the range, and nothing but digits.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    for v in (" 5", "\t5", "+3", "5 ", "", "-1", "0", "1e3", "0x10", "100000001", "99999999999999999999", "３"):
        for opt in ("-n", "-c"):
            p = cd.ctl("next", "d", opt, v)
            assert p.returncode == 2 and p.stdout == "", (opt, v, p)
            assert p.stderr.startswith('counterctl: %s: "%s" is not a number from 1 to ' % (opt, v)), (opt, v, p)
    assert cd.ctl("next", "d", "-n", "010").stdout == "".join("%d\n" % i for i in range(1, 11))   # decimal, not octal
    assert cd.ctl("get", "d").stdout == "10\n"
    # The largest -n is taken: against a counterd that refuses every call it fails with counterd's error, not 2.
    refusing = counterd(rc.url, "--backlog", "0", client_id="refusing")
    p = refusing.ctl("next", "-n", "100000000", "-c", "1024")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr.startswith("counterctl: next: 503 backlog_full: ") and len(p.stderr.splitlines()) == 1, p


def test_get_and_list_refuse_answers_without_their_fields(tmp_path):
    # counterctl(1): an answer that is not the JSON expected is status 3. A get answer without "count" printed 0 with
    # status 0; a list entry without a name printed "(null) 1" (printf of NULL).
    path = str(tmp_path / "peer.sock")
    for cmd, body, line in (
            ("get", '{"counter":"x"}', "get: counterd's answer lacks a count"),
            ("get", '{"counter":"x","count":"7"}', "get: counterd's answer lacks a count"),
            ("list", '{}', "list: counterd's answer lacks the counters"),
            ("list", '{"counters":[{"counter":"a","count":1},{"count":1}]}',
             "list: counterd's answer lacks a counter's name or count"),
            ("list", '{"counters":[{"counter":"a"}]}', "list: counterd's answer lacks a counter's name or count")):
        peer = StandIn(path, [(200, body)])
        try:
            p = run("--socket", path, cmd, *(["x"] if cmd == "get" else []))
            assert p.returncode == 3 and p.stdout == "", (body, p)
            assert p.stderr == "counterctl: %s\n" % line, (body, p)
        finally:
            peer.close()
            os.unlink(path)


def test_list_is_sorted_by_name(record_countd, counterd):
    # list printed counters in the order counterd first used them, which changes across restarts (a counter is listed
    # once it is used again): two lists of the same counters did not compare equal. Now sorted by name, byte order.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    p = cd.ctl("list")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", "no counters: no lines"
    for name in ("mid", "b", "Z", "_x", "a.2", "a-1", "a"):
        assert cd.ctl("next", name).returncode == 0
    p = cd.ctl("list")
    assert p.returncode == 0 and p.stdout == "Z 1\n_x 1\na 1\na-1 1\na.2 1\nb 1\nmid 1\n", p


def test_next_options_may_follow_the_name_even_if_posixly_correct(record_countd, counterd):
    # counterctl(1): -n and -c come before or after NAME. With POSIXLY_CORRECT in the environment (some build and CI
    # systems set it) getopt stopped at NAME and `next jobs -n 3` was a usage error.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    env = dict(os.environ, POSIXLY_CORRECT="1")
    p = run("--socket", cd.socket, "next", "jobs", "-n", "3", env=env)
    assert p.returncode == 0 and p.stdout == "1\n2\n3\n", p
    p = run("--socket", cd.socket, "next", "-n", "2", "jobs", "-c", "2", env=env)
    assert p.returncode == 0 and sorted(p.stdout.split()) == ["4", "5"], p
    for e in (env, None):
        p = run("--socket", cd.socket, "next", "jobs", "-n", "2", "other", env=e)
        assert p.returncode == 2 and p.stderr == "counterctl: next: unexpected argument other\n", p
    # -- ends the options: a name may then start with "-".
    p = run("--socket", cd.socket, "next", "-n", "2", "--", "-n", env=env)
    assert p.returncode == 0 and p.stdout == "1\n2\n", p
    assert sorted(cd.ctl("list").stdout.splitlines()) == ["-n 2", "jobs 5"]
