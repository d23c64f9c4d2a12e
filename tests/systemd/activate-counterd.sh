#!/bin/bash
# counterd under real socket activation (systemd-socket-activate) on a Unix socket: it serves the
# passed socket, says READY=1, STATUS= and WATCHDOG=1, records with record-countd, and on SIGTERM
# says STOPPING=1, exits 0 and leaves the socket file it did not create in place.
. "$TOP_SRCDIR/tests/systemd/lib.sh"
plan 9

notify="$tmp/notify.sock"
sock="$tmp/lockstep/counterd.sock"
run="$tmp/run"
mkdir -p "$run" "$tmp/lockstep"
notify_listen "$notify" || { echo "notify listener did not start" | diag; finish "setup failed"; exit 1; }

for b in "$RECORD_COUNTD" "$COUNTERD"; do
    if [ ! -x "$b" ]; then
        echo "no binary at $b" | diag
        finish "daemons not built"; exit 1
    fi
done

# record-countd, started by hand.
port=$(free_port)
"$RECORD_COUNTD" --listen "127.0.0.1:$port" --db "$tmp/records.db" --latency 20ms 2> "$tmp/record-countd.log" &
rpid=$!
cleanup_pids="$rpid $cleanup_pids"
if ! wait_for 20 eval '"$CURL" -sf -o /dev/null "http://127.0.0.1:$port/healthz"'; then
    echo "record-countd did not become ready" | diag; diag < "$tmp/record-countd.log"
fi

# counterd, socket-activated: systemd-socket-activate binds the socket, waits for the first
# connection and execs counterd in its own pid.
(cd "$tmp" && exec systemd-socket-activate -l "$sock" --fdname=api \
    -E NOTIFY_SOCKET="$notify" -E WATCHDOG_USEC=300000 -E WATCHDOG_PID=$BASHPID -E RUNTIME_DIRECTORY="$run" \
    "$COUNTERD" --server "http://127.0.0.1:$port" --client-id sd --log-level info) 2> "$tmp/counterd.log" &
pid=$!
cleanup_pids="$pid $cleanup_pids"
wait_for 10 test -S "$sock" || { echo "socket not created" | diag; diag < "$tmp/counterd.log"; }

# 1. The first call goes through the passed socket.
body=$("$CURL" -sS --max-time 20 --unix-socket "$sock" -X POST http://localhost/next 2>&1)
echo "$body" | diag
check "POST /next on the activated socket answers count 1" \
    "$PYTHON3" -c 'import json,sys; r = json.loads(sys.argv[1]); sys.exit(not (r["count"] == 1))' "$body"

# 2-4. sd_notify messages.
check "READY=1 is sent" wait_for 10 notified "$notify" READY=1
check "a STATUS= line is sent" wait_for 5 notified_prefix "$notify" STATUS=
check "the watchdog is kept alive (WATCHDOG=1 twice within a second or so)" \
    wait_for 5 eval '[ "$(notified_count "$notify" WATCHDOG=1)" -ge 2 ]'

# 5. The number was recorded with record-countd as client sd:default.
body=$("$CURL" -sS --max-time 20 "http://127.0.0.1:$port/records?client=sd:default" 2>&1)
echo "$body" | diag
check "record-countd recorded 1 for sd:default" \
    "$PYTHON3" -c 'import json,sys; r = json.loads(sys.argv[1]); sys.exit(not ([x["value"] for x in r["records"]] == [1]))' "$body"

# 6. It used the passed socket rather than binding its own default one.
check "no socket of its own in \$RUNTIME_DIRECTORY" test ! -e "$run/counterd.sock"

# 7-8. SIGTERM: STOPPING=1, exit 0.
kill -TERM "$pid" 2>/dev/null
check "STOPPING=1 is sent after SIGTERM" wait_for 20 notified "$notify" STOPPING=1
check "exit status 0 after SIGTERM" exited_with "$pid" 0 20

# 9. The socket belongs to systemd (counterd.socket): a restart of the service must find it there.
check "the passed socket file is left in place" test -S "$sock"

if [ "$tap_failed" -gt 0 ]; then
    echo "--- counterd log" | diag; diag < "$tmp/counterd.log"
    echo "--- record-countd log" | diag; diag < "$tmp/record-countd.log"
    echo "--- notify messages ($(notified_count "$notify" WATCHDOG=1) WATCHDOG=1 not shown)" | diag
    grep -vxF WATCHDOG=1 "$notify.log" 2>/dev/null | diag
fi
finish
