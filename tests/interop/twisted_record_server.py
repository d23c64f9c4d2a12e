#!/usr/bin/env python3
"""A record-count server written with Twisted (twisted.web, callLater latency, in memory).

It speaks the subset of record-countd's JSON API that counterd uses, so counterd can be checked against an implementation
we did not design:
  GET  /record-count?value=N[&client=ID]      record one value, answer after the latency
  POST /record-count {"client", "values"}     record several values in order, one latency
  GET  /clients/ID                            {"client", "last_value", "recorded"}
  GET  /healthz
and, for the tests' own checks, GET /records?client=ID&after=S&limit=L and GET /stats (per-client in_flight,
max_in_flight, out_of_order). Recording (client, value) twice is idempotent (same seq, duplicate true).

  twisted_record_server.py [--port 0] [--port-file PATH] [--latency 100ms]
prints "listening on PORT" once it accepts connections.
"""
import argparse
import json
import re
import sys

from twisted.internet import endpoints, reactor
from twisted.web import resource, server

ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
VALUE_RE = re.compile(r"^[1-9][0-9]{0,18}$")
MAX_VALUE = (1 << 63) - 1


def parse_latency(s):
    """'100ms', '1s', '0.25' (seconds) -> seconds."""
    if s.endswith("ms"):
        return float(s[:-2]) / 1000.0
    if s.endswith("s"):
        return float(s[:-1])
    return float(s)


class Client:
    def __init__(self):
        self.values = {}          # value -> seq
        self.last_value = 0
        self.high = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.out_of_order = 0


class Store:
    def __init__(self):
        self.clients = {}
        self.records = []         # (seq, client, value)
        self.seq = 0
        self.duplicates = 0

    def client(self, cid):
        return self.clients.setdefault(cid, Client())

    def record(self, cid, value):
        c = self.client(cid)
        if value in c.values:
            self.duplicates += 1
            return {"value": value, "seq": c.values[value], "duplicate": True}
        self.seq += 1
        c.values[value] = self.seq
        if value < c.high:
            c.out_of_order += 1
        c.high = max(c.high, value)
        c.last_value = c.high     # the highest value: what a counter resumes after
        self.records.append((self.seq, cid, value))
        return {"value": value, "seq": self.seq, "duplicate": False}


def parse_value(v):
    if not isinstance(v, str) or not VALUE_RE.match(v) or int(v) > MAX_VALUE:
        return None
    return int(v)


class Root(resource.Resource):
    isLeaf = True

    def __init__(self, store, latency):
        super().__init__()
        self.store = store
        self.latency = latency

    def answer(self, request, code, obj):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(obj).encode()

    def error(self, request, code, err, msg):
        return self.answer(request, code, {"error": err, "message": msg})

    def arg(self, request, name):
        vals = request.args.get(name.encode(), [])
        if len(vals) != 1:
            return None
        try:
            return vals[0].decode("utf-8")
        except UnicodeDecodeError:
            return None

    def delayed(self, request, cid, body):
        """Answer body after the latency; the client counts as in flight meanwhile."""
        c = self.store.client(cid)
        c.in_flight += 1
        c.max_in_flight = max(c.max_in_flight, c.in_flight)
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def finish():
            c.in_flight -= 1
            if gone:
                return
            request.setHeader(b"content-type", b"application/json")
            request.write(json.dumps(body).encode())
            request.finish()

        reactor.callLater(self.latency, finish)
        return server.NOT_DONE_YET

    def render_GET(self, request):
        path = request.path.decode("latin-1")
        if path == "/healthz":
            return self.answer(request, 200, {"status": "ok"})
        if path == "/record-count":
            value = parse_value(self.arg(request, "value"))
            if value is None:
                return self.error(request, 400, "bad_value", "value must be a decimal integer 1..2^63-1")
            cid = self.arg(request, "client") if b"client" in request.args else "anonymous"
            if cid is None or not ID_RE.match(cid):
                return self.error(request, 400, "bad_client", "client must be 1..128 of [A-Za-z0-9._:-]")
            r = self.store.record(cid, value)
            r["client"] = cid
            return self.delayed(request, cid, r)
        if path.startswith("/clients/"):
            cid = path[len("/clients/"):]
            if not ID_RE.match(cid):
                return self.error(request, 400, "bad_client", "client must be 1..128 of [A-Za-z0-9._:-]")
            c = self.store.clients.get(cid)
            return self.answer(request, 200, {"client": cid, "last_value": c.last_value if c else 0,
                                              "recorded": len(c.values) if c else 0})
        if path == "/records":
            cid = self.arg(request, "client")
            after = int(self.arg(request, "after") or 0)
            limit = min(1000, int(self.arg(request, "limit") or 100))
            recs = [{"seq": s, "client": c, "value": v} for s, c, v in self.store.records
                    if s > after and (cid is None or c == cid)][:limit]
            return self.answer(request, 200, {"records": recs, "next_after": recs[-1]["seq"] if recs else after})
        if path == "/stats":
            return self.answer(request, 200, {
                "recorded": len(self.store.records), "duplicates": self.store.duplicates,
                "clients": {k: {"recorded": len(c.values), "last_value": c.last_value, "in_flight": c.in_flight,
                                "max_in_flight": c.max_in_flight, "out_of_order": c.out_of_order}
                            for k, c in self.store.clients.items()}})
        return self.error(request, 404, "not_found", "no such path")

    def render_POST(self, request):
        if request.path != b"/record-count":
            return self.error(request, 404, "not_found", "no such path")
        try:
            doc = json.loads(request.content.read())
        except ValueError:
            return self.error(request, 400, "bad_json", "body is not JSON")
        cid = doc.get("client") if isinstance(doc, dict) else None
        if not isinstance(cid, str) or not ID_RE.match(cid):
            return self.error(request, 400, "bad_client", "client must be 1..128 of [A-Za-z0-9._:-]")
        values = doc.get("values")
        if (not isinstance(values, list) or not 1 <= len(values) <= 1000 or
                not all(type(v) is int and 1 <= v <= MAX_VALUE for v in values)):
            return self.error(request, 400, "bad_values", "values must be a list of 1..1000 integers 1..2^63-1")
        recs = [self.store.record(cid, v) for v in values]
        return self.delayed(request, cid, {"client": cid, "records": recs})


def main(argv=None):
    ap = argparse.ArgumentParser(description="record-count server in Twisted (test peer for counterd)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port-file", help="write the port number here once listening")
    ap.add_argument("--latency", default="100ms", help="answer delay, e.g. 100ms, 1s (default 100ms)")
    args = ap.parse_args(argv)
    site = server.Site(Root(Store(), parse_latency(args.latency)))
    site.noisy = False
    ep = endpoints.TCP4ServerEndpoint(reactor, args.port, backlog=1024, interface=args.host)

    def listening(port):
        n = port.getHost().port
        if args.port_file:
            with open(args.port_file + ".tmp", "w") as f:
                f.write("%d\n" % n)
            import os
            os.rename(args.port_file + ".tmp", args.port_file)
        print("listening on %d" % n, flush=True)

    def failed(f):
        print("twisted_record_server: cannot listen: %s" % f.getErrorMessage(), file=sys.stderr)
        reactor.stop()

    ep.listen(site).addCallbacks(listening, failed)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
