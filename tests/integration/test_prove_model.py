"""Model-based randomized tests against the real daemons.

Many concurrent clients do a random mix of operations, drawn from a seeded RNG, against a real record-countd
(and counterd in front of it); every answer is checked against a model of what record-countd(8) and counterd(8)
promise, with restarts (SIGTERM) and crashes (kill -9) in the middle of a run.

The seeds are parametrized; MODEL_SEED=N runs that one seed instead. The seed is in the test's id and in every
assertion message, so a failure can be replayed. Timing varies from run to run, which the assertions allow for:
each one holds whatever the interleaving. For a hunt: MODEL_ROUNDS (4, at most 6), MODEL_WORKERS (8),
MODEL_RC_ARGS (more record-countd options, e.g. "--access-log --log-level info"), and MODEL_DUMP=FILE, which
keeps the requests (FILE) and record-countd's log (FILE.log) when /stats disagrees.

Within one POST a value given twice is recorded once and its repeats answer duplicate:true with its seq
(record-countd(8) said nothing about it before this test).
"""
import json
import os
import random
import socket
import threading
import time
import urllib.parse
from bisect import bisect_left

import pytest

import harness
from test_client_helpers import server_records
from test_server_helpers import read_answers

INT64_MAX = 9223372036854775807
WORKERS = int(os.environ.get("MODEL_WORKERS", "8"))
SEEDS = [int(os.environ["MODEL_SEED"])] if os.environ.get("MODEL_SEED") else [1, 2, 3]
ROUNDS = int(os.environ.get("MODEL_ROUNDS", "4"))
CD_SEEDS = [int(os.environ["MODEL_SEED"])] if os.environ.get("MODEL_SEED") else [11, 12, 13]


class ConnFailed(Exception):
    pass


def call(port, method, path, body=None, timeout=30):
    """One request; a Response, or ConnFailed if the connection failed (refused, reset, closed unanswered)."""
    try:
        return harness.http_tcp("127.0.0.1", port, method, path, body=body, timeout=timeout)
    except (OSError, harness.http.client.HTTPException) as e:
        raise ConnFailed(repr(e))


def q(s):
    return urllib.parse.quote(s, safe="")


class Req:
    """One /record-count request as sent, and what came of it."""

    def __init__(self, client, values, post, gen):
        self.client, self.values, self.post, self.gen = client, values, post, gen
        self.t_send = self.t_recv = None
        self.seqs = self.dups = None     # per value, once answered
        self.failed = False              # no answer: it may or may not be recorded
        self.hangup = False              # this client hung up before the answer


class Model:
    """What the docs promise, built from the answers."""

    def __init__(self, seed, clients):
        self.seed = seed
        self.clients = clients
        self.lock = threading.Lock()
        self.acked = {}        # (client, value) -> seq, from every answer
        self.reqs = []         # every Req (answered or failed), all generations
        self.unknown = set()   # (client, value) of requests that got no answer
        self.seen_pages = []   # (seq, client, value) read from /records while writes went on
        self.at = {}           # seq -> at, as /records last said
        self.gen = 0
        self.gen_dups = 0      # duplicate answers this generation
        self.gen_rejected = 0  # 4xx answers this generation
        self.gen_start_seq = 0  # every seq above was written by this generation
        self.gen_start_last = {}  # client -> last value at the start of this generation

    def fail(self, msg):
        return "seed %d (MODEL_SEED=%d to replay): %s" % (self.seed, self.seed, msg)

    def answered(self, rq):
        with self.lock:
            self.reqs.append(rq)
            if rq.failed:
                self.unknown.update((rq.client, v) for v in rq.values)
                return
            for v, s, d in zip(rq.values, rq.seqs, rq.dups):
                old = self.acked.setdefault((rq.client, v), s)
                assert old == s, self.fail("(%s, %d) got seq %d, earlier %d" % (rq.client, v, s, old))
                if d:
                    self.gen_dups += 1


def values_for(rng, model, client, n):
    """n values: a mix of fresh ones, the edges, repeats of this client's and of other clients' values."""
    out = []
    with model.lock:
        known = list(model.acked)
    for _ in range(n):
        k = rng.random()
        if k < 0.05:
            out.append(rng.choice([1, INT64_MAX, INT64_MAX - 1, 2 ** 31, 2 ** 32 + 1, 2 ** 53 + 1]))
        elif k < 0.25 and known:
            out.append(rng.choice(known)[1])             # anyone's earlier value (own: a duplicate)
        elif k < 0.35 and out:
            out.append(rng.choice(out))                  # repeat within this request
        elif k < 0.45:
            out.append(rng.randrange(1, INT64_MAX))
        else:
            out.append(rng.randrange(1, 400))
    return out


