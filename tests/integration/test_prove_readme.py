"""README.md as a newcomer follows it: the parts that test_prove_docs.py, test_prove_docs_client.py (options, routes,
limits) and test_prove_interop.py (the tour's curl and counterctl commands and their outputs) do not hold.

- Layout names exactly the top-level folders there are, and the files it names are in them.
- Every relative path README names exists (build/NAME/... in the build tree), and the tour's PATH holds the daemons.
- Every --option README names is one of the project's programs (their --help, configure --help, the demo, bench/run)
  or of the four outside tools it uses them with.
- The libdfr section's program compiles with the command in its first line (against this build's libdfr) and prints
  what README says, with the lock and without it; the examples print what README says and build as it says.
- The tour's two start commands, as written (port and paths moved into a temp dir): each logs the line README says to
  wait for, counterd serves once it has, and both exit 0 on SIGTERM (`kill %1 %2`).
- Quick start and Tests say what scripts/, .ci/run, the soak, the fuzz runner, make analyze and the units check do.

Runs against the build tree only (no install): dfr.h from the source tree, libdfr from common/.libs, with the
sanitizer flags the build used.
"""
import glob
import os
import re
import shlex
import subprocess
import time

import pytest

import harness
from harness import COUNTERCTL, COUNTERD, RECORD_COUNTD, TOP_SRCDIR, free_port, http_unix

TOP_BUILDDIR = os.environ.get("TOP_BUILDDIR", ".")
PYTHON3 = os.environ.get("PYTHON3") or "/usr/bin/python3"
README = os.path.join(TOP_SRCDIR, "README.md")
# A git checkout has every file README names; a dist tarball (make distcheck) only those the Makefile distributes.
IN_GIT = os.path.exists(os.path.join(TOP_SRCDIR, ".git"))

with open(README) as _f:
    TEXT = _f.read()


def section(title):
    """The text of one `## title` section of README.md."""
    start = TEXT.index("\n## %s\n" % title)
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start:end if end >= 0 else len(TEXT)]


def flat(s):
    return re.sub(r"\s+", " ", s)


def src(*parts):
    with open(os.path.join(TOP_SRCDIR, *parts)) as f:
        return f.read()


def code_blocks(text, lang):
    return re.findall(r"^```%s\n(.*?)^```" % re.escape(lang), text, re.M | re.S)


def clean_env(**extra):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("RECORD_COUNTD_", "COUNTERD_")) and k not in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY")}
    e.update(extra)
    return e


# --- Layout and paths ------------------------------------------------------------------------------------------

# Top-level directories that are not the project's own: autotools' and builds' output, distcheck's, caches.
NOT_OURS = re.compile(r"^(m4|build-aux|autom4te\.cache|build.*|_build|_inst|lockstep-.*|__pycache__)$")


def test_layout_names_exactly_the_top_level_folders():
    rows = [l for l in section("Layout").splitlines() if l.startswith("| `")]
    named = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        folders = re.findall(r"`([^`]+)/`", cells[0])
        assert folders, "a Layout row names no folder: %s" % row
        for f in folders:
            named[f] = cells[1]
    there = {d for d in os.listdir(TOP_SRCDIR)
             if os.path.isdir(os.path.join(TOP_SRCDIR, d)) and not d.startswith(".") and not NOT_OURS.match(d)}
    assert set(named) == there, "Layout names %s; the tree has %s" % (sorted(set(named) - there),
                                                                    sorted(there - set(named)))
    # A row about one folder: the files it names in backquotes are in it (common/'s dfr.h, scripts/'s demo, ...).
    for folder, what in named.items():
        if sum(1 for v in named.values() if v is what) > 1:
            continue
        for name in re.findall(r"`([\w.-]+)`", what):
            path = "%s/%s" % (folder, name)
            assert os.path.exists(os.path.join(TOP_SRCDIR, path)) or not (IN_GIT or distributed(path)), \
                "Layout: %s does not exist" % path


