"""counterd's and counterctl's documentation against the programs: the claims of counterd(8), counterctl(1), both
--help texts, docs/systemd.md and README.md's counterd/counterctl parts that no other test asserts, and the documents
kept in step with each other and with the code (options, defaults, commands, metric families, examples).

The other claims are asserted where the behaviour is tested: test_client_*.py, test_prove_cli.py (counterctl's exit
statuses and output), test_prove_http.py (HTTP details), test_prove_metrics.py, test_prove_defaults.py (the default
time limits waited out), test_prove_interop.py (README's tour) and tests/systemd/ (units, activation, journal).

The man pages are read from their roff source with a small reader of the few macros they use, so the tests need
neither man(1) nor groff.
"""
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess

import pytest

import harness
from roff import flat, section
from harness import COUNTERCTL, COUNTERD, RECORD_COUNTD, TOP_SRCDIR, free_port, http_unix
from test_client_helpers import poll, raw_bytes, server_records

CURL = os.environ.get("CURL") or shutil.which("curl") or "curl"
COUNTERD_MAN = os.path.join(TOP_SRCDIR, "man", "counterd.8")
COUNTERCTL_MAN = os.path.join(TOP_SRCDIR, "man", "counterctl.1")
README = os.path.join(TOP_SRCDIR, "README.md")
SYSTEMD_MD = os.path.join(TOP_SRCDIR, "docs", "systemd.md")
COUNTERD_C = os.path.join(TOP_SRCDIR, "client", "counterd.c")
COUNTERCTL_C = os.path.join(TOP_SRCDIR, "client", "counterctl.c")


# --- reading the documents -------------------------------------------------------------------------------------

def tagged(path, title):
    """{tag: its paragraph as one line} of the .TP entries of a section."""
    out, cur = {}, None
    for kind, text in section(path, title):
        if kind == "TP":
            cur = text.strip()
            out[cur] = ""
        elif cur is not None:
            out[cur] += " " + text.strip()
    return {k: re.sub(r"\s+", " ", v).strip() for k, v in out.items()}


def run(argv, **kw):
    kw.setdefault("timeout", 30)
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def clean_env(**extra):
    e = {k: v for k, v in os.environ.items()
         if k not in ("COUNTERD_SOCKET", "RUNTIME_DIRECTORY", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                      "NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM", "POSIXLY_CORRECT")}
    e.update(extra)
    return e


def counterd_help():
    p = run([COUNTERD, "--help"], env=clean_env())
    assert p.returncode == 0 and p.stderr == "", p
    return p.stdout


def counterd_help_options():
    """{--name: (argument or None, its text with continuation lines as one line)} of counterd --help."""
    opts, cur = {}, None
    for line in counterd_help().splitlines():
        m = re.match(r"^  (--[\w-]+)(?: ([A-Z]+))?(?:\s+(.*))?$", line)
        if m and not line.startswith("  --version, --help"):
            cur = m.group(1)
            opts[cur] = [m.group(2), m.group(3) or ""]
        elif line.startswith("  --version, --help"):
            opts["--version"] = [None, ""]
            opts["--help"] = [None, ""]
            cur = None
        elif cur is not None and line.startswith(" " * 24):
            opts[cur][1] += " " + line.strip()
        else:
            cur = None
    return {k: (a, re.sub(r"\s+", " ", t).strip()) for k, (a, t) in opts.items()}


def counterd_man_options():
    """{--name: (argument or None, paragraph)} of counterd(8) OPTIONS."""
    out = {}
    for tag, text in tagged(COUNTERD_MAN, "OPTIONS").items():
        m = re.match(r"^(--[\w-]+)(?: (\S+))?$", tag)
        assert m, "an OPTIONS tag of counterd(8) is not --name [ARG]: %r" % tag
        out[m.group(1)] = (m.group(2), text)
    return out


def code_longopts(path):
    """{--name: (takes an argument, its getopt letter)} of the struct option tables in a C file."""
    with open(path) as f:
        src = f.read()
    found = re.findall(r'\{\s*"([\w-]+)",\s*(required_argument|no_argument),\s*NULL,\s*\'(\w)\'\s*\}', src)
    assert found, path
    return {"--" + n: (kind == "required_argument", short) for n, kind, short in found}


def start_counterd(tmp_path, args, env=None, name="cd", cwd=None):
    """counterd with exactly args (nothing added), ready once its socket answers; returns the Daemon."""
    d = harness.Daemon(str(cwd or tmp_path), name)
    d.spawn([COUNTERD] + args, clean_env(**(env or {})))
    return d


def ready(d, sock):
    d.wait_ready(lambda: http_unix(sock, "GET", "/healthz").status in (200, 503))
    return d


def valid_hostname():
    h = socket.gethostname()
    if not (1 <= len(h) <= 63 and re.match(r"^[A-Za-z0-9._:-]+$", h)):
        pytest.skip("this host name (%r) is not a usable client id" % h)
    return h


# --- counterd: the man page, --help, README and the code agree -------------------------------------------------

def test_counterd_man_help_and_code_have_the_same_options():
    man, hlp, code = counterd_man_options(), counterd_help_options(), code_longopts(COUNTERD_C)
    assert set(man) == set(code), "counterd(8) OPTIONS vs longopts: %s" % (set(man) ^ set(code))
    assert set(hlp) == set(code), "counterd --help vs longopts: %s" % (set(hlp) ^ set(code))
    for name, (takes_arg, _) in code.items():
        assert (man[name][0] is not None) == takes_arg, (name, man[name])
        assert (hlp[name][0] is not None) == takes_arg, (name, hlp[name])
    synopsis = flat(section(COUNTERD_MAN, "SYNOPSIS"))
    shown = re.findall(r"\[(--[\w-]+)(?: ([^\]]*?))? ?\]", synopsis)
    assert len(shown) == 5, synopsis
    for name, arg in shown:
        assert name in code and man[name][0] == arg, (name, arg, man.get(name))
    # The strategies the man page and --help name are the ones --strategy takes, and only those.
    assert man["--strategy"][0] == "locked|stateless|unsafe"
    assert set(tagged(COUNTERD_MAN, "STRATEGIES")) == {"locked", "stateless", "unsafe"}
    for s in ("locked", "stateless", "unsafe"):
        assert "%s" % s in hlp["--strategy"][1]
        assert run([COUNTERD, "--strategy", s, "--help"]).returncode == 0, s
    p = run([COUNTERD, "--strategy", "Locked", "--help"])
    assert p.returncode == 1 and "use locked, stateless or unsafe" in p.stderr, p
    # --log-level: the four words of both documents, and nothing else.
    assert "One of error, warn, info (the default) or debug." in man["--log-level"][1], man["--log-level"]
    assert hlp["--log-level"][1] == "error, warn, info (default) or debug", hlp["--log-level"]
    p = run([COUNTERD, "--log-level", "trace", "--help"])
    assert p.returncode == 1 and "use error, warn, info or debug" in p.stderr, p