def send_record(port, model, rq):
    rq.w_send = time.time()
    rq.t_send = time.monotonic()
    try:
        if rq.post:
            r = call(port, "POST", "/record-count", {"client": rq.client, "values": rq.values})
        else:
            r = call(port, "GET", "/record-count?value=%d&client=%s" % (rq.values[0], q(rq.client)))
    except ConnFailed:
        rq.t_recv = time.monotonic()
        rq.failed = True
        model.answered(rq)
        return False
    rq.t_recv = time.monotonic()
    rq.w_recv = time.time()
    take_answer(model, rq, r.status, r.body)
    return True


def take_answer(model, rq, status, body):
    """Check one /record-count answer against the request and put it in the model."""
    assert status == 200, model.fail("%s %s %r -> %r %r" % ("POST" if rq.post else "GET", rq.client, rq.values[:5],
                                                         status, body[:200]))
    j = json.loads(body)
    assert j["client"] == rq.client, model.fail(repr(j))
    if rq.post:
        recs = j["records"]
        assert [x["value"] for x in recs] == rq.values, model.fail("POST answer lists other values: %r" % j)
    else:
        recs = [j]
        assert j["value"] == rq.values[0], model.fail(repr(j))
    rq.seqs = [x["seq"] for x in recs]
    rq.dups = [x["duplicate"] for x in recs]
    # Within one request: recorded in the given order, a repeat answers the first one's seq as a duplicate.
    first, last_new = {}, 0
    for v, s, d in zip(rq.values, rq.seqs, rq.dups):
        if v in first:
            assert d and s == first[v], model.fail("repeat of %d in one POST: seq %d dup %s, first seq %d"
                                                   % (v, s, d, first[v]))
            continue
        first[v] = s
        if not d:
            assert s > last_new, model.fail("POST %s new seqs not in the given order: %r" % (rq.client, rq.seqs))
            last_new = s
    model.answered(rq)


