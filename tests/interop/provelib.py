"""Shared tools for the "prove it" tests: raw HTTP over TCP and Unix sockets, concurrent load, invariant checks.

Only the standard library: the tests import it next to tests/lib/harness.py, the soak script uses it on its own.
"""
import asyncio
import json
import os
import random
import socket
import threading
import time


# ---------------------------------------------------------------- raw HTTP

def _connect(addr, timeout):
    """A socket connected to addr: (host, port) for TCP, a str path for a Unix socket."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


class Raw:
    """What a raw exchange produced: the bytes read, whether the peer closed, and the parsed first response."""

    def __init__(self, data, closed, error=None):
        self.data = data
        self.closed = closed
        self.error = error
        self.status = None
        self.headers = {}
        self.body = b""
        head, sep, rest = data.partition(b"\r\n\r\n")
        if data.startswith(b"HTTP/") and sep:
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            try:
                self.status = int(parts[1])
            except (IndexError, ValueError):
                self.status = None
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                self.headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
            n = self.headers.get("content-length")
            if n is not None and n.isdigit():
                self.body = rest[:int(n)]
            elif self.headers.get("transfer-encoding", "").lower() == "chunked":
                self.body = _dechunk(rest)
            else:
                self.body = rest

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Raw status=%r closed=%r error=%r data=%r>" % (self.status, self.closed, self.error, self.data[:300])


def _dechunk(b):
    out = b""
    while True:
        line, sep, b = b.partition(b"\r\n")
        if not sep:
            return out
        try:
            n = int(line.split(b";")[0], 16)
        except ValueError:
            return out
        if n == 0:
            return out
        out += b[:n]
        b = b[n + 2:]


def _response_complete(data):
    """True once data holds one whole HTTP response (by Content-Length or chunked end)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    hl = head.lower()
    for line in hl.split(b"\r\n")[1:]:
        if line.startswith(b"content-length:"):
            try:
                return len(rest) >= int(line.split(b":", 1)[1].strip())
            except ValueError:
                return False
    if b"transfer-encoding: chunked" in hl:
        return rest.endswith(b"0\r\n\r\n")
    return False


def raw_exchange(addr, data, timeout=5.0, chunks=None, delay=0.0, shut_write=False):
    """Send data (or the list chunks with delay between them) and read until a whole response, close or timeout.

    Never raises for a peer that resets or closes: that is reported in the result (closed/error)."""
    got = b""
    closed = False
    err = None
    try:
        s = _connect(addr, timeout)
    except OSError as e:
        return Raw(b"", True, "connect: %s" % e)
    try:
        try:
            for i, c in enumerate(chunks if chunks is not None else [data]):
                if i and delay:
                    time.sleep(delay)
                s.sendall(c)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err = "send: %s" % e
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                b = s.recv(65536)
            except socket.timeout:
                err = err or "timeout"
                break
            except OSError as e:
                err = err or "recv: %s" % e
                closed = True
                break
            if not b:
                closed = True
                break
            got += b
            if _response_complete(got):
                break
    finally:
        s.close()
    return Raw(got, closed, err)


