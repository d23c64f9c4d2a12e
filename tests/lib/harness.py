"""Start and talk to the real lockstep daemons in tests: free loopback ports, temp dirs, no sleeps for readiness.

Binaries come from the environment that `make check` sets (RECORD_COUNTD, COUNTERD, COUNTERCTL).
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import time

RECORD_COUNTD = os.environ.get("RECORD_COUNTD", "server/record-countd")
COUNTERD = os.environ.get("COUNTERD", "client/counterd")
COUNTERCTL = os.environ.get("COUNTERCTL", "client/counterctl")
TOP_SRCDIR = os.environ.get("TOP_SRCDIR", ".")
READY_TIMEOUT = float(os.environ.get("LOCKSTEP_READY_TIMEOUT", "20"))

# Every daemon spawned and not yet checked for a sanitizer report (conftest.py checks them after each test).
SPAWNED = []


def sanitizer_report(log_text):
    """The first line of an ASan, LSan, UBSan or TSan report in a daemon's log, or None."""
    for line in log_text.splitlines():
        if "Sanitizer" in line or "runtime error:" in line:
            return line
    return None


def free_port():
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix stream socket (what `curl --unix-socket` does)."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Response:
    """Status, headers and body of one answer; .json() parses the body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:200])


def request(conn, method, path, body=None, headers=None):
    """Send one request on conn and return a Response (the connection is closed afterwards)."""
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def http_tcp(host, port, method, path, body=None, headers=None, timeout=30):
    """One HTTP request over TCP."""
    return request(http.client.HTTPConnection(host, port, timeout=timeout), method, path, body, headers)


def http_unix(sock_path, method, path, body=None, headers=None, timeout=30):
    """One HTTP request over a Unix socket."""
    return request(UnixHTTPConnection(sock_path, timeout=timeout), method, path, body, headers)


class Daemon:
    """A daemon process with its stderr in a log file; stop() sends SIGTERM and waits."""

    def __init__(self, workdir, name):
        self.workdir = workdir
        self.name = name
        self.proc = None
        self.log_path = os.path.join(workdir, "%s.%d.log" % (name, id(self)))

    nofile = None  # if set, the daemon's open-files limit, soft and hard (as LimitNOFILE= would set it)

    def spawn(self, argv, env=None):
        e = dict(os.environ)
        e.update(env or {})
        self.log = open(self.log_path, "ab")
        preexec = None
        if self.nofile is not None:
            import resource
            n = self.nofile
            preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))  # noqa: E731
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     env=e, start_new_session=True, preexec_fn=preexec)
        if self not in SPAWNED:
            SPAWNED.append(self)

    def wait_ready(self, probe):
        """Poll probe() until it returns true; fail with the daemon's log if it exits or times out."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s before it was ready:\n%s" % (self.name, self.proc.returncode, self.read_log()))
            try:
                if probe():
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.02)
        raise RuntimeError("%s not ready after %.0fs:\n%s" % (self.name, READY_TIMEOUT, self.read_log()))

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code (SIGKILL after timeout)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class RecordCountd(Daemon):
    """record-countd on a free 127.0.0.1 port with its database in the test's temp dir."""

    def __init__(self, workdir, args, port=None, db=None, env=None, nofile=None):
        super().__init__(workdir, "record-countd")
        self.nofile = nofile
        self.port = port or free_port()
        self.db = db or os.path.join(workdir, "records.db")
        self.args = args
        self.env = env

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        argv = [RECORD_COUNTD, "--listen", "127.0.0.1:%d" % self.port, "--db", self.db] + self.args
        self.spawn(argv, self.env)
        self.wait_ready(lambda: self.get("/healthz").status == 200)
        return self

    def restart(self):
        self.stop()
        return self.start()

    def get(self, path, **kw):
        return http_tcp("127.0.0.1", self.port, "GET", path, **kw)

    def post(self, path, body=None, **kw):
        return http_tcp("127.0.0.1", self.port, "POST", path, body, **kw)


class Counterd(Daemon):
    """counterd on a Unix socket in the test's temp dir, recording to server_url."""

    def __init__(self, workdir, server_url, args, socket_path=None, client_id="test", env=None, nofile=None):
        super().__init__(workdir, "counterd")
        self.nofile = nofile
        self.server_url = server_url
        self.socket = socket_path or os.path.join(workdir, "counterd.%d.sock" % id(self))
        self.client_id = client_id
        self.args = args
        self.env = env

    def start(self, ready=True):
        argv = [COUNTERD, "--server", self.server_url, "--socket", self.socket, "--client-id", self.client_id] + self.args
        self.spawn(argv, self.env)
        # Ready means the socket answers HTTP; healthz may still report the server as unreachable.
        self.wait_ready(lambda: self.get("/healthz").status in (200, 503))
        return self

    def restart(self):
        self.stop()
        return self.start()

    def get(self, path, **kw):
        return http_unix(self.socket, "GET", path, **kw)

    def post(self, path, body=None, **kw):
        return http_unix(self.socket, "POST", path, body, **kw)

    def next(self, name="default", **kw):
        return self.post("/counters/%s/next" % name, **kw)

    def ctl(self, *args, timeout=60):
        """Run counterctl against this daemon; returns CompletedProcess with text output."""
        return subprocess.run([COUNTERCTL, "--socket", self.socket] + list(args), capture_output=True,
                              text=True, timeout=timeout)
