#!/usr/bin/python3
"""A record-count server written the way a Twisted user would: twisted.web, callLater latency, in memory.

The anchor for record-countd in bench/run. GET /record-count?value=N&client=ID answers after the
latency with {"value", "client", "seq", "duplicate"}; GET /healthz answers at once. Nothing is
written to disk (so it does less than record-countd --durability full).

Usage: twisted_record_server.py --port PORT [--latency SECONDS] [--backlog N]
"""
import argparse
import json
import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.web import resource, server  # noqa: E402


class Store:
    def __init__(self):
        self.seq = 0
        self.records = {}


class RecordCount(resource.Resource):
    isLeaf = True

    def __init__(self, store, latency):
        super().__init__()
        self.store = store
        self.latency = latency

    def render_GET(self, request):
        try:
            value = int(request.args[b"value"][0])
            client = request.args.get(b"client", [b"anonymous"])[0].decode()
            if value < 1:
                raise ValueError(value)
        except (KeyError, ValueError, UnicodeDecodeError):
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"application/json")
            return b'{"error": "bad_value", "message": "value must be a positive integer"}'
        key = (client, value)
        seq = self.store.records.get(key)
        duplicate = seq is not None
        if not duplicate:
            self.store.seq += 1
            seq = self.store.records[key] = self.store.seq
        body = json.dumps({"value": value, "client": client, "seq": seq, "duplicate": duplicate}).encode()
        call = reactor.callLater(self.latency, self.finish, request, body)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return server.NOT_DONE_YET

    def finish(self, request, body):
        request.setHeader(b"content-type", b"application/json")
        request.write(body)
        request.finish()


class Healthz(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return b'{"status": "ok"}'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency", type=float, default=0.1, help="seconds")
    ap.add_argument("--backlog", type=int, default=1024)
    a = ap.parse_args()
    store = Store()
    root = resource.Resource()
    root.putChild(b"record-count", RecordCount(store, a.latency))
    root.putChild(b"healthz", Healthz())
    site = server.Site(root)
    reactor.listenTCP(a.port, site, backlog=a.backlog, interface="127.0.0.1")
    print("listening on 127.0.0.1:%d latency %gs" % (a.port, a.latency), file=sys.stderr, flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