def send_raw(port, model, rng, reqs):
    """Send several requests on one connection: pipelined GETs, or a POST whose body comes in two parts
    (it arrives when its last byte is read, so t_send is then; at is its request line, so w_send is before)."""
    answers = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            for rq in reqs:
                rq.w_send = time.time()
                rq.t_send = time.monotonic()
            if len(reqs) == 1 and reqs[0].post:
                rq = reqs[0]
                body = json.dumps({"client": rq.client, "values": rq.values}).encode()
                cut = rng.randint(1, len(body) - 1)
                s.sendall(b"POST /record-count HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                          b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:cut])
                time.sleep(rng.uniform(0.005, 0.03))
                rq.t_send = time.monotonic()
                s.sendall(body[cut:])
            else:
                s.sendall(b"".join(b"GET /record-count?value=%d&client=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                                   % (rq.values[0], q(rq.client).encode()) for rq in reqs))
            for rq, (status, _, body) in zip(reqs, read_answers(s, len(reqs))):
                rq.t_recv = time.monotonic()
                rq.w_recv = time.time()
                answers.append((rq, status, body))
            if len(answers) < len(reqs):
                raise OSError("connection closed after %d answers" % len(answers))
    except OSError:
        for rq in reqs[len(answers):]:
            rq.t_recv = time.monotonic()
            rq.failed = True
            model.answered(rq)
        return False
    finally:
        for rq, status, body in answers:
            take_answer(model, rq, status, body)
    if len(reqs) > 1:
        # pipelined: each is read after the one before it was answered, so in arrival order
        news = [s for rq in reqs for s, d in zip(rq.seqs, rq.dups) if not d]
        assert news == sorted(news), model.fail("pipelined GETs, new seqs %r not in order" % news)
    return True


INVALID = [
    ("GET", "/record-count?value=0&client=x"),
    ("GET", "/record-count?value=9223372036854775808&client=x"),
    ("GET", "/record-count?value=07&client=x"),
    ("GET", "/record-count?value=-1&client=x"),
    ("GET", "/record-count?value=5&client=" + "a" * 129),
    ("GET", "/record-count?value=5&client=bad%21id"),
    ("POST", {"client": "x", "values": []}),
    ("POST", {"client": "x", "values": list(range(1, 1002))}),
    ("POST", {"client": "x", "values": [1, 0]}),
]


def page_all(port, model, client=None, limit=None, rng=None):
    """Every record via /records paging (of client, or all), checking the cursor; [(seq, client, value)]."""
    out, after = [], 0
    while True:
        lim = limit or rng.randint(1, 60)
        path = "/records?after=%d&limit=%d" % (after, lim)
        if client is not None:
            path += "&client=" + q(client)
        r = call(port, "GET", path)
        assert r.status == 200, model.fail("%s -> %r" % (path, r))
        j = r.json()
        recs = j["records"]
        assert len(recs) <= lim, model.fail("%s: %d records" % (path, len(recs)))
        for x in recs:
            assert x["seq"] > after, model.fail("%s: seq %d not after the cursor" % (path, x["seq"]))
            assert client is None or x["client"] == client, model.fail("%s: %r" % (path, x))
            after = x["seq"]
            out.append((x["seq"], x["client"], x["value"]))
            model.at[x["seq"]] = x["at"]
        if len(recs) < lim:
            assert j["next_after"] is None, model.fail("%s: page not full, next_after %r" % (path, j["next_after"]))
            return out
        assert j["next_after"] == recs[-1]["seq"], model.fail("%s: next_after %r" % (path, j["next_after"]))


def worker(port, model, rng, wid, nops, owned, shared, stop, retries):
    """One client thread: first the retries handed to it, then nops random operations."""
    for rq in retries:
        again = Req(rq.client, rq.values, rq.post, model.gen)
        if not send_record(port, model, again):
            return
    for _ in range(nops):
        if stop.is_set():
            return
        k = rng.random()
        client = owned if rng.random() < 0.5 else rng.choice(shared)
        if k < 0.45:
            rq = Req(client, values_for(rng, model, client, 1), False, model.gen)
        elif k < 0.75:
            n = rng.choice([1, 2, 5, 20, 100]) if rng.random() < 0.97 else 1000
            rq = Req(client, values_for(rng, model, client, n), True, model.gen)
        elif k < 0.78:
            if rng.random() < 0.5:
                reqs = [Req(client, values_for(rng, model, client, 1), False, model.gen) for _ in range(rng.randint(2, 4))]
            else:
                reqs = [Req(client, values_for(rng, model, client, rng.choice([2, 20, 200])), True, model.gen)]
            if not send_raw(port, model, rng, reqs):
                return
            continue
        elif k < 0.82:
            with model.lock:
                mine = [x for x in model.reqs[-200:] if not x.failed and len(x.values) <= 100]
            if not mine:
                continue
            old = rng.choice(mine)                          # the same request again, as a retry would
            rq = Req(old.client, old.values, old.post, model.gen)
        elif k < 0.88:
            method, what = rng.choice(INVALID)
            try:
                if method == "GET":
                    r = call(port, "GET", what)
                else:
                    r = call(port, "POST", "/record-count", what)
            except ConnFailed:
                return
            assert 400 <= r.status < 500, model.fail("%s %r -> %r" % (method, str(what)[:80], r))
            with model.lock:
                model.gen_rejected += 1
            continue
        elif k < 0.90:
            # a client that hangs up during the latency: a fresh value, recorded or not, never a duplicate
            rq = Req(client, [rng.randrange(2 ** 62, INT64_MAX)], False, model.gen)
            rq.t_send = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(("GET /record-count?value=%d&client=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                               % (rq.values[0], q(client))).encode())
                    time.sleep(rng.uniform(0, 0.04))
            except OSError:
                return
            rq.failed = rq.hangup = True
            rq.t_recv = float("inf")   # in flight at the server until it notices, for all the client knows
            model.answered(rq)
            continue
        elif k < 0.95:
            # /records of one client (or all) while writes go on: everything acknowledged before is there
            c = rng.choice([None, client])
            with model.lock:
                before = {(cv[0], cv[1]): s for cv, s in model.acked.items() if c is None or cv[0] == c}
            try:
                got = page_all(port, model, c, rng=rng)
            except ConnFailed:
                return
            seqs = [s for s, _, _ in got]
            assert len(set(seqs)) == len(seqs), model.fail("/records paging gave a record twice")
            have = {(cl, v): s for s, cl, v in got}
            for cv, s in before.items():
                assert have.get(cv) == s, model.fail("/records (client %r) while writing: %r seq %d missing (got %r)"
                                                     % (c, cv, s, have.get(cv)))
            with model.lock:
                model.seen_pages.extend(got)
            continue
        else:
            with model.lock:
                mine = [v for (cl, v) in model.acked if cl == client]
            try:
                r = call(port, "GET", "/clients/" + q(client))
            except ConnFailed:
                return
            assert r.status == 200, model.fail(repr(r))
            j = r.json()
            assert j["client"] == client and j["recorded"] >= len(mine) and j["last_value"] >= max(mine, default=0), \
                model.fail("/clients/%s while writing: %r, acknowledged before: %d, max %d"
                           % (client, j, len(mine), max(mine, default=0)))
            continue
        if not send_record(port, model, rq):
            return


def run_phase(port, model, rng, nops, retries=(), fault=None):
    """WORKERS threads at once; fault(stop) runs meanwhile (a restart). Returns the failed requests."""
    stop = threading.Event()
    shared = model.clients[WORKERS:]
    errors = []
    parts = [list(retries)[i::WORKERS] for i in range(WORKERS)]

    def run(i, r):
        try:
            worker(port, model, r, i, nops, model.clients[i], shared, stop, parts[i])
        except BaseException as e:  # noqa: B902 - re-raised in the main thread
            errors.append(e)
            stop.set()

    n0 = len(model.reqs)
    threads = [threading.Thread(target=run, args=(i, random.Random(rng.random()))) for i in range(WORKERS)]
    for t in threads:
        t.start()
    if fault:
        fault(stop)
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    if fault is None and any(rq.hangup for rq in model.reqs[n0:]):
        # A request whose client hung up is committed (or dropped) once its latency is over; commits keep the
        # order of arrival, so once a request sent after them all is answered, theirs are done.
        time.sleep(0.1)
        sync = Req(model.clients[0], [rng.randrange(2 ** 62, INT64_MAX)], False, model.gen)
        assert send_record(port, model, sync), model.fail("no answer to the request after the hang-ups")
    return [rq for rq in model.reqs[n0:] if rq.failed and not rq.hangup]


def max_overlap(intervals):
    ev = sorted([(a, 1) for a, b in intervals] + [(b, -1) for a, b in intervals], key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def check_history(model):
    """Seqs unique, one seq per (client, value), duplicate flags right, arrival order kept."""
    by_seq = {}
    for (c, v), s in model.acked.items():
        assert by_seq.setdefault(s, (c, v)) == (c, v), model.fail("seq %d for %r and %r" % (s, by_seq[s], (c, v)))
    firsts = {}
    for rq in model.reqs:
        if rq.failed:
            continue
        seen = set()
        for v, d in zip(rq.values, rq.dups):
            if v in seen:
                continue
            seen.add(v)
            if not d:
                firsts[(rq.client, v)] = firsts.get((rq.client, v), 0) + 1
    for cv in model.acked:
        n = firsts.get(cv, 0)
        assert n <= 1, model.fail("%r answered duplicate:false %d times" % (cv, n))
        assert n == 1 or cv in model.unknown, model.fail("%r never answered duplicate:false" % (cv,))
    # Arrival order: a request sent after another's answer came back has higher new seqs, and sees its values.
    done = sorted((rq for rq in model.reqs if not rq.failed), key=lambda r: r.t_recv)
    recv_times = [rq.t_recv for rq in done]
    prefix = []
    best = (0, None)
    for rq in done:
        news = [s for s, d in zip(rq.seqs, rq.dups) if not d]
        if news and max(news) > best[0]:
            best = (max(news), rq)
        prefix.append(best)
    for rq in done:
        i = bisect_left(recv_times, rq.t_send)
        if i == 0:
            continue
        top, by = prefix[i - 1]
        for s, d, v in zip(rq.seqs, rq.dups, rq.values):
            if not d:
                assert s > top, model.fail("arrival order: (%s, %d) got seq %d, but seq %d (%s %r) was answered "
                                           "before it was sent" % (rq.client, v, s, top, by.client, by.values[:5]))


rc_log_path = [None]


def check_idle(model, port, rng):
    """Once idle: /records, /clients/ID and /stats say exactly what the model says."""
    check_history(model)
    allrecs = page_all(port, model, None, rng=rng)
    db = {(c, v): s for s, c, v in allrecs}
    assert len(db) == len(allrecs), model.fail("/records lists a (client, value) twice")
    assert [s for s, _, _ in allrecs] == sorted(s for s, _, _ in allrecs), model.fail("/records not in seq order")
    for cv, s in model.acked.items():
        assert db.get(cv) == s, model.fail("acknowledged %r seq %d, /records has %r" % (cv, s, db.get(cv)))
    extra = set(db) - set(model.acked)
    assert extra <= model.unknown, model.fail("records nobody asked for: %r" % sorted(extra - model.unknown)[:5])
    model.acked.update({cv: db[cv] for cv in extra})   # from now on they are known
    for rq in model.reqs:
        # at: when the request line was read, so between sending and the answer (same clock, 5 ms of rounding)
        for s, d in zip(rq.seqs or [], rq.dups or []):
            if not d:
                assert rq.w_send - 0.005 <= model.at[s] <= rq.w_recv + 0.005, \
                    model.fail("seq %d at %.6f, request sent %.6f, answered %.6f" % (s, model.at[s], rq.w_send,
                                                                                   rq.w_recv))
    for s, c, v in model.seen_pages:
        assert db.get((c, v)) == s, model.fail("/records showed (%s, %d) seq %d, now %r" % (c, v, s, db.get((c, v))))
    model.seen_pages = []
    per = {}
    for s, c, v in allrecs:
        per.setdefault(c, []).append((s, v))
    for c in model.clients:
        mine = per.get(c, [])
        got = page_all(port, model, c, limit=rng.choice([1, 7, 100, 1000]))
        assert got == [(s, c, v) for s, v in mine], model.fail("/records?client=%s differs from the table" % c)
        r = call(port, "GET", "/clients/" + q(c))
        want = {"client": c, "last_value": max((v for _, v in mine), default=0), "recorded": len(mine)}
        assert r.status == 200 and r.json() == want, model.fail("/clients/%s: %r, want %r" % (c, r, want))
    r = call(port, "GET", "/clients/never-used")
    assert r.status == 200 and r.json() == {"client": "never-used", "last_value": 0, "recorded": 0}, model.fail(repr(r))
    r = call(port, "GET", "/stats?client=never-used")
    assert r.status == 200 and r.json()["clients"] == {}, model.fail(repr(r))
    r = call(port, "GET", "/stats")
    assert r.status == 200, model.fail(repr(r))
    st = r.json()
    gen_reqs = [rq for rq in model.reqs if rq.gen == model.gen and not rq.failed]
    gen_all = [rq for rq in model.reqs if rq.gen == model.gen and (not rq.failed or rq.hangup)]
    assert st["recorded"] == len(allrecs), model.fail("/stats recorded %d, table %d" % (st["recorded"], len(allrecs)))
    if st["duplicates"] != model.gen_dups and os.environ.get("MODEL_DUMP"):
        with open(os.environ["MODEL_DUMP"], "w") as f:
            json.dump([dict(client=rq.client, values=rq.values, post=rq.post, gen=rq.gen, failed=rq.failed,
                            hangup=rq.hangup, seqs=rq.seqs, dups=rq.dups, t_send=rq.t_send,
                            t_recv=rq.t_recv if rq.t_recv != float("inf") else None) for rq in model.reqs], f)
        import shutil; shutil.copy(rc_log_path[0], os.environ["MODEL_DUMP"] + ".log")
    assert st["duplicates"] == model.gen_dups, model.fail("/stats duplicates %d, model %d"
                                                           % (st["duplicates"], model.gen_dups))
    assert st["rejected"] == model.gen_rejected, model.fail("/stats rejected %d, model %d"
                                                             % (st["rejected"], model.gen_rejected))
    assert st["in_flight"] == 0, model.fail("idle, in_flight %d" % st["in_flight"])
    hi = max_overlap([(rq.t_send, rq.t_recv) for rq in gen_all])
    assert (1 if gen_reqs else 0) <= st["max_in_flight"] <= hi, \
        model.fail("/stats max_in_flight %d, client side at most %d" % (st["max_in_flight"], hi))
    assert set(st["clients"]) == set(per), model.fail("/stats clients %r, table %r" % (sorted(st["clients"]),
                                                                                      sorted(per)))
    for c, mine in per.items():
        cs = st["clients"][c]
        last = model.gen_start_last.get(c, 0)
        ooo = 0
        for s, v in mine:
            if s <= model.gen_start_seq:
                continue
            if v < last:
                ooo += 1
            else:
                last = v
        reqs = [(rq.t_send, rq.t_recv) for rq in gen_all if rq.client == c]
        answered = any(rq.client == c for rq in gen_reqs)
        want = {"recorded": len(mine), "last_value": max(v for _, v in mine), "in_flight": 0, "out_of_order": ooo}
        assert {k: cs[k] for k in want} == want, model.fail("/stats clients.%s: %r, model %r" % (c, cs, want))
        hi = max_overlap(reqs)
        assert (1 if answered else 0) <= cs["max_in_flight"] <= hi, \
            model.fail("/stats clients.%s max_in_flight %d, client side %d..%d" % (c, cs["max_in_flight"],
                                                                                  1 if answered else 0, hi))
        r = call(port, "GET", "/stats?client=" + q(c))
        assert r.status == 200 and r.json()["clients"] == {c: cs}, model.fail("/stats?client=%s: %r, /stats %r"
                                                                            % (c, r, cs))
    return allrecs


def new_generation(model, port, rng):
    """A daemon just started on the database: every acknowledged record is there with its seq; counters restart."""
    allrecs = page_all(port, model, None, limit=1000)
    db = {(c, v): s for s, c, v in allrecs}
    for cv, s in model.acked.items():
        assert db.get(cv) == s, model.fail("after restart (gen %d): acknowledged %r seq %d, now %r"
                                           % (model.gen + 1, cv, s, db.get(cv)))
    model.gen += 1
    model.gen_dups = model.gen_rejected = 0
    model.gen_start_seq = max((s for s, _, _ in allrecs), default=0)
    model.gen_start_last = {}
    for s, c, v in allrecs:
        model.gen_start_last[c] = max(model.gen_start_last.get(c, 0), v)


@pytest.mark.parametrize("seed", SEEDS)
def test_record_countd_model(record_countd, seed):
    rng = random.Random(seed)
    clients = ["w%d" % i for i in range(WORKERS)] + ["shared", "a.b:c-d_e", "Z" * 128, "n%d" % seed]
    model = Model(seed, clients)
    latency, jitter = [("20ms", "10ms"), ("5ms", "5ms"), ("1ms", "0")][seed % 3]
    durability = ["full", "normal"][seed % 2]   # both survive a crash of the process
    print("seed %d: --latency %s --jitter %s --durability %s" % (seed, latency, jitter, durability))
    rc = record_countd("--latency", latency, "--jitter", jitter, "--durability", durability, "--log-level", "warn",
                       *os.environ.get("MODEL_RC_ARGS", "").split())
    rc_log_path[0] = rc.log_path
    port = rc.port
    kinds = ["plain", "term", "kill", "idle-restart", "plain", "kill"][:max(ROUNDS, 1)]
    for rnd, kind in enumerate(kinds):
        nops = rng.randint(15, 30)
        if kind in ("term", "kill"):
            at = rng.uniform(0.1, 0.5)

            def fault(stop, kind=kind, at=at):
                time.sleep(at)
                if kind == "kill":
                    rc.kill()
                else:
                    assert rc.stop() == 0, model.fail("exit status after SIGTERM\n" + rc.read_log()[-2000:])
                stop.set()
            failed = run_phase(port, model, rng, nops, fault=fault)
            rc.start()
            new_generation(model, port, rng)
            run_phase(port, model, rng, nops // 2, retries=failed)
        else:
            run_phase(port, model, rng, nops)
        allrecs = check_idle(model, port, rng)
        print("seed %d round %d %s: %d requests (%d unanswered), %d records, %d duplicates this generation, "
              "%d rejected" % (seed, rnd, kind, len(model.reqs), sum(rq.failed for rq in model.reqs), len(allrecs),
                               model.gen_dups, model.gen_rejected))
        if kind == "idle-restart":
            assert rc.stop() == 0
            rc.start()
            new_generation(model, port, rng)
            check_idle(model, port, rng)
    assert len(model.acked) > 100, model.fail("too little recorded to mean anything: %d" % len(model.acked))


# ---------------------------------------------------------------------------------------------------------------
# counterd in front of record-countd


def cancel_next(sock_path, name, after):
    """POST next and hang up after `after` seconds, unless the answer came first; the number, or None."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(after)
    buf = b""
    try:
        s.connect(sock_path)
        s.sendall(("POST /counters/%s/next HTTP/1.1\r\nHost: l\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                   % name).encode())
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except (socket.timeout, OSError):
        return None
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    if head.split(b" ")[1:2] == [b"200"]:
        return json.loads(body)["count"]
    return None


@pytest.mark.parametrize("seed", CD_SEEDS)
def test_counterd_model(record_countd, counterd, seed):
    rng = random.Random(seed)
    rc = record_countd("--latency", "15ms", "--jitter", "5ms", "--log-level", "warn")
    strategies = {"L%d" % seed: ["--strategy", "locked", "--batch-max", str([1, 4, 64][seed % 3])],
                  "S%d" % seed: ["--strategy", "stateless"]}
    daemons = {cid: counterd(rc.url, *args, "--log-level", "warn", client_id=cid) for cid, args in strategies.items()}
    names = ["c%d" % i for i in range(3)]
    handed = {(cid, n): [] for cid in daemons for n in names}   # every number answered 200
    lock = threading.Lock()
    window = {cid: 0 for cid in daemons}   # odd while that counterd restarts
    window["rc"] = 0                       # odd while record-countd restarts
    stats = {"calls": 0, "refused": 0}
    # since each counterd started: calls answered 200 and calls abandoned, per counter; clean = started while idle
    inst = {cid: {"answered": dict.fromkeys(names, 0), "abandoned": dict.fromkeys(names, 0), "clean": True,
                  "failed": False, "start": dict.fromkeys(names, 0)} for cid in daemons}

    def fail(msg):
        return "seed %d (MODEL_SEED=%d to replay): %s" % (seed, seed, msg)

    def caller(r, nops):
        for _ in range(nops):
            cid = r.choice(sorted(daemons))
            n = r.choice(names)
            sock = daemons[cid].socket
            if r.random() < 0.25:
                got = cancel_next(sock, n, r.uniform(0.001, 0.03))
                if got is None:
                    with lock:
                        inst[cid]["abandoned"][n] += 1
            else:
                epoch, rc_epoch = window[cid], window["rc"]
                try:
                    resp = harness.http_unix(sock, "POST", "/counters/%s/next" % n)
                except (OSError, harness.http.client.HTTPException) as e:
                    resp = e
                if not isinstance(resp, harness.Response) or resp.status != 200:
                    if window["rc"] != rc_epoch or window["rc"] % 2 == 1:
                        # while record-countd restarts: 503 (unreachable after the retries) or 504
                        assert isinstance(resp, harness.Response) and resp.status in (503, 504), \
                            fail("%s %s during a record-countd restart -> %r" % (cid, n, resp))
                        with lock:
                            inst[cid]["failed"] = True
                    else:
                        # only while that counterd restarts: refused, or 503 shutting_down for a call still waiting
                        assert window[cid] != epoch or window[cid] % 2 == 1, fail("%s %s -> %r" % (cid, n, resp))
                        assert not isinstance(resp, harness.Response) or (
                            resp.status == 503 and resp.json()["error"] == "shutting_down"), \
                            fail("%s -> %r" % (cid, resp))
                    with lock:
                        stats["refused"] += 1
                    continue
                got = resp.json()["count"]
                assert resp.json()["counter"] == n
            with lock:
                if got is not None:
                    handed[(cid, n)].append(got)
                    inst[cid]["answered"][n] += 1
                stats["calls"] += 1

    for rnd in range(4):
        errors = []

        def run(r):
            try:
                caller(r, r.randint(10, 25))
            except BaseException as e:  # noqa: B902
                errors.append(e)
        threads = [threading.Thread(target=run, args=(random.Random(rng.random()),)) for _ in range(12)]
        for t in threads:
            t.start()
        if rnd == 1:
            # a restart in the middle of the calls: those recording are answered, those waiting get 503
            time.sleep(rng.uniform(0.05, 0.3))
            cid = rng.choice(sorted(daemons))
            window[cid] += 1
            inst[cid]["clean"] = False
            assert daemons[cid].stop() == 0, fail("counterd exit status\n" + daemons[cid].read_log()[-2000:])
            daemons[cid].start()
            window[cid] += 1
        if rnd in (2, 3):
            # record-countd killed (2) or stopped (3) in the middle: counterd retries, then fails the calls
            time.sleep(rng.uniform(0.05, 0.3))
            window["rc"] += 1
            for cid in daemons:
                inst[cid]["failed"] = True   # a call abandoned meanwhile may have been in a batch that failed
            if rnd == 2:
                rc.kill()
            else:
                assert rc.stop() == 0
            time.sleep(rng.uniform(0.1, 0.8))   # past the retries (at most 0.35 s) now and then
            rc.start()
            window["rc"] += 1
        for t in threads:
            t.join(120)
        assert not errors, errors[0]
        # idle: wait until nothing is in flight at counterd, then compare with record-countd
        for cid, d in daemons.items():
            deadline = time.monotonic() + 10
            while True:
                cs = d.get("/counters").json()
                lst = cs["counters"] if isinstance(cs, dict) and "counters" in cs else cs
                busy = [c for c in lst if c.get("in_flight") or c.get("waiting")]
                if not busy or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert not busy, fail("%s still busy: %r" % (cid, busy))
        # one more call per counter: a locked counter whose batch failed offers its numbers again
        for (cid, n), got in handed.items():
            resp = daemons[cid].next(n)
            assert resp.status == 200, fail("%s %s once idle -> %r" % (cid, n, resp))
            got.append(resp.json()["count"])
            inst[cid]["answered"][n] += 1
        cst = {cid: d.get("/stats").json()["counters"] for cid, d in daemons.items()}
        for (cid, n), got in handed.items():
            assert len(got) == len(set(got)), fail("%s:%s handed out a number twice: %r" % (cid, n, sorted(got)))
            recs = server_records(rc, "%s:%s" % (cid, n))
            assert set(got) <= set(recs), fail("%s:%s handed out but not recorded: %r"
                                               % (cid, n, sorted(set(got) - set(recs))[:10]))
            if not got and not recs:
                continue
            r = daemons[cid].get("/counters/" + n)
            count = r.json()["count"] if r.status == 200 else None
            st = cst[cid][n]
            assert st["conflicts"] == 0, fail("%s:%s conflicts with no other writer: %r" % (cid, n, st))
            if inst[cid]["clean"]:
                # handed_out counts the values acknowledged, whether their caller waited for them or not
                lo, hi = inst[cid]["answered"][n], inst[cid]["answered"][n] + inst[cid]["abandoned"][n]
                assert lo <= st["handed_out"] <= hi and st["cancelled"] <= inst[cid]["abandoned"][n], \
                    fail("%s:%s /stats %r; since start %d answered, %d abandoned" % (cid, n, st, lo, hi - lo))
                if cid.startswith("L") and not inst[cid]["failed"]:
                    assert st["handed_out"] == len(recs) - inst[cid]["start"][n], \
                        fail("locked %s:%s handed_out %d, records %d, %d at start" % (cid, n, st["handed_out"],
                                                                                   len(recs), inst[cid]["start"][n]))
            if cid.startswith("L"):
                assert recs == list(range(1, len(recs) + 1)), fail("locked %s:%s records not 1..M in order: %r"
                                                                   % (cid, n, recs[:50]))
                # a batch that failed after record-countd had recorded it: its values wait for the next calls
                slack = 0 if not inst[cid]["failed"] else int(strategies[cid][3]) - 1
                if count is not None:
                    assert count == max(got) and len(recs) - slack <= count <= len(recs), fail("locked %s:%s count %r, records %d" % (cid, n, count, len(recs)))
            else:
                assert len(recs) == len(set(recs)) and (count is None or max(recs) <= count == max(got)), \
                    fail("stateless %s:%s records %r, count %r" % (cid, n, sorted(recs)[-5:], count))
        print("seed %d round %d: %r, handed out %r" % (seed, rnd, stats, {k: len(v) for k, v in handed.items()}))
        # a counterd restart between rounds: numbers go on after what it handed out
        for cid in daemons:
            daemons[cid].restart()
            inst[cid] = {"answered": dict.fromkeys(names, 0), "abandoned": dict.fromkeys(names, 0), "clean": True,
                         "failed": False, "start": {n: len(server_records(rc, "%s:%s" % (cid, n))) for n in names}}
