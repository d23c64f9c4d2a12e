#!/usr/bin/python3
"""The lockstep demo: the seed's race, shown with real daemons.

Starts record-countd (with latency and its access log) on a free loopback port and, one at a time,
a counterd per strategy on a Unix socket in a temp dir; makes the seed's two concurrent `next`
calls with each strategy, then 1,000 concurrent calls with `locked` and coalescing; prints what the
callers got, what the server recorded and in which order, the most requests it had in flight for
the counter, and the time taken; stops both daemons cleanly; and draws every request to
record-countd as a bar in demo-timeline.svg.

Standard library only. Exits 1 if a daemon misbehaves or a strategy does not show what it should.
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import demo_timeline  # noqa: E402

READY_TIMEOUT = 20.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix stream socket."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def http_json(conn, method, path):
    """One request; returns (status, parsed JSON body or None)."""
    try:
        conn.request(method, path)
        r = conn.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, None
    finally:
        conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A daemon with its stderr in a file; stop() is SIGTERM and a wait for exit status 0."""

    def __init__(self, name, argv, log_path, cwd):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
                                     start_new_session=True)

    def wait_ready(self, probe):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with status %s before it was ready:\n%s"
                                   % (self.name, self.proc.returncode, self.tail()))
            try:
                if probe():
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.02)
        raise RuntimeError("%s not ready after %.0f s:\n%s" % (self.name, READY_TIMEOUT, self.tail()))

    def tail(self, n=20):
        with open(self.log_path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join("  " + l for l in lines[-n:])

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit status (killed after timeout: -9)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def find_binaries(args):
    """Paths of the three programs: options, then the environment make check sets, then the build dir."""
    build = args.build or os.path.join(os.path.dirname(HERE), "build", "release")
    out = {}
    for key, env, rel in (("record_countd", "RECORD_COUNTD", "server/record-countd"),
                          ("counterd", "COUNTERD", "client/counterd"),
                          ("counterctl", "COUNTERCTL", "client/counterctl")):
        path = getattr(args, key) or (None if args.build else os.environ.get(env)) or os.path.join(build, rel)
        if not os.access(path, os.X_OK):
            sys.exit("demo: %s not found at %s (build first: bash scripts/build)" % (rel.split("/")[1], path))
        out[key] = os.path.abspath(path)
    return out


def fetch_records(port, client):
    """Every value the server recorded for client, in seq order."""
    values, after = [], None
    while True:
        path = "/records?client=%s&limit=1000" % client
        if after is not None:
            path += "&after=%d" % after
        status, body = http_json(http.client.HTTPConnection("127.0.0.1", port, timeout=30), "GET", path)
        if status != 200 or body is None:
            raise RuntimeError("GET %s answered %s %r" % (path, status, body))
        values += [r["value"] for r in body["records"]]
        after = body.get("next_after")
        if after is None or not body["records"]:
            return values


def short_list(values, limit=8):
    """1, 2 for short lists; a summary for long ones."""
    if len(values) <= limit:
        return ", ".join(str(v) for v in values) if values else "-"
    if values == list(range(values[0], values[0] + len(values))):
        return "%d..%d in order" % (values[0], values[-1])
    s = sorted(values)
    if s == list(range(s[0], s[0] + len(s))):
        return "%d..%d, out of order" % (s[0], s[-1])
    return "%d values, %d distinct" % (len(values), len(set(values)))


def callers_summary(got):
    """What the callers got: the numbers, or for many callers whether they were unique."""
    if len(got) <= 8:
        return ", ".join(str(v) for v in got)
    s = sorted(got)
    if len(set(s)) == len(s) and s == list(range(s[0], s[0] + len(s))):
        return "%d..%d, each once" % (s[0], s[-1])
    return "%d numbers, %d distinct" % (len(got), len(set(got)))


def run_one(bins, tmp, port, run, calls):
    """Start counterd for one run, make the concurrent calls, collect what the server saw, stop it."""
    sock = os.path.join(tmp, "counterd-%s.sock" % run["key"])
    client_id = "demo-%s" % run["key"]
    argv = [bins["counterd"], "--server", "http://127.0.0.1:%d" % port, "--socket", sock,
            "--client-id", client_id, "--strategy", run["strategy"]] + run["args"]
    d = Daemon("counterd (%s)" % run["key"], argv, os.path.join(tmp, "counterd-%s.log" % run["key"]), tmp)
    try:
        d.wait_ready(lambda: http_json(UnixHTTPConnection(sock, 5), "GET", "/healthz")[0] == 200)
        t0 = time.monotonic()
        p = subprocess.run([bins["counterctl"], "--socket", sock, "next", "-n", str(calls), "-c", str(calls)],
                           capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError("counterctl next exited %d: %s" % (p.returncode, p.stderr.strip()))
        got = [int(x) for x in p.stdout.split()]
    finally:
        status = d.stop()
    if status != 0:
        raise RuntimeError("%s exited with status %s after SIGTERM:\n%s" % (d.name, status, d.tail()))
    server_client = client_id + ":default"
    recorded = fetch_records(port, server_client)
    status, stats = http_json(http.client.HTTPConnection("127.0.0.1", port, timeout=30), "GET", "/stats")
    cs = (stats or {}).get("clients", {}).get(server_client, {})
    return dict(run, client=server_client, got=got, recorded=recorded, took=took,
                max_in_flight=cs.get("max_in_flight"), out_of_order=cs.get("out_of_order"))


def verdict(r, calls):
    """(ok, sentence): does the run show what the strategy promises?"""
    got, rec = r["got"], r["recorded"]
    unique = len(set(got)) == len(got)
    if r["strategy"] == "unsafe":
        if not unique:
            return True, "two callers got the same number: the seed's bug"
        return False, "expected a duplicate number (is record-countd's latency 0?)"
    if not unique or sorted(got) != list(range(1, calls + 1)):
        return False, "callers did not get 1..%d each once" % calls
    if r["strategy"] == "locked":
        if rec == list(range(1, calls + 1)) and r["max_in_flight"] == 1 and r["out_of_order"] == 0:
            return True, "one request at a time, recorded in order"
        return False, "expected one request at a time and 1..%d in order" % calls
    if sorted(rec) == list(range(1, calls + 1)):
        return True, "unique numbers; requests overlap, so order at the server is not guaranteed"
    return False, "server did not record 1..%d" % calls


def print_table(results, requests_per_client):
    head = ("strategy", "callers got", "server recorded (seq order)", "requests", "max in flight", "time")
    rows = []
    for r in results:
        rows.append((r["label"], callers_summary(r["got"]), short_list(r["recorded"]),
                     str(requests_per_client.get(r["client"], 0)), str(r["max_in_flight"]),
                     "%.2f s" % r["took"]))
    widths = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    print(line(head))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", help="build directory with the binaries (default: build/release)")
    ap.add_argument("--record-countd", dest="record_countd")
    ap.add_argument("--counterd")
    ap.add_argument("--counterctl")
    ap.add_argument("--latency", default="100ms", help="record-countd's latency (default 100ms)")
    ap.add_argument("--calls", type=int, default=1000, help="concurrent calls of the coalescing run (default 1000)")
    ap.add_argument("--batch-max", default="64", help="counterd --batch-max of the coalescing run (default 64)")
    ap.add_argument("--svg", default="demo-timeline.svg", help="where to write the timeline (default ./demo-timeline.svg)")
    args = ap.parse_args()
    bins = find_binaries(args)

    runs = [
        dict(key="locked", label="locked", strategy="locked", args=[], calls=2),
        dict(key="stateless", label="stateless", strategy="stateless", args=[], calls=2),
        dict(key="unsafe", label="unsafe", strategy="unsafe", args=[], calls=2),
        dict(key="batch", label="locked, --batch-max %s" % args.batch_max,
             strategy="locked", args=["--batch-max", args.batch_max], calls=args.calls),
    ]

    with tempfile.TemporaryDirectory(prefix="lockstep-demo.") as tmp:
        port = free_port()
        rc_log = os.path.join(tmp, "record-countd.log")
        print("record-countd on 127.0.0.1:%d, latency %s, database and sockets in %s" % (port, args.latency, tmp))
        server = Daemon("record-countd", [bins["record_countd"], "--listen", "127.0.0.1:%d" % port,
                                          "--db", os.path.join(tmp, "records.db"), "--latency", args.latency,
                                          "--access-log"], rc_log, tmp)
        results = []
        try:
            server.wait_ready(lambda: http_json(http.client.HTTPConnection("127.0.0.1", port, timeout=5),
                                                "GET", "/healthz")[0] == 200)
            for run in runs:
                print("  %-48s" % ("%s: %s concurrent next ..." % (run["label"], "{:,}".format(run["calls"]))),
                      end="", flush=True)
                results.append(run_one(bins, tmp, port, run, run["calls"]))
                print(" %.2f s" % results[-1]["took"])
        finally:
            status = server.stop()
        if status != 0:
            sys.exit("demo: record-countd exited with status %s after SIGTERM:\n%s" % (status, server.tail()))
        print("both daemons stopped cleanly (exit status 0)\n")

        with open(rc_log, encoding="utf-8", errors="replace") as f:
            bars = demo_timeline.parse_access_log(f)
    requests = {}
    for b in bars:
        requests[b.client] = requests.get(b.client, 0) + 1
    print_table(results, requests)
    print()
    failed = 0
    for r in results:
        ok, why = verdict(r, r["calls"])
        failed += not ok
        print("%s %s: %s" % ("ok  " if ok else "FAIL", r["label"], why))

    lanes = []
    for r in results:
        lane_bars = [b for b in bars if b.client == r["client"]]
        ok, why = verdict(r, r["calls"])
        note = "callers got %s (%s); %.2f s" % (callers_summary(r["got"]), why, r["took"])
        bad = r["strategy"] == "unsafe" or not ok
        lanes.append(demo_timeline.Lane(r["label"], r["strategy"], lane_bars, note, group=0 if r["calls"] <= 8 else 1,
                                        note_color="#c62828" if bad else None))
    svg = demo_timeline.render(lanes, title="lockstep: requests to record-countd (latency %s)" % args.latency,
                               groups=["the seed's scenario: 2 concurrent next()",
                                       "coalescing: {:,} concurrent next(), locked".format(args.calls)])
    with open(args.svg, "w", encoding="utf-8") as f:
        f.write(svg)
    print("\ntimeline written to %s" % args.svg)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        sys.exit("demo: %s" % e)
