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


# --- documented behaviour a script relies on --------------------------------------------------------------------------

def test_reader_going_away_loses_nothing(record_countd, counterd):
    # counterctl(1): `next -n N | head -1` ends at once with 1 and one line; numbers taken but not read (in the pipe,
    # or in flight) are used up, and each of them is recorded: nothing is lost or left in counterd.
    rc = record_countd("--latency", "1ms")
    cd = counterd(rc.url)
    for conc in ("1", "8"):
        name = "pipe%s" % conc
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-c", '"$0" --socket "$1" next "$2" -n 100000 -c "$3" | head -1; '
                            'echo "${PIPESTATUS[0]}"', harness.COUNTERCTL, cd.socket, name, conc],
                           capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert p.stdout == "1\n1\n", p
        assert p.stderr == "counterctl: next: cannot write the numbers: Broken pipe\n", p
        assert took < 20, took
        poll(lambda: idle(cd, name))
        count = cd.get("/counters/%s" % name).json()["count"]
        assert 1 <= count < 100000
        assert server_records(rc, "test:%s" % name) == list(range(1, count + 1))
    p = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" --socket "$1" next p -n 100000 | head -1 >/dev/null',
                        harness.COUNTERCTL, cd.socket], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_next_ends_it_with_whole_lines(record_countd, counterd, sig):
    # counterctl(1): SIGINT or SIGTERM ends counterctl at once, killed by the signal (130 or 143 in the shell); every
    # line printed is whole, and the numbers it had taken but not printed are used up and recorded.
    rc = record_countd("--latency", "2ms")
    cd = counterd(rc.url)
    p = subprocess.Popen([harness.COUNTERCTL, "--socket", cd.socket, "next", "s", "-n", "100000", "-c", "8"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    head = b"".join(p.stdout.readline() for _ in range(50))
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == -sig and err == b"", (p.returncode, err)
    out = head + out
    assert out.endswith(b"\n")
    nums = [int(x) for x in out.decode().split("\n")[:-1]]
    assert len(nums) >= 50 and len(set(nums)) == len(nums)
    poll(lambda: idle(cd, "s"))
    count = cd.get("/counters/s").json()["count"]
    assert max(nums) <= count < 100000
    assert server_records(rc, "test:s") == list(range(1, count + 1))


def test_output_to_a_file_keeps_the_order_of_numbers_and_errors(tmp_path):
    # counterctl(1): each number is written as it arrives, so in a file (fully buffered stdio) that also takes stderr,
    # the numbers come before the error that stopped them, each on a line of its own.
    path = str(tmp_path / "peer.sock")
    peer = StandIn(path, [(200, '{"counter":"o","count":1}'), (200, '{"counter":"o","count":2}'),
                          (503, '{"error":"backlog_full","message":"too many waiting"}')])
    out = tmp_path / "out"
    try:
        with open(str(out), "w") as f:
            p = subprocess.run([harness.COUNTERCTL, "--socket", path, "next", "o", "-n", "5"], stdout=f,
                               stderr=subprocess.STDOUT, timeout=60)
    finally:
        peer.close()
    assert p.returncode == 1
    assert out.read_text() == "1\n2\ncounterctl: next: 503 backlog_full: too many waiting\n"


def test_concurrent_output_is_whole_lines_to_a_file(record_countd, counterd, tmp_path):
    # counterctl(1): with -c the numbers may be out of order, but each is on a whole line and none is missing.
    rc = record_countd("--latency", "1ms")
    cd = counterd(rc.url)
    out = tmp_path / "out"
    with open(str(out), "w") as f:
        p = subprocess.run([harness.COUNTERCTL, "--socket", cd.socket, "next", "f", "-n", "3000", "-c", "16"],
                           stdout=f, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0 and p.stderr == b""
    lines = out.read_text().split("\n")
    assert lines[-1] == "" and sorted(int(x) for x in lines[:-1]) == list(range(1, 3001))


def test_stats_and_health_are_pretty_json_and_health_prints_on_failure(record_countd, counterd):
    # counterctl(1): stats and health print counterd's JSON indented by two spaces, keys in counterd's order; a failed
    # health still prints it, exits 1, and says why on stderr.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    cd.ctl("next")
    for cmd in ("stats", "health"):
        p = cd.ctl(cmd)
        assert p.returncode == 0 and p.stderr == "", p
        j = json.loads(p.stdout)
        assert p.stdout.startswith('{\n  "') and p.stdout.endswith("\n}\n"), p.stdout
        assert list(j) == list(cd.get("/stats" if cmd == "stats" else "/healthz").json()), "counterd's key order"
    health = cd.ctl("health").stdout
    assert health == json.dumps(json.loads(health), indent=2) + "\n"
    down = counterd(dead_url(), "--retries", "0", client_id="down")
    down.next("x")
    p = down.ctl("health")
    assert p.returncode == 1 and json.loads(p.stdout)["status"] != "ok", p
    assert p.stderr == "counterctl: health: counterd answered 503\n", p


def test_repeated_options_and_precedence(record_countd, counterd, tmp_path):
    # counterctl(1): a repeated option's last value counts; --socket wins over $COUNTERD_SOCKET; a long option may be
    # shortened to a unique prefix only (an ambiguous one is a usage error); options of the command go after it.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    wrong = str(tmp_path / "nothing.sock")
    p = run("--socket", wrong, "--socket", cd.socket, "next", "r", "-n", "5", "-n", "2")
    assert p.returncode == 0 and p.stdout == "1\n2\n", p
    p = run("--socket", cd.socket, "--socket", wrong, "next", "r")
    assert p.returncode == 3, p
    p = run("--socket", cd.socket, "next", "r", env=dict(os.environ, COUNTERD_SOCKET=wrong))
    assert p.returncode == 0 and p.stdout == "3\n", p
    p = run("--socket", cd.socket, "next", "r", "--co=3")
    assert p.returncode == 2 and p.stdout == "" and "--co=3" in p.stderr, p
    p = run("--socket", cd.socket, "next", "r", "--coun=2")
    assert p.returncode == 0 and p.stdout == "4\n5\n", p
    p = run("list", "--socket", cd.socket)
    assert p.returncode == 2 and p.stderr == "counterctl: usage: counterctl list\n", p
    p = run("--socket", cd.socket, "next", "r", "--socket", cd.socket)
    assert p.returncode == 2 and p.stdout == "", p
    p = run("--socket", cd.socket, "get", "caf\u00e9")
    assert p.returncode == 2 and p.stdout == "" and "is not a counter name" in p.stderr, p


def test_get_of_an_unknown_counter_is_exit_1(record_countd, counterd):
    # counterctl(1): a counter counterd has not used since it started is unknown: status 1, 404 on stderr, no output.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    p = cd.ctl("get", "never")
    assert p.returncode == 1 and p.stdout == "" and p.stderr.startswith("counterctl: get: 404 not_found: "), p
    assert len(p.stderr.splitlines()) == 1
    cd.ctl("next", "never")
    assert cd.ctl("get", "never").stdout == "1\n"


@pytest.mark.parametrize("opt", ["--wait-timeout", "--record-timeout", "--backoff", "--shutdown-grace"])
def test_counterd_durations_count_every_digit(tmp_path, opt):
    """A duration other than 0 is at least 1ms: the seventh and later digits of a fraction were dropped, so
    "0.0000001s" was taken as 0 (no wait limit, no record timeout) and "0.0000167m" (1.002ms) refused."""
    sock = str(tmp_path / "d.sock")
    for bad in ("0.0000001s", "0.00000001m", "0.0000009ms"):
        p = subprocess.run([harness.COUNTERD, "--socket", sock, opt, bad], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and '%s: "%s" is less than 1ms' % (opt, bad) in p.stderr, (bad, p)
    d = harness.Counterd(str(tmp_path), dead_url(), [opt, "0.0000167m"])
    try:
        d.start()
    finally:
        d.stop()


def test_counterctl_timeout_counts_every_digit(tmp_path):
    for bad in ("0.0000001s", "0.00000001m"):
        p = run("--timeout", bad, "list")
        assert p.returncode == 2 and '--timeout: "%s" is less than 1ms' % bad in p.stderr, (bad, p)
    p = run("--socket", str(tmp_path / "none.sock"), "--timeout", "0.0000167m", "list")
    assert p.returncode == 3 and "less than 1ms" not in p.stderr, p