def man_default(text):
    m = re.search(r"Default: (.+?)(?:[.;,](?:\s|$)| when | for )", text) or re.search(r"(\S+) \(the default\)", text)
    return m.group(1) if m else None


def help_default(text):
    m = re.search(r"\(default:? (.+?)(?:[;,)]| for )", text) or re.search(r"(\S+) \(default\)", text)
    return m.group(1) if m else None


def test_counterd_man_and_help_state_the_same_defaults():
    man, hlp = counterd_man_options(), counterd_help_options()
    expected = {"--server": "http://127.0.0.1:8080", "--socket": "$RUNTIME_DIRECTORY/counterd.sock",
                "--client-id": "host name", "--strategy": "locked", "--batch-max": "64", "--backlog": "10000",
                "--wait-timeout": "30s", "--record-timeout": "5s", "--retries": "3", "--backoff": "50ms",
                "--connections": "64", "--shutdown-grace": "30s", "--log-level": "info"}
    for name in sorted(set(man) - {"--version", "--help"}):
        m, h = man_default(man[name][1]), help_default(hlp[name][1])
        if name == "--client-id":
            m, h = m.replace("the ", ""), h
        if name == "--strategy":
            h = re.match(r"(\w+) \(default\)", hlp[name][1]).group(1)
        assert m == expected[name] and h == expected[name], "%s: counterd(8) %r, --help %r" % (name, m, h)
    # The second half of the two-part defaults.
    assert "otherwise ./counterd.sock" in man["--socket"][1] and "else ./counterd.sock" in hlp["--socket"][1]
    assert "1024 for stateless and unsafe" in man["--connections"][1]
    assert "1024 for stateless and unsafe" in hlp["--connections"][1]
    assert "0 waits without limit" in man["--wait-timeout"][1] and "0: no limit" in hlp["--wait-timeout"][1]
    # And the code's own defaults, where main() sets them.
    with open(COUNTERD_C) as f:
        src = f.read()
    for pat in (r"record_timeout = 5000, backoff = 50, retries = 3", r"cc\.batch_max = 64;", r"cc\.backlog = 10000;",
                r"cc\.wait_timeout_ms = 30000;", r"#define SHUTDOWN_GRACE_MS 30000",
                r'server = "http://127\.0\.0\.1:8080"', r"cc\.strategy == STRATEGY_LOCKED \? 64 : 1024"):
        assert re.search(pat, src), pat


def test_counterd_defaults_are_in_effect(tmp_path):
    """counterd started with --socket alone: /stats and its start-up line show the documented defaults (strategy
    locked, --batch-max 64, --backlog 10000, --server http://127.0.0.1:8080, the host name as --client-id)."""
    host = valid_hostname()
    sock = str(tmp_path / "d.sock")
    d = ready(start_counterd(tmp_path, ["--socket", sock]), sock)
    try:
        st = http_unix(sock, "GET", "/stats").json()
        assert (st["strategy"], st["batch_max"], st["backlog"], st["server"], st["client_id"]) == \
            ("locked", 64, 10000, "http://127.0.0.1:8080", host), st
        h = http_unix(sock, "GET", "/healthz").json()
        assert h["server"] == "http://127.0.0.1:8080", h
    finally:
        assert d.stop() == 0
    assert ("serving on %s (strategy locked, batch-max 64), recording to http://127.0.0.1:8080 as %s:NAME"
            % (sock, host)) in d.read_log(), d.read_log()


def test_default_client_id_is_the_host_name_at_record_countd(record_countd, tmp_path):
    """--client-id: "Default: the host name"; counter NAME is then recorded as client HOST:NAME."""
    host = valid_hostname()
    rc = record_countd("--latency", "0")
    sock = str(tmp_path / "h.sock")
    d = ready(start_counterd(tmp_path, ["--socket", sock, "--server", rc.url]), sock)
    try:
        assert http_unix(sock, "POST", "/counters/hn/next").json() == {"counter": "hn", "count": 1}
    finally:
        assert d.stop() == 0
    assert server_records(rc, "%s:hn" % host) == [1]


def test_routes_are_the_same_in_the_code_man_help_and_readme():
    """The route table of client/api.c, counterd(8) HTTP API's entries, the API line of --help and README.md's
    table name the same routes."""
    with open(os.path.join(TOP_SRCDIR, "client", "api.c")) as f:
        code = {(m, p.replace("*", "NAME")) for m, p in
                re.findall(r'\{EVHTTP_REQ_\w+, "(\w+)", "(/[^"]*)", api_\w+\}', f.read())}
    assert len(code) == 7, code
    man = set()
    for tag in tagged(COUNTERD_MAN, "HTTP API"):
        man |= set(re.findall(r"(GET|POST) (/\S+?)(?:,|$)", tag))
    hlp = counterd_help().split("API (")[1]
    helped = set(re.findall(r"(GET|POST) (/[\w/]+)", hlp))
    with open(README) as f:
        readme = f.read()
    table = readme[readme.index("## counterd and counterctl"):readme.index("Counter names are")]
    listed = set(re.findall(r"`(GET|POST) (/[\w/]+)`", table))
    assert man == code, "counterd(8) vs api.c: %s" % (man ^ code)
    assert helped == code, "--help vs api.c: %s" % (helped ^ code)
    assert listed == code, "README.md vs api.c: %s" % (listed ^ code)


def test_readme_names_counterds_options_and_defaults():
    with open(README) as f:
        readme = f.read()
    part = readme[readme.index("Options (`counterd --help`, `man counterd`)"):]
    part = re.sub(r"\s+", " ", part[:part.index("\n\n")])
    listed = set(re.findall(r"`(--[\w-]+)", part.split("`counterctl` exit status")[0]))
    code = set(code_longopts(COUNTERD_C)) - {"--version", "--help"}
    assert listed == code, "README.md's counterd options vs the code: %s" % (listed ^ code)
    man = counterd_man_options()
    m = re.search(r"`--shutdown-grace` \((\S+?);", part)
    assert m and m.group(1) == man_default(man["--shutdown-grace"][1]), part
    m = re.search(r"`--timeout` \(default (\S+?)\)", part)
    assert m and m.group(1) == man_default(tagged(COUNTERCTL_MAN, "OPTIONS")["-t, --timeout DURATION"]), part
    assert "with `--batch-max N` (default %s)" % man_default(man["--batch-max"][1]) in re.sub(r"\s+", " ", readme)
    assert "1..64 characters of `[A-Za-z0-9._-]`" in readme and "at most 10,000" in readme


# --- counterctl: the man page, --help and the code agree -------------------------------------------------------

