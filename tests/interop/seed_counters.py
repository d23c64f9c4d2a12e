#!/usr/bin/env python3
"""The seed's three NetworkCounter classes, written with Twisted the way a Twisted user would.

Each counter records every value it hands out with `GET /record-count?value=N&client=ID` through twisted.web's Agent:
  UnsafeNetworkCounter     returns the shared count after the record completes (the seed's bug: 2, 2);
  LockedNetworkCounter     serialises increment+record with a DeferredLock (1, 2);
  StatelessNetworkCounter  captures the value in a closure before recording (1, 2).

As a script it runs the seed's scenario (N concurrent next() calls per counter) against a record-count server and prints
{"unsafe": {"results": [...], "seconds": S}, "locked": {...}, "stateless": {...}} as one JSON line.

  seed_counters.py --server http://127.0.0.1:8080 [-n 2] [--strategy locked ...] [--client-prefix seed]
"""
import argparse
import json
import sys
import time
import warnings
from urllib.parse import quote

from twisted.internet import defer, task
from twisted.web.client import Agent, HTTPConnectionPool, readBody


# Agent's readBody warns about transports without abortConnection on some Twisted versions; not our concern here.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=__name__)


class RecordError(Exception):
    """The record-count server answered something other than 200."""


class Recorder:
    """record(value) -> Deferred firing with the server's JSON answer once the value is recorded."""

    def __init__(self, reactor, server, client, pool=None):
        self.agent = Agent(reactor, pool=pool)
        self.server = server.rstrip("/")
        self.client = client

    def record(self, value):
        url = "%s/record-count?value=%d&client=%s" % (self.server, value, quote(self.client, safe=""))
        d = self.agent.request(b"GET", url.encode("ascii"))

        def got(response):
            b = readBody(response)
            b.addCallback(lambda body: (response.code, body))
            return b

        def check(result):
            code, body = result
            if code != 200:
                raise RecordError("record %d: HTTP %d %r" % (value, code, body[:200]))
            return json.loads(body)

        d.addCallback(got)
        d.addCallback(check)
        return d


class UnsafeNetworkCounter:
    """The seed's first counter: increments, records, then answers with whatever the count is by then."""

    def __init__(self, record):
        self.count = 0
        self.record = record

    def next(self):
        self.count += 1
        d = self.record(self.count)
        d.addCallback(lambda _: self.count)
        return d


class LockedNetworkCounter:
    """The seed's fix: the increment and its record run under a DeferredLock, one at a time."""

    def __init__(self, record):
        self.count = 0
        self.record = record
        self.lock = defer.DeferredLock()

    def next(self):
        return self.lock.run(self._next)

    def _next(self):
        self.count += 1
        d = self.record(self.count)
        d.addCallback(lambda _: self.count)
        return d


class StatelessNetworkCounter:
    """The other fix: each call keeps its own value in a closure; records may overlap."""

    def __init__(self, record):
        self.count = 0
        self.record = record

    def next(self):
        self.count += 1
        value = self.count
        d = self.record(value)
        d.addCallback(lambda _: value)
        return d


COUNTERS = {"unsafe": UnsafeNetworkCounter, "locked": LockedNetworkCounter, "stateless": StatelessNetworkCounter}


@defer.inlineCallbacks
def run_scenario(reactor, server, strategies, n, client_prefix):
    """N concurrent next() on a fresh counter of each strategy; returns {strategy: {"results", "seconds"}}."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max(2, n)
    out = {}
    try:
        for name in strategies:
            rec = Recorder(reactor, server, "%s-%s" % (client_prefix, name), pool)
            counter = COUNTERS[name](rec.record)
            t0 = time.monotonic()
            results = yield defer.gatherResults([counter.next() for _ in range(n)], consumeErrors=True)
            out[name] = {"results": results, "seconds": round(time.monotonic() - t0, 4)}
    finally:
        yield pool.closeCachedConnections()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="record-count server URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("-n", type=int, default=2, help="concurrent next() calls per counter (default 2, the seed's)")
    ap.add_argument("--strategy", action="append", choices=sorted(COUNTERS),
                    help="run only this counter (repeatable; default all three)")
    ap.add_argument("--client-prefix", default="seed", help="client id prefix at the server (default seed)")
    args = ap.parse_args(argv)
    strategies = args.strategy or ["unsafe", "locked", "stateless"]
    result = {}

    def go(reactor):
        d = run_scenario(reactor, args.server, strategies, args.n, args.client_prefix)
        d.addCallback(result.update)
        return d

    try:
        task.react(go)
    except SystemExit as e:
        if e.code:
            print(json.dumps({"error": "scenario failed (see traceback above)"}))
            return int(e.code)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
