"""record-countd when the data gets big, scaled down to run in seconds: paging a client with many records among
others, and start-up on a database with many clients under systemd. The figures at full size (10 million records,
100,000 clients) are in record-countd(8), LIMITS; these tests check behaviour, never a time."""
import http.client
import json
import os
import signal
import socket
import sqlite3
import threading
import time

from test_server_helpers import RECORD_COUNTD


def fill(path, sql, *args):
    """Run one INSERT on the database at path, as a restore or another program would write it."""
    con = sqlite3.connect(path)
    try:
        con.execute(sql, args)
        con.commit()
    finally:
        con.close()


def table(path, client):
    """Every record of client as (seq, client, value, at), in seq order, read straight from the file."""
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT seq, client, value, at FROM records WHERE client = ? ORDER BY seq",
                           (client,)).fetchall()
    finally:
        con.close()


def page(d, client, after, limit):
    """One page of /records as (records as tuples, next_after)."""
    r = d.get("/records?client=%s&after=%d&limit=%d" % (client, after, limit))
    assert r.status == 200, r
    j = r.json()
    return [(x["seq"], x["client"], x["value"], x["at"]) for x in j["records"]], j["next_after"]


def walk(d, client, limit, after=0):
    """Every page of client from after on, until one that is not full; the records of all of them."""
    got = []
    while True:
        recs, nxt = page(d, client, after, limit)
        got += recs
        if nxt is None:
            assert len(recs) < limit
            return got
        assert len(recs) == limit and nxt == recs[-1][0]
        after = nxt


# 200,000 records: seq 1..100,000 are 9 in 10 "big" (the other one of 500 small clients), with values counting down
# in each run of 1,000 (so value order is not seq order); 100,001..150,000 hold none of "big";
# 150,001..200,000 one in 100. A page of "big" is then found in seq order from the table (the dense part), partly
# there and partly from the index (the pages around the gap), or from the index alone (a small client).
LAYOUT = (
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200000) "
    "INSERT INTO records (client, value, at) SELECT "
    " CASE WHEN (i <= 100000 AND i % 10 != 0) OR (i > 150000 AND i % 100 = 0) THEN 'big' "
    " ELSE 'small' || (i % 500) END, "
    " CASE WHEN i <= 100000 THEN (i / 1000) * 1000 + 1000 - i % 1000 ELSE 1000000 + i END, "
    " 1764201600 + i / 1000.0 FROM c")


def big_database(record_countd):
    """A stopped record-countd whose database holds LAYOUT, and the path of that database."""
    d = record_countd("--latency", "0")
    assert d.stop() == 0
    fill(d.db, LAYOUT)
    return d.db


def test_paging_a_big_client_gives_every_record_in_seq_order(record_countd):
    """Pages of a client with many records among others, of every size and from every place, are the records with
    seq above after in seq order, whichever way they are found (the dense part, the gap, the sparse end, the last
    page, past the end), and one walk of them gives all of the client's records, each once."""
    db = big_database(record_countd)
    d = record_countd("--latency", "0", db=db)
    want = table(db, "big")
    assert len(want) == 90000 + 500
    seqs = [r[0] for r in want]
    for limit in (1, 7, 1000):
        for after in (0, 1, 5, 99999, 100000, 100001, 120000, 149999, 150000, 150050, 199000, 199999, 200000,
                      10 ** 12):
            got, nxt = page(d, "big", after, limit)
            expect = [r for r in want if r[0] > after][:limit]
            assert got == expect, (limit, after)
            assert nxt == (expect[-1][0] if len(expect) == limit else None), (limit, after)
    assert walk(d, "big", 1000) == want
    assert walk(d, "big", 333, after=seqs[89990]) == want[89991:]
    small = table(db, "small7")
    assert walk(d, "small7", 100) == small and len(small) == 200
    assert page(d, "nobody", 0, 1000) == ([], None)
    assert d.get("/clients/big").json() == {"client": "big", "last_value": 1200000, "recorded": 90500}