def test_counterctl_man_help_and_code_have_the_same_options_and_commands():
    man = tagged(COUNTERCTL_MAN, "OPTIONS")
    man_opts = {}
    for tag, text in man.items():
        m = re.match(r"^-(\w), (--[\w-]+)(?: (\S+))?$", tag)
        assert m, "an OPTIONS tag of counterctl(1) is not -x, --name [ARG]: %r" % tag
        man_opts[m.group(2)] = (m.group(1), m.group(3), text)
    code = code_longopts(COUNTERCTL_C)
    assert set(man_opts) == set(code), set(man_opts) ^ set(code)
    p = run([COUNTERCTL, "--help"])
    assert p.returncode == 0 and p.stderr == "", p
    hlp = p.stdout
    for name, (takes_arg, short) in code.items():
        assert man_opts[name][0] == short and (man_opts[name][1] is not None) == takes_arg, (name, man_opts[name])
        assert re.search(r"-%s(?:, |\|)%s\b" % (short, name), hlp) or "-%s, %s" % (short, name) in hlp or \
            "(-%s, %s:" % (short, name) in hlp, "counterctl --help does not name -%s, %s" % (short, name)
    # Ranges and defaults, the same in both.
    assert "(1 to 100000000, default 1)" in man_opts["--count"][2]
    assert "--count: 1 to 100000000, default 1)" in hlp
    assert "(1 to 1024, default 1;" in man_opts["--concurrency"][2]
    assert "--concurrency: 1 to 1024, default 1)" in re.sub(r"\s+", " ", hlp)
    assert man_default(man_opts["--timeout"][2]) == "120s" and "(default 120s," in hlp
    # The commands: COMMANDS' tags, --help's and the ones main() takes.
    man_cmds = {t.split()[0] for t in tagged(COUNTERCTL_MAN, "COMMANDS")}
    help_cmds = set(re.findall(r"^  (\w+)(?= |$)", hlp.split("Options:")[0], re.M))
    with open(COUNTERCTL_C) as f:
        code_cmds = set(re.findall(r'strcmp\(argv\[0\], "(\w+)"\)', f.read()))
    assert man_cmds == help_cmds == code_cmds == {"next", "get", "list", "stats", "health"}, \
        (man_cmds, help_cmds, code_cmds)
    synopsis = flat(section(COUNTERCTL_MAN, "SYNOPSIS"))
    assert "list|stats|health" in synopsis and "get NAME" in synopsis and "next [NAME]" in synopsis


def test_counterctl_short_help_and_version():
    """-h and -V: "Print a summary (the version) on standard output and exit 0", as --help and --version do."""
    for short, long_ in (("-h", "--help"), ("-V", "--version")):
        a, b = run([COUNTERCTL, short]), run([COUNTERCTL, long_])
        assert a.returncode == 0 and a.stderr == "" and a.stdout == b.stdout and a.stdout, (short, a)
    assert run([COUNTERCTL, "-V"]).stdout == "counterctl %s\n" % run([COUNTERD, "--version"]).stdout.split()[1]
    # With no command at all the summary goes to standard error, status 2.
    p = run([COUNTERCTL])
    assert p.returncode == 2 and p.stdout == "" and p.stderr == run([COUNTERCTL, "-h"]).stdout


# --- counterd: limits and syntax -------------------------------------------------------------------------------

def test_client_id_is_1_to_63_characters_and_fits_record_countd(record_countd, tmp_path):
    """--client-id "is 1 to 63 characters of [A-Za-z0-9._:-], so that ID:NAME fits record-countd's 128"."""
    text = flat(section(COUNTERD_MAN, "HTTP API"))
    assert "--client-id is 1 to 63 characters of [A-Za-z0-9._:-], so that ID:NAME fits record-countd's 128" in text
    rc = record_countd("--latency", "0")
    cid = ("a.b_c-d:E9" * 7)[:63]
    name = "n" * 64
    sock = str(tmp_path / "id.sock")
    d = ready(start_counterd(tmp_path, ["--socket", sock, "--server", rc.url, "--client-id", cid]), sock)
    try:
        assert http_unix(sock, "POST", "/counters/%s/next" % name).json()["count"] == 1
    finally:
        assert d.stop() == 0
    assert server_records(rc, "%s:%s" % (cid, name)) == [1]
    for bad in ("x" * 64, "", "a/b", "a b", "caf\u00e9"):
        p = run([COUNTERD, "--socket", str(tmp_path / "bad.sock"), "--client-id", bad])
        assert p.returncode == 1, (bad, p)
        assert p.stderr == 'counterd: --client-id: "%s": use 1..63 of A-Z a-z 0-9 . _ : -\n' % bad, p.stderr
    assert not os.path.exists(str(tmp_path / "bad.sock"))


@pytest.mark.parametrize("host", ["localhost", "[::1]"])
def test_server_host_may_be_a_name_or_an_ipv6_address(tmp_path, host):
    """--server: "The host is an IPv4 address, an IPv6 address in brackets, or a name" (record-countd listens on
    127.0.0.1 for the name, which resolves to it, and on [::1] only for the IPv6 address)."""
    assert "an IPv6 address in brackets, or a name" in counterd_man_options()["--server"][1]
    family, addr = (socket.AF_INET, "127.0.0.1") if host == "localhost" else (socket.AF_INET6, "::1")
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("no %s loopback here" % addr)
    rc = harness.Daemon(str(tmp_path), "record-countd")
    listen = "%s:%d" % ("127.0.0.1" if host == "localhost" else "[::1]", port)
    rc.spawn([RECORD_COUNTD, "--listen", listen, "--db", str(tmp_path / "r.db"), "--latency", "0"])
    try:
        rc.wait_ready(lambda: harness.http_tcp(addr, port, "GET", "/healthz").status == 200)
        sock = str(tmp_path / "srv.sock")
        url = "http://%s:%d" % (host, port)
        d = ready(start_counterd(tmp_path, ["--socket", sock, "--server", url, "--client-id", "h"]), sock)
        try:
            r = http_unix(sock, "POST", "/counters/c/next")
            assert r.status == 200 and r.json()["count"] == 1, r
            assert http_unix(sock, "GET", "/healthz").json()["server_state"] == "reachable"
        finally:
            assert d.stop() == 0
        assert harness.http_tcp(addr, port, "GET", "/clients/h:c").json()["last_value"] == 1
    finally:
        rc.stop()