def readme_paths():
    """Relative paths README names: words of `code` and link targets with a slash, $PWD/ and PATH's colons undone."""
    words = []
    for span in re.findall(r"`([^`\n]+)`", TEXT) + re.findall(r"\]\(([^)\s]+)\)", TEXT):
        for w in span.split():
            for part in re.split(r"[:=]", w):
                part = part.rstrip(",;.)")
                for prefix in ("$PWD/", "./"):
                    if part.startswith(prefix):
                        part = part[len(prefix):]
                if re.match(r"^\.?[a-z][\w.-]*(/[\w.*-]*)+$", part) and "//" not in part:
                    words.append(part)
    return sorted(set(words))


def distributed(path):
    """Whether make dist carries path (named in the build's Makefile, as EXTRA_DIST and the sources are)."""
    with open(os.path.join(TOP_BUILDDIR, "Makefile")) as f:
        return re.search(r"(?<![\w/.-])%s(?![\w/.-])" % re.escape(path.rstrip("/")), f.read()) is not None


def test_every_path_readme_names_exists():
    paths = readme_paths()
    assert "docs/systemd.md" in paths and "build/release/server" in paths, paths   # the reader itself works
    missing = []
    for p in paths:
        parts = p.rstrip("/").split("/")
        if parts[0] == "build":
            # build/NAME/REST: REST in a build tree (this one).
            where = os.path.join(TOP_BUILDDIR, *parts[2:])
        else:
            where = os.path.join(TOP_SRCDIR, *parts)
        if not glob.glob(where) and (IN_GIT or distributed(p)):
            missing.append(p)
    assert not missing, "README.md names paths that do not exist: %s" % missing


def test_the_tours_path_holds_the_daemons():
    m = re.search(r"`PATH=([^`]+)`", section("A tour"))
    assert m, "the tour no longer says how to put the built daemons on PATH"
    dirs = [d.replace("$PWD/", "") for d in m.group(1).split(":") if d != "$PATH"]
    found = {}
    for d in dirs:
        parts = d.split("/")
        assert parts[0] == "build", d
        for prog in ("record-countd", "counterd", "counterctl"):
            if os.access(os.path.join(TOP_BUILDDIR, *parts[2:], prog), os.X_OK):
                found[prog] = d
    assert set(found) == {"record-countd", "counterd", "counterctl"}, found
    # ... and that build directory is the one scripts/build makes (build/release unless BUILD_NAME says otherwise).
    assert {d.split("/")[1] for d in dirs} == {"release"}, dirs
    if IN_GIT:
        assert "name=${BUILD_NAME:-release}" in src("scripts", "build")


# --- options ---------------------------------------------------------------------------------------------------

# Options README gives to tools that are not ours.
FOREIGN = {"--unix-socket": "curl", "--cflags": "pkg-config", "--libs": "pkg-config", "--static": "pkg-config",
           "--now": "systemctl"}


def help_of(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=clean_env(), cwd=TOP_BUILDDIR)
    assert p.returncode == 0, (argv, p.stderr)
    return p.stdout


def test_every_option_readme_names_exists():
    known = ""
    for argv in ([RECORD_COUNTD, "--help"], [COUNTERD, "--help"], [COUNTERCTL, "--help"],
                 ["sh", os.path.join(TOP_SRCDIR, "configure"), "--help"],
                 [PYTHON3, os.path.join(TOP_SRCDIR, "scripts", "demo.py"), "--help"]):
        known += help_of(argv)
    known += re.search(r"^Usage: bench/run .*$", src("bench", "run"), re.M).group(0)   # its docstring's usage line
    theirs = set(re.findall(r"--[a-z][a-z0-9-]*", known))
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", TEXT))
    unknown = sorted(o for o in named if o not in theirs and o not in FOREIGN)
    assert not unknown, "README.md names options no program here has: %s" % unknown
    # The configure options paragraph: each is configure's, with the value README gives.
    conf = flat(TEXT[TEXT.index("configure options:"):TEXT.index("Dependencies:")])
    cfg = help_of(["sh", os.path.join(TOP_SRCDIR, "configure"), "--help"])
    for opt in re.findall(r"`(--[\w-]+)", conf):
        assert re.search(r"^\s+%s\b" % re.escape(opt), cfg, re.M), "configure --help has no %s" % opt
    assert "--enable-sanitizers[=address|thread]" in cfg and "`--enable-sanitizers=thread`" in conf


