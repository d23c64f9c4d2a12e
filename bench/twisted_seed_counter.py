#!/usr/bin/python3
"""The seed's counter written with Twisted (Agent + DeferredLock): the anchor for counterd in bench/run.

Runs N concurrent next() calls against a record-count server (record-countd) and prints one JSON
object: elapsed seconds from the first call to the last answer, and whether the numbers handed out
were exactly 1..N.

  locked:    lock.run(next): read count, record count+1 (GET /record-count), then store it.
  stateless: reserve count+1 at once, then record it; records overlap.

Usage: twisted_seed_counter.py --server http://127.0.0.1:PORT --strategy locked|stateless --n N
"""
import argparse
import warnings
import json
import sys
import time

warnings.filterwarnings("ignore", category=DeprecationWarning)

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import defer, reactor  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool, readBody  # noqa: E402


class Recorder:
    """GET /record-count over a persistent connection pool."""

    def __init__(self, server, client):
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 10000
        self.agent = Agent(reactor, pool=pool)
        self.server = server.rstrip("/")
        self.client = client

    @defer.inlineCallbacks
    def record(self, value):
        url = "%s/record-count?value=%d&client=%s" % (self.server, value, self.client)
        response = yield self.agent.request(b"GET", url.encode())
        body = yield readBody(response)
        if response.code != 200:
            raise RuntimeError("record %d: HTTP %d %r" % (value, response.code, body[:200]))
        return json.loads(body)


class LockedCounter:
    def __init__(self, recorder):
        self.recorder = recorder
        self.count = 0
        self.lock = defer.DeferredLock()

    def next(self):
        return self.lock.run(self._next)

    @defer.inlineCallbacks
    def _next(self):
        value = self.count + 1
        yield self.recorder.record(value)
        self.count = value
        return value


class StatelessCounter:
    def __init__(self, recorder):
        self.recorder = recorder
        self.count = 0

    @defer.inlineCallbacks
    def next(self):
        self.count += 1
        value = self.count
        yield self.recorder.record(value)
        return value


@defer.inlineCallbacks
def run(a, out):
    recorder = Recorder(a.server, a.client)
    counter = (LockedCounter if a.strategy == "locked" else StatelessCounter)(recorder)
    t0 = time.perf_counter()
    values = yield defer.gatherResults([counter.next() for _ in range(a.n)], consumeErrors=True)
    out["seconds"] = round(time.perf_counter() - t0, 4)
    out["n"] = a.n
    out["unique_1_to_n"] = sorted(values) == list(range(1, a.n + 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--strategy", choices=("locked", "stateless"), default="locked")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--client", default="twisted-seed")
    a = ap.parse_args()
    out = {"strategy": a.strategy}

    d = run(a, out)
    d.addErrback(lambda f: out.__setitem__("error", f.getErrorMessage()))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    json.dump(out, sys.stdout)
    print()
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
