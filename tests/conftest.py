"""pytest setup shared by every Python test: makes tests/lib importable and offers daemon fixtures."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

import pytest  # noqa: E402
import harness  # noqa: E402


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