# --- the libdfr program and the examples --------------------------------------------------------------------------

def make_var(name):
    with open(os.path.join(TOP_BUILDDIR, "Makefile")) as f:
        m = re.search(r"^%s = ?(.*)$" % re.escape(name), f.read(), re.M)
    return m.group(1).strip() if m else ""


def pkg_config(*args):
    p = subprocess.run(["pkg-config"] + list(args), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def cc_command(readme_cmd, out):
    """README's `cc ... $(pkg-config --cflags --libs libdfr libevent)` with this build's compiler, its sanitizer flags,
    -Wall -Werror, and libdfr taken from the build tree instead of an installed libdfr.pc."""
    m = re.match(r"^cc (.+?) \$\(pkg-config --cflags --libs libdfr libevent\)$", readme_cmd)
    assert m, "not the documented build command: %r" % readme_cmd
    cc = shlex.split(make_var("CC") or "cc")
    flags = make_var("SAN_CFLAGS").split() + make_var("SAN_LDFLAGS").split()
    dfr = ["-I" + os.path.join(TOP_SRCDIR, "common"), "-L" + os.path.join(TOP_BUILDDIR, "common", ".libs"), "-ldfr"]
    return (cc + ["-Wall", "-Werror"] + flags + ["-o", out] + m.group(1).split() + dfr +
            pkg_config("--cflags", "--libs", "libevent"))


def compile_and_run(readme_cmd, cwd, out, timeout=30):
    p = subprocess.run(cc_command(readme_cmd, out), cwd=cwd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, "`%s` does not build:\n%s" % (readme_cmd, p.stderr)
    libs = os.path.join(TOP_BUILDDIR, "common", ".libs")
    env = dict(os.environ, LD_LIBRARY_PATH=libs + (":" + os.environ["LD_LIBRARY_PATH"]
                                                    if os.environ.get("LD_LIBRARY_PATH") else ""))
    t0 = time.monotonic()
    r = subprocess.run([out], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    took = time.monotonic() - t0
    assert r.returncode == 0 and r.stderr == "", "%s exited %d:\n%s" % (out, r.returncode, r.stderr)
    return r.stdout, took


def libdfr_program():
    blocks = code_blocks(section("libdfr"), "c")
    assert len(blocks) == 1, "the libdfr section should show one C program"
    return blocks[0]


def test_the_libdfr_program_compiles_and_prints_what_readme_says(tmp_path):
    prog = libdfr_program()
    first = prog.splitlines()[0]
    m = re.match(r"^/\* (\S+): (cc .+?) && \./a\.out \*/$", first)
    assert m, "the program's first line should say how to build and run it: %r" % first
    name, cmd = m.groups()
    (tmp_path / name).write_text(prog)
    text = flat(section("libdfr"))
    said = re.search(r"It prints `(\d+)` after (\d+) ms and `(\d+)` after (\d+) ms; call `([^`]+)` instead of "
                     r"`([^`]+)` and it prints `(\d+)` twice after (\d+) ms", text)
    assert said, "the sentence after the program no longer says what it prints"
    a, ta, b, tb, plain, locked, both, tboth = said.groups()
    out, took = compile_and_run(cmd, str(tmp_path), str(tmp_path / "a.out"))
    assert out == "%s\n%s\n" % (a, b), out
    assert took >= int(tb) / 1000 - 0.01, "printed both in %.3f s, README says the second after %s ms" % (took, tb)
    # Without the lock: the seed's bug.
    assert prog.count(locked) == 1, locked
    (tmp_path / name).write_text(prog.replace(locked, plain))
    out, took = compile_and_run(cmd, str(tmp_path), str(tmp_path / "a.out"))
    assert out == "%s\n%s\n" % (both, both), out
    assert took >= int(tboth) / 1000 - 0.01, took


def examples_paragraph():
    text = section("libdfr")
    return flat(text[text.index("`man libdfr` ("):text.index("ABI:")])


def test_the_examples_readme_names_are_the_examples_and_print_what_it_says():
    para = examples_paragraph()
    named = set(re.findall(r"`([a-z]+(?:-[a-z]+)+)`", para))
    there = {os.path.basename(f)[:-2] for f in glob.glob(os.path.join(TOP_SRCDIR, "examples", "*.c"))} - {"fake-record"}
    assert named == there, "README names examples %s; examples/ has %s" % (sorted(named - there),
                                                                         sorted(there - named))
    claims = re.findall(r"((?:`[\w-]+`(?:,? and |, )?)+) prints? `([^`]+)` / `([^`]+)`", para)
    assert len(claims) == 2, claims
    checked = 0
    for names, l1, l2 in claims:
        for ex in re.findall(r"`([\w-]+)`", names):
            p = subprocess.run([os.path.join(TOP_BUILDDIR, "examples", ex)], capture_output=True, text=True,
                               timeout=30)
            assert p.returncode == 0 and p.stdout == "%s\n%s\n" % (l1, l2), (ex, p.stdout, p.stderr)
            checked += 1
    assert checked == 3


def test_an_example_builds_as_readme_says(tmp_path):
    para = examples_paragraph()
    m = re.search(r"against an installed libdfr, build one with `(cc [^`]+)`", para)
    assert m, para
    out, _ = compile_and_run(m.group(1), TOP_SRCDIR, str(tmp_path / "example"))
    assert out == "1 d1\n2 d2\n", out
    # "(`fetch-gather` and `chain-cancel` need no `fake-record.c`)": exactly the examples that do not use it.
    m = re.search(r"\(((?:`[\w-]+`(?: and |, )?)+) need no `fake-record\.c`\)", para)
    assert m, para
    alone = set(re.findall(r"`([\w-]+)`", m.group(1)))
    for f in glob.glob(os.path.join(TOP_SRCDIR, "examples", "*.c")):
        ex = os.path.basename(f)[:-2]
        if ex != "fake-record":
            assert ('#include "fake-record.h"' in src("examples", ex + ".c")) == (ex not in alone), ex
    for ex in sorted(alone):
        out, _ = compile_and_run("cc examples/%s.c $(pkg-config --cflags --libs libdfr libevent)" % ex, TOP_SRCDIR,
                                 str(tmp_path / ex))
        assert out, ex


# --- the tour's start commands -----------------------------------------------------------------------------------

def wait_for(cond, what, daemon, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        assert daemon.proc.poll() is None, "%s exited %s:\n%s" % (daemon.name, daemon.proc.returncode, daemon.read_log())
        time.sleep(0.02)
    pytest.fail("%s: %s not seen in %d s:\n%s" % (daemon.name, what, timeout, daemon.read_log()))


def test_the_tours_start_commands_log_what_to_wait_for_and_stop_with_status_0(tmp_path):
    tour = section("A tour")
    block = code_blocks(tour, "")[0].strip().splitlines()
    assert [l.split()[0] for l in block] == ["record-countd", "counterd"] and all(l.endswith(" &") for l in block), block
    said = re.search(r"\(counterd: `serving on (\S+)`\); wait for it\. `kill %1 %2`\s+stops both at the end \(they "
                     r"finish what is in flight and exit 0\)", tour)
    assert said, "the tour no longer says what to wait for and how to stop"
    port = free_port()
    moved = {"127.0.0.1:8080": "127.0.0.1:%d" % port, "/tmp/": str(tmp_path) + "/"}
    bins = {"record-countd": RECORD_COUNTD, "counterd": COUNTERD}
    daemons = []
    try:
        for line in block:
            for a, b in moved.items():
                line = line.replace(a, b)
            argv = shlex.split(line[:-2])
            d = harness.Daemon(str(tmp_path), argv[0])
            d.spawn([bins[argv[0]]] + argv[1:], clean_env())
            daemons.append(d)
            # Each logs a line once it serves; counterd's is the one README names.
            if argv[0] == "record-countd":
                wait_for(lambda: "listening on 127.0.0.1:%d" % port in d.read_log(), "its listening line", d)
                assert harness.http_tcp("127.0.0.1", port, "GET", "/healthz").status == 200
        cd = daemons[1]
        sock = said.group(1).replace("/tmp/", str(tmp_path) + "/")
        wait_for(lambda: "serving on %s" % sock in cd.read_log(), "`serving on %s`" % sock, cd)
        # The tour's first command, right after that line: the output README shows first.
        r = http_unix(sock, "POST", "/counters/hits/next")
        assert r.status == 200 and r.body == b'{"counter":"hits","count":1}\n', r
        assert '{"counter":"hits","count":1}' in tour
    finally:
        codes = [d.stop() for d in reversed(daemons)]
    assert codes == [0, 0], "SIGTERM: exit statuses %s\n%s" % (codes, "".join(d.read_log() for d in daemons))


# --- Quick start, Tests, systemd: what the scripts and checks do -----------------------------------------------------

def test_quick_start_says_what_the_scripts_do():
    qs = flat(section("Quick start"))
    assert 'ends with "N passed, N failed, N skipped"' in qs
    assert "`scripts/build` builds into `build/release`" in qs and "the demo writes its timeline" in qs
    # "writes its timeline ... into the current directory": demo.py's default is a bare file name.
    assert re.search(r'add_argument\("--svg", default="demo-timeline\.svg"', src("scripts", "demo.py"))
    # As a normal user, what needs root is skipped, not failed: each such test says so.
    assert 'skip_all "needs root' in src("tests", "systemd", "boot.sh")
    assert re.search(r'^echo "\$p passed, \$f failed, \$s skipped"$', src("scripts", "test"), re.M)
    for script in ("demo", "test"):
        assert re.search(r'^(exec )?bash "\$top/scripts/deps"|^bash scripts/deps', src("scripts", script), re.M), script
    assert "exec /usr/bin/python3 \"$top/scripts/demo.py\" --build \"$top/build/${BUILD_NAME:-release}\"" in \
        src("scripts", "demo")
    assert 'name=${BUILD_NAME:-release}' in src("scripts", "build")


def test_the_tests_section_is_what_scripts_test_runs():
    tests = flat(section("Tests"))
    assert "runs `make check` in three builds under `build/` (plain, ASan+UBSan, and TSan+UBSan," in tests
    assert "the library's unit tests under valgrind, the fuzz targets for a bounded time (two more builds)" in tests
    script = src("scripts", "test")
    suites = re.findall(r'^step "make check \(([\w+]+)\)" suite (\w+)(.*)$', script, re.M)
    assert [s[0] for s in suites] == ["release", "ASan+UBSan", "TSan+UBSan"], suites
    assert "--enable-sanitizers=thread" in suites[2][2] and "--enable-sanitizers " in suites[1][2] + " "
    soak = re.search(r'SOAK_SECONDS=\$\{SOAK_SECONDS:-(\d+)\}', script).group(1)
    assert "a %s s soak" % soak in tests and "CI runs %s" % soak in tests
    assert "check-valgrind" in script and "--enable-fuzzing" in script and "make -s analyze" in script
    assert "distcheck" in script
    assert re.search(r"^exec bash scripts/test$", src(".ci", "run"), re.M)
    # make analyze's known false positives.
    mk = src("Makefile.am")
    known = mk[mk.index("ANALYZE_KNOWN = \\"):mk.index("\nanalyze:")]
    n = len(re.findall(r"^\t'", known, re.M))
    assert "any report but the %s known false positives in Makefile.am fails" % {2: "two", 3: "three"}.get(n, n) in tests
    # Soak and fuzz defaults and bounds.
    soak_py = src("tests", "soak", "soak.py")
    default = re.search(r'os\.environ\.get\("SOAK_SECONDS", "(\d+)"\)', soak_py).group(1)
    assert "`make check-soak` (`SOAK_SECONDS`, default %s;" % default in tests
    assert '"$${SOAK_SECONDS:-%s}"' % default in src("tests", "integration", "prove.am")
    assert "b[1] + 4" in soak_py and "b[0] * 1.25 + 4096" in soak_py
    assert "fds grow by at most 4, RSS by at most 25% + 4 MiB" in tests
    fuzz = re.search(r"secs=\$\{FUZZ_SECONDS:-(\d+)\}", src("tests", "fuzz", "run.sh")).group(1)
    assert "`FUZZ_SECONDS` (default %s)" % fuzz in tests
    # Every knob README names is read by a test.
    knobs = set(re.findall(r"`((?:PROVE|MODEL)_[A-Z_]+)", tests))
    assert {"PROVE_SEED", "MODEL_SEED"} <= knobs, knobs
    every = "".join(src(os.path.relpath(f, TOP_SRCDIR)) for f in
                    glob.glob(os.path.join(TOP_SRCDIR, "tests", "*", "*.py")))
    for k in knobs:
        assert re.search(r"environ(?:\.get\(|\[)\"%s\"" % k, every), "no test reads %s" % k
    # The files it names without a path (`test_server_powerloss.py`, `powercut.c`, ...) are tests' own.
    bare = set(re.findall(r"`((?:test_\w+\.py)|(?:[\w-]+\.c))`", tests))
    assert "test_server_powerloss.py" in bare, bare
    for name in bare:
        assert glob.glob(os.path.join(TOP_SRCDIR, "tests", "**", name), recursive=True), "no tests/**/%s" % name
    # The units' security threshold.
    assert "--threshold=20" in src("tests", "systemd", "units.sh") and "scores at most 2.0" in \
        flat(section("Running under systemd"))


def test_the_systemd_section_names_the_units_socket_and_group():
    sysd = section("Running under systemd")
    units = re.findall(r"`(record-countd|counterd)\.service`/`\.socket`", sysd)
    assert units == ["record-countd", "counterd"], units
    for u in units:
        for kind in ("service", "socket"):
            assert os.path.exists(os.path.join(TOP_SRCDIR, "systemd", "%s.%s.in" % (u, kind))), (u, kind)
    sock = re.search(r"^ListenStream=(\S+)$", src("systemd", "counterd.socket.in"), re.M).group(1)
    group = re.search(r"^SocketGroup=(\S+)$", src("systemd", "counterd.socket.in"), re.M).group(1)
    block = code_blocks(sysd, "")[0]
    assert "--unix-socket %s " % sock in block, block
    assert "(group `%s`)" % group in sysd and "group `%s`" % group in flat(sysd)
    assert re.search(r"^g %s\b" % group, src("systemd", "sysusers.d", "lockstep.conf"), re.M)
    for line in block.splitlines():
        for u in re.findall(r"\b([\w-]+\.socket)\b", line):
            assert u.split(".")[0] in units, line


def test_the_numbers_of_record_countds_threads_are_the_stores():
    rc = flat(section("record-countd"))
    store = src("server", "store-sqlite.c")
    words = {1: "one", 2: "two", 3: "three", 4: "four"}
    syncers = int(re.search(r"^#define STORE_SYNCERS (\d+)", store, re.M).group(1))
    readers = int(re.search(r"^#define STORE_READERS (\d+)", store, re.M).group(1))
    assert "%s syncer threads `fdatasync` the WAL" % words.get(syncers, syncers) in rc
    assert "run on %d reader threads" % readers in rc and "unless %d are running" % readers in rc
