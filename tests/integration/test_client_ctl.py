"""counterctl against a real counterd: output a script can parse, exit codes, one-line errors; counterd's CLI."""
import json
import subprocess

import pytest

import harness
from test_client_helpers import dead_url, server_records


def run(*args, timeout=60):
    return subprocess.run([harness.COUNTERCTL] + list(args), capture_output=True, text=True, timeout=timeout)


def test_next_prints_numbers(record_countd, counterd):
    rc = record_countd("--latency", "10ms")
    cd = counterd(rc.url)
    p = cd.ctl("next", "jobs")
    assert p.returncode == 0 and p.stdout == "1\n" and p.stderr == ""
    p = cd.ctl("next", "jobs", "-n", "50", "-c", "8")
    assert p.returncode == 0, p.stderr
    assert sorted(int(x) for x in p.stdout.split()) == list(range(2, 52))
    assert cd.ctl("next").stdout == "1\n", "no NAME is the counter named default"
    assert server_records(rc, "test:jobs") == list(range(1, 52))


def test_get_list_stats_health(record_countd, counterd):
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    cd.ctl("next", "a", "-n", "3")
    cd.ctl("next", "b")
    assert cd.ctl("get", "a").stdout == "3\n"
    assert cd.ctl("list").stdout == "a 3\nb 1\n"
    p = cd.ctl("stats")
    assert p.returncode == 0 and json.loads(p.stdout)["counters"]["a"]["handed_out"] == 3
    p = cd.ctl("health")
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "ok"


def test_answers_larger_than_the_read_buffer_arrive_whole(record_countd, counterd):
    # counterctl reads an answer's head into an 8 KiB buffer; an answer that fills it must not lose a byte.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    names = ["c%02d-%s" % (i, "x" * 60) for i in range(90)]
    for n in names:
        assert cd.next(n).status == 200
    assert len(cd.get("/stats").body) > 16384 and len(cd.get("/counters").body) > 8192
    p = cd.ctl("stats")
    assert p.returncode == 0, p.stderr
    assert sorted(json.loads(p.stdout)["counters"]) == sorted(names)
    p = cd.ctl("list")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "".join("%s 1\n" % n for n in names)


def test_answer_size_limit_is_64_mib(tmp_path):
    # counterctl reads answers of up to 64 MiB (counterd's /stats for its 10,000 counters can pass 4 MiB) and refuses a
    # larger one with one line and status 3. A stand-in for counterd gives answers of exactly the limit and one byte more.
    import socket
    import threading

    limit = 64 * 1024 * 1024
    sock = str(tmp_path / "peer.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock)
    srv.listen(4)

    def serve():
        for size in (limit, limit + 1):
            c, _ = srv.accept()
            c.recv(65536)
            head, tail = b'{"counter":"x","count":7,"pad":"', b'"}\n'
            body = head + b"p" * (size - len(head) - len(tail)) + tail
            assert len(body) == size
            try:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body)
            except OSError:
                pass  # counterctl hung up on the oversized one
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        p = run("--socket", sock, "get", "x")
        assert p.returncode == 0 and p.stdout == "7\n", p.stderr
        p = run("--socket", sock, "get", "x")
        assert p.returncode == 3 and p.stdout == "", p
        assert p.stderr == "counterctl: counterd at %s sent an answer of %d bytes, over counterctl's limit of %d\n" % (
            sock, limit + 1, limit)
    finally:
        t.join(30)
        srv.close()