def test_socket_paths_up_to_107_bytes(record_countd, tmp_path):
    """counterctl(1): not reachable (status 3) when the socket's "path is longer than 107 bytes"; a path of 107
    bytes is served by counterd and reached by counterctl."""
    assert "its path is longer than 107 bytes" in flat(section(COUNTERCTL_MAN, "EXIT STATUS"))
    rc = record_countd("--latency", "0")
    room = 107 - len(str(tmp_path).encode()) - 1
    if room < 10:
        pytest.skip("the temporary directory's path is too long")
    path = str(tmp_path) + "/" + "c" * (room - 5) + ".sock"
    assert len(path.encode()) == 107, len(path)
    cd = ready(start_counterd(tmp_path, ["--socket", path, "--server", rc.url, "--client-id", "long"]), path)
    try:
        p = run([COUNTERCTL, "--socket", path, "next"])
        assert p.returncode == 0 and p.stdout == "1\n", p
        longer = path + "x"
        p = run([COUNTERCTL, "--socket", longer, "next"])
        assert p.returncode == 3 and p.stderr == "counterctl: socket path %s is too long\n" % longer, p
        p = run([COUNTERD, "--socket", longer, "--server", rc.url])
        assert p.returncode == 1 and "is longer than 107 bytes" in p.stderr, p
    finally:
        assert cd.stop() == 0


def test_runtime_directory_takes_its_first_directory(record_countd, tmp_path):
    """RUNTIME_DIRECTORY may list several directories (colon-separated, as systemd sets it for several
    RuntimeDirectory= entries): counterd serves, and counterctl looks, in the first."""
    assert "(the first of its colon-separated directories)" in tagged(COUNTERCTL_MAN, "OPTIONS")[
        "-s, --socket PATH"]
    rc = record_countd("--latency", "0")
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    env = {"RUNTIME_DIRECTORY": "%s:%s" % (first, second)}
    d = start_counterd(tmp_path, ["--server", rc.url, "--client-id", "rt"], env=env)
    ready(d, str(first / "counterd.sock"))
    try:
        p = run([COUNTERCTL, "next", "r"], env=clean_env(**env), cwd=str(second))
        assert p.returncode == 0 and p.stdout == "1\n", p
        assert not os.path.exists(str(second / "counterd.sock"))
    finally:
        assert d.stop() == 0
    assert not os.path.exists(str(first / "counterd.sock")), "removed on exit"


# --- counterd: options in effect --------------------------------------------------------------------------------

def test_log_levels_filter_as_documented(record_countd, tmp_path):
    """--log-level error, warn, info (the default) or debug: each shows its level and the ones above it."""
    rc = record_countd("--latency", "0")
    logs = {}
    for level in ("error", "warn", "info", "debug", None):
        sock = str(tmp_path / ("%s.sock" % level))
        args = ["--socket", sock, "--server", rc.url, "--client-id", "lv", "--strategy", "unsafe"]
        d = ready(start_counterd(tmp_path, args + (["--log-level", level] if level else []), name=str(level)), sock)
        assert http_unix(sock, "POST", "/counters/lv/next").status == 200
        assert d.stop() == 0
        logs[level] = d.read_log()
    warn, info, debug = "--strategy unsafe: reproducing", "serving on ", "counter lv created"
    assert logs["error"] == "", logs["error"]
    assert warn in logs["warn"] and info not in logs["warn"] and debug not in logs["warn"], logs["warn"]
    for level in ("info", None):
        assert warn in logs[level] and info in logs[level] and debug not in logs[level], logs[level]
    assert warn in logs["debug"] and info in logs["debug"] and debug in logs["debug"], logs["debug"]