def test_paging_a_big_client_while_it_records(record_countd):
    """A walk through a big client's pages while it goes on recording (new records come after the walk's cursor)
    misses none and repeats none: each page is read from one moment of the database, not half from one and half
    from a later one."""
    db = big_database(record_countd)
    d = record_countd("--latency", "0", db=db)
    failed = []

    def writes():
        # 40 batches of 500: bounded, so that a slow walk (a sanitizer build) ends too.
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        for v in range(10 ** 7, 10 ** 7 + 40 * 500, 500):
            body = '{"client": "big", "values": [%s]}' % ",".join(str(v + k) for k in range(500))
            conn.request("POST", "/record-count", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                failed.append(r.status)
        conn.close()

    t = threading.Thread(target=writes)
    t.start()
    try:
        got = walk(d, "big", 1000)
    finally:
        t.join(60)
    assert not failed, failed
    got += walk(d, "big", 1000, after=got[-1][0])
    assert got == table(db, "big") and len(got) == 90500 + 20000


def notify_socket(tmp_path):
    """A datagram socket standing in for systemd's notify socket, and its path."""
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(20)
    return s, path


def tasks(pid):
    """How many threads process pid has (0 once it is gone)."""
    try:
        return len(os.listdir("/proc/%d/task" % pid))
    except OSError:
        return 0


def test_slow_start_keeps_systemd_waiting_and_says_how_far_it_got(record_countd, tmp_path):
    """A start whose loading of the clients' summaries takes over a second (a database of some hundred million
    records) tells systemd to wait on (EXTEND_TIMEOUT_USEC, or the unit's start timeout kills it and Restart= starts
    it over, for ever) and how far it got (STATUS=), then that it is done; a short one says nothing before READY=1.
    The load is made slow here by stopping the daemon in the middle of it."""
    d = record_countd("--latency", "0")
    serving = tasks(d.proc.pid)     # its threads once serving (the sanitizers may add one)
    assert d.stop() == 0
    # 60,000 clients of 10 records each: a load long enough to stop the daemon in its middle.
    fill(d.db, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 600000) "
               "INSERT INTO records (client, value, at) SELECT 'host' || (i % 60000), i, 0 FROM c")
    argv = [RECORD_COUNTD, "--listen", "127.0.0.1:%d" % d.port, "--db", d.db, "--latency", "0"]
    s, path = notify_socket(tmp_path)
    with s:
        # The stop comes this long after every thread is up (store_open() is done): the load begins at once in a
        # release build, later under TSan, and is over in a tenth of a second or so.
        for delay in (0, 0.03, 0.06, 0.1, 0.15, 0.2, 0.01, 0.04, 0.08, 0.3):
            d.spawn(argv, {"NOTIFY_SOCKET": path})
            deadline = time.monotonic() + 20
            while tasks(d.proc.pid) < serving:
                assert d.proc.poll() is None and time.monotonic() < deadline, d.read_log()
            time.sleep(delay)
            d.proc.send_signal(signal.SIGSTOP)
            time.sleep(1.2)
            d.proc.send_signal(signal.SIGCONT)
            got = []
            while not got or "READY=1" not in got[-1]:
                got.append(s.recv(4096).decode())
            assert d.get("/stats?client=host7").json()["clients"]["host7"]["recorded"] == 10
            assert d.stop() == 0, d.read_log()
            while "STOPPING=1" not in s.recv(4096).decode():
                pass    # its last messages, not the next one's
            if len(got) > 1:
                break   # stopped in the middle of the load
            # Stopped after it: a short load says nothing before READY=1.
            assert got[0].startswith("READY=1"), got
        else:
            raise AssertionError("never stopped during the load in 10 tries")
    progress, done = got[0], got[-2]
    assert progress.startswith("EXTEND_TIMEOUT_USEC=30000000\nSTATUS=loading client summaries from %s: " % d.db), got
    assert " records so far (" in progress, got
    assert done.startswith("STATUS=loaded the summaries of 60000 clients, 600000 records, in "), got
    assert "loaded the summaries of 60000 clients, 600000 records, in " in d.read_log()


def many_clients(record_countd, n):
    """The database of a stopped record-countd holding n clients, client-I with one record of value I each."""
    d = record_countd("--latency", "0")
    assert d.stop() == 0
    fill(d.db, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
         "INSERT INTO records (client, value, at) SELECT 'client-' || i, i, 1764201600 FROM c", n)
    return d.db


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def ask_stats(port):
    """A socket that has sent GET /stats with a small receive buffer, its answer not read yet."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.settimeout(60)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n")
    return s


def read_stats(s):
    """The rest of a /stats answer on s, parsed (any framing), as a dict."""
    s.settimeout(60)
    f = s.makefile("rb")
    r = http.client.HTTPResponse(s)
    r.fp = f
    r.begin()
    assert r.status == 200 and r.getheader("Content-Type") == "application/json"
    return json.loads(r.read())


def stats_answered(d, n):
    """Wait until record-countd has answered n /stats requests (sent or not)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = d.get("/metrics").body.decode()
        got = sum(float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith('record_countd_requests_total{route="/stats",status="200"}'))
        if got >= n:
            return
        time.sleep(0.05)
    raise AssertionError("record-countd did not answer %d /stats requests" % n)