def test_answer_that_is_not_json_is_exit_3(tmp_path):
    # counterctl(1): an answer that is not the JSON expected is status 3 (counterd not speaking its API), one line.
    import socket
    import threading

    sock = str(tmp_path / "peer.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock)
    srv.listen(4)

    def serve():
        c, _ = srv.accept()
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json\n")
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        p = run("--socket", sock, "get", "x")
        assert p.returncode == 3 and p.stdout == "", p
        assert p.stderr == "counterctl: get: counterd's answer is not JSON\n", p
    finally:
        t.join(30)
        srv.close()


def test_next_takes_the_documented_ranges(record_countd, counterd):
    # A NAME is 1 to 64 characters; -c is 1 to 1024 (more than -n is lowered to it); one past each end is exit 2.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    longest = "n" * 64
    p = cd.ctl("next", longest, "-c", "1024", "-n", "2")
    assert p.returncode == 0 and sorted(p.stdout.split()) == ["1", "2"], p
    assert cd.ctl("get", longest).stdout == "2\n"
    for args in (["next", longest + "n"], ["get", longest + "n"], ["next", "a", "-c", "1025"],
                 ["next", "a", "-c", "0"]):
        p = cd.ctl(*args)
        assert p.returncode == 2 and p.stdout == "" and p.stderr, (args, p)


def test_next_stops_when_its_reader_goes_away(record_countd, counterd):
    # `counterctl next -n N | head -1`: once nobody reads the numbers, counterctl stops taking them (it went on and
    # used up all N, SIGPIPE being ignored) and exits 1 saying why.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    p = subprocess.Popen([harness.COUNTERCTL, "--socket", cd.socket, "next", "p", "-n", "20000", "-c", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() != b""
    p.stdout.close()
    assert p.wait(60) == 1
    assert b"cannot write the numbers" in p.stderr.read()
    p.stderr.close()
    taken = cd.get("/counters/p").json()["count"]
    assert taken < 20000, "counterctl took numbers nobody could read"


def test_output_that_cannot_be_written_is_exit_1(record_countd, counterd):
    # A full disk (/dev/full) loses the answer: counterctl must not report success.
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    assert cd.ctl("next", "o").returncode == 0
    for args in (["next", "o"], ["get", "o"], ["list"], ["stats"], ["health"]):
        with open("/dev/full", "w") as full:
            p = subprocess.run([harness.COUNTERCTL, "--socket", cd.socket] + args, stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=60)
        assert p.returncode == 1 and "No space left on device" in p.stderr, (args, p)


def test_daemon_not_running_is_one_clear_line(tmp_path):
    sock = str(tmp_path / "none.sock")
    p = run("--socket", sock, "next")
    assert p.returncode == 3
    assert p.stdout == ""
    assert p.stderr == "counterctl: cannot connect to %s: No such file or directory (is counterd running?)\n" % sock


def test_server_side_error_is_exit_1(counterd):
    cd = counterd(dead_url(), "--retries", "0")
    p = cd.ctl("next", "x")
    assert p.returncode == 1
    assert p.stderr.startswith("counterctl: next: 503 server_unreachable: ")
    assert len(p.stderr.splitlines()) == 1
    p = cd.ctl("get", "nothing")
    assert p.returncode == 1 and "404 not_found" in p.stderr
    p = cd.ctl("health")
    assert p.returncode == 1


def test_record_countd_answering_500_is_unreachable_not_a_bad_gateway(counterd):
    # counterd(8): a record-countd answering a 5xx, 500 as much as 503, is unusable (503 server_unreachable after
    # the retries, health not ok); only an unexpected answer below 500 is a 502.
    import http.server
    import threading

    class Broken(http.server.BaseHTTPRequestHandler):
        def answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            body = b'{"error":"internal","message":"broken"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cd = counterd("http://127.0.0.1:%d" % srv.server_address[1], "--retries", "0")
        p = cd.ctl("next", "x")
        assert p.returncode == 1 and p.stderr.startswith("counterctl: next: 503 server_unreachable: "), p
        assert "answered 500" in p.stderr, p
        p = cd.ctl("health")
        assert p.returncode == 1 and json.loads(p.stdout)["status"] != "ok", p
    finally:
        srv.shutdown()
        srv.server_close()


def test_timeout_bounds_a_counterd_that_never_answers(record_countd, counterd):
    import os
    import signal
    import time
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    assert cd.ctl("next").returncode == 0
    os.kill(cd.proc.pid, signal.SIGSTOP)     # it accepts (the kernel does) but never answers
    try:
        t0 = time.monotonic()
        p = run("--socket", cd.socket, "--timeout", "1s", "health", timeout=30)
        took = time.monotonic() - t0
    finally:
        os.kill(cd.proc.pid, signal.SIGCONT)
    assert p.returncode == 3 and "did not answer within 1000 ms" in p.stderr, p
    assert 0.9 < took < 10, took
    assert run("-t", "0", "--socket", cd.socket, "get", "default").stdout == "1\n"
    p = run("--timeout", "soon", "list")
    assert p.returncode == 2 and '--timeout: "soon"' in p.stderr, p


def test_timeout_bounds_the_whole_call_not_each_read(tmp_path):
    # counterctl(1): --timeout bounds a call, so a counterd trickling its answer a byte every 0.2 s (each read in time,
    # the whole answer 30 s) is given up on after the timeout, with status 3 and one line.
    import socket
    import threading
    import time

    sock = str(tmp_path / "slow.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock)
    srv.listen(4)
    stop = threading.Event()

    def serve():
        c, _ = srv.accept()
        c.recv(65536)
        answer = b'HTTP/1.1 200 OK\r\nContent-Length: 150\r\n\r\n{"counter":"x","count":7,"pad":"' + b"p" * 115 + b'"}'
        try:
            for i in range(len(answer)):
                if stop.wait(0.2):
                    break
                c.sendall(answer[i:i + 1])
        except OSError:
            pass  # counterctl gave up
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        p = run("--socket", sock, "--timeout", "1s", "get", "x", timeout=60)
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join(30)
        srv.close()
    assert p.returncode == 3 and p.stdout == "", p
    assert p.stderr == "counterctl: counterd at %s did not answer within 1000 ms (--timeout)\n" % sock, p
    assert took < 10, took


def test_options_take_every_getopt_spelling(record_countd, counterd):
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    p = run("-s" + cd.socket, "-t5s", "next", "a", "-n3")
    assert p.returncode == 0 and p.stdout == "1\n2\n3\n", p
    p = run("--socket=" + cd.socket, "--timeout=5s", "next", "--count=2", "--concurrency=2", "a")
    assert p.returncode == 0 and sorted(p.stdout.split()) == ["4", "5"], p
    p = run("--sock", cd.socket, "next", "-c2", "-n", "2", "--", "a")     # unique prefix, and -- ends options
    assert p.returncode == 0 and sorted(p.stdout.split()) == ["6", "7"], p
    assert run("-s", cd.socket, "get", "a").stdout == "7\n"


def test_usage_errors_are_exit_2(tmp_path):
    sock = str(tmp_path / "x.sock")
    for args in (["bogus"], ["next", "b@d"], ["next", "a", "-n", "0"], ["next", "a", "-c"], ["get"],
                 ["--frobnicate"], ["-x"], ["next", "-z"], ["next", "a", "b"], ["next", "-n3x"], []):
        p = run("--socket", sock, *args) if args else run()
        assert p.returncode == 2, (args, p)
        assert p.stderr, args


def test_help_and_version():
    p = run("--help")
    assert p.returncode == 0 and "Exit status" in p.stdout and "3 counterd is not reachable" in p.stdout
    assert run("--version").stdout.startswith("counterctl ")
    p = subprocess.run([harness.COUNTERD, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "unsafe" in p.stdout and "ON PURPOSE" in p.stdout and "--batch-max" in p.stdout
    assert subprocess.run([harness.COUNTERD, "--version"], capture_output=True, text=True).stdout.startswith("counterd ")


def test_counterd_rejects_bad_options(tmp_path):
    sock = str(tmp_path / "x.sock")
    for args, msg in ((["--strategy", "fast"], "--strategy"), (["--wait-timeout", "10x"], "not a duration"),
                      (["--server", "ftp://x"], "--server"), (["--client-id", "a b"], "--client-id"),
                      (["--batch-max", "0"], "--batch-max"), (["--log-level", "loud"], "--log-level"),
                      (["--shutdown-grace", "0"], "--shutdown-grace"), (["--shutdown-grace", "1x"], "not a duration"),
                      (["--record-timeout", "0"], "--record-timeout: must be more than 0"),
                      (["--strategy", "stateless", "--batch-max", "8"], "--batch-max applies to --strategy locked"),
                      (["--batch-max", "8", "--strategy", "unsafe"], "--batch-max applies to --strategy locked")):
        p = subprocess.run([harness.COUNTERD, "--socket", sock] + args, capture_output=True, text=True, timeout=10)
        assert p.returncode == 1 and msg in p.stderr, (args, p.stderr)   # counterd(8): a bad option value is 1


@pytest.mark.parametrize("args,line", [
    (["--bogus"], 'counterd: unknown option "--bogus"; see --help for the options'),
    (["--socket"], "counterd: --socket needs a value; see --help"),
    (["extra"], 'counterd: unexpected argument "extra"; see --help'),
])
def test_counterd_usage_errors_are_one_line_exit_2(args, line):
    # An unknown option printed getopt's message and then the whole --help on stderr (a screenful in the journal,
    # none of it with a priority): one line naming the problem.
    p = subprocess.run([harness.COUNTERD] + args, capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and p.stderr == line + "\n", p.stderr


def test_number_options_take_their_documented_range():
    # Each number option at both ends of the range that --help and counterd(8) give, and one past each end.
    help_text = subprocess.run([harness.COUNTERD, "--help"], capture_output=True, text=True).stdout
    for opt, lo, hi, shown in (("--batch-max", 1, 1000, "(1..1000)"), ("--backlog", 0, 10000000, "(0..10000000)"),
                               ("--retries", 0, 100, "(0..100)"), ("--connections", 1, 10000, "1..10000")):
        assert shown in help_text, opt
        for v in (lo, hi):
            p = subprocess.run([harness.COUNTERD, opt, str(v), "--help"], capture_output=True, text=True, timeout=10)
            assert p.returncode == 0, (opt, v, p.stderr)
        for v in (lo - 1, hi + 1):
            p = subprocess.run([harness.COUNTERD, opt, str(v), "--help"], capture_output=True, text=True, timeout=10)
            assert p.returncode == 1 and opt in p.stderr and "%d..%d" % (lo, hi) in p.stderr, (opt, v, p.stderr)


def test_durations_are_limited_to_a_day_as_documented():
    # Every duration option stops at 86400s (= 1440m); one millisecond more is out of range, with the usage status.
    for opt in ("--wait-timeout", "--record-timeout", "--backoff", "--shutdown-grace"):
        for ok in ("86400s", "1440m", "86400000ms"):
            p = subprocess.run([harness.COUNTERD, opt, ok, "--help"], capture_output=True, text=True, timeout=10)
            assert p.returncode == 0, (opt, ok, p.stderr)
        p = subprocess.run([harness.COUNTERD, opt, "86400001ms", "--help"], capture_output=True, text=True, timeout=10)
        assert p.returncode == 1 and "out of range (at most" in p.stderr, (opt, p.stderr)
    assert run("--timeout", "86400s", "--help").returncode == 0
    p = run("--timeout", "86400001ms", "--help")
    assert p.returncode == 2 and "out of range" in p.stderr, p
    assert "at most 86400s" in run("--help").stdout
    assert "at most 86400s" in subprocess.run([harness.COUNTERD, "--help"], capture_output=True, text=True).stdout


def test_default_socket_from_environment_and_cwd(record_countd, counterd, tmp_path):
    """Without --socket: $COUNTERD_SOCKET, then $RUNTIME_DIRECTORY/counterd.sock, then ./counterd.sock."""
    import os
    rc = record_countd("--latency", "0")
    rundir = tmp_path / "run"
    rundir.mkdir()
    cd = counterd(rc.url, socket_path=str(rundir / "counterd.sock"))
    base = {k: v for k, v in os.environ.items() if k not in ("COUNTERD_SOCKET", "RUNTIME_DIRECTORY")}

    def ctl(env, cwd):
        return subprocess.run([harness.COUNTERCTL, "next", "env"], capture_output=True, text=True, timeout=60,
                              env=dict(base, **env), cwd=cwd)

    p = ctl({"COUNTERD_SOCKET": cd.socket}, str(tmp_path))
    assert p.returncode == 0 and p.stdout == "1\n", p.stderr
    p = ctl({"RUNTIME_DIRECTORY": str(rundir)}, str(tmp_path))
    assert p.returncode == 0 and p.stdout == "2\n", p.stderr
    p = ctl({}, str(rundir))
    assert p.returncode == 0 and p.stdout == "3\n", p.stderr


def test_counterd_default_socket_is_where_counterctl_looks(record_countd, tmp_path):
    """counterd without --socket: $RUNTIME_DIRECTORY/counterd.sock, else ./counterd.sock; counterctl finds either."""
    import os
    import signal
    from test_client_helpers import poll
    rc = record_countd("--latency", "0")
    base = {k: v for k, v in os.environ.items() if k not in ("COUNTERD_SOCKET", "RUNTIME_DIRECTORY", "LISTEN_FDS")}
    rundir, cwd = tmp_path / "run", tmp_path / "cwd"
    rundir.mkdir()
    cwd.mkdir()
    for env, where, n in (({"RUNTIME_DIRECTORY": str(rundir)}, rundir, "1"), ({}, cwd, "2")):
        d = subprocess.Popen([harness.COUNTERD, "--server", rc.url, "--client-id", "dflt"], cwd=str(cwd),
                             env=dict(base, **env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            def up():
                try:
                    return harness.http_unix(str(where / "counterd.sock"), "GET", "/healthz").status in (200, 503)
                except OSError:
                    return d.poll() is not None

            poll(up, timeout=30)
            assert d.poll() is None, d.stderr.read()
            p = subprocess.run([harness.COUNTERCTL, "next", "d"], capture_output=True, text=True, timeout=60,
                               env=dict(base, **env), cwd=str(cwd))
            assert p.returncode == 0 and p.stdout == n + "\n", p
        finally:
            d.send_signal(signal.SIGTERM)
            assert d.wait(30) == 0
            d.stderr.close()
        assert not os.path.exists(str(where / "counterd.sock"))