async def _next_all(sock, names):
    async def one(name):
        r, w = await asyncio.open_unix_connection(sock)
        w.write(("POST /counters/%s/next HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                 % name).encode())
        await w.drain()
        data = await r.read()
        w.close()
        return int(data.split(b" ", 2)[1])
    return await asyncio.gather(*[one(n) for n in names])


@pytest.mark.parametrize("strategy,default,calls", [("locked", 64, 70), ("stateless", 1024, 1030)])
def test_connections_default_per_strategy(record_countd, counterd, strategy, default, calls):
    """--connections: "Default: 64 for locked, 1024 for stateless and unsafe"; more calls queue for a free
    connection. 70 locked counters (one recording each) or 1030 stateless calls meet a slow record-countd: the
    pool stops at the default and the rest wait in the queue."""
    import threading
    rc = record_countd("--latency", "3s")
    cd = counterd(rc.url, "--strategy", strategy, client_id=strategy)
    names = ["c%d" % i for i in range(calls)] if strategy == "locked" else ["one"] * calls
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", asyncio.run(_next_all(cd.socket, names))))
    t.start()
    seen = []

    def full():
        r = cd.get("/stats").json()["recorder"]
        seen.append(r["connections"])
        return r if r["connections"] == default and r["queued"] == calls - default else None
    try:
        poll(full, timeout=30)
        assert max(seen) == default, "never more connections than the default: %s" % sorted(set(seen))
    finally:
        t.join(60)
    assert box["r"] == [200] * calls


def test_a_fraction_of_a_millisecond_past_1ms_is_dropped(record_countd, counterd, tmp_path):
    """OPTIONS: "a fraction of a millisecond past that is dropped (1.5ms is 1ms)". --shutdown-grace says the value
    it took when it expires."""
    assert "a fraction of a millisecond past that is dropped (1.5ms is 1ms)" in flat(section(COUNTERD_MAN, "OPTIONS"))
    rc = record_countd("--latency", "2s")
    for given, ms in (("1.5ms", 1), ("0.0029s", 2), ("0.00005m", 3)):
        cd = counterd(rc.url, "--shutdown-grace", given, client_id="g%d" % ms)
        t = subprocess.Popen([COUNTERCTL, "--socket", cd.socket, "next"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        poll(lambda: cd.get("/stats").json()["counters"].get("default", {}).get("in_flight") == 1)
        cd.signal(signal.SIGTERM)
        assert cd.proc.wait(20) == 1
        out, err = t.communicate(timeout=20)
        assert t.returncode == 1 and "503 shutting_down" in err, (out, err)
        assert "--shutdown-grace (%dms) expired with 1 call(s) unanswered" % ms in cd.read_log(), cd.read_log()


# --- counterd: strategies, signals -----------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["locked", "stateless"])
def test_a_failed_recording_is_reused_by_locked_and_a_gap_for_stateless(record_countd, counterd, strategy):
    """STRATEGIES: locked: "If recording fails after all retries, the waiting callers get an error and the number is
    not consumed: the next call uses it again"; stateless: "a number whose recording failed is a gap"."""
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url, "--strategy", strategy, "--retries", "0", client_id=strategy)
    assert cd.next("f").json()["count"] == 1
    rc.kill()
    for _ in range(2):
        r = cd.next("f")
        assert r.status == 503 and r.json()["error"] == "server_unreachable", r
    # "A record that failed after its retries is a warning, one line per 10 s at most": for locked a failed batch
    # (here two, each of one call), for stateless and unsafe a failed call.
    lines = [x for x in cd.read_log().splitlines() if "counter f: recording" in x]
    if strategy == "locked":
        assert len(lines) == 1 and "counter f: recording 1 value(s) failed: " in lines[0], lines
    else:
        assert len(lines) == 1 and "counter f: recording 2 failed: " in lines[0], lines
    rc.start()
    poll(lambda: cd.get("/healthz").status == 200)
    want = 2 if strategy == "locked" else 4
    assert cd.next("f").json() == {"counter": "f", "count": want}
    assert server_records(rc, "%s:f" % strategy) == [1, want]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_answer_in_flight_and_refuse_later_requests(record_countd, counterd, sig):
    """SIGNALS: SIGTERM or SIGINT: "Stop accepting calls (later requests on open connections get 503
    shutting_down) ... finish the recordings in flight and answer their calls, remove the socket file ..., and exit
    with status 0"."""
    rc = record_countd("--latency", "1500ms")
    cd = counterd(rc.url)
    idle = harness.UnixHTTPConnection(cd.socket, timeout=20)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read()
    t = subprocess.Popen([COUNTERCTL, "--socket", cd.socket, "next", "s"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    poll(lambda: cd.get("/stats").json()["counters"].get("s", {}).get("in_flight") == 1)
    cd.signal(sig)
    poll(lambda: not os.path.exists(cd.socket), timeout=5)
    idle.request("POST", "/counters/s/next")
    r = idle.getresponse()
    assert r.status == 503 and json.loads(r.read())["error"] == "shutting_down", r.status
    idle.close()
    out, err = t.communicate(timeout=20)
    assert t.returncode == 0 and out == "1\n", (out, err)
    assert cd.proc.wait(20) == 0
    assert server_records(rc, "test:s") == [1]


# --- HTTP: absolute form, JSON shapes, metrics ---------------------------------------------------------------------

def test_absolute_form_answer_closes_and_says_so(record_countd, counterd):
    """HTTP API: libevent takes an absolute-form request for one to a proxy and closes the connection after its
    answer, "which says so with Connection: close" (it did not say so; and Proxy-Connection: keep-alive, which
    counterd(8) said would keep it open, does not)."""
    text = flat(section(COUNTERD_MAN, "HTTP API"))
    assert "closes the connection after its answer, which says so with Connection: close" in text
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    follow = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for line, extra in ((b"GET http://localhost/counters HTTP/1.1", b"Host: x\r\n"),
                        (b"GET http://localhost/counters HTTP/1.1", b"Host: x\r\nProxy-Connection: keep-alive\r\n"),
                        (b"GET HTTP://localhost/counters HTTP/1.0", b"Connection: keep-alive\r\n"),
                        (b"POST http://localhost/counters/abs/next HTTP/1.1", b"Content-Length: 0\r\n")):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(cd.socket)
        s.sendall(line + b"\r\n" + extra + b"\r\n" + follow)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        assert len(re.findall(rb"HTTP/1\.[01] \d{3} ", buf)) == 1, buf
        head = buf.split(b"\r\n\r\n")[0].decode().lower()
        assert re.match(r"http/1\.[01] 200 ", head) and head.count("\r\nconnection:") == 1, buf
        assert "\r\nconnection: close" in head and "proxy-connection" not in head, buf
    assert cd.get("/counters/abs").json()["count"] == 1
    # The same target in origin form keeps the connection: both answers arrive, neither says close.
    got = raw_bytes(cd.socket, b"GET /counters HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
    assert got[0] == 200 and "connection" not in got[1], got


def read_all(path, data, timeout=10):
    """Send data on a fresh connection and read until counterd closes it (or timeout); returns the bytes read and
    whether it closed."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(data)
    buf, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            buf += chunk
    except socket.timeout:
        pass
    s.close()
    return buf, closed


def test_http_versions_other_than_1_0_and_1_1(record_countd, counterd):
    """HTTP API: "an HTTP version other than 1.x, such as HTTP/0.9 or HTTP/2.0" gets libevent's own 400 in HTML and
    the connection is closed; "A request in a later HTTP/1 version (HTTP/1.2) is served as HTTP/1.1, and its answer
    says HTTP/1.1". counterd(8) said any version but 1.0 and 1.1 got the 400, but libevent served HTTP/0.9 and
    HTTP/1.2, answering "HTTP/0.9 200 OK" and "HTTP/1.2 200 OK", versions counterd does not speak."""
    text = flat(section(COUNTERD_MAN, "HTTP API"))
    assert "an HTTP version other than 1.x, such as HTTP/0.9 or HTTP/2.0," in text, text
    assert "A request in a later HTTP/1 version (HTTP/1.2) is served as HTTP/1.1, and its answer says HTTP/1.1." \
        in text
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    follow = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for version in (b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.-1", b"HTTP/3.0"):
        buf, closed = read_all(cd.socket, b"POST /counters/v/next " + version + b"\r\nHost: x\r\n"
                               b"Content-Length: 0\r\n\r\n" + follow)
        assert closed and buf.startswith(b"HTTP/1.1 400 ") and b"<HTML>" in buf, (version, buf)
        assert len(re.findall(rb"HTTP/1\.1 \d{3} ", buf)) == 1, (version, buf)
    assert cd.get("/counters/v").status == 404, "no number was handed out"
    # HTTP/1.2: served like 1.1, keep-alive included: both answers arrive on the connection, which stays open.
    buf, closed = read_all(cd.socket, b"POST /counters/v/next HTTP/1.2\r\nHost: x\r\nContent-Length: 0\r\n\r\n" +
                           follow, timeout=2)
    assert not closed, buf
    answers = re.findall(rb"(HTTP/\d\.\d+) (\d{3}) ", buf)
    assert answers == [(b"HTTP/1.1", b"200"), (b"HTTP/1.1", b"200")], buf
    assert b'{"counter":"v","count":1}' in buf
    # HTTP/1.0 is still answered as 1.0.
    buf, closed = read_all(cd.socket, b"GET /counters/v HTTP/1.0\r\n\r\n")
    assert closed and buf.startswith(b"HTTP/1.0 200 "), buf


def test_stale_socket_is_replaced_and_a_symbolic_link_left_alone(record_countd, counterd, tmp_path):
    """--socket: "A stale socket file left by a crash (a socket nothing answers on) is replaced. If PATH exists and
    is not a socket (a regular file, a directory, a symbolic link), it is left alone and counterd exits with
    status 1 saying so." (The file and directory cases are in test_client_faults.py.)"""
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url, client_id="stale")
    assert cd.next("s").json()["count"] == 1
    cd.kill()
    assert os.path.exists(cd.socket), "SIGKILL leaves the socket file"
    cd.start()
    assert "removing stale socket %s" % cd.socket in cd.read_log(), cd.read_log()
    assert cd.next("s").json()["count"] == 2
    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    for target in (stale, str(tmp_path / "nothing-here"), cd.socket):
        link = str(tmp_path / "link.sock")
        os.symlink(target, link)
        p = run([COUNTERD, "--server", rc.url, "--socket", link, "--client-id", "ln"])
        assert p.returncode == 1, (target, p)
        assert "counterd: --socket: %s exists and is not a socket; remove it or choose another path\n" % link \
            == p.stderr, p.stderr
        assert os.readlink(link) == target
        os.unlink(link)
    assert os.path.exists(stale) and cd.get("/healthz").status == 200


def test_json_answers_have_the_documented_fields(record_countd, counterd):
    """The JSON of each route as counterd(8) and README.md give it: next {"counter", "count"}; GET /counters/NAME
    {"counter", "count", "waiting", "in_flight", "resumed"}; GET /counters the list of those; errors {"error",
    "message"}; /healthz's last_error; /stats' per-counter conflicts."""
    api = tagged(COUNTERD_MAN, "HTTP API")
    one = re.findall(r'"(\w+)"', next(v for k, v in api.items() if k == "GET /counters/NAME"))
    assert one == ["counter", "count", "waiting", "in_flight", "resumed"], one
    nxt = next(v for k, v in api.items() if k == "POST /counters/NAME/next")
    assert nxt.startswith('{"counter": "NAME", "count": N}'), nxt
    with open(README) as f:
        readme = f.read()
    assert '`{"counter","count","waiting","in_flight","resumed"}`' in readme
    assert '`200 {"counter":NAME,"count":N}` once N is recorded' in readme
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    r = cd.next("j")
    assert r.status == 200 and r.headers["content-type"] == "application/json" and r.json() == {"counter": "j",
                                                                                               "count": 1}
    assert list(cd.post("/next").json()) == ["counter", "count"]
    c = cd.get("/counters/j").json()
    assert list(c) == one and c == {"counter": "j", "count": 1, "waiting": 0, "in_flight": 0, "resumed": True}, c
    lst = cd.get("/counters").json()
    assert list(lst) == ["counters"] and sorted(x["counter"] for x in lst["counters"]) == ["default", "j"], lst
    assert all(list(x) == one for x in lst["counters"]), lst
    for method, path, status in (("GET", "/nope", 404), ("GET", "/counters/b@d", 400), ("DELETE", "/stats", 405),
                                 ("GET", "/counters/never", 404)):
        e = http_unix(cd.socket, method, path)
        assert e.status == status and e.headers["content-type"] == "application/json", e
        assert list(e.json()) == ["error", "message"] and all(isinstance(v, str) for v in e.json().values()), e
    h = cd.get("/healthz").json()
    assert h["last_error"] == "" and h["status"] == "ok", h
    assert cd.get("/stats").json()["counters"]["j"]["conflicts"] == 0


def man_metric_families():
    names = set()
    for kind, text in section(COUNTERD_MAN, "METRICS"):
        names |= set(re.findall(r"\b((?:counterd|process)_[a-z_]+)", text))
    return names


def test_metric_families_and_values_are_as_the_man_page_says(record_countd, counterd):
    """METRICS: the families listed are the ones served (counterd_count, renamed, is gone), each with HELP and TYPE;
    "values are exact integers, or seconds with nine decimals" (process_start_time_seconds had three); "Counters
    start again from 0 when counterd starts", and process_start_time_seconds "changes when the counters start
    again"."""
    listed = man_metric_families()
    renamed = {"counterd_count"}
    assert renamed <= listed
    listed -= renamed
    rc = record_countd("--latency", "0")
    cd = counterd(rc.url)
    assert cd.next("m").status == 200

    def scrape():
        text = cd.get("/metrics").body.decode()
        typ = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        helped = set(re.findall(r"^# HELP (\S+) ", text, re.M))
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, v = line.rpartition(" ")
                samples[key] = v
        return typ, helped, samples

    typ, helped, samples = scrape()
    assert typ == listed, "in counterd(8) only: %s; served only: %s" % (listed - typ, typ - listed)
    assert helped == typ
    for key, v in samples.items():
        assert re.match(r"^\d+(\.\d{9})?$", v), (key, v)
        if key.split("{")[0].endswith("_seconds") or "_seconds_" in key:
            assert "." in v, (key, v)
        else:
            assert "." not in v, (key, v)
    assert samples['counterd_next_total{counter="m"}'] == "1"
    start = float(samples["process_start_time_seconds"])
    cd.restart()
    typ, helped, samples = scrape()
    assert 'counterd_next_total{counter="m"}' not in samples, "counters start again: m is not there until used"
    assert int(samples["counterd_http_requests_total"]) <= 3, samples["counterd_http_requests_total"]
    assert float(samples["process_start_time_seconds"]) > start


# --- units and drop-ins ----------------------------------------------------------------------------------------

def unit(name):
    keys = {}
    with open(os.path.join(TOP_SRCDIR, "systemd", name + ".in")) as f:
        for line in f:
            if "=" in line and not line.startswith(("#", "[")):
                k, _, v = line.strip().partition("=")
                keys.setdefault(k, []).append(v)
    return keys


def test_units_are_what_docs_systemd_md_says():
    """docs/systemd.md: counterd.service "records with http://127.0.0.1:8080" (counterd's default --server, where
    record-countd.socket listens), watchdog 10 s, TimeoutStopSec=45s above the 30 s --shutdown-grace."""
    with open(SYSTEMD_MD) as f:
        md = f.read()
    svc, rsock = unit("counterd.service"), unit("record-countd.socket")
    assert "| `counterd.service` | `Type=notify`, watchdog 10 s, `DynamicUser=yes`, records with " \
           "`http://127.0.0.1:8080` |" in md
    assert svc["ExecStart"] == ["@sbindir@/counterd $COUNTERD_OPTIONS"], svc["ExecStart"]
    assert man_default(counterd_man_options()["--server"][1]) == "http://" + rsock["ListenStream"][0]
    assert svc["WatchdogSec"] == ["10s"] and svc["Type"] == ["notify"] and svc["DynamicUser"] == ["yes"]
    m = re.search(r"its unit's `TimeoutStopSec=(\d+)s`", md)
    assert m and svc["TimeoutStopSec"] == ["%ss" % m.group(1)], svc["TimeoutStopSec"]
    grace = man_default(counterd_man_options()["--shutdown-grace"][1])
    assert "--shutdown-grace` (default %s)" % grace.replace("s", " s") in md
    assert int(m.group(1)) > int(grace.rstrip("s"))


def test_counterd_options_drop_in_takes_effect(record_countd, tmp_path):
    """counterd(8) FILES and docs/systemd.md: Environment="COUNTERD_OPTIONS=--client-id=web1 --batch-max=128" in a
    drop-in, which the unit appends to the command line, sets those options (run here as systemd would: the quoted
    assignment, $COUNTERD_OPTIONS split into words, RuntimeDirectory= as $RUNTIME_DIRECTORY)."""
    man_line = next(t for k, t in section(COUNTERD_MAN, "FILES") if k == "nf" and t.startswith("Environment="))
    with open(SYSTEMD_MD) as f:
        assert "\n%s\n" % man_line in f.read(), "docs/systemd.md has the same drop-in"
    (assignment,) = shlex.split(man_line[len("Environment="):])
    var, _, value = assignment.partition("=")
    assert var == "COUNTERD_OPTIONS"
    exec_start = unit("counterd.service")["ExecStart"][0].split()
    assert exec_start[1:] == ["$COUNTERD_OPTIONS"]
    rc = record_countd("--latency", "300ms")
    rundir = tmp_path / "run"
    rundir.mkdir()
    # --server only because record-countd is on a free port here, not 8080; it comes first, as a default would.
    d = start_counterd(tmp_path, ["--server", rc.url] + value.split(), env={"RUNTIME_DIRECTORY": str(rundir)})
    sock = str(rundir / "counterd.sock")
    ready(d, sock)
    try:
        st = http_unix(sock, "GET", "/stats").json()
        assert st["client_id"] == "web1" and st["batch_max"] == 128, st
        got = asyncio.run(_next_all(sock, ["w"] * 200))
        assert got == [200] * 200
        st = http_unix(sock, "GET", "/stats").json()["counters"]["w"]
        assert st["max_batch"] == 128, st
    finally:
        assert d.stop() == 0
    assert server_records(rc, "web1:w") == list(range(1, 201))


# --- examples, run as written ----------------------------------------------------------------------------------

def examples(path):
    """The EXAMPLES of a man page: [(prompt, command, [output lines])]."""
    out = []
    for kind, text in section(path, "EXAMPLES"):
        if kind != "nf":
            continue
        if text.startswith(("$ ", "# ")):
            out.append((text[0], text[2:], []))
        else:
            assert out, text
            out[-1][2].append(text)
    return out


def bindir(tmp_path, wrap_counterd=None):
    if not os.path.exists(CURL):
        pytest.skip("no curl here")
    b = tmp_path / "bin"
    b.mkdir()
    for name, target in (("record-countd", RECORD_COUNTD), ("counterctl", COUNTERCTL), ("curl", CURL)):
        os.symlink(os.path.abspath(target) if os.path.exists(target) else target, str(b / name))
    if wrap_counterd is None:
        os.symlink(os.path.abspath(COUNTERD), str(b / "counterd"))
    else:
        (b / "counterd").write_text('#!/bin/sh\nexec "%s" --server %s "$@"\n' % (os.path.abspath(COUNTERD),
                                                                              wrap_counterd))
        os.chmod(str(b / "counterd"), 0o755)
    return b


def run_examples(tmp_path, steps, env, waits):
    """Run the $ commands in one bash, in tmp_path; each command's output is framed so it can be compared.
    waits: {index of a background command: a shell loop that waits for its daemon}."""
    script = ["trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    for i, (prompt, cmd, _) in enumerate(steps):
        if cmd.endswith("&"):
            script.append(cmd[:-1].rstrip() + " 2>>daemons.log &")
            script.append(waits[i])
        else:
            script.append("echo '@@%d'; %s; echo \"@@rc $?\"" % (i, cmd))
    p = subprocess.run(["bash", "-c", "\n".join(script)], cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=120, env=env)
    outs, cur = {}, None
    for line in p.stdout.splitlines():
        if line.startswith("@@rc "):
            outs[cur] = (outs[cur][0], int(line[5:]))
        elif line.startswith("@@"):
            cur = int(line[2:])
            outs[cur] = ([], None)
        else:
            outs[cur][0].append(line)
    return p, outs


def wait_for_socket(path):
    return "for i in $(seq 400); do [ -S %s ] && curl -s --unix-socket %s http://localhost/healthz >/dev/null && " \
           "break; sleep 0.05; done" % (path, path)


def test_counterd_man_page_examples_do_what_they_say(tmp_path):
    """counterd(8) EXAMPLES, each $ command as written, in order, in one shell: record-countd's port comes from
    RECORD_COUNTD_LISTEN (8080 may be taken here) and counterd's --server names it, /tmp/ is a fresh directory; the
    output shown must be what each prints. The # commands need root and systemd: they are checked to name the
    shipped units and socket."""
    steps = examples(COUNTERD_MAN)
    user = [s for s in steps if s[0] == "$"]
    root = [s for s in steps if s[0] == "#"]
    assert [c for _, c, _ in root] == ["systemctl enable --now record-countd.socket counterd.socket",
                                       "counterctl --socket /run/lockstep/counterd.sock next"], root
    assert unit("counterd.socket")["ListenStream"] == ["/run/lockstep/counterd.sock"]
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    steps = [(p, c.replace("/tmp/", str(tmp) + "/"), o) for p, c, o in user]
    assert steps[0][1].startswith("record-countd ") and steps[0][1].endswith("&"), steps[0]
    waits = {}
    for i, (_, c, _) in enumerate(steps):
        if c.startswith("record-countd"):
            waits[i] = ("for i in $(seq 400); do curl -s http://127.0.0.1:%d/healthz >/dev/null && break; "
                        "sleep 0.05; done" % port)
        elif c.startswith("counterd"):
            waits[i] = wait_for_socket(re.search(r"--socket (\S+)", c).group(1))
    env = clean_env(PATH="%s:%s" % (bindir(tmp_path, "http://127.0.0.1:%d" % port), os.environ.get("PATH", "")),
                    RECORD_COUNTD_LISTEN="127.0.0.1:%d" % port)
    p, outs = run_examples(tmp_path, steps, env, waits)
    assert "latency 100ms" in (tmp_path / "daemons.log").read_text()
    shown = [(i, o) for i, (_, c, o) in enumerate(steps) if not c.endswith("&")]
    assert len(shown) == 3, steps
    for i, want in shown:
        assert i in outs, (i, p.stdout, p.stderr)
        got, rc = outs[i]
        assert rc == 0 and got == want, "%s\nprinted %r, counterd(8) shows %r\n%s" % (steps[i][1], got, want, p.stderr)


def test_counterctl_man_page_examples_do_what_they_say(tmp_path):
    """counterctl(1) EXAMPLES as written, in order, against a counterd on ./counterd.sock (where counterctl looks
    without --socket or the variables) recording with a record-countd of 100 ms latency; COUNTERD_SOCKET is set to
    that socket instead of /run/lockstep's. The output shown must be what each prints. With -c above 1 the numbers
    arrive in either order (2 and 3 of `next orders -n 3 -c 3` are recorded in one request and answered together):
    an example that shows them in order has to sort them."""
    steps = examples(COUNTERCTL_MAN)
    assert all(p == "$" for p, _, _ in steps)
    for _, c, o in steps:
        m = re.search(r"\s-c\s*(\d+)", c)
        if m and int(m.group(1)) > 1 and len(o) > 1:
            assert "| sort" in c, "counterctl(1) shows %r in order: %s" % (o, c)
    rc = harness.RecordCountd(str(tmp_path), ["--latency", "100ms"])
    rc.start()
    sock = str(tmp_path / "counterd.sock")
    d = ready(start_counterd(tmp_path, ["--socket", sock, "--server", rc.url, "--client-id", "ex"]), sock)
    try:
        steps = [(p, c.replace("/run/lockstep/counterd.sock", sock), o) for p, c, o in steps]
        env = clean_env(PATH="%s:%s" % (bindir(tmp_path), os.environ.get("PATH", "")))
        p, outs = run_examples(tmp_path, steps, env, {})
        for i, (_, c, want) in enumerate(steps):
            if c.startswith("export "):
                continue
            got, status = outs[i]
            assert status == 0 and got == want, "%s\nprinted %r, counterctl(1) shows %r\n%s" % (c, got, want,
                                                                                               p.stderr)
    finally:
        assert d.stop() == 0
        rc.stop()


# --- durations, the default socket under /run ------------------------------------------------------------------

def test_duration_syntax_is_as_documented(tmp_path):
    """counterd(8): durations are "a number with ms, s or m (minutes), or a bare 0"; --help: "250ms, 1s, 1.5s,
    2m"; counterctl(1) --timeout: "units ms, s and m ... a fraction of a millisecond is dropped" (its message says
    the milliseconds it took)."""
    assert "Durations: 250ms, 1s, 1.5s, 2m (ms, s or m; at most 86400s)." in counterd_help()
    for ok in ("250ms", "1s", "1.5s", "2m", "0", "0ms", "0.5s", "86400s"):
        p = run([COUNTERD, "--wait-timeout", ok, "--help"])
        assert p.returncode == 0, (ok, p.stderr)
        assert run([COUNTERCTL, "--timeout", ok, "--help"]).returncode == 0, ok
    for bad in ("5", "1h", "1.5", "-1s", "+1s", " 1s", "1s ", "1 s", "1S", "1MS", ".5s", "1.s", "1e3ms", "0x10s",
                "1sec", ""):
        p = run([COUNTERD, "--wait-timeout", bad, "--help"])
        assert p.returncode == 1 and p.stderr == 'counterd: --wait-timeout: "%s" is not a duration (e.g. 250ms, 1s, ' \
            '1.5s)\n' % bad, (bad, p.stderr)
        p = run([COUNTERCTL, "--timeout", bad, "--help"])
        assert p.returncode == 2 and p.stderr.startswith('counterctl: --timeout: "%s" is not a duration' % bad), p
    # A fraction of a millisecond dropped: a peer that accepts and never answers, given 2.9ms.
    path = str(tmp_path / "mute.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    try:
        p = run([COUNTERCTL, "--socket", path, "--timeout", "2.9ms", "health"])
        assert p.returncode == 3 and p.stderr == "counterctl: counterd at %s did not answer within 2 ms " \
            "(--timeout)\n" % path, p
    finally:
        srv.close()


def test_counterctl_looks_for_the_systemd_socket_after_the_current_directory(record_countd, tmp_path):
    """counterctl(1) --socket: without it and the variables, "./counterd.sock if it exists, otherwise
    /run/lockstep/counterd.sock (where the shipped systemd units put it) if it exists, otherwise ./counterd.sock".
    Run in a mount namespace of its own with a fresh /run, so the machine's /run is not touched."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /run")
    probe = run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs none /run"])
    if probe.returncode != 0:
        pytest.skip("no private mount namespace here: %s" % probe.stderr.strip())
    assert "otherwise /run/lockstep/counterd.sock (where the shipped systemd units put it) if it exists, " \
           "otherwise ./counterd.sock." in tagged(COUNTERCTL_MAN, "OPTIONS")["-s, --socket PATH"]
    rc = record_countd("--latency", "0")
    empty, plain = tmp_path / "empty", tmp_path / "plain"
    empty.mkdir()
    plain.mkdir()
    (plain / "counterd.sock").write_text("not a socket\n")
    script = r'''
set -u
mount -t tmpfs none /run || exit 90
cd "$EMPTY"
"$COUNTERCTL" next; echo "rc=$?"                      # nothing anywhere: ./counterd.sock
mkdir -p /run/lockstep
"$COUNTERD" --server "$URL" --socket /run/lockstep/counterd.sock --client-id sys 2>"$LOG" & pid=$!
for i in $(seq 400); do [ -S /run/lockstep/counterd.sock ] && break; sleep 0.05; done
"$COUNTERCTL" next; echo "rc=$?"                      # /run/lockstep/counterd.sock
cd "$PLAIN"
"$COUNTERCTL" next; echo "rc=$?"                      # ./counterd.sock exists: it, though not a socket
kill $pid; wait $pid; echo "counterd=$?"
'''
    p = run(["unshare", "-m", "--propagation", "private", "bash", "-c", script], timeout=60,
            env=clean_env(EMPTY=str(empty), PLAIN=str(plain), COUNTERCTL=os.path.abspath(COUNTERCTL),
                          COUNTERD=os.path.abspath(COUNTERD), URL=rc.url, LOG=str(tmp_path / "cd.log")))
    assert p.stdout == "rc=3\n1\nrc=0\nrc=3\ncounterd=0\n", (p.stdout, p.stderr)
    err = p.stderr.splitlines()
    assert err[0] == "counterctl: cannot connect to ./counterd.sock: No such file or directory (is counterd " \
                     "running?)", err
    assert err[1] == "counterctl: cannot connect to ./counterd.sock: it is not a socket (is the path right?)", err
    assert server_records(rc, "sys:default") == [1]


def test_conflict_warnings_are_one_line_per_10s(record_countd, counterd):
    """SHARING A CLIENT ID: conflicting calls fail 409 conflict, "a warning is logged (one line per 10 s at most),
    the counter's conflicts in GET /stats and counterd_conflicts_total count them"."""
    text = flat(section(COUNTERD_MAN, "SHARING A CLIENT ID"))
    assert "a warning is logged (one line per 10 s at most)" in text, text
    rc = record_countd("--latency", "0")
    a = counterd(rc.url)
    b = counterd(rc.url)
    assert a.next("k").json()["count"] == 1
    assert b.next("k").json()["count"] == 2
    assert a.next("k").json()["error"] == "conflict"
    assert a.next("k").json()["count"] == 3
    assert b.next("k").json()["error"] == "conflict"
    assert b.next("k").json()["count"] == 4
    assert a.next("k").json()["error"] == "conflict"
    assert a.next("k").json()["count"] == 5
    lines = [x for x in a.read_log().splitlines() if "recorded by another writer" in x]
    assert len(lines) == 1 and "(0 more conflicts since the last such line)" in lines[0], lines
    assert a.get("/stats").json()["counters"]["k"]["conflicts"] == 2
    assert 'counterd_conflicts_total{counter="k"} 2' in a.get("/metrics").body.decode()
    assert server_records(rc, "test:k") == [1, 2, 3, 4, 5]
