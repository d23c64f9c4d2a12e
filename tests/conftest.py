"""pytest setup shared by every Python test: makes tests/lib importable and offers daemon fixtures."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

import pytest  # noqa: E402
import harness  # noqa: E402


@pytest.fixture(autouse=True)
def no_sanitizer_report():
    """Fail a test during which a daemon logged a sanitizer report. A report ends the daemon (halt_on_error,
    abort_on_error in Makefile.am), but one at shutdown, or after a test's last request, would otherwise go
    unseen: the fixtures stop daemons without looking at how they ended."""
    yield
    found = []
    for d in list(harness.SPAWNED):
        rep = harness.sanitizer_report(d.read_log())
        if rep is not None:
            found.append("%s (%s): %s" % (d.name, d.log_path, rep))
        if rep is not None or (d.proc is not None and d.proc.poll() is not None):
            harness.SPAWNED.remove(d)   # reported once; a daemon that has ended logs nothing more
    if found:
        pytest.fail("sanitizer report in a daemon's log:\n" + "\n".join(found), pytrace=False)


@pytest.fixture
def tmpdir_path(tmp_path):
    """A fresh temporary directory for one test's sockets and databases."""
    return str(tmp_path)


@pytest.fixture
def record_countd(tmp_path):
    """Factory: start record-countd with extra arguments; every daemon started is stopped after the test."""
    started = []

    def start(*args, **kw):
        d = harness.RecordCountd(str(tmp_path), list(args), **kw)
        started.append(d)
        d.start()
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def counterd(tmp_path):
    """Factory: start counterd against a server URL with extra arguments; stopped after the test."""
    started = []

    def start(server_url, *args, **kw):
        d = harness.Counterd(str(tmp_path), server_url, list(args), **kw)
        started.append(d)
        d.start()
        return d

    yield start
    for d in started:
        d.stop()