def http_request_bytes(method, target, body=b"", headers=None, host="localhost"):
    """A well-formed HTTP/1.1 request with Connection: close."""
    h = {"Host": host, "Connection": "close"}
    if body or method in ("POST", "PUT"):
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    lines = ["%s %s HTTP/1.1" % (method, target)] + ["%s: %s" % kv for kv in h.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http(addr, method, target, body=b"", headers=None, timeout=10.0):
    """One well-formed request; returns Raw."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers = dict(headers or {}, **{"Content-Type": "application/json"})
    return raw_exchange(addr, http_request_bytes(method, target, body, headers), timeout)


def get_json(addr, target, timeout=10.0):
    r = http(addr, "GET", target, timeout=timeout)
    if r.status != 200:
        raise AssertionError("GET %s -> %r" % (target, r))
    return r.json()


# ---------------------------------------------------------------- record-countd views

def fetch_records(addr, client, page=1000):
    """Every record of client from record-countd's /records, paged with after/limit; a list of dicts in seq order."""
    out = []
    after = 0
    for _ in range(100000):
        doc = get_json(addr, "/records?client=%s&after=%d&limit=%d" % (client, after, page))
        recs = doc["records"]
        if not recs:
            break
        for r in recs:
            if r.get("client", client) != client:
                raise AssertionError("/records?client=%s returned another client's record %r" % (client, r))
        out.extend(recs)
        after = recs[-1]["seq"]
        if len(recs) < page and not any(k in doc and doc[k] for k in ("next", "next_after", "cursor")):
            break
    seqs = [r["seq"] for r in out]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "records of %s not in strict seq order: %r" % (client, seqs[:50])
    return out


def db_fingerprint(addr):
    """What must not change when hostile input is rejected: record and duplicate counts per client, from /stats."""
    st = get_json(addr, "/stats")
    clients = {cid: (c.get("recorded"), c.get("last_value")) for cid, c in st.get("clients", {}).items()}
    return {"recorded": st.get("recorded"), "duplicates": st.get("duplicates"), "clients": clients}


# ---------------------------------------------------------------- concurrent load on counterd

async def _unix_call(path, method, target, timeout):
    """One request over a Unix socket with asyncio; returns (status, body bytes) or raises."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    try:
        writer.write(http_request_bytes(method, target))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    r = Raw(data, True)
    if r.status is None:
        raise ConnectionError("no HTTP response (%d bytes: %r)" % (len(data), data[:100]))
    return r.status, r.body


class Outcome:
    """What one caller of next got."""
    __slots__ = ("daemon", "counter", "status", "count", "error", "body", "t0", "t1")

    def __init__(self, daemon, counter, t0):
        self.daemon = daemon
        self.counter = counter
        self.status = None
        self.count = None
        self.error = None
        self.body = None
        self.t0 = t0
        self.t1 = None

    def __repr__(self):
        return "<%s/%s status=%r count=%r error=%r body=%r>" % (self.daemon, self.counter, self.status, self.count,
                                                              self.error, self.body)


class Load:
    """Runs next calls on several counters of several counterd sockets from one asyncio thread until stopped.

    targets: {label: socket path}; counters: names; concurrency: callers per target; max_calls: bound per target."""

    def __init__(self, targets, counters, concurrency=32, max_calls=100000, timeout=15.0, pace=0.0):
        self.targets = dict(targets)
        self.counters = list(counters)
        self.concurrency = concurrency
        self.max_calls = max_calls
        self.timeout = timeout
        self.pace = pace
        self.outcomes = []
        self.issued = {k: 0 for k in self.targets}
        self._stop = threading.Event()
        self._thread = None
        self._paused = threading.Event()
        self.lock = threading.Lock()

    def set_target(self, label, path):
        self.targets[label] = path

    def start(self):
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def pause(self, on=True):
        if on:
            self._paused.set()
        else:
            self._paused.clear()

    def stop(self, join_timeout=60):
        self._stop.set()
        self._thread.join(join_timeout)
        if self._thread.is_alive():
            raise AssertionError("load generator did not finish within %ss (calls hang)" % join_timeout)

    def done_calls(self):
        with self.lock:
            return len(self.outcomes)

    def received(self):
        """{(label, counter): [count, ...]} of successful calls so far."""
        with self.lock:
            got = {}
            for o in self.outcomes:
                if o.status == 200 and o.count is not None:
                    got.setdefault((o.daemon, o.counter), []).append(o.count)
            return got

    async def _worker(self, label, rnd):
        while not self._stop.is_set():
            if self._paused.is_set():
                await asyncio.sleep(0.01)
                continue
            if self.issued[label] >= self.max_calls:
                return
            self.issued[label] += 1
            name = rnd.choice(self.counters)
            o = Outcome(label, name, time.monotonic())
            try:
                status, body = await _unix_call(self.targets[label], "POST", "/counters/%s/next" % name, self.timeout)
                o.status = status
                o.body = body[:500]
                if status == 200:
                    doc = json.loads(body)
                    if doc.get("counter") != name or not isinstance(doc.get("count"), int):
                        o.error = "bad 200 body"
                    else:
                        o.count = doc["count"]
            except (OSError, ConnectionError, asyncio.TimeoutError, ValueError) as e:
                o.error = "%s: %s" % (type(e).__name__, e)
                await asyncio.sleep(0.005)   # the daemon may be down: do not spin
            o.t1 = time.monotonic()
            with self.lock:
                self.outcomes.append(o)
            if self.pace:
                await asyncio.sleep(self.pace)

    async def _main(self):
        seed = int(os.environ.get("PROVE_SEED", "0")) or random.randrange(1 << 30)
        self.seed = seed
        tasks = []
        for i, label in enumerate(self.targets):
            for j in range(self.concurrency):
                tasks.append(asyncio.ensure_future(self._worker(label, random.Random(seed + 1000 * i + j))))
        await asyncio.gather(*tasks)


# ---------------------------------------------------------------- invariants

def check_error_bodies(outcomes, allow_conn_errors_in=()):
    """Every failed call got an HTTP error with a JSON body {"error", "message"}; connection errors only within
    the given (t0, t1) windows (when the test itself killed counterd). Returns a list of problems."""
    problems = []
    for o in outcomes:
        if o.status == 200 and o.error is None:
            continue
        if o.status is None:
            if not any(a <= o.t1 and o.t0 <= b for a, b in allow_conn_errors_in):
                problems.append("call without an HTTP answer while counterd was up: %r" % o)
            continue
        if o.status == 200:
            problems.append("200 with a bad body: %r" % o)
            continue
        if o.status not in (503, 504):
            problems.append("unexpected status for next under faults (want 503/504): %r" % o)
        try:
            doc = json.loads(o.body)
            if not (isinstance(doc.get("error"), str) and doc["error"] and isinstance(doc.get("message"), str)
                    and doc["message"]):
                problems.append("error body lacks error/message: %r" % o)
        except ValueError:
            problems.append("error body is not JSON: %r" % o)
    return problems


def check_locked(records, received, counter_label):
    """locked: records are exactly 1..M in seq order; each received number is recorded and received once."""
    problems = []
    values = [r["value"] for r in records]
    if values != list(range(1, len(values) + 1)):
        bad = next((i for i, v in enumerate(values) if v != i + 1), None)
        problems.append("%s: records are not exactly 1..M in order; first difference at position %s: %r" %
                        (counter_label, bad, values[max(0, (bad or 0) - 3):(bad or 0) + 5]))
    dup = sorted({v for v in received if received.count(v) > 1}) if len(set(received)) != len(received) else []
    if dup:
        problems.append("%s: numbers handed to more than one caller: %r" % (counter_label, dup[:20]))
    missing = sorted(set(received) - set(values))
    if missing:
        problems.append("%s: numbers handed out but not recorded: %r" % (counter_label, missing[:20]))
    return problems


def check_stateless(records, received, counter_label):
    """stateless: no number received twice; every received number recorded; each value recorded at most once."""
    problems = []
    values = [r["value"] for r in records]
    if len(set(values)) != len(values):
        problems.append("%s: a value recorded twice (not idempotent): %r" % (counter_label, values[:30]))
    if len(set(received)) != len(received):
        dup = sorted({v for v in received if received.count(v) > 1})
        problems.append("%s: numbers handed to more than one caller: %r" % (counter_label, dup[:20]))
    missing = sorted(set(received) - set(values))
    if missing:
        problems.append("%s: numbers handed out but not recorded: %r" % (counter_label, missing[:20]))
    return problems


# ---------------------------------------------------------------- process figures

def proc_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def sanitizer_report(log_text):
    """The first line of a sanitizer report in a daemon log, or None."""
    for line in log_text.splitlines():
        if "Sanitizer" in line or "runtime error:" in line:
            return line
    return None


def wait_until(pred, timeout, what, step=0.02):
    """Poll pred() until true; AssertionError naming what after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (OSError, AssertionError, ValueError):
            pass
        time.sleep(step)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def burst(path, names, n, concurrency=100, timeout=30.0):
    """n next calls spread over counters names, at most concurrency at once; returns the Outcomes in call order."""
    async def main():
        sem = asyncio.Semaphore(concurrency)

        async def one(i):
            name = names[i % len(names)]
            o = Outcome("burst", name, time.monotonic())
            async with sem:
                try:
                    status, body = await _unix_call(path, "POST", "/counters/%s/next" % name, timeout)
                    o.status, o.body = status, body[:500]
                    if status == 200:
                        o.count = json.loads(body).get("count")
                except (OSError, ConnectionError, asyncio.TimeoutError, ValueError) as e:
                    o.error = "%s: %s" % (type(e).__name__, e)
            o.t1 = time.monotonic()
            return o
        return await asyncio.gather(*[one(i) for i in range(n)])
    return asyncio.run(main())