def test_unread_stats_answers_hold_no_copy_of_the_document(record_countd):
    """Ten requests for /stats of 200,000 clients (19 MB of answer each) whose clients read nothing do not cost the
    server ten copies of it: the document is written as the connection takes it. Each is still whole when read."""
    db = many_clients(record_countd, 200000)
    d = record_countd("--latency", "0", db=db)
    before = rss_kb(d.proc.pid)
    socks = [ask_stats(d.port) for _ in range(10)]
    stats_answered(d, 10)
    grown = rss_kb(d.proc.pid) - before
    assert grown < 40 * 1024, "10 unread /stats answers took %d kB" % grown
    assert d.get("/healthz").status == 200
    for s in socks[:2]:
        j = read_stats(s)
        assert len(j["clients"]) == 200000 and j["recorded"] == 200000
        assert j["clients"]["client-123456"] == {"recorded": 1, "last_value": 123456, "in_flight": 0,
                                                 "max_in_flight": 0, "out_of_order": 0}
    for s in socks:
        s.close()


def test_stats_lists_the_clients_known_when_asked_with_the_figures_when_sent(record_countd):
    """/stats of every client lists those known when it was asked, each once, with its figures as its part is sent:
    a record made while the document is on its way shows in its client's entry if that entry was not sent yet, and a
    client new since then waits for the next /stats. The head's totals are those of when it was asked."""
    db = many_clients(record_countd, 200000)
    d = record_countd("--latency", "0", db=db)
    s = ask_stats(d.port)
    stats_answered(d, 1)
    # client-99999 comes last (clients are listed in the order they were loaded, by id), and the answer is far
    # larger than what the sockets' buffers hold, so its entry is not written yet.
    assert d.get("/record-count?value=1000000&client=client-99999").status == 200
    assert d.get("/record-count?value=1&client=late").status == 200
    j = read_stats(s)
    s.close()
    assert j["recorded"] == 200000
    assert len(j["clients"]) == 200000 and "late" not in j["clients"]
    assert list(j["clients"])[-1] == "client-99999"
    assert j["clients"]["client-99999"]["recorded"] == 2 and j["clients"]["client-99999"]["last_value"] == 1000000
    j = d.get("/stats").json()
    assert j["recorded"] == 200002 and j["clients"]["late"]["recorded"] == 1


def test_stop_waits_for_a_stats_answer_being_read(record_countd):
    """SIGTERM while a client is reading a long /stats: the client gets the whole document, then record-countd
    exits 0."""
    db = many_clients(record_countd, 100000)
    d = record_countd("--latency", "0", db=db)
    s = ask_stats(d.port)
    stats_answered(d, 1)
    d.signal(signal.SIGTERM)
    time.sleep(0.3)
    j = read_stats(s)
    s.close()
    assert len(j["clients"]) == 100000
    assert d.proc.wait(30) == 0


def raw_exchange(port, data):
    """Send data on a new connection and read until record-countd closes it (at most 30 s)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def test_stats_is_built_whole_up_to_4096_clients_and_streamed_above(record_countd):
    """Up to 4,096 clients /stats has a Content-Length (built whole); from 4,097 on it is chunked in HTTP/1.1 and
    ends with the connection in HTTP/1.0, whole either way. HEAD of a streamed one sends its head only and closes
    (libmicrohttpd would add a stray last chunk); HEAD of a small one keeps the connection."""
    db = many_clients(record_countd, 4096)
    d = record_countd("--latency", "0", db=db)
    r = d.get("/stats")
    assert int(r.headers["content-length"]) == len(r.body) and len(r.json()["clients"]) == 4096
    out = raw_exchange(d.port, b"HEAD /stats HTTP/1.1\r\nHost: t\r\n\r\n"
                       b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, rest = out.split(b"\r\n\r\n", 1)
    assert b"Content-Length: %d" % len(r.body) in head and rest.startswith(b"HTTP/1.1 200 "), out[:300]
    assert d.get("/record-count?value=1&client=one-more").status == 200
    r = d.get("/stats")
    assert r.headers.get("content-length") is None and r.headers["transfer-encoding"] == "chunked"
    j = r.json()
    assert len(j["clients"]) == 4097 and list(j["clients"])[-1] == "one-more"
    out = raw_exchange(d.port, b"GET /stats HTTP/1.0\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"Content-Length" not in head and b"chunked" not in head and json.loads(body) == j
    out = raw_exchange(d.port, b"HEAD /stats HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    head, rest = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in head and rest == b"", out[:300]
